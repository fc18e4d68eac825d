/* Purge: a record forgotten locally, for a replica that may no longer see
 * it — no tombstone, no change-log entry, nothing that would travel. */
#include <stdlib.h>
#include <string.h>

#include "crdt/array.h"
#include "crdt/buf.h"
#include "storage/internal.h"

/* Forgets record (c, id) inside write txn t: the record and its
 * change-log entries (its registers' own sequences); an observer event if
 * it was visible.  Absent records are fine. */
static int purge_in(crdtdb_txn *t, uint16_t c, const char *id)
{
    crdtdb_db *db = t->db;
    crdtdb__slot s;
    int rc = crdtdb__slot_load(t, &s, c, id);
    if (rc || !s.exists)
        return rc;
    const crdtdb__record *r = &db->rec;
    int mrc = mdb_cursor_del(t->rec_cur, 0);
    for (uint32_t i = 0; !mrc && i <= r->nleaves; i++) {
        uint64_t seq = i < r->nleaves ? r->leaves[i].seq
                                      : (r->base_kind != CRDTDB__BASE_NONE ? r->base_seq : 0);
        if (!seq)
            continue;
        uint8_t k[CRDTDB__CHGKEY_LEN];
        crdtdb__put_u32(k, db->num);
        crdtdb__put_u64(k + 4, seq);
        MDB_val key = {sizeof k, k};
        mrc = mdb_del(t->mt, db->env->dbi_changes, &key, NULL);
        if (mrc == MDB_NOTFOUND)
            mrc = 0;
    }
    if (mrc)
        return crdtdb__db_seterr(db, crdtdb__mdb_err(mrc), "purge: %s", mdb_strerror(mrc));
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
    return crdtdb__db_exit(db, purge_call(db, coll, id));
}

/* A record named by a change-log entry: u16 collection, u8 id length, id
 * (a copy: the entry's page may move once the purge writes). */
typedef struct reckey {
    uint8_t k[3 + CRDTDB_ID_MAX];
} reckey;

static int reckey_cmp(const void *a, const void *b)
{
    const uint8_t *x = ((const reckey *)a)->k, *y = ((const reckey *)b)->k;
    size_t n = 3 + (x[2] < y[2] ? x[2] : y[2]);
    int c = memcmp(x, y, n);
    return c ? c : (x[2] > y[2]) - (x[2] < y[2]);
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
    reckey *keys = NULL;
    uint32_t nk = 0, cap = 0;
    MDB_cursor *cur = NULL;
    int mrc = mdb_cursor_open(t->mt, db->env->dbi_changes, &cur);
    uint8_t kb[CRDTDB__CHGKEY_LEN];
    crdtdb__put_u32(kb, db->num);
    crdtdb__put_u64(kb + 4, after + 1);
    MDB_val k = {sizeof kb, kb}, v;
    for (mrc = mrc ? mrc : mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); mrc == 0 && !rc;
         mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (k.mv_size != CRDTDB__CHGKEY_LEN || crdtdb__get_u32(k.mv_data) != db->num)
            break;
        const uint8_t *p = v.mv_data;
        if (v.mv_size < CRDTDB__CHG_HEAD || v.mv_size < CRDTDB__CHG_HEAD + (size_t)p[6]) {
            rc = crdtdb__db_seterr(db, CRDTDB_ECORRUPT, "change log entry is unreadable");
            break;
        }
        if (crdtdb__get_u32(p) != CRDTDB__SRC_LOCAL)
            continue;
        if (crdtdb__array_grow(&keys, &cap, nk, sizeof *keys, 16)) {
            rc = crdtdb__db_seterr(db, CRDTDB_ENOMEM, "out of memory");
            break;
        }
        memcpy(keys[nk++].k, p + 4, 3 + (size_t)p[6]);
    }
    if (!rc && mrc && mrc != MDB_NOTFOUND)
        rc = crdtdb__db_seterr(db, crdtdb__mdb_err(mrc), "discard: %s", mdb_strerror(mrc));
    if (cur)
        mdb_cursor_close(cur);
    if (!rc && nk)
        qsort(keys, nk, sizeof *keys, reckey_cmp);
    size_t purged = 0;
    for (uint32_t i = 0; !rc && i < nk; i++) {
        if (i && reckey_cmp(&keys[i], &keys[i - 1]) == 0)
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
    return crdtdb__db_exit(db, discard_unsent_call(db, after, n));
}
