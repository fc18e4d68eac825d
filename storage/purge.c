/* Purge: a record forgotten locally, for a replica that may no longer see
 * it — no tombstone, no change-log entry, nothing that would travel. */
#include <string.h>

#include "storage/internal.h"

int crdtdb_db_purge(crdtdb_db *db, const char *coll, const char *id)
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
    if (rc)
        return rc;
    crdtdb__slot s;
    rc = crdtdb__slot_load(t, &s, (uint16_t)c, id);
    if (rc || !s.exists) {
        crdtdb_txn_abort(t);
        return rc;
    }
    const crdtdb__record *r = &db->rec;
    int mrc = mdb_cursor_del(t->rec_cur, 0);
    /* its change-log entries: the registers' own sequences */
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
    if (mrc) {
        crdtdb_txn_abort(t);
        return crdtdb__db_seterr(db, crdtdb__mdb_err(mrc), "purge: %s", mdb_strerror(mrc));
    }
    if (s.was_visible && db->observers &&
        crdtdb__event_add(t, CRDTDB_EVENT_REMOVE, (uint16_t)c, id, strlen(id), NULL, 0)) {
        crdtdb_txn_abort(t);
        return crdtdb__db_seterr(db, CRDTDB_ENOMEM, "out of memory");
    }
    crdtdb__shared_free(db->shared); /* cached deltas may hold it */
    db->shared = NULL;
    return crdtdb_txn_commit(t);
}
