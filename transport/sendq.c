/*
 * The send queue (sendq.h): a small io_uring, or sendmsg(2) one by one.
 */
#include <errno.h>
#include <liburing.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "transport/sendq.h"

#define DEPTH 64u /* sends per io_uring_enter; a batch is cut in these */
#define FLAGS (MSG_DONTWAIT | MSG_NOSIGNAL)

struct crdtdb__sendq {
    struct io_uring ring;
    int has_ring;
    struct msghdr msg[DEPTH]; /* the ring's sends in flight */
};

/* Completions posted where the sends run, with no interrupt of the task
 * for them (5.19), and a bad send not stopping the rest (5.18); older
 * kernels take fewer flags. */
static int ring_init(struct io_uring *ring)
{
    static const unsigned tries[] = {IORING_SETUP_SUBMIT_ALL | IORING_SETUP_COOP_TASKRUN,
                                     IORING_SETUP_SUBMIT_ALL, 0};
    for (size_t i = 0; i < sizeof tries / sizeof *tries; i++) {
        struct io_uring_params p;
        memset(&p, 0, sizeof p);
        p.flags = tries[i];
        if (io_uring_queue_init_params(DEPTH, ring, &p) != 0)
            continue;
        struct io_uring_probe *pr = io_uring_get_probe_ring(ring);
        int ok = pr && io_uring_opcode_supported(pr, IORING_OP_SENDMSG);
        io_uring_free_probe(pr);
        if (ok)
            return 0;
        io_uring_queue_exit(ring);
        return -1;
    }
    return -1;
}

crdtdb__sendq *crdtdb__sendq_open(int use_ring)
{
    crdtdb__sendq *q = calloc(1, sizeof *q);
    if (q && use_ring)
        q->has_ring = ring_init(&q->ring) == 0;
    return q;
}

void crdtdb__sendq_close(crdtdb__sendq *q)
{
    if (!q)
        return;
    if (q->has_ring)
        io_uring_queue_exit(&q->ring);
    free(q);
}

int crdtdb__sendq_ring(const crdtdb__sendq *q)
{
    return q->has_ring;
}

static ssize_t result(ssize_t r)
{
    return r == -EAGAIN || r == -EWOULDBLOCK ? 0 : r;
}

static void message(struct msghdr *m, crdtdb__send *s)
{
    memset(m, 0, sizeof *m);
    m->msg_iov = s->iov;
    m->msg_iovlen = (size_t)s->niov;
}

static void send_one(crdtdb__send *s)
{
    struct msghdr m;
    message(&m, s);
    ssize_t r;
    do
        r = sendmsg(s->fd, &m, FLAGS);
    while (r < 0 && errno == EINTR);
    s->res = r < 0 ? result(-errno) : r;
}

/* Gives the kernel k <= DEPTH sends and collects their results; returns
 * how many it settled: k, or fewer when the ring failed (it is then
 * closed; those past the settled ones were never given to the kernel, so
 * they are still to do; a send the kernel took and never reported is
 * CRDTDB__SEND_UNKNOWN). */
static unsigned ring_run(crdtdb__sendq *q, crdtdb__send *s, unsigned k)
{
    for (unsigned i = 0; i < k; i++) {
        struct io_uring_sqe *e = io_uring_get_sqe(&q->ring);
        message(&q->msg[i], &s[i]);
        /* MSG_DONTWAIT: a full socket completes with -EAGAIN at once
         * instead of being parked until it drains */
        io_uring_prep_sendmsg(e, s[i].fd, &q->msg[i], FLAGS);
        io_uring_sqe_set_data64(e, i);
        s[i].res = CRDTDB__SEND_UNKNOWN;
    }
    unsigned given = 0, got = 0;
    int bad = 0, unsupported = 0;
    while (!bad && got < k) {
        if (given < k) {
            /* a kernel without SUBMIT_ALL stops at a send it refuses:
             * the rest wait in the ring for the next submit */
            int r = io_uring_submit(&q->ring);
            if (r == -EINTR)
                continue;
            if (r <= 0) {
                bad = 1;
                break;
            }
            given += (unsigned)r;
        }
        while (got < given) {
            struct io_uring_cqe *c;
            int w = io_uring_wait_cqe(&q->ring, &c);
            if (w == -EINTR)
                continue;
            if (w < 0) {
                bad = 1;
                break;
            }
            unsigned head, n = 0;
            io_uring_for_each_cqe(&q->ring, head, c) {
                uint64_t i = io_uring_cqe_get_data64(c);
                /* a kernel whose io_uring has no such send (emulations)
                 * says so per send, having sent nothing: that one goes
                 * by sendmsg(2), and so will everything after this run */
                if (i < k && (c->res == -EINVAL || c->res == -EOPNOTSUPP)) {
                    send_one(&s[i]);
                    unsupported = 1;
                } else if (i < k) {
                    s[i].res = result(c->res);
                }
                n++;
            }
            io_uring_cq_advance(&q->ring, n);
            got += n;
        }
    }
    if (!bad && !unsupported)
        return k;
    /* Closing the ring drops the sends it was not given (still to do);
     * those it was given and did not report stay UNKNOWN. */
    io_uring_queue_exit(&q->ring);
    q->has_ring = 0;
    return bad ? given : k;
}

void crdtdb__sendq_run(crdtdb__sendq *q, crdtdb__send *s, size_t n)
{
    size_t i = 0;
    while (q->has_ring && i < n)
        i += ring_run(q, s + i, n - i < DEPTH ? (unsigned)(n - i) : DEPTH);
    for (; i < n; i++)
        send_one(&s[i]);
}
