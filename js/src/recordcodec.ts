/**
 * Records and metadata as bytes for backends: msgpack with stamps as
 * bigint.  Encoding copies every byte it needs, so what a backend keeps
 * never aliases a delta's buffer (a structured clone of a view would keep
 * the whole buffer).
 */
import { Packr } from "msgpackr";
import type { StoredRecord } from "./types.js";

const packr = new Packr({ useRecords: false, mapsAsObjects: true, int64AsType: "bigint", moreTypes: false });

export function encodeStored(v: unknown): Uint8Array {
  return packr.pack(v).slice();
}

export function decodeStored<T>(b: Uint8Array): T {
  return packr.unpack(b) as T;
}

const u8 = (b: Uint8Array): Uint8Array => new Uint8Array(b.buffer, b.byteOffset, b.byteLength);

/** Restores the types msgpack flattens: stamps to bigint, bins to plain Uint8Array. */
export function fixRecord(r: StoredRecord): StoredRecord {
  if (r.base) { r.base.hlc = BigInt(r.base.hlc); r.base.origin = u8(r.base.origin); r.base.seq = Number(r.base.seq); }
  for (const l of r.leaves) {
    l.hlc = BigInt(l.hlc);
    l.origin = u8(l.origin);
    l.seq = Number(l.seq);
    if (l.value) l.value = u8(l.value);
  }
  return r;
}
