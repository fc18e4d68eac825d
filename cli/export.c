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

/* A file's deltas, read one at a time: at most one delta (and a read's
 * worth after it) is held, whatever the file's size (a FIFO or /dev/zero
 * never ends). */
typedef struct delta_reader {
    FILE *f;
    uint8_t *buf;
    size_t cap, start, end; /* the bytes not yet taken: buf[start, end) */
    size_t max;             /* the largest delta taken (the env's max_delta_size) */
    int eof, err;
} delta_reader;

/* Reads more into r's buffer, growing it up to `want` bytes held; 0, or -1
 * at the end of the file or on an error (r->err). */
static int reader_fill(delta_reader *r, size_t want)
{
    if (r->eof || r->err)
        return -1;
    if (r->start) { /* the taken bytes go */
        memmove(r->buf, r->buf + r->start, r->end - r->start);
        r->end -= r->start;
        r->start = 0;
    }
    if (want > r->cap) {
        size_t cap = r->cap ? r->cap : 65536;
        while (cap < want)
            cap *= 2;
        uint8_t *b = realloc(r->buf, cap);
        if (!b) {
            r->err = ENOMEM;
            return -1;
        }
        r->buf = b;
        r->cap = cap;
    }
    errno = 0;
    size_t got = fread(r->buf + r->end, 1, r->cap - r->end, r->f);
    r->end += got;
    if (got == 0) {
        if (ferror(r->f))
            r->err = errno ? errno : EIO;
        else
            r->eof = 1;
        return -1;
    }
    return 0;
}

/* The next delta: 1 with *p, *len and id set; 0 at the end of the file;
 * -1 when what comes is no delta, is cut short, or is over r->max
 * (reported, naming the byte it starts at, `at`), or the file cannot be
 * read (r->err). */
static int reader_next(delta_reader *r, const char *name, size_t at, const uint8_t **p,
                       size_t *len, char id[CRDTDB_ID_MAX + 1])
{
    size_t envelope = r->max + 4096; /* the body's limit, and the frame around it */
    for (;;) {
        size_t have = r->end - r->start, need, dlen;
        const uint8_t *d = r->buf + r->start;
        int rc = crdtdb_delta_need(d, have, &need);
        if (rc == 0 && need > envelope) {
            fprintf(stderr, "crdtdb: %s: the delta at byte %zu is %zu bytes, over the limit "
                            "of %zu (max_delta_size)\n", name, at, need, r->max);
            return -1;
        }
        if (rc == 0 && need > have) { /* more of it to read */
            if (reader_fill(r, need) == 0)
                continue;
            if (r->err)
                return -1;
            if (have == 0)
                return 0; /* the file ends between deltas */
            fprintf(stderr, "crdtdb: %s: the delta at byte %zu is cut short: the file ends "
                            "inside it\n", name, at);
            return -1;
        }
        if (rc == 0)
            rc = crdtdb_delta_peek(d, have, &dlen, id);
        if (rc == 0) {
            *p = d;
            *len = dlen;
            r->start += dlen;
            return 1;
        }
        fprintf(stderr, "crdtdb: %s: no valid delta at byte %zu: %s\n", name, at,
                crdtdb_strerror(rc));
        return -1;
    }
}

/* Applies every delta of one file, one at a time, each all or nothing: a
 * bad one stops the import, the ones before it stay applied.  0 or
 * EXIT_FAILURE (reported). */
static int import_file(db_cache *c, const char *path)
{
    int is_stdin = strcmp(path, "-") == 0;
    const char *name = is_stdin ? "stdin" : path;
    FILE *f = is_stdin ? stdin : fopen(path, "rb");
    if (!f) {
        report_file_error(name, errno);
        return EXIT_FAILURE;
    }
    crdtdb_env_options eo;
    crdtdb_env_options_get(c->env, &eo);
    delta_reader r = {f, NULL, 0, 0, 0, eo.max_delta_size, 0, 0};
    int status = 0, n = 0;
    size_t off = 0;
    for (;;) {
        const uint8_t *d;
        size_t dlen;
        char id[CRDTDB_ID_MAX + 1];
        crdtdb_db *db;
        crdtdb_apply_info info;
        int got = reader_next(&r, name, off, &d, &dlen, id);
        if (got <= 0) {
            if (r.err) {
                report_file_error(name, r.err);
                status = EXIT_FAILURE;
            } else if (got < 0) {
                status = EXIT_FAILURE;
            } else if (n == 0) {
                fprintf(stderr, "crdtdb: no delta in %s\n", name);
                status = EXIT_FAILURE;
            }
            break;
        }
        int rc;
        if ((status = cache_get(c, id, &db)) != 0)
            break;
        if ((rc = crdtdb_db_apply(db, d, dlen, &info)) != 0) {
            status = fail_db(db, rc);
            break;
        }
        char sender[ID_HEX + 1];
        hex_encode(info.sender, sizeof info.sender, sender);
        printf("applied %zu of %zu change%s from %.16s\xe2\x80\xa6 to %s, "
               "sequences (%" PRIu64 ", %" PRIu64 "]\n",
               info.applied, info.changes, plural(info.changes), sender,
               id, info.from, info.to);
        if (fflush(stdout) != 0) {
            report_file_error("stdout", errno);
            status = EXIT_FAILURE;
            break;
        }
        off += dlen;
        n++;
    }
    if (!is_stdin)
        fclose(f);
    free(r.buf);
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
