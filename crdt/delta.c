/* Delta codec: signed msgpack change sets (delta.h, docs/protocol.md). */
#include "crdt/delta.h"

#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "crdt/array.h"
#include "crdt/buf.h"
#include "crdt/mpcheck.h"
#include "crdt/path.h"
#include "crdt/record.h"

#define BODY_FIELDS 11
#define BODY_DEPTH 6 /* envelope body: body > records > rec > fields > field > path */

void crdtdb__delta_init(crdtdb__delta *d) { memset(d, 0, sizeof *d); }

void crdtdb__delta_reset(crdtdb__delta *d)
{
    d->db_id.p = NULL;
    d->db_id.n = 0;
    d->sender = NULL;
    d->recipient = NULL;
    d->from = d->to = d->ack = d->hlc_max = 0;
    d->has_ack = 0;
    d->nfp = 0;
    d->ncolls = d->norigins = d->nrecs = d->nfields = 0;
    crdtdb__keyidx_clear(&d->oidx);
    d->paths.len = 0;
    if (d->zone_ready)
        msgpack_zone_clear(&d->zone);
}

/* Capacities a handle keeps between applies (a delta of 4096 fields, a
 * few hundred records, origins and collections: what most deltas hold). */
#define TRIM_FIELDS 4096u
#define TRIM_ITEMS 512u
#define TRIM_PATHS (64u << 10)

void crdtdb__delta_trim(crdtdb__delta *d)
{
    crdtdb__delta_reset(d);
    if (d->fields_cap > TRIM_FIELDS) {
        free(d->fields);
        d->fields = NULL;
        d->fields_cap = 0;
    }
    if (d->recs_cap > TRIM_ITEMS) {
        free(d->recs);
        d->recs = NULL;
        d->recs_cap = 0;
    }
    if (d->colls_cap > TRIM_ITEMS) {
        free(d->colls);
        d->colls = NULL;
        d->colls_cap = 0;
    }
    if (d->origins_cap > TRIM_ITEMS) {
        free(d->origins);
        d->origins = NULL;
        d->origins_cap = 0;
        crdtdb__keyidx_free(&d->oidx);
    }
    if (d->paths.cap > TRIM_PATHS)
        crdtdb_buf_free(&d->paths);
}

void crdtdb__delta_free(crdtdb__delta *d)
{
    if (!d)
        return;
    free(d->colls);
    free(d->origins);
    crdtdb__keyidx_free(&d->oidx);
    free(d->recs);
    free(d->fields);
    crdtdb_buf_free(&d->paths);
    if (d->zone_ready)
        msgpack_zone_destroy(&d->zone);
    memset(d, 0, sizeof *d);
}

/* Makes room for one more element: crdt/array.h's rule, from 16. */
static int grow(void *arr, uint32_t *cap, uint32_t n, size_t sz)
{
    return crdtdb__array_grow(arr, cap, n, sz, 16);
}

int crdtdb__delta_coll(crdtdb__delta *d, const char *p, uint32_t n, uint32_t *idx)
{
    for (uint32_t i = 0; i < d->ncolls; i++)
        if (d->colls[i].n == n && memcmp(d->colls[i].p, p, n) == 0) {
            *idx = i;
            return 0;
        }
    if (grow(&d->colls, &d->colls_cap, d->ncolls, sizeof *d->colls))
        return CRDTDB_ENOMEM;
    d->colls[d->ncolls].p = p;
    d->colls[d->ncolls].n = n;
    *idx = d->ncolls++;
    return 0;
}

int crdtdb__delta_origin(crdtdb__delta *d, const uint8_t *key, uint32_t *idx)
{
    int found = crdtdb__keyidx_find(&d->oidx, d->origins, d->norigins, key, idx);
    if (found)
        return found < 0 ? found : 0;
    if (grow(&d->origins, &d->origins_cap, d->norigins, sizeof *d->origins))
        return CRDTDB_ENOMEM;
    d->origins[d->norigins] = key;
    *idx = d->norigins++;
    return 0;
}

int crdtdb__delta_add_rec(crdtdb__delta *d, const crdtdb__delta_rec *r)
{
    if (grow(&d->recs, &d->recs_cap, d->nrecs, sizeof *d->recs))
        return CRDTDB_ENOMEM;
    d->recs[d->nrecs] = *r;
    d->recs[d->nrecs].first = d->nfields;
    d->recs[d->nrecs].n = 0;
    d->nrecs++;
    if (r->base_kind != CRDTDB__BASE_NONE && r->base_hlc > d->hlc_max)
        d->hlc_max = r->base_hlc;
    return 0;
}

int crdtdb__delta_add_field(crdtdb__delta *d, const crdtdb__delta_field *f)
{
    if (d->nrecs == 0 || grow(&d->fields, &d->fields_cap, d->nfields, sizeof *d->fields))
        return CRDTDB_ENOMEM;
    d->fields[d->nfields++] = *f;
    d->recs[d->nrecs - 1].n++;
    if (f->hlc > d->hlc_max)
        d->hlc_max = f->hlc;
    return 0;
}

/* Bytes of a msgpack str or bin header for n bytes, and of an array
 * header for n items. */
static size_t str_head(size_t n) { return n < 32 ? 1 : n < 256 ? 2 : n < 65536 ? 3 : 5; }
static size_t bin_head(size_t n) { return n < 256 ? 2 : n < 65536 ? 3 : 5; }
static size_t arr_head(size_t n) { return n < 16 ? 1 : n < 65536 ? 3 : 5; }

size_t crdtdb__delta_field_cost(const crdtdb__delta_field *f, int as_base)
{
    /* exact but for the stamp offset and origin, taken at their widest
     * (the offset is from the delta's oldest stamp, known only once it is
     * full): field array 1, path (an array header when deeper than one
     * key, each key's str header + bytes: escapes only shorten a key),
     * offset 9 and origin 5 unless the field is short, value bin header +
     * bytes (a map leaf has none: counted all the same) */
    size_t n = 1 + (as_base ? 0 : 9 + 5) + bin_head(f->val_len) + f->val_len, off = 0, end,
           depth = 0;
    while (off < f->path_len) {
        size_t start = off;
        if (crdtdb__path_next(f->path, f->path_len, &off, &end))
            return n + 5 + 8 * (size_t)f->path_len; /* cannot happen: stay safe */
        n += str_head(end - start) + (end - start);
        depth++;
    }
    return depth > 1 ? n + arr_head(depth) : n;
}

/* ------------------------------------------------------------- encode */

static int pack_path(msgpack_packer *pk, const uint8_t *path, uint32_t len,
                     uint8_t *key)
{
    int depth = crdtdb__path_depth(path, len);
    if (depth < 1)
        return CRDTDB_ECORRUPT;
    if (depth > 1 && msgpack_pack_array(pk, (size_t)depth))
        return CRDTDB_ENOMEM;
    size_t off = 0, end;
    while (off < len) {
        size_t start = off;
        crdtdb__path_next(path, len, &off, &end);
        size_t n = crdtdb__path_unescape(path, start, end, key);
        if (msgpack_pack_str(pk, n) || msgpack_pack_str_body(pk, key, n))
            return CRDTDB_ENOMEM;
    }
    return 0;
}

static int encode_body(const crdtdb__delta *d, crdtdb_buf *body)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, body, crdtdb__buf_write_cb);
    uint64_t base = UINT64_MAX;
    size_t maxpath = 1;
    for (uint32_t i = 0; i < d->nrecs; i++)
        if (d->recs[i].base_kind != CRDTDB__BASE_NONE && d->recs[i].base_hlc < base)
            base = d->recs[i].base_hlc;
    for (uint32_t i = 0; i < d->nfields; i++) {
        if (d->fields[i].hlc < base)
            base = d->fields[i].hlc;
        if (d->fields[i].path_len > maxpath)
            maxpath = d->fields[i].path_len;
    }
    if (base == UINT64_MAX)
        base = 0;
    uint8_t *key = malloc(maxpath);
    if (!key)
        return CRDTDB_ENOMEM;
    int bad = msgpack_pack_array(&pk, BODY_FIELDS) ||
              msgpack_pack_str_with_body(&pk, d->db_id.p, d->db_id.n) ||
              msgpack_pack_bin_with_body(&pk, d->sender, CRDTDB_REPLICA_ID_BYTES) ||
              msgpack_pack_uint64(&pk, d->from) || msgpack_pack_uint64(&pk, d->to) ||
              (d->has_ack ? msgpack_pack_uint64(&pk, d->ack) : msgpack_pack_nil(&pk)) ||
              msgpack_pack_uint64(&pk, base) || msgpack_pack_array(&pk, d->ncolls);
    for (uint32_t i = 0; !bad && i < d->ncolls; i++)
        bad = msgpack_pack_str_with_body(&pk, d->colls[i].p, d->colls[i].n);
    bad = bad || msgpack_pack_array(&pk, d->norigins);
    for (uint32_t i = 0; !bad && i < d->norigins; i++)
        bad = msgpack_pack_bin_with_body(&pk, d->origins[i], CRDTDB_REPLICA_ID_BYTES);
    bad = bad || msgpack_pack_array(&pk, d->nrecs);
    int rc = 0;
    for (uint32_t i = 0; !bad && !rc && i < d->nrecs; i++) {
        const crdtdb__delta_rec *r = &d->recs[i];
        bad = msgpack_pack_array(&pk, 4) || msgpack_pack_uint32(&pk, r->coll) ||
              msgpack_pack_str_with_body(&pk, r->id.p, r->id.n);
        if (r->base_kind == CRDTDB__BASE_NONE)
            bad = bad || msgpack_pack_nil(&pk);
        else
            bad = bad || msgpack_pack_array(&pk, 3) ||
                  msgpack_pack_uint8(&pk, r->base_kind) ||
                  msgpack_pack_uint64(&pk, r->base_hlc - base) ||
                  msgpack_pack_uint32(&pk, r->base_origin);
        bad = bad || msgpack_pack_array(&pk, r->n);
        for (uint32_t k = r->first; !bad && !rc && k < r->first + r->n; k++) {
            const crdtdb__delta_field *f = &d->fields[k];
            int value = f->kind == CRDTDB__KIND_VALUE;
            /* stamped as the entry's base (the fields of an add): the
             * short form, [path] or [path, value] */
            int as_base = r->base_kind != CRDTDB__BASE_NONE && f->hlc == r->base_hlc &&
                          f->origin == r->base_origin;
            bad = msgpack_pack_array(&pk, (size_t)(value + 1 + (as_base ? 0 : 2)));
            if (!bad)
                rc = pack_path(&pk, f->path, f->path_len, key);
            bad = bad || (!as_base && (msgpack_pack_uint64(&pk, f->hlc - base) ||
                                       msgpack_pack_uint32(&pk, f->origin))) ||
                  (value && msgpack_pack_bin_with_body(&pk, f->val, f->val_len));
        }
    }
    free(key);
    bad = bad || msgpack_pack_array(&pk, d->nfp);
    for (uint32_t i = 0; !bad && i < d->nfp; i++)
        bad = msgpack_pack_array(&pk, 2) || msgpack_pack_uint64(&pk, d->fp_seq[i]) ||
              msgpack_pack_bin_with_body(&pk, d->fp_hash[i], CRDTDB__FP_BYTES);
    bad = bad || (d->recipient ? msgpack_pack_bin_with_body(&pk, d->recipient,
                                                             CRDTDB_REPLICA_ID_BYTES)
                               : msgpack_pack_nil(&pk));
    return rc ? rc : bad ? CRDTDB_ENOMEM : 0;
}

int crdtdb__delta_encode(const crdtdb__delta *d, const uint8_t *sk,
                         crdtdb_buf *out)
{
    crdtdb_buf body = CRDTDB_BUF_INIT;
    int rc = encode_body(d, &body);
    uint8_t sig[crypto_sign_BYTES];
    if (!rc)
        crypto_sign_detached(sig, NULL, body.data, body.len, sk);
    out->len = 0;
    msgpack_packer pk;
    msgpack_packer_init(&pk, out, crdtdb__buf_write_cb);
    if (!rc && (msgpack_pack_array(&pk, 3) || msgpack_pack_uint8(&pk, CRDTDB__DELTA_VERSION) ||
                msgpack_pack_bin_with_body(&pk, body.data, body.len) ||
                msgpack_pack_bin_with_body(&pk, sig, sizeof sig)))
        rc = CRDTDB_ENOMEM;
    crdtdb_buf_free(&body);
    return rc;
}

/* ------------------------------------------------------------- decode */

/* Reads a msgpack bin/str length header of the given family at p. */
static int read_len(const uint8_t *p, size_t left, int bin, size_t *hdr, uint64_t *n)
{
    if (left < 1)
        return -1;
    uint8_t b = p[0];
    unsigned w;
    if (!bin && (b & 0xe0) == 0xa0) {
        *hdr = 1;
        *n = b & 0x1f;
        return 0;
    }
    if (bin && b >= 0xc4 && b <= 0xc6)
        w = 1u << (b - 0xc4);
    else if (!bin && b >= 0xd9 && b <= 0xdb)
        w = 1u << (b - 0xd9);
    else
        return -1;
    if (left < 1 + w)
        return -1;
    uint64_t v = 0;
    for (unsigned i = 0; i < w; i++)
        v = v << 8 | p[1 + i];
    *hdr = 1 + w;
    *n = v;
    return 0;
}

int crdtdb__delta_frame(const uint8_t *data, size_t len, size_t *frame_len,
                        const uint8_t **body, size_t *body_len,
                        const uint8_t **sig)
{
    /* [version, bin body, bin sig]: read by hand so that a frame can be
     * split off a stream of concatenated deltas without parsing the body */
    if (len < 2 || data[0] != 0x93)
        return CRDTDB_EBADVALUE;
    if (data[1] > 0x7f)
        return CRDTDB_EBADVALUE;
    if (data[1] < CRDTDB__DELTA_VERSION_MIN || data[1] > CRDTDB__DELTA_VERSION)
        return CRDTDB_EVERSION;
    size_t off = 2, hdr;
    uint64_t n;
    if (read_len(data + off, len - off, 1, &hdr, &n) || n > len - off - hdr)
        return CRDTDB_EBADVALUE;
    *body = data + off + hdr;
    *body_len = (size_t)n;
    off += hdr + (size_t)n;
    if (read_len(data + off, len - off, 1, &hdr, &n) || n > len - off - hdr)
        return CRDTDB_EBADVALUE;
    *sig = n == crypto_sign_BYTES ? data + off + hdr : NULL;
    *frame_len = off + hdr + (size_t)n;
    return 0;
}

int crdtdb__delta_peek(const uint8_t *data, size_t len, crdtdb__delta_head *h)
{
    const uint8_t *body, *sig;
    size_t body_len;
    memset(h, 0, sizeof *h);
    int rc = crdtdb__delta_frame(data, len, &h->frame_len, &body, &body_len, &sig);
    if (rc)
        return rc;
    /* body = [db_id, sender, ...]: a fixarray header, then a str of any width */
    size_t hdr;
    uint64_t n;
    if (body_len < 2 || (body[0] & 0xf0) != 0x90 || read_len(body + 1, body_len - 1, 0, &hdr, &n))
        return CRDTDB_EBADVALUE;
    if (n > CRDTDB_ID_MAX)
        return CRDTDB_ETOOBIG;
    if (n == 0 || n > body_len - 1 - hdr)
        return CRDTDB_EBADVALUE;
    const uint8_t *id = body + 1 + hdr;
    /* the rule the stores apply to ids: UTF-8, no NUL or control characters */
    if (!crdtdb__utf8_valid(id, (size_t)n))
        return CRDTDB_EBADVALUE;
    for (size_t i = 0; i < n; i++)
        if (id[i] < 0x20 || id[i] == 0x7f)
            return CRDTDB_EBADVALUE;
    h->db_id = (const char *)id;
    h->db_id_len = (size_t)n;
    /* then the signer: bin 8 of 32 bytes (absent: left NULL) */
    size_t at = 1 + hdr + (size_t)n;
    if (body_len >= at + 2 + CRDTDB_REPLICA_ID_BYTES && body[at] == 0xc4 &&
        body[at + 1] == CRDTDB_REPLICA_ID_BYTES)
        h->signer = body + at + 2;
    return 0;
}

int crdtdb_delta_need(const uint8_t *data, size_t len, size_t *need)
{
    if ((!data && len) || !need)
        return CRDTDB_EINVAL;
    /* [version, bin body, bin sig], as crdtdb__delta_frame reads it */
    *need = 3;
    if (len && data[0] != 0x93)
        return CRDTDB_EBADVALUE;
    if (len >= 2 && data[1] > 0x7f)
        return CRDTDB_EBADVALUE;
    if (len >= 2 && (data[1] < CRDTDB__DELTA_VERSION_MIN || data[1] > CRDTDB__DELTA_VERSION))
        return CRDTDB_EVERSION;
    if (len < 3)
        return 0;
    if (data[2] < 0xc4 || data[2] > 0xc6)
        return CRDTDB_EBADVALUE;
    size_t hdr;
    uint64_t n;
    if (read_len(data + 2, len - 2, 1, &hdr, &n)) { /* the length runs past len */
        *need = 2 + 1 + ((size_t)1 << (data[2] - 0xc4));
        return 0;
    }
    *need = 2 + hdr + (size_t)n + 2 + crypto_sign_BYTES; /* bin8 of 64 */
    return 0;
}

int crdtdb_delta_peek(const uint8_t *data, size_t len, size_t *delta_len,
                      char db_id[CRDTDB_ID_MAX + 1])
{
    return crdtdb_delta_peek_sender(data, len, delta_len, db_id, NULL);
}

int crdtdb_delta_peek_sender(const uint8_t *data, size_t len, size_t *delta_len,
                             char db_id[CRDTDB_ID_MAX + 1],
                             uint8_t sender[CRDTDB_REPLICA_ID_BYTES])
{
    if (!data || !delta_len || !db_id)
        return CRDTDB_EINVAL;
    crdtdb__delta_head h;
    int rc = crdtdb__delta_peek(data, len, &h);
    if (rc)
        return rc;
    if (sender && !h.signer)
        return CRDTDB_EBADVALUE;
    *delta_len = h.frame_len;
    memcpy(db_id, h.db_id, h.db_id_len);
    db_id[h.db_id_len] = 0;
    if (sender)
        memcpy(sender, h.signer, CRDTDB_REPLICA_ID_BYTES);
    return 0;
}

/* The sender key inside a body [db_id, sender, ...], read without parsing
 * the rest; NULL if the body does not start that way. */
static const uint8_t *sender_of(const uint8_t *body, size_t len)
{
    size_t hdr;
    uint64_t n;
    if (len < 1 || body[0] != 0x90 + BODY_FIELDS ||
        read_len(body + 1, len - 1, 0, &hdr, &n) || n > len - 1 - hdr)
        return NULL;
    size_t off = 1 + hdr + (size_t)n;
    if (len - off < 2 + CRDTDB_REPLICA_ID_BYTES || body[off] != 0xc4 ||
        body[off + 1] != CRDTDB_REPLICA_ID_BYTES)
        return NULL;
    return body + off + 2;
}

static int is_uint(const msgpack_object *o)
{
    return o->type == MSGPACK_OBJECT_POSITIVE_INTEGER;
}

static int str_ok(const msgpack_object *o, int strict)
{
    if (o->type != MSGPACK_OBJECT_STR || o->via.str.size == 0 ||
        o->via.str.size > CRDTDB_ID_MAX ||
        !crdtdb__utf8_valid((const uint8_t *)o->via.str.ptr, o->via.str.size))
        return 0;
    if (strict)
        for (uint32_t i = 0; i < o->via.str.size; i++)
            if ((uint8_t)o->via.str.ptr[i] < 0x20 || o->via.str.ptr[i] == 0x7f)
                return 0;
    return 1;
}

/* Stamp = base + offset, refusing overflow. */
static int stamp(uint64_t base, const msgpack_object *off, uint64_t *out)
{
    if (!is_uint(off) || off->via.u64 > UINT64_MAX - base)
        return -1;
    *out = base + off->via.u64;
    return 0;
}

/* Encodes a wire path (a string, or an array of strings) into d->paths and
 * returns its depth, or a negative error. */
static int decode_path(crdtdb__delta *d, const msgpack_object *o, size_t *off,
                       uint32_t *len, const crdtdb__limits *lim, crdtdb__err *e)
{
    const msgpack_object *segs = o;
    uint32_t n = 1;
    if (o->type == MSGPACK_OBJECT_ARRAY) {
        segs = o->via.array.ptr;
        n = o->via.array.size;
    }
    if (n == 0)
        return crdtdb__err_set(e, CRDTDB_EBADVALUE, "empty field path");
    if (n > lim->max_depth)
        return crdtdb__err_set(e, CRDTDB_ETOODEEP, "field path deeper than %u",
                               lim->max_depth);
    *off = d->paths.len;
    for (uint32_t i = 0; i < n; i++) {
        const msgpack_object *s = &segs[i];
        if (s->type != MSGPACK_OBJECT_STR ||
            !crdtdb__utf8_valid((const uint8_t *)s->via.str.ptr, s->via.str.size))
            return crdtdb__err_set(e, CRDTDB_EBADVALUE,
                                   "field path keys must be UTF-8 strings");
        if (crdtdb__path_push(&d->paths, s->via.str.ptr, s->via.str.size))
            return CRDTDB_ENOMEM;
    }
    size_t plen = d->paths.len - *off;
    if (plen > lim->max_path_bytes)
        return crdtdb__err_set(e, CRDTDB_ETOOBIG,
                               "field path of %zu bytes exceeds the limit of %zu",
                               plen, lim->max_path_bytes);
    *len = (uint32_t)plen;
    return (int)n;
}

/* A field of record entry r: [path, hlc, origin, value?], or in version 2
 * when the entry has a base, [path, value?] stamped as that base. */
static int decode_field(crdtdb__delta *d, const msgpack_object *o, uint64_t base,
                        const crdtdb__delta_rec *r, int short_ok,
                        const crdtdb__limits *lim, crdtdb__err *e)
{
    uint32_t size = o->type == MSGPACK_OBJECT_ARRAY ? o->via.array.size : 0;
    int full = size == 3 || size == 4;
    if (!full && !(short_ok && r->base_kind != CRDTDB__BASE_NONE && (size == 1 || size == 2)))
        return crdtdb__err_set(e, CRDTDB_EBADVALUE, "a field is [path, hlc, origin, value?]%s",
                               short_ok ? ", or [path, value?] under a base" : "");
    const msgpack_object *a = o->via.array.ptr;
    crdtdb__delta_field f;
    memset(&f, 0, sizeof f);
    size_t off = 0;
    int depth = decode_path(d, &a[0], &off, &f.path_len, lim, e);
    if (depth < 0)
        return depth;
    if (full) {
        if (stamp(base, &a[1], &f.hlc) || !is_uint(&a[2]) || a[2].via.u64 >= d->norigins)
            return crdtdb__err_set(e, CRDTDB_EBADVALUE, "bad field stamp or origin");
        f.origin = (uint32_t)a[2].via.u64;
    } else {
        f.hlc = r->base_hlc;
        f.origin = r->base_origin;
    }
    f.path = (const uint8_t *)(uintptr_t)off; /* fixed up once paths stop moving */
    const msgpack_object *v = size == 4 ? &a[3] : size == 2 ? &a[1] : NULL;
    if (!v) {
        f.kind = CRDTDB__KIND_MAP;
        if ((unsigned)depth + 1 > lim->max_depth)
            return crdtdb__err_set(e, CRDTDB_ETOODEEP, "field nested deeper than %u",
                                   lim->max_depth);
    } else {
        if (v->type != MSGPACK_OBJECT_BIN)
            return crdtdb__err_set(e, CRDTDB_EBADVALUE, "a field value is msgpack in bin");
        f.kind = CRDTDB__KIND_VALUE;
        f.val = (const uint8_t *)v->via.bin.ptr;
        f.val_len = v->via.bin.size;
        /* maps are never values: they travel as their leaves */
        if (f.val_len && ((f.val[0] & 0xf0) == 0x80 || f.val[0] == 0xde || f.val[0] == 0xdf))
            return crdtdb__err_set(e, CRDTDB_EBADVALUE, "a field value may not be a map");
        if (f.val_len > lim->max_value_size)
            return crdtdb__err_set(e, CRDTDB_ETOOBIG,
                                   "field value of %u bytes exceeds the limit of %zu",
                                   f.val_len, lim->max_value_size);
        const char *why;
        int rc = crdtdb__mp_check(f.val, f.val_len, lim->max_depth - (unsigned)depth, &why);
        if (rc == CRDTDB_ETOODEEP)
            return crdtdb__err_set(e, rc, "field nested deeper than %u", lim->max_depth);
        if (rc)
            return crdtdb__err_set(e, rc, "field value: %s", why);
    }
    return crdtdb__delta_add_field(d, &f) ? CRDTDB_ENOMEM : 0;
}

static int decode_rec(crdtdb__delta *d, const msgpack_object *o, uint64_t base,
                      int short_ok, const crdtdb__limits *lim, crdtdb__err *e)
{
    if (o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size != 4)
        return crdtdb__err_set(e, CRDTDB_EBADVALUE, "a record is [coll, id, base, fields]");
    const msgpack_object *a = o->via.array.ptr;
    crdtdb__delta_rec r;
    memset(&r, 0, sizeof r);
    if (!is_uint(&a[0]) || a[0].via.u64 >= d->ncolls)
        return crdtdb__err_set(e, CRDTDB_EBADVALUE, "bad collection index");
    r.coll = (uint32_t)a[0].via.u64;
    if (!str_ok(&a[1], 0))
        return crdtdb__err_set(e, CRDTDB_EBADID, "invalid record id");
    r.id.p = a[1].via.str.ptr;
    r.id.n = a[1].via.str.size;
    if (a[2].type == MSGPACK_OBJECT_ARRAY) {
        const msgpack_object *b = a[2].via.array.ptr;
        if (a[2].via.array.size != 3 || !is_uint(&b[0]) ||
            (b[0].via.u64 != CRDTDB__BASE_ADD && b[0].via.u64 != CRDTDB__BASE_REMOVE) ||
            stamp(base, &b[1], &r.base_hlc) || !is_uint(&b[2]) ||
            b[2].via.u64 >= d->norigins)
            return crdtdb__err_set(e, CRDTDB_EBADVALUE, "bad record base");
        r.base_kind = (uint8_t)b[0].via.u64;
        r.base_origin = (uint32_t)b[2].via.u64;
    } else if (a[2].type != MSGPACK_OBJECT_NIL) {
        return crdtdb__err_set(e, CRDTDB_EBADVALUE, "bad record base");
    }
    if (a[3].type != MSGPACK_OBJECT_ARRAY)
        return crdtdb__err_set(e, CRDTDB_EBADVALUE, "record fields must be an array");
    if (crdtdb__delta_add_rec(d, &r))
        return CRDTDB_ENOMEM;
    for (uint32_t i = 0; i < a[3].via.array.size; i++) {
        int rc = decode_field(d, &a[3].via.array.ptr[i], base, &r, short_ok, lim, e);
        if (rc)
            return rc;
    }
    return 0;
}

static int decode_body(crdtdb__delta *d, const msgpack_object *o, int short_ok,
                       const crdtdb__limits *lim, crdtdb__err *e)
{
    if (o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size != BODY_FIELDS)
        return crdtdb__err_set(e, CRDTDB_EBADVALUE, "delta body is not a %d-array",
                               BODY_FIELDS);
    const msgpack_object *a = o->via.array.ptr;
    if (!str_ok(&a[0], 1))
        return crdtdb__err_set(e, CRDTDB_EBADID, "invalid database id in delta");
    d->db_id.p = a[0].via.str.ptr;
    d->db_id.n = a[0].via.str.size;
    if (!is_uint(&a[2]) || !is_uint(&a[3]) || a[2].via.u64 > a[3].via.u64 ||
        (a[4].type != MSGPACK_OBJECT_NIL && !is_uint(&a[4])) || !is_uint(&a[5]) ||
        a[6].type != MSGPACK_OBJECT_ARRAY || a[7].type != MSGPACK_OBJECT_ARRAY ||
        a[8].type != MSGPACK_OBJECT_ARRAY || a[9].type != MSGPACK_OBJECT_ARRAY ||
        a[9].via.array.size > CRDTDB__DELTA_FP_MAX)
        return crdtdb__err_set(e, CRDTDB_EBADVALUE, "malformed delta header");
    for (uint32_t i = 0; i < a[9].via.array.size; i++) {
        const msgpack_object *f = &a[9].via.array.ptr[i];
        if (f->type != MSGPACK_OBJECT_ARRAY || f->via.array.size != 2 ||
            !is_uint(&f->via.array.ptr[0]) || f->via.array.ptr[1].type != MSGPACK_OBJECT_BIN ||
            f->via.array.ptr[1].via.bin.size != CRDTDB__FP_BYTES)
            return crdtdb__err_set(e, CRDTDB_EBADVALUE, "malformed history fingerprint");
        d->fp_seq[d->nfp] = f->via.array.ptr[0].via.u64;
        d->fp_hash[d->nfp++] = (const uint8_t *)f->via.array.ptr[1].via.bin.ptr;
    }
    d->from = a[2].via.u64;
    d->to = a[3].via.u64;
    d->has_ack = is_uint(&a[4]);
    d->ack = d->has_ack ? a[4].via.u64 : 0;
    if (a[10].type == MSGPACK_OBJECT_BIN && a[10].via.bin.size == CRDTDB_REPLICA_ID_BYTES)
        d->recipient = (const uint8_t *)a[10].via.bin.ptr;
    else if (a[10].type != MSGPACK_OBJECT_NIL)
        return crdtdb__err_set(e, CRDTDB_EBADVALUE, "the recipient is a 32-byte bin or nil");
    if (d->has_ack && !d->recipient)
        return crdtdb__err_set(e, CRDTDB_EBADVALUE, "an ack needs a recipient");
    uint64_t base = a[5].via.u64;
    for (uint32_t i = 0; i < a[6].via.array.size; i++) {
        const msgpack_object *c = &a[6].via.array.ptr[i];
        if (!str_ok(c, 1))
            return crdtdb__err_set(e, CRDTDB_EBADID, "invalid collection name in delta");
        if (grow(&d->colls, &d->colls_cap, d->ncolls, sizeof *d->colls))
            return CRDTDB_ENOMEM;
        d->colls[d->ncolls].p = c->via.str.ptr;
        d->colls[d->ncolls++].n = c->via.str.size;
    }
    for (uint32_t i = 0; i < a[7].via.array.size; i++) {
        const msgpack_object *k = &a[7].via.array.ptr[i];
        if (k->type != MSGPACK_OBJECT_BIN || k->via.bin.size != CRDTDB_REPLICA_ID_BYTES)
            return crdtdb__err_set(e, CRDTDB_EBADVALUE, "replica ids are 32-byte bins");
        if (grow(&d->origins, &d->origins_cap, d->norigins, sizeof *d->origins))
            return CRDTDB_ENOMEM;
        d->origins[d->norigins++] = (const uint8_t *)k->via.bin.ptr;
    }
    uint32_t max_groups = lim->max_delta_groups ? lim->max_delta_groups : CRDTDB__DELTA_GROUPS;
    if (a[8].via.array.size > max_groups) /* each costs the receiver a record load */
        return crdtdb__err_set(e, CRDTDB_ETOOBIG, "delta holds %u record groups, over the limit "
                               "of %u", a[8].via.array.size, max_groups);
    for (uint32_t i = 0; i < a[8].via.array.size; i++) {
        int rc = decode_rec(d, &a[8].via.array.ptr[i], base, short_ok, lim, e);
        if (rc)
            return rc;
    }
    /* paths were appended to one buffer that may have moved: fix up */
    for (uint32_t i = 0; i < d->nfields; i++)
        d->fields[i].path = d->paths.data + (uintptr_t)d->fields[i].path;
    return 0;
}

int crdtdb__delta_decode(crdtdb__delta *d, const uint8_t *data, size_t len,
                         size_t max_delta, const crdtdb__limits *lim,
                         crdtdb__err *e)
{
    crdtdb__delta_reset(d);
    if (len > max_delta)
        return crdtdb__err_set(e, CRDTDB_ETOOBIG,
                               "delta of %zu bytes exceeds the limit of %zu", len,
                               max_delta);
    size_t frame;
    const uint8_t *body, *sig;
    size_t body_len;
    int rc = crdtdb__delta_frame(data, len, &frame, &body, &body_len, &sig);
    if (rc == CRDTDB_EVERSION)
        return crdtdb__err_set(e, rc, "unsupported delta format version %u", data[1]);
    if (rc || frame != len)
        return crdtdb__err_set(e, CRDTDB_EBADVALUE, rc ? "malformed delta envelope"
                                                       : "trailing bytes after delta");
    if (!sig)
        return crdtdb__err_set(e, CRDTDB_EBADSIG, "delta has no 64-byte signature");
    /* Verify first: nothing in the body is parsed before the signature
     * matches.  The sender key sits at a fixed place, [db_id, sender, ...]. */
    d->sender = sender_of(body, body_len);
    if (!d->sender)
        return crdtdb__err_set(e, CRDTDB_EBADVALUE, "malformed delta header");
    if (crypto_sign_verify_detached(sig, body, body_len, d->sender) != 0)
        return crdtdb__err_set(e, CRDTDB_EBADSIG,
                               "delta signature does not match its body and sender");
    const char *why;
    if ((rc = crdtdb__mp_check(body, body_len, BODY_DEPTH, &why)))
        return crdtdb__err_set(e, CRDTDB_EBADVALUE, "delta body: %s", why);
    if (!d->zone_ready) {
        if (!msgpack_zone_init(&d->zone, 8192))
            return CRDTDB_ENOMEM;
        d->zone_ready = 1;
    }
    msgpack_object o;
    size_t off = 0;
    if (msgpack_unpack((const char *)body, body_len, &off, &d->zone, &o) !=
        MSGPACK_UNPACK_SUCCESS)
        return crdtdb__err_set(e, CRDTDB_EBADVALUE, "malformed delta body");
    rc = decode_body(d, &o, data[1] >= 2 /* short fields since version 2 */, lim, e);
    /* Nothing decoded points into the zone (strings and values point into
     * data): let its objects go now, up to 24 bytes per byte of the body,
     * rather than at the next decode. */
    msgpack_zone_clear(&d->zone);
    return rc;
}
