/*
 * The WebSocket server: /v1/db/<url-encoded id> maps to one shared database
 * handle and one server-side session per connection.  Every commit on a
 * handle (a client's delta, a peer link's, or another process's seen by
 * polling) wakes every connection of that database.  Peer links
 * (crdtdb_server_peer) are clients hosted in this server's context, on the
 * same shared handles, so a write on either server reaches the clients of
 * both.  Everything runs on the thread running the context.
 *
 * What a client can hold is bounded (crdtdb_server_options, docs/auth.md
 * "Limits and timeouts"): slots by caps checked before the upgrade (503,
 * 429), time by deadlines checked every SWEEP_MS and by lws's pings, and
 * memory by one budget over every session's buffered bytes, kept by
 * closing the connection holding the most (1013).
 */
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <msgpack.h>
#include <sodium.h>

#include "crdt/value.h"
#include "transport/jwt.h"
#include "transport/ws.h"
#include "transport/ws_metrics.h"
#include "transport/ws_presence.h"

#define SERVER_MAX_OUTPUT ((size_t)1 << 20) /* a session's output before its
                                               exports wait (backpressure) */
#define PUMP_ROOM (SERVER_MAX_OUTPUT + ((size_t)256 << 10)) /* what one
                                               pump may add: that, one delta */
#define STALL_MS 2000 /* no byte in or out for this long: shed first */
#define GONE_MAX 4096 /* expired ids remembered (and refused) */
#define SWEEP_MS 250  /* how often timeouts are checked */
#define CLOSE_TRY_AGAIN_LATER 1013 /* RFC 6455 registry; lws 4.1 has no name */

typedef struct sconn sconn;

typedef struct sdb {
    struct sdb *next;
    crdtdb_server *srv;
    crdtdb_db *db;
    crdtdb_observer *obs;
    sconn *conns;
    uint64_t gen; /* commits seen, for re-authorizing connections */
    crdtdb_client **links; /* one per peer server syncing this database */
    struct speer **lpeer;  /* the peer of each link */
    size_t nlinks;
    uint64_t handoff_ms;   /* no handoff before (ms): the last one was refused */
    uint64_t held_ms;      /* since when a handoff waits for its links (0: not) */
    int held_told;         /* that wait was logged */
    int acks_failing;      /* the last acks commit failed (logged once) */
    uint64_t leave_ms;     /* since when its links are leaving (0: not): the
                              handoff drops it once they are gone */
    uint64_t leave_seq;    /* its last sequence then */
    unsigned refusals;     /* drops refused in a row: the retry backs off */
    uint64_t quiet_ms;     /* since when it has had no client and its links
                              have all been in sync (0: not so) */
    uint64_t fresh_ms;     /* created here for a client while linked to peers
                              (0: not): until its links have caught up, whom
                              it has as members is not known (0 after) */
    crdtdb__hub *hub; /* its presence (memory only) */
} sdb;

/* A server this one peers with (crdtdb_server_peer). */
typedef struct speer {
    struct speer *next;
    crdtdb_client_options o; /* strings owned below */
    char *url, *tls_ca, *token;
    char **dbs; /* NULL: every database */
    size_t ndbs;
    size_t mix; /* its place in a scrape's peer list (metrics_now) */
} speer;

struct sconn {
    sconn *next;
    sdb *d;
    crdtdb__wslink l;
    char peer[64];
    char user[CRDTDB_ID_MAX + 1];
    crdtdb_access access;
    uint64_t checked; /* the database's commit generation last authorized */
    uint64_t opened_ms;   /* upgraded */
    uint64_t progress_ms; /* a byte received or sent, last */
    uint64_t sent_seen;   /* l.sent at progress_ms */
    uint64_t deltas_seen; /* the session's deltas sent, counted in m */
    size_t held;          /* bytes of its buffers counted in srv->held */
    int ready;            /* the session hello came */
    int waiting;          /* its export waits for budget room */
    int ended;            /* closed by us: no session left, close pending */
    sconn *qnext;         /* in the apply queue: the next one */
    int queued;
    int served;           /* apply_turn takes it out of the queue now */
    int applying;         /* its delta is in the batch being applied */
    int end_status;       /* the WebSocket close status to send */
    char why[96];         /* the close reason sent (at most 123 bytes) */
    crdtdb__pconn pc;     /* in its database's presence hub */
    int snap_due;         /* joined the hub during a feed: the entries
                             go out once the feed returns */
    crdtdb_sync_mode mode; /* its session's, from READY; 0 before */
    int shows;            /* has a presence state of its own (metrics) */
    crdtdb__bucket log;   /* its peer's NOTICEs logged: LOG_BURST lines,
                             then one a second */
    unsigned log_dropped; /* and those not logged since */
};

#define LOG_BURST 10u /* lines a peer's NOTICEs may log at once */

/* Per connection, from the upgrade request on. */
typedef struct spss {
    sconn *c;
    char user[CRDTDB_ID_MAX + 1];
    crdtdb_access access;
    unsigned refused;   /* refused in-band (?inband=1): the HTTP status it
                           stands for; the upgrade goes ahead, an ERROR and
                           a 4xxx close follow, and no session */
    int told;           /* that ERROR is sent: the close is next */
    char why[160];      /* its message */
} spss;

struct crdtdb_server {
    crdtdb_env *env;
    crdtdb_server_options o;
    char *host, *cert, *key, *peer_ca;
    char **colls;
    char **relay_users; /* o.relay_users, copied */
    struct lws_protocols protocols[3];
    struct lws_context *ctx;
    crdtdb__wstail *tail;
    void *foreign[1];
    lws_sorted_usec_list_t sul;
    lws_sorted_usec_list_t sul_poll;
    lws_sorted_usec_list_t sul_apply; /* the apply queue's turn */
    sconn *qhead, *qtail; /* connections with a delta waiting, in order */
    int apply_armed;
    int batching;         /* apply_turn finishes a batch's deltas */
    speer *peers;
    crdtdb_server_auth auth;
    unsigned char *wbuf;
    sdb *dbs;
    size_t nconn;
    int at_limit;            /* the last db_get refused for max_databases */
    int limit_off;           /* db_get for a relay user: max_databases off */
    size_t nheld;            /* databases the environment holds: counted
                                at open, then as this server creates and
                                drops them (max_databases) */
    size_t held;          /* bytes all sessions hold (max_buffered) */
    uint64_t next_sweep;  /* ms */
    lws_retry_bo_t idle;  /* the ping / pong policy */
    int port;
    int closing;
    int draining;         /* crdtdb_server_drain: no new connections */
    crdtdb__hub_cfg hub_cfg; /* every database's presence hub reads it */
    uint64_t conn_num;       /* connections numbered so far (presence keys) */
    char *archive;           /* o.archive_dir, copied */
    uint64_t next_expire;    /* ms: the next look for expired databases */
    uint64_t next_collect;   /* ms: the next collection of open databases */
    uint64_t next_handoff;   /* ms: the next look for copies to hand off */
    uint64_t next_idle;      /* ms: the next look for idle databases */
    uint64_t next_prune;     /* ms: the next pruning of dropped databases' tombs */
    uint64_t polled_ms;      /* when crdtdb_server_run last polled the databases */
    char **gone;             /* ids expired here, refused from then on: a
                                ring of GONE_MAX */
    size_t ngone, gone_at;
    crdtdb__metrics m;       /* GET /metrics: what only grows */
    crdtdb__wsbatch early; /* early relay's scratch: the links it writes at once */
};

/* Logs one line, escaped: ids, users and messages come from peers. */
static void slog(crdtdb_server *srv, const char *fmt, ...)
{
    if (!srv->o.log)
        return;
    char line[768], safe[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    crdtdb__ws_log_escape(safe, sizeof safe, line);
    srv->o.log(srv->o.log_ctx, safe);
}

#define DEF_MAX_CONNECTIONS 1024
#define DEF_MAX_PER_IP 64
#define DEF_MAX_DATABASES 100000
#define DEF_IDLE_SECS 300
#define DEF_MAX_PER_USER 32
#define DEF_MAX_BUFFERED ((size_t)256 << 20)
#define MIN_MAX_BUFFERED ((size_t)16 << 20) /* one connection's worst case */
#define DEF_HANDSHAKE_SECS 10
#define DEF_MESSAGE_SECS 120
#define DEF_PING_SECS 30
#define DEF_PONG_SECS 30
#define MAX_IDLE_SECS 30000 /* ping + pong: lws keeps 16 bits */
#define DEF_MAX_PRESENCE_MEMBERS 256
#define DEF_PRESENCE_HZ 30
#define MAX_PRESENCE_HZ 1000 /* a bucket of thousandths stays exact */
#define MAX_PRESENCE_BYTES CRDTDB_PRESENCE_MAX /* what every client takes */

void crdtdb_server_options_init(crdtdb_server_options *o)
{
    memset(o, 0, sizeof *o);
    o->host = "127.0.0.1";
    o->mode = CRDTDB_SYNC_TWO_WAY;
    o->max_connections = DEF_MAX_CONNECTIONS;
    o->max_per_ip = DEF_MAX_PER_IP;
    o->max_databases = DEF_MAX_DATABASES;
    o->max_per_user = DEF_MAX_PER_USER;
    o->max_buffered = DEF_MAX_BUFFERED;
    o->handshake_secs = DEF_HANDSHAKE_SECS;
    o->message_secs = DEF_MESSAGE_SECS;
    o->ping_secs = DEF_PING_SECS;
    o->pong_secs = DEF_PONG_SECS;
    o->max_presence = CRDTDB_PRESENCE_MAX;
    o->max_presence_members = DEF_MAX_PRESENCE_MEMBERS;
    o->presence_hz = DEF_PRESENCE_HZ;
    o->metrics = CRDTDB_METRICS_LOCAL;
    o->early_relay = 1;
}

/* A database id as the storage takes it: 1 to CRDTDB_ID_MAX bytes of UTF-8
 * (n of them: no NUL inside) without control characters. */
static int id_ok(const char *id, size_t n)
{
    if (n == 0 || n > CRDTDB_ID_MAX || strlen(id) != n ||
        !crdtdb__utf8_valid((const uint8_t *)id, n))
        return 0;
    for (size_t i = 0; i < n; i++)
        if ((uint8_t)id[i] < 0x20 || id[i] == 0x7f)
            return 0;
    return 1;
}

/*
 * The database id named by the request path /v1/db/<id>.  libwebsockets
 * has already url-decoded the path (and collapsed "//", "/./" and "/../"
 * segments, so ids containing those cannot be reached).  0; 404 when the
 * path is not ours; 400 when the id is not one (too long, not UTF-8,
 * control characters): the same answer whatever the server's auth.
 */
static unsigned path_db_id(struct lws *wsi, char id[CRDTDB_ID_MAX + 1])
{
    int n = lws_hdr_total_length(wsi, WSI_TOKEN_GET_URI);
    size_t pre = strlen(WS_PREFIX);
    char *uri = n > 0 ? malloc((size_t)n + 1) : NULL; /* n < WS_HEADER_SPACE */
    unsigned status = 404;
    if (uri && lws_hdr_copy(wsi, uri, n + 1, WSI_TOKEN_GET_URI) == n &&
        strncmp(uri, WS_PREFIX, pre) == 0) {
        status = (size_t)n - pre <= CRDTDB_ID_MAX && id_ok(uri + pre, (size_t)n - pre) ? 0 : 400;
        if (!status)
            memcpy(id, uri + pre, (size_t)n - pre + 1);
    }
    free(uri);
    return status;
}

/* A database commit: every session of it may have something to send —
 * not the one whose apply made it, which answers when its feed returns. */
static void on_db_change(void *ctx, const crdtdb_event *ev)
{
    (void)ev;
    sdb *d = ctx;
    d->gen++;
    for (sconn *c = d->conns; c; c = c->next)
        if (c->l.wsi && c->l.s && crdtdb_session_want_write(c->l.s))
            crdtdb__ws_wake(&c->l);
}

static void on_poll_due(lws_sorted_usec_list_t *sul);

static void conn_count(sconn *c);

/* Early relay (crdtdb_db_set_precommit; docs/operations.md): a write of
 * d's numbered (from, to] and is about to commit.  The sessions waiting at
 * `from` get its delta now, straight to their sockets (one system call
 * with io_uring), so the fan-out waits for no disk flush; the writers are
 * acknowledged after the commit, as before.  Left out: the writers'
 * connections (c->applying; a lone apply's session is busy, which its
 * pump_early sees), and a user whose access this write changes (asked
 * here, where reads see the write: the recheck after the commit ends its
 * session).  Without a send queue (TLS) the output waits for WRITEABLE. */
static void early_relay(void *ctx, crdtdb_db *db, uint64_t from, uint64_t to)
{
    (void)to;
    sdb *d = ctx;
    crdtdb_server *srv = d->srv;
    size_t n = 0;
    for (sconn *c = d->conns; c; c = c->next)
        n++;
    if (!n || !srv->hub_cfg.sendq || crdtdb__ws_batch_room(&srv->early, n))
        return;
    n = 0;
    /* within the memory budget as a pump on WRITEABLE is, without ending
     * anyone from here: a session waiting for room, or whose link still
     * holds output, or any once the budget has no room for one more pump,
     * gets its delta later */
    for (sconn *c = d->conns; c; c = c->next) {
        if (srv->held + PUMP_ROOM > srv->o.max_buffered)
            break; /* each pump counted as it goes */
        if (c->ended || c->applying || c->waiting || !c->ready || !c->l.s || !c->l.wsi ||
            crdtdb__ws_held_out(&c->l))
            continue;
        if (srv->auth.authorize_user &&
            srv->auth.authorize_user(srv->auth.ctx, db, c->user, 0) != c->access)
            continue;
        int rc = crdtdb_session_pump_early(c->l.s, from);
        if (rc == 1)
            srv->early.links[n++] = &c->l;
        else if (rc < 0) /* its failure goes out on WRITEABLE */
            crdtdb__ws_wake(&c->l);
        conn_count(c);
    }
    if (!n)
        return;
    crdtdb__ws_flush_batch(&srv->early, n, srv->hub_cfg.sendq);
    for (size_t i = 0; i < n; i++) {
        if (srv->early.done[i] == 1) /* all of it went: before the commit */
            srv->m.early_deltas++;
        else
            lws_callback_on_writable(srv->early.links[i]->wsi);
        conn_count(lws_container_of(srv->early.links[i], sconn, l));
    }
}

static void slog_cb(void *ctx, const char *line)
{
    crdtdb_server *srv = ctx;
    if (srv->o.log)
        srv->o.log(srv->o.log_ctx, line);
}

static int peer_wants(const crdtdb_server *srv, const speer *p, const char *id)
{
    if (srv->o.peer_filter && !srv->o.peer_filter(srv->o.peer_filter_ctx, p->url, id))
        return 0;
    if (!p->dbs)
        return 1;
    for (size_t i = 0; i < p->ndbs; i++)
        if (strcmp(p->dbs[i], id) == 0)
            return 1;
    return 0;
}

/* Closes every link of d (ctx_gone: the lws context went first). */
static void links_close(sdb *d, int ctx_gone)
{
    for (size_t i = 0; i < d->nlinks; i++)
        crdtdb__client_close_hosted(d->links[i], ctx_gone);
    free(d->links);
    free(d->lpeer);
    d->links = NULL;
    d->lpeer = NULL;
    d->nlinks = 0;
}

/* A handoff's leave under way is off: its links, told to leave, close
 * (the caller links again); the owners resync this copy, as one that
 * left, when it comes back. */
static void leave_cancel(sdb *d)
{
    if (!d->leave_ms)
        return;
    d->leave_ms = 0;
    links_close(d, 0);
}

/* Closes link i of d; the last one takes its place. */
static void link_drop(sdb *d, size_t i)
{
    crdtdb__client_close_hosted(d->links[i], 0);
    d->nlinks--;
    d->links[i] = d->links[d->nlinks];
    d->lpeer[i] = d->lpeer[d->nlinks];
}

/* Closes the links of d whose peer no longer wants it (a cluster file
 * re-read: that server no longer owns d): the link from here is not what
 * carries d's changes to the owners, and while it stays, that server
 * holds a client of d and cannot hand its copy off. */
static void links_prune(sdb *d)
{
    const char *id = crdtdb_db_id(d->db);
    for (size_t i = 0; i < d->nlinks;) {
        if (peer_wants(d->srv, d->lpeer[i], id)) {
            i++;
            continue;
        }
        slog(d->srv, "peer %s db '%s': no longer an owner: link closed", d->lpeer[i]->url,
             WS_QID(id));
        link_drop(d, i);
    }
}

/* Whether every link of d holds what its peer had when it last said it
 * was up to date, and took what d holds. */
static int links_caught(const sdb *d)
{
    for (size_t i = 0; i < d->nlinks; i++)
        if (!crdtdb_client_synced(d->links[i]))
            return 0;
    return 1;
}

/* Starts the link syncing d with peer p, if p wants d and d has no link
 * to p's server yet (one link per peer server and database, however
 * often it was peered or relinked). */
static void link_add(sdb *d, speer *p)
{
    const char *id = crdtdb_db_id(d->db);
    if (!peer_wants(d->srv, p, id))
        return;
    for (size_t i = 0; i < d->nlinks; i++)
        if (strcmp(d->lpeer[i]->url, p->url) == 0)
            return;
    crdtdb_client **l = realloc(d->links, (d->nlinks + 1) * sizeof *l);
    if (l)
        d->links = l;
    speer **lp = l ? realloc(d->lpeer, (d->nlinks + 1) * sizeof *lp) : NULL;
    if (!lp) {
        slog(d->srv, "peer %s db '%s': out of memory", p->url, WS_QID(id));
        return;
    }
    d->lpeer = lp;
    lp[d->nlinks] = p;
    int rc = crdtdb__client_open_hosted(d->db, &p->o, d->srv->ctx, d->srv->wbuf, slog_cb,
                                        d->srv, &l[d->nlinks]);
    if (rc) {
        slog(d->srv, "peer %s db '%s': %s", p->url, WS_QID(id), crdtdb_strerror(rc));
        return;
    }
    crdtdb__client_set_hub(l[d->nlinks], d->hub);
    d->nlinks++;
}

/* Links d to every peer that wants it and has no link to it yet. */
static void link_peers(sdb *d)
{
    for (speer *p = d->srv->peers; p; p = p->next)
        link_add(d, p);
}

/* The open handle of database `id` on this server, or NULL. */
static sdb *db_find(const crdtdb_server *srv, const char *id)
{
    for (sdb *d = srv->dbs; d; d = d->next)
        if (strcmp(crdtdb_db_id(d->db), id) == 0)
            return d;
    return NULL;
}

/* The shared handle of database `id`, opened (or created) on first use.
 * created is non-NULL for a connection's request: then a database that
 * does not exist is created only below max_databases, unless the
 * connection is a relay user's (srv->limit_off) (*created says it was,
 * and srv->at_limit says when the limit refused it). */
static sdb *db_get(crdtdb_server *srv, const char *id, int *created)
{
    srv->at_limit = 0;
    if (created)
        *created = 0;
    sdb *d = db_find(srv, id);
    if (d)
        return d;
    d = calloc(1, sizeof *d);
    if (!d) {
        slog(srv, "database '%s': out of memory", WS_QID(id));
        return NULL;
    }
    int rc = crdtdb_db_open(srv->env, id, &d->db);
    srv->at_limit = rc == CRDTDB_ENODB && created && srv->o.ncoll && !srv->limit_off &&
                    srv->nheld >= srv->o.max_databases;
    if (srv->at_limit) {
        slog(srv, "database '%s': not created: %zu databases held (max_databases)", WS_QID(id),
             srv->nheld);
        free(d);
        return NULL;
    }
    if (rc == CRDTDB_ENODB && srv->o.ncoll) {
        rc = crdtdb_db_create(srv->env, id, (const char *const *)srv->colls, srv->o.ncoll,
                              &d->db);
        if (rc == CRDTDB_EEXIST) /* created meanwhile by another process */
            rc = crdtdb_db_open(srv->env, id, &d->db);
        else if (rc == 0 && created)
            *created = 1;
        if (rc == 0) {
            srv->nheld++;
            slog(srv, "database '%s' created", WS_QID(id));
        }
    }
    if (rc == 0 && srv->o.early_relay)
        crdtdb_db_set_precommit(d->db, early_relay, d);
    if (rc == 0)
        rc = crdtdb_db_observe(d->db, NULL, on_db_change, d, &d->obs);
    if (rc == 0)
        crdtdb_observer_commits(d->obs);
    if (rc == 0 && !(d->hub = crdtdb__hub_new(&srv->hub_cfg, d->db)))
        rc = CRDTDB_ENOMEM;
    if (rc) {
        slog(srv, "database '%s': %s", WS_QID(id),
             rc == CRDTDB_ENOMEM ? "out of memory"
            : d->db           ? crdtdb_db_errmsg(d->db)
                              : crdtdb_env_errmsg(srv->env));
        crdtdb_db_close(d->db);
        free(d);
        return NULL;
    }
    d->srv = srv;
    d->next = srv->dbs;
    srv->dbs = d;
    link_peers(d);
    return d;
}

/* Collection of one database (collect_secs), logged when it dropped any. */
static void collect_db(crdtdb_server *s, crdtdb_db *db)
{
    crdtdb_collect_stats st;
    if (crdtdb_db_collect(db, s->o.max_peer_age_ms, &st))
        slog(s, "db '%s': collection: %s", WS_QID(crdtdb_db_id(db)), crdtdb_db_errmsg(db));
    else if (st.records || st.packed)
        slog(s, "db '%s': collected %llu removed records (%llu registers), packed %llu%s",
             WS_QID(crdtdb_db_id(db)),
             (unsigned long long)st.records, (unsigned long long)st.registers,
             (unsigned long long)st.packed, st.peers_left ? "; silent peers left out" : "");
}

/* Takes d off the server's list and frees it (its links closed first). */
static void db_free(sdb *d)
{
    for (sdb **pp = &d->srv->dbs; *pp; pp = &(*pp)->next)
        if (*pp == d) {
            *pp = d->next;
            break;
        }
    crdtdb_db_close(d->db); /* ends the observer too */
    crdtdb__hub_free(d->hub);
    free(d);
}

static void db_release(sdb *d)
{
    if (d->conns || d->nlinks) /* peered databases stay open */
        return;
    crdtdb_server *srv = d->srv;
    /* collected as it closes too: one-shot clients leave no database open
     * for the timer to find */
    if (srv->o.collect_secs && !srv->draining)
        collect_db(srv, d->db);
    db_free(d);
}

static const char *mode_name(crdtdb_sync_mode m)
{
    return m == CRDTDB_SYNC_SERVER_TO_CLIENT ? "server-to-client" : "two-way";
}

/* The count of c's peer's NOTICEs not logged, if any, as one line. */
static void log_dropped(sconn *c, const char *id)
{
    if (!c->log_dropped)
        return;
    slog(c->d->srv, "%s db '%s': %u more peer errors not logged", c->peer, WS_QID(id),
         c->log_dropped);
    c->log_dropped = 0;
}

static void on_server_session(void *ctx, const crdtdb_session_event *ev)
{
    sconn *c = ctx;
    crdtdb_server *srv = c->d->srv;
    const char *id = crdtdb_db_id(c->d->db);
    switch (ev->type) {
    case CRDTDB_SESSION_READY:
        c->ready = 1;
        c->mode = ev->mode;
        slog(srv, "%s db '%s': ready, %s", c->peer, WS_QID(id), mode_name(ev->mode));
        memcpy(c->pc.replica, ev->peer, sizeof c->pc.replica);
        crdtdb__hub_join(c->d->hub, &c->pc);
        c->snap_due = 1;
        break;
    case CRDTDB_SESSION_APPLIED:
        srv->m.deltas_in++;
        srv->m.changes_in += ev->applied ? ev->applied->changes : 0;
        if (ev->applied && !srv->batching) /* a batch's commit is observed once, by apply_turn */
            crdtdb__hist_observe(&srv->m.commit, ev->applied->commit_us);
        break;
    case CRDTDB_SESSION_PRESENCE:
        if (!ev->presence->key) /* its own [12], not one it relays */
            c->shows = ev->presence->state != NULL;
        crdtdb__hub_presence(c->d->hub, &c->pc, ev->presence);
        break;
    case CRDTDB_SESSION_MESSAGE:
        crdtdb__hub_message(c->d->hub, &c->pc, ev->msg);
        break;
    case CRDTDB_SESSION_CLOSED: /* its entry leaves now, not at the close */
        log_dropped(c, id);
        c->shows = 0;
        crdtdb__hub_leave(c->d->hub, &c->pc);
        break;
    case CRDTDB_SESSION_ERROR:
        if (!ev->remote) {
            c->l.status = crdtdb__ws_close_status(ev->error, 0);
            crdtdb__metrics_error(&srv->m, ev->error, ev->message);
        } else if (!crdtdb_session_closed(c->l.s)) { /* a NOTICE (an ERROR, which
                                                         ends it, is always logged):
                                                         10 bytes each to the peer,
                                                         not a log line each */
            if (!crdtdb__bucket_take(&c->log, crdtdb__ws_now_ms(), 1, LOG_BURST)) {
                c->log_dropped++;
                break;
            }
            log_dropped(c, id);
        }
        slog(srv, "%s db '%s': %s error %s: %s", c->peer, WS_QID(id), ev->remote ? "peer" : "local",
             crdtdb_errname(ev->error), ev->message ? ev->message : "");
        break;
    default:
        break;
    }
}

/* The write filter of a connection: the server's hook with its user. */
static int conn_write_filter(void *ctx, crdtdb_txn *txn, const char *coll, const char *id,
                             const uint8_t *old, size_t old_len, const uint8_t *now,
                             size_t now_len)
{
    sconn *c = ctx;
    crdtdb_server *srv = c->d->srv;
    if (!srv->auth.authorize_write ||
        srv->auth.authorize_write(srv->auth.ctx, txn, c->user, coll, id, old, old_len, now,
                                  now_len) == 0)
        return 0;
    char msg[CRDTDB_ID_MAX * 2 + 96];
    snprintf(msg, sizeof msg, "write to '%s' in collection '%s' refused: Read only access", id,
             coll);
    slog(srv, "%s db '%s': user '%s': %s", c->peer, WS_QID(crdtdb_db_id(c->d->db)),
         WS_QID(c->user), msg);
    (void)crdtdb_session_notify(c->l.s, CRDTDB_EROFS, msg);
    return 1;
}

/* The read filter of a connection: the server's hook with its user. */
static int conn_read_filter(void *ctx, crdtdb_txn *txn, const char *coll, const char *id,
                            const uint8_t *value, size_t len)
{
    sconn *c = ctx;
    crdtdb_server *srv = c->d->srv;
    return srv->auth.authorize_read(srv->auth.ctx, txn, c->user, coll, id, value, len) != 0;
}

/* Asks again, after commits, whether the connection's user keeps its
 * access; a change ends the session (the client starts over). */
static void conn_recheck(sconn *c)
{
    sdb *d = c->d;
    crdtdb_server *srv = d->srv;
    if (c->checked == d->gen || !srv->auth.authorize_user || !c->l.s ||
        crdtdb_session_closed(c->l.s))
        return;
    c->checked = d->gen;
    crdtdb_access a = srv->auth.authorize_user(srv->auth.ctx, d->db, c->user, 0);
    if (a == c->access)
        return;
    slog(srv, "%s db '%s': user '%s': access changed, closing", c->peer,
         WS_QID(crdtdb_db_id(d->db)), WS_QID(c->user));
    crdtdb_session_abort(c->l.s, CRDTDB_EREVOKED, "access changed");
}

/* Answers an upgrade request with an HTTP error and no body that could
 * tell anything about the database. */
static int refuse_http(struct lws *wsi, unsigned status)
{
    lws_return_http_status(wsi, status, NULL);
    return -1;
}

/* Whether the request asks for refusals in-band: `inband=1` among its URL
 * arguments.  A browser cannot read the HTTP status of a refused upgrade
 * (its WebSocket only says 1006), so it asks for the upgrade to go ahead
 * and the refusal to come as an ERROR and a 4xxx close. */
static int wants_inband(struct lws *wsi)
{
    static const char arg[] = "inband=1";
    char buf[sizeof arg];
    for (int i = 0; i < 64; i++) { /* lws keeps fewer fragments */
        int n = lws_hdr_fragment_length(wsi, WSI_TOKEN_HTTP_URI_ARGS, i);
        if (n <= 0)
            break;
        if (n == (int)sizeof arg - 1 &&
            lws_hdr_copy_fragment(wsi, buf, sizeof buf, WSI_TOKEN_HTTP_URI_ARGS, i) == n &&
            memcmp(buf, arg, (size_t)n) == 0)
            return 1;
    }
    return 0;
}

/* The ERROR code, message and WebSocket close code an in-band refusal
 * sends for an HTTP status (docs/auth.md, "Refusals in-band").  The close
 * code is 4000 + the status, but every token refusal (401, 431) is 4401:
 * for a client it means the same, get a new token.  The message says no
 * more than the HTTP answer would (a denied database and one that does
 * not exist read alike); `detail` is the token's fault, if any. */
static int inband_code(unsigned status, const char *detail, char *msg, size_t size,
                       unsigned *close)
{
    *close = status == 431 ? 4401 : 4000 + status;
    switch (status) {
    case 400:
        snprintf(msg, size, "not a database id");
        return CRDTDB_EBADID;
    case 404:
        snprintf(msg, size, "not a /v1/db/<id> path");
        return CRDTDB_ENOTFOUND;
    case 401:
    case 431:
        snprintf(msg, size, "unauthorized: %s", detail && *detail ? detail : "bad token");
        return CRDTDB_EAUTH;
    case 403:
        snprintf(msg, size, "permission denied");
        return CRDTDB_EDENIED;
    case 429:
        snprintf(msg, size, "too many connections from this address or user: retry later");
        return CRDTDB_ELIMIT;
    default: /* 503 */
        *close = 4503;
        snprintf(msg, size, "server full: retry later");
        return CRDTDB_ELIMIT;
    }
}

/* Refuses an upgrade request: with an HTTP status, or in-band when the
 * request asks for it (the upgrade goes ahead; ESTABLISHED opens no
 * session, WRITEABLE sends the ERROR, then the close).  The connection
 * caps (429, 503) always answer over HTTP: an in-band refusal holds a
 * socket for up to 5 s, the very thing the caps bound, and a browser's
 * answer to 1006 (retry with backoff) is already right for them. */
static int refuse(struct lws *wsi, spss *pss, unsigned status, const char *detail)
{
    struct lws_context *lctx = lws_get_context(wsi);
    crdtdb_server *srv = lctx ? lws_context_user(lctx) : NULL;
    if (srv)
        crdtdb__metrics_refused(&srv->m, status);
    if (!pss || status == 429 || status == 503 || !wants_inband(wsi))
        return refuse_http(wsi, status);
    pss->refused = status;
    pss->told = 0;
    snprintf(pss->why, sizeof pss->why, "%s", detail ? detail : "");
    return 0;
}

/* WRITEABLE on a connection refused in-band: the ERROR [6, code, message]
 * as one binary message, then (next time) the close.  -1 to close. */
static int refused_writable(crdtdb_server *srv, struct lws *wsi, spss *pss)
{
    char msg[sizeof pss->why + 64];
    unsigned close;
    int code = inband_code(pss->refused, pss->why, msg, sizeof msg, &close);
    if (pss->told) {
        lws_close_reason(wsi, (enum lws_close_status)close, (unsigned char *)msg,
                         strlen(msg) < 123 ? strlen(msg) : 123);
        return -1;
    }
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, 3);
    msgpack_pack_uint8(&pk, 6); /* ERROR */
    msgpack_pack_int32(&pk, code);
    msgpack_pack_str_with_body(&pk, msg, strlen(msg));
    int r = -1;
    if (sb.data && sb.size + 4 <= WS_CHUNK) { /* a few hundred bytes */
        uint8_t *p = srv->wbuf + LWS_PRE;
        p[0] = (uint8_t)(sb.size >> 24), p[1] = (uint8_t)(sb.size >> 16);
        p[2] = (uint8_t)(sb.size >> 8), p[3] = (uint8_t)sb.size;
        memcpy(p + 4, sb.data, sb.size);
        r = lws_write(wsi, p, sb.size + 4, LWS_WRITE_BINARY) < (int)(sb.size + 4) ? -1 : 0;
    }
    msgpack_sbuffer_destroy(&sb);
    pss->told = 1;
    lws_callback_on_writable(wsi);
    return r;
}

/* The bearer token's header value, as read: from Authorization, else from
 * ?access_token=<token> (RFC 6750 2.3, for browsers) made into one.  buf
 * has WS_HEADER_SPACE bytes, which holds any one header or URL argument
 * (libwebsockets keeps no more).  Its length, or 0 for none. */
static size_t authz_value(struct lws *wsi, char *buf)
{
    int an = lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_AUTHORIZATION);
    if (an > 0)
        return lws_hdr_copy(wsi, buf, WS_HEADER_SPACE, WSI_TOKEN_HTTP_AUTHORIZATION) == an
                   ? (size_t)an
                   : 0;
    static const char arg[] = "access_token=";
    const size_t al = sizeof arg - 1;
    for (int i = 0; i < 64; i++) { /* lws keeps fewer fragments */
        int n = lws_hdr_copy_fragment(wsi, buf + 7, WS_HEADER_SPACE - 7, WSI_TOKEN_HTTP_URI_ARGS, i);
        if (n < 0)
            break;
        if ((size_t)n >= al && memcmp(buf + 7, arg, al) == 0) {
            memmove(buf + 7, buf + 7 + al, (size_t)n - al);
            memcpy(buf, "Bearer ", 7);
            return 7 + (size_t)n - al;
        }
    }
    return 0;
}

/* The upgrade request's user: from its bearer token when the server has a
 * key ("" without one).  0, or the HTTP status to refuse with: 401, or 431
 * for a token over CRDTDB_JWT_MAX. */
static unsigned upgrade_user(crdtdb_server *srv, struct lws *wsi, const char *peer,
                             char user[CRDTDB_ID_MAX + 1], char why[256])
{
    user[0] = 0;
    why[0] = 0;
    if (!srv->o.jwt_key)
        return 0;
    char *authz = malloc(WS_HEADER_SPACE), *prot = malloc(WS_HEADER_SPACE);
    unsigned status = 401;
    snprintf(why, 256, "no bearer token");
    if (!authz || !prot) {
        status = 503;
        snprintf(why, 256, "out of memory");
    } else {
        size_t an = authz_value(wsi, authz);
        int pn = lws_hdr_total_length(wsi, WSI_TOKEN_PROTOCOL);
        if (pn < 0 || pn >= (int)WS_HEADER_SPACE ||
            (pn > 0 && lws_hdr_copy(wsi, prot, WS_HEADER_SPACE, WSI_TOKEN_PROTOCOL) != pn))
            pn = 0;
        const char *tok;
        size_t toklen;
        if (crdtdb__bearer_token(an ? authz : NULL, an, prot, (size_t)pn, &tok, &toklen) == 0) {
            int rc = crdtdb_jwt_verify(srv->o.jwt_key, tok, toklen, (int64_t)time(NULL),
                                       srv->o.jwt_leeway, user, CRDTDB_ID_MAX + 1, why, 256);
            status = rc == 0 ? 0 : rc == CRDTDB_ETOOBIG ? 431 : 401;
        } else if (an > CRDTDB_JWT_MAX + 7) { /* too long to be one: say so */
            status = 431;
            snprintf(why, 256, "a token of %zu bytes, over the limit of %u", an - 7,
                     CRDTDB_JWT_MAX);
        }
        if (status)
            slog(srv, "%s refused: %u: %s", peer, status, why);
    }
    if (authz)
        sodium_memzero(authz, WS_HEADER_SPACE);
    if (prot)
        sodium_memzero(prot, WS_HEADER_SPACE);
    free(authz);
    free(prot);
    return status;
}

/* Whether user (a token's sub; "" without tokens) is one of relay_users:
 * a peer server's links. */
static int relay_user(const crdtdb_server *srv, const char *user)
{
    for (size_t i = 0; user[0] && srv->relay_users && i < srv->o.nrelay_users; i++)
        if (strcmp(srv->relay_users[i], user) == 0)
            return 1;
    return 0;
}

/* Connections from address `peer`, and of user `user` ("": none counted).
 * A scan of at most max_connections entries, once per upgrade. */
static void conn_counts(const crdtdb_server *srv, const char *peer, const char *user,
                        size_t *by_ip, size_t *by_user)
{
    *by_ip = *by_user = 0;
    for (const sdb *d = srv->dbs; d; d = d->next)
        for (const sconn *c = d->conns; c; c = c->next) {
            *by_ip += strcmp(c->peer, peer) == 0;
            *by_user += user[0] && strcmp(c->user, user) == 0;
        }
}

/* Re-counts the bytes c's session holds into srv->held. */
static void conn_count(sconn *c)
{
    crdtdb_server *srv = c->d->srv;
    size_t now = c->ended ? 0 : crdtdb__ws_held_mem(&c->l);
    srv->held = srv->held - c->held + now;
    c->held = now;
}

/* The presence hub queued frames on c: they go out on its next WRITEABLE,
 * and count towards the budget now. */
static void conn_wake(crdtdb__pconn *pc)
{
    sconn *c = lws_container_of(pc, sconn, pc);
    if (c->ended || !c->l.wsi)
        return;
    lws_callback_on_writable(c->l.wsi);
    conn_count(c);
}

/*
 * Ends c now, from outside its session's callbacks: logs why, frees the
 * session (and the memory it held) at once, and closes the connection
 * with `status` and `why` as the close reason — on its next WRITEABLE, or
 * after 5 s for a peer that reads nothing.
 */
static void conn_end(sconn *c, int status, const char *why)
{
    if (c->ended)
        return;
    crdtdb_server *srv = c->d->srv;
    slog(srv, "%s db '%s': closing (%d): %s", c->peer, WS_QID(crdtdb_db_id(c->d->db)), status, why);
    c->ended = 1;
    c->end_status = status;
    snprintf(c->why, sizeof c->why, "%s", why);
    crdtdb__hub_leave(c->d->hub, &c->pc);
    conn_count(c);
    crdtdb_session_close(c->l.s);
    c->l.s = NULL;
    lws_close_reason(c->l.wsi, (enum lws_close_status)status, (unsigned char *)c->why,
                     strlen(c->why));
    lws_callback_on_writable(c->l.wsi);
    lws_set_timeout(c->l.wsi, PENDING_TIMEOUT_USER_OK, 5);
}

/*
 * Keeps srv->held + need within the budget by ending connections: those
 * stalled (nothing in or out for STALL_MS) first, the largest first; never
 * `keep`; only stalled ones when `stalled_only`.  0 once need fits, -1 if
 * it cannot.
 */
static int make_room(crdtdb_server *srv, size_t need, const sconn *keep, int stalled_only)
{
    uint64_t now = crdtdb__ws_now_ms();
    while (srv->held + need > srv->o.max_buffered) {
        sconn *worst = NULL;
        int worst_stalled = 0;
        for (sdb *d = srv->dbs; d; d = d->next)
            for (sconn *c = d->conns; c; c = c->next) {
                /* output the presence hub wrote outside WRITEABLE
                 * (crdtdb__ws_flush_now) is progress too */
                uint64_t last = c->l.tx_ms > c->progress_ms ? c->l.tx_ms : c->progress_ms;
                int stalled = now - last >= STALL_MS;
                if (c == keep || !c->held || (stalled_only && !stalled))
                    continue;
                if (!worst || stalled > worst_stalled ||
                    (stalled == worst_stalled && c->held > worst->held)) {
                    worst = c;
                    worst_stalled = stalled;
                }
            }
        if (!worst)
            return -1;
        char why[96];
        snprintf(why, sizeof why, "server memory budget exceeded (%zu bytes held)", worst->held);
        conn_end(worst, CLOSE_TRY_AGAIN_LATER, why);
    }
    return 0;
}

/*
 * The apply queue.  Every delta from a client waits here (its session is
 * YIELD, its reading paused) and is applied in arrival order, one per
 * connection per pass, for at most APPLY_SHARE_MS of every APPLY_SLICE_MS:
 * however many peers send costly deltas, the loop goes back to everything
 * else within one turn of the share running out.  A turn is one delta, or
 * a batch of one database's (apply_turn): at most CRDTDB_APPLY_BATCH_MAX
 * signature checks and twice max_apply_work of merging, and when the batch
 * fails, its good part again and one delta alone.
 */
#define APPLY_SLICE_MS 50
#define APPLY_SHARE_MS 20

static void on_apply_due(lws_sorted_usec_list_t *sul);

static void apply_arm(crdtdb_server *srv, uint64_t ms)
{
    if (srv->apply_armed || srv->closing)
        return;
    srv->apply_armed = 1;
    lws_sul_schedule(srv->ctx, 0, &srv->sul_apply, on_apply_due,
                     ms ? (lws_usec_t)ms * LWS_US_PER_MS : 1);
}

static void apply_enqueue(sconn *c)
{
    if (c->queued)
        return;
    c->queued = 1;
    c->qnext = NULL;
    crdtdb_server *srv = c->d->srv;
    if (srv->qtail)
        srv->qtail->qnext = c;
    else
        srv->qhead = c;
    srv->qtail = c;
    apply_arm(srv, 0);
}

static sconn *apply_pop(crdtdb_server *srv)
{
    sconn *c = srv->qhead;
    if (!c)
        return NULL;
    srv->qhead = c->qnext;
    if (!srv->qhead)
        srv->qtail = NULL;
    c->queued = 0;
    c->qnext = NULL;
    return c;
}

static void apply_unlink(sconn *c)
{
    crdtdb_server *srv = c->d->srv;
    if (!c->queued)
        return;
    sconn *prev = NULL;
    for (sconn *q = srv->qhead; q; prev = q, q = q->qnext)
        if (q == c) {
            if (prev)
                prev->qnext = c->qnext;
            else
                srv->qhead = c->qnext;
            if (srv->qtail == c)
                srv->qtail = prev;
            break;
        }
    c->queued = 0;
}

static void conn_count(sconn *c);

/* Group commit: c, just popped, and the connections of its database
 * waiting in the queue (left in their places: only those a batch serves
 * leave it), whose waiting deltas may join a batch
 * (crdtdb_session_batch_peek): at most CRDTDB_APPLY_BATCH_MAX and
 * BATCH_BYTES of deltas, among the first GATHER_SCAN queued (a turn costs
 * no more with many databases busy).  Their number; 0 or 1 when there is
 * nothing to batch. */
#define BATCH_BYTES ((size_t)256 << 10)
#define GATHER_SCAN 256
static size_t apply_gather(crdtdb_server *srv, sconn *c, sconn **out, const uint8_t **d,
                           size_t *len)
{
    if (srv->auth.authorize_write || !crdtdb_session_batch_peek(c->l.s, &d[0], &len[0]))
        return 0;
    size_t n = 1, total = len[0], seen = 0;
    out[0] = c;
    for (sconn *q = srv->qhead; q && n < CRDTDB_APPLY_BATCH_MAX && seen++ < GATHER_SCAN;
         q = q->qnext)
        if (q->d == c->d && !q->ended && q->l.s &&
            crdtdb_session_batch_peek(q->l.s, &d[n], &len[n]) && total + len[n] <= BATCH_BYTES)
            total += len[n], out[n++] = q;
    return n;
}

/* Takes the connections marked served out of the queue: one pass over its
 * first GATHER_SCAN entries, where apply_gather found them. */
static void apply_reap(crdtdb_server *srv)
{
    sconn *prev = NULL, *q = srv->qhead;
    for (size_t seen = 0; q && seen < GATHER_SCAN; seen++) {
        sconn *next = q->qnext;
        if (q->served) {
            q->served = 0;
            q->queued = 0;
            q->qnext = NULL;
            if (prev)
                prev->qnext = next;
            else
                srv->qhead = next;
            if (srv->qtail == q)
                srv->qtail = prev;
        } else {
            prev = q;
        }
        q = next;
    }
}

/* After c's delta was applied (a step, or its part of a batch). */
static void apply_after(sconn *c, int more)
{
    if (more)
        apply_enqueue(c); /* its next delta: after the others */
    conn_count(c);
}

/* c's next delta alone (crdtdb_session_step). */
static void apply_alone(sconn *c)
{
    c->progress_ms = crdtdb__ws_now_ms();
    apply_after(c, crdtdb__ws_step(&c->l));
}

/* One turn of the apply queue for c: the deltas of its database waiting
 * at the head of several connections in one commit when they may
 * (crdtdb_db_apply_batch), else c's next delta alone.  When the batch
 * fails (storing nothing), the deltas before the one at fault are
 * committed together and that one goes alone (refused as it would be); if
 * that fails too (a full disk), c's delta goes alone.  A connection the
 * turn serves leaves the queue (and comes back at its end if another
 * delta waits); one it does not keeps its place: every turn serves c, and
 * every connection is served within one pass of the queue. */
static void apply_turn(crdtdb_server *srv, sconn *c)
{
    sconn *b[CRDTDB_APPLY_BATCH_MAX];
    const uint8_t *d[CRDTDB_APPLY_BATCH_MAX];
    size_t len[CRDTDB_APPLY_BATCH_MAX];
    crdtdb_apply_info info[CRDTDB_APPLY_BATCH_MAX];
    uint64_t us = crdtdb__metrics_us();
    size_t n = apply_gather(srv, c, b, d, len), took = 0, bad = SIZE_MAX, done = 0;
    if (n < 2) {
        apply_alone(c);
        crdtdb__hist_observe(&srv->m.apply, crdtdb__metrics_us() - us);
        return;
    }
    memset(info, 0, n * sizeof *info);
    for (size_t i = 0; i < n; i++)
        b[i]->applying = 1; /* not relayed its own write early */
    if (crdtdb_db_apply_batch(c->d->db, d, len, n, info, &done) == 0) {
        took = done;
    } else {
        bad = done; /* 0 too when the commit failed */
        if (bad > 0 && crdtdb_db_apply_batch(c->d->db, d, len, bad, info, &done) == 0)
            took = done;
        else
            bad = 0; /* nothing committed: c alone */
    }
    for (size_t i = 0; i < n; i++)
        b[i]->applying = 0;
    for (size_t i = 1; i < took; i++) /* b[0], c, is out of the queue */
        b[i]->served = 1;
    if (bad != SIZE_MAX && bad > 0)
        b[bad]->served = 1;
    apply_reap(srv);
    if (took) {
        crdtdb__hist_observe(&srv->m.commit, info[took - 1].commit_us); /* one commit */
        srv->batching = 1; /* the sessions' APPLIED events: not each a commit */
        for (size_t i = 0; i < took; i++) {
            sconn *x = b[i];
            if (x->ended || !x->l.s) { /* committed all the same */
                srv->m.deltas_in++;
                srv->m.changes_in += info[i].changes;
                continue;
            }
            x->progress_ms = crdtdb__ws_now_ms();
            (void)crdtdb_session_batch_done(x->l.s, &info[i]); /* failures arrive as events */
            apply_after(x, crdtdb__ws_stepped(&x->l));
        }
        srv->batching = 0;
    }
    if (bad != SIZE_MAX && !b[bad]->ended && b[bad]->l.s)
        apply_alone(b[bad]);
    crdtdb__hist_observe(&srv->m.apply, crdtdb__metrics_us() - us); /* one turn */
}

static void on_apply_due(lws_sorted_usec_list_t *sul)
{
    crdtdb_server *srv = lws_container_of(sul, crdtdb_server, sul_apply);
    /* still armed while it runs: a connection queued again here must not
     * bring the next turn forward */
    uint64_t t0 = crdtdb__ws_now_ms();
    sconn *c;
    while (crdtdb__ws_now_ms() - t0 < APPLY_SHARE_MS && (c = apply_pop(srv)) != NULL) {
        if (c->ended || !c->l.s)
            continue;
        apply_turn(srv, c);
    }
    srv->apply_armed = 0;
    if (srv->qhead) /* the rest of the slice is the loop's */
        apply_arm(srv, APPLY_SLICE_MS - APPLY_SHARE_MS);
}

static void conn_free(sconn *c)
{
    apply_unlink(c);
    sdb *d = c->d;
    crdtdb__hub_leave(d->hub, &c->pc);
    c->ended = 1;
    conn_count(c);
    for (sconn **pp = &d->conns; *pp; pp = &(*pp)->next)
        if (*pp == c) {
            *pp = c->next;
            break;
        }
    d->srv->nconn--;
    d->srv->m.deltas_out += crdtdb_session_deltas_sent(c->l.s) - c->deltas_seen;
    crdtdb_session_close(c->l.s);
    free(c);
    db_release(d);
}

static int gone_has(const crdtdb_server *s, const char *id)
{
    for (size_t i = 0; i < s->ngone; i++)
        if (strcmp(s->gone[i], id) == 0)
            return 1;
    return 0;
}

static void gone_add(crdtdb_server *s, const char *id)
{
    if (gone_has(s, id))
        return;
    if (!s->gone && !(s->gone = calloc(GONE_MAX, sizeof *s->gone)))
        return;
    char *copy = crdtdb__ws_strdup(id);
    if (!copy)
        return;
    if (s->ngone < GONE_MAX) {
        s->gone[s->ngone++] = copy;
    } else { /* the oldest goes */
        free(s->gone[s->gone_at]);
        s->gone[s->gone_at] = copy;
        s->gone_at = (s->gone_at + 1) % GONE_MAX;
    }
}

/* A database kept after all (written since it was found due): welcome
 * again. */
static void gone_remove(crdtdb_server *s, const char *id)
{
    for (size_t i = 0; i < s->ngone; i++)
        if (strcmp(s->gone[i], id) == 0) {
            free(s->gone[i]);
            s->gone[i] = s->gone[--s->ngone];
            s->gone_at = 0;
            return;
        }
}

/* A plain-text answer to an HTTP request (not an upgrade), then the
 * transaction ends. */
static int http_text(struct lws *wsi, unsigned status, const char *body)
{
    unsigned char buf[LWS_PRE + 512], *start = buf + LWS_PRE, *p = start, *end = buf + sizeof buf;
    size_t n = strlen(body);
    if (lws_add_http_common_headers(wsi, status, "text/plain", n, &p, end) ||
        lws_finalize_write_http_header(wsi, start, &p, end))
        return -1;
    memcpy(start, body, n);
    if (lws_write(wsi, start, n, LWS_WRITE_HTTP_FINAL) != (int)n)
        return -1;
    return lws_http_transaction_completed(wsi) ? -1 : 0;
}

/* ---- metrics ---- */

/* Whether this request may read /metrics (crdtdb_server_options.metrics):
 * by default only from a loopback address. */
static int metrics_allowed(const crdtdb_server *srv, struct lws *wsi)
{
    if (srv->o.metrics == CRDTDB_METRICS_ANY)
        return 1;
    if (srv->o.metrics != CRDTDB_METRICS_LOCAL)
        return 0;
    char peer[64] = "";
    lws_get_peer_simple(wsi, peer, sizeof peer);
    return strncmp(peer, "127.", 4) == 0 || strcmp(peer, "::1") == 0 ||
           strncmp(peer, "::ffff:127.", 11) == 0;
}

/* What is, now: counted from the server's lists (connections, links,
 * databases), at most max_connections + databases x peers steps.
 * g->peer (when not NULL, g->npeer of them) is the caller's to free. */
static void metrics_now(const crdtdb_server *srv, crdtdb__metrics_now *g)
{
    memset(g, 0, sizeof *g);
    size_t np = 0; /* one entry per URL: --peer may name one twice */
    for (speer *p = srv->peers; p; p = p->next) {
        const speer *q = srv->peers;
        while (q != p && strcmp(q->url, p->url) != 0)
            q = q->next;
        p->mix = q != p ? q->mix : np++;
    }
    crdtdb__metrics_peer *peer = np ? calloc(np, sizeof *peer) : NULL;
    for (speer *p = srv->peers; peer && p; p = p->next)
        peer[p->mix].url = p->url;
    for (const sdb *d = srv->dbs; d; d = d->next) {
        g->dbs++;
        for (const sconn *c = d->conns; c; c = c->next) {
            if (c->ended)
                continue;
            if (!c->mode)
                g->handshake++;
            else if (c->mode == CRDTDB_SYNC_SERVER_TO_CLIENT)
                g->server_to_client++;
            else
                g->two_way++;
            g->presence += c->shows != 0;
        }
        for (size_t i = 0; i < d->nlinks; i++) {
            int up = crdtdb_client_connected(d->links[i]);
            g->links_up += up != 0;
            g->links_down += !up;
            if (peer) { /* out of memory: the totals only */
                peer[d->lpeer[i]->mix].up += up != 0;
                peer[d->lpeer[i]->mix].down += !up;
            }
        }
    }
    g->peers = np;
    g->held = srv->held;
    g->max_buffered = srv->o.max_buffered;
    g->draining = srv->draining;
    g->peer = peer;
    g->npeer = peer ? np : 0;
}

/* GET /metrics: the Prometheus text exposition, at most METRICS_TEXT_MAX
 * bytes plus METRICS_PEER_MAX per peer server (its families and labels
 * are a fixed set, and the peers are the configured ones). */
static int http_metrics(crdtdb_server *srv, struct lws *wsi)
{
    const size_t head = 512;
    crdtdb__metrics_now g;
    metrics_now(srv, &g);
    size_t cap = METRICS_TEXT_MAX + g.npeer * METRICS_PEER_MAX;
    unsigned char *buf = malloc(LWS_PRE + head + cap);
    if (!buf) {
        free((void *)g.peer);
        lws_return_http_status(wsi, HTTP_STATUS_SERVICE_UNAVAILABLE, NULL);
        return -1;
    }
    unsigned char *body = buf + LWS_PRE + head;
    size_t n = crdtdb__metrics_text((char *)body, cap, &srv->m, &g);
    free((void *)g.peer);
    unsigned char *start = buf + LWS_PRE, *p = start, *end = body;
    int r = -1;
    if (n && !lws_add_http_common_headers(wsi, HTTP_STATUS_OK,
                                          "text/plain; version=0.0.4; charset=utf-8", n, &p,
                                          end) &&
        !lws_finalize_write_http_header(wsi, start, &p, end)) {
        /* the headers are written: the body follows them at once */
        if (lws_write(wsi, body, n, LWS_WRITE_HTTP_FINAL) == (int)n)
            r = lws_http_transaction_completed(wsi) ? -1 : 0;
    } else if (!n) {
        lws_return_http_status(wsi, HTTP_STATUS_INTERNAL_SERVER_ERROR, NULL);
    }
    free(buf);
    return r;
}

/* ---- end of metrics ---- */

static int server_cb(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                     size_t len)
{
    struct lws_context *lctx = lws_get_context(wsi);
    crdtdb_server *srv = lctx ? lws_context_user(lctx) : NULL;
    spss *pss = user;
    char id[CRDTDB_ID_MAX + 1];
    switch (reason) {
    case LWS_CALLBACK_HTTP: /* not an upgrade: the health check, for load
                               balancers (503 while draining) */
        if (in && strcmp(in, "/healthz") == 0)
            return srv->draining ? http_text(wsi, 503, "draining\n") : http_text(wsi, 200, "ok\n");
        if (in && strcmp(in, "/metrics") == 0 && metrics_allowed(srv, wsi))
            return http_metrics(srv, wsi);
        lws_return_http_status(wsi, HTTP_STATUS_NOT_FOUND, NULL);
        return -1;
    case LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION: {
        char peer[64] = "?";
        lws_get_peer_simple(wsi, peer, sizeof peer);
        if (srv->draining) {
            slog(srv, "%s refused: 503: the server is draining", peer);
            return refuse(wsi, pss, 503, NULL);
        }
        unsigned status = path_db_id(wsi, id);
        if (status) {
            slog(srv, "%s refused: %u: %s", peer, status,
                 status == 404 ? "not a /v1/db/<id> path" : "not a database id");
            return refuse(wsi, pss, status, NULL);
        }
        if (!pss)
            return 1;
        pss->refused = 0;
        if (gone_has(srv, id)) {
            slog(srv, "%s db '%s' refused: 403: it expired here", peer, WS_QID(id));
            return refuse(wsi, pss, 403, "the database expired");
        }
        size_t by_ip, by_user;
        if (srv->nconn >= srv->o.max_connections) {
            slog(srv, "%s refused: 503: %zu connections already", peer, srv->nconn);
            return refuse(wsi, pss, 503, NULL);
        }
        /* with no relay users every connection counts against the cap: it
         * is checked before the token's verification, which costs more */
        conn_counts(srv, peer, "", &by_ip, &by_user);
        if (!srv->o.nrelay_users && by_ip >= srv->o.max_per_ip) {
            slog(srv, "%s refused: 429: %zu connections from this address already", peer, by_ip);
            return refuse(wsi, pss, 429, NULL);
        }
        pss->access = CRDTDB_ACCESS_READWRITE;
        char why[256];
        if ((status = upgrade_user(srv, wsi, peer, pss->user, why)))
            return refuse(wsi, pss, status, status == 503 ? NULL : why);
        /* a peer server's links (a relay user's) are one per database it
         * shares with this server, all from one address and user: the
         * per-address and per-user caps, meant for clients, would cut
         * replication off past them (max_connections still holds) */
        int relay = relay_user(srv, pss->user);
        conn_counts(srv, peer, pss->user, &by_ip, &by_user);
        /* (without relay users, checked above already) */
        if (srv->o.nrelay_users && !relay && by_ip >= srv->o.max_per_ip) {
            slog(srv, "%s refused: 429: %zu connections from this address already", peer, by_ip);
            return refuse(wsi, pss, 429, NULL);
        }
        if (!relay && by_user >= srv->o.max_per_user) {
            slog(srv, "%s user '%s' refused: 429: %zu connections of this user already", peer,
                 WS_QID(pss->user), by_user);
            return refuse(wsi, pss, 429, NULL);
        }
        /* opened (or created) now, so a database that cannot be is refused
         * before the upgrade */
        int created;
        srv->limit_off = relay; /* a peer server's link: not limited */
        sdb *d = db_get(srv, id, &created);
        srv->limit_off = 0;
        if (!d && srv->at_limit)
            return refuse(wsi, pss, 503, "database limit reached");
        if (!d)
            return refuse(wsi, pss, 403, NULL); /* absent and not creatable */
        if (!created) /* idle, its links were closed: a client brings them back */
            link_peers(d);
        if (srv->auth.authorize_user && created && d->nlinks)
            d->fresh_ms = crdtdb__ws_now_ms();
        if (srv->auth.authorize_user && d->fresh_ms) {
            /* a copy new here of a database peers may hold: its members
             * come from them, so no one is its creator until they have
             * been heard (else any user entering here would own it, and
             * that membership would travel to them) */
            if (!links_caught(d)) {
                db_release(d);
                slog(srv, "%s db '%s': user '%s' refused: 503: fetching it from its peers", peer,
                     WS_QID(id), WS_QID(pss->user));
                return refuse(wsi, pss, 503, "the database is being fetched: try again");
            }
            uint64_t seq = 1;
            created = crdtdb_db_seq(d->db, NULL, &seq) == 0 && seq == 0; /* new everywhere */
            d->fresh_ms = 0;
        }
        if (srv->auth.authorize_user)
            pss->access = srv->auth.authorize_user(srv->auth.ctx, d->db, pss->user, created);
        db_release(d);
        if (pss->access == CRDTDB_ACCESS_DENY) {
            slog(srv, "%s db '%s': user '%s' refused: 403", peer, WS_QID(id), WS_QID(pss->user));
            return refuse(wsi, pss, 403, NULL);
        }
        return 0;
    }
    case LWS_CALLBACK_ESTABLISHED: {
        if (pss && pss->refused) { /* no session: the refusal, then the close,
                                      within 5 s even for a peer that never reads */
            lws_set_timeout(wsi, PENDING_TIMEOUT_USER_OK, 5);
            lws_callback_on_writable(wsi);
            return 0;
        }
        if (!pss || path_db_id(wsi, id))
            return -1;
        sdb *d = db_get(srv, id, NULL);
        if (!d)
            return -1;
        sconn *c = calloc(1, sizeof *c);
        if (!c) {
            db_release(d);
            return -1;
        }
        c->d = d;
        c->l.wsi = wsi;
        c->l.scheduled = 1; /* its deltas wait in the apply queue */
        c->l.status = LWS_CLOSE_STATUS_NORMAL;
        c->opened_ms = c->progress_ms = crdtdb__ws_now_ms();
        snprintf(c->peer, sizeof c->peer, "?");
        lws_get_peer_simple(wsi, c->peer, sizeof c->peer);
        crdtdb_session_options so;
        crdtdb_session_options_init(&so);
        so.flags = CRDTDB_SESSION_SERVER | CRDTDB_SESSION_YIELD; /* the apply queue's */
        so.mode = srv->o.mode;
        so.max_output = SERVER_MAX_OUTPUT;
        so.max_presence = srv->o.max_presence;
        if (pss->access == CRDTDB_ACCESS_READONLY)
            so.mode = CRDTDB_SYNC_SERVER_TO_CLIENT;
        memcpy(c->user, pss->user, sizeof c->user);
        memcpy(c->pc.user, pss->user, sizeof c->pc.user);
        c->pc.l = &c->l;
        c->pc.wake = conn_wake;
        c->pc.num = ++srv->conn_num;
        c->access = pss->access;
        c->checked = d->gen;
        if (srv->auth.authorize_write)
            so.write_filter = conn_write_filter;
        if (srv->auth.authorize_read)
            so.read_filter = conn_read_filter;
        so.filter_ctx = c;
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
        srv->m.accepted++;
        pss->c = c;
        if (c->user[0])
            slog(srv, "%s db '%s': user '%s' connected%s", c->peer, WS_QID(id), WS_QID(c->user),
                 c->access == CRDTDB_ACCESS_READONLY ? " (read-only)" : "");
        else
            slog(srv, "%s db '%s': connected", c->peer, WS_QID(id));
        return 0;
    }
    case LWS_CALLBACK_RECEIVE: {
        if (pss && pss->refused)
            return 0; /* its hello, unread: it is being refused */
        if (!pss || !pss->c || pss->c->ended)
            return -1;
        sconn *c = pss->c;
        if (!lws_frame_is_binary(wsi)) {
            slog(srv, "%s: text message refused", c->peer);
            lws_close_reason(wsi, LWS_CLOSE_STATUS_UNACCEPTABLE_OPCODE, NULL, 0);
            return -1;
        }
        c->progress_ms = crdtdb__ws_now_ms();
        srv->m.bytes_in += len;
        int r = crdtdb__ws_receive(&c->l, in, len);
        if (c->snap_due && !c->ended) { /* the others' presence, after the hellos */
            c->snap_due = 0;
            crdtdb__hub_snapshot(c->d->hub, &c->pc);
        }
        if (crdtdb_session_pending(c->l.s))
            apply_enqueue(c);
        conn_count(c);
        make_room(srv, 0, NULL, 0); /* over by one read at most */
        return c->ended ? -1 : r;
    }
    case LWS_CALLBACK_SERVER_WRITEABLE: {
        if (pss && pss->refused)
            return refused_writable(srv, wsi, pss);
        if (!pss || !pss->c)
            return -1;
        sconn *c = pss->c;
        if (c->ended)
            return -1; /* the close reason is set */
        conn_recheck(c);
        if (c->snap_due) { /* joined during an apply step, if ever */
            c->snap_due = 0;
            crdtdb__hub_snapshot(c->d->hub, &c->pc);
        }
        /* an export only with room for it, made by ending stalled hogs */
        c->l.hold_pump = crdtdb__ws_held_out(&c->l) == 0 && !crdtdb_session_closed(c->l.s) &&
                         make_room(srv, PUMP_ROOM, c, 1) != 0;
        c->waiting = c->l.hold_pump;
        int r = crdtdb__ws_writable(&c->l, srv->wbuf);
        uint64_t dn = crdtdb_session_deltas_sent(c->l.s);
        srv->m.deltas_out += dn - c->deltas_seen;
        c->deltas_seen = dn;
        if (c->l.sent != c->sent_seen) {
            srv->m.bytes_out += c->l.sent - c->sent_seen;
            c->sent_seen = c->l.sent;
            c->progress_ms = crdtdb__ws_now_ms();
        }
        if (c->l.pump_err) {
            slog(srv, "%s db '%s': export failed: %s", c->peer, WS_QID(crdtdb_db_id(c->d->db)),
                 crdtdb_session_errmsg(c->l.s));
            c->l.pump_err = 0;
        }
        conn_count(c);
        make_room(srv, 0, NULL, 0);
        return c->ended ? -1 : r;
    }
    case LWS_CALLBACK_TIMER: /* a lingering close: look again */
        if (pss && pss->c && !pss->c->ended)
            lws_callback_on_writable(wsi);
        break;
    case LWS_CALLBACK_CLOSED:
    case LWS_CALLBACK_WSI_DESTROY:
        if (pss && pss->c) {
            sconn *c = pss->c;
            pss->c = NULL;
            if (!srv->closing)
                slog(srv, "%s db '%s': disconnected%s%s", c->peer, WS_QID(crdtdb_db_id(c->d->db)),
                     c->ended || crdtdb_session_closed(c->l.s) ? ": " : "",
                     c->ended ? c->why
                              : crdtdb_session_closed(c->l.s) ? crdtdb_session_errmsg(c->l.s)
                                                              : "");
            conn_free(c);
        }
        break;
    default:
        break;
    }
    return lws_callback_http_dummy(wsi, reason, user, in, len);
}

static int count_db(void *ctx, const char *id)
{
    (void)id;
    ++*(size_t *)ctx;
    return 0;
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
    if (o.nrelay_users && !o.relay_users)
        return CRDTDB_EINVAL;
    if (!o.host || !*o.host)
        o.host = "127.0.0.1";
    if (o.mode != CRDTDB_SYNC_SERVER_TO_CLIENT)
        o.mode = CRDTDB_SYNC_TWO_WAY;
    if (!o.max_connections)
        o.max_connections = DEF_MAX_CONNECTIONS;
    if (!o.max_per_ip)
        o.max_per_ip = DEF_MAX_PER_IP;
    if (!o.max_databases)
        o.max_databases = DEF_MAX_DATABASES;
    if (!o.idle_secs)
        o.idle_secs = DEF_IDLE_SECS;
    if (!o.max_per_user)
        o.max_per_user = DEF_MAX_PER_USER;
    if (!o.max_buffered)
        o.max_buffered = DEF_MAX_BUFFERED;
    if (o.max_buffered < MIN_MAX_BUFFERED)
        o.max_buffered = MIN_MAX_BUFFERED;
    if (!o.handshake_secs)
        o.handshake_secs = DEF_HANDSHAKE_SECS;
    if (!o.message_secs)
        o.message_secs = DEF_MESSAGE_SECS;
    if (!o.ping_secs)
        o.ping_secs = DEF_PING_SECS;
    if (!o.pong_secs)
        o.pong_secs = DEF_PONG_SECS;
    if (!o.max_presence)
        o.max_presence = CRDTDB_PRESENCE_MAX;
    if (!o.max_presence_members)
        o.max_presence_members = DEF_MAX_PRESENCE_MEMBERS;
    if (!o.presence_hz)
        o.presence_hz = DEF_PRESENCE_HZ;
    if (o.presence_hz > MAX_PRESENCE_HZ || o.max_presence > MAX_PRESENCE_BYTES)
        return CRDTDB_EINVAL;
    if (o.metrics != CRDTDB_METRICS_LOCAL && o.metrics != CRDTDB_METRICS_ANY &&
        o.metrics != CRDTDB_METRICS_OFF)
        return CRDTDB_EINVAL;
    if (o.ping_secs > MAX_IDLE_SECS || o.pong_secs > MAX_IDLE_SECS - o.ping_secs ||
        o.handshake_secs > MAX_IDLE_SECS)
        return CRDTDB_EINVAL;
    crdtdb_server *srv = calloc(1, sizeof *srv);
    if (!srv)
        return CRDTDB_ENOMEM;
    srv->env = env;
    srv->o = o;
    if (crdtdb_db_list(env, count_db, &srv->nheld)) /* a guess: 0 */
        srv->nheld = 0;
    srv->host = crdtdb__ws_strdup(o.host);
    srv->cert = crdtdb__ws_strdup(o.tls_cert);
    srv->key = crdtdb__ws_strdup(o.tls_key);
    srv->peer_ca = crdtdb__ws_strdup(o.peer_tls_ca);
    srv->archive = crdtdb__ws_strdup(o.archive_dir);
    srv->colls = o.ncoll ? calloc(o.ncoll, sizeof *srv->colls) : NULL;
    srv->wbuf = malloc(LWS_PRE + WS_CHUNK);
    int oom = !srv->host || (o.tls_cert && (!srv->cert || !srv->key)) ||
              (o.peer_tls_ca && !srv->peer_ca) || (o.archive_dir && !srv->archive) ||
              (o.ncoll && !srv->colls) || !srv->wbuf;
    for (size_t i = 0; !oom && i < o.ncoll; i++)
        oom = !(srv->colls[i] = crdtdb__ws_strdup(o.collections[i]));
    if (!oom && o.nrelay_users) {
        oom = !o.relay_users || !(srv->relay_users = calloc(o.nrelay_users, sizeof(char *)));
        for (size_t i = 0; !oom && i < o.nrelay_users; i++)
            oom = !o.relay_users[i] || !(srv->relay_users[i] = crdtdb__ws_strdup(o.relay_users[i]));
    }
    if (oom) {
        crdtdb_server_close(srv);
        return CRDTDB_ENOMEM;
    }
    srv->o.host = srv->host;
    srv->o.tls_cert = srv->cert;
    srv->o.tls_key = srv->key;
    srv->o.peer_tls_ca = srv->peer_ca;
    srv->o.archive_dir = srv->archive;
    if (o.auth)
        srv->auth = *o.auth;
    srv->o.auth = NULL;
    srv->o.collections = NULL;
    srv->o.relay_users = (const char *const *)srv->relay_users;

    srv->protocols[0].name = WS_PROTOCOL;
    srv->protocols[0].callback = server_cb;
    srv->protocols[0].per_session_data_size = sizeof(spss);
    srv->protocols[0].rx_buffer_size = WS_CHUNK;
    srv->protocols[1].name = WS_PEER_PROTOCOL; /* links to peer servers */
    srv->protocols[1].callback = crdtdb__ws_client_cb;
    srv->protocols[1].rx_buffer_size = WS_CHUNK;

    struct lws_context_creation_info info;
    crdtdb__ws_ctx_info(&info, o.uv_loop, srv->foreign);
    info.port = o.port;
    info.iface = srv->host;
    info.protocols = srv->protocols;
    info.user = srv;
    /* a request's headers (WS_HEADER_SPACE each, freed at the upgrade)
     * are dropped unanswered if incomplete after handshake_secs */
    info.timeout_secs_ah_idle = o.handshake_secs;
    /* lws pings after ping_secs without a pong, hangs up pong_secs later */
    srv->idle.secs_since_valid_ping = (uint16_t)o.ping_secs;
    srv->idle.secs_since_valid_hangup = (uint16_t)(o.ping_secs + o.pong_secs);
    info.retry_and_idle_policy = &srv->idle;
    if (!strchr(srv->host, ':'))
        info.options |= LWS_SERVER_OPTION_DISABLE_IPV6;
    /* wss:// peer links need their CAs now: the context makes its client
     * TLS state once, at creation */
    if (srv->cert || srv->peer_ca)
        info.options |= LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
    info.client_ssl_ca_filepath = srv->peer_ca;
    if (srv->cert) {
        info.ssl_cert_filepath = srv->cert;
        info.ssl_private_key_filepath = srv->key;
    }
    srv->ctx = crdtdb__ws_ctx_open(&info, o.uv_loop, &srv->tail);
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
    randombytes_buf(srv->hub_cfg.id, sizeof srv->hub_cfg.id);
    srv->hub_cfg.ctx = srv->ctx;
    srv->hub_cfg.max_members = srv->o.max_presence_members;
    srv->hub_cfg.hz = srv->o.presence_hz;
    srv->hub_cfg.auth = &srv->auth;
    srv->hub_cfg.tokens = srv->o.jwt_key != NULL;
    srv->hub_cfg.relay_users = (const char *const *)srv->relay_users;
    srv->hub_cfg.nrelay_users = srv->relay_users ? o.nrelay_users : 0;
    srv->hub_cfg.log = slog_cb;
    srv->hub_cfg.log_ctx = srv;
    /* NULL: flushes go through lws, as every TLS connection's do */
    srv->hub_cfg.sendq = srv->cert ? NULL : crdtdb__sendq_open(1);
    slog(srv, "listening on %s://%s:%d", srv->cert ? "wss" : "ws", srv->host, srv->port);
    lws_sul_schedule(srv->ctx, 0, &srv->sul_poll, on_poll_due, WS_POLL_MS * LWS_US_PER_MS);
    *out = srv;
    return 0;
}

int crdtdb_server_port(const crdtdb_server *s) { return s ? s->port : 0; }

/* another process's commits, looked for at most this often by a turning
 * loop (the 50 ms timer looks too): a loop busy with presence turns about
 * once per update */
#define POLL_RUN_MS 10
#define HANDOFF_MS 1000 /* how often idle copies are looked at for a handoff */
#define HANDOFF_RETRY_MS 10000 /* after a refused drop (then doubling): not every second */
#define HANDOFF_TELL_MS 20000  /* a handoff waiting this long on a link is logged */
#define LEAVE_WAIT_MS 5000     /* a handoff's LEAVEs: time for every owner's answer */
#define FRESH_WAIT_MS 60000 /* a copy fetched for a refused client waits for it */
#define PRUNE_MS (3600u * 1000u) /* how often old tombs are pruned */
/* How long a dropped database's history end is kept (crdtdb_db_drop): a
 * handed-off copy served again within it goes on with its history */
#define TOMB_KEEP_MS (90ull * 24 * 3600 * 1000)

/* Commits by other handles or processes reach the observers here. */
static void poll_dbs(crdtdb_server *s)
{
    for (sdb *d = s->dbs; d; d = d->next)
        if (d->conns || d->nlinks)
            (void)crdtdb_db_poll(d->db, NULL);
}

/* Entries of one acks commit: a bounded array on the stack. */
#define ACKS_PER_COMMIT 64

/* Records the acks taken from d's sessions in one commit: with many
 * clients each acking every 50 ms, one fsync a flush instead of one a
 * client (they would delay the applies queued behind them).  If the batch
 * fails, each entry is tried alone, so one peer's damaged marks cannot
 * hold back the others'; what still fails is lost, as a crash loses acks
 * (crdtdb_session_flush), and logged when failing starts and stops. */
static void acks_record(crdtdb_server *srv, sdb *d, const crdtdb_peer_ack *a, size_t n)
{
    if (!n)
        return;
    int rc = crdtdb_db_peer_acks(d->db, a, n), logged = d->acks_failing;
    size_t lost = 0;
    for (size_t i = 0; rc && i < n; i++) {
        /* the batch recorded nothing: each entry alone (just one: that was it) */
        int one = n > 1 ? crdtdb_db_peer_acks(d->db, &a[i], 1) : rc;
        if (!one)
            continue;
        lost++;
        if (!logged++) /* the handle's message is one's */
            slog(srv, "database '%s': acks not recorded: %s: %s", WS_QID(crdtdb_db_id(d->db)),
                 crdtdb_errname(one), crdtdb_db_errmsg(d->db));
    }
    if (!lost && d->acks_failing)
        slog(srv, "database '%s': acks recorded again", WS_QID(crdtdb_db_id(d->db)));
    d->acks_failing = lost != 0;
}

/* Every WS_POLL_MS: acks received are recorded (all of a database's
 * sessions' in one commit), and a delta refused for clock skew is asked
 * for again once in time: that SINCE goes out now. */
static void flush_acks(crdtdb_server *s)
{
    crdtdb_peer_ack acks[ACKS_PER_COMMIT];
    for (sdb *d = s->dbs; d; d = d->next) {
        size_t n = 0;
        for (sconn *c = d->conns; c; c = c->next)
            if (c->l.s && !c->ended && crdtdb_session_acks_take(c->l.s, &acks[n]) == 1 &&
                ++n == ACKS_PER_COMMIT) {
                acks_record(s, d, acks, n);
                n = 0;
            }
        acks_record(s, d, acks, n);
        for (sconn *c = d->conns; c; c = c->next)
            if (c->l.s && !c->ended) {
                (void)crdtdb_session_flush(c->l.s); /* its timer; the acks are done */
                if (crdtdb__ws_held_out(&c->l)) /* acks, a clock retry's SINCE */
                    lws_callback_on_writable(c->l.wsi);
            }
    }
}

/* Every SWEEP_MS: connections past a deadline are closed, and exports
 * waiting for budget room are woken once there is some. */
static void sweep(crdtdb_server *s)
{
    uint64_t now = crdtdb__ws_now_ms();
    if (now < s->next_sweep)
        return;
    s->next_sweep = now + SWEEP_MS;
    char why[96];
    for (sdb *d = s->dbs; d; d = d->next)
        for (sconn *c = d->conns; c; c = c->next) {
            if (c->ended)
                continue;
            if (!c->ready && now - c->opened_ms > (uint64_t)s->o.handshake_secs * 1000) {
                snprintf(why, sizeof why, "no session hello within %u s", s->o.handshake_secs);
                conn_end(c, LWS_CLOSE_STATUS_POLICY_VIOLATION, why);
            } else if (c->l.frame_ms &&
                       now - c->l.frame_ms > (uint64_t)s->o.message_secs * 1000) {
                snprintf(why, sizeof why, "a message still unfinished after %u s",
                         s->o.message_secs);
                conn_end(c, LWS_CLOSE_STATUS_POLICY_VIOLATION, why);
            } else if (c->waiting && s->held + PUMP_ROOM <= s->o.max_buffered) {
                c->waiting = 0;
                crdtdb__ws_wake(&c->l);
            }
        }
}

/* The environment's clock (injectable), the one its stamps and expiry
 * times are in. */
static uint64_t env_ms(crdtdb_env *env)
{
    crdtdb_env_options o;
    crdtdb_env_options_get(env, &o);
    return o.clock(o.clock_ctx);
}

/* One database due: while open here, its sessions end and its links stop
 * (it is refused from now on); once closed, a later look archives and
 * drops it. */
static int on_expired(void *ctx, const char *id, const crdtdb_expiry *e)
{
    (void)e;
    crdtdb_server *s = ctx;
    gone_add(s, id);
    for (sdb *d = s->dbs; d; d = d->next) {
        if (strcmp(crdtdb_db_id(d->db), id) != 0)
            continue;
        slog(s, "db '%s': expired: ending its sessions", WS_QID(id));
        for (sconn *c = d->conns; c; c = c->next)
            if (!c->ended && c->l.s && !crdtdb_session_closed(c->l.s)) {
                crdtdb_session_abort(c->l.s, CRDTDB_EREVOKED, "database expired");
                lws_callback_on_writable(c->l.wsi);
            }
        links_close(d, 0);
        db_release(d); /* now, if no connection holds it */
        return 0;
    }
    crdtdb_db *db;
    uint64_t seq = 0;
    int rc = crdtdb_db_open(s->env, id, &db);
    char path[4200] = "";
    if (!rc) {
        rc = crdtdb_db_seq(db, NULL, &seq);
        if (!rc && s->archive) {
            size_t n = strlen(id);
            if (strlen(s->archive) + 2 * n + 9 < sizeof path) {
                snprintf(path, sizeof path, "%s/", s->archive);
                for (size_t i = 0; i < n; i++)
                    snprintf(path + strlen(path), 3, "%02x", (unsigned char)id[i]);
                strcat(path, ".crdtdb");
                rc = crdtdb_db_archive(db, path);
            } else {
                rc = CRDTDB_EINVAL;
            }
        }
        if (rc)
            slog(s, "db '%s': expired, kept: %s", WS_QID(id), crdtdb_db_errmsg(db));
        crdtdb_db_close(db);
    }
    if (!rc && (rc = crdtdb_env_drop_expired(s->env, id, env_ms(s->env), seq))) {
        slog(s, "db '%s': expired, kept: %s", WS_QID(id), crdtdb_env_errmsg(s->env));
        if (rc == CRDTDB_EBUSY) /* written since, or open elsewhere: not gone */
            gone_remove(s, id);
    }
    if (!rc) {
        s->nheld -= s->nheld > 0;
        slog(s, "db '%s': expired: dropped%s%s", WS_QID(id), *path ? ", archived to " : "", path);
    }
    return 0; /* the others still go */
}

static void expire_dbs(crdtdb_server *s)
{
    uint64_t now = crdtdb__ws_now_ms();
    if (!s->o.expire_secs || s->draining || now < s->next_expire)
        return;
    s->next_expire = now + (uint64_t)s->o.expire_secs * 1000;
    if (crdtdb_env_expired(s->env, env_ms(s->env), on_expired, s))
        slog(s, "expiry: %s", crdtdb_env_errmsg(s->env));
}

/* Drops the tombstones every peer holds, in each open database; the
 * sessions then resync any peer the floor passed. */
static void collect_dbs(crdtdb_server *s)
{
    uint64_t now = crdtdb__ws_now_ms();
    if (!s->o.collect_secs || s->draining || now < s->next_collect)
        return;
    s->next_collect = now + (uint64_t)s->o.collect_secs * 1000;
    for (sdb *d = s->dbs; d; d = d->next)
        collect_db(s, d->db);
}

static int handoff_drop(crdtdb_server *s, sdb *d, uint64_t seq);

/* A handoff of d tried again later, after `refusals` failed tries in a
 * row: 10 s, doubling to an hour, so a lasting refusal (a handle open, an
 * owner that does not answer) churns its links less and less. */
static void handoff_later(sdb *d, unsigned refusals, uint64_t now)
{
    d->refusals = refusals < 16 ? refusals + 1 : refusals;
    uint64_t wait = (uint64_t)HANDOFF_RETRY_MS << (refusals < 9 ? refusals : 9);
    d->handoff_ms = now + (wait < 3600000 ? wait : 3600000);
}

/* A copy this server does not keep (o.keep), with no client and every
 * peer link in sync — each peer acknowledged, durably, all it holds — is
 * dropped: the links close, then the database goes (unless written since
 * by another process).  1 when it went. */
static int handoff_db(crdtdb_server *s, sdb *d)
{
    const char *id = crdtdb_db_id(d->db);
    if (!d->leave_ms)
        links_prune(d);
    if (d->conns || !d->nlinks || crdtdb__ws_now_ms() < d->handoff_ms ||
        (d->fresh_ms && crdtdb__ws_now_ms() - d->fresh_ms < FRESH_WAIT_MS) ||
        s->o.keep(s->o.keep_ctx, id)) {
        d->held_ms = 0; /* not waiting on its links */
        d->held_told = 0;
        if (d->leave_ms) { /* off after all (a client came): linked again */
            leave_cancel(d);
            link_peers(d);
        }
        return 0;
    }
    uint64_t now = crdtdb__ws_now_ms();
    if (d->leave_ms) { /* the owners were told: the drop waits for each
                          to answer that it stored the leave, a while at
                          most */
        size_t unleft = d->nlinks;
        for (size_t i = 0; i < d->nlinks; i++) {
            if (!crdtdb__client_gone(d->links[i]) && now - d->leave_ms < LEAVE_WAIT_MS)
                return 0;
            if (!crdtdb__client_left(d->links[i]))
                unleft = i;
        }
        if (unleft == d->nlinks)
            return handoff_drop(s, d, d->leave_seq);
        /* a LEAVE that owner may not have stored: it would count on this
         * copy for good.  Linked again, and tried later, backing off as
         * after a refused drop (each try costs the owners a resync) */
        slog(s, "db '%s': handoff: %s did not answer its LEAVE; later",
             WS_QID(id), d->lpeer[unleft]->url);
        handoff_later(d, d->refusals, now);
        leave_cancel(d);
        link_peers(d);
        return 0;
    }
    /* the sequence first: a commit (another process's) after it fails the
     * drop; one before it is one the links' checks below see */
    uint64_t seq;
    if (crdtdb_db_seq(d->db, NULL, &seq))
        return 0;
    for (size_t i = 0; i < d->nlinks; i++) {
        const char *why = crdtdb__client_unheld(d->links[i]);
        if (!why)
            continue;
        /* a wait this long is worth a line: which peer, and for what */
        if (!d->held_ms)
            d->held_ms = now;
        else if (!d->held_told && now - d->held_ms >= HANDOFF_TELL_MS) {
            d->held_told = 1;
            slog(s, "db '%s': handoff waits for peer %s: %s", WS_QID(id), d->lpeer[i]->url, why);
        }
        return 0;
    }
    /* every owner holds all of it: each is told that this copy goes
     * (LEAVE), so that it no longer holds the owner's collection back */
    d->leave_ms = now ? now : 1;
    d->leave_seq = seq;
    for (size_t i = 0; i < d->nlinks; i++)
        crdtdb__client_leave_hosted(d->links[i]);
    slog(s, "db '%s': handoff: telling its %zu owner%s it leaves", WS_QID(id), d->nlinks,
         d->nlinks == 1 ? "" : "s");
    return 0;
}

/* The end of a handoff: d's links closed, then d dropped unless written
 * since `seq`.  1 (d is gone from the list either way). */
static int handoff_drop(crdtdb_server *s, sdb *d, uint64_t seq)
{
    char name[CRDTDB_ID_MAX + 1];
    snprintf(name, sizeof name, "%s", crdtdb_db_id(d->db)); /* id goes with the handle */
    unsigned refusals = d->refusals;
    links_close(d, 0);
    db_free(d);
    int rc = crdtdb_env_drop_at(s->env, name, seq);
    if (rc) {
        slog(s, "db '%s': handed off, kept here: %s", WS_QID(name), crdtdb_env_errmsg(s->env));
        /* kept (written since, open elsewhere in the process, or a store
         * error): linked again, so what it holds and is written goes on to
         * the owners, and looked at again later (a copy left closed would
         * never be); at the list's head, so this round does not meet it */
        sdb *again = rc != CRDTDB_ENODB ? db_get(s, name, NULL) : NULL;
        if (again) {
            handoff_later(again, refusals, crdtdb__ws_now_ms());
            db_release(again);
        }
    } else {
        s->nheld -= s->nheld > 0;
        s->m.handoffs++;
        slog(s, "db '%s': handed off to the servers it is linked to: dropped here", WS_QID(name));
    }
    return 1;
}

static void handoff_dbs(crdtdb_server *s)
{
    uint64_t now = crdtdb__ws_now_ms();
    if (!s->o.keep || s->draining || now < s->next_handoff)
        return;
    s->next_handoff = now + HANDOFF_MS;
    for (sdb *d = s->dbs, *next; d; d = next) {
        next = d->next;
        handoff_db(s, d);
    }
}

/* Whether connection c is a peer server's link: its replica is one d's
 * own links reach (a cluster links each pair of owners both ways). */
static int conn_is_link(const sdb *d, const sconn *c)
{
    /* with tokens, a peer's link is a relay user's: a client claiming a
     * peer's replica id in its hello is not taken for one */
    if (!c->ready || (d->srv->o.nrelay_users && !relay_user(d->srv, c->user)))
        return 0;
    for (size_t i = 0; i < d->nlinks; i++) {
        const uint8_t *r = crdtdb__client_peer(d->links[i]);
        if (r && memcmp(r, c->pc.replica, CRDTDB_REPLICA_ID_BYTES) == 0)
            return 1;
    }
    return 0;
}

/* Whether d has no client, only peers' links, all in sync, its own links
 * in sync too, and each of its links has the peer's link back: a peer
 * linked one way only (a --peer standby) gets later writes through our
 * link alone, so that link must stay. */
static int db_quiet(const sdb *d)
{
    if (!d->nlinks || !links_caught(d))
        return 0;
    for (const sconn *c = d->conns; c; c = c->next)
        if (c->ended || !c->l.s || !conn_is_link(d, c) || !crdtdb_session_synced(c->l.s))
            return 0;
    for (size_t i = 0; i < d->nlinks; i++) {
        const uint8_t *r = crdtdb__client_peer(d->links[i]);
        int back = 0;
        for (const sconn *c = d->conns; r && c && !back; c = c->next)
            back = memcmp(r, c->pc.replica, CRDTDB_REPLICA_ID_BYTES) == 0;
        if (!back)
            return 0;
    }
    return 1;
}

/* Closes the links of the databases quiet for idle_secs
 * (crdtdb_server_options), and the databases with them once no peer's
 * link holds them.  Kept ones only: a copy the server does not keep goes
 * by the handoff. */
static void idle_dbs(crdtdb_server *s)
{
    uint64_t now = crdtdb__ws_now_ms();
    if (s->o.idle_secs == UINT_MAX || s->draining || now < s->next_idle)
        return;
    s->next_idle = now + HANDOFF_MS;
    for (sdb *d = s->dbs, *next; d; d = next) {
        next = d->next;
        const char *id = crdtdb_db_id(d->db);
        if (!db_quiet(d) || (s->o.keep && !s->o.keep(s->o.keep_ctx, id))) {
            d->quiet_ms = 0;
            continue;
        }
        if (!d->quiet_ms)
            d->quiet_ms = now;
        if (now - d->quiet_ms < (uint64_t)s->o.idle_secs * 1000)
            continue;
        slog(s, "db '%s': idle for %u s, in sync with its peers: its links closed, the "
                "database with them once no peer's link holds it",
             WS_QID(id), s->o.idle_secs);
        d->quiet_ms = 0;
        links_close(d, 0);
        db_release(d); /* now, unless peers' links still hold it */
    }
}

static void prune_tombs(crdtdb_server *s)
{
    uint64_t now = crdtdb__ws_now_ms(), pruned = 0;
    if (now < s->next_prune)
        return;
    s->next_prune = now + PRUNE_MS;
    crdtdb_env_options eo;
    crdtdb_env_options_get(s->env, &eo);
    uint64_t t = eo.clock(eo.clock_ctx);
    if (eo.flags & CRDTDB_ENV_RDONLY)
        return;
    if (t > TOMB_KEEP_MS && crdtdb_env_tombs_prune(s->env, t - TOMB_KEEP_MS, &pruned))
        slog(s, "pruning dropped databases: %s", crdtdb_env_errmsg(s->env));
    else if (pruned)
        slog(s, "forgot where %llu databases dropped over %llu days ago ended",
             (unsigned long long)pruned, (unsigned long long)(TOMB_KEEP_MS / 86400000u));
}

static void on_poll_due(lws_sorted_usec_list_t *sul)
{
    crdtdb_server *s = lws_container_of(sul, crdtdb_server, sul_poll);
    poll_dbs(s);
    flush_acks(s);
    sweep(s);
    expire_dbs(s);
    collect_dbs(s);
    handoff_dbs(s);
    idle_dbs(s);
    prune_tombs(s);
    lws_sul_schedule(s->ctx, 0, &s->sul_poll, on_poll_due, WS_POLL_MS * LWS_US_PER_MS);
}

int crdtdb_server_run(crdtdb_server *s, int timeout_ms)
{
    if (!s || !s->ctx || s->o.uv_loop)
        return CRDTDB_EINVAL;
    /* another process's commits, at most every POLL_RUN_MS: a loop that
     * turns for every presence update would read LMDB for each */
    uint64_t now = crdtdb__ws_now_ms();
    if (now - s->polled_ms >= POLL_RUN_MS) {
        s->polled_ms = now;
        poll_dbs(s);
    }
    int rc = crdtdb__ws_service(s->ctx, &s->sul, timeout_ms);
    if (rc)
        slog(s, "event loop failed");
    return rc;
}

/* Adds one database to the list, for crdtdb_db_list. */
typedef struct idlist {
    char **ids;
    size_t n;
    int oom;
} idlist;

static int collect_id(void *ctx, const char *id)
{
    idlist *l = ctx;
    char **ids = realloc(l->ids, (l->n + 1) * sizeof *ids);
    if (!ids || !(ids[l->n] = crdtdb__ws_strdup(id))) {
        if (ids)
            l->ids = ids;
        l->oom = 1;
        return 1;
    }
    l->ids = ids;
    l->n++;
    return 0;
}

static void speer_free(speer *p)
{
    if (!p)
        return;
    for (size_t i = 0; p->dbs && i < p->ndbs; i++)
        free(p->dbs[i]);
    free(p->dbs);
    free(p->url);
    free(p->tls_ca);
    if (p->token) {
        sodium_memzero(p->token, strlen(p->token));
        free(p->token);
    }
    free(p);
}

int crdtdb_server_peer(crdtdb_server *s, const crdtdb_client_options *link,
                       const char *const *dbs, size_t ndbs)
{
    if (!s || !link || !link->url || (ndbs && !dbs))
        return CRDTDB_EINVAL;
    if (strncmp(link->url, "wss:", 4) == 0 && !s->peer_ca) {
        slog(s, "peer %s: wss:// peer links need the server's peer_tls_ca", link->url);
        return CRDTDB_EINVAL;
    }
    speer *p = calloc(1, sizeof *p);
    if (!p)
        return CRDTDB_ENOMEM;
    p->o = *link;
    p->o.mode = CRDTDB_SYNC_TWO_WAY; /* peering is symmetric */
    p->o.on_event = NULL;
    p->o.uv_loop = NULL;
    p->url = crdtdb__ws_strdup(link->url);
    p->tls_ca = crdtdb__ws_strdup(link->tls_ca);
    p->token = crdtdb__ws_strdup(link->token);
    int oom = !p->url || (link->tls_ca && !p->tls_ca) || (link->token && !p->token);
    if (!oom && ndbs) {
        p->dbs = calloc(ndbs, sizeof *p->dbs);
        oom = !p->dbs;
        for (size_t i = 0; !oom && i < ndbs; i++)
            oom = !dbs[i] || !(p->dbs[p->ndbs++] = crdtdb__ws_strdup(dbs[i]));
    }
    if (oom) {
        speer_free(p);
        return CRDTDB_ENOMEM;
    }
    p->o.url = p->url;
    p->o.tls_ca = p->tls_ca;
    p->o.token = p->token;
    /* the url must parse: try it on a handle we are sure to have */
    idlist l = {NULL, 0, 0};
    int rc = 0;
    if (p->dbs) {
        for (size_t i = 0; !rc && i < p->ndbs; i++)
            rc = collect_id(&l, p->dbs[i]) ? CRDTDB_ENOMEM : 0;
    } else {
        rc = crdtdb_db_list(s->env, collect_id, &l);
        if (!rc && l.oom)
            rc = CRDTDB_ENOMEM;
    }
    if (!rc) {
        p->next = s->peers;
        s->peers = p;
        slog(s, "peering with %s: %s", p->url, p->dbs ? "listed databases" : "every database");
        for (size_t i = 0; i < l.n; i++) { /* open each: db_get adds the link */
            sdb *have = db_find(s, l.ids[i]);
            if (have) {
                link_add(have, p);
            } else if (peer_wants(s, p, l.ids[i])) {
                sdb *d = db_get(s, l.ids[i], NULL);
                if (d && !d->nlinks && !d->conns) /* every link refused */
                    db_release(d);
            }
        }
    } else {
        speer_free(p);
    }
    for (size_t i = 0; i < l.n; i++)
        free(l.ids[i]);
    free(l.ids);
    return rc;
}

int crdtdb_server_relink(crdtdb_server *s, const char *const *ids, size_t n)
{
    if (!s || (n && !ids))
        return CRDTDB_EINVAL;
    idlist l = {NULL, 0, 0};
    int rc = 0;
    if (!ids) {
        if (!(rc = crdtdb_db_list(s->env, collect_id, &l)) && l.oom)
            rc = CRDTDB_ENOMEM;
        ids = (const char *const *)l.ids;
        n = l.n;
    }
    for (size_t i = 0; !rc && i < n; i++) {
        sdb *d = db_find(s, ids[i]);
        if (d) { /* open: its unwanted links go, wanted ones come */
            leave_cancel(d); /* a handoff looks again with the new owners */
            links_prune(d);
            link_peers(d);
            if (!d->conns && !d->nlinks)
                db_release(d);
            continue;
        }
        int wanted = 0;
        for (speer *p = s->peers; p && !wanted; p = p->next)
            wanted = peer_wants(s, p, ids[i]);
        if (!wanted)
            continue;
        if ((d = db_get(s, ids[i], NULL)) == NULL)
            continue; /* logged; the next relink tries again */
        if (!d->nlinks && !d->conns) /* every link refused */
            db_release(d);
    }
    for (size_t i = 0; i < l.n; i++)
        free(l.ids[i]);
    free(l.ids);
    return rc;
}

int crdtdb_server_unpeer(crdtdb_server *s, const char *url)
{
    if (!s || !url)
        return CRDTDB_EINVAL;
    int found = 0;
    for (speer *p = s->peers; p && !found; p = p->next)
        found = strcmp(p->url, url) == 0;
    if (!found)
        return 0;
    for (sdb *d = s->dbs, *next; d; d = next) {
        next = d->next;
        if (d->leave_ms) { /* a handoff looks again without that peer */
            leave_cancel(d);
            link_peers(d);
        }
        for (size_t i = 0; i < d->nlinks;) {
            if (strcmp(d->lpeer[i]->url, url) != 0) {
                i++;
                continue;
            }
            link_drop(d, i);
        }
        if (!d->conns && !d->nlinks)
            db_release(d); /* held open by those links only */
    }
    for (speer **pp = &s->peers; *pp;) {
        speer *p = *pp;
        if (strcmp(p->url, url) != 0) {
            pp = &p->next;
            continue;
        }
        *pp = p->next;
        speer_free(p);
    }
    slog(s, "unpeered %s: its links closed", url);
    return 1;
}

void crdtdb_server_close(crdtdb_server *s)
{
    if (!s)
        return;
    s->closing = 1;
    for (sdb *d = s->dbs; d; d = d->next) { /* links stop reconnecting first */
        for (size_t i = 0; i < d->nlinks; i++)
            crdtdb__client_stop_hosted(d->links[i]);
        crdtdb__hub_stop(d->hub); /* its timers go with the context */
    }
    if (s->ctx) {
        lws_sul_cancel(&s->sul_poll);
        lws_sul_cancel(&s->sul_apply);
        crdtdb__ws_ctx_close(s->ctx, s->tail); /* closes every connection */
    }
    while (s->dbs) { /* only peered ones are left once connections go */
        sdb *d = s->dbs;
        while (d->conns)
            conn_free(d->conns); /* frees d with the last one, unless peered */
        if (s->dbs == d) {
            links_close(d, 1);
            db_free(d); /* the list's head */
        }
    }
    while (s->peers) {
        speer *p = s->peers;
        s->peers = p->next;
        speer_free(p);
    }
    for (size_t i = 0; s->colls && i < s->o.ncoll; i++)
        free(s->colls[i]);
    free(s->colls);
    for (size_t i = 0; s->relay_users && i < s->o.nrelay_users; i++)
        free(s->relay_users[i]);
    free(s->relay_users);
    free(s->host);
    free(s->cert);
    free(s->key);
    free(s->peer_ca);
    free(s->archive);
    for (size_t i = 0; i < s->ngone; i++)
        free(s->gone[i]);
    free(s->gone);
    free(s->wbuf);
    crdtdb__sendq_close(s->hub_cfg.sendq);
    crdtdb__ws_batch_free(&s->early);
    free(s);
}

int crdtdb_server_drain(crdtdb_server *s)
{
    if (!s)
        return CRDTDB_EINVAL;
    if (s->draining)
        return 0;
    s->draining = 1;
    slog(s, "draining: %zu connections", s->nconn);
    flush_acks(s); /* a database's acks in one commit, not one a session */
    for (sdb *d = s->dbs; d; d = d->next) {
        for (size_t i = 0; i < d->nlinks; i++) /* links do not reconnect */
            crdtdb__client_stop_hosted(d->links[i]);
        for (sconn *c = d->conns; c; c = c->next) {
            if (c->ended || !c->l.s || crdtdb_session_closed(c->l.s))
                continue;
            crdtdb_session_shutdown(c->l.s); /* a CLOSE after what is queued */
            c->l.status = LWS_CLOSE_STATUS_GOINGAWAY;
            lws_callback_on_writable(c->l.wsi);
        }
    }
    return 0;
}

int crdtdb_server_drained(const crdtdb_server *s)
{
    if (!s)
        return 1;
    if (!s->draining || s->nconn)
        return 0;
    /* a write acknowledged here just before the drain may be on this
     * server only: its links pass it on before it goes (a server taken
     * out of a cluster would else hold the only copy); a link that is
     * down cannot be waited for (it does not reconnect while draining) */
    for (const sdb *d = s->dbs; d; d = d->next)
        for (size_t i = 0; i < d->nlinks; i++)
            if (crdtdb_client_connected(d->links[i]) && !crdtdb_client_synced(d->links[i]))
                return 0;
    return 1;
}

int crdtdb_server_reauthorize(crdtdb_server *s, const char *db_id)
{
    if (!s)
        return CRDTDB_EINVAL;
    for (sdb *d = s->dbs; d; d = d->next) {
        if (db_id && strcmp(crdtdb_db_id(d->db), db_id) != 0)
            continue;
        for (sconn *c = d->conns; c; c = c->next) {
            if (!c->l.s || crdtdb_session_closed(c->l.s))
                continue;
            crdtdb_session_abort(c->l.s, CRDTDB_EREVOKED, "access changed");
            lws_callback_on_writable(c->l.wsi);
        }
    }
    return 0;
}
