/*
 * The WebSocket client: one session per connection to ws[s]://host/v1/db/<id>,
 * reconnecting with exponential backoff and jitter on a libwebsockets timer,
 * so the same code runs in its own context (crdtdb_client_open) or inside a
 * server's (its peer links).  Connections find their client through the
 * wsi's opaque user data, never the context's.
 */
#include <arpa/inet.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "transport/ws.h"
#include "transport/presence.h"
#include "transport/ws_presence.h"

#define KNOWN_MAX 65536 /* presence entries a client keeps track of */

/* An entry the server told us of: a leave is reported for it when the
 * connection drops. */
typedef struct known {
    uint8_t key[CRDTDB_PRESENCE_KEY_BYTES];
    uint8_t replica[CRDTDB_REPLICA_ID_BYTES];
    uint64_t version;
    char *user;
} known;

struct crdtdb_client {
    crdtdb_db *db;
    crdtdb_client_options o;
    char *url;
    char *tls_ca;
    char *token;
    int denied;  /* the server ended the session: access changed */
    int cleared; /* cleared since the last ready session */
    char host[256];
    char path[sizeof WS_PREFIX + 3 * CRDTDB_ID_MAX];
    int port;
    int tls;
    struct lws_protocols protocols[2];
    struct lws_context *ctx;
    crdtdb__wstail *tail;
    int own_ctx; /* 0: hosted in a server's context */
    void *foreign[1];
    lws_sorted_usec_list_t sul;         /* crdtdb_client_run's wake-up */
    lws_sorted_usec_list_t sul_connect; /* the next connection attempt */
    lws_sorted_usec_list_t sul_flush;   /* acks recorded every WS_POLL_MS */
    unsigned char *wbuf;
    int own_wbuf;
    crdtdb_observer *obs;
    crdtdb__wslink l;
    struct lws *cwsi;  /* the connection, from the attempt on */
    int connecting;    /* a connection attempt or connection exists */
    int ready;
    int two_way;       /* the ready session was granted two-way: what we
                          send is taken, not only what we receive */
    int made_readonly;
    unsigned attempt;
    unsigned attempt_held; /* attempt when the session became ready: a
                              session the server then refused backs off
                              from there, not from the start */
    int closing;
    int leaving;       /* it sent LEAVE: once the connection is gone, no
                          other is made */
    int left;          /* and the owner answered it: it stored the leave */
    int told;          /* the program heard why this connection ends */
    void (*log)(void *ctx, const char *line);
    void *log_ctx;
    /* presence: ours, kept across connections (NULL: none), and the
     * entries of others this connection told us of */
    uint8_t *pstate;
    size_t pstate_len;
    int pres_due;  /* a session became ready during a feed: our state (or,
                      for a link, the hub's entries) goes once it returns */
    known *known;
    size_t nknown, known_cap;
    /* a server's peer link: its presence hub, and its place in it */
    crdtdb__hub *hub;
    crdtdb__pconn pc;
};

void crdtdb_client_options_init(crdtdb_client_options *o)
{
    memset(o, 0, sizeof *o);
    o->mode = CRDTDB_SYNC_TWO_WAY;
    o->backoff_min_ms = 100;
    o->backoff_max_ms = 30000;
}

/* Logs one line, escaped: the details come from the peer server. */
static void clog_line(crdtdb_client *c, const char *what, const char *detail)
{
    if (!c->log)
        return;
    char line[768], safe[768];
    snprintf(line, sizeof line, "peer %s db '%s': %s%s%s", c->url,
             WS_QID(crdtdb_db_id(c->db)), what,
             detail ? ": " : "", detail ? detail : "");
    crdtdb__ws_log_escape(safe, sizeof safe, line);
    c->log(c->log_ctx, safe);
}

/* Tells the program the server refused or dropped us: an ERROR event,
 * remote, with no peer. */
static void remote_refusal(crdtdb_client *c, int code, const char *msg)
{
    c->told = 1;
    if (!c->o.on_event)
        return;
    crdtdb_session_event ev = {.type = CRDTDB_SESSION_ERROR,
                               .mode = c->o.mode,
                               .error = code,
                               .message = msg,
                               .remote = 1};
    c->o.on_event(c->o.ctx, &ev);
}

/* The event for an upgrade refused with HTTP `status`, or 0 for none. */
static int refusal_code(unsigned status, const char **msg)
{
    switch (status) {
    case 401:
        *msg = "server: 401 Unauthorized (token)";
        return CRDTDB_EAUTH;
    case 403:
        *msg = "server: 403 Forbidden";
        return CRDTDB_EDENIED;
    case 431:
        *msg = "server: 431 Request Header Fields Too Large (token)";
        return CRDTDB_EAUTH;
    case 429:
        *msg = "server: 429 Too Many Requests (connections from this address or user)";
        return CRDTDB_ELIMIT;
    case 503:
        *msg = "server: 503 Service Unavailable (full)";
        return CRDTDB_ELIMIT;
    default:
        return 0;
    }
}

/*
 * Tells the program a connection could not be made, why and to where:
 * an ERROR event, EIO, not remote.  `why` is libwebsockets' reason (may be
 * NULL); `status` the HTTP status of a refused upgrade, or 0.  Version 4.1
 * says only "Unable to connect" when TCP fails; later ones give an errno.
 */
static void connect_failure(crdtdb_client *c, unsigned status, const char *why)
{
    if (!c->o.on_event)
        return;
    char what[160], msg[512];
    const char *e = why ? strstr(why, "errno ") : NULL;
    int err = e ? atoi(e + 6) : 0;
    if (status)
        snprintf(what, sizeof what, "HTTP %u instead of a WebSocket upgrade", status);
    else if (err > 0) {
        snprintf(what, sizeof what, "%s", strerror(err));
        what[0] = (char)(what[0] >= 'A' && what[0] <= 'Z' ? what[0] - 'A' + 'a' : what[0]);
    } else if (!why || strstr(why, "Unable to connect") || strstr(why, "onnect fail"))
        snprintf(what, sizeof what, "connection refused or host unreachable");
    else if (strstr(why, "SSL") || strstr(why, "ssl") || strstr(why, "TLS") || strstr(why, "tls"))
        snprintf(what, sizeof what, "TLS handshake failed (%.120s)", why);
    else if (strstr(why, "getaddrinfo") || strstr(why, "dns") || strstr(why, "DNS"))
        snprintf(what, sizeof what, "cannot resolve the host name");
    else
        snprintf(what, sizeof what, "%.150s", why);
    snprintf(msg, sizeof msg, "%s: %s:%d", what, c->host, c->port);
    crdtdb_session_event ev = {
        .type = CRDTDB_SESSION_ERROR, .mode = c->o.mode, .error = CRDTDB_EIO, .message = msg};
    c->o.on_event(c->o.ctx, &ev);
}

static void client_connect(crdtdb_client *c);

static void on_flush_due(lws_sorted_usec_list_t *sul)
{
    crdtdb_client *c = lws_container_of(sul, crdtdb_client, sul_flush);
    if (c->closing)
        return;
    if (c->l.s) { /* acks, and a SINCE for a delta refused for clock skew */
        (void)crdtdb_session_flush(c->l.s);
        if (c->l.wsi && crdtdb__ws_held_out(&c->l))
            lws_callback_on_writable(c->l.wsi);
    }
    lws_sul_schedule(c->ctx, 0, &c->sul_flush, on_flush_due, WS_POLL_MS * LWS_US_PER_MS);
}

/* The user's access changed (or is gone): forget the data, start over. */
static void client_forget(crdtdb_client *c, const char *why)
{
    if (c->cleared)
        return;
    c->cleared = 1;
    if (!c->own_ctx) { /* a server's peer link: its data serves others too */
        clog_line(c, why, "kept (a peer link)");
        return;
    }
    if (c->l.s) /* acks now, so none is written back after the clear */
        (void)crdtdb_session_flush(c->l.s);
    int rc = crdtdb_db_clear(c->db);
    clog_line(c, why, rc ? crdtdb_db_errmsg(c->db) : "local copy cleared");
}

static void on_connect_due(lws_sorted_usec_list_t *sul)
{
    crdtdb_client *c = lws_container_of(sul, crdtdb_client, sul_connect);
    if (!c->closing && !c->connecting)
        client_connect(c);
}

/* The entries this connection told us of are gone with it: a leave for
 * each (none while closing: the program is done listening). */
static void presence_gone(crdtdb_client *c)
{
    for (size_t i = 0; i < c->nknown; i++) {
        known *k = &c->known[i];
        if (c->o.on_event && !c->closing) {
            crdtdb_presence p = {k->key, k->user, k->replica, k->version + 1, NULL, 0};
            crdtdb_session_event ev = {
                .type = CRDTDB_SESSION_PRESENCE, .mode = c->o.mode, .presence = &p};
            c->o.on_event(c->o.ctx, &ev);
        }
        free(k->user);
    }
    c->nknown = 0;
}

/* Notes a presence event: a key joins, changes or leaves. */
static void presence_track(crdtdb_client *c, const crdtdb_presence *p)
{
    if (!p || !p->key)
        return;
    size_t i = 0;
    while (i < c->nknown && memcmp(c->known[i].key, p->key, sizeof c->known[i].key) != 0)
        i++;
    if (!p->state) { /* left: forgotten */
        if (i < c->nknown) {
            free(c->known[i].user);
            c->known[i] = c->known[--c->nknown];
        }
        return;
    }
    if (i == c->nknown) {
        if (c->nknown == KNOWN_MAX)
            return;
        if (c->nknown == c->known_cap) {
            size_t cap = c->known_cap ? 2 * c->known_cap : 16;
            known *k = realloc(c->known, cap * sizeof *k);
            if (!k)
                return;
            c->known = k;
            c->known_cap = cap;
        }
        char *u = crdtdb__ws_strdup(p->user ? p->user : "");
        if (!u)
            return;
        memcpy(c->known[i].key, p->key, sizeof c->known[i].key);
        c->known[i].user = u;
        c->nknown++;
    }
    if (p->replica)
        memcpy(c->known[i].replica, p->replica, sizeof c->known[i].replica);
    c->known[i].version = p->version;
}

/* An established connection that ended with no word from the session or
 * the server (a killed server, a cut network): the program hears of it at
 * once, as of a connection that cannot be made, not at the next failed
 * attempt. */
static void connection_lost(crdtdb_client *c)
{
    if (c->told || c->closing || c->leaving || !c->l.s || crdtdb_session_closed(c->l.s))
        return;
    c->told = 1;
    if (!c->o.on_event)
        return;
    char msg[320];
    snprintf(msg, sizeof msg, "connection lost: %s:%d", c->host, c->port);
    crdtdb_session_event ev = {
        .type = CRDTDB_SESSION_ERROR, .mode = c->o.mode, .error = CRDTDB_EIO, .message = msg};
    c->o.on_event(c->o.ctx, &ev);
}

/* The connection is gone: drop its session, schedule the next attempt. */
static void client_down(crdtdb_client *c)
{
    if (!c->connecting)
        return;
    if (c->ready)
        clog_line(c, "disconnected", NULL);
    connection_lost(c);
    c->connecting = 0;
    c->ready = 0;
    c->pres_due = 0;
    crdtdb__hub_leave(c->hub, &c->pc);
    presence_gone(c);
    c->l.wsi = NULL;
    c->cwsi = NULL;
    if (c->leaving) /* the owner answered: it stored our leave */
        c->left = crdtdb_session_left(c->l.s);
    crdtdb_session_close(c->l.s);
    c->l.s = NULL;
    if (c->closing || c->leaving)
        return;
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
    lws_sul_schedule(c->ctx, 0, &c->sul_connect, on_connect_due, (lws_usec_t)d * LWS_US_PER_MS);
}

static void on_client_session(void *ctx, const crdtdb_session_event *ev)
{
    crdtdb_client *c = ctx;
    if (c->hub && (ev->type == CRDTDB_SESSION_PRESENCE || ev->type == CRDTDB_SESSION_MESSAGE)) {
        if (ev->type == CRDTDB_SESSION_PRESENCE) /* a peer server's: relayed */
            crdtdb__hub_presence(c->hub, &c->pc, ev->presence);
        else
            crdtdb__hub_message(c->hub, &c->pc, ev->msg);
        return;
    }
    if (ev->type == CRDTDB_SESSION_PRESENCE)
        presence_track(c, ev->presence);
    if (ev->type == CRDTDB_SESSION_READY) {
        c->ready = 1;
        c->two_way = ev->mode == CRDTDB_SYNC_TWO_WAY;
        c->cleared = 0;
        c->denied = 0;
        c->attempt_held = c->attempt;
        c->attempt = 0;
        c->pres_due = 1;
        if (c->hub) {
            memcpy(c->pc.replica, ev->peer, sizeof c->pc.replica);
            crdtdb__hub_join(c->hub, &c->pc);
        }
        if (ev->mode == CRDTDB_SYNC_SERVER_TO_CLIENT)
            c->made_readonly = 1;
        clog_line(c, "ready", NULL);
    } else if (ev->type == CRDTDB_SESSION_ERROR) {
        if (!ev->remote)
            c->l.status = crdtdb__ws_close_status(ev->error, 0);
        else if (ev->error == CRDTDB_EREVOKED) /* access changed, or the database
                                                  expired: CLOSED follows */
            c->denied = 1;
        if (ev->remote && c->attempt < c->attempt_held)
            c->attempt = c->attempt_held; /* a server that accepts, then refuses
                                             (EFORK, ENOCOLL, ...), is not asked
                                             again every backoff_min_ms */
        clog_line(c, crdtdb_errname(ev->error), ev->message);
    } else if (ev->type == CRDTDB_SESSION_CLOSED) {
        c->ready = 0;
        c->pres_due = 0;
        crdtdb__hub_leave(c->hub, &c->pc);
        presence_gone(c); /* before the program hears of the close */
    }
    if (c->o.on_event)
        c->o.on_event(c->o.ctx, ev);
    if (ev->type == CRDTDB_SESSION_CLOSED && c->denied) {
        c->denied = 0;
        client_forget(c, "access changed");
    }
}

static void on_client_change(void *ctx, const crdtdb_event *ev)
{
    (void)ev;
    crdtdb_client *c = ctx;
    if (c->l.wsi && c->l.s && crdtdb_session_want_write(c->l.s))
        crdtdb__ws_wake(&c->l);
}

/* A new session is open (and its feed returned): our state goes again,
 * or, for a server's link, the entries of the hub. */
static void presence_ready(crdtdb_client *c)
{
    c->pres_due = 0;
    if (c->hub)
        crdtdb__hub_snapshot(c->hub, &c->pc);
    else if (c->pstate)
        (void)crdtdb_session_presence_set(c->l.s, c->pstate, c->pstate_len);
    crdtdb__ws_wake(&c->l);
}

static void client_wake(crdtdb__pconn *pc)
{
    crdtdb_client *c = lws_container_of(pc, crdtdb_client, pc);
    if (c->l.wsi)
        lws_callback_on_writable(c->l.wsi);
}

void crdtdb__client_set_hub(crdtdb_client *c, crdtdb__hub *hub)
{
    c->hub = hub;
    c->pc.l = &c->l;
    c->pc.link = 1;
    c->pc.wake = client_wake;
}

/* Open, handshake done, and not waiting for presence_ready. */
static int session_open(const crdtdb_client *c)
{
    return c->ready && c->l.s && c->l.wsi && !c->pres_due && !crdtdb_session_closed(c->l.s);
}

int crdtdb_client_presence_set(crdtdb_client *c, const uint8_t *state, size_t len)
{
    if (!c || (!state && len) || c->hub)
        return CRDTDB_EINVAL;
    const char *why;
    int rc = state ? crdtdb__presence_check(state, len, CRDTDB_PRESENCE_MAX, 1, &why) : 0;
    (void)why; /* the code says it; a client has no message slot */
    uint8_t *copy = NULL;
    if (!rc && state && !(copy = malloc(len)))
        rc = CRDTDB_ENOMEM;
    if (rc)
        return rc;
    if (copy)
        memcpy(copy, state, len);
    free(c->pstate);
    c->pstate = copy;
    c->pstate_len = copy ? len : 0;
    if (!session_open(c))
        return 0; /* sent once a session is */
    rc = crdtdb_session_presence_set(c->l.s, state, len);
    lws_callback_on_writable(c->l.wsi);
    return rc;
}

int crdtdb_client_message_send(crdtdb_client *c, const char *to, const uint8_t *body,
                               size_t len)
{
    if (!c || !body || c->hub || (to && strlen(to) > CRDTDB_ID_MAX))
        return CRDTDB_EINVAL;
    const char *why;
    int rc = crdtdb__presence_check(body, len, CRDTDB_PRESENCE_MAX, 0, &why);
    (void)why;
    if (rc)
        return rc;
    if (!session_open(c))
        return CRDTDB_EBUSY; /* not connected: messages are not kept */
    rc = crdtdb_session_message_send(c->l.s, to, body, len);
    lws_callback_on_writable(c->l.wsi);
    return rc;
}

int crdtdb__ws_client_cb(struct lws *wsi, enum lws_callback_reasons reason, void *user,
                         void *in, size_t len)
{
    crdtdb_client *c = lws_get_opaque_user_data(wsi);
    if (reason == LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION)
        return 1; /* this protocol only connects out */
    if (!c)
        return lws_callback_http_dummy(wsi, reason, user, in, len);
    switch (reason) {
    case LWS_CALLBACK_CLIENT_ESTABLISHED: {
        if (c->closing || wsi != c->cwsi)
            return -1;
        c->l.wsi = wsi;
        c->told = 0;
        c->l.status = LWS_CLOSE_STATUS_NORMAL;
        c->l.rx_ms = 0; /* a new connection: nothing received, no linger */
        c->l.lingering = 0;
        crdtdb_session_options so;
        crdtdb_session_options_init(&so);
        so.mode = c->o.mode;
        so.flags = CRDTDB_SESSION_YIELD | (c->own_ctx ? 0 : CRDTDB_SESSION_NO_PURGE);
        so.on_event = on_client_session;
        so.ctx = c;
        if (crdtdb_session_open(c->db, &so, &c->l.s))
            return -1;
        crdtdb__ws_wake(&c->l); /* the hello */
        return 0;
    }
    case LWS_CALLBACK_CLIENT_RECEIVE: {
        if (wsi != c->l.wsi)
            return -1;
        int r = crdtdb__ws_receive(&c->l, in, len);
        if (c->pres_due && c->ready && c->l.s && !crdtdb_session_closed(c->l.s))
            presence_ready(c);
        return r;
    }
    case LWS_CALLBACK_CLIENT_WRITEABLE:
        if (wsi != c->l.wsi)
            return -1;
        return crdtdb__ws_writable(&c->l, c->wbuf);
    case LWS_CALLBACK_TIMER: /* a lingering close: look again */
        if (wsi == c->l.wsi)
            lws_callback_on_writable(wsi);
        break;
    case LWS_CALLBACK_CLIENT_APPEND_HANDSHAKE_HEADER:
        if (c->token && wsi == c->cwsi) {
            unsigned char **p = (unsigned char **)in, *end = *p + len;
            char v[CRDTDB_JWT_MAX + 8];
            int n = snprintf(v, sizeof v, "Bearer %s", c->token);
            int r = n > 0 && (size_t)n < sizeof v
                        ? lws_add_http_header_by_token(wsi, WSI_TOKEN_HTTP_AUTHORIZATION,
                                                       (unsigned char *)v, n, p, end)
                        : -1;
            sodium_memzero(v, sizeof v);
            if (r)
                return -1;
        }
        break;
    case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
        /* a close the session did not announce (the server's limits and
         * timeouts): the program hears why */
        if (wsi == c->l.wsi && c->l.s && !crdtdb_session_closed(c->l.s) && in && len >= 2) {
            const uint8_t *p = in;
            unsigned st = (unsigned)p[0] << 8 | p[1];
            if (st != LWS_CLOSE_STATUS_NORMAL && st != LWS_CLOSE_STATUS_GOINGAWAY) {
                char msg[160];
                snprintf(msg, sizeof msg, "server closed the connection (%u): %.*s", st,
                         (int)(len - 2 < 123 ? len - 2 : 123), (const char *)p + 2);
                clog_line(c, "closed", msg);
                remote_refusal(c, CRDTDB_ELIMIT, msg);
            }
        }
        break;
    case LWS_CALLBACK_CLIENT_CONNECTION_ERROR:
        if (wsi == c->cwsi) {
            unsigned status = lws_http_client_http_response(wsi);
            clog_line(c, "cannot connect", in && len ? (const char *)in : NULL);
            if (status == 403 && c->token) /* this user may no longer see it */
                client_forget(c, "access refused");
            const char *msg;
            int code = refusal_code(status, &msg);
            if (code)
                remote_refusal(c, code, msg);
            else { /* the program hears why, at once, not after its timeout */
                char why[160];
                snprintf(why, sizeof why, "%.*s", in ? (int)(len < 159 ? len : 159) : 0,
                         in ? (const char *)in : "");
                connect_failure(c, status, *why ? why : NULL);
            }
        }
        /* fall through */
    case LWS_CALLBACK_CLIENT_CLOSED:
    case LWS_CALLBACK_WSI_DESTROY:
        if (wsi == c->cwsi) {
            lws_set_opaque_user_data(wsi, NULL);
            client_down(c);
        }
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
    ci.local_protocol_name = c->own_ctx ? WS_PROTOCOL : WS_PEER_PROTOCOL;
    ci.ietf_version_or_minus_one = -1;
    ci.opaque_user_data = c;
    ci.pwsi = &c->cwsi;
    c->connecting = 1;
    c->l.s = NULL;
    c->l.wsi = NULL;
    if (!lws_client_connect_via_info(&ci)) {
        c->cwsi = NULL;
        unsigned char ip[16];
        int numeric = inet_pton(AF_INET, c->host, ip) == 1 || inet_pton(AF_INET6, c->host, ip) == 1;
        if (c->connecting) /* else the error callback told already */
            connect_failure(c, 0, numeric ? "cannot start a connection" : "getaddrinfo failed");
        client_down(c);
    }
}

static void free_token(crdtdb_client *c)
{
    if (c->token) {
        sodium_memzero(c->token, strlen(c->token));
        free(c->token);
    }
}

void crdtdb_client_close(crdtdb_client *c)
{
    if (!c)
        return;
    if (!c->own_ctx) {
        crdtdb__client_close_hosted(c, 0);
        return;
    }
    c->closing = 1;
    crdtdb_observer_close(c->obs);
    if (c->ctx) {
        lws_sul_cancel(&c->sul_connect);
        lws_sul_cancel(&c->sul_flush);
        /* on a libuv loop the connection's last callbacks (WSI_DESTROY)
         * come after the close, from the loop, once c is freed: they must
         * not find it (a connection still in its HTTP upgrade gets no
         * callback of ours before then) */
        if (c->cwsi)
            lws_set_opaque_user_data(c->cwsi, NULL);
        crdtdb__ws_ctx_close(c->ctx, c->tail);
    }
    c->connecting = 1;
    client_down(c); /* frees a session the context left */
    if (c->made_readonly)
        crdtdb_db_set_readonly(c->db, 0);
    presence_gone(c);
    free(c->known);
    free(c->pstate);
    free(c->url);
    free(c->tls_ca);
    free_token(c);
    free(c->wbuf);
    free(c);
}

void crdtdb__client_stop_hosted(crdtdb_client *c)
{
    c->closing = 1;
    lws_sul_cancel(&c->sul_connect);
    lws_sul_cancel(&c->sul_flush);
}

void crdtdb__client_close_hosted(crdtdb_client *c, int ctx_gone)
{
    if (!c)
        return;
    c->closing = 1;
    crdtdb_observer_close(c->obs);
    if (!ctx_gone) {
        lws_sul_cancel(&c->sul_connect);
        lws_sul_cancel(&c->sul_flush);
        if (c->cwsi) { /* closed by lws later, without us */
            lws_set_opaque_user_data(c->cwsi, NULL);
            lws_set_timeout(c->cwsi, PENDING_TIMEOUT_KILLED_BY_PARENT, LWS_TO_KILL_ASYNC);
        }
    }
    c->connecting = 1;
    client_down(c);
    if (c->made_readonly)
        crdtdb_db_set_readonly(c->db, 0);
    crdtdb__hub_leave(c->hub, &c->pc);
    presence_gone(c);
    free(c->known);
    free(c->url);
    free(c->tls_ca);
    free_token(c);
    free(c);
}

/* A token the server can take: at most CRDTDB_JWT_MAX bytes (else it
 * answers 431, on every reconnect), of RFC 6750 b64token characters
 * (nothing that could end or add a header).  0, ETOOBIG or EINVAL. */
static int token_check(const char *t)
{
    size_t n = strlen(t);
    if (n > CRDTDB_JWT_MAX)
        return CRDTDB_ETOOBIG;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)t[i];
        int ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                 (ch >= '0' && ch <= '9') || strchr("-._~+/", ch) ||
                 (ch == '=' && i > 0); /* padding, at the end */
        if (!ok || (i > 0 && t[i - 1] == '=' && ch != '='))
            return CRDTDB_EINVAL;
    }
    return 0;
}

/* Everything but the context: options, URL, observer. */
static int client_new(crdtdb_db *db, const crdtdb_client_options *opts, crdtdb_client **out)
{
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
    c->url = crdtdb__ws_strdup(opts->url);
    c->tls_ca = crdtdb__ws_strdup(opts->tls_ca);
    c->token = crdtdb__ws_strdup(opts->token);
    char *tmp = crdtdb__ws_strdup(opts->url);
    int rc = !c->url || !tmp || (opts->tls_ca && !c->tls_ca) || (opts->token && !c->token)
                 ? CRDTDB_ENOMEM
                 : 0;
    if (!rc && opts->token)
        rc = token_check(opts->token);
    const char *prot, *ads, *path;
    if (!rc && (lws_parse_uri(tmp, &prot, &ads, &c->port, &path) ||
                (strcmp(prot, "ws") && strcmp(prot, "wss")) || !*ads ||
                strlen(ads) >= sizeof c->host))
        rc = CRDTDB_EINVAL;
    if (!rc) {
        c->tls = strcmp(prot, "wss") == 0;
        snprintf(c->host, sizeof c->host, "%s", ads);
        memcpy(c->path, WS_PREFIX, strlen(WS_PREFIX));
        urlencode(c->path + strlen(WS_PREFIX), crdtdb_db_id(db));
        c->o.url = c->url;
        c->o.tls_ca = c->tls_ca;
        c->o.token = c->token;
        c->o.uv_loop = NULL;
    }
    free(tmp);
    if (rc) {
        free(c->url);
        free(c->tls_ca);
        free_token(c);
        free(c);
        return rc;
    }
    *out = c;
    return 0;
}

/* Observes db and schedules the first attempt at once. */
static int client_start(crdtdb_client *c)
{
    int rc = crdtdb_db_observe(c->db, NULL, on_client_change, c, &c->obs);
    if (!rc)
        crdtdb_observer_commits(c->obs);
    if (rc)
        return rc;
    if (c->o.mode == CRDTDB_SYNC_SERVER_TO_CLIENT)
        c->made_readonly = 1;
    lws_sul_schedule(c->ctx, 0, &c->sul_connect, on_connect_due, 1);
    lws_sul_schedule(c->ctx, 0, &c->sul_flush, on_flush_due, WS_POLL_MS * LWS_US_PER_MS);
    return 0;
}

int crdtdb_client_open(crdtdb_db *db, const crdtdb_client_options *opts, crdtdb_client **out)
{
    if (!out)
        return CRDTDB_EINVAL;
    crdtdb_client *c;
    int rc = client_new(db, opts, &c);
    if (rc)
        return rc;
    c->own_ctx = 1;
    c->wbuf = malloc(LWS_PRE + WS_CHUNK);
    if (!c->wbuf) {
        crdtdb_client_close(c);
        return CRDTDB_ENOMEM;
    }
    c->protocols[0].name = WS_PROTOCOL;
    c->protocols[0].callback = crdtdb__ws_client_cb;
    c->protocols[0].rx_buffer_size = WS_CHUNK;
    struct lws_context_creation_info info;
    crdtdb__ws_ctx_info(&info, opts->uv_loop, c->foreign);
    info.port = CONTEXT_PORT_NO_LISTEN;
    info.protocols = c->protocols;
    if (c->tls) {
        info.options |= LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
        info.client_ssl_ca_filepath = c->tls_ca; /* NULL: the system's store */
    }
    c->ctx = crdtdb__ws_ctx_open(&info, opts->uv_loop, &c->tail);
    if (!c->ctx) {
        crdtdb_client_close(c);
        return CRDTDB_EIO;
    }
    c->o.uv_loop = opts->uv_loop;
    if ((rc = client_start(c))) {
        crdtdb_client_close(c);
        return rc;
    }
    *out = c;
    return 0;
}

int crdtdb__client_open_hosted(crdtdb_db *db, const crdtdb_client_options *opts,
                               struct lws_context *ctx, unsigned char *wbuf,
                               void (*log)(void *ctx, const char *line), void *log_ctx,
                               crdtdb_client **out)
{
    crdtdb_client *c;
    int rc = client_new(db, opts, &c);
    if (rc)
        return rc;
    c->ctx = ctx;
    c->wbuf = wbuf; /* the server's: all run on one thread */
    c->log = log;
    c->log_ctx = log_ctx;
    if ((rc = client_start(c))) {
        crdtdb__client_close_hosted(c, 0);
        return rc;
    }
    *out = c;
    return 0;
}

int crdtdb_client_run(crdtdb_client *c, int timeout_ms)
{
    if (!c || !c->ctx || !c->own_ctx || c->o.uv_loop)
        return CRDTDB_EINVAL;
    return crdtdb__ws_service(c->ctx, &c->sul, timeout_ms);
}

int crdtdb_client_synced(const crdtdb_client *c)
{
    return crdtdb_client_connected(c) && crdtdb_session_synced(c->l.s);
}

const uint8_t *crdtdb__client_peer(const crdtdb_client *c)
{
    return c && c->hub && crdtdb_client_connected(c) ? c->pc.replica : NULL;
}

int crdtdb__client_leave_hosted(crdtdb_client *c)
{
    if (!c)
        return 0;
    c->leaving = 1;
    lws_sul_cancel(&c->sul_connect);
    if (!crdtdb_client_connected(c) || crdtdb_session_leave(c->l.s))
        return 0;
    crdtdb__ws_wake(&c->l); /* LEAVE goes out; the owner's answer closes */
    return 1;
}

int crdtdb__client_gone(const crdtdb_client *c)
{
    return !c || !c->connecting;
}

int crdtdb__client_left(const crdtdb_client *c)
{
    return c && c->left && !c->connecting;
}

const char *crdtdb__client_unheld(const crdtdb_client *c)
{
    if (!c || !crdtdb_client_connected(c))
        return "not connected";
    if (!c->two_way)
        return "not granted two-way";
    return crdtdb_session_unsynced(c->l.s);
}

int crdtdb_client_connected(const crdtdb_client *c)
{
    return c && c->ready && c->l.s && !crdtdb_session_closed(c->l.s);
}
