/*
 * libFuzzer target for the storage layer and the stored record format.
 *
 * Input layout:
 *   byte 0   operation and transaction mode
 *              bits 0-2  op: 0 add, 1 update, 2 remove, 3 add_all, 4 query,
 *                        5 get, 6 add, 7 update
 *              bits 3-4  mode: 0-1 own transaction (txn NULL),
 *                        2 explicit write txn + commit,
 *                        3 explicit read-only txn (writes must fail)
 *              bit  5    query: stop after the first result
 *   byte 1   target
 *              bits 0-1  record id: "a", "b", "c", or 3 = "" (invalid)
 *              bits 2-4  collection: 0-4 "items", 5-6 "other", 7 "nope"
 *                        (not declared)
 *   rest     msgpack payload: the record (add), changes (update), id ->
 *            record map (add_all) or criteria (query; empty = all)
 *
 * One scratch environment (mkdtemp, 64 MiB, NOSYNC, small limits) lives for
 * the whole process; the database is dropped and recreated every RESET_EVERY
 * runs.  Checked after every operation (against get_by_id of the six
 * tracked records a, b, c in items and other, before and after):
 *   - every stored record reads back as a msgpack map that
 *     crdtdb_msgpack_to_json accepts;
 *   - a failure returns an error code expected for that operation, with a
 *     non-empty crdtdb_db_errmsg, and changes no tracked record;
 *   - a success changes only the records it names; add/add_all store the
 *     input map (keys sorted), update stores the deep merge of the old
 *     record and the changes, remove hides the record or leaves an
 *     absent one so (exact-value checks only when the payload has no
 *     duplicate keys);
 *   - a query returns ids in increasing order, each equal to get_by_id.
 * The raw input and the payload are also fed to crdtdb__record_decode; a
 * decoded record must render and encode cleanly, and its encoding must
 * decode and re-encode to the same bytes.
 */
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crdt/buf.h"
#include "crdt/record.h"
#include "crdtdb.h"
#include "fuzz_util.h"

const char fuzz_name[] = "fuzz_record";

#define RESET_EVERY 1000u
#define DB_ID "fuzz"
#define NCOLL 2
#define NID 3

enum { OP_ADD, OP_UPDATE, OP_REMOVE, OP_ADD_ALL, OP_QUERY, OP_GET };

static const char *const COLLS[NCOLL] = {"items", "other"};
static const char *const IDS[NID] = {"a", "b", "c"};

static crdtdb_env *env;
static crdtdb_db *db;
static unsigned long runs;
static int need_reset;

/* ------------------------------------------------------------- helpers */

static int known_err(int rc)
{
    return rc <= CRDTDB_EINVAL && rc >= CRDTDB_ELIMIT;
}

/* ------------------------------------------------------------ snapshots */

typedef struct snap {
    int found[NCOLL][NID];
    crdtdb_buf val[NCOLL][NID];
} snap;

static void snap_take(snap *s)
{
    for (int c = 0; c < NCOLL; c++)
        for (int i = 0; i < NID; i++) {
            crdtdb_buf *b = &s->val[c][i];
            int rc = crdtdb_db_get_by_id(db, NULL, COLLS[c], IDS[i], b,
                                         &s->found[c][i]);
            CHECK(rc == 0);
            if (s->found[c][i])
                fuzz_check_record_bytes(b->data, b->len);
            else
                CHECK(b->len == 0 && crdtdb_db_errmsg(db)[0] != '\0');
        }
}

static int snap_same(const snap *a, const snap *b, int c, int i)
{
    return a->found[c][i] == b->found[c][i] &&
           fuzz_same(a->val[c][i].data, a->val[c][i].len, b->val[c][i].data,
                     b->val[c][i].len);
}

static void snap_free(snap *s)
{
    for (int c = 0; c < NCOLL; c++)
        for (int i = 0; i < NID; i++)
            crdtdb_buf_free(&s->val[c][i]);
}

/* --------------------------------------------------- expected renderings */

typedef struct kent {
    const char *p;
    uint32_t n;
    int src; /* 0 old, 1 changes */
    const msgpack_object *v;
} kent;

static int kent_cmp(const void *x, const void *y)
{
    const kent *a = x, *b = y;
    size_t n = a->n < b->n ? a->n : b->n;
    int c = n ? memcmp(a->p, b->p, n) : 0;
    if (c)
        return c;
    if (a->n != b->n)
        return a->n < b->n ? -1 : 1;
    return a->src - b->src;
}

/* 1 if map `m` or a map nested in its map values has a repeated key or a
 * non-string key (arrays are whole values and not looked into). */
static int has_dup_keys(const msgpack_object *m)
{
    if (m->type != MSGPACK_OBJECT_MAP)
        return 0;
    uint32_t n = m->via.map.size;
    if (n == 0)
        return 0;
    kent *k = malloc(n * sizeof *k);
    CHECK(k != NULL);
    int dup = 0;
    for (uint32_t i = 0; i < n && !dup; i++) {
        const msgpack_object *key = &m->via.map.ptr[i].key;
        if (key->type != MSGPACK_OBJECT_STR)
            dup = 1;
        else
            k[i] = (kent){key->via.str.ptr, key->via.str.size, 0, NULL};
    }
    if (!dup) {
        qsort(k, n, sizeof *k, kent_cmp);
        for (uint32_t i = 1; i < n && !dup; i++)
            dup = kent_cmp(&k[i - 1], &k[i]) == 0;
    }
    free(k);
    for (uint32_t i = 0; i < n && !dup; i++)
        dup = has_dup_keys(&m->via.map.ptr[i].val);
    return dup;
}

static void emit_merged(msgpack_packer *pk, const msgpack_object *old,
                        const msgpack_object *chg);

/* A value as the store renders it: maps with keys sorted, leaves repacked. */
static void emit_canonical(msgpack_packer *pk, const msgpack_object *o)
{
    if (o->type == MSGPACK_OBJECT_MAP)
        emit_merged(pk, NULL, o);
    else
        CHECK(msgpack_pack_object(pk, *o) == 0);
}

/* mergeDeepRight(old, chg) rendered canonically (old may be NULL).  Keys
 * are unique strings in both maps. */
static void emit_merged(msgpack_packer *pk, const msgpack_object *old,
                        const msgpack_object *chg)
{
    uint32_t no = old ? old->via.map.size : 0, nc = chg->via.map.size;
    kent *k = malloc(((size_t)no + nc + 1) * sizeof *k);
    CHECK(k != NULL);
    uint32_t n = 0;
    for (uint32_t i = 0; i < no; i++)
        k[n++] = (kent){old->via.map.ptr[i].key.via.str.ptr,
                        old->via.map.ptr[i].key.via.str.size, 0,
                        &old->via.map.ptr[i].val};
    for (uint32_t i = 0; i < nc; i++)
        k[n++] = (kent){chg->via.map.ptr[i].key.via.str.ptr,
                        chg->via.map.ptr[i].key.via.str.size, 1,
                        &chg->via.map.ptr[i].val};
    qsort(k, n, sizeof *k, kent_cmp);
    uint32_t distinct = 0;
    for (uint32_t i = 0; i < n; i++)
        if (i == 0 || k[i].n != k[i - 1].n ||
            (k[i].n && memcmp(k[i].p, k[i - 1].p, k[i].n) != 0))
            distinct++;
    CHECK(msgpack_pack_map(pk, distinct) == 0);
    for (uint32_t i = 0; i < n;) {
        const msgpack_object *ov = NULL, *cv = NULL;
        const kent *e = &k[i];
        if (e->src == 0)
            ov = e->v;
        else
            cv = e->v;
        i++;
        if (i < n && k[i].n == e->n && (e->n == 0 || memcmp(k[i].p, e->p, e->n) == 0)) {
            cv = k[i].v; /* sorted old before changes */
            i++;
        }
        CHECK(msgpack_pack_str(pk, e->n) == 0 &&
              msgpack_pack_str_body(pk, e->p, e->n) == 0);
        int omap = ov && ov->type == MSGPACK_OBJECT_MAP;
        if (!cv)
            emit_canonical(pk, ov);
        else if (cv->type != MSGPACK_OBJECT_MAP)
            CHECK(msgpack_pack_object(pk, *cv) == 0);
        else if (cv->via.map.size == 0 && omap)
            emit_canonical(pk, ov); /* merging {} into a map changes nothing */
        else if (cv->via.map.size == 0)
            CHECK(msgpack_pack_map(pk, 0) == 0);
        else
            emit_merged(pk, omap ? ov : NULL, cv);
    }
    free(k);
}

/* Expected rendering of mergeDeepRight(old, chg) into out; old may be NULL. */
static void expect(crdtdb_buf *out, const uint8_t *old, size_t oldlen,
                   const msgpack_object *chg)
{
    msgpack_zone z;
    msgpack_object oo;
    CHECK(msgpack_zone_init(&z, 1024));
    if (old) {
        size_t off = 0;
        CHECK(msgpack_unpack((const char *)old, oldlen, &off, &z, &oo) ==
              MSGPACK_UNPACK_SUCCESS);
        CHECK(oo.type == MSGPACK_OBJECT_MAP && !has_dup_keys(&oo));
    }
    msgpack_packer pk;
    out->len = 0;
    msgpack_packer_init(&pk, out, crdtdb__buf_write_cb);
    emit_merged(&pk, old ? &oo : NULL, chg);
    msgpack_zone_destroy(&z);
}

/* Checks the stored record (c, i) against the expected rendering. */
static void check_stored(const snap *after, int c, int i, const crdtdb_buf *want)
{
    CHECK(after->found[c][i]);
    if (!fuzz_same(after->val[c][i].data, after->val[c][i].len, want->data,
                   want->len)) {
        crdtdb_buf a = CRDTDB_BUF_INIT, b = CRDTDB_BUF_INIT;
        if (crdtdb_msgpack_to_json(after->val[c][i].data, after->val[c][i].len, &a) == 0 &&
            crdtdb_msgpack_to_json(want->data, want->len, &b) == 0)
            fprintf(stderr, "stored %s/%s: %s\nexpected:     %s\n", COLLS[c],
                    IDS[i], (char *)a.data, (char *)b.data);
        CHECK(!"stored record differs from the expected rendering");
    }
}

/* --------------------------------------------------------------- query */

typedef struct qhit {
    char id[CRDTDB_ID_MAX + 1];
    crdtdb_buf val;
} qhit;

typedef struct qctx {
    qhit *hits;
    size_t n, cap;
    int stop_first;
} qctx;

#define QUERY_STOP 4242

static int query_cb(void *ctx, const char *id, const uint8_t *value, size_t len)
{
    qctx *q = ctx;
    CHECK(id != NULL && strlen(id) >= 1 && strlen(id) <= CRDTDB_ID_MAX);
    if (q->n == q->cap) {
        size_t c = q->cap ? q->cap * 2 : 16;
        q->hits = realloc(q->hits, c * sizeof *q->hits);
        CHECK(q->hits != NULL);
        q->cap = c;
    }
    qhit *h = &q->hits[q->n++];
    memset(h, 0, sizeof *h);
    strcpy(h->id, id);
    CHECK(crdtdb__buf_set(&h->val, value, len) == 0);
    return q->stop_first ? QUERY_STOP : 0;
}

static void qctx_free(qctx *q)
{
    for (size_t i = 0; i < q->n; i++)
        crdtdb_buf_free(&q->hits[i].val);
    free(q->hits);
    memset(q, 0, sizeof *q);
}

/* Every hit: ids strictly increasing, value a record equal to get_by_id. */
static void check_hits(const qctx *q, const char *coll)
{
    crdtdb_buf b = CRDTDB_BUF_INIT;
    for (size_t i = 0; i < q->n; i++) {
        const qhit *h = &q->hits[i];
        if (i)
            CHECK(strcmp(q->hits[i - 1].id, h->id) < 0);
        fuzz_check_record_bytes(h->val.data, h->val.len);
        int found = 0;
        CHECK(crdtdb_db_get_by_id(db, NULL, coll, h->id, &b, &found) == 0);
        CHECK(found && fuzz_same(b.data, b.len, h->val.data, h->val.len));
    }
    crdtdb_buf_free(&b);
}

/* ------------------------------------------------------------ lifecycle */

/* Full scan of both collections, then drop and recreate the database. */
static void db_reset(void)
{
    for (int c = 0; c < NCOLL; c++) {
        qctx q = {0};
        CHECK(crdtdb_db_query(db, NULL, COLLS[c], NULL, 0, query_cb, &q) == 0);
        check_hits(&q, COLLS[c]);
        qctx_free(&q);
    }
    fuzz_scratch_reset();
    need_reset = 0;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    crdtdb_env_options o;
    fuzz_scratch_options(&o);
    o.max_value_size = 4096;
    o.max_depth = 8;
    o.max_fields = 64;
    fuzz_scratch_env(&o, &env);
    /* the directory goes once the database is made (see fuzz_util.h) */
    fuzz_scratch_db(DB_ID, COLLS, NCOLL, &db);
    return 0;
}

/* ----------------------------------------------------- record blobs */

/* An origin table for version 4 blobs: numbers 1..n, the first four
 * there for every input (0x01.., 0x02.., ...), more as encoding adds them.
 * Keys are copies, so they outlive the blob a key came from. */
typedef struct ftab {
    uint8_t keys[4096][CRDTDB_REPLICA_ID_BYTES];
    uint32_t n;
} ftab;
static ftab g_tab; /* the fuzzer's one process: reset per input */

static const uint8_t *ft_key_of(void *ctx, uint32_t num, int *rc)
{
    ftab *t = ctx;
    if (num == 0 || num > t->n) {
        *rc = CRDTDB_ECORRUPT;
        return NULL;
    }
    return t->keys[num - 1];
}

static int ft_num_of(void *ctx, const uint8_t *key, uint32_t *num)
{
    ftab *t = ctx;
    for (uint32_t i = 0; i < t->n; i++)
        if (memcmp(t->keys[i], key, CRDTDB_REPLICA_ID_BYTES) == 0) {
            *num = i + 1;
            return 0;
        }
    if (t->n == 4096)
        return CRDTDB_ENOMEM;
    memcpy(t->keys[t->n], key, CRDTDB_REPLICA_ID_BYTES);
    *num = ++t->n;
    return 0;
}

static void fuzz_blob(const uint8_t *p, size_t n)
{
    crdtdb__record r, r2;
    crdtdb__record_init(&r);
    crdtdb__record_init(&r2);
    g_tab.n = 4;
    for (int i = 0; i < 4; i++)
        memset(g_tab.keys[i], i + 1, CRDTDB_REPLICA_ID_BYTES);
    const crdtdb__origin_table ot = {ft_key_of, ft_num_of, &g_tab};
    int rc = crdtdb__record_decode(&r, p, n, &ot);
    CHECK(rc == 0 || rc == CRDTDB_ECORRUPT || rc == CRDTDB_EVERSION ||
          rc == CRDTDB_ENOMEM);
    if (rc == 0) {
        crdtdb_buf vis = CRDTDB_BUF_INIT, enc = CRDTDB_BUF_INIT,
                   enc2 = CRDTDB_BUF_INIT;
        const uint8_t *v;
        size_t vlen;
        CHECK(crdtdb__record_blob_visible(p, n, &v, &vlen) == 0);
        CHECK(v == r.visible && vlen == r.visible_len);

        uint32_t *offs = malloc((r.nleaves + 1) * sizeof *offs);
        CHECK(offs != NULL);
        rc = crdtdb__record_render_at(&r, &vis, offs);
        CHECK(rc == 0 || rc == CRDTDB_ECORRUPT || rc == CRDTDB_ENOMEM);
        if (rc == 0 && !crdtdb__record_visible(&r))
            CHECK(vis.len == 0);

        /* The stored form round-trips: encode, decode, encode again. */
        CHECK(crdtdb__record_encode(&r, r.visible, r.visible_len, NULL, &ot, &enc) == 0);
        CHECK(crdtdb__record_decode(&r2, enc.data, enc.len, &ot) == 0);
        CHECK(r2.base_kind == r.base_kind && r2.nleaves == r.nleaves &&
              r2.visible_len == r.visible_len);
        CHECK(crdtdb__record_encode(&r2, r2.visible, r2.visible_len, NULL, &ot, &enc2) == 0);
        CHECK(fuzz_same(enc.data, enc.len, enc2.data, enc2.len));
        /* ... and as version 3, origins by key */
        CHECK(crdtdb__record_encode(&r, r.visible, r.visible_len, NULL, NULL, &enc) == 0);
        CHECK(crdtdb__record_decode(&r2, enc.data, enc.len, NULL) == 0);
        CHECK(crdtdb__record_encode(&r2, r2.visible, r2.visible_len, NULL, &ot, &enc2) == 0);
        crdtdb_buf enc3 = CRDTDB_BUF_INIT;
        CHECK(crdtdb__record_encode(&r, r.visible, r.visible_len, NULL, &ot, &enc3) == 0);
        CHECK(fuzz_same(enc3.data, enc3.len, enc2.data, enc2.len));
        crdtdb_buf_free(&enc3);

        /* ... also with a fresh rendering as the cached visible value,
         * the values it holds stored once, as offsets into it. */
        if (rc == 0) {
            CHECK(crdtdb__record_encode(&r, vis.data, vis.len, offs, &ot, &enc) == 0);
            CHECK(crdtdb__record_decode(&r2, enc.data, enc.len, &ot) == 0);
            CHECK(r2.nleaves == r.nleaves);
            for (uint32_t i = 0; i < r.nleaves; i++)
                CHECK(fuzz_same(r.leaves[i].val, r.leaves[i].val_len, r2.leaves[i].val,
                                r2.leaves[i].val_len));
        }
        free(offs);
        crdtdb_buf_free(&vis);
        crdtdb_buf_free(&enc);
        crdtdb_buf_free(&enc2);
    }
    crdtdb__record_free(&r);
    crdtdb__record_free(&r2);
}

/* -------------------------------------------------------------- driver */

static int op_is_write(int op)
{
    return op == OP_ADD || op == OP_UPDATE || op == OP_REMOVE || op == OP_ADD_ALL;
}

/* Error codes each operation may legitimately return. */
static int allowed_err(int op, int rc)
{
    switch (rc) {
    case CRDTDB_ENOCOLL:
    case CRDTDB_ENOMEM:
        return 1;
    case CRDTDB_EBADID:
        return op != OP_QUERY;
    case CRDTDB_EBADVALUE:
        return op == OP_ADD || op == OP_UPDATE || op == OP_ADD_ALL;
    case CRDTDB_ETOOBIG:
    case CRDTDB_ETOODEEP:
        return op == OP_ADD || op == OP_UPDATE || op == OP_ADD_ALL || op == OP_QUERY;
    case CRDTDB_EBADQUERY:
        return op == OP_QUERY;
    case CRDTDB_ENOTFOUND:
        return op == OP_UPDATE; /* removing an absent record succeeds */
    case CRDTDB_EROFS:
    case CRDTDB_EMAPFULL:
        return op_is_write(op);
    default:
        return 0;
    }
}

static int run_op(int op, crdtdb_txn *txn, const char *coll, const char *id,
                  const uint8_t *p, size_t n, qctx *q, crdtdb_buf *got,
                  int *found)
{
    switch (op) {
    case OP_ADD:
        return crdtdb_db_add(db, txn, coll, id, p, n);
    case OP_UPDATE:
        return crdtdb_db_update(db, txn, coll, id, p, n);
    case OP_REMOVE:
        return crdtdb_db_remove(db, txn, coll, id);
    case OP_ADD_ALL:
        return crdtdb_db_add_all(db, txn, coll, p, n);
    case OP_QUERY:
        return crdtdb_db_query(db, txn, coll, n ? p : NULL, n, query_cb, q);
    default:
        return crdtdb_db_get_by_id(db, txn, coll, id, got, found);
    }
}

/* Checks a successful operation against the snapshots around it. */
static void check_success(int op, int ci, int ii, const uint8_t *p, size_t n,
                          const snap *before, const snap *after, qctx *q,
                          int qstop, const crdtdb_buf *got, int found)
{
    /* Which tracked records the operation may have changed. */
    int touched[NCOLL][NID] = {{0}};
    msgpack_zone z;
    msgpack_object o;
    int parsed = 0;
    crdtdb_buf want = CRDTDB_BUF_INIT;
    CHECK(msgpack_zone_init(&z, 1024));

    if (op == OP_ADD || op == OP_UPDATE || op == OP_ADD_ALL) {
        /* The library accepted the payload, so it parses. */
        size_t off = 0;
        CHECK(msgpack_unpack((const char *)p, n, &off, &z, &o) ==
              MSGPACK_UNPACK_SUCCESS);
        CHECK(off == n && o.type == MSGPACK_OBJECT_MAP);
        parsed = 1;
    }

    switch (op) {
    case OP_ADD:
    case OP_UPDATE:
        touched[ci][ii] = 1;
        if (op == OP_UPDATE)
            CHECK(before->found[ci][ii]); /* update needs an existing record */
        if (!has_dup_keys(&o)) {
            if (op == OP_ADD)
                expect(&want, NULL, 0, &o);
            else
                expect(&want, before->val[ci][ii].data, before->val[ci][ii].len, &o);
            check_stored(after, ci, ii, &want);
        } else {
            CHECK(after->found[ci][ii]);
        }
        break;
    case OP_REMOVE:
        touched[ci][ii] = 1; /* absent before: still absent, nothing written */
        CHECK(!after->found[ci][ii]);
        break;
    case OP_ADD_ALL: {
        int dup = has_dup_keys(&o);
        crdtdb_buf b = CRDTDB_BUF_INIT;
        char id[CRDTDB_ID_MAX + 1];
        for (uint32_t k = 0; k < o.via.map.size; k++) {
            const msgpack_object *key = &o.via.map.ptr[k].key;
            CHECK(key->type == MSGPACK_OBJECT_STR && key->via.str.size <= CRDTDB_ID_MAX);
            memcpy(id, key->via.str.ptr, key->via.str.size);
            id[key->via.str.size] = '\0';
            int f = 0;
            CHECK(crdtdb_db_get_by_id(db, NULL, COLLS[ci], id, &b, &f) == 0);
            CHECK(f);
            fuzz_check_record_bytes(b.data, b.len);
            for (int i = 0; i < NID; i++)
                if (strcmp(id, IDS[i]) == 0) {
                    touched[ci][i] = 1;
                    if (!dup) {
                        expect(&want, NULL, 0, &o.via.map.ptr[k].val);
                        check_stored(after, ci, i, &want);
                    }
                }
        }
        crdtdb_buf_free(&b);
        break;
    }
    case OP_QUERY: {
        check_hits(q, COLLS[ci]);
        if (qstop)
            CHECK(q->n <= 1);
        /* tracked hits equal the snapshot; no criteria means all of them */
        size_t tracked = 0, expected = 0;
        for (int i = 0; i < NID; i++)
            expected += (size_t)before->found[ci][i];
        for (size_t h = 0; h < q->n; h++)
            for (int i = 0; i < NID; i++)
                if (strcmp(q->hits[h].id, IDS[i]) == 0) {
                    CHECK(before->found[ci][i]);
                    CHECK(fuzz_same(q->hits[h].val.data, q->hits[h].val.len,
                                    before->val[ci][i].data, before->val[ci][i].len));
                    tracked++;
                }
        if (n == 0 && !qstop)
            CHECK(tracked == expected);
        break;
    }
    case OP_GET:
        CHECK(found == before->found[ci][ii]);
        CHECK(fuzz_same(got->data, got->len, before->val[ci][ii].data,
                        before->val[ci][ii].len));
        break;
    }

    for (int c = 0; c < NCOLL; c++)
        for (int i = 0; i < NID; i++)
            if (!touched[c][i])
                CHECK(snap_same(before, after, c, i));
    (void)parsed;
    crdtdb_buf_free(&want);
    msgpack_zone_destroy(&z);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_blob(data, size);
    if (size < 2)
        return 0;
    fuzz_blob(data + 2, size - 2);

    if (need_reset || ++runs % RESET_EVERY == 0)
        db_reset();

    int op = data[0] & 7;
    if (op == 6)
        op = OP_ADD;
    else if (op == 7)
        op = OP_UPDATE;
    int mode = (data[0] >> 3) & 3;
    int qstop = (data[0] >> 5) & 1;
    int ii = data[1] & 3;
    int cs = (data[1] >> 2) & 7;
    int ci = cs <= 4 ? 0 : cs <= 6 ? 1 : -1;
    const char *id = ii < NID ? IDS[ii] : "";
    const char *coll = ci >= 0 ? COLLS[ci] : "nope";
    const uint8_t *p = data + 2;
    size_t n = size - 2;

    snap before, after;
    memset(&before, 0, sizeof before);
    memset(&after, 0, sizeof after);
    snap_take(&before);

    crdtdb_txn *txn = NULL;
    if (mode == 2)
        CHECK(crdtdb_txn_begin(db, 0, &txn) == 0);
    else if (mode == 3)
        CHECK(crdtdb_txn_begin(db, CRDTDB_TXN_RDONLY, &txn) == 0);

    qctx q = {0};
    q.stop_first = qstop;
    crdtdb_buf got = CRDTDB_BUF_INIT;
    int found = 0;
    int rc = run_op(op, txn, coll, id, p, n, &q, &got, &found);
    if (op == OP_QUERY && rc == QUERY_STOP) {
        CHECK(qstop && q.n == 1);
        rc = 0;
    }
    if (op == OP_QUERY && !qstop)
        CHECK(rc <= 0);

    if (rc != 0) {
        CHECK(known_err(rc));
        CHECK(crdtdb_db_errmsg(db)[0] != '\0');
        if (!allowed_err(op, rc)) {
            fprintf(stderr, "fuzz_record: op %d on %s/%s: unexpected %s: %s\n",
                    op, coll, id, crdtdb_errname(rc), crdtdb_db_errmsg(db));
            CHECK(!"unexpected error code");
        }
        if (mode == 3 && op_is_write(op))
            CHECK(rc != CRDTDB_EMAPFULL);
    }
    if (mode == 3 && op_is_write(op))
        CHECK(rc != 0); /* a read-only transaction never writes */

    if (txn) {
        int crc = crdtdb_txn_commit(txn);
        /* A failed write fails the batch (or, refused before it touched the
         * batch, leaves it empty); reads and successes commit. */
        if (rc == 0 || mode == 3 || !op_is_write(op))
            CHECK(crc == 0 || crc == CRDTDB_EMAPFULL);
        else
            CHECK(crc == rc || crc == 0);
        if (crc == CRDTDB_EMAPFULL)
            rc = crc;
    }
    if (rc == CRDTDB_EMAPFULL)
        need_reset = 1;

    snap_take(&after);
    if (rc != 0) {
        /* all or nothing: a failed operation changes no record */
        for (int c = 0; c < NCOLL; c++)
            for (int i = 0; i < NID; i++)
                CHECK(snap_same(&before, &after, c, i));
    } else {
        CHECK(ci >= 0);                          /* "nope" never succeeds */
        CHECK(ii < NID || op == OP_ADD_ALL || op == OP_QUERY); /* nor "" */
        check_success(op, ci, ii, p, n, &before, &after, &q, qstop, &got, found);
    }

    qctx_free(&q);
    crdtdb_buf_free(&got);
    snap_free(&before);
    snap_free(&after);
    return 0;
}
