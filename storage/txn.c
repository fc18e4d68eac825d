/* Transactions: read snapshots and all-or-nothing write batches. */
#include <stdlib.h>
#include <string.h>

#include "crdt/hlc.h"
#include "storage/recs.h"

/* Sequences reserved ahead for early relay (crdtdb_db_set_precommit):
 * renewed by the commit that comes within half a block of the end. */
#define RESERVE_BLOCK 1024u

int crdtdb__reservation_get(crdtdb_env *env, MDB_txn *mt, uint32_t num, uint64_t *upto,
                            uint64_t *owner)
{
    uint8_t kb[5];
    MDB_val k = crdtdb__dbinfo_key(kb, num, 'n'), v;
    *upto = *owner = 0;
    int mrc = mdb_get(mt, env->dbi_dbinfo, &k, &v);
    if (mrc == MDB_NOTFOUND)
        return 0;
    if (mrc)
        return mrc;
    if (v.mv_size != 8 && v.mv_size != 16)
        return MDB_CORRUPTED;
    *upto = crdtdb__get_u64(v.mv_data);
    /* 8 bytes (written before the token): no one's, so every write jumps */
    *owner = v.mv_size == 16 ? crdtdb__get_u64((const uint8_t *)v.mv_data + 8) : 0;
    return 0;
}

static int reservation_put(crdtdb_txn *t, uint64_t upto)
{
    crdtdb_db *db = t->db;
    uint8_t kb[5], vb[16];
    crdtdb__put_u64(vb, upto);
    crdtdb__put_u64(vb + 8, db->token);
    MDB_val k = crdtdb__dbinfo_key(kb, db->num, 'n'), v = {sizeof vb, vb};
    return crdtdb__mdb_err(mdb_put(t->mt, db->env->dbi_dbinfo, &k, &v, 0));
}

/* A read inside the precommit hook: it sees the write about to commit,
 * through the write's own LMDB transaction, which it neither ends nor
 * owns (nor the origins' cache, which stays the write's). */
static int borrow(crdtdb_db *db, unsigned flags, crdtdb_txn **out)
{
    crdtdb_txn *t = calloc(1, sizeof *t);
    if (!t)
        return crdtdb__db_seterr(db, CRDTDB_ENOMEM, "out of memory");
    t->db = db;
    t->flags = flags;
    t->mt = db->txn->mt;
    t->borrowed = 1;
    *out = t;
    return 0;
}

/* A write's start: past the reservation when sequences in it may have
 * gone out early without being stored — always, but on the handle with the
 * hook that made the reservation (its token), unless a commit of it failed
 * (db->jump): no other handle, in this process or another, can know what
 * that one sent. */
static int reservation_read(crdtdb_txn *t)
{
    crdtdb_db *db = t->db;
    int rc = crdtdb__mdb_err(
        crdtdb__reservation_get(db->env, t->mt, db->num, &t->reserved, &t->res_owner));
    int mine = db->precommit && !db->jump && t->res_owner == db->token;
    t->stored0 = t->seq0;
    if (!rc && t->reserved > t->seq0 && !mine)
        t->seq0 = t->reserved;
    return rc;
}

static int txn_begin_call(crdtdb_db *db, unsigned flags, crdtdb_txn **out)
{
    if (!db || !out)
        return CRDTDB_EINVAL;
    *out = NULL;
    crdtdb_env *env = db->env;
    int write = !(flags & CRDTDB_TXN_RDONLY);
    if (db->txn && !write && db->in_precommit)
        return borrow(db, flags, out);
    if (db->txn)
        return crdtdb__db_seterr(db, CRDTDB_EBUSY,
                                 "a transaction is already open on this handle");
    if (write && (env->opts.flags & CRDTDB_ENV_RDONLY))
        return crdtdb__db_seterr(db, CRDTDB_EROFS, "Read only access");
    crdtdb_txn *t = calloc(1, sizeof *t);
    if (!t)
        return crdtdb__db_seterr(db, CRDTDB_ENOMEM, "out of memory");
    t->db = db;
    t->flags = flags;
    crdtdb__origins_begin(&db->orig, t);
    int mrc = crdtdb__mt_begin(env, write ? 0 : MDB_RDONLY, &t->mt);
    int rc = crdtdb__mdb_err(mrc);
    if (!rc && write) {
        rc = crdtdb__seq_read(env, t->mt, db->num, &t->seq0);
        if (rc == CRDTDB_EIO)
            rc = CRDTDB_ENODB; /* dropped under us */
        if (!rc)
            rc = reservation_read(t);
    }
    if (!rc && write) {
        t->seq = t->seq0;
        /* Write txns are serialized by LMDB, so the clock can live in the
         * txn; start it past what any process has stored. */
        MDB_val k = {3, (void *)"hlc"}, v;
        pthread_mutex_lock(&env->lock);
        t->hlc = env->hlc;
        pthread_mutex_unlock(&env->lock);
        if (mdb_get(t->mt, env->dbi_meta, &k, &v) == 0 && v.mv_size == 8 &&
            crdtdb__get_u64(v.mv_data) > t->hlc)
            t->hlc = crdtdb__get_u64(v.mv_data);
        t->hlc0 = t->hlc;
        crypto_generichash_init(&t->fp, NULL, 0, 32);
        /* Changes other handles committed since we last looked are reported
         * before ours, so observers see them in order and exactly once. */
        if (db->observers && t->seq0 > db->seen_seq)
            rc = crdtdb__events_from_log(db, t, t->mt, t->seq0);
    }
    if (rc) {
        if (t->mt)
            crdtdb__mt_abort(env, t->mt);
        crdtdb__origins_ended(&db->orig, t);
        free(t->events); /* events_from_log may have begun */
        crdtdb_buf_free(&t->arena);
        free(t);
        return crdtdb__db_seterr(db, rc, "begin transaction: %s",
                                 mrc ? crdtdb__mdb_str(mrc) : crdtdb_strerror(rc));
    }
    db->txn = t;
    *out = t;
    return 0;
}

int crdtdb_txn_begin(crdtdb_db *db, unsigned flags, crdtdb_txn **out)
{
    uint64_t m = crdtdb__db_enter(db);
    return crdtdb__db_exit(db, m, txn_begin_call(db, flags, out));
}

static void txn_free(crdtdb_txn *t)
{
    crdtdb__held_free(&t->held);
    if (t->borrowed) { /* nothing of the write's is its */
        free(t);
        return;
    }
    crdtdb__origins_ended(&t->db->orig, t); /* after committed: keeps them */
    if (t->db->txn == t) /* an observer may have begun the next one */
        t->db->txn = NULL;
    free(t->events);
    crdtdb_buf_free(&t->arena);
    free(t);
}

void crdtdb_txn_abort(crdtdb_txn *t)
{
    if (!t)
        return;
    if (t->mt && !t->borrowed)
        crdtdb__mt_abort(t->db->env, t->mt);
    txn_free(t);
}

/* A commit failed after its precommit hook sent its sequences: this
 * handle starts its next write past the reservation (any other handle does
 * anyway) and the deltas made from the write (the shared cache) go.  Its
 * stamps are not given again either: commit_call raised the environment's
 * clock past them before LMDB's write lock was let go. */
static void burned(crdtdb_db *db)
{
    db->jump = 1; /* (other handles jump anyway: the token is not theirs) */
    crdtdb__shared_free(db->shared);
    db->shared = NULL;
}

/* The environment's clock, which the next write transaction starts from,
 * raised past stamp hlc. */
static void clock_past(crdtdb_env *env, uint64_t hlc)
{
    pthread_mutex_lock(&env->lock);
    if (hlc > env->hlc)
        env->hlc = hlc;
    pthread_mutex_unlock(&env->lock);
}

static int commit_call(crdtdb_txn *t)
{
    crdtdb_db *db = t->db;
    crdtdb_env *env = db->env;
    if (t->flags & CRDTDB_TXN_RDONLY) {
        crdtdb_txn_abort(t);
        return 0;
    }
    int rc = t->failed;
    if (rc) { /* the failed operation's message, whatever came after it */
        crdtdb__db_seterr(db, rc, "%s", db->failmsg);
        crdtdb_txn_abort(t);
        return rc;
    }
    int mrc = 0, unjumped = 0;
    if (t->seq != t->seq0 && (rc = crdtdb__chain_commit(t))) {
        crdtdb_txn_abort(t);
        return crdtdb__db_seterr(db, rc, "commit: %s", crdtdb_strerror(rc));
    }
    if (t->seq0 != t->stored0 && t->seq == t->seq0) { /* jumped, numbered nothing: no gap */
        t->seq = t->seq0 = t->stored0;
        unjumped = 1; /* so the next write still jumps */
    }
    if (t->seq != t->seq0) {
        uint8_t k[5], sv[8];
        crdtdb__put_u64(sv, t->seq);
        MDB_val key = crdtdb__dbinfo_key(k, db->num, 's'), val = {8, sv};
        mrc = mdb_put(t->mt, env->dbi_dbinfo, &key, &val, 0);
    }
    if (!mrc && db->precommit && t->seq != t->seq0 && t->seq + RESERVE_BLOCK / 2 > t->reserved)
        rc = reservation_put(t, t->seq + RESERVE_BLOCK);
    if (rc) {
        crdtdb_txn_abort(t);
        return crdtdb__db_seterr(db, rc, "commit: %s", crdtdb_strerror(rc));
    }
    if (!mrc && t->hlc != t->hlc0) {
        uint8_t hv[8];
        crdtdb__put_u64(hv, t->hlc);
        MDB_val key = {3, (void *)"hlc"}, val = {8, hv};
        mrc = mdb_put(t->mt, env->dbi_meta, &key, &val, 0);
    }
    /* sent early: only sequences an earlier commit reserved; and not stamps
     * of ours ahead of the wall clock, which a later process (its clock
     * from the stored one and the wall) could issue again were this lost */
    int early = !mrc && db->precommit && t->seq != t->seq0 && t->seq <= t->reserved &&
                t->res_owner == db->token &&
                (!t->ticked || crdtdb__hlc_ms(t->hlc) <= crdtdb__now_ms(env));
    if (early) {
        /* stamps sent are stamps given, whether or not the commit holds:
         * raise the environment's clock now, while LMDB's write lock keeps
         * every other write from beginning (txn_begin reads it then) */
        clock_past(env, t->hlc);
        db->in_precommit = 1;
        db->precommit(db->precommit_ctx, db, t->seq0, t->seq);
        db->in_precommit = 0;
    }
    if (!mrc) {
        mrc = crdtdb__mt_commit(env, t->mt);
    } else {
        crdtdb__mt_abort(env, t->mt);
    }
    t->mt = NULL;
    if (mrc && early)
        burned(db);
    if (mrc) {
        rc = crdtdb__mdb_err(mrc);
        crdtdb__db_seterr(db, rc, "commit: %s%s; nothing of this write was stored",
                          crdtdb__mdb_str(mrc), crdtdb__disk_full(env) ? " (the disk is full)" : "");
        txn_free(t);
        return rc;
    }
    crdtdb__origins_committed(&db->orig, t);
    if (db->precommit && !unjumped)
        db->jump = 0; /* past the reservation, or nothing was sent beyond it */
    if (!early)
        clock_past(env, t->hlc);
    int moved = t->seq0 > db->seen_seq || t->seq != t->seq0;
    db->seen_seq = t->seq;
    db->txn = NULL; /* observers may begin their own transactions */
    crdtdb__events_dispatch(db, t, moved);
    txn_free(t);
    return 0;
}

int crdtdb_txn_commit(crdtdb_txn *t)
{
    if (!t)
        return CRDTDB_EINVAL;
    crdtdb_db *db = t->db; /* t is gone after the call */
    uint64_t m = crdtdb__db_enter(db);
    return crdtdb__db_exit(db, m, commit_call(t));
}

void crdtdb__txn_fail(crdtdb_txn *t, int rc)
{
    crdtdb_db *db = t->db;
    if (!rc || t->failed || (t->flags & CRDTDB_TXN_RDONLY))
        return;
    t->failed = rc;
    if (!crdtdb__db_msg_since(db, rc, db->mark)) /* a path that left no message of its own */
        crdtdb__db_seterr(db, rc, "%s", crdtdb_strerror(rc));
    memcpy(db->failmsg, db->errmsg, sizeof db->failmsg);
}

uint64_t crdtdb__txn_tick(crdtdb_txn *t)
{
    t->ticked = 1;
    return crdtdb__hlc_tick(&t->hlc, crdtdb__now_ms(t->db->env));
}

/* Refuses a local write when the copy is marked read-only (a server
 * granted only server-to-client): read once per transaction, so every
 * handle of every process sees the mark (crdtdb_db_mark_readonly). */
int crdtdb__txn_readonly(crdtdb_txn *t, int *ro)
{
    crdtdb_db *db = t->db;
    if (!t->ro_known) {
        uint8_t k[5];
        MDB_val key = crdtdb__dbinfo_key(k, db->num, 'R'), v;
        int mrc = mdb_get(t->mt, db->env->dbi_dbinfo, &key, &v);
        if (mrc && mrc != MDB_NOTFOUND)
            return crdtdb__db_seterr(db, crdtdb__mdb_err(mrc), "read: %s", crdtdb__mdb_str(mrc));
        t->ro = mrc == 0;
        t->ro_known = 1;
    }
    *ro = t->ro;
    return 0;
}

static int check_mark(crdtdb_txn *t)
{
    int ro = 0, rc = crdtdb__txn_readonly(t, &ro);
    return rc ? rc : ro ? crdtdb__db_seterr(t->db, CRDTDB_EROFS, "Read only access") : 0;
}

int crdtdb__txn_get(crdtdb_db *db, crdtdb_txn *txn, int write,
                    crdtdb_txn **out, int *own)
{
    int rc;
    if (txn) {
        if (txn->db != db)
            return crdtdb__db_seterr(db, CRDTDB_EINVAL,
                                     "transaction belongs to another database handle");
        if (write && (txn->flags & CRDTDB_TXN_RDONLY))
            return crdtdb__db_seterr(db, CRDTDB_EROFS, "Read only access");
        if (write && (rc = check_mark(txn))) {
            crdtdb__txn_fail(txn, rc); /* the batch is all or nothing */
            return rc;
        }
        *out = txn;
        *own = 0;
        return 0;
    }
    *own = 1;
    if ((rc = crdtdb_txn_begin(db, write ? 0 : CRDTDB_TXN_RDONLY, out)))
        return rc;
    if (write && (rc = check_mark(*out))) {
        crdtdb_txn_abort(*out);
        *out = NULL;
        return rc;
    }
    return 0;
}

static int mark_readonly_call(crdtdb_db *db, int readonly)
{
    if (!db)
        return CRDTDB_EINVAL;
    crdtdb_txn *t;
    int rc = crdtdb_txn_begin(db, 0, &t);
    if (rc)
        return rc;
    uint8_t k[5];
    MDB_val key = crdtdb__dbinfo_key(k, db->num, 'R'), v = {1, (void *)"1"};
    int mrc = readonly ? mdb_put(t->mt, db->env->dbi_dbinfo, &key, &v, 0)
                       : mdb_del(t->mt, db->env->dbi_dbinfo, &key, NULL);
    if (mrc && mrc != MDB_NOTFOUND) {
        crdtdb_txn_abort(t);
        return crdtdb__db_seterr(db, crdtdb__mdb_err(mrc), "write: %s", crdtdb__mdb_str(mrc));
    }
    return crdtdb_txn_commit(t);
}

int crdtdb_db_mark_readonly(crdtdb_db *db, int readonly)
{
    uint64_t m = crdtdb__db_enter(db);
    return crdtdb__db_exit(db, m, mark_readonly_call(db, readonly));
}

static int marked_readonly_call(crdtdb_db *db, int *readonly)
{
    if (!db || !readonly)
        return CRDTDB_EINVAL;
    crdtdb_txn *t;
    int rc = crdtdb_txn_begin(db, CRDTDB_TXN_RDONLY, &t);
    if (rc)
        return rc;
    rc = check_mark(t);
    *readonly = rc == CRDTDB_EROFS;
    crdtdb_txn_abort(t);
    return rc == CRDTDB_EROFS ? 0 : rc;
}

int crdtdb_db_marked_readonly(crdtdb_db *db, int *readonly)
{
    uint64_t m = crdtdb__db_enter(db);
    return crdtdb__db_exit(db, m, marked_readonly_call(db, readonly));
}

int crdtdb__txn_end(crdtdb_txn *t, int own, int rc)
{
    if (!own) {
        crdtdb__txn_fail(t, rc);
        return rc;
    }
    if (rc) {
        crdtdb_txn_abort(t);
        return rc;
    }
    return crdtdb_txn_commit(t);
}

crdtdb_db *crdtdb_txn_db(const crdtdb_txn *txn) { return txn ? txn->db : NULL; }

void crdtdb_db_set_precommit(crdtdb_db *db, crdtdb_precommit_fn fn, void *ctx)
{
    if (!db)
        return;
    db->precommit = fn;
    db->precommit_ctx = ctx;
    if (fn && !db->token)
        while (!db->token)
            randombytes_buf(&db->token, sizeof db->token);
}
