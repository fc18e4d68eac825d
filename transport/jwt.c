/*
 * JSON Web Tokens: keys, verification, minting, and the bearer token of a
 * WebSocket upgrade request.
 *
 * libjwt 1.x mints.  Verification is done here, not by its jwt_decode:
 *
 *   - jwt_decode takes the algorithm from the token's header, so an HS256
 *     token "signed" with an RS256 server's public PEM as the HMAC secret
 *     would pass.  Here the key fixes the algorithm: the header must name
 *     exactly the key's, and the signature is checked with the key's own
 *     primitive (libsodium HMAC-SHA256, OpenSSL RSA or ECDSA) whatever the
 *     header says.  "none" never passes.
 *   - libjwt 1.10 refuses every typ but "JWT", RFC 9068 access tokens
 *     ("at+jwt") included, reads tokens with strlen, alloca and lenient
 *     base64, and its claim getters cannot tell a missing, mistyped or
 *     real-valued claim from a value.  Tokens are bounded (CRDTDB_JWT_MAX),
 *     checked for shape, decoded with strict base64, and their header and
 *     claims read strictly (jansson, duplicate names refused).
 *   - libjwt 1.10 prompts on the terminal for encrypted private keys.  Keys
 *     are parsed here with OpenSSL (no passphrase: encrypted keys are
 *     refused) and checked for kind and size; verification holds only the
 *     public half.
 *
 * OpenSSL's per-thread error queue is cleared after every call into it or
 * into libjwt, so no stale error reaches other OpenSSL users of the thread
 * (libwebsockets' TLS).  A key is immutable once opened: any number of
 * threads may verify or mint with it at once.
 */
#include "transport/jwt.h"
#include "crdt/value.h"

#include <errno.h>
#include <jansson.h>
#include <jwt.h>
#include <limits.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/ecdsa.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/pem.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "crdt/buf.h"

#define SECRET_MIN 32u
#define KEY_MAX 65536u  /* bytes of a secret or PEM key */
#define RSA_BITS_MIN 2048
#define RSA_BITS_MAX 16384 /* bounds the cost of one verification */
#define SIG_MAX (RSA_BITS_MAX / 8) /* bytes of the longest signature */
#define ES256_HALF 32u     /* bytes of r and of s in an ES256 signature */
#define ES256_DER_MAX 72u  /* SEQUENCE of two INTEGERs of up to 33 bytes */

struct crdtdb_jwt_key {
    crdtdb_jwt_alg alg;
    uint8_t *secret; /* HS256 secret or the private PEM as given; NULL for
                        a public key.  Zeroed before it is freed. */
    size_t secret_len;
    EVP_PKEY *pub; /* RS256 / ES256: the public key, what verifies */
};

static const char *alg_name(crdtdb_jwt_alg alg)
{
    switch (alg) {
    case CRDTDB_JWT_HS256:
        return "HS256";
    case CRDTDB_JWT_RS256:
        return "RS256";
    case CRDTDB_JWT_ES256:
        return "ES256";
    }
    return NULL;
}

static jwt_alg_t libjwt_alg(crdtdb_jwt_alg alg)
{
    switch (alg) {
    case CRDTDB_JWT_HS256:
        return JWT_ALG_HS256;
    case CRDTDB_JWT_RS256:
        return JWT_ALG_RS256;
    case CRDTDB_JWT_ES256:
        return JWT_ALG_ES256;
    }
    return JWT_ALG_INVAL;
}

/* ------------------------------------------------------------------ keys */

/* Encrypted PEM keys are refused rather than prompted for. */
static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
    (void)buf;
    (void)size;
    (void)rwflag;
    (void)u;
    return -1;
}

/* Whether pk is a key alg can use: RSA of 2048 to 16384 bits, or EC on
 * P-256. */
static int right_kind(crdtdb_jwt_alg alg, EVP_PKEY *pk)
{
    if (alg == CRDTDB_JWT_RS256) {
        int bits = EVP_PKEY_get_bits(pk);
        return EVP_PKEY_get_base_id(pk) == EVP_PKEY_RSA &&
               bits >= RSA_BITS_MIN && bits <= RSA_BITS_MAX;
    }
    char group[64];
    size_t glen = 0;
    if (EVP_PKEY_get_base_id(pk) != EVP_PKEY_EC ||
        EVP_PKEY_get_utf8_string_param(pk, OSSL_PKEY_PARAM_GROUP_NAME, group,
                                       sizeof group, &glen) != 1)
        return 0; /* explicit curve parameters, too */
    int nid = OBJ_sn2nid(group);
    if (nid == NID_undef)
        nid = EC_curve_nist2nid(group);
    return nid == NID_X9_62_prime256v1;
}

/* The public half of pk, as a key of its own: verification never holds
 * private key material.  NULL when out of memory. */
static EVP_PKEY *public_half(EVP_PKEY *pk)
{
    BIO *mem = BIO_new(BIO_s_mem());
    EVP_PKEY *pub = NULL;
    if (mem && PEM_write_bio_PUBKEY(mem, pk) == 1)
        pub = PEM_read_bio_PUBKEY(mem, NULL, no_passphrase, NULL);
    BIO_free(mem);
    return pub;
}

/* Parses the PEM key of an RS256 / ES256 key into k: the first private key
 * block if there is one (k->secret: a copy of all the bytes), else the
 * first public key block; k->pub gets the public key. */
static int load_pem(crdtdb_jwt_key *k, const uint8_t *key, size_t len)
{
    int rc = CRDTDB_EINVAL;
    BIO *in = BIO_new_mem_buf(key, (int)len);
    EVP_PKEY *pk = in ? PEM_read_bio_PrivateKey(in, NULL, no_passphrase, NULL)
                      : NULL;
    int priv = pk != NULL;
    if (in && !pk) {
        BIO_free(in);
        in = BIO_new_mem_buf(key, (int)len);
        pk = in ? PEM_read_bio_PUBKEY(in, NULL, no_passphrase, NULL) : NULL;
    }
    if (!in) {
        rc = CRDTDB_ENOMEM;
        goto done;
    }
    if (!pk || !right_kind(k->alg, pk))
        goto done;
    rc = CRDTDB_ENOMEM;
    if (!priv) {
        k->pub = pk;
        pk = NULL;
    } else if (!(k->pub = public_half(pk)) || !(k->secret = malloc(len))) {
        goto done;
    } else {
        memcpy(k->secret, key, len);
        k->secret_len = len;
    }
    rc = 0;
done:
    EVP_PKEY_free(pk); /* clears private key material */
    BIO_free(in);
    ERR_clear_error();
    return rc;
}

/* Whether "-----BEGIN " occurs in key. */
static int looks_like_pem(const uint8_t *key, size_t len)
{
    static const char pem[] = "-----BEGIN ";
    const size_t n = sizeof pem - 1;
    for (size_t i = 0; i + n <= len; i++)
        if (key[i] == '-' && memcmp(key + i, pem, n) == 0)
            return 1;
    return 0;
}

int crdtdb_jwt_key_open(crdtdb_jwt_alg alg, const uint8_t *key, size_t len,
                        crdtdb_jwt_key **out)
{
    if (!out)
        return CRDTDB_EINVAL;
    *out = NULL;
    if (!alg_name(alg) || !key || len == 0 || len > KEY_MAX)
        return CRDTDB_EINVAL;
    crdtdb_jwt_key *k = calloc(1, sizeof *k);
    if (!k)
        return CRDTDB_ENOMEM;
    k->alg = alg;
    int rc = 0;
    if (alg == CRDTDB_JWT_HS256) {
        /* A public PEM as the secret is the algorithm confusion attack
         * turned into configuration: anyone could mint. */
        if (len < SECRET_MIN || looks_like_pem(key, len))
            rc = CRDTDB_EINVAL;
        else if (!(k->secret = malloc(len)))
            rc = CRDTDB_ENOMEM;
        else {
            memcpy(k->secret, key, len);
            k->secret_len = len;
        }
    } else {
        rc = load_pem(k, key, len);
    }
    if (rc) {
        crdtdb_jwt_key_close(k);
        return rc;
    }
    *out = k;
    return 0;
}

void crdtdb_jwt_key_close(crdtdb_jwt_key *k)
{
    if (!k)
        return;
    if (k->secret) {
        sodium_memzero(k->secret, k->secret_len);
        free(k->secret);
    }
    EVP_PKEY_free(k->pub);
    sodium_memzero(k, sizeof *k);
    free(k);
}

/* ---------------------------------------------------------------- verify */

static int b64url_char(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
           (c >= '0' && c <= '9') || c == '-' || c == '_';
}

/* A compact JWS: three non-empty base64url segments (no padding) joined by
 * dots.  seg[i], n[i]: the segments.  1 if the shape is right. */
static int split_token(const char *t, size_t len, const char *seg[3],
                       size_t n[3])
{
    size_t k = 0;
    seg[0] = t;
    for (size_t i = 0; i < len; i++) {
        if (t[i] == '.') {
            if (k == 2)
                return 0;
            n[k] = (size_t)(t + i - seg[k]);
            seg[++k] = t + i + 1;
        } else if (!b64url_char((unsigned char)t[i])) {
            return 0;
        }
    }
    if (k != 2)
        return 0;
    n[2] = (size_t)(t + len - seg[2]);
    for (k = 0; k < 3; k++)
        if (n[k] == 0 || n[k] % 4 == 1) /* no base64 length ends so */
            return 0;
    return 1;
}

/* The JSON object in base64url segment seg (strict base64: no stray bits),
 * or NULL. */
static json_t *segment_json(const char *seg, size_t n, size_t flags)
{
    unsigned char bin[CRDTDB_JWT_MAX];
    size_t blen;
    if (sodium_base642bin(bin, sizeof bin, seg, n, NULL, &blen, NULL,
                          sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0)
        return NULL;
    json_t *js = json_loadb((const char *)bin, blen,
                            JSON_REJECT_DUPLICATES | flags, NULL);
    if (js && !json_is_object(js)) {
        json_decref(js);
        js = NULL;
    }
    return js;
}

/* An absent typ, or "JWT" (RFC 7519) or "at+jwt" (RFC 9068 access
 * tokens), either case, with or without the "application/" a recipient
 * must assume (RFC 7515, 4.1.9). */
static int typ_ok(const json_t *typ)
{
    static const char app[] = "application/";
    const char *t = json_string_value(typ);
    if (!typ)
        return 1;
    if (!t)
        return 0;
    if (strncasecmp(t, app, sizeof app - 1) == 0)
        t += sizeof app - 1;
    return strcasecmp(t, "JWT") == 0 || strcasecmp(t, "at+jwt") == 0;
}

/* The header must name the key's algorithm, exactly. */
static int check_header(const crdtdb_jwt_key *key, const char *seg, size_t n,
                        char *errmsg, size_t errmsg_size)
{
    json_t *h = segment_json(seg, n, 0);
    if (!h) {
        crdtdb__msg_set(errmsg, errmsg_size, "malformed token header");
        return CRDTDB_EAUTH;
    }
    int rc = CRDTDB_EAUTH;
    const char *alg = json_string_value(json_object_get(h, "alg"));
    if (!alg)
        crdtdb__msg_set(errmsg, errmsg_size, "token header names no algorithm");
    else if (strcasecmp(alg, "none") == 0)
        crdtdb__msg_set(errmsg, errmsg_size, "unsigned token (alg none) refused");
    else if (strcmp(alg, alg_name(key->alg)) != 0)
        crdtdb__msg_set(errmsg, errmsg_size,
                "token algorithm is not the key's (%s)", alg_name(key->alg));
    else if (!typ_ok(json_object_get(h, "typ")))
        crdtdb__msg_set(errmsg, errmsg_size,
                "token type is not JWT or at+jwt");
    else if (json_object_get(h, "crit"))
        crdtdb__msg_set(errmsg, errmsg_size, "token header has critical extensions");
    else
        rc = 0;
    json_decref(h);
    return rc;
}

/* d rounded up to whole seconds into *v; 0 if that is outside int64_t
 * (NaN too).  Exact without libm: a double with a fraction is below 2^52
 * in magnitude, and a whole one converts as it is. */
static int ceil_seconds(double d, int64_t *v)
{
    if (!(d >= -0x1p63 && d < 0x1p63))
        return 0;
    int64_t t = (int64_t)d; /* toward zero */
    *v = (double)t < d ? t + 1 : t;
    return 1;
}

/*
 * A NumericDate claim (RFC 7519: any JSON number of seconds), rounded up
 * to whole seconds.  With a whole now, rounding up is exact for both
 * checks: now < x iff now < ceil(x) (exp), now >= x iff now >= ceil(x)
 * (nbf).  1 and *v if present, 0 if absent, -1 if not a number, -2 if out
 * of range.
 */
static int date_claim(json_t *claims, const char *name, int64_t *v)
{
    json_t *c = json_object_get(claims, name);
    if (!c)
        return 0;
    if (json_is_integer(c)) {
        *v = (int64_t)json_integer_value(c);
        return 1;
    }
    if (!json_is_real(c))
        return -1;
    return ceil_seconds(json_real_value(c), v) ? 1 : -2;
}

/* Why date_claim refused claim name (r < 0). */
static void date_refused(int r, const char *name, char *errmsg,
                         size_t errmsg_size)
{
    crdtdb__msg_set(errmsg, errmsg_size, "%s claim is %s", name,
            r == -1 ? "not a number" : "out of range");
}

/* exp, nbf and sub of the verified payload; sub is copied on success. */
static int check_claims(json_t *claims, int64_t now, unsigned leeway,
                        char *sub, char *errmsg, size_t errmsg_size)
{
    int64_t exp, nbf;
    int r = date_claim(claims, "exp", &exp);
    if (r == 0)
        crdtdb__msg_set(errmsg, errmsg_size, "token has no exp claim");
    else if (r < 0)
        date_refused(r, "exp", errmsg, errmsg_size);
    if (r <= 0)
        return CRDTDB_EAUTH;
    /* Valid while now < exp + leeway; an exp this close to the end of
     * time never passes. */
    if (exp <= INT64_MAX - (int64_t)leeway && now >= exp + (int64_t)leeway) {
        crdtdb__msg_set(errmsg, errmsg_size, "token expired");
        return CRDTDB_EAUTH;
    }
    if ((r = date_claim(claims, "nbf", &nbf)) < 0) {
        date_refused(r, "nbf", errmsg, errmsg_size);
        return CRDTDB_EAUTH;
    }
    /* Valid from nbf - leeway on. */
    if (r > 0 && nbf >= INT64_MIN + (int64_t)leeway &&
        now < nbf - (int64_t)leeway) {
        crdtdb__msg_set(errmsg, errmsg_size, "token not yet valid");
        return CRDTDB_EAUTH;
    }
    json_t *s = json_object_get(claims, "sub");
    if (!json_is_string(s)) {
        crdtdb__msg_set(errmsg, errmsg_size,
                s ? "sub claim is not a string" : "token has no sub claim");
        return CRDTDB_EAUTH;
    }
    size_t n = json_string_length(s);
    const char *v = json_string_value(s);
    if (n == 0 || n > CRDTDB_ID_MAX || memchr(v, '\0', n) != NULL) {
        crdtdb__msg_set(errmsg, errmsg_size,
                "sub claim must be 1 to %u bytes without NUL", CRDTDB_ID_MAX);
        return CRDTDB_EAUTH;
    }
    memcpy(sub, v, n + 1);
    return 0;
}

/* HS256: the HMAC-SHA256 of msg, compared in constant time.  1 if sig
 * is it. */
static int hs256_ok(const crdtdb_jwt_key *key, const char *msg, size_t n,
                    const unsigned char *sig, size_t slen)
{
    unsigned char mac[crypto_auth_hmacsha256_BYTES];
    crypto_auth_hmacsha256_state st; /* holds the keyed pads */
    crypto_auth_hmacsha256_init(&st, key->secret, key->secret_len);
    crypto_auth_hmacsha256_update(&st, (const unsigned char *)msg, n);
    crypto_auth_hmacsha256_final(&st, mac);
    int ok = slen == sizeof mac && sodium_memcmp(mac, sig, sizeof mac) == 0;
    sodium_memzero(&st, sizeof st);
    sodium_memzero(mac, sizeof mac);
    return ok;
}

/* A JWS ES256 signature is r || s (RFC 7518, 3.4); OpenSSL verifies the
 * DER form.  1 and der[0, *dlen), 0 if sig is not 2 * 32 bytes, -1 out of
 * memory. */
static int es256_der(const unsigned char *sig, size_t slen,
                     unsigned char der[ES256_DER_MAX], size_t *dlen)
{
    if (slen != 2 * ES256_HALF)
        return 0;
    int rc = -1;
    ECDSA_SIG *es = ECDSA_SIG_new();
    BIGNUM *r = BN_bin2bn(sig, ES256_HALF, NULL);
    BIGNUM *s = BN_bin2bn(sig + ES256_HALF, ES256_HALF, NULL);
    if (es && r && s && ECDSA_SIG_set0(es, r, s) == 1) {
        r = s = NULL; /* es owns them now */
        unsigned char *p = der;
        int n = i2d_ECDSA_SIG(es, NULL);
        if (n > 0 && (size_t)n <= ES256_DER_MAX && i2d_ECDSA_SIG(es, &p) == n) {
            *dlen = (size_t)n;
            rc = 1;
        }
    }
    BN_free(r);
    BN_free(s);
    ECDSA_SIG_free(es);
    return rc;
}

/* RS256 (PKCS #1 v1.5) or ES256 over SHA-256 with the public key.  1 if
 * sig signs msg, 0 if not, -1 out of memory. */
static int pem_ok(const crdtdb_jwt_key *key, const char *msg, size_t n,
                  const unsigned char *sig, size_t slen)
{
    unsigned char der[ES256_DER_MAX];
    if (key->alg == CRDTDB_JWT_ES256) {
        int r = es256_der(sig, slen, der, &slen);
        if (r <= 0)
            return r;
        sig = der;
    }
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (!ctx)
        return -1;
    const unsigned char *m = (const unsigned char *)msg;
    int ok = EVP_DigestVerifyInit(ctx, NULL, EVP_sha256(), NULL, key->pub);
    ok = ok == 1 && EVP_DigestVerify(ctx, sig, slen, m, n) == 1;
    EVP_MD_CTX_free(ctx);
    return ok;
}

/* The signature (base64url seg, sn bytes) over msg ("header.payload", n
 * bytes), checked with the key's algorithm, never the header's. */
static int check_signature(const crdtdb_jwt_key *key, const char *msg,
                           size_t n, const char *seg, size_t sn, char *errmsg,
                           size_t errmsg_size)
{
    unsigned char sig[SIG_MAX];
    size_t slen;
    int ok = 0;
    if (sodium_base642bin(sig, sizeof sig, seg, sn, NULL, &slen, NULL,
                          sodium_base64_VARIANT_URLSAFE_NO_PADDING) == 0)
        ok = key->alg == CRDTDB_JWT_HS256 ? hs256_ok(key, msg, n, sig, slen)
                                          : pem_ok(key, msg, n, sig, slen);
    ERR_clear_error();
    if (ok < 0)
        return CRDTDB_ENOMEM;
    if (!ok) {
        crdtdb__msg_set(errmsg, errmsg_size, "bad token signature");
        return CRDTDB_EAUTH;
    }
    return 0;
}

int crdtdb_jwt_verify(const crdtdb_jwt_key *key, const char *token,
                      size_t len, int64_t now, unsigned leeway, char *sub,
                      size_t sub_size, char *errmsg, size_t errmsg_size)
{
    crdtdb__msg_set(errmsg, errmsg_size, "%s", "");
    if (sub && sub_size > 0)
        sub[0] = '\0';
    if (!key || !token || !sub || sub_size <= CRDTDB_ID_MAX) {
        crdtdb__msg_set(errmsg, errmsg_size, "invalid argument");
        return CRDTDB_EINVAL;
    }
    if (len > CRDTDB_JWT_MAX) {
        crdtdb__msg_set(errmsg, errmsg_size, "token longer than %u bytes",
                CRDTDB_JWT_MAX);
        return CRDTDB_ETOOBIG;
    }
    const char *seg[3];
    size_t n[3];
    if (!split_token(token, len, seg, n)) {
        crdtdb__msg_set(errmsg, errmsg_size, "malformed token");
        return CRDTDB_EAUTH;
    }
    int rc = check_header(key, seg[0], n[0], errmsg, errmsg_size);
    if (rc == 0)
        rc = check_signature(key, token, n[0] + 1 + n[1], seg[2], n[2],
                             errmsg, errmsg_size);
    if (rc)
        return rc;
    json_t *claims = segment_json(seg[1], n[1], JSON_ALLOW_NUL);
    if (!claims) {
        crdtdb__msg_set(errmsg, errmsg_size, "malformed token claims");
        return CRDTDB_EAUTH;
    }
    rc = check_claims(claims, now, leeway, sub, errmsg, errmsg_size);
    json_decref(claims);
    return rc;
}

/* ------------------------------------------------------------------ mint */

int crdtdb_jwt_mint(const crdtdb_jwt_key *key, const char *sub, int64_t now,
                    uint64_t ttl, crdtdb_buf *out)
{
    if (!out)
        return CRDTDB_EINVAL;
    out->len = 0;
    size_t n = sub ? strnlen(sub, CRDTDB_ID_MAX + 1) : 0;
    if (!key || !key->secret || n == 0 || n > CRDTDB_ID_MAX || ttl == 0 ||
        now < 0 || ttl > (uint64_t)(INT64_MAX - now))
        return CRDTDB_EINVAL;
    int64_t exp = now + (int64_t)ttl;
    if (exp > LONG_MAX) /* libjwt's claims are longs */
        return CRDTDB_EINVAL;
    jwt_t *j = NULL;
    char *tok = NULL;
    int err = jwt_new(&j);
    if (!err)
        err = jwt_set_alg(j, libjwt_alg(key->alg), key->secret,
                          (int)key->secret_len);
    if (!err)
        err = jwt_add_grant(j, "sub", sub); /* refuses bad UTF-8 */
    if (!err)
        err = jwt_add_grant_int(j, "iat", (long)now);
    if (!err)
        err = jwt_add_grant_int(j, "exp", (long)exp);
    if (!err && !(tok = jwt_encode_str(j)))
        err = errno ? errno : EINVAL;
    jwt_free(j); /* scrubs its copy of the key */
    ERR_clear_error();
    int rc = err == ENOMEM ? CRDTDB_ENOMEM : err ? CRDTDB_EINVAL : 0;
    if (rc == 0) {
        size_t tlen = strlen(tok);
        rc = crdtdb__buf_set(out, tok, tlen + 1);
        out->len = rc ? 0 : tlen;
    }
    free(tok);
    return rc;
}

/* -------------------------------------------------------- bearer tokens */

static int ows(char c) { return c == ' ' || c == '\t'; }

/* RFC 6750 b64token. */
static int token_shape(const char *t, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned char c = (unsigned char)t[i];
        if (!b64url_char(c) && c != '.' && c != '~' && c != '+' && c != '/')
            break;
        i++;
    }
    if (i == 0)
        return 0;
    while (i < n && t[i] == '=')
        i++;
    return i == n;
}

int crdtdb__bearer_token(const char *authorization, size_t alen,
                         const char *protocols, size_t plen, const char **tok,
                         size_t *toklen)
{
    if (!tok || !toklen)
        return CRDTDB_EINVAL;
    *tok = NULL;
    *toklen = 0;
    const char *p, *end;
    int from_protocols = 0;
    if (authorization && alen > 0) {
        static const char scheme[] = "bearer";
        const size_t sn = sizeof scheme - 1;
        p = authorization;
        end = authorization + alen;
        while (p < end && ows(*p))
            p++;
        if ((size_t)(end - p) <= sn || strncasecmp(p, scheme, sn) != 0 ||
            !ows(p[sn]))
            return CRDTDB_EAUTH;
        p += sn;
    } else if (protocols && plen > 0) {
        from_protocols = 1;
        p = protocols;
        end = memchr(protocols, ',', plen);
        if (!end)
            end = protocols + plen;
    } else {
        return CRDTDB_EAUTH;
    }
    while (p < end && ows(*p))
        p++;
    while (end > p && ows(end[-1]))
        end--;
    size_t n = (size_t)(end - p);
    if (!token_shape(p, n))
        return CRDTDB_EAUTH; /* nothing, or more than one word */
    if (from_protocols && n == sizeof CRDTDB__WS_PROTOCOL - 1 &&
        memcmp(p, CRDTDB__WS_PROTOCOL, n) == 0)
        return CRDTDB_EAUTH;
    *tok = p;
    *toklen = n;
    return 0;
}
