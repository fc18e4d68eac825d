/*
 * The sync session's store over a crdtdb_db (transport/session_store.h):
 * the one place the session's needs meet LMDB-backed storage.  Every call
 * into storage's exporter made for a session is here, so the exporter can
 * change shape behind this file alone.
 */
#include "transport/session_store.h"

#include <string.h>

#include "crdt/buf.h"
#include "crdt/delta.h"
#include "crdt/record.h"
#include "crdt/hlc.h"

static crdtdb_db *db_of(void *ctx) { return ctx; }

static void store_info(void *ctx, crdtdb__store_info *out)
{
    crdtdb_db *db = db_of(ctx);
    crdtdb_env_options eo;
    crdtdb_env_options_get(crdtdb_db_env(db), &eo);
    memset(out, 0, sizeof *out);
    out->db_id = crdtdb_db_id(db);
    crdtdb_env_replica_id(crdtdb_db_env(db), out->self);
    out->max_delta_size = eo.max_delta_size;
    out->max_clock_skew_ms = eo.max_clock_skew_ms;
}

/* The database's env clock (so tests and embedders with their own time
 * source drive the session's retries). */
static uint64_t store_now_ms(void *ctx)
{
    crdtdb_env_options eo;
    crdtdb_env_options_get(crdtdb_db_env(db_of(ctx)), &eo);
    return eo.clock(eo.clock_ctx);
}

static const char *store_errmsg(void *ctx) { return crdtdb_db_errmsg(db_of(ctx)); }

static int store_seq(void *ctx, uint64_t *last) { return crdtdb_db_seq(db_of(ctx), NULL, last); }
static int store_seq_sent(void *ctx, uint64_t *upto)
{
    return crdtdb_db_seq_sent(db_of(ctx), NULL, upto);
}

typedef struct one_sink {
    crdtdb__store_give give;
    void *session;
    int err;
} one_sink;

/* Hands over the first delta (or the empty range), then stops the export. */
static int one_delta(void *ctx, const uint8_t *delta, size_t len)
{
    one_sink *k = ctx;
    k->err = k->give(k->session, len ? delta : NULL, len);
    return k->err ? k->err : CRDTDB_STOP;
}

static int store_next_delta(void *ctx, const crdtdb__store_want *want, crdtdb__store_give give,
                            void *session, uint64_t *to)
{
    crdtdb_export_options eo;
    memset(&eo, 0, sizeof eo);
    eo.flags = want->flags;
    eo.max_bytes = want->max_bytes;
    eo.visible = want->visible;
    eo.hidden = want->visible ? want->hidden : NULL;
    eo.filter_ctx = want->filter_ctx;
    eo.resume = want->resume;
    eo.resume_len = want->resume_len;
    crdtdb_export_info info;
    memset(&info, 0, sizeof info);
    one_sink k = {give, session, 0};
    int rc = crdtdb_db_export_for(db_of(ctx), want->after, want->peer, &eo, one_delta, &k, &info);
    *to = info.to;
    if (want->resume_out) {
        memcpy(want->resume_out, info.resume, info.resume_len);
        *want->resume_out_len = info.resume_len;
    }
    return k.err ? k.err : rc;
}

static int store_record_delta(void *ctx, const char *coll, const char *id, const uint8_t *peer,
                              int (*visible)(void *, crdtdb_txn *, const char *, const char *,
                                             const uint8_t *, size_t),
                              void *visible_ctx, crdtdb_buf *out, int *found)
{
    crdtdb_db *db = db_of(ctx);
    *found = 0;
    if (visible) { /* only a visible record the filter allows */
        crdtdb_txn *t;
        int have = 0, rc = crdtdb_txn_begin(db, CRDTDB_TXN_RDONLY, &t);
        if (!rc)
            rc = crdtdb_db_get_by_id(db, t, coll, id, out, &have);
        int may = !rc && have && visible(visible_ctx, t, coll, id, out->data, out->len);
        if (t)
            crdtdb_txn_abort(t);
        if (rc || !may)
            return rc;
    }
    return crdtdb_db_export_record(db, coll, id, peer, out, found);
}

/* Decodes a delta the apply has already judged, under db's own limits;
 * the caller frees d (crdtdb__delta_free) either way. */
static int decode_again(crdtdb_db *db, const uint8_t *p, size_t len, crdtdb__delta *d)
{
    crdtdb_env_options eo;
    crdtdb_env_options_get(crdtdb_db_env(db), &eo);
    crdtdb__limits lim = {eo.max_value_size, eo.max_depth, eo.max_path_bytes, eo.max_fields,
                          eo.max_delta_groups};
    crdtdb__err e = CRDTDB__ERR_INIT;
    crdtdb__delta_init(d);
    return crdtdb__delta_decode(d, p, len, eo.max_delta_size, &lim, &e);
}

/* After an ECLOCK refusal: the newest stamp and the range's end, decoded
 * again (only on a refusal, which is rare). */
static void clock_ahead(crdtdb_db *db, const uint8_t *p, size_t len, uint64_t *ahead_ms,
                        uint64_t *to)
{
    crdtdb__delta d;
    *ahead_ms = *to = UINT64_MAX;
    if (decode_again(db, p, len, &d) == 0) {
        *ahead_ms = crdtdb__hlc_ms(d.hlc_max);
        *to = d.to;
    }
    crdtdb__delta_free(&d);
}

static int store_apply(void *ctx, const uint8_t *delta, size_t len, crdtdb_write_filter filter,
                       void *filter_ctx, uint64_t behind, crdtdb_apply_info *info,
                       uint64_t *ahead_ms)
{
    crdtdb_db *db = db_of(ctx);
    int rc = behind ? crdtdb_db_apply_behind(db, delta, len, filter, filter_ctx, behind, info)
                    : crdtdb_db_apply_filtered(db, delta, len, filter, filter_ctx, info);
    if (rc == CRDTDB_ECLOCK)
        clock_ahead(db, delta, len, ahead_ms, &info->to);
    return rc;
}

static int store_replace(void *ctx, const char *coll, const char *id, uint64_t upto,
                         const uint8_t *delta, size_t len)
{
    return crdtdb_db_replace(db_of(ctx), coll, id, upto, delta, len, NULL);
}

static int store_purge(void *ctx, const char *coll, const char *id)
{
    return crdtdb_db_purge(db_of(ctx), coll, id);
}

static int store_peer_get(void *ctx, const uint8_t *peer, uint64_t *received, uint64_t *acked)
{
    crdtdb_peer p;
    int found;
    int rc = crdtdb_db_peer_get(db_of(ctx), peer, &p, &found);
    *received = rc ? 0 : p.received;
    *acked = rc ? 0 : p.acked;
    return rc;
}

static int store_peer_ack(void *ctx, const uint8_t *peer, uint64_t acked, uint64_t stable)
{
    /* stable: the session saw the peer's log up to the ack's own mark */
    int rc = stable ? crdtdb_db_peer_ack_at(db_of(ctx), peer, stable, 0) : 0;
    return rc ? rc : crdtdb_db_peer_ack(db_of(ctx), peer, acked);
}

static int store_horizon(void *ctx, const uint8_t *peer, uint64_t *floor, uint64_t *stamp)
{
    return crdtdb_db_horizon_for(db_of(ctx), peer, floor, stamp);
}

static int store_peer_leave(void *ctx, const uint8_t *peer, int left)
{
    return crdtdb_db_peer_leave(db_of(ctx), peer, left);
}

static int store_peer_flags(void *ctx, const uint8_t *peer, unsigned *flags)
{
    crdtdb_peer p;
    int found;
    int rc = crdtdb_db_peer_get(db_of(ctx), peer, &p, &found);
    *flags = rc ? 0 : p.flags;
    return rc;
}

static int store_peer_resync(void *ctx, const uint8_t *peer, int on, uint64_t stamp)
{
    return crdtdb_db_peer_resync(db_of(ctx), peer, on, stamp);
}

/* The record names of a delta already applied (so it decodes). */
static int store_resync_keys(void *ctx, const uint8_t *p, size_t len, crdtdb_buf *keys)
{
    crdtdb__delta d;
    int rc = decode_again(db_of(ctx), p, len, &d);
    static const char nul = 0;
    for (uint32_t i = 0; !rc && i < d.nrecs; i++) {
        const crdtdb__str *c = &d.colls[d.recs[i].coll], *id = &d.recs[i].id;
        /* 'b': with its add or remove; 'l': leaves only, which say nothing
         * of a base it collected */
        char held = d.recs[i].base_kind == CRDTDB__BASE_NONE ? 'l' : 'b';
        if (crdtdb__buf_append(keys, c->p, c->n) || crdtdb__buf_append(keys, &nul, 1) ||
            crdtdb__buf_append(keys, id->p, id->n) || crdtdb__buf_append(keys, &nul, 1) ||
            crdtdb__buf_append(keys, &held, 1))
            rc = CRDTDB_ENOMEM;
    }
    crdtdb__delta_free(&d);
    return rc;
}

static int store_resync_end(void *ctx, const uint8_t *peer, uint64_t stamp, uint64_t acked,
                            int (*held)(void *, const char *, const char *), void *hctx,
                            unsigned flags, size_t *n)
{
    return crdtdb_db_resync_end(db_of(ctx), peer, stamp, acked, held, hctx, flags, n);
}

static int store_readonly(void *ctx, int ro, int durable)
{
    crdtdb_db *db = db_of(ctx);
    crdtdb_db_set_readonly(db, ro);
    if (!durable)
        return 0;
    int was;
    int rc = crdtdb_db_marked_readonly(db, &was);
    if (!rc && was != ro)
        rc = crdtdb_db_mark_readonly(db, ro);
    return rc;
}

static int store_discard_unsent(void *ctx, const uint8_t *peer, size_t *n)
{
    uint64_t received, acked;
    int rc = store_peer_get(ctx, peer, &received, &acked);
    return rc ? rc : crdtdb_db_discard_unsent(db_of(ctx), acked, n);
}

void crdtdb__session_store_db(crdtdb_db *db, crdtdb__session_store *out)
{
    memset(out, 0, sizeof *out);
    out->ctx = db;
    out->info = store_info;
    out->now_ms = store_now_ms;
    out->errmsg = store_errmsg;
    out->seq = store_seq;
    out->seq_sent = store_seq_sent;
    out->next_delta = store_next_delta;
    out->record_delta = store_record_delta;
    out->apply = store_apply;
    out->replace = store_replace;
    out->purge = store_purge;
    out->peer_get = store_peer_get;
    out->peer_ack = store_peer_ack;
    out->horizon = store_horizon;
    out->peer_flags = store_peer_flags;
    out->peer_resync = store_peer_resync;
    out->resync_keys = store_resync_keys;
    out->resync_end = store_resync_end;
    out->peer_leave = store_peer_leave;
    out->readonly = store_readonly;
    out->discard_unsent = store_discard_unsent;
}

int crdtdb_session_open(crdtdb_db *db, const crdtdb_session_options *opts,
                        crdtdb_session **out)
{
    if (!db || !out)
        return CRDTDB_EINVAL;
    crdtdb__session_store st;
    crdtdb__session_store_db(db, &st);
    return crdtdb__session_open_store(&st, opts, out);
}
