/* Internal: finding the bearer token of a WebSocket upgrade request. */
#ifndef CRDTDB_TRANSPORT_JWT_H
#define CRDTDB_TRANSPORT_JWT_H
#include <stddef.h>

#include "crdtdb_ws.h"

/* The sync subprotocol.  As the first Sec-WebSocket-Protocol entry it is
 * never taken for a token. */
#define CRDTDB__WS_PROTOCOL "crdtdb-sync"

/*
 * Finds the bearer token of a request, reading nothing outside the two
 * values (neither needs a NUL; a NUL inside is a refused byte) and
 * allocating nothing:
 *
 *   - authorization (alen bytes): an HTTP Authorization header value
 *     "Bearer <token>", scheme case-insensitive, spaces and tabs allowed
 *     around and between; anything after the token refuses.  Another
 *     scheme refuses: there is no fallback to the subprotocols then.
 *   - only when authorization is NULL or alen is 0, protocols (plen
 *     bytes): a Sec-WebSocket-Protocol value, "<token>, crdtdb-sync", as
 *     browsers send it (they cannot set headers).  Its FIRST entry is the
 *     token unless that entry is exactly "crdtdb-sync".  A server taking
 *     the token from there must select another offered entry (crdtdb-sync)
 *     in its reply, never echo the token.
 *
 * A token is 1*(ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/") *"="
 * (RFC 6750 b64token), of any length: crdtdb_jwt_verify bounds it.  On
 * success *tok points into the input and *toklen is its length.
 * Errors: EAUTH (no token), EINVAL (tok or toklen NULL).
 */
int crdtdb__bearer_token(const char *authorization, size_t alen,
                         const char *protocols, size_t plen, const char **tok,
                         size_t *toklen);

#endif
