/* Shared helpers of the suites that run real WebSocket servers and clients
 * on 127.0.0.1 (ws, auth, peer): driving them until a condition holds, and
 * a hand-made WebSocket client over a raw TCP socket.  Every helper fails
 * the running test (Check) on error. */
#ifndef CRDTDB_WSUTIL_H
#define CRDTDB_WSUTIL_H
#include <stddef.h>
#include <stdint.h>

#include "crdtdb_ws.h"

/* A condition tu_spin waits for. */
typedef int (*tu_cond)(void *arg);

/* What tu_spin runs: the addresses of a suite's own server and client
 * variables (the suite owns them; NULL entries and NULL variables are
 * skipped, so tests may open and close them between calls), servers first,
 * each for slice_ms per round. */
typedef struct tu_net {
    crdtdb_server **servers[4];
    crdtdb_client **clients[8];
    int slice_ms;
} tu_net;

/* Runs net until cond(arg) holds (cond NULL: never) or ms pass; 1 if it
 * held. */
int tu_spin(const tu_net *net, tu_cond cond, void *arg, int ms);

/* A server's log callback (crdtdb_server_options.log) appending each line
 * to the crdtdb_buf at ctx (the suite's; echoed to stderr when
 * CRDTDB_TEST_LOG is set). */
void tu_log_line(void *ctx, const char *line);
/* Occurrences of needle in a log filled by tu_log_line. */
int tu_log_count(const crdtdb_buf *log, const char *needle);
/* A tu_cond (tu_logged): the log holds needle at least once. */
typedef struct tu_line {
    const crdtdb_buf *log;
    const char *needle;
} tu_line;
int tu_logged(void *line);

/* Record (coll, id) of db should read as json: NULL for absent, TU_ANY for
 * any value. */
typedef struct tu_want {
    crdtdb_db *db;
    const char *coll, *id, *json;
} tu_want;
extern const char TU_ANY[];
/* Whether the tu_want at arg holds (a tu_cond). */
int tu_holds(void *arg);
/* Spins net until (coll, id) of db reads as json (as in tu_want); fails
 * the test after 10 s. */
void tu_expect(const tu_net *net, crdtdb_db *db, const char *coll, const char *id,
               const char *json);

/* A hand-made WebSocket client: a non-blocking TCP socket (the user
 * closes fd) and what it received, NUL-terminated (when full, the oldest
 * half is dropped). */
typedef struct tu_raw {
    int fd;
    char in[65536];
    size_t len;
    int eof;
} tu_raw;

/* Connects to 127.0.0.1:port and sends an upgrade request for path, with
 * `Authorization: Bearer token` unless token is NULL; does not wait for
 * the answer (tu_raw_answered). */
void tu_raw_open(tu_raw *r, int port, const char *path, const char *token);
/* The same with a receive buffer of rcvbuf bytes (set before connecting,
 * so the peer's window stays small): a client that reads slowly, or not
 * at all, holds the sender's data in the sender. */
void tu_raw_open_rcvbuf(tu_raw *r, int port, const char *path, const char *token, int rcvbuf);
/* Reads all there is now; sets eof at end of stream or on error. */
void tu_raw_read(tu_raw *r);
/* tu_conds on a tu_raw: the upgrade was answered (or the stream ended);
 * the stream ended. */
int tu_raw_answered(void *arg);
int tu_raw_closed(void *arg);
/* Whether r received s. */
int tu_raw_saw(const tu_raw *r, const char *s);
/* Sends p as one masked binary WebSocket message, spinning net while the
 * socket is full (10 s at most). */
void tu_ws_send(const tu_net *net, tu_raw *r, const uint8_t *p, size_t n);
/* Sends the raw bytes p, spinning net while the socket is full (10 s at
 * most): a request or frame in pieces. */
void tu_raw_send(const tu_net *net, tu_raw *r, const void *p, size_t n);
/* Whether r received a WebSocket close frame with this status. */
int tu_raw_close_saw(const tu_raw *r, unsigned status);
/* The hello a client session on db sends first, as one masked binary
 * WebSocket message, into out (replaced). */
void tu_ws_hello(crdtdb_db *db, crdtdb_buf *out);

/* crdtdb_jwt_mint of sub under k at now for ttl seconds; malloc'd. */
char *tu_jwt_mint(const crdtdb_jwt_key *k, const char *sub, int64_t now, uint64_t ttl);

#endif
