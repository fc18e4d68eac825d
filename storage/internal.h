/*
 * The storage base: the handles (env, db, txn), the LMDB key layout and the
 * helpers every storage file needs (error messages and each public call's
 * one exit, ids, transactions).  Not installed.  Each other concept has
 * its own header, included only where it is used: slot.h (one record's
 * read-modify-write), log.h (the change log), export.h (the exporter).
 *
 * LMDB layout (one environment, named sub-databases; integers big-endian so
 * keys sort numerically):
 *   meta     "version" -> u32 format version (5; 4: before packs, 3:
 *            before the trimmed log, 2: before origins by number, 1:
 *            before change-log runs; all still opened, and marked 5 by
 *            the first writable open)
 *            "identity" -> 64-byte ed25519 secret key (public key = last 32)
 *            "next_db" -> u32 next database number
 *            "hlc"     -> u64 highest stamp issued or accepted
 *   dbs      database id (UTF-8) -> u32 database number
 *   dbinfo   u32 number | 'c' -> collections (u8 length + name)...
 *            u32 number | 's' -> u64 last change sequence
 *   records  u32 number | u16 collection | record id -> record blob
 *            (crdt/record.h: registers + cached visible rendering; a
 *            value the rendering holds is stored once, there)
 *   packs    record key of the last record it holds -> u8 1 | zstd frame
 *            of records collection packed (recs.h): each record is loose
 *            in "records" or in one pack, and packs' ranges never overlap
 *   changes  u32 number | u64 seq -> u32 source | u16 collection | u8 0
 *                                       | u8 id length | id | varint n
 *            the change log: one entry per run of registers one store of a
 *            record numbered together, [seq, seq + n), keyed by the first;
 *            which of them still live the record's blob tells.  An entry
 *            goes once none of its registers lives, so "changes after N" is
 *            one cursor scan (plus a step back).  Entries written before
 *            runs hold one register each and are still read: u32 source |
 *            u16 collection | u8 id length (never 0) | id | path (empty:
 *            the record base).  source is the peer the registers came from
 *            (0: written here), so they are not sent back.  Format: log.h.
 *   peerids  32-byte replica id -> u32 number (from 1; env-wide): a peer
 *            we synced with, or a replica a record names as an origin
 *            (this one's own key included); 0 stands for "here" as a
 *            change's source, never for a key
 *            u32 number -> 32-byte replica id, for numbers that name a
 *            record's origins (version 4 blobs; origins.h)
 *   chains   u32 number | u64 seq -> 16-byte history fingerprint after the
 *            commit that ended at seq: H(previous fingerprint, what the commit
 *            numbered); the last 65536 sequences' worth are kept
 *   dbinfo   u32 number | 'h' -> u64 seq | the latest fingerprint
 *   marks    u32 number | 32-byte replica id -> u64 received | u64 acked
 *            | u32 flags | u8 n | 8 x (u64 seq, 16-byte history fingerprint)
 *            [| u64 stable | u64 pend_acked | u64 pend_mine | u64 seen_ms]
 *            (the bracket is absent in marks written before collection)
 *   dbinfo   u32 number | 'g' -> u64 collection floor | u64 horizon stamp
 *   dbinfo   u32 number | 'r' -> u64 the newest horizon stamp a full resync
 *            brought here (the gate; resync.c)
 *   dbinfo   u32 number | 'l' -> u64 the log floor: change-log entries
 *            numbered at or below it may be gone (collect.c trims what
 *            every peer holds); exports from below it walk the records
 *            (export.c).  Absent: 0, the log whole
 *   dbinfo   u32 number | 'w' -> u64 the last write's wall-clock ms when
 *            the log was last trimmed (expiry: the entry it read may go)
 *   dbinfo   u32 number | 'n' -> u64 the last sequence that may go out
 *            before its commit | u64 the token of the handle that reserved
 *            it (early relay, txn.c; a write by any other handle starts
 *            past it)
 *   meta     "drop:" + id -> where a dropped database's history ended, for
 *            one created again under its id (db.c, tomb_put)
 */
#ifndef CRDTDB_STORAGE_INTERNAL_H
#define CRDTDB_STORAGE_INTERNAL_H
#include <lmdb.h>
#include <msgpack.h>
#include <pthread.h>
#include <sodium.h>
#include <stdint.h>

#include "crdt/buf.h"
#include "crdt/delta.h"
#include "crdt/record.h"
#include "crdt/value.h"
#include "crdtdb.h"
#include "storage/origins.h"

#define CRDTDB__FORMAT_VERSION 5u /* 4: no packs; 3: the log never trimmed; 2: no origins by number; 1: change-log entries of one register only (all read still) */
#define CRDTDB__RECKEY_MAX (4 + 2 + CRDTDB_ID_MAX)
#define CRDTDB__CHGKEY_LEN 12
#define CRDTDB__CHG_HEAD 7 /* source, collection, id length */
#define CRDTDB__SRC_LOCAL 0u

struct crdtdb_env {
    MDB_env *mdb;
    MDB_dbi dbi_meta, dbi_dbs, dbi_dbinfo, dbi_records, dbi_changes;
    MDB_dbi dbi_peerids, dbi_marks, dbi_chains, dbi_packs;
    int no_packs; /* a version 4 env opened read-only: no packs table */
    crdtdb_env_options opts;
    crdtdb__limits lim;
    uint8_t pk[CRDTDB_REPLICA_ID_BYTES];
    uint8_t sk[64];
    pthread_mutex_t lock; /* guards hlc and dbs */
    /* the map gate (gate.c): transactions open in this process, and
     * whether a growth is under way or wanted */
    pthread_mutex_t gate_mu;
    pthread_cond_t gate_cv;
    unsigned gate_active;
    int gate_growing, gate_ready;
    unsigned psize; /* LMDB's page size */
    uint64_t hlc;         /* highest stamp this process issued or accepted */
    struct crdtdb_db *dbs; /* open handles, for drop's EBUSY */
    /* err_mu guards errmsg, errcode and msgno: any thread may call the
     * environment's functions, and each may write a message */
    pthread_mutex_t err_mu;
    char errmsg[512];
    int errcode; /* the code errmsg was written for (crdtdb__env_exit) */
    uint64_t msgno; /* messages written so far (crdtdb__env_seterr) */
};

typedef struct crdtdb__event_rec {
    uint8_t type;
    uint16_t coll;
    size_t id_off;  /* NUL-terminated, in the event arena */
    size_t val_off; /* msgpack, in the event arena */
    size_t val_len;
} crdtdb__event_rec;

struct crdtdb_observer {
    crdtdb_db *db;
    int coll; /* -1: all */
    crdtdb_observe_cb cb;
    void *ctx;
    int closed;
    int commits; /* also told of commits that change no rendering */
    crdtdb_observer *next;
};

/* What collection dropped, for deciding who needs a resync: the highest
 * sequence collected (floor) and the replica it came from (src1; zeros:
 * not known), the highest collected from any other (m2), and the newest
 * remove collected (stamp).  A peer lacks something collected only if its
 * SINCE is below floor, or below m2 when it is src1 itself. */
typedef struct crdtdb__floor {
    uint64_t floor, stamp, m2;
    uint8_t src1[CRDTDB_REPLICA_ID_BYTES];
} crdtdb__floor;

struct crdtdb_db {
    crdtdb_env *env;
    uint32_t num;
    char id[CRDTDB_ID_MAX + 1];
    uint16_t ncoll;
    char **colls;
    crdtdb_txn *txn; /* the open transaction on this handle, if any */
    crdtdb_observer *observers;
    int dispatching;
    uint64_t seen_seq; /* changes up to here have been reported to observers */
    int readonly;      /* local writes refused (a server-to-client client) */
    struct crdtdb_db *next;
    char errmsg[512];
    int errcode; /* the code errmsg was written for (crdtdb__db_exit) */
    uint64_t msgno; /* messages written so far (crdtdb__db_seterr) */
    uint64_t mark;  /* msgno when the latest public call began */
    char failmsg[512]; /* the message of what failed db->txn (txn->failed) */
    /* scratch reused across operations (one thread at a time) */
    crdtdb__record rec;
    crdtdb__origins orig; /* the origins' numbers (origins.h) */
    crdtdb__flat flat;
    msgpack_zone zone;
    crdtdb_buf blob, vis, enc;
    uint32_t *voff, voff_cap; /* where vis holds each leaf's value (slot.c) */
    crdtdb__delta delta;
    struct crdtdb__shared *shared; /* crdtdb_db_export_for's shared deltas */
    /* the collection floor and stamp as last read or written here, and
     * when read (crdtdb_db_horizon: sessions ask on every timer tick; a
     * collection by another process is seen within a second) */
    crdtdb__floor hz;
    uint64_t hz_read_ms;
    int hz_known;
    /* crdtdb_db_set_precommit: called between a write's prepare and its
     * commit; in_precommit while it runs (read transactions then borrow
     * the write's).  jump: the next write starts past the reservation
     * ('n'), for sequences sent early may not have been stored */
    crdtdb_precommit_fn precommit;
    void *precommit_ctx;
    int in_precommit;
    int jump;
    uint64_t token; /* this handle's, stored with the reservation it made */
};

struct crdtdb_txn {
    crdtdb_db *db;
    MDB_txn *mt;
    unsigned flags;
    int failed;       /* first failed operation's code */
    uint64_t seq0;    /* db sequence when the txn began */
    uint64_t seq;     /* last sequence issued in this txn */
    uint64_t hlc;     /* clock within the txn (write txns are serialized) */
    uint64_t hlc0;
    /* events recorded for observers, fired after commit */
    crdtdb__event_rec *events;
    uint32_t nevents, events_cap;
    crdtdb_buf arena;
    int many; /* too many changes by others to list one by one */
    crypto_generichash_state fp; /* digest of what this txn numbered */
    MDB_cursor *rec_cur; /* records cursor of a write txn (LMDB frees it) */
    MDB_cursor *chg_cur; /* change-log cursor of a write txn (log.c; LMDB frees it) */
    int ro_known, ro;    /* the copy's durable read-only mark, once read */
    uint64_t reserved;   /* a write's 'n' when it began: sequences that may go out before commit */
    uint64_t res_owner;  /* the token of the handle that made it (0: none said) */
    uint64_t stored0;    /* the stored sequence when it began; seq0 past it: a write
                            that began at the reservation (kept only if it numbers) */
    int ticked;          /* it issued a stamp of ours (crdtdb__txn_tick) */
    int borrowed;        /* a read inside the precommit hook: the write's LMDB txn, not its own */
    struct crdtdb__held *held; /* packs its slot loads read (recs.h), until it ends */
};

/* txn.c: the early-relay reservation, dbinfo 'n' (the layout above): *upto
 * the last sequence reserved, *owner the token of the handle that made it
 * (both 0 when there is none; owner 0 when it was stored without one).
 * Returns LMDB's code (MDB_CORRUPTED for a value of another size). */
int crdtdb__reservation_get(crdtdb_env *env, MDB_txn *mt, uint32_t num, uint64_t *upto,
                            uint64_t *owner);

/* env.c */
int crdtdb__mdb_err(int rc);
/* LMDB's text for rc, but for a full map: what it means here. */
const char *crdtdb__mdb_str(int rc);
uint64_t crdtdb__now_ms(const crdtdb_env *env);
void crdtdb__env_seterr(crdtdb_env *env, int code, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
/* The entry and the one exit of every public call on an environment:
 *     uint64_t m = crdtdb__env_enter(env);
 *     return crdtdb__env_exit(env, m, rc);
 * When rc is an error the call wrote no message for (none since m, or one
 * for another code), the exit sets rc's default text (crdtdb_strerror),
 * so crdtdb_env_errmsg names the returned failure, never an earlier
 * call's. */
int crdtdb__env_fail(crdtdb_env *env, uint64_t m, int rc);
uint64_t crdtdb__env_enter(crdtdb_env *env);
static inline int crdtdb__env_exit(crdtdb_env *env, uint64_t m, int rc)
{
    return rc < 0 && env ? crdtdb__env_fail(env, m, rc) : rc;
}

/* gate.c: every LMDB transaction begins and ends here, so a map another
 * process grew can be adopted between them (see gate.c).  mt_begin returns LMDB's code; every
 * transaction it began ends with mt_commit (LMDB's code) or mt_abort. */
int crdtdb__gate_init(crdtdb_env *env);
void crdtdb__gate_free(crdtdb_env *env);
int crdtdb__mt_begin(crdtdb_env *env, unsigned flags, MDB_txn **mt);
int crdtdb__mt_commit(crdtdb_env *env, MDB_txn *mt);
void crdtdb__mt_abort(crdtdb_env *env, MDB_txn *mt);
/* 1 when the disk holding the environment has less than 1 MiB free: what
 * LMDB's EIO from a short write means then. */
int crdtdb__disk_full(crdtdb_env *env);

/* copy.c: a consistent copy of env rewritten densely into a new
 * environment in `dir` (which must hold none), marked as a backup when
 * mark_restored; an LMDB code or errno. */
int crdtdb__copy_dense(crdtdb_env *env, const char *dir, int mark_restored);

/* collect.c: the stored floor of db (all zero when never collected). */
int crdtdb__floor_read(crdtdb_db *db, MDB_txn *mt, crdtdb__floor *f);
/* The log floor ('l' above; 0 when absent).  0 or CRDTDB_EIO/ECORRUPT. */
int crdtdb__logfloor_read(crdtdb_db *db, MDB_txn *mt, uint64_t *lf);
/* A dbinfo value of one u64 under `tag` (the gate 'r', the log floor 'l'):
 * *v 0 when absent.  0, ECORRUPT (not 8 bytes) or an LMDB code's error. */
int crdtdb__dbinfo_u64(crdtdb_db *db, MDB_txn *mt, char tag, uint64_t *v);
int crdtdb__dbinfo_u64_put(crdtdb_db *db, MDB_txn *mt, char tag, uint64_t v);
/* Calls each(ctx, k, v) for every key of db's database in dbi (the loose
 * records, the change log, the marks: keys begin with its big-endian u32
 * number; every record, packed too: crdtdb__recs_each), in key order, until it returns nonzero: negative, that error;
 * positive, a stop (0).  k and v point into LMDB's pages: valid during
 * that call only, and only while each writes nothing to dbi (copy what
 * must outlive it).  0 or the error, an LMDB code's through
 * crdtdb__mdb_err; no message set (db.c). */
int crdtdb__db_each(crdtdb_db *db, MDB_txn *mt, MDB_dbi dbi,
                    int (*each)(void *ctx, const MDB_val *k, const MDB_val *v), void *ctx);
/* The ms of database num's last write, as expiry counts it (expire.c). */
int crdtdb__last_write_ms(crdtdb_env *env, MDB_txn *mt, uint32_t num, uint64_t *ms);

/* resync.c: the gate a delta from `sender` passes (0: none), inside t.  A
 * replica a full resync reached holds no tombstone of what its resyncer
 * collected: an add stamped at or below the gate, of a record held nothing
 * of here, may be one of those records coming back (docs/crdt.md, rule 4). */
int crdtdb__gate_for(crdtdb_txn *t, const uint8_t *sender, uint64_t *gate);
/* A remove of our own, inside t, of a record others may hold from us: a
 * relay of what went, so the copy's read-only mark does not stop it.  A
 * record not visible is left as it is. */
int crdtdb__remove_relayed(crdtdb_txn *t, uint16_t coll, const char *id);

/* db.c */
/* The entry and the one exit of every public call on a database handle
 * (the model is SQLite's sqlite3ApiExit):
 *     uint64_t m = crdtdb__db_enter(db);
 *     return crdtdb__db_exit(db, m, rc);
 * An error the call wrote no message for (none since m, or one for
 * another code) gets rc's default text, so crdtdb_db_errmsg belongs to the
 * code returned, never to an earlier call's failure.  A message written
 * by a call nested inside stays: it was written since m.  db may be NULL. */
int crdtdb__db_fail(crdtdb_db *db, uint64_t m, int rc);
static inline uint64_t crdtdb__db_enter(crdtdb_db *db)
{
    if (!db)
        return 0;
    db->mark = db->msgno;
    return db->msgno;
}
/* Whether db's message was written for rc since mark m (a value of
 * msgno; db->mark: since the latest public call began).  A step that
 * failed with rc and wrote no message of its own leaves it false. */
static inline int crdtdb__db_msg_since(const crdtdb_db *db, int rc, uint64_t m)
{
    return db->errcode == rc && db->msgno != m;
}
static inline int crdtdb__db_exit(crdtdb_db *db, uint64_t m, int rc)
{
    return rc < 0 && db ? crdtdb__db_fail(db, m, rc) : rc; /* inline: every call passes */
}
int crdtdb__db_seterr(crdtdb_db *db, int code, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
/* Drops database id in one write transaction, if check (may be NULL)
 * returns 0 for it inside that transaction (else its code, message set);
 * tomb: it leaves where its history ended (db.c, tomb_put). */
int crdtdb__drop(crdtdb_env *env, const char *id,
                 int (*check)(void *ctx, crdtdb_env *env, MDB_txn *mt, uint32_t num), void *ctx,
                 int tomb);
/* Validates a database id, collection name or record id (1..255 bytes of
 * UTF-8; control characters refused when strict).  0 or CRDTDB_EBADID. */
int crdtdb__id_check(const char *s, int strict);
/* Collection number of `name`, or CRDTDB_ENOCOLL with the message set. */
int crdtdb__db_coll(crdtdb_db *db, const char *name);

/* txn.c */
/* Gets the transaction for a call: `txn` itself (checked to belong to db and
 * to be writable if `write`) or a new one that *own marks for the caller to
 * finish with crdtdb__txn_end.  Error message set on db. */
int crdtdb__txn_get(crdtdb_db *db, crdtdb_txn *txn, int write,
                    crdtdb_txn **out, int *own);
/* In *ro, whether the copy carries the durable read-only mark
 * (crdtdb_db_mark_readonly) as t sees it; read once per txn.  0, or an
 * LMDB code with the message set on t's db. */
int crdtdb__txn_readonly(crdtdb_txn *t, int *ro);
/* Ends an owned txn: commits if rc == 0, else aborts.  Marks a borrowed
 * write txn failed if rc != 0.  Returns the final code. */
int crdtdb__txn_end(crdtdb_txn *t, int own, int rc);
/* Fails a write batch with rc (the first failure wins; read txns and rc 0
 * are left alone), keeping the message for crdtdb_txn_commit to return. */
void crdtdb__txn_fail(crdtdb_txn *t, int rc);
uint64_t crdtdb__txn_tick(crdtdb_txn *t);
int crdtdb__seq_read(crdtdb_env *env, MDB_txn *mt, uint32_t num, uint64_t *seq);

/* peers.c */
/* Peer number of replica id `key`, created if `create`; 0 if unknown. */
int crdtdb__peer_num(crdtdb_env *env, MDB_txn *mt, const uint8_t *key,
                     int create, uint32_t *num);
/* What we know of one peer for one database.  fp: the last points of its
 * history fingerprint we received, to catch a second history under the
 * same id (docs/protocol.md). */
#define CRDTDB__FP_RING 8
typedef struct crdtdb__fp {
    uint64_t seq;
    uint8_t hash[16];
} crdtdb__fp;
typedef struct crdtdb__marks {
    uint64_t received, acked;
    /* stability (crdtdb_db_peer_ack_at): `stable` is an acked value whose
     * peer-side sequence we have received; pend_* the first ack pair still
     * waiting for that (pend_mine UINT64_MAX: none) */
    uint64_t stable, pend_acked, pend_mine;
    uint64_t seen_ms;
    unsigned flags;
    unsigned nfp;
    crdtdb__fp fp[CRDTDB__FP_RING];
} crdtdb__marks;
int crdtdb__marks_get(crdtdb_db *db, MDB_txn *mt, const uint8_t *key,
                      crdtdb__marks *m, int *found);
int crdtdb__marks_put(crdtdb_db *db, MDB_txn *mt, const uint8_t *key,
                      const crdtdb__marks *m);
/* Received moved: promotes a pending ack pair it now covers, and notes
 * the peer was heard from at now_ms. */
void crdtdb__marks_heard(crdtdb__marks *m, uint64_t now_ms);
/* Sets flag on peer in its own transaction (after a refused delta). */
int crdtdb__peer_flag(crdtdb_db *db, const uint8_t *peer, unsigned flag);

/* export.h: the exporter; share.c: the shared-delta cache */
typedef struct crdtdb__shared crdtdb__shared;
void crdtdb__shared_free(struct crdtdb__shared *sh);

/* chain.c: the history fingerprint */
#define CRDTDB__CHAIN_WINDOW 65536u
/* Adds one newly numbered register to the txn's digest. */
void crdtdb__chain_note(crdtdb_txn *t, uint64_t seq, uint16_t coll, const char *id,
                        size_t idlen, const uint8_t *path, size_t plen, uint64_t hlc,
                        const uint8_t *origin, uint8_t kind);
/* At commit: extends the fingerprint with the txn's digest. */
int crdtdb__chain_commit(crdtdb_txn *t);
/* The fingerprint point at the largest commit boundary <= seq (found = 0 if
 * none is kept).  *hash borrows the txn's memory. */
int crdtdb__chain_at(crdtdb_db *db, MDB_txn *mt, uint64_t seq, uint64_t *at,
                     const uint8_t **hash, int *found);

/* observe.c */
int crdtdb__event_add(crdtdb_txn *t, int type, uint16_t coll, const char *id,
                      size_t idlen, const uint8_t *val, size_t len);
/* The last event is a REMOVE of (coll, id) and an ADD of it was recorded
 * at or after event `from`: the record showed only inside this
 * transaction, so both go (observers see no record that never was). */
void crdtdb__events_cancel(crdtdb_txn *t, uint32_t from, uint16_t coll, const char *id);
/* Records events for changes committed by others in (db->seen_seq, upto],
 * read through mt; the caller moves db->seen_seq once they are delivered
 * (a write txn at commit, so an abort loses none).  0 or an error code. */
int crdtdb__events_from_log(crdtdb_db *db, crdtdb_txn *t, MDB_txn *mt,
                            uint64_t upto);
/* moved: the commit (or poll) numbered registers; observers that asked
 * for every commit (crdtdb_observer_commits) hear of it even when no
 * rendering changed. */
void crdtdb__events_dispatch(crdtdb_db *db, crdtdb_txn *t, int moved);
void crdtdb__observers_free(crdtdb_db *db);

/* keys (big-endian integers: crdtdb__put_u32 and kin, crdt/buf.h) */
/* A dbinfo key: database number | tag (the layout above).  The key is k's
 * 5 bytes. */
static inline MDB_val crdtdb__dbinfo_key(uint8_t k[5], uint32_t num, char tag)
{
    crdtdb__put_u32(k, num);
    k[4] = (uint8_t)tag;
    MDB_val v = {5, k};
    return v;
}
/* Record key: number | collection | id.  Returns its length. */
static inline size_t crdtdb__reckey(uint8_t *k, uint32_t num, uint16_t coll,
                                    const char *id, size_t idlen)
{
    crdtdb__put_u32(k, num);
    k[4] = (uint8_t)(coll >> 8);
    k[5] = (uint8_t)coll;
    for (size_t i = 0; i < idlen; i++)
        k[6 + i] = (uint8_t)id[i];
    return 6 + idlen;
}

#endif
