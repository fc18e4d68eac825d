/**
 * Node entry point: what a browser has built in, for Node 20.  A WebSocket
 * factory over `ws` (the token goes in the Authorization header), the
 * default for every store of a process that imports this module, and a
 * file backend.  `import { CrdtdbDataStore, FileBackend } from "crdtdb/node"`.
 */
import { WebSocket } from "ws";
import { setRuntimeSocket, type SocketFactory, type SocketLike } from "./sync.js";

export { ed25519Backend } from "./nodecrypto.js";
export { FileBackend } from "./filebackend.js";

/** HTTP answers to a refused upgrade, as the close codes a browser is
 *  given in-band (docs/protocol.md, "Close codes"). */
const CLOSE_FOR_STATUS: Record<number, number> = { 400: 4400, 401: 4401, 431: 4401, 403: 4403, 404: 4404, 429: 4429, 503: 4503 };

/** Sockets over `ws`, with the given headers (Authorization: Bearer ...).
 *  A refused upgrade closes with the code a browser would get in-band. */
export function nodeSocket(opts: { maxPayload?: number } = {}): SocketFactory {
  return (url, headers) => {
    const ws = new WebSocket(url, { headers, maxPayload: opts.maxPayload ?? 16 << 20 });
    let status = 0, net = "";
    ws.on("error", (e: Error & { code?: string }) => {
      const m = /Unexpected server response: (\d+)/.exec(e.message);
      if (m) status = Number(m[1]);
      else if (e.code) net = netReason(url, e.code, e.message);
    });
    const s = ws as unknown as SocketLike;
    let onclose: SocketLike["onclose"] = null;
    ws.on("close", (code: number, reason: Buffer) => {
      const mapped = code === 1006 && CLOSE_FOR_STATUS[status];
      onclose?.({ code: mapped || code, reason: mapped ? `HTTP ${status}` : reason.toString() || (code === 1006 ? net : "") });
    });
    Object.defineProperty(s, "onclose", { get: () => onclose, set: (f: SocketLike["onclose"]) => { onclose = f; } });
    return s;
  };
}

/** Why a connection never opened, as the C client says it (cli/sync.c). */
function netReason(url: string, code: string, message: string): string {
  let host = url;
  try { host = new URL(url).host; } catch { /* the URL as given */ }
  switch (code) {
    case "ECONNREFUSED": return `connection refused: ${host} (is crdtdb serve running there?)`;
    case "ENOTFOUND": case "EAI_AGAIN": return `host not found: ${host}`;
    case "EHOSTUNREACH": case "ENETUNREACH": return `host unreachable: ${host}`;
    case "ETIMEDOUT": return `connection timed out: ${host}`;
    default: return `${message} (${host})`;
  }
}

// stores opened without a socket option use it (as nodecrypto.ts installs
// the process's ed25519)
setRuntimeSocket(nodeSocket());

export * from "./index.js";
