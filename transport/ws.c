/*
 * The sync session over WebSocket (libwebsockets).  The server maps
 * /v1/db/<url-encoded id> to one shared database handle and one server
 * session per connection; the client keeps one session per connection and
 * reconnects with exponential backoff and jitter.  Binary messages carry the
 * session's bytes, at most WS_CHUNK per message (the session reassembles any
 * split).  Everything runs on the thread calling crdtdb_*_run(); each server
 * and client has its own lws context.
 */
#include <libwebsockets.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "crdtdb.h"

#define WS_CHUNK 65536u
#define WS_PROTOCOL "crdtdb-sync"
#define WS_PREFIX "/v1/db/"

/* ------------------------------------------------------------ shared */

/* One connection's session and how to close it. */
typedef struct wslink {
    struct lws *wsi;
    crdtdb_session *s;
    int status; /* the close status to send once the session ends */
    int pump_err;
} wslink;

static char *dupstr(const char *s)
{
    if (!s)
        return NULL;
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* The WebSocket close status for a session error of ours. */
static int close_status(int code, int remote)
{
    if (remote || code == 0)
        return LWS_CLOSE_STATUS_NORMAL;
    switch (code) {
    case CRDTDB_EBADVALUE:
    case CRDTDB_EVERSION:
        return LWS_CLOSE_STATUS_PROTOCOL_ERR;
    case CRDTDB_ETOOBIG:
        return LWS_CLOSE_STATUS_MESSAGE_TOO_LARGE;
    case CRDTDB_ENOMEM:
    case CRDTDB_EIO:
    case CRDTDB_EMAPFULL:
    case CRDTDB_ECORRUPT:
        return LWS_CLOSE_STATUS_UNEXPECTED_CONDITION;
    default:
        return LWS_CLOSE_STATUS_POLICY_VIOLATION;
    }
}

static void noop_sul(lws_sorted_usec_list_t *sul) { (void)sul; }

/* One pass of the event loop, waking after timeout_ms at the latest (lws
 * itself ignores the timeout argument and sleeps until its next event). */
static int service(struct lws_context *ctx, lws_sorted_usec_list_t *sul, int timeout_ms)
{
    if (timeout_ms <= 0) /* poll without waiting: lws takes -1 as "do not block" */
        return lws_service(ctx, -1) < 0 ? CRDTDB_EIO : 0;
    lws_sul_schedule(ctx, 0, sul, noop_sul, (lws_usec_t)timeout_ms * LWS_US_PER_MS);
    int n = lws_service(ctx, 0);
    lws_sul_cancel(sul);
    return n < 0 ? CRDTDB_EIO : 0;
}

/*
 * On WRITEABLE: sends up to WS_CHUNK bytes of output as one binary message,
 * pumping first when the output is empty; asks to be called again while
 * output remains.  Once the session is closed and flushed, closes the
 * connection (returns -1).
 */
static int link_writable(wslink *l, unsigned char *wbuf)
{
    if (!l->s)
        return -1;
    size_t len;
    const uint8_t *p = crdtdb_session_output(l->s, &len);
    if (!len && !crdtdb_session_closed(l->s)) {
        int rc = crdtdb_session_pump(l->s);
        if (rc) {
            l->pump_err = rc;
            l->status = close_status(rc, 0);
            crdtdb_session_shutdown(l->s);
        }
        p = crdtdb_session_output(l->s, &len);
    }
    if (!len) {
        if (crdtdb_session_closed(l->s)) {
            lws_close_reason(l->wsi, (enum lws_close_status)l->status, NULL, 0);
            return -1;
        }
        return 0;
    }
    size_t n = len < WS_CHUNK ? len : WS_CHUNK;
    memcpy(wbuf + LWS_PRE, p, n);
    if (lws_write(l->wsi, wbuf + LWS_PRE, n, LWS_WRITE_BINARY) < (int)n)
        return -1;
    crdtdb_session_consume(l->s, n);
    crdtdb_session_output(l->s, &len);
    if (!len && !crdtdb_session_closed(l->s)) {
        int rc = crdtdb_session_pump(l->s);
        if (rc) {
            l->pump_err = rc;
            l->status = close_status(rc, 0);
            crdtdb_session_shutdown(l->s);
        }
        crdtdb_session_output(l->s, &len);
    }
    if (len || crdtdb_session_closed(l->s))
        lws_callback_on_writable(l->wsi);
    return 0;
}

/* On RECEIVE: feeds the bytes, then asks to write replies (or the close). */
static int link_receive(wslink *l, const void *in, size_t len)
{
    if (!l->s)
        return -1;
    if (!crdtdb_session_closed(l->s))
        crdtdb_session_feed(l->s, in, len); /* failures arrive as events */
    size_t out;
    crdtdb_session_output(l->s, &out);
    if (out || crdtdb_session_closed(l->s))
        lws_callback_on_writable(l->wsi);
    return 0;
}

/* ------------------------------------------------------------- server */

typedef struct sconn sconn;

typedef struct sdb {
    struct sdb *next;
    crdtdb_server *srv;
    crdtdb_db *db;
    crdtdb_observer *obs;
    sconn *conns;
} sdb;

struct sconn {
    sconn *next;
    sdb *d;
    wslink l;
    char peer[64];
};

typedef struct spss {
    sconn *c;
} spss;

struct crdtdb_server {
    crdtdb_env *env;
    crdtdb_server_options o;
    char *host, *cert, *key;
    char **colls;
    struct lws_protocols protocols[2];
    struct lws_context *ctx;
    lws_sorted_usec_list_t sul;
    unsigned char *wbuf;
    sdb *dbs;
    size_t nconn;
    int port;
    int closing;
};

static void slog(crdtdb_server *srv, const char *fmt, ...)
{
    if (!srv->o.log)
        return;
    char line[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    srv->o.log(srv->o.log_ctx, line);
}

void crdtdb_server_options_init(crdtdb_server_options *o)
{
    memset(o, 0, sizeof *o);
    o->host = "127.0.0.1";
    o->mode = CRDTDB_SYNC_TWO_WAY;
    o->max_connections = 1024;
}

/*
 * The database id named by the request path /v1/db/<id>.  libwebsockets
 * has already url-decoded the path (and collapsed "//", "/./" and "/../"
 * segments, so ids containing those cannot be reached).  0, or -1 when the
 * path is not ours.
 */
static int path_db_id(struct lws *wsi, char id[CRDTDB_ID_MAX + 1])
{
    char uri[sizeof WS_PREFIX + CRDTDB_ID_MAX + 1];
    int n = lws_hdr_total_length(wsi, WSI_TOKEN_GET_URI);
    size_t pre = strlen(WS_PREFIX);
    if (n <= 0 || (size_t)n <= pre || (size_t)n >= sizeof uri ||
        lws_hdr_copy(wsi, uri, sizeof uri, WSI_TOKEN_GET_URI) != n ||
        strncmp(uri, WS_PREFIX, pre) != 0)
        return -1;
    memcpy(id, uri + pre, (size_t)n - pre + 1);
    return 0;
}

/* A database commit: every session of it has something to send. */
static void on_db_change(void *ctx, const crdtdb_event *ev)
{
    (void)ev;
    sdb *d = ctx;
    for (sconn *c = d->conns; c; c = c->next)
        if (c->l.wsi && c->l.s && !crdtdb_session_closed(c->l.s))
            lws_callback_on_writable(c->l.wsi);
}

/* The shared handle of database `id`, opened (or created) on first use. */
static sdb *db_get(crdtdb_server *srv, const char *id)
{
    for (sdb *d = srv->dbs; d; d = d->next)
        if (strcmp(crdtdb_db_id(d->db), id) == 0)
            return d;
    sdb *d = calloc(1, sizeof *d);
    if (!d) {
        slog(srv, "database '%s': out of memory", id);
        return NULL;
    }
    int rc = crdtdb_db_open(srv->env, id, &d->db);
    if (rc == CRDTDB_ENODB && srv->o.ncoll) {
        rc = crdtdb_db_create(srv->env, id, (const char *const *)srv->colls, srv->o.ncoll,
                              &d->db);
        if (rc == CRDTDB_EEXIST) /* created meanwhile by another process */
            rc = crdtdb_db_open(srv->env, id, &d->db);
        if (rc == 0)
            slog(srv, "database '%s' created", id);
    }
    if (rc == 0)
        rc = crdtdb_db_observe(d->db, NULL, on_db_change, d, &d->obs);
    if (rc) {
        slog(srv, "database '%s': %s", id,
             d->db ? crdtdb_db_errmsg(d->db) : crdtdb_env_errmsg(srv->env));
        crdtdb_db_close(d->db);
        free(d);
        return NULL;
    }
    d->srv = srv;
    d->next = srv->dbs;
    srv->dbs = d;
    return d;
}

static void db_release(sdb *d)
{
    if (d->conns)
        return;
    crdtdb_server *srv = d->srv;
    for (sdb **pp = &srv->dbs; *pp; pp = &(*pp)->next)
        if (*pp == d) {
            *pp = d->next;
            break;
        }
    crdtdb_db_close(d->db); /* ends the observer too */
    free(d);
}

static const char *mode_name(crdtdb_sync_mode m)
{
    return m == CRDTDB_SYNC_SERVER_TO_CLIENT ? "server-to-client" : "two-way";
}

static void on_server_session(void *ctx, const crdtdb_session_event *ev)
{
    sconn *c = ctx;
    crdtdb_server *srv = c->d->srv;
    const char *id = crdtdb_db_id(c->d->db);
    switch (ev->type) {
    case CRDTDB_SESSION_READY:
        slog(srv, "%s db '%s': ready, %s", c->peer, id, mode_name(ev->mode));
        break;
    case CRDTDB_SESSION_ERROR:
        if (!ev->remote)
            c->l.status = close_status(ev->error, 0);
        slog(srv, "%s db '%s': %s error %s: %s", c->peer, id, ev->remote ? "peer" : "local",
             crdtdb_errname(ev->error), ev->message ? ev->message : "");
        break;
    default:
        break;
    }
}

static void conn_free(sconn *c)
{
    sdb *d = c->d;
    for (sconn **pp = &d->conns; *pp; pp = &(*pp)->next)
        if (*pp == c) {
            *pp = c->next;
            break;
        }
    d->srv->nconn--;
    crdtdb_session_close(c->l.s);
    free(c);
    db_release(d);
}

static int server_cb(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                     size_t len)
{
    struct lws_context *lctx = lws_get_context(wsi);
    crdtdb_server *srv = lctx ? lws_context_user(lctx) : NULL;
    spss *pss = user;
    char id[CRDTDB_ID_MAX + 1];
    switch (reason) {
    case LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION: {
        char peer[64] = "?";
        lws_get_peer_simple(wsi, peer, sizeof peer);
        if (srv->nconn >= srv->o.max_connections) {
            slog(srv, "%s refused: %zu connections already", peer, srv->nconn);
            return 1;
        }
        if (path_db_id(wsi, id)) {
            slog(srv, "%s refused: not a /v1/db/<id> path", peer);
            return 1;
        }
        return 0;
    }
    case LWS_CALLBACK_ESTABLISHED: {
        if (!pss || path_db_id(wsi, id))
            return -1;
        sdb *d = db_get(srv, id);
        if (!d)
            return -1;
        sconn *c = calloc(1, sizeof *c);
        if (!c) {
            db_release(d);
            return -1;
        }
        c->d = d;
        c->l.wsi = wsi;
        c->l.status = LWS_CLOSE_STATUS_NORMAL;
        snprintf(c->peer, sizeof c->peer, "?");
        lws_get_peer_simple(wsi, c->peer, sizeof c->peer);
        crdtdb_session_options so;
        crdtdb_session_options_init(&so);
        so.flags = CRDTDB_SESSION_SERVER;
        so.mode = srv->o.mode;
        so.on_event = on_server_session;
        so.ctx = c;
        if (crdtdb_session_open(d->db, &so, &c->l.s)) {
            free(c);
            db_release(d);
            return -1;
        }
        c->next = d->conns;
        d->conns = c;
        srv->nconn++;
        pss->c = c;
        slog(srv, "%s db '%s': connected", c->peer, id);
        return 0;
    }
    case LWS_CALLBACK_RECEIVE:
        if (!pss || !pss->c)
            return -1;
        if (!lws_frame_is_binary(wsi)) {
            slog(srv, "%s: text message refused", pss->c->peer);
            lws_close_reason(wsi, LWS_CLOSE_STATUS_UNACCEPTABLE_OPCODE, NULL, 0);
            return -1;
        }
        return link_receive(&pss->c->l, in, len);
    case LWS_CALLBACK_SERVER_WRITEABLE: {
        if (!pss || !pss->c)
            return -1;
        sconn *c = pss->c;
        int r = link_writable(&c->l, srv->wbuf);
        if (c->l.pump_err) {
            slog(srv, "%s db '%s': export failed: %s", c->peer, crdtdb_db_id(c->d->db),
                 crdtdb_session_errmsg(c->l.s));
            c->l.pump_err = 0;
        }
        return r;
    }
    case LWS_CALLBACK_CLOSED:
    case LWS_CALLBACK_WSI_DESTROY:
        if (pss && pss->c) {
            sconn *c = pss->c;
            pss->c = NULL;
            if (!srv->closing)
                slog(srv, "%s db '%s': disconnected%s%s", c->peer, crdtdb_db_id(c->d->db),
                     crdtdb_session_closed(c->l.s) ? ": " : "",
                     crdtdb_session_closed(c->l.s) ? crdtdb_session_errmsg(c->l.s) : "");
            conn_free(c);
        }
        break;
    default:
        break;
    }
    return lws_callback_http_dummy(wsi, reason, user, in, len);
}

int crdtdb_server_open(crdtdb_env *env, const crdtdb_server_options *opts, crdtdb_server **out)
{
    if (!out)
        return CRDTDB_EINVAL;
    *out = NULL;
    crdtdb_server_options o;
    if (opts)
        o = *opts;
    else
        crdtdb_server_options_init(&o);
    if (!env || (!o.tls_cert != !o.tls_key) || o.port < 0 || o.port > 65535 ||
        (o.ncoll && !o.collections))
        return CRDTDB_EINVAL;
    for (size_t i = 0; i < o.ncoll; i++)
        if (!o.collections[i])
            return CRDTDB_EINVAL;
    if (!o.host || !*o.host)
        o.host = "127.0.0.1";
    if (o.mode != CRDTDB_SYNC_SERVER_TO_CLIENT)
        o.mode = CRDTDB_SYNC_TWO_WAY;
    if (!o.max_connections)
        o.max_connections = 1024;
    crdtdb_server *srv = calloc(1, sizeof *srv);
    if (!srv)
        return CRDTDB_ENOMEM;
    srv->env = env;
    srv->o = o;
    srv->host = dupstr(o.host);
    srv->cert = dupstr(o.tls_cert);
    srv->key = dupstr(o.tls_key);
    srv->colls = o.ncoll ? calloc(o.ncoll, sizeof *srv->colls) : NULL;
    srv->wbuf = malloc(LWS_PRE + WS_CHUNK);
    int oom = !srv->host || (o.tls_cert && (!srv->cert || !srv->key)) ||
              (o.ncoll && !srv->colls) || !srv->wbuf;
    for (size_t i = 0; !oom && i < o.ncoll; i++)
        oom = !(srv->colls[i] = dupstr(o.collections[i]));
    if (oom) {
        crdtdb_server_close(srv);
        return CRDTDB_ENOMEM;
    }
    srv->o.host = srv->host;
    srv->o.tls_cert = srv->cert;
    srv->o.tls_key = srv->key;
    srv->o.collections = NULL;

    srv->protocols[0].name = WS_PROTOCOL;
    srv->protocols[0].callback = server_cb;
    srv->protocols[0].per_session_data_size = sizeof(spss);
    srv->protocols[0].rx_buffer_size = WS_CHUNK;

    struct lws_context_creation_info info;
    memset(&info, 0, sizeof info);
    info.port = o.port;
    info.iface = srv->host;
    info.protocols = srv->protocols;
    info.user = srv;
    info.gid = -1;
    info.uid = -1;
    if (!strchr(srv->host, ':'))
        info.options |= LWS_SERVER_OPTION_DISABLE_IPV6;
    if (srv->cert) {
        info.options |= LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
        info.ssl_cert_filepath = srv->cert;
        info.ssl_private_key_filepath = srv->key;
    }
    srv->ctx = lws_create_context(&info);
    if (!srv->ctx) {
        slog(srv, "cannot listen on %s:%d", srv->host, o.port);
        crdtdb_server_close(srv);
        return CRDTDB_EIO;
    }
    struct lws_vhost *vh = lws_get_vhost_by_name(srv->ctx, "default");
    srv->port = vh ? lws_get_vhost_listen_port(vh) : o.port;
    if (srv->port <= 0) {
        slog(srv, "cannot listen on %s:%d", srv->host, o.port);
        crdtdb_server_close(srv);
        return CRDTDB_EIO;
    }
    slog(srv, "listening on %s://%s:%d", srv->cert ? "wss" : "ws", srv->host, srv->port);
    *out = srv;
    return 0;
}

int crdtdb_server_port(const crdtdb_server *s) { return s ? s->port : 0; }

int crdtdb_server_run(crdtdb_server *s, int timeout_ms)
{
    if (!s || !s->ctx)
        return CRDTDB_EINVAL;
    /* commits by other handles or processes reach the observers here */
    for (sdb *d = s->dbs; d; d = d->next)
        if (d->conns)
            (void)crdtdb_db_poll(d->db, NULL);
    int rc = service(s->ctx, &s->sul, timeout_ms);
    if (rc)
        slog(s, "event loop failed");
    return rc;
}

void crdtdb_server_close(crdtdb_server *s)
{
    if (!s)
        return;
    s->closing = 1;
    if (s->ctx)
        lws_context_destroy(s->ctx); /* closes every connection */
    while (s->dbs) { /* none left normally: connections release them */
        sdb *d = s->dbs;
        while (d->conns)
            conn_free(d->conns); /* frees d with the last one */
        if (s->dbs == d) {
            s->dbs = d->next;
            crdtdb_db_close(d->db);
            free(d);
        }
    }
    for (size_t i = 0; s->colls && i < s->o.ncoll; i++)
        free(s->colls[i]);
    free(s->colls);
    free(s->host);
    free(s->cert);
    free(s->key);
    free(s->wbuf);
    free(s);
}

/* ------------------------------------------------------------- client */

struct crdtdb_client {
    crdtdb_db *db;
    crdtdb_client_options o;
    char *url;
    char *tls_ca;
    char host[256];
    char path[sizeof WS_PREFIX + 3 * CRDTDB_ID_MAX];
    int port;
    int tls;
    struct lws_protocols protocols[2];
    struct lws_context *ctx;
    lws_sorted_usec_list_t sul;
    unsigned char *wbuf;
    crdtdb_observer *obs;
    wslink l;
    int connecting; /* a connection attempt or connection exists */
    int ready;
    int made_readonly;
    unsigned attempt;
    uint64_t next_ms;
    int closing;
};

void crdtdb_client_options_init(crdtdb_client_options *o)
{
    memset(o, 0, sizeof *o);
    o->mode = CRDTDB_SYNC_TWO_WAY;
    o->backoff_min_ms = 100;
    o->backoff_max_ms = 30000;
}

/* The connection is gone: drop its session, schedule the next attempt. */
static void client_down(crdtdb_client *c)
{
    if (!c->connecting)
        return;
    c->connecting = 0;
    c->ready = 0;
    c->l.wsi = NULL;
    crdtdb_session_close(c->l.s);
    c->l.s = NULL;
    uint64_t d = c->o.backoff_min_ms;
    for (unsigned i = 0; i < c->attempt && d < c->o.backoff_max_ms; i++)
        d *= 2;
    if (d > c->o.backoff_max_ms)
        d = c->o.backoff_max_ms;
    if (c->attempt < 64)
        c->attempt++;
    /* full jitter over the upper half: between d/2 and d */
    uint64_t half = d / 2;
    d = half + randombytes_uniform((uint32_t)(d - half + 1));
    c->next_ms = now_ms() + d;
}

static void on_client_session(void *ctx, const crdtdb_session_event *ev)
{
    crdtdb_client *c = ctx;
    if (ev->type == CRDTDB_SESSION_READY) {
        c->ready = 1;
        c->attempt = 0;
        if (ev->mode == CRDTDB_SYNC_SERVER_TO_CLIENT)
            c->made_readonly = 1;
    } else if (ev->type == CRDTDB_SESSION_ERROR && !ev->remote) {
        c->l.status = close_status(ev->error, 0);
    } else if (ev->type == CRDTDB_SESSION_CLOSED) {
        c->ready = 0;
    }
    if (c->o.on_event)
        c->o.on_event(c->o.ctx, ev);
}

static void on_client_change(void *ctx, const crdtdb_event *ev)
{
    (void)ev;
    crdtdb_client *c = ctx;
    if (c->l.wsi && c->l.s && !crdtdb_session_closed(c->l.s))
        lws_callback_on_writable(c->l.wsi);
}

static int client_cb(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                     size_t len)
{
    struct lws_context *lctx = lws_get_context(wsi);
    crdtdb_client *c = lctx ? lws_context_user(lctx) : NULL;
    if (!c)
        return lws_callback_http_dummy(wsi, reason, user, in, len);
    switch (reason) {
    case LWS_CALLBACK_CLIENT_ESTABLISHED: {
        if (c->closing)
            return -1;
        c->l.wsi = wsi;
        c->l.status = LWS_CLOSE_STATUS_NORMAL;
        crdtdb_session_options so;
        crdtdb_session_options_init(&so);
        so.mode = c->o.mode;
        so.on_event = on_client_session;
        so.ctx = c;
        if (crdtdb_session_open(c->db, &so, &c->l.s))
            return -1;
        lws_callback_on_writable(wsi); /* the hello */
        return 0;
    }
    case LWS_CALLBACK_CLIENT_RECEIVE:
        if (wsi != c->l.wsi)
            return -1;
        return link_receive(&c->l, in, len);
    case LWS_CALLBACK_CLIENT_WRITEABLE:
        if (wsi != c->l.wsi)
            return -1;
        return link_writable(&c->l, c->wbuf);
    case LWS_CALLBACK_CLIENT_CONNECTION_ERROR:
    case LWS_CALLBACK_CLIENT_CLOSED:
    case LWS_CALLBACK_WSI_DESTROY:
        if (wsi == c->l.wsi || (c->connecting && !c->l.s))
            client_down(c);
        break;
    default:
        break;
    }
    return lws_callback_http_dummy(wsi, reason, user, in, len);
}

/* "%XX" for everything but RFC 3986 unreserved characters. */
static void urlencode(char *out, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
            ch == '-' || ch == '.' || ch == '_' || ch == '~') {
            *out++ = (char)ch;
        } else {
            *out++ = '%';
            *out++ = hex[ch >> 4];
            *out++ = hex[ch & 15];
        }
    }
    *out = 0;
}

int crdtdb_client_open(crdtdb_db *db, const crdtdb_client_options *opts, crdtdb_client **out)
{
    if (!out)
        return CRDTDB_EINVAL;
    *out = NULL;
    if (!db || !opts || !opts->url)
        return CRDTDB_EINVAL;
    crdtdb_client *c = calloc(1, sizeof *c);
    if (!c)
        return CRDTDB_ENOMEM;
    c->db = db;
    c->o = *opts;
    if (c->o.mode != CRDTDB_SYNC_SERVER_TO_CLIENT)
        c->o.mode = CRDTDB_SYNC_TWO_WAY;
    if (!c->o.backoff_min_ms)
        c->o.backoff_min_ms = 1;
    if (c->o.backoff_max_ms < c->o.backoff_min_ms)
        c->o.backoff_max_ms = c->o.backoff_min_ms;
    c->url = dupstr(opts->url);
    c->tls_ca = dupstr(opts->tls_ca);
    c->wbuf = malloc(LWS_PRE + WS_CHUNK);
    if (!c->url || !c->wbuf || (opts->tls_ca && !c->tls_ca)) {
        crdtdb_client_close(c);
        return CRDTDB_ENOMEM;
    }
    char *tmp = dupstr(opts->url);
    const char *prot, *ads, *path;
    if (!tmp || lws_parse_uri(tmp, &prot, &ads, &c->port, &path) ||
        (strcmp(prot, "ws") && strcmp(prot, "wss")) || !*ads || strlen(ads) >= sizeof c->host) {
        int rc = tmp ? CRDTDB_EINVAL : CRDTDB_ENOMEM;
        free(tmp);
        crdtdb_client_close(c);
        return rc;
    }
    c->tls = strcmp(prot, "wss") == 0;
    snprintf(c->host, sizeof c->host, "%s", ads);
    free(tmp);
    memcpy(c->path, WS_PREFIX, strlen(WS_PREFIX));
    urlencode(c->path + strlen(WS_PREFIX), crdtdb_db_id(db));
    c->o.url = c->url;
    c->o.tls_ca = c->tls_ca;

    c->protocols[0].name = WS_PROTOCOL;
    c->protocols[0].callback = client_cb;
    c->protocols[0].rx_buffer_size = WS_CHUNK;
    struct lws_context_creation_info info;
    memset(&info, 0, sizeof info);
    info.port = CONTEXT_PORT_NO_LISTEN;
    info.protocols = c->protocols;
    info.user = c;
    info.gid = -1;
    info.uid = -1;
    if (c->tls) {
        info.options |= LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
        info.client_ssl_ca_filepath = c->tls_ca; /* NULL: the system's store */
    }
    c->ctx = lws_create_context(&info);
    if (!c->ctx) {
        crdtdb_client_close(c);
        return CRDTDB_EIO;
    }
    int rc = crdtdb_db_observe(db, NULL, on_client_change, c, &c->obs);
    if (rc) {
        crdtdb_client_close(c);
        return rc;
    }
    if (c->o.mode == CRDTDB_SYNC_SERVER_TO_CLIENT)
        c->made_readonly = 1;
    c->next_ms = now_ms();
    *out = c;
    return 0;
}

static void client_connect(crdtdb_client *c)
{
    struct lws_client_connect_info ci;
    memset(&ci, 0, sizeof ci);
    ci.context = c->ctx;
    ci.address = c->host;
    ci.port = c->port;
    ci.ssl_connection = c->tls ? LCCSCF_USE_SSL : 0;
    ci.path = c->path;
    ci.host = c->host;
    ci.origin = c->host;
    ci.protocol = WS_PROTOCOL;
    ci.local_protocol_name = WS_PROTOCOL;
    ci.ietf_version_or_minus_one = -1;
    c->connecting = 1;
    c->l.s = NULL;
    c->l.wsi = NULL;
    if (!lws_client_connect_via_info(&ci))
        client_down(c);
}

int crdtdb_client_run(crdtdb_client *c, int timeout_ms)
{
    if (!c || !c->ctx)
        return CRDTDB_EINVAL;
    uint64_t now = now_ms();
    if (!c->connecting && now >= c->next_ms) {
        client_connect(c);
        now = now_ms();
    }
    if (!c->connecting && c->next_ms > now && c->next_ms - now < (uint64_t)timeout_ms)
        timeout_ms = (int)(c->next_ms - now);
    return service(c->ctx, &c->sul, timeout_ms);
}

int crdtdb_client_connected(const crdtdb_client *c)
{
    return c && c->ready && c->l.s && !crdtdb_session_closed(c->l.s);
}

void crdtdb_client_close(crdtdb_client *c)
{
    if (!c)
        return;
    c->closing = 1;
    crdtdb_observer_close(c->obs);
    if (c->ctx)
        lws_context_destroy(c->ctx);
    c->connecting = 1;
    client_down(c); /* frees a session the context left */
    if (c->made_readonly)
        crdtdb_db_set_readonly(c->db, 0);
    free(c->url);
    free(c->tls_ca);
    free(c->wbuf);
    free(c);
}
