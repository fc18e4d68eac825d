/**
 * The IndexedDB backend in Node, over fake-indexeddb: the store round
 * trip, and what it does without Web Locks.  The real thing (Chromium's
 * IndexedDB and Web Locks, tabs, reloads) is browser.test.ts.
 */
import test from "node:test";
import assert from "node:assert/strict";
import { IDBFactory } from "fake-indexeddb";
import { CrdtdbDataStore, IndexedDBBackend } from "../src/index.js";

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
