/**
 * Replica keys: ed25519 key pairs, signatures and verification.
 *
 * WebCrypto's Ed25519 (crypto.subtle, in Node >= 20 and Chromium) is used
 * when the runtime has it, detected once; otherwise @noble/ed25519 (audited,
 * pure JS).  Both give the same bytes: ed25519 signatures are deterministic
 * (RFC 8032), so a delta signed here is byte-identical to one signed by the
 * C library (libsodium) from the same seed.
 *
 * Speed (Node 20, measured by js/test/delta.test.ts's speed test on a
 * shared 2-core machine, ranges over several runs): WebCrypto verifies a
 * 4 MiB body in 7-29 ms and a 100-byte one in 110-240 us; noble takes
 * 17-67 ms and 1.2-2.3 ms (its fallback adds the cofactorless equation, see
 * verify).  Signing: WebCrypto 9-25 ms and 110-190 us, noble 13-105 ms and
 * 0.5-1.4 ms.  WebCrypto is faster for every size, so it is used wherever
 * the runtime has Ed25519.
 *
 * Imported CryptoKeys are cached: per KeyPair object for signing, per public
 * key (bounded) for verifying.
 */

import * as noble from "@noble/ed25519";
import { sha512 } from "@noble/hashes/sha2.js";

// noble hashes with WebCrypto's SHA-512 by default; where there is no
// crypto.subtle at all (an insecure browser context) it hashes in JS
noble.hashes.sha512 = sha512;
if (!subtleOrNull()) noble.hashes.sha512Async = async (m) => sha512(m);

export interface KeyPair {
  /** The replica id: the ed25519 public key, 32 bytes. */
  publicKey: Uint8Array;
  /** The 32-byte seed (RFC 8032 private key).  libsodium's 64-byte secret
   *  key is this seed followed by publicKey. */
  secretSeed: Uint8Array;
}

/** PKCS#8 DER for an Ed25519 private key: this fixed prefix, then the seed. */
const PKCS8_PREFIX = new Uint8Array([
  0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
]);

type Subtle = SubtleCrypto;

function subtleOrNull(): Subtle | null {
  const c = (globalThis as { crypto?: Crypto }).crypto;
  return c && c.subtle ? c.subtle : null;
}

function pkcs8(seed: Uint8Array): Uint8Array<ArrayBuffer> {
  const der = new Uint8Array(PKCS8_PREFIX.length + 32);
  der.set(PKCS8_PREFIX, 0);
  der.set(seed, PKCS8_PREFIX.length);
  return der;
}

/** A copy whose buffer is exactly its bytes (WebCrypto wants a BufferSource
 *  and some runtimes refuse SharedArrayBuffer views). */
function own(b: Uint8Array): Uint8Array<ArrayBuffer> {
  return b.buffer instanceof ArrayBuffer ? (b as Uint8Array<ArrayBuffer>) : new Uint8Array(b);
}

let detected: Promise<Subtle | null> | null = null;

/** WebCrypto's subtle when it signs and verifies Ed25519, else null.  Once. */
function webcrypto(): Promise<Subtle | null> {
  if (!detected) detected = detect();
  return detected;
}

async function detect(): Promise<Subtle | null> {
  if (forceNoble) return null;
  const s = subtleOrNull();
  if (!s) return null;
  try {
    const seed = new Uint8Array(32).fill(1);
    const k = await s.importKey("pkcs8", pkcs8(seed), { name: "Ed25519" }, true, ["sign"]);
    const msg = new Uint8Array([1, 2, 3]);
    const sig = new Uint8Array(await s.sign({ name: "Ed25519" }, k, msg));
    const jwk = await s.exportKey("jwk", k);
    const pub = base64url(jwk.x ?? "");
    const pk = await s.importKey("raw", pub, { name: "Ed25519" }, false, ["verify"]);
    if (sig.length !== 64 || !(await s.verify({ name: "Ed25519" }, pk, sig, msg))) return null;
    return s;
  } catch {
    return null;
  }
}

let forceNoble = false;

/** For tests and measurements: use @noble/ed25519 even where WebCrypto has
 *  Ed25519 (true), or detect again (false). */
export function useNobleOnly(on: boolean): void {
  forceNoble = on;
  detected = null;
  signKeys = new WeakMap();
  verifyKeys.clear();
}

/** Which implementation signs and verifies here. */
export async function backendName(): Promise<"webcrypto" | "noble"> {
  return (await webcrypto()) ? "webcrypto" : "noble";
}

function base64url(s: string): Uint8Array<ArrayBuffer> {
  const b64 = s.replace(/-/g, "+").replace(/_/g, "/");
  const bin = atob(b64 + "===".slice((b64.length + 3) % 4));
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

let signKeys = new WeakMap<KeyPair, CryptoKey>();
const verifyKeys = new Map<string, CryptoKey>();
const VERIFY_CACHE = 256;

function checkLen(b: Uint8Array, n: number, what: string): void {
  if (!(b instanceof Uint8Array) || b.length !== n)
    throw new TypeError(`${what} must be ${n} bytes`);
}

/** The key pair of a 32-byte seed (the same as libsodium's
 *  crypto_sign_seed_keypair). */
export async function keyPairFromSeed(seed: Uint8Array): Promise<KeyPair> {
  checkLen(seed, 32, "an ed25519 seed");
  const secretSeed = new Uint8Array(seed);
  const s = await webcrypto();
  if (s) {
    const k = await s.importKey("pkcs8", pkcs8(secretSeed), { name: "Ed25519" }, true, ["sign"]);
    const jwk = await s.exportKey("jwk", k);
    const publicKey = base64url(jwk.x ?? "");
    checkLen(publicKey, 32, "an exported ed25519 public key");
    const kp = { publicKey, secretSeed };
    signKeys.set(kp, k);
    return kp;
  }
  return { publicKey: await noble.getPublicKeyAsync(secretSeed), secretSeed };
}

/** A new random key pair. */
export async function generateKeyPair(): Promise<KeyPair> {
  const seed = new Uint8Array(32);
  crypto.getRandomValues(seed);
  return keyPairFromSeed(seed);
}

/** A synchronous Ed25519 signer (Node's node:crypto, installed by
 *  crdtdb/node): no async job, and no turn of the event loop, per commit. */
export type SyncSign = (secretSeed: Uint8Array, msg: Uint8Array) => Uint8Array;
let syncSign: SyncSign | null = null;
/** Installs (or, with null, removes) the process's synchronous signer. */
export function setSyncSign(f: SyncSign | null): void { syncSign = f; }

/** The 64-byte detached signature of msg. */
export async function sign(kp: KeyPair, msg: Uint8Array): Promise<Uint8Array> {
  if (syncSign && !forceNoble) {
    checkLen(kp.secretSeed, 32, "an ed25519 seed");
    return syncSign(kp.secretSeed, msg);
  }
  const s = await webcrypto();
  if (s) {
    let k = signKeys.get(kp);
    if (!k) {
      checkLen(kp.secretSeed, 32, "an ed25519 seed");
      k = await s.importKey("pkcs8", pkcs8(kp.secretSeed), { name: "Ed25519" }, false, ["sign"]);
      signKeys.set(kp, k);
    }
    return new Uint8Array(await s.sign({ name: "Ed25519" }, k, own(msg)));
  }
  return noble.signAsync(msg, kp.secretSeed);
}

/** Whether sig is publicKey's signature of msg, by libsodium's rules
 *  (crypto_sign_verify_detached, as the C library checks deltas): S
 *  canonical, neither the key nor R a small-order point, the key's encoding
 *  canonical, and the cofactorless equation [S]B = R + [k]A with R compared
 *  bytewise.  WebCrypto (OpenSSL) and noble accept some signatures under
 *  small-order keys that libsodium refuses, and noble's equation is
 *  cofactored, so the encoding checks are made here and noble's fallback
 *  checks the cofactorless equation itself.  Malformed input is false. */
/** A synchronous Ed25519 verifier with libsodium's equation (Node's
 *  node:crypto, installed by crdtdb/node): no async job per delta. */
export type SyncVerify = (publicKey: Uint8Array, msg: Uint8Array, sig: Uint8Array) => boolean;
let syncVerify: SyncVerify | null = null;
/** Installs (or, with null, removes) the process's synchronous verifier. */
export function setSyncVerify(f: SyncVerify | null): void { syncVerify = f; }

export async function verify(publicKey: Uint8Array, msg: Uint8Array, sig: Uint8Array): Promise<boolean> {
  if (publicKey.length !== 32 || sig.length !== 64) return false;
  if (!sodiumEncodingsOk(publicKey, sig)) return false;
  if (syncVerify && !forceNoble) {
    try { return syncVerify(publicKey, msg, sig); } catch { return false; }
  }
  const s = await webcrypto();
  if (s) {
    const hex = toHex(publicKey);
    let k = verifyKeys.get(hex);
    if (!k) {
      try {
        k = await s.importKey("raw", new Uint8Array(publicKey), { name: "Ed25519" }, false, ["verify"]);
      } catch {
        return false;
      }
      if (verifyKeys.size >= VERIFY_CACHE) verifyKeys.delete(verifyKeys.keys().next().value as string);
      verifyKeys.set(hex, k);
    }
    try {
      return await s.verify({ name: "Ed25519" }, k, own(sig), own(msg));
    } catch {
      return false;
    }
  }
  return nobleVerify(publicKey, msg, sig);
}

/** The group order L, little-endian. */
const L_LE = fromHex("edd3f55c1a631258d69cf7a2def9de1400000000000000000000000000000010");
const L = 2n ** 252n + 27742317777372353535851937790883648493n;

/** libsodium's ge25519_has_small_order blocklist: the encodings (sign bit
 *  ignored) of the 8 small-order points, canonical and not. */
const SMALL_ORDER = [
  "0000000000000000000000000000000000000000000000000000000000000000", // order 4
  "0100000000000000000000000000000000000000000000000000000000000000", // order 1
  "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05", // order 8
  "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a", // order 8
  "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f", // p - 1, order 2
  "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f", // p, order 4
  "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f", // p + 1, order 1
].map(fromHex);

function smallOrder(p: Uint8Array): boolean {
  outer: for (const b of SMALL_ORDER) {
    for (let i = 0; i < 31; i++) if (p[i] !== b[i]) continue outer;
    if ((p[31]! & 0x7f) === b[31]) return true;
  }
  return false;
}

/** libsodium 1.0.18's checks before the equation. */
function sodiumEncodingsOk(pk: Uint8Array, sig: Uint8Array): boolean {
  // S < L (sc25519_is_canonical)
  let lt = false;
  for (let i = 31; i >= 0; i--) {
    const a = sig[32 + i]!;
    const b = L_LE[i]!;
    if (a < b) {
      lt = true;
      break;
    }
    if (a > b) return false;
  }
  if (!lt) return false;
  if (smallOrder(sig.subarray(0, 32)) || smallOrder(pk)) return false;
  // ge25519_is_canonical: the key's y (sign bit cleared) below p
  let high = (pk[31]! & 0x7f) === 0x7f && pk[0]! >= 0xed;
  for (let i = 1; high && i < 31; i++) if (pk[i] !== 0xff) high = false;
  return !high;
}

function leNumber(b: Uint8Array): bigint {
  let v = 0n;
  for (let i = b.length - 1; i >= 0; i--) v = (v << 8n) | BigInt(b[i]!);
  return v;
}

/** The cofactorless equation with noble's point arithmetic: [S]B - [k]A
 *  encodes to exactly R. */
async function nobleVerify(pk: Uint8Array, msg: Uint8Array, sig: Uint8Array): Promise<boolean> {
  try {
    const A = noble.Point.fromBytes(pk, false);
    const R = sig.subarray(0, 32);
    const S = leNumber(sig.subarray(32));
    const input = new Uint8Array(64 + msg.length);
    input.set(R, 0);
    input.set(pk, 32);
    input.set(msg, 64);
    const k = leNumber(await noble.hashes.sha512Async(input)) % L;
    const SB = S > 0n ? noble.Point.BASE.multiply(S) : noble.Point.ZERO; // BASE has precomputed tables
    const check = SB.subtract(A.multiplyUnsafe(k)).toBytes();
    for (let i = 0; i < 32; i++) if (check[i] !== R[i]) return false;
    return true;
  } catch {
    return false;
  }
}

const HEX = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, "0"));

/** Lower-case hex of bytes. */
export function toHex(b: Uint8Array): string {
  let s = "";
  for (let i = 0; i < b.length; i++) s += HEX[b[i]!];
  return s;
}

/** Bytes of a hex string (either case); TypeError if it is not hex. */
export function fromHex(h: string): Uint8Array {
  if (h.length % 2 !== 0 || !/^[0-9a-fA-F]*$/.test(h)) throw new TypeError("not a hex string");
  const out = new Uint8Array(h.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(h.substr(2 * i, 2), 16);
  return out;
}
