/* Observers: Add / Update / Remove / MultipleChanges / InvalidateAll. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crdt/buf.h"
#include "tests/testutil.h"

static char *dir;
static crdtdb_env *env;
static crdtdb_db *db;
static crdtdb_buf mp;

/* Events as lines "type coll id json", appended to a buffer. */
typedef struct log {
    crdtdb_buf text;
    int n;
    crdtdb_observer *self; /* closes itself after `close_after` events */
    int close_after;
} evlog;

static const char *NAMES[] = {"?", "add", "update", "remove", "multiple", "invalidate"};

static void on_event(void *ctx, const crdtdb_event *ev)
{
    evlog *l = ctx;
    char line[512];
    char *json = ev->value ? tu_json(ev->value, ev->len) : NULL;
    snprintf(line, sizeof line, "%s %s %s %s\n", NAMES[ev->type],
             ev->coll ? ev->coll : "*", ev->id ? ev->id : "-", json ? json : "-");
    free(json);
    crdtdb__buf_append(&l->text, line, strlen(line) + 1);
    l->text.len--;
    l->n++;
    if (l->self && l->n == l->close_after)
        crdtdb_observer_close(l->self);
}

static void setup(void)
{
    crdtdb_env_options o;
    crdtdb_env_options_init(&o);
    o.observe_batch_limit = 5;
    env = tu_env(&dir, &o);
    const char *colls[] = {"players", "moves"};
    ck_assert_int_eq(crdtdb_db_create(env, "m", colls, 2, &db), 0);
    memset(&mp, 0, sizeof mp);
}

static void teardown(void)
{
    crdtdb_db_close(db);
    crdtdb_env_close(env);
    tu_rmrf(dir);
    free(dir);
    crdtdb_buf_free(&mp);
}

static void add(crdtdb_db *d, const char *coll, const char *id, const char *json)
{
    tu_mp(&mp, json);
    ck_assert_int_eq(crdtdb_db_add(d, NULL, coll, id, mp.data, mp.len), 0);
}

static void update(crdtdb_db *d, const char *coll, const char *id, const char *json)
{
    tu_mp(&mp, json);
    ck_assert_int_eq(crdtdb_db_update(d, NULL, coll, id, mp.data, mp.len), 0);
}

static const char *text(evlog *l)
{
    static const char empty[] = "";
    return l->text.len ? (const char *)l->text.data : empty;
}

START_TEST(add_update_remove_events)
{
    evlog l = {0};
    crdtdb_observer *o;
    ck_assert_int_eq(crdtdb_db_observe(db, NULL, on_event, &l, &o), 0);
    add(db, "players", "p1", "{\"hp\":10}");
    update(db, "players", "p1", "{\"hp\":9,\"pos\":{\"x\":1}}");
    update(db, "players", "p1", "{\"hp\":9}"); /* no visible change: no event */
    ck_assert_int_eq(crdtdb_db_remove(db, NULL, "players", "p1"), 0);
    add(db, "moves", "m1", "{}");
    ck_assert_str_eq(text(&l), "add players p1 {\"hp\":10}\n"
                               "update players p1 {\"hp\":9,\"pos\":{\"x\":1}}\n"
                               "remove players p1 -\n"
                               "add moves m1 {}\n");
    /* failed writes fire nothing */
    l.text.len = 0;
    tu_mp(&mp, "{\"a\":1}");
    ck_assert_int_eq(crdtdb_db_update(db, NULL, "players", "p1", mp.data, mp.len), CRDTDB_ENOTFOUND);
    ck_assert_uint_eq(l.text.len, 0);
    crdtdb_observer_close(o);
    add(db, "players", "p2", "{}");
    ck_assert_uint_eq(l.text.len, 0);
    crdtdb_buf_free(&l.text);
}
END_TEST

/* An observer that asked for every commit (a sync session's) hears of
 * one that changed no rendering — a same-value write, a remove of a record
 * not shown — as MultipleChanges; the others hear nothing of it. */
START_TEST(commits_that_change_no_rendering)
{
    evlog all = {0}, shown = {0};
    crdtdb_observer *o1, *o2;
    ck_assert_int_eq(crdtdb_db_observe(db, NULL, on_event, &all, &o1), 0);
    crdtdb_observer_commits(o1);
    crdtdb_observer_commits(NULL); /* accepted */
    ck_assert_int_eq(crdtdb_db_observe(db, NULL, on_event, &shown, &o2), 0);
    add(db, "players", "p1", "{\"hp\":10}");
    update(db, "players", "p1", "{\"hp\":10}"); /* the same value, a new stamp */
    ck_assert_str_eq(text(&all), "add players p1 {\"hp\":10}\n"
                                 "multiple * - -\n");
    ck_assert_str_eq(text(&shown), "add players p1 {\"hp\":10}\n");
    /* a read-only transaction numbers nothing: no event */
    crdtdb_txn *t;
    ck_assert_int_eq(crdtdb_txn_begin(db, CRDTDB_TXN_RDONLY, &t), 0);
    crdtdb_txn_abort(t);
    ck_assert_int_eq(all.n, 2);
    crdtdb_buf_free(&all.text);
    crdtdb_buf_free(&shown.text);
}
END_TEST

START_TEST(collection_filter)
{
    evlog l = {0};
    crdtdb_observer *o;
    ck_assert_int_eq(crdtdb_db_observe(db, "moves", on_event, &l, &o), 0);
    add(db, "players", "p1", "{}");
    add(db, "moves", "m1", "{\"to\":\"e4\"}");
    ck_assert_str_eq(text(&l), "add moves m1 {\"to\":\"e4\"}\n");
    crdtdb_buf_free(&l.text);
}
END_TEST

START_TEST(events_fire_after_commit_only)
{
    evlog l = {0};
    crdtdb_observer *o;
    ck_assert_int_eq(crdtdb_db_observe(db, NULL, on_event, &l, &o), 0);
    crdtdb_txn *t;
    ck_assert_int_eq(crdtdb_txn_begin(db, 0, &t), 0);
    tu_mp(&mp, "{\"a\":1}");
    ck_assert_int_eq(crdtdb_db_add(db, t, "players", "p1", mp.data, mp.len), 0);
    ck_assert_int_eq(crdtdb_db_add(db, t, "players", "p2", mp.data, mp.len), 0);
    ck_assert_int_eq(l.n, 0);
    ck_assert_int_eq(crdtdb_txn_commit(t), 0);
    ck_assert_int_eq(l.n, 2);
    ck_assert_int_eq(crdtdb_txn_begin(db, 0, &t), 0);
    ck_assert_int_eq(crdtdb_db_add(db, t, "players", "p3", mp.data, mp.len), 0);
    crdtdb_txn_abort(t);
    ck_assert_int_eq(l.n, 2);
    crdtdb_buf_free(&l.text);
}
END_TEST

START_TEST(large_batch_is_multiple_changes)
{
    evlog all = {0}, moves = {0};
    crdtdb_observer *o1, *o2;
    ck_assert_int_eq(crdtdb_db_observe(db, NULL, on_event, &all, &o1), 0);
    ck_assert_int_eq(crdtdb_db_observe(db, "moves", on_event, &moves, &o2), 0);
    crdtdb_txn *t;
    ck_assert_int_eq(crdtdb_txn_begin(db, 0, &t), 0);
    tu_mp(&mp, "{\"a\":1}");
    char id[16];
    for (int i = 0; i < 6; i++) {
        snprintf(id, sizeof id, "p%d", i);
        ck_assert_int_eq(crdtdb_db_add(db, t, "players", id, mp.data, mp.len), 0);
    }
    ck_assert_int_eq(crdtdb_db_add(db, t, "moves", "m1", mp.data, mp.len), 0);
    ck_assert_int_eq(crdtdb_txn_commit(t), 0);
    ck_assert_str_eq(text(&all), "multiple * - -\n");
    ck_assert_str_eq(text(&moves), "add moves m1 {\"a\":1}\n");
    crdtdb_buf_free(&all.text);
    crdtdb_buf_free(&moves.text);
}
END_TEST

START_TEST(invalidate_all)
{
    evlog l = {0};
    crdtdb_observer *o;
    ck_assert_int_eq(crdtdb_db_observe(db, "players", on_event, &l, &o), 0);
    crdtdb_db_invalidate(db);
    ck_assert_str_eq(text(&l), "invalidate players - -\n");
    crdtdb_buf_free(&l.text);
}
END_TEST

START_TEST(observer_may_close_itself)
{
    evlog l = {0}, other = {0};
    crdtdb_observer *o2;
    ck_assert_int_eq(crdtdb_db_observe(db, NULL, on_event, &l, &l.self), 0);
    ck_assert_int_eq(crdtdb_db_observe(db, NULL, on_event, &other, &o2), 0);
    l.close_after = 1;
    crdtdb_txn *t;
    ck_assert_int_eq(crdtdb_txn_begin(db, 0, &t), 0);
    tu_mp(&mp, "{\"a\":1}");
    ck_assert_int_eq(crdtdb_db_add(db, t, "players", "p1", mp.data, mp.len), 0);
    ck_assert_int_eq(crdtdb_db_add(db, t, "players", "p2", mp.data, mp.len), 0);
    ck_assert_int_eq(crdtdb_txn_commit(t), 0);
    ck_assert_int_eq(l.n, 1);
    ck_assert_int_eq(other.n, 2);
    add(db, "players", "p3", "{}");
    ck_assert_int_eq(l.n, 1);
    ck_assert_int_eq(other.n, 3);
    crdtdb_buf_free(&l.text);
    crdtdb_buf_free(&other.text);
}
END_TEST

/* An observer that writes in reaction gets its own commit and events. */
static void write_back(void *ctx, const crdtdb_event *ev)
{
    int *n = ctx;
    if (ev->type == CRDTDB_EVENT_ADD && strcmp(ev->coll, "players") == 0) {
        crdtdb_buf b = CRDTDB_BUF_INIT;
        tu_mp(&b, "{\"seen\":true}");
        ck_assert_int_eq(crdtdb_db_add(db, NULL, "moves", ev->id, b.data, b.len), 0);
        crdtdb_buf_free(&b);
    }
    ++*n;
}

START_TEST(observer_may_write)
{
    int n = 0;
    crdtdb_observer *o;
    ck_assert_int_eq(crdtdb_db_observe(db, NULL, write_back, &n, &o), 0);
    add(db, "players", "p1", "{}");
    ck_assert_int_eq(n, 2); /* its own add to moves fired too */
    char *s = tu_get(db, "moves", "p1");
    ck_assert_str_eq(s, "{\"seen\":true}");
    free(s);
}
END_TEST

START_TEST(poll_reports_other_handles)
{
    crdtdb_db *other;
    ck_assert_int_eq(crdtdb_db_open(env, "m", &other), 0);
    add(db, "players", "old", "{\"v\":0}");
    evlog l = {0};
    crdtdb_observer *o;
    ck_assert_int_eq(crdtdb_db_observe(db, NULL, on_event, &l, &o), 0);
    size_t n = 99;
    ck_assert_int_eq(crdtdb_db_poll(db, &n), 0);
    ck_assert_uint_eq(n, 0);
    add(other, "players", "p1", "{\"v\":1}");
    /* an aborted write txn on our handle must not swallow those changes */
    crdtdb_txn *t;
    ck_assert_int_eq(crdtdb_txn_begin(db, 0, &t), 0);
    crdtdb_txn_abort(t);
    update(other, "players", "p1", "{\"v\":2}");
    update(other, "players", "old", "{\"v\":3}");
    ck_assert_int_eq(crdtdb_db_remove(other, NULL, "players", "old"), 0);
    add(other, "moves", "m", "{}");
    ck_assert_int_eq(l.n, 0);
    ck_assert_int_eq(crdtdb_db_poll(db, &n), 0);
    ck_assert_uint_eq(n, 3);
    ck_assert_str_eq(text(&l), "add players p1 {\"v\":2}\n"
                               "remove players old -\n"
                               "add moves m {}\n");
    l.text.len = 0;
    ck_assert_int_eq(crdtdb_db_poll(db, &n), 0);
    ck_assert_uint_eq(n, 0);
    /* changes by others are reported before our own write, exactly once */
    update(other, "players", "p1", "{\"v\":4}");
    add(db, "moves", "mine", "{}");
    ck_assert_str_eq(text(&l), "update players p1 {\"v\":4}\n"
                               "add moves mine {}\n");
    ck_assert_int_eq(crdtdb_db_poll(db, &n), 0);
    ck_assert_uint_eq(n, 0);
    /* as in-process observers say it: an add over an existing record is an
     * Update, and a write that changes nothing is no event */
    l.text.len = 0;
    add(other, "players", "p1", "{\"v\":5}");
    update(other, "moves", "m", "{}");
    add(other, "moves", "m", "{}"); /* the same value again */
    ck_assert_int_eq(crdtdb_db_poll(db, &n), 0);
    ck_assert_str_eq(text(&l), "update players p1 {\"v\":5}\n");
    ck_assert_uint_eq(n, 1);
    /* many changes become one MultipleChanges */
    l.text.len = 0;
    char id[8];
    for (int i = 0; i < 7; i++) {
        snprintf(id, sizeof id, "x%d", i);
        add(other, "players", id, "{}");
    }
    ck_assert_int_eq(crdtdb_db_poll(db, &n), 0);
    ck_assert_str_eq(text(&l), "multiple * - -\n");
    crdtdb_db_close(other);
    crdtdb_buf_free(&l.text);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("observe");
    TCase *tc = tcase_create("observe");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, add_update_remove_events);
    tcase_add_test(tc, collection_filter);
    tcase_add_test(tc, commits_that_change_no_rendering);
    tcase_add_test(tc, events_fire_after_commit_only);
    tcase_add_test(tc, large_batch_is_multiple_changes);
    tcase_add_test(tc, invalidate_all);
    tcase_add_test(tc, observer_may_close_itself);
    tcase_add_test(tc, observer_may_write);
    tcase_add_test(tc, poll_reports_other_handles);
    suite_add_tcase(s, tc);
    return tu_run(s);
}
