/**
 * The IndexedDB backend in Node, over fake-indexeddb: the store round
 * trip, and what it does without Web Locks.  The real thing (Chromium's
 * IndexedDB and Web Locks, tabs, reloads) is browser.test.ts.
 */
import test from "node:test";
import assert from "node:assert/strict";
import { IDBFactory } from "fake-indexeddb";
import { CrdtdbDataStore, IndexedDBBackend, MemoryBackend } from "../src/index.js";
import { registers, storedValues } from "./idbhelpers.js";
import { toV1 } from "./storedv1.js";

const open = (factory: IDBFactory, name = "s") =>
  CrdtdbDataStore.open({ dbId: "db", collections: ["C"], backend: new IndexedDBBackend({ name, indexedDB: factory, locks: null }) });

test("a store reopened from IndexedDB has its records, deletions and identity", async () => {
  const factory = new IDBFactory();
  const a = await open(factory);
  await a.addAll("C", { x: { v: 1, when: new Date(5) }, y: { n: 2n ** 62n } });
  await a.update("C", "x", { deep: { k: 1.5 } });
  await a.remove("C", "y");
  const id = a.replica.idHex;
  await a.close();
  const b = await open(factory);
  assert.equal(b.replica.idHex, id);
  assert.deepEqual(await b.query("C", {}), [{ id: "x", v: 1, when: new Date(5), deep: { k: 1.5 } }]);
  assert.equal(await b.getById("C", "y", true), null);
  await b.close();
  await IndexedDBBackend.destroy("s", factory, null);
  const c = await open(factory);
  assert.notEqual(c.replica.idHex, id, "a destroyed store starts a new identity");
  assert.deepEqual(await c.query("C", {}), []);
  await c.close();
});

test("without Web Locks the open fails rather than risk a fork, unless locks: null says so", async () => {
  const factory = new IDBFactory();
  // Node 20 has no navigator.locks, like an insecure browser context
  const hasLocks = !!(globalThis as { navigator?: { locks?: unknown } }).navigator?.locks;
  if (!hasLocks) await assert.rejects(
    CrdtdbDataStore.open({ dbId: "db", collections: ["C"], backend: new IndexedDBBackend({ name: "s", indexedDB: factory }) }),
    (e: { code?: string; message?: string }) => e.code === "EINVAL" && /Web Locks/.test(e.message ?? ""),
  );
  const ok = await open(factory);
  await ok.close();
});

test("records written in pages reopen as written: updates, removes, purges, clears and compaction", async () => {
  const factory = new IDBFactory();
  const items = (n: number, v: number) => Object.fromEntries(Array.from({ length: n }, (_, i) => ["r" + i, { v, i }]));
  const a = await open(factory, "pages");
  await a.addAll("C", items(1200, 1)); // pages
  await a.update("C", "r5", { v: 2 }); // its own value over the page copy
  await a.remove("C", "r6");
  await a.addAll("C", items(40, 3)); // r0..r39 into a new page: r5's own value goes
  await a.update("C", "r7", { w: 4 });
  await a.replica.purge("C", "r8"); // a tombstone over the page copies
  await a.replica.purge("C", "r1100");
  const want = await a.query("C", {});
  await a.close();
  const b = await open(factory, "pages");
  assert.deepEqual(await b.query("C", {}), want);
  assert.equal(await b.getById("C", "r8", true), null);
  assert.deepEqual(await b.getById("C", "r5"), { id: "r5", v: 3, i: 5 });
  // rewrite everything many times over: dead page copies pile up, the store compacts
  for (let k = 0; k < 6; k++) await b.addAll("C", items(1200, 10 + k));
  const db = await new Promise<IDBDatabase>((res) => { const r = factory.open("crdtdb:pages"); r.onsuccess = () => res(r.result); });
  const n = await new Promise<number>((res) => { const r = db.transaction("records").objectStore("records").count(); r.onsuccess = () => res(r.result); });
  db.close();
  assert.ok(n < 30, `compacted: ${n} values`);
  const want2 = await b.query("C", {});
  await b.replica.clear();
  await b.addAll("C", items(50, 99));
  const want3 = await b.query("C", {});
  await b.close();
  assert.equal(want2.length, 1200);
  const c = await open(factory, "pages");
  assert.deepEqual(await c.query("C", {}), want3);
  await c.close();
});

/** The values the records store holds: [page number, records in it] for pages, [key, bytes] for the rest. */
async function stored(factory: IDBFactory, name: string): Promise<[IDBValidKey, number][]> {
  return (await storedValues(factory, name)).map(([k, v]) =>
    [k, typeof k === "number" ? new DataView(v.buffer, v.byteOffset).getUint32(1, true) : v.length]);
}

test("short-lived records leave nothing behind beside pages, and no page is ever empty", async () => {
  const factory = new IDBFactory();
  const a = await open(factory, "churn");
  await a.addAll("C", Object.fromEntries(Array.from({ length: 40 }, (_, i) => ["p" + i, { i }]))); // a page
  for (let i = 0; i < 300; i++) { // never in a page: forgotten without an IndexedDB tombstone
    await a.add("C", "t" + i, { i });
    await a.replica.purge("C", "t" + i);
  }
  await a.replica.purge("C", "p3"); // a page holds it: a tombstone hides that copy
  let vals = await stored(factory, "churn");
  assert.deepEqual(vals.filter(([k]) => typeof k !== "number"), [["C\u0000p3", 0]]);
  // a page that ends past the page size: the next big commit starts a page of its own
  await a.addAll("C", { ...Object.fromEntries(Array.from({ length: 39 }, (_, i) => ["q" + i, { i }])), big: { s: "x".repeat(60000) } });
  await a.addAll("C", Object.fromEntries(Array.from({ length: 40 }, (_, i) => ["s" + i, { i }])));
  vals = await stored(factory, "churn");
  for (const [k, n] of vals) if (typeof k === "number") assert.ok(n > 0, `page ${k} holds ${n} records`);
  const want = await a.query("C", {});
  await a.close();
  const b = await open(factory, "churn");
  assert.deepEqual(await b.query("C", {}), want);
  assert.equal(want.length, 39 + 39 + 1 + 40); // p0..p39 but p3, q0..q38, big, s0..s39
  await b.close();
});

test("a damaged page is ECORRUPT at open", async () => {
  const factory = new IDBFactory();
  const a = await open(factory, "bad");
  await a.addAll("C", Object.fromEntries(Array.from({ length: 100 }, (_, i) => ["r" + i, { i }])));
  await a.close();
  const db = await new Promise<IDBDatabase>((res) => { const r = factory.open("crdtdb:bad"); r.onsuccess = () => res(r.result); });
  await new Promise<void>((res) => {
    const tx = db.transaction("records", "readwrite");
    const st = tx.objectStore("records");
    const g = st.getAllKeys();
    g.onsuccess = () => { const k = g.result.find((x) => typeof x === "number")!; st.put(new Uint8Array([2, 9, 9]), k); };
    tx.oncomplete = () => res();
  });
  db.close();
  await assert.rejects(open(factory, "bad"), { code: "ECORRUPT" });
});

test("a store written with the version 1 record encoding opens, reads and goes on", async () => {
  const factory = new IDBFactory();
  const items = (n: number, v: number) => Object.fromEntries(Array.from({ length: n }, (_, i) => ["r" + i, { v, i, m: { k: "é" + i } }]));
  const a = await open(factory, "old");
  await a.addAll("C", items(300, 1)); // pages
  await a.update("C", "r5", { v: 2 }); // a record of its own over its page copy
  await a.add("C", "solo", { s: "x" });
  await a.remove("C", "r6");
  await a.replica.purge("C", "r7"); // a tombstone
  const want = await a.query("C", {});
  const id = a.replica.idHex;
  await a.close();
  // every stored value as the previous version wrote it
  const db = await new Promise<IDBDatabase>((res) => { const r = factory.open("crdtdb:old"); r.onsuccess = () => res(r.result); });
  let rewritten = 0;
  await new Promise<void>((res) => {
    const tx = db.transaction("records", "readwrite");
    const st = tx.objectStore("records");
    const k = st.getAllKeys(), v = st.getAll();
    v.onsuccess = () => k.result.forEach((key, i) => {
      const was = v.result[i] as Uint8Array, old = toV1(key, was);
      if (old.length) assert.notDeepEqual(old, was);
      st.put(old, key);
      rewritten++;
    });
    tx.oncomplete = () => res();
  });
  db.close();
  assert.ok(rewritten > 3);
  const b = await open(factory, "old");
  assert.equal(b.replica.idHex, id);
  assert.deepEqual(await b.query("C", {}), want);
  assert.equal(await b.getById("C", "r7", true), null);
  await b.update("C", "r100", { v: 3 });
  await b.addAll("C", items(40, 4)); // a new page over the old ones
  await b.replica.purge("C", "r9");
  const want2 = await b.query("C", {});
  await b.close();
  const c = await open(factory, "old");
  assert.deepEqual(await c.query("C", {}), want2);
  assert.deepEqual(await c.getById("C", "r100"), { id: "r100", v: 3, i: 100, m: { k: "é100" } });
  assert.deepEqual(await c.getById("C", "r3"), { id: "r3", v: 4, i: 3, m: { k: "é3" } });
  await c.close();
});

/** The records store's values: [key, first byte] (3: a chunk of stored deltas). */
async function kinds(factory: IDBFactory, name: string): Promise<[IDBValidKey, number][]> {
  return (await storedValues(factory, name)).map(([k, v]) => [k, v[0] ?? -1]);
}

test("a peer's deltas into new records are stored as those deltas, and reopen with every register as committed", async () => {
  const factory = new IDBFactory();
  const src = await CrdtdbDataStore.open({ dbId: "db", collections: ["C"], backend: new MemoryBackend() });
  const items = (n: number, v: number) =>
    Object.fromEntries(Array.from({ length: n }, (_, i) => ["r" + i, { v, i, when: new Date(i), m: { k: "é" + i, big: 2n ** 60n + BigInt(i) } }]));
  await src.addAll("C", items(400, 1));
  for (let i = 0; i < 400; i += 7) await src.update("C", "r" + i, { m: { k: "u" + i }, x: i });
  for (let i = 3; i < 400; i += 11) await src.remove("C", "r" + i);
  const b = await open(factory, "deltas");
  const all = async (after: number) => (await src.replica.exportFor(b.replica.id, after, { maxBytes: 16 << 10 })).deltas;
  const first = await all(0);
  assert.ok(first.length > 3, `${first.length} deltas`);
  const r1 = await b.replica.applyAll(first.map((d) => d.bytes), src.replica.id);
  assert.equal(r1.error, null);
  assert.equal(r1.applied, first.length);
  // chunks of the deltas, not pages of records
  const k1 = await kinds(factory, "deltas");
  assert.ok(k1.some(([k, v]) => typeof k === "number" && v === 3), JSON.stringify(k1));
  assert.ok(!k1.some(([k, v]) => typeof k === "number" && v === 2));
  const regs = registers(b), want = await b.query("C", {}), seq = b.replica.seq;
  assert.deepEqual(want, await src.query("C", {}));
  await b.close();
  const c = await open(factory, "deltas");
  assert.deepEqual(registers(c), regs);
  assert.deepEqual(await c.query("C", {}), want);
  assert.equal(c.replica.seq, seq);
  // what it sends on is what it sent before the reopen
  const other = new Uint8Array(32).fill(7);
  // then records it holds: changed by the peer (pages of records) and here
  const upto = first[first.length - 1]!.to;
  for (let i = 0; i < 400; i += 2) if (i % 11 !== 3) await src.update("C", "r" + i, { v: 2 });
  await src.addAll("C", Object.fromEntries(Array.from({ length: 300 }, (_, i) => ["n" + i, { n: i }])));
  const second = await (async () => (await src.replica.exportFor(c.replica.id, upto, { maxBytes: 16 << 10 })).deltas)();
  const chunks = async () => (await kinds(factory, "deltas")).filter(([k, v]) => typeof k === "number" && v === 3).length;
  const before2 = await chunks();
  const r2 = await c.replica.applyAll(second.map((d) => d.bytes), src.replica.id);
  assert.equal(r2.error, null);
  // records it held took every register sent, and more new ones came: deltas again, the held records over them
  assert.ok((await chunks()) > before2);
  const k2 = (await kinds(factory, "deltas")).filter(([k, v]) => typeof k === "number" && v === 3 && !k1.some(([x]) => x === k)).map(([k]) => k);
  // a run that resends what it holds (registers not taken): records, no chunks
  for (let i = 1; i < 400; i += 2) if (i % 11 !== 3) await src.update("C", "r" + i, { v: 3 });
  const upto2 = second[second.length - 1]!.to;
  const third = (await src.replica.exportFor(c.replica.id, upto2, { maxBytes: 16 << 10 })).deltas;
  const before3 = await chunks();
  const r3 = await c.replica.applyAll([second[0]!.bytes, ...third.map((d) => d.bytes)], src.replica.id);
  assert.equal(r3.error, null);
  assert.equal(await chunks(), before3);
  await c.update("C", "r1", { here: true });
  await c.remove("C", "r5");
  await c.replica.purge("C", "r9");
  const regs2 = registers(c), want2 = await c.query("C", {});
  const out2 = (await c.replica.exportFor(other, 0, { all: true })).deltas.map((d) => d.bytes);
  await c.close();
  const d = await open(factory, "deltas");
  assert.deepEqual(registers(d), regs2);
  assert.deepEqual(await d.query("C", {}), want2);
  assert.deepEqual(await d.getById("C", "r1"), { ...(await src.getById("C", "r1")), here: true });
  assert.deepEqual((await d.replica.exportFor(other, 0, { all: true })).deltas.map((x) => x.bytes), out2);
  // every record of the first commit rewritten: its chunks go
  await d.addAll("C", items(400, 9));
  await d.close();
  const k3 = (await kinds(factory, "deltas")).map(([k]) => k), firstChunks = k1.filter(([k]) => typeof k === "number");
  assert.ok(!firstChunks.some(([k]) => k3.includes(k)), JSON.stringify(k3));
  assert.ok(k2.length && k2.every((k) => k3.includes(k)), "the second commit's chunks hold the n records still");
  const e = await open(factory, "deltas");
  assert.equal((await e.query("C", {})).length, 400 + 300);
  await e.close();
  await src.close();
});

test("a stored commit of deltas with a chunk missing or damaged is ECORRUPT at open", async () => {
  for (const harm of ["drop", "damage"] as const) {
    const factory = new IDBFactory();
    const src = await CrdtdbDataStore.open({ dbId: "db", collections: ["C"], backend: new MemoryBackend() });
    await src.addAll("C", Object.fromEntries(Array.from({ length: 3000 }, (_, i) => ["r" + i, { s: "x".repeat(40), i }])));
    const b = await open(factory, "bad");
    const ds = (await src.replica.exportFor(b.replica.id, 0)).deltas;
    assert.equal((await b.replica.applyAll(ds.map((x) => x.bytes), src.replica.id)).error, null);
    await b.close();
    const chunks = (await kinds(factory, "bad")).filter(([k, v]) => typeof k === "number" && v === 3);
    assert.ok(chunks.length >= 2, `${chunks.length} chunks`);
    const db = await new Promise<IDBDatabase>((res) => { const r = factory.open("crdtdb:bad"); r.onsuccess = () => res(r.result); });
    await new Promise<void>((res) => {
      const tx = db.transaction("records", "readwrite");
      const st = tx.objectStore("records"), k = chunks[1]![0];
      if (harm === "drop") st.delete(k);
      else st.put(new Uint8Array([3, 1, 0, chunks.length, 0, 9, 9, 9]), k);
      tx.oncomplete = () => res();
    });
    db.close();
    await assert.rejects(open(factory, "bad"), { code: "ECORRUPT" }, harm);
    await src.close();
  }
});
