/* The change log's runs (storage/log.h): one entry per run of registers a
 * store numbered, walked register by register as before.  Every test
 * checks the log against the records themselves (check_log: the walk from
 * every sequence yields exactly the live registers after it, in order, and
 * every entry holds a live register), and the exports against the same
 * state with every run rewritten as the per-register entries older builds
 * wrote (to_registers): byte for byte the same deltas. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crdt/buf.h"
#include "crdt/record.h"
#include "storage/log.h"
#include "storage/recs.h"
#include "tests/replica.h"
#include "tests/testutil.h"

static uint64_t now_ms = 1700000000000ull;

/* ------------------------------------------------------------ the model */

/* One live register: from the records (src unknown: 0) or from the walk. */
typedef struct reg {
    uint64_t seq;
    uint32_t src;
    uint16_t coll;
    char id[CRDTDB_ID_MAX + 1];
    uint8_t path[64];
    size_t plen;
} reg;

typedef struct regs {
    reg *v;
    size_t n, cap;
} regs;

static reg *regs_add(regs *r)
{
    if (r->n == r->cap) {
        r->cap = r->cap ? 2 * r->cap : 64;
        r->v = realloc(r->v, r->cap * sizeof *r->v);
        if (!r->v)
            ck_abort_msg("out of memory");
    }
    reg *g = &r->v[r->n++];
    memset(g, 0, sizeof *g);
    return g;
}

static int reg_cmp(const void *a, const void *b)
{
    uint64_t x = ((const reg *)a)->seq, y = ((const reg *)b)->seq;
    return (x > y) - (x < y);
}

/* Every live register of db's records, by sequence. */
static void from_records(crdtdb_db *db, MDB_txn *mt, regs *out)
{
    uint8_t pre[4];
    crdtdb__put_u32(pre, db->num);
    MDB_val from = {4, pre};
    crdtdb__rwalk w; /* loose and packed */
    crdtdb__record r;
    crdtdb__record_init(&r);
    for (int rc = crdtdb__rwalk_open(&w, db->env, mt, &from, 4, NULL); rc == 0;
         rc = crdtdb__rwalk_next(&w)) {
        MDB_val k = w.k, v = w.v;
        const uint8_t *kp = k.mv_data;
        if (crdtdb__record_decode(&r, v.mv_data, v.mv_size, crdtdb__origins_at(&db->orig, mt)))
            ck_abort_msg("a record does not decode");
        for (uint32_t i = 0; i <= r.nleaves; i++) {
            if (i == r.nleaves && r.base_kind == CRDTDB__BASE_NONE)
                continue;
            reg *g = regs_add(out);
            g->coll = (uint16_t)(kp[4] << 8 | kp[5]);
            memcpy(g->id, kp + 6, k.mv_size - 6);
            g->seq = i < r.nleaves ? r.leaves[i].seq : r.base_seq;
            if (i < r.nleaves) {
                if (r.leaves[i].path_len > sizeof g->path)
                    ck_abort_msg("path too long for the test");
                g->plen = r.leaves[i].path_len;
                memcpy(g->path, r.leaves[i].path, g->plen);
            }
        }
    }
    crdtdb__record_free(&r);
    crdtdb__rwalk_close(&w);
    if (out->n)
        qsort(out->v, out->n, sizeof *out->v, reg_cmp);
}

/* What the walk yields after `after`; the records it decoded. */
static size_t walk(crdtdb_db *db, MDB_txn *mt, uint64_t after, regs *out)
{
    crdtdb__log_iter it;
    crdtdb__log_entry e;
    int found;
    ck_assert_int_eq(crdtdb__log_open(db, mt, after, &it), 0);
    while (crdtdb__log_next(&it, &e, &found) == 0 && found) {
        reg *g = regs_add(out);
        g->seq = e.seq;
        g->src = e.src;
        g->coll = e.coll;
        memcpy(g->id, e.id, e.idlen);
        if (e.plen > sizeof g->path)
            ck_abort_msg("path too long for the test");
        g->plen = e.plen;
        if (e.plen)
            memcpy(g->path, e.path, e.plen);
    }
    ck_assert_int_eq(found, 0);
    size_t decodes = it.decodes;
    crdtdb__log_close(&it);
    return decodes;
}

/* The raw entries of db: how many, how many in the old format. */
static void entries(crdtdb_db *db, MDB_txn *mt, size_t *n, size_t *old, regs *live)
{
    MDB_cursor *c;
    ck_assert_int_eq(mdb_cursor_open(mt, db->env->dbi_changes, &c), 0);
    uint8_t pre[4];
    crdtdb__put_u32(pre, db->num);
    MDB_val k = {4, pre}, v;
    *n = *old = 0;
    uint64_t end = 0; /* entries never overlap */
    for (int rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE); rc == 0;
         rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        if (memcmp(k.mv_data, pre, 4) != 0)
            break;
        crdtdb__log_run run;
        if (crdtdb__log_parse(&k, &v, &run) || run.seq < end)
            ck_abort_msg("entry at %zu malformed or overlapping", *n);
        end = run.seq + run.n;
        ++*n;
        *old += run.is_reg;
        /* each holds a live register of its record (none is left behind) */
        int holds = 0;
        for (size_t i = 0; live && i < live->n && !holds; i++) {
            const reg *g = &live->v[i];
            holds = g->seq >= run.seq && g->seq < run.seq + run.n && g->coll == run.coll &&
                    strlen(g->id) == run.idlen && memcmp(g->id, run.id, run.idlen) == 0 &&
                    (!run.is_reg || (g->plen == run.plen && memcmp(g->path, run.path, g->plen) == 0));
        }
        if (live && !holds)
            ck_abort_msg("entry at %llu (n %llu) holds no live register",
                         (unsigned long long)run.seq, (unsigned long long)run.n);
    }
    mdb_cursor_close(c);
}

static void regs_free(regs *r)
{
    free(r->v);
    memset(r, 0, sizeof *r);
}

/* Drops the registers of r numbered at or below lf. */
static void regs_above(regs *r, uint64_t lf)
{
    size_t k = 0;
    for (size_t i = 0; i < r->n; i++)
        if (r->v[i].seq > lf)
            r->v[k++] = r->v[i];
    r->n = k;
}

/* The log of db against its records: the walk from every sequence up to
 * the last (past 400: the first 8, then about 200 spread) is the live
 * registers after it — above the log floor, below which a collection may
 * have trimmed entries (exports walk the records there). */
static size_t check_log(crdtdb_db *db)
{
    MDB_txn *mt;
    ck_assert_int_eq(mdb_txn_begin(db->env->mdb, NULL, MDB_RDONLY, &mt), 0);
    uint64_t last, lf;
    ck_assert_int_eq(crdtdb__seq_read(db->env, mt, db->num, &last), 0);
    ck_assert_int_eq(crdtdb__logfloor_read(db, mt, &lf), 0);
    regs want = {0};
    from_records(db, mt, &want);
    size_t n, old;
    entries(db, mt, &n, &old, &want);
    uint64_t step = last > 400 ? last / 200 : 1;
    regs_above(&want, lf);
    for (uint64_t after = 0; after <= last + 1; after += after < 8 ? 1 : step) {
        regs got = {0};
        walk(db, mt, after, &got);
        regs_above(&got, lf);
        size_t i = 0;
        while (i < want.n && want.v[i].seq <= after)
            i++;
        ck_assert_msg(got.n == want.n - i, "after %llu: %zu registers, want %zu",
                      (unsigned long long)after, got.n, want.n - i);
        for (size_t j = 0; j < got.n; j++, i++) { /* no ck_assert per item: each one writes */
            const reg *a = &got.v[j], *b = &want.v[i];
            if (a->seq != b->seq || a->coll != b->coll || strcmp(a->id, b->id) != 0 ||
                a->plen != b->plen || memcmp(a->path, b->path, a->plen) != 0)
                ck_abort_msg("after %llu: register %zu is %llu %s, want %llu %s",
                             (unsigned long long)after, j, (unsigned long long)a->seq, a->id,
                             (unsigned long long)b->seq, b->id);
        }
        regs_free(&got);
    }
    regs_free(&want);
    mdb_txn_abort(mt);
    return n;
}

static size_t count_entries(crdtdb_db *db, size_t *old)
{
    MDB_txn *mt;
    size_t n, o;
    ck_assert_int_eq(mdb_txn_begin(db->env->mdb, NULL, MDB_RDONLY, &mt), 0);
    entries(db, mt, &n, &o, NULL);
    mdb_txn_abort(mt);
    if (old)
        *old = o;
    return n;
}

/* Rewrites db's run entries, one in `every` of them (1: all), as the
 * per-register entries builds before runs wrote: the state such a build
 * would have left. */
static void to_registers(crdtdb_db *db, int every)
{
    MDB_txn *mt;
    ck_assert_int_eq(mdb_txn_begin(db->env->mdb, NULL, 0, &mt), 0);
    regs live = {0}, walked = {0};
    from_records(db, mt, &live);
    walk(db, mt, 0, &walked); /* sources, by sequence */
    ck_assert_uint_eq(live.n, walked.n);
    MDB_cursor *c;
    ck_assert_int_eq(mdb_cursor_open(mt, db->env->dbi_changes, &c), 0);
    uint8_t pre[4];
    crdtdb__put_u32(pre, db->num);
    MDB_val k = {4, pre}, v;
    uint64_t *starts = NULL, *ends = NULL;
    size_t ns = 0, i = 0;
    for (int rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE); rc == 0;
         rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        if (memcmp(k.mv_data, pre, 4) != 0)
            break;
        crdtdb__log_run run;
        ck_assert_int_eq(crdtdb__log_parse(&k, &v, &run), 0);
        if (run.is_reg || i++ % (size_t)every)
            continue;
        starts = realloc(starts, (ns + 1) * sizeof *starts);
        ends = realloc(ends, (ns + 1) * sizeof *ends);
        starts[ns] = run.seq;
        ends[ns++] = run.seq + run.n;
    }
    mdb_cursor_close(c);
    for (size_t s = 0; s < ns; s++) {
        uint8_t kb[CRDTDB__CHGKEY_LEN];
        k = crdtdb__log_key(kb, db->num, starts[s]);
        ck_assert_int_eq(mdb_del(mt, db->env->dbi_changes, &k, NULL), 0);
        for (size_t j = 0; j < walked.n; j++) {
            const reg *g = &walked.v[j];
            if (g->seq < starts[s] || g->seq >= ends[s])
                continue;
            uint8_t val[CRDTDB__CHG_HEAD + CRDTDB_ID_MAX + sizeof g->path];
            size_t idlen = strlen(g->id);
            crdtdb__put_u32(val, g->src);
            val[4] = (uint8_t)(g->coll >> 8);
            val[5] = (uint8_t)g->coll;
            val[6] = (uint8_t)idlen;
            memcpy(val + CRDTDB__CHG_HEAD, g->id, idlen);
            memcpy(val + CRDTDB__CHG_HEAD + idlen, g->path, g->plen);
            MDB_val rv = {CRDTDB__CHG_HEAD + idlen + g->plen, val};
            k = crdtdb__log_key(kb, db->num, g->seq);
            ck_assert_int_eq(mdb_put(mt, db->env->dbi_changes, &k, &rv, MDB_NOOVERWRITE), 0);
        }
    }
    free(starts);
    free(ends);
    regs_free(&live);
    regs_free(&walked);
    ck_assert_int_eq(mdb_txn_commit(mt), 0);
}

/* ------------------------------------------------------------- exports */

/* Every delta of an export from `since` (for peer, or NULL), appended. */
static void export_bytes(crdtdb_db *db, uint64_t since, const uint8_t *peer, crdtdb_buf *out)
{
    net q = {0};
    ck_assert_msg(crdtdb_db_export(db, since, peer, to_net, &q, NULL) == 0, "export: %s",
                  crdtdb_db_errmsg(db));
    out->len = 0;
    for (size_t i = 0; i < q.n; i++) {
        uint8_t n[4];
        crdtdb__put_u32(n, (uint32_t)q.msgs[i].len);
        crdtdb__buf_append(out, n, 4);
        crdtdb__buf_append(out, q.msgs[i].data, q.msgs[i].len);
    }
    net_free(&q);
}

/* The exports from every sequence, concatenated. */
static void exports(crdtdb_db *db, const uint8_t *peer, crdtdb_buf *all)
{
    uint64_t last;
    ck_assert_int_eq(crdtdb_db_seq(db, NULL, &last), 0);
    crdtdb_buf b = CRDTDB_BUF_INIT;
    all->len = 0;
    for (uint64_t s = 0; s <= last; s++) {
        export_bytes(db, s, peer, &b);
        crdtdb__buf_append(all, b.data, b.len);
    }
    crdtdb_buf_free(&b);
}

/* The exports from every sequence are the same bytes with the runs as
 * they are and with all of them rewritten as register entries (db is
 * left so). */
static void same_exports_as_registers(replica *r, const uint8_t *peer)
{
    crdtdb_buf a = CRDTDB_BUF_INIT, b = CRDTDB_BUF_INIT;
    exports(r->db, peer, &a);
    to_registers(r->db, 1);
    size_t old, n = count_entries(r->db, &old);
    ck_assert_uint_eq(n, old);
    check_log(r->db);
    exports(r->db, peer, &b);
    ck_assert_uint_eq(a.len, b.len);
    ck_assert(memcmp(a.data, b.data, a.len) == 0);
    crdtdb_buf_free(&a);
    crdtdb_buf_free(&b);
}

/* a and b show the same records. */
static void same_state(replica *a, replica *b)
{
    char *x = dump(a), *y = dump(b);
    ck_assert_str_eq(x, y);
    free(x);
    free(y);
}

/* --------------------------------------------------------------- tests */

static replica A, B;

static void setup(void)
{
    replica_init(&A, &now_ms, "d");
    replica_init(&B, &now_ms, "d");
}

static void teardown(void)
{
    replica_free(&A);
    replica_free(&B);
}

/* A store's registers share one entry; one superseded leaves it while
 * others live; the last one's going takes it. */
START_TEST(runs_partially_superseded)
{
    put(&A, "add", "players", "p", "{\"a\":1,\"b\":2,\"c\":{\"d\":3,\"e\":4}}");
    ck_assert_uint_eq(check_log(A.db), 1); /* base, a, b, c.d, c.e */
    put(&A, "update", "players", "p", "{\"b\":5,\"c\":{\"d\":6}}");
    ck_assert_uint_eq(check_log(A.db), 2);
    put(&A, "update", "players", "p", "{\"a\":7,\"c\":{\"e\":8}}");
    ck_assert_uint_eq(check_log(A.db), 3); /* the first holds the base alone */
    put(&A, "update", "players", "p", "{\"b\":9,\"c\":{\"d\":10}}");
    ck_assert_uint_eq(check_log(A.db), 3); /* the second went whole */
    /* a subtree replaced: c.d and c.e die with their runs' last live ones */
    put(&A, "update", "players", "p", "{\"c\":11}");
    ck_assert_uint_eq(check_log(A.db), 4);
    /* neighbours: another record's runs between, never taken for p's */
    put(&A, "add", "players", "q", "{\"a\":1,\"b\":2}");
    put(&A, "update", "players", "p", "{\"a\":12}");
    put(&A, "add", "moves", "m", "{\"x\":1}");
    put(&A, "update", "players", "q", "{\"a\":3}");
    size_t before = check_log(A.db);
    /* an add replaces the record: every older register dies */
    put(&A, "add", "players", "p", "{\"z\":1}");
    ck_assert_uint_lt(check_log(A.db), before);
    put(&A, "remove", "players", "q", NULL);
    check_log(A.db);
    ck_assert_uint_gt(sync_pair(&A, &B), 0);
    check_log(B.db);
    same_state(&A, &B);
    same_exports_as_registers(&A, NULL);
    same_exports_as_registers(&B, NULL);
}
END_TEST

/* A record written field by field has a run per store; the walk decodes
 * it once for all of them (it was once per run: quadratic), and still
 * tells it apart from a neighbour's runs between its own. */
START_TEST(many_runs_of_one_record)
{
    put(&A, "add", "players", "p", "{\"f0\":0}");
    put(&A, "add", "players", "q", "{\"g\":0}");
    char json[64];
    for (int i = 1; i <= 300; i++) {
        snprintf(json, sizeof json, "{\"f%d\":%d}", i, i);
        put(&A, "update", "players", "p", json);
        if (i % 7 == 0) { /* q's runs in between, and p's own superseded */
            snprintf(json, sizeof json, "{\"g\":%d}", i);
            put(&A, "update", "players", "q", json);
            snprintf(json, sizeof json, "{\"f%d\":%d}", i / 2, -i);
            put(&A, "update", "players", "p", json);
        }
    }
    size_t entries = check_log(A.db);
    ck_assert_uint_ge(entries, 300);
    ck_assert_uint_gt(sync_pair(&A, &B), 0);
    check_log(B.db);
    same_state(&A, &B);
    same_exports_as_registers(&A, NULL);
}
END_TEST

/* Records written field by field in turn: the walk decodes each record
 * once, however many of them take turns (a cache of the last few records
 * decoded every run again once more records than it held took turns). */
START_TEST(records_written_in_turn_decode_once)
{
    enum { NREC = 9, NFIELD = 30 };
    char id[16], json[64];
    for (int f = 0; f < NFIELD; f++)
        for (int r = 0; r < NREC; r++) {
            snprintf(id, sizeof id, "r%d", r);
            snprintf(json, sizeof json, "{\"f%d\":%d}", f, r * f);
            put(&A, f ? "update" : "add", "players", id, json);
        }
    MDB_txn *mt;
    ck_assert_int_eq(mdb_txn_begin(A.db->env->mdb, NULL, MDB_RDONLY, &mt), 0);
    regs got = {0};
    size_t decodes = walk(A.db, mt, 0, &got);
    ck_assert_uint_eq(got.n, (size_t)NREC * (NFIELD + 1)); /* each record's base and fields */
    ck_assert_uint_eq(decodes, NREC);
    /* the same walk with bounds small enough to empty the cache often:
     * the same registers, decoding again what it let go */
    const uint32_t bounds[][2] = {{3, 1000}, {20, 40}, {1, 1}};
    for (size_t b = 0; b < sizeof bounds / sizeof *bounds; b++) {
        crdtdb__log_iter it;
        crdtdb__log_entry e;
        int found;
        ck_assert_int_eq(crdtdb__log_open(A.db, mt, 0, &it), 0);
        it.max_slots = bounds[b][0];
        it.max_regs = bounds[b][1];
        size_t n = 0;
        while (crdtdb__log_next(&it, &e, &found) == 0 && found) {
            ck_assert_uint_lt(n, got.n);
            ck_assert_uint_eq(e.seq, got.v[n].seq);
            ck_assert_uint_eq(e.plen, got.v[n].plen);
            ck_assert(e.plen == 0 || memcmp(e.path, got.v[n].path, e.plen) == 0);
            ck_assert(e.rec_max_seq >= e.seq);
            n++;
        }
        ck_assert_int_eq(found, 0);
        ck_assert_uint_eq(n, got.n);
        ck_assert_uint_gt(it.decodes, NREC);
        ck_assert_uint_le(it.nslot, bounds[b][0] + 1u);
        crdtdb__log_close(&it);
    }
    regs_free(&got);
    mdb_txn_abort(mt);
    check_log(A.db);
    ck_assert_uint_gt(sync_pair(&A, &B), 0);
    same_state(&A, &B);
    same_exports_as_registers(&A, NULL);
}
END_TEST

/* A walk after the last possible sequence is empty: discarding what is
 * unsent after it discards nothing (after + 1 wrapped to 0, and every
 * local record went). */
START_TEST(nothing_after_the_last_sequence)
{
    put(&A, "add", "players", "p", "{\"a\":1}");
    put(&A, "update", "players", "p", "{\"b\":2}");
    size_t n = 9;
    ck_assert_int_eq(crdtdb_db_discard_unsent(A.db, UINT64_MAX, &n), 0);
    ck_assert_uint_eq(n, 0);
    char *a = dump(&A);
    ck_assert_str_eq(a, "players:p={\"a\":1,\"b\":2};moves:");
    free(a);
    check_log(A.db);
}
END_TEST

/* Several stores of one record in one transaction: the later ones
 * supersede registers of a run written in the same transaction. */
START_TEST(runs_superseded_in_their_transaction)
{
    crdtdb_txn *t;
    ck_assert_int_eq(crdtdb_txn_begin(A.db, 0, &t), 0);
    put_in(&A, t, "add", "players", "p", "{\"a\":1,\"b\":2,\"c\":3}");
    put_in(&A, t, "add", "players", "q", "{\"a\":1}");
    put_in(&A, t, "update", "players", "p", "{\"b\":4}");
    put_in(&A, t, "update", "players", "p", "{\"a\":5,\"c\":6}");
    put_in(&A, t, "update", "players", "q", "{\"a\":2}");
    put_in(&A, t, "add", "moves", "r", "{\"a\":1}");
    put_in(&A, t, "remove", "moves", "r", NULL);
    ck_assert_int_eq(crdtdb_txn_commit(t), 0);
    check_log(A.db);
    ck_assert_int_eq(crdtdb_txn_begin(A.db, 0, &t), 0);
    put_in(&A, t, "add", "players", "p", "{\"n\":{\"x\":1,\"y\":2}}");
    put_in(&A, t, "update", "players", "p", "{\"n\":{\"x\":3}}");
    ck_assert_int_eq(crdtdb_txn_commit(t), 0);
    check_log(A.db);
    sync_pair(&A, &B);
    same_state(&A, &B);
    same_exports_as_registers(&A, NULL);
}
END_TEST

/* Export and catch-up from every sequence, inside runs too: what a peer
 * holding everything up to s gets brings it to the same state. */
START_TEST(catch_up_from_inside_runs)
{
    put(&A, "add", "players", "p", "{\"a\":1,\"b\":2,\"c\":3,\"d\":4}");
    put(&A, "add", "players", "q", "{\"a\":1,\"b\":2,\"c\":3}");
    put(&A, "update", "players", "p", "{\"b\":5,\"c\":6}");
    put(&A, "update", "players", "q", "{\"c\":7}");
    put(&A, "add", "moves", "m", "{\"x\":{\"y\":1,\"z\":2}}");
    uint64_t last;
    ck_assert_int_eq(crdtdb_db_seq(A.db, NULL, &last), 0);
    check_log(A.db);
    for (uint64_t s = 0; s <= last; s++) {
        /* C: A's state at s, by the registers numbered up to s */
        replica C;
        replica_init(&C, &now_ms, "d");
        net q = {0};
        ck_assert_int_eq(crdtdb_db_export(A.db, 0, NULL, to_net, &q, NULL), 0);
        net_free(&q);
        /* everything after s, applied on top of everything: idempotent,
         * and the registers it carries are exactly those numbered after s */
        ck_assert_int_eq(crdtdb_db_export(A.db, s, NULL, to_net, &q, NULL), 0);
        size_t fields = 0;
        for (size_t i = 0; i < q.n; i++) {
            crdtdb_apply_info info;
            ck_assert_int_eq(crdtdb_db_apply(C.db, q.msgs[i].data, q.msgs[i].len, &info), 0);
            fields += info.applied;
        }
        net_free(&q);
        MDB_txn *mt;
        regs want = {0};
        ck_assert_int_eq(mdb_txn_begin(A.env->mdb, NULL, MDB_RDONLY, &mt), 0);
        from_records(A.db, mt, &want);
        mdb_txn_abort(mt);
        size_t after = 0;
        for (size_t i = 0; i < want.n; i++)
            after += want.v[i].seq > s;
        regs_free(&want);
        ck_assert_msg(fields == after, "from %llu: %zu applied, %zu live after it",
                      (unsigned long long)s, fields, after);
        /* then the rest, from 0 */
        sync_pair(&A, &C);
        char *a = dump(&A), *c = dump(&C);
        ck_assert_str_eq(a, c);
        free(a);
        free(c);
        replica_free(&C);
    }
    same_exports_as_registers(&A, NULL);
}
END_TEST

/* Purge, discard and collection take records with several runs whole,
 * and nothing of their neighbours'. */
START_TEST(purge_and_collect_take_every_run)
{
    put(&A, "add", "moves", "m", "{\"x\":0,\"y\":0}");
    for (int i = 0; i < 6; i++) {
        char id[8];
        snprintf(id, sizeof id, "p%d", i);
        put(&A, "add", "players", id, "{\"a\":1,\"b\":2,\"c\":3}");
    }
    for (int i = 0; i < 6; i++) {
        char id[8];
        snprintf(id, sizeof id, "p%d", i);
        put(&A, "update", "players", id, "{\"b\":4}");
        put(&A, "update", "moves", "m", "{\"x\":1}");
        put(&A, "update", "players", id, "{\"c\":{\"d\":5}}");
    }
    size_t n0 = check_log(A.db);
    ck_assert_int_eq(crdtdb_db_purge(A.db, "players", "p1"), 0);
    ck_assert_uint_eq(check_log(A.db), n0 - 3);
    /* old-format entries for p2: purge takes them too */
    to_registers(A.db, 3);
    check_log(A.db);
    ck_assert_int_eq(crdtdb_db_purge(A.db, "players", "p2"), 0);
    ck_assert_int_eq(crdtdb_db_purge(A.db, "players", "p3"), 0);
    check_log(A.db);
    ck_assert_ptr_null(tu_get(A.db, "players", "p2"));
    char *p4 = tu_get(A.db, "players", "p4");
    ck_assert_str_eq(p4, "{\"a\":1,\"b\":4,\"c\":{\"d\":5}}");
    free(p4);
    /* discard: every record with a change of ours after s */
    uint64_t s;
    ck_assert_int_eq(crdtdb_db_seq(A.db, NULL, &s), 0);
    put(&A, "update", "players", "p5", "{\"a\":9}");
    size_t n;
    ck_assert_int_eq(crdtdb_db_discard_unsent(A.db, s, &n), 0);
    ck_assert_uint_eq(n, 1);
    ck_assert_ptr_null(tu_get(A.db, "players", "p5"));
    check_log(A.db);
    /* collection: removed records, alone in the horizon (no peers) */
    put(&A, "remove", "players", "p0", NULL);
    put(&A, "remove", "players", "p4", NULL);
    to_registers(A.db, 2);
    crdtdb_collect_stats st;
    ck_assert_int_eq(crdtdb_db_collect(A.db, 0, &st), 0);
    ck_assert_uint_eq(st.records, 2);
    check_log(A.db);
    char *m = tu_get(A.db, "moves", "m");
    ck_assert_str_eq(m, "{\"x\":1,\"y\":0}");
    free(m);
    sync_pair(&A, &B);
    same_state(&A, &B);
}
END_TEST

/* Collection with a peer in the horizon asks whose each register was: a
 * run's source, for every register in it. */
START_TEST(collect_names_sources_through_runs)
{
    put(&B, "add", "players", "p", "{\"a\":1,\"b\":2}");
    put(&B, "add", "players", "q", "{\"a\":1}");
    sync_pair(&B, &A);
    put(&A, "add", "players", "r", "{\"a\":1}");
    put(&A, "remove", "players", "p", NULL); /* A's remove of B's record */
    put(&B, "remove", "players", "q", NULL);
    sync_pair(&B, &A);
    sync_pair(&A, &B);
    sync_pair(&B, &A); /* acks both ways: everything stable */
    sync_pair(&A, &B);
    check_log(A.db);
    crdtdb_collect_stats st;
    ck_assert_int_eq(crdtdb_db_collect(A.db, 0, &st), 0);
    uint64_t collected = st.records;
    ck_assert_uint_ge(collected, 1);
    check_log(A.db);
    ck_assert_int_eq(crdtdb_db_collect(B.db, 0, &st), 0);
    check_log(B.db);
    uint8_t bid[CRDTDB_REPLICA_ID_BYTES];
    crdtdb_env_replica_id(B.env, bid);
    uint64_t fa, fb, sa, sb;
    ck_assert_int_eq(crdtdb_db_horizon_for(A.db, bid, &fa, &sa), 0);
    /* the same, with the log in the old format */
    replica_free(&A);
    replica_free(&B);
    setup();
    put(&B, "add", "players", "p", "{\"a\":1,\"b\":2}");
    put(&B, "add", "players", "q", "{\"a\":1}");
    sync_pair(&B, &A);
    put(&A, "add", "players", "r", "{\"a\":1}");
    put(&A, "remove", "players", "p", NULL);
    put(&B, "remove", "players", "q", NULL);
    sync_pair(&B, &A);
    sync_pair(&A, &B);
    sync_pair(&B, &A);
    sync_pair(&A, &B);
    to_registers(A.db, 1);
    ck_assert_int_eq(crdtdb_db_collect(A.db, 0, &st), 0);
    ck_assert_uint_eq(st.records, collected);
    check_log(A.db);
    crdtdb_env_replica_id(B.env, bid);
    ck_assert_int_eq(crdtdb_db_horizon_for(A.db, bid, &fb, &sb), 0);
    ck_assert_uint_eq(fa, fb);
    ck_assert_uint_eq(sa, sb);
}
END_TEST

typedef struct seen {
    char ev[32][48];
    int n;
} seen;

static void on_event(void *ctx, const crdtdb_event *ev)
{
    seen *s = ctx;
    if (s->n < 32)
        snprintf(s->ev[s->n++], sizeof s->ev[0], "%d %s/%s", (int)ev->type, ev->coll,
                 ev->id ? ev->id : "-");
}

static void poll_sees(crdtdb_db *other, seen *s, int n, const char *const *want)
{
    s->n = 0;
    size_t k;
    ck_assert_int_eq(crdtdb_db_poll(other, &k), 0);
    ck_assert_int_eq(s->n, n);
    for (int i = 0; i < n; i++)
        ck_assert_str_eq(s->ev[i], want[i]);
}

/* A second handle's observers, by crdtdb_db_poll, see commits made of
 * several runs, and runs rewritten as register entries alike. */
START_TEST(observers_poll_across_runs)
{
    crdtdb_db *other;
    ck_assert_int_eq(crdtdb_db_open(A.env, "d", &other), 0);
    seen s = {0};
    crdtdb_observer *o;
    ck_assert_int_eq(crdtdb_db_observe(other, NULL, on_event, &s, &o), 0);
    size_t k;
    ck_assert_int_eq(crdtdb_db_poll(other, &k), 0);
    crdtdb_txn *t;
    ck_assert_int_eq(crdtdb_txn_begin(A.db, 0, &t), 0);
    put_in(&A, t, "add", "players", "p", "{\"a\":1,\"b\":2}");
    put_in(&A, t, "add", "moves", "m", "{\"x\":1}");
    put_in(&A, t, "update", "players", "p", "{\"b\":3}");
    ck_assert_int_eq(crdtdb_txn_commit(t), 0);
    const char *w1[] = {"1 players/p", "1 moves/m"};
    poll_sees(other, &s, 2, w1);
    put(&A, "update", "players", "p", "{\"a\":4}");
    put(&A, "remove", "moves", "m", NULL);
    const char *w2[] = {"2 players/p", "3 moves/m"};
    poll_sees(other, &s, 2, w2);
    /* the same commits seen through register entries */
    put(&A, "update", "players", "p", "{\"c\":{\"d\":1,\"e\":2}}");
    put(&A, "add", "players", "q", "{\"a\":1,\"b\":2}");
    to_registers(A.db, 1);
    const char *w3[] = {"2 players/p", "1 players/q"};
    poll_sees(other, &s, 2, w3);
    /* mixed: a new run beside register entries */
    put(&A, "update", "players", "q", "{\"b\":3}");
    put(&A, "update", "players", "p", "{\"c\":{\"d\":2}}");
    check_log(A.db);
    const char *w4[] = {"2 players/q", "2 players/p"};
    poll_sees(other, &s, 2, w4);
    crdtdb_observer_close(o);
    crdtdb_db_close(other);
}
END_TEST

/* An environment whose log holds the entries builds before runs wrote
 * (and whose version says 1): it opens, reads, exports, observes, purges,
 * collects and backs up as ever, and new writes mix runs in. */
START_TEST(old_format_entries_keep_working)
{
    for (int i = 0; i < 5; i++) {
        char id[8], j[64];
        snprintf(id, sizeof id, "p%d", i);
        snprintf(j, sizeof j, "{\"a\":%d,\"b\":{\"c\":%d,\"d\":%d}}", i, i, i);
        put(&A, "add", "players", id, j);
        put(&A, "update", "players", id, "{\"e\":1}");
    }
    put(&B, "add", "moves", "m", "{\"x\":1,\"y\":2}");
    sync_pair(&B, &A); /* B's registers: source B */
    crdtdb_buf runs = CRDTDB_BUF_INIT, regs_ = CRDTDB_BUF_INIT;
    uint8_t bid[CRDTDB_REPLICA_ID_BYTES];
    crdtdb_env_replica_id(B.env, bid);
    exports(A.db, bid, &runs); /* for B: its own left out, by source */
    to_registers(A.db, 1);
    /* the version older builds wrote */
    MDB_txn *mt;
    ck_assert_int_eq(mdb_txn_begin(A.env->mdb, NULL, 0, &mt), 0);
    uint8_t ver[4];
    crdtdb__put_u32(ver, 1);
    MDB_val k = {7, (void *)"version"}, v = {4, ver};
    ck_assert_int_eq(mdb_put(mt, A.env->dbi_meta, &k, &v, 0), 0);
    ck_assert_int_eq(mdb_txn_commit(mt), 0);
    /* read only, it stays 1; a writer marks it 2 */
    replica_close(&A);
    crdtdb_env_options ro = A.opts;
    ro.flags |= CRDTDB_ENV_RDONLY;
    crdtdb_env *renv;
    crdtdb_db *rdb;
    ck_assert_int_eq(crdtdb_env_open(A.dir, &ro, &renv), 0);
    ck_assert_int_eq(crdtdb_db_open(renv, "d", &rdb), 0);
    exports(rdb, bid, &regs_);
    ck_assert_uint_eq(runs.len, regs_.len);
    ck_assert(memcmp(runs.data, regs_.data, runs.len) == 0);
    ck_assert_int_eq(mdb_txn_begin(renv->mdb, NULL, MDB_RDONLY, &mt), 0);
    ck_assert_int_eq(mdb_get(mt, renv->dbi_meta, &k, &v), 0);
    ck_assert_uint_eq(crdtdb__get_u32(v.mv_data), 1);
    mdb_txn_abort(mt);
    crdtdb_db_close(rdb);
    crdtdb_env_close(renv);
    replica_open(&A, "d");
    ck_assert_int_eq(mdb_txn_begin(A.env->mdb, NULL, MDB_RDONLY, &mt), 0);
    ck_assert_int_eq(mdb_get(mt, A.env->dbi_meta, &k, &v), 0);
    ck_assert_uint_eq(crdtdb__get_u32(v.mv_data), CRDTDB__FORMAT_VERSION);
    mdb_txn_abort(mt);
    size_t old, n = count_entries(A.db, &old);
    ck_assert_uint_eq(n, old);
    check_log(A.db);
    exports(A.db, bid, &regs_);
    ck_assert_uint_eq(runs.len, regs_.len);
    ck_assert(memcmp(runs.data, regs_.data, runs.len) == 0);
    /* writes on top: old entries superseded one by one, runs beside them */
    put(&A, "update", "players", "p0", "{\"a\":10}");
    put(&A, "update", "players", "p1", "{\"b\":{\"c\":10,\"d\":11}}");
    put(&A, "add", "players", "p2", "{\"z\":1}");
    put(&A, "remove", "players", "p3", NULL);
    put(&A, "add", "players", "n", "{\"a\":1,\"b\":2}");
    check_log(A.db);
    n = count_entries(A.db, &old);
    ck_assert_uint_gt(old, 0);
    ck_assert_uint_lt(old, n);
    ck_assert_int_eq(crdtdb_db_purge(A.db, "players", "p4"), 0);
    check_log(A.db);
    crdtdb_collect_stats st;
    ck_assert_int_eq(crdtdb_db_collect(A.db, 0, &st), 0);
    check_log(A.db);
    /* a backup of the mixed log: the same log, the same exports */
    char *path = tu_tmpdir();
    ck_assert_int_eq(crdtdb_env_backup(A.env, path), 0);
    crdtdb_env *cenv;
    crdtdb_db *cdb;
    ck_assert_int_eq(crdtdb_env_open(path, &A.opts, &cenv), 0);
    ck_assert_int_eq(crdtdb_db_open(cenv, "d", &cdb), 0);
    check_log(cdb);
    char *da = dump(&A);
    replica C = {.env = cenv, .db = cdb};
    char *dc = dump(&C);
    ck_assert_str_eq(da, dc);
    free(da);
    free(dc);
    ck_assert_uint_eq(count_entries(cdb, NULL), count_entries(A.db, NULL));
    crdtdb_db_close(cdb);
    crdtdb_env_close(cenv);
    tu_rmrf(path);
    free(path);
    /* and it syncs */
    sync_pair(&A, &B);
    sync_pair(&B, &A);
    same_state(&A, &B);
    check_log(B.db);
    same_exports_as_registers(&A, bid);
    crdtdb_buf_free(&runs);
    crdtdb_buf_free(&regs_);
}
END_TEST

/* A version this build does not know is refused. */
START_TEST(unknown_version_refused)
{
    MDB_txn *mt;
    ck_assert_int_eq(mdb_txn_begin(A.env->mdb, NULL, 0, &mt), 0);
    uint8_t ver[4];
    crdtdb__put_u32(ver, CRDTDB__FORMAT_VERSION + 1);
    MDB_val k = {7, (void *)"version"}, v = {4, ver};
    ck_assert_int_eq(mdb_put(mt, A.env->dbi_meta, &k, &v, 0), 0);
    ck_assert_int_eq(mdb_txn_commit(mt), 0);
    replica_close(&A);
    crdtdb_env *e;
    ck_assert_int_eq(crdtdb_env_open(A.dir, &A.opts, &e), CRDTDB_EVERSION);
}
END_TEST

/* A replica made from r's whole export holds what r shows. */
static void export_rebuilds(replica *r)
{
    replica C;
    replica_init(&C, &now_ms, "d");
    sync_pair(r, &C);
    char *a = dump(r), *c = dump(&C);
    ck_assert_str_eq(a, c);
    free(a);
    free(c);
    replica_free(&C);
}

/* Random writes, merges, old-format rewrites and (purges) purges, which
 * forget locally: after each step the log matches the records; the
 * replicas converge without purges, and each one's export rebuilds it. */
static void random_history(unsigned seed, int purges)
{
    static const char *fields[] = {"a", "b", "c", "d"};
    replica *R[2] = {&A, &B};
    for (int step = 0; step < 500; step++) {
        replica *r = R[rand() % 2];
        crdtdb_txn *t;
        ck_assert_int_eq(crdtdb_txn_begin(r->db, 0, &t), 0);
        int nops = 1 + rand() % 4;
        for (int i = 0; i < nops; i++) {
            char id[8], j[128];
            snprintf(id, sizeof id, "r%d", rand() % 6);
            int op = rand() % 10;
            if (op < 4) {
                int f = rand() % 4;
                snprintf(j, sizeof j, "{\"%s\":%d,\"%s\":{\"x\":%d,\"y\":%d}}", fields[f],
                         rand() % 9, fields[(f + 1 + rand() % 3) % 4], rand() % 9, rand() % 9);
                put_in(r, t, "add", rand() % 2 ? "players" : "moves", id, j);
            } else if (op < 9) {
                snprintf(j, sizeof j, "{\"%s\":%d}", fields[rand() % 4], rand() % 9);
                crdtdb_buf b = CRDTDB_BUF_INIT;
                int visible;
                ck_assert_int_eq(crdtdb_db_get_by_id(r->db, t, "players", id, &b, &visible), 0);
                put_in(r, t, visible ? "update" : "add", "players", id, j);
                crdtdb_buf_free(&b);
            } else {
                put_in(r, t, "remove", "moves", id, NULL);
            }
        }
        ck_assert_int_eq(crdtdb_txn_commit(t), 0);
        int what = rand() % 20;
        if (what < 4)
            sync_pair(r, R[r == &A]);
        else if (what == 4)
            to_registers(r->db, 1 + rand() % 3);
        else if (what == 5 && purges) {
            char id[8];
            snprintf(id, sizeof id, "r%d", rand() % 6);
            ck_assert_int_eq(crdtdb_db_purge(r->db, "players", id), 0);
        }
        if (step % 10 == 0 || what <= 5) {
            check_log(A.db);
            check_log(B.db);
        }
    }
    sync_pair(&A, &B);
    sync_pair(&B, &A);
    sync_pair(&A, &B);
    check_log(A.db);
    check_log(B.db);
    char *a = dump(&A), *b = dump(&B);
    ck_assert_msg(purges || strcmp(a, b) == 0, "seed %u:\n%s\nvs\n%s", seed, a, b);
    free(a);
    free(b);
    export_rebuilds(&A);
    export_rebuilds(&B);
}

START_TEST(random_histories_keep_the_log_exact)
{
    unsigned seed = tu_seed();
    srand(seed);
    random_history(seed, 0);
    teardown();
    setup();
    random_history(seed, 1);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("log");
    TCase *tc = tcase_create("runs");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, runs_partially_superseded);
    tcase_add_test(tc, runs_superseded_in_their_transaction);
    tcase_add_test(tc, many_runs_of_one_record);
    tcase_add_test(tc, nothing_after_the_last_sequence);
    tcase_add_test(tc, records_written_in_turn_decode_once);
    tcase_add_test(tc, catch_up_from_inside_runs);
    tcase_add_test(tc, purge_and_collect_take_every_run);
    tcase_add_test(tc, collect_names_sources_through_runs);
    tcase_add_test(tc, observers_poll_across_runs);
    tcase_add_test(tc, old_format_entries_keep_working);
    tcase_add_test(tc, unknown_version_refused);
    tcase_add_test(tc, random_histories_keep_the_log_exact);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return tu_run(suite()); }
