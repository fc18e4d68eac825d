/* Shared by the crdtdb command's source files: the options, the parsed
 * arguments, the helpers of util.c and each file's commands.  Not
 * installed. */
#ifndef CRDTDB_CLI_H
#define CRDTDB_CLI_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "crdtdb_ws.h"
#include "crdtdb_cluster.h"

#define EXIT_USAGE 2

/* Options a command accepts (command.opts). */
enum {
    OPT_COLLECTIONS = 1,
    OPT_COUNT = 2,
    OPT_SINCE = 4,
    OPT_FOR = 8,
    OPT_OUTPUT = 16,
    OPT_LISTEN = 32,
    OPT_MODE = 64,
    OPT_DB = 128,
    OPT_WATCH = 256, /* a flag: no value */
    OPT_PEER = 512,  /* --peer URL (repeatable), --peer-ca F */
    OPT_JWT = 1024,  /* --jwt-secret-file F | --jwt-public-key F [--jwt-alg A] */
    OPT_TOKEN = 2048, /* --token-file F */
    OPT_TLS = 4096,   /* serve: --tls-cert F --tls-key F */
    OPT_LIMITS = 8192, /* serve: the flags in serve_limit_flags */
    OPT_TIMEOUT = 16384, /* sync: --timeout SECONDS */
    OPT_TLS_CA = 32768,  /* sync: --tls-ca F */
    OPT_PRESENCE = 65536, /* sync: --presence JSON, --send JSON, --to USER */
    OPT_EXPIRE = 1 << 20,  /* expire: --after D, --closed, --never */
    OPT_ARCHIVE = 1 << 21, /* drop, expired: --archive PATH */
    OPT_DROP = 1 << 22,    /* expired: --drop */
    OPT_EXPIRE_EVERY = 1 << 23, /* serve: --expire-every S */
    OPT_COLLECT = 1 << 24,      /* collect: --max-peer-age D */
    OPT_CLUSTER = 1 << 25 /* serve: --cluster F --self URL [--replicas R] */
};

/* The number of serve_limit_flags (options.h), the size of args.limits. */
#define SERVE_NLIMITS 13

/* A command's parsed arguments; unset options are NULL. */
typedef struct args {
    const char **pos; /* positional arguments, in order */
    int npos;
    const char *collections;
    const char *count;
    const char *since;
    const char *for_peer;
    const char *output;
    const char *listen;
    const char *mode;
    const char *db;
    int watch;
    const char *timeout;
    const char *peers[16];
    int npeers;
    const char *peer_ca;
    const char *peer_token_file;
    const char *relay_users; /* serve: A,B — peer servers' token users */
    const char *jwt_secret_file;
    const char *jwt_public_key;
    const char *jwt_alg;
    const char *token_file;
    const char *tls_cert, *tls_key, *tls_ca;
    const char *limits[SERVE_NLIMITS]; /* values of serve_limit_flags */
    const char *after, *archive, *expire_every;
    const char *max_peer_age; /* collect */
    int closed, never, drop;
    const char *presence, *send, *to; /* sync --watch: presence and a message */
    const char *cluster, *self_url, *replicas; /* serve: docs/cluster.md */
    int handoff; /* serve --cluster: copies of what it does not own go */
} args;

/* --------------------------------------------------------------- util.c */

/* Prints "crdtdb: msg" (or the code's description when msg is empty) to
 * stderr; returns EXIT_FAILURE. */
int fail(const char *msg, int rc);
/* As fail, with the next step to take: "crdtdb: msg (hint)". */
int fail_hint(const char *msg, int rc, const char *hint);
/* Reports a failed call on db: its message, and for a missing collection
 * the collections it has; returns EXIT_FAILURE. */
int fail_db(crdtdb_db *db, int rc);
/* Reports a failed call on env; for a missing database id (not NULL),
 * how to create it.  Returns EXIT_FAILURE. */
int fail_env(crdtdb_env *env, int rc, const char *id);

/* Writes s (NUL-terminated, valid UTF-8) as a JSON string to f. */
void put_json_str(FILE *f, const char *s);
/* Closes the memory stream and copies what it holds to stdout (text is
 * freed); 0 or EXIT_FAILURE. */
int emit(FILE *mem, char **text, size_t *len);
/* The JSON of argument arg ("-": standard input, for records too large
 * for a command line) as msgpack in mp; 0 or EXIT_FAILURE (reported). */
int parse_json(const char *arg, crdtdb_buf *mp);
/* Record id (msgpack value, len bytes) as JSON text in json, as the
 * DataStore shows records ({"id": id, ...fields}; crdtdb_record_with_id);
 * rec is scratch space.  0 or an error code. */
int record_json(const char *id, const uint8_t *value, size_t len, crdtdb_buf *rec,
                crdtdb_buf *json);

/* Whether directory dir exists; if not, says so. */
int env_exists(const char *dir);
/* Opens the environment at dir; 0 or EXIT_FAILURE (reported). */
int open_env(const char *dir, unsigned flags, crdtdb_env **env);
/* Opens the existing environment at dir and database id in it; 0 or
 * EXIT_FAILURE (reported, nothing left open). */
int open_db(const char *dir, const char *id, crdtdb_env **env,
            crdtdb_db **db);
/* Closes db and env; returns status. */
int close_db(crdtdb_env *env, crdtdb_db *db, int status);

/* Writes n bytes as 2n lowercase hex digits and a NUL into out. */
void hex_encode(const uint8_t *b, size_t n, char *out);
/* Reads key file path (a regular file of 1 byte to 64 KiB) into *data
 * and *len: malloc'd *len bytes, which the caller zeroes (sodium_memzero)
 * and frees.  strip_newline: one trailing "\n", and a "\r" before it, are
 * not part of the key (a shared secret written by an editor or echo); the
 * key may then be empty.  No copy is left behind.  0 or EXIT_FAILURE
 * (reported). */
int read_key_file(const char *path, int strip_newline, uint8_t **data,
                  size_t *len);
/* A token file's contents as a string (NULL reported on failure); the
 * caller frees it with free_secret. */
char *read_token(const char *file);
/* Zeroes and frees a secret string.  Accepts NULL. */
void free_secret(char *s);

/* An exclusive lock on DIR/serve.lock, held until closed or the process
 * ends (the kernel drops it even on kill -9), with this pid in the file:
 * one crdtdb serve per data directory, and no drop under a running one.
 * Other commands (add, query, backup, ...) use the directory beside a
 * server.  The lock's fd, or -1 when a server holds it ("a crdtdb serve
 * (pid N) holds DIR; why", reported) or it cannot be taken (reported). */
int lock_dir(const char *dir, const char *why);
/* --mode: two-way (also for NULL) or server-to-client; -1 (reported)
 * otherwise. */
int parse_mode(const char *s, crdtdb_sync_mode *mode);
/* Catches SIGINT and SIGTERM (sigaction flags, e.g. SA_RESTART), after
 * which stopped() is 1. */
void catch_signals(int flags);
int stopped(void);

/* --------------------------------------------------------------- main.c */

/* Matches "--name VALUE" and "--name=VALUE" at argv[*i]: 1 (value in
 * *val), 0 (another argument), -1 (no value). */
int take_opt(int argc, char **argv, int *i, const char *name, const char **val);

/* ------------------------------------------- the commands, by file */

int cmd_init(const char *dir, const args *a);     /* init.c */
int cmd_id(const char *dir, const args *a);       /* init.c */
int cmd_reset_id(const char *dir, const args *a); /* init.c */
int cmd_create(const char *dir, const args *a);   /* create.c */
int cmd_dbs(const char *dir, const args *a);      /* create.c */
int cmd_stats(const char *dir, const args *a);    /* stats.c */
int cmd_backup(const char *dir, const args *a);   /* stats.c */
int cmd_expire(const char *dir, const args *a);   /* expire.c */
int cmd_expired(const char *dir, const args *a);  /* expire.c */
int cmd_drop(const char *dir, const args *a);     /* expire.c */
int cmd_collect(const char *dir, const args *a);  /* collect.c */
/* "90s", "30m", "12h", "7d", "500ms" (a bare number: seconds) into ms;
 * 0 or -1 (expire.c). */
int parse_duration(const char *s, uint64_t *ms);
int cmd_add(const char *dir, const args *a);      /* add.c */
int cmd_add_all(const char *dir, const args *a);  /* add.c */
int cmd_update(const char *dir, const args *a);   /* add.c */
int cmd_remove(const char *dir, const args *a);   /* add.c */
int cmd_get(const char *dir, const args *a);      /* get.c */
int cmd_query(const char *dir, const args *a);    /* get.c */
int cmd_watch(const char *dir, const args *a);    /* watch.c */
int cmd_export(const char *dir, const args *a);   /* export.c */
int cmd_import(const char *dir, const args *a);   /* export.c */
int cmd_peers(const char *dir, const args *a);    /* export.c */
int cmd_serve(const char *dir, const args *a);    /* serve.c */
int cmd_sync(const char *dir, const args *a);     /* sync.c */
/* cluster.c: serve's --cluster flags.  serve_cluster_open checks them
 * and, with --cluster, opens the file into *cl (the caller closes it after
 * the server), plugs its peer filter into o and catches SIGHUP; 0,
 * EXIT_USAGE or EXIT_FAILURE (reported).  serve_cluster_hup re-reads the
 * file after a SIGHUP (call it from the serve loop; cl may be NULL). */
int serve_cluster_open(const args *a, crdtdb_server_options *o, crdtdb_cluster **cl);
void serve_cluster_hup(crdtdb_cluster *cl, const args *a, crdtdb_env *env, crdtdb_server *srv,
                       void (*log)(void *ctx, const char *line), void *log_ctx);
/* token.c: argv holds its arguments only (after "token"); it opens no
 * environment. */
int cmd_token(int argc, char **argv);

/* watch.c: prints one change event as a JSON line (the watch format; also
 * sync --watch's); ctx is a watch_ctx. */
typedef struct watch_ctx {
    crdtdb_buf rec, json; /* the record with its id, as JSON */
    long remaining; /* events still to print; -1: no limit */
    int rc;
} watch_ctx;
void print_event(void *ctx, const crdtdb_event *ev);

#endif
