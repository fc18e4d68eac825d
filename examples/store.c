/*
 * Embedding the store: open an environment, create a database, write in a
 * batch, read, query, and observe — the same calls the crdtdb command makes.
 * Usage: example_store DIR
 */
#include <stdio.h>
#include <string.h>

#include "crdtdb.h"

static void on_event(void *ctx, const crdtdb_event *ev)
{
    static const char *names[] = {"", "add", "update", "remove", "multiple", "invalidate"};
    crdtdb_buf *json = ctx;
    if (ev->value && crdtdb_msgpack_to_json(ev->value, ev->len, json) == 0)
        printf("event: %s %s/%s %s\n", names[ev->type], ev->coll, ev->id, (char *)json->data);
    else
        printf("event: %s %s/%s\n", names[ev->type], ev->coll ? ev->coll : "*",
               ev->id ? ev->id : "-");
}

static int print_record(void *ctx, const char *id, const uint8_t *value, size_t len)
{
    crdtdb_buf *json = ctx;
    int rc = crdtdb_msgpack_to_json(value, len, json);
    if (rc == 0)
        printf("  %s: %s\n", id, (char *)json->data);
    return rc;
}

/* JSON text to msgpack, for brevity; real programs pack msgpack directly. */
static const uint8_t *mp(crdtdb_buf *b, const char *json)
{
    return crdtdb_json_to_msgpack(json, strlen(json), 0, b, NULL, 0) == 0 ? b->data : NULL;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s DIR\n", argv[0]);
        return 2;
    }
    crdtdb_env *env = NULL;
    crdtdb_db *db = NULL;
    crdtdb_txn *txn = NULL;
    crdtdb_observer *obs = NULL;
    crdtdb_buf v = CRDTDB_BUF_INIT, json = CRDTDB_BUF_INIT;
    int rc = crdtdb_env_open(argv[1], NULL, &env);
    if (rc) {
        fprintf(stderr, "open: %s\n", crdtdb_strerror(rc));
        return 1;
    }
    const char *colls[] = {"players", "moves"};
    rc = crdtdb_db_create(env, "match-42", colls, 2, &db);
    if (rc == CRDTDB_EEXIST)
        rc = crdtdb_db_open(env, "match-42", &db);
    if (rc) {
        fprintf(stderr, "db: %s\n", crdtdb_env_errmsg(env));
        goto out;
    }
    if ((rc = crdtdb_db_observe(db, NULL, on_event, &json, &obs)))
        goto fail;

    /* one batch, one durable commit, all or nothing */
    if ((rc = crdtdb_txn_begin(db, 0, &txn)))
        goto fail;
    mp(&v, "{\"name\":\"Ann\",\"hp\":100,\"pos\":{\"x\":0,\"y\":0}}");
    rc = crdtdb_db_add(db, txn, "players", "ann", v.data, v.len);
    mp(&v, "{\"name\":\"Bob\",\"hp\":80,\"pos\":{\"x\":4,\"y\":4}}");
    if (!rc)
        rc = crdtdb_db_add(db, txn, "players", "bob", v.data, v.len);
    if (rc) {
        crdtdb_txn_abort(txn);
        goto fail;
    }
    if ((rc = crdtdb_txn_commit(txn)))
        goto fail;

    mp(&v, "{\"pos\":{\"x\":1}}"); /* deep merge: y stays */
    if ((rc = crdtdb_db_update(db, NULL, "players", "ann", v.data, v.len)))
        goto fail;

    int found;
    if ((rc = crdtdb_db_get_by_id(db, NULL, "players", "carol", &v, &found)))
        goto fail;
    if (!found)
        printf("lookup: %s\n", crdtdb_db_errmsg(db));

    printf("players with hp >= 90:\n");
    mp(&v, "[[\"hp\", \">=\", 90]]");
    if ((rc = crdtdb_db_query(db, NULL, "players", v.data, v.len, print_record, &json)))
        goto fail;
    rc = crdtdb_db_remove(db, NULL, "players", "bob");
fail:
    if (rc)
        fprintf(stderr, "error %s: %s\n", crdtdb_errname(rc), crdtdb_db_errmsg(db));
out:
    crdtdb_observer_close(obs);
    crdtdb_db_close(db);
    crdtdb_env_close(env);
    crdtdb_buf_free(&v);
    crdtdb_buf_free(&json);
    return rc ? 1 : 0;
}
