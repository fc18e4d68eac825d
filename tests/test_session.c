/* The sans-IO sync session: two sessions driven against each other in
 * memory, with byte-by-byte feeding, cuts, backpressure and bad frames. */
#include <check.h>
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crdt/buf.h"
#include "tests/mem_store.h"
#include "tests/replica.h"
#include "tests/testutil.h"

static uint64_t now_ms = 1700000000000ull;
static replica A, B;

static void setup(void)
{
    replica_init(&A, &now_ms, "game");
    replica_init(&B, &now_ms, "game");
}

static void teardown(void)
{
    replica_free(&A);
    replica_free(&B);
}

typedef struct evs {
    int ready, applied, caught_up, errors, closed, last_error;
    crdtdb_sync_mode mode;
} evs;

static void on_event(void *ctx, const crdtdb_session_event *ev)
{
    evs *e = ctx;
    switch (ev->type) {
    case CRDTDB_SESSION_READY: e->ready++; e->mode = ev->mode; break;
    case CRDTDB_SESSION_APPLIED: e->applied++; break;
    case CRDTDB_SESSION_CAUGHT_UP: e->caught_up++; break;
    case CRDTDB_SESSION_ERROR: e->errors++; e->last_error = ev->error; break;
    case CRDTDB_SESSION_CLOSED: e->closed++; break;
    }
}

static crdtdb_session *open_session(replica *r, int server, crdtdb_sync_mode mode, evs *e,
                                    size_t max_output)
{
    crdtdb_session_options o;
    crdtdb_session_options_init(&o);
    o.flags = server ? CRDTDB_SESSION_SERVER : 0;
    o.mode = mode;
    o.on_event = on_event;
    o.ctx = e;
    o.max_output = max_output;
    o.max_message = r->opts.max_delta_size + 4096;
    crdtdb_session *s;
    ck_assert_int_eq(crdtdb_session_open(r->db, &o, &s), 0);
    return s;
}

/* Moves up to `chunk` bytes from one session to the other; the bytes moved. */
static size_t move(crdtdb_session *from, crdtdb_session *to, size_t chunk, int *rc)
{
    size_t len;
    const uint8_t *p = crdtdb_session_output(from, &len);
    if (!len || crdtdb_session_closed(to))
        return 0;
    size_t n = len < chunk ? len : chunk;
    int r = crdtdb_session_feed(to, p, n);
    if (r && !*rc)
        *rc = r;
    crdtdb_session_consume(from, n);
    return n;
}

/* Runs the wire both ways until nothing moves; returns the first feed error. */
static int run(crdtdb_session *a, crdtdb_session *b, size_t chunk)
{
    int rc = 0;
    for (int i = 0; i < 1000000; i++) {
        size_t moved = move(a, b, chunk, &rc) + move(b, a, chunk, &rc);
        crdtdb_session *both[2] = {a, b};
        for (int k = 0; k < 2; k++) /* a YIELD session's next delta */
            if (crdtdb_session_pending(both[k])) {
                int r = crdtdb_session_step(both[k]);
                if (r && !rc)
                    rc = r;
                moved++;
            }
        if (!moved) {
            if (!crdtdb_session_closed(a))
                crdtdb_session_pump(a);
            if (!crdtdb_session_closed(b))
                crdtdb_session_pump(b);
            size_t la, lb;
            crdtdb_session_output(a, &la);
            crdtdb_session_output(b, &lb);
            if ((!la || crdtdb_session_closed(b)) && (!lb || crdtdb_session_closed(a)))
                break;
        }
    }
    return rc;
}

static void seed_data(void)
{
    put(&A, "add", "players", "ann", "{\"hp\":10,\"pos\":{\"x\":1}}");
    put(&A, "add", "moves", "m1", "{\"to\":\"e4\"}");
    put(&B, "add", "players", "bob", "{\"hp\":7}");
}

static void assert_same(void)
{
    char *a = dump(&A), *b = dump(&B);
    ck_assert_str_eq(a, b);
    free(a);
    free(b);
}

START_TEST(two_way_sync_converges)
{
    seed_data();
    evs ea = {0}, eb = {0};
    crdtdb_session *c = open_session(&A, 0, CRDTDB_SYNC_TWO_WAY, &ea, 0);
    crdtdb_session *s = open_session(&B, 1, CRDTDB_SYNC_TWO_WAY, &eb, 0);
    ck_assert_int_eq(run(c, s, SIZE_MAX), 0);
    assert_same();
    ck_assert_int_eq(ea.ready, 1);
    ck_assert_int_eq(eb.ready, 1);
    ck_assert_int_eq(ea.mode, CRDTDB_SYNC_TWO_WAY);
    ck_assert_int_ge(ea.caught_up, 1);
    ck_assert_int_ge(eb.caught_up, 1);
    /* live: a write on either side reaches the other on the next pump */
    put(&A, "update", "players", "bob", "{\"hp\":6}");
    ck_assert_int_eq(crdtdb_session_pump(c), 0);
    ck_assert_int_eq(run(c, s, SIZE_MAX), 0);
    char *g = tu_get(B.db, "players", "bob");
    ck_assert_str_eq(g, "{\"hp\":6}");
    free(g);
    /* acknowledgements moved the durable watermarks both ways */
    ck_assert_int_eq(crdtdb_session_flush(c), 0);
    ck_assert_uint_gt(received_from(&B, &A), 0);
    uint8_t b_id[32];
    crdtdb_env_replica_id(B.env, b_id);
    crdtdb_peer p;
    int found;
    ck_assert_int_eq(crdtdb_db_peer_get(A.db, b_id, &p, &found), 0);
    ck_assert_uint_gt(p.acked, 0);
    crdtdb_session_shutdown(c);
    run(c, s, SIZE_MAX);
    ck_assert(crdtdb_session_closed(s));
    ck_assert_int_eq(eb.closed, 1);
    crdtdb_session_close(c);
    crdtdb_session_close(s);
}
END_TEST


/* Counts sink calls, keeping the last delta (or noting an empty range). */
typedef struct grab {
    int calls, empty;
    crdtdb_buf last;
} grab;

static int grab_one(void *ctx, const uint8_t *p, size_t len)
{
    grab *g = ctx;
    g->calls++;
    if (!len) {
        g->empty++;
        return 0;
    }
    g->last.len = 0;
    ck_assert_int_eq(crdtdb__buf_append(&g->last, p, len), 0);
    return 0;
}

START_TEST(shared_export_is_signed_once)
{
    replica C;
    replica_init(&C, &now_ms, "game");
    put(&A, "add", "players", "ann", "{\"hp\":10}");
    put(&B, "add", "players", "bob", "{\"hp\":7}");
    sync_pair(&B, &A); /* A now holds a change that came from B */
    uint8_t bid[32], cid[32], did[32];
    crdtdb_env_replica_id(B.env, bid);
    crdtdb_env_replica_id(C.env, cid);
    memset(did, 7, sizeof did); /* a peer A has never heard of */
    grab gc = {0}, gd = {0}, gb = {0};
    crdtdb_export_options shared = {CRDTDB_EXPORT_SHARED, 0, NULL, NULL, NULL};
    crdtdb_export_info ic, id, ib;
    ck_assert_int_eq(crdtdb_db_export_for(A.db, 0, cid, &shared, grab_one, &gc, &ic), 0);
    ck_assert_int_eq(crdtdb_db_export_for(A.db, 0, did, &shared, grab_one, &gd, &id), 0);
    /* the same bytes for both: one signature */
    ck_assert_int_eq(gc.calls, 1);
    ck_assert_uint_eq(gc.last.len, gd.last.len);
    ck_assert(memcmp(gc.last.data, gd.last.data, gc.last.len) == 0);
    ck_assert_uint_eq(ic.to, id.to);
    ck_assert_uint_eq(ic.changes, 4); /* a base and a field per record */
    /* B's own change is left out of B's delta, made for B alone */
    ck_assert_int_eq(crdtdb_db_export_for(A.db, 0, bid, &shared, grab_one, &gb, &ib), 0);
    ck_assert_uint_eq(ib.changes, 2);
    ck_assert_uint_eq(ib.to, ic.to);
    ck_assert(gb.last.len != gc.last.len || memcmp(gb.last.data, gc.last.data, gb.last.len));
    /* the shared delta applies anywhere and moves the receiver's watermark */
    crdtdb_apply_info ai;
    ck_assert_int_eq(crdtdb_db_apply(C.db, gc.last.data, gc.last.len, &ai), 0);
    ck_assert_uint_eq(ai.received, ic.to);
    ck_assert_uint_eq(received_from(&C, &A), ic.to);
    char *g = tu_get(C.db, "players", "bob");
    ck_assert_str_eq(g, "{\"hp\":7}");
    free(g);
    crdtdb_buf_free(&gc.last);
    crdtdb_buf_free(&gd.last);
    crdtdb_buf_free(&gb.last);
    replica_free(&C);
}
END_TEST

START_TEST(empty_ranges_are_not_signed)
{
    put(&B, "add", "players", "bob", "{\"hp\":7}");
    sync_pair(&B, &A);
    uint8_t bid[32];
    crdtdb_env_replica_id(B.env, bid);
    uint64_t last;
    ck_assert_int_eq(crdtdb_db_seq(A.db, NULL, &last), 0);
    for (unsigned fl = CRDTDB_EXPORT_NO_EMPTY; fl <= (CRDTDB_EXPORT_NO_EMPTY | CRDTDB_EXPORT_SHARED);
         fl |= CRDTDB_EXPORT_SHARED) {
        grab g = {0};
        crdtdb_export_options eo = {fl, 0, NULL, NULL, NULL};
        crdtdb_export_info info;
        ck_assert_int_eq(crdtdb_db_export_for(A.db, 0, bid, &eo, grab_one, &g, &info), 0);
        ck_assert_int_eq(g.calls, 1);
        ck_assert_int_eq(g.empty, 1);
        ck_assert_uint_eq(info.deltas, 0);
        ck_assert_uint_eq(info.to, last);
        if (fl & CRDTDB_EXPORT_SHARED)
            break;
    }
}
END_TEST

/* A server's session finding only the client's own changes sends a SKIP,
 * not a signed delta; the client still learns it is caught up, and its
 * durable watermark moves with the next real delta. */
START_TEST(echo_is_skipped_unsigned)
{
    evs ea = {0}, eb = {0};
    crdtdb_session *c = open_session(&A, 0, CRDTDB_SYNC_TWO_WAY, &ea, 0);
    crdtdb_session *s = open_session(&B, 1, CRDTDB_SYNC_TWO_WAY, &eb, 0);
    ck_assert_int_eq(run(c, s, SIZE_MAX), 0);
    int caught = ea.caught_up, applied = ea.applied;
    put(&A, "add", "players", "ann", "{\"hp\":10}");
    ck_assert_int_eq(crdtdb_session_pump(c), 0);
    ck_assert_int_eq(run(c, s, SIZE_MAX), 0);
    uint64_t blast;
    ck_assert_int_eq(crdtdb_db_seq(B.db, NULL, &blast), 0);
    ck_assert_uint_gt(blast, 0);
    ck_assert_int_eq(ea.applied, applied); /* nothing came back signed */
    ck_assert_int_ge(ea.caught_up, caught);
    ck_assert(crdtdb_session_synced(c)); /* both sides know they are in sync */
    ck_assert(crdtdb_session_synced(s));
    ck_assert_uint_lt(received_from(&A, &B), blast); /* only in memory */
    put(&B, "add", "players", "bob", "{\"hp\":7}");
    ck_assert_int_eq(crdtdb_session_pump(s), 0);
    ck_assert_int_eq(run(c, s, SIZE_MAX), 0);
    ck_assert_int_eq(ea.applied, applied + 1);
    ck_assert_int_eq(crdtdb_db_seq(B.db, NULL, &blast), 0);
    ck_assert_uint_eq(received_from(&A, &B), blast); /* the delta covered the gap */
    assert_same();
    crdtdb_session_close(c);
    crdtdb_session_close(s);
}
END_TEST

/* A read filter: records holding "secret": true are hidden. */
static int no_secrets(void *ctx, crdtdb_txn *txn, const char *coll, const char *id,
                      const uint8_t *value, size_t len)
{
    (void)ctx;
    (void)txn;
    (void)coll;
    (void)id;
    static const uint8_t key[] = {0xa6, 's', 'e', 'c', 'r', 'e', 't', 0xc3}; /* "secret": true */
    for (size_t i = 0; i + sizeof key <= len; i++)
        if (memcmp(value + i, key, sizeof key) == 0)
            return 0;
    return 1;
}

static void count_removes(void *ctx, const crdtdb_event *ev)
{
    if (ev->type == CRDTDB_EVENT_REMOVE)
        ++*(int *)ctx;
}

START_TEST(read_filter_hides_purges_and_reveals_whole)
{
    put(&B, "add", "players", "pub", "{\"hp\":1}");
    put(&B, "add", "players", "hid", "{\"secret\":true,\"y\":5,\"z\":\"a long value, longer than the 64 bytes of one delta here\"}");
    evs ea = {0}, eb = {0};
    crdtdb_session_options o;
    crdtdb_session_options_init(&o);
    o.flags = CRDTDB_SESSION_SERVER;
    o.on_event = on_event;
    o.ctx = &eb;
    o.read_filter = no_secrets;
    o.delta_size = 64; /* records larger than a delta span several */
    crdtdb_session *s, *c = open_session(&A, 0, CRDTDB_SYNC_TWO_WAY, &ea, 0);
    ck_assert_int_eq(crdtdb_session_open(B.db, &o, &s), 0);
    int removes = 0;
    crdtdb_observer *obs;
    ck_assert_int_eq(crdtdb_db_observe(A.db, NULL, count_removes, &removes, &obs), 0);
    ck_assert_int_eq(run(c, s, SIZE_MAX), 0);
    char *g = tu_get(A.db, "players", "pub");
    ck_assert_str_eq(g, "{\"hp\":1}");
    free(g);
    ck_assert_ptr_null(tu_get(A.db, "players", "hid")); /* never sent */
    /* a change hides a record the client has: it forgets it, no tombstone */
    put(&B, "update", "players", "pub", "{\"secret\":true}");
    ck_assert_int_eq(crdtdb_session_pump(s), 0);
    ck_assert_int_eq(run(c, s, SIZE_MAX), 0);
    ck_assert_ptr_null(tu_get(A.db, "players", "pub"));
    ck_assert_int_eq(removes, 1);
    uint64_t aseq0, aseq1;
    ck_assert_int_eq(crdtdb_db_seq(A.db, NULL, &aseq0), 0);
    /* a change reveals one: it arrives whole, older fields too */
    put(&B, "update", "players", "hid", "{\"secret\":false}");
    ck_assert_msg(crdtdb_session_pump(s) == 0, "%s", crdtdb_session_errmsg(s));
    ck_assert_int_eq(run(c, s, SIZE_MAX), 0);
    g = tu_get(A.db, "players", "hid");
    ck_assert_str_eq(g, "{\"secret\":false,\"y\":5,\"z\":\"a long value, longer than the 64 bytes of one delta here\"}");
    free(g);
    ck_assert_int_eq(crdtdb_db_seq(A.db, NULL, &aseq1), 0);
    ck_assert_uint_gt(aseq1, aseq0);
    /* the purge made nothing that travels back: B still has "pub" */
    g = tu_get(B.db, "players", "pub");
    ck_assert_str_eq(g, "{\"hp\":1,\"secret\":true}");
    free(g);
    /* a fresh client gets only what it may see */
    replica C;
    replica_init(&C, &now_ms, "game");
    evs ec = {0}, ed = {0};
    crdtdb_session *c2 = open_session(&C, 0, CRDTDB_SYNC_TWO_WAY, &ec, 0), *s2;
    o.ctx = &ed;
    ck_assert_int_eq(crdtdb_session_open(B.db, &o, &s2), 0);
    ck_assert_int_eq(run(c2, s2, SIZE_MAX), 0);
    ck_assert_ptr_null(tu_get(C.db, "players", "pub"));
    g = tu_get(C.db, "players", "hid");
    ck_assert_str_eq(g, "{\"secret\":false,\"y\":5,\"z\":\"a long value, longer than the 64 bytes of one delta here\"}");
    free(g);
    ck_assert_int_ge(ec.caught_up, 1);
    crdtdb_session_close(c2);
    crdtdb_session_close(s2);
    replica_free(&C);
    crdtdb_observer_close(obs);
    crdtdb_session_close(c);
    crdtdb_session_close(s);
}
END_TEST

/* A server session (with `flags` besides) deciding the client's writes
 * with `filter` (may be NULL). */
static crdtdb_session *open_server(replica *r, evs *e, unsigned flags, crdtdb_write_filter filter,
                                   void *ctx)
{
    crdtdb_session_options o;
    crdtdb_session_options_init(&o);
    o.flags = CRDTDB_SESSION_SERVER | flags;
    o.on_event = on_event;
    o.ctx = e;
    o.write_filter = filter;
    o.filter_ctx = ctx;
    crdtdb_session *s;
    ck_assert_int_eq(crdtdb_session_open(r->db, &o, &s), 0);
    return s;
}

/* A write filter refusing whatever replica C writes. */
static const uint8_t *refuse_key;
static int refuse_from_c(void *ctx, crdtdb_txn *txn, const char *coll, const char *id,
                         const uint8_t *old, size_t old_len, const uint8_t *now, size_t now_len)
{
    (void)txn, (void)coll, (void)id, (void)old, (void)old_len, (void)now, (void)now_len;
    return ctx == refuse_key;
}

/* A refused write is undone at its sender only.  The server stores nothing
 * for it, even stamped minutes ahead, so an honest, older write by someone
 * else still wins everywhere; a refused new record leaves no tombstone that
 * could delete someone else's record later. */
START_TEST(refused_write_is_undone_at_the_sender_only)
{
    replica C;
    replica_init(&C, &now_ms, "game");
    put(&B, "add", "players", "r", "{\"a\":1,\"b\":1}");
    sync_pair(&B, &A);
    sync_pair(&B, &C);
    put(&A, "update", "players", "r", "{\"a\":2}"); /* allowed, offline for now */
    put(&A, "add", "moves", "x", "{\"by\":\"A\"}");
    now_ms += 4 * 60 * 1000; /* C's clock runs ahead, within the skew limit */
    put(&C, "update", "players", "r", "{\"a\":9}");
    put(&C, "add", "moves", "x", "{\"by\":\"C\"}");
    now_ms -= 4 * 60 * 1000;
    static const uint8_t tag;
    refuse_key = &tag;
    evs ec = {0}, eb = {0};
    crdtdb_session *c = open_session(&C, 0, CRDTDB_SYNC_TWO_WAY, &ec, 0);
    crdtdb_session *s = open_server(&B, &eb, 0, refuse_from_c, (void *)&tag);
    ck_assert_int_eq(run(c, s, SIZE_MAX), 0);
    ck_assert_int_eq(crdtdb_session_closed(c), 0);
    char *g = tu_get(B.db, "players", "r");
    ck_assert_str_eq(g, "{\"a\":1,\"b\":1}");
    free(g);
    ck_assert_ptr_null(tu_get(B.db, "moves", "x"));
    g = tu_get(C.db, "players", "r"); /* the sender returned to the server's copy */
    ck_assert_str_eq(g, "{\"a\":1,\"b\":1}");
    free(g);
    ck_assert_ptr_null(tu_get(C.db, "moves", "x"));
    ck_assert_int_ge(crdtdb_session_synced(c), 1);
    crdtdb_session_close(c);
    crdtdb_session_close(s);
    /* A's older writes arrive and win on the server... */
    evs ea = {0};
    c = open_session(&A, 0, CRDTDB_SYNC_TWO_WAY, &ea, 0);
    s = open_server(&B, &eb, 0, refuse_from_c, NULL);
    ck_assert_int_eq(run(c, s, SIZE_MAX), 0);
    crdtdb_session_close(c);
    crdtdb_session_close(s);
    g = tu_get(B.db, "players", "r");
    ck_assert_str_eq(g, "{\"a\":2,\"b\":1}");
    free(g);
    g = tu_get(B.db, "moves", "x");
    ck_assert_str_eq(g, "{\"by\":\"A\"}");
    free(g);
    /* ... and reach the refused writer too */
    c = open_session(&C, 0, CRDTDB_SYNC_TWO_WAY, &ec, 0);
    s = open_server(&B, &eb, 0, refuse_from_c, (void *)&tag);
    ck_assert_int_eq(run(c, s, SIZE_MAX), 0);
    crdtdb_session_close(c);
    crdtdb_session_close(s);
    g = tu_get(C.db, "players", "r");
    ck_assert_str_eq(g, "{\"a\":2,\"b\":1}");
    free(g);
    g = tu_get(C.db, "moves", "x");
    ck_assert_str_eq(g, "{\"by\":\"A\"}");
    free(g);
    replica_free(&C);
}
END_TEST

static size_t hello(uint8_t *out, unsigned version, const char *db, const uint8_t *id);

/* A refused write to a record the writer may not read brings back
 * nothing of it: the replace carries no delta, only the take-back. */
START_TEST(replace_shows_nothing_the_peer_may_not_see)
{
    replica C;
    replica_init(&C, &now_ms, "game");
    put(&B, "add", "players", "hid", "{\"secret\":true,\"pin\":1234}");
    put(&C, "add", "players", "hid", "{\"x\":1}");
    static const uint8_t tag;
    refuse_key = &tag;
    crdtdb_session_options o;
    crdtdb_session_options_init(&o);
    o.flags = CRDTDB_SESSION_SERVER;
    o.write_filter = refuse_from_c;
    o.read_filter = no_secrets;
    o.filter_ctx = (void *)&tag;
    evs ec = {0}, eb = {0};
    o.on_event = on_event;
    o.ctx = &eb;
    crdtdb_session *s;
    ck_assert_int_eq(crdtdb_session_open(B.db, &o, &s), 0);
    crdtdb_session *c = open_session(&C, 0, CRDTDB_SYNC_TWO_WAY, &ec, 0);
    ck_assert_int_eq(run(c, s, SIZE_MAX), 0);
    ck_assert_ptr_null(tu_get(C.db, "players", "hid")); /* taken back, nothing shown */
    char *g = tu_get(B.db, "players", "hid");
    ck_assert_str_eq(g, "{\"pin\":1234,\"secret\":true}");
    free(g);
    crdtdb_session_close(c);
    crdtdb_session_close(s);
    replica_free(&C);
}
END_TEST

/* A delta message whose type is spelled as a longer integer still waits
 * for crdtdb_session_step in a YIELD session: no spelling skips the queue. */
START_TEST(yield_holds_every_spelling_of_a_delta)
{
    put(&A, "add", "players", "ann", "{\"hp\":1}");
    uint8_t aid[32];
    crdtdb_env_replica_id(A.env, aid);
    evs eb = {0};
    crdtdb_session *s = open_server(&B, &eb, CRDTDB_SESSION_YIELD, NULL, NULL);
    uint8_t buf[256];
    size_t n = hello(buf, 1, "game", aid);
    ck_assert_int_eq(crdtdb_session_feed(s, buf, n), 0);
    net q = {0};
    ck_assert_int_eq(crdtdb_db_export(A.db, 0, NULL, to_net, &q, NULL), 0);
    crdtdb_buf m = CRDTDB_BUF_INIT;
    uint8_t head[] = {0, 0, 0, 0, 0x92, 0xcc, 0x03, 0xc6, 0, 0, 0, 0}; /* [uint8 3, bin32] */
    size_t len = q.msgs[0].len, body = 8 + len;
    head[1] = (uint8_t)(body >> 16), head[2] = (uint8_t)(body >> 8), head[3] = (uint8_t)body;
    head[9] = (uint8_t)(len >> 16), head[10] = (uint8_t)(len >> 8), head[11] = (uint8_t)len;
    ck_assert_int_eq(crdtdb__buf_append(&m, head, sizeof head), 0);
    ck_assert_int_eq(crdtdb__buf_append(&m, q.msgs[0].data, len), 0);
    ck_assert_int_eq(crdtdb_session_feed(s, m.data, m.len), 0);
    ck_assert_int_eq(crdtdb_session_pending(s), 1);
    ck_assert_ptr_null(tu_get(B.db, "players", "ann"));
    ck_assert_int_eq(crdtdb_session_step(s), 0);
    ck_assert_int_eq(crdtdb_session_pending(s), 0);
    char *g = tu_get(B.db, "players", "ann");
    ck_assert_str_eq(g, "{\"hp\":1}");
    free(g);
    crdtdb_buf_free(&m);
    net_free(&q);
    crdtdb_session_close(s);
}
END_TEST

static int count_applied(void *ctx, const uint8_t *p, size_t len)
{
    (void)p, (void)len;
    ++*(int *)ctx;
    return 0;
}

/* A delta over the receiver's work budget is refused without ending the
 * session and comes again in smaller deltas; a YIELD server applies one
 * delta per feed and keeps the rest for the next. */
START_TEST(costly_deltas_come_again_smaller)
{
    replica_close(&B);
    B.opts.max_apply_work = 4096;
    replica_open(&B, "game");
    crdtdb_txn *t;
    ck_assert_int_eq(crdtdb_txn_begin(A.db, 0, &t), 0);
    for (int i = 0; i < 100; i++) {
        char id[16], json[600];
        snprintf(id, sizeof id, "r%03d", i);
        snprintf(json, sizeof json, "{\"i\":%d,\"s\":\"%0400d\"}", i, i);
        crdtdb_buf v = CRDTDB_BUF_INIT;
        tu_mp(&v, json);
        ck_assert_int_eq(crdtdb_db_add(A.db, t, "moves", id, v.data, v.len), 0);
        crdtdb_buf_free(&v);
    }
    ck_assert_int_eq(crdtdb_txn_commit(t), 0);
    int n = 0; /* the deltas A would send at its own size */
    ck_assert_int_eq(crdtdb_db_export(A.db, 0, NULL, count_applied, &n, NULL), 0);
    evs ea = {0}, eb = {0};
    crdtdb_session *c = open_session(&A, 0, CRDTDB_SYNC_TWO_WAY, &ea, 0);
    crdtdb_session *s = open_server(&B, &eb, CRDTDB_SESSION_YIELD, NULL, NULL);
    ck_assert_int_eq(run(c, s, SIZE_MAX), 0);
    ck_assert_int_eq(crdtdb_session_closed(s), 0);
    ck_assert_int_ge(eb.errors, 1);
    ck_assert_int_eq(eb.last_error, CRDTDB_ELIMIT);
    ck_assert_int_gt(eb.applied, n); /* more, smaller deltas than A's own */
    assert_same();
    ck_assert_int_ge(crdtdb_session_synced(c), 1);
    crdtdb_session_close(c);
    crdtdb_session_close(s);
}
END_TEST

/* Acks are believed only within our own log and, durably, only from a
 * peer that proved its id by signing a delta. */
START_TEST(acks_only_from_proven_peers_within_range)
{
    put(&B, "add", "players", "bob", "{\"hp\":7}");
    uint8_t aid[32];
    crdtdb_env_replica_id(A.env, aid);
    evs eb = {0};
    crdtdb_session *s = open_session(&B, 1, CRDTDB_SYNC_TWO_WAY, &eb, 0);
    uint8_t buf[256];
    size_t n = hello(buf, 1, "game", aid); /* A's id, claimed by anyone */
    ck_assert_int_eq(crdtdb_session_feed(s, buf, n), 0);
    uint64_t huge[] = {UINT64_MAX, 1};
    for (int i = 0; i < 2; i++) { /* one beyond our log, one within */
        crdtdb_buf m = CRDTDB_BUF_INIT;
        msgpack_packer pk;
        msgpack_packer_init(&pk, &m, crdtdb__buf_write_cb);
        msgpack_pack_array(&pk, 2);
        msgpack_pack_uint8(&pk, 4); /* ACK */
        msgpack_pack_uint64(&pk, huge[i]);
        uint8_t h[4] = {0, 0, (uint8_t)(m.len >> 8), (uint8_t)m.len};
        ck_assert_int_eq(crdtdb_session_feed(s, h, 4), 0);
        ck_assert_int_eq(crdtdb_session_feed(s, m.data, m.len), 0);
        crdtdb_buf_free(&m);
    }
    ck_assert_int_eq(crdtdb_session_flush(s), 0);
    crdtdb_session_close(s); /* saves what it believes */
    crdtdb_peer p;
    int found;
    ck_assert_int_eq(crdtdb_db_peer_get(B.db, aid, &p, &found), 0);
    ck_assert_uint_eq(p.acked, 0); /* the claim was never proven */
    /* a proven peer's ack within range is kept */
    put(&A, "add", "players", "ann", "{\"hp\":1}");
    evs ea = {0};
    crdtdb_session *c = open_session(&A, 0, CRDTDB_SYNC_TWO_WAY, &ea, 0);
    s = open_session(&B, 1, CRDTDB_SYNC_TWO_WAY, &eb, 0);
    ck_assert_int_eq(run(c, s, SIZE_MAX), 0);
    crdtdb_session_close(c);
    crdtdb_session_close(s);
    uint64_t last;
    ck_assert_int_eq(crdtdb_db_seq(B.db, NULL, &last), 0);
    ck_assert_int_eq(crdtdb_db_peer_get(B.db, aid, &p, &found), 0);
    ck_assert_uint_eq(p.acked, last);
}
END_TEST

/* B's record (coll, id) is present. */
static int b_has(const char *coll, const char *id)
{
    char *g = tu_get(B.db, coll, id);
    free(g);
    return g != NULL;
}

/* to's durable `acked` watermark of replica `of`. */
static uint64_t acked_by(replica *to, replica *of)
{
    uint8_t id[32];
    crdtdb_env_replica_id(of->env, id);
    crdtdb_peer p;
    int found;
    ck_assert_int_eq(crdtdb_db_peer_get(to->db, id, &p, &found), 0);
    return p.acked;
}

/* A delta refused as stamped ahead (ECLOCK) is asked for again within the
 * session once the receiver's clock has caught up with it, not before (it
 * would only be refused again), and the delta merged after the gap is
 * acknowledged then: the session ends synced, with both watermarks at the
 * end of the sender's log. */
START_TEST(clock_refused_delta_is_asked_again)
{
    A.offset_ms = 10 * 60 * 1000; /* A's clock runs 10 minutes ahead */
    put(&A, "add", "players", "ann", "{\"hp\":10}");
    A.offset_ms = 0; /* then it is set right; its stamps stay ahead */
    evs ea = {0}, eb = {0};
    crdtdb_session *c = open_session(&A, 0, CRDTDB_SYNC_TWO_WAY, &ea, 0);
    crdtdb_session *s = open_server(&B, &eb, CRDTDB_SESSION_YIELD, NULL, NULL);
    ck_assert_int_eq(run(c, s, SIZE_MAX), 0);
    ck_assert_int_eq(eb.errors, 1);
    ck_assert_int_eq(eb.last_error, CRDTDB_ECLOCK);
    ck_assert_int_eq(ea.last_error, CRDTDB_ECLOCK); /* told, as a notice */
    ck_assert_int_eq(crdtdb_session_closed(s), 0);
    ck_assert(!b_has("players", "ann"));
    /* 4 minutes on, the stamp is still 6 minutes ahead of B: not asked */
    now_ms += 4 * 60 * 1000;
    ck_assert_int_eq(crdtdb_session_flush(s), 0);
    ck_assert_int_eq(run(c, s, SIZE_MAX), 0);
    ck_assert_int_eq(eb.errors, 1);
    ck_assert(!b_has("players", "ann"));
    /* 2 more: within the limit.  A writes again; its delta starts after
     * the gap, so it merges without moving B's watermark — B asks for the
     * gap, and everything is acknowledged */
    now_ms += 2 * 60 * 1000;
    put(&A, "add", "players", "cat", "{\"hp\":3}");
    ck_assert_int_eq(crdtdb_session_pump(c), 0);
    ck_assert_int_eq(run(c, s, SIZE_MAX), 0);
    ck_assert_int_eq(eb.errors, 1);
    ck_assert(b_has("players", "ann"));
    ck_assert(b_has("players", "cat"));
    uint64_t last;
    ck_assert_int_eq(crdtdb_db_seq(A.db, NULL, &last), 0);
    ck_assert_uint_eq(received_from(&B, &A), last);
    ck_assert_int_eq(crdtdb_session_flush(c), 0);
    ck_assert_uint_eq(acked_by(&A, &B), last);
    ck_assert_int_eq(crdtdb_session_synced(c), 1);
    ck_assert_int_ge(eb.caught_up, 1);
    crdtdb_session_close(c);
    crdtdb_session_close(s);
}
END_TEST

/* With no traffic at all, the flush timer asks again once the clock has
 * caught up — on a receive-only client too, which otherwise sends nothing
 * but acks. */
START_TEST(clock_refused_delta_comes_on_the_timer)
{
    B.offset_ms = 10 * 60 * 1000; /* the server's clock runs ahead */
    put(&B, "add", "players", "bob", "{\"hp\":7}");
    B.offset_ms = 0;
    evs ea = {0}, eb = {0};
    crdtdb_session *c = open_session(&A, 0, CRDTDB_SYNC_SERVER_TO_CLIENT, &ea, 0);
    crdtdb_session *s = open_session(&B, 1, CRDTDB_SYNC_TWO_WAY, &eb, 0);
    ck_assert_int_eq(run(c, s, SIZE_MAX), 0);
    ck_assert_int_eq(ea.last_error, CRDTDB_ECLOCK);
    ck_assert_int_eq(crdtdb_session_synced(c), 0);
    char *g = tu_get(A.db, "players", "bob");
    ck_assert_ptr_null(g);
    now_ms += 6 * 60 * 1000;
    ck_assert_int_eq(crdtdb_session_flush(c), 0);
    size_t out;
    crdtdb_session_output(c, &out);
    ck_assert_uint_gt(out, 0); /* SINCE, from the timer alone */
    ck_assert_int_eq(run(c, s, SIZE_MAX), 0);
    g = tu_get(A.db, "players", "bob");
    ck_assert_str_eq(g, "{\"hp\":7}");
    free(g);
    uint64_t last;
    ck_assert_int_eq(crdtdb_db_seq(B.db, NULL, &last), 0);
    ck_assert_uint_eq(received_from(&A, &B), last);
    ck_assert_int_eq(crdtdb_session_synced(c), 1);
    crdtdb_session_close(c);
    crdtdb_session_close(s);
}
END_TEST

START_TEST(byte_by_byte_feeding)
{
    seed_data();
    for (int i = 0; i < 20; i++) {
        char id[8];
        snprintf(id, sizeof id, "r%d", i);
        put(&A, "add", "moves", id, "{\"n\":{\"deep\":[1,2,3]}}");
    }
    evs ea = {0}, eb = {0};
    crdtdb_session *c = open_session(&A, 0, CRDTDB_SYNC_TWO_WAY, &ea, 0);
    crdtdb_session *s = open_session(&B, 1, CRDTDB_SYNC_TWO_WAY, &eb, 0);
    ck_assert_int_eq(run(c, s, 1), 0);
    assert_same();
    crdtdb_session_close(c);
    crdtdb_session_close(s);
}
END_TEST

START_TEST(server_to_client_mode)
{
    seed_data();
    evs ea = {0}, eb = {0};
    crdtdb_session *c = open_session(&A, 0, CRDTDB_SYNC_TWO_WAY, &ea, 0);
    crdtdb_session *s = open_session(&B, 1, CRDTDB_SYNC_SERVER_TO_CLIENT, &eb, 0);
    ck_assert_int_eq(run(c, s, SIZE_MAX), 0);
    ck_assert_int_eq(ea.mode, CRDTDB_SYNC_SERVER_TO_CLIENT); /* learned in the handshake */
    char *g = tu_get(A.db, "players", "bob");
    ck_assert_str_eq(g, "{\"hp\":7}");
    free(g);
    ck_assert_ptr_null(tu_get(B.db, "players", "ann")); /* nothing flows up */
    /* local writes fail at once */
    crdtdb_buf v = CRDTDB_BUF_INIT;
    tu_mp(&v, "{\"x\":1}");
    ck_assert_int_eq(crdtdb_db_add(A.db, NULL, "players", "new", v.data, v.len), CRDTDB_EROFS);
    ck_assert_str_eq(crdtdb_db_errmsg(A.db), "Read only access");
    /* a delta sent anyway (a client lifting its own mark) is refused and
     * stored nowhere */
    crdtdb_db_set_readonly(A.db, 0);
    ck_assert_int_eq(crdtdb_db_mark_readonly(A.db, 0), 0);
    ck_assert_int_eq(crdtdb_db_add(A.db, NULL, "players", "sneaky", v.data, v.len), 0);
    net q = {0};
    uint8_t b_id[32];
    crdtdb_env_replica_id(B.env, b_id);
    ck_assert_int_eq(crdtdb_db_export(A.db, 0, b_id, to_net, &q, NULL), 0);
    crdtdb_buf frame = CRDTDB_BUF_INIT;
    msgpack_packer pk;
    msgpack_packer_init(&pk, &frame, crdtdb__buf_write_cb);
    msgpack_pack_array(&pk, 2);
    msgpack_pack_uint8(&pk, 3);
    msgpack_pack_bin_with_body(&pk, q.msgs[0].data, q.msgs[0].len);
    uint8_t h[4] = {0, (uint8_t)(frame.len >> 16), (uint8_t)(frame.len >> 8), (uint8_t)frame.len};
    uint64_t before;
    crdtdb_db_seq(B.db, NULL, &before);
    ck_assert_int_eq(crdtdb_session_feed(s, h, 4), 0);
    ck_assert_int_eq(crdtdb_session_feed(s, frame.data, frame.len), CRDTDB_EROFS);
    ck_assert(crdtdb_session_closed(s));
    uint64_t after;
    crdtdb_db_seq(B.db, NULL, &after);
    ck_assert_uint_eq(before, after);
    ck_assert_ptr_null(tu_get(B.db, "players", "sneaky"));
    /* the client hears why */
    run(s, c, SIZE_MAX);
    ck_assert_int_eq(ea.last_error, CRDTDB_EROFS);
    ck_assert(crdtdb_session_closed(c));
    crdtdb_buf_free(&v);
    crdtdb_buf_free(&frame);
    net_free(&q);
    crdtdb_session_close(c);
    crdtdb_session_close(s);
}
END_TEST

/* A connection cut mid-stream: new sessions resume from the durable
 * watermarks and lose nothing. */
START_TEST(cut_and_resume)
{
    char json[600];
    for (int i = 0; i < 200; i++) {
        char id[8];
        snprintf(id, sizeof id, "r%03d", i);
        snprintf(json, sizeof json, "{\"pad\":\"%0500d\"}", i);
        put(&A, "add", "moves", id, json);
    }
    put(&B, "add", "players", "bob", "{}");
    for (int cut = 0; cut < 5; cut++) {
        evs ea = {0}, eb = {0};
        crdtdb_session *c = open_session(&A, 0, CRDTDB_SYNC_TWO_WAY, &ea, 0);
        crdtdb_session *s = open_session(&B, 1, CRDTDB_SYNC_TWO_WAY, &eb, 0);
        int rc = 0;
        for (int i = 0; i < 6; i++) { /* a few chunks, then the line drops */
            move(c, s, 7000, &rc);
            move(s, c, 7000, &rc);
            crdtdb_session_pump(c);
            crdtdb_session_pump(s);
        }
        ck_assert_int_eq(rc, 0);
        crdtdb_session_close(c);
        crdtdb_session_close(s);
    }
    uint64_t partial = received_from(&B, &A);
    evs ea = {0}, eb = {0};
    crdtdb_session *c = open_session(&A, 0, CRDTDB_SYNC_TWO_WAY, &ea, 0);
    crdtdb_session *s = open_session(&B, 1, CRDTDB_SYNC_TWO_WAY, &eb, 0);
    ck_assert_int_eq(run(c, s, 4096), 0);
    assert_same();
    ck_assert_uint_ge(received_from(&B, &A), partial);
    crdtdb_session_close(c);
    crdtdb_session_close(s);
}
END_TEST

START_TEST(backpressure_bounds_the_output)
{
    char json[600];
    for (int i = 0; i < 100; i++) {
        char id[8];
        snprintf(id, sizeof id, "r%03d", i);
        snprintf(json, sizeof json, "{\"pad\":\"%0500d\"}", i);
        put(&A, "add", "moves", id, json);
    }
    evs ea = {0}, eb = {0};
    size_t bound = 10000;
    crdtdb_session *c = open_session(&A, 0, CRDTDB_SYNC_TWO_WAY, &ea, bound);
    crdtdb_session *s = open_session(&B, 1, CRDTDB_SYNC_TWO_WAY, &eb, 0);
    int rc = 0;
    size_t most = 0, len;
    for (int i = 0; i < 10000; i++) {
        crdtdb_session_pump(c);
        crdtdb_session_output(c, &len);
        most = len > most ? len : most;
        size_t moved = move(c, s, 3000, &rc);
        moved += move(s, c, SIZE_MAX, &rc);
        if (!moved && i > 10)
            break;
    }
    ck_assert_int_eq(rc, 0);
    ck_assert_int_eq(run(c, s, SIZE_MAX), 0);
    /* never more than the bound plus one delta */
    ck_assert_uint_le(most, bound + A.opts.max_delta_size + 16);
    assert_same();
    crdtdb_session_close(c);
    crdtdb_session_close(s);
}
END_TEST

/* Feeds raw bytes to a fresh server session; returns feed's code. */
static int feed_server(const uint8_t *p, size_t n, evs *e)
{
    crdtdb_session *s = open_session(&B, 1, CRDTDB_SYNC_TWO_WAY, e, 0);
    int rc = crdtdb_session_feed(s, p, n);
    if (rc)
        ck_assert(crdtdb_session_closed(s));
    size_t len;
    crdtdb_session_output(s, &len);
    if (rc)
        ck_assert_uint_gt(len, 0); /* the peer is told why */
    crdtdb_session_close(s);
    return rc;
}

static size_t hello(uint8_t *out, unsigned version, const char *db, const uint8_t *id)
{
    crdtdb_buf b = CRDTDB_BUF_INIT;
    msgpack_packer pk;
    msgpack_packer_init(&pk, &b, crdtdb__buf_write_cb);
    msgpack_pack_array(&pk, 5);
    msgpack_pack_uint8(&pk, 1);
    msgpack_pack_uint32(&pk, version);
    msgpack_pack_str_with_body(&pk, db, strlen(db));
    msgpack_pack_bin_with_body(&pk, id, 32);
    msgpack_pack_uint8(&pk, 1);
    out[0] = out[1] = 0;
    out[2] = (uint8_t)(b.len >> 8);
    out[3] = (uint8_t)b.len;
    memcpy(out + 4, b.data, b.len);
    size_t n = 4 + b.len;
    crdtdb_buf_free(&b);
    return n;
}

START_TEST(bad_frames_end_the_session)
{
    evs e = {0};
    uint8_t id[32], buf[512];
    memset(id, 0x42, 32);
    static const uint8_t garbage[] = {0, 0, 0, 3, 0xc1, 0xc1, 0xc1};
    ck_assert_int_eq(feed_server(garbage, sizeof garbage, &e), CRDTDB_EBADVALUE);
    static const uint8_t huge[] = {0x7f, 0xff, 0xff, 0xff};
    ck_assert_int_eq(feed_server(huge, sizeof huge, &e), CRDTDB_ETOOBIG);
    size_t n = hello(buf, 99, "game", id);
    ck_assert_int_eq(feed_server(buf, n, &e), CRDTDB_EVERSION);
    n = hello(buf, 1, "other", id);
    ck_assert_int_eq(feed_server(buf, n, &e), CRDTDB_EINVAL);
    static const uint8_t early[] = {0, 0, 0, 4, 0x92, 0x03, 0xc4, 0x00}; /* delta first */
    ck_assert_int_eq(feed_server(early, sizeof early, &e), CRDTDB_EBADVALUE);
    static const uint8_t unknown[] = {0, 0, 0, 2, 0x91, 0x63};
    n = hello(buf, 1, "game", id);
    memcpy(buf + n, unknown, sizeof unknown);
    ck_assert_int_eq(feed_server(buf, n + sizeof unknown, &e), CRDTDB_EBADVALUE);
    /* a bad delta after a good hello: signature refused, nothing stored */
    static const uint8_t bad_delta[] = {0, 0, 0, 8, 0x92, 0x03, 0xc4, 0x04, 0x93, 0x01, 0xc4, 0x00};
    n = hello(buf, 1, "game", id);
    memcpy(buf + n, bad_delta, sizeof bad_delta);
    ck_assert_int_ne(feed_server(buf, n + sizeof bad_delta, &e), 0);
    /* random bytes never crash it */
    srand(tu_seed());
    for (int i = 0; i < 2000; i++) {
        uint8_t r[64];
        n = hello(buf, 1, "game", id);
        for (size_t k = 0; k < sizeof r; k++)
            r[k] = (uint8_t)rand();
        if (i % 2)
            r[0] = r[1] = 0; /* plausible lengths */
        memcpy(buf + n, r, sizeof r);
        feed_server(buf, n + sizeof r, &e);
    }
    ck_assert_ptr_null(tu_get(B.db, "players", "x"));
}
END_TEST

/* The same frames delivered twice change nothing. */
START_TEST(duplicated_frames_are_harmless)
{
    seed_data();
    evs ea = {0}, eb = {0};
    crdtdb_session *c = open_session(&A, 0, CRDTDB_SYNC_TWO_WAY, &ea, 0);
    crdtdb_session *s = open_session(&B, 1, CRDTDB_SYNC_TWO_WAY, &eb, 0);
    ck_assert_int_eq(run(c, s, SIZE_MAX), 0);
    put(&A, "update", "players", "ann", "{\"hp\":3}");
    crdtdb_session_pump(c);
    size_t len;
    const uint8_t *p = crdtdb_session_output(c, &len);
    uint8_t *copy = malloc(len);
    memcpy(copy, p, len);
    ck_assert_int_eq(crdtdb_session_feed(s, copy, len), 0);
    uint64_t seq1;
    crdtdb_db_seq(B.db, NULL, &seq1);
    ck_assert_int_eq(crdtdb_session_feed(s, copy, len), 0);
    uint64_t seq2;
    crdtdb_db_seq(B.db, NULL, &seq2);
    ck_assert_uint_eq(seq1, seq2);
    crdtdb_session_consume(c, len);
    ck_assert_int_eq(run(c, s, SIZE_MAX), 0);
    assert_same();
    free(copy);
    crdtdb_session_close(c);
    crdtdb_session_close(s);
}
END_TEST

/* ------------------------------------------------ the engine on a store in memory */

/* A frame [u32 length][msgpack] of the message packed by the caller. */
static void frame_msg(crdtdb_buf *out, const crdtdb_buf *m)
{
    uint8_t h[4] = {(uint8_t)(m->len >> 24), (uint8_t)(m->len >> 16), (uint8_t)(m->len >> 8),
                    (uint8_t)m->len};
    ck_assert_int_eq(crdtdb__buf_append(out, h, 4), 0);
    ck_assert_int_eq(crdtdb__buf_append(out, m->data, m->len), 0);
}

/* DELTA [3, envelope] claiming `signer`, whose signature starts with
 * `outcome` (the mem store's choice, tests/mem_store.c). */
static void delta_frame(crdtdb_buf *out, const char *db, const uint8_t *signer, uint8_t outcome)
{
    crdtdb_buf body = CRDTDB_BUF_INIT, env = CRDTDB_BUF_INIT, m = CRDTDB_BUF_INIT;
    msgpack_packer pk;
    msgpack_packer_init(&pk, &body, crdtdb__buf_write_cb);
    msgpack_pack_array(&pk, 2);
    msgpack_pack_str_with_body(&pk, db, strlen(db));
    msgpack_pack_bin_with_body(&pk, signer, 32);
    uint8_t sig[64] = {outcome};
    msgpack_packer_init(&pk, &env, crdtdb__buf_write_cb);
    msgpack_pack_array(&pk, 3);
    msgpack_pack_uint8(&pk, 1);
    msgpack_pack_bin_with_body(&pk, body.data, body.len);
    msgpack_pack_bin_with_body(&pk, sig, sizeof sig);
    msgpack_packer_init(&pk, &m, crdtdb__buf_write_cb);
    msgpack_pack_array(&pk, 2);
    msgpack_pack_uint8(&pk, 3);
    msgpack_pack_bin_with_body(&pk, env.data, env.len);
    frame_msg(out, &m);
    crdtdb_buf_free(&body);
    crdtdb_buf_free(&env);
    crdtdb_buf_free(&m);
}

/* The message types of the frames queued, in order, as "t,t,..."; consumed. */
static void take_types(crdtdb_session *s, char *out, size_t size)
{
    size_t len, off = 0, w = 0;
    const uint8_t *p = crdtdb_session_output(s, &len);
    out[0] = 0;
    while (len - off >= 4) {
        size_t n = (size_t)p[off] << 24 | (size_t)p[off + 1] << 16 | (size_t)p[off + 2] << 8 |
                   p[off + 3];
        ck_assert_uint_le(n, len - off - 4);
        w += (size_t)snprintf(out + w, size - w, "%s%u", w ? "," : "", p[off + 5]);
        off += 4 + n;
    }
    crdtdb_session_consume(s, len);
}

static const uint8_t PEER_ID[32] = {0x22, 0x22, 0x22};
static crdtdb_session *engine_s;
static int filter_saw_want_write = -1;

/* Refuses collection "d" and says so from inside the apply, as the
 * WebSocket server's filter does. */
static int refuse_d_and_notify(void *ctx, crdtdb_txn *txn, const char *coll, const char *id,
                               const uint8_t *old, size_t old_len, const uint8_t *now,
                               size_t now_len)
{
    (void)ctx, (void)txn, (void)id, (void)old, (void)old_len, (void)now, (void)now_len;
    if (strcmp(coll, "d") != 0)
        return 0;
    filter_saw_want_write = crdtdb_session_want_write(engine_s);
    ck_assert_int_eq(crdtdb_session_notify(engine_s, CRDTDB_EROFS, "refused"), 0);
    return 1;
}

/* 1: an ERROR event's callback ends the session; 2: the write filter
 * notifies, then ends the session. */
static int engine_close_mode;

static void engine_event(void *ctx, const crdtdb_session_event *ev)
{
    (void)ctx;
    if (engine_close_mode == 1 && ev->type == CRDTDB_SESSION_ERROR && !ev->remote)
        crdtdb_session_shutdown(engine_s);
}

static int refuse_d_notify_and_close(void *ctx, crdtdb_txn *txn, const char *coll,
                                     const char *id, const uint8_t *old, size_t old_len,
                                     const uint8_t *now, size_t now_len)
{
    int r = refuse_d_and_notify(ctx, txn, coll, id, old, old_len, now, now_len);
    if (r && engine_close_mode == 2)
        crdtdb_session_shutdown(engine_s);
    return r;
}

/* A server session (engine_s) on store st with options o, fed PEER_ID's
 * HELLO and SINCE 0; what it sent is in types. */
static crdtdb_session *engine_open(const crdtdb__session_store *st, crdtdb_session_options *o,
                                   char *types, size_t size)
{
    o->flags = CRDTDB_SESSION_SERVER;
    crdtdb_session *s;
    ck_assert_int_eq(crdtdb__session_open_store(st, o, &s), 0);
    engine_s = s;
    uint8_t buf[256];
    size_t n = hello(buf, 1, "fz", PEER_ID);
    ck_assert_int_eq(crdtdb_session_feed(s, buf, n), 0);
    uint8_t since[] = {0, 0, 0, 3, 0x92, 0x02, 0x00};
    ck_assert_int_eq(crdtdb_session_feed(s, since, sizeof since), 0);
    take_types(s, types, size);
    return s;
}

/* A server session on the in-memory store, past the handshake with
 * PEER_ID and its SINCE 0; the output consumed. */
static crdtdb_session *engine_server(mem_store *m, crdtdb_write_filter wf)
{
    crdtdb__session_store st;
    mem_store_init(m, "fz", 0);
    mem_store_bind(m, &st);
    crdtdb_session_options o;
    crdtdb_session_options_init(&o);
    o.write_filter = wf;
    o.on_event = engine_event;
    char types[64];
    crdtdb_session *s = engine_open(&st, &o, types, sizeof types);
    ck_assert_str_eq(types, "1,2,5"); /* HELLO, SINCE, UPTODATE */
    return s;
}

/* A notice asked for from inside the apply (the write filter) is queued,
 * then sent before the REPLACE and the ACK, as the wire always had it;
 * the session does not wake itself meanwhile. */
START_TEST(notices_from_the_apply_are_queued)
{
    mem_store m;
    crdtdb_session *s = engine_server(&m, refuse_d_and_notify);
    engine_s = s;
    crdtdb_buf f = CRDTDB_BUF_INIT;
    delta_frame(&f, "fz", PEER_ID, 7); /* 7: a record of "d" meets the filter */
    filter_saw_want_write = -1;
    ck_assert_int_eq(crdtdb_session_feed(s, f.data, f.len), 0);
    ck_assert_int_eq(filter_saw_want_write, 0);
    ck_assert_int_eq(crdtdb_session_want_write(s), 1); /* the answers wait */
    char types[64];
    take_types(s, types, sizeof types);
    /* NOTICE, REPLACE, ACK; then what the refusal left to say (SKIP, UPTODATE) */
    ck_assert_str_eq(types, "9,11,4,8,5");
    /* an apply of the peer's own changes is absorbed: only the ACK, and
     * nothing left for a pump to find */
    f.len = 0;
    delta_frame(&f, "fz", PEER_ID, 0);
    ck_assert_int_eq(crdtdb_session_feed(s, f.data, f.len), 0);
    take_types(s, types, sizeof types);
    ck_assert_str_eq(types, "4");
    ck_assert_int_eq(crdtdb_session_pump(s), 0);
    take_types(s, types, sizeof types);
    ck_assert_str_eq(types, "");
    m.last++; /* a commit of someone else's */
    ck_assert_int_eq(crdtdb_session_want_write(s), 1);
    crdtdb_buf_free(&f);
    crdtdb_session_close(s);
}
END_TEST

/* A callback that ends the session ends what it says: nothing follows
 * the CLOSE, and notices asked for before it go ahead of it. */
START_TEST(nothing_follows_a_close_made_by_a_callback)
{
    static const struct { int mode; uint8_t outcome; crdtdb_write_filter wf; const char *want; } c[] = {
        {1, 4, NULL, "7"},                         /* ECLOCK refused, ERROR event closes */
        {1, 5, NULL, "7"},                         /* ELIMIT refused: no SINCE after the CLOSE */
        {2, 7, refuse_d_notify_and_close, "9,7"}, /* the filter's notice, then CLOSE */
    };
    for (size_t i = 0; i < sizeof c / sizeof *c; i++) {
        mem_store m;
        engine_close_mode = 0;
        crdtdb_session *s = engine_server(&m, c[i].wf);
        engine_close_mode = c[i].mode;
        crdtdb_buf f = CRDTDB_BUF_INIT;
        delta_frame(&f, "fz", PEER_ID, c[i].outcome);
        ck_assert_int_eq(crdtdb_session_feed(s, f.data, f.len), 0);
        char types[64];
        take_types(s, types, sizeof types);
        ck_assert_msg(strcmp(types, c[i].want) == 0, "case %zu: %s, not %s", i, types, c[i].want);
        crdtdb_buf_free(&f);
        crdtdb_session_close(s);
    }
    engine_close_mode = 0;
}
END_TEST

/* A read filter's notice from the pump that ends a feed is sent, as from
 * a pump of the caller's. */
static crdtdb__session_store engine_base;

static int next_through_filter(void *ctx, const crdtdb__store_want *w, crdtdb__store_give give,
                               void *session, uint64_t *to)
{
    if (w->visible)
        w->visible(w->filter_ctx, NULL, "c", "x", (const uint8_t *)"\x80", 1);
    return engine_base.next_delta(ctx, w, give, session, to);
}

static int hide_and_notify(void *ctx, crdtdb_txn *txn, const char *coll, const char *id,
                           const uint8_t *value, size_t len)
{
    (void)ctx, (void)txn, (void)coll, (void)id, (void)value, (void)len;
    ck_assert_int_eq(crdtdb_session_notify(engine_s, CRDTDB_EROFS, "hidden from you"), 0);
    return 1;
}

START_TEST(notices_from_the_last_pump_of_a_feed_are_sent)
{
    mem_store m;
    mem_store_init(&m, "fz", 3);
    mem_store_bind(&m, &engine_base);
    crdtdb__session_store st = engine_base;
    st.next_delta = next_through_filter;
    crdtdb_session_options o;
    crdtdb_session_options_init(&o);
    o.read_filter = hide_and_notify;
    char types[64];
    crdtdb_session *s = engine_open(&st, &o, types, sizeof types);
    ck_assert_ptr_nonnull(strstr(types, "9")); /* the NOTICE went out */
    crdtdb_session_close(s);
}
END_TEST

/* The signer is checked once, before the store sees the delta; a store
 * failure's code and message reach errmsg and the peer together. */
START_TEST(signer_checked_before_the_store_and_errors_keep_their_message)
{
    mem_store m;
    crdtdb_session *s = engine_server(&m, NULL);
    uint8_t other[32] = {0x33};
    crdtdb_buf f = CRDTDB_BUF_INIT;
    delta_frame(&f, "fz", other, 0);
    ck_assert_int_eq(crdtdb_session_feed(s, f.data, f.len), CRDTDB_EBADVALUE);
    ck_assert_uint_eq(m.applies, 0);
    ck_assert_ptr_nonnull(strstr(crdtdb_session_errmsg(s), "another replica"));
    crdtdb_session_close(s);

    s = engine_server(&m, NULL);
    f.len = 0;
    delta_frame(&f, "fz", PEER_ID, 6); /* 6: the store finds a bad signature */
    ck_assert_int_eq(crdtdb_session_feed(s, f.data, f.len), CRDTDB_EBADSIG);
    ck_assert_uint_eq(m.applies, 1);
    ck_assert_str_eq(crdtdb_session_errmsg(s), "mem store: bad signature");
    ck_assert_int_eq(crdtdb_session_feed(s, f.data, f.len), CRDTDB_EBUSY);
    ck_assert_str_eq(crdtdb_session_errmsg(s), "the session is closed");
    crdtdb_buf_free(&f);
    crdtdb_session_close(s);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("session");
    TCase *tc = tcase_create("session");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, two_way_sync_converges);
    tcase_add_test(tc, byte_by_byte_feeding);
    tcase_add_test(tc, shared_export_is_signed_once);
    tcase_add_test(tc, empty_ranges_are_not_signed);
    tcase_add_test(tc, echo_is_skipped_unsigned);
    tcase_add_test(tc, read_filter_hides_purges_and_reveals_whole);
    tcase_add_test(tc, refused_write_is_undone_at_the_sender_only);
    tcase_add_test(tc, acks_only_from_proven_peers_within_range);
    tcase_add_test(tc, costly_deltas_come_again_smaller);
    tcase_add_test(tc, clock_refused_delta_is_asked_again);
    tcase_add_test(tc, clock_refused_delta_comes_on_the_timer);
    tcase_add_test(tc, replace_shows_nothing_the_peer_may_not_see);
    tcase_add_test(tc, yield_holds_every_spelling_of_a_delta);
    tcase_add_test(tc, server_to_client_mode);
    tcase_add_test(tc, cut_and_resume);
    tcase_add_test(tc, backpressure_bounds_the_output);
    tcase_add_test(tc, bad_frames_end_the_session);
    tcase_add_test(tc, duplicated_frames_are_harmless);
    suite_add_tcase(s, tc);
    TCase *te = tcase_create("engine"); /* no LMDB: tests/mem_store.c */
    tcase_add_test(te, notices_from_the_apply_are_queued);
    tcase_add_test(te, signer_checked_before_the_store_and_errors_keep_their_message);
    tcase_add_test(te, nothing_follows_a_close_made_by_a_callback);
    tcase_add_test(te, notices_from_the_last_pump_of_a_feed_are_sent);
    suite_add_tcase(s, te);
    return tu_run(s);
}
