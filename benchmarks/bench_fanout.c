/*
 * bench_fanout — crdtdb's WebSocket sync fan-out: one server, 16 clients, one
 * database, all on 127.0.0.1 (ephemeral ports).
 *
 * What is measured (all in one run, in a fresh temp dir removed at the end):
 *
 *   latency   client 0 adds a new record {"w":0,"s":seq,"t":monotonic ns}
 *             at a paced 1,000 writes/s; every other client's observer
 *             (crdtdb_db_observe on its handle) records the arrival.  One
 *             write's latency is the arrival at the LAST of the 15 receivers
 *             minus the time taken just before the local write (so it
 *             includes the writer's own commit, the server's apply + commit
 *             and 15 exports, and each receiver's verify + apply + commit).
 *             p50 / p99 / max over the measured writes (a warm-up is left
 *             out).  Goal p99 <= 1.6 ms.
 *   rtt       the baseline: ping-pong of a 64-byte message over a plain
 *             loopback TCP connection (TCP_NODELAY) to an echo thread, in the
 *             same run; latency is also printed as a multiple of its p50.
 *   fan-out   client 0 adds records as fast as it can in batches of B (one
 *             transaction each, 1 field per record), with at most WINDOW
 *             batches not yet seen by every receiver (flow control, so no
 *             queue grows without bound); field deliveries per second =
 *             records arriving at the 15 receivers per second over a fixed
 *             window.  Goal >= 300,000/s.
 *   raw       the throughput baseline: LMDB puts/s (MDB_NOTLS, NOSYNC iff
 *             the run is nosync), one put per record, in transactions of B,
 *             like the other benchmarks' raw ratio.
 *   sync      the server's environment holds a database of 10,000 records x
 *             10 fields (100,000 fields), written before the server starts.
 *             A fresh client (new environment, empty database) is timed
 *             from crdtdb_client_open until its session reports CAUGHT_UP;
 *             the record count is checked.  Best and median of 3.  Goal
 *             <= 100 ms.
 *   memory    a separate server in a forked child process; 1,000 raw
 *             WebSocket connections (TCP + HTTP upgrade by hand, then the
 *             session hello a real client sends) are opened to it; the
 *             child's VmRSS before and after, divided by 1,000.  Goal <=
 *             32 KB per connection.  (User-space memory only; kernel socket
 *             buffers are not in VmRSS.)
 *
 * The server runs in its own thread (its own environment, its own lws
 * context); the 16 clients run round robin in the main thread, each with its
 * own environment, each serviced with crdtdb_client_run(c, 0).  Environments
 * are CRDTDB_ENV_NOSYNC unless --durable.  Exit status is 0 whatever the
 * goals say (benchmarks report, tests assert); non-zero only on errors.
 */
#define _XOPEN_SOURCE 700
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <lmdb.h>
#include <msgpack.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <libwebsockets.h>

#include "crdtdb_ws.h"

#define NCLIENT 16
#define DB_ID "fanout"
#define BULK_ID "bulk"
#define IDLE_ID "idle"
#define BULK_RECORDS 10000
#define BULK_FIELDS 10
#define SYNC_ROUNDS 3
#define LAT_WARM 300      /* writes left out */
#define LAT_WRITES 3000   /* writes measured */
#define TP_BATCH 100      /* records per writer transaction */
#define TP_WINDOW 16      /* batches in flight */
#define TP_WARM_S 0.5
#define TP_SECONDS 4.0
#define MEM_CONNS 1000
#define RTT_ITERS 20000
#define GOAL_P99_MS 1.6
#define GOAL_DELIV 300000.0
#define GOAL_SYNC_MS 100.0
#define GOAL_MEM_KB 32.0

static const char *const COLLS[] = {"items"};
#define COLL "items"

typedef struct options {
    int durable, json;
    int rate; /* latency phase writes/s (default 1000) */
} options;

/* ---------------------------------------------------------------- util */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static double ratio(double a, double b) { return b > 0 ? a / b : 0; }

static int fail(const char *what, int rc)
{
    fprintf(stderr, "bench_fanout: %s: %s\n", what, crdtdb_strerror(rc));
    return -1;
}

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *f)
{
    (void)st;
    (void)flag;
    (void)f;
    remove(p);
    return 0;
}

static void rmrf(const char *dir)
{
    if (dir && *dir)
        nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Percentile q (0..1) of sorted v[n], in ms. */
static double pct_ms(const uint64_t *v, size_t n, double q)
{
    if (!n)
        return 0;
    size_t i = (size_t)(q * (double)(n - 1) + 0.5);
    return (double)v[i] / 1e6;
}

static int open_env(const char *dir, const options *o, uint32_t batch_limit, crdtdb_env **env)
{
    crdtdb_env_options eo;
    crdtdb_env_options_init(&eo);
    eo.flags = o->durable ? 0 : CRDTDB_ENV_NOSYNC;
    if (batch_limit)
        eo.observe_batch_limit = batch_limit;
    int rc = crdtdb_env_open(dir, &eo, env);
    return rc ? fail(dir, rc) : 0;
}

static int create_db(crdtdb_env *env, const char *id, crdtdb_db **db)
{
    int rc = crdtdb_db_create(env, id, COLLS, 1, db);
    if (rc) {
        fprintf(stderr, "bench_fanout: create %s: %s (%s)\n", id, crdtdb_strerror(rc),
                crdtdb_env_errmsg(env));
        return -1;
    }
    return 0;
}

static long vmrss_kb(pid_t pid)
{
    char p[64], line[256];
    snprintf(p, sizeof p, "/proc/%d/status", (int)pid);
    FILE *f = fopen(p, "r");
    long kb = -1;
    if (!f)
        return -1;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "VmRSS:", 6) == 0) {
            kb = strtol(line + 6, NULL, 10);
            break;
        }
    fclose(f);
    return kb;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* ------------------------------------------------------------- results */

typedef struct results {
    double rtt_p50_us, rtt_p99_us;
    size_t lat_n, lat_lost;
    double lat_p50, lat_p99, lat_max, lat_mean; /* ms */
    double deliv_ps, writes_ps, raw_pps;
    double sync_best_ms, sync_med_ms, sync_envopen_ms, bulk_fill_s;
    size_t sync_records;
    long mem_base_kb, mem_upgraded_kb, mem_hello_kb;
    size_t mem_conns;
    double mem_per_conn_kb, mem_per_conn_upgrade_kb;
} results;

/* ------------------------------------------------------ RTT baseline */

static void *echo_thread(void *arg)
{
    int fd = *(int *)arg;
    char buf[64];
    for (;;) {
        size_t got = 0;
        while (got < sizeof buf) {
            ssize_t n = recv(fd, buf + got, sizeof buf - got, 0);
            if (n <= 0)
                return NULL;
            got += (size_t)n;
        }
        if (send(fd, buf, sizeof buf, MSG_NOSIGNAL) != (ssize_t)sizeof buf)
            return NULL;
    }
}

static int tcp_listener(int *port)
{
    int l = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t al = sizeof a;
    if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof a) || listen(l, 8) ||
        getsockname(l, (struct sockaddr *)&a, &al)) {
        perror("bench_fanout: listen");
        if (l >= 0)
            close(l);
        return -1;
    }
    *port = ntohs(a.sin_port);
    return l;
}

static int tcp_connect(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons((uint16_t)port);
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a)) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

static int bench_rtt(results *r)
{
    int port, l = tcp_listener(&port);
    if (l < 0)
        return -1;
    int c = tcp_connect(port);
    int s = c >= 0 ? accept(l, NULL, NULL) : -1;
    close(l);
    if (c < 0 || s < 0) {
        perror("bench_fanout: rtt connect");
        return -1;
    }
    int one = 1;
    setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    pthread_t th;
    if (pthread_create(&th, NULL, echo_thread, &s)) {
        close(c);
        close(s);
        return -1;
    }
    uint64_t *v = malloc(RTT_ITERS * sizeof *v);
    char buf[64] = {0};
    int rc = v ? 0 : -1;
    for (int i = 0; !rc && i < RTT_ITERS + 1000; i++) {
        uint64_t t0 = now_ns();
        if (send(c, buf, sizeof buf, MSG_NOSIGNAL) != (ssize_t)sizeof buf)
            rc = -1;
        size_t got = 0;
        while (!rc && got < sizeof buf) {
            ssize_t n = recv(c, buf + got, sizeof buf - got, 0);
            if (n <= 0)
                rc = -1;
            else
                got += (size_t)n;
        }
        if (i >= 1000)
            v[i - 1000] = now_ns() - t0;
    }
    shutdown(c, SHUT_RDWR);
    pthread_join(th, NULL);
    close(c);
    close(s);
    if (!rc) {
        qsort(v, RTT_ITERS, sizeof *v, cmp_u64);
        r->rtt_p50_us = pct_ms(v, RTT_ITERS, 0.50) * 1000;
        r->rtt_p99_us = pct_ms(v, RTT_ITERS, 0.99) * 1000;
    } else {
        fprintf(stderr, "bench_fanout: rtt ping-pong failed\n");
    }
    free(v);
    return rc;
}

/* ------------------------------------------------------ LMDB baseline */

static int bench_raw(const char *dir, const options *o, size_t n, results *r)
{
    MDB_env *e;
    MDB_txn *t;
    MDB_dbi dbi;
    int rc = mdb_env_create(&e);
    if (rc)
        return fail("mdb_env_create", CRDTDB_EIO);
    mkdir(dir, 0700);
    rc = mdb_env_set_maxdbs(e, 4);
    if (!rc)
        rc = mdb_env_set_mapsize(e, (size_t)1 << 30);
    if (!rc)
        rc = mdb_env_open(e, dir, MDB_NOTLS | (o->durable ? 0 : MDB_NOSYNC), 0600);
    if (!rc)
        rc = mdb_txn_begin(e, NULL, 0, &t);
    if (!rc)
        rc = mdb_dbi_open(t, "records", MDB_CREATE, &dbi);
    if (!rc)
        rc = mdb_txn_commit(t);
    double t0 = now_s();
    char key[32], val[48];
    memset(val, 'v', sizeof val);
    for (size_t i = 0; !rc && i < n; i += TP_BATCH) {
        rc = mdb_txn_begin(e, NULL, 0, &t);
        for (size_t j = i; !rc && j < i + TP_BATCH && j < n; j++) {
            MDB_val k = {(size_t)snprintf(key, sizeof key, "items\x1fw0-%zu", j), key};
            MDB_val v = {sizeof val, val};
            rc = mdb_put(t, dbi, &k, &v, 0);
        }
        if (!rc)
            rc = mdb_txn_commit(t);
        else
            mdb_txn_abort(t);
    }
    double el = now_s() - t0;
    mdb_env_close(e);
    if (rc) {
        fprintf(stderr, "bench_fanout: raw LMDB: %s\n", mdb_strerror(rc));
        return -1;
    }
    r->raw_pps = (double)n / el;
    return 0;
}

/* ------------------------------------------------------------ server */

typedef struct server {
    crdtdb_env *env;
    crdtdb_server *srv;
    pthread_t th;
    atomic_int stop;
    int rc;
} server;

static void *server_thread(void *arg)
{
    server *s = arg;
    while (!atomic_load(&s->stop)) {
        int rc = crdtdb_server_run(s->srv, 20);
        if (rc) {
            s->rc = rc;
            break;
        }
    }
    return NULL;
}

static int server_open(crdtdb_env *env, size_t maxconn, crdtdb_server **out)
{
    crdtdb_server_options so;
    crdtdb_server_options_init(&so);
    so.port = 0;
    so.collections = COLLS;
    so.ncoll = 1;
    so.max_connections = maxconn;
    so.max_per_ip = SIZE_MAX; /* every client comes from 127.0.0.1 */
    int rc = crdtdb_server_open(env, &so, out);
    return rc ? fail("server open", rc) : 0;
}

/* The bulk database on the server: 10,000 records x 10 fields. */
static int fill_bulk(crdtdb_env *env, results *r)
{
    crdtdb_db *db;
    if (create_db(env, BULK_ID, &db))
        return -1;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    double t0 = now_s();
    int rc = 0;
    for (int i = 0; !rc && i < BULK_RECORDS; i += 1000) {
        crdtdb_txn *t;
        rc = crdtdb_txn_begin(db, 0, &t);
        for (int j = i; !rc && j < i + 1000; j++) {
            char id[32];
            snprintf(id, sizeof id, "rec-%05d", j);
            msgpack_sbuffer_clear(&sb);
            msgpack_pack_map(&pk, BULK_FIELDS);
            for (int f = 0; f < BULK_FIELDS; f++) {
                char k[8];
                int kl = snprintf(k, sizeof k, "f%d", f);
                msgpack_pack_str(&pk, (size_t)kl);
                msgpack_pack_str_body(&pk, k, (size_t)kl);
                msgpack_pack_uint64(&pk, (uint64_t)j * 100u + (uint64_t)f);
            }
            rc = crdtdb_db_add(db, t, COLL, id, (const uint8_t *)sb.data, sb.size);
        }
        if (!rc)
            rc = crdtdb_txn_commit(t);
        else
            crdtdb_txn_abort(t);
    }
    r->bulk_fill_s = now_s() - t0;
    msgpack_sbuffer_destroy(&sb);
    crdtdb_db_close(db);
    return rc ? fail("bulk fill", rc) : 0;
}

/* ------------------------------------------------------------ clients */

/*
 * Each client runs in its own thread, blocking in crdtdb_client_run until
 * its socket has something.  (A round robin of crdtdb_client_run(c, 0) in
 * one thread does not work with libwebsockets 4.1: ws.c's service() arms a
 * 0 us timer that lws finds already ripe and services before polling, so
 * nothing bounds the poll and run(c, 0) blocks until the next socket event
 * or lws-internal timer, milliseconds or more.)  Client 0 is the writer; the
 * main thread only switches phases and reads counters.
 */
enum { PH_IDLE, PH_LAT, PH_TP, PH_DRAIN };

typedef struct bench bench;

typedef struct client {
    bench *b;
    int idx;
    char dir[128];
    crdtdb_env *env;
    crdtdb_db *db;
    crdtdb_client *c;
    crdtdb_observer *obs;
    pthread_t th;
    int started;
    int rc;
    atomic_uint_fast64_t received; /* records from other clients */
    atomic_int caught_up;
    uint64_t *lat;                 /* per seq: arrival - send, ns; 0: none */
    /* writer state */
    uint64_t sent;                 /* latency writes done */
    double lat_t0;
    atomic_uint_fast64_t written;  /* throughput records written */
} client;

struct bench {
    options o;
    char root[64];
    char url[64];
    server srv;
    client cl[NCLIENT];
    atomic_int phase;
    atomic_int stop;
    size_t lat_total;
};

/* {"s": seq, "t": ns, "w": writer} -> fields; 0 if not that shape. */
static int parse_rec(const uint8_t *v, size_t len, uint64_t *s, uint64_t *t, uint64_t *w)
{
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    int ok = 0;
    if (msgpack_unpack_next(&u, (const char *)v, len, NULL) == MSGPACK_UNPACK_SUCCESS &&
        u.data.type == MSGPACK_OBJECT_MAP) {
        const msgpack_object_map *m = &u.data.via.map;
        for (uint32_t i = 0; i < m->size; i++) {
            const msgpack_object *k = &m->ptr[i].key, *x = &m->ptr[i].val;
            if (k->type != MSGPACK_OBJECT_STR || k->via.str.size != 1 ||
                x->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
                continue;
            switch (k->via.str.ptr[0]) {
            case 's':
                *s = x->via.u64;
                ok |= 1;
                break;
            case 't':
                *t = x->via.u64;
                ok |= 2;
                break;
            case 'w':
                *w = x->via.u64;
                ok |= 4;
                break;
            }
        }
    }
    msgpack_unpacked_destroy(&u);
    return ok == 7;
}

static void on_change(void *ctx, const crdtdb_event *ev)
{
    client *c = ctx;
    bench *b = c->b;
    if (ev->type != CRDTDB_EVENT_ADD && ev->type != CRDTDB_EVENT_UPDATE)
        return;
    uint64_t s = 0, t = 0, w = 0;
    if (!ev->value || !parse_rec(ev->value, ev->len, &s, &t, &w) || w == (uint64_t)c->idx)
        return;
    if (atomic_load(&b->phase) == PH_LAT && ev->id && ev->id[0] == 'L' && s < b->lat_total)
        c->lat[s] = now_ns() - t;
    atomic_fetch_add(&c->received, 1);
}

static void on_session(void *ctx, const crdtdb_session_event *ev)
{
    client *c = ctx;
    if (ev->type == CRDTDB_SESSION_CAUGHT_UP)
        atomic_store(&c->caught_up, 1);
    else if (ev->type == CRDTDB_SESSION_ERROR)
        fprintf(stderr, "bench_fanout: client %d session error %s: %s\n", c->idx,
                crdtdb_errname(ev->error), ev->message ? ev->message : "");
}

static int client_start(bench *b, client *c)
{
    crdtdb_client_options co;
    crdtdb_client_options_init(&co);
    co.url = b->url;
    co.backoff_min_ms = 5;
    co.backoff_max_ms = 50;
    co.on_event = on_session;
    co.ctx = c;
    int rc = crdtdb_client_open(c->db, &co, &c->c);
    return rc ? fail("client open", rc) : 0;
}

/* Adds `n` records <tag><writer>-<seq0 + i> in one transaction. */
static int write_batch(client *c, msgpack_sbuffer *sb, msgpack_packer *pk, char tag,
                       uint64_t seq0, size_t n)
{
    crdtdb_txn *t;
    int rc = crdtdb_txn_begin(c->db, 0, &t);
    if (rc)
        return fail("begin", rc);
    for (size_t i = 0; !rc && i < n; i++) {
        char id[48];
        uint64_t s = seq0 + i;
        snprintf(id, sizeof id, "%c%d-%llu", tag, c->idx, (unsigned long long)s);
        msgpack_sbuffer_clear(sb);
        msgpack_pack_map(pk, 3);
        msgpack_pack_str(pk, 1);
        msgpack_pack_str_body(pk, "s", 1);
        msgpack_pack_uint64(pk, s);
        msgpack_pack_str(pk, 1);
        msgpack_pack_str_body(pk, "t", 1);
        msgpack_pack_uint64(pk, now_ns());
        msgpack_pack_str(pk, 1);
        msgpack_pack_str_body(pk, "w", 1);
        msgpack_pack_uint64(pk, (uint64_t)c->idx);
        rc = crdtdb_db_add(c->db, t, COLL, id, (const uint8_t *)sb->data, sb->size);
    }
    if (rc) {
        crdtdb_txn_abort(t);
        return fail("write", rc);
    }
    rc = crdtdb_txn_commit(t);
    return rc ? fail("commit", rc) : 0;
}

static uint64_t min_received(bench *b)
{
    uint64_t m = UINT64_MAX;
    for (int i = 1; i < NCLIENT; i++) {
        uint64_t v = atomic_load(&b->cl[i].received);
        if (v < m)
            m = v;
    }
    return m;
}

static uint64_t sum_received(bench *b)
{
    uint64_t s = 0;
    for (int i = 1; i < NCLIENT; i++)
        s += atomic_load(&b->cl[i].received);
    return s;
}

/* The writer's duties in the current phase; the service timeout in ms. */
static int writer_step(bench *b, client *c, msgpack_sbuffer *sb, msgpack_packer *pk,
                       uint64_t *tp_base)
{
    int ph = atomic_load(&b->phase);
    if (ph == PH_LAT && c->sent < b->lat_total) {
        double period = 1.0 / b->o.rate, t = now_s();
        if (c->sent == 0 && c->lat_t0 == 0)
            c->lat_t0 = t;
        if (t >= c->lat_t0 + (double)c->sent * period) {
            if (write_batch(c, sb, pk, 'L', c->sent, 1))
                return -1;
            c->sent++;
        }
        return 1;
    }
    if (ph == PH_TP) {
        uint64_t w = atomic_load(&c->written);
        if (*tp_base == UINT64_MAX)
            *tp_base = min_received(b); /* receivers' counts before this phase */
        if (min_received(b) - *tp_base + (uint64_t)TP_WINDOW * TP_BATCH > w) {
            if (write_batch(c, sb, pk, 'T', w, TP_BATCH))
                return -1;
            atomic_store(&c->written, w + TP_BATCH);
        }
        return 1;
    }
    return 20;
}

static void *client_thread(void *arg)
{
    client *c = arg;
    bench *b = c->b;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    uint64_t tp_base = UINT64_MAX;
    while (!atomic_load(&b->stop)) {
        int to = c->idx == 0 ? writer_step(b, c, &sb, &pk, &tp_base) : 20;
        if (to < 0) {
            c->rc = -1;
            break;
        }
        int rc = crdtdb_client_run(c->c, to);
        if (rc) {
            c->rc = fail("client run", rc);
            break;
        }
    }
    msgpack_sbuffer_destroy(&sb);
    return NULL;
}

static int clients_open(bench *b)
{
    for (int i = 0; i < NCLIENT; i++) {
        client *c = &b->cl[i];
        c->b = b;
        c->idx = i;
        snprintf(c->dir, sizeof c->dir, "%s/c%02d", b->root, i);
        c->lat = calloc(b->lat_total, sizeof *c->lat);
        if (!c->lat)
            return fail("clients", CRDTDB_ENOMEM);
        if (open_env(c->dir, &b->o, 1u << 30, &c->env) || create_db(c->env, DB_ID, &c->db))
            return -1;
        int rc = crdtdb_db_observe(c->db, COLL, on_change, c, &c->obs);
        if (rc)
            return fail("observe", rc);
        if (client_start(b, c))
            return -1;
    }
    for (int i = 0; i < NCLIENT; i++) {
        if (pthread_create(&b->cl[i].th, NULL, client_thread, &b->cl[i]))
            return fail("client thread", CRDTDB_ENOMEM);
        b->cl[i].started = 1;
    }
    return 0;
}

/* Stops and joins the threads; -1 if one failed. */
static int clients_stop(bench *b)
{
    int rc = 0;
    atomic_store(&b->stop, 1);
    for (int i = 0; i < NCLIENT; i++)
        if (b->cl[i].started) {
            pthread_join(b->cl[i].th, NULL);
            b->cl[i].started = 0;
            rc |= b->cl[i].rc;
        }
    return rc ? -1 : 0;
}

static void clients_close(bench *b)
{
    for (int i = 0; i < NCLIENT; i++) {
        client *c = &b->cl[i];
        crdtdb_client_close(c->c);
        crdtdb_observer_close(c->obs);
        crdtdb_db_close(c->db);
        crdtdb_env_close(c->env);
        free(c->lat);
        c->c = NULL;
        c->obs = NULL;
        c->db = NULL;
        c->env = NULL;
        c->lat = NULL;
    }
}

static int any_failed(bench *b)
{
    for (int i = 0; i < NCLIENT; i++)
        if (b->cl[i].rc)
            return 1;
    return 0;
}

static int wait_connected(bench *b, double secs)
{
    double end = now_s() + secs;
    while (now_s() < end && !any_failed(b)) {
        int n = 0;
        for (int i = 0; i < NCLIENT; i++)
            n += atomic_load(&b->cl[i].caught_up);
        if (n == NCLIENT)
            return 0;
        sleep_ms(2);
    }
    fprintf(stderr, "bench_fanout: clients did not connect\n");
    return -1;
}

static int bench_latency(bench *b)
{
    uint64_t base = min_received(b);
    atomic_store(&b->phase, PH_LAT);
    double deadline = now_s() + (double)b->lat_total / b->o.rate + 3.0;
    while (now_s() < deadline && !any_failed(b)) {
        if (min_received(b) - base >= b->lat_total)
            break;
        sleep_ms(5);
    }
    atomic_store(&b->phase, PH_IDLE);
    return any_failed(b) ? -1 : 0;
}

/* After the threads are joined. */
static int latency_stats(bench *b, results *r)
{
    uint64_t *v = malloc(LAT_WRITES * sizeof *v);
    if (!v)
        return fail("latency", CRDTDB_ENOMEM);
    size_t n = 0;
    double sum = 0;
    for (size_t s = LAT_WARM; s < b->lat_total; s++) {
        uint64_t mx = 0;
        int all = 1;
        for (int i = 1; i < NCLIENT; i++) {
            if (!b->cl[i].lat[s])
                all = 0;
            else if (b->cl[i].lat[s] > mx)
                mx = b->cl[i].lat[s];
        }
        if (!all) {
            r->lat_lost++;
            continue;
        }
        v[n++] = mx;
        sum += (double)mx;
    }
    qsort(v, n, sizeof *v, cmp_u64);
    r->lat_n = n;
    r->lat_p50 = pct_ms(v, n, 0.50);
    r->lat_p99 = pct_ms(v, n, 0.99);
    r->lat_max = n ? (double)v[n - 1] / 1e6 : 0;
    r->lat_mean = n ? sum / (double)n / 1e6 : 0;
    free(v);
    return 0;
}

static int bench_throughput(bench *b, results *r)
{
    client *w = &b->cl[0];
    atomic_store(&b->phase, PH_TP);
    sleep_ms((int)(TP_WARM_S * 1000));
    double m0 = now_s();
    uint64_t recv0 = sum_received(b), w0 = atomic_load(&w->written);
    while (now_s() < m0 + TP_SECONDS && !any_failed(b))
        sleep_ms(5);
    double el = now_s() - m0;
    uint64_t recv1 = sum_received(b), w1 = atomic_load(&w->written);
    atomic_store(&b->phase, PH_DRAIN);
    r->deliv_ps = (double)(recv1 - recv0) / el;
    r->writes_ps = (double)(w1 - w0) / el;
    /* drain, so the next phase starts quiet */
    uint64_t want = (uint64_t)(NCLIENT - 1) * w1;
    double end = now_s() + 5;
    uint64_t lat_recv = (uint64_t)(NCLIENT - 1) * b->lat_total;
    while (sum_received(b) < want + lat_recv && now_s() < end && !any_failed(b))
        sleep_ms(5);
    return any_failed(b) ? -1 : 0;
}

/* Count records (query callback). */
static int count_cb(void *ctx, const char *id, const uint8_t *v, size_t len)
{
    (void)id;
    (void)v;
    (void)len;
    (*(size_t *)ctx)++;
    return 0;
}

static int bench_sync(bench *b, results *r)
{
    double ms[SYNC_ROUNDS], envms[SYNC_ROUNDS];
    for (int k = 0; k < SYNC_ROUNDS; k++) {
        client c;
        memset(&c, 0, sizeof c);
        c.b = b;
        c.idx = 100 + k;
        snprintf(c.dir, sizeof c.dir, "%s/sync%d", b->root, k);
        double t0 = now_s();
        if (open_env(c.dir, &b->o, 0, &c.env) || create_db(c.env, BULK_ID, &c.db))
            return -1;
        double t1 = now_s();
        if (client_start(b, &c))
            return -1;
        double end = t1 + 20;
        int rc = 0;
        while (!atomic_load(&c.caught_up) && !rc && now_s() < end)
            rc = crdtdb_client_run(c.c, 1);
        double t2 = now_s();
        size_t n = 0;
        if (!rc)
            rc = crdtdb_db_query(c.db, NULL, COLL, NULL, 0, count_cb, &n);
        crdtdb_client_close(c.c);
        crdtdb_db_close(c.db);
        crdtdb_env_close(c.env);
        rmrf(c.dir);
        if (rc)
            return fail("sync", rc);
        if (!atomic_load(&c.caught_up) || n != BULK_RECORDS) {
            fprintf(stderr, "bench_fanout: sync: caught_up=%d, %zu of %d records\n",
                    atomic_load(&c.caught_up), n, BULK_RECORDS);
            return -1;
        }
        r->sync_records = n;
        ms[k] = (t2 - t1) * 1000;
        envms[k] = (t1 - t0) * 1000;
    }
    /* sort the 3 */
    for (int i = 0; i < SYNC_ROUNDS; i++)
        for (int j = i + 1; j < SYNC_ROUNDS; j++)
            if (ms[j] < ms[i]) {
                double x = ms[i];
                ms[i] = ms[j];
                ms[j] = x;
            }
    r->sync_best_ms = ms[0];
    r->sync_med_ms = ms[SYNC_ROUNDS / 2];
    r->sync_envopen_ms = envms[0];
    return 0;
}

/* ------------------------------------------------- memory (child server) */

static volatile sig_atomic_t child_stop;

static void on_term(int sig)
{
    (void)sig;
    child_stop = 1;
}

/* The child: a server on its own environment; writes its port to wfd. */
static void mem_child(const char *dir, const options *o, int wfd)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_term;
    sigaction(SIGTERM, &sa, NULL);
    crdtdb_env *env = NULL;
    crdtdb_server *srv = NULL;
    int port = -1;
    if (open_env(dir, o, 0, &env) == 0 && server_open(env, 4096, &srv) == 0)
        port = crdtdb_server_port(srv);
    if (write(wfd, &port, sizeof port) != (ssize_t)sizeof port)
        port = -1;
    close(wfd);
    while (port > 0 && !child_stop)
        if (crdtdb_server_run(srv, 50))
            break;
    crdtdb_server_close(srv);
    crdtdb_env_close(env);
    _exit(0);
}

/* The session hello a client sends for database IDLE_ID, as one masked
 * WebSocket binary frame (mask key 0). */
static int make_hello_frame(const char *dir, const options *o, uint8_t *out, size_t cap,
                            size_t *outlen)
{
    crdtdb_env *env;
    crdtdb_db *db;
    crdtdb_session *s;
    if (open_env(dir, o, 0, &env))
        return -1;
    if (create_db(env, IDLE_ID, &db)) {
        crdtdb_env_close(env);
        return -1;
    }
    crdtdb_session_options so;
    crdtdb_session_options_init(&so);
    int rc = crdtdb_session_open(db, &so, &s);
    if (rc) {
        crdtdb_db_close(db);
        crdtdb_env_close(env);
        return fail("session", rc);
    }
    size_t len;
    const uint8_t *p = crdtdb_session_output(s, &len);
    size_t h = len < 126 ? 6 : 8;
    rc = (!p || len + h > cap || len > 65535) ? -1 : 0;
    if (!rc) {
        out[0] = 0x82;
        if (len < 126) {
            out[1] = (uint8_t)(0x80 | len);
        } else {
            out[1] = 0x80 | 126;
            out[2] = (uint8_t)(len >> 8);
            out[3] = (uint8_t)len;
        }
        memset(out + h - 4, 0, 4);
        memcpy(out + h, p, len);
        *outlen = h + len;
    }
    crdtdb_session_close(s);
    crdtdb_db_close(db);
    crdtdb_env_close(env);
    if (rc)
        fprintf(stderr, "bench_fanout: no hello\n");
    return rc;
}

static void drain_nb(int fd)
{
    char buf[4096];
    while (recv(fd, buf, sizeof buf, MSG_DONTWAIT) > 0)
        ;
}

static int bench_memory(bench *b, pid_t child, int port, results *r)
{
    char hdir[160];
    uint8_t hello[4096];
    size_t hlen = 0;
    snprintf(hdir, sizeof hdir, "%s/hello", b->root);
    if (make_hello_frame(hdir, &b->o, hello, sizeof hello, &hlen))
        return -1;
    int *fd = malloc(MEM_CONNS * sizeof *fd);
    if (!fd)
        return fail("memory", CRDTDB_ENOMEM);
    sleep_ms(200);
    r->mem_base_kb = vmrss_kb(child);
    char req[512];
    int rl = snprintf(req, sizeof req,
                      "GET /v1/db/" IDLE_ID " HTTP/1.1\r\n"
                      "Host: 127.0.0.1:%d\r\n"
                      "Upgrade: websocket\r\n"
                      "Connection: Upgrade\r\n"
                      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                      "Sec-WebSocket-Protocol: crdtdb-sync\r\n"
                      "Sec-WebSocket-Version: 13\r\n\r\n",
                      port);
    size_t n = 0;
    int rc = 0;
    /* connect in groups of 100: send the upgrades, then read the 101s */
    for (size_t g = 0; !rc && g < MEM_CONNS; g += 100) {
        for (size_t i = g; i < g + 100; i++) {
            fd[i] = tcp_connect(port);
            if (fd[i] < 0 || send(fd[i], req, (size_t)rl, MSG_NOSIGNAL) != rl) {
                perror("bench_fanout: memory connect");
                rc = -1;
                if (fd[i] >= 0)
                    n = i + 1;
                else
                    n = i;
                break;
            }
            struct timeval tv = {5, 0};
            setsockopt(fd[i], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
            n = i + 1;
        }
        for (size_t i = g; !rc && i < g + 100; i++) {
            char buf[1024];
            size_t got = 0;
            while (got < sizeof buf - 1) {
                ssize_t k = recv(fd[i], buf + got, sizeof buf - 1 - got, 0);
                if (k <= 0)
                    break;
                got += (size_t)k;
                buf[got] = 0;
                if (strstr(buf, "\r\n\r\n"))
                    break;
            }
            buf[got] = 0;
            if (strncmp(buf, "HTTP/1.1 101", 12) != 0) {
                fprintf(stderr, "bench_fanout: connection %zu not upgraded: %.40s\n", i, buf);
                rc = -1;
            }
        }
    }
    if (!rc) {
        sleep_ms(300);
        r->mem_upgraded_kb = vmrss_kb(child);
        for (size_t i = 0; !rc && i < n; i++)
            if (send(fd[i], hello, hlen, MSG_NOSIGNAL) != (ssize_t)hlen)
                rc = -1;
        sleep_ms(500);
        for (size_t i = 0; i < n; i++)
            drain_nb(fd[i]);
        sleep_ms(200);
        r->mem_hello_kb = vmrss_kb(child);
        r->mem_conns = n;
        r->mem_per_conn_kb = (double)(r->mem_hello_kb - r->mem_base_kb) / (double)n;
        r->mem_per_conn_upgrade_kb = (double)(r->mem_upgraded_kb - r->mem_base_kb) / (double)n;
        int st;
        if (waitpid(child, &st, WNOHANG) == child) {
            fprintf(stderr, "bench_fanout: memory server died\n");
            rc = -1;
        }
    }
    for (size_t i = 0; i < n; i++)
        close(fd[i]);
    free(fd);
    return rc;
}

/* ---------------------------------------------------------------- output */

static void print_human(const bench *b, const results *r)
{
    printf("bench_fanout: 1 server thread + %d clients on 127.0.0.1, %s\n", NCLIENT,
           b->o.durable ? "durable (fsync)" : "nosync");
    printf("baseline: loopback TCP ping-pong RTT p50 %.1f us, p99 %.1f us\n", r->rtt_p50_us,
           r->rtt_p99_us);
    printf("latency write -> all %d receivers at %d writes/s (%zu writes, %zu lost): "
           "p50 %.3f ms (%.1fx RTT), p99 %.3f ms (%.1fx RTT) (goal <= %.1f ms) %s, "
           "mean %.3f ms, max %.3f ms\n",
           NCLIENT - 1, b->o.rate, r->lat_n, r->lat_lost, r->lat_p50,
           ratio(r->lat_p50 * 1000, r->rtt_p50_us), r->lat_p99,
           ratio(r->lat_p99 * 1000, r->rtt_p50_us), GOAL_P99_MS,
           r->lat_n && !r->lat_lost && r->lat_p99 <= GOAL_P99_MS ? "PASS" : "FAIL",
           r->lat_mean, r->lat_max);
    printf("fan-out: %.0f field deliveries/s (%.0f writes/s x %d receivers, batches of %d) "
           "(goal >= %.0f) %s; raw LMDB %.0f puts/s, ratio %.3f\n",
           r->deliv_ps, r->writes_ps, NCLIENT - 1, TP_BATCH, GOAL_DELIV,
           r->deliv_ps >= GOAL_DELIV ? "PASS" : "FAIL", r->raw_pps,
           ratio(r->deliv_ps, r->raw_pps));
    printf("initial sync of %d fields (%zu records): best %.1f ms, median %.1f ms of %d "
           "(goal <= %.0f ms) %s; %.1f fields/ms; env open+create %.1f ms; server fill "
           "%.2f s\n",
           BULK_RECORDS * BULK_FIELDS, r->sync_records, r->sync_best_ms, r->sync_med_ms,
           SYNC_ROUNDS, GOAL_SYNC_MS, r->sync_med_ms <= GOAL_SYNC_MS ? "PASS" : "FAIL",
           ratio(BULK_RECORDS * BULK_FIELDS, r->sync_best_ms), r->sync_envopen_ms,
           r->bulk_fill_s);
    printf("memory: server VmRSS %ld kB idle, %ld kB with %zu upgraded connections, %ld kB "
           "after their hellos: %.1f kB per idle connection (goal <= %.0f) %s "
           "(%.1f kB upgraded only)\n",
           r->mem_base_kb, r->mem_upgraded_kb, r->mem_conns, r->mem_hello_kb,
           r->mem_per_conn_kb, GOAL_MEM_KB, r->mem_per_conn_kb <= GOAL_MEM_KB ? "PASS" : "FAIL",
           r->mem_per_conn_upgrade_kb);
}

static void print_json(const bench *b, const results *r)
{
    printf("{\"clients\":%d,\"durable\":%s,"
           "\"rtt_p50_us\":%.2f,\"rtt_p99_us\":%.2f,"
           "\"latency_rate\":%d,\"latency_writes\":%zu,\"latency_lost\":%zu,"
           "\"latency_p50_ms\":%.4f,\"latency_p99_ms\":%.4f,\"latency_mean_ms\":%.4f,"
           "\"latency_max_ms\":%.4f,\"latency_p50_rtt_ratio\":%.2f,"
           "\"latency_p99_rtt_ratio\":%.2f,"
           "\"deliveries_per_s\":%.0f,\"writes_per_s\":%.0f,\"batch\":%d,"
           "\"raw_put_per_s\":%.0f,\"delivery_raw_ratio\":%.4f,"
           "\"sync_fields\":%d,\"sync_best_ms\":%.2f,\"sync_median_ms\":%.2f,"
           "\"sync_env_open_ms\":%.2f,\"bulk_fill_s\":%.3f,"
           "\"mem_conns\":%zu,\"mem_base_kb\":%ld,\"mem_upgraded_kb\":%ld,"
           "\"mem_hello_kb\":%ld,\"mem_per_conn_kb\":%.2f,"
           "\"mem_per_conn_upgrade_only_kb\":%.2f,"
           "\"goal_p99_ms\":%.2f,\"goal_deliveries_per_s\":%.0f,\"goal_sync_ms\":%.0f,"
           "\"goal_mem_kb\":%.0f}\n",
           NCLIENT, b->o.durable ? "true" : "false", r->rtt_p50_us, r->rtt_p99_us, b->o.rate,
           r->lat_n, r->lat_lost, r->lat_p50, r->lat_p99, r->lat_mean, r->lat_max,
           ratio(r->lat_p50 * 1000, r->rtt_p50_us), ratio(r->lat_p99 * 1000, r->rtt_p50_us),
           r->deliv_ps, r->writes_ps, TP_BATCH, r->raw_pps, ratio(r->deliv_ps, r->raw_pps),
           BULK_RECORDS * BULK_FIELDS, r->sync_best_ms, r->sync_med_ms, r->sync_envopen_ms,
           r->bulk_fill_s, r->mem_conns, r->mem_base_kb, r->mem_upgraded_kb, r->mem_hello_kb,
           r->mem_per_conn_kb, r->mem_per_conn_upgrade_kb, GOAL_P99_MS, GOAL_DELIV,
           GOAL_SYNC_MS, GOAL_MEM_KB);
}

/* ------------------------------------------------------------------ main */

static int parse_args(int argc, char **argv, options *o)
{
    memset(o, 0, sizeof *o);
    o->rate = 1000;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0)
            o->json = 1;
        else if (strcmp(argv[i], "--durable") == 0)
            o->durable = 1;
        else if (strcmp(argv[i], "--rate") == 0 && i + 1 < argc && atoi(argv[i + 1]) > 0)
            o->rate = atoi(argv[++i]);
        else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0)
            return 1;
        else {
            fprintf(stderr, "bench_fanout: unknown argument '%s'\n", argv[i]);
            return -1;
        }
    }
    return 0;
}

static void raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl))
        return;
    rlim_t want = 4096;
    if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < want)
        want = rl.rlim_max;
    if (rl.rlim_cur < want) {
        rl.rlim_cur = want;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

int main(int argc, char **argv)
{
    static bench b;
    results r;
    memset(&r, 0, sizeof r);
    int a = parse_args(argc, argv, &b.o);
    if (a) {
        fprintf(a > 0 ? stdout : stderr, "usage: bench_fanout [--durable] [--rate N] [--json]\n"
                "  --rate N   latency phase writes/s (default 1000)\n"
                "  --durable  fsync'ed environments (default: CRDTDB_ENV_NOSYNC)\n"
                "  --json     print one JSON object with all numbers\n");
        return a > 0 ? 0 : 2;
    }
    signal(SIGPIPE, SIG_IGN);
    lws_set_log_level(LLL_ERR, NULL);
    raise_nofile();
    snprintf(b.root, sizeof b.root, "/tmp/bench_fanout-XXXXXX");
    if (!mkdtemp(b.root)) {
        perror("bench_fanout: mkdtemp");
        return 1;
    }
    int rc = 0;

    /* memory first, before any thread exists: fork the child server */
    char mdir[128];
    snprintf(mdir, sizeof mdir, "%s/memsrv", b.root);
    int pfd[2];
    pid_t child = -1;
    if (pipe(pfd)) {
        perror("bench_fanout: pipe");
        rc = -1;
    } else {
        fflush(stdout);
        child = fork();
        if (child == 0) {
            close(pfd[0]);
            mem_child(mdir, &b.o, pfd[1]);
        }
        close(pfd[1]);
        int port = -1;
        if (child < 0 || read(pfd[0], &port, sizeof port) != (ssize_t)sizeof port || port <= 0) {
            fprintf(stderr, "bench_fanout: memory server did not start\n");
            rc = -1;
        }
        close(pfd[0]);
        if (!rc)
            rc = bench_memory(&b, child, port, &r);
        if (child > 0) {
            kill(child, SIGTERM);
            waitpid(child, NULL, 0);
        }
    }

    char sdir[128], rdir[128];
    snprintf(sdir, sizeof sdir, "%s/server", b.root);
    snprintf(rdir, sizeof rdir, "%s/raw", b.root);
    int started = 0;
    if (!rc)
        rc = bench_rtt(&r);
    if (!rc)
        rc = bench_raw(rdir, &b.o, 200000, &r);
    if (!rc)
        rc = open_env(sdir, &b.o, 0, &b.srv.env);
    if (!rc)
        rc = fill_bulk(b.srv.env, &r);
    if (!rc)
        rc = server_open(b.srv.env, 1024, &b.srv.srv);
    if (!rc) {
        snprintf(b.url, sizeof b.url, "ws://127.0.0.1:%d", crdtdb_server_port(b.srv.srv));
        if (pthread_create(&b.srv.th, NULL, server_thread, &b.srv))
            rc = fail("server thread", CRDTDB_ENOMEM);
        else
            started = 1;
    }
    b.lat_total = LAT_WARM + LAT_WRITES;
    if (!rc)
        rc = clients_open(&b);
    if (!rc)
        rc = wait_connected(&b, 10);
    if (!rc)
        rc = bench_latency(&b);
    if (!rc)
        rc = bench_throughput(&b, &r);
    if (clients_stop(&b))
        rc = -1;
    if (!rc)
        rc = latency_stats(&b, &r);
    clients_close(&b);
    if (!rc)
        rc = bench_sync(&b, &r);
    if (started) {
        atomic_store(&b.srv.stop, 1);
        pthread_join(b.srv.th, NULL);
        if (!rc && b.srv.rc)
            rc = fail("server run", b.srv.rc);
    }
    crdtdb_server_close(b.srv.srv);
    crdtdb_env_close(b.srv.env);
    if (!rc) {
        if (b.o.json)
            print_json(&b, &r);
        else
            print_human(&b, &r);
    }
    rmrf(b.root);
    return rc ? 1 : 0;
}
