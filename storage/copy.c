/*
 * A dense copy of an environment: every table rewritten in key order into
 * a new one (MDB_APPEND fills each page before it starts the next).  LMDB's
 * own compacting copy leaves out free pages but copies the others as they
 * are, and a database that churned leaves its B-tree pages a third full;
 * rewritten, the same data takes a third of the space.  One read snapshot
 * is the source, so the copy is consistent while writers go on.
 */
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "storage/recs.h"

#define COPY_BATCH 8192 /* entries per write txn: a txn's dirty pages are bounded */

/* the tables (internal.h), by name and the env's open handle */
static const struct {
    const char *name;
    size_t dbi;
} tables[] = {
    {"meta", offsetof(crdtdb_env, dbi_meta)},       {"dbs", offsetof(crdtdb_env, dbi_dbs)},
    {"dbinfo", offsetof(crdtdb_env, dbi_dbinfo)},   {"records", offsetof(crdtdb_env, dbi_records)},
    {"changes", offsetof(crdtdb_env, dbi_changes)}, {"peerids", offsetof(crdtdb_env, dbi_peerids)},
    {"marks", offsetof(crdtdb_env, dbi_marks)},     {"chains", offsetof(crdtdb_env, dbi_chains)},
    {"packs", offsetof(crdtdb_env, dbi_packs)},
};

/* Copies table `name` from src (read txn) into dst, committing every
 * COPY_BATCH entries.  *dt is dst's open write txn (replaced on commits).
 * An LMDB code. */
static int copy_table(MDB_txn *src, MDB_dbi sd, MDB_env *dst, MDB_txn **dt, const char *name)
{
    MDB_dbi dd;
    MDB_cursor *sc = NULL, *dc = NULL;
    int rc;
    if ((rc = mdb_dbi_open(*dt, name, MDB_CREATE, &dd)) || (rc = mdb_cursor_open(src, sd, &sc)))
        return rc;
    MDB_val k, v;
    size_t n = 0;
    for (rc = mdb_cursor_get(sc, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(sc, &k, &v, MDB_NEXT)) {
        if (!dc && (rc = mdb_cursor_open(*dt, dd, &dc)))
            break;
        if ((rc = mdb_cursor_put(dc, &k, &v, MDB_APPEND)))
            break;
        if (++n % COPY_BATCH == 0) { /* the cursor goes with its txn */
            dc = NULL;
            if ((rc = mdb_txn_commit(*dt)) || (rc = mdb_txn_begin(dst, NULL, 0, dt))) {
                *dt = NULL;
                break;
            }
        }
    }
    mdb_cursor_close(sc);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

int crdtdb__copy_dense(crdtdb_env *env, const char *dir, int mark_restored)
{
    MDB_env *dst;
    MDB_envinfo info;
    MDB_txn *src = NULL, *dt = NULL;
    int rc = mdb_env_create(&dst);
    if (rc)
        return rc;
    mdb_env_info(env->mdb, &info);
    if ((rc = mdb_env_set_maxdbs(dst, 16)) || (rc = mdb_env_set_mapsize(dst, info.me_mapsize)) ||
        (rc = mdb_env_open(dst, dir, MDB_NOTLS | MDB_NOSYNC, 0600))) /* the secret key */
        goto out;
    int empty; /* a read-only handle on a version 4 env: still version 4 */
    if ((rc = crdtdb__mt_begin(env, MDB_RDONLY, &src)) ||
        (env->no_packs && (rc = crdtdb__packs_empty(env, src, &empty))) ||
        (rc = mdb_txn_begin(dst, NULL, 0, &dt)))
        goto out;
    for (size_t i = 0; !rc && i < sizeof tables / sizeof *tables; i++)
        if (!env->no_packs || strcmp(tables[i].name, "packs") != 0)
            rc = copy_table(src, *(const MDB_dbi *)((const char *)env + tables[i].dbi), dst, &dt,
                        tables[i].name);
    if (!rc && mark_restored) { /* its first read-write open: a new identity */
        MDB_dbi meta;
        MDB_val k = {8, (void *)"restored"}, v = {1, (void *)"1"};
        if (!(rc = mdb_dbi_open(dt, "meta", MDB_CREATE, &meta)))
            rc = mdb_put(dt, meta, &k, &v, 0);
    }
    if (!rc) {
        rc = mdb_txn_commit(dt);
        dt = NULL;
    }
    if (!rc)
        rc = mdb_env_sync(dst, 1);
out:
    if (dt)
        mdb_txn_abort(dt);
    if (src)
        crdtdb__mt_abort(env, src);
    mdb_env_close(dst);
    char lock[4200]; /* made by this open; not part of the copy */
    snprintf(lock, sizeof lock, "%s/lock.mdb", dir);
    unlink(lock);
    return rc;
}
