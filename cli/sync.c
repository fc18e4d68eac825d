/*
 * crdtdb sync: one database with a server over WebSocket (libcrdtdb_ws),
 * once until both sides have everything, or with --watch until
 * interrupted (SIGINT/SIGTERM), printing each change; and with --presence
 * or --send, the others' presence and messages.
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
    int show_presence;  /* print the others' presence and messages */
    uint8_t (*keys)[CRDTDB_PRESENCE_KEY_BYTES]; /* entries shown: join or update */
    size_t nkeys, keys_cap;
    crdtdb_buf json;    /* scratch */
} sync_state;

/* Entries remembered as shown, as the client's own bound: a server
 * sending more cannot grow this without end. */
#define KEYS_MAX 65536u

/* Whether key is among those shown; with `add`, it is afterwards (0 when
 * out of memory: it shows as a join again); with `drop`, it is not. */
static int key_seen(sync_state *st, const uint8_t *key, int add, int drop)
{
    for (size_t i = 0; i < st->nkeys; i++)
        if (memcmp(st->keys[i], key, CRDTDB_PRESENCE_KEY_BYTES) == 0) {
            if (drop)
                memcpy(st->keys[i], st->keys[--st->nkeys], CRDTDB_PRESENCE_KEY_BYTES);
            return 1;
        }
    if (!add || st->nkeys >= KEYS_MAX) /* past it: shown as a join again */
        return 0;
    if (st->nkeys == st->keys_cap) {
        size_t cap = st->keys_cap ? 2 * st->keys_cap : 16;
        void *k = realloc(st->keys, cap * sizeof *st->keys);
        if (!k)
            return 0;
        st->keys = k;
        st->keys_cap = cap;
    }
    memcpy(st->keys[st->nkeys++], key, CRDTDB_PRESENCE_KEY_BYTES);
    return 0;
}

/* ,"key":K,"user":U,"replica":R of an entry or message. */
static void put_source(const uint8_t *key, const char *user, const uint8_t *replica)
{
    char hex[2 * CRDTDB_REPLICA_ID_BYTES + 1];
    hex_encode(key, CRDTDB_PRESENCE_KEY_BYTES, hex);
    printf(",\"key\":\"%s\",\"user\":", hex);
    put_json_str(stdout, user ? user : "");
    hex_encode(replica, CRDTDB_REPLICA_ID_BYTES, hex);
    printf(",\"replica\":\"%s\"", hex);
}

/* One presence change as a JSON line (a state that is no JSON: skipped). */
static void print_presence(sync_state *st, const crdtdb_presence *p)
{
    if (!p->key || !p->replica)
        return;
    if (p->state && crdtdb_msgpack_to_json(p->state, p->state_len, &st->json))
        return;
    const char *what = !p->state                    ? "leave"
                       : key_seen(st, p->key, 1, 0) ? "update"
                                                    : "join";
    if (!p->state && !key_seen(st, p->key, 0, 1) && st->nkeys < KEYS_MAX)
        return; /* never shown (past KEYS_MAX it may have been: shown) */
    printf("{\"presence\":\"%s\"", what);
    put_source(p->key, p->user, p->replica);
    if (p->state)
        printf(",\"state\":%s", (char *)st->json.data);
    fputs("}\n", stdout);
    fflush(stdout);
}

/* One message as a JSON line. */
static void print_message(sync_state *st, const crdtdb_message *m)
{
    if (!m->key || !m->replica || crdtdb_msgpack_to_json(m->body, m->body_len, &st->json))
        return;
    printf("{\"message\":%s", (char *)st->json.data);
    put_source(m->key, m->user, m->replica);
    fputs(",\"to\":", stdout);
    if (m->to)
        put_json_str(stdout, m->to);
    else
        fputs("null", stdout);
    fputs("}\n", stdout);
    fflush(stdout);
}

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
            if (!st->watch && ev->remote && !st->failed) { /* refused: asking again will not help */
                st->failed = ev->error ? ev->error : CRDTDB_EIO;
                snprintf(st->why, sizeof st->why, "%s", msg);
            }
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
    case CRDTDB_SESSION_PRESENCE:
        if (st->show_presence)
            print_presence(st, ev->presence);
        break;
    case CRDTDB_SESSION_MESSAGE:
        if (st->show_presence)
            print_message(st, ev->msg);
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
    if ((a->presence || a->send) && !a->watch) {
        fprintf(stderr, "crdtdb: --presence and --send need --watch\n");
        return EXIT_USAGE;
    }
    if (a->to && !a->send) {
        fprintf(stderr, "crdtdb: --to names who gets --send's message\n");
        return EXIT_USAGE;
    }
    crdtdb_buf pstate = CRDTDB_BUF_INIT, note = CRDTDB_BUF_INIT; /* --send's */
    int sent = !a->send;
    sync_state st;
    memset(&st, 0, sizeof st);
    st.watch = a->watch;
    st.show_presence = a->presence || a->send;
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
    /* the state (null: none, only watching the others') and the message */
    int bad = (a->presence && parse_json(a->presence, &pstate)) ||
              (a->send && parse_json(a->send, &note));
    if (!bad && pstate.len == 1 && pstate.data[0] == 0xc0) /* null */
        pstate.len = 0;
    else if (!bad && a->presence && (pstate.data[0] & 0xf0) != 0x80 && pstate.data[0] != 0xde &&
             pstate.data[0] != 0xdf) {
        fprintf(stderr, "crdtdb: --presence takes a JSON object (or null)\n");
        bad = 1;
    }
    if (bad) {
        crdtdb_buf_free(&pstate);
        crdtdb_buf_free(&note);
        free_secret(token);
        crdtdb_observer_close(obs);
        return close_db(env, db, EXIT_FAILURE);
    }
    crdtdb_client *c;
    int rc = crdtdb_client_open(db, &o, &c);
    if (!rc && pstate.len && (rc = crdtdb_client_presence_set(c, pstate.data, pstate.len))) {
        crdtdb_client_close(c);
        crdtdb_observer_close(obs);
        free_secret(token);
        crdtdb_buf_free(&pstate);
        crdtdb_buf_free(&note);
        return close_db(env, db, fail_hint("bad --presence", rc,
                                           rc == CRDTDB_ETOOBIG ? "1024 bytes of msgpack at most"
                                                                : "16 levels deep at most"));
    }
    if (rc) {
        crdtdb_buf_free(&pstate);
        crdtdb_buf_free(&note);
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
            if (!sent && crdtdb_client_connected(c)) {
                rc = crdtdb_client_message_send(c, a->to, note.data, note.len);
                if (rc != CRDTDB_EBUSY) { /* else: at the next turn */
                    sent = 1;
                    if (rc)
                        fprintf(stderr, "crdtdb: --send: %s\n", crdtdb_strerror(rc));
                    else
                        fprintf(stderr, "message sent\n");
                }
            }
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
    crdtdb_buf_free(&st.json);
    crdtdb_buf_free(&pstate);
    crdtdb_buf_free(&note);
    free(st.keys);
    free_secret(token);
    return close_db(env, db, status);
}
