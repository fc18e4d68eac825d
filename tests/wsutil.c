/* Shared helpers of the WebSocket suites (see wsutil.h). */
#define _GNU_SOURCE /* memmem */
#include "tests/wsutil.h"

#include "crdt/buf.h"

#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tests/testutil.h"

void tu_log_line(void *ctx, const char *line)
{
    crdtdb_buf *log = ctx;
    if (getenv("CRDTDB_TEST_LOG"))
        fprintf(stderr, "server: %s\n", line);
    crdtdb__buf_append(log, line, strlen(line));
    crdtdb__buf_append(log, "\n", 1);
}

int tu_log_count(const crdtdb_buf *log, const char *needle)
{
    int n = 0;
    size_t k = strlen(needle);
    const char *p = (const char *)log->data, *end = p + log->len;
    while (p && p < end && (p = memmem(p, (size_t)(end - p), needle, k)) != NULL) {
        n++;
        p += k;
    }
    return n;
}

int tu_logged(void *line)
{
    const tu_line *l = line;
    return tu_log_count(l->log, l->needle) > 0;
}

int tu_spin(const tu_net *net, tu_cond cond, void *arg, int ms)
{
    uint64_t deadline = tu_mono_ms() + (uint64_t)ms;
    while (tu_mono_ms() < deadline) {
        for (size_t i = 0; i < sizeof net->servers / sizeof *net->servers; i++)
            if (net->servers[i] && *net->servers[i])
                ck_assert_int_eq(crdtdb_server_run(*net->servers[i], net->slice_ms), 0);
        for (size_t i = 0; i < sizeof net->clients / sizeof *net->clients; i++)
            if (net->clients[i] && *net->clients[i])
                ck_assert_int_eq(crdtdb_client_run(*net->clients[i], net->slice_ms), 0);
        if (cond && cond(arg))
            return 1;
    }
    return 0;
}

const char TU_ANY[] = "any value";

int tu_holds(void *arg)
{
    const tu_want *w = arg;
    char *g = tu_get(w->db, w->coll, w->id);
    int ok = !w->json ? !g : g && (w->json == TU_ANY || strcmp(g, w->json) == 0);
    free(g);
    return ok;
}

void tu_expect(const tu_net *net, crdtdb_db *db, const char *coll, const char *id,
               const char *json)
{
    tu_want w = {db, coll, id, json};
    if (tu_spin(net, tu_holds, &w, 10000))
        return;
    char *g = tu_get(db, coll, id);
    ck_abort_msg("%s/%s never became %s (is %s)", coll, id, json ? json : "absent",
                 g ? g : "absent");
}

void tu_raw_open(tu_raw *r, int port, const char *path, const char *token)
{
    tu_raw_open_rcvbuf(r, port, path, token, 0);
}

void tu_raw_open_rcvbuf(tu_raw *r, int port, const char *path, const char *token, int rcvbuf)
{
    memset(r, 0, sizeof *r);
    r->fd = socket(AF_INET, SOCK_STREAM, 0);
    ck_assert_int_ge(r->fd, 0);
    if (rcvbuf)
        ck_assert_int_eq(setsockopt(r->fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf), 0);
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(connect(r->fd, (struct sockaddr *)&sa, sizeof sa), 0);
    fcntl(r->fd, F_SETFL, fcntl(r->fd, F_GETFL) | O_NONBLOCK);
    size_t cap = 1024 + strlen(path) + (token ? strlen(token) : 0);
    char *req = malloc(cap), *authz = malloc(cap);
    ck_assert(req && authz);
    authz[0] = 0;
    if (token)
        snprintf(authz, cap, "Authorization: Bearer %s\r\n", token);
    int n = snprintf(req, cap,
                     "GET %s HTTP/1.1\r\n"
                     "Host: 127.0.0.1\r\n"
                     "Upgrade: websocket\r\n"
                     "Connection: Upgrade\r\n"
                     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     "Sec-WebSocket-Version: 13\r\n"
                     "%s"
                     "Sec-WebSocket-Protocol: crdtdb-sync\r\n\r\n",
                     path, authz);
    ck_assert(n > 0 && (size_t)n < cap);
    ck_assert_int_eq(send(r->fd, req, (size_t)n, 0), (ssize_t)n);
    free(authz);
    free(req);
}

void tu_raw_read(tu_raw *r)
{
    for (;;) {
        if (r->len >= sizeof r->in - 1) { /* keep the newest half */
            memmove(r->in, r->in + sizeof r->in / 2, r->len - sizeof r->in / 2);
            r->len -= sizeof r->in / 2;
        }
        ssize_t n = recv(r->fd, r->in + r->len, sizeof r->in - 1 - r->len, 0);
        if (n > 0) {
            r->len += (size_t)n;
            continue;
        }
        if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK))
            r->eof = 1;
        break;
    }
    r->in[r->len] = 0;
}

int tu_raw_answered(void *arg)
{
    tu_raw *r = arg;
    tu_raw_read(r);
    return r->eof || memmem(r->in, r->len, "\r\n\r\n", 4) != NULL;
}

int tu_raw_closed(void *arg)
{
    tu_raw *r = arg;
    tu_raw_read(r);
    return r->eof;
}

int tu_raw_saw(const tu_raw *r, const char *s)
{
    return memmem(r->in, r->len, s, strlen(s)) != NULL;
}

/* p as one masked binary WebSocket message, malloc'd; its length in *len. */
static uint8_t *ws_frame(const uint8_t *p, size_t n, size_t *len)
{
    uint8_t *f = malloc(n + 14);
    ck_assert_ptr_nonnull(f);
    size_t h = 0;
    f[h++] = 0x82; /* FIN, binary */
    if (n < 126) {
        f[h++] = (uint8_t)(0x80 | n);
    } else if (n < 65536) {
        f[h++] = 0x80 | 126;
        f[h++] = (uint8_t)(n >> 8);
        f[h++] = (uint8_t)n;
    } else {
        f[h++] = 0x80 | 127;
        for (int i = 7; i >= 0; i--)
            f[h++] = (uint8_t)((uint64_t)n >> (8 * i));
    }
    const uint8_t mask[4] = {0x5a, 0x17, 0xc3, 0x81};
    memcpy(f + h, mask, 4);
    h += 4;
    for (size_t i = 0; i < n; i++)
        f[h + i] = p[i] ^ mask[i % 4];
    *len = h + n;
    return f;
}

void tu_raw_send(const tu_net *net, tu_raw *r, const void *p, size_t n)
{
    size_t off = 0;
    uint64_t deadline = tu_mono_ms() + 10000;
    while (off < n) {
        ssize_t k = send(r->fd, (const uint8_t *)p + off, n - off, MSG_NOSIGNAL);
        if (k > 0)
            off += (size_t)k;
        else
            ck_assert_msg(errno == EAGAIN && tu_mono_ms() < deadline, "send failed");
        if (off < n)
            tu_spin(net, NULL, NULL, 2);
    }
}

void tu_ws_send(const tu_net *net, tu_raw *r, const uint8_t *p, size_t n)
{
    size_t len;
    uint8_t *f = ws_frame(p, n, &len);
    tu_raw_send(net, r, f, len);
    free(f);
}

int tu_raw_close_saw(const tu_raw *r, unsigned status)
{
    const uint8_t *b = (const uint8_t *)r->in;
    for (size_t i = 0; i + 3 < r->len; i++)
        if (b[i] == 0x88 && b[i + 1] >= 2 && b[i + 1] <= 125 && b[i + 2] == (status >> 8) &&
            b[i + 3] == (status & 0xff))
            return 1;
    return 0;
}

void tu_ws_hello(crdtdb_db *db, crdtdb_buf *out)
{
    crdtdb_session_options so;
    crdtdb_session_options_init(&so);
    crdtdb_session *s;
    ck_assert_int_eq(crdtdb_session_open(db, &so, &s), 0);
    size_t n;
    const uint8_t *p = crdtdb_session_output(s, &n);
    ck_assert_uint_gt(n, 0);
    size_t len;
    uint8_t *f = ws_frame(p, n, &len);
    crdtdb_session_close(s);
    crdtdb_buf_free(out);
    out->data = f;
    out->len = out->cap = len;
}

char *tu_jwt_mint(const crdtdb_jwt_key *k, const char *sub, int64_t now, uint64_t ttl)
{
    crdtdb_buf out = CRDTDB_BUF_INIT;
    int rc = crdtdb_jwt_mint(k, sub, now, ttl, &out);
    ck_assert_msg(rc == 0, "mint: %s", crdtdb_errname(rc));
    ck_assert_uint_eq(out.len, strlen((char *)out.data));
    return (char *)out.data;
}
