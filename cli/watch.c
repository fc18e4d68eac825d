/*
 * crdtdb watch: change events as JSON lines, until interrupted or after
 * --count of them.  print_event is also sync --watch's printer.
 */
#include "cli.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

void print_event(void *ctx, const crdtdb_event *ev)
{
    static const char *const names[] = {
        [CRDTDB_EVENT_ADD] = "add",
        [CRDTDB_EVENT_UPDATE] = "update",
        [CRDTDB_EVENT_REMOVE] = "remove",
        [CRDTDB_EVENT_MULTIPLE_CHANGES] = "multiple_changes",
        [CRDTDB_EVENT_INVALIDATE_ALL] = "invalidate_all"};
    watch_ctx *w = ctx;
    if (w->remaining == 0 || w->rc || ev->type < CRDTDB_EVENT_ADD ||
        ev->type > CRDTDB_EVENT_INVALIDATE_ALL)
        return;
    if (ev->value && (w->rc = ev->id ? record_json(ev->id, ev->value, ev->len, &w->rec, &w->json)
                                     : crdtdb_msgpack_to_json(ev->value, ev->len, &w->json)) != 0)
        return;
    printf("{\"event\":\"%s\",\"collection\":", names[ev->type]);
    if (ev->coll)
        put_json_str(stdout, ev->coll);
    else
        fputs("null", stdout);
    if (ev->id) {
        fputs(",\"id\":", stdout);
        put_json_str(stdout, ev->id);
    }
    if (ev->value)
        printf(",\"value\":%s", (char *)w->json.data);
    fputs("}\n", stdout);
    if (fflush(stdout) != 0)
        w->rc = CRDTDB_EIO;
    if (w->remaining > 0)
        w->remaining--;
}

int cmd_watch(const char *dir, const args *a)
{
    crdtdb_env *env;
    crdtdb_db *db;
    crdtdb_observer *obs;
    watch_ctx w = {CRDTDB_BUF_INIT, CRDTDB_BUF_INIT, -1, 0};
    if (a->count) {
        char *end;
        errno = 0;
        w.remaining = strtol(a->count, &end, 10);
        if (errno || end == a->count || *end || w.remaining < 0) {
            fprintf(stderr, "crdtdb: --count needs a number >= 0\n");
            return EXIT_USAGE;
        }
    }
    catch_signals(SA_RESTART); /* only the nanosleep should see EINTR */

    if (open_db(dir, a->pos[0], &env, &db))
        return EXIT_FAILURE;
    int rc = crdtdb_db_observe(db, a->npos > 1 ? a->pos[1] : NULL,
                               print_event, &w, &obs);
    if (rc)
        return close_db(env, db, fail_db(db, rc));
    const struct timespec tick = {0, 50 * 1000 * 1000};
    while (!stopped() && w.remaining != 0 && !w.rc && !rc) {
        rc = crdtdb_db_poll(db, NULL);
        if (!rc && w.remaining != 0 && !w.rc)
            nanosleep(&tick, NULL); /* a signal cuts it short */
    }
    int status = 0;
    if (w.rc)
        status = fail(NULL, w.rc);
    else if (rc)
        status = fail(crdtdb_db_errmsg(db), rc);
    crdtdb_observer_close(obs);
    crdtdb_buf_free(&w.rec);
    crdtdb_buf_free(&w.json);
    return close_db(env, db, status);
}
