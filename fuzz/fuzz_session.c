/*
 * libFuzzer target for the sync protocol engine (transport/session.c):
 * framing, the hello handshake, and every message after it, through
 * crdtdb_session_feed.  The session runs on the in-memory store of
 * tests/mem_store.c, not LMDB: this fuzzes the engine only (fuzz_apply
 * and fuzz_record fuzz storage), so it runs fast and never needs a
 * directory.  The store reads a delta's outcome from its signature bytes
 * (applied, refused as stamped ahead or too costly, a bad signature, or a
 * record put to the write filter), so all of them are a few bytes away.
 *
 * Input: byte 0 picks the role (bit 0: server or client session) and the
 * feeding split (bits 1-7: bytes per feed call, 0 meaning all at once); the
 * rest is what the peer sent.  Each input gets a new session on a new
 * store of database "fz" holding 5 changes of our own; a server session
 * has a write filter that refuses collection "d" and, like the WebSocket
 * server's, notifies the peer from inside the apply (queued by the
 * session); a client session every other input has a read filter.
 * Checked:
 *   - feed returns 0 or an error a peer may cause, never ENOMEM / EIO /
 *     ECORRUPT;
 *   - a failed feed leaves an errmsg naming the code's failure, the
 *     session closed, and feeding it again fails with EBUSY;
 *   - the queued output stays bounded (max_output plus one delta and a
 *     frame), and every queued frame is a length-prefixed msgpack array;
 *   - want_write is 1 whenever output waits;
 *   - pump after the input never fails with anything but a closed session;
 *   - presence and messages (frames 12-15): every PRESENCE or MESSAGE event
 *     carries what the protocol promises (key and user NULL only for a [12]
 *     or [14] at a server, user and to NUL-terminated and at most
 *     CRDTDB_ID_MAX, a state or body that passes the checks); a relayed
 *     one re-encodes and queues (crdtdb_session_send_frame); once open, a
 *     client sets the input as its state and sends it as a message, which
 *     succeed or are refused for their content only, and a server may not;
 *   - collection (RESYNC, message 16): the store's collection hooks are the
 *     harness's, read from the peer's replica id in its hello (byte 0 with
 *     bit 7: a resync from it was cut, CRDTDB_PEER_RESYNC, at a client;
 *     byte 1 mod 8: our collection floor for it, 0 none), so a server
 *     resyncs a SINCE from below the floor and a client takes a RESYNC;
 *     each delta of a resync notes a record name made from its last
 *     bytes, and at the end of the resync every name noted since the last
 *     RESYNC must be held (2 when noted with its add or remove), and a
 *     name never noted not.  Byte 0 with bit 6 at a server: the peer left
 *     (CRDTDB_PEER_LEFT), so any SINCE is resynced when there is a floor;
 *   - LEAVE (message 17) reaches the store only at a server, once, and the
 *     session is closed after it;
 *   - early relay: after a feed whose last byte is odd, our log grows by
 *     one change and crdtdb_session_pump_early runs
 *     as the server's write hook would: it returns 0 or 1, only 0 at a
 *     client, 1 exactly when it queued output, and that output is framed.
 */
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crdt/buf.h"
#include "crdtdb_ws.h"
#include "fuzz_util.h"
#include "tests/mem_store.h"
#include "transport/presence.h"

const char fuzz_name[] = "fuzz_session";

static size_t max_delta = 16384;
static crdtdb_session *cur; /* the session under test, for its write filter */
static int cur_server, cur_ready; /* its role; READY came */

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    return 0;
}

/* The write filter: collection "d" is refused, and the peer told at once
 * (queued by the session: it is inside its apply). */
static int filter(void *ctx, crdtdb_txn *txn, const char *coll, const char *id,
                  const uint8_t *old, size_t old_len, const uint8_t *now, size_t now_len)
{
    (void)ctx;
    (void)txn;
    (void)old;
    (void)old_len;
    (void)now;
    (void)now_len;
    if (strcmp(coll, "d") != 0)
        return 0;
    char msg[CRDTDB_ID_MAX * 2 + 64];
    snprintf(msg, sizeof msg, "write to '%s' in '%s' refused", id, coll);
    CHECK(crdtdb_session_notify(cur, CRDTDB_EROFS, msg) == 0);
    return 1;
}

/* The read filter: records named "hidden" are not the peer's to see. */
static int read_filter(void *ctx, crdtdb_txn *txn, const char *coll, const char *id,
                       const uint8_t *value, size_t len)
{
    (void)ctx;
    (void)txn;
    (void)coll;
    (void)value;
    (void)len;
    return strcmp(id, "hidden") != 0;
}

/* ------------------------------------------------------------ collection */

/* The names the resync under way noted ("c\0<id>\0" and the flag byte). */
#define NOTED_MAX 64
static struct {
    char id[NOTED_MAX][9];
    int held[NOTED_MAX];
    size_t n;
    int on;        /* between peer_resync(1) and resync_end */
    unsigned ends; /* resync_end calls */
    int left;      /* peer_leave was called */
} col;

static int c_horizon(void *ctx, const uint8_t *peer, uint64_t *floor, uint64_t *stamp)
{
    (void)ctx;
    *floor = peer[1] % 8;
    *stamp = 1700000000000ull << 16;
    return 0;
}

static int c_peer_flags(void *ctx, const uint8_t *peer, unsigned *flags)
{
    (void)ctx;
    /* a store marks a peer so only when it took a RESYNC: as a client;
     * LEFT only a server's client (a LEAVE) */
    *flags = !cur_server && peer[0] & 0x80 ? CRDTDB_PEER_RESYNC : 0;
    if (cur_server && peer[0] & 0x40)
        *flags |= CRDTDB_PEER_LEFT;
    return 0;
}

/* A LEAVE: only a server hears one, and only once; its session is over.
 * A left peer is back (left 0) only at a server too. */
static int c_peer_leave(void *ctx, const uint8_t *peer, int left)
{
    (void)ctx;
    (void)peer;
    CHECK(cur_server);
    if (!left)
        return 0;
    CHECK(!col.left);
    col.left = 1;
    return 0;
}

static int c_peer_resync(void *ctx, const uint8_t *peer, int on, uint64_t stamp)
{
    (void)ctx;
    (void)peer;
    (void)stamp;
    CHECK(!cur_server); /* only a client takes a RESYNC */
    if (on) {
        col.on = 1;
        col.n = 0; /* a new RESYNC starts the names over */
        memset(col.held, 0, sizeof col.held);
    }
    return 0;
}

/* A record name from the delta's last 4 bytes, 'b' or 'l' from its 5th
 * last: the same delta twice gives the same name. */
static int c_resync_keys(void *ctx, const uint8_t *delta, size_t len, crdtdb_buf *keys)
{
    (void)ctx;
    CHECK(col.on);
    uint8_t b[5] = {0};
    for (size_t i = 0; i < 5 && i < len; i++)
        b[4 - i] = delta[len - 1 - i];
    char id[9];
    snprintf(id, sizeof id, "%02x%02x%02x%02x", b[1], b[2], b[3], b[4]);
    int held = b[0] & 1 ? 2 : 1;
    if (crdtdb__buf_append(keys, "c", 2) || crdtdb__buf_append(keys, id, 9) ||
        crdtdb__buf_append(keys, held == 2 ? "b" : "l", 1))
        return CRDTDB_ENOMEM;
    size_t k = 0;
    while (k < col.n && strcmp(col.id[k], id) != 0)
        k++;
    if (k == col.n && col.n < NOTED_MAX)
        memcpy(col.id[col.n++], id, 9);
    if (k < col.n && held > col.held[k])
        col.held[k] = held;
    return 0;
}

static int c_resync_end(void *ctx, const uint8_t *peer, uint64_t stamp, uint64_t acked,
                        int (*held)(void *hctx, const char *coll, const char *id), void *hctx,
                        unsigned flags, size_t *n)
{
    (void)ctx;
    (void)peer;
    (void)stamp;
    (void)acked;
    (void)flags;
    CHECK(col.on && !cur_server);
    for (size_t k = 0; k < col.n; k++)
        CHECK(held(hctx, "c", col.id[k]) == col.held[k]);
    CHECK(held(hctx, "c", "never") == 0 && held(hctx, "d", col.n ? col.id[0] : "x") == 0);
    col.on = 0;
    col.n = 0;
    memset(col.held, 0, sizeof col.held);
    col.ends++;
    *n = 0;
    return 0;
}

/* A string of an event: NUL-terminated, at most CRDTDB_ID_MAX bytes. */
static void check_id(const char *p, size_t min)
{
    size_t n = strlen(p);
    CHECK(n >= min && n <= CRDTDB_ID_MAX);
}

/* The events: presence and messages as the protocol has them; a relayed
 * one is queued back, encoded again (a server's fan-out). */
static void on_event(void *ctx, const crdtdb_session_event *ev)
{
    (void)ctx;
    const char *why;
    crdtdb_buf f = CRDTDB_BUF_INIT;
    if (ev->type == CRDTDB_SESSION_READY)
        cur_ready = 1;
    if (ev->type == CRDTDB_SESSION_PRESENCE) {
        const crdtdb_presence *p = ev->presence;
        CHECK(p && p->replica);
        if (p->state)
            CHECK(crdtdb__presence_check(p->state, p->state_len, CRDTDB_PRESENCE_MAX, 1, &why) ==
                  0);
        if (!p->key) { /* a [12]: at a server only */
            CHECK(cur_server && !p->user && p->version == 0);
            return;
        }
        CHECK(p->user && p->version >= 1);
        check_id(p->user, 0);
        CHECK(crdtdb_presence_encode(p, &f) == 0);
    } else if (ev->type == CRDTDB_SESSION_MESSAGE) {
        const crdtdb_message *m = ev->msg;
        CHECK(m && m->replica && m->body);
        CHECK(crdtdb__presence_check(m->body, m->body_len, CRDTDB_PRESENCE_MAX, 0, &why) == 0);
        if (m->to)
            check_id(m->to, 1);
        if (!m->key) { /* a [14]: at a server only */
            CHECK(cur_server && !m->user && m->n == 0);
            return;
        }
        CHECK(m->user && m->n >= 1);
        check_id(m->user, 0);
        CHECK(crdtdb_message_encode(m, &f) == 0);
    } else {
        return;
    }
    CHECK(crdtdb__presence_frames_check(f.data, f.len) == 0);
    CHECK(crdtdb_session_send_frame(cur, f.data, f.len) == 0);
    crdtdb_buf_free(&f);
}

/* What a local state or body may be refused for: its content. */
static int content_error(int rc)
{
    return rc == 0 || rc == CRDTDB_ETOOBIG || rc == CRDTDB_EBADVALUE || rc == CRDTDB_ETOODEEP;
}

/* Every complete frame queued is [u32 length][msgpack array]. */
static void check_output(crdtdb_session *s, size_t bound)
{
    size_t len;
    const uint8_t *p = crdtdb_session_output(s, &len);
    CHECK(len <= bound);
    size_t off = 0;
    while (len - off >= 4) {
        size_t n = (size_t)p[off] << 24 | (size_t)p[off + 1] << 16 | (size_t)p[off + 2] << 8 |
                   p[off + 3];
        CHECK(n <= len - off - 4);
        msgpack_zone z;
        CHECK(msgpack_zone_init(&z, 256));
        msgpack_object o;
        size_t used = 0;
        CHECK(msgpack_unpack((const char *)p + off + 4, n, &used, &z, &o) ==
              MSGPACK_UNPACK_SUCCESS);
        CHECK(used == n && o.type == MSGPACK_OBJECT_ARRAY && o.via.array.size >= 1);
        msgpack_zone_destroy(&z);
        off += 4 + n;
    }
    CHECK(off == len);
    crdtdb_session_consume(s, len);
}

/* What a peer's bytes may cause; never a failure of ours. */
static int peer_error(int rc)
{
    return rc == 0 || rc == CRDTDB_EBADVALUE || rc == CRDTDB_ETOOBIG || rc == CRDTDB_EVERSION ||
           rc == CRDTDB_EINVAL || rc == CRDTDB_EROFS || rc == CRDTDB_EBADSIG ||
           rc == CRDTDB_EBADID || rc == CRDTDB_ETOODEEP || rc == CRDTDB_ENOCOLL ||
           rc == CRDTDB_ECLOCK || rc == CRDTDB_EFORGED || rc == CRDTDB_EFORK ||
           rc == CRDTDB_EDENIED || rc == CRDTDB_EMAPFULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static unsigned runs;
    if (size < 1)
        return 0;
    runs++;
    int server = data[0] & 1;
    size_t step = data[0] >> 1;
    const uint8_t *in = data + 1;
    size_t n = size - 1;
    mem_store m;
    mem_store_init(&m, "fz", 5);
    m.max_delta_size = max_delta;
    crdtdb__session_store st;
    mem_store_bind(&m, &st);
    st.horizon = c_horizon;
    st.peer_flags = c_peer_flags;
    st.peer_resync = c_peer_resync;
    st.peer_leave = c_peer_leave;
    st.resync_keys = c_resync_keys;
    st.resync_end = c_resync_end;
    memset(&col, 0, sizeof col);
    crdtdb_session_options o;
    crdtdb_session_options_init(&o);
    o.flags = server ? CRDTDB_SESSION_SERVER : 0;
    o.on_event = on_event;
    cur_server = server;
    cur_ready = 0;
    o.max_message = max_delta + 4096;
    o.max_output = 2 * max_delta;
    if (server)
        o.write_filter = filter;
    else if (runs % 2)
        o.read_filter = read_filter;
    crdtdb_session *s;
    CHECK(crdtdb__session_open_store(&st, &o, &s) == 0);
    cur = s;
    size_t bound = o.max_output + max_delta + 4096;
    uint8_t *copy = fuzz_dup(in, n); /* ASan sees reads past the end */
    int rc = 0;
    for (size_t off = 0; off < n && !crdtdb_session_closed(s);) {
        size_t k = step ? step : n;
        if (k > n - off)
            k = n - off;
        rc = crdtdb_session_feed(s, copy + off, k);
        if (!peer_error(rc))
            fprintf(stderr, "%s: rc %d: %s\n", fuzz_name, rc, crdtdb_session_errmsg(s));
        CHECK(peer_error(rc));
        if (rc && fuzz_debug_enabled())
            fprintf(stderr, "%s: feed at %zu: rc %d: %s\n", fuzz_name, off, rc,
                    crdtdb_session_errmsg(s));
        if (rc) { /* the message names the failure of this code */
            CHECK(crdtdb_session_closed(s));
            CHECK(crdtdb_session_errmsg(s)[0] != 0);
        }
        size_t len;
        crdtdb_session_output(s, &len);
        CHECK(!len || crdtdb_session_want_write(s));
        check_output(s, bound);
        if (!crdtdb_session_closed(s) && (copy[off + k - 1] & 1)) {
            /* a write: our log grows by one change (mem_store makes an
             * odd-numbered one the peer's own, which goes as a skip), and a
             * server pumps it early from inside the write (the output was
             * just taken, so nothing is queued) */
            uint64_t from = m.last++;
            int erc = crdtdb_session_pump_early(s, from);
            crdtdb_session_output(s, &len);
            CHECK(erc == 0 || erc == 1);
            CHECK(server || erc == 0);
            CHECK(erc == 1 ? len > 0 && crdtdb_session_want_write(s) : len == 0);
            check_output(s, bound);
        }
        off += k;
        m.now_ms += 700; /* time passes: the clock retry comes due */
    }
    if (crdtdb_session_closed(s)) {
        CHECK(crdtdb_session_errmsg(s)[0] != 0);
        CHECK(crdtdb_session_feed(s, (const uint8_t *)"x", 1) == CRDTDB_EBUSY);
    } else {
        rc = crdtdb_session_pump(s);
        CHECK(rc == 0);
        check_output(s, bound);
        /* the input as this end's own presence and message */
        size_t k = n < 2 * CRDTDB_PRESENCE_MAX ? n : 2 * CRDTDB_PRESENCE_MAX;
        if (k) {
            int prc = crdtdb_session_presence_set(s, copy, k);
            int mrc = crdtdb_session_message_send(s, runs % 2 ? "bob" : NULL, copy, k);
            if (!cur_ready || server) {
                CHECK(prc == CRDTDB_EINVAL && mrc == CRDTDB_EINVAL);
            } else {
                CHECK(content_error(prc) && content_error(mrc));
                CHECK(prc != 0 || mrc == 0); /* a valid state is a valid body */
            }
        }
        (void)crdtdb__presence_frames_check(copy, n);
        check_output(s, bound);
        /* a transport taking the acks (crdtdb_session_acks_take): once,
         * and a stable ack never past the peer's ack */
        crdtdb_peer_ack pa;
        int took = crdtdb_session_acks_take(s, &pa);
        CHECK(took == 0 || took == 1);
        if (took == 1) {
            CHECK(pa.stable <= pa.acked);
            CHECK(crdtdb_session_acks_take(s, &pa) == 0);
        }
        CHECK(crdtdb_session_flush(s) == 0);
        check_output(s, bound);
        /* a client's LEAVE waits for the server's answer; a server has
         * none to send */
        if (server || !cur_ready) {
            CHECK(crdtdb_session_leave(s) == CRDTDB_EINVAL);
        } else {
            CHECK(crdtdb_session_leave(s) == 0);
            CHECK(!crdtdb_session_closed(s) && !crdtdb_session_left(s));
            check_output(s, bound);
            /* the input again, of which a leaving client takes only an
             * answer: LEAVE (left), CLOSE or ERROR (closed, not left) */
            rc = crdtdb_session_feed(s, copy, n);
            CHECK(peer_error(rc));
            CHECK(!crdtdb_session_left(s) || crdtdb_session_closed(s));
            check_output(s, bound);
        }
    }
    CHECK(!col.left || crdtdb_session_closed(s));
    if (fuzz_debug_enabled())
        fprintf(stderr, "%s: %s rc %d: %s (resyncs ended: %u)\n", fuzz_name,
                server ? "server" : "client", rc, crdtdb_session_errmsg(s), col.ends);
    free(copy);
    crdtdb_session_close(s);
    cur = NULL;
    return 0;
}
