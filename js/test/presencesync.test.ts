/**
 * Presence and messages end to end: JS stores against a real `crdtdb
 * serve` on 127.0.0.1, with and without tokens, and beside the C client
 * (`crdtdb sync --watch --presence JSON`, which prints the others'
 * presence and messages as JSON lines).  Skipped, saying so, when the
 * binary has no presence (its `sync --help` does not mention --presence).
 */
import test from "node:test";
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { CrdtdbDataStore, type PresenceEvent, type OpenOptions } from "../src/index.js";
import { nodeSocket } from "../src/node.js";
import { cli, crdtdbBin, ended, freePort, serve, tempDir, until, type Server, withServer as withServerOf } from "./helpers.js";

const COLLS = "Players,Moves";

/** The binary under test must relay presence: fail loudly, never skip, so
 *  a build without it cannot pass silently. */
const skip = false;
const opts = { skip, timeout: 60_000 };

/** A store on `db` and every presence event it sees. */
interface Peer { ds: CrdtdbDataStore; evs: PresenceEvent[] }

async function peer(srv: Server, db: string, sync: Partial<NonNullable<OpenOptions["sync"]>> = {}): Promise<Peer> {
  const ds = await CrdtdbDataStore.open({
    dbId: db, collections: COLLS.split(","),
    sync: { url: srv.url, socket: nodeSocket(), minBackoffMs: 50, maxBackoffMs: 400, ...sync },
  });
  const evs: PresenceEvent[] = [];
  ds.presence.subscribe((e) => evs.push(e));
  return { ds, evs };
}

/** p's current entry whose state matches, or undefined. */
const entryOf = (p: Peer, pred: (s: Record<string, unknown>) => boolean) => p.ds.presence.get().find((e) => pred(e.state));
const messages = (p: Peer) => p.evs.filter((e): e is Extract<PresenceEvent, { type: "message" }> => e.type === "message");

function withServer(args: string[], fn: (srv: Server, dir: string) => Promise<void>): Promise<void> {
  return withServerOf(COLLS, args, fn, "crdtdb-presence-");
}

test("three JS stores: joins, updates and leaves; a spectator is invisible; a closed store leaves", opts, async () => {
  await withServer([], async (srv) => {
    const a = await peer(srv, "room");
    const b = await peer(srv, "room");
    const spectator = await peer(srv, "room");
    a.ds.presence.set({ name: "a", cursor: { x: 1 } });
    b.ds.presence.set({ name: "b" });
    await until(() => entryOf(b, (s) => s.name === "a") && entryOf(a, (s) => s.name === "b"), "a and b see each other");
    await until(() => spectator.ds.presence.get().length === 2, "the spectator sees both");
    // never ourselves; the spectator, who set nothing, is seen by no one
    assert.deepEqual(a.ds.presence.get().map((e) => e.state.name), ["b"]);
    assert.deepEqual(b.ds.presence.get().map((e) => e.state.name), ["a"]);
    const ea = entryOf(b, (s) => s.name === "a")!;
    assert.equal(ea.user, "");
    assert.equal(ea.replica, a.ds.replica.idHex);
    assert.match(ea.key, /^[0-9a-f]{32}$/);
    assert.deepEqual(ea.state, { name: "a", cursor: { x: 1 } });
    assert.ok(b.evs.some((e) => e.type === "join" && e.entry.key === ea.key));

    // an update, with the same key
    a.ds.presence.set({ name: "a", cursor: { x: 9 } });
    await until(() => (entryOf(b, (s) => s.name === "a")?.state.cursor as { x: number } | undefined)?.x === 9, "a's update at b");
    await until(() => spectator.evs.some((e) => e.type === "update" && e.entry.key === ea.key), "a's update at the spectator");
    assert.equal(entryOf(b, (s) => s.name === "a")!.key, ea.key);

    // a clears its state: a leave; its connection stays
    a.ds.presence.set(null);
    await until(() => !entryOf(b, (s) => s.name === "a"), "a's leave at b");
    assert.ok(b.evs.some((e) => e.type === "leave" && e.entry.key === ea.key));
    assert.equal(a.ds.syncStatus?.state === "offline", false);
    // and comes back: a join under the same key
    a.ds.presence.set({ name: "a2" });
    await until(() => entryOf(spectator, (s) => s.name === "a2")?.key === ea.key, "a joins again");

    // b closes: the others see it leave
    const kb = entryOf(a, (s) => s.name === "b")!.key;
    await b.ds.close();
    await until(() => a.evs.some((e) => e.type === "leave" && e.entry.key === kb), "b's leave at a");
    await until(() => spectator.ds.presence.get().length === 1, "b gone at the spectator");
    // and b's store, closed, saw everyone leave
    assert.deepEqual(b.ds.presence.get(), []);
    await a.ds.close();
    await spectator.ds.close();
  });
});

test("a server restart: every entry leaves; the next session sends our state again and re-joins the others", opts, async () => {
  await withServer([], async (srv) => {
    const a = await peer(srv, "room");
    const b = await peer(srv, "room");
    a.ds.presence.set({ who: "a" });
    b.ds.presence.set({ who: "b" });
    await until(() => a.ds.presence.get().length === 1 && b.ds.presence.get().length === 1, "a and b see each other");
    await srv.stop();
    await until(() => a.ds.presence.get().length === 0 && b.ds.presence.get().length === 0, "everyone left with the connection");
    assert.ok(a.evs.some((e) => e.type === "leave" && e.entry.state.who === "b"));
    assert.throws(() => a.ds.presence.send("anyone?"), { code: "EBUSY", message: "not connected" });
    b.ds.presence.set({ who: "b", back: true }); // set offline: kept for the next session
    const again = await serve(srv.dir, ["--collections", COLLS], srv.port);
    try {
      await until(() => entryOf(a, (s) => s.back === true) && entryOf(b, (s) => s.who === "a"), "re-joined after the restart", 20_000);
    } finally {
      await a.ds.close();
      await b.ds.close();
      await again.stop();
    }
  });
});

test("messages with tokens: to everyone and to one user's connections; users stamped by the server", opts, async () => {
  const d = tempDir("crdtdb-presence-");
  const secret = join(d.path, "secret");
  writeFileSync(secret, "0123456789abcdef0123456789abcdef-test-secret\n");
  const srvDir = join(d.path, "server");
  cli(srvDir, "init");
  const srv = await serve(srvDir, ["--collections", COLLS, "--jwt-secret-file", secret]);
  const token = (sub: string) => cli(d.path, "token", "--secret-file", secret, "--sub", sub).trim();
  const open = (sub: string) => peer(srv, "game", { token: token(sub) });
  const all: Peer[] = [];
  try {
    const olivia = await open("olivia");
    all.push(olivia);
    await until(async () => (await olivia.ds.getById("_members", "olivia", true))?.role === "owner", "olivia owns the database");
    await olivia.ds.add("_members", "bob", { role: "writer", status: "invited" });
    await olivia.ds.add("_members", "rita", { role: "reader", status: "invited" });
    await olivia.ds.sync!.whenSynced();
    const bob = await open("bob");
    const bob2 = await open("bob"); // bob's second tab
    const rita = await open("rita");
    all.push(bob, bob2, rita);
    for (const [p, u] of [[bob, "bob"], [rita, "rita"]] as const) {
      await until(async () => (await p.ds.getById("_members", u, true)) !== null, `${u} sees the invitation`);
      await p.ds.update("_members", u, { status: "accepted" });
    }
    await until(() => rita.ds.isReadOnly, "rita read-only");
    // everyone shows up, the reader too; each entry carries its token's user
    olivia.ds.presence.set({ seat: 1 });
    bob.ds.presence.set({ seat: 2 });
    rita.ds.presence.set({ seat: 3 });
    await until(() => bob2.ds.presence.get().length === 3, "bob's second tab sees the three");
    assert.deepEqual(bob2.ds.presence.get().map((e) => [e.user, e.state.seat]).sort(), [["bob", 2], ["olivia", 1], ["rita", 3]]);
    // every session is open: sending works
    await until(() => all.every((p) => p.ds.presence.connected), "all connected");

    olivia.ds.presence.send({ text: "hello all" });
    await until(() => [bob, bob2, rita].every((p) => messages(p).length === 1), "the message to all");
    const m = messages(rita)[0]!;
    assert.deepEqual(m.body, { text: "hello all" });
    assert.equal(m.to, null);
    assert.equal(m.from.user, "olivia");
    assert.equal(m.from.replica, olivia.ds.replica.idHex);
    assert.equal(m.from.key, entryOf(rita, (s) => s.seat === 1)!.key);

    rita.ds.presence.send("psst bob", { to: "bob" });
    await until(() => messages(bob).length === 2 && messages(bob2).length === 2, "the message to both of bob's connections");
    assert.deepEqual(messages(bob)[1], { type: "message", from: messages(bob2)[1]!.from, to: "bob", body: "psst bob" });
    assert.equal(messages(bob)[1]!.from.user, "rita");
    // and to no one else: a later message to all arrives alone
    bob.ds.presence.send(42);
    await until(() => messages(olivia).length === 1 && messages(rita).length === 2 && messages(bob2).length === 3, "bob's message");
    assert.deepEqual(messages(olivia).map((x) => x.body), [42]);
    assert.equal(messages(bob).length, 2, "the sender does not get its own");
  } finally {
    for (const p of all) await p.ds.close();
    await srv.stop();
    d.remove();
  }
});

/** `crdtdb sync --watch` with its JSON lines. */
interface CClient { proc: ChildProcess; lines: Record<string, unknown>[]; stderr(): string; stop(): Promise<void> }

function cWatch(dir: string, url: string, db: string, ...args: string[]): CClient {
  const proc = spawn(crdtdbBin(), ["-d", dir, "sync", url, "--db", db, "--watch", ...args], { stdio: ["ignore", "pipe", "pipe"] });
  const lines: Record<string, unknown>[] = [];
  let err = "";
  proc.stderr!.on("data", (b: Buffer) => { err += b.toString(); });
  createInterface({ input: proc.stdout! }).on("line", (l) => {
    try { lines.push(JSON.parse(l) as Record<string, unknown>); } catch { /* not ours */ }
  });
  return {
    proc, lines, stderr: () => err,
    stop: () => ended(proc),
  };
}

test("a JS store and the C client see each other's presence and messages", opts, async () => {
  await withServer([], async (srv, dir) => {
    const c = join(dir, "c");
    cli(c, "init");
    cli(c, "create", "room", "--collections", COLLS);
    const c2 = join(dir, "c2");
    cli(c2, "init");
    cli(c2, "create", "room", "--collections", COLLS);
    const js = await peer(srv, "room");
    js.ds.presence.set({ name: "js", pos: [1, 2] });
    // a message goes to the sessions open when it is sent
    await until(() => js.ds.presence.connected, "JS connected");
    const cc = cWatch(c, srv.url, "room", "--presence", '{"x":1}');
    const cSender = cWatch(c2, srv.url, "room", "--presence", "null", "--send", '{"hi":"from C"}');
    try {
      // C's state at JS, stamped with C's replica id
      const cid = cli(c, "id").trim();
      await until(() => entryOf(js, (s) => s.x === 1), "C's presence at JS", 15_000);
      assert.equal(entryOf(js, (s) => s.x === 1)!.replica, cid);
      // JS's state at C, as a JSON line
      await until(() => cc.lines.some((l) => l.presence === "join" && (l.state as { name?: string })?.name === "js"), `JS's presence at C (${cc.stderr()})`, 15_000);
      const line = cc.lines.find((l) => l.presence === "join")!;
      assert.deepEqual(line.state, { name: "js", pos: [1, 2] });
      assert.equal(line.replica, js.ds.replica.idHex);
      assert.equal(line.user, "");
      // C's --send reaches JS
      await until(() => messages(js).some((m) => (m.body as { hi?: string }).hi === "from C"), "C's message at JS", 15_000);
      // an update and a message from JS reach C
      js.ds.presence.set({ name: "js", pos: [3, 4] });
      await until(() => cc.lines.some((l) => l.presence === "update" && JSON.stringify((l.state as { pos?: number[] }).pos) === "[3,4]"), "JS's update at C");
      await until(() => js.ds.presence.connected, "JS connected");
      js.ds.presence.send({ emote: "wave" });
      await until(() => cc.lines.some((l) => JSON.stringify(l.message) === '{"emote":"wave"}' && l.to === null), "JS's message at C");
      // C goes away: JS sees it leave
      const key = entryOf(js, (s) => s.x === 1)!.key;
      await cc.stop();
      await until(() => js.evs.some((e) => e.type === "leave" && e.entry.key === key), "C's leave at JS", 15_000);
      // JS leaves: the other C client saw it come and go
      js.ds.presence.set(null);
      await until(() => cSender.lines.some((l) => l.presence === "leave" && l.replica === js.ds.replica.idHex), "JS's leave at the other C client");
    } finally {
      await cc.stop();
      await cSender.stop();
      await js.ds.close();
    }
  });
});

test("the limits: a state of 1024 bytes nested 16 deep is relayed; one the server refuses gets a NOTICE and ends nothing", opts, async () => {
  await withServer(["--max-presence", "200"], async (srv) => {
    const errors: { code: string; fatal: boolean }[] = [];
    const a = await peer(srv, "room", { onEvent: (e) => { if (e.type === "error") errors.push({ code: e.code, fatal: e.fatal }); } });
    const b = await peer(srv, "room");
    await until(() => a.ds.presence.connected && b.ds.presence.connected, "both connected");
    // over this server's --max-presence 200, within the protocol's 1024
    a.ds.presence.set({ big: "x".repeat(300) });
    await until(() => errors.some((e) => e.code === "ETOOBIG"), "the server's NOTICE ETOOBIG");
    assert.deepEqual(errors, [{ code: "ETOOBIG", fatal: false }]);
    // the session goes on: a smaller state and a message get through
    const nest = (n: number): Record<string, unknown> => (n === 1 ? { end: true } : { a: nest(n - 1) });
    a.ds.presence.set(nest(16) as never);
    await until(() => b.ds.presence.get().length === 1, "the 16-deep state at b");
    assert.deepEqual(b.ds.presence.get()[0]!.state, nest(16));
    a.ds.presence.send("still here");
    await until(() => messages(b).length === 1, "a message after the NOTICE");
    assert.equal(a.ds.syncStatus?.state === "offline" || a.ds.syncStatus?.state === "stopped", false);
    assert.equal(a.ds.sync!.status.error, undefined);
    await a.ds.close();
    await b.ds.close();
  });
  await withServer([], async (srv) => {
    const a = await peer(srv, "room");
    const b = await peer(srv, "room");
    const s = { s: "x".repeat(1018) }; // 1024 bytes as msgpack
    a.ds.presence.set(s);
    await until(() => b.ds.presence.get()[0]?.state.s === s.s, "a state of 1024 bytes at b");
    await a.ds.close();
    await b.ds.close();
  });
});

test("peered servers: stores on either server see each other's presence and messages", opts, async () => {
  const d = tempDir("crdtdb-presence-");
  const dirs = [join(d.path, "s1"), join(d.path, "s2")];
  for (const x of dirs) cli(x, "init");
  const ports = [await freePort(), await freePort()];
  const url = (i: number) => `ws://127.0.0.1:${ports[i]}`;
  const s1 = await serve(dirs[0]!, ["--collections", COLLS, "--peer", url(1)], ports[0]);
  const s2 = await serve(dirs[1]!, ["--collections", COLLS, "--peer", url(0)], ports[1]);
  const all: Peer[] = [];
  try {
    const a = await peer(s1, "room");
    const b = await peer(s2, "room");
    all.push(a, b);
    a.ds.presence.set({ on: 1 });
    b.ds.presence.set({ on: 2 });
    await until(() => entryOf(a, (s) => s.on === 2) && entryOf(b, (s) => s.on === 1), "a and b see each other across the link", 20_000);
    assert.equal(entryOf(b, (s) => s.on === 1)!.replica, a.ds.replica.idHex);
    a.ds.presence.send("over the link");
    await until(() => messages(b).some((m) => m.body === "over the link"), "a's message at b", 10_000);
    a.ds.presence.set({ on: 1, moved: true });
    await until(() => entryOf(b, (s) => s.moved === true), "a's update at b");
    const ka = entryOf(b, (s) => s.on === 1)!.key;
    await a.ds.close();
    await until(() => b.evs.some((e) => e.type === "leave" && e.entry.key === ka), "a's leave at b");
  } finally {
    for (const p of all) await p.ds.close();
    await s1.stop();
    await s2.stop();
    d.remove();
  }
});
