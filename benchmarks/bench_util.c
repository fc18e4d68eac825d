/*
 * bench_util — shared pieces of the benchmarks; see bench_util.h.
 */
#include "bench_util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ---------------------------------------------------------------- util */

double bench_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

double bench_ratio(double a, double b) { return b > 0 ? a / b : 0; }

int bench_fail(const char *what, int rc, const char *detail)
{
    fprintf(stderr, "%s: %s: %s (%s)\n", bench_name, what, crdtdb_strerror(rc),
            detail ? detail : "-");
    return -1;
}

int bench_fail_mdb(const char *what, int rc)
{
    fprintf(stderr, "%s: %s: %s\n", bench_name, what, mdb_strerror(rc));
    return -1;
}

int bench_oom(void)
{
    fprintf(stderr, "%s: out of memory\n", bench_name);
    return -1;
}

void bench_keep_best(double *best, size_t n, double secs)
{
    double rate = secs > 0 ? (double)n / secs : 0;
    if (rate > *best)
        *best = rate;
}

/* ---------------------------------------------------------------- output */

const char *bench_mode(int nosync) { return nosync ? "nosync" : "durable (fsync)"; }

const char *bench_bool(int b) { return b ? "true" : "false"; }

const char *bench_verdict(int ok) { return ok ? "PASS" : "FAIL"; }

/* ---------------------------------------------------------------- args */

int bench_parse_size(const char *s, size_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s ? s : "", &end, 10);
    if (!s || !*s || *end || errno || v == 0 || v > 100000000ull || *s == '-')
        return -1;
    *out = (size_t)v;
    return 0;
}

int bench_parse_args(int argc, char **argv, const bench_opt *opts, size_t n,
                     int *nosync, int *json)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        size_t *dst = NULL;
        int known = 0;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0)
            return 1;
        if (strcmp(a, "--nosync") == 0)
            known = *nosync = 1;
        else if (strcmp(a, "--json") == 0)
            known = *json = 1;
        for (size_t k = 0; k < n && !known; k++)
            if (strcmp(a, opts[k].name) == 0) {
                dst = opts[k].dst;
                known = 1;
            }
        if (!known) {
            fprintf(stderr, "%s: unknown argument '%s'\n", bench_name, a);
            return -1;
        }
        if (dst && (i + 1 >= argc || bench_parse_size(argv[++i], dst))) {
            fprintf(stderr, "%s: %s needs a positive integer\n", bench_name, a);
            return -1;
        }
    }
    return 0;
}

int bench_usage_exit(int a, void (*usage)(FILE *f))
{
    usage(a > 0 ? stdout : stderr);
    return a > 0 ? 0 : 2;
}

/* ---------------------------------------------------------------- base */

/* perror with "<bench_name>: what". */
static void bench_perror(const char *what)
{
    char msg[96];
    snprintf(msg, sizeof msg, "%s: %s", bench_name, what);
    perror(msg);
}

int bench_base_dirs(bench_base *s, const char *const *names, size_t n)
{
    snprintf(s->root, sizeof s->root, "/tmp/%s-XXXXXX", bench_name);
    if (!mkdtemp(s->root)) {
        s->root[0] = 0;
        bench_perror("mkdtemp");
        return -1;
    }
    s->nenvs = n < BENCH_MAX_ENVS ? n : BENCH_MAX_ENVS;
    for (size_t d = 0; d < s->nenvs; d++)
        snprintf(s->env_dir[d], sizeof s->env_dir[d], "%s/%s", s->root, names[d]);
    snprintf(s->raw_dir, sizeof s->raw_dir, "%s/raw", s->root);
    if (mkdir(s->raw_dir, 0700)) {
        bench_perror("mkdir");
        return -1;
    }
    return 0;
}

int bench_base_raw_open(bench_base *s, int nosync)
{
    unsigned flags = MDB_NOTLS | (nosync ? MDB_NOSYNC : 0);
    MDB_txn *t;
    int rc = mdb_env_create(&s->raw);
    if (!rc)
        rc = mdb_env_set_maxdbs(s->raw, 8);
    if (!rc)
        rc = mdb_env_set_mapsize(s->raw, BENCH_MAP_SIZE);
    if (!rc)
        rc = mdb_env_open(s->raw, s->raw_dir, flags, 0644);
    if (rc)
        return bench_fail_mdb("raw env_open", rc);
    if ((rc = mdb_txn_begin(s->raw, NULL, 0, &t)))
        return bench_fail_mdb("raw txn_begin", rc);
    rc = mdb_dbi_open(t, "records", MDB_CREATE, &s->raw_dbi);
    rc = rc ? rc : mdb_txn_commit(t);
    if (rc)
        mdb_txn_abort(t);
    return rc ? bench_fail_mdb("raw dbi_open", rc) : 0;
}

/* Removes dir's LMDB files (data.mdb, lock.mdb) and dir. */
static void remove_env_dir(const char *dir)
{
    static const char *const files[] = {"data.mdb", "lock.mdb"};
    char p[160];
    for (size_t f = 0; f < 2; f++) {
        snprintf(p, sizeof p, "%s/%s", dir, files[f]);
        unlink(p);
    }
    rmdir(dir);
}

void bench_base_free(bench_base *s)
{
    if (s->raw)
        mdb_env_close(s->raw);
    s->raw = NULL;
    if (s->root[0]) {
        for (size_t d = 0; d < s->nenvs; d++)
            remove_env_dir(s->env_dir[d]);
        remove_env_dir(s->raw_dir);
        rmdir(s->root);
        s->root[0] = 0;
    }
    free(s->ids);
    free(s->valbuf);
    s->ids = NULL;
    s->valbuf = NULL;
}

/* ---------------------------------------------------------------- envs */

int bench_env_open(const char *dir, int nosync, crdtdb_env **env)
{
    crdtdb_env_options eo;
    crdtdb_env_options_init(&eo);
    eo.map_size = BENCH_MAP_SIZE;
    eo.flags = nosync ? CRDTDB_ENV_NOSYNC : 0;
    int rc = crdtdb_env_open(dir, &eo, env);
    return rc ? bench_fail("env_open", rc, NULL) : 0;
}

uint8_t *bench_filler(size_t n)
{
    uint8_t *p = malloc(n);
    if (!p) {
        bench_oom();
        return NULL;
    }
    memset(p, 0xa5, n);
    return p;
}

/* ---------------------------------------------------------------- records */

char *bench_make_ids(size_t n)
{
    char *ids = calloc(n, BENCH_ID_STRIDE);
    for (size_t i = 0; ids && i < n; i++)
        snprintf(ids + i * BENCH_ID_STRIDE, BENCH_ID_STRIDE, "player-%zu", i);
    return ids;
}

int bench_pack_score(msgpack_packer *pk, uint32_t v)
{
    return msgpack_pack_map(pk, 1) || msgpack_pack_str(pk, 5) ||
           msgpack_pack_str_body(pk, "score", 5) || msgpack_pack_uint32(pk, v);
}

int bench_fill(crdtdb_db *db, const char *coll, const char *ids, size_t n,
               size_t batch, bench_pack_fn pack, void *ctx)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    crdtdb_txn *t = NULL;
    int rc = 0;
    for (size_t i = 0; i < n && !rc; i++) {
        if (!t && (rc = crdtdb_txn_begin(db, 0, &t)))
            break;
        sb.size = 0;
        const char *id = bench_id(ids, i);
        if (pack(ctx, &sb, id, i)) {
            rc = CRDTDB_ENOMEM;
            break;
        }
        rc = crdtdb_db_add(db, t, coll, id, (const uint8_t *)sb.data, sb.size);
        if (!rc && bench_batch_end(i, batch, n)) {
            rc = crdtdb_txn_commit(t);
            t = NULL;
        }
    }
    crdtdb_txn_abort(t);
    msgpack_sbuffer_destroy(&sb);
    return rc;
}
