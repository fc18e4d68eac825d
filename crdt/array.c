/* The growable array (array.h): one doubling rule for every element list. */
#include "crdt/array.h"

#include <stdlib.h>

#include "crdtdb.h"

int crdtdb__array_realloc(void *items, uint32_t *cap, uint32_t n, size_t sz, uint32_t first)
{
    void **pp = items;
    if (n < *cap)
        return 0;
    if (n >= UINT32_MAX / 2 || (size_t)n * 2 > SIZE_MAX / (sz ? sz : 1))
        return CRDTDB_ENOMEM;
    uint32_t c = *cap ? *cap * 2 : first;
    void *p = realloc(*pp, (size_t)c * sz);
    if (!p)
        return CRDTDB_ENOMEM;
    *pp = p;
    *cap = c;
    return 0;
}
