/*
 * A structural pre-check of untrusted msgpack, run before msgpack-c builds
 * objects: msgpack-c allocates a container's element array as soon as it
 * reads the header, so five hostile bytes could ask for gigabytes.  This
 * walk allocates nothing and refuses element counts that the remaining
 * bytes cannot hold, nesting over a limit, truncation, the never-used byte
 * 0xc1, trailing bytes, and containers used as map keys (no value needs
 * them, and rendered as JSON text each level of them doubles in size).
 */
#ifndef CRDTDB_CRDT_MPCHECK_H
#define CRDTDB_CRDT_MPCHECK_H
#include <stddef.h>
#include <stdint.h>

/* Checks that p[0, len) is exactly one well-formed msgpack value whose
 * containers nest at most max_depth (<= 64) deep.  Returns 0,
 * CRDTDB_ETOODEEP, or CRDTDB_EBADVALUE with *why set to a static reason. */
int crdtdb__mp_check(const uint8_t *p, size_t len, unsigned max_depth,
                     const char **why);

/* crdtdb__mp_check, also refusing (CRDTDB_ETOOBIG) more than max_items
 * container elements in all: msgpack-c then allocates a msgpack_object
 * (24 bytes) for each, so a value made of one-byte elements costs 24 times
 * its size. */
int crdtdb__mp_check_items(const uint8_t *p, size_t len, unsigned max_depth,
                           uint64_t max_items, const char **why);

#endif
