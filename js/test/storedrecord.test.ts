/** The IndexedDB record encoding: every register round-trips; damage is ECORRUPT. */
import test from "node:test";
import assert from "node:assert/strict";
import { decodeRecord, encodeRecord } from "../src/storedrecord.js";
import type { Leaf, StoredRecord } from "../src/types.js";

const origin = (n: number): Uint8Array => new Uint8Array(32).fill(n);

function sample(): StoredRecord {
  const leaves: Leaf[] = [
    { path: ["a"], hlc: 1n << 60n, origin: origin(1), value: new Uint8Array([0x01]), seq: 7, src: "" },
    { path: ["é", "k\u0000ey", "😀"], hlc: 123456789n, origin: origin(2), value: null, seq: 2 ** 40, src: "ab".repeat(32) },
    { path: ["big"], hlc: (1n << 64n) - 1n, origin: origin(1), value: new Uint8Array(70000).fill(9), seq: 9, src: "" },
  ];
  return { base: { kind: 1, hlc: 5n, origin: origin(3), seq: 1, src: "cd".repeat(32) }, leaves };
}

test("a record's registers round-trip exactly, in a fresh copy", () => {
  const r = sample();
  const b = encodeRecord(r);
  const back = decodeRecord(b);
  assert.deepEqual(back, r);
  assert.notEqual(back.leaves[0]!.value!.buffer, b.buffer);
  assert.deepEqual(decodeRecord(encodeRecord({ base: null, leaves: [] })), { base: null, leaves: [] });
  const removed: StoredRecord = { base: { kind: 2, hlc: 9n, origin: origin(4), seq: 3, src: "" }, leaves: [] };
  assert.deepEqual(decodeRecord(encodeRecord(removed)), removed);
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
  readPage(p, (k, b) => got.push([k, decodeRecord(b)]));
  assert.deepEqual(got, keys.map((k, i) => [k, recs[i]]));
  for (const cut of [0, 1, 4, 8, 100, p.length - 1]) assert.throws(() => readPage(p.subarray(0, cut), () => undefined), { code: "ECORRUPT" });
  const extra = new Uint8Array(p.length + 1); extra.set(p);
  assert.throws(() => readPage(extra, () => undefined), { code: "ECORRUPT" });
  // a damaged record inside a page
  const bad = p.slice(); bad[5 + 2 + 3 + 4] = 9;
  assert.throws(() => readPage(bad, (_k, b) => decodeRecord(b)), { code: "ECORRUPT" });
});
