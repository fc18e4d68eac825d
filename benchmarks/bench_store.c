/*
 * bench_store — crdtdb's store cost against raw LMDB on the same machine.
 *
 * What is measured (all in one run, in a fresh temp dir removed at the end):
 *
 *   writes  N single-field updates ({"score": k}) of pseudo-random existing
 *           records, in write transactions of B updates each
 *           (crdtdb_txn_begin / crdtdb_db_update / crdtdb_txn_commit),
 *           against N mdb_put of the same keys in transactions of B puts.
 *   reads   N crdtdb_db_get_by_id in one read transaction, reusing one
 *           crdtdb_buf, against N mdb_get in one read transaction, each
 *           value memcpy'd into a reusable buffer.
 *   extra   N crdtdb_db_get_by_id with txn NULL (a snapshot per call).
 *   inserts cr-sqlite's local-write workload (../shared/peers/crsqlite):
 *           N new single-field records {"x": 7i}, id "<i>", B per write
 *           transaction (crdtdb_db_add), into a new database each round,
 *           against N mdb_put of new keys (crdtdb's record key bytes)
 *           with values of the stored record's size into an emptied
 *           sub-database, B per transaction.  An insert is a record put
 *           and a change-log put, so one raw put per insert is the floor.
 *
 * Why the baseline is fair: the raw LMDB environment is opened like
 * crdtdb's (same map size, MDB_NOTLS, MDB_NOSYNC iff --nosync, a named
 * sub-database), holds the same R keys (the exact bytes of crdtdb's record
 * keys: db number | collection | id) with values of exactly the size of each
 * stored crdtdb record blob, read through the storage internals after setup.
 * Both sides walk the same key sequence (fixed-seed LCG) in batches of the
 * same size, and a read copies the value out like get_by_id does.  What the
 * ratio shows is then crdtdb's own overhead per operation: msgpack parsing,
 * record decode/merge/render/encode, the change log and bookkeeping.
 *
 * Update payloads are packed before timing (packing a one-key map is the
 * caller's cost, not the store's).  Each phase runs 3 times, crdtdb and
 * baseline interleaved (order alternating per round) to damp machine noise;
 * the best rate of each is reported.  Exit status is 0 whatever the goals
 * say (benchmarks report, tests assert); non-zero only on errors.
 */
#include <lmdb.h>
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_util.h"
#include "crdtdb.h"
#include "storage/internal.h"

#define GOAL_WRITE 0.40
#define GOAL_READ 0.50
#define GOAL_INSERT 0.80 /* of raw single puts (issue #13) */
#define INS_STRIDE 24    /* bytes per insert id: "<i>" (a size_t in decimal) */
#define KEY_STRIDE (6 + BENCH_ID_STRIDE)
#define COLL "players"

const char bench_name[] = "bench_store";

typedef struct options {
    size_t n, batch, records;
    int nosync, json;
} options;

typedef struct bench {
    options o;
    bench_base base;   /* dir "crdtdb", the baseline, ids, valbuf (vmax bytes:
                        * what the baseline writes / reads into) */
    crdtdb_env *env;
    crdtdb_db *db;
    uint8_t *keys;     /* records * KEY_STRIDE, crdtdb record keys */
    size_t *klen;      /* key length per record */
    size_t *vsize;     /* stored blob size per record */
    size_t vmax;
    uint32_t *order;   /* n record indices, the shared key sequence */
    msgpack_sbuffer payloads; /* n packed {"score": k} maps */
    size_t *poff;      /* n + 1 offsets into payloads */
    char *ins_ids;     /* n insert ids, INS_STRIDE apart */
    msgpack_sbuffer ins_payloads; /* n packed {"x": 7i} maps */
    size_t *ins_off;   /* n + 1 offsets into ins_payloads */
    uint8_t *ins_keys; /* n raw keys, KEY_STRIDE apart (built on first use) */
    size_t *ins_klen;
    size_t ins_vsize;  /* stored size of an inserted record */
    MDB_dbi ins_dbi;   /* the baseline's sub-database "inserts" */
    int ins_round;     /* the crdtdb database of the next insert round */
    crdtdb_buf out;
} bench;

typedef struct results {
    double write, raw_put, read, raw_get, read_auto; /* ops per second */
    double insert, raw_insert;
    double key_bytes, value_bytes;
} results;

/* ---------------------------------------------------------------- util */

static int fail_crdt(bench *b, const char *what, int rc)
{
    return bench_fail(what, rc,
                      b->db ? crdtdb_db_errmsg(b->db)
                            : b->env ? crdtdb_env_errmsg(b->env) : NULL);
}

static const char *id_of(const bench *b, size_t i) { return bench_id(b->base.ids, i); }
static const uint8_t *key_of(const bench *b, size_t i) { return b->keys + i * KEY_STRIDE; }

/* ---------------------------------------------------------------- args */

static void usage(FILE *f)
{
    fprintf(f,
            "usage: bench_store [--n N] [--batch B] [--records R] [--nosync] [--json]\n"
            "  --n N        operations per phase (default 100000)\n"
            "  --batch B    updates / puts per write transaction (default 1000)\n"
            "  --records R  records in the store (default 10000)\n"
            "  --nosync     CRDTDB_ENV_NOSYNC, and MDB_NOSYNC for the baseline\n"
            "  --json       print one JSON object with all numbers\n");
}

/* 0 to run, 1 for --help, -1 on a bad argument. */
static int parse_args(int argc, char **argv, options *o)
{
    *o = (options){100000, 1000, 10000, 0, 0};
    const bench_opt opts[] = {
        {"--n", &o->n}, {"--batch", &o->batch}, {"--records", &o->records}};
    return bench_parse_args(argc, argv, opts, sizeof opts / sizeof *opts,
                            &o->nosync, &o->json);
}

/* ---------------------------------------------------------------- setup */

static int make_dirs(bench *b)
{
    static const char *const envs[] = {"crdtdb"};
    return bench_base_dirs(&b->base, envs, 1);
}

static uint64_t lcg_next(uint64_t *x)
{
    *x = *x * 6364136223846793005ull + 1442695040888963407ull;
    return *x >> 33;
}

/* Ids, the shared key sequence and the packed update payloads. */
static int make_inputs(bench *b)
{
    size_t r = b->o.records, n = b->o.n;
    b->base.ids = bench_make_ids(r);
    b->keys = calloc(r, KEY_STRIDE);
    b->klen = calloc(r, sizeof *b->klen);
    b->vsize = calloc(r, sizeof *b->vsize);
    b->order = calloc(n, sizeof *b->order);
    b->poff = calloc(n + 1, sizeof *b->poff);
    if (!b->base.ids || !b->keys || !b->klen || !b->vsize || !b->order || !b->poff)
        return bench_oom();
    uint64_t seed = 42;
    for (size_t i = 0; i < n; i++)
        b->order[i] = (uint32_t)(lcg_next(&seed) % r);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &b->payloads, msgpack_sbuffer_write);
    for (size_t i = 0; i < n; i++) {
        b->poff[i] = b->payloads.size;
        /* same magnitude as the initial scores: blob sizes stay put */
        if (bench_pack_score(&pk, (uint32_t)((i * 7919u) % r)))
            return bench_oom();
    }
    b->poff[n] = b->payloads.size;
    b->ins_ids = calloc(n, INS_STRIDE);
    b->ins_off = calloc(n + 1, sizeof *b->ins_off);
    if (!b->ins_ids || !b->ins_off)
        return bench_oom();
    msgpack_packer_init(&pk, &b->ins_payloads, msgpack_sbuffer_write);
    for (size_t i = 0; i < n; i++) {
        snprintf(b->ins_ids + i * INS_STRIDE, INS_STRIDE, "%zu", i);
        b->ins_off[i] = b->ins_payloads.size;
        if (msgpack_pack_map(&pk, 1) || msgpack_pack_str(&pk, 1) ||
            msgpack_pack_str_body(&pk, "x", 1) || msgpack_pack_uint64(&pk, 7 * (uint64_t)i))
            return bench_oom();
    }
    b->ins_off[n] = b->ins_payloads.size;
    return 0;
}

/* A bench_pack_fn: {"name": id, "score": i, "pos": {"x": i, "y": i},
 * "hp": 100}. */
static int pack_record(void *ctx, msgpack_sbuffer *sb, const char *id, size_t i)
{
    (void)ctx;
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    size_t idlen = strlen(id);
    return msgpack_pack_map(&pk, 4) ||
           msgpack_pack_str(&pk, 4) || msgpack_pack_str_body(&pk, "name", 4) ||
           msgpack_pack_str(&pk, idlen) || msgpack_pack_str_body(&pk, id, idlen) ||
           msgpack_pack_str(&pk, 5) || msgpack_pack_str_body(&pk, "score", 5) ||
           msgpack_pack_uint64(&pk, (uint64_t)i) ||
           msgpack_pack_str(&pk, 3) || msgpack_pack_str_body(&pk, "pos", 3) ||
           msgpack_pack_map(&pk, 2) ||
           msgpack_pack_str(&pk, 1) || msgpack_pack_str_body(&pk, "x", 1) ||
           msgpack_pack_uint64(&pk, (uint64_t)i) ||
           msgpack_pack_str(&pk, 1) || msgpack_pack_str_body(&pk, "y", 1) ||
           msgpack_pack_uint64(&pk, (uint64_t)i) ||
           msgpack_pack_str(&pk, 2) || msgpack_pack_str_body(&pk, "hp", 2) ||
           msgpack_pack_uint64(&pk, 100);
}

static int open_crdtdb(bench *b)
{
    if (bench_env_open(b->base.env_dir[0], b->o.nosync, &b->env))
        return -1;
    const char *colls[] = {COLL};
    int rc = crdtdb_db_create(b->env, "bench", colls, 1, &b->db);
    return rc ? fail_crdt(b, "db_create", rc) : 0;
}

/* Adds the R records in transactions of `batch`. */
static int fill_crdtdb(bench *b)
{
    int rc = bench_fill(b->db, COLL, b->base.ids, b->o.records, b->o.batch,
                        pack_record, NULL);
    return rc ? fail_crdt(b, "setup add", rc) : 0;
}

/* Record keys and stored blob sizes, read through the storage internals. */
static int measure_blobs(bench *b, double *key_mean, double *val_mean)
{
    MDB_txn *mt;
    int rc = mdb_txn_begin(b->env->mdb, NULL, MDB_RDONLY, &mt);
    if (rc)
        return bench_fail_mdb("measure: txn_begin", rc);
    double ks = 0, vs = 0;
    b->vmax = 0;
    for (size_t i = 0; i < b->o.records && !rc; i++) {
        const char *id = id_of(b, i);
        uint8_t *k = b->keys + i * KEY_STRIDE;
        b->klen[i] = crdtdb__reckey(k, b->db->num, 0, id, strlen(id));
        MDB_val key = {b->klen[i], k}, v;
        rc = mdb_get(mt, b->env->dbi_records, &key, &v);
        if (rc)
            break;
        b->vsize[i] = v.mv_size;
        b->vmax = v.mv_size > b->vmax ? v.mv_size : b->vmax;
        ks += (double)b->klen[i];
        vs += (double)v.mv_size;
    }
    mdb_txn_abort(mt);
    if (rc)
        return bench_fail_mdb("measure: record blob", rc);
    *key_mean = ks / (double)b->o.records;
    *val_mean = vs / (double)b->o.records;
    return 0;
}

static int open_raw(bench *b)
{
    return bench_base_raw_open(&b->base, b->o.nosync);
}

/* Put i of n: its key, and its value (of the stored blob's size). */
typedef void (*raw_kv_fn)(bench *b, size_t i, MDB_val *k, MDB_val *v);

/* n puts into dbi, `batch` per transaction, each value tagged with i so
 * every put really changes it.  0 or the LMDB error. */
static int raw_puts(bench *b, MDB_dbi dbi, size_t n, raw_kv_fn kv)
{
    MDB_txn *t = NULL;
    int rc = 0;
    for (size_t i = 0; i < n && !rc; i++) {
        if (!t && (rc = mdb_txn_begin(b->base.raw, NULL, 0, &t)))
            break;
        MDB_val k, v;
        kv(b, i, &k, &v);
        memcpy(b->base.valbuf, &i, sizeof i);
        rc = mdb_put(t, dbi, &k, &v, 0);
        if (!rc && bench_batch_end(i, b->o.batch, n)) {
            rc = mdb_txn_commit(t);
            t = NULL;
        }
    }
    if (t)
        mdb_txn_abort(t);
    return rc;
}

/* The store's records in order (the fill), and in the shared sequence. */
static void kv_fill(bench *b, size_t i, MDB_val *k, MDB_val *v)
{
    *k = (MDB_val){b->klen[i], (void *)key_of(b, i)};
    *v = (MDB_val){b->vsize[i], b->base.valbuf};
}

static void kv_write(bench *b, size_t i, MDB_val *k, MDB_val *v)
{
    kv_fill(b, b->order[i], k, v);
}

static int fill_raw(bench *b)
{
    b->base.valbuf = bench_filler(b->vmax + sizeof(size_t));
    if (!b->base.valbuf)
        return -1;
    int rc = raw_puts(b, b->base.raw_dbi, b->o.records, kv_fill);
    return rc ? bench_fail_mdb("raw fill", rc) : 0;
}

/* ---------------------------------------------------------------- phases */

/* Each phase returns 0 and its elapsed seconds in *secs, or -1. */

static int phase_crdt_write(bench *b, double *secs)
{
    const uint8_t *p = (const uint8_t *)b->payloads.data;
    crdtdb_txn *t = NULL;
    int rc = 0;
    double t0 = bench_now();
    for (size_t i = 0; i < b->o.n && !rc; i++) {
        if (!t && (rc = crdtdb_txn_begin(b->db, 0, &t)))
            break;
        rc = crdtdb_db_update(b->db, t, COLL, id_of(b, b->order[i]),
                              p + b->poff[i], b->poff[i + 1] - b->poff[i]);
        if (!rc && bench_batch_end(i, b->o.batch, b->o.n)) {
            rc = crdtdb_txn_commit(t);
            t = NULL;
        }
    }
    *secs = bench_now() - t0;
    crdtdb_txn_abort(t);
    return rc ? fail_crdt(b, "update", rc) : 0;
}

static int phase_raw_write(bench *b, double *secs)
{
    double t0 = bench_now();
    int rc = raw_puts(b, b->base.raw_dbi, b->o.n, kv_write);
    *secs = bench_now() - t0;
    return rc ? bench_fail_mdb("raw put", rc) : 0;
}

/* Inserts: a new database per round (made untimed), N adds of B per txn. */
static int phase_crdt_insert(bench *b, double *secs)
{
    char name[32];
    snprintf(name, sizeof name, "inserts-%d", b->ins_round++);
    const char *colls[] = {COLL};
    crdtdb_db *db;
    int rc = crdtdb_db_create(b->env, name, colls, 1, &db);
    if (rc)
        return fail_crdt(b, "insert db_create", rc);
    const uint8_t *p = (const uint8_t *)b->ins_payloads.data;
    crdtdb_txn *t = NULL;
    double t0 = bench_now();
    for (size_t i = 0; i < b->o.n && !rc; i++) {
        if (!t && (rc = crdtdb_txn_begin(db, 0, &t)))
            break;
        rc = crdtdb_db_add(db, t, COLL, b->ins_ids + i * INS_STRIDE,
                           p + b->ins_off[i], b->ins_off[i + 1] - b->ins_off[i]);
        if (!rc && bench_batch_end(i, b->o.batch, b->o.n)) {
            rc = crdtdb_txn_commit(t);
            t = NULL;
        }
    }
    *secs = bench_now() - t0;
    crdtdb_txn_abort(t);
    if (rc) {
        bench_fail("insert", rc, crdtdb_db_errmsg(db));
        crdtdb_db_close(db);
        return -1;
    }
    if (!b->ins_vsize) { /* the baseline's value size: a stored record's */
        MDB_txn *mt;
        uint8_t k[KEY_STRIDE];
        MDB_val key = {crdtdb__reckey(k, db->num, 0, "1", 1), k}, v;
        rc = mdb_txn_begin(b->env->mdb, NULL, MDB_RDONLY, &mt);
        if (!rc) {
            rc = mdb_get(mt, b->env->dbi_records, &key, &v);
            b->ins_vsize = rc ? 0 : v.mv_size;
            mdb_txn_abort(mt);
        }
    }
    crdtdb_db_close(db);
    return rc ? bench_fail_mdb("insert: record blob", rc) : 0;
}

static void kv_insert(bench *b, size_t i, MDB_val *k, MDB_val *v)
{
    *k = (MDB_val){b->ins_klen[i], b->ins_keys + i * KEY_STRIDE};
    *v = (MDB_val){b->ins_vsize, b->base.valbuf};
}

/* The baseline: N puts of new keys, B per txn, into "inserts" emptied
 * (untimed) first. */
static int phase_raw_insert(bench *b, double *secs)
{
    MDB_txn *t = NULL;
    int rc = mdb_txn_begin(b->base.raw, NULL, 0, &t);
    if (!rc)
        rc = mdb_dbi_open(t, "inserts", MDB_CREATE, &b->ins_dbi);
    if (!rc)
        rc = mdb_drop(t, b->ins_dbi, 0);
    rc = rc ? rc : mdb_txn_commit(t);
    t = NULL;
    if (rc)
        return bench_fail_mdb("raw insert: empty", rc);
    if (!b->ins_keys) {
        b->ins_keys = calloc(b->o.n, KEY_STRIDE);
        b->ins_klen = calloc(b->o.n, sizeof *b->ins_klen);
        if (!b->ins_keys || !b->ins_klen)
            return bench_oom();
        for (size_t i = 0; i < b->o.n; i++) {
            const char *id = b->ins_ids + i * INS_STRIDE;
            b->ins_klen[i] = crdtdb__reckey(b->ins_keys + i * KEY_STRIDE,
                                            b->db->num, 0, id, strlen(id));
        }
    }
    if (b->ins_vsize < sizeof(size_t) || b->ins_vsize > b->vmax)
        return fprintf(stderr, "%s: inserted record of %zu bytes\n", bench_name, b->ins_vsize), -1;
    double t0 = bench_now();
    rc = raw_puts(b, b->ins_dbi, b->o.n, kv_insert);
    *secs = bench_now() - t0;
    return rc ? bench_fail_mdb("raw insert", rc) : 0;
}

/* N get_by_id in `txn` (NULL: a snapshot per call). */
static int crdt_reads(bench *b, crdtdb_txn *txn)
{
    for (size_t i = 0; i < b->o.n; i++) {
        int found = 0;
        int rc = crdtdb_db_get_by_id(b->db, txn, COLL, id_of(b, b->order[i]),
                                     &b->out, &found);
        if (rc)
            return fail_crdt(b, "get_by_id", rc);
        if (!found)
            return fprintf(stderr, "bench_store: record '%s' missing\n",
                           id_of(b, b->order[i])), -1;
    }
    return 0;
}

static int phase_crdt_read(bench *b, double *secs)
{
    crdtdb_txn *t;
    double t0 = bench_now();
    int rc = crdtdb_txn_begin(b->db, CRDTDB_TXN_RDONLY, &t);
    if (rc)
        return fail_crdt(b, "read txn_begin", rc);
    int r = crdt_reads(b, t);
    crdtdb_txn_abort(t);
    *secs = bench_now() - t0;
    return r;
}

static int phase_crdt_read_auto(bench *b, double *secs)
{
    double t0 = bench_now();
    int r = crdt_reads(b, NULL);
    *secs = bench_now() - t0;
    return r;
}

static int phase_raw_read(bench *b, double *secs)
{
    MDB_txn *t;
    double t0 = bench_now();
    int rc = mdb_txn_begin(b->base.raw, NULL, MDB_RDONLY, &t);
    if (rc)
        return bench_fail_mdb("raw read txn_begin", rc);
    for (size_t i = 0; i < b->o.n && !rc; i++) {
        size_t rec = b->order[i];
        MDB_val k = {b->klen[rec], (void *)key_of(b, rec)}, v;
        rc = mdb_get(t, b->base.raw_dbi, &k, &v);
        if (!rc)
            memcpy(b->base.valbuf, v.mv_data, v.mv_size);
    }
    mdb_txn_abort(t);
    *secs = bench_now() - t0;
    return rc ? bench_fail_mdb("raw get", rc) : 0;
}

/* ---------------------------------------------------------------- driver */

typedef int (*phase_fn)(bench *, double *);

/* Runs phase f and keeps the best rate in *best. */
static int run_phase(bench *b, phase_fn f, double *best)
{
    double secs = 0;
    if (f(b, &secs))
        return -1;
    bench_keep_best(best, b->o.n, secs);
    return 0;
}

/* Runs a crdtdb phase and its baseline, the order alternating by round. */
static int run_pair(bench *b, int round, phase_fn crdt, double *crdt_best,
                    phase_fn raw, double *raw_best)
{
    if (round % 2 == 0)
        return run_phase(b, crdt, crdt_best) || run_phase(b, raw, raw_best) ? -1 : 0;
    return run_phase(b, raw, raw_best) || run_phase(b, crdt, crdt_best) ? -1 : 0;
}

static int run_all(bench *b, results *res)
{
    for (int r = 0; r < BENCH_ROUNDS; r++) {
        if (run_pair(b, r, phase_crdt_write, &res->write, phase_raw_write,
                     &res->raw_put) ||
            run_pair(b, r, phase_crdt_read, &res->read, phase_raw_read,
                     &res->raw_get) ||
            run_phase(b, phase_crdt_read_auto, &res->read_auto) ||
            /* crdtdb first in round 0: it measures the baseline's value size */
            run_pair(b, r, phase_crdt_insert, &res->insert, phase_raw_insert,
                     &res->raw_insert))
            return -1;
    }
    return 0;
}

static void print_human(const bench *b, const results *r)
{
    double wr = bench_ratio(r->write, r->raw_put), rr = bench_ratio(r->read, r->raw_get);
    printf("bench_store: n=%zu batch=%zu records=%zu %s, best of %d\n", b->o.n,
           b->o.batch, b->o.records, bench_mode(b->o.nosync), BENCH_ROUNDS);
    printf("record key %.1f bytes, stored blob %.1f bytes (means)\n",
           r->key_bytes, r->value_bytes);
    printf("writes: crdtdb %.0f ops/s, raw LMDB %.0f puts/s, ratio %.2f "
           "(goal >= %.2f) %s\n",
           r->write, r->raw_put, wr, GOAL_WRITE, bench_verdict(wr >= GOAL_WRITE));
    printf("reads:  crdtdb %.0f ops/s, raw LMDB %.0f gets/s, ratio %.2f "
           "(goal >= %.2f) %s\n",
           r->read, r->raw_get, rr, GOAL_READ, bench_verdict(rr >= GOAL_READ));
    printf("reads without txn (snapshot per call): crdtdb %.0f ops/s\n",
           r->read_auto);
    double ir = bench_ratio(r->insert, r->raw_insert);
    printf("inserts (cr-sqlite's workload): crdtdb %.0f/s, raw LMDB %.0f puts/s, "
           "ratio %.2f (goal >= %.2f) %s\n",
           r->insert, r->raw_insert, ir, GOAL_INSERT, bench_verdict(ir >= GOAL_INSERT));
}

static void print_json(const bench *b, const results *r)
{
    printf("{\"n\":%zu,\"batch\":%zu,\"records\":%zu,\"nosync\":%s,"
           "\"write_ops_per_s\":%.0f,\"raw_put_per_s\":%.0f,\"write_ratio\":%.4f,"
           "\"read_ops_per_s\":%.0f,\"raw_get_per_s\":%.0f,\"read_ratio\":%.4f,"
           "\"read_autotxn_ops_per_s\":%.0f,\"value_bytes\":%.1f,\"key_bytes\":%.1f,"
           "\"insert_per_s\":%.0f,\"raw_insert_per_s\":%.0f,\"insert_ratio\":%.4f,"
           "\"goal_write_ratio\":%.1f,\"goal_read_ratio\":%.1f,\"goal_insert_ratio\":%.1f}\n",
           b->o.n, b->o.batch, b->o.records, bench_bool(b->o.nosync),
           r->write, r->raw_put, bench_ratio(r->write, r->raw_put), r->read, r->raw_get,
           bench_ratio(r->read, r->raw_get), r->read_auto, r->value_bytes, r->key_bytes,
           r->insert, r->raw_insert, bench_ratio(r->insert, r->raw_insert),
           GOAL_WRITE, GOAL_READ, GOAL_INSERT);
}

static void bench_free(bench *b)
{
    crdtdb_db_close(b->db);
    crdtdb_env_close(b->env);
    bench_base_free(&b->base);
    free(b->keys);
    free(b->klen);
    free(b->vsize);
    free(b->order);
    free(b->poff);
    msgpack_sbuffer_destroy(&b->payloads);
    free(b->ins_ids);
    free(b->ins_off);
    free(b->ins_keys);
    free(b->ins_klen);
    msgpack_sbuffer_destroy(&b->ins_payloads);
    crdtdb_buf_free(&b->out);
}

int main(int argc, char **argv)
{
    bench b;
    memset(&b, 0, sizeof b);
    msgpack_sbuffer_init(&b.payloads);
    msgpack_sbuffer_init(&b.ins_payloads);
    int a = parse_args(argc, argv, &b.o);
    if (a)
        return bench_usage_exit(a, usage);
    results res;
    memset(&res, 0, sizeof res);
    int rc = make_dirs(&b) || make_inputs(&b) || open_crdtdb(&b) ||
             fill_crdtdb(&b) ||
             measure_blobs(&b, &res.key_bytes, &res.value_bytes) ||
             open_raw(&b) || fill_raw(&b) || run_all(&b, &res);
    if (!rc) {
        if (b.o.json)
            print_json(&b, &res);
        else
            print_human(&b, &res);
    }
    bench_free(&b);
    return rc ? 1 : 0;
}
