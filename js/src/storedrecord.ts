/**
 * One stored record as compact bytes, for IndexedDB: per record a table of
 * its distinct origins (32 bytes once) and sources (the peer's hex once),
 * then its registers, little-endian.  Encoding copies each value's bytes
 * (never a delta's buffer); decoding leaves the values as ranges of the
 * bytes read (types.ts ValueRef), so a record loaded from a page keeps that
 * page's bytes alive while any of its values lives: at most what load()
 * read, about twice the live data after a compaction (idb.ts), and no
 * object a value.
 *
 * Version 3 (written when every sequence is an integer below 2^52, as they
 * all are in practice): a record whose leaves share one stamp, origin and source (a
 * local add's do, and so do a peer's add as received) notes them once, and
 * each leaf's sequence is the difference from the one before it.  A field
 * of a 100k-field addAll takes ~8 bytes instead of version 1's ~36: fewer
 * bytes through IndexedDB's structured clone and put (~25-40 ms per MB of
 * the page's thread in Chromium, js/bench/README.md item 10c).
 *
 * record = u8 version 3 | u8 flags (1: shared stamp) | tables | base |
 *          vint nleaves | [flags & 1: u64 hlc | vint origin | vint source] | leaf3*
 * leaf3  = u8 keys, vstr* | [not shared: u64 hlc | vint origin | vint source] |
 *          vint zigzag(seq - the previous leaf's, the first: the base's or 0) |
 *          vint value bytes + 1 (0: a map leaf), value
 * vstr   = vint UTF-8 bytes, the bytes;  vint = unsigned LEB128 (< 2^53)
 *
 * Version 4: version 3 for a record of more than 65,535 origins (or
 * sources), which a peer can send: its two table counts are u32.  The base,
 * whose origin and source are numbered first (0), keeps u16 numbers.
 *
 * Version 1 (read always: stores written before; written for a record with
 * a sequence version 3 cannot hold exactly):
 * record = u8 version 1 | tables | base | u32 nleaves, leaf*
 * leaf   = u8 keys, str* | reg | u32 value bytes (0xffffffff: a map leaf), value
 *
 * tables = u16 nsrc, str* | u16 norigin, origin[32]*
 * base   = u8 kind (0: none) [reg]
 * reg    = u64 hlc | u16 origin index | u16 source index | f64 seq
 * str    = u16 UTF-8 bytes, the bytes
 */
import { ByteWriter } from "./bytewriter.js";
import { mpCheck, MP_OK, scalarFits } from "./delta.js";
import { CrdtdbError } from "./errors.js";
import { comparePaths, isAncestor } from "./path.js";
import { olderThanBase, olderThanLeaf } from "./record.js";
import type { BaseReg, Leaf, StoredRecord } from "./types.js";

const td = new TextDecoder(), te = new TextEncoder(), tdFatal = new TextDecoder("utf-8", { fatal: true });

const one = new ByteWriter(512);

/** The record's bytes (a fresh array the caller owns). */
export function encodeRecord(r: StoredRecord): Uint8Array {
  one.pos = 0;
  encodeRecordInto(one, r);
  return one.buf.slice(0, one.pos);
}

/** Scratch tables of one record's distinct origins and sources (reused:
 *  a record has one or two of each, and a page encodes thousands). */
const origins: Uint8Array[] = [], srcs: string[] = [];
/** Origins past this many are found by a map (by their bytes), not a scan:
 *  a record from 65,536 origins cost 2^31 comparisons. */
const ORIGINS_SCAN = 16;
const originMap = new Map<string, number>();
const bytesKey = (o: Uint8Array): string => String.fromCharCode.apply(null, o as unknown as number[]);
const oIdx = (o: Uint8Array): number => {
  const n = origins.length;
  if (n <= ORIGINS_SCAN) {
    for (let i = 0; i < n; i++) if (origins[i] === o || same(origins[i]!, o)) return i;
    origins.push(o);
    if (n === ORIGINS_SCAN) for (let i = 0; i <= n; i++) originMap.set(bytesKey(origins[i]!), i);
    return n;
  }
  const k = bytesKey(o), i = originMap.get(k);
  if (i !== undefined) return i;
  origins.push(o);
  originMap.set(k, n);
  return n;
};
const sIdx = (s: string): number => {
  let i = srcs.indexOf(s);
  if (i < 0) { i = srcs.length; srcs.push(s); }
  return i;
};

/** Appends the record's bytes to w (pages of records share one buffer). */
export function encodeRecordInto(w: ByteWriter, r: StoredRecord): void {
  origins.length = 0; srcs.length = 0;
  if (originMap.size) originMap.clear();
  if (r.base) { oIdx(r.base.origin); sIdx(r.base.src); }
  const leaves = r.leaves;
  // version 3 if every sequence is small enough for its zigzag difference
  // to stay an exact integer; one stamp if the leaves share it
  let v3 = !r.base || r.base.seq < SEQ_V3;
  let shared = leaves.length > 0;
  const l0 = leaves[0];
  for (let i = 0; i < leaves.length; i++) {
    const l = leaves[i]!;
    oIdx(l.origin); sIdx(l.src);
    if (!(l.seq < SEQ_V3) || !(l.seq >= 0) || l.seq % 1 !== 0) v3 = false;
    if (shared && (l.hlc !== l0!.hlc || l.src !== l0!.src || (l.origin !== l0!.origin && !same(l.origin, l0!.origin)))) shared = false;
  }
  if (r.base && (!(r.base.seq >= 0) || r.base.seq % 1 !== 0)) v3 = false;
  const wide = origins.length > 0xffff || srcs.length > 0xffff;
  // (version 1's sequences are never a replica's own numbering: unreachable)
  if (wide && !v3) throw new CrdtdbError("ETOOBIG", "a record of more than 65,535 origins with a sequence past 2^52");
  w.room(16);
  w.buf[w.pos++] = wide ? 4 : v3 ? 3 : 1;
  if (v3) w.buf[w.pos++] = shared ? 1 : 0;
  if (wide) { w.dv.setUint32(w.pos, srcs.length, true); w.pos += 4; }
  else { w.dv.setUint16(w.pos, srcs.length, true); w.pos += 2; }
  for (const s of srcs) w.u16str(s, true);
  w.room(4 + 32 * origins.length);
  if (wide) { w.dv.setUint32(w.pos, origins.length, true); w.pos += 4; }
  else { w.dv.setUint16(w.pos, origins.length, true); w.pos += 2; }
  for (const o of origins) { w.buf.set(o, w.pos); w.pos += 32; }
  w.room(1 + 24);
  if (r.base) {
    const b = r.base;
    w.buf[w.pos++] = b.kind;
    w.dv.setBigUint64(w.pos, b.hlc, true); w.dv.setUint16(w.pos + 8, oIdx(b.origin), true); w.dv.setUint16(w.pos + 10, sIdx(b.src), true);
    w.dv.setFloat64(w.pos + 12, b.seq, true); w.pos += 20;
  } else w.buf[w.pos++] = 0;
  if (v3) leavesV3(w, leaves, shared, r.base ? r.base.seq : 0);
  else leavesV1(w, leaves);
}

/** Sequences at or above this are written in version 1. */
const SEQ_V3 = 2 ** 52;

function leavesV1(w: ByteWriter, leaves: readonly Leaf[]): void {
  w.room(4);
  w.dv.setUint32(w.pos, leaves.length, true); w.pos += 4;
  for (const l of leaves) {
    w.room(1);
    w.buf[w.pos++] = l.path.length;
    for (const p of l.path) w.u16str(p, true);
    const vn = l.vlen;
    w.room(24 + vn);
    w.dv.setBigUint64(w.pos, l.hlc, true); w.dv.setUint16(w.pos + 8, oIdx(l.origin), true); w.dv.setUint16(w.pos + 10, sIdx(l.src), true);
    w.dv.setFloat64(w.pos + 12, l.seq, true); w.pos += 20;
    if (l.vbuf) { w.dv.setUint32(w.pos, vn, true); w.pos += 4; w.range(l.vbuf, l.voff, vn); }
    else { w.dv.setUint32(w.pos, 0xffffffff, true); w.pos += 4; }
  }
}

function leavesV3(w: ByteWriter, leaves: readonly Leaf[], shared: boolean, prev: number): void {
  w.room(8 + 3 * 8);
  vint(w, leaves.length);
  if (shared) {
    const l = leaves[0]!;
    w.dv.setBigUint64(w.pos, l.hlc, true); w.pos += 8;
    vint(w, oIdx(l.origin)); vint(w, sIdx(l.src));
  }
  for (let i = 0; i < leaves.length; i++) {
    const l = leaves[i]!, path = l.path, value = l.vbuf;
    w.room(1);
    w.buf[w.pos++] = path.length;
    for (let j = 0; j < path.length; j++) vstr(w, path[j]!);
    const vn = l.vlen;
    w.room(8 + 4 * 8 + vn);
    if (!shared) {
      w.dv.setBigUint64(w.pos, l.hlc, true); w.pos += 8;
      vint(w, oIdx(l.origin)); vint(w, sIdx(l.src));
    }
    const d = l.seq - prev;
    prev = l.seq;
    vint(w, d >= 0 ? 2 * d : -2 * d - 1);
    if (value) {
      vint(w, vn + 1);
      w.range(value, l.voff, vn);
    } else w.buf[w.pos++] = 0;
  }
}

/** An unsigned LEB128 integer below 2^53 (the caller made room: 8 bytes). */
function vint(w: ByteWriter, x: number): void {
  const b = w.buf;
  let p = w.pos;
  while (x >= 0x80) { b[p++] = (x % 0x80) | 0x80; x = Math.floor(x / 0x80); }
  b[p++] = x;
  w.pos = p;
}

/** A vint length, then the UTF-8 bytes; ASCII without an encoder call. */
function vstr(w: ByteWriter, s: string): void {
  const n = s.length;
  w.room(3 + 3 * n);
  const b = w.buf;
  let i = 0;
  if (n < 0x80) {
    const o = w.pos + 1;
    for (; i < n; i++) {
      const c = s.charCodeAt(i);
      if (c > 0x7f) break;
      b[o + i] = c;
    }
    if (i === n) { b[w.pos] = n; w.pos = o + n; return; }
  }
  const u = te.encode(s);
  vint(w, u.length);
  b.set(u, w.pos); w.pos += u.length;
}

function same(a: Uint8Array, b: Uint8Array): boolean { for (let i = 0; i < 32; i++) if (a[i] !== b[i]) return false; return true; }

/** Decodes encodeRecord's bytes (either version); ECORRUPT if they are
 *  not that.  The leaves' values point into b (no copy each: a page of
 *  thousands loads as one buffer), which the caller gives up: nothing may
 *  write to it after. */
export function decodeRecord(b: Uint8Array): StoredRecord {
  try {
    if (b[0] !== 1 && b[0] !== 3 && b[0] !== 4) throw new RangeError("unknown record version");
    return decode(b);
  } catch (e) {
    throw new CrdtdbError("ECORRUPT", `a stored record is unreadable: ${(e as Error).message}`);
  }
}

/** A register's sequence: a whole number from 0 (not yet numbered) below
 *  2^53, as a replica numbers them: never NaN, infinite, negative or a
 *  fraction, which version 1's f64 could hold. */
const seqOk = (s: number): boolean => Number.isSafeInteger(s) && s >= 0;

/**
 * A leaf as read, refused (RangeError) unless it is what the code reading
 * it relies on: a stored copy damaged into a NaN sequence made an export
 * loop for ever, a leaf with no path made rendering recurse without end,
 * and bytes that are not a value were exported for the server to refuse
 * on every connection.  A value is one msgpack value other than a map
 * (maps are leaves).
 */
function checkedLeaf(b: Uint8Array, l: Leaf): Leaf {
  if (!seqOk(l.seq)) throw new RangeError("a sequence that is not one");
  if (l.vbuf) {
    const c = b[l.voff]!, n = l.vlen;
    if (n === 0 || (c & 0xf0) === 0x80 || c === 0xde || c === 0xdf ||
        (!scalarFits(b, l.voff, n) && mpCheck(b, l.voff, l.voff + n, 64) !== MP_OK))
      throw new RangeError("a field value that is not one");
  }
  return l;
}

function decode(b: Uint8Array): StoredRecord {
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const v3 = b[0] !== 1, wide = b[0] === 4; // (4: version 3, u32 table counts)
  let p = v3 ? 2 : 1;
  if (v3 && b[1]! > 1) throw new RangeError("unknown record flags");
  const text = (n: number): string => {
    if (p + n > b.length) throw new RangeError("a string runs past the end");
    let s: string;
    let ascii = true;
    for (let i = 0; i < n; i++) if (b[p + i]! > 0x7f) { ascii = false; break; }
    if (ascii) s = String.fromCharCode.apply(null, b.subarray(p, p + n) as unknown as number[]);
    else s = td.decode(b.subarray(p, p + n));
    p += n;
    return s;
  };
  const str = (): string => { const n = dv.getUint16(p, true); p += 2; return text(n); };
  const vint = (): number => {
    let x = 0, m = 1, c: number;
    do {
      if (p >= b.length) throw new RangeError("a number runs past the end");
      c = b[p++]!;
      x += (c & 0x7f) * m;
      m *= 0x80;
      if (m > 2 ** 56) throw new RangeError("a number too long");
    } while (c & 0x80);
    return x;
  };
  const count = (): number => { const n = wide ? dv.getUint32(p, true) : dv.getUint16(p, true); p += wide ? 4 : 2; return n; };
  const ns = count();
  if (ns > b.length) throw new RangeError("more sources than bytes");
  const srcs: string[] = []; for (let i = 0; i < ns; i++) srcs.push(str());
  const no = count();
  if (p + 32 * no > b.length) throw new RangeError("origins run past the end");
  const origins: Uint8Array[] = []; for (let i = 0; i < no; i++) { origins.push(b.slice(p, p + 32)); p += 32; }
  const originAt = (i: number): Uint8Array => { const o = origins[i]; if (!o) throw new RangeError("no such origin"); return o; };
  const srcAt = (i: number): string => { const s = srcs[i]; if (s === undefined) throw new RangeError("no such source"); return s; };
  let base: BaseReg | null = null;
  const kind = b[p++]!;
  if (kind > 2) throw new RangeError("unknown base kind");
  if (kind) {
    // the order of every BaseReg literal (one hidden class)
    base = { kind: kind as 1 | 2, hlc: dv.getBigUint64(p, true), origin: originAt(dv.getUint16(p + 8, true)), seq: dv.getFloat64(p + 12, true), src: srcAt(dv.getUint16(p + 10, true)) };
    p += 20;
    if (!seqOk(base.seq)) throw new RangeError("a sequence that is not one");
  }
  let leaves: Leaf[];
  if (!v3) {
    const nl = dv.getUint32(p, true); p += 4;
    if (nl > b.length) throw new RangeError("more leaves than bytes");
    leaves = new Array(nl);
    for (let i = 0; i < nl; i++) {
      const np = b[p++]!;
      if (!np) throw new RangeError("a field with no path");
      const path: string[] = new Array(np);
      for (let j = 0; j < np; j++) path[j] = str();
      const hlc = dv.getBigUint64(p, true), origin = originAt(dv.getUint16(p + 8, true)), src = srcAt(dv.getUint16(p + 10, true)), seq = dv.getFloat64(p + 12, true);
      p += 20;
      const vn = dv.getUint32(p, true); p += 4;
      let vbuf: Uint8Array | null = null, voff = 0, vlen = 0;
      if (vn !== 0xffffffff) {
        if (p + vn > b.length) throw new RangeError("a value runs past the end");
        vbuf = b; voff = p; vlen = vn;
        p += vn;
      }
      leaves[i] = checkedLeaf(b, { path, hlc, origin, vbuf, voff, vlen, seq, src });
    }
  } else {
    const nl = vint();
    if (nl > b.length) throw new RangeError("more leaves than bytes");
    leaves = new Array(nl);
    const shared = b[1] === 1;
    let hlc = 0n, origin: Uint8Array = origins[0]!, src = "";
    if (shared) { hlc = dv.getBigUint64(p, true); p += 8; origin = originAt(vint()); src = srcAt(vint()); }
    let seq = base ? base.seq : 0;
    for (let i = 0; i < nl; i++) {
      const np = b[p++]!;
      if (!np) throw new RangeError("a field with no path");
      const path: string[] = new Array(np);
      for (let j = 0; j < np; j++) path[j] = text(vint());
      if (!shared) { hlc = dv.getBigUint64(p, true); p += 8; origin = originAt(vint()); src = srcAt(vint()); }
      const z = vint();
      seq += z % 2 ? -(z + 1) / 2 : z / 2;
      const vn = vint();
      let vbuf: Uint8Array | null = null, voff = 0, vlen = 0;
      if (vn) {
        if (p + vn - 1 > b.length) throw new RangeError("a value runs past the end");
        vbuf = b; voff = p; vlen = vn - 1;
        p += vn - 1;
      }
      leaves[i] = checkedLeaf(b, { path, hlc, origin, vbuf, voff, vlen, seq, src });
    }
  }
  if (p !== b.length) throw new RangeError("bytes after the record");
  // Strictly ascending, as every write stores them and C's decode demands:
  // two leaves at one path made rendering recurse until the stack ran out.
  for (let i = 1; i < leaves.length; i++)
    if (comparePaths(leaves[i - 1]!.path, leaves[i]!.path) >= 0) throw new RangeError("leaves out of order");
  // Dead leaves (docs/crdt.md): older than the base, or than a leaf at an
  // ancestor path (a newer write above replaced the subtree).  No merge
  // stores one; a damaged copy holding one would show it, and export it to
  // peers that drop it.  Dropped rather than refused: dead either way.
  // Ancestors sort before their descendants: `up` holds the live leaves
  // above the one at hand.
  let live: Leaf[] | null = null;
  const up: Leaf[] = [];
  for (let i = 0; i < leaves.length; i++) {
    const l = leaves[i]!;
    while (up.length && !isAncestor(up[up.length - 1]!.path, l.path)) up.pop();
    let dead = base !== null && olderThanBase(l, base);
    for (let k = 0; !dead && k < up.length; k++) dead = olderThanLeaf(l, up[k]!);
    if (dead) live ??= leaves.slice(0, i);
    else { live?.push(l); up.push(l); }
  }
  return { base, leaves: live ?? leaves };
}

/**
 * A page: many records in one stored value, so a commit of thousands of
 * records is a few IndexedDB puts, not one each (js/bench: ~0.1 ms of the
 * page's own thread per put in Chromium).
 *
 * page  = u8 version 2 | u32 count | entry*
 * entry = str key (collection \0 id) | u32 record bytes | record
 */
export class PageWriter {
  private readonly w = new ByteWriter(1 << 16);
  count = 0;

  /** Drops what was added (a commit that failed half way). */
  reset(): void { this.count = 0; this.w.pos = 5; }

  /** Bytes so far (5, the header, when empty). */
  get size(): number { return this.w.pos; }

  add(key: string, r: StoredRecord): void {
    const w = this.w;
    if (!this.count) { w.pos = 5; w.buf[0] = 2; }
    w.u16str(key, true);
    w.room(4);
    const at = w.pos;
    w.pos += 4;
    encodeRecordInto(w, r);
    w.dv.setUint32(at, w.pos - at - 4, true);
    this.count++;
  }

  /** The page so far (a fresh array), and a new page begins. */
  take(): Uint8Array {
    const w = this.w;
    if (!this.count) { w.pos = 5; w.buf[0] = 2; }
    w.dv.setUint32(1, this.count, true);
    this.count = 0;
    const page = w.buf.slice(0, w.pos);
    w.pos = 5; // the next page starts empty (its size says so)
    return page;
  }
}

export function encodePage(keys: readonly string[], recs: readonly StoredRecord[]): Uint8Array {
  const p = new PageWriter();
  for (let i = 0; i < keys.length; i++) p.add(keys[i]!, recs[i]!);
  return p.take();
}

/** Calls each(key, bytes, entry) for every entry of a page, in order
 *  (decodeRecord reads the bytes; entry is what the entry takes in the
 *  page, key and lengths included); ECORRUPT if the bytes are not a page. */
export function readPage(b: Uint8Array, each: (key: string, rec: Uint8Array, entry: number) => void): void {
  let keys: string[], at: number[], len: number[];
  try {
    if (b[0] !== 2) throw new RangeError("unknown page version");
    const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
    const n = dv.getUint32(1, true);
    keys = []; at = []; len = [];
    let p = 5;
    for (let i = 0; i < n; i++) {
      const kn = dv.getUint16(p, true);
      if (p + 2 + kn > b.length) throw new RangeError("a key runs past the end");
      const kb = b.subarray(p + 2, p + 2 + kn), key = tdFatal.decode(kb), z = kb.indexOf(0);
      // a collection and an id as a delta may carry them (delta.ts idStr):
      // 1..255 bytes each, no control character in the collection, no NUL
      // in the id.  A key of "\x03": a record every export sent was refused.
      if (z <= 0 || z === kn - 1 || z > 255 || kn - z - 1 > 255 || kb.indexOf(0, z + 1) >= 0 ||
          kb.subarray(0, z).some((c) => c < 0x20 || c === 0x7f))
        throw new RangeError("a key that is not a collection and an id");
      keys.push(key);
      p += 2 + kn;
      const rn = dv.getUint32(p, true);
      p += 4;
      if (p + rn > b.length) throw new RangeError("a record runs past the end");
      at.push(p); len.push(rn);
      p += rn;
    }
    if (p !== b.length) throw new RangeError("bytes after the page");
  } catch (e) {
    throw new CrdtdbError("ECORRUPT", `a stored page of records is unreadable: ${(e as Error).message}`);
  }
  // entries are back to back from byte 5: each ends where the next starts
  for (let i = 0, start = 5; i < keys.length; i++) {
    const end = at[i]! + len[i]!;
    each(keys[i]!, b.subarray(at[i]!, end), end - start);
    start = end;
  }
}

/**
 * A commit stored as the deltas it merged (backend.ts StoredDeltas), cut
 * into chunks of at most `max` bytes of payload so each stays one small
 * value (PAGE_BYTES in idb.ts), stored under consecutive page numbers.
 * The deltas' own bytes: no record is encoded, and they are about half the
 * pages' bytes (js/bench/README.md).
 *
 * chunk   = u8 version 3 | u16 part | u16 parts | the payload's next bytes
 * payload = f64 seq0 | u8 source bytes, source (UTF-8) | u32 n | u32 length * n | the deltas
 */
export function encodeDeltaChunks(d: { src: string; seq0: number; deltas: readonly Uint8Array[] }, max: number): Uint8Array[] {
  const src = te.encode(d.src);
  if (src.length > 255) throw new CrdtdbError("EINVAL", "a source id of over 255 bytes");
  const head = new Uint8Array(8 + 1 + src.length + 4 + 4 * d.deltas.length), dv = new DataView(head.buffer);
  dv.setFloat64(0, d.seq0, true);
  head[8] = src.length;
  head.set(src, 9);
  let p = 9 + src.length;
  dv.setUint32(p, d.deltas.length, true);
  p += 4;
  let n = head.length;
  for (const x of d.deltas) { dv.setUint32(p, x.length, true); p += 4; n += x.length; }
  const parts = Math.max(1, Math.ceil(n / max));
  if (parts > 0xffff) throw new CrdtdbError("ETOOBIG", "a commit of deltas too large to store in chunks");
  // the payload (head, then each delta) copied once, straight into the chunks
  const out: Uint8Array[] = [];
  let c = new Uint8Array(0), at = 0, left = n;
  const put = (b: Uint8Array): void => {
    for (let o = 0; o < b.length;) {
      if (at === c.length) {
        const i = out.length;
        c = new Uint8Array(5 + Math.min(max, left));
        c[0] = 3; c[1] = i & 0xff; c[2] = i >> 8; c[3] = parts & 0xff; c[4] = parts >> 8;
        out.push(c);
        at = 5;
      }
      const k = Math.min(b.length - o, c.length - at);
      c.set(k === b.length ? b : b.subarray(o, o + k), at);
      at += k; o += k; left -= k;
    }
  };
  put(head);
  for (const x of d.deltas) put(x);
  return out;
}

/** A chunk's place: [part, parts], or null if b is not a chunk of deltas. */
export function deltaChunkOf(b: Uint8Array): [number, number] | null {
  if (b.length < 5 || b[0] !== 3) return null;
  return [b[1]! | (b[2]! << 8), b[3]! | (b[4]! << 8)];
}

/** The deltas of a commit's chunks, in order (the deltas are views of one
 *  fresh buffer); ECORRUPT if they are not one commit's whole payload. */
export function readDeltaChunks(chunks: readonly Uint8Array[]): { src: string; seq0: number; deltas: Uint8Array[] } {
  try {
    let n = 0;
    chunks.forEach((c, i) => {
      const at = deltaChunkOf(c);
      if (!at || at[0] !== i || at[1] !== chunks.length) throw new RangeError("a chunk is missing or out of place");
      n += c.length - 5;
    });
    const payload = new Uint8Array(n);
    let p = 0;
    for (const c of chunks) { payload.set(c.subarray(5), p); p += c.length - 5; }
    const dv = new DataView(payload.buffer);
    if (n < 13) throw new RangeError("short header");
    const seq0 = dv.getFloat64(0, true), sl = payload[8]!;
    if (!Number.isSafeInteger(seq0) || seq0 < 0 || 9 + sl + 4 > n) throw new RangeError("bad header");
    const src = td.decode(payload.subarray(9, 9 + sl));
    p = 9 + sl;
    const count = dv.getUint32(p, true);
    p += 4;
    if (p + 4 * count > n) throw new RangeError("bad count");
    let at = p + 4 * count;
    const deltas: Uint8Array[] = [];
    for (let i = 0; i < count; i++) {
      const len = dv.getUint32(p + 4 * i, true);
      if (at + len > n) throw new RangeError("a delta runs past the end");
      deltas.push(payload.subarray(at, at + len));
      at += len;
    }
    if (at !== n) throw new RangeError("bytes after the deltas");
    return { src, seq0, deltas };
  } catch (e) {
    throw new CrdtdbError("ECORRUPT", `a stored commit of deltas is unreadable: ${(e as Error).message}`);
  }
}
