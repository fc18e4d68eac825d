/*
 * Finds a 32-byte key (a replica id) in an array of them that its owner
 * keeps (a record's or a delta's origins) in constant time, where a scan
 * made adding n distinct origins cost n^2 / 2 key comparisons: a record or
 * delta of 65,536 origins, which a peer can send in one delta, held a
 * server's loop for seconds.  Pure: memory only.
 *
 * The index holds positions in the owner's array, not keys: it borrows the
 * array on each call.  The owner appends only after a find of that key
 * failed, or clears the index when it empties the array; a find that sees
 * the array shorter than what it indexed starts over.  Keys are chosen by
 * peers, so the hash is keyed (SipHash, crypto_shorthash) with `hkey`, which
 * the owner sets from its random key (zero still works, without that
 * defence).  A zeroed struct is an empty index; the owner frees it with
 * crdtdb__keyidx_free.
 */
#ifndef CRDTDB_CRDT_KEYIDX_H
#define CRDTDB_CRDT_KEYIDX_H
#include <sodium.h>
#include <stdint.h>

/* Arrays up to this long are scanned: no index is built. */
#define CRDTDB__KEYIDX_SCAN 16u

typedef struct crdtdb__keyidx {
    uint32_t *slot; /* position + 1 in the owner's array; 0: empty */
    uint32_t cap;   /* slots: a power of two, at least twice n; 0: none */
    uint32_t n;     /* the owner's first n keys are indexed */
    unsigned char hkey[crypto_shorthash_KEYBYTES];
} crdtdb__keyidx;

/* The keyed hash of a 32-byte key under hkey (SipHash-2-4's first 4 bytes):
 * for any table whose keys peers choose (storage/origins.c's too). */
uint32_t crdtdb__keyidx_hash(const unsigned char *hkey, const uint8_t *key);

/* The position of `key` among keys[0, nkeys): 1 with *pos set, 0 if it is
 * not there, CRDTDB_ENOMEM (the index is left empty: the next call builds
 * it again). */
int crdtdb__keyidx_find(crdtdb__keyidx *x, const uint8_t *const *keys, uint32_t nkeys,
                        const uint8_t *key, uint32_t *pos);
/* The owner emptied its array: the index is empty (its memory kept, unless
 * it is large). */
void crdtdb__keyidx_clear(crdtdb__keyidx *x);
/* Frees the index's memory; hkey stays. */
void crdtdb__keyidx_free(crdtdb__keyidx *x);

#endif
