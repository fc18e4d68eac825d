/*
 * The cluster file and rendezvous hashing (crdtdb_cluster.h): which R
 * servers own a database, and the peer links that follow from it.  Pure
 * policy over the public server API (crdtdb_server_peer, peer_filter).
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crdtdb_cluster.h"

typedef struct cserver {
    char *url;
    char *token; /* NULL: none */
} cserver;

/* A parsed file. */
typedef struct cfile {
    cserver *s;
    size_t n;
} cfile;

struct crdtdb_cluster {
    cfile f;
    char *self;
    unsigned r;
    /* the owners of the database the filter was last asked about: the
     * server asks once per peer as a database opens, and each answer
     * would hash every server again */
    char last_id[CRDTDB_ID_MAX + 1];
    size_t last_top[CRDTDB_CLUSTER_MAX_REPLICAS], last_k;
    int last_ok;
    char **peered; /* URLs crdtdb_server_peer was called for, not unpeered
                      since: the file's servers but self */
    size_t npeered;
};

/* Servers peered: the file's, and during a reload those it dropped too
 * (they are unpeered after the new ones are peered). */
#define MAX_PEERED (2 * CRDTDB_CLUSTER_MAX_SERVERS)

static void say(char *why, size_t size, const char *fmt, ...)
{
    if (!why || !size)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, size, fmt, ap);
    va_end(ap);
}

static void cfile_free(cfile *f)
{
    for (size_t i = 0; i < f->n; i++) {
        free(f->s[i].url);
        if (f->s[i].token) {
            sodium_memzero(f->s[i].token, strlen(f->s[i].token));
            free(f->s[i].token);
        }
    }
    free(f->s);
    f->s = NULL;
    f->n = 0;
}

static char *dupn(const char *s, size_t n)
{
    char *d = malloc(n + 1);
    if (d) {
        memcpy(d, s, n);
        d[n] = '\0';
    }
    return d;
}

/* A peer URL: ws:// or wss://, then HOST[:PORT] and nothing else (the
 * server adds /v1/db/<id>): a non-empty host name, IPv4 address or
 * [IPv6] address, no user info (it would be logged), a port from 1 to
 * 65535.  A URL that cannot be reached would fail every link, for good. */
static int url_ok(const char *u, size_t n)
{
    size_t skip = n >= 5 && memcmp(u, "ws://", 5) == 0    ? 5
                  : n >= 6 && memcmp(u, "wss://", 6) == 0 ? 6
                                                          : 0;
    if (!skip || n == skip)
        return 0;
    for (size_t i = skip; i < n; i++)
        if (u[i] == '/' || u[i] == '?' || u[i] == '#' || u[i] == '@' || u[i] == '\\' ||
            (unsigned char)u[i] <= ' ' || (unsigned char)u[i] >= 0x7f)
            return 0;
    const char *h = u + skip, *end = u + n, *port = NULL;
    if (*h == '[') { /* [IPv6], as inet_pton reads it */
        const char *close = memchr(h, ']', (size_t)(end - h));
        char a6[64];
        unsigned char bin[16];
        if (!close || (size_t)(close - h - 1) >= sizeof a6)
            return 0;
        memcpy(a6, h + 1, (size_t)(close - h - 1));
        a6[close - h - 1] = 0;
        if (inet_pton(AF_INET6, a6, bin) != 1 || (close + 1 < end && close[1] != ':'))
            return 0;
        port = close + 1 < end ? close + 2 : NULL;
    } else { /* a host name or IPv4 address: letters, digits, '.', '-' */
        const char *colon = memchr(h, ':', (size_t)(end - h));
        const char *hend = colon ? colon : end;
        if (hend == h)
            return 0;
        for (const char *c = h; c < hend; c++)
            if (!isalnum((unsigned char)*c) && *c != '.' && *c != '-')
                return 0;
        port = colon ? colon + 1 : NULL;
    }
    if (port) {
        unsigned long v = 0;
        if (port == end || end - port > 5)
            return 0;
        for (const char *c = port; c < end; c++) {
            if (!isdigit((unsigned char)*c))
                return 0;
            v = v * 10 + (unsigned long)(*c - '0');
        }
        if (v == 0 || v > 65535)
            return 0;
    }
    return 1;
}

static int token_ok(const char *t, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)t[i] <= ' ' || (unsigned char)t[i] >= 0x7f)
            return 0;
    return 1;
}

/* Parses len bytes of text into f (empty on entry).  0 or an error
 * (why filled, f freed). */
static int parse(const char *text, size_t len, cfile *f, char *why, size_t why_size)
{
    if (len > CRDTDB_CLUSTER_MAX_FILE) {
        say(why, why_size, "the cluster file is over %u bytes", CRDTDB_CLUSTER_MAX_FILE);
        return CRDTDB_ELIMIT;
    }
    size_t cap = 0, line = 0;
    int rc = 0;
    for (size_t at = 0; at < len && !rc;) {
        const char *end = memchr(text + at, '\n', len - at);
        size_t ll = end ? (size_t)(end - (text + at)) : len - at;
        const char *p = text + at;
        at += ll + (end ? 1 : 0);
        line++;
        if (ll && p[ll - 1] == '\r')
            ll--;
        /* up to three fields: URL, token, and a "#" comment */
        const char *fld[2];
        size_t fl[2], nf = 0;
        size_t i = 0;
        while (i < ll && !rc) {
            while (i < ll && (p[i] == ' ' || p[i] == '\t'))
                i++;
            if (i == ll || p[i] == '#')
                break;
            size_t st = i;
            while (i < ll && p[i] != ' ' && p[i] != '\t')
                i++;
            if (nf == 2) {
                say(why, why_size, "line %zu: a URL and at most a token", line);
                rc = CRDTDB_EINVAL;
            } else {
                fld[nf] = p + st;
                fl[nf++] = i - st;
            }
        }
        if (rc || nf == 0)
            continue;
        if (fl[0] > CRDTDB_CLUSTER_MAX_URL || (nf == 2 && fl[1] > CRDTDB_CLUSTER_MAX_TOKEN)) {
            say(why, why_size, "line %zu: a URL is at most %u bytes, a token %u", line,
                CRDTDB_CLUSTER_MAX_URL, CRDTDB_CLUSTER_MAX_TOKEN);
            rc = CRDTDB_ELIMIT;
            break;
        }
        if (!url_ok(fld[0], fl[0])) {
            say(why, why_size, "line %zu: not a ws://HOST:PORT or wss://HOST:PORT URL", line);
            rc = CRDTDB_EINVAL;
            break;
        }
        if (nf == 2 && !token_ok(fld[1], fl[1])) {
            say(why, why_size, "line %zu: a token is printable ASCII", line);
            rc = CRDTDB_EINVAL;
            break;
        }
        for (size_t k = 0; k < f->n; k++)
            if (strlen(f->s[k].url) == fl[0] && memcmp(f->s[k].url, fld[0], fl[0]) == 0) {
                say(why, why_size, "line %zu: %.*s is listed twice", line, (int)fl[0], fld[0]);
                rc = CRDTDB_EINVAL;
            }
        if (rc)
            break;
        if (f->n == CRDTDB_CLUSTER_MAX_SERVERS) {
            say(why, why_size, "more than %u servers", CRDTDB_CLUSTER_MAX_SERVERS);
            rc = CRDTDB_ELIMIT;
            break;
        }
        if (f->n == cap) {
            size_t ncap = cap ? cap * 2 : 8;
            cserver *s = realloc(f->s, ncap * sizeof *s);
            if (!s) {
                rc = CRDTDB_ENOMEM;
                break;
            }
            f->s = s;
            cap = ncap;
        }
        cserver *s = &f->s[f->n];
        s->url = dupn(fld[0], fl[0]);
        s->token = nf == 2 ? dupn(fld[1], fl[1]) : NULL;
        if (!s->url || (nf == 2 && !s->token)) {
            free(s->url);
            free(s->token);
            rc = CRDTDB_ENOMEM;
            break;
        }
        f->n++;
    }
    if (!rc && f->n == 0) {
        say(why, why_size, "the cluster file lists no server");
        rc = CRDTDB_EINVAL;
    }
    if (rc == CRDTDB_ENOMEM)
        say(why, why_size, "out of memory");
    if (rc)
        cfile_free(f);
    return rc;
}

/* The whole file at path, bounded; NUL-terminated, *len without it. */
static int slurp(const char *path, char **text, size_t *len, char *why, size_t why_size)
{
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        say(why, why_size, "%s: %s", path, strerror(errno));
        return CRDTDB_EIO;
    }
    char *buf = malloc(CRDTDB_CLUSTER_MAX_FILE + 2);
    if (!buf) {
        fclose(fp);
        return CRDTDB_ENOMEM;
    }
    size_t n = fread(buf, 1, CRDTDB_CLUSTER_MAX_FILE + 1, fp);
    int err = ferror(fp);
    fclose(fp);
    if (err) {
        free(buf);
        say(why, why_size, "%s: read error", path);
        return CRDTDB_EIO;
    }
    buf[n] = '\0';
    *text = buf;
    *len = n;
    return 0;
}

/* The rendezvous score of server url for database id. */
static uint64_t score(const char *url, const char *id)
{
    crypto_generichash_state st;
    unsigned char h[16];
    crypto_generichash_init(&st, NULL, 0, sizeof h);
    crypto_generichash_update(&st, (const unsigned char *)url, strlen(url));
    crypto_generichash_update(&st, (const unsigned char *)"\n", 1);
    crypto_generichash_update(&st, (const unsigned char *)id, strlen(id));
    crypto_generichash_final(&st, h, sizeof h);
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | h[i];
    return v;
}

/* Whether (sa, ua) ranks before (sb, ub): higher score, then lower URL. */
static int before(uint64_t sa, const char *ua, uint64_t sb, const char *ub)
{
    return sa != sb ? sa > sb : strcmp(ua, ub) < 0;
}

/* The indexes of the top min(r, n) servers of f for id into top (r
 * entries), best first; returns how many. */
static size_t top_r(const cfile *f, unsigned r, const char *id, size_t *top)
{
    uint64_t sc[CRDTDB_CLUSTER_MAX_REPLICAS];
    size_t k = 0;
    for (size_t i = 0; i < f->n; i++) {
        uint64_t s = score(f->s[i].url, id);
        size_t pos = k;
        while (pos > 0 && before(s, f->s[i].url, sc[pos - 1], f->s[top[pos - 1]].url))
            pos--;
        if (pos >= r)
            continue;
        size_t last = k < r ? k : r - 1;
        for (size_t j = last; j > pos; j--) {
            sc[j] = sc[j - 1];
            top[j] = top[j - 1];
        }
        sc[pos] = s;
        top[pos] = i;
        if (k < r)
            k++;
    }
    return k;
}

static int owns_in(const cfile *f, unsigned r, const char *url, const char *id)
{
    size_t top[CRDTDB_CLUSTER_MAX_REPLICAS];
    size_t k = top_r(f, r, id, top);
    for (size_t i = 0; i < k; i++)
        if (strcmp(f->s[top[i]].url, url) == 0)
            return 1;
    return 0;
}

static int has_url(const cfile *f, const char *url)
{
    for (size_t i = 0; i < f->n; i++)
        if (strcmp(f->s[i].url, url) == 0)
            return 1;
    return 0;
}

int crdtdb_cluster_open_text(const char *text, size_t len, const char *self_url,
                             unsigned replicas, crdtdb_cluster **out, char *why, size_t why_size)
{
    if (!out)
        return CRDTDB_EINVAL;
    *out = NULL;
    if ((!text && len) || !self_url) {
        say(why, why_size, "no cluster file or no self URL");
        return CRDTDB_EINVAL;
    }
    if (replicas == 0)
        replicas = 2;
    if (replicas > CRDTDB_CLUSTER_MAX_REPLICAS) {
        say(why, why_size, "at most %u replicas", CRDTDB_CLUSTER_MAX_REPLICAS);
        return CRDTDB_ELIMIT;
    }
    if (sodium_init() < 0)
        return CRDTDB_ENOMEM;
    cfile f = {NULL, 0};
    int rc = parse(text ? text : "", len, &f, why, why_size);
    if (rc)
        return rc;
    if (!has_url(&f, self_url)) {
        say(why, why_size, "%s (this server) is not in the cluster file", self_url);
        cfile_free(&f);
        return CRDTDB_EINVAL;
    }
    crdtdb_cluster *cl = calloc(1, sizeof *cl);
    if (!cl || !(cl->self = dupn(self_url, strlen(self_url)))) {
        free(cl);
        cfile_free(&f);
        return CRDTDB_ENOMEM;
    }
    cl->f = f;
    cl->r = replicas;
    *out = cl;
    return 0;
}

int crdtdb_cluster_open(const char *path, const char *self_url, unsigned replicas,
                        crdtdb_cluster **out, char *why, size_t why_size)
{
    if (out)
        *out = NULL;
    if (!path || !out)
        return CRDTDB_EINVAL;
    char *text;
    size_t len;
    int rc = slurp(path, &text, &len, why, why_size);
    if (rc)
        return rc;
    rc = crdtdb_cluster_open_text(text, len, self_url, replicas, out, why, why_size);
    sodium_memzero(text, len); /* it may hold tokens */
    free(text);
    return rc;
}

void crdtdb_cluster_close(crdtdb_cluster *cl)
{
    if (!cl)
        return;
    cfile_free(&cl->f);
    for (size_t i = 0; i < cl->npeered; i++)
        free(cl->peered[i]);
    free(cl->peered);
    free(cl->self);
    free(cl);
}

size_t crdtdb_cluster_size(const crdtdb_cluster *cl)
{
    return cl ? cl->f.n : 0;
}

const char *crdtdb_cluster_url(const crdtdb_cluster *cl, size_t i)
{
    return cl && i < cl->f.n ? cl->f.s[i].url : NULL;
}

int crdtdb_cluster_owners(const crdtdb_cluster *cl, const char *db_id, const char **out_urls,
                          size_t n)
{
    if (!cl || !db_id || (n && !out_urls))
        return CRDTDB_EINVAL;
    size_t top[CRDTDB_CLUSTER_MAX_REPLICAS];
    size_t k = top_r(&cl->f, cl->r, db_id, top);
    if (k > n)
        k = n;
    for (size_t i = 0; i < k; i++)
        out_urls[i] = cl->f.s[top[i]].url;
    return (int)k;
}

int crdtdb_cluster_owns(const crdtdb_cluster *cl, const char *url, const char *db_id)
{
    return cl && url && db_id && owns_in(&cl->f, cl->r, url, db_id);
}

int crdtdb_cluster_peer_filter(void *ctx, const char *peer_url, const char *db_id)
{
    crdtdb_cluster *cl = ctx;
    if (!cl || !peer_url || !db_id || strlen(db_id) > CRDTDB_ID_MAX)
        return 0;
    if (!cl->last_ok || strcmp(cl->last_id, db_id) != 0) {
        cl->last_k = top_r(&cl->f, cl->r, db_id, cl->last_top);
        strcpy(cl->last_id, db_id);
        cl->last_ok = 1;
    }
    for (size_t i = 0; i < cl->last_k; i++)
        if (strcmp(cl->f.s[cl->last_top[i]].url, peer_url) == 0)
            return 1;
    return 0;
}

int crdtdb_cluster_keep(void *ctx, const char *db_id)
{
    crdtdb_cluster *cl = ctx;
    return cl && crdtdb_cluster_peer_filter(cl, cl->self, db_id);
}

static int peered(const crdtdb_cluster *cl, const char *url)
{
    for (size_t i = 0; i < cl->npeered; i++)
        if (strcmp(cl->peered[i], url) == 0)
            return 1;
    return 0;
}

/* Forgets that url was peered (it has just been unpeered). */
static void unmark(crdtdb_cluster *cl, const char *url)
{
    for (size_t i = 0; i < cl->npeered; i++)
        if (strcmp(cl->peered[i], url) == 0) {
            free(cl->peered[i]);
            cl->peered[i] = cl->peered[--cl->npeered];
            return;
        }
}

/* Whether server s's token differs from its line in the old file f. */
static int token_changed(const cfile *f, const cserver *s)
{
    for (size_t i = 0; i < f->n; i++)
        if (strcmp(f->s[i].url, s->url) == 0) {
            const char *a = f->s[i].token ? f->s[i].token : "", *b = s->token ? s->token : "";
            return strcmp(a, b) != 0;
        }
    return 0;
}

/* crdtdb_server_peer for server s of the file (every database it owns);
 * remembered as peered. */
static int peer_one(crdtdb_cluster *cl, crdtdb_server *srv, const cserver *s)
{
    int first = !peered(cl, s->url);
    if (first && cl->npeered == MAX_PEERED)
        return CRDTDB_ELIMIT;
    char *copy = first ? dupn(s->url, strlen(s->url)) : NULL;
    char **list = first ? realloc(cl->peered, (cl->npeered + 1) * sizeof *list) : NULL;
    if (first && (!copy || !list)) {
        free(copy);
        if (list)
            cl->peered = list;
        return CRDTDB_ENOMEM;
    }
    crdtdb_client_options l;
    crdtdb_client_options_init(&l);
    l.url = s->url;
    l.token = s->token;
    int rc = crdtdb_server_peer(srv, &l, NULL, 0);
    if (first) {
        cl->peered = list;
        if (rc)
            free(copy);
        else
            cl->peered[cl->npeered++] = copy;
    }
    return rc;
}

int crdtdb_cluster_peer(crdtdb_cluster *cl, crdtdb_server *srv)
{
    if (!cl || !srv)
        return CRDTDB_EINVAL;
    for (size_t i = 0; i < cl->f.n; i++) {
        if (strcmp(cl->f.s[i].url, cl->self) == 0 || peered(cl, cl->f.s[i].url))
            continue;
        int rc = peer_one(cl, srv, &cl->f.s[i]);
        if (rc)
            return rc;
    }
    return 0;
}

/* The databases of the environment, for a reload. */
typedef struct idlist {
    char **ids;
    size_t n;
} idlist;

static int collect(void *ctx, const char *id)
{
    idlist *l = ctx;
    char **ids = realloc(l->ids, (l->n + 1) * sizeof *ids);
    if (!ids)
        return CRDTDB_ENOMEM;
    l->ids = ids;
    if (!(ids[l->n] = dupn(id, strlen(id))))
        return CRDTDB_ENOMEM;
    l->n++;
    return 0;
}

int crdtdb_cluster_reload_text(crdtdb_cluster *cl, const char *text, size_t len,
                               crdtdb_env *env, crdtdb_server *srv, char *why, size_t why_size)
{
    if (!cl || !env || !srv || (!text && len))
        return CRDTDB_EINVAL;
    cfile nf = {NULL, 0};
    int rc = parse(text ? text : "", len, &nf, why, why_size);
    if (rc)
        return rc;
    idlist l = {NULL, 0};
    rc = crdtdb_db_list(env, collect, &l);
    if (rc) {
        say(why, why_size, "listing the databases: %s", crdtdb_strerror(rc));
        cfile_free(&nf);
        for (size_t i = 0; i < l.n; i++)
            free(l.ids[i]);
        free(l.ids);
        return rc;
    }
    cfile old = cl->f;
    cl->f = nf; /* the filter answers with the new owners from here on */
    cl->last_ok = 0;
    /* the databases whose owners changed, found once per database (2 x
     * servers hashes), not once per server */
    const char **moved = l.n ? malloc(l.n * sizeof *moved) : NULL;
    size_t k = 0;
    if (l.n && !moved)
        rc = CRDTDB_ENOMEM;
    for (size_t j = 0; !rc && j < l.n; j++) {
        size_t nt[CRDTDB_CLUSTER_MAX_REPLICAS], ot[CRDTDB_CLUSTER_MAX_REPLICAS];
        size_t nk = top_r(&cl->f, cl->r, l.ids[j], nt), ok = top_r(&old, cl->r, l.ids[j], ot);
        int same = nk == ok;
        for (size_t a = 0; a < nk && same; a++) {
            int was = 0;
            for (size_t b = 0; b < ok && !was; b++)
                was = strcmp(cl->f.s[nt[a]].url, old.s[ot[b]].url) == 0;
            same = was;
        }
        if (!same)
            moved[k++] = l.ids[j];
    }
    /* servers new to the file are peered as at start (every database they
     * own linked); those peered before have the moved databases linked
     * again, one link per server and database; those gone from the file
     * are unpeered, after, so no database is left without its links
     * meanwhile.  One failing does not stop the others (the first failure
     * is returned). */
    int first = rc;
    for (size_t i = 0; !rc && i < cl->f.n; i++) {
        const cserver *s = &cl->f.s[i];
        if (strcmp(s->url, cl->self) == 0)
            continue;
        int lrc;
        if (peered(cl, s->url) && token_changed(&old, s)) {
            /* a rotated token: its links present the new one from now */
            if ((lrc = crdtdb_server_unpeer(srv, s->url)) < 0 && !first)
                first = lrc;
            unmark(cl, s->url);
        }
        if (!peered(cl, s->url) && (lrc = peer_one(cl, srv, s)) && !first)
            first = lrc;
    }
    int lrc;
    if (!rc && k && (lrc = crdtdb_server_relink(srv, moved, k)) && !first)
        first = lrc;
    for (size_t i = 0; !rc && i < cl->npeered;) {
        if (has_url(&cl->f, cl->peered[i])) {
            i++;
            continue;
        }
        if ((lrc = crdtdb_server_unpeer(srv, cl->peered[i])) < 0 && !first)
            first = lrc;
        unmark(cl, cl->peered[i]);
    }
    rc = first;
    if (rc)
        say(why, why_size, "linking the moved databases: %s", crdtdb_strerror(rc));
    free(moved);
    for (size_t i = 0; i < l.n; i++)
        free(l.ids[i]);
    free(l.ids);
    cfile_free(&old);
    return rc;
}

int crdtdb_cluster_reload(crdtdb_cluster *cl, const char *path, crdtdb_env *env,
                          crdtdb_server *srv, char *why, size_t why_size)
{
    if (!cl || !path)
        return CRDTDB_EINVAL;
    char *text;
    size_t len;
    int rc = slurp(path, &text, &len, why, why_size);
    if (rc)
        return rc;
    rc = crdtdb_cluster_reload_text(cl, text, len, env, srv, why, why_size);
    sodium_memzero(text, len);
    free(text);
    return rc;
}
