/*
 * bench_hostile — a sync server under hostile clients, on 127.0.0.1 only.
 *
 * A server child (the library's default limits, except no per-address cap:
 * every client here comes from 127.0.0.1) serves a database of --db-mb MiB.
 * For each attack, --hostile connections (default 200) do it for --phase-ms
 * while this process samples the child's resident memory and an honest
 * client's connect latency (TCP connect to the server's session hello).
 * Both are compared with a baseline taken at rest in the same run:
 *
 *   park    hello, then a message announced as 4,000,000 bytes, 3.9 MB of
 *           it sent, the rest never
 *   noread  hello, "everything since 0", then never read a byte
 *   idle    upgraded, then silent: no hello
 *   slow    hello, then one byte per second of a WebSocket frame
 *   costly  hello, then one delta of 20,000 record groups alternating
 *           between a 10,000-field record and 8 others (the shape that
 *           once made every group load and store its record): applied in
 *           the server's queue, a slice of its loop at a time
 *
 * Results are ratios to the baseline (and the absolute values), one line
 * per phase, or JSON with --json.  The run stops by itself: about 35 s with
 * the defaults, --phase-ms for longer phases (e.g. 70000 to see pings drop
 * the silent ones).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <libwebsockets.h>

#include "bench_util.h"
#include "crdtdb_ws.h"

const char bench_name[] = "bench_hostile";

#define DB_ID "game"
#define PARK_ANNOUNCED 4000000u /* the session frame's announced length */
#define PARK_SENT 3900000u      /* what a parker sends of it */
#define SAMPLE_MS 250           /* between honest connects */
#define HONEST_TIMEOUT_MS 5000  /* an honest connect slower than this failed */
#define CHILD_LIFETIME_S 600    /* the server child never outlives this */

static const char *COLLS[] = {"players", "moves"};

typedef struct options {
    size_t hostile, phase_ms, db_mb, budget_mb;
    int json;
} options;

/* ------------------------------------------------------------- helpers */

static uint64_t now_ms(void) { return (uint64_t)(bench_now() * 1000.0); }

/* The child's resident set, bytes; 0 if unknown. */
static size_t rss_of(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    size_t kb = 0;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %zu kB", &kb) == 1)
            break;
    if (f)
        fclose(f);
    return kb * 1024;
}

/* A blocking TCP connection to 127.0.0.1:port, or -1. */
static int tcp_connect(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa)) {
        close(fd);
        return -1;
    }
    return fd;
}

static int upgrade_request(char *buf, size_t cap, int port)
{
    return snprintf(buf, cap,
                    "GET /v1/db/" DB_ID " HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
                    "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                    "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: crdtdb-sync\r\n\r\n",
                    port);
}

/* A masked (key 0) binary WebSocket frame header for n payload bytes into
 * h (14 bytes); its length. */
static size_t ws_header(uint8_t *h, size_t n)
{
    size_t k = 0;
    h[k++] = 0x82;
    if (n < 126) {
        h[k++] = (uint8_t)(0x80 | n);
    } else if (n < 65536) {
        h[k++] = 0x80 | 126;
        h[k++] = (uint8_t)(n >> 8);
        h[k++] = (uint8_t)n;
    } else {
        h[k++] = 0x80 | 127;
        for (int i = 7; i >= 0; i--)
            h[k++] = (uint8_t)((uint64_t)n >> (8 * i));
    }
    memset(h + k, 0, 4); /* mask key 0: the payload goes as is */
    return k + 4;
}

/* What the hostile clients send: the hello and SINCE 0 as WebSocket frames
 * (made by a client session of a replica of their own), and the parked
 * message. */
typedef struct wire {
    uint8_t hello[512];
    size_t hello_len;
    uint8_t since[16];
    size_t since_len;
    uint8_t *park; /* ws header + session header + zeros */
    size_t park_len;
    uint8_t *costly; /* ws header + session DELTA frame */
    size_t costly_len;
} wire;

/* Keeps the first delta of an export. */
static int keep_first(void *ctx, const uint8_t *p, size_t len)
{
    crdtdb_buf *b = ctx;
    if (b->len)
        return 0;
    b->data = malloc(len);
    if (!b->data)
        return CRDTDB_ENOMEM;
    memcpy(b->data, p, len);
    b->len = b->cap = len;
    return 0;
}

/* The costly delta: one transaction writing field i of record "big" and
 * of record "s<i%8>" in turn, so the log alternates between records and
 * the export makes a group per write.  As a session DELTA in a WebSocket
 * frame. */
static int make_costly(crdtdb_db *db, wire *w)
{
    crdtdb_txn *t;
    int rc = crdtdb_txn_begin(db, 0, &t);
    crdtdb_buf v = CRDTDB_BUF_INIT;
    for (int i = 0; !rc && i < 10000; i++) {
        char json[48], id[8];
        snprintf(json, sizeof json, "{\"f%d\":%d}", i, i);
        snprintf(id, sizeof id, "s%d", i % 8);
        rc = crdtdb_json_to_msgpack(json, strlen(json), 0, &v, NULL, 0);
        if (!rc)
            rc = i < 8 ? crdtdb_db_add(db, t, "players", id, v.data, v.len)
                       : crdtdb_db_update(db, t, "players", id, v.data, v.len);
        if (!rc)
            rc = i == 0 ? crdtdb_db_add(db, t, "players", "big", v.data, v.len)
                        : crdtdb_db_update(db, t, "players", "big", v.data, v.len);
    }
    crdtdb_buf_free(&v);
    if (rc) {
        crdtdb_txn_abort(t);
        return bench_fail("costly writes", rc, crdtdb_db_errmsg(db));
    }
    if ((rc = crdtdb_txn_commit(t)))
        return bench_fail("costly commit", rc, crdtdb_db_errmsg(db));
    crdtdb_export_options eo;
    memset(&eo, 0, sizeof eo);
    eo.max_bytes = (size_t)4 << 20;
    crdtdb_buf d = CRDTDB_BUF_INIT;
    if ((rc = crdtdb_db_export_for(db, 0, NULL, &eo, keep_first, &d, NULL)))
        return bench_fail("costly export", rc, crdtdb_db_errmsg(db));
    /* [3, bin32 delta] */
    size_t body = 1 + 1 + 5 + d.len;
    w->costly = malloc(14 + 4 + body);
    if (!w->costly) {
        crdtdb_buf_free(&d);
        return bench_oom();
    }
    size_t k = ws_header(w->costly, 4 + body);
    uint8_t *f = w->costly + k;
    f[0] = (uint8_t)(body >> 24), f[1] = (uint8_t)(body >> 16), f[2] = (uint8_t)(body >> 8);
    f[3] = (uint8_t)body;
    f[4] = 0x92, f[5] = 0x03, f[6] = 0xc6;
    f[7] = (uint8_t)(d.len >> 24), f[8] = (uint8_t)(d.len >> 16), f[9] = (uint8_t)(d.len >> 8);
    f[10] = (uint8_t)d.len;
    memcpy(f + 11, d.data, d.len);
    w->costly_len = k + 4 + body;
    crdtdb_buf_free(&d);
    return 0;
}

static int make_wire(const char *dir, wire *w)
{
    crdtdb_env *env;
    crdtdb_db *db;
    crdtdb_session *s;
    if (bench_env_open(dir, 1, &env))
        return -1;
    int rc = crdtdb_db_create(env, DB_ID, COLLS, 2, &db);
    if (rc) {
        crdtdb_env_close(env);
        return bench_fail("client db", rc, NULL);
    }
    crdtdb_session_options so;
    crdtdb_session_options_init(&so);
    rc = crdtdb_session_open(db, &so, &s);
    size_t n = 0;
    const uint8_t *p = rc ? NULL : crdtdb_session_output(s, &n);
    if (p && n + 14 <= sizeof w->hello) {
        w->hello_len = ws_header(w->hello, n);
        memcpy(w->hello + w->hello_len, p, n);
        w->hello_len += n;
    } else {
        rc = rc ? rc : CRDTDB_ETOOBIG;
    }
    crdtdb_session_close(s);
    if (!rc && make_costly(db, w))
        rc = CRDTDB_EIO;
    crdtdb_db_close(db);
    crdtdb_env_close(env);
    if (rc)
        return bench_fail("client hello", rc, NULL);
    static const uint8_t since[7] = {0, 0, 0, 3, 0x92, 0x02, 0x00}; /* [SINCE, 0] */
    w->since_len = ws_header(w->since, sizeof since);
    memcpy(w->since + w->since_len, since, sizeof since);
    w->since_len += sizeof since;
    w->park = calloc(1, PARK_SENT + 14);
    if (!w->park)
        return bench_oom();
    w->park_len = ws_header(w->park, PARK_SENT);
    uint8_t *f = w->park + w->park_len;
    f[0] = (uint8_t)(PARK_ANNOUNCED >> 24);
    f[1] = (uint8_t)(PARK_ANNOUNCED >> 16);
    f[2] = (uint8_t)(PARK_ANNOUNCED >> 8);
    f[3] = (uint8_t)PARK_ANNOUNCED;
    w->park_len += PARK_SENT;
    return 0;
}

/* ------------------------------------------------------ server child */

static volatile sig_atomic_t child_stop;

static void on_term(int sig)
{
    (void)sig;
    child_stop = 1;
}

/* The server: serves dir until SIGTERM; writes its port (or -1) to wfd. */
static void server_child(const char *dir, const options *o, int wfd)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_term;
    sigaction(SIGTERM, &sa, NULL);
    lws_set_log_level(LLL_ERR, NULL);
    crdtdb_env *env = NULL;
    crdtdb_server *srv = NULL;
    int port = -1;
    if (bench_env_open(dir, 1, &env) == 0) {
        crdtdb_server_options so;
        crdtdb_server_options_init(&so);
        so.collections = COLLS;
        so.ncoll = 2;
        so.max_per_ip = SIZE_MAX; /* everyone here is 127.0.0.1 */
        so.max_buffered = o->budget_mb << 20;
        if (crdtdb_server_open(env, &so, &srv) == 0)
            port = crdtdb_server_port(srv);
    }
    if (write(wfd, &port, sizeof port) != (ssize_t)sizeof port)
        port = -1;
    close(wfd);
    uint64_t end = now_ms() + CHILD_LIFETIME_S * 1000ull;
    while (port > 0 && !child_stop && now_ms() < end)
        if (crdtdb_server_run(srv, 50))
            break;
    crdtdb_server_close(srv);
    crdtdb_env_close(env);
    _exit(0);
}

/* Fills the server's database with about mb MiB: 4 KiB records. */
static int fill_db(const char *dir, size_t mb)
{
    crdtdb_env *env;
    crdtdb_db *db;
    if (bench_env_open(dir, 1, &env))
        return -1;
    int rc = crdtdb_db_create(env, DB_ID, COLLS, 2, &db);
    if (rc) {
        crdtdb_env_close(env);
        return bench_fail("server db", rc, NULL);
    }
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    static char blob[4000];
    memset(blob, 'h', sizeof blob);
    msgpack_pack_map(&pk, 1);
    msgpack_pack_str_with_body(&pk, "s", 1);
    msgpack_pack_str_with_body(&pk, blob, sizeof blob);
    size_t n = mb * 256;
    crdtdb_txn *t = NULL;
    for (size_t i = 0; !rc && i < n; i++) {
        char id[32];
        snprintf(id, sizeof id, "r%07zu", i);
        if (!t)
            rc = crdtdb_txn_begin(db, 0, &t);
        if (!rc)
            rc = crdtdb_db_add(db, t, "moves", id, (const uint8_t *)sb.data, sb.size);
        if (!rc && bench_batch_end(i, 1000, n)) {
            rc = crdtdb_txn_commit(t);
            t = NULL;
        }
    }
    if (t)
        crdtdb_txn_abort(t);
    msgpack_sbuffer_destroy(&sb);
    if (rc)
        bench_fail("fill", rc, crdtdb_db_errmsg(db));
    crdtdb_db_close(db);
    crdtdb_env_close(env);
    return rc ? -1 : 0;
}

/* ---------------------------------------------------- honest client */

/* Waits for fd to be readable until deadline; reads into buf at *len.  0,
 * or -1 on timeout, end or error. */
static int read_some(int fd, uint8_t *buf, size_t cap, size_t *len, uint64_t deadline)
{
    uint64_t t = now_ms();
    if (t >= deadline || *len >= cap)
        return -1;
    struct pollfd p = {fd, POLLIN, 0};
    if (poll(&p, 1, (int)(deadline - t)) <= 0)
        return -1;
    ssize_t n = recv(fd, buf + *len, cap - *len, 0);
    if (n <= 0)
        return -1;
    *len += (size_t)n;
    return 0;
}

/* One honest connect: TCP, upgrade, 101, hello, the server's first frame.
 * Its time in ms, or -1 if refused or slower than HONEST_TIMEOUT_MS. */
static double honest_connect(int port, const wire *w)
{
    double t0 = bench_now();
    uint64_t deadline = now_ms() + HONEST_TIMEOUT_MS;
    int fd = tcp_connect(port);
    if (fd < 0)
        return -1;
    char req[512];
    int rn = upgrade_request(req, sizeof req, port);
    uint8_t in[4096];
    size_t len = 0;
    const uint8_t *end = NULL;
    double ms = -1;
    if (send(fd, req, (size_t)rn, MSG_NOSIGNAL) != rn)
        goto done;
    while (!(end = memmem(in, len, "\r\n\r\n", 4)))
        if (read_some(fd, in, sizeof in, &len, deadline))
            goto done;
    if (!memmem(in, len, " 101 ", 5) ||
        send(fd, w->hello, w->hello_len, MSG_NOSIGNAL) != (ssize_t)w->hello_len)
        goto done;
    size_t head = (size_t)(end - in) + 4;
    while (len <= head) /* any byte of a frame: the server's hello */
        if (read_some(fd, in, sizeof in, &len, deadline))
            goto done;
    ms = (bench_now() - t0) * 1000.0;
done:
    close(fd);
    return ms;
}

/* ---------------------------------------------------- hostile clients */

enum { PH_PARK, PH_NOREAD, PH_IDLE, PH_SLOW, PH_COSTLY, NPHASES };
static const char *const PHASE_NAME[NPHASES] = {"park", "noread", "idle", "slow", "costly"};

typedef struct hconn {
    int fd;       /* -1: closed (by the server, or never opened) */
    size_t off;   /* bytes of the current piece sent */
    int piece;    /* 0: hello, 1: the attack's body, 2: done, 3: dribbling */
    uint64_t next_ms;
    unsigned close_code; /* first WebSocket close status seen */
} hconn;

/* Opens n upgraded connections (non-blocking); the number upgraded. */
static size_t hostile_open(hconn *h, size_t n, int port)
{
    char req[512];
    int rn = upgrade_request(req, sizeof req, port);
    size_t ok = 0;
    for (size_t i = 0; i < n; i++) {
        memset(&h[i], 0, sizeof h[i]);
        h[i].fd = tcp_connect(port);
        if (h[i].fd >= 0 && send(h[i].fd, req, (size_t)rn, MSG_NOSIGNAL) != rn) {
            close(h[i].fd);
            h[i].fd = -1;
        }
    }
    uint64_t deadline = now_ms() + 10000;
    for (size_t i = 0; i < n; i++) {
        if (h[i].fd < 0)
            continue;
        uint8_t in[1024];
        size_t len = 0;
        while (!memmem(in, len, "\r\n\r\n", 4) && !read_some(h[i].fd, in, sizeof in, &len, deadline))
            ;
        if (!memmem(in, len, " 101 ", 5)) {
            close(h[i].fd);
            h[i].fd = -1;
            continue;
        }
        fcntl(h[i].fd, F_SETFL, fcntl(h[i].fd, F_GETFL) | O_NONBLOCK);
        ok++;
    }
    return ok;
}

/* Notes the first close status in what was read. */
static void saw(hconn *c, const uint8_t *p, size_t n)
{
    for (size_t i = 0; !c->close_code && i + 3 < n; i++)
        if (p[i] == 0x88 && p[i + 1] >= 2 && p[i + 1] <= 125) {
            unsigned st = (unsigned)p[i + 2] << 8 | p[i + 3];
            if (st >= 1000 && st < 5000)
                c->close_code = st;
        }
}

static void drop(hconn *c)
{
    close(c->fd);
    c->fd = -1;
}

/* Sends what the socket takes of p[c->off, n); 1 when all of it went. */
static int push(hconn *c, const uint8_t *p, size_t n)
{
    while (c->off < n) {
        ssize_t k = send(c->fd, p + c->off, n - c->off, MSG_NOSIGNAL);
        if (k > 0) {
            c->off += (size_t)k;
            continue;
        }
        if (k < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
            drop(c);
        return 0;
    }
    c->off = 0;
    return 1;
}

/* slow: a WebSocket frame of 100 bytes (mask 0) holding a session frame
 * of 96, of which this much is sent at once; then a byte a second. */
static const uint8_t SLOW_HEAD[10] = {0x82, 0x80 | 100, 0, 0, 0, 0, 0, 0, 0, 96};

/* One step of connection c in phase ph: send what is due, read (except
 * noread) what came. */
static void step(hconn *c, int ph, const wire *w, uint64_t t)
{
    if (c->fd < 0)
        return;
    if (ph != PH_IDLE && c->piece == 0 && push(c, w->hello, w->hello_len))
        c->piece = 1;
    if (c->fd >= 0 && c->piece == 1) {
        if (ph == PH_PARK && push(c, w->park, w->park_len))
            c->piece = 2;
        else if (ph == PH_NOREAD && push(c, w->since, w->since_len))
            c->piece = 2;
        else if (ph == PH_SLOW && push(c, SLOW_HEAD, sizeof SLOW_HEAD))
            c->piece = 3;
        else if (ph == PH_COSTLY && push(c, w->costly, w->costly_len))
            c->piece = 2;
    }
    if (c->fd >= 0 && c->piece == 3 && t >= c->next_ms) {
        static const uint8_t zero = 0;
        push(c, &zero, 1);
        c->next_ms = t + 1000;
    }
    if (c->fd < 0 || ph == PH_NOREAD)
        return;
    uint8_t in[65536];
    for (;;) {
        ssize_t n = recv(c->fd, in, sizeof in, 0);
        if (n > 0) {
            saw(c, in, (size_t)n);
            continue;
        }
        if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK))
            drop(c);
        break;
    }
}

/* At the end of noread: reads everything, to learn which were closed. */
static void drain(hconn *c)
{
    uint8_t in[65536];
    uint64_t deadline = now_ms() + 2000;
    while (c->fd >= 0 && now_ms() < deadline) {
        ssize_t n = recv(c->fd, in, sizeof in, 0);
        if (n > 0)
            saw(c, in, (size_t)n);
        else if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK))
            drop(c);
        else
            break;
    }
}

/* ------------------------------------------------------------ phases */

typedef struct result {
    double lat_med, lat_p95, lat_max; /* ms */
    size_t samples, failed;
    size_t rss_peak, rss_end; /* bytes */
    size_t opened, closed, c1008, c1013;
} result;

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void latencies(double *lat, size_t n, result *r)
{
    qsort(lat, n, sizeof *lat, cmp_double);
    r->samples = n;
    r->lat_med = n ? lat[n / 2] : 0;
    r->lat_p95 = n ? lat[(n * 95) / 100 < n ? (n * 95) / 100 : n - 1] : 0;
    r->lat_max = n ? lat[n - 1] : 0;
}

/* Starts a server child on dir: its pid and port, or -1. */
static pid_t server_start(const char *dir, const options *o, int *port)
{
    int pfd[2];
    *port = -1;
    if (pipe(pfd))
        return -1;
    fflush(NULL);
    pid_t child = fork();
    if (child == 0)
        server_child(dir, o, pfd[1]);
    close(pfd[1]);
    if (child < 0 || read(pfd[0], port, sizeof *port) != (ssize_t)sizeof *port || *port <= 0)
        fprintf(stderr, "bench_hostile: the server did not start\n");
    close(pfd[0]);
    return child;
}

/* Stops the server child: SIGTERM, then SIGKILL after 5 s. */
static void server_stop(pid_t child)
{
    if (child <= 0)
        return;
    kill(child, SIGTERM);
    uint64_t deadline = now_ms() + 5000;
    while (waitpid(child, NULL, WNOHANG) == 0)
        if (now_ms() >= deadline) {
            kill(child, SIGKILL);
            waitpid(child, NULL, 0);
            break;
        } else {
            usleep(10000);
        }
}

/* Runs phase ph (or the baseline, ph < 0) for phase_ms against the server
 * at port (pid child); fills r. */
static int run_phase(int ph, const options *o, int port, pid_t child, const wire *w, result *r)
{
    memset(r, 0, sizeof *r);
    size_t cap = o->phase_ms / SAMPLE_MS + 8;
    double *lat = calloc(cap, sizeof *lat);
    hconn *h = ph >= 0 ? calloc(o->hostile, sizeof *h) : NULL;
    if (!lat || (ph >= 0 && !h)) {
        free(lat);
        free(h);
        return bench_oom();
    }
    if (ph >= 0)
        r->opened = hostile_open(h, o->hostile, port);
    size_t nlat = 0;
    uint64_t t = now_ms(), end = t + o->phase_ms, next_sample = t, next_rss = t;
    while ((t = now_ms()) < end) {
        for (size_t i = 0; h && i < o->hostile; i++)
            step(&h[i], ph, w, t);
        if (t >= next_rss) {
            size_t rss = rss_of(child);
            if (rss > r->rss_peak)
                r->rss_peak = rss;
            next_rss = t + 100;
        }
        if (t >= next_sample && nlat < cap) {
            double ms = honest_connect(port, w);
            if (ms < 0) {
                r->failed++;
                ms = HONEST_TIMEOUT_MS;
            }
            lat[nlat++] = ms;
            next_sample = now_ms() + SAMPLE_MS;
        }
        usleep(ph == PH_PARK ? 1000 : 10000);
    }
    r->rss_end = rss_of(child);
    latencies(lat, nlat, r);
    for (size_t i = 0; h && i < o->hostile; i++) {
        if (ph == PH_NOREAD)
            drain(&h[i]);
        r->closed += h[i].fd < 0;
        r->c1008 += h[i].close_code == 1008;
        r->c1013 += h[i].close_code == 1013;
        if (h[i].fd >= 0)
            close(h[i].fd);
    }
    free(h);
    free(lat);
    return 0;
}

/* Runs phase ph on a server of its own (freed memory stays with a
 * process), warmed up first: the full export made and cached. */
static int phase_on_fresh_server(int ph, const options *o, const char *dir, const wire *w,
                                 result *r)
{
    int port;
    pid_t child = server_start(dir, o, &port);
    int rc = -1;
    if (child > 0 && port > 0) {
        for (int i = 0; i < 5; i++)
            (void)honest_connect(port, w);
        rc = run_phase(ph, o, port, child, w, r);
    }
    server_stop(child);
    return rc;
}

/* RSS above the baseline's, as a fraction of the buffer budget. */
static double over_budget(const result *r, const result *base, const options *o)
{
    double over = (double)r->rss_peak - (double)base->rss_peak;
    return over > 0 ? over / (double)(o->budget_mb << 20) : 0;
}

/* ------------------------------------------------------------- main */

static void usage(FILE *f)
{
    fprintf(f,
            "usage: bench_hostile [--hostile N] [--phase-ms MS] [--db-mb MB] [--budget-mb MB]\n"
            "                     [--json]\n"
            "A server on 127.0.0.1 under N hostile connections (default 200) per attack\n"
            "(park, noread, idle, slow, costly), each for MS ms (default 6000), serving MB MiB\n"
            "(default 12); its RSS and an honest client's connect latency, as ratios to\n"
            "a baseline at rest.  --budget-mb sets the server's max_buffered (default 64\n"
            "here, so that it binds with 200 connections; the library's is 256 MiB).\n"
            "Each phase has a server process of its own.  Loopback only; about 35 s\n"
            "with the defaults.  MALLOC_MMAP_THRESHOLD_ in the environment reaches the\n"
            "server: glibc otherwise keeps freed buffers resident.\n");
}

int main(int argc, char **argv)
{
    options o = {200, 6000, 12, 64, 0};
    int nosync = 1;
    const bench_opt opts[] = {{"--hostile", &o.hostile},
                              {"--phase-ms", &o.phase_ms},
                              {"--db-mb", &o.db_mb},
                              {"--budget-mb", &o.budget_mb}};
    int a = bench_parse_args(argc, argv, opts, sizeof opts / sizeof *opts, &nosync, &o.json);
    if (a)
        return bench_usage_exit(a, usage);
    if (o.hostile > 900 || o.phase_ms > 600000 || o.db_mb > 512) {
        fprintf(stderr, "bench_hostile: at most 900 hostile, 600000 ms, 512 MiB\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    bench_base base;
    memset(&base, 0, sizeof base);
    const char *names[] = {"server", "client"};
    wire w;
    memset(&w, 0, sizeof w);
    int status = 1;
    if (bench_base_dirs(&base, names, 2) || fill_db(base.env_dir[0], o.db_mb) ||
        make_wire(base.env_dir[1], &w))
        goto out;
    result base_r, res[NPHASES];
    if (phase_on_fresh_server(-1, &o, base.env_dir[0], &w, &base_r))
        goto out;
    for (int ph = 0; ph < NPHASES; ph++)
        if (phase_on_fresh_server(ph, &o, base.env_dir[0], &w, &res[ph]))
            goto out;

    if (o.json) {
        printf("{\"bench\":\"bench_hostile\",\"hostile\":%zu,\"phase_ms\":%zu,\"db_mb\":%zu,"
               "\"budget_mb\":%zu,\"baseline\":{\"rss\":%zu,\"lat_med_ms\":%.3f,"
               "\"lat_p95_ms\":%.3f,\"failed\":%zu},\"phases\":[",
               o.hostile, o.phase_ms, o.db_mb, o.budget_mb,
               base_r.rss_peak, base_r.lat_med, base_r.lat_p95, base_r.failed);
        for (int ph = 0; ph < NPHASES; ph++) {
            const result *r = &res[ph];
            printf("%s{\"attack\":\"%s\",\"opened\":%zu,\"closed_by_server\":%zu,"
                   "\"close_1008\":%zu,\"close_1013\":%zu,\"rss_peak\":%zu,\"rss_end\":%zu,"
                   "\"rss_ratio\":%.3f,\"rss_over_rest_of_budget\":%.3f,\"lat_med_ms\":%.3f,\"lat_p95_ms\":%.3f,"
                   "\"lat_max_ms\":%.3f,\"lat_med_ratio\":%.3f,\"lat_p95_ratio\":%.3f,"
                   "\"samples\":%zu,\"failed\":%zu}",
                   ph ? "," : "", PHASE_NAME[ph], r->opened, r->closed, r->c1008, r->c1013,
                   r->rss_peak, r->rss_end, bench_ratio((double)r->rss_peak, (double)base_r.rss_peak),
                   over_budget(r, &base_r, &o), r->lat_med, r->lat_p95, r->lat_max, bench_ratio(r->lat_med, base_r.lat_med),
                   bench_ratio(r->lat_p95, base_r.lat_p95), r->samples, r->failed);
        }
        printf("]}\n");
    } else {
        printf("bench_hostile: %zu hostile connections per attack on 127.0.0.1, %zu ms each, "
               "%zu MiB database, buffer budget %zu MiB\n",
               o.hostile, o.phase_ms, o.db_mb, o.budget_mb);
        printf("baseline: RSS %.1f MiB, honest connect median %.2f ms, p95 %.2f ms (%zu samples)\n",
               (double)base_r.rss_peak / 1048576.0, base_r.lat_med, base_r.lat_p95, base_r.samples);
        printf("%-7s %6s %7s %6s %6s %8s %6s %8s %7s %7s %6s\n", "attack", "opened", "closed",
               "1008", "1013", "RSS MiB", "RSS x", "/budget", "med x", "p95 x", "failed");
        for (int ph = 0; ph < NPHASES; ph++) {
            const result *r = &res[ph];
            printf("%-7s %6zu %7zu %6zu %6zu %8.1f %6.2f %8.2f %7.2f %7.2f %6zu\n",
                   PHASE_NAME[ph], r->opened, r->closed, r->c1008, r->c1013,
                   (double)r->rss_peak / 1048576.0,
                   bench_ratio((double)r->rss_peak, (double)base_r.rss_peak),
                   over_budget(r, &base_r, &o), bench_ratio(r->lat_med, base_r.lat_med),
                   bench_ratio(r->lat_p95, base_r.lat_p95), r->failed);
        }
        printf("x: to the baseline; /budget: RSS above the baseline's over the budget\n");
    }
    status = 0;
out:
    free(w.park);
    free(w.costly);
    bench_base_free(&base);
    return status;
}
