/* Server-to-server peering and the libuv event loop: real servers on
 * 127.0.0.1 (ephemeral ports), real clients. */
#include <arpa/inet.h>
#include <check.h>
#include <fcntl.h>
#include <libwebsockets.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "crdt/buf.h"
#include "tests/replica.h"
#include "tests/testutil.h"
#include "tests/wsutil.h"

static uint64_t now = 1700000000000ull;
static replica S1, S2, A, B; /* two server envs; A a client of S1, B of S2 */
static crdtdb_server *srv1, *srv2;
static crdtdb_client *ca, *cb;
static char url1[64], url2[64];
/* What spin runs: both servers and both clients above. */
static const tu_net NET = {{&srv1, &srv2}, {&ca, &cb}, 1};

static void log_line(void *ctx, const char *line)
{
    fprintf(stderr, "%s: %s\n", (const char *)ctx, line);
}

static crdtdb_server *server(replica *r, const char *name, char *url, size_t n, void *loop)
{
    crdtdb_server_options o;
    crdtdb_server_options_init(&o);
    o.collections = COLLS;
    o.ncoll = 2;
    o.log = log_line;
    o.log_ctx = (void *)name;
    o.uv_loop = loop;
    crdtdb_server *s;
    ck_assert_int_eq(crdtdb_server_open(r->env, &o, &s), 0);
    snprintf(url, n, "ws://127.0.0.1:%d", crdtdb_server_port(s));
    return s;
}

static crdtdb_client_options link_to(const char *url)
{
    crdtdb_client_options o;
    crdtdb_client_options_init(&o);
    o.url = url;
    o.backoff_min_ms = 10;
    o.backoff_max_ms = 100;
    return o;
}

static crdtdb_client *client(replica *r, const char *url, void *loop)
{
    crdtdb_client_options o = link_to(url);
    o.uv_loop = loop;
    crdtdb_client *c;
    ck_assert_int_eq(crdtdb_client_open(r->db, &o, &c), 0);
    return c;
}

static void setup(void)
{
    replica_init(&S1, &now, "game");
    replica_init(&S2, &now, "game");
    replica_init(&A, &now, "game");
    replica_init(&B, &now, "game");
    srv1 = srv2 = NULL;
    ca = cb = NULL;
}

static void teardown(void)
{
    crdtdb_client_close(ca);
    crdtdb_client_close(cb);
    crdtdb_server_close(srv1);
    crdtdb_server_close(srv2);
    replica_free(&A);
    replica_free(&B);
    replica_free(&S1);
    replica_free(&S2);
}

/* Runs everything that exists until cond holds or ms pass. */
static int spin(tu_cond cond, void *arg, int ms) { return tu_spin(&NET, cond, arg, ms); }

/* Spins until (coll, id) of db reads as json (NULL: absent), 10 s at most. */
static void expect(crdtdb_db *db, const char *coll, const char *id, const char *json)
{
    tu_expect(&NET, db, coll, id, json);
}

START_TEST(peered_servers_carry_writes_between_their_clients)
{
    srv1 = server(&S1, "s1", url1, sizeof url1, NULL);
    srv2 = server(&S2, "s2", url2, sizeof url2, NULL);
    crdtdb_client_options l = link_to(url1);
    ck_assert_int_eq(crdtdb_server_peer(srv2, &l, NULL, 0), 0); /* every database */
    ca = client(&A, url1, NULL);
    cb = client(&B, url2, NULL);
    put(&A, "add", "players", "ann", "{\"hp\":10}");
    expect(B.db, "players", "ann", "{\"hp\":10}");
    put(&B, "update", "players", "ann", "{\"hp\":9}");
    expect(A.db, "players", "ann", "{\"hp\":9}");
    put(&B, "add", "moves", "m1", "{\"to\":\"e4\"}");
    expect(S1.db, "moves", "m1", "{\"to\":\"e4\"}"); /* the first server stores it */
    put(&A, "remove", "players", "ann", NULL);
    expect(B.db, "players", "ann", NULL);
    /* the first server goes away: both sides keep writing, then converge */
    crdtdb_server_close(srv1);
    srv1 = NULL;
    put(&B, "add", "players", "bob", "{\"hp\":7}");
    put(&A, "add", "players", "cy", "{\"hp\":3}");
    spin(NULL, NULL, 200);
    srv1 = server(&S1, "s1", url1, sizeof url1, NULL); /* a new port: relink */
    crdtdb_client_close(ca);
    ca = client(&A, url1, NULL);
    crdtdb_server_close(srv2);
    srv2 = server(&S2, "s2", url2, sizeof url2, NULL);
    l = link_to(url1);
    ck_assert_int_eq(crdtdb_server_peer(srv2, &l, NULL, 0), 0);
    crdtdb_client_close(cb);
    cb = client(&B, url2, NULL);
    expect(A.db, "players", "bob", "{\"hp\":7}");
    expect(B.db, "players", "cy", "{\"hp\":3}");
    char *a = dump(&A), *b = dump(&B);
    ck_assert_str_eq(a, b);
    free(a);
    free(b);
}
END_TEST

START_TEST(peering_only_listed_databases)
{
    crdtdb_db *o1, *o2;
    ck_assert_int_eq(crdtdb_db_create(S1.env, "other", COLLS, 2, &o1), 0);
    ck_assert_int_eq(crdtdb_db_create(S2.env, "other", COLLS, 2, &o2), 0);
    srv1 = server(&S1, "s1", url1, sizeof url1, NULL);
    srv2 = server(&S2, "s2", url2, sizeof url2, NULL);
    const char *only[] = {"game"};
    crdtdb_client_options l = link_to(url1);
    ck_assert_int_eq(crdtdb_server_peer(srv2, &l, only, 1), 0);
    ck_assert_int_eq(crdtdb_server_peer(srv2, NULL, only, 1), CRDTDB_EINVAL);
    put(&S2, "add", "players", "ann", "{\"hp\":1}");
    uint8_t v[] = {0x81, 0xa1, 'x', 0x01}; /* {"x":1} */
    ck_assert_int_eq(crdtdb_db_add(o2, NULL, "players", "zed", v, sizeof v), 0);
    expect(S1.db, "players", "ann", "{\"hp\":1}");
    spin(NULL, NULL, 300);
    char *g = tu_get(o1, "players", "zed"); /* "other" is not peered */
    ck_assert_ptr_null(g);
    crdtdb_db_close(o1);
    crdtdb_db_close(o2);
}
END_TEST

/* crdtdb_server_unpeer: the links to that server close at once, so writes
 * stop crossing; peering again (and relinking, however often) brings
 * them back. */
START_TEST(unpeered_server_carries_writes_no_more)
{
    srv1 = server(&S1, "s1", url1, sizeof url1, NULL);
    srv2 = server(&S2, "s2", url2, sizeof url2, NULL);
    crdtdb_client_options l = link_to(url1);
    ck_assert_int_eq(crdtdb_server_peer(srv2, &l, NULL, 0), 0);
    ca = client(&A, url1, NULL);
    cb = client(&B, url2, NULL);
    put(&A, "add", "players", "ann", "{\"hp\":1}");
    expect(B.db, "players", "ann", "{\"hp\":1}");
    ck_assert_int_eq(crdtdb_server_unpeer(srv2, url1), 1);
    ck_assert_int_eq(crdtdb_server_unpeer(srv2, url1), 0); /* not peered now */
    ck_assert_int_eq(crdtdb_server_unpeer(srv2, NULL), CRDTDB_EINVAL);
    ck_assert_int_eq(crdtdb_server_relink(srv2, NULL, 0), 0); /* no peer: no link */
    put(&A, "add", "players", "bob", "{\"hp\":2}");
    spin(NULL, NULL, 400);
    char *g = tu_get(B.db, "players", "bob");
    ck_assert_ptr_null(g); /* nothing links the two servers */
    ck_assert_int_eq(crdtdb_server_peer(srv2, &l, NULL, 0), 0);
    const char *ids[] = {"game"};
    ck_assert_int_eq(crdtdb_server_relink(srv2, ids, 1), 0);
    ck_assert_int_eq(crdtdb_server_relink(srv2, NULL, 0), 0);
    ck_assert_int_eq(crdtdb_server_relink(srv2, NULL, 1), CRDTDB_EINVAL);
    expect(B.db, "players", "bob", "{\"hp\":2}");
    put(&B, "update", "players", "bob", "{\"hp\":3}");
    expect(A.db, "players", "bob", "{\"hp\":3}");
}
END_TEST

static crdtdb_buf idle_log; /* what s2 logged in the idle test */

static void log_into(void *ctx, const char *line)
{
    log_line("s2", line);
    (void)crdtdb__buf_append(ctx, line, strlen(line));
    (void)crdtdb__buf_append(ctx, "\n", 1);
}

/* s2, on S2, closing idle databases after 1 s, logging into idle_log. */
static crdtdb_server *idle_server(void)
{
    crdtdb_server_options o;
    crdtdb_server_options_init(&o);
    o.collections = COLLS;
    o.ncoll = 2;
    o.idle_secs = 1;
    o.log = log_into;
    o.log_ctx = &idle_log;
    crdtdb_server *s;
    ck_assert_int_eq(crdtdb_server_open(S2.env, &o, &s), 0);
    snprintf(url2, sizeof url2, "ws://127.0.0.1:%d", crdtdb_server_port(s));
    return s;
}

/* A database with no client here (only a peer's link), all in sync,
 * closes its links after idle_secs; writes still arrive over the peer's
 * link, and a client arriving links it again. */
START_TEST(idle_database_closes_its_links_and_a_client_brings_them_back)
{
    srv1 = server(&S1, "s1", url1, sizeof url1, NULL);
    srv2 = idle_server();
    crdtdb_client_options l1 = link_to(url1), l2 = link_to(url2);
    ck_assert_int_eq(crdtdb_server_peer(srv2, &l1, NULL, 0), 0); /* both ways, */
    ck_assert_int_eq(crdtdb_server_peer(srv1, &l2, NULL, 0), 0); /* as a cluster */
    ca = client(&A, url1, NULL);
    cb = client(&B, url2, NULL);
    put(&A, "add", "players", "ann", "{\"hp\":1}");
    expect(B.db, "players", "ann", "{\"hp\":1}");
    crdtdb_client_close(cb);
    cb = NULL;
    /* s2: no client, s1's link and its own in sync.  The idle look runs
     * every HANDOFF_MS (1 s): the first look after the client went marks
     * it quiet, the first one idle_secs later closes the links, so up to
     * 2 s and more after the close (2.5 s of fixed wait was short) */
    tu_line idled = {&idle_log, "db 'game': idle for 1 s"};
    spin(tu_logged, &idled, 10000);
    ck_assert_msg(tu_log_count(&idle_log, "db 'game': idle for 1 s") == 1, "not idle: %.*s",
                  (int)idle_log.len, (const char *)idle_log.data);
    put(&A, "add", "players", "bob", "{\"hp\":2}");
    expect(S2.db, "players", "bob", "{\"hp\":2}"); /* over s1's link to s2 */
    cb = client(&B, url2, NULL); /* relinks s2 to s1 */
    put(&B, "add", "players", "cy", "{\"hp\":3}");
    expect(A.db, "players", "cy", "{\"hp\":3}");
    expect(B.db, "players", "bob", "{\"hp\":2}");
    /* s1 keeps its client: it never idles */
    ck_assert_int_eq(tu_log_count(&idle_log, "idle for"), 1);
    crdtdb_buf_free(&idle_log);
}
END_TEST

/* A one-way --peer standby (its peer does not link back) keeps its link
 * however idle: later writes reach it only through that link. */
START_TEST(one_way_standby_keeps_its_link_when_idle)
{
    srv1 = server(&S1, "s1", url1, sizeof url1, NULL);
    srv2 = idle_server();
    crdtdb_client_options l1 = link_to(url1);
    ck_assert_int_eq(crdtdb_server_peer(srv2, &l1, NULL, 0), 0); /* one way */
    cb = client(&B, url2, NULL);
    put(&B, "add", "players", "ann", "{\"hp\":1}");
    expect(S1.db, "players", "ann", "{\"hp\":1}");
    crdtdb_client_close(cb);
    cb = NULL;
    spin(NULL, NULL, 3500); /* two idle looks and more (see above) */
    ck_assert_msg(tu_log_count(&idle_log, "idle for") == 0, "a one-way link closed: %.*s",
                  (int)idle_log.len, (const char *)idle_log.data);
    ca = client(&A, url1, NULL);
    put(&A, "add", "players", "bob", "{\"hp\":2}");
    expect(S2.db, "players", "bob", "{\"hp\":2}"); /* the standby still follows */
    crdtdb_buf_free(&idle_log);
}
END_TEST


static int drained(void *arg) { return crdtdb_server_drained(arg); }

/* A drain (SIGTERM) waits for the peer links: a write this server took
 * just before it reaches the peer before the server says it is done. */
START_TEST(drain_waits_until_the_links_pass_writes_on)
{
    srv1 = server(&S1, "s1", url1, sizeof url1, NULL);
    srv2 = server(&S2, "s2", url2, sizeof url2, NULL);
    crdtdb_client_options l = link_to(url1);
    ck_assert_int_eq(crdtdb_server_peer(srv2, &l, NULL, 0), 0);
    put(&S1, "add", "players", "ann", "{\"hp\":1}");
    expect(S2.db, "players", "ann", "{\"hp\":1}"); /* the link is up */
    put(&S2, "add", "players", "late", "{\"hp\":2}"); /* on srv2 only */
    ck_assert_int_eq(crdtdb_server_drain(srv2), 0);
    ck_assert_int_eq(spin(drained, srv2, 10000), 1);
    char *g = tu_get(S1.db, "players", "late");
    ck_assert_msg(g != NULL, "drained before its link passed the write on");
    free(g);
}
END_TEST

/* The handoff (crdtdb_server_options.keep): a server drops a copy it does
 * not keep only once every peer it links holds all of it. */
static int keep_none(void *ctx, const char *db_id)
{
    (void)ctx;
    (void)db_id;
    return 0;
}

static int has_id(void *ctx, const char *id)
{
    if (strcmp(id, "game") == 0)
        *(int *)ctx = 1;
    return 0;
}

/* A server on r that keeps no copy (a cluster's non-owner), linked to the
 * server at url1; its url into url (n bytes) when not NULL; its log into
 * `log` (tu_log_line) when not NULL. */
static crdtdb_server *non_owner(replica *r, char *url, size_t n, crdtdb_buf *log)
{
    crdtdb_server_options o;
    crdtdb_server_options_init(&o);
    o.collections = COLLS;
    o.ncoll = 2;
    o.log = log ? tu_log_line : log_line;
    o.log_ctx = log ? (void *)log : (void *)"non-owner";
    o.keep = keep_none; /* it owns nothing: it hands every copy off */
    crdtdb_server *s;
    ck_assert_int_eq(crdtdb_server_open(r->env, &o, &s), 0);
    if (url)
        snprintf(url, n, "ws://127.0.0.1:%d", crdtdb_server_port(s));
    crdtdb_client_options l = link_to(url1);
    ck_assert_int_eq(crdtdb_server_peer(s, &l, NULL, 0), 0);
    return s;
}

/* A tu_cond: replica arg's environment no longer holds "game". */
static int game_dropped(void *arg)
{
    replica *r = arg;
    int have = 0;
    ck_assert_int_eq(crdtdb_db_list(r->env, has_id, &have), 0);
    return !have;
}

/* An owner that grants the link only server-to-client never takes the
 * non-owner's writes: a receive-only link is "synced" once it holds what
 * the owner has, but the owner holds nothing of the copy's own writes, so
 * the copy must stay. */
START_TEST(handoff_waits_for_an_owner_that_takes_the_writes)
{
    put(&S2, "add", "players", "ann", "{\"hp\":1}"); /* only S2 holds it */
    crdtdb_db_close(S2.db); /* the server's handle is the only one: it may drop */
    S2.db = NULL;
    crdtdb_server_options o;
    crdtdb_server_options_init(&o);
    o.collections = COLLS;
    o.ncoll = 2;
    o.log = log_line;
    o.log_ctx = (void *)"s1";
    o.mode = CRDTDB_SYNC_SERVER_TO_CLIENT; /* the owner only serves */
    ck_assert_int_eq(crdtdb_server_open(S1.env, &o, &srv1), 0);
    snprintf(url1, sizeof url1, "ws://127.0.0.1:%d", crdtdb_server_port(srv1));
    srv2 = non_owner(&S2, NULL, 0, NULL);
    int dropped = spin(game_dropped, &S2, 4000); /* the handoff looks once a second */
    char *g = tu_get(S1.db, "players", "ann");
    ck_assert_msg(!dropped || g, "the copy was dropped, and its write is nowhere");
    free(g);
}
END_TEST

/* The lines a handoff logs: its LEAVE sent, and left unanswered (the
 * wait is over, and the copy is kept). */
static tu_line leaving = {&idle_log, "it leaves"};
static tu_line unanswered = {&idle_log, "did not answer its LEAVE"};

/* A non-owner on S2 handing off its copy of "game" to the owner srv1, up
 * to the LEAVE it sends (logged into idle_log). */
static void handoff_until_leave(void)
{
    put(&S2, "add", "players", "ann", "{\"hp\":1}");
    crdtdb_db_close(S2.db); /* the server's handle is the only one: it may drop */
    S2.db = NULL;
    srv1 = server(&S1, "s1", url1, sizeof url1, NULL);
    srv2 = non_owner(&S2, NULL, 0, &idle_log);
    expect(S1.db, "players", "ann", "{\"hp\":1}");
    /* the LEAVE may have gone in expect's last round (srv1's ack of ann
     * came, then the handoff's tick): a spin now would run srv1 first,
     * which would read it and answer before the test could stop it */
    if (tu_logged(&leaving))
        return;
    ck_assert_msg(spin(tu_logged, &leaving, 10000), "no handoff began: %.*s", (int)idle_log.len,
                  (const char *)idle_log.data);
}

/* The end of a handoff whose LEAVE went unanswered: the copy is kept,
 * said once in the log (`what`: the failure's message otherwise). */
static void kept_unanswered(const char *what)
{
    ck_assert_msg(!game_dropped(&S2), "%s: %.*s", what, (int)idle_log.len,
                  (const char *)idle_log.data);
    ck_assert_int_eq(tu_log_count(&idle_log, unanswered.needle), 1);
    crdtdb_buf_free(&idle_log);
}

/* An owner that never answers the LEAVE (it is stuck, or older than the
 * answer) may not have stored it: after the wait the copy stays, and the
 * handoff tries again later (review of 716c9be, finding 2). */
START_TEST(handoff_keeps_a_copy_whose_owner_does_not_answer_its_leave)
{
    handoff_until_leave();
    /* from here only the non-owner runs: its owner reads nothing more */
    tu_net alone = {.servers = {&srv2}, .slice_ms = NET.slice_ms};
    tu_spin(&alone, tu_logged, &unanswered, 15000); /* LEAVE_WAIT_MS, then a tick */
    kept_unanswered("dropped with its LEAVE unanswered");
}
END_TEST

/* An owner that goes away with the LEAVE unread: the link ends with no
 * answer, which is no "left" either. */
START_TEST(handoff_keeps_a_copy_whose_owner_goes_away_before_answering)
{
    handoff_until_leave();
    crdtdb_server_close(srv1);
    srv1 = NULL;
    spin(tu_logged, &unanswered, 10000);
    kept_unanswered("dropped when its owner went away");
}
END_TEST

/* A copy the handoff cannot drop (a handle on it is open in the process:
 * an embedder's, writing) stays linked: what is written through that
 * handle afterwards still reaches the owner. */
START_TEST(handoff_that_cannot_drop_keeps_the_copy_linked)
{
    put(&S2, "add", "players", "ann", "{\"hp\":1}"); /* S2.db stays open */
    srv1 = server(&S1, "s1", url1, sizeof url1, NULL);
    srv2 = non_owner(&S2, NULL, 0, NULL);
    expect(S1.db, "players", "ann", "{\"hp\":1}");
    spin(NULL, NULL, 2500); /* a handoff tick or two: the drop is refused */
    ck_assert(!game_dropped(&S2));
    put(&S2, "add", "players", "bob", "{\"hp\":2}");
    expect(S1.db, "players", "bob", "{\"hp\":2}");
}
END_TEST

/* A cluster reload: the peer stops owning the database (peer_filter says
 * no).  The link to it closes at the next handoff look, even on a server
 * that keeps its copy; what is written here afterwards no longer goes
 * there. */
static int wanted = 1;
static int want_flag(void *ctx, const char *peer_url, const char *db_id)
{
    (void)ctx;
    (void)peer_url;
    (void)db_id;
    return wanted;
}

static int keep_all(void *ctx, const char *db_id)
{
    (void)ctx;
    (void)db_id;
    return 1;
}

START_TEST(link_to_a_peer_no_longer_an_owner_closes)
{
    wanted = 1;
    srv1 = server(&S1, "s1", url1, sizeof url1, NULL);
    crdtdb_server_options o;
    crdtdb_server_options_init(&o);
    o.collections = COLLS;
    o.ncoll = 2;
    crdtdb_buf log = CRDTDB_BUF_INIT;
    o.log = tu_log_line;
    o.log_ctx = &log;
    o.keep = keep_all;
    o.peer_filter = want_flag;
    ck_assert_int_eq(crdtdb_server_open(S2.env, &o, &srv2), 0);
    crdtdb_client_options l = link_to(url1);
    ck_assert_int_eq(crdtdb_server_peer(srv2, &l, NULL, 0), 0);
    put(&S2, "add", "players", "ann", "{\"hp\":1}");
    expect(S1.db, "players", "ann", "{\"hp\":1}");
    wanted = 0; /* the file re-read: S1 owns it no more */
    tu_line closed = {&log, "no longer an owner: link closed"};
    spin(tu_logged, &closed, 10000); /* at the next handoff look */
    ck_assert_int_eq(tu_log_count(&log, "no longer an owner: link closed"), 1);
    put(&S2, "add", "players", "bob", "{\"hp\":2}");
    spin(NULL, NULL, 500);
    char *g = tu_get(S1.db, "players", "bob");
    ck_assert_ptr_null(g);
    ck_assert(!game_dropped(&S2)); /* kept: S2 keeps it */
    crdtdb_server_close(srv2); /* before the log goes */
    srv2 = NULL;
    crdtdb_buf_free(&log);
    wanted = 1;
}
END_TEST

static int uv_until(uv_loop_t *loop, tu_want *w, int ms)
{
    uint64_t deadline = tu_mono_ms() + (uint64_t)ms;
    while (tu_mono_ms() < deadline) {
        uv_run(loop, UV_RUN_NOWAIT);
        if (tu_holds(w))
            return 1;
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    return 0;
}

START_TEST(libuv_loop_drives_server_and_clients)
{
    uv_loop_t loop;
    ck_assert_int_eq(uv_loop_init(&loop), 0);
    srv1 = server(&S1, "uv", url1, sizeof url1, &loop);
    ck_assert_int_eq(crdtdb_server_run(srv1, 0), CRDTDB_EINVAL); /* the loop runs it */
    ca = client(&A, url1, &loop);
    cb = client(&B, url1, &loop);
    ck_assert_int_eq(crdtdb_client_run(ca, 0), CRDTDB_EINVAL);
    put(&A, "add", "players", "ann", "{\"hp\":10}");
    tu_want w = {B.db, "players", "ann", "{\"hp\":10}"};
    ck_assert(uv_until(&loop, &w, 10000));
    put(&B, "update", "players", "ann", "{\"hp\":4}");
    tu_want w2 = {A.db, "players", "ann", "{\"hp\":4}"};
    ck_assert(uv_until(&loop, &w2, 10000));
    crdtdb_client_close(ca);
    crdtdb_client_close(cb);
    crdtdb_server_close(srv1);
    ca = cb = NULL;
    srv1 = NULL;
    /* the loop runs late (a loaded machine): the context's tail timer is
     * due before lws's close callbacks have run, and must wait for them */
    struct timespec late = {0, 20 * 1000000};
    nanosleep(&late, NULL);
    ck_assert_int_eq(uv_run(&loop, UV_RUN_DEFAULT), 0); /* returns: nothing of ours waits */
    ck_assert_int_eq(uv_loop_close(&loop), 0);
}
END_TEST

/* A listener that takes connections and never answers: a client's
 * connection to it stays in its HTTP upgrade. */
static int mute_listener(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    ck_assert_int_ge(fd, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    ck_assert_int_eq(listen(fd, 4), 0);
    socklen_t n = sizeof sa;
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&sa, &n), 0);
    *port = ntohs(sa.sin_port);
    return fd;
}

START_TEST(libuv_client_closed_in_its_upgrade)
{
    uv_loop_t loop;
    ck_assert_int_eq(uv_loop_init(&loop), 0);
    int port, lfd = mute_listener(&port), afd = -1;
    snprintf(url1, sizeof url1, "ws://127.0.0.1:%d", port);
    ca = client(&A, url1, &loop);
    char req[64] = "";
    ssize_t got = 0;
    uint64_t deadline = tu_mono_ms() + 10000;
    while (got <= 0 && tu_mono_ms() < deadline) { /* its request came: it waits */
        uv_run(&loop, UV_RUN_NOWAIT);
        if (afd < 0)
            afd = accept(lfd, NULL, NULL);
        if (afd >= 0)
            got = recv(afd, req, sizeof req - 1, MSG_DONTWAIT);
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    ck_assert_int_gt(got, 0);
    ck_assert(strncmp(req, "GET ", 4) == 0);
    crdtdb_client_close(ca); /* lws's last callbacks for it come from the loop */
    ca = NULL;
    ck_assert_int_eq(uv_run(&loop, UV_RUN_DEFAULT), 0);
    ck_assert_int_eq(uv_loop_close(&loop), 0);
    close(afd);
    close(lfd);
}
END_TEST

START_TEST(libuv_close_leaves_the_callers_fds_alone)
{
    uv_loop_t loop;
    ck_assert_int_eq(uv_loop_init(&loop), 0);
    srv1 = server(&S1, "uv", url1, sizeof url1, &loop);
    ca = client(&A, url1, &loop);
    tu_want w = {A.db, "players", "ann", "{\"hp\":10}"};
    put(&S1, "add", "players", "ann", "{\"hp\":10}");
    ck_assert(uv_until(&loop, &w, 10000));
    crdtdb_client_close(ca);
    crdtdb_server_close(srv1);
    ca = NULL;
    srv1 = NULL;
    /* the caller opens files before the loop turns: they take the numbers
     * the closes freed, and must stay open */
    int fds[8];
    for (int i = 0; i < 8; i++)
        ck_assert_int_ge(fds[i] = eventfd(0, EFD_CLOEXEC), 0);
    ck_assert_int_eq(uv_run(&loop, UV_RUN_DEFAULT), 0);
    ck_assert_int_eq(uv_loop_close(&loop), 0);
    for (int i = 0; i < 8; i++) {
        ck_assert_msg(fcntl(fds[i], F_GETFD) != -1, "fd %d was closed under the caller", fds[i]);
        close(fds[i]);
    }
}
END_TEST


/* Whether env (the arg) holds players/bob: read through a handle of its own. */
static int s2_has_bob(void *arg) { return tu_env_has(arg, "game", "players", "bob"); }

/* A server that keeps no copy (a cluster's non-owner) serves a client,
 * then hands the database to the server it is linked to and drops it —
 * only once that one holds everything; served again, it goes on with its
 * history (no fork) and pulls the old data back. */
START_TEST(a_copy_not_kept_is_handed_off_once_its_peer_holds_it)
{
    srv1 = server(&S1, "owner", url1, sizeof url1, NULL);
    crdtdb_db_close(S2.db); /* the server's alone: it may drop it */
    S2.db = NULL;
    srv2 = non_owner(&S2, url2, sizeof url2, NULL);
    cb = client(&B, url2, NULL);
    put(&B, "add", "players", "ann", "{\"hp\":1}");
    expect(S1.db, "players", "ann", "{\"hp\":1}");
    /* a client still there keeps the copy */
    spin(NULL, NULL, 1500);
    ck_assert(!game_dropped(&S2));
    /* the owner away: written meanwhile, the copy waits for it */
    crdtdb_server_close(srv1);
    srv1 = NULL;
    put(&B, "add", "players", "bob", "{\"hp\":2}");
    ck_assert(spin(s2_has_bob, S2.env, 10000));
    crdtdb_client_close(cb);
    cb = NULL;
    spin(NULL, NULL, 2500);
    ck_assert_msg(!game_dropped(&S2), "dropped before its peer held bob");
    srv1 = server(&S1, "owner", url1, sizeof url1, NULL); /* a new port */
    crdtdb_server_close(srv2);
    srv2 = non_owner(&S2, url2, sizeof url2, NULL);
    expect(S1.db, "players", "bob", "{\"hp\":2}");
    ck_assert(spin(game_dropped, &S2, 10000));
    /* served again: a new copy, the same history */
    cb = client(&B, url2, NULL);
    put(&B, "add", "players", "cy", "{\"hp\":3}");
    expect(S1.db, "players", "cy", "{\"hp\":3}");
    crdtdb_client_close(cb);
    cb = NULL;
    ck_assert(spin(game_dropped, &S2, 10000));
    char *a = tu_get(S1.db, "players", "ann");
    ck_assert_str_eq(a, "{\"hp\":1}");
    free(a);
}
END_TEST

static int client_synced(void *arg) { return crdtdb_client_synced(*(crdtdb_client **)arg); }

/* A fresh replica entering a copy made again (a non-owner that handed the
 * database off, then served it anew): its write reaches the owner and the
 * client knows it is in sync, every time. */
START_TEST(a_fresh_client_of_a_copy_made_again_syncs)
{
    srv1 = server(&S1, "owner", url1, sizeof url1, NULL);
    crdtdb_db_close(S2.db); /* the server's alone: it may drop it */
    S2.db = NULL;
    srv2 = non_owner(&S2, url2, sizeof url2, NULL);
    for (int round = 0; round < 6; round++) {
        replica C;
        replica_init(&C, &now, "game");
        cb = client(&C, url2, NULL);
        char id[16];
        snprintf(id, sizeof id, "r%d", round);
        put(&C, "add", "players", id, "{\"hp\":1}");
        ck_assert_msg(spin(client_synced, &cb, 10000), "round %d: the client never synced", round);
        expect(S1.db, "players", id, "{\"hp\":1}");
        crdtdb_client_close(cb);
        cb = NULL;
        replica_free(&C);
        ck_assert_msg(spin(game_dropped, &S2, 10000), "round %d: not handed off", round);
    }
}
END_TEST

static Suite *peer_suite(void)
{
    Suite *s = suite_create("peer");
    TCase *tc = tcase_create("peer");
    tcase_set_timeout(tc, 120);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, peered_servers_carry_writes_between_their_clients);
    tcase_add_test(tc, peering_only_listed_databases);
    tcase_add_test(tc, unpeered_server_carries_writes_no_more);
    tcase_add_test(tc, drain_waits_until_the_links_pass_writes_on);
    tcase_add_test(tc, idle_database_closes_its_links_and_a_client_brings_them_back);
    tcase_add_test(tc, one_way_standby_keeps_its_link_when_idle);
    tcase_add_test(tc, a_copy_not_kept_is_handed_off_once_its_peer_holds_it);
    tcase_add_test(tc, a_fresh_client_of_a_copy_made_again_syncs);
    tcase_add_test(tc, handoff_waits_for_an_owner_that_takes_the_writes);
    tcase_add_test(tc, handoff_that_cannot_drop_keeps_the_copy_linked);
    tcase_add_test(tc, handoff_keeps_a_copy_whose_owner_does_not_answer_its_leave);
    tcase_add_test(tc, handoff_keeps_a_copy_whose_owner_goes_away_before_answering);
    tcase_add_test(tc, link_to_a_peer_no_longer_an_owner_closes);
    suite_add_tcase(s, tc);
    /* on the caller's libuv loop (CK_RUN_CASE=libuv runs these alone) */
    TCase *uv = tcase_create("libuv");
    tcase_set_timeout(uv, 120);
    tcase_add_checked_fixture(uv, setup, teardown);
    tcase_add_test(uv, libuv_loop_drives_server_and_clients);
    tcase_add_test(uv, libuv_client_closed_in_its_upgrade);
    tcase_add_test(uv, libuv_close_leaves_the_callers_fds_alone);
    suite_add_tcase(s, uv);
    return s;
}

int main(void)
{
    lws_set_log_level(LLL_ERR, NULL);
    return tu_run(peer_suite());
}
