/*
 * The Prometheus text exposition of a server's metrics, by the format's
 * rules (https://prometheus.io/docs/instrumenting/exposition_formats/):
 * one HELP and one TYPE line per family, then its samples; counters end
 * in _total; a histogram's buckets are cumulative, end with le="+Inf"
 * equal to _count, and come with _sum.  Debian has no C library for this
 * (only prometheus-cpp), and the format is a few lines of text.  Checked
 * with `promtool check metrics` (tests/ops.sh).
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "transport/ws_metrics.h"

/* The duration buckets' upper bounds, in microseconds and as the
 * le label says them (seconds). */
static const uint64_t bucket_us[METRICS_BUCKETS] = {
    100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 500000, 1000000,
    2500000};
static const char *const bucket_le[METRICS_BUCKETS] = {
    "0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005", "0.01",
    "0.025",  "0.05",    "0.1",    "0.25",  "0.5",    "1",     "2.5"};

static const unsigned refused_status[METRICS_NSTATUS] = {400, 401, 403, 404, 429, 431, 503};

#define METRICS_CODE_(name, code, msg) code,
static const int error_code[METRICS_NERR - 1] = {CRDTDB_ERRNO_MAP(METRICS_CODE_)};
#undef METRICS_CODE_

uint64_t crdtdb__metrics_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

void crdtdb__hist_observe(crdtdb__hist *h, uint64_t us)
{
    h->count++;
    h->sum_us += us;
    for (size_t i = 0; i < METRICS_BUCKETS; i++)
        if (us <= bucket_us[i]) {
            h->bucket[i]++;
            return;
        }
    /* above the last bound: only +Inf (count) holds it */
}

void crdtdb__metrics_error(crdtdb__metrics *m, int code, const char *message)
{
    size_t i = 0;
    while (i < METRICS_NERR - 1 && error_code[i] != code)
        i++;
    m->errors[i]++; /* i == METRICS_NERR - 1: a code this build does not know */
    if (code == CRDTDB_EMAPFULL)
        m->map_full++;
    if (code == CRDTDB_EIO && message && strstr(message, "No space left"))
        m->disk_full++;
    /* the message states it (crdtdb_db_apply): "delta stamped N ms ahead" */
    const char *p = code == CRDTDB_ECLOCK && message ? strstr(message, "stamped ") : NULL;
    unsigned long long ms;
    if (p && sscanf(p, "stamped %llu ms ahead", &ms) == 1 && ms > m->clock_ahead_max_ms)
        m->clock_ahead_max_ms = ms;
}

void crdtdb__metrics_refused(crdtdb__metrics *m, unsigned status)
{
    for (size_t i = 0; i < METRICS_NSTATUS; i++)
        if (refused_status[i] == status) {
            m->refused[i]++;
            return;
        }
}

/* An output buffer that stops at its end and remembers it did. */
typedef struct wbuf {
    char *p;
    size_t cap, len;
    int over;
} wbuf;

#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
static void put(wbuf *w, const char *fmt, ...)
{
    if (w->over)
        return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(w->p + w->len, w->cap - w->len, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= w->cap - w->len)
        w->over = 1;
    else
        w->len += (size_t)n;
}

static void family(wbuf *w, const char *name, const char *type, const char *help)
{
    put(w, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void one(wbuf *w, const char *name, const char *type, const char *help, uint64_t v)
{
    family(w, name, type, help);
    put(w, "%s %" PRIu64 "\n", name, v);
}

/* A label value by the format's rules (\\, \" and \n escaped), cut to
 * fit out (cap > 0). */
static void label_value(char *out, size_t cap, const char *in)
{
    size_t o = 0;
    for (const char *p = in ? in : ""; *p && o + 2 < cap; p++) {
        if (*p == '\\' || *p == '"' || *p == '\n') {
            out[o++] = '\\';
            out[o++] = *p == '\n' ? 'n' : *p;
        } else {
            out[o++] = *p;
        }
    }
    out[o] = 0;
}

/* A histogram: cumulative buckets, +Inf equal to _count, and _sum. */
static void hist(wbuf *w, const char *c, const char *help, const crdtdb__hist *h)
{
    family(w, c, "histogram", help);
    uint64_t cum = 0;
    for (size_t i = 0; i < METRICS_BUCKETS; i++) {
        cum += h->bucket[i];
        put(w, "%s_bucket{le=\"%s\"} %" PRIu64 "\n", c, bucket_le[i], cum);
    }
    put(w, "%s_bucket{le=\"+Inf\"} %" PRIu64 "\n", c, h->count);
    put(w, "%s_sum %" PRIu64 ".%06" PRIu64 "\n", c, h->sum_us / 1000000u, h->sum_us % 1000000u);
    put(w, "%s_count %" PRIu64 "\n", c, h->count);
}

size_t crdtdb__metrics_text(char *out, size_t cap, const crdtdb__metrics *m,
                            const crdtdb__metrics_now *g)
{
    wbuf w = {out, cap, 0, cap == 0};
    const char *c = "crdtdb_connections";
    family(&w, c, "gauge",
           "Connections open now: clients by the mode their session runs in (handshake: "
           "not yet said hello), and this server's links to peer servers that are up");
    put(&w, "%s{mode=\"two_way\"} %zu\n", c, g->two_way);
    put(&w, "%s{mode=\"server_to_client\"} %zu\n", c, g->server_to_client);
    put(&w, "%s{mode=\"handshake\"} %zu\n", c, g->handshake);
    put(&w, "%s{mode=\"peer_link\"} %zu\n", c, g->links_up);
    c = "crdtdb_peer_links";
    family(&w, c, "gauge", "Links to peer servers (one per peer and database), by state");
    put(&w, "%s{state=\"up\"} %zu\n", c, g->links_up);
    put(&w, "%s{state=\"down\"} %zu\n", c, g->links_down);
    one(&w, "crdtdb_peers", "gauge", "Peer servers configured", g->peers);
    c = "crdtdb_peer_links_by_peer";
    family(&w, c, "gauge",
           "Links to each peer server (one per database this server shares with it), by state");
    for (size_t i = 0; i < g->npeer; i++) {
        char url[2 * 255 + 1];
        label_value(url, sizeof url, g->peer[i].url);
        put(&w, "%s{peer=\"%s\",state=\"up\"} %zu\n", c, url, g->peer[i].up);
        put(&w, "%s{peer=\"%s\",state=\"down\"} %zu\n", c, url, g->peer[i].down);
    }
    one(&w, "crdtdb_connections_accepted_total", "counter",
        "Client connections upgraded to a sync session", m->accepted);
    c = "crdtdb_connections_refused_total";
    family(&w, c, "counter", "Upgrade requests refused, by the HTTP status answered");
    for (size_t i = 0; i < METRICS_NSTATUS; i++)
        put(&w, "%s{status=\"%u\"} %" PRIu64 "\n", c, refused_status[i], m->refused[i]);
    one(&w, "crdtdb_databases_open", "gauge", "Databases open (a connection or a peer link holds them)",
        g->dbs);
    one(&w, "crdtdb_deltas_in_total", "counter", "Deltas received from clients and applied",
        m->deltas_in);
    one(&w, "crdtdb_deltas_out_total", "counter", "Deltas queued for clients to receive",
        m->deltas_out);
    one(&w, "crdtdb_deltas_early_total", "counter",
        "Deltas sent to clients before the commit of their write (early relay)",
        m->early_deltas);
    one(&w, "crdtdb_changes_in_total", "counter", "Registers in the deltas applied",
        m->changes_in);
    one(&w, "crdtdb_bytes_in_total", "counter", "Bytes received from clients (WebSocket payload)",
        m->bytes_in);
    one(&w, "crdtdb_bytes_out_total", "counter", "Bytes sent to clients (WebSocket payload)",
        m->bytes_out);
    c = "crdtdb_refused_total";
    family(&w, c, "counter",
           "What this server refused on a client session (a delta, a message, a frame), by "
           "error name");
    for (size_t i = 0; i < METRICS_NERR; i++) {
        const char *name = i < METRICS_NERR - 1 ? crdtdb_errname(error_code[i]) : "OTHER";
        if (strncmp(name, "CRDTDB_", 7) == 0)
            name += 7;
        put(&w, "%s{reason=\"%s\"} %" PRIu64 "\n", c, name, m->errors[i]);
    }
    c = "crdtdb_store_full_total";
    family(&w, c, "counter",
           "Deltas refused because the store is full: its map size (EMAPFULL) or the disk");
    put(&w, "%s{kind=\"map\"} %" PRIu64 "\n", c, m->map_full);
    put(&w, "%s{kind=\"disk\"} %" PRIu64 "\n", c, m->disk_full);
    c = "crdtdb_clock_ahead_max_seconds";
    family(&w, c, "gauge",
           "The furthest ahead of local time the stamps of a delta refused for clock skew "
           "(ECLOCK) were; 0: none");
    put(&w, "%s %" PRIu64 ".%03" PRIu64 "\n", c, m->clock_ahead_max_ms / 1000u,
        m->clock_ahead_max_ms % 1000u);
    hist(&w, "crdtdb_apply_duration_seconds",
         "Time to apply one client delta: verify, merge, commit and fsync", &m->apply);
    hist(&w, "crdtdb_commit_duration_seconds",
         "Time LMDB took to commit one applied client delta: its page writes and fsync",
         &m->commit);
    one(&w, "crdtdb_presence_members", "gauge",
        "Client connections of this server that show a presence state", g->presence);
    one(&w, "crdtdb_buffered_bytes", "gauge",
        "Memory the sessions' buffers hold, against the budget (max_buffered)", g->held);
    one(&w, "crdtdb_buffered_max_bytes", "gauge", "The budget of the sessions' buffers",
        g->max_buffered);
    one(&w, "crdtdb_handoffs_total", "counter",
        "Copies of databases this server does not keep (a cluster's non-owner), handed to the "
        "servers they are linked to and dropped here", m->handoffs);
    one(&w, "crdtdb_draining", "gauge",
        "1 while the server drains (SIGTERM): new connections are refused", (uint64_t)g->draining);
    if (w.over)
        return 0;
    return w.len;
}
