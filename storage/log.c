/* The change log (log.h): its key and entry format, written and walked in
 * one place. */
#include <string.h>

#include "storage/log.h"

int crdtdb__log_put(crdtdb_txn *t, uint64_t seq, uint32_t src, uint16_t coll,
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

int crdtdb__log_del(crdtdb_txn *t, uint64_t seq)
{
    uint8_t k[CRDTDB__CHGKEY_LEN];
    MDB_val key = crdtdb__log_key(k, t->db->num, seq);
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

void crdtdb__log_close(crdtdb__log_iter *it)
{
    if (it->cur)
        mdb_cursor_close(it->cur);
    it->cur = NULL;
}
