/**
 * Leaf values: msgpack encoding and decoding of the DataStore's values, and
 * flattening an add/update input into leaf writes exactly as the C library
 * does (crdt/value.c crdtdb__flatten, storage/write.c).
 *
 * Why a codec of its own rather than msgpackr's pack/unpack for leaf values:
 * a leaf's bytes are compared (equal stamps must carry equal bytes), relayed
 * and rendered as they are, so JS must write the very bytes C's msgpack-c
 * packer writes for the same value, and keep every type on the way back.
 * msgpackr (used for frames and deltas elsewhere) writes integral numbers of
 * 2^32 and above as float64, every bigint as int64 (d3), turns ext type 0
 * into undefined and throws on other unknown ext types.  This codec is the
 * canonical one instead:
 *
 * - numbers: safe integers (|n| <= 2^53 - 1, not -0) as the smallest int
 *   form (positive fixint, uint8..uint64, negative fixint, int8..int64);
 *   every other number (fractions, -0, NaN, +-Infinity, integral values
 *   beyond 2^53) as float64.  float32 input decodes to a number and is
 *   written back as float64 (JS has no float32); a float64 with an integral
 *   value (1.0) decodes to 1 and is written back as an int: JS cannot tell
 *   them apart.  Stored bytes are never re-encoded, so relays and renderings
 *   keep the original type (docs: tests/vectors/README.md).
 * - bigint: the smallest int form; outside [-2^63, 2^64) is refused.
 *   Decoded ints beyond the safe range come back as bigint, others as number.
 * - strings: str (fixstr, str8, str16, str32) of the UTF-8 (lone surrogates
 *   become U+FFFD, as TextEncoder does; in map keys they are refused).
 * - Uint8Array (and Buffer): bin.  Date: timestamp ext -1 in its shortest
 *   form (32, 64 or 96 bits); a timestamp that a Date cannot hold exactly
 *   (sub-millisecond nanoseconds, out of range) decodes to Ext instead.
 * - Ext: any other extension type, kept byte for byte.
 * - undefined: dropped from maps (as JSON.stringify and elemento do), null
 *   inside arrays (as JSON.stringify does); a bare undefined is refused.
 * - Maps decode to plain objects; a non-string key inside a nested value is
 *   turned into its string form (JS object keys are strings).
 */

import { ByteWriter } from "./bytewriter.js";
import { CrdtdbError } from "./errors.js";
import type { DataObject, Path, Value, ValueRef } from "./types.js";

/** An extension value other than a representable timestamp, kept exactly.
 *  It appears wherever a Value can (cast: `v instanceof Ext`). */
export class Ext {
  constructor(
    readonly type: number,
    readonly data: Uint8Array,
  ) {}
}

export interface Limits {
  /** Container nesting of one add/update input, the record map = 1. */
  maxDepth: number;
  /** Bytes of the msgpack encoding of one add/update input. */
  maxValueSize: number;
  /** Bytes of one field's encoded path (crdt/path.h). */
  maxPathBytes: number;
  /** Leaf fields in one input (default 10000). */
  maxFields?: number;
}

/** crdtdb_env_options_init's defaults (storage/env.c). */
export const DEFAULT_LIMITS: Readonly<Required<Limits>> = Object.freeze({
  maxDepth: 16,
  maxValueSize: 1 << 20,
  maxPathBytes: 1024,
  maxFields: 10000,
});

/* ------------------------------------------------------------ writer */

const textEncoder = new TextEncoder();
const textDecoder = new TextDecoder();

/** msgpack-c's encoding of values, over the replica's one growable buffer. */
class Writer extends ByteWriter {
  /** The deepest container depth written (flatten's depth check). */
  deepest = 0;
  constructor(size = 64) {
    super(size);
  }
  u8(x: number): void {
    this.room(1);
    this.buf[this.pos++] = x;
  }
  head(tag: number, w: 1 | 2 | 4, x: number): void {
    this.room(1 + w);
    this.buf[this.pos] = tag;
    if (w === 1) this.buf[this.pos + 1] = x;
    else if (w === 2) this.dv.setUint16(this.pos + 1, x);
    else this.dv.setUint32(this.pos + 1, x);
    this.pos += 1 + w;
  }
  bytes(b: Uint8Array): void {
    this.room(b.length);
    this.buf.set(b, this.pos);
    this.pos += b.length;
  }
  result(): Uint8Array {
    return this.buf.slice(0, this.pos);
  }
}

/** UTF-8 length of s as TextEncoder writes it. */
function utf8Length(s: string): number {
  let n = s.length;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) continue;
    if (c < 0x800) n += 1;
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length && (s.charCodeAt(i + 1) & 0xfc00) === 0xdc00) {
      n += 2; // the pair: 4 bytes for 2 units
      i++;
    } else n += 2;
  }
  return n;
}

/** True if s has no lone surrogate (so it is valid UTF-8 once encoded). */
export function isWellFormed(s: string): boolean {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0xd800 || c > 0xdfff) continue;
    if (c >= 0xdc00 || i + 1 >= s.length || (s.charCodeAt(i + 1) & 0xfc00) !== 0xdc00) return false;
    i++;
  }
  return true;
}

function writeStr(w: Writer, s: string): void {
  const n = utf8Length(s);
  if (n < 32) w.u8(0xa0 | n);
  else if (n < 0x100) w.head(0xd9, 1, n);
  else if (n < 0x10000) w.head(0xda, 2, n);
  else w.head(0xdb, 4, n);
  w.room(n);
  if (n === s.length) {
    // ASCII: no encoder call
    const b = w.buf;
    let p = w.pos;
    for (let i = 0; i < n; i++) b[p++] = s.charCodeAt(i);
  } else {
    textEncoder.encodeInto(s, w.buf.subarray(w.pos, w.pos + n));
  }
  w.pos += n;
}

const TWO32 = 4294967296;

function writeUint(w: Writer, x: number): void {
  if (x < 0x80) w.u8(x);
  else if (x < 0x100) w.head(0xcc, 1, x);
  else if (x < 0x10000) w.head(0xcd, 2, x);
  else if (x < TWO32) w.head(0xce, 4, x);
  else {
    w.room(9);
    w.buf[w.pos] = 0xcf;
    w.dv.setUint32(w.pos + 1, Math.floor(x / TWO32));
    w.dv.setUint32(w.pos + 5, x >>> 0);
    w.pos += 9;
  }
}

function writeNegInt(w: Writer, x: number): void {
  if (x >= -32) w.u8(x & 0xff);
  else if (x >= -0x80) w.head(0xd0, 1, x & 0xff);
  else if (x >= -0x8000) w.head(0xd1, 2, x & 0xffff);
  else if (x >= -0x80000000) w.head(0xd2, 4, x >>> 0);
  else {
    w.room(9);
    w.buf[w.pos] = 0xd3;
    w.dv.setBigInt64(w.pos + 1, BigInt(x));
    w.pos += 9;
  }
}

const U64_END = 1n << 64n;
const I64_MIN = -(1n << 63n);

function writeBigInt(w: Writer, x: bigint): void {
  if (x >= 0n) {
    if (x >= U64_END) throw new CrdtdbError("EBADVALUE", `integer ${x} does not fit in 64 bits`);
    if (x < 0x100000000n) return writeUint(w, Number(x));
    w.room(9);
    w.buf[w.pos] = 0xcf;
    w.dv.setBigUint64(w.pos + 1, x);
    w.pos += 9;
  } else {
    if (x < I64_MIN) throw new CrdtdbError("EBADVALUE", `integer ${x} does not fit in 64 bits`);
    if (x >= -0x80000000n) return writeNegInt(w, Number(x));
    w.room(9);
    w.buf[w.pos] = 0xd3;
    w.dv.setBigInt64(w.pos + 1, x);
    w.pos += 9;
  }
}

function writeNumber(w: Writer, x: number): void {
  if (Number.isSafeInteger(x) && !Object.is(x, -0)) {
    if (x >= 0) writeUint(w, x);
    else writeNegInt(w, x);
    return;
  }
  w.room(9);
  w.buf[w.pos] = 0xcb;
  w.dv.setFloat64(w.pos + 1, x);
  w.pos += 9;
}

function writeExt(w: Writer, type: number, data: Uint8Array): void {
  const n = data.length;
  const t = type & 0xff;
  if (n === 1) w.head(0xd4, 1, t);
  else if (n === 2) w.head(0xd5, 1, t);
  else if (n === 4) w.head(0xd6, 1, t);
  else if (n === 8) w.head(0xd7, 1, t);
  else if (n === 16) w.head(0xd8, 1, t);
  else {
    if (n < 0x100) w.head(0xc7, 1, n);
    else if (n < 0x10000) w.head(0xc8, 2, n);
    else w.head(0xc9, 4, n);
    w.u8(t);
  }
  w.bytes(data);
}

function writeDate(w: Writer, d: Date): void {
  const ms = d.getTime();
  if (Number.isNaN(ms)) throw new CrdtdbError("EBADVALUE", "an invalid Date has no value to store");
  const sec = Math.floor(ms / 1000);
  const ns = (ms - sec * 1000) * 1e6;
  if (ns === 0 && sec >= 0 && sec < TWO32) {
    w.head(0xd6, 1, 0xff);
    w.room(4);
    w.dv.setUint32(w.pos, sec);
    w.pos += 4;
  } else if (sec >= 0 && sec < 2 ** 34) {
    w.head(0xd7, 1, 0xff);
    w.room(8);
    w.dv.setUint32(w.pos, ns * 4 + Math.floor(sec / TWO32));
    w.dv.setUint32(w.pos + 4, sec >>> 0);
    w.pos += 8;
  } else {
    w.head(0xc7, 1, 12);
    w.u8(0xff);
    w.room(12);
    w.dv.setUint32(w.pos, ns);
    w.dv.setBigInt64(w.pos + 4, BigInt(sec));
    w.pos += 12;
  }
}

/** Beyond this nesting flatten stops walking (cyclic input). */
const HARD_DEPTH = 1000;

function tooDeep(maxDepth: number): CrdtdbError {
  return new CrdtdbError("ETOODEEP", `value nested deeper than the limit of ${maxDepth}`);
}

function isPlainObject(v: object): boolean {
  const p = Object.getPrototypeOf(v);
  return p === Object.prototype || p === null;
}

function typeName(v: unknown): string {
  if (typeof v !== "object" || v === null) return typeof v;
  return (v as object).constructor?.name ?? "object";
}

/** Writes v; depth is the container depth v sits in (the record map's
 *  fields: 1).  Throws ETOODEEP beyond maxDepth. */
function writeValue(w: Writer, v: unknown, depth: number, maxDepth: number): void {
  switch (typeof v) {
    case "number":
      return writeNumber(w, v);
    case "string":
      return writeStr(w, v);
    case "boolean":
      return w.u8(v ? 0xc3 : 0xc2);
    case "bigint":
      return writeBigInt(w, v);
    case "object":
      break;
    default:
      throw new CrdtdbError("EBADVALUE", `a ${typeof v} cannot be stored`);
  }
  if (v === null) return w.u8(0xc0);
  if (v instanceof Uint8Array) {
    const n = v.length;
    if (n < 0x100) w.head(0xc4, 1, n);
    else if (n < 0x10000) w.head(0xc5, 2, n);
    else w.head(0xc6, 4, n);
    return w.bytes(v);
  }
  if (v instanceof Date) return writeDate(w, v);
  if (v instanceof Ext) return writeExt(w, v.type, v.data);
  if (depth + 1 > maxDepth) throw tooDeep(maxDepth);
  if (depth + 1 > w.deepest) w.deepest = depth + 1;
  if (Array.isArray(v)) {
    const n = v.length;
    if (n < 16) w.u8(0x90 | n);
    else if (n < 0x10000) w.head(0xdc, 2, n);
    else w.head(0xdd, 4, n);
    for (let i = 0; i < n; i++) {
      const e = v[i];
      writeValue(w, e === undefined ? null : e, depth + 1, maxDepth);
    }
    return;
  }
  if (!isPlainObject(v)) throw new CrdtdbError("EBADVALUE", `a ${typeName(v)} cannot be stored`);
  const o = v as Record<string, unknown>;
  const keys = Object.keys(o);
  let n = 0;
  for (const k of keys) if (o[k] !== undefined) n++;
  if (n < 16) w.u8(0x80 | n);
  else if (n < 0x10000) w.head(0xde, 2, n);
  else w.head(0xdf, 4, n);
  for (const k of keys) {
    const e = o[k];
    if (e === undefined) continue;
    writeStr(w, k);
    writeValue(w, e, depth + 1, maxDepth);
  }
}

/** The canonical msgpack encoding of v (see the module comment).  Throws
 *  CrdtdbError EBADVALUE for what cannot be stored (functions, symbols,
 *  undefined, class instances other than Date/Uint8Array/Ext, invalid
 *  Dates, integers beyond 64 bits), ETOODEEP past maxDepth containers. */
export function encodeValue(v: Value, maxDepth = 64): Uint8Array {
  if (v === undefined) throw new CrdtdbError("EBADVALUE", "undefined cannot be stored");
  const w = new Writer(32);
  writeValue(w, v, 0, maxDepth);
  return w.result();
}

/* ------------------------------------------------------------ reader */

const MAX_DECODE_DEPTH = 100;

/** Reads b[pos, end): a whole array, or one leaf's range of a shared one. */
class Reader {
  readonly view: DataView;
  constructor(readonly b: Uint8Array, public pos = 0, readonly end = b.length) {
    this.view = new DataView(b.buffer, b.byteOffset, b.byteLength);
  }
  need(n: number): void {
    if (this.pos + n > this.end) throw new CrdtdbError("EBADVALUE", "truncated msgpack value");
  }
}

function readStr(r: Reader, n: number): string {
  r.need(n);
  const b = r.b;
  const start = r.pos;
  r.pos += n;
  if (n < 64) {
    let s = "";
    for (let i = start; i < start + n; i++) {
      const c = b[i]!;
      if (c >= 0x80) return textDecoder.decode(b.subarray(start, start + n));
      s += String.fromCharCode(c);
    }
    return s;
  }
  return textDecoder.decode(b.subarray(start, start + n));
}

function fromInt64(x: bigint): number | bigint {
  return x >= -9007199254740991n && x <= 9007199254740991n ? Number(x) : x;
}

function readExt(r: Reader, n: number): Value {
  r.need(1 + n);
  const type = r.view.getInt8(r.pos);
  const data = new Uint8Array(r.b.subarray(r.pos + 1, r.pos + 1 + n));
  r.pos += 1 + n;
  if (type === -1) {
    const dv = new DataView(data.buffer, data.byteOffset, data.byteLength);
    let sec: number, ns: number;
    if (n === 4) {
      sec = dv.getUint32(0);
      ns = 0;
    } else if (n === 8) {
      const hi = dv.getUint32(0);
      ns = Math.floor(hi / 4);
      sec = (hi & 3) * TWO32 + dv.getUint32(4);
    } else if (n === 12) {
      ns = dv.getUint32(0);
      sec = Number(dv.getBigInt64(4));
    } else return new Ext(type, data) as unknown as Value;
    const ms = sec * 1000 + ns / 1e6;
    if (ns < 1e9 && ns % 1e6 === 0 && Number.isSafeInteger(sec) && Math.abs(ms) <= 8.64e15)
      return new Date(ms);
  }
  return new Ext(type, data) as unknown as Value;
}

function setKey(o: DataObject, k: string, v: Value): void {
  if (k === "__proto__") Object.defineProperty(o, k, { value: v, enumerable: true, writable: true, configurable: true });
  else o[k] = v;
}

function keyString(k: Value): string {
  if (typeof k === "string") return k;
  if (k instanceof Uint8Array) return textDecoder.decode(k);
  return String(k);
}

function read(r: Reader, depth: number): Value {
  r.need(1);
  const b = r.b;
  const t = b[r.pos++]!;
  if (t < 0x80) return t;
  if (t >= 0xe0) return t - 0x100;
  if (t >= 0xa0 && t < 0xc0) return readStr(r, t & 0x1f);
  let n: number;
  let isMap: boolean;
  if ((t & 0xf0) === 0x80 || (t & 0xf0) === 0x90) {
    n = t & 0x0f;
    isMap = (t & 0xf0) === 0x80;
  } else {
    const v = r.view;
    const p = r.pos;
    switch (t) {
      case 0xc0:
        return null;
      case 0xc2:
        return false;
      case 0xc3:
        return true;
      case 0xc4: case 0xc5: case 0xc6: {
        const w = 1 << (t - 0xc4);
        r.need(w);
        const len = w === 1 ? b[p]! : w === 2 ? v.getUint16(p) : v.getUint32(p);
        r.pos += w;
        r.need(len);
        r.pos += len;
        return new Uint8Array(b.subarray(p + w, p + w + len));
      }
      case 0xc7: case 0xc8: case 0xc9: {
        const w = 1 << (t - 0xc7);
        r.need(w);
        const len = w === 1 ? b[p]! : w === 2 ? v.getUint16(p) : v.getUint32(p);
        r.pos += w;
        return readExt(r, len);
      }
      case 0xca: r.need(4); r.pos += 4; return v.getFloat32(p);
      case 0xcb: r.need(8); r.pos += 8; return v.getFloat64(p);
      case 0xcc: r.need(1); r.pos += 1; return b[p]!;
      case 0xcd: r.need(2); r.pos += 2; return v.getUint16(p);
      case 0xce: r.need(4); r.pos += 4; return v.getUint32(p);
      case 0xcf: {
        r.need(8);
        r.pos += 8;
        const hi = v.getUint32(p);
        if (hi < 0x200000) return hi * TWO32 + v.getUint32(p + 4);
        return v.getBigUint64(p);
      }
      case 0xd0: r.need(1); r.pos += 1; return v.getInt8(p);
      case 0xd1: r.need(2); r.pos += 2; return v.getInt16(p);
      case 0xd2: r.need(4); r.pos += 4; return v.getInt32(p);
      case 0xd3: r.need(8); r.pos += 8; return fromInt64(v.getBigInt64(p));
      case 0xd4: return readExt(r, 1);
      case 0xd5: return readExt(r, 2);
      case 0xd6: return readExt(r, 4);
      case 0xd7: return readExt(r, 8);
      case 0xd8: return readExt(r, 16);
      case 0xd9: r.need(1); r.pos += 1; return readStr(r, b[p]!);
      case 0xda: r.need(2); r.pos += 2; return readStr(r, v.getUint16(p));
      case 0xdb: r.need(4); r.pos += 4; return readStr(r, v.getUint32(p));
      case 0xdc: r.need(2); r.pos += 2; n = v.getUint16(p); isMap = false; break;
      case 0xdd: r.need(4); r.pos += 4; n = v.getUint32(p); isMap = false; break;
      case 0xde: r.need(2); r.pos += 2; n = v.getUint16(p); isMap = true; break;
      case 0xdf: r.need(4); r.pos += 4; n = v.getUint32(p); isMap = true; break;
      default:
        throw new CrdtdbError("EBADVALUE", "malformed msgpack value");
    }
  }
  if (depth + 1 > MAX_DECODE_DEPTH) throw new CrdtdbError("ETOODEEP", "msgpack value nested too deeply");
  // every element takes at least one byte: refuse headers that lie
  if (n * (isMap ? 2 : 1) > b.length - r.pos)
    throw new CrdtdbError("EBADVALUE", "msgpack container claims more elements than bytes");
  if (!isMap) {
    const a: Value[] = new Array(n);
    for (let i = 0; i < n; i++) a[i] = read(r, depth + 1);
    return a;
  }
  const o: DataObject = {};
  for (let i = 0; i < n; i++) {
    const k = read(r, depth + 1);
    setKey(o, keyString(k), read(r, depth + 1));
  }
  return o;
}

/** Decodes exactly one msgpack value (trailing bytes refused): see the
 *  module comment for the types.  Throws CrdtdbError EBADVALUE. */
export function decodeValue(b: Uint8Array): Value {
  return readExactly(b, 0, b.length);
}

/** The one msgpack value that is b[start, end). */
function readExactly(b: Uint8Array, start: number, end: number): Value {
  const r = new Reader(b, start, end);
  const v = read(r, 0);
  if (r.pos !== end) throw new CrdtdbError("EBADVALUE", "trailing bytes after msgpack value");
  return v;
}

/** decodeValue of a value leaf's bytes, read where they are (a rendering
 *  of 100k leaves makes no view each, and no reader for the small
 *  integers, nil and booleans most fields hold). */
export function decodeLeafValue(v: ValueRef): Value {
  const b = v.vbuf!, p = v.voff, n = v.vlen;
  const t = b[p]!;
  if (n === 1) {
    if (t < 0x80) return t;
    if (t >= 0xe0) return t - 0x100;
    if (t === 0xc0) return null;
    if (t === 0xc2) return false;
    if (t === 0xc3) return true;
  } else if (n === 2 && t === 0xcc) return b[p + 1]!;
  else if (n === 3 && t === 0xcd) return (b[p + 1]! << 8) | b[p + 2]!;
  else if (n === 5 && t === 0xce) return b[p + 1]! * 0x1000000 + ((b[p + 2]! << 16) | (b[p + 3]! << 8) | b[p + 4]!);
  return readExactly(b, p, p + n);
}

/** Bytewise equality of two leaf values (vbuf null: a map leaf). */
export function sameValue(a: ValueRef, b: ValueRef): boolean {
  const x = a.vbuf, y = b.vbuf, n = a.vlen;
  if (x === null || y === null) return x === y;
  if (n !== b.vlen) return false;
  const i0 = a.voff, j0 = b.voff;
  if (x === y && i0 === j0) return true;
  for (let i = 0; i < n; i++) if (x[i0 + i] !== y[j0 + i]) return false;
  return true;
}

/** A view of a leaf's value bytes (null: a map leaf), for the few readers
 *  that want one (decoding, tests): a new object each call. */
export function valueBytes(v: ValueRef): Uint8Array | null {
  const b = v.vbuf;
  return b === null ? null : new Uint8Array(b.buffer, b.byteOffset + v.voff, v.vlen);
}

/** The reference to a whole buffer (null: a map leaf), which the caller
 *  gives up: nothing may write to it after. */
export function refOf(b: Uint8Array | null): ValueRef {
  return b === null ? { vbuf: null, voff: 0, vlen: 0 } : { vbuf: b, voff: 0, vlen: b.length };
}

/* ------------------------------------------------------------ flatten */

/** Bytes of one key's path segment (crdt/path.c: NULs escaped, 2-byte
 *  terminator). */
function segmentBytes(k: string): number {
  let n = utf8Length(k) + 2;
  for (let i = 0; i < k.length; i++) if (k.charCodeAt(i) === 0) n++;
  return n;
}

function strSize(n: number): number {
  return n < 32 ? 1 + n : n < 0x100 ? 2 + n : n < 0x10000 ? 3 + n : 5 + n;
}

function mapHeaderSize(n: number): number {
  return n < 16 ? 1 : n < 0x10000 ? 3 : 5;
}

/** A leaf of flatten: its path and its value (vbuf null: a map leaf, an
 *  empty map). */
export interface FlatLeaf extends ValueRef {
  path: Path;
}

/**
 * The leaves of an add/update input, as the C library makes them: nested
 * non-empty maps split into leaves, an empty map a map leaf (value null),
 * everything else (arrays whole) a value leaf.  Keys whose value is
 * undefined are left out (JSON-like; a map left empty by that is an empty
 * map).  Refuses, as C does:
 * - ETOOBIG: the input's msgpack over maxValueSize, a field path over
 *   maxPathBytes, more than maxFields leaves;
 * - ETOODEEP: containers nested deeper than maxDepth (the record map is 1);
 * - EBADVALUE: not a plain object, a key with a lone surrogate (not UTF-8),
 *   a value that cannot be stored (see encodeValue).
 */
export function flatten(obj: DataObject, limits: Limits = DEFAULT_LIMITS): FlatLeaf[] {
  return flattenAs(obj, limits, flatLeaf, null);
}

const flatLeaf = (path: Path): FlatLeaf => ({ path, vbuf: null, voff: 0, vlen: 0 });

/** flatten, each leaf made by make(path, ctx) (vbuf null, set after):
 *  the replica makes its registers directly, not a FlatLeaf each first,
 *  with a module-level make and its stamp in ctx (no closure a record). */
export function flattenAs<T extends FlatLeaf, C>(obj: DataObject, limits: Limits, make: (path: Path, ctx: C) => T, ctx: C, slabs?: Slabs): T[] {
  if (typeof obj !== "object" || obj === null || Array.isArray(obj) || !isPlainObject(obj))
    throw new CrdtdbError("EBADVALUE", "a record must be a plain object (a msgpack map)");
  // one scratch flattener, taken while in use (a getter could flatten again)
  const f = spareFlattener ?? new Flattener();
  spareFlattener = null;
  try {
    return f.run(obj, limits, make as (path: Path, ctx: unknown) => T, ctx, slabs);
  } finally {
    f.done();
    if (f.w.buf.length <= 1 << 16) spareFlattener = f;
  }
}

/** What flatten needs of a key, worked out once per distinct key (records
 *  of one collection have the same few): its path when it is a top-level
 *  key (shared: paths are never mutated), whether it is well-formed UTF-16,
 *  its msgpack str size and its path segment's bytes. */
interface KeyInfo {
  path: string[];
  ok: boolean;
  str: number;
  seg: number;
}
const keyInfos = new Map<string, KeyInfo>();
function keyInfo(k: string): KeyInfo {
  let i = keyInfos.get(k);
  if (!i) {
    if (keyInfos.size >= 4096) keyInfos.clear();
    i = { path: [k], ok: isWellFormed(k), str: strSize(utf8Length(k)), seg: segmentBytes(k) };
    keyInfos.set(k, i);
  }
  return i;
}

/**
 * Where the values of several flattened inputs go together: an ArrayBuffer
 * per record costs ~5 µs in Chromium (~150 ms of a 10,000-record addAll),
 * so one call's records share a few.  The first buffer is the first
 * record's size exactly (a one-record add allocates as before); each next
 * one holds at least what was written so far, up to 64 KiB, so a call's
 * buffers hold at most about twice what it wrote, 64 KiB at most unused.
 * A value's view keeps its buffer alive, as a decoded delta's values keep
 * their message: use one Slabs for one call's records only.
 */
export class Slabs {
  private buf: Uint8Array | null = null;
  private pos = 0;
  private total = 0;
  /** Where the last place() put its bytes in the buffer it returned. */
  at = 0;

  /** Copies src[0, n) into a buffer; returns the buffer (offset: at). */
  place(src: Uint8Array, n: number): Uint8Array {
    let b = this.buf;
    if (!b || this.pos + n > b.length) {
      const size = b ? Math.max(n, Math.min(Math.max(this.total, b.length * 2), 1 << 16)) : n;
      b = this.buf = new Uint8Array(size);
      this.pos = 0;
    }
    b.set(src.subarray(0, n), this.pos);
    this.at = this.pos;
    this.pos += n;
    this.total += n;
    return b;
  }
}

const hasOwn = Object.prototype.hasOwnProperty;

/** flatten's scratch state between calls (leaf values are copied out). */
let spareFlattener: Flattener | null = null;

/** One flatten at a time: the walk's state in fields, not closures made
 *  per record. */
class Flattener {
  readonly w = new Writer(256);
  /** [start, end) of each leaf's value in w (-1: a map leaf). */
  private readonly at: number[] = [];
  private out: FlatLeaf[] = [];
  private make: (path: Path, ctx: unknown) => FlatLeaf = flatLeaf;
  private ctx: unknown = null;
  private limits: Limits = DEFAULT_LIMITS;
  private maxFields = 0;
  private size = 0;
  private deepest = 1;
  // C refuses in this order: the input's size, its depth (crdtdb__value_parse),
  // then what flattening finds (crdtdb__flatten).  So the walk notes the
  // first flattening error and goes on measuring.
  private first: CrdtdbError | null = null;

  run<T extends FlatLeaf>(obj: DataObject, limits: Limits, make: (path: Path, ctx: unknown) => T, ctx: unknown, slabs: Slabs | undefined): T[] {
    const w = this.w, at = this.at;
    const out: T[] = [];
    this.out = out; this.make = make; this.ctx = ctx; this.limits = limits;
    this.maxFields = limits.maxFields ?? DEFAULT_LIMITS.maxFields;
    this.size = 0; this.deepest = 1; this.first = null;
    w.pos = 0;
    at.length = 0;
    this.walk(obj as Record<string, unknown>, null, 0, 1);
    if (out.length && w.pos) {
      // the values go one after another into one buffer, which each leaf
      // points into: one allocation a record (or fewer: slabs), not one a
      // field
      let slab: Uint8Array, o = 0;
      if (slabs) { slab = slabs.place(w.buf, w.pos); o = slabs.at; }
      else slab = w.buf.slice(0, w.pos);
      for (let i = 0; i < out.length; i++) {
        const s0 = at[2 * i]!;
        if (s0 < 0) continue;
        const l = out[i]!;
        l.vbuf = slab;
        l.voff = o + s0;
        l.vlen = at[2 * i + 1]! - s0;
      }
    }
    if (this.size > limits.maxValueSize)
      throw new CrdtdbError("ETOOBIG", `value of ${this.size} bytes exceeds the limit of ${limits.maxValueSize}`);
    if (this.deepest > limits.maxDepth) throw tooDeep(limits.maxDepth);
    if (this.first) throw this.first;
    return out;
  }

  /** Drops what the last run held on to. */
  done(): void {
    this.out = [];
    this.make = flatLeaf;
    this.ctx = null;
    this.first = null;
  }

  private fail(e: CrdtdbError): void {
    if (!this.first) this.first = e;
  }

  private leaf(path: Path, start: number, end: number): void {
    if (this.out.length >= this.maxFields) {
      this.fail(new CrdtdbError("ETOOBIG", `record has more than ${this.maxFields} fields`));
      if (start >= 0) this.w.pos = start;
      return;
    }
    this.out.push(this.make(path, this.ctx));
    this.at.push(start, end);
  }

  /** prefix null: the record map (top-level keys, shared paths). */
  private walk(m: Record<string, unknown>, prefix: Path | null, prefixBytes: number, depth: number): void {
    if (depth > this.deepest) this.deepest = depth;
    const w = this.w, limits = this.limits;
    let count = 0;
    // for-in, not Object.keys: V8 reads m[k] through the enum cache (2-5x)
    for (const k in m) {
      if (!hasOwn.call(m, k)) continue;
      const v = m[k];
      if (v === undefined) continue;
      count++;
      const info = keyInfo(k);
      if (!info.ok) this.fail(new CrdtdbError("EBADVALUE", "record key is not valid UTF-8"));
      this.size += info.str;
      const pathBytes = prefixBytes + info.seg;
      if (pathBytes > limits.maxPathBytes)
        this.fail(new CrdtdbError("ETOOBIG", `field path of ${pathBytes} bytes exceeds the limit of ${limits.maxPathBytes}`));
      const path = prefix ? prefix.concat(k) : info.path;
      if (typeof v === "number") {
        const start = w.pos;
        writeNumber(w, v);
        this.size += w.pos - start;
        this.leaf(path, start, w.pos);
        continue;
      }
      if (typeof v === "object" && v !== null && !Array.isArray(v) && !(v instanceof Uint8Array) &&
          !(v instanceof Date) && !(v instanceof Ext)) {
        if (!isPlainObject(v)) throw new CrdtdbError("EBADVALUE", `a ${typeName(v)} cannot be stored`);
        if (depth + 1 > HARD_DEPTH) throw tooDeep(limits.maxDepth); // a cycle, or absurd
        const sub = v as Record<string, unknown>;
        let nonEmpty = false;
        for (const sk in sub) {
          if (Object.prototype.hasOwnProperty.call(sub, sk) && sub[sk] !== undefined) {
            nonEmpty = true;
            break;
          }
        }
        if (nonEmpty) {
          this.walk(sub, path, pathBytes, depth + 1);
          continue;
        }
        if (depth + 1 > this.deepest) this.deepest = depth + 1;
        this.size += 1;
        this.leaf(path, -1, -1);
        continue;
      }
      const start = w.pos;
      w.deepest = 0;
      writeValue(w, v, depth, HARD_DEPTH);
      if (w.deepest > this.deepest) this.deepest = w.deepest;
      this.size += w.pos - start;
      this.leaf(path, start, w.pos);
    }
    this.size += mapHeaderSize(count);
  }
}

/** Builds msgpack from parts: map headers, str keys, raw value bytes (a
 *  rendering splices stored leaf bytes unchanged). */
export class MsgpackBuilder {
  private readonly w = new Writer(256);
  mapHeader(n: number): void {
    const w = this.w;
    if (n < 16) w.u8(0x80 | n);
    else if (n < 0x10000) w.head(0xde, 2, n);
    else w.head(0xdf, 4, n);
  }
  str(s: string): void {
    writeStr(this.w, s);
  }
  raw(b: Uint8Array): void {
    this.w.bytes(b);
  }
  /** A leaf's value bytes (not a map leaf). */
  rawRef(v: ValueRef): void {
    this.w.range(v.vbuf!, v.voff, v.vlen);
  }
  value(v: Value): void {
    writeValue(this.w, v, 0, 64);
  }
  result(): Uint8Array {
    return this.w.result();
  }
}

/** The byte size of v's canonical msgpack encoding (what C measures
 *  against max_value_size). */
export function encodedSize(v: Value): number {
  const w = new Writer(64);
  writeValue(w, v, 0, 64);
  return w.pos;
}
