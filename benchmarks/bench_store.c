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
#include <errno.h>
#include <lmdb.h>
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "crdtdb.h"
#include "storage/internal.h"

#define ROUNDS 3
#define GOAL_WRITE 0.40
#define GOAL_READ 0.50
#define MAP_SIZE ((size_t)1 << 30)
#define ID_STRIDE 32
#define KEY_STRIDE (6 + ID_STRIDE)
#define COLL "players"

typedef struct options {
    size_t n, batch, records;
    int nosync, json;
} options;

typedef struct bench {
    options o;
    char root[64], cdir[96], rdir[96];
    crdtdb_env *env;
    crdtdb_db *db;
    MDB_env *raw;
    MDB_dbi raw_dbi;
    char *ids;         /* records * ID_STRIDE, NUL-terminated ids */
    uint8_t *keys;     /* records * KEY_STRIDE, crdtdb record keys */
    size_t *klen;      /* key length per record */
    size_t *vsize;     /* stored blob size per record */
    size_t vmax;
    uint32_t *order;   /* n record indices, the shared key sequence */
    msgpack_sbuffer payloads; /* n packed {"score": k} maps */
    size_t *poff;      /* n + 1 offsets into payloads */
    uint8_t *valbuf;   /* vmax bytes: what the baseline writes / reads into */
    crdtdb_buf out;
} bench;

typedef struct results {
    double write, raw_put, read, raw_get, read_auto; /* ops per second */
    double key_bytes, value_bytes;
} results;

/* ---------------------------------------------------------------- util */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int fail_crdt(bench *b, const char *what, int rc)
{
    fprintf(stderr, "bench_store: %s: %s (%s)\n", what, crdtdb_strerror(rc),
            b->db ? crdtdb_db_errmsg(b->db)
                  : b->env ? crdtdb_env_errmsg(b->env) : "-");
    return -1;
}

static int fail_mdb(const char *what, int rc)
{
    fprintf(stderr, "bench_store: %s: %s\n", what, mdb_strerror(rc));
    return -1;
}

static const char *id_of(const bench *b, size_t i) { return b->ids + i * ID_STRIDE; }
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

static int parse_size(const char *s, size_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s ? s : "", &end, 10);
    if (!s || !*s || *end || errno || v == 0 || v > 100000000ull || *s == '-')
        return -1;
    *out = (size_t)v;
    return 0;
}

/* 0 to run, 1 for --help, -1 on a bad argument. */
static int parse_args(int argc, char **argv, options *o)
{
    *o = (options){100000, 1000, 10000, 0, 0};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        size_t *dst = NULL;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0)
            return 1;
        if (strcmp(a, "--nosync") == 0)
            o->nosync = 1;
        else if (strcmp(a, "--json") == 0)
            o->json = 1;
        else if (strcmp(a, "--n") == 0)
            dst = &o->n;
        else if (strcmp(a, "--batch") == 0)
            dst = &o->batch;
        else if (strcmp(a, "--records") == 0)
            dst = &o->records;
        else {
            fprintf(stderr, "bench_store: unknown argument '%s'\n", a);
            return -1;
        }
        if (dst && (i + 1 >= argc || parse_size(argv[++i], dst))) {
            fprintf(stderr, "bench_store: %s needs a positive integer\n", a);
            return -1;
        }
    }
    return 0;
}

/* ---------------------------------------------------------------- setup */

static int make_dirs(bench *b)
{
    snprintf(b->root, sizeof b->root, "/tmp/bench_store-XXXXXX");
    if (!mkdtemp(b->root)) {
        b->root[0] = 0;
        perror("bench_store: mkdtemp");
        return -1;
    }
    snprintf(b->cdir, sizeof b->cdir, "%s/crdtdb", b->root);
    snprintf(b->rdir, sizeof b->rdir, "%s/raw", b->root);
    if (mkdir(b->rdir, 0700)) {
        perror("bench_store: mkdir");
        return -1;
    }
    return 0;
}

static void remove_dirs(const bench *b)
{
    static const char *const files[] = {"data.mdb", "lock.mdb"};
    const char *const dirs[] = {b->cdir, b->rdir};
    char p[160];
    if (!b->root[0])
        return;
    for (size_t d = 0; d < 2; d++) {
        for (size_t f = 0; f < 2; f++) {
            snprintf(p, sizeof p, "%s/%s", dirs[d], files[f]);
            unlink(p);
        }
        rmdir(dirs[d]);
    }
    rmdir(b->root);
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
    b->ids = calloc(r, ID_STRIDE);
    b->keys = calloc(r, KEY_STRIDE);
    b->klen = calloc(r, sizeof *b->klen);
    b->vsize = calloc(r, sizeof *b->vsize);
    b->order = calloc(n, sizeof *b->order);
    b->poff = calloc(n + 1, sizeof *b->poff);
    if (!b->ids || !b->keys || !b->klen || !b->vsize || !b->order || !b->poff) {
        fprintf(stderr, "bench_store: out of memory\n");
        return -1;
    }
    for (size_t i = 0; i < r; i++)
        snprintf(b->ids + i * ID_STRIDE, ID_STRIDE, "player-%zu", i);
    uint64_t seed = 42;
    for (size_t i = 0; i < n; i++)
        b->order[i] = (uint32_t)(lcg_next(&seed) % r);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &b->payloads, msgpack_sbuffer_write);
    for (size_t i = 0; i < n; i++) {
        b->poff[i] = b->payloads.size;
        /* same magnitude as the initial scores: blob sizes stay put */
        if (msgpack_pack_map(&pk, 1) || msgpack_pack_str(&pk, 5) ||
            msgpack_pack_str_body(&pk, "score", 5) ||
            msgpack_pack_uint32(&pk, (uint32_t)((i * 7919u) % r))) {
            fprintf(stderr, "bench_store: out of memory\n");
            return -1;
        }
    }
    b->poff[n] = b->payloads.size;
    return 0;
}

static int pack_record(msgpack_sbuffer *sb, const char *id, uint64_t i)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    size_t idlen = strlen(id);
    return msgpack_pack_map(&pk, 4) ||
           msgpack_pack_str(&pk, 4) || msgpack_pack_str_body(&pk, "name", 4) ||
           msgpack_pack_str(&pk, idlen) || msgpack_pack_str_body(&pk, id, idlen) ||
           msgpack_pack_str(&pk, 5) || msgpack_pack_str_body(&pk, "score", 5) ||
           msgpack_pack_uint64(&pk, i) ||
           msgpack_pack_str(&pk, 3) || msgpack_pack_str_body(&pk, "pos", 3) ||
           msgpack_pack_map(&pk, 2) ||
           msgpack_pack_str(&pk, 1) || msgpack_pack_str_body(&pk, "x", 1) ||
           msgpack_pack_uint64(&pk, i) ||
           msgpack_pack_str(&pk, 1) || msgpack_pack_str_body(&pk, "y", 1) ||
           msgpack_pack_uint64(&pk, i) ||
           msgpack_pack_str(&pk, 2) || msgpack_pack_str_body(&pk, "hp", 2) ||
           msgpack_pack_uint64(&pk, 100);
}

static int open_crdtdb(bench *b)
{
    crdtdb_env_options eo;
    crdtdb_env_options_init(&eo);
    eo.map_size = MAP_SIZE;
    eo.flags = b->o.nosync ? CRDTDB_ENV_NOSYNC : 0;
    int rc = crdtdb_env_open(b->cdir, &eo, &b->env);
    if (rc)
        return fail_crdt(b, "env_open", rc);
    const char *colls[] = {COLL};
    rc = crdtdb_db_create(b->env, "bench", colls, 1, &b->db);
    return rc ? fail_crdt(b, "db_create", rc) : 0;
}

/* Adds the R records in transactions of `batch`. */
static int fill_crdtdb(bench *b)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    crdtdb_txn *t = NULL;
    int rc = 0;
    for (size_t i = 0; i < b->o.records && !rc; i++) {
        if (!t && (rc = crdtdb_txn_begin(b->db, 0, &t)))
            break;
        sb.size = 0;
        if (pack_record(&sb, id_of(b, i), i)) {
            rc = CRDTDB_ENOMEM;
            break;
        }
        rc = crdtdb_db_add(b->db, t, COLL, id_of(b, i), (const uint8_t *)sb.data,
                           sb.size);
        if (!rc && ((i + 1) % b->o.batch == 0 || i + 1 == b->o.records)) {
            rc = crdtdb_txn_commit(t);
            t = NULL;
        }
    }
    crdtdb_txn_abort(t);
    msgpack_sbuffer_destroy(&sb);
    return rc ? fail_crdt(b, "setup add", rc) : 0;
}

/* Record keys and stored blob sizes, read through the storage internals. */
static int measure_blobs(bench *b, double *key_mean, double *val_mean)
{
    MDB_txn *mt;
    int rc = mdb_txn_begin(b->env->mdb, NULL, MDB_RDONLY, &mt);
    if (rc)
        return fail_mdb("measure: txn_begin", rc);
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
        return fail_mdb("measure: record blob", rc);
    *key_mean = ks / (double)b->o.records;
    *val_mean = vs / (double)b->o.records;
    return 0;
}

static int open_raw(bench *b)
{
    unsigned flags = MDB_NOTLS | (b->o.nosync ? MDB_NOSYNC : 0);
    MDB_txn *t;
    int rc = mdb_env_create(&b->raw);
    if (!rc)
        rc = mdb_env_set_maxdbs(b->raw, 8);
    if (!rc)
        rc = mdb_env_set_mapsize(b->raw, MAP_SIZE);
    if (!rc)
        rc = mdb_env_open(b->raw, b->rdir, flags, 0644);
    if (rc)
        return fail_mdb("raw env_open", rc);
    if ((rc = mdb_txn_begin(b->raw, NULL, 0, &t)))
        return fail_mdb("raw txn_begin", rc);
    rc = mdb_dbi_open(t, "records", MDB_CREATE, &b->raw_dbi);
    rc = rc ? rc : mdb_txn_commit(t);
    if (rc)
        mdb_txn_abort(t);
    return rc ? fail_mdb("raw dbi_open", rc) : 0;
}

/* Puts values of each record's blob size; i tags the bytes so every put
 * really changes the value. */
static int raw_put_one(bench *b, MDB_txn *t, size_t rec, size_t i)
{
    memcpy(b->valbuf, &i, sizeof i);
    MDB_val k = {b->klen[rec], (void *)key_of(b, rec)};
    MDB_val v = {b->vsize[rec], b->valbuf};
    return mdb_put(t, b->raw_dbi, &k, &v, 0);
}

static int fill_raw(bench *b)
{
    b->valbuf = malloc(b->vmax + sizeof(size_t));
    if (!b->valbuf)
        return fprintf(stderr, "bench_store: out of memory\n"), -1;
    memset(b->valbuf, 0xa5, b->vmax + sizeof(size_t));
    MDB_txn *t = NULL;
    int rc = 0;
    for (size_t i = 0; i < b->o.records && !rc; i++) {
        if (!t && (rc = mdb_txn_begin(b->raw, NULL, 0, &t)))
            break;
        rc = raw_put_one(b, t, i, i);
        if (!rc && ((i + 1) % b->o.batch == 0 || i + 1 == b->o.records)) {
            rc = mdb_txn_commit(t);
            t = NULL;
        }
    }
    if (t)
        mdb_txn_abort(t);
    return rc ? fail_mdb("raw fill", rc) : 0;
}

/* ---------------------------------------------------------------- phases */

/* Each phase returns 0 and its elapsed seconds in *secs, or -1. */

static int phase_crdt_write(bench *b, double *secs)
{
    const uint8_t *p = (const uint8_t *)b->payloads.data;
    crdtdb_txn *t = NULL;
    int rc = 0;
    double t0 = now_s();
    for (size_t i = 0; i < b->o.n && !rc; i++) {
        if (!t && (rc = crdtdb_txn_begin(b->db, 0, &t)))
            break;
        rc = crdtdb_db_update(b->db, t, COLL, id_of(b, b->order[i]),
                              p + b->poff[i], b->poff[i + 1] - b->poff[i]);
        if (!rc && ((i + 1) % b->o.batch == 0 || i + 1 == b->o.n)) {
            rc = crdtdb_txn_commit(t);
            t = NULL;
        }
    }
    *secs = now_s() - t0;
    crdtdb_txn_abort(t);
    return rc ? fail_crdt(b, "update", rc) : 0;
}

static int phase_raw_write(bench *b, double *secs)
{
    MDB_txn *t = NULL;
    int rc = 0;
    double t0 = now_s();
    for (size_t i = 0; i < b->o.n && !rc; i++) {
        if (!t && (rc = mdb_txn_begin(b->raw, NULL, 0, &t)))
            break;
        rc = raw_put_one(b, t, b->order[i], i);
        if (!rc && ((i + 1) % b->o.batch == 0 || i + 1 == b->o.n)) {
            rc = mdb_txn_commit(t);
            t = NULL;
        }
    }
    *secs = now_s() - t0;
    if (t)
        mdb_txn_abort(t);
    return rc ? fail_mdb("raw put", rc) : 0;
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
    double t0 = now_s();
    int rc = crdtdb_txn_begin(b->db, CRDTDB_TXN_RDONLY, &t);
    if (rc)
        return fail_crdt(b, "read txn_begin", rc);
    int r = crdt_reads(b, t);
    crdtdb_txn_abort(t);
    *secs = now_s() - t0;
    return r;
}

static int phase_crdt_read_auto(bench *b, double *secs)
{
    double t0 = now_s();
    int r = crdt_reads(b, NULL);
    *secs = now_s() - t0;
    return r;
}

static int phase_raw_read(bench *b, double *secs)
{
    MDB_txn *t;
    double t0 = now_s();
    int rc = mdb_txn_begin(b->raw, NULL, MDB_RDONLY, &t);
    if (rc)
        return fail_mdb("raw read txn_begin", rc);
    for (size_t i = 0; i < b->o.n && !rc; i++) {
        size_t rec = b->order[i];
        MDB_val k = {b->klen[rec], (void *)key_of(b, rec)}, v;
        rc = mdb_get(t, b->raw_dbi, &k, &v);
        if (!rc)
            memcpy(b->valbuf, v.mv_data, v.mv_size);
    }
    mdb_txn_abort(t);
    *secs = now_s() - t0;
    return rc ? fail_mdb("raw get", rc) : 0;
}

/* ---------------------------------------------------------------- driver */

typedef int (*phase_fn)(bench *, double *);

/* Runs phase f and keeps the best rate in *best. */
static int run_phase(bench *b, phase_fn f, double *best)
{
    double secs;
    if (f(b, &secs))
        return -1;
    double rate = secs > 0 ? (double)b->o.n / secs : 0;
    if (rate > *best)
        *best = rate;
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
    for (int r = 0; r < ROUNDS; r++) {
        if (run_pair(b, r, phase_crdt_write, &res->write, phase_raw_write,
                     &res->raw_put) ||
            run_pair(b, r, phase_crdt_read, &res->read, phase_raw_read,
                     &res->raw_get) ||
            run_phase(b, phase_crdt_read_auto, &res->read_auto))
            return -1;
    }
    return 0;
}

static double ratio(double a, double b) { return b > 0 ? a / b : 0; }

static void print_human(const bench *b, const results *r)
{
    double wr = ratio(r->write, r->raw_put), rr = ratio(r->read, r->raw_get);
    printf("bench_store: n=%zu batch=%zu records=%zu %s, best of %d\n", b->o.n,
           b->o.batch, b->o.records, b->o.nosync ? "nosync" : "durable (fsync)",
           ROUNDS);
    printf("record key %.1f bytes, stored blob %.1f bytes (means)\n",
           r->key_bytes, r->value_bytes);
    printf("writes: crdtdb %.0f ops/s, raw LMDB %.0f puts/s, ratio %.2f "
           "(goal >= %.2f) %s\n",
           r->write, r->raw_put, wr, GOAL_WRITE, wr >= GOAL_WRITE ? "PASS" : "FAIL");
    printf("reads:  crdtdb %.0f ops/s, raw LMDB %.0f gets/s, ratio %.2f "
           "(goal >= %.2f) %s\n",
           r->read, r->raw_get, rr, GOAL_READ, rr >= GOAL_READ ? "PASS" : "FAIL");
    printf("reads without txn (snapshot per call): crdtdb %.0f ops/s\n",
           r->read_auto);
}

static void print_json(const bench *b, const results *r)
{
    printf("{\"n\":%zu,\"batch\":%zu,\"records\":%zu,\"nosync\":%s,"
           "\"write_ops_per_s\":%.0f,\"raw_put_per_s\":%.0f,\"write_ratio\":%.4f,"
           "\"read_ops_per_s\":%.0f,\"raw_get_per_s\":%.0f,\"read_ratio\":%.4f,"
           "\"read_autotxn_ops_per_s\":%.0f,\"value_bytes\":%.1f,\"key_bytes\":%.1f,"
           "\"goal_write_ratio\":%.1f,\"goal_read_ratio\":%.1f}\n",
           b->o.n, b->o.batch, b->o.records, b->o.nosync ? "true" : "false",
           r->write, r->raw_put, ratio(r->write, r->raw_put), r->read, r->raw_get,
           ratio(r->read, r->raw_get), r->read_auto, r->value_bytes, r->key_bytes,
           GOAL_WRITE, GOAL_READ);
}

static void bench_free(bench *b)
{
    crdtdb_db_close(b->db);
    crdtdb_env_close(b->env);
    if (b->raw)
        mdb_env_close(b->raw);
    remove_dirs(b);
    free(b->ids);
    free(b->keys);
    free(b->klen);
    free(b->vsize);
    free(b->order);
    free(b->poff);
    free(b->valbuf);
    msgpack_sbuffer_destroy(&b->payloads);
    crdtdb_buf_free(&b->out);
}

int main(int argc, char **argv)
{
    bench b;
    memset(&b, 0, sizeof b);
    msgpack_sbuffer_init(&b.payloads);
    int a = parse_args(argc, argv, &b.o);
    if (a) {
        usage(a > 0 ? stdout : stderr);
        return a > 0 ? 0 : 2;
    }
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
