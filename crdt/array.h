/*
 * The growable array every module uses for its element lists (record
 * registers, query segments, flattened fields, observer events...): one
 * doubling rule and one overflow check instead of a copy per file.  Pure:
 * memory only.
 *
 * An array is three fields of the caller's struct: `T *items`, `uint32_t n`,
 * `uint32_t cap`, zero to start.  The caller owns items (release it with
 * free()); a pointer into it is valid until the next grow.
 */
#ifndef CRDTDB_CRDT_ARRAY_H
#define CRDTDB_CRDT_ARRAY_H
#include <stddef.h>
#include <stdint.h>

/* The reallocation behind crdtdb__array_grow. */
int crdtdb__array_realloc(void *items, uint32_t *cap, uint32_t n, size_t sz, uint32_t first);

/* Makes room for one more element after n elements of sz bytes: items is
 * the address of the caller's `T *` field, cap its capacity, doubled from
 * `first` when full.  0, or CRDTDB_ENOMEM with *items and *cap unchanged.
 * Inline: record decoding calls it once per register. */
static inline int crdtdb__array_grow(void *items, uint32_t *cap, uint32_t n, size_t sz,
                                     uint32_t first)
{
    return n < *cap ? 0 : crdtdb__array_realloc(items, cap, n, sz, first);
}

#endif
