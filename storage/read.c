/* Reads: get_by_id and query, straight from the cached rendering. */
#include <string.h>

#include "crdt/buf.h"
#include "crdt/query.h"
#include "storage/recs.h"

/* Ends a read: only a transaction the call began itself is finished here; a
 * failed read never fails the caller's write batch. */
static int read_end(crdtdb_txn *t, int own, int rc)
{
    if (own)
        crdtdb_txn_abort(t);
    return rc;
}

static int get_by_id_call(crdtdb_db *db, crdtdb_txn *txn, const char *coll,
                          const char *id, crdtdb_buf *out, int *found)
{
    if (!db || !out || !found)
        return CRDTDB_EINVAL;
    *found = 0;
    out->len = 0;
    int c = crdtdb__db_coll(db, coll);
    if (c < 0)
        return c;
    if (crdtdb__id_check(id, 0))
        return crdtdb__db_seterr(db, CRDTDB_EBADID,
                                 "invalid record id: 1..255 bytes of UTF-8");
    crdtdb_txn *t;
    int own;
    int rc = crdtdb__txn_get(db, txn, 0, &t, &own);
    if (rc)
        return rc;
    uint8_t key[CRDTDB__RECKEY_MAX];
    MDB_val k = {crdtdb__reckey(key, db->num, (uint16_t)c, id, strlen(id)), key}, v;
    crdtdb__held *held = NULL;
    int mrc = crdtdb__recs_get(db->env, t->mt, &held, &k, &v);
    const uint8_t *vis = NULL;
    size_t vlen = 0;
    if (mrc == 0)
        rc = crdtdb__record_blob_visible(v.mv_data, v.mv_size, &vis, &vlen);
    else if (mrc != MDB_NOTFOUND)
        rc = crdtdb__db_seterr(db, crdtdb__mdb_err(mrc), "read: %s", crdtdb__mdb_str(mrc));
    if (!rc && vlen > 0) {
        if (crdtdb__buf_set(out, vis, vlen))
            rc = crdtdb__db_seterr(db, CRDTDB_ENOMEM, "out of memory");
        else
            *found = 1;
    } else if (!rc) {
        crdtdb__db_seterr(db, 0, "Object with id '%s' not found in collection '%s'",
                          id, db->colls[c]);
    } else if (mrc == 0 && (rc == CRDTDB_ECORRUPT || rc == CRDTDB_EVERSION)) {
        crdtdb__db_seterr(db, rc, "record '%s' is unreadable", id);
    } else if (mrc == MDB_CORRUPTED) {
        crdtdb__db_seterr(db, rc, "record '%s' is unreadable (a damaged page or pack)", id);
    }
    crdtdb__held_free(&held);
    return read_end(t, own, rc);
}

int crdtdb_db_get_by_id(crdtdb_db *db, crdtdb_txn *txn, const char *coll,
                        const char *id, crdtdb_buf *out, int *found)
{
    uint64_t m = crdtdb__db_enter(db);
    return crdtdb__db_exit(db, m, get_by_id_call(db, txn, coll, id, out, found));
}

static int query_call(crdtdb_db *db, crdtdb_txn *txn, const char *coll,
                      const uint8_t *criteria, size_t len, crdtdb_query_cb cb,
                      void *ctx)
{
    if (!db || !cb)
        return CRDTDB_EINVAL;
    int c = crdtdb__db_coll(db, coll);
    if (c < 0)
        return c;
    crdtdb__query q;
    crdtdb__err e = CRDTDB__ERR_INIT;
    int rc = crdtdb__query_parse(&q, criteria, len, &db->env->lim, &e);
    if (rc) {
        crdtdb__query_free(&q);
        return crdtdb__db_seterr(db, rc, "%s", e.msg);
    }
    crdtdb_txn *t;
    int own;
    if ((rc = crdtdb__txn_get(db, txn, 0, &t, &own))) {
        crdtdb__query_free(&q);
        return rc;
    }
    uint8_t prefix[6];
    crdtdb__reckey(prefix, db->num, (uint16_t)c, "", 0);
    MDB_val from = {6, prefix};
    msgpack_zone zone;
    msgpack_zone_init(&zone, 4096);
    char id[CRDTDB_ID_MAX + 1];
    crdtdb__rwalk w;
    int mrc;
    for (mrc = crdtdb__rwalk_open(&w, db->env, t->mt, &from, 6, NULL); mrc == 0 && !rc;
         mrc = crdtdb__rwalk_next(&w)) {
        MDB_val k = w.k, v = w.v;
        const uint8_t *vis;
        size_t vlen;
        if (crdtdb__record_blob_visible(v.mv_data, v.mv_size, &vis, &vlen)) {
            rc = crdtdb__db_seterr(db, CRDTDB_ECORRUPT, "unreadable record");
            break;
        }
        if (vlen == 0 || k.mv_size - 6 > CRDTDB_ID_MAX)
            continue;
        if (q.nconds) {
            msgpack_object o;
            size_t off = 0;
            msgpack_zone_clear(&zone);
            if (msgpack_unpack((const char *)vis, vlen, &off, &zone, &o) !=
                MSGPACK_UNPACK_SUCCESS) {
                rc = crdtdb__db_seterr(db, CRDTDB_ECORRUPT, "unreadable record");
                break;
            }
            if (!crdtdb__query_match(&q, &o))
                continue;
        }
        memcpy(id, (const uint8_t *)k.mv_data + 6, k.mv_size - 6);
        id[k.mv_size - 6] = 0;
        rc = cb(ctx, id, vis, vlen);
    }
    if (!rc && mrc == MDB_CORRUPTED)
        rc = crdtdb__db_seterr(db, CRDTDB_ECORRUPT, "query of '%s': a pack of records is "
                               "unreadable", coll);
    else if (!rc && mrc != 0 && mrc != MDB_NOTFOUND)
        rc = crdtdb__db_seterr(db, crdtdb__mdb_err(mrc), "read: %s", crdtdb__mdb_str(mrc));
    msgpack_zone_destroy(&zone);
    crdtdb__rwalk_close(&w);
    crdtdb__query_free(&q);
    return read_end(t, own, rc);
}

int crdtdb_db_query(crdtdb_db *db, crdtdb_txn *txn, const char *coll,
                    const uint8_t *criteria, size_t len, crdtdb_query_cb cb,
                    void *ctx)
{
    uint64_t m = crdtdb__db_enter(db);
    return crdtdb__db_exit(db, m, query_call(db, txn, coll, criteria, len, cb, ctx));
}
