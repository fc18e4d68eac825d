/*
 * The built-in authorization policy: membership as replicated data in each
 * database's "_members" collection (crdtdb_members_policy in crdtdb.h).
 * Pure policy over the public API: it reads members through the apply's
 * transaction, so a delta is judged against what it merged so far.
 */
#include <msgpack.h>
#include <string.h>

#include "crdtdb_ws.h"

#define MEMBERS "_members"

typedef struct member {
    char role[16];
    char status[16];
} member;

/* Copies a short string value into out ("" otherwise). */
static void copy_str(const msgpack_object *v, char *out, size_t size)
{
    if (v->type == MSGPACK_OBJECT_STR && v->via.str.size < size) {
        if (v->via.str.size)
            memcpy(out, v->via.str.ptr, v->via.str.size);
        out[v->via.str.size] = 0;
    }
}

static int key_is(const msgpack_object *k, const char *name)
{
    return k->type == MSGPACK_OBJECT_STR && k->via.str.size == strlen(name) &&
           memcmp(k->via.str.ptr, name, k->via.str.size) == 0;
}

/* The "role" and "status" of a member record (msgpack map p, len; NULL:
 * none), in one pass; "" for what is absent or not a short string. */
static void parse_member(const uint8_t *p, size_t len, member *m)
{
    memset(m, 0, sizeof *m);
    msgpack_zone z;
    if (!p || !msgpack_zone_init(&z, 256))
        return;
    msgpack_object o;
    size_t off = 0;
    if (msgpack_unpack((const char *)p, len, &off, &z, &o) == MSGPACK_UNPACK_SUCCESS &&
        o.type == MSGPACK_OBJECT_MAP) {
        for (uint32_t i = 0; i < o.via.map.size; i++) {
            const msgpack_object *k = &o.via.map.ptr[i].key, *v = &o.via.map.ptr[i].val;
            if (key_is(k, "role"))
                copy_str(v, m->role, sizeof m->role);
            else if (key_is(k, "status"))
                copy_str(v, m->status, sizeof m->status);
        }
    }
    msgpack_zone_destroy(&z);
}

/* The user's membership; 0 when not a member (or unreadable). */
static int get_member(crdtdb_db *db, crdtdb_txn *txn, const char *user, member *m)
{
    memset(m, 0, sizeof *m);
    if (!user[0])
        return 0;
    crdtdb_buf b = CRDTDB_BUF_INIT;
    int found = 0;
    if (crdtdb_db_get_by_id(db, txn, MEMBERS, user, &b, &found) == 0 && found)
        parse_member(b.data, b.len, m);
    crdtdb_buf_free(&b);
    return found && m->role[0];
}

static int is(const char *a, const char *b) { return strcmp(a, b) == 0; }

static crdtdb_access members_user(void *ctx, crdtdb_db *db, const char *user, int created)
{
    (void)ctx;
    if (created && user[0]) { /* the creator owns it */
        /* {"role":"owner","status":"accepted"} */
        static const uint8_t owner[] = {0x82, 0xa4, 'r', 'o', 'l', 'e', 0xa5, 'o', 'w', 'n', 'e',
                                        'r', 0xa6, 's', 't', 'a', 't', 'u', 's', 0xa8, 'a', 'c',
                                        'c', 'e', 'p', 't', 'e', 'd'};
        if (crdtdb_db_add(db, NULL, MEMBERS, user, owner, sizeof owner))
            return CRDTDB_ACCESS_DENY;
    }
    member m;
    if (!get_member(db, NULL, user, &m))
        return CRDTDB_ACCESS_DENY;
    int accepted = is(m.status, "accepted");
    if (!accepted && !is(m.status, "invited"))
        return CRDTDB_ACCESS_DENY; /* any other status: no access */
    if (is(m.role, "reader") && accepted)
        return CRDTDB_ACCESS_READONLY;
    if (is(m.role, "owner") || is(m.role, "writer") || is(m.role, "reader"))
        return CRDTDB_ACCESS_READWRITE; /* invited readers write their acceptance */
    return CRDTDB_ACCESS_DENY;
}

/* Whether `now` is `old` with only status moved from invited to accepted. */
static int accepts_only(const uint8_t *old, size_t old_len, const uint8_t *now,
                        size_t now_len)
{
    member a, b;
    parse_member(old, old_len, &a);
    parse_member(now, now_len, &b);
    if (!old || !now || !is(a.status, "invited") || !is(b.status, "accepted") ||
        !is(a.role, b.role))
        return 0;
    /* nothing else may change: compare with status put back */
    msgpack_zone z1, z2;
    msgpack_object o1, o2;
    size_t f1 = 0, f2 = 0;
    int same = 0;
    if (!msgpack_zone_init(&z1, 256))
        return 0;
    if (!msgpack_zone_init(&z2, 256)) {
        msgpack_zone_destroy(&z1);
        return 0;
    }
    if (msgpack_unpack((const char *)old, old_len, &f1, &z1, &o1) == MSGPACK_UNPACK_SUCCESS &&
        msgpack_unpack((const char *)now, now_len, &f2, &z2, &o2) == MSGPACK_UNPACK_SUCCESS &&
        o1.type == MSGPACK_OBJECT_MAP && o2.type == MSGPACK_OBJECT_MAP &&
        o1.via.map.size == o2.via.map.size) {
        same = 1;
        for (uint32_t i = 0; same && i < o1.via.map.size; i++) {
            const msgpack_object_kv *kv = &o1.via.map.ptr[i];
            if (key_is(&kv->key, "status"))
                continue;
            int hit = 0;
            for (uint32_t j = 0; !hit && j < o2.via.map.size; j++)
                hit = msgpack_object_equal(kv->key, o2.via.map.ptr[j].key) &&
                      msgpack_object_equal(kv->val, o2.via.map.ptr[j].val);
            same = hit;
        }
    }
    msgpack_zone_destroy(&z1);
    msgpack_zone_destroy(&z2);
    return same;
}

static int members_write(void *ctx, crdtdb_txn *txn, const char *user, const char *coll,
                         const char *id, const uint8_t *old, size_t old_len,
                         const uint8_t *now, size_t now_len)
{
    (void)ctx;
    member m;
    if (!get_member(crdtdb_txn_db(txn), txn, user, &m))
        return 1;
    int accepted = is(m.status, "accepted");
    if (is(m.role, "owner") && accepted)
        return 0;
    if (!is(coll, MEMBERS))
        return !(is(m.role, "writer") && accepted);
    /* _members: only one's own acceptance */
    return !(is(id, user) && accepts_only(old, old_len, now, now_len));
}

/* Presence: every member with access may publish (readers and invited
 * users too: a cursor is not a write); only accepted owners may relay,
 * which a peer server's link user is on the databases it created. */
/* Members with access publish; no member relays: a relaying connection
 * names the users of what it relays, so only peer servers may, named by
 * the server (crdtdb_server_options.relay_users). */
static int members_presence(void *ctx, crdtdb_db *db, const char *user, int relay)
{
    return !relay && members_user(ctx, db, user, 0) != CRDTDB_ACCESS_DENY;
}

void crdtdb_members_policy(crdtdb_server_auth *auth)
{
    if (!auth)
        return;
    memset(auth, 0, sizeof *auth);
    auth->authorize_user = members_user;
    auth->authorize_write = members_write;
    auth->authorize_presence = members_presence;
}
