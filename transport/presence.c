/* Presence and ephemeral messages: checks and encoders (presence.h). */
#include "transport/presence.h"

#include <msgpack.h>
#include <string.h>

#include "crdt/buf.h"
#include "crdt/mpcheck.h"
#include "crdt/value.h"
#include "crdtdb.h"

/* Reads the header at p of a value known well-formed (crdtdb__mp_check
 * passed): the bytes it and its payload take, the values that follow it,
 * and what it is. */
static size_t head(const uint8_t *p, uint64_t *items, int *is_map, int *is_str)
{
    uint8_t b = p[0];
    *items = 0;
    *is_map = (b & 0xf0) == 0x80 || b == 0xde || b == 0xdf;
    /* containers: fixmap, fixarray, array and map 16/32 */
    *is_str = (b & 0xe0) == 0xa0 || (b >= 0xd9 && b <= 0xdb);
    if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3)
        return 1;
    if ((b & 0xf0) == 0x80 || (b & 0xf0) == 0x90) {
        *items = (uint64_t)(b & 0x0f) << *is_map;
        return 1;
    }
    if ((b & 0xe0) == 0xa0)
        return 1 + (size_t)(b & 0x1f);
    unsigned w;
    uint64_t v = 0;
    switch (b) {
    case 0xc4: case 0xc5: case 0xc6: w = 1u << (b - 0xc4); break;
    case 0xd9: case 0xda: case 0xdb: w = 1u << (b - 0xd9); break;
    case 0xc7: case 0xc8: case 0xc9:
        w = 1u << (b - 0xc7);
        for (unsigned i = 0; i < w; i++)
            v = v << 8 | p[1 + i];
        return 1 + w + 1 + (size_t)v;
    case 0xca: return 5;
    case 0xcb: return 9;
    case 0xcc: case 0xcd: case 0xce: case 0xcf: return 1 + (1u << (b - 0xcc));
    case 0xd0: case 0xd1: case 0xd2: case 0xd3: return 1 + (1u << (b - 0xd0));
    case 0xd4: case 0xd5: case 0xd6: case 0xd7: case 0xd8: return 2 + (1u << (b - 0xd4));
    default: /* 0xdc..0xdf: array or map 16/32 */
        w = (b & 1) ? 4 : 2;
        for (unsigned i = 0; i < w; i++)
            v = v << 8 | p[1 + i];
        *items = v << *is_map;
        return 1 + w;
    }
    for (unsigned i = 0; i < w; i++)
        v = v << 8 | p[1 + i];
    return 1 + w + (size_t)v;
}

int crdtdb__presence_check(const uint8_t *p, size_t len, size_t max, int map, const char **why)
{
    if (len > max) {
        *why = map ? "presence state over max_presence" : "message body over max_presence";
        return CRDTDB_ETOOBIG;
    }
    int rc = crdtdb__mp_check(p, len, CRDTDB_PRESENCE_DEPTH, why);
    if (rc)
        return rc;
    uint64_t items;
    int is_map, is_str;
    (void)head(p, &items, &is_map, &is_str);
    if (map && !is_map) {
        *why = "a presence state is one msgpack map";
        return CRDTDB_EBADVALUE;
    }
    /* every map key a str (mp_check lets any scalar through): the value
     * is well-formed and at most CRDTDB_PRESENCE_DEPTH deep, so it is
     * walked without bounds checks */
    uint64_t pending[CRDTDB_PRESENCE_DEPTH + 1];
    uint8_t in_map[CRDTDB_PRESENCE_DEPTH + 1];
    unsigned depth = 0;
    size_t off = 0;
    pending[0] = 1;
    in_map[0] = 0;
    while (pending[depth] > 0 || depth > 0) {
        if (pending[depth] == 0) {
            depth--;
            continue;
        }
        int is_key = in_map[depth] && pending[depth] % 2 == 0;
        pending[depth]--;
        uint8_t b = p[off];
        off += head(p + off, &items, &is_map, &is_str);
        if (is_key && !is_str) {
            *why = "presence map keys must be strings";
            return CRDTDB_EBADVALUE;
        }
        int container = (b & 0xe0) == 0x80 || (b >= 0xdc && b <= 0xdf);
        if (container && items) {
            pending[++depth] = items;
            in_map[depth] = (uint8_t)is_map;
        }
    }
    return 0;
}

int crdtdb__presence_frames_check(const uint8_t *p, size_t len)
{
    if (!p || !len)
        return CRDTDB_EINVAL;
    for (size_t off = 0; off < len;) {
        if (len - off < 4)
            return CRDTDB_EINVAL;
        const uint8_t *f = p + off;
        size_t n = (size_t)f[0] << 24 | (size_t)f[1] << 16 | (size_t)f[2] << 8 | f[3];
        if (n > len - off - 4)
            return CRDTDB_EINVAL;
        /* [type, ...]: an array header, then the type as a positive fixint */
        const uint8_t *m = f + 4;
        size_t at = n && (m[0] & 0xf0) == 0x90 ? 1
                    : n && m[0] == 0xdc        ? 3
                    : n && m[0] == 0xdd        ? 5
                                               : 0;
        if (!at || at >= n || (m[at] != CRDTDB__M_PRESENCE && m[at] != CRDTDB__M_MESSAGE))
            return CRDTDB_EINVAL;
        off += 4 + n;
    }
    return 0;
}

/* Appends the message built in m to frame as one frame: u32 length, body. */
static int put_frame(crdtdb_buf *frame, const crdtdb_buf *m)
{
    uint8_t h[4] = {(uint8_t)(m->len >> 24), (uint8_t)(m->len >> 16), (uint8_t)(m->len >> 8),
                    (uint8_t)m->len};
    size_t keep = frame->len;
    if (crdtdb__buf_append(frame, h, 4) || crdtdb__buf_append(frame, m->data, m->len)) {
        frame->len = keep;
        return CRDTDB_ENOMEM;
    }
    return 0;
}

/* The fields every [13] and [15] carries: key, user, replica (checked). */
static int pack_source(msgpack_packer *pk, const uint8_t *key, const char *user,
                       const uint8_t *replica)
{
    size_t ulen = user ? strlen(user) : 0;
    if (!key || !user || !replica || ulen > CRDTDB_ID_MAX ||
        !crdtdb__utf8_valid((const uint8_t *)user, ulen))
        return CRDTDB_EINVAL;
    if (msgpack_pack_bin_with_body(pk, key, CRDTDB_PRESENCE_KEY_BYTES) ||
        msgpack_pack_str_with_body(pk, user, ulen) ||
        msgpack_pack_bin_with_body(pk, replica, CRDTDB_REPLICA_ID_BYTES))
        return CRDTDB_ENOMEM;
    return 0;
}

int crdtdb_presence_encode(const crdtdb_presence *p, crdtdb_buf *frame)
{
    if (!p || !frame || !p->version || (!p->state && p->state_len))
        return CRDTDB_EINVAL;
    crdtdb_buf m = CRDTDB_BUF_INIT;
    msgpack_packer pk;
    msgpack_packer_init(&pk, &m, crdtdb__buf_write_cb);
    int rc = msgpack_pack_array(&pk, 6) || msgpack_pack_uint8(&pk, CRDTDB__M_PRESENCE)
                 ? CRDTDB_ENOMEM
                 : pack_source(&pk, p->key, p->user, p->replica);
    if (!rc) {
        int e = msgpack_pack_uint64(&pk, p->version);
        e |= p->state ? msgpack_pack_bin_with_body(&pk, p->state, p->state_len)
                      : msgpack_pack_nil(&pk);
        rc = e ? CRDTDB_ENOMEM : put_frame(frame, &m);
    }
    crdtdb_buf_free(&m);
    return rc;
}

int crdtdb_message_encode(const crdtdb_message *msg, crdtdb_buf *frame)
{
    size_t tlen = msg && msg->to ? strlen(msg->to) : 0;
    if (!msg || !frame || !msg->n || !msg->body || (msg->to && (!tlen || tlen > CRDTDB_ID_MAX)))
        return CRDTDB_EINVAL;
    if (msg->to && !crdtdb__utf8_valid((const uint8_t *)msg->to, tlen))
        return CRDTDB_EINVAL;
    crdtdb_buf m = CRDTDB_BUF_INIT;
    msgpack_packer pk;
    msgpack_packer_init(&pk, &m, crdtdb__buf_write_cb);
    int rc = msgpack_pack_array(&pk, 7) || msgpack_pack_uint8(&pk, CRDTDB__M_MESSAGE)
                 ? CRDTDB_ENOMEM
                 : pack_source(&pk, msg->key, msg->user, msg->replica);
    if (!rc) {
        int e = msgpack_pack_uint64(&pk, msg->n);
        e |= msg->to ? msgpack_pack_str_with_body(&pk, msg->to, tlen) : msgpack_pack_nil(&pk);
        e |= msgpack_pack_bin_with_body(&pk, msg->body, msg->body_len);
        rc = e ? CRDTDB_ENOMEM : put_frame(frame, &m);
    }
    crdtdb_buf_free(&m);
    return rc;
}
