/* The public local writes: add, add_all, update, remove.  Each checks its
 * arguments, merges the value into the record slot (slot.h) and lets the
 * slot store and log it. */
#include <string.h>

#include "crdt/buf.h"
#include "crdt/hlc.h"
#include "storage/slot.h"

static int not_found(crdtdb_db *db, uint16_t coll, const char *id)
{
    return crdtdb__db_seterr(db, CRDTDB_ENOTFOUND,
                             "Object with id '%s' not found in collection '%s'",
                             id, db->colls[coll]);
}

/* Applies the flattened leaves in db->flat at stamp hlc. */
static int put_flat(crdtdb_db *db, uint64_t hlc, uint32_t origin, int merge)
{
    crdtdb__flat *f = &db->flat;
    for (uint32_t i = 0; i < f->n; i++) {
        const crdtdb__flat_item *it = &f->items[i];
        crdtdb__leaf l = {f->arena.data + it->path_off, it->path_len, it->kind,
                          origin, hlc, 0, NULL, 0};
        /* mergeDeepRight: an empty map merged into a map changes nothing */
        if (merge && it->kind == CRDTDB__KIND_MAP &&
            crdtdb__record_is_map_at(&db->rec, l.path, l.path_len))
            continue;
        if (it->kind == CRDTDB__KIND_VALUE) {
            l.val = f->arena.data + it->val_off;
            l.val_len = it->val_len;
        }
        int rc = crdtdb__record_put_leaf(&db->rec, &l);
        if (rc == CRDTDB_EFORGED) /* two values for one path in one write */
            return crdtdb__db_seterr(db, CRDTDB_EBADVALUE, "duplicate key in the value");
        if (rc < 0)
            return crdtdb__db_seterr(db, rc, "write: %s", crdtdb_strerror(rc));
    }
    return 0;
}

static int flatten(crdtdb_db *db, const msgpack_object *o)
{
    crdtdb__err e = CRDTDB__ERR_INIT;
    db->flat.n = 0;
    db->flat.arena.len = 0;
    int rc = crdtdb__flatten(&db->flat, o, &db->env->lim, &e);
    return rc ? crdtdb__db_seterr(db, rc, "%s", e.msg) : 0;
}

static int op_add(crdtdb_txn *t, uint16_t coll, const char *id,
                  const msgpack_object *o)
{
    crdtdb_db *db = t->db;
    crdtdb__slot s;
    uint32_t origin;
    int rc = flatten(db, o);
    if (!rc)
        rc = crdtdb__slot_load(t, &s, coll, id);
    if (rc)
        return rc;
    if (crdtdb__record_origin(&db->rec, db->env->pk, &origin))
        return crdtdb__db_seterr(db, CRDTDB_ENOMEM, "out of memory");
    uint64_t hlc = crdtdb__txn_tick(t);
    if (crdtdb__record_put_base(&db->rec, CRDTDB__BASE_ADD, hlc, origin, 0) < 0)
        return crdtdb__db_seterr(db, CRDTDB_ENOMEM, "out of memory");
    rc = put_flat(db, hlc, origin, 0);
    return rc ? rc : crdtdb__slot_store(t, &s, CRDTDB__SRC_LOCAL);
}

static int parse(crdtdb_db *db, const uint8_t *data, size_t len,
                 msgpack_object *o)
{
    crdtdb__err e = CRDTDB__ERR_INIT;
    msgpack_zone_clear(&db->zone);
    int rc = crdtdb__value_parse(data, len, &db->env->lim, &db->zone, o, &e);
    if (rc)
        return crdtdb__db_seterr(db, rc, "%s", e.msg);
    if (o->type != MSGPACK_OBJECT_MAP)
        return crdtdb__db_seterr(db, CRDTDB_EBADVALUE, "a record must be a msgpack map");
    return 0;
}

/* A write refused before it reached the batch still fails the batch: the
 * caller's transaction is all or nothing. */
static int refuse(crdtdb_db *db, crdtdb_txn *txn, int rc)
{
    if (txn && txn->db == db)
        crdtdb__txn_fail(txn, rc);
    return rc;
}

/* Validates the collection and record id shared by the single-record calls. */
static int check_args(crdtdb_db *db, const char *coll, const char *id)
{
    if (db->readonly)
        return crdtdb__db_seterr(db, CRDTDB_EROFS, "Read only access");
    int c = crdtdb__db_coll(db, coll);
    if (c < 0)
        return c;
    if (id && crdtdb__id_check(id, 0))
        return crdtdb__db_seterr(db, CRDTDB_EBADID,
                                 "invalid record id: 1..255 bytes of UTF-8");
    return c;
}

/* The checks every local write starts with: the record id (when one is
 * needed), the collection, and the msgpack map (when o is given).  Returns
 * the collection number, or an error that also fails the caller's batch. */
static int prepare(crdtdb_db *db, crdtdb_txn *txn, const char *coll, int need_id,
                   const char *id, const uint8_t *value, size_t len, msgpack_object *o)
{
    if (need_id && !id)
        return refuse(db, txn, crdtdb__db_seterr(db, CRDTDB_EINVAL, "record id is NULL"));
    int c = check_args(db, coll, id);
    if (c < 0)
        return refuse(db, txn, c);
    int rc = o ? parse(db, value, len, o) : 0;
    return rc ? refuse(db, txn, rc) : c;
}

/* Loads a record that must be visible (update, remove) and our origin in it. */
static int load_visible(crdtdb_txn *t, crdtdb__slot *s, uint16_t coll, const char *id,
                        uint32_t *origin)
{
    crdtdb_db *db = t->db;
    int rc = crdtdb__slot_load(t, s, coll, id);
    if (!rc && !s->was_visible)
        rc = not_found(db, coll, id);
    if (!rc && crdtdb__record_origin(&db->rec, db->env->pk, origin))
        rc = crdtdb__db_seterr(db, CRDTDB_ENOMEM, "out of memory");
    return rc;
}

static int add_call(crdtdb_db *db, crdtdb_txn *txn, const char *coll,
                    const char *id, const uint8_t *value, size_t len)
{
    if (!db)
        return CRDTDB_EINVAL;
    msgpack_object o;
    int c = prepare(db, txn, coll, 1, id, value, len, &o);
    if (c < 0)
        return c;
    crdtdb_txn *t;
    int own, rc;
    if ((rc = crdtdb__txn_get(db, txn, 1, &t, &own)))
        return rc;
    return crdtdb__txn_end(t, own, op_add(t, (uint16_t)c, id, &o));
}

int crdtdb_db_add(crdtdb_db *db, crdtdb_txn *txn, const char *coll,
                  const char *id, const uint8_t *value, size_t len)
{
    uint64_t m = crdtdb__db_enter(db);
    return crdtdb__db_exit(db, m, add_call(db, txn, coll, id, value, len));
}

static int add_all_call(crdtdb_db *db, crdtdb_txn *txn, const char *coll,
                        const uint8_t *values, size_t len)
{
    if (!db)
        return CRDTDB_EINVAL;
    msgpack_object o;
    int c = prepare(db, txn, coll, 0, NULL, values, len, &o);
    if (c < 0)
        return c;
    char id[CRDTDB_ID_MAX + 1];
    for (uint32_t i = 0; i < o.via.map.size; i++) {
        const msgpack_object *k = &o.via.map.ptr[i].key;
        if (k->type != MSGPACK_OBJECT_STR || k->via.str.size > CRDTDB_ID_MAX ||
            o.via.map.ptr[i].val.type != MSGPACK_OBJECT_MAP)
            return refuse(db, txn,
                          crdtdb__db_seterr(db, CRDTDB_EBADVALUE,
                                            "add_all takes a map from record id to record map"));
    }
    crdtdb_txn *t;
    int own, rc;
    if ((rc = crdtdb__txn_get(db, txn, 1, &t, &own)))
        return rc;
    for (uint32_t i = 0; !rc && i < o.via.map.size; i++) {
        const msgpack_object *k = &o.via.map.ptr[i].key;
        if (k->via.str.size) /* an empty key has no pointer */
            memcpy(id, k->via.str.ptr, k->via.str.size);
        id[k->via.str.size] = 0;
        if (strlen(id) != k->via.str.size || crdtdb__id_check(id, 0))
            rc = crdtdb__db_seterr(db, CRDTDB_EBADID,
                                   "invalid record id: 1..255 bytes of UTF-8");
        else
            rc = op_add(t, (uint16_t)c, id, &o.via.map.ptr[i].val);
    }
    return crdtdb__txn_end(t, own, rc);
}

int crdtdb_db_add_all(crdtdb_db *db, crdtdb_txn *txn, const char *coll,
                      const uint8_t *values, size_t len)
{
    uint64_t m = crdtdb__db_enter(db);
    return crdtdb__db_exit(db, m, add_all_call(db, txn, coll, values, len));
}

static int update_call(crdtdb_db *db, crdtdb_txn *txn, const char *coll,
                       const char *id, const uint8_t *changes, size_t len)
{
    if (!db)
        return CRDTDB_EINVAL;
    msgpack_object o;
    int c = prepare(db, txn, coll, 1, id, changes, len, &o);
    if (c < 0)
        return c;
    int rc = flatten(db, &o);
    if (rc)
        return refuse(db, txn, rc);
    crdtdb_txn *t;
    int own;
    if ((rc = crdtdb__txn_get(db, txn, 1, &t, &own)))
        return rc;
    crdtdb__slot s;
    uint32_t origin;
    rc = load_visible(t, &s, (uint16_t)c, id, &origin);
    if (!rc)
        rc = put_flat(db, crdtdb__txn_tick(t), origin, 1);
    if (!rc)
        rc = crdtdb__slot_store(t, &s, CRDTDB__SRC_LOCAL);
    return crdtdb__txn_end(t, own, rc);
}

int crdtdb_db_update(crdtdb_db *db, crdtdb_txn *txn, const char *coll,
                     const char *id, const uint8_t *changes, size_t len)
{
    uint64_t m = crdtdb__db_enter(db);
    return crdtdb__db_exit(db, m, update_call(db, txn, coll, id, changes, len));
}

static int remove_call(crdtdb_db *db, crdtdb_txn *txn, const char *coll,
                       const char *id)
{
    if (!db)
        return CRDTDB_EINVAL;
    int c = prepare(db, txn, coll, 1, id, NULL, 0, NULL);
    if (c < 0)
        return c;
    crdtdb_txn *t;
    int own, rc;
    if ((rc = crdtdb__txn_get(db, txn, 1, &t, &own)))
        return rc;
    crdtdb__slot s;
    uint32_t origin;
    rc = load_visible(t, &s, (uint16_t)c, id, &origin);
    if (rc == CRDTDB_ENOTFOUND) /* the replicated store's remove: nothing */
        return crdtdb__txn_end(t, own, 0); /* to remove, no tombstone, no event */
    if (!rc && crdtdb__record_put_base(&db->rec, CRDTDB__BASE_REMOVE,
                                       crdtdb__txn_tick(t), origin, 0) < 0)
        rc = crdtdb__db_seterr(db, CRDTDB_ENOMEM, "out of memory");
    if (!rc)
        rc = crdtdb__slot_store(t, &s, CRDTDB__SRC_LOCAL);
    return crdtdb__txn_end(t, own, rc);
}

int crdtdb_db_remove(crdtdb_db *db, crdtdb_txn *txn, const char *coll,
                     const char *id)
{
    uint64_t m = crdtdb__db_enter(db);
    return crdtdb__db_exit(db, m, remove_call(db, txn, coll, id));
}

void crdtdb_db_set_readonly(crdtdb_db *db, int readonly)
{
    if (db)
        db->readonly = readonly != 0;
}
