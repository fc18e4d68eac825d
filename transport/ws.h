/*
 * The WebSocket binding's internals, shared by ws_link.c (one connection's
 * session over libwebsockets), ws_server.c and ws_client.c.  Not installed.
 * These files, jwt.c and members.c make libcrdtdb_ws (crdtdb_ws.h);
 * session.c, in this folder too, is libcrdtdb's sans-IO session and may
 * include neither this header nor crdtdb_ws.h.
 */
#ifndef CRDTDB_TRANSPORT_WS_H
#define CRDTDB_TRANSPORT_WS_H
#include <libwebsockets.h>
#include <stdint.h>

#include "crdtdb_ws.h"
#include "transport/sendq.h"

#define WS_CHUNK 65536u             /* bytes per WebSocket message, at most */
#define WS_PROTOCOL "crdtdb-sync"   /* the subprotocol spoken on the wire */
#define WS_PEER_PROTOCOL "crdtdb-peer-link" /* local binding of a server's
                                               outgoing peer links */
#define WS_PREFIX "/v1/db/"
#define WS_POLL_MS 50 /* how often a server looks for other handles' commits */
#define WS_LINGER_QUIET_MS 100 /* after an error, the close waits until the
                                  peer has sent nothing for this long */
#define WS_LINGER_SECS 5       /* ... but no longer than this */
/* Header space of every context, server and client: a token of
 * CRDTDB_JWT_MAX bytes both in Authorization and in ?access_token=, a
 * url-encoded id and the usual headers (lws stores unknown ones too).  A
 * request over it is dropped by libwebsockets unanswered, so a token up to
 * about twice the limit still gets its 431. */
#define WS_HEADER_SPACE (2u * CRDTDB_JWT_MAX + 8192u)

/* One connection's session and how to close it. */
typedef struct crdtdb__wslink {
    struct lws *wsi;
    crdtdb_session *s;
    int status; /* the close status to send once the session ends */
    int pump_err;
    int hold_pump; /* set: output() does not pump (no memory to spare) */
    int pump_due;  /* set: the store may have something for the peer (a
                      commit, a timer, input, an export under way), so
                      output() pumps once drained; presence frames wake the
                      connection without it, so they cost no store read */
    int scheduled; /* set: its owner steps its deltas (crdtdb__ws_step);
                      else each WRITEABLE steps one */
    /* Where the peer is in its current session frame (4-byte length, then
     * the body), counted from the bytes fed: what the session holds. */
    uint8_t hdr[4];
    unsigned hdr_n;      /* length bytes seen, 0..4 */
    size_t body_len;     /* announced body length (hdr_n == 4) */
    size_t body_got;     /* body bytes seen */
    uint64_t frame_ms;   /* when the unfinished frame began; 0: none */
    uint64_t sent;       /* output bytes sent */
    uint64_t tx_ms;      /* when output was last sent; 0: never */
    uint64_t rx_ms;      /* when the peer's last bytes came; 0: never */
    int lingering;       /* ended with an error and flushed: the close
                            waits for the peer to stop sending */
    int cut;             /* a message to the peer was cut short on the
                            wire (crdtdb__ws_flush_batch): nothing more
                            goes, the connection is being closed */
} crdtdb__wslink;

/* Bytes of the unfinished frame the session holds (fed, not handled). */
size_t crdtdb__ws_held_in(const crdtdb__wslink *l);
/* Bytes of output the session holds, unsent. */
size_t crdtdb__ws_held_out(crdtdb__wslink *l);
/* Memory the session's buffers hold (capacities; at least the unfinished
 * frame's bytes), for the server's budget. */
size_t crdtdb__ws_held_mem(const crdtdb__wslink *l);

char *crdtdb__ws_strdup(const char *s);
/* Copies in to out (cap > 0 bytes, always NUL-terminated, cut short if
 * needed) with every byte a terminal could act on written as \xNN: C0
 * and C1 controls, DEL, and bytes that are not UTF-8.  For log lines,
 * which carry ids, users and messages a peer chose. */
void crdtdb__ws_log_escape(char *out, size_t cap, const char *in);
/* in with every ' and \ written \' and \\ (cap > 0 bytes, cut short if
 * needed): an id or user between quotes in a log line, so the line says
 * where it ends (a JSON log takes its "db" from there).  Returns out. */
const char *crdtdb__ws_quote(char *out, size_t cap, const char *in);
/* crdtdb__ws_quote into a buffer of the enclosing expression's block. */
#define WS_QID(s) crdtdb__ws_quote((char[2 * 255 + 2]){0}, 2 * 255 + 2, (s))
uint64_t crdtdb__ws_now_ms(void);
/* A token bucket: per_s tokens a second, at most `burst` held, full at the
 * first take.  Zeroed, it starts (or starts again) full. */
typedef struct crdtdb__bucket {
    uint64_t milli; /* tokens held, in thousandths */
    uint64_t ms;    /* the last take's crdtdb__ws_now_ms; 0: none yet */
} crdtdb__bucket;
/* Takes one token at `now`: 1 if there was one, else 0 (nothing taken). */
int crdtdb__bucket_take(crdtdb__bucket *b, uint64_t now, unsigned per_s, unsigned burst);
/* The WebSocket close status for a session error (remote: the peer's). */
int crdtdb__ws_close_status(int code, int remote);
/* One pass of the event loop, waking after timeout_ms at the latest. */
int crdtdb__ws_service(struct lws_context *ctx, lws_sorted_usec_list_t *sul, int timeout_ms);
/* Fills the context options shared by servers and clients: no uid/gid
 * change, WS_HEADER_SPACE for request headers, and the libuv loop to run
 * on, if any (foreign[0] must outlive the context creation call). */
void crdtdb__ws_ctx_info(struct lws_context_creation_info *info, void *uv_loop, void **foreign);
/* Creates the context (info from crdtdb__ws_ctx_info).  On a libuv loop,
 * *tail receives what finishes its destruction later; else NULL. */
typedef struct crdtdb__wstail crdtdb__wstail;
struct lws_context *crdtdb__ws_ctx_open(struct lws_context_creation_info *info, void *uv_loop,
                                        crdtdb__wstail **tail);
/* Destroys a context: at once on our own loop; on a libuv loop, closes
 * every connection now (callbacks run during the call) and lets the loop
 * finish the rest on its next turns, touching nothing of ours. */
void crdtdb__ws_ctx_close(struct lws_context *ctx, crdtdb__wstail *tail);
/* WRITEABLE: sends up to WS_CHUNK bytes of output (pumping when empty);
 * -1 once the session is closed and flushed, to close the connection. */
int crdtdb__ws_writable(crdtdb__wslink *l, unsigned char *wbuf);
/* Asks for WRITEABLE with a pump due: what wakes a connection for its
 * store (commits, timers, budget room) goes through here. */
void crdtdb__ws_wake(crdtdb__wslink *l);
/* Writes the session's output now, up to WS_CHUNK bytes as one binary
 * message, without waiting for WRITEABLE (for output queued outside the
 * connection's callbacks: presence fanned out, so no poll turn and no
 * pollfd change per receiver), if lws holds no partial send and the
 * session is open.  wire (the caller's scratch of LWS_PRE + cap bytes)
 * receives the copy lws frames in place; more than cap bytes wait.  1 if
 * nothing is left to write; 0 if something is: the caller wakes the link
 * (a short send's rest stays with lws, which writes it before anything). */
int crdtdb__ws_flush_now(crdtdb__wslink *l, unsigned char *wire, size_t cap);
/* Scratch for crdtdb__ws_flush_batch, owned by its caller: zero it before
 * the first use, free it with crdtdb__ws_batch_free.  About 100 bytes per
 * link of the largest batch; no output is copied. */
typedef struct crdtdb__wsbatch {
    crdtdb__wslink **links; /* the receivers: the caller fills links[0..n) */
    int *done;            /* each one's result (crdtdb__ws_flush_batch) */
    crdtdb__send *sends;
    size_t *pay;          /* each send's output bytes */
    uint8_t (*hdr)[10];   /* each send's WebSocket header */
    size_t cap;           /* entries of each */
} crdtdb__wsbatch;
/* Room for n receivers in b: 0, or -1 when out of memory (b as it was). */
int crdtdb__ws_batch_room(crdtdb__wsbatch *b, size_t n);
void crdtdb__ws_batch_free(crdtdb__wsbatch *b);
/* crdtdb__ws_flush_now for b->links[0..n) at once (crdtdb__ws_batch_room
 * made room for n): each link's output, up to
 * WS_CHUNK bytes, goes as one binary message framed here (a server's,
 * unmasked, with no extension: what lws would write) straight to its
 * socket, all n through q (one system call with io_uring).  Sets b->done[i]:
 * 1 nothing is left for link i; 0 something is, and the caller wakes it
 * (a short send's rest was handed to lws, which writes it before anything
 * else; a link whose message was cut short on the wire is closed); -1 the
 * link cannot go this way (TLS, lws holds a partial send, its session
 * closed, out of memory): the caller uses crdtdb__ws_flush_now. */
void crdtdb__ws_flush_batch(crdtdb__wsbatch *b, size_t n, crdtdb__sendq *q);
/* RECEIVE: feeds the bytes, then asks to write replies (or the close).  A
 * delta that then waits (YIELD) pauses reading until it is applied. */
int crdtdb__ws_receive(crdtdb__wslink *l, const void *in, size_t len);
/* Applies the delta waiting at the head of the input (crdtdb_session_step),
 * resumes reading once none waits, asks to write the replies; 1 if another
 * delta waits. */
int crdtdb__ws_step(crdtdb__wslink *l);
/* What crdtdb__ws_step does after the step, for a delta applied in a
 * batch instead (crdtdb_session_batch_done); 1 if another delta waits. */
int crdtdb__ws_stepped(crdtdb__wslink *l);

/* ws_client.c: clients also run inside a server's context, as its peer
 * links (crdtdb_server_peer).  A hosted client has no context of its own:
 * it connects through `ctx` (whose protocols include WS_PEER_PROTOCOL bound
 * to crdtdb__ws_client_cb) and is serviced by whoever runs that context.
 * `log` (may be NULL) receives one line per connection event. */
/* The replica id of the server a hosted client is connected to
 * (CRDTDB_REPLICA_ID_BYTES, borrowed), or NULL when it is not. */
const uint8_t *crdtdb__client_peer(const crdtdb_client *c);
int crdtdb__client_open_hosted(crdtdb_db *db, const crdtdb_client_options *opts,
                               struct lws_context *ctx, unsigned char *wbuf,
                               void (*log)(void *ctx, const char *line), void *log_ctx,
                               crdtdb_client **out);
/* Makes hosted client c a link of a server's presence hub (borrowed until
 * c is closed): the presence and messages its session receives go to the
 * hub, which relays them and sends the others' on c's session. */
struct crdtdb__hub;
void crdtdb__client_set_hub(crdtdb_client *c, struct crdtdb__hub *hub);
/* Stops a hosted client's timers and reconnects (its context is about to
 * go); close it afterwards. */
void crdtdb__client_stop_hosted(crdtdb_client *c);
/* NULL when the server at the other end holds all c's database holds: c
 * is synced (crdtdb_client_synced) and its session was granted two-way —
 * a receive-only session is synced once it holds the server's data, and
 * the server takes none of ours.  Else why not, in words, valid until the
 * next call on c (for the log of a handoff that waits long). */
const char *crdtdb__client_unheld(const crdtdb_client *c);
/* A hosted client whose database is dropped here: it sends LEAVE (the
 * server stops counting on this copy, crdtdb_session_leave), waits for the
 * server's answer (which closes), and connects no more.  1 when LEAVE was
 * queued (it was connected). */
int crdtdb__client_leave_hosted(crdtdb_client *c);
/* 1 when c has no connection, nor an attempt under way. */
int crdtdb__client_gone(const crdtdb_client *c);
/* 1 when c is gone after the server answered its LEAVE: it stored it
 * (crdtdb_session_left). */
int crdtdb__client_left(const crdtdb_client *c);
/* Closes a hosted client; `ctx_gone`: its context was destroyed already. */
void crdtdb__client_close_hosted(crdtdb_client *c, int ctx_gone);
int crdtdb__ws_client_cb(struct lws *wsi, enum lws_callback_reasons reason, void *user,
                         void *in, size_t len);

#endif
