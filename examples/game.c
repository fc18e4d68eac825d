/*
 * A private match, end to end, in one process: a server that checks tokens
 * and applies the built-in membership policy, an owner and three players,
 * each with their own replica, syncing over WebSocket on 127.0.0.1.
 *
 * The owner creates the match by connecting, invites the players, they
 * accept, the match starts, moves reach everyone, a player drops offline,
 * plays on, and catches up, and a removed player's copy is cleared and
 * their reconnects are refused.  Every step is verified, and waits at most
 * 10 seconds.  Exit status 0 only when all of them held.
 *
 * Usage: example_game            (GAME_VERBOSE=1 also prints the server log)
 */
#define _XOPEN_SOURCE 700
#include <fcntl.h>
#include <ftw.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "crdtdb_ws.h"

#define DB "match-42"
#define STEP_MS 10000 /* the most any step may take */

static const char *const COLLS[] = {"players", "moves", "state", "_members"};
#define NCOLL (sizeof COLLS / sizeof *COLLS)

/* One user's replica: an environment, the match database, a client. */
typedef struct replica {
    const char *name;
    char dir[4200];
    crdtdb_env *env;
    crdtdb_db *db;
    crdtdb_client *cli;
    crdtdb_observer *obs;
    crdtdb_buf token;
    int invalidated;    /* INVALIDATE_ALL events seen */
    int notices;        /* errors the server reported without ending the session */
    char notice[512];   /* the last one */
} replica;

enum { OLGA, P1, P2, P3, EVE, MALLORY, NREP };
static replica R[NREP] = {{.name = "olga"}, {.name = "p1"},  {.name = "p2"},
                          {.name = "p3"},   {.name = "eve"}, {.name = "mallory"}};

static char root[4096];
static crdtdb_env *srv_env;
static crdtdb_server *srv;
static crdtdb_jwt_key *key, *other_key;
static char url[64];
static int verbose;
static int n401;       /* the server's log lines for refused tokens */
static int n403[NREP]; /* and for refused users */

/* ------------------------------------------------------------ helpers */

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static int fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "FAILED: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    return 0;
}

static void step(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    printf("\n");
    fflush(stdout);
    va_end(ap);
}

/* The server's log: counts the refusals the scenario checks. */
static void on_log(void *ctx, const char *line)
{
    (void)ctx;
    if (verbose)
        fprintf(stderr, "server: %s\n", line);
    if (strstr(line, "refused: 401"))
        n401++;
    for (int i = 0; i < NREP; i++) {
        char pat[64];
        snprintf(pat, sizeof pat, "user '%s' refused: 403", R[i].name);
        if (strstr(line, pat))
            n403[i]++;
    }
}

static void on_session(void *ctx, const crdtdb_session_event *ev)
{
    replica *r = ctx;
    if (ev->type == CRDTDB_SESSION_ERROR && ev->remote && ev->error != CRDTDB_EREVOKED &&
        ev->error != CRDTDB_EDENIED) {
        r->notices++;
        snprintf(r->notice, sizeof r->notice, "%s", ev->message ? ev->message : "");
    }
}

static void on_change(void *ctx, const crdtdb_event *ev)
{
    replica *r = ctx;
    if (ev->type == CRDTDB_EVENT_INVALIDATE_ALL)
        r->invalidated++;
}

/* JSON text to msgpack (buf reused). */
static const uint8_t *mp(crdtdb_buf *b, const char *json)
{
    return crdtdb_json_to_msgpack(json, strlen(json), 0, b, NULL, 0) == 0 ? b->data : NULL;
}

/* Whether record coll/id of r is `json` (keys in bytewise order), or absent
 * when json is NULL. */
static int holds(replica *r, const char *coll, const char *id, const char *json)
{
    crdtdb_buf v = CRDTDB_BUF_INIT, j = CRDTDB_BUF_INIT;
    int found = 0, ok = 0;
    if (crdtdb_db_get_by_id(r->db, NULL, coll, id, &v, &found) == 0) {
        if (!found)
            ok = json == NULL;
        else
            ok = json && crdtdb_msgpack_to_json(v.data, v.len, &j) == 0 &&
                 strcmp((const char *)j.data, json) == 0;
    }
    crdtdb_buf_free(&v);
    crdtdb_buf_free(&j);
    return ok;
}

static int count_cb(void *ctx, const char *id, const uint8_t *value, size_t len)
{
    (void)id;
    (void)value;
    (void)len;
    ++*(size_t *)ctx;
    return 0;
}

/* Records in every collection of r; (size_t)-1 when unreadable. */
static size_t records(replica *r)
{
    size_t n = 0;
    for (size_t i = 0; i < NCOLL; i++)
        if (crdtdb_db_query(r->db, NULL, COLLS[i], NULL, 0, count_cb, &n))
            return (size_t)-1;
    return n;
}

/* Every record of r as text (malloc'd), for comparing replicas. */
static int dump_cb(void *ctx, const char *id, const uint8_t *value, size_t len)
{
    crdtdb_buf j = CRDTDB_BUF_INIT;
    int rc = crdtdb_msgpack_to_json(value, len, &j);
    if (rc == 0)
        fprintf(ctx, "%s=%s\n", id, (const char *)j.data);
    crdtdb_buf_free(&j);
    return rc;
}

static char *dump(replica *r)
{
    char *text = NULL;
    size_t size = 0;
    FILE *f = open_memstream(&text, &size);
    int rc = f ? 0 : CRDTDB_ENOMEM;
    for (size_t i = 0; !rc && i < NCOLL; i++) {
        fprintf(f, "[%s]\n", COLLS[i]);
        rc = crdtdb_db_query(r->db, NULL, COLLS[i], NULL, 0, dump_cb, f);
    }
    if (f)
        fclose(f);
    if (rc) {
        free(text);
        return NULL;
    }
    return text;
}

/* Runs the server and every client once. */
static int run_all(void)
{
    if (crdtdb_server_run(srv, 1))
        return fail("the server's event loop failed");
    for (int i = 0; i < NREP; i++)
        if (R[i].cli && crdtdb_client_run(R[i].cli, 0))
            return fail("%s: the client's event loop failed", R[i].name);
    return 1;
}

typedef int (*pred_fn)(void *ctx);

/* Runs everything until p holds; 0 (with a message) after STEP_MS.  *ms
 * (may be NULL) receives the time it took. */
static int wait_for(const char *what, pred_fn p, void *ctx, uint64_t *ms)
{
    uint64_t t0 = mono_ms();
    for (;;) {
        if (p(ctx)) {
            if (ms)
                *ms = mono_ms() - t0;
            return 1;
        }
        if (mono_ms() - t0 > STEP_MS)
            return fail("%s: not within %d s", what, STEP_MS / 1000);
        if (!run_all())
            return 0;
    }
}

/* Runs everything for ms milliseconds; p must hold all along. */
static int hold_for(const char *what, pred_fn p, void *ctx, uint64_t ms)
{
    uint64_t t0 = mono_ms();
    while (mono_ms() - t0 < ms) {
        if (!p(ctx))
            return fail("%s: no longer so after %llu ms", what,
                        (unsigned long long)(mono_ms() - t0));
        if (!run_all())
            return 0;
    }
    return 1;
}

/* "Each of these replicas holds this record" (json NULL: lacks it). */
typedef struct want {
    int who[NREP];
    int n;
    const char *coll, *id, *json;
} want;

static int want_holds(void *ctx)
{
    want *w = ctx;
    for (int i = 0; i < w->n; i++)
        if (!holds(&R[w->who[i]], w->coll, w->id, w->json))
            return 0;
    return 1;
}

static int await(const char *what, want w, uint64_t *ms)
{
    return wait_for(what, want_holds, &w, ms);
}

/* --------------------------------------------------------- replicas */

static int replica_open(replica *r)
{
    snprintf(r->dir, sizeof r->dir, "%s/%s", root, r->name);
    int rc = crdtdb_env_open(r->dir, NULL, &r->env);
    if (rc)
        return fail("%s: environment: %s", r->name, crdtdb_strerror(rc));
    /* the same collections as the server's: created before connecting */
    rc = crdtdb_db_create(r->env, DB, COLLS, NCOLL, &r->db);
    if (rc)
        return fail("%s: %s", r->name, crdtdb_env_errmsg(r->env));
    if ((rc = crdtdb_db_observe(r->db, NULL, on_change, r, &r->obs)))
        return fail("%s: observe: %s", r->name, crdtdb_strerror(rc));
    rc = crdtdb_jwt_mint(r == &R[MALLORY] ? other_key : key, r->name, (int64_t)time(NULL),
                         3600, &r->token);
    if (rc)
        return fail("%s: token: %s", r->name, crdtdb_strerror(rc));
    return 1;
}

static int connect_client(replica *r)
{
    crdtdb_client_options o;
    crdtdb_client_options_init(&o);
    o.url = url;
    o.token = (const char *)r->token.data;
    o.backoff_min_ms = 10; /* quick reconnects for the demo */
    o.backoff_max_ms = 200;
    o.on_event = on_session;
    o.ctx = r;
    int rc = crdtdb_client_open(r->db, &o, &r->cli);
    return rc ? fail("%s: client: %s", r->name, crdtdb_strerror(rc)) : 1;
}

static int connected(void *ctx) { return crdtdb_client_connected(((replica *)ctx)->cli); }

static int write_json(replica *r, const char *op, const char *coll, const char *id,
                      const char *json)
{
    crdtdb_buf b = CRDTDB_BUF_INIT;
    int rc;
    if (strcmp(op, "remove") == 0)
        rc = crdtdb_db_remove(r->db, NULL, coll, id);
    else if (!mp(&b, json))
        rc = CRDTDB_EBADVALUE;
    else if (strcmp(op, "add") == 0)
        rc = crdtdb_db_add(r->db, NULL, coll, id, b.data, b.len);
    else
        rc = crdtdb_db_update(r->db, NULL, coll, id, b.data, b.len);
    crdtdb_buf_free(&b);
    return rc ? fail("%s: %s %s/%s: %s", r->name, op, coll, id, crdtdb_db_errmsg(r->db)) : 1;
}

/* Player `who` makes move n; waits until each replica in `seen` has it. */
static int move(int who, int n, const char *to, want seen, const char *note)
{
    char id[16], json[128];
    snprintf(id, sizeof id, "%d", n);
    snprintf(json, sizeof json, "{\"by\":\"%s\",\"n\":%d,\"to\":\"%s\"}", R[who].name, n, to);
    if (!write_json(&R[who], "add", "moves", id, json))
        return 0;
    seen.coll = "moves";
    seen.id = id;
    seen.json = json;
    uint64_t ms;
    char what[64];
    snprintf(what, sizeof what, "move %d reaching everyone", n);
    int ok = await(what, seen, &ms);
    if (ok)
        step("%s: move %d (%s) seen by %s in %llu ms", R[who].name, n, to, note,
             (unsigned long long)ms);
    return ok;
}

/* ------------------------------------------------------- the scenario */

static int p1_refused(void *ctx)
{
    (void)ctx;
    return R[P1].notices > 0 && holds(&R[P1], "moves", "0", NULL);
}

static int refused_403(void *ctx) { return n403[*(int *)ctx] > 0; }
static int refused_401(void *ctx) { (void)ctx; return n401 > 0; }

static int p2_cleared(void *ctx)
{
    (void)ctx;
    return R[P2].invalidated > 0 && records(&R[P2]) == 0;
}

static int p2_refused_twice(void *ctx)
{
    (void)ctx;
    return n403[P2] >= 2;
}

static int p2_stays_out(void *ctx)
{
    (void)ctx;
    return !crdtdb_client_connected(R[P2].cli) && records(&R[P2]) == 0;
}

static int scenario(void)
{
    /* the server: tokens under a fresh HS256 secret, the membership policy */
    uint8_t secret[32];
    int fd = open("/dev/urandom", O_RDONLY);
    if (fd < 0 || read(fd, secret, sizeof secret) != (ssize_t)sizeof secret) {
        if (fd >= 0)
            close(fd);
        return fail("cannot read /dev/urandom");
    }
    close(fd);
    int rc = crdtdb_jwt_key_open(CRDTDB_JWT_HS256, secret, sizeof secret, &key);
    secret[0] ^= 1; /* another secret, for a forged token */
    if (!rc)
        rc = crdtdb_jwt_key_open(CRDTDB_JWT_HS256, secret, sizeof secret, &other_key);
    memset(secret, 0, sizeof secret);
    if (rc)
        return fail("jwt key: %s", crdtdb_strerror(rc));

    char dir[4200];
    snprintf(dir, sizeof dir, "%s/server", root);
    if ((rc = crdtdb_env_open(dir, NULL, &srv_env)))
        return fail("server environment: %s", crdtdb_strerror(rc));
    crdtdb_server_auth auth;
    crdtdb_members_policy(&auth);
    crdtdb_server_options so;
    crdtdb_server_options_init(&so);
    so.port = 0; /* ephemeral */
    so.collections = COLLS;
    so.ncoll = NCOLL;
    so.jwt_key = key;
    so.auth = &auth;
    so.log = on_log;
    if ((rc = crdtdb_server_open(srv_env, &so, &srv)))
        return fail("server: %s", crdtdb_strerror(rc));
    snprintf(url, sizeof url, "ws://127.0.0.1:%d", crdtdb_server_port(srv));
    step("server: listening on %s, HS256 tokens, members policy", url);

    for (int i = 0; i < NREP; i++)
        if (!replica_open(&R[i]))
            return 0;

    /* 1. the owner creates the match by connecting */
    if (!connect_client(&R[OLGA]) ||
        !await("olga becoming the owner",
               (want){{OLGA}, 1, "_members", "olga", "{\"role\":\"owner\",\"status\":\"accepted\"}"},
               NULL))
        return 0;
    step("olga: created %s by connecting; the server made her owner", DB);

    /* 2. invitations */
    static const char invited[] = "{\"role\":\"writer\",\"status\":\"invited\"}";
    for (int i = P1; i <= P3; i++)
        if (!write_json(&R[OLGA], "add", "_members", R[i].name, invited))
            return 0;
    step("olga: invited p1, p2, p3 (_members/<p> {\"role\":\"writer\",\"status\":\"invited\"})");

    /* strangers: a valid token of a non-member (403), a forged token (401) */
    int who = EVE;
    if (!connect_client(&R[EVE]) || !wait_for("eve refused", refused_403, &who, NULL))
        return 0;
    crdtdb_client_close(R[EVE].cli);
    R[EVE].cli = NULL;
    step("eve: valid token, not a member: refused (403)");
    if (!connect_client(&R[MALLORY]) || !wait_for("mallory refused", refused_401, NULL, NULL))
        return 0;
    crdtdb_client_close(R[MALLORY].cli);
    R[MALLORY].cli = NULL;
    step("mallory: token signed with another secret: refused (401)");

    /* 3. the players connect and accept */
    for (int i = P1; i <= P3; i++) {
        char what[64];
        snprintf(what, sizeof what, "%s receiving the invitation", R[i].name);
        if (!connect_client(&R[i]) ||
            !await(what, (want){{i}, 1, "_members", R[i].name, invited}, NULL) ||
            !wait_for(what, connected, &R[i], NULL))
            return 0;
        step("%s: connected, invited", R[i].name);
        if (i == P1) { /* writing before accepting is refused */
            if (!write_json(&R[P1], "add", "moves", "0", "{\"by\":\"p1\",\"n\":0}") ||
                !wait_for("p1's early move refused", p1_refused, NULL, NULL))
                return 0;
            if (!holds(&R[OLGA], "moves", "0", NULL))
                return fail("olga got p1's refused move");
            step("p1: move before accepting refused, copy restored (\"%s\")", R[P1].notice);
        }
        if (!write_json(&R[i], "update", "_members", R[i].name, "{\"status\":\"accepted\"}"))
            return 0;
    }
    static const char accepted[] = "{\"role\":\"writer\",\"status\":\"accepted\"}";
    for (int i = P1; i <= P3; i++) {
        char what[64];
        snprintf(what, sizeof what, "%s's acceptance", R[i].name);
        if (!await(what, (want){{OLGA, P1, P2, P3}, 4, "_members", R[i].name, accepted}, NULL))
            return 0;
        step("%s: accepted (everyone sees _members/%s status \"accepted\")", R[i].name,
             R[i].name);
    }

    /* 4. the owner starts the match */
    static const char started[] = "{\"status\":\"started\",\"turn\":\"p1\"}";
    if (!write_json(&R[OLGA], "add", "state", "match", started))
        return 0;
    uint64_t ms;
    if (!await("the start", (want){{OLGA, P1, P2, P3}, 4, "state", "match", started}, &ms))
        return 0;
    step("olga: match started, p1's turn (seen by all in %llu ms)", (unsigned long long)ms);

    /* 5. moves everyone sees at once */
    want all = {{OLGA, P1, P2, P3}, 4, NULL, NULL, NULL};
    if (!move(P1, 1, "c3", all, "all 4 replicas") || !move(P2, 2, "d4", all, "all 4 replicas") ||
        !move(P3, 3, "e5", all, "all 4 replicas"))
        return 0;

    /* 6. p3 drops offline; the others play on, and so does p3, offline */
    crdtdb_client_close(R[P3].cli);
    R[P3].cli = NULL;
    step("p3: offline");
    want online = {{OLGA, P1, P2}, 3, NULL, NULL, NULL};
    if (!move(P1, 4, "f6", online, "olga, p1, p2") || !move(P2, 5, "g7", online, "olga, p1, p2"))
        return 0;
    if (!write_json(&R[P3], "add", "moves", "6", "{\"by\":\"p3\",\"n\":6,\"to\":\"h8\"}"))
        return 0;
    if (!holds(&R[P3], "moves", "4", NULL) || !holds(&R[OLGA], "moves", "6", NULL))
        return fail("p3 was not offline");
    step("p3: move 6 (h8) made offline");

    /* 7. p3 comes back and catches up, both ways */
    uint64_t t0 = mono_ms();
    if (!connect_client(&R[P3]) ||
        !await("p3 catching up (move 4)",
               (want){{P3}, 1, "moves", "4", "{\"by\":\"p1\",\"n\":4,\"to\":\"f6\"}"}, NULL) ||
        !await("p3 catching up (move 5)",
               (want){{P3}, 1, "moves", "5", "{\"by\":\"p2\",\"n\":5,\"to\":\"g7\"}"}, NULL) ||
        !await("p3's offline move reaching the others",
               (want){{OLGA, P1, P2}, 3, "moves", "6", "{\"by\":\"p3\",\"n\":6,\"to\":\"h8\"}"},
               NULL))
        return 0;
    step("p3: back online, caught up in %llu ms (got moves 4, 5; move 6 reached the others)",
         (unsigned long long)(mono_ms() - t0));

    /* 8. the owner removes p2: p2's copy is cleared, reconnects refused */
    if (!write_json(&R[OLGA], "remove", "_members", "p2", NULL))
        return 0;
    step("olga: removed p2 from _members");
    if (!wait_for("p2's copy cleared", p2_cleared, NULL, &ms))
        return 0;
    step("p2: copy cleared (INVALIDATE_ALL, store empty) in %llu ms", (unsigned long long)ms);
    if (!wait_for("p2's reconnects refused", p2_refused_twice, NULL, NULL) ||
        !hold_for("p2 staying out", p2_stays_out, NULL, 500))
        return 0;
    step("p2: reconnects refused (403 x %d), store still empty", n403[P2]);
    if (!await("p2's removal reaching the others", (want){{OLGA, P1, P3}, 3, "_members", "p2", NULL},
               NULL))
        return 0;
    want rest = {{OLGA, P1, P3}, 3, NULL, NULL, NULL};
    if (!move(P1, 7, "a1", rest, "olga, p1, p3"))
        return 0;
    if (holds(&R[P2], "moves", "7", NULL) == 0)
        return fail("p2 received a move after removal");

    /* the remaining replicas hold the same data */
    char *a = dump(&R[OLGA]), *b = dump(&R[P1]), *c = dump(&R[P3]);
    int same = a && b && c && strcmp(a, b) == 0 && strcmp(a, c) == 0;
    size_t n = records(&R[OLGA]);
    free(a);
    free(b);
    free(c);
    if (!same)
        return fail("olga, p1 and p3 hold different data");
    step("olga, p1, p3: identical copies (%zu records); p2: %zu", n, records(&R[P2]));
    return 1;
}

static int rm_one(const char *p, const struct stat *sb, int flag, struct FTW *f)
{
    (void)sb;
    (void)flag;
    (void)f;
    return remove(p);
}

int main(void)
{
    verbose = getenv("GAME_VERBOSE") != NULL;
    const char *tmp = getenv("TMPDIR");
    snprintf(root, sizeof root, "%s/crdtdb-game-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(root)) {
        perror("mkdtemp");
        return 1;
    }
    int ok = scenario();
    for (int i = 0; i < NREP; i++) {
        crdtdb_client_close(R[i].cli);
        crdtdb_observer_close(R[i].obs);
        crdtdb_db_close(R[i].db);
        crdtdb_env_close(R[i].env);
        crdtdb_buf_free(&R[i].token);
    }
    crdtdb_server_close(srv);
    crdtdb_env_close(srv_env);
    crdtdb_jwt_key_close(key);
    crdtdb_jwt_key_close(other_key);
    nftw(root, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    if (ok)
        step("game over: every step verified");
    return ok ? 0 : 1;
}
