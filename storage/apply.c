/* Apply: verify a delta, check it, merge it — in one write transaction. */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "crdt/array.h"
#include "crdt/buf.h"
#include "crdt/hlc.h"
#include "storage/slot.h"

typedef struct wfilter wfilter;
typedef struct replace replace;

/* The monotonic clock, for crdtdb_apply_info.commit_us. */
static uint64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static int apply(crdtdb_db *db, const uint8_t *delta, size_t len, wfilter *w,
                 const replace *rp, uint64_t behind, crdtdb_apply_info *info);

/* A replace (crdtdb_db_replace): the one record the delta may hold, and
 * the registers of ours to take back first. */
struct replace {
    int coll;
    const char *id;
    uint64_t upto;
};

/* Checks what can be checked before the write transaction: the database,
 * the trust hook, the collections (mapped into local numbers) and the
 * clock. */
static int check(crdtdb_db *db, const crdtdb__delta *d, uint16_t *colls)
{
    crdtdb_env *env = db->env;
    if (d->db_id.n != strlen(db->id) || memcmp(d->db_id.p, db->id, d->db_id.n) != 0)
        return crdtdb__db_seterr(db, CRDTDB_EINVAL, "delta is for database '%.*s', not '%s'",
                                 (int)d->db_id.n, d->db_id.p, db->id);
    if (env->opts.trust && !env->opts.trust(env->opts.trust_ctx, db->id, d->sender))
        return crdtdb__db_seterr(db, CRDTDB_EDENIED,
                                 "replica is not trusted to write to database '%s'", db->id);
    for (uint32_t i = 0; i < d->ncolls; i++) {
        int found = -1;
        for (uint16_t c = 0; c < db->ncoll && found < 0; c++)
            if (strlen(db->colls[c]) == d->colls[i].n &&
                memcmp(db->colls[c], d->colls[i].p, d->colls[i].n) == 0)
                found = c;
        if (found < 0)
            return crdtdb__db_seterr(db, CRDTDB_ENOCOLL, "Collection '%.*s' not found",
                                     (int)d->colls[i].n, d->colls[i].p);
        colls[i] = (uint16_t)found;
    }
    uint64_t now = crdtdb__now_ms(env);
    uint64_t ms = crdtdb__hlc_ms(d->hlc_max);
    if (ms > now && ms - now > env->opts.max_clock_skew_ms)
        return crdtdb__db_seterr(db, CRDTDB_ECLOCK,
                                 "delta stamped %" PRIu64 " ms ahead of local time (local "
                                 "%" PRIu64 " ms, stamp %" PRIu64 " ms; limit %" PRIu64
                                 " ms): retry later",
                                 ms - now, now, ms, env->opts.max_clock_skew_ms);
    return 0;
}

static int forged(crdtdb_db *db, const crdtdb__delta *d, crdtdb__str id, uint16_t coll,
                  int rc)
{
    if (rc != CRDTDB_EFORGED)
        return crdtdb__db_seterr(db, rc, "merge: %s", crdtdb_strerror(rc));
    return crdtdb__db_seterr(db, rc,
                             "delta from %02x%02x%02x%02x… holds a write to record '%.*s' in "
                             "'%s' whose stamp we already hold with a different value: "
                             "refused as forged or corrupt, sender flagged",
                             d->sender[0], d->sender[1], d->sender[2], d->sender[3],
                             (int)id.n, id.p, db->colls[coll]);
}

/* A write filter and its scratch: the record's visible value before and
 * after the merge. */
typedef struct wfilter {
    crdtdb_write_filter fn;
    void *ctx;
    crdtdb_buf old, now;
    size_t nrefused;
} wfilter;

/* What an apply may cost the loop that runs it: a record's load and store
 * beyond its bytes, and each field merged (db.max_apply_work). */
#define WORK_RECORD 1024
#define WORK_FIELD 128

/* The groups of one apply, in record order: one record's groups are merged
 * in one load and one store, however the delta spreads them. */
typedef struct applier {
    crdtdb_txn *t;
    const crdtdb__delta *d;
    const uint16_t *colls; /* delta collection index -> local */
    uint32_t src;
    wfilter *w;
    crdtdb__leaf *leaves; /* scratch: one record's incoming fields */
    size_t applied, work;
    const replace *rp; /* or NULL */
    uint64_t behind;   /* a sender from behind our collection floor: its
                          registers stamped up to here, of records we hold
                          nothing of, may be of records collected here */
    uint64_t gate;     /* crdtdb__gate_for the sender: its adds stamped up
                          to here, of records we hold nothing of, may be of
                          records our resyncer collected: merged, then
                          removed by us (gone[]) */
    uint32_t *gone, ngone, gone_cap; /* indexes into d->recs */
} applier;

/* A group's sort key: its record, then its place in the delta. */
typedef struct gkey {
    uint32_t coll, idx;
    crdtdb__str id;
} gkey;

static int same_record(const gkey *x, const gkey *y)
{
    return x->coll == y->coll && x->id.n == y->id.n &&
           (!x->id.n || memcmp(x->id.p, y->id.p, x->id.n) == 0);
}

static int gkey_cmp(const void *a, const void *b)
{
    const gkey *x = a, *y = b;
    if (x->coll != y->coll)
        return x->coll < y->coll ? -1 : 1;
    size_t n = x->id.n < y->id.n ? x->id.n : y->id.n;
    int c = n ? memcmp(x->id.p, y->id.p, n) : 0;
    if (c)
        return c;
    if (x->id.n != y->id.n)
        return x->id.n < y->id.n ? -1 : 1;
    return x->idx < y->idx ? -1 : x->idx > y->idx;
}

/* Merges groups g[0..n) of one record: bases, then all fields at once.
 * A write filter judges the record once, on its whole change. */
static int merge_record(applier *a, uint16_t coll, const char *id, const gkey *g, uint32_t n)
{
    crdtdb_txn *t = a->t;
    crdtdb_db *db = t->db;
    const crdtdb__delta *d = a->d;
    crdtdb__slot s;
    int rc = crdtdb__slot_load(t, &s, coll, id);
    if (rc)
        return rc;
    crdtdb__record *rec = &db->rec;
    /* with no add or remove of it here, an old register may belong to a
     * record whose remove was collected: at or below the gate, dropped */
    int held = s.exists && rec->base_kind != CRDTDB__BASE_NONE;
    uint64_t gate = held ? 0 : a->behind;
    if (a->rp && crdtdb__record_drop_upto(rec, a->rp->upto))
        return crdtdb__db_seterr(db, CRDTDB_ENOMEM, "out of memory");
    int dropped = rec->ndead > 0;
    wfilter *w = a->w;
    if (w) {
        w->old.len = 0;
        if (s.was_visible && crdtdb__record_render(rec, &w->old))
            return crdtdb__db_seterr(db, CRDTDB_ENOMEM, "out of memory");
    }
    size_t won = 0, nf = 0;
    uint32_t o;
    for (uint32_t k = 0; k < n; k++) {
        const crdtdb__delta_rec *r = &d->recs[g[k].idx];
        if (r->base_kind == CRDTDB__BASE_NONE || r->base_hlc <= gate)
            continue;
        if (!held && r->base_kind == CRDTDB__BASE_ADD && r->base_hlc <= a->gate &&
            (!a->ngone || a->gone[a->ngone - 1] != g[0].idx)) {
            if (crdtdb__array_grow(&a->gone, &a->gone_cap, a->ngone, sizeof *a->gone, 8))
                return crdtdb__db_seterr(db, CRDTDB_ENOMEM, "out of memory");
            a->gone[a->ngone++] = g[0].idx;
        }
        if (crdtdb__record_origin(rec, d->origins[r->base_origin], &o))
            return crdtdb__db_seterr(db, CRDTDB_ENOMEM, "out of memory");
        rc = crdtdb__record_put_base(rec, r->base_kind, r->base_hlc, o, 0);
        if (rc < 0)
            return forged(db, d, r->id, coll, rc);
        won += (size_t)rc;
    }
    for (uint32_t k = 0; k < n; k++) {
        const crdtdb__delta_rec *r = &d->recs[g[k].idx];
        for (uint32_t i = r->first; i < r->first + r->n; i++) {
            const crdtdb__delta_field *f = &d->fields[i];
            if (f->hlc <= gate)
                continue;
            if (crdtdb__record_origin(rec, d->origins[f->origin], &o))
                return crdtdb__db_seterr(db, CRDTDB_ENOMEM, "out of memory");
            crdtdb__leaf l = {f->path, f->path_len, f->kind, o, f->hlc, 0, f->val, f->val_len};
            a->leaves[nf++] = l;
        }
    }
    size_t wonf;
    rc = crdtdb__record_put_many(rec, a->leaves, (uint32_t)nf, &wonf);
    if (rc < 0)
        return forged(db, d, (crdtdb__str){id, (uint32_t)strlen(id)}, coll, rc);
    won += wonf;
    a->work += WORK_RECORD + db->blob.len + nf * WORK_FIELD + (w ? 2 * w->old.len : 0);
    if (!won && !dropped)
        return 0;
    if (w) {
        w->now.len = 0;
        if (crdtdb__record_visible(rec) && crdtdb__record_render(rec, &w->now))
            return crdtdb__db_seterr(db, CRDTDB_ENOMEM, "out of memory");
        if (w->fn(w->ctx, t, db->colls[coll], id, w->old.len ? w->old.data : NULL, w->old.len,
                  w->now.len ? w->now.data : NULL, w->now.len)) {
            w->nrefused++; /* nothing of it is stored; the filter tells the sender */
            return 0;
        }
    }
    a->applied += won;
    rc = crdtdb__slot_store(t, &s, a->src);
    a->work += db->enc.len;
    return rc;
}

/* Merges every record of the delta, each once, within the work budget. */
static int merge_all(applier *a)
{
    const crdtdb__delta *d = a->d;
    crdtdb_db *db = a->t->db;
    if (!d->nrecs)
        return 0;
    gkey *g = malloc(d->nrecs * sizeof *g);
    a->leaves = malloc((d->nfields ? d->nfields : 1) * sizeof *a->leaves);
    int rc = 0;
    if (!g || !a->leaves)
        rc = crdtdb__db_seterr(db, CRDTDB_ENOMEM, "out of memory");
    for (uint32_t i = 0; !rc && i < d->nrecs; i++) {
        g[i].coll = d->recs[i].coll;
        g[i].idx = i;
        g[i].id = d->recs[i].id;
    }
    if (!rc)
        qsort(g, d->nrecs, sizeof *g, gkey_cmp);
    size_t max = db->env->opts.max_apply_work;
    for (uint32_t i = 0, j; !rc && i < d->nrecs; i = j) {
        for (j = i + 1; j < d->nrecs && same_record(&g[i], &g[j]); j++)
            ;
        char id[CRDTDB_ID_MAX + 1];
        if (g[i].id.n)
            memcpy(id, g[i].id.p, g[i].id.n);
        id[g[i].id.n] = 0;
        if (strlen(id) != g[i].id.n) {
            rc = crdtdb__db_seterr(db, CRDTDB_EBADID, "record id contains NUL");
            break;
        }
        uint16_t coll = a->colls[g[i].coll];
        if (a->rp && (coll != a->rp->coll || strcmp(id, a->rp->id) != 0)) {
            rc = crdtdb__db_seterr(db, CRDTDB_EBADVALUE,
                                   "a replace of record '%s' in '%s' holds another record",
                                   a->rp->id, db->colls[a->rp->coll]);
            break;
        }
        rc = merge_record(a, coll, id, g + i, j - i);
        if (!rc && a->work > max && (i > 0 || j < d->nrecs))
            rc = crdtdb__db_seterr(db, CRDTDB_ELIMIT,
                                   "delta too costly to apply: over %zu units of work after "
                                   "%u of its %u record groups; send it in smaller deltas",
                                   max, j, d->nrecs);
    }
    free(g);
    free(a->leaves);
    a->leaves = NULL;
    return rc;
}

/* Checks the sender's fingerprint points against those it sent before (a
 * second history under one id is a fork), then records them. */
static int check_history(crdtdb_db *db, const crdtdb__delta *d, crdtdb__marks *m)
{
    for (uint32_t i = 0; i < d->nfp; i++) {
        int known = 0;
        for (unsigned k = 0; k < m->nfp; k++) {
            if (m->fp[k].seq != d->fp_seq[i])
                continue;
            known = 1;
            if (memcmp(m->fp[k].hash, d->fp_hash[i], CRDTDB__FP_BYTES) != 0)
                return crdtdb__db_seterr(
                    db, CRDTDB_EFORK,
                    "replica %02x%02x%02x%02x… sent two different histories up to its "
                    "sequence %" PRIu64 " (a copied environment?): refused; the copy "
                    "needs a new identity ('crdtdb reset-id')",
                    d->sender[0], d->sender[1], d->sender[2], d->sender[3], d->fp_seq[i]);
        }
        if (known)
            continue;
        /* keep the newest points: when full, replace the oldest, unless
         * this one is older still */
        unsigned slot = m->nfp;
        if (m->nfp == CRDTDB__FP_RING) {
            slot = 0;
            for (unsigned k = 1; k < m->nfp; k++)
                if (m->fp[k].seq < m->fp[slot].seq)
                    slot = k;
            if (d->fp_seq[i] < m->fp[slot].seq)
                continue;
        } else {
            m->nfp++;
        }
        m->fp[slot].seq = d->fp_seq[i];
        memcpy(m->fp[slot].hash, d->fp_hash[i], CRDTDB__FP_BYTES);
    }
    return 0;
}

/* A delta signed with our own key that we did not write: its history must
 * be ours, point for point, and not longer than ours. */
static int check_self(crdtdb_txn *t, const crdtdb__delta *d)
{
    crdtdb_db *db = t->db;
    int fork = d->to > t->seq0;
    for (uint32_t i = 0; !fork && i < d->nfp; i++) {
        uint64_t at;
        const uint8_t *h;
        int found;
        int rc = crdtdb__chain_at(db, t->mt, d->fp_seq[i], &at, &h, &found);
        if (rc)
            return rc;
        fork = found && at == d->fp_seq[i] && memcmp(h, d->fp_hash[i], CRDTDB__FP_BYTES) != 0;
    }
    if (!fork)
        return 0;
    return crdtdb__db_seterr(db, CRDTDB_EFORK,
                             "a delta signed with our own identity carries a history we did "
                             "not write: another replica uses this identity (a copied "
                             "environment?); give one of them a new identity "
                             "('crdtdb reset-id')");
}

/* The sender's watermarks, inside the apply transaction. */
static int update_marks(crdtdb_txn *t, const crdtdb__delta *d, uint64_t *received)
{
    crdtdb_db *db = t->db;
    crdtdb__marks m;
    int found;
    int rc = crdtdb__marks_get(db, t->mt, d->sender, &m, &found);
    if (rc)
        return crdtdb__db_seterr(db, rc, "apply: %s", crdtdb_strerror(rc));
    if ((rc = check_history(db, d, &m)))
        return rc;
    /* Watermarks in a delta made for another replica describe that
     * replica's exchange, not ours: merge its registers, keep ours. */
    int for_us = !d->recipient ||
                 memcmp(d->recipient, db->env->pk, CRDTDB_REPLICA_ID_BYTES) == 0;
    *received = m.received;
    if (!for_us)
        return crdtdb__marks_put(db, t->mt, d->sender, &m);
    /* A peer holding more of our history than we wrote: someone else writes
     * under our identity. */
    if (d->has_ack && d->ack > t->seq0)
        return crdtdb__db_seterr(
            db, CRDTDB_EFORK,
            "a peer has our changes up to sequence %" PRIu64 " but we only wrote %" PRIu64
            ": another replica uses this identity (a copied environment?); give one of "
            "them a new identity ('crdtdb reset-id')",
            d->ack, t->seq0);
    /* Received moves only over a contiguous range, so a dropped or
     * reordered delta leaves a gap that the next export refills. */
    if (d->from <= m.received && d->to > m.received)
        m.received = d->to;
    *received = m.received;
    crdtdb__marks_heard(&m, crdtdb__now_ms(db->env));
    if (d->has_ack && d->ack > m.acked)
        m.acked = d->ack;
    return crdtdb__marks_put(db, t->mt, d->sender, &m);
}

static int apply_call(crdtdb_db *db, const uint8_t *delta, size_t len,
                      crdtdb_apply_info *info)
{
    return crdtdb_db_apply_filtered(db, delta, len, NULL, NULL, info);
}

int crdtdb_db_apply(crdtdb_db *db, const uint8_t *delta, size_t len,
                    crdtdb_apply_info *info)
{
    uint64_t m = crdtdb__db_enter(db);
    return crdtdb__db_exit(db, m, apply_call(db, delta, len, info));
}

static int apply_filtered_call(crdtdb_db *db, const uint8_t *delta, size_t len,
                               crdtdb_write_filter filter, void *ctx, uint64_t behind,
                               crdtdb_apply_info *info)
{
    wfilter wf = {filter, ctx, CRDTDB_BUF_INIT, CRDTDB_BUF_INIT, 0};
    int rc = apply(db, delta, len, filter ? &wf : NULL, NULL, behind, info);
    crdtdb_buf_free(&wf.old);
    crdtdb_buf_free(&wf.now);
    return rc;
}

int crdtdb_db_apply_filtered(crdtdb_db *db, const uint8_t *delta, size_t len,
                             crdtdb_write_filter filter, void *ctx, crdtdb_apply_info *info)
{
    uint64_t m = crdtdb__db_enter(db);
    return crdtdb__db_exit(db, m, apply_filtered_call(db, delta, len, filter, ctx, 0, info));
}

int crdtdb_db_apply_behind(crdtdb_db *db, const uint8_t *delta, size_t len,
                           crdtdb_write_filter filter, void *ctx, uint64_t stamp,
                           crdtdb_apply_info *info)
{
    uint64_t m = crdtdb__db_enter(db);
    return crdtdb__db_exit(db, m, apply_filtered_call(db, delta, len, filter, ctx, stamp, info));
}

static int replace_call(crdtdb_db *db, const char *coll, const char *id, uint64_t upto,
                        const uint8_t *delta, size_t len, crdtdb_apply_info *info)
{
    if (!db || !coll || !id)
        return db ? crdtdb__db_seterr(db, CRDTDB_EINVAL, "no collection or id") : CRDTDB_EINVAL;
    if (info)
        memset(info, 0, sizeof *info);
    int c = crdtdb__db_coll(db, coll);
    if (c < 0)
        return c;
    if (crdtdb__id_check(id, 0))
        return crdtdb__db_seterr(db, CRDTDB_EBADID, "invalid record id: 1..255 bytes of UTF-8");
    replace rp = {c, id, upto};
    if (delta)
        return apply(db, delta, len, NULL, &rp, 0, info);
    /* the peer holds nothing of it: only take ours back */
    crdtdb_txn *t;
    int rc = crdtdb_txn_begin(db, 0, &t);
    if (rc)
        return rc;
    applier a = {t, NULL, NULL, 0, NULL, NULL, 0, 0, &rp, 0, 0, NULL, 0, 0};
    rc = merge_record(&a, (uint16_t)c, id, NULL, 0);
    if (rc) {
        crdtdb_txn_abort(t);
        return rc;
    }
    return crdtdb_txn_commit(t);
}

int crdtdb_db_replace(crdtdb_db *db, const char *coll, const char *id, uint64_t upto,
                      const uint8_t *delta, size_t len, crdtdb_apply_info *info)
{
    uint64_t m = crdtdb__db_enter(db);
    return crdtdb__db_exit(db, m, replace_call(db, coll, id, upto, delta, len, info));
}

/* Decodes delta into db->delta (verifying its signature), checks it and
 * merges it inside *tp, which is begun here when NULL, so that a lone
 * apply verifies before it takes the write lock.  *applied and *received
 * as in crdtdb_apply_info.  On failure the caller aborts *tp. */
static int apply_into(crdtdb_db *db, crdtdb_txn **tp, const uint8_t *delta, size_t len,
                      wfilter *w, const replace *rp, uint64_t behind, size_t *applied,
                      uint64_t *received, size_t *work, size_t *gated)
{
    crdtdb_env *env = db->env;
    crdtdb__delta *d = &db->delta;
    crdtdb__err e = CRDTDB__ERR_INIT;
    int rc = crdtdb__delta_decode(d, delta, len, env->opts.max_delta_size, &env->lim, &e);
    if (rc)
        return crdtdb__db_seterr(db, rc, "%s", e.msg);
    uint16_t colls_stack[64];
    uint16_t *colls = colls_stack;
    if (d->ncolls > 64 && !(colls = malloc(d->ncolls * sizeof *colls)))
        return crdtdb__db_seterr(db, CRDTDB_ENOMEM, "out of memory");
    rc = check(db, d, colls);
    if (!rc && !*tp)
        rc = crdtdb_txn_begin(db, 0, tp);
    crdtdb_txn *t = *tp;
    uint32_t src = 0;
    int self = memcmp(d->sender, env->pk, CRDTDB_REPLICA_ID_BYTES) == 0;
    if (!rc && !self && (rc = crdtdb__peer_num(env, t->mt, d->sender, 1, &src)))
        rc = rc == CRDTDB_EMAPFULL
                 ? crdtdb__db_seterr(db, rc, "a new sender past the %u replicas the "
                                             "environment may number (max_origins)",
                                     (unsigned)env->opts.max_origins)
                 : crdtdb__db_seterr(db, rc, "apply: %s", crdtdb_strerror(rc));
    if (!rc && self)
        rc = rp ? crdtdb__db_seterr(db, CRDTDB_EBADVALUE, "a replace signed by this replica")
                : check_self(t, d);
    applier a = {t, d, colls, src, w, NULL, 0, 0, rp, behind, 0, NULL, 0, 0};
    uint32_t ev0 = t ? t->nevents : 0; /* this apply's events begin here */
    if (!rc && !self && !rp && (rc = crdtdb__gate_for(t, d->sender, &a.gate)))
        crdtdb__db_seterr(db, rc, "apply: %s", crdtdb_strerror(rc));
    if (!rc && rp && !d->nrecs) /* the peer holds nothing of it */
        rc = merge_record(&a, (uint16_t)rp->coll, rp->id, NULL, 0);
    else if (!rc)
        rc = merge_all(&a);
    *applied = a.applied;
    *work = a.work;
    if (!rc && d->nrecs) {
        rc = crdtdb__hlc_recv(&t->hlc, d->hlc_max, crdtdb__now_ms(env),
                              env->opts.max_clock_skew_ms);
        if (rc)
            crdtdb__db_seterr(db, rc, "clock moved during apply");
    }
    /* what may be a collected record coming back goes again, by a remove
     * the sender and everyone else hear of (its copy holds it too) */
    for (uint32_t i = 0; !rc && i < a.ngone; i++) {
        const crdtdb__delta_rec *r = &d->recs[a.gone[i]];
        char id[CRDTDB_ID_MAX + 1];
        memcpy(id, r->id.p, r->id.n); /* merge_all checked it */
        id[r->id.n] = 0;
        rc = crdtdb__remove_relayed(t, colls[r->coll], id);
        if (!rc)
            crdtdb__events_cancel(t, ev0, colls[r->coll], id);
    }
    free(a.gone);
    *gated = a.ngone;
    *received = 0;
    if (!rc && !self && !rp) /* a replace is no range of the peer's log */
        rc = update_marks(t, d, received);
    if (colls != colls_stack)
        free(colls);
    return rc;
}

/* After a failed apply: nothing of it is stored, and a sender caught
 * forging or forked (db->delta, the delta that failed) is flagged. */
static int apply_failed(crdtdb_db *db, crdtdb_txn *t, int rc)
{
    if (!t)
        return rc;
    crdtdb_txn_abort(t);
    const crdtdb__delta *d = &db->delta;
    unsigned flag = rc == CRDTDB_EFORGED ? CRDTDB_PEER_EQUIVOCATED
                    : rc == CRDTDB_EFORK  ? CRDTDB_PEER_FORKED
                                          : 0;
    if (flag && memcmp(d->sender, db->env->pk, CRDTDB_REPLICA_ID_BYTES) != 0) {
        char msg[sizeof db->errmsg];
        memcpy(msg, db->errmsg, sizeof msg); /* the flag write must not hide it */
        int code = db->errcode;
        crdtdb__peer_flag(db, d->sender, flag);
        crdtdb__db_seterr(db, code, "%s", msg);
    }
    return rc;
}

/* What the delta just applied inside t (db->delta) did, but for
 * commit_us. */
static void fill_info(crdtdb_apply_info *info, const crdtdb__delta *d, uint64_t local_from,
                      uint64_t local_to, size_t applied, uint64_t received, const wfilter *w,
                      size_t gated)
{
    info->commit_us = 0;
    info->gated = gated;
    info->local_from = local_from;
    info->local_to = local_to;
    memcpy(info->sender, d->sender, CRDTDB_REPLICA_ID_BYTES);
    info->from = d->from;
    info->to = d->to;
    info->changes = d->nfields;
    for (uint32_t i = 0; i < d->nrecs; i++)
        info->changes += d->recs[i].base_kind != CRDTDB__BASE_NONE;
    info->applied = applied;
    info->received = received;
    info->refused = w ? w->nrefused : 0;
}

static int apply_one(crdtdb_db *db, const uint8_t *delta, size_t len, wfilter *w,
                     const replace *rp, uint64_t behind, crdtdb_apply_info *info)
{
    if (!db || !delta)
        return db ? crdtdb__db_seterr(db, CRDTDB_EINVAL, "no delta") : CRDTDB_EINVAL;
    crdtdb_txn *t = NULL;
    size_t applied = 0, work = 0, gated = 0;
    uint64_t received = 0;
    int rc = apply_into(db, &t, delta, len, w, rp, behind, &applied, &received, &work, &gated);
    if (rc)
        return apply_failed(db, t, rc);
    crdtdb_apply_info mine;
    fill_info(info ? info : &mine, &db->delta, t->seq0, t->seq, applied, received, w, gated);
    uint64_t c0 = mono_us();
    if ((rc = crdtdb_txn_commit(t)))
        return rc;
    if (info)
        info->commit_us = mono_us() - c0;
    return 0;
}

/* One delta applied, its decoding's memory let go of when large (a peer
 * chooses how large). */
static int apply(crdtdb_db *db, const uint8_t *delta, size_t len, wfilter *w,
                 const replace *rp, uint64_t behind, crdtdb_apply_info *info)
{
    int rc = apply_one(db, delta, len, w, rp, behind, info);
    if (db)
        crdtdb__delta_trim(&db->delta);
    return rc;
}

static int apply_batch_one(crdtdb_db *db, const uint8_t *const *deltas, const size_t *lens,
                           size_t n, crdtdb_apply_info *infos, size_t *done)
{
    if (!db)
        return CRDTDB_EINVAL;
    if (!done || (n && (!deltas || !lens || !infos)))
        return crdtdb__db_seterr(db, CRDTDB_EINVAL, "no deltas");
    *done = 0;
    crdtdb_txn *t = NULL;
    size_t i, work = 0, max = db->env->opts.max_apply_work;
    /* the batch is one bounded unit of work, as one apply is: it ends
     * where what it merged reaches max_apply_work (the first delta always
     * goes), so it does at most twice that */
    for (i = 0; i < n && (i == 0 || work < max); i++) {
        uint64_t from = t ? t->seq : 0;
        size_t applied = 0, w = 0, gated = 0;
        uint64_t received = 0;
        uint64_t msgs = db->msgno; /* a failing step may write no message */
        int rc = deltas[i] ? apply_into(db, &t, deltas[i], lens[i], NULL, NULL, 0, &applied,
                                        &received, &w, &gated)
                           : crdtdb__db_seterr(db, CRDTDB_EINVAL, "no delta");
        if (rc) {
            char msg[sizeof db->errmsg];
            snprintf(msg, sizeof msg, "%s",
                     crdtdb__db_msg_since(db, rc, msgs) ? db->errmsg : crdtdb_strerror(rc));
            crdtdb__db_seterr(db, rc, "delta %zu of %zu: %s", i + 1, n, msg);
            *done = i;
            return apply_failed(db, t, rc);
        }
        work += w;
        fill_info(&infos[i], &db->delta, i ? from : t->seq0, t->seq, applied, received, NULL,
                  gated);
    }
    if (!t)
        return 0;
    uint64_t c0 = mono_us();
    int rc = crdtdb_txn_commit(t);
    if (rc)
        return rc; /* *done 0: nothing of it stored */
    infos[i - 1].commit_us = mono_us() - c0; /* one commit, counted once */
    *done = i;
    return 0;
}

/* The batch applied, its decoding's memory let go of as apply's is. */
static int apply_batch_call(crdtdb_db *db, const uint8_t *const *deltas, const size_t *lens,
                            size_t n, crdtdb_apply_info *infos, size_t *done)
{
    int rc = apply_batch_one(db, deltas, lens, n, infos, done);
    if (db)
        crdtdb__delta_trim(&db->delta);
    return rc;
}

int crdtdb_db_apply_batch(crdtdb_db *db, const uint8_t *const *deltas, const size_t *lens,
                          size_t n, crdtdb_apply_info *infos, size_t *done)
{
    uint64_t m = crdtdb__db_enter(db);
    return crdtdb__db_exit(db, m, apply_batch_call(db, deltas, lens, n, infos, done));
}
