/* Origins by number (storage/origins.h): record blobs name the replicas
 * that wrote them by env-wide numbers.  A number an aborted transaction
 * gave is never read as its key afterwards, handles on other threads
 * number keys apart, and environments whose blobs hold keys (format 2)
 * keep working and move to numbers as records are written again. */
#include <check.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crdt/buf.h"
#include "crdt/record.h"
#include "storage/internal.h"
#include "tests/replica.h"
#include "tests/testutil.h"

static uint64_t now_ms = 1700000000000ull;
static replica A, B, C;

static void setup(void)
{
    replica_init(&A, &now_ms, "d");
    replica_init(&B, &now_ms, "d");
    replica_init(&C, &now_ms, "d");
}

static void teardown(void)
{
    replica_free(&A);
    replica_free(&B);
    replica_free(&C);
}

/* The key that wrote record (coll, id)'s base, read through handle db's
 * table in a snapshot of its own. */
static void base_origin(crdtdb_db *db, const char *coll, const char *id,
                        uint8_t out[CRDTDB_REPLICA_ID_BYTES], int *version)
{
    uint8_t k[CRDTDB__RECKEY_MAX];
    uint16_t c = strcmp(coll, "players") == 0 ? 0 : 1;
    MDB_val kv = {crdtdb__reckey(k, db->num, c, id, strlen(id)), k}, v;
    MDB_txn *t;
    ck_assert_int_eq(mdb_txn_begin(db->env->mdb, NULL, MDB_RDONLY, &t), 0);
    ck_assert_int_eq(mdb_get(t, db->env->dbi_records, &kv, &v), 0);
    if (version)
        *version = ((const uint8_t *)v.mv_data)[0];
    crdtdb__record r;
    crdtdb__record_init(&r);
    ck_assert_int_eq(crdtdb__record_decode(&r, v.mv_data, v.mv_size,
                                           crdtdb__origins_at(&db->orig, t)), 0);
    ck_assert_int_ne(r.base_kind, CRDTDB__BASE_NONE);
    memcpy(out, r.origins[r.base_origin], CRDTDB_REPLICA_ID_BYTES);
    crdtdb__record_free(&r);
    mdb_txn_abort(t);
}

static void assert_written_by(crdtdb_db *db, const char *id, replica *w)
{
    uint8_t got[CRDTDB_REPLICA_ID_BYTES], want[CRDTDB_REPLICA_ID_BYTES];
    crdtdb_env_replica_id(w->env, want);
    base_origin(db, "players", id, got, NULL);
    ck_assert_mem_eq(got, want, sizeof want);
}

/* A holds "a" by A, "b" (its value b_json) by B and "c" by C. */
static void three_writers(const char *b_json)
{
    put(&B, "add", "players", "b", b_json);
    put(&C, "add", "players", "c", "{\"a\":1}");
    put(&A, "add", "players", "a", "{\"a\":1}");
    sync_pair(&B, &A);
    sync_pair(&C, &A);
}

/* A record stores a byte or two per origin, not its 32-byte key. */
START_TEST(origins_cost_a_number)
{
    three_writers("{\"a\":1}");
    put(&A, "update", "players", "b", "{\"x\":2}"); /* two origins */
    assert_written_by(A.db, "a", &A);
    assert_written_by(A.db, "b", &B);
    assert_written_by(A.db, "c", &C);
    crdtdb_db_stats st;
    ck_assert_int_eq(crdtdb_db_stat(A.db, &st), 0);
    /* key (4 + 2 + 1) + blob of about 40: under 32 bytes a key would add */
    ck_assert_uint_lt(st.record_bytes, 3 * (7 + 48));
    /* a fresh handle (nothing cached) reads the same */
    crdtdb_db *fresh;
    ck_assert_int_eq(crdtdb_db_open(A.env, "d", &fresh), 0);
    assert_written_by(fresh, "b", &B);
    assert_written_by(fresh, "c", &C);
    crdtdb_db_close(fresh);
    /* and the records travel on with their keys */
    sync_pair(&A, &C);
    assert_written_by(C.db, "b", &B);
    char *da = dump(&A), *dc = dump(&C);
    ck_assert_str_eq(da, dc);
    free(da);
    free(dc);
}
END_TEST

/* A number given in a transaction that aborts is given again; the handle
 * that gave it first must not read it as the first key. */
START_TEST(aborted_number_is_forgotten)
{
    uint8_t kb[CRDTDB_REPLICA_ID_BYTES], kc[CRDTDB_REPLICA_ID_BYTES];
    crdtdb_env_replica_id(B.env, kb);
    crdtdb_env_replica_id(C.env, kc);
    crdtdb_txn *t;
    uint32_t nb, nc, nb2;
    ck_assert_int_eq(crdtdb_txn_begin(A.db, 0, &t), 0);
    const crdtdb__origin_table *ot = crdtdb__origins_at(&A.db->orig, t->mt);
    ck_assert_int_eq(ot->num_of(ot->ctx, kb, &nb), 0);
    ck_assert_int_eq(ot->num_of(ot->ctx, kb, &nb2), 0);
    ck_assert_uint_eq(nb, nb2);
    int rc = 0;
    ck_assert_ptr_nonnull(ot->key_of(ot->ctx, nb, &rc));
    crdtdb_txn_abort(t);
    ck_assert_int_eq(crdtdb_txn_begin(A.db, 0, &t), 0);
    ot = crdtdb__origins_at(&A.db->orig, t->mt);
    ck_assert_int_eq(ot->num_of(ot->ctx, kc, &nc), 0);
    ck_assert_uint_eq(nc, nb); /* the same number, now C's */
    ck_assert_mem_eq(ot->key_of(ot->ctx, nc, &rc), kc, sizeof kc);
    ck_assert_int_eq(crdtdb_txn_commit(t), 0);
    ck_assert_int_eq(crdtdb_txn_begin(A.db, CRDTDB_TXN_RDONLY, &t), 0);
    ot = crdtdb__origins_at(&A.db->orig, t->mt);
    ck_assert_mem_eq(ot->key_of(ot->ctx, nc, &rc), kc, sizeof kc);
    ck_assert_ptr_null(ot->key_of(ot->ctx, nc + 1, &rc)); /* never given */
    ck_assert_int_eq(rc, CRDTDB_ECORRUPT);
    crdtdb_txn_abort(t);

    /* the same through applies: a batch that fails after merging B's
     * delta stores nothing, and D's delta takes B's number */
    replica D, E;
    replica_init(&D, &now_ms, "d");
    replica_init(&E, &now_ms, "d");
    E.offset_ms = 6 * 3600 * 1000; /* far ahead: refused (ECLOCK) */
    put(&B, "add", "players", "b", "{\"a\":1}");
    put(&E, "add", "players", "e", "{\"a\":1}");
    put(&D, "add", "players", "d", "{\"a\":1}");
    net qb = {0}, qe = {0}, qd = {0};
    ck_assert_int_eq(crdtdb_db_export(B.db, 0, NULL, to_net, &qb, NULL), 0);
    ck_assert_int_eq(crdtdb_db_export(E.db, 0, NULL, to_net, &qe, NULL), 0);
    ck_assert_int_eq(crdtdb_db_export(D.db, 0, NULL, to_net, &qd, NULL), 0);
    const uint8_t *ds[2] = {qb.msgs[0].data, qe.msgs[0].data};
    size_t ls[2] = {qb.msgs[0].len, qe.msgs[0].len}, done = 9;
    crdtdb_apply_info inf[2];
    ck_assert_int_eq(crdtdb_db_apply_batch(A.db, ds, ls, 2, inf, &done), CRDTDB_ECLOCK);
    ck_assert_uint_eq(done, 1);
    ck_assert_ptr_null(tu_get(A.db, "players", "b"));
    ck_assert_int_eq(crdtdb_db_apply(A.db, qd.msgs[0].data, qd.msgs[0].len, NULL), 0);
    assert_written_by(A.db, "d", &D);
    ck_assert_int_eq(crdtdb_db_apply(A.db, qb.msgs[0].data, qb.msgs[0].len, NULL), 0);
    assert_written_by(A.db, "b", &B);
    assert_written_by(A.db, "d", &D);
    net_free(&qb);
    net_free(&qe);
    net_free(&qd);
    replica_free(&D);
    replica_free(&E);
}
END_TEST

/* Handles on two threads number keys in their own transactions, some
 * aborted: every committed number names its key for every handle. */
#define ROUNDS 300
typedef struct worker {
    crdtdb_env *env;
    unsigned seed;
    uint8_t keys[ROUNDS][CRDTDB_REPLICA_ID_BYTES];
    uint32_t nums[ROUNDS];
    int kept[ROUNDS];
    int failed;
} worker;

static void *work(void *arg)
{
    worker *w = arg;
    crdtdb_db *db;
    if (crdtdb_db_open(w->env, "d", &db)) {
        w->failed = 1;
        return NULL;
    }
    for (int i = 0; i < ROUNDS && !w->failed; i++) {
        for (size_t b = 0; b < CRDTDB_REPLICA_ID_BYTES; b++)
            w->keys[i][b] = (uint8_t)rand_r(&w->seed);
        crdtdb_txn *t;
        if (crdtdb_txn_begin(db, 0, &t)) {
            w->failed = 2;
            break;
        }
        const crdtdb__origin_table *ot = crdtdb__origins_at(&db->orig, t->mt);
        int rc = 0;
        const uint8_t *k;
        if (ot->num_of(ot->ctx, w->keys[i], &w->nums[i]) ||
            !(k = ot->key_of(ot->ctx, w->nums[i], &rc)) ||
            memcmp(k, w->keys[i], CRDTDB_REPLICA_ID_BYTES) != 0)
            w->failed = 3;
        /* and an earlier kept one, through this handle's cache */
        int j = i ? (int)(rand_r(&w->seed) % (unsigned)i) : 0;
        if (i && w->kept[j] &&
            (!(k = ot->key_of(ot->ctx, w->nums[j], &rc)) ||
             memcmp(k, w->keys[j], CRDTDB_REPLICA_ID_BYTES) != 0))
            w->failed = 4;
        w->kept[i] = rand_r(&w->seed) % 3 != 0;
        if (w->kept[i]) {
            if (crdtdb_txn_commit(t))
                w->failed = 5;
        } else {
            crdtdb_txn_abort(t);
        }
    }
    crdtdb_db_close(db);
    return NULL;
}

START_TEST(threads_number_apart)
{
    worker *w = calloc(2, sizeof *w);
    ck_assert_ptr_nonnull(w);
    pthread_t th[2];
    for (int i = 0; i < 2; i++) {
        w[i].env = A.env;
        w[i].seed = tu_seed() + (unsigned)i;
        ck_assert_int_eq(pthread_create(&th[i], NULL, work, &w[i]), 0);
    }
    for (int i = 0; i < 2; i++)
        ck_assert_int_eq(pthread_join(th[i], NULL), 0);
    ck_assert_int_eq(w[0].failed, 0);
    ck_assert_int_eq(w[1].failed, 0);
    crdtdb_db *fresh;
    ck_assert_int_eq(crdtdb_db_open(A.env, "d", &fresh), 0);
    crdtdb_txn *t;
    ck_assert_int_eq(crdtdb_txn_begin(fresh, CRDTDB_TXN_RDONLY, &t), 0);
    const crdtdb__origin_table *ot = crdtdb__origins_at(&fresh->orig, t->mt);
    size_t kept = 0;
    for (int i = 0; i < 2; i++)
        for (int r = 0; r < ROUNDS; r++) {
            if (!w[i].kept[r])
                continue;
            kept++;
            int rc = 0;
            const uint8_t *k = ot->key_of(ot->ctx, w[i].nums[r], &rc);
            ck_assert_ptr_nonnull(k);
            ck_assert_mem_eq(k, w[i].keys[r], CRDTDB_REPLICA_ID_BYTES);
        }
    ck_assert_uint_gt(kept, ROUNDS / 2);
    crdtdb_txn_abort(t);
    crdtdb_db_close(fresh);
    free(w);
}
END_TEST

/* An environment of format 2, its blobs naming origins by key and its
 * peers without numbers' way back: it reads as before, a writer marks it
 * 3, and records written again name origins by number. */
START_TEST(blobs_with_keys_keep_working)
{
    three_writers("{\"a\":1,\"m\":{\"n\":2}}");
    char *before = dump(&A);
    /* rewrite as format 2 wrote it */
    MDB_txn *mt;
    ck_assert_int_eq(mdb_txn_begin(A.env->mdb, NULL, 0, &mt), 0);
    MDB_cursor *c;
    ck_assert_int_eq(mdb_cursor_open(mt, A.env->dbi_records, &c), 0);
    MDB_val k, v;
    crdtdb__record r;
    crdtdb__record_init(&r);
    crdtdb_buf enc = CRDTDB_BUF_INIT, vis = CRDTDB_BUF_INIT;
    int n = 0;
    for (int rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        ck_assert_int_eq(((uint8_t *)v.mv_data)[0], 4);
        ck_assert_int_eq(crdtdb__record_decode(&r, v.mv_data, v.mv_size,
                                               crdtdb__origins_at(&A.db->orig, mt)), 0);
        ck_assert_int_eq(crdtdb__buf_set(&vis, r.visible, r.visible_len), 0);
        ck_assert_int_eq(crdtdb__record_encode(&r, vis.data, vis.len, NULL, NULL, &enc), 0);
        MDB_val nv = {enc.len, enc.data};
        /* the key off the page: a put of another size moves the node */
        uint8_t kc[CRDTDB__RECKEY_MAX];
        memcpy(kc, k.mv_data, k.mv_size);
        MDB_val kk = {k.mv_size, kc};
        ck_assert_int_eq(mdb_cursor_put(c, &kk, &nv, MDB_CURRENT), 0);
        n++;
    }
    ck_assert_int_eq(n, 3);
    mdb_cursor_close(c);
    ck_assert_int_eq(mdb_cursor_open(mt, A.env->dbi_peerids, &c), 0);
    for (int rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(c, &k, &v, MDB_NEXT))
        if (k.mv_size == 4)
            ck_assert_int_eq(mdb_cursor_del(c, 0), 0);
    mdb_cursor_close(c);
    uint8_t ver[4];
    crdtdb__put_u32(ver, 2);
    MDB_val vk = {7, (void *)"version"}, vv = {4, ver};
    ck_assert_int_eq(mdb_put(mt, A.env->dbi_meta, &vk, &vv, 0), 0);
    ck_assert_int_eq(mdb_txn_commit(mt), 0);
    crdtdb__record_free(&r);
    crdtdb_buf_free(&enc);
    crdtdb_buf_free(&vis);

    /* read only: as before, and still 2 */
    replica_close(&A);
    crdtdb_env_options ro = A.opts;
    ro.flags |= CRDTDB_ENV_RDONLY;
    replica R = {.now = &now_ms, .opts = ro};
    ck_assert_int_eq(crdtdb_env_open(A.dir, &ro, &R.env), 0);
    ck_assert_int_eq(crdtdb_db_open(R.env, "d", &R.db), 0);
    char *ro_dump = dump(&R);
    ck_assert_str_eq(ro_dump, before);
    free(ro_dump);
    int version;
    uint8_t got[CRDTDB_REPLICA_ID_BYTES];
    base_origin(R.db, "players", "b", got, &version);
    ck_assert_int_eq(version, 3);
    crdtdb_db_close(R.db);
    crdtdb_env_close(R.env);

    /* a writer: marked 3; what it writes again goes by number */
    replica_open(&A, "d");
    ck_assert_int_eq(mdb_txn_begin(A.env->mdb, NULL, MDB_RDONLY, &mt), 0);
    ck_assert_int_eq(mdb_get(mt, A.env->dbi_meta, &vk, &vv), 0);
    ck_assert_uint_eq(crdtdb__get_u32(vv.mv_data), CRDTDB__FORMAT_VERSION);
    mdb_txn_abort(mt);
    char *after = dump(&A);
    ck_assert_str_eq(after, before);
    free(after);
    put(&A, "update", "players", "b", "{\"x\":1}");
    base_origin(A.db, "players", "b", got, &version);
    ck_assert_int_eq(version, 4);
    assert_written_by(A.db, "b", &B);
    base_origin(A.db, "players", "c", got, &version);
    ck_assert_int_eq(version, 3);
    assert_written_by(A.db, "c", &C);
    /* and it syncs both ways */
    put(&C, "update", "players", "c", "{\"y\":1}");
    sync_pair(&C, &A);
    sync_pair(&A, &B);
    sync_pair(&A, &C);
    assert_written_by(A.db, "c", &C);
    char *da = dump(&A), *db_ = dump(&B), *dc = dump(&C);
    ck_assert_str_eq(da, db_);
    ck_assert_str_eq(da, dc);
    free(da);
    free(db_);
    free(dc);
    free(before);
}
END_TEST

/* An observer (called after commit, which "may write in a new
 * transaction") that leaves its write transaction open past the callback:
 * the observed transaction's end must leave that one's pending numbers. */
static crdtdb_txn *held;
static void keep_open(void *ctx, const crdtdb_event *ev)
{
    (void)ev;
    replica *r = ctx;
    if (held)
        return;
    ck_assert_int_eq(crdtdb_txn_begin(r->db, 0, &held), 0);
    put_in(r, held, "add", "players", "a1", "{\"a\":1}"); /* numbers A's key: pending */
}

START_TEST(observer_transaction_keeps_its_pending_numbers)
{
    crdtdb_observer *obs;
    ck_assert_int_eq(crdtdb_db_observe(A.db, NULL, keep_open, &A, &obs), 0);
    put(&B, "add", "players", "b1", "{\"a\":1}");
    sync_pair(&B, &A); /* commits; the observer opens `held` */
    ck_assert_ptr_nonnull(held);
    put_in(&A, held, "add", "players", "a2", "{\"a\":1}");
    crdtdb_txn_abort(held); /* A's number goes back */
    held = NULL;
    crdtdb_observer_close(obs);
    /* another handle gives that number to C */
    crdtdb_db *h2;
    ck_assert_int_eq(crdtdb_db_open(A.env, "d", &h2), 0);
    put(&C, "add", "players", "c1", "{\"a\":1}");
    net q = {0};
    ck_assert_int_eq(crdtdb_db_export(C.db, 0, NULL, to_net, &q, NULL), 0);
    ck_assert_int_eq(crdtdb_db_apply(h2, q.msgs[0].data, q.msgs[0].len, NULL), 0);
    net_free(&q);
    assert_written_by(h2, "c1", &C);
    crdtdb_db_close(h2);
    /* and A.db reads it as C's, not as its own */
    assert_written_by(A.db, "c1", &C);
    ck_assert_ptr_null(tu_get(A.db, "players", "a1"));
    put(&A, "add", "players", "a3", "{\"a\":1}");
    assert_written_by(A.db, "a3", &A);
    assert_written_by(A.db, "b1", &B);
}
END_TEST

/* The numbers are never reclaimed, so they are bounded: a write naming a
 * new origin past max_origins is refused whole, with a message saying so;
 * writes by replicas already numbered go on. */
START_TEST(new_origins_past_the_limit_are_refused)
{
    replica L;
    crdtdb_env_options o;
    crdtdb_env_options_init(&o);
    ck_assert_int_eq(o.max_origins, 1u << 24);
    replica_init(&L, &now_ms, "d");
    replica_close(&L);
    L.opts.max_origins = 2; /* numbers 1 and 2 */
    replica_open(&L, "d");
    put(&L, "add", "players", "l", "{\"a\":1}"); /* L's own key: 1 */
    put(&B, "add", "players", "b", "{\"a\":1}");
    sync_pair(&B, &L); /* B, sender and origin: 2 */
    assert_written_by(L.db, "b", &B);
    put(&C, "add", "players", "c", "{\"a\":1}");
    net q = {0};
    ck_assert_int_eq(crdtdb_db_export(C.db, 0, NULL, to_net, &q, NULL), 0);
    ck_assert_int_eq(crdtdb_db_apply(L.db, q.msgs[0].data, q.msgs[0].len, NULL), CRDTDB_EMAPFULL);
    ck_assert_ptr_nonnull(strstr(crdtdb_db_errmsg(L.db), "max_origins"));
    ck_assert_ptr_null(tu_get(L.db, "players", "c"));
    net_free(&q);
    put(&B, "update", "players", "b", "{\"x\":1}");
    sync_pair(&B, &L);
    char *j = tu_get(L.db, "players", "b");
    ck_assert_str_eq(j, "{\"a\":1,\"x\":1}");
    free(j);
    put(&L, "update", "players", "l", "{\"x\":1}");
    replica_free(&L);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("origins");
    TCase *tc = tcase_create("origins");
    tcase_set_timeout(tc, 60);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, origins_cost_a_number);
    tcase_add_test(tc, aborted_number_is_forgotten);
    tcase_add_test(tc, threads_number_apart);
    tcase_add_test(tc, blobs_with_keys_keep_working);
    tcase_add_test(tc, observer_transaction_keeps_its_pending_numbers);
    tcase_add_test(tc, new_origins_past_the_limit_are_refused);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return tu_run(suite()); }
