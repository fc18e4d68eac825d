/**
 * The IndexedDB backend in Node, over fake-indexeddb: the store round
 * trip, and what it does without Web Locks.  The real thing (Chromium's
 * IndexedDB and Web Locks, tabs, reloads) is browser.test.ts.
 */
import test from "node:test";
import assert from "node:assert/strict";
import { IDBFactory } from "fake-indexeddb";
import { CrdtdbDataStore, IndexedDBBackend } from "../src/index.js";
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
  const db = await new Promise<IDBDatabase>((res) => { const r = factory.open("crdtdb:" + name); r.onsuccess = () => res(r.result); });
  const st = db.transaction("records").objectStore("records");
  const [keys, vals] = await Promise.all([
    new Promise<IDBValidKey[]>((res) => { const r = st.getAllKeys(); r.onsuccess = () => res(r.result); }),
    new Promise<Uint8Array[]>((res) => { const r = st.getAll(); r.onsuccess = () => res(r.result as Uint8Array[]); }),
  ]);
  db.close();
  return keys.map((k, i) => [k, typeof k === "number" ? new DataView(vals[i]!.buffer, vals[i]!.byteOffset).getUint32(1, true) : vals[i]!.length]);
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
