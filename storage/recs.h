/*
 * Where records are kept (recs.c, pack.c).  A record is either loose, one
 * LMDB value in "records", or packed: collection (pack.c) compresses runs
 * of cold records of one collection together with zstd into one value of
 * "packs", keyed by the last record key it holds.  A record is in one
 * place, never both, and packs' key ranges never overlap, so the pack that
 * may hold key K is the first whose key is at or past K.  A write unpacks
 * a record's whole pack before it changes the record (slot.c), so a pack
 * only ever holds what collection put in it.
 *
 * Every reader of the records goes through here: one record by key
 * (crdtdb__recs_get), or a walk in key order over both places
 * (crdtdb__rwalk).
 */
#ifndef CRDTDB_STORAGE_RECS_H
#define CRDTDB_STORAGE_RECS_H
#include "storage/internal.h"

/* What a pack may hold: a record blob over PACK_BLOB_MAX stays loose, and
 * a pack that would decompress past PACK_RAW_MAX is refused as corrupt. */
#define CRDTDB__PACK_BLOB_MAX 2048u
#define CRDTDB__PACK_RAW_MAX (256u * 1024u)
#define CRDTDB__PACK_FORMAT 1u /* a pack value's first byte; the zstd frame follows */

/* Packs decompressed for a reader, kept while what it decoded borrows
 * them.  The reader owns the list: start it NULL, free it with
 * crdtdb__held_free when nothing borrows from it any more. */
typedef struct crdtdb__held crdtdb__held;
void crdtdb__held_free(crdtdb__held **held);
/* Frees all but the first `keep` of them (the most recently read). */
void crdtdb__held_trim(crdtdb__held **held, unsigned keep);

/* Whether the environment holds no pack at all (then a miss costs no
 * cursor).  A version 4 env opened read-only has no packs table: 0 while
 * its format is still 4, MDB_VERSION_MISMATCH once a newer writer marked
 * it 5 (it may hold packs this handle cannot see). */
int crdtdb__packs_empty(crdtdb_env *env, MDB_txn *mt, int *empty);

/* Record key k (crdtdb__reckey), loose or packed, into v.  v borrows:
 * LMDB's page (until mt writes to the records or ends) or, for a packed
 * record, a pack decompressed into *held (until crdtdb__held_free; a pack
 * already there is not decompressed again).  Returns 0, MDB_NOTFOUND,
 * MDB_CORRUPTED (a pack unreadable), ENOMEM or another LMDB code. */
int crdtdb__recs_get(crdtdb_env *env, MDB_txn *mt, crdtdb__held **held, const MDB_val *k,
                     MDB_val *v);

/* crdtdb__recs_get of a key not loose: only its pack is looked in. */
int crdtdb__recs_get_packed(crdtdb_env *env, MDB_txn *mt, crdtdb__held **held,
                            const MDB_val *k, MDB_val *v);

/* If record key k is packed, unpacks its whole pack in write txn mt: every
 * record in it becomes loose and the pack goes (*unpacked 1).  The pack
 * decompressed is taken from *held when it is there (a slot load leaves
 * it there) and freed, else read again.  The same codes
 * as crdtdb__recs_get; MDB_CORRUPTED too when a record of the pack is
 * also loose. */
int crdtdb__recs_unpack(crdtdb_env *env, MDB_txn *mt, crdtdb__held **held, const MDB_val *k,
                        int *unpacked);

/* A walk in key order over the records, loose and packed, whose keys begin
 * with a prefix.  The caller owns it; open it, read k and v while
 * crdtdb__rwalk_open or _next returned 0, close it (also after a failed
 * open).  k and v borrow: a loose record's LMDB page, or the pack being
 * walked, until the walk moves past that pack, or, when opened with a
 * `keep` list, until the caller frees that list (crdtdb__held_free), which
 * takes each pack the walk leaves; the walk writes nothing.  Writes in
 * the walk's own transaction between steps (a query's callback) are seen
 * as an LMDB cursor would see them: the walk goes on past the key it was
 * at, over the records as they are now.  It tells them by the tables'
 * entry counts, which every write the public calls can make in a
 * callback changes (an add, or an unpack) or leaves in place (an update
 * or a remove, which writes a tombstone); a call that added one loose
 * record and deleted another would need a sturdier sign. */
typedef struct crdtdb__rwalk {
    MDB_txn *mt;
    MDB_dbi records, packs;
    MDB_cursor *lc, *pc; /* the loose records; the packs (NULL: none) */
    uint8_t prefix[CRDTDB__RECKEY_MAX];
    size_t plen;
    int lok, pok;     /* a loose record, a packed one, is next in its place */
    MDB_val lk, lv;   /* the next loose record */
    crdtdb__held *cur, **keep; /* the pack being walked; where it goes after */
    size_t pnext;
    MDB_val pk, pv;   /* the next packed record */
    int packed;       /* k, v are a packed record's */
    int pack_last;    /* the last record of its pack (k is the pack's key) */
    MDB_val k, v;     /* the current record */
    uint8_t at[CRDTDB__RECKEY_MAX]; /* its key, copied */
    size_t atlen;
    size_t nloose, npacks; /* the tables' entries, to see the txn's own writes */
} crdtdb__rwalk;
/* Opens w on the first record at or past `from` whose key begins with
 * from's first plen bytes (4: a database's, 6: one collection's).  0 (on
 * a record), MDB_NOTFOUND (none), or an error as crdtdb__recs_get's. */
int crdtdb__rwalk_open(crdtdb__rwalk *w, crdtdb_env *env, MDB_txn *mt, const MDB_val *from,
                       size_t plen, crdtdb__held **keep);
/* Moves to the next record: 0, MDB_NOTFOUND at the end, or an error. */
int crdtdb__rwalk_next(crdtdb__rwalk *w);
void crdtdb__rwalk_close(crdtdb__rwalk *w);

/* crdtdb__db_each for the records (internal.h), loose and packed: each's
 * k and v valid during that call only.  0 or a CRDTDB_E* code. */
int crdtdb__recs_each(crdtdb_db *db, MDB_txn *mt,
                      int (*each)(void *ctx, const MDB_val *k, const MDB_val *v), void *ctx);

/* pack.c: packs db's cold records, in write txn t: the adds whose every
 * register is numbered at most `upto` (held by every peer in the horizon)
 * and whose blob is at most CRDTDB__PACK_BLOB_MAX.  Only where loose cold
 * records are: the packs around them are rewritten with them, and the
 * rest left as they are.  *packed: records newly packed.  0 or a
 * CRDTDB_E* code, message set. */
int crdtdb__recs_pack(crdtdb_txn *t, uint64_t upto, uint64_t *packed);

#endif
