/**
 * The JS client against the real server: `crdtdb serve` on 127.0.0.1 and
 * the `crdtdb` command as a C replica beside JS replicas.
 */
import test from "node:test";
import assert from "node:assert/strict";
import { copyFileSync } from "node:fs";
import { join } from "node:path";
import { CrdtdbDataStore, type UpdateNotification, type OpenOptions } from "../src/index.js";
import { FileBackend, nodeSocket } from "../src/node.js";
import { cli, serve, until, type Server, withServer as withServerOf } from "./helpers.js";

const COLLS = "Players,Moves";

function client(srv: Server, extra: Partial<OpenOptions> = {}, sync: Partial<NonNullable<OpenOptions["sync"]>> = {}) {
  return CrdtdbDataStore.open({
    dbId: "match-1", collections: ["Players", "Moves"], ...extra,
    sync: { url: srv.url, socket: nodeSocket(), minBackoffMs: 50, maxBackoffMs: 400, ...sync },
  });
}

function withServer(args: string[], fn: (srv: Server, dir: string) => Promise<void>): Promise<void> {
  return withServerOf(COLLS, args, fn, "crdtdb-js-");
}

test("a JS write reaches a C replica, and a C write reaches JS live", async () => {
  await withServer([], async (srv, dir) => {
    const js = await client(srv);
    const seen: UpdateNotification[] = [];
    js.observable("Players").subscribe((n) => seen.push(n));
    await js.add("Players", "ann", { name: "Ann", pos: { x: 1, y: 2 }, big: 2n ** 62n, f: 2.5 });
    await js.sync!.whenSynced();
    const c = join(dir, "c");
    cli(c, "init");
    cli(c, "create", "match-1", "--collections", COLLS);
    cli(c, "sync", srv.url, "--db", "match-1");
    assert.deepEqual(JSON.parse(cli(c, "get", "match-1", "Players", "ann")),
      { id: "ann", big: 2 ** 62, f: 2.5, name: "Ann", pos: { x: 1, y: 2 } });
    cli(c, "update", "match-1", "Players", "ann", '{"pos":{"y":7}}');
    cli(c, "add", "match-1", "Players", "bob", '{"name":"Bob"}');
    cli(c, "sync", srv.url, "--db", "match-1");
    await until(async () => (await js.getById("Players", "bob", true)) !== null, "bob at the JS replica");
    assert.deepEqual(await js.getById("Players", "ann"), { id: "ann", big: 2n ** 62n, f: 2.5, name: "Ann", pos: { x: 1, y: 7 } });
    assert.ok(seen.some((n) => n.type === "Add" && n.id === "bob" || n.type === "MultipleChanges"));
    // the C replica's query and the JS query agree
    const cq = JSON.parse(cli(c, "query", "match-1", "Players"));
    const jq = JSON.parse(JSON.stringify(await js.query("Players", {}), (_k, v) => typeof v === "bigint" ? Number(v) : v));
    assert.deepEqual(jq, cq);
    await js.close();
  });
});

test("two JS replicas sync live; offline writes go on reconnect", async () => {
  await withServer([], async (srv, dir) => {
    const a = await client(srv, { backend: new FileBackend(join(dir, "a.crdtdb")) });
    const b = await client(srv);
    await a.add("Moves", "m1", { by: "a", at: 1 });
    await until(async () => (await b.getById("Moves", "m1", true)) !== null, "m1 at b");
    // the server goes away; both write offline
    await srv.stop();
    await until(() => a.syncStatus?.state === "offline", "a offline");
    await a.add("Moves", "m2", { by: "a", at: 2 });
    await b.update("Moves", "m1", { seen: true });
    const back = await serve(srv.dir, ["--collections", COLLS], srv.port);
    try {
      await until(async () => (await b.getById("Moves", "m2", true)) !== null, "m2 at b after reconnect", 15_000);
      await until(async () => (await a.getById("Moves", "m1"))?.seen === true, "m1.seen at a", 15_000);
      assert.deepEqual(await a.query("Moves", {}), await b.query("Moves", {}));
    } finally {
      await a.close();
      await b.close();
      await back.stop();
    }
  });
});

test("a copied replica file: the copy finds the server holding more of its log than it wrote, refuses with EFORK and stops syncing", async () => {
  await withServer([], async (srv, dir) => {
    const fa = join(dir, "a.crdtdb"), fb = join(dir, "b.crdtdb");
    const a = await client(srv, { backend: new FileBackend(fa) });
    await a.add("Moves", "m1", { by: "a" });
    await until(() => a.syncStatus?.state === "synced", "a synced");
    await a.close();
    copyFileSync(fa, fb); // a backup, or a profile copied to another machine
    const a2 = await client(srv, { backend: new FileBackend(fa) });
    await a2.add("Moves", "m2", { by: "a" }); // the server now holds more of this id's log than the copy has
    await until(() => a2.syncStatus?.state === "synced", "a synced again");
    await a2.close();
    const b = await client(srv, { backend: new FileBackend(fb) }, { minBackoffMs: 50, maxBackoffMs: 50 });
    try {
      await until(() => b.syncStatus?.state === "stopped", "the copy stops syncing", 10_000);
      assert.equal(b.syncStatus?.error?.code, "EFORK");
      assert.match(b.syncStatus!.error!.message, /server holds \d+ of this replica's changes, more than the \d+ it wrote/);
      await new Promise((r) => setTimeout(r, 300));
      assert.equal(b.syncStatus?.state, "stopped", "no retry: the same refusal would come again");
    } finally {
      await b.close();
    }
  });
});

test("in Node, crdtdb/node's sockets are the default: no socket option needed; a URL that is not the server's base stops (EINVAL)", async () => {
  await withServer([], async (srv) => {
    const a = await CrdtdbDataStore.open({ dbId: "match-1", collections: ["Players", "Moves"], sync: { url: srv.url } });
    try {
      await a.add("Moves", "m1", { by: "a" });
      await a.sync!.whenSynced();
      assert.equal(a.syncStatus?.state, "synced");
    } finally {
      await a.close();
    }
    // the client appends /v1/db/<id> itself
    const b = await CrdtdbDataStore.open({ dbId: "match-1", collections: ["Players", "Moves"], sync: { url: srv.url + "/v1/db", minBackoffMs: 50 } });
    try {
      // (the server takes "v1/db/match-1" for the database's id, and its
      // hello names that one: another database than asked for)
      await until(() => b.syncStatus?.state === "stopped", "a wrong URL stops", 5000);
      assert.equal(b.syncStatus?.error?.code, "EINVAL");
      assert.match(b.syncStatus!.error!.message, /database 'match-1', this end 'v1\/db\/match-1'/);
    } finally {
      await b.close();
    }
  });
});

test("the status from open: connecting, then offline with why (no server: refused, as the C client says it); no socket to be had stops at once", async () => {
  const seen: string[] = [];
  const a = await CrdtdbDataStore.open({
    dbId: "match-1", collections: ["Players", "Moves"],
    sync: { url: "ws://127.0.0.1:1", minBackoffMs: 50, maxBackoffMs: 100, onStatus: (st) => seen.push(st.state + (st.error ? ` ${st.error.code} ${st.error.message}` : "")) },
  });
  try {
    assert.notEqual(a.syncStatus?.state, "offline", "no failure yet: not offline");
    await until(() => seen.some((s) => s.startsWith("offline")), "a refused connection is offline", 5000);
    const off = seen.filter((s) => s.startsWith("offline"));
    assert.ok(off.every((s) => s === "offline EIO connection refused: 127.0.0.1:1 (is crdtdb serve running there?)"), off.join("; "));
    assert.equal(seen[0], "connecting");
  } finally {
    await a.close();
  }
  const b = await CrdtdbDataStore.open({
    dbId: "match-1", collections: ["Players", "Moves"],
    sync: { url: "ws://127.0.0.1:1", socket: () => { throw new TypeError("WebSocket is not defined"); } },
  });
  try {
    await assert.rejects(b.sync!.whenSynced(), { code: "EINVAL", message: /cannot open a WebSocket to ws:\/\/127\.0\.0\.1:1\/v1\/db\/match-1: TypeError: WebSocket is not defined/ });
    assert.equal(b.syncStatus?.state, "stopped");
  } finally {
    await b.close();
  }
});

test("a server stopped under a live store: offline says why", async () => {
  const seen: string[] = [];
  await withServer([], async (srv) => {
    const a = await client(srv, {}, { onStatus: (st) => seen.push(st.state + (st.error ? ` ${st.error.code}` : "")) });
    try {
      await a.sync!.whenSynced();
      await srv.stop();
      await until(() => seen.some((s) => s.startsWith("offline")), "offline once the server is gone", 5000);
      assert.ok(seen.filter((s) => s.startsWith("offline")).every((s) => / E[A-Z]+$/.test(s)), seen.join(", "));
    } finally {
      await a.close();
    }
  });
});

test("a server-to-client server: writes throw Read only access", async () => {
  await withServer(["--mode", "server-to-client"], async (srv) => {
    const js = await client(srv);
    await until(() => js.isReadOnly, "the read-only grant");
    await assert.rejects(js.add("Players", "x", { a: 1 }), { message: "Read only access" });
    await js.close();
  });
});

test("a client that asks for server-to-client refuses writes, even before it connects, and receives", async () => {
  await withServer([], async (srv) => {
    const writer = await client(srv);
    await writer.add("Players", "w", { hp: 1 });
    const reader = await client(srv, {}, { mode: "server-to-client" });
    await assert.rejects(reader.add("Players", "x", { a: 1 }), { message: "Read only access" });
    await until(async () => (await reader.getById("Players", "w", true)) !== null, "w at the reader");
    await writer.update("Players", "w", { hp: 2 });
    await until(async () => (await reader.getById("Players", "w"))?.hp === 2, "the update at the reader");
    await reader.close();
    await writer.close();
  });
});
