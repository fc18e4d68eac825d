/* For operators: what a database holds (crdtdb_db_stat) and a hot copy of
 * the whole environment (crdtdb_env_backup). */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "storage/recs.h"

/* What crdtdb_db_stat counts into, for each record and change. */
typedef struct counting {
    crdtdb_db *db;
    crdtdb_db_stats *st;
} counting;

static int count_record(void *ctx, const MDB_val *k, const MDB_val *v)
{
    crdtdb_db *db = ((counting *)ctx)->db;
    crdtdb_db_stats *st = ((counting *)ctx)->st;
    int rc = crdtdb__record_decode(&db->rec, v->mv_data, v->mv_size,
                                   crdtdb__origins_at(&db->orig, db->txn->mt));
    if (rc)
        return crdtdb__db_seterr(db, rc, "stat: a record of '%s' is unreadable", db->id);
    st->record_bytes += k->mv_size + v->mv_size;
    if (crdtdb__record_visible(&db->rec)) {
        st->records++;
        st->fields += db->rec.nleaves;
    } else {
        st->removed += db->rec.base_kind == CRDTDB__BASE_REMOVE;
        st->hidden += db->rec.nleaves;
    }
    return 0;
}

static int count_change(void *ctx, const MDB_val *k, const MDB_val *v)
{
    crdtdb_db_stats *st = ((counting *)ctx)->st;
    st->log_entries++;
    st->log_bytes += k->mv_size + v->mv_size;
    return 0;
}

static int stat_call(crdtdb_db *db, crdtdb_db_stats *out)
{
    if (!db || !out)
        return CRDTDB_EINVAL;
    memset(out, 0, sizeof *out);
    crdtdb_txn *t;
    int own;
    int rc = crdtdb__txn_get(db, NULL, 0, &t, &own);
    if (rc)
        return rc;
    counting cn = {db, out};
    db->errcode = 0; /* what the walks below leave unset is told apart */
    if (!(rc = crdtdb__seq_read(db->env, t->mt, db->num, &out->seq)) &&
        !(rc = crdtdb__logfloor_read(db, t->mt, &out->log_floor)) &&
        !(rc = crdtdb__recs_each(db, t->mt, count_record, &cn)))
        rc = crdtdb__db_each(db, t->mt, db->env->dbi_changes, count_change, &cn);
    if (rc && db->errcode != rc) /* a walk's failure, which sets none */
        crdtdb__db_seterr(db, rc, "stat of '%s': %s", db->id,
                          rc == CRDTDB_ECORRUPT ? "a pack of records is unreadable"
                                                : crdtdb_strerror(rc));
    crdtdb_txn_abort(t);
    return rc;
}

int crdtdb_db_stat(crdtdb_db *db, crdtdb_db_stats *out)
{
    uint64_t m = crdtdb__db_enter(db);
    return crdtdb__db_exit(db, m, stat_call(db, out));
}

static int backup_call(crdtdb_env *env, const char *path)
{
    if (!env || !path || !*path)
        return CRDTDB_EINVAL;
    char file[4096], tmp[4096], tmpfile[4200];
    if (snprintf(file, sizeof file, "%s/data.mdb", path) >= (int)sizeof file ||
        snprintf(tmp, sizeof tmp, "%s/.backup-XXXXXX", path) >= (int)sizeof tmp)
        return CRDTDB_EINVAL;
    struct stat sb;
    if (stat(file, &sb) == 0) {
        crdtdb__env_seterr(env, CRDTDB_EEXIST, "backup to %s: it holds a data file already", path);
        return CRDTDB_EEXIST;
    }
    /* made aside, marked, then linked into place: the copy is never
     * visible unmarked (it would open as the original's identity), nor
     * half made, and never goes over an existing environment */
    if (!mkdtemp(tmp)) {
        int e = errno;
        crdtdb__env_seterr(env, e == EINVAL ? CRDTDB_EINVAL : CRDTDB_EIO, "backup to %s: %s", path,
                           strerror(e));
        return e == EINVAL ? CRDTDB_EINVAL : CRDTDB_EIO;
    }
    snprintf(tmpfile, sizeof tmpfile, "%s/data.mdb", tmp);
    int mrc = crdtdb__copy_dense(env, tmp, 1);
    if (!mrc && link(tmpfile, file) != 0)
        mrc = errno;
    unlink(tmpfile);
    rmdir(tmp);
    if (mrc) {
        int code = mrc == EEXIST ? CRDTDB_EEXIST : CRDTDB_EIO;
        crdtdb__env_seterr(env, code, "backup to %s: %s", path,
                           mrc == EEXIST ? "it holds a data file already" : crdtdb__mdb_str(mrc));
        return code;
    }
    int dfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC); /* the link, durable */
    if (dfd >= 0) {
        (void)fsync(dfd);
        close(dfd);
    }
    return 0;
}

int crdtdb_env_backup(crdtdb_env *env, const char *path)
{
    uint64_t m = crdtdb__env_enter(env);
    return crdtdb__env_exit(env, m, backup_call(env, path));
}
