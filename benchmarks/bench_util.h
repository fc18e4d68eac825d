/*
 * bench_util — what the benchmarks (bench_store, bench_merge) share: the
 * clock, error reports, argument parsing, the run's temp directories, the
 * environments (crdtdb and the raw LMDB baseline, opened alike), record ids
 * and small output helpers.
 *
 * Each benchmark defines bench_name (e.g. "bench_store"): every message on
 * stderr starts with it, and the temp directory is named after it.
 */
#ifndef CRDTDB_BENCH_UTIL_H
#define CRDTDB_BENCH_UTIL_H

#include <lmdb.h>
#include <msgpack.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "crdtdb.h"

/* Defined by each benchmark: its name, the prefix of its messages. */
extern const char bench_name[];

#define BENCH_ROUNDS 3                   /* each phase runs this often */
#define BENCH_MAP_SIZE ((size_t)1 << 30) /* of every environment */
#define BENCH_ID_STRIDE 32               /* bytes per id in bench_make_ids */

/* ---------------------------------------------------------------- util */

/* Seconds on the monotonic clock. */
double bench_now(void);

/* a / b, or 0 when b is not positive. */
double bench_ratio(double a, double b);

/* Prints "<bench_name>: <what>: <crdtdb error> (<detail>)", detail "-"
 * when NULL; returns -1. */
int bench_fail(const char *what, int rc, const char *detail);

/* Prints "<bench_name>: <what>: <LMDB error>"; returns -1. */
int bench_fail_mdb(const char *what, int rc);

/* Prints "<bench_name>: out of memory"; returns -1. */
int bench_oom(void);

/* Keeps in *best the larger of it and n operations in secs (ops/s). */
void bench_keep_best(double *best, size_t n, double secs);

/* 1 when operation i of n ends a transaction of `batch` operations. */
static inline int bench_batch_end(size_t i, size_t batch, size_t n)
{
    return (i + 1) % batch == 0 || i + 1 == n;
}

/* ---------------------------------------------------------------- output */

/* "nosync" or "durable (fsync)", for the human summary line. */
const char *bench_mode(int nosync);

/* "true" or "false", for JSON. */
const char *bench_bool(int b);

/* "PASS" or "FAIL" for a goal met or not. */
const char *bench_verdict(int ok);

/* ---------------------------------------------------------------- args */

/* A size option: --name N stores N (1 .. 100000000) in *dst. */
typedef struct bench_opt {
    const char *name;
    size_t *dst;
} bench_opt;

/* Parses "1".."100000000" into *out; -1 for anything else. */
int bench_parse_size(const char *s, size_t *out);

/* Parses --help / -h, --nosync, --json and the size options opts[0, n)
 * (defaults are what the caller left in them).  Returns 0 to run, 1 for
 * --help, -1 on a bad argument (reported on stderr). */
int bench_parse_args(int argc, char **argv, const bench_opt *opts, size_t n,
                     int *nosync, int *json);

/* After bench_parse_args returned a (non-zero): prints the usage with
 * usage(), on stdout for --help (a > 0) else on stderr, and returns the
 * exit status, 0 for --help, 2 for a bad argument. */
int bench_usage_exit(int a, void (*usage)(FILE *f));

/* ---------------------------------------------------------------- base */

#define BENCH_MAX_ENVS 2 /* crdtdb environments per run */

/* What every run holds besides its own data: its temp directory, with a
 * subdirectory per crdtdb environment and one for the raw LMDB baseline;
 * the baseline; the record ids and the baseline's value buffer.  Zeroed
 * before use; bench_base_free releases it all. */
typedef struct bench_base {
    char root[64];                    /* /tmp/<bench_name>-XXXXXX */
    char env_dir[BENCH_MAX_ENVS][96]; /* root/<name>, made by env_open */
    char raw_dir[96];                 /* root/raw */
    size_t nenvs;
    MDB_env *raw;
    MDB_dbi raw_dbi;                  /* its sub-database "records" */
    char *ids;                        /* from bench_make_ids */
    uint8_t *valbuf;                  /* from bench_filler */
} bench_base;

/* Makes the run's directory, names env_dir[i] after names[i] for i < n
 * (n <= BENCH_MAX_ENVS) and makes raw_dir.  0 or -1 (reported). */
int bench_base_dirs(bench_base *s, const char *const *names, size_t n);

/* Opens the raw LMDB baseline in raw_dir like crdtdb's environment
 * (BENCH_MAP_SIZE, MDB_NOTLS, MDB_NOSYNC iff nosync), with a named
 * sub-database "records".  0 or -1 (reported). */
int bench_base_raw_open(bench_base *s, int nosync);

/* Closes the baseline, removes the LMDB files and directories made for the
 * run (once the crdtdb environments in them are closed) and frees ids and
 * valbuf. */
void bench_base_free(bench_base *s);

/* Opens a crdtdb environment in dir with BENCH_MAP_SIZE and, iff nosync,
 * CRDTDB_ENV_NOSYNC.  0 or -1 (reported). */
int bench_env_open(const char *dir, int nosync, crdtdb_env **env);

/* A malloc'd block of n bytes of 0xa5 (the baseline's values), or NULL
 * (reported). */
uint8_t *bench_filler(size_t n);

/* ---------------------------------------------------------------- records */

/* n ids "player-<i>", BENCH_ID_STRIDE bytes apart, or NULL. */
char *bench_make_ids(size_t n);

/* Id i of ids from bench_make_ids. */
static inline const char *bench_id(const char *ids, size_t i)
{
    return ids + i * BENCH_ID_STRIDE;
}

/* Packs the one-key map {"score": v}; 0 or non-zero on failure. */
int bench_pack_score(msgpack_packer *pk, uint32_t v);

/* Packs record i, named id, into the empty sb; 0 or non-zero on failure. */
typedef int (*bench_pack_fn)(void *ctx, msgpack_sbuffer *sb, const char *id,
                             size_t i);

/* Adds records [0, n) of ids to coll, `batch` per write transaction, each
 * packed by pack.  Returns 0 or the crdtdb error. */
int bench_fill(crdtdb_db *db, const char *coll, const char *ids, size_t n,
               size_t batch, bench_pack_fn pack, void *ctx);

#endif
