/*
 * crdtdb create and dbs: making a database with its collections, and
 * listing the databases of the environment.
 */
#include "cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int cmd_create(const char *dir, const args *a)
{
    crdtdb_env *env;
    crdtdb_db *db = NULL;
    if (!a->collections) {
        fprintf(stderr, "crdtdb: create needs --collections A,B,...\n");
        return EXIT_USAGE;
    }
    /* Split a copy of "A,B,C" in place; n commas make n + 1 names. */
    size_t n = 1;
    for (const char *c = a->collections; *c; c++)
        n += *c == ',';
    char *list = strdup(a->collections);
    const char **names = malloc(n * sizeof *names);
    if (!list || !names) {
        free(list);
        free(names);
        return fail(NULL, CRDTDB_ENOMEM);
    }
    names[0] = list;
    for (size_t i = 1; (list = strchr(list, ',')) != NULL; i++) {
        *list++ = '\0';
        names[i] = list;
    }
    int status = env_exists(dir) ? open_env(dir, 0, &env) : EXIT_FAILURE;
    if (status == 0) {
        int rc = crdtdb_db_create(env, a->pos[0], names, n, &db);
        status = rc ? fail(crdtdb_env_errmsg(env), rc) : 0;
        close_db(env, db, 0);
    }
    free((char *)names[0]);
    free(names);
    return status;
}

static int print_db(void *ctx, const char *id)
{
    fprintf(ctx, "%s\n", id);
    return 0;
}

int cmd_dbs(const char *dir, const args *a)
{
    crdtdb_env *env;
    char *text = NULL;
    size_t len = 0;
    (void)a;
    if (!env_exists(dir) || open_env(dir, 0, &env))
        return EXIT_FAILURE;
    FILE *mem = open_memstream(&text, &len);
    if (!mem) {
        crdtdb_env_close(env);
        return fail(NULL, CRDTDB_ENOMEM);
    }
    int rc = crdtdb_db_list(env, print_db, mem);
    int status = rc ? fail(crdtdb_env_errmsg(env), rc) : 0;
    crdtdb_env_close(env);
    if (status) {
        fclose(mem);
        free(text);
        return status;
    }
    return emit(mem, &text, &len);
}
