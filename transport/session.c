/*
 * The sync session: the sync protocol as a sans-IO state machine
 * (docs/protocol.md, "Sessions").  Bytes in through feed, bytes out through
 * output/consume; deltas, watermarks and access go through its store
 * (transport/session_store.h), never to storage directly.
 */
#include <msgpack.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crdt/buf.h"
#include "crdt/delta.h"
#include "crdt/mpcheck.h"
#include "crdt/value.h"
#include "crdtdb.h"
#include "transport/presence.h"
#include "transport/session_store.h"

#define PROTO_VERSION 1u
#define SKIP_SPAN 256 /* sequences skipped before an empty delta is signed */
#define ACK_SAVE_EVERY 64 /* acks received between durable saves */
#define CLOCK_RETRY_MIN_MS 1000 /* a delta refused as stamped ahead is asked
                                   for again no sooner than this: a peer
                                   whose clock runs just over the limit
                                   cannot make us ask on every message */

enum { M_HELLO = 1, M_SINCE, M_DELTA, M_ACK, M_UPTODATE, M_ERROR, M_CLOSE, M_SKIP, M_NOTICE,
       M_PURGE, M_REPLACE, M_RESYNC = 16, M_LEAVE };
#define RESYNC_KEYS_MAX (64u << 20) /* bytes of record names a resync may note */
/* Elements a message may hold in all: the longest has 7 (deltas, states
 * and bodies are bin), and msgpack-c allocates 24 bytes for each element
 * it unpacks, so a frame of one-byte elements would cost 24 times its size
 * (a 4 MiB NOTICE of nils: 96 MiB). */
#define MSG_ITEMS_MAX 32u
/* S_LEAVING: a client sent LEAVE and waits for the server's answer */
enum { S_HANDSHAKE, S_OPEN, S_LEAVING, S_CLOSED };

struct crdtdb_session {
    crdtdb__session_store st; /* the store's callbacks; st.ctx lives until
                                 close (crdtdb__session_open_store) */
    crdtdb__store_info si;    /* its fixed facts, read at open */
    crdtdb_session_options o;
    int state;
    int server;
    crdtdb_sync_mode mode;
    uint8_t self[CRDTDB_REPLICA_ID_BYTES];
    uint8_t peer[CRDTDB_REPLICA_ID_BYTES];
    int have_since;       /* the peer said where to start */
    uint64_t received;    /* what we hold of the peer's log */
    uint64_t all_upto;    /* the peer starts from nothing: send it all to here */
    uint64_t peer_acked;  /* the highest ACK of this session */
    int caught;           /* CAUGHT_UP fired and no newer UPTODATE came */
    unsigned acks_unsaved; /* acks not yet recorded with the store */
    int skipped;          /* the export found nothing for the peer */
    int give_err;         /* the store's delta could not be queued */
    int purge_err;
    uint64_t skip_to;     /* (sent_upto, skip_to] holds nothing for the peer */
    uint64_t hint;        /* the peer's SKIP: it has nothing for us up to here */
    uint64_t sent_upto;   /* our log is exported up to here */
    uint8_t walk_at[CRDTDB_EXPORT_RESUME_MAX]; /* and this far in a walk of */
    size_t walk_len;      /* the records from sent_upto (0: none; export.c) */
    uint64_t told_uptodate; /* the last UPTODATE we sent (+1; 0: none) */
    uint64_t peer_uptodate; /* the peer's last UPTODATE (+1; 0: none) */
    /* stability (collection): an ACK [4, acked, mine] makes `acked` stable
     * once we hold the peer's log up to mine; the first pair still waiting
     * is kept (p_mine UINT64_MAX: none), so stable_acked moves on even
     * while the peer never stops writing */
    uint64_t stable_acked, p_acked, p_mine;
    int signed_one;       /* a delta of ours went out in this session */
    int gave;             /* the export under way sent a delta */
    uint64_t tail_lo, tail_hi; /* the end of our log that the peer's own
                                  deltas numbered: (tail_lo, tail_hi] */
    int behind;           /* the peer came from behind our collection floor:
                             it is being resynced whole, and its old writes
                             to records we hold nothing of are dropped */
    uint64_t h_stamp;     /* our horizon stamp, when behind */
    uint64_t h_floor;     /* our collection floor when that resync began */
    int h_check;          /* its end is still to be checked against it */
    int peer_left;        /* the store says it left (CRDTDB_PEER_LEFT): a
                             server resyncs it whole, whatever its SINCE */
    int left_resync;      /* that resync is under way: its ack of all of it
                             (all_upto) brings it back */
    int left;             /* a server's: the peer left in this session
                             (LEAVE): nothing of it is saved any more; a
                             client's: the server took our LEAVE */
    int resync;           /* the peer resyncs us whole (RESYNC): noting the
                             records its snapshot holds until caught up */
    uint64_t resync_stamp; /* its horizon stamp */
    uint64_t resync_acked; /* what it held of our log when the resync began */
    crdtdb_buf rkeys;     /* "coll\0id\0" and b/l (with its base or leaves
                             only) for each record the snapshot held */
    int resync_flagged;   /* the store says a resync from the peer was cut */
    int peeked;           /* crdtdb_session_batch_peek handed out the waiting
                             delta; crdtdb_session_batch_done may finish it */
    int proven;           /* its acks may be kept: a server's peer signed a
                             delta here; a client trusts the server it chose */
    int clock_wait;       /* a delta was refused as stamped ahead (ECLOCK):
                             ask for it again at clock_retry_ms */
    uint64_t clock_retry_ms; /* local time (the env's clock) from which the
                                refused stamps are within the skew limit */
    uint64_t clock_upto;  /* the end of the refused ranges: once our
                             watermark reaches it, nothing is left to ask */
    crdtdb_buf refused;   /* records the write filter refused in the apply
                             under way: "coll\0id\0" each */
    crdtdb_buf notices;   /* notices asked for while a message was being
                             handled (e.g. by the write filter, inside the
                             store's apply): [i32 code][message\0] each,
                             queued after it (flush_notices) */
    int busy;             /* inside feed or step: the session answers
                             itself when the call returns */
    crdtdb_buf in, out, msg;
    size_t out_off;
    msgpack_zone zone;
    uint64_t seq_seen;    /* the store's last sequence when last read: it
                             only grows, so an ACK at or below it needs no
                             read (seq) */
    uint64_t deltas_sent; /* deltas queued for the peer (metrics) */
    int errcode;          /* the code errmsg was written for (api_exit) */
    char errmsg[512];
    char waitmsg[96];     /* crdtdb_session_unsynced's answer */
};

static int we_send(const crdtdb_session *s);
static int send_notice(crdtdb_session *s, int code, const char *message);

static int flush_notices(crdtdb_session *s);

/* Fires an event; notices its callback asked for follow at once, where
 * they went before they were queued. */
static void emit(crdtdb_session *s, crdtdb_session_event *ev)
{
    if (!s->o.on_event)
        return;
    s->o.on_event(s->o.ctx, ev);
    if (s->notices.len && s->state != S_CLOSED && flush_notices(s))
        s->purge_err = 1; /* out of memory, as a lost PURGE: fails the call under way */
}

static int seterr(crdtdb_session *s, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->errmsg, sizeof s->errmsg, fmt, ap);
    va_end(ap);
    s->errcode = code;
    return code;
}

/* The store's last sequence, remembered in seq_seen. */
static int seq(crdtdb_session *s, uint64_t *last)
{
    int rc = s->st.seq(s->st.ctx, last);
    if (!rc)
        s->seq_seen = *last;
    return rc;
}

/* A store failure, with the store's detail. */
static int store_err(crdtdb_session *s, int code)
{
    return seterr(s, code, "%s", s->st.errmsg(s->st.ctx));
}

/* The one exit of the public calls that can fail: a code whose message
 * this call did not write gets its generic one, so errmsg always belongs
 * to the code returned (SQLite's sqlite3ApiExit).  api_enter marks the
 * start of the call. */
static void api_enter(crdtdb_session *s) { s->errcode = 0; }

static int api_exit(crdtdb_session *s, int rc)
{
    if (rc && s->errcode != rc)
        seterr(s, rc, "%s", crdtdb_strerror(rc));
    return rc;
}

void crdtdb_session_options_init(crdtdb_session_options *o)
{
    memset(o, 0, sizeof *o);
    o->mode = CRDTDB_SYNC_TWO_WAY;
    o->max_presence = CRDTDB_PRESENCE_MAX;
}

/* Frames the message built in s->msg onto the output: u32 length, body. */
static int frame(crdtdb_session *s)
{
    uint8_t h[4] = {(uint8_t)(s->msg.len >> 24), (uint8_t)(s->msg.len >> 16),
                    (uint8_t)(s->msg.len >> 8), (uint8_t)s->msg.len};
    if (crdtdb__buf_append(&s->out, h, 4) || crdtdb__buf_append(&s->out, s->msg.data, s->msg.len))
        return seterr(s, CRDTDB_ENOMEM, "out of memory");
    return 0;
}

/* Starts a message of n fields; returns the packer writing into s->msg. */
static msgpack_packer start(crdtdb_session *s, int type, size_t n)
{
    msgpack_packer pk;
    s->msg.len = 0;
    msgpack_packer_init(&pk, &s->msg, crdtdb__buf_write_cb);
    msgpack_pack_array(&pk, n);
    msgpack_pack_uint8(&pk, (uint8_t)type);
    return pk;
}

static int send_u64(crdtdb_session *s, int type, uint64_t v)
{
    msgpack_packer pk = start(s, type, 2);
    msgpack_pack_uint64(&pk, v);
    return frame(s);
}

/* A SINCE from behind our collection floor: the peer may hold records we
 * removed and no longer have a tombstone for, so it gets everything, told
 * first (RESYNC) to forget what the snapshot does not hold; and its own
 * old writes to records we hold nothing of are dropped for the session. */
static int since_horizon(crdtdb_session *s, uint64_t v, uint64_t last)
{
    uint64_t floor = 0, stamp = 0;
    /* Only a server resyncs: a client's snapshot is a partial view of a
     * server other writers feed, and a server never takes one (a client
     * behind which a server fell just exports; what it collected the
     * server held when it did). */
    if (!s->st.horizon || !s->server)
        return 0;
    int rc = s->st.horizon(s->st.ctx, s->peer, &floor, &stamp);
    if (rc)
        return store_err(s, rc);
    /* one that left may have been collected past however far it says it
     * held our log: it is not in the horizon.  With nothing collected, it
     * lacks nothing: back at once */
    if (!floor && s->peer_left && s->st.peer_leave) {
        s->peer_left = 0;
        if ((rc = s->st.peer_leave(s->st.ctx, s->peer, 0)))
            return store_err(s, rc);
    }
    if (!floor || (v >= floor && !s->peer_left))
        return 0;
    s->left_resync = s->peer_left;
    s->peer_left = 0;
    s->behind = 1;
    s->h_stamp = stamp;
    s->h_floor = floor;
    s->h_check = 1;
    s->told_uptodate = 0; /* its end is told, even at the same last */
    s->sent_upto = 0;
    s->walk_len = 0;
    s->skip_to = 0; /* everything again, from 0 */
    s->all_upto = last;
    return send_u64(s, M_RESYNC, stamp) ? seterr(s, CRDTDB_ENOMEM, "out of memory") : 0;
}

/* Collection ran while this session was exporting: if it dropped removes
 * the peer has not been sent yet, the peer is resynced now, as if its
 * SINCE had come from behind the floor. */
static int collected_under(crdtdb_session *s, uint64_t *floor_out)
{
    uint64_t floor = 0, stamp = 0, last;
    if (floor_out)
        *floor_out = 0;
    if (!s->st.horizon || !s->server)
        return 0;
    int rc = s->st.horizon(s->st.ctx, s->peer, &floor, &stamp);
    if (!rc && floor_out)
        *floor_out = floor;
    if (rc)
        return store_err(s, rc);
    uint64_t done = s->skip_to > s->sent_upto ? s->skip_to : s->sent_upto;
    if (s->behind && s->h_check && done >= s->all_upto) {
        /* the resync is sent: a collection since it began may have taken
         * the remove of a record it had already named (its snapshot was
         * taken delta by delta), and its end moved the peer past the new
         * floor, so nothing else would tell: resync again */
        s->h_check = 0;
        if (floor > s->h_floor) {
            if ((rc = seq(s, &last)))
                return store_err(s, rc);
            return since_horizon(s, 0, last);
        }
    }
    if (!floor || done >= floor || (s->behind && done < s->all_upto))
        return 0; /* nothing it lacks went, or a resync is on its way */
    if ((rc = seq(s, &last)))
        return store_err(s, rc);
    return since_horizon(s, done, last);
}

static int send_hello(crdtdb_session *s)
{
    const char *id = s->si.db_id;
    msgpack_packer pk = start(s, M_HELLO, 5);
    msgpack_pack_uint32(&pk, PROTO_VERSION);
    msgpack_pack_str_with_body(&pk, id, strlen(id));
    msgpack_pack_bin_with_body(&pk, s->self, sizeof s->self);
    msgpack_pack_uint8(&pk, (uint8_t)s->mode);
    return frame(s);
}

/* Ends the session for a local reason: tells the peer, fires CLOSED. */
static int fail(crdtdb_session *s, int code)
{
    if (s->state == S_CLOSED)
        return code;
    if (s->errcode != code) /* the peer hears a message of this code */
        seterr(s, code, "%s", crdtdb_strerror(code));
    msgpack_packer pk = start(s, M_ERROR, 3);
    msgpack_pack_int32(&pk, code);
    msgpack_pack_str_with_body(&pk, s->errmsg, strlen(s->errmsg));
    frame(s);
    s->state = S_CLOSED;
    crdtdb_session_event ev = {
        .type = CRDTDB_SESSION_ERROR, .mode = s->mode, .error = code, .message = s->errmsg};
    emit(s, &ev);
    ev.type = CRDTDB_SESSION_CLOSED;
    emit(s, &ev);
    return code;
}

int crdtdb__session_open_store(const crdtdb__session_store *store,
                               const crdtdb_session_options *opts, crdtdb_session **out)
{
    if (!store || !out) {
        if (store && store->close)
            store->close(store->ctx);
        return CRDTDB_EINVAL;
    }
    *out = NULL;
    crdtdb_session *s = calloc(1, sizeof *s);
    if (s)
        s->p_mine = UINT64_MAX;
    if (!s || !msgpack_zone_init(&s->zone, 1024)) {
        free(s);
        if (store->close)
            store->close(store->ctx);
        return CRDTDB_ENOMEM;
    }
    s->st = *store;
    s->st.info(s->st.ctx, &s->si); /* for the unset bounds */
    if (opts)
        s->o = *opts;
    else
        crdtdb_session_options_init(&s->o);
    if (s->o.mode != CRDTDB_SYNC_SERVER_TO_CLIENT)
        s->o.mode = CRDTDB_SYNC_TWO_WAY;
    if (!s->o.max_message)
        s->o.max_message = s->si.max_delta_size + 4096;
    if (!s->o.delta_size)
        s->o.delta_size = 256 * 1024;
    if (!s->o.max_output)
        s->o.max_output = 2 * s->si.max_delta_size;
    if (!s->o.max_presence)
        s->o.max_presence = CRDTDB_PRESENCE_MAX;
    s->server = (s->o.flags & CRDTDB_SESSION_SERVER) != 0;
    s->proven = !s->server;
    s->mode = s->o.mode;
    s->state = S_HANDSHAKE;
    snprintf(s->errmsg, sizeof s->errmsg, "no error");
    memcpy(s->self, s->si.self, sizeof s->self);
    /* cannot fail: the durable mark waits for the server's grant */
    if (!s->server && s->mode == CRDTDB_SYNC_SERVER_TO_CLIENT)
        (void)s->st.readonly(s->st.ctx, 1, 0);
    if (!s->server && send_hello(s)) {
        crdtdb_session_close(s);
        return CRDTDB_ENOMEM;
    }
    *out = s;
    return 0;
}

/* ACK [4, seq, mine]: we hold the peer's log up to seq, and our own log
 * was at mine then (read now: later is only more cautious), which lets the
 * peer know when nothing older than what we acknowledged can still come
 * from us (collection, docs/crdt.md). */
static int send_ack(crdtdb_session *s, uint64_t v)
{
    uint64_t mine;
    int rc = seq(s, &mine);
    if (rc)
        return store_err(s, rc);
    if (mine == s->tail_hi) /* what came last came from the peer: it needs
                               nothing of it to trust its ack */
        mine = s->tail_lo;
    msgpack_packer pk = start(s, M_ACK, 3);
    msgpack_pack_uint64(&pk, v);
    msgpack_pack_uint64(&pk, mine);
    return frame(s) ? CRDTDB_ENOMEM : 0;
}

/* The acks waiting to be recorded, into *out, counted as recorded: 1;
 * 0 when none wait (none came, or they may not be kept). */
static int take_acks(crdtdb_session *s, crdtdb_peer_ack *out)
{
    if (!s->acks_unsaved || !s->proven || (s->server && s->left))
        return 0;
    s->acks_unsaved = 0;
    memcpy(out->peer, s->peer, sizeof out->peer);
    out->acked = s->peer_acked;
    out->stable = s->stable_acked;
    return 1;
}

static int save_ack(crdtdb_session *s)
{
    crdtdb_peer_ack a;
    if (!take_acks(s, &a))
        return 0;
    int rc = s->st.peer_ack(s->st.ctx, a.peer, a.acked, a.stable);
    return rc ? store_err(s, rc) : 0;
}

/* What we hold of the peer's log moved: a waiting ack pair it covers makes
 * its acked stable (saved with the acks). */
static void stable_check(crdtdb_session *s)
{
    uint64_t have = s->hint > s->received ? s->hint : s->received;
    if (s->p_mine == UINT64_MAX || have < s->p_mine)
        return;
    if (s->p_acked > s->stable_acked) {
        s->stable_acked = s->p_acked;
        s->acks_unsaved++;
    }
    s->p_mine = UINT64_MAX;
}

static void stable_pair(crdtdb_session *s, uint64_t acked, uint64_t mine)
{
    if (s->p_mine == UINT64_MAX) {
        s->p_acked = acked;
        s->p_mine = mine;
    }
    stable_check(s);
}

/* The local time stamps are judged by: the store's clock (the database's
 * env clock, so tests and embedders with their own time source drive the
 * retry below). */
static uint64_t local_ms(crdtdb_session *s) { return s->st.now_ms(s->st.ctx); }

/*
 * Notes a delta refused as stamped ahead (ECLOCK): from when it will be in
 * time (its newest stamp less max_clock_skew_ms, CLOCK_RETRY_MIN_MS from
 * now at the soonest) and where its range ends.  Of several refusals, the
 * earliest time and the furthest end: a retry that fills only part of the
 * gap gets the rest refused again, and noted again.  The store tells the
 * newest stamp and the range's end (UINT64_MAX: unknown; then wait out the
 * limit).
 */
static void clock_refused(crdtdb_session *s, uint64_t ahead_ms, uint64_t to)
{
    uint64_t now = local_ms(s), skew = s->si.max_clock_skew_ms, at;
    if (ahead_ms != UINT64_MAX)
        at = ahead_ms > skew ? ahead_ms - skew : 0;
    else
        at = now + skew;
    if (at < now + CLOCK_RETRY_MIN_MS)
        at = now + CLOCK_RETRY_MIN_MS;
    if (!s->clock_wait || at < s->clock_retry_ms)
        s->clock_retry_ms = at;
    if (!s->clock_wait || to > s->clock_upto)
        s->clock_upto = to;
    s->clock_wait = 1;
}

/*
 * After an ECLOCK refusal, once the local clock has caught up with the
 * refused stamps: SINCE from our watermark again.  The peer rewinds and
 * resends the refused range and everything after it — deltas merged
 * meanwhile could not move the watermark past the gap, so they were never
 * acknowledged; covered again, they are.  Nothing to ask once the
 * watermark has passed the refused ranges anyway.
 */
static int clock_retry(crdtdb_session *s)
{
    if (!s->clock_wait || s->state != S_OPEN)
        return 0;
    if (s->received < s->clock_upto && local_ms(s) < s->clock_retry_ms)
        return 0;
    s->clock_wait = 0;
    return s->received < s->clock_upto ? send_u64(s, M_SINCE, s->received) : 0;
}

int crdtdb_session_flush(crdtdb_session *s)
{
    if (!s)
        return CRDTDB_EINVAL;
    api_enter(s);
    int rc = save_ack(s);
    if (!rc)
        rc = clock_retry(s); /* the timer that asks again with no traffic */
    if (!rc && s->state == S_OPEN && s->have_since)
        rc = collected_under(s, NULL);
    return api_exit(s, rc);
}

int crdtdb_session_acks_take(crdtdb_session *s, crdtdb_peer_ack *out)
{
    if (!s || !out)
        return CRDTDB_EINVAL;
    return take_acks(s, out); /* the caller records them (crdtdb_db_peer_acks) */
}

void crdtdb_session_close(crdtdb_session *s)
{
    if (!s)
        return;
    (void)save_ack(s); /* best effort: the store is still open (contract) */
    if (s->st.close)
        s->st.close(s->st.ctx);
    crdtdb_buf_free(&s->in);
    crdtdb_buf_free(&s->refused);
    crdtdb_buf_free(&s->notices);
    crdtdb_buf_free(&s->out);
    crdtdb_buf_free(&s->msg);
    crdtdb_buf_free(&s->rkeys);
    msgpack_zone_destroy(&s->zone);
    free(s);
}

int crdtdb_session_closed(const crdtdb_session *s) { return !s || s->state == S_CLOSED; }

int crdtdb_session_pending(const crdtdb_session *s)
{
    if (!s || s->state == S_CLOSED || s->in.len < 4)
        return 0;
    const uint8_t *p = s->in.data;
    size_t n = (size_t)p[0] << 24 | (size_t)p[1] << 16 | (size_t)p[2] << 8 | p[3];
    return n > s->o.max_message || s->in.len - 4 >= n;
}

int crdtdb_session_synced(crdtdb_session *s)
{
    return s && !crdtdb_session_unsynced(s);
}

const char *crdtdb_session_unsynced(crdtdb_session *s)
{
    if (!s)
        return "no session";
    if (s->state != S_OPEN)
        return s->state == S_CLOSED    ? "the session is closed"
               : s->state == S_LEAVING ? "the session is leaving"
                                       : "the handshake";
    if (!s->have_since)
        return "the peer's SINCE";
    if (!s->caught)
        return "the rest of the peer's log (caught up)";
    if (!we_send(s))
        return NULL;
    uint64_t last;
    if (seq(s, &last))
        return "the store (its sequence could not be read)";
    uint64_t done = s->skip_to > s->sent_upto ? s->skip_to : s->sent_upto;
    size_t out;
    crdtdb_session_output(s, &out);
    if (done < last)
        snprintf(s->waitmsg, sizeof s->waitmsg, "our log sent past %llu, up to %llu",
                 (unsigned long long)done, (unsigned long long)last);
    else if (s->peer_acked < s->sent_upto)
        snprintf(s->waitmsg, sizeof s->waitmsg, "the peer's ack of %llu (it acked %llu)",
                 (unsigned long long)s->sent_upto, (unsigned long long)s->peer_acked);
    else if (out)
        snprintf(s->waitmsg, sizeof s->waitmsg, "%zu bytes of output to be written", out);
    else
        return NULL;
    return s->waitmsg;
}

const char *crdtdb_session_errmsg(const crdtdb_session *s)
{
    return s ? s->errmsg : "no session";
}

const uint8_t *crdtdb_session_output(crdtdb_session *s, size_t *len)
{
    if (!s) {
        *len = 0;
        return NULL;
    }
    *len = s->out.len - s->out_off;
    return *len ? s->out.data + s->out_off : NULL;
}

/* A drained buffer this large is given back: a burst must not pin its
 * memory for the session's life. */
#define KEEP_BUF (256u * 1024)

void crdtdb_session_consume(crdtdb_session *s, size_t n)
{
    if (!s)
        return;
    size_t left = s->out.len - s->out_off;
    s->out_off += n < left ? n : left;
    if (s->out_off == s->out.len) {
        s->out.len = s->out_off = 0;
        if (s->out.cap > KEEP_BUF)
            crdtdb_buf_free(&s->out);
    }
}

uint64_t crdtdb_session_deltas_sent(const crdtdb_session *s) { return s ? s->deltas_sent : 0; }

void crdtdb_session_buffered(const crdtdb_session *s, size_t *in, size_t *out)
{
    if (in)
        *in = s ? s->in.cap : 0;
    if (out)
        *out = s ? s->out.cap : 0;
}

static int send_notice(crdtdb_session *s, int code, const char *message)
{
    msgpack_packer pk = start(s, M_NOTICE, 3);
    msgpack_pack_int32(&pk, code);
    msgpack_pack_str_with_body(&pk, message, strlen(message));
    return frame(s);
}

/* Sends the notices queued while a message was being handled, in order. */
static int flush_notices(crdtdb_session *s)
{
    int rc = 0;
    for (size_t off = 0; !rc && off < s->notices.len;) {
        const uint8_t *p = s->notices.data + off;
        int32_t code = (int32_t)((uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
                                 (uint32_t)p[2] << 8 | p[3]);
        const char *msg = (const char *)p + 4;
        off += 4 + strlen(msg) + 1;
        rc = send_notice(s, code, msg);
    }
    s->notices.len = 0;
    return rc;
}

int crdtdb_session_notify(crdtdb_session *s, int code, const char *message)
{
    if (!s || !message)
        return CRDTDB_EINVAL;
    if (s->state == S_CLOSED || s->state == S_LEAVING)
        return CRDTDB_EBUSY; /* errmsg keeps why it closed; LEAVE was the last word */
    if (!s->busy) {
        api_enter(s);
        return api_exit(s, send_notice(s, code, message));
    }
    /* called back from inside feed or step (a write filter, an event):
     * queued, and sent once the work under way is done, so a message being
     * built is never cut into */
    uint8_t h[4] = {(uint8_t)((uint32_t)code >> 24), (uint8_t)((uint32_t)code >> 16),
                    (uint8_t)((uint32_t)code >> 8), (uint8_t)code};
    if (crdtdb__buf_append(&s->notices, h, 4) ||
        crdtdb__buf_append(&s->notices, message, strlen(message) + 1))
        return seterr(s, CRDTDB_ENOMEM, "out of memory");
    return 0;
}

void crdtdb_session_abort(crdtdb_session *s, int code, const char *message)
{
    if (!s || s->state == S_CLOSED)
        return;
    seterr(s, code, "%s", message ? message : crdtdb_strerror(code));
    if (s->notices.len) /* asked for before the end: they go ahead of it */
        (void)flush_notices(s);
    fail(s, code);
}

void crdtdb_session_shutdown(crdtdb_session *s)
{
    if (!s || s->state == S_CLOSED)
        return;
    if (s->notices.len) /* asked for before the end: they go ahead of it */
        (void)flush_notices(s);
    start(s, M_CLOSE, 1);
    frame(s);
    s->state = S_CLOSED;
    crdtdb_session_event ev = {.type = CRDTDB_SESSION_CLOSED, .mode = s->mode};
    emit(s, &ev);
}

int crdtdb_session_leave(crdtdb_session *s)
{
    if (!s)
        return CRDTDB_EINVAL;
    if (s->state == S_CLOSED)
        return CRDTDB_EBUSY; /* errmsg keeps why it closed, as for notify */
    api_enter(s);
    if (s->server)
        return api_exit(s, seterr(s, CRDTDB_EINVAL, "a server's session does not leave"));
    if (s->state != S_OPEN)
        return api_exit(s, seterr(s, CRDTDB_EINVAL, s->state == S_LEAVING
                                                        ? "the session is already leaving"
                                                        : "the session is not open yet"));
    if (s->notices.len)
        (void)flush_notices(s);
    start(s, M_LEAVE, 1);
    if (frame(s))
        return api_exit(s, seterr(s, CRDTDB_ENOMEM, "out of memory"));
    s->state = S_LEAVING; /* until the server answers (handle) */
    return api_exit(s, 0);
}

int crdtdb_session_left(const crdtdb_session *s)
{
    return s && !s->server && s->left;
}

/* What the store holds of the peer's log (read once per session; applies
 * report it after that). */
static uint64_t stored_received(crdtdb_session *s)
{
    uint64_t received, acked;
    return s->st.peer_get(s->st.ctx, s->peer, &received, &acked) == 0 ? received : 0;
}

/* The snapshot's records, sorted: names pointing into rkeys, each with
 * what the snapshot carried of it (2: an add or remove, 1: leaves only). */
typedef struct rname {
    const char *coll, *id;
    int held;
} rname;
typedef struct rindex {
    rname *at;
    size_t n;
} rindex;

static int rname_cmp(const void *a, const void *b)
{
    const rname *x = a, *y = b;
    int c = strcmp(x->coll, y->coll);
    return c ? c : strcmp(x->id, y->id);
}

static int rkey_held(void *ctx, const char *coll, const char *id)
{
    const rindex *ix = ctx;
    rname key = {coll, id, 0};
    const rname *r = ix->n ? bsearch(&key, ix->at, ix->n, sizeof *ix->at, rname_cmp) : NULL;
    return r ? r->held : 0;
}

/* Caught up after a RESYNC: what we hold that the snapshot did not goes
 * (crdtdb_db_resync_end), in one transaction. */
static int resync_finish(crdtdb_session *s)
{
    s->resync = 0;
    rindex ix = {NULL, 0};
    size_t cap = 0;
    for (size_t off = 0; off < s->rkeys.len;) { /* "coll\0id\0" and a flag byte */
        if (ix.n == cap) {
            rname *p = realloc(ix.at, (cap = cap ? 2 * cap : 64) * sizeof *p);
            if (!p) {
                free(ix.at);
                return seterr(s, CRDTDB_ENOMEM, "out of memory");
            }
            ix.at = p;
        }
        rname *r = &ix.at[ix.n++];
        r->coll = (const char *)s->rkeys.data + off;
        r->id = r->coll + strlen(r->coll) + 1;
        off = (size_t)(r->id + strlen(r->id) + 1 - (const char *)s->rkeys.data);
        r->held = off < s->rkeys.len && s->rkeys.data[off] == 'b' ? 2 : 1;
        off++;
    }
    size_t n = 0;
    if (ix.n) { /* one entry per record, the most any delta carried of it */
        qsort(ix.at, ix.n, sizeof *ix.at, rname_cmp);
        for (size_t i = 1; i < ix.n; i++) {
            if (rname_cmp(&ix.at[n], &ix.at[i]) == 0) {
                if (ix.at[i].held > ix.at[n].held)
                    ix.at[n].held = ix.at[i].held;
            } else {
                ix.at[++n] = ix.at[i];
            }
        }
        ix.n = n + 1;
    }
    unsigned flags = s->o.flags & CRDTDB_SESSION_NO_PURGE ? CRDTDB_RESYNC_SHARED : 0;
    size_t changed = 0;
    int rc = s->st.resync_end(s->st.ctx, s->peer, s->resync_stamp, s->resync_acked, rkey_held,
                              &ix, flags, &changed);
    free(ix.at);
    crdtdb_buf_free(&s->rkeys);
    return rc ? store_err(s, rc) : 0;
}

static int check_caught_up(crdtdb_session *s)
{
    uint64_t have = s->hint > s->received ? s->hint : s->received;
    if (s->peer_uptodate && have >= s->peer_uptodate - 1) {
        s->peer_uptodate = 0;
        s->caught = 1;
        if (s->resync && s->st.resync_end) {
            int rc = resync_finish(s); /* clears the store's flag */
            if (rc)
                return rc;
        } else if (s->resync_flagged) { /* it had nothing to resync after all */
            int rc = s->st.peer_resync(s->st.ctx, s->peer, 0, 0);
            if (rc)
                return store_err(s, rc);
        }
        s->resync_flagged = 0;
        crdtdb_session_event ev = {
            .type = CRDTDB_SESSION_CAUGHT_UP, .mode = s->mode, .peer = s->peer};
        emit(s, &ev);
    }
    return 0;
}

/* Our side exports unless we are a client that only receives. */
static int we_send(const crdtdb_session *s)
{
    return s->server || s->mode == CRDTDB_SYNC_TWO_WAY;
}

/* The read filter, with the session's own context. */
static int read_filter(void *ctx, crdtdb_txn *txn, const char *coll, const char *id,
                       const uint8_t *value, size_t len)
{
    crdtdb_session *s = ctx;
    return s->o.read_filter(s->o.filter_ctx, txn, coll, id, value, len);
}

/* A record the peer may no longer see: it forgets it. */
static void send_purge(void *ctx, const char *coll, const char *id)
{
    crdtdb_session *s = ctx;
    msgpack_packer pk = start(s, M_PURGE, 3);
    msgpack_pack_str_with_body(&pk, coll, strlen(coll));
    msgpack_pack_str_with_body(&pk, id, strlen(id));
    if (frame(s))
        s->purge_err = 1;
}

/* The store's delta for the peer (crdtdb__store_give): queued as a frame;
 * none (len 0): nothing for the peer, a SKIP follows. */
static int give_delta(void *ctx, const uint8_t *delta, size_t len)
{
    crdtdb_session *s = ctx;
    if (!len) {
        s->skipped = 1;
        return 0;
    }
    msgpack_packer pk = start(s, M_DELTA, 2);
    if (msgpack_pack_bin_with_body(&pk, delta, len) || frame(s)) {
        s->give_err = 1;
        return seterr(s, CRDTDB_ENOMEM, "out of memory");
    }
    s->signed_one = s->gave = 1;
    s->deltas_sent++;
    return 0;
}

static int pump(crdtdb_session *s)
{
    int rc = clock_retry(s); /* receive-only clients ask again too */
    if (rc)
        return rc;
    if (s->state != S_OPEN || !s->have_since || !we_send(s))
        return 0;
    /* a collection since the last export may have dropped removes the peer
     * has not been sent: it is resynced before anything else goes */
    uint64_t floor; /* the peer's floor, read once: it holds for the pump */
    if ((rc = collected_under(s, &floor)))
        return rc;
    while (s->out.len - s->out_off < s->o.max_output) {
        uint64_t last;
        rc = seq(s, &last);
        if (rc)
            return store_err(s, rc);
        uint64_t done = s->skip_to > s->sent_upto ? s->skip_to : s->sent_upto;
        /* A client that sent no delta yet signs one, empty if need be: it
         * proves its id, so the server keeps its acks, and with them what
         * it holds of the server's removes (collection, docs/crdt.md). */
        int prove = !s->server && !s->signed_one && done >= last;
        /* A server whose floor passed what the client holds durably (a
         * SKIP moves only its memory) signs the range, even empty: else
         * the client's next SINCE, from behind the floor, costs a resync
         * it does not need (and a shared one's removes). */
        int cross = s->server && floor > s->sent_upto;
        if (done >= last && !prove && !cross) {
            if (s->told_uptodate != last + 1) { /* say so once per position */
                s->told_uptodate = last + 1;
                return send_u64(s, M_UPTODATE, last);
            }
            return 0;
        }
        /* A server signs once for all its sessions; acks travel as ACK.
         * A range holding nothing for the peer is not signed: a SKIP says
         * so, and the next delta starts where the peer's durable watermark
         * is, covering the range again (rescanned, not resent) — until the
         * range is long, when one empty delta moves the watermark. */
        int longskip = s->skip_to > s->sent_upto && s->skip_to - s->sent_upto >= SKIP_SPAN;
        crdtdb__store_want w;
        memset(&w, 0, sizeof w);
        w.after = s->sent_upto;
        w.peer = s->peer;
        w.flags = (longskip || prove || cross ? 0 : CRDTDB_EXPORT_NO_EMPTY) |
                  (s->server ? CRDTDB_EXPORT_SHARED : 0) |
                  (s->sent_upto < s->all_upto ? CRDTDB_EXPORT_ALL : 0);
        w.max_bytes = s->o.delta_size;
        w.visible = s->o.read_filter ? read_filter : NULL;
        w.hidden = s->o.read_filter ? send_purge : NULL;
        w.filter_ctx = s;
        uint8_t walk_at[CRDTDB_EXPORT_RESUME_MAX];
        size_t walk_len = 0;
        w.resume = s->walk_len ? s->walk_at : NULL;
        w.resume_len = s->walk_len;
        w.resume_out = walk_at;
        w.resume_out_len = &walk_len;
        uint64_t to = 0;
        s->skipped = s->give_err = 0;
        s->gave = 0;
        rc = s->st.next_delta(s->st.ctx, &w, give_delta, s, &to);
        if (!rc && s->purge_err)
            rc = seterr(s, CRDTDB_ENOMEM, "out of memory");
        if (rc)
            return s->give_err || s->purge_err ? rc : store_err(s, rc);
        /* guard the loop: a skip must pass what was skipped before; a delta
         * (maybe a piece of a large record) must pass what was sent.  And
         * a range is sent only by a delta, which starts where the peer's
         * durable watermark is (a skip moves none): a range counted as
         * sent with nothing sent would leave the peer short of it for good */
        /* a walk of the records moves on inside (sent_upto, sent_upto] */
        int walked = !s->skipped && to == s->sent_upto && walk_len &&
                     (walk_len != s->walk_len || memcmp(walk_at, s->walk_at, walk_len) != 0);
        if (s->skipped ? to <= done : to <= s->sent_upto && !prove && !cross && !walked)
            return seterr(s, CRDTDB_EIO, "export made no progress");
        if (!s->skipped && !s->gave && to > s->sent_upto)
            return seterr(s, CRDTDB_EIO, "export sent nothing for (%llu, %llu]",
                          (unsigned long long)s->sent_upto, (unsigned long long)to);
        if (prove) /* a proof that found nothing to sign is not retried */
            s->signed_one = 1;
        if (s->skipped) {
            msgpack_packer pk = start(s, M_SKIP, 3);
            msgpack_pack_uint64(&pk, s->sent_upto);
            msgpack_pack_uint64(&pk, to);
            if (frame(s))
                return CRDTDB_ENOMEM;
            s->skip_to = to;
        } else {
            s->sent_upto = to;
            memcpy(s->walk_at, walk_at, walk_len);
            s->walk_len = walk_len;
        }
    }
    return 0;
}

int crdtdb_session_pump(crdtdb_session *s)
{
    if (!s)
        return CRDTDB_EINVAL;
    api_enter(s);
    if (s->state == S_CLOSED)
        return api_exit(s, seterr(s, CRDTDB_EBUSY, "the session is closed"));
    /* called back from inside feed or step (an observer of its own apply):
     * the call under way pumps when it returns, after what it must send
     * first (notices, REPLACE, ACK) */
    if (s->busy)
        return api_exit(s, 0);
    return api_exit(s, pump(s));
}

int crdtdb_session_pump_early(crdtdb_session *s, uint64_t from)
{
    if (!s)
        return CRDTDB_EINVAL;
    api_enter(s);
    /* only a peer waiting, idle, exactly where the write begins: every
     * other state (catching up, a walk, a resync, a filter, a clock retry,
     * output queued) is the pump's after the commit, as before */
    if (!s->server || s->state != S_OPEN || !s->have_since || s->busy || s->peeked ||
        s->o.read_filter ||
        s->clock_wait || s->behind || s->peer_left || s->left_resync || s->left || s->resync ||
        s->sent_upto != from || s->skip_to > from || s->walk_len || s->all_upto > from ||
        s->told_uptodate != from + 1 || s->out.len > s->out_off)
        return api_exit(s, 0);
    int rc = pump(s);
    if (rc)
        return api_exit(s, rc);
    int more = s->out.len > s->out_off;
    api_exit(s, 0);
    return more;
}

int crdtdb_session_want_write(const crdtdb_session *s)
{
    if (!s)
        return 0;
    if (s->out.len > s->out_off)
        return 1;
    /* inside feed or step (the write came from this session's own apply):
     * the session answers itself when the call returns */
    if (s->busy || s->state != S_OPEN)
        return 0;
    /* a commit, or time, may have given the peer something: pump decides */
    return (s->have_since && we_send(s)) || s->clock_wait;
}

/* ------------------------------------------------------------- receive */

/* A client granted read-only access holds writes the server will never
 * take: they go, deliberately and said so, rather than staying a silent
 * divergence.  Its durable ack says what the server has. */
static int discard_unsent(crdtdb_session *s, size_t *n)
{
    int rc = s->st.discard_unsent(s->st.ctx, s->peer, n);
    return rc ? store_err(s, rc) : 0;
}

static int handle_hello(crdtdb_session *s, const msgpack_object *a, uint32_t n)
{
    if (s->state != S_HANDSHAKE)
        return seterr(s, CRDTDB_EBADVALUE, "a second hello");
    if (n != 5 || a[1].type != MSGPACK_OBJECT_POSITIVE_INTEGER ||
        a[2].type != MSGPACK_OBJECT_STR || a[3].type != MSGPACK_OBJECT_BIN ||
        a[3].via.bin.size != CRDTDB_REPLICA_ID_BYTES ||
        a[4].type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        return seterr(s, CRDTDB_EBADVALUE, "malformed hello");
    if (a[1].via.u64 != PROTO_VERSION)
        return seterr(s, CRDTDB_EVERSION, "protocol version %llu, this end speaks %u",
                      (unsigned long long)a[1].via.u64, PROTO_VERSION);
    const char *id = s->si.db_id;
    if (a[2].via.str.size != strlen(id) || memcmp(a[2].via.str.ptr, id, strlen(id)) != 0)
        return seterr(s, CRDTDB_EINVAL, "the peer syncs database '%.*s', this end '%s'",
                      (int)a[2].via.str.size, a[2].via.str.ptr, id);
    memcpy(s->peer, a[3].via.bin.ptr, sizeof s->peer);
    if (memcmp(s->peer, s->self, sizeof s->peer) == 0)
        return seterr(s, CRDTDB_EINVAL, "the peer has this replica's own id");
    uint64_t mode = a[4].via.u64;
    if (mode != CRDTDB_SYNC_TWO_WAY && mode != CRDTDB_SYNC_SERVER_TO_CLIENT)
        return seterr(s, CRDTDB_EBADVALUE, "unknown sync mode %llu", (unsigned long long)mode);
    if (s->server) { /* grant the least of what was asked and what we allow */
        if (mode == CRDTDB_SYNC_SERVER_TO_CLIENT)
            s->mode = CRDTDB_SYNC_SERVER_TO_CLIENT;
        if (send_hello(s))
            return CRDTDB_ENOMEM;
    } else {
        s->mode = (crdtdb_sync_mode)mode; /* what the server granted */
        int ro = s->mode == CRDTDB_SYNC_SERVER_TO_CLIENT;
        /* imposed by the server (two-way was asked): the copy itself is
         * read-only, for every handle and process, until a server grants
         * two-way again */
        int mark = s->o.mode == CRDTDB_SYNC_TWO_WAY && !(s->o.flags & CRDTDB_SESSION_NO_PURGE);
        int rc = s->st.readonly(s->st.ctx, ro, mark);
        if (rc)
            return store_err(s, rc);
    }
    s->state = S_OPEN;
    s->received = stored_received(s);
    unsigned pflags = 0; /* a resync from this peer was cut: all of it again */
    if (s->st.peer_flags) {
        int rc = s->st.peer_flags(s->st.ctx, s->peer, &pflags);
        if (rc)
            return store_err(s, rc);
        if (pflags & CRDTDB_PEER_RESYNC)
            s->received = 0, s->resync_flagged = 1;
        s->peer_left = (pflags & CRDTDB_PEER_LEFT) != 0;
    }
    size_t discarded = 0;
    if (!s->server && s->mode == CRDTDB_SYNC_SERVER_TO_CLIENT &&
        !(s->o.flags & CRDTDB_SESSION_NO_PURGE)) { /* a shared replica keeps others' data */
        int rc = discard_unsent(s, &discarded);
        if (rc)
            return rc;
    }
    /* after a discard, everything again: the purged records come back as
     * the server has them */
    if (send_u64(s, M_SINCE, discarded ? 0 : s->received))
        return CRDTDB_ENOMEM;
    crdtdb_session_event ev = {.type = CRDTDB_SESSION_READY, .mode = s->mode, .peer = s->peer};
    emit(s, &ev);
    if (discarded) {
        char msg[160];
        snprintf(msg, sizeof msg, "%zu record%s changed here while offline cannot be sent "
                 "(read-only access): reset to the server's copy", discarded,
                 discarded == 1 ? "" : "s");
        crdtdb_session_event e2 = {.type = CRDTDB_SESSION_ERROR,
                                   .mode = s->mode,
                                   .peer = s->peer,
                                   .error = CRDTDB_EROFS,
                                   .message = msg};
        emit(s, &e2);
    }
    return 0;
}

/* The write filter, with the session's own context: what it refuses is
 * noted for the REPLACE that corrects the peer. */
static int write_filter(void *ctx, crdtdb_txn *txn, const char *coll, const char *id,
                        const uint8_t *old, size_t old_len, const uint8_t *now, size_t now_len)
{
    crdtdb_session *s = ctx;
    int r = s->o.write_filter(s->o.filter_ctx, txn, coll, id, old, old_len, now, now_len);
    if (r && (crdtdb__buf_append(&s->refused, coll, strlen(coll) + 1) ||
              crdtdb__buf_append(&s->refused, id, strlen(id) + 1)))
        return CRDTDB_ENOMEM; /* refused all the same; the apply then fails */
    return r;
}

/*
 * Corrects the peer, and only the peer, for each record the filter
 * refused: REPLACE [type, coll, id, upto, delta | nil] makes it take back
 * what it wrote of the record up to its sequence `upto` and take our copy.
 * Nothing was stored here for it, so nothing reaches anyone else.
 */
static int send_replaces(crdtdb_session *s, uint64_t upto)
{
    crdtdb_buf rec = CRDTDB_BUF_INIT;
    int rc = 0;
    for (size_t off = 0; !rc && off < s->refused.len;) {
        const char *coll = (const char *)s->refused.data + off;
        const char *id = coll + strlen(coll) + 1;
        off = (size_t)(id + strlen(id) + 1 - (const char *)s->refused.data);
        /* with a read filter, only a visible record it allows (else the
         * peer learns nothing of it) */
        int found = 0;
        rc = s->st.record_delta(s->st.ctx, coll, id, s->peer, s->o.read_filter,
                                s->o.filter_ctx, &rec, &found);
        if (rc) {
            rc = store_err(s, rc);
            break;
        }
        msgpack_packer pk = start(s, M_REPLACE, 5);
        msgpack_pack_str_with_body(&pk, coll, strlen(coll));
        msgpack_pack_str_with_body(&pk, id, strlen(id));
        msgpack_pack_uint64(&pk, upto);
        if (found)
            msgpack_pack_bin_with_body(&pk, rec.data, rec.len);
        else
            msgpack_pack_nil(&pk);
        rc = frame(s);
    }
    crdtdb_buf_free(&rec);
    s->refused.len = 0;
    return rc;
}

/* A delta we refused but the peer can retry: it hears why, and the range
 * stays unacknowledged. */
static int refuse_delta(crdtdb_session *s, int rc)
{
    store_err(s, rc);
    crdtdb_session_event ev = {.type = CRDTDB_SESSION_ERROR,
                               .mode = s->mode,
                               .peer = s->peer,
                               .error = rc,
                               .message = s->errmsg};
    emit(s, &ev);
    if (s->state == S_CLOSED) /* its callback ended the session: nothing follows the CLOSE */
        return 0;
    return send_notice(s, rc, s->errmsg) == CRDTDB_ENOMEM ? CRDTDB_ENOMEM : 0;
}

/* The signer a delta (or replace) claims must be the peer that said hello:
 * checked here, once, before anything is stored; the apply then verifies
 * the signature against this same key, so a delta that passes both was
 * signed by the peer. */
static int check_signer(crdtdb_session *s, const uint8_t *p, size_t len, const char *what)
{
    crdtdb__delta_head h;
    int rc = crdtdb__delta_peek(p, len, &h);
    if (!rc && !h.signer)
        rc = CRDTDB_EBADVALUE;
    if (rc)
        return seterr(s, rc, "malformed %s: %s", what, crdtdb_strerror(rc));
    if (memcmp(h.signer, s->peer, sizeof s->peer) != 0)
        return seterr(s, CRDTDB_EBADVALUE, "a %s signed by another replica than the peer", what);
    return 0;
}

/* After a delta applied, alone or in a batch (info; `before`: what we
 * held of the peer's log before it): the bookkeeping, the events and the
 * replies. */
static int delta_done(crdtdb_session *s, const crdtdb_apply_info *info, uint64_t before)
{
    int rc;
    s->proven = 1;
    /* What this apply numbered came from the peer: when nothing else was
     * waiting for it, there is nothing to send back, and no need to scan
     * the log or say so (no SKIP, no UPTODATE for it). */
    uint64_t done = s->skip_to > s->sent_upto ? s->skip_to : s->sent_upto;
    if (!info->refused && !info->gated && !s->o.read_filter &&
        info->local_to > info->local_from && done >= info->local_from &&
        s->told_uptodate == info->local_from + 1) {
        s->skip_to = info->local_to;
        s->told_uptodate = info->local_to + 1;
    }
    crdtdb_session_event ev = {
        .type = CRDTDB_SESSION_APPLIED, .mode = s->mode, .peer = s->peer, .applied = info};
    emit(s, &ev);
    if (s->state == S_CLOSED) /* its callback ended the session */
        return 0;
    if (info->received > s->received)
        s->received = info->received;
    stable_check(s);
    if (info->local_to > info->local_from && !info->gated) { /* the peer's, at our log's end */
        if (info->local_from != s->tail_hi)
            s->tail_lo = info->local_from;
        s->tail_hi = info->local_to;
    }
    /* the peer hears of refused records before the ack, so it cannot think
     * itself in sync in between */
    if (info->refused && (rc = send_replaces(s, info->to)))
        return rc;
    if (s->received > before && s->received > s->hint &&
        (rc = send_ack(s, s->received))) /* applied is durable */
        return rc;
    return check_caught_up(s);
}

static int handle_delta(crdtdb_session *s, const msgpack_object *a, uint32_t n)
{
    if (n != 2 || a[1].type != MSGPACK_OBJECT_BIN)
        return seterr(s, CRDTDB_EBADVALUE, "malformed delta message");
    if (s->server && s->mode == CRDTDB_SYNC_SERVER_TO_CLIENT)
        return seterr(s, CRDTDB_EROFS, "Read only access");
    const uint8_t *bytes = (const uint8_t *)a[1].via.bin.ptr;
    size_t len = a[1].via.bin.size;
    int prc = check_signer(s, bytes, len, "delta");
    if (prc)
        return prc;
    uint64_t before = s->received;
    crdtdb_apply_info info;
    memset(&info, 0, sizeof info);
    s->refused.len = 0;
    uint64_t ahead_ms = UINT64_MAX;
    int rc = s->st.apply(s->st.ctx, bytes, len, s->o.write_filter ? write_filter : NULL, s,
                         s->behind ? s->h_stamp : 0, &info, &ahead_ms);
    if (!rc && s->resync && s->st.resync_keys) { /* a record of the snapshot */
        if (s->rkeys.len > RESYNC_KEYS_MAX)
            return seterr(s, CRDTDB_ETOOBIG, "a resync of over %u bytes of record names",
                          RESYNC_KEYS_MAX);
        if ((rc = s->st.resync_keys(s->st.ctx, bytes, len, &s->rkeys)))
            return store_err(s, rc);
    }
    if (s->state == S_CLOSED) /* the write filter ended the session */
        return 0;
    /* what the write filter had to say goes out first, as it did */
    if (s->notices.len && flush_notices(s))
        return CRDTDB_ENOMEM;
    if (rc == CRDTDB_ECLOCK) { /* in time later: asked for again then */
        clock_refused(s, ahead_ms, info.to);
        return refuse_delta(s, rc);
    }
    if (rc == CRDTDB_ELIMIT) {
        /* too costly to apply at once (max_apply_work): ask for it again
         * from where we are, in deltas of at most half its size; a delta
         * of one record is always applied, so this ends */
        if ((rc = refuse_delta(s, rc)) || s->state == S_CLOSED)
            return rc;
        msgpack_packer pk = start(s, M_SINCE, 3);
        msgpack_pack_uint64(&pk, s->received);
        msgpack_pack_uint64(&pk, len / 2 ? len / 2 : 1);
        return frame(s);
    }
    if (rc)
        return store_err(s, rc);
    return delta_done(s, &info, before);
}

/* The record a PURGE or REPLACE names: a[1] and a[2], strings of at most
 * CRDTDB_ID_MAX bytes, copied NUL-terminated.  0, or -1 if they are not. */
static int record_names(const msgpack_object *a, char coll[CRDTDB_ID_MAX + 1],
                        char id[CRDTDB_ID_MAX + 1])
{
    if (a[1].type != MSGPACK_OBJECT_STR || a[2].type != MSGPACK_OBJECT_STR ||
        a[1].via.str.size > CRDTDB_ID_MAX || a[2].via.str.size > CRDTDB_ID_MAX)
        return -1;
    if (a[1].via.str.size) /* empty strings have no pointer */
        memcpy(coll, a[1].via.str.ptr, a[1].via.str.size);
    coll[a[1].via.str.size] = 0;
    if (a[2].via.str.size)
        memcpy(id, a[2].via.str.ptr, a[2].via.str.size);
    id[a[2].via.str.size] = 0;
    return 0;
}

/* REPLACE from the server: our write to the record was refused. */
static int handle_replace(crdtdb_session *s, const msgpack_object *a, uint32_t n)
{
    if (s->server)
        return seterr(s, CRDTDB_EROFS, "replaces are refused here (a server)");
    char coll[CRDTDB_ID_MAX + 1], id[CRDTDB_ID_MAX + 1];
    if (n != 5 || record_names(a, coll, id) || a[3].type != MSGPACK_OBJECT_POSITIVE_INTEGER ||
        (a[4].type != MSGPACK_OBJECT_BIN && a[4].type != MSGPACK_OBJECT_NIL))
        return seterr(s, CRDTDB_EBADVALUE, "malformed replace message");
    if (s->o.flags & CRDTDB_SESSION_NO_PURGE) {
        /* a shared replica takes nothing back: its data is others' too */
        char msg[CRDTDB_ID_MAX * 2 + 128];
        snprintf(msg, sizeof msg, "the peer refused record '%s' in '%s'; kept here as it is",
                 id, coll);
        crdtdb_session_event ev = {.type = CRDTDB_SESSION_ERROR,
                                   .mode = s->mode,
                                   .peer = s->peer,
                                   .error = CRDTDB_EROFS,
                                   .message = msg};
        emit(s, &ev);
        return 0;
    }
    const uint8_t *delta = NULL;
    size_t len = 0;
    if (a[4].type == MSGPACK_OBJECT_BIN) {
        delta = (const uint8_t *)a[4].via.bin.ptr;
        len = a[4].via.bin.size;
        int prc = check_signer(s, delta, len, "replace");
        if (prc)
            return prc;
    }
    int rc = s->st.replace(s->st.ctx, coll, id, a[3].via.u64, delta, len);
    if (rc == CRDTDB_ECLOCK)
        return refuse_delta(s, rc);
    if (rc == CRDTDB_EBADID || rc == CRDTDB_ENOCOLL)
        return seterr(s, CRDTDB_EBADVALUE, "replace of an unknown record");
    return rc ? store_err(s, rc) : 0;
}

/* ------------------------------------------------------------ presence */

/* A str of at most CRDTDB_ID_MAX bytes of UTF-8, copied NUL-terminated
 * into out (for the callback); 0, or -1 if it is not one. */
static int copy_str(const msgpack_object *o, char out[CRDTDB_ID_MAX + 1])
{
    if (o->type != MSGPACK_OBJECT_STR || o->via.str.size > CRDTDB_ID_MAX ||
        !crdtdb__utf8_valid((const uint8_t *)o->via.str.ptr, o->via.str.size))
        return -1;
    if (o->via.str.size) /* empty strings have no pointer */
        memcpy(out, o->via.str.ptr, o->via.str.size);
    out[o->via.str.size] = 0;
    return 0;
}

/* The key, user and replica of a [13] or [15] (a[1..3]); 0 or -1. */
static int presence_source(const msgpack_object *a, char user[CRDTDB_ID_MAX + 1])
{
    return a[1].type == MSGPACK_OBJECT_BIN && a[1].via.bin.size == CRDTDB_PRESENCE_KEY_BYTES &&
                   copy_str(&a[2], user) == 0 && a[3].type == MSGPACK_OBJECT_BIN &&
                   a[3].via.bin.size == CRDTDB_REPLICA_ID_BYTES
               ? 0
               : -1;
}

/*
 * Frames 12 to 15 (docs/protocol.md, "Presence and messages").  A wrong
 * shape is malformed and ends the session; a payload refused (too big,
 * not msgpack, a non-str key, too deep) gets a NOTICE and is dropped, with
 * no event.  Nothing here touches the store.
 */
static int handle_presence(crdtdb_session *s, const msgpack_object *a, uint32_t n, int type)
{
    char user[CRDTDB_ID_MAX + 1], to[CRDTDB_ID_MAX + 1];
    int ok;
    switch (type) {
    case CRDTDB__M_PRESENCE_SET: /* [12, state] */
        ok = n == 2 && (a[1].type == MSGPACK_OBJECT_BIN || a[1].type == MSGPACK_OBJECT_NIL);
        break;
    case CRDTDB__M_PRESENCE: /* [13, key, user, replica, version, state] */
        ok = n == 6 && presence_source(a, user) == 0 &&
             a[4].type == MSGPACK_OBJECT_POSITIVE_INTEGER && a[4].via.u64 >= 1 &&
             (a[5].type == MSGPACK_OBJECT_BIN || a[5].type == MSGPACK_OBJECT_NIL);
        break;
    case CRDTDB__M_MESSAGE_SEND: /* [14, to, body] */
        ok = n == 3 && (a[1].type == MSGPACK_OBJECT_NIL ||
                        (copy_str(&a[1], to) == 0 && to[0])) &&
             a[2].type == MSGPACK_OBJECT_BIN;
        break;
    default: /* [15, key, user, replica, n, to, body] */
        ok = n == 7 && presence_source(a, user) == 0 &&
             a[4].type == MSGPACK_OBJECT_POSITIVE_INTEGER && a[4].via.u64 >= 1 &&
             (a[5].type == MSGPACK_OBJECT_NIL ||
              (copy_str(&a[5], to) == 0 && to[0])) &&
             a[6].type == MSGPACK_OBJECT_BIN;
        break;
    }
    if (!ok)
        return seterr(s, CRDTDB_EBADVALUE, "malformed %s message",
                      type <= CRDTDB__M_PRESENCE ? "presence" : "ephemeral");
    /* 12 and 14 go to a server only: a server relays as 13 and 15 */
    if (!s->server && (type == CRDTDB__M_PRESENCE_SET || type == CRDTDB__M_MESSAGE_SEND))
        return seterr(s, CRDTDB_EBADVALUE, "message %d is for a server", type);
    int is_presence = type <= CRDTDB__M_PRESENCE;
    const msgpack_object *pay = type == CRDTDB__M_PRESENCE_SET   ? &a[1]
                                : type == CRDTDB__M_PRESENCE     ? &a[5]
                                : type == CRDTDB__M_MESSAGE_SEND ? &a[2]
                                                                 : &a[6];
    const uint8_t *bytes =
        pay->type == MSGPACK_OBJECT_BIN ? (const uint8_t *)pay->via.bin.ptr : NULL;
    size_t len = bytes ? pay->via.bin.size : 0;
    const char *why;
    int rc = bytes ? crdtdb__presence_check(bytes, len, s->o.max_presence, is_presence, &why) : 0;
    if (rc) { /* dropped; the session goes on */
        if (send_notice(s, rc, why))
            return CRDTDB_ENOMEM;
        return 0;
    }
    int relayed = type == CRDTDB__M_PRESENCE || type == CRDTDB__M_MESSAGE;
    crdtdb_session_event ev = {.mode = s->mode, .peer = s->peer};
    if (is_presence) {
        crdtdb_presence p = {.replica = s->peer, .state = bytes, .state_len = len};
        if (relayed) {
            p.key = (const uint8_t *)a[1].via.bin.ptr;
            p.user = user;
            p.replica = (const uint8_t *)a[3].via.bin.ptr;
            p.version = a[4].via.u64;
        }
        ev.type = CRDTDB_SESSION_PRESENCE;
        ev.presence = &p;
        emit(s, &ev);
    } else {
        const msgpack_object *t = relayed ? &a[5] : &a[1];
        crdtdb_message m = {.replica = s->peer, .to = t->type == MSGPACK_OBJECT_NIL ? NULL : to,
                            .body = bytes, .body_len = len};
        if (relayed) {
            m.key = (const uint8_t *)a[1].via.bin.ptr;
            m.user = user;
            m.replica = (const uint8_t *)a[3].via.bin.ptr;
            m.n = a[4].via.u64;
        }
        ev.type = CRDTDB_SESSION_MESSAGE;
        ev.msg = &m;
        emit(s, &ev);
    }
    return 0;
}

/* The checks of a local state or body: as on receipt, with this session's
 * max_presence; errmsg says why. */
static int presence_ready(crdtdb_session *s)
{
    if (s->state == S_CLOSED || s->state == S_LEAVING)
        return seterr(s, CRDTDB_EBUSY, "the session is closed");
    if (s->state != S_OPEN)
        return seterr(s, CRDTDB_EINVAL, "the session is not open yet");
    return 0;
}

int crdtdb_session_presence_set(crdtdb_session *s, const uint8_t *state, size_t len)
{
    if (!s || (!state && len))
        return CRDTDB_EINVAL;
    api_enter(s);
    int rc = presence_ready(s);
    if (!rc && s->server)
        rc = seterr(s, CRDTDB_EINVAL, "presence is set by a client session");
    const char *why;
    if (!rc && state && (rc = crdtdb__presence_check(state, len, s->o.max_presence, 1, &why)))
        seterr(s, rc, "%s", why);
    if (rc)
        return api_exit(s, rc);
    msgpack_packer pk = start(s, CRDTDB__M_PRESENCE_SET, 2);
    if (state)
        msgpack_pack_bin_with_body(&pk, state, len);
    else
        msgpack_pack_nil(&pk);
    return api_exit(s, frame(s));
}

int crdtdb_session_message_send(crdtdb_session *s, const char *to, const uint8_t *body,
                                size_t len)
{
    if (!s || !body)
        return CRDTDB_EINVAL;
    api_enter(s);
    int rc = presence_ready(s);
    if (!rc && s->server)
        rc = seterr(s, CRDTDB_EINVAL, "messages are sent by a client session");
    size_t tlen = to ? strlen(to) : 0;
    if (!rc && to &&
        (!tlen || tlen > CRDTDB_ID_MAX || !crdtdb__utf8_valid((const uint8_t *)to, tlen)))
        rc = seterr(s, CRDTDB_EINVAL, "a message goes to a user id of 1 to %u bytes of UTF-8",
                    CRDTDB_ID_MAX);
    const char *why;
    if (!rc && (rc = crdtdb__presence_check(body, len, s->o.max_presence, 0, &why)))
        seterr(s, rc, "%s", why);
    if (rc)
        return api_exit(s, rc);
    msgpack_packer pk = start(s, CRDTDB__M_MESSAGE_SEND, 3);
    if (to)
        msgpack_pack_str_with_body(&pk, to, tlen);
    else
        msgpack_pack_nil(&pk);
    msgpack_pack_bin_with_body(&pk, body, len);
    return api_exit(s, frame(s));
}

int crdtdb_session_send_frame(crdtdb_session *s, const uint8_t *frame_bytes, size_t len)
{
    if (!s)
        return CRDTDB_EINVAL;
    api_enter(s);
    int rc = presence_ready(s);
    if (!rc && crdtdb__presence_frames_check(frame_bytes, len))
        rc = seterr(s, CRDTDB_EINVAL, "not whole frames of type 13 or 15");
    if (!rc && crdtdb__buf_append(&s->out, frame_bytes, len))
        rc = seterr(s, CRDTDB_ENOMEM, "out of memory");
    return api_exit(s, rc);
}

/* The peer ended the session (CLOSE, LEAVE, or LEAVE's answer). */
static void closed_by_peer(crdtdb_session *s)
{
    s->state = S_CLOSED;
    crdtdb_session_event ev = {
        .type = CRDTDB_SESSION_CLOSED, .mode = s->mode, .peer = s->peer, .remote = 1};
    emit(s, &ev);
}

/* The code and "peer: ..." detail of an ERROR or NOTICE [type, code,
 * message] (either part may be missing or malformed). */
static int remote_error(const msgpack_object *a, uint32_t n, char *msg, size_t size)
{
    int code = n >= 2 && (a[1].type == MSGPACK_OBJECT_NEGATIVE_INTEGER ||
                          a[1].type == MSGPACK_OBJECT_POSITIVE_INTEGER)
                   ? (int)a[1].via.i64
                   : CRDTDB_EIO;
    if (n >= 3 && a[2].type == MSGPACK_OBJECT_STR)
        snprintf(msg, size, "peer: %.*s", (int)a[2].via.str.size, a[2].via.str.ptr);
    else
        snprintf(msg, size, "peer: %s", crdtdb_strerror(code));
    return code;
}

static int handle(crdtdb_session *s, const uint8_t *p, size_t len)
{
    const char *why;
    if (crdtdb__mp_check_items(p, len, 2, MSG_ITEMS_MAX, &why))
        return seterr(s, CRDTDB_EBADVALUE, "malformed message: %s", why);
    msgpack_object o;
    size_t off = 0;
    msgpack_zone_clear(&s->zone);
    if (msgpack_unpack((const char *)p, len, &off, &s->zone, &o) != MSGPACK_UNPACK_SUCCESS ||
        o.type != MSGPACK_OBJECT_ARRAY || o.via.array.size < 1 ||
        o.via.array.ptr[0].type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        return seterr(s, CRDTDB_EBADVALUE, "malformed message");
    const msgpack_object *a = o.via.array.ptr;
    uint32_t n = o.via.array.size;
    uint64_t type = a[0].via.u64;
    if (s->state == S_LEAVING && type != M_ERROR && type != M_CLOSE) {
        /* a leaving client takes nothing more: only the answer counts */
        if (type == M_LEAVE) {
            if (n != 1)
                return seterr(s, CRDTDB_EBADVALUE, "malformed leave message");
            s->left = 1;
            closed_by_peer(s);
        }
        return 0;
    }
    if (type == M_HELLO)
        return handle_hello(s, a, n);
    if (type == M_ERROR) {
        int code = remote_error(a, n, s->errmsg, sizeof s->errmsg);
        s->state = S_CLOSED;
        crdtdb_session_event ev = {.type = CRDTDB_SESSION_ERROR,
                                   .mode = s->mode,
                                   .peer = s->peer,
                                   .error = code,
                                   .message = s->errmsg,
                                   .remote = 1};
        emit(s, &ev);
        ev.type = CRDTDB_SESSION_CLOSED;
        emit(s, &ev);
        return 0;
    }
    if (type == M_PURGE) { /* the server says we may no longer see it */
        if (s->server || (s->o.flags & CRDTDB_SESSION_NO_PURGE))
            return seterr(s, CRDTDB_EROFS, "purges are refused here (a shared replica)");
        char coll[CRDTDB_ID_MAX + 1], id[CRDTDB_ID_MAX + 1];
        if (n != 3 || record_names(a, coll, id))
            return seterr(s, CRDTDB_EBADVALUE, "malformed purge message");
        int rc = s->st.purge(s->st.ctx, coll, id);
        if (rc == CRDTDB_EBADID || rc == CRDTDB_ENOCOLL)
            return seterr(s, CRDTDB_EBADVALUE, "purge of an unknown record");
        return rc ? store_err(s, rc) : 0;
    }
    if (type == M_NOTICE) { /* the peer refused something; we go on */
        char msg[512];
        int code = remote_error(a, n, msg, sizeof msg);
        crdtdb_session_event ev = {.type = CRDTDB_SESSION_ERROR,
                                   .mode = s->mode,
                                   .peer = s->peer,
                                   .error = code,
                                   .message = msg,
                                   .remote = 1};
        emit(s, &ev);
        return 0;
    }
    if (type == M_LEAVE) { /* [17]: the client drops its copy */
        if (n != 1)
            return seterr(s, CRDTDB_EBADVALUE, "malformed leave message");
        if (!s->server)
            return seterr(s, CRDTDB_EBADVALUE, "a leave sent to a client");
        /* only from the replica itself: it signed a delta in this session
         * (a two-way client signs one in every session), so a claimed id
         * cannot take another replica out of the horizon */
        int took = s->st.peer_leave && s->state == S_OPEN && s->proven;
        int rc = took ? s->st.peer_leave(s->st.ctx, s->peer, 1) : 0;
        if (rc)
            return store_err(s, rc);
        s->left = 1; /* its acks would bring it back */
        /* the answer: LEAVE once stored (the client may drop its copy),
         * CLOSE if not taken */
        start(s, took ? M_LEAVE : M_CLOSE, 1);
        frame(s);
        closed_by_peer(s);
        return 0;
    }
    if (type == M_CLOSE) {
        closed_by_peer(s);
        return 0;
    }
    if (s->state != S_OPEN)
        return seterr(s, CRDTDB_EBADVALUE, "message %llu before the handshake",
                      (unsigned long long)type);
    if (type == M_DELTA)
        return handle_delta(s, a, n);
    if (type == M_REPLACE)
        return handle_replace(s, a, n);
    if (type >= CRDTDB__M_PRESENCE_SET && type <= CRDTDB__M_MESSAGE)
        return handle_presence(s, a, n, (int)type);
    if (type == M_SKIP) { /* nothing for us in (from, to]: kept in memory for
                             CAUGHT_UP only; the next delta covers it */
        if (n != 3 || a[1].type != MSGPACK_OBJECT_POSITIVE_INTEGER ||
            a[2].type != MSGPACK_OBJECT_POSITIVE_INTEGER || a[2].via.u64 < a[1].via.u64)
            return seterr(s, CRDTDB_EBADVALUE, "malformed skip message");
        uint64_t have = s->hint > s->received ? s->hint : s->received;
        if (a[1].via.u64 <= have && a[2].via.u64 > have) {
            s->hint = a[2].via.u64;
            stable_check(s);
            /* we hold all of it (it came from us): the peer may count it
             * acknowledged, though our durable watermark waits for a delta */
            int rc = send_ack(s, s->hint);
            if (rc)
                return rc;
        }
        return check_caught_up(s);
    }
    if (type == M_RESYNC) { /* [16, stamp]: our whole state follows */
        if (n != 2 || a[1].type != MSGPACK_OBJECT_POSITIVE_INTEGER)
            return seterr(s, CRDTDB_EBADVALUE, "malformed resync message");
        /* its end removes what the snapshot lacks: a server takes none */
        if (s->server)
            return seterr(s, CRDTDB_EROFS, "a resync sent to a server");
        if (!s->st.resync_end)
            return seterr(s, CRDTDB_EBADVALUE, "a resync this store cannot take");
        /* durably (a cut session asks for all of it again), and the stamp
         * into our clock: our writes from now on are newer than what it
         * collected */
        int rc = s->st.peer_resync(s->st.ctx, s->peer, 1, a[1].via.u64);
        if (rc)
            return store_err(s, rc);
        /* what it holds of ours now: the snapshot carries that back; what
         * it acks later may not come back in it */
        uint64_t received;
        if ((rc = s->st.peer_get(s->st.ctx, s->peer, &received, &s->resync_acked)))
            return store_err(s, rc);
        if (s->peer_acked > s->resync_acked)
            s->resync_acked = s->peer_acked;
        s->resync = 1;
        s->rkeys.len = 0; /* the export starts over from 0 */
        if (a[1].via.u64 > s->resync_stamp)
            s->resync_stamp = a[1].via.u64;
        s->caught = 0;
        return 0;
    }
    /* SINCE may carry a third field: the most bytes per delta the peer
     * takes (after refusing one as too costly); ACK, our log's end when
     * the peer held that much (collection) */
    int hinted = (type == M_SINCE || type == M_ACK) && n == 3;
    if ((n != 2 && !hinted) || a[1].type != MSGPACK_OBJECT_POSITIVE_INTEGER ||
        (hinted && (a[2].type != MSGPACK_OBJECT_POSITIVE_INTEGER ||
                    (type == M_SINCE && a[2].via.u64 == 0))))
        return seterr(s, CRDTDB_EBADVALUE, "malformed message %llu", (unsigned long long)type);
    uint64_t v = a[1].via.u64, last = s->seq_seen;
    int rc;
    /* an ACK within what we know we wrote needs no read */
    if ((type == M_SINCE || (type == M_ACK && v > s->peer_acked && v > last)) &&
        (rc = seq(s, &last)))
        return store_err(s, rc);
    switch (type) {
    case M_SINCE:
        /* a client sends only what it committed, or what its early relay
         * reserved (a server's peer link), so a server holding more of its
         * log holds another copy's writes under its id: this one's next
         * writes, numbered up to there, would never be sent.  (A client's
         * SINCE past a server's log is the server's early relay.) */
        if (!s->server && v > last) {
            uint64_t sent = last;
            if (s->st.seq_sent && (rc = s->st.seq_sent(s->st.ctx, &sent)))
                return store_err(s, rc);
            if (v > sent)
                return seterr(s, CRDTDB_EFORK,
                              "the peer holds %llu of this replica's changes, more than the %llu it "
                              "wrote (a copied or restored replica: give it a new identity, "
                              "'crdtdb reset-id')",
                              (unsigned long long)v, (unsigned long long)sent);
        }
        if (hinted && a[2].via.u64 < s->o.delta_size)
            s->o.delta_size = (size_t)a[2].via.u64;
        if (v > s->peer_acked && v <= last) /* it holds that much of ours */
            s->peer_acked = v;
        s->sent_upto = v;
        s->walk_len = 0;
        s->skip_to = 0;
        if (v == 0) /* it may have cleared its copy, its own writes too */
            s->all_upto = last;
        s->have_since = 1;
        return since_horizon(s, v, last);
    case M_ACK:
        /* Beyond what we wrote, an ack is a lie or another history under
         * our id: believed by no one.  A server keeps acks durably only
         * once the peer has proven its id by signing a delta in this
         * session, so a claimed id cannot move another replica's mark. */
        if (v <= s->peer_acked || v > last)
            return 0;
        s->peer_acked = v;
        if (s->left_resync && v >= s->all_upto && s->st.peer_leave) {
            s->left_resync = 0; /* it holds all of the resync: in the horizon again */
            if ((rc = s->st.peer_leave(s->st.ctx, s->peer, 0)))
                return store_err(s, rc);
        }
        if (hinted)
            stable_pair(s, v, a[2].via.u64);
        /* durable now and then, and at the end: acks only inform (what is
         * resent follows the peer's SINCE), so a crash may lose a few */
        if (++s->acks_unsaved < ACK_SAVE_EVERY)
            return 0;
        return save_ack(s);
    case M_UPTODATE:
        s->peer_uptodate = v + 1;
        s->caught = 0;
        return check_caught_up(s);
    default:
        return seterr(s, CRDTDB_EBADVALUE, "unknown message type %llu", (unsigned long long)type);
    }
}

/* A message's type when it is a one-byte integer, read from the first
 * bytes of [type, ...] without unpacking; -1 for anything else (an odd
 * encoding). */
static int peek_type(const uint8_t *p, size_t n)
{
    size_t at = n && (p[0] & 0xf0) == 0x90 ? 1 : n && p[0] == 0xdc ? 3 : n && p[0] == 0xdd ? 5 : 0;
    return at && at < n && p[at] < 0x80 ? p[at] : -1;
}

/* Whether a frame may apply something: anything but a message whose type
 * is a one-byte integer other than delta and replace.  Odd encodings
 * count as costly: no spelling of a delta slips past the apply queue. */
static int costly_type(const uint8_t *p, size_t n)
{
    int t = peek_type(p, n);
    return t < 0 || t == M_DELTA || t == M_REPLACE;
}

/* Whether a message is presence or an ephemeral message (12 to 15): it
 * changes nothing a pump would send. */
static int presence_type(const uint8_t *p, size_t n)
{
    int t = peek_type(p, n);
    return t >= CRDTDB__M_PRESENCE_SET && t <= CRDTDB__M_MESSAGE;
}

/* The delta of a frame that is exactly [DELTA, bin] in the plainest
 * spelling (what every encoder writes), or NULL: anything else goes the
 * usual way, through handle. */
static const uint8_t *plain_delta(const uint8_t *p, size_t n, size_t *len)
{
    if (n < 4 || p[0] != 0x92 || p[1] != M_DELTA)
        return NULL;
    size_t h, b;
    if (p[2] == 0xc4)
        h = 4, b = p[3];
    else if (p[2] == 0xc5 && n >= 5)
        h = 5, b = (size_t)p[3] << 8 | p[4];
    else if (p[2] == 0xc6 && n >= 7)
        h = 7, b = (size_t)p[3] << 24 | (size_t)p[4] << 16 | (size_t)p[5] << 8 | p[6];
    else
        return NULL;
    if (n - h != b)
        return NULL;
    *len = b;
    return p + h;
}

/* Whether the session's waiting delta may join a batch: nothing asks for
 * one at a time (a write filter may refuse records; a resync either way;
 * a peer that may not write is refused; one whose stamps ran ahead would
 * fail every batch it joined until its clock is caught up with, costing
 * the others a second verify each). */
static int batchable(const crdtdb_session *s)
{
    return !s->o.write_filter && !s->behind && !s->resync && !s->clock_wait &&
           s->state == S_OPEN && !(s->server && s->mode == CRDTDB_SYNC_SERVER_TO_CLIENT);
}

/* The delta of the frame at the head of the input if it may join a
 * batch: complete, [DELTA, bin] plainly, signed by the peer; else NULL. */
static const uint8_t *batch_frame(const crdtdb_session *s, size_t *frame, size_t *len)
{
    if (s->in.len < 4)
        return NULL;
    const uint8_t *p = s->in.data;
    size_t n = (size_t)p[0] << 24 | (size_t)p[1] << 16 | (size_t)p[2] << 8 | p[3];
    const uint8_t *d;
    crdtdb__delta_head h;
    if (n > s->o.max_message || s->in.len - 4 < n || !(d = plain_delta(p + 4, n, len)) ||
        crdtdb__delta_peek(d, *len, &h) || !h.signer ||
        memcmp(h.signer, s->peer, sizeof s->peer) != 0)
        return NULL;
    *frame = 4 + n;
    return d;
}

/* Handles the complete frames buffered, applying at most `applies` deltas
 * or replaces (SIZE_MAX: no bound); stops before the next one over it. */
static int run_input(crdtdb_session *s, size_t applies, int store)
{
    size_t off = 0;
    int rc = 0, handled = 0; /* store: a message a pump may answer */
    while (!rc && s->state != S_CLOSED && s->in.len - off >= 4) {
        const uint8_t *p = s->in.data + off;
        size_t n = (size_t)p[0] << 24 | (size_t)p[1] << 16 | (size_t)p[2] << 8 | p[3];
        if (n > s->o.max_message) {
            rc = seterr(s, CRDTDB_ETOOBIG, "message of %zu bytes is over the limit of %zu", n,
                        s->o.max_message);
            break;
        }
        if (s->in.len - off - 4 < n)
            break; /* wait for the rest */
        if (s->state != S_LEAVING && costly_type(p + 4, n)) {
            if (!applies)
                break; /* for crdtdb_session_step */
            applies--;
        }
        store |= !presence_type(p + 4, n);
        handled = 1;
        rc = handle(s, p + 4, n);
        if (!rc && s->purge_err) /* a notice lost to out of memory in a callback */
            rc = seterr(s, CRDTDB_ENOMEM, "out of memory");
        off += 4 + n;
        /* notices queued by callbacks during the message, after it (and
         * ahead of the ERROR if it failed, as when they went at once) */
        if (s->notices.len && s->state != S_CLOSED) {
            int frc = flush_notices(s);
            rc = rc ? rc : frc;
        }
    }
    if (off) {
        memmove(s->in.data, s->in.data + off, s->in.len - off);
        s->in.len -= off;
    }
    if (!s->in.len && s->in.cap > KEEP_BUF)
        crdtdb_buf_free(&s->in);
    if (rc)
        return fail(s, rc);
    /* answer at once: what the peer lacks may be ready to go; a read
     * filter's notices from that pump follow it; presence alone changes
     * nothing a pump sends, and a loop busy with it would read the store
     * for every update */
    if (s->state == S_OPEN && (store || !handled) && (rc = pump(s)))
        return fail(s, rc);
    if (s->notices.len && s->state != S_CLOSED && (rc = flush_notices(s)))
        return fail(s, rc);
    return 0;
}

/* feed and step: input handled with `busy` set, so callbacks that call
 * back into the session (notify) queue instead of cutting in. */
static int run_input_busy(crdtdb_session *s, size_t applies)
{
    s->peeked = 0; /* what a peek handed out may be handled now */
    s->busy = 1;
    int rc = run_input(s, applies, 0);
    s->busy = 0;
    s->notices.len = 0; /* closed meanwhile: what was queued has no peer */
    return rc;
}

int crdtdb_session_feed(crdtdb_session *s, const uint8_t *data, size_t len)
{
    if (!s || (!data && len))
        return CRDTDB_EINVAL;
    api_enter(s);
    if (s->state == S_CLOSED)
        return api_exit(s, seterr(s, CRDTDB_EBUSY, "the session is closed"));
    if (len && crdtdb__buf_append(&s->in, data, len))
        return api_exit(s, fail(s, seterr(s, CRDTDB_ENOMEM, "out of memory")));
    /* with YIELD, applies wait for crdtdb_session_step: the caller's loop
     * decides when, and serves others in between */
    return api_exit(s, run_input_busy(s, (s->o.flags & CRDTDB_SESSION_YIELD) ? 0 : SIZE_MAX));
}

int crdtdb_session_batch_peek(crdtdb_session *s, const uint8_t **delta, size_t *len)
{
    size_t frame;
    if (!s || !delta || !len || s->busy || !(s->o.flags & CRDTDB_SESSION_YIELD) || !batchable(s))
        return 0;
    const uint8_t *d = batch_frame(s, &frame, len);
    if (d)
        *delta = d;
    s->peeked = d != NULL;
    return s->peeked;
}

int crdtdb_session_batch_done(crdtdb_session *s, const crdtdb_apply_info *info)
{
    if (!s || !info)
        return CRDTDB_EINVAL;
    api_enter(s);
    size_t frame, len;
    if (s->state == S_CLOSED)
        return api_exit(s, seterr(s, CRDTDB_EBUSY, "the session is closed"));
    /* once per peek, with an info of the peer's (its delta's, the caller
     * vouches): a second call would take the next delta unapplied */
    if (!s->peeked || s->busy || !batch_frame(s, &frame, &len) ||
        memcmp(info->sender, s->peer, sizeof s->peer) != 0)
        return api_exit(s, seterr(s, CRDTDB_EINVAL, "no delta handed out waits to be done"));
    s->peeked = 0;
    s->busy = 1;
    int rc = delta_done(s, info, s->received);
    memmove(s->in.data, s->in.data + frame, s->in.len - frame);
    s->in.len -= frame;
    if (!rc && s->purge_err)
        rc = seterr(s, CRDTDB_ENOMEM, "out of memory");
    if (s->notices.len && s->state != S_CLOSED) {
        int frc = flush_notices(s);
        rc = rc ? rc : frc;
    }
    /* then, as a step: what follows up to the next delta, and the pump */
    rc = rc ? fail(s, rc) : run_input(s, 0, 1);
    s->busy = 0;
    s->notices.len = 0;
    return api_exit(s, rc);
}

int crdtdb_session_step(crdtdb_session *s)
{
    if (!s)
        return CRDTDB_EINVAL;
    api_enter(s);
    if (s->state == S_CLOSED)
        return api_exit(s, seterr(s, CRDTDB_EBUSY, "the session is closed"));
    return api_exit(s, run_input_busy(s, 1));
}
