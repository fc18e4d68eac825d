/* Second review of the trimmed change log (session 38, fixes fe09a90..3c84da0):
 * walks whose floor rises several times while they are pulled one delta at a
 * time (the multi-pass walk: wsince/wfloor in the token), through the API
 * and through a server + client session with collections between pumps,
 * with and without a read filter.  Oracle: write-once "static" records —
 * a receiver whose watermark (`to`) reached a static record's sequence must
 * hold it — plus the final state against the source.
 *
 * Build: add trimrev2 to CRDTDB_TEST_SUITES in CMakeLists.txt.  Tcases:
 * "targeted" (one test per finding of /work/notes/s38-trim-review2.md; they
 * fail on 648e2f8), "api", "session" (randomized loop tests).
 * Env: RAND2_N (seeds of each random test, default 16), RAND2_STEPS (api
 * steps, default 1500; sessions take half), RAND2_STATS, RAND2_TRACE.
 * REVIEW_NO_TRIM is read by one test: it names a review-only switch that
 * made trim_log a no-op in the reviewer's copy (an untrimmed control). */
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

/* A read filter that hides every record whose number (after the prefix
 * letter) is odd. */
static int part_visible(void *ctx, crdtdb_txn *txn, const char *coll, const char *id,
                        const uint8_t *value, size_t len)
{
    (void)ctx, (void)txn, (void)coll, (void)value, (void)len;
    return atoi(id + 1) % 2 == 0;
}

static uint64_t seq_of(replica *A)
{
    uint64_t last;
    ck_assert_int_eq(crdtdb_db_seq(A->db, NULL, &last), 0);
    return last;
}

static uint64_t lfloor_of(replica *A)
{
    crdtdb_txn *t;
    uint64_t lf = 0;
    ck_assert_int_eq(crdtdb_txn_begin(A->db, CRDTDB_TXN_RDONLY, &t), 0);
    ck_assert_int_eq(crdtdb__logfloor_read(A->db, t->mt, &lf), 0);
    crdtdb_txn_abort(t);
    return lf;
}

/* ------------------------------------------------------------- statics */

enum { SMAX = 2048 };
typedef struct statics {
    int n;
    uint64_t seq[SMAX];
    int coll[SMAX];
    char id[SMAX][12];
} statics;

/* A write-once record (never updated, removed or purged): its sequence. */
static void static_add(replica *A, statics *s, int big)
{
    ck_assert_int_lt(s->n, SMAX);
    int i = s->n++;
    s->coll[i] = rand() % 2;
    snprintf(s->id[i], sizeof s->id[i], "s%04d", i);
    char json[600];
    char pad[400];
    int plen = big ? 50 + rand() % 300 : 8;
    memset(pad, 'p', (size_t)plen);
    pad[plen] = 0;
    snprintf(json, sizeof json, "{\"k\":%d,\"pad\":\"%s\",\"o\":{\"a\":%d,\"b\":%d}}", i, pad,
             rand() % 9, rand() % 9);
    put(A, "add", COLLS[s->coll[i]], s->id[i], json);
    s->seq[i] = seq_of(A);
    now_ms += 1;
}

static int static_partial; /* the partial filter: odd ones are never sent */

/* Every static record numbered at or below `upto` is in R. */
static void static_check(replica *R, const statics *s, uint64_t upto, const char *what,
                         unsigned seed)
{
    for (int i = 0; i < s->n; i++) {
        if (s->seq[i] > upto || (static_partial && atoi(s->id[i] + 1) % 2))
            continue;
        char *g = tu_get(R->db, COLLS[s->coll[i]], s->id[i]);
        ck_assert_msg(g != NULL,
                      "seed %u %s: watermark %llu but %s/%s (seq %llu) is missing", seed, what,
                      (unsigned long long)upto, COLLS[s->coll[i]], s->id[i],
                      (unsigned long long)s->seq[i]);
        free(g);
    }
}

/* With the partial filter: C must hold exactly A's visible records with
 * an even number (statics and churned ones), and nothing else. */
static void compare_partial(replica *A, replica *C, const statics *S, int ids, unsigned seed)
{
    char id[16];
    for (int c = 0; c < 2; c++)
        for (int i = 0; i < ids + S->n; i++) {
            if (i < ids)
                snprintf(id, sizeof id, "r%d", i);
            else
                snprintf(id, sizeof id, "%s", S->id[i - ids]);
            char *a = tu_get(A->db, COLLS[c], id), *b = tu_get(C->db, COLLS[c], id);
            if (atoi(id + 1) % 2)
                ck_assert_msg(!b, "seed %u: hidden %s/%s at the client", seed, COLLS[c], id);
            else
                ck_assert_msg((!a && !b) || (a && b && strcmp(a, b) == 0),
                              "seed %u: %s/%s: server %s, client %s", seed, COLLS[c], id,
                              a ? a : "(none)", b ? b : "(none)");
            free(a);
            free(b);
        }
}

static int noremove;
static void churn1(replica *r, int ids, const char *prefix)
{
    char id[16], json[160];
    int c = rand() % 2, x = rand() % ids, op = rand() % 10;
    snprintf(id, sizeof id, "%s%d", prefix, x);
    const char *coll = COLLS[c];
    char *cur = tu_get(r->db, coll, id);
    if (!cur || op < 2) {
        snprintf(json, sizeof json, "{\"hp\":%d,\"pos\":{\"x\":%d,\"y\":%d},\"n\":\"%c\"}",
                 rand() % 100, rand() % 50, rand() % 50, 'a' + rand() % 26);
        put(r, "add", coll, id, json);
    } else if (op < 7 || noremove) {
        snprintf(json, sizeof json, "{\"pos\":{\"x\":%d}}", rand() % 50);
        put(r, "update", coll, id, json);
    } else {
        put(r, "remove", coll, id, NULL);
    }
    free(cur);
    now_ms += 1 + rand() % 3;
}

/* The source both randomized tests start from: ns_min + rand() % ns_span
 * statics with churn over *ids ids between them (10..29), acknowledged by
 * the fake peer and collected, so that what follows starts below the log
 * floor.  The caller frees the statics. */
static statics *source_fill(replica *A, const uint8_t fake[32], int ns_min, int ns_span, int *ids)
{
    statics *S = calloc(1, sizeof *S);
    ck_assert_ptr_nonnull(S);
    *ids = 10 + rand() % 20;
    int ns = ns_min + rand() % ns_span;
    for (int i = 0; i < ns; i++) {
        static_add(A, S, 1);
        if (rand() % 3 == 0)
            churn1(A, *ids, "r");
    }
    ck_assert_int_eq(crdtdb_db_peer_ack_at(A->db, fake, seq_of(A), 0), 0);
    ck_assert_int_eq(crdtdb_db_collect(A->db, 0, NULL), 0);
    return S;
}

/* ------------------------------------------------------ API, one delta */

/* RAND2_TRACE: each export of pull_one (tests/pull.c), its token read. */
static void trace(replica *A, const puller *p, int rc, const crdtdb_export_info *info,
                  uint64_t last)
{
    if (!getenv("RAND2_TRACE"))
        return;
    char tk[300] = "";
    if (info->resume_len) {
        const uint8_t *r = info->resume;
        snprintf(tk, sizeof tk, "%u/%.*s wseq %llu wsince %llu wfloor %llu", r[0] << 8 | r[1],
                 r[2], (const char *)r + 3, (unsigned long long)crdtdb__get_u64(r + 3 + r[2]),
                 (unsigned long long)crdtdb__get_u64(r + 11 + r[2]),
                 (unsigned long long)crdtdb__get_u64(r + 19 + r[2]));
    }
    fprintf(stderr, "pull since %llu rlen %zu: rc %d to %llu deltas %zu bytes %zu last %llu lfloor %llu token %s\n",
            (unsigned long long)p->since, p->rlen, rc, (unsigned long long)info->to,
            info->deltas, info->bytes, (unsigned long long)last,
            (unsigned long long)lfloor_of(A), tk);
}

static unsigned long tot_trims_in_walk, tot_pass_ends, tot_walks_multi;

/* Static records plus churn; the receiver pulls one delta a call; between
 * calls writes and collections whose horizon (a fake peer's stable) rises
 * to a random point at or above the log floor, so one walk sees many
 * trims.  Seeds: bit 0 a read filter, bit 1 removes (tombstones collected:
 * a receiver behind the collection floor starts over, as a resync). */
START_TEST(walk_trims_between_pulls)
{
    unsigned seed = 5000 + (unsigned)_i;
    srand(seed);
    int filter = _i % 3; /* 2: the partial filter */
    static_partial = filter == 2;
    noremove = (_i / 3) % 4 != 3; /* removes in one seed of four */
    replica A, R;
    replica_init(&A, &now_ms, "game");
    replica_init(&R, &now_ms, "game");
    uint8_t fake[32];
    memset(fake, 0x42, sizeof fake);
    int ids;
    statics *S = source_fill(&A, fake, 30, 120, &ids);
    puller p;
    memset(&p, 0, sizeof p);
    p.max_bytes = 300 + (size_t)(rand() % 2500);
    p.filter = filter;
    p.visible = filter == 2 ? part_visible : NULL;
    p.trace = trace;
    int steps = getenv("RAND2_STEPS") ? atoi(getenv("RAND2_STEPS")) : 1500;
    unsigned trims_this_walk = 0;
    int in_walk = 0;
    for (int step = 0; step < steps; step++) {
        int r = rand() % 100;
        if (r < 45) {
            pull_one(&A, &R, &p);
            static_check(&R, S, p.since, "pull", seed);
            if (p.rlen)
                in_walk = 1;
            else if (in_walk) {
                if (trims_this_walk > 1)
                    tot_walks_multi++;
                trims_this_walk = 0;
                in_walk = 0;
            }
        } else if (r < 65) {
            churn1(&A, ids, "r");
        } else if (r < 70) {
            static_add(&A, S, rand() % 2);
        } else if (r < 95) {
            uint64_t last = seq_of(&A), lf = lfloor_of(&A);
            uint64_t st = lf + (last > lf ? (uint64_t)rand() % (last - lf + 1) : 0);
            ck_assert_int_eq(crdtdb_db_peer_ack_at(A.db, fake, st, 0), 0);
            crdtdb_collect_stats cs;
            ck_assert_int_eq(crdtdb_db_collect(A.db, 0, &cs), 0);
            if (p.rlen && lfloor_of(&A) > lf)
                trims_this_walk++, tot_trims_in_walk++;
            if (cs.records && p.since < cs.floor) { /* a resync: start over */
                replica_free(&R);
                replica_init(&R, &now_ms, "game");
                p.since = 0;
                p.rlen = 0;
                in_walk = 0;
                trims_this_walk = 0;
            }
        } else if (r < 98 && rand() % 8 == 0) {
            /* a fresh receiver */
            replica_free(&R);
            replica_init(&R, &now_ms, "game");
            p.since = 0;
            p.rlen = 0;
            in_walk = 0;
            trims_this_walk = 0;
        } else {
            /* a bigger or smaller budget from now on (same token) */
            p.max_bytes = 300 + (size_t)(rand() % 900);
        }
    }
    for (int g = 0; !pull_one(&A, &R, &p); g++) {
        ck_assert_int_lt(g, 100000);
        static_check(&R, S, p.since, "final pull", seed);
    }
    tot_pass_ends += p.pass_ends;
    if (filter == 2) {
        compare_partial(&A, &R, S, ids, seed);
        free(S);
        replica_free(&A);
        replica_free(&R);
        return;
    }
    if (getenv("RAND2_STATS"))
        fprintf(stderr, "seed %u filter %d: trims inside walks %lu, walks with >1 trim %lu, pass ends %lu\n",
                seed, filter, tot_trims_in_walk, tot_walks_multi, tot_pass_ends);
    char *da = dump(&A), *dr = dump(&R);
    ck_assert_msg(strcmp(da, dr) == 0, "seed %u: %s", seed, diffat(da, dr));
    free(da);
    free(dr);
    free(S);
    replica_free(&A);
    replica_free(&R);
}
END_TEST

/* ---------------------------------------------------------- sessions */

/* Moves bytes both ways for `turns` turns (pumping when nothing moves).
 * Returns 1 when quiet. */
static int shuttle(crdtdb_session *a, crdtdb_session *c, size_t turns, unsigned seed)
{
    for (size_t t = 0; t < turns; t++) {
        size_t moved = 0;
        crdtdb_session *pair[2][2] = {{a, c}, {c, a}};
        for (int k = 0; k < 2; k++) {
            size_t len;
            const uint8_t *p = crdtdb_session_output(pair[k][0], &len);
            if (len) {
                ck_assert_msg(crdtdb_session_feed(pair[k][1], p, len) == 0, "seed %u feed %s: %s",
                              seed, k ? "server" : "client", crdtdb_session_errmsg(pair[k][1]));
                crdtdb_session_consume(pair[k][0], len);
                moved += len;
            }
        }
        if (!moved) {
            int ra = crdtdb_session_pump(a), rc = crdtdb_session_pump(c);
            ck_assert_msg(ra == 0, "seed %u server pump: %s", seed, crdtdb_session_errmsg(a));
            ck_assert_msg(rc == 0, "seed %u client pump: %s", seed, crdtdb_session_errmsg(c));
            size_t la, lc;
            crdtdb_session_output(a, &la);
            crdtdb_session_output(c, &lc);
            if (!la && !lc)
                return 1;
        }
    }
    return 0;
}

typedef struct pair {
    crdtdb_session *a, *c;
    crdtdb_session_options sa, sc;
} pair;

static void pair_open(pair *p, replica *A, replica *C)
{
    ck_assert_int_eq(crdtdb_session_open(A->db, &p->sa, &p->a), 0);
    ck_assert_int_eq(crdtdb_session_open(C->db, &p->sc, &p->c), 0);
}

static void pair_close(pair *p)
{
    crdtdb_session_close(p->a);
    crdtdb_session_close(p->c);
    p->a = p->c = NULL;
}

/* A server session and a client session (receive-only or both ways), small
 * deltas and outputs; the server writes and collects between a few turns
 * (horizon: a fake peer's stable rising from the log floor, held back by a
 * two-way client's acks); sometimes the connection drops and opens again.
 * Seeds: bit 0 read filter, bit 1 two-way client, bit 2 removes, bit 3
 * frequent reconnects (else rare). */
static void run_session(int _i, unsigned seed, int filter)
{
    srand(seed);
    int twoway = filter == 2 ? 0 : (_i / 2) % 2;
    static_partial = filter == 2;
    noremove = !((_i / 4) % 2);
    int reconnects = (_i / 8) % 2; /* else one in ten */
    replica A, C;
    replica_init(&A, &now_ms, "game");
    replica_init(&C, &now_ms, "game");
    uint8_t fake[32];
    memset(fake, 0x42, sizeof fake);
    int ids;
    statics *S = source_fill(&A, fake, 60, 150, &ids);
    pair P;
    memset(&P, 0, sizeof P);
    crdtdb_session_options_init(&P.sa);
    P.sa.flags = CRDTDB_SESSION_SERVER;
    P.sa.max_output = 256 + (size_t)(rand() % 1500);
    P.sa.delta_size = 400 + (size_t)(rand() % 1500);
    if (filter)
        P.sa.read_filter = filter == 2 ? part_visible : all_visible;
    crdtdb_session_options_init(&P.sc);
    P.sc.max_output = 256 + (size_t)(rand() % 1500);
    P.sc.delta_size = 400 + (size_t)(rand() % 1500);
    if (!twoway)
        P.sc.mode = CRDTDB_SYNC_SERVER_TO_CLIENT;
    pair_open(&P, &A, &C);
    unsigned long s_trims_below = 0, s_advances_below = 0;
    uint64_t s_prev_rf = 0;
    int steps = getenv("RAND2_STEPS") ? atoi(getenv("RAND2_STEPS")) / 2 : 700;
    for (int step = 0; step < steps; step++) {
        int r = rand() % 100;
        if (r < 40) {
            shuttle(P.a, P.c, 1 + (size_t)(rand() % 3), seed);
            uint64_t rf = received_from(&C, &A);
            if (rf > s_prev_rf && rf < lfloor_of(&A))
                s_advances_below++; /* a pass ended below the floor */
            s_prev_rf = rf;
            if (getenv("RAND2_TRACE"))
                fprintf(stderr, "seed %u step %d: received %llu of %llu, log floor %llu\n", seed,
                        step, (unsigned long long)rf, (unsigned long long)seq_of(&A),
                        (unsigned long long)lfloor_of(&A));
            static_check(&C, S, rf, "session", seed);
        } else if (r < 60) {
            churn1(&A, ids, "r");
        } else if (r < 65) {
            static_add(&A, S, rand() % 2);
        } else if (r < 70 && twoway) {
            churn1(&C, ids, "c");
        } else if (r < 91) {
            uint64_t last = seq_of(&A), lf = lfloor_of(&A);
            uint64_t st = lf + (last > lf ? (uint64_t)rand() % (last - lf + 1) : 0);
            ck_assert_int_eq(crdtdb_db_peer_ack_at(A.db, fake, st, 0), 0);
            ck_assert_int_eq(crdtdb_db_collect(A.db, 0, NULL), 0);
            if (lfloor_of(&A) > lf && received_from(&C, &A) < lf)
                s_trims_below++;
        } else if (r < 92) {
            ck_assert_int_eq(crdtdb_db_collect(C.db, 0, NULL), 0);
        } else if (r < 93 && !twoway && rand() % 5 == 0) {
            /* a fresh client (a new device): a walk from 0 again */
            pair_close(&P);
            replica_free(&C);
            replica_init(&C, &now_ms, "game");
            pair_open(&P, &A, &C);
        } else if (r < 97 && (reconnects || rand() % 10 == 0)) {
            /* the connection drops: both ends open again (client: SINCE
             * from its durable watermark) */
            pair_close(&P);
            pair_open(&P, &A, &C);
        } else {
            /* output drained by halves: a slow link */
            size_t len;
            crdtdb_session_output(P.a, &len);
            if (len) {
                const uint8_t *q = crdtdb_session_output(P.a, &len);
                size_t half = len / 2;
                if (half) {
                    ck_assert_msg(crdtdb_session_feed(P.c, q, half) == 0, "seed %u feed: %s", seed,
                                  crdtdb_session_errmsg(P.c));
                    crdtdb_session_consume(P.a, half);
                }
            }
        }
    }
    if (getenv("RAND2_STATS"))
        fprintf(stderr, "seed %u: trims while the client is below the floor %lu, watermark moves below the floor %lu\n",
                seed, s_trims_below, s_advances_below);
    int quiet = 0;
    for (int g = 0; g < 200 && !quiet; g++)
        quiet = shuttle(P.a, P.c, 100000, seed);
    ck_assert_msg(quiet, "seed %u: never quiet", seed);
    static_check(&C, S, received_from(&C, &A), "session end", seed);
    if (filter == 2) {
        compare_partial(&A, &C, S, ids, seed);
    } else {
        char *da = dump(&A), *dc = dump(&C);
        ck_assert_msg(strcmp(da, dc) == 0, "seed %u (filter %d twoway %d): %s", seed, filter,
                      twoway, diffat(da, dc));
        free(da);
        free(dc);
    }
    pair_close(&P);
    free(S);
    replica_free(&A);
    replica_free(&C);
}

START_TEST(session_trims_between_pumps)
{
    run_session(_i, 7000 + (unsigned)_i, _i % 2);
}
END_TEST

/* The same with a read filter hiding half the records (SKIPs and PURGEs
 * inside walks), receive-only. */
START_TEST(session_partial_filter_trims)
{
    run_session(_i, 9000 + (unsigned)_i, 2);
}
END_TEST

/* --------------------------------------------------------- targeted */

/* A walk whose floor rose meanwhile ends its first pass in the middle of a
 * call: that delta's `to` is the old floor and the token (for the next
 * pass) names it as its since.  A caller passing since = info.to with the
 * token, as include/crdtdb.h says, goes on; one keeping the old since is
 * told EINVAL, not walked wrong. */
START_TEST(next_pass_goes_on_from_info_to)
{
    replica A, R;
    replica_init(&A, &now_ms, "game");
    replica_init(&R, &now_ms, "game");
    statics *S = calloc(1, sizeof *S);
    srand(3);
    for (int i = 0; i < 60; i++)
        static_add(&A, S, 1);
    ck_assert_int_eq(crdtdb_db_collect(A.db, 0, NULL), 0);
    uint64_t l1 = lfloor_of(&A);
    puller p;
    memset(&p, 0, sizeof p);
    p.max_bytes = 600;
    p.trace = trace;
    pull_one(&A, &R, &p);
    ck_assert_uint_gt(p.rlen, 0);
    for (int i = 0; i < 60; i++)
        static_add(&A, S, 1);
    ck_assert_int_eq(crdtdb_db_collect(A.db, 0, NULL), 0);
    ck_assert_uint_gt(lfloor_of(&A), l1);
    /* one delta at a time, the since kept at 0 while a token is there */
    uint8_t tok[CRDTDB_EXPORT_RESUME_MAX];
    memcpy(tok, p.resume, p.rlen);
    size_t tlen = p.rlen;
    int rc = 0, calls = 0, saw_to = 0, stale = 0;
    uint64_t since = 0;
    while (tlen && calls++ < 1000) {
        crdtdb_export_options eo = {.max_bytes = 600, .resume = tok, .resume_len = tlen};
        crdtdb_export_info info;
        memset(&info, 0, sizeof info);
        one o = {CRDTDB_BUF_INIT, 0};
        if (since && !stale) { /* the old since with the new pass's token */
            stale = 1;
            ck_assert_int_eq(crdtdb_db_export_for(A.db, 0, NULL, &eo, take_one, &o, &info),
                             CRDTDB_EINVAL);
            crdtdb_buf_free(&o.d);
            memset(&o, 0, sizeof o);
        }
        rc = crdtdb_db_export_for(A.db, since, NULL, &eo, take_one, &o, &info);
        crdtdb_buf_free(&o.d);
        if (rc)
            break;
        if (info.to > 0)
            saw_to = 1;
        since = info.to;
        memcpy(tok, info.resume, info.resume_len);
        tlen = info.resume_len;
    }
    ck_assert_int_eq(saw_to, 1);
    ck_assert_int_eq(stale, 1);
    ck_assert_msg(rc == 0, "since = info.to with the walk's own token: %s (%d)",
                  crdtdb_db_errmsg(A.db), rc);
    free(S);
    replica_free(&A);
    replica_free(&R);
}
END_TEST

/* A resync in flight (a fresh client of a server that collected: SINCE 0
 * from behind the collection floor) walks the records; a record it was
 * already sent is removed and its tombstone collected (the client is
 * receive-only: not in the horizon).  collected_under does not resync
 * while `behind && done < all_upto`; the walk's last delta then moves
 * `done` from below all_upto past the new floor at once, so no later
 * check sees the client behind it: the client keeps the record. */
START_TEST(resync_walk_misses_a_collected_remove)
{
    replica A, C;
    replica_init(&A, &now_ms, "game");
    replica_init(&C, &now_ms, "game");
    char id[16], json[160];
    for (int i = 0; i < 40; i++) {
        snprintf(id, sizeof id, "r%02d", i);
        snprintf(json, sizeof json, "{\"hp\":%d,\"name\":\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"}", i);
        put(&A, "add", "players", id, json);
        now_ms++;
    }
    put(&A, "add", "moves", "gone", "{\"x\":1}");
    put(&A, "remove", "moves", "gone", NULL);
    crdtdb_collect_stats st;
    ck_assert_int_eq(crdtdb_db_collect(A.db, 0, &st), 0); /* a collection floor: SINCE 0 resyncs */
    ck_assert_uint_eq(st.records, 1);
    put(&A, "add", "moves", "w1", "{\"x\":1}"); /* all_upto past the log floor */
    now_ms++;
    crdtdb_session_options so;
    crdtdb_session_options_init(&so);
    so.flags = CRDTDB_SESSION_SERVER;
    so.max_output = 512;
    so.delta_size = 1024;
    crdtdb_session *a, *c;
    ck_assert_int_eq(crdtdb_session_open(A.db, &so, &a), 0);
    crdtdb_session_options_init(&so);
    so.mode = CRDTDB_SYNC_SERVER_TO_CLIENT;
    ck_assert_int_eq(crdtdb_session_open(C.db, &so, &c), 0);
    char *g = NULL;
    for (int t = 0; !g; t++) { /* part of the resync's walk: r00 went */
        ck_assert_int_lt(t, 100);
        ck_assert_int_eq(shuttle(a, c, 1, 0), 0);
        g = tu_get(C.db, "players", "r00");
    }
    free(g);
    g = tu_get(C.db, "players", "r39");
    ck_assert_msg(g == NULL, "walk already done");
    put(&A, "remove", "players", "r00", NULL);
    now_ms++;
    ck_assert_int_eq(crdtdb_db_collect(A.db, 0, &st), 0);
    ck_assert_uint_eq(st.records, 1); /* r00's tombstone went */
    ck_assert(shuttle(a, c, 100000, 0));
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

/* include/crdtdb.h: a malformed resume is EINVAL, shared or not, walk or
 * no walk (a shared export checks it at its first snapshot). */
START_TEST(shared_export_refuses_a_malformed_resume)
{
    replica A;
    replica_init(&A, &now_ms, "game");
    put(&A, "add", "players", "a", "{\"hp\":1}");
    uint8_t bad[5] = {0, 0, 9, 9, 9};
    uint8_t peer[32];
    memset(peer, 7, sizeof peer);
    net q = {0};
    crdtdb_export_options eo = {.resume = bad, .resume_len = sizeof bad};
    ck_assert_int_eq(crdtdb_db_export_for(A.db, 0, peer, &eo, to_net, &q, NULL), CRDTDB_EINVAL);
    net_free(&q);
    memset(&q, 0, sizeof q);
    eo.flags = CRDTDB_EXPORT_SHARED;
    int rc = crdtdb_db_export_for(A.db, 0, peer, &eo, to_net, &q, NULL);
    net_free(&q);
    ck_assert_msg(rc == CRDTDB_EINVAL, "shared: %d", rc);
    replica_free(&A);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("trimrev2");
    int n = getenv("RAND2_N") ? atoi(getenv("RAND2_N")) : 16;
    TCase *tc = tcase_create("targeted");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, next_pass_goes_on_from_info_to);
    tcase_add_test(tc, resync_walk_misses_a_collected_remove);
    tcase_add_test(tc, shared_export_refuses_a_malformed_resume);
    suite_add_tcase(s, tc);
    TCase *ta = tcase_create("api");
    tcase_set_timeout(ta, 3000);
    tcase_add_loop_test(ta, walk_trims_between_pulls, 0, n);
    suite_add_tcase(s, ta);
    TCase *ts = tcase_create("session");
    tcase_set_timeout(ts, 3000);
    tcase_add_loop_test(ts, session_trims_between_pumps, 0, n);
    tcase_add_loop_test(ts, session_partial_filter_trims, 0, n);
    suite_add_tcase(s, ts);
    return tu_run(s);
}
