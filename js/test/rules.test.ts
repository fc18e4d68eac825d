/* The CRDT rules (docs/crdt.md) against the shared vectors
 * (tests/vectors/rules.json, also checked by tests/test_vectors.c), a
 * randomized convergence test against a model written from docs/crdt.md,
 * batch merges against single merges, the clock and the path order. */
import test from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";

import { CrdtdbError } from "../src/errors.js";
import { Clock, hlcCounter, hlcMs, packHlc } from "../src/hlc.js";
import { compareBytes, compareIds, comparePaths, encodePath, decodePath } from "../src/path.js";
import {
  addRegisters,
  compareStamp,
  dropUpto,
  emptyRecord,
  isMapAt,
  isVisible,
  mergeBase,
  mergeLeaf,
  mergeLeaves,
  registersOf,
  render,
  renderEncoded,
  renderWithId,
  updateLeaves,
  withId,
} from "../src/record.js";
import { ADD, REMOVE, type BaseReg, type DataObject, type Leaf, type StoredRecord } from "../src/types.js";
import { DEFAULT_LIMITS, decodeValue, refOf, valueBytes, type Limits } from "../src/value.js";
import { mulberry32 } from "./helpers.js";

const RULES = new URL("../../../tests/vectors/rules.json", import.meta.url);

interface Write {
  kind: "add" | "remove" | "value" | "map";
  hlc: number;
  origin: number;
  path?: string[];
  value?: string;
}
interface Op {
  op: "add" | "update" | "remove";
  hlc: number;
  origin: number;
  value?: string;
}
const rules = JSON.parse(readFileSync(RULES, "utf8")) as {
  origins: string[];
  vectors: { name: string; writes: Write[]; render: string | null }[];
  forged: { name: string; writes: Write[]; error: string }[];
  ops: { name: string; ops: Op[]; render: string | null; error?: string; limits?: Partial<Limits> }[];
};

const hex = (b: Uint8Array): string => Buffer.from(b).toString("hex");
const unhex = (h: string): Uint8Array => new Uint8Array(Buffer.from(h, "hex"));
const ORIGINS = rules.origins.map(unhex);

/* a seeded generator (mulberry32): CRDTDB_SEED repeats a run */
const SEED = Number(process.env.CRDTDB_SEED ?? Date.now() % 2 ** 31);
const rng = mulberry32;
const randInt = (r: () => number, n: number): number => Math.floor(r() * n);
function shuffle<T>(r: () => number, a: T[]): T[] {
  for (let i = a.length - 1; i > 0; i--) {
    const j = randInt(r, i + 1);
    [a[i], a[j]] = [a[j]!, a[i]!];
  }
  return a;
}

type Reg = { base: BaseReg } | { leaf: Leaf };

/** A vector write as a register (built fresh: registers are never shared
 *  between records in these tests). */
function reg(w: Write): Reg {
  const hlc = BigInt(w.hlc);
  const origin = ORIGINS[w.origin]!;
  if (w.kind === "add" || w.kind === "remove")
    return { base: { kind: w.kind === "add" ? ADD : REMOVE, hlc, origin, seq: 0, src: "" } };
  return {
    leaf: { path: w.path!, hlc, origin, ...refOf(w.kind === "value" ? unhex(w.value!) : null), seq: 0, src: "" },
  };
}

function applySingle(r: StoredRecord, regs: Reg[]): void {
  for (const g of regs) {
    if ("base" in g) mergeBase(r, g.base);
    else mergeLeaf(r, g.leaf);
  }
}

/** Bases one by one, then every leaf in one mergeLeaves. */
function applyBatch(r: StoredRecord, regs: Reg[]): void {
  const leaves: Leaf[] = [];
  for (const g of regs) {
    if ("base" in g) mergeBase(r, g.base);
    else leaves.push(g.leaf);
  }
  mergeLeaves(r, leaves);
}

function shown(r: StoredRecord): string | null {
  const b = renderEncoded(r);
  return b ? hex(b) : null;
}

/** Asserts render(r) is the value the expected bytes decode to, with keys
 *  in the same (bytewise) order at every level. */
function assertRender(r: StoredRecord, want: string | null, where: string): void {
  assert.equal(shown(r), want, where);
  assert.equal(isVisible(r), want !== null, `${where}: visible`);
  if (want === null) return;
  const expect = decodeValue(unhex(want));
  const got = render(r);
  assert.deepStrictEqual(got, expect, where);
  const keys = (v: unknown): unknown =>
    v && typeof v === "object" && !Array.isArray(v) && !(v instanceof Uint8Array) && !(v instanceof Date)
      ? Object.entries(v).map(([k, e]) => [k, keys(e)])
      : null;
  assert.deepStrictEqual(keys(got), keys(expect), `${where}: key order`);
}

function* permutations(n: number): Generator<number[]> {
  const a = [...Array(n).keys()];
  yield a.slice();
  for (;;) {
    let i = n - 2;
    while (i >= 0 && a[i]! >= a[i + 1]!) i--;
    if (i < 0) return;
    let j = n - 1;
    while (a[j]! <= a[i]!) j--;
    [a[i], a[j]] = [a[j]!, a[i]!];
    for (let l = i + 1, h = n - 1; l < h; l++, h--) [a[l], a[h]] = [a[h]!, a[l]!];
    yield a.slice();
  }
}

/** Orders to try: every permutation up to 7 writes, else 300 random ones. */
function* orders(n: number, r: () => number): Generator<number[]> {
  if (n <= 7) {
    yield* permutations(n);
    return;
  }
  for (let k = 0; k < 300; k++) yield shuffle(r, [...Array(n).keys()]);
}

test("rules.json vectors: every order of the writes renders the same, single and batched", (t) => {
  t.diagnostic(`seed ${SEED}`);
  const r = rng(SEED);
  assert.ok(rules.vectors.length >= 30);
  for (const v of rules.vectors) {
    for (const order of orders(v.writes.length, r)) {
      const ws = order.map((i) => v.writes[i]!);
      const a = emptyRecord();
      applySingle(a, ws.map(reg));
      assertRender(a, v.render, `${v.name} [${order}]`);
      // and again with duplicates, batched
      const dup = ws.concat(ws.filter(() => r() < 0.3));
      const b = emptyRecord();
      applyBatch(b, shuffle(r, dup).map(reg));
      assertRender(b, v.render, `${v.name} batched`);
    }
  }
});

test("rules.json forged: one stamp with two values is refused whole", () => {
  for (const v of rules.forged) {
    const regs = v.writes.map(reg);
    const a = emptyRecord();
    assert.throws(() => applySingle(a, regs), { code: v.error }, v.name);
    // batched: the record is as it was before the batch
    const b = emptyRecord();
    const bases = regs.filter((g) => "base" in g);
    const leaves = regs.flatMap((g) => ("leaf" in g ? [g.leaf] : []));
    let threw = false;
    try {
      applySingle(b, bases);
    } catch (e) {
      threw = true;
      assert.equal((e as CrdtdbError).code, v.error, v.name);
    }
    if (threw) continue;
    const before = shown(b);
    const beforeLeaves = b.leaves.slice();
    const dead: number[] = [];
    assert.throws(() => mergeLeaves(b, leaves, dead), { code: v.error }, `${v.name} batched`);
    assert.equal(shown(b), before);
    assert.deepEqual(b.leaves, beforeLeaves);
    assert.deepEqual(dead, []);
  }
});

/** Applies one local op as the C library does (storage/write.c). */
function applyOp(r: StoredRecord, op: Op, limits: Limits): void {
  const hlc = BigInt(op.hlc);
  const origin = ORIGINS[op.origin]!;
  if (op.op === "add") {
    const { base, leaves } = addRegisters(decodeValue(unhex(op.value!)) as DataObject, hlc, origin, limits);
    mergeBase(r, base);
    mergeLeaves(r, leaves);
  } else if (op.op === "update") {
    const leaves = updateLeaves(r, decodeValue(unhex(op.value!)) as DataObject, hlc, origin, limits);
    if (!isVisible(r)) throw new CrdtdbError("ENOTFOUND", "not found");
    mergeLeaves(r, leaves);
  } else if (isVisible(r)) {
    mergeBase(r, { kind: REMOVE, hlc, origin, seq: 0, src: "" });
  }
}

test("rules.json ops: local add, update and remove, with C's limits", () => {
  for (const v of rules.ops) {
    const limits = { ...DEFAULT_LIMITS, ...(v.limits ?? {}) };
    const r = emptyRecord();
    v.ops.forEach((op, i) => {
      if (v.error && i === v.ops.length - 1) assert.throws(() => applyOp(r, op, limits), { code: v.error }, v.name);
      else applyOp(r, op, limits);
    });
    assertRender(r, v.render, v.name);
  }
  // removing an absent record writes nothing at all
  const r = emptyRecord();
  applyOp(r, { op: "remove", hlc: 10, origin: 0 }, DEFAULT_LIMITS);
  assert.deepEqual(registersOf(r), []);
});

/* ------------------------------------------------- the reference model */

const PATHS = ["a", "a.x", "a.y", "a.x.q", "b", "b.z", "c"].map((p) => p.split("."));
const VALS = ["01", "02", "a173", "c0", "9101", "81a16b01", "c3"]; // 1 2 "s" null [1] {"k":1} true

interface W {
  kind: "a" | "r" | "v" | "m";
  path: number;
  hlc: number;
  origin: number;
  val: number;
}

const cmpW = (x: W, y: W): number =>
  x.hlc !== y.hlc ? x.hlc - y.hlc : compareBytes(ORIGINS[x.origin]!, ORIGINS[y.origin]!);
const isAnc = (a: string[], b: string[]): boolean => a.length < b.length && a.every((s, i) => s === b[i]);

/** docs/crdt.md stated directly over all registers received: the newest
 *  write per register, then visibility and liveness. */
function model(ws: W[]): string | null {
  let base: W | null = null;
  const reg: (W | null)[] = PATHS.map(() => null);
  for (const w of ws) {
    if (w.kind === "a" || w.kind === "r") {
      if (!base || cmpW(w, base) > 0) base = w;
    } else if (!reg[w.path] || cmpW(w, reg[w.path]!) > 0) reg[w.path] = w;
  }
  if (!base || base.kind !== "a") return null;
  const live = PATHS.map((p, i) => {
    const w = reg[i];
    if (!w || cmpW(w, base!) < 0) return false;
    return !PATHS.some((q, j) => reg[j] && isAnc(q, p) && cmpW(reg[j]!, w) > 0);
  });
  // the tree of live leaves; a value with a live leaf below reads as a map
  const root: Record<string, unknown> = {};
  const order = PATHS.map((_, i) => i).sort((i, j) => comparePaths(PATHS[i]!, PATHS[j]!));
  for (const i of order) {
    if (!live[i]) continue;
    const p = PATHS[i]!;
    const hasChild = PATHS.some((q, j) => live[j] && isAnc(p, q));
    let node = root;
    for (const s of p.slice(0, -1)) node = (node[s] ??= {}) as Record<string, unknown>;
    const w = reg[i]!;
    node[p[p.length - 1]!] = hasChild || w.kind === "m" ? {} : decodeValue(unhex(VALS[w.val]!));
  }
  return JSON.stringify(root);
}

function toReg(w: W): Reg {
  const hlc = BigInt(w.hlc);
  const origin = ORIGINS[w.origin]!;
  if (w.kind === "a" || w.kind === "r") return { base: { kind: w.kind === "a" ? ADD : REMOVE, hlc, origin, seq: 0, src: "" } };
  return {
    leaf: { path: PATHS[w.path]!, hlc, origin, ...refOf(w.kind === "v" ? unhex(VALS[w.val]!) : null), seq: 0, src: "" },
  };
}

function randomWrites(r: () => number, max: number): W[] {
  const n = 1 + randInt(r, max);
  const ws: W[] = [];
  for (let i = 0; i < n; i++) {
    const k = randInt(r, 10);
    ws.push({
      kind: k === 0 ? "a" : k === 1 ? "r" : k === 2 ? "m" : "v",
      path: randInt(r, PATHS.length),
      hlc: 1 + randInt(r, 12), // many ties
      origin: randInt(r, 3),
      val: randInt(r, VALS.length),
    });
  }
  // identical stamps must mean identical writes (one op, one stamp)
  for (let i = 0; i < n; i++)
    for (let j = 0; j < i; j++) {
      const bi = ws[i]!.kind === "a" || ws[i]!.kind === "r";
      const bj = ws[j]!.kind === "a" || ws[j]!.kind === "r";
      if (ws[i]!.hlc === ws[j]!.hlc && ws[i]!.origin === ws[j]!.origin && bi === bj) ws[i] = ws[j]!;
    }
  return ws;
}

const renderJson = (rec: StoredRecord): string | null => (isVisible(rec) ? JSON.stringify(render(rec)) : null);

test("random write sets under random orders with duplicates converge to the model", (t) => {
  t.diagnostic(`seed ${SEED}`);
  const r = rng(SEED + 1);
  for (let round = 0; round < 3000; round++) {
    const ws = randomWrites(r, 24);
    const want = model(ws);
    for (let k = 0; k < 4; k++) {
      const order = ws.map((_, i) => i);
      for (let i = 0; i < ws.length; i++) if (r() < 0.25) order.push(randInt(r, ws.length));
      shuffle(r, order);
      const single = emptyRecord();
      applySingle(single, order.map((i) => toReg(ws[i]!)));
      assert.equal(renderJson(single), want, `seed ${SEED} round ${round}: single`);
      const batch = emptyRecord();
      applyBatch(batch, order.map((i) => toReg(ws[i]!)));
      assert.equal(renderJson(batch), want, `seed ${SEED} round ${round}: batch`);
    }
  }
});

/** Numbers a record's unnumbered registers from seq.n on, as a store would. */
function number(rec: StoredRecord, seq: { n: number }): void {
  if (rec.base && !rec.base.seq) rec.base.seq = ++seq.n;
  for (const l of rec.leaves) if (!l.seq) l.seq = ++seq.n;
}

test("mergeLeaves (many at once) ends where single merges end, dead seqs counted once", (t) => {
  t.diagnostic(`seed ${SEED}`);
  const r = rng(SEED + 2);
  for (let round = 0; round < 2000; round++) {
    const ws = randomWrites(r, 40);
    const k = randInt(r, ws.length);
    const a = emptyRecord();
    const b = emptyRecord();
    const sa = { n: 0 };
    const sb = { n: 0 };
    const deadA: number[] = [];
    const deadB: number[] = [];
    for (let i = 0; i < k; i++) {
      // what was stored before
      applyRegs(a, [toReg(ws[i]!)], deadA, false);
      number(a, sa);
      applyRegs(b, [toReg(ws[i]!)], deadB, false);
      number(b, sb);
    }
    const delta = ws.slice(k).map(toReg);
    let wonA = 0;
    for (const g of delta) {
      if ("base" in g) mergeBase(a, g.base, deadA);
      else wonA += mergeLeaf(a, g.leaf, deadA) ? 1 : 0;
    }
    const wonB = applyRegs(b, delta, deadB, true);
    assert.equal(renderJson(b), renderJson(a), `seed ${SEED} round ${round}`);
    assert.deepEqual(
      b.leaves.map((l) => [l.path.join("."), l.hlc, l.seq]),
      a.leaves.map((l) => [l.path.join("."), l.hlc, l.seq]),
      `seed ${SEED} round ${round}: leaves`,
    );
    assert.ok(wonB <= wonA);
    number(b, sb);
    // every numbered register is live or dead, once
    const seen = new Map<number, number>();
    for (const g of registersOf(b)) seen.set(g.seq, (seen.get(g.seq) ?? 0) + 1);
    for (const s of deadB) seen.set(s, (seen.get(s) ?? 0) + 1);
    for (let q = 1; q <= sb.n; q++) assert.equal(seen.get(q), 1, `seed ${SEED} round ${round}: seq ${q}`);
  }
});

/** Bases one by one, then leaves one by one or all at once; the number won. */
function applyRegs(rec: StoredRecord, regs: Reg[], dead: number[], batch: boolean): number {
  const leaves: Leaf[] = [];
  for (const g of regs) {
    if ("base" in g) mergeBase(rec, g.base, dead);
    else leaves.push(g.leaf);
  }
  if (batch) return mergeLeaves(rec, leaves, dead);
  let won = 0;
  for (const l of leaves) won += mergeLeaf(rec, l, dead) ? 1 : 0;
  return won;
}

test("dropUpto takes back registers numbered up to a point and no others", () => {
  const rec = emptyRecord();
  const o = ORIGINS[0]!;
  mergeBase(rec, { kind: ADD, hlc: 1n, origin: o, seq: 1, src: "" });
  mergeLeaves(rec, [
    { path: ["a"], hlc: 2n, origin: o, ...refOf(unhex("01")), seq: 2, src: "" },
    { path: ["b"], hlc: 3n, origin: o, ...refOf(unhex("02")), seq: 3, src: "" },
    { path: ["c"], hlc: 4n, origin: ORIGINS[1]!, ...refOf(unhex("03")), seq: 4, src: "" },
  ]);
  const dead: number[] = [];
  dropUpto(rec, 2, dead);
  assert.equal(rec.base, null);
  assert.deepEqual(rec.leaves.map((l) => l.seq), [3, 4]);
  assert.deepEqual(dead, [1, 2]);
  assert.ok(!isVisible(rec));
  dropUpto(rec, 4, dead);
  assert.equal(rec.leaves.length, 0);
});

test("addRegisters and updateLeaves: one stamp, sorted leaves, mergeDeepRight", () => {
  const o = ORIGINS[0]!;
  const rec = emptyRecord();
  const { base, leaves } = addRegisters({ z: 1, a: { y: 2, b: {} } }, 10n, o);
  assert.deepEqual(base, { kind: ADD, hlc: 10n, origin: o, seq: 0, src: "" });
  assert.deepEqual(leaves.map((l) => l.path), [["a", "b"], ["a", "y"], ["z"]]);
  assert.ok(leaves.every((l) => l.hlc === 10n && l.origin === o && l.seq === 0 && l.src === ""));
  assert.ok(mergeBase(rec, base));
  assert.equal(mergeLeaves(rec, leaves), 3);
  assert.ok(isMapAt(rec, ["a"]) && isMapAt(rec, ["a", "b"]) && !isMapAt(rec, ["z"]) && !isMapAt(rec, ["q"]));
  const up = updateLeaves(rec, { a: { b: {}, y: {} }, z: {} }, 11n, o);
  // a.b is already a map: nothing; a.y and z were values: map leaves
  assert.deepEqual(up.map((l) => [l.path, valueBytes(l)]), [[["a", "y"], null], [["z"], null]]);
  mergeLeaves(rec, up);
  assert.deepEqual(render(rec), { a: { b: {}, y: {} }, z: {} });
});

test("withId: the id first, and it wins over a field named id", () => {
  const r = withId("rec1", { b: 1, id: "other", a: { id: 3 } });
  assert.deepEqual(Object.keys(r), ["id", "b", "a"]);
  assert.equal(r.id, "rec1");
  assert.deepEqual(r.a, { id: 3 });
});

test("renderWithId is withId(render) in one object: the same keys, values and order", () => {
  const o = new Uint8Array(32).fill(4);
  const cases: DataObject[] = [
    { b: 1, id: "other", a: { id: 3 } },
    { id: { x: 1 }, "2": "two", "10": 10, z: null, "01": [1, { id: 2 }], __proto__x: 1 },
    { "": { "": {} }, m: {}, n: { o: { p: 1.5 } }, s: "é😀", big: 2n ** 60n, d: new Date(5), bin: new Uint8Array([1]) },
    {},
  ];
  for (const v of cases) {
    const { base, leaves } = addRegisters(v, 10n, o);
    const r = emptyRecord();
    mergeBase(r, base);
    mergeLeaves(r, leaves);
    const a = renderWithId("rec", r), b = withId("rec", render(r));
    assert.deepEqual(a, b);
    assert.deepEqual(Object.keys(a), Object.keys(b));
  }
  // and what that is, written out: the id first and winning, a nested id kept
  const { base, leaves } = addRegisters(cases[0]!, 10n, o);
  const r = emptyRecord();
  mergeBase(r, base);
  mergeLeaves(r, leaves);
  const got = renderWithId("rec", r);
  assert.deepEqual(got, { id: "rec", a: { id: 3 }, b: 1 });
  assert.deepEqual(Object.keys(got), ["id", "a", "b"]);
  // not visible: the id alone, as withId of render's {}
  const gone = emptyRecord();
  mergeBase(gone, { kind: REMOVE, hlc: 3n, origin: o, seq: 0, src: "" });
  assert.deepEqual(renderWithId("x", gone), withId("x", render(gone)));
});

test("compareStamp: hlc first, then the full 32-byte key bytewise", () => {
  const k1 = new Uint8Array(32).fill(1);
  const k2 = new Uint8Array(32).fill(1);
  k2[31] = 2; // differs only in the last byte
  assert.ok(compareStamp(5n, k2, 6n, k1) < 0);
  assert.ok(compareStamp(6n, k1, 6n, k2) < 0);
  assert.ok(compareStamp(6n, k2, 6n, k1) > 0);
  assert.equal(compareStamp(6n, k1, 6n, new Uint8Array(k1)), 0);
});

/* --------------------------------------------------------------- paths */

test("comparePaths and compareIds are bytewise order of the C encoding", (t) => {
  t.diagnostic(`seed ${SEED}`);
  const r = rng(SEED + 3);
  const alphabet = ["a", "b", "B", "\u0000", ".", "é", "\ufb01", "\uffff", "\u{1f600}", "\u{10ffff}", ""];
  const key = (): string => {
    let s = "";
    const n = randInt(r, 3);
    for (let i = 0; i < n; i++) s += alphabet[randInt(r, alphabet.length)];
    return s;
  };
  const path = (): string[] => Array.from({ length: 1 + randInt(r, 3) }, key);
  const enc = new TextEncoder();
  for (let i = 0; i < 20000; i++) {
    const a = path();
    const b = r() < 0.2 ? a.slice(0, randInt(r, a.length + 1)).concat(path()) : path();
    const want = Math.sign(compareBytes(encodePath(a), encodePath(b)));
    assert.equal(Math.sign(comparePaths(a, b)), want, JSON.stringify([a, b]));
    assert.deepEqual(decodePath(encodePath(a)), a);
    const x = key();
    const y = key();
    assert.equal(Math.sign(compareIds(x, y)), Math.sign(compareBytes(enc.encode(x), enc.encode(y))), JSON.stringify([x, y]));
  }
});

/* --------------------------------------------------------------- clock */

test("hlc packing: 48 bits of ms, 16 of counter, compared as integers", () => {
  const h = packHlc(1700000000123, 7);
  assert.equal(h, (1700000000123n << 16n) | 7n);
  assert.equal(hlcMs(h), 1700000000123);
  assert.equal(hlcCounter(h), 7);
  assert.ok(packHlc(5, 65535) < packHlc(6, 0));
});

test("clock: local writes max(wall, last + 1); a full counter carries (70000 in one ms)", () => {
  let now = 1000;
  const c = new Clock({ now: () => now });
  assert.equal(c.tick(), packHlc(1000, 0));
  assert.equal(c.tick(), packHlc(1000, 1));
  let prev = c.last;
  for (let i = 0; i < 70000; i++) {
    const h = c.tick();
    assert.ok(h > prev);
    prev = h;
  }
  assert.equal(hlcMs(prev), 1001); // carried past the frozen millisecond
  now = 5000;
  assert.equal(c.tick(), packHlc(5000, 0));
  now = 10; // a clock stepping backwards keeps counting forward
  const h = c.tick();
  assert.equal(h, packHlc(5000, 1));
});

test("clock: receive refuses stamps too far ahead (ECLOCK, clock untouched), else moves past them", () => {
  const now = 1_000_000;
  const c = new Clock({ now: () => now, maxSkewMs: 300000 });
  c.tick();
  const before = c.last;
  const ahead = packHlc(now + 300001, 0);
  assert.throws(() => c.recv(ahead), (e: unknown) => {
    assert.ok(e instanceof CrdtdbError);
    assert.equal(e.code, "ECLOCK");
    assert.match(e.message, /local 1000000 ms, stamp 1300001 ms; limit 300000 ms/);
    return true;
  });
  assert.equal(c.last, before);
  c.recv(packHlc(now + 300000, 5)); // at the limit: accepted
  assert.equal(c.last, packHlc(now + 300000, 6));
  assert.ok(c.tick() > packHlc(now + 300000, 6));
  c.recv(packHlc(10, 0)); // an old stamp: last + 1
  c.observe(packHlc(1, 0));
  const l = c.last;
  c.observe(l + 100n);
  assert.equal(c.last, l + 100n);
  c.check(packHlc(now, 0));
});

test("a fresh record takes 100k fields in one merge quickly", (t) => {
  const o = ORIGINS[0]!;
  const rec = emptyRecord();
  mergeBase(rec, { kind: ADD, hlc: 1n, origin: o, seq: 0, src: "" });
  const leaves: Leaf[] = [];
  const v = unhex("01");
  for (let i = 0; i < 100000; i++)
    leaves.push({ path: ["f" + (i % 1000), "k" + i], hlc: 2n + BigInt(i % 7), origin: o, ...refOf(v), seq: 0, src: "" });
  shuffle(rng(SEED), leaves);
  const t0 = performance.now();
  assert.equal(mergeLeaves(rec, leaves), 100000);
  const t1 = performance.now();
  const again = mergeLeaves(rec, leaves.slice(0, 50000)); // duplicates
  const t2 = performance.now();
  assert.equal(again, 0);
  t.diagnostic(`100k fields: merge ${(t1 - t0).toFixed(0)} ms, 50k duplicates ${(t2 - t1).toFixed(0)} ms`);
  assert.equal(Object.keys(render(rec)).length, 1000);
});
