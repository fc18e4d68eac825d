/* The send queue (transport/sendq.h), both ways: through io_uring where
 * this kernel has it, and one send(2) at a time.  Real sockets. */
#define _GNU_SOURCE
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tests/testutil.h"
#include "transport/sendq.h"

#define PAIRS 150 /* more than one ring's depth */

static int pairs[PAIRS][2];

static void setup(void)
{
    for (int i = 0; i < PAIRS; i++) {
        ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, pairs[i]), 0);
        fcntl(pairs[i][0], F_SETFL, O_NONBLOCK);
        fcntl(pairs[i][1], F_SETFL, O_NONBLOCK);
    }
}

static void teardown(void)
{
    for (int i = 0; i < PAIRS; i++) {
        close(pairs[i][0]);
        close(pairs[i][1]);
    }
}

/* CRDTDB_REQUIRE_URING=1: a machine without io_uring fails the ring
 * cases instead of running them one send at a time. */
static crdtdb__sendq *open_q(int use_ring)
{
    crdtdb__sendq *q = crdtdb__sendq_open(use_ring);
    ck_assert_ptr_nonnull(q);
    if (!use_ring) {
        ck_assert_int_eq(crdtdb__sendq_ring(q), 0);
    } else if (!crdtdb__sendq_ring(q)) {
        const char *req = getenv("CRDTDB_REQUIRE_URING");
        ck_assert_msg(!req || strcmp(req, "1") != 0, "no io_uring with IORING_OP_SENDMSG here");
        fprintf(stderr, "test_sendq: no io_uring here; the ring cases send one by one\n");
    }
    return q;
}

static crdtdb__send one(int fd, const void *p, size_t n)
{
    crdtdb__send s = {.fd = fd, .niov = 1, .res = -99};
    s.iov[0] = (struct iovec){(void *)p, n};
    return s;
}

/* Each socket gets its own bytes, whole, in order, batch after batch. */
static void every_socket_gets_its_bytes(int use_ring)
{
    crdtdb__sendq *q = open_q(use_ring);
    static crdtdb__send s[PAIRS];
    static char head[PAIRS][8], msg[PAIRS][32];
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < PAIRS; i++) { /* two pieces, sent as one */
            int h = snprintf(head[i], sizeof head[i], "#%d:", round);
            int n = snprintf(msg[i], sizeof msg[i], "to %d", i);
            s[i] = one(pairs[i][0], head[i], (size_t)h);
            s[i].iov[1] = (struct iovec){msg[i], (size_t)n};
            s[i].niov = 2;
        }
        crdtdb__sendq_run(q, s, PAIRS);
        for (int i = 0; i < PAIRS; i++) {
            size_t want = s[i].iov[0].iov_len + s[i].iov[1].iov_len;
            ck_assert_int_eq(s[i].res, (ssize_t)want);
            char got[64], exp[64];
            memcpy(exp, head[i], s[i].iov[0].iov_len);
            memcpy(exp + s[i].iov[0].iov_len, msg[i], s[i].iov[1].iov_len);
            ssize_t r = read(pairs[i][1], got, sizeof got);
            ck_assert_int_eq(r, (ssize_t)want);
            ck_assert_int_eq(memcmp(got, exp, want), 0);
        }
    }
    crdtdb__sendq_close(q);
}

START_TEST(ring_sends_reach_every_socket) { every_socket_gets_its_bytes(1); }
END_TEST
START_TEST(plain_sends_reach_every_socket) { every_socket_gets_its_bytes(0); }
END_TEST

/* A socket whose peer is not reading takes what fits and no more, and
 * the run does not wait for it: a full one reports 0. */
static void full_socket_never_blocks(int use_ring)
{
    crdtdb__sendq *q = open_q(use_ring);
    int buf = 4096;
    setsockopt(pairs[0][0], SOL_SOCKET, SO_SNDBUF, &buf, sizeof buf);
    static uint8_t big[1 << 20], rb[1 << 20];
    for (size_t i = 0; i < sizeof big; i++)
        big[i] = (uint8_t)(i * 7 + i / 251);
    crdtdb__send s[2] = {one(pairs[0][0], big, sizeof big), one(pairs[1][0], "ok", 2)};
    crdtdb__sendq_run(q, s, 2);
    ck_assert_int_gt(s[0].res, 0);
    ck_assert_int_lt(s[0].res, (ssize_t)sizeof big);
    ck_assert_int_eq(s[1].res, 2);
    ssize_t took = s[0].res;
    s[0] = one(pairs[0][0], big + took, sizeof big - (size_t)took);
    crdtdb__sendq_run(q, s, 1); /* now full */
    ck_assert_int_eq(s[0].res, 0);
    /* the peer reads: exactly the bytes reported, in order */
    size_t got = 0;
    ssize_t r;
    while ((r = read(pairs[0][1], rb + got, sizeof rb - got)) > 0)
        got += (size_t)r;
    ck_assert_uint_eq(got, (size_t)took);
    ck_assert_int_eq(memcmp(rb, big, got), 0);
    crdtdb__sendq_close(q);
}

START_TEST(ring_full_socket_never_blocks) { full_socket_never_blocks(1); }
END_TEST
START_TEST(plain_full_socket_never_blocks) { full_socket_never_blocks(0); }
END_TEST

/* A peer gone: that send fails with -EPIPE (no SIGPIPE), the others go. */
static void gone_peer_fails_alone(int use_ring)
{
    crdtdb__sendq *q = open_q(use_ring);
    close(pairs[2][1]);
    pairs[2][1] = -1;
    crdtdb__send s[3] = {one(pairs[1][0], "a", 1), one(pairs[2][0], "b", 1),
                         one(pairs[3][0], "c", 1)};
    crdtdb__sendq_run(q, s, 3);
    ck_assert_int_eq(s[0].res, 1);
    ck_assert_int_eq(s[1].res, -EPIPE);
    ck_assert_int_eq(s[2].res, 1);
    crdtdb__sendq_run(q, s, 0); /* nothing to do is fine */
    crdtdb__sendq_close(q);
    crdtdb__sendq_close(NULL);
}

START_TEST(ring_gone_peer_fails_alone) { gone_peer_fails_alone(1); }
END_TEST
START_TEST(plain_gone_peer_fails_alone) { gone_peer_fails_alone(0); }
END_TEST

static Suite *sendq_suite(void)
{
    Suite *s = suite_create("sendq");
    TCase *tc = tcase_create("sendq");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, ring_sends_reach_every_socket);
    tcase_add_test(tc, plain_sends_reach_every_socket);
    tcase_add_test(tc, ring_full_socket_never_blocks);
    tcase_add_test(tc, plain_full_socket_never_blocks);
    tcase_add_test(tc, ring_gone_peer_fails_alone);
    tcase_add_test(tc, plain_gone_peer_fails_alone);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return tu_run(sendq_suite());
}
