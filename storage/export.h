/*
 * The exporter: an iterator over one read snapshot of a database's change
 * log that yields signed deltas, in the style of an LMDB cursor (begin, next
 * delta, end).  crdtdb_db_export and crdtdb_db_export_for (share.c) are
 * loops over it; a transport may hold one for as long as it streams.
 */
#ifndef CRDTDB_STORAGE_EXPORT_H
#define CRDTDB_STORAGE_EXPORT_H
#include "storage/internal.h"

/* The peers (by number) whose registers a delta packed. */
#define CRDTDB__EXPORT_SRCS 8
typedef struct crdtdb__export_srcs {
    uint32_t num[CRDTDB__EXPORT_SRCS];
    unsigned n;
    int many; /* more than CRDTDB__EXPORT_SRCS: the list is incomplete */
} crdtdb__export_srcs;
/* Whether s may hold registers of peer number num. */
int crdtdb__export_has_src(const crdtdb__export_srcs *s, uint32_t num);

/* What to export; zero it, then set what you need.  Pointers are borrowed
 * until crdtdb__exporter_end. */
typedef struct crdtdb__export_opts {
    uint64_t since;       /* the deltas cover (since, the snapshot's seq] */
    const uint8_t *peer;  /* addressee (crdtdb_db_export's peer), or NULL */
    unsigned flags;       /* CRDTDB_EXPORT_* */
    size_t max_bytes;     /* cap of each delta (0: max_delta_size) */
    const crdtdb_export_options *filter; /* a read filter (visible set), or NULL */
    const uint8_t *withhold; /* a peer: crdtdb__exporter_withheld tells whether
                                the filled delta holds its registers (NULL: none) */
    const uint8_t *resume;   /* crdtdb_export_options.resume (NULL: from the start) */
    size_t resume_len;
} crdtdb__export_opts;

typedef struct crdtdb__exporter crdtdb__exporter;

/* Opens a read snapshot of db (db's transaction slot is taken until
 * crdtdb__exporter_end: EBUSY if one is open) and an exporter over it,
 * which the caller owns.  0 or an error with db's message set. */
int crdtdb__exporter_begin(crdtdb_db *db, const crdtdb__export_opts *o,
                           crdtdb__exporter **out);
/* Gathers the changes of the next delta.  0 (then sign it, or end),
 * CRDTDB_ENOTFOUND when every delta of the snapshot was given (an outcome,
 * no message), or an error with db's message set. */
int crdtdb__exporter_fill(crdtdb__exporter *x);
/* Encodes and signs the filled delta.  *delta is owned by the exporter and
 * valid until the next fill or end; (NULL, 0) under CRDTDB_EXPORT_NO_EMPTY
 * when the range holds nothing for the peer. */
int crdtdb__exporter_sign(crdtdb__exporter *x, const uint8_t **delta, size_t *len);
/* fill, then sign: 0, CRDTDB_ENOTFOUND at the end, or an error. */
int crdtdb__exporter_next(crdtdb__exporter *x, const uint8_t **delta, size_t *len);
/* Whether the filled delta holds registers of opts.withhold (checked
 * before signing, so no signature is wasted). */
int crdtdb__exporter_withheld(const crdtdb__exporter *x);
/* The peers whose registers the filled delta holds; opts.withhold's
 * peer number (0: none, or a peer that sent us nothing). */
crdtdb__export_srcs crdtdb__exporter_srcs(const crdtdb__exporter *x);
uint32_t crdtdb__exporter_withhold_num(const crdtdb__exporter *x);
/* Totals of the deltas signed so far; ->to is where the next starts.
 * Borrowed until end. */
const crdtdb_export_info *crdtdb__exporter_info(const crdtdb__exporter *x);
/* The snapshot's last change sequence. */
uint64_t crdtdb__exporter_last(const crdtdb__exporter *x);
/* Whether the export walks the records first (since is below the log
 * floor): its deltas cannot be shared (their ranges do not say where the
 * walk stopped). */
int crdtdb__exporter_walks(const crdtdb__exporter *x);
/* The log floor in the exporter's snapshot. */
uint64_t crdtdb__exporter_lfloor(const crdtdb__exporter *x);
/* The collection floor in the exporter's snapshot (collect.c). */
int crdtdb__exporter_floor(const crdtdb__exporter *x, uint64_t *floor);
/* Ends the snapshot and frees x.  Accepts NULL. */
void crdtdb__exporter_end(crdtdb__exporter *x);

/* Every delta of o into sink, each valid during its call; stops at the
 * sink's CRDTDB_STOP (then 0) or negative code (returned).  info (may be
 * NULL) gets the totals also on error. */
int crdtdb__export_run(crdtdb_db *db, const crdtdb__export_opts *o, crdtdb_delta_sink sink,
                       void *ctx, crdtdb_export_info *info);

#endif
