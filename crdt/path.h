/*
 * Field key paths.  A nested field ["a", "b.c"] is stored under one encoded
 * path: each key's bytes with 0x00 escaped as 00 FF, then the terminator
 * 00 01.  The encoding is unambiguous (keys may contain dots or NULs), an
 * ancestor's encoding is a byte prefix of its descendants', a subtree is a
 * contiguous range in byte order, and siblings sort bytewise by key.
 */
#ifndef CRDTDB_CRDT_PATH_H
#define CRDTDB_CRDT_PATH_H
#include <stddef.h>
#include <stdint.h>

#include "crdtdb.h"

/* Appends the encoding of one key segment to b.  0 or CRDTDB_ENOMEM. */
int crdtdb__path_push(crdtdb_buf *b, const void *key, size_t len);

/* 1 if path a is a strict ancestor of path b. */
int crdtdb__path_is_ancestor(const uint8_t *a, size_t alen, const uint8_t *b,
                             size_t blen);

/*
 * Reads the segment of `p` starting at offset *off: sets *seg_end to the
 * offset of its terminator and advances *off past it.  Returns 0, or
 * CRDTDB_ECORRUPT if the bytes are not a valid encoding.
 */
int crdtdb__path_next(const uint8_t *p, size_t len, size_t *off,
                      size_t *seg_end);

/* Writes the decoded key of encoded segment p[from, to) into out (which the
 * caller sizes to at least to - from bytes); returns its length. */
size_t crdtdb__path_unescape(const uint8_t *p, size_t from, size_t to,
                             uint8_t *out);

/* Number of segments, or -1 if invalid. */
int crdtdb__path_depth(const uint8_t *p, size_t len);

#endif
