/* Origins by number, with each handle's cache of them (origins.h). */
#include <stdlib.h>
#include <string.h>

#include "crdt/array.h"
#include "crdt/keyidx.h"
#include "storage/internal.h"

typedef struct crdtdb__oent {
    uint32_t num;
    uint8_t key[CRDTDB_REPLICA_ID_BYTES];
} oent;

static uint32_t num_slot(const crdtdb__origins *o, uint32_t num)
{
    return (uint32_t)(num * 2654435761u) & (o->cap - 1);
}

static uint32_t key_slot(const crdtdb__origins *o, const uint8_t *key)
{
    return crdtdb__keyidx_hash(o->hkey, key) & (o->cap - 1);
}

static void clear(crdtdb__origins *o)
{
    for (uint32_t i = 0; i < o->cap; i++)
        free(o->bynum[i]);
    free(o->bynum);
    free(o->bykey);
    o->bynum = o->bykey = NULL;
    o->last = NULL;
    o->cap = o->n = o->npend = 0;
}

static void place(crdtdb__origins *o, oent *e)
{
    uint32_t i = num_slot(o, e->num);
    while (o->bynum[i])
        i = (i + 1) & (o->cap - 1);
    o->bynum[i] = e;
    i = key_slot(o, e->key);
    while (o->bykey[i])
        i = (i + 1) & (o->cap - 1);
    o->bykey[i] = e;
}

/* Adds (num, key), known absent; pending if the open transaction gave it.
 * The entry, or NULL when out of memory. */
static oent *add(crdtdb__origins *o, uint32_t num, const uint8_t *key, int pending)
{
    if ((o->n + 1) * 2 > o->cap) { /* at most half full */
        crdtdb__origins grown = *o;
        grown.cap = o->cap ? o->cap * 2 : 16;
        grown.bynum = calloc(grown.cap, sizeof *grown.bynum);
        grown.bykey = calloc(grown.cap, sizeof *grown.bykey);
        if (!grown.bynum || !grown.bykey) {
            free(grown.bynum);
            free(grown.bykey);
            return NULL;
        }
        for (uint32_t i = 0; i < o->cap; i++)
            if (o->bynum[i])
                place(&grown, o->bynum[i]);
        free(o->bynum);
        free(o->bykey);
        o->bynum = grown.bynum;
        o->bykey = grown.bykey;
        o->cap = grown.cap;
    }
    if (pending && crdtdb__array_grow(&o->pend, &o->pend_cap, o->npend, sizeof *o->pend, 4))
        return NULL;
    oent *e = malloc(sizeof *e);
    if (!e)
        return NULL;
    e->num = num;
    memcpy(e->key, key, CRDTDB_REPLICA_ID_BYTES);
    place(o, e);
    o->n++;
    if (pending)
        o->pend[o->npend++] = e;
    return e;
}

static oent *by_num(const crdtdb__origins *o, uint32_t num)
{
    if (!o->cap)
        return NULL;
    for (uint32_t i = num_slot(o, num); o->bynum[i]; i = (i + 1) & (o->cap - 1))
        if (o->bynum[i]->num == num)
            return o->bynum[i];
    return NULL;
}

static oent *by_key(const crdtdb__origins *o, const uint8_t *key)
{
    if (!o->cap)
        return NULL;
    for (uint32_t i = key_slot(o, key); o->bykey[i]; i = (i + 1) & (o->cap - 1))
        if (memcmp(o->bykey[i]->key, key, CRDTDB_REPLICA_ID_BYTES) == 0)
            return o->bykey[i];
    return NULL;
}

static MDB_val rev_key(uint8_t k[4], uint32_t num)
{
    crdtdb__put_u32(k, num);
    MDB_val v = {4, k};
    return v;
}

static const uint8_t *key_of(void *ctx, uint32_t num, int *rc)
{
    crdtdb__origins *o = ctx;
    oent *e = by_num(o, num);
    if (e)
        return e->key;
    uint8_t kb[4];
    MDB_val k = rev_key(kb, num), v;
    int mrc = mdb_get(o->mt, o->env->dbi_peerids, &k, &v);
    if (mrc || v.mv_size != CRDTDB_REPLICA_ID_BYTES) {
        *rc = mrc == 0 || mrc == MDB_NOTFOUND ? CRDTDB_ECORRUPT : crdtdb__mdb_err(mrc);
        return NULL;
    }
    /* a key cached under another number: the table contradicts itself */
    if (by_key(o, v.mv_data)) {
        *rc = CRDTDB_ECORRUPT;
        return NULL;
    }
    /* whoever wrote it committed it, or this transaction gave it and the
     * cache has it already: it holds */
    if (!(e = add(o, num, v.mv_data, 0))) {
        *rc = CRDTDB_ENOMEM;
        return NULL;
    }
    return e->key;
}

static int num_of(void *ctx, const uint8_t *key, uint32_t *num)
{
    crdtdb__origins *o = ctx;
    oent *e = o->last && memcmp(o->last->key, key, CRDTDB_REPLICA_ID_BYTES) == 0
                  ? o->last /* most stores are one replica's, over and over */
                  : by_key(o, key);
    if (e) {
        o->last = e;
        *num = e->num;
        return 0;
    }
    /* known as a peer (numbered before origins were), or new */
    MDB_val fk = {CRDTDB_REPLICA_ID_BYTES, (void *)key}, v;
    int mrc = mdb_get(o->mt, o->env->dbi_peerids, &fk, &v), fresh = mrc == MDB_NOTFOUND;
    if (mrc && !fresh)
        return crdtdb__mdb_err(mrc);
    int rc = crdtdb__peer_num(o->env, o->mt, key, 1, num);
    if (rc)
        return rc;
    if (*num == 0 || by_num(o, *num))
        return CRDTDB_ECORRUPT;
    uint8_t kb[4];
    MDB_val rk = rev_key(kb, *num), rv = {CRDTDB_REPLICA_ID_BYTES, (void *)key};
    if (!fresh) { /* its way back may be missing, or must agree */
        mrc = mdb_get(o->mt, o->env->dbi_peerids, &rk, &v);
        if (mrc == 0 && (v.mv_size != CRDTDB_REPLICA_ID_BYTES ||
                         memcmp(v.mv_data, key, CRDTDB_REPLICA_ID_BYTES) != 0))
            return CRDTDB_ECORRUPT;
        if (mrc && mrc != MDB_NOTFOUND)
            return crdtdb__mdb_err(mrc);
        fresh = mrc == MDB_NOTFOUND; /* written now: pending like a new one */
    }
    if (fresh && (mrc = mdb_put(o->mt, o->env->dbi_peerids, &rk, &rv, 0)))
        return crdtdb__mdb_err(mrc);
    return add(o, *num, key, fresh) ? 0 : CRDTDB_ENOMEM;
}

void crdtdb__origins_init(crdtdb__origins *o, crdtdb_env *env)
{
    memset(o, 0, sizeof *o);
    o->env = env;
    o->table.key_of = key_of;
    o->table.num_of = num_of;
    o->table.ctx = o;
    crypto_shorthash_keygen(o->hkey);
}

void crdtdb__origins_free(crdtdb__origins *o)
{
    clear(o);
    free(o->pend);
    o->pend = NULL;
    o->pend_cap = 0;
}

const crdtdb__origin_table *crdtdb__origins_at(crdtdb__origins *o, MDB_txn *mt)
{
    o->mt = mt;
    return &o->table;
}

void crdtdb__origins_begin(crdtdb__origins *o, const void *txn)
{
    if (o->n > CRDTDB__ORIGINS_CACHE_MAX)
        clear(o);
    o->npend = 0; /* a pending one here would be an owner's that never ended */
    o->owner = txn;
}

void crdtdb__origins_committed(crdtdb__origins *o, const void *txn)
{
    if (o->owner == txn)
        o->npend = 0;
}

void crdtdb__origins_ended(crdtdb__origins *o, const void *txn)
{
    if (o->owner != txn)
        return;
    if (o->npend)
        clear(o);
    o->owner = NULL;
    o->mt = NULL;
}
