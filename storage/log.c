/* The change log (log.h): its key and entry format, written and walked in
 * one place. */
#include <string.h>

#include "storage/log.h"

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
