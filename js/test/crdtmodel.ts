/**
 * Test helpers for the convergence test: a reference model of docs/crdt.md
 * written straight from that page (no code of src/record.ts), a canonical
 * form for comparing records read from JS (numbers, bigint) with records
 * printed by the `crdtdb` command (JSON with int64 literals and 2.0 floats),
 * and a JSON parser that keeps integer literals exact.
 */
import { decodeValue } from "../src/value.js";
import type { Value } from "../src/types.js";

/** One register write, as the model sees it.  path null = the base. */
export interface Reg {
  coll: string;
  id: string;
  path: string[] | null;
  /** base only: 1 add, 2 remove */
  kind?: 1 | 2;
  hlc: bigint;
  /** the writer's replica id, lowercase hex (hex order = bytewise order) */
  origin: string;
  /** leaves only: msgpack of the value as hex, or null for a map leaf */
  value?: string | null;
}

/** (hlc, origin) order: hlc, then the full 32-byte key bytewise. */
export function cmpStamp(a: { hlc: bigint; origin: string }, b: { hlc: bigint; origin: string }): number {
  if (a.hlc !== b.hlc) return a.hlc < b.hlc ? -1 : 1;
  return a.origin < b.origin ? -1 : a.origin > b.origin ? 1 : 0;
}

const regKey = (r: Reg): string => `${r.coll}\u0000${r.id}\u0000${r.path ? JSON.stringify(r.path) : "#base"}`;

/** A register's identity and content as a string (for set comparisons). */
export function regString(r: Reg): string {
  const what = r.path ? `${JSON.stringify(r.path)}=${r.value === null ? "{}" : r.value}` : `#base=${r.kind === 1 ? "add" : "remove"}`;
  return `${r.coll}/${r.id} ${what} @${r.hlc}:${r.origin.slice(0, 16)}`;
}

function isAncestor(a: string[], b: string[]): boolean {
  if (a.length >= b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/**
 * The rules of docs/crdt.md over a set of register writes: each register
 * keeps its greatest stamp (an equal stamp with another value is
 * equivocation); a record is visible iff its base is an add; a leaf older
 * than the base, or older than a leaf at an ancestor path, is dead; a value
 * leaf with a live leaf below reads as a map; an empty map is a map leaf.
 */
export class Model {
  private regs = new Map<string, Reg>();

  write(r: Reg): void {
    const k = regKey(r);
    const cur = this.regs.get(k);
    if (!cur) { this.regs.set(k, r); return; }
    const c = cmpStamp(r, cur);
    if (c > 0) this.regs.set(k, r);
    else if (c === 0 && (cur.kind !== r.kind || cur.value !== r.value))
      throw new Error(`model: two values under one stamp: ${regString(cur)} / ${regString(r)}`);
  }

  /** Every live register (dead ones are what replicas drop), as strings, sorted. */
  liveRegisters(): string[] {
    const out: string[] = [];
    for (const recs of this.byRecord().values()) {
      const { base, leaves } = this.liveOf(recs);
      if (base) out.push(regString(base));
      for (const l of leaves) out.push(regString(l));
    }
    return out.sort();
  }

  /** The visible records of a collection, by id, as plain values (leaf values decoded). */
  visible(coll: string): Map<string, Record<string, Value>> {
    const out = new Map<string, Record<string, Value>>();
    for (const [key, recs] of this.byRecord()) {
      const [c, id] = key.split("\u0000") as [string, string];
      if (c !== coll) continue;
      const { base, leaves } = this.liveOf(recs);
      if (!base || base.kind !== 1) continue;
      out.set(id, render(leaves));
    }
    return out;
  }

  private byRecord(): Map<string, Reg[]> {
    const m = new Map<string, Reg[]>();
    for (const r of this.regs.values()) {
      const k = `${r.coll}\u0000${r.id}`;
      let l = m.get(k);
      if (!l) m.set(k, (l = []));
      l.push(r);
    }
    return m;
  }

  private liveOf(recs: Reg[]): { base: Reg | null; leaves: Reg[] } {
    const base = recs.find((r) => r.path === null) ?? null;
    const all = recs.filter((r) => r.path !== null);
    const leaves = all.filter((l) =>
      (!base || cmpStamp(l, base) >= 0) &&
      !all.some((a) => isAncestor(a.path!, l.path!) && cmpStamp(a, l) > 0));
    return { base, leaves };
  }
}

/** The tree of live leaves (rule 4: a value leaf with a live leaf below is a map). */
function render(leaves: Reg[]): Record<string, Value> {
  const sorted = [...leaves].sort((a, b) => a.path!.length - b.path!.length);
  const root: Record<string, Value> = {};
  for (const l of sorted) {
    const p = l.path!;
    let node = root;
    for (let i = 0; i < p.length - 1; i++) {
      const k = p[i]!;
      const v = node[k];
      if (typeof v !== "object" || v === null || Array.isArray(v) || v instanceof Uint8Array || v instanceof Date) node[k] = {};
      node = node[k] as Record<string, Value>;
    }
    const last = p[p.length - 1]!;
    const below = leaves.some((d) => isAncestor(p, d.path!));
    if (l.value === null || l.value === undefined || below) {
      const v = node[last];
      if (typeof v !== "object" || v === null || Array.isArray(v)) node[last] = {};
    } else node[last] = decodeValue(fromHexStr(l.value));
  }
  return root;
}

export function toHexStr(b: Uint8Array): string {
  let s = "";
  for (const x of b) s += x.toString(16).padStart(2, "0");
  return s;
}

export function fromHexStr(h: string): Uint8Array {
  const b = new Uint8Array(h.length / 2);
  for (let i = 0; i < b.length; i++) b[i] = parseInt(h.slice(2 * i, 2 * i + 2), 16);
  return b;
}

/**
 * A canonical text of a value for comparing JS reads with C's JSON: every
 * integral number (int, int64 as bigint, or a float such as 2.0 — JS cannot
 * tell 2.0 from 2, docs in src/value.ts) as its exact decimal digits, other
 * floats as JS prints them, map keys sorted.
 */
export function canon(v: unknown): string {
  if (v === null) return "null";
  switch (typeof v) {
    case "boolean": return String(v);
    case "string": return JSON.stringify(v);
    case "bigint": return v.toString();
    case "number":
      if (Number.isInteger(v)) return BigInt(v).toString();
      return `f${String(v)}`;
    case "object":
      if (Array.isArray(v)) return `[${v.map(canon).join(",")}]`;
      return `{${Object.keys(v as object).sort().map((k) => `${JSON.stringify(k)}:${canon((v as Record<string, unknown>)[k])}`).join(",")}}`;
    default:
      throw new Error(`canon: unexpected ${typeof v}`);
  }
}

/** JSON.parse, except that integer literals become bigint when beyond 2^53
 *  (exact) and float literals stay numbers. */
export function parseJsonExact(text: string): unknown {
  let i = 0;
  const ws = (): void => { while (i < text.length && " \t\r\n".includes(text[i]!)) i++; };
  const val = (): unknown => {
    ws();
    const c = text[i];
    if (c === "{") {
      i++;
      const o: Record<string, unknown> = {};
      ws();
      if (text[i] === "}") { i++; return o; }
      for (;;) {
        ws();
        const k = val() as string;
        ws();
        if (text[i++] !== ":") throw new Error(`json: ':' expected at ${i}`);
        o[k] = val();
        ws();
        const d = text[i++];
        if (d === "}") return o;
        if (d !== ",") throw new Error(`json: ',' expected at ${i}`);
      }
    }
    if (c === "[") {
      i++;
      const a: unknown[] = [];
      ws();
      if (text[i] === "]") { i++; return a; }
      for (;;) {
        a.push(val());
        ws();
        const d = text[i++];
        if (d === "]") return a;
        if (d !== ",") throw new Error(`json: ',' expected at ${i}`);
      }
    }
    if (c === '"') {
      const start = i;
      i++;
      while (text[i] !== '"') {
        if (i >= text.length) throw new Error("json: unterminated string");
        i += text[i] === "\\" ? 2 : 1;
      }
      i++;
      return JSON.parse(text.slice(start, i));
    }
    const m = /^-?\d+(\.\d+)?([eE][+-]?\d+)?/.exec(text.slice(i, i + 64));
    if (m) {
      i += m[0].length;
      if (m[1] === undefined && m[2] === undefined) {
        const b = BigInt(m[0]);
        return b >= -(2n ** 53n) + 1n && b <= 2n ** 53n - 1n ? Number(b) : b;
      }
      return Number(m[0]);
    }
    for (const [w, v] of [["true", true], ["false", false], ["null", null]] as const)
      if (text.startsWith(w, i)) { i += w.length; return v; }
    throw new Error(`json: unexpected '${c}' at ${i}`);
  };
  const v = val();
  ws();
  if (i !== text.length) throw new Error(`json: trailing text at ${i}`);
  return v;
}
