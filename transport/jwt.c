/*
 * JSON Web Tokens: keys, verification and minting over libjwt 1.x, and the
 * bearer token of a WebSocket upgrade request.
 *
 * libjwt does the signatures.  What it does not do, this file does:
 *
 *   - libjwt's jwt_decode takes the algorithm from the token's header, so
 *     an HS256 token "signed" with an RS256 server's public PEM as the
 *     HMAC secret would pass.  The algorithm is fixed by the key: the
 *     header is read first and must name exactly the key's algorithm, and
 *     after decoding jwt_get_alg() must agree.  "none" never passes.
 *   - libjwt reads tokens with strlen, alloca and lenient base64, and its
 *     claim getters cannot tell a missing or mistyped claim from a value.
 *     Tokens are bounded (CRDTDB_JWT_MAX) and checked for shape before
 *     libjwt sees them, and the claims are read here from the signed
 *     payload, strictly (jansson, duplicate names refused).
 *   - libjwt 1.10 verifies only with a public PEM and prompts on the
 *     terminal for encrypted private keys.  Keys are parsed here with
 *     OpenSSL (no passphrase: encrypted keys are refused), checked for
 *     kind and size, and the public half is written out for verification.
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
#include <openssl/core_names.h>
#include <openssl/ec.h>
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

struct crdtdb_jwt_key {
    crdtdb_jwt_alg alg;
    uint8_t *secret; /* HS256 secret or the private PEM as given; NULL for
                        a public key.  Zeroed before it is freed. */
    size_t secret_len;
    char *pub; /* RS256 / ES256: the public key as PEM (NUL-terminated),
                  what verification hands libjwt */
    size_t pub_len;
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

/* Parses the PEM key of an RS256 / ES256 key into k: the first private key
 * block if there is one (k->secret: a copy of all the bytes), else the
 * first public key block; k->pub gets the public key as PEM. */
static int load_pem(crdtdb_jwt_key *k, const uint8_t *key, size_t len)
{
    int rc = CRDTDB_EINVAL, priv = 1;
    BIO *in = BIO_new_mem_buf(key, (int)len), *out = NULL;
    EVP_PKEY *pk = in ? PEM_read_bio_PrivateKey(in, NULL, no_passphrase, NULL)
                      : NULL;
    if (in && !pk) {
        priv = 0;
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
    char *pem;
    long n;
    if (!(out = BIO_new(BIO_s_mem())) || PEM_write_bio_PUBKEY(out, pk) != 1 ||
        (n = BIO_get_mem_data(out, &pem)) <= 0) {
        rc = CRDTDB_ENOMEM;
        goto done;
    }
    k->pub_len = (size_t)n;
    if (!(k->pub = malloc(k->pub_len + 1)))
        goto nomem;
    memcpy(k->pub, pem, k->pub_len);
    k->pub[k->pub_len] = '\0';
    if (priv) {
        if (!(k->secret = malloc(len)))
            goto nomem;
        memcpy(k->secret, key, len);
        k->secret_len = len;
    }
    rc = 0;
    goto done;
nomem:
    rc = CRDTDB_ENOMEM;
done:
    EVP_PKEY_free(pk); /* clears private key material */
    BIO_free(in);
    BIO_free(out);
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
    free(k->pub);
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
    json_t *typ = json_object_get(h, "typ");
    if (!alg)
        crdtdb__msg_set(errmsg, errmsg_size, "token header names no algorithm");
    else if (strcasecmp(alg, "none") == 0)
        crdtdb__msg_set(errmsg, errmsg_size, "unsigned token (alg none) refused");
    else if (strcmp(alg, alg_name(key->alg)) != 0)
        crdtdb__msg_set(errmsg, errmsg_size,
                "token algorithm is not the key's (%s)", alg_name(key->alg));
    else if (typ && (!json_is_string(typ) ||
                     strcasecmp(json_string_value(typ), "JWT") != 0))
        crdtdb__msg_set(errmsg, errmsg_size, "token type is not JWT");
    else if (json_object_get(h, "crit"))
        crdtdb__msg_set(errmsg, errmsg_size, "token header has critical extensions");
    else
        rc = 0;
    json_decref(h);
    return rc;
}

/* An integer claim: 1 and *v if present, 0 if absent, -1 if not an
 * integer. */
static int int_claim(json_t *claims, const char *name, int64_t *v)
{
    json_t *c = json_object_get(claims, name);
    if (!c)
        return 0;
    if (!json_is_integer(c))
        return -1;
    *v = (int64_t)json_integer_value(c);
    return 1;
}

/* exp, nbf and sub of the verified payload; sub is copied on success. */
static int check_claims(json_t *claims, int64_t now, unsigned leeway,
                        char *sub, char *errmsg, size_t errmsg_size)
{
    int64_t exp, nbf;
    int r = int_claim(claims, "exp", &exp);
    if (r <= 0) {
        crdtdb__msg_set(errmsg, errmsg_size,
                r ? "exp claim is not an integer" : "token has no exp claim");
        return CRDTDB_EAUTH;
    }
    /* Valid while now < exp + leeway; an exp this close to the end of
     * time never passes. */
    if (exp <= INT64_MAX - (int64_t)leeway && now >= exp + (int64_t)leeway) {
        crdtdb__msg_set(errmsg, errmsg_size, "token expired");
        return CRDTDB_EAUTH;
    }
    if ((r = int_claim(claims, "nbf", &nbf)) < 0) {
        crdtdb__msg_set(errmsg, errmsg_size, "nbf claim is not an integer");
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

/* Signature check by libjwt, then its view of the algorithm. */
static int check_signature(const crdtdb_jwt_key *key, const char *token,
                           size_t len, char *errmsg, size_t errmsg_size)
{
    char text[CRDTDB_JWT_MAX + 1];
    memcpy(text, token, len);
    text[len] = '\0';
    const uint8_t *kb = key->pub ? (const uint8_t *)key->pub : key->secret;
    size_t kn = key->pub ? key->pub_len : key->secret_len;
    jwt_t *j = NULL;
    int err = jwt_decode(&j, text, kb, (int)kn);
    int rc = 0;
    if (err == ENOMEM) {
        rc = CRDTDB_ENOMEM;
    } else if (err || !j) {
        crdtdb__msg_set(errmsg, errmsg_size, "bad token signature");
        rc = CRDTDB_EAUTH;
    } else if (jwt_get_alg(j) != libjwt_alg(key->alg)) {
        crdtdb__msg_set(errmsg, errmsg_size, "token algorithm is not the key's (%s)",
                alg_name(key->alg));
        rc = CRDTDB_EAUTH;
    }
    jwt_free(j);
    ERR_clear_error();
    return rc;
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
        rc = check_signature(key, token, len, errmsg, errmsg_size);
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
