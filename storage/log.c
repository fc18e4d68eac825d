/* The change log (log.h): its key and entry format, written and walked in
 * one place. */
#include <string.h>

#include "storage/log.h"

static MDB_val log_key(uint8_t k[CRDTDB__CHGKEY_LEN], uint32_t num, uint64_t seq)
{
    crdtdb__put_u32(k, num);
    crdtdb__put_u64(k + 4, seq);
    MDB_val v = {CRDTDB__CHGKEY_LEN, k};
    return v;
}

int crdtdb__log_put(crdtdb_txn *t, uint64_t seq, uint32_t src, uint16_t coll,
                    const char *id, size_t idlen, const uint8_t *path, size_t plen)
{
    crdtdb_db *db = t->db;
    uint8_t k[CRDTDB__CHGKEY_LEN];
    MDB_val key = log_key(k, db->num, seq), val;
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

int crdtdb__log_del(crdtdb_txn *t, uint64_t seq)
{
    uint8_t k[CRDTDB__CHGKEY_LEN];
    MDB_val key = log_key(k, t->db->num, seq);
    int rc = mdb_del(t->mt, t->db->env->dbi_changes, &key, NULL);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

int crdtdb__log_open(crdtdb_db *db, MDB_txn *mt, uint64_t after, crdtdb__log_iter *it)
{
    memset(it, 0, sizeof *it);
    it->num = db->num;
    it->after = after;
    return crdtdb__mdb_err(mdb_cursor_open(mt, db->env->dbi_changes, &it->cur));
}

int crdtdb__log_next(crdtdb__log_iter *it, crdtdb__log_entry *e, int *found)
{
    *found = 0;
    MDB_val k, v;
    int mrc;
    if (!it->started) {
        uint8_t kb[CRDTDB__CHGKEY_LEN];
        k = log_key(kb, it->num, it->after + 1);
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

void crdtdb__log_close(crdtdb__log_iter *it)
{
    if (it->cur)
        mdb_cursor_close(it->cur);
    it->cur = NULL;
}
