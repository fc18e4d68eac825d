/* Tombstone collection (docs/crdt.md, "Collecting tombstones"): stable
 * tombstones go, peers from behind the floor resync whole, and random
 * schedules with collection at random moments converge to what the same
 * schedule gives without it, no removed record coming back. */
#include <check.h>
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crdt/buf.h"
#include "storage/internal.h"
#include "tests/replica.h"
#include "tests/testutil.h"

static uint64_t now_ms = 1700000000000ull;
/* CRDTDB_SESSION_NO_PURGE: clients that serve others (a mesh); 0: plain
 * clients of one server (a star) */
static unsigned client_flags = CRDTDB_SESSION_NO_PURGE;
static crdtdb_sync_mode client_mode = CRDTDB_SYNC_TWO_WAY; /* what clients ask for */

static crdtdb_session *open_session(replica *r, int server, size_t max_output)
{
    crdtdb_session_options o;
    crdtdb_session_options_init(&o);
    /* every replica here serves others: its resyncs remove, not forget */
    o.flags = server ? CRDTDB_SESSION_SERVER : client_flags;
    o.mode = server ? CRDTDB_SYNC_TWO_WAY : client_mode;
    o.max_message = r->opts.max_delta_size + 4096;
    if (max_output)
        o.max_output = max_output;
    crdtdb_session *s;
    ck_assert_int_eq(crdtdb_session_open(r->db, &o, &s), 0);
    return s;
}

/* Runs a session pair until nothing moves, at most `rounds` turns (0: no
 * bound), then closes both (acks saved). */
static void sync_rounds(replica *srv, replica *cli, int rounds)
{
    size_t out = rounds ? 512 : 0; /* a cut session: one delta a turn */
    crdtdb_session *a = open_session(srv, 1, out), *b = open_session(cli, 0, out);
    session_settle(a, b, rounds);
    crdtdb_session_close(a);
    crdtdb_session_close(b);
}

static void sync2(replica *srv, replica *cli) { sync_rounds(srv, cli, 0); }

/* A session that settles, then the client leaves (LEAVE), as a copy
 * handed off does before it is dropped. */
static void sync_leave(replica *srv, replica *cli)
{
    crdtdb_session *a = open_session(srv, 1, 0), *b = open_session(cli, 0, 0);
    session_settle(a, b, 0);
    ck_assert(crdtdb_session_synced(b));
    ck_assert_int_eq(crdtdb_session_leave(b), 0);
    ck_assert(!crdtdb_session_closed(b) && !crdtdb_session_left(b)); /* the answer first */
    ck_assert_int_eq(crdtdb_session_leave(b), CRDTDB_EINVAL); /* once */
    ck_assert_int_eq(crdtdb_session_leave(a), CRDTDB_EINVAL); /* a client's */
    session_move(b, a);
    ck_assert(crdtdb_session_closed(a));
    {
        size_t len;
        const uint8_t *p = crdtdb_session_output(a, &len);
        ck_assert(len >= 6 && p[len - 2] == 0x91 && p[len - 1] == 17); /* [17], last */
    }
    session_move(a, b); /* the server's answer: it stored the leave */
    ck_assert(crdtdb_session_closed(b) && crdtdb_session_left(b));
    crdtdb_session_close(a);
    crdtdb_session_close(b);
}


static uint64_t stat_removed(replica *r)
{
    crdtdb_db_stats st;
    ck_assert_int_eq(crdtdb_db_stat(r->db, &st), 0);
    return st.removed;
}

static const uint8_t *rid(replica *r, uint8_t out[32])
{
    crdtdb_env_replica_id(r->env, out);
    return out;
}

static int has(replica *r, const char *coll, const char *id)
{
    char *j = tu_get(r->db, coll, id);
    free(j);
    return j != NULL;
}

/* b holds what a holds, record for record. */
static void assert_same(replica *a, replica *b)
{
    char *da = dump(a), *db = dump(b);
    ck_assert_str_eq(da, db);
    free(da);
    free(db);
}

static unsigned peer_flags(replica *r, replica *of)
{
    crdtdb_peer p;
    uint8_t id[32];
    int found;
    ck_assert_int_eq(crdtdb_db_peer_get(r->db, rid(of, id), &p, &found), 0);
    ck_assert(found);
    return p.flags;
}

/* A collection whose first, read-only phase fails (here the stored floor
 * is unreadable) says so, and ends its transaction once. */
START_TEST(read_phase_failure_ends_cleanly)
{
    replica A;
    uint64_t now = 1700000000000ull;
    replica_init(&A, &now, "d");
    put(&A, "add", "players", "a", "{\"a\":1}");
    put(&A, "remove", "players", "a", NULL);
    uint8_t k[5];
    crdtdb__put_u32(k, A.db->num);
    k[4] = 'g'; /* the floor, 3 bytes where it takes 56 */
    MDB_txn *mt;
    ck_assert_int_eq(mdb_txn_begin(A.env->mdb, NULL, 0, &mt), 0);
    MDB_val kv = {5, k}, vv = {3, (void *)"bad"};
    ck_assert_int_eq(mdb_put(mt, A.env->dbi_dbinfo, &kv, &vv, 0), 0);
    ck_assert_int_eq(mdb_txn_commit(mt), 0);
    crdtdb_collect_stats st;
    ck_assert_int_eq(crdtdb_db_collect(A.db, 0, &st), CRDTDB_ECORRUPT);
    ck_assert_ptr_nonnull(strstr(crdtdb_db_errmsg(A.db), "unreadable"));
    crdtdb_txn *t; /* the handle is free again */
    ck_assert_int_eq(crdtdb_txn_begin(A.db, CRDTDB_TXN_RDONLY, &t), 0);
    crdtdb_txn_abort(t);
    replica_free(&A);
}
END_TEST

/* A server whose every record was removed and collected resyncs a fresh
 * client: the export from 0 holds nothing, and must still be signed (the
 * client records the range durably from it); later writes then reach the
 * client as deltas it holds durably and acks, and it knows it is in sync. */
START_TEST(fresh_client_of_a_wholly_collected_log_syncs)
{
    replica A, C;
    replica_init(&A, &now_ms, "game");
    replica_init(&C, &now_ms, "game");
    put(&A, "add", "players", "ann", "{\"hp\":1}");
    now_ms += 10;
    put(&A, "remove", "players", "ann", NULL);
    crdtdb_collect_stats st;
    ck_assert_int_eq(crdtdb_db_collect(A.db, 0, &st), 0);
    ck_assert_uint_eq(st.records, 1);
    crdtdb_session *a = open_session(&A, 1, 0), *c = open_session(&C, 0, 0);
    for (int round = 0; round < 2; round++) {
        if (round) { /* then a write */
            now_ms += 10;
            put(&A, "add", "players", "bob", "{\"hp\":2}");
            crdtdb_session_pump(a);
        }
        for (int i = 0; i < 50; i++)
            if (!(session_move(a, c) + session_move(c, a))) {
                crdtdb_session_pump(a);
                crdtdb_session_pump(c);
            }
        const char *why = crdtdb_session_unsynced(c);
        ck_assert_msg(!why, "round %d: the client waits for %s", round, why);
    }
    ck_assert(has(&C, "players", "bob"));
    crdtdb_peer p;
    uint8_t ida[32];
    int found;
    uint64_t last;
    ck_assert_int_eq(crdtdb_db_peer_get(C.db, rid(&A, ida), &p, &found), 0);
    ck_assert_int_eq(crdtdb_db_seq(A.db, NULL, &last), 0);
    ck_assert(found);
    ck_assert_uint_eq(p.received, last); /* durably */
    crdtdb_session_close(a);
    crdtdb_session_close(c);
    replica_free(&A);
    replica_free(&C);
}
END_TEST

START_TEST(lone_replica_collects_every_tombstone)
{
    replica A;
    replica_init(&A, &now_ms, "game");
    put(&A, "add", "players", "ann", "{\"hp\":1}");
    put(&A, "add", "players", "bob", "{\"hp\":2}");
    put(&A, "add", "players", "cat", "{\"hp\":3}");
    put(&A, "remove", "players", "bob", NULL);
    put(&A, "remove", "players", "cat", NULL);
    char *before = dump(&A);
    ck_assert_int_eq(stat_removed(&A), 2);
    crdtdb_collect_stats st;
    ck_assert_int_eq(crdtdb_db_collect(A.db, 0, &st), 0);
    ck_assert_uint_eq(st.records, 2);
    ck_assert_uint_eq(st.registers, 2);
    ck_assert_int_eq(stat_removed(&A), 0);
    char *after = dump(&A);
    ck_assert_str_eq(before, after); /* nothing visible changed */
    uint64_t floor, stamp;
    ck_assert_int_eq(crdtdb_db_horizon(A.db, &floor, &stamp), 0);
    ck_assert_uint_eq(floor, st.floor);
    ck_assert_uint_gt(floor, 0);
    ck_assert_uint_gt(stamp, 0);
    /* nothing more to do; a removed id can be added again */
    ck_assert_int_eq(crdtdb_db_collect(A.db, 0, &st), 0);
    ck_assert_uint_eq(st.records, 0);
    put(&A, "add", "players", "bob", "{\"hp\":9}");
    ck_assert(has(&A, "players", "bob"));
    free(before);
    free(after);
    replica_free(&A);
}
END_TEST

START_TEST(many_tombstones_go_in_batches)
{
    replica A;
    replica_init(&A, &now_ms, "game");
    crdtdb_txn *t;
    ck_assert_int_eq(crdtdb_txn_begin(A.db, 0, &t), 0);
    crdtdb_buf b = CRDTDB_BUF_INIT;
    const uint8_t *v = tu_mp(&b, "{\"hp\":1}");
    char id[16];
    for (int i = 0; i < 1000; i++) {
        snprintf(id, sizeof id, "p%04d", i);
        ck_assert_int_eq(crdtdb_db_add(A.db, t, "players", id, v, b.len), 0);
    }
    for (int i = 0; i < 1000; i += 2) {
        snprintf(id, sizeof id, "p%04d", i);
        ck_assert_int_eq(crdtdb_db_remove(A.db, t, "players", id), 0);
    }
    ck_assert_int_eq(crdtdb_txn_commit(t), 0);
    crdtdb_buf_free(&b);
    crdtdb_collect_stats st;
    ck_assert_int_eq(crdtdb_db_collect(A.db, 0, &st), 0);
    ck_assert_uint_eq(st.records, 500);
    ck_assert_int_eq(stat_removed(&A), 0);
    uint64_t floor, stamp;
    ck_assert_int_eq(crdtdb_db_horizon(A.db, &floor, &stamp), 0);
    ck_assert_uint_eq(floor, st.floor);
    ck_assert_uint_eq(stamp, st.stamp);
    ck_assert(has(&A, "players", "p0001"));
    ck_assert(!has(&A, "players", "p0000"));
    replica_free(&A);
}
END_TEST

START_TEST(tombstone_waits_until_every_peer_holds_it)
{
    replica A, B;
    replica_init(&A, &now_ms, "game");
    replica_init(&B, &now_ms, "game");
    put(&A, "add", "players", "ann", "{\"hp\":1}");
    /* B writes too: a peer that never sent a delta has nothing to hold
     * back, is not remembered, and resyncs whole if it comes back late */
    put(&B, "add", "players", "bea", "{\"hp\":2}");
    sync2(&A, &B);
    now_ms += 10;
    put(&A, "remove", "players", "ann", NULL);
    crdtdb_collect_stats st;
    ck_assert_int_eq(crdtdb_db_collect(A.db, 0, &st), 0);
    ck_assert_uint_eq(st.records, 0); /* B has not got it */
    ck_assert_int_eq(stat_removed(&A), 1);
    sync2(&A, &B);
    crdtdb_peer p;
    uint8_t idb[32];
    int found;
    ck_assert_int_eq(crdtdb_db_peer_get(A.db, rid(&B, idb), &p, &found), 0);
    ck_assert(found);
    ck_assert_uint_eq(p.stable, p.acked);
    ck_assert_int_eq(crdtdb_db_collect(A.db, 0, &st), 0);
    ck_assert_uint_eq(st.records, 1);
    ck_assert_int_eq(stat_removed(&A), 0);
    /* B still holds its tombstone: it collects by its own horizon */
    ck_assert_int_eq(stat_removed(&B), 1);
    ck_assert_int_eq(crdtdb_db_collect(B.db, 0, &st), 0);
    ck_assert_uint_eq(st.records, 1);
    /* and the next sync asks nothing of anyone */
    sync2(&A, &B);
    char *da = dump(&A), *db = dump(&B);
    ck_assert_str_eq(da, db);
    free(da);
    free(db);
    replica_free(&A);
    replica_free(&B);
}
END_TEST

/* C was offline past the peer age limit while ann was removed and
 * collected; its old update of ann must not bring her back, its newer
 * record must arrive, and it must forget ann. */
START_TEST(silent_peer_leaves_the_horizon_and_resyncs_whole)
{
    replica A, B, C;
    replica_init(&A, &now_ms, "game");
    replica_init(&B, &now_ms, "game");
    replica_init(&C, &now_ms, "game");
    put(&A, "add", "players", "ann", "{\"hp\":1}");
    put(&A, "add", "players", "bob", "{\"hp\":2}");
    put(&B, "add", "moves", "b1", "{}"); /* each proves its id to A */
    put(&C, "add", "moves", "c1", "{}");
    sync2(&A, &B);
    sync2(&A, &C);
    now_ms += 10;
    put(&C, "update", "players", "ann", "{\"hp\":5}"); /* offline, older than the remove */
    now_ms += 10;
    put(&A, "remove", "players", "ann", NULL);
    sync2(&A, &B);
    now_ms += 60000;
    sync2(&A, &B); /* B stays in touch */
    crdtdb_collect_stats st;
    ck_assert_int_eq(crdtdb_db_collect(A.db, 0, &st), 0);
    ck_assert_uint_eq(st.records, 0); /* C pins it without an age limit */
    ck_assert_int_eq(crdtdb_db_collect(A.db, 30000, &st), 0);
    ck_assert_uint_eq(st.peers_left, 1);
    ck_assert_uint_eq(st.records, 1);
    put(&C, "add", "players", "cid", "{\"hp\":3}"); /* newer than anything collected */
    sync2(&A, &C);
    ck_assert(!has(&A, "players", "ann"));
    ck_assert(!has(&C, "players", "ann"));
    ck_assert(has(&A, "players", "cid"));
    ck_assert(has(&C, "players", "bob"));
    crdtdb_peer p;
    uint8_t idb[32];
    int found;
    ck_assert_int_eq(crdtdb_db_peer_get(C.db, rid(&A, idb), &p, &found), 0);
    ck_assert_uint_eq(p.flags & CRDTDB_PEER_RESYNC, 0);
    sync2(&A, &B);
    sync2(&A, &C);
    char *da = dump(&A), *db = dump(&B), *dc = dump(&C);
    ck_assert_str_eq(da, db);
    ck_assert_str_eq(da, dc);
    free(da);
    free(db);
    free(dc);
    replica_free(&A);
    replica_free(&B);
    replica_free(&C);
}
END_TEST

/* A replica restored from a backup taken before a remove is a new
 * replica (a new identity): it is resynced whole and forgets the record,
 * whose remove the collector no longer holds. */
START_TEST(restored_old_backup_is_resynced)
{
    replica A, C, R;
    replica_init(&A, &now_ms, "game");
    replica_init(&C, &now_ms, "game");
    put(&A, "add", "players", "ann", "{\"hp\":1}");
    put(&C, "add", "moves", "c1", "{}");
    sync2(&A, &C);
    memset(&R, 0, sizeof R); /* C's backup, restored later */
    R.dir = tu_tmpdir();
    R.now = &now_ms;
    R.opts = C.opts;
    R.opts.clock_ctx = &R;
    ck_assert_int_eq(crdtdb_env_backup(C.env, R.dir), 0);
    now_ms += 10;
    put(&A, "remove", "players", "ann", NULL);
    sync2(&A, &C);
    crdtdb_collect_stats st;
    ck_assert_int_eq(crdtdb_db_collect(A.db, 0, &st), 0);
    ck_assert_uint_eq(st.records, 1);
    replica_open(&R, "game");
    ck_assert(has(&R, "players", "ann")); /* as it was */
    sync2(&A, &R);
    ck_assert(!has(&R, "players", "ann"));
    ck_assert(!has(&A, "players", "ann"));
    char *da = dump(&A), *dr = dump(&R);
    ck_assert_str_eq(da, dr);
    free(da);
    free(dr);
    replica_free(&A);
    replica_free(&C);
    replica_free(&R);
}
END_TEST

/* A client whose own removes were collected holds the server's log to
 * past the floor (in SKIPs, which move no durable watermark): the server
 * signs that range, so the client's next SINCE is not from behind it. */
static int resyncs_seen;
static void count_resyncs(const uint8_t *p, size_t len)
{
    for (size_t off = 0; off + 4 <= len;) {
        size_t n = (size_t)p[off] << 24 | (size_t)p[off + 1] << 16 | (size_t)p[off + 2] << 8 |
                   p[off + 3];
        if (off + 4 + n > len)
            break;
        if (n >= 2 && (p[off + 4] & 0xf0) == 0x90 && p[off + 5] == 16)
            resyncs_seen++;
        off += 4 + n;
    }
}

START_TEST(churning_client_in_the_horizon_is_not_resynced)
{
    replica A, C;
    replica_init(&A, &now_ms, "game");
    replica_init(&C, &now_ms, "game");
    for (int i = 0; i < 20; i++) {
        char id[16];
        snprintf(id, sizeof id, "a%02d", i);
        put(&A, "add", "players", id, "{\"hp\":1}");
    }
    sync2(&A, &C);
    for (int i = 0; i < 5; i++) {
        char id[16];
        snprintf(id, sizeof id, "c%02d", i);
        now_ms += 10;
        put(&C, "add", "moves", id, "{}");
        put(&C, "remove", "moves", id, NULL);
    }
    sync2(&A, &C);
    sync2(&A, &C);
    crdtdb_collect_stats st;
    ck_assert_int_eq(crdtdb_db_collect(A.db, 0, &st), 0);
    ck_assert_uint_eq(st.records, 5);
    resyncs_seen = 0;
    crdtdb_session *a = open_session(&A, 1, 0), *c = open_session(&C, 0, 0);
    for (int i = 0; i < 1000; i++) {
        size_t len;
        const uint8_t *p = crdtdb_session_output(a, &len);
        count_resyncs(p, len);
        if (!(session_move(a, c) + session_move(c, a))) {
            crdtdb_session_pump(a);
            crdtdb_session_pump(c);
            size_t la, lc;
            crdtdb_session_output(a, &la);
            crdtdb_session_output(c, &lc);
            if (!la && !lc)
                break;
        }
    }
    ck_assert_msg(resyncs_seen == 0, "an in-horizon client was resynced whole");
    crdtdb_session_close(a);
    crdtdb_session_close(c);
    replica_free(&A);
    replica_free(&C);
}
END_TEST

/* Server A is a peer link (a shared client) of server B.  A removes y; B
 * collects it (A sent it: A holds it).  A's own client then brings x, an
 * add older than that remove: A is not resynced, so x lives everywhere. */
START_TEST(linked_server_keeps_a_live_record)
{
    replica A, B, CA, CB;
    replica_init(&A, &now_ms, "game");
    replica_init(&B, &now_ms, "game");
    replica_init(&CA, &now_ms, "game");
    replica_init(&CB, &now_ms, "game");
    put(&A, "add", "players", "y", "{\"hp\":1}");
    put(&CA, "add", "moves", "ca", "{}");
    put(&CB, "add", "moves", "cb", "{}");
    client_flags = CRDTDB_SESSION_NO_PURGE;
    sync2(&B, &A);
    client_flags = 0;
    sync2(&B, &CB);
    sync2(&A, &CA);
    now_ms += 10;
    put(&CA, "add", "players", "x", "{\"hp\":9}"); /* CA offline for now */
    now_ms += 10;
    put(&A, "remove", "players", "y", NULL);
    client_flags = CRDTDB_SESSION_NO_PURGE;
    sync2(&B, &A);
    sync2(&B, &A);
    client_flags = 0;
    sync2(&B, &CB);
    sync2(&B, &CB);
    crdtdb_collect_stats st;
    ck_assert_int_eq(crdtdb_db_collect(B.db, 0, &st), 0);
    ck_assert_uint_eq(st.records, 1);
    now_ms += 10;
    sync2(&A, &CA); /* x reaches A */
    ck_assert(has(&A, "players", "x"));
    client_flags = CRDTDB_SESSION_NO_PURGE;
    sync2(&B, &A);
    client_flags = 0;
    sync2(&A, &CA);
    sync2(&B, &CB);
    ck_assert(has(&A, "players", "x") && has(&B, "players", "x") && has(&CA, "players", "x") &&
              has(&CB, "players", "x"));
    ck_assert(!has(&A, "players", "y") && !has(&B, "players", "y") && !has(&CB, "players", "y"));
    client_flags = CRDTDB_SESSION_NO_PURGE;
    replica_free(&A);
    replica_free(&B);
    replica_free(&CA);
    replica_free(&CB);
}
END_TEST

/* A copy dropped (a cluster's non-owner handing off) and created again goes
 * on from its tomb's sequence, holding none of its old log.  A client that
 * heard that log up to below the tomb, and missed a remove the owner has
 * since collected, must not keep the removed record: the new copy cannot
 * send it the remove, so it must resync it whole. */
START_TEST(client_of_a_copy_created_again_hears_of_a_collected_remove)
{
    replica A, N, C; /* A the owner; N a server that is A's client; C N's client */
    replica_init(&A, &now_ms, "game");
    replica_init(&N, &now_ms, "game");
    replica_init(&C, &now_ms, "game");
    put(&A, "add", "players", "ann", "{\"hp\":1}");
    put(&N, "add", "moves", "n1", "{}"); /* each proves its id */
    put(&C, "add", "moves", "c1", "{}");
    client_flags = CRDTDB_SESSION_NO_PURGE;
    sync2(&A, &N);
    client_flags = 0;
    sync2(&N, &C); /* C holds ann, and N's log up to here */
    now_ms += 10;
    put(&A, "remove", "players", "ann", NULL);
    client_flags = CRDTDB_SESSION_NO_PURGE;
    sync2(&A, &N);
    sync2(&A, &N);
    ck_assert(!has(&N, "players", "ann"));
    crdtdb_collect_stats st;
    ck_assert_int_eq(crdtdb_db_collect(A.db, 0, &st), 0);
    ck_assert_uint_eq(st.records, 1); /* the owner collected ann's remove */
    /* N hands off: A holds all of it; N drops and is created again */
    crdtdb_db_close(N.db);
    N.db = NULL;
    ck_assert_int_eq(crdtdb_db_drop(N.env, "game"), 0);
    ck_assert_int_eq(crdtdb_db_create(N.env, "game", COLLS, 2, &N.db), 0);
    sync2(&A, &N); /* the new copy pulls everything back from A */
    ck_assert(has(&N, "moves", "n1") && has(&N, "moves", "c1"));
    ck_assert(!has(&N, "players", "ann"));
    client_flags = 0;
    sync2(&N, &C); /* C comes back, from below the tomb */
    sync2(&N, &C);
    client_flags = CRDTDB_SESSION_NO_PURGE;
    ck_assert_msg(!has(&C, "players", "ann"), "a removed record lives on in the client");
    char *da = dump(&A), *dn = dump(&N), *dc = dump(&C);
    ck_assert_str_eq(da, dn);
    ck_assert_str_eq(da, dc);
    free(da);
    free(dn);
    free(dc);
    replica_free(&A);
    replica_free(&N);
    replica_free(&C);
}
END_TEST

/* A copy handed off (a cluster's non-owner, once its owner holds it all)
 * is dropped and does not come back: it must not pin the owner's
 * collection.  Before the handoff such a copy stayed and kept acking; now
 * its last ack would hold every later tombstone of the owner forever
 * (with no max_peer_age, the default).  So it leaves (LEAVE) first. */
START_TEST(handed_off_copy_does_not_pin_the_owners_collection)
{
    replica A, N;
    replica_init(&A, &now_ms, "game");
    replica_init(&N, &now_ms, "game");
    put(&A, "add", "players", "ann", "{\"hp\":1}");
    put(&N, "add", "moves", "n1", "{}"); /* N proves its id to A */
    client_flags = CRDTDB_SESSION_NO_PURGE;
    sync2(&A, &N);
    sync_leave(&A, &N);
    ck_assert_uint_ne(peer_flags(&A, &N) & CRDTDB_PEER_LEFT, 0);
    /* N hands off: A holds all of it; N drops its copy */
    crdtdb_db_close(N.db);
    N.db = NULL;
    ck_assert_int_eq(crdtdb_db_drop(N.env, "game"), 0);
    now_ms += 10;
    put(&A, "remove", "players", "ann", NULL); /* the owner is alone now */
    crdtdb_collect_stats st;
    ck_assert_int_eq(crdtdb_db_collect(A.db, 0, &st), 0);
    ck_assert_msg(st.records == 1, "the dropped copy pins the owner's tombstone (%llu collected)",
                  (unsigned long long)st.records);
    ck_assert_uint_eq(st.peers_left, 1);
    replica_free(&A);
    replica_free(&N);
}
END_TEST

/* One that left and comes back anyway (it kept its copy, or a replica
 * claimed its id) is resynced whole, however much of our log it says it
 * holds: collection went on without it.  Its next delta or acknowledgement
 * brings it back into the horizon. */
START_TEST(left_peer_that_comes_back_is_resynced)
{
    replica A, N;
    replica_init(&A, &now_ms, "game");
    replica_init(&N, &now_ms, "game");
    put(&N, "add", "moves", "n1", "{}");
    client_flags = CRDTDB_SESSION_NO_PURGE;
    sync2(&A, &N);
    now_ms += 10;
    put(&A, "add", "players", "x", "{\"hp\":1}");
    now_ms += 10;
    put(&A, "remove", "players", "x", NULL);
    sync_leave(&A, &N); /* N holds A's whole log, x's remove too */
    crdtdb_collect_stats st;
    ck_assert_int_eq(crdtdb_db_collect(A.db, 0, &st), 0);
    ck_assert_uint_eq(st.records, 1);
    ck_assert_uint_eq(st.peers_left, 1);
    ck_assert_uint_eq(peer_flags(&N, &A) & CRDTDB_PEER_RESYNCED, 0);
    sync2(&A, &N); /* its SINCE is A's last, above the floor */
    ck_assert_uint_ne(peer_flags(&N, &A) & CRDTDB_PEER_RESYNCED, 0);
    now_ms += 10;
    put(&N, "add", "moves", "n2", "{}");
    sync2(&A, &N);
    ck_assert_uint_eq(peer_flags(&A, &N) & CRDTDB_PEER_LEFT, 0); /* back */
    assert_same(&A, &N);
    replica_free(&A);
    replica_free(&N);
}
END_TEST

/* A connection to srv that claims `as`'s replica id in its hello (ids are
 * public: every hello carries one) and sends LEAVE at once, having signed
 * nothing. */
static void claimed_leave(replica *srv, replica *as)
{
    uint8_t id[32];
    crdtdb_buf m = CRDTDB_BUF_INIT, f = CRDTDB_BUF_INIT;
    msgpack_packer pk;
    msgpack_packer_init(&pk, &m, crdtdb__buf_write_cb);
    msgpack_pack_array(&pk, 5);
    msgpack_pack_uint8(&pk, 1); /* HELLO */
    msgpack_pack_uint32(&pk, 1);
    msgpack_pack_str_with_body(&pk, "game", 4);
    msgpack_pack_bin_with_body(&pk, rid(as, id), 32);
    msgpack_pack_uint8(&pk, CRDTDB_SYNC_TWO_WAY);
    tu_frame(&f, &m);
    m.len = 0;
    msgpack_pack_array(&pk, 1);
    msgpack_pack_uint8(&pk, 17); /* LEAVE */
    tu_frame(&f, &m);
    crdtdb_session *a = open_session(srv, 1, 0);
    ck_assert_int_eq(crdtdb_session_feed(a, f.data, f.len), 0);
    ck_assert(crdtdb_session_closed(a));
    /* not taken: the answer is CLOSE ([7]), never the [17] that would tell
     * a client it may drop its copy */
    size_t len;
    const uint8_t *p = crdtdb_session_output(a, &len);
    ck_assert_uint_ge(len, 6);
    ck_assert(p[len - 2] == 0x91 && p[len - 1] == 7);
    crdtdb_session_close(a);
    crdtdb_buf_free(&m);
    crdtdb_buf_free(&f);
}

/* Anyone who can open a session with A can claim N's id and LEAVE.  Were
 * that taken, A would collect past N with no age limit set, and N, which
 * wrote y while offline (a new record, never removed), would be resynced
 * whole when it comes back and lose y everywhere.  A LEAVE counts only
 * from a replica that signed a delta in its session (review of fc71e3a,
 * R1). */
START_TEST(claimed_leave_costs_an_offline_client_its_write)
{
    replica A, N;
    replica_init(&A, &now_ms, "game");
    replica_init(&N, &now_ms, "game");
    put(&N, "add", "moves", "n1", "{}");
    client_flags = 0; /* N, a plain client */
    sync2(&A, &N);
    sync2(&A, &N);
    now_ms += 10;
    put(&N, "add", "players", "y", "{\"hp\":7}"); /* N offline */
    now_ms += 10;
    put(&A, "add", "players", "z", "{\"hp\":0}");
    now_ms += 10;
    put(&A, "remove", "players", "z", NULL);
    claimed_leave(&A, &N); /* not N: it signed nothing */
    crdtdb_collect_stats st;
    ck_assert_int_eq(crdtdb_db_collect(A.db, 0, &st), 0); /* no age limit */
    sync2(&A, &N);
    sync2(&A, &N);
    client_flags = CRDTDB_SESSION_NO_PURGE;
    ck_assert_msg(has(&A, "players", "y") && has(&N, "players", "y"),
                  "a claimed LEAVE cost N its offline write y: A %d N %d (A collected %llu, "
                  "N left: %u)",
                  has(&A, "players", "y"), has(&N, "players", "y"),
                  (unsigned long long)st.records, peer_flags(&A, &N) & CRDTDB_PEER_LEFT);
    replica_free(&A);
    replica_free(&N);
}
END_TEST

/* S is X's client (a server's peer link) and a server of its own.  Someone
 * claims X's id at S and LEAVEs: were that taken, S's collection would
 * leave out its own server, which a client can never resync (rule 3), and
 * a remove X has not received yet would be collected and never reach X. */
START_TEST(claimed_leave_of_its_server_lets_a_client_collect_what_the_server_lacks)
{
    replica X, S;
    replica_init(&X, &now_ms, "game");
    replica_init(&S, &now_ms, "game");
    put(&S, "add", "moves", "s1", "{}");
    put(&X, "add", "players", "r", "{\"hp\":1}");
    client_flags = CRDTDB_SESSION_NO_PURGE;
    sync2(&X, &S);
    sync2(&X, &S);
    now_ms += 10;
    put(&S, "remove", "players", "r", NULL); /* a client of S removes r; X not linked now */
    claimed_leave(&S, &X);
    crdtdb_collect_stats st;
    ck_assert_int_eq(crdtdb_db_collect(S.db, 0, &st), 0);
    sync2(&X, &S);
    sync2(&X, &S);
    ck_assert_msg(!has(&X, "players", "r"),
                  "X keeps r, removed at S and collected there past X (%llu collected)",
                  (unsigned long long)st.records);
    assert_same(&X, &S);
    replica_free(&X);
    replica_free(&S);
}
END_TEST

/* A left peer's come-back resync cut short: its delta reached the server,
 * the RESYNC did not reach it.  The next session must still resync it (the
 * flag stays until it acknowledged all of the resync), or it keeps y,
 * which the server dropped as an old write from behind (the watermark
 * moved over it), and they never converge (review of fc71e3a, R2). */
START_TEST(left_peer_cut_off_in_its_resync_is_resynced_again)
{
    replica A, N;
    uint8_t id[32];
    replica_init(&A, &now_ms, "game");
    replica_init(&N, &now_ms, "game");
    put(&N, "add", "moves", "n1", "{}");
    client_flags = CRDTDB_SESSION_NO_PURGE; /* N serves others (a cluster's copy) */
    sync2(&A, &N);
    now_ms += 10;
    put(&N, "add", "players", "y", "{\"hp\":7}"); /* not sent yet */
    now_ms += 10;
    put(&A, "add", "players", "z", "{\"hp\":0}");
    now_ms += 10;
    put(&A, "remove", "players", "z", NULL);
    client_mode = CRDTDB_SYNC_SERVER_TO_CLIENT; /* N takes all of A's log, sends nothing */
    sync2(&A, &N);
    client_mode = CRDTDB_SYNC_TWO_WAY;
    ck_assert(!has(&N, "players", "z") && !has(&A, "players", "y"));
    /* N left (it kept its copy after all: a cancelled handoff, a failed drop) */
    ck_assert_int_eq(crdtdb_db_peer_leave(A.db, rid(&N, id), 1), 0);
    crdtdb_collect_stats st;
    ck_assert_int_eq(crdtdb_db_collect(A.db, 0, &st), 0);
    ck_assert_uint_eq(st.records, 1);
    /* N comes back: its SINCE, then its delta (y) reach A; A's RESYNC is
     * lost with the connection */
    crdtdb_session *a = open_session(&A, 1, 0), *n = open_session(&N, 0, 0);
    session_move(n, a); /* hello */
    session_move(a, n); /* hello, SINCE */
    crdtdb_session_pump(n);
    session_move(n, a); /* SINCE (A queues RESYNC), the delta with y */
    ck_assert(!has(&A, "players", "y")); /* dropped: old, from behind */
    crdtdb_session_close(a);
    crdtdb_session_close(n);
    sync2(&A, &N);
    sync2(&A, &N);
    ck_assert_msg(has(&A, "players", "y") == has(&N, "players", "y"),
                  "N keeps y, which A dropped, for good (N left at A: %u)",
                  peer_flags(&A, &N) & CRDTDB_PEER_LEFT);
    assert_same(&A, &N);
    replica_free(&A);
    replica_free(&N);
}
END_TEST

/* A remove with a hidden leaf newer than it (B's update, made before B
 * heard of the remove): C, silent past the age limit, comes back with an
 * add stamped between the two.  B holds the leaf and shows it under that
 * add, so the collector must still hold it: a record with a leaf newer
 * than its remove is not collected (first found by random_star_of_plain_
 * clients_brings_nothing_back, schedule seed 117188; the horizon stamp
 * then covered the leaf and dropped C's add, which a client collecting
 * with no age limit does not do -- see the next test). */
START_TEST(add_from_behind_under_a_hidden_leaf_shows_it)
{
    replica A, B, C;
    replica_init(&A, &now_ms, "game");
    replica_init(&B, &now_ms, "game");
    replica_init(&C, &now_ms, "game");
    put(&B, "add", "moves", "b1", "{}"); /* each proves its id to A */
    put(&C, "add", "moves", "c1", "{}");
    client_flags = 0; /* a star of plain clients */
    sync2(&A, &B);
    sync2(&A, &C);
    now_ms += 10;
    put(&A, "add", "players", "x", "{\"hp\":1}");
    sync2(&A, &B);
    now_ms += 10;
    put(&A, "remove", "players", "x", NULL);
    now_ms += 10;
    put(&C, "add", "players", "x", "{\"hp\":2}"); /* C offline: after the remove */
    now_ms += 10;
    put(&B, "update", "players", "x", "{\"mp\":3}"); /* B not told yet */
    sync2(&A, &B); /* the leaf to A, under the remove; the remove to B */
    sync2(&A, &B);
    ck_assert(!has(&A, "players", "x") && !has(&B, "players", "x"));
    now_ms += 60000;
    sync2(&A, &B); /* B stays in touch */
    crdtdb_collect_stats st;
    ck_assert_int_eq(crdtdb_db_collect(A.db, 30000, &st), 0);
    ck_assert_uint_eq(st.peers_left, 1);
    ck_assert_uint_eq(st.records, 0); /* B's leaf is newer than the remove */
    for (int i = 0; i < 2; i++) {
        sync2(&A, &C);
        sync2(&A, &B);
    }
    char *da = dump(&A), *db = dump(&B), *dc = dump(&C);
    ck_assert_str_eq(da, "players:x={\"hp\":2,\"mp\":3};moves:b1={};c1={};");
    ck_assert_str_eq(da, db);
    ck_assert_str_eq(da, dc);
    free(da);
    free(db);
    free(dc);
    client_flags = CRDTDB_SESSION_NO_PURGE;
    replica_free(&A);
    replica_free(&B);
    replica_free(&C);
}
END_TEST

/* A client collects a removed record under a leaf newer than the remove (a
 * concurrent update).  A third client, offline, re-added the record between
 * the two stamps; its add reaches the server after the collection and wins
 * there over the remove, so the leaf shows at the server.  The collector
 * must show it too: a record with a leaf newer than its remove is kept. */
START_TEST(add_between_a_remove_and_a_newer_hidden_leaf_shows_the_leaf)
{
    replica A, B, C, X;
    replica_init(&A, &now_ms, "game");
    replica_init(&B, &now_ms, "game");
    replica_init(&C, &now_ms, "game");
    replica_init(&X, &now_ms, "game");
    client_flags = 0; /* a star of plain clients */
    put(&A, "add", "players", "x", "{\"hp\":1}");
    sync2(&A, &B);
    sync2(&A, &C);
    sync2(&A, &X);
    now_ms += 10;
    put(&B, "remove", "players", "x", NULL);
    now_ms += 10;
    put(&C, "add", "players", "x", "{\"hp\":2}"); /* C offline: after the remove */
    now_ms += 10;
    put(&X, "update", "players", "x", "{\"mp\":3}"); /* X not told yet */
    for (int i = 0; i < 3; i++) {
        sync2(&A, &B);
        sync2(&A, &X);
    }
    ck_assert(!has(&A, "players", "x") && !has(&X, "players", "x"));
    crdtdb_collect_stats st;
    ck_assert_int_eq(crdtdb_db_collect(X.db, 0, &st), 0);
    ck_assert_uint_eq(st.records, 0); /* the leaf is newer than the remove */
    for (int i = 0; i < 2; i++) {
        sync2(&A, &C); /* the add, between the remove and the leaf */
        sync2(&A, &B);
        sync2(&A, &X);
    }
    ck_assert(has(&A, "players", "x"));
    char *da = dump(&A), *db = dump(&B), *dc = dump(&C), *dx = dump(&X);
    ck_assert_str_eq(da, db);
    ck_assert_str_eq(da, dc);
    ck_assert_str_eq(da, dx);
    char *j = tu_get(X.db, "players", "x");
    ck_assert_ptr_nonnull(strstr(j, "\"mp\":3"));
    free(j);
    free(da);
    free(db);
    free(dc);
    free(dx);
    client_flags = CRDTDB_SESSION_NO_PURGE;
    replica_free(&A);
    replica_free(&B);
    replica_free(&C);
    replica_free(&X);
}
END_TEST

/* A mesh (every client serves others) of A, P and Q where A collected the
 * remove of x, which Q held and P never did, with P and Q silent past its
 * age limit; then P came back and was resynced, keeping A's gate, while Q
 * is still behind A's horizon, holding x's add. */
static void gate_mesh(replica *A, replica *P, replica *Q)
{
    replica_init(A, &now_ms, "game");
    replica_init(P, &now_ms, "game");
    replica_init(Q, &now_ms, "game");
    put(P, "add", "moves", "p1", "{}"); /* each proves its id */
    put(Q, "add", "moves", "q1", "{}");
    client_flags = CRDTDB_SESSION_NO_PURGE;
    sync2(A, P);
    sync2(A, Q);
    now_ms += 10;
    put(A, "add", "players", "x", "{\"hp\":1}");
    sync2(A, Q); /* Q holds x; P does not */
    now_ms += 10;
    put(A, "remove", "players", "x", NULL);
    now_ms += 60000;
    crdtdb_collect_stats st;
    ck_assert_int_eq(crdtdb_db_collect(A->db, 30000, &st), 0);
    ck_assert_uint_eq(st.peers_left, 2);
    ck_assert_uint_eq(st.records, 1);
    sync2(A, P); /* P is resynced */
    ck_assert(!has(P, "players", "x"));
}

/* Found by random_schedules_with_silent_peers_bring_nothing_back (schedule
 * seed 502138): in a mesh, a peer outside the collector's horizon offers an
 * old write through a peer already resynced.  A adds x, Q gets it; A
 * removes x and collects it, P and Q silent.  P comes back and is resynced
 * (it never held x).  Q, not yet back, serves P its old add of x.  P's gate
 * (A's horizon stamp) knows it may be a collected record: P takes it and
 * removes it, and that remove reaches Q and A (docs/crdt.md, rule 4). */
START_TEST(old_write_relayed_by_a_resynced_peer_stays_gone)
{
    replica A, P, Q;
    gate_mesh(&A, &P, &Q);
    now_ms += 10;
    sync2(&Q, &P); /* Q, still behind A's horizon, serves P */
    now_ms += 10;
    ck_assert(!has(&P, "players", "x"));
    /* in that same session: P's remove is P's own, not part of Q's delta */
    ck_assert_msg(!has(&Q, "players", "x"), "Q keeps what P removed");
    sync2(&A, &P); /* P relays it */
    ck_assert_msg(!has(&A, "players", "x"), "a collected remove's record came back through P");
    sync2(&Q, &P);
    ck_assert_msg(!has(&Q, "players", "x"), "Q keeps what P removed");
    assert_same(&A, &P);
    assert_same(&A, &Q);
    replica_free(&A);
    replica_free(&P);
    replica_free(&Q);
}
END_TEST

/* The gate on a server's batch path (crdtdb_session_batch_peek,
 * crdtdb_db_apply_batch, crdtdb_session_batch_done: deltas of many
 * sessions in one commit): P, resynced by A, serves Q, still behind A's
 * horizon, whose delta brings x's old add; P answers with its own remove,
 * which goes back to Q in that session, not skipped as Q's own range
 * (review of cb346b4, R5). */
START_TEST(gated_add_in_a_batch_goes_back_removed)
{
    replica A, P, Q;
    gate_mesh(&A, &P, &Q);
    now_ms += 10;
    crdtdb_session_options o;
    crdtdb_session_options_init(&o);
    o.flags = CRDTDB_SESSION_SERVER | CRDTDB_SESSION_YIELD;
    o.max_message = P.opts.max_delta_size + 4096;
    crdtdb_session *srv, *cli = open_session(&Q, 0, 0);
    ck_assert_int_eq(crdtdb_session_open(P.db, &o, &srv), 0);
    size_t batches = 0, gated = 0;
    for (int i = 0;; i++) {
        ck_assert_msg(i < 100000, "sync does not settle");
        const uint8_t *d;
        size_t len, done;
        if (crdtdb_session_batch_peek(srv, &d, &len)) {
            crdtdb_apply_info info;
            ck_assert_int_eq(crdtdb_db_apply_batch(P.db, &d, &len, 1, &info, &done), 0);
            ck_assert_uint_eq(done, 1);
            batches++;
            gated += info.gated;
            ck_assert_int_eq(crdtdb_session_batch_done(srv, &info), 0);
            continue;
        }
        if (session_move(cli, srv) + session_move(srv, cli))
            continue;
        crdtdb_session_pump(srv);
        crdtdb_session_pump(cli);
        size_t a, b;
        crdtdb_session_output(srv, &a);
        crdtdb_session_output(cli, &b);
        if (!a && !b && !crdtdb_session_pending(srv))
            break;
    }
    ck_assert_uint_gt(batches, 0);
    ck_assert_uint_eq(gated, 1);
    ck_assert(!has(&P, "players", "x"));
    ck_assert_msg(!has(&Q, "players", "x"), "the gate's remove did not go back to Q in the session");
    crdtdb_session_close(srv);
    crdtdb_session_close(cli);
    sync2(&A, &P);
    assert_same(&A, &P);
    replica_free(&A);
    replica_free(&P);
    replica_free(&Q);
}
END_TEST

/* The gated add and its remove are one commit: an observer of P sees no
 * record appear and go (review of 56262e4, G6). */
static int ev_add, ev_remove;
static void count_ev(void *ctx, const crdtdb_event *ev)
{
    (void)ctx;
    if (ev->id && strcmp(ev->id, "x") == 0) {
        ev_add += ev->type == CRDTDB_EVENT_ADD;
        ev_remove += ev->type == CRDTDB_EVENT_REMOVE;
    }
}

START_TEST(gated_add_fires_no_event)
{
    replica A, P, Q;
    gate_mesh(&A, &P, &Q);
    crdtdb_observer *o;
    ev_add = ev_remove = 0;
    ck_assert_int_eq(crdtdb_db_observe(P.db, NULL, count_ev, NULL, &o), 0);
    sync2(&Q, &P);
    crdtdb_observer_close(o);
    ck_assert(!has(&P, "players", "x"));
    ck_assert_msg(ev_add == 0 && ev_remove == 0,
                  "an observer saw x added (%d) and removed (%d) in one commit", ev_add, ev_remove);
    ck_assert(!has(&Q, "players", "x"));
    replica_free(&A);
    replica_free(&P);
    replica_free(&Q);
}
END_TEST

/* The gate is for others' writes: a record the resyncer itself sends, as
 * old as it may be (a write it took late from a replica in its horizon),
 * is what the resyncer holds, and stays. */
START_TEST(old_write_from_the_resyncer_is_kept)
{
    replica A, P, B, C; /* C is B's peer, never A's */
    replica_init(&A, &now_ms, "game");
    replica_init(&P, &now_ms, "game");
    replica_init(&B, &now_ms, "game");
    replica_init(&C, &now_ms, "game");
    put(&P, "add", "moves", "p1", "{}");
    put(&B, "add", "moves", "b1", "{}");
    put(&C, "add", "moves", "c1", "{}");
    client_flags = CRDTDB_SESSION_NO_PURGE;
    sync2(&A, &P);
    sync2(&A, &B);
    sync2(&B, &C);
    now_ms += 10;
    put(&C, "add", "players", "old", "{\"hp\":3}"); /* C keeps it a while */
    now_ms += 10;
    put(&A, "add", "players", "x", "{\"hp\":1}");
    now_ms += 10;
    put(&A, "remove", "players", "x", NULL);
    now_ms += 60000;
    sync2(&A, &B); /* B acks x's remove */
    sync2(&A, &B);
    crdtdb_collect_stats st;
    ck_assert_int_eq(crdtdb_db_collect(A.db, 30000, &st), 0);
    ck_assert_uint_eq(st.peers_left, 1); /* P, silent */
    ck_assert_uint_eq(st.records, 1);
    sync2(&A, &P); /* P is resynced: its gate is past old's add */
    crdtdb_peer p;
    uint8_t ida[32];
    int found;
    ck_assert_int_eq(crdtdb_db_peer_get(P.db, rid(&A, ida), &p, &found), 0);
    ck_assert(found && (p.flags & CRDTDB_PEER_RESYNCED));
    ck_assert(!has(&P, "players", "x"));
    now_ms += 10;
    sync2(&B, &C); /* old reaches A through B, in A's horizon */
    sync2(&A, &B);
    ck_assert(has(&A, "players", "old"));
    sync2(&A, &P); /* and P from A, which holds what it collected */
    ck_assert_msg(has(&P, "players", "old"), "P removed a record its resyncer holds");
    sync2(&A, &P);
    sync2(&A, &B);
    sync2(&B, &C);
    assert_same(&A, &P);
    assert_same(&A, &B);
    assert_same(&A, &C);
    ck_assert(has(&A, "players", "old"));
    replica_free(&A);
    replica_free(&P);
    replica_free(&B);
    replica_free(&C);
}
END_TEST

/* The gate's cost stays with replicas that serve others: a plain client
 * (an app) keeps no gate, so a record written before its resyncer's
 * horizon stamp by a client inside every horizon (K, offline 50 ms) that
 * reaches it first through another server (a failover) stays — whether
 * it syncs two-way or only receives (review of 56262e4, G3 and G4). */
static void in_horizon_write(crdtdb_sync_mode mode)
{
    replica S1, S2, K, C;
    replica_init(&S1, &now_ms, "game");
    replica_init(&S2, &now_ms, "game");
    replica_init(&K, &now_ms, "game");
    replica_init(&C, &now_ms, "game");
    put(&S1, "add", "moves", "s1", "{}");
    put(&S2, "add", "moves", "s2", "{}");
    put(&K, "add", "moves", "k1", "{}");
    put(&C, "add", "moves", "c1", "{}");
    client_flags = CRDTDB_SESSION_NO_PURGE;
    sync2(&S2, &S1);
    client_flags = 0;
    sync2(&S1, &C);
    sync2(&S2, &K);
    now_ms += 100000; /* C silent from here */
    client_flags = CRDTDB_SESSION_NO_PURGE;
    sync2(&S2, &S1);
    client_flags = 0;
    sync2(&S2, &K);
    now_ms += 10;
    put(&K, "add", "players", "y", "{\"hp\":7}"); /* K offline for 50 ms */
    now_ms += 10;
    put(&S1, "add", "players", "z", "{\"hp\":0}");
    put(&S1, "remove", "players", "z", NULL);
    client_flags = CRDTDB_SESSION_NO_PURGE;
    sync2(&S2, &S1);
    sync2(&S2, &S1);
    crdtdb_collect_stats st;
    ck_assert_int_eq(crdtdb_db_collect(S1.db, 30000, &st), 0);
    ck_assert_uint_eq(st.records, 1);
    ck_assert_uint_eq(st.peers_left, 1); /* C */
    now_ms += 10;
    client_flags = 0;
    client_mode = mode;
    sync2(&S1, &C); /* resynced: its resyncer's stamp is past y's add */
    ck_assert_uint_ne(peer_flags(&C, &S1) & CRDTDB_PEER_RESYNCED, 0);
    now_ms += 10;
    client_mode = CRDTDB_SYNC_TWO_WAY;
    sync2(&S2, &K); /* y reaches S2: a new record, never removed */
    client_mode = mode;
    sync2(&S2, &C); /* failover */
    client_mode = CRDTDB_SYNC_TWO_WAY;
    client_flags = CRDTDB_SESSION_NO_PURGE;
    sync2(&S2, &S1);
    ck_assert_msg(has(&C, "players", "y") && has(&S1, "players", "y") && has(&S2, "players", "y"),
                  "y (written 50 ms offline, never removed) went: C %d S1 %d S2 %d",
                  has(&C, "players", "y"), has(&S1, "players", "y"), has(&S2, "players", "y"));
    replica_free(&S1);
    replica_free(&S2);
    replica_free(&K);
    replica_free(&C);
}

START_TEST(plain_client_keeps_an_old_write_from_another_server)
{
    in_horizon_write(CRDTDB_SYNC_TWO_WAY);
}
END_TEST

START_TEST(read_only_client_keeps_an_old_write_from_another_server)
{
    in_horizon_write(CRDTDB_SYNC_SERVER_TO_CLIENT);
}
END_TEST

/* A cleared copy (access changed: crdtdb_db_clear) holds nothing its gate
 * guarded, and no marks of its resyncers: the gate goes too, or the next
 * server's full export, all of it older than the gate, would be removed
 * everywhere (review of 56262e4, G2). */
START_TEST(cleared_copy_forgets_its_gate)
{
    replica S1, S2, C;
    replica_init(&S1, &now_ms, "game");
    replica_init(&S2, &now_ms, "game");
    replica_init(&C, &now_ms, "game");
    put(&S1, "add", "moves", "s1", "{}");
    put(&S2, "add", "moves", "s2", "{}");
    put(&C, "add", "moves", "c1", "{}");
    for (int i = 0; i < 5; i++) {
        char id[8];
        snprintf(id, sizeof id, "a%d", i);
        put(&S1, "add", "players", id, "{\"hp\":1}");
    }
    client_flags = CRDTDB_SESSION_NO_PURGE; /* C serves others: it keeps a gate */
    sync2(&S2, &S1);
    sync2(&S1, &C);
    now_ms += 10;
    put(&S1, "add", "players", "z", "{\"hp\":0}");
    put(&S1, "remove", "players", "z", NULL);
    sync2(&S2, &S1);
    sync2(&S2, &S1);
    now_ms += 60000;
    sync2(&S2, &S1);
    crdtdb_collect_stats st;
    ck_assert_int_eq(crdtdb_db_collect(S1.db, 30000, &st), 0);
    ck_assert_uint_eq(st.records, 1);
    ck_assert_uint_ge(st.peers_left, 1); /* C */
    sync2(&S1, &C); /* resynced: gate = z's remove, past a0..a4 */
    ck_assert_uint_ne(peer_flags(&C, &S1) & CRDTDB_PEER_RESYNCED, 0);
    ck_assert(has(&C, "players", "a0"));
    ck_assert_int_eq(crdtdb_db_clear(C.db), 0);
    sync2(&S2, &C); /* it lands on S2, which never collected */
    sync2(&S2, &C);
    sync2(&S2, &S1);
    for (int i = 0; i < 5; i++) {
        char id[8];
        snprintf(id, sizeof id, "a%d", i);
        ck_assert_msg(has(&C, "players", id) && has(&S1, "players", id) && has(&S2, "players", id),
                      "%s went after C's clear", id);
    }
    replica_free(&S1);
    replica_free(&S2);
    replica_free(&C);
}
END_TEST

/* A resync cut before it ends is asked for whole again next time. */
START_TEST(cut_resync_is_asked_for_again)
{
    replica A, C;
    replica_init(&A, &now_ms, "game");
    replica_init(&C, &now_ms, "game");
    for (int i = 0; i < 160; i++) { /* several deltas of the replicas' 8 KiB */
        char id[16];
        snprintf(id, sizeof id, "p%02d", i);
        put(&A, "add", "players", id, "{\"hp\":1,\"name\":\"a fairly long name to fill deltas\"}");
    }
    put(&C, "add", "players", "cid", "{\"hp\":3}");
    sync2(&A, &C);
    now_ms += 10;
    put(&A, "remove", "players", "p07", NULL);
    now_ms += 60000;
    crdtdb_collect_stats st;
    ck_assert_int_eq(crdtdb_db_collect(A.db, 1000, &st), 0);
    ck_assert_uint_eq(st.records, 1);
    sync_rounds(&A, &C, 5); /* hello, since, RESYNC and a little */
    crdtdb_peer p;
    uint8_t idb[32];
    int found;
    ck_assert_int_eq(crdtdb_db_peer_get(C.db, rid(&A, idb), &p, &found), 0);
    ck_assert_uint_ne(p.flags & CRDTDB_PEER_RESYNC, 0);
    ck_assert(has(&C, "players", "p07"));
    sync2(&A, &C);
    ck_assert(!has(&C, "players", "p07"));
    ck_assert_int_eq(crdtdb_db_peer_get(C.db, rid(&A, idb), &p, &found), 0);
    ck_assert_uint_eq(p.flags & CRDTDB_PEER_RESYNC, 0);
    char *da = dump(&A), *dc = dump(&C);
    ck_assert_str_eq(da, dc);
    free(da);
    free(dc);
    replica_free(&A);
    replica_free(&C);
}
END_TEST

/* Collection that runs while a session is open, leaving its peer out (it
 * fell silent past the age limit), resyncs that peer at the next flush. */
START_TEST(collection_under_a_live_session_resyncs_its_peer)
{
    replica A, B;
    replica_init(&A, &now_ms, "game");
    replica_init(&B, &now_ms, "game");
    put(&A, "add", "players", "ann", "{\"hp\":1}");
    put(&B, "add", "moves", "b1", "{}");
    crdtdb_session *a = open_session(&A, 1, 0), *b = open_session(&B, 0, 0);
    session_settle(a, b, 0);
    ck_assert_int_eq(crdtdb_session_flush(a), 0);
    ck_assert_int_eq(crdtdb_session_flush(b), 0);
    now_ms += 60000;
    put(&A, "remove", "players", "ann", NULL); /* not pumped yet */
    crdtdb_collect_stats st;
    ck_assert_int_eq(crdtdb_db_collect(A.db, 1000, &st), 0);
    ck_assert_uint_eq(st.peers_left, 1);
    ck_assert_uint_eq(st.records, 1);
    ck_assert(has(&B, "players", "ann"));
    ck_assert_int_eq(crdtdb_session_flush(a), 0); /* sees the floor passed it */
    session_settle(a, b, 0);
    ck_assert(!has(&B, "players", "ann"));
    char *da = dump(&A), *db = dump(&B);
    ck_assert_str_eq(da, db);
    free(da);
    free(db);
    crdtdb_session_close(a);
    crdtdb_session_close(b);
    replica_free(&A);
    replica_free(&B);
}
END_TEST

/* A server never takes a RESYNC: its end removes what one client's
 * snapshot lacks, and a server holds what many write. */
START_TEST(server_refuses_a_resync)
{
    replica A, C;
    replica_init(&A, &now_ms, "game");
    replica_init(&C, &now_ms, "game");
    put(&A, "add", "players", "ann", "{\"hp\":1}");
    put(&C, "add", "moves", "c1", "{}");
    crdtdb_session *a = open_session(&A, 1, 0), *c = open_session(&C, 0, 0);
    session_settle(a, c, 0);
    static const uint8_t resync[] = {0, 0, 0, 3, 0x92, 16, 0x7f}; /* [16, 127] */
    ck_assert_int_eq(crdtdb_session_feed(a, resync, sizeof resync), CRDTDB_EROFS);
    ck_assert(crdtdb_session_closed(a));
    ck_assert(has(&A, "players", "ann")); /* nothing removed by it */
    crdtdb_session_close(a);
    crdtdb_session_close(c);
    replica_free(&A);
    replica_free(&C);
}
END_TEST

/* ------------------------------------------------- random schedules */

#define NREP 4
#define NIDS 8

typedef struct world {
    replica r[NREP];
} world;

static int op_at(replica *r, int op, int id, int v)
{
    char key[8], val[64];
    snprintf(key, sizeof key, "r%d", id);
    snprintf(val, sizeof val, "{\"v\":%d,\"n\":{\"k%d\":%d}}", v, v % 3, v);
    crdtdb_buf b = CRDTDB_BUF_INIT;
    const uint8_t *mp = tu_mp(&b, val);
    int rc;
    if (op == 0)
        rc = crdtdb_db_add(r->db, NULL, "players", key, mp, b.len);
    else if (op == 1)
        rc = crdtdb_db_update(r->db, NULL, "players", key, mp, b.len);
    else
        rc = crdtdb_db_remove(r->db, NULL, "players", key);
    crdtdb_buf_free(&b);
    ck_assert_msg(rc == 0 || rc == CRDTDB_ENOTFOUND, "op: %s", crdtdb_db_errmsg(r->db));
    return rc;
}

/* One schedule run on a collecting world W and a twin T that never
 * collects.  With max_age 0 every peer stays in the horizon, so the two
 * must end identical.  With an age limit, silent peers resync and their
 * old writes to collected records are dropped, so W may lose writes (and
 * its later operations then differ from T's); but a record whose newest
 * add or remove performed in W is a remove must end hidden in W. */
static uint64_t schedule(unsigned seed, uint64_t max_age, int steps, int star)
{
    client_flags = star ? 0 : CRDTDB_SESSION_NO_PURGE;
    world W, T;
    srand(seed);
    now_ms = 1700000000000ull; /* the seed alone fixes the run: the clock, */
    for (int i = 0; i < NREP; i++) {
        /* and the identities (LWW tie-breaks, every order by replica id),
         * twins alike */
        uint8_t ks[32] = {0};
        snprintf((char *)ks, sizeof ks, "schedule %u replica %d", seed, i);
        replica_init_keyed(&W.r[i], &now_ms, "game", ks);
        replica_init_keyed(&T.r[i], &now_ms, "game", ks);
        /* a write each, so each proves its id and is remembered by all */
        char key[8];
        snprintf(key, sizeof key, "m%d", i);
        put(&W.r[i], "add", "moves", key, "{}");
        put(&T.r[i], "add", "moves", key, "{}");
    }
    for (int i = 0; i < NREP; i++) /* everyone meets everyone first */
        for (int j = i + 1; j < NREP; j++) {
            sync2(&W.r[i], &W.r[j]);
            sync2(&T.r[i], &T.r[j]);
        }
    uint64_t collected = 0;
    int last_add[NIDS] = {0}; /* W's newest add or remove of each id */
    for (int s = 0; s < steps; s++) {
        now_ms += 1 + (uint64_t)(rand() % 4) * (max_age ? max_age / 3 : 1);
        int what = rand() % 10, i = rand() % NREP, j = rand() % NREP;
        if (star && what >= 5) /* clients sync with replica 0, which collects */
            i = 0, j = j ? j : 1;
        if (what < 5) {
            int op = rand() % 3, id = rand() % NIDS, v = rand() % 1000;
            char key[8];
            snprintf(key, sizeof key, "r%d", id);
            int was = has(&W.r[i], "players", key); /* a remove writes only then */
            int rw = op_at(&W.r[i], op, id, v), rt = op_at(&T.r[i], op, id, v);
            if (op == 0 || (op == 2 && was)) /* every op has its own millisecond */
                last_add[id] = op == 0;
            if (getenv("COLLECT_TRACE"))
                fprintf(stderr, "%d: t=%llu r%d %s r%d v%d -> W %d T %d\n", s,
                        (unsigned long long)(now_ms % 100000), i, op == 0 ? "add" : op == 1 ? "update" : "remove", id, v, rw, rt);
            if (!max_age)
                ck_assert_msg(rw == rt, "seed %u step %d: op %d differs", seed, s, op);
        } else if (what < 8 && i != j) {
            if (j == 0) /* replica 0, which may leave silent peers out, resyncs */
                j = i, i = 0;
            sync2(&W.r[i], &W.r[j]);
            sync2(&T.r[i], &T.r[j]);
            if (getenv("COLLECT_TRACE")) {
                char *a = dump(&W.r[i]), *b = dump(&T.r[i]);
                fprintf(stderr, "%d: t=%llu sync srv %d cli %d\n  W%d %s\n  T%d %s\n", s, (unsigned long long)(now_ms % 100000), i, j, i, a, i, b);
                free(a);
                free(b);
            }
        } else {
            crdtdb_collect_stats st;
            /* only a replica that is always the server of its sessions may
             * leave silent peers out: a client never resyncs its server */
            ck_assert_int_eq(crdtdb_db_collect(W.r[i].db, i ? 0 : max_age, &st), 0);
            collected += st.records;
            if (getenv("COLLECT_TRACE"))
                fprintf(stderr, "%d: t=%llu collect r%d: %llu records, %llu left, floor %llu\n", s,
                        (unsigned long long)(now_ms % 100000), i, (unsigned long long)st.records,
                        (unsigned long long)st.peers_left, (unsigned long long)st.floor);
        }
    }
    for (int round = 0; round < 3; round++) /* everything everywhere; 0 serves */
        for (int i = 0; i < (star ? 1 : NREP); i++)
            for (int j = i + 1; j < NREP; j++) {
                if (getenv("COLLECT_TRACE")) {
                    char *a = dump(&W.r[i]), *b = dump(&W.r[j]);
                    fprintf(stderr, "before final sync srv %d (%p) cli %d (%p)\n  W%d %s\n  W%d %s\n", i, (void *)W.r[i].db, j, (void *)W.r[j].db, i, a, j, b);
                    free(a);
                    free(b);
                }
                sync2(&W.r[i], &W.r[j]);
                sync2(&T.r[i], &T.r[j]);
                if (getenv("COLLECT_TRACE")) {
                    char *a = dump(&W.r[i]), *b = dump(&W.r[j]);
                    fprintf(stderr, "final sync srv %d cli %d\n  W%d %s\n  W%d %s\n", i, j, i, a, j, b);
                    free(a);
                    free(b);
                }
            }
    char *w0 = dump(&W.r[0]), *t0 = dump(&T.r[0]);
    if (getenv("COLLECT_TRACE"))
        fprintf(stderr, "final\n  W %s\n  T %s\n", w0, t0);
    for (int i = 1; i < NREP; i++) {
        char *w = dump(&W.r[i]), *t = dump(&T.r[i]);
        ck_assert_msg(strcmp(w, w0) == 0,
                      "seed %u: collecting replicas differ (W0, then W%d; this schedule alone: "
                      "COLLECT_TRACE=1 CRDTDB_SCHEDULES=1 CRDTDB_SEED=%u):\n%s\n%s",
                      seed, i, seed - (star ? 2000 : max_age ? 1000 : 0), w0, w);
        ck_assert_str_eq(t, t0);
        free(w);
        free(t);
    }
    if (!max_age)
        ck_assert_msg(strcmp(w0, t0) == 0, "seed %u: collection changed the outcome:\n%s\n%s",
                      seed, w0, t0);
    for (int id = 0; id < NIDS; id++) { /* nothing removed comes back */
        char key[8];
        snprintf(key, sizeof key, "r%d", id);
        ck_assert_msg(last_add[id] || !has(&W.r[0], "players", key), "seed %u: %s came back",
                      seed, key);
    }
    free(w0);
    free(t0);
    for (int i = 0; i < NREP; i++) {
        replica_free(&W.r[i]);
        replica_free(&T.r[i]);
    }
    return collected;
}

/* How many schedules each random test runs: 12, or CRDTDB_SCHEDULES (a
 * longer hunt: CRDTDB_SCHEDULES=5000 CK_RUN_CASE=star, or collect for the
 * mesh).  A schedule's seed fixes all of its run (schedule()). */
static unsigned n_schedules(void)
{
    const char *s = getenv("CRDTDB_SCHEDULES");
    return s ? (unsigned)strtoul(s, NULL, 10) : 12;
}

START_TEST(random_schedules_converge_with_collection)
{
    unsigned seed = tu_seed();
    uint64_t collected = 0;
    for (unsigned k = 0, n = n_schedules(); k < n; k++)
        collected += schedule(seed + k, 0, 80, 0);
    ck_assert_uint_gt(collected, 0); /* the schedules did collect */
}
END_TEST

START_TEST(random_schedules_with_silent_peers_bring_nothing_back)
{
    unsigned seed = tu_seed();
    uint64_t collected = 0;
    for (unsigned k = 0, n = n_schedules(); k < n; k++)
        collected += schedule(seed + 1000 + k, 60, 80, 0);
    ck_assert_uint_gt(collected, 0);
}
END_TEST

/* Schedules of the family above that brought a removed record back, found
 * by CI's fresh seeds on 2026-12-05 and 2026-12-06: in a mesh with silent
 * peers and an age limit, a peer resynced by replica 0 took an old add of
 * a collected record from a peer still behind 0's horizon, and passed it
 * to 0 (rule 4 of docs/crdt.md closes it).  Trace one with
 * COLLECT_TRACE=1 CRDTDB_SCHEDULES=1 CRDTDB_SEED=<seed - 1000>. */
START_TEST(silent_peer_mesh_schedule_1796466152_keeps_r5_gone)
{
    schedule(1796466152u, 60, 80, 0);
}
END_TEST

START_TEST(silent_peer_mesh_schedule_1796529104_keeps_r3_gone)
{
    schedule(1796529104u, 60, 80, 0);
}
END_TEST

START_TEST(random_star_of_plain_clients_brings_nothing_back)
{
    unsigned seed = tu_seed();
    uint64_t collected = 0;
    for (unsigned k = 0, n = n_schedules(); k < n; k++)
        collected += schedule(seed + 2000 + k, 60, 80, 1);
    ck_assert_uint_gt(collected, 0);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("collect");
    TCase *tc = tcase_create("collect");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, lone_replica_collects_every_tombstone);
    tcase_add_test(tc, read_phase_failure_ends_cleanly);
    tcase_add_test(tc, fresh_client_of_a_wholly_collected_log_syncs);
    tcase_add_test(tc, many_tombstones_go_in_batches);
    tcase_add_test(tc, tombstone_waits_until_every_peer_holds_it);
    tcase_add_test(tc, silent_peer_leaves_the_horizon_and_resyncs_whole);
    tcase_add_test(tc, claimed_leave_costs_an_offline_client_its_write);
    tcase_add_test(tc, claimed_leave_of_its_server_lets_a_client_collect_what_the_server_lacks);
    tcase_add_test(tc, left_peer_cut_off_in_its_resync_is_resynced_again);
    tcase_add_test(tc, cut_resync_is_asked_for_again);
    tcase_add_test(tc, add_from_behind_under_a_hidden_leaf_shows_it);
    tcase_add_test(tc, add_between_a_remove_and_a_newer_hidden_leaf_shows_the_leaf);
    tcase_add_test(tc, linked_server_keeps_a_live_record);
    tcase_add_test(tc, churning_client_in_the_horizon_is_not_resynced);
    tcase_add_test(tc, restored_old_backup_is_resynced);
    tcase_add_test(tc, client_of_a_copy_created_again_hears_of_a_collected_remove);
    tcase_add_test(tc, old_write_relayed_by_a_resynced_peer_stays_gone);
    tcase_add_test(tc, old_write_from_the_resyncer_is_kept);
    tcase_add_test(tc, plain_client_keeps_an_old_write_from_another_server);
    tcase_add_test(tc, read_only_client_keeps_an_old_write_from_another_server);
    tcase_add_test(tc, cleared_copy_forgets_its_gate);
    tcase_add_test(tc, gated_add_fires_no_event);
    tcase_add_test(tc, gated_add_in_a_batch_goes_back_removed);
    tcase_add_test(tc, silent_peer_mesh_schedule_1796466152_keeps_r5_gone);
    tcase_add_test(tc, silent_peer_mesh_schedule_1796529104_keeps_r3_gone);
    tcase_add_test(tc, handed_off_copy_does_not_pin_the_owners_collection);
    tcase_add_test(tc, left_peer_that_comes_back_is_resynced);
    tcase_add_test(tc, server_refuses_a_resync);
    tcase_add_test(tc, collection_under_a_live_session_resyncs_its_peer);
    tcase_add_test(tc, random_schedules_converge_with_collection);
    tcase_add_test(tc, random_schedules_with_silent_peers_bring_nothing_back);
    suite_add_tcase(s, tc);
    TCase *star = tcase_create("star");
    tcase_set_timeout(star, 600);
    tcase_add_test(star, random_star_of_plain_clients_brings_nothing_back);
    suite_add_tcase(s, star);
    return tu_run(s);
}
