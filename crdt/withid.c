/* A record as the DataStore interface shows it: its id, then its fields. */
#include <msgpack.h>
#include <string.h>

#include "crdt/buf.h"
#include "crdtdb.h"

static int is_id_key(const msgpack_object *k)
{
    return k->type == MSGPACK_OBJECT_STR && k->via.str.size == 2 &&
           memcmp(k->via.str.ptr, "id", 2) == 0;
}

int crdtdb_record_with_id(const char *id, const uint8_t *value, size_t len, crdtdb_buf *out)
{
    if (!id || !value || !out)
        return CRDTDB_EINVAL;
    msgpack_zone z;
    if (!msgpack_zone_init(&z, 1024))
        return CRDTDB_ENOMEM;
    msgpack_object o;
    size_t off = 0;
    int rc = 0;
    if (msgpack_unpack((const char *)value, len, &off, &z, &o) != MSGPACK_UNPACK_SUCCESS ||
        off != len || o.type != MSGPACK_OBJECT_MAP)
        rc = CRDTDB_EBADVALUE;
    uint32_t n = 0;
    for (uint32_t i = 0; !rc && i < o.via.map.size; i++)
        n += !is_id_key(&o.via.map.ptr[i].key);
    out->len = 0;
    msgpack_packer pk;
    msgpack_packer_init(&pk, out, crdtdb__buf_write_cb);
    size_t idlen = strlen(id);
    /* the record id wins over a field of the same name: a record read
     * always names itself (docs/crdt.md, "Records and their ids") */
    if (!rc && (msgpack_pack_map(&pk, n + 1) || msgpack_pack_str_with_body(&pk, "id", 2) ||
                msgpack_pack_str_with_body(&pk, id, idlen)))
        rc = CRDTDB_ENOMEM;
    for (uint32_t i = 0; !rc && i < o.via.map.size; i++) {
        const msgpack_object_kv *kv = &o.via.map.ptr[i];
        if (is_id_key(&kv->key))
            continue;
        if (msgpack_pack_object(&pk, kv->key) || msgpack_pack_object(&pk, kv->val))
            rc = CRDTDB_ENOMEM;
    }
    msgpack_zone_destroy(&z);
    if (rc)
        out->len = 0;
    return rc;
}
