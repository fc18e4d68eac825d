/* Internal helpers over the public crdtdb_buf. */
#ifndef CRDTDB_CRDT_BUF_H
#define CRDTDB_CRDT_BUF_H
#include <stdint.h>

#include "crdtdb.h"

/* Ensures room for `extra` more bytes after len.  0 or CRDTDB_ENOMEM. */
int crdtdb__buf_reserve(crdtdb_buf *b, size_t extra);
/* Appends n bytes.  0 or CRDTDB_ENOMEM. */
int crdtdb__buf_append(crdtdb_buf *b, const void *p, size_t n);
/* Replaces the contents with n bytes.  0 or CRDTDB_ENOMEM. */
CRDTDB__SHARED int crdtdb__buf_set(crdtdb_buf *b, const void *p, size_t n);
/* msgpack_packer write callback appending to a crdtdb_buf (returns -1 on
 * allocation failure, as msgpack-c expects). */
int crdtdb__buf_write_cb(void *data, const char *p, size_t n);

/* Big-endian integers, as keys and fixed encodings store them (LMDB keys
 * sort bytewise; msgpack's timestamps). */
static inline void crdtdb__put_u32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}
static inline uint32_t crdtdb__get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static inline void crdtdb__put_u64(uint8_t *p, uint64_t v)
{
    crdtdb__put_u32(p, (uint32_t)(v >> 32));
    crdtdb__put_u32(p + 4, (uint32_t)v);
}
static inline uint64_t crdtdb__get_u64(const uint8_t *p)
{
    return (uint64_t)crdtdb__get_u32(p) << 32 | crdtdb__get_u32(p + 4);
}

#endif
