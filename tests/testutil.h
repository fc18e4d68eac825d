/* Shared test helpers: temp dirs and JSON <-> msgpack shorthands. */
#ifndef CRDTDB_TESTUTIL_H
#define CRDTDB_TESTUTIL_H
#include <stddef.h>
#include <stdint.h>

#include "crdtdb.h"

/* mkdtemp under $TMPDIR or /tmp; returns a malloc'd path. */
char *tu_tmpdir(void);
/* Removes a directory tree. */
void tu_rmrf(const char *path);
/* JSON text -> msgpack in b (aborts the test on bad JSON). */
const uint8_t *tu_mp(crdtdb_buf *b, const char *json);
/* msgpack -> JSON text, malloc'd (caller frees). */
char *tu_json(const uint8_t *mp, size_t len);
/* Opens a fresh environment in a new temp dir (path returned in *dir). */
crdtdb_env *tu_env(char **dir, const crdtdb_env_options *opts);
/* Reads record as JSON (malloc'd) or NULL if not found. */
char *tu_get(crdtdb_db *db, const char *coll, const char *id);
/* Runs every test of s; the exit status for main (0: all passed). */
struct Suite;
int tu_run(struct Suite *s);
/* Seed from $CRDTDB_SEED or the time; printed once. */
unsigned tu_seed(void);

#endif
