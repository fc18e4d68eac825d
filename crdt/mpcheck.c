/* Allocation-free structural check of msgpack (mpcheck.h). */
#include "crdt/mpcheck.h"

#include "crdtdb.h"

static uint64_t be(const uint8_t *p, unsigned w)
{
    uint64_t v = 0;
    for (unsigned i = 0; i < w; i++)
        v = v << 8 | p[i];
    return v;
}

/* Reads one header at p: sets *skip to the bytes it and its payload take
 * and *items to the values that follow it (container elements). */
static int header(const uint8_t *p, size_t left, uint64_t *skip, uint64_t *items,
                  int *container)
{
    uint8_t b = p[0];
    *items = 0;
    *container = 0;
    if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3) {
        *skip = 1;
        return 0;
    }
    if ((b & 0xf0) == 0x80 || (b & 0xf0) == 0x90) {
        *items = (uint64_t)(b & 0x0f) << ((b & 0xf0) == 0x80);
        *container = 1;
        *skip = 1;
        return 0;
    }
    if ((b & 0xe0) == 0xa0) {
        *skip = 1 + (uint64_t)(b & 0x1f);
        return 0;
    }
    unsigned w; /* width of the length field */
    switch (b) {
    case 0xc4: case 0xc5: case 0xc6: w = 1u << (b - 0xc4); break; /* bin */
    case 0xd9: case 0xda: case 0xdb: w = 1u << (b - 0xd9); break; /* str */
    case 0xc7: case 0xc8: case 0xc9: /* ext: length, type byte, data */
        w = 1u << (b - 0xc7);
        if (left < 1 + w)
            return -1;
        *skip = 1 + w + 1 + be(p + 1, w);
        return 0;
    case 0xca: *skip = 5; return 0;
    case 0xcb: *skip = 9; return 0;
    case 0xcc: case 0xcd: case 0xce: case 0xcf: *skip = 1 + (1u << (b - 0xcc)); return 0;
    case 0xd0: case 0xd1: case 0xd2: case 0xd3: *skip = 1 + (1u << (b - 0xd0)); return 0;
    case 0xd4: case 0xd5: case 0xd6: case 0xd7: case 0xd8: *skip = 2 + (1u << (b - 0xd4)); return 0;
    case 0xdc: case 0xdd: case 0xde: case 0xdf: {
        w = (b & 1) ? 4 : 2;
        if (left < 1 + w)
            return -1;
        *items = be(p + 1, w) << (b >= 0xde);
        *container = 1;
        *skip = 1 + w;
        return 0;
    }
    default:
        return -1; /* 0xc1 */
    }
    if (left < 1 + w)
        return -1;
    *skip = 1 + w + be(p + 1, w);
    return 0;
}

int crdtdb__mp_check(const uint8_t *p, size_t len, unsigned max_depth,
                     const char **why)
{
    return crdtdb__mp_check_items(p, len, max_depth, UINT64_MAX, why);
}

int crdtdb__mp_check_items(const uint8_t *p, size_t len, unsigned max_depth,
                           uint64_t max_items, const char **why)
{
    uint64_t pending[65]; /* values still owed at each open level */
    uint8_t is_map[65];
    unsigned depth = 0;
    size_t off = 0;
    if (max_depth > 64)
        max_depth = 64;
    pending[0] = 1;
    is_map[0] = 0;
    while (pending[depth] > 0 || depth > 0) {
        if (pending[depth] == 0) {
            depth--;
            continue;
        }
        if (off >= len) {
            *why = "truncated msgpack value";
            return CRDTDB_EBADVALUE;
        }
        uint64_t skip, items;
        int container;
        if (header(p + off, len - off, &skip, &items, &container) ||
            skip > len - off) {
            *why = p[off] == 0xc1 ? "malformed msgpack value" : "truncated msgpack value";
            return CRDTDB_EBADVALUE;
        }
        /* a map's elements alternate key, value: keys come at even counts */
        int is_key = is_map[depth] && pending[depth] % 2 == 0;
        pending[depth]--;
        off += (size_t)skip;
        if (!container)
            continue;
        if (is_key) { /* nothing needs them, and JSON would square their size */
            *why = "map keys must be scalars";
            return CRDTDB_EBADVALUE;
        }
        /* every element needs at least one byte */
        if (items > len - off) {
            *why = "msgpack container claims more elements than bytes";
            return CRDTDB_EBADVALUE;
        }
        if (items > max_items) {
            *why = "msgpack containers hold more elements than allowed";
            return CRDTDB_ETOOBIG;
        }
        max_items -= items;
        if (depth + 1 > max_depth) {
            *why = "msgpack value nested too deeply";
            return CRDTDB_ETOODEEP;
        }
        uint8_t b = p[off - (size_t)skip];
        pending[++depth] = items;
        is_map[depth] = (b & 0xf0) == 0x80 || b == 0xde || b == 0xdf;
    }
    if (off != len) {
        *why = "trailing bytes after msgpack value";
        return CRDTDB_EBADVALUE;
    }
    return 0;
}
