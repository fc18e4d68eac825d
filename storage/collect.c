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
#include "storage/recs.h"
#include "storage/slot.h"

#define FLOOR_BYTES (24 + CRDTDB_REPLICA_ID_BYTES) /* floor, stamp, m2, src1 */

int crdtdb__floor_read(crdtdb_db *db, MDB_txn *mt, crdtdb__floor *f)
{
    uint8_t kb[5];
    MDB_val k = crdtdb__dbinfo_key(kb, db->num, 'g'), v;
    memset(f, 0, sizeof *f);
    int mrc = mdb_get(mt, db->env->dbi_dbinfo, &k, &v);
    if (mrc == MDB_NOTFOUND)
        return 0;
    if (mrc)
        return crdtdb__mdb_err(mrc);
    if (v.mv_size != FLOOR_BYTES)
        return CRDTDB_ECORRUPT;
    const uint8_t *p = v.mv_data;
    f->floor = crdtdb__get_u64(p);
    f->stamp = crdtdb__get_u64(p + 8);
    f->m2 = crdtdb__get_u64(p + 16);
    memcpy(f->src1, p + 24, CRDTDB_REPLICA_ID_BYTES);
    return 0;
}

static int floor_write(crdtdb_db *db, MDB_txn *mt, const crdtdb__floor *f)
{
    uint8_t kb[5], vb[FLOOR_BYTES];
    MDB_val k = crdtdb__dbinfo_key(kb, db->num, 'g'), v = {FLOOR_BYTES, vb};
    crdtdb__put_u64(vb, f->floor);
    crdtdb__put_u64(vb + 8, f->stamp);
    crdtdb__put_u64(vb + 16, f->m2);
    memcpy(vb + 24, f->src1, CRDTDB_REPLICA_ID_BYTES);
    return crdtdb__mdb_err(mdb_put(mt, db->env->dbi_dbinfo, &k, &v, 0));
}

int crdtdb__logfloor_read(crdtdb_db *db, MDB_txn *mt, uint64_t *lf)
{
    return crdtdb__dbinfo_u64(db, mt, 'l', lf);
}

static const uint8_t NO_ID[CRDTDB_REPLICA_ID_BYTES]; /* a source not known: all zero */

/* Notes that sequence seq, from replica src, was collected. */
static void floor_note(crdtdb__floor *f, const uint8_t *src, uint64_t seq)
{
    int same = memcmp(src, f->src1, CRDTDB_REPLICA_ID_BYTES) == 0 &&
               memcmp(src, NO_ID, CRDTDB_REPLICA_ID_BYTES) != 0;
    if (same) {
        if (seq > f->floor)
            f->floor = seq;
    } else if (seq > f->floor) {
        if (f->floor > f->m2)
            f->m2 = f->floor;
        f->floor = seq;
        memcpy(f->src1, src, CRDTDB_REPLICA_ID_BYTES);
    } else if (seq > f->m2) {
        f->m2 = seq;
    }
}

/* b merged into a (both only grow). */
static void floor_merge(crdtdb__floor *a, const crdtdb__floor *b)
{
    if (b->floor)
        floor_note(a, b->src1, b->floor);
    if (b->m2)
        floor_note(a, NO_ID, b->m2);
    if (b->stamp > a->stamp)
        a->stamp = b->stamp;
}

/* What the peers in the horizon hold stably: every one of them up to
 * min1; all but peer number min1_num up to min2 (a register that came from
 * that peer needs no word from it that it has it). */
typedef struct hz {
    uint64_t min1, min2;
    uint32_t min1_num;
    /* the peers' numbers and ids, to name a collected register's source */
    uint32_t *nums;
    uint8_t (*ids)[CRDTDB_REPLICA_ID_BYTES];
    size_t n, cap;
} hz;

/* horizon_peers's walk: what a peer's marks are weighed against, and
 * where they are noted. */
typedef struct hz_walk {
    crdtdb_db *db;
    MDB_txn *mt;
    uint64_t max_age, now, last;
    hz *h;
    uint64_t *left;
} hz_walk;

static int horizon_peer(void *ctx, const MDB_val *k, const MDB_val *v)
{
    hz_walk *w = ctx;
    hz *h = w->h;
    (void)v;
    if (k->mv_size != 4 + CRDTDB_REPLICA_ID_BYTES)
        return 1; /* not a peer's marks: the walk ends */
    const uint8_t *peer = (const uint8_t *)k->mv_data + 4;
    int found;
    crdtdb__marks m;
    int rc = crdtdb__marks_get(w->db, w->mt, peer, &m, &found);
    if (rc)
        return rc;
    /* a forger or a clone is refused anyway: it holds nothing back */
    if (m.flags & (CRDTDB_PEER_EQUIVOCATED | CRDTDB_PEER_FORKED))
        return 0;
    if ((m.flags & CRDTDB_PEER_LEFT) ||
        (w->max_age && (m.seen_ms == 0 || w->now - m.seen_ms > w->max_age))) {
        ++*w->left; /* gone, or silent too long: it resyncs whole if it returns */
        return 0;
    }
    uint32_t num = 0;
    if ((rc = crdtdb__peer_num(w->db->env, w->mt, peer, 0, &num)))
        return rc;
    if (h->n == h->cap) {
        size_t cap = h->cap ? 2 * h->cap : 8;
        uint32_t *nums = realloc(h->nums, cap * sizeof *nums);
        if (nums)
            h->nums = nums;
        void *ids = nums ? realloc(h->ids, cap * sizeof *h->ids) : NULL;
        if (!ids)
            return CRDTDB_ENOMEM;
        h->ids = ids;
        h->cap = cap;
    }
    h->nums[h->n] = num;
    memcpy(h->ids[h->n++], peer, CRDTDB_REPLICA_ID_BYTES);
    uint64_t st = m.stable < w->last ? m.stable : w->last;
    if (st < h->min1) {
        h->min2 = h->min1;
        h->min1 = st;
        h->min1_num = num;
    } else if (st < h->min2) {
        h->min2 = st;
    }
    return 0;
}

static int horizon_peers(crdtdb_db *db, MDB_txn *mt, uint64_t max_age, uint64_t now,
                         uint64_t last, hz *h, uint64_t *left)
{
    hz_walk w = {db, mt, max_age, now, last, h, left};
    h->min1 = h->min2 = last;
    h->min1_num = 0;
    *left = 0;
    return crdtdb__db_each(db, mt, db->env->dbi_marks, horizon_peer, &w);
}

/* The removed records whose base register is numbered at most upto. */
static int removed_upto(crdtdb_db *db, MDB_txn *mt, uint64_t upto, crdtdb__rkey **keys, uint32_t *n)
{
    crdtdb__log_iter it;
    crdtdb__log_entry e;
    crdtdb__held *held = NULL;
    uint32_t cap = 0;
    int found, rc = crdtdb__log_open(db, mt, 0, &it);
    while (!rc && !(rc = crdtdb__log_next(&it, &e, &found)) && found && e.seq <= upto) {
        if (e.plen) /* leaves: only a base can be a remove */
            continue;
        uint8_t kb[CRDTDB__RECKEY_MAX], kind;
        MDB_val rk = {crdtdb__reckey(kb, db->num, e.coll, (const char *)e.id, e.idlen), kb}, v;
        int mrc = crdtdb__recs_get(db->env, mt, &held, &rk, &v);
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
    crdtdb__held_free(&held);
    return rc;
}

/* Whether the register numbered seq is held by every peer in h. */
static int stable_at(crdtdb_txn *t, const hz *h, uint64_t seq, int *yes)
{
    *yes = seq <= h->min1;
    if (*yes || seq > h->min2 || !h->min1_num)
        return 0;
    uint32_t src;
    int found, rc = crdtdb__log_src(t, seq, &src, &found);
    *yes = !rc && found && src == h->min1_num; /* it came from that peer */
    return rc;
}

/* Drops record key if it is removed and all of it is stable. */
static int collect_one(crdtdb_txn *t, const crdtdb__rkey *key, const hz *h,
                       crdtdb_collect_stats *st, crdtdb__floor *fl)
{
    crdtdb_db *db = t->db;
    char id[CRDTDB_ID_MAX + 1];
    crdtdb__slot s;
    int rc = crdtdb__slot_load_key(t, &s, key, id);
    const crdtdb__record *r = &db->rec;
    if (rc || !s.exists || r->base_kind != CRDTDB__BASE_REMOVE)
        return rc;
    /* A leaf newer than the remove (an update that had not seen it) keeps
     * the record: an add stamped between the two may still be on its way
     * from a third replica, and where the record is held that add shows
     * the leaf.  Only a later remove, burying the leaf, lets it go.  An
     * equal stamp is kept too: the replica tie-break is not worth it. */
    for (uint32_t i = 0; i < r->nleaves; i++)
        if (r->leaves[i].hlc >= r->base_hlc)
            return 0;
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
    for (uint32_t i = 0; i <= r->nleaves; i++) { /* whose they were, first */
        uint64_t seq = i < r->nleaves ? r->leaves[i].seq : r->base_seq;
        uint32_t num;
        int found;
        if ((rc = crdtdb__log_src(t, seq, &num, &found)))
            return rc;
        const uint8_t *src = NO_ID;
        if (found) {
            if (num == CRDTDB__SRC_LOCAL)
                src = db->env->pk;
            for (size_t j = 0; num != CRDTDB__SRC_LOCAL && j < h->n; j++)
                if (h->nums[j] == num)
                    src = h->ids[j];
        }
        floor_note(fl, src, seq);
    }
    uint64_t newest = r->base_hlc; /* every leaf left is older: dead */
    if ((rc = crdtdb__slot_place(t, &s))) /* removes are never packed; in case */
        return rc;
    int mrc = mdb_cursor_del(t->rec_cur, 0);
    for (uint32_t i = 0; !mrc && i <= r->nleaves; i++)
        mrc = crdtdb__log_drop(t, i < r->nleaves ? r->leaves[i].seq : r->base_seq, NULL, NULL, 0);
    if (mrc)
        return crdtdb__mdb_err(mrc);
    st->records++;
    st->registers += r->nleaves + 1u;
    if (top > st->floor)
        st->floor = top;
    if (newest > st->stamp)
        st->stamp = newest;
    if (newest > fl->stamp)
        fl->stamp = newest;
    return 0;
}

#define COLLECT_BATCH 256 /* records dropped per write transaction: one
                             huge transaction would copy every page it
                             touches, and LMDB never gives the file back */

/* Writes what this batch collected into the stored floor (merged: another
 * process may collect too), then commits t. */
static int batch_end(crdtdb_txn *t, crdtdb_collect_stats *st, crdtdb__floor *fl, int rc)
{
    crdtdb_db *db = t->db;
    crdtdb__floor stored;
    if (!rc && (fl->floor || fl->m2) && !(rc = crdtdb__floor_read(db, t->mt, &stored))) {
        floor_merge(&stored, fl);
        *fl = stored;
        rc = floor_write(db, t->mt, fl);
    }
    if (rc) {
        crdtdb_txn_abort(t);
        if (rc == CRDTDB_ECORRUPT)
            return crdtdb__db_seterr(db, rc, "collect: a record, pack of records or mark is unreadable");
        return crdtdb__db_msg_since(db, rc, db->mark)
                   ? rc
                   : crdtdb__db_seterr(db, rc, "collect: %s", crdtdb_strerror(rc));
    }
    /* cached shared deltas may hold what was dropped */
    crdtdb__shared_free(db->shared);
    db->shared = NULL;
    if ((rc = crdtdb_txn_commit(t)))
        return rc;
    if (fl->floor) {
        db->hz = *fl;
        db->hz_known = 1;
        st->floor = fl->floor;
        st->stamp = fl->stamp;
    }
    return 0;
}


/* ----------------------------------------------------------- the trim
 * What every peer in the horizon holds needs no index by sequence: a peer
 * asks for what comes after what it holds, so only a replica from behind
 * the horizon asks from below it, and an export from below the log floor
 * walks the records instead (export.c).  The entries of removed records
 * stay (removed_upto finds the next collection's candidates by them), and
 * so does the newest (expiry reads the last write's stamp from it). */

#define TRIM_BATCH 4096 /* entries looked at per write transaction */

/* The key of db's newest log entry into newest (its buffer holds
 * CRDTDB__CHGKEY_LEN bytes; size 0: none). */
static int log_newest(crdtdb_db *db, MDB_txn *mt, MDB_val *newest)
{
    MDB_cursor *c;
    int mrc = mdb_cursor_open(mt, db->env->dbi_changes, &c);
    if (mrc)
        return crdtdb__mdb_err(mrc);
    uint8_t kb[4];
    crdtdb__put_u32(kb, db->num + 1); /* past the last key of num, then back */
    MDB_val k = {4, kb}, v;
    mrc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
    mrc = mrc == MDB_NOTFOUND ? mdb_cursor_get(c, &k, &v, MDB_LAST)
                              : mrc ? mrc : mdb_cursor_get(c, &k, &v, MDB_PREV);
    newest->mv_size = 0;
    if (!mrc && k.mv_size == CRDTDB__CHGKEY_LEN && crdtdb__get_u32(k.mv_data) == db->num) {
        memcpy(newest->mv_data, k.mv_data, CRDTDB__CHGKEY_LEN);
        newest->mv_size = CRDTDB__CHGKEY_LEN;
    }
    mdb_cursor_close(c);
    return mrc && mrc != MDB_NOTFOUND ? crdtdb__mdb_err(mrc) : 0;
}

/* One batch: drops the entries from sequence *from up to upto but those
 * kept (above), in a write transaction, and raises the log floor to where
 * it stopped; *from is then where the next batch starts, *more when it
 * stopped early.  Entries kept below the floor are looked at again by the
 * next trim: the newest of one trim is an old one by the next. */
static int trim_batch(crdtdb_txn *t, uint64_t *from, uint64_t upto, const MDB_val *newest,
                      uint64_t *lf, uint64_t *dropped, int *more)
{
    crdtdb_db *db = t->db;
    MDB_cursor *c;
    int mrc = mdb_cursor_open(t->mt, db->env->dbi_changes, &c), rc = 0;
    if (mrc)
        return crdtdb__mdb_err(mrc);
    uint8_t kb[CRDTDB__CHGKEY_LEN];
    MDB_val k = crdtdb__log_key(kb, db->num, *from), v;
    uint64_t at = *lf;
    unsigned looked = 0;
    crdtdb__held *held = NULL;
    *more = 0;
    for (mrc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE); !mrc;
         mrc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        crdtdb__log_run run;
        if (k.mv_size != CRDTDB__CHGKEY_LEN || crdtdb__get_u32(k.mv_data) != db->num)
            break;
        if (crdtdb__log_parse(&k, &v, &run)) {
            rc = CRDTDB_ECORRUPT;
            break;
        }
        if (run.seq + run.n - 1 > upto)
            break; /* runs do not overlap: the rest is later */
        if (++looked > TRIM_BATCH) {
            *more = 1;
            break;
        }
        *from = run.seq + run.n;
        if (run.seq + run.n - 1 > at)
            at = run.seq + run.n - 1;
        if (newest->mv_size == k.mv_size && memcmp(newest->mv_data, k.mv_data, k.mv_size) == 0)
            continue;
        uint8_t rk[CRDTDB__RECKEY_MAX], kind = CRDTDB__BASE_NONE;
        MDB_val rkey = {crdtdb__reckey(rk, db->num, run.coll, (const char *)run.id, run.idlen), rk},
                rv;
        int g = crdtdb__recs_get(db->env, t->mt, &held, &rkey, &rv);
        if (g && g != MDB_NOTFOUND) {
            mrc = g;
            break;
        }
        if (!g && (rc = crdtdb__record_blob_base(rv.mv_data, rv.mv_size, &kind)))
            break;
        if (g || kind == CRDTDB__BASE_REMOVE)
            continue; /* a removed record's, or one without its record: kept */
        if ((mrc = mdb_cursor_del(c, 0)))
            break;
        ++*dropped;
    }
    mdb_cursor_close(c);
    crdtdb__held_free(&held);
    if (!rc && mrc && mrc != MDB_NOTFOUND)
        rc = crdtdb__mdb_err(mrc);
    if (!rc && !*more && upto > at)
        at = upto; /* what is left below upto is a run reaching past it */
    if (!rc && at > *lf && !(rc = crdtdb__dbinfo_u64_put(db, t->mt, 'l', at)))
        *lf = at;
    return rc;
}

/* Trims db's log up to `upto` (the horizon) in batches. */
static int trim_log(crdtdb_db *db, uint64_t upto, crdtdb_collect_stats *st)
{
    uint64_t from = 1;
    for (int more = 1; more;) {
        crdtdb_txn *t;
        int rc = crdtdb_txn_begin(db, 0, &t);
        if (rc)
            return rc;
        uint64_t lf = 0;
        uint8_t nk[CRDTDB__CHGKEY_LEN];
        MDB_val newest = {0, nk};
        uint64_t wrote, noted = 0, lf0 = 0, dropped0 = st->log_entries;
        if (!(rc = crdtdb__logfloor_read(db, t->mt, &lf)) &&
            !(rc = log_newest(db, t->mt, &newest)) &&
            /* what expiry reads from the log, noted before entries go */
            !(rc = crdtdb__last_write_ms(db->env, t->mt, db->num, &wrote)) &&
            !(rc = crdtdb__dbinfo_u64(db, t->mt, 'w', &noted)) &&
            (wrote <= noted || !(rc = crdtdb__dbinfo_u64_put(db, t->mt, 'w', wrote)))) {
            lf0 = lf;
            rc = trim_batch(t, &from, upto, &newest, &lf, &st->log_entries, &more);
        } else {
            more = 0;
        }
        if (rc) {
            crdtdb_txn_abort(t);
            return rc == CRDTDB_ECORRUPT
                       ? crdtdb__db_seterr(db, rc, "collect: a change-log entry, record or pack of records is unreadable")
                       : crdtdb__db_seterr(db, rc, "collect: %s", crdtdb_strerror(rc));
        }
        if (wrote <= noted && lf == lf0 && st->log_entries == dropped0) {
            crdtdb_txn_abort(t); /* nothing to trim: no commit, no fsync */
            continue;
        }
        /* cached shared deltas start where a walk is needed now */
        crdtdb__shared_free(db->shared);
        db->shared = NULL;
        if ((rc = crdtdb_txn_commit(t)))
            return rc;
    }
    return 0;
}

/* Packs the cold records (recs.h) in one write transaction, committed
 * only when it packed any. */
static int pack_cold(crdtdb_db *db, uint64_t upto, crdtdb_collect_stats *st)
{
    crdtdb_txn *t;
    int rc = crdtdb_txn_begin(db, 0, &t);
    if (rc)
        return rc;
    if ((rc = crdtdb__recs_pack(t, upto, &st->packed)) || st->packed == 0) {
        crdtdb_txn_abort(t);
        return rc;
    }
    return crdtdb_txn_commit(t);
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
    hz h;
    memset(&h, 0, sizeof h);
    crdtdb__floor fl, stored;
    memset(&fl, 0, sizeof fl);
    uint64_t last = 0;
    rc = crdtdb__floor_read(db, t->mt, &stored);
    if (!rc)
        rc = crdtdb__seq_read(db->env, t->mt, db->num, &last);
    if (!rc)
        rc = horizon_peers(db, t->mt, max_age, now, last, &h, &st.peers_left);
    st.horizon = h.min1;
    st.floor = stored.floor;
    st.stamp = stored.stamp;
    if (!rc && h.min2)
        rc = removed_upto(db, t->mt, h.min2, &keys, &n);
    crdtdb_txn_abort(t);
    t = NULL; /* a failed read leaves no transaction for batch_end */
    if (!rc && (rc = crdtdb_txn_begin(db, 0, &t)))
        t = NULL;
    else if (rc)
        rc = rc == CRDTDB_ECORRUPT
                 ? crdtdb__db_seterr(db, rc, "collect: a record, pack of records or mark is unreadable")
                 : crdtdb__db_seterr(db, rc, "collect: %s", crdtdb_strerror(rc));
    /* the horizon only moves up meanwhile: what is stable stays so */
    uint64_t batch = st.records;
    for (uint32_t i = 0; t && !rc && i < n; i++) {
        rc = collect_one(t, &keys[i], &h, &st, &fl);
        if (!rc && st.records - batch >= COLLECT_BATCH && i + 1 < n) {
            batch = st.records;
            if ((rc = batch_end(t, &st, &fl, 0)) || (rc = crdtdb_txn_begin(db, 0, &t)))
                t = NULL;
        }
    }
    free(keys);
    free(h.nums);
    free(h.ids);
    if (t && (rc = batch_end(t, &st, &fl, rc)))
        return rc;
    if (!rc)
        rc = trim_log(db, st.horizon, &st);
    if (!rc)
        rc = pack_cold(db, st.horizon, &st);
    if (!rc && out)
        *out = st;
    return rc;
}

int crdtdb_db_collect(crdtdb_db *db, uint64_t max_peer_age_ms, crdtdb_collect_stats *out)
{
    uint64_t m = crdtdb__db_enter(db);
    return crdtdb__db_exit(db, m, collect_call(db, max_peer_age_ms, out));
}

/* The stored floor, through the handle's cache (at most a second old). */
static int floor_cached(crdtdb_db *db, crdtdb__floor *f)
{
    uint64_t now = crdtdb__now_ms(db->env);
    if (db->hz_known && now >= db->hz_read_ms && now - db->hz_read_ms < 1000) {
        *f = db->hz;
        return 0;
    }
    crdtdb_txn *t;
    int rc = crdtdb_txn_begin(db, CRDTDB_TXN_RDONLY, &t);
    if (rc)
        return rc;
    rc = crdtdb__floor_read(db, t->mt, f);
    crdtdb_txn_abort(t);
    if (!rc) {
        db->hz = *f;
        db->hz_read_ms = now;
        db->hz_known = 1;
    }
    return rc;
}

static int horizon_call(crdtdb_db *db, const uint8_t *peer, uint64_t *floor, uint64_t *stamp)
{
    if (!db || !floor || !stamp)
        return CRDTDB_EINVAL;
    crdtdb__floor f;
    int rc = floor_cached(db, &f);
    if (rc)
        return rc;
    /* what it sent us it holds: only the rest can be what it lacks */
    *floor = peer && memcmp(peer, f.src1, CRDTDB_REPLICA_ID_BYTES) == 0 ? f.m2 : f.floor;
    *stamp = f.stamp;
    return 0;
}

int crdtdb_db_horizon(crdtdb_db *db, uint64_t *floor, uint64_t *stamp)
{
    uint64_t m = crdtdb__db_enter(db);
    return crdtdb__db_exit(db, m, horizon_call(db, NULL, floor, stamp));
}

int crdtdb_db_horizon_for(crdtdb_db *db, const uint8_t *peer, uint64_t *floor, uint64_t *stamp)
{
    uint64_t m = crdtdb__db_enter(db);
    return crdtdb__db_exit(db, m, horizon_call(db, peer, floor, stamp));
}
