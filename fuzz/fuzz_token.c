/*
 * libFuzzer target for tokens (transport/jwt.c).
 *
 * The input bytes are, in turn:
 *
 *   1. a token for crdtdb_jwt_verify under a fixed HS256 secret and under
 *      a fixed RS256 public key (below), at a fixed time.  The result is 0,
 *      EAUTH or ETOOBIG (exactly when longer than CRDTDB_JWT_MAX), never
 *      anything else; the message is always terminated, empty exactly on
 *      success; on success the user id is 1..CRDTDB_ID_MAX bytes, and the
 *      token is refused by the other key (its algorithm is not that key's)
 *      and, unless its exp is near the end of time, once expired.
 *   2. an Authorization header value and a Sec-WebSocket-Protocol value
 *      for crdtdb__bearer_token: a token found lies inside the input, is
 *      never "crdtdb-sync" from the protocols, and goes through 1.
 *   3. (up to CRDTDB_ID_MAX bytes without NUL) a user id to mint a token
 *      for: minting succeeds or says EINVAL, and a minted token verifies
 *      to the same user id.
 *
 * Any invariant violation traps (__builtin_trap), which libFuzzer reports
 * as a crash.
 */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "crdtdb_ws.h"
#include "fuzz_util.h"
#include "transport/jwt.h"

#define NOW INT64_C(1700000000)
#define LEEWAY 60u

const char fuzz_name[] = "fuzz_token";

static const char HS_SECRET[] = "fuzz_token: the fixed HS256 secret (32+ bytes)";

/* Made once with `openssl genpkey -algorithm RSA -pkeyopt
 * rsa_keygen_bits:2048`; the private half signed the RS256 seeds and was
 * thrown away. */
static const char RS_PUB[] =
    "-----BEGIN PUBLIC KEY-----\n"
    "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA6vcVPh/+DPihFMXbvVrF\n"
    "LVZlY31mELXXF0AFnOdG4bHGEHkkNy8a6MXtK71lZp1w9WJtjKMnxDHZSLCyhO7S\n"
    "g0Q07FaFWD1DAUosFbhsWt/XITh54Gx7IAj1PoURSopwDVhmy014yUjeBJw9g6P7\n"
    "w88L/wXKYRx6QvM8RsJJhTIwr+0uKKlY9zBAULhsiCyx4l1XIVu95NbUR+vLzeLb\n"
    "Rzfbzi7aGFCl9uQhwGz3ZY/QllO9CcigOIh1WJ/tQGawUfKntXNS4eWVjJENwKRs\n"
    "nv+SOgi17iAm5MP5LVh1kfo/o3tbjhQEAqMenG1Xj2jmo2WwBt3De64It3QqbAOy\n"
    "+QIDAQAB\n"
    "-----END PUBLIC KEY-----\n";

static crdtdb_jwt_key *hs, *rs;

static void close_keys(void)
{
    crdtdb_jwt_key_close(hs);
    crdtdb_jwt_key_close(rs);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    if (crdtdb_jwt_key_open(CRDTDB_JWT_HS256, (const uint8_t *)HS_SECRET,
                            sizeof HS_SECRET - 1, &hs) != 0 ||
        crdtdb_jwt_key_open(CRDTDB_JWT_RS256, (const uint8_t *)RS_PUB,
                            sizeof RS_PUB - 1, &rs) != 0) {
        fprintf(stderr, "%s: cannot open the keys\n", fuzz_name);
        abort();
    }
    atexit(close_keys);
    return 0;
}

/* Verifies tok[0, n) under key; returns its result after the checks. */
static int verify(const crdtdb_jwt_key *key, const char *tok, size_t n,
                  int64_t now)
{
    char sub[CRDTDB_ID_MAX + 1], err[96];
    memset(sub, 'x', sizeof sub);
    memset(err, 'x', sizeof err);
    int rc = crdtdb_jwt_verify(key, tok, n, now, LEEWAY, sub, sizeof sub, err,
                               sizeof err);
    CHECK(memchr(err, '\0', sizeof err) != NULL);
    CHECK(memchr(sub, '\0', sizeof sub) != NULL);
    if (n > CRDTDB_JWT_MAX) {
        CHECK(rc == CRDTDB_ETOOBIG);
    } else {
        CHECK(rc == 0 || rc == CRDTDB_EAUTH || rc == CRDTDB_ENOMEM);
    }
    if (rc != 0) {
        CHECK(sub[0] == '\0');
        CHECK(err[0] != '\0');
        return rc;
    }
    size_t len = strlen(sub);
    CHECK(err[0] == '\0');
    CHECK(len >= 1 && len <= CRDTDB_ID_MAX);
    if (fuzz_debug_enabled())
        fprintf(stderr, "%s: accepted, sub '%s'\n", fuzz_name, sub);
    return 0;
}

/* A token accepted by one key: the other refuses it, and so does the same
 * key once the token has expired (unless exp is so far off that
 * INT64_MAX is not past it with the leeway). */
static void accepted(const crdtdb_jwt_key *key, const char *tok, size_t n)
{
    const crdtdb_jwt_key *other = key == hs ? rs : hs;
    char sub[CRDTDB_ID_MAX + 1];
    CHECK(crdtdb_jwt_verify(other, tok, n, NOW, LEEWAY, sub, sizeof sub, NULL,
                            0) == CRDTDB_EAUTH);
    int rc = crdtdb_jwt_verify(key, tok, n, INT64_MAX, LEEWAY, sub,
                               sizeof sub, NULL, 0);
    CHECK(rc == CRDTDB_EAUTH || rc == 0);
}

static void token(const char *tok, size_t n)
{
    if (verify(hs, tok, n, NOW) == 0)
        accepted(hs, tok, n);
    if (verify(rs, tok, n, NOW) == 0)
        accepted(rs, tok, n);
}

static void bearer(const char *p, size_t n)
{
    const char *tok;
    size_t len;
    for (int as_header = 0; as_header < 2; as_header++) {
        int rc = as_header
                     ? crdtdb__bearer_token(p, n, NULL, 0, &tok, &len)
                     : crdtdb__bearer_token(NULL, 0, p, n, &tok, &len);
        if (rc != 0) {
            CHECK(rc == CRDTDB_EAUTH);
            CHECK(tok == NULL && len == 0);
            continue;
        }
        CHECK(tok >= p && len >= 1 && len <= n &&
              (size_t)(tok - p) <= n - len);
        if (!as_header)
            CHECK(len != sizeof CRDTDB__WS_PROTOCOL - 1 ||
                  memcmp(tok, CRDTDB__WS_PROTOCOL, len) != 0);
        token(tok, len);
    }
}

static void mint(const uint8_t *data, size_t size)
{
    if (size > CRDTDB_ID_MAX || memchr(data, '\0', size) != NULL)
        return;
    char sub[CRDTDB_ID_MAX + 1], back[CRDTDB_ID_MAX + 1];
    memcpy(sub, data, size);
    sub[size] = '\0';
    crdtdb_buf out = CRDTDB_BUF_INIT;
    int rc = crdtdb_jwt_mint(hs, sub, NOW, 600, &out);
    if (rc != 0) {
        CHECK(rc == CRDTDB_EINVAL || rc == CRDTDB_ENOMEM);
        CHECK(out.len == 0);
        /* Refused only when empty or not UTF-8 (jansson's rules). */
        json_t *js = size ? json_stringn(sub, size) : NULL;
        CHECK(rc == CRDTDB_ENOMEM || js == NULL);
        json_decref(js);
    } else {
        CHECK(size > 0);
        CHECK(out.len == strlen((const char *)out.data));
        CHECK(crdtdb_jwt_verify(hs, (const char *)out.data, out.len, NOW, 0,
                                back, sizeof back, NULL, 0) == 0);
        CHECK(strcmp(back, sub) == 0);
        CHECK(crdtdb_jwt_verify(hs, (const char *)out.data, out.len,
                                NOW + 600, 0, back, sizeof back, NULL,
                                0) == CRDTDB_EAUTH);
    }
    crdtdb_buf_free(&out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* An exact-size copy: ASan sees any read past the end. */
    uint8_t *p = fuzz_dup(data, size);
    token((const char *)p, size);
    bearer((const char *)p, size);
    mint(p, size);
    free(p);
    return 0;
}
