/*
 * libFuzzer target for the sync protocol's receive side (transport/
 * session.c): framing, the hello handshake, and every message after it,
 * through crdtdb_session_feed.
 *
 * Input: byte 0 picks the role (bit 0: server or client session) and the
 * feeding split (bits 1-7: bytes per feed call, 0 meaning all at once); the
 * rest is what the peer sent.  Each input gets a new session on the scratch
 * database "fz" (collections "c", "d"), with the members write filter on a
 * server session, so refused writes are exercised too.  Checked:
 *   - feed returns 0 or an error a peer may cause, never ENOMEM / EIO /
 *     ECORRUPT;
 *   - a closed session has a non-empty errmsg, and feeding it again fails
 *     with EBUSY;
 *   - the queued output stays bounded (max_output plus one delta and a
 *     frame), and every queued frame is a length-prefixed msgpack array;
 *   - pump after the input never fails with anything but a closed session.
 */
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crdtdb_ws.h"
#include "fuzz_util.h"

const char fuzz_name[] = "fuzz_session";

#define NCOLL 3
static const char *const COLLS[NCOLL] = {"c", "d", "_members"};
static crdtdb_env *env; /* the scratch helpers keep its address */
static crdtdb_db *db;
static crdtdb_server_auth auth;
static size_t max_delta;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_keys_init();
    crdtdb_env_options o;
    fuzz_scratch_options(&o);
    o.max_value_size = 1024;
    o.max_path_bytes = 128;
    o.max_delta_size = 16384;
    max_delta = o.max_delta_size;
    fuzz_scratch_env(&o, &env);
    fuzz_scratch_db("fz", COLLS, NCOLL, &db);
    crdtdb_members_policy(&auth);
    return 0;
}

static int filter(void *ctx, crdtdb_txn *txn, const char *coll, const char *id,
                  const uint8_t *old, size_t old_len, const uint8_t *now, size_t now_len)
{
    (void)ctx;
    return auth.authorize_write(auth.ctx, txn, "fuzzer", coll, id, old, old_len, now, now_len);
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
    if (++runs % 1000 == 0)
        fuzz_scratch_reset(); /* keep the database small */
    int server = data[0] & 1;
    size_t step = data[0] >> 1;
    const uint8_t *in = data + 1;
    size_t n = size - 1;
    crdtdb_session_options o;
    crdtdb_session_options_init(&o);
    o.flags = server ? CRDTDB_SESSION_SERVER : 0;
    o.max_message = max_delta + 4096;
    o.max_output = 2 * max_delta;
    if (server)
        o.write_filter = filter;
    crdtdb_session *s;
    CHECK(crdtdb_session_open(db, &o, &s) == 0);
    size_t bound = o.max_output + max_delta + 4096;
    uint8_t *copy = fuzz_dup(in, n); /* ASan sees reads past the end */
    int rc = 0;
    for (size_t off = 0; off < n && !crdtdb_session_closed(s);) {
        size_t k = step ? step : n;
        if (k > n - off)
            k = n - off;
        rc = crdtdb_session_feed(s, copy + off, k);
        CHECK(peer_error(rc));
        check_output(s, bound);
        off += k;
    }
    if (crdtdb_session_closed(s)) {
        CHECK(crdtdb_session_errmsg(s)[0] != 0);
        CHECK(crdtdb_session_feed(s, (const uint8_t *)"x", 1) == CRDTDB_EBUSY);
    } else {
        rc = crdtdb_session_pump(s);
        CHECK(rc == 0);
        check_output(s, bound);
    }
    if (fuzz_debug_enabled())
        fprintf(stderr, "%s: %s rc %d: %s\n", fuzz_name, server ? "server" : "client", rc,
                crdtdb_session_errmsg(s));
    free(copy);
    crdtdb_session_close(s);
    crdtdb_db_set_readonly(db, 0); /* a client granted server-to-client */
    return 0;
}
