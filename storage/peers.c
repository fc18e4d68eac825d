/* Peers: compact peer numbers and per-database watermarks. */
#include <string.h>

#include "storage/internal.h"

int crdtdb__peer_num(crdtdb_env *env, MDB_txn *mt, const uint8_t *key,
                     int create, uint32_t *num)
{
    MDB_val k = {CRDTDB_REPLICA_ID_BYTES, (void *)key}, v;
    int rc = mdb_get(mt, env->dbi_peerids, &k, &v);
    if (rc == 0) {
        if (v.mv_size != 4)
            return CRDTDB_ECORRUPT;
        *num = crdtdb__get_u32(v.mv_data);
        return 0;
    }
    if (rc != MDB_NOTFOUND)
        return crdtdb__mdb_err(rc);
    *num = 0;
    if (!create)
        return 0;
    MDB_val nk = {9, (void *)"next_peer"}, nv;
    if ((rc = mdb_get(mt, env->dbi_meta, &nk, &nv)))
        return crdtdb__mdb_err(rc);
    if (nv.mv_size != 4)
        return CRDTDB_ECORRUPT;
    uint8_t b[4];
    *num = crdtdb__get_u32(nv.mv_data) + 1; /* 0 is this replica */
    crdtdb__put_u32(b, *num);
    MDB_val bv = {4, b};
    if ((rc = mdb_put(mt, env->dbi_meta, &nk, &bv, 0)) ||
        (rc = mdb_put(mt, env->dbi_peerids, &k, &bv, 0)))
        return crdtdb__mdb_err(rc);
    return 0;
}

static MDB_val marks_key(uint8_t *k, uint32_t num, const uint8_t *peer)
{
    crdtdb__put_u32(k, num);
    memcpy(k + 4, peer, CRDTDB_REPLICA_ID_BYTES);
    MDB_val v = {4 + CRDTDB_REPLICA_ID_BYTES, k};
    return v;
}

int crdtdb__marks_get(crdtdb_db *db, MDB_txn *mt, const uint8_t *key,
                      uint64_t *received, uint64_t *acked, int *found)
{
    uint8_t kb[4 + CRDTDB_REPLICA_ID_BYTES];
    MDB_val k = marks_key(kb, db->num, key), v;
    *received = *acked = 0;
    *found = 0;
    int rc = mdb_get(mt, db->env->dbi_marks, &k, &v);
    if (rc == MDB_NOTFOUND)
        return 0;
    if (rc)
        return crdtdb__mdb_err(rc);
    if (v.mv_size != 16)
        return CRDTDB_ECORRUPT;
    *received = crdtdb__get_u64(v.mv_data);
    *acked = crdtdb__get_u64((const uint8_t *)v.mv_data + 8);
    *found = 1;
    return 0;
}

int crdtdb__marks_put(crdtdb_db *db, MDB_txn *mt, const uint8_t *key,
                      uint64_t received, uint64_t acked)
{
    uint8_t kb[4 + CRDTDB_REPLICA_ID_BYTES], vb[16];
    MDB_val k = marks_key(kb, db->num, key), v = {16, vb};
    crdtdb__put_u64(vb, received);
    crdtdb__put_u64(vb + 8, acked);
    return crdtdb__mdb_err(mdb_put(mt, db->env->dbi_marks, &k, &v, 0));
}

int crdtdb_db_peers(crdtdb_db *db, crdtdb_peer_cb cb, void *ctx)
{
    if (!db || !cb)
        return CRDTDB_EINVAL;
    crdtdb_txn *t;
    int rc = crdtdb_txn_begin(db, CRDTDB_TXN_RDONLY, &t);
    if (rc)
        return rc;
    MDB_cursor *c;
    int mrc = mdb_cursor_open(t->mt, db->env->dbi_marks, &c);
    if (mrc) {
        crdtdb_txn_abort(t);
        return crdtdb__mdb_err(mrc);
    }
    uint8_t pre[4];
    crdtdb__put_u32(pre, db->num);
    MDB_val k = {4, pre}, v;
    for (mrc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE); mrc == 0 && !rc;
         mrc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        if (k.mv_size != 4 + CRDTDB_REPLICA_ID_BYTES || memcmp(k.mv_data, pre, 4) != 0)
            break;
        if (v.mv_size != 16) {
            rc = CRDTDB_ECORRUPT;
            break;
        }
        crdtdb_peer p;
        memcpy(p.id, (const uint8_t *)k.mv_data + 4, CRDTDB_REPLICA_ID_BYTES);
        p.received = crdtdb__get_u64(v.mv_data);
        p.acked = crdtdb__get_u64((const uint8_t *)v.mv_data + 8);
        rc = cb(ctx, &p);
    }
    mdb_cursor_close(c);
    crdtdb_txn_abort(t);
    return rc;
}

int crdtdb_db_peer_get(crdtdb_db *db, const uint8_t *peer, crdtdb_peer *out,
                       int *found)
{
    if (!db || !peer || !out || !found)
        return CRDTDB_EINVAL;
    crdtdb_txn *t;
    int rc = crdtdb_txn_begin(db, CRDTDB_TXN_RDONLY, &t);
    if (rc)
        return rc;
    memcpy(out->id, peer, CRDTDB_REPLICA_ID_BYTES);
    rc = crdtdb__marks_get(db, t->mt, peer, &out->received, &out->acked, found);
    crdtdb_txn_abort(t);
    return rc;
}

int crdtdb_db_peer_ack(crdtdb_db *db, const uint8_t *peer, uint64_t acked)
{
    if (!db || !peer)
        return CRDTDB_EINVAL;
    crdtdb_txn *t;
    int rc = crdtdb_txn_begin(db, 0, &t);
    if (rc)
        return rc;
    uint64_t received, old;
    int found;
    rc = crdtdb__marks_get(db, t->mt, peer, &received, &old, &found);
    if (!rc && acked > old)
        rc = crdtdb__marks_put(db, t->mt, peer, received, acked);
    if (rc) {
        crdtdb_txn_abort(t);
        return crdtdb__db_seterr(db, rc, "peer ack: %s", crdtdb_strerror(rc));
    }
    return crdtdb_txn_commit(t);
}
