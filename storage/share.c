/*
 * Shared export: a server pushing one commit to many peers signs it once.
 * A range of the log that holds nothing received from the asking peer is
 * the same unaddressed delta for everyone, so it is made once and kept in a
 * small cache on the handle; a peer whose own changes are in the range gets
 * a delta made for it, which leaves them out.
 */
#include <stdlib.h>
#include <string.h>

#include "storage/internal.h"

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

/* Sink that keeps the first delta and stops. */
typedef struct capture {
    uint8_t *data;
    size_t len;
} capture;

static int capture_one(void *ctx, const uint8_t *delta, size_t len)
{
    capture *c = ctx;
    if (len && !(c->data = malloc(len)))
        return CRDTDB_ENOMEM;
    if (len)
        memcpy(c->data, delta, len);
    c->len = len; /* 0: the range holds nothing to send */
    return 1;
}

/* The shared delta starting at `since`: cached, or made now unless it
 * would hold registers of peer number `num` (then NULL with *rc 0: the
 * caller makes one for that peer).  NULL with *rc set on error. */
static entry *entry_get(crdtdb_db *db, uint64_t since, uint32_t num, size_t max_bytes, int *rc)
{
    crdtdb__shared *sh = db->shared;
    *rc = 0;
    for (unsigned i = 0; i < sh->n; i++)
        if (sh->e[i].from == since && sh->e[i].max_bytes == max_bytes) {
            if (num && crdtdb__export_has_src(&sh->e[i].srcs, num))
                return NULL;
            sh->e[i].used = ++sh->tick;
            return &sh->e[i];
        }
    capture c = {NULL, 0};
    crdtdb_export_info inf;
    crdtdb__export_srcs srcs;
    srcs.stop = num; /* found before signing: no signature wasted */
    int r = crdtdb__export(db, since, NULL, CRDTDB_EXPORT_NO_EMPTY, max_bytes, NULL, capture_one, &c, &inf, &srcs);
    if (r != 1) {
        free(c.data);
        if (r == 0) /* nothing to send: cannot happen below `last` */
            *rc = crdtdb__db_seterr(db, CRDTDB_EIO, "export made no delta");
        else if (r != CRDTDB__EXPORT_STOPPED)
            *rc = r;
        return NULL;
    }
    /* room: at most two deltas' worth of bytes, evicting the least used */
    size_t budget = 2 * db->env->opts.max_delta_size;
    while (sh->n && (sh->n == SHARED_MAX || sh->bytes + c.len > budget)) {
        unsigned lru = 0;
        for (unsigned i = 1; i < sh->n; i++)
            if (sh->e[i].used < sh->e[lru].used)
                lru = i;
        drop(sh, lru);
    }
    entry *e = &sh->e[sh->n++];
    e->from = since;
    e->max_bytes = max_bytes;
    e->to = inf.to;
    e->data = c.data;
    e->len = c.len;
    e->changes = inf.changes;
    e->srcs = srcs;
    e->used = ++sh->tick;
    sh->bytes += c.len;
    return e;
}

static int export_for_call(crdtdb_db *db, uint64_t since, const uint8_t *peer,
                           const crdtdb_export_options *opts, crdtdb_delta_sink sink, void *ctx,
                           crdtdb_export_info *info)
{
    if (!db || !sink)
        return CRDTDB_EINVAL;
    unsigned flags = opts ? opts->flags : 0;
    size_t max_bytes = opts ? opts->max_bytes : 0;
    if (opts && opts->visible) /* what a peer sees is its own: nothing shared */
        flags &= ~CRDTDB_EXPORT_SHARED;
    if (!(flags & CRDTDB_EXPORT_SHARED))
        return crdtdb__export(db, since, peer, flags, max_bytes, opts, sink, ctx, info, NULL);
    crdtdb_export_info sum;
    memset(&sum, 0, sizeof sum);
    sum.from = sum.to = since;
    if (info)
        *info = sum;
    if (!db->shared && !(db->shared = calloc(1, sizeof *db->shared)))
        return crdtdb__db_seterr(db, CRDTDB_ENOMEM, "out of memory");
    crdtdb__shared *sh = db->shared;
    if (memcmp(sh->signer, db->env->pk, sizeof sh->signer) != 0) {
        while (sh->n)
            drop(sh, 0);
        memcpy(sh->signer, db->env->pk, sizeof sh->signer);
    }
    crdtdb_txn *t;
    int rc = crdtdb_txn_begin(db, CRDTDB_TXN_RDONLY, &t);
    if (rc)
        return rc;
    uint64_t last;
    uint32_t num = 0; /* an unknown peer has sent us nothing */
    rc = crdtdb__seq_read(db->env, t->mt, db->num, &last);
    if (!rc && peer && !(flags & CRDTDB_EXPORT_ALL))
        rc = crdtdb__peer_num(db->env, t->mt, peer, 0, &num);
    crdtdb_txn_abort(t);
    while (!rc && sum.to < last) {
        entry *e = entry_get(db, sum.to, num, max_bytes, &rc);
        if (rc)
            break;
        if (!e) { /* its own changes are in the range: leave them out */
            capture c = {NULL, 0};
            crdtdb_export_info inf;
            rc = crdtdb__export(db, sum.to, peer, flags, max_bytes, NULL, capture_one, &c, &inf, NULL);
            if (rc == 1) {
                sum.deltas += c.len != 0;
                sum.changes += inf.changes;
                sum.bytes += c.len;
                sum.to = inf.to;
                rc = sink(ctx, c.len ? c.data : NULL, c.len);
            } else if (rc == 0) {
                rc = crdtdb__db_seterr(db, CRDTDB_EIO, "export made no delta");
            }
            free(c.data);
        } else {
            sum.deltas += e->len != 0;
            sum.changes += e->changes;
            sum.bytes += e->len;
            sum.to = e->to;
            if (e->len || (flags & CRDTDB_EXPORT_NO_EMPTY))
                rc = sink(ctx, e->len ? e->data : NULL, e->len);
        }
    }
    if (info)
        *info = sum;
    return rc;
}

int crdtdb_db_export_for(crdtdb_db *db, uint64_t since, const uint8_t *peer,
                         const crdtdb_export_options *opts, crdtdb_delta_sink sink, void *ctx,
                         crdtdb_export_info *info)
{
    return crdtdb__db_exit(db, export_for_call(db, since, peer, opts, sink, ctx, info));
}
