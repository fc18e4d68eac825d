/*
 * Presence and ephemeral messages (docs/protocol.md, "Presence and
 * messages"): the checks of a state or body, and of frames handed to
 * crdtdb_session_send_frame.  The encoders are public (crdtdb.h).
 */
#ifndef CRDTDB_TRANSPORT_PRESENCE_H
#define CRDTDB_TRANSPORT_PRESENCE_H
#include <stddef.h>
#include <stdint.h>

#include "crdtdb.h"

enum { CRDTDB__M_PRESENCE_SET = 12, CRDTDB__M_PRESENCE, CRDTDB__M_MESSAGE_SEND, CRDTDB__M_MESSAGE };

/* Checks a presence state (map = 1: exactly one msgpack map) or message
 * body (map = 0: exactly one msgpack value) of len bytes: at most max
 * bytes, well-formed, no trailing bytes, every map key a str, nested at
 * most CRDTDB_PRESENCE_DEPTH deep.  Returns 0, CRDTDB_ETOOBIG,
 * CRDTDB_EBADVALUE or CRDTDB_ETOODEEP with *why set to a static reason. */
CRDTDB__SHARED int crdtdb__presence_check(const uint8_t *p, size_t len, size_t max, int map,
                                          const char **why);

/* 0 if p[0, len) is one or more whole frames (u32 big-endian length, then
 * a msgpack array) each of type 13 or 15, judged by its header and type
 * only; CRDTDB_EINVAL if not. */
int crdtdb__presence_frames_check(const uint8_t *p, size_t len);

#endif
