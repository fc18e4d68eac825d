/*
 * One record as a set of last-writer-wins registers: a base register (the
 * latest add or remove of the record) and one register per field leaf,
 * addressed by encoded key path (path.h).  Stamps are (HLC, origin replica
 * key) and order totally.  The rules, written down in docs/crdt.md:
 *
 *   - a register only takes a write with a greater stamp than its own;
 *   - a leaf older than the base is dead (an add replaces the record, a
 *     remove hides it; a later add brings back only newer leaves);
 *   - a leaf older than a leaf at one of its ancestors is dead (writing a
 *     value at a path replaces the subtree under it);
 *   - a value leaf older than a live leaf below it reads as a map (the
 *     subtree was written later); the register keeps its value;
 *   - the record is visible iff its base is an add.
 *
 * Dead registers can never come back, so they are dropped; the sequence
 * numbers of dropped registers are collected in `dead` for the change log.
 *
 * Pure code: no I/O.  Pointers in leaves, origins and `visible` borrow
 * memory owned by the caller (a decoded blob, an input buffer), which must
 * outlive the record's use.
 */
#ifndef CRDTDB_CRDT_RECORD_H
#define CRDTDB_CRDT_RECORD_H
#include <stddef.h>
#include <stdint.h>

#include "crdt/keyidx.h"
#include "crdtdb.h"

enum { CRDTDB__BASE_NONE = 0, CRDTDB__BASE_ADD = 1, CRDTDB__BASE_REMOVE = 2 };
enum { CRDTDB__KIND_VALUE = 0, CRDTDB__KIND_MAP = 1 };

typedef struct crdtdb__leaf {
    const uint8_t *path;
    uint32_t path_len;
    uint8_t kind;      /* CRDTDB__KIND_* */
    uint32_t origin;   /* index into the record's origins */
    uint64_t hlc;
    uint64_t seq;      /* local change sequence; 0 = not yet numbered */
    const uint8_t *val; /* msgpack, for KIND_VALUE */
    uint32_t val_len;
} crdtdb__leaf;

typedef struct crdtdb__record {
    uint8_t base_kind;
    uint32_t base_origin;
    uint64_t base_hlc;
    uint64_t base_seq;
    const uint8_t **origins; /* 32-byte replica keys */
    uint32_t norigins, origins_cap;
    crdtdb__keyidx oidx; /* finds a key in origins (hkey: the owner's) */
    crdtdb__leaf *leaves; /* sorted by path */
    uint32_t nleaves, leaves_cap;
    const uint8_t *visible; /* stored rendering, valid after decode */
    size_t visible_len;
    /* the sequences that last changed the rendering and that last made the
     * record visible (0: not known, a version 1 blob), so a reader of the
     * change log tells Add from Update, and a change from none */
    uint64_t vis_seq, shown_seq;
    uint64_t *dead; /* seqs of dropped registers */
    uint32_t ndead, dead_cap;
} crdtdb__record;

/* Zeroes r; r owns only its arrays, freed by crdtdb__record_free. */
void crdtdb__record_init(crdtdb__record *r);
void crdtdb__record_free(crdtdb__record *r);
/* Empties r, keeping its arrays for reuse. */
void crdtdb__record_clear(crdtdb__record *r);

/*
 * How a blob names the replicas that wrote it.  Version 3 holds each
 * record's origins as their 32-byte keys; version 4 as numbers of a table
 * the storage keeps once per environment (a key costs a byte or two per
 * record, not 32).  The table is the caller's: key_of gives the key of
 * number num (>= 1), which must stay valid while the decoded record is
 * used, or NULL with *rc set (CRDTDB_ECORRUPT: no such number); num_of
 * numbers a key (borrowed), adding it if new: 0 or an error.
 */
typedef struct crdtdb__origin_table {
    const uint8_t *(*key_of)(void *ctx, uint32_t num, int *rc);
    int (*num_of)(void *ctx, const uint8_t *key, uint32_t *num);
    void *ctx;
} crdtdb__origin_table;

/* Parses a stored blob into r (cleared first).  Pointers borrow `blob`,
 * origins of a version 4 blob `ot`'s keys (ot may be NULL for older
 * blobs only: CRDTDB_EVERSION).  0, CRDTDB_ECORRUPT, CRDTDB_EVERSION,
 * CRDTDB_ENOMEM or what ot returned. */
int crdtdb__record_decode(crdtdb__record *r, const uint8_t *blob, size_t len,
                          const crdtdb__origin_table *ot);

/* Finds or adds origin `key` (borrowed, 32 bytes); sets *idx.  0 or ENOMEM. */
int crdtdb__record_origin(crdtdb__record *r, const uint8_t *key,
                          uint32_t *idx);

/* Compares stamps (ha, oa) and (hb, ob) of record r: <0, 0, >0. */
int crdtdb__record_stamp_cmp(const crdtdb__record *r, uint64_t ha,
                             uint32_t oa, uint64_t hb, uint32_t ob);

/* Merges a base write (add or remove).  1 if it won, 0 if it lost or was a
 * duplicate, CRDTDB_EFORGED if the same stamp already holds the other kind
 * (equivocation), or CRDTDB_ENOMEM. */
int crdtdb__record_put_base(crdtdb__record *r, uint8_t kind, uint64_t hlc,
                            uint32_t origin, uint64_t seq);

/* Merges one leaf write (copied; its pointers stay borrowed).  1 if stored,
 * 0 if it lost, was a duplicate or is dead, CRDTDB_EFORGED if the same path
 * and stamp already hold a different value (equivocation), or
 * CRDTDB_ENOMEM. */
int crdtdb__record_put_leaf(crdtdb__record *r, const crdtdb__leaf *in);

/* Merges n leaf writes as n calls of crdtdb__record_put_leaf would, in
 * O((nleaves + n) log n) where single puts may cost O(nleaves * n): a
 * delta's many fields for one record.  `in` is reordered.  *won counts the
 * writes stored.  0, CRDTDB_EFORGED (nothing is then to be stored) or
 * CRDTDB_ENOMEM. */
int crdtdb__record_put_many(crdtdb__record *r, crdtdb__leaf *in, uint32_t n, size_t *won);

/* Drops every register numbered 1..upto (the record as it was before
 * them is not restored: what remains is what came later); their sequences
 * go to `dead`.  0 or CRDTDB_ENOMEM. */
int crdtdb__record_drop_upto(crdtdb__record *r, uint64_t upto);

/* Index of the leaf at exactly `path`, or -1. */
long crdtdb__record_find(const crdtdb__record *r, const uint8_t *path,
                         size_t len);

/* 1 if the field at `path` currently reads as a map (a map leaf there or any
 * leaf below it). */
int crdtdb__record_is_map_at(const crdtdb__record *r, const uint8_t *path,
                             size_t len);

static inline int crdtdb__record_visible(const crdtdb__record *r)
{
    return r->base_kind == CRDTDB__BASE_ADD;
}

/* Renders the visible value (a msgpack map, keys sorted bytewise) into out,
 * replacing its contents.  Empty out if the record is not visible.
 * 0, CRDTDB_ENOMEM or CRDTDB_ECORRUPT. */
int crdtdb__record_render(const crdtdb__record *r, crdtdb_buf *out);
/* The same, and when val_off is not NULL (r->nleaves entries) where in out
 * each leaf's value was written (UINT32_MAX: not rendered), for
 * crdtdb__record_encode. */
int crdtdb__record_render_at(const crdtdb__record *r, crdtdb_buf *out, uint32_t *val_off);

/* Serializes r with its rendering `visible` into out (replaced): version 4,
 * origins numbered through `ot`, or version 3 with their keys when ot is
 * NULL.  Only origins still referenced are written.  With val_off (what
 * crdtdb__record_render_at gave for this visible, or NULL), a version 4
 * blob holds the values the rendering holds once, as offsets into it.
 * 0, CRDTDB_ENOMEM or what ot returned. */
int crdtdb__record_encode(const crdtdb__record *r, const uint8_t *visible,
                          size_t visible_len, const uint32_t *val_off,
                          const crdtdb__origin_table *ot, crdtdb_buf *out);

/* The base kind (CRDTDB__BASE_*) of a blob, without a full decode.
 * 0 or CRDTDB_ECORRUPT / CRDTDB_EVERSION. */
int crdtdb__record_blob_base(const uint8_t *blob, size_t len, uint8_t *kind);

/* The stored rendering inside a blob, without a full decode (the read path).
 * 0 or CRDTDB_ECORRUPT / CRDTDB_EVERSION. */
int crdtdb__record_blob_visible(const uint8_t *blob, size_t len,
                                const uint8_t **visible, size_t *vlen);

#endif
