/* A keyed open-addressing index of 32-byte keys (see keyidx.h). */
#include "crdt/keyidx.h"

#include <stdlib.h>
#include <string.h>

#include "crdtdb.h"

#define KEY_BYTES 32u
/* Slots kept by a clear; a larger table (a record of thousands of origins)
 * goes, so one such record does not cost every later clear a memset. */
#define KEEP_SLOTS 1024u

uint32_t crdtdb__keyidx_hash(const unsigned char *hkey, const uint8_t *key)
{
    unsigned char h[crypto_shorthash_BYTES];
    crypto_shorthash(h, key, KEY_BYTES, hkey);
    return (uint32_t)h[0] | (uint32_t)h[1] << 8 | (uint32_t)h[2] << 16 | (uint32_t)h[3] << 24;
}

/* The slot holding key, or the empty one where it would go. */
static uint32_t *probe(const crdtdb__keyidx *x, const uint8_t *const *keys, const uint8_t *key)
{
    uint32_t mask = x->cap - 1;
    for (uint32_t i = crdtdb__keyidx_hash(x->hkey, key) & mask;; i = (i + 1) & mask) {
        uint32_t s = x->slot[i];
        if (!s || keys[s - 1] == key || memcmp(keys[s - 1], key, KEY_BYTES) == 0)
            return &x->slot[i];
    }
}

void crdtdb__keyidx_clear(crdtdb__keyidx *x)
{
    if (x->cap > KEEP_SLOTS) {
        crdtdb__keyidx_free(x);
        return;
    }
    if (x->n)
        memset(x->slot, 0, x->cap * sizeof *x->slot);
    x->n = 0;
}

void crdtdb__keyidx_free(crdtdb__keyidx *x)
{
    free(x->slot);
    x->slot = NULL;
    x->cap = x->n = 0;
}

/* Room for nkeys at half load: a new table, everything indexed again. */
static int room(crdtdb__keyidx *x, uint32_t nkeys)
{
    if (x->cap && nkeys <= x->cap / 2)
        return 0;
    uint32_t cap = x->cap ? x->cap : 64;
    while (cap / 2 < nkeys) {
        if (cap > UINT32_MAX / 4)
            return CRDTDB_ENOMEM;
        cap *= 2;
    }
    uint32_t *slot = calloc(cap, sizeof *slot);
    if (!slot)
        return CRDTDB_ENOMEM;
    free(x->slot);
    x->slot = slot;
    x->cap = cap;
    x->n = 0;
    return 0;
}

int crdtdb__keyidx_find(crdtdb__keyidx *x, const uint8_t *const *keys, uint32_t nkeys,
                        const uint8_t *key, uint32_t *pos)
{
    if (nkeys <= CRDTDB__KEYIDX_SCAN) {
        for (uint32_t i = 0; i < nkeys; i++)
            if (keys[i] == key || memcmp(keys[i], key, KEY_BYTES) == 0) {
                *pos = i;
                return 1;
            }
        return 0;
    }
    if (nkeys < x->n)
        crdtdb__keyidx_clear(x); /* the array was emptied and refilled */
    if (room(x, nkeys + 1)) {
        crdtdb__keyidx_free(x);
        return CRDTDB_ENOMEM;
    }
    for (; x->n < nkeys; x->n++) { /* what was appended since: the first of equal keys wins */
        uint32_t *s = probe(x, keys, keys[x->n]);
        if (!*s)
            *s = x->n + 1;
    }
    uint32_t *s = probe(x, keys, key);
    if (!*s)
        return 0;
    *pos = *s - 1;
    return 1;
}
