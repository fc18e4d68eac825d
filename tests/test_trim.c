/* The change log trimmed below the horizon (storage/collect.c, "the
 * trim"): an export from below the log floor walks the records and carries
 * exactly what the whole log gave, in one call or one delta at a time
 * (crdtdb_export_info.resume); sessions stream it; observers behind it are
 * told "many"; the entries go. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crdt/buf.h"
#include "storage/internal.h"
#include "tests/pull.h"
#include "tests/replica.h"
#include "tests/testutil.h"

static uint64_t now_ms = 1700000000000ull;

/* A few hundred random adds, updates (nested fields) and removes over
 * `ids` records of both collections, in commits of one to four. */
static void churn(replica *r, unsigned seed, int ops, int ids)
{
    srand(seed);
    char id[16], json[96];
    char *present = calloc(2 * (size_t)ids, 1); /* what the records are now */
    for (int i = 0; i < ops;) {
        crdtdb_txn *t;
        ck_assert_int_eq(crdtdb_txn_begin(r->db, 0, &t), 0);
        for (int k = 1 + rand() % 4; k > 0 && i < ops; k--, i++) {
            int c = rand() % 2, x = rand() % ids;
            const char *coll = COLLS[c];
            snprintf(id, sizeof id, "r%d", x);
            int have = present[c * ids + x], op = rand() % 10;
            if (!have || op < 2)
                snprintf(json, sizeof json, "{\"hp\":%d,\"pos\":{\"x\":%d,\"y\":%d},\"n\":\"%c\"}",
                         rand() % 100, rand() % 50, rand() % 50, 'a' + rand() % 26);
            else
                snprintf(json, sizeof json, "{\"pos\":{\"x\":%d}}", rand() % 50);
            if (have && op >= 7)
                put_in(r, t, "remove", coll, id, NULL);
            else
                put_in(r, t, have && op >= 2 ? "update" : "add", coll, id, json);
            present[c * ids + x] = !(have && op >= 7);
            now_ms += 1 + rand() % 3;
        }
        ck_assert_int_eq(crdtdb_txn_commit(t), 0);
    }
    free(present);
}

/* What a fresh replica holds after applying every delta of `from`'s export
 * after `since`: with max_bytes 0 in one call, else one delta a call (as a
 * session asks), going on with `resume`.  *calls gets the number of
 * calls that stayed inside the walk (to == since). */
static char *export_into_fresh(replica *from, uint64_t since, size_t max_bytes, int *calls)
{
    replica R;
    replica_init(&R, &now_ms, "game");
    uint64_t last;
    ck_assert_int_eq(crdtdb_db_seq(from->db, NULL, &last), 0);
    *calls = 0;
    if (!max_bytes) {
        net q = {0};
        ck_assert_int_eq(crdtdb_db_export(from->db, since, NULL, to_net, &q, NULL), 0);
        for (size_t i = 0; i < q.n; i++)
            ck_assert_int_eq(crdtdb_db_apply(R.db, q.msgs[i].data, q.msgs[i].len, NULL), 0);
        net_free(&q);
    } else {
        puller p = {.since = since, .max_bytes = max_bytes};
        for (int guard = 0;; guard++) {
            ck_assert_int_lt(guard, 100000);
            uint64_t at = p.since;
            int done = pull_one(from, &R, &p);
            if (p.rlen) { /* inside the walk: the range does not move */
                ck_assert_uint_eq(p.since, at);
                ++*calls;
            }
            if (done)
                break;
        }
    }
    char *d = dump(&R);
    replica_free(&R);
    return d;
}

static uint64_t log_entries(replica *r)
{
    crdtdb_db_stats st;
    ck_assert_int_eq(crdtdb_db_stat(r->db, &st), 0);
    return st.log_entries;
}

START_TEST(exports_from_below_the_trim_carry_what_the_log_did)
{
    replica A;
    replica_init(&A, &now_ms, "game");
    churn(&A, 7 + (unsigned)_i, 400, 30);
    uint64_t last;
    ck_assert_int_eq(crdtdb_db_seq(A.db, NULL, &last), 0);
    const uint64_t sinces[] = {0, 1, 7, last / 3, last / 2, last - 5, last - 1};
    enum { NS = sizeof sinces / sizeof *sinces };
    char *before[NS];
    int calls;
    for (int i = 0; i < NS; i++)
        before[i] = export_into_fresh(&A, sinces[i], 0, &calls);
    char *whole = dump(&A);
    uint64_t entries = log_entries(&A);
    crdtdb_collect_stats st;
    ck_assert_int_eq(crdtdb_db_collect(A.db, 0, &st), 0);
    ck_assert_uint_eq(st.horizon, last); /* no peers: everything */
    ck_assert_uint_gt(st.log_entries, 0);
    ck_assert_uint_lt(log_entries(&A), entries - st.log_entries + 1);
    uint64_t removed;
    {
        crdtdb_db_stats ds;
        ck_assert_int_eq(crdtdb_db_stat(A.db, &ds), 0);
        removed = ds.removed;
        ck_assert_uint_eq(ds.log_floor, last);
    }
    /* what stays: removed records' entries (not collected: a newer hidden
     * leaf) and the newest */
    ck_assert_uint_le(log_entries(&A), 4 * removed + 1);
    char *after = dump(&A);
    ck_assert_str_eq(whole, after);
    for (int i = 0; i < NS; i++) {
        char *got = export_into_fresh(&A, sinces[i], 0, &calls);
        ck_assert_msg(strcmp(got, before[i]) == 0, "after %llu: %s\nwant %s",
                      (unsigned long long)sinces[i], got, before[i]);
        free(got);
        got = export_into_fresh(&A, sinces[i], 300, &calls);
        ck_assert_msg(strcmp(got, before[i]) == 0, "after %llu, one by one: %s\nwant %s",
                      (unsigned long long)sinces[i], got, before[i]);
        if (sinces[i] < last / 2)
            ck_assert_int_gt(calls, 2); /* the walk went in pieces */
        free(got);
    }
    /* writes after the trim come from the log, after the walk */
    put(&A, "add", "players", "late", "{\"late\":1}");
    put(&A, "add", "moves", "new", "{\"late\":2}");
    free(whole);
    whole = dump(&A);
    char *got = export_into_fresh(&A, 0, 300, &calls);
    ck_assert_str_eq(got, whole);
    free(got);
    /* a resume made for another since, or malformed, is refused */
    uint8_t bad[3] = {0, 0, 0};
    crdtdb_export_options eo = {.resume = bad, .resume_len = sizeof bad};
    one o = {CRDTDB_BUF_INIT, 0};
    ck_assert_int_eq(crdtdb_db_export_for(A.db, 0, NULL, &eo, take_one, &o, NULL), CRDTDB_EINVAL);
    crdtdb_buf_free(&o.d);
    for (int i = 0; i < NS; i++)
        free(before[i]);
    free(whole);
    free(after);
    replica_free(&A);
}
END_TEST

/* A client session from 0 streams the walk a delta or two a turn and ends
 * holding what the server holds, its watermark at the server's last. */
START_TEST(session_from_below_the_trim_streams_the_walk)
{
    replica A, C;
    replica_init(&A, &now_ms, "game");
    replica_init(&C, &now_ms, "game");
    churn(&A, 99, 600, 60);
    crdtdb_collect_stats st;
    ck_assert_int_eq(crdtdb_db_collect(A.db, 0, &st), 0);
    ck_assert_uint_gt(st.log_entries, 0);
    crdtdb_session_options so;
    crdtdb_session_options_init(&so);
    so.flags = CRDTDB_SESSION_SERVER;
    so.max_output = 512; /* a delta or two a turn (they are 330-360 bytes) */
    so.delta_size = 640;  /* small deltas: the walk goes in many */
    crdtdb_session *a, *c;
    ck_assert_int_eq(crdtdb_session_open(A.db, &so, &a), 0);
    so.flags = 0;
    ck_assert_int_eq(crdtdb_session_open(C.db, &so, &c), 0);
    uint64_t in0 = crdtdb_session_deltas_sent(a);
    session_settle(a, c, 0);
    ck_assert_msg(!crdtdb_session_unsynced(c), "the client waits for %s", crdtdb_session_unsynced(c));
    ck_assert_uint_gt(crdtdb_session_deltas_sent(a) - in0, 20); /* it went in pieces */
    char *da = dump(&A), *dc = dump(&C);
    ck_assert_str_eq(da, dc);
    free(da);
    free(dc);
    uint8_t ida[32];
    crdtdb_env_replica_id(A.env, ida);
    uint64_t last;
    ck_assert_int_eq(crdtdb_db_seq(A.db, NULL, &last), 0);
    ck_assert_uint_eq(received_from(&C, &A), last);
    crdtdb_session_close(a);
    crdtdb_session_close(c);
    replica_free(&A);
    replica_free(&C);
}
END_TEST

/* A walk pulled one delta at a time while every call brings a write and a
 * collection that raises the floor: each pass keeps the floor it began
 * with, then one more pass takes what the trims took since, so the walk
 * ends (it does not start over at every trim) holding everything. */
START_TEST(walk_ends_under_a_trim_at_every_call)
{
    replica A, R;
    replica_init(&A, &now_ms, "game");
    replica_init(&R, &now_ms, "game");
    churn(&A, 11, 400, 40);
    ck_assert_int_eq(crdtdb_db_collect(A.db, 0, NULL), 0);
    puller p = {.max_bytes = 2000}; /* ~20 registers a delta: more than a call writes */
    for (int calls = 1;; calls++) {
        ck_assert_int_lt(calls, 500);
        char id[16]; /* a write, and a trim past it, before every call */
        snprintf(id, sizeof id, "w%d", calls % 7);
        put(&A, calls % 3 ? "add" : "remove", "players", id, calls % 3 ? "{\"w\":1}" : NULL);
        ck_assert_int_eq(crdtdb_db_collect(A.db, 0, NULL), 0);
        if (pull_one(&A, &R, &p))
            break;
    }
    char *da = dump(&A), *dr = dump(&R);
    ck_assert_str_eq(da, dr);
    free(da);
    free(dr);
    replica_free(&A);
    replica_free(&R);
}
END_TEST

/* What one trim kept as the newest entry, the next one takes: entries
 * below the floor are looked at again. */
START_TEST(next_trim_takes_the_last_ones_newest)
{
    replica A;
    replica_init(&A, &now_ms, "game");
    churn(&A, 5, 50, 10);
    ck_assert_int_eq(crdtdb_db_collect(A.db, 0, NULL), 0);
    uint64_t kept = log_entries(&A);
    for (int i = 0; i < 3; i++) {
        char id[8];
        snprintf(id, sizeof id, "n%d", i);
        put(&A, "add", "moves", id, "{\"x\":1}");
        crdtdb_collect_stats st;
        ck_assert_int_eq(crdtdb_db_collect(A.db, 0, &st), 0);
        ck_assert_uint_eq(log_entries(&A), kept); /* the new newest, not one more */
    }
    replica_free(&A);
}
END_TEST

static int events[8];
static void count(void *ctx, const crdtdb_event *ev)
{
    (void)ctx;
    events[ev->type]++;
}

/* A second handle whose observer last looked below the trim cannot be
 * told each change: it gets MultipleChanges. */
START_TEST(observer_behind_the_trim_hears_many)
{
    replica A;
    replica_init(&A, &now_ms, "game");
    crdtdb_db *h2;
    ck_assert_int_eq(crdtdb_db_open(A.env, "game", &h2), 0);
    crdtdb_observer *ob;
    ck_assert_int_eq(crdtdb_db_observe(h2, "players", count, NULL, &ob), 0);
    ck_assert_int_eq(crdtdb_db_poll(h2, NULL), 0);
    churn(&A, 3, 100, 20);
    ck_assert_int_eq(crdtdb_db_collect(A.db, 0, NULL), 0);
    memset(events, 0, sizeof events);
    ck_assert_int_eq(crdtdb_db_poll(h2, NULL), 0);
    ck_assert_int_eq(events[CRDTDB_EVENT_MULTIPLE_CHANGES], 1);
    ck_assert_int_eq(events[CRDTDB_EVENT_ADD] + events[CRDTDB_EVENT_UPDATE], 0);
    /* then, above it, each change again */
    put(&A, "add", "players", "zed", "{\"hp\":1}");
    memset(events, 0, sizeof events);
    ck_assert_int_eq(crdtdb_db_poll(h2, NULL), 0);
    ck_assert_int_eq(events[CRDTDB_EVENT_ADD], 1);
    crdtdb_observer_close(ob);
    crdtdb_db_close(h2);
    replica_free(&A);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("trim");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 120);
    tcase_add_loop_test(tc, exports_from_below_the_trim_carry_what_the_log_did, 0, 4);
    tcase_add_test(tc, session_from_below_the_trim_streams_the_walk);
    tcase_add_test(tc, observer_behind_the_trim_hears_many);
    tcase_add_test(tc, next_trim_takes_the_last_ones_newest);
    tcase_add_test(tc, walk_ends_under_a_trim_at_every_call);
    suite_add_tcase(s, tc);
    return tu_run(s);
}
