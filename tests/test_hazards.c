/*
 * Real-world replication hazards, each a named test that would have caught
 * the failure: skewed clocks, relays, observer writes, late removes, cloned
 * environments, equivocation (docs/crdt.md, "Hazards").
 */
#include <check.h>
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

static void setup(void)
{
    replica_init(&A, &now_ms, "game");
    replica_init(&B, &now_ms, "game");
    replica_init(&C, &now_ms, "game");
}

static void teardown(void)
{
    replica_free(&A);
    replica_free(&B);
    replica_free(&C);
}

static uint64_t seq_of(replica *r)
{
    uint64_t s;
    ck_assert_int_eq(crdtdb_db_seq(r->db, NULL, &s), 0);
    return s;
}

static char *get(replica *r, const char *coll, const char *id) { return tu_get(r->db, coll, id); }

#define ASSERT_GET(r, coll, id, want)                                  \
    do {                                                               \
        char *g_ = get(r, coll, id);                                   \
        ck_assert_msg(g_ && strcmp(g_, want) == 0, "%s/%s: %s", coll, id, g_ ? g_ : "(none)"); \
        free(g_);                                                      \
    } while (0)

/* The stamp of a leaf as stored, through the internals. */
static uint64_t stamp_of(replica *r, const char *coll, const char *id, const char *key)
{
    int c = strcmp(coll, "players") == 0 ? 0 : 1;
    uint8_t k[CRDTDB__RECKEY_MAX], path[64];
    crdtdb_buf pb = {path, 0, sizeof path};
    crdtdb__path_push(&pb, key, strlen(key));
    MDB_txn *t;
    MDB_val kv = {crdtdb__reckey(k, r->db->num, (uint16_t)c, id, strlen(id)), k}, v;
    ck_assert_int_eq(mdb_txn_begin(r->env->mdb, NULL, MDB_RDONLY, &t), 0);
    ck_assert_int_eq(mdb_get(t, r->env->dbi_records, &kv, &v), 0);
    crdtdb__record rec;
    crdtdb__record_init(&rec);
    ck_assert_int_eq(crdtdb__record_decode(&rec, v.mv_data, v.mv_size,
                                           crdtdb__origins_at(&r->db->orig, t)), 0);
    long i = crdtdb__record_find(&rec, pb.data, pb.len);
    ck_assert_int_ge(i, 0);
    uint64_t h = rec.leaves[i].hlc;
    crdtdb__record_free(&rec);
    mdb_txn_abort(t);
    return h;
}

/* ---------------------------------------------------------------- clocks */

START_TEST(clock_peer_one_hour_ahead_is_refused_then_retried)
{
    A.offset_ms = 3600 * 1000;
    put(&A, "add", "players", "fast", "{\"v\":1}");
    net q = {0};
    ck_assert_int_eq(crdtdb_db_export(A.db, 0, NULL, to_net, &q, NULL), 0);
    uint64_t before = seq_of(&B), hlc_before = B.env->hlc;
    ck_assert_int_eq(crdtdb_db_apply(B.db, q.msgs[0].data, q.msgs[0].len, NULL), CRDTDB_ECLOCK);
    const char *msg = crdtdb_db_errmsg(B.db);
    char local[32], stamp[32];
    snprintf(local, sizeof local, "local %llu", (unsigned long long)now_ms);
    snprintf(stamp, sizeof stamp, "stamp %llu", (unsigned long long)(now_ms + 3600 * 1000));
    ck_assert_msg(strstr(msg, local) && strstr(msg, stamp), "message: %s", msg);
    /* not poisoned: no data, no clock jump, no watermark past it */
    ck_assert_uint_eq(seq_of(&B), before);
    ck_assert_uint_eq(B.env->hlc, hlc_before);
    ck_assert_uint_eq(received_from(&B, &A), 0);
    ck_assert_ptr_null(get(&B, "players", "fast"));
    /* sync is not wedged: B's own changes still flow to A */
    put(&B, "add", "players", "slow", "{\"v\":2}");
    sync_pair(&B, &A);
    ASSERT_GET(&A, "players", "slow", "{\"v\":2}");
    /* once B's time has caught up, the next exchange delivers it */
    now_ms += 3600 * 1000 - 5 * 60 * 1000 + 1000;
    ck_assert_uint_gt(sync_pair(&A, &B), 0);
    ASSERT_GET(&B, "players", "fast", "{\"v\":1}");
    A.offset_ms = 0;
    net_free(&q);
}
END_TEST

static uint64_t frozen(void *ctx) { return *(uint64_t *)ctx; }

START_TEST(clock_source_is_injectable)
{
    uint64_t t = 1234567890123ull;
    crdtdb_env_options o;
    crdtdb_env_options_init(&o);
    o.clock = frozen;
    o.clock_ctx = &t;
    char *dir;
    crdtdb_env *env = tu_env(&dir, &o);
    crdtdb_db *db;
    ck_assert_int_eq(crdtdb_db_create(env, "d", COLLS, 2, &db), 0);
    crdtdb_buf b = CRDTDB_BUF_INIT;
    tu_mp(&b, "{\"v\":1}");
    ck_assert_int_eq(crdtdb_db_add(db, NULL, "players", "p", b.data, b.len), 0);
    ck_assert_uint_eq(crdtdb__hlc_ms(env->hlc), t);
    crdtdb_buf_free(&b);
    crdtdb_db_close(db);
    crdtdb_env_close(env);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

START_TEST(clock_behind_stored_stamps_keeps_counting)
{
    put(&A, "add", "players", "p", "{\"v\":1}");
    uint64_t first = stamp_of(&A, "players", "p", "v");
    A.offset_ms = -2 * 3600 * 1000; /* the wall clock steps back two hours */
    put(&A, "update", "players", "p", "{\"v\":2}");
    uint64_t second = stamp_of(&A, "players", "p", "v");
    ck_assert_uint_gt(second, first);
    ASSERT_GET(&A, "players", "p", "{\"v\":2}");
    replica_close(&A); /* and restarts on that machine */
    replica_open(&A, "game");
    put(&A, "update", "players", "p", "{\"v\":3}");
    ck_assert_uint_gt(stamp_of(&A, "players", "p", "v"), second);
    ASSERT_GET(&A, "players", "p", "{\"v\":3}");
    /* and its later writes still win elsewhere */
    sync_pair(&A, &B);
    ASSERT_GET(&B, "players", "p", "{\"v\":3}");
    A.offset_ms = 0;
}
END_TEST

START_TEST(counter_overflow_70000_writes_in_one_millisecond)
{
    uint64_t frozen_ms = now_ms;
    A.now = &frozen_ms; /* the clock does not move at all */
    put(&A, "add", "players", "p", "{\"n\":0}");
    crdtdb_buf b = CRDTDB_BUF_INIT;
    char json[32];
    uint64_t prev = stamp_of(&A, "players", "p", "n");
    for (int batch = 0; batch < 70; batch++) {
        crdtdb_txn *t;
        ck_assert_int_eq(crdtdb_txn_begin(A.db, 0, &t), 0);
        for (int i = 1; i <= 1000; i++) {
            snprintf(json, sizeof json, "{\"n\":%d}", batch * 1000 + i);
            tu_mp(&b, json);
            ck_assert_int_eq(crdtdb_db_update(A.db, t, "players", "p", b.data, b.len), 0);
        }
        ck_assert_int_eq(crdtdb_txn_commit(t), 0);
        uint64_t now = stamp_of(&A, "players", "p", "n");
        ck_assert_uint_gt(now, prev);
        prev = now;
    }
    ck_assert_uint_eq(crdtdb__hlc_ms(prev), frozen_ms + 1); /* carried */
    ASSERT_GET(&A, "players", "p", "{\"n\":70000}");
    sync_pair(&A, &B);
    ASSERT_GET(&B, "players", "p", "{\"n\":70000}");
    crdtdb_buf_free(&b);
    A.now = &now_ms;
}
END_TEST

/* ------------------------------------------------------ relays, ordering */

START_TEST(relay_with_equal_stamps_and_noop_values_leaves_no_hole)
{
    put(&A, "add", "players", "x", "{\"v\":1}");
    sync_pair(&A, &B);
    sync_pair(&A, &C); /* C holds A's write under the same stamp as B */
    put(&A, "update", "players", "x", "{\"v\":1}"); /* a no-op value, new stamp */
    sync_pair(&A, &B);
    put(&B, "add", "moves", "y", "{}");
    /* B relays: x ties or is newer at C, y is new; in deltas small enough to
     * split, one of them lost on the way */
    net q = {0};
    ck_assert_int_eq(crdtdb_db_export(B.db, received_from(&C, &B), NULL, to_net, &q, NULL), 0);
    for (size_t i = 0; i < q.n; i += 2)
        ck_assert_int_eq(crdtdb_db_apply(C.db, q.msgs[i].data, q.msgs[i].len, NULL), 0);
    net_free(&q);
    /* C is caught up only if it has everything: catch-up from its watermark */
    put(&A, "add", "players", "z", "{\"v\":3}");
    sync_pair(&A, &B);
    sync_pair(&B, &C);
    char *b = dump(&B), *c = dump(&C);
    ck_assert_str_eq(b, c);
    free(b);
    free(c);
    ck_assert_uint_eq(received_from(&C, &B), seq_of(&B));
    ck_assert_uint_eq(sync_pair(&B, &C), 0);
}
END_TEST

/* An observer that answers each new player with a move, by writing. */
static void answer(void *ctx, const crdtdb_event *ev)
{
    replica *r = ctx;
    if (ev->type != CRDTDB_EVENT_ADD || strcmp(ev->coll, "players") != 0)
        return;
    crdtdb_buf b = CRDTDB_BUF_INIT;
    tu_mp(&b, "{\"welcomed\":true}");
    ck_assert_int_eq(crdtdb_db_add(r->db, NULL, "moves", ev->id, b.data, b.len), 0);
    crdtdb_buf_free(&b);
}

START_TEST(observer_writes_during_remote_apply_are_sent_on)
{
    crdtdb_observer *o;
    ck_assert_int_eq(crdtdb_db_observe(B.db, NULL, answer, &B, &o), 0);
    put(&A, "add", "players", "ann", "{}");
    uint64_t before = seq_of(&B);
    sync_pair(&A, &B);
    ck_assert_uint_gt(seq_of(&B), before + 1); /* the merge, then the answer */
    ASSERT_GET(&B, "moves", "ann", "{\"welcomed\":true}");
    sync_pair(&B, &A);
    sync_pair(&B, &C);
    ASSERT_GET(&A, "moves", "ann", "{\"welcomed\":true}");
    ASSERT_GET(&C, "moves", "ann", "{\"welcomed\":true}");
    ASSERT_GET(&C, "players", "ann", "{}");
}
END_TEST

START_TEST(remove_reaches_offline_replica_through_relay)
{
    put(&A, "add", "players", "gone", "{\"v\":1}");
    sync_pair(&A, &B);
    sync_pair(&B, &C);
    ASSERT_GET(&C, "players", "gone", "{\"v\":1}");
    /* C goes offline; A removes the record and then writes a lot more */
    put(&A, "remove", "players", "gone", NULL);
    char id[16], json[32];
    for (int i = 0; i < 300; i++) {
        snprintf(id, sizeof id, "r%d", i % 40);
        snprintf(json, sizeof json, "{\"i\":%d}", i);
        put(&A, i < 40 ? "add" : "update", "moves", id, json);
    }
    sync_pair(&A, &B);
    sync_pair(&B, &C); /* back, through the relay only */
    ck_assert_ptr_null(get(&C, "players", "gone"));
    char *a = dump(&A), *c = dump(&C);
    ck_assert_str_eq(a, c);
    free(a);
    free(c);
}
END_TEST

/* -------------------------------------------------------------- identity */

/* Copies a closed replica's directory into a new replica (same identity). */
static void clone_replica(replica *src, replica *dst, uint64_t *now)
{
    replica_close(src);
    replica_init(dst, now, "game");
    replica_close(dst);
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "cp %s/data.mdb %s/data.mdb", src->dir, dst->dir);
    ck_assert_int_eq(system(cmd), 0);
    replica_open(src, "game");
    replica_open(dst, "game");
}

START_TEST(cloned_environment_is_detected)
{
    put(&A, "add", "players", "p", "{\"v\":0}");
    sync_pair(&A, &B);
    replica A2;
    clone_replica(&A, &A2, &now_ms);
    uint8_t a_id[32], a2_id[32];
    crdtdb_env_replica_id(A.env, a_id);
    crdtdb_env_replica_id(A2.env, a2_id);
    ck_assert_mem_eq(a_id, a2_id, 32);
    /* both write under one identity: the same sequences, two histories */
    now_ms += 1;
    put(&A, "update", "players", "p", "{\"v\":1}");
    now_ms += 1; /* (the same stamp too would be caught as equivocation) */
    put(&A2, "update", "players", "p", "{\"v\":2}");
    sync_pair(&A, &B);
    net q = {0};
    ck_assert_int_eq(crdtdb_db_export(A2.db, 0, NULL, to_net, &q, NULL), 0);
    uint64_t before = seq_of(&B);
    ck_assert_int_eq(crdtdb_db_apply(B.db, q.msgs[q.n - 1].data, q.msgs[q.n - 1].len, NULL),
                     CRDTDB_EFORK);
    ck_assert_ptr_nonnull(strstr(crdtdb_db_errmsg(B.db), "reset-id"));
    ck_assert_uint_eq(seq_of(&B), before);
    ASSERT_GET(&B, "players", "p", "{\"v\":1}");
    crdtdb_peer p;
    int found;
    ck_assert_int_eq(crdtdb_db_peer_get(B.db, a_id, &p, &found), 0);
    ck_assert(p.flags & CRDTDB_PEER_FORKED);
    /* the original refuses the copy's history signed with "its own" key */
    ck_assert_int_eq(crdtdb_db_apply(A.db, q.msgs[q.n - 1].data, q.msgs[q.n - 1].len, NULL),
                     CRDTDB_EFORK);
    net_free(&q);
    /* the copy learns it too: a peer holds more of "its" history than it wrote */
    now_ms += 1;
    put(&A, "update", "players", "p", "{\"v\":3}");
    sync_pair(&A, &B);
    ck_assert_int_eq(crdtdb_db_export(B.db, 0, a2_id, to_net, &q, NULL), 0);
    ck_assert_int_eq(crdtdb_db_apply(A2.db, q.msgs[0].data, q.msgs[0].len, NULL), CRDTDB_EFORK);
    net_free(&q);
    /* the documented remedy: a new identity for the copy, then it syncs */
    crdtdb_db_close(A2.db);
    A2.db = NULL;
    ck_assert_int_eq(crdtdb_env_reset_id(A2.env), 0);
    ck_assert_int_eq(crdtdb_db_open(A2.env, "game", &A2.db), 0);
    uint8_t new_id[32];
    crdtdb_env_replica_id(A2.env, new_id);
    ck_assert(memcmp(new_id, a_id, 32) != 0);
    put(&A2, "add", "moves", "from-copy", "{}");
    sync_pair(&A2, &B);
    sync_pair(&B, &A2);
    ASSERT_GET(&B, "moves", "from-copy", "{}");
    char *b = dump(&B), *a2 = dump(&A2);
    ck_assert_str_eq(b, a2);
    free(b);
    free(a2);
    replica_free(&A2);
}
END_TEST

START_TEST(equivocation_is_refused_and_flagged)
{
    put(&A, "add", "players", "p", "{\"v\":1}");
    sync_pair(&A, &B);
    /* A's key signs a second value under the same stamp (a forger holding
     * the key, or a corrupt replica) */
    crdtdb__delta d;
    crdtdb__delta_init(&d);
    net q = {0};
    ck_assert_int_eq(crdtdb_db_export(A.db, 0, NULL, to_net, &q, NULL), 0);
    crdtdb__err e;
    ck_assert_int_eq(crdtdb__delta_decode(&d, q.msgs[0].data, q.msgs[0].len, 1 << 20, &A.env->lim, &e), 0);
    static const uint8_t two = 0x02;
    int changed = 0;
    for (uint32_t i = 0; i < d.nfields; i++)
        if (d.fields[i].kind == CRDTDB__KIND_VALUE) {
            d.fields[i].val = &two;
            d.fields[i].val_len = 1;
            changed = 1;
        }
    ck_assert(changed);
    crdtdb_buf forged = CRDTDB_BUF_INIT;
    ck_assert_int_eq(crdtdb__delta_encode(&d, A.env->sk, &forged), 0);
    uint64_t before = seq_of(&B);
    ck_assert_int_eq(crdtdb_db_apply(B.db, forged.data, forged.len, NULL), CRDTDB_EFORGED);
    ck_assert_ptr_nonnull(strstr(crdtdb_db_errmsg(B.db), "forged"));
    ck_assert_uint_eq(seq_of(&B), before);
    ASSERT_GET(&B, "players", "p", "{\"v\":1}");
    uint8_t a_id[32];
    crdtdb_env_replica_id(A.env, a_id);
    crdtdb_peer p;
    int found;
    ck_assert_int_eq(crdtdb_db_peer_get(B.db, a_id, &p, &found), 0);
    ck_assert(p.flags & CRDTDB_PEER_EQUIVOCATED);
    /* the honest delta still applies (as a no-op) */
    ck_assert_int_eq(crdtdb_db_apply(B.db, q.msgs[0].data, q.msgs[0].len, NULL), 0);
    crdtdb_buf_free(&forged);
    crdtdb__delta_free(&d);
    net_free(&q);
}
END_TEST

/* A delta made for one peer, carried to another: its registers merge, but
 * its watermarks (meant for the first) must not move the second's. */
START_TEST(delta_for_another_replica_leaves_watermarks_alone)
{
    put(&B, "add", "players", "r1", "{}");
    sync_pair(&B, &A);
    put(&A, "add", "players", "r2", "{}");
    for (int i = 0; i < 4; i++) {
        char id[8];
        snprintf(id, sizeof id, "c%d", i);
        put(&C, "add", "moves", id, "{}");
    }
    uint8_t b_id[32];
    crdtdb_env_replica_id(B.env, b_id);
    net q = {0};
    ck_assert_int_eq(crdtdb_db_export(A.db, 0, b_id, to_net, &q, NULL), 0);
    ck_assert_int_eq(crdtdb_db_apply(C.db, q.msgs[0].data, q.msgs[0].len, NULL), 0);
    net_free(&q);
    ck_assert_uint_eq(received_from(&C, &A), 0); /* it left r1 out: not for C */
    ASSERT_GET(&C, "players", "r2", "{}");
    for (int i = 0; i < 3; i++) {
        sync_pair(&A, &C);
        sync_pair(&C, &A);
    }
    char *a = dump(&A), *c = dump(&C);
    ck_assert_str_eq(a, c);
    ck_assert_ptr_nonnull(strstr(c, "r1={}"));
    ck_assert_ptr_nonnull(strstr(a, "c3={}"));
    free(a);
    free(c);
}
END_TEST

/* Two legal writes can merge into a record past a local limit: the merge
 * stores it anyway, or the replicas would refuse each other forever. */
START_TEST(merge_past_local_limits_still_converges)
{
    put(&A, "add", "players", "big", "{}");
    sync_pair(&A, &B);
    char json[3100];
    snprintf(json, sizeof json, "{\"x\":\"%03000d\"}", 1);
    put(&A, "update", "players", "big", json); /* 3 KB each, 4 KB allowed */
    snprintf(json, sizeof json, "{\"y\":\"%03000d\"}", 2);
    put(&B, "update", "players", "big", json);
    put(&B, "add", "moves", "other", "{}");
    sync_pair(&A, &B);
    sync_pair(&B, &A);
    char *a = dump(&A), *b = dump(&B);
    ck_assert_str_eq(a, b);
    ck_assert_ptr_nonnull(strstr(a, "other={}"));
    free(a);
    free(b);
    /* a local write to the oversized record is still bounded */
    crdtdb_buf v = CRDTDB_BUF_INIT;
    tu_mp(&v, "{\"z\":1}");
    ck_assert_int_eq(crdtdb_db_update(A.db, NULL, "players", "big", v.data, v.len), CRDTDB_ETOOBIG);
    crdtdb_buf_free(&v);
}
END_TEST

/* A sender may claim any origin for a register; what a peer has is decided
 * by where a register came from, never by its claimed origin. */
START_TEST(claimed_origin_does_not_stop_delivery)
{
    put(&B, "add", "players", "r", "{\"v\":1}");
    net q = {0};
    ck_assert_int_eq(crdtdb_db_export(B.db, 0, NULL, to_net, &q, NULL), 0);
    crdtdb__delta d;
    crdtdb__delta_init(&d);
    crdtdb__err e;
    ck_assert_int_eq(crdtdb__delta_decode(&d, q.msgs[0].data, q.msgs[0].len, 1 << 20, &B.env->lim, &e), 0);
    for (uint32_t i = 0; i < d.norigins; i++)
        d.origins[i] = C.env->pk; /* "C wrote this" */
    crdtdb_buf claimed = CRDTDB_BUF_INIT;
    ck_assert_int_eq(crdtdb__delta_encode(&d, B.env->sk, &claimed), 0);
    ck_assert_int_eq(crdtdb_db_apply(A.db, claimed.data, claimed.len, NULL), 0);
    for (int i = 0; i < 3; i++) {
        sync_pair(&A, &C);
        sync_pair(&C, &A);
    }
    ASSERT_GET(&C, "players", "r", "{\"v\":1}");
    crdtdb_buf_free(&claimed);
    crdtdb__delta_free(&d);
    net_free(&q);
}
END_TEST

/* Two replica ids equal but for their last byte, the same HLC: the full
 * 32-byte key decides, the same way whatever the order. */
START_TEST(tie_break_uses_the_full_32_byte_key)
{
    uint8_t k1[32], k2[32];
    memset(k1, 0x55, 32);
    memcpy(k2, k1, 32);
    k1[31] = 0x01;
    k2[31] = 0x02;
    crdtdb_buf path = CRDTDB_BUF_INIT;
    crdtdb__path_push(&path, "v", 1);
    static const uint8_t one = 1, two = 2;
    for (int order = 0; order < 2; order++) {
        crdtdb__record r;
        crdtdb__record_init(&r);
        uint32_t o1, o2;
        crdtdb__record_origin(&r, k1, &o1);
        crdtdb__record_origin(&r, k2, &o2);
        crdtdb__record_put_base(&r, CRDTDB__BASE_ADD, 1, o1, 0);
        crdtdb__leaf l1 = {path.data, (uint32_t)path.len, CRDTDB__KIND_VALUE, o1, 9, 0, &one, 1};
        crdtdb__leaf l2 = {path.data, (uint32_t)path.len, CRDTDB__KIND_VALUE, o2, 9, 0, &two, 1};
        crdtdb__record_put_leaf(&r, order ? &l2 : &l1);
        crdtdb__record_put_leaf(&r, order ? &l1 : &l2);
        ck_assert_uint_eq(r.nleaves, 1);
        ck_assert_uint_eq(r.leaves[0].val[0], 2); /* k2 > k1 */
        crdtdb__record_free(&r);
    }
    crdtdb_buf_free(&path);
}
END_TEST

/* One record whose fields come from thousands of replicas (two fields
 * each): a peer may send it in one delta, and a delta of one record is
 * always applied.  Merged, stored, exported and merged again, every field
 * keeps its own origin.
 * (Each new origin was found by a scan of the record's and the delta's
 * origins: 65,536 of them held a server's loop for seconds.) */
START_TEST(many_origins_in_one_record)
{
    enum { N = 3000, K = N / 2 };
    char *dx, *dy;
    crdtdb_env *ex = tu_env(&dx, NULL), *ey = tu_env(&dy, NULL);
    crdtdb_db *x, *y;
    ck_assert_int_eq(crdtdb_db_create(ex, "game", COLLS, 2, &x), 0);
    ck_assert_int_eq(crdtdb_db_create(ey, "game", COLLS, 2, &y), 0);
    uint8_t(*keys)[32] = malloc(K * sizeof *keys);
    crdtdb_buf *paths = calloc(N, sizeof *paths);
    uint8_t vals[128];
    ck_assert_ptr_nonnull(keys);
    ck_assert_ptr_nonnull(paths);
    crdtdb__delta d;
    crdtdb__delta_init(&d);
    d.db_id = (crdtdb__str){"game", 4};
    d.sender = A.env->pk;
    d.to = N + 1;
    uint32_t coll, o;
    ck_assert_int_eq(crdtdb__delta_coll(&d, "players", 7, &coll), 0);
    ck_assert_int_eq(crdtdb__delta_origin(&d, A.env->pk, &o), 0);
    uint64_t h = crdtdb__hlc_make(now_ms, 0);
    crdtdb__delta_rec rec = {.coll = coll, .id = {"p", 1}, .base_kind = CRDTDB__BASE_ADD,
                             .base_origin = o, .base_hlc = h, .first = 0, .n = N};
    ck_assert_int_eq(crdtdb__delta_add_rec(&d, &rec), 0);
    for (uint32_t i = 0; i < K; i++) {
        memset(keys[i], 0x5a, 32);
        memcpy(keys[i], &i, sizeof i);
    }
    for (uint32_t i = 0; i < N; i++) {
        char name[16];
        int nl = snprintf(name, sizeof name, "f%u", i);
        ck_assert_int_eq(crdtdb__path_push(&paths[i], name, (size_t)nl), 0);
        vals[i % 128] = (uint8_t)(i % 128); /* a positive fixint */
        crdtdb__delta_field f = {.path = paths[i].data, .path_len = (uint32_t)paths[i].len,
                                 .kind = CRDTDB__KIND_VALUE, .hlc = h + 1,
                                 .val = &vals[i % 128], .val_len = 1};
        uint8_t key[32]; /* a copy: found by its bytes */
        memcpy(key, keys[i % K], 32);
        ck_assert_int_eq(crdtdb__delta_origin(&d, i < K ? keys[i] : key, &f.origin), 0);
        ck_assert_uint_eq(f.origin, i % K + 1);
        ck_assert_int_eq(crdtdb__delta_add_field(&d, &f), 0);
    }
    crdtdb_buf b = CRDTDB_BUF_INIT;
    ck_assert_int_eq(crdtdb__delta_encode(&d, A.env->sk, &b), 0);
    ck_assert_int_eq(crdtdb_db_apply(x, b.data, b.len, NULL), 0);
    /* x's export, merged by y; then y's, read back field by field */
    net q = {0}, r = {0};
    ck_assert_int_eq(crdtdb_db_export(x, 0, NULL, to_net, &q, NULL), 0);
    for (size_t i = 0; i < q.n; i++)
        ck_assert_int_eq(crdtdb_db_apply(y, q.msgs[i].data, q.msgs[i].len, NULL), 0);
    ck_assert_int_eq(crdtdb_db_export(y, 0, NULL, to_net, &r, NULL), 0);
    uint32_t seen = 0;
    for (size_t m = 0; m < r.n; m++) {
        crdtdb__delta e;
        crdtdb__delta_init(&e);
        crdtdb__err err;
        ck_assert_int_eq(crdtdb__delta_decode(&e, r.msgs[m].data, r.msgs[m].len, 16u << 20,
                                              &A.env->lim, &err), 0);
        for (uint32_t i = 0; i < e.nfields; i++) {
            const crdtdb__delta_field *f = &e.fields[i];
            uint32_t k;
            ck_assert_int_eq(sscanf((const char *)f->path, "f%u", &k), 1);
            ck_assert_uint_lt(k, N);
            ck_assert_int_eq(memcmp(e.origins[f->origin], keys[k % K], 32), 0);
            seen++;
        }
        crdtdb__delta_free(&e);
    }
    ck_assert_uint_eq(seen, N);
    char *gx = tu_get(x, "players", "p"), *gy = tu_get(y, "players", "p");
    ck_assert_str_eq(gx, gy);
    free(gx);
    free(gy);
    net_free(&q);
    net_free(&r);
    crdtdb_buf_free(&b);
    crdtdb__delta_free(&d);
    for (uint32_t i = 0; i < N; i++)
        crdtdb_buf_free(&paths[i]);
    free(paths);
    free(keys);
    crdtdb_db_close(x);
    crdtdb_db_close(y);
    crdtdb_env_close(ex);
    crdtdb_env_close(ey);
    tu_rmrf(dx);
    tu_rmrf(dy);
    free(dx);
    free(dy);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("hazards");
    TCase *tc = tcase_create("hazards");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, clock_peer_one_hour_ahead_is_refused_then_retried);
    tcase_add_test(tc, clock_source_is_injectable);
    tcase_add_test(tc, clock_behind_stored_stamps_keeps_counting);
    tcase_add_test(tc, counter_overflow_70000_writes_in_one_millisecond);
    tcase_add_test(tc, relay_with_equal_stamps_and_noop_values_leaves_no_hole);
    tcase_add_test(tc, observer_writes_during_remote_apply_are_sent_on);
    tcase_add_test(tc, remove_reaches_offline_replica_through_relay);
    tcase_add_test(tc, cloned_environment_is_detected);
    tcase_add_test(tc, equivocation_is_refused_and_flagged);
    tcase_add_test(tc, tie_break_uses_the_full_32_byte_key);
    tcase_add_test(tc, delta_for_another_replica_leaves_watermarks_alone);
    tcase_add_test(tc, merge_past_local_limits_still_converges);
    tcase_add_test(tc, claimed_origin_does_not_stop_delivery);
    tcase_add_test(tc, many_origins_in_one_record);
    suite_add_tcase(s, tc);
    return tu_run(s);
}
