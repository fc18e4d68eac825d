/*
 * The exporter (export.h): the change log after a sequence, read through one
 * snapshot and packed into signed deltas one at a time; and the public
 * exports that loop over it.  Its own file because the packing rules (what
 * a peer has, records whole under a read filter, pieces of large records)
 * are the delicate part of sync.
 */
#include <stdlib.h>
#include <string.h>

#include "crdt/array.h"
#include "storage/export.h"
#include "storage/log.h"
#include "storage/recs.h"

/* Export state: the snapshot, the cursor on the log, and the delta being
 * filled with where its range starts. */
struct crdtdb__exporter {
    crdtdb_db *db;
    crdtdb_txn *txn;           /* the read snapshot (db's slot) */
    crdtdb__log_iter log;      /* on the change log */
    crdtdb__log_entry entry;   /* the entry waiting to be packed (at_entry) */
    crdtdb__delta d;
    crdtdb_buf out;            /* the last signed delta */
    uint64_t since, last;      /* the range asked for; the snapshot's seq */
    uint64_t from, to;         /* the filled delta covers (from, to] */
    uint64_t prev;             /* the last sequence scanned */
    size_t cost, budget;       /* estimated encoded bytes, and the limit */
    int group_coll;            /* the record of the last group, to extend it */
    const uint8_t *group_id;
    size_t group_idlen;
    crdtdb_export_info info;
    crdtdb__export_srcs srcs;  /* sources of what the filled delta packed */
    unsigned flags;            /* CRDTDB_EXPORT_* */
    const crdtdb_export_options *o; /* the read filter, if any */
    uint32_t peer_num;         /* registers from it are left out (UINT32_MAX: none) */
    uint32_t withhold_num;     /* opts.withhold's number (0: none) */
    int at_entry;              /* entry waits to be packed */
    int filled, done;          /* a delta is filled; the last one was given */
    /* the record loaded in rec (blobs stay valid for the whole snapshot,
     * so the delta borrows paths, values and keys from them) */
    crdtdb__record rec;
    uint8_t rec_key[CRDTDB__RECKEY_MAX];
    size_t rec_keylen;
    /* a record going out whole (read filter): where it stands */
    int whole;                 /* 0: none, 1: visible, being packed */
    uint32_t whole_leaf;       /* next register to pack */
    int whole_piece;           /* a piece ended: the next starts a group */
    /* the walk of the records, for registers numbered in (since, lfloor],
     * whose log entries may be gone (collect.c trims them) */
    uint64_t lfloor;           /* the log floor in the snapshot */
    uint64_t wsince, wfloor;   /* this pass walks registers in (wsince, wfloor] */
    int walk;                  /* 1: walking, 2: walked (0: no walk) */
    crdtdb__rwalk rw;          /* on the records while walking (rw_open) */
    int rw_open;
    crdtdb__held *held;        /* packs read, kept until the delta that borrows
                                  from them is handed over (recs.h) */
    uint8_t wkey[CRDTDB__RECKEY_MAX]; /* the record it is at (full key) */
    size_t wkeylen;
    uint64_t wseq;             /* that record's registers up to here went */
    int wat;                   /* rcur is on wkey, decoded in rec */
    struct wreg { uint64_t seq; uint32_t i; } *wregs; /* its registers to go */
    uint32_t wcap;
};

/* A step that needs the filled delta handed over first; the same log
 * entry is packed again by the next fill. */
#define NEED_FLUSH 1

int crdtdb__export_has_src(const crdtdb__export_srcs *s, uint32_t num)
{
    if (s->many)
        return 1;
    for (unsigned i = 0; i < s->n; i++)
        if (s->num[i] == num)
            return 1;
    return 0;
}

/* Notes that a packed register came from peer number src. */
static void note_src(crdtdb__export_srcs *s, uint32_t src)
{
    if (src == CRDTDB__SRC_LOCAL)
        return;
    for (unsigned i = 0; i < s->n; i++)
        if (s->num[i] == src)
            return;
    if (s->n < CRDTDB__EXPORT_SRCS)
        s->num[s->n++] = src;
    else
        s->many = 1;
}

/* An upper bound of everything but the records: envelope and signature
 * (80), array headers, db id, sender and recipient (2 x 34), four integers
 * (4 x 9), the collection table, and up to two history points (2 x 29). */
static size_t header_cost(const crdtdb_db *db)
{
    size_t n = 80 + 16 + 3 + strlen(db->id) + 68 + 36 + 5 + 5 + 5 + 60;
    for (uint16_t i = 0; i < db->ncoll; i++)
        n += 3 + strlen(db->colls[i]);
    return n;
}

#define ORIGIN_COST (2 + CRDTDB_REPLICA_ID_BYTES)
#define REC_COST 30 /* array, collection, id header, base, fields header */

/* The highest sequence of any register of r: where a whole-record export
 * packs it, once. */
static uint64_t max_seq(const crdtdb__record *r)
{
    uint64_t m = r->base_kind != CRDTDB__BASE_NONE ? r->base_seq : 0;
    for (uint32_t i = 0; i < r->nleaves; i++)
        if (r->leaves[i].seq > m)
            m = r->leaves[i].seq;
    return m;
}

/* Whether the delta holds as many record groups as a receiver takes. */
static int full(const crdtdb__exporter *x)
{
    return x->d.nrecs >= x->db->env->lim.max_delta_groups;
}

/* The delta field of a stored register; origin stays the record's index. */
static crdtdb__delta_field leaf_field(const crdtdb__leaf *l)
{
    crdtdb__delta_field f;
    memset(&f, 0, sizeof f);
    f.path = l->path;
    f.path_len = l->path_len;
    f.kind = l->kind;
    f.hlc = l->hlc;
    f.origin = l->origin;
    f.val = l->val;
    f.val_len = l->val_len;
    return f;
}

/* Whether a field of stamp (hlc, origin key okey) goes short in the last
 * group of the delta: that group holds a base of that stamp and origin
 * (delta.c writes a field short exactly then; the delta's origins are
 * distinct keys). */
static int short_in_group(const crdtdb__delta *d, uint64_t hlc, const uint8_t *okey)
{
    if (!d->nrecs)
        return 0;
    const crdtdb__delta_rec *g = &d->recs[d->nrecs - 1];
    return g->base_kind != CRDTDB__BASE_NONE && g->base_hlc == hlc &&
           memcmp(d->origins[g->base_origin], okey, CRDTDB_REPLICA_ID_BYTES) == 0;
}

/* Puts a record base (origin: an index of the delta's table) in the last
 * group. */
static void set_base(crdtdb__delta *d, uint8_t kind, uint64_t hlc, uint32_t origin)
{
    crdtdb__delta_rec *r = &d->recs[d->nrecs - 1];
    r->base_kind = kind;
    r->base_hlc = hlc;
    r->base_origin = origin;
    if (hlc > d->hlc_max)
        d->hlc_max = hlc;
}

/* Starts a record group unless the last one is the same record. */
static int group(crdtdb__exporter *x, uint16_t coll, const uint8_t *id, size_t idlen)
{
    if (x->d.nrecs && x->group_coll == coll && x->group_idlen == idlen &&
        memcmp(x->group_id, id, idlen) == 0)
        return 0;
    crdtdb__delta_rec r;
    memset(&r, 0, sizeof r);
    const char *name = x->db->colls[coll];
    if (crdtdb__delta_coll(&x->d, name, (uint32_t)strlen(name), &r.coll))
        return CRDTDB_ENOMEM;
    r.id.p = (const char *)id;
    r.id.n = (uint32_t)idlen;
    if (crdtdb__delta_add_rec(&x->d, &r))
        return CRDTDB_ENOMEM;
    x->group_coll = coll;
    x->group_id = id;
    x->group_idlen = idlen;
    x->cost += REC_COST + idlen;
    return 0;
}

/* With a read filter: the record whole, if the peer may see it (it may
 * have missed earlier changes while it could not), else a purge.  Field by
 * field, so a record larger than a delta spans several when the range
 * allows (each piece merges on its own; the watermark moves only past the
 * piece holding the record's last register).  NEED_FLUSH resumes where it
 * stopped (x->whole, x->whole_leaf). */
static int pack_whole(crdtdb__exporter *x, const crdtdb__record *rec, uint16_t coll,
                      const uint8_t *id, size_t idlen)
{
    size_t head = REC_COST + idlen + ORIGIN_COST;
    int rc;
    if (!x->whole) {
        char sid[CRDTDB_ID_MAX + 1];
        memcpy(sid, id, idlen);
        sid[idlen] = 0;
        const char *name = x->db->colls[coll];
        int visible = rec->visible_len > 0 &&
                      x->o->visible(x->o->filter_ctx, x->txn, name, sid, rec->visible,
                                    rec->visible_len);
        if (!visible) {
            if (x->o->hidden)
                x->o->hidden(x->o->filter_ctx, name, sid);
            return 0;
        }
        x->whole = 1; /* asked once, whatever flushes follow */
        x->whole_leaf = 0;
        x->whole_piece = 0;
        if (x->d.nrecs && (x->cost + head > x->budget || full(x)))
            return NEED_FLUSH;
    }
    if (x->whole_leaf == 0 && !x->whole_piece) {
        x->group_coll = -1; /* a group of its own */
        if ((rc = group(x, coll, id, idlen)))
            return rc;
        x->cost += head;
        if (rec->base_kind != CRDTDB__BASE_NONE) {
            uint32_t o;
            if (crdtdb__delta_origin(&x->d, rec->origins[rec->base_origin], &o))
                return CRDTDB_ENOMEM;
            set_base(&x->d, rec->base_kind, rec->base_hlc, o);
        }
    } else if (x->whole_piece) { /* the next piece: a group again */
        if ((rc = group(x, coll, id, idlen)))
            return rc;
        x->cost += head;
        x->whole_piece = 0;
    }
    for (uint32_t i = x->whole_leaf; i < rec->nleaves; i++) {
        const crdtdb__leaf *l = &rec->leaves[i];
        crdtdb__delta_field f = leaf_field(l);
        int as_base = short_in_group(&x->d, l->hlc, rec->origins[l->origin]);
        size_t c = crdtdb__delta_field_cost(&f, as_base) + ORIGIN_COST;
        /* a piece ends the delta at `prev`, before this record's entry; it
         * must cover some of the log, or the next export starts over */
        if (x->d.nfields && x->cost + c > x->budget && x->prev > x->from) {
            x->whole_leaf = i;
            x->whole_piece = 1;
            return NEED_FLUSH;
        }
        uint32_t norig = x->d.norigins;
        if (crdtdb__delta_origin(&x->d, rec->origins[l->origin], &f.origin) ||
            crdtdb__delta_add_field(&x->d, &f))
            return CRDTDB_ENOMEM;
        x->cost += x->d.norigins == norig ? c - ORIGIN_COST : c;
    }
    x->whole = 0;
    return 0;
}

static int pack_reg(crdtdb__exporter *x, const crdtdb__record *rec, uint16_t coll,
                    const uint8_t *id, size_t idlen, crdtdb__delta_field *f, int is_base,
                    uint32_t src);

/* Packs log entry e: 0, NEED_FLUSH, or an error. */
static int pack_entry(crdtdb__exporter *x, const crdtdb__log_entry *e)
{
    crdtdb_db *db = x->db;
    uint64_t seq = e->seq;
    uint32_t src = e->src;
    uint16_t coll = e->coll;
    size_t idlen = e->idlen;
    const uint8_t *id = e->id;
    const uint8_t *path = e->path;
    size_t plen = e->plen;
    if ((src == x->peer_num && !x->o) || coll >= db->ncoll) /* it has it */
        return 0;
    /* the record: as the walk decoded it for a run (it stays until the
     * walk moves on, which a NEED_FLUSH does not), else loaded here */
    uint8_t rk[CRDTDB__RECKEY_MAX];
    size_t rklen = e->rec ? 0 : crdtdb__reckey(rk, db->num, coll, (const char *)id, idlen);
    if (!e->rec && (x->rec_keylen != rklen || memcmp(x->rec_key, rk, rklen) != 0)) {
        MDB_val key = {rklen, rk}, blob;
        int mrc = crdtdb__recs_get(db->env, x->txn->mt, &x->held, &key, &blob), rc;
        if (mrc == MDB_NOTFOUND) /* a log entry without its record */
            return crdtdb__db_seterr(db, CRDTDB_ECORRUPT, "change %llu names a missing record",
                                     (unsigned long long)seq);
        if (mrc)
            return crdtdb__db_seterr(db, crdtdb__mdb_err(mrc), "export: %s", crdtdb__mdb_str(mrc));
        x->rec_keylen = 0;
        if ((rc = crdtdb__record_decode(&x->rec, blob.mv_data, blob.mv_size,
                                        crdtdb__origins_at(&db->orig, x->txn->mt))))
            return crdtdb__db_seterr(db, rc, "change %llu names an unreadable record: %s",
                                     (unsigned long long)seq, crdtdb_strerror(rc));
        memcpy(x->rec_key, rk, rklen);
        x->rec_keylen = rklen;
    }
    const crdtdb__record *rec = e->rec ? e->rec : &x->rec;
    if (x->o) /* whole records, each once: at its latest register */
        return seq == (e->rec ? e->rec_max_seq : max_seq(rec)) ? pack_whole(x, rec, coll, id, idlen)
                                                                 : 0;
    /* the register this entry names, as it is now */
    crdtdb__delta_field f;
    memset(&f, 0, sizeof f);
    int is_base = plen == 0;
    if (is_base) {
        if (rec->base_kind == CRDTDB__BASE_NONE || rec->base_seq != seq)
            return 0;
        f.hlc = rec->base_hlc;
        f.origin = rec->base_origin;
    } else {
        long li = crdtdb__record_find(rec, path, plen);
        if (li < 0 || rec->leaves[li].seq != seq)
            return 0;
        f = leaf_field(&rec->leaves[li]);
    }
    return pack_reg(x, rec, coll, id, idlen, &f, is_base, src);
}

/* Packs register f of record rec (coll, id): its base when is_base (f's
 * hlc and origin set), else a leaf; origin is still rec's index.  src is
 * the peer it came from (UINT32_MAX: not known).  0, NEED_FLUSH, or an
 * error. */
static int pack_reg(crdtdb__exporter *x, const crdtdb__record *rec, uint16_t coll,
                    const uint8_t *id, size_t idlen, crdtdb__delta_field *fp, int is_base,
                    uint32_t src)
{
    crdtdb_db *db = x->db;
    crdtdb__delta_field f = *fp;
    /* Origins are what senders claim, not proof: only the source a
     * register came from tells what a peer has. */
    const uint8_t *okey = rec->origins[f.origin];
    uint32_t norig = x->d.norigins;
    /* group() counts a record group when it starts one, so the field pays
     * for a group only then: charging one per field made deltas of a
     * quarter of the budget (many records of several fields each) */
    int grouped = x->d.nrecs && x->group_coll == coll && x->group_idlen == idlen &&
                  memcmp(x->group_id, id, idlen) == 0;
    size_t cost = crdtdb__delta_field_cost(&f, !is_base && grouped &&
                                                   short_in_group(&x->d, f.hlc, okey)) +
                  ORIGIN_COST;
    size_t room = cost + (grouped ? 0 : REC_COST + idlen);
    if (x->d.nrecs && (x->cost + room > x->budget || (!grouped && full(x))))
        return NEED_FLUSH;
    if (group(x, coll, id, idlen) || crdtdb__delta_origin(&x->d, okey, &f.origin))
        return crdtdb__db_seterr(db, CRDTDB_ENOMEM, "out of memory");
    if (x->d.norigins == norig)
        cost -= ORIGIN_COST; /* already in the table */
    if (is_base)
        set_base(&x->d, rec->base_kind, f.hlc, f.origin);
    else if (crdtdb__delta_add_field(&x->d, &f))
        return crdtdb__db_seterr(db, CRDTDB_ENOMEM, "out of memory");
    x->cost += cost;
    if (src == UINT32_MAX)
        x->srcs.many = 1; /* it may be anyone's */
    else
        note_src(&x->srcs, src);
    return 0;
}

/* ---------------------------------------------------------- the walk
 * Registers numbered at or below the log floor may have lost their log
 * entries (collect.c trims what every peer holds), so an export from below
 * it finds them in the records, walked in key order, and the log after the
 * floor gives the rest.  A record's registers go in sequence order, so a
 * walk that stopped says where it stands as (record, sequence): numbers
 * at or below the floor never change, while a record's leaf indexes may.
 * Until the walk is done its deltas cover (since, since]: a range cannot
 * say how far a key-ordered walk went, so a transport that asks for one
 * delta at a time goes on with info.resume. */

static int wreg_cmp(const void *a, const void *b)
{
    uint64_t x = ((const struct wreg *)a)->seq, y = ((const struct wreg *)b)->seq;
    return (x > y) - (x < y);
}

/* The registers of rec numbered in (x->wseq, wfloor], by sequence, into
 * x->wregs (index 0: the base, i + 1: leaf i).  Their count, or -1. */
static long walk_regs(crdtdb__exporter *x, const crdtdb__record *rec)
{
    uint32_t n = 0;
    while (x->wcap <= rec->nleaves) /* room for the base and every leaf */
        if (crdtdb__array_grow(&x->wregs, &x->wcap, x->wcap, sizeof *x->wregs, 16))
            return -1;
    for (uint32_t i = 0; i <= rec->nleaves; i++) {
        uint64_t seq = i ? rec->leaves[i - 1].seq : rec->base_seq;
        if (!i && rec->base_kind == CRDTDB__BASE_NONE)
            continue;
        if (seq > x->wseq && seq <= x->wfloor)
            x->wregs[n++] = (struct wreg){seq, i};
    }
    if (n > 1)
        qsort(x->wregs, n, sizeof *x->wregs, wreg_cmp);
    return n;
}

/* Packs what the record at the walk's cursor holds for the export.  0,
 * NEED_FLUSH (x->wseq says how far it went), or an error. */
static int walk_one(crdtdb__exporter *x, uint16_t coll, const uint8_t *id, size_t idlen)
{
    const crdtdb__record *rec = &x->rec;
    if (x->o) { /* whole, once, if no later register sends it from the log */
        uint64_t m = max_seq(rec);
        if (m <= x->wsince || m > x->wfloor)
            return 0;
        /* a walk cannot end a piece (its range says nothing of where it
         * stopped): a record that does not fit opens the next delta */
        if (!x->whole && x->d.nrecs) {
            size_t c = REC_COST + idlen + ORIGIN_COST;
            for (uint32_t i = 0; i < rec->nleaves; i++) {
                crdtdb__delta_field f = leaf_field(&rec->leaves[i]);
                c += crdtdb__delta_field_cost(&f, 0) + ORIGIN_COST;
            }
            if (x->cost + c > x->budget)
                return NEED_FLUSH;
        }
        return pack_whole(x, rec, coll, id, idlen);
    }
    long n = walk_regs(x, rec);
    if (n < 0)
        return crdtdb__db_seterr(x->db, CRDTDB_ENOMEM, "out of memory");
    for (long k = 0; k < n; k++) {
        uint32_t i = x->wregs[k].i;
        crdtdb__delta_field f;
        if (i) {
            f = leaf_field(&rec->leaves[i - 1]);
        } else {
            memset(&f, 0, sizeof f);
            f.hlc = rec->base_hlc;
            f.origin = rec->base_origin;
        }
        int rc = pack_reg(x, rec, coll, id, idlen, &f, i == 0, UINT32_MAX);
        if (rc)
            return rc;
        x->wseq = x->wregs[k].seq;
    }
    return 0;
}

/* Walks on from x->wkey: 0 when walked, NEED_FLUSH, or an error. */
static int walk(crdtdb__exporter *x)
{
    crdtdb_db *db = x->db;
    MDB_val k, v;
    int mrc = 0, rc = 0;
    if (!x->rw_open) {
        k.mv_size = x->wkeylen;
        k.mv_data = x->wkey;
        x->rw_open = 1;
        mrc = crdtdb__rwalk_open(&x->rw, db->env, x->txn->mt, &k, 4, &x->held);
        if (!mrc && (x->rw.k.mv_size != x->wkeylen ||
                     memcmp(x->rw.k.mv_data, x->wkey, x->wkeylen) != 0))
            x->wseq = x->wsince; /* the record it stopped at went: the next, whole */
        x->wat = 0;
    }
    for (; !mrc; mrc = crdtdb__rwalk_next(&x->rw)) {
        k = x->rw.k;
        v = x->rw.v;
        if (k.mv_size < 7 || crdtdb__get_u32(k.mv_data) != db->num)
            break;
        const uint8_t *kp = k.mv_data;
        uint16_t coll = (uint16_t)(kp[4] << 8 | kp[5]);
        const uint8_t *id = (const uint8_t *)k.mv_data + 6;
        size_t idlen = k.mv_size - 6;
        if (coll < db->ncoll) {
            if (!x->wat) {
                x->rec_keylen = 0; /* pack_entry's cache: no longer rec */
                if ((rc = crdtdb__record_decode(&x->rec, v.mv_data, v.mv_size,
                                                crdtdb__origins_at(&db->orig, x->txn->mt))))
                    return crdtdb__db_seterr(db, rc, "record '%.*s' is unreadable: %s", (int)idlen,
                                             (const char *)id, crdtdb_strerror(rc));
                memcpy(x->wkey, k.mv_data, k.mv_size);
                x->wkeylen = k.mv_size;
                x->wat = 1;
            }
            if ((rc = walk_one(x, coll, id, idlen)))
                return rc; /* NEED_FLUSH: the cursor stays on this record */
        }
        x->wat = 0;
        x->wseq = x->wsince;
    }
    if (mrc && mrc != MDB_NOTFOUND)
        return crdtdb__db_seterr(db, crdtdb__mdb_err(mrc), "export: %s", crdtdb__mdb_str(mrc));
    crdtdb__rwalk_close(&x->rw);
    x->rw_open = 0;
    x->prev = x->wfloor; /* everything up to it went: a delta may end there */
    if (x->wfloor < x->lfloor) {
        /* a pass resumed under an older floor: what a trim took since,
         * (wfloor, lfloor], is one more pass over every record */
        x->wsince = x->wseq = x->wfloor;
        x->wfloor = x->lfloor;
        x->wkeylen = 4;
        return walk(x);
    }
    x->walk = 2;
    return 0;
}

/* Where the walk stands, as crdtdb_export_info.resume: u16 collection | u8
 * id length | id | u64 sequence (that record's registers up to it went) |
 * u64 the pass's since | u64 the floor the pass walks under (a trim since
 * then does not move it: the next pass takes what the trim took). */
static void walk_mark(crdtdb__exporter *x)
{
    x->info.resume_len = 0;
    if (x->walk != 1 || x->done)
        return;
    size_t idlen = x->wkeylen - 6;
    uint8_t *p = x->info.resume;
    memcpy(p, x->wkey + 4, 2);
    p[2] = (uint8_t)idlen;
    memcpy(p + 3, x->wkey + 6, idlen);
    crdtdb__put_u64(p + 3 + idlen, x->wseq);
    crdtdb__put_u64(p + 3 + idlen + 8, x->wsince);
    crdtdb__put_u64(p + 3 + idlen + 16, x->wfloor);
    x->info.resume_len = 3 + idlen + 24;
}

/* Starts the walk at resume (or the first record). */
static void walk_start(crdtdb__exporter *x, const uint8_t *r, size_t len)
{
    x->walk = 1;
    x->wseq = x->wsince = x->since;
    x->wfloor = x->lfloor;
    crdtdb__put_u32(x->wkey, x->db->num);
    x->wkeylen = 4;
    if (!r || !len)
        return; /* (its form and since were checked by exporter_begin) */
    /* a trim since: this pass goes on under the floor it began with (the
     * records it passed hold nothing more of it), then one more pass */
    uint64_t fl = crdtdb__get_u64(r + 3 + r[2] + 16);
    if (fl <= x->since || fl > x->lfloor)
        return; /* not a floor this walk can have had: from the start */
    x->wfloor = fl;
    memcpy(x->wkey + 4, r, 2);
    memcpy(x->wkey + 6, r + 3, r[2]);
    x->wkeylen = 6u + r[2];
    uint64_t seq = crdtdb__get_u64(r + 3 + r[2]);
    if (seq > x->wseq)
        x->wseq = seq;
}

/* An empty delta of db's, signed by this replica, for `recipient` (NULL:
 * no one in particular).  Its origin index keys with the handle's secret
 * (db.c), not a new one per delta. */
static void delta_begin(crdtdb_db *db, crdtdb__delta *d, const uint8_t *recipient)
{
    crdtdb__delta_init(d);
    memcpy(d->oidx.hkey, db->orig.hkey, sizeof db->orig.hkey);
    d->db_id.p = db->id;
    d->db_id.n = (uint32_t)strlen(db->id);
    d->sender = db->env->pk;
    d->recipient = recipient;
}

int crdtdb__exporter_begin(crdtdb_db *db, const crdtdb__export_opts *o,
                           crdtdb__exporter **out)
{
    *out = NULL;
    crdtdb__exporter *x = calloc(1, sizeof *x);
    if (!x)
        return crdtdb__db_seterr(db, CRDTDB_ENOMEM, "out of memory");
    crdtdb_env *env = db->env;
    int rc = crdtdb_txn_begin(db, CRDTDB_TXN_RDONLY, &x->txn);
    if (rc) {
        free(x);
        return rc;
    }
    x->db = db;
    x->since = x->from = x->prev = o->since;
    x->info.from = x->info.to = o->since;
    x->budget = env->opts.max_delta_size;
    if (o->max_bytes && o->max_bytes < x->budget)
        x->budget = o->max_bytes; /* one register still fits: flushes wait for a second */
    x->cost = header_cost(db);
    x->group_coll = -1;
    x->flags = o->flags;
    x->o = o->filter && o->filter->visible ? o->filter : NULL;
    x->peer_num = UINT32_MAX; /* no peer: skip nothing */
    crdtdb__record_init(&x->rec);
    delta_begin(db, &x->d, o->peer); /* watermarks in it are meant for this peer only */
    MDB_txn *mt = x->txn->mt;
    rc = crdtdb__seq_read(env, mt, db->num, &x->last);
    if (!rc && o->peer) {
        crdtdb__marks m;
        int found;
        rc = crdtdb__peer_num(env, mt, o->peer, 0, &x->peer_num);
        if (!rc && (x->peer_num == 0 || (o->flags & CRDTDB_EXPORT_ALL)))
            x->peer_num = UINT32_MAX; /* skip nothing */
        if (!rc)
            rc = crdtdb__marks_get(db, mt, o->peer, &m, &found);
        x->d.has_ack = !rc;
        x->d.ack = rc ? 0 : m.received;
    }
    if (!rc && o->withhold) /* an unknown peer has sent us nothing */
        rc = crdtdb__peer_num(env, mt, o->withhold, 0, &x->withhold_num);
    if (!rc)
        rc = crdtdb__logfloor_read(db, mt, &x->lfloor);
    if (x->lfloor > x->last)
        x->lfloor = x->last;
    /* a token is checked whether or not a walk is needed now */
    const uint8_t *r = o->resume;
    if (!rc && r && o->resume_len &&
        (o->resume_len < 3 + 1 + 24 || r[2] == 0 || o->resume_len != 3u + r[2] + 24 ||
         crdtdb__get_u64(r + 3 + r[2] + 8) != x->since)) {
        crdtdb__db_seterr(db, CRDTDB_EINVAL, "export: a malformed resume, or one made for another since");
        crdtdb__exporter_end(x);
        return CRDTDB_EINVAL;
    }
    if (!rc && x->since < x->lfloor)
        walk_start(x, o->resume, o->resume_len);
    if (rc) {
        crdtdb__db_seterr(db, rc, "export: %s", crdtdb_strerror(rc));
        crdtdb__exporter_end(x);
        return rc;
    }
    *out = x;
    return 0;
}

int crdtdb__exporter_fill(crdtdb__exporter *x)
{
    crdtdb_db *db = x->db;
    if (x->done)
        return CRDTDB_ENOTFOUND;
    if (x->filled) { /* the last one was handed over: keep the header only */
        crdtdb__delta *d = &x->d;
        /* and the packs it borrowed from go, pack_entry's record with
         * them (a walk's record comes from its current pack, not these,
         * and has rec_keylen 0 already) */
        if (x->held) {
            crdtdb__held_free(&x->held);
            x->rec_keylen = 0;
        }
        d->nrecs = d->nfields = d->ncolls = d->norigins = 0;
        crdtdb__keyidx_clear(&d->oidx);
        d->hlc_max = 0;
        x->cost = header_cost(db);
        x->group_coll = -1;
        memset(&x->srcs, 0, sizeof x->srcs);
        x->filled = 0;
    }
    int found = 1, rc = 0;
    if (x->walk == 1) {
        if ((rc = walk(x)) == NEED_FLUSH) { /* (since, since]: the walk goes on */
            x->to = x->prev;
            x->filled = 1;
            return 0;
        }
        if (rc)
            return rc;
    }
    /* the log is opened at the first fill: a cache hit needs none */
    uint64_t after = x->walk ? x->lfloor : x->since;
    if (!x->log.cur && after < x->last && (rc = crdtdb__log_open(db, x->txn->mt, after, &x->log)))
        return crdtdb__db_seterr(db, rc, "export: %s", crdtdb_strerror(rc));
    while (after < x->last) {
        if (!x->at_entry && ((rc = crdtdb__log_next(&x->log, &x->entry, &found)) || !found))
            break;
        x->at_entry = 0;
        rc = pack_entry(x, &x->entry);
        if (rc == NEED_FLUSH) { /* this entry opens the next delta */
            x->at_entry = 1;
            x->to = x->prev;
            x->filled = 1;
            return 0;
        }
        if (rc)
            return rc;
        x->prev = x->entry.seq;
    }
    if (rc == CRDTDB_ECORRUPT && x->log.bad_rec == CRDTDB_ENOTFOUND) /* a log entry without its record */
        return crdtdb__db_seterr(db, rc, "change %llu names a missing record",
                                 (unsigned long long)x->log.bad_seq);
    if (rc == CRDTDB_ECORRUPT && x->log.bad_rec)
        return crdtdb__db_seterr(db, rc, "change %llu names an unreadable record: %s",
                                 (unsigned long long)x->log.bad_seq, crdtdb_strerror(x->log.bad_rec));
    if (rc == CRDTDB_ECORRUPT)
        return crdtdb__db_seterr(db, rc, "a change after %llu is malformed",
                                 (unsigned long long)x->prev);
    if (rc)
        return crdtdb__db_seterr(db, rc, "export: %s", crdtdb_strerror(rc));
    /* the last delta covers everything up to the snapshot's sequence: what
     * the scan did not meet was superseded by what it did */
    x->to = x->last > x->since ? x->last : x->since;
    x->filled = 1;
    x->done = 1;
    return 0;
}

int crdtdb__exporter_withheld(const crdtdb__exporter *x)
{
    return x->withhold_num && crdtdb__export_has_src(&x->srcs, x->withhold_num);
}

int crdtdb__exporter_sign(crdtdb__exporter *x, const uint8_t **delta, size_t *len)
{
    crdtdb_db *db = x->db;
    *delta = NULL;
    *len = 0;
    walk_mark(x);
    if (x->d.nrecs == 0 && (x->flags & CRDTDB_EXPORT_NO_EMPTY)) {
        x->info.to = x->from = x->to; /* nothing for the peer: say so unsigned */
        return 0;
    }
    x->d.from = x->from;
    x->d.to = x->to;
    x->d.nfp = 0;
    uint64_t ends[2] = {x->from, x->to};
    for (int i = 0; i < 2; i++) {
        uint64_t at;
        const uint8_t *h;
        int found, rc = crdtdb__chain_at(db, x->txn->mt, ends[i], &at, &h, &found);
        if (rc)
            return crdtdb__db_seterr(db, rc, "export: %s", crdtdb_strerror(rc));
        if (found && (x->d.nfp == 0 || x->d.fp_seq[0] != at)) {
            x->d.fp_seq[x->d.nfp] = at;
            x->d.fp_hash[x->d.nfp++] = h;
        }
    }
    int rc = crdtdb__delta_encode(&x->d, db->env->sk, &x->out);
    if (rc)
        return crdtdb__db_seterr(db, rc, "export: %s", crdtdb_strerror(rc));
    if (x->out.len > db->env->opts.max_delta_size) /* the estimate is an upper bound */
        return crdtdb__db_seterr(db, CRDTDB_EIO, "export: a delta of %zu bytes exceeds %zu",
                                 x->out.len, db->env->opts.max_delta_size);
    x->info.deltas++;
    x->info.changes += x->d.nfields;
    for (uint32_t i = 0; i < x->d.nrecs; i++)
        x->info.changes += x->d.recs[i].base_kind != CRDTDB__BASE_NONE;
    x->info.bytes += x->out.len;
    x->info.to = x->from = x->to;
    *delta = x->out.data;
    *len = x->out.len;
    return 0;
}

int crdtdb__exporter_next(crdtdb__exporter *x, const uint8_t **delta, size_t *len)
{
    int rc = crdtdb__exporter_fill(x);
    return rc ? rc : crdtdb__exporter_sign(x, delta, len);
}

crdtdb__export_srcs crdtdb__exporter_srcs(const crdtdb__exporter *x) { return x->srcs; }

uint32_t crdtdb__exporter_withhold_num(const crdtdb__exporter *x) { return x->withhold_num; }

const crdtdb_export_info *crdtdb__exporter_info(const crdtdb__exporter *x)
{
    return &x->info;
}

uint64_t crdtdb__exporter_last(const crdtdb__exporter *x) { return x->last; }

int crdtdb__exporter_walks(const crdtdb__exporter *x) { return x->walk != 0; }

uint64_t crdtdb__exporter_lfloor(const crdtdb__exporter *x) { return x->lfloor; }

int crdtdb__exporter_floor(const crdtdb__exporter *x, uint64_t *floor)
{
    crdtdb__floor f;
    int rc = crdtdb__floor_read(x->db, x->txn->mt, &f);
    *floor = rc ? 0 : f.floor;
    return rc;
}

void crdtdb__exporter_end(crdtdb__exporter *x)
{
    if (!x)
        return;
    crdtdb__log_close(&x->log);
    if (x->rw_open)
        crdtdb__rwalk_close(&x->rw);
    crdtdb__held_free(&x->held);
    free(x->wregs);
    crdtdb__record_free(&x->rec);
    crdtdb__delta_free(&x->d);
    crdtdb_buf_free(&x->out);
    crdtdb_txn_abort(x->txn);
    free(x);
}

int crdtdb__export_run(crdtdb_db *db, const crdtdb__export_opts *o, crdtdb_delta_sink sink,
                       void *ctx, crdtdb_export_info *info)
{
    crdtdb__exporter *x;
    int rc = crdtdb__exporter_begin(db, o, &x);
    if (rc)
        return rc;
    const uint8_t *delta;
    size_t len;
    while (!(rc = crdtdb__exporter_next(x, &delta, &len)) && !(rc = sink(ctx, delta, len)))
        ;
    if (rc == CRDTDB_ENOTFOUND || rc > 0) /* the end, or the sink's CRDTDB_STOP */
        rc = 0;
    if (info)
        *info = x->info;
    crdtdb__exporter_end(x);
    return rc;
}

/* The whole log after since, unshared and unfiltered: export_for's
 * defaults (storage/share.c). */
int crdtdb_db_export(crdtdb_db *db, uint64_t since, const uint8_t *peer,
                     crdtdb_delta_sink sink, void *ctx,
                     crdtdb_export_info *info)
{
    return crdtdb_db_export_for(db, since, peer, NULL, sink, ctx, info);
}

static int export_record_call(crdtdb_db *db, const char *coll, const char *id,
                              const uint8_t *peer, crdtdb_buf *out, int *found)
{
    if (!db || !coll || !id || !out || !found)
        return db ? crdtdb__db_seterr(db, CRDTDB_EINVAL, "no collection, id or output")
                  : CRDTDB_EINVAL;
    *found = 0;
    out->len = 0;
    int c = crdtdb__db_coll(db, coll);
    if (c < 0)
        return c;
    if (crdtdb__id_check(id, 0))
        return crdtdb__db_seterr(db, CRDTDB_EBADID, "invalid record id: 1..255 bytes of UTF-8");
    crdtdb_env *env = db->env;
    crdtdb_txn *t;
    int rc = crdtdb_txn_begin(db, CRDTDB_TXN_RDONLY, &t);
    if (rc)
        return rc;
    uint8_t rk[CRDTDB__RECKEY_MAX];
    MDB_val key = {crdtdb__reckey(rk, db->num, (uint16_t)c, id, strlen(id)), rk}, blob;
    crdtdb__record rec;
    crdtdb__record_init(&rec);
    crdtdb__exporter x;
    memset(&x, 0, sizeof x);
    x.db = db;
    x.group_coll = -1;
    delta_begin(db, &x.d, peer);
    crdtdb__held *held = NULL; /* the delta borrows from it, as from a page */
    int mrc = crdtdb__recs_get(env, t->mt, &held, &key, &blob);
    if (mrc == 0 && !(rc = crdtdb__record_decode(&rec, blob.mv_data, blob.mv_size,
                                                 crdtdb__origins_at(&db->orig, t->mt)))) {
        /* the blob stays valid for the snapshot: the delta borrows it */
        rc = group(&x, (uint16_t)c, (const uint8_t *)id, strlen(id));
        uint32_t o;
        if (!rc && rec.base_kind != CRDTDB__BASE_NONE) {
            rc = crdtdb__delta_origin(&x.d, rec.origins[rec.base_origin], &o);
            if (!rc)
                set_base(&x.d, rec.base_kind, rec.base_hlc, o);
        }
        for (uint32_t i = 0; !rc && i < rec.nleaves; i++) {
            crdtdb__delta_field f = leaf_field(&rec.leaves[i]);
            rc = crdtdb__delta_origin(&x.d, rec.origins[rec.leaves[i].origin], &f.origin);
            if (!rc)
                rc = crdtdb__delta_add_field(&x.d, &f);
        }
        if (!rc)
            rc = crdtdb__delta_encode(&x.d, env->sk, out);
        if (!rc && out->len > env->opts.max_delta_size)
            rc = crdtdb__db_seterr(db, CRDTDB_EIO, "record '%s' in '%s' takes %zu bytes, over "
                                   "max_delta_size", id, coll, out->len);
        else if (rc)
            rc = crdtdb__db_seterr(db, rc, "export: %s", crdtdb_strerror(rc));
        *found = !rc;
    } else if (mrc && mrc != MDB_NOTFOUND) {
        rc = crdtdb__db_seterr(db, crdtdb__mdb_err(mrc), "export: %s", crdtdb__mdb_str(mrc));
    } else if (rc) {
        rc = crdtdb__db_seterr(db, rc, "record '%s' in '%s' is unreadable", id, coll);
    }
    if (rc)
        out->len = 0;
    crdtdb__record_free(&rec);
    crdtdb__delta_free(&x.d);
    crdtdb__held_free(&held);
    crdtdb_txn_abort(t);
    return rc;
}

int crdtdb_db_export_record(crdtdb_db *db, const char *coll, const char *id,
                            const uint8_t *peer, crdtdb_buf *out, int *found)
{
    uint64_t m = crdtdb__db_enter(db);
    return crdtdb__db_exit(db, m, export_record_call(db, coll, id, peer, out, found));
}
