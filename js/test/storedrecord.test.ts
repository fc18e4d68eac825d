/** The IndexedDB record encoding: every register round-trips; damage is ECORRUPT. */
import test from "node:test";
import assert from "node:assert/strict";
import { decodeRecord, deltaChunkOf, encodeDeltaChunks, encodePage, encodeRecord, readDeltaChunks, readPage } from "../src/storedrecord.js";
import type { Leaf, StoredRecord } from "../src/types.js";
import { refOf, valueBytes } from "../src/value.js";
import { encodePageV1, encodeRecordV1 } from "./storedv1.js";

const origin = (n: number): Uint8Array => new Uint8Array(32).fill(n);
/** A msgpack bin of n bytes in all (a stored value is one msgpack value). */
const bin = (n: number): Uint8Array => { const v = new Uint8Array(n).fill(9); v[0] = 0xc6; new DataView(v.buffer).setUint32(1, n - 5); return v; };

/** r with each leaf's value as a view of its own bytes (vbuf is a buffer
 *  values share, which deepEqual would compare whole). */
function plain(r: StoredRecord): unknown {
  return { base: r.base, leaves: r.leaves.map((l) => ({ path: l.path, hlc: l.hlc, origin: l.origin, value: valueBytes(l), seq: l.seq, src: l.src })) };
}

function sample(): StoredRecord {
  const leaves: Leaf[] = [
    { path: ["a"], hlc: 1n << 60n, origin: origin(1), ...refOf(new Uint8Array([0x01])), seq: 7, src: "" },
    { path: ["big"], hlc: (1n << 64n) - 1n, origin: origin(1), ...refOf(bin(70000)), seq: 9, src: "" },
    { path: ["é", "k\u0000ey", "😀"], hlc: 123456789n, origin: origin(2), ...refOf(null), seq: 2 ** 40, src: "ab".repeat(32) },
  ];
  return { base: { kind: 1, hlc: 5n, origin: origin(3), seq: 1, src: "cd".repeat(32) }, leaves };
}

test("a record's registers round-trip exactly; the values point into the bytes read", () => {
  const r = sample();
  const b = encodeRecord(r);
  const back = decodeRecord(b);
  assert.deepEqual(plain(back), plain(r));
  assert.equal(back.leaves[0]!.vbuf, b, "no copy a value");
  assert.deepEqual(plain(decodeRecord(encodeRecord({ base: null, leaves: [] }))), plain({ base: null, leaves: [] }));
  const removed: StoredRecord = { base: { kind: 2, hlc: 9n, origin: origin(4), seq: 3, src: "" }, leaves: [] };
  assert.deepEqual(plain(decodeRecord(encodeRecord(removed))), plain(removed));
});

test("a record of more than 65,535 origins (a peer can send one) is version 4 and reads back whole", () => {
  const big = (n: number): Uint8Array => { const o = new Uint8Array(32).fill(0x5a); new DataView(o.buffer).setUint32(0, n); return o; };
  for (const [n, version] of [[20, 3], [65535, 3], [65537, 4]] as const) {
    const keys = Array.from({ length: n }, (_, i) => big(i));
    // two fields a key, the second by a copy of its bytes (found by value, not identity)
    const leaves: Leaf[] = [];
    for (let i = 0; i < 2 * n; i++)
      leaves.push({ path: ["f" + String(i).padStart(6, "0")], hlc: 100n + BigInt(i % 3), origin: i < n ? keys[i]! : keys[i - n]!.slice(), ...refOf(new Uint8Array([i % 128])), seq: i + 2, src: "" });
    const r: StoredRecord = { base: { kind: 1, hlc: 99n, origin: keys[0]!, seq: 1, src: "ab".repeat(32) }, leaves };
    const b = encodeRecord(r);
    assert.equal(b[0], version, `${n} origins`);
    const back = decodeRecord(b);
    assert.deepEqual(back.base, r.base);
    assert.equal(back.leaves.length, leaves.length);
    for (let i = 0; i < leaves.length; i++) {
      const x = back.leaves[i]!, y = leaves[i]!;
      if (x.path[0] !== y.path[0] || x.hlc !== y.hlc || x.seq !== y.seq || x.src !== y.src || valueBytes(x)?.[0] !== valueBytes(y)?.[0] ||
          Buffer.compare(x.origin, y.origin) !== 0) assert.fail(`leaf ${i} of ${n} origins`);
    }
    assert.deepEqual(encodeRecord(back), b, `${n} origins: the same bytes again`);
    if (version === 4)
      for (const cut of [1, 2, 6, 40, b.length - 1]) assert.throws(() => decodeRecord(b.subarray(0, cut)), { code: "ECORRUPT" });
  }
});

test("damaged bytes are ECORRUPT, never a wrong record", () => {
  const b = encodeRecord(sample());
  for (const cut of [0, 1, 3, 40, 100, b.length - 1]) assert.throws(() => decodeRecord(b.subarray(0, cut)), { code: "ECORRUPT" });
  const v2 = b.slice(); v2[0] = 2;
  assert.throws(() => decodeRecord(v2), { code: "ECORRUPT" });
  const extra = new Uint8Array(b.length + 1); extra.set(b);
  assert.throws(() => decodeRecord(extra), { code: "ECORRUPT" });
});

test("a page holds its records in order; damage is ECORRUPT", async () => {
  const { encodePage, readPage } = await import("../src/storedrecord.js");
  const keys = ["C\u0000a", "C\u0000é😀", "D\u0000x"], recs = [sample(), { base: null, leaves: [] }, sample()];
  const p = encodePage(keys, recs);
  const got: [string, StoredRecord][] = [];
  let entries = 0;
  readPage(p, (k, b, n) => { got.push([k, decodeRecord(b)]); entries += n; });
  assert.deepEqual(got.map(([k, r]) => [k, plain(r)]), keys.map((k, i) => [k, plain(recs[i]!)]));
  assert.equal(entries, p.length - 5); // each entry's bytes, UTF-8 keys counted as bytes
  for (const cut of [0, 1, 4, 8, 100, p.length - 1]) assert.throws(() => readPage(p.subarray(0, cut), () => undefined), { code: "ECORRUPT" });
  const extra = new Uint8Array(p.length + 1); extra.set(p);
  assert.throws(() => readPage(extra, () => undefined), { code: "ECORRUPT" });
  // a damaged record inside a page
  const bad = p.slice(); bad[5 + 2 + 3 + 4] = 9;
  assert.throws(() => readPage(bad, (_k, b) => decodeRecord(b)), { code: "ECORRUPT" });
});

/** A local add's record: every leaf has the base's stamp, origin and source. */
function added(n: number, seq0: number): StoredRecord {
  const o = origin(7), hlc = 0x123456789abcn;
  const leaves: Leaf[] = Array.from({ length: n }, (_, i) => ({ path: ["c" + i], hlc, origin: o, ...refOf(new Uint8Array([i % 128])), seq: seq0 + 1 + ((i * 7) % n), src: "" }));
  leaves.push({ path: ["z", "m"], hlc, origin: o, ...refOf(null), seq: seq0 + n + 1, src: "" });
  return { base: { kind: 1, hlc, origin: o, seq: seq0, src: "" }, leaves };
}

test("version 3: shared stamps noted once, sequences as differences, every register back exactly", () => {
  for (const r of [added(10, 5), added(3, 2 ** 51), { base: null, leaves: added(4, 0).leaves }, sample()]) {
    const b = encodeRecord(r);
    assert.equal(b[0], 3);
    assert.deepEqual(plain(decodeRecord(b)), plain(r));
  }
  assert.equal(encodeRecord(added(10, 5))[1], 1, "one stamp for the record");
  assert.equal(encodeRecord(sample())[1], 0, "mixed stamps: one per leaf");
  const v1 = encodeRecordV1(added(10, 5)).length, v3 = encodeRecord(added(10, 5)).length;
  assert.ok(v3 * 2 < v1, `version 3 ${v3} bytes against version 1 ${v1}`);
  // a sequence too big for an exact difference: version 1, still exact
  const huge = added(3, 2 ** 52);
  const hb = encodeRecord(huge);
  assert.equal(hb[0], 1);
  assert.deepEqual(plain(decodeRecord(hb)), plain(huge));
  const late = added(3, 5); late.leaves[1]!.seq = 2 ** 53 - 1;
  assert.equal(encodeRecord(late)[0], 1);
  assert.deepEqual(plain(decodeRecord(encodeRecord(late))), plain(late));
  // a fraction is no sequence a replica numbers: written as it is, read as damage
  const odd = added(3, 5); odd.leaves[2]!.seq = 7.5;
  assert.equal(encodeRecord(odd)[0], 1);
  assert.throws(() => decodeRecord(encodeRecord(odd)), { code: "ECORRUPT", message: /sequence/ });
});

test("version 1 bytes (stores written before version 3) read as the same records", () => {
  for (const r of [sample(), added(10, 5), { base: null, leaves: [] }, { base: sample().base, leaves: [] }]) {
    const old = encodeRecordV1(r);
    assert.equal(old[0], 1);
    assert.deepEqual(plain(decodeRecord(old)), plain(r));
  }
  const keys = ["C\u0000a", "C\u0000b"], recs = [added(10, 5), sample()];
  const got: [string, StoredRecord][] = [];
  readPage(encodePageV1(keys, recs), (k, b) => got.push([k, decodeRecord(b)]));
  assert.deepEqual(got.map(([k, r]) => [k, plain(r)]), keys.map((k, i) => [k, plain(recs[i]!)]));
});

test("damaged version 3 bytes are ECORRUPT, never a wrong record", () => {
  for (const r of [added(10, 5), { base: null, leaves: sample().leaves.slice(0, 2) }]) {
    const b = encodeRecord(r);
    for (let cut = 0; cut < b.length; cut++) assert.throws(() => decodeRecord(b.subarray(0, cut)), { code: "ECORRUPT" }, `cut at ${cut}`);
    const extra = new Uint8Array(b.length + 1); extra.set(b);
    assert.throws(() => decodeRecord(extra), { code: "ECORRUPT" });
    const flags = b.slice(); flags[1] = 2;
    assert.throws(() => decodeRecord(flags), { code: "ECORRUPT" });
  }
  // an origin index past the table
  const b = encodeRecord(added(2, 5));
  // version, flags, one source (""), one origin, the base, 3 leaves, the shared stamp: then its origin's index
  const at = 2 + 2 + 2 + 2 + 32 + 1 + 20 + 1 + 8;
  assert.equal(b[at], 0);
  const bad = b.slice(); bad[at] = 5;
  assert.throws(() => decodeRecord(bad), { code: "ECORRUPT" });
});

test("a commit's deltas cut into chunks read back whole, whatever the chunk size; a chunk out of place is ECORRUPT", () => {
  const deltas = [new Uint8Array([1, 2, 3]), new Uint8Array(0), Uint8Array.from({ length: 1000 }, (_, i) => i & 0xff)];
  const d = { src: "ab".repeat(32), seq0: 2 ** 40 + 3, deltas };
  for (const max of [1, 7, 64, 999, 1 << 16]) {
    const chunks = encodeDeltaChunks(d, max);
    const total = chunks.reduce((n, c) => n + c.length - 5, 0);
    assert.equal(chunks.length, Math.ceil(total / max), `max ${max}`);
    chunks.forEach((c, i) => { assert.deepEqual(deltaChunkOf(c), [i, chunks.length]); assert.ok(c.length - 5 <= max); });
    const back = readDeltaChunks(chunks);
    assert.equal(back.src, d.src);
    assert.equal(back.seq0, d.seq0);
    assert.deepEqual(back.deltas.map((x) => [...x]), deltas.map((x) => [...x]));
    if (chunks.length > 1) {
      assert.throws(() => readDeltaChunks(chunks.slice(1)), { code: "ECORRUPT" });
      assert.throws(() => readDeltaChunks([chunks[1]!, chunks[0]!, ...chunks.slice(2)]), { code: "ECORRUPT" });
    }
    assert.throws(() => readDeltaChunks(chunks.map((c, i) => (i === chunks.length - 1 ? c.subarray(0, c.length - 1) : c))), { code: "ECORRUPT" });
  }
  assert.equal(deltaChunkOf(new Uint8Array([2, 0, 0, 0, 0])), null);
});

test("damage the reader relies on is ECORRUPT: a sequence NaN, a field with no path, bytes that are no value, an unknown base kind, a page key without its NUL", () => {
  const o = origin(1);
  const one = (path: string[], value: Uint8Array | null, seq: number): Leaf => ({ path, hlc: 1000n, origin: o, ...refOf(value), seq, src: "" });
  const rec = (leaves: Leaf[], seq = 1): StoredRecord => ({ base: { kind: 1, hlc: 1000n, origin: o, seq, src: "" }, leaves });
  // version 1 (a sequence past 2^52): the last leaf's f64 sequence made NaN, then Infinity and -1
  const v1 = encodeRecord(rec([one(["x"], new Uint8Array([1]), 2 ** 52 + 1)], 2 ** 52));
  assert.equal(v1[0], 1);
  for (const bad of [NaN, Infinity, -1, 2 ** 53]) {
    const b = v1.slice(); new DataView(b.buffer).setFloat64(b.length - 13, bad, true);
    assert.throws(() => decodeRecord(b), { code: "ECORRUPT", message: /sequence/ }, String(bad));
  }
  // version 3: the path count byte (after u8 3 | u8 1 | u16 0 sources... ) found by value and made 0
  const v3 = encodeRecord(rec([one(["x"], new Uint8Array([1]), 2)]));
  assert.equal(v3[0], 3);
  const at = v3.lastIndexOf(0x78) - 2; // 'x', after its count byte 1 and its vint length 1
  assert.deepEqual([v3[at], v3[at + 1]], [1, 1]);
  const noPath = v3.slice(); noPath[at] = 0;
  assert.throws(() => decodeRecord(noPath), { code: "ECORRUPT" });
  for (const value of [[0xc1], [0xdd, 0, 0, 0, 9], [0x81, 0xa1, 0x61, 1], [0x01, 0x01], []]) {
    const r = rec([one(["x"], new Uint8Array([1]), 2)]);
    r.leaves[0] = one(["x"], new Uint8Array(value), 2);
    if (!value.length) r.leaves[0]!.vbuf = new Uint8Array(0); // a value of no bytes (not a map leaf)
    assert.throws(() => decodeRecord(encodeRecord(r)), { code: "ECORRUPT", message: /value/ }, JSON.stringify(value));
  }
  assert.doesNotThrow(() => decodeRecord(encodeRecord(rec([one(["x"], new Uint8Array([0x92, 1, 0xa1, 0x61]), 2)]))), "an array is a value");
  const k2 = encodeRecord(rec([one(["x"], new Uint8Array([1]), 2)]));
  const kindAt = 2 + 2 + 2 + 2 + 32; // version, flags, one source ("": u16 0), one origin
  assert.deepEqual([k2[kindAt - 1], k2[kindAt]], [1, 1]);
  k2[kindAt] = 7;
  assert.throws(() => decodeRecord(k2), { code: "ECORRUPT", message: /kind/ });
  // a page whose key lost its NUL
  const page = encodePage(["Items\u0000a"], [rec([one(["x"], new Uint8Array([1]), 2)])]);
  const nul = page.indexOf(0, 7);
  const noNul = page.slice(); noNul[nul] = 0x2e;
  assert.throws(() => readPage(noNul, () => undefined), { code: "ECORRUPT", message: /key/ });
});

test("leaves not strictly ascending by path are ECORRUPT (two at one path overflowed the stack when rendered)", () => {
  const o = origin(1);
  const one = (path: string[]): Leaf => ({ path, hlc: 1000n, origin: o, ...refOf(new Uint8Array([1])), seq: 2, src: "" });
  const rec = (...paths: string[][]): StoredRecord => ({ base: null, leaves: paths.map(one) });
  assert.equal(decodeRecord(encodeRecord(rec(["a"], ["a", "b"], ["b"]))).leaves.length, 3, "ascending, an ancestor first");
  for (const paths of [[["y"], ["y"]], [["b"], ["a"]], [["a", "b"], ["a"]], [["x"], ["y", "z"], ["y", "z"]]])
    assert.throws(() => decodeRecord(encodeRecord(rec(...paths))), { code: "ECORRUPT", message: /out of order/ }, JSON.stringify(paths));
});

test("a leaf older than the base (dead; no merge stores one) is dropped as the record is read", () => {
  const o = origin(1), later = origin(2);
  const leaf = (name: string, hlc: bigint, org = o): Leaf => ({ path: [name], hlc, origin: org, ...refOf(new Uint8Array([1])), seq: 2, src: "" });
  const base = { kind: 1 as const, hlc: 1000n, origin: later, seq: 1, src: "" };
  const back = decodeRecord(encodeRecord({ base, leaves: [leaf("a", 999n), leaf("b", 1000n), leaf("c", 1000n, later), leaf("d", 1001n)] }));
  assert.deepEqual(back.leaves.map((l) => l.path[0]), ["c", "d"], "older by hlc (a) and, at the base's hlc, by replica key (b): dropped");
  const alive = decodeRecord(encodeRecord({ base, leaves: [leaf("c", 1000n, later), leaf("d", 1001n)] }));
  assert.equal(alive.leaves.length, 2);
});

test("a leaf older than a leaf at an ancestor path (a newer write above replaced it) is dropped as the record is read", () => {
  const o = origin(1), p = origin(2);
  const leaf = (path: string[], hlc: bigint, org = o): Leaf => ({ path, hlc, origin: org, ...refOf(new Uint8Array([1])), seq: 2, src: "" });
  const back = decodeRecord(encodeRecord({ base: null, leaves: [
    leaf(["m"], 10n), leaf(["m", "j"], 11n), leaf(["m", "j", "o"], 10n), leaf(["m", "j", "p"], 11n, p), leaf(["m", "k"], 9n), leaf(["n"], 1n),
  ] }));
  assert.deepEqual(back.leaves.map((l) => l.path.join(".")), ["m", "m.j", "m.j.p", "n"],
    "m.j.o older than m.j, m.k older than m; m.j.p newer (same hlc, a greater key)");
});

test("a page key that is no collection and id a delta may carry is ECORRUPT (a record every export sent was refused)", () => {
  const o = origin(1);
  const rec: StoredRecord = { base: { kind: 1, hlc: 1000n, origin: o, seq: 1, src: "" }, leaves: [] };
  assert.doesNotThrow(() => readPage(encodePage(["Items\u0000a b\u0001"], [rec]), () => undefined), "an id may hold control characters");
  for (const key of ["\u0003\u0000a", "It\u007fems\u0000a", "Items\u0000a\u0000b", "x".repeat(256) + "\u0000a", "Items\u0000" + "y".repeat(256)])
    assert.throws(() => readPage(encodePage([key], [rec]), () => undefined), { code: "ECORRUPT", message: /key/ }, JSON.stringify(key.slice(0, 12)));
});
