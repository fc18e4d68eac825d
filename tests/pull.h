/* Exports pulled one delta per call, as a session asks (crdtdb_export_info
 * .resume carrying a walk of a trimmed log between calls): shared by the
 * trim suites. */
#ifndef CRDTDB_TESTS_PULL_H
#define CRDTDB_TESTS_PULL_H
#include <stddef.h>
#include <stdint.h>

#include "crdtdb.h"
#include "tests/replica.h"

/* A delta sink keeping the first delta (then CRDTDB_STOP). */
typedef struct one {
    crdtdb_buf d;
    int n;
} one;
int take_one(void *ctx, const uint8_t *p, size_t len);

/* A read filter that shows every record. */
int all_visible(void *ctx, crdtdb_txn *txn, const char *coll, const char *id,
                const uint8_t *value, size_t len);

/* Where a receiver stands in a sender's export: zero it, set max_bytes
 * (and filter: a read filter, `visible` or else one showing everything,
 * its purges applied). */
typedef struct puller {
    uint64_t since;
    uint8_t resume[CRDTDB_EXPORT_RESUME_MAX];
    size_t rlen;
    size_t max_bytes;
    int filter;
    unsigned flags;
    int (*visible)(void *ctx, crdtdb_txn *txn, const char *coll, const char *id,
                   const uint8_t *value, size_t len);
    /* called after each export, before it is checked (a trace); may be NULL */
    void (*trace)(replica *A, const struct puller *p, int rc, const crdtdb_export_info *info,
                  uint64_t last);
    unsigned pass_ends; /* deltas whose `to` moved while a walk went on */
} puller;

/* One delta of A's export from p into R (purges first): p moves on.
 * Returns 1 once R holds everything up to A's last. */
int pull_one(replica *A, replica *R, puller *p);

#endif
