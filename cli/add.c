/*
 * crdtdb add, add-all, update and remove: the local writes, each one
 * transaction.
 */
#include "cli.h"

#include <stdlib.h>

/* add and update: DB COLL ID JSON. */
static int write_record(const char *dir, const args *a, int update)
{
    crdtdb_env *env;
    crdtdb_db *db;
    crdtdb_buf mp = CRDTDB_BUF_INIT;
    int status = parse_json(a->pos[3], &mp);
    if (status == 0 && (status = open_db(dir, a->pos[0], &env, &db)) == 0) {
        int rc = update ? crdtdb_db_update(db, NULL, a->pos[1], a->pos[2],
                                           mp.data, mp.len)
                        : crdtdb_db_add(db, NULL, a->pos[1], a->pos[2],
                                        mp.data, mp.len);
        if (rc == CRDTDB_ENOTFOUND)
            rc = fail_hint(crdtdb_db_errmsg(db), rc, "crdtdb add creates a record");
        else if (rc)
            rc = fail_db(db, rc);
        status = close_db(env, db, rc);
    }
    crdtdb_buf_free(&mp);
    return status;
}

int cmd_add(const char *dir, const args *a)
{
    return write_record(dir, a, 0);
}

int cmd_update(const char *dir, const args *a)
{
    return write_record(dir, a, 1);
}

/* DB COLL JSON: records by id, in one transaction. */
int cmd_add_all(const char *dir, const args *a)
{
    crdtdb_env *env;
    crdtdb_db *db;
    crdtdb_buf mp = CRDTDB_BUF_INIT;
    int status = parse_json(a->pos[2], &mp);
    if (status == 0 && (status = open_db(dir, a->pos[0], &env, &db)) == 0) {
        int rc = crdtdb_db_add_all(db, NULL, a->pos[1], mp.data, mp.len);
        status = close_db(env, db, rc ? fail_db(db, rc) : 0);
    }
    crdtdb_buf_free(&mp);
    return status;
}

int cmd_remove(const char *dir, const args *a)
{
    crdtdb_env *env;
    crdtdb_db *db;
    if (open_db(dir, a->pos[0], &env, &db))
        return EXIT_FAILURE;
    /* an absent record is no error: the replicated store's remove */
    int rc = crdtdb_db_remove(db, NULL, a->pos[1], a->pos[2]);
    return close_db(env, db, rc ? fail_db(db, rc) : 0);
}
