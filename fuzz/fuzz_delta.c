/*
 * libFuzzer target for the delta codec (crdt/delta.c) and crdtdb_delta_peek.
 *
 * Input layout:
 *   byte 0   mode: even = (a) envelope, odd = (b) body; in (b), bit 1 set
 *            wraps the body as format version 1 (no short fields), else as
 *            the version the encoder writes
 *   rest     (a) a whole delta envelope [version, bin body, bin sig], as
 *                received from a peer (almost never validly signed once
 *                mutated: this mode fuzzes the frame, the envelope checks
 *                and the refusal paths before the body is read);
 *            (b) a delta body, which the harness signs with a fixed test
 *                key and wraps in a valid envelope, so the body parser is
 *                reached past signature verification:
 *                  - bytes that start like a body, [array header, str
 *                    db_id, bin(32) sender, ...], keep their own db_id and
 *                    get the test public key written over the sender;
 *                  - anything else is the rest of a body after the sender
 *                    (from, to, ack, hlc_base, colls, origins, records,
 *                    fingerprint points) and is prefixed with
 *                    [array header, "fz", bin(32) test key].
 *                The array header is the one crdtdb__delta_encode writes
 *                (0x9a today), read at start-up.
 *
 * Checked:
 *   - crdtdb__delta_decode (small limits, reusing one delta like
 *     crdtdb_db_apply does) returns 0 or a known negative code, never
 *     EBADSIG, EVERSION or ENOMEM in mode (b); crdtdb_delta_peek
 *     likewise, and on a delta that decodes it reports the whole length and
 *     the same database id;
 *   - a decoded delta, re-encoded with the test key, decodes again with the
 *     same header, collections, origins, records and fields (paths, kinds,
 *     stamps, origins, values) and fingerprint points, and encoding that
 *     gives the same bytes.
 * FUZZ_DEBUG=1 in the environment prints the outcome of every decode.
 */
#include <sodium.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crdt/buf.h"
#include "crdt/delta.h"
#include "crdt/record.h"
#include "crdtdb.h"
#include "fuzz_util.h"

const char fuzz_name[] = "fuzz_delta";

#define MAX_DELTA 4096u

static const crdtdb__limits LIM = {512, 8, 128, 64, 0};

static crdtdb__delta dec, dec2; /* reused across inputs, as apply does */
static int debug;

static int known_err(int rc)
{
    return rc <= CRDTDB_EINVAL && rc >= CRDTDB_EFORK;
}

static void cleanup(void)
{
    crdtdb__delta_free(&dec);
    crdtdb__delta_free(&dec2);
}

/* ----------------------------------------------------------------- peek */

/* crdtdb_delta_peek on p; if `decoded` (the bytes are one delta that
 * decoded into d), it must agree with the decoder. */
static void check_peek(const uint8_t *p, size_t n, const crdtdb__delta *d,
                       int decoded)
{
    size_t dlen = (size_t)-1;
    char id[CRDTDB_ID_MAX + 1];
    memset(id, 0x55, sizeof id);
    int rc = crdtdb_delta_peek(p, n, &dlen, id);
    CHECK(rc == 0 || rc == CRDTDB_EBADVALUE || rc == CRDTDB_EVERSION ||
          rc == CRDTDB_ETOOBIG);
    if (rc == 0) {
        CHECK(dlen <= n);
        /* NUL-terminated in the buffer; peek does not verify, so an id
         * holding a NUL comes out shorter (even empty) */
        CHECK(strnlen(id, sizeof id) <= CRDTDB_ID_MAX);
    }
    if (!decoded)
        return;
    /* peek reads a db_id written as fixstr or str8 (what every encoder
     * writes for 1..255 bytes); a str16/str32 id is only for the decoder */
    const uint8_t *body, *sig;
    size_t frame, blen;
    CHECK(crdtdb__delta_frame(p, n, &frame, &body, &blen, &sig) == 0);
    CHECK(frame == n && sig != NULL && blen >= 2);
    if ((body[1] & 0xe0) != 0xa0 && body[1] != 0xd9)
        return;
    CHECK(rc == 0);
    CHECK(dlen == n);
    CHECK(fuzz_same(id, strlen(id), d->db_id.p, d->db_id.n));
}

/* ------------------------------------------------------------ round trip */

/* a and b describe the same change set (a's sender aside). */
static void check_same_delta(const crdtdb__delta *a, const crdtdb__delta *b)
{
    CHECK(fuzz_same(a->db_id.p, a->db_id.n, b->db_id.p, b->db_id.n));
    CHECK(a->from == b->from && a->to == b->to);
    CHECK(a->has_ack == b->has_ack && a->ack == b->ack);
    CHECK(a->hlc_max == b->hlc_max);
    CHECK(a->nfp == b->nfp && a->nfp <= CRDTDB__DELTA_FP_MAX);
    for (uint32_t i = 0; i < a->nfp; i++)
        CHECK(a->fp_seq[i] == b->fp_seq[i] &&
              memcmp(a->fp_hash[i], b->fp_hash[i], CRDTDB__FP_BYTES) == 0);
    CHECK(a->ncolls == b->ncolls && a->norigins == b->norigins);
    CHECK(a->nrecs == b->nrecs && a->nfields == b->nfields);
    for (uint32_t i = 0; i < a->ncolls; i++)
        CHECK(fuzz_same(a->colls[i].p, a->colls[i].n, b->colls[i].p, b->colls[i].n));
    for (uint32_t i = 0; i < a->norigins; i++)
        CHECK(memcmp(a->origins[i], b->origins[i], CRDTDB_REPLICA_ID_BYTES) == 0);
    for (uint32_t i = 0; i < a->nrecs; i++) {
        const crdtdb__delta_rec *x = &a->recs[i], *y = &b->recs[i];
        CHECK(x->coll == y->coll && x->coll < a->ncolls);
        CHECK(fuzz_same(x->id.p, x->id.n, y->id.p, y->id.n));
        CHECK(x->base_kind == y->base_kind);
        if (x->base_kind != CRDTDB__BASE_NONE) {
            CHECK(x->base_hlc == y->base_hlc && x->base_origin == y->base_origin);
            CHECK(x->base_origin < a->norigins);
        }
        CHECK(x->first == y->first && x->n == y->n);
        CHECK(x->first <= a->nfields && x->n <= a->nfields - x->first);
    }
    for (uint32_t i = 0; i < a->nfields; i++) {
        const crdtdb__delta_field *x = &a->fields[i], *y = &b->fields[i];
        CHECK(x->kind == y->kind);
        CHECK(x->kind == CRDTDB__KIND_VALUE || x->kind == CRDTDB__KIND_MAP);
        CHECK(x->hlc == y->hlc && x->origin == y->origin && x->origin < a->norigins);
        CHECK(fuzz_same(x->path, x->path_len, y->path, y->path_len));
        CHECK(x->path_len >= 2 && x->path_len <= LIM.max_path_bytes);
        if (x->kind == CRDTDB__KIND_VALUE)
            CHECK(fuzz_same(x->val, x->val_len, y->val, y->val_len));
    }
}

static void check_roundtrip(crdtdb__delta *d)
{
    crdtdb_buf enc = CRDTDB_BUF_INIT, enc2 = CRDTDB_BUF_INIT;
    crdtdb__err e = CRDTDB__ERR_INIT;
    const uint8_t *sender = d->sender;
    d->sender = fuzz_pk; /* re-signed by the test key */
    CHECK(crdtdb__delta_encode(d, fuzz_sk, &enc) == 0);
    d->sender = sender;
    int rc = crdtdb__delta_decode(&dec2, enc.data, enc.len, SIZE_MAX, &LIM, &e);
    if (rc) {
        fprintf(stderr, "fuzz_delta: re-encoded delta refused: %s: %s\n",
                crdtdb_errname(rc), e.msg);
        CHECK(!"re-encoded delta does not decode");
    }
    CHECK(memcmp(dec2.sender, fuzz_pk, sizeof fuzz_pk) == 0);
    check_same_delta(d, &dec2);
    /* the encoding is canonical: a second round gives the same bytes */
    CHECK(crdtdb__delta_encode(&dec2, fuzz_sk, &enc2) == 0);
    CHECK(fuzz_same(enc.data, enc.len, enc2.data, enc2.len));
    check_peek(enc.data, enc.len, &dec2, 1);
    crdtdb_buf_free(&enc);
    crdtdb_buf_free(&enc2);
}

/* --------------------------------------------------------------- driver */

/* Decodes delta p[0, n) and checks the outcome; `signed_by_us` for mode
 * (b), where the envelope and the signature are valid by construction. */
static void fuzz_one(const uint8_t *p, size_t n, int signed_by_us)
{
    crdtdb__err e = CRDTDB__ERR_INIT;
    int rc = crdtdb__delta_decode(&dec, p, n, MAX_DELTA, &LIM, &e);
    if (debug)
        fprintf(stderr, "fuzz_delta: mode %c: %s: %s\n", signed_by_us ? 'b' : 'a',
                rc ? crdtdb_errname(rc) : "decoded", rc ? e.msg : "re-encoding");
    CHECK(rc == 0 || known_err(rc));
    if (rc) {
        CHECK(rc == CRDTDB_EBADVALUE || rc == CRDTDB_EVERSION ||
              rc == CRDTDB_EBADSIG || rc == CRDTDB_ETOOBIG ||
              rc == CRDTDB_ETOODEEP || rc == CRDTDB_EBADID || rc == CRDTDB_ENOMEM);
        CHECK(e.msg[0] != '\0' && memchr(e.msg, '\0', sizeof e.msg) != NULL);
        if (signed_by_us && n <= MAX_DELTA)
            CHECK(rc != CRDTDB_EBADSIG && rc != CRDTDB_EVERSION &&
                  rc != CRDTDB_ENOMEM);
    }
    check_peek(p, n, &dec, rc == 0);
    if (rc == 0) {
        CHECK(dec.sender != NULL);
        if (signed_by_us)
            CHECK(memcmp(dec.sender, fuzz_pk, sizeof fuzz_pk) == 0);
        check_roundtrip(&dec);
    }
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    debug = fuzz_debug_enabled();
    fuzz_keys_init();
    crdtdb__delta_init(&dec);
    crdtdb__delta_init(&dec2);
    atexit(cleanup);
    return 0;
}

/* Runs fuzz_one on a heap copy of exactly p[0, n), so that ASan sees any
 * read past the end. */
static void fuzz_copy(const uint8_t *p, size_t n, int signed_by_us)
{
    uint8_t *q = fuzz_dup(p, n);
    fuzz_one(q, n, signed_by_us);
    free(q);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    if ((data[0] & 1) == 0) {
        fuzz_copy(data + 1, size - 1, 0);
        return 0;
    }
    crdtdb_buf body = CRDTDB_BUF_INIT, env = CRDTDB_BUF_INIT;
    fuzz_make_body(&body, data + 1, size - 1);
    fuzz_wrap_v(&env, &body, data[0] & 2 ? 1 : CRDTDB__DELTA_VERSION);
    fuzz_copy(env.data, env.len, 1);
    crdtdb_buf_free(&body);
    crdtdb_buf_free(&env);
    return 0;
}
