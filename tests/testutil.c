/* Shared test helpers. */
#define _XOPEN_SOURCE 700
#include "tests/testutil.h"

#include <check.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

char *tu_tmpdir(void)
{
    const char *base = getenv("TMPDIR");
    char tmpl[4096];
    snprintf(tmpl, sizeof tmpl, "%s/crdtdb-test-XXXXXX", base && *base ? base : "/tmp");
    char *d = mkdtemp(tmpl);
    ck_assert_msg(d != NULL, "mkdtemp failed");
    return strdup(d);
}

static int rm_one(const char *p, const struct stat *sb, int flag, struct FTW *f)
{
    (void)sb;
    (void)flag;
    (void)f;
    return remove(p);
}

void tu_rmrf(const char *path)
{
    if (path)
        nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

const uint8_t *tu_mp(crdtdb_buf *b, const char *json)
{
    char err[200] = "";
    int rc = crdtdb_json_to_msgpack(json, strlen(json), 0, b, err, sizeof err);
    ck_assert_msg(rc == 0, "bad test JSON %s: %s", json, err);
    return b->data;
}

char *tu_json(const uint8_t *mp, size_t len)
{
    crdtdb_buf b = CRDTDB_BUF_INIT;
    int rc = crdtdb_msgpack_to_json(mp, len, &b);
    ck_assert_int_eq(rc, 0);
    char *s = strdup((const char *)b.data);
    crdtdb_buf_free(&b);
    return s;
}

crdtdb_env *tu_env(char **dir, const crdtdb_env_options *opts)
{
    *dir = tu_tmpdir();
    crdtdb_env *env = NULL;
    int rc = crdtdb_env_open(*dir, opts, &env);
    ck_assert_msg(rc == 0, "env_open: %s", crdtdb_strerror(rc));
    return env;
}

char *tu_get(crdtdb_db *db, const char *coll, const char *id)
{
    crdtdb_buf b = CRDTDB_BUF_INIT;
    int found = -1;
    int rc = crdtdb_db_get_by_id(db, NULL, coll, id, &b, &found);
    ck_assert_msg(rc == 0, "get_by_id: %s", crdtdb_db_errmsg(db));
    char *s = found ? tu_json(b.data, b.len) : NULL;
    crdtdb_buf_free(&b);
    return s;
}

unsigned tu_seed(void)
{
    const char *s = getenv("CRDTDB_SEED");
    unsigned seed = s ? (unsigned)strtoul(s, NULL, 10) : (unsigned)time(NULL);
    fprintf(stderr, "seed: %u (rerun with CRDTDB_SEED=%u)\n", seed, seed);
    return seed;
}

int tu_run(Suite *s)
{
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
