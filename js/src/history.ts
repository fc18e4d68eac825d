/**
 * This replica's history fingerprint (docs/protocol.md, "History
 * fingerprints"): each commit that numbers registers extends a chain, and
 * the points of that chain travel in deltas so a receiver can tell two
 * copies of one identity apart.  A receiver only ever compares points from
 * one sender with that sender's earlier points, so the chain is the
 * sender's own: the JS replica hashes the same facts as the C library
 * (each register's sequence, collection, record id, path, stamp, origin and
 * kind) but with SHA-256 over one buffer per commit (WebCrypto for big
 * commits, JS for small ones), since per-register hashing in JS costs
 * several µs a register.
 *
 * fp = SHA-256(previous fp ‖ u64 first seq ‖ u64 last seq ‖ SHA-256(notes))[0..16)
 * note = u64 seq ‖ u16 coll ‖ u8 kind ‖ u64 hlc ‖ origin[32] ‖ str id ‖ u16 keys (0xffff: a base) ‖ str key...
 * str  = u16 UTF-8 bytes ‖ the bytes
 */
import { sha256 } from "@noble/hashes/sha2.js";
import type { Hlc, Path, ReplicaId } from "./types.js";

export const FP_BYTES = 16;

const te = new TextEncoder();
const subtle = (globalThis.crypto as Crypto | undefined)?.subtle;

/** Below this, hashing in JS beats an async WebCrypto job (~50 µs each). */
const SYNC_BELOW = 1 << 16;

async function digest(b: Uint8Array): Promise<Uint8Array> {
  if (subtle) {
    try {
      return new Uint8Array(await subtle.digest("SHA-256", b as Uint8Array<ArrayBuffer>));
    } catch { /* not allowed here (an insecure context): hash in JS */ }
  }
  return sha256(b);
}

export class History {
  private buf = new Uint8Array(4096);
  private dv = new DataView(this.buf.buffer);
  private n = 0;

  private room(k: number): void {
    if (this.n + k <= this.buf.length) return;
    const b = new Uint8Array(Math.max(this.buf.length * 2, this.n + k));
    b.set(this.buf.subarray(0, this.n));
    this.buf = b;
    this.dv = new DataView(b.buffer);
  }

  /** Notes one register numbered in this commit.  path null: a base register. */
  note(seq: number, coll: number, kind: number, hlc: Hlc, origin: ReplicaId, id: string, path: Path | null): void {
    let need = 8 + 2 + 1 + 8 + 32 + 2 + id.length * 3 + 2;
    if (path) for (const k of path) need += 2 + k.length * 3;
    this.room(need);
    const dv = this.dv, buf = this.buf;
    let o = this.n;
    dv.setUint32(o, Math.floor(seq / 2 ** 32)); dv.setUint32(o + 4, seq >>> 0); o += 8;
    dv.setUint16(o, coll); o += 2;
    buf[o++] = kind;
    dv.setBigUint64(o, hlc); o += 8;
    buf.set(origin, o); o += 32;
    o = this.str(id, o);
    dv.setUint16(o, path ? path.length : 0xffff); o += 2;
    if (path) for (const k of path) o = this.str(k, o);
    this.n = o;
  }

  /** u16 length, then the UTF-8 bytes; ASCII without an encoder call. */
  private str(s: string, o: number): number {
    const buf = this.buf;
    let i = 0;
    for (; i < s.length; i++) {
      const c = s.charCodeAt(i);
      if (c > 0x7f) break;
      buf[o + 2 + i] = c;
    }
    let n = i;
    if (i < s.length) n = i + te.encodeInto(s.slice(i), buf.subarray(o + 2 + i)).written;
    this.dv.setUint16(o, n);
    return o + 2 + n;
  }

  /** Ends the commit: the new fingerprint after prev for sequences (seq0, seq]. */
  async commit(prev: Uint8Array, seq0: number, seq: number): Promise<Uint8Array> {
    const body = this.buf.subarray(0, this.n);
    const notes = body.length < SYNC_BELOW ? sha256(body) : await digest(body);
    this.n = 0;
    const head = new Uint8Array(FP_BYTES + 16 + 32);
    const dv = new DataView(head.buffer);
    head.set(prev.subarray(0, FP_BYTES));
    dv.setUint32(16, Math.floor(seq0 / 2 ** 32)); dv.setUint32(20, seq0 >>> 0);
    dv.setUint32(24, Math.floor(seq / 2 ** 32)); dv.setUint32(28, seq >>> 0);
    head.set(notes, 32);
    return sha256(head).slice(0, FP_BYTES);
  }
}
