/*
 * Tombstone collection (docs/crdt.md, "Collecting tombstones"): a removed
 * record whose every register is stable — held by every peer in the
 * horizon, with everything that peer held then received here — is dropped
 * whole, record and change-log entries, leaving no trace but the
 * database's collection floor and horizon stamp, which decide who needs a
 * full resync (session.c) and which writes from such a replica cannot be
 * told from writes to what was collected.
 */
#include <stdlib.h>
#include <string.h>

#include "crdt/array.h"
#include "storage/log.h"
#include "storage/slot.h"

static MDB_val horizon_key(uint8_t k[5], uint32_t num)
{
    crdtdb__put_u32(k, num);
    k[4] = 'g';
    MDB_val v = {5, k};
    return v;
}

/* The floor and stamp stored for db (0 and 0 when never collected). */
static int horizon_read(crdtdb_db *db, MDB_txn *mt, uint64_t *floor, uint64_t *stamp)
{
    uint8_t kb[5];
    MDB_val k = horizon_key(kb, db->num), v;
    *floor = *stamp = 0;
    int mrc = mdb_get(mt, db->env->dbi_dbinfo, &k, &v);
    if (mrc == MDB_NOTFOUND)
        return 0;
    if (mrc)
        return crdtdb__mdb_err(mrc);
    if (v.mv_size != 16)
        return CRDTDB_ECORRUPT;
    *floor = crdtdb__get_u64(v.mv_data);
    *stamp = crdtdb__get_u64((const uint8_t *)v.mv_data + 8);
    return 0;
}

/* The sequence every peer in the horizon holds stably (at most last). */
static int horizon_peers(crdtdb_db *db, MDB_txn *mt, uint64_t max_age, uint64_t now,
                         uint64_t last, uint64_t *horizon, uint64_t *left)
{
    MDB_cursor *c;
    int mrc = mdb_cursor_open(mt, db->env->dbi_marks, &c);
    if (mrc)
        return crdtdb__mdb_err(mrc);
    uint8_t pre[4];
    crdtdb__put_u32(pre, db->num);
    MDB_val k = {4, pre}, v;
    int rc = 0;
    *horizon = last;
    *left = 0;
    for (mrc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE); mrc == 0;
         mrc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        if (k.mv_size != 4 + CRDTDB_REPLICA_ID_BYTES || memcmp(k.mv_data, pre, 4) != 0)
            break;
        int found;
        crdtdb__marks m;
        if ((rc = crdtdb__marks_get(db, mt, (const uint8_t *)k.mv_data + 4, &m, &found)))
            break;
        /* a forger or a clone is refused anyway: it holds nothing back */
        if (m.flags & (CRDTDB_PEER_EQUIVOCATED | CRDTDB_PEER_FORKED))
            continue;
        if (max_age && (m.seen_ms == 0 || now - m.seen_ms > max_age)) {
            ++*left; /* silent too long: it resyncs whole if it returns */
            continue;
        }
        if (m.stable < *horizon)
            *horizon = m.stable;
    }
    mdb_cursor_close(c);
    return rc ? rc : mrc && mrc != MDB_NOTFOUND ? crdtdb__mdb_err(mrc) : 0;
}

/* A record key copied out of the log: u16 collection, u8 length, id. */
typedef struct ckey {
    uint8_t k[3 + CRDTDB_ID_MAX];
} ckey;

/* The removed records whose base register is numbered at most horizon. */
static int removed_upto(crdtdb_db *db, MDB_txn *mt, uint64_t horizon, ckey **keys, uint32_t *n)
{
    crdtdb__log_iter it;
    crdtdb__log_entry e;
    uint32_t cap = 0;
    int found, rc = crdtdb__log_open(db, mt, 0, &it);
    while (!rc && !(rc = crdtdb__log_next(&it, &e, &found)) && found && e.seq <= horizon) {
        if (e.plen) /* leaves: only a base can be a remove */
            continue;
        if (crdtdb__array_grow(keys, &cap, *n, sizeof **keys, 64)) {
            rc = CRDTDB_ENOMEM;
            break;
        }
        uint8_t *k = (*keys)[(*n)++].k;
        k[0] = (uint8_t)(e.coll >> 8);
        k[1] = (uint8_t)e.coll;
        k[2] = (uint8_t)e.idlen;
        memcpy(k + 3, e.id, e.idlen);
    }
    crdtdb__log_close(&it);
    return rc;
}

/* Drops record key if it is removed and all of it is stable. */
static int collect_one(crdtdb_txn *t, const ckey *key, uint64_t horizon,
                       crdtdb_collect_stats *st)
{
    crdtdb_db *db = t->db;
    uint16_t coll = (uint16_t)(key->k[0] << 8 | key->k[1]);
    char id[CRDTDB_ID_MAX + 1];
    memcpy(id, key->k + 3, key->k[2]);
    id[key->k[2]] = 0;
    if (coll >= db->ncoll)
        return 0;
    crdtdb__slot s;
    int rc = crdtdb__slot_load(t, &s, coll, id);
    const crdtdb__record *r = &db->rec;
    if (rc || !s.exists || r->base_kind != CRDTDB__BASE_REMOVE || r->base_seq > horizon)
        return rc;
    uint64_t top = r->base_seq;
    for (uint32_t i = 0; i < r->nleaves; i++)
        if (r->leaves[i].seq > top)
            top = r->leaves[i].seq;
    if (top > horizon) /* a hidden leaf the peers may not hold yet */
        return 0;
    int mrc = mdb_cursor_del(t->rec_cur, 0);
    for (uint32_t i = 0; !mrc && i <= r->nleaves; i++)
        mrc = crdtdb__log_del(t, i < r->nleaves ? r->leaves[i].seq : r->base_seq);
    if (mrc)
        return crdtdb__mdb_err(mrc);
    st->records++;
    st->registers += r->nleaves + 1u;
    if (top > st->floor)
        st->floor = top;
    if (r->base_hlc > st->stamp)
        st->stamp = r->base_hlc;
    return 0;
}

static int collect_call(crdtdb_db *db, uint64_t max_age, crdtdb_collect_stats *out)
{
    if (!db)
        return CRDTDB_EINVAL;
    crdtdb_collect_stats st;
    memset(&st, 0, sizeof st);
    crdtdb_txn *t;
    int rc = crdtdb_txn_begin(db, 0, &t);
    if (rc)
        return rc;
    ckey *keys = NULL;
    uint32_t n = 0;
    uint64_t now = crdtdb__now_ms(db->env);
    rc = horizon_read(db, t->mt, &st.floor, &st.stamp);
    if (!rc)
        rc = horizon_peers(db, t->mt, max_age, now, t->seq0, &st.horizon, &st.peers_left);
    uint64_t floor0 = st.floor, stamp0 = st.stamp;
    if (!rc && st.horizon)
        rc = removed_upto(db, t->mt, st.horizon, &keys, &n);
    for (uint32_t i = 0; !rc && i < n; i++)
        rc = collect_one(t, &keys[i], st.horizon, &st);
    free(keys);
    if (!rc && (st.floor != floor0 || st.stamp != stamp0)) {
        uint8_t kb[5], vb[16];
        MDB_val k = horizon_key(kb, db->num), v = {16, vb};
        crdtdb__put_u64(vb, st.floor);
        crdtdb__put_u64(vb + 8, st.stamp);
        rc = crdtdb__mdb_err(mdb_put(t->mt, db->env->dbi_dbinfo, &k, &v, 0));
    }
    if (rc) {
        crdtdb_txn_abort(t);
        if (rc == CRDTDB_ECORRUPT)
            return crdtdb__db_seterr(db, rc, "collect: a record or mark is unreadable");
        return db->errcode == rc ? rc : crdtdb__db_seterr(db, rc, "collect: %s", crdtdb_strerror(rc));
    }
    if (st.records) { /* cached shared deltas may hold what was dropped */
        crdtdb__shared_free(db->shared);
        db->shared = NULL;
    }
    if ((rc = crdtdb_txn_commit(t)))
        return rc;
    if (out)
        *out = st;
    return 0;
}

int crdtdb_db_collect(crdtdb_db *db, uint64_t max_peer_age_ms, crdtdb_collect_stats *out)
{
    return crdtdb__db_exit(db, collect_call(db, max_peer_age_ms, out));
}

static int horizon_call(crdtdb_db *db, uint64_t *floor, uint64_t *stamp)
{
    if (!db || !floor || !stamp)
        return CRDTDB_EINVAL;
    crdtdb_txn *t;
    int rc = crdtdb_txn_begin(db, CRDTDB_TXN_RDONLY, &t);
    if (rc)
        return rc;
    rc = horizon_read(db, t->mt, floor, stamp);
    crdtdb_txn_abort(t);
    return rc;
}

int crdtdb_db_horizon(crdtdb_db *db, uint64_t *floor, uint64_t *stamp)
{
    return crdtdb__db_exit(db, horizon_call(db, floor, stamp));
}
