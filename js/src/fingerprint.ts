/**
 * The history fingerprint (docs/protocol.md, "History fingerprints"),
 * byte for byte as storage/chain.c computes it, so a JS replica's points
 * agree with a C replica's for the same history and clone detection works
 * across implementations.
 *
 * Each commit that numbers registers extends the chain:
 *
 *   digest = BLAKE2b-256( note(r) ‖ ... )  over every register numbered
 *   fp'    = BLAKE2b-128( fp ‖ u64 seq0 ‖ u64 seq ‖ digest )
 *
 * where seq0 is the database's sequence when the commit began (the last one
 * already used) and seq the last one it numbered: the commit numbered
 * (seq0, seq].  The first fp is 16 zero bytes.  All integers big-endian.
 * One register's note, in the order the commit numbered them:
 *
 *   u64 seq ‖ u16 coll ‖ u8 id length ‖ u64 hlc ‖ u8 kind ‖ u32 path length
 *   ‖ id bytes ‖ path bytes ‖ origin (32 bytes)
 *
 *   coll: the collection's index in the database's declared collections
 *   kind: for a record's base register, 1 add / 2 remove, with an empty
 *         path; for a leaf, 0 a value / 1 a map (an empty map), with the
 *         leaf's path in crdt/path.c's encoding (encodePath below)
 *
 * The value itself is not hashed (its stamp and origin stand for it).
 */
import { blake2b } from "@noble/hashes/blake2.js";
import type { Hlc, Path, ReplicaId } from "./types.js";

export const FP_BYTES = 16;
/** chain.c kinds of a note. */
export const NOTE_VALUE = 0;
export const NOTE_MAP = 1;
export const NOTE_ADD = 1;
export const NOTE_REMOVE = 2;

const te = new TextEncoder();

/**
 * crdt/path.c's key-path encoding: each key's UTF-8 bytes with every 0x00
 * escaped as 00 ff, then the terminator 00 01.  Its length is what
 * max_path_bytes limits, and its bytes are what the chain hashes.
 */
export function encodePath(path: Path): Uint8Array {
  const keys = path.map((k) => te.encode(k));
  let n = 0;
  for (const k of keys) {
    n += k.length + 2;
    for (let i = 0; i < k.length; i++) if (k[i] === 0) n++;
  }
  const out = new Uint8Array(n);
  let o = 0;
  for (const k of keys) {
    for (let i = 0; i < k.length; i++) {
      out[o++] = k[i]!;
      if (k[i] === 0) out[o++] = 0xff;
    }
    out[o++] = 0;
    out[o++] = 1;
  }
  return out;
}

function putU64(b: Uint8Array, at: number, v: bigint | number): void {
  const x = BigInt(v);
  if (x < 0n || x >= 1n << 64n) throw new RangeError("not a uint64");
  const hi = Number(x >> 32n);
  const lo = Number(x & 0xffffffffn);
  putU32(b, at, hi);
  putU32(b, at + 4, lo);
}

function putU32(b: Uint8Array, at: number, v: number): void {
  b[at] = v >>> 24;
  b[at + 1] = (v >>> 16) & 0xff;
  b[at + 2] = (v >>> 8) & 0xff;
  b[at + 3] = v & 0xff;
}

type Hasher = ReturnType<typeof blake2b.create>;

const CHUNK = 64 * 1024;

/** One database's chain: note what a commit numbers, then commit.  Notes
 *  are gathered in a buffer and hashed in 64 KiB pieces (BLAKE2b in JS
 *  costs per call as well as per byte). */
export class Chain {
  private prev: Uint8Array;
  private h: Hasher;
  private buf = new Uint8Array(CHUNK + 1024);
  private n = 0;
  // the registers of one record and one write share their id and stamp
  private lastId = "";
  private lastIdBytes = new Uint8Array(0);
  private lastHlc: Hlc = -1n;
  private lastHi = 0;
  private lastLo = 0;

  /** prev: the last fingerprint (16 bytes; 16 zero bytes before any commit). */
  constructor(prev?: Uint8Array) {
    if (prev && prev.length !== FP_BYTES) throw new RangeError("a fingerprint is 16 bytes");
    this.prev = prev ? new Uint8Array(prev) : new Uint8Array(FP_BYTES);
    this.h = blake2b.create({ dkLen: 32 });
  }

  /** The last fingerprint committed (a copy). */
  get fp(): Uint8Array {
    return new Uint8Array(this.prev);
  }

  /**
   * Notes one register numbered seq in this commit (crdtdb__chain_note).
   * path: the encoded path (encodePath) of a leaf, empty for a base;
   * kind: NOTE_VALUE / NOTE_MAP for a leaf, NOTE_ADD / NOTE_REMOVE for a base.
   */
  note(seq: number, coll: number, id: string, path: Uint8Array, hlc: Hlc, origin: ReplicaId, kind: number): void {
    if (id !== this.lastId) {
      const b = te.encode(id);
      if (b.length < 1 || b.length > 255) throw new RangeError("a record id is 1..255 bytes");
      this.lastId = id;
      this.lastIdBytes = b;
    }
    if (hlc !== this.lastHlc) {
      if (hlc < 0n || hlc >= 1n << 64n) throw new RangeError("not a uint64");
      this.lastHlc = hlc;
      this.lastHi = Number(hlc >> 32n);
      this.lastLo = Number(hlc & 0xffffffffn);
    }
    if (origin.length !== 32) throw new RangeError("a replica id is 32 bytes");
    if (!Number.isSafeInteger(seq) || seq < 0) throw new RangeError("not a sequence");
    const idb = this.lastIdBytes;
    const need = 24 + idb.length + path.length + 32;
    if (this.n + need > this.buf.length) this.flush(need);
    const b = this.buf;
    let o = this.n;
    putU32(b, o, Math.floor(seq / 0x100000000));
    putU32(b, o + 4, seq >>> 0);
    b[o + 8] = (coll >>> 8) & 0xff;
    b[o + 9] = coll & 0xff;
    b[o + 10] = idb.length;
    putU32(b, o + 11, this.lastHi);
    putU32(b, o + 15, this.lastLo);
    b[o + 19] = kind & 0xff;
    putU32(b, o + 20, path.length);
    o += 24;
    b.set(idb, o);
    o += idb.length;
    b.set(path, o);
    o += path.length;
    b.set(origin, o);
    this.n = o + 32;
  }

  /** Hashes what is buffered, making room for need more bytes. */
  private flush(need: number): void {
    if (this.n) this.h.update(this.buf.subarray(0, this.n));
    this.n = 0;
    if (need > this.buf.length) this.buf = new Uint8Array(need + CHUNK);
  }

  /**
   * Closes the commit that numbered (seq0, seq] (crdtdb__chain_commit):
   * returns the new fingerprint (16 bytes), which becomes prev, and starts
   * the next commit's hash.  A commit that numbered nothing (seq0 === seq)
   * does not extend the chain in C; don't call commit for it.
   */
  commit(seq0: number, seq: number): Uint8Array {
    this.flush(0);
    const digest = this.h.digest();
    const range = new Uint8Array(16);
    putU64(range, 0, seq0);
    putU64(range, 8, seq);
    const next = blake2b.create({ dkLen: FP_BYTES }).update(this.prev).update(range).update(digest).digest();
    this.prev = next;
    this.h = blake2b.create({ dkLen: 32 });
    return new Uint8Array(next);
  }
}
