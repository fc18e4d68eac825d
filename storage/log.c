/* The change log (log.h): its key and entry formats, written, found and
 * walked in one place. */
#include <stdlib.h>
#include <string.h>

#include "crdt/array.h"
#include "storage/log.h"
#include "storage/recs.h"

int crdtdb__log_parse(const MDB_val *k, const MDB_val *v, crdtdb__log_run *out)
{
    const uint8_t *p = v->mv_data;
    if (k->mv_size != CRDTDB__CHGKEY_LEN || v->mv_size < CRDTDB__CHG_HEAD)
        return CRDTDB_ECORRUPT;
    out->seq = crdtdb__get_u64((const uint8_t *)k->mv_data + 4);
    out->src = crdtdb__get_u32(p);
    out->coll = (uint16_t)(p[4] << 8 | p[5]);
    size_t idlen = p[6];
    if (idlen) { /* a register entry */
        if (v->mv_size < CRDTDB__CHG_HEAD + idlen)
            return CRDTDB_ECORRUPT;
        out->is_reg = 1;
        out->n = 1;
        out->idlen = idlen;
        out->id = p + CRDTDB__CHG_HEAD;
        out->path = out->id + idlen;
        out->plen = v->mv_size - CRDTDB__CHG_HEAD - idlen;
        return 0;
    }
    /* a run: u8 id length, id, varint n */
    if (v->mv_size < CRDTDB__CHG_HEAD + 1 + 1 + 1 || p[7] == 0 ||
        v->mv_size < CRDTDB__CHG_HEAD + 1 + (size_t)p[7] + 1)
        return CRDTDB_ECORRUPT;
    out->is_reg = 0;
    out->idlen = p[7];
    out->id = p + CRDTDB__CHG_HEAD + 1;
    out->path = NULL;
    out->plen = 0;
    const uint8_t *q = out->id + out->idlen, *end = p + v->mv_size;
    uint64_t n = 0;
    int s = 0;
    for (;; s += 7) {
        if (q >= end || s > 63)
            return CRDTDB_ECORRUPT;
        uint8_t b = *q++;
        n |= (uint64_t)(b & 0x7f) << s;
        if (!(b & 0x80))
            break;
    }
    if (q != end || n == 0 || n > UINT64_MAX - out->seq)
        return CRDTDB_ECORRUPT;
    out->n = n;
    return 0;
}

int crdtdb__log_put_run(crdtdb_txn *t, uint64_t seq, uint64_t n, uint32_t src, uint16_t coll,
                        const char *id, size_t idlen)
{
    crdtdb_db *db = t->db;
    uint8_t k[CRDTDB__CHGKEY_LEN], o[CRDTDB__CHG_RUN_MAX];
    MDB_val key = crdtdb__log_key(k, db->num, seq);
    crdtdb__put_u32(o, src);
    o[4] = (uint8_t)(coll >> 8);
    o[5] = (uint8_t)coll;
    o[6] = 0; /* a run */
    o[7] = (uint8_t)idlen;
    memcpy(o + CRDTDB__CHG_HEAD + 1, id, idlen);
    uint8_t *q = o + CRDTDB__CHG_HEAD + 1 + idlen;
    while (n >= 0x80) {
        *q++ = (uint8_t)(n | 0x80);
        n >>= 7;
    }
    *q++ = (uint8_t)n;
    MDB_val val = {(size_t)(q - o), o};
    return mdb_put(t->mt, db->env->dbi_changes, &key, &val, 0);
}

/* Puts cur on the entry of database num holding register seq: 0 with
 * *found and the entry parsed into run, or an LMDB code (MDB_CORRUPTED: an
 * entry that does not parse).  The entry found may start before seq (a
 * run); stepping back may meet another record's run, or another
 * database's entry, that does not reach seq: not found. */
static int find_covering(MDB_cursor *cur, uint32_t num, uint64_t seq, crdtdb__log_run *run,
                         int *found)
{
    *found = 0;
    uint8_t kb[CRDTDB__CHGKEY_LEN];
    MDB_val k = crdtdb__log_key(kb, num, seq), v;
    int mrc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
    int exact = !mrc && k.mv_size == CRDTDB__CHGKEY_LEN && memcmp(k.mv_data, kb, CRDTDB__CHGKEY_LEN) == 0;
    if (!exact) {
        if (mrc && mrc != MDB_NOTFOUND)
            return mrc;
        mrc = mdb_cursor_get(cur, &k, &v, mrc == MDB_NOTFOUND ? MDB_LAST : MDB_PREV);
        if (mrc)
            return mrc == MDB_NOTFOUND ? 0 : mrc;
        if (k.mv_size != CRDTDB__CHGKEY_LEN || crdtdb__get_u32(k.mv_data) != num)
            return 0;
    }
    if (crdtdb__log_parse(&k, &v, run))
        return MDB_CORRUPTED;
    *found = run->seq <= seq && seq - run->seq < run->n;
    return 0;
}

static int chg_cursor(crdtdb_txn *t, MDB_cursor **cur)
{
    int mrc = t->chg_cur ? 0 : mdb_cursor_open(t->mt, t->db->env->dbi_changes, &t->chg_cur);
    *cur = t->chg_cur;
    return mrc;
}

static int reg_cmp(const void *a, const void *b)
{
    uint64_t x = ((const crdtdb__log_reg *)a)->seq, y = ((const crdtdb__log_reg *)b)->seq;
    return x < y ? -1 : x > y;
}

int crdtdb__log_regs(const crdtdb__record *r, crdtdb__log_reg **regs, uint32_t *n,
                     uint32_t *cap)
{
    *n = 0;
    int sorted = 1;
    for (uint32_t i = 0; i <= r->nleaves; i++) {
        uint32_t x = i == 0 ? UINT32_MAX : i - 1;
        if (x == UINT32_MAX && r->base_kind == CRDTDB__BASE_NONE)
            continue;
        uint64_t seq = x == UINT32_MAX ? r->base_seq : r->leaves[x].seq;
        if (crdtdb__array_grow(regs, cap, *n, sizeof **regs, 8))
            return CRDTDB_ENOMEM;
        sorted &= !*n || (*regs)[*n - 1].seq < seq;
        (*regs)[*n].seq = seq;
        (*regs)[(*n)++].x = x;
    }
    /* leaves are in path order: in sequence order only when one store
     * wrote them all */
    if (!sorted)
        qsort(*regs, *n, sizeof **regs, reg_cmp);
    return 0;
}

/* The first of regs (n, by sequence) numbered at least seq. */
static size_t reg_lower(const crdtdb__log_reg *regs, size_t n, uint64_t seq)
{
    size_t a = 0, b = n;
    while (a < b) {
        size_t m = a + (b - a) / 2;
        if (regs[m].seq < seq)
            a = m + 1;
        else
            b = m;
    }
    return a;
}

/* Whether r still holds a register numbered in [lo, hi). */
static int live_in(const crdtdb__record *r, const crdtdb__log_reg *live, size_t nlive,
                   uint64_t lo, uint64_t hi)
{
    if (live) { /* the first sequence >= lo, if below hi */
        size_t a = reg_lower(live, nlive, lo);
        return a < nlive && live[a].seq < hi;
    }
    if (r->base_kind != CRDTDB__BASE_NONE && r->base_seq >= lo && r->base_seq < hi)
        return 1;
    for (uint32_t i = 0; i < r->nleaves; i++)
        if (r->leaves[i].seq >= lo && r->leaves[i].seq < hi)
            return 1;
    return 0;
}

int crdtdb__log_drop(crdtdb_txn *t, uint64_t seq, const crdtdb__record *r,
                     const crdtdb__log_reg *live, size_t nlive)
{
    MDB_cursor *cur;
    crdtdb__log_run run;
    int found, mrc = chg_cursor(t, &cur);
    if (!mrc)
        mrc = find_covering(cur, t->db->num, seq, &run, &found);
    if (mrc || !found)
        return mrc;
    /* a register entry holds seq alone, and seq left the record */
    if (!run.is_reg && r && live_in(r, live, nlive, run.seq, run.seq + run.n))
        return 0;
    return mdb_cursor_del(cur, 0);
}

int crdtdb__log_src(crdtdb_txn *t, uint64_t seq, uint32_t *src, int *found)
{
    MDB_cursor *cur;
    crdtdb__log_run run;
    int mrc = chg_cursor(t, &cur);
    if (!mrc)
        mrc = find_covering(cur, t->db->num, seq, &run, found);
    if (mrc)
        return crdtdb__mdb_err(mrc);
    *src = *found ? run.src : 0;
    return 0;
}

int crdtdb__log_open(crdtdb_db *db, MDB_txn *mt, uint64_t after, crdtdb__log_iter *it)
{
    memset(it, 0, sizeof *it);
    it->num = db->num;
    it->after = after;
    it->mt = mt;
    it->env = db->env;
    it->ot = crdtdb__origins_at(&db->orig, mt);
    it->max_slots = CRDTDB__LOG_CACHE_SLOTS;
    it->max_regs = CRDTDB__LOG_CACHE_REGS;
    return crdtdb__mdb_err(mdb_cursor_open(mt, db->env->dbi_changes, &it->cur));
}

/* The next stored entry of the database, parsed into it->run: 0 with
 * *found, or a CRDTDB_E* code.  The first is the entry holding it->after
 * + 1 if a run does, else the first after it. */
static int next_entry(crdtdb__log_iter *it, int *found)
{
    *found = 0;
    MDB_val k, v;
    int mrc;
    if (!it->started) {
        it->started = 1;
        int covering = 0;
        crdtdb__log_run run;
        if (it->after && (mrc = find_covering(it->cur, it->num, it->after + 1, &run, &covering)))
            return mrc == MDB_CORRUPTED ? CRDTDB_ECORRUPT : crdtdb__mdb_err(mrc);
        if (covering) {
            it->run = run;
            *found = 1;
            return 0;
        }
        uint8_t kb[CRDTDB__CHGKEY_LEN];
        k = crdtdb__log_key(kb, it->num, it->after + 1);
        mrc = mdb_cursor_get(it->cur, &k, &v, MDB_SET_RANGE);
    } else {
        mrc = mdb_cursor_get(it->cur, &k, &v, MDB_NEXT);
    }
    if (mrc == MDB_NOTFOUND)
        return 0;
    if (mrc)
        return crdtdb__mdb_err(mrc);
    if (k.mv_size != CRDTDB__CHGKEY_LEN || crdtdb__get_u32(k.mv_data) != it->num)
        return 0; /* the next database's */
    if (crdtdb__log_parse(&k, &v, &it->run))
        return CRDTDB_ECORRUPT;
    *found = 1;
    return 0;
}

static uint32_t key_hash(const uint8_t *k, size_t n)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (size_t i = 0; i < n; i++)
        h = (h ^ k[i]) * 16777619u;
    return h;
}

/* The slot holding key in it->index, or UINT32_MAX; *at is where the
 * probe ended (an empty place, if not found).  index_cap is a power of 2. */
static uint32_t find_slot(const crdtdb__log_iter *it, const uint8_t *k, size_t n, uint32_t *at)
{
    uint32_t mask = it->index_cap - 1, i = key_hash(k, n) & mask;
    for (;; i = (i + 1) & mask) {
        uint32_t v = it->index[i];
        if (!v)
            break;
        const struct crdtdb__log_slot *sl = &it->slot[v - 1];
        if (sl->keylen == n && memcmp(sl->key, k, n) == 0) {
            *at = i;
            return v - 1;
        }
    }
    *at = i;
    return UINT32_MAX;
}

/* Makes room for one more slot: the index at most half full.  0 or
 * ENOMEM. */
static int cache_room(crdtdb__log_iter *it)
{
    if (it->nslot == it->slot_cap) {
        uint32_t cap = it->slot_cap ? 2 * it->slot_cap : 16;
        struct crdtdb__log_slot *ns = realloc(it->slot, cap * sizeof *ns);
        if (!ns)
            return CRDTDB_ENOMEM;
        memset(ns + it->slot_cap, 0, (cap - it->slot_cap) * sizeof *ns);
        it->slot = ns;
        it->slot_cap = cap;
    }
    if (2 * (it->nslot + 1) <= it->index_cap)
        return 0;
    uint32_t cap = it->index_cap ? 2 * it->index_cap : 32;
    uint32_t *ni = calloc(cap, sizeof *ni);
    if (!ni)
        return CRDTDB_ENOMEM;
    free(it->index);
    it->index = ni;
    it->index_cap = cap;
    for (uint32_t s = 0; s < it->nslot; s++) { /* rehash */
        uint32_t at;
        (void)find_slot(it, it->slot[s].key, it->slot[s].keylen, &at);
        it->index[at] = s + 1;
    }
    return 0;
}

/* Empties the cache, freeing what the records held (arrays kept for reuse
 * would grow to the largest record each slot ever had); the slot array
 * and index stay. */
static void cache_empty(crdtdb__log_iter *it)
{
    for (uint32_t i = 0; i < it->slot_cap; i++) {
        crdtdb__record_free(&it->slot[i].rec);
        free(it->slot[i].regs);
        it->slot[i].regs = NULL;
        it->slot[i].nregs = it->slot[i].regs_cap = 0;
        it->slot[i].keylen = 0;
    }
    it->nslot = 0;
    it->cached_regs = 0;
    if (it->index)
        memset(it->index, 0, it->index_cap * sizeof *it->index);
}

/* Loads the record of run entry it->run into a slot, unless one holds it,
 * with its registers by sequence; it->at names the slot.  0 or a
 * CRDTDB_E* code. */
static int load(crdtdb__log_iter *it)
{
    const crdtdb__log_run *run = &it->run;
    uint8_t kb[CRDTDB__RECKEY_MAX];
    size_t klen = crdtdb__reckey(kb, it->num, run->coll, (const char *)run->id, run->idlen);
    uint32_t at, s = it->index_cap ? find_slot(it, kb, klen, &at) : UINT32_MAX;
    if (s != UINT32_MAX) {
        it->at = s;
        return 0;
    }
    if (it->nslot >= it->max_slots || it->cached_regs >= it->max_regs)
        cache_empty(it); /* full: start again */
    int rc = cache_room(it);
    if (rc)
        return rc;
    struct crdtdb__log_slot *sl = &it->slot[it->nslot];
    MDB_val rk = {klen, kb}, rv;
    int mrc = crdtdb__recs_get(it->env, it->mt, &it->held, &rk, &rv);
    it->bad_seq = run->seq;
    if (mrc == MDB_NOTFOUND)
        it->bad_rec = CRDTDB_ENOTFOUND;
    if (mrc)
        return mrc == MDB_NOTFOUND ? CRDTDB_ECORRUPT : crdtdb__mdb_err(mrc);
    rc = crdtdb__record_decode(&sl->rec, rv.mv_data, rv.mv_size, it->ot);
    if (rc && rc != CRDTDB_ENOMEM) {
        it->bad_rec = rc;
        rc = CRDTDB_ECORRUPT;
    }
    if (rc)
        return rc;
    it->decodes++;
    if ((rc = crdtdb__log_regs(&sl->rec, &sl->regs, &sl->nregs, &sl->regs_cap)))
        return rc;
    memcpy(sl->key, kb, klen);
    sl->keylen = klen;
    (void)find_slot(it, kb, klen, &at); /* the place, after any rehash */
    it->index[at] = it->nslot + 1;
    it->at = it->nslot++;
    it->cached_regs += sl->nregs;
    return 0;
}

/* The first of the current slot's registers numbered at least seq. */
static uint32_t first_at(const crdtdb__log_iter *it, uint64_t seq)
{
    const struct crdtdb__log_slot *sl = &it->slot[it->at];
    return (uint32_t)reg_lower(sl->regs, sl->nregs, seq);
}

/* Loads the record of run entry it->run and marks its registers numbered
 * inside the run and after it->after, regs[ipend..npend).  0 or a
 * CRDTDB_E* code. */
static int expand(crdtdb__log_iter *it)
{
    it->ipend = it->npend = 0;
    int rc = load(it);
    if (rc)
        return rc;
    const crdtdb__log_run *run = &it->run;
    uint64_t lo = run->seq > it->after ? run->seq : it->after + 1, hi = run->seq + run->n;
    it->ipend = first_at(it, lo);
    it->npend = first_at(it, hi);
    return 0;
}

int crdtdb__log_next(crdtdb__log_iter *it, crdtdb__log_entry *e, int *found)
{
    *found = 0;
    if (it->after == UINT64_MAX) /* nothing is after it (after + 1 would wrap to 0) */
        return 0;
    while (it->ipend >= it->npend) {
        int rc = next_entry(it, found);
        if (rc || !*found)
            return rc;
        *found = 0;
        const crdtdb__log_run *run = &it->run;
        if (run->is_reg) {
            e->seq = run->seq;
            e->src = run->src;
            e->coll = run->coll;
            e->id = run->id;
            e->idlen = run->idlen;
            e->path = run->path;
            e->plen = run->plen;
            e->rec = NULL;
            e->rec_max_seq = 0;
            *found = 1;
            return 0;
        }
        if ((rc = expand(it)))
            return rc;
    }
    const crdtdb__record *r = &it->slot[it->at].rec;
    uint32_t i = it->slot[it->at].regs[it->ipend++].x;
    e->src = it->run.src;
    e->coll = it->run.coll;
    e->id = it->run.id;
    e->idlen = it->run.idlen;
    e->rec = r;
    e->rec_max_seq = it->slot[it->at].regs[it->slot[it->at].nregs - 1].seq; /* sorted */
    if (i == UINT32_MAX) {
        e->seq = r->base_seq;
        e->path = NULL;
        e->plen = 0;
    } else {
        e->seq = r->leaves[i].seq;
        e->path = r->leaves[i].path;
        e->plen = r->leaves[i].path_len;
    }
    *found = 1;
    return 0;
}

void crdtdb__log_close(crdtdb__log_iter *it)
{
    if (it->cur)
        mdb_cursor_close(it->cur);
    it->cur = NULL;
    cache_empty(it);
    crdtdb__held_free(&it->held); /* deltas borrowed from it till now */
    free(it->slot);
    free(it->index);
    it->slot = NULL;
    it->index = NULL;
    it->slot_cap = it->index_cap = 0;
    it->ipend = it->npend = 0;
}
