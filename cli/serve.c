/*
 * crdtdb serve and sync: the sync protocol over WebSocket (transport/ws.c).
 * Both run the library's event loop on this thread until done or
 * interrupted (SIGINT/SIGTERM).
 */
#include "cli.h"
#include "options.h"

#include <libwebsockets.h>
#include <signal.h>
#include <stdio.h>
#include <sodium.h>
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

static void free_secret(char *s)
{
    if (s) {
        sodium_memzero(s, strlen(s));
        free(s);
    }
}

/* A token file's contents as a string (NULL reported on failure); free
 * with free_secret. */
static char *read_token(const char *file)
{
    uint8_t *bytes;
    size_t len;
    if (read_key_file(file, 1, &bytes, &len))
        return NULL;
    char *t = calloc(1, len + 1);
    if (t)
        memcpy(t, bytes, len);
    sodium_memzero(bytes, len);
    free(bytes);
    if (!t)
        fail(NULL, CRDTDB_ENOMEM);
    return t;
}

/* The server's token key from --jwt-secret-file or --jwt-public-key. */
static int load_jwt_key(const args *a, crdtdb_jwt_key **key)
{
    if (a->jwt_secret_file && a->jwt_public_key) {
        fprintf(stderr, "crdtdb: give --jwt-secret-file or --jwt-public-key, not both\n");
        return EXIT_USAGE;
    }
    crdtdb_jwt_alg alg = CRDTDB_JWT_HS256;
    if (a->jwt_public_key) {
        alg = CRDTDB_JWT_RS256;
        if (a->jwt_alg && strcmp(a->jwt_alg, "ES256") == 0)
            alg = CRDTDB_JWT_ES256;
        else if (a->jwt_alg && strcmp(a->jwt_alg, "RS256") != 0) {
            fprintf(stderr, "crdtdb: --jwt-alg is RS256 or ES256\n");
            return EXIT_USAGE;
        }
    } else if (a->jwt_alg && strcmp(a->jwt_alg, "HS256") != 0) {
        fprintf(stderr, "crdtdb: a secret file is HS256\n");
        return EXIT_USAGE;
    }
    uint8_t *bytes;
    size_t len;
    const char *file = a->jwt_public_key ? a->jwt_public_key : a->jwt_secret_file;
    if (read_key_file(file, alg == CRDTDB_JWT_HS256, &bytes, &len))
        return EXIT_FAILURE;
    int rc = crdtdb_jwt_key_open(alg, bytes, len, key);
    /* a PEM key of the other kind says which --jwt-alg it wants */
    crdtdb_jwt_alg other = alg == CRDTDB_JWT_RS256 ? CRDTDB_JWT_ES256 : CRDTDB_JWT_RS256;
    crdtdb_jwt_key *probe = NULL;
    int fits_other = rc == CRDTDB_EINVAL && alg != CRDTDB_JWT_HS256 &&
                     crdtdb_jwt_key_open(other, bytes, len, &probe) == 0;
    crdtdb_jwt_key_close(probe);
    sodium_memzero(bytes, len);
    free(bytes);
    if (!rc)
        return 0;
    char msg[512];
    if (rc != CRDTDB_EINVAL)
        snprintf(msg, sizeof msg, "%s: %s", file, crdtdb_strerror(rc));
    else if (alg == CRDTDB_JWT_HS256)
        snprintf(msg, sizeof msg, "%s: an HS256 secret needs 32 bytes or more", file);
    else if (fits_other)
        snprintf(msg, sizeof msg, "%s is %s key, which does not fit --jwt-alg %s: give --jwt-alg %s",
                 file, other == CRDTDB_JWT_ES256 ? "an EC P-256" : "an RSA",
                 alg == CRDTDB_JWT_RS256 ? "RS256" : "ES256",
                 other == CRDTDB_JWT_ES256 ? "ES256" : "RS256");
    else
        snprintf(msg, sizeof msg, "%s does not hold a PEM %s key (%s)", file,
                 alg == CRDTDB_JWT_RS256 ? "RSA" : "EC P-256",
                 alg == CRDTDB_JWT_RS256 ? "RS256" : "ES256");
    return fail(msg, rc);
}

/* Sets the limits given as flags (unset: the library's defaults); an
 * unparsable or zero value is a usage error.  "unlimited" lifts the
 * per-address and per-user caps. */
static int apply_limits(const args *a, crdtdb_server_options *o)
{
    size_t *sizes[] = {&o->max_connections, &o->max_per_ip, &o->max_per_user, &o->max_buffered};
    unsigned *secs[] = {&o->handshake_secs, &o->message_secs, &o->ping_secs, &o->pong_secs};
    for (size_t i = 0; serve_limit_flags[i]; i++) {
        const char *v = a->limits[i];
        if (!v)
            continue;
        if ((i == 1 || i == 2) && strcmp(v, "unlimited") == 0) {
            *sizes[i] = SIZE_MAX;
            continue;
        }
        char *end;
        unsigned long long n = strtoull(v, &end, 10);
        int bad = !*v || *end || *v == '-' || n == 0 || n > (i < 4 ? 1000000000ull : 30000ull);
        if (bad) {
            fprintf(stderr, "crdtdb: %s takes a number from 1 to %s%s\n", serve_limit_flags[i],
                    i < 4 ? "1000000000" : "30000", i == 1 || i == 2 ? ", or unlimited" : "");
            return -1;
        }
        if (i < 4)
            *sizes[i] = i == 3 ? (size_t)n << 20 : (size_t)n;
        else
            *secs[i - 4] = (unsigned)n;
    }
    return 0;
}

int cmd_serve(const char *dir, const args *a)
{
    crdtdb_server_options o;
    crdtdb_server_options_init(&o);
    o.port = 8080;
    if (parse_mode(a->mode, &o.mode))
        return EXIT_USAGE;
    if (apply_limits(a, &o))
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
    o.peer_tls_ca = a->peer_ca;
    if (!a->tls_cert != !a->tls_key) {
        fprintf(stderr, "crdtdb: serve takes --tls-cert and --tls-key together\n");
        return EXIT_USAGE;
    }
    o.tls_cert = a->tls_cert;
    o.tls_key = a->tls_key;
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
    /* tokens: the key, the membership policy, and its collection */
    crdtdb_jwt_key *key = NULL;
    crdtdb_server_auth auth;
    if (a->jwt_secret_file || a->jwt_public_key) {
        int st = load_jwt_key(a, &key);
        if (st) {
            free(list);
            free(colls);
            return st;
        }
        crdtdb_members_policy(&auth);
        o.jwt_key = key;
        o.jwt_leeway = 30;
        o.auth = &auth;
        int have = 0;
        for (size_t i = 0; i < o.ncoll; i++)
            have |= strcmp(colls[i], "_members") == 0;
        if (o.ncoll && !have)
            colls[o.ncoll++] = "_members"; /* room: one more than the commas */
    }
    crdtdb_env *env = NULL;
    crdtdb_server *srv = NULL;
    int status = 0;
    if (!env_exists(dir) || open_env(dir, 0, &env)) {
        status = EXIT_FAILURE;
    } else {
        int rc = crdtdb_server_open(env, &o, &srv);
        if (rc == CRDTDB_EIO) {
            char msg[320];
            snprintf(msg, sizeof msg, "cannot listen on %s:%d", host, o.port);
            status = fail_hint(msg, rc, "is another server on that port? --listen HOST:PORT "
                                        "picks another");
        } else if (rc)
            status = fail(NULL, rc);
        char *ptoken = NULL;
        if (srv && a->npeers && a->peer_token_file && !(ptoken = read_token(a->peer_token_file)))
            status = EXIT_FAILURE;
        for (int i = 0; srv && !status && i < a->npeers; i++) {
            crdtdb_client_options l;
            crdtdb_client_options_init(&l);
            l.url = a->peers[i];
            l.token = ptoken;
            if ((rc = crdtdb_server_peer(srv, &l, NULL, 0)))
                status = fail_hint("bad --peer URL", rc, "ws://HOST:PORT or wss://HOST:PORT");
        }
        free_secret(ptoken); /* the server keeps its own copy */
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
    crdtdb_jwt_key_close(key);
    free(list);
    free(colls);
    return status;
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
    catch_signals();
    int status = 0;
    uint64_t deadline = mono_ms() + (uint64_t)timeout * 1000;
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
