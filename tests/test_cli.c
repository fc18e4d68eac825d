/* End-to-end tests of the crdtdb command (path in $CRDTDB_CLI). */
#include "tests/testutil.h"
#include "cli/options.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <check.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_ARGS 16

/* A fresh temporary directory: data dir and captured output of the last
 * command run. */
typedef struct sandbox {
    char *root;
    char data[4096], out_path[4096], err_path[4096];
    char *out, *err; /* of the last run */
} sandbox;

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

/* When set, the next commands read their standard input from this file. */
static const char *spawn_stdin;

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
    return tu_spawn(argv, spawn_stdin, out, err);
}

static int vrun(sandbox *s, const char *data, va_list ap)
{
    pid_t pid = spawn(data, s->out_path, s->err_path, ap);
    int status = tu_wait_exit(pid, 20000, "crdtdb");
    free(s->out);
    free(s->err);
    s->out = tu_slurp(s->out_path, NULL);
    s->err = tu_slurp(s->err_path, NULL);
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
       "{\"id\":\"u1\",\"age\":30,\"f\":1.5,\"name\":\"Ann\",\"ok\":true,"
       "\"s\":\"\xc3\xa9\\\"\",\"tags\":[\"a\",\"b\"],\"x\":null}\n",
       "get", "db", "users", "u1", NULL);
    /* add replaces the whole record. */
    ok(&s, "", "add", "db", "users", "u1", "{\"b\":2}", NULL);
    ok(&s, "{\"id\":\"u1\",\"b\":2}\n", "get", "db", "users", "u1", NULL);
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
    ok(&s, "{\"id\":\"u1\",\"a\":{\"x\":1,\"y\":3},\"b\":1}\n", "get", "db", "users",
       "u1", NULL);
    ok(&s, "", "update", "db", "users", "u1", "{\"c\":[1],\"b\":\"s\"}",
       NULL);
    ok(&s, "{\"id\":\"u1\",\"a\":{\"x\":1,\"y\":3},\"b\":\"s\",\"c\":[1]}\n", "get",
       "db", "users", "u1", NULL);
    ck_assert_int_eq(cli(&s, "update", "db", "users", "nobody", "{\"a\":1}",
                         NULL),
                     1);
    ck_assert_str_eq(
        s.err,
        "crdtdb: Object with id 'nobody' not found in collection 'users' (crdtdb add "
        "creates a record)\n");
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
    ck_assert_str_eq(s.err, "crdtdb: Object with id 'u1' not found in collection 'users' "
                            "(crdtdb query DB COLL lists the records)\n");
    /* Removing what is not there succeeds, silently: the replicated
     * store's remove (again, and a record that never was). */
    ok(&s, "", "remove", "db", "users", "u1", NULL);
    ok(&s, "", "remove", "db", "users", "never", NULL);
    /* Re-adding after removal works. */
    ok(&s, "", "add", "db", "users", "u1", "{\"a\":2}", NULL);
    ok(&s, "{\"id\":\"u1\",\"a\":2}\n", "get", "db", "users", "u1", NULL);
    sb_free(&s);
}
END_TEST

START_TEST(unknown_collection_and_db)
{
    sandbox s;
    sb_init(&s);
    setup_db(&s);
    /* each failure says what to do next */
    static const char nocoll[] =
        "crdtdb: Collection 'nope' not found (the database has collections: users, posts)\n";
    ck_assert_int_eq(cli(&s, "get", "db", "nope", "u1", NULL), 1);
    ck_assert_str_eq(s.out, "");
    ck_assert_str_eq(s.err, nocoll);
    ck_assert_int_eq(cli(&s, "add", "db", "nope", "u1", "{}", NULL), 1);
    ck_assert_str_eq(s.err, nocoll);
    ck_assert_int_eq(cli(&s, "add-all", "db", "nope", "{}", NULL), 1);
    ck_assert_str_eq(s.err, nocoll);
    ck_assert_int_eq(cli(&s, "query", "db", "nope", NULL), 1);
    ck_assert_str_eq(s.out, "");
    ck_assert_str_eq(s.err, nocoll);
    ck_assert_int_eq(cli(&s, "get", "nodb", "users", "u1", NULL), 1);
    ck_assert_str_eq(s.out, "");
    ck_assert_str_eq(s.err, "crdtdb: Database 'nodb' not found (create it with: crdtdb "
                            "create nodb --collections A,B)\n");
    /* the JSON an unquoting shell leaves */
    ck_assert_int_eq(cli(&s, "add", "db", "users", "u1", "{a:1}", NULL), 1);
    ck_assert_msg(starts_with(s.err, "crdtdb: invalid JSON at line 1 column 2: ") &&
                      strstr(s.err, "(quote the JSON for the shell: "),
                  "%s", s.err);
    ck_assert_int_eq(cli(&s, "frobnicate", NULL), 2);
    ck_assert_str_eq(s.err,
                     "crdtdb: unknown command 'frobnicate' (crdtdb --help lists the commands)\n");
    char other[4200];
    snprintf(other, sizeof other, "%s/nowhere", s.root);
    ck_assert_int_eq(cli_nodir(&s, "-d", other, "get", "db", "users", "u1", NULL), 1);
    ck_assert_msg(strstr(s.err, "no environment at") && strstr(s.err, "(run crdtdb init)"), "%s",
                  s.err);
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
    /* a field named "id" gives way to the record id */
    const char *c = "{\"id\":\"c\",\"age\":35,\"name\":\"Cy\"}";
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
    ok(&s, "{\"id\":\"u1\",\"a\":1}\n", "get", "db", "users", "u1", NULL);
    sb_free(&s);
}
END_TEST

START_TEST(help_and_usage)
{
    static const char *const cmds[] = {
        "init",  "id",    "create", "dbs",    "add",    "add-all", "update", "remove",
        "get",   "query", "watch",  "export", "import", "peers",  "sync",    "serve"};
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
    ck_assert_ptr_nonnull(strstr(s.err, "crdtdb --help lists the commands"));
    ck_assert_int_eq(cli(&s, "get", "db", "users", NULL), 2);
    ck_assert(starts_with(s.err, "usage: crdtdb [-d DIR] get"));
    ck_assert_int_eq(cli(&s, "get", "db", "users", "a", "b", NULL), 2);
    ck_assert_int_eq(cli(&s, "get", "--bogus", "db", "users", "a", NULL), 2);
    ck_assert_int_eq(cli(&s, "create", "db", NULL), 2);
    ck_assert_int_eq(cli(&s, "create", "db", "--collections", NULL), 2);
    ck_assert_int_eq(cli(&s, "watch", "db", "--count", "x", NULL), 2);
    ck_assert_int_eq(cli(&s, "export", "db", NULL), 2); /* no -o */
    ck_assert_int_eq(cli(&s, "export", "db", "-o", NULL), 2);
    ck_assert_int_eq(cli(&s, "export", "db", "--since", "x", "-o", "f", NULL),
                     2);
    ck_assert_int_eq(cli(&s, "export", "db", "--since", "-1", "-o", "f",
                         NULL),
                     2);
    ck_assert_int_eq(cli(&s, "export", "db", "--for", "abc", "-o", "f", NULL),
                     2);
    ck_assert_ptr_nonnull(strstr(s.err, "64 hex digits"));
    ck_assert_int_eq(cli(&s, "export", "db", "--since", "1", "--for",
                         "0000000000000000000000000000000000000000000000000000"
                         "000000000000",
                         "-o", "f", NULL),
                     2);
    ck_assert_int_eq(cli(&s, "import", NULL), 2);
    ck_assert_int_eq(cli(&s, "peers", NULL), 2);
    ck_assert_int_eq(cli(&s, "peers", "db", "x", NULL), 2);
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
    char *text = tu_slurp(path, NULL);
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
            tu_sleep_ms(10);
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
    tu_sleep_ms(200);
    ok(&s, "", "add", "db", "users", "u1", "{\"x\":1,\"n\":{\"a\":1},\"id\":\"own\"}", NULL);
    tu_sleep_ms(200);
    ok(&s, "", "update", "db", "users", "u2", "{\"x\":2,\"n\":{\"b\":2}}",
       NULL);
    tu_sleep_ms(200);
    /* printed before u2 changes again: a watcher starved past both pauses
     * (a loaded machine) would see the two updates in one poll, as one */
    for (int t = 0; t < 1000 && !file_has(out, "\"n\":{\"b\":2},\"x\":2}"); t++)
        tu_sleep_ms(10);
    /* as observers in the writing process say it: an add that changes
     * nothing is no event, an add over a record is an update */
    ok(&s, "", "add", "db", "users", "u2", "{\"x\":2,\"n\":{\"b\":2}}", NULL);
    tu_sleep_ms(200);
    ok(&s, "", "add", "db", "users", "u2", "{\"x\":3}", NULL);
    tu_sleep_ms(200);
    ok(&s, "", "remove", "db", "users", "u3", NULL);
    for (int t = 0; t < 1000 && !file_has(out, "\"remove\""); t++)
        tu_sleep_ms(10);
    kill(pid, SIGTERM);
    ck_assert_int_eq(tu_wait_exit(pid, 10000, "crdtdb"), 0);

    char *lines = tu_slurp(out, NULL), *errs = tu_slurp(err, NULL);
    ck_assert_str_eq(errs, "");
    const char *want =
        "{\"event\":\"add\",\"collection\":\"users\",\"id\":\"u1\","
        "\"value\":{\"id\":\"u1\",\"n\":{\"a\":1},\"x\":1}}\n"
        "{\"event\":\"update\",\"collection\":\"users\",\"id\":\"u2\","
        "\"value\":{\"id\":\"u2\",\"n\":{\"b\":2},\"x\":2}}\n"
        "{\"event\":\"update\",\"collection\":\"users\",\"id\":\"u2\","
        "\"value\":{\"id\":\"u2\",\"x\":3}}\n"
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
    ck_assert_int_eq(tu_wait_exit(pid, 10000, "crdtdb"), 0); /* exits on its own */
    char *lines = tu_slurp(out, NULL), *errs = tu_slurp(err, NULL);
    ck_assert_str_eq(errs, "");
    /* One line only; which probe write it shows (the first add, or an
     * update) depends on timing. */
    const char *rest = starts_with(lines, "{\"event\":\"add\",") ? lines + 15
                       : starts_with(lines, "{\"event\":\"update\",") ? lines + 18
                                                                       : NULL;
    ck_assert_msg(rest && starts_with(rest, "\"collection\":\"posts\",\"id\":\"probe\","
                                            "\"value\":{\"id\":\"probe\",\"n\":"),
                  "%s", lines);
    ck_assert_ptr_eq(strchr(lines, '\n'), lines + strlen(lines) - 1);
    free(lines);
    free(errs);

    ck_assert_int_eq(cli(&s, "watch", "db", "nope", NULL), 1);
    ck_assert_str_eq(s.err, "crdtdb: Collection 'nope' not found (the database has "
                            "collections: users, posts)\n");
    ck_assert_int_eq(cli(&s, "watch", "nodb", NULL), 1);
    ck_assert_str_ne(s.err, "");
    ok(&s, "", "watch", "db", "--count", "0", NULL);
    sb_free(&s);
}
END_TEST

/* ------------------------------------------------- export/import/peers */

/* Runs the CLI with `-d dir`; returns the exit status. */
static int cli_in(sandbox *s, const char *dir, ...)
{
    va_list ap;
    va_start(ap, dir);
    int status = vrun(s, dir, ap);
    va_end(ap);
    return status;
}

/* Like ok() in environment dir. */
static void ok_in(sandbox *s, const char *dir, const char *want, ...)
{
    va_list ap;
    va_start(ap, want);
    int status = vrun(s, dir, ap);
    va_end(ap);
    ck_assert_msg(status == 0, "exit %d: %s", status, s->err);
    ck_assert_str_eq(s->err, "");
    if (want)
        ck_assert_str_eq(s->out, want);
}

/* stats prints one JSON line per database; backup makes a copy that
 * opens as the same replica with the same data, and never overwrites. */
START_TEST(stats_and_backup)
{
    sandbox s;
    sb_init(&s);
    setup_db(&s);
    ok(&s, "", "add", "db", "users", "u1", "{\"name\":\"ann\",\"at\":{\"x\":1}}", NULL);
    ok(&s, "", "add", "db", "users", "u2", "{\"name\":\"bob\"}", NULL);
    ok(&s, "", "remove", "db", "users", "u2", NULL);
    ok(&s, NULL, "stats", NULL);
    ck_assert_msg(starts_with(s.out, "{\"db\":\"db\",\"records\":1,\"removed\":1,"
                                     "\"fields\":2,\"hidden\":0,\"log_entries\":2,"),
                  "%s", s.out);
    ck_assert_int_eq(cli(&s, "stats", "nope", NULL), 1);
    ck_assert_ptr_nonnull(strstr(s.err, "not found"));

    ok(&s, NULL, "id", NULL);
    char id[80];
    snprintf(id, sizeof id, "%s", s.out);
    char copy[4200];
    snprintf(copy, sizeof copy, "%s/copy", s.root);
    ok(&s, NULL, "backup", copy, NULL);
    ok_in(&s, copy, id, "id", NULL); /* read-only: the copy as it was */
    ok_in(&s, copy, "[{\"id\":\"u1\",\"at\":{\"x\":1},\"name\":\"ann\"}]\n", "query", "db",
          "users", NULL);
    ok_in(&s, copy, NULL, "init", NULL); /* its first read-write open: a new replica */
    ck_assert_str_ne(s.out, id);
    ck_assert_int_eq(cli(&s, "backup", copy, NULL), 1);
    ck_assert_ptr_nonnull(strstr(s.err, "holds a data file already"));
    ck_assert_str_eq(s.out, "");
    sb_free(&s);
}
END_TEST

/* expire gives a database a time-to-live; expired lists those due and,
 * with --drop, archives and deletes them; drop deletes one. */
START_TEST(expire_expired_drop)
{
    sandbox s;
    sb_init(&s);
    setup_db(&s);
    ok(&s, "", "create", "other", "--collections", "users", NULL);
    ok(&s, "", "create", "gone", "--collections", "users", NULL);
    ok(&s, "", "add", "db", "users", "u1", "{\"name\":\"ann\"}", NULL);
    ck_assert_int_eq(cli(&s, "expire", "db", NULL), EXIT_USAGE);
    ck_assert_int_eq(cli(&s, "expire", "db", "--after", "soon", NULL), EXIT_USAGE);
    ok(&s, NULL, "expire", "db", "--after", "1ms", "--closed", NULL);
    ck_assert_msg(starts_with(s.out, "{\"db\":\"db\",\"ttl_ms\":1,\"closed_ms\":"), "%s", s.out);
    ok(&s, NULL, "expire", "other", "--after", "7d", NULL);
    tu_sleep_ms(5);
    ok(&s, NULL, "expired", NULL);
    ck_assert_msg(starts_with(s.out, "{\"db\":\"db\",") && !strstr(s.out, "other"), "%s", s.out);
    char arch[4200], file[4300];
    snprintf(arch, sizeof arch, "%s/archive", s.root);
    ok(&s, NULL, "expired", "--drop", "--archive", arch, NULL);
    ck_assert_msg(starts_with(s.out, "{\"db\":\"db\","), "%s", s.out);
    snprintf(file, sizeof file, "%s/6462.crdtdb", arch); /* hex of "db" */
    ck_assert_int_eq(access(file, R_OK), 0);
    ok(&s, "gone\nother\n", "dbs", NULL);
    ok(&s, "", "expired", NULL);
    ok(&s, "", "drop", "gone", NULL);
    ok(&s, "other\n", "dbs", NULL);
    ck_assert_int_eq(cli(&s, "drop", "gone", NULL), 1);
    ck_assert_ptr_nonnull(strstr(s.err, "not found"));
    /* the archive restores into another environment */
    char other[4200];
    snprintf(other, sizeof other, "%s/restored", s.root);
    ok_in(&s, other, NULL, "init", NULL);
    ok_in(&s, other, "", "create", "db", "--collections", "users,posts", NULL);
    ok_in(&s, other, NULL, "import", file, NULL);
    ok_in(&s, other, "{\"id\":\"u1\",\"name\":\"ann\"}\n", "get", "db", "users", "u1", NULL);
    sb_free(&s);
}
END_TEST

/* Runs `crdtdb -d dir export game [opt val] -o file`, which must succeed
 * and print its summary on stderr; returns the number of changes. */
static unsigned long export_ok(sandbox *s, const char *dir, const char *opt,
                               const char *val, const char *file)
{
    int status = opt ? cli_in(s, dir, "export", "game", opt, val, "-o", file,
                              NULL)
                     : cli_in(s, dir, "export", "game", "-o", file, NULL);
    ck_assert_msg(status == 0, "exit %d: %s", status, s->err);
    ck_assert_str_eq(s->out, "");
    unsigned long changes, deltas, bytes, from, to;
    ck_assert_msg(sscanf(s->err,
                         "exported %lu change%*[s] in %lu delta%*[s] (%lu "
                         "bytes), sequences (%lu, %lu]",
                         &changes, &deltas, &bytes, &from, &to) == 5 ||
                      sscanf(s->err,
                             "exported %lu change in %lu delta (%lu bytes), "
                             "sequences (%lu, %lu]",
                             &changes, &deltas, &bytes, &from, &to) == 5 ||
                      sscanf(s->err,
                             "exported %lu changes in %lu delta (%lu bytes), "
                             "sequences (%lu, %lu]",
                             &changes, &deltas, &bytes, &from, &to) == 5,
                  "%s", s->err);
    ck_assert_uint_ge(deltas, 1);
    ck_assert_uint_le(from, to);
    ck_assert_ptr_eq(strchr(s->err, '\n'), s->err + strlen(s->err) - 1);
    return changes;
}

/* Runs `crdtdb -d dir import files... NULL` (at most 3), which must
 * succeed; checks that it printed one "applied" line per delta and returns
 * the number of changes applied. */
static unsigned long import_ok(sandbox *s, const char *dir, ...)
{
    const char *f[4] = {NULL, NULL, NULL, NULL};
    va_list ap;
    va_start(ap, dir);
    for (int i = 0; i < 4 && (f[i] = va_arg(ap, const char *)) != NULL; i++)
        ck_assert_int_lt(i, 3);
    va_end(ap);
    int status = cli_in(s, dir, "import", f[0], f[1], f[2], NULL);
    ck_assert_msg(status == 0, "exit %d: %s", status, s->err);
    ck_assert_str_eq(s->err, "");
    ck_assert_str_ne(s->out, "");
    unsigned long total = 0;
    for (const char *l = s->out; *l; l = strchr(l, '\n') + 1) {
        unsigned long applied, changes, from, to;
        int end = 0;
        ck_assert_msg(sscanf(l, "applied %lu of %lu change%*[s] from %*16[0-9a-f]"
                                "\xe2\x80\xa6 to game, sequences (%lu, %lu]%n",
                             &applied, &changes, &from, &to, &end) == 4 ||
                          sscanf(l, "applied %lu of %lu change from "
                                    "%*16[0-9a-f]\xe2\x80\xa6 to game, "
                                    "sequences (%lu, %lu]%n",
                                 &applied, &changes, &from, &to, &end) == 4,
                      "%s", s->out);
        ck_assert_int_eq(l[end], '\n');
        ck_assert_uint_le(applied, changes);
        total += applied;
    }
    return total;
}

/* The environments A and B of a sandbox, each with database game. */
typedef struct pair {
    sandbox s;
    char a[4200], b[4200];
    char ida[65], idb[65];
} pair;

static void path_in(const sandbox *s, char *out, size_t n, const char *name)
{
    snprintf(out, n, "%s/%s", s->root, name);
}

static void pair_init(pair *p)
{
    sb_init(&p->s);
    path_in(&p->s, p->a, sizeof p->a, "A");
    path_in(&p->s, p->b, sizeof p->b, "B");
    ok_in(&p->s, p->a, NULL, "init", NULL);
    ok_in(&p->s, p->a, NULL, "id", NULL);
    ck_assert_uint_eq(strlen(p->s.out), 65);
    memcpy(p->ida, p->s.out, 64);
    p->ida[64] = '\0';
    ok_in(&p->s, p->b, NULL, "init", NULL);
    ok_in(&p->s, p->b, NULL, "id", NULL);
    memcpy(p->idb, p->s.out, 64);
    p->idb[64] = '\0';
    ck_assert_str_ne(p->ida, p->idb);
    ok_in(&p->s, p->a, "", "create", "game", "--collections", "players,moves",
          NULL);
    ok_in(&p->s, p->b, "", "create", "game", "--collections", "players,moves",
          NULL);
}

/* The stdout of a command that must succeed in dir, malloc'd. */
static char *output_in(sandbox *s, const char *dir, ...)
{
    va_list ap;
    va_start(ap, dir);
    int status = vrun(s, dir, ap);
    va_end(ap);
    ck_assert_msg(status == 0, "exit %d: %s", status, s->err);
    char *out = strdup(s->out);
    ck_assert_ptr_nonnull(out);
    return out;
}

/* Checks that A and B print the same for `crdtdb CMD game COLL [ARG]`;
 * returns A's output (malloc'd). */
static char *same_in_both(pair *p, const char *cmd, const char *coll,
                          const char *arg)
{
    char *a = output_in(&p->s, p->a, cmd, "game", coll, arg, NULL);
    char *b = output_in(&p->s, p->b, cmd, "game", coll, arg, NULL);
    ck_assert_str_eq(a, b);
    free(b);
    return a;
}

/* The peers line of `peers game` in dir for id; returns its received. */
static unsigned long peer_received(sandbox *s, const char *dir,
                                   const char *id, unsigned long *acked)
{
    char want[80];
    ok_in(s, dir, NULL, "peers", "game", NULL);
    snprintf(want, sizeof want, "%s received ", id);
    const char *l = strstr(s->out, want);
    ck_assert_msg(l != NULL, "%s", s->out);
    unsigned long received, ack;
    ck_assert_int_eq(sscanf(l + strlen(want), "%lu acked %lu", &received,
                            &ack),
                     2);
    if (acked)
        *acked = ack;
    return received;
}

START_TEST(export_import_copies_database)
{
    pair p;
    char f1[4200], tmp[4300];
    pair_init(&p);
    sandbox *s = &p.s;
    path_in(s, f1, sizeof f1, "f1");
    ok_in(s, p.b, "", "peers", "game", NULL); /* nobody yet */

    ok_in(s, p.a, "", "add", "game", "players", "p1",
          "{\"name\":\"Ann\",\"score\":1,\"pos\":{\"x\":1,\"y\":2}}", NULL);
    ok_in(s, p.a, "", "add", "game", "players", "p2",
          "{\"name\":\"Bob\",\"score\":5}", NULL);
    ok_in(s, p.a, "", "add", "game", "players", "gone", "{\"x\":1}", NULL);
    ok_in(s, p.a, "", "update", "game", "players", "p1",
          "{\"score\":7,\"pos\":{\"y\":3}}", NULL);
    ok_in(s, p.a, "", "add", "game", "players", "p2",
          "{\"name\":\"Bob\",\"level\":2}", NULL); /* replaces */
    ok_in(s, p.a, "", "remove", "game", "players", "gone", NULL);
    ok_in(s, p.a, "", "add", "game", "moves", "m1",
          "{\"by\":\"p1\",\"to\":[3,4]}", NULL);

    ck_assert_uint_gt(export_ok(s, p.a, NULL, NULL, f1), 0);
    snprintf(tmp, sizeof tmp, "%s.tmp", f1);
    ck_assert_int_eq(access(tmp, F_OK), -1); /* renamed into place */
    ck_assert_uint_gt(import_ok(s, p.b, f1, NULL), 0);

    char *a = same_in_both(&p, "get", "players", "p1");
    ck_assert_str_eq(a, "{\"id\":\"p1\",\"name\":\"Ann\",\"pos\":{\"x\":1,\"y\":3},"
                        "\"score\":7}\n");
    free(a);
    a = same_in_both(&p, "get", "players", "p2");
    ck_assert_str_eq(a, "{\"id\":\"p2\",\"level\":2,\"name\":\"Bob\"}\n");
    free(a);
    a = same_in_both(&p, "query", "players", NULL);
    ck_assert_ptr_null(strstr(a, "gone"));
    free(a);
    free(same_in_both(&p, "query", "players", "[[\"score\",\">\",1]]"));
    a = same_in_both(&p, "query", "moves", NULL);
    ck_assert_str_eq(a, "[{\"id\":\"m1\",\"by\":\"p1\",\"to\":[3,4]}]\n");
    free(a);
    ck_assert_int_eq(cli_in(s, p.b, "get", "game", "players", "gone", NULL),
                     1);

    /* B now knows A, and has all of A's log. */
    ok_in(s, p.b, NULL, "peers", "game", NULL);
    ck_assert_ptr_eq(strchr(s->out, '\n'), s->out + strlen(s->out) - 1);
    unsigned long acked;
    ck_assert_uint_gt(peer_received(s, p.b, p.ida, &acked), 0);
    ck_assert_uint_eq(acked, 0);
    ok_in(s, p.a, "", "peers", "game", NULL); /* A heard nothing */

    /* Importing again changes nothing; -o - and import - work too. */
    ck_assert_uint_eq(import_ok(s, p.b, f1, f1, NULL), 0);
    ck_assert_int_eq(cli_in(s, p.a, "export", "game", "-o", "-", NULL), 0);
    ck_assert(starts_with(s->err, "exported "));
    size_t n1, n2;
    uint8_t *file = (uint8_t *)tu_slurp(f1, &n1);
    uint8_t *out = (uint8_t *)tu_slurp(s->out_path, &n2);
    ck_assert_uint_eq(n1, n2); /* same changes; the signature may differ */
    free(file);
    char piped[4200];
    path_in(s, piped, sizeof piped, "piped");
    tu_spit(piped, out, n2);
    free(out);
    spawn_stdin = piped;
    ck_assert_uint_eq(import_ok(s, p.b, "-", NULL), 0);
    spawn_stdin = NULL;
    ck_assert(starts_with(s->out, "applied 0 of "));
    sb_free(s);
}
END_TEST

/* Sneakernet: both sides write, export for each other, import in varied
 * orders, again and again. */
START_TEST(usb_round_trips_converge)
{
    pair p;
    char fa[8][4200], fb[8][4200], json[64], rid[16];
    pair_init(&p);
    sandbox *s = &p.s;
    enum { ROUNDS = 4 };
    ok_in(s, p.a, "", "add", "game", "players", "shared", "{\"n\":0}", NULL);
    for (int r = 0; r < ROUNDS; r++) {
        snprintf(fa[r], sizeof fa[r], "%s/a%d", s->root, r);
        snprintf(fb[r], sizeof fb[r], "%s/b%d", s->root, r);
        snprintf(json, sizeof json, "{\"by\":\"A\",\"round\":%d}", r);
        snprintf(rid, sizeof rid, "a%d", r);
        ok_in(s, p.a, "", "add", "game", "players", rid, json, NULL);
        snprintf(json, sizeof json, "{\"a\":%d,\"n\":%d}", r, 100 + r);
        ok_in(s, p.a, "", "update", "game", "players", "shared", json, NULL);
        snprintf(json, sizeof json, "{\"by\":\"B\",\"round\":%d}", r);
        snprintf(rid, sizeof rid, "b%d", r);
        ok_in(s, p.b, "", "add", "game", "players", rid, json, NULL);
        ok_in(s, p.b, "", "add", "game", "moves", rid, json, NULL);
        if (r > 0) { /* B has the shared record from round 1 on */
            snprintf(json, sizeof json, "{\"b\":%d,\"n\":%d}", r, 200 + r);
            ok_in(s, p.b, "", "update", "game", "players", "shared", json,
                  NULL);
        }

        /* Each side exports what the other lacks, as far as it knows. */
        ck_assert_uint_gt(export_ok(s, p.a, "--for", p.idb, fa[r]), 0);
        ck_assert_uint_gt(export_ok(s, p.b, "--for", p.ida, fb[r]), 0);
        switch (r % 3) {
        case 0: /* A first; B imports the same file twice */
            ck_assert_uint_gt(import_ok(s, p.a, fb[r], NULL), 0);
            ck_assert_uint_gt(import_ok(s, p.b, fa[r], NULL), 0);
            ck_assert_uint_eq(import_ok(s, p.b, fa[r], NULL), 0);
            break;
        case 1: /* B first; both import old files along, newest first */
            ck_assert_uint_gt(import_ok(s, p.b, fa[r], fa[r - 1], NULL), 0);
            ck_assert_uint_gt(import_ok(s, p.a, fb[r], fb[r - 1], NULL), 0);
            break;
        default: /* one command, the same file twice, then again */
            ck_assert_uint_gt(import_ok(s, p.a, fb[r], fb[r], NULL), 0);
            ck_assert_uint_gt(import_ok(s, p.b, fa[r - 1], fa[r], NULL), 0);
            ck_assert_uint_eq(import_ok(s, p.a, fb[r], NULL), 0);
            break;
        }
        free(same_in_both(&p, "query", "players", NULL));
        free(same_in_both(&p, "query", "moves", NULL));
    }

    char *players = same_in_both(&p, "query", "players", NULL);
    for (int r = 0; r < ROUNDS; r++) {
        char want[64];
        snprintf(want, sizeof want, "{\"id\":\"a%d\",\"by\":\"A\",", r);
        ck_assert_msg(strstr(players, want) != NULL, "%s", players);
        snprintf(want, sizeof want, "{\"id\":\"b%d\",\"by\":\"B\",", r);
        ck_assert_msg(strstr(players, want) != NULL, "%s", players);
    }
    /* Different fields merge; the same field (n) has one winner. */
    ck_assert_msg(strstr(players, "{\"id\":\"shared\",\"a\":3,\"b\":3,\"n\":") !=
                      NULL,
                  "%s", players);
    free(players);
    free(same_in_both(&p, "get", "players", "shared"));

    /* The peers know each other, and have each other's logs. */
    ck_assert_uint_gt(peer_received(s, p.b, p.ida, NULL), 0);
    ck_assert_uint_gt(peer_received(s, p.a, p.idb, NULL), 0);

    /* A tells B it has everything of B's (re-sending its last round, which
     * B had not acknowledged yet); then B has nothing for A: what came from
     * A is never sent back. */
    char last[4200];
    path_in(s, last, sizeof last, "last");
    export_ok(s, p.a, "--for", p.idb, last);
    ck_assert_uint_eq(import_ok(s, p.b, last, NULL), 0);
    ck_assert_uint_eq(export_ok(s, p.b, "--for", p.ida, last), 0);
    ck_assert(starts_with(s->err, "exported 0 changes"));
    /* while a plain export has everything */
    ck_assert_uint_gt(export_ok(s, p.b, NULL, NULL, last), 0);
    /* and a new write of B's goes out alone */
    ok_in(s, p.b, "", "add", "game", "moves", "late", "{\"x\":1}", NULL);
    ck_assert_uint_eq(export_ok(s, p.b, "--for", p.ida, last), 2);
    ck_assert_uint_eq(import_ok(s, p.a, last, NULL), 2);
    free(same_in_both(&p, "query", "moves", NULL));
    sb_free(s);
}
END_TEST

START_TEST(import_rejects_bad_input)
{
    pair p;
    char f1[4200], bad[4200], c[4200];
    pair_init(&p);
    sandbox *s = &p.s;
    path_in(s, f1, sizeof f1, "f1");
    path_in(s, bad, sizeof bad, "bad");
    for (int i = 0; i < 6; i++) {
        char id[8], json[64];
        snprintf(id, sizeof id, "p%d", i);
        snprintf(json, sizeof json, "{\"name\":\"player %d\",\"n\":%d}", i, i);
        ok_in(s, p.a, "", "add", "game", "players", id, json, NULL);
    }
    export_ok(s, p.a, NULL, NULL, f1);
    ok_in(s, p.b, "", "add", "game", "players", "mine", "{\"b\":1}", NULL);
    char *before = output_in(s, p.b, "query", "game", "players", NULL);
    size_t len;
    uint8_t *delta = (uint8_t *)tu_slurp(f1, &len);
    ck_assert_uint_gt(len, 200);

    /* garbage */
    static const char garbage[] = "this is not a delta\n";
    tu_spit(bad, garbage, sizeof garbage - 1);
    ck_assert_int_eq(cli_in(s, p.b, "import", bad, NULL), 1);
    ck_assert_str_eq(s->out, "");
    ck_assert_msg(starts_with(s->err, "crdtdb: ") && strlen(s->err) > 9,
                  "%s", s->err);
    /* truncated, at several places */
    size_t cuts[] = {1, 10, len / 2, len - 1};
    for (size_t i = 0; i < sizeof cuts / sizeof *cuts; i++) {
        tu_spit(bad, delta, cuts[i]);
        ck_assert_int_eq(cli_in(s, p.b, "import", bad, NULL), 1);
        ck_assert_str_eq(s->out, "");
        ck_assert_msg(starts_with(s->err, "crdtdb: ") && strstr(s->err, "cut short"), "%s",
                      s->err);
    }
    /* a delta that says it is larger than max_delta_size: refused unread */
    static const uint8_t huge[] = {0x93, 0x02, 0xc6, 0x10, 0x00, 0x00, 0x00, 'x'};
    tu_spit(bad, huge, sizeof huge);
    ck_assert_int_eq(cli_in(s, p.b, "import", bad, NULL), 1);
    ck_assert_msg(strstr(s->err, "over the limit") != NULL, "%s", s->err);
    /* one byte flipped in the middle */
    delta[len / 2] ^= 0x04;
    tu_spit(bad, delta, len);
    delta[len / 2] ^= 0x04;
    ck_assert_int_eq(cli_in(s, p.b, "import", bad, NULL), 1);
    ck_assert_str_eq(s->out, "");
    ck_assert_msg(starts_with(s->err, "crdtdb: ") &&
                      strstr(s->err, "signature") != NULL,
                  "%s", s->err);
    /* empty */
    tu_spit(bad, "", 0);
    ck_assert_int_eq(cli_in(s, p.b, "import", bad, NULL), 1);
    ck_assert_ptr_nonnull(strstr(s->err, "no delta in"));
    /* a file that never ends: refused once a delta's limit is read, not
     * read whole (it was: until memory ran out) */
    ck_assert_int_eq(cli_in(s, p.b, "import", "/dev/zero", NULL), 1);
    ck_assert_msg(strstr(s->err, "no valid delta at byte 0") != NULL, "%s", s->err);
    /* missing */
    path_in(s, c, sizeof c, "missing");
    ck_assert_int_eq(cli_in(s, p.b, "import", c, NULL), 1);
    ck_assert_str_ne(s->err, "");

    char *after = output_in(s, p.b, "query", "game", "players", NULL);
    ck_assert_str_eq(after, before);
    free(after);
    ok_in(s, p.b, "", "peers", "game", NULL);

    /* An environment without the database. */
    path_in(s, c, sizeof c, "C");
    ok_in(s, c, NULL, "init", NULL);
    ck_assert_int_eq(cli_in(s, c, "import", f1, NULL), 1);
    ck_assert_str_eq(s->out, "");
    ck_assert_str_eq(s->err, "crdtdb: Database 'game' not found (create it with: crdtdb create "
                             "game --collections A,B)\n");
    ok_in(s, c, "", "dbs", NULL);

    /* A good delta then a bad one: the first stays applied. */
    uint8_t *two = malloc(2 * len);
    ck_assert_ptr_nonnull(two);
    memcpy(two, delta, len);
    memcpy(two + len, delta, len);
    two[len + len / 2] ^= 0x04;
    tu_spit(bad, two, 2 * len);
    free(two);
    ck_assert_int_eq(cli_in(s, p.b, "import", bad, NULL), 1);
    ck_assert_msg(starts_with(s->out, "applied 18 of 18 changes from "),
                  "%s", s->out); /* 6 records of base + 2 fields */
    ck_assert_ptr_eq(strchr(s->out, '\n'), s->out + strlen(s->out) - 1);
    ck_assert_ptr_nonnull(strstr(s->err, "signature"));
    after = output_in(s, p.b, "query", "game", "players", NULL);
    ck_assert_str_ne(after, before);
    ck_assert_ptr_nonnull(strstr(after, "\"player 5\""));
    ck_assert_ptr_nonnull(strstr(after, "\"mine\""));
    free(after);
    /* and a file stops at the first bad one */
    ck_assert_int_eq(cli_in(s, p.b, "import", f1, bad, f1, NULL), 1);
    ck_assert_uint_eq(strlen(s->out) > 0, 1);

    free(before);
    free(delta);
    sb_free(s);
}
END_TEST

/* Starts `crdtdb -d dir args... NULL` in the background. */
static pid_t bg_in(const char *dir, const char *out, const char *err, ...)
{
    va_list ap;
    va_start(ap, err);
    pid_t pid = spawn(dir, out, err, ap);
    va_end(ap);
    return pid;
}

/* Waits until the file at path contains needle (or the process exits). */
static void wait_for(const char *path, const char *needle, pid_t pid)
{
    for (int i = 0; i < 1000; i++) {
        if (access(path, R_OK) == 0 && file_has(path, needle))
            return;
        ck_assert_msg(waitpid(pid, NULL, WNOHANG) == 0, "process exited early: %s", path);
        tu_sleep_ms(10);
    }
    ck_abort_msg("'%s' never appeared in %s", needle, path);
}

START_TEST(serve_and_sync_converge)
{
    pair p;
    pair_init(&p);
    char srv[4200], slog[4200], serr[4200], wout[4200], werr[4200], listen[64], url[64];
    path_in(&p.s, srv, sizeof srv, "S");
    path_in(&p.s, slog, sizeof slog, "server.out");
    path_in(&p.s, serr, sizeof serr, "server.err");
    path_in(&p.s, wout, sizeof wout, "watch.out");
    path_in(&p.s, werr, sizeof werr, "watch.err");
    int port = 20000 + (int)(getpid() % 20000);
    snprintf(listen, sizeof listen, "127.0.0.1:%d", port);
    snprintf(url, sizeof url, "ws://127.0.0.1:%d", port);
    ok_in(&p.s, srv, NULL, "init", NULL);
    pid_t server = bg_in(srv, slog, serr, "serve", "--listen", listen, "--collections",
                         "players,moves", NULL);
    wait_for(serr, "listening", server);
    ok_in(&p.s, p.a, "", "add", "game", "players", "ann", "{\"hp\":10}", NULL);
    ok_in(&p.s, p.b, "", "add", "game", "moves", "m1", "{\"to\":\"e4\"}", NULL);
    ck_assert_int_eq(cli_in(&p.s, p.a, "sync", url, "--db", "game", NULL), 0);
    ck_assert_int_eq(cli_in(&p.s, p.b, "sync", url, "--db", "game", NULL), 0);
    ck_assert_int_eq(cli_in(&p.s, p.a, "sync", url, "--db", "game", NULL), 0);
    free(same_in_both(&p, "query", "players", NULL));
    free(same_in_both(&p, "query", "moves", NULL));
    /* B stays connected and prints what arrives, as JSON lines */
    pid_t watch = bg_in(p.b, wout, werr, "sync", url, "--db", "game", "--watch", NULL);
    wait_for(werr, "connected", watch);
    ok_in(&p.s, p.a, "", "update", "game", "players", "ann", "{\"hp\":9}", NULL);
    ck_assert_int_eq(cli_in(&p.s, p.a, "sync", url, "--db", "game", NULL), 0);
    wait_for(wout, "{\"event\":\"update\",\"collection\":\"players\",\"id\":\"ann\","
                   "\"value\":{\"id\":\"ann\",\"hp\":9}}", watch);
    kill(watch, SIGTERM);
    ck_assert_int_eq(tu_wait_exit(watch, 5000, "crdtdb"), 0);
    /* a bad URL and an unreachable server fail cleanly */
    ck_assert_int_ne(cli_in(&p.s, p.a, "sync", "http://x", "--db", "game", NULL), 0);
    kill(server, SIGTERM);
    ck_assert_int_eq(tu_wait_exit(server, 5000, "crdtdb"), 0);
    sb_free(&p.s);
}
END_TEST

/* serve --peer: two servers, a client on each; serve --tls-*: wss://. */
START_TEST(peered_servers_and_tls)
{
    pair p;
    pair_init(&p);
    char s1[4200], s2[4200], l1[4200], e1[4200], l2[4200], e2[4200], cert[4200], key[4200];
    path_in(&p.s, s1, sizeof s1, "S1");
    path_in(&p.s, s2, sizeof s2, "S2");
    path_in(&p.s, l1, sizeof l1, "s1.out");
    path_in(&p.s, e1, sizeof e1, "s1.err");
    path_in(&p.s, l2, sizeof l2, "s2.out");
    path_in(&p.s, e2, sizeof e2, "s2.err");
    path_in(&p.s, cert, sizeof cert, "cert.pem");
    path_in(&p.s, key, sizeof key, "key.pem");
    const char *req[] = {"openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                         "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=localhost",
                         "-addext", "subjectAltName=IP:127.0.0.1", NULL};
    ck_assert_int_eq(tu_run_cmd(req, NULL), 0);
    int port = 20000 + (int)((getpid() + 7919) % 20000);
    char listen1[64], listen2[64], url1[64], url2[64];
    snprintf(listen1, sizeof listen1, "127.0.0.1:%d", port);
    snprintf(listen2, sizeof listen2, "127.0.0.1:%d", port + 1);
    snprintf(url1, sizeof url1, "wss://127.0.0.1:%d", port);
    snprintf(url2, sizeof url2, "ws://127.0.0.1:%d", port + 1);
    ok_in(&p.s, s1, NULL, "init", NULL);
    ok_in(&p.s, s2, NULL, "init", NULL);
    ok_in(&p.s, s2, "", "create", "game", "--collections", "players,moves", NULL);
    pid_t v1 = bg_in(s1, l1, e1, "serve", "--listen", listen1, "--collections",
                     "players,moves", "--tls-cert", cert, "--tls-key", key, NULL);
    wait_for(e1, "listening on wss://", v1);
    pid_t v2 = bg_in(s2, l2, e2, "serve", "--listen", listen2, "--collections",
                     "players,moves", "--peer", url1, "--peer-ca", cert, NULL);
    wait_for(e2, "peering with", v2);
    ok_in(&p.s, p.a, "", "add", "game", "players", "ann", "{\"hp\":10}", NULL);
    ok_in(&p.s, p.b, "", "add", "game", "moves", "m1", "{\"to\":\"e4\"}", NULL);
    ck_assert_int_eq(cli_in(&p.s, p.a, "sync", url1, "--db", "game", "--tls-ca", cert, NULL), 0);
    ck_assert_int_eq(cli_in(&p.s, p.b, "sync", url2, "--db", "game", NULL), 0);
    /* each write crosses the peering: poll until both clients hold both */
    char *a = NULL, *b = NULL;
    for (int i = 0; i < 100; i++) {
        free(a);
        free(b);
        ck_assert_int_eq(cli_in(&p.s, p.a, "sync", url1, "--db", "game", "--tls-ca", cert, NULL),
                         0);
        ck_assert_int_eq(cli_in(&p.s, p.b, "sync", url2, "--db", "game", NULL), 0);
        a = output_in(&p.s, p.a, "query", "game", "moves", NULL);
        b = output_in(&p.s, p.b, "query", "game", "players", NULL);
        if (strstr(a, "e4") && strstr(b, "ann"))
            break;
        tu_sleep_ms(50);
    }
    ck_assert_msg(strstr(a, "e4") && strstr(b, "ann"), "no convergence: %s / %s", a, b);
    free(a);
    free(b);
    ck_assert_int_ne(cli_in(&p.s, s1, "serve", "--tls-cert", cert, NULL), 0); /* no key */
    kill(v1, SIGTERM);
    kill(v2, SIGTERM);
    ck_assert_int_eq(tu_wait_exit(v1, 5000, "crdtdb"), 0);
    ck_assert_int_eq(tu_wait_exit(v2, 5000, "crdtdb"), 0);
    sb_free(&p.s);
}
END_TEST

/* serve with a PEM key of the other kind than --jwt-alg says so, and which
 * --jwt-alg fits; a short secret is named as such. */
START_TEST(serve_names_the_key_that_fits)
{
    sandbox s;
    sb_init(&s);
    ok(&s, NULL, "init", NULL);
    static const char *const ec[] = {"-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
                                     NULL};
    static const char *const rsa[] = {"-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
                                      NULL};
    tu_pem ec_priv, ec_pub, rsa_priv, rsa_pub;
    tu_genkey(&ec_priv, s.root, "ec.pem", ec);
    tu_pubkey(&ec_pub, &ec_priv, s.root, "ec.pub");
    tu_genkey(&rsa_priv, s.root, "rsa.pem", rsa);
    tu_pubkey(&rsa_pub, &rsa_priv, s.root, "rsa.pub");
    ck_assert_int_eq(cli(&s, "serve", "--jwt-public-key", ec_pub.path, "--jwt-alg", "RS256", NULL),
                     EXIT_FAILURE);
    ck_assert_msg(strstr(s.err, "EC P-256 key") && strstr(s.err, "give --jwt-alg ES256") &&
                      !strstr(s.err, "HS256"),
                  "%s", s.err);
    ck_assert_int_eq(cli(&s, "serve", "--jwt-public-key", rsa_pub.path, "--jwt-alg", "ES256", NULL),
                     EXIT_FAILURE);
    ck_assert_msg(strstr(s.err, "an RSA key") && strstr(s.err, "give --jwt-alg RS256"), "%s",
                  s.err);
    char secret[4200];
    snprintf(secret, sizeof secret, "%s/short", s.root);
    tu_spit(secret, "short\n", 6);
    ck_assert_int_eq(cli(&s, "serve", "--jwt-secret-file", secret, NULL), EXIT_FAILURE);
    ck_assert_msg(strstr(s.err, "32 bytes"), "%s", s.err);
    ck_assert_int_eq(cli(&s, "serve", "--jwt-public-key", secret, NULL), EXIT_FAILURE);
    ck_assert_msg(strstr(s.err, "not hold a PEM RSA key") && !strstr(s.err, "HS256"), "%s",
                  s.err);
    free(ec_priv.data);
    free(ec_pub.data);
    free(rsa_priv.data);
    free(rsa_pub.data);
    sb_free(&s);
}
END_TEST

/* ------------------------------------------------ the DataStore's ways */

/* Records carry their id; add-all writes a map of records at once, all or
 * none; '-' reads the JSON from standard input, for records no command
 * line holds. */
START_TEST(add_all_and_json_from_stdin)
{
    sandbox s;
    char file[4200];
    sb_init(&s);
    setup_db(&s);
    snprintf(file, sizeof file, "%s/in.json", s.root);
    ok(&s, "", "add-all", "db", "users", "{\"a\":{\"n\":1,\"id\":\"x\"},\"b\":{\"n\":2}}", NULL);
    ok(&s, "[{\"id\":\"a\",\"n\":1},{\"id\":\"b\",\"n\":2}]\n", "query", "db", "users", NULL);
    ok(&s, "{\"id\":\"a\",\"n\":1}\n", "get", "db", "users", "a", NULL);
    /* one bad record: none is written */
    ck_assert_int_eq(cli(&s, "add-all", "db", "users", "{\"c\":{\"n\":3},\"d\":5}", NULL), 1);
    ck_assert_str_eq(s.out, "");
    ck_assert_str_ne(s.err, "");
    ck_assert_int_eq(cli(&s, "add-all", "db", "users", "[1]", NULL), 1);
    ok(&s, "[{\"id\":\"a\",\"n\":1},{\"id\":\"b\",\"n\":2}]\n", "query", "db", "users", NULL);
    ck_assert_int_eq(cli(&s, "add-all", "db", "users", NULL), 2);

    /* a record of 10,000 fields, from standard input */
    enum { FIELDS = 10000 };
    char *big = malloc(FIELDS * 20 + 2), *p = big;
    ck_assert_ptr_nonnull(big);
    for (int i = 0; i < FIELDS; i++)
        p += sprintf(p, "%c\"f%d\":%d", i ? ',' : '{', i, i);
    *p++ = '}';
    tu_spit(file, big, (size_t)(p - big));
    free(big);
    spawn_stdin = file;
    ok(&s, "", "add", "db", "users", "big", "-", NULL);
    spawn_stdin = NULL;
    ok(&s, NULL, "get", "db", "users", "big", NULL);
    ck_assert(starts_with(s.out, "{\"id\":\"big\",\"f0\":0,\"f1\":1,"));
    ck_assert_ptr_nonnull(strstr(s.out, ",\"f9999\":9999"));
    size_t colons = 0;
    for (const char *c = s.out; *c; c++)
        colons += *c == ':';
    ck_assert_uint_eq(colons, FIELDS + 1);
    /* update and add-all take '-' too */
    tu_spit(file, "{\"f0\":-1}", 9);
    spawn_stdin = file;
    ok(&s, "", "update", "db", "users", "big", "-", NULL);
    spawn_stdin = NULL;
    ok(&s, NULL, "get", "db", "users", "big", NULL);
    ck_assert(starts_with(s.out, "{\"id\":\"big\",\"f0\":-1,\"f1\":1,"));
    static const char two[] = "{\"s1\":{\"v\":1},\"s2\":{\"v\":2,\"id\":\"no\"}}";
    tu_spit(file, two, sizeof two - 1);
    spawn_stdin = file;
    ok(&s, "", "add-all", "db", "posts", "-", NULL);
    spawn_stdin = NULL;
    ok(&s, "[{\"id\":\"s2\",\"v\":2}]\n", "query", "db", "posts", "{\"v\":2}", NULL);
    /* bad JSON on standard input says so */
    tu_spit(file, "{\"v\":", 5);
    spawn_stdin = file;
    ck_assert_int_eq(cli(&s, "add", "db", "posts", "s3", "-", NULL), 1);
    spawn_stdin = NULL;
    ck_assert_msg(starts_with(s.err, "crdtdb: invalid JSON at line 1") &&
                      strstr(s.err, "(in the JSON read from standard input)"),
                  "%s", s.err);
    ck_assert_int_eq(cli(&s, "get", "db", "posts", "s3", NULL), 1);
    sb_free(&s);
}
END_TEST

/* Whether text has name as a whole option: not part of a longer one. */
static int has_option(const char *text, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = strstr(text, name); p; p = strstr(p + 1, name)) {
        char before = p == text ? ' ' : p[-1], after = p[n];
        if (before != '-' && !(before >= 'a' && before <= 'z') &&
            !(after >= 'a' && after <= 'z') && after != '-')
            return 1;
    }
    return 0;
}

/* Runs `crdtdb CMD OPTION[=v] --help`: 1 if CMD takes the option (then its
 * help must list it), 0 if not. */
static int probe_option(sandbox *s, const char *cmd, const char *name, int flag)
{
    char arg[128];
    snprintf(arg, sizeof arg, flag ? "%s" : "%s=v", name);
    int status = cli(s, cmd, arg, "--help", NULL);
    ck_assert_msg(status == 0 || status == 2, "%s %s: exit %d: %s", cmd, arg, status, s->err);
    if (status == 2)
        return 0;
    ck_assert_msg(has_option(s->out, name), "'crdtdb %s --help' does not list %s:\n%s", cmd, name,
                  s->out);
    return 1;
}

/* --version; and every option a command takes, as the parser's own table
 * says (cli/options.h), is in that command's --help. */
START_TEST(version_and_help_list_every_option)
{
    sandbox s;
    char want[640], cmds[32][16];
    sb_init(&s);
#ifdef CRDTDB_VERSION
    snprintf(want, sizeof want, "crdtdb %s\n", CRDTDB_VERSION);
#else
    snprintf(want, sizeof want, "crdtdb %d.%d.%d\n", CRDTDB_VERSION_MAJOR, CRDTDB_VERSION_MINOR,
             CRDTDB_VERSION_PATCH);
#endif
    ck_assert_int_eq(cli(&s, "--version", NULL), 0);
    ck_assert_str_eq(s.out, want);

    /* the commands, from the list --help prints */
    ck_assert_int_eq(cli(&s, "--help", NULL), 0);
    int ncmds = 0;
    for (const char *l = strstr(s.out, "\n  "); l; l = strstr(l + 1, "\n  ")) {
        ck_assert_int_lt(ncmds, 32);
        ck_assert_int_eq(sscanf(l + 3, "%15s", cmds[ncmds]), 1);
        ncmds++;
    }
    ck_assert_int_ge(ncmds, 17);
    int taken = 0, serve_limits = 0, sync_timeout = 0, export_output = 0;
    for (int c = 0; c < ncmds; c++) {
        snprintf(want, sizeof want, "usage: crdtdb %s%s", strcmp(cmds[c], "token") ? "[-d DIR] " : "",
                 cmds[c]);
        ck_assert_int_eq(cli(&s, cmds[c], "--help", NULL), 0);
        ck_assert_msg(starts_with(s.out, want), "%s", s.out);
        if (strcmp(cmds[c], "token") == 0) {
            for (int k = 0; token_flags[k]; k++)
                taken += probe_option(&s, "token", token_flags[k], 0);
            continue;
        }
        for (size_t k = 0; k < NOPTIONS; k++) {
            const cli_option *o = &cli_options[k];
            if (o->kind != OPTV_LIMITS) {
                int t = probe_option(&s, cmds[c], o->name, o->kind == OPTV_FLAG);
                taken += t;
                sync_timeout += t && !strcmp(cmds[c], "sync") && !strcmp(o->name, "--timeout");
                export_output += t && !strcmp(cmds[c], "export") && !strcmp(o->name, "--output");
                continue;
            }
            for (int j = 0; serve_limit_flags[j]; j++) {
                int t = probe_option(&s, cmds[c], serve_limit_flags[j], 0);
                taken += t;
                serve_limits += t && !strcmp(cmds[c], "serve");
            }
        }
    }
    /* the probe sees what is there */
    ck_assert_int_eq(serve_limits, SERVE_NLIMITS);
    ck_assert_int_eq(sync_timeout, 1);
    ck_assert_int_eq(export_output, 1);
    ck_assert_int_ge(taken, 30);
    sb_free(&s);
}
END_TEST

/* ------------------------------------------------- sync as a newcomer */

/* A TCP socket on 127.0.0.1 at a port the kernel picks, in *port:
 * listening (backlog 8, never accepted) or, with listening 0, closed
 * again, so nothing is there. */
static int local_port(int listening, int *port)
{
    struct sockaddr_in sa;
    socklen_t len = sizeof sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    *port = ntohs(sa.sin_port);
    if (listening) {
        ck_assert_int_eq(listen(fd, 8), 0);
        return fd;
    }
    close(fd);
    return -1;
}

/* Starts `crdtdb -d dir serve --listen 127.0.0.1:0 args...` and waits
 * until it listens; its URL in url. */
static pid_t serve_bg(sandbox *s, const char *dir, char *url, size_t n, const char *a1,
                      const char *a2, const char *a3, const char *a4)
{
    char out[4200], err[4200];
    snprintf(out, sizeof out, "%s.out", dir);
    snprintf(err, sizeof err, "%s.err", dir);
    (void)s;
    pid_t pid = bg_in(dir, out, err, "serve", "--listen", "127.0.0.1:0", a1, a2, a3, a4, NULL);
    wait_for(err, "listening on ws://127.0.0.1:", pid);
    char *log = tu_slurp(err, NULL);
    int port = 0;
    ck_assert_int_eq(sscanf(strstr(log, "listening on ws://127.0.0.1:"),
                            "listening on ws://127.0.0.1:%d", &port),
                     1);
    free(log);
    snprintf(url, n, "ws://127.0.0.1:%d", port);
    return pid;
}

/* GET path from 127.0.0.1:port; the whole answer in out (NUL-terminated). */
static void http_get(int port, const char *path, char *out, size_t n)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    char req[256];
    int len = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", path);
    ck_assert_int_eq(write(fd, req, (size_t)len), len);
    struct timeval tv = {5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    size_t got = 0;
    ssize_t r;
    while (got + 1 < n && (r = read(fd, out + got, n - 1 - got)) > 0) {
        got += (size_t)r;
        out[got] = 0;
        if (strstr(out, "\r\n\r\n") && (strstr(out, "\nok\n") || strstr(out, "</html>") ||
                                          strstr(out, "draining\n")))
            break;
    }
    out[got] = 0;
    close(fd);
}

/* crdtdb serve: GET /healthz answers 200 "ok" (for a load balancer); a
 * second server on the same data directory is refused with the first's
 * pid; SIGTERM drains: clients get "going away", the server exits 0. */
START_TEST(serve_health_lock_and_drain)
{
    sandbox s;
    sb_init(&s);
    char dir[4200], cdir[4200], url[64], werr[4300], wout[4300], serr[4300], page[2048];
    path_in(&s, dir, sizeof dir, "srv");
    path_in(&s, cdir, sizeof cdir, "cli");
    ok_in(&s, dir, NULL, "init", NULL);
    ok_in(&s, cdir, NULL, "init", NULL);
    ok_in(&s, cdir, "", "create", "m", "--collections", "a", NULL);
    pid_t srv = serve_bg(&s, dir, url, sizeof url, "--collections", "a", NULL, NULL);
    int port = atoi(strrchr(url, ':') + 1);
    http_get(port, "/healthz", page, sizeof page);
    ck_assert_msg(strstr(page, " 200 ") && strstr(page, "\r\n\r\nok\n"), "%s", page);
    http_get(port, "/nothing", page, sizeof page);
    ck_assert_msg(strstr(page, " 404 ") != NULL, "%s", page);

    ck_assert_int_eq(cli_in(&s, dir, "serve", "--listen", "127.0.0.1:0", NULL), 1);
    ck_assert_msg(strstr(s.err, "a crdtdb serve (pid ") && strstr(s.err, "holds"), "%s", s.err);
    ck_assert_int_eq(cli_in(&s, dir, "drop", "m", NULL), 1); /* not from under it */
    ck_assert_msg(strstr(s.err, "holds") && strstr(s.err, "stop it first"), "%s", s.err);

    snprintf(wout, sizeof wout, "%s.watch.out", cdir);
    snprintf(werr, sizeof werr, "%s.watch.err", cdir);
    pid_t w = bg_in(cdir, wout, werr, "sync", url, "--db", "m", "--watch", NULL);
    snprintf(serr, sizeof serr, "%s.err", dir);
    wait_for(serr, "ready, two-way", srv);
    kill(srv, SIGTERM);
    ck_assert_int_eq(tu_wait_exit(srv, 15000, "crdtdb serve"), 0);
    ck_assert(file_has(serr, "draining: 1 connections"));
    kill(w, SIGTERM);
    tu_wait_exit(w, 15000, "crdtdb sync");
    sb_free(&s);
}
END_TEST

/* serve --expire-every: a database whose time-to-live passes while a
 * client is connected: the client is told and clears its copy, the server
 * archives and drops it, and refuses it from then on. */
START_TEST(serve_expires_databases)
{
    sandbox s;
    sb_init(&s);
    char dir[4200], cdir[4200], arch[4200], url[64], werr[4300], wout[4300], serr[4300];
    char file[4400];
    path_in(&s, dir, sizeof dir, "srv");
    path_in(&s, cdir, sizeof cdir, "cli");
    path_in(&s, arch, sizeof arch, "archive");
    ok_in(&s, dir, NULL, "init", NULL);
    ok_in(&s, dir, "", "create", "old", "--collections", "a", NULL);
    ok_in(&s, dir, "", "create", "keep", "--collections", "a", NULL);
    ok_in(&s, dir, "", "add", "old", "a", "r1", "{\"x\":1}", NULL);
    ok_in(&s, dir, NULL, "expire", "old", "--after", "3s", "--closed", NULL);
    ok_in(&s, cdir, NULL, "init", NULL);
    ok_in(&s, cdir, "", "create", "old", "--collections", "a", NULL);
    char sout[4300];
    snprintf(serr, sizeof serr, "%s.err", dir);
    snprintf(sout, sizeof sout, "%s.out", dir);
    pid_t v = bg_in(dir, sout, serr, "serve", "--listen", "127.0.0.1:0", "--collections", "a",
                    "--expire-every", "1", "--archive", arch, NULL);
    wait_for(serr, "listening on ws://127.0.0.1:", v);
    char *log = tu_slurp(serr, NULL);
    int port = 0;
    ck_assert_int_eq(sscanf(strstr(log, "listening on ws://127.0.0.1:"), "listening on ws://127.0.0.1:%d", &port), 1);
    free(log);
    snprintf(url, sizeof url, "ws://127.0.0.1:%d", port);
    snprintf(wout, sizeof wout, "%s.watch.out", cdir);
    snprintf(werr, sizeof werr, "%s.watch.err", cdir);
    pid_t w = bg_in(cdir, wout, werr, "sync", url, "--db", "old", "--watch", NULL);
    wait_for(serr, "ready, two-way", v);
    ok_in(&s, cdir, "{\"id\":\"r1\",\"x\":1}\n", "get", "old", "a", "r1", NULL); /* synced */
    wait_for(serr, "expired: dropped, archived to", v);
    ck_assert(file_has(serr, "expired: ending its sessions"));
    for (int i = 0; i < 500; i++) { /* told: the client cleared its copy */
        if (cli_in(&s, cdir, "query", "old", "a", NULL) == 0 && strcmp(s.out, "[]\n") == 0)
            break;
        tu_sleep_ms(20);
    }
    ck_assert_str_eq(s.out, "[]\n");
    ok_in(&s, dir, "keep\n", "dbs", NULL);
    snprintf(file, sizeof file, "%s/6f6c64.crdtdb", arch); /* hex of "old" */
    ck_assert_int_eq(access(file, R_OK), 0);
    wait_for(serr, "db 'old' refused: 403: it expired here", v); /* the client's reconnects */
    kill(w, SIGTERM);
    tu_wait_exit(w, 15000, "crdtdb sync");
    kill(v, SIGTERM);
    ck_assert_int_eq(tu_wait_exit(v, 15000, "crdtdb serve"), 0);
    sb_free(&s);
}
END_TEST

/* sync says at once why it cannot connect, and to where; --timeout bounds
 * a one-shot sync; --watch keeps retrying and says so. */
START_TEST(sync_fails_fast_and_says_why)
{
    pair p;
    pair_init(&p);
    sandbox *s = &p.s;
    char url[64], want[128], werr[4200], wout[4200];
    int port;
    local_port(0, &port);
    snprintf(url, sizeof url, "ws://127.0.0.1:%d", port);

    /* nothing listens: at once, not after 30 s */
    uint64_t t0 = tu_mono_ms();
    ck_assert_int_eq(cli_in(s, p.a, "sync", url, "--db", "game", NULL), 1);
    ck_assert_uint_lt(tu_mono_ms() - t0, 10000);
    snprintf(want, sizeof want, ": 127.0.0.1:%d (is `crdtdb serve` running there?)\n", port);
    ck_assert_msg(starts_with(s->err, "crdtdb: connection refused") && strstr(s->err, want) &&
                      strchr(s->err, '\n') == s->err + strlen(s->err) - 1,
                  "%s", s->err);
    ck_assert_str_eq(s->out, "");

    /* a listener that never answers: --timeout bounds the sync */
    int fd = local_port(1, &port);
    snprintf(url, sizeof url, "ws://127.0.0.1:%d", port);
    t0 = tu_mono_ms();
    ck_assert_int_eq(cli_in(s, p.a, "sync", url, "--db", "game", "--timeout", "1", NULL), 1);
    uint64_t took = tu_mono_ms() - t0;
    ck_assert_uint_ge(took, 1000);
    ck_assert_uint_lt(took, 15000);
    ck_assert_str_eq(s->err, "crdtdb: could not sync within 1 second (--timeout SECONDS waits "
                             "longer)\n");
    close(fd);
    ck_assert_int_eq(cli_in(s, p.a, "sync", url, "--db", "game", "--timeout", "0", NULL), 2);
    ck_assert_int_eq(cli_in(s, p.a, "sync", url, "--db", "game", "--timeout", "x", NULL), 2);
    ck_assert_int_eq(cli_in(s, p.a, "sync", url, "--db", "game", "--watch", "--timeout", "5",
                            NULL),
                     2);

    /* --watch never gives up, and says each failure and the retry */
    local_port(0, &port);
    snprintf(url, sizeof url, "ws://127.0.0.1:%d", port);
    path_in(s, werr, sizeof werr, "watch.err");
    path_in(s, wout, sizeof wout, "watch.out");
    pid_t watch = bg_in(p.a, wout, werr, "sync", url, "--db", "game", "--watch", NULL);
    snprintf(want, sizeof want, "127.0.0.1:%d; retrying\n", port);
    int lines = 0;
    for (int i = 0; i < 1000 && lines < 3; i++) {
        ck_assert_msg(waitpid(watch, NULL, WNOHANG) == 0, "sync --watch gave up");
        tu_sleep_ms(10);
        if (access(werr, R_OK) != 0)
            continue;
        char *err = tu_slurp(werr, NULL);
        lines = 0;
        for (const char *l = strstr(err, want); l; l = strstr(l + 1, want))
            lines++;
        if (lines >= 1)
            ck_assert_msg(starts_with(err, "sync error: connection refused"), "%s", err);
        free(err);
    }
    ck_assert_int_ge(lines, 3);
    kill(watch, SIGTERM);
    ck_assert_int_eq(tu_wait_exit(watch, 5000, "crdtdb"), 0);

    /* an HTTP refusal: a server that takes tokens, and none given */
    char srv[4200], secret[4200];
    path_in(s, srv, sizeof srv, "S");
    path_in(s, secret, sizeof secret, "secret");
    tu_spit(secret, "0123456789abcdef0123456789abcdef0123\n", 37);
    ok_in(s, srv, NULL, "init", NULL);
    pid_t server = serve_bg(s, srv, url, sizeof url, "--collections", "players,moves",
                            "--jwt-secret-file", secret);
    t0 = tu_mono_ms();
    ck_assert_int_eq(cli_in(s, p.a, "sync", url, "--db", "game", NULL), 1);
    ck_assert_uint_lt(tu_mono_ms() - t0, 10000);
    ck_assert_msg(strstr(s->err, "401") && strstr(s->err, "(check --token-file"), "%s", s->err);
    kill(server, SIGTERM);
    ck_assert_int_eq(tu_wait_exit(server, 5000, "crdtdb"), 0);

    /* refused after the hello (a copied environment: EFORK): a one-shot
     * sync stops at once, saying why, instead of asking again till its
     * timeout */
    path_in(s, srv, sizeof srv, "S2"); /* its own log to find the port in */
    ok_in(s, srv, NULL, "init", NULL);
    server = serve_bg(s, srv, url, sizeof url, "--collections", "players,moves", NULL, NULL);
    char copy[4200];
    path_in(s, copy, sizeof copy, "A2");
    ok_in(s, p.a, "", "add", "game", "players", "ann", "{\"hp\":1}", NULL);
    const char *cp[] = {"cp", "-a", p.a, copy, NULL};
    ck_assert_int_eq(tu_run_cmd(cp, NULL), 0);
    ok_in(s, p.a, "", "add", "game", "players", "bob", "{\"hp\":2}", NULL);
    ck_assert_int_eq(cli_in(s, p.a, "sync", url, "--db", "game", NULL), 0);
    ok_in(s, copy, "", "add", "game", "players", "cy", "{\"hp\":3}", NULL);
    t0 = tu_mono_ms();
    ck_assert_int_eq(cli_in(s, copy, "sync", url, "--db", "game", NULL), 1);
    ck_assert_uint_lt(tu_mono_ms() - t0, 10000);
    ck_assert_msg(strstr(s->err, "server error: ") && strstr(s->err, "two different histories") &&
                      strstr(s->err, "crdtdb: "),
                  "%s", s->err);
    kill(server, SIGTERM);
    ck_assert_int_eq(tu_wait_exit(server, 5000, "crdtdb"), 0);
    sb_free(s);
}
END_TEST

/* A copy its server grants server-to-client only stays read-only after
 * the sync, in every later process. */
START_TEST(server_to_client_copy_stays_read_only)
{
    pair p;
    pair_init(&p);
    sandbox *s = &p.s;
    char srv[4200], url[64];
    path_in(s, srv, sizeof srv, "S");
    ok_in(s, srv, NULL, "init", NULL);
    ok_in(s, srv, "", "create", "game", "--collections", "players,moves", NULL);
    ok_in(s, srv, "", "add", "game", "players", "ann", "{\"hp\":10}", NULL);
    pid_t server = serve_bg(s, srv, url, sizeof url, "--mode", "server-to-client", NULL, NULL);
    ck_assert_int_eq(cli_in(s, p.a, "sync", url, "--db", "game", NULL), 0);
    ok_in(s, p.a, "{\"id\":\"ann\",\"hp\":10}\n", "get", "game", "players", "ann", NULL);
    ck_assert_int_eq(cli_in(s, p.a, "update", "game", "players", "ann", "{\"hp\":1}", NULL), 1);
    ck_assert_msg(starts_with(s->err, "crdtdb: Read only access"), "%s", s->err);
    ck_assert_int_eq(cli_in(s, p.a, "add", "game", "moves", "m1", "{}", NULL), 1);
    ck_assert_msg(starts_with(s->err, "crdtdb: Read only access"), "%s", s->err);
    ok_in(s, p.a, "{\"id\":\"ann\",\"hp\":10}\n", "get", "game", "players", "ann", NULL);
    /* a second server on that port says what to do */
    char listen[64];
    snprintf(listen, sizeof listen, "%s", url + strlen("ws://"));
    ck_assert_int_eq(cli_in(s, p.b, "serve", "--listen", listen, NULL), 1);
    ck_assert_msg(strstr(s->err, "(is another server on that port?"), "%s", s->err);
    kill(server, SIGTERM);
    ck_assert_int_eq(tu_wait_exit(server, 5000, "crdtdb"), 0);
    sb_free(s);
}
END_TEST

static Suite *cli_suite(void)
{
    Suite *s = suite_create("cli");
    TCase *tc = tcase_create("cli");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, init_prints_replica_id);
    tcase_add_test(tc, stats_and_backup);
    tcase_add_test(tc, expire_expired_drop);
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
    tcase_add_test(tc, export_import_copies_database);
    tcase_add_test(tc, usb_round_trips_converge);
    tcase_add_test(tc, import_rejects_bad_input);
    tcase_add_test(tc, serve_and_sync_converge);
    tcase_add_test(tc, peered_servers_and_tls);
    tcase_add_test(tc, serve_names_the_key_that_fits);
    tcase_add_test(tc, add_all_and_json_from_stdin);
    tcase_add_test(tc, sync_fails_fast_and_says_why);
    tcase_add_test(tc, serve_health_lock_and_drain);
    tcase_add_test(tc, serve_expires_databases);
    tcase_add_test(tc, server_to_client_copy_stays_read_only);
    suite_add_tcase(s, tc);
    /* a process per command and option: about 1,500, slow under ASan on a
     * loaded machine */
    TCase *every = tcase_create("every_option");
    tcase_set_timeout(every, 600);
    tcase_add_test(every, version_and_help_list_every_option);
    suite_add_tcase(s, every);
    return s;
}

int main(void)
{
    return tu_run(cli_suite());
}
