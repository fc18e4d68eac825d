/**
 * Node entry point: what a browser has built in, for Node 20.  A WebSocket
 * factory over `ws` (the token goes in the Authorization header) and a
 * file backend.  `import { nodeSocket, FileBackend } from "crdtdb/node"`.
 */
import { createPrivateKey, createPublicKey, sign as nodeSign, verify as nodeVerify, type KeyObject } from "node:crypto";
import { WebSocket } from "ws";
import { setSyncSign, setSyncVerify, toHex } from "./keys.js";

/** PKCS#8 DER of an Ed25519 private key: this prefix, then the 32-byte seed (RFC 8410). */
const PKCS8_ED25519 = Buffer.from("302e020100300506032b657004220420", "hex");
import type { SocketFactory, SocketLike } from "./sync.js";

// Ed25519 in Node: node:crypto's one-shot verify is synchronous (OpenSSL,
// as WebCrypto's), without an async job and a promise per delta.
const pubKeys = new Map<string, KeyObject>();
setSyncVerify((pk, msg, sig) => {
  const hex = toHex(pk);
  let k = pubKeys.get(hex);
  if (!k) {
    k = createPublicKey({ key: { kty: "OKP", crv: "Ed25519", x: Buffer.from(pk).toString("base64url") }, format: "jwk" });
    if (pubKeys.size >= 256) pubKeys.delete(pubKeys.keys().next().value as string);
    pubKeys.set(hex, k);
  }
  return nodeVerify(null, msg, k, sig);
});

// Signing too: WebCrypto's sign is a thread-pool job whose answer waits for
// the next turn of the event loop, a fixed delay on every commit's push.
// Keys by seed object: a replica keeps its KeyPair for its life.
const privKeys = new WeakMap<Uint8Array, KeyObject>();
setSyncSign((seed, msg) => {
  let k = privKeys.get(seed);
  if (!k) {
    k = createPrivateKey({ key: Buffer.concat([PKCS8_ED25519, seed]), format: "der", type: "pkcs8" });
    privKeys.set(seed, k);
  }
  const s = nodeSign(null, msg, k);
  return new Uint8Array(s.buffer, s.byteOffset, s.length);
});

export { FileBackend } from "./filebackend.js";

/** HTTP answers to a refused upgrade, as the close codes a browser is
 *  given in-band (docs/protocol.md, "Close codes"). */
const CLOSE_FOR_STATUS: Record<number, number> = { 400: 4400, 401: 4401, 431: 4401, 403: 4403, 404: 4404, 429: 4429, 503: 4503 };

/** Sockets over `ws`, with the given headers (Authorization: Bearer ...).
 *  A refused upgrade closes with the code a browser would get in-band. */
export function nodeSocket(opts: { maxPayload?: number } = {}): SocketFactory {
  return (url, headers) => {
    const ws = new WebSocket(url, { headers, maxPayload: opts.maxPayload ?? 16 << 20 });
    let status = 0;
    ws.on("error", (e: Error) => {
      const m = /Unexpected server response: (\d+)/.exec(e.message);
      if (m) status = Number(m[1]);
    });
    const s = ws as unknown as SocketLike;
    let onclose: SocketLike["onclose"] = null;
    ws.on("close", (code: number, reason: Buffer) => {
      const mapped = code === 1006 && CLOSE_FOR_STATUS[status];
      onclose?.({ code: mapped || code, reason: mapped ? `HTTP ${status}` : reason.toString() });
    });
    Object.defineProperty(s, "onclose", { get: () => onclose, set: (f: SocketLike["onclose"]) => { onclose = f; } });
    return s;
  };
}

export * from "./index.js";
