/*
 * crdtdb init, id and reset-id: the environment and its replica identity.
 */
#include "cli.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Prints the replica id in hex and closes env. */
static int print_replica_id(crdtdb_env *env)
{
    uint8_t id[CRDTDB_REPLICA_ID_BYTES];
    char text[2 * CRDTDB_REPLICA_ID_BYTES + 1];
    crdtdb_env_replica_id(env, id);
    hex_encode(id, sizeof id, text);
    puts(text);
    crdtdb_env_close(env);
    return fflush(stdout) == 0 ? 0 : fail(strerror(errno), CRDTDB_EIO);
}

int cmd_init(const char *dir, const args *a)
{
    crdtdb_env *env;
    (void)a;
    return open_env(dir, 0, &env) ? EXIT_FAILURE : print_replica_id(env);
}

int cmd_id(const char *dir, const args *a)
{
    crdtdb_env *env;
    (void)a;
    if (!env_exists(dir) || open_env(dir, CRDTDB_ENV_RDONLY, &env))
        return EXIT_FAILURE;
    return print_replica_id(env);
}

int cmd_reset_id(const char *dir, const args *a)
{
    crdtdb_env *env;
    (void)a;
    if (!env_exists(dir) || open_env(dir, 0, &env))
        return EXIT_FAILURE;
    int rc = crdtdb_env_reset_id(env);
    if (rc) {
        fail(crdtdb_env_errmsg(env), rc);
        crdtdb_env_close(env);
        return EXIT_FAILURE;
    }
    return print_replica_id(env);
}
