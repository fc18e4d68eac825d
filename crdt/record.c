/* Per-record LWW registers: merge rules and the stored blob (record.h). */
#include "crdt/record.h"

#include <msgpack.h>
#include <stdlib.h>
#include <string.h>

#include "crdt/array.h"
#include "crdt/buf.h"
#include "crdt/hlc.h"
#include "crdt/path.h"

/* 3: a leaf's stamp and sequence as zigzag varint differences from the
 * base's (0 and 0 when there is none); 2: both absolute (u64, varint);
 * 1: as 2, without the trailing vis_seq, shown_seq.  All three decode. */
#define BLOB_VERSION 4 /* 4: origins by number (record.h); 3: by key */
#define KEY_BYTES CRDTDB_REPLICA_ID_BYTES

void crdtdb__record_init(crdtdb__record *r) { memset(r, 0, sizeof *r); }

void crdtdb__record_free(crdtdb__record *r)
{
    if (!r)
        return;
    free(r->origins);
    crdtdb__keyidx_free(&r->oidx);
    free(r->leaves);
    free(r->dead);
    memset(r, 0, sizeof *r);
}

void crdtdb__record_clear(crdtdb__record *r)
{
    r->base_kind = CRDTDB__BASE_NONE;
    r->base_origin = 0;
    r->base_hlc = r->base_seq = 0;
    r->vis_seq = r->shown_seq = 0;
    r->norigins = r->nleaves = r->ndead = 0;
    crdtdb__keyidx_clear(&r->oidx);
    r->visible = NULL;
    r->visible_len = 0;
}

static int mark_dead(crdtdb__record *r, uint64_t seq)
{
    if (seq == 0)
        return 0; /* never numbered: nothing in the change log */
    if (crdtdb__array_grow(&r->dead, &r->dead_cap, r->ndead, sizeof *r->dead, 8))
        return CRDTDB_ENOMEM;
    r->dead[r->ndead++] = seq;
    return 0;
}

int crdtdb__record_origin(crdtdb__record *r, const uint8_t *key,
                          uint32_t *idx)
{
    int found = crdtdb__keyidx_find(&r->oidx, r->origins, r->norigins, key, idx);
    if (found)
        return found < 0 ? found : 0;
    if (crdtdb__array_grow(&r->origins, &r->origins_cap, r->norigins, sizeof *r->origins, 8))
        return CRDTDB_ENOMEM;
    r->origins[r->norigins] = key;
    *idx = r->norigins++;
    return 0;
}

int crdtdb__record_stamp_cmp(const crdtdb__record *r, uint64_t ha,
                             uint32_t oa, uint64_t hb, uint32_t ob)
{
    if (ha != hb)
        return ha < hb ? -1 : 1;
    if (oa == ob)
        return 0;
    return memcmp(r->origins[oa], r->origins[ob], KEY_BYTES);
}

static int leaf_cmp_stamp(const crdtdb__record *r, const crdtdb__leaf *a,
                          const crdtdb__leaf *b)
{
    return crdtdb__record_stamp_cmp(r, a->hlc, a->origin, b->hlc, b->origin);
}

static int path_cmp(const uint8_t *a, size_t alen, const uint8_t *b,
                    size_t blen)
{
    size_t n = alen < blen ? alen : blen;
    int c = n ? memcmp(a, b, n) : 0;
    if (c)
        return c;
    return alen < blen ? -1 : alen > blen;
}

/* First index whose path is >= (path, len). */
static uint32_t lower_bound(const crdtdb__record *r, const uint8_t *path,
                            size_t len)
{
    uint32_t lo = 0, hi = r->nleaves;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        const crdtdb__leaf *l = &r->leaves[mid];
        if (path_cmp(l->path, l->path_len, path, len) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

long crdtdb__record_find(const crdtdb__record *r, const uint8_t *path,
                         size_t len)
{
    uint32_t i = lower_bound(r, path, len);
    if (i < r->nleaves && r->leaves[i].path_len == len &&
        memcmp(r->leaves[i].path, path, len) == 0)
        return (long)i;
    return -1;
}

int crdtdb__record_is_map_at(const crdtdb__record *r, const uint8_t *path,
                             size_t len)
{
    uint32_t i = lower_bound(r, path, len);
    if (i >= r->nleaves)
        return 0;
    const crdtdb__leaf *l = &r->leaves[i];
    if (l->path_len == len && memcmp(l->path, path, len) == 0) {
        if (l->kind == CRDTDB__KIND_MAP)
            return 1;
        i++;
    }
    return i < r->nleaves &&
           crdtdb__path_is_ancestor(path, len, r->leaves[i].path,
                                    r->leaves[i].path_len);
}

/* Drops leaves [i, i + n) that are known dead. */
static int drop_range(crdtdb__record *r, uint32_t i, uint32_t n)
{
    for (uint32_t k = i; k < i + n; k++)
        if (mark_dead(r, r->leaves[k].seq))
            return CRDTDB_ENOMEM;
    memmove(&r->leaves[i], &r->leaves[i + n],
            (size_t)(r->nleaves - i - n) * sizeof *r->leaves);
    r->nleaves -= n;
    return 0;
}

int crdtdb__record_put_base(crdtdb__record *r, uint8_t kind, uint64_t hlc,
                            uint32_t origin, uint64_t seq)
{
    if (r->base_kind != CRDTDB__BASE_NONE) {
        int c = crdtdb__record_stamp_cmp(r, hlc, origin, r->base_hlc, r->base_origin);
        if (c == 0 && kind != r->base_kind)
            return CRDTDB_EFORGED; /* one stamp, both add and remove */
        if (c <= 0)
            return 0;
    }
    if (r->base_kind != CRDTDB__BASE_NONE && mark_dead(r, r->base_seq))
        return CRDTDB_ENOMEM;
    r->base_kind = kind;
    r->base_hlc = hlc;
    r->base_origin = origin;
    r->base_seq = seq;
    /* Every leaf older than the new base is dead; compact in place. */
    uint32_t w = 0;
    for (uint32_t i = 0; i < r->nleaves; i++) {
        crdtdb__leaf *l = &r->leaves[i];
        if (crdtdb__record_stamp_cmp(r, l->hlc, l->origin, hlc, origin) < 0) {
            if (mark_dead(r, l->seq))
                return CRDTDB_ENOMEM;
        } else {
            r->leaves[w++] = *l;
        }
    }
    r->nleaves = w;
    return 1;
}

/* 1 if two registers under one stamp say different things. */
static int conflicting(const crdtdb__leaf *a, const crdtdb__leaf *b)
{
    return a->kind != b->kind || a->val_len != b->val_len ||
           (a->val_len && memcmp(a->val, b->val, a->val_len) != 0);
}

int crdtdb__record_put_leaf(crdtdb__record *r, const crdtdb__leaf *in)
{
    if (r->base_kind != CRDTDB__BASE_NONE &&
        crdtdb__record_stamp_cmp(r, in->hlc, in->origin, r->base_hlc,
                                 r->base_origin) < 0)
        return 0; /* older than the last add/remove */

    uint32_t pos = lower_bound(r, in->path, in->path_len);
    int exists = pos < r->nleaves && r->leaves[pos].path_len == in->path_len &&
                 memcmp(r->leaves[pos].path, in->path, in->path_len) == 0;
    if (exists) {
        int c = leaf_cmp_stamp(r, in, &r->leaves[pos]);
        if (c == 0 && conflicting(in, &r->leaves[pos]))
            return CRDTDB_EFORGED; /* one stamp, two values: equivocation */
        if (c <= 0)
            return 0;
    }

    /* A newer write at an ancestor replaced the subtree: dead on arrival.
     * Ancestors sort before pos; each is found by its own search (depth is
     * bounded by the caller's limits). */
    size_t off = 0, end;
    while (off < in->path_len) {
        if (crdtdb__path_next(in->path, in->path_len, &off, &end))
            return CRDTDB_ECORRUPT;
        if (off == in->path_len)
            break; /* the leaf itself */
        long a = crdtdb__record_find(r, in->path, off);
        if (a >= 0 && leaf_cmp_stamp(r, &r->leaves[a], in) > 0)
            return 0;
    }

    /* Older descendants die; newer ones stay and make this read as a map
     * (the rendering and is_map_at see them; the register keeps its value,
     * so a repeat of the same write compares equal). */
    uint32_t i = pos + (exists ? 1 : 0);
    while (i < r->nleaves &&
           crdtdb__path_is_ancestor(in->path, in->path_len, r->leaves[i].path,
                                    r->leaves[i].path_len)) {
        if (leaf_cmp_stamp(r, &r->leaves[i], in) < 0) {
            if (drop_range(r, i, 1))
                return CRDTDB_ENOMEM;
        } else {
            i++;
        }
    }
    if (exists) {
        if (mark_dead(r, r->leaves[pos].seq))
            return CRDTDB_ENOMEM;
        r->leaves[pos] = *in;
        return 1;
    }
    if (crdtdb__array_grow(&r->leaves, &r->leaves_cap, r->nleaves, sizeof *r->leaves, 8))
        return CRDTDB_ENOMEM;
    memmove(&r->leaves[pos + 1], &r->leaves[pos],
            (size_t)(r->nleaves - pos) * sizeof *r->leaves);
    r->leaves[pos] = *in;
    r->nleaves++;
    return 1;
}

static int leaf_path_cmp(const void *a, const void *b)
{
    const crdtdb__leaf *x = a, *y = b;
    return path_cmp(x->path, x->path_len, y->path, y->path_len);
}

/* Merges one leaf in path order into a record being rebuilt; a stored leaf
 * (numbered) that does not survive goes to `dead`. */
static int put_rebuilt(crdtdb__record *r, const crdtdb__leaf *l, size_t *won)
{
    int rc = crdtdb__record_put_leaf(r, l);
    if (rc < 0)
        return rc;
    if (rc == 0)
        return mark_dead(r, l->seq);
    if (l->seq == 0)
        (*won)++;
    return 0;
}

int crdtdb__record_put_many(crdtdb__record *r, crdtdb__leaf *in, uint32_t n, size_t *won)
{
    *won = 0;
    if (n <= 8) { /* few: in place, each a search and a short move */
        for (uint32_t i = 0; i < n; i++) {
            int rc = crdtdb__record_put_leaf(r, &in[i]);
            if (rc < 0)
                return rc;
            *won += (size_t)rc;
        }
        return 0;
    }
    /* Many: rebuild the leaves in path order, so every leaf lands at the
     * end of the array (no moves) and each is judged against its
     * ancestors, which sort before it.  Merging is order-free, so this
     * ends where n single puts would. */
    qsort(in, n, sizeof *in, leaf_path_cmp);
    if ((uint64_t)r->nleaves + n >= UINT32_MAX / 2)
        return CRDTDB_ENOMEM;
    crdtdb__leaf *old = r->leaves;
    uint32_t nold = r->nleaves, cap = nold + n;
    crdtdb__leaf *fresh = malloc((size_t)cap * sizeof *fresh);
    if (!fresh)
        return CRDTDB_ENOMEM;
    r->leaves = fresh;
    r->leaves_cap = cap;
    r->nleaves = 0;
    uint32_t i = 0, j = 0;
    int rc = 0;
    while (!rc && (i < nold || j < n)) {
        /* on equal paths the stored leaf first: the new one replaces it */
        int take_old = j == n || (i < nold && path_cmp(old[i].path, old[i].path_len, in[j].path,
                                                       in[j].path_len) <= 0);
        rc = put_rebuilt(r, take_old ? &old[i++] : &in[j++], won);
    }
    free(old);
    return rc;
}

int crdtdb__record_drop_upto(crdtdb__record *r, uint64_t upto)
{
    if (r->base_kind != CRDTDB__BASE_NONE && r->base_seq && r->base_seq <= upto) {
        if (mark_dead(r, r->base_seq))
            return CRDTDB_ENOMEM;
        r->base_kind = CRDTDB__BASE_NONE;
        r->base_hlc = r->base_seq = 0;
        r->base_origin = 0;
    }
    uint32_t w = 0;
    for (uint32_t i = 0; i < r->nleaves; i++) {
        crdtdb__leaf *l = &r->leaves[i];
        if (l->seq && l->seq <= upto) {
            if (mark_dead(r, l->seq))
                return CRDTDB_ENOMEM;
        } else {
            r->leaves[w++] = *l;
        }
    }
    r->nleaves = w;
    return 0;
}

/* ------------------------------------------------------------ rendering */

/* Renders the children of prefix p (length plen) found in leaves [i, j) as
 * one msgpack map.  Leaves in the range all lie strictly below p. */
static int render_map(const crdtdb__record *r, msgpack_packer *pk,
                      crdtdb_buf *out, uint32_t i, uint32_t j, size_t plen,
                      uint8_t *keybuf, uint32_t *val_off)
{
    /* First pass: count the distinct child keys for the map header. */
    uint32_t n = 0;
    for (uint32_t k = i; k < j;) {
        size_t off = plen, end;
        const crdtdb__leaf *l = &r->leaves[k];
        if (crdtdb__path_next(l->path, l->path_len, &off, &end))
            return CRDTDB_ECORRUPT;
        uint32_t g = k + 1;
        while (g < j && crdtdb__path_is_ancestor(l->path, off, r->leaves[g].path,
                                                 r->leaves[g].path_len) )
            g++;
        /* a leaf exactly at the child is also part of its group */
        n++;
        k = g;
    }
    if (msgpack_pack_map(pk, n))
        return CRDTDB_ENOMEM;
    for (uint32_t k = i; k < j;) {
        size_t off = plen, end;
        const crdtdb__leaf *l = &r->leaves[k];
        if (crdtdb__path_next(l->path, l->path_len, &off, &end))
            return CRDTDB_ECORRUPT;
        size_t klen = crdtdb__path_unescape(l->path, plen, end, keybuf);
        if (msgpack_pack_str(pk, klen) || msgpack_pack_str_body(pk, keybuf, klen))
            return CRDTDB_ENOMEM;
        uint32_t g = k + 1;
        while (g < j && crdtdb__path_is_ancestor(l->path, off, r->leaves[g].path,
                                                 r->leaves[g].path_len))
            g++;
        int at_child = l->path_len == off;
        uint32_t below = at_child ? k + 1 : k;
        if (at_child && l->kind == CRDTDB__KIND_VALUE && below == g) {
            if (val_off)
                val_off[k] = (uint32_t)out->len;
            if (crdtdb__buf_append(out, l->val, l->val_len))
                return CRDTDB_ENOMEM;
        } else {
            int rc = render_map(r, pk, out, below, g, off, keybuf, val_off);
            if (rc)
                return rc;
        }
        k = g;
    }
    return 0;
}

int crdtdb__record_render(const crdtdb__record *r, crdtdb_buf *out)
{
    return crdtdb__record_render_at(r, out, NULL);
}

int crdtdb__record_render_at(const crdtdb__record *r, crdtdb_buf *out, uint32_t *val_off)
{
    out->len = 0;
    if (val_off)
        for (uint32_t k = 0; k < r->nleaves; k++)
            val_off[k] = UINT32_MAX;
    if (!crdtdb__record_visible(r))
        return 0;
    size_t maxkey = 0;
    for (uint32_t k = 0; k < r->nleaves; k++)
        if (r->leaves[k].path_len > maxkey)
            maxkey = r->leaves[k].path_len;
    uint8_t stackkey[256];
    uint8_t *keybuf = maxkey <= sizeof stackkey ? stackkey : malloc(maxkey);
    if (!keybuf)
        return CRDTDB_ENOMEM;
    msgpack_packer pk;
    msgpack_packer_init(&pk, out, crdtdb__buf_write_cb);
    int rc = render_map(r, &pk, out, 0, r->nleaves, 0, keybuf, val_off);
    if (rc == 0 && out->len > UINT32_MAX)
        rc = CRDTDB_ENOMEM; /* offsets are 32-bit; limits keep records far below */
    if (keybuf != stackkey)
        free(keybuf);
    return rc;
}

/* --------------------------------------------------------------- blobs */

static uint8_t *put_varint(uint8_t *o, uint64_t v)
{
    while (v >= 0x80) {
        *o++ = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    *o++ = (uint8_t)v;
    return o;
}

static unsigned varint_len(uint64_t v)
{
    unsigned n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

/* v - ref as a signed difference, zigzagged: small either way */
static uint64_t zigzag(uint64_t v, uint64_t ref)
{
    uint64_t d = v - ref;
    return (d << 1) ^ (uint64_t)-(int64_t)(d >> 63);
}

static uint64_t unzigzag(uint64_t z, uint64_t ref)
{
    return ref + ((z >> 1) ^ (uint64_t)-(int64_t)(z & 1));
}

static uint8_t *put_u64(uint8_t *o, uint64_t v)
{
    for (int s = 56; s >= 0; s -= 8)
        *o++ = (uint8_t)(v >> s);
    return o;
}

typedef struct reader {
    const uint8_t *p, *end;
    int bad;
} reader;

static uint64_t get_varint(reader *rd)
{
    uint64_t v = 0;
    for (int s = 0; s < 64; s += 7) {
        if (rd->p >= rd->end)
            break;
        uint8_t b = *rd->p++;
        v |= (uint64_t)(b & 0x7f) << s;
        if (!(b & 0x80))
            return v;
    }
    rd->bad = 1;
    return 0;
}

static uint64_t get_u64(reader *rd)
{
    if (rd->end - rd->p < 8) {
        rd->bad = 1;
        return 0;
    }
    uint64_t v = 0;
    for (int k = 0; k < 8; k++)
        v = (v << 8) | *rd->p++;
    return v;
}

static const uint8_t *get_bytes(reader *rd, uint64_t n)
{
    if ((uint64_t)(rd->end - rd->p) < n) {
        rd->bad = 1;
        return NULL;
    }
    const uint8_t *s = rd->p;
    rd->p += n;
    return s;
}

static int read_head(reader *rd, const uint8_t **visible, size_t *vlen, int *version)
{
    if (rd->p >= rd->end)
        return CRDTDB_ECORRUPT;
    *version = *rd->p++;
    if (*version < 1 || *version > BLOB_VERSION)
        return CRDTDB_EVERSION;
    uint64_t n = get_varint(rd);
    *visible = get_bytes(rd, n);
    *vlen = (size_t)n;
    return rd->bad ? CRDTDB_ECORRUPT : 0;
}

int crdtdb__record_blob_visible(const uint8_t *blob, size_t len,
                                const uint8_t **visible, size_t *vlen)
{
    reader rd = {blob, blob + len, 0};
    int version;
    return read_head(&rd, visible, vlen, &version);
}

int crdtdb__record_blob_base(const uint8_t *blob, size_t len, uint8_t *kind)
{
    reader rd = {blob, blob + len, 0};
    const uint8_t *vis;
    size_t vlen;
    int version;
    int rc = read_head(&rd, &vis, &vlen, &version);
    if (rc)
        return rc;
    const uint8_t *k = get_bytes(&rd, 1);
    if (!k || *k > CRDTDB__BASE_REMOVE)
        return CRDTDB_ECORRUPT;
    *kind = *k;
    return 0;
}

int crdtdb__record_decode(crdtdb__record *r, const uint8_t *blob, size_t len,
                          const crdtdb__origin_table *ot)
{
    crdtdb__record_clear(r);
    reader rd = {blob, blob + len, 0};
    int version;
    int rc = read_head(&rd, &r->visible, &r->visible_len, &version);
    if (rc)
        return rc;
    const uint8_t *kind = get_bytes(&rd, 1);
    if (!kind || *kind > CRDTDB__BASE_REMOVE)
        return CRDTDB_ECORRUPT;
    r->base_kind = *kind;
    if (r->base_kind != CRDTDB__BASE_NONE) {
        r->base_hlc = get_u64(&rd);
        r->base_origin = (uint32_t)get_varint(&rd);
        r->base_seq = get_varint(&rd);
    }
    uint64_t norig = get_varint(&rd);
    if (version >= 4 && !ot)
        return CRDTDB_EVERSION;
    if (rd.bad || norig > (uint64_t)(rd.end - rd.p) / (version >= 4 ? 1 : KEY_BYTES))
        return CRDTDB_ECORRUPT;
    for (uint64_t k = 0; k < norig; k++) {
        if (crdtdb__array_grow(&r->origins, &r->origins_cap, r->norigins, sizeof *r->origins, 8))
            return CRDTDB_ENOMEM;
        const uint8_t *key;
        if (version >= 4) {
            uint64_t num = get_varint(&rd);
            if (rd.bad || num == 0 || num > UINT32_MAX)
                return CRDTDB_ECORRUPT;
            int orc = CRDTDB_ECORRUPT;
            if (!(key = ot->key_of(ot->ctx, (uint32_t)num, &orc)))
                return orc;
        } else {
            key = get_bytes(&rd, KEY_BYTES);
        }
        r->origins[r->norigins++] = key;
    }
    if (r->base_kind != CRDTDB__BASE_NONE && r->base_origin >= r->norigins)
        return CRDTDB_ECORRUPT;
    uint64_t nleaves = get_varint(&rd);
    if (rd.bad || nleaves > (uint64_t)(rd.end - rd.p))
        return CRDTDB_ECORRUPT;
    int has_base = r->base_kind != CRDTDB__BASE_NONE;
    uint64_t ref_hlc = has_base ? r->base_hlc : 0, ref_seq = has_base ? r->base_seq : 0;
    for (uint64_t k = 0; k < nleaves; k++) {
        crdtdb__leaf l;
        uint64_t plen = get_varint(&rd);
        l.path = get_bytes(&rd, plen);
        l.path_len = (uint32_t)plen;
        if (version >= 4) {
            /* head: value length, whether the value lies in the rendering,
             * whether the stamp is the base's, kind */
            uint64_t head = get_varint(&rd);
            l.kind = (uint8_t)(head & 1);
            if (head & 2) {
                if (!has_base)
                    return CRDTDB_ECORRUPT;
                l.hlc = r->base_hlc;
                l.origin = r->base_origin;
            } else { /* ms and counter apart: a later write's counter is noise */
                uint64_t ms = unzigzag(get_varint(&rd), crdtdb__hlc_ms(ref_hlc));
                uint64_t ctr = get_varint(&rd);
                if (ms > UINT64_MAX >> CRDTDB__HLC_COUNTER_BITS || ctr > 0xffff)
                    return CRDTDB_ECORRUPT;
                l.hlc = crdtdb__hlc_make(ms, (uint32_t)ctr);
                l.origin = (uint32_t)get_varint(&rd);
            }
            l.seq = unzigzag(get_varint(&rd), ref_seq);
            uint64_t vl = head >> 3;
            l.val = NULL;
            l.val_len = 0;
            if (l.kind == CRDTDB__KIND_VALUE && (head & 4)) { /* stored once */
                uint64_t at = get_varint(&rd);
                if (at > r->visible_len || vl > r->visible_len - at)
                    return CRDTDB_ECORRUPT;
                l.val = r->visible + at;
                l.val_len = (uint32_t)vl;
            } else if (l.kind == CRDTDB__KIND_VALUE) {
                l.val = get_bytes(&rd, vl);
                l.val_len = (uint32_t)vl;
            } else if (vl || (head & 4)) {
                return CRDTDB_ECORRUPT;
            }
        } else if (version >= 3) { /* differences from the base's (0 when none) */
            l.hlc = unzigzag(get_varint(&rd), ref_hlc);
            l.origin = (uint32_t)get_varint(&rd);
            l.seq = unzigzag(get_varint(&rd), ref_seq);
        } else {
            l.hlc = get_u64(&rd);
            l.origin = (uint32_t)get_varint(&rd);
            l.seq = get_varint(&rd);
        }
        if (version < 4) {
            const uint8_t *kd = get_bytes(&rd, 1);
            l.kind = kd ? *kd : 0;
            l.val = NULL;
            l.val_len = 0;
            if (l.kind == CRDTDB__KIND_VALUE) {
                uint64_t vl = get_varint(&rd);
                l.val = get_bytes(&rd, vl);
                l.val_len = (uint32_t)vl;
            }
        }
        if (rd.bad || plen == 0 || plen > UINT32_MAX || l.origin >= r->norigins ||
            l.kind > CRDTDB__KIND_MAP || crdtdb__path_depth(l.path, l.path_len) < 0)
            return CRDTDB_ECORRUPT;
        if (r->nleaves &&
            path_cmp(r->leaves[r->nleaves - 1].path,
                     r->leaves[r->nleaves - 1].path_len, l.path, l.path_len) >= 0)
            return CRDTDB_ECORRUPT; /* must be strictly sorted */
        if (crdtdb__array_grow(&r->leaves, &r->leaves_cap, r->nleaves, sizeof *r->leaves, 8))
            return CRDTDB_ENOMEM;
        r->leaves[r->nleaves++] = l;
    }
    if (version >= 4) {
        r->vis_seq = unzigzag(get_varint(&rd), ref_seq);
        r->shown_seq = unzigzag(get_varint(&rd), ref_seq);
    } else if (version >= 2) {
        r->vis_seq = get_varint(&rd);
        r->shown_seq = get_varint(&rd);
    }
    return !rd.bad && rd.p == rd.end ? 0 : CRDTDB_ECORRUPT;
}

int crdtdb__record_encode(const crdtdb__record *r, const uint8_t *visible,
                          size_t visible_len, const uint32_t *val_off,
                          const crdtdb__origin_table *ot, crdtdb_buf *out)
{
    /* Remap origins to those still referenced, in first-use order. */
    uint32_t stackmap[16];
    uint32_t *map = r->norigins <= 16 ? stackmap
                                      : malloc(r->norigins * sizeof *map);
    if (!map)
        return CRDTDB_ENOMEM;
    for (uint32_t k = 0; k < r->norigins; k++)
        map[k] = UINT32_MAX;
    uint32_t used = 0;
    if (r->base_kind != CRDTDB__BASE_NONE)
        map[r->base_origin] = used++;
    size_t size = 1 + 10 + visible_len + 1 + 8 + 10 + 10 + 10 + 10 + 10 + 10;
    for (uint32_t k = 0; k < r->nleaves; k++) {
        const crdtdb__leaf *l = &r->leaves[k];
        if (map[l->origin] == UINT32_MAX)
            map[l->origin] = used++;
        size += 10 + l->path_len + 10 + 10 + 10 + 1 + 10 + l->val_len;
    }
    size += (size_t)used * (ot ? 5 : KEY_BYTES);
    out->len = 0;
    if (crdtdb__buf_reserve(out, size)) {
        if (map != stackmap)
            free(map);
        return CRDTDB_ENOMEM;
    }
    uint8_t *o = out->data;
    *o++ = ot ? BLOB_VERSION : 3;
    o = put_varint(o, visible_len);
    if (visible_len)
        memcpy(o, visible, visible_len);
    o += visible_len;
    *o++ = r->base_kind;
    if (r->base_kind != CRDTDB__BASE_NONE) {
        o = put_u64(o, r->base_hlc);
        o = put_varint(o, map[r->base_origin]);
        o = put_varint(o, r->base_seq);
    }
    o = put_varint(o, used);
    if (ot) { /* numbers, in the remapped order */
        uint32_t stacknum[16];
        uint32_t *nums = used <= 16 ? stacknum : malloc(used * sizeof *nums);
        int rc = nums ? 0 : CRDTDB_ENOMEM;
        for (uint32_t k = 0; !rc && k < r->norigins; k++)
            if (map[k] != UINT32_MAX)
                rc = ot->num_of(ot->ctx, r->origins[k], &nums[map[k]]);
        for (uint32_t k = 0; !rc && k < used; k++)
            o = put_varint(o, nums[k]);
        if (nums != stacknum)
            free(nums);
        if (rc) {
            if (map != stackmap)
                free(map);
            return rc;
        }
    } else {
        for (uint32_t k = 0; k < r->norigins; k++)
            if (map[k] != UINT32_MAX)
                memcpy(o + (size_t)map[k] * KEY_BYTES, r->origins[k], KEY_BYTES);
        o += (size_t)used * KEY_BYTES;
    }
    o = put_varint(o, r->nleaves);
    /* what the decoder takes for the base's: 0 and 0 when there is none */
    int has_base = r->base_kind != CRDTDB__BASE_NONE;
    uint64_t ref_hlc = has_base ? r->base_hlc : 0, ref_seq = has_base ? r->base_seq : 0;
    for (uint32_t k = 0; k < r->nleaves; k++) {
        const crdtdb__leaf *l = &r->leaves[k];
        o = put_varint(o, l->path_len);
        memcpy(o, l->path, l->path_len);
        o += l->path_len;
        uint32_t vl = l->kind == CRDTDB__KIND_VALUE ? l->val_len : 0;
        /* a value the rendering holds is stored once: its offset there,
         * where that is shorter than the value */
        uint32_t at = ot && val_off && vl ? val_off[k] : UINT32_MAX;
        if (at != UINT32_MAX && (at > visible_len || vl > visible_len - at ||
                                 varint_len(at) >= vl || memcmp(visible + at, l->val, vl) != 0))
            at = UINT32_MAX;
        if (ot) { /* version 4 (decoder above) */
            int same = has_base && l->hlc == r->base_hlc && map[l->origin] == map[r->base_origin];
            o = put_varint(o, (uint64_t)vl << 3 | (uint64_t)(at != UINT32_MAX) << 2 |
                                  (uint64_t)same << 1 | l->kind);
            if (!same) {
                o = put_varint(o, zigzag(crdtdb__hlc_ms(l->hlc), crdtdb__hlc_ms(ref_hlc)));
                o = put_varint(o, crdtdb__hlc_counter(l->hlc));
                o = put_varint(o, map[l->origin]);
            }
            o = put_varint(o, zigzag(l->seq, ref_seq));
            if (at != UINT32_MAX) {
                o = put_varint(o, at);
                continue;
            }
        } else {
            o = put_varint(o, zigzag(l->hlc, ref_hlc));
            o = put_varint(o, map[l->origin]);
            o = put_varint(o, zigzag(l->seq, ref_seq));
            *o++ = l->kind;
            if (l->kind == CRDTDB__KIND_VALUE)
                o = put_varint(o, vl);
        }
        if (vl)
            memcpy(o, l->val, vl);
        o += vl;
    }
    o = put_varint(o, ot ? zigzag(r->vis_seq, ref_seq) : r->vis_seq);
    o = put_varint(o, ot ? zigzag(r->shown_seq, ref_seq) : r->shown_seq);
    out->len = (size_t)(o - out->data);
    if (map != stackmap)
        free(map);
    return 0;
}
