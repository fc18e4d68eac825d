/* Test replicas: environments with a simulated clock, deltas in flight. */
#include "tests/replica.h"

#include <check.h>
#include <lmdb.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crdt/buf.h"
#include "tests/testutil.h"
static uint64_t replica_clock(void *ctx)
{
    replica *r = ctx;
    return (uint64_t)((int64_t)*r->now + r->offset_ms);
}

const char *COLLS[] = {"players", "moves"};

void replica_open(replica *r, const char *db_id)
{
    ck_assert_int_eq(crdtdb_env_open(r->dir, &r->opts, &r->env), 0);
    int rc = crdtdb_db_open(r->env, db_id, &r->db);
    if (rc == CRDTDB_ENODB)
        rc = crdtdb_db_create(r->env, db_id, COLLS, 2, &r->db);
    ck_assert_int_eq(rc, 0);
}

void replica_close(replica *r)
{
    crdtdb_db_close(r->db);
    crdtdb_env_close(r->env);
    r->db = NULL;
    r->env = NULL;
}

static void replica_setup(replica *r, uint64_t *now)
{
    memset(r, 0, sizeof *r);
    r->dir = tu_tmpdir();
    r->now = now;
    crdtdb_env_options_init(&r->opts);
    r->opts.flags = CRDTDB_ENV_NOSYNC; /* durability has its own tests */
    r->opts.clock = replica_clock;
    r->opts.clock_ctx = r;
    r->opts.max_value_size = 4096;
    r->opts.max_path_bytes = 256;
    r->opts.max_delta_size = 4096 + 256 + 4096; /* small: forces splits */
}

void replica_init(replica *r, uint64_t *now, const char *db_id)
{
    replica_setup(r, now);
    replica_open(r, db_id);
}

/* Overwrites the identity the env's first open made (the env closed: LMDB
 * must not be open twice in one process). */
static void write_identity(const char *dir, const uint8_t seed[32])
{
    uint8_t pk[32], sk[64];
    crypto_sign_seed_keypair(pk, sk, seed);
    MDB_env *e;
    MDB_txn *t;
    MDB_dbi meta;
    MDB_val k = {8, (void *)"identity"}, v = {sizeof sk, sk};
    ck_assert_int_eq(mdb_env_create(&e), 0);
    ck_assert_int_eq(mdb_env_set_maxdbs(e, 16), 0);
    ck_assert_int_eq(mdb_env_open(e, dir, MDB_NOTLS, 0600), 0);
    ck_assert_int_eq(mdb_txn_begin(e, NULL, 0, &t), 0);
    ck_assert_int_eq(mdb_dbi_open(t, "meta", 0, &meta), 0);
    ck_assert_int_eq(mdb_put(t, meta, &k, &v, 0), 0);
    ck_assert_int_eq(mdb_txn_commit(t), 0);
    mdb_env_close(e);
}

void replica_init_keyed(replica *r, uint64_t *now, const char *db_id, const uint8_t seed[32])
{
    replica_setup(r, now);
    ck_assert_int_eq(crdtdb_env_open(r->dir, &r->opts, &r->env), 0);
    crdtdb_env_close(r->env);
    r->env = NULL;
    write_identity(r->dir, seed);
    replica_open(r, db_id);
    uint8_t pk[32], sk[64], id[CRDTDB_REPLICA_ID_BYTES];
    crypto_sign_seed_keypair(pk, sk, seed);
    crdtdb_env_replica_id(r->env, id);
    ck_assert_msg(memcmp(id, pk, sizeof pk) == 0, "the identity did not take");
}

void replica_free(replica *r)
{
    replica_close(r);
    tu_rmrf(r->dir);
    free(r->dir);
}


int to_net(void *ctx, const uint8_t *p, size_t len)
{
    net *q = ctx;
    if (q->n == q->cap) {
        q->cap = q->cap ? q->cap * 2 : 16;
        q->msgs = realloc(q->msgs, q->cap * sizeof *q->msgs);
    }
    memset(&q->msgs[q->n], 0, sizeof q->msgs[q->n]);
    crdtdb__buf_set(&q->msgs[q->n++], p, len);
    return 0;
}

void net_free(net *q)
{
    for (size_t i = 0; i < q->n; i++)
        crdtdb_buf_free(&q->msgs[i]);
    free(q->msgs);
    memset(q, 0, sizeof *q);
}

uint64_t received_from(replica *to, replica *from)
{
    crdtdb_peer p;
    int found;
    uint8_t id[CRDTDB_REPLICA_ID_BYTES];
    crdtdb_env_replica_id(from->env, id);
    ck_assert_int_eq(crdtdb_db_peer_get(to->db, id, &p, &found), 0);
    return p.received;
}

/* from exports what `to` lacks (by to's watermark) and to applies it all. */
size_t sync_pair(replica *from, replica *to)
{
    net q = {0};
    uint8_t id[CRDTDB_REPLICA_ID_BYTES];
    crdtdb_env_replica_id(to->env, id);
    ck_assert_int_eq(crdtdb_db_export(from->db, received_from(to, from), id,
                                      to_net, &q, NULL),
                     0);
    size_t applied = 0;
    for (size_t i = 0; i < q.n; i++) {
        crdtdb_apply_info info;
        int rc = crdtdb_db_apply(to->db, q.msgs[i].data, q.msgs[i].len, &info);
        ck_assert_msg(rc == 0, "apply: %s", crdtdb_db_errmsg(to->db));
        applied += info.applied;
    }
    net_free(&q);
    return applied;
}

void put_in(replica *r, crdtdb_txn *t, const char *op, const char *coll, const char *id,
            const char *json)
{
    crdtdb_buf b = CRDTDB_BUF_INIT;
    int rc;
    if (strcmp(op, "remove") == 0) {
        rc = crdtdb_db_remove(r->db, t, coll, id);
    } else {
        tu_mp(&b, json);
        rc = strcmp(op, "add") == 0 ? crdtdb_db_add(r->db, t, coll, id, b.data, b.len)
                                    : crdtdb_db_update(r->db, t, coll, id, b.data, b.len);
    }
    ck_assert_msg(rc == 0, "%s %s: %s", op, id, crdtdb_db_errmsg(r->db));
    crdtdb_buf_free(&b);
}

void put(replica *r, const char *op, const char *coll, const char *id, const char *json)
{
    put_in(r, NULL, op, coll, id, json);
}

static int dump_cb(void *ctx, const char *id, const uint8_t *v, size_t len)
{
    crdtdb_buf *out = ctx;
    char *j = tu_json(v, len);
    crdtdb__buf_append(out, id, strlen(id));
    crdtdb__buf_append(out, "=", 1);
    crdtdb__buf_append(out, j, strlen(j));
    crdtdb__buf_append(out, ";", 1);
    free(j);
    return 0;
}

/* Everything visible in a replica, as one string (caller frees). */
char *dump(replica *r)
{
    crdtdb_buf out = CRDTDB_BUF_INIT;
    for (int c = 0; c < 2; c++) {
        crdtdb__buf_append(&out, COLLS[c], strlen(COLLS[c]));
        crdtdb__buf_append(&out, ":", 1);
        ck_assert_int_eq(crdtdb_db_query(r->db, NULL, COLLS[c], NULL, 0, dump_cb, &out), 0);
    }
    crdtdb__buf_append(&out, "", 1);
    return (char *)out.data;
}

const char *diffat(const char *a, const char *b)
{
    static char m[400];
    size_t i = 0;
    while (a[i] && a[i] == b[i])
        i++;
    size_t s = i > 60 ? i - 60 : 0;
    snprintf(m, sizeof m, "at %zu: A ...%.140s\nR ...%.140s", i, a + s, b + s);
    return m;
}


size_t session_move(crdtdb_session *from, crdtdb_session *to)
{
    size_t len;
    const uint8_t *p = crdtdb_session_output(from, &len);
    if (!len || crdtdb_session_closed(to))
        return 0;
    ck_assert_msg(crdtdb_session_feed(to, p, len) == 0, "feed: %s", crdtdb_session_errmsg(to));
    crdtdb_session_consume(from, len);
    return len;
}

void session_settle(crdtdb_session *a, crdtdb_session *b, int rounds)
{
    for (int i = 0; !rounds || i < rounds; i++) {
        size_t moved = session_move(a, b) + session_move(b, a);
        if (!moved) {
            crdtdb_session_pump(a);
            crdtdb_session_pump(b);
            size_t la, lb;
            crdtdb_session_output(a, &la);
            crdtdb_session_output(b, &lb);
            if (!la && !lb)
                break;
        }
        ck_assert_msg(i < 100000, "sync does not settle");
    }
}
