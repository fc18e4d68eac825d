/**
 * Tombstone collection from the JS client's side (docs/js.md,
 * "Collection"), against the real `crdtdb serve` and `crdtdb collect`:
 * a replica back from behind the server's collection floor is resynced
 * whole and forgets what the server collected; the client's acks carry
 * `mine`, so they pin nothing; a resync cut half way starts again.
 */
import test from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { CrdtdbDataStore, type UpdateNotification, type OpenOptions } from "../src/index.js";
import { FileBackend, nodeSocket } from "../src/node.js";
import { encodeFrame, FrameReader, type Message } from "../src/frames.js";
import type { SessionEvent } from "../src/session.js";
import type { SocketFactory } from "../src/sync.js";
import { REMOVE } from "../src/types.js";
import { cli, serve, standIn, until, type Server, withServer as withServerOf } from "./helpers.js";

const COLLS = "Players,Moves";

function open(extra: Partial<OpenOptions> = {}): Promise<CrdtdbDataStore> {
  return CrdtdbDataStore.open({ dbId: "match-1", collections: ["Players", "Moves"], ...extra });
}

function syncTo(srv: Server, more: Partial<NonNullable<OpenOptions["sync"]>> = {}): NonNullable<OpenOptions["sync"]> {
  return { url: srv.url, socket: nodeSocket(), minBackoffMs: 50, maxBackoffMs: 400, ...more };
}

function withServer(fn: (srv: Server, dir: string) => Promise<void>): Promise<void> {
  return withServerOf(COLLS, [], fn, "crdtdb-js-collect-");
}

/** The server's records of a collection, as `crdtdb query` prints them. */
function serverQuery(srv: Server, coll: string): Record<string, unknown>[] {
  return JSON.parse(cli(srv.dir, "query", "match-1", coll)) as Record<string, unknown>[];
}

function collect(dir: string, ...args: string[]): { records: number; floor: number; log_entries: number } {
  return JSON.parse(cli(dir, "collect", "match-1", ...args)) as { records: number; floor: number; log_entries: number };
}

/** Plain JSON (bigints as numbers), to compare with the CLI's output. */
const plain = (v: unknown): unknown => JSON.parse(JSON.stringify(v, (_k, x) => typeof x === "bigint" ? Number(x) : x));

/**
 * A socket factory over nodeSocket that notes every message the client
 * sends and, while `cut()` says so, delivers the server's frames only up to
 * its first RESYNC and then closes the connection (a cut half way).
 */
function tapped(cut: () => boolean, sent: Message[][]): SocketFactory {
  const base = nodeSocket();
  return (url, headers) => {
    const real = base(url, headers);
    const mine: Message[] = [];
    sent.push(mine);
    const outR = new FrameReader(16 << 20), inR = new FrameReader(16 << 20);
    const cutting = cut();
    let dead = false;
    const me = standIn(real, (d) => {
      outR.push(d);
      for (let m = outR.next(); m; m = outR.next()) mine.push(m);
      real.send(d);
    });
    real.onmessage = (e) => {
      if (dead) return;
      if (!cutting) return me.onmessage?.(e);
      // frame by frame, so nothing after the RESYNC reaches the session
      const b = new Uint8Array(e.data as ArrayBuffer);
      inR.push(b);
      for (let m = inR.next(); m; m = inR.next()) {
        me.onmessage?.({ data: framed(m) });
        if (m.t === "resync") { dead = true; real.close(1000, "cut"); return; }
      }
    };
    return me;
  };
}

/** A message framed again (as an ArrayBuffer, what a socket delivers). */
function framed(m: Message): ArrayBuffer {
  const f = encodeFrame(m);
  return f.buffer.slice(f.byteOffset, f.byteOffset + f.byteLength) as ArrayBuffer;
}

/**
 * Leaves replica `a` (a file) behind the server's collection floor: it
 * syncs r1 and keep, goes offline; offline it updates r1; another client
 * removes r1 (after that update); offline, `a` then adds late; the server
 * stops, collects (every peer silent for over 1 ms leaves the horizon) and
 * starts again.  Returns the server as restarted.
 */
async function leaveBehind(srv: Server, aFile: string): Promise<Server> {
  const a = await open({ backend: new FileBackend(aFile), sync: syncTo(srv) });
  await a.add("Players", "r1", { hp: 1 });
  await a.add("Players", "keep", { hp: 1 });
  await a.sync!.whenSynced();
  // a holds some of the server's log too (its watermark moves)
  const b = await open({ sync: syncTo(srv) });
  await b.add("Players", "bx", { hp: 0 });
  await until(async () => (await a.getById("Players", "bx", true)) !== null, "bx at a");
  await a.sync!.whenSynced();
  await a.close();
  await until(async () => (await b.getById("Players", "r1", true)) !== null, "r1 at b");
  // offline, a's update of r1 is stamped before b's remove
  const off = await open({ backend: new FileBackend(aFile) });
  await off.update("Players", "r1", { hp: 2 });
  await b.remove("Players", "r1");
  await b.sync!.whenSynced();
  await b.close();
  // a record created offline after the remove: newer than anything collected
  await off.add("Players", "late", { hp: 3 });
  await off.close();
  await srv.stop();
  const st = collect(srv.dir, "--max-peer-age", "1ms");
  assert.equal(st.records, 1, "the server collected r1's tombstone");
  assert.deepEqual(plain(serverQuery(srv, "Players")), [{ id: "bx", hp: 0 }, { id: "keep", hp: 1 }]);
  return serve(srv.dir, ["--collections", COLLS], srv.port);
}

test("a replica back from behind the collection floor is resynced: the removed record goes, its old offline update stays dropped, a newer record arrives", async () => {
  await withServer(async (srv, dir) => {
    const aFile = join(dir, "a.crdtdb");
    const back = await leaveBehind(srv, aFile);
    try {
      const events: SessionEvent[] = [];
      const seen: UpdateNotification[] = [];
      const a = await open({ backend: new FileBackend(aFile), sync: syncTo(back, { onEvent: (e) => events.push(e) }) });
      a.observable("Players").subscribe((n) => seen.push(n));
      assert.ok(await a.getById("Players", "r1", true), "r1 is still here before the resync");
      await until(async () => (await a.getById("Players", "r1", true)) === null, "r1 forgotten at a", 15_000);
      await a.sync!.whenSynced();
      await until(() => serverQuery(back, "Players").some((r) => r.id === "late"), "late at the server", 15_000);
      assert.ok(events.some((e) => e.type === "resync"), "the server sent RESYNC");
      assert.ok(seen.some((n) => n.type === "Remove" && n.id === "r1"), "the observer saw r1 removed");
      // forgotten like a purge: no tombstone here either
      assert.equal(a.replica.stored("Players", "r1"), undefined);
      const server = cli(back.dir, "id").trim();
      assert.ok(!a.replica.peer(server).resync, "the resync mark is cleared");
      const want = [{ id: "bx", hp: 0 }, { id: "keep", hp: 1 }, { id: "late", hp: 3 }];
      assert.deepEqual(plain(serverQuery(back, "Players")), want);
      assert.deepEqual(plain(await a.query("Players", {})), want);
      await a.close();
      // and it stays gone: a fresh replica sees what the server has
      const fresh = await open({ sync: syncTo(back) });
      await fresh.sync!.whenSynced();
      assert.deepEqual(plain(await fresh.query("Players", {})), want);
      await fresh.close();
    } finally {
      await back.stop();
    }
  });
});

test("a resync moves the client's clock past the server's horizon stamp: a write after it, from a clock 30 s behind, reaches the server", async () => {
  // without it the write is stamped below the horizon, and the server's
  // gate (old writes from behind, for records it holds nothing of) drops it
  await withServer(async (srv, dir) => {
    const aFile = join(dir, "a.crdtdb");
    const slow = () => Date.now() - 30_000;
    let a = await open({ backend: new FileBackend(aFile), now: slow, sync: syncTo(srv) });
    await a.add("Players", "keep", { hp: 1 });
    await a.sync!.whenSynced();
    await a.close();
    const b = await open({ sync: syncTo(srv) });
    await b.add("Players", "r1", { hp: 1 });
    await b.sync!.whenSynced();
    await b.remove("Players", "r1");
    await b.sync!.whenSynced();
    await b.close();
    await srv.stop();
    assert.equal(collect(srv.dir, "--max-peer-age", "1ms").records, 1, "the server collected r1's tombstone");
    const back = await serve(srv.dir, ["--collections", COLLS], srv.port);
    a = null as unknown as CrdtdbDataStore;
    try {
      const resyncs: bigint[] = [];
      a = await open({ backend: new FileBackend(aFile), now: slow, sync: syncTo(back, { onEvent: (e) => { if (e.type === "resync") resyncs.push(e.stamp); } }) });
      await until(() => resyncs.length > 0, "RESYNC");
      await a.sync!.whenSynced();
      assert.ok(a.replica.clock.last > resyncs[0]!, "the clock is past the horizon stamp");
      await a.add("Players", "new", { hp: 7 });
      const rec = a.replica.stored("Players", "new")!;
      assert.ok(rec.base!.hlc > resyncs[0]!, "the write is stamped after the horizon");
      await until(() => serverQuery(back, "Players").some((r) => r.id === "new"), "new at the server", 15_000);
      await a.sync!.whenSynced();
      assert.deepEqual(plain(serverQuery(back, "Players")), [{ id: "keep", hp: 1 }, { id: "new", hp: 7 }]);
    } finally {
      await a?.close();
      await back.stop();
    }
  });
});

test("the JS client's acks pin nothing: once it holds a remove, collect without an age limit drops the tombstone", async () => {
  await withServer(async (srv, dir) => {
    const a = await open({ sync: syncTo(srv) }); // writes, so the server knows it
    const quiet = await open({ sync: syncTo(srv) }); // never writes: proves its id with an empty delta
    await a.add("Players", "x", { hp: 1 });
    await a.sync!.whenSynced();
    const c = join(dir, "c");
    cli(c, "init");
    cli(c, "create", "match-1", "--collections", COLLS);
    cli(c, "add", "match-1", "Players", "r", '{"hp":1}');
    cli(c, "sync", srv.url, "--db", "match-1");
    cli(c, "remove", "match-1", "Players", "r");
    cli(c, "sync", srv.url, "--db", "match-1");
    for (const js of [a, quiet])
      await until(() => js.replica.stored("Players", "r")?.base?.kind === REMOVE, "r's remove at a JS replica");
    await a.sync!.whenSynced();
    await quiet.sync!.whenSynced();
    // the server stores acks every 50 ms (a stop right after a close could
    // lose the last ones): wait until it holds both clients' acks of its log
    const server = cli(srv.dir, "id").trim();
    const last = a.replica.peer(server).received;
    assert.equal(quiet.replica.peer(server).received, last);
    await until(() => {
      const p = cli(srv.dir, "peers", "match-1");
      return [a, quiet].every((js) => new RegExp(`${js.replica.idHex} received \\d+ acked ${last}\\b`).test(p));
    }, "the server's record of the clients' acks");
    await a.close();
    await quiet.close();
    await srv.stop();
    const peers = cli(srv.dir, "peers", "match-1");
    assert.ok(peers.includes(a.replica.idHex), "the writing client is a known peer");
    assert.ok(peers.includes(quiet.replica.idHex), "the quiet client proved its id, so it is a known peer");
    const st = collect(srv.dir);
    assert.equal(st.records, 1, `r's tombstone collected: ${JSON.stringify(st)} ${peers} a ${a.replica.idHex} q ${quiet.replica.idHex}`);
  });
});

test("a resync cut half way asks for everything again (since 0) and then completes", async () => {
  await withServer(async (srv, dir) => {
    const aFile = join(dir, "a.crdtdb");
    const back = await leaveBehind(srv, aFile);
    try {
      const sent: Message[][] = [];
      let cuts = 0;
      const resyncs: bigint[] = [];
      const a = await open({
        backend: new FileBackend(aFile),
        sync: syncTo(back, {
          socket: tapped(() => cuts++ === 0, sent),
          onEvent: (e) => { if (e.type === "resync") resyncs.push(e.stamp); },
        }),
      });
      const server = cli(back.dir, "id").trim();
      const before = a.replica.peer(server).received;
      assert.ok(before > 0);
      await until(async () => (await a.getById("Players", "r1", true)) === null, "r1 forgotten at a", 15_000);
      await a.sync!.whenSynced();
      assert.ok(sent.length >= 2, "it reconnected after the cut");
      const since = (ms: Message[]) => ms.find((m) => m.t === "since") as Extract<Message, { t: "since" }> | undefined;
      assert.equal(since(sent[0]!)?.seq, before, "the first session asks from its watermark");
      assert.equal(since(sent[1]!)?.seq, 0, "the session after the cut asks for everything");
      assert.ok(resyncs.length >= 2, "RESYNC came again");
      // every session signs a delta, empty if need be
      assert.ok(sent[1]!.some((m) => m.t === "delta"));
      assert.ok(!a.replica.peer(server).resync, "the resync mark is cleared");
      const want = [{ id: "bx", hp: 0 }, { id: "keep", hp: 1 }, { id: "late", hp: 3 }];
      await until(() => serverQuery(back, "Players").some((r) => r.id === "late"), "late at the server", 15_000);
      assert.deepEqual(plain(serverQuery(back, "Players")), want);
      assert.deepEqual(plain(await a.query("Players", {})), want);
      const seq = a.replica.seq;
      await a.close(); // an ack waiting goes at once
      // every ack carries `mine`, never beyond our log
      const acks = sent.flat().filter((m) => m.t === "ack") as Extract<Message, { t: "ack" }>[];
      assert.ok(acks.length > 0);
      for (const m of acks) assert.ok(m.mine !== undefined && m.mine <= seq, JSON.stringify(m));
    } finally {
      await back.stop();
    }
  });
});

test("the resync mark is durable: a replica reopened mid-resync asks for everything", async () => {
  await withServer(async (srv, dir) => {
    const aFile = join(dir, "a.crdtdb");
    const back = await leaveBehind(srv, aFile);
    try {
      const sent: Message[][] = [];
      const a = await open({ backend: new FileBackend(aFile), sync: syncTo(back, { socket: tapped(() => true, sent) }) });
      const server = cli(back.dir, "id").trim();
      await until(() => a.replica.peer(server).resync === true, "the resync mark", 15_000);
      await a.close();
      // the file says so after a reopen
      const again = await open({ backend: new FileBackend(aFile) });
      assert.equal(again.replica.peer(server).resync, true);
      assert.ok(await again.getById("Players", "r1", true), "nothing forgotten before the resync ends");
      await again.close();
    } finally {
      await back.stop();
    }
  });
});

test("a fresh client of a trimmed log gets every record: the server walks its records, several deltas of empty range, then the log after the floor", async () => {
  await withServer(async (srv) => {
    const w = await open({ sync: syncTo(srv) });
    const many: Record<string, Record<string, unknown>> = {};
    for (let i = 0; i < 6000; i++) many[`p${i}`] = { hp: i % 101, name: `player ${i}`, pos: { x: i % 977, y: (i * 7) % 991 } };
    await w.addAll("Players", many);
    await w.update("Players", "p5", { pos: { x: -1 } });
    await w.remove("Players", "p6");
    await w.sync!.whenSynced();
    await w.close();
    await srv.stop();
    const st = collect(srv.dir, "--max-peer-age", "1ms"); // the writer is silent: the horizon is the whole log
    assert.ok(st.log_entries > 5000, `the log was trimmed (${st.log_entries} entries)`);
    const back = await serve(srv.dir, ["--collections", COLLS], srv.port);
    try {
      cli(back.dir, "add", "match-1", "Moves", "m1", '{"after":"the trim"}'); // in the log, after the floor
      const fresh = await open({ sync: syncTo(back) });
      await fresh.sync!.whenSynced();
      const want = plain(serverQuery(back, "Players")) as unknown[];
      assert.equal(want.length, 5999);
      assert.deepEqual(plain(await fresh.query("Players", {})), want);
      assert.deepEqual(plain(await fresh.query("Moves", {})), [{ id: "m1", after: "the trim" }]);
      await fresh.close();
    } finally {
      await back.stop();
    }
  });
});
