/**
 * Ed25519 for Node, synchronous: no async job, promise or turn of the event
 * loop per delta (WebCrypto's sign and verify are thread-pool jobs).
 * libsodium through the optional dependency `sodium-native` when it loads:
 * the C library's own verifier, so the rules are the C side's by
 * construction, and 1.5–2× faster than OpenSSL's here; else node:crypto
 * (OpenSSL), whose equation keys.ts brings to libsodium's rules.
 * Installed by `crdtdb/node` for the whole process, with a native
 * incremental SHA-256 for the history chain (history.ts).
 */
import { createRequire } from "node:module";
import { createHash, createPrivateKey, createPublicKey, sign as nodeSign, verify as nodeVerify, type KeyObject } from "node:crypto";
import * as nodeCrypto from "node:crypto";
import { setSha256, setSha256Stream } from "./history.js";
import { setSyncSign, setSyncVerify, toHex } from "./keys.js";

/** The part of sodium-native used here. */
interface Sodium {
  crypto_sign_verify_detached(sig: Uint8Array, msg: Uint8Array, pk: Uint8Array): boolean;
  crypto_sign_detached(sig: Uint8Array, msg: Uint8Array, sk: Uint8Array): void;
  crypto_sign_seed_keypair(pk: Uint8Array, sk: Uint8Array, seed: Uint8Array): void;
}

function loadSodium(): Sodium | null {
  if (process.env.CRDTDB_NO_SODIUM) return null; // to test the fallback
  try {
    return createRequire(import.meta.url)("sodium-native") as Sodium;
  } catch {
    return null; // not installed (optional), or no build for this platform
  }
}

/** PKCS#8 DER of an Ed25519 private key: this prefix, then the 32-byte seed (RFC 8410). */
const PKCS8_ED25519 = Buffer.from("302e020100300506032b657004220420", "hex");

// the history chain's small digests: OpenSSL's one-shot SHA-256 (crypto.hash,
// Node 20.12 and later; else a Hash object), 2-4x noble's on 80-700 bytes
{
  const hash = (nodeCrypto as { hash?: (alg: string, data: Uint8Array, enc: "buffer") => Buffer }).hash;
  setSha256(hash
    ? (b) => { const d = hash("sha256", b, "buffer"); return new Uint8Array(d.buffer, d.byteOffset, d.length); }
    : (b) => { const d = createHash("sha256").update(b).digest(); return new Uint8Array(d.buffer, d.byteOffset, d.length); });
}
// the history chain's big commits: OpenSSL's SHA-256, fed as the notes are written
setSha256Stream(() => {
  const h = createHash("sha256");
  return {
    update: (b) => { h.update(b); },
    digest: () => { const d = h.digest(); return new Uint8Array(d.buffer, d.byteOffset, d.length); },
  };
});

/** Which implementation this process verifies and signs with. */
export const ed25519Backend: "libsodium" | "openssl" = install(loadSodium());

function install(na: Sodium | null): "libsodium" | "openssl" {
  // secret keys by seed object: a replica keeps its KeyPair for its life
  if (na) {
    const secret = new WeakMap<Uint8Array, Uint8Array>();
    setSyncVerify((pk, msg, sig) => na.crypto_sign_verify_detached(sig, msg, pk));
    setSyncSign((seed, msg) => {
      let sk = secret.get(seed);
      if (!sk) {
        sk = new Uint8Array(64);
        na.crypto_sign_seed_keypair(new Uint8Array(32), sk, seed);
        secret.set(seed, sk);
      }
      const sig = new Uint8Array(64);
      na.crypto_sign_detached(sig, msg, sk);
      return sig;
    });
    return "libsodium";
  }
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
  return "openssl";
}
