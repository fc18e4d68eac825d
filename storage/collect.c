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

/* What the peers in the horizon hold stably: every one of them up to
 * min1; all but peer number min1_num up to min2 (a register that came from
 * that peer needs no word from it that it has it). */
typedef struct hz {
    uint64_t min1, min2;
    uint32_t min1_num;
} hz;

static int horizon_peers(crdtdb_db *db, MDB_txn *mt, uint64_t max_age, uint64_t now,
                         uint64_t last, hz *h, uint64_t *left)
{
    MDB_cursor *c;
    int mrc = mdb_cursor_open(mt, db->env->dbi_marks, &c);
    if (mrc)
        return crdtdb__mdb_err(mrc);
    uint8_t pre[4];
    crdtdb__put_u32(pre, db->num);
    MDB_val k = {4, pre}, v;
    int rc = 0;
    h->min1 = h->min2 = last;
    h->min1_num = 0;
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
        uint64_t st = m.stable < last ? m.stable : last;
        if (st < h->min1) {
            uint32_t num = 0;
            if ((rc = crdtdb__peer_num(db->env, mt, (const uint8_t *)k.mv_data + 4, 0, &num)))
                break;
            h->min2 = h->min1;
            h->min1 = st;
            h->min1_num = num;
        } else if (st < h->min2) {
            h->min2 = st;
        }
    }
    mdb_cursor_close(c);
    return rc ? rc : mrc && mrc != MDB_NOTFOUND ? crdtdb__mdb_err(mrc) : 0;
}

/* The removed records whose base register is numbered at most upto. */
static int removed_upto(crdtdb_db *db, MDB_txn *mt, uint64_t upto, crdtdb__rkey **keys, uint32_t *n)
{
    crdtdb__log_iter it;
    crdtdb__log_entry e;
    uint32_t cap = 0;
    int found, rc = crdtdb__log_open(db, mt, 0, &it);
    while (!rc && !(rc = crdtdb__log_next(&it, &e, &found)) && found && e.seq <= upto) {
        if (e.plen) /* leaves: only a base can be a remove */
            continue;
        uint8_t kb[CRDTDB__RECKEY_MAX], kind;
        MDB_val rk = {crdtdb__reckey(kb, db->num, e.coll, (const char *)e.id, e.idlen), kb}, v;
        int mrc = mdb_get(mt, db->env->dbi_records, &rk, &v);
        if (mrc == MDB_NOTFOUND)
            continue;
        if (mrc) {
            rc = crdtdb__mdb_err(mrc);
            break;
        }
        if ((rc = crdtdb__record_blob_base(v.mv_data, v.mv_size, &kind)))
            break;
        if (kind != CRDTDB__BASE_REMOVE) /* adds are most of them: no copy */
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

/* Whether the register numbered seq is held by every peer in h. */
static int stable_at(crdtdb_txn *t, const hz *h, uint64_t seq, int *yes)
{
    *yes = seq <= h->min1;
    if (*yes || seq > h->min2 || !h->min1_num)
        return 0;
    uint8_t kb[CRDTDB__CHGKEY_LEN];
    MDB_val k = crdtdb__log_key(kb, t->db->num, seq), v;
    int mrc = mdb_get(t->mt, t->db->env->dbi_changes, &k, &v);
    if (mrc)
        return mrc == MDB_NOTFOUND ? 0 : crdtdb__mdb_err(mrc);
    if (v.mv_size < CRDTDB__CHG_HEAD)
        return CRDTDB_ECORRUPT;
    *yes = crdtdb__get_u32(v.mv_data) == h->min1_num; /* it came from that peer */
    return 0;
}

/* Drops record key if it is removed and all of it is stable. */
static int collect_one(crdtdb_txn *t, const crdtdb__rkey *key, const hz *h,
                       crdtdb_collect_stats *st)
{
    crdtdb_db *db = t->db;
    char id[CRDTDB_ID_MAX + 1];
    crdtdb__slot s;
    int rc = crdtdb__slot_load_key(t, &s, key, id);
    const crdtdb__record *r = &db->rec;
    if (rc || !s.exists || r->base_kind != CRDTDB__BASE_REMOVE)
        return rc;
    uint64_t top = 0;
    for (uint32_t i = 0; i <= r->nleaves; i++) {
        uint64_t seq = i < r->nleaves ? r->leaves[i].seq : r->base_seq;
        int yes;
        if ((rc = stable_at(t, h, seq, &yes)))
            return rc;
        if (!yes) /* the remove, or a hidden leaf, some peer may lack */
            return 0;
        if (seq > top)
            top = seq;
    }
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

#define COLLECT_BATCH 256 /* records dropped per write transaction: one
                             huge transaction would copy every page it
                             touches, and LMDB never gives the file back */

/* Writes the floor and stamp if they moved (never lower than what is
 * stored: another process may collect too), then commits t. */
static int batch_end(crdtdb_txn *t, crdtdb_collect_stats *st, uint64_t *floor0,
                     uint64_t *stamp0, int rc)
{
    crdtdb_db *db = t->db;
    uint64_t f, s;
    if (!rc && (st->floor != *floor0 || st->stamp != *stamp0) &&
        !(rc = horizon_read(db, t->mt, &f, &s))) {
        st->floor = f > st->floor ? f : st->floor;
        st->stamp = s > st->stamp ? s : st->stamp;
        uint8_t kb[5], vb[16];
        MDB_val k = horizon_key(kb, db->num), v = {16, vb};
        crdtdb__put_u64(vb, st->floor);
        crdtdb__put_u64(vb + 8, st->stamp);
        rc = crdtdb__mdb_err(mdb_put(t->mt, db->env->dbi_dbinfo, &k, &v, 0));
    }
    if (rc) {
        crdtdb_txn_abort(t);
        if (rc == CRDTDB_ECORRUPT)
            return crdtdb__db_seterr(db, rc, "collect: a record or mark is unreadable");
        return db->errcode == rc ? rc
                                 : crdtdb__db_seterr(db, rc, "collect: %s", crdtdb_strerror(rc));
    }
    /* cached shared deltas may hold what was dropped */
    crdtdb__shared_free(db->shared);
    db->shared = NULL;
    if ((rc = crdtdb_txn_commit(t)))
        return rc;
    db->hz_floor = st->floor;
    db->hz_stamp = st->stamp;
    db->hz_known = 1;
    *floor0 = st->floor;
    *stamp0 = st->stamp;
    return 0;
}

static int collect_call(crdtdb_db *db, uint64_t max_age, crdtdb_collect_stats *out)
{
    if (!db)
        return CRDTDB_EINVAL;
    crdtdb_collect_stats st;
    memset(&st, 0, sizeof st);
    /* what to look at, found in a read snapshot (no writer waits on the
     * scan); each batch then checks its records again */
    crdtdb_txn *t;
    int rc = crdtdb_txn_begin(db, CRDTDB_TXN_RDONLY, &t);
    if (rc)
        return rc;
    crdtdb__rkey *keys = NULL;
    uint32_t n = 0;
    uint64_t now = crdtdb__now_ms(db->env);
    hz h = {0, 0, 0};
    uint64_t last = 0;
    rc = horizon_read(db, t->mt, &st.floor, &st.stamp);
    if (!rc)
        rc = crdtdb__seq_read(db->env, t->mt, db->num, &last);
    if (!rc)
        rc = horizon_peers(db, t->mt, max_age, now, last, &h, &st.peers_left);
    st.horizon = h.min1;
    uint64_t floor0 = st.floor, stamp0 = st.stamp;
    if (!rc && h.min2)
        rc = removed_upto(db, t->mt, h.min2, &keys, &n);
    crdtdb_txn_abort(t);
    if (rc) {
        free(keys);
        return rc == CRDTDB_ECORRUPT ? crdtdb__db_seterr(db, rc, "collect: a record or mark is unreadable")
                                     : crdtdb__db_seterr(db, rc, "collect: %s", crdtdb_strerror(rc));
    }
    if ((rc = crdtdb_txn_begin(db, 0, &t))) {
        free(keys);
        return rc;
    }
    /* the horizon only moves up meanwhile: what is stable stays so */
    uint64_t batch = st.records;
    for (uint32_t i = 0; !rc && i < n; i++) {
        rc = collect_one(t, &keys[i], &h, &st);
        if (!rc && st.records - batch >= COLLECT_BATCH && i + 1 < n) {
            batch = st.records;
            if ((rc = batch_end(t, &st, &floor0, &stamp0, 0)) ||
                (rc = crdtdb_txn_begin(db, 0, &t))) {
                free(keys);
                return rc;
            }
        }
    }
    free(keys);
    if ((rc = batch_end(t, &st, &floor0, &stamp0, rc)))
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
    uint64_t now = crdtdb__now_ms(db->env);
    if (db->hz_known && now >= db->hz_read_ms && now - db->hz_read_ms < 1000) {
        *floor = db->hz_floor;
        *stamp = db->hz_stamp;
        return 0;
    }
    crdtdb_txn *t;
    int rc = crdtdb_txn_begin(db, CRDTDB_TXN_RDONLY, &t);
    if (rc)
        return rc;
    rc = horizon_read(db, t->mt, floor, stamp);
    crdtdb_txn_abort(t);
    if (!rc) {
        db->hz_floor = *floor;
        db->hz_stamp = *stamp;
        db->hz_read_ms = now;
        db->hz_known = 1;
    }
    return rc;
}

int crdtdb_db_horizon(crdtdb_db *db, uint64_t *floor, uint64_t *stamp)
{
    return crdtdb__db_exit(db, horizon_call(db, floor, stamp));
}
