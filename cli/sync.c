/*
 * crdtdb sync: one database with a server over WebSocket (libcrdtdb_ws),
 * once until both sides have everything, or with --watch until
 * interrupted (SIGINT/SIGTERM), printing each change.
 */
#include "cli.h"

#include <libwebsockets.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

#define PROGRESS_STEP 20000 /* changes between progress lines */

typedef struct sync_state {
    int watch;
    int ready, caught_up, closed;
    size_t received, next_progress;
    int failed;         /* a connection could not be made: its error code */
    char why[512];      /* and why */
    crdtdb_sync_mode mode;
    uint8_t server[CRDTDB_REPLICA_ID_BYTES];
} sync_state;

/* The next step after a connection that failed with code rc and message
 * msg, or NULL. */
static const char *next_step(int rc, const char *msg)
{
    switch (rc) {
    case CRDTDB_EAUTH:
        return "check --token-file: the server takes tokens made with its key, as "
               "crdtdb token makes them";
    case CRDTDB_EDENIED:
        return "this user is not a member of the database: an owner can add them "
               "(docs/auth.md)";
    case CRDTDB_ELIMIT:
        return "the server is busy or limits this address or user: try again later";
    case CRDTDB_EIO:
        if (strstr(msg, "TLS"))
            return "is it a wss:// server this machine trusts? --tls-ca F trusts a "
                   "self-signed certificate";
        if (strstr(msg, "resolve"))
            return "check the host name in the URL";
        if (strstr(msg, "HTTP"))
            return "is the URL a crdtdb server's, ws://HOST:PORT?";
        return "is `crdtdb serve` running there?";
    default:
        return NULL;
    }
}

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
        st->received += ev->applied->changes;
        if (st->watch && ev->applied->applied)
            fprintf(stderr, "received %zu change%s\n", ev->applied->applied,
                    ev->applied->applied == 1 ? "" : "s");
        else if (!st->caught_up && st->received >= st->next_progress) {
            /* a large first sync: say how far it got */
            fprintf(stderr, "progress: %zu changes received\n", st->received);
            st->next_progress += PROGRESS_STEP;
        }
        break;
    case CRDTDB_SESSION_CAUGHT_UP:
        st->caught_up = 1;
        break;
    case CRDTDB_SESSION_ERROR: {
        const char *msg = ev->message ? ev->message : crdtdb_strerror(ev->error);
        if (st->ready) {
            fprintf(stderr, "%s error: %s\n", ev->remote ? "server" : "sync", msg);
        } else if (st->watch) { /* the client retries after its backoff */
            fprintf(stderr, "%s error: %s; retrying\n", ev->remote ? "server" : "sync", msg);
        } else if (!st->failed) { /* a one-shot sync stops at once */
            st->failed = ev->error ? ev->error : CRDTDB_EIO;
            snprintf(st->why, sizeof st->why, "%s", msg);
        }
        break;
    }
    case CRDTDB_SESSION_CLOSED:
        st->ready = 0;
        st->closed = 1;
        if (st->watch)
            fprintf(stderr, "disconnected\n");
        break;
    }
}

int cmd_sync(const char *dir, const args *a)
{
    if (!a->db) {
        fprintf(stderr, "crdtdb: sync needs --db DB\n");
        return EXIT_USAGE;
    }
    long timeout = 30;
    if (a->timeout) {
        char *end;
        timeout = strtol(a->timeout, &end, 10);
        if (a->watch || !*a->timeout || *end || timeout < 1 || timeout > 86400) {
            fprintf(stderr, "crdtdb: %s\n", a->watch ? "--watch never gives up: no --timeout"
                                                     : "--timeout takes seconds, 1 to 86400");
            return EXIT_USAGE;
        }
    }
    sync_state st;
    memset(&st, 0, sizeof st);
    st.watch = a->watch;
    st.next_progress = PROGRESS_STEP;
    crdtdb_client_options o;
    crdtdb_client_options_init(&o);
    o.url = a->pos[0];
    o.tls_ca = a->tls_ca;
    o.on_event = on_session;
    o.ctx = &st;
    if (parse_mode(a->mode, &o.mode))
        return EXIT_USAGE;
    lws_set_log_level(LLL_ERR, NULL);
    crdtdb_env *env;
    crdtdb_db *db;
    char *token = NULL;
    if (a->token_file) {
        if (!(token = read_token(a->token_file)))
            return EXIT_FAILURE;
        o.token = token;
    }
    if (open_db(dir, a->db, &env, &db)) {
        free_secret(token);
        return EXIT_FAILURE;
    }
    /* --watch prints every change, local or received, as JSON lines */
    watch_ctx w = {CRDTDB_BUF_INIT, CRDTDB_BUF_INIT, -1, 0};
    crdtdb_observer *obs = NULL;
    if (a->watch && crdtdb_db_observe(db, NULL, print_event, &w, &obs)) {
        free_secret(token);
        return close_db(env, db, fail(crdtdb_db_errmsg(db), CRDTDB_ENOMEM));
    }
    crdtdb_client *c;
    int rc = crdtdb_client_open(db, &o, &c);
    if (rc) {
        free_secret(token);
        crdtdb_observer_close(obs);
        const char *why = rc == CRDTDB_ETOOBIG ? "the token is longer than 8192 bytes"
                          : rc != CRDTDB_EINVAL ? NULL
                          : token ? "bad URL (ws://HOST:PORT), or a token with characters a "
                                    "bearer token cannot have"
                                  : "bad URL (ws://HOST:PORT)";
        return close_db(env, db, fail(why, rc));
    }
    catch_signals(0);
    int status = 0;
    uint64_t deadline = mono_ms() + (uint64_t)timeout * 1000;
    while (!stopped()) {
        rc = crdtdb_client_run(c, 100);
        if (rc) {
            status = fail(NULL, rc);
            break;
        }
        if (a->watch) {
            (void)crdtdb_db_poll(db, NULL); /* other processes' commits */
            continue;
        }
        if (st.failed) {
            status = fail_hint(st.why, st.failed, next_step(st.failed, st.why));
            break;
        }
        if (crdtdb_client_synced(c)) {
            fprintf(stderr, "in sync\n");
            break;
        }
        if (mono_ms() > deadline) {
            char msg[64];
            snprintf(msg, sizeof msg, "could not sync within %ld second%s", timeout,
                     timeout == 1 ? "" : "s");
            status = fail_hint(msg, CRDTDB_EIO, "--timeout SECONDS waits longer");
            break;
        }
    }
    crdtdb_client_close(c);
    crdtdb_observer_close(obs);
    crdtdb_buf_free(&w.rec);
    crdtdb_buf_free(&w.json);
    free_secret(token);
    return close_db(env, db, status);
}
