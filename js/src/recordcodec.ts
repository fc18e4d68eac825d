/**
 * Records and metadata as bytes for backends: msgpack with stamps as
 * bigint.  Encoding copies every byte it needs, so what a backend keeps
 * never aliases a delta's buffer (a structured clone of a view would keep
 * the whole buffer).
 */
import { Packr } from "msgpackr";
import type { BaseReg, Hlc, Leaf, Path, ReplicaId, Source, StoredRecord } from "./types.js";

const packr = new Packr({ useRecords: false, mapsAsObjects: true, int64AsType: "bigint", moreTypes: false });

export function encodeStored(v: unknown): Uint8Array {
  return packr.pack(v).slice();
}

export function decodeStored<T>(b: Uint8Array): T {
  return packr.unpack(b) as T;
}

/** Where the one msgpack value b starts with ends, or -1 if b does not
 *  hold one whole (what follows it is not read). */
export function storedEnd(b: Uint8Array): number {
  let end = -1;
  try {
    packr.unpackMultiple(b, (_v: unknown, _start?: number, e?: number) => { end = e ?? -1; return false; });
  } catch {
    return -1;
  }
  return end;
}

const u8 = (b: Uint8Array): Uint8Array => new Uint8Array(b.buffer, b.byteOffset, b.byteLength);

/** A leaf as journals written before pages kept it (filebackend.ts): its
 *  value as bytes of its own. */
interface PackedLeaf { path: Path; hlc: Hlc; origin: ReplicaId; value: Uint8Array | null; seq: number; src: Source }
export interface PackedRecord { base: BaseReg | null; leaves: PackedLeaf[] }

/** A record from its decoded msgpack shape, restoring the types msgpack
 *  flattens: stamps to bigint, bins to plain Uint8Array. */
export function fixRecord(r: PackedRecord): StoredRecord {
  const b = r.base;
  if (b) { b.hlc = BigInt(b.hlc); b.origin = u8(b.origin); b.seq = Number(b.seq); }
  const leaves: Leaf[] = r.leaves.map((l) => {
    const v = l.value ? u8(l.value) : null;
    return { path: l.path, hlc: BigInt(l.hlc), origin: u8(l.origin), vbuf: v, voff: 0, vlen: v ? v.length : 0, seq: Number(l.seq), src: l.src };
  });
  return { base: b, leaves };
}
