/* JSON <-> msgpack conversion at the edges. */
#include "crdtdb.h"

#include <check.h>
#include <stdlib.h>
#include <string.h>
#include "tests/testutil.h"

/* JSON -> msgpack -> JSON; the result must equal `want`. */
static void roundtrip(const char *json, const char *want)
{
    crdtdb_buf mp = CRDTDB_BUF_INIT, js = CRDTDB_BUF_INIT;
    char err[256];
    int rc = crdtdb_json_to_msgpack(json, strlen(json), 0, &mp, err,
                                    sizeof err);
    ck_assert_msg(rc == 0, "%s: %s (%s)", json, crdtdb_errname(rc), err);
    ck_assert_str_eq(err, "");
    rc = crdtdb_msgpack_to_json(mp.data, mp.len, &js);
    ck_assert_msg(rc == 0, "%s: %s", json, crdtdb_errname(rc));
    ck_assert_uint_eq(js.len, strlen((char *)js.data));
    ck_assert_str_eq((char *)js.data, want);
    crdtdb_buf_free(&mp);
    crdtdb_buf_free(&js);
}

static void same(const char *json) { roundtrip(json, json); }

/* msgpack bytes -> JSON must give `want`. */
static void to_json(const void *mp, size_t len, const char *want)
{
    crdtdb_buf js = CRDTDB_BUF_INIT;
    int rc = crdtdb_msgpack_to_json(mp, len, &js);
    ck_assert_msg(rc == 0, "%s: %s", want, crdtdb_errname(rc));
    ck_assert_uint_eq(js.len, strlen(want));
    ck_assert_mem_eq(js.data, want, js.len + 1); /* includes the NUL */
    crdtdb_buf_free(&js);
}

static void to_json_fails(const void *mp, size_t len)
{
    crdtdb_buf js = CRDTDB_BUF_INIT;
    ck_assert_int_eq(crdtdb_msgpack_to_json(mp, len, &js), CRDTDB_EBADVALUE);
    ck_assert_uint_eq(js.len, 0);
    crdtdb_buf_free(&js);
}

/* JSON -> msgpack must give exactly `want`. */
static void to_mp(const char *json, const void *want, size_t len)
{
    crdtdb_buf mp = CRDTDB_BUF_INIT;
    ck_assert_int_eq(crdtdb_json_to_msgpack(json, strlen(json), 0, &mp, NULL,
                                            0),
                     0);
    ck_assert_uint_eq(mp.len, len);
    ck_assert_mem_eq(mp.data, want, len);
    crdtdb_buf_free(&mp);
}

/* JSON -> msgpack must fail with `want` and a non-empty message. */
static void json_fails(const char *json, unsigned depth, int want)
{
    crdtdb_buf mp = CRDTDB_BUF_INIT;
    char err[256] = "";
    int rc = crdtdb_json_to_msgpack(json, strlen(json), depth, &mp, err,
                                    sizeof err);
    ck_assert_msg(rc == want, "%.60s: got %s", json, crdtdb_errname(rc));
    ck_assert_uint_eq(mp.len, 0);
    ck_assert_msg(err[0] != '\0', "%.60s: empty errmsg", json);
    crdtdb_buf_free(&mp);
}

/* n nested arrays around 1: "[[[1]]]". */
static char *nested(size_t n)
{
    char *s = malloc(2 * n + 2);
    ck_assert_ptr_nonnull(s);
    memset(s, '[', n);
    s[n] = '1';
    memset(s + n + 1, ']', n);
    s[2 * n + 1] = '\0';
    return s;
}

START_TEST(objects_and_arrays)
{
    same("{}");
    same("[]");
    same("{\"b\":1,\"a\":\"x\"}"); /* key order is kept */
    same("{\"a\":{\"b\":[1,2,{\"c\":null}],\"d\":{}},\"e\":true,\"f\":false}");
    same("[[],[[]],{\"\":\"\"}]");
    roundtrip(" { \"a\" : [ 1 , 2 ] }\n", "{\"a\":[1,2]}");
}
END_TEST

START_TEST(scalars_at_top_level)
{
    same("null");
    same("true");
    same("false");
    same("42");
    same("\"s\"");
    same("1.5");
}
END_TEST

START_TEST(integers)
{
    static const char *const ints[] = {
        "0", "1", "-1", "-32", "-33", "127", "128", "255", "256", "-128",
        "-129", "65535", "65536", "-32768", "-32769", "4294967295",
        "4294967296", "-2147483648", "-2147483649", "9223372036854775807",
        "-9223372036854775808"};
    for (size_t i = 0; i < sizeof ints / sizeof *ints; i++)
        same(ints[i]);
    to_mp("1", "\x01", 1);
    to_mp("-1", "\xff", 1);
    to_mp("{\"a\":300}", "\x81\xa1" "a\xcd\x01\x2c", 6);
    /* Out of int64 range: jansson refuses rather than losing precision. */
    json_fails("18446744073709551616", 0, CRDTDB_EBADVALUE);
}
END_TEST

START_TEST(floats)
{
    same("1.5");
    same("-0.25");
    same("0.1");
    same("3.141592653589793");
    same("1e+300");
    same("-0.0");
    roundtrip("1.0", "1.0");
    roundtrip("2E3", "2000.0");
    roundtrip("1e-7", "1e-07");
    roundtrip("[1.0,1]", "[1.0,1]"); /* reals stay reals */
    to_mp("1.0", "\xcb\x3f\xf0\0\0\0\0\0\0", 9);
}
END_TEST

START_TEST(strings)
{
    same("\"h\xc3\xa9llo \xe2\x98\x83 \xf0\x9f\x98\x80\"");
    roundtrip("\"\\u00e9\\ud83d\\ude00\"", "\"\xc3\xa9\xf0\x9f\x98\x80\"");
    same("\"a\\\"b\\\\c\\n\\t\\r\\b\\f\\u0001\\u001f\"");
    roundtrip("\"\\/\"", "\"/\"");
    same("\"nul\\u0000inside\"");
    same("{\"k\\\"ey\\n\":\"\xe2\x82\xac\"}");
}
END_TEST

START_TEST(depth_limit)
{
    char *ok = nested(32), *deep = nested(33), *huge = nested(5000);
    same(ok);
    json_fails(deep, 0, CRDTDB_ETOODEEP);
    json_fails(deep, 100, CRDTDB_ETOODEEP); /* clamped to 32 */
    json_fails(huge, 0, CRDTDB_ETOODEEP);   /* beyond jansson's own limit */
    free(ok);
    free(deep);
    free(huge);

    crdtdb_buf mp = CRDTDB_BUF_INIT;
    const char *two = "{\"a\":{\"b\":1}}";
    ck_assert_int_eq(crdtdb_json_to_msgpack(two, strlen(two), 2, &mp, NULL, 0),
                     0);
    crdtdb_buf_free(&mp);
    json_fails("{\"a\":{\"b\":{}}}", 2, CRDTDB_ETOODEEP);
    json_fails("[[[]]]", 2, CRDTDB_ETOODEEP);
    char err[128];
    ck_assert_int_eq(crdtdb_json_to_msgpack("[[1]]", 5, 1, &mp, err,
                                            sizeof err),
                     CRDTDB_ETOODEEP);
    ck_assert_str_eq(err, "JSON nesting exceeds max depth 1");
    crdtdb_buf_free(&mp);
}
END_TEST

START_TEST(malformed_json)
{
    static const char *const bad[] = {
        "", "{", "{\"a\":}", "[1,]", "{\"a\" 1}", "nul", "'x'", "{\"a\":1}x",
        "\"\\ud800\"", "{\"a\":1,\"a\":2}", "\"\xff\"", "[1] [2]"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        json_fails(bad[i], 0, CRDTDB_EBADVALUE);

    crdtdb_buf mp = CRDTDB_BUF_INIT;
    char err[256];
    ck_assert_int_eq(crdtdb_json_to_msgpack("{\"a\":}", 6, 0, &mp, err,
                                            sizeof err),
                     CRDTDB_EBADVALUE);
    ck_assert_msg(strncmp(err, "invalid JSON at line 1 column ", 30) == 0,
                  "%s", err);
    /* Small and absent message buffers are respected. */
    char small[8];
    memset(small, 'x', sizeof small);
    ck_assert_int_eq(crdtdb_json_to_msgpack("{", 1, 0, &mp, small,
                                            sizeof small),
                     CRDTDB_EBADVALUE);
    ck_assert_uint_eq(strlen(small), sizeof small - 1);
    ck_assert_int_eq(crdtdb_json_to_msgpack("{", 1, 0, &mp, NULL, 0),
                     CRDTDB_EBADVALUE);
    /* Only `len` bytes are read. */
    ck_assert_int_eq(crdtdb_json_to_msgpack("[1]garbage", 3, 0, &mp, NULL, 0),
                     0);
    ck_assert_int_eq(crdtdb_json_to_msgpack("{}", 2, 0, NULL, NULL, 0),
                     CRDTDB_EINVAL);
    ck_assert_int_eq(crdtdb_json_to_msgpack(NULL, 2, 0, &mp, NULL, 0),
                     CRDTDB_EINVAL);
    crdtdb_buf_free(&mp);
}
END_TEST

START_TEST(binary_and_ext_as_base64)
{
    to_json("\xc4\x03\x01\x02\x03", 5, "\"AQID\"");
    to_json("\xc4\x00", 2, "\"\"");
    to_json("\xc5\x00\x02\xff\xfe", 5, "\"//4=\"");
    to_json("\xc6\x00\x00\x00\x01\x00", 6, "\"AA==\"");
    to_json("\xd4\x01\xff", 3, "\"/w==\"");            /* fixext 1 */
    to_json("\xd6\x05\x00\x00\x00\x01", 6, "\"AAAAAQ==\""); /* fixext 4 */
    to_json("\xc7\x02\x05\x61\x62", 5, "\"YWI=\"");    /* ext 8 */
    to_json("\x81\xa1" "b\xc4\x01\x00", 6, "{\"b\":\"AA==\"}");
}
END_TEST

/* Timestamps (ext -1) read as a JavaScript Date's toISOString() does. */
START_TEST(timestamp_as_date_text)
{
    to_json("\xd6\xff\x00\x00\x00\x00", 6, "\"1970-01-01T00:00:00.000Z\"");
    to_json("\xd6\xff\x00\x00\x00\x01", 6, "\"1970-01-01T00:00:01.000Z\"");
    to_json("\xd6\xff\x67\x55\x0d\x60", 6, "\"2024-12-08T03:07:12.000Z\"");
    /* 64 bits: 123 ms in the upper 30 bits, 1 s */
    to_json("\xd7\xff\x1d\x53\x53\x00\x00\x00\x00\x01", 10,
            "\"1970-01-01T00:00:01.123Z\"");
    /* 64 bits, nanoseconds that are not whole milliseconds */
    to_json("\xd7\xff\x00\x00\x00\x04\x00\x00\x00\x00", 10,
            "\"1970-01-01T00:00:00.000000001Z\"");
    /* 96 bits: before 1970 (-1 s), and the first second of year 0 */
    to_json("\xc7\x0c\xff\x00\x00\x00\x00\xff\xff\xff\xff\xff\xff\xff\xff", 15,
            "\"1969-12-31T23:59:59.000Z\"");
    to_json("\xc7\x0c\xff\x00\x00\x00\x00\xff\xff\xff\xf1\x86\x8b\x84\x00", 15,
            "\"0000-01-01T00:00:00.000Z\"");
    /* not a date: base64 as any other extension (a year past 9999,
     * nanoseconds over 999,999,999, a size no timestamp has) */
    to_json("\xc7\x0c\xff\x00\x00\x00\x00\x00\x00\x00\x3a\xff\xf4\x41\x80", 15,
            "\"AAAAAAAAADr/9EGA\"");
    to_json("\xc7\x0c\xff\x3b\x9a\xca\x00\x00\x00\x00\x00\x00\x00\x00\x00", 15,
            "\"O5rKAAAAAAAAAAAA\"");
    to_json("\xd5\xff\x00\x01", 4, "\"AAE=\"");
    to_json("\x81\xa1" "d\xd6\xff\x00\x00\x00\x00", 9,
            "{\"d\":\"1970-01-01T00:00:00.000Z\"}");
}
END_TEST

START_TEST(msgpack_numbers)
{
    to_json("\xcf\xff\xff\xff\xff\xff\xff\xff\xff", 9, "18446744073709551615");
    to_json("\xd3\x80\0\0\0\0\0\0\0", 9, "-9223372036854775808");
    to_json("\xd0\x80", 2, "-128");
    to_json("\xd1\xff\x7f", 3, "-129");
    to_json("\xd2\xff\xff\xff\xff", 5, "-1");
    to_json("\xd0\x05", 2, "5");
    to_json("\xe0", 1, "-32");
    to_json("\xcc\xff", 2, "255");
    to_json("\xca\x3f\xc0\x00\x00", 5, "1.5");         /* float32 */
    to_json("\xca\x3d\xcc\xcc\xcd", 5, "0.1");         /* 0.1f, shortest */
    to_json("\xca\x3f\x80\x00\x00", 5, "1.0");
    to_json("\xcb\x40\x59\0\0\0\0\0\0", 9, "100.0");
    to_json("\xcb\x7f\xf8\0\0\0\0\0\0", 9, "null");    /* NaN */
    to_json("\xcb\x7f\xf0\0\0\0\0\0\0", 9, "null");    /* +Inf */
    to_json("\xca\xff\x80\x00\x00", 5, "null");        /* float32 -Inf */
    to_json("\x93\xc0\xc2\xc3", 4, "[null,false,true]");
}
END_TEST

START_TEST(non_string_keys)
{
    to_json("\x81\x01\xa1" "a", 4, "{\"1\":\"a\"}");
    to_json("\x81\x92\x01\x02\xc3", 5, "{\"[1,2]\":true}");
    to_json("\x81\xc0\x01", 3, "{\"null\":1}");
    to_json("\x81\x91\xa1\x22\x00", 5, "{\"[\\\"\\\\\\\"\\\"]\":0}");
    to_json("\x81\x81\xa1" "k\x02\x03", 6, "{\"{\\\"k\\\":2}\":3}");
    /* a non-string key inside a key: refused (escapes would double per level) */
    to_json_fails("\x81\x81\x01\x02\x03", 5);
    uint8_t bomb[64];
    for (int i = 0; i < 30; i++)
        bomb[i] = 0x81; /* {{{...}: 1}: 1} */
    bomb[30] = 0xc0;
    memset(bomb + 31, 0x01, 30);
    to_json_fails((const char *)bomb, 61);
    to_json("\x82\xa1" "a\x01\xcb\x3f\xf8\0\0\0\0\0\0\x02", 14,
            "{\"a\":1,\"1.5\":2}");
}
END_TEST

START_TEST(invalid_utf8_replaced)
{
    to_json("\xa2\xff" "a", 3, "\"\xef\xbf\xbd" "a\"");
    to_json("\xa2\xc0\x80", 3, "\"\xef\xbf\xbd\xef\xbf\xbd\"");   /* overlong */
    to_json("\xa3\xed\xa0\x80", 4,
            "\"\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\"");             /* surrogate */
    to_json("\xa2\xe2\x82", 3, "\"\xef\xbf\xbd\xef\xbf\xbd\"");   /* truncated */
    to_json("\xa4\xf4\x90\x80\x80", 5,
            "\"\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\""); /* >10FFFF */
    to_json("\xa4\xf0\x9f\x98\x80", 5, "\"\xf0\x9f\x98\x80\"");
    to_json("\xa3\x7f\x00\x1b", 4, "\"\x7f\\u0000\\u001b\"");
    to_json("\x81\xa1\xff\x01", 4, "{\"\xef\xbf\xbd\":1}");
}
END_TEST

START_TEST(trailing_and_truncated_refused)
{
    to_json_fails("\x01\x02", 2);
    to_json_fails("\x80\xc0", 2);
    to_json_fails("", 0);
    to_json_fails(NULL, 0);
    to_json_fails("\x92\x01", 2);
    to_json_fails("\x81\xa1" "a", 3);
    to_json_fails("\xa3" "ab", 3);
    to_json_fails("\xcd\x01", 2);
    to_json_fails("\xcb\0\0\0", 4);
    to_json_fails("\xc4\x05\x01", 3);
    to_json_fails("\xd4\x01", 2);
    to_json_fails("\xdd\xff\xff\xff\xff", 5); /* huge count, no elements */
    to_json_fails("\xdf\xff\xff\xff\xff\x01", 6);
    to_json_fails("\xdb\xff\xff\xff\xff" "a", 6);
    to_json_fails("\xc1", 1);                 /* never-used byte */

    crdtdb_buf js = CRDTDB_BUF_INIT;
    ck_assert_int_eq(crdtdb_msgpack_to_json((const uint8_t *)"\x01", 1, NULL),
                     CRDTDB_EINVAL);
    ck_assert_int_eq(crdtdb_msgpack_to_json(NULL, 1, &js), CRDTDB_EINVAL);
    crdtdb_buf_free(&js);
}
END_TEST

START_TEST(msgpack_depth_limit)
{
    uint8_t mp[40];
    memset(mp, 0x91, sizeof mp);
    mp[32] = 0xc0;
    crdtdb_buf js = CRDTDB_BUF_INIT;
    ck_assert_int_eq(crdtdb_msgpack_to_json(mp, 33, &js), 0);
    ck_assert_uint_eq(js.len, 32 * 2 + 4);
    mp[32] = 0x91; /* 33 arrays */
    mp[33] = 0xc0;
    ck_assert_int_eq(crdtdb_msgpack_to_json(mp, 34, &js), CRDTDB_EBADVALUE);
    crdtdb_buf_free(&js);
}
END_TEST

START_TEST(output_buffer_reused)
{
    crdtdb_buf js = CRDTDB_BUF_INIT;
    ck_assert_int_eq(crdtdb_msgpack_to_json((const uint8_t *)"\x92\x01\x02", 3,
                                            &js),
                     0);
    ck_assert_str_eq((char *)js.data, "[1,2]");
    ck_assert_int_eq(crdtdb_msgpack_to_json((const uint8_t *)"\x07", 1, &js),
                     0);
    ck_assert_str_eq((char *)js.data, "7");
    ck_assert_uint_eq(js.len, 1);
    ck_assert_int_eq(crdtdb_msgpack_to_json((const uint8_t *)"\x92", 1, &js),
                     CRDTDB_EBADVALUE);
    ck_assert_uint_eq(js.len, 0);
    crdtdb_buf_free(&js);

    crdtdb_buf mp = CRDTDB_BUF_INIT;
    ck_assert_int_eq(crdtdb_json_to_msgpack("[1,2,3]", 7, 0, &mp, NULL, 0), 0);
    ck_assert_int_eq(crdtdb_json_to_msgpack("7", 1, 0, &mp, NULL, 0), 0);
    ck_assert_uint_eq(mp.len, 1);
    ck_assert_int_eq(crdtdb_json_to_msgpack("[", 1, 0, &mp, NULL, 0),
                     CRDTDB_EBADVALUE);
    ck_assert_uint_eq(mp.len, 0);
    crdtdb_buf_free(&mp);
}
END_TEST

START_TEST(large_values)
{
    /* A long string with escapes and a big array survive a round trip. */
    size_t n = 100000;
    char *s = malloc(n + 3);
    ck_assert_ptr_nonnull(s);
    s[0] = '"';
    for (size_t i = 1; i <= n; i++)
        s[i] = (char)('a' + i % 26);
    s[n + 1] = '"';
    s[n + 2] = '\0';
    same(s);
    free(s);

    size_t cnt = 20000;
    char *a = malloc(cnt * 2 + 2), *w = a;
    ck_assert_ptr_nonnull(a);
    *w++ = '[';
    for (size_t i = 0; i < cnt; i++) {
        *w++ = '7';
        *w++ = ',';
    }
    w[-1] = ']';
    *w = '\0';
    same(a);
    free(a);
}
END_TEST

static Suite *json_suite(void)
{
    Suite *s = suite_create("json");
    TCase *tc = tcase_create("convert");
    tcase_add_test(tc, objects_and_arrays);
    tcase_add_test(tc, scalars_at_top_level);
    tcase_add_test(tc, integers);
    tcase_add_test(tc, floats);
    tcase_add_test(tc, strings);
    tcase_add_test(tc, depth_limit);
    tcase_add_test(tc, malformed_json);
    tcase_add_test(tc, binary_and_ext_as_base64);
    tcase_add_test(tc, timestamp_as_date_text);
    tcase_add_test(tc, msgpack_numbers);
    tcase_add_test(tc, non_string_keys);
    tcase_add_test(tc, invalid_utf8_replaced);
    tcase_add_test(tc, trailing_and_truncated_refused);
    tcase_add_test(tc, msgpack_depth_limit);
    tcase_add_test(tc, output_buffer_reused);
    tcase_add_test(tc, large_values);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return tu_run(json_suite());
}
