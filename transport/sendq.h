/*
 * Many small sends on many sockets in one system call.  A presence change
 * goes to every other player of a match: one message on each of their
 * sockets.  With send(2) that is one system call per receiver, and on this
 * kind of server the calls' entry and exit, not the bytes, are most of the
 * CPU.  io_uring takes the whole batch in one io_uring_enter; where the
 * kernel has no io_uring with IORING_OP_SENDMSG (before 5.3, disabled, or
 * a seccomp filter), the queue sends one by one instead, with the same
 * results.
 *
 * Every send is non-blocking: a socket that cannot take all its bytes now
 * reports how many it took (0 when none), never waits.  Single-threaded;
 * the queue owns its ring, never the sockets or the bytes.  Not installed.
 */
#ifndef CRDTDB_TRANSPORT_SENDQ_H
#define CRDTDB_TRANSPORT_SENDQ_H
#include <stdint.h>
#include <stddef.h>
#include <sys/types.h>
#include <sys/uio.h>

/* A send's result when the ring failed after the kernel took it: its
 * bytes may or may not have gone, so the connection cannot go on. */
#define CRDTDB__SEND_UNKNOWN ((ssize_t)INT32_MIN)

typedef struct crdtdb__sendq crdtdb__sendq;

/* One send: the bytes of iov[0..niov) (borrowed until the run returns), in
 * order, on socket `fd`.  The run sets `res`: the bytes the socket took (0
 * when it was full), -errno (a connection that failed), or
 * CRDTDB__SEND_UNKNOWN. */
typedef struct crdtdb__send {
    int fd;
    struct iovec iov[2];
    int niov;
    ssize_t res;
} crdtdb__send;

/* A queue; `use_ring` 0 never tries io_uring (the tests compare both
 * ways).  NULL when out of memory. */
crdtdb__sendq *crdtdb__sendq_open(int use_ring);
/* Accepts NULL. */
void crdtdb__sendq_close(crdtdb__sendq *q);
/* 1 when the sends go through io_uring, 0 when one by one. */
int crdtdb__sendq_ring(const crdtdb__sendq *q);
/* Does the n sends now, and sets each one's `res`.  Sends on one socket go
 * in order only if they are in different runs: give each socket at most
 * one send per run. */
void crdtdb__sendq_run(crdtdb__sendq *q, crdtdb__send *s, size_t n);

#endif
