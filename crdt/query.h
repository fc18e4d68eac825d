/*
 * Query criteria: an equality map or a list of [field, op, value]
 * conditions, ANDed (see crdtdb_db_query in crdtdb.h).  Pure code.
 */
#ifndef CRDTDB_CRDT_QUERY_H
#define CRDTDB_CRDT_QUERY_H
#include <msgpack.h>

#include "crdt/value.h"

enum { CRDTDB__OP_EQ, CRDTDB__OP_NE, CRDTDB__OP_LT, CRDTDB__OP_LE,
       CRDTDB__OP_GT, CRDTDB__OP_GE };

typedef struct crdtdb__seg {
    const char *p;
    uint32_t n;
} crdtdb__seg;

typedef struct crdtdb__cond {
    uint32_t seg_first, nseg; /* into the query's segs */
    int op;
    const msgpack_object *value;
} crdtdb__cond;

typedef struct crdtdb__query {
    msgpack_zone zone; /* owns the parsed criteria */
    msgpack_object criteria;
    crdtdb__cond *conds;
    uint32_t nconds, conds_cap;
    crdtdb__seg *segs;
    uint32_t nsegs, segs_cap;
} crdtdb__query;

/* Parses criteria (NULL or len 0: match everything) within lim.  On success
 * q owns its memory until crdtdb__query_free (also safe after failure).
 * 0, CRDTDB_EBADQUERY, CRDTDB_ETOOBIG, CRDTDB_ETOODEEP or CRDTDB_ENOMEM. */
int crdtdb__query_parse(crdtdb__query *q, const uint8_t *criteria, size_t len,
                        const crdtdb__limits *lim, crdtdb__err *e);
void crdtdb__query_free(crdtdb__query *q);

/* 1 if record map `rec` satisfies every condition, else 0. */
int crdtdb__query_match(const crdtdb__query *q, const msgpack_object *rec);

#endif
