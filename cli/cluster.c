/*
 * crdtdb serve --cluster F --self URL [--replicas R]: the glue between the
 * serve command and the cluster library (crdtdb_cluster.h): the flags, the
 * peer filter, and SIGHUP re-reading the file (docs/cluster.md).
 */
#include "cli.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>

/* Set by SIGHUP; the serve loop reloads the file on its thread. */
static volatile sig_atomic_t hup_requested;

static void on_hup(int sig)
{
    (void)sig;
    hup_requested = 1;
}

int serve_cluster_open(const args *a, crdtdb_server_options *o, crdtdb_cluster **cl)
{
    *cl = NULL;
    if (!a->cluster) {
        if (a->self_url || a->replicas || a->handoff) {
            fprintf(stderr, "crdtdb: --self, --replicas and --handoff go with --cluster\n");
            return EXIT_USAGE;
        }
        return 0;
    }
    if (a->npeers) { /* the filter would give them no database */
        fprintf(stderr, "crdtdb: --cluster links the servers of its file: list peers there, "
                        "not with --peer\n");
        return EXIT_USAGE;
    }
    if (!a->self_url) {
        fprintf(stderr, "crdtdb: --cluster needs --self URL (this server's line in the file)\n");
        return EXIT_USAGE;
    }
    unsigned r = 2;
    if (a->replicas) {
        char *end;
        unsigned long n = strtoul(a->replicas, &end, 10);
        if (!*a->replicas || *end || *a->replicas == '-' || n == 0 ||
            n > CRDTDB_CLUSTER_MAX_REPLICAS) {
            fprintf(stderr, "crdtdb: --replicas takes a number from 1 to %u\n",
                    CRDTDB_CLUSTER_MAX_REPLICAS);
            return EXIT_USAGE;
        }
        r = (unsigned)n;
    }
    char why[256] = "";
    int rc = crdtdb_cluster_open(a->cluster, a->self_url, r, cl, why, sizeof why);
    if (rc) {
        char msg[512];
        if (rc == CRDTDB_EIO || !*why) /* its message names the file */
            snprintf(msg, sizeof msg, "%s", why);
        else
            snprintf(msg, sizeof msg, "%s: %s", a->cluster, why);
        return fail(msg, rc);
    }
    o->peer_filter = crdtdb_cluster_peer_filter;
    o->peer_filter_ctx = *cl;
    if (a->handoff) { /* what a non-owner served goes to the owners */
        o->keep = crdtdb_cluster_keep;
        o->keep_ctx = *cl;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_hup;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGHUP, &sa, NULL);
    return 0;
}

void serve_cluster_hup(crdtdb_cluster *cl, const args *a, crdtdb_env *env, crdtdb_server *srv,
                       void (*log)(void *ctx, const char *line), void *log_ctx)
{
    if (!cl || !hup_requested)
        return;
    hup_requested = 0;
    char why[256] = "", line[1024];
    int rc = crdtdb_cluster_reload(cl, a->cluster, env, srv, why, sizeof why);
    if (rc) /* a file that does not parse changes nothing; a link that
               cannot open leaves the new file in place, that link missing */
        snprintf(line, sizeof line, "cluster: SIGHUP: %s: %s", a->cluster,
                 *why ? why : crdtdb_strerror(rc));
    else
        snprintf(line, sizeof line, "cluster: %s re-read: %zu servers", a->cluster,
                 crdtdb_cluster_size(cl));
    log(log_ctx, line); /* the server's own format (--log-format) */
}
