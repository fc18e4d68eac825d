/* Durability: reopen, process kill, many databases, the clock on disk. */
#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "crdt/hlc.h"
#include "storage/internal.h"
#include "tests/testutil.h"

static char *dir;

static void teardown(void)
{
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

START_TEST(map_full_is_reported)
{
    crdtdb_env_options o;
    crdtdb_env_options_init(&o);
    o.map_size = 256 * 1024;
    crdtdb_env *env = tu_env(&dir, &o);
    const char *c[] = {"c"};
    crdtdb_db *db;
    ck_assert_int_eq(crdtdb_db_create(env, "d", c, 1, &db), 0);
    crdtdb_buf b = CRDTDB_BUF_INIT;
    char json[2100];
    snprintf(json, sizeof json, "{\"blob\":\"%02000d\"}", 0);
    tu_mp(&b, json);
    int rc = 0;
    char id[16];
    for (int i = 0; i < 1000 && rc == 0; i++) {
        snprintf(id, sizeof id, "r%d", i);
        rc = crdtdb_db_add(db, NULL, "c", id, b.data, b.len);
    }
    ck_assert_int_eq(rc, CRDTDB_EMAPFULL);
    ck_assert_str_ne(crdtdb_db_errmsg(db), "");
    char *s = tu_get(db, "c", "r0");
    ck_assert_ptr_nonnull(s);
    free(s);
    crdtdb_buf_free(&b);
    crdtdb_db_close(db);
    crdtdb_env_close(env);
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
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_set_fork_status(sr, CK_FORK);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
