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
    default: break;
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
    /* before any byte moved, each names what it waits for */
    ck_assert_str_eq(crdtdb_session_unsynced(c), "the handshake");
    ck_assert_int_eq(crdtdb_session_synced(c), 0);
    ck_assert_str_eq(crdtdb_session_unsynced(NULL), "no session");
    ck_assert_int_eq(run(c, s, SIZE_MAX), 0);
    assert_same();
    ck_assert_ptr_null(crdtdb_session_unsynced(c));
    ck_assert_ptr_null(crdtdb_session_unsynced(s));
    ck_assert_int_eq(ea.ready, 1);
    ck_assert_int_eq(eb.ready, 1);
    ck_assert_int_eq(ea.mode, CRDTDB_SYNC_TWO_WAY);
    ck_assert_int_ge(ea.caught_up, 1);
    ck_assert_int_ge(eb.caught_up, 1);
    /* live: a write on either side reaches the other on the next pump */
    put(&A, "update", "players", "bob", "{\"hp\":6}");
    ck_assert_int_eq(crdtdb_session_pump(c), 0);
    ck_assert_ptr_nonnull(strstr(crdtdb_session_unsynced(c), "the peer's ack of"));
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

/* A server's copy made again after a drop goes on from where its history
 * ended, its log empty below that.  A fresh client is told there is
 * nothing there (SKIP, which moves no durable watermark); what the server
 * takes next must reach it in a delta starting where its durable
 * watermark is, or the client never holds it durably, never acks it, and
 * never knows it is in sync (the cluster's handoff waited on it for
 * good). */
START_TEST(a_copy_made_again_syncs_a_fresh_client)
{
    put(&B, "add", "players", "ann", "{\"hp\":1}");
    put(&B, "add", "players", "bob", "{\"hp\":2}");
    crdtdb_db_close(B.db);
    ck_assert_int_eq(crdtdb_db_drop(B.env, "game"), 0);
    ck_assert_int_eq(crdtdb_db_create(B.env, "game", COLLS, 2, &B.db), 0);
    evs ea = {0}, eb = {0};
    crdtdb_session *c = open_session(&A, 0, CRDTDB_SYNC_TWO_WAY, &ea, 0);
    crdtdb_session *s = open_session(&B, 1, CRDTDB_SYNC_TWO_WAY, &eb, 0);
    ck_assert_int_eq(run(c, s, SIZE_MAX), 0);
    ck_assert_ptr_null(crdtdb_session_unsynced(c));
    now_ms += 5;
    put(&B, "add", "players", "cy", "{\"hp\":3}"); /* say, from one of its peers */
    ck_assert_int_eq(crdtdb_session_pump(s), 0);
    ck_assert_int_eq(run(c, s, SIZE_MAX), 0);
    char *g = tu_get(A.db, "players", "cy");
    ck_assert_str_eq(g, "{\"hp\":3}");
    free(g);
    uint64_t last;
    ck_assert_int_eq(crdtdb_db_seq(B.db, NULL, &last), 0);
    ck_assert_uint_eq(received_from(&A, &B), last); /* durably */
    const char *why = crdtdb_session_unsynced(c);
    ck_assert_msg(!why, "the client waits for %s", why);
    crdtdb_session_close(c);
    crdtdb_session_close(s);
}
END_TEST

/* A shared export asked to sign an empty range (no NO_EMPTY: a session's
 * long skip, proof or crossed floor) signs one, as the unshared export
 * does; it once sent nothing, and the session counted the range as sent. */
START_TEST(shared_export_signs_an_empty_range_when_asked)
{
    put(&B, "add", "players", "ann", "{\"hp\":1}");
    crdtdb_db_close(B.db); /* made again: its log is empty up to its seq */
    ck_assert_int_eq(crdtdb_db_drop(B.env, "game"), 0);
    ck_assert_int_eq(crdtdb_db_create(B.env, "game", COLLS, 2, &B.db), 0);
    uint8_t aid[32];
    crdtdb_env_replica_id(A.env, aid);
    uint64_t last;
    ck_assert_int_eq(crdtdb_db_seq(B.db, NULL, &last), 0);
    ck_assert_uint_gt(last, 0);
    const unsigned fls[3] = {CRDTDB_EXPORT_SHARED | CRDTDB_EXPORT_NO_EMPTY, 0, CRDTDB_EXPORT_SHARED};
    for (int i = 0; i < 3; i++) {
        grab g = {0};
        crdtdb_export_options eo;
        memset(&eo, 0, sizeof eo);
        eo.flags = fls[i];
        crdtdb_export_info info;
        ck_assert_int_eq(crdtdb_db_export_for(B.db, 0, aid, &eo, grab_one, &g, &info), 0);
        ck_assert_uint_eq(info.to, last);
        if (fls[i] & CRDTDB_EXPORT_NO_EMPTY) /* a skip: the sink hears of it, empty */
            ck_assert_int_eq(g.calls, g.empty);
        else
            ck_assert_msg(g.calls == 1 && g.empty == 0, "flags %u: %d calls, %d empty", fls[i],
                          g.calls, g.empty);
        crdtdb_buf_free(&g.last);
    }
}
END_TEST

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
    crdtdb_export_options shared = {.flags = CRDTDB_EXPORT_SHARED};
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
        crdtdb_export_options eo = {.flags = fl};
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

/* A server session on r that hides records with "secret": true. */
static crdtdb_session *open_no_secrets(replica *r, evs *e, size_t delta_size)
{
    crdtdb_session_options o;
    crdtdb_session_options_init(&o);
    o.flags = CRDTDB_SESSION_SERVER;
    o.on_event = on_event;
    o.ctx = e;
    o.read_filter = no_secrets;
    o.delta_size = delta_size;
    crdtdb_session *s;
    ck_assert_int_eq(crdtdb_session_open(r->db, &o, &s), 0);
    return s;
}

START_TEST(read_filter_hides_purges_and_reveals_whole)
{
    put(&B, "add", "players", "pub", "{\"hp\":1}");
    put(&B, "add", "players", "hid", "{\"secret\":true,\"y\":5,\"z\":\"a long value, longer than the 64 bytes of one delta here\"}");
    evs ea = {0}, eb = {0};
    /* records larger than a delta (64 bytes) span several */
    crdtdb_session *s = open_no_secrets(&B, &eb, 64);
    crdtdb_session *c = open_session(&A, 0, CRDTDB_SYNC_TWO_WAY, &ea, 0);
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
    crdtdb_session *c2 = open_session(&C, 0, CRDTDB_SYNC_TWO_WAY, &ec, 0);
    crdtdb_session *s2 = open_no_secrets(&B, &ed, 64);
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

static void list_types(crdtdb_session *s, char *out, size_t size);

/* Early relay: the precommit hook pumps the server's sessions. */
typedef struct early_ctx {
    crdtdb_session *s[2];
    int rc[2];
    uint64_t from, to;
} early_ctx;

static void early_pump(void *ctx, crdtdb_db *db, uint64_t from, uint64_t to)
{
    (void)db;
    early_ctx *e = ctx;
    e->from = from;
    e->to = to;
    for (int i = 0; i < 2; i++)
        e->rc[i] = e->s[i] ? crdtdb_session_pump_early(e->s[i], from) : -1;
}

/* crdtdb_session_pump_early inside a write about to commit: a server
 * session idle and caught up takes the write's delta at once (its client
 * then holds it, and the pump after the commit sends nothing again); one
 * with a read filter, or one behind, is left to its pump after the commit,
 * which brings the same. */
START_TEST(early_pump_takes_only_an_idle_caught_up_session)
{
    replica C;
    replica_init(&C, &now_ms, "game");
    evs ea = {0}, eb = {0}, ec = {0}, ed = {0};
    crdtdb_session *ca = open_session(&A, 0, CRDTDB_SYNC_TWO_WAY, &ea, 0);
    crdtdb_session *sa = open_session(&B, 1, CRDTDB_SYNC_TWO_WAY, &eb, 0);
    crdtdb_session *cc = open_session(&C, 0, CRDTDB_SYNC_TWO_WAY, &ec, 0);
    crdtdb_session *sc = open_no_secrets(&B, &ed, 0);
    put(&B, "add", "players", "p0", "{\"hp\":0}");
    early_ctx e;
    memset(&e, 0, sizeof e);
    e.s[0] = sa;
    e.s[1] = sc;
    crdtdb_db_set_precommit(B.db, early_pump, &e);
    put(&B, "add", "players", "p1", "{\"hp\":1}"); /* reserves: not early itself */
    ck_assert_uint_eq(e.to, 0);
    ck_assert_int_eq(run(ca, sa, SIZE_MAX), 0);
    ck_assert_int_eq(run(cc, sc, SIZE_MAX), 0);
    char *g = tu_get(A.db, "players", "p1");
    ck_assert_str_eq(g, "{\"hp\":1}");
    free(g);
    uint64_t deltas = crdtdb_session_deltas_sent(sa);
    put(&B, "update", "players", "p1", "{\"hp\":2}");
    ck_assert_int_eq(e.rc[0], 1); /* idle, caught up: taken */
    ck_assert_int_eq(e.rc[1], 0); /* a read filter: after the commit */
    ck_assert_uint_eq(crdtdb_session_deltas_sent(sa), deltas + 1);
    char types[64];
    list_types(sa, types, sizeof types);
    ck_assert_str_eq(types, "3,5"); /* the delta, then up to date */
    ck_assert_int_eq(crdtdb_session_pump(sa), 0); /* after the commit: nothing more */
    list_types(sa, types, sizeof types);
    ck_assert_str_eq(types, "3,5");
    ck_assert_int_eq(run(ca, sa, SIZE_MAX), 0);
    ck_assert_uint_eq(crdtdb_session_deltas_sent(sa), deltas + 1);
    ck_assert_str_eq(g = tu_get(A.db, "players", "p1"), "{\"hp\":2}");
    free(g);
    ck_assert_int_eq(crdtdb_session_pump(sc), 0);
    ck_assert_int_eq(run(cc, sc, SIZE_MAX), 0);
    ck_assert_str_eq(g = tu_get(C.db, "players", "p1"), "{\"hp\":2}");
    free(g);
    /* output still queued: left to the pump */
    put(&B, "update", "players", "p1", "{\"hp\":3}");
    ck_assert_int_eq(e.rc[0], 1);
    put(&B, "update", "players", "p1", "{\"hp\":4}");
    ck_assert_int_eq(e.rc[0], 0);
    ck_assert_int_eq(crdtdb_session_pump(sa), 0);
    ck_assert_int_eq(run(ca, sa, SIZE_MAX), 0);
    ck_assert_str_eq(g = tu_get(A.db, "players", "p1"), "{\"hp\":4}");
    free(g);
    crdtdb_db_set_precommit(B.db, NULL, NULL);
    crdtdb_session_close(ca);
    crdtdb_session_close(sa);
    crdtdb_session_close(cc);
    crdtdb_session_close(sc);
    replica_free(&C);
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
    crdtdb_peer_ack taken;
    ck_assert_int_eq(crdtdb_session_acks_take(s, &taken), 0); /* nothing to take */
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

/* Feeds one [type, v] frame. */
static int feed_u64(crdtdb_session *s, uint8_t type, uint64_t v)
{
    crdtdb_buf m = CRDTDB_BUF_INIT;
    msgpack_packer pk;
    msgpack_packer_init(&pk, &m, crdtdb__buf_write_cb);
    msgpack_pack_array(&pk, 2);
    msgpack_pack_uint8(&pk, type);
    msgpack_pack_uint64(&pk, v);
    uint8_t h[4] = {0, 0, (uint8_t)(m.len >> 8), (uint8_t)m.len};
    int rc = crdtdb_session_feed(s, h, 4);
    if (!rc)
        rc = crdtdb_session_feed(s, m.data, m.len);
    crdtdb_buf_free(&m);
    return rc;
}

static void nop_hook(void *ctx, crdtdb_db *db, uint64_t from, uint64_t to)
{
    (void)ctx, (void)db, (void)from, (void)to;
}

/* A client sends only what it committed, or what its early relay reserved:
 * a server's SINCE beyond that holds another copy's writes under its id
 * (docs/protocol.md, "A SINCE above your own log's end"): EFORK, and
 * nothing after it.  Within the reservation (a server's peer link that
 * relayed early, then crashed) it is taken. */
START_TEST(since_beyond_what_a_client_sent_is_a_fork)
{
    put(&A, "add", "players", "ann", "{\"hp\":1}");
    uint64_t last, sent;
    ck_assert_int_eq(crdtdb_db_seq(A.db, NULL, &last), 0);
    ck_assert_int_eq(crdtdb_db_seq_sent(A.db, NULL, &sent), 0);
    ck_assert_uint_eq(sent, last); /* no early relay: what it wrote */
    evs ea = {0}, eb = {0};
    crdtdb_session *c = open_session(&A, 0, CRDTDB_SYNC_TWO_WAY, &ea, 0);
    crdtdb_session *s = open_session(&B, 1, CRDTDB_SYNC_TWO_WAY, &eb, 0);
    ck_assert_int_eq(run(c, s, SIZE_MAX), 0);
    ck_assert_int_eq(feed_u64(c, 2, last), 0); /* at the log's end: fine */
    ck_assert_int_eq(feed_u64(c, 2, last + 1), CRDTDB_EFORK);
    ck_assert_str_eq(crdtdb_session_errmsg(c),
                     "the peer holds 3 of this replica's changes, more than the 2 it wrote (a copied "
                     "or restored replica: give it a new identity, 'crdtdb reset-id')");
    ck_assert_int_eq(ea.last_error, CRDTDB_EFORK);
    ck_assert(crdtdb_session_closed(c));
    crdtdb_session_close(c);
    crdtdb_session_close(s);
    /* with an early relay, a reservation ahead of the log may have gone out */
    crdtdb_db_set_precommit(A.db, nop_hook, NULL);
    put(&A, "add", "players", "cy", "{\"hp\":2}");
    ck_assert_int_eq(crdtdb_db_seq(A.db, NULL, &last), 0);
    ck_assert_int_eq(crdtdb_db_seq_sent(A.db, NULL, &sent), 0);
    ck_assert_uint_gt(sent, last);
    ea = (evs){0};
    c = open_session(&A, 0, CRDTDB_SYNC_TWO_WAY, &ea, 0);
    s = open_session(&B, 1, CRDTDB_SYNC_TWO_WAY, &eb, 0);
    ck_assert_int_eq(run(c, s, SIZE_MAX), 0);
    ck_assert_int_eq(feed_u64(c, 2, sent), 0);
    ck_assert_int_eq(feed_u64(c, 2, sent + 1), CRDTDB_EFORK);
    crdtdb_session_close(c);
    crdtdb_session_close(s);
    crdtdb_db_set_precommit(A.db, NULL, NULL);
    /* a server's session takes a client's SINCE past its log (the client
     * may hold what the server relayed early, then lost) */
    ea = (evs){0};
    eb = (evs){0};
    c = open_session(&A, 0, CRDTDB_SYNC_TWO_WAY, &ea, 0);
    s = open_session(&B, 1, CRDTDB_SYNC_TWO_WAY, &eb, 0);
    ck_assert_int_eq(run(c, s, SIZE_MAX), 0);
    ck_assert_int_eq(crdtdb_db_seq(B.db, NULL, &last), 0);
    ck_assert_int_eq(feed_u64(s, 2, last + 5), 0);
    crdtdb_session_close(c);
    crdtdb_session_close(s);
}
END_TEST

/* crdtdb_session_acks_take hands over what crdtdb_session_flush would
 * record, once; the flush after it records nothing, and
 * crdtdb_db_peer_acks records what was taken.  (An unproven peer's acks:
 * acks_only_from_proven_peers_within_range.) */
START_TEST(acks_taken_are_recorded_by_the_caller)
{
    put(&B, "add", "players", "bob", "{\"hp\":7}");
    put(&A, "add", "players", "ann", "{\"hp\":1}");
    uint8_t aid[32];
    crdtdb_env_replica_id(A.env, aid);
    evs ea = {0}, eb = {0};
    crdtdb_session *c = open_session(&A, 0, CRDTDB_SYNC_TWO_WAY, &ea, 0);
    crdtdb_session *s = open_session(&B, 1, CRDTDB_SYNC_TWO_WAY, &eb, 0);
    crdtdb_peer_ack a;
    ck_assert_int_eq(crdtdb_session_acks_take(s, &a), 0); /* nothing yet */
    ck_assert_int_eq(crdtdb_session_acks_take(NULL, &a), CRDTDB_EINVAL);
    ck_assert_int_eq(crdtdb_session_acks_take(s, NULL), CRDTDB_EINVAL);
    ck_assert_int_eq(run(c, s, SIZE_MAX), 0);
    uint64_t last;
    ck_assert_int_eq(crdtdb_db_seq(B.db, NULL, &last), 0);
    ck_assert_int_eq(crdtdb_session_acks_take(s, &a), 1);
    ck_assert_mem_eq(a.peer, aid, 32);
    ck_assert_uint_eq(a.acked, last);
    ck_assert_uint_eq(a.stable, last); /* A held all of B's log when it acked */
    ck_assert_int_eq(crdtdb_session_acks_take(s, &a), 0); /* taken once */
    ck_assert_int_eq(crdtdb_session_flush(s), 0);
    crdtdb_peer p;
    int found;
    ck_assert_int_eq(crdtdb_db_peer_get(B.db, aid, &p, &found), 0);
    ck_assert_uint_lt(p.acked, last); /* the flush recorded nothing */
    ck_assert_int_eq(crdtdb_db_peer_acks(B.db, &a, 1), 0);
    ck_assert_int_eq(crdtdb_db_peer_get(B.db, aid, &p, &found), 0);
    ck_assert_uint_eq(p.acked, last);
    crdtdb_session_close(c);
    crdtdb_session_close(s);
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

static void take_types(crdtdb_session *s, char *out, size_t size);
static void list_types(crdtdb_session *s, char *out, size_t size);

/* The frames of type `type` queued on s, left queued. */
static int peek_count(crdtdb_session *s, unsigned type)
{
    char t[1 << 12], *p = t;
    list_types(s, t, sizeof t);
    int n = 0;
    for (char *tok; (tok = strtok(p, ",")); p = NULL)
        n += (unsigned)atoi(tok) == type;
    return n;
}

/* Group commit across sessions: two clients' deltas to one database,
 * waiting in two server sessions, go in one commit
 * (crdtdb_session_batch_peek, crdtdb_db_apply_batch,
 * crdtdb_session_batch_done); each session then acks and answers as after
 * a step, and all three replicas end the same. */
START_TEST(sessions_of_one_database_commit_together)
{
    replica C;
    replica_init(&C, &now_ms, "game");
    put(&A, "add", "players", "ann", "{\"hp\":1}");
    put(&C, "add", "players", "cat", "{\"hp\":2}");
    evs ea = {0}, ec = {0}, sa_ev = {0}, sc_ev = {0};
    crdtdb_session *ca = open_session(&A, 0, CRDTDB_SYNC_TWO_WAY, &ea, 0);
    crdtdb_session *cc = open_session(&C, 0, CRDTDB_SYNC_TWO_WAY, &ec, 0);
    crdtdb_session *sa = open_server(&B, &sa_ev, CRDTDB_SESSION_YIELD, NULL, NULL);
    crdtdb_session *sc = open_server(&B, &sc_ev, CRDTDB_SESSION_YIELD, NULL, NULL);
    int rc = 0;
    while (move(ca, sa, SIZE_MAX, &rc) + move(sa, ca, SIZE_MAX, &rc) + move(cc, sc, SIZE_MAX, &rc) +
           move(sc, cc, SIZE_MAX, &rc))
        ;
    ck_assert_int_eq(rc, 0);
    ck_assert_int_eq(crdtdb_session_pending(sa), 1);
    ck_assert_int_eq(crdtdb_session_pending(sc), 1);
    const uint8_t *d[2];
    size_t len[2];
    ck_assert_int_eq(crdtdb_session_batch_peek(sa, &d[0], &len[0]), 1);
    ck_assert_int_eq(crdtdb_session_batch_peek(sc, &d[1], &len[1]), 1);
    ck_assert_int_eq(crdtdb_session_batch_peek(ca, &d[1], &len[1]), 0); /* nothing waits */
    crdtdb_apply_info info[2];
    size_t done;
    ck_assert_int_eq(crdtdb_db_apply_batch(B.db, d, len, 2, info, &done), 0);
    ck_assert_uint_eq(done, 2);
    take_types(sa, (char[256]){0}, 256); /* the handshake's replies */
    take_types(sc, (char[256]){0}, 256);
    ck_assert_int_eq(crdtdb_session_batch_done(sa, &info[0]), 0);
    ck_assert_int_eq(crdtdb_session_batch_done(sc, &info[1]), 0);
    ck_assert_int_eq(crdtdb_session_pending(sa), 0);
    ck_assert_int_eq(crdtdb_session_batch_done(sa, &info[0]), CRDTDB_EINVAL); /* done once */
    ck_assert_int_eq(sa_ev.applied, 1);
    ck_assert_int_eq(sc_ev.applied, 1);
    ck_assert_int_eq(peek_count(sa, 4 /* ACK */), 1);
    ck_assert_int_eq(peek_count(sc, 4), 1);
    uint64_t last_a, last_c;
    ck_assert_int_eq(crdtdb_db_seq(A.db, NULL, &last_a), 0);
    ck_assert_int_eq(crdtdb_db_seq(C.db, NULL, &last_c), 0);
    ck_assert_uint_eq(received_from(&B, &A), last_a);
    ck_assert_uint_eq(received_from(&B, &C), last_c);
    /* the rest as usual: each client gets the other's record */
    crdtdb_session_pump(sa);
    crdtdb_session_pump(sc);
    ck_assert_int_eq(run(ca, sa, SIZE_MAX), 0);
    ck_assert_int_eq(run(cc, sc, SIZE_MAX), 0);
    char *a = dump(&A), *b = dump(&B), *c = dump(&C);
    ck_assert_ptr_nonnull(strstr(b, "cat"));
    ck_assert_str_eq(a, b);
    ck_assert_str_eq(c, b);
    free(a);
    free(b);
    free(c);
    ck_assert_int_eq(crdtdb_session_synced(ca), 1);
    ck_assert_int_eq(crdtdb_session_synced(cc), 1);
    /* a write filter decides each record: its session's deltas go alone */
    evs ef = {0};
    crdtdb_session *sf = open_server(&B, &ef, CRDTDB_SESSION_YIELD, refuse_from_c, NULL);
    ck_assert_int_eq(crdtdb_session_batch_peek(sf, &d[0], &len[0]), 0);
    crdtdb_session_close(sf);
    crdtdb_session_close(ca);
    crdtdb_session_close(cc);
    crdtdb_session_close(sa);
    crdtdb_session_close(sc);
    replica_free(&C);
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
    /* a NOTICE (taken before the hello) of more elements than any message
     * holds: refused before msgpack-c allocates 24 bytes for each of them */
    {
        size_t big = 2000;
        uint8_t *f = malloc(4 + 8 + big);
        ck_assert_ptr_nonnull(f);
        uint8_t *m = f + 4;
        size_t k = 0;
        m[k++] = 0x94, m[k++] = 0x09, m[k++] = 0x00, m[k++] = 0xa0;
        m[k++] = 0xdc, m[k++] = (uint8_t)(big >> 8), m[k++] = (uint8_t)big;
        memset(m + k, 0xc0, big); /* nil, nil, ... */
        k += big;
        f[0] = (uint8_t)(k >> 24), f[1] = (uint8_t)(k >> 16), f[2] = (uint8_t)(k >> 8),
        f[3] = (uint8_t)k;
        crdtdb_session *s = open_session(&B, 1, CRDTDB_SYNC_TWO_WAY, &e, 0);
        ck_assert_int_eq(crdtdb_session_feed(s, f, 4 + k), CRDTDB_EBADVALUE);
        ck_assert(crdtdb_session_closed(s));
        ck_assert_ptr_nonnull(strstr(crdtdb_session_errmsg(s), "more elements than allowed"));
        crdtdb_session_close(s);
        /* and as many in the outer array itself */
        m[0] = 0xdc, m[1] = (uint8_t)(big >> 8), m[2] = (uint8_t)big;
        m[3] = 0x09;
        memset(m + 4, 0xc0, big - 1);
        k = 3 + big;
        f[0] = (uint8_t)(k >> 24), f[1] = (uint8_t)(k >> 16), f[2] = (uint8_t)(k >> 8),
        f[3] = (uint8_t)k;
        ck_assert_int_eq(feed_server(f, 4 + k, &e), CRDTDB_EBADVALUE);
        free(f);
    }
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
    tu_frame(out, &m);
    crdtdb_buf_free(&body);
    crdtdb_buf_free(&env);
    crdtdb_buf_free(&m);
}

/* The message types of the frames queued, in order, as "t,t,..."; left
 * queued. */
static void list_types(crdtdb_session *s, char *out, size_t size)
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
}

/* The same, consumed. */
static void take_types(crdtdb_session *s, char *out, size_t size)
{
    list_types(s, out, size);
    size_t len;
    crdtdb_session_output(s, &len);
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

/* ------------------------------------------------------------ presence */

/* What the presence events brought: counts and a copy of the last one. */
typedef struct pev {
    int ready, errors, closed, remote, last_error, presences, messages;
    int key_null, user_null, state_null, to_null;
    int p_state_null; /* of the last PRESENCE */
    uint64_t p_version;
    uint8_t key[16], replica[32], bytes[2048];
    size_t len;
    char user[256], to[256];
    uint64_t version;
} pev;

static void on_pev(void *ctx, const crdtdb_session_event *ev)
{
    pev *e = ctx;
    const uint8_t *key = NULL, *rep = NULL, *bytes = NULL;
    const char *user = NULL, *to = NULL;
    switch (ev->type) {
    case CRDTDB_SESSION_READY: e->ready++; return;
    case CRDTDB_SESSION_ERROR:
        e->errors++;
        e->remote = ev->remote;
        e->last_error = ev->error;
        return;
    case CRDTDB_SESSION_CLOSED: e->closed++; return;
    case CRDTDB_SESSION_PRESENCE:
        e->presences++;
        key = ev->presence->key, user = ev->presence->user, rep = ev->presence->replica;
        bytes = ev->presence->state, e->len = ev->presence->state_len;
        e->version = ev->presence->version;
        e->p_state_null = !bytes, e->p_version = e->version;
        break;
    case CRDTDB_SESSION_MESSAGE:
        e->messages++;
        key = ev->msg->key, user = ev->msg->user, rep = ev->msg->replica;
        bytes = ev->msg->body, e->len = ev->msg->body_len;
        e->version = ev->msg->n;
        to = ev->msg->to;
        break;
    default: return;
    }
    e->key_null = !key, e->user_null = !user, e->state_null = !bytes, e->to_null = !to;
    if (key)
        memcpy(e->key, key, 16);
    ck_assert_ptr_nonnull(rep);
    memcpy(e->replica, rep, 32);
    ck_assert_uint_le(e->len, sizeof e->bytes);
    if (bytes)
        memcpy(e->bytes, bytes, e->len);
    if (user) { /* NUL-terminated for the callback */
        ck_assert_uint_le(strlen(user), 255);
        strcpy(e->user, user);
    }
    if (to) {
        ck_assert_uint_le(strlen(to), 255);
        strcpy(e->to, to);
    }
}

static crdtdb_session *open_pev(replica *r, int server, pev *e)
{
    crdtdb_session_options o;
    crdtdb_session_options_init(&o);
    ck_assert_uint_eq(o.max_presence, CRDTDB_PRESENCE_MAX);
    o.flags = server ? CRDTDB_SESSION_SERVER : 0;
    o.on_event = on_pev;
    o.ctx = e;
    crdtdb_session *s;
    ck_assert_int_eq(crdtdb_session_open(r->db, &o, &s), 0);
    return s;
}

/* A packer that writes message m afresh. */
static msgpack_packer mp_begin(crdtdb_buf *m)
{
    msgpack_packer pk;
    m->len = 0;
    msgpack_packer_init(&pk, m, crdtdb__buf_write_cb);
    return pk;
}

static uint64_t last_seq(replica *r)
{
    uint64_t v;
    ck_assert_int_eq(crdtdb_db_seq(r->db, NULL, &v), 0);
    return v;
}

/* The store as it is: its sequence and its records, to compare after. */
typedef struct snap {
    uint64_t seq_a, seq_b;
    char *a, *b;
} snap;

static void snap_take(snap *x)
{
    x->seq_a = last_seq(&A), x->seq_b = last_seq(&B);
    x->a = dump(&A), x->b = dump(&B);
}

/* Presence never touches either store. */
static void snap_same(snap *x)
{
    ck_assert_uint_eq(last_seq(&A), x->seq_a);
    ck_assert_uint_eq(last_seq(&B), x->seq_b);
    char *a = dump(&A), *b = dump(&B);
    ck_assert_str_eq(a, x->a);
    ck_assert_str_eq(b, x->b);
    free(a), free(b), free(x->a), free(x->b);
}

/* A write on A still reaches B over c -> s. */
static void still_syncs(crdtdb_session *c, crdtdb_session *s, const char *id)
{
    put(&A, "add", "players", id, "{\"hp\":3}");
    ck_assert_int_eq(crdtdb_session_pump(c), 0);
    ck_assert_int_eq(run(c, s, SIZE_MAX), 0);
    char *g = tu_get(B.db, "players", id);
    ck_assert_ptr_nonnull(g);
    ck_assert_str_eq(g, "{\"hp\":3}");
    free(g);
}

START_TEST(presence_and_messages_round_trip)
{
    seed_data();
    pev ec = {0}, es = {0};
    crdtdb_session *c = open_pev(&A, 0, &ec);
    crdtdb_session *s = open_pev(&B, 1, &es);
    /* before READY: refused */
    uint8_t st[] = {0x81, 0xa1, 'x', 0x01}; /* {"x": 1} */
    ck_assert_int_eq(crdtdb_session_presence_set(c, st, sizeof st), CRDTDB_EINVAL);
    ck_assert_int_eq(run(c, s, SIZE_MAX), 0);
    ck_assert_int_eq(ec.ready, 1);
    snap x;
    snap_take(&x);
    uint8_t a_id[32], b_id[32];
    crdtdb_env_replica_id(A.env, a_id);
    crdtdb_env_replica_id(B.env, b_id);
    /* [12] client -> server: key and user NULL (the server stamps them),
     * the client's replica id from its hello */
    ck_assert_int_eq(crdtdb_session_presence_set(c, st, sizeof st), 0);
    ck_assert_int_eq(crdtdb_session_want_write(c), 1);
    ck_assert_int_eq(run(c, s, SIZE_MAX), 0);
    ck_assert_int_eq(es.presences, 1);
    ck_assert(es.key_null && es.user_null && !es.state_null);
    ck_assert(memcmp(es.replica, a_id, 32) == 0);
    ck_assert_uint_eq(es.version, 0);
    ck_assert_uint_eq(es.len, sizeof st);
    ck_assert(memcmp(es.bytes, st, sizeof st) == 0);
    ck_assert_int_eq(crdtdb_session_presence_set(c, NULL, 0), 0); /* leave */
    ck_assert_int_eq(run(c, s, SIZE_MAX), 0);
    ck_assert_int_eq(es.presences, 2);
    ck_assert(es.state_null);
    /* presence is set by clients only */
    ck_assert_int_eq(crdtdb_session_presence_set(s, st, sizeof st), CRDTDB_EINVAL);
    ck_assert_int_eq(crdtdb_session_message_send(s, NULL, st, sizeof st), CRDTDB_EINVAL);

    /* [13] server -> client, encoded once, every field back exactly */
    uint8_t key[16], rep[32];
    for (int i = 0; i < 16; i++)
        key[i] = (uint8_t)(0xa0 + i);
    memset(rep, 0x5c, sizeof rep);
    crdtdb_presence p = {key, "", rep, 1ull << 63, st, sizeof st};
    crdtdb_buf f = CRDTDB_BUF_INIT;
    ck_assert_int_eq(crdtdb_presence_encode(&p, &f), 0);
    ck_assert_int_eq(crdtdb_session_send_frame(s, f.data, f.len), 0);
    ck_assert_int_eq(crdtdb_session_want_write(s), 1);
    ck_assert_int_eq(run(c, s, SIZE_MAX), 0);
    ck_assert_int_eq(ec.presences, 1);
    ck_assert(!ec.key_null && !ec.user_null && !ec.state_null);
    ck_assert(memcmp(ec.key, key, 16) == 0);
    ck_assert_str_eq(ec.user, "");
    ck_assert(memcmp(ec.replica, rep, 32) == 0);
    ck_assert_uint_eq(ec.version, 1ull << 63);
    ck_assert_uint_eq(ec.len, sizeof st);
    ck_assert(memcmp(ec.bytes, st, sizeof st) == 0);
    /* two frames at once: a leave (nil state), then a message */
    f.len = 0;
    crdtdb_presence leave = {key, "ann", rep, UINT64_MAX, NULL, 0};
    ck_assert_int_eq(crdtdb_presence_encode(&leave, &f), 0);
    uint8_t body[] = {0x92, 0x01, 0xa2, 'h', 'i'}; /* [1, "hi"] */
    crdtdb_message m = {key, "ann", rep, 5, "bob", body, sizeof body};
    ck_assert_int_eq(crdtdb_message_encode(&m, &f), 0);
    ck_assert_int_eq(crdtdb_session_send_frame(s, f.data, f.len), 0);
    ck_assert_int_eq(run(c, s, SIZE_MAX), 0);
    ck_assert_int_eq(ec.presences, 2);
    ck_assert(ec.p_state_null);
    ck_assert_uint_eq(ec.p_version, UINT64_MAX);
    ck_assert_int_eq(ec.messages, 1);
    ck_assert(!ec.key_null && memcmp(ec.key, key, 16) == 0);
    ck_assert_str_eq(ec.user, "ann");
    ck_assert(memcmp(ec.replica, rep, 32) == 0);
    ck_assert_uint_eq(ec.version, 5);
    ck_assert(!ec.to_null);
    ck_assert_str_eq(ec.to, "bob");
    ck_assert_uint_eq(ec.len, sizeof body);
    ck_assert(memcmp(ec.bytes, body, sizeof body) == 0);
    /* a message to everyone, relayed */
    f.len = 0;
    crdtdb_message all = {key, "ann", rep, 6, NULL, body, sizeof body};
    ck_assert_int_eq(crdtdb_message_encode(&all, &f), 0);
    ck_assert_int_eq(crdtdb_session_send_frame(s, f.data, f.len), 0);
    ck_assert_int_eq(run(c, s, SIZE_MAX), 0);
    ck_assert_int_eq(ec.messages, 2);
    ck_assert(ec.to_null);
    ck_assert_uint_eq(ec.version, 6);

    /* [14] client -> server, to NULL and to "bob" */
    uint8_t one[] = {0x2a};
    ck_assert_int_eq(crdtdb_session_message_send(c, NULL, one, sizeof one), 0);
    ck_assert_int_eq(run(c, s, SIZE_MAX), 0);
    ck_assert_int_eq(es.messages, 1);
    ck_assert(es.key_null && es.user_null && es.to_null);
    ck_assert(memcmp(es.replica, a_id, 32) == 0);
    ck_assert_uint_eq(es.version, 0);
    ck_assert_uint_eq(es.len, 1);
    ck_assert_uint_eq(es.bytes[0], 0x2a);
    ck_assert_int_eq(crdtdb_session_message_send(c, "bob", body, sizeof body), 0);
    ck_assert_int_eq(run(c, s, SIZE_MAX), 0);
    ck_assert_int_eq(es.messages, 2);
    ck_assert(!es.to_null);
    ck_assert_str_eq(es.to, "bob");
    ck_assert(memcmp(es.bytes, body, sizeof body) == 0);
    /* a server accepts relayed frames too (a peer server's link) */
    ck_assert_int_eq(crdtdb_session_send_frame(c, f.data, f.len), 0);
    ck_assert_int_eq(run(c, s, SIZE_MAX), 0);
    ck_assert_int_eq(es.messages, 3);
    ck_assert(!es.key_null && !es.user_null);

    /* send_frame takes whole frames of type 13 or 15 only */
    crdtdb_buf d = CRDTDB_BUF_INIT;
    delta_frame(&d, "game", a_id, 0);
    ck_assert_int_eq(crdtdb_session_send_frame(s, d.data, d.len), CRDTDB_EINVAL);
    ck_assert_int_eq(crdtdb_session_send_frame(s, f.data, f.len - 1), CRDTDB_EINVAL);
    ck_assert_int_eq(crdtdb_session_send_frame(s, f.data, 3), CRDTDB_EINVAL);
    ck_assert_int_eq(crdtdb_session_send_frame(s, NULL, 0), CRDTDB_EINVAL);
    size_t pending;
    crdtdb_session_output(s, &pending);
    ck_assert_uint_eq(pending, 0); /* nothing of them queued */
    /* encoders refuse what the receiver would */
    crdtdb_presence nokey = {NULL, "", rep, 1, NULL, 0};
    ck_assert_int_eq(crdtdb_presence_encode(&nokey, &d), CRDTDB_EINVAL);
    crdtdb_presence v0 = {key, "", rep, 0, NULL, 0};
    ck_assert_int_eq(crdtdb_presence_encode(&v0, &d), CRDTDB_EINVAL);
    crdtdb_message noto = {key, "ann", rep, 1, "", body, sizeof body};
    ck_assert_int_eq(crdtdb_message_encode(&noto, &d), CRDTDB_EINVAL);
    crdtdb_buf_free(&d);
    crdtdb_buf_free(&f);

    ck_assert_int_eq(ec.errors + es.errors, 0);
    snap_same(&x);
    still_syncs(c, s, "after");
    crdtdb_session_shutdown(c);
    run(c, s, SIZE_MAX);
    ck_assert_int_eq(crdtdb_session_presence_set(c, st, sizeof st), CRDTDB_EBUSY);
    ck_assert_int_eq(crdtdb_session_send_frame(s, NULL, 0), CRDTDB_EBUSY);
    crdtdb_session_close(c);
    crdtdb_session_close(s);
}
END_TEST

/* A msgpack map nested `depth` deep: {"a": {"a": ... 1}}. */
static void nested_map(crdtdb_buf *b, int depth)
{
    b->len = 0;
    for (int i = 0; i < depth; i++) {
        uint8_t h[] = {0x81, 0xa1, 'a'};
        ck_assert_int_eq(crdtdb__buf_append(b, h, sizeof h), 0);
    }
    uint8_t one = 1;
    ck_assert_int_eq(crdtdb__buf_append(b, &one, 1), 0);
}

typedef struct refusal {
    const char *what;
    int code;
    const uint8_t *p;
    size_t len;
} refusal;

/* Feeds one raw frame [type, ...] with payload p (as state or body) to
 * `to`; the other end must hear `code` as a NOTICE, `to` fire no event. */
static void refuse_one(crdtdb_session *from, crdtdb_session *to, pev *efrom, pev *eto, int type,
                       const refusal *r)
{
    crdtdb_buf m = CRDTDB_BUF_INIT, f = CRDTDB_BUF_INIT;
    msgpack_packer pk = mp_begin(&m);
    uint8_t key[16] = {1}, rep[32] = {2};
    const uint8_t *pay = r->p ? r->p : (const uint8_t *)""; /* empty, not nil */
    if (type == 12 || type == 14) {
        msgpack_pack_array(&pk, type == 12 ? 2 : 3);
        msgpack_pack_uint8(&pk, (uint8_t)type);
        if (type == 14)
            msgpack_pack_nil(&pk);
        msgpack_pack_bin_with_body(&pk, r->p, r->len);
        tu_frame(&f, &m);
        ck_assert_int_eq(crdtdb_session_feed(to, f.data, f.len), 0);
    } else if (type == 13) {
        crdtdb_presence p = {key, "u", rep, 1, pay, r->len};
        ck_assert_int_eq(crdtdb_presence_encode(&p, &f), 0);
        ck_assert_int_eq(crdtdb_session_send_frame(from, f.data, f.len), 0);
    } else {
        crdtdb_message msg = {key, "u", rep, 1, "bob", pay, r->len};
        ck_assert_int_eq(crdtdb_message_encode(&msg, &f), 0);
        ck_assert_int_eq(crdtdb_session_send_frame(from, f.data, f.len), 0);
    }
    int before_p = eto->presences, before_m = eto->messages, before_e = efrom->errors;
    ck_assert_int_eq(run(from, to, SIZE_MAX), 0);
    ck_assert_msg(eto->presences == before_p && eto->messages == before_m, "%s (%d): an event",
                  r->what, type);
    ck_assert_msg(efrom->errors == before_e + 1, "%s (%d): no notice", r->what, type);
    ck_assert_int_eq(efrom->remote, 1);
    ck_assert_msg(efrom->last_error == r->code, "%s (%d): %d", r->what, type, efrom->last_error);
    ck_assert(!crdtdb_session_closed(from) && !crdtdb_session_closed(to));
    crdtdb_buf_free(&m);
    crdtdb_buf_free(&f);
}

START_TEST(refused_presence_gets_a_notice_and_the_session_goes_on)
{
    seed_data();
    pev ec = {0}, es = {0};
    crdtdb_session *c = open_pev(&A, 0, &ec);
    crdtdb_session *s = open_pev(&B, 1, &es);
    ck_assert_int_eq(run(c, s, SIZE_MAX), 0);
    snap x;
    snap_take(&x);
    crdtdb_buf big = CRDTDB_BUF_INIT, deep = CRDTDB_BUF_INIT, ok16 = CRDTDB_BUF_INIT;
    { /* {"s": "xxx..."}: a valid map of max_presence + 1 bytes */
        uint8_t h[] = {0x81, 0xa1, 's', 0xda, 0, 0};
        size_t n = CRDTDB_PRESENCE_MAX + 1 - sizeof h;
        h[4] = (uint8_t)(n >> 8), h[5] = (uint8_t)n;
        ck_assert_int_eq(crdtdb__buf_append(&big, h, sizeof h), 0);
        for (size_t i = 0; i < n; i++)
            ck_assert_int_eq(crdtdb__buf_append(&big, "x", 1), 0);
    }
    nested_map(&deep, CRDTDB_PRESENCE_DEPTH + 1);
    nested_map(&ok16, CRDTDB_PRESENCE_DEPTH);
    static const uint8_t arr[] = {0x91, 0x01};                  /* [1]: not a map */
    static const uint8_t bad[] = {0xc1};                        /* never used */
    static const uint8_t trail[] = {0x80, 0x01};                /* {} then 1 */
    static const uint8_t intkey[] = {0x81, 0x01, 0x02};         /* {1: 2} */
    /* {"a": [{true: 1}]} */
    static const uint8_t deepkey[] = {0x81, 0xa1, 'a', 0x91, 0x81, 0xc3, 0x01};
    static const uint8_t cut[] = {0x82, 0xa1, 'a', 0x01};       /* a map short of a pair */
    static const uint8_t twobody[] = {0x01, 0x02};              /* two values */
    refusal states[] = {
        {"too big", CRDTDB_ETOOBIG, big.data, big.len},
        {"an array", CRDTDB_EBADVALUE, arr, sizeof arr},
        {"0xc1", CRDTDB_EBADVALUE, bad, sizeof bad},
        {"trailing", CRDTDB_EBADVALUE, trail, sizeof trail},
        {"int key", CRDTDB_EBADVALUE, intkey, sizeof intkey},
        {"deep int key", CRDTDB_EBADVALUE, deepkey, sizeof deepkey},
        {"truncated", CRDTDB_EBADVALUE, cut, sizeof cut},
        {"empty", CRDTDB_EBADVALUE, NULL, 0},
        {"too deep", CRDTDB_ETOODEEP, deep.data, deep.len},
    };
    refusal bodies[] = {
        {"too big", CRDTDB_ETOOBIG, big.data, big.len},
        {"two values", CRDTDB_EBADVALUE, twobody, sizeof twobody},
        {"0xc1", CRDTDB_EBADVALUE, bad, sizeof bad},
        {"int key", CRDTDB_EBADVALUE, intkey, sizeof intkey},
        {"deep int key", CRDTDB_EBADVALUE, deepkey, sizeof deepkey},
        {"empty", CRDTDB_EBADVALUE, NULL, 0},
        {"too deep", CRDTDB_ETOODEEP, deep.data, deep.len},
    };
    for (size_t i = 0; i < sizeof states / sizeof *states; i++) {
        refuse_one(c, s, &ec, &es, 12, &states[i]);
        refuse_one(s, c, &es, &ec, 13, &states[i]);
        /* and the sender's own API refuses it first, with the same code */
        const uint8_t *p = states[i].p ? states[i].p : (const uint8_t *)"";
        ck_assert_int_eq(crdtdb_session_presence_set(c, p, states[i].len), states[i].code);
    }
    for (size_t i = 0; i < sizeof bodies / sizeof *bodies; i++) {
        refuse_one(c, s, &ec, &es, 14, &bodies[i]);
        refuse_one(s, c, &es, &ec, 15, &bodies[i]);
        const uint8_t *p = bodies[i].p ? bodies[i].p : (const uint8_t *)"";
        ck_assert_int_eq(crdtdb_session_message_send(c, NULL, p, bodies[i].len), bodies[i].code);
    }
    ck_assert_int_eq(crdtdb_session_message_send(c, "", arr, sizeof arr), CRDTDB_EINVAL);
    size_t out;
    crdtdb_session_output(c, &out);
    ck_assert_uint_eq(out, 0); /* nothing refused was queued */
    /* at the limits: accepted */
    ck_assert_int_eq(crdtdb_session_presence_set(c, ok16.data, ok16.len), 0);
    ck_assert_int_eq(crdtdb_session_message_send(c, NULL, ok16.data, ok16.len), 0);
    big.len--;
    big.data[5]--; /* max_presence bytes exactly */
    ck_assert_int_eq(crdtdb_session_presence_set(c, big.data, big.len), 0);
    ck_assert_int_eq(run(c, s, SIZE_MAX), 0);
    ck_assert_int_eq(es.presences, 2);
    ck_assert_int_eq(es.messages, 1);
    ck_assert_uint_eq(es.len, CRDTDB_PRESENCE_MAX);
    snap_same(&x);
    still_syncs(c, s, "after");
    crdtdb_buf_free(&big);
    crdtdb_buf_free(&deep);
    crdtdb_buf_free(&ok16);
    crdtdb_session_close(c);
    crdtdb_session_close(s);
}
END_TEST

/* A smaller max_presence is the receiver's own. */
START_TEST(max_presence_is_the_receivers)
{
    pev ec = {0}, es = {0};
    crdtdb_session_options o;
    crdtdb_session_options_init(&o);
    o.mode = CRDTDB_SYNC_SERVER_TO_CLIENT; /* it has nothing else to write */
    o.on_event = on_pev;
    o.ctx = &ec;
    crdtdb_session *c;
    ck_assert_int_eq(crdtdb_session_open(A.db, &o, &c), 0);
    crdtdb_session_options_init(&o);
    o.flags = CRDTDB_SESSION_SERVER;
    o.on_event = on_pev;
    o.ctx = &es;
    o.max_presence = 8;
    crdtdb_session *s;
    ck_assert_int_eq(crdtdb_session_open(B.db, &o, &s), 0);
    ck_assert_int_eq(run(c, s, SIZE_MAX), 0);
    uint8_t st[] = {0x82, 0xa1, 'x', 0x01, 0xa2, 'y', 'y', 0x02}; /* 8 bytes */
    ck_assert_int_eq(crdtdb_session_want_write(c), 0);
    ck_assert_int_eq(crdtdb_session_presence_set(c, st, sizeof st), 0);
    ck_assert_int_eq(crdtdb_session_want_write(c), 1); /* queued output wakes the writer */
    ck_assert_int_eq(run(c, s, SIZE_MAX), 0);
    ck_assert_int_eq(es.presences, 1);
    uint8_t st9[] = {0x82, 0xa1, 'x', 0x01, 0xa2, 'y', 'y', 0xcc, 0xff}; /* 9 bytes */
    ck_assert_int_eq(crdtdb_session_presence_set(c, st9, sizeof st9), 0);
    ck_assert_int_eq(run(c, s, SIZE_MAX), 0);
    ck_assert_int_eq(es.presences, 1);
    ck_assert_int_eq(ec.last_error, CRDTDB_ETOOBIG);
    ck_assert(!crdtdb_session_closed(s));
    crdtdb_session_close(c);
    crdtdb_session_close(s);
}
END_TEST

/* Builds [type, ...] from msgpack bytes after the type (n elements in
 * all), framed, into f. */
static void raw_frame(crdtdb_buf *f, unsigned n, const uint8_t *rest, size_t len)
{
    crdtdb_buf m = CRDTDB_BUF_INIT;
    uint8_t h = (uint8_t)(0x90 | n);
    ck_assert_int_eq(crdtdb__buf_append(&m, &h, 1), 0);
    ck_assert_int_eq(crdtdb__buf_append(&m, rest, len), 0);
    f->len = 0;
    tu_frame(f, &m);
    crdtdb_buf_free(&m);
}

/* A server session on m, past the handshake; e counts its events. */
static crdtdb_session *engine_pev(mem_store *m, int server, pev *e)
{
    crdtdb__session_store st;
    mem_store_init(m, "fz", 2);
    mem_store_bind(m, &st);
    crdtdb_session_options o;
    crdtdb_session_options_init(&o);
    o.flags = server ? CRDTDB_SESSION_SERVER : 0;
    o.on_event = on_pev;
    o.ctx = e;
    crdtdb_session *s;
    ck_assert_int_eq(crdtdb__session_open_store(&st, &o, &s), 0);
    uint8_t buf[256];
    size_t n = hello(buf, 1, "fz", PEER_ID);
    ck_assert_int_eq(crdtdb_session_feed(s, buf, n), 0);
    ck_assert_int_eq(e->ready, 1);
    size_t len;
    crdtdb_session_output(s, &len);
    crdtdb_session_consume(s, len);
    return s;
}

/* Feeds frame f to a fresh session on the mem store: the session's
 * result; what it applied or stored must be nothing. */
static int feed_engine(int server, int handshake, const crdtdb_buf *f, pev *e)
{
    mem_store m;
    memset(e, 0, sizeof *e);
    crdtdb_session *s;
    if (handshake) {
        s = engine_pev(&m, server, e);
    } else {
        crdtdb__session_store st;
        mem_store_init(&m, "fz", 2);
        mem_store_bind(&m, &st);
        crdtdb_session_options o;
        crdtdb_session_options_init(&o);
        o.flags = server ? CRDTDB_SESSION_SERVER : 0;
        o.on_event = on_pev;
        o.ctx = e;
        ck_assert_int_eq(crdtdb__session_open_store(&st, &o, &s), 0);
    }
    int rc = crdtdb_session_feed(s, f->data, f->len);
    if (rc) {
        ck_assert(crdtdb_session_closed(s));
        ck_assert_int_eq(e->closed, 1);
    }
    if (rc) /* malformed: no event */
        ck_assert_int_eq(e->presences + e->messages, 0);
    ck_assert_uint_eq(m.last, 2);
    ck_assert_uint_eq(m.applies + m.purges + m.replaces, 0);
    crdtdb_session_close(s);
    return rc;
}

/* LEAVE ([17]) is a client's last word to a server: the session ends
 * there, with no error; sent to a client, or with arguments, it is
 * malformed. */
START_TEST(leave_ends_a_server_session)
{
    crdtdb_buf f = CRDTDB_BUF_INIT;
    pev e;
    uint8_t one[] = {17}, two[] = {17, 1};
    raw_frame(&f, 1, one, 1);
    ck_assert_int_eq(feed_engine(1, 1, &f, &e), 0);
    ck_assert_int_eq(e.closed, 1);
    ck_assert_int_eq(e.errors, 0);
    ck_assert_int_eq(feed_engine(0, 1, &f, &e), CRDTDB_EBADVALUE);
    raw_frame(&f, 2, two, 2);
    ck_assert_int_eq(feed_engine(1, 1, &f, &e), CRDTDB_EBADVALUE);
    crdtdb_buf_free(&f);
}
END_TEST

/* A client's LEAVE waits for the server's answer: [17] says the server
 * stored it (left), CLOSE or ERROR that it did not; anything else that
 * comes meanwhile is ignored, even what an open session would refuse. */
START_TEST(leaving_client_takes_only_the_answer)
{
    uint8_t leave[] = {17}, close_[] = {7}, error[] = {6, 0xd0, (uint8_t)CRDTDB_EIO, 0xa1, 'x'},
            pset[] = {12, 0xc0}, malformed[] = {17, 1};
    const struct {
        const uint8_t *b;
        unsigned n;
        size_t len;
        int left, errors;
    } answers[] = {{leave, 1, 1, 1, 0}, {close_, 1, 1, 0, 0}, {error, 3, sizeof error, 0, 1}};
    for (size_t i = 0; i < sizeof answers / sizeof *answers; i++) {
        mem_store m;
        pev e;
        memset(&e, 0, sizeof e);
        crdtdb_session *s = engine_pev(&m, 0, &e);
        ck_assert_int_eq(crdtdb_session_leave(s), 0);
        size_t len;
        const uint8_t *p = crdtdb_session_output(s, &len);
        ck_assert_uint_ge(len, 6);
        ck_assert(p[len - 2] == 0x91 && p[len - 1] == 17); /* [17], last */
        crdtdb_session_consume(s, len);
        ck_assert(!crdtdb_session_closed(s) && !crdtdb_session_left(s));
        ck_assert_str_eq(crdtdb_session_unsynced(s), "the session is leaving");
        ck_assert_int_eq(crdtdb_session_presence_set(s, NULL, 0), CRDTDB_EBUSY);
        /* LEAVE is the client's last message: no NOTICE follows it */
        ck_assert_int_eq(crdtdb_session_notify(s, CRDTDB_EIO, "late"), CRDTDB_EBUSY);
        ck_assert_int_eq(crdtdb_session_leave(s), CRDTDB_EINVAL); /* its own message */
        ck_assert_str_eq(crdtdb_session_errmsg(s), "the session is already leaving");
        crdtdb_session_output(s, &len);
        ck_assert_uint_eq(len, 0);
        crdtdb_buf f = CRDTDB_BUF_INIT;
        raw_frame(&f, 2, pset, 2); /* a presence set, to a client */
        ck_assert_int_eq(crdtdb_session_feed(s, f.data, f.len), 0);
        ck_assert(!crdtdb_session_closed(s) && e.closed == 0 && e.errors == 0);
        raw_frame(&f, answers[i].n, answers[i].b, answers[i].len);
        ck_assert_int_eq(crdtdb_session_feed(s, f.data, f.len), 0);
        ck_assert(crdtdb_session_closed(s));
        ck_assert_int_eq(crdtdb_session_left(s), answers[i].left);
        ck_assert_int_eq(e.closed, 1);
        ck_assert_int_eq(e.errors, answers[i].errors);
        crdtdb_session_output(s, &len);
        ck_assert_uint_eq(len, 0); /* nothing said back */
        ck_assert_uint_eq(m.applies + m.purges + m.replaces, 0);
        crdtdb_buf_free(&f);
        crdtdb_session_close(s);
    }
    /* an answer with arguments is malformed: the session ends, not left */
    mem_store m;
    pev e;
    memset(&e, 0, sizeof e);
    crdtdb_session *s = engine_pev(&m, 0, &e);
    ck_assert_int_eq(crdtdb_session_leave(s), 0);
    crdtdb_buf f = CRDTDB_BUF_INIT;
    raw_frame(&f, 2, malformed, 2);
    ck_assert_int_eq(crdtdb_session_feed(s, f.data, f.len), CRDTDB_EBADVALUE);
    ck_assert(crdtdb_session_closed(s) && !crdtdb_session_left(s));
    crdtdb_buf_free(&f);
    crdtdb_session_close(s);
}
END_TEST

START_TEST(malformed_presence_ends_the_session)
{
    crdtdb_buf f = CRDTDB_BUF_INIT;
    pev e;
    uint8_t k16[] = {0xc4, 16}, k15[] = {0xc4, 15}, rep[] = {0xc4, 32};
    crdtdb_buf r = CRDTDB_BUF_INIT;
/* appends bytes to r */
#define PUT(...)                                                                                   \
    do {                                                                                           \
        const uint8_t b_[] = {__VA_ARGS__};                                                        \
        ck_assert_int_eq(crdtdb__buf_append(&r, b_, sizeof b_), 0);                                \
    } while (0)
#define ZEROS(n)                                                                                   \
    do {                                                                                           \
        uint8_t z_[64] = {0};                                                                      \
        ck_assert_int_eq(crdtdb__buf_append(&r, z_, (n)), 0);                                      \
    } while (0)
    /* a well-formed [13] to a client: an event, no error */
    r.len = 0;
    PUT(13);
    ck_assert_int_eq(crdtdb__buf_append(&r, k16, 2), 0);
    ZEROS(16);
    PUT(0xa1, 'u');
    ck_assert_int_eq(crdtdb__buf_append(&r, rep, 2), 0);
    ZEROS(32);
    PUT(0x01, 0xc0);
    raw_frame(&f, 6, r.data, r.len);
    ck_assert_int_eq(feed_engine(0, 1, &f, &e), 0);
    ck_assert_int_eq(e.presences, 1);
    ck_assert_int_eq(feed_engine(1, 1, &f, &e), 0); /* and to a server */
    ck_assert_int_eq(e.presences, 1);
    /* ... but not before the handshake */
    ck_assert_int_eq(feed_engine(1, 0, &f, &e), CRDTDB_EBADVALUE);
    ck_assert_int_eq(feed_engine(0, 0, &f, &e), CRDTDB_EBADVALUE);
    /* wrong arity: one element short */
    raw_frame(&f, 5, r.data, r.len - 1);
    ck_assert_int_eq(feed_engine(0, 1, &f, &e), CRDTDB_EBADVALUE);
    /* key of 15 bytes */
    r.len = 0;
    PUT(13);
    ck_assert_int_eq(crdtdb__buf_append(&r, k15, 2), 0);
    ZEROS(15);
    PUT(0xa1, 'u');
    ck_assert_int_eq(crdtdb__buf_append(&r, rep, 2), 0);
    ZEROS(32);
    PUT(0x01, 0xc0);
    raw_frame(&f, 6, r.data, r.len);
    ck_assert_int_eq(feed_engine(0, 1, &f, &e), CRDTDB_EBADVALUE);
    /* version 0 */
    r.len = 0;
    PUT(13);
    ck_assert_int_eq(crdtdb__buf_append(&r, k16, 2), 0);
    ZEROS(16);
    PUT(0xa1, 'u');
    ck_assert_int_eq(crdtdb__buf_append(&r, rep, 2), 0);
    ZEROS(32);
    PUT(0x00, 0xc0);
    raw_frame(&f, 6, r.data, r.len);
    ck_assert_int_eq(feed_engine(1, 1, &f, &e), CRDTDB_EBADVALUE);
    /* user not UTF-8 */
    r.len = 0;
    PUT(13);
    ck_assert_int_eq(crdtdb__buf_append(&r, k16, 2), 0);
    ZEROS(16);
    PUT(0xa1, 0xff);
    ck_assert_int_eq(crdtdb__buf_append(&r, rep, 2), 0);
    ZEROS(32);
    PUT(0x01, 0xc0);
    raw_frame(&f, 6, r.data, r.len);
    ck_assert_int_eq(feed_engine(1, 1, &f, &e), CRDTDB_EBADVALUE);
    /* [12, "str"]: a str state */
    r.len = 0;
    PUT(12, 0xa1, 'x');
    raw_frame(&f, 2, r.data, r.len);
    ck_assert_int_eq(feed_engine(1, 1, &f, &e), CRDTDB_EBADVALUE);
    /* [12] and [12, nil, nil] */
    r.len = 0;
    PUT(12);
    raw_frame(&f, 1, r.data, r.len);
    ck_assert_int_eq(feed_engine(1, 1, &f, &e), CRDTDB_EBADVALUE);
    PUT(0xc0, 0xc0);
    raw_frame(&f, 3, r.data, r.len);
    ck_assert_int_eq(feed_engine(1, 1, &f, &e), CRDTDB_EBADVALUE);
    /* [12, nil]: a server takes it, a client ends the session, and so
     * before the handshake */
    r.len = 0;
    PUT(12, 0xc0);
    raw_frame(&f, 2, r.data, r.len);
    ck_assert_int_eq(feed_engine(1, 1, &f, &e), 0);
    ck_assert_int_eq(e.presences, 1);
    ck_assert_int_eq(feed_engine(0, 1, &f, &e), CRDTDB_EBADVALUE);
    ck_assert_int_eq(feed_engine(1, 0, &f, &e), CRDTDB_EBADVALUE);
    /* [14, nil, bin]: the same; [14, "", bin] (empty to) and [14, 1, bin]
     * are malformed */
    r.len = 0;
    PUT(14, 0xc0, 0xc4, 1, 0x01);
    raw_frame(&f, 3, r.data, r.len);
    ck_assert_int_eq(feed_engine(1, 1, &f, &e), 0);
    ck_assert_int_eq(e.messages, 1);
    ck_assert_int_eq(feed_engine(0, 1, &f, &e), CRDTDB_EBADVALUE);
    r.len = 0;
    PUT(14, 0xa0, 0xc4, 1, 0x01);
    raw_frame(&f, 3, r.data, r.len);
    ck_assert_int_eq(feed_engine(1, 1, &f, &e), CRDTDB_EBADVALUE);
    r.len = 0;
    PUT(14, 0x01, 0xc4, 1, 0x01);
    raw_frame(&f, 3, r.data, r.len);
    ck_assert_int_eq(feed_engine(1, 1, &f, &e), CRDTDB_EBADVALUE);
    /* [15, ...] with a nil body */
    r.len = 0;
    PUT(15);
    ck_assert_int_eq(crdtdb__buf_append(&r, k16, 2), 0);
    ZEROS(16);
    PUT(0xa0);
    ck_assert_int_eq(crdtdb__buf_append(&r, rep, 2), 0);
    ZEROS(32);
    PUT(0x01, 0xc0, 0xc0);
    raw_frame(&f, 7, r.data, r.len);
    ck_assert_int_eq(feed_engine(0, 1, &f, &e), CRDTDB_EBADVALUE);
    r.data[r.len - 1] = 0xc4; /* bin 8 of length 0: well-formed, an empty body */
    PUT(0x00);
    raw_frame(&f, 7, r.data, r.len);
    ck_assert_int_eq(feed_engine(0, 1, &f, &e), 0); /* a NOTICE, no event */
    ck_assert_int_eq(e.messages, 0);
#undef PUT
#undef ZEROS
    crdtdb_buf_free(&r);
    crdtdb_buf_free(&f);
}
END_TEST

/* Presence frames are cheap: never held back by YIELD as deltas are. */
START_TEST(presence_frames_are_not_costly)
{
    mem_store m;
    pev e = {0};
    crdtdb__session_store st;
    mem_store_init(&m, "fz", 0);
    mem_store_bind(&m, &st);
    crdtdb_session_options o;
    crdtdb_session_options_init(&o);
    o.flags = CRDTDB_SESSION_SERVER | CRDTDB_SESSION_YIELD;
    o.on_event = on_pev;
    o.ctx = &e;
    crdtdb_session *s;
    ck_assert_int_eq(crdtdb__session_open_store(&st, &o, &s), 0);
    uint8_t buf[256];
    size_t n = hello(buf, 1, "fz", PEER_ID);
    ck_assert_int_eq(crdtdb_session_feed(s, buf, n), 0);
    static const uint8_t set[] = {0, 0, 0, 5, 0x92, 12, 0xc4, 1, 0x80}; /* [12, {}] */
    ck_assert_int_eq(crdtdb_session_feed(s, set, sizeof set), 0);
    ck_assert_int_eq(e.presences, 1);
    ck_assert_int_eq(crdtdb_session_pending(s), 0);
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
    tcase_add_test(tc, a_copy_made_again_syncs_a_fresh_client);
    tcase_add_test(tc, shared_export_signs_an_empty_range_when_asked);
    tcase_add_test(tc, shared_export_is_signed_once);
    tcase_add_test(tc, empty_ranges_are_not_signed);
    tcase_add_test(tc, echo_is_skipped_unsigned);
    tcase_add_test(tc, read_filter_hides_purges_and_reveals_whole);
    tcase_add_test(tc, early_pump_takes_only_an_idle_caught_up_session);
    tcase_add_test(tc, refused_write_is_undone_at_the_sender_only);
    tcase_add_test(tc, acks_only_from_proven_peers_within_range);
    tcase_add_test(tc, since_beyond_what_a_client_sent_is_a_fork);
    tcase_add_test(tc, acks_taken_are_recorded_by_the_caller);
    tcase_add_test(tc, costly_deltas_come_again_smaller);
    tcase_add_test(tc, clock_refused_delta_is_asked_again);
    tcase_add_test(tc, sessions_of_one_database_commit_together);
    tcase_add_test(tc, clock_refused_delta_comes_on_the_timer);
    tcase_add_test(tc, replace_shows_nothing_the_peer_may_not_see);
    tcase_add_test(tc, yield_holds_every_spelling_of_a_delta);
    tcase_add_test(tc, server_to_client_mode);
    tcase_add_test(tc, cut_and_resume);
    tcase_add_test(tc, backpressure_bounds_the_output);
    tcase_add_test(tc, bad_frames_end_the_session);
    tcase_add_test(tc, duplicated_frames_are_harmless);
    tcase_add_test(tc, presence_and_messages_round_trip);
    tcase_add_test(tc, refused_presence_gets_a_notice_and_the_session_goes_on);
    tcase_add_test(tc, max_presence_is_the_receivers);
    suite_add_tcase(s, tc);
    TCase *te = tcase_create("engine"); /* no LMDB: tests/mem_store.c */
    tcase_add_test(te, notices_from_the_apply_are_queued);
    tcase_add_test(te, signer_checked_before_the_store_and_errors_keep_their_message);
    tcase_add_test(te, nothing_follows_a_close_made_by_a_callback);
    tcase_add_test(te, notices_from_the_last_pump_of_a_feed_are_sent);
    tcase_add_test(te, leave_ends_a_server_session);
    tcase_add_test(te, leaving_client_takes_only_the_answer);
    tcase_add_test(te, malformed_presence_ends_the_session);
    tcase_add_test(te, presence_frames_are_not_costly);
    suite_add_tcase(s, te);
    return tu_run(s);
}
