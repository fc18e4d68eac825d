/**
 * The end of a full resync (Replica.resyncEnd, docs/protocol.md
 * "Collection and full resync") and its durable mark, in every backend:
 * what is forgotten, what stays, what observers see, and that the mark
 * survives a reopen until the resync ends.
 */
import test from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { IDBFactory } from "fake-indexeddb";
import { IndexedDBBackend, MemoryBackend } from "../src/index.js";
import { FileBackend } from "../src/node.js";
import { Replica, type Change, type Held } from "../src/replica.js";
import { packHlc } from "../src/hlc.js";
import { ADD, REMOVE } from "../src/types.js";
import { valueBytes } from "../src/value.js";
import { decodeDelta } from "../src/delta.js";
import type { Backend } from "../src/backend.js";
import { ClientSession, TWO_WAY, type SessionEvent } from "../src/session.js";
import { encodeFrame, FrameReader, type Message } from "../src/frames.js";
import { sleep, tempDir } from "./helpers.js";

const SERVER = "ab".repeat(32);

interface Kind {
  name: string;
  make(): Backend;
  /** Reopens see what was stored (not so for memory). */
  durable: boolean;
}

function kinds(dir: string): Kind[] {
  const factory = new IDBFactory();
  return [
    { name: "memory", make: () => new MemoryBackend(), durable: false },
    { name: "file", make: () => new FileBackend(join(dir, "r.crdtdb")), durable: true },
    { name: "IndexedDB", make: () => new IndexedDBBackend({ name: "r", indexedDB: factory, locks: null }), durable: true },
  ];
}

/** A replica holding: acked1 (numbered up to what the server acked),
 *  old (added before the stamp, updated after it), held (the snapshot
 *  carries it) and fresh (after the stamp, never acked). */
async function setup(backend: Backend, clock: { t: number }): Promise<{ r: Replica; acked: number }> {
  const r = await Replica.open({ dbId: "db", collections: ["C"], backend, now: () => clock.t });
  clock.t = 1000;
  await r.add("C", [["old", { v: 1 }], ["held", { v: 1 }]]);
  clock.t = 3000;
  await r.add("C", [["acked1", { v: 1 }]]);
  const acked = r.seq;
  await r.update("C", "old", { w: 2 });
  await r.add("C", [["fresh", { v: 1 }]]);
  return { r, acked };
}

const STAMP = packHlc(2000, 0);

test("resyncEnd forgets what the server saw or is older than its horizon, keeps what is newer, and clears the mark (every backend)", async () => {
  const d = tempDir();
  try {
    for (const k of kinds(d.path)) {
      const clock = { t: 0 };
      const { r, acked } = await setup(k.make(), clock);
      await r.markResync(SERVER, true);
      assert.equal(r.peer(SERVER).resync, true, k.name);
      if (k.durable) { // the mark survives a reopen
        await r.close();
        const again = await Replica.open({ dbId: "db", collections: ["C"], backend: k.make(), now: () => clock.t });
        assert.equal(again.peer(SERVER).resync, true, `${k.name}: the mark after a reopen`);
        await again.close();
      }
      const rr = k.durable ? await Replica.open({ dbId: "db", collections: ["C"], backend: k.make(), now: () => clock.t }) : r;
      const seen: Change[][] = [];
      rr.onChange((c) => seen.push(c));
      const seq = rr.seq;
      const n = await rr.resyncEnd(SERVER, STAMP, acked, new Map<string, Held>([["C\u0000held", "b"]]), false);
      assert.equal(n, 2, k.name);
      // like a purge: nothing numbered, no tombstone
      assert.equal(rr.seq, seq, `${k.name}: no change-log entry`);
      assert.equal(rr.stored("C", "acked1"), undefined, `${k.name}: acked1 forgotten whole`);
      assert.equal(rr.get("C", "old"), null, `${k.name}: old's add is gone`);
      assert.deepEqual(rr.stored("C", "old")!.base, null, `${k.name}: no tombstone`);
      assert.equal(rr.stored("C", "old")!.leaves.length, 1, `${k.name}: its newer update stays (and travels)`);
      assert.deepEqual(rr.get("C", "held"), { id: "held", v: 1 }, k.name);
      assert.deepEqual(rr.get("C", "fresh"), { id: "fresh", v: 1 }, k.name);
      assert.ok(!rr.peer(SERVER).resync, `${k.name}: the mark is cleared`);
      assert.equal(seen.length, 1, `${k.name}: one commit`);
      assert.deepEqual(seen[0]!.map((c) => [c.id, c.was, c.visible]).sort(), [["acked1", true, false], ["old", true, false]], k.name);
      await rr.close();
      if (k.durable) { // and all of it is stored
        const after = await Replica.open({ dbId: "db", collections: ["C"], backend: k.make(), now: () => clock.t });
        assert.ok(!after.peer(SERVER).resync, `${k.name}: no mark after a reopen`);
        assert.equal(after.stored("C", "acked1"), undefined, k.name);
        assert.equal(after.get("C", "old"), null, k.name);
        assert.deepEqual(after.get("C", "fresh"), { id: "fresh", v: 1 }, k.name);
        // what export sends is what is left: the log has no dropped register
        const x = await after.exportFor(new Uint8Array(32).fill(0xab), 0, { all: true });
        const recs = (await Promise.all(x.deltas.map((dd) => decodeDelta(dd.bytes, after.limits)))).flatMap((b) => b.records);
        assert.deepEqual(recs.map((rec) => [rec.id, rec.base?.kind ?? null, rec.fields.length]).sort(),
          [["fresh", ADD, 1], ["held", ADD, 1], ["old", null, 1]], k.name);
        await after.close();
      }
    }
  } finally {
    d.remove();
  }
});

test("a shared replica ends a resync with removes of its own, which it sends on", async () => {
  const clock = { t: 0 };
  const { r, acked } = await setup(new MemoryBackend(), clock);
  clock.t = 4000;
  const seq = r.seq;
  const n = await r.resyncEnd(SERVER, STAMP, acked, new Map<string, Held>([["C\u0000held", "b"]]), true);
  assert.equal(n, 2);
  for (const id of ["acked1", "old"]) {
    const s = r.stored("C", id)!;
    assert.equal(s.base?.kind, REMOVE, id);
    assert.ok(s.base!.seq > seq, `${id}'s remove is numbered, so it is sent`);
  }
  assert.equal(r.seq, seq + 2);
  assert.deepEqual(r.get("C", "fresh"), { id: "fresh", v: 1 });
  await r.close();
});

test("markResync on, then off with nothing resynced, leaves the peer as it was", async () => {
  const r = await Replica.open({ dbId: "db", collections: ["C"], backend: new MemoryBackend() });
  await r.ackFrom(SERVER, 0);
  await r.markResync(SERVER, true);
  await r.markResync(SERVER, false);
  assert.deepEqual(r.peer(SERVER), { received: 0, acked: 0, points: [] });
  await r.close();
});

/** A replica holding, besides setup's, records the snapshot carried only
 *  leaves of: lold (added before the stamp, updated after it), lseen
 *  (added before the stamp, never updated), lacked (added after the stamp
 *  but within what the server acked) and lnew (after both). */
async function setupLeaves(backend: Backend, clock: { t: number }): Promise<{ r: Replica; acked: number }> {
  const r = await Replica.open({ dbId: "db", collections: ["C"], backend, now: () => clock.t });
  clock.t = 1000;
  await r.add("C", [["lold", { v: 1 }], ["lseen", { v: 1 }], ["gone", { v: 1 }]]);
  clock.t = 3000;
  await r.add("C", [["lacked", { v: 1 }]]);
  const acked = r.seq;
  await r.update("C", "lold", { w: 2 });
  await r.add("C", [["lnew", { v: 1 }]]);
  return { r, acked };
}

const LEAVES = new Map<string, Held>([["C\u0000lold", "l"], ["C\u0000lseen", "l"], ["C\u0000lacked", "l"], ["C\u0000lnew", "l"]]);

test("resyncEnd: a record the snapshot carried only leaves of loses only a base the server saw, never its leaves (every backend)", async () => {
  const d = tempDir();
  try {
    for (const k of kinds(d.path)) {
      const clock = { t: 0 };
      const { r, acked } = await setupLeaves(k.make(), clock);
      await r.markResync(SERVER, true);
      const leavesOf = (rr: Replica, id: string) => rr.stored("C", id)!.leaves.map((l) => [l.path.join("."), valueBytes(l)]).sort();
      const before = Object.fromEntries(["lold", "lseen", "lacked", "lnew"].map((id) => [id, leavesOf(r, id)]));
      const seen: Change[][] = [];
      r.onChange((c) => seen.push(c));
      const seq = r.seq;
      const n = await r.resyncEnd(SERVER, STAMP, acked, LEAVES, false);
      assert.equal(n, 4, `${k.name}: lold, lseen, lacked and gone`);
      assert.equal(r.seq, seq, `${k.name}: no change-log entry`);
      const check = (rr: Replica, when: string) => {
        assert.equal(rr.stored("C", "gone"), undefined, `${k.name} ${when}: a record not held goes whole`);
        for (const id of ["lold", "lseen", "lacked"]) {
          assert.equal(rr.stored("C", id)!.base, null, `${k.name} ${when}: ${id}'s base the server saw is gone, no tombstone`);
          assert.deepEqual(leavesOf(rr, id), before[id], `${k.name} ${when}: ${id} keeps all its leaves, seen or not`);
          assert.equal(rr.get("C", id), null, `${k.name} ${when}: ${id} without its add is not visible`);
        }
        assert.equal(rr.stored("C", "lnew")!.base!.kind, ADD, `${k.name} ${when}: lnew's base is newer than the server knows`);
        assert.deepEqual(rr.get("C", "lnew"), { id: "lnew", v: 1 }, `${k.name} ${when}`);
      };
      check(r, "now");
      assert.equal(seen.length, 1, `${k.name}: one commit`);
      assert.deepEqual(seen[0]!.map((c) => [c.id, c.was, c.visible]).sort(),
        [["gone", true, false], ["lacked", true, false], ["lold", true, false], ["lseen", true, false]], k.name);
      await r.close();
      if (k.durable) {
        const after = await Replica.open({ dbId: "db", collections: ["C"], backend: k.make(), now: () => clock.t });
        check(after, "after a reopen");
        assert.ok(!after.peer(SERVER).resync, `${k.name}: no mark after a reopen`);
        await after.close();
      }
    }
  } finally {
    d.remove();
  }
});

test("a shared replica removes a record held with leaves only when the server saw its base, and no other", async () => {
  const clock = { t: 0 };
  const { r, acked } = await setupLeaves(new MemoryBackend(), clock);
  clock.t = 4000;
  const seq = r.seq;
  const n = await r.resyncEnd(SERVER, STAMP, acked, LEAVES, true);
  assert.equal(n, 4);
  for (const id of ["lold", "lseen", "lacked", "gone"]) assert.equal(r.stored("C", id)!.base?.kind, REMOVE, id);
  assert.equal(r.seq, seq + 4);
  assert.deepEqual(r.get("C", "lnew"), { id: "lnew", v: 1 });
  await r.close();
});

test("apply notes what a resync's snapshot carried of each record: 'b' with its add or remove (which stays), 'l' leaves only", async () => {
  const s = await Replica.open({ dbId: "db", collections: ["C"], backend: new MemoryBackend() });
  const r = await Replica.open({ dbId: "db", collections: ["C"], backend: new MemoryBackend() });
  await s.add("C", [["x", { v: 1 }]]);
  const all = (await s.exportFor(r.id, 0, { all: true })).deltas;
  const s1 = s.seq;
  await s.update("C", "x", { v: 2 });
  const upd = (await s.exportFor(r.id, s1, { all: true })).deltas;
  assert.equal(all.length, 1);
  assert.equal(upd.length, 1);
  assert.equal((await decodeDelta(upd[0]!.bytes, s.limits)).records[0]!.base, null, "the update carries leaves only");
  const held = new Map<string, Held>();
  await r.apply(upd[0]!.bytes, s.id, held);
  assert.deepEqual([...held], [["C\u0000x", "l"]]);
  await r.apply(all[0]!.bytes, s.id, held);
  assert.deepEqual([...held], [["C\u0000x", "b"]]);
  await r.apply(upd[0]!.bytes, s.id, held);
  assert.deepEqual([...held], [["C\u0000x", "b"]], "leaves after the base leave it 'b'");
  await s.close();
  await r.close();
});

test("markResync with a stamp takes it into the clock, stored with the mark; too far ahead: ECLOCK, nothing stored", async () => {
  const d = tempDir();
  try {
    for (const k of kinds(d.path)) {
      const clock = { t: 10_000 };
      const r = await Replica.open({ dbId: "db", collections: ["C"], backend: k.make(), now: () => clock.t, maxClockSkewMs: 60_000 });
      const ahead = packHlc(40_000, 5);
      await r.markResync(SERVER, true, ahead);
      assert.equal(r.peer(SERVER).resync, true, k.name);
      await r.add("C", [["x", { v: 1 }]]);
      assert.ok(r.stored("C", "x")!.base!.hlc > ahead, `${k.name}: a write after the resync is newer than its stamp`);
      // a second RESYNC (already marked) still moves the clock
      await r.markResync(SERVER, true, packHlc(50_000, 0));
      assert.ok(r.clock.last > packHlc(50_000, 0), k.name);
      const last = r.clock.last;
      await assert.rejects(r.markResync(SERVER, true, packHlc(10_000 + 60_000 + 100_000, 0)), { code: "ECLOCK" }, k.name);
      assert.equal(r.clock.last, last, `${k.name}: a refused stamp leaves the clock`);
      await r.close();
      if (k.durable) { // the clock was stored with the mark
        const again = await Replica.open({ dbId: "db", collections: ["C"], backend: k.make(), now: () => clock.t });
        assert.ok(again.clock.last > packHlc(50_000, 0), `${k.name}: the clock after a reopen`);
        assert.equal(again.peer(SERVER).resync, true, k.name);
        await again.close();
      }
    }
  } finally {
    d.remove();
  }
});

test("a second RESYNC mid-resync starts over: the records noted so far and what the server acked are taken again", async () => {
  // a collection at the server during a resync sends RESYNC again and its
  // export restarts from 0: what the first pass carried (x, collected
  // since) is not held any more, and what the server acked in between
  // (our "mine") is what it had seen when the second snapshot began
  const clock = { t: 1000 };
  const srv = await Replica.open({ dbId: "db", collections: ["C"], backend: new MemoryBackend(), now: () => 1000 });
  const r = await Replica.open({ dbId: "db", collections: ["C"], backend: new MemoryBackend(), now: () => clock.t });
  await srv.add("C", [["x", { v: 1 }]]);
  const dx = (await srv.exportFor(r.id, 0)).deltas;
  const sx = srv.seq;
  await srv.add("C", [["y", { v: 1 }]]);
  const dy = (await srv.exportFor(r.id, sx)).deltas;
  assert.equal(dx.length, 1);
  assert.equal(dy.length, 1);
  clock.t = 5000;
  await r.add("C", [["mine", { v: 1 }]]);
  const mine = r.seq;
  const events: SessionEvent[] = [];
  const sent: Message[] = [];
  const reader = new FrameReader(1 << 20);
  const s = new ClientSession(r, {
    mode: TWO_WAY, ackDelayMs: 0,
    send: (f) => { reader.push(f.slice()); for (let m = reader.next(); m; m = reader.next()) sent.push(m); },
    onEvent: (e) => events.push(e),
  });
  const feed = async (...ms: Message[]) => { for (const m of ms) s.receive(encodeFrame(m)); await s.idle(); await sleep(0); };
  s.start();
  await feed({ t: "hello", version: 1, dbId: "db", replicaId: srv.id, mode: TWO_WAY }, { t: "since", seq: 0 });
  await feed({ t: "resync", stamp: packHlc(2000, 0) }, { t: "delta", delta: dx[0]!.bytes }, { t: "ack", seq: mine });
  assert.ok(r.stored("C", "x"), "the first pass brought x");
  await feed({ t: "resync", stamp: packHlc(3000, 0) }, { t: "delta", delta: dy[0]!.bytes }, { t: "uptodate", seq: srv.seq });
  assert.ok(events.some((e) => e.type === "caughtUp"), JSON.stringify(events.map((e) => e.type)));
  assert.deepEqual(events.filter((e) => e.type === "error"), []);
  assert.ok(!r.peer(srv.idHex).resync, "the resync ended");
  assert.equal(r.stored("C", "x"), undefined, "x, carried only by the first pass, is gone");
  assert.equal(r.stored("C", "mine"), undefined, "mine, acked before the second pass began and not in it, is gone");
  assert.deepEqual(r.get("C", "y"), { id: "y", v: 1 });
  s.close();
  await srv.close();
  await r.close();
});

test("a RESYNC stamped too far ahead of our clock ends the session with ECLOCK, nothing noted", async () => {
  const srv = await Replica.open({ dbId: "db", collections: ["C"], backend: new MemoryBackend() });
  const r = await Replica.open({ dbId: "db", collections: ["C"], backend: new MemoryBackend(), now: () => 10_000, maxClockSkewMs: 60_000 });
  const events: SessionEvent[] = [];
  const sent: Message[] = [];
  const reader = new FrameReader(1 << 20);
  const s = new ClientSession(r, {
    mode: TWO_WAY, ackDelayMs: 0,
    send: (f) => { reader.push(f.slice()); for (let m = reader.next(); m; m = reader.next()) sent.push(m); },
    onEvent: (e) => events.push(e),
  });
  s.start();
  s.receive(encodeFrame({ t: "hello", version: 1, dbId: "db", replicaId: srv.id, mode: TWO_WAY }));
  s.receive(encodeFrame({ t: "since", seq: 0 }));
  const before = r.clock.last;
  s.receive(encodeFrame({ t: "resync", stamp: packHlc(10_000 + 60_000 + 1000, 0) }));
  await s.idle();
  await sleep(0);
  assert.ok(s.closed, "the session ended");
  assert.deepEqual(events.filter((e) => e.type === "error").map((e) => e.type === "error" && [e.code, e.fatal]), [["ECLOCK", true]]);
  assert.ok(sent.some((m) => m.t === "error"), "the server is told");
  assert.ok(!r.peer(srv.idHex).resync, "no resync mark");
  assert.equal(r.clock.last, before, "the clock untouched");
  await srv.close();
  await r.close();
});
