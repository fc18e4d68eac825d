/*
 * The store a sync session runs on: everything transport/session.c asks of
 * the data, as callbacks with one user pointer (the model is nghttp2's data
 * source).  The session is the protocol engine; the store holds the log,
 * verifies and applies deltas, keeps the watermarks and the read-only
 * flags.  transport/session_store.c is the store over a crdtdb_db (LMDB);
 * fuzz/fuzz_session.c drives the engine with one in memory.
 *
 * Every callback that can fail returns 0 or a negative CRDTDB_E* code and
 * leaves its detail for `errmsg`; not finding something is an outcome
 * (an out-parameter), not an error.  Pointers handed to a callback are
 * valid during the call only, unless said otherwise.
 */
#ifndef CRDTDB_TRANSPORT_SESSION_STORE_H
#define CRDTDB_TRANSPORT_SESSION_STORE_H
#include <stddef.h>
#include <stdint.h>

#include "crdtdb.h"

/* What the session reads of its store once, when it opens. */
typedef struct crdtdb__store_info {
    const char *db_id;        /* the database synced; owned by the store,
                                 valid for the session's life */
    uint8_t self[CRDTDB_REPLICA_ID_BYTES]; /* this replica's id */
    size_t max_delta_size;    /* the largest delta the store takes */
    uint64_t max_clock_skew_ms; /* how far ahead a stamp may be */
} crdtdb__store_info;

/* Where the next delta for the peer starts, and how it is cut. */
typedef struct crdtdb__store_want {
    uint64_t after;        /* the peer holds our log up to here */
    const uint8_t *peer;   /* its replica id, 32 bytes */
    unsigned flags;        /* CRDTDB_EXPORT_* */
    size_t max_bytes;      /* target size of the delta */
    /* as in crdtdb_export_options: the read filter (may be NULL) and, with
     * it, a record the peer may no longer see (the session queues its
     * PURGE, and notes its own failure to); both get filter_ctx */
    int (*visible)(void *ctx, crdtdb_txn *txn, const char *coll, const char *id,
                   const uint8_t *value, size_t len);
    void (*hidden)(void *ctx, const char *coll, const char *id);
    void *filter_ctx;
    /* where the last delta from `after` left a walk of the records
     * (crdtdb_export_options.resume; NULL: none), and where the store puts
     * the new one (*resume_out_len 0: no walk under way), at most
     * CRDTDB_EXPORT_RESUME_MAX bytes */
    const uint8_t *resume;
    size_t resume_len;
    uint8_t *resume_out;
    size_t *resume_out_len;
} crdtdb__store_want;

/* A delta the store hands to the session (next_delta): `len` bytes at
 * `delta`, valid during the call, copied by the session; len 0 says the
 * range up to next_delta's *to holds nothing for the peer.  Returns 0 or
 * CRDTDB_ENOMEM. */
typedef int (*crdtdb__store_give)(void *session, const uint8_t *delta, size_t len);

typedef struct crdtdb__session_store {
    void *ctx; /* passed to every callback; owned by whoever made the store */

    /* The fixed facts (above), read once.  Cannot fail. */
    void (*info)(void *ctx, crdtdb__store_info *out);
    /* Local time in ms, by the clock stamps are judged by. */
    uint64_t (*now_ms)(void *ctx);
    /* Detail of the last failure of a callback; never NULL. */
    const char *(*errmsg)(void *ctx);
    /* The number of the last change in our log.  It only ever grows: the
     * session trusts an ACK at or below the last value it read. */
    int (*seq)(void *ctx, uint64_t *last);
    /* The last sequence of our log a peer may hold: `seq`, or past it
     * what an early relay may have sent before its commit
     * (crdtdb_db_seq_sent).  NULL: the same as seq. */
    int (*seq_sent)(void *ctx, uint64_t *upto);

    /* (a) Sending.  Hands the session at most one delta (give) covering
     * our log after want->after, or — when that range holds nothing for
     * the peer and CRDTDB_EXPORT_NO_EMPTY is set — none (give with len 0);
     * *to is where it ends.  give's failure is returned. */
    int (*next_delta)(void *ctx, const crdtdb__store_want *want, crdtdb__store_give give,
                      void *session, uint64_t *to);
    /* The record (coll, id) as one delta for the peer (a REPLACE's copy):
     * *found 0 when it is gone or `visible` hides it from the peer. */
    int (*record_delta)(void *ctx, const char *coll, const char *id, const uint8_t *peer,
                        int (*visible)(void *, crdtdb_txn *, const char *, const char *,
                                       const uint8_t *, size_t),
                        void *visible_ctx, crdtdb_buf *out, int *found);

    /* (b) Receiving.  Verifies and applies one delta (crdtdb_db_apply_filtered:
     * `filter` decides each record; may be NULL), filling *info.  On
     * CRDTDB_ECLOCK, *ahead_ms is the newest stamp's time and info->to the
     * end of its range (UINT64_MAX both when unknown), for asking again. */
    int (*apply)(void *ctx, const uint8_t *delta, size_t len, crdtdb_write_filter filter,
                 void *filter_ctx, uint64_t behind, crdtdb_apply_info *info,
                 uint64_t *ahead_ms);
    /* `behind` nonzero: crdtdb_db_apply_behind with that horizon stamp. */
    /* A REPLACE (crdtdb_db_replace) and a PURGE (crdtdb_db_purge). */
    int (*replace)(void *ctx, const char *coll, const char *id, uint64_t upto,
                   const uint8_t *delta, size_t len);
    int (*purge)(void *ctx, const char *coll, const char *id);

    /* (c) Watermarks.  What we hold of the peer's log and it of ours (an
     * unknown peer: both 0); the peer's ack, recorded durably. */
    int (*peer_get)(void *ctx, const uint8_t *peer, uint64_t *received, uint64_t *acked);
    /* stable: the highest ack known stable (0: none) —
     * crdtdb_db_peer_ack_at(stable, 0) */
    int (*peer_ack)(void *ctx, const uint8_t *peer, uint64_t acked, uint64_t stable);

    /* (c') Collection (docs/crdt.md), each may be NULL (no collection: no
     * RESYNC sent, one received is refused).  horizon: our collection
     * floor as far as the peer is concerned, and the stamp
     * (crdtdb_db_horizon_for).  peer_flags: the peer's
     * CRDTDB_PEER_* flags.  peer_resync: sets (taking stamp into the
     * clock) or clears CRDTDB_PEER_RESYNC (crdtdb_db_peer_resync).
     * resync_keys: appends "coll\0id\0" then 'b' (carried with its add or
     * remove) or 'l' (leaves only) for each record the delta holds.
     * resync_end: crdtdb_db_resync_end. */
    int (*horizon)(void *ctx, const uint8_t *peer, uint64_t *floor, uint64_t *stamp);
    int (*peer_flags)(void *ctx, const uint8_t *peer, unsigned *flags);
    int (*peer_resync)(void *ctx, const uint8_t *peer, int on, uint64_t stamp);
    int (*resync_keys)(void *ctx, const uint8_t *delta, size_t len, crdtdb_buf *keys);
    int (*resync_end)(void *ctx, const uint8_t *peer, uint64_t stamp, uint64_t acked,
                      int (*held)(void *hctx, const char *coll, const char *id), void *hctx,
                      unsigned flags, size_t *n);
    /* peer_leave (may be NULL: a LEAVE only ends the session):
     * crdtdb_db_peer_leave. */
    int (*peer_leave)(void *ctx, const uint8_t *peer, int left);

    /* (d) Access.  readonly: local writes refused (ro 1) or allowed; with
     * `durable`, the copy itself is marked so (crdtdb_db_mark_readonly)
     * when it is not already.  discard_unsent: the local changes the peer
     * has not acknowledged are undone (crdtdb_db_discard_unsent), *n how
     * many records. */
    int (*readonly)(void *ctx, int ro, int durable);
    int (*discard_unsent)(void *ctx, const uint8_t *peer, size_t *n);

    /* Frees ctx when the session closes (may be NULL). */
    void (*close)(void *ctx);
} crdtdb__session_store;

/*
 * A session over `store` (copied; store->ctx must stay valid until the
 * session closes, which calls store->close).  crdtdb_session_open is this
 * over the LMDB store of its db.  On failure store->close is called too.
 * Errors: EINVAL, ENOMEM.
 */
int crdtdb__session_open_store(const crdtdb__session_store *store,
                               const crdtdb_session_options *opts, crdtdb_session **out);

/* The LMDB store of db (transport/session_store.c) into *out: its ctx is
 * db itself, borrowed (db must outlive the session), so nothing to free. */
void crdtdb__session_store_db(crdtdb_db *db, crdtdb__session_store *out);

#endif
