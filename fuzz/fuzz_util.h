/*
 * fuzz_util — what the libFuzzer targets share: the CHECK macro, byte
 * comparison and stored-record checks, the fixed test key with the signed
 * delta bodies built from fuzzer bytes (fuzz_delta, fuzz_apply), and the
 * scratch environment that lives for the whole process (fuzz_record,
 * fuzz_apply).
 *
 * Each target defines fuzz_name (e.g. "fuzz_apply"): failed checks and
 * start-up errors on stderr start with it.
 */
#ifndef CRDTDB_FUZZ_UTIL_H
#define CRDTDB_FUZZ_UTIL_H

#include <sodium.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "crdtdb.h"

/* Defined by each target: its name, the prefix of its messages. */
extern const char fuzz_name[];

/* The libFuzzer entry points a target defines (Initialize is optional). */
int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* An invariant: when c is false, prints where and traps (__builtin_trap),
 * which libFuzzer reports as a crash. */
#define CHECK(c)                                                              \
    do {                                                                      \
        if (!(c)) {                                                           \
            fprintf(stderr, "%s: check failed at line %d: %s\n", fuzz_name,   \
                    __LINE__, #c);                                            \
            __builtin_trap();                                                 \
        }                                                                     \
    } while (0)

/* ---------------------------------------------------------------- checks */

/* 1 if a[0, an) and b[0, bn) are the same bytes. */
int fuzz_same(const void *a, size_t an, const void *b, size_t bn);

/* 1 if FUZZ_DEBUG is set in the environment to something other than ""
 * or "0" (the targets then print every outcome). */
int fuzz_debug_enabled(void);

/* A heap copy of exactly p[0, n) (one byte allocated when n is 0), so that
 * ASan sees any read past the end; free() it. */
uint8_t *fuzz_dup(const uint8_t *p, size_t n);

/* A stored record: a non-empty msgpack map that converts to a JSON object. */
void fuzz_check_record_bytes(const uint8_t *p, size_t n);

/* ---------------------------------------------------------- signed bodies */

/* The fixed test key pair (seed 0x5a...), set by fuzz_keys_init. */
extern uint8_t fuzz_pk[crypto_sign_PUBLICKEYBYTES];
extern uint8_t fuzz_sk[crypto_sign_SECRETKEYBYTES];

/* sodium_init, the test key pair, and the array header of a delta body as
 * crdtdb__delta_encode writes it (0x9a today: 10 elements), so the bodies
 * below follow the format.  Aborts on failure. */
void fuzz_keys_init(void);

/* The delta body to sign for fuzzer bytes p[0, n), into body:
 *   - bytes that start like a body, [array header, str db_id, bin(32)
 *     sender, ...], keep their own db_id and get the test public key
 *     written over the sender;
 *   - anything else is the rest of a body after the sender (from, to, ack,
 *     hlc_base, colls, origins, records, fingerprint points) and is
 *     prefixed with [array header, "fz", bin(32) test key]. */
void fuzz_make_body(crdtdb_buf *body, const uint8_t *p, size_t n);

/* The envelope [CRDTDB__DELTA_VERSION, bin body, bin sig] with body signed
 * by the test key, into out (emptied first); fuzz_wrap_v: of that version. */
void fuzz_wrap(crdtdb_buf *out, const crdtdb_buf *body);
void fuzz_wrap_v(crdtdb_buf *out, const crdtdb_buf *body, unsigned version);

/* ------------------------------------------------------ scratch environment */

/* Options of a scratch environment: the defaults, 64 MiB map, NOSYNC; the
 * caller then sets its limits. */
void fuzz_scratch_options(crdtdb_env_options *o);

/* Opens the scratch environment with o in a fresh directory
 * $TMPDIR/crdtdb-fuzz-XXXXXX (TMPDIR unset or empty: /tmp) into *env.
 * Aborts on failure. */
void fuzz_scratch_env(const crdtdb_env_options *o, crdtdb_env **env);

/* Creates database id of collections colls[0, n) in the scratch
 * environment into *db, then removes the directory (LMDB keeps its files
 * open and never reopens them by path, so nothing is left behind when a
 * crash or a timeout kills the process) and registers an atexit handler
 * that closes *db and the environment.  Aborts on failure. */
void fuzz_scratch_db(const char *id, const char *const *colls, size_t n,
                     crdtdb_db **db);

/* Closes the scratch database, drops it and creates it again, empty. */
void fuzz_scratch_reset(void);

#endif
