/*
 * libFuzzer target for packed records (storage/recs.c): a pack value that
 * is not what collection wrote — damaged on disk, or written by a faulty
 * build — read by every path that reads packs.
 *
 * Input: byte 0 picks where the pack goes and what it is:
 *   - bit 0 set: the rest is the pack's content before compression (u8 key
 *     length | key | u16 blob length | blob, ...), compressed here with
 *     zstd and framed as a pack, so the entry parser gets fuzzer bytes;
 *     clear: the rest is the whole stored value (format byte, zstd frame);
 *   - bits 1-2: the pack's key: in place of the first real pack, of the
 *     last, past every record of collection "c", or in collection "d".
 * Content bytes that begin 0xff get each entry's first six key bytes
 * written as the pack's own prefix, so entries get past the prefix check.
 *
 * One scratch environment lives for the process: database "fz" of
 * collections "c" and "d", with 120 records of "c" packed by a collection
 * (two packs) and a few loose ones among them.  For every input, inside
 * one write transaction that is then aborted (so nothing is ever stored):
 * the pack is put, and then get_by_id of ids around it, a query of both
 * collections and an update (which unpacks) must each return 0 or
 * ECORRUPT (the update: or ENOTFOUND), with a message when they fail (a
 * damaged rendering inside a well-framed blob reads back as stored, and a
 * blob version this build does not read is EVERSION, as from a loose record).  After the abort, an export succeeds and every
 * record reads as before the input.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

#include "crdt/buf.h"
#include "fuzz_util.h"
#include "storage/internal.h"

const char fuzz_name[] = "fuzz_pack";

#define NREC 120
#define INPUT_MAX (64u * 1024u)

static const char *const COLLS[2] = {"c", "d"};
static crdtdb_env *env; /* fuzz_util's cleanup closes it at exit */
static crdtdb_db *db;
static crdtdb_buf whole; /* every record before any input: the check after */
static uint8_t first_key[CRDTDB__RECKEY_MAX], last_key[CRDTDB__RECKEY_MAX];
static size_t first_len, last_len;

static int dump_cb(void *ctx, const char *id, const uint8_t *v, size_t len)
{
    crdtdb_buf *b = ctx;
    fuzz_check_record_bytes(v, len);
    CHECK(crdtdb__buf_append(b, id, strlen(id) + 1) == 0);
    CHECK(crdtdb__buf_append(b, v, len) == 0);
    return 0;
}

static void dump(crdtdb_buf *b)
{
    b->len = 0;
    for (int c = 0; c < 2; c++)
        CHECK(crdtdb_db_query(db, NULL, COLLS[c], NULL, 0, dump_cb, b) == 0);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    crdtdb_env_options o;
    fuzz_scratch_options(&o);
    fuzz_scratch_env(&o, &env);
    fuzz_scratch_db("fz", COLLS, 2, &db);
    crdtdb_buf m = CRDTDB_BUF_INIT;
    for (int i = 0; i < NREC; i++) {
        char id[16], json[96];
        snprintf(id, sizeof id, "r%03d", i);
        snprintf(json, sizeof json, "{\"hp\":%d,\"name\":\"n%d\",\"pos\":{\"x\":%d}}", i, i % 5,
                 i * 7);
        CHECK(crdtdb_json_to_msgpack(json, strlen(json), 0, &m, NULL, 0) == 0);
        CHECK(crdtdb_db_add(db, NULL, "c", id, m.data, m.len) == 0);
    }
    CHECK(crdtdb_db_add(db, NULL, "d", "x", m.data, m.len) == 0);
    crdtdb_collect_stats st;
    CHECK(crdtdb_db_collect(db, 0, &st) == 0 && st.packed == NREC + 1);
    for (int i = 0; i < NREC; i += 17) { /* loose ones among the packed */
        char id[16];
        snprintf(id, sizeof id, "r%03da", i);
        CHECK(crdtdb_db_add(db, NULL, "c", id, m.data, m.len) == 0);
    }
    crdtdb_buf_free(&m);
    /* the first and last packs' keys */
    crdtdb_txn *t;
    MDB_cursor *c;
    MDB_val k, v;
    CHECK(crdtdb_txn_begin(db, CRDTDB_TXN_RDONLY, &t) == 0);
    CHECK(mdb_cursor_open(t->mt, db->env->dbi_packs, &c) == 0);
    CHECK(mdb_cursor_get(c, &k, &v, MDB_FIRST) == 0);
    memcpy(first_key, k.mv_data, first_len = k.mv_size);
    CHECK(mdb_cursor_get(c, &k, &v, MDB_LAST) == 0);
    memcpy(last_key, k.mv_data, last_len = k.mv_size);
    mdb_cursor_close(c);
    crdtdb_txn_abort(t);
    dump(&whole);
    return 0;
}

static int export_cb(void *ctx, const uint8_t *p, size_t len)
{
    (void)ctx;
    CHECK(len > 0 && p != NULL);
    return 0;
}

/* A call's outcome: 0, or ECORRUPT with a message; or EVERSION, for a
 * record blob in a good pack whose version byte this build does not read,
 * as for a loose record (a newer build's). */
static void outcome(int rc)
{
    CHECK(rc == 0 || rc == CRDTDB_ECORRUPT || rc == CRDTDB_EVERSION);
    if (rc)
        CHECK(crdtdb_db_errmsg(db)[0] != '\0');
}

/* A record's rendering is read as stored (crdtdb__record_blob_visible):
 * only its frame is checked, so damaged rendering bytes come back as they
 * are, from a pack as from a loose record.  Read them all (ASan sees a read
 * past the end). */
static int query_cb(void *ctx, const char *id, const uint8_t *v, size_t len)
{
    unsigned *sum = ctx;
    CHECK(id[0] != '\0');
    for (size_t i = 0; i < len; i++)
        *sum += v[i];
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > INPUT_MAX)
        return 0;
    uint8_t *in = fuzz_dup(data + 1, size - 1);
    size_t n = size - 1;
    uint8_t key[CRDTDB__RECKEY_MAX];
    size_t klen;
    switch ((data[0] >> 1) & 3) {
    case 0: memcpy(key, first_key, klen = first_len); break;
    case 1: memcpy(key, last_key, klen = last_len); break;
    case 2: klen = crdtdb__reckey(key, db->num, 0, "zz", 2); break;
    default: klen = crdtdb__reckey(key, db->num, 1, "x", 1); break;
    }
    uint8_t *content = in;
    if (n && in[0] == 0xff) { /* each entry's key prefix: the pack's own */
        content = in + 1;
        n--;
        for (size_t o = 0; o < n;) {
            size_t kl = content[o];
            for (size_t j = 0; j < 6 && j < kl && o + 1 + j < n; j++)
                content[o + 1 + j] = key[j];
            o += 1 + kl;
            if (o + 2 > n)
                break;
            o += 2 + ((size_t)content[o] << 8 | content[o + 1]);
        }
    }
    uint8_t *val;
    size_t vlen;
    if (data[0] & 1) {
        size_t cap = 1 + ZSTD_compressBound(n);
        val = malloc(cap);
        CHECK(val != NULL);
        val[0] = 1;
        size_t z = ZSTD_compress(val + 1, cap - 1, content, n, 1);
        CHECK(!ZSTD_isError(z));
        vlen = 1 + z;
    } else {
        val = fuzz_dup(content, n);
        vlen = n;
    }
    crdtdb_txn *t;
    CHECK(crdtdb_txn_begin(db, 0, &t) == 0);
    MDB_val k = {klen, key}, v = {vlen, val};
    if (vlen == 0 || mdb_put(t->mt, db->env->dbi_packs, &k, &v, 0) != 0) {
        crdtdb_txn_abort(t);
        free(val);
        free(in);
        return 0;
    }
    crdtdb_buf out = CRDTDB_BUF_INIT;
    static const char *const ids[] = {"r000", "r016", "r017", "r017a", "r059", "r060",
                                      "r119", "r119a", "zz", "a", "r0"};
    for (size_t i = 0; i < sizeof ids / sizeof *ids; i++) {
        int found;
        int rc = crdtdb_db_get_by_id(db, t, "c", ids[i], &out, &found);
        outcome(rc);
    }
    unsigned sum = 0;
    for (int c = 0; c < 2; c++)
        outcome(crdtdb_db_query(db, t, COLLS[c], NULL, 0, query_cb, &sum));
    crdtdb_buf m = CRDTDB_BUF_INIT;
    CHECK(crdtdb_json_to_msgpack("{\"hp\":-1}", 9, 0, &m, NULL, 0) == 0);
    int rc = crdtdb_db_update(db, t, "c", ids[data[0] >> 3 & 7], m.data, m.len);
    outcome(rc == CRDTDB_ENOTFOUND ? 0 : rc); /* an id no pack or record holds */
    crdtdb_txn_abort(t);
    /* an export reads the packs through its own snapshot: nothing of the
     * input is there now */
    CHECK(crdtdb_db_export(db, 0, NULL, export_cb, NULL, NULL) == 0);
    dump(&out);
    CHECK(fuzz_same(out.data, out.len, whole.data, whole.len));
    crdtdb_buf_free(&m);
    crdtdb_buf_free(&out);
    free(val);
    free(in);
    return 0;
}
