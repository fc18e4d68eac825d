/*
 * libFuzzer target for applying deltas (storage/apply.c and the merge in
 * crdt/record.c), through crdtdb_db_apply.
 *
 * Input: a delta body, which the harness signs with a fixed test key (a
 * replica other than the environment's own) and wraps in a valid envelope
 * [2, bin body, bin sig], so every input gets past signature verification:
 *   - bytes that start like a body, [array header, str db_id, bin(32)
 *     sender, ...], keep their own db_id and get the test public key
 *     written over the sender;
 *   - anything else is the rest of a body after the sender (from, to, ack,
 *     hlc_base, colls, origins, records, fingerprint points) and is
 *     prefixed with [array header, "fz", bin(32) test key].
 * The array header is the one crdtdb__delta_encode writes (0x9a today),
 * read at start-up.  Stamps are HLCs: milliseconds << 16 | counter.  The environment's clock
 * is fixed at NOW_MS, so stamps more than 5 minutes after it are refused
 * (ECLOCK) deterministically.
 *
 * One scratch environment (mkdtemp, 64 MiB, NOSYNC, small limits) lives for
 * the whole process, with database "fz" of collections "c" and "d"; the
 * database is dropped and recreated every RESET_EVERY runs (or after
 * EMAPFULL).  Checked for every input:
 *   - crdtdb_db_apply returns 0 or an error code a delta may cause
 *     (EBADVALUE, EBADID, ETOOBIG, ETOODEEP, EINVAL, ENOCOLL, ECLOCK,
 *     EMAPFULL, EFORGED, EFORK; never EBADSIG, EVERSION, ECORRUPT, EIO,
 *     ENOMEM, ...);
 *   - a failure leaves a non-empty crdtdb_db_errmsg and changes nothing: the
 *     sequence, every record of both collections and the sender's
 *     watermarks and flags are as before, except that EFORGED / EFORK set
 *     the sender's CRDTDB_PEER_EQUIVOCATED / CRDTDB_PEER_FORKED flag;
 *   - a success fills info (sender, range, applied <= changes), moves the
 *     sequence iff something was applied, never moves a watermark back nor
 *     changes the sender's flags; applying the same delta again returns 0
 *     with applied == 0 and changes nothing; exporting what the apply
 *     stored gives deltas that peek and apply cleanly here (applied == 0);
 *   - every record of both collections reads back through crdtdb_db_query
 *     as a msgpack map that crdtdb_msgpack_to_json accepts, in id order.
 * FUZZ_DEBUG=1 in the environment prints the outcome of every apply.
 */
#include <inttypes.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crdt/buf.h"
#include "crdtdb.h"
#include "fuzz_util.h"

const char fuzz_name[] = "fuzz_apply";

#define RESET_EVERY 1000u
#define DB_ID "fz"
#define NCOLL 2
#define NOW_MS UINT64_C(1700000000000)

static const char *const COLLS[NCOLL] = {"c", "d"};

static crdtdb_env *env;
static crdtdb_db *db;
static unsigned long runs;
static int need_reset;
static int debug;

/* ------------------------------------------------------------- helpers */

static uint64_t fixed_clock(void *ctx)
{
    (void)ctx;
    return NOW_MS;
}

/* Error codes crdtdb_db_apply may return for a validly signed delta. */
static int allowed_err(int rc)
{
    switch (rc) {
    case CRDTDB_EBADVALUE:
    case CRDTDB_EBADID:
    case CRDTDB_ETOOBIG:
    case CRDTDB_ETOODEEP:
    case CRDTDB_EINVAL: /* another database */
    case CRDTDB_ENOCOLL:
    case CRDTDB_ECLOCK:
    case CRDTDB_EMAPFULL:
    case CRDTDB_EFORGED: /* same stamp as a stored register, other value */
    case CRDTDB_EFORK:   /* fingerprint or ack against the sender's history */
        return 1;
    default:
        return 0;
    }
}

/* ---------------------------------------------------------- snapshots */

typedef struct dump_ctx {
    crdtdb_buf *out;
    char last[CRDTDB_ID_MAX + 1];
    int any;
} dump_ctx;

/* Appends id and value to the dump; ids come in strictly increasing order. */
static int dump_cb(void *ctx, const char *id, const uint8_t *value, size_t len)
{
    dump_ctx *c = ctx;
    size_t n = strlen(id);
    CHECK(n >= 1 && n <= CRDTDB_ID_MAX);
    if (c->any) {
        size_t m = strlen(c->last);
        int cmp = memcmp(c->last, id, m < n ? m : n);
        CHECK(cmp < 0 || (cmp == 0 && m < n));
    }
    memcpy(c->last, id, n + 1);
    c->any = 1;
    fuzz_check_record_bytes(value, len);
    uint32_t hdr[2] = {(uint32_t)n, (uint32_t)len};
    CHECK(crdtdb__buf_append(c->out, hdr, sizeof hdr) == 0);
    CHECK(crdtdb__buf_append(c->out, id, n) == 0);
    CHECK(crdtdb__buf_append(c->out, value, len) == 0);
    return 0;
}

typedef struct snap {
    uint64_t seq;
    crdtdb_buf recs; /* every record of both collections */
    crdtdb_peer mark;
    int mark_found;
} snap;

static void snap_take(snap *s)
{
    CHECK(crdtdb_db_seq(db, NULL, &s->seq) == 0);
    s->recs.len = 0;
    for (int c = 0; c < NCOLL; c++) {
        dump_ctx d = {&s->recs, {0}, 0};
        static const uint8_t sep = 0xff;
        CHECK(crdtdb_db_query(db, NULL, COLLS[c], NULL, 0, dump_cb, &d) == 0);
        CHECK(crdtdb__buf_append(&s->recs, &sep, 1) == 0);
    }
    memset(&s->mark, 0, sizeof s->mark);
    CHECK(crdtdb_db_peer_get(db, fuzz_pk, &s->mark, &s->mark_found) == 0);
    if (!s->mark_found)
        CHECK(s->mark.received == 0 && s->mark.acked == 0);
}

/* Same sequence and records. */
static int data_same(const snap *a, const snap *b)
{
    return a->seq == b->seq &&
           fuzz_same(a->recs.data, a->recs.len, b->recs.data, b->recs.len);
}

static int snap_same(const snap *a, const snap *b)
{
    return data_same(a, b) && a->mark_found == b->mark_found &&
           a->mark.received == b->mark.received && a->mark.acked == b->mark.acked &&
           a->mark.flags == b->mark.flags;
}

/* ------------------------------------------------------------ database */

static void db_reset(void)
{
    fuzz_scratch_reset();
    need_reset = 0;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    debug = fuzz_debug_enabled();
    fuzz_keys_init();

    crdtdb_env_options o;
    fuzz_scratch_options(&o);
    o.max_value_size = 2048;
    o.max_depth = 8;
    o.max_path_bytes = 256;
    o.max_fields = 64;
    o.max_delta_size = o.max_value_size + o.max_path_bytes + 4096;
    o.clock = fixed_clock;
    fuzz_scratch_env(&o, &env);
    uint8_t own[CRDTDB_REPLICA_ID_BYTES];
    crdtdb_env_replica_id(env, own);
    if (memcmp(own, fuzz_pk, sizeof fuzz_pk) == 0)
        abort(); /* the test key must be another replica */
    /* the directory goes once the database is made (see fuzz_util.h) */
    fuzz_scratch_db(DB_ID, COLLS, NCOLL, &db);
    return 0;
}

/* --------------------------------------------------------------- export */

typedef struct sink_ctx {
    crdtdb_buf all; /* u32 length | delta, ... */
    size_t n;
} sink_ctx;

static int sink_cb(void *ctx, const uint8_t *delta, size_t len)
{
    sink_ctx *s = ctx;
    uint32_t l = (uint32_t)len;
    CHECK(len > 0 && len == l);
    CHECK(crdtdb__buf_append(&s->all, &l, sizeof l) == 0);
    CHECK(crdtdb__buf_append(&s->all, delta, len) == 0);
    s->n++;
    return 0;
}

/* Exports what the last apply stored (the sequences after `since`) and
 * applies those deltas back: they are well-formed and change nothing. */
static void check_export(uint64_t since, const crdtdb_apply_info *ai,
                         const snap *now)
{
    sink_ctx s = {CRDTDB_BUF_INIT, 0};
    crdtdb_export_info xi;
    memset(&xi, 0, sizeof xi);
    int rc = crdtdb_db_export(db, since, NULL, sink_cb, &s, &xi);
    if (rc) {
        fprintf(stderr, "fuzz_apply: export: %s: %s\n", crdtdb_errname(rc),
                crdtdb_db_errmsg(db));
        CHECK(!"export failed");
    }
    CHECK(xi.deltas == s.n);
    CHECK(xi.changes <= ai->applied);
    if (ai->applied == 0)
        CHECK(xi.changes == 0);
    if (s.n)
        CHECK(xi.to == now->seq);
    size_t off = 0;
    while (off < s.all.len) {
        uint32_t l;
        memcpy(&l, s.all.data + off, sizeof l);
        off += sizeof l;
        uint8_t *d = malloc(l);
        CHECK(d != NULL);
        memcpy(d, s.all.data + off, l);
        off += l;
        size_t dlen = 0;
        char id[CRDTDB_ID_MAX + 1];
        CHECK(crdtdb_delta_peek(d, l, &dlen, id) == 0);
        CHECK(dlen == l && strcmp(id, DB_ID) == 0);
        crdtdb_apply_info info;
        rc = crdtdb_db_apply(db, d, l, &info);
        if (rc) {
            fprintf(stderr, "fuzz_apply: own export refused: %s: %s\n",
                    crdtdb_errname(rc), crdtdb_db_errmsg(db));
            CHECK(!"exported delta does not apply");
        }
        CHECK(info.applied == 0);
        free(d);
    }
    snap after;
    memset(&after, 0, sizeof after);
    snap_take(&after);
    CHECK(snap_same(now, &after));
    crdtdb_buf_free(&after.recs);
    crdtdb_buf_free(&s.all);
}

/* --------------------------------------------------------------- driver */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (need_reset || ++runs % RESET_EVERY == 0)
        db_reset();

    crdtdb_buf body = CRDTDB_BUF_INIT, env_buf = CRDTDB_BUF_INIT;
    fuzz_make_body(&body, data, size);
    fuzz_wrap(&env_buf, &body);
    /* a heap block of exactly the delta (ASan sees any read past the end) */
    size_t len = env_buf.len;
    uint8_t *delta = fuzz_dup(env_buf.data, len);
    crdtdb_buf_free(&env_buf);

    snap before, after, again;
    memset(&before, 0, sizeof before);
    memset(&after, 0, sizeof after);
    memset(&again, 0, sizeof again);
    snap_take(&before);

    crdtdb_apply_info info;
    memset(&info, 0xa5, sizeof info);
    int rc = crdtdb_db_apply(db, delta, len, &info);
    if (debug) {
        if (rc)
            fprintf(stderr, "fuzz_apply: %s: %s\n", crdtdb_errname(rc),
                    crdtdb_db_errmsg(db));
        else
            fprintf(stderr,
                    "fuzz_apply: ok: (%" PRIu64 ", %" PRIu64 "], %zu changes, %zu applied\n",
                    info.from, info.to, info.changes, info.applied);
    }
    snap_take(&after);

    if (rc != 0) {
        CHECK(rc < 0);
        CHECK(crdtdb_db_errmsg(db)[0] != '\0');
        if (!allowed_err(rc)) {
            fprintf(stderr, "fuzz_apply: unexpected %s: %s\n", crdtdb_errname(rc),
                    crdtdb_db_errmsg(db));
            CHECK(!"unexpected error code");
        }
        /* all or nothing; a refusal as evidence (EFORGED, EFORK) only
         * flags the sender */
        CHECK(data_same(&before, &after));
        if (rc == CRDTDB_EFORGED || rc == CRDTDB_EFORK) {
            unsigned flag = rc == CRDTDB_EFORGED ? CRDTDB_PEER_EQUIVOCATED
                                                 : CRDTDB_PEER_FORKED;
            CHECK(after.mark_found);
            CHECK(after.mark.received == before.mark.received &&
                  after.mark.acked == before.mark.acked);
            CHECK(after.mark.flags == (before.mark.flags | flag));
        } else {
            CHECK(snap_same(&before, &after));
        }
        if (rc == CRDTDB_EMAPFULL)
            need_reset = 1;
    } else {
        CHECK(memcmp(info.sender, fuzz_pk, sizeof fuzz_pk) == 0);
        CHECK(info.from <= info.to);
        CHECK(info.applied <= info.changes);
        if (info.applied)
            CHECK(after.seq > before.seq);
        else
            CHECK(after.seq == before.seq &&
                  fuzz_same(before.recs.data, before.recs.len, after.recs.data,
                            after.recs.len));
        /* watermarks never move back */
        CHECK(after.mark_found);
        CHECK(after.mark.received >= before.mark.received);
        CHECK(after.mark.acked >= before.mark.acked);
        CHECK(after.mark.flags == before.mark.flags);

        /* idempotent */
        crdtdb_apply_info info2;
        int rc2 = crdtdb_db_apply(db, delta, len, &info2);
        if (rc2) {
            fprintf(stderr, "fuzz_apply: second apply: %s: %s\n", crdtdb_errname(rc2),
                    crdtdb_db_errmsg(db));
            CHECK(!"applying a delta again fails");
        }
        CHECK(info2.applied == 0 && info2.changes == info.changes);
        snap_take(&again);
        CHECK(snap_same(&after, &again));

        check_export(before.seq, &info, &after);
    }

    free(delta);
    crdtdb_buf_free(&body);
    crdtdb_buf_free(&before.recs);
    crdtdb_buf_free(&after.recs);
    crdtdb_buf_free(&again.recs);
    return 0;
}
