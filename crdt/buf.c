/* Growable caller-owned byte buffer. */
#include "crdt/buf.h"

#include <stdlib.h>
#include <string.h>

void crdtdb_buf_free(crdtdb_buf *b)
{
    if (!b)
        return;
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

int crdtdb__buf_reserve(crdtdb_buf *b, size_t extra)
{
    if (b->cap - b->len >= extra)
        return 0;
    if (extra > SIZE_MAX / 2 - b->len)
        return CRDTDB_ENOMEM;
    size_t need = b->len + extra;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need)
        cap *= 2;
    uint8_t *p = realloc(b->data, cap);
    if (!p)
        return CRDTDB_ENOMEM;
    b->data = p;
    b->cap = cap;
    return 0;
}

int crdtdb__buf_append(crdtdb_buf *b, const void *p, size_t n)
{
    if (n == 0)
        return 0;
    int rc = crdtdb__buf_reserve(b, n);
    if (rc)
        return rc;
    memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
}

int crdtdb__buf_set(crdtdb_buf *b, const void *p, size_t n)
{
    b->len = 0;
    return crdtdb__buf_append(b, p, n);
}

int crdtdb__buf_write_cb(void *data, const char *p, size_t n)
{
    return crdtdb__buf_append(data, p, n) ? -1 : 0;
}
