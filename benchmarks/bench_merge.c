/*
 * bench_merge — crdtdb's delta sync (extract, sign, verify, merge) against
 * raw LMDB puts on the same machine.
 *
 * What is measured (all in one run, in a fresh temp dir removed at the end):
 *
 *   export   crdtdb_db_export(A, since 0) of a source environment A holding
 *            R records with F leaf fields in all (F/R each), every delta
 *            copied into memory by the sink: change-log scan, record decode,
 *            encode and sign.
 *   apply    crdtdb_db_apply of every delta of that stream to an empty
 *            database of the same id in a second environment B: verify,
 *            decode, merge, store, commit (one write transaction per delta).
 *            B's database is dropped and re-created (untimed) before each
 *            round, so every round merges into an empty database.
 *   raw      the baseline: F mdb_put of F distinct keys (crdtdb's record key
 *            | field name, in the stream's order) into an emptied sub-database,
 *            values of the stream's mean size per field (stream bytes / F),
 *            committed in as many transactions as there are deltas.
 *   re-apply the same deltas applied again to B: every register loses, so
 *            this is verify + decode + record reads + commit without writes.
 *   codec    (internals) decode alone (verify + parse) of every delta,
 *            verify alone, and encode + sign alone of the decoded deltas
 *            (checked to give back the exact same bytes).
 *   size     a delta of K single-field updates ({"score": v} on K distinct
 *            records, exported since the sequence before them, in a separate
 *            database) against plain msgpack of the K triples
 *            [path, value, hlc] plus one 64-byte signature, with path
 *            [coll, id, "score"] and, harsher, just "score".
 *
 * Why the baseline is fair: the raw environment is opened like crdtdb's
 * (same map size, MDB_NOTLS, MDB_NOSYNC iff --nosync, a named sub-database)
 * and writes, per field merged, one value as large as that field's share of
 * the wire bytes, in as many commits (fsyncs) as apply makes.  What the ratio
 * shows is then crdtdb's own cost per merged field: signature check, delta
 * parsing and validation, the LWW merge, record render/encode, the change
 * log and bookkeeping.
 *
 * Each phase runs 3 times, apply and baseline interleaved (order alternating
 * per round) to damp machine noise; the best rate of each is reported.  Exit
 * status is 0 whatever the goals say (benchmarks report, tests assert);
 * non-zero only on errors.
 */
#include <lmdb.h>
#include <msgpack.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench_util.h"
#include "crdtdb.h"
#include "storage/internal.h"

#define GOAL_MERGE 0.40
#define GOAL_SIZE 1.5
#define SIG_BYTES 64
#define NAME_STRIDE 16
#define SIZE_CHANGES 1000
#define BATCH 1000 /* records per setup transaction */
#define DB_ID "bench"
#define SIZE_DB_ID "bench-size"
#define COLL "players"

const char bench_name[] = "bench_merge";

typedef struct options {
    size_t fields, records;
    int nosync, json;
} options;

typedef struct bench {
    options o;
    bench_base base;    /* dirs "a", "b", the baseline, ids, valbuf (raw value
                         * bytes) */
    crdtdb_env *a_env, *b_env;
    crdtdb_db *a_db, *b_db, *s_db;
    size_t *nfields;    /* fields of each record */
    crdtdb_buf stream;  /* the exported deltas, back to back */
    size_t *doff;       /* deltas + 1 offsets into stream */
    size_t ndeltas, doff_cap;
    crdtdb_export_info xinfo;
    uint8_t *rkeys;     /* fields raw keys, back to back */
    size_t *rkoff;      /* fields + 1 offsets into rkeys */
    size_t vsize;       /* raw value size */
    crdtdb__delta dec;  /* scratch for the codec phases */
    crdtdb_buf enc;
} bench;

typedef struct results {
    double export_fps, export_mbps;   /* fields/s, MB/s of wire bytes */
    double apply_fps, raw_pps, reapply_fps;
    double decode_fps, decode_mbps, verify_mbps, encode_fps, encode_mbps;
    size_t applied;                   /* registers stored by one apply */
    /* size check */
    size_t size_k, size_delta, size_plain_full, size_plain_field;
} results;

/* ---------------------------------------------------------------- util */

static int fail_db(crdtdb_db *db, const char *what, int rc)
{
    return bench_fail(what, rc, db ? crdtdb_db_errmsg(db) : NULL);
}

static int fail_env(crdtdb_env *env, const char *what, int rc)
{
    return bench_fail(what, rc, env ? crdtdb_env_errmsg(env) : NULL);
}

static const char *id_of(const bench *b, size_t i) { return bench_id(b->base.ids, i); }

/* ---------------------------------------------------------------- args */

static void usage(FILE *f)
{
    fprintf(f,
            "usage: bench_merge [--fields F] [--records R] [--nosync] [--json]\n"
            "  --fields F   leaf fields in the source database (default 100000)\n"
            "  --records R  records they are spread over (default 10000)\n"
            "  --nosync     CRDTDB_ENV_NOSYNC, and MDB_NOSYNC for the baseline\n"
            "  --json       print one JSON object with all numbers\n");
}

/* 0 to run, 1 for --help, -1 on a bad argument. */
static int parse_args(int argc, char **argv, options *o)
{
    *o = (options){100000, 10000, 0, 0};
    const bench_opt opts[] = {{"--fields", &o->fields}, {"--records", &o->records}};
    int a = bench_parse_args(argc, argv, opts, sizeof opts / sizeof *opts,
                             &o->nosync, &o->json);
    if (a)
        return a;
    if (o->records > o->fields) {
        fprintf(stderr, "bench_merge: --records must not exceed --fields\n");
        return -1;
    }
    return 0;
}

/* ---------------------------------------------------------------- setup */

static int make_dirs(bench *b)
{
    static const char *const envs[] = {"a", "b"};
    return bench_base_dirs(&b->base, envs, 2);
}

/* Field j of every record: ten typical names, then f10, f11, ... */
static const char *const FIELD_NAMES[] = {"name", "score", "hp",    "level", "xp",
                                          "gold", "team",  "alive", "speed", "rank"};
#define NAMED_FIELDS (sizeof FIELD_NAMES / sizeof *FIELD_NAMES)

static size_t field_name(size_t j, char *out)
{
    if (j < NAMED_FIELDS)
        return (size_t)snprintf(out, NAME_STRIDE, "%s", FIELD_NAMES[j]);
    return (size_t)snprintf(out, NAME_STRIDE, "f%zu", j);
}

/* A mix of strings, small and large integers, a bool and a float. */
static int pack_field_value(msgpack_packer *pk, const char *id, size_t i, size_t j)
{
    switch (j) {
    case 0:
        return msgpack_pack_str_with_body(pk, id, strlen(id));
    case 1: return msgpack_pack_uint64(pk, i);
    case 2: return msgpack_pack_uint64(pk, 100);
    case 3: return msgpack_pack_uint64(pk, i % 50);
    case 4: return msgpack_pack_uint64(pk, (uint64_t)i * 37);
    case 5: return msgpack_pack_uint64(pk, (uint64_t)i * 7919 % 100000);
    case 6:
        return i % 2 ? msgpack_pack_str_with_body(pk, "blue", 4)
                     : msgpack_pack_str_with_body(pk, "red", 3);
    case 7: return i % 3 ? msgpack_pack_true(pk) : msgpack_pack_false(pk);
    case 8: return msgpack_pack_double(pk, 1.5 + (double)(i % 10));
    case 9: return msgpack_pack_uint64(pk, i);
    default: return msgpack_pack_uint64(pk, (uint64_t)i + j);
    }
}

/* A bench_pack_fn: record i with n fields, n from fill_ctx. */
typedef struct fill_ctx {
    const bench *b;
    int full;
} fill_ctx;

static int pack_record(void *ctx, msgpack_sbuffer *sb, const char *id, size_t i)
{
    const fill_ctx *c = ctx;
    size_t n = c->full ? c->b->nfields[i] : NAMED_FIELDS;
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    if (msgpack_pack_map(&pk, n))
        return -1;
    char name[NAME_STRIDE];
    for (size_t j = 0; j < n; j++) {
        size_t len = field_name(j, name);
        if (msgpack_pack_str_with_body(&pk, name, len) ||
            pack_field_value(&pk, id, i, j))
            return -1;
    }
    return 0;
}

/* Ids, fields per record and the baseline's keys (in the stream's order). */
static int make_inputs(bench *b)
{
    size_t r = b->o.records, f = b->o.fields;
    b->base.ids = bench_make_ids(r);
    b->nfields = calloc(r, sizeof *b->nfields);
    b->rkeys = malloc(f * (6 + BENCH_ID_STRIDE + NAME_STRIDE));
    b->rkoff = calloc(f + 1, sizeof *b->rkoff);
    if (!b->base.ids || !b->nfields || !b->rkeys || !b->rkoff)
        return bench_oom();
    size_t k = 0, off = 0;
    char name[NAME_STRIDE];
    for (size_t i = 0; i < r; i++) {
        b->nfields[i] = f / r + (i < f % r);
        const char *id = id_of(b, i);
        for (size_t j = 0; j < b->nfields[i]; j++, k++) {
            b->rkoff[k] = off;
            off += crdtdb__reckey(b->rkeys + off, 1, 0, id, strlen(id));
            size_t n = field_name(j, name);
            memcpy(b->rkeys + off, name, n);
            off += n;
        }
    }
    b->rkoff[k] = off;
    return 0;
}

static int create_db(crdtdb_env *env, const char *id, crdtdb_db **db)
{
    const char *colls[] = {COLL};
    int rc = crdtdb_db_create(env, id, colls, 1, db);
    return rc ? fail_env(env, "db_create", rc) : 0;
}

/* Adds records [0, n) to db, BATCH per txn: with `full` each record i has
 * its share of --fields, else the ten named fields. */
static int fill(bench *b, crdtdb_db *db, size_t n, int full)
{
    fill_ctx c = {b, full};
    int rc = bench_fill(db, COLL, b->base.ids, n, BATCH, pack_record, &c);
    return rc ? fail_db(db, "setup add", rc) : 0;
}

static int open_raw(bench *b)
{
    return bench_base_raw_open(&b->base, b->o.nosync);
}

/* Baseline values: the stream's mean bytes per field. */
static int size_raw_values(bench *b)
{
    b->vsize = (b->xinfo.bytes + b->o.fields / 2) / b->o.fields;
    if (b->vsize < sizeof(size_t))
        b->vsize = sizeof(size_t);
    b->base.valbuf = bench_filler(b->vsize);
    return b->base.valbuf ? 0 : -1;
}

/* ---------------------------------------------------------------- phases */

/* Each phase returns 0 and its elapsed seconds in *secs, or -1. */

static int sink(void *ctx, const uint8_t *delta, size_t len)
{
    bench *b = ctx;
    crdtdb_buf *s = &b->stream;
    if (s->cap - s->len < len) {
        size_t cap = s->cap ? s->cap : 1 << 20;
        while (cap - s->len < len)
            cap *= 2;
        uint8_t *p = realloc(s->data, cap);
        if (!p)
            return CRDTDB_ENOMEM;
        s->data = p;
        s->cap = cap;
    }
    if (b->ndeltas + 2 > b->doff_cap) {
        size_t cap = b->doff_cap ? b->doff_cap * 2 : 16;
        size_t *p = realloc(b->doff, cap * sizeof *p);
        if (!p)
            return CRDTDB_ENOMEM;
        b->doff = p;
        b->doff_cap = cap;
    }
    memcpy(s->data + s->len, delta, len);
    b->doff[b->ndeltas++] = s->len;
    s->len += len;
    b->doff[b->ndeltas] = s->len;
    return 0;
}

static const uint8_t *delta_of(const bench *b, size_t i, size_t *len)
{
    *len = b->doff[i + 1] - b->doff[i];
    return b->stream.data + b->doff[i];
}

static int phase_export(bench *b, double *secs)
{
    b->stream.len = 0;
    b->ndeltas = 0;
    double t0 = bench_now();
    int rc = crdtdb_db_export(b->a_db, 0, NULL, sink, b, &b->xinfo);
    *secs = bench_now() - t0;
    if (rc)
        return fail_db(b->a_db, "export", rc);
    if (b->xinfo.changes != b->o.fields + b->o.records || b->xinfo.deltas != b->ndeltas) {
        fprintf(stderr, "bench_merge: export gave %zu changes in %zu deltas, expected "
                "%zu\n", b->xinfo.changes, b->xinfo.deltas, b->o.fields + b->o.records);
        return -1;
    }
    return 0;
}

/* Untimed: B's database dropped and created again, empty. */
static int reset_b(bench *b)
{
    if (b->b_db) {
        crdtdb_db_close(b->b_db);
        b->b_db = NULL;
        int rc = crdtdb_db_drop(b->b_env, DB_ID);
        if (rc)
            return fail_env(b->b_env, "drop", rc);
    }
    return create_db(b->b_env, DB_ID, &b->b_db);
}

/* Applies the whole stream to B; *applied sums the registers that won. */
static int apply_all(bench *b, double *secs, size_t *applied)
{
    crdtdb_apply_info ai;
    size_t won = 0;
    double t0 = bench_now();
    for (size_t i = 0; i < b->ndeltas; i++) {
        size_t len;
        const uint8_t *d = delta_of(b, i, &len);
        int rc = crdtdb_db_apply(b->b_db, d, len, &ai);
        if (rc)
            return fail_db(b->b_db, "apply", rc);
        won += ai.applied;
    }
    *secs = bench_now() - t0;
    *applied = won;
    return 0;
}

static int phase_apply(bench *b, double *secs)
{
    size_t won;
    if (reset_b(b) || apply_all(b, secs, &won))
        return -1;
    if (won != b->xinfo.changes) {
        fprintf(stderr, "bench_merge: apply stored %zu of %zu changes\n", won,
                b->xinfo.changes);
        return -1;
    }
    return 0;
}

static int phase_reapply(bench *b, double *secs)
{
    size_t won;
    if (apply_all(b, secs, &won))
        return -1;
    if (won) {
        fprintf(stderr, "bench_merge: re-apply stored %zu changes, expected 0\n", won);
        return -1;
    }
    return 0;
}

/* Untimed: the baseline's sub-database emptied. */
static int reset_raw(bench *b)
{
    MDB_txn *t;
    int rc = mdb_txn_begin(b->base.raw, NULL, 0, &t);
    if (rc)
        return bench_fail_mdb("raw txn_begin", rc);
    rc = mdb_drop(t, b->base.raw_dbi, 0);
    rc = rc ? rc : mdb_txn_commit(t);
    if (rc)
        mdb_txn_abort(t);
    return rc ? bench_fail_mdb("raw drop", rc) : 0;
}

static int phase_raw(bench *b, double *secs)
{
    if (reset_raw(b))
        return -1;
    size_t n = b->o.fields, per = (n + b->ndeltas - 1) / b->ndeltas;
    MDB_txn *t = NULL;
    int rc = 0;
    double t0 = bench_now();
    for (size_t i = 0; i < n && !rc; i++) {
        if (!t && (rc = mdb_txn_begin(b->base.raw, NULL, 0, &t)))
            break;
        memcpy(b->base.valbuf, &i, sizeof i);
        MDB_val k = {b->rkoff[i + 1] - b->rkoff[i], b->rkeys + b->rkoff[i]};
        MDB_val v = {b->vsize, b->base.valbuf};
        rc = mdb_put(t, b->base.raw_dbi, &k, &v, 0);
        if (!rc && bench_batch_end(i, per, n)) {
            rc = mdb_txn_commit(t);
            t = NULL;
        }
    }
    *secs = bench_now() - t0;
    if (t)
        mdb_txn_abort(t);
    return rc ? bench_fail_mdb("raw put", rc) : 0;
}

/* Verify + parse of delta d into b->dec, with the apply side's limits; 0 or
 * -1 (reported). */
static int decode_one(bench *b, const uint8_t *d, size_t len)
{
    crdtdb__err e;
    int rc = crdtdb__delta_decode(&b->dec, d, len, b->b_env->opts.max_delta_size,
                                  &b->b_env->lim, &e);
    if (rc) {
        fprintf(stderr, "bench_merge: decode: %s (%s)\n", crdtdb_strerror(rc), e.msg);
        return -1;
    }
    return 0;
}

/* Verify + parse of every delta. */
static int phase_decode(bench *b, double *secs)
{
    double t0 = bench_now();
    for (size_t i = 0; i < b->ndeltas; i++) {
        size_t len;
        const uint8_t *d = delta_of(b, i, &len);
        if (decode_one(b, d, len))
            return -1;
    }
    *secs = bench_now() - t0;
    return 0;
}

/* The ed25519 check alone (frame split off by hand, no body parsing). */
static int phase_verify(bench *b, double *secs)
{
    double t0 = bench_now();
    for (size_t i = 0; i < b->ndeltas; i++) {
        size_t len, frame, body_len;
        const uint8_t *d = delta_of(b, i, &len), *body, *sig;
        if (crdtdb__delta_frame(d, len, &frame, &body, &body_len, &sig) || !sig ||
            crypto_sign_verify_detached(sig, body, body_len, b->a_env->pk)) {
            fprintf(stderr, "bench_merge: verify failed\n");
            return -1;
        }
    }
    *secs = bench_now() - t0;
    return 0;
}

/* Encode + sign of each decoded delta (decoding untimed); the output must
 * be the exported bytes again. */
static int phase_encode(bench *b, double *secs)
{
    double total = 0;
    for (size_t i = 0; i < b->ndeltas; i++) {
        size_t len;
        const uint8_t *d = delta_of(b, i, &len);
        if (decode_one(b, d, len))
            return -1;
        double t0 = bench_now();
        int rc = crdtdb__delta_encode(&b->dec, b->a_env->sk, &b->enc);
        total += bench_now() - t0;
        if (rc)
            return fail_db(NULL, "encode", rc);
        if (b->enc.len != len || memcmp(b->enc.data, d, len) != 0) {
            fprintf(stderr, "bench_merge: re-encoded delta %zu differs from the export\n",
                    i);
            return -1;
        }
    }
    *secs = total;
    return 0;
}

/* ---------------------------------------------------------------- size */

typedef struct one_delta {
    crdtdb_buf buf;
    size_t n;
} one_delta;

static int sink_one(void *ctx, const uint8_t *delta, size_t len)
{
    one_delta *o = ctx;
    o->n++;
    uint8_t *p = realloc(o->buf.data, len);
    if (!p)
        return CRDTDB_ENOMEM;
    memcpy(p, delta, len);
    o->buf.data = p;
    o->buf.len = o->buf.cap = len;
    return 0;
}

static uint32_t score_of(size_t i) { return (uint32_t)(i * 7919u % 100000u); }

/* Plain msgpack of K triples [path, value, hlc], an array of them. */
static int plain_size(const bench *b, size_t k, int full_path, uint64_t hlc0, size_t *out)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    int bad = msgpack_pack_array(&pk, k);
    for (size_t i = 0; i < k && !bad; i++) {
        const char *id = id_of(b, i);
        bad = msgpack_pack_array(&pk, 3);
        if (full_path)
            bad = bad || msgpack_pack_array(&pk, 3) ||
                  msgpack_pack_str_with_body(&pk, COLL, strlen(COLL)) ||
                  msgpack_pack_str_with_body(&pk, id, strlen(id));
        bad = bad || msgpack_pack_str_with_body(&pk, "score", 5) ||
              msgpack_pack_uint32(&pk, score_of(i)) || msgpack_pack_uint64(&pk, hlc0 + i);
    }
    *out = sb.size + SIG_BYTES;
    msgpack_sbuffer_destroy(&sb);
    return bad ? bench_oom() : 0;
}

/* K records added to a separate database of A, then one update of "score"
 * on each; the delta since the sequence between is the one measured. */
static int size_check(bench *b, results *r)
{
    size_t k = b->o.records < SIZE_CHANGES ? b->o.records : SIZE_CHANGES;
    uint64_t seq;
    int rc;
    if (create_db(b->a_env, SIZE_DB_ID, &b->s_db) || fill(b, b->s_db, k, 0))
        return -1;
    if ((rc = crdtdb_db_seq(b->s_db, NULL, &seq)))
        return fail_db(b->s_db, "seq", rc);
    crdtdb_txn *t;
    if ((rc = crdtdb_txn_begin(b->s_db, 0, &t)))
        return fail_db(b->s_db, "txn_begin", rc);
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    for (size_t i = 0; i < k && !rc; i++) {
        sb.size = 0;
        if (bench_pack_score(&pk, score_of(i)))
            rc = CRDTDB_ENOMEM;
        else
            rc = crdtdb_db_update(b->s_db, t, COLL, id_of(b, i),
                                  (const uint8_t *)sb.data, sb.size);
    }
    msgpack_sbuffer_destroy(&sb);
    rc = rc ? (crdtdb_txn_abort(t), rc) : crdtdb_txn_commit(t);
    if (rc)
        return fail_db(b->s_db, "update", rc);
    one_delta o = {CRDTDB_BUF_INIT, 0};
    crdtdb_export_info xi;
    rc = crdtdb_db_export(b->s_db, seq, NULL, sink_one, &o, &xi);
    if (rc || o.n != 1 || xi.changes != k) {
        crdtdb_buf_free(&o.buf);
        if (rc)
            return fail_db(b->s_db, "export", rc);
        fprintf(stderr, "bench_merge: size check exported %zu changes in %zu deltas\n",
                xi.changes, o.n);
        return -1;
    }
    crdtdb_buf_free(&o.buf);
    r->size_k = k;
    r->size_delta = xi.bytes;
    /* stamps of today's magnitude: 48-bit ms << 16, 9 bytes in msgpack */
    uint64_t hlc0 = (uint64_t)time(NULL) * 1000 << 16;
    return plain_size(b, k, 1, hlc0, &r->size_plain_full) ||
                   plain_size(b, k, 0, hlc0, &r->size_plain_field)
               ? -1
               : 0;
}

/* ---------------------------------------------------------------- driver */

typedef int (*phase_fn)(bench *, double *);

/* Runs phase f and keeps the best rate (fields per second) in *best. */
static int run_phase(bench *b, phase_fn f, double *best)
{
    double secs = 0;
    if (f(b, &secs))
        return -1;
    bench_keep_best(best, b->o.fields, secs);
    return 0;
}

/* Runs apply (then its no-op re-apply) and the baseline, the order
 * alternating by round. */
static int run_pair(bench *b, int round, results *res)
{
    if (round % 2 == 0)
        return run_phase(b, phase_apply, &res->apply_fps) ||
                       run_phase(b, phase_reapply, &res->reapply_fps) ||
                       run_phase(b, phase_raw, &res->raw_pps)
                   ? -1
                   : 0;
    return run_phase(b, phase_raw, &res->raw_pps) ||
                   run_phase(b, phase_apply, &res->apply_fps) ||
                   run_phase(b, phase_reapply, &res->reapply_fps)
               ? -1
               : 0;
}

static int run_all(bench *b, results *res)
{
    double verify_fps = 0;
    for (int r = 0; r < BENCH_ROUNDS; r++) {
        if (run_phase(b, phase_export, &res->export_fps))
            return -1;
        if (r == 0 && (size_raw_values(b) || open_raw(b)))
            return -1;
        if (run_pair(b, r, res) || run_phase(b, phase_decode, &res->decode_fps) ||
            run_phase(b, phase_verify, &verify_fps) ||
            run_phase(b, phase_encode, &res->encode_fps))
            return -1;
    }
    double mb_per_field = (double)b->xinfo.bytes / 1e6 / (double)b->o.fields;
    res->export_mbps = res->export_fps * mb_per_field;
    res->decode_mbps = res->decode_fps * mb_per_field;
    res->verify_mbps = verify_fps * mb_per_field;
    res->encode_mbps = res->encode_fps * mb_per_field;
    return 0;
}

static void print_human(const bench *b, const results *r)
{
    const crdtdb_export_info *x = &b->xinfo;
    double mr = bench_ratio(r->apply_fps, r->raw_pps);
    double sf = bench_ratio((double)r->size_delta, (double)r->size_plain_full);
    double sh = bench_ratio((double)r->size_delta, (double)r->size_plain_field);
    printf("bench_merge: fields=%zu records=%zu %s, best of %d\n", b->o.fields,
           b->o.records, bench_mode(b->o.nosync), BENCH_ROUNDS);
    printf("stream: %zu bytes in %zu deltas, %zu changes (%zu fields + %zu record "
           "bases), %.1f bytes/change, %.1f bytes/field\n",
           x->bytes, x->deltas, x->changes, b->o.fields, b->o.records,
           bench_ratio((double)x->bytes, (double)x->changes),
           bench_ratio((double)x->bytes, (double)b->o.fields));
    printf("export (scan+encode+sign):  %.0f fields/s, %.1f MB/s\n", r->export_fps,
           r->export_mbps);
    printf("encode+sign only:           %.0f fields/s, %.1f MB/s\n", r->encode_fps,
           r->encode_mbps);
    printf("decode (verify+parse) only: %.0f fields/s, %.1f MB/s (verify alone "
           "%.1f MB/s)\n",
           r->decode_fps, r->decode_mbps, r->verify_mbps);
    printf("apply (verify+decode+merge+commit): crdtdb %.0f fields/s, raw LMDB "
           "%.0f puts/s (%zu-byte values, %zu txns), ratio %.2f (goal >= %.2f) %s\n",
           r->apply_fps, r->raw_pps, b->vsize, b->ndeltas, mr, GOAL_MERGE,
           bench_verdict(mr >= GOAL_MERGE));
    printf("re-apply (no-op, every register loses): %.0f fields/s\n", r->reapply_fps);
    printf("size: delta of %zu single-field changes %zu bytes (%.1f/change); plain "
           "msgpack [path,value,hlc] + %d-byte sig: %zu bytes with path "
           "[coll,id,field], ratio %.2f (goal <= %.2f) %s; %zu bytes with path "
           "\"field\", ratio %.2f\n",
           r->size_k, r->size_delta,
           bench_ratio((double)r->size_delta, (double)r->size_k),
           SIG_BYTES, r->size_plain_full, sf, GOAL_SIZE, bench_verdict(sf <= GOAL_SIZE),
           r->size_plain_field, sh);
}

static void print_json(const bench *b, const results *r)
{
    const crdtdb_export_info *x = &b->xinfo;
    printf("{\"fields\":%zu,\"records\":%zu,\"nosync\":%s,"
           "\"deltas\":%zu,\"stream_bytes\":%zu,\"changes\":%zu,"
           "\"bytes_per_change\":%.2f,\"bytes_per_field\":%.2f,"
           "\"export_fields_per_s\":%.0f,\"export_mb_per_s\":%.2f,"
           "\"encode_fields_per_s\":%.0f,\"encode_mb_per_s\":%.2f,"
           "\"decode_fields_per_s\":%.0f,\"decode_mb_per_s\":%.2f,"
           "\"verify_mb_per_s\":%.2f,"
           "\"apply_fields_per_s\":%.0f,\"raw_put_per_s\":%.0f,\"raw_value_bytes\":%zu,"
           "\"merge_ratio\":%.4f,\"reapply_fields_per_s\":%.0f,"
           "\"size_changes\":%zu,\"size_delta_bytes\":%zu,"
           "\"size_plain_bytes\":%zu,\"size_ratio\":%.4f,"
           "\"size_plain_field_only_bytes\":%zu,\"size_ratio_field_only\":%.4f,"
           "\"goal_merge_ratio\":%.2f,\"goal_size_ratio\":%.2f}\n",
           b->o.fields, b->o.records, bench_bool(b->o.nosync), x->deltas,
           x->bytes, x->changes, bench_ratio((double)x->bytes, (double)x->changes),
           bench_ratio((double)x->bytes, (double)b->o.fields), r->export_fps,
           r->export_mbps,
           r->encode_fps, r->encode_mbps, r->decode_fps, r->decode_mbps, r->verify_mbps,
           r->apply_fps, r->raw_pps, b->vsize, bench_ratio(r->apply_fps, r->raw_pps),
           r->reapply_fps, r->size_k, r->size_delta, r->size_plain_full,
           bench_ratio((double)r->size_delta, (double)r->size_plain_full),
           r->size_plain_field,
           bench_ratio((double)r->size_delta, (double)r->size_plain_field),
           GOAL_MERGE, GOAL_SIZE);
}

static void bench_free(bench *b)
{
    crdtdb_db_close(b->a_db);
    crdtdb_db_close(b->s_db);
    crdtdb_db_close(b->b_db);
    crdtdb_env_close(b->a_env);
    crdtdb_env_close(b->b_env);
    bench_base_free(&b->base);
    free(b->nfields);
    free(b->doff);
    free(b->rkeys);
    free(b->rkoff);
    crdtdb_buf_free(&b->stream);
    crdtdb_buf_free(&b->enc);
    crdtdb__delta_free(&b->dec);
}

int main(int argc, char **argv)
{
    bench b;
    memset(&b, 0, sizeof b);
    crdtdb__delta_init(&b.dec);
    int a = parse_args(argc, argv, &b.o);
    if (a)
        return bench_usage_exit(a, usage);
    results res;
    memset(&res, 0, sizeof res);
    int rc = make_dirs(&b) || make_inputs(&b) ||
             bench_env_open(b.base.env_dir[0], b.o.nosync, &b.a_env) ||
             bench_env_open(b.base.env_dir[1], b.o.nosync, &b.b_env) ||
             create_db(b.a_env, DB_ID, &b.a_db) ||
             fill(&b, b.a_db, b.o.records, 1) || size_check(&b, &res) ||
             run_all(&b, &res);
    if (!rc) {
        if (b.o.json)
            print_json(&b, &res);
        else
            print_human(&b, &res);
    }
    bench_free(&b);
    return rc ? 1 : 0;
}
