/*
 * The options of the crdtdb commands, as tables: the parser (main.c) takes
 * exactly these, and test_cli checks that every one a command takes is in
 * its --help.  Not installed.
 */
#ifndef CRDTDB_CLI_OPTIONS_H
#define CRDTDB_CLI_OPTIONS_H

#include <stddef.h>

#include "cli.h"

enum {
    OPTV_VALUE,  /* --name VALUE or --name=VALUE: a const char * at off */
    OPTV_FLAG,   /* --name: an int at off, set to 1 */
    OPTV_LIST,   /* --name VALUE, repeatable: args.peers */
    OPTV_LIMITS  /* serve_limit_flags[k]: args.limits[k] */
};

typedef struct cli_option {
    const char *name; /* NULL for OPTV_LIMITS */
    unsigned opt;     /* the OPT_* bit of the commands that take it */
    int kind;
    size_t off; /* offsetof(args, field) */
} cli_option;

/* The flags that set a server's limits (docs/auth.md, "Limits and
 * timeouts"), in the order of args.limits; NULL-terminated. */
static const char *const serve_limit_flags[SERVE_NLIMITS + 1] = {
    "--max-connections",   "--max-per-ip",      "--max-per-user",  "--max-buffered-mb",
    "--handshake-timeout", "--message-timeout", "--ping-interval", "--pong-timeout",
    "--max-presence",      "--max-presence-members", "--presence-hz", "--max-databases",
    "--idle-secs",
    NULL};

static const cli_option cli_options[] = {
    {"--collections", OPT_COLLECTIONS, OPTV_VALUE, offsetof(args, collections)},
    {"--count", OPT_COUNT, OPTV_VALUE, offsetof(args, count)},
    {"--since", OPT_SINCE, OPTV_VALUE, offsetof(args, since)},
    {"--for", OPT_FOR, OPTV_VALUE, offsetof(args, for_peer)},
    {"-o", OPT_OUTPUT, OPTV_VALUE, offsetof(args, output)},
    {"--output", OPT_OUTPUT, OPTV_VALUE, offsetof(args, output)},
    {"--listen", OPT_LISTEN, OPTV_VALUE, offsetof(args, listen)},
    {"--mode", OPT_MODE, OPTV_VALUE, offsetof(args, mode)},
    {"--db", OPT_DB, OPTV_VALUE, offsetof(args, db)},
    {"--watch", OPT_WATCH, OPTV_FLAG, offsetof(args, watch)},
    {"--timeout", OPT_TIMEOUT, OPTV_VALUE, offsetof(args, timeout)},
    {"--peer", OPT_PEER, OPTV_LIST, offsetof(args, peers)},
    {"--peer-ca", OPT_PEER, OPTV_VALUE, offsetof(args, peer_ca)},
    {"--peer-token-file", OPT_PEER, OPTV_VALUE, offsetof(args, peer_token_file)},
    {"--relay-users", OPT_PEER, OPTV_VALUE, offsetof(args, relay_users)},
    {"--jwt-secret-file", OPT_JWT, OPTV_VALUE, offsetof(args, jwt_secret_file)},
    {"--jwt-public-key", OPT_JWT, OPTV_VALUE, offsetof(args, jwt_public_key)},
    {"--jwt-alg", OPT_JWT, OPTV_VALUE, offsetof(args, jwt_alg)},
    {"--token-file", OPT_TOKEN, OPTV_VALUE, offsetof(args, token_file)},
    {"--tls-cert", OPT_TLS, OPTV_VALUE, offsetof(args, tls_cert)},
    {"--tls-key", OPT_TLS, OPTV_VALUE, offsetof(args, tls_key)},
    {"--tls-ca", OPT_TLS_CA, OPTV_VALUE, offsetof(args, tls_ca)},
    {"--after", OPT_EXPIRE, OPTV_VALUE, offsetof(args, after)},
    {"--closed", OPT_EXPIRE, OPTV_FLAG, offsetof(args, closed)},
    {"--never", OPT_EXPIRE, OPTV_FLAG, offsetof(args, never)},
    {"--archive", OPT_ARCHIVE, OPTV_VALUE, offsetof(args, archive)},
    {"--drop", OPT_DROP, OPTV_FLAG, offsetof(args, drop)},
    {"--expire-every", OPT_EXPIRE_EVERY, OPTV_VALUE, offsetof(args, expire_every)},
    {"--max-peer-age", OPT_COLLECT, OPTV_VALUE, offsetof(args, max_peer_age)},
    {"--presence", OPT_PRESENCE, OPTV_VALUE, offsetof(args, presence)},
    {"--send", OPT_PRESENCE, OPTV_VALUE, offsetof(args, send)},
    {"--to", OPT_PRESENCE, OPTV_VALUE, offsetof(args, to)},
    {"--cluster", OPT_CLUSTER, OPTV_VALUE, offsetof(args, cluster)},
    {"--self", OPT_CLUSTER, OPTV_VALUE, offsetof(args, self_url)},
    {"--replicas", OPT_CLUSTER, OPTV_VALUE, offsetof(args, replicas)},
    {"--handoff", OPT_CLUSTER, OPTV_FLAG, offsetof(args, handoff)},
    {NULL, OPT_LIMITS, OPTV_LIMITS, offsetof(args, limits)},
};

#define NOPTIONS (sizeof cli_options / sizeof *cli_options)

/* serve's operations flags (docs/operations.md), parsed into a serve_args
 * beside args by the same rules (main.c): add a flag here, with its field,
 * and both the command line and --config take it. */
typedef struct serve_args {
    const char *log_format; /* --log-format text|json */
    const char *metrics;    /* --metrics local|any|off */
    const char *collect_every; /* --collect-every S */
    const char *max_peer_age;  /* --max-peer-age DURATION */
    const char *early_relay;   /* --early-relay on|off */
} serve_args;

static const cli_option serve_options[] = {
    {"--log-format", 0, OPTV_VALUE, offsetof(serve_args, log_format)},
    {"--metrics", 0, OPTV_VALUE, offsetof(serve_args, metrics)},
    {"--collect-every", 0, OPTV_VALUE, offsetof(serve_args, collect_every)},
    {"--max-peer-age", 0, OPTV_VALUE, offsetof(serve_args, max_peer_age)},
    {"--early-relay", 0, OPTV_VALUE, offsetof(serve_args, early_relay)},
};

#define NSERVE_OPTIONS (sizeof serve_options / sizeof *serve_options)

/* serve.c: crdtdb serve with its operations flags (cmd_serve: without). */
int cmd_serve_ops(const char *dir, const args *a, const serve_args *sa);

/* ------------------------------------------------------------ config.c */

/* An argument list with every --config FILE expanded (config_expand). */
typedef struct config_argv {
    int argc;
    char **argv; /* argv[argc] is NULL */
    char *text;  /* the files' bytes and flag names the entries point into */
} config_argv;

/*
 * Expands each "--config FILE" (or --config=FILE) among argv[0..argc) into
 * the settings of FILE, in its place: a line "name value" or
 * "name = value" becomes "--name" "value", a line "name" alone becomes
 * "--name"; blank lines and lines starting with # are skipped.  What
 * follows on the command line then overrides the file (a later value
 * wins).  known(ctx, "--name") says whether the command takes the flag:
 * 1 with a value, 2 without one, 0 not at all.  FILE is at most 1 MiB.
 * 0 with *out filled (config_free it), or EXIT_USAGE / EXIT_FAILURE, the
 * failing file and line reported on stderr.
 */
int config_expand(int argc, char **argv, int (*known)(void *ctx, const char *flag), void *ctx,
                  config_argv *out);
void config_free(config_argv *c);

/* token parses its own options (it opens no environment): these, in the
 * order of its variables; NULL-terminated. */
static const char *const token_flags[] = {"--secret-file", "--key-file", "--sub", "--ttl",
                                          "--alg", NULL};

#endif
