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
    *num = crdtdb__get_u32(nv.mv_data) + 1; /* 0: "here" as a source (CRDTDB__SRC_LOCAL) */
    if (*num > env->opts.max_origins) /* never reclaimed: bounded */
        return CRDTDB_EMAPFULL;
    crdtdb__put_u32(b, *num);
    MDB_val bv = {4, b};
    if ((rc = mdb_put(mt, env->dbi_meta, &nk, &bv, 0)) ||
        (rc = mdb_put(mt, env->dbi_peerids, &k, &bv, 0)))
        return crdtdb__mdb_err(rc);
    return 0;
}

/* received, acked, flags, then a ring of (seq, fingerprint) points; then
 * stability: stable, pending pair, last heard (absent in older marks) */
#define MARKS_OLD_BYTES (21 + CRDTDB__FP_RING * 24)
#define MARKS_BYTES (MARKS_OLD_BYTES + 32)

static MDB_val marks_key(uint8_t *k, uint32_t num, const uint8_t *peer)
{
    crdtdb__put_u32(k, num);
    memcpy(k + 4, peer, CRDTDB_REPLICA_ID_BYTES);
    MDB_val v = {4 + CRDTDB_REPLICA_ID_BYTES, k};
    return v;
}

static int marks_decode(const MDB_val *v, crdtdb__marks *m)
{
    if (v->mv_size != MARKS_BYTES && v->mv_size != MARKS_OLD_BYTES)
        return CRDTDB_ECORRUPT;
    const uint8_t *p = v->mv_data;
    m->stable = m->pend_acked = m->seen_ms = 0;
    m->pend_mine = UINT64_MAX;
    if (v->mv_size == MARKS_BYTES) {
        const uint8_t *q = p + MARKS_OLD_BYTES;
        m->stable = crdtdb__get_u64(q);
        m->pend_acked = crdtdb__get_u64(q + 8);
        m->pend_mine = crdtdb__get_u64(q + 16);
        m->seen_ms = crdtdb__get_u64(q + 24);
    }
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
    m->pend_mine = UINT64_MAX;
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
    crdtdb__put_u64(vb + MARKS_OLD_BYTES, m->stable);
    crdtdb__put_u64(vb + MARKS_OLD_BYTES + 8, m->pend_acked);
    crdtdb__put_u64(vb + MARKS_OLD_BYTES + 16, m->pend_mine);
    crdtdb__put_u64(vb + MARKS_OLD_BYTES + 24, m->seen_ms);
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
        p.stable = m.stable;
        p.seen_ms = m.seen_ms;
        rc = cb(ctx, &p);
    }
    mdb_cursor_close(c);
    crdtdb_txn_abort(t);
    return rc;
}

int crdtdb_db_peers(crdtdb_db *db, crdtdb_peer_cb cb, void *ctx)
{
    uint64_t m = crdtdb__db_enter(db);
    return crdtdb__db_exit(db, m, peers_call(db, cb, ctx));
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
    out->stable = m.stable;
    out->seen_ms = m.seen_ms;
    crdtdb_txn_abort(t);
    return rc;
}

int crdtdb_db_peer_get(crdtdb_db *db, const uint8_t *peer, crdtdb_peer *out,
                       int *found)
{
    uint64_t m = crdtdb__db_enter(db);
    return crdtdb__db_exit(db, m, peer_get_call(db, peer, out, found));
}

void crdtdb__marks_heard(crdtdb__marks *m, uint64_t now_ms)
{
    if (m->pend_mine != UINT64_MAX && m->received >= m->pend_mine) {
        if (m->pend_acked > m->stable)
            m->stable = m->pend_acked;
        m->pend_mine = UINT64_MAX;
        m->pend_acked = 0;
    }
    if (now_ms > m->seen_ms)
        m->seen_ms = now_ms;
}

/* An ack pair: acked is stable once we hold the peer's log up to mine.
 * Only the first pair still waiting is kept: a later one waits behind it,
 * so a peer that never stops writing still moves `stable` forward. */
static void marks_ack_pair(crdtdb__marks *m, uint64_t acked, uint64_t mine)
{
    if (m->received >= mine) {
        if (acked > m->stable)
            m->stable = acked;
    } else if (m->pend_mine == UINT64_MAX) {
        m->pend_acked = acked;
        m->pend_mine = mine;
    }
}

/* Moves a peer's acked watermark forward, records an ack pair (mine
 * UINT64_MAX: none), adds flags and clears `clear`, in the write
 * transaction t; writes only what changed. */
static int marks_raise_in(crdtdb_db *db, crdtdb_txn *t, const uint8_t *peer, uint64_t acked,
                          uint64_t mine, unsigned flags, unsigned clear)
{
    crdtdb__marks m;
    int found;
    int rc = crdtdb__marks_get(db, t->mt, peer, &m, &found);
    crdtdb__marks was = m;
    if (!rc) {
        m.acked = acked > m.acked ? acked : m.acked;
        m.flags = (m.flags | flags) & ~clear;
        if (mine != UINT64_MAX) {
            marks_ack_pair(&m, acked, mine);
            crdtdb__marks_heard(&m, crdtdb__now_ms(db->env));
        }
        if (memcmp(&m, &was, sizeof m) != 0)
            rc = crdtdb__marks_put(db, t->mt, peer, &m);
    }
    return rc;
}

/* marks_raise_in, in a transaction of its own. */
static int marks_raise(crdtdb_db *db, const uint8_t *peer, uint64_t acked, uint64_t mine,
                       unsigned flags, unsigned clear)
{
    crdtdb_txn *t;
    int rc = crdtdb_txn_begin(db, 0, &t);
    if (rc)
        return rc;
    if ((rc = marks_raise_in(db, t, peer, acked, mine, flags, clear))) {
        crdtdb_txn_abort(t);
        return crdtdb__db_seterr(db, rc, "peer watermarks: %s", crdtdb_strerror(rc));
    }
    return crdtdb_txn_commit(t);
}

static int peer_ack_call(crdtdb_db *db, const uint8_t *peer, uint64_t acked, uint64_t mine)
{
    if (!db || !peer)
        return CRDTDB_EINVAL;
    return marks_raise(db, peer, acked, mine, 0, 0);
}

int crdtdb_db_peer_ack(crdtdb_db *db, const uint8_t *peer, uint64_t acked)
{
    uint64_t m = crdtdb__db_enter(db);
    return crdtdb__db_exit(db, m, peer_ack_call(db, peer, acked, UINT64_MAX));
}

int crdtdb_db_peer_ack_at(crdtdb_db *db, const uint8_t *peer, uint64_t acked,
                          uint64_t their_seq)
{
    uint64_t m = crdtdb__db_enter(db);
    return crdtdb__db_exit(db, m, peer_ack_call(db, peer, acked,
                                             their_seq == UINT64_MAX ? UINT64_MAX - 1 : their_seq));
}

static int peer_acks_call(crdtdb_db *db, const crdtdb_peer_ack *acks, size_t n)
{
    if (!db || (n && !acks))
        return CRDTDB_EINVAL;
    if (!n)
        return 0;
    crdtdb_txn *t;
    int rc = crdtdb_txn_begin(db, 0, &t);
    if (rc)
        return rc;
    for (size_t i = 0; !rc && i < n; i++) {
        const crdtdb_peer_ack *a = &acks[i];
        /* as crdtdb_db_peer_ack_at(stable, 0), then crdtdb_db_peer_ack */
        if (a->stable)
            rc = marks_raise_in(db, t, a->peer, a->stable, 0, 0, 0);
        if (!rc)
            rc = marks_raise_in(db, t, a->peer, a->acked, UINT64_MAX, 0, 0);
    }
    if (rc) {
        crdtdb_txn_abort(t);
        return crdtdb__db_seterr(db, rc, "peer watermarks: %s", crdtdb_strerror(rc));
    }
    return crdtdb_txn_commit(t);
}

int crdtdb_db_peer_acks(crdtdb_db *db, const crdtdb_peer_ack *acks, size_t n)
{
    uint64_t m = crdtdb__db_enter(db);
    return crdtdb__db_exit(db, m, peer_acks_call(db, acks, n));
}

static int peer_leave_call(crdtdb_db *db, const uint8_t *peer, int left)
{
    if (!db || !peer)
        return CRDTDB_EINVAL;
    return left ? marks_raise(db, peer, 0, UINT64_MAX, CRDTDB_PEER_LEFT, 0)
                : marks_raise(db, peer, 0, UINT64_MAX, 0, CRDTDB_PEER_LEFT);
}

int crdtdb_db_peer_leave(crdtdb_db *db, const uint8_t *peer, int left)
{
    uint64_t m = crdtdb__db_enter(db);
    return crdtdb__db_exit(db, m, peer_leave_call(db, peer, left));
}

int crdtdb__peer_flag(crdtdb_db *db, const uint8_t *peer, unsigned flag)
{
    return marks_raise(db, peer, 0, UINT64_MAX, flag, 0);
}
