/* Environment: one LMDB env, the replica identity, the clock. */
#include <errno.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "crdt/hlc.h"
#include "storage/internal.h"

void crdtdb_env_options_init(crdtdb_env_options *o)
{
    memset(o, 0, sizeof *o);
    o->map_size = (size_t)64 << 30; /* address space only: see crdtdb.h */
    o->max_value_size = (size_t)1 << 20;
    o->max_depth = 16;
    o->max_path_bytes = 1024;
    o->max_fields = 10000;
    o->max_clock_skew_ms = 5 * 60 * 1000;
    o->observe_batch_limit = 100;
    o->max_delta_size = (size_t)4 << 20;
    o->max_delta_groups = CRDTDB__DELTA_GROUPS;
    o->max_apply_work = (size_t)16 << 20;
    o->max_origins = (uint32_t)1 << 24;
}

void crdtdb_env_options_get(const crdtdb_env *env, crdtdb_env_options *opts)
{
    if (!opts)
        return;
    if (env)
        *opts = env->opts;
    else
        crdtdb_env_options_init(opts); /* NULL: the defaults */
}

int crdtdb__mdb_err(int rc)
{
    switch (rc) {
    case 0: return 0;
    case ENOMEM: return CRDTDB_ENOMEM;
    case MDB_MAP_FULL: return CRDTDB_EMAPFULL;
    case MDB_CORRUPTED:
    case MDB_PAGE_NOTFOUND: return CRDTDB_ECORRUPT;
    case MDB_VERSION_MISMATCH:
    case MDB_INVALID: return CRDTDB_EVERSION;
    case MDB_READERS_FULL:
    case MDB_TXN_FULL:
    case EBUSY: return CRDTDB_EBUSY;
    case EACCES:
    case EROFS: return CRDTDB_EROFS;
    default: return CRDTDB_EIO;
    }
}

const char *crdtdb__mdb_str(int rc)
{
    return rc == MDB_MAP_FULL ? "environment is full: its map_size is used up; nothing of this "
                                "write was stored (reopen with a larger map_size)"
                              : mdb_strerror(rc);
}

void crdtdb__env_seterr(crdtdb_env *env, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    pthread_mutex_lock(&env->err_mu);
    vsnprintf(env->errmsg, sizeof env->errmsg, fmt, ap);
    env->errcode = code;
    env->msgno++;
    pthread_mutex_unlock(&env->err_mu);
    va_end(ap);
}

uint64_t crdtdb__env_enter(crdtdb_env *env)
{
    if (!env)
        return 0;
    pthread_mutex_lock(&env->err_mu);
    uint64_t m = env->msgno;
    pthread_mutex_unlock(&env->err_mu);
    return m;
}

int crdtdb__env_fail(crdtdb_env *env, uint64_t m, int rc)
{
    /* a message written since the call began, for this code, is the
     * call's own (or a nested call's it passes on); any other is not */
    if (rc >= 0)
        return rc;
    pthread_mutex_lock(&env->err_mu);
    if (env->errcode != rc || env->msgno == m) {
        snprintf(env->errmsg, sizeof env->errmsg, "%s", crdtdb_strerror(rc));
        env->errcode = rc;
        env->msgno++;
    }
    pthread_mutex_unlock(&env->err_mu);
    return rc;
}

const char *crdtdb_env_errmsg(const crdtdb_env *env)
{
    return env ? env->errmsg : "no environment";
}

static uint64_t system_ms(void *ctx)
{
    (void)ctx;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

uint64_t crdtdb__now_ms(const crdtdb_env *env)
{
    return env->opts.clock(env->opts.clock_ctx);
}

void crdtdb_env_replica_id(const crdtdb_env *env,
                           uint8_t out[CRDTDB_REPLICA_ID_BYTES])
{
    if (env) { /* crdtdb_env_reset_id may be writing it (under lock) */
        crdtdb_env *e = (crdtdb_env *)env;
        pthread_mutex_lock(&e->lock);
        memcpy(out, env->pk, CRDTDB_REPLICA_ID_BYTES);
        pthread_mutex_unlock(&e->lock);
    } else
        memset(out, 0, CRDTDB_REPLICA_ID_BYTES); /* NULL: no one's */
}

static int meta_get(MDB_txn *t, MDB_dbi dbi, const char *key, MDB_val *v)
{
    MDB_val k = {strlen(key), (void *)key};
    return mdb_get(t, dbi, &k, v);
}

static int meta_put(MDB_txn *t, MDB_dbi dbi, const char *key, const void *p,
                    size_t n)
{
    MDB_val k = {strlen(key), (void *)key}, v = {n, (void *)p};
    return mdb_put(t, dbi, &k, &v, 0);
}

/* Opens the sub-databases and creates the identity on first open. */
static int env_init(crdtdb_env *env, int rdonly)
{
    MDB_txn *t;
    int rc = crdtdb__mt_begin(env, rdonly ? MDB_RDONLY : 0, &t);
    if (rc)
        return rc;
    unsigned cf = rdonly ? 0 : MDB_CREATE;
    if ((rc = mdb_dbi_open(t, "meta", cf, &env->dbi_meta)) ||
        (rc = mdb_dbi_open(t, "dbs", cf, &env->dbi_dbs)) ||
        (rc = mdb_dbi_open(t, "dbinfo", cf, &env->dbi_dbinfo)) ||
        (rc = mdb_dbi_open(t, "records", cf, &env->dbi_records)) ||
        (rc = mdb_dbi_open(t, "changes", cf, &env->dbi_changes)) ||
        (rc = mdb_dbi_open(t, "peerids", cf, &env->dbi_peerids)) ||
        (rc = mdb_dbi_open(t, "marks", cf, &env->dbi_marks)) ||
        (rc = mdb_dbi_open(t, "chains", cf, &env->dbi_chains)))
        goto fail;
    /* packs came with version 5: an older env opened read-only has none */
    rc = mdb_dbi_open(t, "packs", cf, &env->dbi_packs);
    env->no_packs = rc == MDB_NOTFOUND && rdonly;
    if (rc && !env->no_packs)
        goto fail;
    MDB_val v;
    rc = meta_get(t, env->dbi_meta, "version", &v);
    if (rc == MDB_NOTFOUND && !rdonly) {
        uint8_t ver[4], sk[64], pk[32], zero[4] = {0};
        crdtdb__put_u32(ver, CRDTDB__FORMAT_VERSION);
        crypto_sign_keypair(pk, sk);
        rc = meta_put(t, env->dbi_meta, "version", ver, 4);
        if (!rc)
            rc = meta_put(t, env->dbi_meta, "identity", sk, 64);
        if (!rc)
            rc = meta_put(t, env->dbi_meta, "next_db", zero, 4);
        if (!rc)
            rc = meta_put(t, env->dbi_meta, "next_peer", zero, 4);
        sodium_memzero(sk, sizeof sk);
        if (rc)
            goto fail;
        rc = meta_get(t, env->dbi_meta, "version", &v);
    }
    if (rc)
        goto fail;
    uint32_t version = v.mv_size == 4 ? crdtdb__get_u32(v.mv_data) : 0;
    if (version != CRDTDB__FORMAT_VERSION && (version < 1 || version > 4)) {
        rc = MDB_VERSION_MISMATCH;
        goto fail;
    }
    /* versions 1 (register entries only), 2 (origins by key), 3 (the log
     * whole) and 4 (no packs) read as they are; a writer marks the env 5
     * before writing runs, version 4 blobs, trimmed logs and packs, which
     * older builds would misread (a run for one register, deleted whole;
     * an export from below the trim missing registers; packed records
     * missing) or not read: they must refuse the env */
    if (version != CRDTDB__FORMAT_VERSION && !rdonly) {
        uint8_t ver[4];
        crdtdb__put_u32(ver, CRDTDB__FORMAT_VERSION);
        if ((rc = meta_put(t, env->dbi_meta, "version", ver, 4)))
            goto fail;
    }
    /* a backup's first open (crdtdb_env_backup marked it): a restore is a
     * new replica, so it can never fork the history the original went on
     * writing after the copy; its peers resync with it both ways */
    if (!rdonly && meta_get(t, env->dbi_meta, "restored", &v) == 0) {
        uint8_t sk[64], pk[32];
        crypto_sign_keypair(pk, sk);
        MDB_val rk = {8, (void *)"restored"};
        rc = meta_put(t, env->dbi_meta, "identity", sk, 64);
        if (!rc)
            rc = mdb_del(t, env->dbi_meta, &rk, NULL);
        sodium_memzero(sk, sizeof sk);
        if (rc)
            goto fail;
    }
    if ((rc = meta_get(t, env->dbi_meta, "identity", &v)))
        goto fail;
    if (v.mv_size != 64) {
        rc = MDB_CORRUPTED;
        goto fail;
    }
    memcpy(env->sk, v.mv_data, 64);
    memcpy(env->pk, env->sk + 32, 32);
    if (meta_get(t, env->dbi_meta, "hlc", &v) == 0 && v.mv_size == 8)
        env->hlc = crdtdb__get_u64(v.mv_data);
    return crdtdb__mt_commit(env, t);
fail:
    crdtdb__mt_abort(env, t);
    return rc;
}

int crdtdb_env_open(const char *path, const crdtdb_env_options *opts,
                    crdtdb_env **out)
{
    if (!out)
        return CRDTDB_EINVAL;
    *out = NULL;
    if (!path || !*path)
        return CRDTDB_EINVAL;
    crdtdb_env_options o;
    if (opts)
        o = *opts;
    else
        crdtdb_env_options_init(&o);
    if (o.max_depth == 0 || o.max_depth > 32 || o.max_value_size == 0 ||
        o.max_value_size > UINT32_MAX / 2 || o.max_path_bytes == 0 ||
        o.max_path_bytes > UINT32_MAX / 2 || o.map_size == 0 || o.max_fields == 0 ||
        o.max_delta_size < o.max_value_size + o.max_path_bytes + 4096 ||
        o.max_delta_groups == 0 || o.max_apply_work == 0 || o.max_origins == 0)
        return CRDTDB_EINVAL;
    if (!o.clock)
        o.clock = system_ms;
    if (sodium_init() < 0)
        return CRDTDB_EIO;
    int rdonly = (o.flags & CRDTDB_ENV_RDONLY) != 0;
    if (!rdonly && mkdir(path, 0700) != 0 && errno != EEXIST)
        return errno == EACCES || errno == EROFS ? CRDTDB_EROFS : CRDTDB_EIO;

    crdtdb_env *env = calloc(1, sizeof *env);
    if (!env)
        return CRDTDB_ENOMEM;
    env->opts = o;
    env->lim.max_value_size = o.max_value_size;
    env->lim.max_depth = o.max_depth;
    env->lim.max_path_bytes = o.max_path_bytes;
    env->lim.max_fields = o.max_fields;
    env->lim.max_delta_groups = o.max_delta_groups;
    if (pthread_mutex_init(&env->lock, NULL)) {
        free(env);
        return CRDTDB_ENOMEM;
    }
    if (pthread_mutex_init(&env->err_mu, NULL)) {
        pthread_mutex_destroy(&env->lock);
        free(env);
        return CRDTDB_ENOMEM;
    }
    if (crdtdb__gate_init(env)) {
        pthread_mutex_destroy(&env->err_mu);
        pthread_mutex_destroy(&env->lock);
        free(env);
        return CRDTDB_ENOMEM;
    }
    unsigned flags = MDB_NOTLS;
    if (o.flags & CRDTDB_ENV_NOSYNC)
        flags |= MDB_NOSYNC;
    if (rdonly)
        flags |= MDB_RDONLY;
    int rc = mdb_env_create(&env->mdb);
    if (!rc)
        rc = mdb_env_set_maxdbs(env->mdb, 16);
    if (!rc)
        rc = mdb_env_set_maxreaders(env->mdb, 1024);
    if (!rc)
        rc = mdb_env_set_mapsize(env->mdb, o.map_size);
    if (!rc)
        rc = mdb_env_open(env->mdb, path, flags, 0600); /* it holds the secret key */
    MDB_stat ms;
    if (!rc && !(rc = mdb_env_stat(env->mdb, &ms)))
        env->psize = ms.ms_psize;
    if (!rc)
        mdb_reader_check(env->mdb, NULL); /* free slots of crashed readers */
    if (!rc)
        rc = env_init(env, rdonly);
    if (rc) {
        /* read-only on a directory never initialised: nothing to read */
        int code = rdonly && (rc == ENOENT || rc == MDB_NOTFOUND)
                       ? CRDTDB_EROFS
                       : crdtdb__mdb_err(rc);
        crdtdb_env_close(env);
        return code;
    }
    snprintf(env->errmsg, sizeof env->errmsg, "no error");
    *out = env;
    return 0;
}

void crdtdb_env_close(crdtdb_env *env)
{
    if (!env)
        return;
    if (env->mdb)
        mdb_env_close(env->mdb);
    sodium_memzero(env->sk, sizeof env->sk);
    crdtdb__gate_free(env);
    pthread_mutex_destroy(&env->err_mu);
    pthread_mutex_destroy(&env->lock);
    free(env);
}

static int env_reset_id_call(crdtdb_env *env)
{
    if (!env)
        return CRDTDB_EINVAL;
    if (env->opts.flags & CRDTDB_ENV_RDONLY) {
        crdtdb__env_seterr(env, CRDTDB_EROFS, "Read only access");
        return CRDTDB_EROFS;
    }
    /* LMDB's write lock first, then env->lock, held to the end: the order
     * a write transaction's begin takes them in (txn.c), and no database
     * may open while the identity changes */
    MDB_txn *t;
    int rc = crdtdb__mt_begin(env, 0, &t);
    if (rc) {
        crdtdb__env_seterr(env, crdtdb__mdb_err(rc), "new identity: %s", crdtdb__mdb_str(rc));
        return crdtdb__mdb_err(rc);
    }
    pthread_mutex_lock(&env->lock);
    if (env->dbs != NULL) {
        pthread_mutex_unlock(&env->lock);
        crdtdb__mt_abort(env, t);
        crdtdb__env_seterr(env, CRDTDB_EBUSY, "close every database before a new identity");
        return CRDTDB_EBUSY;
    }
    uint8_t pk[32], sk[64];
    crypto_sign_keypair(pk, sk);
    if (!(rc = meta_put(t, env->dbi_meta, "identity", sk, sizeof sk)))
        rc = crdtdb__mt_commit(env, t);
    else
        crdtdb__mt_abort(env, t);
    if (!rc) {
        memcpy(env->sk, sk, sizeof sk);
        memcpy(env->pk, pk, sizeof pk);
    }
    pthread_mutex_unlock(&env->lock);
    sodium_memzero(sk, sizeof sk);
    if (rc)
        crdtdb__env_seterr(env, crdtdb__mdb_err(rc), "new identity: %s", crdtdb__mdb_str(rc));
    return crdtdb__mdb_err(rc);
}

int crdtdb_env_reset_id(crdtdb_env *env)
{
    uint64_t m = crdtdb__env_enter(env);
    return crdtdb__env_exit(env, m, env_reset_id_call(env));
}
