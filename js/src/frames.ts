/**
 * The session messages of docs/protocol.md ("Sessions: the sync protocol")
 * and their framing: a big-endian u32 length, then one msgpack array whose
 * first element is the message type.  Bytes as transport/session.c writes
 * them (smallest integer encodings; error codes as signed int32) and checks
 * as it accepts them (any integer width; a message at most 2 containers
 * deep; no trailing bytes).
 *
 * ALIASING: the Uint8Arrays in decoded messages (replicaId, delta, and a
 * presence's or message's key, replica, state and body) are views
 * of the bytes pushed into the FrameReader whenever a frame lies in one
 * chunk; push() takes those chunks over, so callers must not reuse them.
 */
import { CrdtdbError } from "./errors.js";
import { mpCheck, mpWhy, MpWriter, MP_DEEP, MP_OK, ID_MAX } from "./delta.js";

export const PROTO_VERSION = 1;
/** Sync modes: what a client asks for and a server grants. */
export const MODE_TWO_WAY = 1;
export const MODE_SERVER_TO_CLIENT = 2;

export const M_HELLO = 1;
export const M_SINCE = 2;
export const M_DELTA = 3;
export const M_ACK = 4;
export const M_UPTODATE = 5;
export const M_ERROR = 6;
export const M_CLOSE = 7;
export const M_SKIP = 8;
export const M_NOTICE = 9;
export const M_PURGE = 10;
export const M_REPLACE = 11;
export const M_PRESENCE_SET = 12;
export const M_PRESENCE = 13;
export const M_MESSAGE_SEND = 14;
export const M_MESSAGE = 15;
export const M_RESYNC = 16;

/** Presence and messages (docs/protocol.md, "Presence and messages"): a
 *  key is 16 bytes (the server's 8 random bytes, a connection number); a
 *  state or body at most PRESENCE_MAX bytes (the default max_presence)
 *  nested at most PRESENCE_DEPTH deep, the outermost container counting 1. */
export const PRESENCE_KEY_BYTES = 16;
export const PRESENCE_MAX = 1024;
export const PRESENCE_DEPTH = 16;

/** Sequences are numbers (they stay far below 2^53). */
export type Message =
  | { t: "hello"; version: number; dbId: string; replicaId: Uint8Array; mode: number }
  | { t: "since"; seq: number; maxBytes?: number }
  | { t: "delta"; delta: Uint8Array }
  /** [4, seq, mine]: `mine` where the acker's own log stood (collection);
   *  absent in the older [4, seq]. */
  | { t: "ack"; seq: number; mine?: number }
  | { t: "uptodate"; seq: number }
  | { t: "error"; code: number; message: string }
  | { t: "close" }
  | { t: "skip"; from: number; to: number }
  | { t: "notice"; code: number; message: string }
  | { t: "purge"; coll: string; id: string }
  | { t: "replace"; coll: string; id: string; upto: number; delta: Uint8Array | null }
  /** [12, state]: client to server; state one msgpack map, null to leave. */
  | { t: "presenceSet"; state: Uint8Array | null }
  /** [13, key, user, replica, version, state]: server to client; state null: a leave. */
  | { t: "presence"; key: Uint8Array; user: string; replica: Uint8Array; version: number; state: Uint8Array | null }
  /** [14, to, body]: client to server; to a user id, null for everyone. */
  | { t: "messageSend"; to: string | null; body: Uint8Array }
  /** [15, key, user, replica, n, to, body]: server to client. */
  | { t: "message"; key: Uint8Array; user: string; replica: Uint8Array; n: number; to: string | null; body: Uint8Array }
  /** [16, stamp]: "everything I hold follows from 0; once caught up, forget
   *  what it did not hold"; stamp the sender's horizon stamp (an HLC). */
  | { t: "resync"; stamp: bigint };

/** The msgpack array of a message, without the length prefix. */
export function encodeMessage(m: Message, w = new MpWriter(64)): Uint8Array {
  switch (m.t) {
    case "hello":
      if (m.replicaId.length !== 32) throw new CrdtdbError("EINVAL", "a replica id is 32 bytes");
      w.array(5);
      w.uint(M_HELLO);
      w.uint(m.version);
      w.str(m.dbId);
      w.bin(m.replicaId);
      w.uint(m.mode);
      break;
    case "since":
      w.array(m.maxBytes === undefined ? 2 : 3);
      w.uint(M_SINCE);
      w.uint(m.seq);
      if (m.maxBytes !== undefined) w.uint(m.maxBytes);
      break;
    case "delta":
      w.room(m.delta.length + 8);
      w.array(2);
      w.uint(M_DELTA);
      w.bin(m.delta);
      break;
    case "ack":
    case "uptodate":
      w.array(m.t === "ack" && m.mine !== undefined ? 3 : 2);
      w.uint(m.t === "ack" ? M_ACK : M_UPTODATE);
      w.uint(m.seq);
      if (m.t === "ack" && m.mine !== undefined) w.uint(m.mine);
      break;
    case "resync":
      w.array(2);
      w.uint(M_RESYNC);
      w.uint(m.stamp);
      break;
    case "error":
    case "notice":
      w.array(3);
      w.uint(m.t === "error" ? M_ERROR : M_NOTICE);
      w.int32(m.code);
      w.str(m.message);
      break;
    case "close":
      w.array(1);
      w.uint(M_CLOSE);
      break;
    case "skip":
      w.array(3);
      w.uint(M_SKIP);
      w.uint(m.from);
      w.uint(m.to);
      break;
    case "purge":
      w.array(3);
      w.uint(M_PURGE);
      w.str(m.coll);
      w.str(m.id);
      break;
    case "replace":
      if (m.delta) w.room(m.delta.length + 16);
      w.array(5);
      w.uint(M_REPLACE);
      w.str(m.coll);
      w.str(m.id);
      w.uint(m.upto);
      if (m.delta) w.bin(m.delta);
      else w.nil();
      break;
    case "presenceSet":
      if (m.state) w.room(m.state.length + 8);
      w.array(2);
      w.uint(M_PRESENCE_SET);
      if (m.state) w.bin(m.state);
      else w.nil();
      break;
    case "presence":
      presenceHead(w, m.key, m.user, m.replica, 6, M_PRESENCE, m.version, m.state ? m.state.length : 0);
      if (m.state) w.bin(m.state);
      else w.nil();
      break;
    case "messageSend":
      w.room(m.body.length + 300);
      w.array(3);
      w.uint(M_MESSAGE_SEND);
      if (m.to === null) w.nil();
      else w.str(m.to);
      w.bin(m.body);
      break;
    case "message":
      presenceHead(w, m.key, m.user, m.replica, 7, M_MESSAGE, m.n, m.body.length + 300);
      if (m.to === null) w.nil();
      else w.str(m.to);
      w.bin(m.body);
      break;
    default:
      throw new CrdtdbError("EINVAL", "unknown message");
  }
  return w.bytes();
}

/** The common head of [13, ...] and [15, ...]: type, key, user, replica, a uint. */
function presenceHead(w: MpWriter, key: Uint8Array, user: string, replica: Uint8Array, n: number, type: number, x: number, extra: number): void {
  if (key.length !== PRESENCE_KEY_BYTES) throw new CrdtdbError("EINVAL", `a presence key is ${PRESENCE_KEY_BYTES} bytes`);
  if (replica.length !== 32) throw new CrdtdbError("EINVAL", "a replica id is 32 bytes");
  w.room(extra + 340);
  w.array(n);
  w.uint(type);
  w.bin(key);
  w.str(user);
  w.bin(replica);
  w.uint(x);
}

/** One frame: u32 big-endian length, then the message's msgpack. */
export function encodeFrame(m: Message): Uint8Array {
  const w = new MpWriter(m.t === "delta" ? m.delta.length + 16 : m.t === "replace" && m.delta ? m.delta.length + 300 : 64);
  // (the presence messages make room for their payloads as they go)
  w.pos = 4; // the length goes here
  encodeMessage(m, w);
  const n = w.pos - 4;
  const b = w.buf;
  b[0] = n >>> 24;
  b[1] = (n >>> 16) & 0xff;
  b[2] = (n >>> 8) & 0xff;
  b[3] = n & 0xff;
  return w.bytes();
}

// ---------------------------------------------------------------- decode

const tdFatal = new TextDecoder("utf-8", { fatal: true });
const tdLoose = new TextDecoder("utf-8");

type Obj =
  | { k: "uint"; v: number } // a value >= 0 in any integer format (msgpack-c's POSITIVE_INTEGER)
  | { k: "neg"; v: number }
  | { k: "str"; v: Uint8Array }
  | { k: "bin"; v: Uint8Array }
  | { k: "nil" }
  | { k: "other" };

/** Reads one element at b[at] (already checked by mpCheck); returns it and
 *  where the next begins. */
function element(b: Uint8Array, at: number): [Obj, number] {
  const x = b[at]!;
  const u = (w: number, o: number) => {
    let v = 0;
    for (let i = 0; i < w; i++) v = v * 256 + b[o + i]!;
    return v;
  };
  if (x <= 0x7f) return [{ k: "uint", v: x }, at + 1];
  if (x >= 0xe0) return [{ k: "neg", v: x - 256 }, at + 1];
  if ((x & 0xe0) === 0xa0) return [{ k: "str", v: viewOf(b, at + 1, at + 1 + (x & 0x1f)) }, at + 1 + (x & 0x1f)];
  switch (x) {
    case 0xc0:
      return [{ k: "nil" }, at + 1];
    case 0xcc: case 0xcd: case 0xce: case 0xcf: {
      const w = 1 << (x - 0xcc);
      return [{ k: "uint", v: u(w, at + 1) }, at + 1 + w];
    }
    case 0xd0: case 0xd1: case 0xd2: case 0xd3: {
      const w = 1 << (x - 0xd0);
      let v = u(w, at + 1);
      if (b[at + 1]! & 0x80) return [{ k: "neg", v: v - 2 ** (8 * w) }, at + 1 + w];
      return [{ k: "uint", v }, at + 1 + w];
    }
    case 0xd9: case 0xda: case 0xdb: case 0xc4: case 0xc5: case 0xc6: {
      const w = 1 << (x >= 0xd9 ? x - 0xd9 : x - 0xc4);
      const n = u(w, at + 1);
      const s = at + 1 + w;
      return [{ k: x >= 0xd9 ? "str" : "bin", v: viewOf(b, s, s + n) }, s + n];
    }
  }
  return [{ k: "other" }, -1]; // containers, floats, bools, ext: nothing reads past them
}

function bad(message: string): never {
  throw new CrdtdbError("EBADVALUE", message);
}

/** The uint at b[at] (checked by element) as a bigint: stamps exceed 2^53. */
function uintBig(b: Uint8Array, at: number): bigint {
  const x = b[at]!;
  if (x <= 0x7f) return BigInt(x);
  const w = x >= 0xd0 ? 1 << (x - 0xd0) : 1 << (x - 0xcc); // a non-negative int of any width
  let v = 0n;
  for (let i = 0; i < w; i++) v = (v << 8n) | BigInt(b[at + 1 + i]!);
  return v;
}

/** A sequence number: a uint up to 2^53-1. */
function seqOf(o: Obj, what: string): number {
  if (o.k !== "uint") bad(`malformed ${what} message`);
  if (!Number.isSafeInteger(o.v)) bad(`a sequence beyond 2^53 in a ${what} message`);
  return o.v;
}

/** A record name of a purge or replace: a str of at most 255 bytes of UTF-8. */
function nameOf(o: Obj, what: string): string {
  if (o.k !== "str" || o.v.length > ID_MAX) bad(`malformed ${what} message`);
  try {
    return tdFatal.decode(o.v);
  } catch {
    bad(`malformed ${what} message`);
  }
}

/** The key, user and replica of a [13, ...] or [15, ...]. */
function presenceFrom(a: Obj[], what: string): [Uint8Array, string, Uint8Array] {
  const key = a[1]!;
  const replica = a[3]!;
  if (key.k !== "bin" || key.v.length !== PRESENCE_KEY_BYTES || replica.k !== "bin" || replica.v.length !== 32)
    bad(`malformed ${what} message`);
  // a user is a token's sub: any str of at most 255 bytes ("" without tokens)
  return [key.v, nameOf(a[2]!, what), replica.v];
}

/** The message in one frame's bytes (without the length prefix), checked as
 *  transport/session.c checks it.  Throws CrdtdbError EBADVALUE (EVERSION
 *  is the session's to raise, on a hello of another version). */
export function decodeMessage(p: Uint8Array): Message {
  if (mpCheck(p, 0, p.length, 2) !== MP_OK) bad(`malformed message: ${mpWhy}`);
  // an array whose first element is a uint type
  let n: number;
  let at: number;
  const h = p[0]!;
  if ((h & 0xf0) === 0x90) {
    n = h & 0x0f;
    at = 1;
  } else if (h === 0xdc) {
    n = (p[1]! << 8) | p[2]!;
    at = 3;
  } else if (h === 0xdd) {
    n = ((p[1]! << 24) | (p[2]! << 16) | (p[3]! << 8) | p[4]!) >>> 0;
    at = 5;
  } else bad("malformed message");
  if (n < 1) bad("malformed message");
  // the elements (at most a few are read; the rest only need to exist)
  const a: Obj[] = [];
  const starts: number[] = [];
  for (let i = 0; i < n && i < 7; i++) {
    const [o, next] = element(p, at);
    a.push(o);
    starts.push(at);
    if (next < 0) {
      for (let j = i + 1; j < n && j < 7; j++) a.push({ k: "other" });
      break;
    }
    at = next;
  }
  const t = a[0]!;
  if (t.k !== "uint") bad("malformed message");
  switch (t.v) {
    case M_HELLO: {
      const [, ver, db, id, mode] = a;
      if (n !== 5 || ver!.k !== "uint" || db!.k !== "str" || id!.k !== "bin" || id!.v.length !== 32 ||
          mode!.k !== "uint")
        bad("malformed hello");
      let dbId: string;
      try {
        dbId = tdFatal.decode(db!.v);
      } catch {
        bad("malformed hello");
      }
      return { t: "hello", version: ver!.v, dbId, replicaId: id!.v, mode: mode!.v };
    }
    case M_ERROR:
    case M_NOTICE: {
      // either part may be missing or malformed (session.c remote_error)
      const c = a[1];
      const code = n >= 2 && (c!.k === "uint" || c!.k === "neg") ? c!.v | 0 : -3; // EIO
      const m = a[2];
      const message = n >= 3 && m!.k === "str" ? tdLoose.decode(m!.v) : "";
      return { t: t.v === M_ERROR ? "error" : "notice", code, message };
    }
    case M_CLOSE:
      return { t: "close" };
    case M_PURGE:
      if (n !== 3) bad("malformed purge message");
      return { t: "purge", coll: nameOf(a[1]!, "purge"), id: nameOf(a[2]!, "purge") };
    case M_REPLACE: {
      if (n !== 5) bad("malformed replace message");
      const coll = nameOf(a[1]!, "replace");
      const id = nameOf(a[2]!, "replace");
      const upto = seqOf(a[3]!, "replace");
      const d = a[4]!;
      if (d.k !== "bin" && d.k !== "nil") bad("malformed replace message");
      return { t: "replace", coll, id, upto, delta: d.k === "bin" ? d.v : null };
    }
    case M_DELTA:
      if (n !== 2 || a[1]!.k !== "bin") bad("malformed delta message");
      return { t: "delta", delta: (a[1] as { v: Uint8Array }).v };
    case M_SKIP: {
      if (n !== 3) bad("malformed skip message");
      const from = seqOf(a[1]!, "skip");
      const to = seqOf(a[2]!, "skip");
      if (to < from) bad("malformed skip message");
      return { t: "skip", from, to };
    }
    case M_SINCE:
    case M_ACK:
    case M_UPTODATE: {
      // SINCE may carry max_bytes (>= 1), ACK `mine` (collection)
      const hinted = (t.v === M_SINCE || t.v === M_ACK) && n === 3;
      const what = t.v === M_SINCE ? "since" : t.v === M_ACK ? "ack" : "uptodate";
      if ((n !== 2 && !hinted) || a[1]!.k !== "uint" ||
          (hinted && (a[2]!.k !== "uint" || (t.v === M_SINCE && a[2]!.v === 0))))
        bad(`malformed message ${t.v}`);
      const seq = seqOf(a[1]!, what);
      if (t.v === M_SINCE)
        return hinted ? { t: "since", seq, maxBytes: (a[2] as { v: number }).v } : { t: "since", seq };
      // a client keeps no stability marks: `mine` is any uint (as session.c
      // takes it), kept when it fits a number
      if (t.v === M_ACK && hinted) {
        const mine = (a[2] as { v: number }).v;
        return Number.isSafeInteger(mine) ? { t: "ack", seq, mine } : { t: "ack", seq };
      }
      return { t: what as "ack" | "uptodate", seq };
    }
    case M_RESYNC:
      if (n !== 2 || a[1]!.k !== "uint") bad("malformed resync message");
      return { t: "resync", stamp: uintBig(p, starts[1]!) };
    case M_PRESENCE_SET: {
      const st = a[1];
      if (n !== 2 || (st!.k !== "bin" && st!.k !== "nil")) bad("malformed presence set message");
      return { t: "presenceSet", state: st!.k === "bin" ? st!.v : null };
    }
    case M_MESSAGE_SEND: {
      if (n !== 3 || a[2]!.k !== "bin") bad("malformed message send");
      const to = a[1]!.k === "nil" ? null : nameOf(a[1]!, "message send");
      if (to === "") bad("malformed message send"); // a user id is never empty
      return { t: "messageSend", to, body: (a[2] as { v: Uint8Array }).v };
    }
    case M_PRESENCE: {
      if (n !== 6) bad("malformed presence message");
      const [key, user, replica] = presenceFrom(a, "presence");
      const version = a[4]!;
      const st = a[5]!;
      if (version.k !== "uint" || version.v < 1 || (st.k !== "bin" && st.k !== "nil")) bad("malformed presence message");
      return { t: "presence", key, user, replica, version: version.v, state: st.k === "bin" ? st.v : null };
    }
    case M_MESSAGE: {
      if (n !== 7) bad("malformed message");
      const [key, user, replica] = presenceFrom(a, "message");
      const cnt = a[4]!;
      const body = a[6]!;
      if (cnt.k !== "uint" || cnt.v < 1 || body.k !== "bin") bad("malformed message");
      const to = a[5]!.k === "nil" ? null : nameOf(a[5]!, "message");
      if (to === "") bad("malformed message");
      return { t: "message", key, user, replica, n: cnt.v, to, body: body.v };
    }
    default:
      bad(`unknown message type ${t.v}`);
  }
}

/**
 * Why a presence state (`map`) or a message body is refused, or null if it
 * is fine: at most `max` bytes, exactly one msgpack value nested at most
 * PRESENCE_DEPTH deep whose map keys are all str, and for a state a map.
 * The error is what the NOTICE for it says (docs/protocol.md, "Validity").
 */
export function presencePayloadError(p: Uint8Array, map: boolean, max = PRESENCE_MAX): CrdtdbError | null {
  const what = map ? "presence state" : "message body";
  if (p.length > max) return new CrdtdbError("ETOOBIG", `a ${what} of ${p.length} bytes exceeds the limit of ${max}`);
  const r = mpCheck(p, 0, p.length, PRESENCE_DEPTH);
  if (r === MP_DEEP) return new CrdtdbError("ETOODEEP", `a ${what} nested deeper than ${PRESENCE_DEPTH}`);
  if (r !== MP_OK) return new CrdtdbError("EBADVALUE", `a ${what}: ${mpWhy}`);
  const h = p[0]!;
  if (map && (h & 0xf0) !== 0x80 && h !== 0xde && h !== 0xdf) return new CrdtdbError("EBADVALUE", "a presence state must be one msgpack map");
  if (!strKeys(p)) return new CrdtdbError("EBADVALUE", `a ${what} has a map key that is not a str`);
  return null;
}

/** True if every map key in p (one value, already checked by mpCheck) is a
 *  str.  Iterative: a stack of (elements left, is a map) per open container. */
function strKeys(p: Uint8Array): boolean {
  const left: number[] = [1];
  const isMap: boolean[] = [false];
  let at = 0;
  while (left.length) {
    const d = left.length - 1;
    if (left[d] === 0) {
      left.pop();
      isMap.pop();
      continue;
    }
    const key = isMap[d]! && left[d]! % 2 === 0;
    left[d]!--;
    const b = p[at]!;
    if (key && (b & 0xe0) !== 0xa0 && b !== 0xd9 && b !== 0xda && b !== 0xdb) return false;
    const [n, m, next] = skipHead(p, at);
    at = next;
    if (n >= 0) {
      left.push(m ? 2 * n : n);
      isMap.push(m);
    }
  }
  return true;
}

/** The element at p[at]: for a container its element count and whether it
 *  is a map, with the offset of its first element; for a scalar -1 and the
 *  offset after it. */
function skipHead(p: Uint8Array, at: number): [number, boolean, number] {
  const b = p[at]!;
  if ((b & 0xf0) === 0x80) return [b & 0x0f, true, at + 1];
  if ((b & 0xf0) === 0x90) return [b & 0x0f, false, at + 1];
  if ((b & 0xe0) === 0xa0) return [-1, false, at + 1 + (b & 0x1f)];
  if (b <= 0x7f || b >= 0xe0 || b === 0xc0 || b === 0xc2 || b === 0xc3) return [-1, false, at + 1];
  const u = (w: number) => {
    let v = 0;
    for (let i = 0; i < w; i++) v = v * 256 + p[at + 1 + i]!;
    return v;
  };
  switch (b) {
    case 0xc4: case 0xc5: case 0xc6: case 0xd9: case 0xda: case 0xdb: {
      const w = 1 << (b >= 0xd9 ? b - 0xd9 : b - 0xc4);
      return [-1, false, at + 1 + w + u(w)];
    }
    case 0xc7: case 0xc8: case 0xc9: {
      const w = 1 << (b - 0xc7);
      return [-1, false, at + 2 + w + u(w)];
    }
    case 0xca: return [-1, false, at + 5];
    case 0xcb: return [-1, false, at + 9];
    case 0xcc: case 0xcd: case 0xce: case 0xcf: return [-1, false, at + 1 + (1 << (b - 0xcc))];
    case 0xd0: case 0xd1: case 0xd2: case 0xd3: return [-1, false, at + 1 + (1 << (b - 0xd0))];
    case 0xd4: case 0xd5: case 0xd6: case 0xd7: case 0xd8: return [-1, false, at + 2 + (1 << (b - 0xd4))];
    case 0xdc: return [u(2), false, at + 3];
    case 0xdd: return [u(4), false, at + 5];
    case 0xde: return [u(2), true, at + 3];
    default: return [u(4), true, at + 5]; // 0xdf (mpCheck refused 0xc1)
  }
}

/**
 * Splits a byte stream into messages.  Chunks may hold parts of frames or
 * several frames; each byte is copied at most once (a frame lying in one
 * chunk is decoded in place, one spanning chunks is gathered into its own
 * buffer).  next() throws CrdtdbError ETOOBIG for a frame longer than
 * maxMessage (and keeps throwing it: the session must end) and EBADVALUE
 * for a malformed message (that frame is consumed).
 */
export class FrameReader {
  private chunks: Uint8Array[] = [];
  private head = 0; // index of the first chunk still holding bytes
  private off = 0; // bytes of chunks[head] already consumed
  private avail = 0;
  private failed: CrdtdbError | null = null;

  constructor(readonly maxMessage: number) {}

  /** Bytes received and not yet consumed. */
  get buffered(): number {
    return this.avail;
  }

  push(chunk: Uint8Array): void {
    if (!chunk.length) return;
    this.chunks.push(chunk);
    this.avail += chunk.length;
  }

  /** The next complete message, or null until more bytes arrive. */
  next(): Message | null {
    if (this.failed) throw this.failed;
    const body = this.nextFrame();
    return body ? decodeMessage(body) : null;
  }

  /** The next complete frame's message bytes (no length prefix), or null. */
  nextFrame(): Uint8Array | null {
    if (this.failed) throw this.failed;
    if (this.avail < 4) return null;
    const n = this.peekLength();
    if (n > this.maxMessage) {
      this.failed = new CrdtdbError("ETOOBIG", `a message of ${n} bytes exceeds the limit of ${this.maxMessage}`);
      throw this.failed;
    }
    if (this.avail - 4 < n) return null;
    this.skip(4);
    return this.take(n);
  }

  private peekLength(): number {
    let v = 0;
    let c = this.head;
    let o = this.off;
    for (let i = 0; i < 4; i++) {
      while (o >= this.chunks[c]!.length) {
        c++;
        o = 0;
      }
      v = v * 256 + this.chunks[c]![o++]!;
    }
    return v;
  }

  private skip(n: number): void {
    this.avail -= n;
    while (n > 0) {
      const c = this.chunks[this.head]!;
      const left = c.length - this.off;
      if (n < left) {
        this.off += n;
        return;
      }
      n -= left;
      this.drop();
    }
  }

  private drop(): void {
    this.chunks[this.head] = EMPTY; // let it be collected
    this.head++;
    this.off = 0;
    if (this.head === this.chunks.length) {
      this.chunks.length = 0;
      this.head = 0;
    } else if (this.head >= 64 && this.head * 2 >= this.chunks.length) {
      this.chunks = this.chunks.slice(this.head);
      this.head = 0;
    }
  }

  private take(n: number): Uint8Array {
    this.avail -= n;
    if (n === 0) return EMPTY;
    const c = this.chunks[this.head]!;
    if (c.length - this.off >= n) {
      const v = viewOf(c, this.off, this.off + n);
      this.off += n;
      if (this.off === c.length) this.drop();
      return v;
    }
    const out = new Uint8Array(n);
    let got = 0;
    while (got < n) {
      const h = this.chunks[this.head]!;
      const k = Math.min(h.length - this.off, n - got);
      out.set(h.subarray(this.off, this.off + k), got);
      got += k;
      this.off += k;
      if (this.off === h.length) this.drop();
    }
    return out;
  }
}

const EMPTY = new Uint8Array(0);

/** b[start, end) as a view: the Uint8Array constructor, cheaper than
 *  subarray (which looks up the species constructor), for a view per
 *  message received. */
function viewOf(b: Uint8Array, start: number, end: number): Uint8Array {
  return new Uint8Array(b.buffer, b.byteOffset + start, end - start);
}
