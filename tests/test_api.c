/* The public API: environments, databases, records, batches, errors. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "crdt/buf.h"
#include "storage/internal.h"
#include "tests/testutil.h"

static char *dir;
static crdtdb_env *env;
static crdtdb_db *db;
static crdtdb_buf mp;

static void setup(void)
{
    env = tu_env(&dir, NULL);
    const char *colls[] = {"players", "moves"};
    ck_assert_int_eq(crdtdb_db_create(env, "match-1", colls, 2, &db), 0);
    memset(&mp, 0, sizeof mp);
}

static void teardown(void)
{
    crdtdb_db_close(db);
    crdtdb_env_close(env);
    tu_rmrf(dir);
    free(dir);
    crdtdb_buf_free(&mp);
}

static int add(const char *coll, const char *id, const char *json)
{
    tu_mp(&mp, json);
    return crdtdb_db_add(db, NULL, coll, id, mp.data, mp.len);
}

static int update(const char *coll, const char *id, const char *json)
{
    tu_mp(&mp, json);
    return crdtdb_db_update(db, NULL, coll, id, mp.data, mp.len);
}

#define ASSERT_GET(coll, id, want)                                         \
    do {                                                                   \
        char *got_ = tu_get(db, coll, id);                                 \
        ck_assert_msg(got_ != NULL, "%s/%s not found", coll, id);          \
        ck_assert_str_eq(got_, want);                                      \
        free(got_);                                                        \
    } while (0)

#define ASSERT_MISSING(coll, id)                                           \
    do {                                                                   \
        char *got_ = tu_get(db, coll, id);                                 \
        ck_assert_msg(got_ == NULL, "%s/%s unexpectedly %s", coll, id, got_); \
    } while (0)

/* ------------------------------------------------------------ env & dbs */

START_TEST(env_identity_is_stable)
{
    uint8_t a[32], b[32], zero[32] = {0};
    crdtdb_env_replica_id(env, a);
    ck_assert(memcmp(a, zero, 32) != 0);
    crdtdb_db_close(db);
    crdtdb_env_close(env);
    ck_assert_int_eq(crdtdb_env_open(dir, NULL, &env), 0);
    crdtdb_env_replica_id(env, b);
    ck_assert_mem_eq(a, b, 32);
    ck_assert_int_eq(crdtdb_db_open(env, "match-1", &db), 0);
}
END_TEST

START_TEST(secret_key_file_is_private)
{
    struct stat st;
    char path[4200];
    ck_assert_int_eq(stat(dir, &st), 0);
    ck_assert_uint_eq(st.st_mode & 077, 0);
    snprintf(path, sizeof path, "%s/data.mdb", dir);
    ck_assert_int_eq(stat(path, &st), 0);
    ck_assert_uint_eq(st.st_mode & 077, 0);
}
END_TEST

START_TEST(env_bad_options)
{
    crdtdb_env_options o;
    crdtdb_env_options_init(&o);
    o.max_depth = 33;
    crdtdb_env *e = NULL;
    ck_assert_int_eq(crdtdb_env_open(dir, &o, &e), CRDTDB_EINVAL);
    ck_assert_ptr_null(e);
    ck_assert_int_eq(crdtdb_env_open("", NULL, &e), CRDTDB_EINVAL);
    crdtdb_env_close(NULL);
    crdtdb_db_close(NULL);
    crdtdb_txn_abort(NULL);
    crdtdb_observer_close(NULL);
    crdtdb_buf_free(NULL);
    /* the getters take NULL too: nothing crashes */
    ck_assert_ptr_null(crdtdb_db_id(NULL));
    ck_assert_ptr_null(crdtdb_db_env(NULL));
    ck_assert_uint_eq(crdtdb_db_collection_count(NULL), 0);
    ck_assert_ptr_null(crdtdb_db_collection_name(NULL, 0));
    uint8_t id[CRDTDB_REPLICA_ID_BYTES];
    memset(id, 0xff, sizeof id);
    crdtdb_env_replica_id(NULL, id);
    ck_assert_uint_eq(id[0] | id[31], 0);
    crdtdb_env_options got, def;
    crdtdb_env_options_get(NULL, &got);
    crdtdb_env_options_init(&def);
    ck_assert_uint_eq(got.map_size, def.map_size);
    size_t n = 7, in = 7, out = 7;
    ck_assert_ptr_null(crdtdb_session_output(NULL, &n));
    ck_assert_uint_eq(n, 0);
    crdtdb_session_consume(NULL, 1);
    crdtdb_session_buffered(NULL, &in, &out);
    ck_assert_uint_eq(in + out, 0);
}
END_TEST

static int collect(void *ctx, const char *id)
{
    crdtdb_buf *b = ctx;
    crdtdb__buf_append(b, id, strlen(id));
    crdtdb__buf_append(b, ",", 2);
    b->len--;
    return 0;
}

START_TEST(db_lifecycle)
{
    const char *c[] = {"a"};
    crdtdb_db *d2;
    ck_assert_int_eq(crdtdb_db_create(env, "match-1", c, 1, &d2), CRDTDB_EEXIST);
    ck_assert_str_eq(crdtdb_env_errmsg(env), "Database 'match-1' already exists");
    ck_assert_int_eq(crdtdb_db_open(env, "nope", &d2), CRDTDB_ENODB);
    ck_assert_str_eq(crdtdb_env_errmsg(env), "Database 'nope' not found");
    ck_assert_int_eq(crdtdb_db_create(env, "room/ü 2", c, 1, &d2), 0);
    ck_assert_str_eq(crdtdb_db_id(d2), "room/ü 2");
    ck_assert_uint_eq(crdtdb_db_collection_count(d2), 1);
    ck_assert_str_eq(crdtdb_db_collection_name(d2, 0), "a");
    ck_assert_ptr_null(crdtdb_db_collection_name(d2, 1));
    crdtdb_buf names = CRDTDB_BUF_INIT;
    ck_assert_int_eq(crdtdb_db_list(env, collect, &names), 0);
    ck_assert_str_eq((char *)names.data, "match-1,room/ü 2,");
    ck_assert_int_eq(crdtdb_db_drop(env, "room/ü 2"), CRDTDB_EBUSY);
    tu_mp(&mp, "{\"x\":1}");
    ck_assert_int_eq(crdtdb_db_add(d2, NULL, "a", "r1", mp.data, mp.len), 0);
    crdtdb_db_close(d2);
    ck_assert_int_eq(crdtdb_db_drop(env, "room/ü 2"), 0);
    ck_assert_int_eq(crdtdb_db_drop(env, "room/ü 2"), CRDTDB_ENODB);
    names.len = 0;
    ck_assert_int_eq(crdtdb_db_list(env, collect, &names), 0);
    ck_assert_str_eq((char *)names.data, "match-1,");
    /* re-created database starts empty */
    ck_assert_int_eq(crdtdb_db_create(env, "room/ü 2", c, 1, &d2), 0);
    int found = 1;
    ck_assert_int_eq(crdtdb_db_get_by_id(d2, NULL, "a", "r1", &mp, &found), 0);
    ck_assert_int_eq(found, 0);
    crdtdb_db_close(d2);
    crdtdb_buf_free(&names);
}
END_TEST

START_TEST(db_bad_ids)
{
    const char *c[] = {"a"};
    char long_id[300];
    memset(long_id, 'x', 256);
    long_id[256] = 0;
    const char *bad[] = {"", long_id, "tab\there", "nl\n", "\xff\xfe", "\xc0\xaf"};
    crdtdb_db *d = NULL;
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        ck_assert_int_eq(crdtdb_db_create(env, bad[i], c, 1, &d), CRDTDB_EBADID);
        ck_assert_ptr_null(d);
        ck_assert_int_eq(crdtdb_db_open(env, bad[i], &d), CRDTDB_EBADID);
    }
    ck_assert_int_eq(crdtdb_db_create(env, NULL, c, 1, &d), CRDTDB_EBADID);
    long_id[255] = 0; /* exactly 255 bytes is fine */
    ck_assert_int_eq(crdtdb_db_create(env, long_id, c, 1, &d), 0);
    crdtdb_db_close(d);
    const char *dup[] = {"a", "a"};
    ck_assert_int_eq(crdtdb_db_create(env, "d", dup, 2, &d), CRDTDB_EBADID);
    ck_assert_int_eq(crdtdb_db_create(env, "d", c, 0, &d), CRDTDB_EBADID);
    const char *badc[] = {""};
    ck_assert_int_eq(crdtdb_db_create(env, "d", badc, 1, &d), CRDTDB_EBADID);
    ck_assert_int_eq(crdtdb_db_open(env, "d", &d), CRDTDB_ENODB);
}
END_TEST

/* -------------------------------------------------------------- records */

START_TEST(add_and_get)
{
    ck_assert_int_eq(add("players", "p1", "{\"name\":\"Ann\",\"score\":3,\"tags\":[1,2],"
                                          "\"pos\":{\"x\":1.5,\"y\":-2},\"n\":null}"),
                     0);
    ASSERT_GET("players", "p1",
               "{\"n\":null,\"name\":\"Ann\",\"pos\":{\"x\":1.5,\"y\":-2},\"score\":3,"
               "\"tags\":[1,2]}");
    ASSERT_MISSING("moves", "p1");
    int found = 7;
    ck_assert_int_eq(crdtdb_db_get_by_id(db, NULL, "players", "zz", &mp, &found), 0);
    ck_assert_int_eq(found, 0);
    ck_assert_uint_eq(mp.len, 0);
    ck_assert_str_eq(crdtdb_db_errmsg(db),
                     "Object with id 'zz' not found in collection 'players'");
}
END_TEST

START_TEST(add_replaces_whole_record)
{
    ck_assert_int_eq(add("players", "p1", "{\"a\":1,\"b\":{\"c\":2}}"), 0);
    ck_assert_int_eq(add("players", "p1", "{\"d\":4}"), 0);
    ASSERT_GET("players", "p1", "{\"d\":4}");
    ck_assert_int_eq(add("players", "p2", "{}"), 0);
    ASSERT_GET("players", "p2", "{}");
}
END_TEST

START_TEST(update_deep_merges)
{
    ck_assert_int_eq(add("players", "p1", "{\"a\":{\"x\":1,\"y\":2},\"b\":1,\"s\":5}"), 0);
    ck_assert_int_eq(update("players", "p1", "{\"a\":{\"y\":3,\"z\":{\"k\":true}},\"c\":[]}"), 0);
    ASSERT_GET("players", "p1", "{\"a\":{\"x\":1,\"y\":3,\"z\":{\"k\":true}},\"b\":1,\"c\":[],\"s\":5}");
    /* a scalar replaces a map, a map replaces a scalar */
    ck_assert_int_eq(update("players", "p1", "{\"a\":7,\"s\":{\"t\":1}}"), 0);
    ASSERT_GET("players", "p1", "{\"a\":7,\"b\":1,\"c\":[],\"s\":{\"t\":1}}");
    /* an empty map merges into a map as nothing, replaces a scalar */
    ck_assert_int_eq(update("players", "p1", "{\"s\":{},\"a\":{}}"), 0);
    ASSERT_GET("players", "p1", "{\"a\":{},\"b\":1,\"c\":[],\"s\":{\"t\":1}}");
    ck_assert_int_eq(update("players", "p1", "{}"), 0);
    ck_assert_int_eq(update("players", "p1", "{\"b\":null}"), 0);
    ASSERT_GET("players", "p1", "{\"a\":{},\"b\":null,\"c\":[],\"s\":{\"t\":1}}");
}
END_TEST

static void count_events(void *ctx, const crdtdb_event *ev)
{
    (void)ev;
    ++*(int *)ctx;
}

/* Updating a missing record fails (the interface's message); removing one
 * succeeds and changes nothing: no tombstone (no sequence), no event. */
START_TEST(update_and_remove_missing)
{
    ck_assert_int_eq(update("players", "ghost", "{\"a\":1}"), CRDTDB_ENOTFOUND);
    ck_assert_str_eq(crdtdb_db_errmsg(db),
                     "Object with id 'ghost' not found in collection 'players'");
    uint64_t before, after;
    ck_assert_int_eq(crdtdb_db_seq(db, NULL, &before), 0);
    int events = 0;
    crdtdb_observer *obs;
    ck_assert_int_eq(crdtdb_db_observe(db, NULL, count_events, &events, &obs), 0);
    ck_assert_int_eq(crdtdb_db_remove(db, NULL, "players", "ghost"), 0);
    ck_assert_int_eq(crdtdb_db_seq(db, NULL, &after), 0);
    ck_assert_uint_eq(after, before);
    ck_assert_int_eq(events, 0);
    crdtdb_observer_close(obs);
    ASSERT_MISSING("players", "ghost");
}
END_TEST

/* A record read with its id: the id first, winning over a field "id". */
START_TEST(records_carry_their_id)
{
    crdtdb_buf out = CRDTDB_BUF_INIT;
    const char *cases[][3] = {{"r1", "{\"a\":1,\"b\":{\"c\":2}}", "{\"id\":\"r1\",\"a\":1,\"b\":{\"c\":2}}"},
                              {"r2", "{\"a\":1,\"id\":\"own\",\"z\":0}", "{\"id\":\"r2\",\"a\":1,\"z\":0}"},
                              {"r3", "{}", "{\"id\":\"r3\"}"}};
    for (size_t i = 0; i < 3; i++) {
        ck_assert_int_eq(add("players", cases[i][0], cases[i][1]), 0);
        crdtdb_buf v = CRDTDB_BUF_INIT;
        int found;
        ck_assert_int_eq(crdtdb_db_get_by_id(db, NULL, "players", cases[i][0], &v, &found), 0);
        ck_assert_int_eq(crdtdb_record_with_id(cases[i][0], v.data, v.len, &out), 0);
        char *j = tu_json(out.data, out.len);
        ck_assert_str_eq(j, cases[i][2]);
        free(j);
        crdtdb_buf_free(&v);
    }
    static const uint8_t not_a_map[] = {0x01};
    ck_assert_int_eq(crdtdb_record_with_id("x", not_a_map, 1, &out), CRDTDB_EBADVALUE);
    crdtdb_buf_free(&out);
}
END_TEST

START_TEST(remove_then_add_again)
{
    ck_assert_int_eq(add("players", "p1", "{\"a\":1,\"b\":2}"), 0);
    ck_assert_int_eq(crdtdb_db_remove(db, NULL, "players", "p1"), 0);
    ASSERT_MISSING("players", "p1");
    ck_assert_int_eq(update("players", "p1", "{\"a\":1}"), CRDTDB_ENOTFOUND);
    uint64_t before, after; /* removing it again writes no second tombstone */
    ck_assert_int_eq(crdtdb_db_seq(db, NULL, &before), 0);
    ck_assert_int_eq(crdtdb_db_remove(db, NULL, "players", "p1"), 0);
    ck_assert_int_eq(crdtdb_db_seq(db, NULL, &after), 0);
    ck_assert_uint_eq(after, before);
    ck_assert_int_eq(add("players", "p1", "{\"c\":3}"), 0);
    ASSERT_GET("players", "p1", "{\"c\":3}");
}
END_TEST

START_TEST(unknown_collection)
{
    ck_assert_int_eq(add("nope", "p1", "{\"a\":1}"), CRDTDB_ENOCOLL);
    ck_assert_str_eq(crdtdb_db_errmsg(db), "Collection 'nope' not found");
    int found;
    ck_assert_int_eq(crdtdb_db_get_by_id(db, NULL, "nope", "p1", &mp, &found), CRDTDB_ENOCOLL);
    ck_assert_int_eq(update("nope", "p1", "{}"), CRDTDB_ENOCOLL);
    ck_assert_int_eq(crdtdb_db_remove(db, NULL, "nope", "p1"), CRDTDB_ENOCOLL);
    crdtdb_observer *o;
    ck_assert_int_eq(crdtdb_db_observe(db, "nope", (crdtdb_observe_cb)abort, NULL, &o),
                     CRDTDB_ENOCOLL);
    ck_assert_str_eq(crdtdb_db_errmsg(db), "Collection 'nope' not found");
}
END_TEST

START_TEST(bad_record_ids)
{
    char long_id[300];
    memset(long_id, 'r', 256);
    long_id[256] = 0;
    ck_assert_int_eq(add("players", "", "{\"a\":1}"), CRDTDB_EBADID);
    ck_assert_int_eq(add("players", long_id, "{\"a\":1}"), CRDTDB_EBADID);
    ck_assert_int_eq(add("players", "\xff", "{\"a\":1}"), CRDTDB_EBADID);
    long_id[255] = 0;
    ck_assert_int_eq(add("players", long_id, "{\"a\":1}"), 0);
    ASSERT_GET("players", long_id, "{\"a\":1}");
}
END_TEST

/* Every bad value is refused with its code and leaves the record as it was. */
START_TEST(bad_values_store_nothing)
{
    ck_assert_int_eq(add("players", "p1", "{\"keep\":1}"), 0);
    static const uint8_t garbage[] = {0xc1};
    static const uint8_t truncated[] = {0x82, 0xa1, 'a', 0x01};
    static const uint8_t trailing[] = {0x80, 0x01};
    static const uint8_t intkey[] = {0x81, 0x01, 0x02};
    static const uint8_t badutf8key[] = {0x81, 0xa1, 0xff, 0x02};
    static const uint8_t notmap[] = {0x93, 1, 2, 3};
    /* headers claiming billions of elements: refused before any allocation */
    static const uint8_t bomb_arr[] = {0x81, 0xa1, 'a', 0xdd, 0xff, 0xff, 0xff, 0xff};
    static const uint8_t bomb_map[] = {0xdf, 0x7f, 0xff, 0xff, 0xff};
    static const uint8_t bomb_str[] = {0x81, 0xa1, 'a', 0xdb, 0xff, 0xff, 0xff, 0xff};
    static const uint8_t never[] = {0x81, 0xa1, 'a', 0xc1};
    static const uint8_t dupkey[] = {0x82, 0xa1, 'a', 0x01, 0xa1, 'a', 0x02};
    static const uint8_t mapkey[] = {0x81, 0xa1, 'a', 0x91, 0x81, 0x81, 0x01, 0x02, 0x03};
    struct {
        const uint8_t *p;
        size_t n;
        int rc;
    } cases[] = {
        {garbage, 1, CRDTDB_EBADVALUE},    {truncated, 4, CRDTDB_EBADVALUE},
        {trailing, 2, CRDTDB_EBADVALUE},   {intkey, 3, CRDTDB_EBADVALUE},
        {badutf8key, 4, CRDTDB_EBADVALUE}, {notmap, 4, CRDTDB_EBADVALUE},
        {NULL, 0, CRDTDB_EBADVALUE},       {bomb_arr, 8, CRDTDB_EBADVALUE},
        {bomb_map, 5, CRDTDB_EBADVALUE},   {bomb_str, 8, CRDTDB_EBADVALUE},
        {never, 4, CRDTDB_EBADVALUE},      {dupkey, 7, CRDTDB_EBADVALUE},
        {mapkey, 9, CRDTDB_EBADVALUE},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        ck_assert_int_eq(crdtdb_db_add(db, NULL, "players", "p1", cases[i].p, cases[i].n),
                         cases[i].rc);
        ck_assert_str_ne(crdtdb_db_errmsg(db), "");
        ck_assert_int_eq(crdtdb_db_update(db, NULL, "players", "p1", cases[i].p, cases[i].n),
                         cases[i].rc);
        ck_assert_int_eq(crdtdb_db_add(db, NULL, "players", "p2", cases[i].p, cases[i].n),
                         cases[i].rc);
    }
    ASSERT_GET("players", "p1", "{\"keep\":1}");
    ASSERT_MISSING("players", "p2");
    uint64_t seq;
    ck_assert_int_eq(crdtdb_db_seq(db, NULL, &seq), 0);
    ck_assert_uint_eq(seq, 2); /* the one add: base + one field */
}
END_TEST

START_TEST(limits_enforced)
{
    crdtdb_db_close(db);
    crdtdb_env_close(env);
    crdtdb_env_options o;
    crdtdb_env_options_init(&o);
    o.max_value_size = 200;
    o.max_depth = 3;
    o.max_fields = 4;
    o.max_path_bytes = 20;
    ck_assert_int_eq(crdtdb_env_open(dir, &o, &env), 0);
    ck_assert_int_eq(crdtdb_db_open(env, "match-1", &db), 0);
    ck_assert_int_eq(add("players", "p", "{\"a\":{\"b\":{\"c\":1}}}"), 0);
    ck_assert_int_eq(add("players", "p", "{\"a\":{\"b\":{\"c\":{\"d\":1}}}}"), CRDTDB_ETOODEEP);
    ck_assert_int_eq(add("players", "p", "{\"a\":[[[[1]]]]}"), CRDTDB_ETOODEEP);
    ck_assert_int_eq(update("players", "p", "{\"a\":{\"b\":{\"c\":{\"d\":1}}}}"), CRDTDB_ETOODEEP);
    ck_assert_int_eq(add("players", "p", "{\"a\":1,\"b\":2,\"c\":3,\"d\":4,\"e\":5}"), CRDTDB_ETOOBIG);
    ck_assert_int_eq(add("players", "p", "{\"aaaaaaaaaaaaaaaaaaaaaaaaa\":1}"), CRDTDB_ETOOBIG);
    char big[400];
    snprintf(big, sizeof big, "{\"s\":\"%0250d\"}", 0);
    ck_assert_int_eq(add("players", "p", big), CRDTDB_ETOOBIG);
    /* the stored record as a whole is bounded too */
    ck_assert_int_eq(add("players", "q", "{\"a\":1,\"b\":2,\"c\":3}"), 0);
    ck_assert_int_eq(update("players", "q", "{\"d\":4,\"e\":5}"), CRDTDB_ETOOBIG);
    char half[300];
    snprintf(half, sizeof half, "{\"t\":\"%0120d\"}", 0);
    ck_assert_int_eq(update("players", "q", half), 0);
    snprintf(half, sizeof half, "{\"u\":\"%0120d\"}", 0);
    ck_assert_int_eq(update("players", "q", half), CRDTDB_ETOOBIG);
    ASSERT_GET("players", "p", "{\"a\":{\"b\":{\"c\":1}}}");
    /* deeper than msgpack-c's own ceiling */
    uint8_t deep[40];
    memset(deep, 0x91, sizeof deep);
    deep[0] = 0x81;
    deep[1] = 0xa1;
    deep[2] = 'k';
    deep[39] = 0x01;
    int rc = crdtdb_db_add(db, NULL, "players", "p", deep, sizeof deep);
    ck_assert(rc == CRDTDB_ETOODEEP);
}
END_TEST

/* ------------------------------------------------------------ batches */

START_TEST(batch_commits_together)
{
    crdtdb_txn *t;
    ck_assert_int_eq(crdtdb_txn_begin(db, 0, &t), 0);
    crdtdb_txn *t2;
    ck_assert_int_eq(crdtdb_txn_begin(db, 0, &t2), CRDTDB_EBUSY);
    tu_mp(&mp, "{\"a\":1}");
    ck_assert_int_eq(crdtdb_db_add(db, t, "players", "p1", mp.data, mp.len), 0);
    tu_mp(&mp, "{\"b\":2}");
    ck_assert_int_eq(crdtdb_db_update(db, t, "players", "p1", mp.data, mp.len), 0);
    ck_assert_int_eq(crdtdb_db_add(db, t, "moves", "m1", mp.data, mp.len), 0);
    /* the batch sees its own writes */
    int found;
    ck_assert_int_eq(crdtdb_db_get_by_id(db, t, "players", "p1", &mp, &found), 0);
    ck_assert_int_eq(found, 1);
    ck_assert_int_eq(crdtdb_txn_commit(t), 0);
    ASSERT_GET("players", "p1", "{\"a\":1,\"b\":2}");
    ASSERT_GET("moves", "m1", "{\"b\":2}");
}
END_TEST

START_TEST(batch_is_all_or_nothing)
{
    crdtdb_txn *t;
    ck_assert_int_eq(crdtdb_txn_begin(db, 0, &t), 0);
    tu_mp(&mp, "{\"a\":1}");
    ck_assert_int_eq(crdtdb_db_add(db, t, "players", "p1", mp.data, mp.len), 0);
    ck_assert_int_eq(crdtdb_db_update(db, t, "players", "ghost", mp.data, mp.len),
                     CRDTDB_ENOTFOUND);
    ck_assert_int_eq(crdtdb_txn_commit(t), CRDTDB_ENOTFOUND);
    ASSERT_MISSING("players", "p1");
    /* a write refused before it reaches storage fails the batch too */
    static const uint8_t garbage[] = {0xc1};
    ck_assert_int_eq(crdtdb_txn_begin(db, 0, &t), 0);
    ck_assert_int_eq(crdtdb_db_add(db, t, "players", "p1", mp.data, mp.len), 0);
    ck_assert_int_eq(crdtdb_db_add(db, t, "nope", "p1", mp.data, mp.len), CRDTDB_ENOCOLL);
    ck_assert_int_eq(crdtdb_txn_commit(t), CRDTDB_ENOCOLL);
    ck_assert_int_eq(crdtdb_txn_begin(db, 0, &t), 0);
    ck_assert_int_eq(crdtdb_db_add(db, t, "players", "p1", mp.data, mp.len), 0);
    ck_assert_int_eq(crdtdb_db_update(db, t, "players", "p1", garbage, 1), CRDTDB_EBADVALUE);
    ck_assert_int_eq(crdtdb_txn_commit(t), CRDTDB_EBADVALUE);
    ASSERT_MISSING("players", "p1");
    /* abort discards */
    ck_assert_int_eq(crdtdb_txn_begin(db, 0, &t), 0);
    ck_assert_int_eq(crdtdb_db_add(db, t, "players", "p2", mp.data, mp.len), 0);
    crdtdb_txn_abort(t);
    ASSERT_MISSING("players", "p2");
    uint64_t seq;
    ck_assert_int_eq(crdtdb_db_seq(db, NULL, &seq), 0);
    ck_assert_uint_eq(seq, 0);
}
END_TEST

START_TEST(read_txn_is_a_snapshot)
{
    ck_assert_int_eq(add("players", "p1", "{\"v\":1}"), 0);
    /* a second handle writes while the first holds a snapshot */
    crdtdb_db *other;
    ck_assert_int_eq(crdtdb_db_open(env, "match-1", &other), 0);
    crdtdb_txn *r;
    ck_assert_int_eq(crdtdb_txn_begin(db, CRDTDB_TXN_RDONLY, &r), 0);
    tu_mp(&mp, "{\"v\":2}");
    ck_assert_int_eq(crdtdb_db_add(other, NULL, "players", "p1", mp.data, mp.len), 0);
    int found;
    ck_assert_int_eq(crdtdb_db_get_by_id(db, r, "players", "p1", &mp, &found), 0);
    char *s = tu_json(mp.data, mp.len);
    ck_assert_str_eq(s, "{\"v\":1}");
    free(s);
    ck_assert_int_eq(crdtdb_db_add(db, r, "players", "p1", mp.data, mp.len), CRDTDB_EROFS);
    ck_assert_str_eq(crdtdb_db_errmsg(db), "Read only access");
    ck_assert_int_eq(crdtdb_txn_commit(r), 0);
    ASSERT_GET("players", "p1", "{\"v\":2}");
    crdtdb_db_close(other);
}
END_TEST

START_TEST(add_all_in_one_transaction)
{
    tu_mp(&mp, "{\"a\":{\"n\":1},\"b\":{\"n\":2},\"c\":{\"n\":{\"deep\":3}}}");
    ck_assert_int_eq(crdtdb_db_add_all(db, NULL, "players", mp.data, mp.len), 0);
    ASSERT_GET("players", "b", "{\"n\":2}");
    ASSERT_GET("players", "c", "{\"n\":{\"deep\":3}}");
    tu_mp(&mp, "{\"d\":{\"n\":1},\"e\":5}");
    ck_assert_int_eq(crdtdb_db_add_all(db, NULL, "players", mp.data, mp.len), CRDTDB_EBADVALUE);
    tu_mp(&mp, "{\"d\":{\"n\":1},\"\":{}}");
    ck_assert_int_eq(crdtdb_db_add_all(db, NULL, "players", mp.data, mp.len), CRDTDB_EBADID);
    ASSERT_MISSING("players", "d");
}
END_TEST

START_TEST(read_only_env)
{
    ck_assert_int_eq(add("players", "p1", "{\"v\":1}"), 0);
    crdtdb_db_close(db);
    crdtdb_env_close(env);
    crdtdb_env_options o;
    crdtdb_env_options_init(&o);
    o.flags = CRDTDB_ENV_RDONLY;
    ck_assert_int_eq(crdtdb_env_open(dir, &o, &env), 0);
    ck_assert_int_eq(crdtdb_db_open(env, "match-1", &db), 0);
    ASSERT_GET("players", "p1", "{\"v\":1}");
    ck_assert_int_eq(add("players", "p1", "{\"v\":2}"), CRDTDB_EROFS);
    ck_assert_str_eq(crdtdb_db_errmsg(db), "Read only access");
    const char *c[] = {"x"};
    crdtdb_db *d;
    ck_assert_int_eq(crdtdb_db_create(env, "new", c, 1, &d), CRDTDB_EROFS);
}
END_TEST

/* ------------------------------------------------------- change log */

static size_t count_changes(void)
{
    MDB_txn *t;
    MDB_cursor *c;
    MDB_val k, v;
    size_t n = 0;
    ck_assert_int_eq(mdb_txn_begin(env->mdb, NULL, MDB_RDONLY, &t), 0);
    ck_assert_int_eq(mdb_cursor_open(t, env->dbi_changes, &c), 0);
    for (int rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(c, &k, &v, MDB_NEXT))
        n++;
    mdb_cursor_close(c);
    mdb_txn_abort(t);
    return n;
}

START_TEST(change_log_keeps_latest_per_field)
{
    ck_assert_int_eq(add("players", "p1", "{\"a\":1,\"b\":{\"c\":2}}"), 0);
    ck_assert_uint_eq(count_changes(), 1); /* base, a, b.c: one run */
    for (int i = 0; i < 10; i++) {
        char j[32];
        snprintf(j, sizeof j, "{\"a\":%d}", i);
        ck_assert_int_eq(update("players", "p1", j), 0);
    }
    ck_assert_uint_eq(count_changes(), 2); /* base and b.c's run, a's latest */
    uint64_t seq;
    ck_assert_int_eq(crdtdb_db_seq(db, NULL, &seq), 0);
    ck_assert_uint_eq(seq, 13);
    ck_assert_int_eq(update("players", "p1", "{\"b\":5}"), 0); /* replaces b.c */
    ck_assert_uint_eq(count_changes(), 3);
    ck_assert_int_eq(crdtdb_db_remove(db, NULL, "players", "p1"), 0);
    ck_assert_uint_eq(count_changes(), 1); /* only the tombstone */
    ck_assert_int_eq(crdtdb_db_seq(db, NULL, &seq), 0);
    ck_assert_uint_eq(seq, 15);
}
END_TEST

START_TEST(error_names)
{
    ck_assert_str_eq(crdtdb_errname(CRDTDB_ENOTFOUND), "CRDTDB_ENOTFOUND");
    ck_assert_str_eq(crdtdb_strerror(CRDTDB_EROFS), "read only access");
    ck_assert_str_eq(crdtdb_errname(0), "CRDTDB_OK");
    ck_assert_str_eq(crdtdb_strerror(-999), "unknown error");
    ck_assert_uint_eq(crdtdb_replica_id_bytes(), 32);
    ck_assert_uint_eq(crdtdb_id_max(), 255);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("api");
    TCase *tc = tcase_create("api");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, env_identity_is_stable);
    tcase_add_test(tc, env_bad_options);
    tcase_add_test(tc, secret_key_file_is_private);
    tcase_add_test(tc, db_lifecycle);
    tcase_add_test(tc, db_bad_ids);
    tcase_add_test(tc, add_and_get);
    tcase_add_test(tc, add_replaces_whole_record);
    tcase_add_test(tc, update_deep_merges);
    tcase_add_test(tc, update_and_remove_missing);
    tcase_add_test(tc, records_carry_their_id);
    tcase_add_test(tc, remove_then_add_again);
    tcase_add_test(tc, unknown_collection);
    tcase_add_test(tc, bad_record_ids);
    tcase_add_test(tc, bad_values_store_nothing);
    tcase_add_test(tc, limits_enforced);
    tcase_add_test(tc, batch_commits_together);
    tcase_add_test(tc, batch_is_all_or_nothing);
    tcase_add_test(tc, read_txn_is_a_snapshot);
    tcase_add_test(tc, add_all_in_one_transaction);
    tcase_add_test(tc, read_only_env);
    tcase_add_test(tc, change_log_keeps_latest_per_field);
    tcase_add_test(tc, error_names);
    suite_add_tcase(s, tc);
    return tu_run(s);
}
