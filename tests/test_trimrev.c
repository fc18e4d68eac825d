/* The trimmed change log under review (session 38): each finding's
 * reproduction, and a randomized differential check — random churn,
 * purges and collections at random horizons, receivers pulling one delta
 * at a time with and without a read filter — against an untrimmed copy. */
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

static void fill(replica *A, const char *coll, int n, const char *fmt)
{
    char id[16], json[4096];
    for (int i = 0; i < n; i++) {
        snprintf(id, sizeof id, "r%02d", i);
        snprintf(json, sizeof json, fmt, i);
        put(A, "add", coll, id, json);
        now_ms++;
    }
}

/* Guards: a trim between two one-delta exports of a walk: the resumed walk
 * uses the new log floor, so registers numbered between the two floors of
 * records before the resume point go nowhere. */
START_TEST(resume_across_a_second_trim)
{
    replica A, R;
    replica_init(&A, &now_ms, "game");
    replica_init(&R, &now_ms, "game");
    fill(&A, "players", 20, "{\"hp\":%d,\"name\":\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"}");
    ck_assert_int_eq(crdtdb_db_collect(A.db, 0, NULL), 0); /* floor: last */
    puller p = {.max_bytes = 400};
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(pull_one(&A, &R, &p), 0);
    ck_assert_uint_gt(p.rlen, 0); /* inside the walk */
    put(&A, "update", "players", "r00", "{\"hp\":999}"); /* before the resume point */
    now_ms++;
    put(&A, "add", "players", "zz", "{\"hp\":1}"); /* the newest entry: kept */
    now_ms++;
    ck_assert_int_eq(crdtdb_db_collect(A.db, 0, NULL), 0); /* floor past r00's update */
    for (int g = 0; !pull_one(&A, &R, &p); g++)
        ck_assert_int_lt(g, 1000);
    char *da = dump(&A), *dr = dump(&R);
    ck_assert_msg(strcmp(da, dr) == 0, "source %s\nreceiver %s", da, dr);
    free(da);
    free(dr);
    replica_free(&A);
    replica_free(&R);
}
END_TEST

/* Guards: with a read filter a walk packs records whole and can never end a
 * piece (prev == from), so whole records stack past the budget: a delta
 * over max_delta_size, EIO, where the untrimmed log split the record. */
START_TEST(filtered_walk_overflows_the_delta)
{
    replica A, R;
    replica_init(&A, &now_ms, "game");
    replica_init(&R, &now_ms, "game");
    char big[2100];
    memset(big, 'v', sizeof big - 1);
    big[sizeof big - 1] = 0;
    char fmt[2300];
    snprintf(fmt, sizeof fmt, "{\"a\":\"%s\",\"b\":%%d}", big);
    fill(&A, "players", 6, fmt);
    puller p = {.filter = 1};
    for (int g = 0; !pull_one(&A, &R, &p); g++) /* untrimmed: fine */
        ck_assert_int_lt(g, 1000);
    replica_free(&R);
    replica_init(&R, &now_ms, "game");
    ck_assert_int_eq(crdtdb_db_collect(A.db, 0, NULL), 0);
    puller q = {.filter = 1};
    for (int g = 0; !pull_one(&A, &R, &q); g++)
        ck_assert_int_lt(g, 1000);
    char *da = dump(&A), *dr = dump(&R);
    ck_assert_str_eq(da, dr);
    free(da);
    free(dr);
    replica_free(&A);
    replica_free(&R);
}
END_TEST

/* Guards: a resume made for another since is taken as it is (no EINVAL): the
 * records before its key are skipped for the new since. */
START_TEST(resume_for_another_since_is_refused)
{
    replica A, R;
    replica_init(&A, &now_ms, "game");
    replica_init(&R, &now_ms, "game");
    fill(&A, "players", 20, "{\"hp\":%d,\"name\":\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"}");
    ck_assert_int_eq(crdtdb_db_collect(A.db, 0, NULL), 0);
    puller p = {.max_bytes = 400};
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(pull_one(&A, &R, &p), 0);
    ck_assert_uint_gt(p.rlen, 0);
    crdtdb_export_options eo = {.max_bytes = 400, .resume = p.resume, .resume_len = p.rlen};
    one o = {CRDTDB_BUF_INIT, 0};
    int rc = crdtdb_db_export_for(A.db, 2, NULL, &eo, take_one, &o, NULL);
    crdtdb_buf_free(&o.d);
    ck_assert_int_eq(rc, CRDTDB_EINVAL);
    replica_free(&A);
    replica_free(&R);
}
END_TEST

/* Guards: a shared export (a server's) with a malformed resume: export_run
 * fails in exporter_begin before it writes `in`, and walk_unshared copies
 * in.resume_len bytes of an uninitialized struct. */
static __attribute__((noinline)) void scribble(void)
{
    volatile uint8_t junk[16384];
    for (size_t i = 0; i < sizeof junk; i++)
        junk[i] = 0xA5;
}

START_TEST(shared_export_with_malformed_resume)
{
    replica A;
    replica_init(&A, &now_ms, "game");
    fill(&A, "players", 5, "{\"hp\":%d}");
    ck_assert_int_eq(crdtdb_db_collect(A.db, 0, NULL), 0);
    uint8_t bad[5] = {0, 0, 9, 9, 9};
    uint8_t peer[32];
    memset(peer, 7, sizeof peer);
    crdtdb_export_options eo = {.flags = CRDTDB_EXPORT_SHARED, .resume = bad, .resume_len = sizeof bad};
    crdtdb_export_info info;
    memset(&info, 0, sizeof info);
    one o = {CRDTDB_BUF_INIT, 0};
    scribble();
    int rc = crdtdb_db_export_for(A.db, 0, peer, &eo, take_one, &o, &info);
    crdtdb_buf_free(&o.d);
    ck_assert_int_eq(rc, CRDTDB_EINVAL);
    ck_assert_uint_eq(info.resume_len, 0);
    ck_assert_uint_eq(info.deltas, 0);
    replica_free(&A);
}
END_TEST

/* Guards: discard_unsent after a point below the log floor misses the local
 * writes whose entries the trim took. */
START_TEST(discard_unsent_below_the_floor)
{
    replica A;
    replica_init(&A, &now_ms, "game");
    fill(&A, "players", 5, "{\"hp\":%d}");
    size_t n = 0;
    ck_assert_int_eq(crdtdb_db_collect(A.db, 0, NULL), 0);
    ck_assert_int_eq(crdtdb_db_discard_unsent(A.db, 0, &n), 0);
    ck_assert_uint_eq(n, 5); /* untrimmed: all five */
    replica_free(&A);
}
END_TEST

/* Guards: an export for a known peer leaves out what came from that peer; a
 * walk cannot tell (a record keeps origins, not sources) and sends it
 * back, as include/crdtdb.h says: merged, it changes nothing there. */
START_TEST(walk_sends_the_peer_its_own)
{
    replica A, B;
    replica_init(&A, &now_ms, "game");
    replica_init(&B, &now_ms, "game");
    fill(&B, "players", 10, "{\"hp\":%d}");
    sync_pair(&B, &A);
    uint8_t idb[32];
    crdtdb_env_replica_id(B.env, idb);
    crdtdb_export_info before, after;
    net q = {0};
    ck_assert_int_eq(crdtdb_db_export_for(A.db, 0, idb, NULL, to_net, &q, &before), 0);
    net_free(&q);
    uint64_t last;
    ck_assert_int_eq(crdtdb_db_seq(A.db, NULL, &last), 0);
    ck_assert_int_eq(crdtdb_db_peer_ack_at(A.db, idb, last, 0), 0); /* B holds it all */
    crdtdb_collect_stats st;
    ck_assert_int_eq(crdtdb_db_collect(A.db, 0, &st), 0);
    memset(&q, 0, sizeof q);
    ck_assert_int_eq(crdtdb_db_export_for(A.db, 0, idb, NULL, to_net, &q, &after), 0);
    ck_assert_uint_eq(before.changes, 0);
    ck_assert_msg(after.changes == 20, "changes %zu after the trim (horizon %llu)", after.changes,
                  (unsigned long long)st.horizon);
    char *was = dump(&B);
    for (size_t i = 0; i < q.n; i++) {
        crdtdb_apply_info ai;
        ck_assert_int_eq(crdtdb_db_apply(B.db, q.msgs[i].data, q.msgs[i].len, &ai), 0);
        ck_assert_uint_eq(ai.applied, 0); /* its own registers: nothing new */
    }
    char *now = dump(&B);
    ck_assert_str_eq(was, now);
    free(was);
    free(now);
    net_free(&q);
    replica_free(&A);
    replica_free(&B);
}
END_TEST

static void churn1(replica *r, int ids);
static int noremove;

/* Guards: the record a resume names was purged meanwhile: the next
 * record goes whole (its registers may be numbered below the resume's). */
START_TEST(resume_after_its_record_went)
{
    replica A, R;
    replica_init(&A, &now_ms, "game");
    replica_init(&R, &now_ms, "game");
    char id[16], json[128];
    for (int i = 19; i >= 0; i--) { /* later keys numbered first */
        snprintf(id, sizeof id, "r%02d", i);
        snprintf(json, sizeof json, "{\"hp\":%d,\"a\":\"xxxxxxxxxxxxxxxxxxxxxxxx\",\"b\":1,\"c\":2,\"d\":3,\"e\":4,\"f\":5}", i);
        put(&A, "add", "players", id, json);
        now_ms++;
    }
    ck_assert_int_eq(crdtdb_db_collect(A.db, 0, NULL), 0);
    puller p = {.max_bytes = 300};
    for (int g = 0;; g++) { /* until a resume stops inside a record */
        ck_assert_int_lt(g, 50);
        ck_assert_int_eq(pull_one(&A, &R, &p), 0);
        ck_assert_uint_gt(p.rlen, 0);
        if (crdtdb__get_u64(p.resume + 3 + p.resume[2]) > 0)
            break;
    }
    char at[300];
    memcpy(at, p.resume + 3, p.resume[2]);
    at[p.resume[2]] = 0;
    ck_assert_int_eq(crdtdb_db_purge(A.db, "players", at), 0);
    ck_assert_int_eq(crdtdb_db_purge(R.db, "players", at), 0);
    for (int g = 0; !pull_one(&A, &R, &p); g++)
        ck_assert_int_lt(g, 1000);
    char *da = dump(&A), *dr = dump(&R);
    ck_assert_msg(strcmp(da, dr) == 0, "resume at %s: %s", at, diffat(da, dr));
    free(da);
    free(dr);
    replica_free(&A);
    replica_free(&R);
}
END_TEST

/* Expiry counts from the last write, trimmed or not; and when the newest
 * record is purged after a trim (the log then holds an entry far older, or
 * none, where the whole log gave the write before), from what the trim
 * noted first. */
START_TEST(expiry_survives_a_trim)
{
    replica A;
    replica_init(&A, &now_ms, "game");
    ck_assert_int_eq(crdtdb_db_expire_set(A.db, 1000, 0), 0);
    now_ms += 5000;
    fill(&A, "players", 3, "{\"hp\":%d}");
    now_ms += 5000;
    put(&A, "add", "moves", "last", "{\"x\":1}");
    crdtdb_expiry e0, e1, e2;
    ck_assert_int_eq(crdtdb_db_expiry(A.db, &e0), 0);
    ck_assert_int_eq(crdtdb_db_collect(A.db, 0, NULL), 0);
    ck_assert_int_eq(crdtdb_db_expiry(A.db, &e1), 0);
    ck_assert_uint_eq(e1.last_write_ms, e0.last_write_ms);
    ck_assert_uint_eq(e1.due_ms, e0.due_ms);
    ck_assert_int_eq(crdtdb_db_purge(A.db, "moves", "last"), 0);
    ck_assert_int_eq(crdtdb_db_expiry(A.db, &e2), 0);
    ck_assert_uint_ge(e2.last_write_ms, e0.last_write_ms - 5000); /* not 0: r02's write or later */
    replica_free(&A);
}
END_TEST

/* A stronger oracle than the visible state: exports from every since
 * carry as many registers before and after a trim (a base register
 * missed under a record's fields, or a remove of a record the receiver
 * lacks, changes no dump).  Writes after the trim, one register each. */
static size_t changes_from(replica *A, uint64_t s, int filter)
{
    net q = {0};
    crdtdb_export_info in;
    crdtdb_export_options eo = {0};
    if (filter)
        eo.visible = all_visible;
    ck_assert_int_eq(crdtdb_db_export_for(A->db, s, NULL, &eo, to_net, &q, &in), 0);
    net_free(&q);
    return in.changes;
}

START_TEST(exports_carry_as_many_registers)
{
    int filter = _i;
    replica A;
    replica_init(&A, &now_ms, "game");
    srand(77);
    noremove = 1; /* no tombstone to collect: the trim alone */
    for (int i = 0; i < 300; i++)
        churn1(&A, 20);
    noremove = 0;
    uint64_t last;
    ck_assert_int_eq(crdtdb_db_seq(A.db, NULL, &last), 0);
    size_t *before = calloc(last + 1, sizeof *before);
    for (uint64_t s = 0; s <= last; s++)
        before[s] = changes_from(&A, s, filter);
    uint8_t fake[32];
    memset(fake, 0x42, sizeof fake);
    const uint64_t hz[] = {last / 3, last / 2, last - 3, last};
    for (int h = 0; h < 4; h++) { /* the floor inside the log, then at its end */
        ck_assert_int_eq(crdtdb_db_peer_ack_at(A.db, fake, hz[h], 0), 0);
        crdtdb_collect_stats st;
        ck_assert_int_eq(crdtdb_db_collect(A.db, 0, &st), 0);
        ck_assert_uint_eq(st.horizon, hz[h]);
        for (uint64_t s = 0; s <= last; s++) {
            size_t n = changes_from(&A, s, filter);
            ck_assert_msg(n == before[s],
                          "filter %d, floor at %llu, after %llu: %zu registers, %zu before the trim",
                          filter, (unsigned long long)hz[h], (unsigned long long)s, n, before[s]);
        }
    }
    free(before);
    replica_free(&A);
}
END_TEST

/* ------------------------------------------------------------- sessions */

static int filt_all(void *ctx, crdtdb_txn *txn, const char *coll, const char *id,
                    const uint8_t *value, size_t len)
{
    (void)ctx, (void)txn, (void)coll, (void)id, (void)value, (void)len;
    return 1;
}

/* Moves bytes both ways until quiet (pumping when nothing moves);
 * `turns` at most, or until quiet.  Returns 1 when quiet. */
static int shuttle(crdtdb_session *a, crdtdb_session *c, size_t turns)
{
    for (size_t t = 0; t < turns; t++) {
        size_t moved = 0;
        crdtdb_session *pair[2][2] = {{a, c}, {c, a}};
        for (int k = 0; k < 2; k++) {
            size_t len;
            const uint8_t *p = crdtdb_session_output(pair[k][0], &len);
            if (len) {
                ck_assert_msg(crdtdb_session_feed(pair[k][1], p, len) == 0, "feed: %s",
                              crdtdb_session_errmsg(pair[k][1]));
                crdtdb_session_consume(pair[k][0], len);
                moved += len;
            }
        }
        if (!moved) {
            int ra = crdtdb_session_pump(a), rc = crdtdb_session_pump(c);
            ck_assert_msg(ra == 0, "server pump: %s", crdtdb_session_errmsg(a));
            ck_assert_msg(rc == 0, "client pump: %s", crdtdb_session_errmsg(c));
            size_t la, lc;
            crdtdb_session_output(a, &la);
            crdtdb_session_output(c, &lc);
            if (!la && !lc)
                return 1;
        }
    }
    return 0;
}

/* Through the session: a receive-only client (no marks at the
 * server: outside the horizon) streams a walk; the server writes to a
 * record the walk passed and collects (its horizon: no peers, its last). */
START_TEST(session_walk_across_a_trim)
{
    replica A, C;
    replica_init(&A, &now_ms, "game");
    replica_init(&C, &now_ms, "game");
    fill(&A, "players", 40, "{\"hp\":%d,\"name\":\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"}");
    ck_assert_int_eq(crdtdb_db_collect(A.db, 0, NULL), 0);
    crdtdb_session_options so;
    crdtdb_session_options_init(&so);
    so.flags = CRDTDB_SESSION_SERVER;
    so.max_output = 512;
    so.delta_size = 1024;
    crdtdb_session *a, *c;
    ck_assert_int_eq(crdtdb_session_open(A.db, &so, &a), 0);
    so.flags = 0;
    so.mode = CRDTDB_SYNC_SERVER_TO_CLIENT;
    ck_assert_int_eq(crdtdb_session_open(C.db, &so, &c), 0);
    ck_assert_int_eq(shuttle(a, c, 12), 0); /* part of the walk */
    ck_assert(!tu_get(C.db, "players", "r39")); /* still walking */
    put(&A, "update", "players", "r00", "{\"hp\":999}");
    now_ms++;
    ck_assert_int_eq(crdtdb_db_collect(A.db, 0, NULL), 0);
    ck_assert(shuttle(a, c, 100000));
    char *da = dump(&A), *dc = dump(&C);
    ck_assert_msg(strcmp(da, dc) == 0, "%s", diffat(da, dc));
    free(da);
    free(dc);
    crdtdb_session_close(a);
    crdtdb_session_close(c);
    replica_free(&A);
    replica_free(&C);
}
END_TEST

/* Through the session: a server with a read filter, records of a
 * few KiB, a fresh client: the walk's delta overflows and the session
 * fails, where the untrimmed log streams. */
START_TEST(session_filtered_walk_of_large_records)
{
    for (int trimmed = 0; trimmed < 2; trimmed++) {
        replica A, C;
        replica_init(&A, &now_ms, "game");
        replica_init(&C, &now_ms, "game");
        char big[2100], fmt[2300];
        memset(big, 'v', sizeof big - 1);
        big[sizeof big - 1] = 0;
        snprintf(fmt, sizeof fmt, "{\"a\":\"%s\",\"b\":%%d}", big);
        fill(&A, "players", 6, fmt);
        if (trimmed)
            ck_assert_int_eq(crdtdb_db_collect(A.db, 0, NULL), 0);
        crdtdb_session_options so;
        crdtdb_session_options_init(&so);
        so.flags = CRDTDB_SESSION_SERVER;
        so.read_filter = filt_all;
        crdtdb_session *a, *c;
        ck_assert_int_eq(crdtdb_session_open(A.db, &so, &a), 0);
        crdtdb_session_options_init(&so);
        so.mode = CRDTDB_SYNC_SERVER_TO_CLIENT;
        ck_assert_int_eq(crdtdb_session_open(C.db, &so, &c), 0);
        ck_assert_msg(shuttle(a, c, 100000), "trimmed %d", trimmed);
        char *da = dump(&A), *dc = dump(&C);
        ck_assert_msg(strcmp(da, dc) == 0, "trimmed %d: %s", trimmed, diffat(da, dc));
        free(da);
        free(dc);
        crdtdb_session_close(a);
        crdtdb_session_close(c);
        replica_free(&A);
        replica_free(&C);
    }
}
END_TEST

/* A client refusing walk deltas as too costly (ELIMIT) asks again with a
 * SINCE and a smaller size: the walk starts over, the refused part too
 * (guards session.c's walk_len reset on SINCE). */
START_TEST(session_walk_refused_as_too_costly)
{
    replica A, C;
    replica_init(&A, &now_ms, "game");
    replica_init(&C, &now_ms, "game");
    replica_close(&C);
    C.opts.max_apply_work = 700;
    replica_open(&C, "game");
    fill(&A, "players", 40, "{\"hp\":%d,\"name\":\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"}");
    ck_assert_int_eq(crdtdb_db_collect(A.db, 0, NULL), 0);
    crdtdb_session_options so;
    crdtdb_session_options_init(&so);
    so.flags = CRDTDB_SESSION_SERVER;
    so.max_output = 512; /* one delta a turn: refusals come mid-walk */
    so.delta_size = 1400;
    crdtdb_session *a, *c;
    ck_assert_int_eq(crdtdb_session_open(A.db, &so, &a), 0);
    crdtdb_session_options_init(&so);
    so.mode = CRDTDB_SYNC_SERVER_TO_CLIENT;
    ck_assert_int_eq(crdtdb_session_open(C.db, &so, &c), 0);
    ck_assert(shuttle(a, c, 100000));
    char *da = dump(&A), *dc = dump(&C);
    ck_assert_msg(strcmp(da, dc) == 0, "%s", diffat(da, dc));
    free(da);
    free(dc);
    crdtdb_session_close(a);
    crdtdb_session_close(c);
    replica_free(&A);
    replica_free(&C);
}
END_TEST

/* A collection mid-walk drops a remove the client was not sent: the
 * server resyncs it (collected_under), and the resync's snapshot is the
 * whole walk again (guards since_horizon's walk_len reset). */
START_TEST(session_walk_then_a_collection_resyncs)
{
    replica A, C;
    replica_init(&A, &now_ms, "game");
    replica_init(&C, &now_ms, "game");
    fill(&A, "players", 40, "{\"hp\":%d,\"name\":\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"}");
    ck_assert_int_eq(crdtdb_db_collect(A.db, 0, NULL), 0); /* trims; collects nothing */
    crdtdb_session_options so;
    crdtdb_session_options_init(&so);
    so.flags = CRDTDB_SESSION_SERVER;
    so.max_output = 512;
    so.delta_size = 1024;
    crdtdb_session *a, *c;
    ck_assert_int_eq(crdtdb_session_open(A.db, &so, &a), 0);
    crdtdb_session_options_init(&so);
    so.max_output = 512;
    so.mode = CRDTDB_SYNC_SERVER_TO_CLIENT;
    ck_assert_int_eq(crdtdb_session_open(C.db, &so, &c), 0);
    ck_assert_int_eq(shuttle(a, c, 12), 0);
    char *g = tu_get(C.db, "players", "r39");
    ck_assert(!g); /* still walking */
    put(&A, "remove", "players", "r39", NULL);
    now_ms++;
    crdtdb_collect_stats st;
    ck_assert_int_eq(crdtdb_db_collect(A.db, 0, &st), 0);
    ck_assert_uint_eq(st.records, 1);
    ck_assert(shuttle(a, c, 100000));
    char *da = dump(&A), *dc = dump(&C);
    ck_assert_msg(strcmp(da, dc) == 0, "%s", diffat(da, dc));
    free(da);
    free(dc);
    crdtdb_session_close(a);
    crdtdb_session_close(c);
    replica_free(&A);
    replica_free(&C);
}
END_TEST

/* ----------------------------------------------------------- randomized */

/* One random write on r: an add (always, when the record is absent), an
 * update of pos.x, or a remove (an update of hp while `noremove`), to one
 * of `ids` records of either collection; the clock moves 1-3 ms. */
static void churn1(replica *r, int ids)
{
    char id[16], json[128];
    int c = rand() % 2, x = rand() % ids, op = rand() % 10;
    snprintf(id, sizeof id, "r%d", x);
    const char *coll = COLLS[c];
    char *cur = tu_get(r->db, coll, id);
    if (!cur || op < 2) {
        snprintf(json, sizeof json, "{\"hp\":%d,\"pos\":{\"x\":%d,\"y\":%d},\"n\":\"%c\"}",
                 rand() % 100, rand() % 50, rand() % 50, 'a' + rand() % 26);
        put(r, "add", coll, id, json);
    } else if (op < 7) {
        snprintf(json, sizeof json, "{\"pos\":{\"x\":%d}}", rand() % 50);
        put(r, "update", coll, id, json);
    } else if (noremove) {
        snprintf(json, sizeof json, "{\"hp\":%d}", rand() % 50);
        put(r, "update", coll, id, json);
    } else {
        put(r, "remove", coll, id, NULL);
    }
    free(cur);
    now_ms += 1 + rand() % 3;
}

/* Random churn on A, random collects (a fake peer's stable at random
 * points, so the floor moves in steps), and receivers pulling one delta at
 * a time from random points, with writes and collects between their
 * calls; at the end each must hold what A holds. */
START_TEST(random_churn_trim_and_pulls)
{
    unsigned seed = 1000 + (unsigned)_i;
    srand(seed);
    replica A;
    replica_init(&A, &now_ms, "game");
    uint8_t fake[32];
    memset(fake, 0x42, sizeof fake);
    enum { NR = 3 };
    replica R[NR];
    puller p[NR];
    int filter = _i % 2;
    noremove = (_i / 2) % 2;
    for (int k = 0; k < NR; k++) {
        replica_init(&R[k], &now_ms, "game");
        memset(&p[k], 0, sizeof p[k]);
        p[k].max_bytes = 300 + (size_t)(rand() % 400);
        p[k].filter = filter;
        p[k].flags = 0;
    }
    int ids = 10 + rand() % 30;
    for (int step = 0; step < 1500; step++) {
        int r = rand() % 100;
        if (r < 55) {
            churn1(&A, ids);
        } else if (r < 60) {
            uint64_t last;
            ck_assert_int_eq(crdtdb_db_seq(A.db, NULL, &last), 0);
            uint64_t st = last ? (uint64_t)rand() % (last + 1) : 0;
            ck_assert_int_eq(crdtdb_db_peer_ack_at(A.db, fake, st, 0), 0);
            crdtdb_collect_stats cs;
            ck_assert_int_eq(crdtdb_db_collect(A.db, 0, &cs), 0);
            /* a receiver behind the collection floor would be resynced
             * (session.c since_horizon / collected_under): start it over */
            for (int k = 0; cs.records && k < NR; k++)
                if (p[k].since < cs.floor) {
                    replica_free(&R[k]);
                    replica_init(&R[k], &now_ms, "game");
                    p[k].since = 0;
                    p[k].rlen = 0;
                }
        } else if (r < 61) {
            /* a record forgotten everywhere (a local purge, as a read-only
             * client's): a walk's resume point may go */
            char id[16];
            snprintf(id, sizeof id, "r%d", rand() % ids);
            const char *coll = COLLS[rand() % 2];
            ck_assert_int_eq(crdtdb_db_purge(A.db, coll, id), 0);
            for (int k = 0; k < NR; k++)
                ck_assert_int_eq(crdtdb_db_purge(R[k].db, coll, id), 0);
        } else if (r < 62) {
            /* a receiver restarts from scratch (a fresh replica) */
            int k = rand() % NR;
            replica_free(&R[k]);
            replica_init(&R[k], &now_ms, "game");
            p[k].since = 0;
            p[k].rlen = 0;
        } else {
            int k = rand() % NR;
            pull_one(&A, &R[k], &p[k]);
        }
    }
    char *da = dump(&A);
    for (int k = 0; k < NR; k++) {
        for (int g = 0; !pull_one(&A, &R[k], &p[k]); g++)
            ck_assert_int_lt(g, 100000);
        char *dr = dump(&R[k]);
        ck_assert_msg(strcmp(da, dr) == 0, "seed %u receiver %d differs %s", seed, k, diffat(da, dr));
        free(dr);
        replica_free(&R[k]);
    }
    free(da);
    replica_free(&A);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("trimrev");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, resume_across_a_second_trim);
    tcase_add_test(tc, filtered_walk_overflows_the_delta);
    tcase_add_test(tc, resume_for_another_since_is_refused);
    tcase_add_test(tc, shared_export_with_malformed_resume);
    tcase_add_test(tc, discard_unsent_below_the_floor);
    tcase_add_test(tc, walk_sends_the_peer_its_own);
    tcase_add_test(tc, session_walk_across_a_trim);
    tcase_add_test(tc, resume_after_its_record_went);
    tcase_add_loop_test(tc, exports_carry_as_many_registers, 0, 2);
    tcase_add_test(tc, expiry_survives_a_trim);
    tcase_add_test(tc, session_filtered_walk_of_large_records);
    suite_add_tcase(s, tc);
    TCase *tcc = tcase_create("costly");
    tcase_add_test(tcc, session_walk_refused_as_too_costly);
    tcase_add_test(tcc, session_walk_then_a_collection_resyncs);
    suite_add_tcase(s, tcc);
    TCase *tr = tcase_create("random");
    tcase_set_timeout(tr, 600);
    tcase_add_loop_test(tr, random_churn_trim_and_pulls, 0, getenv("RAND_N") ? atoi(getenv("RAND_N")) : 16);
    suite_add_tcase(s, tr);
    return tu_run(s);
}
