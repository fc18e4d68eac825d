/*
 * Expiry of finished databases: a time-to-live counted from the last write
 * or from an explicit close (crdtdb_db_expire_set), and the list of those
 * due (crdtdb_env_expired), which their owner archives (crdtdb_db_archive)
 * and drops.  The setting is this replica's own, kept beside the
 * database's info, never replicated: each server decides when it lets go.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "storage/log.h"
#include "storage/recs.h"

/* dbinfo  u32 number | 't' -> u64 ttl ms | u64 closed at (ms; 0: open)
 *                           | u64 set at (ms) */
static MDB_val ttl_key(uint8_t k[5], uint32_t num)
{
    return crdtdb__dbinfo_key(k, num, 't');
}

/* The wall-clock ms of the register written last: the one at the top of
 * the change log, or what a trim noted before it took entries (a purge may
 * take the top since); 0 when neither says. */
int crdtdb__last_write_ms(crdtdb_env *env, MDB_txn *mt, uint32_t num, uint64_t *ms)
{
    *ms = 0;
    uint8_t wk[5];
    MDB_val k0 = crdtdb__dbinfo_key(wk, num, 'w'), v0;
    int g = mdb_get(mt, env->dbi_dbinfo, &k0, &v0);
    if (g && g != MDB_NOTFOUND)
        return crdtdb__mdb_err(g);
    if (!g && v0.mv_size != 8)
        return CRDTDB_ECORRUPT;
    uint64_t noted = g ? 0 : crdtdb__get_u64(v0.mv_data);
    MDB_cursor *cur;
    int mrc = mdb_cursor_open(mt, env->dbi_changes, &cur);
    if (mrc)
        return crdtdb__mdb_err(mrc);
    uint8_t kb[CRDTDB__CHGKEY_LEN];
    crdtdb__put_u32(kb, num + 1); /* past the last key of num, then back */
    memset(kb + 4, 0, 8);
    MDB_val k = {4, kb}, v;
    mrc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
    mrc = mrc == MDB_NOTFOUND ? mdb_cursor_get(cur, &k, &v, MDB_LAST)
                              : mrc ? mrc : mdb_cursor_get(cur, &k, &v, MDB_PREV);
    int rc = 0;
    crdtdb__log_run run;
    if (!mrc && k.mv_size == CRDTDB__CHGKEY_LEN && crdtdb__get_u32(k.mv_data) == num) {
        uint8_t rk[CRDTDB__RECKEY_MAX];
        MDB_val rkey, rv;
        if (crdtdb__log_parse(&k, &v, &run))
            rc = CRDTDB_ECORRUPT;
        else {
            rkey.mv_size = crdtdb__reckey(rk, num, run.coll, (const char *)run.id, run.idlen);
            rkey.mv_data = rk;
        }
        crdtdb__held *held = NULL;
        int got = rc ? MDB_NOTFOUND : crdtdb__recs_get(env, mt, &held, &rkey, &rv);
        if (got && got != MDB_NOTFOUND) /* not read is not "never written" */
            rc = crdtdb__mdb_err(got);
        if (!got) {
            crdtdb__record r;
            crdtdb__origins orig; /* no handle here: a cache for this read */
            crdtdb__record_init(&r);
            crdtdb__origins_init(&orig, env);
            if (!(rc = crdtdb__record_decode(&r, rv.mv_data, rv.mv_size,
                                             crdtdb__origins_at(&orig, mt)))) {
                /* the register the entry holds, numbered last */
                uint64_t hlc = 0, top = 0, lo = run.seq, hi = run.seq + run.n;
                if (r.base_kind != CRDTDB__BASE_NONE && r.base_seq >= lo && r.base_seq < hi) {
                    top = r.base_seq;
                    hlc = r.base_hlc;
                }
                for (uint32_t i = 0; i < r.nleaves; i++)
                    if (r.leaves[i].seq >= lo && r.leaves[i].seq < hi && r.leaves[i].seq > top) {
                        top = r.leaves[i].seq;
                        hlc = r.leaves[i].hlc;
                    }
                *ms = hlc >> 16;
            }
            crdtdb__record_free(&r);
            crdtdb__origins_free(&orig);
        }
        crdtdb__held_free(&held);
    } else if (mrc && mrc != MDB_NOTFOUND) {
        rc = crdtdb__mdb_err(mrc);
    }
    mdb_cursor_close(cur);
    if (noted > *ms)
        *ms = noted;
    return rc;
}

static int expiry_read(crdtdb_env *env, MDB_txn *mt, uint32_t num, crdtdb_expiry *out)
{
    memset(out, 0, sizeof *out);
    uint8_t kb[5];
    MDB_val k = ttl_key(kb, num), v;
    int mrc = mdb_get(mt, env->dbi_dbinfo, &k, &v);
    if (mrc == MDB_NOTFOUND)
        return 0;
    if (mrc)
        return crdtdb__mdb_err(mrc);
    if (v.mv_size != 24)
        return CRDTDB_ECORRUPT;
    out->ttl_ms = crdtdb__get_u64(v.mv_data);
    out->closed_ms = crdtdb__get_u64((const uint8_t *)v.mv_data + 8);
    uint64_t set_ms = crdtdb__get_u64((const uint8_t *)v.mv_data + 16);
    int rc = crdtdb__last_write_ms(env, mt, num, &out->last_write_ms);
    if (rc)
        return rc;
    /* never before the setting: a time-to-live given to a database written
     * long ago (or never) does not drop it at once */
    uint64_t from = out->closed_ms                 ? out->closed_ms
                    : out->last_write_ms > set_ms ? out->last_write_ms
                                                  : set_ms;
    out->due_ms = from + out->ttl_ms < from ? UINT64_MAX : from + out->ttl_ms;
    return 0;
}

static int expire_set_call(crdtdb_db *db, uint64_t ttl_ms, unsigned flags)
{
    if (!db)
        return CRDTDB_EINVAL;
    if ((flags & ~CRDTDB_EXPIRE_CLOSED) || (!ttl_ms && flags))
        return crdtdb__db_seterr(db, CRDTDB_EINVAL, "expire: unknown flags, or a close without "
                                                    "a time-to-live");
    crdtdb_env *env = db->env;
    if (env->opts.flags & CRDTDB_ENV_RDONLY)
        return crdtdb__db_seterr(db, CRDTDB_EROFS, "Read only access");
    MDB_txn *mt;
    int mrc = crdtdb__mt_begin(env, 0, &mt);
    if (mrc)
        return crdtdb__db_seterr(db, crdtdb__mdb_err(mrc), "expire: %s", crdtdb__mdb_str(mrc));
    uint8_t kb[5], vb[24];
    MDB_val k = ttl_key(kb, db->num);
    if (!ttl_ms) {
        mrc = mdb_del(mt, env->dbi_dbinfo, &k, NULL);
        if (mrc == MDB_NOTFOUND)
            mrc = 0;
    } else {
        crdtdb__put_u64(vb, ttl_ms);
        uint64_t now = crdtdb__now_ms(env);
        crdtdb__put_u64(vb + 8, (flags & CRDTDB_EXPIRE_CLOSED) ? now : 0);
        crdtdb__put_u64(vb + 16, now);
        MDB_val v = {sizeof vb, vb};
        mrc = mdb_put(mt, env->dbi_dbinfo, &k, &v, 0);
    }
    if (!mrc)
        mrc = crdtdb__mt_commit(env, mt);
    else
        crdtdb__mt_abort(env, mt);
    return mrc ? crdtdb__db_seterr(db, crdtdb__mdb_err(mrc), "expire: %s", crdtdb__mdb_str(mrc))
               : 0;
}

int crdtdb_db_expire_set(crdtdb_db *db, uint64_t ttl_ms, unsigned flags)
{
    uint64_t m = crdtdb__db_enter(db);
    return crdtdb__db_exit(db, m, expire_set_call(db, ttl_ms, flags));
}

static int expiry_call(crdtdb_db *db, crdtdb_expiry *out)
{
    if (!db)
        return CRDTDB_EINVAL;
    if (!out)
        return crdtdb__db_seterr(db, CRDTDB_EINVAL, "expiry: no place for the answer");
    MDB_txn *mt;
    int mrc = crdtdb__mt_begin(db->env, MDB_RDONLY, &mt);
    if (mrc)
        return crdtdb__db_seterr(db, crdtdb__mdb_err(mrc), "expiry: %s", crdtdb__mdb_str(mrc));
    int rc = expiry_read(db->env, mt, db->num, out);
    crdtdb__mt_abort(db->env, mt);
    return rc ? crdtdb__db_seterr(db, rc, "expiry of '%s': %s", db->id, crdtdb_strerror(rc)) : 0;
}

int crdtdb_db_expiry(crdtdb_db *db, crdtdb_expiry *out)
{
    uint64_t m = crdtdb__db_enter(db);
    return crdtdb__db_exit(db, m, expiry_call(db, out));
}

static int expired_call(crdtdb_env *env, uint64_t now_ms, crdtdb_expired_cb cb, void *ctx)
{
    if (!env || !cb)
        return CRDTDB_EINVAL;
    MDB_txn *mt;
    MDB_cursor *cur;
    int mrc = crdtdb__mt_begin(env, MDB_RDONLY, &mt);
    if (mrc)
        return crdtdb__mdb_err(mrc);
    if ((mrc = mdb_cursor_open(mt, env->dbi_dbs, &cur))) {
        crdtdb__mt_abort(env, mt);
        return crdtdb__mdb_err(mrc);
    }
    /* due ones are gathered first: the callback may drop them, which
     * needs this snapshot ended */
    char (*due)[CRDTDB_ID_MAX + 1] = NULL;
    crdtdb_expiry *exp = NULL;
    size_t n = 0, cap = 0;
    int rc = 0;
    MDB_val k, v;
    for (mrc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); !mrc && !rc;
         mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        crdtdb_expiry e;
        if (k.mv_size > CRDTDB_ID_MAX || v.mv_size != 4)
            continue;
        if ((rc = expiry_read(env, mt, crdtdb__get_u32(v.mv_data), &e)) || !e.ttl_ms ||
            e.due_ms > now_ms)
            continue;
        if (n == cap) {
            size_t nc = cap ? 2 * cap : 8;
            void *d2 = realloc(due, nc * sizeof *due), *e2 = d2 ? realloc(exp, nc * sizeof *exp) : NULL;
            if (d2)
                due = d2;
            if (e2)
                exp = e2;
            if (!d2 || !e2) {
                rc = CRDTDB_ENOMEM;
                break;
            }
            cap = nc;
        }
        memcpy(due[n], k.mv_data, k.mv_size);
        due[n][k.mv_size] = 0;
        exp[n++] = e;
    }
    if (!rc && mrc != MDB_NOTFOUND)
        rc = crdtdb__mdb_err(mrc);
    mdb_cursor_close(cur);
    crdtdb__mt_abort(env, mt);
    for (size_t i = 0; !rc && i < n; i++)
        rc = cb(ctx, due[i], &exp[i]);
    free(due);
    free(exp);
    if (rc < 0 && rc != CRDTDB_ENOMEM)
        crdtdb__env_seterr(env, rc, "expired: %s", crdtdb_strerror(rc));
    return rc;
}

int crdtdb_env_expired(crdtdb_env *env, uint64_t now_ms, crdtdb_expired_cb cb, void *ctx)
{
    uint64_t m = crdtdb__env_enter(env);
    return crdtdb__env_exit(env, m, expired_call(env, now_ms, cb, ctx));
}

typedef struct archive_sink {
    FILE *f;
    int err;
} archive_sink;

static int archive_write(void *ctx, const uint8_t *delta, size_t len)
{
    archive_sink *a = ctx;
    if (fwrite(delta, 1, len, a->f) == len)
        return 0;
    a->err = errno ? errno : EIO;
    return CRDTDB_EIO;
}

static int archive_call(crdtdb_db *db, const char *path)
{
    if (!db || !path || !*path)
        return CRDTDB_EINVAL;
    size_t n = strlen(path);
    char *tmp = malloc(n + 12);
    if (!tmp)
        return CRDTDB_ENOMEM;
    memcpy(tmp, path, n);
    memcpy(tmp + n, ".tmp-XXXXXX", 12);
    /* written aside (a new 0600 file of its own name: the data is private,
     * and a stale one from a crash is in nobody's way), flushed, then
     * linked into place: an archive is whole or absent */
    int fd = mkstemp(tmp);
    archive_sink a = {fd >= 0 ? fdopen(fd, "wb") : NULL, 0};
    if (!a.f) {
        int e = errno;
        if (fd >= 0) {
            close(fd);
            unlink(tmp);
        }
        free(tmp);
        return crdtdb__db_seterr(db, CRDTDB_EIO, "archive %s: %s", path, strerror(e));
    }
    int rc = crdtdb_db_export(db, 0, NULL, archive_write, &a, NULL);
    int err = a.err;
    if (!rc && (fflush(a.f) != 0 || fsync(fileno(a.f)) != 0))
        err = errno ? errno : EIO;
    if (fclose(a.f) != 0 && !err)
        err = errno ? errno : EIO;
    if (!rc && !err && link(tmp, path) != 0) /* never over an existing archive */
        err = errno;
    if (!rc && !err) { /* the link, durable before anyone drops the database */
        char *slash = strrchr(tmp, '/');
        if (slash)
            *slash = 0;
        int dfd = open(slash ? (slash == tmp ? "/" : tmp) : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (slash)
            *slash = '/';
        if (dfd >= 0) {
            if (fsync(dfd) != 0)
                err = errno;
            close(dfd);
        }
    }
    unlink(tmp);
    free(tmp);
    if (err)
        return crdtdb__db_seterr(db, err == EEXIST ? CRDTDB_EEXIST : CRDTDB_EIO, "archive %s: %s",
                                 path, strerror(err));
    return rc;
}

int crdtdb_db_archive(crdtdb_db *db, const char *path)
{
    uint64_t m = crdtdb__db_enter(db);
    return crdtdb__db_exit(db, m, archive_call(db, path));
}

typedef struct due_at {
    uint64_t now, seq;
} due_at;

static int still_due(void *ctx, crdtdb_env *env, MDB_txn *mt, uint32_t num)
{
    const due_at *d = ctx;
    crdtdb_expiry e;
    uint64_t seq;
    int rc = expiry_read(env, mt, num, &e);
    if (!rc)
        rc = crdtdb__seq_read(env, mt, num, &seq);
    if (rc)
        return rc;
    if (seq != d->seq) { /* stamps cannot tell: a peer's old edits arrive late */
        crdtdb__env_seterr(env, CRDTDB_EBUSY, "written since it was found expired (sequence "
                                              "%llu, not %llu): kept",
                           (unsigned long long)seq, (unsigned long long)d->seq);
        return CRDTDB_EBUSY;
    }
    if (!e.ttl_ms || e.due_ms > d->now) {
        crdtdb__env_seterr(env, CRDTDB_EBUSY, "no longer due to expire: written since, or its "
                                              "time-to-live changed");
        return CRDTDB_EBUSY;
    }
    return 0;
}

int crdtdb_env_drop_expired(crdtdb_env *env, const char *id, uint64_t now_ms, uint64_t seq)
{
    due_at d = {now_ms, seq};
    uint64_t m = crdtdb__env_enter(env);
    return crdtdb__env_exit(env, m, env ? crdtdb__drop(env, id, still_due, &d, 0) : CRDTDB_EINVAL);
}
