/*
 * The send queue (sendq.h): a small io_uring, or send(2) one by one.
 */
#include <errno.h>
#include <liburing.h>
#include <stdlib.h>
#include <sys/socket.h>

#include "transport/sendq.h"

#define DEPTH 64u /* sends per io_uring_enter; a batch is cut in these */

struct crdtdb__sendq {
    struct io_uring ring;
    int has_ring;
};

static int ring_init(struct io_uring *ring)
{
    /* completions are posted where the sends run, with no interrupt of the
     * task for them (5.19); older kernels take no flags */
    struct io_uring_params p = {0};
    p.flags = IORING_SETUP_SUBMIT_ALL | IORING_SETUP_COOP_TASKRUN;
    if (io_uring_queue_init_params(DEPTH, ring, &p) == 0)
        return 0;
    struct io_uring_params q = {0};
    return io_uring_queue_init_params(DEPTH, ring, &q);
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

static void send_one(crdtdb__send *s)
{
    ssize_t r;
    do
        r = send(s->fd, s->buf, s->len, MSG_DONTWAIT | MSG_NOSIGNAL);
    while (r < 0 && errno == EINTR);
    s->res = r < 0 ? result(-errno) : r;
}

/* Runs k <= DEPTH sends through the ring; returns how many it settled:
 * k, or fewer when the ring failed (it is then closed, and the sends past
 * those settled are still to do). */
static unsigned ring_run(crdtdb__sendq *q, crdtdb__send *s, unsigned k)
{
    for (unsigned i = 0; i < k; i++) {
        struct io_uring_sqe *e = io_uring_get_sqe(&q->ring);
        /* MSG_DONTWAIT: a full socket completes with -EAGAIN at once
         * instead of being parked until it drains */
        io_uring_prep_send(e, s[i].fd, s[i].buf, s[i].len, MSG_DONTWAIT | MSG_NOSIGNAL);
        io_uring_sqe_set_data64(e, i);
        s[i].res = -EIO; /* unless reported */
    }
    int sub;
    do
        sub = io_uring_submit_and_wait(&q->ring, k);
    while (sub == -EINTR);
    unsigned want = sub > 0 ? (unsigned)sub : 0, got = 0;
    while (got < want) {
        struct io_uring_cqe *c;
        int w = io_uring_wait_cqe_nr(&q->ring, &c, 1);
        if (w == -EINTR)
            continue;
        if (w < 0)
            break;
        unsigned head, n = 0;
        io_uring_for_each_cqe(&q->ring, head, c) {
            uint64_t i = io_uring_cqe_get_data64(c);
            if (i < k)
                s[i].res = result(c->res);
            n++;
        }
        io_uring_cq_advance(&q->ring, n);
        got += n;
    }
    if (sub == (int)k && got == want)
        return k;
    /* Closing the ring drops the sends it was not given.  Those it was
     * given and did not report may have gone out: their connections are
     * given up (-EIO) rather than sent the bytes twice. */
    io_uring_queue_exit(&q->ring);
    q->has_ring = 0;
    return want;
}

void crdtdb__sendq_run(crdtdb__sendq *q, crdtdb__send *s, size_t n)
{
    size_t i = 0;
    while (q->has_ring && i < n)
        i += ring_run(q, s + i, n - i < DEPTH ? (unsigned)(n - i) : DEPTH);
    for (; i < n; i++)
        send_one(&s[i]);
}
