/* Shared test helpers: temp dirs, JSON <-> msgpack shorthands, files,
 * child processes, keys and hand-made tokens (tu_jwt_mint, which needs
 * libcrdtdb_ws, is in wsutil.h).  Every malloc'd result belongs to the
 * caller; every helper fails the running test (Check) on error. */
#ifndef CRDTDB_TESTUTIL_H
#define CRDTDB_TESTUTIL_H
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "crdtdb.h"

/* mkdtemp under $TMPDIR or /tmp; returns a malloc'd path. */
char *tu_tmpdir(void);
/* Removes a directory tree. */
void tu_rmrf(const char *path);
/* JSON text -> msgpack in b (aborts the test on bad JSON). */
const uint8_t *tu_mp(crdtdb_buf *b, const char *json);
/* Appends to f a frame of the sync protocol: m's length as 4 bytes big
 * endian, then m (the msgpack of one message). */
void tu_frame(crdtdb_buf *f, const crdtdb_buf *m);
/* msgpack -> JSON text, malloc'd (caller frees). */
char *tu_json(const uint8_t *mp, size_t len);
/* Opens a fresh environment in a new temp dir (path returned in *dir). */
crdtdb_env *tu_env(char **dir, const crdtdb_env_options *opts);
/* Reads record as JSON (malloc'd) or NULL if not found. */
char *tu_get(crdtdb_db *db, const char *coll, const char *id);
/* Whether env holds (coll, id) in database db_id, read through a handle
 * of its own (0 when the database is not there). */
int tu_env_has(crdtdb_env *env, const char *db_id, const char *coll, const char *id);
/* Runs every test of s; the exit status for main (0: all passed). */
struct Suite;
int tu_run(struct Suite *s);
/* Seed from $CRDTDB_SEED or the time; printed once. */
unsigned tu_seed(void);
/* Bytes -> lower-case hex, malloc'd (caller frees). */
char *tu_hex(const uint8_t *p, size_t n);
/* Hex (even length) -> bytes, malloc'd (caller frees; at least 1 byte, so an
 * empty value has a pointer); the byte count in *n. */
uint8_t *tu_unhex(const char *h, size_t *n);

/* ------------------------------------------------------ time and files */

/* CLOCK_MONOTONIC in milliseconds. */
uint64_t tu_mono_ms(void);
/* Sleeps ms milliseconds (resumed after signals). */
void tu_sleep_ms(long ms);
/* The whole file at path, NUL-terminated, malloc'd (caller frees); its
 * length in *len unless len is NULL. */
char *tu_slurp(const char *path, size_t *len);
/* Writes the n bytes at p to path (created or truncated). */
void tu_spit(const char *path, const void *p, size_t n);

/* ---------------------------------------------------- child processes */

/* Starts argv[0] (searched in PATH unless it has a '/') with the
 * NULL-terminated argv; its stdin read from `in`, its stdout and stderr
 * written to `out` and `err` (created or truncated), each NULL to keep
 * ours.  The caller waits for the pid (tu_wait, tu_wait_exit). */
pid_t tu_spawn(const char *const *argv, const char *in, const char *out, const char *err);
/* Waits for pid; its exit status, 128 + signal if killed. */
int tu_wait(pid_t pid);
/* The same, but kills pid (SIGKILL) and fails the test, naming `what`, if
 * it runs longer than timeout_ms. */
int tu_wait_exit(pid_t pid, long timeout_ms, const char *what);
/* Runs argv quietly (stdin and stderr /dev/null; stdout to out, or
 * /dev/null when out is NULL) and waits; the exit status, 127 if it could
 * not run. */
int tu_run_cmd(const char *const *argv, const char *out);

/* ---------------------------------------------------- keys and tokens */

/* A key file made by the openssl command, and its bytes (data malloc'd,
 * owned by the struct's user). */
typedef struct tu_pem {
    char path[4096];
    char *data;
    size_t len;
} tu_pem;
/* `openssl genpkey OPTS... -out dir/name` (opts NULL-terminated). */
void tu_genkey(tu_pem *k, const char *dir, const char *name, const char *const *opts);
/* `openssl pkey -in PRIV -pubout -out dir/name`. */
void tu_pubkey(tu_pem *pub, const tu_pem *priv, const char *dir, const char *name);
/* base64url without padding, malloc'd. */
char *tu_b64url(const void *p, size_t n);
/* "header.payload.sig" from JSON header and payload (base64url-encoded
 * here) and a signature part taken as is; malloc'd. */
char *tu_jwt_craft(const char *header, const char *payload, const char *sig);

#endif
