/* Query criteria parsing and matching (query.h). */
#include "crdt/query.h"

#include "crdt/array.h"

#include <stdlib.h>
#include <string.h>

static int push_seg(crdtdb__query *q, const char *p, uint32_t n)
{
    if (crdtdb__array_grow(&q->segs, &q->segs_cap, q->nsegs, sizeof *q->segs, 16))
        return CRDTDB_ENOMEM;
    q->segs[q->nsegs].p = p;
    q->segs[q->nsegs].n = n;
    q->nsegs++;
    return 0;
}

static int push_cond(crdtdb__query *q, uint32_t first, int op,
                     const msgpack_object *v)
{
    if (crdtdb__array_grow(&q->conds, &q->conds_cap, q->nconds, sizeof *q->conds, 8))
        return CRDTDB_ENOMEM;
    crdtdb__cond *c = &q->conds[q->nconds++];
    c->seg_first = first;
    c->nseg = q->nsegs - first;
    c->op = op;
    c->value = v;
    return 0;
}

/* Equality form: nested non-empty maps name nested fields.  The path so far
 * is segs [0, depth) copied to the end for every condition. */
static int parse_eq(crdtdb__query *q, const msgpack_object *m,
                    const crdtdb__seg *path, uint32_t depth, crdtdb__err *e)
{
    for (uint32_t i = 0; i < m->via.map.size; i++) {
        const msgpack_object *k = &m->via.map.ptr[i].key;
        const msgpack_object *v = &m->via.map.ptr[i].val;
        if (k->type != MSGPACK_OBJECT_STR)
            return crdtdb__err_set(e, CRDTDB_EBADQUERY,
                                   "query keys must be strings");
        crdtdb__seg here[33];
        if (depth >= 32)
            return crdtdb__err_set(e, CRDTDB_ETOODEEP, "query nested too deeply");
        if (depth)
            memcpy(here, path, depth * sizeof *path);
        here[depth].p = k->via.str.ptr;
        here[depth].n = k->via.str.size;
        if (v->type == MSGPACK_OBJECT_MAP && v->via.map.size > 0) {
            int rc = parse_eq(q, v, here, depth + 1, e);
            if (rc)
                return rc;
            continue;
        }
        uint32_t first = q->nsegs;
        for (uint32_t d = 0; d <= depth; d++)
            if (push_seg(q, here[d].p, here[d].n))
                return CRDTDB_ENOMEM;
        if (push_cond(q, first, CRDTDB__OP_EQ, v))
            return CRDTDB_ENOMEM;
    }
    return 0;
}

static int parse_op(const msgpack_object *o, int *op)
{
    /* the DataStore interface's operators; "=" is "==" there */
    static const struct {
        const char *name;
        int op;
    } ops[] = {{"==", CRDTDB__OP_EQ}, {"=", CRDTDB__OP_EQ}, {"!=", CRDTDB__OP_NE},
               {"<", CRDTDB__OP_LT},  {"<=", CRDTDB__OP_LE}, {">", CRDTDB__OP_GT},
               {">=", CRDTDB__OP_GE}};
    if (o->type != MSGPACK_OBJECT_STR)
        return -1;
    for (size_t i = 0; i < sizeof ops / sizeof *ops; i++) {
        size_t n = strlen(ops[i].name);
        if (o->via.str.size == n && memcmp(o->via.str.ptr, ops[i].name, n) == 0) {
            *op = ops[i].op;
            return 0;
        }
    }
    return -1;
}

static int parse_field(crdtdb__query *q, const msgpack_object *f,
                       crdtdb__err *e)
{
    if (f->type == MSGPACK_OBJECT_STR) {
        /* before any arithmetic: msgpack-c may give "" a NULL pointer */
        if (f->via.str.size == 0)
            return crdtdb__err_set(e, CRDTDB_EBADQUERY, "empty field name");
        const char *p = f->via.str.ptr, *end = p + f->via.str.size;
        for (;;) {
            const char *dot = memchr(p, '.', (size_t)(end - p));
            const char *stop = dot ? dot : end;
            if (push_seg(q, p, (uint32_t)(stop - p)))
                return CRDTDB_ENOMEM;
            if (!dot)
                return 0;
            p = dot + 1;
        }
    }
    if (f->type == MSGPACK_OBJECT_ARRAY && f->via.array.size > 0) {
        for (uint32_t i = 0; i < f->via.array.size; i++) {
            const msgpack_object *s = &f->via.array.ptr[i];
            if (s->type != MSGPACK_OBJECT_STR)
                return crdtdb__err_set(e, CRDTDB_EBADQUERY,
                                       "field path elements must be strings");
            if (push_seg(q, s->via.str.ptr, s->via.str.size))
                return CRDTDB_ENOMEM;
        }
        return 0;
    }
    return crdtdb__err_set(e, CRDTDB_EBADQUERY,
                           "a field is a string or an array of strings");
}

int crdtdb__query_parse(crdtdb__query *q, const uint8_t *criteria, size_t len,
                        const crdtdb__limits *lim, crdtdb__err *e)
{
    memset(q, 0, sizeof *q);
    if (!msgpack_zone_init(&q->zone, 2048))
        return CRDTDB_ENOMEM;
    if (!criteria || len == 0)
        return 0;
    int rc = crdtdb__value_parse(criteria, len, lim, &q->zone, &q->criteria, e);
    if (rc)
        return rc == CRDTDB_EBADVALUE ? CRDTDB_EBADQUERY : rc;
    const msgpack_object *c = &q->criteria;
    if (c->type == MSGPACK_OBJECT_MAP)
        return parse_eq(q, c, NULL, 0, e);
    if (c->type != MSGPACK_OBJECT_ARRAY)
        return crdtdb__err_set(e, CRDTDB_EBADQUERY,
                               "criteria must be a map or an array of "
                               "[field, op, value] conditions");
    for (uint32_t i = 0; i < c->via.array.size; i++) {
        const msgpack_object *t = &c->via.array.ptr[i];
        int op;
        if (t->type != MSGPACK_OBJECT_ARRAY || t->via.array.size != 3)
            return crdtdb__err_set(e, CRDTDB_EBADQUERY,
                                   "condition %u is not [field, op, value]", i);
        if (parse_op(&t->via.array.ptr[1], &op))
            return crdtdb__err_set(e, CRDTDB_EBADQUERY,
                                   "condition %u: unknown operator (use = == != "
                                   "< <= > >=)",
                                   i);
        uint32_t first = q->nsegs;
        rc = parse_field(q, &t->via.array.ptr[0], e);
        if (rc)
            return rc;
        if (push_cond(q, first, op, &t->via.array.ptr[2]))
            return CRDTDB_ENOMEM;
    }
    return 0;
}

void crdtdb__query_free(crdtdb__query *q)
{
    if (!q)
        return;
    msgpack_zone_destroy(&q->zone);
    free(q->conds);
    free(q->segs);
    memset(q, 0, sizeof *q);
}

static int cond_holds(const crdtdb__query *q, const crdtdb__cond *c,
                      const msgpack_object *rec)
{
    const msgpack_object *v = rec;
    for (uint32_t i = 0; i < c->nseg && v; i++) {
        const crdtdb__seg *s = &q->segs[c->seg_first + i];
        v = crdtdb__map_get(v, s->p, s->n);
    }
    /* "!=" is the interface's JavaScript `!=` where that is sane: the
     * negation of "==", so a missing field or another type differs; but a
     * missing field is no different from null (`!= null`: set, not null).
     * No coercion: "5" != 5 holds here, not in JavaScript. */
    if (!v) /* missing: matches only "!=" of something other than null */
        return c->op == CRDTDB__OP_NE && c->value->type != MSGPACK_OBJECT_NIL;
    int r = crdtdb__value_cmp(v, c->value);
    if (r == CRDTDB__CMP_MISMATCH)
        return c->op == CRDTDB__OP_NE;
    /* Ordering ops apply to numbers, strings and timestamps only. */
    int ord = r != CRDTDB__CMP_NE && crdtdb__value_orderable(v);
    switch (c->op) {
    case CRDTDB__OP_EQ: return r == CRDTDB__CMP_EQ;
    case CRDTDB__OP_NE: return r != CRDTDB__CMP_EQ;
    case CRDTDB__OP_LT: return ord && r == CRDTDB__CMP_LT;
    case CRDTDB__OP_LE: return ord && r <= CRDTDB__CMP_EQ;
    case CRDTDB__OP_GT: return ord && r == CRDTDB__CMP_GT;
    default: return ord && (r == CRDTDB__CMP_EQ || r == CRDTDB__CMP_GT);
    }
}

int crdtdb__query_match(const crdtdb__query *q, const msgpack_object *rec)
{
    for (uint32_t i = 0; i < q->nconds; i++)
        if (!cond_holds(q, &q->conds[i], rec))
            return 0;
    return 1;
}
