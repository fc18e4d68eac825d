/**
 * Node entry point: what a browser has built in, for Node 20.  A WebSocket
 * factory over `ws` (the token goes in the Authorization header) and a
 * file backend.  `import { nodeSocket, FileBackend } from "crdtdb/node"`.
 */
import { WebSocket } from "ws";
import type { SocketFactory, SocketLike } from "./sync.js";

export { FileBackend } from "./filebackend.js";

/** Sockets over `ws`, with the given headers (Authorization: Bearer ...). */
export function nodeSocket(opts: { maxPayload?: number } = {}): SocketFactory {
  return (url, headers) =>
    new WebSocket(url, { headers, maxPayload: opts.maxPayload ?? 16 << 20 }) as unknown as SocketLike;
}

export * from "./index.js";
