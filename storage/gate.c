/*
 * The map gate: every LMDB transaction of an environment passes it.  The
 * map is opened at map_size (64 GiB by default: address space, not disk,
 * so it never needs to grow here).  But another process may open the
 * same environment with a larger map_size; once it writes, LMDB refuses
 * our next transaction (MDB_MAP_RESIZED) until we adopt its size with
 * mdb_env_set_mapsize, which LMDB allows only while this process has no
 * transaction open.  So transactions are counted here, and an adoption
 * waits for the count to reach zero (new ones wait meanwhile).  The wait
 * is bounded: a thread holding a transaction itself cannot be waited for,
 * so after GROW_WAIT_MS the begin fails (EIO, the cause named) and a later
 * one tries again.
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

/* Adopts the map size another process set (mdb_env_set_mapsize(0)) once
 * no transaction of this process is open.  0, or nonzero when the wait ran
 * out (nothing changed) or LMDB refused. */
static int adopt(crdtdb_env *env)
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
        rc = mdb_env_set_mapsize(env->mdb, 0);
    env->gate_growing = 0;
    pthread_cond_broadcast(&env->gate_cv);
    pthread_mutex_unlock(&env->gate_mu);
    return rc;
}

int crdtdb__mt_begin(crdtdb_env *env, unsigned flags, MDB_txn **mt)
{
    for (int tries = 0;; tries++) {
        enter(env);
        int rc = mdb_txn_begin(env->mdb, NULL, flags, mt);
        if (!rc)
            return 0;
        leave(env);
        if (rc != MDB_MAP_RESIZED || tries == 2 || adopt(env))
            return rc;
    }
}

int crdtdb__mt_commit(crdtdb_env *env, MDB_txn *mt)
{
    int rc = mdb_txn_commit(mt);
    leave(env);
    return rc;
}

void crdtdb__mt_abort(crdtdb_env *env, MDB_txn *mt)
{
    mdb_txn_abort(mt);
    leave(env);
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
