/*
 * Untrusted msgpack values: parsing within limits, flattening a record map
 * into leaf writes, and comparison for queries.  Pure code.
 */
#ifndef CRDTDB_CRDT_VALUE_H
#define CRDTDB_CRDT_VALUE_H
#include <msgpack.h>
#include <stddef.h>
#include <stdint.h>

#include "crdtdb.h"

/* The limits that apply to one value, copied from the environment options. */
typedef struct crdtdb__limits {
    size_t max_value_size;
    unsigned max_depth;
    size_t max_path_bytes;
    uint32_t max_fields;
    uint32_t max_delta_groups; /* record groups in one delta (0: the default) */
} crdtdb__limits;

/* A detail message buffer; functions write a NUL-terminated detail. */
typedef struct crdtdb__err {
    char msg[256];
} crdtdb__err;
#define CRDTDB__ERR_INIT {"out of memory"}

/* Sets e's message (printf-style) and returns code. */
int crdtdb__err_set(crdtdb__err *e, int code, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

/* Writes a printf-style detail into a caller's buffer (NULL or size 0:
 * nothing), for APIs that take `char *errmsg, size_t errmsg_size`. */
CRDTDB__SHARED void crdtdb__msg_set(char *buf, size_t size, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

/*
 * Parses exactly one msgpack value from data[0, len) into *obj, allocated in
 * zone (the caller clears/destroys it).  Refuses trailing bytes, more than
 * max_value_size bytes, and nesting beyond max_depth.
 * 0, CRDTDB_EBADVALUE, CRDTDB_ETOOBIG or CRDTDB_ETOODEEP (detail in e).
 */
int crdtdb__value_parse(const uint8_t *data, size_t len,
                        const crdtdb__limits *lim, msgpack_zone *zone,
                        msgpack_object *obj, crdtdb__err *e);

/* One flattened leaf: offsets into the flat arena, which may move. */
typedef struct crdtdb__flat_item {
    size_t path_off;
    uint32_t path_len;
    uint8_t kind; /* CRDTDB__KIND_VALUE or _MAP (an empty map) */
    size_t val_off;
    uint32_t val_len;
} crdtdb__flat_item;

typedef struct crdtdb__flat {
    crdtdb_buf arena;
    crdtdb__flat_item *items;
    uint32_t n, cap;
} crdtdb__flat;

void crdtdb__flat_init(crdtdb__flat *f);
void crdtdb__flat_free(crdtdb__flat *f);

/*
 * Appends the leaves of record map `map` to f (not cleared first), each key
 * path prefixed with the encoded path `prefix` (may be empty).  Nested
 * non-empty maps recurse; an empty map becomes a map leaf.  Keys must be
 * strings.  Enforces max_path_bytes and max_fields.
 * 0, CRDTDB_EBADVALUE, CRDTDB_ETOOBIG or CRDTDB_ENOMEM (detail in e).
 */
int crdtdb__flatten(crdtdb__flat *f, const msgpack_object *map,
                    const crdtdb__limits *lim, crdtdb__err *e);

/* Comparison outcome of two values for queries. */
enum { CRDTDB__CMP_LT = -1, CRDTDB__CMP_EQ = 0, CRDTDB__CMP_GT = 1,
       CRDTDB__CMP_NE = 2,      /* comparable for equality only, not equal */
       CRDTDB__CMP_MISMATCH = 3 /* different types: never matches */ };

/* Numbers compare numerically across integer and float, strings bytewise,
 * timestamps (ext -1) by the instant they hold; other types only for (deep)
 * equality. */
int crdtdb__value_cmp(const msgpack_object *a, const msgpack_object *b);

/* 1 if o is a number, a string or a valid timestamp (the types ordering
 * operators accept). */
int crdtdb__value_orderable(const msgpack_object *o);

/* Looks up string key (k, n) in map object m; NULL if absent. */
const msgpack_object *crdtdb__map_get(const msgpack_object *m, const char *k,
                                      size_t n);

/* 1 if s[0, n) is valid UTF-8. */
CRDTDB__SHARED int crdtdb__utf8_valid(const uint8_t *s, size_t n);

#endif
