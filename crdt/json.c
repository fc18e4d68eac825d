/*
 * JSON at the edges: JSON text -> msgpack through jansson, and msgpack ->
 * compact JSON through a small streaming reader of our own.
 *
 * The reader does not use msgpack_unpack(): msgpack-c allocates
 * count * sizeof(msgpack_object) as soon as it sees a container header, so
 * five hostile bytes (0xdd ff ff ff ff) would ask for 64 GiB.  Streaming
 * straight from the bytes costs nothing per declared element until the
 * element is actually present.
 */
#include "crdt/buf.h"
#include "crdt/value.h"

#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <msgpack.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* msgpack-c refuses to unpack more nested containers than this, so neither
 * direction produces or accepts deeper values. */
#define JSON_DEPTH_MAX 32u

/* ------------------------------------------------------ JSON -> msgpack */

/* Packs v; `left` is how many more containers may nest.  0 or an error. */
static int pack(msgpack_packer *pk, json_t *v, unsigned left)
{
    int rc = 0;
    switch (json_typeof(v)) {
    case JSON_OBJECT: {
        const char *key;
        size_t klen;
        json_t *item;
        if (left == 0)
            return CRDTDB_ETOODEEP;
        if (msgpack_pack_map(pk, json_object_size(v)))
            return CRDTDB_ENOMEM;
        json_object_keylen_foreach(v, key, klen, item)
        {
            if (msgpack_pack_str(pk, klen) ||
                msgpack_pack_str_body(pk, key, klen))
                return CRDTDB_ENOMEM;
            if ((rc = pack(pk, item, left - 1)) != 0)
                return rc;
        }
        return 0;
    }
    case JSON_ARRAY: {
        size_t n = json_array_size(v);
        if (left == 0)
            return CRDTDB_ETOODEEP;
        if (msgpack_pack_array(pk, n))
            return CRDTDB_ENOMEM;
        for (size_t i = 0; i < n; i++)
            if ((rc = pack(pk, json_array_get(v, i), left - 1)) != 0)
                return rc;
        return 0;
    }
    case JSON_STRING: {
        size_t n = json_string_length(v);
        rc = msgpack_pack_str(pk, n) ||
             msgpack_pack_str_body(pk, json_string_value(v), n);
        break;
    }
    case JSON_INTEGER:
        rc = msgpack_pack_long_long(pk, json_integer_value(v));
        break;
    case JSON_REAL:
        rc = msgpack_pack_double(pk, json_real_value(v));
        break;
    case JSON_TRUE:
        rc = msgpack_pack_true(pk);
        break;
    case JSON_FALSE:
        rc = msgpack_pack_false(pk);
        break;
    case JSON_NULL:
        rc = msgpack_pack_nil(pk);
        break;
    }
    return rc ? CRDTDB_ENOMEM : 0;
}

int crdtdb_json_to_msgpack(const char *json, size_t len, unsigned max_depth,
                           crdtdb_buf *out, char *errmsg, size_t errmsg_size)
{
    crdtdb__msg_set(errmsg, errmsg_size, "%s", "");
    if (!out || (!json && len)) {
        crdtdb__msg_set(errmsg, errmsg_size, "%s", crdtdb_strerror(CRDTDB_EINVAL));
        return CRDTDB_EINVAL;
    }
    out->len = 0;
    if (max_depth == 0 || max_depth > JSON_DEPTH_MAX)
        max_depth = JSON_DEPTH_MAX;

    /* Duplicate keys would silently lose data; NUL is fine in values. */
    json_error_t jerr;
    json_t *root = json_loadb(json ? json : "", len,
                              JSON_DECODE_ANY | JSON_REJECT_DUPLICATES |
                                  JSON_ALLOW_NUL,
                              &jerr);
    if (!root) {
        switch (json_error_code(&jerr)) {
        case json_error_stack_overflow:
            crdtdb__msg_set(errmsg, errmsg_size, "JSON nesting exceeds max depth %u",
                    max_depth);
            return CRDTDB_ETOODEEP;
        case json_error_out_of_memory:
            crdtdb__msg_set(errmsg, errmsg_size, "%s",
                    crdtdb_strerror(CRDTDB_ENOMEM));
            return CRDTDB_ENOMEM;
        default:
            crdtdb__msg_set(errmsg, errmsg_size,
                    "invalid JSON at line %d column %d: %s", jerr.line,
                    jerr.column, jerr.text);
            return CRDTDB_EBADVALUE;
        }
    }

    msgpack_packer pk;
    msgpack_packer_init(&pk, out, crdtdb__buf_write_cb);
    int rc = pack(&pk, root, max_depth);
    json_decref(root);
    if (rc) {
        out->len = 0;
        if (rc == CRDTDB_ETOODEEP)
            crdtdb__msg_set(errmsg, errmsg_size, "JSON nesting exceeds max depth %u",
                    max_depth);
        else
            crdtdb__msg_set(errmsg, errmsg_size, "%s", crdtdb_strerror(rc));
    }
    return rc;
}

/* ------------------------------------------------------ msgpack -> JSON */

typedef struct reader {
    const uint8_t *p;
    const uint8_t *end;
    int in_key; /* rendering a non-string key's JSON text */
} reader;

/* Consumes n bytes, pointing *at to them.  EBADVALUE when truncated. */
static int take(reader *r, size_t n, const uint8_t **at)
{
    if ((size_t)(r->end - r->p) < n)
        return CRDTDB_EBADVALUE;
    *at = r->p;
    r->p += n;
    return 0;
}

/* The big-endian unsigned integer of `width` (1, 2, 4, 8) bytes at p. */
static uint64_t be_uint(const uint8_t *p, size_t width)
{
    uint64_t v = 0;
    for (size_t i = 0; i < width; i++)
        v = v << 8 | p[i];
    return v;
}

/* Consumes a big-endian unsigned integer of `width` (1, 2, 4, 8) bytes. */
static int take_uint(reader *r, size_t width, uint64_t *v)
{
    const uint8_t *p;
    if (take(r, width, &p))
        return CRDTDB_EBADVALUE;
    *v = be_uint(p, width);
    return 0;
}

static int put(crdtdb_buf *o, const char *s)
{
    return crdtdb__buf_append(o, s, strlen(s));
}

/* Length of the valid UTF-8 sequence at s (1..4), or 0 if invalid: bad
 * lead or continuation bytes, overlong forms, surrogates, > U+10FFFF. */
static size_t utf8_seq(const uint8_t *s, size_t n)
{
    uint32_t cp, min;
    size_t len;
    if (s[0] < 0x80)
        return 1;
    if ((s[0] & 0xe0) == 0xc0)
        len = 2, cp = s[0] & 0x1f, min = 0x80;
    else if ((s[0] & 0xf0) == 0xe0)
        len = 3, cp = s[0] & 0x0f, min = 0x800;
    else if ((s[0] & 0xf8) == 0xf0)
        len = 4, cp = s[0] & 0x07, min = 0x10000;
    else
        return 0;
    if (n < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = cp << 6 | (s[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return len;
}

static int put_escape(crdtdb_buf *o, uint8_t c)
{
    char e[8];
    switch (c) {
    case '"': return put(o, "\\\"");
    case '\\': return put(o, "\\\\");
    case '\b': return put(o, "\\b");
    case '\f': return put(o, "\\f");
    case '\n': return put(o, "\\n");
    case '\r': return put(o, "\\r");
    case '\t': return put(o, "\\t");
    }
    snprintf(e, sizeof e, "\\u%04x", c);
    return put(o, e);
}

/* Writes s as a JSON string.  Valid UTF-8 is copied as is; each byte that
 * is not part of a valid sequence becomes U+FFFD, so output is always
 * valid JSON. */
static int put_str(crdtdb_buf *o, const uint8_t *s, size_t n)
{
    size_t i = 0, run = 0;
    int rc = put(o, "\"");
    while (!rc && i < n) {
        size_t k = utf8_seq(s + i, n - i);
        if (k && s[i] >= 0x20 && s[i] != '"' && s[i] != '\\') {
            i += k;
            continue;
        }
        rc = crdtdb__buf_append(o, s + run, i - run);
        if (!rc)
            rc = k ? put_escape(o, s[i]) : put(o, "\xef\xbf\xbd");
        run = ++i;
    }
    if (!rc)
        rc = crdtdb__buf_append(o, s + run, i - run);
    return rc ? rc : put(o, "\"");
}

/* Shortest of %.{min..max}g that reads back as the same value; a real
 * always keeps a fraction or exponent so it stays a real in JSON. */
static int put_real(crdtdb_buf *o, double d, int single)
{
    char s[48], *w = s;
    int prec = single ? 6 : 15, max = single ? 9 : 17;
    if (!isfinite(d))
        return put(o, "null");
    for (;; prec++) {
        snprintf(s, sizeof s, "%.*g", prec, d);
        if (prec == max || (single ? strtof(s, NULL) == (float)d
                                   : strtod(s, NULL) == d))
            break;
    }
    /* %g emits only digits, sign, 'e' and the locale's decimal point;
     * rewrite the latter (maybe "," or multibyte) as ".". */
    int frac = 0;
    for (const char *c = s; *c;) {
        if ((*c >= '0' && *c <= '9') || *c == '-' || *c == '+' || *c == 'e') {
            frac |= *c == 'e';
            *w++ = *c++;
            continue;
        }
        *w++ = '.';
        frac = 1;
        while (*c && !(*c >= '0' && *c <= '9') && *c != 'e')
            c++;
    }
    *w = '\0';
    if (!frac)
        strcpy(w, ".0");
    return put(o, s);
}

static int put_base64(crdtdb_buf *o, const uint8_t *p, size_t n)
{
    if (n > (SIZE_MAX - 8) / 4 * 3)
        return CRDTDB_ENOMEM;
    size_t enc = sodium_base64_ENCODED_LEN(n, sodium_base64_VARIANT_ORIGINAL);
    int rc = crdtdb__buf_reserve(o, enc + 2); /* enc counts the NUL */
    if (rc)
        return rc;
    o->data[o->len++] = '"';
    sodium_bin2base64((char *)o->data + o->len, enc, p, n,
                      sodium_base64_VARIANT_ORIGINAL);
    o->len += enc - 1;
    o->data[o->len++] = '"';
    return 0;
}

/* Days since 1970-01-01 to a proleptic Gregorian date (H. Hinnant's
 * civil_from_days): no gmtime, so no locale, time zone or time_t range. */
static void civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d)
{
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    unsigned doe = (unsigned)(z - era * 146097);
    unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    unsigned mp = (5 * doy + 2) / 153;
    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = (int64_t)yoe + era * 400 + (*m <= 2);
}

/* A msgpack timestamp (ext -1: 32, 64 or 96 bits) as the RFC 3339 UTC text
 * a JavaScript Date's toISOString() gives ("2026-12-08T02:00:00.000Z"),
 * nine digits of fraction when it is not whole milliseconds.  1 when it is
 * not one (bad size, nanoseconds over 999,999,999, a year outside
 * 0000-9999): the caller writes base64 as for any other extension. */
static int put_timestamp(crdtdb_buf *o, const uint8_t *p, size_t n)
{
    uint64_t ns = 0;
    int64_t sec;
    if (n == 4) {
        sec = (int64_t)be_uint(p, 4);
    } else if (n == 8) {
        uint64_t v = be_uint(p, 8);
        ns = v >> 34;
        sec = (int64_t)(v & ((UINT64_C(1) << 34) - 1));
    } else if (n == 12) {
        ns = be_uint(p, 4);
        sec = (int64_t)be_uint(p + 4, 8);
    } else {
        return 1;
    }
    /* 0000-01-01 and 9999-12-31T23:59:59 */
    if (ns > 999999999u || sec < INT64_C(-62167219200) || sec > INT64_C(253402300799))
        return 1;
    int64_t days = sec >= 0 ? sec / 86400 : -((-sec + 86399) / 86400);
    unsigned s = (unsigned)(sec - days * 86400);
    int64_t y;
    unsigned mo, d;
    civil_from_days(days, &y, &mo, &d);
    char t[40];
    int len = snprintf(t, sizeof t, "\"%04d-%02u-%02uT%02u:%02u:%02u", (int)y, mo, d,
                       s / 3600, s / 60 % 60, s % 60);
    if (ns % 1000000u == 0)
        snprintf(t + len, sizeof t - (size_t)len, ".%03uZ\"", (unsigned)(ns / 1000000u));
    else
        snprintf(t + len, sizeof t - (size_t)len, ".%09uZ\"", (unsigned)ns);
    return put(o, t);
}

/* An extension value: a timestamp as its date text, any other as base64. */
static int put_ext(crdtdb_buf *o, uint8_t type, const uint8_t *p, size_t n)
{
    if (type == 0xff) {
        int rc = put_timestamp(o, p, n);
        if (rc <= 0)
            return rc;
    }
    return put_base64(o, p, n);
}

static int put_int(crdtdb_buf *o, int neg, uint64_t u)
{
    char s[24];
    if (neg)
        snprintf(s, sizeof s, "%" PRId64, (int64_t)u);
    else
        snprintf(s, sizeof s, "%" PRIu64, u);
    return put(o, s);
}

static int write_value(reader *r, crdtdb_buf *o, unsigned left);

static int is_str_head(uint8_t b)
{
    return (b & 0xe0) == 0xa0 || (b >= 0xd9 && b <= 0xdb);
}

/* A string key is written as is; any other key as its JSON text, quoted.
 * Inside such a key, only string keys: quoting a key within a key doubles
 * its escapes at every level, so output would grow as 2^depth. */
static int write_key(reader *r, crdtdb_buf *o, unsigned left)
{
    if (r->p < r->end && is_str_head(*r->p))
        return write_value(r, o, left);
    if (r->in_key)
        return CRDTDB_EBADVALUE;
    crdtdb_buf text = CRDTDB_BUF_INIT;
    r->in_key = 1;
    int rc = write_value(r, &text, left);
    r->in_key = 0;
    if (!rc)
        rc = put_str(o, text.data, text.len);
    crdtdb_buf_free(&text);
    return rc;
}

static int write_container(reader *r, crdtdb_buf *o, uint64_t n, int map,
                           unsigned left)
{
    int rc;
    if (left == 0)
        return CRDTDB_EBADVALUE;
    if ((rc = put(o, map ? "{" : "[")) != 0)
        return rc;
    /* Every element takes at least one byte: stop a bogus count early. */
    for (uint64_t i = 0; i < n; i++) {
        if (r->p == r->end)
            return CRDTDB_EBADVALUE;
        if (i && (rc = put(o, ",")) != 0)
            return rc;
        if (map && ((rc = write_key(r, o, left - 1)) != 0 ||
                    (rc = put(o, ":")) != 0))
            return rc;
        if ((rc = write_value(r, o, left - 1)) != 0)
            return rc;
    }
    return put(o, map ? "}" : "]");
}

/* bin and ext payloads: `width` bytes of length, then for ext a type byte. */
static int write_blob(reader *r, crdtdb_buf *o, size_t width, int ext)
{
    uint64_t n;
    const uint8_t *p, *t = NULL;
    if (take_uint(r, width, &n) || (ext && take(r, 1, &t)) ||
        n > (uint64_t)(r->end - r->p) || take(r, (size_t)n, &p))
        return CRDTDB_EBADVALUE;
    return t ? put_ext(o, *t, p, (size_t)n) : put_base64(o, p, (size_t)n);
}

/* Writes one value; `left` is how many more containers may nest. */
static int write_value(reader *r, crdtdb_buf *o, unsigned left)
{
    const uint8_t *h, *p;
    uint64_t n;
    if (take(r, 1, &h))
        return CRDTDB_EBADVALUE;
    uint8_t b = *h;
    if (b <= 0x7f)
        return put_int(o, 0, b);
    if (b >= 0xe0)
        return put_int(o, 1, (uint64_t)(int64_t)(int8_t)b);
    if ((b & 0xf0) == 0x80)
        return write_container(r, o, b & 0x0f, 1, left);
    if ((b & 0xf0) == 0x90)
        return write_container(r, o, b & 0x0f, 0, left);
    if ((b & 0xe0) == 0xa0) {
        n = b & 0x1f;
        goto str;
    }
    switch (b) {
    case 0xc0:
        return put(o, "null");
    case 0xc2:
        return put(o, "false");
    case 0xc3:
        return put(o, "true");
    case 0xc4: case 0xc5: case 0xc6: /* bin 8/16/32 */
        return write_blob(r, o, (size_t)1 << (b - 0xc4), 0);
    case 0xc7: case 0xc8: case 0xc9: /* ext 8/16/32 */
        return write_blob(r, o, (size_t)1 << (b - 0xc7), 1);
    case 0xca: { /* float 32 */
        float f;
        uint32_t u;
        if (take_uint(r, 4, &n))
            return CRDTDB_EBADVALUE;
        u = (uint32_t)n;
        memcpy(&f, &u, sizeof f);
        return put_real(o, f, 1);
    }
    case 0xcb: { /* float 64 */
        double d;
        if (take_uint(r, 8, &n))
            return CRDTDB_EBADVALUE;
        memcpy(&d, &n, sizeof d);
        return put_real(o, d, 0);
    }
    case 0xcc: case 0xcd: case 0xce: case 0xcf: /* uint 8..64 */
        if (take_uint(r, (size_t)1 << (b - 0xcc), &n))
            return CRDTDB_EBADVALUE;
        return put_int(o, 0, n);
    case 0xd0: case 0xd1: case 0xd2: case 0xd3: { /* int 8..64 */
        size_t w = (size_t)1 << (b - 0xd0);
        if (take_uint(r, w, &n))
            return CRDTDB_EBADVALUE;
        if (w < 8 && (n >> (w * 8 - 1)) & 1) /* sign-extend */
            n |= UINT64_MAX << (w * 8);
        return put_int(o, (int64_t)n < 0, n);
    }
    case 0xd4: case 0xd5: case 0xd6: case 0xd7: case 0xd8: /* fixext */
        n = (uint64_t)1 << (b - 0xd4);
        if (take(r, 1, &h) || take(r, (size_t)n, &p))
            return CRDTDB_EBADVALUE;
        return put_ext(o, *h, p, (size_t)n);
    case 0xd9: case 0xda: case 0xdb: /* str 8/16/32 */
        if (take_uint(r, (size_t)1 << (b - 0xd9), &n))
            return CRDTDB_EBADVALUE;
        goto str;
    case 0xdc: case 0xdd: /* array 16/32 */
        if (take_uint(r, (size_t)2 << (b - 0xdc), &n))
            return CRDTDB_EBADVALUE;
        return write_container(r, o, n, 0, left);
    case 0xde: case 0xdf: /* map 16/32 */
        if (take_uint(r, (size_t)2 << (b - 0xde), &n))
            return CRDTDB_EBADVALUE;
        return write_container(r, o, n, 1, left);
    default: /* 0xc1: never used */
        return CRDTDB_EBADVALUE;
    }
str:
    if (n > (uint64_t)(r->end - r->p) || take(r, (size_t)n, &p))
        return CRDTDB_EBADVALUE;
    return put_str(o, p, (size_t)n);
}

int crdtdb_msgpack_to_json(const uint8_t *mp, size_t len, crdtdb_buf *out)
{
    if (!out || (!mp && len))
        return CRDTDB_EINVAL;
    out->len = 0;
    reader r = {mp, mp ? mp + len : mp, 0}; /* no arithmetic on NULL */
    int rc = write_value(&r, out, JSON_DEPTH_MAX);
    if (!rc && r.p != r.end)
        rc = CRDTDB_EBADVALUE; /* trailing bytes */
    if (!rc)
        rc = crdtdb__buf_reserve(out, 1);
    if (rc) {
        out->len = 0;
        if (out->data)
            out->data[0] = '\0';
        return rc;
    }
    out->data[out->len] = '\0';
    return 0;
}
