/*
 * libFuzzer target for the cluster file and rendezvous hashing
 * (transport/cluster.c, include/crdtdb_cluster.h):
 * crdtdb_cluster_open_text on arbitrary text, then the owners of database
 * ids taken from the input.
 *
 * Input: byte 0 is the replicas asked for (mod 20: 0 means the default 2,
 * 17-19 are over CRDTDB_CLUSTER_MAX_REPLICAS); byte 1 picks the self URL:
 * the first field of the (byte 1)th line that has one not starting with
 * #, counting lines round (bit 7 also gives `why` only 5 bytes); bytes
 * 2-3 (big-endian) mod the rest's length + 1 are how many of the rest are
 * the file; what follows the file is database ids, split at NUL and
 * newline bytes (at most 8; none: the file's URLs are the ids).
 * The file may hold NUL bytes and needs no final newline.
 *
 * Checked:
 *   - open returns 0 or EINVAL / ELIMIT (never ENOMEM, EIO), and a
 *     failure fills `why` (NUL-terminated within its size, even a tiny
 *     one) and leaves *out NULL; replicas over 16 always fail with ELIMIT;
 *   - an opened cluster lists 1 to CRDTDB_CLUSTER_MAX_SERVERS servers,
 *     each URL a ws:// or wss:// URL of at most CRDTDB_CLUSTER_MAX_URL
 *     bytes, printable and without / ? #, no two the same, self among
 *     them; crdtdb_cluster_url past the end is NULL;
 *   - the file written again from those URLs alone (one a line, file
 *     order) opens to the same list, and in reverse order to the reverse
 *     list; either way every id has the same owners in the same order
 *     (rendezvous hashing does not depend on file order);
 *   - for each id, crdtdb_cluster_owners gives min(R, servers) distinct
 *     URLs of the file, a smaller n gives a prefix of them, and
 *     crdtdb_cluster_owns and crdtdb_cluster_peer_filter agree with that
 *     list for every URL of the file (the filter: ids of at most
 *     CRDTDB_ID_MAX bytes; longer ones are never linked);
 *   - a file without one server that owns none of the ids (not self)
 *     gives every id the same owners: removing a server moves only what
 *     it owned.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crdtdb_cluster.h"
#include "fuzz_util.h"

const char fuzz_name[] = "fuzz_cluster";

#define MAX_IDS 8

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    CHECK(sodium_init() >= 0);
    return 0;
}

/* The first field (space/tab separated) of the k-th line that has one,
 * counting round; NULL when no line has one.  A new string. */
static char *pick_self(const char *t, size_t n, unsigned k)
{
    size_t lines = 0;
    for (int pass = 0; pass < 2; pass++) {
        size_t seen = 0;
        for (size_t at = 0; at < n;) {
            const char *end = memchr(t + at, '\n', n - at);
            size_t ll = end ? (size_t)(end - (t + at)) : n - at;
            const char *p = t + at;
            at += ll + (end ? 1 : 0);
            size_t i = 0;
            while (i < ll && (p[i] == ' ' || p[i] == '\t'))
                i++;
            size_t st = i;
            while (i < ll && p[i] != ' ' && p[i] != '\t' && p[i] != '\r')
                i++;
            if (i == st || p[st] == '#') /* no field, or a comment */
                continue;
            if (pass == 1 && seen == k % lines) {
                char *s = malloc(i - st + 1);
                CHECK(s);
                memcpy(s, p + st, i - st);
                s[i - st] = '\0';
                return s;
            }
            seen++;
        }
        lines = seen;
        if (!lines)
            return NULL;
    }
    return NULL;
}

static int url_fine(const char *u)
{
    size_t n = strlen(u);
    size_t skip = strncmp(u, "ws://", 5) == 0 ? 5 : strncmp(u, "wss://", 6) == 0 ? 6 : 0;
    if (!skip || n == skip || n > CRDTDB_CLUSTER_MAX_URL)
        return 0;
    for (size_t i = skip; i < n; i++) {
        unsigned char c = (unsigned char)u[i];
        if (c <= ' ' || c >= 0x7f || c == '/' || c == '?' || c == '#')
            return 0;
    }
    return 1;
}

/* The file of cl's URLs (one a line) in file order, or reversed, without
 * server `skip` (SIZE_MAX: none); a new string. */
static char *rewrite(const crdtdb_cluster *cl, int reverse, size_t skip, size_t *len)
{
    size_t n = crdtdb_cluster_size(cl), cap = 1;
    for (size_t i = 0; i < n; i++)
        cap += strlen(crdtdb_cluster_url(cl, i)) + 1;
    char *t = malloc(cap);
    CHECK(t);
    size_t at = 0;
    for (size_t j = 0; j < n; j++) {
        size_t i = reverse ? n - 1 - j : j;
        if (i == skip)
            continue;
        const char *u = crdtdb_cluster_url(cl, i);
        size_t k = strlen(u);
        memcpy(t + at, u, k);
        t[at + k] = '\n';
        at += k + 1;
    }
    t[at] = '\0';
    *len = at;
    return t;
}

/* Opens text, which must open. */
static crdtdb_cluster *must_open(const char *t, size_t n, const char *self, unsigned r)
{
    crdtdb_cluster *cl;
    char why[256];
    int rc = crdtdb_cluster_open_text(t, n, self, r, &cl, why, sizeof why);
    if (rc)
        fprintf(stderr, "%s: rewritten file refused: %d %s\n", fuzz_name, rc, why);
    CHECK(rc == 0 && cl);
    return cl;
}

/* The owners of id in cl, checked against owns and the filter; returns
 * how many, into out (CRDTDB_CLUSTER_MAX_REPLICAS entries). */
static size_t owners_checked(crdtdb_cluster *cl, unsigned r, const char *id, const char **out)
{
    size_t servers = crdtdb_cluster_size(cl);
    size_t want = r < servers ? r : servers;
    const char *more[CRDTDB_CLUSTER_MAX_REPLICAS + 2];
    int k = crdtdb_cluster_owners(cl, id, more, CRDTDB_CLUSTER_MAX_REPLICAS + 2);
    CHECK(k >= 0 && (size_t)k == want);
    memcpy(out, more, (size_t)k * sizeof *out);
    for (int i = 0; i < k; i++) {
        size_t j = 0;
        while (j < servers && crdtdb_cluster_url(cl, j) != out[i])
            j++;
        CHECK(j < servers); /* one of the file's (borrowed) URLs */
        for (int m = 0; m < i; m++)
            CHECK(out[m] != out[i]);
    }
    for (size_t n = 0; n < (size_t)k; n++) { /* a smaller n: a prefix */
        const char *few[CRDTDB_CLUSTER_MAX_REPLICAS];
        CHECK(crdtdb_cluster_owners(cl, id, few, n) == (int)n);
        for (size_t i = 0; i < n; i++)
            CHECK(few[i] == out[i]);
    }
    int short_id = strlen(id) <= CRDTDB_ID_MAX;
    for (size_t j = 0; j < servers; j++) {
        const char *u = crdtdb_cluster_url(cl, j);
        int in = 0;
        for (int i = 0; i < k; i++)
            in |= strcmp(out[i], u) == 0;
        CHECK(crdtdb_cluster_owns(cl, u, id) == in);
        /* twice: the second answer comes from the filter's cache */
        for (int twice = 0; twice < 2; twice++)
            CHECK(crdtdb_cluster_peer_filter(cl, u, id) == (short_id && in));
    }
    CHECK(crdtdb_cluster_owns(cl, "ws://not a url", id) == 0); /* never a server */
    return (size_t)k;
}

/* Same owners, by URL text, in the same order. */
static void same_owners(const char **a, size_t an, const char **b, size_t bn)
{
    CHECK(an == bn);
    for (size_t i = 0; i < an; i++)
        CHECK(strcmp(a[i], b[i]) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 4)
        return 0;
    unsigned r = data[0] % 20, eff = r ? r : 2;
    size_t rest = size - 4;
    size_t tlen = ((size_t)data[2] << 8 | data[3]) % (rest + 1);
    /* exact copies, so ASan sees any read past the end */
    char *text = (char *)fuzz_dup(data + 4, tlen);
    char *self = pick_self(text, tlen, data[1]);
    /* the ids: the rest after the file, split at NUL and newline */
    size_t idn = size - 4 - tlen;
    char *idbuf = malloc(idn + 1);
    CHECK(idbuf);
    memcpy(idbuf, data + 4 + tlen, idn);
    idbuf[idn] = '\0';
    const char *ids[MAX_IDS];
    size_t nids = 0;
    for (size_t at = 0; nids < MAX_IDS;) {
        size_t e = at;
        while (e < idn && idbuf[e] != '\0' && idbuf[e] != '\n')
            e++;
        idbuf[e] = '\0';
        ids[nids++] = idbuf + at;
        if (e >= idn)
            break;
        at = e + 1;
    }

    crdtdb_cluster *cl = (crdtdb_cluster *)&cl; /* must be set to NULL on failure */
    char why[64];
    size_t why_size = data[1] & 0x80 ? 5 : sizeof why;
    memset(why, 'z', sizeof why);
    int rc = crdtdb_cluster_open_text(text, tlen, self ? self : "ws://none", r, &cl, why,
                                      why_size);
    if (fuzz_debug_enabled())
        fprintf(stderr, "%s: replicas %u self %s: rc %d: %.*s\n", fuzz_name, r,
                self ? self : "(none)", rc, rc ? (int)why_size : 0, why);
    CHECK(rc == 0 || rc == CRDTDB_EINVAL || rc == CRDTDB_ELIMIT);
    if (r > CRDTDB_CLUSTER_MAX_REPLICAS)
        CHECK(rc == CRDTDB_ELIMIT);
    if (rc) {
        CHECK(cl == NULL);
        CHECK(memchr(why, '\0', why_size) != NULL && why[0] != '\0');
        CHECK(why_size == sizeof why || why[why_size] == 'z');
        goto out;
    }
    CHECK(cl && self);
    size_t n = crdtdb_cluster_size(cl);
    CHECK(n >= 1 && n <= CRDTDB_CLUSTER_MAX_SERVERS);
    CHECK(crdtdb_cluster_url(cl, n) == NULL);
    int self_in = 0;
    for (size_t i = 0; i < n; i++) {
        const char *u = crdtdb_cluster_url(cl, i);
        CHECK(u && url_fine(u));
        self_in |= strcmp(u, self) == 0;
        for (size_t j = 0; j < i; j++)
            CHECK(strcmp(u, crdtdb_cluster_url(cl, j)) != 0);
    }
    CHECK(self_in);
    if (nids == 1 && ids[0][0] == '\0') /* no ids given: the URLs themselves */
        for (nids = 0; nids < n && nids < MAX_IDS; nids++)
            ids[nids] = crdtdb_cluster_url(cl, nids);

    /* the owners in the file as given, then rewritten both ways */
    const char *own[MAX_IDS][CRDTDB_CLUSTER_MAX_REPLICAS];
    size_t nown[MAX_IDS];
    for (size_t i = 0; i < nids; i++)
        nown[i] = owners_checked(cl, eff, ids[i], own[i]);
    /* owns() of each server against the ids, for the removal check */
    size_t spare = SIZE_MAX;
    for (size_t j = 0; j < n && spare == SIZE_MAX; j++) {
        const char *u = crdtdb_cluster_url(cl, j);
        int owner = strcmp(u, self) == 0;
        for (size_t i = 0; i < nids && !owner; i++)
            owner = crdtdb_cluster_owns(cl, u, ids[i]);
        if (!owner)
            spare = j;
    }
    for (int pass = 0; pass < 3; pass++) {
        if (pass == 2 && spare == SIZE_MAX)
            break;
        size_t len;
        char *t = rewrite(cl, pass == 1, pass == 2 ? spare : SIZE_MAX, &len);
        crdtdb_cluster *c2 = must_open(t, len, self, r);
        size_t n2 = crdtdb_cluster_size(c2);
        CHECK(n2 == (pass == 2 ? n - 1 : n));
        for (size_t j = 0; pass < 2 && j < n; j++)
            CHECK(strcmp(crdtdb_cluster_url(c2, j),
                         crdtdb_cluster_url(cl, pass ? n - 1 - j : j)) == 0);
        for (size_t i = 0; i < nids; i++) {
            const char *o2[CRDTDB_CLUSTER_MAX_REPLICAS];
            size_t k2 = owners_checked(c2, eff, ids[i], o2);
            if (pass < 2 || n2 >= eff)
                same_owners(own[i], nown[i], o2, k2);
        }
        crdtdb_cluster_close(c2);
        free(t);
    }
    crdtdb_cluster_close(cl);
out:
    crdtdb_cluster_close(NULL);
    free(idbuf);
    free(self);
    free(text);
    return 0;
}
