/*
 * fuzz_util — shared pieces of the libFuzzer targets; see fuzz_util.h.
 */
#define _XOPEN_SOURCE 700 /* nftw */
#include "fuzz_util.h"

#include <ftw.h>
#include <msgpack.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "crdt/buf.h"
#include "crdt/delta.h"

/* ---------------------------------------------------------------- checks */

int fuzz_same(const void *a, size_t an, const void *b, size_t bn)
{
    return an == bn && (an == 0 || memcmp(a, b, an) == 0);
}

int fuzz_debug_enabled(void)
{
    const char *dbg = getenv("FUZZ_DEBUG");
    return dbg && *dbg && strcmp(dbg, "0") != 0;
}

uint8_t *fuzz_dup(const uint8_t *p, size_t n)
{
    uint8_t *q = malloc(n ? n : 1);
    CHECK(q != NULL);
    if (n)
        memcpy(q, p, n);
    return q;
}

void fuzz_check_record_bytes(const uint8_t *p, size_t n)
{
    CHECK(n > 0);
    CHECK((p[0] & 0xf0) == 0x80 || p[0] == 0xde || p[0] == 0xdf);
    crdtdb_buf j = CRDTDB_BUF_INIT;
    CHECK(crdtdb_msgpack_to_json(p, n, &j) == 0);
    CHECK(j.len >= 2 && j.data[0] == '{' && j.data[j.len - 1] == '}');
    crdtdb_buf_free(&j);
}

/* ---------------------------------------------------------- signed bodies */

uint8_t fuzz_pk[crypto_sign_PUBLICKEYBYTES];
uint8_t fuzz_sk[crypto_sign_SECRETKEYBYTES];

/* The array header of a body, found by fuzz_keys_init. */
static uint8_t body_head;

static void find_body_head(void)
{
    crdtdb__delta d;
    crdtdb__delta_init(&d);
    d.db_id.p = "fz";
    d.db_id.n = 2;
    d.sender = fuzz_pk;
    crdtdb_buf enc = CRDTDB_BUF_INIT;
    const uint8_t *body, *sig;
    size_t frame, blen;
    if (crdtdb__delta_encode(&d, fuzz_sk, &enc) ||
        crdtdb__delta_frame(enc.data, enc.len, &frame, &body, &blen, &sig) || blen < 1 ||
        (body[0] & 0xf0) != 0x90 || (body[0] & 0x0f) < 3)
        abort();
    body_head = body[0];
    crdtdb_buf_free(&enc);
    crdtdb__delta_free(&d);
}

void fuzz_keys_init(void)
{
    if (sodium_init() < 0)
        abort();
    uint8_t seed[crypto_sign_SEEDBYTES];
    memset(seed, 0x5a, sizeof seed); /* fixed test key */
    crypto_sign_seed_keypair(fuzz_pk, fuzz_sk, seed);
    find_body_head();
}

/* Offset of the sender bin(32) header in a body [head, str, bin(32), ...]
 * (the place the decoder reads the key from), or 0. */
static size_t sender_at(const uint8_t *p, size_t n)
{
    if (n < 2 || p[0] != body_head)
        return 0;
    size_t hdr, len;
    uint8_t b = p[1];
    if ((b & 0xe0) == 0xa0) {
        hdr = 1;
        len = b & 0x1f;
    } else if (b >= 0xd9 && b <= 0xdb) {
        unsigned w = 1u << (b - 0xd9);
        if (n - 2 < w)
            return 0;
        hdr = 1 + w;
        len = 0;
        for (unsigned i = 0; i < w; i++)
            len = len << 8 | p[2 + i];
    } else {
        return 0;
    }
    if (len > n - 1 - hdr)
        return 0;
    size_t at = 1 + hdr + len;
    if (n - at < 2 + CRDTDB_REPLICA_ID_BYTES || p[at] != 0xc4 ||
        p[at + 1] != CRDTDB_REPLICA_ID_BYTES)
        return 0;
    return at;
}

void fuzz_make_body(crdtdb_buf *body, const uint8_t *p, size_t n)
{
    size_t at = sender_at(p, n);
    body->len = 0;
    if (at) {
        CHECK(crdtdb__buf_append(body, p, n) == 0);
        memcpy(body->data + at + 2, fuzz_pk, sizeof fuzz_pk);
        return;
    }
    const uint8_t head[] = {body_head, 0xa2, 'f', 'z', 0xc4, 0x20};
    CHECK(crdtdb__buf_append(body, head, sizeof head) == 0);
    CHECK(crdtdb__buf_append(body, fuzz_pk, sizeof fuzz_pk) == 0);
    CHECK(crdtdb__buf_append(body, p, n) == 0);
}

void fuzz_wrap(crdtdb_buf *out, const crdtdb_buf *body)
{
    fuzz_wrap_v(out, body, CRDTDB__DELTA_VERSION);
}

void fuzz_wrap_v(crdtdb_buf *out, const crdtdb_buf *body, unsigned version)
{
    uint8_t sig[crypto_sign_BYTES];
    CHECK(crypto_sign_detached(sig, NULL, body->data, body->len, fuzz_sk) == 0);
    msgpack_packer mp;
    out->len = 0;
    msgpack_packer_init(&mp, out, crdtdb__buf_write_cb);
    CHECK(msgpack_pack_array(&mp, 3) == 0 && msgpack_pack_uint8(&mp, (uint8_t)version) == 0 &&
          msgpack_pack_bin_with_body(&mp, body->data, body->len) == 0 &&
          msgpack_pack_bin_with_body(&mp, sig, sizeof sig) == 0);
}

/* ------------------------------------------------------ scratch environment */

static struct {
    char *dir;
    crdtdb_env **env;
    crdtdb_db **db;
    const char *id;
    const char *const *colls;
    size_t ncolls;
} scratch;

static int rm_cb(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(p);
}

static void rm_dir(void)
{
    if (scratch.dir) {
        nftw(scratch.dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
        free(scratch.dir);
        scratch.dir = NULL;
    }
}

static void cleanup(void)
{
    crdtdb_db_close(*scratch.db);
    crdtdb_env_close(*scratch.env);
    *scratch.db = NULL;
    *scratch.env = NULL;
    rm_dir();
}

void fuzz_scratch_options(crdtdb_env_options *o)
{
    crdtdb_env_options_init(o);
    o->map_size = (size_t)64 << 20;
    o->flags = CRDTDB_ENV_NOSYNC;
}

void fuzz_scratch_env(const crdtdb_env_options *o, crdtdb_env **env)
{
    const char *tmp = getenv("TMPDIR");
    if (!tmp || !*tmp)
        tmp = "/tmp";
    size_t n = strlen(tmp) + 32;
    scratch.dir = malloc(n);
    if (!scratch.dir)
        abort();
    snprintf(scratch.dir, n, "%s/crdtdb-fuzz-XXXXXX", tmp);
    if (!mkdtemp(scratch.dir)) {
        char msg[64];
        snprintf(msg, sizeof msg, "%s: mkdtemp", fuzz_name);
        perror(msg);
        abort();
    }
    int rc = crdtdb_env_open(scratch.dir, o, env);
    if (rc) {
        fprintf(stderr, "%s: env_open %s: %s\n", fuzz_name, scratch.dir,
                crdtdb_strerror(rc));
        abort();
    }
    scratch.env = env;
}

static void db_create(void)
{
    int rc = crdtdb_db_create(*scratch.env, scratch.id, scratch.colls,
                              scratch.ncolls, scratch.db);
    if (rc) {
        fprintf(stderr, "%s: db_create: %s: %s\n", fuzz_name, crdtdb_errname(rc),
                crdtdb_env_errmsg(*scratch.env));
        abort();
    }
}

void fuzz_scratch_db(const char *id, const char *const *colls, size_t n,
                     crdtdb_db **db)
{
    scratch.id = id;
    scratch.colls = colls;
    scratch.ncolls = n;
    scratch.db = db;
    db_create();
    rm_dir();
    atexit(cleanup);
}

void fuzz_scratch_reset(void)
{
    crdtdb_db_close(*scratch.db);
    *scratch.db = NULL;
    int rc = crdtdb_db_drop(*scratch.env, scratch.id);
    CHECK(rc == 0);
    db_create();
}
