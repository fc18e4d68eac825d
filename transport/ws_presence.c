/*
 * The presence hub of one database on a server (ws_presence.h).  Entries
 * are keyed by the server id of their origin and its connection number.
 * Those of our own connections carry a token bucket (presence_hz, a burst
 * of 2) and the latest state not yet forwarded, which a timer forwards
 * when its turn comes; those learned from other servers keep the highest
 * version and message number seen, so a change crosses each connection at
 * most once whatever the topology.  A relayed leave stays as a tombstone
 * for HUB_LEFT_MS.  Each change is encoded once and queued whole on every
 * other connection (crdtdb_session_send_frame); once the changes that came
 * in together are all queued, the client connections' output is written at
 * once (crdtdb__ws_flush_batch: one message per receiver, all in one
 * system call, not one poll turn and WRITEABLE each), the rest go on
 * WRITEABLE.  Lists are scanned: a
 * database holds at most max_members entries and as many tombstones.
 */
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "transport/ws_presence.h"

#define BURST 2u         /* presence changes forwarded back to back */
#define NOTICE_MS 1000u  /* one notice per connection per second, at most:
                            refusals of a client that keeps sending cost
                            it no output */

typedef struct pentry pentry;
struct pentry {
    pentry *next;
    crdtdb__hub *h;
    uint8_t key[CRDTDB_PRESENCE_KEY_BYTES];
    char user[CRDTDB_ID_MAX + 1];
    uint8_t replica[CRDTDB_REPLICA_ID_BYTES];
    uint64_t version;   /* the last forwarded (ours) or highest seen */
    uint8_t *state;     /* forwarded; NULL: not live */
    size_t state_len;
    uint64_t msg_n;     /* relayed: the highest message number seen */
    crdtdb__bucket rmsgs; /* relayed: its messages' bucket, at twice a
                             connection's own (presence_hz) */
    crdtdb__pconn *via; /* ours: its connection; relayed: the connection
                           its last change came through (NULL: none) */
    int local;
    uint64_t left_ms;   /* relayed and not live: since when (tombstone) */
    /* ours only: the change waiting for its turn */
    int pending;
    uint8_t *pend;      /* NULL with pending: a leave */
    size_t pend_len;
    int64_t tokens;     /* thousandths; below 0: a turn taken early */
    uint64_t tok_ms;
    lws_sorted_usec_list_t sul;
    int armed;
    int quick;          /* armed for the loop's next turn (hub.quick) */
};

struct crdtdb__hub {
    const crdtdb__hub_cfg *cfg;
    crdtdb_db *db;
    crdtdb__pconn *conns; /* joined */
    pentry *entries;
    crdtdb_buf frame;     /* scratch: the change being fanned out */
    unsigned char *wire;  /* scratch: LWS_PRE + wire_cap, for flushes */
    size_t wire_cap;
    crdtdb__wsbatch batch; /* scratch: the flush's receivers and sends */
    size_t quick;         /* entries armed for the next turn: the flush
                             waits for the last of them */
    int stopped;
};

crdtdb__hub *crdtdb__hub_new(const crdtdb__hub_cfg *cfg, crdtdb_db *db)
{
    crdtdb__hub *h = calloc(1, sizeof *h);
    if (h) {
        h->cfg = cfg;
        h->db = db;
    }
    return h;
}

static void entry_free(pentry *e)
{
    if (e->armed)
        lws_sul_cancel(&e->sul);
    if (e->quick)
        e->h->quick--;
    free(e->state);
    free(e->pend);
    free(e);
}

void crdtdb__hub_stop(crdtdb__hub *h)
{
    if (!h)
        return;
    h->stopped = 1;
    for (pentry *e = h->entries; e; e = e->next) {
        if (e->armed) {
            lws_sul_cancel(&e->sul);
            e->armed = 0;
        }
        e->quick = 0;
    }
    h->quick = 0;
}

void crdtdb__hub_free(crdtdb__hub *h)
{
    if (!h)
        return;
    while (h->entries) {
        pentry *e = h->entries;
        h->entries = e->next;
        entry_free(e);
    }
    for (crdtdb__pconn *pc = h->conns; pc; pc = pc->next)
        pc->joined = 0;
    crdtdb_buf_free(&h->frame);
    free(h->wire);
    crdtdb__ws_batch_free(&h->batch);
    free(h);
}

/* --------------------------------------------------------------- helpers */

static void hlog(crdtdb__hub *h, const char *fmt, const char *a)
{
    if (!h->cfg->log)
        return;
    char line[512], safe[512];
    snprintf(line, sizeof line, fmt, WS_QID(crdtdb_db_id(h->db)), WS_QID(a));
    crdtdb__ws_log_escape(safe, sizeof safe, line);
    h->cfg->log(h->cfg->log_ctx, safe);
}

/* Tells pc why its frame was dropped, once a second at most; 1 if told
 * (the caller logs it then: no more lines than notices). */
static int notice(crdtdb__pconn *pc, int code, const char *msg)
{
    if (pc->link || !pc->l->s)
        return 0; /* a peer server's answer: nobody to tell */
    uint64_t now = crdtdb__ws_now_ms();
    if (pc->notice_ms && now - pc->notice_ms < NOTICE_MS)
        return 0;
    pc->notice_ms = now;
    if (crdtdb_session_notify(pc->l->s, code, msg) == 0 && pc->wake)
        pc->wake(pc);
    return 1;
}

/* Whether pc may publish (relay 0) or relay (1): the hook, or its default
 * (publish yes; relay only on a server without tokens).  What arrives on
 * our own links comes from servers we chose to peer with. */
static int may(crdtdb__hub *h, crdtdb__pconn *pc, int relay)
{
    if (pc->link)
        return 1;
    if (relay && pc->joined && h->cfg->tokens) /* decided once, when it joined */
        return pc->trusted;
    for (size_t i = 0; relay && h->cfg->tokens && i < h->cfg->nrelay_users; i++)
        if (strcmp(h->cfg->relay_users[i], pc->user) == 0)
            return 1;
    const crdtdb_server_auth *a = h->cfg->auth;
    if (a && a->authorize_presence)
        return a->authorize_presence(a->ctx, h->db, pc->user, relay) != 0;
    return relay ? !h->cfg->tokens : 1;
}

static void put_be64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        p[i] = (uint8_t)v;
}

static uint8_t *dup_bytes(const uint8_t *p, size_t n)
{
    uint8_t *d = malloc(n ? n : 1);
    if (d && n)
        memcpy(d, p, n);
    return d;
}

static int same(const uint8_t *a, size_t an, const uint8_t *b, size_t bn)
{
    if (!a || !b)
        return !a && !b;
    return an == bn && memcmp(a, b, an) == 0;
}

static pentry *find(crdtdb__hub *h, const uint8_t *key)
{
    for (pentry *e = h->entries; e; e = e->next)
        if (memcmp(e->key, key, CRDTDB_PRESENCE_KEY_BYTES) == 0)
            return e;
    return NULL;
}

static pentry *find_own(crdtdb__hub *h, const crdtdb__pconn *pc)
{
    for (pentry *e = h->entries; e; e = e->next)
        if (e->local && e->via == pc)
            return e;
    return NULL;
}

/* Entries live, or about to be (a first state waiting for its turn). */
static size_t members(const crdtdb__hub *h)
{
    size_t n = 0;
    for (const pentry *e = h->entries; e; e = e->next)
        n += e->state || (e->pending && e->pend);
    return n;
}

static void unlink_entry(crdtdb__hub *h, pentry *e)
{
    for (pentry **pp = &h->entries; *pp; pp = &(*pp)->next)
        if (*pp == e) {
            *pp = e->next;
            return;
        }
}

/* Tombstones older than HUB_LEFT_MS go; and the oldest beyond as many as
 * max_members, so a peer cannot make us remember without bound. */
static void expire(crdtdb__hub *h, uint64_t now)
{
    size_t n = 0;
    pentry *oldest = NULL;
    for (pentry **pp = &h->entries; *pp;) {
        pentry *e = *pp;
        if (e->local || e->state) {
            pp = &e->next;
            continue;
        }
        if (now - e->left_ms > HUB_LEFT_MS) {
            *pp = e->next;
            entry_free(e);
            continue;
        }
        n++;
        if (!oldest || e->left_ms < oldest->left_ms)
            oldest = e;
        pp = &e->next;
    }
    if (oldest && n >= h->cfg->max_members) {
        unlink_entry(h, oldest);
        entry_free(oldest);
    }
}

/* ---------------------------------------------------------------- fan-out */

/* Whether pc's output may be written outside its callbacks (flush), not
 * on its next WRITEABLE: a client's connection
 * to us (hosted links write their own, masked) whose snapshot went first,
 * on a server without an authorize_user hook (with one, the server
 * re-checks the access on WRITEABLE before anything goes out). */
static int direct(const crdtdb__hub *h, const crdtdb__pconn *pc)
{
    const crdtdb_server_auth *a = h->cfg->auth;
    return !pc->link && pc->snapped && !(a && a->authorize_user);
}

/* Queues the frame on pc: to be flushed with the batch (flush) when it
 * may be, else pc is woken for WRITEABLE. */
static void deliver(crdtdb__hub *h, crdtdb__pconn *pc)
{
    if (crdtdb_session_send_frame(pc->l->s, h->frame.data, h->frame.len) != 0)
        return;
    if (direct(h, pc))
        pc->dirty = 1;
    else if (pc->wake)
        pc->wake(pc);
}

/* Writes one connection's output now, through lws; wakes it for the rest. */
static void flush_one(crdtdb__hub *h, crdtdb__pconn *pc)
{
    size_t out = crdtdb__ws_held_out(pc->l);
    size_t need = out < WS_CHUNK ? out : WS_CHUNK;
    if (need > h->wire_cap) {
        unsigned char *w = realloc(h->wire, LWS_PRE + need);
        if (w) {
            h->wire = w;
            h->wire_cap = need;
        }
    }
    if (!crdtdb__ws_flush_now(pc->l, h->wire, h->wire_cap) && pc->wake)
        pc->wake(pc);
}

/* Writes what was queued on the client connections now: one message each
 * for the changes of one batch (those that came in together), at once —
 * nothing is held back for later changes — and all in one system call
 * where the server has a ring (crdtdb__ws_flush_batch).  What cannot go
 * now (a receiver that is not reading, a partial send) waits for
 * WRITEABLE. */
static void flush(crdtdb__hub *h)
{
    size_t n = 0;
    for (crdtdb__pconn *pc = h->conns; pc; pc = pc->next)
        n += pc->dirty != 0;
    if (!n)
        return;
    /* no send queue (a TLS server) or no memory for the batch: every link
     * goes through lws, as one the batch cannot take (done -1) */
    int batch = h->cfg->sendq && crdtdb__ws_batch_room(&h->batch, n) == 0;
    size_t i = 0;
    if (batch) {
        for (crdtdb__pconn *pc = h->conns; pc; pc = pc->next)
            if (pc->dirty)
                h->batch.links[i++] = pc->l;
        crdtdb__ws_flush_batch(&h->batch, n, h->cfg->sendq);
        i = 0;
    }
    for (crdtdb__pconn *pc = h->conns; pc; pc = pc->next) {
        if (!pc->dirty)
            continue;
        pc->dirty = 0;
        int d = batch ? h->batch.done[i++] : -1;
        if (d < 0)
            flush_one(h, pc);
        else if (!d && pc->wake)
            pc->wake(pc);
    }
}

/* Delivers the frame to every joined connection but skip; with `to`, only
 * to that user's sessions (and to the servers relaying, which hold
 * theirs). */
static void fan(crdtdb__hub *h, crdtdb__pconn *skip, const char *to)
{
    if (h->stopped) /* the server is closing: nobody to tell */
        return;
    for (crdtdb__pconn *pc = h->conns; pc; pc = pc->next) {
        if (pc == skip || !pc->l->s)
            continue;
        /* one for a user: that user's sessions, and the links of peer
         * servers (which hold theirs); on a server without tokens, where
         * anyone may relay, only a connection that did */
        if (to && !pc->link && !(h->cfg->tokens ? pc->trusted : pc->relays) &&
            strcmp(pc->user, to) != 0)
            continue;
        deliver(h, pc);
    }
}

/* Delivers the frame to the joined connections that are clients, not other
 * servers' links or relays. */
static void fan_clients(crdtdb__hub *h)
{
    if (h->stopped)
        return;
    for (crdtdb__pconn *pc = h->conns; pc; pc = pc->next)
        if (pc->l->s && !pc->link && !pc->trusted && !pc->relays)
            deliver(h, pc);
}

static int encode_entry(crdtdb__hub *h, const pentry *e)
{
    crdtdb_presence p = {e->key, e->user, e->replica, e->version, e->state, e->state_len};
    h->frame.len = 0;
    return crdtdb_presence_encode(&p, &h->frame);
}

/* The entry's current state (a leave when NULL) to everyone but skip. */
static void forward(crdtdb__hub *h, pentry *e, crdtdb__pconn *skip)
{
    if (encode_entry(h, e) == 0)
        fan(h, skip, NULL);
}

/* ----------------------------------------------------- our connections */

static void on_turn(lws_sorted_usec_list_t *sul);

/* A change outside the turns went to everyone: flushed now, unless a turn
 * is due on this pass of the loop (its flush takes this one along). */
static void batch_end(crdtdb__hub *h)
{
    if (!h->quick)
        flush(h);
}

/* Forwards the waiting change if the bucket allows, else arms the timer
 * for when it will. */
static void try_send(pentry *e)
{
    crdtdb__hub *h = e->h;
    if (!e->pending || e->armed || h->stopped)
        return;
    uint64_t now = crdtdb__ws_now_ms();
    int64_t hz = h->cfg->hz;
    e->tokens += (int64_t)(now - e->tok_ms) * hz; /* hz thousandths a ms */
    e->tok_ms = now;
    if (e->tokens > (int64_t)BURST * 1000)
        e->tokens = (int64_t)BURST * 1000;
    /* a turn up to 1 ms early is taken, and paid back from the next
     * refill: the loop runs timers due within 1 ms at once (ws_link.c),
     * so this timer may come that early, and waiting again would spin */
    if (e->tokens + hz < 1000) {
        uint64_t wait = (uint64_t)((1000 - e->tokens + hz - 1) / hz);
        e->armed = 1;
        lws_sul_schedule(h->cfg->ctx, 0, &e->sul, on_turn,
                         (lws_usec_t)(wait ? wait : 1) * LWS_US_PER_MS);
        return;
    }
    e->tokens -= 1000;
    free(e->state);
    e->state = e->pend;
    e->state_len = e->pend_len;
    e->pend = NULL;
    e->pending = 0;
    e->version++;
    forward(h, e, e->via);
}

static void on_turn(lws_sorted_usec_list_t *sul)
{
    pentry *e = lws_container_of(sul, pentry, sul);
    crdtdb__hub *h = e->h;
    e->armed = 0;
    if (e->quick) {
        e->quick = 0;
        h->quick--;
    }
    try_send(e);
    if (!h->quick) /* the last of its batch */
        flush(h);
}

/* [12, state]: pc's own state (NULL: it leaves). */
static void publish(crdtdb__hub *h, crdtdb__pconn *pc, const uint8_t *state, size_t len)
{
    if (!may(h, pc, 0)) {
        if (notice(pc, CRDTDB_EDENIED, "presence refused: permission denied"))
            hlog(h, "db '%s': user '%s': presence refused", pc->user);
        return;
    }
    pentry *e = find_own(h, pc);
    if (!e && !state)
        return; /* never there */
    int joining = state && (!e || (!e->state && !(e->pending && e->pend)));
    if (joining && members(h) >= h->cfg->max_members) {
        char msg[96];
        snprintf(msg, sizeof msg, "presence refused: the database has %zu entries, the limit",
                 h->cfg->max_members);
        notice(pc, CRDTDB_ELIMIT, msg);
        return;
    }
    if (!e) {
        if (!(e = calloc(1, sizeof *e)))
            return;
        e->h = h;
        e->local = 1;
        e->via = pc;
        memcpy(e->key, h->cfg->id, HUB_SERVER_ID_BYTES);
        put_be64(e->key + HUB_SERVER_ID_BYTES, pc->num);
        memcpy(e->user, pc->user, sizeof e->user);
        memcpy(e->replica, pc->replica, sizeof e->replica);
        e->tokens = BURST * 1000u;
        e->tok_ms = crdtdb__ws_now_ms();
        e->next = h->entries;
        h->entries = e;
    }
    /* the latest wins; one equal to what others have is no change */
    free(e->pend);
    e->pend = NULL;
    e->pending = 0;
    if (same(state, len, e->state, e->state_len))
        return;
    if (state && !(e->pend = dup_bytes(state, len)))
        return;
    e->pend_len = state ? len : 0;
    e->pending = 1;
    /* forwarded on the loop's next turn, not here: changes that came in
     * one read (a client's burst after a network stall) then cost one
     * forward and one token, so the bucket never drains to a standing
     * delay for a sender at exactly presence_hz */
    if (!e->armed && !h->stopped) {
        e->armed = 1;
        e->quick = 1;
        h->quick++;
        lws_sul_schedule(h->cfg->ctx, 0, &e->sul, on_turn, 1);
    }
}

/* -------------------------------------------------------- other servers */

/* [13, ...] from pc: another server's entry, relayed. */
static void relayed(crdtdb__hub *h, crdtdb__pconn *pc, const crdtdb_presence *p)
{
    if (!may(h, pc, 1)) {
        if (notice(pc, CRDTDB_EDENIED, "relaying presence refused: permission denied"))
            hlog(h, "db '%s': user '%s': relaying presence refused", pc->user);
        return;
    }
    if (memcmp(p->key, h->cfg->id, HUB_SERVER_ID_BYTES) == 0)
        return; /* ours, back again */
    uint64_t now = crdtdb__ws_now_ms();
    expire(h, now);
    pentry *e = find(h, p->key);
    if (e && p->version <= e->version)
        return; /* seen */
    if (!pc->link)
        pc->relays = 1;
    /* a new entry, or one brought back from a leave: within the limit */
    if (p->state && (!e || !e->state) && members(h) >= h->cfg->max_members) {
        notice(pc, CRDTDB_ELIMIT, "presence refused: the database is at its entry limit");
        return;
    }
    if (!e) {
        if (!(e = calloc(1, sizeof *e)))
            return;
        e->h = h;
        memcpy(e->key, p->key, sizeof e->key);
        e->next = h->entries;
        h->entries = e;
    }
    uint8_t *st = p->state ? dup_bytes(p->state, p->state_len) : NULL;
    if (p->state && !st)
        return;
    int was_live = e->state != NULL;
    free(e->state);
    e->state = st;
    e->state_len = st ? p->state_len : 0;
    e->version = p->version;
    snprintf(e->user, sizeof e->user, "%s", p->user ? p->user : "");
    if (p->replica)
        memcpy(e->replica, p->replica, sizeof e->replica);
    e->via = pc;
    e->left_ms = st ? 0 : now;
    if (st || was_live) /* a leave of one we never showed says nothing */
        forward(h, e, pc);
    batch_end(h);
}

/* --------------------------------------------------------------- the API */

void crdtdb__hub_join(crdtdb__hub *h, crdtdb__pconn *pc)
{
    if (!h || pc->joined)
        return;
    pc->joined = 0;
    pc->trusted = h->cfg->tokens && may(h, pc, 1);
    pc->joined = 1;
    pc->snapped = 0;
    pc->dirty = 0;
    pc->relays = 0;
    pc->msg_n = 0;
    pc->msgs = (crdtdb__bucket){0}; /* full */
    pc->notice_ms = 0;
    pc->next = h->conns;
    h->conns = pc;
}

void crdtdb__hub_snapshot(crdtdb__hub *h, crdtdb__pconn *pc)
{
    if (!h || h->stopped || !pc->joined || !pc->l->s)
        return;
    pc->snapped = 1;
    int sent = 0;
    for (pentry *e = h->entries; e; e = e->next) {
        if (!e->state || e->via == pc || encode_entry(h, e))
            continue;
        sent |= crdtdb_session_send_frame(pc->l->s, h->frame.data, h->frame.len) == 0;
    }
    if (sent && pc->wake)
        pc->wake(pc);
}

void crdtdb__hub_leave(crdtdb__hub *h, crdtdb__pconn *pc)
{
    if (!h || !pc->joined)
        return;
    pc->joined = 0;
    pc->dirty = 0;
    for (crdtdb__pconn **pp = &h->conns; *pp; pp = &(*pp)->next)
        if (*pp == pc) {
            *pp = pc->next;
            break;
        }
    pc->next = NULL;
    /* its own entry: a leave from its origin, a new version, to all.
     * Those it brought from another server: gone from our clients' view,
     * said at once — but only to them, and under the version they had:
     * the origin alone numbers its changes, and may still reach other
     * servers by another path.  Forgotten (no tombstone): when the link
     * comes back, its server sends them again with the same version. */
    for (pentry **pp = &h->entries; *pp;) {
        pentry *e = *pp;
        if (e->via != pc) {
            pp = &e->next;
            continue;
        }
        if (e->state) {
            free(e->state);
            e->state = NULL;
            e->state_len = 0;
            if (e->local) {
                e->version++;
                forward(h, e, pc);
            } else if (encode_entry(h, e) == 0) {
                fan_clients(h);
            }
        }
        *pp = e->next;
        entry_free(e);
    }
    batch_end(h);
}

void crdtdb__hub_presence(crdtdb__hub *h, crdtdb__pconn *pc, const crdtdb_presence *p)
{
    if (!h || !pc->joined || !p)
        return;
    if (p->key)
        relayed(h, pc, p);
    else
        publish(h, pc, p->state, p->state_len);
}

void crdtdb__hub_message(crdtdb__hub *h, crdtdb__pconn *pc, const crdtdb_message *m)
{
    if (!h || !pc->joined || !m)
        return;
    crdtdb_message out = *m;
    uint8_t key[CRDTDB_PRESENCE_KEY_BYTES];
    if (!m->key) { /* [14]: one of pc's own */
        if (!may(h, pc, 0)) {
            notice(pc, CRDTDB_EDENIED, "message refused: permission denied");
            return;
        }
        if (!crdtdb__bucket_take(&pc->msgs, crdtdb__ws_now_ms(), h->cfg->hz, h->cfg->hz)) {
            char msg[96];
            snprintf(msg, sizeof msg, "messages over %u a second: dropped", h->cfg->hz);
            notice(pc, CRDTDB_ELIMIT, msg);
            return;
        }
        memcpy(key, h->cfg->id, HUB_SERVER_ID_BYTES);
        put_be64(key + HUB_SERVER_ID_BYTES, pc->num);
        out.key = key;
        out.user = pc->user;
        out.replica = pc->replica;
        out.n = ++pc->msg_n;
    } else { /* [15]: relayed */
        if (!may(h, pc, 1)) {
            notice(pc, CRDTDB_EDENIED, "relaying messages refused: permission denied");
            return;
        }
        if (memcmp(m->key, h->cfg->id, HUB_SERVER_ID_BYTES) == 0)
            return;
        uint64_t now = crdtdb__ws_now_ms();
        expire(h, now);
        pentry *e = find(h, m->key);
        if (e && m->n <= e->msg_n)
            return;
        if (!e) { /* remembered as a tombstone would be, to drop copies */
            if (!(e = calloc(1, sizeof *e)))
                return;
            e->h = h;
            memcpy(e->key, m->key, sizeof e->key);
            snprintf(e->user, sizeof e->user, "%s", m->user ? m->user : "");
            e->left_ms = now;
            e->next = h->entries;
            h->entries = e;
        }
        /* at most twice its sender's rate (its own server let it through
         * at presence_hz; twice leaves room for jitter on the way): a
         * connection relaying [15]s (any, on a server without tokens)
         * cannot make this server fan out more than each key may send */
        if (!crdtdb__bucket_take(&e->rmsgs, now, 2 * h->cfg->hz, 2 * h->cfg->hz))
            return;
        e->msg_n = m->n;
        if (!pc->link)
            pc->relays = 1;
    }
    h->frame.len = 0;
    if (crdtdb_message_encode(&out, &h->frame) == 0)
        fan(h, pc, out.to);
    batch_end(h);
}
