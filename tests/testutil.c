/* Shared test helpers. */
#define _XOPEN_SOURCE 700
#include "tests/testutil.h"

#include "crdt/buf.h"

#include <check.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

char *tu_tmpdir(void)
{
    const char *base = getenv("TMPDIR");
    char tmpl[4096];
    snprintf(tmpl, sizeof tmpl, "%s/crdtdb-test-XXXXXX", base && *base ? base : "/tmp");
    char *d = mkdtemp(tmpl);
    ck_assert_msg(d != NULL, "mkdtemp failed");
    return strdup(d);
}

static int rm_one(const char *p, const struct stat *sb, int flag, struct FTW *f)
{
    (void)sb;
    (void)flag;
    (void)f;
    return remove(p);
}

void tu_rmrf(const char *path)
{
    if (path)
        nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

const uint8_t *tu_mp(crdtdb_buf *b, const char *json)
{
    char err[200] = "";
    int rc = crdtdb_json_to_msgpack(json, strlen(json), 0, b, err, sizeof err);
    ck_assert_msg(rc == 0, "bad test JSON %s: %s", json, err);
    return b->data;
}

void tu_frame(crdtdb_buf *f, const crdtdb_buf *m)
{
    uint8_t h[4] = {(uint8_t)(m->len >> 24), (uint8_t)(m->len >> 16), (uint8_t)(m->len >> 8),
                    (uint8_t)m->len};
    ck_assert_int_eq(crdtdb__buf_append(f, h, 4), 0);
    ck_assert_int_eq(crdtdb__buf_append(f, m->data, m->len), 0);
}

char *tu_json(const uint8_t *mp, size_t len)
{
    crdtdb_buf b = CRDTDB_BUF_INIT;
    int rc = crdtdb_msgpack_to_json(mp, len, &b);
    ck_assert_int_eq(rc, 0);
    char *s = strdup((const char *)b.data);
    crdtdb_buf_free(&b);
    return s;
}

crdtdb_env *tu_env(char **dir, const crdtdb_env_options *opts)
{
    *dir = tu_tmpdir();
    crdtdb_env *env = NULL;
    int rc = crdtdb_env_open(*dir, opts, &env);
    ck_assert_msg(rc == 0, "env_open: %s", crdtdb_strerror(rc));
    return env;
}

char *tu_get(crdtdb_db *db, const char *coll, const char *id)
{
    crdtdb_buf b = CRDTDB_BUF_INIT;
    int found = -1;
    int rc = crdtdb_db_get_by_id(db, NULL, coll, id, &b, &found);
    ck_assert_msg(rc == 0, "get_by_id: %s", crdtdb_db_errmsg(db));
    char *s = found ? tu_json(b.data, b.len) : NULL;
    crdtdb_buf_free(&b);
    return s;
}

int tu_env_has(crdtdb_env *env, const char *db_id, const char *coll, const char *id)
{
    crdtdb_db *db;
    if (crdtdb_db_open(env, db_id, &db))
        return 0;
    char *g = tu_get(db, coll, id);
    crdtdb_db_close(db);
    free(g);
    return g != NULL;
}

unsigned tu_seed(void)
{
    const char *s = getenv("CRDTDB_SEED");
    unsigned seed = s ? (unsigned)strtoul(s, NULL, 10) : (unsigned)time(NULL);
    fprintf(stderr, "seed: %u (rerun with CRDTDB_SEED=%u)\n", seed, seed);
    return seed;
}

int tu_run(Suite *s)
{
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}

/* ------------------------------------------------------ time and files */

char *tu_hex(const uint8_t *p, size_t n)
{
    char *s = malloc(2 * n + 1);
    ck_assert_ptr_nonnull(s);
    sodium_bin2hex(s, 2 * n + 1, p, n);
    return s;
}

uint8_t *tu_unhex(const char *h, size_t *n)
{
    size_t len = strlen(h);
    ck_assert_msg(len % 2 == 0, "odd hex: %s", h);
    uint8_t *b = malloc(len / 2 + 1);
    ck_assert_ptr_nonnull(b);
    ck_assert_msg(sodium_hex2bin(b, len / 2, h, len, NULL, n, NULL) == 0 && *n == len / 2,
                  "not hex: %s", h);
    return b;
}

uint64_t tu_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

void tu_sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0)
        ;
}

char *tu_slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    ck_assert_msg(f != NULL, "cannot read %s", path);
    size_t cap = 4096, n = 0, r;
    char *buf = malloc(cap);
    ck_assert_ptr_nonnull(buf);
    while ((r = fread(buf + n, 1, cap - n - 1, f)) > 0)
        if ((n += r) == cap - 1)
            ck_assert_ptr_nonnull(buf = realloc(buf, cap *= 2));
    fclose(f);
    buf[n] = '\0';
    if (len)
        *len = n;
    return buf;
}

void tu_spit(const char *path, const void *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    ck_assert_msg(f != NULL, "cannot write %s", path);
    ck_assert_uint_eq(fwrite(p, 1, n, f), n);
    ck_assert_int_eq(fclose(f), 0);
}

/* ---------------------------------------------------- child processes */

/* In the child: fd `to` from path opened with flags (a NULL path keeps
 * it); 0 or -1. */
static int redirect(int to, const char *path, int flags)
{
    if (!path)
        return 0;
    int fd = open(path, flags, 0600);
    return fd < 0 || dup2(fd, to) < 0 ? -1 : 0;
}

pid_t tu_spawn(const char *const *argv, const char *in, const char *out, const char *err)
{
    fflush(NULL);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        const int w = O_WRONLY | O_CREAT | O_TRUNC;
        if (redirect(1, out, w) < 0 || redirect(2, err, w) < 0 || redirect(0, in, O_RDONLY) < 0)
            _exit(127);
        execvp(argv[0], (char *const *)argv);
        _exit(127);
    }
    return pid;
}

static int exit_status(int st) { return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st); }

int tu_wait(pid_t pid)
{
    int st;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    return exit_status(st);
}

int tu_wait_exit(pid_t pid, long timeout_ms, const char *what)
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
            ck_abort_msg("%s did not exit within %ld ms", what, timeout_ms);
        }
        tu_sleep_ms(10);
    }
    return exit_status(st);
}

int tu_run_cmd(const char *const *argv, const char *out)
{
    /* stdin too: never prompt */
    return tu_wait(tu_spawn(argv, "/dev/null", out ? out : "/dev/null", "/dev/null"));
}

/* ---------------------------------------------------- keys and tokens */

void tu_genkey(tu_pem *k, const char *dir, const char *name, const char *const *opts)
{
    const char *argv[16] = {"openssl", "genpkey"};
    int n = 2;
    snprintf(k->path, sizeof k->path, "%s/%s", dir, name);
    while (*opts) {
        ck_assert_int_lt(n, 12);
        argv[n++] = *opts++;
    }
    argv[n++] = "-out";
    argv[n++] = k->path;
    argv[n] = NULL;
    ck_assert_msg(tu_run_cmd(argv, NULL) == 0,
                  "openssl genpkey failed (is the openssl command "
                  "installed?  .ci/install-deps)");
    k->data = tu_slurp(k->path, &k->len);
}

void tu_pubkey(tu_pem *pub, const tu_pem *priv, const char *dir, const char *name)
{
    snprintf(pub->path, sizeof pub->path, "%s/%s", dir, name);
    const char *argv[] = {"openssl", "pkey", "-in", priv->path, "-pubout", "-out", pub->path, NULL};
    ck_assert_int_eq(tu_run_cmd(argv, NULL), 0);
    pub->data = tu_slurp(pub->path, &pub->len);
}

char *tu_b64url(const void *p, size_t n)
{
    size_t cap = sodium_base64_encoded_len(n, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    char *s = malloc(cap);
    ck_assert_ptr_nonnull(s);
    sodium_bin2base64(s, cap, p, n, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    return s;
}

char *tu_jwt_craft(const char *header, const char *payload, const char *sig)
{
    char *h = tu_b64url(header, strlen(header));
    char *p = tu_b64url(payload, strlen(payload));
    size_t n = strlen(h) + strlen(p) + strlen(sig) + 3;
    char *t = malloc(n);
    ck_assert_ptr_nonnull(t);
    snprintf(t, n, "%s.%s.%s", h, p, sig);
    free(h);
    free(p);
    return t;
}
