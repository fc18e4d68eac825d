/* The cluster file and rendezvous owners (transport/cluster.c): parsing
 * and its bounds, owners that every server agrees on, and how few move
 * when a server joins.  The servers themselves: tests/cluster/. */
#include "crdtdb_cluster.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tests/testutil.h"

static const char THREE[] = "# a comment\n"
                            "\n"
                            "ws://10.0.0.1:7001\n"
                            "  ws://10.0.0.2:7001   tok.en-2  # the token it takes\r\n"
                            "wss://10.0.0.3:7001";

static crdtdb_cluster *open3(const char *self, unsigned r)
{
    crdtdb_cluster *cl = NULL;
    char why[128] = "";
    int rc = crdtdb_cluster_open_text(THREE, strlen(THREE), self, r, &cl, why, sizeof why);
    ck_assert_msg(rc == 0, "%s", why);
    return cl;
}

START_TEST(parses_lines)
{
    crdtdb_cluster *cl = open3("ws://10.0.0.2:7001", 0);
    ck_assert_uint_eq(crdtdb_cluster_size(cl), 3);
    ck_assert_str_eq(crdtdb_cluster_url(cl, 0), "ws://10.0.0.1:7001");
    ck_assert_str_eq(crdtdb_cluster_url(cl, 1), "ws://10.0.0.2:7001");
    ck_assert_str_eq(crdtdb_cluster_url(cl, 2), "wss://10.0.0.3:7001");
    ck_assert_ptr_null(crdtdb_cluster_url(cl, 3));
    const char *o[4];
    ck_assert_int_eq(crdtdb_cluster_owners(cl, "a", o, 4), 2); /* R defaults to 2 */
    crdtdb_cluster_close(cl);
    crdtdb_cluster_close(NULL);
}
END_TEST

/* Each refusal, with the line it names. */
START_TEST(refusals)
{
    static const struct {
        const char *text;
        int rc;
        const char *why;
    } bad[] = {
        {"http://a:1\n", CRDTDB_EINVAL, "line 1: not a ws://"},
        {"ws://a:1\nws://b:1/v1\n", CRDTDB_EINVAL, "line 2: not a ws://"},
        {"ws://a:1\nws://\n", CRDTDB_EINVAL, "line 2"},
        /* HOST[:PORT] strictly: a link to any of these fails for good */
        {"ws://a:1\nws://:\n", CRDTDB_EINVAL, "line 2: not a ws://"},
        {"ws://a:1\nws://:7001\n", CRDTDB_EINVAL, "line 2: not a ws://"},
        {"ws://a:1\nws://b:\n", CRDTDB_EINVAL, "line 2: not a ws://"},
        {"ws://a:1\nws://b:0\n", CRDTDB_EINVAL, "line 2: not a ws://"},
        {"ws://a:1\nws://127.0.0.1:99999\n", CRDTDB_EINVAL, "line 2: not a ws://"},
        {"ws://a:1\nws://b:70a\n", CRDTDB_EINVAL, "line 2: not a ws://"},
        {"ws://a:1\nws://user:pw@b:1\n", CRDTDB_EINVAL, "line 2: not a ws://"},
        {"ws://a:1\nws://b:1:2\n", CRDTDB_EINVAL, "line 2: not a ws://"},
        {"ws://a:1\nws://[::1\n", CRDTDB_EINVAL, "line 2: not a ws://"},
        {"ws://a:1\nws://[]:1\n", CRDTDB_EINVAL, "line 2: not a ws://"},
        {"ws://a:1\nws://[::1]x\n", CRDTDB_EINVAL, "line 2: not a ws://"},
        {"ws://a:1\nws://[zz]:1\n", CRDTDB_EINVAL, "line 2: not a ws://"},
        {"ws://a:1\nws://a]:1\n", CRDTDB_EINVAL, "line 2: not a ws://"},
        {"ws://a:1\nws://ho\"st:1\n", CRDTDB_EINVAL, "line 2: not a ws://"},
        {"ws://a:1\nws://a'b\n", CRDTDB_EINVAL, "line 2: not a ws://"},
        {"ws://a:1\nws://%zz:1\n", CRDTDB_EINVAL, "line 2: not a ws://"},
        {"ws://a:1\nws://[1.2.3.4]:1\n", CRDTDB_EINVAL, "line 2: not a ws://"},
        {"ws://a:1\nws://[:::::]:1\n", CRDTDB_EINVAL, "line 2: not a ws://"},
        {"ws://a:1 tok extra\n", CRDTDB_EINVAL, "line 1: a URL and at most a token"},
        {"ws://a:1\nws://a:1\n", CRDTDB_EINVAL, "line 2: ws://a:1 is listed twice"},
        {"# nothing\n\n", CRDTDB_EINVAL, "lists no server"},
        {"ws://b:1\n", CRDTDB_EINVAL, "ws://a:1 (this server) is not in the cluster file"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        crdtdb_cluster *cl = (crdtdb_cluster *)1;
        char why[160] = "";
        int rc = crdtdb_cluster_open_text(bad[i].text, strlen(bad[i].text), "ws://a:1", 2, &cl,
                                          why, sizeof why);
        ck_assert_msg(rc == bad[i].rc, "case %zu: %d", i, rc);
        ck_assert_ptr_null(cl);
        ck_assert_msg(strstr(why, bad[i].why), "case %zu: '%s'", i, why);
    }
    /* what is accepted: names, addresses, [IPv6], with or without a port */
    const char *good = "ws://a:1\nws://host.example\nwss://10.0.0.3:65535\nws://[::1]:7001\n"
                       "wss://[fe80::1]\n";
    crdtdb_cluster *ok = NULL;
    ck_assert_int_eq(crdtdb_cluster_open_text(good, strlen(good), "ws://a:1", 2, &ok, NULL, 0), 0);
    ck_assert_uint_eq(crdtdb_cluster_size(ok), 5);
    crdtdb_cluster_close(ok);
    /* a token of control characters */
    crdtdb_cluster *cl = NULL;
    char why[160] = "";
    const char *t = "ws://a:1 t\x7fk\n";
    ck_assert_int_eq(crdtdb_cluster_open_text(t, strlen(t), "ws://a:1", 2, &cl, why, sizeof why),
                     CRDTDB_EINVAL);
    ck_assert_ptr_nonnull(strstr(why, "printable ASCII"));
    /* bounds: R, a URL's length, the number of servers, the file's size */
    ck_assert_int_eq(crdtdb_cluster_open_text("ws://a:1", 8, "ws://a:1", 17, &cl, NULL, 0),
                     CRDTDB_ELIMIT);
    char longurl[400] = "ws://";
    memset(longurl + 5, 'h', 300);
    longurl[305] = '\0';
    ck_assert_int_eq(crdtdb_cluster_open_text(longurl, strlen(longurl), "ws://a:1", 2, &cl, NULL, 0),
                     CRDTDB_ELIMIT);
    size_t cap = (CRDTDB_CLUSTER_MAX_SERVERS + 1) * 24;
    char *many = malloc(cap), *at = many;
    for (unsigned i = 0; i <= CRDTDB_CLUSTER_MAX_SERVERS; i++)
        at += sprintf(at, "ws://h%u:1\n", i);
    ck_assert_int_eq(crdtdb_cluster_open_text(many, (size_t)(at - many), "ws://h0:1", 2, &cl, why,
                                              sizeof why),
                     CRDTDB_ELIMIT);
    free(many);
    ck_assert_int_eq(crdtdb_cluster_open_text("ws://a:1", CRDTDB_CLUSTER_MAX_FILE + 1, "ws://a:1",
                                              2, &cl, NULL, 0),
                     CRDTDB_ELIMIT);
    ck_assert_int_eq(crdtdb_cluster_open("/nonexistent/cluster", "ws://a:1", 2, &cl, why,
                                         sizeof why),
                     CRDTDB_EIO);
    ck_assert_int_eq(crdtdb_cluster_owners(NULL, "a", NULL, 0), CRDTDB_EINVAL);
}
END_TEST

/* The owners depend on the URLs and the id only: not on which server
 * asks, nor on the order of the file's lines.  Golden values: computed
 * independently (BLAKE2b-128 in JS, tests/cluster/cluster.test.mjs). */
START_TEST(owners_agree)
{
    const char *fwd = "ws://10.0.0.1:7001\nws://10.0.0.2:7001\nws://10.0.0.3:7001\n";
    const char *rev = "ws://10.0.0.3:7001\nws://10.0.0.2:7001\nws://10.0.0.1:7001\n";
    crdtdb_cluster *a = NULL, *b = NULL;
    ck_assert_int_eq(crdtdb_cluster_open_text(fwd, strlen(fwd), "ws://10.0.0.1:7001", 3, &a,
                                              NULL, 0),
                     0);
    ck_assert_int_eq(crdtdb_cluster_open_text(rev, strlen(rev), "ws://10.0.0.3:7001", 3, &b,
                                              NULL, 0),
                     0);
    const char *oa[3], *ob[3];
    ck_assert_int_eq(crdtdb_cluster_owners(a, "db-000", oa, 3), 3);
    ck_assert_int_eq(crdtdb_cluster_owners(b, "db-000", ob, 3), 3);
    ck_assert_str_eq(oa[0], "ws://10.0.0.2:7001");
    ck_assert_str_eq(oa[1], "ws://10.0.0.1:7001");
    ck_assert_str_eq(oa[2], "ws://10.0.0.3:7001");
    for (int k = 0; k < 3; k++)
        ck_assert_str_eq(oa[k], ob[k]);
    ck_assert_int_eq(crdtdb_cluster_owners(b, "match-1", ob, 3), 3);
    ck_assert_str_eq(ob[0], "ws://10.0.0.3:7001");
    ck_assert_str_eq(ob[1], "ws://10.0.0.2:7001");
    ck_assert_str_eq(ob[2], "ws://10.0.0.1:7001");
    ck_assert_int_eq(crdtdb_cluster_owners(b, "x", ob, 1), 1);
    ck_assert_str_eq(ob[0], "ws://10.0.0.1:7001");
    crdtdb_cluster_close(a);
    crdtdb_cluster_close(b);
    /* many ids: two handles of one file agree, owners are distinct, and
     * the filter says what owns says */
    crdtdb_cluster *c = open3("ws://10.0.0.1:7001", 2), *d = open3("wss://10.0.0.3:7001", 2);
    unsigned firsts[3] = {0};
    for (int i = 0; i < 3000; i++) {
        char id[32];
        snprintf(id, sizeof id, "db-%d", i);
        const char *oc[2], *od[2];
        ck_assert_int_eq(crdtdb_cluster_owners(c, id, oc, 2), 2);
        ck_assert_int_eq(crdtdb_cluster_owners(d, id, od, 2), 2);
        ck_assert_str_eq(oc[0], od[0]);
        ck_assert_str_eq(oc[1], od[1]);
        ck_assert_str_ne(oc[0], oc[1]);
        for (size_t k = 0; k < 3; k++) {
            const char *u = crdtdb_cluster_url(c, k);
            int own = strcmp(u, oc[0]) == 0 || strcmp(u, oc[1]) == 0;
            ck_assert_int_eq(crdtdb_cluster_owns(c, u, id), own);
            ck_assert_int_eq(crdtdb_cluster_peer_filter(c, u, id), own);
            firsts[k] += strcmp(u, oc[0]) == 0;
        }
    }
    for (int k = 0; k < 3; k++) /* spread: about 1000 each */
        ck_assert_msg(firsts[k] > 800 && firsts[k] < 1200, "server %d first for %u", k, firsts[k]);
    crdtdb_cluster_close(c);
    crdtdb_cluster_close(d);
}
END_TEST

/* A fourth server: a database's owners change only by the newcomer
 * taking a place, about R/4 of them. */
START_TEST(join_moves_few)
{
    const char *four = "ws://10.0.0.1:7001\nws://10.0.0.2:7001 tok.en-2\n"
                       "wss://10.0.0.3:7001\nws://10.0.0.4:7001\n";
    crdtdb_cluster *a = open3("ws://10.0.0.1:7001", 2), *b = NULL;
    ck_assert_int_eq(crdtdb_cluster_open_text(four, strlen(four), "ws://10.0.0.1:7001", 2, &b,
                                              NULL, 0),
                     0);
    int moved = 0;
    for (int i = 0; i < 4000; i++) {
        char id[32];
        snprintf(id, sizeof id, "m%d", i);
        const char *oa[2], *ob[2];
        ck_assert_int_eq(crdtdb_cluster_owners(a, id, oa, 2), 2);
        ck_assert_int_eq(crdtdb_cluster_owners(b, id, ob, 2), 2);
        int changed = strcmp(oa[0], ob[0]) || strcmp(oa[1], ob[1]);
        if (!changed)
            continue;
        moved++;
        /* the newcomer is one of the new owners, the other an old one */
        int has_new = strcmp(ob[0], "ws://10.0.0.4:7001") == 0 ||
                      strcmp(ob[1], "ws://10.0.0.4:7001") == 0;
        ck_assert_msg(has_new, "%s moved between old servers", id);
        const char *other = strcmp(ob[0], "ws://10.0.0.4:7001") == 0 ? ob[1] : ob[0];
        ck_assert(strcmp(other, oa[0]) == 0 || strcmp(other, oa[1]) == 0);
    }
    ck_assert_msg(moved > 1700 && moved < 2300, "%d of 4000 moved (R/N is half)", moved);
    crdtdb_cluster_close(a);
    crdtdb_cluster_close(b);
}
END_TEST

/* From a file; the same text gives the same handle. */
START_TEST(from_file)
{
    char path[] = "/tmp/crdtdb-cluster-XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, THREE, strlen(THREE)), (int)strlen(THREE));
    close(fd);
    crdtdb_cluster *cl = NULL;
    ck_assert_int_eq(crdtdb_cluster_open(path, "wss://10.0.0.3:7001", 2, &cl, NULL, 0), 0);
    ck_assert_uint_eq(crdtdb_cluster_size(cl), 3);
    const char *o[2];
    ck_assert_int_eq(crdtdb_cluster_owners(cl, "db-000", o, 2), 2);
    ck_assert_ptr_nonnull(o[0]);
    ck_assert_str_ne(o[0], o[1]);
    crdtdb_cluster_close(cl);
    unlink(path);
}
END_TEST

static Suite *cluster_suite(void)
{
    Suite *s = suite_create("cluster");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, parses_lines);
    tcase_add_test(tc, refusals);
    tcase_add_test(tc, owners_agree);
    tcase_add_test(tc, join_moves_few);
    tcase_add_test(tc, from_file);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return tu_run(cluster_suite());
}
