/*
 * The map gate: every LMDB transaction of an environment passes it, so the
 * map can grow between them.  LMDB sizes its memory map once
 * (mdb_env_set_mapsize) and allows a change only while this process has no
 * transaction open, and it fails a write that finds the map full
 * (MDB_MAP_FULL).  So a write about to begin with less than a quarter of
 * the map free, or after a write found it full, first waits for the
 * transactions under way to end (new ones wait meanwhile), doubles the map
 * up to map_max, and goes on.  A map another process grew is adopted the
 * same way (MDB_MAP_RESIZED).  The wait is bounded: a thread that holds a
 * transaction itself while it begins a write cannot be waited for, so
 * after GROW_WAIT_MS the write goes ahead unchanged and the next one tries
 * again.
 */
#include <errno.h>
#include <sys/statvfs.h>
#include <time.h>

#include "storage/internal.h"

#define GROW_WAIT_MS 200

int crdtdb__gate_init(crdtdb_env *env)
{
    if (pthread_mutex_init(&env->gate_mu, NULL))
        return CRDTDB_ENOMEM;
    pthread_condattr_t ca;
    int rc = pthread_condattr_init(&ca);
    if (!rc) {
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        rc = pthread_cond_init(&env->gate_cv, &ca);
        pthread_condattr_destroy(&ca);
    }
    if (rc) {
        pthread_mutex_destroy(&env->gate_mu);
        return CRDTDB_ENOMEM;
    }
    env->gate_ready = 1;
    return 0;
}

void crdtdb__gate_free(crdtdb_env *env)
{
    if (!env->gate_ready)
        return;
    pthread_cond_destroy(&env->gate_cv);
    pthread_mutex_destroy(&env->gate_mu);
    env->gate_ready = 0;
}

static void enter(crdtdb_env *env)
{
    pthread_mutex_lock(&env->gate_mu);
    while (env->gate_growing)
        pthread_cond_wait(&env->gate_cv, &env->gate_mu);
    env->gate_active++;
    pthread_mutex_unlock(&env->gate_mu);
}

static void leave(crdtdb_env *env)
{
    pthread_mutex_lock(&env->gate_mu);
    if (--env->gate_active == 0)
        pthread_cond_broadcast(&env->gate_cv);
    pthread_mutex_unlock(&env->gate_mu);
}

/* Runs mdb_env_set_mapsize(size) once no transaction of this process is
 * open (size 0: adopt the size another process set).  0, or nonzero when
 * the wait ran out (nothing changed) or LMDB refused. */
static int resize(crdtdb_env *env, size_t size)
{
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_nsec += (long)GROW_WAIT_MS * 1000000L;
    until.tv_sec += until.tv_nsec / 1000000000L;
    until.tv_nsec %= 1000000000L;
    pthread_mutex_lock(&env->gate_mu);
    if (env->gate_growing) { /* another thread is at it: its result will do */
        while (env->gate_growing)
            pthread_cond_wait(&env->gate_cv, &env->gate_mu);
        pthread_mutex_unlock(&env->gate_mu);
        return 0;
    }
    env->gate_growing = 1;
    int rc = 0;
    while (env->gate_active && rc != ETIMEDOUT)
        rc = pthread_cond_timedwait(&env->gate_cv, &env->gate_mu, &until);
    if (!env->gate_active)
        rc = mdb_env_set_mapsize(env->mdb, size);
    if (!rc)
        env->gate_full = 0;
    env->gate_growing = 0;
    pthread_cond_broadcast(&env->gate_cv);
    pthread_mutex_unlock(&env->gate_mu);
    return rc;
}

/* Before a write: grows the map when less than a quarter is free, or a
 * write found it full, and the ceiling allows. */
static void maybe_grow(crdtdb_env *env)
{
    MDB_envinfo info;
    if (mdb_env_info(env->mdb, &info))
        return;
    size_t size = info.me_mapsize, used = (info.me_last_pgno + 1) * (size_t)env->psize;
    size_t ceiling = env->opts.map_max > env->opts.map_size ? env->opts.map_max : size;
    if (size >= ceiling || (!env->gate_full && used <= size - size / 4))
        return;
    size_t want = size > ceiling / 2 ? ceiling : 2 * size;
    want -= want % env->psize;
    if (want > size)
        resize(env, want);
}

int crdtdb__mt_begin(crdtdb_env *env, unsigned flags, MDB_txn **mt)
{
    for (int tries = 0;; tries++) {
        if (!(flags & MDB_RDONLY) && !(env->opts.flags & CRDTDB_ENV_RDONLY))
            maybe_grow(env);
        enter(env);
        int rc = mdb_txn_begin(env->mdb, NULL, flags, mt);
        if (!rc)
            return 0;
        leave(env);
        if (rc != MDB_MAP_RESIZED || tries == 2 || resize(env, 0))
            return rc;
    }
}

int crdtdb__mt_commit(crdtdb_env *env, MDB_txn *mt)
{
    int rc = mdb_txn_commit(mt);
    leave(env);
    if (rc == MDB_MAP_FULL)
        crdtdb__env_full(env);
    return rc;
}

void crdtdb__mt_abort(crdtdb_env *env, MDB_txn *mt)
{
    mdb_txn_abort(mt);
    leave(env);
}

void crdtdb__env_full(crdtdb_env *env)
{
    pthread_mutex_lock(&env->gate_mu);
    env->gate_full = 1;
    pthread_mutex_unlock(&env->gate_mu);
}

int crdtdb__disk_full(crdtdb_env *env)
{
    /* LMDB reports a short write as EIO: say why when the disk says so */
    const char *path;
    struct statvfs vs;
    if (mdb_env_get_path(env->mdb, &path) || statvfs(path, &vs))
        return 0;
    return (uint64_t)vs.f_bavail * vs.f_frsize < ((uint64_t)1 << 20);
}
