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
 *   - pump after the input never fails with anything but a closed session.
 */
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crdtdb_ws.h"
#include "fuzz_util.h"
#include "tests/mem_store.h"

const char fuzz_name[] = "fuzz_session";

static size_t max_delta = 16384;
static crdtdb_session *cur; /* the session under test, for its write filter */

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
    crdtdb_session_options o;
    crdtdb_session_options_init(&o);
    o.flags = server ? CRDTDB_SESSION_SERVER : 0;
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
        if (rc) { /* the message names the failure of this code */
            CHECK(crdtdb_session_closed(s));
            CHECK(crdtdb_session_errmsg(s)[0] != 0);
        }
        size_t len;
        crdtdb_session_output(s, &len);
        CHECK(!len || crdtdb_session_want_write(s));
        check_output(s, bound);
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
        CHECK(crdtdb_session_flush(s) == 0);
        check_output(s, bound);
    }
    if (fuzz_debug_enabled())
        fprintf(stderr, "%s: %s rc %d: %s\n", fuzz_name, server ? "server" : "client", rc,
                crdtdb_session_errmsg(s));
    free(copy);
    crdtdb_session_close(s);
    cur = NULL;
    return 0;
}
