/* The text exposition of a server's metrics (transport/ws_metrics.c), by
 * itself: histogram buckets cumulative and closed by +Inf, refusals and
 * errors under their labels, the clock skew read from ECLOCK's message,
 * and an output that never passes its buffer.  The server's /metrics and
 * promtool are tests/ops.sh's. */
#include "crdtdb_ws.h"

#include <check.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"
#include "transport/ws_metrics.h"

/* The value of the sample named exactly `name` (with labels) in text. */
static double sample(const char *text, const char *name)
{
    size_t n = strlen(name);
    for (const char *l = text; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL)
        if (strncmp(l, name, n) == 0 && l[n] == ' ')
            return strtod(l + n + 1, NULL);
    ck_abort_msg("no sample %s", name);
    return 0;
}

START_TEST(histogram_is_cumulative)
{
    crdtdb__metrics m;
    crdtdb__metrics_now g;
    memset(&m, 0, sizeof m);
    memset(&g, 0, sizeof g);
    crdtdb__hist_observe(&m.apply, 50);       /* 0.05 ms */
    crdtdb__hist_observe(&m.apply, 3000);     /* 3 ms */
    crdtdb__hist_observe(&m.apply, 9000000);  /* 9 s: only +Inf */
    char *out = malloc(METRICS_TEXT_MAX);
    ck_assert_ptr_nonnull(out);
    size_t n = crdtdb__metrics_text(out, METRICS_TEXT_MAX, &m, &g);
    ck_assert_uint_gt(n, 0);
    ck_assert_uint_eq(strlen(out), n);
    const char *h = "crdtdb_apply_duration_seconds";
    char name[96];
    snprintf(name, sizeof name, "%s_bucket{le=\"0.0001\"}", h);
    ck_assert(sample(out, name) == 1);
    snprintf(name, sizeof name, "%s_bucket{le=\"0.005\"}", h);
    ck_assert(sample(out, name) == 2);
    snprintf(name, sizeof name, "%s_bucket{le=\"2.5\"}", h);
    ck_assert(sample(out, name) == 2);
    snprintf(name, sizeof name, "%s_bucket{le=\"+Inf\"}", h);
    ck_assert(sample(out, name) == 3);
    snprintf(name, sizeof name, "%s_count", h);
    ck_assert(sample(out, name) == 3);
    snprintf(name, sizeof name, "%s_sum", h);
    ck_assert(sample(out, name) > 9.0030 && sample(out, name) < 9.0031);
    free(out);
}
END_TEST

START_TEST(errors_refusals_and_skew)
{
    crdtdb__metrics m;
    crdtdb__metrics_now g;
    memset(&m, 0, sizeof m);
    memset(&g, 0, sizeof g);
    g.two_way = 3;
    g.links_down = 2;
    g.draining = 1;
    m.handoffs = 4;
    m.deltas_out = 6;
    const crdtdb__metrics_peer peers[] = {{"ws://10.0.0.2:7001", 5, 1}, {"ws://b\"x\\:1", 0, 2}};
    g.peer = peers;
    g.npeer = 2;
    crdtdb__hist_observe(&m.commit, 700); /* 0.7 ms */
    crdtdb__metrics_error(&m, CRDTDB_ECLOCK,
                          "delta stamped 7250 ms ahead of local time (local 1 ms, stamp 7251 "
                          "ms; limit 5000 ms): retry later");
    crdtdb__metrics_error(&m, CRDTDB_ECLOCK, "delta stamped 6000 ms ahead of local time");
    crdtdb__metrics_error(&m, CRDTDB_EMAPFULL, "environment is full");
    crdtdb__metrics_error(&m, CRDTDB_EIO, "write: No space left on device");
    crdtdb__metrics_error(&m, -9999, NULL); /* a code from a newer peer */
    crdtdb__metrics_refused(&m, 429);
    crdtdb__metrics_refused(&m, 429);
    crdtdb__metrics_refused(&m, 302); /* not one the server sends: not counted */
    char *out = malloc(METRICS_TEXT_MAX);
    ck_assert_ptr_nonnull(out);
    ck_assert_uint_gt(crdtdb__metrics_text(out, METRICS_TEXT_MAX, &m, &g), 0);
    ck_assert(sample(out, "crdtdb_refused_total{reason=\"ECLOCK\"}") == 2);
    ck_assert(sample(out, "crdtdb_refused_total{reason=\"EMAPFULL\"}") == 1);
    ck_assert(sample(out, "crdtdb_refused_total{reason=\"EIO\"}") == 1);
    ck_assert(sample(out, "crdtdb_refused_total{reason=\"OTHER\"}") == 1);
    ck_assert(sample(out, "crdtdb_refused_total{reason=\"EDENIED\"}") == 0);
    ck_assert(sample(out, "crdtdb_store_full_total{kind=\"map\"}") == 1);
    ck_assert(sample(out, "crdtdb_store_full_total{kind=\"disk\"}") == 1);
    ck_assert(sample(out, "crdtdb_clock_ahead_max_seconds") == 7.25);
    ck_assert(sample(out, "crdtdb_connections_refused_total{status=\"429\"}") == 2);
    ck_assert(sample(out, "crdtdb_connections{mode=\"two_way\"}") == 3);
    ck_assert(sample(out, "crdtdb_peer_links{state=\"down\"}") == 2);
    ck_assert(sample(out, "crdtdb_draining") == 1);
    ck_assert(sample(out, "crdtdb_handoffs_total") == 4);
    ck_assert(sample(out, "crdtdb_deltas_out_total") == 6);
    ck_assert(sample(out, "crdtdb_peer_links_by_peer{peer=\"ws://10.0.0.2:7001\",state=\"up\"}") == 5);
    ck_assert(sample(out, "crdtdb_peer_links_by_peer{peer=\"ws://10.0.0.2:7001\",state=\"down\"}") == 1);
    /* a configured URL with a quote and a backslash: escaped in its label */
    ck_assert(sample(out, "crdtdb_peer_links_by_peer{peer=\"ws://b\\\"x\\\\:1\",state=\"down\"}") == 2);
    ck_assert(sample(out, "crdtdb_commit_duration_seconds_bucket{le=\"0.0005\"}") == 0);
    ck_assert(sample(out, "crdtdb_commit_duration_seconds_bucket{le=\"0.001\"}") == 1);
    ck_assert(sample(out, "crdtdb_commit_duration_seconds_bucket{le=\"+Inf\"}") == 1);
    ck_assert(sample(out, "crdtdb_commit_duration_seconds_count") == 1);
    ck_assert(sample(out, "crdtdb_apply_duration_seconds_count") == 0);
    /* one HELP and one TYPE per family, before its samples */
    ck_assert_ptr_nonnull(strstr(out, "# HELP crdtdb_refused_total "));
    ck_assert_ptr_nonnull(strstr(out, "# TYPE crdtdb_refused_total counter\n"));
    ck_assert_ptr_nonnull(strstr(out, "# TYPE crdtdb_apply_duration_seconds histogram\n"));
    free(out);
}
END_TEST

START_TEST(output_stays_in_its_buffer)
{
    crdtdb__metrics m;
    crdtdb__metrics_now g;
    memset(&m, 0xff, sizeof m); /* every counter at its widest */
    memset(&g, 0xff, sizeof g);
    g.peer = NULL;
    g.npeer = 0;
    char *out = malloc(METRICS_TEXT_MAX + 64);
    ck_assert_ptr_nonnull(out);
    size_t full = crdtdb__metrics_text(out, METRICS_TEXT_MAX, &m, &g);
    ck_assert_uint_gt(full, 0); /* the widest fits the bound */
    for (size_t cap = 0; cap < full + 2; cap += cap < 64 ? 1 : 97) {
        memset(out, 'x', METRICS_TEXT_MAX + 64);
        size_t n = crdtdb__metrics_text(out, cap, &m, &g);
        ck_assert_uint_eq(n, cap > full ? full : 0);
        size_t i = cap;
        while (i < METRICS_TEXT_MAX + 64 && out[i] == 'x')
            i++;
        ck_assert_uint_eq(i, METRICS_TEXT_MAX + 64); /* nothing past cap */
    }
    free(out);
    /* the most peers a cluster file holds, each URL the longest and all
     * quotes (every byte escaped): within the bound the server allots */
    static crdtdb__metrics_peer many[1024];
    static char quotes[256];
    memset(quotes, '"', 255);
    for (size_t i = 0; i < 1024; i++)
        many[i] = (crdtdb__metrics_peer){quotes, SIZE_MAX, SIZE_MAX};
    g.peer = many;
    g.npeer = 1024;
    size_t cap = METRICS_TEXT_MAX + 1024 * METRICS_PEER_MAX;
    out = malloc(cap);
    ck_assert_ptr_nonnull(out);
    ck_assert_uint_gt(crdtdb__metrics_text(out, cap, &m, &g), 0);
    free(out);
}
END_TEST

static Suite *metrics_suite(void)
{
    Suite *s = suite_create("metrics");
    TCase *tc = tcase_create("metrics");
    tcase_add_test(tc, histogram_is_cumulative);
    tcase_add_test(tc, errors_refusals_and_skew);
    tcase_add_test(tc, output_stays_in_its_buffer);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return tu_run(metrics_suite());
}
