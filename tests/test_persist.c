/* Durability: reopen, process kill, many databases, the clock on disk. */
#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "crdt/hlc.h"
#include "storage/internal.h"
#include "tests/testutil.h"

static char *dir;

static char mounted[4096]; /* a tmpfs a test mounted, unmounted in teardown */

static void teardown(void)
{
    if (mounted[0]) {
        umount(mounted);
        mounted[0] = 0;
    }
    tu_rmrf(dir);
    free(dir);
    dir = NULL;
}

static void add(crdtdb_db *db, const char *coll, const char *id, const char *json)
{
    crdtdb_buf b = CRDTDB_BUF_INIT;
    tu_mp(&b, json);
    ck_assert_int_eq(crdtdb_db_add(db, NULL, coll, id, b.data, b.len), 0);
    crdtdb_buf_free(&b);
}

START_TEST(data_survives_reopen)
{
    crdtdb_env *env = tu_env(&dir, NULL);
    const char *c[] = {"c"};
    crdtdb_db *db;
    ck_assert_int_eq(crdtdb_db_create(env, "d", c, 1, &db), 0);
    add(db, "c", "r", "{\"a\":{\"b\":1}}");
    crdtdb_buf b = CRDTDB_BUF_INIT;
    tu_mp(&b, "{\"a\":{\"c\":2}}");
    ck_assert_int_eq(crdtdb_db_update(db, NULL, "c", "r", b.data, b.len), 0);
    uint64_t seq1;
    ck_assert_int_eq(crdtdb_db_seq(db, NULL, &seq1), 0);
    crdtdb_db_close(db);
    crdtdb_env_close(env);

    ck_assert_int_eq(crdtdb_env_open(dir, NULL, &env), 0);
    ck_assert_int_eq(crdtdb_db_open(env, "d", &db), 0);
    char *s = tu_get(db, "c", "r");
    ck_assert_str_eq(s, "{\"a\":{\"b\":1,\"c\":2}}");
    free(s);
    uint64_t seq2;
    ck_assert_int_eq(crdtdb_db_seq(db, NULL, &seq2), 0);
    ck_assert_uint_eq(seq1, seq2);
    /* sequences keep increasing after reopen */
    ck_assert_int_eq(crdtdb_db_update(db, NULL, "c", "r", b.data, b.len), 0);
    ck_assert_int_eq(crdtdb_db_seq(db, NULL, &seq2), 0);
    ck_assert_uint_gt(seq2, seq1);
    crdtdb_buf_free(&b);
    crdtdb_db_close(db);
    crdtdb_env_close(env);
}
END_TEST

/* A write that returned success is on disk even if the process dies at once. */
START_TEST(acknowledged_write_survives_kill)
{
    dir = tu_tmpdir();
    int pipefd[2];
    ck_assert_int_eq(pipe(pipefd), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        crdtdb_env *env;
        crdtdb_db *db;
        const char *c[] = {"c"};
        if (crdtdb_env_open(dir, NULL, &env) || crdtdb_db_create(env, "d", c, 1, &db))
            _exit(2);
        crdtdb_buf b = CRDTDB_BUF_INIT;
        char json[64];
        for (int i = 0;; i++) {
            snprintf(json, sizeof json, "{\"i\":%d}", i);
            if (crdtdb_json_to_msgpack(json, strlen(json), 0, &b, NULL, 0) ||
                crdtdb_db_add(db, NULL, "c", "r", b.data, b.len))
                _exit(3);
            if (write(pipefd[1], &i, sizeof i) != sizeof i) /* acknowledged */
                _exit(4);
        }
    }
    close(pipefd[1]);
    int last = -1, v;
    for (int k = 0; k < 50 && read(pipefd[0], &v, sizeof v) == sizeof v; k++)
        last = v;
    kill(pid, SIGKILL);
    while (read(pipefd[0], &v, sizeof v) == sizeof v)
        last = v; /* acknowledged before the kill landed */
    close(pipefd[0]);
    int status;
    waitpid(pid, &status, 0);
    ck_assert(WIFSIGNALED(status));
    ck_assert_int_ge(last, 0);

    crdtdb_env *env;
    crdtdb_db *db;
    ck_assert_int_eq(crdtdb_env_open(dir, NULL, &env), 0);
    ck_assert_int_eq(crdtdb_db_open(env, "d", &db), 0);
    char *s = tu_get(db, "c", "r");
    ck_assert_ptr_nonnull(s);
    int got = -1;
    ck_assert_int_eq(sscanf(s, "{\"i\":%d}", &got), 1);
    ck_assert_int_ge(got, last);
    free(s);
    crdtdb_db_close(db);
    crdtdb_env_close(env);
}
END_TEST

static int count_cb(void *ctx, const char *id)
{
    (void)id;
    ++*(int *)ctx;
    return 0;
}

START_TEST(ten_thousand_databases)
{
    crdtdb_env_options o;
    crdtdb_env_options_init(&o);
    o.flags = CRDTDB_ENV_NOSYNC; /* durability is tested above; this is scale */
    crdtdb_env *env = tu_env(&dir, &o);
    const char *c[] = {"state"};
    char id[32];
    crdtdb_buf b = CRDTDB_BUF_INIT;
    tu_mp(&b, "{\"turn\":1}");
    for (int i = 0; i < 10000; i++) {
        crdtdb_db *db;
        snprintf(id, sizeof id, "match-%05d", i);
        ck_assert_int_eq(crdtdb_db_create(env, id, c, 1, &db), 0);
        ck_assert_int_eq(crdtdb_db_add(db, NULL, "state", "s", b.data, b.len), 0);
        crdtdb_db_close(db);
    }
    crdtdb_env_close(env);
    ck_assert_int_eq(crdtdb_env_open(dir, NULL, &env), 0);
    int n = 0;
    ck_assert_int_eq(crdtdb_db_list(env, count_cb, &n), 0);
    ck_assert_int_eq(n, 10000);
    for (int i = 0; i < 10000; i += 997) {
        crdtdb_db *db;
        snprintf(id, sizeof id, "match-%05d", i);
        ck_assert_int_eq(crdtdb_db_open(env, id, &db), 0);
        char *s = tu_get(db, "state", "s");
        ck_assert_str_eq(s, "{\"turn\":1}");
        free(s);
        uint64_t seq;
        ck_assert_int_eq(crdtdb_db_seq(db, NULL, &seq), 0);
        ck_assert_uint_eq(seq, 2); /* sequences are per database */
        crdtdb_db_close(db);
    }
    crdtdb_buf_free(&b);
    crdtdb_env_close(env);
}
END_TEST

static uint64_t frozen(void *ctx) { return *(uint64_t *)ctx; }

/* The clock restarts from the highest stamp on disk, even when the wall
 * clock is now behind it: later writes still win. */
START_TEST(clock_resumes_from_disk)
{
    uint64_t now = 1000000;
    crdtdb_env_options o;
    crdtdb_env_options_init(&o);
    o.clock = frozen;
    o.clock_ctx = &now;
    crdtdb_env *env = tu_env(&dir, &o);
    const char *c[] = {"c"};
    crdtdb_db *db;
    ck_assert_int_eq(crdtdb_db_create(env, "d", c, 1, &db), 0);
    add(db, "c", "r", "{\"v\":1}");
    crdtdb_db_close(db);
    uint64_t before = env->hlc;
    ck_assert_uint_eq(crdtdb__hlc_ms(before), 1000000);
    crdtdb_env_close(env);
    now = 5; /* the wall clock stepped far back */
    ck_assert_int_eq(crdtdb_env_open(dir, &o, &env), 0);
    ck_assert_uint_eq(env->hlc, before);
    ck_assert_int_eq(crdtdb_db_open(env, "d", &db), 0);
    crdtdb_buf b = CRDTDB_BUF_INIT;
    tu_mp(&b, "{\"v\":2}");
    ck_assert_int_eq(crdtdb_db_update(db, NULL, "c", "r", b.data, b.len), 0);
    char *s = tu_get(db, "c", "r");
    ck_assert_str_eq(s, "{\"v\":2}");
    free(s);
    ck_assert_uint_gt(env->hlc, before);
    crdtdb_buf_free(&b);
    crdtdb_db_close(db);
    crdtdb_env_close(env);
}
END_TEST

/* Fills database d of env with 2 KB records r0, r1, ... until a write
 * fails or `max` are written; returns how many were, *rc the failure. */
static int fill(crdtdb_db *db, int max, int *rc)
{
    crdtdb_buf b = CRDTDB_BUF_INIT;
    char json[2100], id[16];
    snprintf(json, sizeof json, "{\"blob\":\"%02000d\"}", 0);
    tu_mp(&b, json);
    int i;
    for (i = 0, *rc = 0; i < max; i++) {
        snprintf(id, sizeof id, "r%d", i);
        if ((*rc = crdtdb_db_add(db, NULL, "c", id, b.data, b.len)))
            break;
    }
    crdtdb_buf_free(&b);
    return i;
}

static size_t map_bytes(crdtdb_env *env)
{
    MDB_envinfo info;
    ck_assert_int_eq(mdb_env_info(env->mdb, &info), 0);
    return info.me_mapsize;
}

/* A full map: the write fails with EMAPFULL and says so, and what was
 * committed stays, readable, in every database; reopened with a larger
 * map_size, writes go on. */
START_TEST(map_full_is_reported)
{
    crdtdb_env_options o;
    crdtdb_env_options_init(&o);
    o.map_size = 256 * 1024;
    crdtdb_env *env = tu_env(&dir, &o);
    const char *c[] = {"c"};
    crdtdb_db *db, *other;
    ck_assert_int_eq(crdtdb_db_create(env, "other", c, 1, &other), 0);
    add(other, "c", "kept", "{\"x\":1}");
    ck_assert_int_eq(crdtdb_db_create(env, "d", c, 1, &db), 0);
    int rc, n = fill(db, 2000, &rc);
    ck_assert_int_eq(rc, CRDTDB_EMAPFULL);
    ck_assert_msg(strstr(crdtdb_db_errmsg(db), "full") != NULL, "%s", crdtdb_db_errmsg(db));
    ck_assert_int_gt(n, 10);
    ck_assert_uint_eq(map_bytes(env), o.map_size);
    char *s = tu_get(db, "c", "r0");
    ck_assert_ptr_nonnull(s);
    free(s);
    char id[16];
    snprintf(id, sizeof id, "r%d", n - 1);
    ck_assert_ptr_nonnull(s = tu_get(db, "c", id));
    free(s);
    snprintf(id, sizeof id, "r%d", n);
    ck_assert_ptr_null(s = tu_get(db, "c", id)); /* the failed write: nothing */
    ck_assert_ptr_nonnull(s = tu_get(other, "c", "kept"));
    free(s);
    crdtdb_db_close(other);
    crdtdb_db_close(db);
    crdtdb_env_close(env);
    o.map_size = 4 * 1024 * 1024;
    ck_assert_int_eq(crdtdb_env_open(dir, &o, &env), 0);
    ck_assert_int_eq(crdtdb_db_open(env, "d", &db), 0);
    add(db, "c", "again", "{\"x\":1}");
    ck_assert_ptr_nonnull(s = tu_get(db, "c", "r0"));
    free(s);
    crdtdb_db_close(db);
    crdtdb_env_close(env);
}
END_TEST

/* The default map is address space, not disk: a fresh environment's file
 * stays small. */
START_TEST(default_map_costs_no_disk)
{
    crdtdb_env *env = tu_env(&dir, NULL);
    ck_assert_uint_eq(map_bytes(env), (size_t)64 << 30);
    const char *c[] = {"c"};
    crdtdb_db *db;
    ck_assert_int_eq(crdtdb_db_create(env, "d", c, 1, &db), 0);
    add(db, "c", "r", "{\"x\":1}");
    char file[4200];
    snprintf(file, sizeof file, "%s/data.mdb", dir);
    struct stat sb;
    ck_assert_int_eq(stat(file, &sb), 0);
    ck_assert_int_lt(sb.st_blocks * 512, 4 * 1024 * 1024);
    crdtdb_db_close(db);
    crdtdb_env_close(env);
}
END_TEST

/* A larger map another process set is adopted: this process's next
 * transaction (MDB_MAP_RESIZED) goes on in it. */
START_TEST(map_grown_by_another_process)
{
    crdtdb_env_options o;
    crdtdb_env_options_init(&o);
    o.map_size = 256 * 1024;
    crdtdb_env *env = tu_env(&dir, &o);
    const char *c[] = {"c"};
    crdtdb_db *db;
    ck_assert_int_eq(crdtdb_db_create(env, "d", c, 1, &db), 0);
    add(db, "c", "first", "{\"x\":1}");
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        crdtdb_env *we;
        crdtdb_db *wd;
        int rc;
        crdtdb_env_options big = o;
        big.map_size = 16 * 1024 * 1024;
        if (crdtdb_env_open(dir, &big, &we) || crdtdb_db_open(we, "d", &wd))
            _exit(1);
        _exit(fill(wd, 1000, &rc) == 1000 && rc == 0 ? 0 : 2);
    }
    int status;
    waitpid(pid, &status, 0);
    ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    add(db, "c", "after", "{\"x\":2}");
    char *s = tu_get(db, "c", "r999");
    ck_assert_ptr_nonnull(s);
    free(s);
    ck_assert_uint_gt(map_bytes(env), 2 * 1024 * 1024); /* what the data needs, at least */
    crdtdb_db_close(db);
    crdtdb_env_close(env);
    ck_assert_int_eq(crdtdb_env_open(dir, &o, &env), 0); /* smaller map asked */
    ck_assert_uint_gt(map_bytes(env), 2 * 1024 * 1024); /* what the data needs, at least */
    crdtdb_env_close(env);
}
END_TEST

/* What crdtdb_db_stat counts: present and removed records, their leaves,
 * one log entry per run of registers a store numbered, while any lives. */
START_TEST(stat_counts_records_tombstones_and_log)
{
    crdtdb_env *env = tu_env(&dir, NULL);
    const char *c[] = {"c", "e"};
    crdtdb_db *db, *other;
    ck_assert_int_eq(crdtdb_db_create(env, "d", c, 2, &db), 0);
    ck_assert_int_eq(crdtdb_db_create(env, "d2", c, 1, &other), 0);
    add(db, "c", "a", "{\"x\":1,\"y\":{\"z\":2}}");
    add(db, "c", "b", "{\"x\":1}");
    add(db, "e", "c", "{\"x\":1}");
    add(other, "c", "o", "{\"x\":1}"); /* another database: not counted */
    ck_assert_int_eq(crdtdb_db_remove(db, NULL, "c", "b"), 0);
    crdtdb_db_stats st;
    ck_assert_int_eq(crdtdb_db_stat(db, &st), 0);
    ck_assert_uint_eq(st.records, 2);
    ck_assert_uint_eq(st.removed, 1);
    ck_assert_uint_eq(st.fields, 3); /* a: x, y.z; c: x */
    /* one run each: a's base and 2 leaves, c's base and 1 leaf, b's
     * remove (its add's run, all dead, is dropped) */
    ck_assert_uint_eq(st.log_entries, 3);
    ck_assert_uint_gt(st.record_bytes, 0);
    ck_assert_uint_gt(st.log_bytes, 0);
    uint64_t seq;
    ck_assert_int_eq(crdtdb_db_seq(db, NULL, &seq), 0);
    ck_assert_uint_eq(st.seq, seq);
    ck_assert_int_eq(crdtdb_db_stat(other, &st), 0);
    ck_assert_uint_eq(st.records, 1);
    ck_assert_uint_eq(st.log_entries, 1);
    ck_assert_int_eq(crdtdb_db_stat(NULL, &st), CRDTDB_EINVAL);
    crdtdb_db_close(other);
    crdtdb_db_close(db);
    crdtdb_env_close(env);
}
END_TEST

/* A backup taken while another process writes is one consistent snapshot:
 * everything committed before it began, then a gap-free prefix of what
 * the writer committed meanwhile; it opens as an environment under the
 * same identity, and is never written over. */
START_TEST(backup_while_another_process_writes)
{
    crdtdb_env *env = tu_env(&dir, NULL);
    const char *c[] = {"c"};
    crdtdb_db *db;
    ck_assert_int_eq(crdtdb_db_create(env, "d", c, 1, &db), 0);
    char id[32];
    crdtdb_buf b = CRDTDB_BUF_INIT;
    tu_mp(&b, "{\"x\":1}");
    crdtdb_txn *t;
    ck_assert_int_eq(crdtdb_txn_begin(db, 0, &t), 0);
    for (int i = 0; i < 500; i++) {
        snprintf(id, sizeof id, "r%d", i);
        ck_assert_int_eq(crdtdb_db_add(db, t, "c", id, b.data, b.len), 0);
    }
    ck_assert_int_eq(crdtdb_txn_commit(t), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) { /* the writer: its own environment handle, as a server */
        crdtdb_env *we;
        crdtdb_db *wd;
        if (crdtdb_env_open(dir, NULL, &we) || crdtdb_db_open(we, "d", &wd))
            _exit(1);
        for (int i = 0;; i++) {
            snprintf(id, sizeof id, "w%06d", i);
            if (crdtdb_db_add(wd, NULL, "c", id, b.data, b.len))
                _exit(2);
        }
    }
    tu_sleep_ms(200);
    char copy[4096];
    snprintf(copy, sizeof copy, "%s-copy", dir);
    ck_assert_int_eq(mkdir(copy, 0700), 0);
    int rc = crdtdb_env_backup(env, copy);
    tu_sleep_ms(100);
    kill(pid, SIGKILL);
    int status;
    waitpid(pid, &status, 0);
    ck_assert_int_eq(rc, 0);
    ck_assert_int_eq(crdtdb_env_backup(env, copy), CRDTDB_EEXIST); /* never over */
    ck_assert_str_ne(crdtdb_env_errmsg(env), "");
    char file[4200];
    snprintf(file, sizeof file, "%s/data.mdb", copy);
    struct stat sb;
    ck_assert_int_eq(stat(file, &sb), 0);
    ck_assert_int_eq(sb.st_mode & 0777, 0600); /* it holds the secret key */

    crdtdb_env *ce;
    crdtdb_db *cd;
    ck_assert_int_eq(crdtdb_env_open(copy, NULL, &ce), 0);
    uint8_t a[CRDTDB_REPLICA_ID_BYTES], z[CRDTDB_REPLICA_ID_BYTES];
    crdtdb_env_replica_id(env, a);
    crdtdb_env_replica_id(ce, z);
    ck_assert_mem_ne(a, z, sizeof a); /* a restore is a new replica */
    ck_assert_int_eq(crdtdb_db_open(ce, "d", &cd), 0);
    int found;
    crdtdb_buf out = CRDTDB_BUF_INIT;
    for (int i = 0; i < 500; i++) {
        snprintf(id, sizeof id, "r%d", i);
        ck_assert_int_eq(crdtdb_db_get_by_id(cd, NULL, "c", id, &out, &found), 0);
        ck_assert_int_eq(found, 1);
    }
    crdtdb_db_stats st;
    ck_assert_int_eq(crdtdb_db_stat(cd, &st), 0);
    uint64_t w = st.records - 500; /* the writer's records in the copy */
    ck_assert_uint_gt(w, 0);
    for (uint64_t i = 0; i < w; i++) { /* a prefix: no gap */
        snprintf(id, sizeof id, "w%06llu", (unsigned long long)i);
        ck_assert_int_eq(crdtdb_db_get_by_id(cd, NULL, "c", id, &out, &found), 0);
        ck_assert_int_eq(found, 1);
    }
    add(cd, "c", "after", "{\"x\":2}"); /* the copy is writable */
    crdtdb_buf_free(&out);
    crdtdb_buf_free(&b);
    crdtdb_db_close(cd);
    crdtdb_env_close(ce);
    tu_rmrf(copy);
    crdtdb_db_close(db);
    crdtdb_env_close(env);
}
END_TEST

/* A small disk: a 2 MiB tmpfs mounted under a new temp dir (*root), with
 * 512 KiB of ballast to free later, and an environment on it (*env,
 * database "d" of collection "c" in *db).  0 when mounts are not allowed
 * here: the caller skips (`what` says which test). */
typedef struct small_disk {
    char *root;
    char mnt[4096], ballast[4200], data[4200];
    crdtdb_env_options o;
} small_disk;

static int small_disk_open(small_disk *sd, const char *what, crdtdb_env **env, crdtdb_db **db)
{
    sd->root = tu_tmpdir();
    snprintf(sd->mnt, sizeof sd->mnt, "%s/mnt", sd->root);
    ck_assert_int_eq(mkdir(sd->mnt, 0700), 0);
    if (mount("tmpfs", sd->mnt, "tmpfs", 0, "size=2m") != 0) {
        fprintf(stderr, "%s: skipped (cannot mount tmpfs: %s)\n", what, strerror(errno));
        tu_rmrf(sd->root);
        free(sd->root);
        return 0;
    }
    snprintf(mounted, sizeof mounted, "%s", sd->mnt);
    snprintf(sd->ballast, sizeof sd->ballast, "%s/ballast", sd->mnt);
    FILE *f = fopen(sd->ballast, "w");
    ck_assert_ptr_nonnull(f);
    static char zeros[512 * 1024];
    ck_assert_uint_eq(fwrite(zeros, 1, sizeof zeros, f), sizeof zeros);
    ck_assert_int_eq(fclose(f), 0);
    crdtdb_env_options_init(&sd->o);
    sd->o.map_size = 8 * 1024 * 1024;
    snprintf(sd->data, sizeof sd->data, "%s/env", sd->mnt);
    ck_assert_int_eq(crdtdb_env_open(sd->data, &sd->o, env), 0);
    const char *c[] = {"c"};
    ck_assert_int_eq(crdtdb_db_create(*env, "d", c, 1, db), 0);
    return 1;
}

static void small_disk_close(small_disk *sd)
{
    ck_assert_int_eq(umount(sd->mnt), 0);
    mounted[0] = 0;
    tu_rmrf(sd->root);
    free(sd->root);
}

/* A disk that fills (a 2 MiB tmpfs the test mounts; skipped where mounts
 * are not allowed): the write that finds no space fails with EIO and says
 * so, nothing of it is stored, what was committed stays readable, and
 * writes go on once space is freed. */
START_TEST(full_disk_refuses_then_recovers)
{
    small_disk sd;
    crdtdb_env *env;
    crdtdb_db *db;
    if (!small_disk_open(&sd, "full_disk_refuses_then_recovers", &env, &db))
        return;
    int rc, n = fill(db, 5000, &rc);
    ck_assert_int_eq(rc, CRDTDB_EIO);
    ck_assert_msg(strstr(crdtdb_db_errmsg(db), "disk is full") != NULL ||
                      strstr(crdtdb_db_errmsg(db), "No space left") != NULL,
                  "%s",
                  crdtdb_db_errmsg(db));
    ck_assert_int_gt(n, 50);
    char id[16], *s;
    snprintf(id, sizeof id, "r%d", n);
    ck_assert_ptr_null(s = tu_get(db, "c", id)); /* the failed write: nothing */
    snprintf(id, sizeof id, "r%d", n - 1);
    ck_assert_ptr_nonnull(s = tu_get(db, "c", id));
    free(s);
    ck_assert_int_eq(unlink(sd.ballast), 0); /* space freed: writes go on */
    add(db, "c", "after", "{\"x\":1}");
    crdtdb_db_close(db);
    crdtdb_env_close(env);
    ck_assert_int_eq(crdtdb_env_open(sd.data, &sd.o, &env), 0); /* all committed */
    ck_assert_int_eq(crdtdb_db_open(env, "d", &db), 0);
    for (int i = 0; i < n; i++) {
        snprintf(id, sizeof id, "r%d", i);
        ck_assert_ptr_nonnull(s = tu_get(db, "c", id));
        free(s);
    }
    ck_assert_ptr_nonnull(s = tu_get(db, "c", "after"));
    free(s);
    crdtdb_db_close(db);
    crdtdb_env_close(env);
    small_disk_close(&sd);
}
END_TEST

/* Applies every delta db exports after `since` (for `peer`, may be NULL)
 * to `to`; returns the first failure. */
typedef struct relay {
    crdtdb_db *to;
    int rc;
} relay;

static int relay_delta(void *ctx, const uint8_t *d, size_t len)
{
    relay *r = ctx;
    if (!r->rc)
        r->rc = crdtdb_db_apply(r->to, d, len, NULL);
    return r->rc ? r->rc : 0;
}

/* A peer replica: database "d" of collection "c" in a fresh environment
 * (opts may be NULL) in a temp dir; peer_close ends and removes both. */
typedef struct peer {
    char *dir;
    crdtdb_env *env;
    crdtdb_db *db;
} peer;

static void peer_open(peer *p, const crdtdb_env_options *opts)
{
    const char *c[] = {"c"};
    p->dir = NULL;
    p->env = tu_env(&p->dir, opts);
    ck_assert_int_eq(crdtdb_db_create(p->env, "d", c, 1, &p->db), 0);
}

static void peer_close(peer *p)
{
    crdtdb_db_close(p->db);
    crdtdb_env_close(p->env);
    tu_rmrf(p->dir);
    free(p->dir);
}

/* Early relay (crdtdb_db_set_precommit): what the hook saw and sent.  A
 * write past a reservation starts more than this past the last sequence
 * (storage/txn.c reserves 1024 ahead, renewed within 512 of the end). */
#define RESERVE_GAP 512u

typedef struct early {
    int calls;
    uint64_t from, to, seq_seen;
    crdtdb_buf delta; /* the shared delta the hook exported for (from, to] */
    int write_rc;     /* a write tried inside the hook */
    int seen;         /* the record written was visible inside the hook */
    int die;          /* exit the process inside the hook (a crash before commit) */
    char out[4200];   /* with die: where the delta goes first */
} early;

static int early_sink(void *ctx, const uint8_t *d, size_t len)
{
    early *e = ctx;
    return len ? crdtdb__buf_append(&e->delta, d, len) : 0;
}

static void early_hook(void *ctx, crdtdb_db *db, uint64_t from, uint64_t to)
{
    early *e = ctx;
    e->calls++;
    e->from = from;
    e->to = to;
    e->delta.len = 0;
    crdtdb_export_options xo;
    memset(&xo, 0, sizeof xo);
    xo.flags = CRDTDB_EXPORT_SHARED;
    crdtdb_export_info info;
    ck_assert_int_eq(crdtdb_db_export_for(db, from, NULL, &xo, early_sink, e, &info), 0);
    ck_assert_uint_eq(info.to, to);
    ck_assert_int_eq(crdtdb_db_seq(db, NULL, &e->seq_seen), 0);
    crdtdb_buf b = CRDTDB_BUF_INIT;
    tu_mp(&b, "{\"x\":9}");
    e->write_rc = crdtdb_db_add(db, NULL, "c", "inside", b.data, b.len);
    crdtdb_buf_free(&b);
    char *v = tu_get(db, "c", "r1");
    e->seen = v != NULL;
    free(v);
    if (e->die) {
        tu_spit(e->out, e->delta.data, e->delta.len);
        _exit(0);
    }
}

/* The hook runs inside the write, after it is prepared: reads see the
 * write (the record, the sequence, a delta of it), writes are refused,
 * and the delta it made is the one peers get once the write commits.
 * Only sequences an earlier commit reserved go early: not the first
 * write's. */
START_TEST(early_relay_sees_the_write_to_come)
{
    crdtdb_env *env = tu_env(&dir, NULL);
    const char *c[] = {"c"};
    crdtdb_db *db;
    ck_assert_int_eq(crdtdb_db_create(env, "d", c, 1, &db), 0);
    early e;
    memset(&e, 0, sizeof e);
    crdtdb_db_set_precommit(db, early_hook, &e);
    add(db, "c", "r0", "{\"x\":0}");
    ck_assert_int_eq(e.calls, 0); /* nothing reserved before it */
    uint64_t s0;
    ck_assert_int_eq(crdtdb_db_seq(db, NULL, &s0), 0);
    add(db, "c", "r1", "{\"x\":1,\"y\":2}");
    ck_assert_int_eq(e.calls, 1);
    ck_assert_uint_eq(e.from, s0);
    ck_assert_uint_eq(e.seq_seen, e.to);
    ck_assert_uint_gt(e.to, s0);
    ck_assert_int_eq(e.write_rc, CRDTDB_EBUSY);
    ck_assert_int_eq(e.seen, 1);
    ck_assert_uint_gt(e.delta.len, 0);
    uint64_t s1;
    ck_assert_int_eq(crdtdb_db_seq(db, NULL, &s1), 0);
    ck_assert_uint_eq(s1, e.to); /* no gap in one process's run */
    char *v = tu_get(db, "c", "inside");
    ck_assert_ptr_null(v);
    /* a peer given the early delta holds the write */
    peer pr;
    peer_open(&pr, NULL);
    ck_assert_int_eq(crdtdb_db_apply(pr.db, e.delta.data, e.delta.len, NULL), 0);
    ck_assert_ptr_nonnull(v = tu_get(pr.db, "c", "r1"));
    ck_assert_str_eq(v, "{\"x\":1,\"y\":2}");
    free(v);
    /* the shared delta cached is the same bytes a session gets after */
    crdtdb_buf keep = e.delta;
    memset(&e.delta, 0, sizeof e.delta);
    crdtdb_export_options xo;
    memset(&xo, 0, sizeof xo);
    xo.flags = CRDTDB_EXPORT_SHARED;
    ck_assert_int_eq(crdtdb_db_export_for(db, s0, NULL, &xo, early_sink, &e, NULL), 0);
    ck_assert_uint_eq(e.delta.len, keep.len);
    ck_assert_mem_eq(e.delta.data, keep.data, keep.len);
    crdtdb_buf_free(&keep);
    crdtdb_buf_free(&e.delta);
    peer_close(&pr);
    crdtdb_db_close(db);
    crdtdb_env_close(env);
}
END_TEST

/* A process that sent a write early, then died before its commit: the
 * sequences it sent are never numbered again.  The next process's first
 * write starts past the reservation, so a peer that got the lost delta
 * (its watermark past it) still gets every later write; a handle without
 * the hook jumps the same way. */
START_TEST(early_relay_never_reuses_a_sequence)
{
    crdtdb_env *env = tu_env(&dir, NULL);
    const char *c[] = {"c"};
    crdtdb_db *db;
    ck_assert_int_eq(crdtdb_db_create(env, "d", c, 1, &db), 0);
    early e;
    memset(&e, 0, sizeof e);
    crdtdb_db_set_precommit(db, early_hook, &e);
    add(db, "c", "r0", "{\"x\":0}"); /* reserves */
    uint64_t s0;
    ck_assert_int_eq(crdtdb_db_seq(db, NULL, &s0), 0);
    crdtdb_db_close(db);
    crdtdb_env_close(env);
    char lost[4200];
    snprintf(lost, sizeof lost, "%s/lost.delta", dir);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) { /* writes r1, sends it, dies before the commit */
        if (crdtdb_env_open(dir, NULL, &env) || crdtdb_db_open(env, "d", &db))
            _exit(2);
        memset(&e, 0, sizeof e);
        e.die = 1;
        snprintf(e.out, sizeof e.out, "%s", lost);
        crdtdb_db_set_precommit(db, early_hook, &e);
        add(db, "c", "r1", "{\"x\":1}"); /* jumps: nothing early */
        add(db, "c", "r1", "{\"x\":2}"); /* early, then _exit */
        _exit(3);
    }
    int st;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    size_t n;
    uint8_t *d = (uint8_t *)tu_slurp(lost, &n);
    ck_assert_ptr_nonnull(d);
    /* the peer merges the lost delta: its watermark for us passes it */
    peer pr;
    peer_open(&pr, NULL);
    crdtdb_apply_info ai;
    ck_assert_int_eq(crdtdb_db_apply(pr.db, d, n, &ai), 0);
    uint64_t lost_to = ai.to;
    free(d);
    ck_assert_int_eq(crdtdb_env_open(dir, NULL, &env), 0);
    ck_assert_int_eq(crdtdb_db_open(env, "d", &db), 0);
    uint64_t s;
    ck_assert_int_eq(crdtdb_db_seq(db, NULL, &s), 0);
    ck_assert_uint_lt(s, lost_to); /* not stored */
    char *v = tu_get(db, "c", "r1");
    ck_assert_str_eq(v, "{\"x\":1}");
    free(v);
    add(db, "c", "r2", "{\"x\":2}"); /* a new process: past the reservation */
    ck_assert_int_eq(crdtdb_db_seq(db, NULL, &s), 0);
    ck_assert_uint_gt(s, lost_to);
    /* what the peer lacks goes after its watermark: r2 reaches it */
    relay r = {pr.db, 0};
    ck_assert_int_eq(crdtdb_db_export_for(db, lost_to, NULL, NULL, relay_delta, &r, NULL), 0);
    ck_assert_int_eq(r.rc, 0);
    ck_assert_ptr_nonnull(v = tu_get(pr.db, "c", "r2"));
    free(v);
    /* a handle with the hook reserves again; one without it jumps past */
    memset(&e, 0, sizeof e);
    crdtdb_db_set_precommit(db, early_hook, &e);
    add(db, "c", "r3", "{\"x\":3}");
    ck_assert_int_eq(crdtdb_db_seq(db, NULL, &s), 0);
    crdtdb_db *plain;
    ck_assert_int_eq(crdtdb_db_open(env, "d", &plain), 0);
    add(plain, "c", "r4", "{\"x\":4}");
    uint64_t s4;
    ck_assert_int_eq(crdtdb_db_seq(plain, NULL, &s4), 0);
    ck_assert_uint_gt(s4, s + RESERVE_GAP);
    add(db, "c", "r5", "{\"x\":5}"); /* past what was reserved: not early */
    ck_assert_int_eq(e.calls, 0);
    add(db, "c", "r6", "{\"x\":6}"); /* reserved again */
    ck_assert_int_eq(e.calls, 1);
    /* reopened with the hook, a write that numbers nothing (the read-only
     * mark) makes no gap, and the next write still starts past the
     * reservation */
    crdtdb_db_close(db);
    ck_assert_int_eq(crdtdb_db_open(env, "d", &db), 0);
    crdtdb_db_set_precommit(db, early_hook, &e);
    crdtdb_txn *t;
    uint64_t n_res, s6, s7;
    ck_assert_int_eq(crdtdb_txn_begin(db, CRDTDB_TXN_RDONLY, &t), 0);
    uint8_t nk[5];
    MDB_val nkey = crdtdb__dbinfo_key(nk, db->num, 'n'), nval;
    ck_assert_int_eq(mdb_get(t->mt, env->dbi_dbinfo, &nkey, &nval), 0);
    ck_assert_uint_eq(nval.mv_size, 16);
    n_res = crdtdb__get_u64(nval.mv_data);
    crdtdb_txn_abort(t);
    ck_assert_int_eq(crdtdb_db_seq(db, NULL, &s6), 0);
    ck_assert_uint_gt(n_res, s6);
    ck_assert_int_eq(crdtdb_db_mark_readonly(db, 0), 0);
    ck_assert_int_eq(crdtdb_db_seq(db, NULL, &s7), 0);
    ck_assert_uint_eq(s7, s6);
    add(db, "c", "r7", "{\"x\":7}");
    ck_assert_int_eq(crdtdb_db_seq(db, NULL, &s7), 0);
    ck_assert_uint_gt(s7, n_res);
    ck_assert_int_eq(e.calls, 1); /* past the reservation: not early */
    add(db, "c", "r8", "{\"x\":8}");
    ck_assert_int_eq(e.calls, 2); /* its own reservation now */
    /* a second handle with a hook of its own: the reservation is the first
     * one's, so its write starts past it and goes after its commit; then
     * the first one's next write does the same */
    early e2;
    memset(&e2, 0, sizeof e2);
    crdtdb_db *second;
    ck_assert_int_eq(crdtdb_db_open(env, "d", &second), 0);
    crdtdb_db_set_precommit(second, early_hook, &e2);
    ck_assert_int_eq(crdtdb_db_seq(db, NULL, &s7), 0);
    add(second, "c", "r9", "{\"x\":9}");
    ck_assert_int_eq(e2.calls, 0);
    uint64_t s9;
    ck_assert_int_eq(crdtdb_db_seq(db, NULL, &s9), 0);
    ck_assert_uint_gt(s9, s7 + RESERVE_GAP);
    add(db, "c", "r10", "{\"x\":10}");
    ck_assert_int_eq(e.calls, 2);
    uint64_t s10;
    ck_assert_int_eq(crdtdb_db_seq(db, NULL, &s10), 0);
    ck_assert_uint_gt(s10, s9 + RESERVE_GAP);
    crdtdb_buf_free(&e2.delta);
    crdtdb_db_close(second);
    crdtdb_buf_free(&e.delta);
    crdtdb_db_close(plain);
    peer_close(&pr);
    crdtdb_db_close(db);
    crdtdb_env_close(env);
}
END_TEST

static void early_note(void *ctx, crdtdb_db *db, uint64_t from, uint64_t to)
{
    (void)db;
    early *e = ctx;
    e->calls++;
    e->from = from;
    e->to = to;
}

/* A commit that fails (a full disk) after its hook sent it: the sequences
 * sent are burned.  The write is not stored, and the next one, once there
 * is room, starts past them. */
START_TEST(early_relay_after_a_failed_commit)
{
    small_disk sd;
    crdtdb_env *env;
    crdtdb_db *db;
    if (!small_disk_open(&sd, "early_relay_after_a_failed_commit", &env, &db))
        return;
    early e;
    memset(&e, 0, sizeof e);
    crdtdb_db_set_precommit(db, early_note, &e);
    int rc, n = fill(db, 5000, &rc);
    ck_assert_int_eq(rc, CRDTDB_EIO);
    ck_assert_int_gt(n, 50);
    uint64_t s;
    ck_assert_int_eq(crdtdb_db_seq(db, NULL, &s), 0);
    ck_assert_uint_gt(e.to, s); /* the failed write went early */
    uint64_t burned = e.to;
    ck_assert_int_eq(unlink(sd.ballast), 0);
    add(db, "c", "after", "{\"x\":1}");
    ck_assert_int_eq(crdtdb_db_seq(db, NULL, &s), 0);
    ck_assert_uint_gt(s, burned);
    char id[16], *v;
    snprintf(id, sizeof id, "r%d", n);
    ck_assert_ptr_null(v = tu_get(db, "c", id));
    crdtdb_db_close(db);
    crdtdb_env_close(env);
    small_disk_close(&sd);
}
END_TEST

/* A write in which this replica stamps something of its own ahead of its
 * wall clock (its clock went past it with a peer's stamps, inside the skew
 * allowed) is not sent early: were it lost, a process after this one,
 * whose clock starts from the stored stamp and the wall, could stamp again
 * under the same stamp.  Once the wall clock has passed it, writes go
 * early again; a peer's write alone (no stamp of ours) always does. */
START_TEST(early_relay_leaves_out_stamps_ahead_of_the_clock)
{
    uint64_t now = 1700000000000ull, ahead = now + 2000;
    crdtdb_env_options o;
    crdtdb_env_options_init(&o);
    o.clock = frozen;
    o.clock_ctx = &now;
    crdtdb_env *env = tu_env(&dir, &o);
    const char *c[] = {"c"};
    crdtdb_db *db;
    ck_assert_int_eq(crdtdb_db_create(env, "d", c, 1, &db), 0);
    early e;
    memset(&e, 0, sizeof e);
    crdtdb_db_set_precommit(db, early_note, &e);
    add(db, "c", "r0", "{\"x\":0}"); /* reserves */
    add(db, "c", "r1", "{\"x\":1}");
    ck_assert_int_eq(e.calls, 1); /* at the wall clock: early */
    /* a peer whose clock is 2 s ahead */
    o.clock_ctx = &ahead;
    peer pr;
    peer_open(&pr, &o);
    add(pr.db, "c", "p", "{\"x\":1}");
    relay r = {db, 0};
    ck_assert_int_eq(crdtdb_db_export_for(pr.db, 0, NULL, NULL, relay_delta, &r, NULL), 0);
    ck_assert_int_eq(r.rc, 0);
    ck_assert_int_eq(e.calls, 2); /* the peer's stamps, none of ours: early */
    add(db, "c", "r2", "{\"x\":2}"); /* ours, past the peer's: ahead of the wall */
    ck_assert_int_eq(e.calls, 2);
    now += 2500; /* the wall clock passes it */
    add(db, "c", "r3", "{\"x\":3}");
    ck_assert_int_eq(e.calls, 3);
    peer_close(&pr);
    crdtdb_db_close(db);
    crdtdb_env_close(env);
}
END_TEST

static int collect_due(void *ctx, const char *id, const crdtdb_expiry *e)
{
    char *out = ctx;
    ck_assert_uint_gt(e->ttl_ms, 0);
    strcat(out, id);
    strcat(out, ";");
    return 0;
}

/* A time-to-live runs from the last write (a later write pushes it back)
 * or from a close; crdtdb_env_expired lists the databases due; an archive
 * restores into another environment. */
START_TEST(expiry_lists_due_databases_and_archives)
{
    uint64_t now = (uint64_t)time(NULL) * 1000 - 200000; /* the archive applies elsewhere */
    crdtdb_env_options o;
    crdtdb_env_options_init(&o);
    o.clock = frozen;
    o.clock_ctx = &now;
    crdtdb_env *env = tu_env(&dir, &o);
    const char *c[] = {"c"};
    crdtdb_db *a, *b, *k;
    ck_assert_int_eq(crdtdb_db_create(env, "a", c, 1, &a), 0);
    ck_assert_int_eq(crdtdb_db_create(env, "b", c, 1, &b), 0);
    ck_assert_int_eq(crdtdb_db_create(env, "keep", c, 1, &k), 0);
    add(a, "c", "r", "{\"x\":1}");
    add(k, "c", "r", "{\"x\":1}");
    ck_assert_int_eq(crdtdb_db_expire_set(a, 60000, 0), 0);
    ck_assert_int_eq(crdtdb_db_expire_set(b, 1000, CRDTDB_EXPIRE_CLOSED), 0);
    ck_assert_int_eq(crdtdb_db_expire_set(k, 0, CRDTDB_EXPIRE_CLOSED), CRDTDB_EINVAL);
    crdtdb_expiry e;
    ck_assert_int_eq(crdtdb_db_expiry(a, &e), 0);
    ck_assert_uint_eq(e.ttl_ms, 60000);
    ck_assert_uint_eq(e.last_write_ms, now);
    ck_assert_uint_eq(e.due_ms, now + 60000);
    ck_assert_int_eq(crdtdb_db_expiry(k, &e), 0);
    ck_assert_uint_eq(e.ttl_ms, 0);
    char due[256] = "";
    ck_assert_int_eq(crdtdb_env_expired(env, now, collect_due, due), 0);
    ck_assert_str_eq(due, "");
    now += 30000;
    add(a, "c", "r2", "{\"x\":2}"); /* pushes a's expiry back */
    add(b, "c", "r", "{\"x\":2}");  /* b was closed: no effect */
    now += 40000;
    ck_assert_int_eq(crdtdb_env_expired(env, now, collect_due, due), 0);
    ck_assert_str_eq(due, "b;");
    due[0] = 0;
    now += 30000;
    ck_assert_int_eq(crdtdb_env_expired(env, now, collect_due, due), 0);
    ck_assert_str_eq(due, "a;b;");
    ck_assert_int_eq(crdtdb_db_expire_set(b, 0, 0), 0); /* never, after all */
    due[0] = 0;
    ck_assert_int_eq(crdtdb_env_expired(env, now, collect_due, due), 0);
    ck_assert_str_eq(due, "a;");

    char arch[4200];
    snprintf(arch, sizeof arch, "%s/a.crdtdb", dir);
    ck_assert_int_eq(crdtdb_db_archive(a, arch), 0);
    ck_assert_int_eq(crdtdb_db_archive(a, arch), CRDTDB_EEXIST);
    crdtdb_db_close(a);
    /* a write after the listing keeps it: the drop checks inside its own
     * transaction */
    ck_assert_int_eq(crdtdb_db_open(env, "a", &a), 0);
    uint64_t archived;
    ck_assert_int_eq(crdtdb_db_seq(a, NULL, &archived), 0);
    ck_assert_int_eq(crdtdb_env_drop_expired(env, "a", now, archived), CRDTDB_EBUSY); /* open */
    /* a peer's delta stamped long ago, arriving after the archive: the due
     * time does not move, the sequence does */
    uint64_t old = now - 150000;
    crdtdb_env_options po;
    crdtdb_env_options_init(&po);
    po.clock = frozen;
    po.clock_ctx = &old;
    char *pdir = NULL;
    crdtdb_env *pe = tu_env(&pdir, &po);
    crdtdb_db *pd;
    ck_assert_int_eq(crdtdb_db_create(pe, "a", c, 1, &pd), 0);
    add(pd, "c", "offline", "{\"x\":4}");
    relay rl = {a, 0};
    ck_assert_int_eq(crdtdb_db_export(pd, 0, NULL, relay_delta, &rl, NULL), 0);
    ck_assert_int_eq(rl.rc, 0);
    crdtdb_db_close(pd);
    crdtdb_env_close(pe);
    tu_rmrf(pdir);
    free(pdir);
    crdtdb_expiry pe_e;
    ck_assert_int_eq(crdtdb_db_expiry(a, &pe_e), 0);
    ck_assert_uint_le(pe_e.due_ms, now); /* still due by the stamps */
    crdtdb_db_close(a);
    ck_assert_int_eq(crdtdb_env_drop_expired(env, "a", now, archived), CRDTDB_EBUSY);
    ck_assert_ptr_nonnull(strstr(crdtdb_env_errmsg(env), "written since"));
    ck_assert_int_eq(crdtdb_db_open(env, "a", &a), 0);
    ck_assert_int_eq(crdtdb_db_seq(a, NULL, &archived), 0);
    add(a, "c", "late", "{\"x\":3}"); /* a local write moves the due time too */
    ck_assert_int_eq(crdtdb_db_seq(a, NULL, &archived), 0);
    crdtdb_db_close(a);
    ck_assert_int_eq(crdtdb_env_drop_expired(env, "a", now, archived), CRDTDB_EBUSY);
    ck_assert_ptr_nonnull(strstr(crdtdb_env_errmsg(env), "no longer due"));
    ck_assert_int_eq(crdtdb_env_drop_expired(env, "a", now + 61000, archived), 0);
    due[0] = 0;
    ck_assert_int_eq(crdtdb_env_expired(env, now, collect_due, due), 0);
    ck_assert_str_eq(due, "");
    crdtdb_db_close(b);
    crdtdb_db_close(k);
    crdtdb_env_close(env);

    /* restored in another environment */
    char *other = NULL;
    crdtdb_env *e2 = tu_env(&other, NULL);
    crdtdb_db *r;
    ck_assert_int_eq(crdtdb_db_create(e2, "a", c, 1, &r), 0);
    size_t len;
    char *bytes = tu_slurp(arch, &len);
    ck_assert_ptr_nonnull(bytes);
    /* a small database archives as one delta */
    ck_assert_int_eq(crdtdb_db_apply(r, (const uint8_t *)bytes, len, NULL), 0);
    char *s = tu_get(r, "c", "r2");
    ck_assert_str_eq(s, "{\"x\":2}");
    free(s);
    free(bytes);
    crdtdb_db_close(r);
    crdtdb_env_close(e2);
    tu_rmrf(other);
    free(other);
}
END_TEST

static int sync_into(crdtdb_db *from, crdtdb_db *to, uint64_t since)
{
    relay r = {to, 0};
    int rc = crdtdb_db_export(from, since, NULL, relay_delta, &r, NULL);
    return r.rc ? r.rc : rc;
}

/* A restored backup of a replica that wrote on after the copy resyncs
 * rather than forks: as a new replica its deltas are taken, and it gets
 * back what the original wrote after the copy from a peer. */
START_TEST(restored_backup_resyncs_instead_of_forking)
{
    crdtdb_env *ea = tu_env(&dir, NULL);
    char *bdir = NULL;
    crdtdb_env *eb = tu_env(&bdir, NULL);
    const char *c[] = {"c"};
    crdtdb_db *a, *b;
    ck_assert_int_eq(crdtdb_db_create(ea, "d", c, 1, &a), 0);
    ck_assert_int_eq(crdtdb_db_create(eb, "d", c, 1, &b), 0);
    add(a, "c", "before", "{\"x\":1}");
    ck_assert_int_eq(sync_into(a, b, 0), 0);
    char copy[4096];
    snprintf(copy, sizeof copy, "%s-copy", dir);
    ck_assert_int_eq(mkdir(copy, 0700), 0);
    ck_assert_int_eq(crdtdb_env_backup(ea, copy), 0);
    add(a, "c", "after", "{\"x\":2}"); /* the original writes on, and B has it */
    ck_assert_int_eq(sync_into(a, b, 0), 0);
    crdtdb_db_close(a);
    crdtdb_env_close(ea); /* the original is lost */

    crdtdb_env *ec;
    crdtdb_db *cd;
    ck_assert_int_eq(crdtdb_env_open(copy, NULL, &ec), 0);
    ck_assert_int_eq(crdtdb_db_open(ec, "d", &cd), 0);
    add(cd, "c", "restored", "{\"x\":3}"); /* same sequence numbers, other content */
    ck_assert_int_eq(sync_into(cd, b, 0), 0); /* no EFORK: a new replica */
    ck_assert_int_eq(sync_into(b, cd, 0), 0);
    char *s;
    const char *ids[] = {"before", "after", "restored"};
    for (int i = 0; i < 3; i++) {
        ck_assert_ptr_nonnull(s = tu_get(cd, "c", ids[i]));
        free(s);
        ck_assert_ptr_nonnull(s = tu_get(b, "c", ids[i]));
        free(s);
    }
    crdtdb_db_close(cd);
    crdtdb_env_close(ec);
    /* the identity was given once: a reopen keeps it */
    uint8_t id1[CRDTDB_REPLICA_ID_BYTES], id2[CRDTDB_REPLICA_ID_BYTES];
    ck_assert_int_eq(crdtdb_env_open(copy, NULL, &ec), 0);
    crdtdb_env_replica_id(ec, id1);
    crdtdb_env_close(ec);
    ck_assert_int_eq(crdtdb_env_open(copy, NULL, &ec), 0);
    crdtdb_env_replica_id(ec, id2);
    crdtdb_env_close(ec);
    ck_assert_mem_eq(id1, id2, sizeof id1);
    crdtdb_db_close(b);
    crdtdb_env_close(eb);
    tu_rmrf(copy);
    tu_rmrf(bdir);
    free(bdir);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("persist");
    TCase *tc = tcase_create("persist");
    tcase_add_checked_fixture(tc, NULL, teardown);
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, data_survives_reopen);
    tcase_add_test(tc, acknowledged_write_survives_kill);
    tcase_add_test(tc, ten_thousand_databases);
    tcase_add_test(tc, clock_resumes_from_disk);
    tcase_add_test(tc, map_full_is_reported);
    tcase_add_test(tc, default_map_costs_no_disk);
    tcase_add_test(tc, map_grown_by_another_process);
    tcase_add_test(tc, full_disk_refuses_then_recovers);
    tcase_add_test(tc, early_relay_sees_the_write_to_come);
    tcase_add_test(tc, early_relay_never_reuses_a_sequence);
    tcase_add_test(tc, early_relay_after_a_failed_commit);
    tcase_add_test(tc, early_relay_leaves_out_stamps_ahead_of_the_clock);
    tcase_add_test(tc, expiry_lists_due_databases_and_archives);
    tcase_add_test(tc, restored_backup_resyncs_instead_of_forking);
    tcase_add_test(tc, stat_counts_records_tombstones_and_log);
    tcase_add_test(tc, backup_while_another_process_writes);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_set_fork_status(sr, CK_FORK);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
