/* The delta codec (crdt/delta.c): golden bytes, round trip, hostile input. */
#include <check.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crdt/buf.h"
#include "crdt/delta.h"
#include "crdt/path.h"
#include "crdt/record.h"
#include "tests/testutil.h"

static uint8_t pk[32], sk[64], other[32];
static crdtdb__limits lim = {1 << 20, 16, 1024, 10000, 0};

static void keys(void)
{
    uint8_t seed[32];
    memset(seed, 7, sizeof seed); /* deterministic key: golden signatures */
    crypto_sign_seed_keypair(pk, sk, seed);
    memset(other, 0xab, sizeof other);
}

/* One add of {"hp": 7, "pos": {"x": []}} plus a map leaf "m", and a remove. */
static void build(crdtdb__delta *d, crdtdb_buf *paths, crdtdb_buf *vals)
{
    crdtdb__delta_init(d);
    d->db_id.p = "match-1";
    d->db_id.n = 7;
    d->sender = pk;
    d->from = 10;
    d->to = 20;
    d->has_ack = 1;
    d->ack = 3;
    d->recipient = other;
    uint32_t c, o1, o2;
    crdtdb__delta_coll(d, "players", 7, &c);
    crdtdb__delta_origin(d, pk, &o1);
    crdtdb__delta_origin(d, other, &o2);
    /* paths: "hp", "pos"."x", "m" at fixed offsets in one buffer */
    crdtdb__path_push(paths, "hp", 2);        /* [0, 4) */
    crdtdb__path_push(paths, "pos", 3);       /* [4, 9) */
    crdtdb__path_push(paths, "x", 1);         /* [9, 12) */
    crdtdb__path_push(paths, "m", 1);         /* [12, 15) */
    static const uint8_t seven = 0x07, empty_arr = 0x90;
    crdtdb__buf_append(vals, &seven, 1);
    crdtdb__buf_append(vals, &empty_arr, 1);
    uint64_t h = (uint64_t)1700000000000 << 16;
    crdtdb__delta_rec r = {c, {"ann", 3}, CRDTDB__BASE_ADD, o1, h, 0, 0};
    crdtdb__delta_add_rec(d, &r);
    crdtdb__delta_field f1 = {paths->data, 4, CRDTDB__KIND_VALUE, o1, h, vals->data, 1};
    crdtdb__delta_field f2 = {paths->data + 4, 8, CRDTDB__KIND_VALUE, o1, h, vals->data + 1, 1};
    crdtdb__delta_field f3 = {paths->data + 12, 3, CRDTDB__KIND_MAP, o2, h + 5, NULL, 0};
    crdtdb__delta_add_field(d, &f1);
    crdtdb__delta_add_field(d, &f2);
    crdtdb__delta_add_field(d, &f3);
    crdtdb__delta_rec r2 = {c, {"bob", 3}, CRDTDB__BASE_REMOVE, o2, h + 9, 0, 0};
    crdtdb__delta_add_rec(d, &r2);
    static const uint8_t fp[16] = {0xf0, 0xf1, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf7,
                                   0xf8, 0xf9, 0xfa, 0xfb, 0xfc, 0xfd, 0xfe, 0xff};
    d->nfp = 1;
    d->fp_seq[0] = 20;
    d->fp_hash[0] = fp;
}

/* The exact bytes of the delta built above: the format must not drift
 * unnoticed (docs/protocol.md).  ed25519 signatures are deterministic.
 * Version 2: the fields stamped as their record's base are short. */
static const char GOLDEN[] =
    "9302c4ea9ba76d617463682d31c420ea4a6c63e29c520abef5507b132ec5f9954776aebe"
    "be7b92421eea691446d22c0a1403cf018bcfe56800000091a7706c617965727392c420ea"
    "4a6c63e29c520abef5507b132ec5f9954776aebebe7b92421eea691446d22cc420ababab"
    "ababababababababababababababababababababababababababababab929400a3616e6e"
    "930100009392a26870c401079292a3706f73a178c4019093a16d05019400a3626f629302"
    "090190919214c410f0f1f2f3f4f5f6f7f8f9fafbfcfdfeffc420abababababababababab"
    "ababababababababababababababababababababababc440d0e8b6766a8b52af4c4f1943"
    "6ac095fff174df570dbf32d52e26a838304d4c06b13bd6b332bc0fcbd20b1c2e4099f8fa"
    "c718a4d0d47e5b5d4c267e5e8ed0770f";

/* The same delta in version 1, which every field carried its stamp in
 * ("hp" and ["pos", "x"] are stamped as ann's base): still read. */
static const char GOLDEN_V1[] =
    "9301c4ee9ba76d617463682d31c420ea4a6c63e29c520abef5507b132ec5f9954776aebe"
    "be7b92421eea691446d22c0a1403cf018bcfe56800000091a7706c617965727392c420ea"
    "4a6c63e29c520abef5507b132ec5f9954776aebebe7b92421eea691446d22cc420ababab"
    "ababababababababababababababababababababababababababababab929400a3616e6e"
    "930100009394a268700000c401079492a3706f73a1780000c4019093a16d05019400a362"
    "6f629302090190919214c410f0f1f2f3f4f5f6f7f8f9fafbfcfdfeffc420abababababab"
    "ababababababababababababababababababababababababababc44006253e9acaf7dd19"
    "b44241f2b280953e1d5febabd498a7531e36e6f4d6de72aa2f984e97261a883d1e86615e"
    "01e599d72b33a3480fdd31ceb1e398d95dee7e02";

START_TEST(golden_bytes)
{
    crdtdb__delta d;
    crdtdb_buf paths = CRDTDB_BUF_INIT, vals = CRDTDB_BUF_INIT, out = CRDTDB_BUF_INIT;
    build(&d, &paths, &vals);
    ck_assert_int_eq(crdtdb__delta_encode(&d, sk, &out), 0);
    char *h = tu_hex(out.data, out.len);
    ck_assert_msg(strcmp(h, GOLDEN) == 0, "delta bytes changed:\n%s", h);
    free(h);
    crdtdb__delta_free(&d);
    crdtdb_buf_free(&paths);
    crdtdb_buf_free(&vals);
    crdtdb_buf_free(&out);
}
END_TEST

/* A delta's first bytes say how long it is, for a reader of a stream:
 * whatever prefix is held, *need is what to hold before asking again. */
START_TEST(first_bytes_say_how_long)
{
    size_t n, need;
    uint8_t *b = tu_unhex(GOLDEN, &n); /* 93 02 c4 ea ...: a bin8 body */
    for (size_t len = 0; len <= n; len++) {
        ck_assert_int_eq(crdtdb_delta_need(b, len, &need), 0);
        ck_assert_uint_eq(need, len < 3 ? 3 : len < 4 ? 4 : n); /* the header, then all */
    }
    size_t dlen;
    char id[CRDTDB_ID_MAX + 1];
    ck_assert_int_eq(crdtdb_delta_peek(b, need, &dlen, id), 0);
    ck_assert_uint_eq(dlen, need);
    b[2] = 0xc5; /* bin16: two length bytes, and the length they say */
    ck_assert_int_eq(crdtdb_delta_need(b, 4, &need), 0);
    ck_assert_uint_eq(need, 5);
    ck_assert_int_eq(crdtdb_delta_need(b, 5, &need), 0);
    ck_assert_uint_eq(need, 5 + 0xea9b + 2 + 64);
    b[2] = 0xa1; /* a str: no delta */
    ck_assert_int_eq(crdtdb_delta_need(b, n, &need), CRDTDB_EBADVALUE);
    b[1] = 99;
    ck_assert_int_eq(crdtdb_delta_need(b, 2, &need), CRDTDB_EVERSION);
    b[0] = 0;
    ck_assert_int_eq(crdtdb_delta_need(b, 1, &need), CRDTDB_EBADVALUE);
    ck_assert_int_eq(crdtdb_delta_need(NULL, 0, &need), 0);
    ck_assert_uint_eq(need, 3);
    ck_assert_int_eq(crdtdb_delta_need(b, 1, NULL), CRDTDB_EINVAL);
    free(b);
}
END_TEST

START_TEST(round_trip)
{
    crdtdb__delta d, back;
    crdtdb_buf paths = CRDTDB_BUF_INIT, vals = CRDTDB_BUF_INIT, out = CRDTDB_BUF_INIT;
    build(&d, &paths, &vals);
    ck_assert_int_eq(crdtdb__delta_encode(&d, sk, &out), 0);
    crdtdb__delta_init(&back);
    crdtdb__err e;
    ck_assert_int_eq(crdtdb__delta_decode(&back, out.data, out.len, 1 << 20, &lim, &e), 0);
    ck_assert_int_eq(back.db_id.n, 7);
    ck_assert_mem_eq(back.db_id.p, "match-1", 7);
    ck_assert_mem_eq(back.sender, pk, 32);
    ck_assert_uint_eq(back.from, 10);
    ck_assert_uint_eq(back.to, 20);
    ck_assert_int_eq(back.has_ack, 1);
    ck_assert_uint_eq(back.ack, 3);
    ck_assert_uint_eq(back.nrecs, 2);
    ck_assert_uint_eq(back.nfields, 3);
    ck_assert_uint_eq(back.hlc_max, d.hlc_max);
    for (uint32_t i = 0; i < 3; i++) {
        ck_assert_uint_eq(back.fields[i].path_len, d.fields[i].path_len);
        ck_assert_mem_eq(back.fields[i].path, d.fields[i].path, d.fields[i].path_len);
        ck_assert_uint_eq(back.fields[i].hlc, d.fields[i].hlc);
        ck_assert_uint_eq(back.fields[i].kind, d.fields[i].kind);
        ck_assert_mem_eq(back.origins[back.fields[i].origin], d.origins[d.fields[i].origin], 32);
        ck_assert_uint_eq(back.fields[i].val_len, d.fields[i].val_len);
    }
    ck_assert_uint_eq(back.recs[1].base_kind, CRDTDB__BASE_REMOVE);
    ck_assert_uint_eq(back.nfp, 1);
    ck_assert_mem_eq(back.recipient, other, 32);
    ck_assert_uint_eq(back.fp_seq[0], 20);
    ck_assert_mem_eq(back.fp_hash[0], d.fp_hash[0], 16);
    ck_assert_uint_eq(back.recs[1].base_hlc, d.recs[1].base_hlc);
    /* frame and peek agree on the length */
    size_t flen, blen;
    const uint8_t *body, *sig;
    ck_assert_int_eq(crdtdb__delta_frame(out.data, out.len, &flen, &body, &blen, &sig), 0);
    ck_assert_uint_eq(flen, out.len);
    char id[256];
    ck_assert_int_eq(crdtdb_delta_peek(out.data, out.len, &flen, id), 0);
    ck_assert_str_eq(id, "match-1");
    crdtdb__delta_free(&d);
    crdtdb__delta_free(&back);
    crdtdb_buf_free(&paths);
    crdtdb_buf_free(&vals);
    crdtdb_buf_free(&out);
}
END_TEST

static int decode(const uint8_t *p, size_t n, size_t max, crdtdb__err *e)
{
    crdtdb__delta d;
    crdtdb__delta_init(&d);
    int rc = crdtdb__delta_decode(&d, p, n, max, &lim, e);
    crdtdb__delta_free(&d);
    return rc;
}

START_TEST(tampering_is_refused)
{
    crdtdb__delta d;
    crdtdb_buf paths = CRDTDB_BUF_INIT, vals = CRDTDB_BUF_INIT, out = CRDTDB_BUF_INIT;
    build(&d, &paths, &vals);
    ck_assert_int_eq(crdtdb__delta_encode(&d, sk, &out), 0);
    crdtdb__err e;
    /* every truncation */
    for (size_t n = 0; n < out.len; n++)
        ck_assert_int_ne(decode(out.data, n, 1 << 20, &e), 0);
    /* every single-byte change: never accepted, never a crash */
    for (size_t i = 0; i < out.len; i++) {
        out.data[i] ^= 0x01;
        int rc = decode(out.data, out.len, 1 << 20, &e);
        ck_assert_msg(rc != 0, "flipped byte %zu accepted", i);
        out.data[i] ^= 0x01;
    }
    /* a flip inside the body is a signature failure */
    size_t flen, blen;
    const uint8_t *body, *sig;
    crdtdb__delta_frame(out.data, out.len, &flen, &body, &blen, &sig);
    size_t mid = (size_t)(body - out.data) + blen / 2;
    out.data[mid] ^= 0x40;
    ck_assert_int_eq(decode(out.data, out.len, 1 << 20, &e), CRDTDB_EBADSIG);
    ck_assert(strstr(e.msg, "signature") != NULL);
    out.data[mid] ^= 0x40;
    /* trailing bytes, size limit, version, missing signature */
    ck_assert_int_eq(decode(out.data, out.len, 1 << 20, &e), 0);
    uint8_t *big = malloc(out.len + 1);
    memcpy(big, out.data, out.len);
    big[out.len] = 0;
    ck_assert_int_eq(decode(big, out.len + 1, 1 << 20, &e), CRDTDB_EBADVALUE);
    ck_assert_int_eq(decode(out.data, out.len, out.len - 1, &e), CRDTDB_ETOOBIG);
    memcpy(big, out.data, out.len);
    big[1] = 3;
    ck_assert_int_eq(decode(big, out.len, 1 << 20, &e), CRDTDB_EVERSION);
    ck_assert(strstr(e.msg, "version") != NULL);
    big[1] = 0;
    ck_assert_int_eq(decode(big, out.len, 1 << 20, &e), CRDTDB_EVERSION);
    /* the version is outside what is signed: version 1 has no short
     * fields, so the same body under it is refused */
    big[1] = 1;
    ck_assert_int_eq(decode(big, out.len, 1 << 20, &e), CRDTDB_EBADVALUE);
    ck_assert(strstr(e.msg, "a field is") != NULL);
    /* signature of the wrong length */
    memcpy(big, out.data, out.len);
    big[out.len - 65] = 63;
    ck_assert_int_ne(decode(big, out.len - 1, 1 << 20, &e), 0);
    free(big);
    /* signed by a key other than the claimed sender */
    uint8_t pk2[32], sk2[64];
    crypto_sign_keypair(pk2, sk2);
    ck_assert_int_eq(crdtdb__delta_encode(&d, sk2, &out), 0);
    ck_assert_int_eq(decode(out.data, out.len, 1 << 20, &e), CRDTDB_EBADSIG);
    crdtdb__delta_free(&d);
    crdtdb_buf_free(&paths);
    crdtdb_buf_free(&vals);
    crdtdb_buf_free(&out);
}
END_TEST

/* Signs a hand-made body, so limits are checked on validly signed input. */
static void signed_delta_v(crdtdb_buf *out, const uint8_t *body, size_t n, unsigned version)
{
    uint8_t sig[64];
    crypto_sign_detached(sig, NULL, body, n, sk);
    msgpack_packer p;
    out->len = 0;
    msgpack_packer_init(&p, out, crdtdb__buf_write_cb);
    msgpack_pack_array(&p, 3);
    msgpack_pack_uint8(&p, (uint8_t)version);
    msgpack_pack_bin_with_body(&p, body, n);
    msgpack_pack_bin_with_body(&p, sig, 64);
}

static void signed_delta(crdtdb_buf *out, const uint8_t *body, size_t n)
{
    signed_delta_v(out, body, n, CRDTDB__DELTA_VERSION);
}

/* The start of a body of "db" (sequences (0, 1], hlc_base given, the
 * collection "c", our key the one origin) holding one record, "r" of
 * collection index coll_idx, up to its base. */
static void body_head(msgpack_packer *p, crdtdb_buf *body, uint64_t hlc_base, int coll_idx)
{
    body->len = 0;
    msgpack_packer_init(p, body, crdtdb__buf_write_cb);
    msgpack_pack_array(p, 11);
    msgpack_pack_str_with_body(p, "db", 2);
    msgpack_pack_bin_with_body(p, pk, 32);
    msgpack_pack_uint8(p, 0);
    msgpack_pack_uint8(p, 1);
    msgpack_pack_nil(p);
    msgpack_pack_uint64(p, hlc_base);
    msgpack_pack_array(p, 1);
    msgpack_pack_str_with_body(p, "c", 1);
    msgpack_pack_array(p, 1);
    msgpack_pack_bin_with_body(p, pk, 32);
    msgpack_pack_array(p, 1);
    msgpack_pack_array(p, 4);
    msgpack_pack_uint32(p, (uint32_t)coll_idx);
    msgpack_pack_str_with_body(p, "r", 1);
}

/* A body with one record holding one field [path, 0, 0, bin value]. */
static void one_field(crdtdb_buf *body, int depth, const uint8_t *val, size_t vlen,
                      int coll_idx, int origin_idx)
{
    msgpack_packer p;
    body_head(&p, body, 1, coll_idx);
    msgpack_pack_nil(&p);
    msgpack_pack_array(&p, 1);
    msgpack_pack_array(&p, 4);
    msgpack_pack_array(&p, (size_t)depth);
    for (int i = 0; i < depth; i++)
        msgpack_pack_str_with_body(&p, "k", 1);
    msgpack_pack_uint8(&p, 0);
    msgpack_pack_uint32(&p, (uint32_t)origin_idx);
    msgpack_pack_bin_with_body(&p, val, vlen);
    msgpack_pack_array(&p, 0); /* no fingerprint points */
    msgpack_pack_nil(&p);      /* for no one peer */
}

START_TEST(limits_on_signed_input)
{
    crdtdb_buf body = CRDTDB_BUF_INIT, out = CRDTDB_BUF_INIT;
    crdtdb__err e;
    static const uint8_t one = 1, nested[] = {0x91, 0x91, 0x91, 0x01};
    one_field(&body, 1, &one, 1, 0, 0);
    signed_delta(&out, body.data, body.len);
    ck_assert_int_eq(decode(out.data, out.len, 1 << 20, &e), 0);
    one_field(&body, 17, &one, 1, 0, 0); /* path deeper than max_depth */
    signed_delta(&out, body.data, body.len);
    ck_assert_int_eq(decode(out.data, out.len, 1 << 20, &e), CRDTDB_ETOODEEP);
    one_field(&body, 14, nested, sizeof nested, 0, 0); /* 14 + 3 > 16 */
    signed_delta(&out, body.data, body.len);
    ck_assert_int_eq(decode(out.data, out.len, 1 << 20, &e), CRDTDB_ETOODEEP);
    one_field(&body, 13, nested, sizeof nested, 0, 0); /* 13 + 3 fits */
    signed_delta(&out, body.data, body.len);
    ck_assert_int_eq(decode(out.data, out.len, 1 << 20, &e), 0);
    uint8_t *bigval = calloc(1, (1 << 20) + 8);
    bigval[0] = 0xc6; /* bin32 of 1 MiB + 1 */
    bigval[2] = 0x10;
    bigval[4] = 0x01;
    one_field(&body, 1, bigval, (1 << 20) + 6, 0, 0);
    signed_delta(&out, body.data, body.len);
    ck_assert_int_eq(decode(out.data, out.len, 4 << 20, &e), CRDTDB_ETOOBIG);
    free(bigval);
    static const uint8_t map_value[] = {0x81, 0xa1, 'k', 0x01}; /* maps go as leaves */
    one_field(&body, 1, map_value, sizeof map_value, 0, 0);
    signed_delta(&out, body.data, body.len);
    ck_assert_int_eq(decode(out.data, out.len, 1 << 20, &e), CRDTDB_EBADVALUE);
    static const uint8_t bad[] = {0xc1};
    one_field(&body, 1, bad, 1, 0, 0); /* value is not msgpack */
    signed_delta(&out, body.data, body.len);
    ck_assert_int_eq(decode(out.data, out.len, 1 << 20, &e), CRDTDB_EBADVALUE);
    one_field(&body, 1, &one, 1, 1, 0); /* collection index out of range */
    signed_delta(&out, body.data, body.len);
    ck_assert_int_eq(decode(out.data, out.len, 1 << 20, &e), CRDTDB_EBADVALUE);
    one_field(&body, 1, &one, 1, 0, 5); /* origin index out of range */
    signed_delta(&out, body.data, body.len);
    ck_assert_int_eq(decode(out.data, out.len, 1 << 20, &e), CRDTDB_EBADVALUE);
    static const uint8_t garbage[] = {0x93, 0x01, 0xc4, 0x01, 0x99, 0xc4, 0x00};
    ck_assert_int_ne(decode(garbage, sizeof garbage, 1 << 20, &e), 0);
    crdtdb_buf_free(&body);
    crdtdb_buf_free(&out);
}
END_TEST

/* What decoding a delta took is let go of once it is decoded: msgpack-c's
 * objects (24 bytes per element, so ~24x a body of one-byte elements) at
 * once, the field and record arrays by trim (a handle's applies) when
 * large.  Else a peer's one delta pinned ~96 MiB on a handle. */
START_TEST(decoding_memory_is_let_go)
{
    crdtdb_buf body = CRDTDB_BUF_INIT, out = CRDTDB_BUF_INIT;
    crdtdb__err e;
    msgpack_packer p;
    /* a record of 20,000 short-form fields: decodes */
    body_head(&p, &body, 1, 0);
    msgpack_pack_array(&p, 3); /* base: add, stamp 0, origin 0 */
    msgpack_pack_uint8(&p, 1);
    msgpack_pack_uint8(&p, 0);
    msgpack_pack_uint8(&p, 0);
    msgpack_pack_array(&p, 20000);
    for (unsigned i = 0; i < 20000; i++) {
        char k[16];
        int n = snprintf(k, sizeof k, "f%05u", i);
        msgpack_pack_array(&p, 1);
        msgpack_pack_str_with_body(&p, k, (size_t)n);
    }
    msgpack_pack_array(&p, 0);
    msgpack_pack_nil(&p);
    signed_delta(&out, body.data, body.len);
    crdtdb__delta d;
    crdtdb__delta_init(&d);
    ck_assert_int_eq(crdtdb__delta_decode(&d, out.data, out.len, 1 << 22, &lim, &e), 0);
    ck_assert_uint_eq(d.nfields, 20000);
    /* cleared: what the objects took is freed, the first chunk kept empty */
    ck_assert_uint_eq(d.zone.chunk_list.free, d.zone.chunk_size);
    crdtdb__delta_trim(&d);
    ck_assert_uint_eq(d.fields_cap, 0);
    ck_assert_uint_eq(d.nfields, 0);
    /* 100,000 nils where records go: refused, and let go of as well */
    body_head(&p, &body, 1, 0);
    body.len = 0;
    msgpack_packer_init(&p, &body, crdtdb__buf_write_cb);
    msgpack_pack_array(&p, 11);
    msgpack_pack_str_with_body(&p, "db", 2);
    msgpack_pack_bin_with_body(&p, pk, 32);
    msgpack_pack_uint8(&p, 0);
    msgpack_pack_uint8(&p, 1);
    msgpack_pack_nil(&p);
    msgpack_pack_uint8(&p, 1);
    msgpack_pack_array(&p, 0);
    msgpack_pack_array(&p, 0);
    msgpack_pack_array(&p, 100000);
    for (unsigned i = 0; i < 100000; i++)
        msgpack_pack_nil(&p);
    msgpack_pack_array(&p, 0);
    msgpack_pack_nil(&p);
    signed_delta(&out, body.data, body.len);
    ck_assert_int_ne(crdtdb__delta_decode(&d, out.data, out.len, 1 << 22, &lim, &e), 0);
    ck_assert_uint_eq(d.zone.chunk_list.free, d.zone.chunk_size);
    /* and decoding again after a trim works as before */
    one_field(&body, 1, (const uint8_t *)"\x01", 1, 0, 0);
    signed_delta(&out, body.data, body.len);
    ck_assert_int_eq(crdtdb__delta_decode(&d, out.data, out.len, 1 << 20, &lim, &e), 0);
    ck_assert_uint_eq(d.nfields, 1);
    crdtdb__delta_free(&d);
    crdtdb_buf_free(&body);
    crdtdb_buf_free(&out);
}
END_TEST

/* Version 1 deltas (files exported before version 2, older peers) decode to
 * the same registers, and encode again as version 2. */
START_TEST(version_1_still_read)
{
    crdtdb__delta d, v1, v2;
    crdtdb_buf paths = CRDTDB_BUF_INIT, vals = CRDTDB_BUF_INIT, out = CRDTDB_BUF_INIT;
    build(&d, &paths, &vals);
    crdtdb__delta_init(&v1);
    crdtdb__delta_init(&v2);
    crdtdb__err e;
    size_t n1, n2;
    uint8_t *b1 = tu_unhex(GOLDEN_V1, &n1), *b2 = tu_unhex(GOLDEN, &n2);
    ck_assert_int_eq(b1[1], 1);
    ck_assert_int_eq(crdtdb__delta_decode(&v1, b1, n1, 1 << 20, &lim, &e), 0);
    ck_assert_int_eq(crdtdb__delta_decode(&v2, b2, n2, 1 << 20, &lim, &e), 0);
    ck_assert_uint_eq(v1.nrecs, d.nrecs);
    ck_assert_uint_eq(v1.nfields, d.nfields);
    ck_assert_uint_eq(v2.nfields, d.nfields);
    for (uint32_t i = 0; i < d.nfields; i++) {
        ck_assert_uint_eq(v1.fields[i].hlc, d.fields[i].hlc);
        ck_assert_uint_eq(v2.fields[i].hlc, d.fields[i].hlc);
        ck_assert_uint_eq(v1.fields[i].origin, d.fields[i].origin);
        ck_assert_uint_eq(v2.fields[i].origin, d.fields[i].origin);
        ck_assert_int_eq(v1.fields[i].kind, d.fields[i].kind);
        ck_assert_int_eq(v2.fields[i].kind, d.fields[i].kind);
        ck_assert_uint_eq(v1.fields[i].path_len, d.fields[i].path_len);
        ck_assert_mem_eq(v1.fields[i].path, d.fields[i].path, d.fields[i].path_len);
        ck_assert_mem_eq(v2.fields[i].path, d.fields[i].path, d.fields[i].path_len);
    }
    ck_assert_uint_eq(v1.hlc_max, v2.hlc_max);
    ck_assert_int_eq(crdtdb__delta_encode(&v1, sk, &out), 0);
    char *h = tu_hex(out.data, out.len);
    ck_assert_str_eq(h, GOLDEN);
    free(h);
    crdtdb__delta_free(&d);
    crdtdb__delta_free(&v1);
    crdtdb__delta_free(&v2);
    crdtdb_buf_free(&paths);
    crdtdb_buf_free(&vals);
    crdtdb_buf_free(&out);
    free(b1);
    free(b2);
}
END_TEST

/* A body of one record "r" whose base is [1, 5, 0] (or nil) and whose one
 * field is the given short (or other) form, packed by the callback. */
static void short_body(crdtdb_buf *body, int with_base, void (*field)(msgpack_packer *))
{
    msgpack_packer p;
    body_head(&p, body, 100, 0);
    if (with_base) {
        msgpack_pack_array(&p, 3);
        msgpack_pack_uint8(&p, 1);
        msgpack_pack_uint8(&p, 5);
        msgpack_pack_uint8(&p, 0);
    } else {
        msgpack_pack_nil(&p);
    }
    msgpack_pack_array(&p, 1);
    field(&p);
    msgpack_pack_array(&p, 0);
    msgpack_pack_nil(&p);
}

static void value_short(msgpack_packer *p) /* ["k", bin 07] */
{
    static const uint8_t v = 7;
    msgpack_pack_array(p, 2);
    msgpack_pack_str_with_body(p, "k", 1);
    msgpack_pack_bin_with_body(p, &v, 1);
}

static void map_short(msgpack_packer *p) /* [["m", "n"]] */
{
    msgpack_pack_array(p, 1);
    msgpack_pack_array(p, 2);
    msgpack_pack_str_with_body(p, "m", 1);
    msgpack_pack_str_with_body(p, "n", 1);
}

static void value_not_bin(msgpack_packer *p) /* ["k", 7] */
{
    msgpack_pack_array(p, 2);
    msgpack_pack_str_with_body(p, "k", 1);
    msgpack_pack_uint8(p, 7);
}

static void no_path(msgpack_packer *p) /* [] */
{
    msgpack_pack_array(p, 0);
}

START_TEST(short_fields)
{
    crdtdb_buf body = CRDTDB_BUF_INIT, out = CRDTDB_BUF_INIT;
    crdtdb__delta d;
    crdtdb__delta_init(&d);
    crdtdb__err e;
    short_body(&body, 1, value_short);
    signed_delta(&out, body.data, body.len);
    ck_assert_int_eq(crdtdb__delta_decode(&d, out.data, out.len, 1 << 20, &lim, &e), 0);
    ck_assert_uint_eq(d.nfields, 1);
    ck_assert_uint_eq(d.fields[0].hlc, 105);
    ck_assert_uint_eq(d.fields[0].origin, 0);
    ck_assert_int_eq(d.fields[0].kind, CRDTDB__KIND_VALUE);
    ck_assert_uint_eq(d.fields[0].val_len, 1);
    ck_assert_int_eq(d.fields[0].val[0], 7);
    /* the same body as version 1: no short fields there */
    signed_delta_v(&out, body.data, body.len, 1);
    ck_assert_int_eq(decode(out.data, out.len, 1 << 20, &e), CRDTDB_EBADVALUE);
    short_body(&body, 1, map_short);
    signed_delta(&out, body.data, body.len);
    ck_assert_int_eq(crdtdb__delta_decode(&d, out.data, out.len, 1 << 20, &lim, &e), 0);
    ck_assert_uint_eq(d.nfields, 1);
    ck_assert_uint_eq(d.fields[0].hlc, 105);
    ck_assert_int_eq(d.fields[0].kind, CRDTDB__KIND_MAP);
    /* a short field needs a base in its entry to take the stamp of */
    short_body(&body, 0, value_short);
    signed_delta(&out, body.data, body.len);
    ck_assert_int_eq(decode(out.data, out.len, 1 << 20, &e), CRDTDB_EBADVALUE);
    ck_assert(strstr(e.msg, "a field is") != NULL);
    short_body(&body, 1, value_not_bin);
    signed_delta(&out, body.data, body.len);
    ck_assert_int_eq(decode(out.data, out.len, 1 << 20, &e), CRDTDB_EBADVALUE);
    ck_assert(strstr(e.msg, "bin") != NULL);
    short_body(&body, 1, no_path);
    signed_delta(&out, body.data, body.len);
    ck_assert_int_eq(decode(out.data, out.len, 1 << 20, &e), CRDTDB_EBADVALUE);
    crdtdb__delta_free(&d);
    crdtdb_buf_free(&body);
    crdtdb_buf_free(&out);
}
END_TEST

int main(void)
{
    if (sodium_init() < 0)
        return 1;
    keys();
    Suite *s = suite_create("delta");
    TCase *tc = tcase_create("delta");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, golden_bytes);
    tcase_add_test(tc, round_trip);
    tcase_add_test(tc, first_bytes_say_how_long);
    tcase_add_test(tc, tampering_is_refused);
    tcase_add_test(tc, limits_on_signed_input);
    tcase_add_test(tc, decoding_memory_is_let_go);
    tcase_add_test(tc, version_1_still_read);
    tcase_add_test(tc, short_fields);
    suite_add_tcase(s, tc);
    return tu_run(s);
}
