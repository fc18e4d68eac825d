/* Export: the change log after a sequence, packed into signed deltas. */
#include <string.h>

#include "storage/internal.h"

/* Export state: the delta being filled and where its range starts. */
typedef struct exporter {
    crdtdb_db *db;
    crdtdb__delta d;
    crdtdb_buf out;
    uint64_t from;       /* current delta covers (from, ...] */
    size_t cost, budget; /* estimated encoded bytes, and the limit */
    int group_coll;      /* the record of the last group, to extend it */
    const uint8_t *group_id;
    size_t group_idlen;
    crdtdb_delta_sink sink;
    void *ctx;
    crdtdb_export_info info;
    crdtdb__export_srcs *srcs; /* sources of what was packed, or NULL */
    unsigned flags;            /* CRDTDB_EXPORT_* */
    const crdtdb_export_options *o; /* the read filter, if any */
    crdtdb_txn *txn;
} exporter;

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
    if (!s || src == CRDTDB__SRC_LOCAL)
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

/* Encodes, signs and hands over the delta covering (x->from, to], with the
 * history fingerprint at both ends where kept. */
static int flush(exporter *x, MDB_txn *mt, uint64_t to)
{
    crdtdb_db *db = x->db;
    if (x->d.nrecs == 0 && (x->flags & CRDTDB_EXPORT_NO_EMPTY)) {
        x->info.to = to; /* nothing for the peer: say so unsigned */
        int rc = x->sink(x->ctx, NULL, 0);
        x->from = to;
        return rc;
    }
    if (x->srcs && x->srcs->stop && crdtdb__export_has_src(x->srcs, x->srcs->stop))
        return CRDTDB__EXPORT_STOPPED;
    x->d.from = x->from;
    x->d.to = to;
    x->d.nfp = 0;
    uint64_t ends[2] = {x->from, to};
    for (int i = 0; i < 2; i++) {
        uint64_t at;
        const uint8_t *h;
        int found, rc = crdtdb__chain_at(db, mt, ends[i], &at, &h, &found);
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
    /* counted before the sink runs, so a sink that stops after this delta
     * (a transport streaming one delta at a time) learns where it ended */
    x->info.deltas++;
    x->info.changes += x->d.nfields;
    for (uint32_t i = 0; i < x->d.nrecs; i++)
        x->info.changes += x->d.recs[i].base_kind != CRDTDB__BASE_NONE;
    x->info.bytes += x->out.len;
    x->info.to = to;
    rc = x->sink(x->ctx, x->out.data, x->out.len);
    if (rc)
        return rc;
    /* keep the header, drop the changes */
    x->d.nrecs = x->d.nfields = x->d.ncolls = x->d.norigins = 0;
    x->d.hlc_max = 0;
    x->from = to;
    x->cost = header_cost(db);
    x->group_coll = -1;
    return 0;
}

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

static int group(exporter *x, uint16_t coll, const uint8_t *id, size_t idlen);

/* Whether the delta holds as many record groups as a receiver takes. */
static int full(const exporter *x)
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

/* Puts a record base (origin: an index of the delta's table) in the last
 * group. */
static void set_base(exporter *x, uint8_t kind, uint64_t hlc, uint32_t origin)
{
    crdtdb__delta_rec *r = &x->d.recs[x->d.nrecs - 1];
    r->base_kind = kind;
    r->base_hlc = hlc;
    r->base_origin = origin;
    if (hlc > x->d.hlc_max)
        x->d.hlc_max = hlc;
}

/* With a read filter: the record whole, if the peer may see it (it may
 * have missed earlier changes while it could not), else a purge. */
static int pack_whole(exporter *x, MDB_txn *mt, uint64_t prev, const crdtdb__record *rec,
                      uint16_t coll, const uint8_t *id, size_t idlen)
{
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
    /* field by field, so a record larger than a delta spans several when
     * the range allows (each piece merges on its own; the watermark moves
     * only past the piece holding the record's last register) */
    size_t head = REC_COST + idlen + ORIGIN_COST;
    int rc;
    if (x->d.nrecs && (x->cost + head > x->budget || full(x)) && (rc = flush(x, mt, prev)))
        return rc;
    x->group_coll = -1; /* a group of its own */
    if ((rc = group(x, coll, id, idlen)))
        return rc;
    x->cost += head;
    if (rec->base_kind != CRDTDB__BASE_NONE) {
        uint32_t o;
        if (crdtdb__delta_origin(&x->d, rec->origins[rec->base_origin], &o))
            return CRDTDB_ENOMEM;
        set_base(x, rec->base_kind, rec->base_hlc, o);
    }
    for (uint32_t i = 0; i < rec->nleaves; i++) {
        const crdtdb__leaf *l = &rec->leaves[i];
        crdtdb__delta_field f = leaf_field(l);
        size_t c = crdtdb__delta_field_cost(&f) + ORIGIN_COST;
        /* a piece ends the delta at `prev`, before this record's entry; it
         * must cover some of the log, or the next export starts over */
        if (x->d.nfields && x->cost + c > x->budget && prev > x->from) {
            if ((rc = flush(x, mt, prev)) || (rc = group(x, coll, id, idlen)))
                return rc;
            x->cost += head;
        }
        if (crdtdb__delta_origin(&x->d, rec->origins[l->origin], &f.origin) ||
            crdtdb__delta_add_field(&x->d, &f))
            return CRDTDB_ENOMEM;
        x->cost += c;
    }
    return 0;
}

/* Starts a record group unless the last one is the same record. */
static int group(exporter *x, uint16_t coll, const uint8_t *id, size_t idlen)
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

static int export_call(crdtdb_db *db, uint64_t since, const uint8_t *peer,
                       crdtdb_delta_sink sink, void *ctx,
                       crdtdb_export_info *info)
{
    if (!db || !sink)
        return CRDTDB_EINVAL;
    return crdtdb__export(db, since, peer, 0, 0, NULL, sink, ctx, info, NULL);
}

int crdtdb_db_export(crdtdb_db *db, uint64_t since, const uint8_t *peer,
                     crdtdb_delta_sink sink, void *ctx,
                     crdtdb_export_info *info)
{
    return crdtdb__db_exit(db, export_call(db, since, peer, sink, ctx, info));
}

int crdtdb__export(crdtdb_db *db, uint64_t since, const uint8_t *peer, unsigned flags,
                   size_t max_bytes, const crdtdb_export_options *filter,
                   crdtdb_delta_sink sink, void *ctx, crdtdb_export_info *info,
                   crdtdb__export_srcs *srcs)
{
    crdtdb_env *env = db->env;
    crdtdb_txn *t;
    int rc = crdtdb_txn_begin(db, CRDTDB_TXN_RDONLY, &t);
    if (rc)
        return rc;
    exporter x;
    memset(&x, 0, sizeof x);
    x.db = db;
    x.sink = sink;
    x.ctx = ctx;
    x.from = since;
    x.info.from = x.info.to = since;
    x.budget = env->opts.max_delta_size;
    if (max_bytes && max_bytes < x.budget)
        x.budget = max_bytes; /* one register still fits: flushes wait for a second */
    x.cost = header_cost(db);
    x.group_coll = -1;
    x.srcs = srcs;
    x.flags = flags;
    x.o = filter && filter->visible ? filter : NULL;
    x.txn = t;
    if (srcs) {
        uint32_t stop = srcs->stop;
        memset(srcs, 0, sizeof *srcs);
        srcs->stop = stop;
    }
    crdtdb__delta_init(&x.d);
    x.d.db_id.p = db->id;
    x.d.db_id.n = (uint32_t)strlen(db->id);
    x.d.sender = env->pk;
    x.d.recipient = peer; /* watermarks in it are meant for this peer only */
    uint64_t last;
    uint32_t peer_num = UINT32_MAX; /* no peer: skip nothing */
    rc = crdtdb__seq_read(env, t->mt, db->num, &last);
    if (!rc && peer) {
        crdtdb__marks m;
        int found;
        rc = crdtdb__peer_num(env, t->mt, peer, 0, &peer_num);
        if (!rc && (peer_num == 0 || (flags & CRDTDB_EXPORT_ALL)))
            peer_num = UINT32_MAX; /* skip nothing */
        if (!rc)
            rc = crdtdb__marks_get(db, t->mt, peer, &m, &found);
        x.d.has_ack = !rc;
        x.d.ack = m.received;
    }
    MDB_cursor *cur = NULL;
    int mrc = rc ? 0 : mdb_cursor_open(t->mt, env->dbi_changes, &cur);
    if (mrc)
        rc = crdtdb__mdb_err(mrc);
    crdtdb__record rec;
    crdtdb__record_init(&rec);
    uint8_t rec_key[CRDTDB__RECKEY_MAX]; /* the record loaded in rec */
    size_t rec_keylen = 0;
    uint8_t kb[CRDTDB__CHGKEY_LEN];
    crdtdb__put_u32(kb, db->num);
    crdtdb__put_u64(kb + 4, since + 1);
    MDB_val k = {sizeof kb, kb}, v;
    uint64_t prev = since; /* the last sequence scanned */
    for (mrc = rc ? MDB_NOTFOUND : mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
         mrc == 0 && !rc && since < last;
         mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (k.mv_size != CRDTDB__CHGKEY_LEN || crdtdb__get_u32(k.mv_data) != db->num)
            break;
        uint64_t seq = crdtdb__get_u64((const uint8_t *)k.mv_data + 4);
        const uint8_t *p = v.mv_data;
        if (v.mv_size < CRDTDB__CHG_HEAD || v.mv_size < CRDTDB__CHG_HEAD + (size_t)p[6]) {
            rc = CRDTDB_ECORRUPT;
            break;
        }
        uint32_t src = crdtdb__get_u32(p);
        uint16_t coll = (uint16_t)(p[4] << 8 | p[5]);
        size_t idlen = p[6];
        const uint8_t *id = p + CRDTDB__CHG_HEAD;
        const uint8_t *path = id + idlen;
        size_t plen = v.mv_size - CRDTDB__CHG_HEAD - idlen;
        if ((src == peer_num && !x.o) || coll >= db->ncoll) { /* it has it */
            prev = seq;
            continue;
        }
        uint8_t rk[CRDTDB__RECKEY_MAX];
        size_t rklen = crdtdb__reckey(rk, db->num, coll, (const char *)id, idlen);
        if (rec_keylen != rklen || memcmp(rec_key, rk, rklen) != 0) {
            /* blobs stay valid for the whole read snapshot, so the delta
             * can borrow paths, values and keys from them */
            MDB_val key = {rklen, rk}, blob;
            if ((mrc = mdb_get(t->mt, env->dbi_records, &key, &blob)) ||
                (rc = crdtdb__record_decode(&rec, blob.mv_data, blob.mv_size))) {
                if (mrc == MDB_NOTFOUND) { /* a log entry without its record */
                    mrc = 0;
                    rc = crdtdb__db_seterr(db, CRDTDB_ECORRUPT,
                                           "change %llu names a missing record",
                                           (unsigned long long)seq);
                }
                break;
            }
            memcpy(rec_key, rk, rklen);
            rec_keylen = rklen;
        }
        if (x.o) { /* whole records, each once: at its latest register */
            if (seq == max_seq(&rec) && (rc = pack_whole(&x, t->mt, prev, &rec, coll, id, idlen)))
                break;
            prev = seq;
            continue;
        }
        /* the register this entry names, as it is now */
        crdtdb__delta_field f;
        memset(&f, 0, sizeof f);
        int is_base = plen == 0;
        if (is_base) {
            if (rec.base_kind == CRDTDB__BASE_NONE || rec.base_seq != seq) {
                prev = seq;
                continue;
            }
            f.hlc = rec.base_hlc;
            f.origin = rec.base_origin;
        } else {
            long li = crdtdb__record_find(&rec, path, plen);
            if (li < 0 || rec.leaves[li].seq != seq) {
                prev = seq;
                continue;
            }
            f = leaf_field(&rec.leaves[li]);
        }
        /* Origins are what senders claim, not proof: only the source a
         * register came from tells what a peer has. */
        const uint8_t *okey = rec.origins[f.origin];
        uint32_t norig = x.d.norigins;
        size_t cost = crdtdb__delta_field_cost(&f) + REC_COST + idlen + ORIGIN_COST;
        if (x.d.nrecs && (x.cost + cost > x.budget || full(&x)) && (rc = flush(&x, t->mt, prev)))
            break;
        if ((rc = group(&x, coll, id, idlen)) ||
            (rc = crdtdb__delta_origin(&x.d, okey, &f.origin)))
            break;
        if (x.d.norigins == norig)
            cost -= ORIGIN_COST; /* already in the table */
        if (is_base) {
            set_base(&x, rec.base_kind, f.hlc, f.origin);
        } else if ((rc = crdtdb__delta_add_field(&x.d, &f))) {
            break;
        }
        x.cost += cost;
        note_src(x.srcs, src);
        prev = seq;
    }
    if (!rc && mrc && mrc != MDB_NOTFOUND)
        rc = crdtdb__db_seterr(db, crdtdb__mdb_err(mrc), "export: %s", mdb_strerror(mrc));
    /* the last delta covers everything up to the snapshot's sequence: what
     * the scan did not meet was superseded by what it did */
    if (!rc)
        rc = flush(&x, t->mt, last > since ? last : since);
    mdb_cursor_close(cur);
    crdtdb__record_free(&rec);
    crdtdb__delta_free(&x.d);
    crdtdb_buf_free(&x.out);
    crdtdb_txn_abort(t);
    if (info)
        *info = x.info;
    return rc;
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
    exporter x;
    memset(&x, 0, sizeof x);
    x.db = db;
    x.group_coll = -1;
    crdtdb__delta_init(&x.d);
    x.d.db_id.p = db->id;
    x.d.db_id.n = (uint32_t)strlen(db->id);
    x.d.sender = env->pk;
    x.d.recipient = peer;
    int mrc = mdb_get(t->mt, env->dbi_records, &key, &blob);
    if (mrc == 0 && !(rc = crdtdb__record_decode(&rec, blob.mv_data, blob.mv_size))) {
        /* the blob stays valid for the snapshot: the delta borrows it */
        rc = group(&x, (uint16_t)c, (const uint8_t *)id, strlen(id));
        uint32_t o;
        if (!rc && rec.base_kind != CRDTDB__BASE_NONE) {
            rc = crdtdb__delta_origin(&x.d, rec.origins[rec.base_origin], &o);
            if (!rc)
                set_base(&x, rec.base_kind, rec.base_hlc, o);
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
        rc = crdtdb__db_seterr(db, crdtdb__mdb_err(mrc), "export: %s", mdb_strerror(mrc));
    } else if (rc) {
        rc = crdtdb__db_seterr(db, rc, "record '%s' in '%s' is unreadable", id, coll);
    }
    if (rc)
        out->len = 0;
    crdtdb__record_free(&rec);
    crdtdb__delta_free(&x.d);
    crdtdb_txn_abort(t);
    return rc;
}

int crdtdb_db_export_record(crdtdb_db *db, const char *coll, const char *id,
                            const uint8_t *peer, crdtdb_buf *out, int *found)
{
    return crdtdb__db_exit(db, export_record_call(db, coll, id, peer, out, found));
}
