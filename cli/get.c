/*
 * crdtdb get and query: reading records as JSON, each as the DataStore
 * shows it ({"id": ID, ...its fields}).
 */
#include "cli.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int cmd_get(const char *dir, const args *a)
{
    crdtdb_env *env;
    crdtdb_db *db;
    crdtdb_buf mp = CRDTDB_BUF_INIT, rec = CRDTDB_BUF_INIT, json = CRDTDB_BUF_INIT;
    int found = 0, status;
    if (open_db(dir, a->pos[0], &env, &db))
        return EXIT_FAILURE;
    int rc = crdtdb_db_get_by_id(db, NULL, a->pos[1], a->pos[2], &mp, &found);
    if (rc)
        status = fail_db(db, rc);
    else if (!found)
        status = fail_hint(crdtdb_db_errmsg(db), CRDTDB_ENOTFOUND,
                           "crdtdb query DB COLL lists the records");
    else if ((rc = record_json(a->pos[2], mp.data, mp.len, &rec, &json)) != 0)
        status = fail(NULL, rc);
    else
        status = printf("%s\n", (char *)json.data) < 0 || fflush(stdout)
                     ? fail(strerror(errno), CRDTDB_EIO)
                     : 0;
    crdtdb_buf_free(&mp);
    crdtdb_buf_free(&rec);
    crdtdb_buf_free(&json);
    return close_db(env, db, status);
}

typedef struct query_ctx {
    FILE *out;
    crdtdb_buf rec, json;
    size_t n;
    int rc;
} query_ctx;

static int print_match(void *ctx, const char *id, const uint8_t *value,
                       size_t len)
{
    query_ctx *q = ctx;
    if ((q->rc = record_json(id, value, len, &q->rec, &q->json)) != 0)
        return 1;
    fputs(q->n++ ? "," : "", q->out);
    fputs((const char *)q->json.data, q->out);
    return 0;
}

int cmd_query(const char *dir, const args *a)
{
    crdtdb_env *env;
    crdtdb_db *db;
    crdtdb_buf crit = CRDTDB_BUF_INIT;
    query_ctx q = {NULL, CRDTDB_BUF_INIT, CRDTDB_BUF_INIT, 0, 0};
    char *text = NULL;
    size_t len = 0;
    if (a->npos > 2 && parse_json(a->pos[2], &crit))
        return EXIT_FAILURE;
    if (open_db(dir, a->pos[0], &env, &db)) {
        crdtdb_buf_free(&crit);
        return EXIT_FAILURE;
    }
    int status = 0;
    if (!(q.out = open_memstream(&text, &len)))
        status = fail(NULL, CRDTDB_ENOMEM);
    if (status == 0) {
        fputc('[', q.out);
        int rc = crdtdb_db_query(db, NULL, a->pos[1],
                                 a->npos > 2 ? crit.data : NULL, crit.len,
                                 print_match, &q);
        if (q.rc)
            status = fail(NULL, q.rc);
        else if (rc)
            status = fail_db(db, rc);
        fputs("]\n", q.out);
        if (status == 0) {
            status = emit(q.out, &text, &len);
        } else {
            fclose(q.out);
            free(text);
        }
    }
    crdtdb_buf_free(&crit);
    crdtdb_buf_free(&q.rec);
    crdtdb_buf_free(&q.json);
    return close_db(env, db, status);
}
