/* Packed records (storage/recs.h, pack.c): collection packs cold records,
 * and nothing a reader, writer, exporter or peer sees changes; a write
 * unpacks; packs stay few as records come and go; a damaged pack is an
 * error, not a crash.  A random schedule with collection at random moments
 * reads the same as its twin that never collects. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crdt/buf.h"
#include "storage/recs.h"
#include "tests/replica.h"
#include "tests/testutil.h"

static uint64_t now_ms = 1700000000000ull;

/* Entries of a table (the env's packs or loose records), all databases. */
static size_t entries_in(replica *r, int packs)
{
    MDB_txn *mt;
    MDB_stat ms;
    ck_assert_int_eq(mdb_txn_begin(r->env->mdb, NULL, MDB_RDONLY, &mt), 0);
    ck_assert_int_eq(mdb_stat(mt, packs ? r->env->dbi_packs : r->env->dbi_records, &ms), 0);
    mdb_txn_abort(mt);
    return ms.ms_entries;
}

static size_t npacks(replica *r) { return entries_in(r, 1); }
static size_t nloose(replica *r) { return entries_in(r, 0); }

/* Every pack's key and value, concatenated (caller frees). */
static char *packs_bytes(replica *r, size_t *len)
{
    MDB_txn *mt;
    MDB_cursor *c;
    crdtdb_buf b = CRDTDB_BUF_INIT;
    ck_assert_int_eq(mdb_txn_begin(r->env->mdb, NULL, MDB_RDONLY, &mt), 0);
    ck_assert_int_eq(mdb_cursor_open(mt, r->env->dbi_packs, &c), 0);
    MDB_val k, v;
    for (int rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        crdtdb__buf_append(&b, k.mv_data, k.mv_size);
        crdtdb__buf_append(&b, v.mv_data, v.mv_size);
    }
    mdb_cursor_close(c);
    mdb_txn_abort(mt);
    *len = b.len;
    return (char *)b.data;
}

static crdtdb_collect_stats collect(replica *r)
{
    crdtdb_collect_stats st;
    ck_assert_msg(crdtdb_db_collect(r->db, 0, &st) == 0, "collect: %s", crdtdb_db_errmsg(r->db));
    return st;
}

/* n players "p000".."p<n-1>", each with a nested field; every `step`th
 * id is skipped (left for later). */
static void players(replica *r, int n, int step)
{
    crdtdb_txn *t;
    ck_assert_int_eq(crdtdb_txn_begin(r->db, 0, &t), 0);
    for (int i = 0; i < n; i++) {
        if (step && i % step == 0)
            continue;
        char id[16], json[96];
        snprintf(id, sizeof id, "p%03d", i);
        snprintf(json, sizeof json, "{\"hp\":%d,\"name\":\"n%d\",\"pos\":{\"x\":%d,\"y\":%d}}", i,
                 i % 7, i * 3, i * 5);
        put_in(r, t, "add", "players", id, json);
    }
    ck_assert_int_eq(crdtdb_txn_commit(t), 0);
}

/* What a fresh replica holds after A's whole export. */
static char *exported(replica *a)
{
    replica R;
    replica_init(&R, &now_ms, "game");
    net q = {0};
    ck_assert_int_eq(crdtdb_db_export(a->db, 0, NULL, to_net, &q, NULL), 0);
    for (size_t i = 0; i < q.n; i++)
        ck_assert_int_eq(crdtdb_db_apply(R.db, q.msgs[i].data, q.msgs[i].len, NULL), 0);
    net_free(&q);
    char *d = dump(&R);
    replica_free(&R);
    return d;
}

static int ids_cb(void *ctx, const char *id, const uint8_t *v, size_t len)
{
    (void)v;
    (void)len;
    crdtdb_buf *b = ctx;
    crdtdb__buf_append(b, id, strlen(id));
    crdtdb__buf_append(b, ",", 1);
    return 0;
}

/* The ids a query with criteria (JSON, or NULL) yields, in order. */
static char *query_ids(replica *r, const char *criteria)
{
    crdtdb_buf b = CRDTDB_BUF_INIT, q = CRDTDB_BUF_INIT;
    if (criteria)
        tu_mp(&q, criteria);
    ck_assert_int_eq(crdtdb_db_query(r->db, NULL, "players", criteria ? q.data : NULL,
                                     criteria ? q.len : 0, ids_cb, &b),
                     0);
    crdtdb__buf_append(&b, "", 1);
    crdtdb_buf_free(&q);
    return (char *)b.data;
}

START_TEST(collection_packs_and_every_read_stays_the_same)
{
    replica A;
    replica_init(&A, &now_ms, "game");
    players(&A, 300, 0);
    put(&A, "add", "moves", "m1", "{\"by\":\"p001\"}");
    put(&A, "remove", "players", "p150", NULL); /* a tombstone stays loose */
    char *before = dump(&A), *exp0 = exported(&A), *q0 = query_ids(&A, "[[\"hp\",\">=\",250]]");
    char *p7 = tu_get(A.db, "players", "p007");
    crdtdb_collect_stats st = collect(&A);
    ck_assert_uint_eq(st.records, 1);          /* the tombstone, alone in the horizon */
    ck_assert_uint_eq(st.packed, 299 + 1);     /* every live record */
    ck_assert_uint_ge(npacks(&A), 2);          /* two collections: two packs at least */
    ck_assert_uint_eq(nloose(&A), 0);
    char *after = dump(&A), *exp1 = exported(&A), *q1 = query_ids(&A, "[[\"hp\",\">=\",250]]");
    ck_assert_str_eq(after, before);
    ck_assert_str_eq(exp1, exp0);
    ck_assert_str_eq(q1, q0);
    char *g = tu_get(A.db, "players", "p007");
    ck_assert_str_eq(g, p7);
    ck_assert_ptr_null(tu_get(A.db, "players", "p150"));
    ck_assert_ptr_null(tu_get(A.db, "players", "p999"));
    crdtdb_db_stats ds;
    ck_assert_int_eq(crdtdb_db_stat(A.db, &ds), 0);
    ck_assert_uint_eq(ds.records, 299 + 1);
    ck_assert_uint_eq(ds.fields, 299 * 4 + 1);
    /* a fresh replica syncing with A by session gets it all */
    replica B;
    replica_init(&B, &now_ms, "game");
    crdtdb_session_options so;
    crdtdb_session_options_init(&so);
    so.flags = CRDTDB_SESSION_SERVER;
    crdtdb_session *a, *b;
    ck_assert_int_eq(crdtdb_session_open(A.db, &so, &a), 0);
    so.flags = 0;
    ck_assert_int_eq(crdtdb_session_open(B.db, &so, &b), 0);
    session_settle(a, b, 0);
    crdtdb_session_close(a);
    crdtdb_session_close(b);
    char *db_ = dump(&B);
    ck_assert_str_eq(db_, before);
    free(db_);
    free(g);
    free(p7);
    free(before);
    free(after);
    free(exp0);
    free(exp1);
    free(q0);
    free(q1);
    replica_free(&B);
    replica_free(&A);
}
END_TEST

static int events[8];
static char last_id[64];

static void count(void *ctx, const crdtdb_event *ev)
{
    (void)ctx;
    events[ev->type]++;
    if (ev->id)
        snprintf(last_id, sizeof last_id, "%s", ev->id);
}

START_TEST(write_to_a_packed_record_unpacks_its_pack)
{
    replica A;
    replica_init(&A, &now_ms, "game");
    players(&A, 200, 0);
    collect(&A);
    size_t packs = npacks(&A);
    ck_assert_uint_ge(packs, 1);
    crdtdb_observer *ob;
    ck_assert_int_eq(crdtdb_db_observe(A.db, "players", count, NULL, &ob), 0);
    char *before = dump(&A);
    put(&A, "update", "players", "p042", "{\"pos\":{\"x\":-1}}");
    ck_assert_int_eq(events[CRDTDB_EVENT_UPDATE], 1); /* not an Add: it was there */
    ck_assert_int_eq(events[CRDTDB_EVENT_ADD], 0);
    ck_assert_str_eq(last_id, "p042");
    ck_assert_uint_eq(npacks(&A), packs - 1);
    ck_assert_uint_gt(nloose(&A), 1); /* its pack's records, loose again */
    char *g = tu_get(A.db, "players", "p042");
    ck_assert_str_eq(g, "{\"hp\":42,\"name\":\"n0\",\"pos\":{\"x\":-1,\"y\":210}}");
    free(g);
    g = tu_get(A.db, "players", "p043"); /* its neighbour, as it was */
    ck_assert_str_eq(g, "{\"hp\":43,\"name\":\"n1\",\"pos\":{\"x\":129,\"y\":215}}");
    free(g);
    /* remove and add of packed records, then collection again */
    put(&A, "remove", "players", "p199", NULL);
    put(&A, "add", "players", "p000", "{\"hp\":0,\"again\":true}");
    crdtdb_collect_stats st = collect(&A);
    ck_assert_uint_eq(st.records, 1);
    ck_assert_uint_gt(st.packed, 0);
    ck_assert_uint_eq(nloose(&A), 0);
    ck_assert_ptr_null(tu_get(A.db, "players", "p199"));
    g = tu_get(A.db, "players", "p000");
    ck_assert_str_eq(g, "{\"again\":true,\"hp\":0}");
    free(g);
    ck_assert_int_eq(events[CRDTDB_EVENT_REMOVE], 1);
    crdtdb_observer_close(ob);
    free(before);
    replica_free(&A);
}
END_TEST

/* A record added inside a pack's key range stays loose, and walks yield
 * both kinds in key order. */
START_TEST(loose_records_inside_a_packs_range_read_in_order)
{
    replica A;
    replica_init(&A, &now_ms, "game");
    players(&A, 120, 3); /* p001, p002, p004, ... */
    collect(&A);
    ck_assert_uint_eq(nloose(&A), 0);
    players(&A, 120, 0); /* all of them: the missing ones loose, the rest unpacked */
    for (int i = 0; i < 120; i += 3) {
        char id[16];
        snprintf(id, sizeof id, "p%03d", i);
        char *g = tu_get(A.db, "players", id);
        ck_assert_ptr_nonnull(g);
        free(g);
    }
    char *ids = query_ids(&A, NULL);
    char want[2048] = "";
    for (int i = 0; i < 120; i++)
        snprintf(want + strlen(want), sizeof want - strlen(want), "p%03d,", i);
    ck_assert_str_eq(ids, want);
    free(ids);
    /* packed again, then one new id in the middle of a pack's range */
    collect(&A);
    size_t packs = npacks(&A);
    put(&A, "add", "players", "p050a", "{\"hp\":1}");
    ck_assert_uint_eq(npacks(&A), packs); /* no pack held it: none unpacked */
    ck_assert_uint_eq(nloose(&A), 1);
    ids = query_ids(&A, NULL);
    ck_assert_ptr_nonnull(strstr(ids, "p049,p050,p050a,p051,"));
    free(ids);
    ids = query_ids(&A, "{\"hp\":1}");
    ck_assert_str_eq(ids, "p001,p050a,");
    free(ids);
    replica_free(&A);
}
END_TEST

/* A collection with nothing new leaves the packs as they are; records
 * added one by one past the last pack join it rather than make packs of
 * one record each. */
START_TEST(packs_stay_few)
{
    replica A;
    replica_init(&A, &now_ms, "game");
    players(&A, 100, 0);
    collect(&A);
    size_t len0, len1;
    char *b0 = packs_bytes(&A, &len0);
    crdtdb_collect_stats st = collect(&A);
    ck_assert_uint_eq(st.packed, 0);
    char *b1 = packs_bytes(&A, &len1);
    ck_assert_uint_eq(len1, len0);
    ck_assert_int_eq(memcmp(b0, b1, len0), 0);
    free(b0);
    free(b1);
    for (int i = 0; i < 40; i++) {
        char id[16];
        snprintf(id, sizeof id, "q%03d", i);
        put(&A, "add", "players", id, "{\"hp\":5,\"name\":\"late\"}");
        ck_assert_uint_eq(collect(&A).packed, 1);
    }
    ck_assert_uint_le(npacks(&A), 3);
    ck_assert_uint_eq(nloose(&A), 0);
    char *ids = query_ids(&A, "{\"name\":\"late\"}");
    ck_assert_uint_eq(strlen(ids), 40 * 5);
    free(ids);
    replica_free(&A);
}
END_TEST

/* Purge, clear, drop and backup of a database with packs. */
START_TEST(purge_clear_drop_and_backup_with_packs)
{
    replica A;
    replica_init(&A, &now_ms, "game");
    players(&A, 150, 0);
    collect(&A);
    ck_assert_int_eq(crdtdb_db_purge(A.db, "players", "p077"), 0);
    ck_assert_ptr_null(tu_get(A.db, "players", "p077"));
    char *g = tu_get(A.db, "players", "p078");
    ck_assert_ptr_nonnull(g);
    free(g);
    collect(&A);
    char *whole = dump(&A);
    /* a backup holds the packs and reads the same */
    char *bdir = tu_tmpdir();
    ck_assert_int_eq(crdtdb_env_backup(A.env, bdir), 0);
    crdtdb_env_options eo;
    crdtdb_env_options_init(&eo);
    crdtdb_env *be;
    crdtdb_db *bd;
    ck_assert_int_eq(crdtdb_env_open(bdir, &eo, &be), 0);
    ck_assert_int_eq(crdtdb_db_open(be, "game", &bd), 0);
    replica Bk = {.env = be, .db = bd};
    ck_assert_uint_gt(npacks(&Bk), 0);
    char *bw = dump(&Bk);
    ck_assert_str_eq(bw, whole);
    free(bw);
    crdtdb_db_close(bd);
    crdtdb_env_close(be);
    tu_rmrf(bdir);
    free(bdir);
    /* clear takes the packs; a second database's stay through a drop */
    crdtdb_db *other;
    ck_assert_int_eq(crdtdb_db_create(A.env, "other", COLLS, 2, &other), 0);
    ck_assert_int_eq(crdtdb_db_clear(A.db), 0);
    ck_assert_uint_eq(npacks(&A), 0);
    ck_assert_ptr_null(tu_get(A.db, "players", "p001"));
    crdtdb_db *keep = A.db;
    A.db = other;
    players(&A, 50, 0);
    collect(&A);
    size_t packs = npacks(&A);
    ck_assert_uint_gt(packs, 0);
    A.db = keep;
    players(&A, 50, 0);
    collect(&A);
    ck_assert_uint_gt(npacks(&A), packs);
    crdtdb_db_close(other);
    ck_assert_int_eq(crdtdb_db_drop(A.env, "other"), 0);
    ck_assert_uint_gt(npacks(&A), 0);
    ck_assert_uint_lt(npacks(&A), 2 * packs + 1);
    g = tu_get(A.db, "players", "p010");
    ck_assert_ptr_nonnull(g);
    free(g);
    free(whole);
    replica_free(&A);
}
END_TEST

/* A pack damaged on disk: every read of it fails with ECORRUPT and a
 * message, a write to one of its records too, and nothing crashes. */
START_TEST(damaged_pack_is_an_error)
{
    replica A;
    replica_init(&A, &now_ms, "game");
    players(&A, 60, 0);
    collect(&A);
    ck_assert_uint_eq(npacks(&A), 1);
    MDB_txn *mt;
    MDB_cursor *c;
    MDB_val k, v;
    ck_assert_int_eq(mdb_txn_begin(A.env->mdb, NULL, 0, &mt), 0);
    ck_assert_int_eq(mdb_cursor_open(mt, A.env->dbi_packs, &c), 0);
    ck_assert_int_eq(mdb_cursor_get(c, &k, &v, MDB_FIRST), 0);
    uint8_t *bad = malloc(v.mv_size);
    memcpy(bad, v.mv_data, v.mv_size);
    bad[v.mv_size / 2] ^= 0x5a; /* zstd's checksum is off: the content's bytes, then */
    bad[v.mv_size - 1] ^= 0x01;
    MDB_val nv = {v.mv_size, bad};
    ck_assert_int_eq(mdb_cursor_put(c, &k, &nv, MDB_CURRENT), 0);
    mdb_cursor_close(c);
    ck_assert_int_eq(mdb_txn_commit(mt), 0);
    free(bad);
    crdtdb_buf out = CRDTDB_BUF_INIT;
    int found;
    int rc = crdtdb_db_get_by_id(A.db, NULL, "players", "p010", &out, &found);
    ck_assert_int_eq(rc, CRDTDB_ECORRUPT);
    ck_assert_ptr_nonnull(strstr(crdtdb_db_errmsg(A.db), "p010"));
    ck_assert_int_eq(crdtdb_db_query(A.db, NULL, "players", NULL, 0, ids_cb, &out),
                     CRDTDB_ECORRUPT);
    crdtdb_buf m = CRDTDB_BUF_INIT;
    tu_mp(&m, "{\"hp\":1}");
    ck_assert_int_eq(crdtdb_db_update(A.db, NULL, "players", "p010", m.data, m.len),
                     CRDTDB_ECORRUPT);
    ck_assert_uint_eq(nloose(&A), 0); /* nothing half unpacked */
    crdtdb_db_stats ds;
    ck_assert_int_eq(crdtdb_db_stat(A.db, &ds), CRDTDB_ECORRUPT);
    ck_assert_ptr_nonnull(strstr(crdtdb_db_errmsg(A.db), "pack"));
    ck_assert_int_eq(crdtdb_db_collect(A.db, 0, NULL), CRDTDB_ECORRUPT);
    ck_assert_ptr_nonnull(strstr(crdtdb_db_errmsg(A.db), "pack"));
    /* a record of another collection is not in that pack's range */
    put(&A, "add", "moves", "m", "{\"x\":1}");
    crdtdb_buf_free(&m);
    crdtdb_buf_free(&out);
    replica_free(&A);
}
END_TEST

/* Only what every peer in the horizon holds is packed. */
START_TEST(records_a_peer_lacks_stay_loose)
{
    replica A, B;
    replica_init(&A, &now_ms, "game");
    replica_init(&B, &now_ms, "game");
    players(&A, 40, 0);
    crdtdb_session_options so;
    crdtdb_session_options_init(&so);
    so.flags = CRDTDB_SESSION_SERVER;
    crdtdb_session *a, *b;
    ck_assert_int_eq(crdtdb_session_open(A.db, &so, &a), 0);
    so.flags = 0;
    ck_assert_int_eq(crdtdb_session_open(B.db, &so, &b), 0);
    session_settle(a, b, 0);
    crdtdb_session_close(a);
    crdtdb_session_close(b);
    put(&A, "update", "players", "p005", "{\"hp\":-5}"); /* B lacks it */
    put(&A, "add", "players", "p100", "{\"hp\":100}");
    crdtdb_collect_stats st = collect(&A);
    ck_assert_uint_eq(st.packed, 39);
    ck_assert_uint_eq(nloose(&A), 2);
    char *g = tu_get(A.db, "players", "p005");
    ck_assert_str_eq(g, "{\"hp\":-5,\"name\":\"n5\",\"pos\":{\"x\":15,\"y\":25}}");
    free(g);
    replica_free(&A);
    replica_free(&B);
}
END_TEST

/* A random schedule of adds, updates, nested updates, removes and purges
 * over two collections, on A with collection at random moments and on its
 * twin T without: both read the same at every check, and a replica that
 * syncs from A by session too. */
START_TEST(random_schedule_reads_as_its_twin_without_collection)
{
    unsigned seed = tu_seed() + (unsigned)_i;
    srand(seed);
    replica A, T;
    replica_init(&A, &now_ms, "game");
    replica_init(&T, &now_ms, "game");
    const int ids = 60 + rand() % 200;
    char id[16], json[128];
    for (int round = 0; round < 40; round++) {
        for (int n = rand() % 80; n > 0; n--) {
            int c = rand() % 2, x = rand() % ids, op = rand() % 10;
            snprintf(id, sizeof id, "r%d", x);
            const char *how = op < 4 ? "add" : op < 8 ? "update" : "remove";
            if (op < 4)
                snprintf(json, sizeof json, "{\"hp\":%d,\"pos\":{\"x\":%d},\"s\":\"%.*s\"}",
                         rand() % 100, rand() % 9, rand() % 40,
                         "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMN");
            else
                snprintf(json, sizeof json, "{\"pos\":{\"y\":%d}}", rand() % 1000);
            crdtdb_buf m = CRDTDB_BUF_INIT;
            int ra, rt;
            if (op >= 8) {
                ra = crdtdb_db_remove(A.db, NULL, COLLS[c], id);
                rt = crdtdb_db_remove(T.db, NULL, COLLS[c], id);
            } else if (op >= 4) {
                tu_mp(&m, json);
                ra = crdtdb_db_update(A.db, NULL, COLLS[c], id, m.data, m.len);
                rt = crdtdb_db_update(T.db, NULL, COLLS[c], id, m.data, m.len);
            } else {
                tu_mp(&m, json);
                ra = crdtdb_db_add(A.db, NULL, COLLS[c], id, m.data, m.len);
                rt = crdtdb_db_add(T.db, NULL, COLLS[c], id, m.data, m.len);
            }
            ck_assert_msg(ra == rt, "seed %u: %s %s: %d on A (%s), %d on its twin", seed, how,
                          id, ra, crdtdb_db_errmsg(A.db), rt);
            crdtdb_buf_free(&m);
            now_ms += 1 + rand() % 5;
        }
        if (rand() % 3 == 0) {
            snprintf(id, sizeof id, "r%d", rand() % ids);
            ck_assert_int_eq(crdtdb_db_purge(A.db, COLLS[0], id), 0);
            ck_assert_int_eq(crdtdb_db_purge(T.db, COLLS[0], id), 0);
        }
        if (rand() % 3 == 0)
            collect(&A);
        char *a = dump(&A), *t = dump(&T);
        ck_assert_msg(strcmp(a, t) == 0, "seed %u round %d: %s", seed, round, diffat(a, t));
        free(a);
        free(t);
    }
    collect(&A);
    char *a = dump(&A), *t = dump(&T), *e = exported(&A);
    ck_assert_msg(strcmp(a, t) == 0, "seed %u: %s", seed, diffat(a, t));
    ck_assert_msg(strcmp(e, t) == 0, "seed %u, exported: %s", seed, diffat(e, t));
    free(a);
    free(t);
    free(e);
    replica_free(&A);
    replica_free(&T);
}
END_TEST


/* An id of 250 bytes or more (a key past one byte's length) stays loose;
 * the rest around it pack. */
START_TEST(long_ids_stay_loose)
{
    replica A;
    replica_init(&A, &now_ms, "game");
    players(&A, 30, 0);
    char id[256];
    memset(id, 'q', 255);
    id[255] = 0;
    put(&A, "add", "players", id, "{\"hp\":2}");
    id[249] = 0;
    put(&A, "add", "players", id, "{\"hp\":3}");
    id[249] = 'q';
    crdtdb_collect_stats st = collect(&A);
    ck_assert_uint_eq(st.packed, 31); /* a key of 255 bytes packs */
    ck_assert_uint_eq(nloose(&A), 1);
    char *g = tu_get(A.db, "players", id);
    ck_assert_str_eq(g, "{\"hp\":2}");
    free(g);
    ck_assert_uint_eq(collect(&A).packed, 0); /* and collection goes on */
    replica_free(&A);
}
END_TEST

/* A query inside a write transaction whose callback writes sees what a
 * walk of loose records alone would: the walk goes on past where it is,
 * over the records as they are now. */
typedef struct qw {
    replica *r;
    crdtdb_txn *t;
    int mode;
    crdtdb_buf seen;
} qw;

static int writing_cb(void *ctx, const char *id, const uint8_t *v, size_t len)
{
    qw *q = ctx;
    char *j = tu_json(v, len);
    crdtdb__buf_append(&q->seen, id, strlen(id));
    crdtdb__buf_append(&q->seen, "=", 1);
    crdtdb__buf_append(&q->seen, j, strlen(j));
    crdtdb__buf_append(&q->seen, ";", 1);
    free(j);
    if (strcmp(id, "p000") == 0) {
        char big[700];
        switch (q->mode) {
        case 0: put_in(q->r, q->t, "remove", "players", "p005", NULL); break;
        case 1: put_in(q->r, q->t, "update", "players", "p005", "{\"hp\":555}"); break;
        case 2: put_in(q->r, q->t, "add", "players", "p003a", "{\"hp\":33}"); break;
        default: /* grow a loose record on a page this txn already wrote */
            snprintf(big, sizeof big, "{\"hp\":2,\"s\":\"%0600d\"}", 7);
            put_in(q->r, q->t, "update", "players", "p000y", big);
        }
    }
    return 0;
}

static char *writing_query(int packed, int mode)
{
    replica A;
    replica_init(&A, &now_ms, "game");
    players(&A, 10, 0);
    if (packed)
        ck_assert_uint_eq(collect(&A).packed, 10);
    qw q = {&A, NULL, mode, CRDTDB_BUF_INIT};
    ck_assert_int_eq(crdtdb_txn_begin(A.db, 0, &q.t), 0);
    put_in(&A, q.t, "add", "players", "p000y", "{\"hp\":8,\"pad\":\"yyyyyyyyyyyyyyyyyyyy\"}");
    put_in(&A, q.t, "add", "players", "p000x", "{\"hp\":9}");
    ck_assert_msg(crdtdb_db_query(A.db, q.t, "players", NULL, 0, writing_cb, &q) == 0, "%s",
                  crdtdb_db_errmsg(A.db));
    crdtdb_txn_abort(q.t);
    crdtdb__buf_append(&q.seen, "", 1);
    replica_free(&A);
    return (char *)q.seen.data;
}

START_TEST(query_whose_callback_writes_reads_as_without_packs)
{
    for (int mode = 0; mode < 4; mode++) {
        char *loose = writing_query(0, mode), *packed = writing_query(1, mode);
        ck_assert_msg(strcmp(loose, packed) == 0, "mode %d: %s", mode, diffat(loose, packed));
        free(loose);
        free(packed);
    }
}
END_TEST

/* What changes nothing unpacks nothing: a delta applied again, a read. */
START_TEST(a_load_that_changes_nothing_leaves_the_pack)
{
    replica A, B;
    replica_init(&A, &now_ms, "game");
    replica_init(&B, &now_ms, "game");
    players(&A, 100, 0);
    sync_pair(&A, &B);
    now_ms += 10000; /* A, silent since, leaves B's horizon */
    crdtdb_collect_stats st;
    ck_assert_int_eq(crdtdb_db_collect(B.db, 1000, &st), 0);
    ck_assert_uint_eq(st.packed, 100);
    size_t packs = npacks(&B);
    net q = {0};
    ck_assert_int_eq(crdtdb_db_export(A.db, 0, NULL, to_net, &q, NULL), 0);
    for (size_t i = 0; i < q.n; i++) {
        crdtdb_apply_info info;
        ck_assert_int_eq(crdtdb_db_apply(B.db, q.msgs[i].data, q.msgs[i].len, &info), 0);
        ck_assert_uint_eq(info.applied, 0);
    }
    net_free(&q);
    ck_assert_uint_eq(npacks(&B), packs);
    ck_assert_uint_eq(nloose(&B), 0);
    char *a = dump(&A), *b = dump(&B);
    ck_assert_str_eq(a, b);
    free(a);
    free(b);
    replica_free(&A);
    replica_free(&B);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("pack");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, collection_packs_and_every_read_stays_the_same);
    tcase_add_test(tc, write_to_a_packed_record_unpacks_its_pack);
    tcase_add_test(tc, loose_records_inside_a_packs_range_read_in_order);
    tcase_add_test(tc, packs_stay_few);
    tcase_add_test(tc, purge_clear_drop_and_backup_with_packs);
    tcase_add_test(tc, damaged_pack_is_an_error);
    tcase_add_test(tc, records_a_peer_lacks_stay_loose);
    tcase_add_test(tc, long_ids_stay_loose);
    tcase_add_test(tc, query_whose_callback_writes_reads_as_without_packs);
    tcase_add_test(tc, a_load_that_changes_nothing_leaves_the_pack);
    tcase_add_loop_test(tc, random_schedule_reads_as_its_twin_without_collection, 0, 6);
    suite_add_tcase(s, tc);
    return tu_run(s);
}
