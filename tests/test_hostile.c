/* Hostile clients against a real server on 127.0.0.1 (ephemeral ports):
 * what they can hold (slots, memory, time) is bounded, each refusal or
 * close says why, and honest clients keep being served meanwhile.  Every
 * limit is set short here; the deadlines asserted are generous. */
#define _GNU_SOURCE /* memmem */
#include <check.h>
#include <libwebsockets.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "crdt/buf.h"
#include "tests/replica.h"
#include "tests/testutil.h"
#include "tests/wsutil.h"

static const char SECRET[] = "hostile test secret: 0123456789abcdef";

static uint64_t now = 1700000000000ull;
static char *sdir;
static crdtdb_env *senv;     /* the server's, default limits (4 MiB messages) */
static replica A;            /* an honest client's replica of "game" */
static crdtdb_server *srv;
static crdtdb_client *ca;
static crdtdb_jwt_key *key;
static crdtdb_buf logbuf;
static crdtdb_buf hello;     /* A's session hello, one masked WS message */
static int a_ready, a_errors;
static char a_err[256];
static char url[64];
static const tu_net NET = {{&srv}, {&ca}, 2};

static int logged(const char *needle) { return tu_log_count(&logbuf, needle) > 0; }

static void setup(void)
{
    senv = tu_env(&sdir, NULL);
    replica_init(&A, &now, "game");
    srv = NULL;
    ca = NULL;
    key = NULL;
    memset(&logbuf, 0, sizeof logbuf);
    memset(&hello, 0, sizeof hello);
    tu_ws_hello(A.db, &hello);
    a_ready = a_errors = 0;
    a_err[0] = 0;
}

static void teardown(void)
{
    crdtdb_client_close(ca);
    crdtdb_server_close(srv);
    crdtdb_jwt_key_close(key);
    replica_free(&A);
    crdtdb_env_close(senv);
    tu_rmrf(sdir);
    free(sdir);
    crdtdb_buf_free(&logbuf);
    crdtdb_buf_free(&hello);
}

/* Options for a server of "game" with collections, logging here. */
static crdtdb_server_options opts(void)
{
    crdtdb_server_options o;
    crdtdb_server_options_init(&o);
    o.collections = COLLS;
    o.ncoll = 2;
    o.log = tu_log_line;
    o.log_ctx = &logbuf;
    return o;
}

static void start(const crdtdb_server_options *o)
{
    ck_assert_int_eq(crdtdb_server_open(senv, o, &srv), 0);
    snprintf(url, sizeof url, "ws://127.0.0.1:%d", crdtdb_server_port(srv));
}

static int port(void) { return crdtdb_server_port(srv); }

static void on_a(void *ctx, const crdtdb_session_event *ev)
{
    (void)ctx;
    if (ev->type == CRDTDB_SESSION_READY)
        a_ready++;
    if (ev->type == CRDTDB_SESSION_ERROR) {
        a_errors++;
        snprintf(a_err, sizeof a_err, "%s", ev->message ? ev->message : "");
    }
}

static crdtdb_client *client(const char *token)
{
    crdtdb_client_options o;
    crdtdb_client_options_init(&o);
    o.url = url;
    o.backoff_min_ms = 10;
    o.backoff_max_ms = 100;
    o.token = token;
    o.on_event = on_a;
    crdtdb_client *c;
    ck_assert_int_eq(crdtdb_client_open(A.db, &o, &c), 0);
    return c;
}

static int is_connected(void *arg)
{
    (void)arg;
    return crdtdb_client_connected(ca);
}

/* The honest client syncs a fresh write to the server. */
static void honest_sync(const char *id)
{
    if (!ca)
        ca = client(NULL);
    ck_assert_msg(tu_spin(&NET, is_connected, NULL, 10000), "the honest client never connected");
    put(&A, "add", "players", id, "{\"ok\":1}");
    crdtdb_db *sd;
    ck_assert_int_eq(crdtdb_db_open(senv, "game", &sd), 0);
    tu_expect(&NET, sd, "players", id, "{\"ok\":1}");
    crdtdb_db_close(sd);
}

/* A raw upgrade of path (token NULL: none), answered. */
static void upgrade(tu_raw *r, const char *path, const char *token)
{
    tu_raw_open(r, port(), path, token);
    ck_assert_msg(tu_spin(&NET, tu_raw_answered, r, 10000), "no answer to the upgrade");
}

static int upgraded(const tu_raw *r) { return strstr(r->in, " 101 ") != NULL && !r->eof; }

/* The HTTP status r was answered with, 0 for none. */
static int status_of(const tu_raw *r)
{
    int st = 0;
    return sscanf(r->in, "HTTP/1.%*d %d", &st) == 1 ? st : 0;
}

/* An HS256 token for sub, exp in an hour, padded with a "pad" claim to
 * exactly `size` bytes when size is not 0 (malloc'd). */
static char *token(const char *sub, size_t size)
{
    static const char header[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";
    char *h = tu_b64url(header, strlen(header));
    char *pad = calloc(1, size + 1);
    ck_assert_ptr_nonnull(pad);
    char *tok = NULL;
    for (size_t n = 0;; n++) {
        memset(pad, 'x', n);
        pad[n] = 0;
        char payload[16384];
        snprintf(payload, sizeof payload, "{\"sub\":\"%s\",\"exp\":%lld,\"pad\":\"%s\"}", sub,
                 (long long)time(NULL) + 3600, pad);
        char *p = tu_b64url(payload, strlen(payload));
        char *signing = malloc(strlen(h) + strlen(p) + 2);
        ck_assert_ptr_nonnull(signing);
        sprintf(signing, "%s.%s", h, p);
        uint8_t mac[crypto_auth_hmacsha256_BYTES];
        crypto_auth_hmacsha256_state st;
        crypto_auth_hmacsha256_init(&st, (const uint8_t *)SECRET, strlen(SECRET));
        crypto_auth_hmacsha256_update(&st, (const uint8_t *)signing, strlen(signing));
        crypto_auth_hmacsha256_final(&st, mac);
        char *sig = tu_b64url(mac, sizeof mac);
        size_t len = strlen(signing) + 1 + strlen(sig);
        if (!size || len >= size) {
            ck_assert_msg(!size || len == size, "no token of %zu bytes (%zu)", size, len);
            tok = malloc(len + 1);
            ck_assert_ptr_nonnull(tok);
            sprintf(tok, "%s.%s", signing, sig);
        }
        free(sig);
        free(signing);
        free(p);
        if (tok)
            break;
    }
    free(pad);
    free(h);
    return tok;
}

static void use_key(crdtdb_server_options *o)
{
    ck_assert_int_eq(crdtdb_jwt_key_open(CRDTDB_JWT_HS256, (const uint8_t *)SECRET,
                                         strlen(SECRET), &key),
                     0);
    o->jwt_key = key;
}

/* ------------------------------------------------------- slots (6) */

START_TEST(full_server_answers_503)
{
    crdtdb_server_options o = opts();
    o.max_connections = 2;
    start(&o);
    tu_raw r[3];
    for (int i = 0; i < 3; i++)
        upgrade(&r[i], "/v1/db/game", NULL);
    ck_assert(upgraded(&r[0]) && upgraded(&r[1]));
    ck_assert_msg(status_of(&r[2]) == 503, "not a 503: '%s'", r[2].in);
    ck_assert(logged("refused: 503"));
    for (int i = 0; i < 3; i++)
        close(r[i].fd);
    honest_sync("after-full"); /* the slots came back */
}
END_TEST

START_TEST(per_address_cap_answers_429)
{
    crdtdb_server_options o = opts();
    o.max_per_ip = 2;
    start(&o);
    ck_assert_uint_eq(o.max_connections, 1024);
    tu_raw r[3];
    for (int i = 0; i < 3; i++)
        upgrade(&r[i], "/v1/db/game", NULL);
    ck_assert(upgraded(&r[0]) && upgraded(&r[1]));
    ck_assert_msg(status_of(&r[2]) == 429, "not a 429: '%s'", r[2].in);
    ck_assert(logged("refused: 429"));
    close(r[0].fd);
    ck_assert(tu_spin(&NET, NULL, NULL, 200) == 0);
    honest_sync("after-cap"); /* a freed slot of the address is taken */
    close(r[1].fd);
    close(r[2].fd);
}
END_TEST

START_TEST(per_user_cap_answers_429)
{
    crdtdb_server_options o = opts();
    o.max_per_user = 1;
    use_key(&o);
    start(&o);
    char *alice = token("alice", 0), *bob = token("bob", 0);
    tu_raw r[3];
    upgrade(&r[0], "/v1/db/game", alice);
    upgrade(&r[1], "/v1/db/game", alice);
    upgrade(&r[2], "/v1/db/game", bob);
    ck_assert_msg(upgraded(&r[0]), "alice refused: %s", r[0].in);
    ck_assert_msg(status_of(&r[1]) == 429, "not a 429: '%s'", r[1].in);
    ck_assert_msg(upgraded(&r[2]), "bob refused: %s", r[2].in);
    ck_assert(logged("user 'alice' refused: 429"));
    for (int i = 0; i < 3; i++)
        close(r[i].fd);
    free(alice);
    free(bob);
}
END_TEST

/* Tokens, and user "peer-s2" a relay user: a peer server's links. */
static const char *const RELAY[] = {"peer-s2"};
static void with_relay(crdtdb_server_options *o)
{
    o->relay_users = RELAY;
    o->nrelay_users = 1;
    use_key(o);
}

/* An open server creates the databases clients name: max_databases bounds
 * how many, and a database it holds is still served at the limit. */
START_TEST(database_limit_answers_503)
{
    crdtdb_server_options o = opts();
    o.max_databases = 2;
    start(&o);
    tu_raw r[4];
    upgrade(&r[0], "/v1/db/first", NULL);
    upgrade(&r[1], "/v1/db/second", NULL);
    upgrade(&r[2], "/v1/db/third", NULL);
    upgrade(&r[3], "/v1/db/first", NULL);
    ck_assert_msg(upgraded(&r[0]) && upgraded(&r[1]), "%s / %s", r[0].in, r[1].in);
    ck_assert_msg(status_of(&r[2]) == 503, "not a 503: '%s'", r[2].in);
    ck_assert(logged("database 'third': not created: 2 databases held"));
    ck_assert_msg(upgraded(&r[3]), "a held database refused at the limit: %s", r[3].in);
    for (int i = 0; i < 4; i++)
        close(r[i].fd);
    crdtdb_db *db;
    ck_assert_int_eq(crdtdb_db_open(senv, "third", &db), CRDTDB_ENODB); /* nothing stored */
}
END_TEST

/* A peer server's link (a relay user's) is not held to max_databases: at
 * the limit, its database is still made here (its owners must hold it). */
START_TEST(database_limit_spares_relay_users)
{
    crdtdb_server_options o = opts();
    o.max_databases = 1;
    with_relay(&o);
    start(&o);
    char *peer = token("peer-s2", 0), *alice = token("alice", 0);
    tu_raw r[3];
    upgrade(&r[0], "/v1/db/first", alice);
    upgrade(&r[1], "/v1/db/second", alice);
    upgrade(&r[2], "/v1/db/linked", peer);
    ck_assert_msg(upgraded(&r[0]), "%s", r[0].in);
    ck_assert_msg(status_of(&r[1]) == 503, "not a 503: '%s'", r[1].in);
    ck_assert_msg(upgraded(&r[2]), "a relay user's link refused at the limit: %s", r[2].in);
    for (int i = 0; i < 3; i++)
        close(r[i].fd);
    free(peer);
    free(alice);
}
END_TEST

/* A peer server's links (a relay user's) are one per database, all from
 * one address and user: the client caps do not cut them off. */
START_TEST(relay_user_passes_the_client_caps)
{
    crdtdb_server_options o = opts();
    o.max_per_user = 1;
    o.max_per_ip = 2;
    with_relay(&o);
    start(&o);
    char *peer = token("peer-s2", 0), *alice = token("alice", 0);
    tu_raw r[5];
    upgrade(&r[0], "/v1/db/game", alice);
    for (int i = 1; i < 4; i++)
        upgrade(&r[i], "/v1/db/game", peer);
    upgrade(&r[4], "/v1/db/game", alice);
    ck_assert_msg(upgraded(&r[0]), "alice refused: %s", r[0].in);
    for (int i = 1; i < 4; i++)
        ck_assert_msg(upgraded(&r[i]), "relay link %d refused: %s", i, r[i].in);
    ck_assert_msg(status_of(&r[4]) == 429, "not a 429: '%s'", r[4].in); /* the address is over */
    for (int i = 0; i < 5; i++)
        close(r[i].fd);
    free(peer);
    free(alice);
}
END_TEST

/* Spins until r's connection ends (10 s at most); 1 if it did. */
static int ends(tu_raw *r) { return tu_spin(&NET, tu_raw_closed, r, 10000); }

START_TEST(silent_connection_closed_after_handshake_timeout)
{
    crdtdb_server_options o = opts();
    o.handshake_secs = 1;
    start(&o);
    tu_raw r;
    upgrade(&r, "/v1/db/game", NULL);
    ck_assert(upgraded(&r));
    uint64_t t0 = tu_mono_ms();
    ck_assert_msg(ends(&r), "a connection that never said hello was kept");
    ck_assert_uint_ge(tu_mono_ms() - t0, 500); /* not at once */
    ck_assert_msg(tu_raw_close_saw(&r, 1008), "no close 1008");
    ck_assert(tu_raw_saw(&r, "no session hello within 1 s"));
    ck_assert(logged("closing (1008): no session hello within 1 s"));
    close(r.fd);
    /* a request that never ends is dropped too (lws: its header set) */
    tu_raw_open(&r, port(), "/v1/db/game", NULL);
    tu_raw_send(&NET, &r, "X-Slow: 1", 9); /* the blank line never comes */
    ck_assert_msg(ends(&r), "a request dribbling its headers was kept");
    close(r.fd);
}
END_TEST

START_TEST(unfinished_message_closed_after_message_timeout)
{
    crdtdb_server_options o = opts();
    o.message_secs = 1;
    start(&o);
    tu_raw r;
    upgrade(&r, "/v1/db/game", NULL);
    tu_raw_send(&NET, &r, hello.data, hello.len);
    /* a message of 100 bytes, 10 sent, one more now and then */
    uint8_t part[14] = {0, 0, 0, 100, 0x92, 1, 1, 1, 1, 1, 1, 1, 1, 1};
    tu_ws_send(&NET, &r, part, sizeof part);
    uint64_t deadline = tu_mono_ms() + 10000;
    while (!tu_raw_closed(&r) && tu_mono_ms() < deadline) {
        tu_spin(&NET, NULL, NULL, 300);
        if (!r.eof)
            tu_ws_send(&NET, &r, part + 5, 1); /* progress, 1 byte at a time */
    }
    ck_assert_msg(r.eof, "a message dribbled a byte at a time was never closed");
    ck_assert_msg(tu_raw_close_saw(&r, 1008), "no close 1008");
    ck_assert(tu_raw_saw(&r, "a message still unfinished after 1 s"));
    close(r.fd);
    honest_sync("after-dribble");
}
END_TEST

START_TEST(silent_peer_dropped_by_ping)
{
    crdtdb_server_options o = opts();
    o.ping_secs = 1;
    o.pong_secs = 3; /* slack for a loaded machine: honest clients answer in ms */
    start(&o);
    ca = client(NULL);
    ck_assert(tu_spin(&NET, is_connected, NULL, 10000));
    tu_raw r; /* says hello, then never answers a ping */
    upgrade(&r, "/v1/db/game", NULL);
    tu_raw_send(&NET, &r, hello.data, hello.len);
    ck_assert_msg(ends(&r), "a peer answering no ping was kept");
    close(r.fd);
    /* the honest client answers them: still on its first connection */
    tu_spin(&NET, NULL, NULL, 3000);
    ck_assert(crdtdb_client_connected(ca));
    ck_assert_int_eq(a_ready, 1);
    honest_sync("after-ping");
}
END_TEST

/* ------------------------------------------------------ memory (5) */

#define PARKERS 6
#define PARKED 3900000u /* of a message announced as 4,000,000 bytes */

/* How many of the PARKERS raw connections at arg were shed (1013). */
static int parkers_shed(tu_raw *r)
{
    int shed = 0;
    for (int i = 0; i < PARKERS; i++) {
        tu_raw_read(&r[i]);
        shed += tu_raw_close_saw(&r[i], 1013);
    }
    return shed;
}

/* A tu_cond: two parkers at least were shed. */
static int two_shed(void *arg) { return parkers_shed(arg) >= 2; }

START_TEST(memory_budget_sheds_parked_messages)
{
    crdtdb_server_options o = opts();
    o.max_buffered = 16u << 20; /* 16 MiB: four parkers fit, six do not */
    start(&o);
    ca = client(NULL);
    ck_assert(tu_spin(&NET, is_connected, NULL, 10000));
    static tu_raw r[PARKERS];
    uint8_t *big = calloc(1, PARKED);
    ck_assert_ptr_nonnull(big);
    big[0] = 0;
    big[1] = 0x3d; /* 4,000,000 = 0x003d0900 */
    big[2] = 0x09;
    big[3] = 0x00;
    for (int i = 0; i < PARKERS; i++) {
        upgrade(&r[i], "/v1/db/game", NULL);
        tu_raw_send(&NET, &r[i], hello.data, hello.len);
        tu_ws_send(&NET, &r[i], big, PARKED);
        tu_spin(&NET, NULL, NULL, 20);
    }
    free(big);
    /* megabytes of each parker may still wait in the sockets' buffers
     * when its send returns: the server sheds once it read them, which a
     * loaded machine (and ASan) takes longer than a fixed 500 ms to do */
    tu_spin(&NET, two_shed, r, 30000);
    tu_spin(&NET, NULL, NULL, 500); /* and sheds no more than that after */
    int shed = 0;
    for (int i = 0; i < PARKERS; i++) {
        tu_raw_read(&r[i]);
        if (tu_raw_close_saw(&r[i], 1013)) {
            ck_assert(tu_raw_saw(&r[i], "server memory budget exceeded"));
            shed++;
        }
    }
    /* 6 x 3.9 MB in 16 MiB: two at least must go, four fit */
    ck_assert_msg(shed >= 2 && shed <= 3, "%d of %d parkers shed", shed, PARKERS);
    ck_assert(logged("closing (1013): server memory budget exceeded"));
    ck_assert(crdtdb_client_connected(ca)); /* it held nothing: kept */
    honest_sync("after-parkers");
    for (int i = 0; i < PARKERS; i++)
        close(r[i].fd);
}
END_TEST

/* Server log lines containing needle. */
static int log_count(const char *needle) { return tu_log_count(&logbuf, needle); }

#define NOREADERS 40

typedef struct noreaders {
    int want;
} noreaders;

static int shed_enough(void *arg) { return log_count("closing (1013)") >= ((noreaders *)arg)->want; }

START_TEST(memory_budget_sheds_clients_that_never_read)
{
    /* 4 MiB to send: what the kernel takes of it (about 2 MiB here), and
     * up to 1 MiB and a delta of output in each session */
    crdtdb_db *sd;
    ck_assert_int_eq(crdtdb_db_create(senv, "game", COLLS, 2, &sd), 0);
    char json[4200];
    memcpy(json, "{\"s\":\"", 6);
    memset(json + 6, 'n', 4000);
    memcpy(json + 4006, "\"}", 3);
    crdtdb_buf v = CRDTDB_BUF_INIT;
    tu_mp(&v, json);
    crdtdb_txn *t;
    ck_assert_int_eq(crdtdb_txn_begin(sd, 0, &t), 0);
    for (int i = 0; i < 1024; i++) {
        char id[16];
        snprintf(id, sizeof id, "r%04d", i);
        ck_assert_int_eq(crdtdb_db_add(sd, t, "moves", id, v.data, v.len), 0);
    }
    ck_assert_int_eq(crdtdb_txn_commit(t), 0);
    crdtdb_buf_free(&v);
    crdtdb_db_close(sd);
    crdtdb_server_options o = opts();
    o.max_buffered = 16u << 20; /* what 40 sessions hold does not fit */
    start(&o);
    static tu_raw r[NOREADERS];
    static const uint8_t since0[7] = {0, 0, 0, 3, 0x92, 0x02, 0x00}; /* [SINCE, 0] */
    for (int i = 0; i < NOREADERS; i++) {
        tu_raw_open_rcvbuf(&r[i], port(), "/v1/db/game", NULL, 4096);
        ck_assert(tu_spin(&NET, tu_raw_answered, &r[i], 10000));
        ck_assert(upgraded(&r[i]));
        tu_raw_send(&NET, &r[i], hello.data, hello.len);
        tu_ws_send(&NET, &r[i], since0, sizeof since0); /* everything, please */
    }
    noreaders nr = {3}; /* how many depends on what the kernel buffers */
    ck_assert_msg(tu_spin(&NET, shed_enough, &nr, 20000),
                  "%d of %d clients that never read were shed", log_count("closing (1013)"),
                  NOREADERS);
    ck_assert(logged("server memory budget exceeded"));
    honest_sync("after-noreaders");
    for (int i = 0; i < NOREADERS; i++)
        close(r[i].fd);
}
END_TEST

/* ------------------------------------------------------ tokens (7) */

static int a_gave_up(void *arg)
{
    (void)arg;
    return crdtdb_client_connected(ca) || a_errors > 0;
}

START_TEST(tokens_up_to_the_limit_work)
{
    crdtdb_server_options o = opts();
    use_key(&o);
    start(&o);
    char *t = token("alice", CRDTDB_JWT_MAX);
    ck_assert_uint_eq(strlen(t), CRDTDB_JWT_MAX);
    /* in the Authorization header, from a crdtdb client */
    ca = client(t);
    ck_assert(tu_spin(&NET, a_gave_up, NULL, 10000));
    ck_assert_msg(crdtdb_client_connected(ca), "refused: %s", a_err);
    honest_sync("long-token");
    /* in ?access_token=, as browsers send it */
    size_t n = strlen("/v1/db/game?access_token=") + strlen(t) + 1;
    char *path = malloc(n);
    ck_assert_ptr_nonnull(path);
    snprintf(path, n, "/v1/db/game?access_token=%s", t);
    tu_raw r;
    upgrade(&r, path, NULL);
    ck_assert_msg(upgraded(&r), "refused: '%.200s'", r.in);
    close(r.fd);
    free(path);
    free(t);
}
END_TEST

START_TEST(longer_tokens_get_431)
{
    crdtdb_server_options o = opts();
    use_key(&o);
    start(&o);
    size_t sizes[] = {CRDTDB_JWT_MAX + 1, 2 * CRDTDB_JWT_MAX};
    for (size_t i = 0; i < 2; i++) {
        char *t = token("alice", sizes[i]);
        tu_raw r;
        upgrade(&r, "/v1/db/game", t);
        ck_assert_msg(status_of(&r) == 431, "%zu bytes: not a 431: '%.200s'",
                      sizes[i], r.in);
        close(r.fd);
        /* the client refuses at once, and says why */
        crdtdb_client_options co;
        crdtdb_client_options_init(&co);
        co.url = url;
        co.token = t;
        crdtdb_client *c = NULL;
        ck_assert_int_eq(crdtdb_client_open(A.db, &co, &c), CRDTDB_ETOOBIG);
        ck_assert_ptr_null(c);
        free(t);
    }
    ck_assert(logged("refused: 431"));
    /* nor a token that would end the header */
    crdtdb_client_options co;
    crdtdb_client_options_init(&co);
    co.url = url;
    co.token = "abc\r\nX-Injected: 1";
    crdtdb_client *c = NULL;
    ck_assert_int_eq(crdtdb_client_open(A.db, &co, &c), CRDTDB_EINVAL);
    ck_assert_ptr_null(c);
}
END_TEST

/* ---------------------------------------------------- ids and logs (9) */

static int count_db(void *ctx, const char *id)
{
    (void)id;
    ++*(int *)ctx;
    return 0;
}

static int has_raw_esc(void) { return logbuf.len && memchr(logbuf.data, 0x1b, logbuf.len); }

START_TEST(invalid_ids_refused_alike_and_logs_escaped)
{
    /* (a %00 never reaches crdtdb: libwebsockets drops such a request) */
    char long_id[300] = "/v1/db/";
    memset(long_id + 7, 'x', CRDTDB_ID_MAX + 1);
    const char *bad[] = {"/v1/db/%1B%5B31mevil", "/v1/db/a%7Fb", "/v1/db/%FF%FE", "/v1/db/",
                         long_id};
    for (int keyed = 0; keyed < 2; keyed++) {
        crdtdb_server_options o = opts();
        if (keyed)
            use_key(&o);
        start(&o);
        for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
            tu_raw r;
            upgrade(&r, bad[i], NULL);
            ck_assert_msg(status_of(&r) == 400, "%s (key %d): not a 400: '%.200s'",
                          bad[i], keyed, r.in);
            close(r.fd);
        }
        crdtdb_server_close(srv);
        srv = NULL;
        crdtdb_jwt_key_close(key);
        key = NULL;
    }
    ck_assert(!has_raw_esc());
    int n = 0;
    ck_assert_int_eq(crdtdb_db_list(senv, count_db, &n), 0);
    ck_assert_int_eq(n, 0); /* nothing was created */
    /* what a peer chooses reaches the log escaped: a user id with ESC */
    crdtdb_server_options o = opts();
    use_key(&o);
    start(&o);
    char *t = token("\\u001b[31mmallory", 0);
    tu_raw r;
    upgrade(&r, "/v1/db/game", t);
    ck_assert_msg(upgraded(&r), "refused: '%.200s'", r.in);
    close(r.fd);
    free(t);
    tu_spin(&NET, NULL, NULL, 100);
    ck_assert(logged("user '\\x1b[31mmallory' connected"));
    ck_assert(!has_raw_esc());
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("hostile");
    TCase *tc = tcase_create("hostile");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, full_server_answers_503);
    tcase_add_test(tc, per_address_cap_answers_429);
    tcase_add_test(tc, per_user_cap_answers_429);
    tcase_add_test(tc, relay_user_passes_the_client_caps);
    tcase_add_test(tc, database_limit_answers_503);
    tcase_add_test(tc, database_limit_spares_relay_users);
    tcase_add_test(tc, silent_connection_closed_after_handshake_timeout);
    tcase_add_test(tc, unfinished_message_closed_after_message_timeout);
    tcase_add_test(tc, silent_peer_dropped_by_ping);
    tcase_add_test(tc, memory_budget_sheds_parked_messages);
    tcase_add_test(tc, memory_budget_sheds_clients_that_never_read);
    tcase_add_test(tc, tokens_up_to_the_limit_work);
    tcase_add_test(tc, longer_tokens_get_431);
    tcase_add_test(tc, invalid_ids_refused_alike_and_logs_escaped);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    lws_set_log_level(LLL_ERR, NULL);
    return tu_run(suite());
}
