/* Presence and ephemeral messages: checks and encoders (presence.h). */
#include "transport/presence.h"

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

/*
 * The encoders write msgpack by hand, straight into the frame: the hub
 * encodes each relayed change once per update, and a packer's callback
 * per field cost more than the rest of the encoding.  The forms are the
 * shortest, as msgpack-c's packer writes them (str 8 included).
 */
#define HEAD_MAX 9u /* the longest header written: uint 64 */

static uint8_t *put_be(uint8_t *o, uint64_t v, unsigned bytes)
{
    for (unsigned i = bytes; i-- > 0; v >>= 8)
        o[i] = (uint8_t)v;
    return o + bytes;
}

static uint8_t *put_uint(uint8_t *o, uint64_t v)
{
    if (v < 0x80) {
        *o++ = (uint8_t)v;
        return o;
    }
    unsigned w = v < 1ull << 8 ? 0 : v < 1ull << 16 ? 1 : v < 1ull << 32 ? 2 : 3;
    *o++ = (uint8_t)(0xcc + w);
    return put_be(o, v, 1u << w);
}

/* A str (base 0xd9: str 8/16/32, with fixstr) or bin (0xc4) header, then
 * the bytes. */
static uint8_t *put_raw(uint8_t *o, uint8_t base, const void *p, size_t n)
{
    if (base == 0xd9 && n < 32) {
        *o++ = (uint8_t)(0xa0 | n);
    } else {
        unsigned w = n < 1u << 8 ? 0 : n < 1u << 16 ? 1 : 2;
        *o++ = (uint8_t)(base + w);
        o = put_be(o, n, 1u << w);
    }
    if (n)
        memcpy(o, p, n);
    return o + n;
}

/* Room in frame for a frame of at most body bytes; its start. */
static uint8_t *frame_open(crdtdb_buf *frame, size_t body)
{
    if (crdtdb__buf_reserve(frame, 4 + body))
        return NULL;
    return frame->data + frame->len;
}

/* The frame written from start to end: its length in front, appended. */
static void frame_close(crdtdb_buf *frame, uint8_t *start, uint8_t *end)
{
    size_t n = (size_t)(end - start) - 4;
    put_be(start, n, 4);
    frame->len += (size_t)(end - start);
}

/* The fields every [13] and [15] carries: key, user, replica (checked). */
static int source_ok(const uint8_t *key, const char *user, const uint8_t *replica, size_t *ulen)
{
    *ulen = user ? strlen(user) : 0;
    if (!key || !user || !replica || *ulen > CRDTDB_ID_MAX ||
        !crdtdb__utf8_valid((const uint8_t *)user, *ulen))
        return CRDTDB_EINVAL;
    return 0;
}

static uint8_t *put_source(uint8_t *o, const uint8_t *key, const char *user, size_t ulen,
                           const uint8_t *replica)
{
    o = put_raw(o, 0xc4, key, CRDTDB_PRESENCE_KEY_BYTES);
    o = put_raw(o, 0xd9, user, ulen);
    return put_raw(o, 0xc4, replica, CRDTDB_REPLICA_ID_BYTES);
}

/* Header bytes of a [13] or [15] besides its variable parts' bodies. */
#define SOURCE_ROOM (3u * 5u + CRDTDB_PRESENCE_KEY_BYTES + CRDTDB_REPLICA_ID_BYTES)

int crdtdb_presence_encode(const crdtdb_presence *p, crdtdb_buf *frame)
{
    size_t ulen;
    if (!p || !frame || !p->version || (!p->state && p->state_len) ||
        source_ok(p->key, p->user, p->replica, &ulen))
        return CRDTDB_EINVAL;
    if (p->state_len > UINT32_MAX)
        return CRDTDB_ENOMEM; /* no bin holds it */
    uint8_t *start = frame_open(frame, 2 + SOURCE_ROOM + ulen + HEAD_MAX + 5 + p->state_len);
    if (!start)
        return CRDTDB_ENOMEM;
    uint8_t *o = start + 4;
    *o++ = 0x96; /* [13, key, user, replica, version, state] */
    *o++ = CRDTDB__M_PRESENCE;
    o = put_source(o, p->key, p->user, ulen, p->replica);
    o = put_uint(o, p->version);
    if (p->state)
        o = put_raw(o, 0xc4, p->state, p->state_len);
    else
        *o++ = 0xc0;
    frame_close(frame, start, o);
    return 0;
}

int crdtdb_message_encode(const crdtdb_message *msg, crdtdb_buf *frame)
{
    size_t tlen = msg && msg->to ? strlen(msg->to) : 0;
    size_t ulen;
    if (!msg || !frame || !msg->n || !msg->body || (msg->to && (!tlen || tlen > CRDTDB_ID_MAX)) ||
        source_ok(msg->key, msg->user, msg->replica, &ulen))
        return CRDTDB_EINVAL;
    if (msg->to && !crdtdb__utf8_valid((const uint8_t *)msg->to, tlen))
        return CRDTDB_EINVAL;
    if (msg->body_len > UINT32_MAX)
        return CRDTDB_ENOMEM;
    uint8_t *start =
        frame_open(frame, 2 + SOURCE_ROOM + ulen + HEAD_MAX + 5 + tlen + 5 + msg->body_len);
    if (!start)
        return CRDTDB_ENOMEM;
    uint8_t *o = start + 4;
    *o++ = 0x97; /* [15, key, user, replica, n, to, body] */
    *o++ = CRDTDB__M_MESSAGE;
    o = put_source(o, msg->key, msg->user, ulen, msg->replica);
    o = put_uint(o, msg->n);
    if (msg->to)
        o = put_raw(o, 0xd9, msg->to, tlen);
    else
        *o++ = 0xc0;
    o = put_raw(o, 0xc4, msg->body, msg->body_len);
    frame_close(frame, start, o);
    return 0;
}
