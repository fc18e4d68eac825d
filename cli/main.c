/*
 * crdtdb: command-line access to an environment, a thin layer over the
 * public API.  Output is built in memory and written only on success, so a
 * failing command prints nothing on stdout (except import, which reports
 * each delta as it is applied: those stay applied).
 *
 * main.c is the dispatch only: the command table with each command's help,
 * option parsing and main.  Each command lives in the file named after it
 * (or after the first of its group; cli.h lists them), the helpers they
 * share in util.c.
 */
#include "cli.h"
#include "options.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct command {
    const char *name;
    const char *synopsis;
    const char *summary; /* one line for the command list */
    const char *help;
    int min_pos, max_pos; /* max_pos -1: no limit */
    unsigned opts;
    int (*run)(const char *dir, const args *a);
} command;

/* serve also takes serve_options (options.h) and --config FILE, and runs
 * as cmd_serve_ops with them. */
static int is_serve(const command *c) { return c->run == cmd_serve; }

/* ------------------------------------------------------------ commands */

static const command commands[] = {
    {"init", "", "create the environment; print its replica id",
     "Create the environment if needed and print its replica id.", 0, 0, 0,
     cmd_init},
    {"id", "", "print the replica id",
     "Print the replica id of an existing environment.", 0, 0, 0, cmd_id},
    {"reset-id", "", "give this environment a new replica id",
     "Give the environment a new replica identity and print it.  Run it on\n"
     "a copied data directory: two copies writing under one identity fork\n"
     "its history, and peers refuse their deltas ('replica history\n"
     "diverged').  The data stays; peers see a new replica from now on.",
     0, 0, 0, cmd_reset_id},
    {"create", "DB --collections A,B,...", "create a database",
     "Create database DB with the named collections.", 1, 1,
     OPT_COLLECTIONS, cmd_create},
    {"dbs", "", "list the databases", "List the databases, one per line.", 0,
     0, 0, cmd_dbs},
    {"stats", "[DB]", "print what each database holds",
     "Print one JSON line per database (or for DB): records present,\n"
     "removed (tombstones), fields of present records, hidden fields of\n"
     "removed ones, change-log entries, their stored bytes, the last\n"
     "change sequence, and the log floor (collect trims the log below it).\n"
     "Reads one snapshot; writers go on.",
     0, 1, 0, cmd_stats},
    {"backup", "DIR", "copy the environment while it runs",
     "Write a consistent, compacted copy of the whole environment (every\n"
     "database, the replica identity, the peers' watermarks) into DIR\n"
     "(created if missing; it must hold no data file), while servers and\n"
     "other commands go on writing.  Restore by using DIR as the data\n"
     "directory: its first open gives it a new replica identity (the\n"
     "original may have written on after the copy; one identity must not\n"
     "fork), and it then syncs both ways with its peers as a new replica.",
     1, 1, 0, cmd_backup},
    {"drop", "DB [--archive FILE]", "delete a database",
     "Delete database DB and all its data.  With --archive, first write all\n"
     "of it as signed deltas into the new FILE, which 'crdtdb import'\n"
     "restores into a database of the same id and collections in another\n"
     "environment (an archive server).  Not into this one: its own deltas\n"
     "for a log it no longer holds read as a copied identity (EFORK).",
     1, 1, OPT_ARCHIVE, cmd_drop},
    {"expire", "DB (--after DURATION [--closed] | --never)", "set when a database expires",
     "Give DB a time-to-live: it expires DURATION (e.g. 90s, 30m, 12h, 7d)\n"
     "after its last write, or with --closed after now whatever is written\n"
     "later (a finished match).  --never clears it.  The setting is this\n"
     "replica's own, not synced.  Prints the expiry as JSON (ms since the\n"
     "epoch; due_ms is when it expires).  Nothing is dropped here: see\n"
     "'crdtdb expired'.",
     1, 1, OPT_EXPIRE, cmd_expire},
    {"expired", "[--drop [--archive DIR]]", "list (and drop) expired databases",
     "Print a JSON line for each database whose time-to-live has passed.\n"
     "With --drop, delete them, each first archived into DIR (created if\n"
     "missing) as <hex of the id>.crdtdb when --archive is given.  A\n"
     "database open elsewhere in this process cannot be dropped; servers\n"
     "end its sessions first.",
     0, 0, OPT_DROP | OPT_ARCHIVE, cmd_expired},
    {"collect", "DB [--max-peer-age DURATION]", "drop tombstones every peer holds",
     "Drop DB's removed records once every peer holds their removes (and\n"
     "everything it held then has reached this replica), and print what\n"
     "was collected as JSON.  With --max-peer-age (e.g. 30d), a peer heard\n"
     "from longer ago no longer holds collection back; it gets a full\n"
     "resync when it returns (docs/crdt.md, \"Collecting tombstones\").\n"
     "Then trim the change log below what every peer holds (log_entries:\n"
     "entries dropped; an export from below walks the records), and pack\n"
     "the records every peer holds whole (packed: records newly packed,\n"
     "compressed together; they read and sync as any other).",
     1, 1, OPT_COLLECT, cmd_collect},
    {"add", "DB COLL ID JSON|-", "add or replace a record",
     "Add record ID (a JSON object), replacing any existing one.  '-' reads\n"
     "the JSON from standard input (a record too large for a command line).",
     4, 4, 0, cmd_add},
    {"add-all", "DB COLL JSON|-", "add or replace records in one transaction",
     "Add the records of a JSON object from record id to record, each\n"
     "replacing any existing one, all in one transaction: all or none.\n"
     "'-' reads the JSON from standard input.",
     3, 3, 0, cmd_add_all},
    {"update", "DB COLL ID JSON|-", "deep-merge changes into a record",
     "Deep-merge the JSON object into existing record ID.  '-' reads the\n"
     "JSON from standard input.",
     4, 4, 0, cmd_update},
    {"remove", "DB COLL ID", "remove a record",
     "Remove record ID.  Removing a record that is not there succeeds.", 3, 3,
     0, cmd_remove},
    {"get", "DB COLL ID", "print a record",
     "Print record ID as one line of JSON, {\"id\":ID,...its fields}: the\n"
     "record id comes first, and stands in for a field named \"id\" of the\n"
     "record, if it has one (records carry their id, as in query and watch).",
     3, 3, 0, cmd_get},
    {"query", "DB COLL [CRITERIA]", "print matching records",
     "Print the matching records as a JSON array, ordered by id, each as\n"
     "get prints it: {\"id\":ID,...}.  CRITERIA is a JSON object of field\n"
     "values ({\"a\":{\"b\":1}} means a.b == 1) or a list of conditions\n"
     "[[\"a.b\",\">=\",1],...] with ops == != < <= > >=.  Default: all.",
     2, 3, 0, cmd_query},
    {"watch", "DB [COLL] [--count N]", "print changes as they happen",
     "Print change events as JSON lines until interrupted, or after N\n"
     "events: {\"event\":...,\"collection\":...,\"id\":...,\"value\":...};\n"
     "the value is the record as get prints it, with its id.",
     1, 2, OPT_COUNT, cmd_watch},
    {"export", "DB [--since SEQ | --for PEER_ID] -o|--output FILE",
     "write changes to a file, for import elsewhere",
     "Write the changes of DB after local sequence SEQ (default 0: all) to\n"
     "FILE as signed deltas, to carry to another replica and import there.\n"
     "With --for PEER_ID (a 64-digit hex replica id, as 'crdtdb id' prints\n"
     "it), start where that peer is known to have everything of ours, and\n"
     "leave out what it sent us; each delta also tells it how much\n"
     "of its changes we have.  FILE (-o or --output) is replaced atomically;\n"
     "'-o -' writes to standard output.  A summary goes to standard error.",
     1, 1, OPT_SINCE | OPT_FOR | OPT_OUTPUT, cmd_export},
    {"import", "FILE [FILE...]", "apply deltas written by export",
     "Verify and apply the deltas in each FILE ('-': standard input), each\n"
     "to the database it names, printing one line per delta.  Each delta is\n"
     "applied atomically: on an error the command stops and exits 1, and\n"
     "the deltas before the failing one stay applied.  Importing the same\n"
     "deltas again, or in any order, is harmless.",
     1, -1, 0, cmd_import},
    {"peers", "DB", "list the replicas DB has exchanged deltas with",
     "Print one line per known peer of DB: its replica id, the last of its\n"
     "own sequences we have everything up to (received), and the last of\n"
     "ours it is known to have everything up to (acked).",
     1, 1, 0, cmd_peers},
    {"serve", "[--listen HOST:PORT] [--collections A,B,...] [--mode MODE] [--peer URL]...\n"
              "       [--peer-ca F] [--peer-token-file F] [--relay-users A,B]\n"
              "       [--tls-cert F --tls-key F]\n"
              "       [--jwt-secret-file F | --jwt-public-key F [--jwt-alg A]]\n"
              "       [--max-connections N] [--max-per-ip N] [--max-per-user N]\n"
              "       [--max-databases N] [--idle-secs S]\n"
              "       [--max-buffered-mb M] [--handshake-timeout S] [--message-timeout S]\n"
              "       [--ping-interval S] [--pong-timeout S] [--max-presence N]\n"
              "       [--max-presence-members N] [--presence-hz N]\n"
              "       [--expire-every S [--archive DIR]]\n"
              "       [--collect-every S [--max-peer-age DURATION]] [--early-relay on|off]\n"
              "       [--cluster F --self URL [--replicas R] [--handoff]]\n"
              "       [--log-format text|json] [--metrics local|any|off] [--config FILE]",
     "serve the databases to sync clients over WebSocket",
     "Serve every database of the environment at ws://HOST:PORT/v1/db/DB\n"
     "(default 127.0.0.1:8080) until interrupted, logging one line per\n"
     "connection to standard error.  A database a client names that does\n"
     "not exist is created with --collections (without it, refused).\n"
     "MODE is two-way (default) or server-to-client: clients only receive.\n"
     "--tls-cert F --tls-key F (PEM files) serve wss:// instead of ws://.\n"
     "--peer URL (repeatable) makes this server a replica of the server at\n"
     "URL: every database here is synced two-way with it, new ones too\n"
     "(run both servers with --peer for a symmetric pair); --peer-ca F\n"
     "trusts the CAs in F for wss:// peers; --peer-token-file F sends the\n"
     "token in F on peer links (a peer with members needs that user as a\n"
     "member of each database it syncs); --relay-users A,B names the token\n"
     "users of peer servers' links, whose connections may relay presence\n"
     "and messages (with tokens, no one else may).\n"
     "--expire-every S looks every S seconds for databases whose time-to-live\n"
     "('crdtdb expire') has passed: their clients are told and clear them,\n"
     "they are refused from then on, archived into --archive DIR if given\n"
     "(as <hex of the id>.crdtdb, for 'crdtdb import' elsewhere) and dropped.\n"
     "--collect-every S drops, every S seconds, the tombstones every peer of\n"
     "an open database holds ('crdtdb collect'); with --max-peer-age D (e.g.\n"
     "30d) a peer silent longer no longer holds that back and is resynced\n"
     "whole when it returns (docs/crdt.md, \"Collecting tombstones\").\n"
     "--early-relay on (default) sends a write to the database's other\n"
     "caught-up clients before its commit's disk flush, and acknowledges the\n"
     "writer after it; off sends it after (docs/operations.md, \"Early relay\").\n"
     "--jwt-secret-file F (HS256) or --jwt-public-key F (PEM; --jwt-alg\n"
     "RS256 or ES256, default RS256) requires a bearer token on every\n"
     "connection (HTTP 401 otherwise) and turns on membership: each database\n"
     "gets a '_members' collection, its creator is its owner, and owners,\n"
     "writers, readers and invited users may do what docs/auth.md says.\n"
     "Limits (docs/auth.md, \"Limits and timeouts\"): --max-connections N\n"
     "(default 1024; then HTTP 503), --max-per-ip N and --max-per-user N\n"
     "(64 and 32; then HTTP 429; 'unlimited' lifts them, e.g. behind a\n"
     "proxy), --max-buffered-mb M (256: session buffers of all connections;\n"
     "over it the largest stalled one is closed, 1013), --handshake-timeout S\n"
     "(10: headers and session hello), --message-timeout S (120: one sync\n"
     "message), --ping-interval S and --pong-timeout S (30 and 30: a peer\n"
     "answering no ping is dropped), --max-databases N (100000: databases\n"
     "this environment may hold before a client asking for a new one gets\n"
     "HTTP 503; 'unlimited' lifts it), --idle-secs S (300: a database with no\n"
     "client, in sync with peers linked both ways, closes its links after S\n"
     "seconds; 'never' keeps them).\n"
     "Presence (live state of each connection, never stored; docs/protocol.md):\n"
     "--max-presence N (1024: bytes of one state or message), --max-presence-members N\n"
     "(256: entries per database), --presence-hz N (30: changes forwarded and\n"
     "messages taken per connection per second).  Peer links relay presence\n"
     "both ways; with tokens, only for a link user who owns the database.\n"
     "--cluster F --self URL makes this server one of the servers listed in\n"
     "F (a line each: URL [TOKEN]; URL is this one's): each database is\n"
     "owned by --replicas R of them (default 2, by rendezvous hashing of its\n"
     "id), and a database open here is synced with its owners.  SIGHUP\n"
     "re-reads F: databases that move are pulled by their new owners.\n"
     "With --handoff, a copy of a database this server does not own (one a\n"
     "client was sent here for, or that moved away) is dropped once no\n"
     "client holds it and its owners hold all of it, after telling them it\n"
     "leaves (docs/cluster.md, \"Handoff\").\n"
     "Operations (docs/operations.md): GET /healthz answers 200, 503 while\n"
     "draining; GET /metrics answers Prometheus metrics, by default to loopback\n"
     "addresses only (--metrics any: to everyone; off: to nobody).\n"
     "--log-format json writes each log line as one JSON object (ts, level,\n"
     "msg, and peer and db when the line names them).  --config FILE reads\n"
     "settings from FILE, one per line: 'name value' or 'name = value' for\n"
     "--name value, 'name' alone for a flag without value, # for comments;\n"
     "flags after --config override it.  SIGTERM drains: new connections are\n"
     "refused, clients are sent what they lack and 'going away', and the\n"
     "server exits 0 within 10 s.",
     0, 0, OPT_LISTEN | OPT_COLLECTIONS | OPT_MODE | OPT_PEER | OPT_JWT | OPT_TLS | OPT_LIMITS |
               OPT_EXPIRE_EVERY | OPT_ARCHIVE | OPT_CLUSTER,
     cmd_serve},
    {"sync", "URL --db DB [--watch | --timeout SECONDS] [--mode MODE] [--token-file F]\n"
             "       [--tls-ca F] [--presence JSON] [--send JSON [--to USER]]",
     "sync a database with a server over WebSocket",
     "Connect to the server at URL (ws://HOST:PORT) and sync database DB\n"
     "both ways (--mode server-to-client: only receive), then exit once\n"
     "both sides have everything.  If the server cannot be reached or\n"
     "refuses the connection, exit 1 at once saying why; --timeout SECONDS\n"
     "(default 30) bounds the whole sync.\n"
     "With --watch, stay connected, reconnecting after drops (each failure\n"
     "and the retry are said on stderr), pushing and receiving changes as\n"
     "they happen until interrupted, and print each change as a JSON line\n"
     "(as 'watch' does); status goes to stderr.\n"
     "URL may be wss://HOST:PORT; --tls-ca F trusts the CAs in F (e.g. a\n"
     "self-signed server certificate) instead of the system's.\n"
     "--token-file F sends the token (JWT) in F as the bearer; if the\n"
     "server says this user's access changed, the local copy is cleared.\n"
     "Large first syncs print their progress to stderr.\n"
     "With --watch, --presence JSON (an object, '-': standard input) shows\n"
     "this connection to the others of the database, on every reconnect too\n"
     "(null: shows nothing, only watches), and prints the others' presence\n"
     "and messages as JSON lines, never stored:\n"
     "  {\"presence\":\"join\"|\"update\"|\"leave\",\"key\":K,\"user\":U,\"replica\":R,\n"
     "   \"state\":{...}}   (no state in a leave)\n"
     "  {\"message\":...,\"key\":K,\"user\":U,\"replica\":R,\"to\":USER|null}\n"
     "--send JSON sends one message once connected, to everyone, or with\n"
     "--to USER to that user's connections.",
     1, 1, OPT_DB | OPT_WATCH | OPT_TIMEOUT | OPT_MODE | OPT_TOKEN | OPT_TLS_CA | OPT_PRESENCE,
     cmd_sync},
};

#define NCOMMANDS (sizeof commands / sizeof *commands)

/* ---------------------------------------------------------------- usage */

static int usage(FILE *f, int status)
{
    fputs("usage: crdtdb [-d DIR] COMMAND [ARGS]\n\n"
          "DIR defaults to $CRDTDB_DATA, else ./crdtdb-data.\n"
          "Run 'crdtdb COMMAND --help' for details.  Commands:\n",
          f);
    for (size_t i = 0; i < NCOMMANDS; i++)
        fprintf(f, "  %-8s %s\n", commands[i].name, commands[i].summary);
    fprintf(f, "  %-8s %s\n", "token", "print a token (JWT) naming a user");
    fputs("'crdtdb --version' prints the version.\n", f);
    return status;
}

static int command_usage(const command *c, FILE *f, int status)
{
    fprintf(f, "usage: crdtdb [-d DIR] %s%s%s\n\n%s\n", c->name,
            *c->synopsis ? " " : "", c->synopsis, c->help);
    return status;
}

int take_opt(int argc, char **argv, int *i, const char *name, const char **val)
{
    size_t n = strlen(name);
    if (strncmp(argv[*i], name, n) != 0)
        return 0;
    if (argv[*i][n] == '=') {
        *val = argv[*i] + n + 1;
        return 1;
    }
    if (argv[*i][n] != '\0')
        return 0;
    *val = *i + 1 < argc ? argv[++*i] : NULL;
    return *val ? 1 : -1;
}

/* Matches one of serve_options (options.h) at argv[*i], for a command
 * that takes them: 1 (taken into sa), 0 (none of them), -1 (no value). */
static int take_serve_option(const command *c, int argc, char **argv, int *i, serve_args *sa)
{
    for (size_t k = 0; is_serve(c) && k < NSERVE_OPTIONS; k++) {
        const cli_option *o = &serve_options[k];
        int r;
        if (o->kind == OPTV_FLAG) {
            if (strcmp(argv[*i], o->name) == 0) {
                *(int *)((char *)sa + o->off) = 1;
                return 1;
            }
        } else if ((r = take_opt(argc, argv, i, o->name, (const char **)((char *)sa + o->off))))
            return r;
    }
    return 0;
}

/* Matches one option of the table (options.h) that command c takes at
 * argv[*i]: 1 (taken into a), 0 (none of them), -1 (no value, or too
 * many --peer). */
static int take_option(const command *c, int argc, char **argv, int *i, args *a)
{
    for (size_t k = 0; k < NOPTIONS; k++) {
        const cli_option *o = &cli_options[k];
        int r = 0;
        if (!(c->opts & o->opt))
            continue;
        switch (o->kind) {
        case OPTV_FLAG:
            if (strcmp(argv[*i], o->name) == 0) {
                *(int *)((char *)a + o->off) = 1;
                return 1;
            }
            break;
        case OPTV_LIST:
            r = take_opt(argc, argv, i, o->name, &a->peers[a->npeers]);
            if (r > 0 && ++a->npeers == (int)(sizeof a->peers / sizeof *a->peers))
                return -1;
            break;
        case OPTV_LIMITS:
            for (int j = 0; serve_limit_flags[j] && !r; j++)
                r = take_opt(argc, argv, i, serve_limit_flags[j], &a->limits[j]);
            break;
        default:
            r = take_opt(argc, argv, i, o->name, (const char **)((char *)a + o->off));
        }
        if (r)
            return r;
    }
    return 0;
}

/* Parses a command's arguments into a (and sa), whose pos must have room
 * for argc entries: 0, 1 for --help, -1 for bad usage. */
static int parse_args(const command *c, int argc, char **argv, args *a, serve_args *sa)
{
    int only_pos = 0, r;
    const char **pos = a->pos;
    memset(a, 0, sizeof *a);
    memset(sa, 0, sizeof *sa);
    a->pos = pos;
    for (int i = 0; i < argc; i++) {
        const char *s = argv[i];
        if (!only_pos && s[0] == '-' && s[1] != '\0') {
            if (strcmp(s, "--") == 0)
                only_pos = 1;
            else if (strcmp(s, "-h") == 0 || strcmp(s, "--help") == 0)
                return 1;
            else if ((r = take_option(c, argc, argv, &i, a)) < 0 ||
                     (!r && (r = take_serve_option(c, argc, argv, &i, sa)) < 0))
                return -1;
            else if (r == 0) {
                fprintf(stderr, "crdtdb: unknown option %s\n", s);
                return -1;
            }
            continue;
        }
        if (c->max_pos >= 0 && a->npos == c->max_pos)
            return -1;
        a->pos[a->npos++] = s;
    }
    return a->npos < c->min_pos ? -1 : 0;
}

/* config_expand's question for command c (ctx): 1 if it takes flag with
 * a value, 2 without one, 0 not at all.  Long flags only. */
static int flag_known(void *ctx, const char *flag)
{
    const command *c = ctx;
    for (size_t k = 0; k < NOPTIONS; k++) {
        const cli_option *o = &cli_options[k];
        if (!(c->opts & o->opt) || (o->name && strncmp(o->name, "--", 2) != 0))
            continue;
        if (o->kind == OPTV_LIMITS) {
            for (int j = 0; serve_limit_flags[j]; j++)
                if (strcmp(flag, serve_limit_flags[j]) == 0)
                    return 1;
        } else if (strcmp(flag, o->name) == 0) {
            return o->kind == OPTV_FLAG ? 2 : 1;
        }
    }
    for (size_t k = 0; is_serve(c) && k < NSERVE_OPTIONS; k++)
        if (strcmp(flag, serve_options[k].name) == 0)
            return serve_options[k].kind == OPTV_FLAG ? 2 : 1;
    return 0;
}

/* Runs command c on its arguments (after the command name). */
static int run_command(const command *c, const char *dir, int argc, char **argv)
{
    config_argv cfg = {0, NULL, NULL};
    if (is_serve(c)) { /* --config FILE: its settings in its place */
        int st = config_expand(argc, argv, flag_known, (void *)c, &cfg);
        if (st)
            return st;
        argc = cfg.argc;
        argv = cfg.argv;
    }
    args a;
    serve_args sa;
    if (!(a.pos = malloc((size_t)(argc + 1) * sizeof *a.pos))) {
        config_free(&cfg);
        return fail(NULL, CRDTDB_ENOMEM);
    }
    int status;
    switch (parse_args(c, argc, argv, &a, &sa)) {
    case 1:
        status = command_usage(c, stdout, 0);
        break;
    case -1:
        status = command_usage(c, stderr, EXIT_USAGE);
        break;
    default:
        status = is_serve(c) ? cmd_serve_ops(dir, &a, &sa) : c->run(dir, &a);
    }
    free(a.pos);
    config_free(&cfg);
    return status;
}

int main(int argc, char **argv)
{
    const char *dir = getenv("CRDTDB_DATA");
    int i = 1;
    if (!dir || !*dir)
        dir = "./crdtdb-data";
    if (i < argc && strncmp(argv[i], "-d", 2) == 0) {
        if (argv[i][2] != '\0')
            dir = argv[i++] + 2;
        else if (i + 1 < argc)
            dir = argv[i + 1], i += 2;
        else
            return usage(stderr, EXIT_USAGE);
    }
    if (i >= argc)
        return usage(stderr, EXIT_USAGE);
    if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0)
        return usage(stdout, 0);
    if (strcmp(argv[i], "--version") == 0) {
        printf("crdtdb %d.%d.%d\n", CRDTDB_VERSION_MAJOR, CRDTDB_VERSION_MINOR,
               CRDTDB_VERSION_PATCH);
        return 0;
    }
    if (strcmp(argv[i], "token") == 0) /* opens no environment */
        return cmd_token(argc - i - 1, argv + i + 1);
    for (size_t k = 0; k < NCOMMANDS; k++)
        if (strcmp(argv[i], commands[k].name) == 0)
            return run_command(&commands[k], dir, argc - i - 1, argv + i + 1);
    fprintf(stderr, "crdtdb: unknown command '%s' (crdtdb --help lists the commands)\n",
            argv[i]);
    return EXIT_USAGE;
}
