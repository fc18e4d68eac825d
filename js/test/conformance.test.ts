/**
 * Conformance with the app builder's DataStore (AshridgeTechnologies/elemento,
 * src/shared/DataStore.ts and its TinyBase store, which is what app code is
 * written against): one test per behaviour app code can see.  Where we
 * differ on purpose (docs/js.md, "Where it differs from the app builder's
 * stores") the test is named for what we do and says so.
 */
import test from "node:test";
import assert from "node:assert/strict";
import {
  Add, CrdtdbDataStore, CrdtdbError, InvalidateAll, MultipleChanges, Remove, Update,
  type SocketFactory, type UpdateNotification,
} from "../src/index.js";

const open = () => CrdtdbDataStore.open({ dbId: "conformance", collections: "Widgets;Gadgets" });

/** Opens, runs fn, closes (also on failure). */
async function withStore(fn: (ds: CrdtdbDataStore) => Promise<void>): Promise<void> {
  const ds = await open();
  try {
    await fn(ds);
  } finally {
    await ds.close();
  }
}

/** Every notification a collection's observable sends, from now on. */
function watch(ds: CrdtdbDataStore, coll: string): UpdateNotification[] {
  const seen: UpdateNotification[] = [];
  ds.observable(coll).subscribe((n) => seen.push(n));
  return seen;
}

const ids = (recs: object[]): unknown[] => recs.map((r) => (r as { id?: unknown }).id);

/* ------------------------------------------------------------- getById */

test("getById resolves to the stored record with its id as a field", () => withStore(async (ds) => {
  await ds.add("Widgets", "w1", { a: 10, b: "Bee1", c: true });
  assert.deepEqual(await ds.getById("Widgets", "w1"), { id: "w1", a: 10, b: "Bee1", c: true });
}));

test("a number id and its string name the same record; the id reads back as a string", () => withStore(async (ds) => {
  await ds.add("Widgets", 7, { a: 1 });
  assert.deepEqual(await ds.getById("Widgets", "7"), { id: "7", a: 1 });
  assert.deepEqual(await ds.getById("Widgets", 7), { id: "7", a: 1 });
  await ds.update("Widgets", 7, { a: 2 });
  assert.equal((await ds.getById("Widgets", "7"))?.a, 2);
  await ds.remove("Widgets", 7);
  assert.equal(await ds.getById("Widgets", "7", true), null);
}));

test("getById of a missing id rejects with an Error saying which id and collection", () => withStore(async (ds) => {
  await assert.rejects(ds.getById("Widgets", "w1"), (e: unknown) =>
    e instanceof Error && e.message === "Object with id 'w1' not found in collection 'Widgets'");
  await assert.rejects(ds.getById("Widgets", 42, false), { message: "Object with id '42' not found in collection 'Widgets'" });
}));

test("getById with nullIfNotFound resolves to null for a missing or removed id", () => withStore(async (ds) => {
  assert.equal(await ds.getById("Widgets", "wxxx", true), null);
  await ds.add("Widgets", "w1", { a: 1 });
  await ds.remove("Widgets", "w1");
  assert.equal(await ds.getById("Widgets", "w1", true), null);
}));

test("every call on an undeclared collection rejects with Collection 'Y' not found", () => withStore(async (ds) => {
  const msg = { message: "Collection 'Sprockets' not found" };
  await assert.rejects(ds.getById("Sprockets", "w1"), msg);
  await assert.rejects(ds.getById("Sprockets", "w1", true), msg);
  await assert.rejects(ds.query("Sprockets", {}), msg);
  await assert.rejects(ds.add("Sprockets", "w1", { a: 1 }), msg);
  await assert.rejects(ds.addAll("Sprockets", { w1: { a: 1 } }), msg);
  await assert.rejects(ds.addAll("Sprockets", {}), msg);
  await assert.rejects(ds.update("Sprockets", "w1", { a: 1 }), msg);
  await assert.rejects(ds.remove("Sprockets", "w1"), msg);
}));

test("data calls report errors as rejected promises, never synchronous throws", () => withStore(async (ds) => {
  const calls: (() => Promise<unknown>)[] = [
    () => ds.getById("Sprockets", "x"),
    () => ds.query("Sprockets", {}),
    () => ds.add("Sprockets", "x", {}),
    () => ds.update("Widgets", "missing", { a: 1 }),
    () => ds.query("Widgets", [["a", "~" as "=", 1]]),
  ];
  for (const call of calls) {
    let p: Promise<unknown> | undefined;
    assert.doesNotThrow(() => { p = call(); });
    await assert.rejects(p!);
  }
}));

/* --------------------------------------------------------------- query */

test("query with an empty object or an empty list returns every record", () => withStore(async (ds) => {
  await ds.addAll("Widgets", { w1: { a: 1 }, w2: { a: 2 } });
  assert.deepEqual(ids(await ds.query("Widgets", {})), ["w1", "w2"]);
  assert.deepEqual(ids(await ds.query("Widgets", [])), ["w1", "w2"]);
  assert.deepEqual(await ds.query("Gadgets", {}), []);
}));

test("query with a plain object matches records equal on every field given", () => withStore(async (ds) => {
  await ds.add("Widgets", "w1", { height: 10, width: 110 });
  await ds.add("Widgets", "w2", { height: 10, width: 120 });
  await ds.add("Widgets", "w3", { height: 20, width: 130 });
  assert.deepEqual(ids(await ds.query("Widgets", { height: 10 })), ["w1", "w2"]);
  assert.deepEqual(ids(await ds.query("Widgets", { height: 10, width: 120 })), ["w2"]);
  assert.deepEqual(await ds.query("Widgets", { height: 20 }), [{ id: "w3", height: 20, width: 130 }]);
}));

test("query equality is strict: no type coercion, and null does not match a missing field", () => withStore(async (ds) => {
  await ds.add("Widgets", "n", { v: 5 });
  await ds.add("Widgets", "s", { v: "5" });
  await ds.add("Widgets", "z", { v: null });
  await ds.add("Widgets", "m", { other: 1 });
  assert.deepEqual(ids(await ds.query("Widgets", { v: 5 })), ["n"]);
  assert.deepEqual(ids(await ds.query("Widgets", { v: "5" })), ["s"]);
  assert.deepEqual(ids(await ds.query("Widgets", { v: null })), ["z"]);
  assert.deepEqual(ids(await ds.query("Widgets", [["v", "==", null]])), ["z"]);
  assert.deepEqual(ids(await ds.query("Widgets", { v: 0 })), []);
}));

test("query with [field, op, value] triples supports = == != < <= > >=, all ANDed", () => withStore(async (ds) => {
  for (const [id, n] of [["a", 1], ["b", 2], ["c", 3]] as const) await ds.add("Widgets", id, { n, s: id.toUpperCase() });
  const q = async (...conds: [string, "=" | "==" | "!=" | "<" | "<=" | ">" | ">=", unknown][]) => ids(await ds.query("Widgets", conds));
  assert.deepEqual(await q(["n", "=", 2]), ["b"]);
  assert.deepEqual(await q(["n", "==", 2]), ["b"]);
  assert.deepEqual(await q(["n", "!=", 2]), ["a", "c"]);
  assert.deepEqual(await q(["n", "<", 2]), ["a"]);
  assert.deepEqual(await q(["n", "<=", 2]), ["a", "b"]);
  assert.deepEqual(await q(["n", ">", 2]), ["c"]);
  assert.deepEqual(await q(["n", ">=", 2]), ["b", "c"]);
  assert.deepEqual(await q(["s", ">", "A"]), ["b", "c"]);
  assert.deepEqual(await q(["n", ">", 1], ["n", "<", 3]), ["b"]);
  assert.deepEqual(await q(["n", ">", 1], ["s", "=", "A"]), []);
}));

test("query != matches records without the field (unless compared with null)", () => withStore(async (ds) => {
  await ds.add("Widgets", "has", { colour: "red" });
  await ds.add("Widgets", "lacks", { size: 1 });
  assert.deepEqual(ids(await ds.query("Widgets", [["colour", "!=", "blue"]])), ["has", "lacks"]);
  assert.deepEqual(ids(await ds.query("Widgets", [["colour", "!=", null]])), ["has"]);
  assert.deepEqual(ids(await ds.query("Widgets", [["colour", ">", ""]])), ["has"]);
}));

test("query can select on the id field", () => withStore(async (ds) => {
  await ds.addAll("Widgets", { w1: { a: 1 }, w2: { a: 1 } });
  assert.deepEqual(ids(await ds.query("Widgets", { id: "w2" })), ["w2"]);
  assert.deepEqual(ids(await ds.query("Widgets", [["id", "!=", "w2"]])), ["w1"]);
}));

test("query results come in id order, whatever order they were added in (ours: elemento gives insertion order)", () => withStore(async (ds) => {
  await ds.add("Widgets", "w3", { a: 1 });
  await ds.add("Widgets", "w1", { a: 1 });
  await ds.add("Widgets", "w2", { a: 1 });
  assert.deepEqual(ids(await ds.query("Widgets", { a: 1 })), ["w1", "w2", "w3"]);
}));

test("query compares Dates and arrays by value (ours: elemento's === never matches them)", () => withStore(async (ds) => {
  const when = new Date("2022-07-02T10:11:12Z");
  await ds.add("Widgets", "w1", { when, tags: ["x", "y"] });
  assert.deepEqual(ids(await ds.query("Widgets", { when: new Date(when.getTime()) })), ["w1"]);
  assert.deepEqual(ids(await ds.query("Widgets", { tags: ["x", "y"] })), ["w1"]);
}));

test("query ordering ops order Dates as elemento does", () => withStore(async (ds) => {
  await ds.add("Widgets", "old", { when: new Date("2020-01-01T00:00:00Z") });
  await ds.add("Widgets", "new", { when: new Date("2022-07-02T10:00:00Z") });
  await ds.add("Widgets", "none", { other: 1 });
  assert.deepEqual(ids(await ds.query("Widgets", [["when", ">", new Date("2021-01-01T00:00:00Z")]])), ["new"]);
  assert.deepEqual(ids(await ds.query("Widgets", [["when", "<=", new Date("2020-01-01T00:00:00Z")]])), ["old"]);
  assert.deepEqual(ids(await ds.query("Widgets", [["when", ">=", new Date("2020-01-01T00:00:00Z")], ["when", "<", new Date("2030-01-01T00:00:00Z")]])), ["new", "old"]);
}));

test("query ordering ops match only numbers with numbers, strings with strings and Dates with Dates (ours: elemento coerces)", () => withStore(async (ds) => {
  await ds.add("Widgets", "d", { v: new Date("2022-07-02T10:00:00Z") });
  await ds.add("Widgets", "s", { v: "10" });
  await ds.add("Widgets", "t", { v: true });
  assert.deepEqual(ids(await ds.query("Widgets", [["v", ">", new Date("2020-01-01T00:00:00Z")]])), ["d"]);
  assert.deepEqual(ids(await ds.query("Widgets", [["v", ">", 5]])), []);
  assert.deepEqual(ids(await ds.query("Widgets", [["v", ">", Date.parse("2020-01-01T00:00:00Z")]])), []);
  assert.deepEqual(ids(await ds.query("Widgets", [["v", ">", false]])), []);
  // "!=" is the negation of strict equality, so "10" != 10 holds
  assert.deepEqual(ids(await ds.query("Widgets", [["v", "!=", 10]])), ["d", "s", "t"]);
}));

test("query with an unknown operator rejects with EBADQUERY (ours: elemento matches nothing)", () => withStore(async (ds) => {
  await ds.add("Widgets", "w1", { a: 1 });
  await assert.rejects(ds.query("Widgets", [["a", "like" as "=", 1]]), (e: unknown) => e instanceof CrdtdbError && e.code === "EBADQUERY");
}));

test("a dotted field in a triple names a nested field (ours: elemento reads a key with a dot)", () => withStore(async (ds) => {
  await ds.add("Widgets", "w1", { pos: { x: 1 } });
  assert.deepEqual(ids(await ds.query("Widgets", [["pos.x", "=", 1]])), ["w1"]);
  assert.deepEqual(ids(await ds.query("Widgets", { pos: { x: 1 } })), ["w1"]);
}));

/* ----------------------------------------------------------------- add */

test("add on an existing id replaces the whole record", () => withStore(async (ds) => {
  await ds.add("Widgets", "w1", { a: 10, b: "Bee1", nested: { p: 1 } });
  await ds.add("Widgets", "w1", { c: true });
  assert.deepEqual(await ds.getById("Widgets", "w1"), { id: "w1", c: true });
}));

test("the store keeps a copy: changing an item after add, or a record read, changes nothing stored", () => withStore(async (ds) => {
  const item = { a: 1, pos: { x: 1 }, tags: ["t"] };
  await ds.add("Widgets", "w1", item);
  item.a = 2;
  item.pos.x = 2;
  item.tags.push("u");
  const read = (await ds.getById("Widgets", "w1"))!;
  assert.deepEqual(read, { id: "w1", a: 1, pos: { x: 1 }, tags: ["t"] });
  (read.pos as { x: number }).x = 3;
  (read.tags as string[]).push("v");
  read.a = 3;
  assert.deepEqual(await ds.getById("Widgets", "w1"), { id: "w1", a: 1, pos: { x: 1 }, tags: ["t"] });
}));

test("the key a record is stored under wins over a field named id (ours: TinyBase lets the field win)", () => withStore(async (ds) => {
  await ds.add("Widgets", "w1", { id: "other", a: 1 });
  assert.deepEqual(await ds.getById("Widgets", "w1"), { id: "w1", a: 1 });
  assert.equal(await ds.getById("Widgets", "other", true), null);
}));

test("addAll adds each item under its key, which becomes its id", () => withStore(async (ds) => {
  await ds.addAll("Widgets", { w2: { a: 50, b: "Bee50" }, w3: { a: 60, b: "Bee60" } });
  assert.deepEqual(await ds.getById("Widgets", "w3"), { id: "w3", a: 60, b: "Bee60" });
  assert.deepEqual(await ds.getById("Widgets", "w2"), { id: "w2", a: 50, b: "Bee50" });
  await ds.addAll("Widgets", { w2: { a: 51 } }); // an existing key is replaced, as add does
  assert.deepEqual(await ds.getById("Widgets", "w2"), { id: "w2", a: 51 });
  await ds.addAll("Widgets", {});
  assert.equal((await ds.query("Widgets", {})).length, 2);
}));

test("addAll stores all its items or none", () => withStore(async (ds) => {
  class Decimal { constructor(readonly digits: string) {} }
  await assert.rejects(ds.addAll("Widgets", { ok: { a: 1 }, bad: { amount: new Decimal("1.5") as unknown as object } }));
  assert.deepEqual(await ds.query("Widgets", {}), []);
}));

test("values that are class instances (other than Date and Uint8Array) are refused with EBADVALUE", () => withStore(async (ds) => {
  // the app builder's stores keep a BigNumber decimal as a tagged string; we refuse it rather than lose its type
  class BigNumberLike { constructor(readonly c: number[], readonly e: number, readonly s: number) {} }
  const amount = new BigNumberLike([1234, 56000000000000], 3, 1);
  await assert.rejects(ds.add("Widgets", "w1", { amount }), (e: unknown) => e instanceof CrdtdbError && e.code === "EBADVALUE");
  await ds.add("Widgets", "w1", { a: 1 });
  await assert.rejects(ds.update("Widgets", "w1", { amount }), (e: unknown) => e instanceof CrdtdbError && e.code === "EBADVALUE");
}));

/* -------------------------------------------------------------- update */

test("update deep-merges nested objects and keeps fields it does not name", () => withStore(async (ds) => {
  await ds.add("Widgets", "w9", { height: 30, width: 10, extra: { length: 30, diameter: 40 } });
  await ds.update("Widgets", "w9", { height: 77, extra: { diameter: 50 } });
  assert.deepEqual(await ds.getById("Widgets", "w9"), { id: "w9", height: 77, width: 10, extra: { length: 30, diameter: 50 } });
}));

test("update replaces arrays whole", () => withStore(async (ds) => {
  await ds.add("Widgets", "w1", { tags: ["a", "b", "c"], grid: [[1, 2], [3, 4]] });
  await ds.update("Widgets", "w1", { tags: ["z"], grid: [[9]] });
  assert.deepEqual(await ds.getById("Widgets", "w1"), { id: "w1", tags: ["z"], grid: [[9]] });
}));

test("update with null sets the field to null; a nested object replaces a scalar and a scalar a nested object", () => withStore(async (ds) => {
  await ds.add("Widgets", "w1", { a: 1, pos: { x: 1, y: 2 }, n: 5 });
  await ds.update("Widgets", "w1", { a: null, pos: 0, n: { deep: true } });
  assert.deepEqual(await ds.getById("Widgets", "w1"), { id: "w1", a: null, pos: 0, n: { deep: true } });
}));

test("update with an empty nested object leaves that object as it was", () => withStore(async (ds) => {
  await ds.add("Widgets", "w1", { pos: { x: 1 } });
  await ds.update("Widgets", "w1", { pos: {}, extra: {} });
  assert.deepEqual(await ds.getById("Widgets", "w1"), { id: "w1", pos: { x: 1 }, extra: {} });
}));

test("update with an undefined value leaves the field unchanged (ours: elemento's stores delete it)", () => withStore(async (ds) => {
  await ds.add("Widgets", "w1", { a: 1, b: 2, pos: { x: 1 } });
  await ds.update("Widgets", "w1", { a: undefined, pos: { x: undefined }, b: 3 });
  assert.deepEqual(await ds.getById("Widgets", "w1"), { id: "w1", a: 1, b: 3, pos: { x: 1 } });
}));

test("update of a missing or removed id rejects with the not-found message", () => withStore(async (ds) => {
  await assert.rejects(ds.update("Widgets", "xxx", { height: 77 }), { message: "Object with id 'xxx' not found in collection 'Widgets'" });
  await ds.add("Widgets", "w1", { a: 1 });
  await ds.remove("Widgets", "w1");
  await assert.rejects(ds.update("Widgets", "w1", { a: 2 }), { message: "Object with id 'w1' not found in collection 'Widgets'" });
  assert.equal(await ds.getById("Widgets", "w1", true), null);
}));

/* -------------------------------------------------------------- remove */

test("remove deletes the record; removing a missing id resolves and tells no one", () => withStore(async (ds) => {
  await ds.add("Widgets", "w1", { a: 1 });
  await ds.remove("Widgets", "w1");
  await assert.rejects(ds.getById("Widgets", "w1"), { message: "Object with id 'w1' not found in collection 'Widgets'" });
  const seen = watch(ds, "Widgets");
  await ds.remove("Widgets", "never-there");
  await ds.remove("Widgets", "w1");
  assert.deepEqual(seen, []);
}));

/* --------------------------------------------------------------- values */

test("Dates round-trip as Dates, at the top level and nested, through add, addAll and update", () => withStore(async (ds) => {
  const d1 = new Date(2022, 6, 2, 10, 11, 12);
  const d2 = new Date("2024-02-29T23:59:59.999Z");
  await ds.add("Widgets", "w1", { date: d1, nested: { when: d2 }, list: [d1] });
  await ds.addAll("Widgets", { w2: { date: d2 } });
  const w1 = (await ds.getById("Widgets", "w1"))!;
  assert.ok(w1.date instanceof Date && w1.date.getTime() === d1.getTime());
  const nested = w1.nested as { when: Date };
  assert.ok(nested.when instanceof Date && nested.when.getTime() === d2.getTime());
  assert.ok((w1.list as Date[])[0] instanceof Date);
  await ds.update("Widgets", "w1", { date: d2 });
  assert.equal(((await ds.getById("Widgets", "w1"))!.date as Date).getTime(), d2.getTime());
  const [w2] = await ds.query("Widgets", { id: "w2" });
  assert.ok((w2 as { date: unknown }).date instanceof Date);
}));

test("a string that looks like a date stays a string (ours: the TinyBase store turns it into a Date)", () => withStore(async (ds) => {
  await ds.add("Widgets", "w1", { s: "2022-07-02T10:11:12.000Z" });
  assert.equal((await ds.getById("Widgets", "w1"))!.s, "2022-07-02T10:11:12.000Z");
}));

test("plain values round-trip unchanged: numbers, strings, booleans, null, nested objects and arrays", () => withStore(async (ds) => {
  const item = { n: -3, f: 1.25, s: "é ✓ 𝄞", t: true, f2: false, z: null, o: { p: { q: [1, { r: "s" }] } }, e: [] };
  await ds.add("Widgets", "w1", item);
  assert.deepEqual(await ds.getById("Widgets", "w1"), { id: "w1", ...item });
}));

/* ------------------------------------------------------------ read only */

test("a read-only store refuses every write with Read only access and still reads", async () => {
  // a socket that never opens: server-to-client refuses writes before any connection
  const silent: SocketFactory = () => ({
    binaryType: "arraybuffer", readyState: 0, bufferedAmount: 0,
    onopen: null, onclose: null, onerror: null, onmessage: null,
    send() {}, close() {},
  });
  const ds = await CrdtdbDataStore.open({
    dbId: "conformance", collections: "Widgets;Gadgets",
    sync: { url: "ws://127.0.0.1:9", mode: "server-to-client", socket: silent },
  });
  try {
    assert.equal(ds.isReadOnly, true);
    const ro = (e: unknown) => e instanceof Error && e.message === "Read only access";
    await assert.rejects(ds.add("Widgets", "w1", { a: 1 }), ro);
    await assert.rejects(ds.addAll("Widgets", { w1: { a: 1 } }), ro);
    await assert.rejects(ds.update("Widgets", "w1", { a: 1 }), ro);
    await assert.rejects(ds.remove("Widgets", "w1"), ro);
    assert.equal(await ds.getById("Widgets", "w1", true), null);
    assert.deepEqual(await ds.query("Widgets", {}), []);
  } finally {
    await ds.close();
  }
});

/* -------------------------------------------------------- notifications */

test("add sends Add with the id and the whole record, to that collection's observers only", () => withStore(async (ds) => {
  const widgets = watch(ds, "Widgets");
  const gadgets = watch(ds, "Gadgets");
  await ds.add("Widgets", "w1", { a: 10, b: "Bee1", c: true });
  assert.deepEqual(widgets, [{ collection: "Widgets", type: Add, id: "w1", changes: { id: "w1", a: 10, b: "Bee1", c: true } }]);
  assert.deepEqual(gadgets, []);
}));

test("update sends Update with the whole record as it now is, not just the changes", () => withStore(async (ds) => {
  await ds.add("Widgets", "w3", { a: 10, b: "Bee1", c: false, pos: { x: 1 } });
  const seen = watch(ds, "Widgets");
  await ds.update("Widgets", "w3", { c: true, pos: { y: 2 } });
  assert.deepEqual(seen, [{ collection: "Widgets", type: Update, id: "w3", changes: { id: "w3", a: 10, b: "Bee1", c: true, pos: { x: 1, y: 2 } } }]);
}));

test("remove sends Remove with the id and no changes", () => withStore(async (ds) => {
  await ds.add("Widgets", "w4", { a: 10 });
  const seen = watch(ds, "Widgets");
  await ds.remove("Widgets", "w4");
  assert.deepEqual(seen, [{ collection: "Widgets", type: Remove, id: "w4" }]);
  assert.equal(seen[0]!.changes, undefined);
}));

test("add on an existing id sends Update", () => withStore(async (ds) => {
  await ds.add("Widgets", "w1", { a: 1 });
  const seen = watch(ds, "Widgets");
  await ds.add("Widgets", "w1", { b: 2 });
  assert.deepEqual(seen, [{ collection: "Widgets", type: Update, id: "w1", changes: { id: "w1", b: 2 } }]);
}));

test("addAll of several items sends one MultipleChanges, with no id or changes", () => withStore(async (ds) => {
  const widgets = watch(ds, "Widgets");
  const gadgets = watch(ds, "Gadgets");
  await ds.addAll("Widgets", { w2: { a: 10 }, w2a: { a: 20 } });
  assert.deepEqual(widgets, [{ collection: "Widgets", type: MultipleChanges }]);
  assert.deepEqual(gadgets, []);
}));

test("addAll of one item sends Add, as a one-change transaction does in the TinyBase store", () => withStore(async (ds) => {
  const seen = watch(ds, "Widgets");
  await ds.addAll("Widgets", { w1: { a: 10 } });
  assert.deepEqual(seen, [{ collection: "Widgets", type: Add, id: "w1", changes: { id: "w1", a: 10 } }]);
}));

test("an update that changes no value still sends Update (ours: TinyBase sends nothing)", () => withStore(async (ds) => {
  await ds.add("Widgets", "w1", { a: 1 });
  const seen = watch(ds, "Widgets");
  await ds.update("Widgets", "w1", { a: 1 });
  assert.deepEqual(seen, [{ collection: "Widgets", type: Update, id: "w1", changes: { id: "w1", a: 1 } }]);
}));

test("observers hear their own writes before the write's promise resolves, and can read the new state", () => withStore(async (ds) => {
  const order: string[] = [];
  let readInside: Promise<object | null> | undefined;
  ds.observable("Widgets").subscribe((n) => {
    order.push(`${n.type} ${String(n.id)}`);
    readInside ??= ds.getById("Widgets", "w1", true);
  });
  await ds.add("Widgets", "w1", { a: 1 }).then(() => order.push("resolved"));
  assert.deepEqual(order, ["Add w1", "resolved"]);
  assert.deepEqual(await readInside, { id: "w1", a: 1 });
}));

test("observable gives the same observable for a collection each time, and throws at once for an unknown one", () => withStore(async (ds) => {
  assert.equal(ds.observable("Widgets"), ds.observable("Widgets"));
  assert.notEqual(ds.observable("Widgets"), ds.observable("Gadgets"));
  assert.throws(() => ds.observable("Sprockets"), { message: "Collection 'Sprockets' not found" });
}));

test("subscribe takes a function, an observer object or (next, error, complete); unsubscribe stops delivery", () => withStore(async (ds) => {
  const a: string[] = [], b: string[] = [], c: string[] = [];
  const obs = ds.observable("Widgets");
  const sa = obs.subscribe((n) => a.push(n.type));
  const sb = obs.subscribe({ next(n) { b.push(n.type); } });
  const sc = obs.subscribe((n) => c.push(n.type), () => undefined, () => undefined);
  await ds.add("Widgets", "w1", {});
  assert.equal(sb.closed, false);
  sb.unsubscribe();
  assert.equal(sb.closed, true);
  await ds.update("Widgets", "w1", { a: 1 });
  sa.unsubscribe();
  sc.unsubscribe();
  await ds.remove("Widgets", "w1");
  assert.deepEqual(a, [Add, Update]);
  assert.deepEqual(b, [Add]);
  assert.deepEqual(c, [Add, Update]);
}));

test("a cleared copy sends InvalidateAll, with only the collection, to every collection's observers", () => withStore(async (ds) => {
  await ds.add("Widgets", "w1", { a: 1 });
  const widgets = watch(ds, "Widgets");
  const gadgets = watch(ds, "Gadgets");
  await ds.replica.clear();
  assert.deepEqual(widgets, [{ collection: "Widgets", type: InvalidateAll }]);
  assert.deepEqual(gadgets, [{ collection: "Gadgets", type: InvalidateAll }]);
  assert.deepEqual(await ds.query("Widgets", {}), []);
}));

test("close sends InvalidateAll to every collection's observers, as the TinyBase store's close does", async () => {
  const ds = await open();
  const widgets = watch(ds, "Widgets");
  const gadgets = watch(ds, "Gadgets");
  await ds.close();
  assert.deepEqual(widgets, [{ collection: "Widgets", type: InvalidateAll }]);
  assert.deepEqual(gadgets, [{ collection: "Gadgets", type: InvalidateAll }]);
});

test("observables interoperate by Symbol.observable and \"@@observable\", as zen-observable and RxJS look them up", () => withStore(async (ds) => {
  const obs = ds.observable("Widgets");
  const viaString = (obs as unknown as Record<string, () => unknown>)["@@observable"]!();
  const viaSymbol = (obs as unknown as Record<symbol, () => unknown>)[Symbol.for("observable")]!();
  assert.equal(viaString, obs);
  assert.equal(viaSymbol, obs);
}));

/* ---------------------------------------------------------------- types */

/** Compiles only if app code typed as elemento types it compiles against us:
 *  items and changes as interfaces or `object`, criteria as `object`. */
test("the calls accept what elemento's types accept: interface-typed items, object changes and criteria", () => withStore(async (ds) => {
  interface Widget { a: number; b: string }
  const w: Widget = { a: 1, b: "x" };
  const changes: object = { a: 2 };
  const criteria: object = { a: 2 };
  const items: { [id: string]: Widget } = { w2: { a: 3, b: "y" } };
  await ds.add("Widgets", "w1", w);
  await ds.addAll("Widgets", items);
  await ds.update("Widgets", "w1", changes);
  const found: object[] = await ds.query("Widgets", criteria);
  const one: object | null = await ds.getById("Widgets", "w1", false);
  assert.deepEqual(found, [{ id: "w1", a: 2, b: "x" }]);
  assert.deepEqual(one, { id: "w1", a: 2, b: "x" });
}));
