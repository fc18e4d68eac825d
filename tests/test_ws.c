/* The WebSocket binding: a real server on 127.0.0.1 (ephemeral port) and
 * real clients, all driven from this thread through their run functions. */
#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <libwebsockets.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "tests/replica.h"
#include "tests/testutil.h"

static uint64_t now = 1700000000000ull;
static replica S, A, B; /* server env, two client replicas */
static crdtdb_server *srv;
static crdtdb_client *ca, *cb;
static char url[64];
static int log_lines;

static void log_line(void *ctx, const char *line)
{
    (void)ctx;
    log_lines++;
    fprintf(stderr, "server: %s\n", line);
}

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void start_server(crdtdb_sync_mode mode)
{
    crdtdb_server_options o;
    crdtdb_server_options_init(&o);
    o.port = 0;
    o.collections = COLLS;
    o.ncoll = 2;
    o.mode = mode;
    o.log = log_line;
    ck_assert_int_eq(crdtdb_server_open(S.env, &o, &srv), 0);
    ck_assert_int_gt(crdtdb_server_port(srv), 0);
    snprintf(url, sizeof url, "ws://127.0.0.1:%d", crdtdb_server_port(srv));
}

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

static void setup(void)
{
    replica_init(&S, &now, "game");
    replica_init(&A, &now, "game");
    replica_init(&B, &now, "game");
    srv = NULL;
    ca = cb = NULL;
}

static void teardown(void)
{
    crdtdb_client_close(ca);
    crdtdb_client_close(cb);
    crdtdb_server_close(srv);
    replica_free(&A);
    replica_free(&B);
    replica_free(&S);
}

typedef int (*cond_fn)(void *arg);

/* Runs server and clients until cond holds or ms pass; 1 if it held. */
static int spin(cond_fn cond, void *arg, int ms)
{
    uint64_t deadline = mono_ms() + (uint64_t)ms;
    while (mono_ms() < deadline) {
        if (srv)
            ck_assert_int_eq(crdtdb_server_run(srv, 2), 0);
        if (ca)
            ck_assert_int_eq(crdtdb_client_run(ca, 2), 0);
        if (cb)
            ck_assert_int_eq(crdtdb_client_run(cb, 2), 0);
        if (cond && cond(arg))
            return 1;
    }
    return 0;
}

static int both_connected(void *arg)
{
    (void)arg;
    return (!ca || crdtdb_client_connected(ca)) && (!cb || crdtdb_client_connected(cb));
}

typedef struct want {
    crdtdb_db *db;
    const char *coll, *id, *json;
} want;

static int has(void *arg)
{
    want *w = arg;
    char *g = tu_get(w->db, w->coll, w->id);
    int ok = g && (!w->json || strcmp(g, w->json) == 0);
    free(g);
    return ok;
}

static void wait_for(crdtdb_db *db, const char *coll, const char *id, const char *json)
{
    want w = {db, coll, id, json};
    ck_assert_msg(spin(has, &w, 10000), "%s/%s never became %s", coll, id, json ? json : "set");
}

START_TEST(two_clients_one_database)
{
    start_server(CRDTDB_SYNC_TWO_WAY);
    ca = client(&A);
    cb = client(&B);
    ck_assert(spin(both_connected, NULL, 10000));
    put(&A, "add", "players", "ann", "{\"hp\":10}");
    wait_for(B.db, "players", "ann", "{\"hp\":10}");
    wait_for(S.db, "players", "ann", "{\"hp\":10}"); /* the server's env has it */
    put(&B, "update", "players", "ann", "{\"hp\":9,\"pos\":{\"x\":1}}");
    wait_for(A.db, "players", "ann", "{\"hp\":9,\"pos\":{\"x\":1}}");
    put(&B, "add", "moves", "m1", "{\"to\":\"e4\"}");
    put(&A, "remove", "players", "ann", NULL);
    wait_for(A.db, "moves", "m1", NULL);
    want gone = {B.db, "players", "ann", NULL};
    uint64_t deadline = mono_ms() + 10000;
    while (has(&gone) && mono_ms() < deadline)
        spin(NULL, NULL, 5);
    ck_assert(!has(&gone));
    ck_assert_int_gt(log_lines, 0);
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
    ck_assert_msg(spin(b_has_all, NULL, 20000), "bulk data did not arrive");
}
END_TEST

START_TEST(databases_are_isolated)
{
    replica_free(&B);
    replica_init(&B, &now, "other");
    start_server(CRDTDB_SYNC_TWO_WAY);
    ca = client(&A);
    cb = client(&B);
    ck_assert(spin(both_connected, NULL, 10000));
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
    start_server(CRDTDB_SYNC_TWO_WAY);
    ca = client(&A);
    cb = client(&B);
    ck_assert(spin(both_connected, NULL, 10000));
    put(&A, "add", "players", "ann", "{\"hp\":10,\"pos\":{\"x\":1,\"y\":1}}");
    wait_for(B.db, "players", "ann", NULL);
    crdtdb_client_close(ca);
    ca = NULL;
    /* offline on A, online on B: concurrent changes to different fields */
    now += 1000;
    put(&A, "update", "players", "ann", "{\"pos\":{\"x\":5}}");
    put(&A, "add", "moves", "a1", "{\"by\":\"A\"}");
    put(&B, "update", "players", "ann", "{\"pos\":{\"y\":7}}");
    put(&B, "add", "moves", "b1", "{\"by\":\"B\"}");
    wait_for(S.db, "moves", "b1", NULL);
    spin(NULL, NULL, 50);
    ck_assert_ptr_null(tu_get(B.db, "moves", "a1"));
    ca = client(&A);
    ck_assert_msg(spin(all_same, NULL, 10000), "replicas did not converge");
    char *g = tu_get(B.db, "players", "ann");
    ck_assert_str_eq(g, "{\"hp\":10,\"pos\":{\"x\":5,\"y\":7}}");
    free(g);
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
    /* closing the client lifts the read-only mark */
    crdtdb_client_close(ca);
    ca = NULL;
    put(&A, "add", "players", "mine", "{\"x\":1}");
}
END_TEST

/* A hand-made WebSocket client that sends garbage after the upgrade. */
typedef struct raw {
    int fd;
    char in[8192];
    size_t len;
    int eof;
} raw;

static void raw_read(raw *r)
{
    for (;;) {
        if (r->len == sizeof r->in)
            r->len = 0;
        ssize_t n = recv(r->fd, r->in + r->len, sizeof r->in - r->len, 0);
        if (n > 0) {
            r->len += (size_t)n;
            continue;
        }
        if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK))
            r->eof = 1;
        return;
    }
}

static int raw_upgraded(void *arg)
{
    raw *r = arg;
    raw_read(r);
    r->in[r->len < sizeof r->in ? r->len : sizeof r->in - 1] = 0;
    return r->eof || strstr(r->in, "\r\n\r\n") != NULL;
}

static int raw_closed(void *arg)
{
    raw *r = arg;
    raw_read(r);
    return r->eof;
}

static void raw_open(raw *r, int port, const char *path)
{
    memset(r, 0, sizeof *r);
    r->fd = socket(AF_INET, SOCK_STREAM, 0);
    ck_assert_int_ge(r->fd, 0);
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(connect(r->fd, (struct sockaddr *)&sa, sizeof sa), 0);
    fcntl(r->fd, F_SETFL, fcntl(r->fd, F_GETFL) | O_NONBLOCK);
    char req[512];
    int n = snprintf(req, sizeof req,
                     "GET %s HTTP/1.1\r\n"
                     "Host: 127.0.0.1\r\n"
                     "Upgrade: websocket\r\n"
                     "Connection: Upgrade\r\n"
                     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     "Sec-WebSocket-Version: 13\r\n"
                     "Sec-WebSocket-Protocol: crdtdb-sync\r\n\r\n",
                     path);
    ck_assert_int_eq(send(r->fd, req, (size_t)n, 0), (ssize_t)n);
}

START_TEST(garbage_closes_only_that_connection)
{
    start_server(CRDTDB_SYNC_TWO_WAY);
    cb = client(&B);
    ck_assert(spin(both_connected, NULL, 10000));
    uint64_t before;
    ck_assert_int_eq(crdtdb_db_seq(S.db, NULL, &before), 0);
    raw r;
    raw_open(&r, crdtdb_server_port(srv), "/v1/db/game");
    ck_assert(spin(raw_upgraded, &r, 10000));
    ck_assert_msg(strstr(r.in, " 101 ") != NULL, "no upgrade: %s", r.in);
    /* a frame announcing 8 bytes of something that is not msgpack */
    uint8_t payload[12] = {0, 0, 0, 8, 0xc1, 0xc1, 0xc1, 0xc1, 0xc1, 0xc1, 0xc1, 0xc1};
    uint8_t frame[2 + 4 + sizeof payload];
    const uint8_t mask[4] = {0x12, 0x34, 0x56, 0x78};
    frame[0] = 0x82; /* FIN, binary */
    frame[1] = 0x80 | sizeof payload;
    memcpy(frame + 2, mask, 4);
    for (size_t i = 0; i < sizeof payload; i++)
        frame[6 + i] = payload[i] ^ mask[i % 4];
    r.len = 0;
    ck_assert_int_eq(send(r.fd, frame, sizeof frame, 0), (ssize_t)sizeof frame);
    ck_assert_msg(spin(raw_closed, &r, 10000), "the server kept the connection");
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

START_TEST(bad_path_is_refused)
{
    start_server(CRDTDB_SYNC_TWO_WAY);
    raw r;
    raw_open(&r, crdtdb_server_port(srv), "/elsewhere");
    spin(raw_upgraded, &r, 10000);
    ck_assert_msg(strstr(r.in, " 101 ") == NULL, "upgraded a bad path: %s", r.in);
    close(r.fd);
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
    uint64_t deadline = mono_ms() + 10000;
    while (mono_ms() < deadline) {
        spin(NULL, NULL, 5);
        if (!db && crdtdb_db_open(S.env, "team a/b%41", &db) != 0)
            db = NULL;
        if (db && has(&(want){db, "players", "x", "{\"n\":1}"}))
            break;
    }
    ck_assert_ptr_nonnull(db);
    ck_assert(has(&(want){db, "players", "x", "{\"n\":1}"}));
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

static Suite *suite(void)
{
    Suite *s = suite_create("ws");
    TCase *tc = tcase_create("ws");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, two_clients_one_database);
    tcase_add_test(tc, bulk_data_in_many_messages);
    tcase_add_test(tc, databases_are_isolated);
    tcase_add_test(tc, offline_writes_then_reconnect);
    tcase_add_test(tc, server_to_client_mode);
    tcase_add_test(tc, garbage_closes_only_that_connection);
    tcase_add_test(tc, bad_path_is_refused);
    tcase_add_test(tc, url_encoded_database_id);
    tcase_add_test(tc, options_are_checked);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    lws_set_log_level(LLL_ERR, NULL);
    SRunner *sr = srunner_create(suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
