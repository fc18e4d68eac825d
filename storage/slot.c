/*
 * The record slot (slot.h): one record's read-modify-write inside a write
 * transaction — load it, let the caller merge into db->rec, then number the
 * new registers, store the blob, log the changes and note the observer
 * event.  Local writes (write.c), merges (apply.c) and purges share it, so
 * it is a room of its own rather than part of any of them.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "crdt/buf.h"
#include "storage/log.h"
#include "storage/recs.h"
#include "storage/slot.h"

/* Loads the record into db->rec (its blob copied into db->blob: LMDB pages
 * may move once we write). */
int crdtdb__slot_load(crdtdb_txn *t, crdtdb__slot *s, uint16_t coll,
                      const char *id)
{
    crdtdb_db *db = t->db;
    s->coll = coll;
    s->id = id;
    s->idlen = strlen(id);
    s->k.mv_size = crdtdb__reckey(s->key, db->num, coll, id, s->idlen);
    s->k.mv_data = s->key;
    s->seq_before = t->seq;
    MDB_val v, k = s->k;
    /* one cursor: the store replaces the record where the load found it,
     * saving a second descent of the tree */
    int rc = t->rec_cur ? 0 : mdb_cursor_open(t->mt, db->env->dbi_records, &t->rec_cur);
    if (!rc)
        rc = mdb_cursor_get(t->rec_cur, &k, &v, MDB_SET_KEY);
    /* a packed record is read from its pack; it goes loose only if it is
     * stored (slot_place): a load that changes nothing unpacks nothing */
    s->packed = 0;
    if (rc == MDB_NOTFOUND) {
        rc = crdtdb__recs_get_packed(db->env, t->mt, &t->held, &s->k, &v);
        s->packed = rc == 0;
        /* the blob is copied below: only the pack it came from (the list's
         * first) stays, a cache for its neighbours' loads (a resync loads
         * every record) */
        crdtdb__held_trim(&t->held, 1);
        if (rc == MDB_CORRUPTED)
            return crdtdb__db_seterr(db, CRDTDB_ECORRUPT, "record '%s' in '%s': its pack is "
                                     "unreadable", id, db->colls[coll]);
    }
    s->exists = rc == 0;
    crdtdb__record_clear(&db->rec);
    db->blob.len = 0;
    if (rc == MDB_NOTFOUND) {
        s->was_visible = 0;
        return 0;
    }
    if (rc)
        return crdtdb__db_seterr(db, crdtdb__mdb_err(rc), "read: %s", crdtdb__mdb_str(rc));
    if (crdtdb__buf_set(&db->blob, v.mv_data, v.mv_size))
        return crdtdb__db_seterr(db, CRDTDB_ENOMEM, "out of memory");
    rc = crdtdb__record_decode(&db->rec, db->blob.data, db->blob.len,
                              crdtdb__origins_at(&db->orig, t->mt));
    if (rc)
        return crdtdb__db_seterr(db, rc, "record '%s' in '%s' is unreadable: %s",
                                 id, db->colls[coll], crdtdb_strerror(rc));
    s->was_visible = crdtdb__record_visible(&db->rec);
    return 0;
}

int crdtdb__slot_place(crdtdb_txn *t, crdtdb__slot *s)
{
    if (!s->packed)
        return 0;
    crdtdb_db *db = t->db;
    MDB_val k = s->k, v;
    int unpacked, rc = crdtdb__recs_unpack(db->env, t->mt, &t->held, &s->k, &unpacked);
    if (!rc)
        rc = unpacked ? mdb_cursor_get(t->rec_cur, &k, &v, MDB_SET_KEY) : MDB_CORRUPTED;
    if (rc == MDB_CORRUPTED)
        return crdtdb__db_seterr(db, CRDTDB_ECORRUPT, "record '%.*s': its pack is unreadable",
                                 (int)s->idlen, s->id);
    if (rc)
        return crdtdb__db_seterr(db, crdtdb__mdb_err(rc), "unpack: %s", crdtdb__mdb_str(rc));
    s->packed = 0;
    return 0;
}

/* Numbers the new registers, stores the record and its change-log entries,
 * and records the observer event. */
int crdtdb__slot_store(crdtdb_txn *t, crdtdb__slot *s, uint32_t src)
{
    crdtdb_db *db = t->db;
    crdtdb__record *r = &db->rec;
    crdtdb_env *env = db->env;
    /* Limits bound what a local write may add.  A merge stores what the
     * LWW rules say, or two replicas whose legal writes combine past a
     * limit would refuse each other forever. */
    int local = src == CRDTDB__SRC_LOCAL;
    if (local && r->nleaves > env->lim.max_fields)
        return crdtdb__db_seterr(db, CRDTDB_ETOOBIG,
                                 "record would have more than %u fields",
                                 (unsigned)env->lim.max_fields);
    uint64_t first = t->seq + 1; /* the run this store numbers */
    if (r->base_kind != CRDTDB__BASE_NONE && r->base_seq == 0) {
        r->base_seq = ++t->seq;
        crdtdb__chain_note(t, r->base_seq, s->coll, s->id, s->idlen, NULL, 0, r->base_hlc,
                           r->origins[r->base_origin], r->base_kind);
    }
    for (uint32_t i = 0; i < r->nleaves; i++) {
        crdtdb__leaf *l = &r->leaves[i];
        if (l->seq == 0) {
            l->seq = ++t->seq;
            crdtdb__chain_note(t, l->seq, s->coll, s->id, s->idlen, l->path, l->path_len,
                               l->hlc, r->origins[l->origin], l->kind);
        }
    }
    if (r->nleaves > db->voff_cap) { /* one offset a leaf */
        uint32_t *v = realloc(db->voff, r->nleaves * sizeof *v);
        if (!v)
            return crdtdb__db_seterr(db, CRDTDB_ENOMEM, "out of memory");
        db->voff = v;
        db->voff_cap = r->nleaves;
    }
    int rc = crdtdb__record_render_at(r, &db->vis, db->voff);
    if (rc)
        return crdtdb__db_seterr(db, rc, "render: %s", crdtdb_strerror(rc));
    if (local && db->vis.len > env->lim.max_value_size)
        return crdtdb__db_seterr(db, CRDTDB_ETOOBIG,
                                 "record would be %zu bytes, over the limit of %zu",
                                 db->vis.len, env->lim.max_value_size);
    /* what readers see change, and when (for crdtdb_db_poll) */
    int now = crdtdb__record_visible(r);
    int type = now && !s->was_visible   ? CRDTDB_EVENT_ADD
               : !now && s->was_visible ? CRDTDB_EVENT_REMOVE
               : now && (r->visible_len != db->vis.len ||
                         memcmp(r->visible, db->vis.data, db->vis.len) != 0)
                   ? CRDTDB_EVENT_UPDATE
                   : 0;
    if (type)
        r->vis_seq = t->seq;
    if (type == CRDTDB_EVENT_ADD)
        r->shown_seq = t->seq;
    if ((rc = crdtdb__record_encode(r, db->vis.data, db->vis.len, db->voff,
                                   crdtdb__origins_at(&db->orig, t->mt), &db->enc)))
        return rc == CRDTDB_EMAPFULL
                   ? crdtdb__db_seterr(db, rc, "store: a new origin past the %u replicas "
                                               "the environment may number (max_origins)",
                                       (unsigned)env->opts.max_origins)
                   : crdtdb__db_seterr(db, rc, "store: %s", crdtdb_strerror(rc));
    if (s->exists && (rc = crdtdb__slot_place(t, s)))
        return rc;
    MDB_val v = {db->enc.len, db->enc.data};
    int empty = r->base_kind == CRDTDB__BASE_NONE && r->nleaves == 0; /* all taken back */
    int mrc = empty ? (s->exists ? mdb_cursor_del(t->rec_cur, 0) : 0)
              : s->exists ? mdb_cursor_put(t->rec_cur, &s->k, &v, MDB_CURRENT)
                          : mdb_put(t->mt, env->dbi_records, &s->k, &v, 0);
    /* superseded registers leave the log (their entries, once nothing in
     * them lives); the new ones enter it as one run */
    /* for a store that drops many registers of a large record: its
     * registers by sequence, so that each dropped one's entry is checked
     * in log time */
    crdtdb__log_reg *live = NULL;
    uint32_t nlive = 0, cap = 0;
    if (!mrc && r->ndead > 4 && (uint64_t)r->ndead * r->nleaves > 1024 &&
        crdtdb__log_regs(r, &live, &nlive, &cap))
        mrc = ENOMEM;
    for (uint32_t i = 0; !mrc && i < r->ndead; i++)
        mrc = crdtdb__log_drop(t, r->dead[i], r, live, nlive);
    free(live);
    if (!mrc && t->seq >= first)
        mrc = crdtdb__log_put_run(t, first, t->seq - first + 1, src, s->coll, s->id, s->idlen);
    if (mrc)
        return crdtdb__db_seterr(db, crdtdb__mdb_err(mrc), "write: %s",
                                 crdtdb__mdb_str(mrc));
    if (!db->observers)
        return 0;
    if (type && crdtdb__event_add(t, type, s->coll, s->id, s->idlen,
                                  now ? db->vis.data : NULL, now ? db->vis.len : 0))
        return crdtdb__db_seterr(db, CRDTDB_ENOMEM, "out of memory");
    return 0;
}

int crdtdb__slot_load_key(crdtdb_txn *t, crdtdb__slot *s, const crdtdb__rkey *key,
                          char id[CRDTDB_ID_MAX + 1])
{
    uint16_t coll = (uint16_t)(key->k[0] << 8 | key->k[1]);
    memcpy(id, key->k + 3, key->k[2]);
    id[key->k[2]] = 0;
    if (coll >= t->db->ncoll) {
        s->exists = 0;
        return 0;
    }
    return crdtdb__slot_load(t, s, coll, id);
}
