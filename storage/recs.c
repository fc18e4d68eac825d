/*
 * Where records are kept (recs.h): the loose table first, then the pack
 * whose key range would hold the record.  A pack decompressed is a run of
 * entries in key order, each: u8 key length | record key | u16 blob length
 * | blob; every key begins with the pack key's six bytes (database number
 * and collection).  The whole key is kept, not the id alone, so a walk's
 * keys point into the pack as an LMDB cursor's point into its pages.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

#include "storage/recs.h"

struct crdtdb__held {
    struct crdtdb__held *next;
    uint8_t key[CRDTDB__RECKEY_MAX]; /* the pack's */
    size_t keylen, len;
    uint8_t data[]; /* decompressed */
};

void crdtdb__held_trim(crdtdb__held **held, unsigned keep)
{
    for (; *held && keep; keep--)
        held = &(*held)->next;
    crdtdb__held_free(held);
}

void crdtdb__held_free(crdtdb__held **held)
{
    while (*held) {
        crdtdb__held *h = *held;
        *held = h->next;
        free(h);
    }
}

/* The decompressed size of pack value pv: 0 or MDB_CORRUPTED. */
static int pack_size(const MDB_val *pv, size_t *n)
{
    const uint8_t *p = pv->mv_data;
    if (pv->mv_size < 2 || p[0] != CRDTDB__PACK_FORMAT)
        return MDB_CORRUPTED;
    unsigned long long sz = ZSTD_getFrameContentSize(p + 1, pv->mv_size - 1);
    if (sz == ZSTD_CONTENTSIZE_ERROR || sz == ZSTD_CONTENTSIZE_UNKNOWN || sz < 4 ||
        sz > CRDTDB__PACK_RAW_MAX)
        return MDB_CORRUPTED;
    *n = (size_t)sz;
    return 0;
}

/* Decompresses pack value pv into out (n bytes, from pack_size). */
static int pack_inflate(const MDB_val *pv, uint8_t *out, size_t n)
{
    size_t got = ZSTD_decompress(out, n, (const uint8_t *)pv->mv_data + 1, pv->mv_size - 1);
    return ZSTD_isError(got) || got != n ? MDB_CORRUPTED : 0;
}

/* The entry of pack buffer b (len bytes) at *off: its key and blob, *off
 * moved past it; the key must begin with the pack key's six bytes, pfx.
 * 0 or MDB_CORRUPTED. */
static int entry_at(const uint8_t *b, size_t len, size_t *off, const uint8_t *pfx, MDB_val *k,
                    MDB_val *v)
{
    size_t o = *off;
    if (o >= len || b[o] < 7 || len - o - 1 < (size_t)b[o] + 2 || memcmp(b + o + 1, pfx, 6) != 0)
        return MDB_CORRUPTED;
    k->mv_size = b[o];
    k->mv_data = (void *)(b + o + 1);
    o += 1 + k->mv_size;
    size_t n = (size_t)b[o] << 8 | b[o + 1];
    o += 2;
    if (n == 0 || len - o < n)
        return MDB_CORRUPTED;
    v->mv_size = n;
    v->mv_data = (void *)(b + o);
    *off = o + n;
    return 0;
}

/* LMDB's default order of keys: bytes, then the shorter first. */
static int key_cmp(const MDB_val *a, const MDB_val *b)
{
    size_t n = a->mv_size < b->mv_size ? a->mv_size : b->mv_size;
    int c = memcmp(a->mv_data, b->mv_data, n);
    return c ? c : (a->mv_size > b->mv_size) - (a->mv_size < b->mv_size);
}

int crdtdb__packs_empty(crdtdb_env *env, MDB_txn *mt, int *empty)
{
    MDB_stat ms;
    if (env->no_packs) { /* unless a newer build took the env on since */
        MDB_val k = {7, (void *)"version"}, v;
        *empty = 1;
        int mrc = mdb_get(mt, env->dbi_meta, &k, &v);
        return mrc ? mrc : v.mv_size == 4 && crdtdb__get_u32(v.mv_data) < 5 ? 0
                                                                         : MDB_VERSION_MISMATCH;
    }
    int mrc = mdb_stat(mt, env->dbi_packs, &ms);
    *empty = !mrc && ms.ms_entries == 0;
    return mrc;
}

/* The pack that would hold record key k (its key into pk, its value into
 * pv): 0, or MDB_NOTFOUND when no pack's range can. */
static int pack_find(crdtdb_env *env, MDB_txn *mt, const MDB_val *k, MDB_val *pk, MDB_val *pv)
{
    int empty, mrc = crdtdb__packs_empty(env, mt, &empty);
    if (mrc || empty || k->mv_size < 7)
        return mrc ? mrc : MDB_NOTFOUND;
    MDB_cursor *c;
    if ((mrc = mdb_cursor_open(mt, env->dbi_packs, &c)))
        return mrc;
    *pk = *k;
    mrc = mdb_cursor_get(c, pk, pv, MDB_SET_RANGE);
    mdb_cursor_close(c);
    if (!mrc && (pk->mv_size < 7 || memcmp(pk->mv_data, k->mv_data, 6) != 0))
        mrc = MDB_NOTFOUND; /* the next collection's */
    return mrc;
}

/* Finds record key k in pack h: 0 with v, or MDB_NOTFOUND. */
static int pack_lookup(const crdtdb__held *h, const MDB_val *k, MDB_val *v)
{
    for (size_t off = 0; off < h->len;) {
        MDB_val ek;
        int rc = entry_at(h->data, h->len, &off, h->key, &ek, v);
        if (rc)
            return rc;
        if (ek.mv_size == k->mv_size && memcmp(ek.mv_data, k->mv_data, k->mv_size) == 0)
            return 0;
    }
    return MDB_NOTFOUND;
}

/* Whether pack h is as collection writes it: its records' keys valid
 * (ids without NUL), in strictly increasing order, the last the pack's
 * own key.  Checked once, as it is decompressed: readers rely on it.
 * 0 or MDB_CORRUPTED. */
static int pack_check(const crdtdb__held *h)
{
    MDB_val k, v, prev = {0, NULL};
    for (size_t off = 0; off < h->len;) {
        int rc = entry_at(h->data, h->len, &off, h->key, &k, &v);
        if (rc)
            return rc;
        if (memchr((const uint8_t *)k.mv_data + 6, 0, k.mv_size - 6) ||
            (prev.mv_data && key_cmp(&prev, &k) >= 0))
            return MDB_CORRUPTED;
        prev = k;
    }
    return prev.mv_data && prev.mv_size == h->keylen &&
                   memcmp(prev.mv_data, h->key, h->keylen) == 0
               ? 0
               : MDB_CORRUPTED;
}

/* The node of *held decompressed from pack key pk, taken off the list;
 * NULL when none is. */
static crdtdb__held *held_take(crdtdb__held **held, const MDB_val *pk)
{
    for (; *held; held = &(*held)->next) {
        crdtdb__held *h = *held;
        if (h->keylen == pk->mv_size && memcmp(h->key, pk->mv_data, pk->mv_size) == 0) {
            *held = h->next;
            return h;
        }
    }
    return NULL;
}

/* Pack (pk, pv) decompressed and checked into a new node *out. */
static int held_inflate(const MDB_val *pk, const MDB_val *pv, crdtdb__held **out)
{
    size_t n;
    int mrc = pk->mv_size < 7 || pk->mv_size > CRDTDB__RECKEY_MAX ? MDB_CORRUPTED
                                                                   : pack_size(pv, &n);
    if (mrc)
        return mrc;
    crdtdb__held *h = malloc(sizeof *h + n);
    if (!h)
        return ENOMEM;
    memcpy(h->key, pk->mv_data, pk->mv_size);
    h->keylen = pk->mv_size;
    h->len = n;
    h->next = NULL;
    if ((mrc = pack_inflate(pv, h->data, n)) || (mrc = pack_check(h))) {
        free(h);
        return mrc;
    }
    *out = h;
    return 0;
}

int crdtdb__recs_get(crdtdb_env *env, MDB_txn *mt, crdtdb__held **held, const MDB_val *k,
                     MDB_val *v)
{
    MDB_val key = *k;
    int mrc = mdb_get(mt, env->dbi_records, &key, v);
    return mrc == MDB_NOTFOUND ? crdtdb__recs_get_packed(env, mt, held, k, v) : mrc;
}

int crdtdb__recs_get_packed(crdtdb_env *env, MDB_txn *mt, crdtdb__held **held,
                            const MDB_val *k, MDB_val *v)
{
    MDB_val pk, pv;
    int mrc = pack_find(env, mt, k, &pk, &pv);
    if (mrc)
        return mrc;
    crdtdb__held *h = held_take(held, &pk); /* to the front: the next get is likely its */
    if (!h && (mrc = held_inflate(&pk, &pv, &h)))
        return mrc;
    h->next = *held;
    *held = h;
    return pack_lookup(h, k, v);
}

int crdtdb__recs_unpack(crdtdb_env *env, MDB_txn *mt, crdtdb__held **held, const MDB_val *k,
                        int *unpacked)
{
    MDB_val pk, pv, ek, v;
    *unpacked = 0;
    int mrc = pack_find(env, mt, k, &pk, &pv);
    if (mrc)
        return mrc == MDB_NOTFOUND ? 0 : mrc;
    /* the load's copy, if it is there: the pack goes, and the copy with it */
    crdtdb__held *h = held_take(held, &pk);
    if (!h && (mrc = held_inflate(&pk, &pv, &h)))
        return mrc;
    if ((mrc = pack_lookup(h, k, &v))) {
        free(h);
        return mrc == MDB_NOTFOUND ? 0 : mrc; /* in the range, not in the pack */
    }
    for (size_t off = 0; !mrc && off < h->len;)
        if (!(mrc = entry_at(h->data, h->len, &off, h->key, &ek, &v)) &&
            (mrc = mdb_put(mt, env->dbi_records, &ek, &v, MDB_NOOVERWRITE)) == MDB_KEYEXIST)
            mrc = MDB_CORRUPTED; /* loose and packed both */
    pk.mv_size = h->keylen; /* pk's page may have moved with the puts */
    pk.mv_data = h->key;
    if (!mrc)
        mrc = mdb_del(mt, env->dbi_packs, &pk, NULL);
    free(h);
    *unpacked = !mrc;
    return mrc;
}

/* ------------------------------------------------------------- the walk */

static int has_prefix(const crdtdb__rwalk *w, const MDB_val *k)
{
    return k->mv_size >= w->plen && memcmp(k->mv_data, w->prefix, w->plen) == 0;
}

/* The loose cursor's record, after a get that returned mrc. */
static int loose_at(crdtdb__rwalk *w, int mrc)
{
    w->lok = !mrc && has_prefix(w, &w->lk);
    return mrc == MDB_NOTFOUND ? 0 : mrc;
}

/* The pack walk's next entry, from w->pnext: w->pok 0 at the pack's end. */
static int pack_entry(crdtdb__rwalk *w)
{
    w->pok = 0;
    if (!w->cur || w->pnext >= w->cur->len)
        return 0;
    int mrc = entry_at(w->cur->data, w->cur->len, &w->pnext, w->cur->key, &w->pk, &w->pv);
    w->pok = !mrc;
    return mrc;
}

/* Lets the pack walked go: kept for its borrowers, or freed. */
static void pack_leave(crdtdb__rwalk *w)
{
    if (w->cur && w->keep) {
        w->cur->next = *w->keep;
        *w->keep = w->cur;
    } else {
        free(w->cur);
    }
    w->cur = NULL;
}

/* Loads the pack the packs cursor got (mrc), if it is under the prefix. */
static int pack_load(crdtdb__rwalk *w, int mrc, MDB_val *k, MDB_val *v)
{
    w->pok = 0;
    pack_leave(w);
    if (mrc)
        return mrc == MDB_NOTFOUND ? 0 : mrc;
    if (!has_prefix(w, k))
        return 0;
    if ((mrc = held_inflate(k, v, &w->cur)))
        return mrc;
    w->pnext = 0;
    return pack_entry(w);
}

/* Steps the packed side on: the next entry, else the next pack's first. */
static int pack_step(crdtdb__rwalk *w)
{
    int mrc = pack_entry(w);
    if (mrc || w->pok)
        return mrc;
    MDB_val k, v;
    return pack_load(w, mdb_cursor_get(w->pc, &k, &v, MDB_NEXT), &k, &v);
}

/* Makes the smaller of the two sides' records the current one (its key
 * copied: a write in the walk's own transaction may move what k points
 * to).  A key on both sides, which a seek after such a write can meet, is
 * the loose record's. */
static int pick(crdtdb__rwalk *w)
{
    int c = 0, mrc;
    while (w->lok && w->pok && (c = key_cmp(&w->lk, &w->pk)) == 0)
        if ((mrc = pack_step(w)))
            return mrc;
    if (!w->lok && !w->pok)
        return MDB_NOTFOUND;
    if (w->lok && w->lk.mv_size > CRDTDB__RECKEY_MAX)
        return MDB_CORRUPTED; /* no record's key: LMDB allows longer ones */
    w->packed = !w->lok || (w->pok && c > 0);
    w->pack_last = w->packed && w->pnext >= w->cur->len;
    w->k = w->packed ? w->pk : w->lk;
    w->v = w->packed ? w->pv : w->lv;
    memcpy(w->at, w->k.mv_data, w->atlen = w->k.mv_size);
    return 0;
}

/* Both sides on the first record at `from` or past it (strictly past:
 * past).  from must not point into the pack being walked. */
static int seek(crdtdb__rwalk *w, const MDB_val *from, int past)
{
    w->lk = *from;
    int mrc = mdb_cursor_get(w->lc, &w->lk, &w->lv, MDB_SET_RANGE);
    if (!mrc && past && key_cmp(&w->lk, from) == 0)
        mrc = mdb_cursor_get(w->lc, &w->lk, &w->lv, MDB_NEXT);
    if ((mrc = loose_at(w, mrc)) || !w->pc) {
        w->pok = 0;
        return mrc;
    }
    MDB_val k = *from, v;
    mrc = pack_load(w, mdb_cursor_get(w->pc, &k, &v, MDB_SET_RANGE), &k, &v);
    /* the pack's first records may be before it */
    for (int c; !mrc && w->pok && ((c = key_cmp(&w->pk, from)) < 0 || (past && c == 0));)
        mrc = pack_step(w);
    return mrc;
}

/* How many loose records and packs the environment holds: what a write
 * in the walk's own transaction changes, but for an update in place. */
static int counts(const crdtdb__rwalk *w, size_t *nloose, size_t *npacks)
{
    MDB_stat ms;
    int mrc = mdb_stat(w->mt, w->records, &ms);
    *nloose = ms.ms_entries;
    *npacks = 0;
    if (!mrc && w->pc && !(mrc = mdb_stat(w->mt, w->packs, &ms)))
        *npacks = ms.ms_entries;
    return mrc;
}

int crdtdb__rwalk_open(crdtdb__rwalk *w, crdtdb_env *env, MDB_txn *mt, const MDB_val *from,
                       size_t plen, crdtdb__held **keep)
{
    memset(w, 0, sizeof *w);
    w->mt = mt;
    w->keep = keep;
    w->records = env->dbi_records;
    w->packs = env->dbi_packs;
    w->plen = plen < from->mv_size ? plen : from->mv_size;
    memcpy(w->prefix, from->mv_data, w->plen);
    int empty, mrc = mdb_cursor_open(mt, env->dbi_records, &w->lc);
    if (!mrc && !(mrc = crdtdb__packs_empty(env, mt, &empty)) && !empty)
        mrc = mdb_cursor_open(mt, env->dbi_packs, &w->pc);
    if (!mrc)
        mrc = counts(w, &w->nloose, &w->npacks);
    if (!mrc)
        mrc = seek(w, from, 0);
    return mrc ? mrc : pick(w);
}

int crdtdb__rwalk_next(crdtdb__rwalk *w)
{
    size_t nl, np;
    int mrc = counts(w, &nl, &np);
    if (mrc)
        return mrc;
    if (nl != w->nloose || np != w->npacks) {
        /* the walk's own transaction added, removed or unpacked records
         * (a query's callback): the walk goes on afresh past where it is */
        w->nloose = nl;
        w->npacks = np;
        MDB_val at = {w->atlen, w->at};
        mrc = seek(w, &at, 1);
    } else if (w->packed) {
        mrc = pack_step(w);
        /* the loose side waits on its record, whose page an update in
         * place may have moved */
        if (!mrc && w->lok)
            mrc = loose_at(w, mdb_cursor_get(w->lc, &w->lk, &w->lv, MDB_GET_CURRENT));
    } else {
        mrc = loose_at(w, mdb_cursor_get(w->lc, &w->lk, &w->lv, MDB_NEXT));
    }
    return mrc ? mrc : pick(w);
}

void crdtdb__rwalk_close(crdtdb__rwalk *w)
{
    if (w->lc)
        mdb_cursor_close(w->lc);
    if (w->pc)
        mdb_cursor_close(w->pc);
    pack_leave(w);
    memset(w, 0, sizeof *w);
}

int crdtdb__recs_each(crdtdb_db *db, MDB_txn *mt,
                      int (*each)(void *ctx, const MDB_val *k, const MDB_val *v), void *ctx)
{
    uint8_t pre[4];
    crdtdb__put_u32(pre, db->num);
    MDB_val from = {sizeof pre, pre};
    crdtdb__rwalk w;
    int rc = 0, mrc = crdtdb__rwalk_open(&w, db->env, mt, &from, sizeof pre, NULL);
    while (!mrc && !(rc = each(ctx, &w.k, &w.v)))
        mrc = crdtdb__rwalk_next(&w);
    crdtdb__rwalk_close(&w);
    if (rc)
        return rc < 0 ? rc : 0;
    return mrc == MDB_NOTFOUND ? 0 : crdtdb__mdb_err(mrc);
}
