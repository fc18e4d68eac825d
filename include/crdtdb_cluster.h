/*
 * crdtdb cluster: many `crdtdb serve` processes behind a load balancer
 * (HAProxy), each database held by R of them, its "owners".
 *
 * The servers share one cluster file, a line per server:
 *
 *     # comment
 *     ws://10.0.0.1:7001            the server's URL as peers reach it
 *     ws://10.0.0.2:7001 TOKEN      ... and the token to present to it
 *
 * Rendezvous (highest random weight) hashing names the owners of a
 * database id: each server scores BLAKE2b(url "\n" id) (libsodium's
 * crypto_generichash) and the R highest win, so every server that reads
 * the same file agrees, and adding a server moves only the databases it
 * now wins.  Nothing else is shared: no membership protocol, no router.
 * Any server accepts a client for any database; a database open on a
 * server is linked (crdtdb_server_peer) to its owners other than itself,
 * so routing is an optimisation and correctness comes from peering.
 *
 * Part of libcrdtdb_ws.  A handle is used on one thread (the server's).
 */
#ifndef CRDTDB_CLUSTER_H
#define CRDTDB_CLUSTER_H

#include <stddef.h>

#include "crdtdb_ws.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Bounds of a cluster file: more is refused (CRDTDB_ELIMIT). */
#define CRDTDB_CLUSTER_MAX_FILE (1u << 20)   /* bytes */
#define CRDTDB_CLUSTER_MAX_SERVERS 1024u
#define CRDTDB_CLUSTER_MAX_URL 255u          /* bytes of a URL */
#define CRDTDB_CLUSTER_MAX_TOKEN 8192u       /* bytes of a token */
#define CRDTDB_CLUSTER_MAX_REPLICAS 16u      /* R */

typedef struct crdtdb_cluster crdtdb_cluster;

/*
 * Reads the cluster file at `path` (or `len` bytes of `text`) as seen by
 * the server at self_url (copied; it must be one of the file's URLs) with
 * `replicas` owners per database (0: 2).  On failure, `why` (when not
 * NULL) gets a line saying what is wrong, at most why_size bytes.  The
 * caller owns *out until crdtdb_cluster_close().
 * Errors: EINVAL (a malformed line, self_url absent, a duplicate URL),
 * ELIMIT (a bound above), EIO (the file cannot be read), ENOMEM.
 */
CRDTDB_API CRDTDB_NODISCARD int crdtdb_cluster_open(const char *path, const char *self_url,
                                                    unsigned replicas, crdtdb_cluster **out,
                                                    char *why, size_t why_size);
CRDTDB_API CRDTDB_NODISCARD int crdtdb_cluster_open_text(const char *text, size_t len,
                                                         const char *self_url, unsigned replicas,
                                                         crdtdb_cluster **out, char *why,
                                                         size_t why_size);

/* Frees the handle.  Accepts NULL.  A server using it as its peer_filter
 * must be closed first. */
CRDTDB_API void crdtdb_cluster_close(crdtdb_cluster *cl);

/* The number of servers, and the URL of server i (file order; borrowed
 * until the next reload or close; NULL past the end). */
CRDTDB_API size_t crdtdb_cluster_size(const crdtdb_cluster *cl);
CRDTDB_API const char *crdtdb_cluster_url(const crdtdb_cluster *cl, size_t i);

/*
 * The owners of database db_id, best first: at most n URLs into out_urls
 * (borrowed until the next reload or close).  Returns how many were
 * written (min(n, R, servers)), or EINVAL.
 */
CRDTDB_API int crdtdb_cluster_owners(const crdtdb_cluster *cl, const char *db_id,
                                     const char **out_urls, size_t n);

/* 1 when the server at url owns db_id, else 0. */
CRDTDB_API int crdtdb_cluster_owns(const crdtdb_cluster *cl, const char *url, const char *db_id);

/*
 * A crdtdb_server_options.peer_filter: ctx is the cluster.  Nonzero when
 * peer_url owns db_id, so a database open on this server (owned, or asked
 * for by a client) links to its owners only, never every database to
 * every server.
 */
CRDTDB_API int crdtdb_cluster_peer_filter(void *ctx, const char *peer_url, const char *db_id);

/*
 * A crdtdb_server_options.keep: ctx is the cluster.  Nonzero when this
 * server (self) owns db_id, so a copy kept for a client HAProxy sent to a
 * non-owner is handed to the owners once they hold it, and a database is
 * in the end held by exactly its owners.
 */
CRDTDB_API int crdtdb_cluster_keep(void *ctx, const char *db_id);

/*
 * Calls crdtdb_server_peer() for every server of the file but self not
 * peered yet (each with its line's token), so srv links each database it
 * holds to that database's owners; srv must use crdtdb_cluster_peer_filter
 * with this cluster.  Errors: those of crdtdb_server_peer, ELIMIT.
 */
CRDTDB_API int crdtdb_cluster_peer(crdtdb_cluster *cl, crdtdb_server *srv);

/*
 * Re-reads the cluster file at path (SIGHUP) for srv, which serves env.
 * When it parses, it replaces the servers in place (the filter sees the new
 * owners from then on) and links what moved: servers new to the file are
 * peered as in crdtdb_cluster_peer, every database env holds whose owners
 * changed is relinked (crdtdb_server_relink: a link to each new owner, the
 * links to servers that no longer own it closed), so a server gaining a
 * database pulls it from every server that has it; then servers gone from
 * the file are unpeered (crdtdb_server_unpeer), and those whose token
 * changed are unpeered and peered again with it.  One link per server and
 * database, however many reloads.  No database is dropped here: a
 * server that stops owning one keeps syncing it, and with
 * crdtdb_cluster_keep as the server's keep it hands the copy off (drops
 * it) once every owner linked holds all of it.  self_url may be absent
 * from the new file: a leaving server then hands its databases to their
 * owners.  On a parse error nothing
 * changes and `why` says what is wrong.  Errors: as crdtdb_cluster_open,
 * and those of crdtdb_db_list, crdtdb_server_peer and crdtdb_server_relink.
 */
CRDTDB_API int crdtdb_cluster_reload(crdtdb_cluster *cl, const char *path, crdtdb_env *env,
                                     crdtdb_server *srv, char *why, size_t why_size);
CRDTDB_API int crdtdb_cluster_reload_text(crdtdb_cluster *cl, const char *text, size_t len,
                                          crdtdb_env *env, crdtdb_server *srv, char *why,
                                          size_t why_size);

#ifdef __cplusplus
}
#endif

#endif
