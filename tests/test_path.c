/* Key-path encoding (crdt/path.c). */
#include <check.h>
#include <string.h>

#include "crdt/path.h"
#include "tests/testutil.h"

START_TEST(encoding_is_escaped_and_terminated)
{
    crdtdb_buf b = CRDTDB_BUF_INIT;
    ck_assert_int_eq(crdtdb__path_push(&b, "a\0b", 3), 0);
    static const uint8_t want[] = {'a', 0, 0xff, 'b', 0, 1};
    ck_assert_uint_eq(b.len, sizeof want);
    ck_assert_mem_eq(b.data, want, sizeof want);
    size_t off = 0, end;
    ck_assert_int_eq(crdtdb__path_next(b.data, b.len, &off, &end), 0);
    ck_assert_uint_eq(end, 4);
    ck_assert_uint_eq(off, 6);
    uint8_t key[8];
    ck_assert_uint_eq(crdtdb__path_unescape(b.data, 0, end, key), 3);
    ck_assert_mem_eq(key, "a\0b", 3);
    crdtdb_buf_free(&b);
}
END_TEST

START_TEST(ancestors_are_prefixes_on_boundaries)
{
    crdtdb_buf a = CRDTDB_BUF_INIT, ab = CRDTDB_BUF_INIT, abc = CRDTDB_BUF_INIT;
    crdtdb__path_push(&a, "a", 1);
    crdtdb__path_push(&ab, "a", 1);
    crdtdb__path_push(&ab, "b", 1);
    crdtdb__path_push(&abc, "ab", 2);
    ck_assert(crdtdb__path_is_ancestor(a.data, a.len, ab.data, ab.len));
    ck_assert(!crdtdb__path_is_ancestor(ab.data, ab.len, a.data, a.len));
    ck_assert(!crdtdb__path_is_ancestor(a.data, a.len, abc.data, abc.len));
    ck_assert(!crdtdb__path_is_ancestor(a.data, a.len, a.data, a.len));
    ck_assert_int_eq(crdtdb__path_depth(ab.data, ab.len), 2);
    /* a subtree sorts right after its root, before the next sibling */
    ck_assert(memcmp(a.data, ab.data, a.len) == 0);
    ck_assert(memcmp(ab.data, abc.data, 2) < 0);
    crdtdb_buf_free(&a);
    crdtdb_buf_free(&ab);
    crdtdb_buf_free(&abc);
}
END_TEST

START_TEST(invalid_encodings_refused)
{
    static const uint8_t bad1[] = {'a', 0};
    static const uint8_t bad2[] = {'a', 0, 7};
    static const uint8_t bad3[] = {'a'};
    ck_assert_int_eq(crdtdb__path_depth(bad1, sizeof bad1), -1);
    ck_assert_int_eq(crdtdb__path_depth(bad2, sizeof bad2), -1);
    ck_assert_int_eq(crdtdb__path_depth(bad3, sizeof bad3), -1);
    ck_assert_int_eq(crdtdb__path_depth(bad3, 0), 0);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("path");
    TCase *tc = tcase_create("path");
    tcase_add_test(tc, encoding_is_escaped_and_terminated);
    tcase_add_test(tc, ancestors_are_prefixes_on_boundaries);
    tcase_add_test(tc, invalid_encodings_refused);
    suite_add_tcase(s, tc);
    return tu_run(s);
}
