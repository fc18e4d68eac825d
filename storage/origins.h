/*
 * Origins by number: the table through which record blobs (version 4,
 * crdt/record.h) name the replicas that wrote them.  A replica's number is
 * its peer number (peerids, env-wide, from 1), and peerids also maps the
 * number back: u32 number -> 32-byte key (internal.h).  Numbers are never
 * reused, so a mapping once committed holds forever and any handle may
 * cache it.
 *
 * Each database handle keeps a cache (crdtdb__origins), used by the one
 * thread and the one transaction the handle has at a time.  A number the
 * open write transaction gave is pending: found by that transaction, and
 * kept when it commits, but an abort empties the cache, since another
 * transaction may then give the same number to another key.  Keys the
 * cache returns are its own copies, valid until the transaction ends (the
 * cache is emptied only when a transaction begins or aborts).
 */
#ifndef CRDTDB_STORAGE_ORIGINS_H
#define CRDTDB_STORAGE_ORIGINS_H
#include <lmdb.h>
#include <sodium.h>
#include <stdint.h>

#include "crdt/record.h"

struct crdtdb__oent;

typedef struct crdtdb__origins {
    crdtdb__origin_table table; /* ctx: this */
    crdtdb_env *env;
    MDB_txn *mt;                /* the transaction lookups read and write */
    struct crdtdb__oent **bynum, **bykey; /* open addressing, cap slots */
    uint32_t cap, n;
    struct crdtdb__oent *last;  /* the key num_of found last */
    struct crdtdb__oent **pend; /* given by the owner's transaction */
    const void *owner;          /* that transaction (NULL: none) */
    uint32_t npend, pend_cap;
    unsigned char hkey[crypto_shorthash_KEYBYTES]; /* keys are chosen by peers */
} crdtdb__origins;

/* Entries a cache holds before the next transaction's begin empties it. */
#define CRDTDB__ORIGINS_CACHE_MAX 4096u

void crdtdb__origins_init(crdtdb__origins *o, crdtdb_env *env);
void crdtdb__origins_free(crdtdb__origins *o);
/* The table for blobs read or written in transaction mt (a write
 * transaction to number new keys).  Valid until mt ends. */
const crdtdb__origin_table *crdtdb__origins_at(crdtdb__origins *o, MDB_txn *mt);
/* Transaction `txn` of the handle begins and owns the pending numbers from
 * now: empties a cache grown past its bound.  An observer may begin one
 * while the transaction it observes is still ending: the ends below act
 * only for the owner, so that one's end leaves the new one's numbers. */
void crdtdb__origins_begin(crdtdb__origins *o, const void *txn);
/* txn committed: what it numbered holds. */
void crdtdb__origins_committed(crdtdb__origins *o, const void *txn);
/* txn ended (after committed, or not): forgets what it numbered if it
 * did not commit. */
void crdtdb__origins_ended(crdtdb__origins *o, const void *txn);

#endif
