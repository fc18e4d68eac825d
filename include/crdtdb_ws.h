/*
 * crdtdb_ws — the sync session over WebSocket, and the tokens that name its
 * users.  The public header of libcrdtdb_ws (pkg-config crdtdb_ws), which
 * links libwebsockets, libjwt, OpenSSL and libuv on top of libcrdtdb.
 * Everything in crdtdb.h (included here) holds: errors, ownership, handles.
 */
#ifndef CRDTDB_WS_H
#define CRDTDB_WS_H

#include "crdtdb.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct crdtdb_jwt_key crdtdb_jwt_key; /* see "tokens" */

/* ------------------------------------------ WebSocket server and client */

/*
 * The sync session over WebSocket (libwebsockets; transport/ws_server.c, ws_client.c, ws_link.c).  One
 * connection syncs one database at the endpoint /v1/db/<url-encoded database
 * id>; each WebSocket binary message carries session bytes (a message may
 * hold part of a frame or several frames).  Nothing here starts threads:
 * the embedding program calls crdtdb_server_run() / crdtdb_client_run() in
 * its own loop, and all callbacks (session events, logging) run inside
 * those calls on that thread.  Or it passes its libuv loop (uv_loop in the
 * options; libwebsockets' libuv event library must be installed): then
 * the loop drives everything, callbacks run on the loop's thread, and the
 * _run functions are not used (they fail with EINVAL).  After closing a
 * server or client on a libuv loop, let the loop run on (uv_run returns
 * once nothing is left): its last handles finish closing there, and a
 * timer of ours frees the libwebsockets context once they have, checking
 * every 5 ms for up to 10 s of turns; a context whose handles are still
 * there after that is left (leaked), not freed, and the loop can no
 * longer be closed (uv_loop_close: UV_EBUSY).  Until the loop has run,
 * uv_loop_close fails with UV_EBUSY; do not free the loop before it
 * succeeds.  Close a server or client from the loop's thread, not from
 * inside one of its own callbacks.  Each server and client has its own
 * libwebsockets context; there is no global state.  libwebsockets' own
 * notices (a banner per context) go to stderr at its default log level,
 * which is process-wide in the libwebsockets of Debian 12 (4.1), so it is
 * left to the program: lws_set_log_level(LLL_ERR, NULL) quiets them, as
 * the crdtdb command does.
 */
typedef struct crdtdb_server crdtdb_server;

/* What a user may do with a database. */
typedef enum crdtdb_access {
    CRDTDB_ACCESS_DENY = 0,     /* refused (HTTP 403; connected: closed) */
    CRDTDB_ACCESS_READONLY = 1, /* server-to-client mode */
    CRDTDB_ACCESS_READWRITE = 2
} crdtdb_access;

/*
 * Authorization hooks of a server, called on its thread with the user id
 * (the token's `sub`; "" without tokens).  All may be NULL (allowed).
 *  - authorize_user: the access of `user` to db (open; `created` is 1 when
 *    this connection just created it: a hook may write to db then, e.g.
 *    to record the owner).  Asked before the WebSocket upgrade and again
 *    after every commit to the database; when the answer changes for a
 *    connected user, the server ends that session with EREVOKED ("access
 *    changed") and the client starts over.
 *  - authorize_write: whether `user` may change record (coll, id) from
 *    `old` to `now` (see crdtdb_write_filter; read db through txn).  A
 *    refused change is not stored, the record is written back as it was
 *    (so the client's copy returns to it), and the client gets a notice
 *    naming the record.
 *  - authorize_read: whether `user` may see record (coll, id) whose value
 *    is `value` (read db through txn).  A client receives only records it
 *    may see, on its first sync and live, and whole (not only the changed
 *    fields); when a change makes a record invisible to it, the client is
 *    told to forget it (crdtdb_db_purge, observers see a REMOVE).  A
 *    permission that changes without a change to the record itself takes
 *    effect for that record at its next change, or at once for everything
 *    by crdtdb_server_reauthorize().  Deltas are then made per connection.
 */
typedef struct crdtdb_server_auth {
    crdtdb_access (*authorize_user)(void *ctx, crdtdb_db *db, const char *user,
                                    int created);
    int (*authorize_write)(void *ctx, crdtdb_txn *txn, const char *user,
                           const char *coll, const char *id, const uint8_t *old,
                           size_t old_len, const uint8_t *now, size_t now_len);
    int (*authorize_read)(void *ctx, crdtdb_txn *txn, const char *user,
                          const char *coll, const char *id, const uint8_t *value,
                          size_t len);
    /*  - authorize_presence: whether `user` may publish presence and
     *    messages on db (relay 0; NULL hook: yes, read-only users too), or
     *    relay other connections' as a peer server's link (relay 1, asked
     *    when the connection opens, for users not in relay_users; NULL
     *    hook: yes without tokens, no with them).  A relaying connection
     *    is trusted to name the users of what it relays, and gets every
     *    message.  A no is a NOTICE (EDENIED) and the frame is dropped. */
    int (*authorize_presence)(void *ctx, crdtdb_db *db, const char *user, int relay);
    void *ctx;
} crdtdb_server_auth;

/*
 * The built-in policy (`crdtdb serve` with tokens): membership lives in
 * each database's collection "_members", record id = user id, fields
 * "role" ("owner" | "writer" | "reader") and "status" ("invited" |
 * "accepted").  The user whose connection creates a database becomes its
 * owner.  Owners (accepted) change anything, members included; writers
 * (accepted) change everything but "_members"; an invited user may only
 * set their own status to "accepted"; accepted readers connect read-only;
 * non-members are denied.  Databases need the "_members" collection.
 */
CRDTDB_API void crdtdb_members_policy(crdtdb_server_auth *auth);

/* ---- metrics: who may read GET /metrics (crdtdb_server_options.metrics) */
typedef enum crdtdb_metrics_access {
    CRDTDB_METRICS_LOCAL = 0, /* loopback peers only (default) */
    CRDTDB_METRICS_ANY = 1,   /* every peer that can reach the port */
    CRDTDB_METRICS_OFF = 2    /* nobody: 404 */
} crdtdb_metrics_access;
/* ---- end of metrics ---- */

typedef struct crdtdb_server_options {
    const char *host;       /* listen address (default "127.0.0.1") */
    int port;               /* 0: an ephemeral port (crdtdb_server_port) */
    const char *const *collections; /* for databases created on first */
    size_t ncoll;                   /* connect; ncoll 0: unknown databases
                                       are refused */
    crdtdb_sync_mode mode;  /* the most any connection is granted
                               (default TWO_WAY) */
    const char *tls_cert;   /* both set: wss:// (PEM file paths) */
    const char *tls_key;
    size_t max_connections; /* default 1024; connections beyond are
                               refused with HTTP 503 */
    void (*log)(void *ctx, const char *line); /* one line per connection
                                                 event or error; NULL: silent */
    void *log_ctx;
    void *uv_loop;          /* a uv_loop_t * to run on (see above), or NULL */
    const char *peer_tls_ca; /* wss:// peer links: PEM file of the CAs to
                                trust (the system's bundle is
                                /etc/ssl/certs/ca-certificates.crt); NULL:
                                ws:// peers only */
    const crdtdb_jwt_key *jwt_key; /* set: every connection presents a
                                bearer token (Authorization header, the
                                first Sec-WebSocket-Protocol entry, or
                                ?access_token= in the URL) valid under
                                this key, else HTTP 401 before the
                                upgrade.  Borrowed: keep it until close.
                                A request with the URL argument inband=1
                                is upgraded instead and gets the refusal
                                as an ERROR and a 44xx close (4401, 4403,
                                4404, 4400, 4429, 4503; docs/auth.md). */
    unsigned jwt_leeway;    /* seconds of clock slack for exp / nbf */
    const crdtdb_server_auth *auth; /* hooks (copied); NULL: everyone may
                                       do everything */
    /* Limits on what hostile clients can hold (docs/auth.md, "Limits and
     * timeouts").  0 in any of them: its default.  Refusals come before
     * the upgrade, as HTTP statuses; closes after it, as WebSocket closes
     * with a reason, each with a log line. */
    size_t max_per_ip;      /* connections from one address (default 64;
                               beyond: HTTP 429); SIZE_MAX: no limit.  A
                               relay user's (relay_users: a peer server's
                               links, one per database) pass this cap and
                               the next; max_connections holds for all */
    size_t max_per_user;    /* connections of one token user (default 32;
                               beyond: HTTP 429); SIZE_MAX: no limit */
    size_t max_databases;   /* databases the environment may hold before a
                               client's request for one it does not hold
                               is refused (HTTP 503, "database limit
                               reached"; default 100,000; SIZE_MAX: no
                               limit): an open server creates what
                               clients name, and each database held stays
                               on disk and, linked, open.  Counted at
                               open and as this server creates and drops
                               databases (not other processes'); a relay
                               user's links (peer servers) are not limited
                               by it */
    size_t max_buffered;    /* bytes all sessions together may hold in
                               input and output buffers (default 256 MiB;
                               at least 16 MiB).  Over it, the connection
                               holding the most (stalled ones first) is
                               closed at once: 1013 "server memory budget
                               exceeded".  Exports wait for room. */
    unsigned handshake_secs; /* from accepting a connection to its request
                                headers and its session hello (default 10):
                                else closed, 1008 "no hello within N s" */
    unsigned message_secs;  /* a sync message begun must end within this
                               (default 120): else closed, 1008 */
    unsigned ping_secs;     /* a WebSocket ping this often (default 30) */
    unsigned pong_secs;     /* no pong within this after a ping: the
                               connection is dropped (default 30); at most
                               30000 together with ping_secs */
    /* Presence and messages (docs/protocol.md, "Presence and messages"). */
    size_t max_presence;    /* bytes of one state or message body
                               (default and at most CRDTDB_PRESENCE_MAX,
                               what every client takes; else EINVAL) */
    size_t max_presence_members; /* entries per database (default 256) */
    unsigned presence_hz;   /* changes forwarded per connection per second,
                               the latest winning; and messages accepted
                               (default 30; at most 1000, else EINVAL) */
    const char *const *relay_users; /* with tokens: the users (token subs)
                               of peer servers' links, whose connections
                               may relay others' presence and messages
                               and get every message, whoever it is for;
                               nrelay_users of them (copied).  Others may
                               relay only if authorize_presence says so */
    size_t nrelay_users;
    /* Expiry (crdtdb_db_expire_set): every expire_secs (0: never) the
     * server looks for databases whose time-to-live has passed, ends their
     * sessions (EREVOKED "database expired": clients clear their copies),
     * stops their peer links, refuses them from then on (HTTP 403, so no
     * reconnect re-creates one; until a restart), archives each into
     * archive_dir/<hex of the id>.crdtdb when set, and drops it unless
     * something was written meanwhile. */
    unsigned expire_secs;
    const char *archive_dir; /* copied; NULL: no archive */
    /* Collection (crdtdb_db_collect): every collect_secs (0: never) each
     * database open here drops the tombstones its peers all hold; a peer
     * silent for longer than max_peer_age_ms (0: no limit) no longer holds
     * that back, and is resynced whole when it returns. */
    unsigned collect_secs;
    uint64_t max_peer_age_ms;
    /* A database open here with no client connection (only peer
     * servers' links), whose sessions and links have all been in sync for
     * idle_secs, and each of whose links has the peer's link back (peers
     * linked both ways, as in a cluster), has its links closed, and is
     * closed once no peer's link holds it (0: 300 s; UINT_MAX: never):
     * what a server keeps open is what is in use, not every database it
     * holds.  Writes go on arriving over the peers' links while they hold
     * it; a client arriving, or a peer's new link, opens it (or finds it
     * open) and links it to its peers again.  A one-way link (a --peer
     * standby) is never closed so.  With relay_users, only their
     * connections count as peers' links.  A copy the server does not keep
     * (keep) is left to the handoff instead. */
    unsigned idle_secs;
    /* Early relay (crdtdb_db_set_precommit; docs/operations.md, "Early
     * relay"): 1 (the default) sends a write's delta to the database's
     * other sessions that wait, caught up, before the commit's disk flush,
     * so fan-out waits for no fsync; the writer is acknowledged only once
     * the commit is durable, as before.  0: only after the commit. */
    int early_relay;
    /* ---- metrics (docs/operations.md) ----
     * GET /metrics on the server's own port answers the Prometheus text
     * format (connections, databases, deltas and bytes, apply latency,
     * refusals, clock skew, peer links, presence, drain).  It tells
     * nothing secret, but it tells a stranger how busy the server is and
     * how it is configured, so by default only loopback addresses get it
     * (a scraper on the host, or a proxy there that is told not to route
     * /metrics); others get 404, as when it is off. */
    crdtdb_metrics_access metrics;
    /* ---- end of metrics ---- */
    /* Which databases each peer server (crdtdb_server_peer) syncs: called
     * with the peer's url and a database id whenever a database opens
     * here (NULL: the peer's `dbs` list decides alone).  Nonzero: link it.
     * A cluster's owners (crdtdb_cluster_owners) plug in here.  Called on
     * the server's thread; ctx is borrowed until close. */
    int (*peer_filter)(void *ctx, const char *peer_url, const char *db_id);
    void *peer_filter_ctx;
    /* Whether this server keeps its copy of a database no client holds
     * (NULL: it keeps every one).  One it does not keep — in a cluster, a
     * database it does not own, opened for a client the balancer sent
     * here — is handed off: once no client of it is connected and every
     * peer link of it is in sync (the peer acknowledged all this copy
     * holds, durably), the links close and the database is dropped
     * (crdtdb_db_drop: created again, it goes on with its history and
     * pulls it all back).  Asked about idle databases about once a
     * second, on the server's thread; ctx is borrowed until close. */
    int (*keep)(void *ctx, const char *db_id);
    void *keep_ctx;
} crdtdb_server_options;

/* Fills opts with the defaults above. */
CRDTDB_API void crdtdb_server_options_init(crdtdb_server_options *opts);

/*
 * Starts a server for the databases of env, listening at once.  A
 * connection to /v1/db/<id> opens database <id> (creating it with the
 * configured collections if it does not exist); all connections to one
 * database share one handle, which the server observes so every commit —
 * a peer's delta, or a change committed by another handle and seen by
 * crdtdb_db_poll during crdtdb_server_run — is pushed to every connection
 * at once.  Each connection runs one server-side session in `mode`.  env
 * must stay open until crdtdb_server_close().  `opts` may be NULL for
 * defaults; it is copied (strings too).  On success *out owns the server
 * until crdtdb_server_close().
 * Errors: EINVAL (bad options, e.g. only one of tls_cert / tls_key),
 *         EIO (cannot listen: address in use, bad TLS files), ENOMEM.
 */
CRDTDB_API CRDTDB_NODISCARD int crdtdb_server_open(crdtdb_env *env,
                                                   const crdtdb_server_options *opts,
                                                   crdtdb_server **out);

/* Ends every session of database db_id (every database: NULL) with
 * EREVOKED "access changed", so their clients clear their copies and sync
 * again under the hooks' current answers — for permissions kept outside
 * the database.  Errors: EINVAL. */
CRDTDB_API int crdtdb_server_reauthorize(crdtdb_server *s, const char *db_id);

/*
 * Starts a clean shutdown (SIGTERM): new connections are refused (HTTP 503,
 * and GET /healthz answers 503, so a load balancer stops routing here),
 * acknowledgements are recorded, and every session is sent what it has
 * queued, then a CLOSE and WebSocket close 1001 "going away": clients
 * reconnect elsewhere and resume from their durable watermarks.  Keep
 * running the server until crdtdb_server_drained() (or a deadline), then
 * close it.  Peer links stop reconnecting.  Errors: EINVAL.
 */
CRDTDB_API int crdtdb_server_drain(crdtdb_server *s);

/* 1 once a drain has closed every connection and every peer link that
 * is connected is in sync (its peer holds what this server holds: a
 * write acknowledged here just before the drain is not left on this
 * server alone).  A link that is down is not waited for. */
CRDTDB_API int crdtdb_server_drained(const crdtdb_server *s);

/* The port the server listens on (the kernel's choice when opened with
 * port 0). */
CRDTDB_API int crdtdb_server_port(const crdtdb_server *s);

/*
 * Services pending network events once: waits up to timeout_ms (0: does
 * not wait) for something to happen, then handles what is ready.  Call it
 * in a loop.  Errors: EINVAL, EIO (the event loop failed).
 */
CRDTDB_API int crdtdb_server_run(crdtdb_server *s, int timeout_ms);

/* Closes every connection and the listener, then frees the server (not
 * env).  Accepts NULL. */
CRDTDB_API void crdtdb_server_close(crdtdb_server *s);

typedef struct crdtdb_client crdtdb_client;

typedef struct crdtdb_client_options {
    const char *url;        /* ws://host:port or wss://host:port (a path,
                               if any, is ignored: the database id comes
                               from the db handle) */
    crdtdb_sync_mode mode;  /* asked for (default TWO_WAY).  Asking for
                               SERVER_TO_CLIENT makes this handle refuse
                               local writes while the client is open; it
                               does not mark the copy (a copy granted
                               only that is marked): for a spectator's
                               copy that stays read-only after the
                               client closes, crdtdb_db_mark_readonly */
    unsigned backoff_min_ms; /* reconnect delays: exponential with jitter */
    unsigned backoff_max_ms; /* between these (defaults 100 and 30000) */
    crdtdb_session_cb on_event; /* session events of every connection,
                                   forwarded, and an ERROR (remote, no
                                   peer) when the server refuses the
                                   upgrade: EAUTH for 401 and 431, EDENIED
                                   for 403, ELIMIT for 429 and 503 (full),
                                   or closes the connection with a reason
                                   (ELIMIT: 1013 memory budget, 1008
                                   timeouts); and an ERROR (EIO, not
                                   remote, no peer) for a connection that
                                   cannot be made, its message "reason:
                                   host:port" (TCP, DNS, TLS, an answer
                                   that is no upgrade), or for one that
                                   ends with no word from the session or
                                   the server ("connection lost:
                                   host:port": a killed server, a cut
                                   network; the client reconnects); may
                                   be NULL */
    void *ctx;
    const char *tls_ca;     /* wss://: PEM file of the CAs to trust (e.g.
                               a self-signed server certificate); NULL: the
                               system's default trust store */
    void *uv_loop;          /* a uv_loop_t * to run on, or NULL */
    const char *token;      /* bearer token (JWT) sent with every
                               connection, or NULL.  With a token, when
                               the server refuses the upgrade with 403,
                               the client clears its copy of the database
                               (crdtdb_db_clear: observers get
                               INVALIDATE_ALL) and reconnects; with or
                               without one, so it does when the server
                               ends the session with EREVOKED (access
                               changed, or the database expired).  At most
                               CRDTDB_JWT_MAX bytes of base64url and dots
                               (RFC 6750 b64token), else crdtdb_client_open
                               fails at once (ETOOBIG, EINVAL). */
} crdtdb_client_options;

/* Fills opts with the defaults above. */
CRDTDB_API void crdtdb_client_options_init(crdtdb_client_options *opts);

/*
 * Starts a client syncing db with the server at opts->url.  It connects on
 * the first crdtdb_client_run() and keeps reconnecting after drops, each
 * connection a new session that resumes from the durable watermarks.  It
 * reconnects, backing off, even after a refusal that will come again
 * (EFORK, EFORGED, ENOCOLL: a copy restored while its original wrote on,
 * or collections that differ from the server's): each comes as an ERROR
 * event, and a program that would rather stop closes the client there.  The
 * client observes db, so local writes through this handle (on the thread
 * that calls crdtdb_client_run) are pushed at once.  db must stay open
 * until crdtdb_client_close(), and no transaction may be held open on it
 * across crdtdb_client_run() calls.  In server-to-client mode (asked for
 * or granted) the handle refuses local writes ("Read only access") until
 * crdtdb_client_close().  `opts` is copied.  On success *out owns the client
 * until crdtdb_client_close().
 * Errors: EINVAL (no or malformed url), ENOMEM, EIO.  They write no
 * message: crdtdb_db_errmsg(db) is not about them (crdtdb_strerror is).
 */
CRDTDB_API CRDTDB_NODISCARD int crdtdb_client_open(crdtdb_db *db,
                                                   const crdtdb_client_options *opts,
                                                   crdtdb_client **out);

/* Services pending events once, waiting up to timeout_ms; connects or
 * reconnects when due.  Errors: EINVAL, EIO (the event loop failed). */
CRDTDB_API int crdtdb_client_run(crdtdb_client *c, int timeout_ms);

/* 1 while connected and in sync (crdtdb_session_synced): a one-shot sync
 * may stop. */
CRDTDB_API int crdtdb_client_synced(const crdtdb_client *c);

/* 1 while a connection is up and its handshake is done, else 0. */
CRDTDB_API int crdtdb_client_connected(const crdtdb_client *c);

/* Drops the connection (the peer sees a close) and frees the client (not
 * the db, whose read-only mark it clears).  Accepts NULL. */
CRDTDB_API void crdtdb_client_close(crdtdb_client *c);

/*
 * Sets this client's presence on the database: `state` is one msgpack map
 * of at most CRDTDB_PRESENCE_MAX bytes (copied; the server may allow
 * less), or NULL to leave.  The client keeps it and sends it on every
 * connection, now if connected.  Others' presence arrives through
 * on_event as CRDTDB_SESSION_PRESENCE events (join: a key not seen
 * before; update; leave: state NULL); when a connection drops, the client
 * reports a leave for every entry it knew.  Errors: EINVAL, ETOOBIG,
 * EBADVALUE, ETOODEEP, ENOMEM.
 */
CRDTDB_API int crdtdb_client_presence_set(crdtdb_client *c, const uint8_t *state, size_t len);

/*
 * Sends an ephemeral message (one msgpack value, copied) to every other
 * connection of the database, or to every connection of user `to`.  Not
 * kept: only while connected (else EBUSY, "not connected").  Messages of
 * others arrive as CRDTDB_SESSION_MESSAGE events.  Errors: EINVAL,
 * ETOOBIG, EBADVALUE, ETOODEEP, EBUSY, ENOMEM.
 */
CRDTDB_API int crdtdb_client_message_send(crdtdb_client *c, const char *to, const uint8_t *body,
                                          size_t len);

/*
 * Makes this server a replica of the server at link->url (server-to-server
 * peering, for a second region or a hot standby): each database it holds —
 * every one, or only the ndbs ids in `dbs` — is synced two-way with the
 * peer over its own connection (/v1/db/<id>), reconnecting with link's
 * backoff; databases this server opens later (a client's first connect)
 * are linked too.  A peer's changes land on the same handles the clients
 * use, so writes on either server reach the clients of both.  Databases
 * only the peer holds arrive when the peer also peers with this server
 * (run both with --peer for a symmetric pair); listed databases missing
 * here are created with the configured collections.  link->url is copied;
 * its tls_ca, mode (always two-way) and on_event are ignored (wss:// peers
 * use the server's peer_tls_ca); events are logged.
 * Errors: EINVAL (no url; wss:// without peer_tls_ca), ENOMEM.
 */
CRDTDB_API int crdtdb_server_peer(crdtdb_server *s, const crdtdb_client_options *link,
                                  const char *const *dbs, size_t ndbs);

/*
 * Stops peering with the server at url (crdtdb_server_peer, however often
 * it was called for that url): every link to it closes now, and a
 * database only those links held open is closed (its data stays).
 * Returns 1 when url was peered, 0 when it was not, or EINVAL.
 */
CRDTDB_API int crdtdb_server_unpeer(crdtdb_server *s, const char *url);

/*
 * Asks the peer_filter again for the n databases ids (NULL: every one the
 * environment holds), after its answers changed (a cluster file re-read):
 * a link whose peer no longer wants its database closes, and each peer
 * that wants one and has no link to it gets one, the database opened if
 * it was not.  One link per peer server and database, whatever the number
 * of calls.  ids are read during the call only.  Errors: EINVAL, and
 * those of crdtdb_db_list; a database that cannot be opened is logged and
 * left for the next call.
 */
CRDTDB_API int crdtdb_server_relink(crdtdb_server *s, const char *const *ids, size_t n);

/* ---------------------------------------------------------------- tokens */

/*
 * JSON Web Tokens (libjwt) naming the user of a connection by their `sub`
 * claim.  The algorithm is fixed by the key, never by the token: a token
 * whose header names another algorithm (or "none") is refused.
 */
typedef enum crdtdb_jwt_alg {
    CRDTDB_JWT_HS256 = 1, /* shared secret, at least 32 bytes */
    CRDTDB_JWT_RS256,     /* RSA key pair, PEM */
    CRDTDB_JWT_ES256      /* P-256 key pair, PEM */
} crdtdb_jwt_alg;

#define CRDTDB_JWT_MAX 8192u /* the longest token accepted, bytes */

/*
 * Loads a key for `alg`: the shared secret for HS256, or a PEM key for
 * RS256 / ES256 (a public key verifies; a private key mints, and verifies
 * when libjwt can derive the public half).  The bytes are copied; the copy
 * is zeroed on close.  On success *out is owned by the caller until
 * crdtdb_jwt_key_close().  Errors: EINVAL (unknown alg, secret shorter than
 * 32 bytes, not a PEM key of that kind), ENOMEM.
 */
CRDTDB_API CRDTDB_NODISCARD int crdtdb_jwt_key_open(crdtdb_jwt_alg alg, const uint8_t *key,
                                                    size_t len, crdtdb_jwt_key **out);

/* Zeroes and frees the key.  Accepts NULL. */
CRDTDB_API void crdtdb_jwt_key_close(crdtdb_jwt_key *key);

/*
 * Verifies `token` (len bytes, no NUL needed) at time `now` (Unix seconds):
 * signature under key, header alg equal to the key's, `exp` (required) not
 * passed and `nbf` (if present) reached, each with `leeway` seconds of
 * slack; a `sub` claim of 1 to CRDTDB_ID_MAX bytes with no NUL.  On success
 * the user id is copied into sub (NUL-terminated; sub_size must be more than
 * CRDTDB_ID_MAX).  errmsg (may be NULL) receives why a token was refused.
 * Errors: EAUTH (malformed, bad signature, wrong or "none" alg, expired, not
 * yet valid, no or bad sub), ETOOBIG (longer than CRDTDB_JWT_MAX), EINVAL.
 */
CRDTDB_API CRDTDB_NODISCARD int crdtdb_jwt_verify(const crdtdb_jwt_key *key, const char *token,
                                                  size_t len, int64_t now, unsigned leeway,
                                                  char *sub, size_t sub_size, char *errmsg,
                                                  size_t errmsg_size);

/*
 * Mints a token for user `sub`, issued at `now` and expiring ttl seconds
 * later (claims sub, iat, exp), signed with key (HS256 secret or private
 * PEM key).  out is replaced with the NUL-terminated token (out->len
 * excludes the NUL).  Errors: EINVAL (bad sub, ttl 0, a public-only key),
 * ENOMEM.
 */
CRDTDB_API CRDTDB_NODISCARD int crdtdb_jwt_mint(const crdtdb_jwt_key *key, const char *sub,
                                                int64_t now, uint64_t ttl, crdtdb_buf *out);

#ifdef __cplusplus
}
#endif
#endif /* CRDTDB_WS_H */
