/** The DataStore interface as app builders use it: every call, its errors and its notifications. */
import test from "node:test";
import assert from "node:assert/strict";
import { statSync } from "node:fs";
import { join } from "node:path";
import { CrdtdbDataStore, CrdtdbError, type DataObject, type UpdateNotification } from "../src/index.js";
import { FileBackend } from "../src/node.js";
import { parseCollections } from "../src/datastore.js";
import { tempDir } from "./helpers.js";

const open = (backend?: FileBackend) => CrdtdbDataStore.open({ dbId: "match-1", collections: "Players;Moves", backend });

test("add, getById and query return records with their id", async () => {
  const ds = await open();
  await ds.add("Players", "ann", { name: "Ann", score: 3, pos: { x: 1, y: 2 } });
  await ds.add("Players", 7, { name: "Seven", score: 9 });
  assert.deepEqual(await ds.getById("Players", "ann"), { id: "ann", name: "Ann", pos: { x: 1, y: 2 }, score: 3 });
  assert.deepEqual(await ds.getById("Players", 7), { id: "7", name: "Seven", score: 9 });
  assert.deepEqual((await ds.query("Players", { name: "Ann" })).map((r) => r.id), ["ann"]);
  assert.deepEqual((await ds.query("Players", [["score", ">", 2]])).map((r) => r.id), ["7", "ann"]);
  assert.deepEqual((await ds.query("Players", [["score", ">=", 9]])).map((r) => r.id), ["7"]);
  assert.deepEqual((await ds.query("Players", {})).length, 2);
  await ds.close();
});

test("collection config text: the app builder's lines with roles, or ';' / ',' lists as crdtdb serve --collections takes them", async () => {
  assert.deepEqual(parseCollections("Players: user-private, signed-in\nMoves"), ["Players", "Moves"]);
  assert.deepEqual(parseCollections("Players : signed-in\n\n  Moves:user-private\n"), ["Players", "Moves"]);
  assert.deepEqual(parseCollections("Players;Moves"), ["Players", "Moves"]);
  assert.deepEqual(parseCollections("Players, Moves;Chat: signed-in, user-private"), ["Players", "Moves", "Chat"]);
  assert.deepEqual(parseCollections(["Players", " Moves "]), ["Players", "Moves"]);
  const ds = await CrdtdbDataStore.open({ dbId: "match-1", collections: "Players: user-private, signed-in\nMoves" });
  assert.deepEqual([...ds.replica.collections].filter((c) => c !== "_members").sort(), ["Moves", "Players"]);
  await assert.rejects(ds.add("signed-in", "x", {}), { code: "ENOCOLL", message: "Collection 'signed-in' not found" });
  await ds.close();
});

test("a database id or collection name a C replica could not hold is EBADID at open (a collection '\\x03' was written, then its page could not be read back)", async () => {
  for (const coll of ["\u0003", "a\u007fb", "x".repeat(256), "x\ud800"]) // ("" is dropped by the DataStore's list parsing)
    await assert.rejects(CrdtdbDataStore.open({ dbId: "match-1", collections: ["Players", coll] }), { code: "EBADID", message: /collection name/ }, JSON.stringify(coll.slice(0, 8)));
  for (const dbId of ["a\nb", "y".repeat(256), ""])
    await assert.rejects(CrdtdbDataStore.open({ dbId, collections: "Players" }), { code: "EBADID", message: /database id/ }, JSON.stringify(dbId.slice(0, 8)));
  const ds = await CrdtdbDataStore.open({ dbId: "é".repeat(127), collections: ["Players", "ü".repeat(127)] });
  await ds.close();
});

test("an id a C replica could not hold is EBADID, nothing stored: a NUL (its ids are C strings), a lone surrogate (its UTF-8 names another record)", async () => {
  const ds = await open();
  await ds.add("Players", "ok", { v: 1 });
  const seq = ds.replica.seq;
  for (const id of ["a\u0000b", "\u0000", "x\ud800", "\udc00y"]) {
    await assert.rejects(ds.add("Players", id, { v: 1 }), { code: "EBADID" }, JSON.stringify(id));
    await assert.rejects(ds.addAll("Players", { good: { v: 1 }, [id]: { v: 2 } }), { code: "EBADID" }, JSON.stringify(id));
    await assert.rejects(ds.update("Players", id, { v: 2 }), { code: "EBADID" }, JSON.stringify(id));
  }
  assert.equal(ds.replica.seq, seq, "nothing numbered");
  assert.deepEqual((await ds.query("Players", {})).map((r) => r.id), ["ok"]);
  await ds.add("Players", "\ud83d\ude00", { v: 3 }); // a pair is one character
  assert.deepEqual(await ds.getById("Players", "\ud83d\ude00"), { id: "\ud83d\ude00", v: 3 });
  await ds.close();
});

test("errors carry the interface's messages", async () => {
  const ds = await open();
  await assert.rejects(ds.getById("Players", "x"), { message: "Object with id 'x' not found in collection 'Players'" });
  assert.equal(await ds.getById("Players", "x", true), null);
  await assert.rejects(ds.getById("Nope", "x"), { message: "Collection 'Nope' not found" });
  await assert.rejects(ds.query("Nope", {}), { message: "Collection 'Nope' not found" });
  await assert.rejects(ds.add("Nope", "x", {}), { message: "Collection 'Nope' not found" });
  await assert.rejects(ds.update("Players", "x", { a: 1 }), (e: unknown) =>
    e instanceof CrdtdbError && e.code === "ENOTFOUND" && e.message === "Object with id 'x' not found in collection 'Players'");
  assert.throws(() => ds.observable("Nope"), { message: "Collection 'Nope' not found" });
  await ds.close();
});

test("update deep-merges; remove of an absent record succeeds", async () => {
  const ds = await open();
  await ds.add("Players", "a", { pos: { x: 1, y: 2 }, tags: ["x"], hp: 10 });
  await ds.update("Players", "a", { pos: { y: 5, z: 6 }, tags: ["y"] });
  assert.deepEqual(await ds.getById("Players", "a"), { id: "a", hp: 10, pos: { x: 1, y: 5, z: 6 }, tags: ["y"] });
  await ds.update("Players", "a", { pos: 3 });
  assert.deepEqual(await ds.getById("Players", "a"), { id: "a", hp: 10, pos: 3, tags: ["y"] });
  await ds.remove("Players", "a");
  assert.equal(await ds.getById("Players", "a", true), null);
  await ds.remove("Players", "never"); // no error, no tombstone
  assert.equal(ds.replica.stored("Players", "never"), undefined);
  // add replaces the whole record
  await ds.add("Players", "b", { one: 1, two: 2 });
  await ds.add("Players", "b", { three: 3 });
  assert.deepEqual(await ds.getById("Players", "b"), { id: "b", three: 3 });
  await ds.close();
});

test("observers get Add, Update, Remove with the record, MultipleChanges for addAll", async () => {
  const ds = await open();
  const seen: UpdateNotification[] = [];
  const sub = ds.observable("Players").subscribe((n) => seen.push(n));
  const moves: UpdateNotification[] = [];
  ds.observable("Moves").subscribe({ next: (n) => moves.push(n) });
  await ds.add("Players", "a", { hp: 1 });
  await ds.update("Players", "a", { hp: 2 });
  await ds.remove("Players", "a");
  await ds.addAll("Players", { b: { hp: 3 }, c: { hp: 4 } });
  assert.deepEqual(seen, [
    { collection: "Players", type: "Add", id: "a", changes: { id: "a", hp: 1 } },
    { collection: "Players", type: "Update", id: "a", changes: { id: "a", hp: 2 } },
    { collection: "Players", type: "Remove", id: "a" },
    { collection: "Players", type: "MultipleChanges" },
  ]);
  assert.deepEqual(moves, []);
  sub.unsubscribe();
  assert.equal(sub.closed, true);
  await ds.add("Players", "d", {});
  assert.equal(seen.length, 4);
  await ds.close();
});

test("dates, int64, floats, binary and nested arrays survive a round trip", async () => {
  const ds = await open();
  const when = new Date("2026-12-04T10:11:12.345Z");
  const big = 2n ** 60n + 1n;
  await ds.add("Players", "a", { when, big, f: 1.5, n: -3, bin: new Uint8Array([1, 2, 3]), arr: [1, [2, { k: "v" }]], nil: null, t: true });
  const a = (await ds.getById("Players", "a"))!;
  assert.ok(a.when instanceof Date);
  assert.equal((a.when as Date).getTime(), when.getTime());
  assert.equal(a.big, big);
  assert.equal(a.f, 1.5);
  assert.equal(a.n, -3);
  assert.deepEqual([...(a.bin as Uint8Array)], [1, 2, 3]);
  assert.deepEqual(a.arr, [1, [2, { k: "v" }]]);
  assert.equal(a.nil, null);
  assert.equal(a.t, true);
  await ds.close();
});

test("a file-backed store keeps its data and identity across reopen", async () => {
  const d = tempDir();
  try {
    const path = join(d.path, "replica.crdtdb");
    let ds = await open(new FileBackend(path));
    const id = ds.replica.idHex;
    await ds.add("Players", "a", { hp: 1 });
    await ds.update("Players", "a", { pos: { x: 1 } });
    await ds.add("Moves", "m1", { by: "a" });
    await ds.remove("Moves", "m1");
    const seq = ds.replica.seq;
    await ds.close();
    ds = await open(new FileBackend(path));
    assert.equal(ds.replica.idHex, id);
    assert.equal(ds.replica.seq, seq);
    assert.deepEqual(await ds.getById("Players", "a"), { id: "a", hp: 1, pos: { x: 1 } });
    assert.equal(await ds.getById("Moves", "m1", true), null);
    // the clock counts on from what was stored
    const before = ds.replica.clock.last;
    await ds.update("Players", "a", { hp: 2 });
    assert.ok(ds.replica.clock.last > before);
    await ds.close();
  } finally {
    d.remove();
  }
});

test("writes made without awaiting commit together; one that fails fails alone", async () => {
  const d = tempDir();
  try {
    const path = join(d.path, "group.crdtdb");
    let ds = await open(new FileBackend(path));
    const seen: UpdateNotification[] = [];
    ds.observable("Players").subscribe((n) => seen.push(n));
    const writes: Promise<unknown>[] = [];
    for (let i = 0; i < 50; i++) writes.push(ds.add("Players", `p${i}`, { i }));
    writes.push(ds.update("Players", "p3", { i: 33 }));
    const bad = ds.update("Players", "nobody", { i: 1 });
    let deep: DataObject = { q: 1 };
    for (let k = 0; k < 20; k++) deep = { n: deep };
    writes.push(ds.add("Players", "deep", deep)); // over max_depth: ETOODEEP
    const results = await Promise.allSettled([...writes, bad]);
    assert.equal(results.filter((r) => r.status === "rejected").length, 2);
    await assert.rejects(bad, { message: "Object with id 'nobody' not found in collection 'Players'" });
    assert.equal((await ds.query("Players", {})).length, 50);
    assert.equal((await ds.getById("Players", "p3"))?.i, 33);
    assert.ok(seen.length >= 1 && seen.length < 52, `grouped notifications: ${seen.length}`);
    await ds.close();
    ds = await open(new FileBackend(path));
    assert.equal((await ds.query("Players", {})).length, 50);
    assert.equal((await ds.getById("Players", "p3"))?.i, 33);
    await ds.close();
  } finally {
    d.remove();
  }
});

test("a file-backed store's journal is rewritten as it grows, and reopens the same", async () => {
  const d = tempDir();
  try {
    const path = join(d.path, "grow.crdtdb");
    let ds = await open(new FileBackend(path));
    await ds.add("Players", "a", { n: 0, pad: "x".repeat(200) });
    let biggest = 0;
    for (let i = 1; i <= 3000; i++) {
      await ds.update("Players", "a", { n: i });
      if (i % 100 === 0) biggest = Math.max(biggest, statSync(path).size);
    }
    const end = statSync(path).size;
    assert.ok(biggest < 8 << 20, `journal stayed bounded: ${biggest} bytes`);
    assert.ok(end < biggest || biggest <= 1 << 20, `rewritten: ${end} < ${biggest}`);
    await ds.close();
    ds = await open(new FileBackend(path));
    assert.equal((await ds.getById("Players", "a"))?.n, 3000);
    await ds.close();
  } finally {
    d.remove();
  }
});
