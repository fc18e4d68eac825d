/*
 * The change log: one entry per live register, keyed by the local sequence
 * that last wrote it (layout in internal.h, "changes").  Written by the
 * record slot (slot.c), read by the exporter, observers and purges: the
 * format lives here only.
 */
#ifndef CRDTDB_STORAGE_LOG_H
#define CRDTDB_STORAGE_LOG_H
#include <string.h>

#include "storage/internal.h"

/* One entry, parsed.  id and path borrow the transaction's pages: valid
 * for a read snapshot, or in a write txn until its next write. */
typedef struct crdtdb__log_entry {
    uint64_t seq;
    uint32_t src;          /* the peer it came from (CRDTDB__SRC_LOCAL: here) */
    uint16_t coll;
    const uint8_t *id;
    size_t idlen;
    const uint8_t *path;   /* the register's path; plen 0: the record base */
    size_t plen;
} crdtdb__log_entry;

/* Deletes the entry at seq; an absent one is fine.  0 or an LMDB code. */
int crdtdb__log_del(crdtdb_txn *t, uint64_t seq);

/* A walk over one database's entries after a sequence, in order.  The
 * caller owns it; close it before mt ends. */
typedef struct crdtdb__log_iter {
    MDB_cursor *cur;
    uint32_t num;
    uint64_t after;
    int started;
} crdtdb__log_iter;
/* 0 or a CRDTDB_E* code. */
int crdtdb__log_open(crdtdb_db *db, MDB_txn *mt, uint64_t after, crdtdb__log_iter *it);

/* An entry's key: database number | sequence. */
static inline MDB_val crdtdb__log_key(uint8_t k[CRDTDB__CHGKEY_LEN], uint32_t num, uint64_t seq)
{
    crdtdb__put_u32(k, num);
    crdtdb__put_u64(k + 4, seq);
    MDB_val v = {CRDTDB__CHGKEY_LEN, k};
    return v;
}

/* Logs register (coll, id, path) of t's database at seq as from src.
 * 0 or an LMDB code (the caller words the message).  Inline: once per
 * register written. */
static inline int crdtdb__log_put(crdtdb_txn *t, uint64_t seq, uint32_t src, uint16_t coll,
                                  const char *id, size_t idlen, const uint8_t *path, size_t plen)
{
    crdtdb_db *db = t->db;
    uint8_t k[CRDTDB__CHGKEY_LEN];
    MDB_val key = crdtdb__log_key(k, db->num, seq), val;
    val.mv_size = CRDTDB__CHG_HEAD + idlen + plen;
    int rc = mdb_put(t->mt, db->env->dbi_changes, &key, &val, MDB_RESERVE);
    if (rc)
        return rc;
    uint8_t *o = val.mv_data;
    crdtdb__put_u32(o, src);
    o[4] = (uint8_t)(coll >> 8);
    o[5] = (uint8_t)coll;
    o[6] = (uint8_t)idlen;
    memcpy(o + CRDTDB__CHG_HEAD, id, idlen);
    if (plen)
        memcpy(o + CRDTDB__CHG_HEAD + idlen, path, plen);
    return 0;
}

/* The next entry: 0 with *found (0: the log ends), or an error: ECORRUPT
 * for a malformed entry, else the LMDB failure's code.  No message set.
 * Inline: the exporter and observers call it once per entry. */
static inline int crdtdb__log_next(crdtdb__log_iter *it, crdtdb__log_entry *e, int *found)
{
    *found = 0;
    MDB_val k, v;
    int mrc;
    if (!it->started) {
        uint8_t kb[CRDTDB__CHGKEY_LEN];
        k = crdtdb__log_key(kb, it->num, it->after + 1);
        it->started = 1;
        mrc = mdb_cursor_get(it->cur, &k, &v, MDB_SET_RANGE);
    } else {
        mrc = mdb_cursor_get(it->cur, &k, &v, MDB_NEXT);
    }
    if (mrc == MDB_NOTFOUND)
        return 0;
    if (mrc)
        return crdtdb__mdb_err(mrc);
    if (k.mv_size != CRDTDB__CHGKEY_LEN || crdtdb__get_u32(k.mv_data) != it->num)
        return 0; /* the next database's */
    const uint8_t *p = v.mv_data;
    if (v.mv_size < CRDTDB__CHG_HEAD || v.mv_size < CRDTDB__CHG_HEAD + (size_t)p[6])
        return CRDTDB_ECORRUPT;
    e->seq = crdtdb__get_u64((const uint8_t *)k.mv_data + 4);
    e->src = crdtdb__get_u32(p);
    e->coll = (uint16_t)(p[4] << 8 | p[5]);
    e->idlen = p[6];
    e->id = p + CRDTDB__CHG_HEAD;
    e->path = e->id + e->idlen;
    e->plen = v.mv_size - CRDTDB__CHG_HEAD - e->idlen;
    *found = 1;
    return 0;
}

/* Accepts an iterator never opened (zeroed). */
void crdtdb__log_close(crdtdb__log_iter *it);

#endif
