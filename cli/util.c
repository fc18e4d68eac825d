/*
 * The helpers the crdtdb commands share: reporting failures, opening the
 * environment and a database, JSON in and out, key and token files,
 * --mode, and the interrupt signals.  Declared in cli.h.
 */
#include "cli.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sodium.h>
#include <sys/file.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define KEY_FILE_MAX 65536u

/* ------------------------------------------------------------ failures */

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

/* ------------------------------------------------------- JSON in and out */

/* Writes s as a JSON string.  Ids are valid UTF-8 (the library checks), so
 * only quotes, backslashes and control characters need escaping. */
void put_json_str(FILE *f, const char *s)
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
int parse_json(const char *arg, crdtdb_buf *mp)
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

/* Record id (msgpack value, len bytes) as JSON text in json, the way the
 * DataStore shows records: {"id": id, ...fields}, the record id first and
 * in place of any field named "id" (crdtdb_record_with_id).  rec is
 * scratch space.  0 or an error code. */
int record_json(const char *id, const uint8_t *value, size_t len, crdtdb_buf *rec,
                       crdtdb_buf *json)
{
    int rc = crdtdb_record_with_id(id, value, len, rec);
    return rc ? rc : crdtdb_msgpack_to_json(rec->data, rec->len, json);
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

/* ----------------------------------------------------- replica ids, keys */

void hex_encode(const uint8_t *b, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        *out++ = digits[b[i] >> 4];
        *out++ = digits[b[i] & 15];
    }
    *out = '\0';
}

int read_key_file(const char *path, int strip_newline, uint8_t **data,
                  size_t *len)
{
    *data = NULL;
    *len = 0;
    /* No stdio: its buffer would keep a copy of the secret. */
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    const char *why = NULL;
    if (fd < 0 || fstat(fd, &st) != 0)
        why = strerror(errno);
    else if (!S_ISREG(st.st_mode))
        why = "not a regular file";
    if (why) {
        fprintf(stderr, "crdtdb: %s: %s\n", path, why);
        if (fd >= 0)
            close(fd);
        return EXIT_FAILURE;
    }
    uint8_t *buf = malloc(KEY_FILE_MAX + 1);
    size_t n = 0;
    ssize_t r = 0;
    while (buf && n <= KEY_FILE_MAX &&
           ((r = read(fd, buf + n, KEY_FILE_MAX + 1 - n)) > 0 ||
            (r < 0 && errno == EINTR)))
        n += r > 0 ? (size_t)r : 0;
    int err = r < 0 ? errno : 0;
    close(fd);
    if (!buf)
        return fail(NULL, CRDTDB_ENOMEM);
    why = err ? strerror(err)
                      : n > KEY_FILE_MAX ? "larger than 64 KiB"
                      : n == 0 ? "empty" : NULL;
    if (why) {
        sodium_memzero(buf, KEY_FILE_MAX + 1);
        free(buf);
        fprintf(stderr, "crdtdb: %s: %s\n", path, why);
        return EXIT_FAILURE;
    }
    if (strip_newline && buf[n - 1] == '\n') {
        buf[--n] = 0;
        if (n > 0 && buf[n - 1] == '\r')
            buf[--n] = 0;
    }
    /* Exactly the key, so the caller knows how much to zero. */
    *data = malloc(n ? n : 1);
    if (*data)
        memcpy(*data, buf, n);
    sodium_memzero(buf, KEY_FILE_MAX + 1);
    free(buf);
    if (!*data)
        return fail(NULL, CRDTDB_ENOMEM);
    *len = n;
    return 0;
}

void free_secret(char *s)
{
    if (s) {
        sodium_memzero(s, strlen(s));
        free(s);
    }
}

/* A token file's contents as a string (NULL reported on failure); free
 * with free_secret. */
char *read_token(const char *file)
{
    uint8_t *bytes;
    size_t len;
    if (read_key_file(file, 1, &bytes, &len))
        return NULL;
    char *t = calloc(1, len + 1);
    if (t)
        memcpy(t, bytes, len);
    sodium_memzero(bytes, len);
    free(bytes);
    if (!t)
        fail(NULL, CRDTDB_ENOMEM);
    return t;
}

/* ------------------------------------------------------ --mode, signals */

int parse_mode(const char *s, crdtdb_sync_mode *mode)
{
    if (!s || strcmp(s, "two-way") == 0)
        *mode = CRDTDB_SYNC_TWO_WAY;
    else if (strcmp(s, "server-to-client") == 0)
        *mode = CRDTDB_SYNC_SERVER_TO_CLIENT;
    else {
        fprintf(stderr, "crdtdb: --mode is two-way or server-to-client\n");
        return -1;
    }
    return 0;
}

/* Set by SIGINT/SIGTERM: signals leave no other way.  The process has one
 * set of handlers, so this is its one flag. */
static volatile sig_atomic_t stop_requested;

static void on_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

void catch_signals(int flags)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sa.sa_flags = flags;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

int stopped(void)
{
    return stop_requested;
}

/*
 * The data directory's server lock (serve.lock; see cli.h).
 */
int lock_dir(const char *dir, const char *why)
{
    char path[4096], pid[32] = "";
    if (snprintf(path, sizeof path, "%s/serve.lock", dir) >= (int)sizeof path) {
        fail("data directory path too long", CRDTDB_EINVAL);
        return -1;
    }
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
        fail(strerror(errno), CRDTDB_EIO);
        return -1;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        ssize_t n = errno == EWOULDBLOCK ? pread(fd, pid, sizeof pid - 1, 0) : -1;
        pid[n > 0 ? n : 0] = 0;
        pid[strcspn(pid, "\n")] = 0;
        if (errno == EWOULDBLOCK || n >= 0)
            fprintf(stderr, "crdtdb: a crdtdb serve (pid %s) holds %s; %s\n", *pid ? pid : "?",
                    dir, why);
        else
            fail(strerror(errno), CRDTDB_EIO);
        close(fd);
        return -1;
    }
    int len = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) != 0 || pwrite(fd, pid, (size_t)len, 0) != len) {
        /* the lock holds all the same; only the message would lack the pid */
    }
    return fd;
}
