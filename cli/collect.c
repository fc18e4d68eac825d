/* crdtdb collect: a database's stable tombstones dropped (crdtdb_db_collect). */
#include "cli.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

int cmd_collect(const char *dir, const args *a)
{
    uint64_t age = 0;
    if (a->max_peer_age && parse_duration(a->max_peer_age, &age)) {
        fprintf(stderr, "crdtdb: --max-peer-age takes a duration such as 90s, 12h or 30d\n");
        return EXIT_FAILURE;
    }
    crdtdb_env *env;
    crdtdb_db *db;
    if (!env_exists(dir) || open_env(dir, 0, &env))
        return EXIT_FAILURE;
    int rc = crdtdb_db_open(env, a->pos[0], &db);
    if (rc) {
        fail_env(env, rc, a->pos[0]);
        crdtdb_env_close(env);
        return EXIT_FAILURE;
    }
    crdtdb_collect_stats st;
    if ((rc = crdtdb_db_collect(db, age, &st)))
        fail_db(db, rc);
    else {
        fputs("{\"db\":", stdout);
        put_json_str(stdout, a->pos[0]);
        printf(",\"records\":%" PRIu64 ",\"registers\":%" PRIu64 ",\"horizon\":%" PRIu64
               ",\"peers_left\":%" PRIu64 ",\"floor\":%" PRIu64 ",\"stamp\":%" PRIu64
               ",\"log_entries\":%" PRIu64 ",\"packed\":%" PRIu64 "}\n",
               st.records, st.registers, st.horizon, st.peers_left, st.floor, st.stamp,
               st.log_entries, st.packed);
    }
    crdtdb_db_close(db);
    crdtdb_env_close(env);
    return rc ? EXIT_FAILURE : EXIT_SUCCESS;
}
