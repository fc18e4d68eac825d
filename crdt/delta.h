/*
 * The delta codec: a change set as a signed msgpack envelope
 * (docs/protocol.md).  Pure code: encoding signs with the caller's secret
 * key; decoding verifies the signature before it reads the body, then checks
 * every size, depth and index against the limits.
 *
 * A decoded delta borrows the input bytes and the decoder's scratch; an
 * encoded one is built from a delta whose pointers the caller keeps alive.
 */
#ifndef CRDTDB_CRDT_DELTA_H
#define CRDTDB_CRDT_DELTA_H
#include <msgpack.h>
#include <stddef.h>
#include <stdint.h>

#include "crdt/keyidx.h"
#include "crdt/value.h"
#include "crdtdb.h"

/* The format encoders write; decoders also read version 1, which is version
 * 2 without the short fields (a field stamped as its record's base, with the
 * stamp left out: docs/protocol.md). */
#define CRDTDB__DELTA_VERSION 2u
#define CRDTDB__DELTA_VERSION_MIN 1u
#define CRDTDB__DELTA_FP_MAX 4
#define CRDTDB__FP_BYTES 16
#define CRDTDB__DELTA_GROUPS 65536u /* default cap of record groups per delta */

typedef struct crdtdb__str {
    const char *p;
    uint32_t n;
} crdtdb__str;

typedef struct crdtdb__delta_field {
    const uint8_t *path; /* encoded (crdt/path.h) */
    uint32_t path_len;
    uint8_t kind;        /* CRDTDB__KIND_VALUE or _MAP */
    uint32_t origin;     /* index into origins */
    uint64_t hlc;
    const uint8_t *val;  /* msgpack, for KIND_VALUE */
    uint32_t val_len;
} crdtdb__delta_field;

typedef struct crdtdb__delta_rec {
    uint32_t coll;       /* index into colls */
    crdtdb__str id;
    uint8_t base_kind;   /* CRDTDB__BASE_NONE / _ADD / _REMOVE */
    uint32_t base_origin;
    uint64_t base_hlc;
    uint32_t first, n;   /* its fields: fields[first, first + n) */
} crdtdb__delta_rec;

typedef struct crdtdb__delta {
    crdtdb__str db_id;
    const uint8_t *sender; /* 32 bytes */
    const uint8_t *recipient; /* 32 bytes, or NULL: made for no one peer */
    uint64_t from, to;     /* sender sequences covered: (from, to] */
    int has_ack;
    uint64_t ack;          /* recipient's sequence the sender has up to */
    crdtdb__str *colls;
    uint32_t ncolls, colls_cap;
    const uint8_t **origins; /* 32-byte keys */
    uint32_t norigins, origins_cap;
    crdtdb__keyidx oidx; /* finds a key in origins (hkey: the exporter's) */
    crdtdb__delta_rec *recs;
    uint32_t nrecs, recs_cap;
    crdtdb__delta_field *fields;
    uint32_t nfields, fields_cap;
    uint64_t hlc_max;      /* the newest stamp in the delta */
    /* points of the sender's history fingerprint (docs/protocol.md) */
    uint32_t nfp;
    uint64_t fp_seq[CRDTDB__DELTA_FP_MAX];
    const uint8_t *fp_hash[CRDTDB__DELTA_FP_MAX]; /* 16 bytes each */
    /* decoder scratch */
    msgpack_zone zone;
    int zone_ready;
    crdtdb_buf paths;
} crdtdb__delta;

void crdtdb__delta_init(crdtdb__delta *d);
void crdtdb__delta_free(crdtdb__delta *d);
/* Empties d, keeping its memory. */
void crdtdb__delta_reset(crdtdb__delta *d);
/* Empties d and frees what it grew past a small working size (a peer's
 * delta chooses how far): kept on a handle between applies, it would pin
 * what the largest delta took. */
void crdtdb__delta_trim(crdtdb__delta *d);

/* Builders for an encoder's delta: index of collection / origin (added if
 * new; pointers borrowed), a new record group, a field of the last group.
 * 0 or CRDTDB_ENOMEM. */
int crdtdb__delta_coll(crdtdb__delta *d, const char *p, uint32_t n, uint32_t *idx);
int crdtdb__delta_origin(crdtdb__delta *d, const uint8_t *key, uint32_t *idx);
int crdtdb__delta_add_rec(crdtdb__delta *d, const crdtdb__delta_rec *r);
int crdtdb__delta_add_field(crdtdb__delta *d, const crdtdb__delta_field *f);

/* Upper bound of the encoded size a field adds (for splitting); as_base:
 * it goes short, its entry holding a base of its stamp and origin. */
size_t crdtdb__delta_field_cost(const crdtdb__delta_field *f, int as_base);

/* Encodes and signs d with the 64-byte ed25519 secret key sk (whose public
 * half must be d->sender) into out (replaced).  0 or CRDTDB_ENOMEM. */
int crdtdb__delta_encode(const crdtdb__delta *d, const uint8_t *sk,
                         crdtdb_buf *out);

/* Length of the envelope at the start of data and its body's bounds,
 * without verifying.  0, CRDTDB_EBADVALUE or CRDTDB_EVERSION. */
int crdtdb__delta_frame(const uint8_t *data, size_t len, size_t *frame_len,
                        const uint8_t **body, size_t *body_len,
                        const uint8_t **sig);

/* What a delta claims before it is verified: pointers into the caller's
 * bytes, valid as long as they are. */
typedef struct crdtdb__delta_head {
    size_t frame_len;      /* the envelope's length */
    const char *db_id;     /* the database id, db_id_len bytes, not NUL-terminated */
    size_t db_id_len;
    const uint8_t *signer; /* the 32-byte key the delta claims as its signer,
                              or NULL when the body does not carry one */
} crdtdb__delta_head;

/*
 * Reads the head of the delta at the start of data without verifying it
 * (pure; one pass over the first bytes of the body): so a transport can
 * route a delta, and refuse one from another replica than its peer, before
 * anything is stored.  The decoder verifies the signature against this
 * same key later.  Errors: EBADVALUE, EVERSION, ETOOBIG (id longer than
 * CRDTDB_ID_MAX).
 */
int crdtdb__delta_peek(const uint8_t *data, size_t len, crdtdb__delta_head *h);

/*
 * Verifies and decodes exactly one delta into d (reset first).  Refuses a
 * delta over max_delta (ETOOBIG) before reading it.  Errors: EBADVALUE,
 * EVERSION, EBADSIG, ETOOBIG, ETOODEEP, EBADID, ENOMEM; detail in e.
 */
int crdtdb__delta_decode(crdtdb__delta *d, const uint8_t *data, size_t len,
                         size_t max_delta, const crdtdb__limits *lim,
                         crdtdb__err *e);

#endif
