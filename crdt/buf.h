/* Internal helpers over the public crdtdb_buf. */
#ifndef CRDTDB_CRDT_BUF_H
#define CRDTDB_CRDT_BUF_H
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

#endif
