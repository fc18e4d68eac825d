/* End-to-end tests of the crdtdb command (path in $CRDTDB_CLI). */
#include "tests/testutil.h"

#include <check.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_ARGS 16

/* A fresh temporary directory: data dir and captured output of the last
 * command run. */
typedef struct sandbox {
    char *root;
    char data[4096], out_path[4096], err_path[4096];
    char *out, *err; /* of the last run */
} sandbox;

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0)
        ;
}

static int starts_with(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

static void sb_init(sandbox *s)
{
    memset(s, 0, sizeof *s);
    s->root = tu_tmpdir();
    ck_assert_ptr_nonnull(s->root);
    snprintf(s->data, sizeof s->data, "%s/data", s->root);
    snprintf(s->out_path, sizeof s->out_path, "%s/stdout", s->root);
    snprintf(s->err_path, sizeof s->err_path, "%s/stderr", s->root);
}

static void sb_free(sandbox *s)
{
    tu_rmrf(s->root);
    free(s->root);
    free(s->out);
    free(s->err);
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    ck_assert_ptr_nonnull(f);
    size_t cap = 4096, len = 0, n;
    char *buf = malloc(cap);
    ck_assert_ptr_nonnull(buf);
    while ((n = fread(buf + len, 1, cap - len - 1, f)) > 0) {
        len += n;
        if (cap - len == 1) {
            buf = realloc(buf, cap *= 2);
            ck_assert_ptr_nonnull(buf);
        }
    }
    fclose(f);
    buf[len] = '\0';
    return buf;
}

/* Starts the CLI with `-d data` (unless data is NULL) and the
 * NULL-terminated arguments, its output going to the given files. */
static pid_t spawn(const char *data, const char *out, const char *err,
                   va_list ap)
{
    const char *argv[MAX_ARGS + 4], *a;
    int n = 0;
    argv[n++] = getenv("CRDTDB_CLI");
    ck_assert_msg(argv[0] != NULL, "CRDTDB_CLI is not set");
    if (data) {
        argv[n++] = "-d";
        argv[n++] = data;
    }
    while ((a = va_arg(ap, const char *)) != NULL) {
        ck_assert_int_lt(n, MAX_ARGS);
        argv[n++] = a;
    }
    argv[n] = NULL;
    fflush(NULL);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        int fo = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        int fe = open(err, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (fo < 0 || fe < 0 || dup2(fo, 1) < 0 || dup2(fe, 2) < 0)
            _exit(127);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    return pid;
}

/* Waits up to timeout_ms; returns the exit status (128 + signal if
 * killed). */
static int wait_exit(pid_t pid, long timeout_ms)
{
    int st;
    for (long waited = 0;; waited += 10) {
        pid_t r = waitpid(pid, &st, WNOHANG);
        ck_assert_int_ge(r, 0);
        if (r == pid)
            break;
        if (waited >= timeout_ms) {
            kill(pid, SIGKILL);
            waitpid(pid, &st, 0);
            ck_abort_msg("crdtdb did not exit within %ld ms", timeout_ms);
        }
        sleep_ms(10);
    }
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static int vrun(sandbox *s, const char *data, va_list ap)
{
    pid_t pid = spawn(data, s->out_path, s->err_path, ap);
    int status = wait_exit(pid, 20000);
    free(s->out);
    free(s->err);
    s->out = slurp(s->out_path);
    s->err = slurp(s->err_path);
    return status;
}

/* Runs `crdtdb -d DATA args... NULL`; returns the exit status. */
static int cli(sandbox *s, ...)
{
    va_list ap;
    va_start(ap, s);
    int status = vrun(s, s->data, ap);
    va_end(ap);
    return status;
}

/* Runs without -d. */
static int cli_nodir(sandbox *s, ...)
{
    va_list ap;
    va_start(ap, s);
    int status = vrun(s, NULL, ap);
    va_end(ap);
    return status;
}

/* Runs the command, which must succeed, and checks its stdout. */
static void ok(sandbox *s, const char *want, ...)
{
    va_list ap;
    va_start(ap, want);
    int status = vrun(s, s->data, ap);
    va_end(ap);
    ck_assert_msg(status == 0, "exit %d: %s", status, s->err);
    ck_assert_str_eq(s->err, "");
    if (want)
        ck_assert_str_eq(s->out, want);
}

/* init, then create database "db" with collections users and posts. */
static void setup_db(sandbox *s)
{
    ok(s, NULL, "init", NULL);
    ok(s, "", "create", "db", "--collections", "users,posts", NULL);
}

START_TEST(init_prints_replica_id)
{
    sandbox s;
    sb_init(&s);
    ck_assert_int_eq(cli(&s, "id", NULL), 1);
    ck_assert_str_eq(s.out, "");
    ck_assert_ptr_nonnull(strstr(s.err, "no environment at"));

    ok(&s, NULL, "init", NULL);
    ck_assert_uint_eq(strlen(s.out), 65);
    ck_assert_uint_eq(strspn(s.out, "0123456789abcdef"), 64);
    ck_assert_int_eq(s.out[64], '\n');
    char *first = strdup(s.out);
    ok(&s, first, "init", NULL); /* same identity when reopened */
    ok(&s, first, "id", NULL);
    free(first);
    sb_free(&s);
}
END_TEST

START_TEST(data_dir_from_environment)
{
    sandbox s;
    sb_init(&s);
    setenv("CRDTDB_DATA", s.data, 1);
    ck_assert_int_eq(cli_nodir(&s, "init", NULL), 0);
    char *id = strdup(s.out);
    ok(&s, id, "id", NULL); /* same directory through -d */
    free(id);
    unsetenv("CRDTDB_DATA");
    sb_free(&s);
}
END_TEST

START_TEST(create_add_get)
{
    sandbox s;
    sb_init(&s);
    setup_db(&s);
    ok(&s, "", "create", "other", "--collections=c", NULL);
    ok(&s, "db\nother\n", "dbs", NULL);
    ok(&s, "", "add", "db", "users", "u1",
       "{\"name\":\"Ann\",\"age\":30,\"tags\":[\"a\",\"b\"],\"ok\":true,"
       "\"x\":null,\"f\":1.5,\"s\":\"\\u00e9\\\"\"}",
       NULL);
    ok(&s,
       "{\"age\":30,\"f\":1.5,\"name\":\"Ann\",\"ok\":true,"
       "\"s\":\"\xc3\xa9\\\"\",\"tags\":[\"a\",\"b\"],\"x\":null}\n",
       "get", "db", "users", "u1", NULL);
    /* add replaces the whole record. */
    ok(&s, "", "add", "db", "users", "u1", "{\"b\":2}", NULL);
    ok(&s, "{\"b\":2}\n", "get", "db", "users", "u1", NULL);
    ck_assert_int_eq(cli(&s, "create", "db", "--collections", "x", NULL), 1);
    ck_assert_str_eq(s.out, "");
    ck_assert_str_ne(s.err, "");
    sb_free(&s);
}
END_TEST

START_TEST(update_deep_merges)
{
    sandbox s;
    sb_init(&s);
    setup_db(&s);
    ok(&s, "", "add", "db", "users", "u1",
       "{\"a\":{\"x\":1,\"y\":2},\"b\":1}", NULL);
    ok(&s, "", "update", "db", "users", "u1", "{\"a\":{\"y\":3}}", NULL);
    ok(&s, "{\"a\":{\"x\":1,\"y\":3},\"b\":1}\n", "get", "db", "users", "u1",
       NULL);
    ok(&s, "", "update", "db", "users", "u1", "{\"c\":[1],\"b\":\"s\"}",
       NULL);
    ok(&s, "{\"a\":{\"x\":1,\"y\":3},\"b\":\"s\",\"c\":[1]}\n", "get", "db",
       "users", "u1", NULL);
    ck_assert_int_eq(cli(&s, "update", "db", "users", "nobody", "{\"a\":1}",
                         NULL),
                     1);
    ck_assert_str_eq(
        s.err,
        "crdtdb: Object with id 'nobody' not found in collection 'users'\n");
    sb_free(&s);
}
END_TEST

START_TEST(remove_then_get_fails)
{
    sandbox s;
    sb_init(&s);
    setup_db(&s);
    ok(&s, "", "add", "db", "users", "u1", "{\"a\":1}", NULL);
    ok(&s, "", "remove", "db", "users", "u1", NULL);
    ck_assert_int_eq(cli(&s, "get", "db", "users", "u1", NULL), 1);
    ck_assert_str_eq(s.out, "");
    ck_assert_str_eq(
        s.err, "crdtdb: Object with id 'u1' not found in collection 'users'\n");
    ck_assert_int_eq(cli(&s, "remove", "db", "users", "u1", NULL), 1);
    ck_assert_str_eq(
        s.err, "crdtdb: Object with id 'u1' not found in collection 'users'\n");
    /* Re-adding after removal works. */
    ok(&s, "", "add", "db", "users", "u1", "{\"a\":2}", NULL);
    ok(&s, "{\"a\":2}\n", "get", "db", "users", "u1", NULL);
    sb_free(&s);
}
END_TEST

START_TEST(unknown_collection_and_db)
{
    sandbox s;
    sb_init(&s);
    setup_db(&s);
    ck_assert_int_eq(cli(&s, "get", "db", "nope", "u1", NULL), 1);
    ck_assert_str_eq(s.out, "");
    ck_assert_str_eq(s.err, "crdtdb: Collection 'nope' not found\n");
    ck_assert_int_eq(cli(&s, "add", "db", "nope", "u1", "{}", NULL), 1);
    ck_assert_str_eq(s.err, "crdtdb: Collection 'nope' not found\n");
    ck_assert_int_eq(cli(&s, "query", "db", "nope", NULL), 1);
    ck_assert_str_eq(s.out, "");
    ck_assert_str_eq(s.err, "crdtdb: Collection 'nope' not found\n");
    ck_assert_int_eq(cli(&s, "get", "nodb", "users", "u1", NULL), 1);
    ck_assert_str_eq(s.out, "");
    ck_assert_str_ne(s.err, "");
    sb_free(&s);
}
END_TEST

START_TEST(query_orders_by_id_with_id)
{
    sandbox s;
    sb_init(&s);
    setup_db(&s);
    ok(&s, "[]\n", "query", "db", "users", NULL);
    ok(&s, "", "add", "db", "users", "b", "{\"name\":\"Bob\",\"age\":25}", NULL);
    ok(&s, "", "add", "db", "users", "c",
       "{\"name\":\"Cy\",\"age\":35,\"id\":\"own\"}", NULL);
    ok(&s, "", "add", "db", "users", "a",
       "{\"name\":\"Ann\",\"age\":30,\"t\":{\"x\":1}}", NULL);
    ok(&s, "", "add", "db", "users", "e", "{}", NULL);
    ok(&s, "", "add", "db", "posts", "p", "{\"age\":30}", NULL);

    const char *a = "{\"id\":\"a\",\"age\":30,\"name\":\"Ann\",\"t\":{\"x\":1}}";
    const char *b = "{\"id\":\"b\",\"age\":25,\"name\":\"Bob\"}";
    const char *c = "{\"age\":35,\"id\":\"own\",\"name\":\"Cy\"}";
    char want[1024];
    snprintf(want, sizeof want, "[%s,%s,%s,{\"id\":\"e\"}]\n", a, b, c);
    ok(&s, want, "query", "db", "users", NULL);

    snprintf(want, sizeof want, "[%s]\n", b);
    ok(&s, want, "query", "db", "users", "{\"name\":\"Bob\"}", NULL);
    snprintf(want, sizeof want, "[%s]\n", a);
    ok(&s, want, "query", "db", "users", "{\"t\":{\"x\":1}}", NULL);
    ok(&s, want, "query", "db", "users", "[[\"t.x\",\"==\",1]]", NULL);
    snprintf(want, sizeof want, "[%s,%s]\n", a, c);
    ok(&s, want, "query", "db", "users", "[[\"age\",\">=\",30]]", NULL);
    ok(&s, want, "query", "db", "users",
       "[[\"age\",\">\",20],[\"name\",\"!=\",\"Bob\"]]", NULL);
    ok(&s, "[]\n", "query", "db", "users", "{\"name\":\"Zed\"}", NULL);

    ck_assert_int_eq(cli(&s, "query", "db", "users", "[[\"age\",\"~\",1]]",
                         NULL),
                     1);
    ck_assert_str_eq(s.out, "");
    ck_assert_str_ne(s.err, "");
    ck_assert_int_eq(cli(&s, "query", "db", "users", "{\"age\":", NULL), 1);
    ck_assert_str_eq(s.out, "");
    ck_assert_ptr_nonnull(strstr(s.err, "invalid JSON"));
    sb_free(&s);
}
END_TEST

START_TEST(invalid_json_writes_nothing)
{
    sandbox s;
    sb_init(&s);
    setup_db(&s);
    ok(&s, "", "add", "db", "users", "u1", "{\"a\":1}", NULL);
    static const char *const bad[] = {"{\"a\":", "{a:1}", "", "{\"a\":1}}",
                                      "{\"a\":1,\"a\":2}"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        ck_assert_int_eq(cli(&s, "add", "db", "users", "u1", bad[i], NULL), 1);
        ck_assert_str_eq(s.out, "");
        ck_assert_msg(starts_with(s.err, "crdtdb: invalid JSON at line "),
                      "%s", s.err);
        ck_assert_int_eq(cli(&s, "update", "db", "users", "u1", bad[i], NULL),
                         1);
        ck_assert_str_eq(s.out, "");
        ck_assert_msg(starts_with(s.err, "crdtdb: invalid JSON at line "),
                      "%s", s.err);
    }
    /* Valid JSON that is not an object is refused by the library. */
    ck_assert_int_eq(cli(&s, "add", "db", "users", "u1", "[1]", NULL), 1);
    ck_assert_str_eq(s.out, "");
    ck_assert_str_ne(s.err, "");
    ok(&s, "{\"a\":1}\n", "get", "db", "users", "u1", NULL);
    sb_free(&s);
}
END_TEST

START_TEST(help_and_usage)
{
    static const char *const cmds[] = {"init", "id",     "create", "dbs",
                                       "add",  "update", "remove", "get",
                                       "query", "watch"};
    char want[64];
    sandbox s;
    sb_init(&s);
    ck_assert_int_eq(cli(&s, "--help", NULL), 0);
    ck_assert_str_eq(s.err, "");
    ck_assert(starts_with(s.out, "usage: crdtdb"));
    for (size_t i = 0; i < sizeof cmds / sizeof *cmds; i++) {
        snprintf(want, sizeof want, "usage: crdtdb [-d DIR] %s", cmds[i]);
        ck_assert_int_eq(cli(&s, cmds[i], "--help", NULL), 0);
        ck_assert_msg(starts_with(s.out, want), "%s", s.out);
        ck_assert_str_eq(s.err, "");
        ck_assert_int_eq(cli(&s, cmds[i], "-h", NULL), 0);
        ck_assert_msg(starts_with(s.out, want), "%s", s.out);
    }
    /* Help does not need an environment and creates none. */
    ck_assert_int_eq(access(s.data, F_OK), -1);

    ck_assert_int_eq(cli(&s, NULL), 2);
    ck_assert_str_eq(s.out, "");
    ck_assert(starts_with(s.err, "usage: crdtdb"));
    ck_assert_int_eq(cli(&s, "frobnicate", NULL), 2);
    ck_assert_str_eq(s.out, "");
    ck_assert_ptr_nonnull(strstr(s.err, "usage: crdtdb"));
    ck_assert_int_eq(cli(&s, "get", "db", "users", NULL), 2);
    ck_assert(starts_with(s.err, "usage: crdtdb [-d DIR] get"));
    ck_assert_int_eq(cli(&s, "get", "db", "users", "a", "b", NULL), 2);
    ck_assert_int_eq(cli(&s, "get", "--bogus", "db", "users", "a", NULL), 2);
    ck_assert_int_eq(cli(&s, "create", "db", NULL), 2);
    ck_assert_int_eq(cli(&s, "create", "db", "--collections", NULL), 2);
    ck_assert_int_eq(cli(&s, "watch", "db", "--count", "x", NULL), 2);
    ck_assert_int_eq(cli_nodir(&s, "-d", NULL), 2);
    sb_free(&s);
}
END_TEST

START_TEST(bad_ids_fail)
{
    sandbox s;
    sb_init(&s);
    ok(&s, NULL, "init", NULL);
    ck_assert_int_eq(cli(&s, "create", "", "--collections", "a", NULL), 1);
    ck_assert_str_eq(s.out, "");
    ck_assert_str_ne(s.err, "");
    ck_assert_int_eq(cli(&s, "create", "db", "--collections", "a,,b", NULL), 1);
    ck_assert_int_eq(cli(&s, "create", "db", "--collections", "a,a", NULL), 1);
    ck_assert_int_eq(cli(&s, "create", "d\x01", "--collections", "a", NULL), 1);
    ok(&s, "", "dbs", NULL);
    ck_assert_int_eq(cli(&s, "get", "", "users", "u1", NULL), 1);
    ck_assert_str_eq(s.out, "");
    ck_assert_str_ne(s.err, "");
    ok(&s, "", "create", "db", "--collections", "a", NULL);
    ck_assert_int_eq(cli(&s, "add", "db", "a", "", "{}", NULL), 1);
    ck_assert_str_ne(s.err, "");
    ck_assert_int_eq(cli(&s, "get", "db", "a", "", NULL), 1);
    ck_assert_str_eq(s.out, "");
    sb_free(&s);
}
END_TEST

/* Starts `crdtdb watch ARGS...` in the background, output to files. */
static pid_t watch_bg(sandbox *s, const char *out, const char *err, ...)
{
    va_list ap;
    va_start(ap, err);
    pid_t pid = spawn(s->data, out, err, ap);
    va_end(ap);
    return pid;
}

/* Whether the file at path contains needle. */
static int file_has(const char *path, const char *needle)
{
    char *text = slurp(path);
    int has = strstr(text, needle) != NULL;
    free(text);
    return has;
}

/* Changes record `probe` of coll until the watcher has printed something
 * (or exited): then it is certainly subscribed.  No fixed sleeps. */
static void probe_until_seen(sandbox *s, pid_t pid, const char *coll,
                             const char *out)
{
    char json[32];
    for (int i = 0; i < 200; i++) {
        snprintf(json, sizeof json, "{\"n\":%d}", i);
        ok(s, "", "add", "db", coll, "probe", json, NULL);
        for (int t = 0; t < 10; t++) {
            if (file_has(out, "\n") || waitpid(pid, NULL, WNOHANG) != 0)
                return;
            sleep_ms(10);
        }
    }
    ck_abort_msg("watcher printed nothing");
}

START_TEST(watch_prints_events)
{
    sandbox s;
    char out[4200], err[4200];
    sb_init(&s);
    setup_db(&s);
    snprintf(out, sizeof out, "%s/watch.out", s.root);
    snprintf(err, sizeof err, "%s/watch.err", s.root);
    ok(&s, "", "add", "db", "users", "u2", "{\"x\":1}", NULL);
    ok(&s, "", "add", "db", "users", "u3", "{\"x\":1}", NULL);
    pid_t pid = watch_bg(&s, out, err, "watch", "db", "users", NULL);
    probe_until_seen(&s, pid, "users", out);
    /* Pauses let each change land in its own poll, in order. */
    ok(&s, "", "add", "db", "posts", "p1", "{\"y\":1}", NULL); /* unwatched */
    sleep_ms(200);
    ok(&s, "", "add", "db", "users", "u1", "{\"x\":1,\"n\":{\"a\":1}}", NULL);
    sleep_ms(200);
    ok(&s, "", "update", "db", "users", "u2", "{\"x\":2,\"n\":{\"b\":2}}",
       NULL);
    sleep_ms(200);
    ok(&s, "", "remove", "db", "users", "u3", NULL);
    for (int t = 0; t < 1000 && !file_has(out, "\"remove\""); t++)
        sleep_ms(10);
    kill(pid, SIGTERM);
    ck_assert_int_eq(wait_exit(pid, 10000), 0);

    char *lines = slurp(out), *errs = slurp(err);
    ck_assert_str_eq(errs, "");
    const char *want =
        "{\"event\":\"add\",\"collection\":\"users\",\"id\":\"u1\","
        "\"value\":{\"n\":{\"a\":1},\"x\":1}}\n"
        "{\"event\":\"update\",\"collection\":\"users\",\"id\":\"u2\","
        "\"value\":{\"n\":{\"b\":2},\"x\":2}}\n"
        "{\"event\":\"remove\",\"collection\":\"users\",\"id\":\"u3\"}\n";
    const char *tail = strstr(lines, "{\"event\":\"add\",\"collection\":"
                                     "\"users\",\"id\":\"u1\"");
    ck_assert_msg(tail != NULL, "%s", lines);
    ck_assert_str_eq(tail, want);
    /* Everything before is about the probe. */
    for (const char *l = lines; l < tail; l = strchr(l, '\n') + 1)
        ck_assert_msg(starts_with(l, "{\"event\":\"add\",\"collection\":"
                                     "\"users\",\"id\":\"probe\",") ||
                          starts_with(l, "{\"event\":\"update\",\"collection"
                                         "\":\"users\",\"id\":\"probe\","),
                      "%s", lines);
    free(lines);
    free(errs);
    sb_free(&s);
}
END_TEST

START_TEST(watch_count_and_all_collections)
{
    sandbox s;
    char out[4200], err[4200];
    sb_init(&s);
    setup_db(&s);
    snprintf(out, sizeof out, "%s/watch.out", s.root);
    snprintf(err, sizeof err, "%s/watch.err", s.root);
    pid_t pid = watch_bg(&s, out, err, "watch", "db", "--count", "1", NULL);
    probe_until_seen(&s, pid, "posts", out);
    ck_assert_int_eq(wait_exit(pid, 10000), 0); /* exits on its own */
    char *lines = slurp(out), *errs = slurp(err);
    ck_assert_str_eq(errs, "");
    /* One line only; which probe value it shows depends on timing. */
    ck_assert_msg(starts_with(lines, "{\"event\":\"add\",\"collection\":"
                                     "\"posts\",\"id\":\"probe\",\"value\":"
                                     "{\"n\":"),
                  "%s", lines);
    ck_assert_ptr_eq(strchr(lines, '\n'), lines + strlen(lines) - 1);
    free(lines);
    free(errs);

    ck_assert_int_eq(cli(&s, "watch", "db", "nope", NULL), 1);
    ck_assert_str_eq(s.err, "crdtdb: Collection 'nope' not found\n");
    ck_assert_int_eq(cli(&s, "watch", "nodb", NULL), 1);
    ck_assert_str_ne(s.err, "");
    ok(&s, "", "watch", "db", "--count", "0", NULL);
    sb_free(&s);
}
END_TEST

static Suite *cli_suite(void)
{
    Suite *s = suite_create("cli");
    TCase *tc = tcase_create("cli");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, init_prints_replica_id);
    tcase_add_test(tc, data_dir_from_environment);
    tcase_add_test(tc, create_add_get);
    tcase_add_test(tc, update_deep_merges);
    tcase_add_test(tc, remove_then_get_fails);
    tcase_add_test(tc, unknown_collection_and_db);
    tcase_add_test(tc, query_orders_by_id_with_id);
    tcase_add_test(tc, invalid_json_writes_nothing);
    tcase_add_test(tc, help_and_usage);
    tcase_add_test(tc, bad_ids_fail);
    tcase_add_test(tc, watch_prints_events);
    tcase_add_test(tc, watch_count_and_all_collections);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(cli_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
