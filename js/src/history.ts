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
 * several µs a register.  A commit applying a peer's delta notes the delta
 * once instead (noteDelta): its signature covers all its registers.
 *
 * fp = SHA-256(previous fp ‖ u64 first seq ‖ u64 last seq ‖ SHA-256(notes))[0..16)
 * note = u64 seq ‖ u16 coll ‖ u8 kind ‖ u64 hlc ‖ origin[32] ‖ str id ‖ u16 keys (0xffff: a base) ‖ str key...
 *      | u64 0 ‖ the delta's signature[64]   (a peer's delta)
 * str  = u16 UTF-8 bytes ‖ the bytes
 */
import { sha256 } from "@noble/hashes/sha2.js";
import { ByteWriter } from "./bytewriter.js";
import type { Hlc, Path, ReplicaId } from "./types.js";

export const FP_BYTES = 16;

const subtle = (globalThis.crypto as Crypto | undefined)?.subtle;

/** Below this, hashing in JS beats an async WebCrypto job (~50 µs each). */
const SYNC_BELOW = 1 << 16;

/** An incremental SHA-256 that hashes what it is given at once (the
 *  caller reuses the buffer after update returns). */
export interface Sha256Stream {
  update(b: Uint8Array): void;
  digest(): Uint8Array;
}
let streamFactory: (() => Sha256Stream) | null = null;
/** Installs (or, with null, removes) the process's native incremental
 *  SHA-256 (crdtdb/node: node:crypto's).  With one, a big commit's notes are
 *  hashed as they are written, 64 KiB at a time, instead of growing one
 *  buffer of them all (~65 bytes a register: 6.5 MB for 100k) and hashing
 *  it in an async job.  The digest is the same. */
export function setSha256Stream(f: (() => Sha256Stream) | null): void { streamFactory = f; }

async function digest(b: Uint8Array): Promise<Uint8Array> {
  if (subtle) {
    try {
      return new Uint8Array(await subtle.digest("SHA-256", b as Uint8Array<ArrayBuffer>));
    } catch { /* not allowed here (an insecure context): hash in JS */ }
  }
  return sha256(b);
}

export class History {
  private readonly w = new ByteWriter(4096);
  /** The commit's notes hashed so far (setSha256Stream), or null. */
  private stream: Sha256Stream | null = null;
  /** The last note's stamp and origin, as written (a record's registers,
   *  and a local commit's, share them). */
  private readonly stamp = new Uint8Array(40);
  private readonly stampView = new DataView(this.stamp.buffer);
  private stampHlc = -1n;
  private stampOrigin: ReplicaId | null = null;

  /** Notes one register numbered in this commit.  path null: a base register. */
  note(seq: number, coll: number, kind: number, hlc: Hlc, origin: ReplicaId, id: string, path: Path | null): void {
    const w = this.w;
    w.room(8 + 2 + 1 + 8 + 32);
    const dv = w.dv, buf = w.buf;
    let o = w.pos;
    dv.setUint32(o, Math.floor(seq / 2 ** 32)); dv.setUint32(o + 4, seq >>> 0); o += 8;
    dv.setUint16(o, coll); o += 2;
    buf[o++] = kind;
    const st = this.stamp;
    if (hlc !== this.stampHlc || origin !== this.stampOrigin) {
      this.stampView.setBigUint64(0, hlc);
      st.set(origin, 8);
      this.stampHlc = hlc; this.stampOrigin = origin;
    }
    for (let i = 0; i < 40; i++) buf[o + i] = st[i]!;
    o += 40;
    w.pos = o;
    w.u16str(id, false);
    w.room(2);
    w.dv.setUint16(w.pos, path ? path.length : 0xffff);
    w.pos += 2;
    if (path) for (let i = 0; i < path.length; i++) w.u16str(path[i]!, false);
    // without a stream the notes stay in the one buffer, kept for the next
    // commit (chunks allocated and joined per commit cost Chromium more)
    if (w.pos >= SYNC_BELOW && streamFactory) this.flush();
  }

  /** Hands the notes written so far to the commit's stream. */
  private flush(): void {
    const st = this.stream ?? (this.stream = streamFactory!());
    st.update(this.w.buf.subarray(0, this.w.pos));
    this.w.pos = 0;
  }

  /** Notes a peer's delta applied in this commit, in place of its
   *  registers: its signature covers all of them (and the sender, range,
   *  database), and what a delta numbers follows from it and what the
   *  replica held, which the chain already covers.  u64 0 (no register has
   *  sequence 0) ‖ the 64-byte signature. */
  noteDelta(sig: Uint8Array): void {
    const w = this.w;
    w.room(8 + 64);
    w.dv.setUint32(w.pos, 0); w.dv.setUint32(w.pos + 4, 0);
    w.buf.set(sig, w.pos + 8);
    w.pos += 72;
  }

  /** Drops the notes of a commit that failed. */
  reset(): void {
    this.w.pos = 0;
    this.stream = null;
  }

  /** Ends the commit: the new fingerprint after prev for sequences (seq0, seq]. */
  async commit(prev: Uint8Array, seq0: number, seq: number): Promise<Uint8Array> {
    let notes: Uint8Array;
    if (this.stream) {
      this.flush();
      notes = this.stream.digest();
      this.stream = null;
    } else {
      const body = this.w.buf.subarray(0, this.w.pos);
      notes = body.length < SYNC_BELOW ? sha256(body) : await digest(body);
    }
    this.w.pos = 0;
    const head = new Uint8Array(FP_BYTES + 16 + 32);
    const dv = new DataView(head.buffer);
    head.set(prev.subarray(0, FP_BYTES));
    dv.setUint32(16, Math.floor(seq0 / 2 ** 32)); dv.setUint32(20, seq0 >>> 0);
    dv.setUint32(24, Math.floor(seq / 2 ** 32)); dv.setUint32(28, seq >>> 0);
    head.set(notes, 32);
    return sha256(head).slice(0, FP_BYTES);
  }
}
