/*
 * crdtdb stats and backup: what each database holds, and a hot copy of
 * the environment.
 */
#include "cli.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

typedef struct stat_walk {
    crdtdb_env *env;
    FILE *out;
    int rc;
} stat_walk;

/* One JSON line of db's counts (crdtdb_db_stats). */
static int print_stats(void *ctx, const char *id)
{
    stat_walk *w = ctx;
    crdtdb_db *db;
    crdtdb_db_stats st;
    int rc = crdtdb_db_open(w->env, id, &db);
    if (rc) {
        fail_env(w->env, rc, id);
        return w->rc = rc;
    }
    if ((rc = crdtdb_db_stat(db, &st))) {
        fail_db(db, rc);
        crdtdb_db_close(db);
        return w->rc = rc;
    }
    crdtdb_db_close(db);
    fputs("{\"db\":", w->out);
    put_json_str(w->out, id);
    fprintf(w->out,
            ",\"records\":%llu,\"removed\":%llu,\"fields\":%llu,\"hidden\":%llu,"
            "\"log_entries\":%llu,\"record_bytes\":%llu,\"log_bytes\":%llu,\"seq\":%llu,"
            "\"log_floor\":%llu}\n",
            (unsigned long long)st.records, (unsigned long long)st.removed,
            (unsigned long long)st.fields, (unsigned long long)st.hidden,
            (unsigned long long)st.log_entries, (unsigned long long)st.record_bytes,
            (unsigned long long)st.log_bytes, (unsigned long long)st.seq,
            (unsigned long long)st.log_floor);
    return 0;
}

int cmd_stats(const char *dir, const args *a)
{
    stat_walk w = {NULL, NULL, 0};
    char *text = NULL;
    size_t len = 0;
    if (!env_exists(dir) || open_env(dir, CRDTDB_ENV_RDONLY, &w.env))
        return EXIT_FAILURE;
    if (!(w.out = open_memstream(&text, &len))) {
        crdtdb_env_close(w.env);
        return fail(NULL, CRDTDB_ENOMEM);
    }
    int rc = a->npos ? print_stats(&w, a->pos[0]) : crdtdb_db_list(w.env, print_stats, &w);
    if (rc && !w.rc) /* the lister's own failure (the callback reported its own) */
        fail(crdtdb_env_errmsg(w.env), rc);
    crdtdb_env_close(w.env);
    if (rc) {
        fclose(w.out);
        free(text);
        return EXIT_FAILURE;
    }
    return emit(w.out, &text, &len);
}

int cmd_backup(const char *dir, const args *a)
{
    crdtdb_env *env;
    const char *to = a->pos[0];
    if (!env_exists(dir))
        return EXIT_FAILURE;
    if (mkdir(to, 0700) != 0 && errno != EEXIST)
        return fail_hint(strerror(errno), CRDTDB_EIO, "the backup directory cannot be made");
    if (open_env(dir, 0, &env))
        return EXIT_FAILURE;
    int rc = crdtdb_env_backup(env, to);
    int status = rc ? fail(crdtdb_env_errmsg(env), rc) : 0;
    crdtdb_env_close(env);
    if (!status)
        printf("%s\n", to);
    return status;
}
