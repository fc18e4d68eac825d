/**
 * The delta codec: a change set as a signed msgpack envelope, byte for byte
 * as crdt/delta.c writes and reads it (docs/protocol.md, "Deltas").
 *
 * Encoding builds the body exactly as the C encoder does (collections and
 * origins in order of first use, hlc_base = the smallest stamp, stamps as
 * offsets, a one-key path as a str and a longer one as an array, a map leaf
 * as a field without a value, a value as bin, a field stamped as its
 * record's base without its stamp) and signs it, format version 2; for the
 * same input order the bytes equal the C library's
 * (tests/vectors/delta.json).  Version 1 (no short fields) is still read.
 *
 * Decoding follows the receiver's order: the size and the envelope; the
 * sender read from its fixed place; the signature verified BEFORE anything
 * else of the body is parsed; then every check crdt/delta.c makes, with the
 * same error codes (EBADVALUE, EVERSION, EBADSIG, ETOOBIG, ETOODEEP, EBADID).
 * The body is parsed in one bounds-checked pass; only a body that fails it
 * is parsed again as C does (a structural check of all of it, then the
 * checks in C's order), so a body with several faults gets C's error.
 *
 * ALIASING: a decoded delta does not copy.  Every Uint8Array in it (sender,
 * recipient, origins, fingerprints) is a subarray VIEW of the input bytes,
 * and every field's value a range of them (vbuf is the input itself: no
 * object a value), so the input must not be mutated while the result lives
 * (pass {copy: true} to decode from a private copy instead).  Values are
 * not decoded: a field's range is the leaf's msgpack exactly as received,
 * checked for structure and depth as crdt/mpcheck.c does.
 *
 * Also here, shared with frames.ts: the small msgpack writer and the
 * structural checker (a port of crdt/mpcheck.c).
 */
import { ByteWriter } from "./bytewriter.js";
import { CrdtdbError, type ErrorCode } from "./errors.js";
import { sign, verify, type KeyPair } from "./keys.js";
import { comparePaths, isAncestor } from "./path.js";
import {
  ADD, REMOVE, type BaseKind, type DecodedBody, type DecodedRecord, type DeltaBody, type Hlc, type Leaf, type ReplicaId,
  type ValueRef,
} from "./types.js";

// ---------------------------------------------------------------- limits

/** The receiver's limits (crdtdb_env_options in include/crdtdb.h). */
export interface DeltaLimits {
  /** One encoded delta, bytes (default 4 MiB). */
  maxDeltaSize: number;
  /** Record entries in one delta (default 65,536). */
  maxDeltaGroups: number;
  /** Path keys plus value nesting of one field (default 16). */
  maxDepth: number;
  /** The encoded key path of one field (crdt/path.c encoding; default 1024). */
  maxPathBytes: number;
  /** One field value's msgpack, bytes (default 1 MiB). */
  maxValueSize: number;
}

export const DEFAULT_DELTA_LIMITS: Readonly<DeltaLimits> = Object.freeze({
  maxDeltaSize: 4 << 20,
  maxDeltaGroups: 65536,
  maxDepth: 16,
  maxPathBytes: 1024,
  maxValueSize: 1 << 20,
});

/** The format encoders write.  Decoders also read version 1, which is
 *  version 2 without the short fields (docs/protocol.md). */
export const DELTA_VERSION = 2;
export const DELTA_VERSION_MIN = 1;
/** At most this many history points in a delta. */
export const DELTA_FP_MAX = 4;
export const FP_BYTES = 16;
export const ID_MAX = 255;
const BODY_FIELDS = 11;
const BODY_DEPTH = 6; // body > records > rec > fields > field > path
const U64_MAX = (1n << 64n) - 1n;

// ---------------------------------------------------------------- writer

const te = new TextEncoder();

/** A growable msgpack writer using the smallest encodings, as msgpack-c's
 *  packer does (so its bytes equal the C library's). */
export class MpWriter extends ByteWriter {
  constructor(size = 256) {
    super(size);
  }
  /** The bytes written: a view of the writer's buffer. */
  bytes(): Uint8Array {
    return this.buf.subarray(0, this.pos);
  }
  private be(v: number, w: number): void {
    const b = this.buf;
    for (let i = w - 1; i >= 0; i--) {
      b[this.pos + i] = v & 0xff;
      v = Math.floor(v / 256);
    }
    this.pos += w;
  }
  nil(): void {
    this.room(1);
    this.buf[this.pos++] = 0xc0;
  }
  /** An unsigned integer (number up to 2^53, or bigint up to 2^64-1). */
  uint(v: number | bigint): void {
    this.room(9);
    if (typeof v === "bigint") {
      if (v < 0n || v > U64_MAX) throw new RangeError("not a uint64");
      if (v <= 0xffffffffn) v = Number(v);
      else {
        this.buf[this.pos++] = 0xcf;
        this.be(Number(v >> 32n), 4);
        this.be(Number(v & 0xffffffffn), 4);
        return;
      }
    }
    if (!Number.isSafeInteger(v) || v < 0) throw new RangeError("not a safe unsigned integer");
    const b = this.buf;
    if (v < 0x80) b[this.pos++] = v;
    else if (v < 0x100) {
      b[this.pos++] = 0xcc;
      b[this.pos++] = v;
    } else if (v < 0x10000) {
      b[this.pos++] = 0xcd;
      this.be(v, 2);
    } else if (v < 0x100000000) {
      b[this.pos++] = 0xce;
      this.be(v, 4);
    } else {
      b[this.pos++] = 0xcf;
      this.be(v, 8);
    }
  }
  /** A signed 32-bit integer as msgpack_pack_int32 writes it. */
  int32(v: number): void {
    if (!Number.isInteger(v) || v < -0x80000000 || v > 0x7fffffff) throw new RangeError("not an int32");
    if (v >= 0) return this.uint(v);
    this.room(5);
    const b = this.buf;
    if (v >= -32) b[this.pos++] = v & 0xff;
    else if (v >= -128) {
      b[this.pos++] = 0xd0;
      b[this.pos++] = v & 0xff;
    } else if (v >= -32768) {
      b[this.pos++] = 0xd1;
      this.be(v & 0xffff, 2);
    } else {
      b[this.pos++] = 0xd2;
      this.be(v >>> 0, 4);
    }
  }
  array(n: number): void {
    this.room(5);
    if (n < 16) this.buf[this.pos++] = 0x90 | n;
    else if (n < 0x10000) {
      this.buf[this.pos++] = 0xdc;
      this.be(n, 2);
    } else {
      this.buf[this.pos++] = 0xdd;
      this.be(n, 4);
    }
  }
  strHeader(n: number): void {
    this.room(5);
    if (n < 32) this.buf[this.pos++] = 0xa0 | n;
    else if (n < 0x100) {
      this.buf[this.pos++] = 0xd9;
      this.buf[this.pos++] = n;
    } else if (n < 0x10000) {
      this.buf[this.pos++] = 0xda;
      this.be(n, 2);
    } else {
      this.buf[this.pos++] = 0xdb;
      this.be(n, 4);
    }
  }
  binHeader(n: number): void {
    this.room(5);
    if (n < 0x100) {
      this.buf[this.pos++] = 0xc4;
      this.buf[this.pos++] = n;
    } else if (n < 0x10000) {
      this.buf[this.pos++] = 0xc5;
      this.be(n, 2);
    } else {
      this.buf[this.pos++] = 0xc6;
      this.be(n, 4);
    }
  }
  raw(b: Uint8Array): void {
    this.room(b.length);
    this.buf.set(b, this.pos);
    this.pos += b.length;
  }
  str(s: string): void {
    const n = s.length;
    let ascii = true;
    for (let i = 0; i < n; i++)
      if (s.charCodeAt(i) > 0x7f) {
        ascii = false;
        break;
      }
    if (!ascii) {
      const b = te.encode(s);
      this.strHeader(b.length);
      this.raw(b);
      return;
    }
    this.strHeader(n);
    this.room(n);
    const b = this.buf;
    let p = this.pos;
    for (let i = 0; i < n; i++) b[p++] = s.charCodeAt(i);
    this.pos = p;
  }
  bin(b: Uint8Array): void {
    this.binHeader(b.length);
    this.raw(b);
  }
  /** A leaf's value as a bin (not a map leaf). */
  binRef(v: ValueRef): void {
    this.binHeader(v.vlen);
    this.range(v.vbuf!, v.voff, v.vlen);
  }
}

// ---------------------------------------------------------------- mpcheck

/** mpCheck's results. */
export const MP_OK = 0;
export const MP_BAD = 1; // EBADVALUE
export const MP_DEEP = 2; // ETOODEEP
/** Why the last mpCheck failed. */
export let mpWhy = "";

const pending = new Float64Array(66);
const isMapAt = new Uint8Array(66);

/**
 * crdt/mpcheck.c: checks that p[off, end) is exactly one well-formed msgpack
 * value nested at most maxDepth containers deep (the outermost counts 1),
 * every container claiming no more elements than bytes follow it, map keys
 * scalars.  Allocation-free.  When tops is given, the offsets of the
 * outermost container's first tops.length elements are stored in it.
 * MP_OK, MP_BAD or MP_DEEP (mpWhy says why).
 */
export function mpCheck(p: Uint8Array, off: number, end: number, maxDepth: number, tops?: Int32Array): number {
  if (maxDepth > 64) maxDepth = 64;
  let depth = 0;
  let top = 0;
  pending[0] = 1;
  isMapAt[0] = 0;
  while (pending[depth]! > 0 || depth > 0) {
    if (pending[depth] === 0) {
      depth--;
      continue;
    }
    if (off >= end) {
      mpWhy = "truncated msgpack value";
      return MP_BAD;
    }
    const b = p[off]!;
    const left = end - off;
    let skip = 1;
    let items = 0;
    let container = false;
    let ok = true;
    if (b <= 0x7f || b >= 0xe0 || b === 0xc0 || b === 0xc2 || b === 0xc3) skip = 1;
    else if ((b & 0xf0) === 0x80 || (b & 0xf0) === 0x90) {
      items = (b & 0x0f) * ((b & 0xf0) === 0x80 ? 2 : 1);
      container = true;
    } else if ((b & 0xe0) === 0xa0) skip = 1 + (b & 0x1f);
    else {
      let w = 0;
      switch (b) {
        case 0xc4: case 0xc5: case 0xc6: case 0xd9: case 0xda: case 0xdb:
          w = 1 << (b >= 0xd9 ? b - 0xd9 : b - 0xc4);
          if (left < 1 + w) ok = false;
          else skip = 1 + w + be(p, off + 1, w);
          break;
        case 0xc7: case 0xc8: case 0xc9:
          w = 1 << (b - 0xc7);
          if (left < 1 + w) ok = false;
          else skip = 1 + w + 1 + be(p, off + 1, w);
          break;
        case 0xca: skip = 5; break;
        case 0xcb: skip = 9; break;
        case 0xcc: case 0xcd: case 0xce: case 0xcf: skip = 1 + (1 << (b - 0xcc)); break;
        case 0xd0: case 0xd1: case 0xd2: case 0xd3: skip = 1 + (1 << (b - 0xd0)); break;
        case 0xd4: case 0xd5: case 0xd6: case 0xd7: case 0xd8: skip = 2 + (1 << (b - 0xd4)); break;
        case 0xdc: case 0xdd: case 0xde: case 0xdf:
          w = b & 1 ? 4 : 2;
          if (left < 1 + w) ok = false;
          else {
            items = be(p, off + 1, w) * (b >= 0xde ? 2 : 1);
            container = true;
            skip = 1 + w;
          }
          break;
        default:
          ok = false; // 0xc1
      }
    }
    if (!ok || skip > left) {
      mpWhy = b === 0xc1 ? "malformed msgpack value" : "truncated msgpack value";
      return MP_BAD;
    }
    const isKey = isMapAt[depth] === 1 && pending[depth]! % 2 === 0;
    if (tops && depth === 1 && top < tops.length) tops[top++] = off;
    pending[depth]!--;
    off += skip;
    if (!container) continue;
    if (isKey) {
      mpWhy = "map keys must be scalars";
      return MP_BAD;
    }
    if (items > end - off) {
      mpWhy = "msgpack container claims more elements than bytes";
      return MP_BAD;
    }
    if (depth + 1 > maxDepth) {
      mpWhy = "msgpack value nested too deeply";
      return MP_DEEP;
    }
    depth++;
    pending[depth] = items;
    isMapAt[depth] = (b & 0xf0) === 0x80 || b === 0xde || b === 0xdf ? 1 : 0;
  }
  if (off !== end) {
    mpWhy = "trailing bytes after msgpack value";
    return MP_BAD;
  }
  return MP_OK;
}

function be(p: Uint8Array, at: number, w: number): number {
  let v = 0;
  for (let i = 0; i < w; i++) v = v * 256 + p[at + i]!;
  return v;
}

// ---------------------------------------------------------------- encode

function fail(code: ErrorCode, message: string): never {
  throw new CrdtdbError(code, message);
}

/** The body's msgpack, as crdt/delta.c's encode_body writes it. */
export function encodeBody(d: DeltaBody): Uint8Array {
  const colls: string[] = [];
  const collIdx = new Map<string, number>();
  const origins: ReplicaId[] = [];
  const originIdx = new Map<string, number>();
  const byObject = new Map<Uint8Array, number>(); // registers share their origin's array
  const originOf = (k: ReplicaId): number => {
    let i = byObject.get(k);
    if (i !== undefined) return i;
    if (k.length !== 32) fail("EINVAL", "a replica id is 32 bytes");
    let key = "";
    for (let j = 0; j < 32; j++) key += String.fromCharCode(k[j]!);
    i = originIdx.get(key);
    if (i === undefined) {
      i = origins.length;
      origins.push(k);
      originIdx.set(key, i);
    }
    byObject.set(k, i);
    return i;
  };
  let base: bigint | null = null;
  let size = 64;
  const recs: { coll: number; base: number; fields: number[] }[] = [];
  for (const r of d.records) {
    let c = collIdx.get(r.coll);
    if (c === undefined) {
      c = colls.length;
      colls.push(r.coll);
      collIdx.set(r.coll, c);
    }
    const fo: number[] = [];
    const bo = r.base ? originOf(r.base.origin) : -1;
    if (r.base && (base === null || r.base.hlc < base)) base = r.base.hlc;
    for (const f of r.fields) {
      fo.push(originOf(f.origin));
      if (base === null || f.hlc < base) base = f.hlc;
      size += 24 + f.vlen;
      for (const k of f.path) size += 5 + 3 * k.length;
    }
    size += 32 + 3 * r.id.length;
    recs.push({ coll: c, base: bo, fields: fo });
  }
  const b = base ?? 0n;
  const w = new MpWriter(size + 40 * origins.length);
  w.array(BODY_FIELDS);
  w.str(d.dbId);
  if (d.sender.length !== 32) fail("EINVAL", "the sender is a 32-byte replica id");
  w.bin(d.sender);
  w.uint(d.from);
  w.uint(d.to);
  if (d.ack === null) w.nil();
  else w.uint(d.ack);
  w.uint(b);
  w.array(colls.length);
  for (const c of colls) w.str(c);
  w.array(origins.length);
  for (const o of origins) w.bin(o);
  w.array(d.records.length);
  for (let i = 0; i < d.records.length; i++) {
    const r = d.records[i]!;
    const x = recs[i]!;
    w.array(4);
    w.uint(x.coll);
    w.str(r.id);
    if (r.base) {
      w.array(3);
      w.uint(r.base.kind);
      w.uint(r.base.hlc - b);
      w.uint(x.base);
    } else w.nil();
    w.array(r.fields.length);
    for (let k = 0; k < r.fields.length; k++) {
      const f = r.fields[k]!;
      // stamped as the record's base in this entry: the short form
      const asBase = r.base !== null && f.hlc === r.base.hlc && x.fields[k] === x.base;
      w.array((f.vbuf ? 2 : 1) + (asBase ? 0 : 2));
      if (f.path.length === 0) fail("EINVAL", "a field path has at least one key");
      if (f.path.length > 1) w.array(f.path.length);
      for (const key of f.path) w.str(key);
      if (!asBase) {
        w.uint(f.hlc - b);
        w.uint(x.fields[k]!);
      }
      if (f.vbuf) w.binRef(f);
    }
  }
  w.array(d.history.length);
  for (const h of d.history) {
    w.array(2);
    w.uint(h.seq);
    w.bin(h.fp);
  }
  if (d.recipient) w.bin(d.recipient);
  else w.nil();
  return w.bytes();
}

/** The envelope [DELTA_VERSION, bin body, bin sig] around a body and its signature. */
export function envelope(body: Uint8Array, sig: Uint8Array): Uint8Array {
  const w = new MpWriter(body.length + 80);
  w.array(3);
  w.uint(DELTA_VERSION);
  w.bin(body);
  w.bin(sig);
  return w.bytes();
}

/** Encodes and signs a delta (kp.publicKey must be body.sender). */
export async function encodeDelta(body: DeltaBody, kp: KeyPair): Promise<Uint8Array> {
  if (!bytesEqual(kp.publicKey, body.sender)) fail("EINVAL", "the delta's sender is not the signing key");
  const b = encodeBody(body);
  return envelope(b, await sign(kp, b));
}

function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

// ---------------------------------------------------------------- decode

/** Reads a bin (bin = true) or str length header at data[at]; returns
 *  [headerBytes, length] or null (crdt/delta.c read_len). */
function readLen(data: Uint8Array, at: number, end: number, bin: boolean): [number, number] | null {
  if (end - at < 1) return null;
  const b = data[at]!;
  if (!bin && (b & 0xe0) === 0xa0) return [1, b & 0x1f];
  let w: number;
  if (bin && b >= 0xc4 && b <= 0xc6) w = 1 << (b - 0xc4);
  else if (!bin && b >= 0xd9 && b <= 0xdb) w = 1 << (b - 0xd9);
  else return null;
  if (end - at < 1 + w) return null;
  return [1 + w, be(data, at + 1, w)];
}

/** Where the parts of an envelope at the start of data lie. */
export interface DeltaFrame {
  /** The envelope's whole length (deltas may be concatenated, as in export files). */
  frameLen: number;
  /** The format version (DELTA_VERSION_MIN..DELTA_VERSION). */
  version: number;
  bodyStart: number;
  bodyEnd: number;
  /** The signature's offset, or -1 if it is not 64 bytes. */
  sigStart: number;
}

/** crdtdb__delta_frame: the envelope's bounds without verifying (throws
 *  EBADVALUE or EVERSION). */
export function deltaFrame(data: Uint8Array): DeltaFrame {
  const len = data.length;
  if (len < 2 || data[0] !== 0x93) fail("EBADVALUE", "malformed delta envelope");
  if (data[1]! > 0x7f) fail("EBADVALUE", "malformed delta envelope");
  const version = data[1]!;
  if (version < DELTA_VERSION_MIN || version > DELTA_VERSION) fail("EVERSION", `unsupported delta format version ${version}`);
  let off = 2;
  let r = readLen(data, off, len, true);
  if (!r || r[1] > len - off - r[0]) fail("EBADVALUE", "malformed delta envelope");
  const bodyStart = off + r[0];
  const bodyEnd = bodyStart + r[1];
  off = bodyEnd;
  r = readLen(data, off, len, true);
  if (!r || r[1] > len - off - r[0]) fail("EBADVALUE", "malformed delta envelope");
  return { frameLen: off + r[0] + r[1], version, bodyStart, bodyEnd, sigStart: r[1] === 64 ? off + r[0] : -1 };
}

/** The sender at its fixed place in a body [db_id, sender, ...]: the offset
 *  of its 32 bytes, or -1 (crdt/delta.c sender_of). */
function senderAt(data: Uint8Array, start: number, end: number): number {
  const len = end - start;
  if (len < 1 || data[start] !== 0x90 + BODY_FIELDS) return -1;
  const r = readLen(data, start + 1, end, false);
  if (!r || r[1] > len - 1 - r[0]) return -1;
  const off = start + 1 + r[0] + r[1];
  if (end - off < 2 + 32 || data[off] !== 0xc4 || data[off + 1] !== 32) return -1;
  return off + 2;
}

const tdFatal = new TextDecoder("utf-8", { fatal: true });

/** crdtdb_delta_peek_sender: the database id and signer of a delta, read
 *  without verifying (to check the signer against the session's peer).
 *  Throws EBADVALUE / EVERSION / ETOOBIG as the C function returns them. */
export function peekSender(data: Uint8Array): { dbId: string; sender: ReplicaId; length: number } {
  const f = deltaFrame(data);
  const bs = f.bodyStart;
  const blen = f.bodyEnd - bs;
  if (blen < 2 || (data[bs]! & 0xf0) !== 0x90) fail("EBADVALUE", "malformed delta header");
  let hdr = 1;
  let n: number;
  const b = data[bs + 1]!;
  if ((b & 0xe0) === 0xa0) n = b & 0x1f;
  else if (b >= 0xd9 && b <= 0xdb) {
    const w = 1 << (b - 0xd9);
    if (blen < 2 + w) fail("EBADVALUE", "malformed delta header");
    n = be(data, bs + 2, w);
    hdr += w;
  } else fail("EBADVALUE", "malformed delta header");
  if (n > ID_MAX) fail("ETOOBIG", "database id over 255 bytes");
  if (n === 0 || n > blen - 1 - hdr) fail("EBADVALUE", "malformed delta header");
  const idStart = bs + 1 + hdr;
  let dbId: string;
  try {
    dbId = tdFatal.decode(data.subarray(idStart, idStart + n));
  } catch {
    fail("EBADVALUE", "malformed delta header");
  }
  for (let i = idStart; i < idStart + n; i++)
    if (data[i]! < 0x20 || data[i] === 0x7f) fail("EBADVALUE", "malformed delta header");
  const at = idStart + n;
  if (blen < at - bs + 2 + 32 || data[at] !== 0xc4 || data[at + 1] !== 32)
    fail("EBADVALUE", "malformed delta header");
  return { dbId, sender: data.subarray(at + 2, at + 34), length: f.frameLen };
}

export interface DecodeOptions {
  /** Decode from a private copy, so the result does not alias the input. */
  copy?: boolean;
  /** For tests: skip the one-pass parser, parse only the way C does. */
  referenceOnly?: boolean;
}

/** A delta's signature: its last 64 bytes (a delta that decodeDelta took
 *  ends with its signature, a bin 8 of 64 bytes). */
export function signatureOf(bytes: Uint8Array): Uint8Array {
  return new Uint8Array(bytes.buffer, bytes.byteOffset + bytes.length - 64, 64);
}

/**
 * Verifies and decodes exactly one delta (crdtdb__delta_decode).  Throws
 * CrdtdbError: ETOOBIG over limits.maxDeltaSize before reading anything;
 * EBADVALUE / EVERSION for the envelope; EBADSIG unless the body is signed
 * by the sender it names (nothing else in the body is parsed before that);
 * then EBADVALUE, EBADID, ETOOBIG, ETOODEEP as crdt/delta.c.
 * The result's byte arrays are views of `bytes` (see the module comment).
 * Its bases and fields are fresh registers: a replica that merges the body
 * takes them as its own (and numbers them), so one body is merged into one
 * transaction, once; decode again to merge again.
 */
export async function decodeDelta(
  bytes: Uint8Array,
  limits: Partial<DeltaLimits> = DEFAULT_DELTA_LIMITS,
  opts?: DecodeOptions,
): Promise<DecodedBody> {
  const lim = limits === DEFAULT_DELTA_LIMITS ? DEFAULT_DELTA_LIMITS : { ...DEFAULT_DELTA_LIMITS, ...limits };
  const len = bytes.length;
  if (len > lim.maxDeltaSize)
    fail("ETOOBIG", `delta of ${len} bytes exceeds the limit of ${lim.maxDeltaSize}`);
  const data = opts?.copy ? new Uint8Array(bytes) : bytes;
  const f = deltaFrame(data);
  if (f.frameLen !== len) fail("EBADVALUE", "trailing bytes after delta");
  if (f.sigStart < 0) fail("EBADSIG", "delta has no 64-byte signature");
  const s = senderAt(data, f.bodyStart, f.bodyEnd);
  if (s < 0) fail("EBADVALUE", "malformed delta header");
  const sender = new Uint8Array(data.buffer, data.byteOffset + s, 32);
  const body = new Uint8Array(data.buffer, data.byteOffset + f.bodyStart, f.bodyEnd - f.bodyStart);
  if (!(await verify(sender, body, new Uint8Array(data.buffer, data.byteOffset + f.sigStart, 64))))
    fail("EBADSIG", "delta signature does not match its body and sender");
  return parseBody(data, f, sender, lim, opts?.referenceOnly === true);
}

/** Limits for a delta read back from our own store: it passed the
 *  receiver's limits when it arrived, and those may have been lowered since. */
const STORED_LIMITS: Readonly<DeltaLimits> = Object.freeze({
  maxDeltaSize: Number.MAX_SAFE_INTEGER,
  maxDeltaGroups: Number.MAX_SAFE_INTEGER,
  maxDepth: 1 << 16,
  maxPathBytes: Number.MAX_SAFE_INTEGER,
  maxValueSize: Number.MAX_SAFE_INTEGER,
});

/**
 * Decodes a delta this replica verified and stored itself (a backend's
 * stored form of a commit, backend.ts StoredDeltas): no signature check and
 * no receiver limits, since both held when it arrived; the same parser and
 * the same registers as decodeDelta.  Throws CrdtdbError (ECORRUPT) if the
 * bytes are not a delta.  Never for bytes from the network.
 */
export function decodeStored(bytes: Uint8Array): DecodedBody {
  try {
    const f = deltaFrame(bytes);
    const s = senderAt(bytes, f.bodyStart, f.bodyEnd);
    if (f.frameLen !== bytes.length || s < 0) fail("EBADVALUE", "malformed delta envelope");
    const sender = new Uint8Array(bytes.buffer, bytes.byteOffset + s, 32);
    return parseBody(bytes, f, sender, STORED_LIMITS, false);
  } catch (e) {
    throw new CrdtdbError("ECORRUPT", `a stored delta is unreadable: ${(e as Error).message}`);
  }
}

// The parser reads B[P..] up to END.  State is module level for speed;
// parsing is synchronous, so it is never interleaved.  Every reader checks
// its bytes lie before END (the signature follows the body in the same
// buffer) and that a container claims no more elements than bytes follow,
// throwing OUT otherwise.
let B: Uint8Array = new Uint8Array(0);
let P = 0;
let END = 0;
let BIG = 0n; // the value of the last uint() that returned UINT_BIG
const NOT_UINT = -1;
const UINT_BIG = -2;
const OUT = new CrdtdbError("EBADVALUE", "truncated msgpack value");

function need(n: number): void {
  if (n > END - P) throw OUT;
}

/** msgpack-c's POSITIVE_INTEGER: any integer format holding a value >= 0.
 *  Returns it (advancing) if <= 2^53-1; UINT_BIG (advancing; BIG holds it)
 *  if larger; NOT_UINT (not advancing) otherwise. */
function uint(): number {
  if (P >= END) throw OUT;
  const b = B[P]!;
  if (b <= 0x7f) {
    P++;
    return b;
  }
  let v: number;
  switch (b) {
    case 0xcc: need(2); v = B[P + 1]!; P += 2; return v;
    case 0xcd: need(3); v = (B[P + 1]! << 8) | B[P + 2]!; P += 3; return v;
    case 0xce: need(5); v = be(B, P + 1, 4); P += 5; return v;
    case 0xcf: need(9); return u64(P + 1, 9);
    case 0xd0: need(2); if (B[P + 1]! & 0x80) return NOT_UINT; v = B[P + 1]!; P += 2; return v;
    case 0xd1: need(3); if (B[P + 1]! & 0x80) return NOT_UINT; v = be(B, P + 1, 2); P += 3; return v;
    case 0xd2: need(5); if (B[P + 1]! & 0x80) return NOT_UINT; v = be(B, P + 1, 4); P += 5; return v;
    case 0xd3: need(9); if (B[P + 1]! & 0x80) return NOT_UINT; return u64(P + 1, 9);
    default: return NOT_UINT;
  }
}

function u64(at: number, size: number): number {
  const hi = be(B, at, 4);
  const lo = be(B, at + 4, 4);
  P += size;
  if (hi < 0x200000) return hi * 0x100000000 + lo;
  BIG = (BigInt(hi) << 32n) | BigInt(lo);
  return UINT_BIG;
}

/** Array length at P (advancing), or -1 (not advancing). */
function arrayLen(): number {
  if (P >= END) throw OUT;
  const b = B[P]!;
  let n: number;
  if ((b & 0xf0) === 0x90) {
    P++;
    return b & 0x0f;
  } else if (b === 0xdc) {
    need(3);
    n = (B[P + 1]! << 8) | B[P + 2]!;
    P += 3;
  } else if (b === 0xdd) {
    need(5);
    n = be(B, P + 1, 4);
    P += 5;
  } else return -1;
  need(n); // every element takes a byte at least
  return n;
}

/** The length of a str or bin whose 8/16/32-bit length markers are m8,
 *  m8 + 1, m8 + 2 (advancing past the header; its bytes lie before END),
 *  or -1 (not advancing). */
function sizedLen(m8: number): number {
  if (P >= END) throw OUT;
  const w = B[P]! - m8;
  if (w < 0 || w > 2) return -1;
  const k = 1 << w; // 1, 2 or 4 length bytes
  need(1 + k);
  const n = be(B, P + 1, k);
  P += 1 + k;
  need(n);
  return n;
}

/** Str length at P (advancing past the header; its bytes lie before END),
 *  or -1 (not advancing). */
function strLen(): number {
  if (P < END && (B[P]! & 0xe0) === 0xa0) {
    const n = B[P++]! & 0x1f;
    need(n);
    return n;
  }
  return sizedLen(0xd9);
}

/** Bin length at P (advancing past the header; its bytes lie before END),
 *  or -1 (not advancing). */
function binLen(): number {
  return sizedLen(0xc4);
}

/** Reusable argument arrays for String.fromCharCode, by length. */
const CODES: number[][] = Array.from({ length: 33 }, (_, n) => new Array<number>(n).fill(0));

/** The UTF-8 string of n bytes at P (advancing), or null if invalid. */
function utf8(n: number): string | null {
  const start = P;
  const end = P + n;
  P = end;
  if (n <= 32) {
    const codes = CODES[n]!;
    let i = 0;
    for (; i < n; i++) {
      const c = B[start + i]!;
      if (c & 0x80) break;
      codes[i] = c;
    }
    if (i === n) return n === 0 ? "" : String.fromCharCode.apply(null, codes);
  }
  try {
    return tdFatal.decode(view(start, n));
  } catch {
    return null;
  }
}

/** A view of n bytes of B at start (cheaper than subarray, which looks up
 *  the species constructor). */
function view(start: number, n: number): Uint8Array {
  return new Uint8Array(B.buffer, B.byteOffset + start, n);
}

/** crdt/delta.c str_ok: a str of 1..255 bytes of UTF-8 (strict: and no
 *  control characters); the string, or null (P then undefined). */
function idStr(strict: boolean): string | null {
  const n = strLen();
  if (n <= 0 || n > ID_MAX) return null;
  if (strict)
    for (let i = P; i < P + n; i++) if (B[i]! < 0x20 || B[i] === 0x7f) return null;
  return utf8(n);
}

/**
 * Parses the body.  First in one pass in byte order (parseFast); a body
 * that passes it passes every check of crdt/delta.c, in whatever order.  If
 * it fails, the body is parsed again the way C does (mpCheck over all of
 * it, then the checks in C's order), so the error is the one C reports.
 */
function parseBody(data: Uint8Array, f: DeltaFrame, sender: ReplicaId, lim: DeltaLimits,
                   referenceOnly: boolean): DecodedBody {
  const start = f.bodyStart, end = f.bodyEnd;
  B = data;
  END = end;
  SHORT_OK = f.version >= 2;
  try {
    if (!referenceOnly)
      try {
        P = start;
        return parseFast(sender, lim);
      } catch {
        // fall through: find the error C reports
      }
    const tops = new Int32Array(BODY_FIELDS);
    if (mpCheck(data, start, end, BODY_DEPTH, tops) !== MP_OK) fail("EBADVALUE", `delta body: ${mpWhy}`);
    return parseChecked(tops, sender, lim);
  } finally {
    B = EMPTY; // drop the references to the input
    RBASE = null;
  }
}

/** The body at P in one pass; throws (anything) if anything is wrong. */
function parseFast(sender: ReplicaId, lim: DeltaLimits): DecodedBody {
  if (arrayLen() !== BODY_FIELDS) throw OUT;
  const dbId = idStr(true);
  if (dbId === null) throw OUT;
  if (binLen() !== 32) throw OUT;
  P += 32;
  const from = uint();
  const to = uint();
  if (from < 0 || to < 0 || from > to) throw OUT; // (UINT_BIG too: sequences are numbers)
  let ack: number | null = null;
  if (B[P] === 0xc0) P++;
  else if ((ack = uint()) < 0) throw OUT;
  const bn = uint();
  if (bn === NOT_UINT) throw OUT;
  const base = bn === UINT_BIG ? BIG : BigInt(bn);
  const ncolls = arrayLen();
  if (ncolls < 0) throw OUT;
  const colls: string[] = new Array(ncolls);
  for (let i = 0; i < ncolls; i++) {
    const c = idStr(true);
    if (c === null) throw OUT;
    colls[i] = c;
  }
  const norigins = arrayLen();
  if (norigins < 0) throw OUT;
  const origins: ReplicaId[] = new Array(norigins);
  for (let i = 0; i < norigins; i++) {
    if (binLen() !== 32) throw OUT;
    origins[i] = view(P, 32);
    P += 32;
  }
  const nrecs = arrayLen();
  if (nrecs < 0 || nrecs > (lim.maxDeltaGroups || 65536)) throw OUT;
  const stamps = new Stamps(base);
  const records: DecodedRecord[] = new Array(nrecs);
  for (let i = 0; i < nrecs; i++) records[i] = parseRecord(colls, origins, stamps, lim);
  const nhist = arrayLen();
  if (nhist < 0 || nhist > DELTA_FP_MAX) throw OUT;
  const history: { seq: number; fp: Uint8Array }[] = [];
  for (let i = 0; i < nhist; i++) {
    if (arrayLen() !== 2) throw OUT;
    const seq = uint();
    if (seq < 0 || binLen() !== FP_BYTES) throw OUT;
    history.push({ seq, fp: view(P, FP_BYTES) });
    P += FP_BYTES;
  }
  let recipient: ReplicaId | null = null;
  if (B[P] === 0xc0) P++;
  else {
    if (binLen() !== 32) throw OUT;
    recipient = view(P, 32);
    P += 32;
  }
  if (P !== END || (ack !== null && !recipient)) throw OUT;
  return { dbId, sender, from, to, ack, records, history, recipient, maxHlc: stamps.max };
}
const EMPTY = new Uint8Array(0);

function parseChecked(a: Int32Array, sender: ReplicaId, lim: DeltaLimits): DecodedBody {
  // (sender_of already saw an 11-array; mpCheck recorded its elements)
  P = a[0]!;
  const dbId = idStr(true);
  if (dbId === null) fail("EBADID", "invalid database id in delta");
  P = a[2]!;
  const from = uint();
  P = a[3]!;
  const to = uint();
  P = a[4]!;
  const ackNil = B[P] === 0xc0;
  const ack = ackNil ? -1 : uint();
  P = a[5]!;
  const bn = uint();
  const base = bn === UINT_BIG ? BIG : BigInt(Math.max(bn, 0));
  P = a[6]!;
  const ncolls = arrayLen();
  P = a[7]!;
  const norigins = arrayLen();
  P = a[8]!;
  const nrecs = arrayLen();
  P = a[9]!;
  const nhist = arrayLen();
  const bad = (v: number): boolean => v === NOT_UINT;
  if (bad(from) || bad(to) || (from !== UINT_BIG && to !== UINT_BIG && from > to) ||
      (!ackNil && bad(ack)) || bad(bn) || ncolls < 0 || norigins < 0 || nrecs < 0 || nhist < 0 ||
      nhist > DELTA_FP_MAX)
    fail("EBADVALUE", "malformed delta header");
  // sequences are numbers here (docs: far below 2^53); stricter than C
  if (from === UINT_BIG || to === UINT_BIG || ack === UINT_BIG)
    fail("EBADVALUE", "malformed delta header: a sequence beyond 2^53");
  const history: { seq: number; fp: Uint8Array }[] = [];
  for (let i = 0; i < nhist; i++) {
    if (arrayLen() !== 2) fail("EBADVALUE", "malformed history fingerprint");
    const seq = uint();
    if (seq === NOT_UINT || binLen() !== FP_BYTES) fail("EBADVALUE", "malformed history fingerprint");
    if (seq === UINT_BIG) fail("EBADVALUE", "malformed history fingerprint: a sequence beyond 2^53");
    history.push({ seq, fp: view(P, FP_BYTES) });
    P += FP_BYTES;
  }
  P = a[10]!;
  let recipient: ReplicaId | null = null;
  if (B[P] !== 0xc0) {
    // a bin of 32 bytes, in any bin width (msgpack-c's BIN)
    if (binLen() !== 32) fail("EBADVALUE", "the recipient is a 32-byte bin or nil");
    recipient = view(P, 32);
  }
  if (!ackNil && !recipient) fail("EBADVALUE", "an ack needs a recipient");
  P = a[6]!;
  arrayLen();
  const colls: string[] = new Array(ncolls);
  for (let i = 0; i < ncolls; i++) {
    const c = idStr(true);
    if (c === null) fail("EBADID", "invalid collection name in delta");
    colls[i] = c;
  }
  P = a[7]!;
  arrayLen();
  const origins: ReplicaId[] = new Array(norigins);
  for (let i = 0; i < norigins; i++) {
    if (binLen() !== 32) fail("EBADVALUE", "replica ids are 32-byte bins");
    origins[i] = view(P, 32);
    P += 32;
  }
  const maxGroups = lim.maxDeltaGroups || 65536;
  if (nrecs > maxGroups)
    fail("ETOOBIG", `delta holds ${nrecs} record groups, over the limit of ${maxGroups}`);
  P = a[8]!;
  arrayLen();
  const stamps = new Stamps(base);
  const records: DecodedRecord[] = new Array(nrecs);
  for (let i = 0; i < nrecs; i++) records[i] = parseRecord(colls, origins, stamps, lim);
  return { dbId, sender, from, to, ack: ackNil ? null : ack, records, history, recipient, maxHlc: stamps.max };
}

/** base + offset, refusing overflow; remembers the last offsets, since the
 *  fields of one write share a stamp, and the highest stamp read. */
class Stamps {
  private readonly room: bigint;
  private lastOff = -1;
  private last: Hlc = 0n;
  max: Hlc = 0n;
  constructor(readonly base: bigint) {
    this.room = U64_MAX - base;
  }
  /** The stamp at P (advancing), or -1n if it is not a uint or overflows. */
  read(): Hlc {
    const o = uint();
    if (o === NOT_UINT) return -1n;
    if (o === this.lastOff) return this.last;
    const off = o === UINT_BIG ? BIG : BigInt(o);
    if (off > this.room) return -1n;
    const s = this.base + off;
    if (s > this.max) this.max = s;
    if (o !== UINT_BIG) {
      this.lastOff = o;
      this.last = s;
    }
    return s;
  }
}

function parseRecord(colls: string[], origins: ReplicaId[], stamps: Stamps, lim: DeltaLimits): DecodedRecord {
  if (arrayLen() !== 4) fail("EBADVALUE", "a record is [coll, id, base, fields]");
  const c = uint();
  if (c < 0 || c >= colls.length) fail("EBADVALUE", "bad collection index");
  const id = idStr(false);
  if (id === null) fail("EBADID", "invalid record id");
  let base: DecodedRecord["base"] = null;
  if (B[P] === 0xc0) P++;
  else {
    const n = arrayLen();
    if (n < 0) fail("EBADVALUE", "bad record base");
    const kind = n === 3 ? uint() : NOT_UINT;
    if (kind !== ADD && kind !== REMOVE) fail("EBADVALUE", "bad record base");
    const hlc = stamps.read();
    if (hlc < 0n) fail("EBADVALUE", "bad record base");
    const o = uint();
    if (o < 0 || o >= origins.length) fail("EBADVALUE", "bad record base");
    base = { kind: kind as BaseKind, hlc, origin: origins[o]!, seq: 0, src: "" };
  }
  const nf = arrayLen();
  if (nf < 0) fail("EBADVALUE", "record fields must be an array");
  const fields: Leaf[] = new Array(nf);
  ORDERED = true;
  LAST = null;
  RBASE = base;
  for (let i = 0; i < nf; i++) fields[i] = parseField(origins, stamps, lim, i);
  return { coll: colls[c]!, id, base, fields, ordered: ORDERED };
}

/** parseRecord's order check as parseField goes: the last field's path, and
 *  whether the paths so far ascend strictly, none below another. */
let LAST: PathEntry | null = null;
let ORDERED = true;

/** The base of the record being parsed (short fields take its stamp), and
 *  whether the delta's version has short fields. */
let RBASE: DecodedRecord["base"] = null;
let SHORT_OK = true;

/** A field as a leaf of the replica (seq 0, src "": the shape it keeps):
 *  [path, hlc, origin, value?], or in version 2 when its record entry has
 *  a base, [path, value?] stamped as that base. */
function parseField(origins: ReplicaId[], stamps: Stamps, lim: DeltaLimits, i: number): Leaf {
  const size = arrayLen();
  if (size !== 3 && size !== 4 && !(SHORT_OK && RBASE !== null && (size === 1 || size === 2)))
    fail("EBADVALUE", `a field is [path, hlc, origin, value?]${SHORT_OK ? ", or [path, value?] under a base" : ""}`);
  // the path: a str, or an array of strs; the paths of a delta repeat, so
  // a checked path is remembered by its bytes: first as the path of field
  // i of the record before (records of one shape), else by their hash
  let e = i < RECENT_MAX ? recentAt(i, lim) : null;
  if (!e) {
    const p0 = P;
    e = pathCached(lim);
    if (!e) {
      P = p0;
      e = parsePath(p0, lim);
    }
    if (i < RECENT_MAX) RECENT[i] = e;
  }
  if (LAST !== null && LAST.next !== e && ORDERED) {
    // checked once for each pair of paths that follow each other
    if (comparePaths(LAST.path, e.path) < 0 && !isAncestor(LAST.path, e.path)) LAST.next = e;
    else ORDERED = false;
  }
  LAST = e;
  const path = e.path;
  const n = e.depth;
  let hlc: Hlc, origin: ReplicaId;
  if (size > 2) {
    hlc = stamps.read();
    const o = hlc < 0n ? NOT_UINT : uint();
    if (o < 0 || o >= origins.length) fail("EBADVALUE", "bad field stamp or origin");
    origin = origins[o]!;
  } else {
    hlc = RBASE!.hlc;
    origin = RBASE!.origin;
  }
  if (size === 3 || size === 1) {
    if (n + 1 > lim.maxDepth) fail("ETOODEEP", `field nested deeper than ${lim.maxDepth}`);
    return { path, hlc, origin, vbuf: null, voff: 0, vlen: 0, seq: 0, src: "" };
  }
  const vlen = binLen();
  if (vlen < 0) fail("EBADVALUE", "a field value is msgpack in bin");
  const vs = P;
  P += vlen;
  if (vlen) {
    const b0 = B[vs]!;
    // maps are never values: they travel as their leaves
    if ((b0 & 0xf0) === 0x80 || b0 === 0xde || b0 === 0xdf) fail("EBADVALUE", "a field value may not be a map");
  }
  if (vlen > lim.maxValueSize)
    fail("ETOOBIG", `field value of ${vlen} bytes exceeds the limit of ${lim.maxValueSize}`);
  if (!scalarFits(B, vs, vlen)) {
    const rc = mpCheck(B, vs, vs + vlen, lim.maxDepth - n);
    if (rc === MP_DEEP) fail("ETOODEEP", `field nested deeper than ${lim.maxDepth}`);
    if (rc !== MP_OK) fail("EBADVALUE", `field value: ${mpWhy}`);
  }
  return { path, hlc, origin, vbuf: B, voff: vs, vlen, seq: 0, src: "" };
}

interface PathEntry {
  /** The path's msgpack bytes (a private copy). */
  bytes: Uint8Array;
  path: readonly string[];
  depth: number;
  /** crdt/path.c encoded length. */
  plen: number;
  /** A path seen to sort right after this one (strictly after it, not
   *  below it), or null: the order check's memory (parseField). */
  next: PathEntry | null;
}

/** Field i's path in the last record parsed (the first RECENT_MAX fields). */
const RECENT_MAX = 32;
const RECENT: (PathEntry | null)[] = new Array<PathEntry | null>(RECENT_MAX).fill(null);

/** The path at P (advancing past it) if it is field i's of the record
 *  before, checked against lim; else null (P unmoved).  msgpack values are
 *  prefix-free: the same bytes are the same path, ending where they end. */
function recentAt(i: number, lim: DeltaLimits): PathEntry | null {
  const e = RECENT[i];
  if (!e) return null;
  const b = e.bytes, n = b.length;
  if (P + n > END) return null;
  for (let k = 0; k < n; k++) if (B[P + k] !== b[k]) return null;
  withinLimits(e, lim);
  P += n;
  return e;
}

/** Checked paths by a hash of their msgpack bytes (one entry a hash). */
const pathCache = new Map<number, PathEntry>();
const PATH_CACHE_MAX = 4096;
const PATH_CACHE_SPAN = 96;
/** Entries parsePath made since the remembered ones were last dropped. */
let pathsMade = 0;

/** The remembered path at P (advancing past it, checked against lim), or
 *  null (P undefined) when it is not remembered or not plainly strs. */
function pathCached(lim: DeltaLimits): PathEntry | null {
  const p0 = P;
  let n = 1;
  const pn = arrayLen();
  if (pn > 0) n = pn;
  else if (pn === 0) return null;
  for (let i = 0; i < n; i++) {
    const k = strLen();
    if (k < 0) return null;
    P += k;
    if (P - p0 > PATH_CACHE_SPAN) return null;
  }
  const end = P;
  let h = 0x811c9dc5;
  for (let i = p0; i < end; i++) h = Math.imul(h ^ B[i]!, 0x01000193);
  const e = pathCache.get(h);
  if (!e || e.bytes.length !== end - p0) return null;
  const b = e.bytes;
  for (let i = 0; i < b.length; i++) if (b[i] !== B[p0 + i]) return null;
  withinLimits(e, lim);
  return e;
}

/** A remembered path checked against this decode's limits (it was made
 *  under another's, perhaps): parsePath's checks, in its order. */
function withinLimits(e: PathEntry, lim: DeltaLimits): void {
  if (e.depth > lim.maxDepth) fail("ETOODEEP", `field path deeper than ${lim.maxDepth}`);
  if (e.plen > lim.maxPathBytes)
    fail("ETOOBIG", `field path of ${e.plen} bytes exceeds the limit of ${lim.maxPathBytes}`);
}

/** Decodes and checks the path at p0 (crdt/delta.c decode_path), and
 *  remembers it. */
function parsePath(p0: number, lim: DeltaLimits): PathEntry {
  let n = 1;
  const pn = arrayLen();
  if (pn >= 0) n = pn;
  if (n === 0) fail("EBADVALUE", "empty field path");
  if (n > lim.maxDepth) fail("ETOODEEP", `field path deeper than ${lim.maxDepth}`);
  const path: string[] = new Array(n);
  let plen = 0;
  for (let i = 0; i < n; i++) {
    const k = strLen();
    if (k < 0) fail("EBADVALUE", "field path keys must be UTF-8 strings");
    let zeros = 0;
    for (let j = P; j < P + k; j++) if (B[j] === 0) zeros++;
    const s = utf8(k);
    if (s === null) fail("EBADVALUE", "field path keys must be UTF-8 strings");
    path[i] = s;
    plen += k + zeros + 2;
  }
  if (plen > lim.maxPathBytes)
    fail("ETOOBIG", `field path of ${plen} bytes exceeds the limit of ${lim.maxPathBytes}`);
  // every PATH_CACHE_MAX entries made, cached or not (a long path is not;
  // a hash's second path replaces its first), the remembered ones are
  // dropped: the order check's `next` links only go from an entry to one
  // made since the last drop, so what they keep alive is two drops' worth
  if (++pathsMade > PATH_CACHE_MAX) {
    pathCache.clear();
    RECENT.fill(null);
    pathsMade = 1;
  }
  const e: PathEntry = { bytes: B.slice(p0, P), path: Object.freeze(path), depth: n, plen, next: null };
  if (P - p0 <= PATH_CACHE_SPAN) {
    let h = 0x811c9dc5;
    for (let i = p0; i < P; i++) h = Math.imul(h ^ B[i]!, 0x01000193);
    pathCache.set(h, e);
  }
  return e;
}

/** The common case, decided at once: a value that is one scalar filling
 *  exactly its bytes p[at, at + n) (what mpCheck would accept at any
 *  depth).  Stored records' values are checked with it too. */
export function scalarFits(p: Uint8Array, at: number, n: number): boolean {
  if (n === 0) return false;
  const b = p[at]!;
  if (b <= 0x7f || b >= 0xe0 || b === 0xc0 || b === 0xc2 || b === 0xc3) return n === 1;
  if ((b & 0xe0) === 0xa0) return n === 1 + (b & 0x1f);
  switch (b) {
    case 0xca: return n === 5;
    case 0xcb: return n === 9;
    case 0xcc: case 0xd0: return n === 2;
    case 0xcd: case 0xd1: return n === 3;
    case 0xce: case 0xd2: return n === 5;
    case 0xcf: case 0xd3: return n === 9;
    case 0xd9: case 0xc4: return n >= 2 && n === 2 + p[at + 1]!;
    case 0xda: case 0xc5: return n >= 3 && n === 3 + ((p[at + 1]! << 8) | p[at + 2]!);
    default: return false;
  }
}
