/* One environment, many threads (include/crdtdb.h: "Thread-safe: any thread
 * may open databases on it"): each thread with handles of its own creates,
 * writes, observes, exports, drops, and makes calls that fail, while the
 * others do the same; two more threads read the replica id while resetting
 * it.  Every call gives one of its documented outcomes here; under
 * ThreadSanitizer (CRDTDB_SANITIZE_THREAD, a CI stage) a race on the
 * environment's shared state fails the suite. */
#include <check.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/testutil.h"

#define THREADS 3
#define ROUNDS 30

static crdtdb_env *env;
static char *dir;
static const char *const colls[] = {"c"};

static void setup(void)
{
    crdtdb_env_options o;
    crdtdb_env_options_init(&o);
    o.flags |= CRDTDB_ENV_NOSYNC;
    env = tu_env(&dir, &o);
}

static void teardown(void)
{
    crdtdb_env_close(env);
    tu_rmrf(dir);
    free(dir);
}

static int list_cb(void *ctx, const char *id)
{
    (void)id;
    ++*(int *)ctx;
    return 0;
}

static int sink(void *ctx, const uint8_t *d, size_t n)
{
    (void)d;
    *(size_t *)ctx += n;
    return 0;
}

static void seen_cb(void *ctx, const crdtdb_event *ev)
{
    (void)ev;
    ++*(int *)ctx;
}

/* What one thread saw go wrong: the first unexpected code, and where. */
typedef struct {
    int me;
    int bad;
    char what[96];
} worker;

static void expect(worker *w, int rc, int ok1, int ok2, const char *what)
{
    if (rc != ok1 && rc != ok2 && !w->bad) {
        w->bad = rc ? rc : -1000;
        snprintf(w->what, sizeof w->what, "%s: %d (%s)", what, rc, crdtdb_strerror(rc));
    }
}

static void *work(void *arg)
{
    worker *w = arg;
    char mine[16], id[16];
    snprintf(mine, sizeof mine, "t%d", w->me);
    for (int r = 0; r < ROUNDS; r++) {
        crdtdb_db *db = NULL, *x = NULL;
        uint8_t val[] = {0x81, 0xa1, 'a', (uint8_t)(r & 0x7f)};
        /* a database of its own: create, write, close, drop */
        expect(w, crdtdb_db_create(env, mine, colls, 1, &db), 0, 0, "create own");
        if (db) {
            snprintf(id, sizeof id, "r%d", r);
            expect(w, crdtdb_db_add(db, NULL, "c", id, val, sizeof val), 0, 0, "add own");
            crdtdb_db_close(db);
            expect(w, crdtdb_db_drop(env, mine), 0, 0, "drop own");
        }
        /* the shared one, through a handle of its own, observed */
        crdtdb_db *sh = NULL;
        int rc = crdtdb_db_open(env, "shared", &sh);
        expect(w, rc, 0, 0, "open shared");
        if (sh) {
            int seen = 0;
            size_t n = 0, bytes = 0;
            crdtdb_observer *o = NULL;
            expect(w, crdtdb_db_observe(sh, NULL, seen_cb, &seen, &o), 0, 0, "observe");
            snprintf(id, sizeof id, "s%d_%d", w->me, r % 5);
            expect(w, crdtdb_db_add(sh, NULL, "c", id, val, sizeof val), 0, 0, "add shared");
            expect(w, crdtdb_db_poll(sh, &n), 0, 0, "poll");
            expect(w, crdtdb_db_export(sh, 0, NULL, sink, &bytes, NULL), 0, 0, "export");
            crdtdb_observer_close(o);
            crdtdb_db_close(sh);
        }
        /* calls that fail, each writing the environment's message */
        expect(w, crdtdb_db_open(env, "nope", &x), CRDTDB_ENODB, CRDTDB_ENODB, "open missing");
        expect(w, crdtdb_db_open(env, "", &x), CRDTDB_EBADID, CRDTDB_EBADID, "open bad id");
        expect(w, crdtdb_db_create(env, "shared", colls, 1, &x), CRDTDB_EEXIST, CRDTDB_EEXIST,
               "create existing");
        int count = 0;
        expect(w, crdtdb_db_list(env, list_cb, &count), 0, 0, "list");
        uint8_t rid[CRDTDB_REPLICA_ID_BYTES];
        crdtdb_env_replica_id(env, rid);
    }
    return NULL;
}

START_TEST(threads_share_an_environment)
{
    crdtdb_db *s;
    ck_assert_int_eq(crdtdb_db_create(env, "shared", colls, 1, &s), 0);
    crdtdb_db_close(s);
    pthread_t th[THREADS];
    worker w[THREADS];
    for (int i = 0; i < THREADS; i++) {
        memset(&w[i], 0, sizeof w[i]);
        w[i].me = i;
        ck_assert_int_eq(pthread_create(&th[i], NULL, work, &w[i]), 0);
    }
    for (int i = 0; i < THREADS; i++)
        ck_assert_int_eq(pthread_join(th[i], NULL), 0);
    for (int i = 0; i < THREADS; i++)
        ck_assert_msg(!w[i].bad, "thread %d: %s", i, w[i].what);
    /* every thread's own database dropped, every shared write there */
    int count = 0;
    ck_assert_int_eq(crdtdb_db_list(env, list_cb, &count), 0);
    ck_assert_int_eq(count, 1);
    ck_assert_int_eq(crdtdb_db_open(env, "shared", &s), 0);
    for (int i = 0; i < THREADS; i++)
        for (int k = 0; k < 5; k++) {
            char id[16];
            snprintf(id, sizeof id, "s%d_%d", i, k);
            char *j = tu_get(s, "c", id);
            ck_assert_msg(j != NULL, "%s missing", id);
            free(j);
        }
    crdtdb_db_close(s);
}
END_TEST

static void *ids(void *arg)
{
    int *bad = arg;
    for (int r = 0; r < 20; r++) {
        uint8_t a[CRDTDB_REPLICA_ID_BYTES];
        crdtdb_env_replica_id(env, a);
        int rc = crdtdb_env_reset_id(env);
        if (rc)
            *bad = rc;
    }
    return NULL;
}

/* No database open: resetting the identity and reading it may overlap. */
START_TEST(replica_id_read_while_reset)
{
    uint8_t before[CRDTDB_REPLICA_ID_BYTES], after[CRDTDB_REPLICA_ID_BYTES];
    crdtdb_env_replica_id(env, before);
    pthread_t th[2];
    int bad[2] = {0, 0};
    for (int i = 0; i < 2; i++)
        ck_assert_int_eq(pthread_create(&th[i], NULL, ids, &bad[i]), 0);
    for (int i = 0; i < 2; i++)
        ck_assert_int_eq(pthread_join(th[i], NULL), 0);
    ck_assert_int_eq(bad[0], 0);
    ck_assert_int_eq(bad[1], 0);
    crdtdb_env_replica_id(env, after);
    ck_assert(memcmp(before, after, sizeof before) != 0);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("threads");
    TCase *tc = tcase_create("threads");
    tcase_set_timeout(tc, 120);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, threads_share_an_environment);
    tcase_add_test(tc, replica_id_read_while_reset);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return tu_run(suite()); }
