/*
 * libFuzzer target for the JSON edge (crdt/json.c).
 *
 * The same input bytes are used twice:
 *
 *   1. as JSON text for crdtdb_json_to_msgpack (max_depth 8).  On success the
 *      msgpack must survive msgpack -> JSON -> msgpack unchanged: the second
 *      and third msgpack encodings equal the first, and the JSON texts of
 *      the second and third rounds are identical.
 *   2. as raw msgpack for crdtdb_msgpack_to_json, which must never crash.
 *      On success its output is NUL-terminated JSON that crdtdb_json_to_msgpack
 *      reads back (unless the msgpack had duplicate keys or integers beyond
 *      int64, which JSON cannot carry), and from there the round trip is
 *      stable as in 1.
 *
 * Any invariant violation traps (__builtin_trap), which libFuzzer reports
 * as a crash.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "crdtdb.h"
#include "fuzz_util.h"

#define DEPTH 8u

const char fuzz_name[] = "fuzz_json";

static int known_err(int rc)
{
    return rc <= CRDTDB_EINVAL && rc >= CRDTDB_ELIMIT;
}

static int same(const crdtdb_buf *a, const crdtdb_buf *b)
{
    return a->len == b->len && (a->len == 0 || memcmp(a->data, b->data, a->len) == 0);
}

/* Output of crdtdb_msgpack_to_json: NUL-terminated, no NUL inside (every
 * NUL in a string is escaped as \u0000). */
static void check_json_text(const crdtdb_buf *j)
{
    CHECK(j->data != NULL);
    CHECK(j->data[j->len] == '\0');
    CHECK(memchr(j->data, '\0', j->len) == NULL);
}

/* mp is msgpack produced by crdtdb_json_to_msgpack at depth `depth`:
 * msgpack -> JSON -> msgpack -> JSON -> msgpack must be a fixed point. */
static void check_stable(const crdtdb_buf *mp, unsigned depth)
{
    crdtdb_buf j1 = CRDTDB_BUF_INIT, m2 = CRDTDB_BUF_INIT;
    crdtdb_buf j2 = CRDTDB_BUF_INIT, m3 = CRDTDB_BUF_INIT;
    char err[128];

    CHECK(crdtdb_msgpack_to_json(mp->data, mp->len, &j1) == 0);
    check_json_text(&j1);
    CHECK(crdtdb_json_to_msgpack((const char *)j1.data, j1.len, depth, &m2,
                                 err, sizeof err) == 0);
    CHECK(same(mp, &m2));
    CHECK(crdtdb_msgpack_to_json(m2.data, m2.len, &j2) == 0);
    check_json_text(&j2);
    CHECK(same(&j1, &j2));
    CHECK(crdtdb_json_to_msgpack((const char *)j2.data, j2.len, depth, &m3,
                                 err, sizeof err) == 0);
    CHECK(same(&m2, &m3));

    crdtdb_buf_free(&j1);
    crdtdb_buf_free(&m2);
    crdtdb_buf_free(&j2);
    crdtdb_buf_free(&m3);
}

static void fuzz_json_text(const uint8_t *data, size_t size)
{
    crdtdb_buf mp = CRDTDB_BUF_INIT;
    char err[128];
    memset(err, 'x', sizeof err);
    int rc = crdtdb_json_to_msgpack((const char *)data, size, DEPTH, &mp, err,
                                    sizeof err);
    CHECK(memchr(err, '\0', sizeof err) != NULL); /* always terminated */
    if (rc == 0) {
        CHECK(mp.len > 0);
        CHECK(err[0] == '\0');
        check_stable(&mp, DEPTH);
    } else {
        CHECK(rc == CRDTDB_EBADVALUE || rc == CRDTDB_ETOODEEP ||
              rc == CRDTDB_ENOMEM);
        CHECK(mp.len == 0);
        CHECK(err[0] != '\0');
    }
    crdtdb_buf_free(&mp);

    /* Default depth (0 = 32) must accept everything depth 8 accepted. */
    if (rc == 0) {
        crdtdb_buf mp32 = CRDTDB_BUF_INIT;
        CHECK(crdtdb_json_to_msgpack((const char *)data, size, 0, &mp32, NULL,
                                     0) == 0);
        crdtdb_buf_free(&mp32);
    }
}

static void fuzz_msgpack_bytes(const uint8_t *data, size_t size)
{
    crdtdb_buf j = CRDTDB_BUF_INIT;
    int rc = crdtdb_msgpack_to_json(size ? data : NULL, size, &j);
    if (rc != 0) {
        CHECK(known_err(rc));
        CHECK(j.len == 0);
        crdtdb_buf_free(&j);
        return;
    }
    check_json_text(&j);

    /* Our own JSON output must parse.  Known limits of the JSON edge,
     * tolerated here: duplicate keys (jansson refuses them; non-string keys
     * written as text can collide too), integers outside int64, and keys
     * containing NUL (valid JSON, but jansson cannot hold them, although
     * record keys may contain NUL).  Anything else is a bug in the writer. */
    crdtdb_buf mp = CRDTDB_BUF_INIT;
    char err[200];
    rc = crdtdb_json_to_msgpack((const char *)j.data, j.len, 0, &mp, err,
                                sizeof err);
    if (rc == 0) {
        check_stable(&mp, 0);
    } else if (rc != CRDTDB_EBADVALUE ||
               (strstr(err, "duplicate object key") == NULL &&
                strstr(err, "too big") == NULL &&
                strstr(err, "NUL byte in object key") == NULL)) {
        fprintf(stderr, "fuzz_json: own output does not parse (%s): %s\n%s\n",
                crdtdb_errname(rc), err, (const char *)j.data);
        CHECK(!"crdtdb_msgpack_to_json wrote JSON it cannot read back");
    }
    crdtdb_buf_free(&mp);
    crdtdb_buf_free(&j);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_json_text(data, size);
    fuzz_msgpack_bytes(data, size);
    return 0;
}
