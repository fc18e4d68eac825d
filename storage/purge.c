/* Purge: a record forgotten locally, for a replica that may no longer see
 * it — no tombstone, no change-log entry, nothing that would travel. */
#include <string.h>

#include "crdt/buf.h"
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

int crdtdb_db_discard_unsent(crdtdb_db *db, uint64_t after, size_t *n)
{
    if (n)
        *n = 0;
    if (!db)
        return CRDTDB_EINVAL;
    /* the records with a change of our own after `after`, each once */
    crdtdb_buf keys = CRDTDB_BUF_INIT; /* u16 coll, u8 id length, id */
    crdtdb_txn *t;
    int rc = crdtdb_txn_begin(db, CRDTDB_TXN_RDONLY, &t);
    if (rc)
        return rc;
    MDB_cursor *cur;
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
        int seen = 0; /* records are few: a linear look is enough */
        for (size_t off = 0; !seen && off < keys.len; off += 3 + keys.data[off + 2])
            seen = memcmp(keys.data + off, p + 4, 3 + (size_t)p[6]) == 0;
        if (!seen && crdtdb__buf_append(&keys, p + 4, 3 + (size_t)p[6]))
            rc = crdtdb__db_seterr(db, CRDTDB_ENOMEM, "out of memory");
    }
    if (!rc && mrc && mrc != MDB_NOTFOUND)
        rc = crdtdb__db_seterr(db, crdtdb__mdb_err(mrc), "discard: %s", mdb_strerror(mrc));
    mdb_cursor_close(cur);
    crdtdb_txn_abort(t);
    for (size_t off = 0; !rc && off < keys.len; off += 3 + keys.data[off + 2]) {
        uint16_t coll = (uint16_t)(keys.data[off] << 8 | keys.data[off + 1]);
        char id[CRDTDB_ID_MAX + 1];
        memcpy(id, keys.data + off + 3, keys.data[off + 2]);
        id[keys.data[off + 2]] = 0;
        if (coll >= db->ncoll)
            continue;
        if (!(rc = crdtdb_db_purge(db, db->colls[coll], id)) && n)
            (*n)++;
    }
    crdtdb_buf_free(&keys);
    return rc;
}
