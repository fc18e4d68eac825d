/* Purge: a record forgotten locally, for a replica that may no longer see
 * it — no tombstone, no change-log entry, nothing that would travel. */
#include <stdlib.h>
#include <string.h>

#include "crdt/array.h"
#include "crdt/buf.h"
#include "storage/log.h"
#include "storage/recs.h"
#include "storage/slot.h"

/* Forgets record (c, id) inside write txn t: the record and its
 * change-log entries (those holding its registers); an observer event if
 * it was visible.  Absent records are fine. */
static int purge_in(crdtdb_txn *t, uint16_t c, const char *id)
{
    crdtdb_db *db = t->db;
    crdtdb__slot s;
    int rc = crdtdb__slot_load(t, &s, c, id);
    if (rc || !s.exists || (rc = crdtdb__slot_place(t, &s)))
        return rc;
    const crdtdb__record *r = &db->rec;
    int mrc = mdb_cursor_del(t->rec_cur, 0);
    for (uint32_t i = 0; !mrc && i <= r->nleaves; i++) {
        uint64_t seq = i < r->nleaves ? r->leaves[i].seq
                                      : (r->base_kind != CRDTDB__BASE_NONE ? r->base_seq : 0);
        if (!seq)
            continue;
        mrc = crdtdb__log_drop(t, seq, NULL, NULL, 0); /* the record is gone */
    }
    if (mrc)
        return crdtdb__db_seterr(db, crdtdb__mdb_err(mrc), "purge: %s", crdtdb__mdb_str(mrc));
    if (s.was_visible && db->observers &&
        crdtdb__event_add(t, CRDTDB_EVENT_REMOVE, c, id, strlen(id), NULL, 0))
        return crdtdb__db_seterr(db, CRDTDB_ENOMEM, "out of memory");
    return 0;
}

/* Commits a purge; cached deltas may hold what it forgot. */
static int purge_commit(crdtdb_txn *t, int rc)
{
    crdtdb_db *db = t->db;
    if (rc) {
        crdtdb_txn_abort(t);
        return rc;
    }
    crdtdb__shared_free(db->shared);
    db->shared = NULL;
    return crdtdb_txn_commit(t);
}

static int purge_call(crdtdb_db *db, const char *coll, const char *id)
{
    if (!db || !coll || !id)
        return db ? crdtdb__db_seterr(db, CRDTDB_EINVAL, "no collection or id") : CRDTDB_EINVAL;
    int c = crdtdb__db_coll(db, coll);
    if (c < 0)
        return c;
    if (crdtdb__id_check(id, 0))
        return crdtdb__db_seterr(db, CRDTDB_EBADID, "invalid record id: 1..255 bytes of UTF-8");
    crdtdb_txn *t;
    int rc = crdtdb_txn_begin(db, 0, &t);
    return rc ? rc : purge_commit(t, purge_in(t, (uint16_t)c, id));
}

int crdtdb_db_purge(crdtdb_db *db, const char *coll, const char *id)
{
    uint64_t m = crdtdb__db_enter(db);
    return crdtdb__db_exit(db, m, purge_call(db, coll, id));
}

/* The order discard_unsent sorts the records it purges in, so that each
 * is purged once: by the key's bytes (collection, id length, id). */
static int rkey_cmp(const void *a, const void *b)
{
    const uint8_t *x = ((const crdtdb__rkey *)a)->k, *y = ((const crdtdb__rkey *)b)->k;
    size_t n = 3 + (x[2] < y[2] ? x[2] : y[2]);
    int c = memcmp(x, y, n);
    return c ? c : (x[2] > y[2]) - (x[2] < y[2]);
}

/* The walk of own_below_floor: the registers it looks for, where it
 * appends the keys, and the record each is decoded into. */
typedef struct own_walk {
    crdtdb_db *db;
    MDB_txn *mt;
    uint64_t after, lf;
    crdtdb__rkey **keys;
    uint32_t *nk, *cap;
    crdtdb__record rec;
} own_walk;

static int own_record(void *ctx, const MDB_val *k, const MDB_val *v)
{
    own_walk *w = ctx;
    crdtdb_db *db = w->db;
    if (k->mv_size < 7)
        return 1; /* not a record's key: the walk ends */
    int rc = crdtdb__record_decode(&w->rec, v->mv_data, v->mv_size,
                                   crdtdb__origins_at(&db->orig, w->mt));
    if (rc)
        return rc;
    const crdtdb__record *rec = &w->rec;
    int mine = 0;
    for (uint32_t i = 0; i <= rec->nleaves && !mine; i++) {
        int base = i == rec->nleaves;
        if (base && rec->base_kind == CRDTDB__BASE_NONE)
            continue;
        uint64_t seq = base ? rec->base_seq : rec->leaves[i].seq;
        uint32_t o = base ? rec->base_origin : rec->leaves[i].origin;
        mine = seq > w->after && seq <= w->lf &&
               memcmp(rec->origins[o], db->env->pk, CRDTDB_REPLICA_ID_BYTES) == 0;
    }
    if (!mine)
        return 0;
    if (crdtdb__array_grow(w->keys, w->cap, *w->nk, sizeof **w->keys, 16))
        return CRDTDB_ENOMEM;
    uint8_t *kk = (*w->keys)[(*w->nk)++].k; /* collection | id length | id */
    memcpy(kk, (const uint8_t *)k->mv_data + 4, 2);
    kk[2] = (uint8_t)(k->mv_size - 6);
    memcpy(kk + 3, (const uint8_t *)k->mv_data + 6, k->mv_size - 6);
    return 0;
}

/* Appends to keys the records holding a register of our own numbered in
 * (after, lf]: below the log floor a trim took the entries that said so
 * (collect.c), so the records are walked.  A register's source is not
 * kept in its record, only its origin: ours is what was written here. */
static int own_below_floor(crdtdb_txn *t, uint64_t after, uint64_t lf, crdtdb__rkey **keys,
                           uint32_t *nk, uint32_t *cap)
{
    crdtdb_db *db = t->db;
    own_walk w = {.db = db, .mt = t->mt, .after = after, .lf = lf,
                  .keys = keys, .nk = nk, .cap = cap};
    crdtdb__record_init(&w.rec);
    int rc = crdtdb__recs_each(db, t->mt, own_record, &w);
    crdtdb__record_free(&w.rec);
    return rc;
}

static int discard_unsent_call(crdtdb_db *db, uint64_t after, size_t *n)
{
    if (n)
        *n = 0;
    if (!db)
        return CRDTDB_EINVAL;
    crdtdb_txn *t;
    int rc = crdtdb_txn_begin(db, 0, &t);
    if (rc)
        return rc;
    /* the records with a change of our own after `after`, sorted, once */
    crdtdb__rkey *keys = NULL;
    uint32_t nk = 0, cap = 0;
    crdtdb__log_iter it;
    crdtdb__log_entry e;
    int found;
    if ((rc = crdtdb__log_open(db, t->mt, after, &it)))
        rc = crdtdb__db_seterr(db, rc, "discard: %s", crdtdb_strerror(rc));
    while (!rc && !(rc = crdtdb__log_next(&it, &e, &found)) && found) {
        if (e.src != CRDTDB__SRC_LOCAL)
            continue;
        if (crdtdb__array_grow(&keys, &cap, nk, sizeof *keys, 16)) {
            rc = crdtdb__db_seterr(db, CRDTDB_ENOMEM, "out of memory");
            break;
        }
        uint8_t *k = keys[nk++].k; /* collection | id length | id */
        k[0] = (uint8_t)(e.coll >> 8);
        k[1] = (uint8_t)e.coll;
        k[2] = (uint8_t)e.idlen;
        memcpy(k + 3, e.id, e.idlen);
    }
    uint64_t lf = 0;
    if (!rc && !(rc = crdtdb__logfloor_read(db, t->mt, &lf)) && after < lf)
        rc = own_below_floor(t, after, lf, &keys, &nk, &cap);
    if (rc == CRDTDB_ECORRUPT)
        rc = crdtdb__db_seterr(db, rc, "change log entry or record is unreadable");
    else if (rc && !crdtdb__db_msg_since(db, rc, db->mark))
        rc = crdtdb__db_seterr(db, rc, "discard: %s", crdtdb_strerror(rc));
    crdtdb__log_close(&it);
    if (!rc && nk)
        qsort(keys, nk, sizeof *keys, rkey_cmp);
    size_t purged = 0;
    for (uint32_t i = 0; !rc && i < nk; i++) {
        if (i && rkey_cmp(&keys[i], &keys[i - 1]) == 0)
            continue;
        uint16_t coll = (uint16_t)(keys[i].k[0] << 8 | keys[i].k[1]);
        char id[CRDTDB_ID_MAX + 1];
        memcpy(id, keys[i].k + 3, keys[i].k[2]);
        id[keys[i].k[2]] = 0;
        if (coll >= db->ncoll)
            continue;
        rc = purge_in(t, coll, id);
        purged++;
    }
    free(keys);
    rc = purge_commit(t, rc);
    if (!rc && n)
        *n = purged;
    return rc;
}

int crdtdb_db_discard_unsent(crdtdb_db *db, uint64_t after, size_t *n)
{
    uint64_t m = crdtdb__db_enter(db);
    return crdtdb__db_exit(db, m, discard_unsent_call(db, after, n));
}
