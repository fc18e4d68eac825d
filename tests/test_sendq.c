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

static crdtdb__sendq *open_q(int use_ring)
{
    crdtdb__sendq *q = crdtdb__sendq_open(use_ring);
    ck_assert_ptr_nonnull(q);
    if (!use_ring)
        ck_assert_int_eq(crdtdb__sendq_ring(q), 0);
    else if (!crdtdb__sendq_ring(q))
        fprintf(stderr, "test_sendq: no io_uring here; the ring cases send one by one\n");
    return q;
}

/* Each socket gets its own bytes, whole, in order, batch after batch. */
static void every_socket_gets_its_bytes(int use_ring)
{
    crdtdb__sendq *q = open_q(use_ring);
    static crdtdb__send s[PAIRS];
    static char msg[PAIRS][32];
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < PAIRS; i++) {
            int n = snprintf(msg[i], sizeof msg[i], "to %d, round %d", i, round);
            s[i] = (crdtdb__send){pairs[i][0], msg[i], (size_t)n, -99};
        }
        crdtdb__sendq_run(q, s, PAIRS);
        for (int i = 0; i < PAIRS; i++) {
            ck_assert_int_eq(s[i].res, (ssize_t)s[i].len);
            char got[64];
            ssize_t r = read(pairs[i][1], got, sizeof got);
            ck_assert_int_eq(r, (ssize_t)s[i].len);
            ck_assert_int_eq(memcmp(got, msg[i], s[i].len), 0);
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
    static char big[1 << 20];
    memset(big, 'x', sizeof big);
    crdtdb__send s[2] = {{pairs[0][0], big, sizeof big, -99}, {pairs[1][0], "ok", 2, -99}};
    crdtdb__sendq_run(q, s, 2);
    ck_assert_int_gt(s[0].res, 0);
    ck_assert_int_lt(s[0].res, (ssize_t)sizeof big);
    ck_assert_int_eq(s[1].res, 2);
    s[0].res = -99;
    crdtdb__sendq_run(q, s, 1); /* now full */
    ck_assert_int_eq(s[0].res, 0);
    /* the peer reads: it got exactly the bytes reported, in order */
    size_t got = 0;
    char rb[8192];
    ssize_t r;
    while ((r = read(pairs[0][1], rb, sizeof rb)) > 0)
        got += (size_t)r;
    ck_assert_uint_gt(got, 0);
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
    crdtdb__send s[3] = {{pairs[1][0], "a", 1, -99}, {pairs[2][0], "b", 1, -99},
                         {pairs[3][0], "c", 1, -99}};
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
