/*
 * crdtdb — small replicated datastores that work offline and sync field by
 * field.  The public header of libcrdtdb (pkg-config crdtdb): CRDTs,
 * storage and the sans-IO sync session.  The WebSocket server, client and
 * tokens are in crdtdb_ws.h (libcrdtdb_ws, pkg-config crdtdb_ws).
 *
 * Handles
 *   crdtdb_env       one directory, one LMDB environment, one replica identity.
 *                    Thread-safe: any thread may open databases on it.
 *   crdtdb_db        one database (many per environment), addressed by id.
 *                    Used by one thread at a time.
 *   crdtdb_txn       a read snapshot or a write batch on one database.
 *                    Used by the thread that began it, until commit/abort.
 *   crdtdb_observer  a subscription to change events of one database handle.
 *
 * Errors
 *   Every function that can fail returns 0 or a negative CRDTDB_E* code.
 *   The human detail of the last failure is kept on the handle the call was
 *   made on: crdtdb_env_errmsg() / crdtdb_db_errmsg().  Not-found is an
 *   outcome, not a failure: lookups return 0 and report it through *found.
 *
 * Ownership
 *   The caller owns everything it passes in; the library copies what it
 *   keeps.  Pointers the library hands out are valid for the period stated
 *   on each function.  Output that outlives a call is written into a
 *   caller-owned crdtdb_buf.
 *
 * Values
 *   Records are msgpack maps with string keys.  Values may be any msgpack
 *   scalar, array or nested map; nested maps are stored leaf by leaf so that
 *   replicas changing different nested fields never conflict.  Arrays are
 *   whole values.  nil is a value, not a deletion.
 */
#ifndef CRDTDB_H
#define CRDTDB_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__) && !defined(CRDTDB_STATIC_BUILD)
#define CRDTDB_API __attribute__((visibility("default")))
#else
#define CRDTDB_API
#endif
/* Not API: marks the few internal crdtdb__ helpers that libcrdtdb exports
 * for libcrdtdb_ws alone (crdt/buf.h, crdt/value.h); no stability promise. */
#define CRDTDB__SHARED CRDTDB_API
#if defined(__GNUC__)
#define CRDTDB_NODISCARD __attribute__((warn_unused_result))
#else
#define CRDTDB_NODISCARD
#endif

#define CRDTDB_VERSION_MAJOR 0
#define CRDTDB_VERSION_MINOR 1
#define CRDTDB_VERSION_PATCH 0

/* ---------------------------------------------------------------- errors */

/* X(name, code, message).  Codes are stable; never renumber. */
#define CRDTDB_ERRNO_MAP(X)                                                   \
    X(EINVAL, -1, "invalid argument")                                         \
    X(ENOMEM, -2, "out of memory")                                            \
    X(EIO, -3, "I/O error")                                                   \
    X(ENOTFOUND, -4, "object not found")                                      \
    X(ENOCOLL, -5, "collection not found")                                    \
    X(ENODB, -6, "database not found")                                        \
    X(EEXIST, -7, "database already exists")                                  \
    X(EBADID, -8, "invalid identifier")                                       \
    X(EBADVALUE, -9, "malformed value")                                       \
    X(ETOOBIG, -10, "value too large")                                        \
    X(ETOODEEP, -11, "value nested too deeply")                               \
    X(EBADQUERY, -12, "invalid query")                                        \
    X(EROFS, -13, "read only access")                                         \
    X(ECLOCK, -14, "clock too far ahead")                                     \
    X(EMAPFULL, -15, "environment is full")                                   \
    X(ECORRUPT, -16, "stored data is corrupt")                                \
    X(EVERSION, -17, "unsupported format version")                            \
    X(EBUSY, -18, "resource busy")                                            \
    X(ELIMIT, -19, "configured limit exceeded")                               \
    X(EBADSIG, -20, "bad signature")                                          \
    X(EDENIED, -21, "permission denied")                                      \
    X(EFORGED, -22, "conflicting writes under one stamp")                     \
    X(EFORK, -23, "replica history diverged")                                 \
    X(EAUTH, -24, "authentication failed")                                    \
    X(EREVOKED, -25, "access changed")

typedef enum crdtdb_errno {
    CRDTDB_OK = 0,
#define CRDTDB_X_ENUM_(name, code, msg) CRDTDB_##name = (code),
    CRDTDB_ERRNO_MAP(CRDTDB_X_ENUM_)
#undef CRDTDB_X_ENUM_
} crdtdb_errno;

/* Static English description of an error code; never NULL. */
CRDTDB_API const char *crdtdb_strerror(int err);
/* Static name of an error code ("CRDTDB_ENOTFOUND"); never NULL. */
CRDTDB_API const char *crdtdb_errname(int err);

/* ----------------------------------------------------------------- sizes */

#define CRDTDB_REPLICA_ID_BYTES 32u /* ed25519 public key */
#define CRDTDB_ID_MAX 255u          /* database, collection and record ids */
/* The same sizes as functions, for bindings that cannot read macros. */
CRDTDB_API size_t crdtdb_replica_id_bytes(void);
CRDTDB_API size_t crdtdb_id_max(void);

/* ---------------------------------------------------------------- buffers */

/*
 * A growable byte buffer owned by the caller.  Functions that produce bytes
 * replace its contents (len) and grow it (data, cap) with realloc.  Reuse one
 * buffer across calls to avoid allocations; release it with crdtdb_buf_free.
 * Initialise with CRDTDB_BUF_INIT or zero.
 */
typedef struct crdtdb_buf {
    uint8_t *data;
    size_t len;
    size_t cap;
} crdtdb_buf;
#define CRDTDB_BUF_INIT {NULL, 0, 0}
/* Frees buf->data and zeroes the struct.  Accepts NULL. */
CRDTDB_API void crdtdb_buf_free(crdtdb_buf *buf);

/* ---------------------------------------------------------------- handles */

typedef struct crdtdb_env crdtdb_env;
typedef struct crdtdb_db crdtdb_db;
typedef struct crdtdb_txn crdtdb_txn;
typedef struct crdtdb_observer crdtdb_observer;

/* ------------------------------------------------------------ environment */

/* Environment flags. */
#define CRDTDB_ENV_NOSYNC 0x1u /* asynchronous durability: commits are not
                                  fsync'ed (LMDB's MDB_NOSYNC).  A process
                                  crash loses nothing; an OS crash or power
                                  loss may lose the last commits, and on a
                                  filesystem that does not keep the order of
                                  writes may corrupt the file.  Faster
                                  writes. */
#define CRDTDB_ENV_RDONLY 0x2u /* open read-only; all writes fail EROFS */

/* Returns milliseconds since the Unix epoch; injectable for tests and
 * embedders with their own time source. */
typedef uint64_t (*crdtdb_clock_fn)(void *ctx);

/*
 * Options and limits.  Fill with crdtdb_env_options_init() and change what
 * you need.  Every size or depth an untrusted peer or user can choose is
 * bounded here.
 */
typedef struct crdtdb_env_options {
    size_t map_size;            /* the most the environment may hold, bytes
                                   (default 64 GiB): LMDB's map, which is
                                   address space, not disk — the file grows
                                   as data is written.  Past it, writes fail
                                   with EMAPFULL and nothing is lost; reopen
                                   with a larger size to go on.  A larger
                                   map set by another process is adopted */
    unsigned flags;             /* CRDTDB_ENV_* (default 0: durable) */
    size_t max_value_size;      /* encoded msgpack of one add/update input
                                   and of one stored record (default 1 MiB) */
    unsigned max_depth;         /* map nesting depth of a record, root = 1
                                   (default 16, at most 32) */
    size_t max_path_bytes;      /* encoded key path of one field (default 1024) */
    uint32_t max_fields;        /* leaf fields in one record (default 10000) */
    uint64_t max_clock_skew_ms; /* remote stamps further ahead of local time
                                   are refused (default 300000: 5 minutes) */
    uint32_t observe_batch_limit; /* a commit with more visible changes than
                                     this fires one MultipleChanges event
                                     (default 100) */
    crdtdb_clock_fn clock;      /* NULL: the system real-time clock */
    void *clock_ctx;
    size_t max_delta_size;      /* one encoded delta, bytes (default 4 MiB;
                                   at least max_value_size + max_path_bytes
                                   + 4096) */
    uint32_t max_delta_groups;  /* record groups in one delta (default 65536);
                                   exports flush at this count */
    size_t max_apply_work;      /* work one apply may do, in bytes of records
                                   read and written plus a fixed cost per
                                   record and per field (default 16 MiB,
                                   about 45 ms on a 2-core VM); a delta of several
                                   records over it is refused with ELIMIT
                                   and nothing stored, so that one peer's
                                   delta cannot stall a server's loop.  A
                                   delta of one record is always applied. */
    uint32_t max_origins;       /* replicas the environment numbers, env-wide:
                                   peers and the origins of stored
                                   registers, whose numbers are never
                                   reclaimed (default 16777216, ~100 B
                                   each).  Past it, a delta from a new
                                   sender or a write that names a new
                                   origin is refused as if the map were
                                   full (EMAPFULL) and nothing stored */
    /* Decides which peers may write to a database: called with the
     * database id and the sender's replica id of every delta before it is
     * applied; return non-zero to allow.  NULL: any valid signature.  A
     * trusted sender may relay registers under any origin id: trust is in
     * the sender, not in the origins it names. */
    int (*trust)(void *ctx, const char *db_id,
                 const uint8_t peer[CRDTDB_REPLICA_ID_BYTES]);
    void *trust_ctx;
} crdtdb_env_options;

/* Fills opts with the defaults above. */
CRDTDB_API void crdtdb_env_options_init(crdtdb_env_options *opts);

/* Copies the options env runs with (defaults filled in) into *opts; the
 * defaults when env is NULL. */
CRDTDB_API void crdtdb_env_options_get(const crdtdb_env *env, crdtdb_env_options *opts);

/*
 * Opens (creating if needed) the environment in directory `path`, which is
 * created if missing (mode 0700; the data file, 0600, holds the secret
 * key).  On first open a replica identity (ed25519 key pair) is
 * generated and stored in the environment.  `opts` may be NULL for defaults;
 * it is copied.  On success *out owns the environment until
 * crdtdb_env_close().  On failure *out is NULL; if a handle could not be made
 * the detail is lost, so the message is printed by crdtdb_strerror().
 *
 * Errors: EINVAL (bad path or options), EIO (cannot create/open files),
 *         ENOMEM (also: the map_size of address space could not be
 *         reserved, e.g. under `ulimit -v` or valgrind: open with a smaller
 *         one), EVERSION (written by an incompatible version), ECORRUPT,
 *         EROFS (read-only and not yet initialised).
 */
CRDTDB_API CRDTDB_NODISCARD int crdtdb_env_open(const char *path,
                                                const crdtdb_env_options *opts,
                                                crdtdb_env **out);

/* Closes the environment.  All its databases must be closed first.
 * Accepts NULL. */
CRDTDB_API void crdtdb_env_close(crdtdb_env *env);

/* Copies the 32-byte replica id (the ed25519 public key) into out; 32
 * zero bytes when env is NULL. */
CRDTDB_API void crdtdb_env_replica_id(const crdtdb_env *env,
                                      uint8_t out[CRDTDB_REPLICA_ID_BYTES]);

/*
 * Gives the environment a new replica identity (a fresh ed25519 key pair).
 * The remedy for a copied environment: two copies writing under one
 * identity fork its history, which peers refuse (CRDTDB_EFORK).  Data stays;
 * registers already written keep the id that wrote them.  Peers see the
 * environment as a new replica from then on.  No database may be open.
 * Errors: EBUSY (a database is open), EROFS, EIO.
 */
CRDTDB_API CRDTDB_NODISCARD int crdtdb_env_reset_id(crdtdb_env *env);

/* Detail of the last failure on this environment handle (database
 * create/open/list/drop).  Valid until the next call on env.  Never NULL.
 * With several threads on one environment the message may be another
 * thread's: rely on the return codes there. */
CRDTDB_API const char *crdtdb_env_errmsg(const crdtdb_env *env);

/* ----------------------------------------------------------- databases */

/*
 * Database ids are 1..255 bytes of UTF-8 without control characters.
 * Collection names follow the same rule.
 */

/*
 * Creates database `id` with the `ncoll` collections named in `colls` and
 * opens it.  On success *out owns the handle until crdtdb_db_close().
 *
 * Errors: EBADID (bad database id or collection name, duplicate or no
 *         collections), EEXIST, EROFS, EMAPFULL, EIO, ENOMEM, ELIMIT (more
 *         than 65535 collections).
 */
CRDTDB_API CRDTDB_NODISCARD int crdtdb_db_create(crdtdb_env *env,
                                                 const char *id,
                                                 const char *const *colls,
                                                 size_t ncoll,
                                                 crdtdb_db **out);

/* Opens existing database `id`.  Errors: EBADID, ENODB, EIO, ENOMEM. */
CRDTDB_API CRDTDB_NODISCARD int crdtdb_db_open(crdtdb_env *env,
                                               const char *id,
                                               crdtdb_db **out);

/* Closes the handle and frees the observers still open on it: their
 * pointers are then invalid (close observers first, or never close them
 * after).  Any transaction on it must be finished first.  Accepts NULL. */
CRDTDB_API void crdtdb_db_close(crdtdb_db *db);

/* Called once per database, in id order; `id` is valid during the call.
 * Return non-zero to stop early (that value is returned by the lister). */
typedef int (*crdtdb_db_list_cb)(void *ctx, const char *id);

/* Lists the databases of the environment.  Errors: EIO, or the callback's
 * non-zero return. */
CRDTDB_API int crdtdb_db_list(crdtdb_env *env, crdtdb_db_list_cb cb,
                              void *ctx);

/* Deletes database `id` and all its data.  No handle on it may be open in
 * this process.  What stays is where this replica's history of the id
 * ended (40 bytes): a database created again under the id goes on from
 * there, so its peers, which remember that history, take the new one
 * instead of refusing it as a copy (EFORK); asking them since 0 brings
 * back the old data, this replica's own writes included.  (An expired
 * database, crdtdb_env_drop_expired, leaves nothing: its id is done.)
 * Errors: EBADID, ENODB, EROFS, EBUSY (a handle is open), EIO. */
CRDTDB_API CRDTDB_NODISCARD int crdtdb_db_drop(crdtdb_env *env,
                                               const char *id);

/* crdtdb_db_drop, if inside the drop's own write transaction the
 * database's last change sequence is still `seq` (crdtdb_db_seq, read
 * when the caller decided): anything written since keeps it.  Errors:
 * those of crdtdb_db_drop, EBUSY (also: written since). */
CRDTDB_API CRDTDB_NODISCARD int crdtdb_env_drop_at(crdtdb_env *env, const char *id,
                                                   uint64_t seq);

/* Forgets where the databases dropped before before_ms (the env's clock)
 * ended their histories; *pruned (may be NULL) gets how many.  One created
 * again under such an id starts a new history, which peers still holding
 * the old one refuse (EFORK): prune only past the time such peers keep
 * theirs.  Errors: EINVAL, EROFS, EIO. */
CRDTDB_API int crdtdb_env_tombs_prune(crdtdb_env *env, uint64_t before_ms, uint64_t *pruned);

/* What a database holds (crdtdb_db_stat): counts and stored bytes. */
typedef struct crdtdb_db_stats {
    uint64_t records;      /* records present (their last base is an add) */
    uint64_t removed;      /* tombstones: records whose last base is a remove */
    uint64_t fields;       /* leaves of present records */
    uint64_t hidden;       /* leaves kept in removed records (they may win
                              again against an older remove) */
    uint64_t log_entries;  /* change-log entries: one per run of registers
                              a store numbered together and not all
                              superseded since (entries written before
                              runs: one per live register) */
    uint64_t record_bytes; /* bytes of the records' keys and blobs */
    uint64_t log_bytes;    /* bytes of the change log's keys and entries */
    uint64_t seq;          /* the last local change sequence */
    uint64_t log_floor;    /* the change log holds no entry at or below it
                              but removed records' and the newest: a trim
                              took them (crdtdb_db_collect); 0: whole */
} crdtdb_db_stats;

/* Fills *out from one read snapshot of db (a scan of its records and
 * change log: O(size); for operators, not for hot paths).
 * Errors: EINVAL, ECORRUPT (a record that does not decode), EIO. */
CRDTDB_API int crdtdb_db_stat(crdtdb_db *db, crdtdb_db_stats *out);

/*
 * Writes a consistent copy of the whole environment (every database, the
 * identity, the peers' watermarks) into directory `path`, which must exist
 * and hold no data file, while other threads and processes go on writing:
 * LMDB's copy of one read snapshot, compacted (free pages left out).
 * Opening `path` (read-write) as an environment restores it as a new
 * replica: its first open gives it a new identity, because the original
 * may have gone on writing after the copy, and a copy writing under the
 * same identity would fork that history (its peers would refuse it,
 * EFORK).  As a new replica it syncs both ways with its peers from
 * scratch, so it gets back what the original wrote after the copy and
 * they had received.  Errors: EINVAL, EEXIST (a data file is there), EIO
 * (the directory cannot be written; the message names the cause).
 */
CRDTDB_API CRDTDB_NODISCARD int crdtdb_env_backup(crdtdb_env *env, const char *path);

/* ---------------------------------------------------------- collection */

/*
 * Tombstone collection (docs/crdt.md, "Collecting tombstones").  A removed
 * record's registers and their change-log entries are dropped once none of
 * its leaves is newer than its remove (an add between the two may still
 * come and show such a leaf) and all are *stable*: every peer
 * in the horizon has acknowledged them, and everything that peer held when
 * it acknowledged has reached us (the ack's second number, protocol.md
 * message 4).  A peer silent for longer than max_peer_age_ms (0: never) —
 * its last delta or ack — leaves the horizon; it, a replica never seen, or
 * one restored from an old backup, gets a full resync when it returns
 * (message 16).  The database keeps its collection floor (the highest
 * sequence collected) and horizon stamp (the newest remove collected).
 */
typedef struct crdtdb_collect_stats {
    uint64_t horizon;   /* our sequence every peer in the horizon holds
                           (the last sequence when there are none) */
    uint64_t records;   /* removed records dropped */
    uint64_t registers; /* registers dropped with them */
    uint64_t peers_left; /* peers left out as silent past max_peer_age_ms */
    uint64_t floor;     /* the collection floor afterwards */
    uint64_t stamp;     /* the horizon stamp afterwards (an HLC) */
    uint64_t log_entries; /* change-log entries dropped below the horizon
                             (their registers stay: see crdtdb_db_collect) */
    uint64_t packed;      /* records packed (see crdtdb_db_collect) */
} crdtdb_collect_stats;

/* Collects db's stable tombstones, in write transactions of up to 256
 * records each (one huge one would copy every page it touches, and the
 * file never shrinks: crdtdb_env_backup writes a compacted copy); out may
 * be NULL.  Observers see nothing (nothing visible changes).
 * Then it trims the change log below the horizon: every peer in it holds
 * that history, so the entries that index it by sequence go (but a
 * removed record's, which the next collection looks for, and the newest).
 * An export from below the trimmed part walks the records instead
 * (crdtdb_export_info.resume), so it carries the same registers.
 * Last, the records every peer in the horizon holds whole (no remove, no
 * register past the horizon) are packed: compressed together, a run of a
 * collection's records to one stored value, in one write transaction
 * (holding the packed part of the database in memory meanwhile).  Packed
 * records read as any other; a write to one stores its pack's records one
 * by one again, until the next collection.
 * Errors: EINVAL, EROFS (a read-only environment), EMAPFULL, EIO, ECORRUPT. */
CRDTDB_API int crdtdb_db_collect(crdtdb_db *db, uint64_t max_peer_age_ms,
                                 crdtdb_collect_stats *out);

/* The collection floor and horizon stamp (both 0: nothing ever collected),
 * as this handle last read or wrote them: a collection through another
 * handle or process shows at the next crdtdb_db_poll (a server polls on
 * every turn of its loop), or within a second of the env clock.
 * Errors: EINVAL, EIO. */
CRDTDB_API int crdtdb_db_horizon(crdtdb_db *db, uint64_t *floor, uint64_t *stamp);

/* The floor as far as `peer` is concerned: the highest sequence collected
 * that did not come from it (what it sent us it holds), so a SINCE of its
 * below that needs a full resync.  Cached as crdtdb_db_horizon.
 * Errors: EINVAL, EIO. */
CRDTDB_API int crdtdb_db_horizon_for(crdtdb_db *db, const uint8_t *peer, uint64_t *floor,
                                     uint64_t *stamp);

/* ------------------------------------------------------------- expiry */

/*
 * A finished match or a quiet room can expire: a time-to-live counted from
 * the database's last write, or from an explicit close.  The setting is
 * this replica's own (a server's decision when to let go), never
 * replicated.  Nothing is dropped by these calls: crdtdb_env_expired lists
 * the databases due, and their owner (crdtdb serve, or `crdtdb expired
 * --drop`) ends their sessions, archives them if asked (crdtdb_db_archive)
 * and drops them (crdtdb_db_drop).
 */
#define CRDTDB_EXPIRE_CLOSED 0x1u /* closed now: the time-to-live runs from
                                     now, whatever is written later */

typedef struct crdtdb_expiry {
    uint64_t ttl_ms;        /* 0: never expires */
    uint64_t closed_ms;     /* when it was closed (wall ms), 0: open */
    uint64_t last_write_ms; /* the stamp of the register written last, 0:
                               none */
    uint64_t due_ms;        /* closed_ms + ttl_ms, or else the later of
                               last_write_ms and when the time-to-live
                               was set, + ttl_ms */
} crdtdb_expiry;

/* Sets db's time-to-live (ttl_ms 0: never expires, clearing any close;
 * flags CRDTDB_EXPIRE_CLOSED: counted from now).  Durable at return.
 * Errors: EINVAL, EROFS (a read-only environment), EMAPFULL, EIO. */
CRDTDB_API int crdtdb_db_expire_set(crdtdb_db *db, uint64_t ttl_ms, unsigned flags);

/* Reads db's expiry setting and when it is due.  Errors: EINVAL, EIO,
 * ECORRUPT. */
CRDTDB_API int crdtdb_db_expiry(crdtdb_db *db, crdtdb_expiry *out);

/* Called once per database due; `id` and `e` are valid during the call,
 * which may open, archive and drop that database.  Non-zero stops the
 * listing (and is returned). */
typedef int (*crdtdb_expired_cb)(void *ctx, const char *id, const crdtdb_expiry *e);

/* Lists the databases whose time-to-live has passed at now_ms (wall ms),
 * from one snapshot, then calls cb for each outside it.
 * Errors: EINVAL, EIO, ENOMEM, the callback's non-zero return. */
CRDTDB_API int crdtdb_env_expired(crdtdb_env *env, uint64_t now_ms, crdtdb_expired_cb cb,
                                  void *ctx);

/* Drops database `id` if, inside the drop's own write transaction, it is
 * still due at now_ms and its last change sequence is still `seq` (read
 * with crdtdb_db_seq before archiving or listing it): anything written
 * since — a local write, or a peer's delta however old its stamps — keeps
 * the database.  Errors: those of crdtdb_db_drop, EBUSY (open here, no
 * longer due, or written since). */
CRDTDB_API int crdtdb_env_drop_expired(crdtdb_env *env, const char *id, uint64_t now_ms,
                                       uint64_t seq);

/* Writes every change of db as signed deltas into the new file `path`
 * (flushed to disk, then linked into place: whole or absent, never over an
 * existing file), which `crdtdb import` or crdtdb_db_apply restore into a
 * database of the same id and collections in another environment (an
 * archive server).  Not into this one once db expired and was dropped
 * (crdtdb_env_drop_expired leaves nothing of it): its own deltas for a log
 * it no longer holds are refused as a copied identity (EFORK).  After
 * crdtdb_db_drop, a database created again under the id takes them.
 * Errors: EINVAL, EEXIST, EIO, those of crdtdb_db_export. */
CRDTDB_API int crdtdb_db_archive(crdtdb_db *db, const char *path);

/* The environment db belongs to (borrowed; valid while db is open).  This
 * and the getters below give NULL or 0 for a NULL db. */
CRDTDB_API crdtdb_env *crdtdb_db_env(const crdtdb_db *db);

/* The database id (NUL-terminated), valid while db is open. */
CRDTDB_API const char *crdtdb_db_id(const crdtdb_db *db);

/* Number of declared collections, and the name of collection i (valid while
 * db is open; NULL when i is out of range). */
CRDTDB_API size_t crdtdb_db_collection_count(const crdtdb_db *db);
CRDTDB_API const char *crdtdb_db_collection_name(const crdtdb_db *db,
                                                 size_t i);

/* Detail of the last failure on this database handle, such as
 * "Object with id 'X' not found in collection 'Y'".  After a call on db
 * that failed, it describes that failure (at least crdtdb_strerror of the
 * code returned), never an earlier call's.  Valid until the next call on
 * db.  Never NULL. */
CRDTDB_API const char *crdtdb_db_errmsg(const crdtdb_db *db);

/*
 * The database's change sequence: the number of the last local change.
 * Strictly increasing with every committed change, local or merged.
 * `txn` may be NULL (latest committed state).  Errors: EIO.
 */
CRDTDB_API int crdtdb_db_seq(crdtdb_db *db, crdtdb_txn *txn, uint64_t *seq);

/*
 * The last sequence of this database's log that may have left it: its
 * last change sequence or, past it, the end of the sequences an early
 * relay (crdtdb_db_set_precommit) reserved and may have sent before their
 * commit (by this handle or another, in any process).  A peer holding more
 * of this replica's log than that holds another copy's writes under its
 * id (docs/protocol.md, "A SINCE above your own log's end").  `txn` may be
 * NULL.  Errors: EIO, ECORRUPT.
 */
CRDTDB_API int crdtdb_db_seq_sent(crdtdb_db *db, crdtdb_txn *txn, uint64_t *upto);

/* --------------------------------------------------------- transactions */

#define CRDTDB_TXN_RDONLY 0x1u

/*
 * Begins a transaction on db: a read snapshot (CRDTDB_TXN_RDONLY) that never
 * blocks writers, or a write batch whose operations commit all together or
 * not at all.  One write transaction runs at a time per environment (others
 * wait).  A handle has at most one open transaction.  On success *out is
 * owned by the caller until crdtdb_txn_commit() or crdtdb_txn_abort().
 *
 * Errors: EBUSY (this handle already has a transaction), EROFS, ENODB (the
 *         database was dropped), EIO, ENOMEM.
 */
CRDTDB_API CRDTDB_NODISCARD int crdtdb_txn_begin(crdtdb_db *db,
                                                 unsigned flags,
                                                 crdtdb_txn **out);

/* The database handle a transaction belongs to (borrowed). */
CRDTDB_API crdtdb_db *crdtdb_txn_db(const crdtdb_txn *txn);

/*
 * Commits and frees txn; observers then receive the batch's events.  If any
 * operation in a write transaction failed, commit refuses (the batch is all
 * or nothing), aborts, and returns that operation's error.  The commit is
 * durable on return unless the environment is CRDTDB_ENV_NOSYNC.
 * Errors: the failed operation's code, EMAPFULL, EIO.
 */
CRDTDB_API CRDTDB_NODISCARD int crdtdb_txn_commit(crdtdb_txn *txn);

/* Discards and frees txn.  Accepts NULL. */
CRDTDB_API void crdtdb_txn_abort(crdtdb_txn *txn);

/*
 * Early relay: a server sends the changes a write numbered to its other
 * peers while the commit that makes them durable is still to come, so
 * they wait for no disk flush (docs/operations.md, "Early relay").
 *
 * fn is called inside each write transaction of db that numbered the
 * changes (from, to], after everything the transaction stores is written
 * and before its commit, when (from, to] lies within the handle's
 * reservation (below).  Inside fn, read calls on db (crdtdb_db_export_for,
 * crdtdb_db_seq, crdtdb_db_get_by_id, ...) see the transaction as it will
 * commit; write calls fail with EBUSY.  fn must not close db.  ctx is the
 * caller's, passed through.  fn NULL turns early relay off.
 *
 * What fn sends may outlive the transaction: if the commit then fails, or
 * the process or machine stops before it is durable, (from, to] are never
 * numbered again.  With fn set, each commit that numbers changes stores a
 * reservation of the sequences ahead of it, made by this handle, and only
 * sequences this handle reserved in an earlier commit go out early.  A
 * write by any other handle (opened later, in this process or another,
 * with or without fn), and this handle's after a failed commit, starts
 * past the reservation.  So sequences may have gaps, and a peer that got
 * changes this database then lost holds them until their writer (who had
 * no acknowledgement for them) sends them again.  The reservation is as
 * durable as the commit that stored it (not under CRDTDB_ENV_NOSYNC).
 * Do not keep a transaction begun inside fn past its return.
 */
typedef void (*crdtdb_precommit_fn)(void *ctx, crdtdb_db *db, uint64_t from, uint64_t to);
CRDTDB_API void crdtdb_db_set_precommit(crdtdb_db *db, crdtdb_precommit_fn fn, void *ctx);

/* ------------------------------------------------------------------ data */

/*
 * Every data call takes an optional txn.  With txn NULL the call runs in its
 * own transaction (a snapshot for reads; a durable commit for writes).  With
 * a txn it runs inside it; a failed write marks the txn failed.
 *
 * Common errors: EINVAL (NULL argument), ENOCOLL ("Collection 'Y' not
 * found"), EBADID (record id not 1..255 bytes of UTF-8), EROFS ("Read only
 * access": read-only txn or environment), EBUSY (txn NULL while this handle
 * has a transaction open), ECORRUPT or EVERSION (unreadable stored record),
 * EIO.
 */

/*
 * Reads record `id` of collection `coll`.  If it exists, *found = 1 and out
 * holds the record as a msgpack map (keys sorted bytewise at every level);
 * otherwise *found = 0, out is emptied, and crdtdb_db_errmsg() says
 * "Object with id 'X' not found in collection 'Y'".
 */
CRDTDB_API CRDTDB_NODISCARD int crdtdb_db_get_by_id(crdtdb_db *db,
                                                    crdtdb_txn *txn,
                                                    const char *coll,
                                                    const char *id,
                                                    crdtdb_buf *out,
                                                    int *found);

/*
 * Called once per matching record in id order.  `id` (NUL-terminated) and
 * `value` (msgpack map) are valid during the call only.  Return non-zero to
 * stop; crdtdb_db_query() then returns that value.  The query holds the
 * handle's transaction: inside the callback, pass that same txn (or use
 * another handle) to read.
 */
typedef int (*crdtdb_query_cb)(void *ctx, const char *id, const uint8_t *value,
                               size_t len);

/*
 * Finds records of `coll` matching `criteria` (msgpack, `len` bytes), or all
 * records when criteria is NULL:
 *   - a map: equality on each key; a nested map means equality of the
 *     nested fields it names ({"a": {"b": 1}} is a.b == 1);
 *   - an array of conditions [field, op, value], all of which must hold.
 *     field is a string (dots separate nesting levels: "a.b") or an array of
 *     key strings (for keys that contain dots).  op is one of
 *     "==" (or "=") "!=" "<" "<=" ">" ">=".
 * Numbers compare numerically across integer and float, strings bytewise
 * (UTF-8), timestamps (msgpack ext -1, a JS Date) by the instant they hold,
 * whatever their form; the ordering ops hold only between two numbers, two
 * strings or two timestamps.  nil, booleans, binary, other extensions,
 * arrays and maps compare only with == and != (deeply).  No coercion: a
 * value of another type never matches == or an ordering op, and always
 * matches != ("5" != 5).  A missing field is like nil: it matches only !=
 * of a value that is not nil.  NaN equals and orders nothing.
 *
 * Errors: EBADQUERY (malformed criteria, unknown op), ETOOBIG / ETOODEEP
 *         (criteria over the value limits), EINVAL (cb is NULL: it is
 *         required), plus the common ones, or the callback's non-zero
 *         return.
 */
CRDTDB_API int crdtdb_db_query(crdtdb_db *db, crdtdb_txn *txn,
                               const char *coll, const uint8_t *criteria,
                               size_t len, crdtdb_query_cb cb, void *ctx);

/*
 * Adds record `id`, replacing the whole record if it exists (fields it had
 * are no longer visible).  `value` must be a msgpack map with string keys.
 *
 * Errors: EBADVALUE (not a map, malformed msgpack, non-string key),
 *         ETOOBIG (value or stored record over max_value_size, too many
 *         fields, a key path over max_path_bytes), ETOODEEP, EMAPFULL, plus
 *         the common ones.
 */
CRDTDB_API CRDTDB_NODISCARD int crdtdb_db_add(crdtdb_db *db, crdtdb_txn *txn,
                                              const char *coll, const char *id,
                                              const uint8_t *value, size_t len);

/*
 * Adds several records in one transaction: `values` is a msgpack map from
 * record id to record map.  All or nothing.  Errors: as crdtdb_db_add().
 */
CRDTDB_API CRDTDB_NODISCARD int crdtdb_db_add_all(crdtdb_db *db,
                                                  crdtdb_txn *txn,
                                                  const char *coll,
                                                  const uint8_t *values,
                                                  size_t len);

/*
 * Deep-merges `changes` (a msgpack map) into existing record `id`, like
 * mergeDeepRight: nested maps merge key by key, anything else replaces.
 * Only the given leaves are written.
 *
 * Errors: ENOTFOUND ("Object with id 'X' not found in collection 'Y'"),
 *         and those of crdtdb_db_add().
 */
CRDTDB_API CRDTDB_NODISCARD int crdtdb_db_update(crdtdb_db *db,
                                                 crdtdb_txn *txn,
                                                 const char *coll,
                                                 const char *id,
                                                 const uint8_t *changes,
                                                 size_t len);

/* Removes record `id` (a tombstone that replicates).  Removing a record
 * that is absent (or already removed) succeeds and changes nothing: no
 * tombstone, no event — the replicated store's remove.  The handle's
 * message then says it was not found.  Errors: the common ones. */
CRDTDB_API CRDTDB_NODISCARD int crdtdb_db_remove(crdtdb_db *db,
                                                 crdtdb_txn *txn,
                                                 const char *coll,
                                                 const char *id);

/* --------------------------------------------------------------- observe */

typedef enum crdtdb_event_type {
    CRDTDB_EVENT_ADD = 1,      /* a record became visible */
    CRDTDB_EVENT_UPDATE,       /* a visible record changed */
    CRDTDB_EVENT_REMOVE,       /* a record stopped being visible */
    CRDTDB_EVENT_MULTIPLE_CHANGES, /* many changes: re-read what you show */
    CRDTDB_EVENT_INVALIDATE_ALL    /* everything may have changed */
} crdtdb_event_type;

/*
 * One event.  All pointers are valid during the callback only.  For ADD and
 * UPDATE, value is the record's full new msgpack map; for REMOVE it is NULL.
 * For MULTIPLE_CHANGES and INVALIDATE_ALL, id and value are NULL and coll is
 * the observed collection (NULL when observing all).
 */
typedef struct crdtdb_event {
    crdtdb_event_type type;
    const char *coll;
    const char *id;
    const uint8_t *value;
    size_t len;
} crdtdb_event;

/* Called after commit, on the committing thread.  The callback may read the
 * database and may write in a new transaction (not the committing one). */
typedef void (*crdtdb_observe_cb)(void *ctx, const crdtdb_event *ev);

/*
 * Subscribes cb to changes of collection `coll` (NULL: all collections) made
 * through this handle, and — on crdtdb_db_poll() — to changes committed by
 * other handles or processes.  One event per visible change; writes that lose
 * the last-writer-wins comparison fire nothing.  On success *out owns the
 * subscription until crdtdb_observer_close() or crdtdb_db_close(), which
 * frees it too: *out must not be closed after db is.
 *
 * Errors: ENOCOLL, ENOMEM.
 */
CRDTDB_API CRDTDB_NODISCARD int crdtdb_db_observe(crdtdb_db *db,
                                                  const char *coll,
                                                  crdtdb_observe_cb cb,
                                                  void *ctx,
                                                  crdtdb_observer **out);

/* Also calls the observer (with MultipleChanges) after every commit that
 * numbered registers but changed no rendering (a same-value write, leaves
 * hidden by a remove, a remove of a record not shown): what a sync
 * session must send even so.  Accepts NULL. */
CRDTDB_API void crdtdb_observer_commits(crdtdb_observer *o);

/* Unsubscribes and frees.  Safe inside a callback.  Accepts NULL, but
 * not an observer of a handle already closed (crdtdb_db_close freed it). */
CRDTDB_API void crdtdb_observer_close(crdtdb_observer *obs);

/*
 * Fires events for changes committed to this database by other handles or
 * processes since this handle last looked, read from the change log.  Sets
 * *n (may be NULL) to the number of changed records seen.  Events from the
 * log are ADD when the record was (re)added since, REMOVE when removed
 * since, else UPDATE.  Errors: EIO.
 */
CRDTDB_API int crdtdb_db_poll(crdtdb_db *db, size_t *n);

/*
 * Tells every observer of this handle that everything may have changed
 * (CRDTDB_EVENT_INVALIDATE_ALL), e.g. after the embedding program replaced
 * the data wholesale.
 */
CRDTDB_API void crdtdb_db_invalidate(crdtdb_db *db);

/*
 * Forgets every record of db, its change log and what it knew of its
 * peers, durably, then tells observers (CRDTDB_EVENT_INVALIDATE_ALL).  For
 * a client whose access changed: the next sync starts from nothing.  The
 * sequence continues, so peers keep counting where this replica is.
 * Local changes not yet sent are lost.  Errors: EBUSY (a transaction is
 * open on this handle), EROFS, EIO.
 */
CRDTDB_API CRDTDB_NODISCARD int crdtdb_db_clear(crdtdb_db *db);

/*
 * Forgets one record locally — no tombstone, nothing that would travel to
 * peers — and tells observers it was removed.  For a client told by its
 * server that it may no longer see the record; works on read-only
 * handles.  Absent records are fine.  Errors: ENOCOLL, EBADID, EBUSY, EIO.
 */
CRDTDB_API CRDTDB_NODISCARD int crdtdb_db_purge(crdtdb_db *db, const char *coll, const char *id);

/*
 * Purges (as crdtdb_db_purge) every record holding a change made on this
 * replica, not merged from a peer, after our sequence `after`: for a
 * client that learns it is read-only while it holds offline writes its
 * server will never take (`after`: what the server acknowledged).  It
 * then asks the server for everything again, so its copy is the server's.
 * *n (may be NULL) counts the records.  Errors: those of crdtdb_db_purge,
 * ECORRUPT.
 */
CRDTDB_API CRDTDB_NODISCARD int crdtdb_db_discard_unsent(crdtdb_db *db, uint64_t after, size_t *n);

/* ---------------------------------------------------------------- deltas */

/*
 * A delta is a signed msgpack change set (format: docs/protocol.md): the
 * latest state of every register a replica wrote or merged after some local
 * change sequence, signed once by that replica.  Any replica can apply any
 * delta from any other, in any order, any number of times; replicas that
 * have applied the same changes show the same data.
 */

/* A sink's "enough": ends the export after the delta just given.  Not an
 * error: the export returns 0 and info->to tells where it ended. */
#define CRDTDB_STOP 1

/* Receives one encoded delta (valid during the call).  Returns 0 for the
 * next, CRDTDB_STOP to end the export there, or a negative CRDTDB_E* code
 * to fail it (the export then returns that code). */
typedef int (*crdtdb_delta_sink)(void *ctx, const uint8_t *delta, size_t len);

#define CRDTDB_EXPORT_RESUME_MAX (2 + 1 + CRDTDB_ID_MAX + 8 + 16) /* info.resume's bytes */

typedef struct crdtdb_export_info {
    uint64_t from;     /* the deltas cover local sequences (from, to] */
    uint64_t to;       /* also when the sink stopped the export: up to the
                          end of the last delta it was given */
    size_t deltas;     /* deltas passed to the sink */
    size_t changes;    /* registers packed */
    size_t bytes;      /* encoded bytes passed to the sink */
    /* Where the next delta starts when the export stopped inside a walk of
     * the records (resume_len > 0; else 0).  An export from below the
     * change log's trimmed part (crdtdb_db_collect) finds those registers
     * by walking the records in key order: its deltas cover (from, from]
     * until a pass of the walk is done, so `to` alone cannot say where to
     * go on.  Pass it back in crdtdb_export_options.resume with since =
     * `to` (the same since until a pass ends; a pass under a floor a trim
     * has raised since ends at that floor, and the next pass goes on).
     * A walk does not know where a register came from, so unlike the log
     * it also sends a peer its own registers back (harmless to merge). */
    uint8_t resume[CRDTDB_EXPORT_RESUME_MAX];
    size_t resume_len;
} crdtdb_export_info;

/*
 * Packs every change of db with a local sequence after `since` into signed
 * deltas of at most max_delta_size bytes, in sequence order, and passes each
 * to sink.  Each delta applies on its own.  With `peer` (may be NULL), the
 * deltas are made for that peer: they leave out changes it sent us (it has
 * them) and tell it how much of its own log we have received; another
 * replica applying them merges the changes but keeps its watermarks.  A snapshot: concurrent
 * writes go to a later export.  `info` may be NULL.
 *
 * Errors: EBUSY (a transaction is open on this handle), EIO, ECORRUPT,
 *         ENOMEM, or the sink's negative return.
 */
CRDTDB_API int crdtdb_db_export(crdtdb_db *db, uint64_t since,
                                const uint8_t *peer, crdtdb_delta_sink sink,
                                void *ctx, crdtdb_export_info *info);

#define CRDTDB_EXPORT_SHARED 0x1u   /* sign once for every peer (below) */
#define CRDTDB_EXPORT_NO_EMPTY 0x2u /* don't sign ranges holding nothing */
#define CRDTDB_EXPORT_ALL 0x4u      /* include what the peer sent us */

/* Options of crdtdb_db_export_for; zero them, then set what you need. */
typedef struct crdtdb_export_options {
    unsigned flags;   /* CRDTDB_EXPORT_* */
    size_t max_bytes; /* cap of each delta (0: max_delta_size) */
    /* A read filter (NULL: the peer sees everything): whether the peer may
     * see record (coll, id) whose visible value is `value` (a msgpack map;
     * removed records are never shown).  `txn` is the export's snapshot:
     * read through it, never end it.  Records the peer may see go out
     * whole, not only their changed fields, since it may have missed
     * changes while it could not see them. */
    int (*visible)(void *ctx, crdtdb_txn *txn, const char *coll, const char *id,
                   const uint8_t *value, size_t len);
    /* With a read filter: a record changed in the range that the peer may
     * not see (it may have it from before: tell it to forget it, e.g. the
     * session's purge).  May be NULL. */
    void (*hidden)(void *ctx, const char *coll, const char *id);
    void *filter_ctx;
    /* Goes on from where an export stopped inside a walk of the records:
     * its info.resume, with since = its info.to (borrowed for the call;
     * NULL or 0 bytes: from the start).  A transport that asks for one
     * delta at a time (the session) keeps it between calls.  Malformed, or
     * made for another since: EINVAL.  After a trim since it was made, the
     * pass goes on under the floor it began with, then one more pass takes
     * what the trim took (nothing it passed is missed). */
    const uint8_t *resume;
    size_t resume_len;
} crdtdb_export_options;

/*
 * crdtdb_db_export for transports that keep a live connection per peer
 * and acknowledge on their own (the sync session's ACK).  opts may be NULL.
 * flags:
 *  - CRDTDB_EXPORT_NO_EMPTY: a range holding nothing for the peer (only
 *    changes it sent us, or records it may not see) is not signed: the
 *    sink gets (NULL, 0) and info->to tells how far the range went.
 *  - CRDTDB_EXPORT_SHARED: for a server pushing to many peers.  A range
 *    holding no change received from `peer` goes out as one unaddressed
 *    delta, encoded and signed once and cached on the handle (at most 16
 *    deltas and 2 x max_delta_size bytes, least recently used out first)
 *    for every peer that asks for the same range.  Unaddressed deltas tell
 *    the peer nothing of our watermarks.  The cache lives until
 *    crdtdb_db_close().  Ignored with a read filter.
 *  - CRDTDB_EXPORT_ALL: leave nothing out, not even the changes the peer
 *    sent us — for a peer that starts from nothing (it may have cleared
 *    its copy, its own writes included).
 * max_bytes caps each delta lower, so a large sync streams in pieces the
 * receiver applies while the next is made; a single record larger than
 * that still goes out whole.  Commits made while a peer's output was
 * pending coalesce: a delta holds the latest state of each register in its
 * range.  Errors: those of crdtdb_db_export.
 */
CRDTDB_API int crdtdb_db_export_for(crdtdb_db *db, uint64_t since,
                                    const uint8_t *peer,
                                    const crdtdb_export_options *opts,
                                    crdtdb_delta_sink sink, void *ctx,
                                    crdtdb_export_info *info);

typedef struct crdtdb_apply_info {
    uint8_t sender[CRDTDB_REPLICA_ID_BYTES];
    uint64_t from;    /* the sender's sequences the delta covers: (from, to] */
    uint64_t to;
    size_t changes;   /* registers in the delta */
    size_t applied;   /* registers that won and were stored */
    uint64_t received; /* what we now hold of the sender's log, contiguous
                          from its start: its watermark after this apply */
    size_t refused;   /* records a write filter refused */
    uint64_t local_from; /* the local sequences this apply numbered: */
    uint64_t local_to;   /* (local_from, local_to], all from the sender
                            unless `gated` */
    uint64_t commit_us;  /* how long the commit took, microseconds
                            (monotonic): LMDB's page writes and fsync,
                            the apply's durable part (for metrics) */
    size_t gated;        /* records that may have been collected records
                            coming back, removed by a remove of ours in the
                            same transaction (docs/crdt.md, rule 4): those
                            removes are ours, numbered in that range too,
                            and travel to every peer, the sender included */
} crdtdb_apply_info;

/*
 * Verifies and applies one delta (`len` bytes, exactly one delta) to db, in
 * one write transaction: all or nothing.  The signature is checked before
 * anything else is read; then the trust hook, the database id, the limits
 * and every stamp's clock skew.  Registers merge by the LWW rules; those that
 * win get local sequence numbers, so they travel on to other replicas.  The
 * sender's watermark advances when the delta continues what we had from it.
 * Observers see the visible changes.  Applying a delta again changes
 * nothing.  `info` (may be NULL) is filled on success.
 *
 * Errors: EBADVALUE (malformed), EVERSION (unknown format), EBADSIG (bad or
 *         missing signature, or body changed after signing), EDENIED (the
 *         trust hook refused the sender), EINVAL (delta for another
 *         database), ENOCOLL (unknown collection), EBADID, ETOOBIG
 *         (delta over max_delta_size, value or path over its limit),
 *         ETOODEEP, EBUSY (a transaction is open on this handle), ECLOCK (a
 *         stamp beyond max_clock_skew_ms ahead of local
 *         time: the message states both times), EFORGED (a register
 *         under the same stamp as one we hold, with a different value: the
 *         delta is refused whole and the sender flagged
 *         CRDTDB_PEER_EQUIVOCATED), EFORK (the sender's history diverges
 *         from what it sent before, as a cloned environment's does: refused,
 *         sender flagged CRDTDB_PEER_FORKED), EROFS, EMAPFULL, EIO.
 */
CRDTDB_API CRDTDB_NODISCARD int crdtdb_db_apply(crdtdb_db *db,
                                                const uint8_t *delta,
                                                size_t len,
                                                crdtdb_apply_info *info);

/*
 * Applies deltas in order, as crdtdb_db_apply calls would, in one write
 * transaction: one commit, so one fsync, for all of them (group commit:
 * several peers' deltas waiting for one database cost one disk flush).
 * It takes deltas[0], then the next ones while what it merged stays under
 * max_apply_work (so a batch is one bounded unit of work, at most twice
 * that), and commits: 0, *done = how many it applied (the caller offers
 * the rest again), infos[0 .. *done) filled, the commit's commit_us in
 * the last of them and 0 in the others.  All or nothing: on failure
 * nothing is stored, *done is the index of the delta that failed (0 also
 * when the commit itself failed), the message names it ("delta 3 of 8:
 * ...") and its sender is flagged as crdtdb_db_apply would; apply the
 * others again without it.  Unlike separate applies, the trust hook runs
 * inside the write transaction for all but the first delta (it must not
 * write to the environment), and observers see one commit.  deltas[i]
 * (lens[i] bytes) and infos (n entries) belong to the caller; nothing is
 * kept after the call.  The write lock is held while the deltas are
 * verified: keep n small (the server takes at most
 * CRDTDB_APPLY_BATCH_MAX).  n == 0 does nothing.  Errors: those of
 * crdtdb_db_apply, and EINVAL (a NULL array).
 */
#define CRDTDB_APPLY_BATCH_MAX 64
CRDTDB_API CRDTDB_NODISCARD int crdtdb_db_apply_batch(crdtdb_db *db,
                                                      const uint8_t *const *deltas,
                                                      const size_t *lens, size_t n,
                                                      crdtdb_apply_info *infos, size_t *done);

/*
 * Decides one record of a delta being applied: `old` and `now` are the
 * record's visible values before and after the merge (msgpack maps; NULL
 * and 0 when absent or removed), valid during the call.  `txn` is the
 * apply's transaction: read through it (crdtdb_db_get_by_id, query) to see
 * the database as merged so far; never write or end it.  Return 0 to
 * accept; anything else refuses that record.
 */
typedef int (*crdtdb_write_filter)(void *ctx, crdtdb_txn *txn, const char *coll, const char *id,
                                   const uint8_t *old, size_t old_len,
                                   const uint8_t *now, size_t now_len);

/*
 * crdtdb_db_apply with a write filter (may be NULL) deciding each record
 * the delta changes — for servers authorizing what a user writes.  The
 * filter judges each record once per delta, on all of the delta's changes
 * to it.  A refused record's changes are dropped: nothing of it is stored,
 * nothing is written in its place (no restore could be stamped so as to
 * beat the sender's stamps without beating honest writes too).  Correcting
 * the sender alone is the caller's part: a session sends it a REPLACE
 * (crdtdb_db_export_record, crdtdb_db_replace).  The delta still counts as
 * received.  info->refused counts the refused records.  Errors: those of
 * crdtdb_db_apply.
 */
CRDTDB_API CRDTDB_NODISCARD int crdtdb_db_apply_filtered(crdtdb_db *db, const uint8_t *delta,
                                                         size_t len, crdtdb_write_filter filter,
                                                         void *ctx, crdtdb_apply_info *info);

/*
 * crdtdb_db_apply_filtered for a delta from a peer that came from behind
 * this database's collection floor (crdtdb_db_horizon; the session does
 * this while it resyncs such a peer): registers stamped at or before
 * `stamp` (the horizon stamp) of records this database holds nothing of
 * are dropped, not stored — they cannot be told from writes to a removed
 * record that was collected here.  The watermark moves as usual.
 */
CRDTDB_API CRDTDB_NODISCARD int crdtdb_db_apply_behind(crdtdb_db *db, const uint8_t *delta,
                                                       size_t len, crdtdb_write_filter filter,
                                                       void *ctx, uint64_t stamp,
                                                       crdtdb_apply_info *info);

/*
 * Makes a signed delta, for `peer` (may be NULL), holding every register
 * of record (coll, id) as this replica stores it, into out (replaced;
 * the caller owns it).  It covers no range of the log, so applying it moves
 * no watermark.  For crdtdb_db_replace at the peer.  *found = 0 and out
 * empty when the record is not stored here (not even as a tombstone).
 * Errors: ENOCOLL, EBADID, EIO (the record is larger than max_delta_size),
 * ENOMEM.
 */
CRDTDB_API int crdtdb_db_export_record(crdtdb_db *db, const char *coll, const char *id,
                                       const uint8_t *peer, crdtdb_buf *out, int *found);

/*
 * Replaces this replica's copy of record (coll, id) with a peer's, in one
 * write transaction: every register of it numbered up to our sequence
 * `upto` is taken back (dropped, with its change-log entry: no tombstone,
 * nothing that travels), then the registers in `delta` are merged — a
 * delta of that one record signed by the peer (crdtdb_db_export_record),
 * or NULL when the peer holds nothing of it.  Registers numbered after
 * `upto` (written since) stay and merge as usual.  For a client whose
 * write its server refused: `upto` is the end of the delta that carried
 * it, so the client returns to the server's state and no one else is
 * touched.  Observers see the change.  Errors: ENOCOLL, EBADID, EBADVALUE
 * (the delta holds another record, or is signed by this replica), those
 * of crdtdb_db_apply.
 */
CRDTDB_API CRDTDB_NODISCARD int crdtdb_db_replace(crdtdb_db *db, const char *coll,
                                                  const char *id, uint64_t upto,
                                                  const uint8_t *delta, size_t len,
                                                  crdtdb_apply_info *info);

/*
 * How many bytes the delta at the start of `data` takes, read from its
 * first bytes alone (its envelope's header and body length, and the
 * 64-byte signature a delta ends with): to read a stream or file of deltas
 * one at a time without holding more.  *need is set whatever len is: when
 * it is more than len, read up to *need bytes and ask again (at most 8
 * bytes tell it all); else crdtdb_delta_peek reads the delta.
 * Errors: EINVAL, EBADVALUE (no delta starts there), EVERSION.
 */
CRDTDB_API int crdtdb_delta_need(const uint8_t *data, size_t len, size_t *need);

/*
 * Reads the length and the database id of the delta at the start of
 * `data`, without verifying it: to split concatenated deltas and route
 * each to its database.  *delta_len is the first delta's length; db_id
 * receives its database id, NUL-terminated.
 * Errors: EBADVALUE, EVERSION, ETOOBIG (id longer than 255 bytes).
 */
CRDTDB_API int crdtdb_delta_peek(const uint8_t *data, size_t len,
                                 size_t *delta_len,
                                 char db_id[CRDTDB_ID_MAX + 1]);

/* crdtdb_delta_peek, also reading the replica id the delta claims as its
 * signer (unverified: crdtdb_db_apply verifies it), so a transport can
 * refuse a delta from another replica than its peer before storing
 * anything.  sender may be NULL.  Errors: those of crdtdb_delta_peek. */
CRDTDB_API int crdtdb_delta_peek_sender(const uint8_t *data, size_t len,
                                        size_t *delta_len,
                                        char db_id[CRDTDB_ID_MAX + 1],
                                        uint8_t sender[CRDTDB_REPLICA_ID_BYTES]);

/* Peer flags: set when a peer's delta was refused as evidence of a broken or
 * hostile replica; they stay until the embedding program decides. */
#define CRDTDB_PEER_EQUIVOCATED 0x1u /* two values under one stamp */
#define CRDTDB_PEER_FORKED 0x2u      /* two histories under one replica id */
#define CRDTDB_PEER_RESYNC 0x4u      /* a full resync from it is under way
                                        (crdtdb_db_peer_resync): ask it
                                        for everything again */
#define CRDTDB_PEER_RESYNCED 0x8u    /* a full resync from it ended here:
                                        its writes are not gated as old
                                        (docs/crdt.md, "Collecting
                                        tombstones", rule 4) */
#define CRDTDB_PEER_LEFT 0x10u       /* it said it dropped its copy
                                        (crdtdb_db_peer_leave): out of the
                                        horizon; resynced whole if it comes
                                        back; cleared by its next delta or
                                        ack */

/* What this replica knows of a peer, for one database. */
typedef struct crdtdb_peer {
    uint8_t id[CRDTDB_REPLICA_ID_BYTES];
    uint64_t received; /* the peer's own sequence we have everything up to */
    uint64_t acked;    /* our sequence the peer has everything up to */
    unsigned flags;    /* CRDTDB_PEER_* */
    uint64_t stable;   /* our sequence the peer holds, with everything it
                          held when it said so received here: what
                          collection may go up to (crdtdb_db_collect) */
    uint64_t seen_ms;  /* when it last sent a delta or an ack (the env's
                          clock; 0: never since this was recorded) */
} crdtdb_peer;

typedef int (*crdtdb_peer_cb)(void *ctx, const crdtdb_peer *peer);

/* Lists the known peers of db in id order.  Errors: EIO, or the callback's
 * non-zero return. */
CRDTDB_API int crdtdb_db_peers(crdtdb_db *db, crdtdb_peer_cb cb, void *ctx);

/* Reads one peer's watermarks; an unknown peer reads as found = 0 with both
 * watermarks 0.  Errors: EIO. */
CRDTDB_API int crdtdb_db_peer_get(crdtdb_db *db, const uint8_t *peer,
                                  crdtdb_peer *out, int *found);

/* Records, durably, that `peer` has everything of ours up to sequence
 * `acked` (never moves backwards).  For transports that receive
 * acknowledgements.  Errors: EROFS, EIO. */
CRDTDB_API int crdtdb_db_peer_ack(crdtdb_db *db, const uint8_t *peer,
                                  uint64_t acked);

/* Marks `peer` as gone (left 1: CRDTDB_PEER_LEFT) or back (0), durably:
 * it dropped its copy of db (protocol.md message 17, LEAVE), so it no
 * longer holds collection back (crdtdb_db_collect), and if it ever comes
 * back a server resyncs it whole, as one silent past the age limit, and
 * clears the flag once it acknowledged all of that resync.  Its
 * watermarks stay, for `crdtdb peers`.  Errors: EROFS, EIO. */
CRDTDB_API int crdtdb_db_peer_leave(crdtdb_db *db, const uint8_t *peer, int left);

/* crdtdb_db_peer_ack, saying also where the peer's own log was when it
 * held that much of ours (`their_seq`, protocol.md message 4's second
 * number).  Once everything of the peer's up to their_seq has been
 * received here, `acked` is stable (crdtdb_peer.stable): the peer can no
 * longer send us a write older than what it acknowledged.  Errors: EROFS,
 * EIO. */
CRDTDB_API int crdtdb_db_peer_ack_at(crdtdb_db *db, const uint8_t *peer, uint64_t acked,
                                     uint64_t their_seq);

/* One peer's acknowledgements, for crdtdb_db_peer_acks. */
typedef struct crdtdb_peer_ack {
    uint8_t peer[CRDTDB_REPLICA_ID_BYTES]; /* the peer's replica id */
    uint64_t acked;  /* as crdtdb_db_peer_ack's */
    uint64_t stable; /* 0, or an ack already known stable: as
                        crdtdb_db_peer_ack_at(peer, stable, 0) */
} crdtdb_peer_ack;

/* Records the acks of several peers in one transaction, so one commit
 * (one fsync) instead of one each: for each entry in order, what
 * crdtdb_db_peer_ack_at(peer, stable, 0) (when stable is not 0) and then
 * crdtdb_db_peer_ack(peer, acked) record.  A server saves the acks of all
 * its sessions of a database this way (crdtdb_session_acks_take).  `acks`
 * is read during the call only; n may be 0.  All or nothing.  Errors:
 * EINVAL, EBUSY (a transaction is open on the handle), EROFS, ENODB,
 * ECORRUPT, EMAPFULL, EIO. */
CRDTDB_API int crdtdb_db_peer_acks(crdtdb_db *db, const crdtdb_peer_ack *acks, size_t n);

/* Sets (on 1) or clears CRDTDB_PEER_RESYNC on peer, durably: a full
 * resync from it began and must end (crdtdb_db_resync_end) before a later
 * session may resume from our watermark.  Setting it takes the peer's
 * horizon stamp into our clock, so what we write from then on is newer
 * than anything it collected.  Errors: ECLOCK (stamp too far ahead),
 * EROFS, EIO. */
CRDTDB_API int crdtdb_db_peer_resync(crdtdb_db *db, const uint8_t *peer, int on,
                                     uint64_t stamp);

#define CRDTDB_RESYNC_SHARED 0x1u /* this replica serves others: remove, not forget */

/*
 * Ends a full resync from `peer` (protocol.md message 16), in one
 * transaction: every record here that the peer's snapshot did not carry
 * (held() says 0) loses the registers the peer has seen (numbered up to
 * `acked`: what it had acknowledged of our log when the resync began —
 * later acks cover writes its snapshot does not carry back) and those
 * stamped at or before `stamp`
 * (its horizon stamp): they were removed and collected there.  A record it
 * carried leaves of but no add or remove (held() says 1) loses only such
 * a base; held() 2: carried with its add or remove, kept.  Forgotten
 * with no tombstone, as a purge; with CRDTDB_RESYNC_SHARED (a server's
 * peer link), a visible one is removed instead, so replicas that got it
 * from us hear of it.  Registers newer than both stay and travel to the
 * peer.  Clears CRDTDB_PEER_RESYNC and sets CRDTDB_PEER_RESYNCED.  With
 * CRDTDB_RESYNC_SHARED, `stamp` becomes this database's gate if higher:
 * from then on an add stamped at or before it, of a record held no add or
 * remove of here, that a delta from a replica not flagged so brings
 * (crdtdb_db_apply and the others; not while the copy is read-only) is
 * merged and then removed by a remove of ours, in the same transaction
 * (crdtdb_apply_info.gated; docs/crdt.md, rule 4); crdtdb_db_clear drops
 * the gate.  *n (may be NULL): records changed.
 * held(ctx, coll, id) is called once per record held here.
 * Errors: EINVAL, EROFS, EMAPFULL, EIO, ECORRUPT, ENOMEM.
 */
CRDTDB_API int crdtdb_db_resync_end(crdtdb_db *db, const uint8_t *peer, uint64_t stamp,
                                    uint64_t acked,
                                    int (*held)(void *ctx, const char *coll, const char *id),
                                    void *ctx, unsigned flags, size_t *n);

/* ------------------------------------------------------- sync session */

/*
 * A sync session speaks the sync protocol (docs/protocol.md, "Sessions")
 * with one peer about one database, and knows nothing of sockets: feed it
 * the bytes received, send the bytes it has for output, and call pump after
 * local commits.  The same engine serves clients, servers, tests and
 * fuzzers; libcrdtdb_ws (crdtdb_ws.h) binds it to WebSocket.
 */
typedef struct crdtdb_session crdtdb_session;

typedef enum crdtdb_sync_mode {
    CRDTDB_SYNC_TWO_WAY = 1,          /* changes flow both ways */
    CRDTDB_SYNC_SERVER_TO_CLIENT = 2  /* the client only receives */
} crdtdb_sync_mode;

#define CRDTDB_SESSION_SERVER 0x1u /* this end is the server */
#define CRDTDB_SESSION_NO_PURGE 0x2u /* a client whose data serves others
                                        (a server's peer link): purges
                                        and replaces from the peer are
                                        refused */
#define CRDTDB_SESSION_YIELD 0x4u    /* feed applies no delta: it handles
                                        the other messages and stops at a
                                        delta or replace, which waits for
                                        crdtdb_session_step; the event
                                        loop decides when (pending) */

typedef enum crdtdb_session_event_type {
    CRDTDB_SESSION_READY = 1,  /* handshake done: peer and mode known */
    CRDTDB_SESSION_APPLIED,    /* a delta from the peer was applied */
    CRDTDB_SESSION_CAUGHT_UP,  /* we hold everything the peer had when it
                                  last said it was up to date */
    CRDTDB_SESSION_ERROR,      /* the peer refused something, or we did */
    CRDTDB_SESSION_CLOSED,     /* the session is over */
    CRDTDB_SESSION_PRESENCE,   /* a presence frame came (12 or 13) */
    CRDTDB_SESSION_MESSAGE     /* an ephemeral message came (14 or 15) */
} crdtdb_session_event_type;

/* Presence and ephemeral messages (docs/protocol.md, "Presence and
 * messages"): live state of each connection, never stored. */
#define CRDTDB_PRESENCE_KEY_BYTES 16u /* server id (8) + connection number (8) */
#define CRDTDB_PRESENCE_DEPTH 16u     /* nesting of a state or body, at most */
#define CRDTDB_PRESENCE_MAX 1024u     /* default max_presence, bytes */

/* One connection's presence entry.  In an event, every pointer is valid
 * during the callback only; passed to crdtdb_presence_encode, during the
 * call only. */
typedef struct crdtdb_presence {
    const uint8_t *key;     /* CRDTDB_PRESENCE_KEY_BYTES; NULL in a
                               PRESENCE event for a received [12] (the
                               server stamps it) */
    const char *user;       /* the authenticated user ("" without tokens);
                               NULL for a received [12] */
    const uint8_t *replica; /* CRDTDB_REPLICA_ID_BYTES: the connection's
                               claimed replica id (for [12]: the peer's) */
    uint64_t version;       /* increasing per key at its server; 0 for [12] */
    const uint8_t *state;   /* one msgpack map; NULL: the entry left */
    size_t state_len;
} crdtdb_presence;

/* One ephemeral message; pointers as in crdtdb_presence. */
typedef struct crdtdb_message {
    const uint8_t *key;     /* the sender's connection; NULL for [14] */
    const char *user;       /* NULL for [14] */
    const uint8_t *replica; /* as in crdtdb_presence */
    uint64_t n;             /* its sender's n-th message; 0 for [14] */
    const char *to;         /* a user id, or NULL: everyone */
    const uint8_t *body;    /* one msgpack value */
    size_t body_len;
} crdtdb_message;

/* One event; pointers are valid during the callback only. */
typedef struct crdtdb_session_event {
    crdtdb_session_event_type type;
    crdtdb_sync_mode mode;            /* READY */
    const uint8_t *peer;              /* READY: the peer's replica id */
    const crdtdb_apply_info *applied; /* APPLIED */
    int error;                        /* ERROR, CLOSED: a CRDTDB_E* code or 0 */
    const char *message;              /* ERROR, CLOSED: detail, or NULL */
    int remote;                       /* ERROR: 1 if the peer reported it */
    const crdtdb_presence *presence;  /* PRESENCE */
    const crdtdb_message *msg;        /* MESSAGE */
} crdtdb_session_event;

typedef void (*crdtdb_session_cb)(void *ctx, const crdtdb_session_event *ev);

typedef struct crdtdb_session_options {
    unsigned flags;          /* CRDTDB_SESSION_SERVER */
    crdtdb_sync_mode mode;   /* client: the mode it asks for; server: the
                                most it grants (default TWO_WAY) */
    size_t max_message;      /* one received frame, bytes (default:
                                max_delta_size + 4096) */
    size_t max_output;       /* output queued before pump stops exporting:
                                the backpressure bound (default: 2 x
                                max_delta_size) */
    size_t delta_size;       /* target size of the deltas sent, bytes
                                (default 256 KiB): a large sync streams in
                                pieces applied while the next is made */
    crdtdb_session_cb on_event; /* may be NULL */
    void *ctx;
    crdtdb_write_filter write_filter; /* decides each record the peer's
                                         deltas change (may be NULL; see
                                         crdtdb_db_apply_filtered) */
    /* What the peer may see (a server's read filter; see
     * crdtdb_export_options.visible; may be NULL).  Records it may not see
     * are never sent; one it may no longer see is purged from its copy
     * (crdtdb_db_purge, on the client) when it next changes. */
    int (*read_filter)(void *ctx, crdtdb_txn *txn, const char *coll, const char *id,
                       const uint8_t *value, size_t len);
    void *filter_ctx;         /* for both filters */
    size_t max_presence;      /* bytes of one received presence state or
                                 message body (default CRDTDB_PRESENCE_MAX);
                                 larger ones get a NOTICE (ETOOBIG) and are
                                 dropped */
} crdtdb_session_options;

CRDTDB_API void crdtdb_session_options_init(crdtdb_session_options *opts);

/*
 * Starts a session on db (which must stay open for the session's life; one
 * session per db handle at a time when the handle is also used for writes
 * elsewhere, since the session begins transactions on it).  A client queues
 * its hello at once.  On success *out is owned by the caller until
 * crdtdb_session_close().  A client asking for SERVER_TO_CLIENT, or granted
 * it, has its db handle made read-only (crdtdb_db_set_readonly).
 * Errors: EINVAL, ENOMEM.
 */
CRDTDB_API CRDTDB_NODISCARD int crdtdb_session_open(crdtdb_db *db,
                                                    const crdtdb_session_options *opts,
                                                    crdtdb_session **out);

/*
 * Processes received bytes (any split: a byte at a time works).  Never
 * close the session (or the client or server owning it) from inside its
 * on_event callback: end it with crdtdb_session_shutdown and close after
 * the call returns.  Complete
 * messages are handled at once: deltas are verified and applied, replies
 * queued.  A malformed or refused message ends the session: an error is
 * queued for the peer, CRDTDB_SESSION_CLOSED fires, and the code is
 * returned; the caller sends the remaining output, then drops the
 * connection.  A delta refused for clock skew (ECLOCK) does not end the
 * session: it is reported (an ERROR event here, a notice to the peer) and
 * not acknowledged; once the local clock (the env's) has caught up with its
 * newest stamp, and at least 1 s later, the session asks for it again (SINCE
 * of its watermark, queued by crdtdb_session_pump or crdtdb_session_flush),
 * so what was merged after the gap is acknowledged then too.  Nor does one
 * refused as too costly (ELIMIT: max_apply_work): the peer is asked to
 * send it again in deltas of half its size (SINCE with a size hint).  Records the write filter refuses
 * are corrected at the peer alone (REPLACE, crdtdb_db_replace).  With
 * CRDTDB_SESSION_YIELD, no delta or replace is applied here: input stops
 * at the first one (crdtdb_session_pending), for crdtdb_session_step.
 * Errors: EBADVALUE (malformed frame or message), ETOOBIG (frame over
 * max_message), EVERSION (protocol version), EINVAL (another database),
 * EROFS (a read-only client sent a delta), the apply errors of
 * crdtdb_db_apply, EBUSY (the session is closed).
 */
CRDTDB_API CRDTDB_NODISCARD int crdtdb_session_feed(crdtdb_session *s, const uint8_t *data,
                                                    size_t len);

/*
 * Exports what the peer lacks into the output, one bounded delta at a
 * time, while the output holds less than max_output bytes (backpressure:
 * drain the output, then pump again).  Call it after local commits (an
 * observer is a good place) and after the output drains.  Does nothing
 * before the handshake, when this end only receives, or when called back
 * from inside feed or step on s (which pump when they return).
 * Errors: those of crdtdb_db_export, EBUSY (closed).
 */
CRDTDB_API int crdtdb_session_pump(crdtdb_session *s);

/*
 * Early relay (crdtdb_db_set_precommit): called from a server's precommit
 * hook for a write that numbered (from, ...], pumps s now — the write's
 * delta goes into its output before the commit — if s is a server's
 * session whose peer is waiting exactly at `from`: told it is up to date
 * there, nothing queued, no read filter, no catching up, resync or clock
 * retry under way.  Leave out the sessions whose peers sent the write
 * (their own changes are theirs to acknowledge after the commit).
 * Returns 1 when output now waits (send it before the commit), 0 when s
 * was left to its pump after the commit, or an error as
 * crdtdb_session_pump.
 */
CRDTDB_API int crdtdb_session_pump_early(crdtdb_session *s, uint64_t from);

/* The bytes waiting to be sent: *len bytes at the returned pointer, valid
 * until the next call on s.  NULL and 0 when nothing waits (or s is
 * NULL). */
CRDTDB_API const uint8_t *crdtdb_session_output(crdtdb_session *s, size_t *len);

/* Marks the first n output bytes as sent.  Accepts NULL. */
CRDTDB_API void crdtdb_session_consume(crdtdb_session *s, size_t n);

/* 1 when the connection is worth waking to write (nghttp2's want_write):
 * output waits, or a pump may find something (after a commit, or for the
 * clock retry).  0 while inside feed or step on s, whose commits it
 * answers itself when the call returns (check the output then), and once
 * there is nothing to send: a transport that wakes its connections on
 * commits asks this first. */
CRDTDB_API int crdtdb_session_want_write(const crdtdb_session *s);

/* The memory the session's input and output buffers hold now, in bytes
 * (their capacity; large ones are given back once drained): for a budget
 * across many sessions. */
CRDTDB_API void crdtdb_session_buffered(const crdtdb_session *s, size_t *in, size_t *out);

/* The deltas this session has queued for its peer since it opened (a
 * server's metrics; the APPLIED event counts the other way).  0 for NULL. */
CRDTDB_API uint64_t crdtdb_session_deltas_sent(const crdtdb_session *s);

/* 1 while both sides hold everything: we hold what the peer had when it
 * last said it was up to date, the peer acknowledged everything we sent,
 * and nothing is left to send.  For one-shot syncs. */
CRDTDB_API int crdtdb_session_synced(crdtdb_session *s);

/* What crdtdb_session_synced waits for, in words ("the peer's
 * acknowledgement of sequence 12", ...), or NULL when it is synced.  The
 * text is the session's, valid until its next call on s: for logs, when a
 * sync (or a server's handoff) takes longer than it should. */
CRDTDB_API const char *crdtdb_session_unsynced(crdtdb_session *s);

/* 1 once the session is closed (by either side or by an error). */
CRDTDB_API int crdtdb_session_closed(const crdtdb_session *s);

/* 1 when a complete received message waits to be handled: with YIELD, a
 * delta or replace for crdtdb_session_step.  Stop reading from the
 * connection meanwhile (its bytes would only queue). */
CRDTDB_API int crdtdb_session_pending(const crdtdb_session *s);

/*
 * Applies the delta or replace that waits at the head of the input, then
 * handles what follows it up to the next one (which waits again): one
 * bounded unit of work (max_apply_work) that an event loop schedules among
 * its connections, so no peer holds the loop for more than one apply.
 * Errors: those of crdtdb_session_feed.
 */
CRDTDB_API int crdtdb_session_step(crdtdb_session *s);

/*
 * Group commit across sessions (YIELD): a transport with several sessions
 * of one database waiting, each with a delta at the head of its input,
 * applies those deltas in one commit (crdtdb_db_apply_batch on the
 * database) instead of a step each.  crdtdb_session_batch_peek says
 * whether the waiting delta may join (1; *delta, *len point into the
 * session's input, valid until the next call on s) or not (0: a write
 * filter decides its records, a resync is under way, its stamps ran
 * ahead, the frame is not a plain DELTA of the peer's: step it).  For
 * each delta the batch applied, crdtdb_session_batch_done(s, &infos[i])
 * finishes it as a step would (ack, events, what follows up to the next
 * delta, the pump); infos[i] as crdtdb_db_apply_batch filled it for that
 * delta, once per peek.  A delta the batch did not take (it stopped at
 * its work bound, or failed, storing nothing) still waits: peek again
 * later, or step it (the one at fault is refused as it would be alone).
 * crdtdb_session_batch_done errors: EINVAL (no delta handed out by a peek
 * waits, or info is not the peer's), EBUSY (closed), and those of
 * crdtdb_session_step.
 */
CRDTDB_API int crdtdb_session_batch_peek(crdtdb_session *s, const uint8_t **delta, size_t *len);
CRDTDB_API int crdtdb_session_batch_done(crdtdb_session *s, const crdtdb_apply_info *info);

/* Queues a notice for the peer — an error that does not end the session,
 * e.g. a refused write (the peer gets CRDTDB_SESSION_ERROR with remote 1).
 * Called from inside feed or step (a write filter, an event callback), it
 * is held until the apply or callback returns, then queued there, ahead
 * of the replies that follow.  Errors: ENOMEM, EBUSY (closed, or leaving:
 * crdtdb_session_errmsg then still says why it closed, the one message
 * not written for the code returned). */
CRDTDB_API int crdtdb_session_notify(crdtdb_session *s, int code, const char *message);

/* Ends the session with an error for the peer (code and message; after
 * any output), as a refused message would; CLOSED fires.  For a server
 * whose user's access changed (CRDTDB_EREVOKED). */
CRDTDB_API void crdtdb_session_abort(crdtdb_session *s, int code, const char *message);

/* Queues a close for the peer (after any output) and closes the session. */
CRDTDB_API void crdtdb_session_shutdown(crdtdb_session *s);

/* A client that drops its copy of the database: queues LEAVE (protocol.md
 * message 17; after any output), which asks the server to stop counting
 * on this replica (crdtdb_db_peer_leave).  The session then takes nothing
 * but the server's answer: keep feeding it until it closes, and drop the
 * copy once crdtdb_session_left says the server stored the leave.  A
 * session that closes otherwise (the server did not take it, an error, the
 * connection ended) leaves the server counting on this replica: keep the
 * copy, or drop it knowing that server holds collection back for it until
 * its max peer age.  Call it once crdtdb_session_synced says the server
 * holds everything: what it had not received is lost to it (if the copy
 * comes back, the server resyncs it whole).  Errors: EINVAL (a server's
 * session, or one not open yet or already leaving), ENOMEM, EBUSY (closed:
 * crdtdb_session_errmsg still says why, as for crdtdb_session_notify). */
CRDTDB_API int crdtdb_session_leave(crdtdb_session *s);

/* 1 once the server answered this client's LEAVE: it stored that this
 * replica left (the session is closed then); else 0. */
CRDTDB_API int crdtdb_session_left(const crdtdb_session *s);

/* Detail of the last failure: the code the last failing call returned, or
 * why the session closed (its CRDTDB_SESSION_CLOSED event and calls on it
 * after).  Never NULL; owned by s, valid until the next call on s or its
 * close. */
CRDTDB_API const char *crdtdb_session_errmsg(const crdtdb_session *s);

/* Records the acknowledgements received so far (crdtdb_db_peer_ack).  A
 * session saves them every 64 acks and when closed; transports call this
 * now and then (WebSocket: every 50 ms) so `crdtdb peers` stays current
 * without a write per ack.  Acks only inform: what is resent follows the
 * peer's own watermark, so a crash losing a few resends nothing.  It is
 * also the session's timer: a delta refused for clock skew is asked for
 * again here once in time (see crdtdb_session_feed), so send the output
 * after calling it.  Errors: EIO, ENOMEM. */
CRDTDB_API int crdtdb_session_flush(crdtdb_session *s);

/* For a transport that records the acks of all its sessions of one
 * database together (crdtdb_db_peer_acks: one commit, not one each):
 * fills the caller's *out with what crdtdb_session_flush would record
 * now, and counts it as recorded; the caller records it on the database
 * the session was opened on.  Returns 1 when *out was filled, 0 when
 * nothing waits (an unproven peer's acks, or a peer that left, never
 * wait), or CRDTDB_EINVAL.  crdtdb_session_flush is still called after
 * it (the session's timer); it then records nothing.  Acks the caller
 * fails to record are lost until the peer acks again, as a crash loses
 * them (crdtdb_session_flush). */
CRDTDB_API int crdtdb_session_acks_take(crdtdb_session *s, crdtdb_peer_ack *out);

/* Frees the session (not its database).  Accepts NULL. */
CRDTDB_API void crdtdb_session_close(crdtdb_session *s);

/*
 * Presence and messages (docs/protocol.md, "Presence and messages").  The
 * session parses and checks frames 12 to 15 and reports each well-formed
 * one as a PRESENCE or MESSAGE event; one whose payload is refused (too
 * big, not a msgpack map, too deep) gets a NOTICE and no event.  What is
 * relayed to whom is the embedding server's part (libcrdtdb_ws does it).
 *
 * crdtdb_session_presence_set queues [12, state] (client side): `state` is
 * one msgpack map of at most max_presence bytes (copied), or NULL to leave.
 * crdtdb_session_message_send queues [14, to, body]: `to` a user id or NULL
 * for everyone, `body` one msgpack value (copied).  Both only once the
 * session is open (READY).  Errors: EINVAL (server side, or before READY),
 * ETOOBIG, EBADVALUE, ETOODEEP, ENOMEM, EBUSY (closed).
 */
CRDTDB_API int crdtdb_session_presence_set(crdtdb_session *s, const uint8_t *state, size_t len);
CRDTDB_API int crdtdb_session_message_send(crdtdb_session *s, const char *to,
                                           const uint8_t *body, size_t len);

/*
 * Appends one framed [13, ...] (presence_encode) or [15, ...]
 * (message_encode) to frame (its bytes kept), ready for
 * crdtdb_session_send_frame: a server fanning one change out to N sessions
 * encodes it once.  Every pointer of p / m is read during the call only.
 * Errors: EINVAL (no key, user or replica; user over CRDTDB_ID_MAX),
 * ENOMEM.
 */
CRDTDB_API int crdtdb_presence_encode(const crdtdb_presence *p, crdtdb_buf *frame);
CRDTDB_API int crdtdb_message_encode(const crdtdb_message *m, crdtdb_buf *frame);

/* Queues frames made by the encoders above (one or several, whole) after
 * the output, once the session is open.  The bytes are copied.
 * Errors: EINVAL (not whole frames of type 13 or 15, or before READY),
 * ENOMEM, EBUSY (closed). */
CRDTDB_API int crdtdb_session_send_frame(crdtdb_session *s, const uint8_t *frame, size_t len);

/*
 * Makes local writes through this handle fail with EROFS ("Read only
 * access") — for a client in server-to-client mode — while deltas still
 * apply.  0 turns it off.
 */
CRDTDB_API void crdtdb_db_set_readonly(crdtdb_db *db, int readonly);

/*
 * Marks this replica's copy of db read-only (1) or not (0), durably: while
 * marked, local add / add_all / update / remove through any handle, in any
 * process, fail with EROFS "Read only access"; deltas, replaces and purges
 * from peers still apply.  A sync client sets the mark when its server
 * grants server-to-client though two-way was asked, and clears it when a
 * server grants two-way: read-only is a property of the copy, connected or
 * offline, not of one handle.  Errors: EROFS (read-only environment), EIO.
 */
CRDTDB_API CRDTDB_NODISCARD int crdtdb_db_mark_readonly(crdtdb_db *db, int readonly);

/* Whether db's copy is marked read-only (crdtdb_db_mark_readonly).
 * Errors: EIO. */
CRDTDB_API int crdtdb_db_marked_readonly(crdtdb_db *db, int *readonly);

/* ------------------------------------------------------------------ json */

/*
 * JSON at the edges (CLI, examples).  JSON objects become msgpack maps,
 * integers become msgpack integers, reals become float64.  Input nesting
 * deeper than max_depth (0: 32) is refused with ETOODEEP; malformed JSON
 * with EBADVALUE.  `errmsg` (may be NULL) receives a NUL-terminated detail of
 * at most errmsg_size bytes.  out is replaced.
 */
CRDTDB_API CRDTDB_NODISCARD int crdtdb_json_to_msgpack(const char *json,
                                                       size_t len,
                                                       unsigned max_depth,
                                                       crdtdb_buf *out,
                                                       char *errmsg,
                                                       size_t errmsg_size);

/*
 * A record as the DataStore interface shows it: the map {"id": id, ...its
 * fields}, with "id" first and the fields in their stored order, into out
 * (replaced).  A field of the record named "id" gives way to the record
 * id, so a record read always names itself (docs/crdt.md).  `value` is a
 * record's msgpack map, as crdtdb_db_get_by_id and queries give it.
 * Errors: EINVAL, EBADVALUE (not a map), ENOMEM.
 */
CRDTDB_API int crdtdb_record_with_id(const char *id, const uint8_t *value, size_t len,
                                     crdtdb_buf *out);

/*
 * Writes msgpack `mp` as compact JSON text (NUL-terminated; out->len excludes
 * the NUL).  A timestamp (ext -1, a JavaScript Date) becomes the string
 * toISOString() gives ("1970-01-01T00:00:00.000Z"; nine digits of fraction
 * when not whole milliseconds; years 0000-9999); binary and other extension
 * values become base64 strings; non-string map keys are written as their
 * JSON text.  Errors: EBADVALUE, ENOMEM.
 */
CRDTDB_API CRDTDB_NODISCARD int crdtdb_msgpack_to_json(const uint8_t *mp,
                                                       size_t len,
                                                       crdtdb_buf *out);

#ifdef __cplusplus
}
#endif
#endif /* CRDTDB_H */
