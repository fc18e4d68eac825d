/**
 * The file journal's rewrites (src/filebackend.ts): a journal grown past
 * twice its live data is rewritten, at open or between commits; one whose
 * entries are all still live (a fresh sync's big commits, an addAll) is
 * never rewritten, however large.  Checked on a real file, through the
 * DataStore, by the file's size and the backend's compact calls.  And its
 * format: records as pages of stored records, journals written before
 * (records as msgpack maps) still read.
 */
import test from "node:test";
import assert from "node:assert/strict";
import { existsSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { CrdtdbDataStore } from "../src/index.js";
import { FileBackend } from "../src/node.js";
import type { Meta } from "../src/backend.js";
import type { StoredRecord } from "../src/types.js";
import { decodeStored, encodeStored } from "../src/recordcodec.js";
import { decodeRecord, readPage } from "../src/storedrecord.js";
import { valueBytes } from "../src/value.js";
import { tempDir } from "./helpers.js";

/** A FileBackend that counts its rewrites between commits. */
class Counting extends FileBackend {
  rewrites = 0;
  override async compact(meta: Meta, records: Map<string, StoredRecord>): Promise<void> {
    this.rewrites++;
    return super.compact(meta, records);
  }
}

const open = (backend: FileBackend) => CrdtdbDataStore.open({ dbId: "journal", collections: "Items", backend });
const pad = "x".repeat(200);
const items = (n: number, from = 0, v = 0) =>
  Object.fromEntries(Array.from({ length: n }, (_, i) => [`r${from + i}`, { n: i, v, pad }]));

test("a journal whose entries are all live is not rewritten, however large", async () => {
  const tmp = tempDir("crdtdb-journal-");
  try {
    const path = join(tmp.path, "a.crdtdb");
    const be = new Counting(path);
    const ds = await open(be);
    // 3 MiB+ of distinct records in big entries, then in small ones
    await ds.addAll("Items", items(6000));
    await ds.addAll("Items", items(4000, 6000));
    for (let i = 0; i < 200; i++) await ds.add("Items", `s${i}`, { n: i, pad });
    assert.ok(statSync(path).size > 3 << 20, `the journal is large: ${statSync(path).size}`);
    assert.equal(be.rewrites, 0, "nothing to drop: no rewrite");
    await ds.close();
  } finally {
    tmp.remove();
  }
});

test("a journal mostly of older versions is rewritten between commits, and reopens with the latest", async () => {
  const tmp = tempDir("crdtdb-journal-");
  try {
    const path = join(tmp.path, "b.crdtdb");
    const be = new Counting(path);
    const ds = await open(be);
    await ds.addAll("Items", items(1000));
    const one = statSync(path).size;
    // the same 1,000 records rewritten: the journal holds ever more dead versions
    let v = 0;
    while (be.rewrites === 0 && v < 20) await ds.addAll("Items", items(1000, 0, ++v));
    assert.ok(be.rewrites >= 1, "rewritten");
    assert.ok(v >= 2 && v <= 5, `rewritten once over half was dead (after ${v + 1} versions)`);
    assert.ok(statSync(path).size < 2 * one, `the file shrank: ${statSync(path).size} against ${one} for one version`);
    await ds.addAll("Items", items(1000, 0, ++v));
    await ds.close();
    const again = await open(new FileBackend(path));
    assert.deepEqual(await again.getById("Items", "r999"), { id: "r999", n: 999, v, pad });
    assert.equal((await again.query("Items", {})).length, 1000);
    await again.close();
  } finally {
    tmp.remove();
  }
});

test("a journal mostly of older versions is rewritten at open", async () => {
  const tmp = tempDir("crdtdb-journal-");
  try {
    const path = join(tmp.path, "c.crdtdb");
    // written by a backend that never rewrites: entries pile up as they are
    class Never extends FileBackend { override shouldCompact(): boolean { return false; } }
    let ds = await open(new Never(path));
    await ds.addAll("Items", items(4000));
    await ds.addAll("Items", items(4000, 0, 1));
    await ds.addAll("Items", items(4000, 0, 2));
    for (let k = 0; k < 70; k++) await ds.remove("Items", `r${k}`); // (entries enough to look at)
    await ds.close();
    const before = statSync(path).size;
    ds = await open(new FileBackend(path));
    const after = statSync(path).size;
    assert.ok(after < before * 0.5, `rewritten at open: ${before} -> ${after}`);
    assert.equal((await ds.query("Items", {})).length, 3930);
    assert.deepEqual(await ds.getById("Items", "r100"), { id: "r100", n: 100, v: 2, pad });
    await ds.close();
    // and a journal that is all live is left as it is
    ds = await open(new FileBackend(path));
    assert.equal(statSync(path).size, after, "not rewritten again");
    await ds.close();
  } finally {
    tmp.remove();
  }
});

/** The journal's entries: [length, msgpack] each. */
function entries(path: string): Record<string, unknown>[] {
  const b = readFileSync(path), out: Record<string, unknown>[] = [];
  for (let o = 0; o + 4 <= b.length;) {
    const n = b.readUInt32BE(o);
    out.push(decodeStored<Record<string, unknown>>(b.subarray(o + 4, o + 4 + n)));
    o += 4 + n;
  }
  return out;
}

test("records go into the journal as pages of stored records, a few bytes a field", async () => {
  const tmp = tempDir("crdtdb-journal-");
  try {
    const path = join(tmp.path, "d.crdtdb");
    const ds = await open(new FileBackend(path));
    const ten = Object.fromEntries(Array.from({ length: 10 }, (_, i) => [`f${i}`, i * 1000]));
    await ds.addAll("Items", Object.fromEntries(Array.from({ length: 2000 }, (_, i) => [`r${i}`, ten])));
    await ds.close();
    const size = statSync(path).size;
    assert.ok(size < 20 * 2000 * 10, `${size} bytes for 20,000 fields`);
    const es = entries(path);
    assert.ok(es.every((e) => !("put" in e)), "no record as a msgpack map");
    assert.ok(es.some((e) => e.page instanceof Uint8Array), "a page");
  } finally {
    tmp.remove();
  }
});

test("a journal written before pages (records as msgpack maps) opens as it was, and goes on in pages", async () => {
  const tmp = tempDir("crdtdb-journal-");
  try {
    const path = join(tmp.path, "e.crdtdb");
    let ds = await open(new FileBackend(path));
    await ds.add("Items", "a", { n: 1, nested: { x: "y" }, when: new Date(5) });
    await ds.addAll("Items", items(50));
    await ds.update("Items", "a", { n: 2 });
    await ds.remove("Items", "r7");
    const want = await ds.query("Items", {});
    await ds.close();
    // the same journal in the old shape: each page as [key, {base, leaves}] pairs
    const old: Buffer[] = [];
    for (const e of entries(path)) {
      if (e.page) {
        const put: [string, unknown][] = [];
        readPage(e.page as Uint8Array, (k, b) => {
          const r = decodeRecord(b);
          put.push([k, { base: r.base, leaves: r.leaves.map((l) => ({ path: l.path, hlc: l.hlc, origin: l.origin, value: valueBytes(l), seq: l.seq, src: l.src })) }]);
        });
        delete e.page;
        e.put = put;
      } else e.put = [];
      const body = encodeStored(e), h = Buffer.alloc(4);
      h.writeUInt32BE(body.length);
      old.push(h, Buffer.from(body));
    }
    writeFileSync(path, Buffer.concat(old));
    assert.ok(entries(path).every((e) => Array.isArray(e.put) && !("page" in e)), "written in the old shape");
    ds = await open(new FileBackend(path));
    assert.deepEqual(await ds.query("Items", {}), want);
    await ds.update("Items", "r8", { n: 80 });
    await ds.close();
    ds = await open(new FileBackend(path));
    assert.deepEqual(await ds.getById("Items", "r8"), { id: "r8", n: 80, v: 0, pad });
    assert.deepEqual(await ds.getById("Items", "a"), { id: "a", n: 2, nested: { x: "y" }, when: new Date(5) });
    assert.equal(await ds.getById("Items", "r7", true), null);
    await ds.close();
  } finally {
    tmp.remove();
  }
});

/* ------------------------------------------ records of different sizes */

/** A FileBackend that counts what it appends and what its rewrites write. */
class Metered extends FileBackend {
  rewrites = 0;
  rewritten = 0;
  override async compact(meta: Meta, records: Map<string, StoredRecord>): Promise<void> {
    this.rewrites++;
    await super.compact(meta, records);
    this.rewritten += statSync((this as unknown as { path: string }).path).size;
  }
}

test("a journal of commits that each rewrite one big record and add one small one stays bounded", async () => {
  const tmp = tempDir("crdtdb-journal-");
  try {
    const path = join(tmp.path, "d.crdtdb");
    const be = new Metered(path);
    const ds = await open(be);
    const big = "y".repeat(20_000);
    // each commit: the same big record (a new version) and one new small record
    for (let i = 0; i < 300; i++)
      await ds.addAll("Items", { doc: { v: i, big }, [`s${i}`]: { n: i } });
    await ds.close();
    const size = statSync(path).size;
    // what it holds: one 20 KB record and 300 small ones (a snapshot ~100 KB)
    const again = await open(new FileBackend(path));
    assert.equal((await again.query("Items", {})).length, 301);
    await again.close();
    const reopened = statSync(path).size;
    // the old rule (4 x the size after open, and 1 MiB) rewrote it by ~1 MiB
    assert.ok(size < 2 << 20 || reopened < size,
      `the journal is ${size} bytes for ~100 KB of live data, never rewritten (rewrites ${be.rewrites}; ${reopened} after reopening)`);
  } finally {
    tmp.remove();
  }
});

test("small updates beside a few big records do not rewrite it over and over", async () => {
  const tmp = tempDir("crdtdb-journal-");
  try {
    const path = join(tmp.path, "e.crdtdb");
    const be = new Metered(path);
    const ds = await open(be);
    // ten 900 KB records and 90 small ones, in one commit (shared evenly: ~90 KB each)
    await ds.addAll("Items", { ...Object.fromEntries(Array.from({ length: 10 }, (_, i) => [`big${i}`, { a: "z".repeat(900_000) }])), ...Object.fromEntries(Array.from({ length: 90 }, (_, i) => [`r${i}`, { n: i }])) });
    const start = statSync(path).size;
    let appended = 0;
    for (let i = 0; i < 300; i++) {
      const before = be.rewrites ? -1 : statSync(path).size;
      await ds.update("Items", `r${i % 90}`, { n: -i });
      if (before >= 0 && !be.rewrites) appended += statSync(path).size - before;
    }
    await ds.close();
    assert.equal(be.rewrites, 0,
      `${be.rewrites} rewrites of a ${start}-byte journal (${be.rewritten} bytes written) for 300 small updates (the first rewrite after ${appended} bytes appended)`);
  } finally {
    tmp.remove();
  }
});

test("a torn last entry is dropped at open; an unreadable entry, or a length past the end, with commits after it is ECORRUPT and the file is left as it is", async () => {
  const dir = tempDir();
  const path = join(dir.path, "c.crdtdb");
  const ds = await open(new FileBackend(path));
  for (const id of ["r0", "r1", "r2"]) await ds.add("Items", id, { n: id, pad });
  await ds.close();
  const whole = readFileSync(path);
  const starts: number[] = [];
  for (let off = 0; off + 4 <= whole.length; off += 4 + whole.readUInt32BE(off)) starts.push(off);
  assert.ok(starts.length >= 4, "a meta entry, then a commit a record");
  const ids = async (): Promise<string[]> => {
    const s = await open(new FileBackend(path));
    try { return (await s.query("Items", {})).map((r) => r.id as string).sort(); } finally { await s.close(); }
  };
  const last = starts.at(-1)!;
  // a crash mid-write: the last entry cut short, or zeros past what was written
  writeFileSync(path, whole.subarray(0, last + 4 + 3));
  assert.deepEqual(await ids(), ["r0", "r1"]);
  writeFileSync(path, Buffer.concat([whole, Buffer.alloc(100)]));
  assert.deepEqual(await ids(), ["r0", "r1", "r2"]);
  // a readable length over bytes that are not an entry, with commits after
  const damaged = Buffer.from(whole);
  damaged.fill(0xc1, starts.at(-2)! + 4, starts.at(-2)! + 12);
  writeFileSync(path, damaged);
  await assert.rejects(ids(), { code: "ECORRUPT", message: /entry at byte \d+ .* unreadable/ });
  assert.deepEqual(readFileSync(path), damaged, "nothing rewritten");
  // a damaged length that runs past the end, whole entries after it: not a torn tail
  for (const at of [starts[1]!, starts.at(-2)!]) {
    const long = Buffer.from(whole);
    long.writeUInt32BE(0x7fff_ffff, at);
    writeFileSync(path, long);
    await assert.rejects(ids(), { code: "ECORRUPT", message: new RegExp(`entry at byte ${at} .* claims 2147483647 bytes`) });
    assert.deepEqual(readFileSync(path), long, "nothing rewritten");
  }
  // the last entry's length damaged so: nothing follows it, it reads as torn
  const lastLong = Buffer.from(whole);
  lastLong.writeUInt32BE(0x7fff_ffff, last);
  writeFileSync(path, lastLong);
  assert.deepEqual(await ids(), ["r0", "r1"]);
  dir.remove();
});

test("one store per replica file: a second open fails with EBUSY, in this process or while another live process holds it; a dead process's lock is taken over", async () => {
  const tmp = tempDir("crdtdb-lock-");
  try {
    const path = join(tmp.path, "a.crdtdb"), lock = path + ".lock";
    const a = await open(new FileBackend(path));
    await a.add("Items", "r1", { n: 1 });
    assert.equal(readFileSync(lock, "utf8").trim(), String(process.pid), "the lock names its process");
    await assert.rejects(open(new FileBackend(path)), { code: "EBUSY", message: `the replica file '${path}' is open in this process` });
    await assert.rejects(FileBackend.destroy(path), { code: "EBUSY" });
    await a.close();
    assert.ok(!existsSync(lock), "the lock goes with the store");
    // another live process's lock (this one's parent stands in for it)
    writeFileSync(lock, `${process.ppid}\n`);
    await assert.rejects(open(new FileBackend(path)), { code: "EBUSY", message: `the replica file '${path}' is open in process ${process.ppid}` });
    // a crashed process's: no such process (pid_max is at most 2^22)
    writeFileSync(lock, "4194304\n");
    const b = await open(new FileBackend(path));
    assert.deepEqual(await b.getById("Items", "r1"), { id: "r1", n: 1 }, "the same copy");
    await b.close();
    // one left by this process id before a restart, no store holding it
    writeFileSync(lock, `${process.pid}\n`);
    const c = await open(new FileBackend(path));
    await c.close();
    await FileBackend.destroy(path);
    assert.ok(!existsSync(path) && !existsSync(lock));
  } finally {
    tmp.remove();
  }
});

test("a copy is one database's: opening it as another is EINVAL, and nothing changes", async () => {
  const tmp = tempDir("crdtdb-dbid-");
  try {
    const path = join(tmp.path, "a.crdtdb");
    const a = await open(new FileBackend(path));
    await a.add("Items", "r1", { n: 1 });
    await a.close();
    const before = readFileSync(path);
    await assert.rejects(CrdtdbDataStore.open({ dbId: "other", collections: "Items", backend: new FileBackend(path) }),
      { code: "EINVAL", message: "this copy is of database 'journal', not 'other'" });
    assert.deepEqual(readFileSync(path), before, "nothing written");
    assert.ok(!existsSync(path + ".lock"), "and the lock let go");
    const again = await open(new FileBackend(path));
    assert.deepEqual(await again.getById("Items", "r1"), { id: "r1", n: 1 });
    await again.close();
  } finally {
    tmp.remove();
  }
});
