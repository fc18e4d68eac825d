/**
 * The first connection opens while the copy loads (sync.ts
 * EarlyConnection): what the socket says before the replica is there —
 * the server's hello, or a refusal and its close — is kept and handled
 * once it is, against the real server with a backend that loads slowly.
 */
import test from "node:test";
import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { CrdtdbDataStore } from "../src/index.js";
import { MemoryBackend, type Loaded } from "../src/backend.js";
import { nodeSocket } from "../src/node.js";
import type { SocketFactory } from "../src/sync.js";
import { cli, serve, standIn, tempDir, until } from "./helpers.js";

const LOAD_MS = 400;

/** A copy that takes LOAD_MS to load, noting when it finished. */
class SlowBackend extends MemoryBackend {
  loadedAt = 0;
  override async load(): Promise<Loaded> {
    await new Promise((r) => setTimeout(r, LOAD_MS));
    this.loadedAt = Date.now();
    return super.load();
  }
}

/** nodeSocket, noting when each socket opened and closed. */
function timed(): { make: SocketFactory; opened: number[]; closed: number[] } {
  const base = nodeSocket(), opened: number[] = [], closed: number[] = [];
  const make: SocketFactory = (url, headers) => {
    const real = base(url, headers);
    const me = standIn(real);
    real.onopen = (e) => { opened.push(Date.now()); me.onopen?.(e); };
    real.onclose = (e) => { closed.push(Date.now()); me.onclose?.(e); };
    real.onmessage = (e) => me.onmessage?.(e);
    return me;
  };
  return { make, opened, closed };
}

test("the socket opens while the copy loads: the hello waits for the replica, then it syncs; a refusal that came meanwhile is told apart as before", async () => {
  const d = tempDir();
  const secret = join(d.path, "secret");
  writeFileSync(secret, "0123456789abcdef0123456789abcdef-test-secret\n");
  const srvDir = join(d.path, "server");
  cli(srvDir, "init");
  const srv = await serve(srvDir, ["--collections", "Players,Moves", "--jwt-secret-file", secret]);
  const token = (sub: string) => cli(d.path, "token", "--secret-file", secret, "--sub", sub).trim();
  const open = (sub: string, backend: SlowBackend, make: SocketFactory, tok = token(sub)) => CrdtdbDataStore.open({
    dbId: "match-9", collections: ["Players", "Moves"], backend,
    sync: { url: srv.url, token: tok, socket: make, minBackoffMs: 50, maxBackoffMs: 300 },
  });
  try {
    const ob = new SlowBackend(), ot = timed();
    const owner = await open("olivia", ob, ot.make);
    assert.ok(ot.opened.length === 1 && ot.opened[0]! < ob.loadedAt, "the socket opened before the copy had loaded");
    await until(async () => (await owner.getById("_members", "olivia", true))?.role === "owner", "olivia is the owner");
    await owner.add("Moves", "m1", { x: 1 });
    await owner.sync!.whenSynced();
    assert.equal(ot.opened.length, 1, "over that first socket");

    // refused while loading: the close came before the replica, and is handled after
    const eb = new SlowBackend(), et = timed();
    const eve = await open("eve", eb, et.make);
    assert.ok(et.closed.length === 1 && et.closed[0]! < eb.loadedAt, "refused before the copy had loaded");
    await until(() => eve.syncStatus?.state === "stopped", "eve refused");
    assert.equal(eve.syncStatus?.error?.code, "EDENIED");
    const fb = new SlowBackend(), ft = timed();
    const forger = await open("olivia", fb, ft.make, token("olivia").slice(0, -4) + "AAAA");
    await until(() => forger.syncStatus?.state === "stopped", "a bad token refused");
    assert.equal(forger.syncStatus?.error?.code, "EAUTH");
    await new Promise((r) => setTimeout(r, 200));
    assert.deepEqual([ft.opened.length, ft.closed.length], [0, 1], "one socket, refused at the upgrade, and no second try without a token callback");
    for (const s of [owner, eve, forger]) await s.close();
  } finally {
    await srv.stop();
    d.remove();
  }
});

test("a copy that fails to load closes the socket it had opened", async () => {
  const d = tempDir();
  const srvDir = join(d.path, "server");
  cli(srvDir, "init");
  const srv = await serve(srvDir, ["--collections", "Players,Moves"]);
  class Broken extends MemoryBackend {
    override async load(): Promise<Loaded> {
      await new Promise((r) => setTimeout(r, 100));
      throw new Error("disk gone");
    }
  }
  const t = timed();
  try {
    await assert.rejects(CrdtdbDataStore.open({
      dbId: "match-9", collections: ["Players"], backend: new Broken(),
      sync: { url: srv.url, socket: t.make },
    }), /disk gone/);
    await until(() => t.closed.length === 1, "the early socket closed");
  } finally {
    await srv.stop();
    d.remove();
  }
});
