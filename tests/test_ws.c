/* The WebSocket binding: a real server on 127.0.0.1 (ephemeral port) and
 * real clients, all driven from this thread through their run functions. */
#define _GNU_SOURCE /* memmem */
#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <libwebsockets.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/replica.h"
#include "tests/testutil.h"
#include "tests/wsutil.h"

/*
 * libwebsockets 4.1.6 never frees a client's OpenSSL context (its CA store
 * included) once that client made a TLS connection, even after
 * lws_context_destroy(); LeakSanitizer would fail tls_sync for it.  Only
 * allocations made inside OpenSSL are excused: nothing of ours allocates
 * there.
 */
const char *__lsan_default_suppressions(void);
const char *__lsan_default_suppressions(void)
{
    return "leak:libcrypto.so\nleak:libssl.so\n";
}

static uint64_t now = 1700000000000ull;
static replica S, A, B, C; /* server env, client replicas (C: some tests) */
static int have_c;
static crdtdb_server *srv;
static crdtdb_client *ca, *cb, *cc;
static pid_t kid; /* a server in a child process (some tests) */
static char url[64];
static int log_lines;
static int log_gone; /* of them, "disconnected" lines: a connection the server saw end */
/* What spin runs: the server and the clients above. */
static const tu_net NET = {{&srv}, {&ca, &cb, &cc}, 2};

static void log_line(void *ctx, const char *line)
{
    (void)ctx;
    log_lines++;
    log_gone += strstr(line, ": disconnected") != NULL;
    fprintf(stderr, "server: %s\n", line);
}

/* Opens srv on S (any port, the test's collections) and sets url; its log
 * lines go to log_line, or are appended to *log when log is not NULL. */
static void open_server(crdtdb_sync_mode mode, crdtdb_buf *log)
{
    crdtdb_server_options o;
    crdtdb_server_options_init(&o);
    o.port = 0;
    o.collections = COLLS;
    o.ncoll = 2;
    o.mode = mode;
    o.log = log ? tu_log_line : log_line;
    o.log_ctx = log;
    ck_assert_int_eq(crdtdb_server_open(S.env, &o, &srv), 0);
    ck_assert_int_gt(crdtdb_server_port(srv), 0);
    snprintf(url, sizeof url, "ws://127.0.0.1:%d", crdtdb_server_port(srv));
}

static void start_server(crdtdb_sync_mode mode) { open_server(mode, NULL); }

static crdtdb_client *client(replica *r)
{
    crdtdb_client_options o;
    crdtdb_client_options_init(&o);
    o.url = url;
    o.backoff_min_ms = 10;
    o.backoff_max_ms = 100;
    crdtdb_client *c;
    ck_assert_int_eq(crdtdb_client_open(r->db, &o, &c), 0);
    return c;
}

/* Counts a client's ERROR events whose message holds "connection lost". */
static int lost_events;
static void count_lost(void *ctx, const crdtdb_session_event *ev)
{
    (void)ctx;
    if (ev->type == CRDTDB_SESSION_ERROR && !ev->remote && ev->error == CRDTDB_EIO &&
        strstr(ev->message, "connection lost: 127.0.0.1:"))
        lost_events++;
}

static void setup(void)
{
    replica_init(&S, &now, "game");
    replica_init(&A, &now, "game");
    replica_init(&B, &now, "game");
    srv = NULL;
    ca = cb = cc = NULL;
    have_c = 0;
    kid = 0;
}

static void teardown(void)
{
    crdtdb_client_close(ca);
    crdtdb_client_close(cb);
    crdtdb_client_close(cc);
    crdtdb_server_close(srv);
    if (kid > 0) {
        kill(kid, SIGKILL);
        waitpid(kid, NULL, 0);
    }
    replica_free(&A);
    replica_free(&B);
    if (have_c)
        replica_free(&C);
    replica_free(&S);
}

/* Runs server and clients until cond holds or ms pass; 1 if it held. */
static int spin(tu_cond cond, void *arg, int ms) { return tu_spin(&NET, cond, arg, ms); }

static int both_connected(void *arg)
{
    (void)arg;
    return (!ca || crdtdb_client_connected(ca)) && (!cb || crdtdb_client_connected(cb)) &&
           (!cc || crdtdb_client_connected(cc));
}

/* Spins until (coll, id) of db reads as json (NULL: absent, TU_ANY: any
 * value), 10 s at most. */
static void wait_for(crdtdb_db *db, const char *coll, const char *id, const char *json)
{
    tu_expect(&NET, db, coll, id, json);
}

/* A two-way server with clients A and B connected to it. */
static void two_clients(void)
{
    start_server(CRDTDB_SYNC_TWO_WAY);
    ca = client(&A);
    cb = client(&B);
    ck_assert(spin(both_connected, NULL, 10000));
}

START_TEST(two_clients_one_database)
{
    two_clients();
    put(&A, "add", "players", "ann", "{\"hp\":10}");
    wait_for(B.db, "players", "ann", "{\"hp\":10}");
    wait_for(S.db, "players", "ann", "{\"hp\":10}"); /* the server's env has it */
    put(&B, "update", "players", "ann", "{\"hp\":9,\"pos\":{\"x\":1}}");
    wait_for(A.db, "players", "ann", "{\"hp\":9,\"pos\":{\"x\":1}}");
    put(&B, "add", "moves", "m1", "{\"to\":\"e4\"}");
    put(&A, "remove", "players", "ann", NULL);
    wait_for(A.db, "moves", "m1", TU_ANY);
    wait_for(B.db, "players", "ann", NULL); /* gone */
    ck_assert_int_gt(log_lines, 0);
}
END_TEST

typedef struct acks_want {
    uint8_t peer[2][32];
    uint64_t last;
} acks_want;

/* The server's env holds every client's ack of its whole log. */
static int server_has_acks(void *arg)
{
    acks_want *w = arg;
    for (int i = 0; i < 2; i++) {
        crdtdb_peer p;
        int found;
        if (crdtdb_db_peer_get(S.db, w->peer[i], &p, &found) || p.acked < w->last)
            return 0;
    }
    return 1;
}

/* The server records the acks of all the clients of a database (taken
 * together on its 50 ms timer): each one's watermark reaches the server's
 * log end.  That they share one commit is test_sync's and test_session's
 * to show (crdtdb_db_peer_acks, crdtdb_session_acks_take). */
START_TEST(server_records_every_clients_acks)
{
    two_clients();
    put(&A, "add", "players", "ann", "{\"hp\":10}");
    put(&B, "add", "players", "bob", "{\"hp\":3}");
    wait_for(A.db, "players", "bob", TU_ANY);
    wait_for(B.db, "players", "ann", TU_ANY);
    acks_want w;
    crdtdb_env_replica_id(A.env, w.peer[0]);
    crdtdb_env_replica_id(B.env, w.peer[1]);
    ck_assert_int_eq(crdtdb_db_seq(S.db, NULL, &w.last), 0);
    ck_assert_uint_gt(w.last, 0);
    ck_assert(spin(server_has_acks, &w, 10000));
}
END_TEST

static int b_has_all(void *arg)
{
    (void)arg;
    char *a = dump(&A), *b = dump(&B);
    int ok = strcmp(a, b) == 0;
    free(a);
    free(b);
    return ok;
}

/* More than one WebSocket message's worth (64 KiB) in many deltas. */
START_TEST(bulk_data_in_many_messages)
{
    char big[1100];
    memset(big, 'x', sizeof big);
    big[0] = '{';
    memcpy(big + 1, "\"s\":\"", 5);
    memcpy(big + sizeof big - 3, "\"}", 3);
    crdtdb_txn *t;
    ck_assert_int_eq(crdtdb_txn_begin(A.db, 0, &t), 0);
    crdtdb_buf v = CRDTDB_BUF_INIT;
    tu_mp(&v, big);
    for (int i = 0; i < 400; i++) {
        char id[16];
        snprintf(id, sizeof id, "r%03d", i);
        ck_assert_int_eq(crdtdb_db_add(A.db, t, "moves", id, v.data, v.len), 0);
    }
    ck_assert_int_eq(crdtdb_txn_commit(t), 0);
    crdtdb_buf_free(&v);
    start_server(CRDTDB_SYNC_TWO_WAY);
    ca = client(&A);
    cb = client(&B);
    /* 60 s: 20 was short under ASan on a loaded 2-core machine */
    ck_assert_msg(spin(b_has_all, NULL, 60000), "bulk data did not arrive");
}
END_TEST

START_TEST(databases_are_isolated)
{
    replica_free(&B);
    replica_init(&B, &now, "other");
    two_clients();
    put(&A, "add", "players", "only-game", "{\"a\":1}");
    put(&B, "add", "players", "only-other", "{\"b\":1}");
    wait_for(S.db, "players", "only-game", "{\"a\":1}");
    crdtdb_db *other;
    ck_assert_int_eq(crdtdb_db_open(S.env, "other", &other), 0); /* created by the server */
    wait_for(other, "players", "only-other", "{\"b\":1}");
    spin(NULL, NULL, 100); /* let anything misrouted arrive */
    char *g;
    ck_assert_ptr_null(g = tu_get(other, "players", "only-game"));
    ck_assert_ptr_null(g = tu_get(S.db, "players", "only-other"));
    ck_assert_ptr_null(g = tu_get(A.db, "players", "only-other"));
    ck_assert_ptr_null(g = tu_get(B.db, "players", "only-game"));
    crdtdb_db_close(other);
}
END_TEST

static int all_same(void *arg)
{
    (void)arg;
    char *a = dump(&A), *b = dump(&B), *s = dump(&S);
    int ok = strcmp(a, b) == 0 && strcmp(a, s) == 0;
    free(a);
    free(b);
    free(s);
    return ok;
}

START_TEST(offline_writes_then_reconnect)
{
    two_clients();
    put(&A, "add", "players", "ann", "{\"hp\":10,\"pos\":{\"x\":1,\"y\":1}}");
    wait_for(B.db, "players", "ann", TU_ANY);
    crdtdb_client_close(ca);
    ca = NULL;
    /* offline on A, online on B: concurrent changes to different fields */
    now += 1000;
    put(&A, "update", "players", "ann", "{\"pos\":{\"x\":5}}");
    put(&A, "add", "moves", "a1", "{\"by\":\"A\"}");
    put(&B, "update", "players", "ann", "{\"pos\":{\"y\":7}}");
    put(&B, "add", "moves", "b1", "{\"by\":\"B\"}");
    wait_for(S.db, "moves", "b1", TU_ANY);
    spin(NULL, NULL, 50);
    ck_assert_ptr_null(tu_get(B.db, "moves", "a1"));
    ca = client(&A);
    ck_assert_msg(spin(all_same, NULL, 10000), "replicas did not converge");
    char *g = tu_get(B.db, "players", "ann");
    ck_assert_str_eq(g, "{\"hp\":10,\"pos\":{\"x\":5,\"y\":7}}");
    free(g);
}
END_TEST

/* A tu_cond: the server logged more disconnections than *(int *)arg. */
static int more_gone(void *arg) { return log_gone > *(const int *)arg; }

static int server_collected(void *arg)
{
    (void)arg;
    crdtdb_db_stats st;
    return crdtdb_db_stat(S.db, &st) == 0 && st.removed == 0 && st.records == 1;
}

/* A server collecting on its timer (collect_secs): a client that was
 * offline past the peer age limit comes back, is resynced whole, forgets
 * the removed record, and its offline update of it does not bring it back. */
START_TEST(server_collects_and_resyncs_a_late_client)
{
    crdtdb_server_options o;
    crdtdb_server_options_init(&o);
    o.collections = COLLS;
    o.ncoll = 2;
    o.log = log_line;
    o.collect_secs = 1;
    o.max_peer_age_ms = 30000;
    ck_assert_int_eq(crdtdb_server_open(S.env, &o, &srv), 0);
    snprintf(url, sizeof url, "ws://127.0.0.1:%d", crdtdb_server_port(srv));
    ca = client(&A);
    cb = client(&B);
    ck_assert(spin(both_connected, NULL, 10000));
    put(&A, "add", "players", "ann", "{\"hp\":10}");
    put(&A, "add", "players", "bob", "{\"hp\":5}");
    wait_for(B.db, "players", "ann", TU_ANY);
    int gone = log_gone;
    crdtdb_client_close(cb);
    cb = NULL;
    /* the server sees B go (and reads the acks it sent) before time moves
     * on: a wait for its line, not a fixed 100 ms */
    ck_assert_msg(spin(more_gone, &gone, 10000), "the server never saw B go");
    now += 1000;
    put(&B, "update", "players", "ann", "{\"hp\":1}"); /* offline, before the remove */
    now += 60000; /* B is silent past the age limit */
    put(&A, "remove", "players", "ann", NULL);
    ck_assert_msg(spin(server_collected, NULL, 10000), "the server did not collect");
    now += 1000;
    put(&B, "add", "moves", "b1", "{}"); /* newer than anything collected */
    cb = client(&B);
    wait_for(B.db, "players", "ann", NULL);
    wait_for(S.db, "moves", "b1", TU_ANY);
    ck_assert_msg(spin(all_same, NULL, 10000), "replicas did not converge");
    ck_assert_ptr_null(tu_get(S.db, "players", "ann"));
}
END_TEST

START_TEST(server_to_client_mode)
{
    put(&S, "add", "players", "boss", "{\"hp\":99}");
    start_server(CRDTDB_SYNC_SERVER_TO_CLIENT);
    ca = client(&A);
    ck_assert(spin(both_connected, NULL, 10000));
    wait_for(A.db, "players", "boss", "{\"hp\":99}");
    crdtdb_buf v = CRDTDB_BUF_INIT;
    tu_mp(&v, "{\"x\":1}");
    ck_assert_int_eq(crdtdb_db_add(A.db, NULL, "players", "mine", v.data, v.len), CRDTDB_EROFS);
    ck_assert_str_eq(crdtdb_db_errmsg(A.db), "Read only access");
    crdtdb_buf_free(&v);
    /* a write on the server's env through another handle still reaches A */
    put(&S, "update", "players", "boss", "{\"hp\":98}");
    wait_for(A.db, "players", "boss", "{\"hp\":98}");
    ck_assert(crdtdb_client_connected(ca));
    /* the copy stays read-only offline, until a server grants two-way */
    crdtdb_client_close(ca);
    ca = NULL;
    tu_mp(&v, "{\"x\":1}");
    ck_assert_int_eq(crdtdb_db_add(A.db, NULL, "players", "mine", v.data, v.len), CRDTDB_EROFS);
    crdtdb_buf_free(&v);
    crdtdb_server_close(srv);
    srv = NULL;
    start_server(CRDTDB_SYNC_TWO_WAY);
    ca = client(&A);
    ck_assert(spin(both_connected, NULL, 10000));
    put(&A, "add", "players", "mine", "{\"x\":1}");
}
END_TEST

START_TEST(garbage_closes_only_that_connection)
{
    start_server(CRDTDB_SYNC_TWO_WAY);
    cb = client(&B);
    ck_assert(spin(both_connected, NULL, 10000));
    uint64_t before;
    ck_assert_int_eq(crdtdb_db_seq(S.db, NULL, &before), 0);
    tu_raw r;
    tu_raw_open(&r, crdtdb_server_port(srv), "/v1/db/game", NULL);
    ck_assert(spin(tu_raw_answered, &r, 10000));
    ck_assert_msg(strstr(r.in, " 101 ") != NULL, "no upgrade: %s", r.in);
    /* a frame announcing 8 bytes of something that is not msgpack */
    uint8_t payload[12] = {0, 0, 0, 8, 0xc1, 0xc1, 0xc1, 0xc1, 0xc1, 0xc1, 0xc1, 0xc1};
    r.len = 0;
    tu_ws_send(&NET, &r, payload, sizeof payload);
    ck_assert_msg(spin(tu_raw_closed, &r, 10000), "the server kept the connection");
    /* it was told why: an error frame, then a close with status 1002 */
    int saw_close = 0;
    for (size_t i = 0; i + 3 < r.len; i++)
        if (r.in[i] == (char)0x88 && (uint8_t)r.in[i + 2] == 0x03 && (uint8_t)r.in[i + 3] == 0xea)
            saw_close = 1;
    ck_assert_msg(saw_close, "no close frame with status 1002");
    close(r.fd);
    uint64_t after;
    ck_assert_int_eq(crdtdb_db_seq(S.db, NULL, &after), 0);
    ck_assert_uint_eq(before, after); /* nothing stored */
    /* the other client is still served */
    ck_assert(crdtdb_client_connected(cb));
    put(&B, "add", "players", "still", "{\"ok\":true}");
    wait_for(S.db, "players", "still", "{\"ok\":true}");
}
END_TEST

/* Whether r received a binary WebSocket message whose session frame is an
 * ERROR [6, code, ...] (code a negative fixint); its message text, if
 * msg is not NULL, must appear in r too. */
static int raw_saw_error(const tu_raw *r, int code, const char *msg)
{
    const uint8_t want[3] = {0x93, 0x06, (uint8_t)(int8_t)code};
    const uint8_t *b = (const uint8_t *)r->in;
    int found = 0;
    for (size_t i = 0; i + 3 <= r->len && !found; i++)
        found = memcmp(b + i, want, 3) == 0;
    return found && (!msg || tu_raw_saw(r, msg));
}

/* Sends p in binary WebSocket messages of at most `chunk` bytes, spinning
 * the server and reading while the socket is full, until all is sent or
 * the server stops taking it (its close): a peer that sends on regardless.
 * 1 if it was all sent. */
static int raw_send_until_refused(tu_raw *r, const uint8_t *p, size_t n, size_t chunk)
{
    uint8_t *f = malloc(n + 14 * (n / chunk + 1));
    ck_assert_ptr_nonnull(f);
    size_t h = 0;
    for (size_t at = 0; at < n; at += chunk) {
        size_t m = n - at < chunk ? n - at : chunk;
        f[h++] = 0x82;
        f[h++] = 0x80 | 127;
        for (int i = 7; i >= 0; i--)
            f[h++] = (uint8_t)((uint64_t)m >> (8 * i));
        memset(f + h, 0, 4); /* a zero mask: the payload as it is */
        h += 4;
        memcpy(f + h, p + at, m);
        h += m;
    }
    size_t off = 0, len = h;
    uint64_t deadline = tu_mono_ms() + 20000;
    while (off < len && tu_mono_ms() < deadline) {
        ssize_t k = send(r->fd, f + off, len - off, MSG_NOSIGNAL);
        if (k > 0)
            off += (size_t)k;
        else if (errno != EAGAIN && errno != EWOULDBLOCK)
            break; /* the server closed */
        if (off < len) {
            spin(NULL, NULL, 2);
            tu_raw_read(r);
        }
    }
    free(f);
    return off == len;
}

/* A raw WebSocket to srv's database "game", upgraded, that sent db's hello. */
static void raw_session(tu_raw *r, crdtdb_db *db)
{
    tu_raw_open(r, crdtdb_server_port(srv), "/v1/db/game", NULL);
    ck_assert(spin(tu_raw_answered, r, 10000));
    ck_assert_msg(strstr(r->in, " 101 ") != NULL, "no upgrade: %s", r->in);
    crdtdb_buf hello = CRDTDB_BUF_INIT;
    tu_ws_hello(db, &hello);
    tu_raw_send(&NET, r, hello.data, hello.len); /* framed already */
    crdtdb_buf_free(&hello);
}

/* A message over the limit (max_message) is answered with the error
 * saying so, then a close 1009 whose reason says it too, even while the
 * peer is still sending the rest of it: the peer learns why. */
START_TEST(message_over_the_limit_is_told)
{
    start_server(CRDTDB_SYNC_TWO_WAY);
    for (int whole = 0; whole < 2; whole++) {
        tu_raw r;
        raw_session(&r, A.db);
        /* a session frame announcing 64 KiB more than the limit
         * (max_delta_size + 4096) */
        size_t n = S.opts.max_delta_size + 4096 + ((size_t)1 << 20);
        uint8_t *big = calloc(1, 4 + n);
        ck_assert_ptr_nonnull(big);
        big[0] = (uint8_t)(n >> 24), big[1] = (uint8_t)(n >> 16);
        big[2] = (uint8_t)(n >> 8), big[3] = (uint8_t)n;
        r.len = 0;
        /* only its length, or all of it in 64 KiB WebSocket messages */
        /* the server drains the message before it closes: no reset, which
         * could destroy the error unread */
        ck_assert_msg(raw_send_until_refused(&r, big, whole ? 4 + n : 4, 65536),
                      "the server closed mid-message (%d)", whole);
        free(big);
        ck_assert_msg(spin(tu_raw_closed, &r, 10000), "the server kept the connection");
        char why[128];
        snprintf(why, sizeof why, "message of %zu bytes is over the limit of %zu", n,
                 (size_t)S.opts.max_delta_size + 4096);
        ck_assert_msg(raw_saw_error(&r, CRDTDB_ETOOBIG, why), "no error frame (%d)", whole);
        ck_assert_msg(tu_raw_close_saw(&r, 1009), "no close 1009 (%d)", whole);
        /* the close's reason: 0x88, its length, 1009, the message */
        char close_frame[160];
        int cn = snprintf(close_frame + 4, sizeof close_frame - 4, "%s", why);
        close_frame[0] = (char)0x88, close_frame[1] = (char)(2 + cn);
        close_frame[2] = (char)(1009 >> 8), close_frame[3] = (char)(1009 & 0xff);
        ck_assert_msg(memmem(r.in, r.len, close_frame, 4 + (size_t)cn) != NULL,
                      "no reason in the close (%d)", whole);
        close(r.fd);
    }
}
END_TEST

/* What a client's program heard: the last ERROR event. */
typedef struct heard {
    int errors, last_error, remote;
    char msg[256];
} heard;

static void on_heard(void *ctx, const crdtdb_session_event *ev)
{
    heard *h = ctx;
    if (ev->type != CRDTDB_SESSION_ERROR)
        return;
    h->errors++;
    h->last_error = ev->error;
    h->remote = ev->remote;
    snprintf(h->msg, sizeof h->msg, "%s", ev->message ? ev->message : "");
}

/* A server message over a client's own limit: the client tells the server
 * why (ERROR, then close 1009) and its program hears it. */
START_TEST(client_tells_a_message_over_its_limit)
{
    replica_close(&S); /* a server that takes and sends larger deltas */
    S.opts.max_value_size = 64u << 10;
    S.opts.max_delta_size = 256u << 10;
    replica_open(&S, "game");
    char *json = malloc(40100);
    ck_assert_ptr_nonnull(json);
    memcpy(json, "{\"pad\":\"", 8);
    memset(json + 8, 'x', 40000);
    memcpy(json + 40008, "\"}", 3);
    put(&S, "add", "moves", "big", json);
    free(json);
    crdtdb_buf log = CRDTDB_BUF_INIT;
    open_server(CRDTDB_SYNC_TWO_WAY, &log);
    snprintf(url, sizeof url, "ws://127.0.0.1:%d", crdtdb_server_port(srv));
    heard h = {0};
    crdtdb_client_options o;
    crdtdb_client_options_init(&o);
    o.url = url;
    o.backoff_min_ms = 1000; /* one connection in the test's time */
    o.backoff_max_ms = 1000;
    o.on_event = on_heard;
    o.ctx = &h;
    ck_assert_int_eq(crdtdb_client_open(A.db, &o, &ca), 0);
    tu_line why = {&log, "peer error CRDTDB_ETOOBIG: peer: message of "};
    ck_assert_msg(spin(tu_logged, &why, 10000), "the server never heard why: %.*s", (int)log.len,
                  (const char *)log.data);
    ck_assert_int_eq(h.last_error, CRDTDB_ETOOBIG);
    ck_assert_int_eq(h.remote, 0);
    ck_assert_msg(strstr(h.msg, "is over the limit of 12544") != NULL, "%s", h.msg);
    crdtdb_client_close(ca);
    ca = NULL;
    crdtdb_server_close(srv);
    srv = NULL;
    crdtdb_buf_free(&log);
}
END_TEST

/* A peer's NOTICEs (10 bytes each) log a burst of 10 lines, then one a
 * second, and say how many they left out: not a line each. */
START_TEST(peer_notices_do_not_flood_the_log)
{
    crdtdb_buf log = CRDTDB_BUF_INIT;
    open_server(CRDTDB_SYNC_TWO_WAY, &log);
    tu_raw r;
    raw_session(&r, A.db);
    /* [9, CRDTDB_ENOCOLL (-5), "x"], 200 times in one message */
    static const uint8_t notice[9] = {0, 0, 0, 5, 0x93, 0x09, 0xfb, 0xa1, 'x'};
    uint8_t many[200 * sizeof notice];
    for (size_t i = 0; i < 200; i++)
        memcpy(many + i * sizeof notice, notice, sizeof notice);
    tu_ws_send(&NET, &r, many, sizeof many);
    tu_line last = {&log, "peer error CRDTDB_ENOCOLL"};
    ck_assert_msg(spin(tu_logged, &last, 10000), "%.*s", (int)log.len, (const char *)log.data);
    spin(NULL, NULL, 300);
    ck_assert_int_eq(tu_log_count(&log, "peer error CRDTDB_ENOCOLL"), 10);
    spin(NULL, NULL, 1100); /* a second on: one more line, and the count */
    tu_ws_send(&NET, &r, notice, sizeof notice);
    tu_line more = {&log, "190 more peer errors not logged"};
    ck_assert_msg(spin(tu_logged, &more, 10000), "%.*s", (int)log.len, (const char *)log.data);
    ck_assert_int_eq(tu_log_count(&log, "peer error CRDTDB_ENOCOLL"), 11);
    close(r.fd);
    crdtdb_server_close(srv);
    srv = NULL;
    crdtdb_buf_free(&log);
}
END_TEST

/* A full server (max_connections) refuses with 503, even when asked in-band
 * (?inband=1) too: a cap never holds a socket open to explain itself, and a
 * browser retries a 1006 with backoff, which is right for a full server. */
START_TEST(full_server_refuses_over_http_even_in_band)
{
    crdtdb_server_options o;
    crdtdb_server_options_init(&o);
    o.port = 0;
    o.collections = COLLS;
    o.ncoll = 2;
    o.max_connections = 1;
    o.log = log_line;
    ck_assert_int_eq(crdtdb_server_open(S.env, &o, &srv), 0);
    snprintf(url, sizeof url, "ws://127.0.0.1:%d", crdtdb_server_port(srv));
    cb = client(&B);
    ck_assert(spin(both_connected, NULL, 10000));
    for (int inband = 0; inband < 2; inband++) {
        tu_raw r;
        tu_raw_open(&r, crdtdb_server_port(srv), inband ? "/v1/db/game?inband=1" : "/v1/db/game",
                    NULL);
        ck_assert(spin(tu_raw_answered, &r, 10000));
        if (!inband) {
            ck_assert_msg(strstr(r.in, " 503 ") != NULL, "no 503: %.80s", r.in);
        } else {
            /* a cap never upgrades: an in-band refusal would hold the
             * socket the cap is there to bound */
            ck_assert_msg(strstr(r.in, " 503 ") != NULL, "no 503 with inband=1: %.80s", r.in);
        }
        close(r.fd);
    }
    ck_assert(crdtdb_client_connected(cb)); /* the one admitted is served */
}
END_TEST

static int count_db(void *ctx, const char *id)
{
    (void)id;
    ++*(int *)ctx;
    return 0;
}

START_TEST(bad_path_is_refused)
{
    start_server(CRDTDB_SYNC_TWO_WAY);
    tu_raw r;
    tu_raw_open(&r, crdtdb_server_port(srv), "/elsewhere", NULL);
    spin(tu_raw_answered, &r, 10000);
    ck_assert_msg(strstr(r.in, " 101 ") == NULL, "upgraded a bad path: %s", r.in);
    close(r.fd);
    /* an id one byte over the limit: refused before anything is copied */
    char path[300] = "/v1/db/";
    memset(path + 7, 'x', CRDTDB_ID_MAX + 1);
    path[7 + CRDTDB_ID_MAX + 1] = 0;
    tu_raw_open(&r, crdtdb_server_port(srv), path, NULL);
    spin(tu_raw_answered, &r, 10000);
    ck_assert_msg(strstr(r.in, " 101 ") == NULL, "upgraded a too long id: %s", r.in);
    close(r.fd);
    int n = 0;
    ck_assert_int_eq(crdtdb_db_list(S.env, count_db, &n), 0);
    ck_assert_int_eq(n, 1); /* only "game" */
}
END_TEST

START_TEST(url_encoded_database_id)
{
    replica_free(&A);
    replica_init(&A, &now, "team a/b%41");
    start_server(CRDTDB_SYNC_TWO_WAY);
    ca = client(&A);
    ck_assert(spin(both_connected, NULL, 10000));
    put(&A, "add", "players", "x", "{\"n\":1}");
    crdtdb_db *db = NULL;
    uint64_t deadline = tu_mono_ms() + 10000;
    while (tu_mono_ms() < deadline) {
        spin(NULL, NULL, 5);
        if (!db && crdtdb_db_open(S.env, "team a/b%41", &db) != 0)
            db = NULL;
        if (db && tu_holds(&(tu_want){db, "players", "x", "{\"n\":1}"}))
            break;
    }
    ck_assert_ptr_nonnull(db);
    ck_assert(tu_holds(&(tu_want){db, "players", "x", "{\"n\":1}"}));
    crdtdb_db_close(db);
}
END_TEST

START_TEST(options_are_checked)
{
    crdtdb_server_options o;
    crdtdb_server_options_init(&o);
    ck_assert_str_eq(o.host, "127.0.0.1");
    ck_assert_uint_eq(o.max_connections, 1024);
    o.tls_cert = "cert.pem"; /* without a key */
    crdtdb_server *s = NULL;
    ck_assert_int_eq(crdtdb_server_open(S.env, &o, &s), CRDTDB_EINVAL);
    ck_assert_ptr_null(s);
    crdtdb_client_options co;
    crdtdb_client_options_init(&co);
    ck_assert_uint_eq(co.backoff_min_ms, 100);
    ck_assert_uint_eq(co.backoff_max_ms, 30000);
    crdtdb_client *c = NULL;
    ck_assert_int_eq(crdtdb_client_open(A.db, &co, &c), CRDTDB_EINVAL); /* no url */
    co.url = "http://127.0.0.1:1";
    ck_assert_int_eq(crdtdb_client_open(A.db, &co, &c), CRDTDB_EINVAL);
    ck_assert_ptr_null(c);
    crdtdb_server_close(NULL);
    crdtdb_client_close(NULL);
}
END_TEST

/* ------------------------------------------------ server killed mid-stream */

static volatile sig_atomic_t child_stop;

static void on_term(int sig)
{
    (void)sig;
    child_stop = 1;
}

/* What a server child reports once listening. */
typedef struct child_hello {
    int port; /* <= 0: it could not listen */
    uint8_t id[CRDTDB_REPLICA_ID_BYTES];
} child_hello;

/* The server process: serves env dir on port until SIGTERM (then closes
 * cleanly, exit 0) or SIGKILL.  Reports through fd.  Never returns, and
 * uses no Check assertions (this is not the test's process). */
static void server_child(const char *dir, int port, int fd)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive a failed test */
    for (int i = 3; i < 1024; i++) /* the parent's sockets and LMDB files */
        if (i != fd)
            close(i);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_term;
    sigaction(SIGTERM, &sa, NULL);
    child_hello h;
    memset(&h, 0, sizeof h);
    crdtdb_env *env = NULL;
    crdtdb_server *s = NULL;
    if (crdtdb_env_open(dir, &S.opts, &env) == 0) {
        crdtdb_server_options o;
        crdtdb_server_options_init(&o);
        o.port = port;
        o.collections = COLLS;
        o.ncoll = 2;
        /* the old listener's port may still be held for a moment */
        uint64_t deadline = tu_mono_ms() + 5000;
        while (crdtdb_server_open(env, &o, &s) == CRDTDB_EIO && tu_mono_ms() < deadline)
            s = NULL;
        if (s) {
            h.port = crdtdb_server_port(s);
            crdtdb_env_replica_id(env, h.id);
        }
    }
    if (write(fd, &h, sizeof h) != (ssize_t)sizeof h || !s)
        _exit(2);
    close(fd);
    uint64_t lifetime = tu_mono_ms() + 60000;
    while (!child_stop && tu_mono_ms() < lifetime)
        if (crdtdb_server_run(s, 10))
            _exit(3);
    crdtdb_server_close(s);
    crdtdb_env_close(env);
    _exit(0);
}

/* Starts a server child on S's env dir; returns its pid, fills *h. */
static pid_t spawn_server(int port, child_hello *h)
{
    int p[2];
    ck_assert_int_eq(pipe(p), 0);
    fflush(NULL);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0)
        server_child(S.dir, port, p[1]);
    close(p[1]);
    ssize_t n = read(p[0], h, sizeof *h);
    close(p[0]);
    ck_assert_int_eq(n, (ssize_t)sizeof *h);
    ck_assert_int_gt(h->port, 0);
    return pid;
}

static uint64_t acked_by(crdtdb_db *db, const uint8_t *peer)
{
    crdtdb_peer p;
    int found;
    ck_assert_int_eq(crdtdb_db_peer_get(db, peer, &p, &found), 0);
    return p.acked;
}

#define KILL_RECORDS 400

static void big_value(crdtdb_buf *v, int i)
{
    char json[1500];
    int n = snprintf(json, sizeof json, "{\"i\":%d,\"s\":\"", i);
    memset(json + n, 'a' + i % 26, 1400);
    memcpy(json + n + 1400, "\"}", 3);
    tu_mp(v, json);
}

START_TEST(server_killed_mid_stream)
{
    /* ~600 KB on A, one record per commit: record i is change seq[i] */
    static uint64_t seq[KILL_RECORDS];
    crdtdb_buf v = CRDTDB_BUF_INIT;
    for (int i = 0; i < KILL_RECORDS; i++) {
        char id[16];
        snprintf(id, sizeof id, "r%03d", i);
        big_value(&v, i);
        ck_assert_int_eq(crdtdb_db_add(A.db, NULL, "moves", id, v.data, v.len), 0);
        ck_assert_int_eq(crdtdb_db_seq(A.db, NULL, &seq[i]), 0);
    }
    uint64_t last = seq[KILL_RECORDS - 1];

    replica_close(&S); /* the server env belongs to the child now */
    child_hello h;
    kid = spawn_server(0, &h);
    int port = h.port;
    snprintf(url, sizeof url, "ws://127.0.0.1:%d", port);
    {
        crdtdb_client_options o;
        crdtdb_client_options_init(&o);
        o.url = url;
        o.backoff_min_ms = 10;
        o.backoff_max_ms = 100;
        o.on_event = count_lost;
        lost_events = 0;
        ck_assert_int_eq(crdtdb_client_open(A.db, &o, &ca), 0);
    }

    /* stream until the server has acknowledged part, not all */
    uint64_t acked = 0, deadline = tu_mono_ms() + 20000;
    while (tu_mono_ms() < deadline && (acked = acked_by(A.db, h.id)) == 0)
        ck_assert_int_eq(crdtdb_client_run(ca, 1), 0);
    ck_assert_msg(acked > 0, "the server acknowledged nothing");
    ck_assert_msg(acked < last, "the stream ended before the kill (acked %llu of %llu)",
                  (unsigned long long)acked, (unsigned long long)last);
    ck_assert_int_eq(kill(kid, SIGKILL), 0);
    int st;
    ck_assert_int_eq(waitpid(kid, &st, 0), kid);
    kid = 0;
    ck_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
    /* the program hears of the lost connection at once, once */
    ck_assert_int_eq(lost_events, 0);
    for (uint64_t until = tu_mono_ms() + 5000; tu_mono_ms() < until && !lost_events;)
        ck_assert_int_eq(crdtdb_client_run(ca, 5), 0);
    ck_assert_int_eq(lost_events, 1);

    /* every change acknowledged before the kill is on the server's disk */
    replica ro = S;
    ro.opts.flags |= CRDTDB_ENV_RDONLY;
    ck_assert_int_eq(crdtdb_env_open(ro.dir, &ro.opts, &ro.env), 0);
    ck_assert_int_eq(crdtdb_db_open(ro.env, "game", &ro.db), 0);
    int present = 0;
    for (int i = 0; i < KILL_RECORDS && seq[i] <= acked; i++) {
        char id[16];
        snprintf(id, sizeof id, "r%03d", i);
        char *g = tu_get(ro.db, "moves", id);
        char *w = tu_get(A.db, "moves", id);
        ck_assert_msg(g != NULL, "acked record %s (seq %llu <= %llu) lost", id,
                      (unsigned long long)seq[i], (unsigned long long)acked);
        ck_assert_str_eq(g, w);
        free(g);
        free(w);
        present++;
    }
    ck_assert_int_gt(present, 0);
    replica_close(&ro);
    fprintf(stderr, "kill -9: %d of %d records acked before the kill\n", present, KILL_RECORDS);

    /* a new server on the same dir and port; the client comes back alone */
    kid = spawn_server(port, &h);
    ck_assert_int_eq(h.port, port);
    deadline = tu_mono_ms() + 20000;
    while (tu_mono_ms() < deadline && acked_by(A.db, h.id) < last)
        ck_assert_int_eq(crdtdb_client_run(ca, 5), 0);
    ck_assert_msg(acked_by(A.db, h.id) == last, "the client did not finish after the restart");
    crdtdb_client_close(ca);
    ca = NULL;

    /* stop the server cleanly and compare */
    ck_assert_int_eq(kill(kid, SIGTERM), 0);
    ck_assert_int_eq(waitpid(kid, &st, 0), kid);
    kid = 0;
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "server child status %d", st);
    replica_open(&S, "game");
    char *a = dump(&A), *sv = dump(&S);
    ck_assert_str_eq(a, sv);
    free(a);
    free(sv);
    crdtdb_buf_free(&v);
}
END_TEST

/* ------------------------------------- random writes, random disconnects */

static uint64_t rng_state;

static unsigned rnd(unsigned n)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (unsigned)(rng_state % n);
}

static int four_same(void *arg)
{
    (void)arg;
    if (!both_connected(NULL))
        return 0;
    char *s = dump(&S), *a = dump(&A), *b = dump(&B), *c = dump(&C);
    int ok = strcmp(s, a) == 0 && strcmp(s, b) == 0 && strcmp(s, c) == 0;
    free(s);
    free(a);
    free(b);
    free(c);
    return ok;
}

/* One random add / update / remove on r. */
static void random_write(replica *r, const char *who)
{
    const char *coll = COLLS[rnd(2)];
    char id[8], json[160];
    snprintf(id, sizeof id, "k%u", rnd(10));
    char *cur = tu_get(r->db, coll, id);
    unsigned op = rnd(cur ? 3 : 1); /* 0 add, 1 update, 2 remove */
    free(cur);
    if (op == 0)
        snprintf(json, sizeof json, "{\"by\":\"%s\",\"n\":%u,\"pos\":{\"x\":%u,\"y\":%u}}", who,
                 rnd(100), rnd(10), rnd(10));
    else if (op == 1)
        snprintf(json, sizeof json, "{\"%s\":%u,\"pos\":{\"%s\":%u}}", rnd(2) ? "n" : who,
                 rnd(100), rnd(2) ? "x" : "z", rnd(10));
    put(r, op == 0 ? "add" : op == 1 ? "update" : "remove", coll, id, op == 2 ? NULL : json);
}

START_TEST(random_writes_and_disconnects)
{
    unsigned seed = tu_seed();
    rng_state = 0x9E3779B97F4A7C15ull ^ seed;
    replica_init(&C, &now, "game");
    have_c = 1;
    start_server(CRDTDB_SYNC_TWO_WAY);
    replica *rs[4] = {&S, &A, &B, &C};
    const char *names[4] = {"S", "A", "B", "C"};
    crdtdb_client **cs[4] = {NULL, &ca, &cb, &cc};
    for (int i = 1; i < 4; i++)
        *cs[i] = client(rs[i]);
    int writes = 0, toggles = 0;
    uint64_t end = tu_mono_ms() + 2500;
    while (tu_mono_ms() < end) {
        now += 1 + rnd(20);
        unsigned who = rnd(4), what = rnd(12);
        if (what == 0 && who > 0) { /* drop or restore a client */
            if (*cs[who]) {
                crdtdb_client_close(*cs[who]);
                *cs[who] = NULL;
            } else {
                *cs[who] = client(rs[who]);
            }
            toggles++;
        } else if (what < 8) {
            random_write(rs[who], names[who]);
            writes++;
        }
        spin(NULL, NULL, (int)rnd(4));
    }
    for (int i = 1; i < 4; i++)
        if (!*cs[i])
            *cs[i] = client(rs[i]);
    fprintf(stderr, "random: %d writes, %d disconnects/reconnects\n", writes, toggles);
    ck_assert_msg(spin(four_same, NULL, 15000), "replicas did not converge (seed %u)", seed);
    /* and they stay equal once quiet */
    spin(NULL, NULL, 50);
    ck_assert(four_same(NULL));
}
END_TEST

/* --------------------------------------------------- a connection flood */

static int all_answered(void *arg)
{
    tu_raw *r = arg;
    for (int i = 0; i < 20; i++)
        if (!tu_raw_answered(&r[i]))
            return 0;
    return 1;
}

START_TEST(connection_flood_is_bounded)
{
    crdtdb_server_options o;
    crdtdb_server_options_init(&o);
    o.collections = COLLS;
    o.ncoll = 2;
    o.max_connections = 8;
    ck_assert_int_eq(crdtdb_server_open(S.env, &o, &srv), 0);
    int port = crdtdb_server_port(srv);
    snprintf(url, sizeof url, "ws://127.0.0.1:%d", port);
    ca = client(&A);
    ck_assert(spin(both_connected, NULL, 10000));

    /* idle TCP connections that never speak, and 20 upgrades */
    int idle[40];
    for (int i = 0; i < 40; i++) {
        idle[i] = socket(AF_INET, SOCK_STREAM, 0);
        ck_assert_int_ge(idle[i], 0);
        struct sockaddr_in sa;
        memset(&sa, 0, sizeof sa);
        sa.sin_family = AF_INET;
        sa.sin_port = htons((uint16_t)port);
        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        ck_assert_int_eq(connect(idle[i], (struct sockaddr *)&sa, sizeof sa), 0);
        ck_assert_int_eq(crdtdb_server_run(srv, 0), 0);
    }
    static tu_raw up[20]; /* 1.3 MB: not on the stack */
    for (int i = 0; i < 20; i++) {
        tu_raw_open(&up[i], port, "/v1/db/game", NULL);
        ck_assert_int_eq(crdtdb_server_run(srv, 0), 0);
    }
    ck_assert_msg(spin(all_answered, up, 10000), "some upgrades were never answered");
    int upgraded = 0;
    for (int i = 0; i < 20; i++)
        upgraded += strstr(up[i].in, " 101 ") != NULL && !up[i].eof;
    ck_assert_int_eq(upgraded, 7); /* 8 with the real client */

    /* the real client is still served */
    ck_assert(crdtdb_client_connected(ca));
    put(&A, "add", "players", "through", "{\"flood\":1}");
    wait_for(S.db, "players", "through", "{\"flood\":1}");
    put(&S, "update", "players", "through", "{\"flood\":2}");
    wait_for(A.db, "players", "through", "{\"flood\":2}");

    /* a ninth client waits its turn: it gets in once the flood goes */
    cb = client(&B);
    spin(NULL, NULL, 100);
    ck_assert(!crdtdb_client_connected(cb));
    for (int i = 0; i < 20; i++)
        close(up[i].fd);
    for (int i = 0; i < 40; i++)
        close(idle[i]);
    ck_assert_msg(spin(both_connected, NULL, 10000), "freed slots were not reused");
    wait_for(B.db, "players", "through", "{\"flood\":2}");
}
END_TEST

/* ------------------------------------------------------------------ TLS */

START_TEST(tls_sync)
{
    if (access("/usr/bin/openssl", X_OK) != 0) {
        fprintf(stderr, "tls_sync: skipped, no /usr/bin/openssl\n");
        return;
    }
    char *dir = tu_tmpdir();
    char cmd[1536], cert[512], key[512];
    snprintf(cert, sizeof cert, "%s/c.pem", dir);
    snprintf(key, sizeof key, "%s/k.pem", dir);
    snprintf(cmd, sizeof cmd,
             "/usr/bin/openssl req -x509 -newkey rsa:2048 -nodes -subj /CN=localhost "
             "-addext subjectAltName=IP:127.0.0.1 -days 1 -keyout '%s' -out '%s' "
             ">/dev/null 2>&1",
             key, cert);
    ck_assert_int_eq(system(cmd), 0);
    crdtdb_server_options o;
    crdtdb_server_options_init(&o);
    o.collections = COLLS;
    o.ncoll = 2;
    o.tls_cert = cert;
    o.tls_key = key;
    o.log = log_line;
    ck_assert_int_eq(crdtdb_server_open(S.env, &o, &srv), 0);
    snprintf(url, sizeof url, "wss://127.0.0.1:%d", crdtdb_server_port(srv));

    crdtdb_client_options co;
    crdtdb_client_options_init(&co);
    ck_assert_ptr_null(co.tls_ca);
    co.url = url;
    co.backoff_min_ms = 10;
    co.backoff_max_ms = 100;
    co.tls_ca = cert;
    ck_assert_int_eq(crdtdb_client_open(A.db, &co, &ca), 0);
    /* without the CA the self-signed server is not trusted */
    crdtdb_client *plain_b = NULL;
    co.tls_ca = NULL;
    ck_assert_int_eq(crdtdb_client_open(B.db, &co, &plain_b), 0);
    uint64_t deadline = tu_mono_ms() + 10000;
    while (!crdtdb_client_connected(ca) && tu_mono_ms() < deadline) {
        ck_assert_int_eq(crdtdb_server_run(srv, 2), 0);
        ck_assert_int_eq(crdtdb_client_run(ca, 2), 0);
        if (plain_b)
            ck_assert_int_eq(crdtdb_client_run(plain_b, 2), 0);
    }
    ck_assert_msg(crdtdb_client_connected(ca), "no wss:// connection with tls_ca");
    put(&A, "add", "players", "secure", "{\"tls\":true}");
    wait_for(S.db, "players", "secure", "{\"tls\":true}");
    put(&S, "update", "players", "secure", "{\"back\":1}");
    wait_for(A.db, "players", "secure", "{\"back\":1,\"tls\":true}");
    if (plain_b) {
        for (int i = 0; i < 20; i++) { /* it kept trying meanwhile, in vain */
            ck_assert_int_eq(crdtdb_server_run(srv, 2), 0);
            ck_assert_int_eq(crdtdb_client_run(plain_b, 2), 0);
        }
        ck_assert(!crdtdb_client_connected(plain_b));
        ck_assert_ptr_null(tu_get(B.db, "players", "secure"));
        crdtdb_client_close(plain_b);
    }
    /* a plain ws:// client is not served by a wss:// server */
    snprintf(url, sizeof url, "ws://127.0.0.1:%d", crdtdb_server_port(srv));
    cb = client(&B);
    spin(NULL, NULL, 100);
    ck_assert(!crdtdb_client_connected(cb));
    crdtdb_client_close(cb);
    cb = NULL;
    crdtdb_client_close(ca);
    ca = NULL;
    crdtdb_server_close(srv);
    srv = NULL;
    tu_rmrf(dir);
    free(dir);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("ws");
    TCase *tc = tcase_create("ws");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, two_clients_one_database);
    tcase_add_test(tc, server_records_every_clients_acks);
    tcase_add_test(tc, bulk_data_in_many_messages);
    tcase_add_test(tc, databases_are_isolated);
    tcase_add_test(tc, offline_writes_then_reconnect);
    tcase_add_test(tc, server_collects_and_resyncs_a_late_client);
    tcase_add_test(tc, server_to_client_mode);
    tcase_add_test(tc, garbage_closes_only_that_connection);
    tcase_add_test(tc, message_over_the_limit_is_told);
    tcase_add_test(tc, client_tells_a_message_over_its_limit);
    tcase_add_test(tc, peer_notices_do_not_flood_the_log);
    tcase_add_test(tc, full_server_refuses_over_http_even_in_band);
    tcase_add_test(tc, bad_path_is_refused);
    tcase_add_test(tc, url_encoded_database_id);
    tcase_add_test(tc, options_are_checked);
    tcase_add_test(tc, server_killed_mid_stream);
    tcase_add_test(tc, random_writes_and_disconnects);
    tcase_add_test(tc, connection_flood_is_bounded);
    tcase_add_test(tc, tls_sync);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    lws_set_log_level(LLL_ERR, NULL);
    return tu_run(suite());
}
