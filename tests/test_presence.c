/* Presence and ephemeral messages end to end (docs/protocol.md, "Presence
 * and messages"): real servers on 127.0.0.1 (ephemeral ports), real
 * clients, the real crdtdb binary, and hand-made frames.  Nothing is
 * timed but with generous deadlines. */
#define _GNU_SOURCE
#include <check.h>
#include <dirent.h>
#include <sys/socket.h>
#include <libwebsockets.h>
#include <liburing.h>
#include <msgpack.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "crdt/buf.h"
#include "tests/replica.h"
#include "tests/testutil.h"
#include "tests/wsutil.h"

static const char SECRET[] = "presence test secret: 0123456789abcdef";

/* What one client saw: the entries live now, counts of each kind of
 * event, the last message, the remote errors (notices). */
typedef struct live {
    uint8_t key[CRDTDB_PRESENCE_KEY_BYTES];
    char user[64];
    char state[1024];
} live;

typedef struct plog {
    int ready;
    int joins, updates, leaves, msgs;
    live e[32];
    int n;
    char msg[256], msg_user[64], msg_to[64];
    int codes[16]; /* remote ERROR codes, in order */
    int ncodes;
    int failed; /* an upgrade refused */
} plog;

static uint64_t now = 1700000000000ull;
static replica S1, S2, A, B, C, K, Z1, Z2;
static crdtdb_server *srv1, *srv2;
static crdtdb_client *ca, *cb, *cc;
static plog la, lb, lc;
static char url1[64], url2[64];
static crdtdb_jwt_key *key;
static const tu_net NET = {{&srv1, &srv2}, {&ca, &cb, &cc}, 1};

static void on_event(void *ctx, const crdtdb_session_event *ev)
{
    plog *l = ctx;
    switch (ev->type) {
    case CRDTDB_SESSION_READY:
        l->ready++;
        break;
    case CRDTDB_SESSION_ERROR:
        if (ev->remote && l->ncodes < 16)
            l->codes[l->ncodes++] = ev->error;
        if (ev->remote && !ev->peer)
            l->failed = ev->error;
        break;
    case CRDTDB_SESSION_PRESENCE: {
        const crdtdb_presence *p = ev->presence;
        ck_assert_ptr_nonnull(p->key);
        ck_assert_ptr_nonnull(p->user);
        ck_assert_ptr_nonnull(p->replica);
        int i = 0;
        while (i < l->n && memcmp(l->e[i].key, p->key, sizeof l->e[i].key) != 0)
            i++;
        if (!p->state) {
            if (i < l->n) {
                l->leaves++;
                l->e[i] = l->e[--l->n];
            }
            break;
        }
        if (i == l->n) {
            ck_assert_int_lt(l->n, 32);
            l->joins++;
            l->n++;
            memcpy(l->e[i].key, p->key, sizeof l->e[i].key);
        } else {
            l->updates++;
        }
        snprintf(l->e[i].user, sizeof l->e[i].user, "%s", p->user);
        char *j = tu_json(p->state, p->state_len);
        snprintf(l->e[i].state, sizeof l->e[i].state, "%s", j);
        free(j);
        break;
    }
    case CRDTDB_SESSION_MESSAGE: {
        const crdtdb_message *m = ev->msg;
        l->msgs++;
        char *j = tu_json(m->body, m->body_len);
        snprintf(l->msg, sizeof l->msg, "%s", j);
        free(j);
        snprintf(l->msg_user, sizeof l->msg_user, "%s", m->user ? m->user : "?");
        snprintf(l->msg_to, sizeof l->msg_to, "%s", m->to ? m->to : "");
        break;
    }
    default:
        break;
    }
}

/* The live entry of l whose state is json, or NULL. */
static const live *with_state(const plog *l, const char *json)
{
    for (int i = 0; i < l->n; i++)
        if (strcmp(l->e[i].state, json) == 0)
            return &l->e[i];
    return NULL;
}

static crdtdb_server *server_opts(replica *r, char *url, size_t n, crdtdb_server_options *o)
{
    o->collections = COLLS;
    o->ncoll = 2;
    o->log = getenv("CRDTDB_TEST_LOG") ? tu_log_line : NULL;
    static crdtdb_buf sink;
    o->log_ctx = &sink;
    crdtdb_server *s;
    ck_assert_int_eq(crdtdb_server_open(r->env, o, &s), 0);
    snprintf(url, n, "ws://127.0.0.1:%d", crdtdb_server_port(s));
    crdtdb_buf_free(&sink);
    return s;
}

static crdtdb_server *server(replica *r, char *url, size_t n)
{
    crdtdb_server_options o;
    crdtdb_server_options_init(&o);
    return server_opts(r, url, n, &o);
}

static crdtdb_client *client_db(crdtdb_db *db, const char *url, plog *l, const char *token);

static crdtdb_client *client(replica *r, const char *url, plog *l, const char *token)
{
    return client_db(r->db, url, l, token);
}

static crdtdb_client *client_db(crdtdb_db *db, const char *url, plog *l, const char *token)
{
    crdtdb_client_options o;
    crdtdb_client_options_init(&o);
    o.url = url;
    o.backoff_min_ms = 10;
    o.backoff_max_ms = 200;
    o.on_event = on_event;
    o.ctx = l;
    o.token = token;
    crdtdb_client *c;
    ck_assert_int_eq(crdtdb_client_open(db, &o, &c), 0);
    return c;
}

static char *mint(const char *sub) { return tu_jwt_mint(key, sub, (int64_t)time(NULL), 3600); }

static void setup(void)
{
    replica_init(&S1, &now, "game");
    replica_init(&S2, &now, "game");
    replica_init(&A, &now, "game");
    replica_init(&B, &now, "game");
    replica_init(&C, &now, "game");
    replica_init(&Z1, &now, "game");
    replica_init(&Z2, &now, "game");
    srv1 = srv2 = NULL;
    ca = cb = cc = NULL;
    memset(&la, 0, sizeof la);
    memset(&lb, 0, sizeof lb);
    memset(&lc, 0, sizeof lc);
    ck_assert_int_eq(crdtdb_jwt_key_open(CRDTDB_JWT_HS256, (const uint8_t *)SECRET,
                                         strlen(SECRET), &key),
                     0);
}

static void teardown(void)
{
    crdtdb_client_close(ca);
    crdtdb_client_close(cb);
    crdtdb_client_close(cc);
    crdtdb_server_close(srv1);
    crdtdb_server_close(srv2);
    replica_free(&A);
    replica_free(&B);
    replica_free(&C);
    replica_free(&Z1);
    replica_free(&Z2);
    replica_free(&S1);
    replica_free(&S2);
    crdtdb_jwt_key_close(key);
}

static int spin(tu_cond cond, void *arg, int ms) { return tu_spin(&NET, cond, arg, ms); }

/* ---------------------------------------------------------- conditions */

static int all_ready(void *arg)
{
    (void)arg;
    return (!ca || crdtdb_client_connected(ca)) && (!cb || crdtdb_client_connected(cb)) &&
           (!cc || crdtdb_client_connected(cc));
}

static void wait_ready(void) { ck_assert_msg(spin(all_ready, NULL, 10000), "not connected"); }

/* A, B and C connected to srv1 without tokens (ca, cb, cc), once ready. */
static void three_clients(void)
{
    ca = client(&A, url1, &la, NULL);
    cb = client(&B, url1, &lb, NULL);
    cc = client(&C, url1, &lc, NULL);
    wait_ready();
}

typedef struct seen {
    plog *l;
    const char *state; /* a live entry with this state; NULL: count only */
    int n;             /* live entries, or -1: any */
} seen;

static int sees(void *arg)
{
    seen *s = arg;
    return (!s->state || with_state(s->l, s->state)) && (s->n < 0 || s->l->n == s->n);
}

/* Spins until l has a live entry with state json (NULL: any) and n live
 * entries (-1: any), 10 s at most. */
static void expect(plog *l, const char *json, int n)
{
    seen s = {l, json, n};
    if (spin(sees, &s, 10000))
        return;
    ck_abort_msg("never saw %s with %d entries (has %d: %s)", json ? json : "-", n, l->n,
                 l->n ? l->e[0].state : "none");
}

static int msgs_at_least(void *arg)
{
    seen *s = arg;
    return s->l->msgs >= s->n;
}

static void expect_msgs(plog *l, int n)
{
    seen s = {l, NULL, n};
    ck_assert_msg(spin(msgs_at_least, &s, 10000), "%d messages, not %d", l->msgs, n);
}

static int has_code(void *arg)
{
    seen *s = arg;
    for (int i = 0; i < s->l->ncodes; i++)
        if (s->l->codes[i] == s->n)
            return 1;
    return 0;
}

static void expect_code(plog *l, int code)
{
    seen s = {l, NULL, code};
    ck_assert_msg(spin(has_code, &s, 10000), "no remote %s", crdtdb_errname(code));
}

static void set(crdtdb_client *c, const char *json)
{
    crdtdb_buf b = CRDTDB_BUF_INIT;
    const uint8_t *p = json ? tu_mp(&b, json) : NULL;
    int rc = crdtdb_client_presence_set(c, p, json ? b.len : 0);
    ck_assert_msg(rc == 0, "presence_set %s: %s", json ? json : "NULL", crdtdb_errname(rc));
    crdtdb_buf_free(&b);
}

static int send_msg(crdtdb_client *c, const char *to, const char *json)
{
    crdtdb_buf b = CRDTDB_BUF_INIT;
    tu_mp(&b, json);
    int rc = crdtdb_client_message_send(c, to, b.data, b.len);
    crdtdb_buf_free(&b);
    return rc;
}

/* --------------------------------------------------------------- tests */

START_TEST(join_update_leave_reach_every_other_session)
{
    srv1 = server(&S1, url1, sizeof url1);
    three_clients();
    set(ca, "{\"who\":\"a\",\"x\":1}");
    expect(&lb, "{\"who\":\"a\",\"x\":1}", 1);
    expect(&lc, "{\"who\":\"a\",\"x\":1}", 1);
    ck_assert_int_eq(lb.joins, 1);
    ck_assert_str_eq(lb.e[0].user, ""); /* no tokens */
    set(ca, "{\"who\":\"a\",\"x\":2}");
    expect(&lb, "{\"who\":\"a\",\"x\":2}", 1);
    expect(&lc, "{\"who\":\"a\",\"x\":2}", 1);
    ck_assert_int_eq(lb.updates, 1);
    ck_assert_int_eq(lb.joins, 1);
    set(ca, NULL); /* leaves; the connection stays */
    expect(&lb, NULL, 0);
    expect(&lc, NULL, 0);
    ck_assert_int_eq(lb.leaves, 1);
    ck_assert_int_eq(lc.leaves, 1);
    ck_assert(crdtdb_client_connected(ca));
    /* everyone at once: each sees the two others, never itself */
    set(ca, "{\"who\":\"a\"}");
    set(cb, "{\"who\":\"b\"}");
    set(cc, "{\"who\":\"c\"}");
    expect(&la, "{\"who\":\"b\"}", 2);
    expect(&la, "{\"who\":\"c\"}", 2);
    expect(&lb, "{\"who\":\"a\"}", 2);
    expect(&lb, "{\"who\":\"c\"}", 2);
    expect(&lc, "{\"who\":\"a\"}", 2);
    expect(&lc, "{\"who\":\"b\"}", 2);
    spin(NULL, NULL, 200);
    ck_assert_ptr_null(with_state(&la, "{\"who\":\"a\"}"));
    ck_assert_int_eq(la.n, 2);
    /* the same state again is no change */
    int before = lb.updates + lb.joins;
    set(ca, "{\"who\":\"a\"}");
    spin(NULL, NULL, 300);
    ck_assert_int_eq(lb.updates + lb.joins, before);
    /* a client that closes leaves at once for the others */
    crdtdb_client_close(cc);
    cc = NULL;
    expect(&la, "{\"who\":\"b\"}", 1);
    expect(&lb, "{\"who\":\"a\"}", 1);
}
END_TEST

START_TEST(newcomer_gets_everyone_at_once)
{
    srv1 = server(&S1, url1, sizeof url1);
    ca = client(&A, url1, &la, NULL);
    cb = client(&B, url1, &lb, NULL);
    /* set before connecting: sent once connected */
    set(ca, "{\"who\":\"a\"}");
    set(cb, "{\"who\":\"b\"}");
    wait_ready();
    expect(&la, "{\"who\":\"b\"}", 1);
    expect(&lb, "{\"who\":\"a\"}", 1);
    cc = client(&C, url1, &lc, NULL); /* a spectator: invisible */
    expect(&lc, "{\"who\":\"a\"}", 2);
    expect(&lc, "{\"who\":\"b\"}", 2);
    ck_assert_int_eq(lc.joins, 2);
    spin(NULL, NULL, 200);
    ck_assert_int_eq(la.n, 1);
    ck_assert_int_eq(lb.n, 1);
    /* the server goes away: every client reports the leaves itself */
    crdtdb_server_close(srv1);
    srv1 = NULL;
    expect(&lc, NULL, 0);
    expect(&la, NULL, 0);
    ck_assert_int_eq(lc.leaves, 2);
    /* a new server on another port has never seen them */
    srv1 = server(&S1, url1, sizeof url1);
    crdtdb_client_close(ca);
    crdtdb_client_close(cc);
    ca = client(&A, url1, &la, NULL);
    cc = client(&C, url1, &lc, NULL);
    set(ca, "{\"who\":\"a2\"}"); /* kept: replaces the first */
    expect(&lc, "{\"who\":\"a2\"}", 1);
}
END_TEST

static int leave_seen(void *arg)
{
    plog *l = arg;
    return l->n == 0 && l->leaves > 0;
}

START_TEST(killed_cli_leaves_within_seconds)
{
    const char *cli = getenv("CRDTDB_CLI");
    ck_assert_msg(cli != NULL, "CRDTDB_CLI is not set");
    srv1 = server(&S1, url1, sizeof url1);
    ca = client(&A, url1, &la, NULL);
    wait_ready();
    replica_init(&K, &now, "game");
    replica_close(&K); /* the command opens it */
    char out[4200], err[4200];
    snprintf(out, sizeof out, "%s/out", K.dir);
    snprintf(err, sizeof err, "%s/err", K.dir);
    const char *argv[] = {cli,          "-d",    K.dir,      "sync",
                          url1,         "--db",  "game",     "--watch",
                          "--presence", "{\"cli\":true,\"at\":[1,2]}", "--send",
                          "{\"hi\":\"from the command\"}", NULL};
    pid_t pid = tu_spawn(argv, NULL, out, err);
    seen s = {&la, "{\"cli\":true,\"at\":[1,2]}", 1};
    int joined = spin(sees, &s, 10000);
    if (!joined)
        kill(pid, SIGKILL);
    ck_assert_msg(joined, "the command's presence never came");
    expect_msgs(&la, 1); /* its --send */
    ck_assert_str_eq(la.msg, "{\"hi\":\"from the command\"}");
    /* the command sees ours, and prints them */
    set(ca, "{\"c\":1}");
    ck_assert_int_eq(send_msg(ca, NULL, "[\"to\",\"all\"]"), 0);
    int printed = 0;
    for (int i = 0; i < 400 && !printed; i++) {
        spin(NULL, NULL, 25);
        char *o = tu_slurp(out, NULL);
        printed = strstr(o, "{\"presence\":\"join\",\"key\":\"") &&
                  strstr(o, "\"user\":\"\",\"replica\":\"") &&
                  strstr(o, "\"state\":{\"c\":1}}\n") &&
                  strstr(o, "{\"message\":[\"to\",\"all\"],\"key\":\"") &&
                  strstr(o, "\"to\":null}\n");
        free(o);
    }
    ck_assert_int_eq(kill(pid, SIGKILL), 0);
    ck_assert_int_eq(tu_wait(pid), 128 + SIGKILL);
    ck_assert_msg(printed, "the command never printed our join");
    ck_assert_msg(spin(leave_seen, &la, 10000), "the killed command never left");
    ck_assert_int_eq(la.leaves, 1);
    tu_rmrf(K.dir);
    free(K.dir);
}
END_TEST

static off_t file_size(const char *dir)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/data.mdb", dir);
    struct stat st;
    ck_assert_int_eq(stat(path, &st), 0);
    return st.st_size;
}

START_TEST(nothing_reaches_lmdb)
{
    srv1 = server(&S1, url1, sizeof url1);
    ca = client(&A, url1, &la, NULL);
    cb = client(&B, url1, &lb, NULL);
    wait_ready();
    put(&A, "add", "players", "p", "{\"hp\":1}"); /* and the data still flows */
    tu_expect(&NET, B.db, "players", "p", "{\"hp\":1}");
    spin(NULL, NULL, 300); /* acks recorded */
    uint64_t seq0, seq1;
    ck_assert_int_eq(crdtdb_db_seq(S1.db, NULL, &seq0), 0);
    off_t size0 = file_size(S1.dir);
    char json[64];
    for (int i = 0; i < 1000; i++) {
        snprintf(json, sizeof json, "{\"i\":%d,\"pad\":\"%040d\"}", i, i);
        set(ca, json);
        if (i % 50 == 0)
            spin(NULL, NULL, 2);
    }
    expect(&lb, json, 1);
    spin(NULL, NULL, 300);
    ck_assert_int_eq(crdtdb_db_seq(S1.db, NULL, &seq1), 0);
    ck_assert_uint_eq(seq1, seq0);
    ck_assert_int_eq(file_size(S1.dir), size0);
    char *g = tu_get(S1.db, "players", "p");
    ck_assert_str_eq(g, "{\"hp\":1}");
    free(g);
}
END_TEST

START_TEST(rate_limit_coalesces_to_the_latest)
{
    srv1 = server(&S1, url1, sizeof url1);
    ca = client(&A, url1, &la, NULL);
    cb = client(&B, url1, &lb, NULL);
    wait_ready();
    char json[32];
    for (int i = 0; i < 200; i++) { /* in one go: the server coalesces */
        snprintf(json, sizeof json, "{\"i\":%d}", i);
        set(ca, json);
    }
    expect(&lb, "{\"i\":199}", 1);
    spin(NULL, NULL, 500); /* nothing older comes after it */
    ck_assert_str_eq(lb.e[0].state, "{\"i\":199}");
    int forwarded = lb.joins + lb.updates;
    ck_assert_msg(forwarded <= 10, "%d of 200 forwarded", forwarded);
    ck_assert_int_ge(forwarded, 1);
}
END_TEST

/* authorize_user: mallory is denied; authorize_presence: eve may not
 * publish; nobody relays. */
static crdtdb_access deny_mallory(void *ctx, crdtdb_db *db, const char *user, int created)
{
    (void)ctx, (void)db, (void)created;
    return strcmp(user, "mallory") == 0 ? CRDTDB_ACCESS_DENY : CRDTDB_ACCESS_READWRITE;
}

static int presence_hook(void *ctx, crdtdb_db *db, const char *user, int relay)
{
    (void)ctx, (void)db;
    return !relay && strcmp(user, "eve") != 0;
}

START_TEST(unauthorized_users_see_and_show_nothing)
{
    crdtdb_server_auth auth;
    memset(&auth, 0, sizeof auth);
    auth.authorize_user = deny_mallory;
    auth.authorize_presence = presence_hook;
    crdtdb_server_options o;
    crdtdb_server_options_init(&o);
    o.jwt_key = key;
    o.auth = &auth;
    srv1 = server_opts(&S1, url1, sizeof url1, &o);
    char *ta = mint("alice"), *te = mint("eve"), *tm = mint("mallory");
    ca = client(&A, url1, &la, ta);
    cb = client(&B, url1, &lb, te);
    cc = client(&C, url1, &lc, tm);
    set(ca, "{\"who\":\"alice\"}");
    set(cc, "{\"who\":\"mallory\"}");
    expect(&lb, "{\"who\":\"alice\"}", 1); /* eve may look */
    ck_assert_str_eq(lb.e[0].user, "alice");
    set(cb, "{\"who\":\"eve\"}");
    expect_code(&lb, CRDTDB_EDENIED); /* a NOTICE: the session goes on */
    ck_assert(crdtdb_client_connected(cb));
    ck_assert_int_eq(send_msg(cb, NULL, "\"psst\""), 0);
    spin(NULL, NULL, 500);
    ck_assert_int_eq(la.n, 0); /* nobody sees eve */
    ck_assert_int_eq(la.msgs, 0);
    ck_assert_int_eq(lc.n, 0); /* mallory sees nothing */
    ck_assert_int_eq(lc.ready, 0);
    ck_assert_int_eq(lc.failed, CRDTDB_EDENIED);
    ck_assert_int_eq(send_msg(cc, NULL, "1"), CRDTDB_EBUSY); /* not connected */
    ck_assert_int_eq(send_msg(ca, NULL, "\"hi\""), 0);
    expect_msgs(&lb, 1);
    ck_assert_str_eq(lb.msg_user, "alice");
    free(ta);
    free(te);
    free(tm);
}
END_TEST

/* n: how many times l saw anything (entries and messages). */
static int total(const plog *l) { return l->joins + l->updates + l->leaves + l->msgs; }

START_TEST(peered_servers_relay_both_ways_once)
{
    srv1 = server(&S1, url1, sizeof url1);
    srv2 = server(&S2, url2, sizeof url2);
    crdtdb_client_options l1, l2;
    crdtdb_client_options_init(&l1);
    l1.url = url2;
    l1.backoff_min_ms = 10;
    l1.backoff_max_ms = 100;
    l2 = l1;
    l2.url = url1;
    ck_assert_int_eq(crdtdb_server_peer(srv1, &l1, NULL, 0), 0);
    ck_assert_int_eq(crdtdb_server_peer(srv2, &l2, NULL, 0), 0);
    ca = client(&A, url1, &la, NULL);
    cb = client(&B, url2, &lb, NULL);
    cc = client(&C, url1, &lc, NULL);
    wait_ready();
    spin(NULL, NULL, 500); /* the links are up */
    set(ca, "{\"at\":\"s1\"}");
    expect(&lb, "{\"at\":\"s1\"}", 1);
    expect(&lc, "{\"at\":\"s1\"}", 1);
    set(cb, "{\"at\":\"s2\"}");
    expect(&la, "{\"at\":\"s2\"}", 1);
    expect(&lc, "{\"at\":\"s2\"}", 2);
    set(ca, "{\"at\":\"s1\",\"v\":2}");
    expect(&lb, "{\"at\":\"s1\",\"v\":2}", 1);
    ck_assert_int_eq(send_msg(cb, NULL, "{\"hello\":\"from s2\"}"), 0);
    expect_msgs(&la, 1);
    expect_msgs(&lc, 1);
    ck_assert_str_eq(la.msg, "{\"hello\":\"from s2\"}");
    ck_assert_int_eq(send_msg(ca, NULL, "\"from s1\""), 0);
    expect_msgs(&lb, 1);
    spin(NULL, NULL, 500); /* copies over the second link would come now */
    ck_assert_int_eq(lb.joins, 1);
    ck_assert_int_eq(lb.updates, 1);
    ck_assert_int_eq(lb.msgs, 1);
    ck_assert_int_eq(la.joins, 1);
    ck_assert_int_eq(la.msgs, 1);
    ck_assert_int_eq(la.updates, 0);
    ck_assert_int_eq(lc.msgs, 2); /* a's (same server) and b's */
    ck_assert_int_eq(total(&lb), 3);
    /* a newcomer on the second server gets both at once */
    crdtdb_client_close(cc);
    memset(&lc, 0, sizeof lc);
    cc = client(&C, url2, &lc, NULL);
    expect(&lc, "{\"at\":\"s1\",\"v\":2}", 2);
    expect(&lc, "{\"at\":\"s2\"}", 2);
    /* a leaves: b, on the other server, sees it */
    crdtdb_client_close(ca);
    ca = NULL;
    expect(&lb, NULL, 0);
    expect(&lc, "{\"at\":\"s2\"}", 1);
    spin(NULL, NULL, 300);
    ck_assert_int_eq(lb.leaves, 1);
    /* the first server goes: what the second learned from it leaves */
    set(cc, "{\"at\":\"s2\",\"c\":1}");
    ca = client(&A, url1, &la, NULL);
    expect(&la, "{\"at\":\"s2\",\"c\":1}", 2);
    set(ca, "{\"back\":1}");
    expect(&lb, "{\"back\":1}", 2); /* and c, on its server */
    crdtdb_server_close(srv1);
    srv1 = NULL;
    expect(&lb, "{\"at\":\"s2\",\"c\":1}", 1);
    expect(&lc, "{\"at\":\"s2\"}", 1);
}
END_TEST

/* out = the message packed in sb as a session frame (u32 length, then the
 * message); sb is destroyed. */
static void frame_from(crdtdb_buf *out, msgpack_sbuffer *sb)
{
    crdtdb_buf_free(out);
    out->data = malloc(sb->size + 4);
    ck_assert_ptr_nonnull(out->data);
    out->data[0] = (uint8_t)(sb->size >> 24), out->data[1] = (uint8_t)(sb->size >> 16);
    out->data[2] = (uint8_t)(sb->size >> 8), out->data[3] = (uint8_t)sb->size;
    memcpy(out->data + 4, sb->data, sb->size);
    out->len = out->cap = sb->size + 4;
    msgpack_sbuffer_destroy(sb);
}

/* [12, bin(state)] as a session frame: u32 length, then the message. */
static void raw_presence_frame(crdtdb_buf *out, const uint8_t *state, size_t len)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, 2);
    msgpack_pack_uint8(&pk, 12);
    msgpack_pack_bin_with_body(&pk, state, len);
    frame_from(out, &sb);
}

typedef struct rawsaw {
    tu_raw *r;
    const char *bytes;
    size_t n;
} rawsaw;

static int raw_saw(void *arg)
{
    rawsaw *w = arg;
    tu_raw_read(w->r);
    return memmem(w->r->in, w->r->len, w->bytes, w->n) != NULL;
}

START_TEST(oversized_and_non_map_states_get_notices)
{
    srv1 = server(&S1, url1, sizeof url1);
    cb = client(&B, url1, &lb, NULL);
    wait_ready();
    tu_raw r;
    tu_raw_open(&r, crdtdb_server_port(srv1), "/v1/db/game", NULL);
    ck_assert(spin(tu_raw_answered, &r, 10000));
    ck_assert(tu_raw_saw(&r, " 101 "));
    crdtdb_buf hello = CRDTDB_BUF_INIT, f = CRDTDB_BUF_INIT;
    tu_ws_hello(A.db, &hello);
    tu_raw_send(&NET, &r, hello.data, hello.len); /* a WebSocket message already */
    /* 2 KiB: a map with one str of 2040 bytes */
    uint8_t big[2048];
    big[0] = 0x81, big[1] = 0xa1, big[2] = 'k', big[3] = 0xda, big[4] = 0x07, big[5] = 0xfa;
    memset(big + 6, 'x', sizeof big - 6);
    raw_presence_frame(&f, big, sizeof big);
    tu_ws_send(&NET, &r, f.data, f.len);
    rawsaw w = {&r, "\x93\x09\xf6", 3}; /* NOTICE ETOOBIG (-10) */
    if (!spin(raw_saw, &w, 10000)) {
        for (size_t i = 0; i < r.len && i < 400; i++)
            fprintf(stderr, "%02x%s", (uint8_t)r.in[i], i % 32 == 31 ? "\n" : " ");
        ck_abort_msg("no ETOOBIG notice (eof %d)", r.eof);
    }
    const uint8_t five = 5; /* not a map */
    raw_presence_frame(&f, &five, 1);
    tu_ws_send(&NET, &r, f.data, f.len);
    rawsaw w2 = {&r, "\x93\x09\xf7", 3}; /* NOTICE EBADVALUE (-9) */
    ck_assert_msg(spin(raw_saw, &w2, 10000), "no EBADVALUE notice");
    /* the connection lives on: a good state reaches the others */
    const uint8_t ok[] = {0x81, 0xa2, 'o', 'k', 0xc3}; /* {"ok":true} */
    raw_presence_frame(&f, ok, sizeof ok);
    tu_ws_send(&NET, &r, f.data, f.len);
    expect(&lb, "{\"ok\":true}", 1);
    ck_assert_int_eq(lb.joins, 1); /* the refused ones never showed */
    ck_assert(!r.eof);
    /* the client checks before it sends */
    ck_assert_int_eq(crdtdb_client_presence_set(cb, big, sizeof big), CRDTDB_ETOOBIG);
    ck_assert_int_eq(crdtdb_client_presence_set(cb, &five, 1), CRDTDB_EBADVALUE);
    ck_assert_int_eq(crdtdb_client_message_send(cb, NULL, big, sizeof big), CRDTDB_ETOOBIG);
    /* the raw client goes: its entry with it */
    close(r.fd);
    expect(&lb, NULL, 0);
    crdtdb_buf_free(&hello);
    crdtdb_buf_free(&f);
}
END_TEST

/* A peer that goes silent (a laptop closed, a cable pulled: no FIN) is
 * cut when it answers no ping, and its entry leaves then. */
START_TEST(silent_peer_leaves_after_the_pong_timeout)
{
    crdtdb_server_options o;
    crdtdb_server_options_init(&o);
    o.ping_secs = 1;
    o.pong_secs = 1;
    srv1 = server_opts(&S1, url1, sizeof url1, &o);
    cb = client(&B, url1, &lb, NULL);
    wait_ready();
    tu_raw r;
    tu_raw_open(&r, crdtdb_server_port(srv1), "/v1/db/game", NULL);
    ck_assert(spin(tu_raw_answered, &r, 10000));
    crdtdb_buf hello = CRDTDB_BUF_INIT, f = CRDTDB_BUF_INIT;
    tu_ws_hello(A.db, &hello);
    tu_raw_send(&NET, &r, hello.data, hello.len);
    const uint8_t st[] = {0x81, 0xa4, 'h', 'e', 'r', 'e', 0xc3}; /* {"here":true} */
    raw_presence_frame(&f, st, sizeof st);
    tu_ws_send(&NET, &r, f.data, f.len);
    expect(&lb, "{\"here\":true}", 1);
    /* from now on it reads nothing and answers nothing */
    ck_assert_msg(spin(leave_seen, &lb, 15000), "the silent peer never left");
    close(r.fd);
    crdtdb_buf_free(&hello);
    crdtdb_buf_free(&f);
}
END_TEST

START_TEST(messages_to_everyone_to_one_user_never_back)
{
    crdtdb_server_options o;
    crdtdb_server_options_init(&o);
    o.jwt_key = key;
    srv1 = server_opts(&S1, url1, sizeof url1, &o);
    char *ta = mint("alice"), *tb = mint("bob"), *tc = mint("carol");
    ca = client(&A, url1, &la, ta);
    cb = client(&B, url1, &lb, tb);
    cc = client(&C, url1, &lc, tc);
    wait_ready();
    ck_assert_int_eq(send_msg(ca, NULL, "{\"ping\":1}"), 0);
    expect_msgs(&lb, 1);
    expect_msgs(&lc, 1);
    ck_assert_str_eq(lb.msg, "{\"ping\":1}");
    ck_assert_str_eq(lb.msg_user, "alice");
    ck_assert_str_eq(lb.msg_to, "");
    ck_assert_int_eq(send_msg(ca, "bob", "\"just bob\""), 0);
    expect_msgs(&lb, 2);
    ck_assert_str_eq(lb.msg, "\"just bob\"");
    ck_assert_str_eq(lb.msg_to, "bob");
    ck_assert_int_eq(send_msg(cc, "alice", "[1,2,3]"), 0);
    expect_msgs(&la, 1);
    ck_assert_str_eq(la.msg_user, "carol");
    spin(NULL, NULL, 400);
    ck_assert_int_eq(la.msgs, 1); /* never its own */
    ck_assert_int_eq(lc.msgs, 1); /* not bob's */
    ck_assert_int_eq(lb.msgs, 2);
    /* over presence_hz (30) a second: dropped, with one notice */
    for (int i = 0; i < 100; i++)
        ck_assert_int_eq(send_msg(cc, NULL, "0"), 0);
    expect_code(&lc, CRDTDB_ELIMIT);
    spin(NULL, NULL, 300);
    ck_assert_int_lt(lb.msgs - 2, 100);
    ck_assert_int_ge(lb.msgs - 2, 1);
    int notices = 0;
    for (int i = 0; i < lc.ncodes; i++)
        notices += lc.codes[i] == CRDTDB_ELIMIT;
    ck_assert_int_le(notices, 2);
    ck_assert(crdtdb_client_connected(cc));
    free(ta);
    free(tb);
    free(tc);
}
END_TEST

START_TEST(max_presence_members_refuses_a_newcomer)
{
    crdtdb_server_options o;
    crdtdb_server_options_init(&o);
    o.max_presence_members = 2;
    srv1 = server_opts(&S1, url1, sizeof url1, &o);
    three_clients();
    set(ca, "{\"n\":1}");
    set(cb, "{\"n\":2}");
    expect(&lc, "{\"n\":2}", 2);
    set(cc, "{\"n\":3}");
    expect_code(&lc, CRDTDB_ELIMIT);
    spin(NULL, NULL, 300);
    ck_assert_int_eq(la.n, 1);
    ck_assert_int_eq(lb.n, 1);
    /* once one leaves there is room */
    set(ca, NULL);
    expect(&lc, "{\"n\":2}", 1);
    set(cc, "{\"n\":3}");
    expect(&lb, "{\"n\":3}", 1);
    ck_assert(crdtdb_client_connected(cc));
}
END_TEST

/* Database "club" (players, _members) in env, with its members as given
 * ({user, record} pairs; n of them), or none. */
static const char *CLUB_COLLS[] = {"players", "_members"};

static crdtdb_db *club(crdtdb_env *env, const char *const (*members)[2], int n)
{
    crdtdb_db *db;
    ck_assert_int_eq(crdtdb_db_create(env, "club", CLUB_COLLS, 2, &db), 0);
    crdtdb_buf b = CRDTDB_BUF_INIT;
    for (int i = 0; i < n; i++) {
        const uint8_t *p = tu_mp(&b, members[i][1]);
        ck_assert_int_eq(crdtdb_db_add(db, NULL, "_members", members[i][0], p, b.len), 0);
    }
    crdtdb_buf_free(&b);
    return db;
}

/* Two servers with tokens and the _members policy; the second peers with
 * the first (one way) as link_user.  alice is a client of the first, carol
 * of the second.  Relaying into the first server needs an owner. */
static void members_pair(const char *link_user, int carol_sees_alice, int alice_sees_carol)
{
    static const char *const relay[] = {"link"}; /* the peer server's user */
    static const char *const members[][2] = {
        {"link", "{\"role\":\"owner\",\"status\":\"accepted\"}"},
        {"bob", "{\"role\":\"reader\",\"status\":\"accepted\"}"},
        {"alice", "{\"role\":\"writer\",\"status\":\"accepted\"}"},
        {"carol", "{\"role\":\"reader\",\"status\":\"accepted\"}"}};
    crdtdb_db *d1 = club(S1.env, members, 4), *d2 = club(S2.env, members, 4);
    crdtdb_db *da = club(A.env, NULL, 0), *dc = club(C.env, NULL, 0);
    crdtdb_server_auth auth;
    crdtdb_members_policy(&auth);
    crdtdb_server_options o;
    crdtdb_server_options_init(&o);
    const char *colls[] = {"players", "_members"};
    o.jwt_key = key;
    o.auth = &auth;
    o.relay_users = relay;
    o.nrelay_users = 1;
    srv1 = server_opts(&S1, url1, sizeof url1, &o);
    o.collections = colls;
    srv2 = server_opts(&S2, url2, sizeof url2, &o);
    char *tl = mint(link_user), *ta = mint("alice"), *tc = mint("carol");
    crdtdb_client_options l;
    crdtdb_client_options_init(&l);
    l.url = url1;
    l.token = tl;
    l.backoff_min_ms = 10;
    l.backoff_max_ms = 100;
    const char *only[] = {"club"};
    ck_assert_int_eq(crdtdb_server_peer(srv2, &l, only, 1), 0);
    ca = client_db(da, url1, &la, ta);
    cc = client_db(dc, url2, &lc, tc);
    wait_ready();
    spin(NULL, NULL, 500); /* the link is up */
    set(ca, "{\"who\":\"alice\"}");
    set(cc, "{\"who\":\"carol\"}");
    if (carol_sees_alice) {
        expect(&lc, "{\"who\":\"alice\"}", 1);
        ck_assert_str_eq(lc.e[0].user, "alice");
    }
    if (alice_sees_carol) {
        expect(&la, "{\"who\":\"carol\"}", 1);
        ck_assert_str_eq(la.e[0].user, "carol");
    }
    spin(NULL, NULL, 500);
    ck_assert_int_eq(lc.n, carol_sees_alice);
    ck_assert_int_eq(la.n, alice_sees_carol);
    crdtdb_client_close(ca);
    crdtdb_client_close(cc);
    ca = cc = NULL;
    crdtdb_server_close(srv2); /* before the handles its link uses */
    crdtdb_server_close(srv1);
    srv1 = srv2 = NULL;
    crdtdb_db_close(d1);
    crdtdb_db_close(d2);
    crdtdb_db_close(da);
    crdtdb_db_close(dc);
    free(tl);
    free(ta);
    free(tc);
}

START_TEST(members_policy_relays_through_a_named_peer)
{
    members_pair("link", 1, 1);
}
END_TEST

START_TEST(members_policy_refuses_a_relay_not_named)
{
    /* what the first server sends its link still arrives; what the link
     * relays into it does not: bob is no peer server */
    members_pair("bob", 1, 0);
}
END_TEST

static int uv_until(uv_loop_t *loop, tu_cond cond, void *arg, int ms)
{
    uint64_t deadline = tu_mono_ms() + (uint64_t)ms;
    while (tu_mono_ms() < deadline) {
        uv_run(loop, UV_RUN_NOWAIT);
        if (cond(arg))
            return 1;
        tu_sleep_ms(1);
    }
    return 0;
}

/* On a libuv loop the coalescing timer runs on the loop: the latest state
 * arrives though nothing else happens after it. */
START_TEST(libuv_loop_runs_the_presence_timers)
{
    uv_loop_t loop;
    ck_assert_int_eq(uv_loop_init(&loop), 0);
    crdtdb_server_options o;
    crdtdb_server_options_init(&o);
    o.uv_loop = &loop;
    o.presence_hz = 5;
    srv1 = server_opts(&S1, url1, sizeof url1, &o);
    crdtdb_client_options co;
    crdtdb_client_options_init(&co);
    co.url = url1;
    co.uv_loop = &loop;
    co.on_event = on_event;
    co.ctx = &la;
    ck_assert_int_eq(crdtdb_client_open(A.db, &co, &ca), 0);
    co.ctx = &lb;
    ck_assert_int_eq(crdtdb_client_open(B.db, &co, &cb), 0);
    ck_assert(uv_until(&loop, all_ready, NULL, 10000));
    char json[32];
    for (int i = 0; i < 20; i++) {
        snprintf(json, sizeof json, "{\"i\":%d}", i);
        set(ca, json);
    }
    seen s = {&lb, "{\"i\":19}", 1};
    ck_assert_msg(uv_until(&loop, sees, &s, 10000), "the latest never came");
    ck_assert_int_le(lb.joins + lb.updates, 5);
    crdtdb_client_close(ca);
    seen gone = {&lb, NULL, 0};
    ck_assert_msg(uv_until(&loop, sees, &gone, 10000), "no leave");
    crdtdb_client_close(cb);
    crdtdb_server_close(srv1);
    ca = cb = NULL;
    srv1 = NULL;
    ck_assert_int_eq(uv_run(&loop, UV_RUN_DEFAULT), 0);
    ck_assert_int_eq(uv_loop_close(&loop), 0);
}
END_TEST

START_TEST(presence_options_are_bounded)
{
    crdtdb_server_options o;
    crdtdb_server_options_init(&o);
    ck_assert_uint_eq(o.max_presence, CRDTDB_PRESENCE_MAX);
    ck_assert_uint_eq(o.max_presence_members, 256);
    ck_assert_uint_eq(o.presence_hz, 30);
    crdtdb_server *s = NULL;
    o.presence_hz = 1001;
    ck_assert_int_eq(crdtdb_server_open(S1.env, &o, &s), CRDTDB_EINVAL);
    o.presence_hz = 30;
    o.max_presence = CRDTDB_PRESENCE_MAX + 1; /* no client would take it */
    ck_assert_int_eq(crdtdb_server_open(S1.env, &o, &s), CRDTDB_EINVAL);
    o.max_presence = CRDTDB_PRESENCE_MAX;
    o.nrelay_users = 1; /* and no list */
    ck_assert_int_eq(crdtdb_server_open(S1.env, &o, &s), CRDTDB_EINVAL);
    ck_assert_ptr_null(s);
    /* a client's own checks, connected or not */
    crdtdb_client_options co;
    crdtdb_client_options_init(&co);
    co.url = "ws://127.0.0.1:1";
    ck_assert_int_eq(crdtdb_client_open(A.db, &co, &ca), 0);
    const uint8_t map[] = {0x80}, deep[] = {0x81, 0xa1, 'k', 0x91, 0x91, 0x91, 0x91, 0x91,
                                            0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 0x91,
                                            0x91, 0x91, 0x91, 0x91, 0xc0};
    ck_assert_int_eq(crdtdb_client_presence_set(ca, map, sizeof map), 0); /* kept */
    ck_assert_int_eq(crdtdb_client_presence_set(ca, deep, sizeof deep), CRDTDB_ETOODEEP);
    ck_assert_int_eq(crdtdb_client_presence_set(ca, NULL, 0), 0);
    ck_assert_int_eq(crdtdb_client_presence_set(ca, NULL, 3), CRDTDB_EINVAL);
    ck_assert_int_eq(crdtdb_client_presence_set(NULL, map, 1), CRDTDB_EINVAL);
    ck_assert_int_eq(crdtdb_client_message_send(ca, NULL, map, sizeof map), CRDTDB_EBUSY);
    ck_assert_int_eq(crdtdb_client_message_send(ca, NULL, NULL, 0), CRDTDB_EINVAL);
}
END_TEST

START_TEST(members_policy_publishes_for_members_never_relays)
{
    crdtdb_server_auth auth;
    crdtdb_members_policy(&auth);
    ck_assert_ptr_nonnull(auth.authorize_presence);
    crdtdb_db *db;
    const char *colls[] = {"players", "_members"};
    ck_assert_int_eq(crdtdb_db_create(S1.env, "club", colls, 2, &db), 0);
    const char *recs[][2] = {{"olga", "{\"role\":\"owner\",\"status\":\"accepted\"}"},
                             {"rita", "{\"role\":\"reader\",\"status\":\"accepted\"}"},
                             {"ivan", "{\"role\":\"writer\",\"status\":\"invited\"}"}};
    crdtdb_buf b = CRDTDB_BUF_INIT;
    for (int i = 0; i < 3; i++) {
        const uint8_t *p = tu_mp(&b, recs[i][1]);
        ck_assert_int_eq(crdtdb_db_add(db, NULL, "_members", recs[i][0], p, b.len), 0);
    }
    crdtdb_buf_free(&b);
    ck_assert(auth.authorize_presence(auth.ctx, db, "olga", 0));
    ck_assert(!auth.authorize_presence(auth.ctx, db, "olga", 1)); /* an owner is no server */
    ck_assert(auth.authorize_presence(auth.ctx, db, "rita", 0));
    ck_assert(!auth.authorize_presence(auth.ctx, db, "rita", 1));
    ck_assert(auth.authorize_presence(auth.ctx, db, "ivan", 0));
    ck_assert(!auth.authorize_presence(auth.ctx, db, "ivan", 1));
    ck_assert(!auth.authorize_presence(auth.ctx, db, "nobody", 0));
    ck_assert(!auth.authorize_presence(auth.ctx, db, "", 0));
    crdtdb_db_close(db);
}
END_TEST

/* ------------------------------------------ relaying (review findings) */

/* A raw connection to port, hello sent as replica z. */
static void raw_join(tu_raw *r, int port, replica *z)
{
    tu_raw_open(r, port, "/v1/db/game", NULL);
    ck_assert(spin(tu_raw_answered, r, 10000));
    ck_assert(tu_raw_saw(r, " 101 "));
    crdtdb_buf hello = CRDTDB_BUF_INIT;
    tu_ws_hello(z->db, &hello);
    tu_raw_send(&NET, r, hello.data, hello.len);
    crdtdb_buf_free(&hello);
    spin(NULL, NULL, 200);
}

/* Sends [13, key("ZZZZZZZZ", num), "", replica, version, state]: what a
 * peer server relays. */
static void raw_relay(tu_raw *r, uint64_t num, uint64_t version, const char *json)
{
    uint8_t key16[16] = "ZZZZZZZZ";
    for (int i = 15; i >= 8; i--, num >>= 8)
        key16[i] = (uint8_t)num;
    uint8_t rep[32];
    memset(rep, 0x77, sizeof rep);
    crdtdb_buf st = CRDTDB_BUF_INIT, f = CRDTDB_BUF_INIT;
    const uint8_t *sp = json ? tu_mp(&st, json) : NULL;
    crdtdb_presence p = {key16, "", rep, version, sp, json ? st.len : 0};
    ck_assert_int_eq(crdtdb_presence_encode(&p, &f), 0);
    tu_ws_send(&NET, r, f.data, f.len);
    crdtdb_buf_free(&st);
    crdtdb_buf_free(&f);
}

/* A relayed leave, then a state for the same key, counts against
 * max_presence_members like a new entry. */
START_TEST(relayed_entries_keep_the_member_limit)
{
    crdtdb_server_options o;
    crdtdb_server_options_init(&o);
    o.max_presence_members = 2;
    srv1 = server_opts(&S1, url1, sizeof url1, &o);
    cb = client(&B, url1, &lb, NULL);
    wait_ready();
    tu_raw r;
    raw_join(&r, crdtdb_server_port(srv1), &Z1);
    for (uint64_t i = 1; i <= 20; i++) {
        char js[32];
        snprintf(js, sizeof js, "{\"i\":%llu}", (unsigned long long)i);
        raw_relay(&r, i, 1, NULL);
        raw_relay(&r, i, 2, js);
    }
    spin(NULL, NULL, 1000);
    close(r.fd);
    ck_assert_int_le(lb.n, 2);
}
END_TEST

/* Relayed messages ([15]) go at their sender's rate, as a connection's own
 * ([14]) do, with room for jitter: on a server without tokens any
 * connection may relay, and one key's 200 messages at once reach the
 * others as at most twice presence_hz (a second's bucket), not 200. */
START_TEST(relayed_messages_keep_their_senders_rate)
{
    crdtdb_server_options o;
    crdtdb_server_options_init(&o);
    srv1 = server_opts(&S1, url1, sizeof url1, &o);
    cb = client(&B, url1, &lb, NULL);
    wait_ready();
    tu_raw r;
    raw_join(&r, crdtdb_server_port(srv1), &Z1);
    uint8_t key16[16] = "ZZZZZZZZ\0\0\0\0\0\0\0\1", rep[32];
    memset(rep, 0x77, sizeof rep);
    crdtdb_buf body = CRDTDB_BUF_INIT, f = CRDTDB_BUF_INIT, all = CRDTDB_BUF_INIT;
    const uint8_t *bp = tu_mp(&body, "\"hi\"");
    for (uint64_t n = 1; n <= 200; n++) {
        crdtdb_message m = {key16, "", rep, n, NULL, bp, body.len};
        ck_assert_int_eq(crdtdb_message_encode(&m, &f), 0);
        ck_assert_int_eq(crdtdb__buf_append(&all, f.data, f.len), 0);
    }
    tu_ws_send(&NET, &r, all.data, all.len);
    expect_msgs(&lb, 1);
    spin(NULL, NULL, 500);
    close(r.fd);
    ck_assert_int_le(lb.msgs, 3 * (int)o.presence_hz); /* + what refills meanwhile */
    ck_assert_int_ge(lb.msgs, 2 * (int)o.presence_hz - 1);
    crdtdb_buf_free(&body), crdtdb_buf_free(&f), crdtdb_buf_free(&all);
}
END_TEST

/* Mesh: Z relays X to S1 and S2, and S2 peers S1.  Z's connection to S1
 * drops: S1's own clients lose X, but S1 does not tell S2, which still
 * reaches Z, nor use up Z's next version. */
START_TEST(a_lost_link_leaves_only_for_local_clients)
{
    srv1 = server(&S1, url1, sizeof url1);
    srv2 = server(&S2, url2, sizeof url2);
    crdtdb_client_options l;
    crdtdb_client_options_init(&l);
    l.url = url1;
    l.backoff_min_ms = 10;
    l.backoff_max_ms = 100;
    ck_assert_int_eq(crdtdb_server_peer(srv2, &l, NULL, 0), 0);
    ca = client(&A, url1, &la, NULL);
    cc = client(&C, url2, &lc, NULL);
    wait_ready();
    spin(NULL, NULL, 500);
    tu_raw z1, z2;
    raw_join(&z1, crdtdb_server_port(srv1), &Z1);
    raw_join(&z2, crdtdb_server_port(srv2), &Z2);
    raw_relay(&z2, 7, 1, "{\"x\":1}");
    raw_relay(&z1, 7, 1, "{\"x\":1}");
    expect(&lc, "{\"x\":1}", 1);
    expect(&la, "{\"x\":1}", 1);
    close(z1.fd); /* Z - S1 drops; Z - S2 stays */
    spin(NULL, NULL, 1500);
    ck_assert_int_eq(lc.leaves, 0);
    raw_relay(&z2, 7, 2, "{\"x\":2}"); /* Z's next change, straight to S2 */
    expect(&lc, "{\"x\":2}", 1);
    expect(&la, "{\"x\":2}", 1); /* and on through S2's link to S1 */
    close(z2.fd);
}
END_TEST

/* With tokens, an ordinary client (an owner under the _members policy)
 * cannot relay: it cannot show an entry under another user's name, nor
 * receive messages meant for others. */
START_TEST(a_client_cannot_relay_to_spoof_or_read_messages)
{
    static const char *const members[][2] = {
        {"olga", "{\"role\":\"owner\",\"status\":\"accepted\"}"},
        {"alice", "{\"role\":\"writer\",\"status\":\"accepted\"}"},
        {"carol", "{\"role\":\"reader\",\"status\":\"accepted\"}"}};
    crdtdb_db *d1 = club(S1.env, members, 3);
    crdtdb_db *da = club(A.env, NULL, 0), *dc = club(C.env, NULL, 0), *dz = club(Z1.env, NULL, 0);
    crdtdb_server_auth auth;
    crdtdb_members_policy(&auth);
    crdtdb_server_options o;
    crdtdb_server_options_init(&o);
    o.jwt_key = key;
    o.auth = &auth;
    srv1 = server_opts(&S1, url1, sizeof url1, &o);
    char *to = mint("olga"), *ta = mint("alice"), *tc = mint("carol");
    ca = client_db(da, url1, &la, ta);
    cc = client_db(dc, url1, &lc, tc);
    wait_ready();
    tu_raw r;
    tu_raw_open(&r, crdtdb_server_port(srv1), "/v1/db/club", to);
    ck_assert(spin(tu_raw_answered, &r, 10000));
    ck_assert(tu_raw_saw(&r, " 101 "));
    crdtdb_buf hello = CRDTDB_BUF_INIT, st = CRDTDB_BUF_INIT, f = CRDTDB_BUF_INIT;
    tu_ws_hello(dz, &hello);
    tu_raw_send(&NET, &r, hello.data, hello.len);
    spin(NULL, NULL, 300);
    uint8_t key16[16] = "ZZZZZZZZ\0\0\0\0\0\0\0\1", rep[32];
    memset(rep, 0x55, sizeof rep);
    const uint8_t *sp = tu_mp(&st, "{\"who\":\"I am bob\"}");
    crdtdb_presence p = {key16, "bob", rep, 1, sp, st.len};
    ck_assert_int_eq(crdtdb_presence_encode(&p, &f), 0);
    tu_ws_send(&NET, &r, f.data, f.len);
    ck_assert_int_eq(send_msg(ca, "carol", "\"secret-for-carol\""), 0);
    expect_msgs(&lc, 1);
    rawsaw w = {&r, "secret-for-carol", 16};
    int leaked = spin(raw_saw, &w, 1500);
    int spoofed = lc.n;
    close(r.fd);
    crdtdb_client_close(ca);
    crdtdb_client_close(cc);
    ca = cc = NULL;
    crdtdb_server_close(srv1);
    srv1 = NULL;
    crdtdb_db_close(d1), crdtdb_db_close(da), crdtdb_db_close(dc), crdtdb_db_close(dz);
    crdtdb_buf_free(&hello), crdtdb_buf_free(&st), crdtdb_buf_free(&f);
    free(to), free(ta), free(tc);
    ck_assert_int_eq(spoofed, 0);
    ck_assert(!leaked);
}
END_TEST

/* Connections and servers that go while an entry's coalescing timer is
 * armed (memory safety: run under ASan). */
START_TEST(closing_with_armed_timers)
{
    crdtdb_server_options o;
    crdtdb_server_options_init(&o);
    o.presence_hz = 1; /* a long wait: the timer is surely armed */
    srv1 = server_opts(&S1, url1, sizeof url1, &o);
    ca = client(&A, url1, &la, NULL);
    cb = client(&B, url1, &lb, NULL);
    wait_ready();
    for (int round = 0; round < 2; round++) {
        tu_raw r;
        raw_join(&r, crdtdb_server_port(srv1), &Z1);
        crdtdb_buf f = CRDTDB_BUF_INIT;
        for (int i = 0; i < 4; i++) {
            uint8_t stb[] = {0x81, 0xa1, 'i', (uint8_t)i};
            raw_presence_frame(&f, stb, sizeof stb);
            tu_ws_send(&NET, &r, f.data, f.len);
        }
        spin(NULL, NULL, 200);
        close(r.fd); /* pending state, armed timer */
        spin(NULL, NULL, 1200);
        crdtdb_buf_free(&f);
    }
    set(ca, "{\"a\":1}");
    set(ca, "{\"a\":2}");
    set(ca, "{\"a\":3}");
    spin(NULL, NULL, 100);
    crdtdb_server_close(srv1); /* with an armed timer */
    srv1 = NULL;
    spin(NULL, NULL, 300);
}
END_TEST

/* The encoders write msgpack by hand: byte for byte what msgpack-c's
 * packer writes, at every size where a header changes form. */
static void ref_frame(crdtdb_buf *out, int type, const uint8_t *ekey, const char *user,
                      const uint8_t *erep, uint64_t num, const char *to, const uint8_t *body,
                      size_t blen)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, type == 13 ? 6 : 7);
    msgpack_pack_uint8(&pk, (uint8_t)type);
    msgpack_pack_bin_with_body(&pk, ekey, CRDTDB_PRESENCE_KEY_BYTES);
    msgpack_pack_str_with_body(&pk, user, strlen(user));
    msgpack_pack_bin_with_body(&pk, erep, CRDTDB_REPLICA_ID_BYTES);
    msgpack_pack_uint64(&pk, num);
    if (type == 15) {
        if (to)
            msgpack_pack_str_with_body(&pk, to, strlen(to));
        else
            msgpack_pack_nil(&pk);
    }
    if (body)
        msgpack_pack_bin_with_body(&pk, body, blen);
    else
        msgpack_pack_nil(&pk);
    frame_from(out, &sb);
}

START_TEST(encoders_write_msgpack_c_forms)
{
    static uint8_t body[70000];
    for (size_t i = 0; i < sizeof body; i++)
        body[i] = (uint8_t)(i * 31 + 7);
    uint8_t ekey[CRDTDB_PRESENCE_KEY_BYTES], erep[CRDTDB_REPLICA_ID_BYTES];
    memset(ekey, 0xab, sizeof ekey);
    memset(erep, 0x5c, sizeof erep);
    const size_t lens[] = {0, 1, 255, 256, 65535, 65536, sizeof body};
    const uint64_t nums[] = {1, 127, 128, 255, 256, 65535, 65536, 0xffffffffu, 0x100000000u, UINT64_MAX};
    const size_t ulens[] = {0, 31, 32, 255 < CRDTDB_ID_MAX ? 255 : CRDTDB_ID_MAX};
    char user[CRDTDB_ID_MAX + 1], to[40];
    memset(to, 't', sizeof to - 1);
    to[sizeof to - 1] = 0;
    crdtdb_buf got = CRDTDB_BUF_INIT, want = CRDTDB_BUF_INIT;
    for (size_t u = 0; u < sizeof ulens / sizeof *ulens; u++) {
        memset(user, 'u', ulens[u]);
        user[ulens[u]] = 0;
        for (size_t i = 0; i < sizeof nums / sizeof *nums; i++)
            for (size_t j = 0; j < sizeof lens / sizeof *lens; j++) {
                crdtdb_presence p = {ekey, user, erep, nums[i], j ? body : NULL, j ? lens[j] : 0};
                got.len = 0;
                ck_assert_int_eq(crdtdb_presence_encode(&p, &got), 0);
                ref_frame(&want, 13, ekey, user, erep, nums[i], NULL, p.state, p.state_len);
                ck_assert_uint_eq(got.len, want.len);
                ck_assert(memcmp(got.data, want.data, got.len) == 0);
                for (int t = 0; t < 3; t++) { /* to: none, fixstr, str 8 */
                    const char *dest = t == 0 ? NULL : t == 1 ? "bo" : to;
                    crdtdb_message m = {ekey, user, erep, nums[i], dest, body, lens[j]};
                    got.len = 3; /* appended after what the frame holds */
                    ck_assert_int_eq(crdtdb_message_encode(&m, &got), 0);
                    ref_frame(&want, 15, ekey, user, erep, nums[i], dest, body, lens[j]);
                    ck_assert_uint_eq(got.len, 3 + want.len);
                    ck_assert(memcmp(got.data + 3, want.data, want.len) == 0);
                }
            }
    }
    /* refusals leave the frame as it was */
    crdtdb_presence bad = {ekey, NULL, erep, 1, NULL, 0};
    got.len = 5;
    ck_assert_int_eq(crdtdb_presence_encode(&bad, &got), CRDTDB_EINVAL);
    ck_assert_uint_eq(got.len, 5);
    crdtdb_buf_free(&got);
    crdtdb_buf_free(&want);
}
END_TEST

/* ------------------------------------- a receiver that stops reading */

/* The server's end of raw client r: the socket of this process whose peer
 * is r's own address (the server runs in the test's process). */
static int server_end(const tu_raw *r)
{
    struct sockaddr_storage mine, peer;
    socklen_t ml = sizeof mine;
    ck_assert_int_eq(getsockname(r->fd, (struct sockaddr *)&mine, &ml), 0);
    DIR *d = opendir("/proc/self/fd");
    ck_assert_ptr_nonnull(d);
    int found = -1;
    for (struct dirent *e; found < 0 && (e = readdir(d));) {
        int fd = atoi(e->d_name);
        socklen_t pl = sizeof peer;
        if (e->d_name[0] == '.' || fd == r->fd || fd == dirfd(d) ||
            getpeername(fd, (struct sockaddr *)&peer, &pl) != 0)
            continue;
        if (pl == ml && memcmp(&peer, &mine, ml) == 0)
            found = fd;
    }
    closedir(d);
    ck_assert_int_ge(found, 0);
    return found;
}

/* What a raw receiver read, and the newest state of each sender in it. */
typedef struct stream {
    tu_raw *r;
    uint8_t *in;
    size_t len, cap;
    size_t ws_at;          /* the next WebSocket frame */
    uint8_t *sess;         /* the messages' payloads, in order */
    size_t sess_len;
    size_t sess_at;        /* the next session frame */
    int frames13;
    uint8_t keys[2][CRDTDB_PRESENCE_KEY_BYTES];
    char last[2][8];       /* each sender's newest "kNNNN" */
    int nkeys;
} stream;

/* A server's WebSocket frame at h, of which avail bytes are here: its
 * opcode and payload length, and the header's length; 0 while the header
 * or the payload is not all here.  A server never masks. */
static size_t ws_frame(const uint8_t *h, size_t avail, uint8_t *op, size_t *len)
{
    if (avail < 2)
        return 0;
    ck_assert_msg(!(h[1] & 0x80), "a server's frame is not masked");
    size_t hl = 2, n = h[1] & 0x7f;
    if (n == 126)
        hl = 4;
    else if (n == 127)
        hl = 10;
    if (avail < hl)
        return 0;
    if (n >= 126) {
        n = 0;
        for (size_t i = 2; i < hl; i++)
            n = n << 8 | h[i];
    }
    if (avail - hl < n)
        return 0;
    *op = h[0] & 0x0f;
    *len = n;
    return hl;
}

/* Reads what came and parses it: every WebSocket frame a whole binary
 * message from a server (unmasked), every session frame whole. */
static int stream_has(void *arg)
{
    stream *s = arg;
    for (;;) {
        if (s->cap - s->len < 65536) {
            s->cap = s->cap * 2 + 65536;
            s->in = realloc(s->in, s->cap);
            ck_assert_ptr_nonnull(s->in);
        }
        ssize_t k = read(s->r->fd, s->in + s->len, s->cap - s->len);
        if (k <= 0)
            break;
        s->len += (size_t)k;
    }
    while (s->len - s->ws_at >= 2) {
        const uint8_t *h = s->in + s->ws_at;
        ck_assert_msg(h[0] == 0x82, "frame at %zu begins %02x", s->ws_at, h[0]);
        uint8_t op;
        size_t n, hl = ws_frame(h, s->len - s->ws_at, &op, &n);
        if (!hl)
            break;
        s->sess = realloc(s->sess, s->sess_len + n + 1);
        ck_assert_ptr_nonnull(s->sess);
        memcpy(s->sess + s->sess_len, h + hl, n);
        s->sess_len += n;
        s->ws_at += hl + n;
    }
    while (s->sess_len - s->sess_at >= 4) {
        const uint8_t *f = s->sess + s->sess_at;
        size_t n = (size_t)f[0] << 24 | (size_t)f[1] << 16 | (size_t)f[2] << 8 | f[3];
        if (s->sess_len - s->sess_at < 4 + n)
            break;
        msgpack_unpacked u;
        msgpack_unpacked_init(&u);
        ck_assert_int_eq(msgpack_unpack_next(&u, (const char *)f + 4, n, NULL),
                         MSGPACK_UNPACK_SUCCESS);
        const msgpack_object *o = &u.data;
        ck_assert_int_eq(o->type, MSGPACK_OBJECT_ARRAY);
        const msgpack_object *a = o->via.array.ptr;
        if (a[0].via.u64 == 13 && o->via.array.size >= 6 && a[5].type == MSGPACK_OBJECT_BIN) {
            s->frames13++;
            ck_assert_int_eq(a[1].type, MSGPACK_OBJECT_BIN);
            int k = 0;
            while (k < s->nkeys && memcmp(s->keys[k], a[1].via.bin.ptr, sizeof s->keys[k]))
                k++;
            if (k == s->nkeys) {
                ck_assert_int_lt(s->nkeys, 2);
                memcpy(s->keys[s->nkeys++], a[1].via.bin.ptr, sizeof s->keys[k]);
            }
            const char *st = a[5].via.bin.ptr, *m = memmem(st, a[5].via.bin.size, "k", 1);
            ck_assert_ptr_nonnull(m);
            memcpy(s->last[k], m, 5);
            s->last[k][5] = 0;
        }
        msgpack_unpacked_destroy(&u);
        s->sess_at += 4 + n;
    }
    return s->nkeys == 2 && strcmp(s->last[0], "k0299") == 0 && strcmp(s->last[1], "k0299") == 0;
}

/* A receiver that stops reading while two players send fast: the
 * server's fan-out meets its full socket (its send buffer made small, so
 * sends go short and then none), keeps the rest, and once it reads again
 * everything arrives whole, in order, up to each player's newest state. */
START_TEST(a_receiver_that_stops_reading_gets_every_frame_whole)
{
    crdtdb_server_options o;
    crdtdb_server_options_init(&o);
    o.presence_hz = 1000;
    srv1 = server_opts(&S1, url1, sizeof url1, &o);
    ca = client(&A, url1, &la, NULL);
    cb = client(&B, url1, &lb, NULL);
    wait_ready();
    static tu_raw r;
    tu_raw_open_rcvbuf(&r, crdtdb_server_port(srv1), "/v1/db/game", NULL, 4096);
    ck_assert(spin(tu_raw_answered, &r, 10000));
    ck_assert_ptr_nonnull(strstr(r.in, " 101 "));
    int small = 4096;
    ck_assert_int_eq(setsockopt(server_end(&r), SOL_SOCKET, SO_SNDBUF, &small, sizeof small), 0);
    crdtdb_buf hello = CRDTDB_BUF_INIT;
    tu_ws_hello(C.db, &hello);
    tu_raw_send(&NET, &r, hello.data, hello.len);
    crdtdb_buf_free(&hello);
    static const uint8_t since0[7] = {0, 0, 0, 3, 0x92, 0x02, 0x00}; /* [SINCE, 0] */
    tu_ws_send(&NET, &r, since0, sizeof since0);
    spin(NULL, NULL, 300); /* joined; nothing read from here on */
    static char json[1100];
    for (int i = 0; i < 300; i++) {
        int n = snprintf(json, sizeof json, "{\"p\":\"");
        for (int j = 0; j < 200; j++)
            n += snprintf(json + n, sizeof json - (size_t)n, "k%04d", i);
        snprintf(json + n, sizeof json - (size_t)n, "\"}");
        set(ca, json);
        set(cb, json);
        spin(NULL, NULL, 3);
    }
    ck_assert(crdtdb_client_connected(ca) && crdtdb_client_connected(cb));
    stream st = {.r = &r};
    int ok = spin(stream_has, &st, 20000);
    ck_assert_msg(ok, "got %zu bytes, %d presence frames, %d senders, newest %s / %s", st.len,
                  st.frames13, st.nkeys, st.last[0], st.last[1]);
    ck_assert_int_gt(st.frames13, 10);
    ck_assert_uint_eq(st.ws_at, st.len); /* nothing after the last frame */
    free(st.in);
    free(st.sess);
    close(r.fd);
}
END_TEST

/* ------------------------------------------------- a ring that fails */

/* This suite links with -Wl,--wrap for io_uring_submit and
 * __io_uring_get_cqe (CMakeLists.txt): armed, the next submit goes to the
 * kernel as usual, then its results are thrown away and the wait for them
 * fails, as a ring that breaks after taking the sends would.  Unarmed,
 * both are liburing's own.  Test state: the suite runs one test at a
 * time. */
int __real_io_uring_submit(struct io_uring *ring);
int __real___io_uring_get_cqe(struct io_uring *ring, struct io_uring_cqe **cqe_ptr,
                              unsigned submit, unsigned wait_nr, sigset_t *sigmask);
int __wrap_io_uring_submit(struct io_uring *ring);
int __wrap___io_uring_get_cqe(struct io_uring *ring, struct io_uring_cqe **cqe_ptr,
                              unsigned submit, unsigned wait_nr, sigset_t *sigmask);
static int ring_submits, ring_armed, ring_lose, ring_failed;

int __wrap_io_uring_submit(struct io_uring *ring)
{
    int r = __real_io_uring_submit(ring);
    ring_submits++;
    if (ring_armed && r > 0) {
        ring_armed = 0;
        io_uring_cq_advance(ring, io_uring_cq_ready(ring)); /* results lost */
        ring_lose = 1;
    }
    return r;
}

int __wrap___io_uring_get_cqe(struct io_uring *ring, struct io_uring_cqe **cqe_ptr,
                              unsigned submit, unsigned wait_nr, sigset_t *sigmask)
{
    if (ring_lose) {
        ring_lose = 0;
        ring_failed++;
        return -EIO;
    }
    return __real___io_uring_get_cqe(ring, cqe_ptr, submit, wait_nr, sigmask);
}

static int readied_twice(void *arg)
{
    (void)arg;
    return lb.ready >= 2 && lc.ready >= 2 && crdtdb_client_connected(cb) &&
           crdtdb_client_connected(cc);
}

/* The sends the kernel took before the ring broke may or may not have
 * gone (CRDTDB__SEND_UNKNOWN): their connections are cut, never written
 * again (a resend could repeat bytes), and the clients come back and get
 * the current states at once; the sender stays; later changes go one
 * sendmsg(2) each. */
START_TEST(a_ring_that_breaks_cuts_the_sends_it_took)
{
    srv1 = server(&S1, url1, sizeof url1);
    three_clients();
    ring_submits = ring_armed = ring_lose = ring_failed = 0;
    set(ca, "{\"x\":1}");
    expect(&lb, "{\"x\":1}", 1);
    expect(&lc, "{\"x\":1}", 1);
    if (!ring_submits) { /* this kernel gives the server no io_uring */
        ck_assert_msg(!getenv("CRDTDB_REQUIRE_URING"), "no io_uring (CRDTDB_REQUIRE_URING)");
        return;
    }
    ck_assert_int_eq(la.ready, 1);
    ck_assert_int_eq(lb.ready, 1);
    ring_armed = 1;
    set(ca, "{\"x\":2}");
    ck_assert_msg(spin(readied_twice, NULL, 10000), "ready: b %d, c %d", lb.ready, lc.ready);
    ck_assert_int_eq(ring_failed, 1);
    expect(&lb, "{\"x\":2}", 1);
    expect(&lc, "{\"x\":2}", 1);
    int submits = ring_submits;
    set(ca, "{\"x\":3}");
    expect(&lb, "{\"x\":3}", 1);
    expect(&lc, "{\"x\":3}", 1);
    ck_assert_int_eq(ring_submits, submits); /* the ring is closed */
    ck_assert_int_eq(la.ready, 1);           /* the sender was not cut */
    ck_assert_int_eq(lb.ready, 2);
    ck_assert_int_eq(lc.ready, 2);
    ck_assert_int_eq(la.ncodes + lb.ncodes + lc.ncodes, 0);
}
END_TEST

/* The frames a server sent r after its HTTP answer: *n of them, *close_at
 * the index of the first close (-1: none).  0 before the HTTP answer (a
 * frame cut at the end of what was read counts as not there). */
static int raw_frames(const tu_raw *r, int *n, int *close_at)
{
    const char *h = strstr(r->in, "\r\n\r\n");
    if (!h)
        return 0;
    size_t i = (size_t)(h - r->in) + 4, hl, len;
    uint8_t op;
    *n = 0;
    *close_at = -1;
    while ((hl = ws_frame((const uint8_t *)r->in + i, r->len - i, &op, &len))) {
        if (op == 8 && *close_at < 0)
            *close_at = *n;
        (*n)++;
        i += hl + len;
    }
    return 1;
}

/* RFC 6455 5.5.1: after a close, no more data.  A receiver that closes
 * while presence changes keep coming gets the server's close and nothing
 * after it, though the hub's batch writes to the socket past lws: lws
 * answers a peer's close and ends the connection at once. */
START_TEST(a_receiver_that_closes_gets_nothing_after_the_close)
{
    srv1 = server(&S1, url1, sizeof url1);
    ca = client(&A, url1, &la, NULL);
    wait_ready();
    tu_raw r;
    raw_join(&r, crdtdb_server_port(srv1), &Z1);
    set(ca, "{\"x\":0}");
    int n = 0, close_at = -1;
    for (int t = 0; t < 100 && n < 2; t++) { /* hello, the state */
        spin(NULL, NULL, 20);
        tu_raw_read(&r);
        ck_assert(raw_frames(&r, &n, &close_at));
    }
    ck_assert_int_ge(n, 2);
    /* a masked close, status 1000 (mask 0: the payload as it is) */
    static const uint8_t bye[] = {0x88, 0x82, 0, 0, 0, 0, 0x03, 0xe8};
    tu_raw_send(&NET, &r, bye, sizeof bye);
    char st[32];
    for (int k = 1; k <= 12; k++) { /* changes every ~40 ms (under presence_hz) */
        snprintf(st, sizeof st, "{\"x\":%d}", k);
        set(ca, st);
        spin(NULL, NULL, 40);
        tu_raw_read(&r);
    }
    /* the server ends the connection after its close: everything it sent
     * is in once the stream ends (a fixed 200 ms could miss the close
     * itself on a loaded machine) */
    spin(tu_raw_closed, &r, 10000);
    tu_raw_read(&r);
    ck_assert(raw_frames(&r, &n, &close_at));
    ck_assert_msg(close_at >= 0, "no close in %d frames", n);
    ck_assert_msg(close_at == n - 1, "%d frames after the close", n - 1 - close_at);
    close(r.fd);
}
END_TEST

static Suite *presence_suite(void)
{
    Suite *s = suite_create("presence");
    TCase *tc = tcase_create("presence");
    tcase_set_timeout(tc, 120);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, join_update_leave_reach_every_other_session);
    tcase_add_test(tc, newcomer_gets_everyone_at_once);
    tcase_add_test(tc, killed_cli_leaves_within_seconds);
    tcase_add_test(tc, nothing_reaches_lmdb);
    tcase_add_test(tc, rate_limit_coalesces_to_the_latest);
    tcase_add_test(tc, unauthorized_users_see_and_show_nothing);
    tcase_add_test(tc, peered_servers_relay_both_ways_once);
    tcase_add_test(tc, oversized_and_non_map_states_get_notices);
    tcase_add_test(tc, silent_peer_leaves_after_the_pong_timeout);
    tcase_add_test(tc, messages_to_everyone_to_one_user_never_back);
    tcase_add_test(tc, max_presence_members_refuses_a_newcomer);
    tcase_add_test(tc, presence_options_are_bounded);
    tcase_add_test(tc, libuv_loop_runs_the_presence_timers);
    tcase_add_test(tc, members_policy_relays_through_a_named_peer);
    tcase_add_test(tc, members_policy_refuses_a_relay_not_named);
    tcase_add_test(tc, members_policy_publishes_for_members_never_relays);
    tcase_add_test(tc, relayed_entries_keep_the_member_limit);
    tcase_add_test(tc, relayed_messages_keep_their_senders_rate);
    tcase_add_test(tc, a_lost_link_leaves_only_for_local_clients);
    tcase_add_test(tc, a_client_cannot_relay_to_spoof_or_read_messages);
    tcase_add_test(tc, closing_with_armed_timers);
    tcase_add_test(tc, encoders_write_msgpack_c_forms);
    tcase_add_test(tc, a_receiver_that_stops_reading_gets_every_frame_whole);
    tcase_add_test(tc, a_ring_that_breaks_cuts_the_sends_it_took);
    tcase_add_test(tc, a_receiver_that_closes_gets_nothing_after_the_close);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    lws_set_log_level(LLL_ERR, NULL);
    return tu_run(presence_suite());
}
