/*
 * Shared export: a server pushing one commit to many peers signs it once.
 * A range of the log that holds nothing received from the asking peer is
 * the same unaddressed delta for everyone, so it is made once and kept in a
 * small cache on the handle; a peer whose own changes are in the range gets
 * a delta made for it, which leaves them out.
 */
#include <stdlib.h>
#include <string.h>

#include "storage/export.h"

#define SHARED_MAX 16 /* cached deltas; bytes are bounded too (below) */

typedef struct entry {
    uint64_t from, to;
    size_t max_bytes; /* the cap it was made under: part of its key */
    uint8_t *data;
    size_t len;
    size_t changes;
    crdtdb__export_srcs srcs;
    uint64_t used; /* for least-recently-used eviction */
} entry;

struct crdtdb__shared {
    entry e[SHARED_MAX];
    unsigned n;
    size_t bytes;
    uint64_t tick;
    uint8_t signer[CRDTDB_REPLICA_ID_BYTES]; /* a reset identity empties it */
    uint64_t floor; /* the collection floor its deltas were made under: a
                       collection by another process empties it */
    uint64_t lfloor; /* the log floor, likewise (a trim) */
};

static void drop(crdtdb__shared *sh, unsigned i)
{
    sh->bytes -= sh->e[i].len;
    free(sh->e[i].data);
    sh->e[i] = sh->e[--sh->n];
}

void crdtdb__shared_free(crdtdb__shared *sh)
{
    if (!sh)
        return;
    while (sh->n)
        drop(sh, 0);
    free(sh);
}

/* The cached delta starting at `since` under cap max_bytes, or NULL. */
static entry *entry_find(crdtdb__shared *sh, uint64_t since, size_t max_bytes)
{
    for (unsigned i = 0; i < sh->n; i++)
        if (sh->e[i].from == since && sh->e[i].max_bytes == max_bytes)
            return &sh->e[i];
    return NULL;
}

/* Keeps a copy of the delta x just signed.  NULL on ENOMEM (message set). */
static entry *entry_add(crdtdb_db *db, crdtdb__exporter *x, uint64_t since, size_t max_bytes,
                        const uint8_t *delta, size_t len, size_t changes)
{
    crdtdb__shared *sh = db->shared;
    uint8_t *data = NULL;
    if (len && !(data = malloc(len))) {
        crdtdb__db_seterr(db, CRDTDB_ENOMEM, "out of memory");
        return NULL;
    }
    if (len)
        memcpy(data, delta, len);
    /* room: at most two deltas' worth of bytes, evicting the least used */
    size_t budget = 2 * db->env->opts.max_delta_size;
    while (sh->n && (sh->n == SHARED_MAX || sh->bytes + len > budget)) {
        unsigned lru = 0;
        for (unsigned i = 1; i < sh->n; i++)
            if (sh->e[i].used < sh->e[lru].used)
                lru = i;
        drop(sh, lru);
    }
    entry *e = &sh->e[sh->n++];
    e->from = since;
    e->max_bytes = max_bytes;
    e->to = crdtdb__exporter_info(x)->to;
    e->data = data;
    e->len = len;
    e->changes = changes;
    e->srcs = crdtdb__exporter_srcs(x);
    e->used = ++sh->tick;
    sh->bytes += len;
    return e;
}

/* An export from below the log floor walks the records (export.c), and
 * its deltas' ranges do not say where the walk stopped: it goes unshared,
 * one delta per call like the rest, info->resume saying where it is.  x,
 * the exporter that would walk, is ended first (one snapshot per handle at
 * a time). */
static int walk_unshared(crdtdb_db *db, crdtdb__exporter *x, const crdtdb__export_opts *po,
                         uint64_t since, crdtdb_delta_sink sink, void *ctx,
                         crdtdb_export_info *sum)
{
    crdtdb__exporter_end(x);
    crdtdb__export_opts o = *po;
    o.since = since;
    o.flags &= ~CRDTDB_EXPORT_SHARED;
    o.withhold = NULL;
    if (since != po->since)
        o.resume = NULL, o.resume_len = 0;
    crdtdb_export_info in;
    memset(&in, 0, sizeof in); /* an export that fails to begin fills nothing */
    int rc = crdtdb__export_run(db, &o, sink, ctx, &in);
    if (rc < 0)
        return rc;
    sum->deltas += in.deltas;
    sum->changes += in.changes;
    sum->bytes += in.bytes;
    sum->to = in.to;
    memcpy(sum->resume, in.resume, in.resume_len);
    sum->resume_len = in.resume_len;
    return rc;
}

/* One delta made for `peer` alone from `since` (its own changes in the
 * range are left out), passed to sink once the snapshot is closed (as
 * every shared delta is: the sink may use the handle). */
static int own_delta(crdtdb_db *db, const crdtdb__export_opts *po, uint64_t since,
                     crdtdb_export_info *sum, crdtdb_delta_sink sink, void *ctx)
{
    crdtdb__export_opts o = *po;
    o.since = since;
    o.withhold = NULL;
    crdtdb__exporter *x;
    int rc = crdtdb__exporter_begin(db, &o, &x);
    if (rc)
        return rc;
    if (crdtdb__exporter_walks(x)) /* trimmed meanwhile */
        return walk_unshared(db, x, po, since, sink, ctx, sum);
    const uint8_t *delta;
    size_t len;
    uint8_t *copy = NULL;
    rc = crdtdb__exporter_next(x, &delta, &len);
    if (rc == CRDTDB_ENOTFOUND) /* the first delta always comes */
        rc = crdtdb__db_seterr(db, CRDTDB_EIO, "export made no delta");
    if (!rc && len && !(copy = malloc(len)))
        rc = crdtdb__db_seterr(db, CRDTDB_ENOMEM, "out of memory");
    if (!rc) {
        const crdtdb_export_info *in = crdtdb__exporter_info(x);
        if (len)
            memcpy(copy, delta, len);
        sum->deltas += len != 0;
        sum->changes += in->changes;
        sum->bytes += len;
        sum->to = in->to;
    }
    crdtdb__exporter_end(x);
    if (!rc)
        rc = sink(ctx, copy, len);
    free(copy);
    return rc;
}

/* crdtdb_db_export_for with CRDTDB_EXPORT_SHARED: one snapshot makes the
 * unaddressed deltas the cache lacks; a range holding the peer's own
 * changes gets a delta of its own. */
static int export_shared(crdtdb_db *db, const crdtdb__export_opts *po, crdtdb_delta_sink sink,
                         void *ctx, crdtdb_export_info *sum)
{
    if (!db->shared && !(db->shared = calloc(1, sizeof *db->shared)))
        return crdtdb__db_seterr(db, CRDTDB_ENOMEM, "out of memory");
    crdtdb__shared *sh = db->shared;
    if (memcmp(sh->signer, db->env->pk, sizeof sh->signer) != 0) {
        while (sh->n)
            drop(sh, 0);
        memcpy(sh->signer, db->env->pk, sizeof sh->signer);
    }
    crdtdb__export_opts so;
    memset(&so, 0, sizeof so);
    so.since = po->since;
    so.flags = CRDTDB_EXPORT_NO_EMPTY;
    so.max_bytes = po->max_bytes;
    so.withhold = po->flags & CRDTDB_EXPORT_ALL ? NULL : po->peer;
    so.resume = po->resume; /* checked by the first snapshot only */
    so.resume_len = po->resume_len;
    crdtdb__exporter *x; /* the shared stream, while it is where sum->to is */
    int rc = crdtdb__exporter_begin(db, &so, &x);
    so.resume = NULL;
    so.resume_len = 0;
    if (rc)
        return rc;
    if (crdtdb__exporter_walks(x))
        return walk_unshared(db, x, po, po->since, sink, ctx, sum);
    uint64_t floor;
    if ((rc = crdtdb__exporter_floor(x, &floor))) {
        crdtdb__exporter_end(x);
        return crdtdb__db_seterr(db, rc, "export: %s", crdtdb_strerror(rc));
    }
    /* deltas made before a collection may hold what went; before a trim,
     * they start where a walk is needed now */
    if (floor != sh->floor || crdtdb__exporter_lfloor(x) != sh->lfloor) {
        while (sh->n)
            drop(sh, 0);
        sh->floor = floor;
        sh->lfloor = crdtdb__exporter_lfloor(x);
    }
    uint64_t last = crdtdb__exporter_last(x);
    uint32_t num = crdtdb__exporter_withhold_num(x); /* 0: nothing withheld */
    while (!rc && sum->to < last) {
        uint64_t since = sum->to;
        entry *e = entry_find(sh, since, po->max_bytes);
        if (e && !e->len && e->to < last) {
            /* an empty range cached when the log ended there (a copy made
             * again starts past one): used now, it would be a SKIP and the
             * next delta would start at its end, past the watermark the
             * peer holds durably, so the peer could never record it.  Made
             * again, the delta covers it from `since` */
            drop(sh, (unsigned)(e - sh->e));
            e = NULL;
        }
        int mine = 0; /* the range holds the peer's own changes */
        if (e) {
            mine = num && crdtdb__export_has_src(&e->srcs, num);
            if (!mine)
                e->used = ++sh->tick;
        } else {
            if (!x || crdtdb__exporter_info(x)->to != since) {
                crdtdb__exporter_end(x);
                so.since = since;
                if ((rc = crdtdb__exporter_begin(db, &so, &x))) {
                    x = NULL;
                    break;
                }
                if (crdtdb__exporter_walks(x)) /* a trim since the first */
                    return walk_unshared(db, x, po, since, sink, ctx, sum);
            }
            size_t changes = crdtdb__exporter_info(x)->changes;
            if ((rc = crdtdb__exporter_fill(x))) {
                if (rc == CRDTDB_ENOTFOUND) /* nothing to send: cannot happen below `last` */
                    rc = crdtdb__db_seterr(db, CRDTDB_EIO, "export made no delta");
                break;
            }
            mine = crdtdb__exporter_withheld(x); /* found before signing */
            const uint8_t *delta;
            size_t len;
            if (!mine && ((rc = crdtdb__exporter_sign(x, &delta, &len)) ||
                          !(e = entry_add(db, x, since, po->max_bytes, delta, len,
                                          crdtdb__exporter_info(x)->changes - changes)))) {
                rc = rc ? rc : CRDTDB_ENOMEM;
                break;
            }
        }
        /* asked to sign even an empty range (a session moving the peer's
         * watermark: a long skip, a proof, a floor crossed), as the
         * unshared export does: a delta made for it, else nothing would go
         * and the caller would count the range as sent */
        if (!mine && !e->len && !(po->flags & CRDTDB_EXPORT_NO_EMPTY))
            mine = 1;
        if (mine) { /* its own changes are in the range: leave them out */
            crdtdb__exporter_end(x); /* one snapshot per handle at a time */
            x = NULL;
            rc = own_delta(db, po, since, sum, sink, ctx);
            continue;
        }
        sum->deltas += e->len != 0;
        sum->changes += e->changes;
        sum->bytes += e->len;
        sum->to = e->to;
        if (!(e->len || (po->flags & CRDTDB_EXPORT_NO_EMPTY)))
            continue;
        crdtdb__exporter_end(x); /* the sink may use the handle (the cache owns e) */
        x = NULL;
        rc = sink(ctx, e->len ? e->data : NULL, e->len);
    }
    crdtdb__exporter_end(x);
    return rc;
}

static int export_for_call(crdtdb_db *db, uint64_t since, const uint8_t *peer,
                           const crdtdb_export_options *opts, crdtdb_delta_sink sink,
                           void *ctx, crdtdb_export_info *info)
{
    if (!db || !sink)
        return CRDTDB_EINVAL;
    crdtdb__export_opts o;
    memset(&o, 0, sizeof o);
    o.since = since;
    o.peer = peer;
    o.flags = opts ? opts->flags : 0;
    o.max_bytes = opts ? opts->max_bytes : 0;
    o.filter = opts;
    o.resume = opts ? opts->resume : NULL;
    o.resume_len = opts && opts->resume ? opts->resume_len : 0;
    if (opts && opts->visible) /* what a peer sees is its own: nothing shared */
        o.flags &= ~CRDTDB_EXPORT_SHARED;
    if (!(o.flags & CRDTDB_EXPORT_SHARED))
        return crdtdb__export_run(db, &o, sink, ctx, info);
    crdtdb_export_info sum;
    memset(&sum, 0, sizeof sum);
    sum.from = sum.to = since;
    int rc = export_shared(db, &o, sink, ctx, &sum);
    if (rc > 0) /* the sink's CRDTDB_STOP */
        rc = 0;
    if (info)
        *info = sum;
    return rc;
}

int crdtdb_db_export_for(crdtdb_db *db, uint64_t since, const uint8_t *peer,
                         const crdtdb_export_options *opts, crdtdb_delta_sink sink, void *ctx,
                         crdtdb_export_info *info)
{
    uint64_t m = crdtdb__db_enter(db);
    return crdtdb__db_exit(db, m, export_for_call(db, since, peer, opts, sink, ctx, info));
}
