/* Error detail: after every failing storage call the handle's message names
 * that failure, never an earlier call's.  Each case first makes a different
 * error (the primer), then the one under test, and checks the code and a
 * phrase of the message.  ENOMEM is not walked: the library has no
 * allocator hook to fail on purpose. */
#include <check.h>
#include <lmdb.h>
#include <msgpack.h>
#include <stdlib.h>
#include <string.h>

#include "storage/internal.h"
#include "tests/replica.h"
#include "tests/testutil.h"

static uint64_t now_ms = 1700000000000ull;
static replica A, B;
static crdtdb_buf mp;

static void setup(void)
{
    replica_init(&A, &now_ms, "game");
    replica_init(&B, &now_ms, "game");
}

static void teardown(void)
{
    replica_free(&A);
    replica_free(&B);
    crdtdb_buf_free(&mp);
}

/* A different failure than the one under test, so a stale message shows. */
static void prime(crdtdb_db *db, int avoid)
{
    static crdtdb_buf out; /* (a static: the primer fails before writing it) */
    int found;
    if (avoid != CRDTDB_ENOCOLL) {
        ck_assert_int_eq(crdtdb_db_get_by_id(db, NULL, "nope", "x", &out, &found),
                         CRDTDB_ENOCOLL);
    } else {
        ck_assert_int_eq(crdtdb_db_get_by_id(db, NULL, "players", "", &out, &found),
                         CRDTDB_EBADID);
    }
}

/* rc is `want` and db's message holds `phrase`. */
#define CHECK_ERR(db, call, want, phrase)                                            \
    do {                                                                             \
        prime((db), (want));                                                         \
        int rc_ = (call);                                                            \
        ck_assert_msg(rc_ == (want), "%s: %s, not %s (%s)", #call, crdtdb_errname(rc_), \
                      crdtdb_errname(want), crdtdb_db_errmsg(db));                   \
        ck_assert_msg(strstr(crdtdb_db_errmsg(db), (phrase)) != NULL,                \
                      "%s: message '%s' lacks '%s'", #call, crdtdb_db_errmsg(db),     \
                      (phrase));                                                     \
    } while (0)

static int fail_sink(void *ctx, const uint8_t *d, size_t n)
{
    (void)ctx;
    (void)d;
    (void)n;
    return CRDTDB_EIO;
}

static int stop_sink(void *ctx, const uint8_t *d, size_t n)
{
    (void)d;
    (void)n;
    ++*(int *)ctx;
    return CRDTDB_STOP;
}

/* A shared export's sink may use the handle: no snapshot is held then. */
static int reading_sink(void *ctx, const uint8_t *d, size_t n)
{
    (void)d;
    (void)n;
    uint64_t seq;
    return crdtdb_db_seq(ctx, NULL, &seq);
}

START_TEST(local_calls_name_their_failure)
{
    crdtdb_db *db = A.db;
    int found;
    tu_mp(&mp, "{\"v\":1}");
    CHECK_ERR(db, crdtdb_db_add(db, NULL, "players", "", mp.data, mp.len), CRDTDB_EBADID,
              "invalid record id");
    CHECK_ERR(db, crdtdb_db_add(db, NULL, "nope", "p", mp.data, mp.len), CRDTDB_ENOCOLL,
              "Collection 'nope' not found");
    CHECK_ERR(db, crdtdb_db_add(db, NULL, "players", "p", (const uint8_t *)"\x01", 1),
              CRDTDB_EBADVALUE, "map");
    /* {"v": 8 KiB string}, over the replica's 4 KiB max_value_size */
    static char big[8192];
    memset(big, 'a', sizeof big);
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 1);
    msgpack_pack_str_with_body(&pk, "v", 1);
    msgpack_pack_str_with_body(&pk, big, sizeof big);
    CHECK_ERR(db, crdtdb_db_add(db, NULL, "players", "p", (const uint8_t *)sb.data, sb.size),
              CRDTDB_ETOOBIG, "exceeds the limit");
    msgpack_sbuffer_destroy(&sb);
    tu_mp(&mp, "{\"v\":1}");
    CHECK_ERR(db, crdtdb_db_update(db, NULL, "players", "ghost", mp.data, mp.len),
              CRDTDB_ENOTFOUND, "not found");
    CHECK_ERR(db, crdtdb_db_peer_get(db, NULL, NULL, &found), CRDTDB_EINVAL,
              "invalid argument");
    crdtdb_db_set_readonly(db, 1);
    CHECK_ERR(db, crdtdb_db_add(db, NULL, "players", "p", mp.data, mp.len), CRDTDB_EROFS,
              "Read only access");
    crdtdb_db_set_readonly(db, 0);
}
END_TEST

START_TEST(transactions_name_their_failure)
{
    crdtdb_db *db = A.db;
    crdtdb_txn *t, *t2;
    ck_assert_int_eq(crdtdb_txn_begin(db, 0, &t), 0);
    CHECK_ERR(db, crdtdb_txn_begin(db, 0, &t2), CRDTDB_EBUSY, "already open");
    tu_mp(&mp, "{\"v\":1}");
    ck_assert_int_eq(crdtdb_db_add(db, t, "players", "", mp.data, mp.len), CRDTDB_EBADID);
    /* later failures do not replace the batch's own at commit */
    CHECK_ERR(db, crdtdb_txn_commit(t), CRDTDB_EBADID, "invalid record id");
    crdtdb_db *other;
    ck_assert_int_eq(crdtdb_db_open(A.env, "game", &other), 0);
    ck_assert_int_eq(crdtdb_txn_begin(other, CRDTDB_TXN_RDONLY, &t2), 0);
    int found;
    CHECK_ERR(db, crdtdb_db_get_by_id(db, t2, "players", "p", &mp, &found), CRDTDB_EINVAL,
              "another database handle");
    crdtdb_txn_abort(t2);
    crdtdb_db_close(other);
}
END_TEST

START_TEST(bad_deltas_name_their_failure)
{
    put(&A, "add", "players", "p", "{\"v\":1}");
    net q = {0};
    ck_assert_int_eq(crdtdb_db_export(A.db, 0, NULL, to_net, &q, NULL), 0);
    crdtdb_buf *d = &q.msgs[0];
    CHECK_ERR(B.db, crdtdb_db_apply(B.db, d->data, d->len - 1, NULL), CRDTDB_EBADVALUE,
              "malformed");
    d->data[d->len / 2] ^= 1;
    CHECK_ERR(B.db, crdtdb_db_apply(B.db, d->data, d->len, NULL), CRDTDB_EBADSIG, "signature");
    d->data[d->len / 2] ^= 1;
    net_free(&q);
    net q2 = {0};
    A.offset_ms = 3600 * 1000;
    put(&A, "update", "players", "p", "{\"v\":2}");
    ck_assert_int_eq(crdtdb_db_export(A.db, 0, NULL, to_net, &q2, NULL), 0);
    CHECK_ERR(B.db, crdtdb_db_apply(B.db, q2.msgs[0].data, q2.msgs[0].len, NULL),
              CRDTDB_ECLOCK, "ahead of local time");
    net_free(&q2);
    A.offset_ms = 0;
}
END_TEST

START_TEST(sinks_fail_or_stop)
{
    put(&A, "add", "players", "p", "{\"v\":1}");
    put(&A, "add", "players", "q", "{\"v\":1}");
    /* a sink's own code, with its default text */
    CHECK_ERR(A.db, crdtdb_db_export(A.db, 0, NULL, fail_sink, NULL, NULL), CRDTDB_EIO,
              crdtdb_strerror(CRDTDB_EIO));
    /* a stop is not an error */
    int n = 0;
    crdtdb_export_info info;
    ck_assert_int_eq(crdtdb_db_export(A.db, 0, NULL, stop_sink, &n, &info), 0);
    ck_assert_int_eq(n, 1);
    ck_assert_uint_eq(info.deltas, 1);
    crdtdb_export_options eo;
    memset(&eo, 0, sizeof eo);
    eo.flags = CRDTDB_EXPORT_SHARED;
    n = 0;
    ck_assert_int_eq(crdtdb_db_export_for(A.db, 0, B.env->pk, &eo, stop_sink, &n, &info), 0);
    ck_assert_int_eq(n, 1);
    ck_assert_int_eq(crdtdb_db_export_for(A.db, 0, B.env->pk, &eo, reading_sink, A.db, &info), 0);
}
END_TEST

/* Overwrites record (coll 0, id) of db with bytes that do not decode. */
static void damage_record(replica *r, const char *id, int remove)
{
    MDB_txn *mt;
    ck_assert_int_eq(mdb_txn_begin(r->env->mdb, NULL, 0, &mt), 0);
    uint8_t k[CRDTDB__RECKEY_MAX];
    MDB_val key = {crdtdb__reckey(k, r->db->num, 0, id, strlen(id)), k};
    MDB_val v = {3, (void *)"\x02\xff\xff"}; /* the current version, then junk */
    ck_assert_int_eq(remove ? mdb_del(mt, r->env->dbi_records, &key, NULL)
                            : mdb_put(mt, r->env->dbi_records, &key, &v, 0), 0);
    ck_assert_int_eq(mdb_txn_commit(mt), 0);
}

START_TEST(damaged_records_are_named)
{
    put(&A, "add", "players", "p", "{\"v\":1}");
    put(&A, "add", "players", "q", "{\"v\":1}");
    damage_record(&A, "p", 0);
    int found;
    net q = {0};
    CHECK_ERR(A.db, crdtdb_db_get_by_id(A.db, NULL, "players", "p", &mp, &found),
              CRDTDB_ECORRUPT, "unreadable");
    CHECK_ERR(A.db, crdtdb_db_export(A.db, 0, NULL, to_net, &q, NULL), CRDTDB_ECORRUPT,
              "unreadable record");
    damage_record(&A, "q", 1);
    uint64_t seq;
    ck_assert_int_eq(crdtdb_db_seq(A.db, NULL, &seq), 0);
    CHECK_ERR(A.db, crdtdb_db_export(A.db, seq - 1, NULL, to_net, &q, NULL), CRDTDB_ECORRUPT,
              "missing record");
    net_free(&q);
}
END_TEST

START_TEST(environment_calls_name_their_failure)
{
    crdtdb_db *d;
    const char *c[] = {"x"};
    ck_assert_int_eq(crdtdb_db_create(A.env, "", c, 1, &d), CRDTDB_EBADID);
    ck_assert_int_eq(crdtdb_db_open(A.env, "nope", &d), CRDTDB_ENODB);
    ck_assert_str_eq(crdtdb_env_errmsg(A.env), "Database 'nope' not found");
    ck_assert_int_eq(crdtdb_db_create(A.env, "game", c, 1, &d), CRDTDB_EEXIST);
    ck_assert_str_eq(crdtdb_env_errmsg(A.env), "Database 'game' already exists");
    ck_assert_int_eq(crdtdb_db_drop(A.env, "game"), CRDTDB_EBUSY);
    ck_assert_ptr_nonnull(strstr(crdtdb_env_errmsg(A.env), "is open"));
}
END_TEST

/* A code returned without a message of its own gets its code's text, never
 * the message an earlier call wrote for the same code (found by an audit:
 * a NULL out after a foreign transaction said "belongs to another ..."). */
START_TEST(no_message_outlives_its_call)
{
    crdtdb_db *db = A.db;
    crdtdb_buf out = CRDTDB_BUF_INIT;
    int found;
    crdtdb_txn *tb;
    ck_assert_int_eq(crdtdb_txn_begin(B.db, CRDTDB_TXN_RDONLY, &tb), 0);
    CHECK_ERR(db, crdtdb_db_get_by_id(db, tb, "players", "x", &out, &found), CRDTDB_EINVAL,
              "another database handle");
    crdtdb_txn_abort(tb);
    tu_mp(&mp, "{\"v\":1}");
    ck_assert_int_eq(crdtdb_db_add(db, NULL, "players", "p", mp.data, mp.len), 0);
    /* (not CHECK_ERR: its primer would write a message of another code) */
    ck_assert_int_eq(crdtdb_db_get_by_id(db, NULL, "players", "x", NULL, &found),
                     CRDTDB_EINVAL);
    ck_assert_str_eq(crdtdb_db_errmsg(db), crdtdb_strerror(CRDTDB_EINVAL));
    ck_assert_int_eq(crdtdb_db_get_by_id(db, tb = NULL, "players", "x", &out, &found), 0);
    ck_assert_int_eq(crdtdb_db_query(db, NULL, "players", NULL, 0, NULL, NULL), CRDTDB_EINVAL);
    ck_assert_str_eq(crdtdb_db_errmsg(db), crdtdb_strerror(CRDTDB_EINVAL));
    /* a refused write in a batch: the commit says why the batch failed */
    crdtdb_txn *t;
    ck_assert_int_eq(crdtdb_txn_begin(db, 0, &t), 0);
    CHECK_ERR(db, crdtdb_db_add(db, t, "nope", "q", mp.data, mp.len), CRDTDB_ENOCOLL,
              "Collection 'nope' not found");
    CHECK_ERR(db, crdtdb_txn_commit(t), CRDTDB_ENOCOLL, "Collection 'nope' not found");
    ck_assert_int_eq(crdtdb_db_get_by_id(db, NULL, "nope", "x", NULL, &found), CRDTDB_EINVAL);
    ck_assert_str_eq(crdtdb_db_errmsg(db), crdtdb_strerror(CRDTDB_EINVAL));
    crdtdb_buf_free(&out);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("errors");
    TCase *tc = tcase_create("core");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, local_calls_name_their_failure);
    tcase_add_test(tc, transactions_name_their_failure);
    tcase_add_test(tc, bad_deltas_name_their_failure);
    tcase_add_test(tc, sinks_fail_or_stop);
    tcase_add_test(tc, damaged_records_are_named);
    tcase_add_test(tc, environment_calls_name_their_failure);
    tcase_add_test(tc, no_message_outlives_its_call);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return tu_run(suite()); }
