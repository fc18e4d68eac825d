/*
 * The receiving end of a full resync (docs/protocol.md, message 16): a
 * peer that collected tombstones we never received sent us its whole
 * state.  A record we hold that it did not send was either removed and
 * collected there, or is a write it has not seen.  What it has seen is
 * what it acknowledged of our log (our registers numbered up to its
 * `acked`), and anything stamped at or before its horizon stamp is older
 * than what it collected: those registers go.  What is left is newer than
 * anything it could have removed, and travels to it as usual.
 *
 * When this replica serves others (CRDTDB_RESYNC_SHARED), the peer's
 * horizon stamp then stays here as the gate (docs/crdt.md, rule 4): we
 * hold no tombstone of what it collected, so an add that old of a record
 * we hold nothing of, from any other replica, is answered with a remove of
 * our own (apply.c).
 */
#include <stdlib.h>
#include <string.h>

#include "crdt/array.h"
#include "crdt/hlc.h"
#include "storage/recs.h"
#include "storage/slot.h"

/* on 1: a resync began; 0: none was needed after all; 2: it ended here */
static int resync_flag(crdtdb_txn *t, const uint8_t *peer, int on)
{
    crdtdb__marks m;
    int found;
    int rc = crdtdb__marks_get(t->db, t->mt, peer, &m, &found);
    if (rc)
        return rc;
    unsigned flags = on == 1 ? m.flags | CRDTDB_PEER_RESYNC : m.flags & ~CRDTDB_PEER_RESYNC;
    if (on == 2)
        flags |= CRDTDB_PEER_RESYNCED;
    if (flags == m.flags)
        return 0;
    m.flags = flags;
    return crdtdb__marks_put(t->db, t->mt, peer, &m);
}

static int gate_read(crdtdb_db *db, MDB_txn *mt, uint64_t *gate)
{
    int rc = crdtdb__dbinfo_u64(db, mt, 'r', gate);
    return rc == CRDTDB_ECORRUPT
               ? crdtdb__db_seterr(db, rc, "the stored resync gate is unreadable")
               : rc;
}

/* The gate only rises: every resync's horizon stamp is one more floor of
 * what this replica may hold no tombstone of. */
static int gate_raise(crdtdb_txn *t, uint64_t stamp)
{
    uint64_t gate;
    int rc = gate_read(t->db, t->mt, &gate);
    if (rc || stamp <= gate)
        return rc;
    return crdtdb__dbinfo_u64_put(t->db, t->mt, 'r', stamp);
}

/* The replica that resynced us holds what it collected as we do now: its
 * writes pass (and a resync under way is its snapshot).  A copy marked
 * read-only sends nothing back, so it has nothing to gate. */
int crdtdb__gate_for(crdtdb_txn *t, const uint8_t *sender, uint64_t *gate)
{
    int rc = gate_read(t->db, t->mt, gate), ro;
    if (rc || !*gate)
        return rc;
    if ((rc = crdtdb__txn_readonly(t, &ro)))
        return rc;
    if (ro || t->db->readonly) {
        *gate = 0;
        return 0;
    }
    crdtdb__marks m;
    int found;
    if ((rc = crdtdb__marks_get(t->db, t->mt, sender, &m, &found)))
        return rc;
    if (found && (m.flags & (CRDTDB_PEER_RESYNC | CRDTDB_PEER_RESYNCED)))
        *gate = 0;
    return 0;
}

int crdtdb__remove_relayed(crdtdb_txn *t, uint16_t coll, const char *id)
{
    crdtdb_db *db = t->db;
    int ro = db->readonly;
    t->ro_known = 1, t->ro = 0, db->readonly = 0;
    int rc = crdtdb_db_remove(db, t, db->colls[coll], id);
    db->readonly = ro;
    t->ro_known = 0;
    return rc;
}

static int peer_resync_call(crdtdb_db *db, const uint8_t *peer, int on, uint64_t stamp)
{
    if (!db || !peer)
        return CRDTDB_EINVAL;
    crdtdb_txn *t;
    int rc = crdtdb_txn_begin(db, 0, &t);
    if (rc)
        return rc;
    /* what we write from now on must be newer than anything it collected,
     * or its gate would drop it as old */
    if (on && stamp &&
        (rc = crdtdb__hlc_recv(&t->hlc, stamp, crdtdb__now_ms(db->env),
                               db->env->opts.max_clock_skew_ms))) {
        crdtdb_txn_abort(t);
        return crdtdb__db_seterr(db, rc,
                                 "resync: the peer's horizon stamp is too far ahead of our clock");
    }
    if ((rc = resync_flag(t, peer, on != 0))) {
        crdtdb_txn_abort(t);
        return crdtdb__db_seterr(db, rc, "peer watermarks: %s", crdtdb_strerror(rc));
    }
    return crdtdb_txn_commit(t);
}

int crdtdb_db_peer_resync(crdtdb_db *db, const uint8_t *peer, int on, uint64_t stamp)
{
    uint64_t m = crdtdb__db_enter(db);
    return crdtdb__db_exit(db, m, peer_resync_call(db, peer, on, stamp));
}

/* all_keys's walk: where it appends the keys. */
typedef struct keys_walk {
    crdtdb__rkey **keys;
    uint32_t *n, cap;
} keys_walk;

static int copy_key(void *ctx, const MDB_val *k, const MDB_val *v)
{
    keys_walk *w = ctx;
    (void)v;
    if (k->mv_size < 6 || k->mv_size > CRDTDB__RECKEY_MAX)
        return 1; /* not a record's key: the walk ends */
    if (crdtdb__array_grow(w->keys, &w->cap, *w->n, sizeof **w->keys, 64))
        return CRDTDB_ENOMEM;
    uint8_t *o = (*w->keys)[(*w->n)++].k;
    memcpy(o, (const uint8_t *)k->mv_data + 4, 2);
    o[2] = (uint8_t)(k->mv_size - 6);
    memcpy(o + 3, (const uint8_t *)k->mv_data + 6, k->mv_size - 6);
    return 0;
}

/* Every record key of db, copied (the pages move once we write). */
static int all_keys(crdtdb_db *db, MDB_txn *mt, crdtdb__rkey **keys, uint32_t *n)
{
    keys_walk w = {keys, n, 0};
    return crdtdb__recs_each(db, mt, copy_key, &w);
}

static int seen(const crdtdb__record *r, uint64_t seq, uint64_t hlc, uint64_t acked,
                uint64_t stamp)
{
    (void)r;
    return (seq && seq <= acked) || hlc <= stamp;
}

/* Drops the registers of the loaded record the peer has seen or that are
 * older than what it collected; their log entries go with them. */
static int drop_seen(crdtdb__record *r, uint64_t acked, uint64_t stamp)
{
    if (r->base_kind != CRDTDB__BASE_NONE &&
        seen(r, r->base_seq, r->base_hlc, acked, stamp)) {
        if (r->base_seq && crdtdb__array_grow(&r->dead, &r->dead_cap, r->ndead,
                                              sizeof *r->dead, 8))
            return CRDTDB_ENOMEM;
        if (r->base_seq)
            r->dead[r->ndead++] = r->base_seq;
        r->base_kind = CRDTDB__BASE_NONE;
        r->base_seq = r->base_hlc = 0;
    }
    uint32_t keep = 0;
    for (uint32_t i = 0; i < r->nleaves; i++) {
        crdtdb__leaf *l = &r->leaves[i];
        if (!seen(r, l->seq, l->hlc, acked, stamp)) {
            r->leaves[keep++] = *l;
            continue;
        }
        if (crdtdb__array_grow(&r->dead, &r->dead_cap, r->ndead, sizeof *r->dead, 8))
            return CRDTDB_ENOMEM;
        r->dead[r->ndead++] = l->seq;
    }
    r->nleaves = keep;
    return 0;
}

/* held 1: the snapshot carried leaves of it but no add or remove, so only
 * our base can be what it collected */
static int end_one(crdtdb_txn *t, const crdtdb__rkey *key, uint64_t acked, uint64_t stamp,
                   unsigned flags, int held, size_t *n)
{
    crdtdb_db *db = t->db;
    char id[CRDTDB_ID_MAX + 1];
    crdtdb__slot s;
    int rc = crdtdb__slot_load_key(t, &s, key, id);
    if (rc || !s.exists)
        return rc;
    uint16_t coll = s.coll;
    crdtdb__record *r = &db->rec;
    int any = r->base_kind != CRDTDB__BASE_NONE &&
              seen(r, r->base_seq, r->base_hlc, acked, stamp);
    for (uint32_t i = 0; !any && !held && i < r->nleaves; i++)
        any = seen(r, r->leaves[i].seq, r->leaves[i].hlc, acked, stamp);
    if (!any)
        return 0; /* all of it newer than the peer knows: it travels */
    ++*n;
    if (flags & CRDTDB_RESYNC_SHARED) {
        /* others may hold this record from us: they must hear that it
         * went, so a remove of our own, not a silent drop */
        return s.was_visible ? crdtdb__remove_relayed(t, coll, id) : 0;
    }
    if (held) { /* its leaves stay; our base goes if it was collected there */
        uint8_t kind = r->base_kind;
        uint32_t nl = r->nleaves;
        r->nleaves = 0;
        rc = drop_seen(r, acked, stamp);
        r->nleaves = nl;
        if (rc)
            return crdtdb__db_seterr(db, rc, "out of memory");
        return r->base_kind == kind ? 0 : crdtdb__slot_store(t, &s, CRDTDB__SRC_LOCAL);
    }
    if ((rc = drop_seen(r, acked, stamp)))
        return crdtdb__db_seterr(db, rc, "out of memory");
    return crdtdb__slot_store(t, &s, CRDTDB__SRC_LOCAL);
}

static int resync_end_call(crdtdb_db *db, const uint8_t *peer, uint64_t stamp, uint64_t acked,
                           int (*held)(void *ctx, const char *coll, const char *id), void *ctx,
                           unsigned flags, size_t *n)
{
    size_t count = 0;
    if (n)
        *n = 0;
    if (!db || !peer || !held)
        return CRDTDB_EINVAL;
    crdtdb_txn *t;
    int rc = crdtdb_txn_begin(db, 0, &t);
    if (rc)
        return rc;
    crdtdb__rkey *keys = NULL;
    uint32_t nk = 0;
    rc = all_keys(db, t->mt, &keys, &nk);
    if (rc)
        crdtdb__db_seterr(db, rc, "resync: %s", crdtdb_strerror(rc));
    for (uint32_t i = 0; !rc && i < nk; i++) {
        char id[CRDTDB_ID_MAX + 1];
        uint16_t coll = (uint16_t)(keys[i].k[0] << 8 | keys[i].k[1]);
        memcpy(id, keys[i].k + 3, keys[i].k[2]);
        id[keys[i].k[2]] = 0;
        int h = coll < db->ncoll ? held(ctx, db->colls[coll], id) : 2;
        if (h >= 2)
            continue;
        rc = end_one(t, &keys[i], acked, stamp, flags, h, &count);
    }
    free(keys);
    /* only a replica that serves others passes what it takes on (rule 4) */
    if (!rc && (((flags & CRDTDB_RESYNC_SHARED) && (rc = gate_raise(t, stamp))) ||
                (rc = resync_flag(t, peer, 2))))
        crdtdb__db_seterr(db, rc, "resync: %s", crdtdb_strerror(rc));
    if (rc) {
        crdtdb_txn_abort(t);
        return rc;
    }
    crdtdb__shared_free(db->shared); /* cached deltas may hold what went */
    db->shared = NULL;
    if ((rc = crdtdb_txn_commit(t)))
        return rc;
    if (n)
        *n = count;
    return 0;
}

int crdtdb_db_resync_end(crdtdb_db *db, const uint8_t *peer, uint64_t stamp, uint64_t acked,
                         int (*held)(void *ctx, const char *coll, const char *id), void *ctx,
                         unsigned flags, size_t *n)
{
    uint64_t m = crdtdb__db_enter(db);
    return crdtdb__db_exit(db, m, resync_end_call(db, peer, stamp, acked, held, ctx, flags, n));
}
