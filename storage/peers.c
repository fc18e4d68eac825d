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

/* received, acked, flags, then a ring of (seq, fingerprint) points */
#define MARKS_BYTES (21 + CRDTDB__FP_RING * 24)

static MDB_val marks_key(uint8_t *k, uint32_t num, const uint8_t *peer)
{
    crdtdb__put_u32(k, num);
    memcpy(k + 4, peer, CRDTDB_REPLICA_ID_BYTES);
    MDB_val v = {4 + CRDTDB_REPLICA_ID_BYTES, k};
    return v;
}

static int marks_decode(const MDB_val *v, crdtdb__marks *m)
{
    if (v->mv_size != MARKS_BYTES)
        return CRDTDB_ECORRUPT;
    const uint8_t *p = v->mv_data;
    m->received = crdtdb__get_u64(p);
    m->acked = crdtdb__get_u64(p + 8);
    m->flags = crdtdb__get_u32(p + 16);
    m->nfp = p[20] > CRDTDB__FP_RING ? CRDTDB__FP_RING : p[20];
    for (unsigned i = 0; i < m->nfp; i++) {
        m->fp[i].seq = crdtdb__get_u64(p + 21 + i * 24);
        memcpy(m->fp[i].hash, p + 29 + i * 24, 16);
    }
    return 0;
}

int crdtdb__marks_get(crdtdb_db *db, MDB_txn *mt, const uint8_t *key,
                      crdtdb__marks *m, int *found)
{
    uint8_t kb[4 + CRDTDB_REPLICA_ID_BYTES];
    MDB_val k = marks_key(kb, db->num, key), v;
    memset(m, 0, sizeof *m);
    *found = 0;
    int rc = mdb_get(mt, db->env->dbi_marks, &k, &v);
    if (rc == MDB_NOTFOUND)
        return 0;
    if (rc)
        return crdtdb__mdb_err(rc);
    *found = 1;
    return marks_decode(&v, m);
}

int crdtdb__marks_put(crdtdb_db *db, MDB_txn *mt, const uint8_t *key,
                      const crdtdb__marks *m)
{
    uint8_t kb[4 + CRDTDB_REPLICA_ID_BYTES], vb[MARKS_BYTES];
    MDB_val k = marks_key(kb, db->num, key), v = {MARKS_BYTES, vb};
    memset(vb, 0, sizeof vb);
    crdtdb__put_u64(vb, m->received);
    crdtdb__put_u64(vb + 8, m->acked);
    crdtdb__put_u32(vb + 16, m->flags);
    vb[20] = (uint8_t)m->nfp;
    for (unsigned i = 0; i < m->nfp && i < CRDTDB__FP_RING; i++) {
        crdtdb__put_u64(vb + 21 + i * 24, m->fp[i].seq);
        memcpy(vb + 29 + i * 24, m->fp[i].hash, 16);
    }
    return crdtdb__mdb_err(mdb_put(mt, db->env->dbi_marks, &k, &v, 0));
}

static int peers_call(crdtdb_db *db, crdtdb_peer_cb cb, void *ctx)
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
        crdtdb__marks m;
        if ((rc = marks_decode(&v, &m)))
            break;
        crdtdb_peer p;
        memcpy(p.id, (const uint8_t *)k.mv_data + 4, CRDTDB_REPLICA_ID_BYTES);
        p.received = m.received;
        p.acked = m.acked;
        p.flags = m.flags;
        rc = cb(ctx, &p);
    }
    mdb_cursor_close(c);
    crdtdb_txn_abort(t);
    return rc;
}

int crdtdb_db_peers(crdtdb_db *db, crdtdb_peer_cb cb, void *ctx)
{
    return crdtdb__db_exit(db, peers_call(db, cb, ctx));
}

static int peer_get_call(crdtdb_db *db, const uint8_t *peer, crdtdb_peer *out,
                         int *found)
{
    if (!db || !peer || !out || !found)
        return CRDTDB_EINVAL;
    crdtdb_txn *t;
    int rc = crdtdb_txn_begin(db, CRDTDB_TXN_RDONLY, &t);
    if (rc)
        return rc;
    crdtdb__marks m;
    rc = crdtdb__marks_get(db, t->mt, peer, &m, found);
    memcpy(out->id, peer, CRDTDB_REPLICA_ID_BYTES);
    out->received = m.received;
    out->acked = m.acked;
    out->flags = m.flags;
    crdtdb_txn_abort(t);
    return rc;
}

int crdtdb_db_peer_get(crdtdb_db *db, const uint8_t *peer, crdtdb_peer *out,
                       int *found)
{
    return crdtdb__db_exit(db, peer_get_call(db, peer, out, found));
}

/* Moves a peer's acked watermark forward and adds flags, in a transaction
 * of its own. */
static int marks_raise(crdtdb_db *db, const uint8_t *peer, uint64_t acked, unsigned flags)
{
    crdtdb_txn *t;
    int rc = crdtdb_txn_begin(db, 0, &t);
    if (rc)
        return rc;
    crdtdb__marks m;
    int found;
    rc = crdtdb__marks_get(db, t->mt, peer, &m, &found);
    if (!rc && (acked > m.acked || (m.flags | flags) != m.flags)) {
        m.acked = acked > m.acked ? acked : m.acked;
        m.flags |= flags;
        rc = crdtdb__marks_put(db, t->mt, peer, &m);
    }
    if (rc) {
        crdtdb_txn_abort(t);
        return crdtdb__db_seterr(db, rc, "peer watermarks: %s", crdtdb_strerror(rc));
    }
    return crdtdb_txn_commit(t);
}

static int peer_ack_call(crdtdb_db *db, const uint8_t *peer, uint64_t acked)
{
    if (!db || !peer)
        return CRDTDB_EINVAL;
    return marks_raise(db, peer, acked, 0);
}

int crdtdb_db_peer_ack(crdtdb_db *db, const uint8_t *peer, uint64_t acked)
{
    return crdtdb__db_exit(db, peer_ack_call(db, peer, acked));
}

int crdtdb__peer_flag(crdtdb_db *db, const uint8_t *peer, unsigned flag)
{
    return marks_raise(db, peer, 0, flag);
}
