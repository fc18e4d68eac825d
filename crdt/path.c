/* Escaped, terminated key-path encoding (see path.h). */
#include "crdt/path.h"

#include <string.h>

#include "crdt/buf.h"

int crdtdb__path_push(crdtdb_buf *b, const void *key, size_t len)
{
    const uint8_t *k = key;
    /* worst case every byte escaped, plus the terminator */
    if (len > (SIZE_MAX - 2) / 2 || crdtdb__buf_reserve(b, 2 * len + 2))
        return CRDTDB_ENOMEM;
    uint8_t *o = b->data + b->len;
    for (size_t i = 0; i < len; i++) {
        *o++ = k[i];
        if (k[i] == 0)
            *o++ = 0xff;
    }
    *o++ = 0;
    *o++ = 1;
    b->len = (size_t)(o - b->data);
    return 0;
}

int crdtdb__path_is_ancestor(const uint8_t *a, size_t alen, const uint8_t *b,
                             size_t blen)
{
    /* A 00 01 inside an encoding is always a terminator, so a byte prefix
     * that ends on one ends on a segment boundary. */
    return alen < blen && memcmp(a, b, alen) == 0;
}

int crdtdb__path_next(const uint8_t *p, size_t len, size_t *off,
                      size_t *seg_end)
{
    size_t i = *off;
    while (i < len) {
        if (p[i] != 0) {
            i++;
            continue;
        }
        if (i + 1 >= len)
            return CRDTDB_ECORRUPT;
        if (p[i + 1] == 1) {
            *seg_end = i;
            *off = i + 2;
            return 0;
        }
        if (p[i + 1] != 0xff)
            return CRDTDB_ECORRUPT;
        i += 2;
    }
    return CRDTDB_ECORRUPT;
}

size_t crdtdb__path_unescape(const uint8_t *p, size_t from, size_t to,
                             uint8_t *out)
{
    size_t n = 0;
    for (size_t i = from; i < to; i++) {
        out[n++] = p[i];
        if (p[i] == 0)
            i++; /* skip the escape byte */
    }
    return n;
}

int crdtdb__path_depth(const uint8_t *p, size_t len)
{
    size_t off = 0, end;
    int d = 0;
    while (off < len) {
        if (crdtdb__path_next(p, len, &off, &end))
            return -1;
        d++;
    }
    return d;
}
