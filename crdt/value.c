/* Untrusted msgpack values: parse, flatten, compare (value.h). */
#include "crdt/value.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crdt/array.h"
#include "crdt/buf.h"
#include "crdt/mpcheck.h"
#include "crdt/path.h"
#include "crdt/record.h"

int crdtdb__err_set(crdtdb__err *e, int code, const char *fmt, ...)
{
    if (e) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(e->msg, sizeof e->msg, fmt, ap);
        va_end(ap);
    }
    return code;
}

void crdtdb__msg_set(char *buf, size_t size, const char *fmt, ...)
{
    if (!buf || size == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, size, fmt, ap);
    va_end(ap);
}

int crdtdb__value_parse(const uint8_t *data, size_t len,
                        const crdtdb__limits *lim, msgpack_zone *zone,
                        msgpack_object *obj, crdtdb__err *e)
{
    if (!data || len == 0)
        return crdtdb__err_set(e, CRDTDB_EBADVALUE, "empty msgpack value");
    if (len > lim->max_value_size)
        return crdtdb__err_set(e, CRDTDB_ETOOBIG,
                               "value of %zu bytes exceeds the limit of %zu",
                               len, lim->max_value_size);
    /* Structure first: msgpack-c would allocate what headers claim. */
    const char *why;
    int rc = crdtdb__mp_check(data, len, lim->max_depth, &why);
    if (rc == CRDTDB_ETOODEEP)
        return crdtdb__err_set(e, rc, "value nested deeper than the limit of %u",
                               lim->max_depth);
    if (rc)
        return crdtdb__err_set(e, rc, "%s", why);
    size_t off = 0;
    if (msgpack_unpack((const char *)data, len, &off, zone, obj) !=
        MSGPACK_UNPACK_SUCCESS)
        return crdtdb__err_set(e, CRDTDB_EBADVALUE, "malformed msgpack value");
    return 0;
}

void crdtdb__flat_init(crdtdb__flat *f) { memset(f, 0, sizeof *f); }

void crdtdb__flat_free(crdtdb__flat *f)
{
    if (!f)
        return;
    crdtdb_buf_free(&f->arena);
    free(f->items);
    memset(f, 0, sizeof *f);
}

static int flat_push(crdtdb__flat *f, crdtdb__flat_item it)
{
    if (crdtdb__array_grow(&f->items, &f->cap, f->n, sizeof *f->items, 16))
        return CRDTDB_ENOMEM;
    f->items[f->n++] = it;
    return 0;
}

/* The current map's path is arena bytes [prefix_off, prefix_off + prefix_len).
 * Each leaf gets its own contiguous copy of its full path, so offsets stay
 * valid as the arena grows. */
static int flatten_map(crdtdb__flat *f, const msgpack_object *m,
                       size_t prefix_off, size_t prefix_len,
                       const crdtdb__limits *lim, crdtdb__err *e)
{
    for (uint32_t i = 0; i < m->via.map.size; i++) {
        const msgpack_object *k = &m->via.map.ptr[i].key;
        const msgpack_object *v = &m->via.map.ptr[i].val;
        if (k->type != MSGPACK_OBJECT_STR)
            return crdtdb__err_set(e, CRDTDB_EBADVALUE,
                                   "record keys must be strings");
        if (!crdtdb__utf8_valid((const uint8_t *)k->via.str.ptr, k->via.str.size))
            return crdtdb__err_set(e, CRDTDB_EBADVALUE,
                                   "record key is not valid UTF-8");
        size_t full_off = f->arena.len;
        if (crdtdb__buf_reserve(&f->arena, prefix_len))
            return CRDTDB_ENOMEM;
        if (prefix_len)
            memcpy(f->arena.data + full_off, f->arena.data + prefix_off,
                   prefix_len);
        f->arena.len += prefix_len;
        if (crdtdb__path_push(&f->arena, k->via.str.ptr, k->via.str.size))
            return CRDTDB_ENOMEM;
        size_t plen = f->arena.len - full_off;
        if (plen > lim->max_path_bytes)
            return crdtdb__err_set(e, CRDTDB_ETOOBIG,
                                   "field path of %zu bytes exceeds the limit "
                                   "of %zu",
                                   plen, lim->max_path_bytes);
        if (v->type == MSGPACK_OBJECT_MAP && v->via.map.size > 0) {
            int rc = flatten_map(f, v, full_off, plen, lim, e);
            if (rc)
                return rc;
            continue;
        }
        if (f->n >= lim->max_fields)
            return crdtdb__err_set(e, CRDTDB_ETOOBIG,
                                   "record has more than %u fields",
                                   (unsigned)lim->max_fields);
        crdtdb__flat_item it = {full_off, (uint32_t)plen, CRDTDB__KIND_MAP, 0, 0};
        if (v->type != MSGPACK_OBJECT_MAP) {
            it.kind = CRDTDB__KIND_VALUE;
            it.val_off = f->arena.len;
            msgpack_packer pk;
            msgpack_packer_init(&pk, &f->arena, crdtdb__buf_write_cb);
            if (msgpack_pack_object(&pk, *v))
                return CRDTDB_ENOMEM;
            it.val_len = (uint32_t)(f->arena.len - it.val_off);
        }
        if (flat_push(f, it))
            return CRDTDB_ENOMEM;
    }
    return 0;
}

int crdtdb__flatten(crdtdb__flat *f, const msgpack_object *map,
                    const crdtdb__limits *lim, crdtdb__err *e)
{
    if (map->type != MSGPACK_OBJECT_MAP)
        return crdtdb__err_set(e, CRDTDB_EBADVALUE,
                               "a record must be a msgpack map");
    return flatten_map(f, map, 0, 0, lim, e);
}

/* ------------------------------------------------------------ compare */

static int is_num(const msgpack_object *o)
{
    return o->type == MSGPACK_OBJECT_POSITIVE_INTEGER ||
           o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER ||
           o->type == MSGPACK_OBJECT_FLOAT32 || o->type == MSGPACK_OBJECT_FLOAT64;
}

/* long double holds every int64/uint64 exactly on the targets we build for
 * (x86-64: 64-bit mantissa); integer pairs compare exactly regardless. */
static int num_cmp(const msgpack_object *a, const msgpack_object *b)
{
    int ai = a->type == MSGPACK_OBJECT_POSITIVE_INTEGER ||
             a->type == MSGPACK_OBJECT_NEGATIVE_INTEGER;
    int bi = b->type == MSGPACK_OBJECT_POSITIVE_INTEGER ||
             b->type == MSGPACK_OBJECT_NEGATIVE_INTEGER;
    if (ai && bi) {
        int an = a->type == MSGPACK_OBJECT_NEGATIVE_INTEGER;
        int bn = b->type == MSGPACK_OBJECT_NEGATIVE_INTEGER;
        if (an != bn)
            return an ? -1 : 1;
        if (an)
            return a->via.i64 < b->via.i64 ? -1 : a->via.i64 > b->via.i64;
        return a->via.u64 < b->via.u64 ? -1 : a->via.u64 > b->via.u64;
    }
    long double x = ai ? (a->type == MSGPACK_OBJECT_NEGATIVE_INTEGER
                              ? (long double)a->via.i64
                              : (long double)a->via.u64)
                       : (long double)a->via.f64;
    long double y = bi ? (b->type == MSGPACK_OBJECT_NEGATIVE_INTEGER
                              ? (long double)b->via.i64
                              : (long double)b->via.u64)
                       : (long double)b->via.f64;
    if (x != x || y != y)
        return CRDTDB__CMP_NE; /* NaN equals nothing and orders nothing */
    return x < y ? -1 : x > y;
}

/* A msgpack timestamp (ext -1 of 4, 8 or 12 bytes): its seconds since the
 * epoch and nanoseconds.  0 for any other value, or nanoseconds out of
 * range (then it is an opaque ext, equal only to the same bytes). */
static int timestamp(const msgpack_object *o, int64_t *sec, uint32_t *nsec)
{
    if (o->type != MSGPACK_OBJECT_EXT || o->via.ext.type != -1)
        return 0;
    const uint8_t *p = (const uint8_t *)o->via.ext.ptr;
    uint64_t v;
    switch (o->via.ext.size) {
    case 4:
        *sec = (int64_t)crdtdb__get_u32(p);
        *nsec = 0;
        return 1;
    case 8:
        v = crdtdb__get_u64(p);
        *nsec = (uint32_t)(v >> 34);
        *sec = (int64_t)(v & 0x3ffffffffULL);
        return *nsec < 1000000000u;
    case 12:
        *nsec = crdtdb__get_u32(p);
        *sec = (int64_t)crdtdb__get_u64(p + 4);
        return *nsec < 1000000000u;
    default:
        return 0;
    }
}

int crdtdb__value_orderable(const msgpack_object *o)
{
    int64_t s;
    uint32_t ns;
    return is_num(o) || o->type == MSGPACK_OBJECT_STR || timestamp(o, &s, &ns);
}

static int bytes_cmp(const char *a, size_t an, const char *b, size_t bn)
{
    size_t n = an < bn ? an : bn;
    int c = n ? memcmp(a, b, n) : 0;
    if (c)
        return c < 0 ? -1 : 1;
    return an < bn ? -1 : an > bn;
}

static int deep_equal(const msgpack_object *a, const msgpack_object *b);

const msgpack_object *crdtdb__map_get(const msgpack_object *m, const char *k,
                                      size_t n)
{
    if (m->type != MSGPACK_OBJECT_MAP)
        return NULL;
    for (uint32_t i = 0; i < m->via.map.size; i++) {
        const msgpack_object *key = &m->via.map.ptr[i].key;
        if (key->type == MSGPACK_OBJECT_STR && key->via.str.size == n &&
            (n == 0 || memcmp(key->via.str.ptr, k, n) == 0))
            return &m->via.map.ptr[i].val;
    }
    return NULL;
}

static int deep_equal(const msgpack_object *a, const msgpack_object *b)
{
    int c = crdtdb__value_cmp(a, b);
    return c == CRDTDB__CMP_EQ;
}

int crdtdb__value_cmp(const msgpack_object *a, const msgpack_object *b)
{
    if (is_num(a) && is_num(b))
        return num_cmp(a, b);
    if (a->type != b->type)
        return CRDTDB__CMP_MISMATCH;
    switch (a->type) {
    case MSGPACK_OBJECT_STR:
        return bytes_cmp(a->via.str.ptr, a->via.str.size, b->via.str.ptr,
                         b->via.str.size);
    case MSGPACK_OBJECT_NIL:
        return CRDTDB__CMP_EQ;
    case MSGPACK_OBJECT_BOOLEAN:
        return a->via.boolean == b->via.boolean ? CRDTDB__CMP_EQ : CRDTDB__CMP_NE;
    case MSGPACK_OBJECT_BIN:
        return bytes_cmp(a->via.bin.ptr, a->via.bin.size, b->via.bin.ptr,
                         b->via.bin.size) == 0 ? CRDTDB__CMP_EQ : CRDTDB__CMP_NE;
    case MSGPACK_OBJECT_EXT: {
        /* timestamps by the instant they hold, whatever their form */
        int64_t as, bs;
        uint32_t an, bn;
        if (timestamp(a, &as, &an) && timestamp(b, &bs, &bn))
            return as != bs ? (as < bs ? -1 : 1) : an != bn ? (an < bn ? -1 : 1) : CRDTDB__CMP_EQ;
        return a->via.ext.type == b->via.ext.type &&
                       bytes_cmp(a->via.ext.ptr, a->via.ext.size, b->via.ext.ptr,
                                 b->via.ext.size) == 0
                   ? CRDTDB__CMP_EQ
                   : CRDTDB__CMP_NE;
    }
    case MSGPACK_OBJECT_ARRAY:
        if (a->via.array.size != b->via.array.size)
            return CRDTDB__CMP_NE;
        for (uint32_t i = 0; i < a->via.array.size; i++)
            if (!deep_equal(&a->via.array.ptr[i], &b->via.array.ptr[i]))
                return CRDTDB__CMP_NE;
        return CRDTDB__CMP_EQ;
    case MSGPACK_OBJECT_MAP:
        if (a->via.map.size != b->via.map.size)
            return CRDTDB__CMP_NE;
        for (uint32_t i = 0; i < a->via.map.size; i++) {
            const msgpack_object *k = &a->via.map.ptr[i].key;
            if (k->type != MSGPACK_OBJECT_STR)
                return CRDTDB__CMP_NE;
            const msgpack_object *bv = crdtdb__map_get(b, k->via.str.ptr,
                                                       k->via.str.size);
            if (!bv || !deep_equal(&a->via.map.ptr[i].val, bv))
                return CRDTDB__CMP_NE;
        }
        return CRDTDB__CMP_EQ;
    default:
        return CRDTDB__CMP_MISMATCH;
    }
}

int crdtdb__utf8_valid(const uint8_t *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        size_t k;
        uint32_t cp;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xe0) == 0xc0) {
            k = 1;
            cp = c & 0x1f;
        } else if ((c & 0xf0) == 0xe0) {
            k = 2;
            cp = c & 0x0f;
        } else if ((c & 0xf8) == 0xf0) {
            k = 3;
            cp = c & 0x07;
        } else {
            return 0;
        }
        if (n - i <= k)
            return 0;
        for (size_t j = 1; j <= k; j++) {
            if ((s[i + j] & 0xc0) != 0x80)
                return 0;
            cp = (cp << 6) | (s[i + j] & 0x3f);
        }
        /* overlong forms, surrogates, beyond U+10FFFF */
        if ((k == 1 && cp < 0x80) || (k == 2 && cp < 0x800) ||
            (k == 3 && cp < 0x10000) || cp > 0x10ffff ||
            (cp >= 0xd800 && cp <= 0xdfff))
            return 0;
        i += k + 1;
    }
    return 1;
}
