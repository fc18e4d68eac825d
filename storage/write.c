/* Local writes: add, add_all, update, remove — read, merge, store, log. */
#include <string.h>

#include "crdt/buf.h"
#include "crdt/hlc.h"
#include "storage/internal.h"

static int not_found(crdtdb_db *db, uint16_t coll, const char *id)
{
    return crdtdb__db_seterr(db, CRDTDB_ENOTFOUND,
                             "Object with id '%s' not found in collection '%s'",
                             id, db->colls[coll]);
}

/* Loads the record into db->rec (its blob copied into db->blob: LMDB pages
 * may move once we write). */
int crdtdb__slot_load(crdtdb_txn *t, crdtdb__slot *s, uint16_t coll,
                      const char *id)
{
    crdtdb_db *db = t->db;
    s->coll = coll;
    s->id = id;
    s->idlen = strlen(id);
    s->k.mv_size = crdtdb__reckey(s->key, db->num, coll, id, s->idlen);
    s->k.mv_data = s->key;
    s->seq_before = t->seq;
    MDB_val v, k = s->k;
    /* one cursor: the store replaces the record where the load found it,
     * saving a second descent of the tree */
    int rc = t->rec_cur ? 0 : mdb_cursor_open(t->mt, db->env->dbi_records, &t->rec_cur);
    if (!rc)
        rc = mdb_cursor_get(t->rec_cur, &k, &v, MDB_SET_KEY);
    s->exists = rc == 0;
    crdtdb__record_clear(&db->rec);
    db->blob.len = 0;
    if (rc == MDB_NOTFOUND) {
        s->was_visible = 0;
        return 0;
    }
    if (rc)
        return crdtdb__db_seterr(db, crdtdb__mdb_err(rc), "read: %s", mdb_strerror(rc));
    if (crdtdb__buf_set(&db->blob, v.mv_data, v.mv_size))
        return crdtdb__db_seterr(db, CRDTDB_ENOMEM, "out of memory");
    rc = crdtdb__record_decode(&db->rec, db->blob.data, db->blob.len);
    if (rc)
        return crdtdb__db_seterr(db, rc, "record '%s' in '%s' is unreadable: %s",
                                 id, db->colls[coll], crdtdb_strerror(rc));
    s->was_visible = crdtdb__record_visible(&db->rec);
    return 0;
}

static int log_put(crdtdb_txn *t, const crdtdb__slot *s, uint32_t src,
                   uint64_t seq, const uint8_t *path, size_t plen)
{
    crdtdb_db *db = t->db;
    uint8_t k[CRDTDB__CHGKEY_LEN];
    crdtdb__put_u32(k, db->num);
    crdtdb__put_u64(k + 4, seq);
    MDB_val key = {sizeof k, k}, val;
    val.mv_size = CRDTDB__CHG_HEAD + s->idlen + plen;
    int rc = mdb_put(t->mt, db->env->dbi_changes, &key, &val, MDB_RESERVE);
    if (rc)
        return rc;
    uint8_t *o = val.mv_data;
    crdtdb__put_u32(o, src);
    o[4] = (uint8_t)(s->coll >> 8);
    o[5] = (uint8_t)s->coll;
    o[6] = (uint8_t)s->idlen;
    memcpy(o + CRDTDB__CHG_HEAD, s->id, s->idlen);
    if (plen)
        memcpy(o + CRDTDB__CHG_HEAD + s->idlen, path, plen);
    return 0;
}

/* Numbers the new registers, stores the record and its change-log entries,
 * and records the observer event. */
int crdtdb__slot_store(crdtdb_txn *t, crdtdb__slot *s, uint32_t src)
{
    crdtdb_db *db = t->db;
    crdtdb__record *r = &db->rec;
    crdtdb_env *env = db->env;
    /* Limits bound what a local write may add.  A merge stores what the
     * LWW rules say, or two replicas whose legal writes combine past a
     * limit would refuse each other forever. */
    int local = src == CRDTDB__SRC_LOCAL;
    if (local && r->nleaves > env->lim.max_fields)
        return crdtdb__db_seterr(db, CRDTDB_ETOOBIG,
                                 "record would have more than %u fields",
                                 (unsigned)env->lim.max_fields);
    if (r->base_kind != CRDTDB__BASE_NONE && r->base_seq == 0) {
        r->base_seq = ++t->seq;
        crdtdb__chain_note(t, r->base_seq, s->coll, s->id, s->idlen, NULL, 0, r->base_hlc,
                           r->origins[r->base_origin], r->base_kind);
    }
    for (uint32_t i = 0; i < r->nleaves; i++) {
        crdtdb__leaf *l = &r->leaves[i];
        if (l->seq == 0) {
            l->seq = ++t->seq;
            crdtdb__chain_note(t, l->seq, s->coll, s->id, s->idlen, l->path, l->path_len,
                               l->hlc, r->origins[l->origin], l->kind);
        }
    }
    int rc = crdtdb__record_render(r, &db->vis);
    if (rc)
        return crdtdb__db_seterr(db, rc, "render: %s", crdtdb_strerror(rc));
    if (local && db->vis.len > env->lim.max_value_size)
        return crdtdb__db_seterr(db, CRDTDB_ETOOBIG,
                                 "record would be %zu bytes, over the limit of %zu",
                                 db->vis.len, env->lim.max_value_size);
    /* what readers see change, and when (for crdtdb_db_poll) */
    int now = crdtdb__record_visible(r);
    int type = now && !s->was_visible   ? CRDTDB_EVENT_ADD
               : !now && s->was_visible ? CRDTDB_EVENT_REMOVE
               : now && (r->visible_len != db->vis.len ||
                         memcmp(r->visible, db->vis.data, db->vis.len) != 0)
                   ? CRDTDB_EVENT_UPDATE
                   : 0;
    if (type)
        r->vis_seq = t->seq;
    if (type == CRDTDB_EVENT_ADD)
        r->shown_seq = t->seq;
    if (crdtdb__record_encode(r, db->vis.data, db->vis.len, &db->enc))
        return crdtdb__db_seterr(db, CRDTDB_ENOMEM, "out of memory");
    MDB_val v = {db->enc.len, db->enc.data};
    int empty = r->base_kind == CRDTDB__BASE_NONE && r->nleaves == 0; /* all taken back */
    int mrc = empty ? (s->exists ? mdb_cursor_del(t->rec_cur, 0) : 0)
              : s->exists ? mdb_cursor_put(t->rec_cur, &s->k, &v, MDB_CURRENT)
                          : mdb_put(t->mt, env->dbi_records, &s->k, &v, 0);
    for (uint32_t i = 0; !mrc && i < r->ndead; i++) {
        uint8_t k[CRDTDB__CHGKEY_LEN];
        crdtdb__put_u32(k, db->num);
        crdtdb__put_u64(k + 4, r->dead[i]);
        MDB_val key = {sizeof k, k};
        mrc = mdb_del(t->mt, env->dbi_changes, &key, NULL);
        if (mrc == MDB_NOTFOUND)
            mrc = 0;
    }
    if (!mrc && r->base_seq > s->seq_before)
        mrc = log_put(t, s, src, r->base_seq, NULL, 0);
    for (uint32_t i = 0; !mrc && i < r->nleaves; i++)
        if (r->leaves[i].seq > s->seq_before)
            mrc = log_put(t, s, src, r->leaves[i].seq, r->leaves[i].path,
                          r->leaves[i].path_len);
    if (mrc)
        return crdtdb__db_seterr(db, crdtdb__mdb_err(mrc), "write: %s",
                                 mdb_strerror(mrc));
    if (!db->observers)
        return 0;
    if (type && crdtdb__event_add(t, type, s->coll, s->id, s->idlen,
                                  now ? db->vis.data : NULL, now ? db->vis.len : 0))
        return crdtdb__db_seterr(db, CRDTDB_ENOMEM, "out of memory");
    return 0;
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
    return crdtdb__db_exit(db, add_call(db, txn, coll, id, value, len));
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
    return crdtdb__db_exit(db, add_all_call(db, txn, coll, values, len));
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
    return crdtdb__db_exit(db, update_call(db, txn, coll, id, changes, len));
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
    return crdtdb__db_exit(db, remove_call(db, txn, coll, id));
}

void crdtdb_db_set_readonly(crdtdb_db *db, int readonly)
{
    if (db)
        db->readonly = readonly != 0;
}
