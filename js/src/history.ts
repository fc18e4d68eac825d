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
 * fp    = SHA-256(previous fp ‖ u64 first seq ‖ u64 last seq ‖ SHA-256(notes))[0..16)
 * notes = item...; each item starts with a byte that says which:
 *   0xf1 ‖ u64 hlc ‖ origin[32]      the stamp of the registers that follow
 *   0xf2 ‖ u16 coll ‖ str id         the record of the registers that follow
 *   kind ‖ keys ‖ str key...         a register (kind < 0xf0)
 *   0xf3 ‖ the delta's signature[64] a peer's delta
 * keys  = u16 count (below 0xfffe) | 0xfffe ‖ u32 count | 0xffff (a base)
 * str   = u16 UTF-8 bytes ‖ the bytes, or from 65,535 bytes on
 *         0xffff ‖ u32 UTF-8 bytes ‖ the bytes (a u16 would wrap, and two
 *         commits' notes could then read alike: limits allow such keys)
 * A register's sequence is the next of the commit's range, in the order
 * noted (number() in replica.ts numbers and notes them together), and a
 * commit's first register follows a stamp and a record: the notes say
 * everything once per commit, and a stamp or record only where it changes
 * (a local commit's registers share one stamp, a record's one id), which
 * made the notes ~5x smaller than one stamp, id and sequence a register.
 * Notes until git f5188ba wrote those per register: the chain's points
 * are never recomputed, so a replica's chain goes on across the change.
 */
import { sha256 } from "@noble/hashes/sha2.js";
import { ByteWriter } from "./bytewriter.js";
import type { Hlc, Path, ReplicaId } from "./types.js";

export const FP_BYTES = 16;

const subtle = (globalThis.crypto as Crypto | undefined)?.subtle;

/** Below this, hashing in JS beats an async WebCrypto job (~50 µs each). */
const SYNC_BELOW = 1 << 16;

const STAMP = 0xf1, RECORD = 0xf2, DELTA = 0xf3;

/** str (above): u16str, moved 4 bytes on for a u32 length when it is long. */
function str(w: ByteWriter, s: string): void {
  const at = w.pos;
  w.u16str(s, false);
  const n = w.pos - at - 2;
  if (n < 0xffff) return;
  w.room(4);
  w.buf.copyWithin(at + 6, at + 2, at + 2 + n);
  w.dv.setUint16(at, 0xffff);
  w.dv.setUint32(at + 2, n);
  w.pos = at + 6 + n;
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

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
 *  buffer of them all (~20 bytes a register: 2 MB for 100k) and hashing
 *  it in an async job.  The digest is the same. */
export function setSha256Stream(f: (() => Sha256Stream) | null): void { streamFactory = f; }

let oneShot: (b: Uint8Array) => Uint8Array = sha256;
/** Installs (or, with null, removes) the process's native one-shot SHA-256
 *  for a commit's small digests (crdtdb/node: node:crypto's; a receiver
 *  makes two per delta it applies).  The digest is the same. */
export function setSha256(f: ((b: Uint8Array) => Uint8Array) | null): void { oneShot = f ?? sha256; }

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
  /** The stamp and record the commit's notes last said (none at a
   *  commit's start: its notes say them again). */
  private stampHlc = -1n;
  private stampOrigin: ReplicaId | null = null;
  private recColl = -1;
  private recId: string | null = null;

  /** Notes the next register this commit numbers.  path null: a base register. */
  note(coll: number, kind: number, hlc: Hlc, origin: ReplicaId, id: string, path: Path | null): void {
    const w = this.w;
    if (hlc !== this.stampHlc || (origin !== this.stampOrigin && !(this.stampOrigin && sameBytes(origin, this.stampOrigin)))) {
      w.room(41);
      const o = w.pos;
      w.buf[o] = STAMP;
      w.dv.setBigUint64(o + 1, hlc);
      w.buf.set(origin, o + 9);
      w.pos = o + 41;
      this.stampHlc = hlc; this.stampOrigin = origin;
    }
    if (id !== this.recId || coll !== this.recColl) {
      w.room(3);
      w.buf[w.pos] = RECORD;
      w.dv.setUint16(w.pos + 1, coll);
      w.pos += 3;
      str(w, id);
      this.recColl = coll; this.recId = id;
    }
    w.room(7);
    w.buf[w.pos] = kind;
    if (path && path.length >= 0xfffe) {
      w.dv.setUint16(w.pos + 1, 0xfffe);
      w.dv.setUint32(w.pos + 3, path.length);
      w.pos += 7;
    } else {
      w.dv.setUint16(w.pos + 1, path ? path.length : 0xffff);
      w.pos += 3;
    }
    if (path) for (let i = 0; i < path.length; i++) str(w, path[i]!);
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
   *  replica held, which the chain already covers. */
  noteDelta(sig: Uint8Array): void {
    const w = this.w;
    w.room(1 + 64);
    w.buf[w.pos] = DELTA;
    w.buf.set(sig, w.pos + 1);
    w.pos += 65;
  }

  /** Drops the notes of a commit that failed. */
  reset(): void {
    this.w.pos = 0;
    this.stream = null;
    this.forget();
  }

  /** A commit's notes start with no stamp or record said. */
  private forget(): void {
    this.stampHlc = -1n; this.stampOrigin = null;
    this.recColl = -1; this.recId = null;
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
      notes = body.length < SYNC_BELOW ? oneShot(body) : await digest(body);
    }
    this.w.pos = 0;
    this.forget();
    const head = new Uint8Array(FP_BYTES + 16 + 32);
    const dv = new DataView(head.buffer);
    head.set(prev.subarray(0, FP_BYTES));
    dv.setUint32(16, Math.floor(seq0 / 2 ** 32)); dv.setUint32(20, seq0 >>> 0);
    dv.setUint32(24, Math.floor(seq / 2 ** 32)); dv.setUint32(28, seq >>> 0);
    head.set(notes, 32);
    return oneShot(head).slice(0, FP_BYTES);
  }
}
