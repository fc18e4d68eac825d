/* The shared vectors (the JSON files in tests/vectors, format in its README) that
 * the JS client's tests check too: LWW rules (every order, batched with
 * duplicates, forged stamps, local writes with limits), msgpack values and
 * their types, and query criteria, here through the internal crdt/ API. */
#include <check.h>
#include <jansson.h>
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crdt/buf.h"
#include "crdt/path.h"
#include "crdt/query.h"
#include "crdt/record.h"
#include "crdt/value.h"
#include "tests/testutil.h"

#ifndef CRDTDB_VECTORS_DIR
#error "CRDTDB_VECTORS_DIR must name tests/vectors (CMakeLists.txt sets it)"
#endif

static json_t *load(const char *name)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", CRDTDB_VECTORS_DIR, name);
    json_error_t err;
    json_t *j = json_load_file(path, JSON_ALLOW_NUL, &err);
    ck_assert_msg(j != NULL, "%s:%d: %s", path, err.line, err.text);
    return j;
}

static const char *str(const json_t *o, const char *key)
{
    const json_t *v = json_object_get(o, key);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

/* An error name in the vectors ("EFORGED") -> its code. */
static int code_of(const char *name)
{
#define CODE_(n, c, m) if (strcmp(name, #n) == 0) return c;
    CRDTDB_ERRNO_MAP(CODE_)
#undef CODE_
    ck_abort_msg("unknown error name %s", name);
    return 0;
}

/* ---------------------------------------------------------------- rules */

static uint8_t ORIGINS[8][32];
static size_t NORIGINS;

static void load_origins(const json_t *rules)
{
    const json_t *o = json_object_get(rules, "origins");
    NORIGINS = json_array_size(o);
    ck_assert_uint_ge(NORIGINS, 1);
    ck_assert_uint_le(NORIGINS, 8);
    for (size_t i = 0; i < NORIGINS; i++) {
        size_t n;
        uint8_t *b = tu_unhex(json_string_value(json_array_get(o, i)), &n);
        ck_assert_uint_eq(n, 32);
        memcpy(ORIGINS[i], b, 32);
        free(b);
    }
}

/* One write of a vector, its path and value owned here. */
typedef struct vw {
    char kind; /* 'a' add, 'r' remove, 'v' value leaf, 'm' map leaf */
    uint64_t hlc;
    size_t origin;
    crdtdb_buf path;
    uint8_t *val;
    size_t vlen;
} vw;

static vw *load_writes(const json_t *arr, size_t *n)
{
    *n = json_array_size(arr);
    vw *ws = calloc(*n ? *n : 1, sizeof *ws);
    ck_assert_ptr_nonnull(ws);
    for (size_t i = 0; i < *n; i++) {
        const json_t *w = json_array_get(arr, i);
        const char *kind = str(w, "kind");
        ck_assert_ptr_nonnull(kind);
        ws[i].kind = strcmp(kind, "add") == 0      ? 'a'
                     : strcmp(kind, "remove") == 0 ? 'r'
                     : strcmp(kind, "value") == 0  ? 'v'
                     : strcmp(kind, "map") == 0    ? 'm'
                                                   : 0;
        ck_assert_msg(ws[i].kind, "unknown write kind %s", kind);
        ws[i].hlc = (uint64_t)json_integer_value(json_object_get(w, "hlc"));
        ws[i].origin = (size_t)json_integer_value(json_object_get(w, "origin"));
        ck_assert_uint_lt(ws[i].origin, NORIGINS);
        const json_t *p = json_object_get(w, "path");
        for (size_t k = 0; k < json_array_size(p); k++) {
            const json_t *seg = json_array_get(p, k);
            ck_assert_int_eq(crdtdb__path_push(&ws[i].path, json_string_value(seg),
                                               json_string_length(seg)),
                             0);
        }
        if (ws[i].kind == 'v')
            ws[i].val = tu_unhex(str(w, "value"), &ws[i].vlen);
    }
    return ws;
}

static void free_writes(vw *ws, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        crdtdb_buf_free(&ws[i].path);
        free(ws[i].val);
    }
    free(ws);
}

static crdtdb__leaf leaf_of(crdtdb__record *r, const vw *w)
{
    uint32_t o;
    ck_assert_int_eq(crdtdb__record_origin(r, ORIGINS[w->origin], &o), 0);
    crdtdb__leaf l = {w->path.data, (uint32_t)w->path.len, CRDTDB__KIND_MAP, o, w->hlc, 0, NULL, 0};
    if (w->kind == 'v') {
        l.kind = CRDTDB__KIND_VALUE;
        l.val = w->val;
        l.val_len = (uint32_t)w->vlen;
    }
    return l;
}

static int apply(crdtdb__record *r, const vw *w)
{
    if (w->kind == 'a' || w->kind == 'r') {
        uint32_t o;
        ck_assert_int_eq(crdtdb__record_origin(r, ORIGINS[w->origin], &o), 0);
        return crdtdb__record_put_base(r, w->kind == 'a' ? CRDTDB__BASE_ADD : CRDTDB__BASE_REMOVE,
                                       w->hlc, o, 0);
    }
    crdtdb__leaf l = leaf_of(r, w);
    return crdtdb__record_put_leaf(r, &l);
}

/* Bases one by one in order, then the leaves in one put_many; the first
 * error, or 0. */
static int apply_batch(crdtdb__record *r, const vw *ws, const size_t *order, size_t n)
{
    crdtdb__leaf *ls = malloc((n ? n : 1) * sizeof *ls);
    ck_assert_ptr_nonnull(ls);
    uint32_t nl = 0;
    int rc = 0;
    for (size_t i = 0; i < n && rc >= 0; i++) {
        const vw *w = &ws[order[i]];
        if (w->kind == 'a' || w->kind == 'r')
            rc = apply(r, w);
        else
            ls[nl++] = leaf_of(r, w);
    }
    size_t won;
    if (rc >= 0)
        rc = crdtdb__record_put_many(r, ls, nl, &won);
    free(ls);
    return rc < 0 ? rc : 0;
}

/* The rendering as hex, or NULL if invisible (malloc'd). */
static char *rendered(const crdtdb__record *r)
{
    crdtdb_buf b = CRDTDB_BUF_INIT;
    ck_assert_int_eq(crdtdb__record_render(r, &b), 0);
    char *s = b.len ? tu_hex(b.data, b.len) : NULL;
    crdtdb_buf_free(&b);
    return s;
}

static void check_render(const crdtdb__record *r, const char *want, const char *name,
                         const char *how)
{
    char *got = rendered(r);
    ck_assert_msg((got == NULL) == (want == NULL) && (!got || strcmp(got, want) == 0),
                  "%s (%s): got %s, want %s", name, how, got ? got : "(invisible)",
                  want ? want : "(invisible)");
    ck_assert_int_eq(crdtdb__record_visible(r), want != NULL);
    free(got);
}

static int next_perm(size_t *a, size_t n)
{
    if (n < 2)
        return 0;
    size_t i = n - 1;
    while (i > 0 && a[i - 1] >= a[i])
        i--;
    if (i == 0)
        return 0;
    size_t j = n - 1;
    while (a[j] <= a[i - 1])
        j--;
    size_t t = a[i - 1];
    a[i - 1] = a[j];
    a[j] = t;
    for (size_t l = i, h = n - 1; l < h; l++, h--) {
        t = a[l];
        a[l] = a[h];
        a[h] = t;
    }
    return 1;
}

static void shuffle(size_t *a, size_t n)
{
    for (size_t i = n; i > 1; i--) {
        size_t j = (size_t)rand() % i, t = a[i - 1];
        a[i - 1] = a[j];
        a[j] = t;
    }
}

/* Applies ws in `order` one by one, then batched with random duplicates,
 * and checks both render `want`. */
static void check_order(const vw *ws, size_t n, const size_t *order, const char *want,
                        const char *name)
{
    crdtdb__record r;
    crdtdb__record_init(&r);
    for (size_t i = 0; i < n; i++)
        ck_assert_msg(apply(&r, &ws[order[i]]) >= 0, "%s: write %zu refused", name, order[i]);
    check_render(&r, want, name, "single");
    crdtdb__record_free(&r);

    size_t *dup = malloc(2 * n * sizeof *dup), k = 0;
    ck_assert_ptr_nonnull(dup);
    for (size_t i = 0; i < n; i++)
        dup[k++] = order[i];
    for (size_t i = 0; i < n; i++)
        if (rand() % 3 == 0)
            dup[k++] = order[i];
    shuffle(dup, k);
    crdtdb__record_init(&r);
    ck_assert_int_eq(apply_batch(&r, ws, dup, k), 0);
    check_render(&r, want, name, "batched");
    crdtdb__record_free(&r);
    free(dup);
}

START_TEST(rules_vectors)
{
    srand(tu_seed());
    json_t *rules = load("rules.json");
    load_origins(rules);
    const json_t *vecs = json_object_get(rules, "vectors");
    ck_assert_uint_ge(json_array_size(vecs), 30);
    for (size_t v = 0; v < json_array_size(vecs); v++) {
        const json_t *vec = json_array_get(vecs, v);
        const char *name = str(vec, "name");
        const char *want = str(vec, "render"); /* NULL: invisible */
        size_t n;
        vw *ws = load_writes(json_object_get(vec, "writes"), &n);
        size_t order[64];
        ck_assert_uint_le(n, 64);
        for (size_t i = 0; i < n; i++)
            order[i] = i;
        if (n <= 7) { /* every order */
            do
                check_order(ws, n, order, want, name);
            while (next_perm(order, n));
        } else {
            for (int k = 0; k < 300; k++) {
                shuffle(order, n);
                check_order(ws, n, order, want, name);
            }
        }
        free_writes(ws, n);
    }
    json_decref(rules);
}
END_TEST

START_TEST(rules_forged)
{
    json_t *rules = load("rules.json");
    load_origins(rules);
    const json_t *vecs = json_object_get(rules, "forged");
    ck_assert_uint_ge(json_array_size(vecs), 3);
    for (size_t v = 0; v < json_array_size(vecs); v++) {
        const json_t *vec = json_array_get(vecs, v);
        const char *name = str(vec, "name");
        int want = code_of(str(vec, "error"));
        size_t n;
        vw *ws = load_writes(json_object_get(vec, "writes"), &n);
        crdtdb__record r;
        crdtdb__record_init(&r);
        int rc = 0;
        for (size_t i = 0; i < n && rc >= 0; i++)
            rc = apply(&r, &ws[i]);
        ck_assert_msg(rc == want, "%s: got %d, want %d", name, rc, want);
        crdtdb__record_free(&r);
        size_t order[64];
        for (size_t i = 0; i < n; i++)
            order[i] = i;
        crdtdb__record_init(&r);
        rc = apply_batch(&r, ws, order, n);
        ck_assert_msg(rc == want, "%s (batched): got %d, want %d", name, rc, want);
        crdtdb__record_free(&r);
        free_writes(ws, n);
    }
    json_decref(rules);
}
END_TEST

/* One local operation as storage/write.c does it, at the crdt level.
 * Its flattened leaves live in f, which the record borrows from. */
static int apply_op(crdtdb__record *r, const json_t *op, const crdtdb__limits *lim,
                    crdtdb__flat *f, char *msg, size_t msgsize)
{
    const char *kind = str(op, "op");
    uint64_t hlc = (uint64_t)json_integer_value(json_object_get(op, "hlc"));
    size_t oi = (size_t)json_integer_value(json_object_get(op, "origin"));
    uint32_t origin;
    ck_assert_int_eq(crdtdb__record_origin(r, ORIGINS[oi], &origin), 0);
    if (strcmp(kind, "remove") == 0) {
        if (crdtdb__record_visible(r))
            ck_assert_int_eq(crdtdb__record_put_base(r, CRDTDB__BASE_REMOVE, hlc, origin, 0), 1);
        return 0;
    }
    size_t len;
    uint8_t *data = tu_unhex(str(op, "value"), &len);
    msgpack_zone z;
    ck_assert(msgpack_zone_init(&z, 1024));
    msgpack_object o;
    crdtdb__err e = CRDTDB__ERR_INIT;
    int rc = crdtdb__value_parse(data, len, lim, &z, &o, &e);
    if (!rc && o.type != MSGPACK_OBJECT_MAP)
        rc = CRDTDB_EBADVALUE;
    if (!rc)
        rc = crdtdb__flatten(f, &o, lim, &e);
    msgpack_zone_destroy(&z);
    free(data);
    snprintf(msg, msgsize, "%s", e.msg);
    if (rc)
        return rc;
    int merge = strcmp(kind, "update") == 0;
    if (merge && !crdtdb__record_visible(r))
        return CRDTDB_ENOTFOUND;
    if (!merge)
        ck_assert_int_ge(crdtdb__record_put_base(r, CRDTDB__BASE_ADD, hlc, origin, 0), 0);
    for (uint32_t i = 0; i < f->n; i++) {
        const crdtdb__flat_item *it = &f->items[i];
        crdtdb__leaf l = {f->arena.data + it->path_off, it->path_len, it->kind, origin, hlc, 0,
                          NULL, 0};
        if (merge && it->kind == CRDTDB__KIND_MAP &&
            crdtdb__record_is_map_at(r, l.path, l.path_len))
            continue; /* mergeDeepRight: an empty map into a map */
        if (it->kind == CRDTDB__KIND_VALUE) {
            l.val = f->arena.data + it->val_off;
            l.val_len = it->val_len;
        }
        rc = crdtdb__record_put_leaf(r, &l);
        if (rc < 0)
            return rc == CRDTDB_EFORGED ? CRDTDB_EBADVALUE : rc;
    }
    return 0;
}

START_TEST(rules_ops)
{
    json_t *rules = load("rules.json");
    load_origins(rules);
    const json_t *vecs = json_object_get(rules, "ops");
    ck_assert_uint_ge(json_array_size(vecs), 20);
    for (size_t v = 0; v < json_array_size(vecs); v++) {
        const json_t *vec = json_array_get(vecs, v);
        const char *name = str(vec, "name");
        const char *err = str(vec, "error");
        crdtdb__limits lim = {(size_t)1 << 20, 16, 1024, 10000, 0};
        const json_t *l = json_object_get(vec, "limits");
        if (json_object_get(l, "maxValueSize"))
            lim.max_value_size = (size_t)json_integer_value(json_object_get(l, "maxValueSize"));
        if (json_object_get(l, "maxDepth"))
            lim.max_depth = (unsigned)json_integer_value(json_object_get(l, "maxDepth"));
        if (json_object_get(l, "maxPathBytes"))
            lim.max_path_bytes = (size_t)json_integer_value(json_object_get(l, "maxPathBytes"));
        if (json_object_get(l, "maxFields"))
            lim.max_fields = (uint32_t)json_integer_value(json_object_get(l, "maxFields"));
        const json_t *ops = json_object_get(vec, "ops");
        size_t nops = json_array_size(ops);
        crdtdb__flat *flats = calloc(nops, sizeof *flats);
        ck_assert_ptr_nonnull(flats);
        crdtdb__record r;
        crdtdb__record_init(&r);
        for (size_t i = 0; i < nops; i++) {
            char msg[256];
            crdtdb__flat_init(&flats[i]);
            int rc = apply_op(&r, json_array_get(ops, i), &lim, &flats[i], msg, sizeof msg);
            int want = err && i == nops - 1 ? code_of(err) : 0;
            ck_assert_msg(rc == want, "%s: op %zu gave %d (%s), want %d", name, i, rc, msg, want);
        }
        check_render(&r, str(vec, "render"), name, "ops");
        crdtdb__record_free(&r);
        for (size_t i = 0; i < nops; i++)
            crdtdb__flat_free(&flats[i]);
        free(flats);
    }
    json_decref(rules);
}
END_TEST

/* --------------------------------------------------------------- values */

static const char *type_name(msgpack_object_type t)
{
    switch (t) {
    case MSGPACK_OBJECT_NIL: return "nil";
    case MSGPACK_OBJECT_BOOLEAN: return "bool";
    case MSGPACK_OBJECT_POSITIVE_INTEGER: return "uint";
    case MSGPACK_OBJECT_NEGATIVE_INTEGER: return "int";
    case MSGPACK_OBJECT_FLOAT32: return "float32";
    case MSGPACK_OBJECT_FLOAT64: return "float64";
    case MSGPACK_OBJECT_STR: return "str";
    case MSGPACK_OBJECT_BIN: return "bin";
    case MSGPACK_OBJECT_ARRAY: return "array";
    case MSGPACK_OBJECT_MAP: return "map";
    case MSGPACK_OBJECT_EXT: return "ext";
    }
    return "?";
}

static const crdtdb__limits VALUE_LIM = {(size_t)1 << 20, 32, 1024, 10000, 0};

/* Parses hex as one value, checks its type (if `type`) and that msgpack-c
 * packs it back as `repack`. */
static void check_value(const char *hex, const char *type, const char *repack, const char *name)
{
    size_t n;
    uint8_t *b = tu_unhex(hex, &n);
    msgpack_zone z;
    ck_assert(msgpack_zone_init(&z, 1024));
    msgpack_object o;
    crdtdb__err e = CRDTDB__ERR_INIT;
    int rc = crdtdb__value_parse(b, n, &VALUE_LIM, &z, &o, &e);
    ck_assert_msg(rc == 0, "%s: %s", name, e.msg);
    if (type)
        ck_assert_msg(strcmp(type_name(o.type), type) == 0, "%s: a %s, want %s", name,
                      type_name(o.type), type);
    crdtdb_buf out = CRDTDB_BUF_INIT;
    msgpack_packer pk;
    msgpack_packer_init(&pk, &out, crdtdb__buf_write_cb);
    ck_assert_int_eq(msgpack_pack_object(&pk, o), 0);
    char *got = tu_hex(out.data, out.len);
    ck_assert_msg(strcmp(got, repack) == 0, "%s: packed %s, want %s", name, got, repack);
    free(got);
    crdtdb_buf_free(&out);
    msgpack_zone_destroy(&z);
    free(b);
}

START_TEST(values_decode)
{
    json_t *vals = load("values.json");
    const json_t *dec = json_object_get(vals, "decode");
    ck_assert_uint_ge(json_array_size(dec), 40);
    for (size_t i = 0; i < json_array_size(dec); i++) {
        const json_t *v = json_array_get(dec, i);
        const char *name = str(v, "name"), *hex = str(v, "hex");
        check_value(hex, str(v, "c"), str(v, "c_repack"), name);
        /* the JS re-encoding is a value C reads as the same kind */
        check_value(str(v, "js_reencode"), NULL, str(v, "js_reencode"), name);
        /* a stored leaf renders its bytes unchanged */
        uint8_t key[32];
        memset(key, 0x10, sizeof key);
        crdtdb__record r;
        crdtdb__record_init(&r);
        uint32_t o;
        ck_assert_int_eq(crdtdb__record_origin(&r, key, &o), 0);
        ck_assert_int_eq(crdtdb__record_put_base(&r, CRDTDB__BASE_ADD, 1, o, 0), 1);
        crdtdb_buf path = CRDTDB_BUF_INIT;
        ck_assert_int_eq(crdtdb__path_push(&path, "v", 1), 0);
        size_t n;
        uint8_t *b = tu_unhex(hex, &n);
        crdtdb__leaf l = {path.data, (uint32_t)path.len, CRDTDB__KIND_VALUE, o, 1, 0, b,
                          (uint32_t)n};
        ck_assert_int_eq(crdtdb__record_put_leaf(&r, &l), 1);
        char *got = rendered(&r);
        char want[512];
        snprintf(want, sizeof want, "81a176%s", hex);
        ck_assert_msg(strcmp(got, want) == 0, "%s: rendered %s, want %s", name, got, want);
        free(got);
        free(b);
        crdtdb_buf_free(&path);
        crdtdb__record_free(&r);
    }
    json_decref(vals);
}
END_TEST

START_TEST(values_bad_and_encoded)
{
    json_t *vals = load("values.json");
    const json_t *bad = json_object_get(vals, "bad");
    for (size_t i = 0; i < json_array_size(bad); i++) {
        const json_t *v = json_array_get(bad, i);
        size_t n;
        uint8_t *b = tu_unhex(str(v, "hex"), &n);
        msgpack_zone z;
        ck_assert(msgpack_zone_init(&z, 1024));
        msgpack_object o;
        crdtdb__err e = CRDTDB__ERR_INIT;
        int rc = crdtdb__value_parse(b, n, &VALUE_LIM, &z, &o, &e);
        ck_assert_msg(rc == code_of(str(v, "error")), "%s: %d", str(v, "name"), rc);
        msgpack_zone_destroy(&z);
        free(b);
    }
    /* what the JS client writes is msgpack-c's own packing */
    const json_t *enc = json_object_get(vals, "encode");
    size_t checked = 0;
    for (size_t i = 0; i < json_array_size(enc); i++) {
        const json_t *v = json_array_get(enc, i);
        if (!str(v, "hex"))
            continue; /* refused in JS */
        check_value(str(v, "hex"), NULL, str(v, "hex"), str(v, "name"));
        checked++;
    }
    ck_assert_uint_ge(checked, 10);
    json_decref(vals);
}
END_TEST

/* ---------------------------------------------------------------- query */

typedef struct qrec {
    const char *id;
    msgpack_object obj;
} qrec;

static int qrec_cmp(const void *a, const void *b)
{
    return strcmp(((const qrec *)a)->id, ((const qrec *)b)->id); /* bytewise */
}

START_TEST(query_vectors)
{
    json_t *qv = load("query.json");
    const json_t *recs = json_object_get(qv, "records");
    size_t nrec = json_object_size(recs), k = 0;
    qrec *rs = calloc(nrec, sizeof *rs);
    uint8_t **bufs = calloc(nrec, sizeof *bufs);
    ck_assert(rs && bufs);
    msgpack_zone z;
    ck_assert(msgpack_zone_init(&z, 4096));
    const char *id;
    const json_t *h;
    json_object_foreach((json_t *)recs, id, h)
    {
        size_t n, off = 0;
        bufs[k] = tu_unhex(json_string_value(h), &n);
        rs[k].id = id;
        ck_assert_int_eq(msgpack_unpack((const char *)bufs[k], n, &off, &z, &rs[k].obj),
                         MSGPACK_UNPACK_SUCCESS);
        k++;
    }
    qsort(rs, nrec, sizeof *rs, qrec_cmp);
    const json_t *cases = json_object_get(qv, "cases");
    ck_assert_uint_ge(json_array_size(cases), 40);
    crdtdb__limits lim = {(size_t)1 << 20, 16, 1024, 10000, 0};
    for (size_t c = 0; c < json_array_size(cases); c++) {
        const json_t *cs = json_array_get(cases, c);
        const char *name = str(cs, "name"), *crit = str(cs, "criteria"), *err = str(cs, "error");
        size_t n = 0;
        uint8_t *b = crit ? tu_unhex(crit, &n) : NULL;
        crdtdb__query q;
        crdtdb__err e = CRDTDB__ERR_INIT;
        int rc = crdtdb__query_parse(&q, b, n, &lim, &e);
        if (err) {
            ck_assert_msg(rc == code_of(err), "%s: got %d, want %s", name, rc, err);
            ck_assert_msg(strcmp(e.msg, str(cs, "message")) == 0, "%s: message \"%s\"", name,
                          e.msg);
        } else {
            ck_assert_msg(rc == 0, "%s: %s", name, e.msg);
            const json_t *ids = json_object_get(cs, "ids");
            size_t m = 0;
            for (size_t i = 0; i < nrec; i++) {
                if (!crdtdb__query_match(&q, &rs[i].obj))
                    continue;
                ck_assert_msg(m < json_array_size(ids) &&
                                  strcmp(json_string_value(json_array_get(ids, m)), rs[i].id) == 0,
                              "%s: matched %s as result %zu", name, rs[i].id, m);
                m++;
            }
            ck_assert_msg(m == json_array_size(ids), "%s: %zu matches, want %zu", name, m,
                          json_array_size(ids));
        }
        crdtdb__query_free(&q);
        free(b);
    }
    msgpack_zone_destroy(&z);
    for (size_t i = 0; i < nrec; i++)
        free(bufs[i]);
    free(bufs);
    free(rs);
    json_decref(qv);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("vectors");
    TCase *tc = tcase_create("shared");
    tcase_add_test(tc, rules_vectors);
    tcase_add_test(tc, rules_forged);
    tcase_add_test(tc, rules_ops);
    tcase_add_test(tc, values_decode);
    tcase_add_test(tc, values_bad_and_encoded);
    tcase_add_test(tc, query_vectors);
    suite_add_tcase(s, tc);
    return tu_run(s);
}
