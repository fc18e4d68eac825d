/*
 * The change log: one entry per run of registers a record's store numbered
 * together, keyed by the run's first local sequence (layout in internal.h,
 * "changes").  Written by the record slot (slot.c), read by the exporter,
 * observers, purges and collection: the format lives here only.
 *
 * Two entry formats live side by side:
 *   - a register entry (written before runs, and still read): one register,
 *     named by its path: u32 source | u16 collection | u8 id length (1..255)
 *     | id | path (empty: the record base).  A run of length 1.
 *   - a run entry: u32 source | u16 collection | u8 0 | u8 id length | id
 *     | varint n: the registers of record (collection, id) numbered
 *     [seq, seq + n), all from source.  The zero id length marks it (ids
 *     are never empty).  No paths: the record's blob holds every
 *     register's sequence and path; the registers of the run still live
 *     are those of the record whose sequence falls in the range.
 * An entry goes when no live register of its record is numbered inside it.
 */
#ifndef CRDTDB_STORAGE_LOG_H
#define CRDTDB_STORAGE_LOG_H
#include <string.h>

#include "storage/internal.h"

/* One register, as the walk yields it.  id and path borrow the
 * transaction's pages (id the log's, path the log's or the record's): valid
 * for a read snapshot, or in a write txn until its next write. */
typedef struct crdtdb__log_entry {
    uint64_t seq;
    uint32_t src;          /* the peer it came from (CRDTDB__SRC_LOCAL: here) */
    uint16_t coll;
    const uint8_t *id;
    size_t idlen;
    const uint8_t *path;   /* the register's path; plen 0: the record base */
    size_t plen;
    /* a run's register: its record as the walk decoded it (borrowing the
     * record's pages, like path), until the next crdtdb__log_next; NULL
     * for a register entry */
    const crdtdb__record *rec;
    uint64_t rec_max_seq; /* with rec: its newest register's sequence */
} crdtdb__log_entry;

/* One stored entry, parsed: registers [seq, seq + n) of (coll, id).  A
 * register entry has n 1 and names its register by path (is_reg). */
typedef struct crdtdb__log_run {
    uint64_t seq, n;
    uint32_t src;
    uint16_t coll;
    int is_reg;
    const uint8_t *id;
    size_t idlen;
    const uint8_t *path;   /* register entries only */
    size_t plen;
} crdtdb__log_run;

#define CRDTDB__CHG_RUN_MAX (CRDTDB__CHG_HEAD + 1 + 255 + 10) /* a run entry's largest value */

/* Parses entry (k, v) of the log.  0 or CRDTDB_ECORRUPT. */
int crdtdb__log_parse(const MDB_val *k, const MDB_val *v, crdtdb__log_run *out);

/* An entry's key: database number | sequence. */
static inline MDB_val crdtdb__log_key(uint8_t k[CRDTDB__CHGKEY_LEN], uint32_t num, uint64_t seq)
{
    crdtdb__put_u32(k, num);
    crdtdb__put_u64(k + 4, seq);
    MDB_val v = {CRDTDB__CHGKEY_LEN, k};
    return v;
}

/* Logs registers [seq, seq + n) of record (coll, id) of t's database as
 * from src: one run entry.  0 or an LMDB code (the caller words the
 * message). */
int crdtdb__log_put_run(crdtdb_txn *t, uint64_t seq, uint64_t n, uint32_t src, uint16_t coll,
                        const char *id, size_t idlen);

/* A record's register, by sequence: x is its leaf index, UINT32_MAX the
 * base. */
typedef struct crdtdb__log_reg {
    uint64_t seq;
    uint32_t x;
} crdtdb__log_reg;

/* r's registers sorted by sequence into *regs (n of them; the array grows
 * as crdtdb__array_grow does, *cap its room).  0 or CRDTDB_ENOMEM. */
int crdtdb__log_regs(const crdtdb__record *r, crdtdb__log_reg **regs, uint32_t *n,
                     uint32_t *cap);

/* Register seq of a record left the record: deletes the entry holding it,
 * unless a register still in the record (r: the record as it is stored;
 * NULL: the record is gone) is numbered inside that entry.  live, when not
 * NULL, is r's registers by sequence (crdtdb__log_regs, nlive of them), to
 * search instead of r.  No entry holding seq is fine.  0 or an LMDB code
 * (MDB_CORRUPTED: an entry does not parse). */
int crdtdb__log_drop(crdtdb_txn *t, uint64_t seq, const crdtdb__record *r,
                     const crdtdb__log_reg *live, size_t nlive);

/* In write txn t, the source of the entry holding register seq, in *src;
 * *found 0 when no entry holds it.  0 or a CRDTDB_E* code. */
int crdtdb__log_src(crdtdb_txn *t, uint64_t seq, uint32_t *src, int *found);

/* A walk over one database's registers after a sequence, in sequence
 * order, runs expanded through their records.  The caller owns it; close
 * it before mt ends, and write nothing to the database while it is open
 * (it keeps records decoded from one entry to the next).  Open it zeroed
 * or closed: crdtdb__log_open does not free what it held. */
#define CRDTDB__LOG_CACHE_SLOTS 4096u         /* records a walk keeps decoded */
#define CRDTDB__LOG_CACHE_REGS ((size_t)1 << 18) /* and registers */
typedef struct crdtdb__log_iter {
    MDB_cursor *cur;
    MDB_txn *mt;
    crdtdb_env *env;
    /* the packs records were read from (recs.h), kept until close: what
     * was decoded from them may be borrowed for the whole walk, as from
     * LMDB's pages */
    struct crdtdb__held *held;
    const crdtdb__origin_table *ot; /* the handle's, for the records' origins */
    uint32_t num;
    uint64_t after;
    int started;
    /* the run being expanded, and the records of the runs met so far,
     * decoded, with their registers by sequence (x: leaf index,
     * UINT32_MAX: the base), found by key through `index` (open
     * addressing, slot number + 1): a record written field by field in
     * many stores has many runs, however they interleave with other
     * records', and one decode per run was quadratic.  Bounded by
     * CRDTDB__LOG_CACHE_SLOTS records and CRDTDB__LOG_CACHE_REGS
     * registers: past either, the next miss empties it and frees what
     * the records held (so at most ~64 B a register, 16 MiB, is kept).
     * More records than that taking turns decode each run again.  The
     * slots move as the array grows: e->rec lives until the next step.
     * The run's registers left to yield are slot[at].regs[ipend..npend). */
    crdtdb__log_run run;
    struct crdtdb__log_slot {
        crdtdb__record rec;
        uint8_t key[CRDTDB__RECKEY_MAX];
        size_t keylen;
        crdtdb__log_reg *regs;
        uint32_t nregs, regs_cap;
    } *slot;
    uint32_t nslot, slot_cap; /* in use; allocated (kept for reuse) */
    uint32_t *index, index_cap;
    size_t cached_regs;
    uint32_t max_slots;  /* the bounds (log_open: the defaults; tests shrink them) */
    size_t max_regs;
    size_t decodes; /* records decoded by this walk (tests) */
    uint32_t at, ipend, npend;
    /* after ECORRUPT from a run's record: which change named it, and
     * CRDTDB_ENOTFOUND (missing) or its decode error (unreadable) */
    uint64_t bad_seq;
    int bad_rec;
} crdtdb__log_iter;
/* 0 or a CRDTDB_E* code. */
int crdtdb__log_open(crdtdb_db *db, MDB_txn *mt, uint64_t after, crdtdb__log_iter *it);

/* The next register: 0 with *found (0: the log ends), or an error:
 * ECORRUPT for a malformed entry or a run whose record is missing or
 * unreadable (then bad_rec says which), ENOMEM, else the LMDB failure's
 * code.  No message set. */
int crdtdb__log_next(crdtdb__log_iter *it, crdtdb__log_entry *e, int *found);

/* Accepts an iterator never opened (zeroed). */
void crdtdb__log_close(crdtdb__log_iter *it);

#endif
