/* Replicas converge through signed deltas: export, apply, watermarks, bad
 * input, and a randomized property test against a model of the LWW rules. */
#include <check.h>
#include <sys/stat.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crdt/buf.h"
#include "crdt/hlc.h"
#include "crdt/path.h"
#include "storage/internal.h"
#include "tests/replica.h"
#include "tests/testutil.h"

static uint64_t now_ms = 1700000000000ull;
static replica A, B, C;

static void setup3(void)
{
    replica_init(&A, &now_ms, "game");
    replica_init(&B, &now_ms, "game");
    replica_init(&C, &now_ms, "game");
}

static void teardown3(void)
{
    replica_free(&A);
    replica_free(&B);
    replica_free(&C);
}

/* ----------------------------------------------------------- behaviours */

START_TEST(two_replicas_converge)
{
    put(&A, "add", "players", "ann", "{\"hp\":10,\"pos\":{\"x\":1,\"y\":2}}");
    put(&B, "add", "players", "bob", "{\"hp\":7}");
    now_ms += 5;
    put(&A, "update", "players", "ann", "{\"pos\":{\"x\":3}}");
    put(&B, "add", "moves", "m1", "{\"to\":\"e4\"}");
    ck_assert_uint_gt(sync_pair(&A, &B), 0);
    ck_assert_uint_gt(sync_pair(&B, &A), 0);
    char *a = dump(&A), *b = dump(&B);
    ck_assert_str_eq(a, b);
    ck_assert_str_eq(a, "players:ann={\"hp\":10,\"pos\":{\"x\":3,\"y\":2}};bob={\"hp\":7};"
                        "moves:m1={\"to\":\"e4\"};");
    free(a);
    free(b);
    /* nothing more to send either way */
    ck_assert_uint_eq(sync_pair(&A, &B), 0);
    ck_assert_uint_eq(sync_pair(&B, &A), 0);
}
END_TEST

START_TEST(concurrent_field_writes)
{
    put(&A, "add", "players", "p", "{\"a\":1,\"n\":{\"x\":1,\"y\":1}}");
    sync_pair(&A, &B);
    now_ms += 10;
    put(&A, "update", "players", "p", "{\"n\":{\"x\":2}}"); /* different nested fields */
    put(&B, "update", "players", "p", "{\"n\":{\"y\":3}}");
    now_ms += 10;
    put(&B, "update", "players", "p", "{\"a\":5}");
    now_ms += 10;
    put(&A, "update", "players", "p", "{\"a\":4}"); /* the later write wins */
    sync_pair(&A, &B);
    sync_pair(&B, &A);
    char *a = tu_get(A.db, "players", "p"), *b = tu_get(B.db, "players", "p");
    ck_assert_str_eq(a, b);
    ck_assert_str_eq(a, "{\"a\":4,\"n\":{\"x\":2,\"y\":3}}"); /* A wrote a later (HLC) */
    free(a);
    free(b);
}
END_TEST

START_TEST(remove_wins_over_concurrent_update)
{
    put(&A, "add", "players", "p", "{\"hp\":1}");
    sync_pair(&A, &B);
    now_ms += 10;
    put(&A, "remove", "players", "p", NULL);
    now_ms += 10;
    put(&B, "update", "players", "p", "{\"hp\":2}"); /* later, but concurrent */
    sync_pair(&A, &B);
    sync_pair(&B, &A);
    ck_assert_ptr_null(tu_get(A.db, "players", "p"));
    ck_assert_ptr_null(tu_get(B.db, "players", "p"));
}
END_TEST

START_TEST(apply_is_idempotent_and_order_free)
{
    for (int i = 0; i < 30; i++) {
        char id[8], json[3100];
        snprintf(id, sizeof id, "r%d", i);
        snprintf(json, sizeof json, "{\"s\":\"%03000d\"}", i); /* 3 KB: splits */
        put(&A, "add", "moves", id, json);
    }
    net q = {0};
    crdtdb_export_info info;
    ck_assert_int_eq(crdtdb_db_export(A.db, 0, NULL, to_net, &q, &info), 0);
    ck_assert_uint_gt(q.n, 5); /* bounded deltas */
    ck_assert_uint_eq(info.deltas, q.n);
    ck_assert_uint_eq(info.changes, 60);
    for (size_t i = 0; i < q.n; i++)
        ck_assert_uint_le(q.msgs[i].len, A.opts.max_delta_size);
    /* in reverse: the watermark must not jump over the gaps */
    for (size_t i = q.n; i-- > 1;)
        ck_assert_int_eq(crdtdb_db_apply(B.db, q.msgs[i].data, q.msgs[i].len, NULL), 0);
    ck_assert_uint_eq(received_from(&B, &A), 0);
    ck_assert_int_eq(crdtdb_db_apply(B.db, q.msgs[0].data, q.msgs[0].len, NULL), 0);
    ck_assert_uint_gt(received_from(&B, &A), 0);
    /* a second time changes nothing */
    uint64_t seq1, seq2;
    ck_assert_int_eq(crdtdb_db_seq(B.db, NULL, &seq1), 0);
    for (size_t i = 0; i < q.n; i++) {
        crdtdb_apply_info ai;
        ck_assert_int_eq(crdtdb_db_apply(B.db, q.msgs[i].data, q.msgs[i].len, &ai), 0);
        ck_assert_uint_eq(ai.applied, 0);
    }
    ck_assert_int_eq(crdtdb_db_seq(B.db, NULL, &seq2), 0);
    ck_assert_uint_eq(seq1, seq2);
    char *a = dump(&A), *b = dump(&B);
    ck_assert_str_eq(a, b);
    free(a);
    free(b);
    /* the catch-up from the watermark is complete after the reordering */
    ck_assert_uint_eq(sync_pair(&A, &B), 0);
    net_free(&q);
}
END_TEST

/* A database dropped and created again under its id goes on with its
 * history where it ended: peers that got part or all of the old history
 * take the new one, with no fork (EFORK), and everything converges. */
START_TEST(dropped_database_created_again_continues_its_history)
{
    put(&A, "add", "players", "ann", "{\"hp\":1}");
    put(&A, "add", "players", "bob", "{\"hp\":2}");
    sync_pair(&A, &B); /* B holds A's history up to here */
    now_ms += 5;
    put(&A, "update", "players", "ann", "{\"hp\":3}");
    sync_pair(&A, &C); /* C holds all of it */
    uint64_t was;
    ck_assert_int_eq(crdtdb_db_seq(A.db, NULL, &was), 0);
    crdtdb_db_close(A.db);
    ck_assert_int_eq(crdtdb_db_drop(A.env, "game"), 0);
    ck_assert_int_eq(crdtdb_db_create(A.env, "game", COLLS, 2, &A.db), 0);
    uint64_t seq;
    ck_assert_int_eq(crdtdb_db_seq(A.db, NULL, &seq), 0);
    ck_assert_uint_eq(seq, was);
    now_ms += 5;
    put(&A, "add", "moves", "m1", "{\"to\":\"e4\"}");
    ck_assert_uint_eq(sync_pair(&A, &B), 2); /* only what is new: m1's base and leaf */
    ck_assert_uint_eq(sync_pair(&A, &C), 2);
    /* the old data comes back as to any replica starting from nothing
     * (a session's SINCE 0): everything, what it sent included */
    net q = {0};
    crdtdb_export_options eo;
    memset(&eo, 0, sizeof eo);
    eo.flags = CRDTDB_EXPORT_ALL;
    ck_assert_int_eq(crdtdb_db_export_for(C.db, 0, A.env->pk, &eo, to_net, &q, NULL), 0);
    for (size_t i = 0; i < q.n; i++)
        ck_assert_int_eq(crdtdb_db_apply(A.db, q.msgs[i].data, q.msgs[i].len, NULL), 0);
    net_free(&q);
    sync_pair(&B, &A);
    sync_pair(&A, &B);
    char *a = dump(&A), *b = dump(&B), *c = dump(&C);
    ck_assert_str_eq(a, "players:ann={\"hp\":3};bob={\"hp\":2};moves:m1={\"to\":\"e4\"};");
    ck_assert_str_eq(b, a);
    ck_assert_str_eq(c, a);
    free(a);
    free(b);
    free(c);
    /* a second drop leaves the later place, and the next create takes it */
    ck_assert_int_eq(crdtdb_db_seq(A.db, NULL, &was), 0);
    crdtdb_db_close(A.db);
    ck_assert_int_eq(crdtdb_db_drop(A.env, "game"), 0);
    ck_assert_int_eq(crdtdb_db_create(A.env, "game", COLLS, 2, &A.db), 0);
    ck_assert_int_eq(crdtdb_db_seq(A.db, NULL, &seq), 0);
    ck_assert_uint_eq(seq, was);
    now_ms += 5;
    put(&A, "add", "players", "bob", "{\"hp\":9}"); /* empty again: an add */
    ck_assert_uint_eq(sync_pair(&A, &C), 2);
    char *cb = tu_get(C.db, "players", "bob");
    ck_assert_str_eq(cb, "{\"hp\":9}");
    free(cb);
    /* pruned tombs: only those dropped before the cut go */
    ck_assert_int_eq(crdtdb_db_seq(A.db, NULL, &was), 0);
    crdtdb_db_close(A.db);
    ck_assert_int_eq(crdtdb_db_drop(A.env, "game"), 0);
    uint64_t pruned = 9;
    ck_assert_int_eq(crdtdb_env_tombs_prune(A.env, now_ms, &pruned), 0);
    ck_assert_uint_eq(pruned, 0); /* dropped at now_ms: not before it */
    now_ms += 10;
    ck_assert_int_eq(crdtdb_env_tombs_prune(A.env, now_ms, &pruned), 0);
    ck_assert_uint_eq(pruned, 1);
    ck_assert_int_eq(crdtdb_db_create(A.env, "game", COLLS, 2, &A.db), 0);
    ck_assert_int_eq(crdtdb_db_seq(A.db, NULL, &seq), 0);
    ck_assert_uint_eq(seq, 0); /* a new history */
}
END_TEST

/* The exporter's size estimate is an upper bound, but not a loose one: a
 * record group is counted once, not once per field, and a field that goes
 * short (stamped as its record's base) without a stamp, so records of
 * several fields fill the deltas: 54-56 % of the cap here; 34-37 % when
 * short fields were estimated long, 17 % when every field paid for a group
 * of its own. */
START_TEST(export_fills_its_deltas)
{
    for (int i = 0; i < 400; i++) {
        char id[16], json[96];
        snprintf(id, sizeof id, "r%03d", i);
        snprintf(json, sizeof json, "{\"hp\":%d,\"name\":\"n%d\",\"x\":%d,\"y\":%d}", i % 101,
                 i, i * 7, i * 13);
        put(&A, "add", "players", id, json);
    }
    const size_t caps[] = {4096, 8448}; /* the replicas' max_delta_size is 8448 */
    for (size_t c = 0; c < sizeof caps / sizeof *caps; c++) {
        net q = {0};
        crdtdb_export_options eo;
        memset(&eo, 0, sizeof eo);
        eo.max_bytes = caps[c];
        crdtdb_export_info info;
        ck_assert_int_eq(crdtdb_db_export_for(A.db, 0, B.env->pk, &eo, to_net, &q, &info), 0);
        ck_assert_uint_ge(q.n, 2);
        for (size_t i = 0; i < q.n; i++) {
            ck_assert_uint_le(q.msgs[i].len, caps[c]);
            if (i + 1 < q.n) /* all but the last: over half the cap */
                ck_assert_msg(q.msgs[i].len * 2 > caps[c], "delta %zu of %zu: %zu bytes of %zu",
                              i, q.n, q.msgs[i].len, caps[c]);
            ck_assert_int_eq(crdtdb_db_apply(B.db, q.msgs[i].data, q.msgs[i].len, NULL), 0);
        }
        net_free(&q);
    }
    char *a = dump(&A), *b = dump(&B);
    ck_assert_str_eq(a, b);
    free(a);
    free(b);
}
END_TEST

START_TEST(relay_reaches_third_replica)
{
    put(&A, "add", "players", "ann", "{\"hp\":1}");
    sync_pair(&A, &B);
    sync_pair(&B, &C); /* no A-C link */
    char *c = tu_get(C.db, "players", "ann");
    ck_assert_str_eq(c, "{\"hp\":1}");
    free(c);
    /* B does not send A's change back to A */
    net q = {0};
    crdtdb_export_info info;
    ck_assert_int_eq(crdtdb_db_export(B.db, 0, A.env->pk, to_net, &q, &info), 0);
    ck_assert_uint_eq(info.changes, 0);
    /* nor C's own relay back to B */
    ck_assert_int_eq(crdtdb_db_export(C.db, 0, B.env->pk, to_net, &q, &info), 0);
    ck_assert_uint_eq(info.changes, 0);
    /* but to a stranger, everything */
    ck_assert_int_eq(crdtdb_db_export(B.db, 0, NULL, to_net, &q, &info), 0);
    ck_assert_uint_eq(info.changes, 2);
    net_free(&q);
    /* a remove travels the same way */
    now_ms += 3;
    put(&A, "remove", "players", "ann", NULL);
    sync_pair(&A, &B);
    sync_pair(&B, &C);
    ck_assert_ptr_null(tu_get(C.db, "players", "ann"));
}
END_TEST

/* A replica offline for a week with a clock hours behind still delivers its
 * writes: export goes by local sequence, not by stamp. */
START_TEST(offline_replica_with_slow_clock_delivers)
{
    put(&A, "add", "players", "p", "{\"v\":0}");
    sync_pair(&A, &B);
    B.offset_ms = -3 * 3600 * 1000; /* offline, clock three hours slow */
    put(&B, "add", "moves", "offline", "{\"made\":\"while away\"}");
    put(&B, "update", "players", "p", "{\"w\":1}");
    now_ms += 7ull * 24 * 3600 * 1000; /* a week later */
    put(&A, "add", "moves", "later", "{}");
    B.offset_ms = 0; /* back online */
    sync_pair(&B, &A);
    sync_pair(&A, &B);
    char *a = dump(&A), *b = dump(&B);
    ck_assert_str_eq(a, b);
    ck_assert_ptr_nonnull(strstr(a, "offline={\"made\":\"while away\"}"));
    ck_assert_ptr_nonnull(strstr(a, "p={\"v\":0,\"w\":1}"));
    free(a);
    free(b);
}
END_TEST

START_TEST(watermarks_survive_restart)
{
    put(&A, "add", "players", "p", "{\"v\":1}");
    sync_pair(&A, &B);
    uint64_t r = received_from(&B, &A);
    ck_assert_uint_gt(r, 0);
    replica_close(&B);
    replica_open(&B, "game");
    ck_assert_uint_eq(received_from(&B, &A), r);
    /* acks: B tells A in its next delta what it has from A */
    net q = {0};
    ck_assert_int_eq(crdtdb_db_export(B.db, 0, A.env->pk, to_net, &q, NULL), 0);
    ck_assert_int_eq(crdtdb_db_apply(A.db, q.msgs[0].data, q.msgs[0].len, NULL), 0);
    crdtdb_peer p;
    int found;
    ck_assert_int_eq(crdtdb_db_peer_get(A.db, B.env->pk, &p, &found), 0);
    ck_assert_int_eq(found, 1);
    ck_assert_uint_eq(p.acked, r);
    ck_assert_int_eq(crdtdb_db_peer_ack(A.db, B.env->pk, r + 5), 0);
    ck_assert_int_eq(crdtdb_db_peer_ack(A.db, B.env->pk, 1), 0); /* never backwards */
    ck_assert_int_eq(crdtdb_db_peer_get(A.db, B.env->pk, &p, &found), 0);
    ck_assert_uint_eq(p.acked, r + 5);
    net_free(&q);
}
END_TEST

/* An ack of the peer whose id is 32 bytes of `who`. */
static crdtdb_peer_ack ack_of(uint8_t who, uint64_t acked, uint64_t stable)
{
    crdtdb_peer_ack a;
    memset(a.peer, who, sizeof a.peer);
    a.acked = acked;
    a.stable = stable;
    return a;
}

/* db's marks of `peer`; *found says whether it has any. */
static crdtdb_peer marks_of(crdtdb_db *db, const uint8_t *peer, int *found)
{
    crdtdb_peer p;
    ck_assert_int_eq(crdtdb_db_peer_get(db, peer, &p, found), 0);
    return p;
}

/* crdtdb_db_peer_acks records in one commit what the calls one by one
 * record: A takes a batch, B the same acks one call at a time. */
START_TEST(peer_acks_batch_records_what_single_acks_do)
{
    crdtdb_peer_ack acks[3] = {
        ack_of(0x41, 9, 0),  /* acked only */
        ack_of(0x42, 12, 7), /* with a stable ack */
        ack_of(0x43, 3, 5),  /* stable beyond acked */
    };
    ck_assert_int_eq(crdtdb_db_peer_acks(A.db, acks, 3), 0);
    for (int i = 0; i < 3; i++) {
        if (acks[i].stable)
            ck_assert_int_eq(crdtdb_db_peer_ack_at(B.db, acks[i].peer, acks[i].stable, 0), 0);
        ck_assert_int_eq(crdtdb_db_peer_ack(B.db, acks[i].peer, acks[i].acked), 0);
    }
    int fa, fb;
    for (int i = 0; i < 3; i++) {
        crdtdb_peer pa = marks_of(A.db, acks[i].peer, &fa), pb = marks_of(B.db, acks[i].peer, &fb);
        ck_assert_int_eq(fa, 1);
        ck_assert_int_eq(fb, 1);
        ck_assert_uint_eq(pa.acked, pb.acked);
        ck_assert_uint_eq(pa.stable, pb.stable);
        ck_assert_uint_eq(pa.flags, pb.flags);
        ck_assert_uint_eq(pa.seen_ms, pb.seen_ms);
    }
    crdtdb_peer p = marks_of(A.db, acks[2].peer, &fa);
    ck_assert_uint_eq(p.acked, 5);
    ck_assert_uint_eq(p.stable, 5);
    /* never backwards; nothing to do; nothing to read */
    acks[0].acked = 1;
    ck_assert_int_eq(crdtdb_db_peer_acks(A.db, acks, 1), 0);
    ck_assert_uint_eq(marks_of(A.db, acks[0].peer, &fa).acked, 9);
    ck_assert_int_eq(crdtdb_db_peer_acks(A.db, NULL, 0), 0);
    ck_assert_int_eq(crdtdb_db_peer_acks(A.db, NULL, 1), CRDTDB_EINVAL);
    ck_assert_int_eq(crdtdb_db_peer_acks(NULL, acks, 1), CRDTDB_EINVAL);
}
END_TEST

/* Two sessions of one replica in one batch: the marks take the most of
 * each, whatever the order. */
START_TEST(peer_acks_same_peer_twice_in_a_batch)
{
    crdtdb_peer_ack a[2] = {ack_of(0x51, 10, 4), ack_of(0x51, 8, 6)};
    ck_assert_int_eq(crdtdb_db_peer_acks(A.db, a, 2), 0);
    crdtdb_peer_ack r[2] = {a[1], a[0]}; /* the other order */
    ck_assert_int_eq(crdtdb_db_peer_acks(B.db, r, 2), 0);
    int found;
    crdtdb_peer pa = marks_of(A.db, a[0].peer, &found), pb = marks_of(B.db, a[0].peer, &found);
    ck_assert_uint_eq(pa.acked, 10);
    ck_assert_uint_eq(pa.stable, 6);
    ck_assert_uint_eq(pb.acked, 10);
    ck_assert_uint_eq(pb.stable, 6);
    ck_assert_uint_gt(pa.seen_ms, 0); /* heard from */
}
END_TEST

/* A batch that fails records none of its entries, and says why. */
START_TEST(peer_acks_failed_batch_records_nothing)
{
    crdtdb_peer_ack a[2] = {ack_of(0x61, 5, 0), ack_of(0x62, 7, 7)};
    crdtdb_txn *t;
    ck_assert_int_eq(crdtdb_txn_begin(A.db, CRDTDB_TXN_RDONLY, &t), 0);
    ck_assert_int_eq(crdtdb_db_peer_acks(A.db, a, 2), CRDTDB_EBUSY);
    ck_assert_ptr_nonnull(strstr(crdtdb_db_errmsg(A.db), "already open"));
    crdtdb_txn_abort(t);
    for (int i = 0; i < 2; i++) {
        int found;
        marks_of(A.db, a[i].peer, &found);
        ck_assert_int_eq(found, 0);
    }
}
END_TEST

typedef struct evlog {
    int add, update, remove;
} evlog;

static void count_ev(void *ctx, const crdtdb_event *ev)
{
    evlog *l = ctx;
    l->add += ev->type == CRDTDB_EVENT_ADD;
    l->update += ev->type == CRDTDB_EVENT_UPDATE;
    l->remove += ev->type == CRDTDB_EVENT_REMOVE;
}

START_TEST(observers_see_remote_changes)
{
    evlog l = {0};
    crdtdb_observer *o;
    ck_assert_int_eq(crdtdb_db_observe(B.db, NULL, count_ev, &l, &o), 0);
    put(&A, "add", "players", "p", "{\"v\":1}");
    put(&A, "add", "players", "q", "{\"v\":1}");
    sync_pair(&A, &B);
    ck_assert_int_eq(l.add, 2);
    now_ms += 2;
    put(&A, "update", "players", "p", "{\"v\":2}");
    put(&A, "remove", "players", "q", NULL);
    sync_pair(&A, &B);
    ck_assert_int_eq(l.update, 1);
    ck_assert_int_eq(l.remove, 1);
    /* a losing remote write fires nothing */
    now_ms += 2;
    put(&A, "update", "players", "p", "{\"v\":3}");
    now_ms += 2;
    put(&B, "update", "players", "p", "{\"v\":4}");
    l.update = 0;
    sync_pair(&A, &B); /* A's older write loses on B */
    ck_assert_int_eq(l.update, 0);
}
END_TEST

static int deny_all(void *ctx, const char *db, const uint8_t *peer)
{
    (void)ctx;
    (void)db;
    (void)peer;
    return 0;
}

/* crdtdb_db_apply_batch: deltas in one commit, all or nothing; a failure
 * names the delta that failed and stores nothing of the others. */
START_TEST(apply_batch_is_all_or_nothing)
{
    net q = {0};
    uint64_t last = 0;
    for (int i = 0; i < 3; i++) { /* a delta a record: what came since the last */
        char id[8];
        snprintf(id, sizeof id, "p%d", i);
        put(&A, "add", "players", id, "{\"v\":1}");
        net part = {0};
        ck_assert_int_eq(crdtdb_db_export(A.db, last, NULL, to_net, &part, NULL), 0);
        ck_assert_uint_eq(part.n, 1);
        to_net(&q, part.msgs[0].data, part.msgs[0].len);
        net_free(&part);
        ck_assert_int_eq(crdtdb_db_seq(A.db, NULL, &last), 0);
    }
    ck_assert_uint_ge(q.n, 3);
    const uint8_t *d[3] = {q.msgs[0].data, q.msgs[1].data, q.msgs[2].data};
    size_t len[3] = {q.msgs[0].len, q.msgs[1].len, q.msgs[2].len};
    crdtdb_apply_info info[3];
    size_t done = 9;
    /* the second changed after signing: nothing stored, the second named */
    q.msgs[1].data[q.msgs[1].len / 2] ^= 1;
    ck_assert_int_eq(crdtdb_db_apply_batch(B.db, d, len, 3, info, &done), CRDTDB_EBADSIG);
    ck_assert_ptr_nonnull(strstr(crdtdb_db_errmsg(B.db), "delta 2 of 3: "));
    ck_assert_uint_eq(done, 1); /* the index of the one at fault */
    ck_assert_uint_eq(received_from(&B, &A), 0);
    char *none = dump(&B);
    ck_assert_ptr_null(strstr(none, "p0"));
    free(none);
    q.msgs[1].data[q.msgs[1].len / 2] ^= 1;
    ck_assert_int_eq(crdtdb_db_apply_batch(B.db, d, len, 0, info, &done), 0);
    ck_assert_uint_eq(done, 0);
    ck_assert_int_eq(crdtdb_db_apply_batch(B.db, NULL, len, 3, info, &done), CRDTDB_EINVAL);
    ck_assert_int_eq(crdtdb_db_apply_batch(B.db, d, len, 3, info, NULL), CRDTDB_EINVAL);
    ck_assert_int_eq(crdtdb_db_apply_batch(NULL, d, len, 3, info, &done), CRDTDB_EINVAL);
    /* whole: all three, one commit (its time on the last), in order */
    ck_assert_int_eq(crdtdb_db_apply_batch(B.db, d, len, 3, info, &done), 0);
    ck_assert_uint_eq(done, 3);
    char *all = dump(&B);
    ck_assert_ptr_nonnull(strstr(all, "p0"));
    ck_assert_ptr_nonnull(strstr(all, "p2"));
    free(all);
    ck_assert_uint_eq(info[0].commit_us, 0);
    ck_assert_uint_eq(info[1].commit_us, 0);
    ck_assert_uint_eq(info[0].local_to, info[1].local_from);
    ck_assert_uint_eq(info[1].local_to, info[2].local_from);
    ck_assert_uint_gt(info[2].local_to, info[2].local_from);
    ck_assert_uint_eq(info[2].received, received_from(&B, &A));
    ck_assert_uint_eq(info[2].to, received_from(&B, &A));
    /* a batch is one bounded unit of work: past max_apply_work it stops,
     * committing what it took (the first delta always goes) */
    replica_close(&B);
    tu_rmrf(B.dir);
    ck_assert_int_eq(mkdir(B.dir, 0700), 0);
    B.opts.max_apply_work = 1;
    replica_open(&B, "game");
    ck_assert_int_eq(crdtdb_db_apply_batch(B.db, d, len, 3, info, &done), 0);
    ck_assert_uint_eq(done, 1);
    ck_assert_uint_gt(info[0].commit_us, 0);
    ck_assert_int_eq(crdtdb_db_apply_batch(B.db, d + 1, len + 1, 2, info, &done), 0);
    ck_assert_uint_eq(done, 1);
    char *two = dump(&B);
    ck_assert_ptr_nonnull(strstr(two, "p1"));
    ck_assert_ptr_null(strstr(two, "p2"));
    free(two);
    net_free(&q);
}
END_TEST

/* Every refusal stores nothing: the receiver's sequence stays put. */
START_TEST(bad_deltas_store_nothing)
{
    put(&A, "add", "players", "p", "{\"v\":1}");
    net q = {0};
    ck_assert_int_eq(crdtdb_db_export(A.db, 0, NULL, to_net, &q, NULL), 0);
    crdtdb_buf *d = &q.msgs[0];
    uint64_t seq0, seq;
    ck_assert_int_eq(crdtdb_db_seq(B.db, NULL, &seq0), 0);
    /* truncated */
    ck_assert_int_eq(crdtdb_db_apply(B.db, d->data, d->len - 1, NULL), CRDTDB_EBADVALUE);
    ck_assert_int_eq(crdtdb_db_apply(B.db, d->data, 0, NULL), CRDTDB_EBADVALUE);
    /* changed after signing */
    d->data[d->len / 2] ^= 1;
    ck_assert_int_eq(crdtdb_db_apply(B.db, d->data, d->len, NULL), CRDTDB_EBADSIG);
    ck_assert_ptr_nonnull(strstr(crdtdb_db_errmsg(B.db), "signature"));
    d->data[d->len / 2] ^= 1;
    /* another database */
    crdtdb_db *other;
    ck_assert_int_eq(crdtdb_db_create(B.env, "other", COLLS, 2, &other), 0);
    ck_assert_int_eq(crdtdb_db_apply(other, d->data, d->len, NULL), CRDTDB_EINVAL);
    crdtdb_db_close(other);
    /* unknown collection */
    const char *c1[] = {"moves"};
    crdtdb_env *e2;
    crdtdb_db *d2;
    char *dir2;
    e2 = tu_env(&dir2, NULL);
    ck_assert_int_eq(crdtdb_db_create(e2, "game", c1, 1, &d2), 0);
    ck_assert_int_eq(crdtdb_db_apply(d2, d->data, d->len, NULL), CRDTDB_ENOCOLL);
    ck_assert_str_eq(crdtdb_db_errmsg(d2), "Collection 'players' not found");
    crdtdb_db_close(d2);
    crdtdb_env_close(e2);
    tu_rmrf(dir2);
    free(dir2);
    /* a sender too far ahead: refused with both times, accepted later */
    net q2 = {0};
    A.offset_ms = 3600 * 1000;
    put(&A, "update", "players", "p", "{\"v\":2}");
    ck_assert_int_eq(crdtdb_db_export(A.db, 0, NULL, to_net, &q2, NULL), 0);
    ck_assert_int_eq(crdtdb_db_apply(B.db, q2.msgs[0].data, q2.msgs[0].len, NULL), CRDTDB_ECLOCK);
    ck_assert_ptr_nonnull(strstr(crdtdb_db_errmsg(B.db), "ahead of local time"));
    ck_assert_uint_eq(received_from(&B, &A), 0);
    /* the trust hook */
    replica_close(&B);
    B.opts.trust = deny_all;
    replica_open(&B, "game");
    ck_assert_int_eq(crdtdb_db_apply(B.db, d->data, d->len, NULL), CRDTDB_EDENIED);
    ck_assert_int_eq(crdtdb_db_seq(B.db, NULL, &seq), 0);
    ck_assert_uint_eq(seq, seq0);
    ck_assert_ptr_null(tu_get(B.db, "players", "p"));
    replica_close(&B);
    B.opts.trust = NULL;
    replica_open(&B, "game");
    now_ms += 3600 * 1000; /* B's time catches up: the same delta now applies */
    ck_assert_int_eq(crdtdb_db_apply(B.db, q2.msgs[0].data, q2.msgs[0].len, NULL), 0);
    char *s = tu_get(B.db, "players", "p");
    ck_assert_str_eq(s, "{\"v\":2}");
    free(s);
    A.offset_ms = 0;
    net_free(&q);
    net_free(&q2);
}
END_TEST

/* ------------------------------------------------------ property test */

/* The model: every register any replica ever wrote, merged by the rules of
 * docs/crdt.md stated directly, independent of crdt/record.c's merge. */
#define MPATHS 8
#define MRECS 8
typedef struct mreg {
    int used;
    uint64_t hlc;
    uint8_t origin[32];
    uint8_t kind;
    uint8_t val[64];
    size_t vlen;
} mreg;
typedef struct mrec {
    int has_base;
    uint8_t base_kind;
    uint64_t base_hlc;
    uint8_t base_origin[32];
    mreg leaf[MPATHS];
} mrec;

static const char *MP[MPATHS] = {"a", "b", "n", "n.x", "n.y", "n.z", "n.z.q", "m"};
static crdtdb_buf MPENC[MPATHS];
static mrec model[2][MRECS];

static int st_cmp(uint64_t h1, const uint8_t *o1, uint64_t h2, const uint8_t *o2)
{
    if (h1 != h2)
        return h1 < h2 ? -1 : 1;
    return memcmp(o1, o2, 32);
}

static void model_paths(void)
{
    for (int i = 0; i < MPATHS; i++) {
        MPENC[i].len = 0;
        const char *s = MP[i];
        for (;;) {
            const char *dot = strchr(s, '.');
            size_t n = dot ? (size_t)(dot - s) : strlen(s);
            crdtdb__path_push(&MPENC[i], s, n);
            if (!dot)
                break;
            s = dot + 1;
        }
    }
}

static int path_index(const uint8_t *p, size_t n)
{
    for (int i = 0; i < MPATHS; i++)
        if (MPENC[i].len == n && memcmp(MPENC[i].data, p, n) == 0)
            return i;
    return -1;
}

/* Records the registers the last local op on replica r wrote to (c, id). */
static void model_capture(replica *r, int c, int rid)
{
    char id[8];
    snprintf(id, sizeof id, "r%d", rid);
    uint8_t key[CRDTDB__RECKEY_MAX];
    MDB_txn *t;
    MDB_val k = {crdtdb__reckey(key, r->db->num, (uint16_t)c, id, strlen(id)), key}, v;
    ck_assert_int_eq(mdb_txn_begin(r->env->mdb, NULL, MDB_RDONLY, &t), 0);
    ck_assert_int_eq(mdb_get(t, r->env->dbi_records, &k, &v), 0);
    crdtdb__record rec;
    crdtdb__record_init(&rec);
    ck_assert_int_eq(crdtdb__record_decode(&rec, v.mv_data, v.mv_size,
                                           crdtdb__origins_at(&r->db->orig, t)), 0);
    const uint8_t *me = r->env->pk;
    uint64_t top = 0;
    if (rec.base_kind && !memcmp(rec.origins[rec.base_origin], me, 32))
        top = rec.base_hlc;
    for (uint32_t i = 0; i < rec.nleaves; i++)
        if (!memcmp(rec.origins[rec.leaves[i].origin], me, 32) && rec.leaves[i].hlc > top)
            top = rec.leaves[i].hlc;
    mrec *m = &model[c][rid];
    if (rec.base_kind && rec.base_hlc == top && !memcmp(rec.origins[rec.base_origin], me, 32) &&
        (!m->has_base || st_cmp(top, me, m->base_hlc, m->base_origin) > 0)) {
        m->has_base = 1;
        m->base_kind = rec.base_kind;
        m->base_hlc = top;
        memcpy(m->base_origin, me, 32);
    }
    for (uint32_t i = 0; i < rec.nleaves; i++) {
        const crdtdb__leaf *l = &rec.leaves[i];
        if (l->hlc != top || memcmp(rec.origins[l->origin], me, 32))
            continue;
        int pi = path_index(l->path, l->path_len);
        ck_assert_int_ge(pi, 0);
        mreg *g = &m->leaf[pi];
        if (g->used && st_cmp(top, me, g->hlc, g->origin) <= 0)
            continue;
        g->used = 1;
        g->hlc = top;
        memcpy(g->origin, me, 32);
        g->kind = l->kind;
        ck_assert_uint_le(l->val_len, sizeof g->val);
        if (l->val_len)
            memcpy(g->val, l->val, l->val_len);
        g->vlen = l->val_len;
    }
    crdtdb__record_free(&rec);
    mdb_txn_abort(t);
}

static char *model_render(int c, int rid)
{
    mrec *m = &model[c][rid];
    if (!m->has_base || m->base_kind != CRDTDB__BASE_ADD)
        return NULL;
    int live[MPATHS] = {0};
    for (int i = 0; i < MPATHS; i++) {
        mreg *g = &m->leaf[i];
        if (!g->used || st_cmp(g->hlc, g->origin, m->base_hlc, m->base_origin) < 0)
            continue;
        live[i] = 1;
        for (int j = 0; j < MPATHS; j++)
            if (m->leaf[j].used &&
                crdtdb__path_is_ancestor(MPENC[j].data, MPENC[j].len, MPENC[i].data, MPENC[i].len) &&
                st_cmp(m->leaf[j].hlc, m->leaf[j].origin, g->hlc, g->origin) > 0)
                live[i] = 0;
    }
    crdtdb__record r;
    crdtdb__record_init(&r);
    uint32_t o;
    crdtdb__record_origin(&r, m->base_origin, &o);
    crdtdb__record_put_base(&r, CRDTDB__BASE_ADD, 0, o, 0);
    for (int i = 0; i < MPATHS; i++) {
        if (!live[i])
            continue;
        int child = 0;
        for (int j = 0; j < MPATHS; j++)
            child |= live[j] && crdtdb__path_is_ancestor(MPENC[i].data, MPENC[i].len,
                                                          MPENC[j].data, MPENC[j].len);
        mreg *g = &m->leaf[i];
        crdtdb__leaf l = {MPENC[i].data, (uint32_t)MPENC[i].len,
                          child ? CRDTDB__KIND_MAP : g->kind, o, 1, 0, g->val, (uint32_t)g->vlen};
        ck_assert_int_eq(crdtdb__record_put_leaf(&r, &l), 1);
    }
    crdtdb_buf b = CRDTDB_BUF_INIT;
    ck_assert_int_eq(crdtdb__record_render(&r, &b), 0);
    char *s = tu_json(b.data, b.len);
    crdtdb_buf_free(&b);
    crdtdb__record_free(&r);
    return s;
}

/* On a mismatch, both sides' registers, to see which rule differs. */
static void explain(replica *r, int c, int rid)
{
    mrec *m = &model[c][rid];
    fprintf(stderr, "model base kind %d hlc %llx o %02x\n", m->base_kind,
            (unsigned long long)m->base_hlc, m->base_origin[0]);
    for (int i = 0; i < MPATHS; i++)
        if (m->leaf[i].used)
            fprintf(stderr, "  %s kind %d hlc %llx o %02x\n", MP[i], m->leaf[i].kind,
                    (unsigned long long)m->leaf[i].hlc, m->leaf[i].origin[0]);
    char id[8];
    snprintf(id, sizeof id, "r%d", rid);
    uint8_t key[CRDTDB__RECKEY_MAX];
    MDB_txn *t;
    MDB_val k = {crdtdb__reckey(key, r->db->num, (uint16_t)c, id, strlen(id)), key}, v;
    mdb_txn_begin(r->env->mdb, NULL, MDB_RDONLY, &t);
    if (mdb_get(t, r->env->dbi_records, &k, &v) == 0) {
        crdtdb__record rec;
        crdtdb__record_init(&rec);
        crdtdb__record_decode(&rec, v.mv_data, v.mv_size, crdtdb__origins_at(&r->db->orig, t));
        fprintf(stderr, "replica base kind %d hlc %llx o %02x\n", rec.base_kind,
                (unsigned long long)rec.base_hlc, rec.origins[rec.base_origin][0]);
        for (uint32_t i = 0; i < rec.nleaves; i++)
            fprintf(stderr, "  %s kind %d hlc %llx o %02x seq %llu\n",
                    MP[path_index(rec.leaves[i].path, rec.leaves[i].path_len)],
                    rec.leaves[i].kind, (unsigned long long)rec.leaves[i].hlc,
                    rec.origins[rec.leaves[i].origin][0], (unsigned long long)rec.leaves[i].seq);
        crdtdb__record_free(&rec);
    }
    mdb_txn_abort(t);
}

static const char *VALS[] = {"1", "2", "\"s\"", "null", "[1,{\"k\":2}]", "{}", "true", "-7.5"};

/* A random record or change set over the model's paths. */
static void random_json(char *out, size_t size)
{
    int n = 0;
    size_t off = 0;
    out[0] = 0;
    off += (size_t)snprintf(out + off, size - off, "{");
    const char *top[] = {"a", "b", "m"};
    for (int i = 0; i < 3; i++)
        if (rand() % 2)
            off += (size_t)snprintf(out + off, size - off, "%s\"%s\":%s", n++ ? "," : "",
                                    top[i], VALS[rand() % 8]);
    int k = rand() % 4;
    if (k == 1)
        off += (size_t)snprintf(out + off, size - off, "%s\"n\":%s", n++ ? "," : "",
                                VALS[rand() % 8]);
    else if (k >= 2)
        off += (size_t)snprintf(out + off, size - off,
                                "%s\"n\":{\"x\":%s,\"z\":{\"q\":%s}%s}", n++ ? "," : "",
                                VALS[rand() % 8], VALS[rand() % 8],
                                rand() % 2 ? ",\"y\":3" : "");
    snprintf(out + off, size - off, "}");
}

static void local_op(replica *r)
{
    int c = rand() % 2, rid = rand() % MRECS;
    char id[8], json[256];
    snprintf(id, sizeof id, "r%d", rid);
    int visible = 0;
    crdtdb_buf b = CRDTDB_BUF_INIT;
    ck_assert_int_eq(crdtdb_db_get_by_id(r->db, NULL, COLLS[c], id, &b, &visible), 0);
    crdtdb_buf_free(&b);
    int k = rand() % 10;
    random_json(json, sizeof json);
    if (!visible || k < 3)
        put(r, "add", COLLS[c], id, json);
    else if (k < 8)
        put(r, "update", COLLS[c], id, json);
    else
        put(r, "remove", COLLS[c], id, NULL);
    model_capture(r, c, rid);
}

/* random_exchange's deltas applied in batches (crdtdb_db_apply_batch),
 * dropped and duplicated as one by one; now and then one cut short among
 * them: that batch fails whole and stores nothing, and goes again
 * without it. */
static void batch_exchange(replica *to, const net *q)
{
    enum { MAX = CRDTDB_APPLY_BATCH_MAX };
    const uint8_t *d[MAX];
    size_t len[MAX];
    crdtdb_apply_info info[MAX];
    size_t k = 0;
    for (size_t i = 0; i <= q->n; i++) {
        int fate = rand() % 10;
        if (i < q->n && fate != 0) { /* else dropped */
            d[k] = q->msgs[i].data;
            len[k++] = q->msgs[i].len;
            if (fate == 2 && k < MAX) { /* duplicated */
                d[k] = q->msgs[i].data;
                len[k++] = q->msgs[i].len;
            }
        }
        if (k + 2 <= MAX && i < q->n)
            continue;
        if (!k)
            continue;
        if (rand() % 4 == 0) { /* one cut short: the whole batch refused */
            size_t at = (size_t)rand() % k;
            const uint8_t *keep = d[at];
            size_t keep_len = len[at];
            len[at] = (size_t)rand() % keep_len;
            char *before = dump(to);
            uint64_t last0, last1;
            ck_assert_int_eq(crdtdb_db_seq(to->db, NULL, &last0), 0);
            size_t done;
            ck_assert_int_ne(crdtdb_db_apply_batch(to->db, d, len, k, info, &done), 0);
            ck_assert_uint_le(done, at); /* the cut one, or one before it */
            char *after = dump(to);
            ck_assert_int_eq(crdtdb_db_seq(to->db, NULL, &last1), 0);
            ck_assert_str_eq(before, after);
            ck_assert_uint_eq(last0, last1);
            free(before);
            free(after);
            len[at] = keep_len;
            d[at] = keep;
        }
        for (size_t from = 0, done; from < k; from += done) { /* its work bound may split it */
            int rc = crdtdb_db_apply_batch(to->db, d + from, len + from, k - from, info, &done);
            ck_assert_msg(rc == 0, "apply batch: %s", crdtdb_db_errmsg(to->db));
            ck_assert_uint_ge(done, 1);
        }
        k = 0;
    }
}

/* Moves deltas from one replica to another with the hazards of a network
 * and a USB stick: duplicates, reordering, drops, truncation. */
static void random_exchange(replica *from, replica *to)
{
    net q = {0};
    uint64_t since;
    switch (rand() % 3) {
    case 0: since = received_from(to, from); break;
    case 1: since = 0; break;
    default: {
        uint64_t last;
        crdtdb_db_seq(from->db, NULL, &last);
        since = last ? (uint64_t)rand() % (last + 1) : 0;
    }
    }
    ck_assert_int_eq(crdtdb_db_export(from->db, since, rand() % 2 ? to->env->pk : NULL,
                                      to_net, &q, NULL),
                     0);
    for (size_t i = q.n; i > 1; i--) /* shuffle */
        if (rand() % 3 == 0) {
            size_t j = (size_t)rand() % i;
            crdtdb_buf t = q.msgs[i - 1];
            q.msgs[i - 1] = q.msgs[j];
            q.msgs[j] = t;
        }
    if (rand() % 3 == 0) { /* as a session takes a burst: in one commit */
        batch_exchange(to, &q);
        net_free(&q);
        return;
    }
    for (size_t i = 0; i < q.n; i++) {
        int fate = rand() % 10;
        if (fate == 0)
            continue; /* dropped */
        if (fate == 1) { /* cut short: refused, nothing stored */
            size_t cut = (size_t)rand() % q.msgs[i].len;
            ck_assert_int_ne(crdtdb_db_apply(to->db, q.msgs[i].data, cut, NULL), 0);
            continue;
        }
        int rc = crdtdb_db_apply(to->db, q.msgs[i].data, q.msgs[i].len, NULL);
        ck_assert_msg(rc == 0, "apply: %s", crdtdb_db_errmsg(to->db));
        if (fate == 2) /* duplicated */
            ck_assert_int_eq(crdtdb_db_apply(to->db, q.msgs[i].data, q.msgs[i].len, NULL), 0);
    }
    net_free(&q);
}

/* An observer writing in reaction to adds, local or merged: its writes get
 * fresh sequence numbers and must travel on like any other (and join the
 * model). */
static void welcome(void *ctx, const crdtdb_event *ev)
{
    replica *r = ctx;
    if (ev->type != CRDTDB_EVENT_ADD)
        return;
    char json[64];
    snprintf(json, sizeof json, "{\"b\":%d}", rand() % 100);
    crdtdb_buf b = CRDTDB_BUF_INIT;
    int visible;
    ck_assert_int_eq(crdtdb_db_get_by_id(r->db, NULL, "moves", ev->id, &b, &visible), 0);
    crdtdb_buf_free(&b);
    put(r, visible ? "update" : "add", "moves", ev->id, json);
    model_capture(r, 1, atoi(ev->id + 1));
}

static int schedules(void)
{
    const char *s = getenv("CRDTDB_SCHEDULES");
    return s ? atoi(s) : 1000;
}

START_TEST(random_schedules_converge)
{
    unsigned seed = tu_seed();
    srand(seed);
    model_paths();
    replica R[5];
    uint64_t now = 1700000000000ull;
    for (int i = 0; i < 5; i++)
        replica_init(&R[i], &now, "init");
    int n_sched = schedules();
    for (int s = 0; s < n_sched; s++) {
        char db_id[32];
        snprintf(db_id, sizeof db_id, "s%d", s);
        int n = 3 + rand() % 3;
        for (int i = 0; i < 5; i++) { /* a fresh database on every replica */
            crdtdb_db_close(R[i].db);
            char old[32];
            snprintf(old, sizeof old, s ? "s%d" : "init", s - 1);
            ck_assert_int_eq(crdtdb_db_drop(R[i].env, old), 0);
            ck_assert_int_eq(crdtdb_db_create(R[i].env, db_id, COLLS, 2, &R[i].db), 0);
            /* clocks a little off, within the allowed skew */
            R[i].offset_ms = (int64_t)(rand() % 240001) - 120000;
        }
        memset(model, 0, sizeof model);
        int slow = rand() % n; /* offline for a while with a slow clock */
        int64_t slow_offset = R[slow].offset_ms;
        R[slow].offset_ms = -(int64_t)(1 + rand() % 5) * 3600 * 1000;
        crdtdb_observer *obs = NULL; /* one replica answers new players by writing */
        ck_assert_int_eq(crdtdb_db_observe(R[1].db, "players", welcome, &R[1], &obs), 0);
        int steps = 20 + rand() % 30;
        for (int t = 0; t < steps; t++) {
            now += (uint64_t)(rand() % 3); /* often the same millisecond */
            int a = rand() % n, b = rand() % n;
            int k = rand() % 10;
            if (k < 6 || a == b)
                local_op(&R[a]);
            else if (k < 9 && a != slow && b != slow)
                random_exchange(&R[a], &R[b]);
            else if (k == 9) { /* restart */
                if (a == 1)
                    crdtdb_observer_close(obs);
                replica_close(&R[a]);
                replica_open(&R[a], db_id);
                if (a == 1)
                    ck_assert_int_eq(crdtdb_db_observe(R[1].db, "players", welcome, &R[1], &obs), 0);
            }
            if (t == steps / 2)
                R[slow].offset_ms = slow_offset; /* back online */
        }
        R[slow].offset_ms = slow_offset;
        /* final full exchange, by watermarks, until nothing moves (the
         * observer's answers take one more round to spread) */
        size_t moved = 1;
        for (int round = 0; round < 6 && moved; round++) {
            moved = 0;
            for (int a = 0; a < n; a++)
                for (int b = 0; b < n; b++)
                    if (a != b)
                        moved += sync_pair(&R[a], &R[b]);
        }
        ck_assert_msg(moved == 0, "seed %u schedule %d: still moving after 6 rounds", seed, s);
        crdtdb_observer_close(obs);
        char *first = dump(&R[0]);
        for (int i = 1; i < n; i++) {
            char *other = dump(&R[i]);
            ck_assert_msg(strcmp(first, other) == 0, "seed %u schedule %d: replica %d\n%s\nvs\n%s",
                          seed, s, i, first, other);
            free(other);
        }
        for (int c = 0; c < 2; c++)
            for (int rid = 0; rid < MRECS; rid++) {
                char id[8];
                snprintf(id, sizeof id, "r%d", rid);
                char *want = model_render(c, rid), *got = tu_get(R[0].db, COLLS[c], id);
                if ((want == NULL) != (got == NULL) || (want && strcmp(want, got)))
                    explain(&R[0], c, rid);
                ck_assert_msg((want == NULL) == (got == NULL) && (!want || !strcmp(want, got)),
                              "seed %u schedule %d: %s/%s model %s replica %s", seed, s,
                              COLLS[c], id, want ? want : "(none)", got ? got : "(none)");
                free(want);
                free(got);
            }
        free(first);
    }
    for (int i = 0; i < 5; i++)
        replica_free(&R[i]);
    for (int i = 0; i < MPATHS; i++)
        crdtdb_buf_free(&MPENC[i]);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("sync");
    TCase *tc = tcase_create("sync");
    tcase_add_checked_fixture(tc, setup3, teardown3);
    tcase_add_test(tc, two_replicas_converge);
    tcase_add_test(tc, concurrent_field_writes);
    tcase_add_test(tc, remove_wins_over_concurrent_update);
    tcase_add_test(tc, apply_is_idempotent_and_order_free);
    tcase_add_test(tc, relay_reaches_third_replica);
    tcase_add_test(tc, export_fills_its_deltas);
    tcase_add_test(tc, dropped_database_created_again_continues_its_history);
    tcase_add_test(tc, offline_replica_with_slow_clock_delivers);
    tcase_add_test(tc, watermarks_survive_restart);
    tcase_add_test(tc, peer_acks_batch_records_what_single_acks_do);
    tcase_add_test(tc, peer_acks_same_peer_twice_in_a_batch);
    tcase_add_test(tc, peer_acks_failed_batch_records_nothing);
    tcase_add_test(tc, observers_see_remote_changes);
    tcase_add_test(tc, bad_deltas_store_nothing);
    tcase_add_test(tc, apply_batch_is_all_or_nothing);
    suite_add_tcase(s, tc);
    TCase *prop = tcase_create("property");
    tcase_set_timeout(prop, 1800);
    tcase_add_test(prop, random_schedules_converge);
    suite_add_tcase(s, prop);
    return tu_run(s);
}
