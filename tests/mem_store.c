/*
 * The in-memory session store (mem_store.h).  A received delta's outcome
 * comes from sig[0] % 8 of its envelope (the signature is not verified):
 *   0-3 applied; 4 ECLOCK (stamped ahead); 5 ELIMIT (too costly);
 *   6 EBADSIG; 7 applied with record ("d", "r") put to the write filter.
 * It covers the peer's (received, received + 1 + sig[1] % 3] and numbers
 * one change of ours.  What it sends are stand-in bytes, not deltas: the
 * engine never looks inside what it sends.
 */
#include "tests/mem_store.h"

#include <stdio.h>
#include <string.h>

#include "crdt/buf.h"
#include "crdt/delta.h"

static void m_info(void *ctx, crdtdb__store_info *out)
{
    mem_store *m = ctx;
    memset(out, 0, sizeof *out);
    out->db_id = m->db_id;
    memcpy(out->self, m->self, sizeof out->self);
    out->max_delta_size = m->max_delta_size;
    out->max_clock_skew_ms = m->skew_ms;
}

static uint64_t m_now(void *ctx) { return ((mem_store *)ctx)->now_ms; }

static const char *m_errmsg(void *ctx) { return ((mem_store *)ctx)->errmsg; }

static int fail(mem_store *m, int code, const char *what)
{
    snprintf(m->errmsg, sizeof m->errmsg, "mem store: %s", what);
    return code;
}

static int m_seq(void *ctx, uint64_t *last)
{
    *last = ((mem_store *)ctx)->last;
    return 0;
}

/* Our odd changes hold nothing for the peer (its own, echoed): a range
 * of only those is a skip when allowed.  A read filter hides every third
 * change (a PURGE).  A delta ends at the first change for the peer. */
static int m_next(void *ctx, const crdtdb__store_want *w, crdtdb__store_give give, void *session,
                  uint64_t *to)
{
    mem_store *m = ctx;
    m->exports++;
    uint64_t at = w->after + 1;
    while (at < m->last && at % 2 == 1)
        at++;
    *to = at;
    if (w->visible && w->hidden && at % 3 == 0)
        w->hidden(w->filter_ctx, "c", "hidden");
    if ((w->flags & CRDTDB_EXPORT_NO_EMPTY) && at % 2 == 1)
        return give(session, NULL, 0);
    uint8_t delta[16] = {0x93, 1};
    for (int i = 0; i < 8; i++)
        delta[2 + i] = (uint8_t)(at >> (8 * i));
    return give(session, delta, sizeof delta);
}

static int m_record(void *ctx, const char *coll, const char *id, const uint8_t *peer,
                    int (*visible)(void *, crdtdb_txn *, const char *, const char *,
                                   const uint8_t *, size_t),
                    void *visible_ctx, crdtdb_buf *out, int *found)
{
    (void)ctx;
    (void)peer;
    static const uint8_t value[] = {0x81, 0xa1, 'v', 0x01};
    *found = 0;
    if (visible && !visible(visible_ctx, NULL, coll, id, value, sizeof value))
        return 0;
    if (crdtdb__buf_set(out, value, sizeof value))
        return CRDTDB_ENOMEM;
    *found = 1;
    return 0;
}

static int m_apply(void *ctx, const uint8_t *p, size_t len, crdtdb_write_filter filter,
                   void *filter_ctx, uint64_t behind, crdtdb_apply_info *info,
                   uint64_t *ahead_ms)
{
    (void)behind; /* it collects nothing, so it sends no RESYNC */
    mem_store *m = ctx;
    const uint8_t *body, *sig;
    size_t flen, blen;
    crdtdb__delta_head h;
    memset(info, 0, sizeof *info);
    m->applies++;
    if (crdtdb__delta_frame(p, len, &flen, &body, &blen, &sig) || !sig || flen != len ||
        crdtdb__delta_peek(p, len, &h) || !h.signer)
        return fail(m, CRDTDB_EBADVALUE, "malformed delta");
    if (h.db_id_len != strlen(m->db_id) || memcmp(h.db_id, m->db_id, h.db_id_len) != 0)
        return fail(m, CRDTDB_EINVAL, "another database");
    memcpy(info->sender, h.signer, sizeof info->sender);
    info->from = m->received;
    info->to = m->received + 1 + sig[1] % 3;
    switch (sig[0] % 8) {
    case 4:
        *ahead_ms = m->now_ms + m->skew_ms + sig[2] * 10u;
        return fail(m, CRDTDB_ECLOCK, "stamped ahead");
    case 5:
        return fail(m, CRDTDB_ELIMIT, "too costly");
    case 6:
        return fail(m, CRDTDB_EBADSIG, "bad signature");
    case 7:
        if (filter) {
            static const uint8_t now[] = {0x80};
            int r = filter(filter_ctx, NULL, "d", "r", NULL, 0, now, sizeof now);
            if (r < 0)
                return fail(m, r, "write filter failed");
            info->refused = r != 0;
        }
        break;
    default:
        break;
    }
    info->changes = info->applied = 1;
    info->local_from = m->last;
    info->local_to = ++m->last;
    m->received = info->to;
    info->received = m->received;
    return 0;
}

static int names_ok(mem_store *m, const char *coll, const char *id)
{
    if (strcmp(coll, "c") != 0 && strcmp(coll, "d") != 0)
        return fail(m, CRDTDB_ENOCOLL, "no such collection");
    return *id ? 0 : fail(m, CRDTDB_EBADID, "empty id");
}

static int m_replace(void *ctx, const char *coll, const char *id, uint64_t upto,
                     const uint8_t *delta, size_t len)
{
    mem_store *m = ctx;
    (void)upto;
    (void)delta;
    (void)len;
    m->replaces++;
    return names_ok(m, coll, id);
}

static int m_purge(void *ctx, const char *coll, const char *id)
{
    mem_store *m = ctx;
    m->purges++;
    return names_ok(m, coll, id);
}

static int m_peer_get(void *ctx, const uint8_t *peer, uint64_t *received, uint64_t *acked)
{
    mem_store *m = ctx;
    int known = memcmp(peer, m->peer, sizeof m->peer) == 0;
    *received = known ? m->received : 0;
    *acked = known ? m->acked : 0;
    return 0;
}

static int m_peer_ack(void *ctx, const uint8_t *peer, uint64_t acked, uint64_t stable)
{
    (void)stable;
    mem_store *m = ctx;
    if (memcmp(peer, m->peer, sizeof m->peer) != 0) { /* the first peer is the one kept */
        memcpy(m->peer, peer, sizeof m->peer);
        m->received = m->acked = 0;
    }
    if (acked > m->acked)
        m->acked = acked;
    return 0;
}

static int m_readonly(void *ctx, int ro, int durable)
{
    mem_store *m = ctx;
    m->readonly = ro;
    if (durable)
        m->marked = ro;
    return 0;
}

static int m_discard(void *ctx, const uint8_t *peer, size_t *n)
{
    mem_store *m = ctx;
    uint64_t received, acked;
    m_peer_get(ctx, peer, &received, &acked);
    *n = m->last > acked ? (size_t)(m->last - acked) : 0;
    return 0;
}

void mem_store_init(mem_store *m, const char *db_id, uint64_t last)
{
    memset(m, 0, sizeof *m);
    m->db_id = db_id;
    memset(m->self, 0x11, sizeof m->self);
    m->max_delta_size = 16384;
    m->skew_ms = 60000;
    m->now_ms = 1700000000000ull;
    m->last = last;
    snprintf(m->errmsg, sizeof m->errmsg, "no error");
}

void mem_store_bind(mem_store *m, crdtdb__session_store *out)
{
    memset(out, 0, sizeof *out);
    out->ctx = m;
    out->info = m_info;
    out->now_ms = m_now;
    out->errmsg = m_errmsg;
    out->seq = m_seq;
    out->next_delta = m_next;
    out->record_delta = m_record;
    out->apply = m_apply;
    out->replace = m_replace;
    out->purge = m_purge;
    out->peer_get = m_peer_get;
    out->peer_ack = m_peer_ack;
    out->readonly = m_readonly;
    out->discard_unsent = m_discard;
}
