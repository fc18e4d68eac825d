/*
 * token: mints a JSON Web Token naming a user (crdtdb_jwt_mint), for the
 * clients of a server that checks tokens.  It opens no environment, so it
 * parses its own options.
 */
#include "cli.h"
#include "options.h"

#include <errno.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define TTL_MAX (36500ull * 86400) /* 100 years */

static const char token_help[] =
    "usage: crdtdb token --secret-file FILE --sub USER [--ttl TTL]\n"
    "       crdtdb token --alg RS256|ES256 --key-file FILE --sub USER "
    "[--ttl TTL]\n\n"
    "Print a token (a JSON Web Token) naming user USER, valid for TTL from\n"
    "now: 30s, 15m, 1h, 7d or plain seconds (default 1h).  With HS256 (the\n"
    "default) it is signed with the shared secret held in FILE: its bytes,\n"
    "at least 32, less one trailing newline.  With RS256 or ES256 it is\n"
    "signed with the private key in FILE (PEM, not encrypted); the server\n"
    "verifies with the public key.\n";

/* "30s", "15m", "1h", "7d" or plain seconds; > 0. */
static int parse_ttl(const char *s, uint64_t *ttl)
{
    uint64_t v = 0, unit = 1;
    const char *p = s;
    for (; *p >= '0' && *p <= '9'; p++) {
        if (v > (UINT64_MAX - 9) / 10)
            return -1;
        v = v * 10 + (uint64_t)(*p - '0');
    }
    if (p == s)
        return -1;
    switch (*p) {
    case '\0':
        break;
    case 's':
        break;
    case 'm':
        unit = 60;
        break;
    case 'h':
        unit = 3600;
        break;
    case 'd':
        unit = 86400;
        break;
    default:
        return -1;
    }
    if (*p && p[1])
        return -1;
    if (v == 0 || v > TTL_MAX / unit)
        return -1;
    *ttl = v * unit;
    return 0;
}

static int usage_error(const char *msg)
{
    if (msg)
        fprintf(stderr, "crdtdb: %s\n", msg);
    fputs(token_help, stderr);
    return EXIT_USAGE;
}

int cmd_token(int argc, char **argv)
{
    const char *secret_file = NULL, *key_file = NULL, *sub = NULL;
    const char *ttl_text = "1h", *alg_text = "HS256";
    /* in the order of token_flags */
    const char **vals[] = {&secret_file, &key_file, &sub, &ttl_text,
                           &alg_text};
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            fputs(token_help, stdout);
            return 0;
        }
        int r = 0;
        for (size_t k = 0; token_flags[k] && !r; k++)
            r = take_opt(argc, argv, &i, token_flags[k], vals[k]);
        if (r < 0)
            return usage_error("missing option value");
        if (r == 0) {
            fprintf(stderr, "crdtdb: unknown argument %s\n", argv[i]);
            return usage_error(NULL);
        }
    }

    crdtdb_jwt_alg alg;
    if (strcasecmp(alg_text, "HS256") == 0)
        alg = CRDTDB_JWT_HS256;
    else if (strcasecmp(alg_text, "RS256") == 0)
        alg = CRDTDB_JWT_RS256;
    else if (strcasecmp(alg_text, "ES256") == 0)
        alg = CRDTDB_JWT_ES256;
    else
        return usage_error("--alg is HS256, RS256 or ES256");
    const char *file = alg == CRDTDB_JWT_HS256 ? secret_file : key_file;
    if (!sub)
        return usage_error("token needs --sub USER");
    if (alg == CRDTDB_JWT_HS256 ? !secret_file || key_file
                                : !key_file || secret_file)
        return usage_error(alg == CRDTDB_JWT_HS256
                               ? "HS256 signs with --secret-file FILE"
                               : "RS256 and ES256 sign with --key-file FILE");
    size_t sub_len = strlen(sub);
    if (sub_len == 0 || sub_len > CRDTDB_ID_MAX)
        return usage_error("--sub must be 1 to 255 bytes");
    uint64_t ttl;
    if (parse_ttl(ttl_text, &ttl) != 0)
        return usage_error("--ttl is 30s, 15m, 1h, 7d or seconds; at most 36500d");

    uint8_t *bytes;
    size_t len;
    if (read_key_file(file, alg == CRDTDB_JWT_HS256, &bytes, &len))
        return EXIT_FAILURE;
    crdtdb_jwt_key *key = NULL;
    int rc = crdtdb_jwt_key_open(alg, bytes, len, &key);
    sodium_memzero(bytes, len);
    free(bytes);
    if (rc == CRDTDB_EINVAL) {
        fprintf(stderr, "crdtdb: %s: %s\n", file,
                alg == CRDTDB_JWT_HS256
                    ? "a secret of at least 32 bytes (not a PEM key) needed"
                    : alg == CRDTDB_JWT_RS256
                    ? "not an RSA key of 2048 bits or more (PEM)"
                    : "not a P-256 key (PEM)");
        return EXIT_FAILURE;
    }
    if (rc)
        return fail(NULL, rc);
    crdtdb_buf tok = CRDTDB_BUF_INIT;
    rc = crdtdb_jwt_mint(key, sub, (int64_t)time(NULL), ttl, &tok);
    crdtdb_jwt_key_close(key);
    int status = 0;
    if (rc == CRDTDB_EINVAL && alg != CRDTDB_JWT_HS256)
        status = fail_hint("the key file holds no private key", rc,
                           "sign with the private key; the server verifies with the public one");
    else if (rc == CRDTDB_EINVAL)
        status = fail("--sub is not valid UTF-8", rc);
    else if (rc)
        status = fail(NULL, rc);
    else if (printf("%s\n", (char *)tok.data) < 0 || fflush(stdout) != 0)
        status = fail(strerror(errno), CRDTDB_EIO);
    crdtdb_buf_free(&tok);
    return status;
}
