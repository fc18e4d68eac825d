/* LWW record rules (crdt/record.c): blob format, outcomes, and a
 * randomized check that merge order never matters and matches a reference
 * model of the rules in docs/crdt.md. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crdt/buf.h"
#include "crdt/path.h"
#include "crdt/record.h"
#include "tests/testutil.h"

static uint8_t KEYS[4][32];

static void keys_init(void)
{
    for (int i = 0; i < 4; i++)
        memset(KEYS[i], 0x10 * (i + 1), 32);
}

/* One write: 'a' add (base), 'r' remove (base), 'v' value leaf, 'm' map leaf. */
typedef struct w {
    char kind;
    const char *path; /* dot-separated for tests */
    uint64_t hlc;
    int origin;
    const char *json; /* value for 'v' */
} w;

/* Owns the encoded paths and values a record borrows. */
typedef struct pool {
    crdtdb_buf bufs[128];
    int n;
} pool;

static void pool_free(pool *p)
{
    for (int i = 0; i < p->n; i++)
        crdtdb_buf_free(&p->bufs[i]);
    p->n = 0;
}

static crdtdb_buf *pool_new(pool *p)
{
    ck_assert_int_lt(p->n, 128);
    crdtdb_buf *b = &p->bufs[p->n++];
    memset(b, 0, sizeof *b);
    return b;
}

static void encode_path(crdtdb_buf *b, const char *dotted)
{
    const char *s = dotted;
    for (;;) {
        const char *d = strchr(s, '.');
        size_t n = d ? (size_t)(d - s) : strlen(s);
        ck_assert_int_eq(crdtdb__path_push(b, s, n), 0);
        if (!d)
            break;
        s = d + 1;
    }
}

/* The leaf of a 'v' or 'm' write, its path and value kept in p. */
static crdtdb__leaf make_leaf(crdtdb__record *r, const w *x, pool *p)
{
    uint32_t o;
    ck_assert_int_eq(crdtdb__record_origin(r, KEYS[x->origin], &o), 0);
    crdtdb_buf *pb = pool_new(p);
    encode_path(pb, x->path);
    crdtdb__leaf l = {pb->data, (uint32_t)pb->len, CRDTDB__KIND_MAP, o, x->hlc, 0, NULL, 0};
    if (x->kind == 'v') {
        crdtdb_buf *vb = pool_new(p);
        tu_mp(vb, x->json);
        l.kind = CRDTDB__KIND_VALUE;
        l.val = vb->data;
        l.val_len = (uint32_t)vb->len;
    }
    return l;
}

static int apply(crdtdb__record *r, const w *x, pool *p)
{
    if (x->kind == 'a' || x->kind == 'r') {
        uint32_t o;
        ck_assert_int_eq(crdtdb__record_origin(r, KEYS[x->origin], &o), 0);
        return crdtdb__record_put_base(r, x->kind == 'a' ? CRDTDB__BASE_ADD
                                                         : CRDTDB__BASE_REMOVE,
                                       x->hlc, o, 0);
    }
    crdtdb__leaf l = make_leaf(r, x, p);
    return crdtdb__record_put_leaf(r, &l);
}

static char *render(const crdtdb__record *r)
{
    crdtdb_buf b = CRDTDB_BUF_INIT;
    ck_assert_int_eq(crdtdb__record_render(r, &b), 0);
    char *s = b.len ? tu_json(b.data, b.len) : strdup("(invisible)");
    crdtdb_buf_free(&b);
    return s;
}

/* The golden vectors (every order of each write set renders one value) are
 * tests/vectors/rules.json, shared with the JS client and checked by
 * tests/test_vectors.c: one source of truth for both implementations. */

/* "a.b" in a test path means nesting; the literal dotted key case is built
 * by hand here. */
START_TEST(dotted_key_is_one_segment)
{
    crdtdb_buf p1 = CRDTDB_BUF_INIT, p2 = CRDTDB_BUF_INIT, v = CRDTDB_BUF_INIT;
    ck_assert_int_eq(crdtdb__path_push(&p1, "a.b", 3), 0);
    encode_path(&p2, "a.b");
    ck_assert(p1.len != p2.len || memcmp(p1.data, p2.data, p1.len) != 0);
    ck_assert_int_eq(crdtdb__path_depth(p1.data, p1.len), 1);
    ck_assert_int_eq(crdtdb__path_depth(p2.data, p2.len), 2);
    crdtdb__record r;
    crdtdb__record_init(&r);
    uint32_t o;
    crdtdb__record_origin(&r, KEYS[0], &o);
    crdtdb__record_put_base(&r, CRDTDB__BASE_ADD, 1, o, 0);
    tu_mp(&v, "1");
    crdtdb__leaf l1 = {p1.data, (uint32_t)p1.len, CRDTDB__KIND_VALUE, o, 2, 0, v.data, (uint32_t)v.len};
    crdtdb__leaf l2 = {p2.data, (uint32_t)p2.len, CRDTDB__KIND_VALUE, o, 3, 0, v.data, (uint32_t)v.len};
    ck_assert_int_eq(crdtdb__record_put_leaf(&r, &l1), 1);
    ck_assert_int_eq(crdtdb__record_put_leaf(&r, &l2), 1);
    char *s = render(&r);
    ck_assert_str_eq(s, "{\"a\":{\"b\":1},\"a.b\":1}");
    free(s);
    crdtdb__record_free(&r);
    crdtdb_buf_free(&p1);
    crdtdb_buf_free(&p2);
    crdtdb_buf_free(&v);
}
END_TEST

START_TEST(outcomes_and_dead_seqs)
{
    crdtdb__record r;
    pool p = {0};
    crdtdb__record_init(&r);
    w add = {'a', 0, 10, 0, 0}, a1 = {'v', "a", 11, 0, "1"}, a0 = {'v', "a", 9, 0, "0"};
    ck_assert_int_eq(apply(&r, &add, &p), 1);
    ck_assert_int_eq(apply(&r, &add, &p), 0); /* duplicate */
    ck_assert_int_eq(apply(&r, &a1, &p), 1);
    ck_assert_int_eq(apply(&r, &a1, &p), 0);
    ck_assert_int_eq(apply(&r, &a0, &p), 0); /* older than the base */
    r.base_seq = 1;
    r.leaves[0].seq = 2;
    w rm = {'r', 0, 20, 1, 0};
    ck_assert_int_eq(apply(&r, &rm, &p), 1);
    ck_assert_uint_eq(r.ndead, 2); /* the add and the field */
    ck_assert_uint_eq(r.nleaves, 0);
    crdtdb__record_free(&r);
    pool_free(&p);
}
END_TEST

/* An origin table as the storage keeps one: numbers from 200 (two
 * varint bytes), in the order keys are first numbered. */
typedef struct ttab {
    const uint8_t *keys[8];
    uint32_t n;
} ttab;

static const uint8_t *tt_key_of(void *ctx, uint32_t num, int *rc)
{
    ttab *t = ctx;
    if (num < 200 || num - 200 >= t->n) {
        *rc = CRDTDB_ECORRUPT;
        return NULL;
    }
    return t->keys[num - 200];
}

static int tt_num_of(void *ctx, const uint8_t *key, uint32_t *num)
{
    ttab *t = ctx;
    for (uint32_t i = 0; i < t->n; i++)
        if (memcmp(t->keys[i], key, CRDTDB_REPLICA_ID_BYTES) == 0) {
            *num = 200 + i;
            return 0;
        }
    if (t->n == 8)
        return CRDTDB_ENOMEM;
    t->keys[t->n] = key;
    *num = 200 + t->n++;
    return 0;
}

/* The stored blob is a format: these bytes must not drift. */
START_TEST(golden_blob)
{
    crdtdb__record r;
    pool p = {0};
    crdtdb__record_init(&r);
    w ws[] = {{'a', 0, 0x0102, 0, 0}, {'v', "k", 0x0103, 1, "7"}, {'m', "m", 0x0104, 0, 0}};
    for (int i = 0; i < 3; i++)
        apply(&r, &ws[i], &p);
    r.base_seq = 1;
    r.leaves[0].seq = 2;
    r.leaves[1].seq = 3;
    r.vis_seq = 3;
    r.shown_seq = 1;
    crdtdb_buf vis = CRDTDB_BUF_INIT, enc = CRDTDB_BUF_INIT;
    ck_assert_int_eq(crdtdb__record_render(&r, &vis), 0);
    ck_assert_int_eq(crdtdb__record_encode(&r, vis.data, vis.len, NULL, NULL, &enc), 0);
    static const uint8_t want[] = {
        0x03, 0x07, 0x82, 0xa1, 'k', 0x07, 0xa1, 'm', 0x80, /* version, visible */
        0x01, 0, 0, 0, 0, 0, 0, 0x01, 0x02, 0x00, 0x01,   /* base add hlc origin seq */
        0x02,                                             /* two origins */
        0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10,
        0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10,
        0x10, 0x10, 0x10, 0x10, 0x10, 0x10,
        0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20,
        0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20,
        0x20, 0x20, 0x20, 0x20, 0x20, 0x20,
        0x02, /* two leaves: path, hlc - base hlc and seq - base seq zigzagged */
        0x03, 'k', 0x00, 0x01, 0x02, 0x01, 0x02, 0x00, 0x01, 0x07, /* +1, +1 */
        0x03, 'm', 0x00, 0x01, 0x04, 0x00, 0x04, 0x01,             /* +2, +2 */
        0x03, 0x01,                                         /* vis_seq, shown_seq */
    };
    /* the same record as version 2 wrote it: stamps u64, sequences plain */
    static const uint8_t want2[] = {
        0x02, 0x07, 0x82, 0xa1, 'k', 0x07, 0xa1, 'm', 0x80, /* version, visible */
        0x01, 0, 0, 0, 0, 0, 0, 0x01, 0x02, 0x00, 0x01,   /* base add hlc origin seq */
        0x02,                                             /* two origins */
        0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10,
        0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10,
        0x10, 0x10, 0x10, 0x10, 0x10, 0x10,
        0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20,
        0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20,
        0x20, 0x20, 0x20, 0x20, 0x20, 0x20,
        0x02,                                               /* two leaves */
        0x03, 'k', 0x00, 0x01, 0, 0, 0, 0, 0, 0, 0x01, 0x03, 0x01, 0x02, 0x00, 0x01, 0x07,
        0x03, 'm', 0x00, 0x01, 0, 0, 0, 0, 0, 0, 0x01, 0x04, 0x00, 0x03, 0x01,
        0x03, 0x01,                                         /* vis_seq, shown_seq */
    };
    ck_assert_uint_eq(enc.len, sizeof want);
    ck_assert_mem_eq(enc.data, want, sizeof want);
    /* and it decodes back to the same record */
    crdtdb__record d;
    crdtdb__record_init(&d);
    ck_assert_int_eq(crdtdb__record_decode(&d, enc.data, enc.len, NULL), 0);
    crdtdb_buf enc2 = CRDTDB_BUF_INIT;
    ck_assert_int_eq(crdtdb__record_encode(&d, d.visible, d.visible_len, NULL, NULL, &enc2), 0);
    ck_assert_mem_eq(enc2.data, want, sizeof want);
    /* truncations and corruptions never decode */
    for (size_t n = 0; n < enc.len; n++)
        ck_assert_int_ne(crdtdb__record_decode(&d, enc.data, n, NULL), 0);
    /* a version 2 blob decodes to the same record: written again, version 3 */
    ck_assert_int_eq(crdtdb__record_decode(&d, want2, sizeof want2, NULL), 0);
    ck_assert_uint_eq(d.leaves[0].hlc, 0x0103);
    ck_assert_uint_eq(d.leaves[1].seq, 3);
    ck_assert_int_eq(crdtdb__record_encode(&d, d.visible, d.visible_len, NULL, NULL, &enc2), 0);
    ck_assert_uint_eq(enc2.len, sizeof want);
    ck_assert_mem_eq(enc2.data, want, sizeof want);
    for (size_t n = 0; n < sizeof want2; n++)
        ck_assert_int_ne(crdtdb__record_decode(&d, want2, n, NULL), 0);
    /* a version 1 blob (no trailer) still decodes, its sequences unknown */
    crdtdb__buf_set(&enc, want2, sizeof want2);
    enc.data[0] = 1;
    ck_assert_int_eq(crdtdb__record_decode(&d, enc.data, enc.len - 2, NULL), 0);
    ck_assert_uint_eq(d.vis_seq, 0);
    ck_assert_uint_eq(d.nleaves, 2);
    ck_assert_uint_eq(d.leaves[0].hlc, 0x0103);
    ck_assert_int_ne(crdtdb__record_decode(&d, enc.data, enc.len, NULL), 0); /* v1 + trailer */
    enc.data[0] = 9;
    ck_assert_int_eq(crdtdb__record_decode(&d, enc.data, enc.len, NULL), CRDTDB_EVERSION);
    /* leaves older than the base's stamp or sequence, and leaves without a
     * base, round-trip through the differences */
    r.leaves[0].hlc = 0x0100;
    r.leaves[0].seq = UINT64_MAX - 3;
    r.leaves[1].hlc = UINT64_MAX;
    ck_assert_int_eq(crdtdb__record_encode(&r, vis.data, vis.len, NULL, NULL, &enc), 0);
    ck_assert_int_eq(crdtdb__record_decode(&d, enc.data, enc.len, NULL), 0);
    ck_assert_uint_eq(d.leaves[0].hlc, 0x0100);
    ck_assert_uint_eq(d.leaves[0].seq, UINT64_MAX - 3);
    ck_assert_uint_eq(d.leaves[1].hlc, UINT64_MAX);
    r.base_kind = CRDTDB__BASE_NONE; /* its stale stamp and sequence unused */
    ck_assert_int_eq(crdtdb__record_encode(&r, vis.data, vis.len, NULL, NULL, &enc), 0);
    ck_assert_int_eq(crdtdb__record_decode(&d, enc.data, enc.len, NULL), 0);
    ck_assert_uint_eq(d.leaves[0].hlc, 0x0100);
    ck_assert_uint_eq(d.leaves[1].seq, 3);
    ck_assert_uint_eq(d.leaves[1].hlc, UINT64_MAX);
    /* version 4: the same with the origins as numbers of the table */
    ttab tt = {{0}, 0};
    crdtdb__origin_table ot = {tt_key_of, tt_num_of, &tt};
    r.base_kind = CRDTDB__BASE_ADD;
    r.leaves[0].hlc = 0x0103;
    r.leaves[0].seq = 2;
    r.leaves[1].hlc = 0x0104;
    ck_assert_int_eq(crdtdb__record_encode(&r, vis.data, vis.len, NULL, &ot, &enc), 0);
    static const uint8_t want4[] = {
        0x04, 0x07, 0x82, 0xa1, 'k', 0x07, 0xa1, 'm', 0x80, /* version, visible */
        0x01, 0, 0, 0, 0, 0, 0, 0x01, 0x02, 0x00, 0x01,   /* base add hlc origin seq */
        0x02, 0xc8, 0x01, 0xc9, 0x01,                     /* origins 200 and 201 */
        0x02, /* leaves: path, head (value length << 3 | value in the
               * rendering << 2 | same stamp as the base << 1 | kind),
               * [ms - base ms zigzagged, counter, origin], seq - base seq
               * zigzagged, value (or its offset in the rendering) */
        0x03, 'k', 0x00, 0x01, 0x08, 0x00, 0x83, 0x02, 0x01, 0x02, 0x07,
        0x03, 'm', 0x00, 0x01, 0x01, 0x00, 0x84, 0x02, 0x00, 0x04,
        0x04, 0x00, /* vis_seq, shown_seq - base seq zigzagged */
    };
    ck_assert_uint_eq(enc.len, sizeof want4);
    ck_assert_mem_eq(enc.data, want4, sizeof want4);
    ck_assert_uint_eq(tt.n, 2);
    ck_assert_mem_eq(tt.keys[0], r.origins[r.base_origin], CRDTDB_REPLICA_ID_BYTES);
    ck_assert_int_eq(crdtdb__record_decode(&d, enc.data, enc.len, &ot), 0);
    ck_assert_ptr_eq(d.origins[d.base_origin], tt.keys[0]); /* the table's key */
    ck_assert_int_eq(crdtdb__record_encode(&d, d.visible, d.visible_len, NULL, &ot, &enc2), 0);
    ck_assert_mem_eq(enc2.data, want4, sizeof want4);
    /* and read without it, or with a number it lacks */
    ck_assert_int_eq(crdtdb__record_decode(&d, enc.data, enc.len, NULL), CRDTDB_EVERSION);
    tt.n = 1;
    ck_assert_int_eq(crdtdb__record_decode(&d, enc.data, enc.len, &ot), CRDTDB_ECORRUPT);
    tt.n = 2;
    enc.data[21] = 0x00; /* number 0 is never given */
    enc.data[22] = 0x00;
    ck_assert_int_eq(crdtdb__record_decode(&d, enc.data, enc.len, &ot), CRDTDB_ECORRUPT);
    for (size_t n = 0; n < sizeof want4; n++)
        ck_assert_int_ne(crdtdb__record_decode(&d, want4, n, &ot), 0);
    /* a leaf stamped as the base: its head says so, and no stamp follows */
    r.leaves[1].hlc = r.base_hlc;
    r.leaves[1].origin = r.base_origin;
    ck_assert_int_eq(crdtdb__record_encode(&r, vis.data, vis.len, NULL, &ot, &enc), 0);
    static const uint8_t leaf_m[] = {0x03, 'm', 0x00, 0x01, 0x03, 0x04, 0x04, 0x00};
    ck_assert_uint_eq(enc.len, sizeof want4 - 4);
    ck_assert_mem_eq(enc.data + enc.len - sizeof leaf_m, leaf_m, sizeof leaf_m);
    ck_assert_int_eq(crdtdb__record_decode(&d, enc.data, enc.len, &ot), 0);
    ck_assert_uint_eq(d.leaves[1].hlc, 0x0102);
    ck_assert_uint_eq(d.leaves[1].origin, d.base_origin);
    ck_assert_uint_eq(d.leaves[1].kind, CRDTDB__KIND_MAP);
    ck_assert_uint_eq(d.leaves[1].seq, 3);
    r.leaves[1].hlc = 0x0104;
    /* values the rendering holds are stored once, as an offset into it,
     * where that is shorter than the value: not this 1-byte one */
    uint32_t offs[2];
    ck_assert_int_eq(crdtdb__record_render_at(&r, &vis, offs), 0);
    ck_assert_uint_eq(offs[0], 3); /* 82 a1 'k' [07] a1 'm' 80 */
    ck_assert_uint_eq(offs[1], UINT32_MAX); /* a map: no value */
    ck_assert_int_eq(crdtdb__record_encode(&r, vis.data, vis.len, offs, &ot, &enc), 0);
    ck_assert_mem_eq(enc.data, want4, sizeof want4);
    {
        crdtdb__record s;
        crdtdb__record_init(&s);
        w sa = {'a', 0, 0x0200, 0, 0}, sv = {'v', "s", 0x0200, 0, "\"hello\""};
        apply(&s, &sa, &p);
        apply(&s, &sv, &p);
        s.base_seq = 1;
        s.leaves[0].seq = 2;
        ck_assert_int_eq(crdtdb__record_render_at(&s, &vis, offs), 0);
        ck_assert_uint_eq(offs[0], 3); /* 81 a1 's' [a5 'hello'] */
        ck_assert_int_eq(crdtdb__record_encode(&s, vis.data, vis.len, offs, &ot, &enc), 0);
        /* path, head (6 << 3 | in the rendering | stamped as the base), seq
         * +1 zigzagged, offset 3; then vis_seq and shown_seq (0: -1) */
        static const uint8_t leaf_s[] = {0x03, 's', 0x00, 0x01, 0x36, 0x02, 0x03, 0x01, 0x01};
        ck_assert_mem_eq(enc.data + enc.len - sizeof leaf_s, leaf_s, sizeof leaf_s);
        ck_assert_int_eq(crdtdb__record_decode(&d, enc.data, enc.len, &ot), 0);
        ck_assert_ptr_eq(d.leaves[0].val, d.visible + 3);
        ck_assert_uint_eq(d.leaves[0].val_len, 6);
        ck_assert_int_eq(crdtdb__record_encode(&d, d.visible, d.visible_len, NULL, &ot, &enc2), 0);
        ck_assert_uint_eq(enc2.len, enc.len + 6 - 1); /* written out again inline */
        enc.data[enc.len - 3] = 0x04; /* an offset whose value runs past the rendering */
        ck_assert_int_eq(crdtdb__record_decode(&d, enc.data, enc.len, &ot), CRDTDB_ECORRUPT);
        offs[0] = 2; /* an offset that does not hold the value: written inline */
        ck_assert_int_eq(crdtdb__record_encode(&s, vis.data, vis.len, offs, &ot, &enc), 0);
        ck_assert_mem_eq(enc.data, enc2.data, enc2.len);
        crdtdb__record_free(&s);
        ck_assert_int_eq(crdtdb__record_render(&r, &vis), 0);
    }
    /* a version 3 blob read through the table is written again as 4 */
    ck_assert_int_eq(crdtdb__record_decode(&d, want, sizeof want, &ot), 0);
    ck_assert_int_eq(crdtdb__record_encode(&d, d.visible, d.visible_len, NULL, &ot, &enc2), 0);
    ck_assert_mem_eq(enc2.data, want4, sizeof want4);
    crdtdb__record_free(&d);
    crdtdb__record_free(&r);
    crdtdb_buf_free(&vis);
    crdtdb_buf_free(&enc);
    crdtdb_buf_free(&enc2);
    pool_free(&p);
}
END_TEST

/* ----------------------------------------------------- reference model */

static const char *PATHS[] = {"a", "a.x", "a.y", "a.x.q", "b", "b.z", "c"};
#define NPATHS 7

typedef struct ref {
    int has_base;
    w base;
    int has[NPATHS];
    w reg[NPATHS];
} ref;

static int stamp_cmp(const w *a, const w *b)
{
    if (a->hlc != b->hlc)
        return a->hlc < b->hlc ? -1 : 1;
    return memcmp(KEYS[a->origin], KEYS[b->origin], 32);
}

static int path_index(const char *p)
{
    for (int i = 0; i < NPATHS; i++)
        if (strcmp(PATHS[i], p) == 0)
            return i;
    return -1;
}

static void ref_apply(ref *m, const w *x)
{
    if (x->kind == 'a' || x->kind == 'r') {
        if (!m->has_base || stamp_cmp(x, &m->base) > 0) {
            m->base = *x;
            m->has_base = 1;
        }
        return;
    }
    int i = path_index(x->path);
    if (!m->has[i] || stamp_cmp(x, &m->reg[i]) > 0) {
        m->reg[i] = *x;
        m->has[i] = 1;
    }
}

static int is_anc(const char *a, const char *b)
{
    size_t n = strlen(a);
    return strlen(b) > n && strncmp(a, b, n) == 0 && b[n] == '.';
}

/* The rules, stated directly over all registers ever received. */
static char *ref_render(const ref *m)
{
    if (!m->has_base || m->base.kind != 'a')
        return strdup("(invisible)");
    int live[NPATHS] = {0};
    for (int i = 0; i < NPATHS; i++) {
        if (!m->has[i] || stamp_cmp(&m->reg[i], &m->base) < 0)
            continue;
        live[i] = 1;
        for (int j = 0; j < NPATHS; j++)
            if (m->has[j] && is_anc(PATHS[j], PATHS[i]) &&
                stamp_cmp(&m->reg[j], &m->reg[i]) > 0)
                live[i] = 0;
    }
    /* rebuild a record of the live leaves; values with live children are maps */
    crdtdb__record r;
    pool p = {0};
    crdtdb__record_init(&r);
    uint32_t o;
    crdtdb__record_origin(&r, KEYS[0], &o);
    crdtdb__record_put_base(&r, CRDTDB__BASE_ADD, 0, o, 0);
    for (int i = 0; i < NPATHS; i++) {
        if (!live[i])
            continue;
        int has_child = 0;
        for (int j = 0; j < NPATHS; j++)
            has_child |= live[j] && is_anc(PATHS[i], PATHS[j]);
        w x = m->reg[i];
        x.origin = 0;
        x.hlc = 1;
        if (has_child)
            x.kind = 'm';
        ck_assert_int_eq(apply(&r, &x, &p), 1);
    }
    char *s = render(&r);
    crdtdb__record_free(&r);
    pool_free(&p);
    return s;
}

/* the values random writes take: the last, a long string, is rendered past
 * offset 127 where offsets take two bytes */
static const char *VALS[] = {"1", "2", "\"s\"", "null", "[1]", "{\"k\":1}", "true",
                             "\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
                             "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\""};

/* 1..24 random writes into ws, of the first nvals VALS: stamps tie often,
 * and identical stamps mean identical writes (one op, one stamp). */
static int random_writes(w *ws, const char *const *vals, int nvals)
{
    int n = 1 + rand() % 24;
    for (int i = 0; i < n; i++) {
        int k = rand() % 10;
        ws[i].kind = k == 0 ? 'a' : k == 1 ? 'r' : k == 2 ? 'm' : 'v';
        ws[i].path = PATHS[rand() % NPATHS];
        ws[i].hlc = 1 + (uint64_t)(rand() % 12);
        ws[i].origin = rand() % 3;
        ws[i].json = vals[rand() % nvals];
    }
    for (int i = 0; i < n; i++)
        for (int j = 0; j < i; j++)
            if (ws[i].hlc == ws[j].hlc && ws[i].origin == ws[j].origin &&
                (ws[i].kind == 'a' || ws[i].kind == 'r') ==
                    (ws[j].kind == 'a' || ws[j].kind == 'r'))
                ws[i] = ws[j];
    return n;
}

START_TEST(random_orders_converge)
{
    unsigned seed = tu_seed();
    srand(seed);
    for (int round = 0; round < 3000; round++) {
        w ws[24];
        int n = random_writes(ws, VALS, 7);
        ref m;
        memset(&m, 0, sizeof m);
        for (int i = 0; i < n; i++)
            ref_apply(&m, &ws[i]);
        char *want = ref_render(&m);
        for (int t = 0; t < 4; t++) {
            /* a random order with random duplicates */
            int order[48], k = 0;
            for (int i = 0; i < n; i++)
                order[k++] = i;
            for (int i = 0; i < n; i++)
                if (rand() % 4 == 0)
                    order[k++] = rand() % n;
            for (int i = k - 1; i > 0; i--) {
                int j = rand() % (i + 1), tmp = order[i];
                order[i] = order[j];
                order[j] = tmp;
            }
            crdtdb__record r;
            pool p = {0};
            crdtdb__record_init(&r);
            for (int i = 0; i < k; i++)
                ck_assert_int_ge(apply(&r, &ws[order[i]], &p), 0);
            char *got = render(&r);
            ck_assert_msg(strcmp(got, want) == 0, "seed %u round %d: got %s want %s",
                          seed, round, got, want);
            free(got);
            crdtdb__record_free(&r);
            pool_free(&p);
        }
        free(want);
    }
}
END_TEST

/* Numbers the record's new registers from *seq on, as a store would. */
static void number(crdtdb__record *r, uint64_t *seq)
{
    if (r->base_kind != CRDTDB__BASE_NONE && !r->base_seq)
        r->base_seq = ++*seq;
    for (uint32_t i = 0; i < r->nleaves; i++)
        if (!r->leaves[i].seq)
            r->leaves[i].seq = ++*seq;
}

/* Every numbered register is either live in r or in its dead list, once. */
static void check_seqs(const crdtdb__record *r, uint64_t last, const char *what)
{
    unsigned char seen[64] = {0};
    ck_assert_uint_lt(last, sizeof seen);
    if (r->base_kind != CRDTDB__BASE_NONE)
        seen[r->base_seq]++;
    for (uint32_t i = 0; i < r->nleaves; i++)
        seen[r->leaves[i].seq]++;
    for (uint32_t i = 0; i < r->ndead; i++)
        seen[r->dead[i]]++;
    for (uint64_t q = 1; q <= last; q++)
        ck_assert_msg(seen[q] == 1, "%s: seq %llu counted %d times", what,
                      (unsigned long long)q, seen[q]);
}

/* put_many (a delta's fields for one record at once, rebuilt in path
 * order) ends exactly where single puts in delta order end. */
START_TEST(put_many_matches_single_puts)
{
    unsigned seed = tu_seed();
    srand(seed);
    for (int round = 0; round < 2000; round++) {
        w ws[40];
        int n = 2 + rand() % 38, k = rand() % n;
        for (int i = 0; i < n; i++) {
            int c = rand() % 10;
            ws[i].kind = c == 0 ? 'a' : c == 1 ? 'r' : c == 2 ? 'm' : 'v';
            ws[i].path = PATHS[rand() % NPATHS];
            ws[i].hlc = 1 + (uint64_t)(rand() % 12);
            ws[i].origin = rand() % 3;
            ws[i].json = VALS[rand() % 7];
        }
        for (int i = 0; i < n; i++) /* one stamp, one write */
            for (int j = 0; j < i; j++)
                if (ws[i].hlc == ws[j].hlc && ws[i].origin == ws[j].origin &&
                    (ws[i].kind == 'a' || ws[i].kind == 'r') ==
                        (ws[j].kind == 'a' || ws[j].kind == 'r'))
                    ws[i] = ws[j];
        crdtdb__record a, b;
        pool pa = {0}, pb = {0};
        crdtdb__record_init(&a);
        crdtdb__record_init(&b);
        uint64_t sa = 0, sb = 0;
        for (int i = 0; i < k; i++) { /* what was stored before */
            ck_assert_int_ge(apply(&a, &ws[i], &pa), 0);
            number(&a, &sa);
            ck_assert_int_ge(apply(&b, &ws[i], &pb), 0);
            number(&b, &sb);
        }
        size_t won_a = 0, won_b = 0;
        for (int i = k; i < n; i++) { /* the delta: single puts */
            int rc = apply(&a, &ws[i], &pa);
            ck_assert_int_ge(rc, 0);
            if (ws[i].kind != 'a' && ws[i].kind != 'r')
                won_a += (size_t)rc;
        }
        crdtdb__leaf ls[40];
        uint32_t nl = 0;
        for (int i = k; i < n; i++) /* the delta: bases, then leaves at once */
            if (ws[i].kind == 'a' || ws[i].kind == 'r')
                ck_assert_int_ge(apply(&b, &ws[i], &pb), 0);
            else
                ls[nl++] = make_leaf(&b, &ws[i], &pb);
        ck_assert_int_eq(crdtdb__record_put_many(&b, ls, nl, &won_b), 0);
        char *ga = render(&a), *gb = render(&b);
        ck_assert_msg(strcmp(ga, gb) == 0, "seed %u round %d: single %s, many %s", seed, round,
                      ga, gb);
        ck_assert_uint_eq(a.nleaves, b.nleaves);
        for (uint32_t i = 0; i < a.nleaves; i++)
            ck_assert_msg(a.leaves[i].hlc == b.leaves[i].hlc &&
                              a.leaves[i].seq == b.leaves[i].seq &&
                              a.leaves[i].path_len == b.leaves[i].path_len,
                          "seed %u round %d: leaf %u differs", seed, round, i);
        ck_assert_uint_le(won_b, won_a + 0); /* a rebuilt leaf is stored once */
        number(&a, &sa);
        number(&b, &sb);
        check_seqs(&b, sb, "put_many");
        free(ga);
        free(gb);
        crdtdb__record_free(&a);
        crdtdb__record_free(&b);
        pool_free(&pa);
        pool_free(&pb);
    }
}
END_TEST

/* drop_upto takes back registers numbered up to a point and no others. */
START_TEST(drop_upto_keeps_later_registers)
{
    crdtdb__record r;
    pool p = {0};
    crdtdb__record_init(&r);
    uint64_t seq = 0;
    const w ws[] = {{'a', NULL, 1, 0, NULL}, {'v', "a", 2, 0, "1"}, {'v', "b", 3, 0, "2"},
                    {'v', "c", 4, 1, "3"}};
    for (int i = 0; i < 4; i++) {
        ck_assert_int_eq(apply(&r, &ws[i], &p), 1);
        number(&r, &seq);
    }
    ck_assert_int_eq(crdtdb__record_drop_upto(&r, 2), 0); /* the add and "a" */
    ck_assert_int_eq(r.base_kind, CRDTDB__BASE_NONE);
    ck_assert_uint_eq(r.nleaves, 2);
    ck_assert_uint_eq(r.ndead, 2);
    check_seqs(&r, seq, "drop_upto");
    char *s = render(&r);
    ck_assert_str_eq(s, "(invisible)");
    free(s);
    ck_assert_int_eq(crdtdb__record_drop_upto(&r, 4), 0);
    ck_assert_uint_eq(r.nleaves, 0);
    check_seqs(&r, seq, "drop_upto all");
    crdtdb__record_free(&r);
    pool_free(&p);
}
END_TEST

/* Version 4 with values stored as offsets into the rendering, as slot.c
 * stores records, over random histories: render_at, encode with offsets,
 * decode, and then (a) every leaf equal,
 * (b) the rendering of the decoded record equals the stored one,
 * (c) re-storing the decoded record unchanged gives the same bytes
 * (canonical under the storage path), (d) hidden value leaves and
 * invisible records are stored inline, (e) a big rendering (offsets of
 * two or more varint bytes) works, (f) merges after decode keep values. */
START_TEST(offsets_round_trip_random)
{
    unsigned seed = tu_seed();
    srand(seed);
    ttab tt = {{0}, 0};
    crdtdb__origin_table ot = {tt_key_of, tt_num_of, &tt};
    size_t inline_hidden = 0, offs_used = 0, big = 0;
    for (int round = 0; round < 3000; round++) {
        w ws[24];
        int n = random_writes(ws, VALS, 8);
        crdtdb__record r, d, d2;
        pool p = {0};
        crdtdb__record_init(&r);
        crdtdb__record_init(&d);
        crdtdb__record_init(&d2);
        int half = n / 2;
        for (int i = 0; i < half; i++)
            ck_assert_int_ge(apply(&r, &ws[i], &p), 0);
        uint64_t seq = 0;
        number(&r, &seq);
        crdtdb_buf vis = CRDTDB_BUF_INIT, enc = CRDTDB_BUF_INIT, vis2 = CRDTDB_BUF_INIT,
                   enc2 = CRDTDB_BUF_INIT, blob = CRDTDB_BUF_INIT;
        uint32_t offs[64], offs2[64];
        ck_assert_int_eq(crdtdb__record_render_at(&r, &vis, offs), 0);
        for (uint32_t i = 0; i < r.nleaves; i++) {
            if (offs[i] != UINT32_MAX) {
                offs_used++;
                big += offs[i] >= 128;
                ck_assert_mem_eq(vis.data + offs[i], r.leaves[i].val, r.leaves[i].val_len);
            } else if (r.leaves[i].kind == CRDTDB__KIND_VALUE) {
                inline_hidden++;
            }
        }
        ck_assert_int_eq(crdtdb__record_encode(&r, vis.data, vis.len, offs, &ot, &enc), 0);
        ck_assert_int_eq(crdtdb__buf_set(&blob, enc.data, enc.len), 0);
        ck_assert_int_eq(crdtdb__record_decode(&d, blob.data, blob.len, &ot), 0);
        ck_assert_uint_eq(d.nleaves, r.nleaves);
        for (uint32_t i = 0; i < r.nleaves; i++) {
            ck_assert_uint_eq(d.leaves[i].kind, r.leaves[i].kind);
            ck_assert_uint_eq(d.leaves[i].val_len, r.leaves[i].val_len);
            if (r.leaves[i].val_len)
                ck_assert_mem_eq(d.leaves[i].val, r.leaves[i].val, r.leaves[i].val_len);
            ck_assert_uint_eq(d.leaves[i].hlc, r.leaves[i].hlc);
            ck_assert_uint_eq(d.leaves[i].seq, r.leaves[i].seq);
        }
        ck_assert_int_eq(crdtdb__record_render_at(&d, &vis2, offs2), 0);
        ck_assert_uint_eq(vis2.len, d.visible_len);
        if (vis2.len)
            ck_assert_mem_eq(vis2.data, d.visible, vis2.len);
        ck_assert_int_eq(crdtdb__record_encode(&d, vis2.data, vis2.len, offs2, &ot, &enc2), 0);
        ck_assert_uint_eq(enc2.len, enc.len);
        ck_assert_mem_eq(enc2.data, enc.data, enc.len);
        for (int i = half; i < n; i++) {
            w x = ws[i];
            if (x.kind == 'a' || x.kind == 'r') {
                uint32_t o;
                ck_assert_int_eq(crdtdb__record_origin(&d, KEYS[x.origin], &o), 0);
                ck_assert_int_ge(crdtdb__record_put_base(&d, x.kind == 'a' ? CRDTDB__BASE_ADD
                                                                      : CRDTDB__BASE_REMOVE,
                                                         x.hlc, o, 0), 0);
            } else {
                crdtdb__leaf l = make_leaf(&d, &x, &p);
                ck_assert_int_ge(crdtdb__record_put_leaf(&d, &l), 0);
            }
            ck_assert_int_ge(apply(&r, &ws[i], &p), 0);
        }
        number(&d, &seq);
        ck_assert_int_eq(crdtdb__record_render_at(&d, &vis2, offs2), 0);
        char *want = render(&r), *got = render(&d);
        ck_assert_msg(strcmp(got, want) == 0, "seed %u round %d: %s vs %s", seed, round, got, want);
        free(want);
        free(got);
        ck_assert_int_eq(crdtdb__record_encode(&d, vis2.data, vis2.len, offs2, &ot, &enc2), 0);
        ck_assert_int_eq(crdtdb__record_decode(&d2, enc2.data, enc2.len, &ot), 0);
        ck_assert_uint_eq(d2.nleaves, d.nleaves);
        for (uint32_t i = 0; i < d.nleaves; i++) {
            ck_assert_uint_eq(d2.leaves[i].val_len, d.leaves[i].val_len);
            if (d.leaves[i].val_len)
                ck_assert_mem_eq(d2.leaves[i].val, d.leaves[i].val, d.leaves[i].val_len);
        }
        crdtdb__record_free(&r);
        crdtdb__record_free(&d);
        crdtdb__record_free(&d2);
        crdtdb_buf_free(&vis);
        crdtdb_buf_free(&vis2);
        crdtdb_buf_free(&enc);
        crdtdb_buf_free(&enc2);
        crdtdb_buf_free(&blob);
        pool_free(&p);
    }
    ck_assert_uint_gt(offs_used, 100); /* the cases came up */
    ck_assert_uint_gt(inline_hidden, 10);
    ck_assert_uint_gt(big, 10);
}
END_TEST

/* An offset is used only where it is shorter than the value: 60 one-byte
 * values, most past offset 127 (two varint bytes), cost no more. */
START_TEST(offsets_never_cost_more)
{
    ttab tt = {{0}, 0};
    crdtdb__origin_table ot = {tt_key_of, tt_num_of, &tt};
    crdtdb__record r;
    pool p = {0};
    crdtdb__record_init(&r);
    w add = {'a', 0, 10, 0, 0};
    apply(&r, &add, &p);
    char names[60][8];
    for (int i = 0; i < 60; i++) {
        snprintf(names[i], sizeof names[i], "k%02d", i);
        w x = {'v', names[i], 11, 0, "1"};
        ck_assert_int_eq(apply(&r, &x, &p), 1);
    }
    uint64_t seq = 0;
    number(&r, &seq);
    crdtdb_buf vis = CRDTDB_BUF_INIT, e1 = CRDTDB_BUF_INIT, e2 = CRDTDB_BUF_INIT;
    uint32_t offs[64];
    ck_assert_int_eq(crdtdb__record_render_at(&r, &vis, offs), 0);
    ck_assert_int_eq(crdtdb__record_encode(&r, vis.data, vis.len, offs, &ot, &e1), 0);
    ck_assert_int_eq(crdtdb__record_encode(&r, vis.data, vis.len, NULL, &ot, &e2), 0);
    ck_assert_uint_eq(e1.len, e2.len);
    crdtdb_buf_free(&vis);
    crdtdb_buf_free(&e1);
    crdtdb_buf_free(&e2);
    crdtdb__record_free(&r);
    pool_free(&p);
}
END_TEST

/* crdt/keyidx.c: past the scan, the index finds every key at its first
 * position, misses absent ones, follows appends, and starts over when the
 * array was emptied and refilled; records look origins up through it. */
START_TEST(origins_found_by_index)
{
    enum { N = 5000 };
    uint8_t(*keys)[32] = malloc(N * sizeof *keys);
    const uint8_t **arr = malloc(N * sizeof *arr);
    ck_assert_ptr_nonnull(keys);
    ck_assert_ptr_nonnull(arr);
    uint32_t rnd = 12345;
    for (uint32_t i = 0; i < N; i++) {
        for (int b = 0; b < 32; b++) {
            rnd = rnd * 1103515245u + 12345u;
            keys[i][b] = (uint8_t)(rnd >> 16);
        }
        memcpy(keys[i], &i, sizeof i); /* distinct whatever the generator does */
    }
    crdtdb__keyidx x = {0};
    memset(x.hkey, 7, sizeof x.hkey);
    uint32_t pos;
    for (uint32_t n = 0; n < N; n++) {
        /* not there yet, then appended as its owner does */
        ck_assert_int_eq(crdtdb__keyidx_find(&x, arr, n, keys[n], &pos), 0);
        arr[n] = keys[n];
        if (n % 97 == 0) { /* a copy of an earlier key: the first stays found */
            uint8_t copy[32];
            memcpy(copy, keys[n / 2], 32);
            ck_assert_int_eq(crdtdb__keyidx_find(&x, arr, n + 1, copy, &pos), 1);
            ck_assert_uint_eq(pos, n / 2);
        }
    }
    for (uint32_t i = 0; i < N; i++) {
        uint8_t copy[32];
        memcpy(copy, keys[i], 32);
        ck_assert_int_eq(crdtdb__keyidx_find(&x, arr, N, copy, &pos), 1);
        ck_assert_uint_eq(pos, i);
    }
    /* emptied and refilled in reverse, without a clear: noticed (shorter) */
    for (uint32_t i = 0; i < 100; i++)
        arr[i] = keys[N - 1 - i];
    ck_assert_int_eq(crdtdb__keyidx_find(&x, arr, 100, keys[N - 1], &pos), 1);
    ck_assert_uint_eq(pos, 0);
    ck_assert_int_eq(crdtdb__keyidx_find(&x, arr, 100, keys[0], &pos), 0);
    /* refilled to the full length after a clear: indexed afresh */
    crdtdb__keyidx_clear(&x);
    for (uint32_t i = 0; i < N; i++)
        arr[i] = keys[N - 1 - i];
    ck_assert_int_eq(crdtdb__keyidx_find(&x, arr, N, keys[0], &pos), 1);
    ck_assert_uint_eq(pos, N - 1);
    crdtdb__keyidx_free(&x);
    /* a record: record_origin through the index, and after a clear */
    crdtdb__record r;
    crdtdb__record_init(&r);
    for (int round = 0; round < 2; round++) {
        for (uint32_t i = 0; i < N; i++) {
            uint32_t idx;
            ck_assert_int_eq(crdtdb__record_origin(&r, keys[(i + round) % N], &idx), 0);
            ck_assert_uint_eq(idx, i);
        }
        for (uint32_t i = 0; i < N; i += 7) {
            uint32_t idx;
            ck_assert_int_eq(crdtdb__record_origin(&r, keys[(i + round) % N], &idx), 0);
            ck_assert_uint_eq(idx, i);
        }
        ck_assert_uint_eq(r.norigins, N);
        crdtdb__record_clear(&r);
    }
    crdtdb__record_free(&r);
    free(arr);
    free(keys);
}
END_TEST

int main(void)
{
    keys_init();
    Suite *s = suite_create("record");
    TCase *tc = tcase_create("rules");
    tcase_add_test(tc, dotted_key_is_one_segment);
    tcase_add_test(tc, outcomes_and_dead_seqs);
    tcase_add_test(tc, golden_blob);
    tcase_add_test(tc, offsets_round_trip_random);
    tcase_add_test(tc, offsets_never_cost_more);
    tcase_add_test(tc, random_orders_converge);
    tcase_add_test(tc, put_many_matches_single_puts);
    tcase_add_test(tc, drop_upto_keeps_later_registers);
    tcase_add_test(tc, origins_found_by_index);
    suite_add_tcase(s, tc);
    return tu_run(s);
}
