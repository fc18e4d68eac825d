/*
 * The presence hub of one database on a server (docs/protocol.md,
 * "Presence and messages"): the live entries of its connections and of
 * the peer servers' relayed through links, fanned out as frames 13 and 15
 * to every other connection.  Memory only: nothing here touches LMDB.
 * Everything runs on the server's thread; the hub owns its entries and
 * timers, never the connections, which join it once their session is open
 * and leave it (at the latest) when they are freed.  Not installed.
 */
#ifndef CRDTDB_TRANSPORT_WS_PRESENCE_H
#define CRDTDB_TRANSPORT_WS_PRESENCE_H
#include <stdint.h>

#include "transport/ws.h"

#define HUB_SERVER_ID_BYTES 8u
#define HUB_LEFT_MS 60000u /* a relayed leave is remembered this long */

/* One connection of the database as the hub sees it: a client's session
 * on this server, or a peer link (a hosted client).  Embedded in the
 * connection's own struct, which outlives its membership in the hub. */
typedef struct crdtdb__pconn crdtdb__pconn;
struct crdtdb__pconn {
    crdtdb__pconn *next;   /* in the hub's list, while joined */
    crdtdb__wslink *l;     /* its session (l->s) and socket (l->wsi) */
    void (*wake)(crdtdb__pconn *pc); /* frames were queued: write them */
    int link;              /* a hosted peer link: frames from its server
                              are trusted; it gets every message */
    int relays;            /* relayed a 13 or 15 to us: gets every message */
    int trusted;           /* may relay (decided when it joined): a peer
                              server's link into us */
    int joined;
    int snapped;           /* its snapshot was queued: frames may go out
                              at once (the hub's flush) */
    int dirty;             /* frames queued since the hub's last flush */
    uint64_t num;          /* its connection number (the key's last 8 bytes) */
    char user[CRDTDB_ID_MAX + 1]; /* "" without tokens */
    uint8_t replica[CRDTDB_REPLICA_ID_BYTES]; /* its hello's claim */
    uint64_t msg_n;        /* messages it sent */
    crdtdb__bucket msgs;   /* its messages' bucket: presence_hz a second */
    uint64_t notice_ms;    /* the hub's last notice to it; 0: none */
};

typedef struct crdtdb__hub crdtdb__hub;

/* What every hub of a server shares; borrowed for the hub's life. */
typedef struct crdtdb__hub_cfg {
    struct lws_context *ctx;
    uint8_t id[HUB_SERVER_ID_BYTES]; /* the server's, drawn at open */
    size_t max_members;
    unsigned hz;
    const crdtdb_server_auth *auth;
    int tokens;            /* the server checks tokens (relay default no) */
    const char *const *relay_users; /* with tokens: who may relay */
    size_t nrelay_users;
    void (*log)(void *ctx, const char *line); /* may be NULL */
    void *log_ctx;
    crdtdb__sendq *sendq;  /* the server's; NULL: each flush through lws */
} crdtdb__hub_cfg;

/* A hub for db (borrowed); NULL when out of memory. */
crdtdb__hub *crdtdb__hub_new(const crdtdb__hub_cfg *cfg, crdtdb_db *db);
/* Cancels every timer: the context is about to go. */
void crdtdb__hub_stop(crdtdb__hub *h);
/* Frees the hub (its connections have left).  Accepts NULL. */
void crdtdb__hub_free(crdtdb__hub *h);

/* pc's session is open: it joins (frames may be sent to it now). */
void crdtdb__hub_join(crdtdb__hub *h, crdtdb__pconn *pc);
/* Queues one 13 per live entry to pc, but those learned from it: what a
 * new session gets at once.  Call it outside pc's own feed. */
void crdtdb__hub_snapshot(crdtdb__hub *h, crdtdb__pconn *pc);
/* pc is gone, or its session closed: its entry leaves now, and every
 * entry learned through it.  Idempotent; a pconn never joined is ignored. */
void crdtdb__hub_leave(crdtdb__hub *h, crdtdb__pconn *pc);
/* A PRESENCE / MESSAGE event of pc's session (12 or 13, 14 or 15). */
void crdtdb__hub_presence(crdtdb__hub *h, crdtdb__pconn *pc, const crdtdb_presence *p);
void crdtdb__hub_message(crdtdb__hub *h, crdtdb__pconn *pc, const crdtdb_message *m);

#endif
