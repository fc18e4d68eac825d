/**
 * An add of many records puts their values in shared buffers (value.ts
 * Slabs): every value reads back as written, whatever its size (values
 * bigger than a buffer, buffers that fill up mid-call), and a record
 * refused mid-call (too big) leaves the others as they were.
 */
import test from "node:test";
import assert from "node:assert/strict";
import { CrdtdbDataStore } from "../src/index.js";
import { Slabs } from "../src/value.js";

const valueOf = (i: number): Record<string, unknown> => ({
  n: i, s: "v".repeat(i % 97), big: i % 500 === 7 ? "B".repeat(70_000 + i) : i * 1.5,
  nested: { a: [i, "x", { b: i % 3 === 0 }], bin: new Uint8Array([i & 255, 1, 2]) },
});

test("a 5,000-record addAll reads back value for value", async () => {
  const ds = await CrdtdbDataStore.open({ dbId: "db", collections: ["C"] });
  const items: Record<string, Record<string, unknown>> = {};
  for (let i = 0; i < 5000; i++) items["r" + i] = valueOf(i);
  await ds.addAll("C", items as never);
  for (let i = 0; i < 5000; i++) assert.deepEqual(await ds.getById("C", "r" + i), { id: "r" + i, ...valueOf(i) });
  // a later add of one record and updates leave the earlier values as they were
  await ds.add("C", "one", { z: "y".repeat(300) });
  await ds.update("C", "r1", { n: -1 });
  assert.deepEqual(await ds.getById("C", "r2"), { id: "r2", ...valueOf(2) });
  assert.deepEqual(await ds.getById("C", "r1"), { id: "r1", ...valueOf(1), n: -1 });
  // a call refused by one record (over the 1 MiB value limit) stores none of its records
  await assert.rejects(ds.addAll("C", { ok1: { a: 1 }, huge: { a: "h".repeat(1 << 20) }, ok2: { a: 2 } }), /ETOOBIG|exceeds/);
  assert.equal(await ds.getById("C", "ok1", true), null);
  assert.equal(await ds.getById("C", "ok2", true), null);
  assert.deepEqual(await ds.getById("C", "r3"), { id: "r3", ...valueOf(3) });
  await ds.close();
});

test("Slabs: each place() is a copy at its own offset; a value over the buffer size gets a buffer of its own", () => {
  const s = new Slabs();
  const seen: [Uint8Array, number, Uint8Array][] = [];
  for (let i = 0; i < 3000; i++) {
    const n = i === 1500 ? 100_000 : 1 + (i % 40);
    const src = new Uint8Array(n + 5).map((_, k) => (i + k) & 255);
    const ab = s.place(src, n);
    seen.push([ab, s.at, src.slice(0, n)]);
  }
  for (const [ab, at, want] of seen) assert.deepEqual(ab.subarray(at, at + want.length), want);
  assert.ok(new Set(seen.map((x) => x[0])).size < 40, "the buffers are shared");
});
