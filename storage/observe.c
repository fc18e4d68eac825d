/* Observers: events recorded during a write, fired after commit; changes by
 * other handles or processes are read back from the change log. */
#include <stdlib.h>
#include <string.h>

#include "crdt/array.h"
#include "crdt/buf.h"
#include "storage/log.h"
#include "storage/recs.h"

static int observe_call(crdtdb_db *db, const char *coll, crdtdb_observe_cb cb,
                        void *ctx, crdtdb_observer **out)
{
    if (!db || !cb || !out)
        return CRDTDB_EINVAL;
    *out = NULL;
    int c = -1;
    if (coll && (c = crdtdb__db_coll(db, coll)) < 0)
        return c;
    crdtdb_observer *o = calloc(1, sizeof *o);
    if (!o)
        return crdtdb__db_seterr(db, CRDTDB_ENOMEM, "out of memory");
    o->db = db;
    o->coll = c;
    o->cb = cb;
    o->ctx = ctx;
    /* append, so observers fire in subscription order */
    crdtdb_observer **pp = &db->observers;
    while (*pp)
        pp = &(*pp)->next;
    *pp = o;
    *out = o;
    return 0;
}

int crdtdb_db_observe(crdtdb_db *db, const char *coll, crdtdb_observe_cb cb,
                      void *ctx, crdtdb_observer **out)
{
    uint64_t m = crdtdb__db_enter(db);
    return crdtdb__db_exit(db, m, observe_call(db, coll, cb, ctx, out));
}

static void observers_sweep(crdtdb_db *db)
{
    crdtdb_observer **pp = &db->observers;
    while (*pp) {
        crdtdb_observer *o = *pp;
        if (o->closed) {
            *pp = o->next;
            free(o);
        } else {
            pp = &o->next;
        }
    }
}

void crdtdb_observer_close(crdtdb_observer *obs)
{
    if (!obs)
        return;
    obs->closed = 1;
    if (!obs->db->dispatching)
        observers_sweep(obs->db);
}

void crdtdb__observers_free(crdtdb_db *db)
{
    while (db->observers) {
        crdtdb_observer *o = db->observers;
        db->observers = o->next;
        free(o);
    }
}

int crdtdb__event_add(crdtdb_txn *t, int type, uint16_t coll, const char *id,
                      size_t idlen, const uint8_t *val, size_t len)
{
    if (crdtdb__array_grow(&t->events, &t->events_cap, t->nevents, sizeof *t->events, 16))
        return CRDTDB_ENOMEM;
    crdtdb__event_rec *e = &t->events[t->nevents];
    e->type = (uint8_t)type;
    e->coll = coll;
    e->id_off = t->arena.len;
    static const uint8_t nul = 0;
    if (crdtdb__buf_append(&t->arena, id, idlen) ||
        crdtdb__buf_append(&t->arena, &nul, 1))
        return CRDTDB_ENOMEM;
    e->val_off = t->arena.len;
    e->val_len = len;
    if (crdtdb__buf_append(&t->arena, val, len))
        return CRDTDB_ENOMEM;
    t->nevents++;
    return 0;
}

void crdtdb__events_cancel(crdtdb_txn *t, uint32_t from, uint16_t coll, const char *id)
{
    if (t->nevents < 2 || t->nevents - 1 <= from)
        return;
    const char *arena = (const char *)t->arena.data;
    crdtdb__event_rec *last = &t->events[t->nevents - 1];
    if (last->type != CRDTDB_EVENT_REMOVE || last->coll != coll ||
        strcmp(arena + last->id_off, id) != 0)
        return;
    for (uint32_t i = from; i < t->nevents - 1; i++) {
        const crdtdb__event_rec *e = &t->events[i];
        if (e->type != CRDTDB_EVENT_ADD || e->coll != coll || strcmp(arena + e->id_off, id) != 0)
            continue;
        /* the arena keeps their bytes: it goes with the transaction */
        memmove(&t->events[i], &t->events[i + 1],
                (t->nevents - 2 - i) * sizeof *t->events);
        t->nevents -= 2;
        return;
    }
}

void crdtdb_observer_commits(crdtdb_observer *o)
{
    if (o)
        o->commits = 1;
}

/* Tells each observer (with commits_only, each that asked to hear of every
 * commit) one event of `type` naming its own collection. */
static void broadcast(crdtdb_db *db, crdtdb_event_type type, int commits_only)
{
    db->dispatching++;
    for (crdtdb_observer *o = db->observers; o; o = o->next) {
        if (o->closed || (commits_only && !o->commits))
            continue;
        crdtdb_event ev = {type, o->coll < 0 ? NULL : db->colls[o->coll], NULL, NULL, 0};
        o->cb(o->ctx, &ev);
    }
    if (--db->dispatching == 0)
        observers_sweep(db);
}

void crdtdb__events_dispatch(crdtdb_db *db, crdtdb_txn *t, int moved)
{
    if (!db->observers)
        return;
    if (!t->nevents && !t->many) {
        if (moved) /* numbered registers, changed no rendering */
            broadcast(db, CRDTDB_EVENT_MULTIPLE_CHANGES, 1);
        return;
    }
    db->dispatching++;
    uint32_t limit = db->env->opts.observe_batch_limit;
    for (crdtdb_observer *o = db->observers; o; o = o->next) {
        if (o->closed)
            continue;
        if (t->many) {
            crdtdb_event ev = {CRDTDB_EVENT_MULTIPLE_CHANGES,
                               o->coll < 0 ? NULL : db->colls[o->coll], NULL, NULL, 0};
            o->cb(o->ctx, &ev);
            continue;
        }
        uint32_t n = 0;
        for (uint32_t i = 0; i < t->nevents; i++)
            n += o->coll < 0 || o->coll == t->events[i].coll;
        if (n == 0)
            continue;
        const char *cname = o->coll < 0 ? NULL : db->colls[o->coll];
        if (n > limit) {
            crdtdb_event ev = {CRDTDB_EVENT_MULTIPLE_CHANGES, cname, NULL, NULL, 0};
            o->cb(o->ctx, &ev);
            continue;
        }
        for (uint32_t i = 0; i < t->nevents && !o->closed; i++) {
            const crdtdb__event_rec *r = &t->events[i];
            if (o->coll >= 0 && o->coll != r->coll)
                continue;
            crdtdb_event ev = {(crdtdb_event_type)r->type, db->colls[r->coll],
                               (const char *)t->arena.data + r->id_off,
                               r->val_len ? t->arena.data + r->val_off : NULL,
                               r->val_len};
            o->cb(o->ctx, &ev);
        }
    }
    if (--db->dispatching == 0)
        observers_sweep(db);
}

void crdtdb_db_invalidate(crdtdb_db *db)
{
    if (db)
        broadcast(db, CRDTDB_EVENT_INVALIDATE_ALL, 0);
}

/* 1 if the record (coll, id) already has an event in t. */
static int seen(const crdtdb_txn *t, uint32_t from, uint16_t coll,
                const uint8_t *id, size_t idlen)
{
    for (uint32_t i = from; i < t->nevents; i++) {
        const crdtdb__event_rec *e = &t->events[i];
        const char *eid = (const char *)t->arena.data + e->id_off;
        if (e->coll == coll && strlen(eid) == idlen && memcmp(eid, id, idlen) == 0)
            return 1;
    }
    return 0;
}

int crdtdb__events_from_log(crdtdb_db *db, crdtdb_txn *t, MDB_txn *mt,
                            uint64_t upto)
{
    crdtdb_env *env = db->env;
    uint64_t since = db->seen_seq;
    uint32_t first = t->nevents, distinct = 0;
    uint32_t limit = env->opts.observe_batch_limit;
    uint64_t lf;
    int rc = crdtdb__logfloor_read(db, mt, &lf);
    if (rc)
        return rc;
    if (since < lf) { /* a trim took entries it would list: say "many" */
        t->nevents = first;
        t->many = 1;
        return 0;
    }
    crdtdb__log_iter it;
    if ((rc = crdtdb__log_open(db, mt, since, &it)))
        return rc;
    crdtdb__record rec;
    crdtdb__record_init(&rec);
    crdtdb__held *held = NULL;
    int many = 0, found;
    crdtdb__log_entry e;
    while (!(rc = crdtdb__log_next(&it, &e, &found)) && found && e.seq <= upto) {
        uint16_t coll = e.coll;
        size_t idlen = e.idlen;
        const uint8_t *id = e.id;
        if (coll >= db->ncoll || seen(t, first, coll, id, idlen))
            continue;
        if (++distinct > limit) {
            many = 1;
            break;
        }
        uint8_t key[CRDTDB__RECKEY_MAX];
        MDB_val rk = {crdtdb__reckey(key, db->num, coll, (const char *)id, idlen), key}, rv;
        int type = 0, got = crdtdb__recs_get(env, mt, &held, &rk, &rv);
        if (got && got != MDB_NOTFOUND) { /* an event dropped unsaid is worse */
            rc = crdtdb__mdb_err(got);
            break;
        }
        if (got == 0 &&
            crdtdb__record_decode(&rec, rv.mv_data, rv.mv_size,
                                  crdtdb__origins_at(&db->orig, mt)) == 0) {
            int vis = crdtdb__record_visible(&rec);
            if (rec.vis_seq) { /* as observers say it: when the rendering
                                  changed since, Add if it (re)appeared */
                if (rec.vis_seq > since)
                    type = !vis                    ? CRDTDB_EVENT_REMOVE
                           : rec.shown_seq > since ? CRDTDB_EVENT_ADD
                                                   : CRDTDB_EVENT_UPDATE;
            } else { /* written before blobs kept vis_seq: by the base */
                int fresh = rec.base_seq > since;
                if (vis)
                    type = fresh ? CRDTDB_EVENT_ADD : CRDTDB_EVENT_UPDATE;
                else if (rec.base_kind == CRDTDB__BASE_REMOVE && fresh)
                    type = CRDTDB_EVENT_REMOVE;
            }
        }
        if (type && crdtdb__event_add(t, type, coll, (const char *)id, idlen,
                                      rec.visible, type == CRDTDB_EVENT_REMOVE ? 0 : rec.visible_len)) {
            rc = CRDTDB_ENOMEM;
            break;
        }
    }
    crdtdb__log_close(&it);
    crdtdb__record_free(&rec);
    crdtdb__held_free(&held);
    if (rc)
        return rc;
    if (many) {
        /* Too many to list: every observer gets one MultipleChanges. */
        t->nevents = first;
        t->many = 1;
    }
    return 0;
}

static int poll_call(crdtdb_db *db, size_t *n)
{
    if (n)
        *n = 0;
    if (!db)
        return CRDTDB_EINVAL;
    if (db->txn)
        return crdtdb__db_seterr(db, CRDTDB_EBUSY, "a transaction is open on this handle");
    crdtdb_txn *t;
    int rc = crdtdb_txn_begin(db, CRDTDB_TXN_RDONLY, &t);
    if (rc)
        return rc;
    rc = crdtdb__seq_read(db->env, t->mt, db->num, &t->seq0);
    crdtdb__floor f; /* the floor too: another process's collection shows now */
    if (!rc && !(rc = crdtdb__floor_read(db, t->mt, &f))) {
        db->hz = f;
        db->hz_read_ms = crdtdb__now_ms(db->env);
        db->hz_known = 1;
    }
    int moved = 0;
    if (!rc && t->seq0 > db->seen_seq) {
        moved = 1;
        rc = crdtdb__events_from_log(db, t, t->mt, t->seq0);
        if (!rc)
            db->seen_seq = t->seq0;
        if (!rc && n)
            *n = t->many ? (size_t)db->env->opts.observe_batch_limit + 1 : t->nevents;
    }
    MDB_txn *mt = t->mt;
    t->mt = NULL;
    db->txn = NULL;
    if (!rc) {
        /* Events borrow the snapshot's pages only through copies in the
         * arena, so the snapshot can end before observers run. */
        crdtdb__mt_abort(db->env, mt);
        crdtdb__events_dispatch(db, t, moved);
    } else {
        crdtdb__mt_abort(db->env, mt);
    }
    crdtdb_txn_abort(t);
    return rc;
}

int crdtdb_db_poll(crdtdb_db *db, size_t *n)
{
    uint64_t m = crdtdb__db_enter(db);
    return crdtdb__db_exit(db, m, poll_call(db, n));
}
