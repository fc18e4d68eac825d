/*
 * The history fingerprint: a hash chain over what each commit numbered, so
 * that two replicas writing under one identity (a copied environment) are
 * told apart by the points they put in their deltas (docs/protocol.md).
 */
#include <string.h>

#include "storage/internal.h"

void crdtdb__chain_note(crdtdb_txn *t, uint64_t seq, uint16_t coll, const char *id,
                        size_t idlen, const uint8_t *path, size_t plen, uint64_t hlc,
                        const uint8_t *origin, uint8_t kind)
{
    uint8_t head[8 + 2 + 1 + 8 + 1 + 4];
    crdtdb__put_u64(head, seq);
    head[8] = (uint8_t)(coll >> 8);
    head[9] = (uint8_t)coll;
    head[10] = (uint8_t)idlen;
    crdtdb__put_u64(head + 11, hlc);
    head[19] = kind;
    crdtdb__put_u32(head + 20, (uint32_t)plen);
    crypto_generichash_update(&t->fp, head, sizeof head);
    crypto_generichash_update(&t->fp, (const uint8_t *)id, idlen);
    if (plen)
        crypto_generichash_update(&t->fp, path, plen);
    crypto_generichash_update(&t->fp, origin, CRDTDB_REPLICA_ID_BYTES);
}

static MDB_val chain_key(uint8_t k[12], uint32_t num, uint64_t seq)
{
    crdtdb__put_u32(k, num);
    crdtdb__put_u64(k + 4, seq);
    MDB_val v = {12, k};
    return v;
}

int crdtdb__chain_commit(crdtdb_txn *t)
{
    crdtdb_db *db = t->db;
    crdtdb_env *env = db->env;
    uint8_t digest[32], prev[CRDTDB__FP_BYTES] = {0}, hk[5], next[8 + CRDTDB__FP_BYTES];
    crypto_generichash_final(&t->fp, digest, sizeof digest);
    MDB_val k = crdtdb__dbinfo_key(hk, db->num, 'h'), v;
    int rc = mdb_get(t->mt, env->dbi_dbinfo, &k, &v);
    if (rc == 0 && v.mv_size == sizeof next)
        memcpy(prev, (const uint8_t *)v.mv_data + 8, CRDTDB__FP_BYTES);
    else if (rc && rc != MDB_NOTFOUND)
        return crdtdb__mdb_err(rc);
    crypto_generichash_state h;
    uint8_t range[16];
    crdtdb__put_u64(range, t->seq0);
    crdtdb__put_u64(range + 8, t->seq);
    crypto_generichash_init(&h, NULL, 0, CRDTDB__FP_BYTES);
    crypto_generichash_update(&h, prev, sizeof prev);
    crypto_generichash_update(&h, range, sizeof range);
    crypto_generichash_update(&h, digest, sizeof digest);
    crdtdb__put_u64(next, t->seq);
    crypto_generichash_final(&h, next + 8, CRDTDB__FP_BYTES);
    MDB_val nv = {sizeof next, next}, cv = {CRDTDB__FP_BYTES, next + 8};
    uint8_t ck[12];
    MDB_val key = chain_key(ck, db->num, t->seq);
    if ((rc = mdb_put(t->mt, env->dbi_dbinfo, &k, &nv, 0)) ||
        (rc = mdb_put(t->mt, env->dbi_chains, &key, &cv, 0)))
        return crdtdb__mdb_err(rc);
    /* keep a bounded window: drop the oldest point once it is far behind */
    if (t->seq > CRDTDB__CHAIN_WINDOW) {
        MDB_cursor *c;
        if ((rc = mdb_cursor_open(t->mt, env->dbi_chains, &c)))
            return crdtdb__mdb_err(rc);
        uint8_t fk[12];
        MDB_val f = chain_key(fk, db->num, 0), fv;
        rc = mdb_cursor_get(c, &f, &fv, MDB_SET_RANGE);
        if (rc == 0 && f.mv_size == 12 && crdtdb__get_u32(f.mv_data) == db->num &&
            crdtdb__get_u64((const uint8_t *)f.mv_data + 4) < t->seq - CRDTDB__CHAIN_WINDOW)
            rc = mdb_cursor_del(c, 0);
        mdb_cursor_close(c);
        if (rc && rc != MDB_NOTFOUND)
            return crdtdb__mdb_err(rc);
    }
    return 0;
}

int crdtdb__chain_at(crdtdb_db *db, MDB_txn *mt, uint64_t seq, uint64_t *at,
                     const uint8_t **hash, int *found)
{
    *found = 0;
    MDB_cursor *c;
    int rc = mdb_cursor_open(mt, db->env->dbi_chains, &c);
    if (rc)
        return crdtdb__mdb_err(rc);
    uint8_t kb[12];
    MDB_val k = chain_key(kb, db->num, seq == UINT64_MAX ? seq : seq + 1), v;
    rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
    rc = rc == 0 || rc == MDB_NOTFOUND ? mdb_cursor_get(c, &k, &v, rc ? MDB_LAST : MDB_PREV) : rc;
    if (rc == 0 && k.mv_size == 12 && crdtdb__get_u32(k.mv_data) == db->num &&
        v.mv_size == CRDTDB__FP_BYTES && crdtdb__get_u64((const uint8_t *)k.mv_data + 4) <= seq) {
        *at = crdtdb__get_u64((const uint8_t *)k.mv_data + 4);
        *hash = v.mv_data;
        *found = 1;
    }
    mdb_cursor_close(c);
    return rc == 0 || rc == MDB_NOTFOUND ? 0 : crdtdb__mdb_err(rc);
}
