/**
 * The stored record encoding as version 1 wrote it (storedrecord.ts before
 * version 3), kept for the tests only: stores written then must still open.
 */
import { ByteWriter } from "../src/bytewriter.js";
import { readPage } from "../src/storedrecord.js";
import { decodeRecord } from "../src/storedrecord.js";
import type { StoredRecord } from "../src/types.js";
import { valueBytes } from "../src/value.js";

const same = (a: Uint8Array, b: Uint8Array): boolean => { for (let i = 0; i < 32; i++) if (a[i] !== b[i]) return false; return true; };

function encodeInto(w: ByteWriter, r: StoredRecord): void {
  const origins: Uint8Array[] = [], srcs: string[] = [];
  const oIdx = (o: Uint8Array): number => {
    for (let i = 0; i < origins.length; i++) if (origins[i] === o || same(origins[i]!, o)) return i;
    origins.push(o);
    return origins.length - 1;
  };
  const sIdx = (s: string): number => { let i = srcs.indexOf(s); if (i < 0) { i = srcs.length; srcs.push(s); } return i; };
  if (r.base) { oIdx(r.base.origin); sIdx(r.base.src); }
  for (const l of r.leaves) { oIdx(l.origin); sIdx(l.src); }
  w.room(16);
  w.buf[w.pos++] = 1;
  w.dv.setUint16(w.pos, srcs.length, true); w.pos += 2;
  for (const s of srcs) w.u16str(s, true);
  w.room(2 + 32 * origins.length);
  w.dv.setUint16(w.pos, origins.length, true); w.pos += 2;
  for (const o of origins) { w.buf.set(o, w.pos); w.pos += 32; }
  w.room(1 + 24);
  if (r.base) {
    const b = r.base;
    w.buf[w.pos++] = b.kind;
    w.dv.setBigUint64(w.pos, b.hlc, true); w.dv.setUint16(w.pos + 8, oIdx(b.origin), true); w.dv.setUint16(w.pos + 10, sIdx(b.src), true);
    w.dv.setFloat64(w.pos + 12, b.seq, true); w.pos += 20;
  } else w.buf[w.pos++] = 0;
  w.room(4);
  w.dv.setUint32(w.pos, r.leaves.length, true); w.pos += 4;
  for (const l of r.leaves) {
    w.room(1);
    w.buf[w.pos++] = l.path.length;
    for (const p of l.path) w.u16str(p, true);
    const value = valueBytes(l), vn = value ? value.length : 0;
    w.room(24 + vn);
    w.dv.setBigUint64(w.pos, l.hlc, true); w.dv.setUint16(w.pos + 8, oIdx(l.origin), true); w.dv.setUint16(w.pos + 10, sIdx(l.src), true);
    w.dv.setFloat64(w.pos + 12, l.seq, true); w.pos += 20;
    if (value) { w.dv.setUint32(w.pos, vn, true); w.buf.set(value, w.pos + 4); w.pos += 4 + vn; }
    else { w.dv.setUint32(w.pos, 0xffffffff, true); w.pos += 4; }
  }
}

/** A record's version 1 bytes. */
export function encodeRecordV1(r: StoredRecord): Uint8Array {
  const w = new ByteWriter(64);
  encodeInto(w, r);
  return w.buf.slice(0, w.pos);
}

/** A page (version 2, unchanged) of version 1 records. */
export function encodePageV1(keys: readonly string[], recs: readonly StoredRecord[]): Uint8Array {
  const w = new ByteWriter(64);
  w.room(5);
  w.buf[0] = 2;
  w.dv.setUint32(1, keys.length, true);
  w.pos = 5;
  for (let i = 0; i < keys.length; i++) {
    w.u16str(keys[i]!, true);
    w.room(4);
    const at = w.pos;
    w.pos += 4;
    encodeInto(w, recs[i]!);
    w.dv.setUint32(at, w.pos - at - 4, true);
  }
  return w.buf.slice(0, w.pos);
}

/** A stored value (a record, a page or a tombstone) rewritten as version 1 wrote it. */
export function toV1(key: IDBValidKey, v: Uint8Array): Uint8Array {
  if (typeof key !== "number") return v.length ? encodeRecordV1(decodeRecord(v)) : v;
  const keys: string[] = [], recs: StoredRecord[] = [];
  readPage(v, (k, b) => { keys.push(k); recs.push(decodeRecord(b)); });
  return encodePageV1(keys, recs);
}
