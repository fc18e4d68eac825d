/*
 * crdtdb expire, expired and drop: finished databases, from a
 * time-to-live to their deletion (with an archive first, if asked).
 */
#include "cli.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int parse_duration(const char *s, uint64_t *ms)
{
    char *end;
    errno = 0;
    unsigned long long n = strtoull(s, &end, 10);
    if (errno || end == s || *s == '-' || n == 0)
        return -1;
    uint64_t unit = strcmp(end, "ms") == 0                    ? 1
                    : strcmp(end, "s") == 0 || *end == '\0' ? 1000
                    : strcmp(end, "m") == 0                 ? 60000
                    : strcmp(end, "h") == 0                 ? 3600000
                    : strcmp(end, "d") == 0                 ? 86400000
                                                            : 0;
    if (!unit || n > UINT64_MAX / unit)
        return -1;
    *ms = n * unit;
    return 0;
}

static void print_expiry(FILE *f, const char *id, const crdtdb_expiry *e)
{
    fputs("{\"db\":", f);
    put_json_str(f, id);
    fprintf(f, ",\"ttl_ms\":%" PRIu64 ",\"closed_ms\":%" PRIu64 ",\"last_write_ms\":%" PRIu64
               ",\"due_ms\":%" PRIu64 "}\n",
            e->ttl_ms, e->closed_ms, e->last_write_ms, e->due_ms);
}

int cmd_expire(const char *dir, const args *a)
{
    uint64_t ttl = 0;
    if (!!a->after == !!a->never || (a->closed && !a->after) ||
        (a->after && parse_duration(a->after, &ttl))) {
        fprintf(stderr, "crdtdb: give --after DURATION (e.g. 7d, 12h, 30m, 90s) or --never\n");
        return EXIT_USAGE;
    }
    crdtdb_env *env;
    crdtdb_db *db;
    if (open_db(dir, a->pos[0], &env, &db))
        return EXIT_FAILURE;
    crdtdb_expiry e;
    int rc = crdtdb_db_expire_set(db, ttl, a->closed ? CRDTDB_EXPIRE_CLOSED : 0);
    if (!rc)
        rc = crdtdb_db_expiry(db, &e);
    if (rc)
        return close_db(env, db, fail_db(db, rc));
    print_expiry(stdout, a->pos[0], &e);
    return close_db(env, db, fflush(stdout) ? fail(strerror(errno), CRDTDB_EIO) : 0);
}

/* Archives (when `archive`, a file path) and drops database id: when
 * `due` is set, only if it is still due then and nothing was written
 * since its sequence was read here (crdtdb_env_drop_expired). */
static int drop_one(crdtdb_env *env, const char *id, const char *archive, const uint64_t *due)
{
    uint64_t seq = 0;
    if (archive || due) {
        crdtdb_db *db;
        int rc = crdtdb_db_open(env, id, &db);
        if (rc)
            return fail_env(env, rc, id);
        if ((rc = crdtdb_db_seq(db, NULL, &seq)) || (archive && (rc = crdtdb_db_archive(db, archive)))) {
            fail_db(db, rc);
            crdtdb_db_close(db);
            return EXIT_FAILURE;
        }
        crdtdb_db_close(db);
    }
    int rc = due ? crdtdb_env_drop_expired(env, id, *due, seq) : crdtdb_db_drop(env, id);
    return rc ? fail_env(env, rc, id) : 0;
}

int cmd_drop(const char *dir, const args *a)
{
    crdtdb_env *env;
    int lock = -1;
    if (!env_exists(dir) ||
        (lock = lock_dir(dir, "stop it first: its clients hold the database open")) < 0 ||
        open_env(dir, 0, &env)) {
        if (lock >= 0)
            close(lock);
        return EXIT_FAILURE;
    }
    int status = drop_one(env, a->pos[0], a->archive, NULL);
    crdtdb_env_close(env);
    close(lock);
    return status;
}

typedef struct sweep {
    crdtdb_env *env;
    const args *a;
    uint64_t now;
    int status;
} sweep;

static int on_expired(void *ctx, const char *id, const crdtdb_expiry *e)
{
    sweep *w = ctx;
    if (w->a->drop) {
        char *path = NULL;
        if (w->a->archive) {
            size_t n = strlen(w->a->archive), k = strlen(id);
            if (!(path = malloc(n + 2 * k + 9)))
                return w->status = fail(NULL, CRDTDB_ENOMEM), CRDTDB_ENOMEM;
            memcpy(path, w->a->archive, n);
            path[n] = '/';
            hex_encode((const uint8_t *)id, k, path + n + 1); /* any id makes a file name */
            strcat(path, ".crdtdb");
        }
        int status = drop_one(w->env, id, path, &w->now);
        free(path);
        if (status) {
            w->status = status;
            return 0; /* the others still go */
        }
    }
    print_expiry(stdout, id, e);
    return 0;
}

int cmd_expired(const char *dir, const args *a)
{
    if (a->archive && !a->drop) {
        fprintf(stderr, "crdtdb: --archive goes with --drop\n");
        return EXIT_USAGE;
    }
    if (a->archive && mkdir(a->archive, 0700) != 0 && errno != EEXIST)
        return fail_hint(strerror(errno), CRDTDB_EIO, "the archive directory cannot be made");
    sweep w = {NULL, a, 0, 0};
    int lock = -1;
    if (!env_exists(dir) ||
        (a->drop && (lock = lock_dir(dir, "stop it first: its clients hold databases open")) < 0) ||
        open_env(dir, a->drop ? 0 : CRDTDB_ENV_RDONLY, &w.env)) {
        if (lock >= 0)
            close(lock);
        return EXIT_FAILURE;
    }
    crdtdb_env_options eo; /* the environment's clock: its stamps' */
    crdtdb_env_options_get(w.env, &eo);
    w.now = eo.clock(eo.clock_ctx);
    int rc = crdtdb_env_expired(w.env, w.now, on_expired, &w);
    if (rc)
        w.status = fail(crdtdb_env_errmsg(w.env), rc);
    crdtdb_env_close(w.env);
    if (lock >= 0)
        close(lock);
    if (fflush(stdout) && !w.status)
        w.status = fail(strerror(errno), CRDTDB_EIO);
    return w.status;
}
