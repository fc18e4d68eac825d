/*
 * crdtdb export, import and peers: moving signed deltas between replicas
 * through files (a USB stick, mail, a shared folder).  A file holds any
 * number of concatenated deltas, each of which applies on its own.
 */
#include "cli.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define ID_HEX (2 * CRDTDB_REPLICA_ID_BYTES)

static const char *plural(uint64_t n)
{
    return n == 1 ? "" : "s";
}

static int hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Parses exactly 64 hex digits into a replica id; 0 or -1. */
static int parse_replica_id(const char *s, uint8_t id[CRDTDB_REPLICA_ID_BYTES])
{
    if (strlen(s) != ID_HEX)
        return -1;
    for (size_t i = 0; i < CRDTDB_REPLICA_ID_BYTES; i++) {
        int hi = hex_digit(s[2 * i]), lo = hex_digit(s[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return -1;
        id[i] = (uint8_t)(hi << 4 | lo);
    }
    return 0;
}

/* Parses a decimal sequence number; 0 or -1. */
static int parse_seq(const char *s, uint64_t *seq)
{
    uint64_t v = 0;
    if (!*s)
        return -1;
    for (; *s; s++) {
        if (*s < '0' || *s > '9' || v > (UINT64_MAX - (uint64_t)(*s - '0')) / 10)
            return -1;
        v = v * 10 + (uint64_t)(*s - '0');
    }
    *seq = v;
    return 0;
}

/* ---------------------------------------------------------------- export */

typedef struct file_sink {
    FILE *f;
    int err; /* errno of a failed write */
} file_sink;

static int write_delta(void *ctx, const uint8_t *delta, size_t len)
{
    file_sink *s = ctx;
    errno = 0;
    if (fwrite(delta, 1, len, s->f) == len)
        return 0;
    s->err = errno ? errno : EIO;
    return CRDTDB_EIO;
}

/* Flushes f to the disk and closes it; 0 or an errno. */
static int finish_file(FILE *f)
{
    int err = 0;
    if (fflush(f) != 0 || fsync(fileno(f)) != 0)
        err = errno ? errno : EIO;
    if (fclose(f) != 0 && !err)
        err = errno ? errno : EIO;
    return err;
}

static void report_file_error(const char *path, int err)
{
    fprintf(stderr, "crdtdb: %s: %s\n", path, strerror(err));
}

int cmd_export(const char *dir, const args *a)
{
    uint64_t since = 0;
    uint8_t peer[CRDTDB_REPLICA_ID_BYTES];
    if (!a->output) {
        fprintf(stderr, "crdtdb: export needs -o FILE ('-o -': stdout)\n");
        return EXIT_USAGE;
    }
    if (a->since && a->for_peer) {
        fprintf(stderr, "crdtdb: give --since or --for, not both\n");
        return EXIT_USAGE;
    }
    if (a->since && parse_seq(a->since, &since)) {
        fprintf(stderr, "crdtdb: --since needs a sequence number >= 0\n");
        return EXIT_USAGE;
    }
    if (a->for_peer && parse_replica_id(a->for_peer, peer)) {
        fprintf(stderr, "crdtdb: --for needs a replica id of %u hex digits\n",
                ID_HEX);
        return EXIT_USAGE;
    }

    crdtdb_env *env;
    crdtdb_db *db;
    if (open_db(dir, a->pos[0], &env, &db))
        return EXIT_FAILURE;
    if (a->for_peer) {
        crdtdb_peer p;
        int found, rc = crdtdb_db_peer_get(db, peer, &p, &found);
        if (rc)
            return close_db(env, db, fail_db(db, rc));
        since = p.acked; /* 0 for a peer we never heard from */
    }
    /* Removes collected here cannot travel in a file: a replica holding
     * part of our log below the floor would keep what they removed. */
    uint64_t floor, stamp;
    int hrc = crdtdb_db_horizon(db, &floor, &stamp);
    if (hrc)
        return close_db(env, db, fail_db(db, hrc));
    if (since && since < floor) {
        fprintf(stderr,
                "crdtdb: the replica holds this log up to %llu, below its collection floor "
                "%llu: removes it lacks were collected here and cannot go in a file; sync it "
                "over a session ('crdtdb sync'), which resyncs it whole\n",
                (unsigned long long)since, (unsigned long long)floor);
        return close_db(env, db, EXIT_FAILURE);
    }

    int to_stdout = strcmp(a->output, "-") == 0;
    char *tmp = NULL;
    file_sink sink = {stdout, 0};
    if (!to_stdout) {
        size_t n = strlen(a->output);
        if (!(tmp = malloc(n + 5)))
            return close_db(env, db, fail(NULL, CRDTDB_ENOMEM));
        memcpy(tmp, a->output, n);
        memcpy(tmp + n, ".tmp", 5);
        if (!(sink.f = fopen(tmp, "wb"))) {
            report_file_error(tmp, errno);
            free(tmp);
            return close_db(env, db, EXIT_FAILURE);
        }
    }

    crdtdb_export_info info;
    int rc = crdtdb_db_export(db, since, a->for_peer ? peer : NULL,
                              write_delta, &sink, &info);
    int status = 0;
    if (sink.err)
        report_file_error(to_stdout ? "stdout" : tmp, sink.err);
    else if (rc)
        fail_db(db, rc);
    status = sink.err || rc ? EXIT_FAILURE : 0;
    if (to_stdout) {
        if (status == 0 && fflush(stdout) != 0) {
            report_file_error("stdout", errno);
            status = EXIT_FAILURE;
        }
    } else {
        int err = finish_file(sink.f);
        if (status == 0 && err) {
            report_file_error(tmp, err);
            status = EXIT_FAILURE;
        }
        if (status == 0 && rename(tmp, a->output) != 0) {
            report_file_error(a->output, errno);
            status = EXIT_FAILURE;
        }
        if (status)
            unlink(tmp);
        free(tmp);
    }
    if (status == 0)
        fprintf(stderr,
                "exported %zu change%s in %zu delta%s (%zu bytes), "
                "sequences (%" PRIu64 ", %" PRIu64 "]\n",
                info.changes, plural(info.changes), info.deltas,
                plural(info.deltas), info.bytes, info.from, info.to);
    return close_db(env, db, status);
}

/* ---------------------------------------------------------------- import */

/* The databases opened so far, by id. */
typedef struct db_cache {
    crdtdb_env *env;
    crdtdb_db **dbs;
    size_t n;
} db_cache;

/* Finds or opens database id; 0 or EXIT_FAILURE (reported). */
static int cache_get(db_cache *c, const char *id, crdtdb_db **db)
{
    for (size_t i = 0; i < c->n; i++)
        if (strcmp(crdtdb_db_id(c->dbs[i]), id) == 0) {
            *db = c->dbs[i];
            return 0;
        }
    crdtdb_db **dbs = realloc(c->dbs, (c->n + 1) * sizeof *dbs);
    if (!dbs)
        return fail(NULL, CRDTDB_ENOMEM);
    c->dbs = dbs;
    int rc = crdtdb_db_open(c->env, id, db);
    if (rc)
        return fail_env(c->env, rc, id);
    c->dbs[c->n++] = *db;
    return 0;
}

/* Reads all of f into *data (malloc'd); 0 or an errno. */
static int read_all(FILE *f, uint8_t **data, size_t *len)
{
    size_t cap = 65536, n = 0, got;
    uint8_t *buf = malloc(cap);
    if (!buf)
        return ENOMEM;
    errno = 0;
    while ((got = fread(buf + n, 1, cap - n, f)) > 0) {
        n += got;
        if (n == cap) {
            uint8_t *bigger = cap > SIZE_MAX / 2 ? NULL : realloc(buf, cap * 2);
            if (!bigger) {
                free(buf);
                return ENOMEM;
            }
            buf = bigger;
            cap *= 2;
        }
    }
    if (ferror(f)) {
        int err = errno ? errno : EIO;
        free(buf);
        return err;
    }
    *data = buf;
    *len = n;
    return 0;
}

/* Applies every delta of one file; 0 or EXIT_FAILURE (reported). */
static int import_file(db_cache *c, const char *path)
{
    int is_stdin = strcmp(path, "-") == 0;
    const char *name = is_stdin ? "stdin" : path;
    FILE *f = is_stdin ? stdin : fopen(path, "rb");
    uint8_t *data = NULL;
    size_t len = 0;
    int err = f ? read_all(f, &data, &len) : errno;
    if (f && !is_stdin)
        fclose(f);
    if (err) {
        report_file_error(name, err);
        return EXIT_FAILURE;
    }
    int status = 0;
    if (len == 0) {
        fprintf(stderr, "crdtdb: no delta in %s\n", name);
        status = EXIT_FAILURE;
    }
    for (size_t off = 0; off < len && status == 0;) {
        size_t dlen;
        char id[CRDTDB_ID_MAX + 1];
        crdtdb_db *db;
        crdtdb_apply_info info;
        int rc = crdtdb_delta_peek(data + off, len - off, &dlen, id);
        if (rc) {
            fprintf(stderr, "crdtdb: %s: no valid delta at byte %zu: %s\n",
                    name, off, crdtdb_strerror(rc));
            status = EXIT_FAILURE;
        } else if ((status = cache_get(c, id, &db)) != 0) {
            break;
        } else if ((rc = crdtdb_db_apply(db, data + off, dlen, &info)) != 0) {
            status = fail_db(db, rc);
        } else {
            char sender[ID_HEX + 1];
            hex_encode(info.sender, sizeof info.sender, sender);
            printf("applied %zu of %zu change%s from %.16s\xe2\x80\xa6 to %s, "
                   "sequences (%" PRIu64 ", %" PRIu64 "]\n",
                   info.applied, info.changes, plural(info.changes), sender,
                   id, info.from, info.to);
            if (fflush(stdout) != 0) {
                report_file_error("stdout", errno);
                status = EXIT_FAILURE;
            }
            off += dlen;
        }
    }
    free(data);
    return status;
}

int cmd_import(const char *dir, const args *a)
{
    db_cache c = {NULL, NULL, 0};
    if (!env_exists(dir) || open_env(dir, 0, &c.env))
        return EXIT_FAILURE;
    int status = 0;
    for (int i = 0; i < a->npos && status == 0; i++)
        status = import_file(&c, a->pos[i]);
    for (size_t i = 0; i < c.n; i++)
        crdtdb_db_close(c.dbs[i]);
    free(c.dbs);
    crdtdb_env_close(c.env);
    return status;
}

/* ----------------------------------------------------------------- peers */

static int print_peer(void *ctx, const crdtdb_peer *p)
{
    char id[ID_HEX + 1];
    hex_encode(p->id, sizeof p->id, id);
    fprintf(ctx, "%s received %" PRIu64 " acked %" PRIu64 "%s%s%s\n", id,
            p->received, p->acked,
            p->flags & CRDTDB_PEER_EQUIVOCATED ? " flagged:equivocation" : "",
            p->flags & CRDTDB_PEER_FORKED ? " flagged:forked-history" : "",
            p->flags & CRDTDB_PEER_LEFT ? " left" : "");
    return 0;
}

int cmd_peers(const char *dir, const args *a)
{
    crdtdb_env *env;
    crdtdb_db *db;
    char *text = NULL;
    size_t len = 0;
    if (open_db(dir, a->pos[0], &env, &db))
        return EXIT_FAILURE;
    FILE *mem = open_memstream(&text, &len);
    if (!mem)
        return close_db(env, db, fail(NULL, CRDTDB_ENOMEM));
    int rc = crdtdb_db_peers(db, print_peer, mem);
    if (rc) {
        fclose(mem);
        free(text);
        return close_db(env, db, fail_db(db, rc));
    }
    return close_db(env, db, emit(mem, &text, &len));
}
