/*
 * crdtdb serve and sync: the sync protocol over WebSocket (transport/ws.c).
 * Both run the library's event loop on this thread until done or
 * interrupted (SIGINT/SIGTERM).
 */
#include "cli.h"

#include <libwebsockets.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Set by SIGINT/SIGTERM; signals leave no other way. */
static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
    (void)sig;
    stop = 1;
}

static void catch_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

static int parse_mode(const char *s, crdtdb_sync_mode *mode)
{
    if (!s || strcmp(s, "two-way") == 0)
        *mode = CRDTDB_SYNC_TWO_WAY;
    else if (strcmp(s, "server-to-client") == 0)
        *mode = CRDTDB_SYNC_SERVER_TO_CLIENT;
    else {
        fprintf(stderr, "crdtdb: --mode is two-way or server-to-client\n");
        return -1;
    }
    return 0;
}

static void log_line(void *ctx, const char *line)
{
    (void)ctx;
    fprintf(stderr, "%s\n", line);
}

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

int cmd_serve(const char *dir, const args *a)
{
    crdtdb_server_options o;
    crdtdb_server_options_init(&o);
    o.port = 8080;
    if (parse_mode(a->mode, &o.mode))
        return EXIT_USAGE;
    char host[256] = "127.0.0.1";
    if (a->listen) {
        const char *colon = strrchr(a->listen, ':');
        char *end;
        long port = colon ? strtol(colon + 1, &end, 10) : -1;
        size_t hl = colon ? (size_t)(colon - a->listen) : 0;
        if (!colon || colon[1] == '\0' || *end || port < 0 || port > 65535 ||
            hl >= sizeof host) {
            fprintf(stderr, "crdtdb: --listen needs HOST:PORT\n");
            return EXIT_USAGE;
        }
        if (hl) {
            memcpy(host, a->listen, hl);
            host[hl] = '\0';
        }
        o.port = (int)port;
    }
    o.host = host;
    /* --collections A,B: split in place on a copy */
    char *list = NULL;
    const char **colls = NULL;
    if (a->collections) {
        list = strdup(a->collections);
        colls = calloc(strlen(a->collections) + 1, sizeof *colls);
        if (!list || !colls) {
            free(list);
            free(colls);
            return fail(NULL, CRDTDB_ENOMEM);
        }
        char *save = NULL;
        for (char *tok = strtok_r(list, ",", &save); tok; tok = strtok_r(NULL, ",", &save))
            colls[o.ncoll++] = tok;
        o.collections = colls;
    }
    o.log = log_line;
    lws_set_log_level(LLL_ERR, NULL);
    crdtdb_env *env = NULL;
    crdtdb_server *srv = NULL;
    int status = 0;
    if (!env_exists(dir) || open_env(dir, 0, &env)) {
        status = EXIT_FAILURE;
    } else {
        int rc = crdtdb_server_open(env, &o, &srv);
        if (rc)
            status = fail(rc == CRDTDB_EIO ? "cannot listen there" : NULL, rc);
    }
    catch_signals();
    while (srv && !stop) {
        int rc = crdtdb_server_run(srv, 200);
        if (rc) {
            status = fail(NULL, rc);
            break;
        }
    }
    crdtdb_server_close(srv);
    crdtdb_env_close(env);
    free(list);
    free(colls);
    return status;
}

typedef struct sync_state {
    int watch;
    int ready, caught_up, closed;
    crdtdb_sync_mode mode;
    uint8_t server[CRDTDB_REPLICA_ID_BYTES];
} sync_state;

static void on_session(void *ctx, const crdtdb_session_event *ev)
{
    sync_state *st = ctx;
    switch (ev->type) {
    case CRDTDB_SESSION_READY:
        st->ready = 1;
        st->caught_up = 0;
        st->mode = ev->mode;
        memcpy(st->server, ev->peer, sizeof st->server);
        fprintf(stderr, "connected, %s\n",
                ev->mode == CRDTDB_SYNC_SERVER_TO_CLIENT ? "server-to-client" : "two-way");
        break;
    case CRDTDB_SESSION_APPLIED:
        if (st->watch && ev->applied->applied)
            fprintf(stderr, "received %zu change%s\n", ev->applied->applied,
                    ev->applied->applied == 1 ? "" : "s");
        break;
    case CRDTDB_SESSION_CAUGHT_UP:
        st->caught_up = 1;
        break;
    case CRDTDB_SESSION_ERROR:
        fprintf(stderr, "%s error: %s\n", ev->remote ? "server" : "sync",
                ev->message ? ev->message : crdtdb_strerror(ev->error));
        break;
    case CRDTDB_SESSION_CLOSED:
        st->ready = 0;
        st->closed = 1;
        if (st->watch)
            fprintf(stderr, "disconnected\n");
        break;
    }
}

/* One-shot sync is done when we hold what the server had and, two-way,
 * the server has acknowledged all of ours. */
static int sync_done(crdtdb_db *db, const sync_state *st)
{
    if (!st->ready || !st->caught_up)
        return 0;
    if (st->mode == CRDTDB_SYNC_SERVER_TO_CLIENT)
        return 1;
    uint64_t seq;
    crdtdb_peer p;
    int found;
    if (crdtdb_db_seq(db, NULL, &seq) || crdtdb_db_peer_get(db, st->server, &p, &found))
        return 0;
    return p.acked >= seq;
}

int cmd_sync(const char *dir, const args *a)
{
    if (!a->db) {
        fprintf(stderr, "crdtdb: sync needs --db DB\n");
        return EXIT_USAGE;
    }
    sync_state st;
    memset(&st, 0, sizeof st);
    st.watch = a->watch;
    crdtdb_client_options o;
    crdtdb_client_options_init(&o);
    o.url = a->pos[0];
    o.on_event = on_session;
    o.ctx = &st;
    if (parse_mode(a->mode, &o.mode))
        return EXIT_USAGE;
    lws_set_log_level(LLL_ERR, NULL);
    crdtdb_env *env;
    crdtdb_db *db;
    if (open_db(dir, a->db, &env, &db))
        return EXIT_FAILURE;
    /* --watch prints every change, local or received, as JSON lines */
    watch_ctx w = {CRDTDB_BUF_INIT, -1, 0};
    crdtdb_observer *obs = NULL;
    if (a->watch && crdtdb_db_observe(db, NULL, print_event, &w, &obs))
        return close_db(env, db, fail(crdtdb_db_errmsg(db), CRDTDB_ENOMEM));
    crdtdb_client *c;
    int rc = crdtdb_client_open(db, &o, &c);
    if (rc)
        return close_db(env, db, fail(rc == CRDTDB_EINVAL ? "bad URL (ws://HOST:PORT)" : NULL, rc));
    catch_signals();
    int status = 0;
    uint64_t deadline = mono_ms() + 30000;
    while (!stop) {
        rc = crdtdb_client_run(c, 100);
        if (rc) {
            status = fail(NULL, rc);
            break;
        }
        if (a->watch) {
            (void)crdtdb_db_poll(db, NULL); /* other processes' commits */
            continue;
        }
        if (sync_done(db, &st)) {
            fprintf(stderr, "in sync\n");
            break;
        }
        if (mono_ms() > deadline) {
            status = fail("could not sync within 30 seconds", CRDTDB_EIO);
            break;
        }
    }
    crdtdb_client_close(c);
    crdtdb_observer_close(obs);
    crdtdb_buf_free(&w.json);
    return close_db(env, db, status);
}
