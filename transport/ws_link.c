/*
 * One WebSocket connection's sync session: bytes received are fed to the
 * session, its output goes out in binary messages of at most WS_CHUNK bytes
 * (the session reassembles any split), and the connection closes once the
 * session has ended and flushed.  Shared by servers and clients.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <uv.h>

#include "crdt/value.h"
#include "transport/ws.h"

char *crdtdb__ws_strdup(const char *s)
{
    if (!s)
        return NULL;
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}

/* The length of the printable UTF-8 character at p (n bytes left), or 0:
 * a control, DEL, a C1 control (U+0080..U+009F) or not UTF-8. */
static size_t printable(const uint8_t *p, size_t n)
{
    if (p[0] < 0x80)
        return p[0] >= 0x20 && p[0] != 0x7f;
    size_t k = (p[0] & 0xe0) == 0xc0 ? 2 : (p[0] & 0xf0) == 0xe0 ? 3 : (p[0] & 0xf8) == 0xf0 ? 4 : 0;
    if (!k || k > n || !crdtdb__utf8_valid(p, k))
        return 0;
    return p[0] == 0xc2 && p[1] < 0xa0 ? 0 : k;
}

const char *crdtdb__ws_quote(char *out, size_t cap, const char *in)
{
    size_t o = 0;
    for (const char *p = in ? in : ""; *p && o + 2 < cap; p++) {
        if (*p == '\'' || *p == '\\')
            out[o++] = '\\';
        out[o++] = *p;
    }
    out[o] = 0;
    return out;
}

void crdtdb__ws_log_escape(char *out, size_t cap, const char *in)
{
    static const char hex[] = "0123456789abcdef";
    const uint8_t *p = (const uint8_t *)in;
    size_t n = strlen(in), o = 0;
    while (n) {
        size_t k = printable(p, n);
        if (k ? o + k >= cap : o + 4 >= cap)
            break;
        if (k) {
            memcpy(out + o, p, k);
            o += k;
        } else {
            k = 1;
            out[o++] = '\\';
            out[o++] = 'x';
            out[o++] = hex[*p >> 4];
            out[o++] = hex[*p & 15];
        }
        p += k;
        n -= k;
    }
    out[o] = 0;
}

uint64_t crdtdb__ws_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

int crdtdb__bucket_take(crdtdb__bucket *b, uint64_t now, unsigned per_s, unsigned burst)
{
    uint64_t cap = (uint64_t)burst * 1000u, add = (now - b->ms) * per_s; /* thousandths a ms */
    b->milli = !b->ms || b->milli + add >= cap ? cap : b->milli + add;
    b->ms = now;
    if (b->milli < 1000)
        return 0;
    b->milli -= 1000;
    return 1;
}

/* The WebSocket close status for a session error of ours. */
int crdtdb__ws_close_status(int code, int remote)
{
    if (remote || code == 0)
        return LWS_CLOSE_STATUS_NORMAL;
    switch (code) {
    case CRDTDB_EBADVALUE:
    case CRDTDB_EVERSION:
        return LWS_CLOSE_STATUS_PROTOCOL_ERR;
    case CRDTDB_ETOOBIG:
        return LWS_CLOSE_STATUS_MESSAGE_TOO_LARGE;
    case CRDTDB_ENOMEM:
    case CRDTDB_EIO:
    case CRDTDB_EMAPFULL:
    case CRDTDB_ECORRUPT:
        return LWS_CLOSE_STATUS_UNEXPECTED_CONDITION;
    default:
        return LWS_CLOSE_STATUS_POLICY_VIOLATION;
    }
}

static void noop_sul(lws_sorted_usec_list_t *sul) { (void)sul; }

#define RIPEN_MAX 8 /* timers made due per pass, at most */

/*
 * libwebsockets 4.1 waits in poll() for the time to its next timer in
 * whole ms, rounded down: in the last ms before a timer it polls without
 * waiting, pass after pass, until the timer is due — a busy loop of up to
 * 1 ms whenever input wakes it that close to one (on the 16-player
 * presence bench, 4 of every 5 poll() calls, each pass also reading the
 * store for other processes' commits).  So timers due
 * within that ms are made due now and run up to 1 ms early; the loop then
 * sleeps until the next event.  `probe` (scheduled, on the list of
 * lws_sul_schedule's timers) finds the list; it is left alone.
 */
static void ripen(struct lws_context *ctx, lws_sorted_usec_list_t *probe)
{
    lws_sorted_usec_list_t *near[RIPEN_MAX];
    size_t n = 0;
    lws_usec_t now = lws_now_usecs();
    if (!probe->list.owner)
        return;
    for (lws_dll2_t *d = lws_dll2_get_head(probe->list.owner); d && n < RIPEN_MAX; d = d->next) {
        lws_sorted_usec_list_t *t = lws_container_of(d, lws_sorted_usec_list_t, list);
        if (t->us >= now + LWS_US_PER_MS)
            break; /* sorted: the rest are later */
        if (t != probe && t->us > now)
            near[n++] = t;
    }
    for (size_t i = 0; i < n; i++) /* due now; what it does is unchanged */
        lws_sul_schedule(ctx, 0, near[i], near[i]->cb, 0);
}

/* One pass of the event loop, waking after timeout_ms at the latest (lws
 * itself ignores the timeout argument and sleeps until its next event). */
int crdtdb__ws_service(struct lws_context *ctx, lws_sorted_usec_list_t *sul, int timeout_ms)
{
    if (timeout_ms <= 0) /* poll without waiting: lws takes -1 as "do not block" */
        return lws_service(ctx, -1) < 0 ? CRDTDB_EIO : 0;
    lws_sul_schedule(ctx, 0, sul, noop_sul, (lws_usec_t)timeout_ms * LWS_US_PER_MS);
    ripen(ctx, sul);
    int n = lws_service(ctx, 0);
    lws_sul_cancel(sul);
    return n < 0 ? CRDTDB_EIO : 0;
}

/* The session's output, pumped first when it is empty and pumping is not
 * held (a failed export ends the session, remembered for the close status
 * and the log). */
static const uint8_t *output(crdtdb__wslink *l, size_t *len)
{
    const uint8_t *p = crdtdb_session_output(l->s, len);
    if (*len || crdtdb_session_closed(l->s) || l->hold_pump || !l->pump_due)
        return p;
    l->pump_due = 0;
    int rc = crdtdb_session_pump(l->s);
    if (rc) {
        l->pump_err = rc;
        l->status = crdtdb__ws_close_status(rc, 0);
        crdtdb_session_shutdown(l->s);
    }
    p = crdtdb_session_output(l->s, len);
    l->pump_due = *len != 0; /* an export under way goes on once this is sent */
    return p;
}

void crdtdb__ws_wake(crdtdb__wslink *l)
{
    l->pump_due = 1;
    lws_callback_on_writable(l->wsi);
}

/* n bytes of the session's output are on their way: in the kernel, or
 * with lws, which writes them before anything else. */
static void consumed(crdtdb__wslink *l, size_t n)
{
    crdtdb_session_consume(l->s, n);
    l->sent += n;
    l->tx_ms = crdtdb__ws_now_ms();
}

/* Whether l's output may be written outside its WRITEABLE: its session
 * open, its stream whole, and lws holding no partial send (so what is
 * written now lands between whole messages). */
static int may_write_now(crdtdb__wslink *l)
{
    return l->s && l->wsi && !l->cut && !crdtdb_session_closed(l->s) &&
           !lws_partial_buffered(l->wsi);
}

/*
 * On WRITEABLE: sends up to WS_CHUNK bytes of output as one binary message,
 * pumping first when the output is empty; asks to be called again while
 * output remains.  Once the session is closed and flushed, closes the
 * connection (returns -1).
 */
int crdtdb__ws_writable(crdtdb__wslink *l, unsigned char *wbuf)
{
    if (!l->s || l->cut)
        return -1;
    if (!l->scheduled && crdtdb_session_pending(l->s))
        crdtdb__ws_step(l); /* one apply per turn */
    size_t len;
    const uint8_t *p = output(l, &len);
    if (!len) {
        uint64_t quiet = crdtdb__ws_now_ms() - l->rx_ms;
        if (crdtdb_session_closed(l->s) && l->status != LWS_CLOSE_STATUS_NORMAL && l->rx_ms &&
            quiet < WS_LINGER_QUIET_MS) {
            /* Closing the socket while the peer is still sending (say, the
             * rest of a message over the limit) makes the kernel answer with
             * a reset, which can destroy our ERROR and close unread at the
             * peer.  So what it sends is read and dropped until it pauses,
             * for WS_LINGER_SECS at most (then the timeout closes). */
            if (!l->lingering) {
                l->lingering = 1;
                lws_set_timeout(l->wsi, PENDING_TIMEOUT_USER_OK, WS_LINGER_SECS);
            }
            lws_set_timer_usecs(l->wsi, (lws_usec_t)(WS_LINGER_QUIET_MS - quiet) * LWS_US_PER_MS);
            return 0;
        }
        if (crdtdb_session_closed(l->s)) {
            /* the reason too, for peers that read only the close (a
             * browser's CloseEvent): the error's message, cut to the 123
             * bytes a close frame has room for, at a character boundary */
            const char *why = l->status == LWS_CLOSE_STATUS_NORMAL ? ""
                                                                   : crdtdb_session_errmsg(l->s);
            size_t n = strlen(why);
            if (n > 123)
                for (n = 123; n && ((uint8_t)why[n] & 0xc0) == 0x80; n--)
                    ;
            lws_close_reason(l->wsi, (enum lws_close_status)l->status, (unsigned char *)why, n);
            return -1;
        }
        return 0;
    }
    size_t n = len < WS_CHUNK ? len : WS_CHUNK;
    memcpy(wbuf + LWS_PRE, p, n);
    if (lws_write(l->wsi, wbuf + LWS_PRE, n, LWS_WRITE_BINARY) < (int)n)
        return -1;
    consumed(l, n);
    output(l, &len);
    if (len || crdtdb_session_closed(l->s))
        lws_callback_on_writable(l->wsi);
    return 0;
}

int crdtdb__ws_flush_now(crdtdb__wslink *l, unsigned char *wire, size_t cap)
{
    size_t len;
    if (!may_write_now(l))
        return 0;
    const uint8_t *p = crdtdb_session_output(l->s, &len);
    if (!len)
        return 1;
    size_t n = len < WS_CHUNK ? len : WS_CHUNK;
    if (n > cap)
        return 0;
    memcpy(wire + LWS_PRE, p, n);
    /* a failed write leaves the socket unusable: WRITEABLE meets the same
     * failure and closes the connection */
    if (lws_write(l->wsi, wire + LWS_PRE, n, LWS_WRITE_BINARY) < (int)n)
        return 0;
    consumed(l, n);
    return n == len;
}

void crdtdb__ws_batch_free(crdtdb__wsbatch *b)
{
    free(b->links);
    free(b->done);
    free(b->sends);
    free(b->pay);
    free(b->hdr);
    memset(b, 0, sizeof *b);
}

/* A server's header for a binary message of n bytes (RFC 6455 5.2). */
static size_t ws_header(uint8_t *h, size_t n)
{
    h[0] = 0x82; /* FIN, binary */
    if (n < 126) {
        h[1] = (uint8_t)n;
        return 2;
    }
    if (n <= 0xffff) {
        h[1] = 126;
        h[2] = (uint8_t)(n >> 8);
        h[3] = (uint8_t)n;
        return 4;
    }
    h[1] = 127;
    for (int i = 0; i < 8; i++)
        h[2 + i] = (uint8_t)((uint64_t)n >> (56 - 8 * i));
    return 10;
}

/* The output l may write behind lws's back now (up to WS_CHUNK bytes at
 * *p), or 0.  Only where it may be written now at all (may_write_now) and
 * lws would frame nothing differently: no TLS, not a stream inside another
 * connection (h2), and no extension (the server offers none). */
static size_t raw_payload(crdtdb__wslink *l, const uint8_t **p)
{
    size_t len = 0;
    if (!may_write_now(l) || lws_is_ssl(l->wsi) || lws_get_network_wsi(l->wsi) != l->wsi ||
        lws_get_socket_fd(l->wsi) < 0)
        return 0;
    *p = crdtdb_session_output(l->s, &len);
    return len < WS_CHUNK ? len : WS_CHUNK;
}

int crdtdb__ws_batch_room(crdtdb__wsbatch *b, size_t n)
{
    if (n <= b->cap)
        return 0;
    crdtdb__wslink **l = realloc(b->links, n * sizeof *l);
    if (l)
        b->links = l;
    int *d = realloc(b->done, n * sizeof *d);
    if (d)
        b->done = d;
    crdtdb__send *s = realloc(b->sends, n * sizeof *s);
    if (s)
        b->sends = s;
    size_t *p = realloc(b->pay, n * sizeof *p);
    if (p)
        b->pay = p;
    uint8_t(*h)[10] = realloc(b->hdr, n * sizeof *h);
    if (h)
        b->hdr = h;
    if (!l || !d || !s || !p || !h)
        return -1;
    b->cap = n;
    return 0;
}

/* The stream to l's peer is cut mid-message: nothing more may go on it,
 * and lws closes it on its next turn. */
static void cut(crdtdb__wslink *l)
{
    l->cut = 1;
    lws_set_timeout(l->wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
}

void crdtdb__ws_flush_batch(crdtdb__wsbatch *b, size_t n, crdtdb__sendq *q)
{
    crdtdb__wslink *const *ls = b->links; /* (room for n: the caller's) */
    int *done = b->done;
    /* the messages are sent from where the sessions hold them: nothing
     * changes their output until the run returns */
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        const uint8_t *p = NULL;
        size_t k = raw_payload(ls[i], &p);
        done[i] = k ? 0 : -1;
        if (!k)
            continue;
        crdtdb__send *s = &b->sends[m];
        s->fd = lws_get_socket_fd(ls[i]->wsi);
        s->iov[0] = (struct iovec){b->hdr[m], ws_header(b->hdr[m], k)};
        s->iov[1] = (struct iovec){(void *)p, k};
        s->niov = 2;
        s->res = 0;
        b->pay[m++] = k;
    }
    crdtdb__sendq_run(q, b->sends, m);
    m = 0;
    for (size_t i = 0; i < n; i++) {
        if (done[i] < 0)
            continue;
        crdtdb__wslink *l = ls[i];
        crdtdb__send *s = &b->sends[m];
        size_t k = b->pay[m++], len;
        if (s->res == CRDTDB__SEND_UNKNOWN) {
            cut(l);
            continue;
        }
        if (s->res <= 0)
            continue; /* nothing went: WRITEABLE tries (or meets the failure) */
        size_t sent = (size_t)s->res, hl = s->iov[0].iov_len;
        if (sent < hl + k) {
            /* the message is begun on the wire: lws writes the rest before
             * anything of its own (RAW: no framing; it keeps what the
             * socket does not take), the header's rest first */
            int bad = 0;
            if (sent < hl)
                bad = lws_write(l->wsi, b->hdr[m - 1] + sent, hl - sent, LWS_WRITE_RAW) < 0;
            size_t off = sent > hl ? sent - hl : 0;
            if (!bad)
                bad = lws_write(l->wsi, (unsigned char *)s->iov[1].iov_base + off, k - off,
                                LWS_WRITE_RAW) < 0;
            if (bad) {
                cut(l); /* lws kept none of it (out of memory, or a failed socket) */
                continue;
            }
        }
        crdtdb_session_output(l->s, &len);
        consumed(l, k);
        done[i] = sent == hl + k && k == len;
    }
}

/* Follows the frames in n bytes about to be fed: the session keeps an
 * unfinished frame whole, so that is what a peer makes it hold. */
static void track(crdtdb__wslink *l, const uint8_t *p, size_t n)
{
    while (n) {
        if (l->hdr_n == 0 && !l->frame_ms)
            l->frame_ms = crdtdb__ws_now_ms();
        if (l->hdr_n < 4) {
            l->hdr[l->hdr_n++] = *p++;
            n--;
            if (l->hdr_n < 4)
                continue;
            l->body_len = (size_t)l->hdr[0] << 24 | (size_t)l->hdr[1] << 16 |
                          (size_t)l->hdr[2] << 8 | l->hdr[3];
            l->body_got = 0;
        } else {
            size_t k = l->body_len - l->body_got < n ? l->body_len - l->body_got : n;
            l->body_got += k;
            p += k;
            n -= k;
        }
        if (l->body_got == l->body_len) { /* complete: handled at once */
            l->hdr_n = 0;
            l->body_len = l->body_got = 0;
            l->frame_ms = 0;
        }
    }
}

size_t crdtdb__ws_held_in(const crdtdb__wslink *l) { return l->hdr_n + l->body_got; }

size_t crdtdb__ws_held_mem(const crdtdb__wslink *l)
{
    size_t in, out;
    crdtdb_session_buffered(l->s, &in, &out);
    /* the input buffer, or what the peer sent of an unfinished frame if
     * the session has not grown it that far yet */
    size_t sent = crdtdb__ws_held_in(l);
    return (in > sent ? in : sent) + out;
}

size_t crdtdb__ws_held_out(crdtdb__wslink *l)
{
    size_t len = 0;
    if (l->s)
        crdtdb_session_output(l->s, &len);
    return len;
}

/* On RECEIVE: feeds the bytes, then asks to write replies (or the close). */
int crdtdb__ws_receive(crdtdb__wslink *l, const void *in, size_t len)
{
    if (!l->s)
        return -1;
    l->rx_ms = crdtdb__ws_now_ms();
    if (!crdtdb_session_closed(l->s)) { /* else dropped: see lingering */
        track(l, in, len);
        /* a failure closed the session (its ERROR event told why): the
         * error and the close go out below, and then the connection */
        if (crdtdb_session_feed(l->s, in, len) != 0 && !crdtdb_session_closed(l->s))
            crdtdb_session_shutdown(l->s);
    }
    int pending = crdtdb_session_pending(l->s);
    if (pending) /* a delta waits for its turn: read no more meanwhile */
        lws_rx_flow_control(l->wsi, 0);
    size_t out;
    crdtdb_session_output(l->s, &out);
    if (out) /* the session pumped: an export it began goes on once sent */
        l->pump_due = 1;
    if (out || (pending && !l->scheduled) || crdtdb_session_closed(l->s))
        lws_callback_on_writable(l->wsi);
    return 0;
}

int crdtdb__ws_step(crdtdb__wslink *l)
{
    if (!l->s || crdtdb_session_closed(l->s))
        return 0;
    crdtdb_session_step(l->s); /* failures arrive as events */
    return crdtdb__ws_stepped(l);
}

int crdtdb__ws_stepped(crdtdb__wslink *l)
{
    if (!l->s)
        return 0;
    int pending = crdtdb_session_pending(l->s);
    if (!pending) /* closed too: the rest of the peer's message is drained */
        lws_rx_flow_control(l->wsi, 1);
    size_t out;
    crdtdb_session_output(l->s, &out);
    if (out) /* the session pumped: an export it began goes on once sent */
        l->pump_due = 1;
    if (out || (pending && !l->scheduled) || crdtdb_session_closed(l->s))
        lws_callback_on_writable(l->wsi);
    return pending;
}

void crdtdb__ws_ctx_info(struct lws_context_creation_info *info, void *uv_loop, void **foreign)
{
    memset(info, 0, sizeof *info);
    info->gid = -1;
    info->uid = -1;
    /* tokens up to CRDTDB_JWT_MAX: a server reads them into a header set,
     * a client writes its request into the service buffer */
    info->max_http_header_data2 = WS_HEADER_SPACE;
    info->pt_serv_buf_size = WS_HEADER_SPACE;
    if (uv_loop) { /* libwebsockets' libuv event library, on the caller's loop */
        foreign[0] = uv_loop;
        info->options |= LWS_SERVER_OPTION_LIBUV;
        info->foreign_loops = foreign;
    }
}

/* libwebsockets 4.1 on a foreign libuv loop frees a destroyed context only
 * when lws_context_destroy() is called again after its handles closed: a
 * timer of ours on that loop does it, then closes itself.  Called again
 * any earlier, lws frees the context (and may unload its libuv plugin)
 * with close callbacks still queued on the loop, which then run on freed
 * memory or unmapped code: the timer waits until none of the context's
 * handles is left on the loop. */
#define TAIL_TURN_MS 5
#define TAIL_TURNS_MAX 2000 /* 10 s: then the context is left, not freed */
struct crdtdb__wstail {
    struct lws_context *ctx; /* lws writes NULL here once it is all gone */
    uv_timer_t timer;
    unsigned turns;
};

struct lws_context *crdtdb__ws_ctx_open(struct lws_context_creation_info *info, void *uv_loop,
                                        crdtdb__wstail **tail)
{
    *tail = NULL;
    if (!uv_loop)
        return lws_create_context(info);
    crdtdb__wstail *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    info->pcontext = &t->ctx;
    t->ctx = lws_create_context(info);
    if (!t->ctx || uv_timer_init(uv_loop, &t->timer)) {
        if (t->ctx)
            lws_context_destroy(t->ctx);
        free(t);
        return NULL;
    }
    uv_unref((uv_handle_t *)&t->timer); /* idle until the close */
    *tail = t;
    return t->ctx;
}

static void tail_free(uv_handle_t *h)
{
    crdtdb__wstail *t = lws_container_of((uv_timer_t *)h, crdtdb__wstail, timer);
    if (!t->ctx) /* else a context left at the cap: lws keeps &t->ctx, and
                    writes NULL there if it ever frees the context */
        free(t);
}

/* lws 4.1's static handles (its idle, its timer: data is the context) close
 * only once every connection's handle did, and stay on the loop (closing
 * ones too) until their close callbacks ran */
typedef struct tail_seen {
    const void *ctx;
    int held; /* a handle of ctx is on the loop */
} tail_seen;

static void tail_walk(uv_handle_t *h, void *arg)
{
    tail_seen *w = arg;
    if (h->data == w->ctx)
        w->held = 1;
}

static void tail_turn(uv_timer_t *timer)
{
    crdtdb__wstail *t = lws_container_of(timer, crdtdb__wstail, timer);
    if (t->ctx) {
        tail_seen w = {t->ctx, 0};
        uv_walk(timer->loop, tail_walk, &w);
        if (!w.held)
            lws_context_destroy(t->ctx); /* the second call finishes it */
    }
    if (!t->ctx || ++t->turns >= TAIL_TURNS_MAX) {
        uv_timer_stop(&t->timer);
        uv_close((uv_handle_t *)&t->timer, tail_free);
    }
}

/* lws 4.1 on a libuv loop closes a destroyed context's event pipe (an
 * eventfd) at once but keeps its number in the pipe's wsi, whose close
 * callback, a turn of the loop later, closes that number again: by then it
 * may be someone else's (a connection another server on the loop accepted,
 * a file the caller opened).  So the numbers of the poll handles the
 * destroy left closing with their fd already closed are held (on
 * /dev/null) until those callbacks close them. */
typedef struct tail_fd {
    const uv_handle_t *h;
    int fd;
} tail_fd;

typedef struct tail_fds {
    tail_fd *v;
    size_t n, cap;
    int failed;
} tail_fds;

static void tail_fds_add(uv_handle_t *h, void *arg)
{
    tail_fds *f = arg;
    uv_os_fd_t fd;
    if (f->failed || h->type != UV_POLL || uv_is_closing(h) || uv_fileno(h, &fd))
        return;
    if (f->n == f->cap) {
        size_t cap = f->cap ? 2 * f->cap : 16;
        tail_fd *v = realloc(f->v, cap * sizeof *v);
        if (!v) {
            f->failed = 1;
            return;
        }
        f->v = v;
        f->cap = cap;
    }
    f->v[f->n++] = (tail_fd){h, fd};
}

static int tail_fd_cmp(const void *a, const void *b)
{
    const uv_handle_t *x = ((const tail_fd *)a)->h, *y = ((const tail_fd *)b)->h;
    return x < y ? -1 : x > y;
}

static void tail_fds_hold(uv_handle_t *h, void *arg)
{
    tail_fds *f = arg;
    if (h->type != UV_POLL || !uv_is_closing(h))
        return;
    tail_fd key = {h, -1};
    const tail_fd *was = bsearch(&key, f->v, f->n, sizeof key, tail_fd_cmp);
    if (!was || fcntl(was->fd, F_GETFD) != -1 || errno != EBADF)
        return; /* new, or its fd still its own: its close callback closes it */
    int ph = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (ph >= 0 && ph != was->fd) {
        if (dup2(ph, was->fd) == was->fd)
            (void)fcntl(was->fd, F_SETFD, FD_CLOEXEC);
        close(ph);
    }
}

void crdtdb__ws_ctx_close(struct lws_context *ctx, crdtdb__wstail *tail)
{
    if (!ctx)
        return;
    tail_fds f = {0};
    /* the lws versions that close it twice (4.1: Debian's) */
    int twice = LWS_LIBRARY_VERSION_MAJOR == 4 && LWS_LIBRARY_VERSION_MINOR == 1;
    uv_loop_t *loop = tail && twice ? tail->timer.loop : NULL;
    if (loop)
        uv_walk(loop, tail_fds_add, &f);
    lws_context_destroy(ctx);
    if (loop && !f.failed && f.n) {
        qsort(f.v, f.n, sizeof *f.v, tail_fd_cmp);
        uv_walk(loop, tail_fds_hold, &f);
    }
    free(f.v);
    if (!tail)
        return;
    uv_ref((uv_handle_t *)&tail->timer);
    uv_timer_start(&tail->timer, tail_turn, TAIL_TURN_MS, TAIL_TURN_MS);
}
