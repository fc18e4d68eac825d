/**
 * Query criteria, with the C library's forms and semantics (crdt/query.c,
 * crdt/value.c crdtdb__value_cmp):
 *
 * - an equality map, {field: value, ...}: a nested non-empty map names
 *   nested fields ({pos: {x: 1}} is pos.x == 1); an empty map is a value;
 * - a list of [field, op, value] conditions, ANDed.  A field is a string,
 *   split on every "." into nested names ("pos.x"), or an array of literal
 *   names (["a.b"] is the one key "a.b").  Ops: = == != < <= > >=, "=" the
 *   same as "==";
 * - undefined criteria: every record (null is refused, as C refuses nil).
 *
 * Matching: numbers compare numerically across ints, floats and bigints;
 * strings bytewise (UTF-8); timestamps (Dates, and ext -1 values a Date
 * cannot hold exactly) by the instant they hold, to the nanosecond; null,
 * booleans, binary, other extensions, arrays and maps only for (deep)
 * equality; different types never match (no coercion: "5" == 5 is false,
 * and a Date orders against no number).  Ordering ops hold only between
 * two numbers, two strings or two timestamps; NaN equals and orders
 * nothing, and an invalid Date equals nothing.  "!=" is the
 * negation of "==", so a field of another type differs; a missing field
 * matches only "!=" of a non-null value (missing is no different from
 * null), and no other op.
 *
 * The criteria are first normalized as C receives them, through msgpack
 * (undefined keys dropped, undefined array elements null); what cannot be
 * encoded is EBADQUERY.  Elemento's DataStore criteria (a plain object of
 * top-level equalities, or [name, op, value] triples) work unchanged, with
 * one difference: a dotted name in a triple names a nested field here.
 */

import { CrdtdbError } from "./errors.js";
import { compareBytes, compareIds } from "./path.js";
import type { DataObject, Value } from "./types.js";
import { DEFAULT_LIMITS, Ext, decodeValue, encodeValue, type Limits } from "./value.js";

const LT = -1;
const EQ = 0;
const GT = 1;
const NE = 2; // comparable for equality only, not equal
const MISMATCH = 3; // different types: never matches

type Op = "==" | "!=" | "<" | "<=" | ">" | ">=";

export interface Cond {
  path: string[];
  op: Op;
  value: Value;
}

const OPS: Record<string, Op> = { "==": "==", "=": "==", "!=": "!=", "<": "<", "<=": "<=", ">": ">", ">=": ">=" };

function isMap(v: unknown): v is DataObject {
  if (typeof v !== "object" || v === null) return false;
  if (Array.isArray(v) || v instanceof Uint8Array || v instanceof Date || v instanceof Ext) return false;
  return true;
}

function isNum(v: unknown): v is number | bigint {
  return typeof v === "number" || typeof v === "bigint";
}

/** Ext view of Date and Ext values (both are msgpack extensions). */
function extBytes(v: Date | Ext): Uint8Array {
  return v instanceof Ext ? encodeValue(v as unknown as Value) : encodeValue(v);
}

/** A timestamp's seconds since the epoch and nanoseconds: a Date's, or an
 *  ext -1's of 4, 8 or 12 bytes (crdt/value.c timestamp); null for an
 *  invalid Date, another ext, or nanoseconds out of range. */
function stampOf(v: Date | Ext): [bigint, number] | null {
  if (v instanceof Date) {
    const ms = v.getTime();
    if (Number.isNaN(ms)) return null;
    const s = Math.floor(ms / 1000);
    return [BigInt(s), (ms - s * 1000) * 1e6];
  }
  if (v.type !== -1) return null;
  const d = v.data, dv = new DataView(d.buffer, d.byteOffset, d.byteLength);
  if (d.length === 4) return [BigInt(dv.getUint32(0)), 0];
  if (d.length === 8) {
    const hi = dv.getUint32(0), ns = hi >>> 2;
    return ns < 1e9 ? [BigInt(hi & 3) * 0x100000000n + BigInt(dv.getUint32(4)), ns] : null;
  }
  if (d.length === 12) {
    const ns = dv.getUint32(0);
    return ns < 1e9 ? [dv.getBigInt64(4), ns] : null;
  }
  return null;
}

function isStamp(v: Value): boolean {
  return (v instanceof Date || v instanceof Ext) && stampOf(v) !== null;
}

function numCmp(a: number | bigint, b: number | bigint): number {
  if (typeof a === "number" && Number.isNaN(a)) return NE;
  if (typeof b === "number" && Number.isNaN(b)) return NE;
  // JS compares bigint with number exactly
  return a < b ? LT : a > b ? GT : EQ;
}

/** crdtdb__value_cmp over decoded values. */
export function valueCmp(a: Value, b: Value): number {
  if (isNum(a) && isNum(b)) return numCmp(a, b);
  if (typeof a === "string") return typeof b === "string" ? Math.sign(compareIds(a, b)) : MISMATCH;
  if (typeof a === "boolean") return typeof b === "boolean" ? (a === b ? EQ : NE) : MISMATCH;
  if (a === null) return b === null ? EQ : MISMATCH;
  if (typeof a !== "object" || typeof b !== "object" || b === null) return MISMATCH;
  if (a instanceof Uint8Array)
    return b instanceof Uint8Array ? (compareBytes(a, b) === 0 ? EQ : NE) : MISMATCH;
  if (a instanceof Date || a instanceof Ext) {
    if (!(b instanceof Date || b instanceof Ext)) return MISMATCH;
    const x = stampOf(a), y = stampOf(b);
    if (x && y) return x[0] !== y[0] ? (x[0] < y[0] ? LT : GT) : x[1] !== y[1] ? (x[1] < y[1] ? LT : GT) : EQ;
    if (a instanceof Date || b instanceof Date) return NE; // an invalid Date, or a Date against another ext
    return compareBytes(extBytes(a), extBytes(b)) === 0 ? EQ : NE;
  }
  if (Array.isArray(a)) {
    if (!Array.isArray(b)) return MISMATCH;
    if (a.length !== b.length) return NE;
    for (let i = 0; i < a.length; i++) if (valueCmp(a[i]!, b[i]!) !== EQ) return NE;
    return EQ;
  }
  if (!isMap(b)) return MISMATCH;
  const ka = Object.keys(a);
  if (ka.length !== Object.keys(b).length) return NE;
  for (const k of ka) {
    if (!Object.prototype.hasOwnProperty.call(b, k)) return NE;
    if (valueCmp((a as DataObject)[k]!, b[k]!) !== EQ) return NE;
  }
  return EQ;
}

function holds(c: Cond, rec: DataObject): boolean {
  let v: Value | undefined = rec;
  for (let i = 0; i < c.path.length && v !== undefined; i++) {
    const k = c.path[i]!;
    v = isMap(v) && Object.prototype.hasOwnProperty.call(v, k) ? v[k] : undefined;
  }
  if (v === undefined) return c.op === "!=" && c.value !== null;
  const r = valueCmp(v, c.value);
  if (r === MISMATCH) return c.op === "!=";
  const ord = r !== NE && (isNum(v) || typeof v === "string" || isStamp(v));
  switch (c.op) {
    case "==":
      return r === EQ;
    case "!=":
      return r !== EQ;
    case "<":
      return ord && r === LT;
    case "<=":
      return ord && r <= EQ;
    case ">":
      return ord && r === GT;
    default:
      return ord && (r === EQ || r === GT);
  }
}

function bad(msg: string): CrdtdbError {
  return new CrdtdbError("EBADQUERY", msg);
}

function parseEq(m: DataObject, path: string[], out: Cond[]): void {
  for (const k of Object.keys(m)) {
    if (path.length >= 32) throw new CrdtdbError("ETOODEEP", "query nested too deeply");
    const here = path.concat(k);
    const v = m[k]!;
    if (isMap(v) && Object.keys(v).length > 0) parseEq(v, here, out);
    else out.push({ path: here, op: "==", value: v });
  }
}

function parseField(f: Value): string[] {
  if (typeof f === "string") {
    if (f === "") throw bad("empty field name");
    return f.split(".");
  }
  if (Array.isArray(f) && f.length > 0) {
    for (const s of f) if (typeof s !== "string") throw bad("field path elements must be strings");
    return f as string[];
  }
  throw bad("a field is a string or an array of strings");
}

/** The criteria's conditions (exported for tests and for callers that
 *  want to inspect them). */
export function parseCriteria(criteria: unknown, limits: Limits = DEFAULT_LIMITS): Cond[] {
  if (criteria === undefined) return [];
  let c: Value;
  try {
    const bytes = encodeValue(criteria as Value, limits.maxDepth);
    if (bytes.length > limits.maxValueSize)
      throw new CrdtdbError("ETOOBIG", `value of ${bytes.length} bytes exceeds the limit of ${limits.maxValueSize}`);
    c = decodeValue(bytes);
  } catch (e) {
    if (e instanceof CrdtdbError && e.code === "EBADVALUE") throw bad(e.message);
    throw e;
  }
  const out: Cond[] = [];
  if (isMap(c)) {
    parseEq(c, [], out);
    return out;
  }
  if (!Array.isArray(c)) throw bad("criteria must be a map or an array of [field, op, value] conditions");
  for (let i = 0; i < c.length; i++) {
    const t = c[i]!;
    if (!Array.isArray(t) || t.length !== 3) throw bad(`condition ${i} is not [field, op, value]`);
    const op = typeof t[1] === "string" && Object.prototype.hasOwnProperty.call(OPS, t[1]) ? OPS[t[1]] : undefined;
    if (!op) throw bad(`condition ${i}: unknown operator (use = == != < <= > >=)`);
    out.push({ path: parseField(t[0]!), op, value: t[2]! });
  }
  return out;
}

/**
 * Compiles criteria into a predicate over rendered records (with or without
 * their id field).  Throws CrdtdbError EBADQUERY (ETOODEEP, ETOOBIG for
 * criteria past the limits) with the C library's messages.
 */
export function compileQuery(criteria: unknown, limits: Limits = DEFAULT_LIMITS): (rec: DataObject) => boolean {
  const conds = parseCriteria(criteria, limits);
  if (conds.length === 0) return () => true;
  if (conds.length === 1) {
    const c = conds[0]!;
    return (rec) => holds(c, rec);
  }
  return (rec) => {
    for (const c of conds) if (!holds(c, rec)) return false;
    return true;
  };
}
