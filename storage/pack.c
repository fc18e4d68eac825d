/*
 * Packing (recs.h), collection's last step: cold records (adds whose every
 * register every peer in the horizon holds) are compressed together, a run
 * of one collection's records in key order to a pack.  One record a value
 * costs LMDB's node and key besides a blob that repeats its neighbours'
 * field names and stamps; packed and compressed, a record takes about a
 * third (bench_churn).
 *
 * The packs already there cut a database's records into segments: the
 * records up to and including each pack's last, and the tail past the
 * last pack.  Only a segment holding loose cold records is rewritten, its
 * pack with them, so key ranges stay apart; a database without loose cold
 * records costs a walk of its loose records; a small run of rewritten segments takes in a neighbour, so packs
 * do not dwindle to a record each.  A pack is sized to fill whole LMDB
 * overflow pages (a value past ~2 KiB takes pages of its own).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

#include "crdt/array.h"
#include "storage/recs.h"

#define PACK_PAGES 2 /* a pack fills this many pages (1: 4% larger in bench_churn; 3, 4: 2% smaller) */
#define PACK_LEVEL 6 /* zstd's (9, 12: no smaller in bench_churn; 15: 6% smaller, 5x the time) */
#define PACK_RAW (48u * 1024u) /* a pack decompresses to at most this */
#define SMALL_RAW (8u * 1024u) /* rewritten segments under this take in a neighbour */

/* A record as it goes into a pack: arena[off, off + len) is its entry
 * (u8 key length | key | u16 blob length | blob, recs.c's format). */
typedef struct ent {
    size_t off, len;
    int loose;
} ent;

/* Records [a, b) of one collection; key: the old pack it ends with (keylen
 * 0: the tail, no pack). */
typedef struct seg {
    uint32_t a, b;
    uint16_t coll;
    size_t raw;
    int dirty, mark;
    uint8_t key[CRDTDB__RECKEY_MAX];
    size_t keylen;
} seg;

typedef struct packer {
    crdtdb_txn *t;
    uint64_t upto;
    crdtdb_buf arena;
    ent *ents;
    uint32_t nents, ents_cap;
    seg *segs;
    uint32_t nsegs, segs_cap;
    int open; /* the last segment takes more records */
    int any;  /* any_cold found a loose cold record */
    ZSTD_CCtx *cc;
    crdtdb_buf out;
} packer;

/* Whether loose record (k, v) may be packed: an add, every register
 * numbered at most p->upto, its key's length one byte (ids of 250 bytes
 * and more stay loose) and its blob small.  A record that does not decode
 * stays as it is too: packing it would only spread the damage. */
static int cold(packer *p, const MDB_val *k, const MDB_val *v, int *yes)
{
    crdtdb_db *db = p->t->db;
    *yes = 0;
    if (k->mv_size > UINT8_MAX || v->mv_size > CRDTDB__PACK_BLOB_MAX)
        return 0;
    crdtdb__record *r = &db->rec;
    int rc = crdtdb__record_decode(r, v->mv_data, v->mv_size,
                                   crdtdb__origins_at(&db->orig, p->t->mt));
    if (rc)
        return rc == CRDTDB_ENOMEM ? rc : 0;
    if (r->base_kind != CRDTDB__BASE_ADD || r->base_seq > p->upto)
        return 0;
    for (uint32_t i = 0; i < r->nleaves; i++)
        if (r->leaves[i].seq > p->upto)
            return 0;
    *yes = 1;
    return 0;
}

/* Appends record (k, v) to the current segment, opening one if need be. */
static int add(packer *p, const MDB_val *k, const MDB_val *v, int loose)
{
    const uint8_t *kp = k->mv_data;
    uint16_t coll = (uint16_t)(kp[4] << 8 | kp[5]);
    if (p->open && p->segs[p->nsegs - 1].coll != coll)
        p->open = 0;
    if (!p->open) {
        if (crdtdb__array_grow(&p->segs, &p->segs_cap, p->nsegs, sizeof *p->segs, 16))
            return CRDTDB_ENOMEM;
        seg *s = &p->segs[p->nsegs++];
        memset(s, 0, sizeof *s);
        s->a = s->b = p->nents;
        s->coll = coll;
        p->open = 1;
    }
    size_t kl = k->mv_size, len = 1 + kl + 2 + v->mv_size;
    if (crdtdb__array_grow(&p->ents, &p->ents_cap, p->nents, sizeof *p->ents, 256) ||
        crdtdb__buf_reserve(&p->arena, len))
        return CRDTDB_ENOMEM;
    uint8_t *e = p->arena.data + p->arena.len;
    e[0] = (uint8_t)kl;
    memcpy(e + 1, kp, kl);
    e[1 + kl] = (uint8_t)(v->mv_size >> 8);
    e[2 + kl] = (uint8_t)v->mv_size;
    memcpy(e + 3 + kl, v->mv_data, v->mv_size);
    p->ents[p->nents++] = (ent){p->arena.len, len, loose};
    p->arena.len += len;
    seg *s = &p->segs[p->nsegs - 1];
    s->b = p->nents;
    s->raw += len;
    s->dirty |= loose;
    return 0;
}

/* crdtdb__db_each's step for any_cold: stops (1) at the first cold one. */
static int cold_one(void *ctx, const MDB_val *k, const MDB_val *v)
{
    packer *p = ctx;
    int rc = cold(p, k, v, &p->any);
    return rc ? rc : p->any;
}

/* Whether any loose record of the database is cold (p->any): else there
 * is nothing to pack, and no pack need be read. */
static int any_cold(packer *p)
{
    crdtdb_db *db = p->t->db;
    return crdtdb__db_each(db, p->t->mt, db->env->dbi_records, cold_one, p);
}

/* Reads every record of the database into segments (the walk first: the
 * writes come after it). */
static int gather(packer *p)
{
    crdtdb_db *db = p->t->db;
    uint8_t pre[4];
    crdtdb__put_u32(pre, db->num);
    MDB_val from = {4, pre};
    crdtdb__rwalk w;
    int rc = 0, mrc;
    for (mrc = crdtdb__rwalk_open(&w, db->env, p->t->mt, &from, 4, NULL); !mrc && !rc;
         mrc = crdtdb__rwalk_next(&w)) {
        if (w.k.mv_size < 7) { /* past CRDTDB__RECKEY_MAX the walk refuses it */
            rc = CRDTDB_ECORRUPT;
            break;
        }
        int yes = w.packed;
        if (!yes && (rc = cold(p, &w.k, &w.v, &yes)))
            break;
        if (yes && (rc = add(p, &w.k, &w.v, !w.packed)))
            break;
        /* a pack's last record ends its segment */
        if (w.pack_last) {
            seg *s = &p->segs[p->nsegs - 1];
            memcpy(s->key, w.k.mv_data, w.k.mv_size);
            s->keylen = w.k.mv_size;
            p->open = 0;
        }
    }
    crdtdb__rwalk_close(&w);
    if (!rc && mrc != MDB_NOTFOUND)
        rc = crdtdb__mdb_err(mrc);
    return rc;
}

/* Which segments are rewritten: those holding loose records, and, where a
 * run of them is small, the segment before it (else after it) too. */
static void choose(packer *p)
{
    for (uint32_t i = 0; i < p->nsegs; i++)
        p->segs[i].mark = p->segs[i].dirty;
    for (uint32_t i = 0; i < p->nsegs;) {
        if (!p->segs[i].mark) {
            i++;
            continue;
        }
        uint32_t j = i;
        size_t raw = 0;
        while (j < p->nsegs && p->segs[j].mark && p->segs[j].coll == p->segs[i].coll)
            raw += p->segs[j++].raw;
        if (raw < SMALL_RAW) {
            if (i > 0 && !p->segs[i - 1].mark && p->segs[i - 1].coll == p->segs[i].coll)
                p->segs[i - 1].mark = 1;
            else if (j < p->nsegs && !p->segs[j].mark && p->segs[j].coll == p->segs[i].coll)
                p->segs[j].mark = 1, j++;
        }
        i = j;
    }
}

/* The raw bytes of entries [a, a + n). */
static size_t raw_of(const packer *p, uint32_t a, uint32_t n)
{
    return p->ents[a + n - 1].off + p->ents[a + n - 1].len - p->ents[a].off;
}

/* Compresses entries [a, a + n) into p->out as a pack value. */
static int squeeze(packer *p, uint32_t a, uint32_t n)
{
    const uint8_t *src = p->arena.data + p->ents[a].off;
    size_t raw = raw_of(p, a, n);
    size_t cap = 1 + ZSTD_compressBound(raw);
    p->out.len = 0;
    if (crdtdb__buf_reserve(&p->out, cap))
        return CRDTDB_ENOMEM;
    p->out.data[0] = CRDTDB__PACK_FORMAT;
    size_t z = ZSTD_compressCCtx(p->cc, p->out.data + 1, cap - 1, src, raw, PACK_LEVEL);
    if (ZSTD_isError(z))
        return CRDTDB_ENOMEM; /* the bound was given: only memory can fail */
    p->out.len = 1 + z;
    return 0;
}

/* Writes entries [a, b) as packs of at most `limit` bytes each, nearly
 * full: a try that is too large says how well these records compress, and
 * the next takes what should fit of them, 3% under (a binary search took
 * four times as many compressions for 2% more). */
static int emit(packer *p, uint32_t a, uint32_t b, size_t limit, uint64_t *packed)
{
    crdtdb_db *db = p->t->db;
    int rc = 0;
    while (!rc && a < b) {
        uint32_t n = 1; /* at first, the most records the raw bound allows */
        while (a + n < b && raw_of(p, a, n + 1) <= PACK_RAW)
            n++;
        for (rc = squeeze(p, a, n); !rc && p->out.len > limit; rc = squeeze(p, a, n)) {
            size_t want = raw_of(p, a, n) / 100 * 97 * limit / p->out.len;
            uint32_t m = 1;
            while (m + 1 < n && raw_of(p, a, m + 1) <= want)
                m++;
            n = m; /* fewer each time: one record always fits */
        }
        if (rc)
            break;
        /* its key: the last record's */
        const uint8_t *last = p->arena.data + p->ents[a + n - 1].off;
        MDB_val k = {last[0], (void *)(last + 1)}, v = {p->out.len, p->out.data};
        int mrc = mdb_put(p->t->mt, db->env->dbi_packs, &k, &v, 0);
        if (mrc)
            return crdtdb__mdb_err(mrc);
        for (uint32_t i = a; i < a + n; i++)
            *packed += p->ents[i].loose;
        a += n;
    }
    return rc;
}

/* Rewrites the chosen segments: their old packs and loose records go, new
 * packs come. */
static int rewrite(packer *p, uint64_t *packed)
{
    crdtdb_db *db = p->t->db;
    size_t limit = (size_t)PACK_PAGES * db->env->psize - 16; /* LMDB's page header */
    for (uint32_t i = 0; i < p->nsegs; i++) {
        seg *s = &p->segs[i];
        if (!s->mark)
            continue;
        if (s->keylen) {
            MDB_val k = {s->keylen, s->key};
            int mrc = mdb_del(p->t->mt, db->env->dbi_packs, &k, NULL);
            if (mrc)
                return crdtdb__mdb_err(mrc);
        }
        for (uint32_t j = s->a; j < s->b; j++) {
            if (!p->ents[j].loose)
                continue;
            const uint8_t *e = p->arena.data + p->ents[j].off;
            MDB_val k = {e[0], (void *)(e + 1)};
            int mrc = mdb_del(p->t->mt, db->env->dbi_records, &k, NULL);
            if (mrc)
                return crdtdb__mdb_err(mrc);
        }
    }
    /* each run of chosen segments of one collection, packed anew */
    for (uint32_t i = 0; i < p->nsegs;) {
        if (!p->segs[i].mark) {
            i++;
            continue;
        }
        uint32_t j = i + 1;
        while (j < p->nsegs && p->segs[j].mark && p->segs[j].coll == p->segs[i].coll)
            j++;
        int rc = emit(p, p->segs[i].a, p->segs[j - 1].b, limit, packed);
        if (rc)
            return rc;
        i = j;
    }
    return 0;
}

int crdtdb__recs_pack(crdtdb_txn *t, uint64_t upto, uint64_t *packed)
{
    crdtdb_db *db = t->db;
    packer p;
    memset(&p, 0, sizeof p);
    p.t = t;
    p.upto = upto;
    *packed = 0;
    int rc = any_cold(&p);
    if (!rc && !p.any)
        return 0;
    if (!rc)
        rc = gather(&p);
    if (!rc) {
        choose(&p);
        if (!(p.cc = ZSTD_createCCtx()))
            rc = CRDTDB_ENOMEM;
    }
    if (!rc)
        rc = rewrite(&p, packed);
    ZSTD_freeCCtx(p.cc);
    free(p.ents);
    free(p.segs);
    crdtdb_buf_free(&p.arena);
    crdtdb_buf_free(&p.out);
    if (rc == CRDTDB_ECORRUPT)
        return crdtdb__db_seterr(db, rc, "collect: a pack of records in '%s' is unreadable",
                                 db->id);
    return rc ? crdtdb__db_seterr(db, rc, "collect: packing: %s", crdtdb_strerror(rc)) : 0;
}
