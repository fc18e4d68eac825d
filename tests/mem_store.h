/*
 * A sync session store in memory (transport/session_store.h), for driving
 * the protocol engine without LMDB: fuzz/fuzz_session.c and the session
 * tests.  It verifies nothing: a delta's outcome is read from its
 * signature's first bytes (see mem_store.c), so every branch of the
 * session is reachable from bytes alone.  Not part of the library.
 */
#ifndef CRDTDB_TESTS_MEM_STORE_H
#define CRDTDB_TESTS_MEM_STORE_H
#include <stddef.h>
#include <stdint.h>

#include "transport/session_store.h"

typedef struct mem_store {
    const char *db_id;        /* borrowed; must outlive the sessions */
    uint8_t self[CRDTDB_REPLICA_ID_BYTES];
    size_t max_delta_size;
    uint64_t skew_ms;
    uint64_t now_ms;          /* the clock; the caller moves it */
    uint64_t last;            /* our log: changes 1..last */
    uint8_t peer[CRDTDB_REPLICA_ID_BYTES]; /* the one peer it keeps marks of */
    uint64_t received, acked; /* its marks */
    int readonly, marked;     /* the handle's flag and the durable mark */
    unsigned applies, purges, replaces, exports; /* calls seen */
    char errmsg[128];
} mem_store;

/* A store of database db_id with `last` changes of our own, replica id
 * all 0x11, max_delta_size 16 KiB. */
void mem_store_init(mem_store *m, const char *db_id, uint64_t last);

/* The session callbacks over m (borrowed: m outlives the session). */
void mem_store_bind(mem_store *m, crdtdb__session_store *out);

#endif
