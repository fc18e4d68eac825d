/*
 * The record slot: the read-modify-write of one record in a write
 * transaction, shared by local writes (write.c), merges (apply.c) and
 * purges (purge.c).  The record itself is db->rec (the handle's scratch),
 * valid until the next slot load on the handle.
 */
#ifndef CRDTDB_STORAGE_SLOT_H
#define CRDTDB_STORAGE_SLOT_H
#include "storage/internal.h"

typedef struct crdtdb__slot {
    uint16_t coll;
    const char *id;
    size_t idlen;
    uint8_t key[CRDTDB__RECKEY_MAX];
    MDB_val k;
    int was_visible;
    int exists;        /* it is there: loose, the records cursor on it (replace
                          in place), or packed */
    int packed;        /* read from its pack (recs.h): crdtdb__slot_place
                          writes it loose, with its pack, before it changes */
    uint64_t seq_before;
} crdtdb__slot;
/* Loads record (coll, id) into db->rec.  0 or an error (message set). */
int crdtdb__slot_load(crdtdb_txn *t, crdtdb__slot *s, uint16_t coll,
                      const char *id);

/* A record's name copied out of a page that a write may move: u16
 * collection, u8 id length, id. */
typedef struct crdtdb__rkey {
    uint8_t k[3 + CRDTDB_ID_MAX];
} crdtdb__rkey;
/* crdtdb__slot_load of the record key names, its id written into id; a
 * collection this handle does not know loads as absent (s->exists 0). */
int crdtdb__slot_load_key(crdtdb_txn *t, crdtdb__slot *s, const crdtdb__rkey *key,
                          char id[CRDTDB_ID_MAX + 1]);
/* Puts the records cursor on a record crdtdb__slot_load found (loose or
 * packed: its whole pack written loose first), for a change in place.
 * 0 or an error (message set). */
int crdtdb__slot_place(crdtdb_txn *t, crdtdb__slot *s);
/* Numbers new registers, stores db->rec (deletes it when it holds no
 * register at all), logs its changes as coming from peer number `src`,
 * records the observer event. */
int crdtdb__slot_store(crdtdb_txn *t, crdtdb__slot *s, uint32_t src);

#endif
