/* JSON Web Tokens (transport/jwt.c): keys, verify, mint, the bearer token
 * of an upgrade request, and the crdtdb token command.  RSA and EC keys are
 * made at start-up with the openssl command. */
#include "crdtdb_ws.h"

#include <check.h>
#include <jwt.h>
#include <openssl/bn.h>
#include <openssl/bio.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tests/testutil.h"
#include "tests/wsutil.h"
#include "transport/jwt.h"

#define NOW INT64_C(1700000000)

static const char SECRET[] = "test secret: 0123456789abcdef0123456789";
static const char OTHER[] = "another secret, 0123456789abcdef01234567";

/* Keys made by the openssl command in keydir, and their bytes. */
static char *keydir;
static tu_pem rsa_priv, rsa_pub, ec_priv, ec_pub, rsa_small, ec384, rsa_enc;

/* ------------------------------------------------------------- helpers */

static void make_keys(void)
{
    keydir = tu_tmpdir();
    const char *rsa[] = {"-algorithm", "RSA", "-pkeyopt",
                         "rsa_keygen_bits:2048", NULL};
    const char *small[] = {"-algorithm", "RSA", "-pkeyopt",
                           "rsa_keygen_bits:1024", NULL};
    const char *ec[] = {"-algorithm", "EC", "-pkeyopt",
                        "ec_paramgen_curve:P-256", NULL};
    const char *p384[] = {"-algorithm", "EC", "-pkeyopt",
                          "ec_paramgen_curve:P-384", NULL};
    const char *enc[] = {"-algorithm", "EC", "-pkeyopt",
                         "ec_paramgen_curve:P-256", "-aes256", "-pass",
                         "pass:secret", NULL};
    tu_genkey(&rsa_priv, keydir, "rsa.pem", rsa);
    tu_pubkey(&rsa_pub, &rsa_priv, keydir, "rsa.pub");
    tu_genkey(&ec_priv, keydir, "ec.pem", ec);
    tu_pubkey(&ec_pub, &ec_priv, keydir, "ec.pub");
    tu_genkey(&rsa_small, keydir, "rsa1024.pem", small);
    tu_genkey(&ec384, keydir, "ec384.pem", p384);
    tu_genkey(&rsa_enc, keydir, "enc.pem", enc);
}

static void free_keys(void)
{
    tu_pem *all[] = {&rsa_priv, &rsa_pub, &ec_priv, &ec_pub, &rsa_small, &ec384,
                  &rsa_enc};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++)
        free(all[i]->data);
    tu_rmrf(keydir);
    free(keydir);
}

static crdtdb_jwt_key *key_of(crdtdb_jwt_alg alg, const void *p, size_t n)
{
    crdtdb_jwt_key *k = NULL;
    int rc = crdtdb_jwt_key_open(alg, p, n, &k);
    ck_assert_msg(rc == 0, "key_open: %s", crdtdb_errname(rc));
    ck_assert_ptr_nonnull(k);
    return k;
}

static crdtdb_jwt_key *hs_key(const char *secret)
{
    return key_of(CRDTDB_JWT_HS256, secret, strlen(secret));
}

static crdtdb_jwt_key *pem_key(crdtdb_jwt_alg alg, const tu_pem *p)
{
    return key_of(alg, p->data, p->len);
}

/* tok must verify under k at now with leeway, naming want. */
static void accepted(const crdtdb_jwt_key *k, const char *tok, int64_t now,
                     unsigned leeway, const char *want)
{
    char sub[CRDTDB_ID_MAX + 1], err[200];
    memset(err, 'x', sizeof err);
    int rc = crdtdb_jwt_verify(k, tok, strlen(tok), now, leeway, sub,
                               sizeof sub, err, sizeof err);
    ck_assert_msg(rc == 0, "%.80s: %s (%s)", tok, crdtdb_errname(rc), err);
    ck_assert_str_eq(err, "");
    ck_assert_str_eq(sub, want);
}

/* Changes one signature character of tok to another valid base64url one
 * (a flipped bit may make '-' or '_' an invalid character: then the token
 * is malformed, not badly signed). */
static void flip_sig(char *tok)
{
    char *c = tok + strlen(tok) - 2;
    *c = *c == 'A' ? 'B' : 'A';
}

/* The first len bytes of tok must be refused with rc want and a message
 * containing msg (if not NULL). */
static void refused_n(const crdtdb_jwt_key *k, const char *tok, size_t len,
                      int64_t now, unsigned leeway, int want, const char *msg)
{
    char sub[CRDTDB_ID_MAX + 1], err[200] = "";
    memset(sub, 'x', sizeof sub);
    int rc = crdtdb_jwt_verify(k, tok, len, now, leeway, sub, sizeof sub, err,
                               sizeof err);
    ck_assert_msg(rc == want, "%.80s: got %s (%s), want %s", tok,
                  crdtdb_errname(rc), err, crdtdb_errname(want));
    ck_assert_str_eq(sub, "");
    ck_assert_msg(err[0] != '\0', "%.80s: no message", tok);
    if (msg)
        ck_assert_msg(strstr(err, msg) != NULL, "%.80s: message '%s', want '%s'",
                      tok, err, msg);
}

static void refused(const crdtdb_jwt_key *k, const char *tok, int want,
                    const char *msg)
{
    refused_n(k, tok, strlen(tok), NOW, 0, want, msg);
}

/* A token with these claims, signed by libjwt itself with alg and key
 * bytes: what another issuer, or an attacker, would make; malloc'd. */
static char *forge(jwt_alg_t alg, const void *key, size_t n,
                   const char *claims)
{
    jwt_t *j = NULL;
    ck_assert_int_eq(jwt_new(&j), 0);
    ck_assert_int_eq(jwt_set_alg(j, alg, key, (int)n), 0);
    ck_assert_int_eq(jwt_add_grants_json(j, claims), 0);
    char *t = jwt_encode_str(j);
    ck_assert_ptr_nonnull(t);
    jwt_free(j);
    return t;
}

static char *forge_hs(const char *claims)
{
    return forge(JWT_ALG_HS256, SECRET, strlen(SECRET), claims);
}

/* header.payload, HMAC-SHA256-signed with SECRET by libsodium: any header,
 * any bytes (libjwt's encoder writes its own typ and refuses bad JSON);
 * malloc'd. */
static char *sign_hs(const char *header, const char *payload)
{
    char *t = tu_jwt_craft(header, payload, "");
    size_t n = strlen(t) - 1; /* signed: header.payload */
    unsigned char mac[crypto_auth_hmacsha256_BYTES];
    crypto_auth_hmacsha256_state st;
    crypto_auth_hmacsha256_init(&st, (const unsigned char *)SECRET,
                                strlen(SECRET));
    crypto_auth_hmacsha256_update(&st, (unsigned char *)t, n);
    crypto_auth_hmacsha256_final(&st, mac);
    char *sig = tu_b64url(mac, sizeof mac);
    size_t tn = n + 1 + strlen(sig) + 1;
    char *out = malloc(tn);
    ck_assert_ptr_nonnull(out);
    snprintf(out, tn, "%.*s.%s", (int)n, t, sig);
    free(t);
    free(sig);
    return out;
}

/* header.payload signed by OpenSSL with the private PEM key p: RS256, or
 * ES256 with the DER signature turned into r || s; malloc'd. */
static char *sign_pem(const tu_pem *p, const char *header, const char *payload)
{
    char *t = tu_jwt_craft(header, payload, "");
    size_t n = strlen(t) - 1;
    BIO *in = BIO_new_mem_buf(p->data, (int)p->len);
    EVP_PKEY *pk = PEM_read_bio_PrivateKey(in, NULL, NULL, NULL);
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    ck_assert_ptr_nonnull(pk);
    ck_assert_ptr_nonnull(ctx);
    unsigned char sig[1024], raw[64];
    size_t slen = sizeof sig;
    ck_assert_int_eq(EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, pk), 1);
    ck_assert_int_eq(EVP_DigestSign(ctx, sig, &slen, (unsigned char *)t, n), 1);
    const unsigned char *use = sig;
    if (EVP_PKEY_get_base_id(pk) == EVP_PKEY_EC) {
        const unsigned char *q = sig;
        ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &q, (long)slen);
        ck_assert_ptr_nonnull(es);
        ck_assert_int_eq(BN_bn2binpad(ECDSA_SIG_get0_r(es), raw, 32), 32);
        ck_assert_int_eq(BN_bn2binpad(ECDSA_SIG_get0_s(es), raw + 32, 32), 32);
        ECDSA_SIG_free(es);
        use = raw;
        slen = sizeof raw;
    }
    char *b = tu_b64url(use, slen);
    size_t tn = n + 1 + strlen(b) + 1;
    char *out = malloc(tn);
    ck_assert_ptr_nonnull(out);
    snprintf(out, tn, "%.*s.%s", (int)n, t, b);
    EVP_MD_CTX_free(ctx);
    EVP_PKEY_free(pk);
    BIO_free(in);
    free(t);
    free(b);
    return out;
}

/* The decoded header of tok (malloc'd JSON text). */
static char *header_of(const char *tok)
{
    const char *dot = strchr(tok, '.');
    ck_assert_ptr_nonnull(dot);
    char *h = malloc(CRDTDB_JWT_MAX);
    size_t n;
    ck_assert_ptr_nonnull(h);
    ck_assert_int_eq(sodium_base642bin((unsigned char *)h, CRDTDB_JWT_MAX - 1,
                                       tok, (size_t)(dot - tok), NULL, &n,
                                       NULL,
                                       sodium_base64_VARIANT_URLSAFE_NO_PADDING),
                     0);
    h[n] = '\0';
    return h;
}

/* ------------------------------------------------------------- tests */

START_TEST(hs256_round_trip)
{
    crdtdb_jwt_key *k = hs_key(SECRET), *same = hs_key(SECRET);
    char *tok = tu_jwt_mint(k, "alice", NOW, 3600);
    char *h = header_of(tok);
    ck_assert_ptr_nonnull(strstr(h, "\"alg\":\"HS256\""));
    free(h);
    accepted(k, tok, NOW, 0, "alice");
    accepted(same, tok, NOW + 3599, 0, "alice");
    accepted(k, tok, NOW - 1000, 0, "alice"); /* iat is not checked */
    free(tok);
    tok = tu_jwt_mint(k, "Zo\xc3\xab \xe2\x98\x83", NOW, 1);
    accepted(k, tok, NOW, 0, "Zo\xc3\xab \xe2\x98\x83");
    free(tok);
    char max[CRDTDB_ID_MAX + 1];
    memset(max, 'm', CRDTDB_ID_MAX);
    max[CRDTDB_ID_MAX] = '\0';
    tok = tu_jwt_mint(k, max, NOW, 60);
    accepted(k, tok, NOW, 0, max);
    free(tok);
    crdtdb_jwt_key_close(k);
    crdtdb_jwt_key_close(same);
    crdtdb_jwt_key_close(NULL);
}
END_TEST

START_TEST(expiry_and_leeway)
{
    crdtdb_jwt_key *k = hs_key(SECRET);
    char *tok = tu_jwt_mint(k, "alice", NOW, 3600);
    accepted(k, tok, NOW + 3599, 0, "alice");
    refused_n(k, tok, strlen(tok), NOW + 3600, 0, CRDTDB_EAUTH, "expired");
    refused_n(k, tok, strlen(tok), NOW + 99999, 0, CRDTDB_EAUTH, "expired");
    accepted(k, tok, NOW + 3609, 10, "alice");
    refused_n(k, tok, strlen(tok), NOW + 3610, 10, CRDTDB_EAUTH, "expired");
    accepted(k, tok, INT64_MIN, 0, "alice");
    accepted(k, tok, NOW, UINT32_MAX, "alice");
    free(tok);

    /* nbf: from nbf - leeway on. */
    tok = forge_hs("{\"sub\":\"bob\",\"exp\":1700000100,\"nbf\":1700000050}");
    refused(k, tok, CRDTDB_EAUTH, "not yet valid");
    refused_n(k, tok, strlen(tok), NOW + 44, 5, CRDTDB_EAUTH, "not yet");
    accepted(k, tok, NOW + 45, 5, "bob");
    accepted(k, tok, NOW + 50, 0, "bob");
    refused_n(k, tok, strlen(tok), NOW + 100, 0, CRDTDB_EAUTH, "expired");
    free(tok);
    /* Extreme values neither wrap nor pass. */
    tok = forge_hs("{\"sub\":\"bob\",\"exp\":9223372036854775807,"
                   "\"nbf\":-9223372036854775808}");
    accepted(k, tok, NOW, UINT32_MAX, "bob");
    accepted(k, tok, INT64_MAX - 1, 0, "bob");
    refused_n(k, tok, strlen(tok), INT64_MAX, 0, CRDTDB_EAUTH, "expired");
    free(tok);
    tok = forge_hs("{\"sub\":\"bob\",\"exp\":-9223372036854775808}");
    refused(k, tok, CRDTDB_EAUTH, "expired");
    accepted(k, tok, INT64_MIN, 1, "bob"); /* INT64_MIN < exp + 1 */
    free(tok);
    tok = forge_hs("{\"sub\":\"bob\",\"exp\":9223372036854775807,"
                   "\"nbf\":9223372036854775807}");
    refused_n(k, tok, strlen(tok), INT64_MAX - 1, 0, CRDTDB_EAUTH, "not yet");
    accepted(k, tok, INT64_MAX - 1, 1, "bob");
    free(tok);
    crdtdb_jwt_key_close(k);
}
END_TEST

START_TEST(claims_checked)
{
    static const struct {
        const char *claims, *msg;
    } bad[] = {
        {"{\"sub\":\"a\"}", "no exp"},
        {"{\"sub\":\"a\",\"exp\":\"1800000000\"}", "exp claim is not a number"},
        {"{\"sub\":\"a\",\"exp\":\"1800000000.5\"}", "exp claim is not a"},
        {"{\"sub\":\"a\",\"exp\":null}", "exp claim is not a number"},
        {"{\"sub\":\"a\",\"exp\":true}", "exp claim is not a number"},
        {"{\"sub\":\"a\",\"exp\":false}", "exp claim is not a number"},
        {"{\"sub\":\"a\",\"exp\":[1800000000]}", "exp claim is not a number"},
        {"{\"sub\":\"a\",\"exp\":1800000000,\"nbf\":\"0\"}", "nbf claim is not a"},
        {"{\"sub\":\"a\",\"exp\":1800000000,\"nbf\":true}", "nbf claim is not a"},
        {"{\"exp\":1800000000}", "no sub"},
        {"{\"sub\":\"\",\"exp\":1800000000}", "sub claim must be"},
        {"{\"sub\":42,\"exp\":1800000000}", "sub claim is not"},
        {"{\"sub\":[\"a\"],\"exp\":1800000000}", "sub claim is not"},
    };
    crdtdb_jwt_key *k = hs_key(SECRET);
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char *tok = forge_hs(bad[i].claims);
        refused(k, tok, CRDTDB_EAUTH, bad[i].msg);
        free(tok);
    }
    /* sub of CRDTDB_ID_MAX + 1 bytes. */
    char claims[600];
    char long_sub[CRDTDB_ID_MAX + 2];
    memset(long_sub, 'l', CRDTDB_ID_MAX + 1);
    long_sub[CRDTDB_ID_MAX + 1] = '\0';
    snprintf(claims, sizeof claims, "{\"sub\":\"%s\",\"exp\":1800000000}",
             long_sub);
    char *tok = forge_hs(claims);
    refused(k, tok, CRDTDB_EAUTH, "sub claim must be");
    free(tok);
    long_sub[CRDTDB_ID_MAX] = '\0';
    snprintf(claims, sizeof claims, "{\"sub\":\"%s\",\"exp\":1800000000}",
             long_sub);
    tok = forge_hs(claims);
    accepted(k, tok, NOW, 0, long_sub);
    free(tok);
    /* Other claims are ignored. */
    tok = forge_hs("{\"sub\":\"a\",\"exp\":1800000000,\"iat\":\"x\","
                   "\"aud\":[1,2],\"role\":{\"admin\":true}}");
    accepted(k, tok, NOW, 0, "a");
    free(tok);

    /* A NUL inside sub, and duplicate claims, signed properly. */
    static const char *const crafted[] = {
        "{\"sub\":\"a\\u0000b\",\"exp\":1800000000}",
        "{\"sub\":\"a\",\"sub\":\"root\",\"exp\":1800000000}",
        "{\"sub\":\"a\",\"exp\":1,\"exp\":1800000000}",
        "[\"sub\",\"a\"]",
    };
    for (size_t i = 0; i < sizeof crafted / sizeof *crafted; i++) {
        char *t = sign_hs("{\"alg\":\"HS256\",\"typ\":\"JWT\"}", crafted[i]);
        refused(k, t, CRDTDB_EAUTH, NULL);
        free(t);
    }
    crdtdb_jwt_key_close(k);
}
END_TEST

/* exp and nbf as JSON reals (RFC 7519 NumericDate): never accepted at or
 * after exp + leeway, nor before nbf - leeway, to the exact second. */
START_TEST(real_dates)
{
    crdtdb_jwt_key *k = hs_key(SECRET);
    /* 1700000100.5: valid through second 1700000100, not at 1700000101. */
    char *tok = forge_hs("{\"sub\":\"r\",\"exp\":1700000100.5}");
    accepted(k, tok, NOW, 0, "r");
    accepted(k, tok, NOW + 100, 0, "r");
    refused_n(k, tok, strlen(tok), NOW + 101, 0, CRDTDB_EAUTH, "expired");
    accepted(k, tok, NOW + 110, 10, "r");
    refused_n(k, tok, strlen(tok), NOW + 111, 10, CRDTDB_EAUTH, "expired");
    free(tok);
    /* Half a second ago, no leeway: expired. */
    tok = forge_hs("{\"sub\":\"r\",\"exp\":1699999999.5}");
    refused(k, tok, CRDTDB_EAUTH, "expired");
    accepted(k, tok, NOW - 1, 0, "r");
    accepted(k, tok, NOW, 1, "r");
    refused_n(k, tok, strlen(tok), NOW + 1, 1, CRDTDB_EAUTH, "expired");
    free(tok);
    tok = forge_hs("{\"sub\":\"r\",\"exp\":1699998999.75}");
    refused(k, tok, CRDTDB_EAUTH, "expired");
    free(tok);
    /* Whole reals and exponents are NumericDates too. */
    tok = forge_hs("{\"sub\":\"r\",\"exp\":1.8e9}");
    accepted(k, tok, NOW, 0, "r");
    refused_n(k, tok, strlen(tok), 1800000000, 0, CRDTDB_EAUTH, "expired");
    free(tok);
    tok = forge_hs("{\"sub\":\"r\",\"exp\":1700000000.0}");
    refused(k, tok, CRDTDB_EAUTH, "expired");
    accepted(k, tok, NOW - 1, 0, "r");
    free(tok);
    tok = forge_hs("{\"sub\":\"r\",\"exp\":-0.5}"); /* rounds up to 0 */
    accepted(k, tok, -1, 0, "r");
    refused_n(k, tok, strlen(tok), 0, 0, CRDTDB_EAUTH, "expired");
    free(tok);

    /* nbf half a second ahead: not yet at NOW, valid from NOW + 1. */
    tok = forge_hs("{\"sub\":\"r\",\"exp\":1800000000,"
                   "\"nbf\":1700000000.5}");
    refused(k, tok, CRDTDB_EAUTH, "not yet valid");
    accepted(k, tok, NOW + 1, 0, "r");
    accepted(k, tok, NOW, 1, "r");
    free(tok);
    tok = forge_hs("{\"sub\":\"r\",\"exp\":1800000000,"
                   "\"nbf\":1700000050.25}");
    refused(k, tok, CRDTDB_EAUTH, "not yet valid");
    refused_n(k, tok, strlen(tok), NOW + 50, 0, CRDTDB_EAUTH, "not yet");
    accepted(k, tok, NOW + 51, 0, "r");
    accepted(k, tok, NOW + 46, 5, "r");
    free(tok);
    tok = forge_hs("{\"sub\":\"r\",\"exp\":1800000000,"
                   "\"nbf\":1699999999.5}");
    accepted(k, tok, NOW, 0, "r");
    refused_n(k, tok, strlen(tok), NOW - 1, 0, CRDTDB_EAUTH, "not yet");
    free(tok);

    /* Reals that are no int64 second are refused, not clamped. */
    static const struct {
        const char *claims, *msg;
    } bad[] = {
        {"{\"sub\":\"r\",\"exp\":1e300}", "exp claim is out of range"},
        {"{\"sub\":\"r\",\"exp\":-1e300}", "exp claim is out of range"},
        {"{\"sub\":\"r\",\"exp\":1e19}", "exp claim is out of range"},
        {"{\"sub\":\"r\",\"exp\":9.2233720368547758e18}", "exp claim is out of"},
        {"{\"sub\":\"r\",\"exp\":-9.3e18}", "exp claim is out of range"},
        {"{\"sub\":\"r\",\"exp\":1800000000,\"nbf\":1e300}",
         "nbf claim is out of range"},
        {"{\"sub\":\"r\",\"exp\":1800000000,\"nbf\":-1e300}",
         "nbf claim is out of range"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        tok = forge_hs(bad[i].claims);
        refused(k, tok, CRDTDB_EAUTH, bad[i].msg);
        refused_n(k, tok, strlen(tok), NOW, UINT32_MAX, CRDTDB_EAUTH,
                  bad[i].msg);
        free(tok);
    }
    /* The largest reals that fit still work: -2^63 and 9.2e18. */
    tok = forge_hs("{\"sub\":\"r\",\"exp\":-9.2233720368547758e18}");
    refused(k, tok, CRDTDB_EAUTH, "expired");
    accepted(k, tok, INT64_MIN, 1, "r");
    free(tok);
    tok = forge_hs("{\"sub\":\"r\",\"exp\":9.2e18,\"nbf\":-9.2e18}");
    accepted(k, tok, NOW, 0, "r");
    free(tok);
    /* JSON has no NaN or infinity, and jansson refuses what overflows a
     * double or (written without fraction or exponent) an int64: such
     * claims are malformed.  libjwt would not sign them, so sign_hs. */
    static const char *const unparsable[] = {
        "{\"sub\":\"r\",\"exp\":NaN}",
        "{\"sub\":\"r\",\"exp\":Infinity}",
        "{\"sub\":\"r\",\"exp\":-Infinity}",
        "{\"sub\":\"r\",\"exp\":1e400}",
        "{\"sub\":\"r\",\"exp\":9223372036854775808}",
        "{\"sub\":\"r\",\"exp\":1800000000,\"nbf\":-1e400}",
    };
    for (size_t i = 0; i < sizeof unparsable / sizeof *unparsable; i++) {
        tok = sign_hs("{\"alg\":\"HS256\",\"typ\":\"JWT\"}", unparsable[i]);
        refused(k, tok, CRDTDB_EAUTH, "malformed token claims");
        free(tok);
    }
    crdtdb_jwt_key_close(k);
}
END_TEST

/* typ: JWT (RFC 7519) or at+jwt (RFC 9068), any case, "application/"
 * optional; absent is fine; anything else is refused. */
START_TEST(typ_values)
{
    const char *payload = "{\"sub\":\"t\",\"exp\":1800000000}";
    crdtdb_jwt_key *k = hs_key(SECRET);
    static const char *const good[] = {
        "{\"alg\":\"HS256\",\"typ\":\"at+jwt\"}",
        "{\"alg\":\"HS256\",\"typ\":\"application/at+jwt\"}",
        "{\"alg\":\"HS256\",\"typ\":\"AT+JWT\"}",
        "{\"alg\":\"HS256\",\"typ\":\"Application/At+Jwt\"}",
        "{\"alg\":\"HS256\",\"typ\":\"JWT\"}",
        "{\"alg\":\"HS256\",\"typ\":\"jwt\"}",
        "{\"alg\":\"HS256\",\"typ\":\"application/jwt\"}",
        "{\"alg\":\"HS256\"}",
        "{\"typ\":\"at+jwt\",\"alg\":\"HS256\",\"kid\":\"k1\"}",
    };
    for (size_t i = 0; i < sizeof good / sizeof *good; i++) {
        char *tok = sign_hs(good[i], payload);
        accepted(k, tok, NOW, 0, "t");
        refused_n(k, tok, strlen(tok), 1800000000, 0, CRDTDB_EAUTH, "expired");
        free(tok);
    }
    static const char *const bad[] = {
        "{\"alg\":\"HS256\",\"typ\":\"JWE\"}",
        "{\"alg\":\"HS256\",\"typ\":\"JOSE\"}",
        "{\"alg\":\"HS256\",\"typ\":\"secevent+jwt\"}",
        "{\"alg\":\"HS256\",\"typ\":\"dpop+jwt\"}",
        "{\"alg\":\"HS256\",\"typ\":\"at+jwt \"}",
        "{\"alg\":\"HS256\",\"typ\":\" at+jwt\"}",
        "{\"alg\":\"HS256\",\"typ\":\"at+jwtx\"}",
        "{\"alg\":\"HS256\",\"typ\":\"at\"}",
        "{\"alg\":\"HS256\",\"typ\":\"+jwt\"}",
        "{\"alg\":\"HS256\",\"typ\":\"\"}",
        "{\"alg\":\"HS256\",\"typ\":\"application/\"}",
        "{\"alg\":\"HS256\",\"typ\":\"application/application/jwt\"}",
        "{\"alg\":\"HS256\",\"typ\":\"text/at+jwt\"}",
        "{\"alg\":\"HS256\",\"typ\":\"application/at+jwt; q=1\"}",
        "{\"alg\":\"HS256\",\"typ\":1}",
        "{\"alg\":\"HS256\",\"typ\":null}",
        "{\"alg\":\"HS256\",\"typ\":[\"JWT\"]}",
        "{\"alg\":\"HS256\",\"typ\":\"JWT\",\"typ\":\"at+jwt\"}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char *tok = sign_hs(bad[i], payload);
        /* duplicate names: the header is malformed */
        refused(k, tok, CRDTDB_EAUTH,
                strstr(bad[i], "\"typ\":\"JWT\",") ? "malformed token header"
                                                   : "token type is not JWT");
        free(tok);
    }
    /* A NUL inside typ is refused by jansson (headers allow none). */
    char *tok = sign_hs("{\"alg\":\"HS256\",\"typ\":\"at+jwt\\u0000x\"}",
                        payload);
    refused(k, tok, CRDTDB_EAUTH, "malformed token header");
    free(tok);

    /* RS256 and ES256 access tokens signed elsewhere (OpenSSL), with a
     * real exp: accepted by the public keys, and not across keys. */
    crdtdb_jwt_key *rs = pem_key(CRDTDB_JWT_RS256, &rsa_pub);
    crdtdb_jwt_key *es = pem_key(CRDTDB_JWT_ES256, &ec_pub);
    const char *rp = "{\"sub\":\"api\",\"exp\":1700000600.5,"
                     "\"client_id\":\"c\",\"iat\":1700000000}";
    tok = sign_pem(&rsa_priv, "{\"alg\":\"RS256\",\"typ\":\"at+jwt\"}", rp);
    accepted(rs, tok, NOW + 600, 0, "api");
    refused_n(rs, tok, strlen(tok), NOW + 601, 0, CRDTDB_EAUTH, "expired");
    refused(es, tok, CRDTDB_EAUTH, "algorithm");
    flip_sig(tok); /* another signature */
    refused(rs, tok, CRDTDB_EAUTH, "bad token signature");
    free(tok);
    tok = sign_pem(&ec_priv,
                   "{\"alg\":\"ES256\",\"typ\":\"application/at+jwt\"}", rp);
    accepted(es, tok, NOW, 0, "api");
    refused(rs, tok, CRDTDB_EAUTH, "algorithm");
    flip_sig(tok);
    refused(es, tok, CRDTDB_EAUTH, "bad token signature");
    free(tok);
    /* ES256 signatures are r || s exactly: DER, or another length, is
     * refused. */
    tok = sign_pem(&ec_priv, "{\"alg\":\"ES256\",\"typ\":\"at+jwt\"}", rp);
    char *dot = strrchr(tok, '.');
    unsigned char raw[65] = {0};
    size_t rn;
    ck_assert_int_eq(sodium_base642bin(raw, sizeof raw, dot + 1,
                                       strlen(dot + 1), NULL, &rn, NULL,
                                       sodium_base64_VARIANT_URLSAFE_NO_PADDING),
                     0);
    ck_assert_uint_eq(rn, 64);
    ECDSA_SIG *sig = ECDSA_SIG_new();
    ck_assert_ptr_nonnull(sig);
    ck_assert_int_eq(ECDSA_SIG_set0(sig, BN_bin2bn(raw, 32, NULL),
                                    BN_bin2bn(raw + 32, 32, NULL)),
                     1);
    unsigned char *der = NULL;
    int dn = i2d_ECDSA_SIG(sig, &der);
    ck_assert_int_gt(dn, 0);
    ECDSA_SIG_free(sig);
    const struct {
        const unsigned char *p;
        size_t n;
    } wrong[] = {{raw, 1}, {raw, 32}, {raw, 63}, {raw, 65}, {der, (size_t)dn}};
    for (size_t i = 0; i < sizeof wrong / sizeof *wrong; i++) {
        char *b = tu_b64url(wrong[i].p, wrong[i].n);
        size_t hn = (size_t)(dot - tok), tn = hn + 1 + strlen(b) + 1;
        char *t = malloc(tn);
        ck_assert_ptr_nonnull(t);
        snprintf(t, tn, "%.*s.%s", (int)hn, tok, b);
        refused(es, t, CRDTDB_EAUTH, "bad token signature");
        free(t);
        free(b);
    }
    OPENSSL_free(der);
    accepted(es, tok, NOW, 0, "api");
    free(tok);
    crdtdb_jwt_key_close(rs);
    crdtdb_jwt_key_close(es);
    crdtdb_jwt_key_close(k);
}
END_TEST

START_TEST(wrong_secret_and_tampering)
{
    crdtdb_jwt_key *k = hs_key(SECRET), *other = hs_key(OTHER);
    char *tok = tu_jwt_mint(other, "alice", NOW, 3600);
    refused(k, tok, CRDTDB_EAUTH, "bad token signature");
    accepted(other, tok, NOW, 0, "alice");
    free(tok);

    tok = tu_jwt_mint(k, "alice", NOW, 3600);
    /* Another payload under the same signature. */
    char *evil = tu_jwt_craft("{\"alg\":\"HS256\",\"typ\":\"JWT\"}",
                       "{\"exp\":1800000000,\"iat\":1700000000,\"sub\":\"root\"}",
                       strrchr(tok, '.') + 1);
    refused(k, evil, CRDTDB_EAUTH, "bad token signature");
    free(evil);
    /* Every single-character change of the token is refused. */
    size_t n = strlen(tok);
    for (size_t i = 0; i < n; i++) {
        char saved = tok[i];
        static const char subst[] = {'A', 'B', '_', '.', '-'};
        for (size_t s = 0; s < sizeof subst; s++) {
            if (subst[s] == saved)
                continue;
            tok[i] = subst[s];
            char sub[CRDTDB_ID_MAX + 1];
            int rc = crdtdb_jwt_verify(k, tok, n, NOW, 0, sub, sizeof sub,
                                       NULL, 0);
            /* The last character of a segment may carry only padding
             * bits, which strict base64 refuses anyway. */
            ck_assert_msg(rc == CRDTDB_EAUTH, "change at %zu to %c: %s", i,
                          subst[s], crdtdb_errname(rc));
        }
        tok[i] = saved;
    }
    refused_n(k, tok, n - 1, NOW, 0, CRDTDB_EAUTH, NULL); /* truncated */
    accepted(k, tok, NOW, 0, "alice");
    free(tok);
    crdtdb_jwt_key_close(k);
    crdtdb_jwt_key_close(other);
}
END_TEST

START_TEST(alg_none_refused)
{
    crdtdb_jwt_key *hs = hs_key(SECRET), *rs = pem_key(CRDTDB_JWT_RS256, &rsa_pub);
    const char *payload = "{\"sub\":\"root\",\"exp\":1800000000}";
    /* The classic form, with an empty signature. */
    char *tok = tu_jwt_craft("{\"alg\":\"none\",\"typ\":\"JWT\"}", payload, "");
    refused(hs, tok, CRDTDB_EAUTH, NULL);
    refused(rs, tok, CRDTDB_EAUTH, NULL);
    /* libjwt alone would take it when given no key: the pitfall. */
    jwt_t *j = NULL;
    ck_assert_int_eq(jwt_decode(&j, tok, NULL, 0), 0);
    jwt_free(j);
    free(tok);
    /* With some signature, and other spellings. */
    static const char *const heads[] = {
        "{\"alg\":\"none\",\"typ\":\"JWT\"}", "{\"alg\":\"None\"}",
        "{\"alg\":\"NONE\",\"typ\":\"JWT\"}", "{\"alg\":\"nOnE\"}"};
    for (size_t i = 0; i < sizeof heads / sizeof *heads; i++) {
        tok = tu_jwt_craft(heads[i], payload, "c2ln");
        refused(hs, tok, CRDTDB_EAUTH, "alg none");
        refused(rs, tok, CRDTDB_EAUTH, "alg none");
        free(tok);
    }
    /* Other algorithms the key does not have, and no algorithm. */
    static const char *const others[] = {
        "{\"alg\":\"HS512\"}", "{\"alg\":\"hs256\"}", "{\"alg\":\"RS256\"}",
        "{\"alg\":\"ES256\"}", "{\"alg\":\"PS256\"}", "{\"alg\":\"HS256 \"}",
        "{\"alg\":1}", "{}", "{\"typ\":\"JWT\"}"};
    for (size_t i = 0; i < sizeof others / sizeof *others; i++) {
        tok = tu_jwt_craft(others[i], payload, "c2ln");
        refused(hs, tok, CRDTDB_EAUTH, "algorithm");
        free(tok);
    }
    /* Right algorithm, wrong type, duplicate alg, critical extensions. */
    static const char *const heads2[] = {
        "{\"alg\":\"HS256\",\"typ\":\"JWE\"}", "{\"alg\":\"HS256\",\"typ\":1}",
        "{\"alg\":\"HS256\",\"alg\":\"HS256\"}",
        "{\"alg\":\"HS256\",\"crit\":[\"exp\"]}"};
    for (size_t i = 0; i < sizeof heads2 / sizeof *heads2; i++) {
        tok = tu_jwt_craft(heads2[i], payload, "c2ln");
        refused(hs, tok, CRDTDB_EAUTH, NULL);
        free(tok);
    }
    crdtdb_jwt_key_close(hs);
    crdtdb_jwt_key_close(rs);
}
END_TEST

START_TEST(algorithm_confusion)
{
    const char *claims = "{\"sub\":\"root\",\"exp\":1800000000}";
    crdtdb_jwt_key *rs = pem_key(CRDTDB_JWT_RS256, &rsa_pub);
    crdtdb_jwt_key *es = pem_key(CRDTDB_JWT_ES256, &ec_pub);
    /* HS256 "signed" with the server's public PEM as the HMAC secret. */
    char *tok = forge(JWT_ALG_HS256, rsa_pub.data, rsa_pub.len, claims);
    /* libjwt alone, given the PEM, accepts it: the attack is real. */
    jwt_t *j = NULL;
    ck_assert_int_eq(jwt_decode(&j, tok, (unsigned char *)rsa_pub.data,
                                (int)rsa_pub.len),
                     0);
    ck_assert_int_eq(jwt_get_alg(j), JWT_ALG_HS256);
    jwt_free(j);
    refused(rs, tok, CRDTDB_EAUTH, "algorithm");
    free(tok);
    tok = forge(JWT_ALG_HS256, ec_pub.data, ec_pub.len, claims);
    refused(es, tok, CRDTDB_EAUTH, "algorithm");
    free(tok);

    /* RS256 to an ES256 key and back; a token of another RSA key. */
    crdtdb_jwt_key *rsp = pem_key(CRDTDB_JWT_RS256, &rsa_priv);
    crdtdb_jwt_key *esp = pem_key(CRDTDB_JWT_ES256, &ec_priv);
    tok = tu_jwt_mint(rsp, "alice", NOW, 60);
    refused(es, tok, CRDTDB_EAUTH, "algorithm");
    refused(esp, tok, CRDTDB_EAUTH, "algorithm");
    free(tok);
    tok = tu_jwt_mint(esp, "alice", NOW, 60);
    refused(rs, tok, CRDTDB_EAUTH, "algorithm");
    free(tok);
    /* The same header, another key pair: the signature fails. */
    tok = forge(JWT_ALG_RS256, rsa_small.data, rsa_small.len, claims);
    refused(rs, tok, CRDTDB_EAUTH, "bad token signature");
    free(tok);
    /* An HS256 token under an HS256 key made of an RS256 token's pieces. */
    crdtdb_jwt_key_close(rs);
    crdtdb_jwt_key_close(es);
    crdtdb_jwt_key_close(rsp);
    crdtdb_jwt_key_close(esp);
}
END_TEST

static void pem_round_trip(crdtdb_jwt_alg alg, const tu_pem *priv,
                           const tu_pem *pub)
{
    crdtdb_jwt_key *sk = pem_key(alg, priv), *pk = pem_key(alg, pub);
    char *tok = tu_jwt_mint(sk, "carol", NOW, 600);
    char *h = header_of(tok);
    ck_assert_ptr_nonnull(
        strstr(h, alg == CRDTDB_JWT_RS256 ? "\"RS256\"" : "\"ES256\""));
    free(h);
    accepted(pk, tok, NOW, 0, "carol");
    accepted(sk, tok, NOW + 599, 0, "carol"); /* the private key verifies */
    refused_n(pk, tok, strlen(tok), NOW + 600, 0, CRDTDB_EAUTH, "expired");
    free(tok);
    /* A public key does not mint. */
    crdtdb_buf out = CRDTDB_BUF_INIT;
    ck_assert_int_eq(crdtdb_jwt_mint(pk, "carol", NOW, 600, &out),
                     CRDTDB_EINVAL);
    ck_assert_uint_eq(out.len, 0);
    crdtdb_buf_free(&out);
    /* A key file holding other PEM blocks before the key. */
    size_t n = priv->len + pub->len;
    char *both = malloc(n);
    ck_assert_ptr_nonnull(both);
    memcpy(both, pub->data, pub->len);
    memcpy(both + pub->len, priv->data, priv->len);
    crdtdb_jwt_key *bk = key_of(alg, both, n);
    tok = tu_jwt_mint(bk, "dave", NOW, 60);
    accepted(pk, tok, NOW, 0, "dave");
    free(tok);
    free(both);
    crdtdb_jwt_key_close(bk);
    crdtdb_jwt_key_close(sk);
    crdtdb_jwt_key_close(pk);
}

START_TEST(rs256_round_trip)
{
    pem_round_trip(CRDTDB_JWT_RS256, &rsa_priv, &rsa_pub);
}
END_TEST

START_TEST(es256_round_trip)
{
    pem_round_trip(CRDTDB_JWT_ES256, &ec_priv, &ec_pub);
    /* ECDSA signatures differ each time; both verify. */
    crdtdb_jwt_key *sk = pem_key(CRDTDB_JWT_ES256, &ec_priv);
    char *a = tu_jwt_mint(sk, "x", NOW, 60), *b = tu_jwt_mint(sk, "x", NOW, 60);
    ck_assert_str_ne(a, b);
    accepted(sk, a, NOW, 0, "x");
    accepted(sk, b, NOW, 0, "x");
    free(a);
    free(b);
    crdtdb_jwt_key_close(sk);
}
END_TEST

START_TEST(length_bounds)
{
    crdtdb_jwt_key *k = hs_key(SECRET);
    /* A real token just under the limit verifies; one byte more is
     * ETOOBIG before anything is parsed. */
    char *claims = malloc(CRDTDB_JWT_MAX);
    ck_assert_ptr_nonnull(claims);
    char *tok = NULL;
    for (size_t pad = 5800; pad < 6300; pad++) {
        snprintf(claims, CRDTDB_JWT_MAX,
                 "{\"sub\":\"big\",\"exp\":1800000000,\"pad\":\"%0*d\"}",
                 (int)pad, 0);
        tok = forge_hs(claims);
        if (strlen(tok) >= CRDTDB_JWT_MAX - 3)
            break;
        free(tok);
        tok = NULL;
    }
    ck_assert_ptr_nonnull(tok);
    size_t n = strlen(tok);
    ck_assert_uint_le(n, CRDTDB_JWT_MAX);
    accepted(k, tok, NOW, 0, "big");
    free(tok);
    for (size_t pad = 6000;; pad++) {
        snprintf(claims, CRDTDB_JWT_MAX,
                 "{\"sub\":\"big\",\"exp\":1800000000,\"pad\":\"%0*d\"}",
                 (int)pad, 0);
        tok = forge_hs(claims);
        if (strlen(tok) > CRDTDB_JWT_MAX)
            break;
        free(tok);
    }
    refused(k, tok, CRDTDB_ETOOBIG, "longer than");
    free(tok);
    free(claims);

    char *huge = malloc(4 * CRDTDB_JWT_MAX + 1);
    ck_assert_ptr_nonnull(huge);
    memset(huge, 'A', 4 * CRDTDB_JWT_MAX);
    huge[4 * CRDTDB_JWT_MAX] = '\0';
    huge[100] = huge[200] = '.';
    refused_n(k, huge, CRDTDB_JWT_MAX + 1, NOW, 0, CRDTDB_ETOOBIG, NULL);
    refused_n(k, huge, 4 * CRDTDB_JWT_MAX, NOW, 0, CRDTDB_ETOOBIG, NULL);
    refused_n(k, huge, CRDTDB_JWT_MAX, NOW, 0, CRDTDB_EAUTH, NULL);
    free(huge);
    crdtdb_jwt_key_close(k);
}
END_TEST

START_TEST(garbage_refused)
{
    static const char *const bad[] = {
        "", ".", "..", "...", "a", "a.b", "a.b.c", "a.b.c.d", "eyJ.eyJ.",
        ".eyJhbGciOiJIUzI1NiJ9.c2ln", "eyJhbGciOiJIUzI1NiJ9..c2ln",
        "eyJhbGciOiJIUzI1NiJ9.e30.", "eyJhbGciOiJIUzI1NiJ9.e30.c2ln",
        "eyJhbGciOiJIUzI1NiJ9.e30=.c2ln", "eyJhbGciOiJIUzI1NiJ9 .e30.c2ln",
        "Bearer eyJhbGciOiJIUzI1NiJ9.e30.c2ln", "eyJhbGciOiJIUzI1NiJ9.e30+.c2ln",
        "eyJhbGciOiJIUzI1NiJ9.e3.c2ln",      /* 1 bit too many */
        "eyJhbGciOiJIUzI1NiJ9.e30x.c2ln",    /* "{}" and junk */
        "W10.e30.c2ln",                      /* header [] */
        "bnVsbA.e30.c2ln",                   /* header null */
        "eyJhbGciOiJIUzI1NiJ9.W10.c2ln",     /* payload [] */
        "eyJhbGciOiJIUzI1NiJ9.bm90IGpzb24.c2ln", /* not JSON */
        "\xe2\x82\xac.e30.c2ln", "eyJhbGciOiJIUzI1NiJ9.e30.c2ln\n",
    };
    crdtdb_jwt_key *k = hs_key(SECRET);
    crdtdb_jwt_key *rs = pem_key(CRDTDB_JWT_RS256, &rsa_pub);
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        refused(k, bad[i], CRDTDB_EAUTH, NULL);
        refused(rs, bad[i], CRDTDB_EAUTH, NULL);
    }
    /* A NUL inside the given length. */
    char *tok = tu_jwt_mint(k, "alice", NOW, 60);
    size_t n = strlen(tok);
    char *nul = malloc(n + 2);
    ck_assert_ptr_nonnull(nul);
    memcpy(nul, tok, n + 1);
    nul[n + 1] = 'A';
    refused_n(k, nul, n + 2, NOW, 0, CRDTDB_EAUTH, "malformed");
    /* Only len bytes are read: a valid token followed by junk. */
    nul[n] = '.';
    char sub[CRDTDB_ID_MAX + 1];
    ck_assert_int_eq(crdtdb_jwt_verify(k, nul, n, NOW, 0, sub, sizeof sub,
                                       NULL, 0),
                     0);
    free(nul);

    /* Bad arguments. */
    char err[64], small[8];
    ck_assert_int_eq(crdtdb_jwt_verify(NULL, tok, n, NOW, 0, sub, sizeof sub,
                                       err, sizeof err),
                     CRDTDB_EINVAL);
    ck_assert_int_eq(crdtdb_jwt_verify(k, NULL, 0, NOW, 0, sub, sizeof sub,
                                       err, sizeof err),
                     CRDTDB_EINVAL);
    ck_assert_int_eq(crdtdb_jwt_verify(k, tok, n, NOW, 0, NULL, 0, err,
                                       sizeof err),
                     CRDTDB_EINVAL);
    ck_assert_int_eq(crdtdb_jwt_verify(k, tok, n, NOW, 0, sub, CRDTDB_ID_MAX,
                                       err, sizeof err),
                     CRDTDB_EINVAL);
    /* Messages are cut to the buffer and always terminated. */
    memset(small, 'x', sizeof small);
    ck_assert_int_eq(crdtdb_jwt_verify(k, "a.b", 3, NOW, 0, sub, sizeof sub,
                                       small, sizeof small),
                     CRDTDB_EAUTH);
    ck_assert_uint_eq(strlen(small), sizeof small - 1);
    ck_assert_int_eq(crdtdb_jwt_verify(k, "a.b", 3, NOW, 0, sub, sizeof sub,
                                       small, 1),
                     CRDTDB_EAUTH);
    ck_assert_str_eq(small, "");
    free(tok);
    crdtdb_jwt_key_close(k);
    crdtdb_jwt_key_close(rs);
}
END_TEST

START_TEST(key_open_refusals)
{
    crdtdb_jwt_key *k = (crdtdb_jwt_key *)&k;
    /* HS256: at least 32 bytes, and not a PEM key. */
    ck_assert_int_eq(crdtdb_jwt_key_open(CRDTDB_JWT_HS256,
                                         (const uint8_t *)SECRET, 31, &k),
                     CRDTDB_EINVAL);
    ck_assert_ptr_null(k);
    crdtdb_jwt_key_close(key_of(CRDTDB_JWT_HS256, SECRET, 32));
    crdtdb_jwt_key_close(key_of(CRDTDB_JWT_HS256, "\0\0\0\0\0\0\0\0\0\0\0\0"
                                                  "\0\0\0\0\0\0\0\0\0\0\0\0"
                                                  "\0\0\0\0\0\0\0\0", 32));
    ck_assert_int_eq(crdtdb_jwt_key_open(CRDTDB_JWT_HS256,
                                         (uint8_t *)rsa_pub.data, rsa_pub.len,
                                         &k),
                     CRDTDB_EINVAL);
    /* Unknown algorithms, no key. */
    ck_assert_int_eq(crdtdb_jwt_key_open((crdtdb_jwt_alg)0,
                                         (const uint8_t *)SECRET, 40, &k),
                     CRDTDB_EINVAL);
    ck_assert_int_eq(crdtdb_jwt_key_open((crdtdb_jwt_alg)4,
                                         (const uint8_t *)SECRET, 40, &k),
                     CRDTDB_EINVAL);
    ck_assert_int_eq(crdtdb_jwt_key_open(CRDTDB_JWT_HS256, NULL, 40, &k),
                     CRDTDB_EINVAL);
    ck_assert_int_eq(crdtdb_jwt_key_open(CRDTDB_JWT_RS256,
                                         (uint8_t *)rsa_pub.data, 0, &k),
                     CRDTDB_EINVAL);
    ck_assert_int_eq(crdtdb_jwt_key_open(CRDTDB_JWT_HS256,
                                         (const uint8_t *)SECRET, 40, NULL),
                     CRDTDB_EINVAL);
    /* PEM keys of the wrong kind. */
    static const struct {
        crdtdb_jwt_alg alg;
        const tu_pem *p;
    } wrong[] = {
        {CRDTDB_JWT_RS256, &ec_pub},  {CRDTDB_JWT_RS256, &ec_priv},
        {CRDTDB_JWT_ES256, &rsa_pub}, {CRDTDB_JWT_ES256, &rsa_priv},
        {CRDTDB_JWT_RS256, &rsa_small}, /* 1024 bits */
        {CRDTDB_JWT_ES256, &ec384},     /* not P-256 */
        {CRDTDB_JWT_ES256, &rsa_enc},   /* encrypted: never prompts */
    };
    for (size_t i = 0; i < sizeof wrong / sizeof *wrong; i++) {
        k = (crdtdb_jwt_key *)&k;
        ck_assert_msg(crdtdb_jwt_key_open(wrong[i].alg,
                                          (uint8_t *)wrong[i].p->data,
                                          wrong[i].p->len, &k) == CRDTDB_EINVAL,
                      "%s accepted", wrong[i].p->path);
        ck_assert_ptr_null(k);
    }
    static const char *const junk[] = {
        "not a key at all, just text long enough",
        "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
        SECRET};
    for (size_t i = 0; i < sizeof junk / sizeof *junk; i++) {
        ck_assert_int_eq(crdtdb_jwt_key_open(CRDTDB_JWT_RS256,
                                             (const uint8_t *)junk[i],
                                             strlen(junk[i]), &k),
                         CRDTDB_EINVAL);
        ck_assert_int_eq(crdtdb_jwt_key_open(CRDTDB_JWT_ES256,
                                             (const uint8_t *)junk[i],
                                             strlen(junk[i]), &k),
                         CRDTDB_EINVAL);
    }
    /* A truncated private key. */
    ck_assert_int_eq(crdtdb_jwt_key_open(CRDTDB_JWT_RS256,
                                         (uint8_t *)rsa_priv.data,
                                         rsa_priv.len / 2, &k),
                     CRDTDB_EINVAL);
}
END_TEST

START_TEST(mint_refusals)
{
    crdtdb_jwt_key *k = hs_key(SECRET);
    crdtdb_jwt_key *pub = pem_key(CRDTDB_JWT_ES256, &ec_pub);
    crdtdb_buf out = CRDTDB_BUF_INIT;
    char long_sub[CRDTDB_ID_MAX + 2];
    memset(long_sub, 's', sizeof long_sub - 1);
    long_sub[sizeof long_sub - 1] = '\0';
    ck_assert_int_eq(crdtdb_jwt_mint(pub, "a", NOW, 60, &out), CRDTDB_EINVAL);
    ck_assert_int_eq(crdtdb_jwt_mint(NULL, "a", NOW, 60, &out), CRDTDB_EINVAL);
    ck_assert_int_eq(crdtdb_jwt_mint(k, NULL, NOW, 60, &out), CRDTDB_EINVAL);
    ck_assert_int_eq(crdtdb_jwt_mint(k, "", NOW, 60, &out), CRDTDB_EINVAL);
    ck_assert_int_eq(crdtdb_jwt_mint(k, long_sub, NOW, 60, &out),
                     CRDTDB_EINVAL);
    ck_assert_int_eq(crdtdb_jwt_mint(k, "\xff\xfe", NOW, 60, &out),
                     CRDTDB_EINVAL);
    ck_assert_int_eq(crdtdb_jwt_mint(k, "a", NOW, 0, &out), CRDTDB_EINVAL);
    ck_assert_int_eq(crdtdb_jwt_mint(k, "a", NOW, UINT64_MAX, &out),
                     CRDTDB_EINVAL);
    ck_assert_int_eq(crdtdb_jwt_mint(k, "a", INT64_MAX, 1, &out),
                     CRDTDB_EINVAL);
    ck_assert_int_eq(crdtdb_jwt_mint(k, "a", -1, 60, &out), CRDTDB_EINVAL);
    ck_assert_int_eq(crdtdb_jwt_mint(k, "a", NOW, 60, NULL), CRDTDB_EINVAL);
    ck_assert_uint_eq(out.len, 0);
    /* The buffer is reused and replaced. */
    ck_assert_int_eq(crdtdb_jwt_mint(k, "first", NOW, 60, &out), 0);
    size_t first = out.len;
    long_sub[CRDTDB_ID_MAX] = '\0';
    ck_assert_int_eq(crdtdb_jwt_mint(k, long_sub, NOW, 60, &out), 0);
    ck_assert_uint_gt(out.len, first);
    ck_assert_int_eq(crdtdb_jwt_mint(k, "x", NOW, 60, &out), 0);
    ck_assert_uint_eq(out.len, strlen((char *)out.data));
    accepted(k, (char *)out.data, NOW, 0, "x");
    ck_assert_int_eq(crdtdb_jwt_mint(k, "", NOW, 60, &out), CRDTDB_EINVAL);
    ck_assert_uint_eq(out.len, 0);
    crdtdb_buf_free(&out);
    crdtdb_jwt_key_close(k);
    crdtdb_jwt_key_close(pub);
}
END_TEST

/* ------------------------------------------------------ bearer tokens */

static void bearer(const char *auth, const char *proto, const char *want)
{
    const char *tok = (const char *)&tok;
    size_t n = 99;
    int rc = crdtdb__bearer_token(auth, auth ? strlen(auth) : 0, proto,
                                  proto ? strlen(proto) : 0, &tok, &n);
    if (!want) {
        ck_assert_msg(rc == CRDTDB_EAUTH, "[%s] [%s]: %s", auth, proto,
                      crdtdb_errname(rc));
        ck_assert_ptr_null(tok);
        ck_assert_uint_eq(n, 0);
        return;
    }
    ck_assert_msg(rc == 0, "[%s] [%s]: %s", auth, proto, crdtdb_errname(rc));
    const char *in = auth && *auth ? auth : proto;
    ck_assert(tok >= in && tok + n <= in + strlen(in)); /* points inside */
    ck_assert_int_eq((int)n, (int)strlen(want));
    ck_assert_mem_eq(tok, want, n);
}

START_TEST(bearer_token)
{
    const char *jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.c2lnbmF0dXJl";
    char buf[256];
    /* Authorization header. */
    snprintf(buf, sizeof buf, "Bearer %s", jwt);
    bearer(buf, NULL, jwt);
    snprintf(buf, sizeof buf, "bearer %s", jwt);
    bearer(buf, NULL, jwt);
    snprintf(buf, sizeof buf, "BEARER\t%s", jwt);
    bearer(buf, NULL, jwt);
    snprintf(buf, sizeof buf, "  Bearer   \t %s  \t", jwt);
    bearer(buf, NULL, jwt);
    bearer("Bearer abc+/~.-_==", NULL, "abc+/~.-_==");
    snprintf(buf, sizeof buf, "Bearer %s", jwt); /* header beats protocols */
    bearer(buf, "other, crdtdb-sync", jwt);
    bearer("Bearer", NULL, NULL);
    bearer("Bearer ", NULL, NULL);
    bearer("Bearer    \t", NULL, NULL);
    bearer("Bearerabc", NULL, NULL);
    bearer("Basic dXNlcjpwYXNz", NULL, NULL);
    bearer("Basic dXNlcjpwYXNz", "eyJ.x.y, crdtdb-sync", NULL); /* no fallback */
    bearer("Bearer a b", NULL, NULL);
    bearer("Bearer a,b", NULL, NULL);
    bearer("Bearer =abc", NULL, NULL);
    bearer("Bearer ab=c", NULL, NULL);
    bearer("Bearer a\"b", NULL, NULL);
    bearer(" ", NULL, NULL);
    /* Sec-WebSocket-Protocol. */
    snprintf(buf, sizeof buf, "%s, crdtdb-sync", jwt);
    bearer(NULL, buf, jwt);
    bearer("", buf, jwt); /* alen 0 counts as absent */
    snprintf(buf, sizeof buf, " \t%s ,crdtdb-sync", jwt);
    bearer(NULL, buf, jwt);
    bearer(NULL, jwt, jwt);
    bearer(NULL, "crdtdb-sync", NULL);
    bearer(NULL, "crdtdb-sync, eyJ.x.y", NULL); /* only the first entry */
    bearer(NULL, " crdtdb-sync ", NULL);
    bearer(NULL, "crdtdb-sync2, crdtdb-sync", "crdtdb-sync2");
    bearer(NULL, "CRDTDB-SYNC", "CRDTDB-SYNC"); /* exactly, case too */
    bearer(NULL, ", crdtdb-sync", NULL);
    bearer(NULL, "", NULL);
    bearer(NULL, " , ", NULL);
    bearer(NULL, "a b, crdtdb-sync", NULL);
    bearer(NULL, NULL, NULL);
    bearer("", "", NULL);

    /* Lengths are honoured: nothing past alen / plen is read. */
    const char *tok;
    size_t n;
    ck_assert_int_eq(crdtdb__bearer_token("Bearer abcdef", 10, NULL, 0, &tok,
                                          &n),
                     0);
    ck_assert_uint_eq(n, 3);
    ck_assert_int_eq(crdtdb__bearer_token("Bearer abc", 7, NULL, 0, &tok, &n),
                     CRDTDB_EAUTH);
    ck_assert_int_eq(crdtdb__bearer_token("Bearer\0abc", 10, NULL, 0, &tok,
                                          &n),
                     CRDTDB_EAUTH);
    ck_assert_int_eq(crdtdb__bearer_token("Bearer a\0c", 10, NULL, 0, &tok,
                                          &n),
                     CRDTDB_EAUTH);
    ck_assert_int_eq(crdtdb__bearer_token(NULL, 0, "crdtdb-sync", 6, &tok,
                                          &n),
                     0);
    ck_assert_uint_eq(n, 6);
    ck_assert_int_eq(crdtdb__bearer_token(NULL, 0, "abc", 3, NULL, &n),
                     CRDTDB_EINVAL);
    ck_assert_int_eq(crdtdb__bearer_token(NULL, 0, "abc", 3, &tok, NULL),
                     CRDTDB_EINVAL);

    /* What it finds, verify takes. */
    crdtdb_jwt_key *k = hs_key(SECRET);
    char *t = tu_jwt_mint(k, "eve", NOW, 60);
    snprintf(buf, sizeof buf, "%s, crdtdb-sync", t);
    ck_assert_int_eq(crdtdb__bearer_token(NULL, 0, buf, strlen(buf), &tok, &n),
                     0);
    char sub[CRDTDB_ID_MAX + 1];
    ck_assert_int_eq(crdtdb_jwt_verify(k, tok, n, NOW, 0, sub, sizeof sub,
                                       NULL, 0),
                     0);
    ck_assert_str_eq(sub, "eve");
    free(t);
    crdtdb_jwt_key_close(k);
}
END_TEST

/* --------------------------------------------------------------- CLI */

/* Runs `crdtdb token args...`; the exit status, stdout in *out. */
static int cli_token(char **out, const char *const *args)
{
    const char *argv[16];
    int n = 0;
    argv[n++] = getenv("CRDTDB_CLI");
    ck_assert_msg(argv[0] != NULL, "CRDTDB_CLI is not set");
    argv[n++] = "token";
    while (*args)
        argv[n++] = *args++;
    argv[n] = NULL;
    char path[4200];
    snprintf(path, sizeof path, "%s/stdout", keydir);
    int st = tu_run_cmd(argv, path);
    *out = tu_slurp(path, NULL);
    return st;
}

/* The token printed (one line) must name want under k, valid for ttl
 * seconds from about now. */
static void printed_token_ok(char *out, const crdtdb_jwt_key *k,
                             const char *want, int64_t ttl)
{
    size_t n = strlen(out);
    ck_assert_uint_gt(n, 1);
    ck_assert_int_eq(out[n - 1], '\n');
    out[n - 1] = '\0';
    ck_assert_ptr_null(strchr(out, '\n'));
    int64_t now = (int64_t)time(NULL);
    accepted(k, out, now, 0, want);
    accepted(k, out, now + ttl - 10, 0, want);
    refused_n(k, out, n - 1, now + ttl + 10, 0, CRDTDB_EAUTH, "expired");
}

START_TEST(cli_mints_tokens)
{
    char secret_file[4200], short_file[4200], *out;
    snprintf(secret_file, sizeof secret_file, "%s/secret", keydir);
    snprintf(short_file, sizeof short_file, "%s/short", keydir);
    tu_spit(secret_file, SECRET, strlen(SECRET));
    crdtdb_jwt_key *k = hs_key(SECRET);

    const char *a1[] = {"--secret-file", secret_file, "--sub", "alice",
                        "--ttl", "1h", NULL};
    ck_assert_int_eq(cli_token(&out, a1), 0);
    printed_token_ok(out, k, "alice", 3600);
    free(out);

    /* A trailing newline is not part of the secret; default ttl 1h. */
    char with_nl[128];
    snprintf(with_nl, sizeof with_nl, "%s\n", SECRET);
    tu_spit(secret_file, with_nl, strlen(with_nl));
    const char *a2[] = {"--sub=bob", "--secret-file=", NULL};
    char opt[4300];
    snprintf(opt, sizeof opt, "--secret-file=%s", secret_file);
    a2[1] = opt;
    ck_assert_int_eq(cli_token(&out, a2), 0);
    printed_token_ok(out, k, "bob", 3600);
    free(out);
    const char *a3[] = {"--secret-file", secret_file, "--sub", "c",
                        "--ttl", "90", NULL};
    ck_assert_int_eq(cli_token(&out, a3), 0);
    printed_token_ok(out, k, "c", 90);
    free(out);
    const char *a4[] = {"--secret-file", secret_file, "--sub", "d",
                        "--ttl", "2d", "--alg", "HS256", NULL};
    ck_assert_int_eq(cli_token(&out, a4), 0);
    printed_token_ok(out, k, "d", 2 * 86400);
    free(out);

    /* RS256 and ES256 with a private key file. */
    crdtdb_jwt_key *rs = pem_key(CRDTDB_JWT_RS256, &rsa_pub);
    const char *a5[] = {"--alg", "RS256", "--key-file", rsa_priv.path,
                        "--sub", "erin", "--ttl", "15m", NULL};
    ck_assert_int_eq(cli_token(&out, a5), 0);
    printed_token_ok(out, rs, "erin", 900);
    free(out);
    crdtdb_jwt_key *es = pem_key(CRDTDB_JWT_ES256, &ec_pub);
    const char *a6[] = {"--alg", "ES256", "--key-file", ec_priv.path,
                        "--sub", "fay", "--ttl", "30s", NULL};
    ck_assert_int_eq(cli_token(&out, a6), 0);
    printed_token_ok(out, es, "fay", 30);
    free(out);

    /* Failures print nothing on stdout. */
    tu_spit(short_file, "too short\n", 10);
    const char *f1[] = {"--secret-file", short_file, "--sub", "a", NULL};
    const char *f2[] = {"--alg", "RS256", "--key-file", rsa_pub.path,
                        "--sub", "a", NULL}; /* public only */
    const char *f3[] = {"--alg", "ES256", "--key-file", rsa_priv.path,
                        "--sub", "a", NULL};
    const char *f4[] = {"--secret-file", "/nonexistent/secret", "--sub", "a",
                        NULL};
    const char *const *fails[] = {f1, f2, f3, f4};
    for (size_t i = 0; i < sizeof fails / sizeof *fails; i++) {
        ck_assert_int_eq(cli_token(&out, fails[i]), 1);
        ck_assert_str_eq(out, "");
        free(out);
    }
    const char *u1[] = {"--secret-file", secret_file, NULL}; /* no sub */
    const char *u2[] = {"--secret-file", secret_file, "--sub", "a", "--ttl",
                        "0", NULL};
    const char *u3[] = {"--secret-file", secret_file, "--sub", "a", "--ttl",
                        "1w", NULL};
    const char *u4[] = {"--secret-file", secret_file, "--sub", "a", "--ttl",
                        "h", NULL};
    const char *u5[] = {"--secret-file", secret_file, "--sub", "a", "--alg",
                        "none", NULL};
    const char *u6[] = {"--key-file", rsa_priv.path, "--sub", "a", NULL};
    const char *u7[] = {"--secret-file", secret_file, "--sub", "", NULL};
    const char *u8[] = {"--secret-file", secret_file, "--sub", "a", "extra",
                        NULL};
    const char *u9[] = {"--secret-file", secret_file, "--sub", NULL};
    const char *u10[] = {"--secret-file", secret_file, "--sub", "a", "--ttl",
                         "99999999999999999999d", NULL};
    const char *const *usage[] = {u1, u2, u3, u4, u5, u6, u7, u8, u9, u10};
    for (size_t i = 0; i < sizeof usage / sizeof *usage; i++) {
        ck_assert_msg(cli_token(&out, usage[i]) == 2, "usage case %zu", i);
        ck_assert_str_eq(out, "");
        free(out);
    }
    const char *h[] = {"--help", NULL};
    ck_assert_int_eq(cli_token(&out, h), 0);
    ck_assert_ptr_nonnull(strstr(out, "--secret-file"));
    free(out);
    crdtdb_jwt_key_close(k);
    crdtdb_jwt_key_close(rs);
    crdtdb_jwt_key_close(es);
}
END_TEST

static Suite *jwt_suite(void)
{
    Suite *s = suite_create("jwt");
    TCase *tc = tcase_create("jwt");
    tcase_add_unchecked_fixture(tc, make_keys, free_keys);
    tcase_add_test(tc, hs256_round_trip);
    tcase_add_test(tc, expiry_and_leeway);
    tcase_add_test(tc, claims_checked);
    tcase_add_test(tc, real_dates);
    tcase_add_test(tc, typ_values);
    tcase_add_test(tc, wrong_secret_and_tampering);
    tcase_add_test(tc, alg_none_refused);
    tcase_add_test(tc, algorithm_confusion);
    tcase_add_test(tc, rs256_round_trip);
    tcase_add_test(tc, es256_round_trip);
    tcase_add_test(tc, length_bounds);
    tcase_add_test(tc, garbage_refused);
    tcase_add_test(tc, key_open_refusals);
    tcase_add_test(tc, mint_refusals);
    tcase_add_test(tc, bearer_token);
    tcase_add_test(tc, cli_mints_tokens);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return tu_run(jwt_suite());
}
