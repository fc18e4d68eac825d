/* Databases: many per environment, each a compact number in every key.
 * Also the base helpers every storage file calls on a handle: its error
 * message and the one exit of public calls (crdtdb__db_exit), id checks,
 * collection lookup, the sequence read. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crdt/buf.h"
#include "storage/internal.h"

int crdtdb__db_seterr(crdtdb_db *db, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(db->errmsg, sizeof db->errmsg, fmt, ap);
    va_end(ap);
    db->errcode = code;
    db->msgno++;
    return code;
}

int crdtdb__db_fail(crdtdb_db *db, uint64_t m, int rc)
{
    /* a message written since the call began, for this code, is the
     * call's own (or a nested call's it passes on); any other is not */
    if (rc < 0 && !crdtdb__db_msg_since(db, rc, m))
        crdtdb__db_seterr(db, rc, "%s", crdtdb_strerror(rc));
    return rc;
}

const char *crdtdb_db_errmsg(const crdtdb_db *db)
{
    return db ? db->errmsg : "no database";
}

/* The getters take NULL (and give NULL or 0): nothing crashes. */
const char *crdtdb_db_id(const crdtdb_db *db) { return db ? db->id : NULL; }

crdtdb_env *crdtdb_db_env(const crdtdb_db *db) { return db ? db->env : NULL; }

size_t crdtdb_db_collection_count(const crdtdb_db *db) { return db ? db->ncoll : 0; }

const char *crdtdb_db_collection_name(const crdtdb_db *db, size_t i)
{
    return db && i < db->ncoll ? db->colls[i] : NULL;
}

int crdtdb__id_check(const char *s, int strict)
{
    if (!s)
        return CRDTDB_EBADID;
    size_t n = strlen(s);
    if (n == 0 || n > CRDTDB_ID_MAX || !crdtdb__utf8_valid((const uint8_t *)s, n))
        return CRDTDB_EBADID;
    if (strict)
        for (size_t i = 0; i < n; i++)
            if ((uint8_t)s[i] < 0x20 || s[i] == 0x7f)
                return CRDTDB_EBADID;
    return 0;
}

int crdtdb__db_coll(crdtdb_db *db, const char *name)
{
    if (name)
        for (uint16_t i = 0; i < db->ncoll; i++)
            if (strcmp(db->colls[i], name) == 0)
                return i;
    return crdtdb__db_seterr(db, CRDTDB_ENOCOLL, "Collection '%s' not found",
                             name ? name : "(null)");
}

int crdtdb__seq_read(crdtdb_env *env, MDB_txn *mt, uint32_t num, uint64_t *seq)
{
    uint8_t k[5];
    MDB_val key = crdtdb__dbinfo_key(k, num, 's'), v;
    int rc = mdb_get(mt, env->dbi_dbinfo, &key, &v);
    if (rc)
        return crdtdb__mdb_err(rc);
    if (v.mv_size != 8)
        return CRDTDB_ECORRUPT;
    *seq = crdtdb__get_u64(v.mv_data);
    return 0;
}

/* Builds a handle from the stored collection list. */
static int db_load(crdtdb_env *env, MDB_txn *mt, const char *id, uint32_t num,
                   crdtdb_db **out)
{
    uint8_t k[5];
    MDB_val key = crdtdb__dbinfo_key(k, num, 'c'), v;
    int rc = mdb_get(mt, env->dbi_dbinfo, &key, &v);
    if (rc)
        return rc == MDB_NOTFOUND ? CRDTDB_ECORRUPT : crdtdb__mdb_err(rc);
    crdtdb_db *db = calloc(1, sizeof *db);
    if (!db)
        return CRDTDB_ENOMEM;
    db->env = env;
    db->num = num;
    db->jump = 1; /* an earlier process may have sent sequences it never stored */
    snprintf(db->id, sizeof db->id, "%s", id);
    crdtdb__record_init(&db->rec);
    crdtdb__origins_init(&db->orig, env); /* draws the SipHash key */
    /* One secret key serves every origin index of this handle: exports copy it
     * rather than draw their own (a getrandom per delta). */
    memcpy(db->rec.oidx.hkey, db->orig.hkey, sizeof db->orig.hkey);
    crdtdb__flat_init(&db->flat);
    crdtdb__delta_init(&db->delta);
    if (!msgpack_zone_init(&db->zone, 4096)) {
        free(db);
        return CRDTDB_ENOMEM;
    }
    const uint8_t *p = v.mv_data, *end = p + v.mv_size;
    uint16_t n = 0;
    for (const uint8_t *q = p; q < end; q += 1 + *q)
        n++;
    db->colls = calloc(n ? n : 1, sizeof *db->colls);
    rc = db->colls ? 0 : CRDTDB_ENOMEM;
    for (; !rc && p < end; p += 1 + *p) {
        if ((size_t)(end - p) < 1u + *p) {
            rc = CRDTDB_ECORRUPT;
            break;
        }
        char *name = malloc((size_t)*p + 1);
        if (!name) {
            rc = CRDTDB_ENOMEM;
            break;
        }
        memcpy(name, p + 1, *p);
        name[*p] = 0;
        db->colls[db->ncoll++] = name;
    }
    if (!rc)
        rc = crdtdb__seq_read(env, mt, num, &db->seen_seq);
    if (rc) {
        crdtdb_db_close(db);
        return rc;
    }
    pthread_mutex_lock(&env->lock);
    db->next = env->dbs;
    env->dbs = db;
    pthread_mutex_unlock(&env->lock);
    *out = db;
    return 0;
}

static int lookup(crdtdb_env *env, MDB_txn *mt, const char *id, uint32_t *num)
{
    MDB_val k = {strlen(id), (void *)id}, v;
    int rc = mdb_get(mt, env->dbi_dbs, &k, &v);
    if (rc == MDB_NOTFOUND)
        return CRDTDB_ENODB;
    if (rc)
        return crdtdb__mdb_err(rc);
    if (v.mv_size != 4)
        return CRDTDB_ECORRUPT;
    *num = crdtdb__get_u32(v.mv_data);
    return 0;
}

static int bad_id(crdtdb_env *env, const char *what, const char *id)
{
    crdtdb__env_seterr(env, CRDTDB_EBADID,
                       "invalid %s '%s': 1..255 bytes of UTF-8 without "
                       "control characters",
                       what, id ? id : "(null)");
    return CRDTDB_EBADID;
}

static int tomb_take(crdtdb_env *env, MDB_txn *mt, const char *id, uint32_t num);

static int create_call(crdtdb_env *env, const char *id, const char *const *colls,
                       size_t ncoll, crdtdb_db **out)
{
    if (!env || !out)
        return CRDTDB_EINVAL;
    *out = NULL;
    if (crdtdb__id_check(id, 1))
        return bad_id(env, "database id", id);
    if (env->opts.flags & CRDTDB_ENV_RDONLY) {
        crdtdb__env_seterr(env, CRDTDB_EROFS, "Read only access");
        return CRDTDB_EROFS;
    }
    if (ncoll == 0 || !colls) {
        crdtdb__env_seterr(env, CRDTDB_EBADID, "a database needs at least one collection");
        return CRDTDB_EBADID;
    }
    if (ncoll > 65535) {
        crdtdb__env_seterr(env, CRDTDB_ELIMIT, "more than 65535 collections");
        return CRDTDB_ELIMIT;
    }
    crdtdb_buf cl = CRDTDB_BUF_INIT;
    int rc = 0;
    for (size_t i = 0; i < ncoll && !rc; i++) {
        if (crdtdb__id_check(colls[i], 1)) {
            crdtdb_buf_free(&cl);
            return bad_id(env, "collection name", colls[i]);
        }
        for (size_t j = 0; j < i; j++)
            if (strcmp(colls[i], colls[j]) == 0) {
                crdtdb_buf_free(&cl);
                crdtdb__env_seterr(env, CRDTDB_EBADID, "duplicate collection '%s'", colls[i]);
                return CRDTDB_EBADID;
            }
        uint8_t n = (uint8_t)strlen(colls[i]);
        rc = crdtdb__buf_append(&cl, &n, 1);
        if (!rc)
            rc = crdtdb__buf_append(&cl, colls[i], n);
    }
    MDB_txn *mt = NULL;
    int mrc = rc ? 0 : crdtdb__mt_begin(env, 0, &mt);
    if (mrc)
        rc = crdtdb__mdb_err(mrc);
    uint32_t num = 0;
    if (!rc) {
        rc = lookup(env, mt, id, &num);
        if (rc == 0) {
            rc = CRDTDB_EEXIST;
            crdtdb__env_seterr(env, rc, "Database '%s' already exists", id);
        } else if (rc == CRDTDB_ENODB) {
            rc = 0;
        }
    }
    if (!rc) {
        MDB_val k = {7, (void *)"next_db"}, v;
        mrc = mdb_get(mt, env->dbi_meta, &k, &v);
        if (!mrc && v.mv_size == 4) {
            num = crdtdb__get_u32(v.mv_data);
            uint8_t nb[4], sb[8] = {0}, kb[5];
            crdtdb__put_u32(nb, num + 1);
            MDB_val nv = {4, nb};
            mrc = mdb_put(mt, env->dbi_meta, &k, &nv, 0);
            crdtdb__put_u32(nb, num);
            MDB_val ik = {strlen(id), (void *)id}, iv = {4, nb};
            if (!mrc)
                mrc = mdb_put(mt, env->dbi_dbs, &ik, &iv, 0);
            MDB_val ck = crdtdb__dbinfo_key(kb, num, 'c'), cv = {cl.len, cl.data};
            if (!mrc)
                mrc = mdb_put(mt, env->dbi_dbinfo, &ck, &cv, 0);
            MDB_val sk = crdtdb__dbinfo_key(kb, num, 's'), sv = {8, sb};
            if (!mrc)
                mrc = mdb_put(mt, env->dbi_dbinfo, &sk, &sv, 0);
            if (!mrc)
                mrc = tomb_take(env, mt, id, num);
        } else if (!mrc) {
            mrc = MDB_CORRUPTED;
        }
        rc = crdtdb__mdb_err(mrc);
        if (rc)
            crdtdb__env_seterr(env, rc, "create database '%s': %s", id, crdtdb__mdb_str(mrc));
    }
    if (!rc)
        rc = crdtdb__mdb_err(crdtdb__mt_commit(env, mt));
    else if (mt)
        crdtdb__mt_abort(env, mt);
    crdtdb_buf_free(&cl);
    if (rc)
        return rc;
    return crdtdb_db_open(env, id, out);
}

int crdtdb_db_create(crdtdb_env *env, const char *id, const char *const *colls,
                     size_t ncoll, crdtdb_db **out)
{
    uint64_t m = crdtdb__env_enter(env);
    return crdtdb__env_exit(env, m, create_call(env, id, colls, ncoll, out));
}

static int open_call(crdtdb_env *env, const char *id, crdtdb_db **out)
{
    if (!env || !out)
        return CRDTDB_EINVAL;
    *out = NULL;
    if (crdtdb__id_check(id, 1))
        return bad_id(env, "database id", id);
    MDB_txn *mt;
    int rc = crdtdb__mdb_err(crdtdb__mt_begin(env, MDB_RDONLY, &mt));
    if (rc)
        return rc;
    uint32_t num = 0;
    rc = lookup(env, mt, id, &num);
    if (!rc)
        rc = db_load(env, mt, id, num, out);
    crdtdb__mt_abort(env, mt);
    if (rc == CRDTDB_ENODB)
        crdtdb__env_seterr(env, rc, "Database '%s' not found", id);
    else if (rc)
        crdtdb__env_seterr(env, rc, "open database '%s': %s", id, crdtdb_strerror(rc));
    return rc;
}

int crdtdb_db_open(crdtdb_env *env, const char *id, crdtdb_db **out)
{
    uint64_t m = crdtdb__env_enter(env);
    return crdtdb__env_exit(env, m, open_call(env, id, out));
}

void crdtdb_db_close(crdtdb_db *db)
{
    if (!db)
        return;
    crdtdb_env *env = db->env;
    pthread_mutex_lock(&env->lock);
    for (crdtdb_db **pp = &env->dbs; *pp; pp = &(*pp)->next)
        if (*pp == db) {
            *pp = db->next;
            break;
        }
    pthread_mutex_unlock(&env->lock);
    crdtdb__observers_free(db);
    for (uint16_t i = 0; i < db->ncoll; i++)
        free(db->colls[i]);
    free(db->colls);
    crdtdb__record_free(&db->rec);
    crdtdb__origins_free(&db->orig);
    crdtdb__flat_free(&db->flat);
    crdtdb__delta_free(&db->delta);
    crdtdb__shared_free(db->shared);
    msgpack_zone_destroy(&db->zone);
    crdtdb_buf_free(&db->blob);
    crdtdb_buf_free(&db->vis);
    crdtdb_buf_free(&db->enc);
    free(db->voff);
    free(db);
}

static int list_call(crdtdb_env *env, crdtdb_db_list_cb cb, void *ctx)
{
    if (!env || !cb)
        return CRDTDB_EINVAL;
    MDB_txn *mt;
    MDB_cursor *c;
    int rc = crdtdb__mt_begin(env, MDB_RDONLY, &mt);
    if (rc)
        return crdtdb__mdb_err(rc);
    rc = mdb_cursor_open(mt, env->dbi_dbs, &c);
    if (rc) {
        crdtdb__mt_abort(env, mt);
        return crdtdb__mdb_err(rc);
    }
    MDB_val k, v;
    char name[CRDTDB_ID_MAX + 1];
    int out = 0;
    for (rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        if (k.mv_size > CRDTDB_ID_MAX)
            continue;
        memcpy(name, k.mv_data, k.mv_size);
        name[k.mv_size] = 0;
        if ((out = cb(ctx, name)) != 0)
            break;
    }
    if (!out && rc != MDB_NOTFOUND)
        out = crdtdb__mdb_err(rc);
    mdb_cursor_close(c);
    crdtdb__mt_abort(env, mt);
    return out;
}

int crdtdb_db_list(crdtdb_env *env, crdtdb_db_list_cb cb, void *ctx)
{
    uint64_t m = crdtdb__env_enter(env);
    return crdtdb__env_exit(env, m, list_call(env, cb, ctx));
}

/*
 * A dropped database leaves its place in its history behind, in meta
 * "drop:" + id -> u64 last sequence | u64 fingerprint sequence | the
 * fingerprint (16 bytes) | u64 when (the env's clock).  Peers remember how
 * far this replica's history of that id went; a database created again
 * under the id goes on from there, so they see one history and not a copy
 * forking it (EFORK).  crdtdb_env_tombs_prune bounds how long they stay.
 */
#define TOMB_PREFIX "drop:"
#define TOMB_BYTES (24 + CRDTDB__FP_BYTES)

static MDB_val tomb_key(char k[sizeof TOMB_PREFIX + CRDTDB_ID_MAX], const char *id)
{
    size_t n = strlen(id);
    memcpy(k, TOMB_PREFIX, sizeof TOMB_PREFIX - 1);
    memcpy(k + sizeof TOMB_PREFIX - 1, id, n);
    MDB_val v = {sizeof TOMB_PREFIX - 1 + n, k};
    return v;
}

/* Writes db num's tomb (nothing for a database that never numbered). */
static int tomb_put(crdtdb_env *env, MDB_txn *mt, const char *id, uint32_t num)
{
    uint8_t kb[5], tb[TOMB_BYTES] = {0};
    MDB_val sk = crdtdb__dbinfo_key(kb, num, 's'), sv;
    int rc = mdb_get(mt, env->dbi_dbinfo, &sk, &sv);
    if (rc || sv.mv_size != 8 || crdtdb__get_u64(sv.mv_data) == 0)
        return rc == MDB_NOTFOUND ? 0 : rc;
    memcpy(tb, sv.mv_data, 8);
    /* a database made again under the id goes on past what may have gone
     * out early (crdtdb_db_set_precommit) */
    uint64_t upto, owner;
    if ((rc = crdtdb__reservation_get(env, mt, num, &upto, &owner)))
        return rc;
    if (upto > crdtdb__get_u64(tb))
        crdtdb__put_u64(tb, upto);
    crdtdb__put_u64(tb + 16 + CRDTDB__FP_BYTES, crdtdb__now_ms(env));
    MDB_val hk = crdtdb__dbinfo_key(kb, num, 'h'), hv;
    rc = mdb_get(mt, env->dbi_dbinfo, &hk, &hv);
    if (rc == 0 && hv.mv_size == 8 + CRDTDB__FP_BYTES)
        memcpy(tb + 8, hv.mv_data, 8 + CRDTDB__FP_BYTES);
    else if (rc != MDB_NOTFOUND)
        return rc ? rc : MDB_CORRUPTED;
    char k[sizeof TOMB_PREFIX + CRDTDB_ID_MAX];
    MDB_val key = tomb_key(k, id), val = {sizeof tb, tb};
    return mdb_put(mt, env->dbi_meta, &key, &val, 0);
}

/* A database created under a dropped one's id: its sequence, latest
 * fingerprint and chain point go on from the tomb, which is used up. */
static int tomb_take(crdtdb_env *env, MDB_txn *mt, const char *id, uint32_t num)
{
    char k[sizeof TOMB_PREFIX + CRDTDB_ID_MAX];
    MDB_val key = tomb_key(k, id), v;
    int rc = mdb_get(mt, env->dbi_meta, &key, &v);
    if (rc)
        return rc == MDB_NOTFOUND ? 0 : rc;
    if (v.mv_size != TOMB_BYTES)
        return MDB_CORRUPTED;
    uint8_t tb[TOMB_BYTES], kb[5], ck[12];
    memcpy(tb, v.mv_data, sizeof tb);
    MDB_val sk = crdtdb__dbinfo_key(kb, num, 's'), sv = {8, tb};
    if ((rc = mdb_put(mt, env->dbi_dbinfo, &sk, &sv, 0)))
        return rc;
    if (crdtdb__get_u64(tb + 8)) { /* a fingerprint was kept */
        MDB_val hk = crdtdb__dbinfo_key(kb, num, 'h'), hv = {8 + CRDTDB__FP_BYTES, tb + 8};
        crdtdb__put_u32(ck, num);
        memcpy(ck + 4, tb + 8, 8);
        MDB_val cvk = {12, ck}, cv = {CRDTDB__FP_BYTES, tb + 16};
        if ((rc = mdb_put(mt, env->dbi_dbinfo, &hk, &hv, 0)) ||
            (rc = mdb_put(mt, env->dbi_chains, &cvk, &cv, 0)))
            return rc;
    }
    return mdb_del(mt, env->dbi_meta, &key, NULL);
}

/* Deletes every key of dbi that starts with the 4-byte number prefix. */
static int del_prefix(MDB_txn *mt, MDB_dbi dbi, uint32_t num)
{
    MDB_cursor *c;
    int rc = mdb_cursor_open(mt, dbi, &c);
    if (rc)
        return rc;
    uint8_t p[4];
    crdtdb__put_u32(p, num);
    MDB_val k, v;
    /* Re-seek after each delete: simplest correct walk over a shrinking tree. */
    for (;;) {
        k.mv_size = 4;
        k.mv_data = p;
        rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
        if (rc || k.mv_size < 4 || memcmp(k.mv_data, p, 4) != 0)
            break;
        if ((rc = mdb_cursor_del(c, 0)))
            break;
    }
    mdb_cursor_close(c);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

int crdtdb__drop(crdtdb_env *env, const char *id,
                 int (*check)(void *ctx, crdtdb_env *env, MDB_txn *mt, uint32_t num), void *ctx,
                 int tomb)
{
    if (!env)
        return CRDTDB_EINVAL;
    if (crdtdb__id_check(id, 1))
        return bad_id(env, "database id", id);
    if (env->opts.flags & CRDTDB_ENV_RDONLY) {
        crdtdb__env_seterr(env, CRDTDB_EROFS, "Read only access");
        return CRDTDB_EROFS;
    }
    int busy = 0;
    pthread_mutex_lock(&env->lock);
    for (crdtdb_db *d = env->dbs; d; d = d->next)
        busy |= strcmp(d->id, id) == 0;
    pthread_mutex_unlock(&env->lock);
    if (busy) {
        crdtdb__env_seterr(env, CRDTDB_EBUSY, "Database '%s' is open", id);
        return CRDTDB_EBUSY;
    }
    MDB_txn *mt;
    int mrc = crdtdb__mt_begin(env, 0, &mt);
    if (mrc)
        return crdtdb__mdb_err(mrc);
    uint32_t num = 0;
    int rc = lookup(env, mt, id, &num);
    if (rc) {
        crdtdb__mt_abort(env, mt);
        crdtdb__env_seterr(env, rc, rc == CRDTDB_ENODB ? "Database '%s' not found"
                                                       : "drop '%s' failed", id);
        return rc;
    }
    if (check && (rc = check(ctx, env, mt, num))) { /* it sets the message */
        crdtdb__mt_abort(env, mt);
        return rc;
    }
    MDB_val k = {strlen(id), (void *)id};
    if (!(mrc = tomb ? tomb_put(env, mt, id, num) : 0) &&
        !(mrc = mdb_del(mt, env->dbi_dbs, &k, NULL)) &&
        !(mrc = del_prefix(mt, env->dbi_dbinfo, num)) &&
        !(mrc = del_prefix(mt, env->dbi_records, num)) &&
        !(mrc = del_prefix(mt, env->dbi_packs, num)) &&
        !(mrc = del_prefix(mt, env->dbi_changes, num)) &&
        !(mrc = del_prefix(mt, env->dbi_marks, num)) &&
        !(mrc = del_prefix(mt, env->dbi_chains, num)))
        mrc = crdtdb__mt_commit(env, mt);
    else
        crdtdb__mt_abort(env, mt);
    rc = crdtdb__mdb_err(mrc);
    if (rc)
        crdtdb__env_seterr(env, rc, "drop '%s': %s", id, crdtdb__mdb_str(mrc));
    return rc;
}

static int drop_call(crdtdb_env *env, const char *id)
{
    return crdtdb__drop(env, id, NULL, NULL, 1);
}

/* crdtdb_env_drop_at's check: nothing numbered since the caller looked. */
static int still_at(void *ctx, crdtdb_env *env, MDB_txn *mt, uint32_t num)
{
    uint64_t seq = 0;
    int rc = crdtdb__seq_read(env, mt, num, &seq);
    if (!rc && seq != *(const uint64_t *)ctx) {
        crdtdb__env_seterr(env, CRDTDB_EBUSY, "written since (sequence %llu, not %llu): kept",
                           (unsigned long long)seq, (unsigned long long)*(const uint64_t *)ctx);
        rc = CRDTDB_EBUSY;
    }
    return rc;
}

int crdtdb_env_drop_at(crdtdb_env *env, const char *id, uint64_t seq)
{
    uint64_t m = crdtdb__env_enter(env);
    return crdtdb__env_exit(env, m, crdtdb__drop(env, id, still_at, &seq, 1));
}

static int tombs_prune_call(crdtdb_env *env, uint64_t before_ms, uint64_t *pruned)
{
    if (!env)
        return CRDTDB_EINVAL;
    if (env->opts.flags & CRDTDB_ENV_RDONLY) {
        crdtdb__env_seterr(env, CRDTDB_EROFS, "Read only access");
        return CRDTDB_EROFS;
    }
    MDB_txn *mt = NULL;
    MDB_cursor *c = NULL;
    int rc = crdtdb__mt_begin(env, 0, &mt);
    if (!rc)
        rc = mdb_cursor_open(mt, env->dbi_meta, &c);
    size_t pre = sizeof TOMB_PREFIX - 1;
    MDB_val k = {pre, (void *)TOMB_PREFIX}, v;
    uint64_t n = 0;
    for (int op = MDB_SET_RANGE; !rc; op = MDB_NEXT) {
        if ((rc = mdb_cursor_get(c, &k, &v, op)))
            break;
        if (k.mv_size < pre || memcmp(k.mv_data, TOMB_PREFIX, pre) != 0)
            break;
        if (v.mv_size == TOMB_BYTES &&
            crdtdb__get_u64((const uint8_t *)v.mv_data + 16 + CRDTDB__FP_BYTES) < before_ms) {
            if ((rc = mdb_cursor_del(c, 0)))
                break;
            n++;
        }
    }
    if (c)
        mdb_cursor_close(c);
    if (rc == MDB_NOTFOUND)
        rc = 0;
    if (!rc && mt)
        rc = crdtdb__mt_commit(env, mt);
    else if (mt)
        crdtdb__mt_abort(env, mt);
    if (rc) {
        crdtdb__env_seterr(env, crdtdb__mdb_err(rc), "pruning drops: %s", crdtdb__mdb_str(rc));
        return crdtdb__mdb_err(rc);
    }
    if (pruned)
        *pruned = n;
    return 0;
}

int crdtdb_env_tombs_prune(crdtdb_env *env, uint64_t before_ms, uint64_t *pruned)
{
    uint64_t m = crdtdb__env_enter(env);
    return crdtdb__env_exit(env, m, tombs_prune_call(env, before_ms, pruned));
}

int crdtdb_db_drop(crdtdb_env *env, const char *id)
{
    uint64_t m = crdtdb__env_enter(env);
    return crdtdb__env_exit(env, m, drop_call(env, id));
}

static int seq_call(crdtdb_db *db, crdtdb_txn *txn, uint64_t *seq)
{
    if (!db || !seq)
        return CRDTDB_EINVAL;
    if (txn && txn->db == db && !(txn->flags & CRDTDB_TXN_RDONLY)) {
        *seq = txn->seq;
        return 0;
    }
    crdtdb_txn *t;
    int own;
    int rc = crdtdb__txn_get(db, txn, 0, &t, &own);
    if (rc)
        return rc;
    rc = crdtdb__seq_read(db->env, t->mt, db->num, seq);
    return crdtdb__txn_end(t, own, rc);
}

int crdtdb_db_seq(crdtdb_db *db, crdtdb_txn *txn, uint64_t *seq)
{
    uint64_t m = crdtdb__db_enter(db);
    return crdtdb__db_exit(db, m, seq_call(db, txn, seq));
}

static int seq_sent_call(crdtdb_db *db, crdtdb_txn *txn, uint64_t *upto)
{
    int rc = seq_call(db, txn, upto); /* (a write transaction's own) */
    if (rc)
        return rc;
    crdtdb_txn *t;
    int own;
    if ((rc = crdtdb__txn_get(db, txn, 0, &t, &own)))
        return rc;
    uint64_t reserved = 0, owner;
    rc = crdtdb__mdb_err(crdtdb__reservation_get(db->env, t->mt, db->num, &reserved, &owner));
    if (!rc && reserved > *upto)
        *upto = reserved;
    return crdtdb__txn_end(t, own, rc);
}

int crdtdb_db_seq_sent(crdtdb_db *db, crdtdb_txn *txn, uint64_t *upto)
{
    uint64_t m = crdtdb__db_enter(db);
    return crdtdb__db_exit(db, m, seq_sent_call(db, txn, upto));
}

static int clear_call(crdtdb_db *db)
{
    if (!db)
        return CRDTDB_EINVAL;
    crdtdb_txn *t;
    int rc = crdtdb_txn_begin(db, 0, &t);
    if (rc)
        return rc;
    /* the sequence and history stay: peers keep counting where we are */
    int mrc = del_prefix(t->mt, db->env->dbi_records, db->num);
    if (!mrc)
        mrc = del_prefix(t->mt, db->env->dbi_packs, db->num);
    if (!mrc)
        mrc = del_prefix(t->mt, db->env->dbi_changes, db->num);
    if (!mrc)
        mrc = del_prefix(t->mt, db->env->dbi_marks, db->num);
    if (!mrc) { /* the resync gate: its resyncers' marks just went, and
                   with the records, what it guarded */
        uint8_t kb[5];
        MDB_val gk = crdtdb__dbinfo_key(kb, db->num, 'r');
        mrc = mdb_del(t->mt, db->env->dbi_dbinfo, &gk, NULL);
        mrc = mrc == MDB_NOTFOUND ? 0 : mrc;
    }
    if (mrc) {
        crdtdb_txn_abort(t);
        return crdtdb__db_seterr(db, crdtdb__mdb_err(mrc), "clear: %s", crdtdb__mdb_str(mrc));
    }
    if ((rc = crdtdb_txn_commit(t)))
        return rc;
    crdtdb__shared_free(db->shared);
    db->shared = NULL;
    crdtdb_db_invalidate(db);
    return 0;
}

int crdtdb_db_clear(crdtdb_db *db)
{
    uint64_t m = crdtdb__db_enter(db);
    return crdtdb__db_exit(db, m, clear_call(db));
}

int crdtdb__dbinfo_u64(crdtdb_db *db, MDB_txn *mt, char tag, uint64_t *v)
{
    uint8_t kb[5];
    MDB_val k = crdtdb__dbinfo_key(kb, db->num, tag), val;
    *v = 0;
    int mrc = mdb_get(mt, db->env->dbi_dbinfo, &k, &val);
    if (mrc == MDB_NOTFOUND)
        return 0;
    if (mrc)
        return crdtdb__mdb_err(mrc);
    if (val.mv_size != 8)
        return CRDTDB_ECORRUPT;
    *v = crdtdb__get_u64(val.mv_data);
    return 0;
}

int crdtdb__dbinfo_u64_put(crdtdb_db *db, MDB_txn *mt, char tag, uint64_t v)
{
    uint8_t kb[5], vb[8];
    MDB_val k = crdtdb__dbinfo_key(kb, db->num, tag), val = {8, vb};
    crdtdb__put_u64(vb, v);
    return crdtdb__mdb_err(mdb_put(mt, db->env->dbi_dbinfo, &k, &val, 0));
}

int crdtdb__db_each(crdtdb_db *db, MDB_txn *mt, MDB_dbi dbi,
                    int (*each)(void *ctx, const MDB_val *k, const MDB_val *v), void *ctx)
{
    MDB_cursor *cur;
    int mrc = mdb_cursor_open(mt, dbi, &cur), rc = 0;
    if (mrc)
        return crdtdb__mdb_err(mrc);
    uint8_t pre[4];
    crdtdb__put_u32(pre, db->num);
    MDB_val k = {sizeof pre, pre}, v;
    mrc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
    while (!mrc && k.mv_size >= 4 && memcmp(k.mv_data, pre, 4) == 0 && !(rc = each(ctx, &k, &v)))
        mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    mdb_cursor_close(cur);
    if (rc)
        return rc < 0 ? rc : 0;
    return mrc == MDB_NOTFOUND ? 0 : crdtdb__mdb_err(mrc);
}
