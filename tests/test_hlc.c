/* Hybrid logical clock (crdt/hlc.c). */
#include <check.h>

#include "crdt/hlc.h"
#include "crdtdb.h"
#include "tests/testutil.h"

START_TEST(tick_follows_wall_clock)
{
    uint64_t last = 0;
    uint64_t a = crdtdb__hlc_tick(&last, 1000);
    ck_assert_uint_eq(crdtdb__hlc_ms(a), 1000);
    ck_assert_uint_eq(crdtdb__hlc_counter(a), 0);
    uint64_t b = crdtdb__hlc_tick(&last, 1000);
    ck_assert_uint_eq(crdtdb__hlc_ms(b), 1000);
    ck_assert_uint_eq(crdtdb__hlc_counter(b), 1);
    uint64_t c = crdtdb__hlc_tick(&last, 2000);
    ck_assert_uint_eq(c, crdtdb__hlc_make(2000, 0));
    ck_assert_uint_eq(last, c);
}
END_TEST

START_TEST(tick_never_goes_back)
{
    uint64_t last = crdtdb__hlc_make(5000, 3);
    uint64_t a = crdtdb__hlc_tick(&last, 1000); /* wall clock stepped back */
    ck_assert_uint_eq(a, crdtdb__hlc_make(5000, 4));
}
END_TEST

START_TEST(counter_overflow_carries)
{
    uint64_t last = 0, prev = 0;
    for (int i = 0; i < 70000; i++) { /* frozen clock */
        uint64_t t = crdtdb__hlc_tick(&last, 7);
        ck_assert_uint_gt(t, prev);
        prev = t;
    }
    ck_assert_uint_eq(crdtdb__hlc_ms(prev), 8);
    ck_assert_uint_eq(crdtdb__hlc_counter(prev), 70000 - 65536 - 1);
}
END_TEST

START_TEST(recv_advances_past_remote)
{
    uint64_t last = crdtdb__hlc_make(1000, 0);
    uint64_t remote = crdtdb__hlc_make(1500, 9);
    ck_assert_int_eq(crdtdb__hlc_recv(&last, remote, 1200, 300000), 0);
    ck_assert_uint_eq(last, crdtdb__hlc_make(1500, 10));
    uint64_t next = crdtdb__hlc_tick(&last, 1200);
    ck_assert_uint_gt(next, remote);
    /* a remote behind us changes nothing but still moves the counter */
    ck_assert_int_eq(crdtdb__hlc_recv(&last, crdtdb__hlc_make(10, 0), 1200, 300000), 0);
    ck_assert_uint_gt(last, next);
    /* wall clock ahead of both wins */
    ck_assert_int_eq(crdtdb__hlc_recv(&last, remote, 9000, 300000), 0);
    ck_assert_uint_eq(last, crdtdb__hlc_make(9000, 0));
}
END_TEST

START_TEST(recv_refuses_far_future)
{
    uint64_t last = crdtdb__hlc_make(1000, 0);
    uint64_t remote = crdtdb__hlc_make(1000 + 300001, 0);
    ck_assert_int_eq(crdtdb__hlc_recv(&last, remote, 1000, 300000), CRDTDB_ECLOCK);
    ck_assert_uint_eq(last, crdtdb__hlc_make(1000, 0)); /* untouched */
    ck_assert_int_eq(crdtdb__hlc_recv(&last, crdtdb__hlc_make(301000, 0), 1000, 300000), 0);
}
END_TEST

START_TEST(packing)
{
    uint64_t h = crdtdb__hlc_make(CRDTDB__HLC_MS_MAX, 0xffff);
    ck_assert_uint_eq(crdtdb__hlc_ms(h), CRDTDB__HLC_MS_MAX);
    ck_assert_uint_eq(crdtdb__hlc_counter(h), 0xffff);
    ck_assert(crdtdb__hlc_make(2, 0) > crdtdb__hlc_make(1, 0xffff));
}
END_TEST

int main(void)
{
    Suite *s = suite_create("hlc");
    TCase *tc = tcase_create("hlc");
    tcase_add_test(tc, tick_follows_wall_clock);
    tcase_add_test(tc, tick_never_goes_back);
    tcase_add_test(tc, counter_overflow_carries);
    tcase_add_test(tc, recv_advances_past_remote);
    tcase_add_test(tc, recv_refuses_far_future);
    tcase_add_test(tc, packing);
    suite_add_tcase(s, tc);
    return tu_run(s);
}
