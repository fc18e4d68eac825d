/*
 * crdtdb: command-line access to an environment, a thin layer over the
 * public API.  Output is built in memory and written only on success, so a
 * failing command prints nothing on stdout (except import, which reports
 * each delta as it is applied: those stay applied).
 *
 * main.c: option parsing, the command table and the data commands;
 * sync.c: export, import and peers; serve.c: serve and sync (WebSocket).
 */
#include "cli.h"
#include "options.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Set by SIGINT/SIGTERM while watching; signals leave no other way. */
static volatile sig_atomic_t stop_requested;

typedef struct command {
    const char *name;
    const char *synopsis;
    const char *summary; /* one line for the command list */
    const char *help;
    int min_pos, max_pos; /* max_pos -1: no limit */
    unsigned opts;
    int (*run)(const char *dir, const args *a);
} command;

int fail(const char *msg, int rc)
{
    return fail_hint(msg, rc, NULL);
}

int fail_hint(const char *msg, int rc, const char *hint)
{
    fprintf(stderr, "crdtdb: %s%s%s%s\n", msg && *msg ? msg : crdtdb_strerror(rc),
            hint ? " (" : "", hint ? hint : "", hint ? ")" : "");
    return EXIT_FAILURE;
}

int fail_db(crdtdb_db *db, int rc)
{
    if (rc == CRDTDB_EROFS)
        return fail_hint(crdtdb_db_errmsg(db), rc,
                         "this copy is read-only: its server grants server-to-client sync; "
                         "a sync granted two-way lifts it");
    if (rc != CRDTDB_ENOCOLL)
        return fail(crdtdb_db_errmsg(db), rc);
    /* a typo, most likely: name the ones there are */
    char hint[1024];
    size_t n = (size_t)snprintf(hint, sizeof hint, "the database has collections: ");
    for (size_t i = 0; i < crdtdb_db_collection_count(db) && n < sizeof hint; i++)
        n += (size_t)snprintf(hint + n, sizeof hint - n, "%s%s", i ? ", " : "",
                              crdtdb_db_collection_name(db, i));
    if (n >= sizeof hint)
        memcpy(hint + sizeof hint - 4, "...", 4);
    return fail_hint(crdtdb_db_errmsg(db), rc, hint);
}

/* Writes s as a JSON string.  Ids are valid UTF-8 (the library checks), so
 * only quotes, backslashes and control characters need escaping. */
static void put_json_str(FILE *f, const char *s)
{
    putc('"', f);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c < 0x20)
            fprintf(f, "\\u%04x", c);
        else
            putc(c, f);
    }
    putc('"', f);
}

/* Closes the memory stream and copies what it holds to stdout. */
int emit(FILE *mem, char **text, size_t *len)
{
    int ok = fclose(mem) == 0 && *text;
    if (ok)
        fwrite(*text, 1, *len, stdout);
    free(*text);
    if (!ok)
        return fail(NULL, CRDTDB_ENOMEM);
    return fflush(stdout) == 0 ? 0 : fail(strerror(errno), CRDTDB_EIO);
}

/* All of standard input, NUL-terminated, malloc'd into *text; 0 or
 * EXIT_FAILURE (reported). */
static int read_stdin(char **text, size_t *len)
{
    size_t cap = 65536, n = 0, got;
    char *buf = malloc(cap);
    while (buf && (got = fread(buf + n, 1, cap - n - 1, stdin)) > 0) {
        n += got;
        if (n + 1 == cap) {
            char *bigger = cap > SIZE_MAX / 2 ? NULL : realloc(buf, cap * 2);
            if (!bigger)
                free(buf);
            buf = bigger;
            cap *= 2;
        }
    }
    if (!buf)
        return fail(NULL, CRDTDB_ENOMEM);
    if (ferror(stdin)) {
        free(buf);
        return fail_hint(strerror(errno), CRDTDB_EIO, "reading the JSON from standard input");
    }
    buf[n] = '\0';
    *text = buf;
    *len = n;
    return 0;
}

/* The JSON of argument arg ("-": standard input, for records too large
 * for a command line) as msgpack in mp; 0 or EXIT_FAILURE (reported). */
static int parse_json(const char *arg, crdtdb_buf *mp)
{
    char err[256], *text = (char *)arg;
    size_t len = strlen(arg);
    int from_stdin = strcmp(arg, "-") == 0;
    if (from_stdin && read_stdin(&text, &len))
        return EXIT_FAILURE;
    int rc = crdtdb_json_to_msgpack(text, len, 0, mp, err, sizeof err);
    if (from_stdin)
        free(text);
    if (!rc)
        return 0;
    /* the shell eats unquoted JSON's quotes */
    return from_stdin ? fail_hint(err, rc, "in the JSON read from standard input")
                      : fail_hint(err, rc, "quote the JSON for the shell: '{\"a\":1}', or give - "
                                           "and pipe it in");
}

/* ------------------------------------------------------------- opening */

static int no_env(const char *dir)
{
    fprintf(stderr, "crdtdb: no environment at %s (run crdtdb init)\n", dir);
    return EXIT_FAILURE;
}

/* Only init creates environments; elsewhere a typo in DIR should not. */
int env_exists(const char *dir)
{
    struct stat st;
    if (stat(dir, &st) == 0 && S_ISDIR(st.st_mode))
        return 1;
    no_env(dir);
    return 0;
}

int open_env(const char *dir, unsigned flags, crdtdb_env **env)
{
    crdtdb_env_options opts;
    crdtdb_env_options_init(&opts);
    opts.flags |= flags;
    int rc = crdtdb_env_open(dir, &opts, env);
    if (rc == CRDTDB_EROFS && (flags & CRDTDB_ENV_RDONLY))
        return no_env(dir); /* read-only open of an uninitialised dir */
    return rc ? fail(NULL, rc) : 0;
}

int fail_env(crdtdb_env *env, int rc, const char *id)
{
    if (rc != CRDTDB_ENODB || !id)
        return fail(crdtdb_env_errmsg(env), rc);
    char hint[CRDTDB_ID_MAX + 64];
    snprintf(hint, sizeof hint, "create it with: crdtdb create %s --collections A,B", id);
    return fail_hint(crdtdb_env_errmsg(env), rc, hint);
}

/* Opens the existing environment at dir and database id in it. */
int open_db(const char *dir, const char *id, crdtdb_env **env,
            crdtdb_db **db)
{
    *db = NULL;
    if (!env_exists(dir) || open_env(dir, 0, env))
        return EXIT_FAILURE;
    int rc = crdtdb_db_open(*env, id, db);
    if (rc) {
        fail_env(*env, rc, id);
        crdtdb_env_close(*env);
        return EXIT_FAILURE;
    }
    return 0;
}

int close_db(crdtdb_env *env, crdtdb_db *db, int status)
{
    crdtdb_db_close(db);
    crdtdb_env_close(env);
    return status;
}

/* ------------------------------------------------------------ commands */

void hex_encode(const uint8_t *b, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        *out++ = digits[b[i] >> 4];
        *out++ = digits[b[i] & 15];
    }
    *out = '\0';
}

/* Prints the replica id in hex and closes env. */
static int print_replica_id(crdtdb_env *env)
{
    uint8_t id[CRDTDB_REPLICA_ID_BYTES];
    char text[2 * CRDTDB_REPLICA_ID_BYTES + 1];
    crdtdb_env_replica_id(env, id);
    hex_encode(id, sizeof id, text);
    puts(text);
    crdtdb_env_close(env);
    return fflush(stdout) == 0 ? 0 : fail(strerror(errno), CRDTDB_EIO);
}

static int cmd_init(const char *dir, const args *a)
{
    crdtdb_env *env;
    (void)a;
    return open_env(dir, 0, &env) ? EXIT_FAILURE : print_replica_id(env);
}

static int cmd_id(const char *dir, const args *a)
{
    crdtdb_env *env;
    (void)a;
    if (!env_exists(dir) || open_env(dir, CRDTDB_ENV_RDONLY, &env))
        return EXIT_FAILURE;
    return print_replica_id(env);
}

static int cmd_reset_id(const char *dir, const args *a)
{
    crdtdb_env *env;
    (void)a;
    if (!env_exists(dir) || open_env(dir, 0, &env))
        return EXIT_FAILURE;
    int rc = crdtdb_env_reset_id(env);
    if (rc) {
        fail(crdtdb_env_errmsg(env), rc);
        crdtdb_env_close(env);
        return EXIT_FAILURE;
    }
    return print_replica_id(env);
}

static int cmd_create(const char *dir, const args *a)
{
    crdtdb_env *env;
    crdtdb_db *db = NULL;
    if (!a->collections) {
        fprintf(stderr, "crdtdb: create needs --collections A,B,...\n");
        return EXIT_USAGE;
    }
    /* Split a copy of "A,B,C" in place; n commas make n + 1 names. */
    size_t n = 1;
    for (const char *c = a->collections; *c; c++)
        n += *c == ',';
    char *list = strdup(a->collections);
    const char **names = malloc(n * sizeof *names);
    if (!list || !names) {
        free(list);
        free(names);
        return fail(NULL, CRDTDB_ENOMEM);
    }
    names[0] = list;
    for (size_t i = 1; (list = strchr(list, ',')) != NULL; i++) {
        *list++ = '\0';
        names[i] = list;
    }
    int status = env_exists(dir) ? open_env(dir, 0, &env) : EXIT_FAILURE;
    if (status == 0) {
        int rc = crdtdb_db_create(env, a->pos[0], names, n, &db);
        status = rc ? fail(crdtdb_env_errmsg(env), rc) : 0;
        close_db(env, db, 0);
    }
    free((char *)names[0]);
    free(names);
    return status;
}

static int print_db(void *ctx, const char *id)
{
    fprintf(ctx, "%s\n", id);
    return 0;
}

static int cmd_dbs(const char *dir, const args *a)
{
    crdtdb_env *env;
    char *text = NULL;
    size_t len = 0;
    (void)a;
    if (!env_exists(dir) || open_env(dir, 0, &env))
        return EXIT_FAILURE;
    FILE *mem = open_memstream(&text, &len);
    if (!mem) {
        crdtdb_env_close(env);
        return fail(NULL, CRDTDB_ENOMEM);
    }
    int rc = crdtdb_db_list(env, print_db, mem);
    int status = rc ? fail(crdtdb_env_errmsg(env), rc) : 0;
    crdtdb_env_close(env);
    if (status) {
        fclose(mem);
        free(text);
        return status;
    }
    return emit(mem, &text, &len);
}

/* add and update: DB COLL ID JSON. */
static int write_record(const char *dir, const args *a, int update)
{
    crdtdb_env *env;
    crdtdb_db *db;
    crdtdb_buf mp = CRDTDB_BUF_INIT;
    int status = parse_json(a->pos[3], &mp);
    if (status == 0 && (status = open_db(dir, a->pos[0], &env, &db)) == 0) {
        int rc = update ? crdtdb_db_update(db, NULL, a->pos[1], a->pos[2],
                                           mp.data, mp.len)
                        : crdtdb_db_add(db, NULL, a->pos[1], a->pos[2],
                                        mp.data, mp.len);
        if (rc == CRDTDB_ENOTFOUND)
            rc = fail_hint(crdtdb_db_errmsg(db), rc, "crdtdb add creates a record");
        else if (rc)
            rc = fail_db(db, rc);
        status = close_db(env, db, rc);
    }
    crdtdb_buf_free(&mp);
    return status;
}

static int cmd_add(const char *dir, const args *a)
{
    return write_record(dir, a, 0);
}

static int cmd_update(const char *dir, const args *a)
{
    return write_record(dir, a, 1);
}

/* DB COLL JSON: records by id, in one transaction. */
static int cmd_add_all(const char *dir, const args *a)
{
    crdtdb_env *env;
    crdtdb_db *db;
    crdtdb_buf mp = CRDTDB_BUF_INIT;
    int status = parse_json(a->pos[2], &mp);
    if (status == 0 && (status = open_db(dir, a->pos[0], &env, &db)) == 0) {
        int rc = crdtdb_db_add_all(db, NULL, a->pos[1], mp.data, mp.len);
        status = close_db(env, db, rc ? fail_db(db, rc) : 0);
    }
    crdtdb_buf_free(&mp);
    return status;
}

static int cmd_remove(const char *dir, const args *a)
{
    crdtdb_env *env;
    crdtdb_db *db;
    if (open_db(dir, a->pos[0], &env, &db))
        return EXIT_FAILURE;
    /* an absent record is no error: the replicated store's remove */
    int rc = crdtdb_db_remove(db, NULL, a->pos[1], a->pos[2]);
    return close_db(env, db, rc ? fail_db(db, rc) : 0);
}

/* Record id (msgpack value, len bytes) as JSON text in json, the way the
 * DataStore shows records: {"id": id, ...fields}, the record id first and
 * in place of any field named "id" (crdtdb_record_with_id).  rec is
 * scratch space.  0 or an error code. */
static int record_json(const char *id, const uint8_t *value, size_t len, crdtdb_buf *rec,
                       crdtdb_buf *json)
{
    int rc = crdtdb_record_with_id(id, value, len, rec);
    return rc ? rc : crdtdb_msgpack_to_json(rec->data, rec->len, json);
}

static int cmd_get(const char *dir, const args *a)
{
    crdtdb_env *env;
    crdtdb_db *db;
    crdtdb_buf mp = CRDTDB_BUF_INIT, rec = CRDTDB_BUF_INIT, json = CRDTDB_BUF_INIT;
    int found = 0, status;
    if (open_db(dir, a->pos[0], &env, &db))
        return EXIT_FAILURE;
    int rc = crdtdb_db_get_by_id(db, NULL, a->pos[1], a->pos[2], &mp, &found);
    if (rc)
        status = fail_db(db, rc);
    else if (!found)
        status = fail_hint(crdtdb_db_errmsg(db), CRDTDB_ENOTFOUND,
                           "crdtdb query DB COLL lists the records");
    else if ((rc = record_json(a->pos[2], mp.data, mp.len, &rec, &json)) != 0)
        status = fail(NULL, rc);
    else
        status = printf("%s\n", (char *)json.data) < 0 || fflush(stdout)
                     ? fail(strerror(errno), CRDTDB_EIO)
                     : 0;
    crdtdb_buf_free(&mp);
    crdtdb_buf_free(&rec);
    crdtdb_buf_free(&json);
    return close_db(env, db, status);
}

typedef struct query_ctx {
    FILE *out;
    crdtdb_buf rec, json;
    size_t n;
    int rc;
} query_ctx;

static int print_match(void *ctx, const char *id, const uint8_t *value,
                       size_t len)
{
    query_ctx *q = ctx;
    if ((q->rc = record_json(id, value, len, &q->rec, &q->json)) != 0)
        return 1;
    fputs(q->n++ ? "," : "", q->out);
    fputs((const char *)q->json.data, q->out);
    return 0;
}

static int cmd_query(const char *dir, const args *a)
{
    crdtdb_env *env;
    crdtdb_db *db;
    crdtdb_buf crit = CRDTDB_BUF_INIT;
    query_ctx q = {NULL, CRDTDB_BUF_INIT, CRDTDB_BUF_INIT, 0, 0};
    char *text = NULL;
    size_t len = 0;
    if (a->npos > 2 && parse_json(a->pos[2], &crit))
        return EXIT_FAILURE;
    if (open_db(dir, a->pos[0], &env, &db)) {
        crdtdb_buf_free(&crit);
        return EXIT_FAILURE;
    }
    int status = 0;
    if (!(q.out = open_memstream(&text, &len)))
        status = fail(NULL, CRDTDB_ENOMEM);
    if (status == 0) {
        fputc('[', q.out);
        int rc = crdtdb_db_query(db, NULL, a->pos[1],
                                 a->npos > 2 ? crit.data : NULL, crit.len,
                                 print_match, &q);
        if (q.rc)
            status = fail(NULL, q.rc);
        else if (rc)
            status = fail_db(db, rc);
        fputs("]\n", q.out);
        if (status == 0) {
            status = emit(q.out, &text, &len);
        } else {
            fclose(q.out);
            free(text);
        }
    }
    crdtdb_buf_free(&crit);
    crdtdb_buf_free(&q.rec);
    crdtdb_buf_free(&q.json);
    return close_db(env, db, status);
}

void print_event(void *ctx, const crdtdb_event *ev)
{
    static const char *const names[] = {
        [CRDTDB_EVENT_ADD] = "add",
        [CRDTDB_EVENT_UPDATE] = "update",
        [CRDTDB_EVENT_REMOVE] = "remove",
        [CRDTDB_EVENT_MULTIPLE_CHANGES] = "multiple_changes",
        [CRDTDB_EVENT_INVALIDATE_ALL] = "invalidate_all"};
    watch_ctx *w = ctx;
    if (w->remaining == 0 || w->rc || ev->type < CRDTDB_EVENT_ADD ||
        ev->type > CRDTDB_EVENT_INVALIDATE_ALL)
        return;
    if (ev->value && (w->rc = ev->id ? record_json(ev->id, ev->value, ev->len, &w->rec, &w->json)
                                     : crdtdb_msgpack_to_json(ev->value, ev->len, &w->json)) != 0)
        return;
    printf("{\"event\":\"%s\",\"collection\":", names[ev->type]);
    if (ev->coll)
        put_json_str(stdout, ev->coll);
    else
        fputs("null", stdout);
    if (ev->id) {
        fputs(",\"id\":", stdout);
        put_json_str(stdout, ev->id);
    }
    if (ev->value)
        printf(",\"value\":%s", (char *)w->json.data);
    fputs("}\n", stdout);
    if (fflush(stdout) != 0)
        w->rc = CRDTDB_EIO;
    if (w->remaining > 0)
        w->remaining--;
}

static void on_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

static int cmd_watch(const char *dir, const args *a)
{
    crdtdb_env *env;
    crdtdb_db *db;
    crdtdb_observer *obs;
    watch_ctx w = {CRDTDB_BUF_INIT, CRDTDB_BUF_INIT, -1, 0};
    if (a->count) {
        char *end;
        errno = 0;
        w.remaining = strtol(a->count, &end, 10);
        if (errno || end == a->count || *end || w.remaining < 0) {
            fprintf(stderr, "crdtdb: --count needs a number >= 0\n");
            return EXIT_USAGE;
        }
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESTART; /* only the nanosleep should see EINTR */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    if (open_db(dir, a->pos[0], &env, &db))
        return EXIT_FAILURE;
    int rc = crdtdb_db_observe(db, a->npos > 1 ? a->pos[1] : NULL,
                               print_event, &w, &obs);
    if (rc)
        return close_db(env, db, fail_db(db, rc));
    const struct timespec tick = {0, 50 * 1000 * 1000};
    while (!stop_requested && w.remaining != 0 && !w.rc && !rc) {
        rc = crdtdb_db_poll(db, NULL);
        if (!rc && w.remaining != 0 && !w.rc)
            nanosleep(&tick, NULL); /* a signal cuts it short */
    }
    int status = 0;
    if (w.rc)
        status = fail(NULL, w.rc);
    else if (rc)
        status = fail(crdtdb_db_errmsg(db), rc);
    crdtdb_observer_close(obs);
    crdtdb_buf_free(&w.rec);
    crdtdb_buf_free(&w.json);
    return close_db(env, db, status);
}

/* ---------------------------------------------------------------- main */

static const command commands[] = {
    {"init", "", "create the environment; print its replica id",
     "Create the environment if needed and print its replica id.", 0, 0, 0,
     cmd_init},
    {"id", "", "print the replica id",
     "Print the replica id of an existing environment.", 0, 0, 0, cmd_id},
    {"reset-id", "", "give this environment a new replica id",
     "Give the environment a new replica identity and print it.  Run it on\n"
     "a copied data directory: two copies writing under one identity fork\n"
     "its history, and peers refuse their deltas ('replica history\n"
     "diverged').  The data stays; peers see a new replica from now on.",
     0, 0, 0, cmd_reset_id},
    {"create", "DB --collections A,B,...", "create a database",
     "Create database DB with the named collections.", 1, 1,
     OPT_COLLECTIONS, cmd_create},
    {"dbs", "", "list the databases", "List the databases, one per line.", 0,
     0, 0, cmd_dbs},
    {"add", "DB COLL ID JSON|-", "add or replace a record",
     "Add record ID (a JSON object), replacing any existing one.  '-' reads\n"
     "the JSON from standard input (a record too large for a command line).",
     4, 4, 0, cmd_add},
    {"add-all", "DB COLL JSON|-", "add or replace records in one transaction",
     "Add the records of a JSON object from record id to record, each\n"
     "replacing any existing one, all in one transaction: all or none.\n"
     "'-' reads the JSON from standard input.",
     3, 3, 0, cmd_add_all},
    {"update", "DB COLL ID JSON|-", "deep-merge changes into a record",
     "Deep-merge the JSON object into existing record ID.  '-' reads the\n"
     "JSON from standard input.",
     4, 4, 0, cmd_update},
    {"remove", "DB COLL ID", "remove a record",
     "Remove record ID.  Removing a record that is not there succeeds.", 3, 3,
     0, cmd_remove},
    {"get", "DB COLL ID", "print a record",
     "Print record ID as one line of JSON, {\"id\":ID,...its fields}: the\n"
     "record id comes first, and stands in for a field named \"id\" of the\n"
     "record, if it has one (records carry their id, as in query and watch).",
     3, 3, 0, cmd_get},
    {"query", "DB COLL [CRITERIA]", "print matching records",
     "Print the matching records as a JSON array, ordered by id, each as\n"
     "get prints it: {\"id\":ID,...}.  CRITERIA is a JSON object of field\n"
     "values ({\"a\":{\"b\":1}} means a.b == 1) or a list of conditions\n"
     "[[\"a.b\",\">=\",1],...] with ops == != < <= > >=.  Default: all.",
     2, 3, 0, cmd_query},
    {"watch", "DB [COLL] [--count N]", "print changes as they happen",
     "Print change events as JSON lines until interrupted, or after N\n"
     "events: {\"event\":...,\"collection\":...,\"id\":...,\"value\":...};\n"
     "the value is the record as get prints it, with its id.",
     1, 2, OPT_COUNT, cmd_watch},
    {"export", "DB [--since SEQ | --for PEER_ID] -o|--output FILE",
     "write changes to a file, for import elsewhere",
     "Write the changes of DB after local sequence SEQ (default 0: all) to\n"
     "FILE as signed deltas, to carry to another replica and import there.\n"
     "With --for PEER_ID (a 64-digit hex replica id, as 'crdtdb id' prints\n"
     "it), start where that peer is known to have everything of ours, and\n"
     "leave out what it sent us; each delta also tells it how much\n"
     "of its changes we have.  FILE (-o or --output) is replaced atomically;\n"
     "'-o -' writes to standard output.  A summary goes to standard error.",
     1, 1, OPT_SINCE | OPT_FOR | OPT_OUTPUT, cmd_export},
    {"import", "FILE [FILE...]", "apply deltas written by export",
     "Verify and apply the deltas in each FILE ('-': standard input), each\n"
     "to the database it names, printing one line per delta.  Each delta is\n"
     "applied atomically: on an error the command stops and exits 1, and\n"
     "the deltas before the failing one stay applied.  Importing the same\n"
     "deltas again, or in any order, is harmless.",
     1, -1, 0, cmd_import},
    {"peers", "DB", "list the replicas DB has exchanged deltas with",
     "Print one line per known peer of DB: its replica id, the last of its\n"
     "own sequences we have everything up to (received), and the last of\n"
     "ours it is known to have everything up to (acked).",
     1, 1, 0, cmd_peers},
    {"serve", "[--listen HOST:PORT] [--collections A,B,...] [--mode MODE] [--peer URL]...\n"
              "       [--peer-ca F] [--peer-token-file F] [--tls-cert F --tls-key F]\n"
              "       [--jwt-secret-file F | --jwt-public-key F [--jwt-alg A]]\n"
              "       [--max-connections N] [--max-per-ip N] [--max-per-user N]\n"
              "       [--max-buffered-mb M] [--handshake-timeout S] [--message-timeout S]\n"
              "       [--ping-interval S] [--pong-timeout S]",
     "serve the databases to sync clients over WebSocket",
     "Serve every database of the environment at ws://HOST:PORT/v1/db/DB\n"
     "(default 127.0.0.1:8080) until interrupted, logging one line per\n"
     "connection to standard error.  A database a client names that does\n"
     "not exist is created with --collections (without it, refused).\n"
     "MODE is two-way (default) or server-to-client: clients only receive.\n"
     "--tls-cert F --tls-key F (PEM files) serve wss:// instead of ws://.\n"
     "--peer URL (repeatable) makes this server a replica of the server at\n"
     "URL: every database here is synced two-way with it, new ones too\n"
     "(run both servers with --peer for a symmetric pair); --peer-ca F\n"
     "trusts the CAs in F for wss:// peers; --peer-token-file F sends the\n"
     "token in F on peer links (a peer with members needs that user as a\n"
     "member of each database it syncs).\n"
     "--jwt-secret-file F (HS256) or --jwt-public-key F (PEM; --jwt-alg\n"
     "RS256 or ES256, default RS256) requires a bearer token on every\n"
     "connection (HTTP 401 otherwise) and turns on membership: each database\n"
     "gets a '_members' collection, its creator is its owner, and owners,\n"
     "writers, readers and invited users may do what docs/auth.md says.\n"
     "Limits (docs/auth.md, \"Limits and timeouts\"): --max-connections N\n"
     "(default 1024; then HTTP 503), --max-per-ip N and --max-per-user N\n"
     "(64 and 32; then HTTP 429; 'unlimited' lifts them, e.g. behind a\n"
     "proxy), --max-buffered-mb M (256: session buffers of all connections;\n"
     "over it the largest stalled one is closed, 1013), --handshake-timeout S\n"
     "(10: headers and session hello), --message-timeout S (120: one sync\n"
     "message), --ping-interval S and --pong-timeout S (30 and 30: a peer\n"
     "answering no ping is dropped).",
     0, 0, OPT_LISTEN | OPT_COLLECTIONS | OPT_MODE | OPT_PEER | OPT_JWT | OPT_TLS | OPT_LIMITS,
     cmd_serve},
    {"sync", "URL --db DB [--watch | --timeout SECONDS] [--mode MODE] [--token-file F]\n"
             "       [--tls-ca F]",
     "sync a database with a server over WebSocket",
     "Connect to the server at URL (ws://HOST:PORT) and sync database DB\n"
     "both ways (--mode server-to-client: only receive), then exit once\n"
     "both sides have everything.  If the server cannot be reached or\n"
     "refuses the connection, exit 1 at once saying why; --timeout SECONDS\n"
     "(default 30) bounds the whole sync.\n"
     "With --watch, stay connected, reconnecting after drops (each failure\n"
     "and the retry are said on stderr), pushing and receiving changes as\n"
     "they happen until interrupted, and print each change as a JSON line\n"
     "(as 'watch' does); status goes to stderr.\n"
     "URL may be wss://HOST:PORT; --tls-ca F trusts the CAs in F (e.g. a\n"
     "self-signed server certificate) instead of the system's.\n"
     "--token-file F sends the token (JWT) in F as the bearer; if the\n"
     "server says this user's access changed, the local copy is cleared.\n"
     "Large first syncs print their progress to stderr.",
     1, 1, OPT_DB | OPT_WATCH | OPT_TIMEOUT | OPT_MODE | OPT_TOKEN | OPT_TLS_CA, cmd_sync},
};

#define NCOMMANDS (sizeof commands / sizeof *commands)

static int usage(FILE *f, int status)
{
    fputs("usage: crdtdb [-d DIR] COMMAND [ARGS]\n\n"
          "DIR defaults to $CRDTDB_DATA, else ./crdtdb-data.\n"
          "Run 'crdtdb COMMAND --help' for details.  Commands:\n",
          f);
    for (size_t i = 0; i < NCOMMANDS; i++)
        fprintf(f, "  %-8s %s\n", commands[i].name, commands[i].summary);
    fprintf(f, "  %-8s %s\n", "token", "print a token (JWT) naming a user");
    fputs("'crdtdb --version' prints the version.\n", f);
    return status;
}

static int command_usage(const command *c, FILE *f, int status)
{
    fprintf(f, "usage: crdtdb [-d DIR] %s%s%s\n\n%s\n", c->name,
            *c->synopsis ? " " : "", c->synopsis, c->help);
    return status;
}

int take_opt(int argc, char **argv, int *i, const char *name, const char **val)
{
    size_t n = strlen(name);
    if (strncmp(argv[*i], name, n) != 0)
        return 0;
    if (argv[*i][n] == '=') {
        *val = argv[*i] + n + 1;
        return 1;
    }
    if (argv[*i][n] != '\0')
        return 0;
    *val = *i + 1 < argc ? argv[++*i] : NULL;
    return *val ? 1 : -1;
}

/* Matches one option of the table (options.h) that command c takes at
 * argv[*i]: 1 (taken into a), 0 (none of them), -1 (no value, or too
 * many --peer). */
static int take_option(const command *c, int argc, char **argv, int *i, args *a)
{
    for (size_t k = 0; k < NOPTIONS; k++) {
        const cli_option *o = &cli_options[k];
        int r = 0;
        if (!(c->opts & o->opt))
            continue;
        switch (o->kind) {
        case OPTV_FLAG:
            if (strcmp(argv[*i], o->name) == 0) {
                *(int *)((char *)a + o->off) = 1;
                return 1;
            }
            break;
        case OPTV_LIST:
            r = take_opt(argc, argv, i, o->name, &a->peers[a->npeers]);
            if (r > 0 && ++a->npeers == (int)(sizeof a->peers / sizeof *a->peers))
                return -1;
            break;
        case OPTV_LIMITS:
            for (int j = 0; serve_limit_flags[j] && !r; j++)
                r = take_opt(argc, argv, i, serve_limit_flags[j], &a->limits[j]);
            break;
        default:
            r = take_opt(argc, argv, i, o->name, (const char **)((char *)a + o->off));
        }
        if (r)
            return r;
    }
    return 0;
}

/* Parses a command's arguments into a, whose pos must have room for argc
 * entries: 0, 1 for --help, -1 for bad usage. */
static int parse_args(const command *c, int argc, char **argv, args *a)
{
    int only_pos = 0, r;
    const char **pos = a->pos;
    memset(a, 0, sizeof *a);
    a->pos = pos;
    for (int i = 0; i < argc; i++) {
        const char *s = argv[i];
        if (!only_pos && s[0] == '-' && s[1] != '\0') {
            if (strcmp(s, "--") == 0)
                only_pos = 1;
            else if (strcmp(s, "-h") == 0 || strcmp(s, "--help") == 0)
                return 1;
            else if ((r = take_option(c, argc, argv, &i, a)) < 0)
                return -1;
            else if (r == 0) {
                fprintf(stderr, "crdtdb: unknown option %s\n", s);
                return -1;
            }
            continue;
        }
        if (c->max_pos >= 0 && a->npos == c->max_pos)
            return -1;
        a->pos[a->npos++] = s;
    }
    return a->npos < c->min_pos ? -1 : 0;
}

int main(int argc, char **argv)
{
    const char *dir = getenv("CRDTDB_DATA");
    int i = 1;
    if (!dir || !*dir)
        dir = "./crdtdb-data";
    if (i < argc && strncmp(argv[i], "-d", 2) == 0) {
        if (argv[i][2] != '\0')
            dir = argv[i++] + 2;
        else if (i + 1 < argc)
            dir = argv[i + 1], i += 2;
        else
            return usage(stderr, EXIT_USAGE);
    }
    if (i >= argc)
        return usage(stderr, EXIT_USAGE);
    if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0)
        return usage(stdout, 0);
    if (strcmp(argv[i], "--version") == 0) {
        printf("crdtdb %d.%d.%d\n", CRDTDB_VERSION_MAJOR, CRDTDB_VERSION_MINOR,
               CRDTDB_VERSION_PATCH);
        return 0;
    }
    if (strcmp(argv[i], "token") == 0) /* opens no environment */
        return cmd_token(argc - i - 1, argv + i + 1);
    for (size_t k = 0; k < NCOMMANDS; k++) {
        const command *c = &commands[k];
        args a;
        if (strcmp(argv[i], c->name) != 0)
            continue;
        if (!(a.pos = malloc((size_t)argc * sizeof *a.pos)))
            return fail(NULL, CRDTDB_ENOMEM);
        int status;
        switch (parse_args(c, argc - i - 1, argv + i + 1, &a)) {
        case 1:
            status = command_usage(c, stdout, 0);
            break;
        case -1:
            status = command_usage(c, stderr, EXIT_USAGE);
            break;
        default:
            status = c->run(dir, &a);
        }
        free(a.pos);
        return status;
    }
    fprintf(stderr, "crdtdb: unknown command '%s' (crdtdb --help lists the commands)\n",
            argv[i]);
    return EXIT_USAGE;
}
