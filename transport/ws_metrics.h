/*
 * A server's metrics (crdtdb_server_options.metrics, docs/operations.md):
 * counters bumped where things happen in ws_server.c, kept in the server
 * struct (no globals), and their Prometheus text exposition (format
 * 0.0.4), written into a caller's buffer of bounded size.  Every label
 * value is one of a fixed set, so the output's size is bounded too.  Not
 * installed.
 */
#ifndef CRDTDB_TRANSPORT_WS_METRICS_H
#define CRDTDB_TRANSPORT_WS_METRICS_H
#include <stddef.h>
#include <stdint.h>

#include "crdtdb.h"

#define METRICS_BUCKETS 14 /* duration upper bounds (ws_metrics.c) */
#define METRICS_TEXT_MAX ((size_t)32 << 10) /* the longest exposition,
                                                 peers' lines apart */
/* The room one peer's lines take at most (2 samples, its URL escaped). */
#define METRICS_PEER_MAX ((size_t)2 * (2 * 255 + 96))

/* The error codes of CRDTDB_ERRNO_MAP, one counter each, and one for codes
 * this build does not know. */
#define METRICS_ONE_(name, code, msg) +1
enum { METRICS_NERR = 0 CRDTDB_ERRNO_MAP(METRICS_ONE_) + 1 };
#undef METRICS_ONE_

/* The HTTP statuses an upgrade is refused with (ws_server.c), in order. */
#define METRICS_NSTATUS 7

typedef struct crdtdb__hist {
    uint64_t bucket[METRICS_BUCKETS]; /* observations per bucket, not
                                         cumulative (made so on output) */
    uint64_t count;
    uint64_t sum_us;
} crdtdb__hist;

/* What only grows, and the largest clock skew seen. */
typedef struct crdtdb__metrics {
    uint64_t accepted;       /* connections upgraded with a session */
    uint64_t refused[METRICS_NSTATUS]; /* upgrades refused, by status */
    uint64_t deltas_in;      /* deltas from clients applied */
    uint64_t deltas_out;     /* deltas queued for clients */
    uint64_t early_deltas;   /* of those, sent before their commit (early relay) */
    uint64_t changes_in;     /* registers in them */
    uint64_t bytes_in;       /* WebSocket payload bytes, client sessions */
    uint64_t bytes_out;
    uint64_t errors[METRICS_NERR]; /* client sessions' local errors: what
                                      this server refused, by code */
    uint64_t map_full;       /* EMAPFULL seen on a client's delta */
    uint64_t disk_full;      /* EIO "No space left on device" */
    uint64_t clock_ahead_max_ms; /* the furthest ahead a refused delta was */
    uint64_t handoffs;       /* copies handed to their owners and dropped */
    crdtdb__hist apply;      /* one delta's apply: merge, commit, fsync */
    crdtdb__hist commit;     /* its commit alone: page writes and fsync */
} crdtdb__metrics;

/* One peer server's links, at the scrape. */
typedef struct crdtdb__metrics_peer {
    const char *url; /* as configured (crdtdb_server_peer) */
    size_t up, down;
} crdtdb__metrics_peer;

/* What is, at the scrape: counted by the server from its lists. */
typedef struct crdtdb__metrics_now {
    size_t two_way, server_to_client, handshake; /* client connections */
    size_t links_up, links_down; /* peer links to other servers */
    size_t peers;                /* peer servers configured */
    size_t dbs;                  /* databases open */
    size_t presence;             /* client connections with a presence */
    size_t held;                 /* bytes session buffers hold */
    size_t max_buffered;
    int draining;
    const crdtdb__metrics_peer *peer; /* npeer of them, at most 255-byte URLs */
    size_t npeer;
} crdtdb__metrics_now;

/* Microseconds on the monotonic clock. */
uint64_t crdtdb__metrics_us(void);
void crdtdb__hist_observe(crdtdb__hist *h, uint64_t us);
/* Counts one local session error (code: a CRDTDB_E*). */
void crdtdb__metrics_error(crdtdb__metrics *m, int code, const char *message);
/* Counts one refused upgrade (an HTTP status ws_server.c refuses with). */
void crdtdb__metrics_refused(crdtdb__metrics *m, unsigned status);
/*
 * Writes the exposition of m and now into out (cap bytes, NUL-terminated).
 * Its length, or 0 when cap is too small (METRICS_TEXT_MAX +
 * now->npeer * METRICS_PEER_MAX always holds it).
 */
size_t crdtdb__metrics_text(char *out, size_t cap, const crdtdb__metrics *m,
                            const crdtdb__metrics_now *now);

#endif
