/* Test replicas shared by the sync and hazard suites. */
#ifndef CRDTDB_TESTS_REPLICA_H
#define CRDTDB_TESTS_REPLICA_H
#include <stddef.h>
#include <stdint.h>

#include "crdtdb.h"

typedef struct replica {
    char *dir;
    crdtdb_env *env;
    crdtdb_db *db;
    uint64_t *now;     /* simulated wall clock shared by all */
    int64_t offset_ms; /* this replica's clock error */
    crdtdb_env_options opts;
} replica;
/* Deltas in flight. */
typedef struct net {
    crdtdb_buf *msgs;
    size_t n, cap;
} net;

/* The two collections every test database has: "players", "moves". */
extern const char *COLLS[];

/* A replica in a new temp dir, NOSYNC, small limits (deltas split), its
 * clock *now + offset_ms, with database db_id open (created if missing). */
void replica_init(replica *r, uint64_t *now, const char *db_id);
/* The same, its identity (ed25519 key pair) derived from `seed` rather
 * than random, so a randomized test's seed fixes its LWW tie-breaks and
 * every ordering by replica id too.  Tests only: it writes the env's meta
 * "identity" between its first open and the database's creation. */
void replica_init_keyed(replica *r, uint64_t *now, const char *db_id, const uint8_t seed[32]);
void replica_open(replica *r, const char *db_id);
void replica_close(replica *r);
void replica_free(replica *r);

/* A crdtdb_delta_sink collecting deltas into a net. */
int to_net(void *ctx, const uint8_t *p, size_t len);
void net_free(net *q);
/* to's `received` watermark of from. */
uint64_t received_from(replica *to, replica *from);
/* from exports what `to` lacks (by to's watermark); to applies it all.
 * Returns the registers applied. */
size_t sync_pair(replica *from, replica *to);
/* op: "add", "update" or "remove"; asserts success. */
void put(replica *r, const char *op, const char *coll, const char *id, const char *json);
/* The same inside open write transaction t (NULL: a transaction of its own). */
void put_in(replica *r, crdtdb_txn *t, const char *op, const char *coll, const char *id,
            const char *json);
/* Everything visible, as one string (caller frees). */
char *dump(replica *r);
/* Where two dumps first differ, with some of each around it, for an
 * assertion's message (a static buffer: valid until the next call). */
const char *diffat(const char *a, const char *b);

/* Moves what `from` has queued into `to` (asserting the feed): the bytes
 * moved, 0 when nothing was queued or `to` is closed. */
size_t session_move(crdtdb_session *from, crdtdb_session *to);
/* Moves bytes both ways until quiet, pumping both when nothing moves; at
 * most `rounds` turns (0: until quiet, asserting it gets there). */
void session_settle(crdtdb_session *a, crdtdb_session *b, int rounds);

#endif
