/**
 * Presence and ephemeral messages without a real server: the codec of
 * frames 12 to 15 (src/frames.ts), the session's checks (src/session.ts)
 * driven byte by byte, and store.presence (src/presence.ts) against a fake
 * server in Node (`ws` on 127.0.0.1) that speaks hand-made frames
 * (docs/protocol.md, "Presence and messages").
 */
import test from "node:test";
import assert from "node:assert/strict";
import { WebSocketServer, type WebSocket as WsSocket } from "ws";
import { CrdtdbDataStore, CrdtdbError, MemoryBackend, Replica, type PresenceEvent, type SessionEvent } from "../src/index.js";
import { nodeSocket } from "../src/node.js";
import {
  decodeMessage, encodeFrame, encodeMessage, FrameReader, presencePayloadError, PRESENCE_MAX, type Message,
} from "../src/frames.js";
import { ClientSession, TWO_WAY } from "../src/session.js";
import { generateKeyPair, fromHex, toHex } from "../src/keys.js";
import { encodeValue } from "../src/value.js";
import { ERRORS } from "../src/errors.js";
import type { Value } from "../src/types.js";
import { sleep, until } from "./helpers.js";

const hex = (s: string) => fromHex(s.replace(/\s+/g, ""));
const ascii = (s: string) => toHex(new TextEncoder().encode(s));
const KEY = hex("0102030405060708 0000000000000007");
const KEY2 = hex("0102030405060708 0000000000000009");
const REP = new Uint8Array(32).fill(0x22);
const mp = (v: Value) => encodeValue(v);

/* ------------------------------------------------------------ the codec */

test("frames 12-15 encode as docs/protocol.md lays them out and decode back", () => {
  const state = mp({ x: 1 });
  const cases: [Message, string][] = [
    [{ t: "presenceSet", state }, "00000008 92 0c c404 81a17801"],
    [{ t: "presenceSet", state: null }, "00000003 92 0c c0"],
    [{ t: "presence", key: KEY, user: "ann", replica: REP, version: 1, state },
      "00000041 96 0d c410 0102030405060708 0000000000000007 a3" + ascii("ann") + "c420" + "22".repeat(32) + "01 c404 81a17801"],
    [{ t: "presence", key: KEY, user: "", replica: REP, version: 300, state: null },
      "0000003b 96 0d c410 0102030405060708 0000000000000007 a0 c420" + "22".repeat(32) + "cd012c c0"],
    [{ t: "messageSend", to: null, body: mp("hi") }, "00000008 93 0e c0 c403 a26869"],
    [{ t: "messageSend", to: "bob", body: mp(5) }, "00000009 93 0e a3" + ascii("bob") + "c401 05"],
    [{ t: "message", key: KEY, user: "ann", replica: REP, n: 2, to: null, body: mp([1]) },
      "00000040 97 0f c410 0102030405060708 0000000000000007 a3" + ascii("ann") + "c420" + "22".repeat(32) + "02 c0 c402 9101"],
    [{ t: "message", key: KEY, user: "ann", replica: REP, n: 1, to: "bob", body: mp(true) },
      "00000042 97 0f c410 0102030405060708 0000000000000007 a3" + ascii("ann") + "c420" + "22".repeat(32) + "01 a3" + ascii("bob") + "c401 c3"],
  ];
  for (const [m, h] of cases) {
    const f = encodeFrame(m);
    assert.equal(toHex(f), h.replace(/\s+/g, ""), m.t);
    const r = new FrameReader(1 << 20);
    r.push(f);
    assert.deepEqual(r.next(), m, m.t);
  }
});

test("a 12-15 frame of the wrong arity or element types is malformed (EBADVALUE)", () => {
  const raw = (...parts: string[]) => hex(parts.join(""));
  const key = "c410" + toHex(KEY);
  const rep = "c420" + "22".repeat(32);
  const bad: [string, Uint8Array][] = [
    ["12 without a state", raw("91 0c")],
    ["12 with two", raw("93 0c c0 c0")],
    ["12 with a str state", raw("92 0c a178")],
    ["12 with a map state (not a bin)", raw("92 0c 80")],
    ["14 without a body", raw("92 0e c0")],
    ["14 to an int", raw("93 0e 01 c401 05")],
    ["14 with a str body", raw("93 0e c0 a26869")],
    ["14 to an empty user", raw("93 0e a0 c401 05")],
    ["13 of 5", raw("95 0d", key, "a0", rep, "01")],
    ["13 of 7", raw("97 0d", key, "a0", rep, "01 c0 c0")],
    ["13 with a 15-byte key", raw("96 0d c40f", "01".repeat(15), "a0", rep, "01 c0")],
    ["13 with a 17-byte key", raw("96 0d c411", "01".repeat(17), "a0", rep, "01 c0")],
    ["13 with a str key", raw("96 0d b0", "41".repeat(16), "a0", rep, "01 c0")],
    ["13 with a bin user", raw("96 0d", key, "c400", rep, "01 c0")],
    ["13 with a nil user", raw("96 0d", key, "c0", rep, "01 c0")],
    ["13 with a 256-byte user", raw("96 0d", key, "da0100" + "41".repeat(256), rep, "01 c0")],
    ["13 with a 31-byte replica", raw("96 0d", key, "a0 c41f", "22".repeat(31), "01 c0")],
    ["13 with a negative version", raw("96 0d", key, "a0", rep, "ff c0")],
    ["13 with version 0", raw("96 0d", key, "a0", rep, "00 c0")],
    ["13 with a str version", raw("96 0d", key, "a0", rep, "a131 c0")],
    ["13 with a str state", raw("96 0d", key, "a0", rep, "01 a178")],
    ["13 with a map state (not a bin)", raw("96 0d", key, "a0", rep, "01 80")],
    ["13 with a user of bad UTF-8", raw("96 0d", key, "a1ff", rep, "01 c0")],
    ["15 of 6", raw("96 0f", key, "a0", rep, "01 c0")],
    ["15 with n 0", raw("97 0f", key, "a0", rep, "00 c0 c401 05")],
    ["15 with a nil body", raw("97 0f", key, "a0", rep, "01 c0 c0")],
    ["15 to an int", raw("97 0f", key, "a0", rep, "01 07 c401 05")],
    ["15 with a bin 'to'", raw("97 0f", key, "a0", rep, "01 c400 c401 05")],
    ["15 to an empty user", raw("97 0f", key, "a0", rep, "01 a0 c401 05")],
  ];
  for (const [what, b] of bad) {
    assert.throws(() => decodeMessage(b), (e: unknown) => e instanceof CrdtdbError && e.code === "EBADVALUE", what);
  }
  // and at the edges, well-formed: a user of 255 bytes, a u64 version
  const ok = decodeMessage(raw("96 0d", key, "d9ff" + "41".repeat(255), rep, "cf0000000100000000 c0"));
  assert.ok(ok.t === "presence" && ok.user.length === 255 && ok.version === 2 ** 32);
});

test("presencePayloadError: the protocol's limits on a state or a body", () => {
  const code = (p: Uint8Array, map: boolean) => presencePayloadError(p, map)?.code ?? null;
  assert.equal(code(mp({ a: 1 }), true), null);
  assert.equal(code(mp(1), false), null);
  assert.equal(code(mp(null), false), null);
  assert.equal(code(mp([1, { b: 2 }]), false), null);
  // a state is a map
  assert.equal(code(mp([1]), true), "EBADVALUE");
  assert.equal(code(mp("x"), true), "EBADVALUE");
  // exactly one value
  assert.equal(code(hex("80 01"), true), "EBADVALUE");
  assert.equal(code(hex("81 a1"), true), "EBADVALUE");
  assert.equal(code(new Uint8Array(0), false), "EBADVALUE");
  assert.equal(code(hex("c1"), false), "EBADVALUE");
  // keys are str, at every depth
  assert.equal(code(hex("81 01 02"), true), "EBADVALUE");
  assert.equal(code(hex("81 a1 61 81 c3 01"), true), "EBADVALUE");
  assert.equal(code(hex("91 81 c400 01"), false), "EBADVALUE");
  assert.equal(code(hex("81 d9 01 61 81 da 0001 62 01"), true), null);
  // 1024 bytes, and one more
  const fill = (n: number) => mp({ s: "x".repeat(n) });
  const at = 1024 - fill(0).length - 2; // str16 header past 255 bytes
  assert.equal(fill(at).length, PRESENCE_MAX);
  assert.equal(code(fill(at), true), null);
  assert.equal(code(fill(at + 1), true), "ETOOBIG");
  // 16 containers deep, and 17
  const nest = (n: number): Value => (n === 1 ? {} : { a: nest(n - 1) });
  assert.equal(code(mp(nest(16)), true), null);
  assert.equal(code(mp(nest(17)), true), "ETOODEEP");
});

/* ------------------------------------------- the session, byte by byte */

interface Bench { s: ClientSession; events: SessionEvent[]; sent: Message[]; feed(...m: Message[]): Promise<void>; feedRaw(b: Uint8Array): Promise<void> }

/** A client session past its handshake with a hand-played server. */
async function bench(): Promise<Bench> {
  const r = await Replica.open({ dbId: "p", collections: ["C"], backend: new MemoryBackend() });
  const server = await generateKeyPair();
  const events: SessionEvent[] = [];
  const sent: Message[] = [];
  const reader = new FrameReader(1 << 20);
  const s = new ClientSession(r, {
    mode: TWO_WAY, ackDelayMs: 0,
    send: (f) => { reader.push(f.slice()); for (let m = reader.next(); m; m = reader.next()) sent.push(m); },
    onEvent: (e) => events.push(e),
  });
  const feedRaw = async (b: Uint8Array) => { s.receive(b); await s.idle(); await sleep(0); };
  const feed = async (...m: Message[]) => feedRaw(concat(m.map(encodeFrame)));
  s.start();
  await feed({ t: "hello", version: 1, dbId: "p", replicaId: server.publicKey, mode: TWO_WAY }, { t: "since", seq: 0 });
  assert.ok(events.some((e) => e.type === "ready"));
  return { s, events, sent, feed, feedRaw };
}

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) { out.set(p, o); o += p.length; }
  return out;
}

const pres = (key: Uint8Array, state: Value | null, version = 1, user = "ann"): Message =>
  ({ t: "presence", key, user, replica: REP, version, state: state === null ? null : mp(state) });

test("session: 13 and 15 become presence and message events; 12 and 14 go out", async () => {
  const b = await bench();
  await b.feed(pres(KEY, { x: 1 }), { t: "message", key: KEY, user: "ann", replica: REP, n: 1, to: "bob", body: mp({ hi: [1, 2] }) }, pres(KEY, null, 2));
  const got = b.events.filter((e) => e.type === "presence" || e.type === "message");
  assert.deepEqual(got, [
    { type: "presence", key: toHex(KEY), user: "ann", replica: "22".repeat(32), version: 1, state: { x: 1 } },
    { type: "message", key: toHex(KEY), user: "ann", replica: "22".repeat(32), n: 1, to: "bob", body: { hi: [1, 2] } },
    { type: "presence", key: toHex(KEY), user: "ann", replica: "22".repeat(32), version: 2, state: null },
  ]);
  b.s.presenceSet(mp({ cursor: 3 }));
  b.s.presenceSet(null);
  b.s.messageSend(null, mp("ping"));
  b.s.messageSend("bob", mp(7));
  await sleep(0);
  assert.deepEqual(b.sent.filter((m) => m.t === "presenceSet" || m.t === "messageSend"), [
    { t: "presenceSet", state: mp({ cursor: 3 }) },
    { t: "presenceSet", state: null },
    { t: "messageSend", to: null, body: mp("ping") },
    { t: "messageSend", to: "bob", body: mp(7) },
  ]);
  // the session's own checks
  assert.throws(() => b.s.presenceSet(mp([1])), { code: "EBADVALUE" });
  assert.throws(() => b.s.messageSend("x".repeat(256), mp(1)), { code: "EINVAL" });
  assert.throws(() => b.s.messageSend("", mp(1)), { code: "EINVAL" });
  assert.throws(() => b.s.messageSend(null, new Uint8Array(1025)), { code: "ETOOBIG" });
  assert.ok(!b.s.closed);
  b.s.close();
  assert.throws(() => b.s.presenceSet(null), { code: "EBUSY" });
});

test("session: presence before the handshake is refused, on both sides", async () => {
  const r = await Replica.open({ dbId: "p", collections: ["C"], backend: new MemoryBackend() });
  const events: SessionEvent[] = [];
  const s = new ClientSession(r, { mode: TWO_WAY, send: () => undefined, onEvent: (e) => events.push(e) });
  s.start();
  assert.throws(() => s.presenceSet(mp({ a: 1 })), { code: "EINVAL" });
  s.receive(encodeFrame(pres(KEY, { a: 1 })));
  await s.idle();
  assert.ok(s.closed);
  assert.ok(events.some((e) => e.type === "error" && e.fatal && e.code === "EBADVALUE"));
});

test("session: a malformed 13 or 15, or a 12 or 14 from the server, ends the session with EBADVALUE", async () => {
  const key = "c410" + toHex(KEY);
  const rep = "c420" + "22".repeat(32);
  const frame = (body: string) => {
    const b = hex(body);
    const f = new Uint8Array(4 + b.length);
    new DataView(f.buffer).setUint32(0, b.length);
    f.set(b, 4);
    return f;
  };
  const cases: [string, Uint8Array][] = [
    ["a 13 of 5", frame("95 0d" + key + "a0" + rep + "01")],
    ["a 13 with a short key", frame("96 0d c408 0102030405060708 a0" + rep + "01 c0")],
    ["a 15 of 6", frame("96 0f" + key + "a0" + rep + "01 c401 05")],
    ["a 15 whose body is not a bin", frame("97 0f" + key + "a0" + rep + "01 c0 05")],
    ["a 12", encodeFrame({ t: "presenceSet", state: mp({ a: 1 }) })],
    ["a 14", encodeFrame({ t: "messageSend", to: null, body: mp(1) })],
  ];
  for (const [what, f] of cases) {
    const b = await bench();
    await b.feedRaw(f);
    assert.ok(b.s.closed, `${what}: the session ended`);
    const ev = b.events.find((e) => e.type === "error");
    assert.ok(ev && ev.type === "error" && ev.fatal && ev.code === "EBADVALUE", `${what}: ${JSON.stringify(ev)}`);
    const err = b.sent.find((m) => m.t === "error");
    assert.ok(err && err.t === "error" && err.code === ERRORS.EBADVALUE[0], `${what}: an ERROR EBADVALUE to the server`);
  }
});

test("session: a well-formed 13 or 15 whose payload is refused gets a NOTICE and is dropped; the session goes on", async () => {
  const b = await bench();
  const nest = (n: number): Value => (n === 1 ? {} : { a: nest(n - 1) });
  const refused: [string, Message, keyof typeof ERRORS][] = [
    ["a state that is not a map", { ...pres(KEY, null), state: mp([1]) } as Message, "EBADVALUE"],
    ["a state with an int key", { ...pres(KEY, null), state: hex("81 01 02") } as Message, "EBADVALUE"],
    ["a state with trailing bytes", { ...pres(KEY, null), state: hex("80 80") } as Message, "EBADVALUE"],
    ["a state over 1024 bytes", pres(KEY, { s: "x".repeat(1100) }), "ETOOBIG"],
    ["a state 17 deep", pres(KEY, nest(17)), "ETOODEEP"],
    ["a body that is not msgpack", { t: "message", key: KEY, user: "", replica: REP, n: 1, to: null, body: hex("c1") }, "EBADVALUE"],
    ["a body over 1024 bytes", { t: "message", key: KEY, user: "", replica: REP, n: 1, to: null, body: mp("y".repeat(1100)) }, "ETOOBIG"],
  ];
  for (const [what, m, code] of refused) {
    const from = b.sent.length;
    const evFrom = b.events.length;
    await b.feed(m);
    assert.ok(!b.s.closed, `${what}: the session goes on`);
    const notice = b.sent.slice(from).find((x) => x.t === "notice");
    assert.ok(notice && notice.t === "notice" && notice.code === ERRORS[code][0], `${what}: a NOTICE ${code}, got ${JSON.stringify(notice)}`);
    const evs = b.events.slice(evFrom);
    assert.deepEqual(evs.map((e) => e.type), ["error"], `${what}: one non-fatal error event, no presence`);
    assert.ok(evs[0]!.type === "error" && !evs[0]!.fatal && evs[0]!.code === code);
  }
  // and the next good one gets through
  await b.feed(pres(KEY2, { ok: true }));
  assert.ok(b.events.some((e) => e.type === "presence" && e.key === toHex(KEY2)));
});

/* ------------------------------- store.presence against a fake server */

class Conn {
  readonly msgs: Message[] = [];
  closed = false;
  private readonly reader = new FrameReader(1 << 20);
  constructor(readonly ws: WsSocket) {
    ws.on("message", (data: Buffer) => {
      this.reader.push(new Uint8Array(data));
      for (let m = this.reader.next(); m; m = this.reader.next()) this.msgs.push(decodeMessage(encodeMessage(m).slice()));
    });
    ws.on("close", () => { this.closed = true; });
  }
  send(...ms: Message[]): void { this.ws.send(concat(ms.map(encodeFrame))); }
  /** The messages of type t received so far. */
  of<T extends Message["t"]>(t: T): Extract<Message, { t: T }>[] {
    return this.msgs.filter((m): m is Extract<Message, { t: T }> => m.t === t);
  }
}

class FakeServer {
  readonly conns: Conn[] = [];
  private constructor(readonly wss: WebSocketServer, readonly url: string) {
    wss.on("connection", (ws) => this.conns.push(new Conn(ws)));
  }
  static start(): Promise<FakeServer> {
    return new Promise((res, rej) => {
      const wss = new WebSocketServer({ host: "127.0.0.1", port: 0 });
      wss.on("listening", () => {
        const a = wss.address();
        res(new FakeServer(wss, `ws://127.0.0.1:${typeof a === "object" && a ? a.port : 0}`));
      });
      wss.on("error", rej);
    });
  }
  /** Connection n (from 0) once its hello came; answers it with a hello and a since. */
  async accept(n: number, serverId: Uint8Array): Promise<Conn> {
    await until(() => this.conns.length > n && this.conns[n]!.of("hello").length > 0, `connection ${n + 1}'s hello`);
    const c = this.conns[n]!;
    c.send({ t: "hello", version: 1, dbId: "pdb", replicaId: serverId, mode: 1 }, { t: "since", seq: 0 });
    await until(() => c.of("since").length > 0, `connection ${n + 1}'s since`);
    return c;
  }
  stop(): Promise<void> {
    for (const c of this.conns) c.ws.terminate();
    return new Promise((res) => this.wss.close(() => res()));
  }
}

async function withFake(fn: (srv: FakeServer, ds: CrdtdbDataStore, evs: PresenceEvent[], serverId: Uint8Array) => Promise<void>): Promise<void> {
  const srv = await FakeServer.start();
  const server = await generateKeyPair();
  const ds = await CrdtdbDataStore.open({
    dbId: "pdb", collections: ["C"],
    sync: { url: srv.url, socket: nodeSocket(), minBackoffMs: 30, maxBackoffMs: 60 },
  });
  const evs: PresenceEvent[] = [];
  ds.presence.subscribe((e) => evs.push(e));
  try {
    await fn(srv, ds, evs, server.publicKey);
  } finally {
    await ds.close();
    await srv.stop();
  }
}

const entry = (key: Uint8Array, state: Record<string, Value>, user = "ann") => ({ key: toHex(key), user, replica: "22".repeat(32), state });

test("presence: the state set offline goes after the server's hello; joins, updates, leaves and messages arrive", async () => {
  await withFake(async (srv, ds, evs, sid) => {
    ds.presence.set({ cursor: { x: 1, y: 2 } });
    assert.throws(() => ds.presence.send("too soon"), { code: "EBUSY", message: "not connected" });
    const c = await srv.accept(0, sid);
    await until(() => c.of("presenceSet").length === 1, "our state");
    // after the hello and the since: the order the protocol asks
    assert.ok(c.msgs.findIndex((m) => m.t === "presenceSet") > c.msgs.findIndex((m) => m.t === "since"));
    assert.deepEqual(c.of("presenceSet")[0]!.state, mp({ cursor: { x: 1, y: 2 } }));
    assert.deepEqual(ds.presence.state, { cursor: { x: 1, y: 2 } });

    // the snapshot, then live changes
    c.send(pres(KEY, { name: "Ann" }), pres(KEY2, { name: "Bob" }, 4, "bob"));
    await until(() => evs.length === 2, "two joins");
    assert.deepEqual(evs, [{ type: "join", entry: entry(KEY, { name: "Ann" }) }, { type: "join", entry: entry(KEY2, { name: "Bob" }, "bob") }]);
    assert.deepEqual(ds.presence.get(), [entry(KEY, { name: "Ann" }), entry(KEY2, { name: "Bob" }, "bob")]);
    c.send(pres(KEY, { name: "Ann", typing: true }, 2));
    c.send({ t: "message", key: KEY2, user: "bob", replica: REP, n: 1, to: null, body: mp({ emote: "wave" }) });
    c.send(pres(KEY2, null, 5, "bob"));
    // a leave of a key never seen: nothing
    c.send(pres(hex("ff".repeat(16)), null, 9));
    await until(() => evs.length === 5, "an update, a message, a leave");
    assert.deepEqual(evs.slice(2), [
      { type: "update", entry: entry(KEY, { name: "Ann", typing: true }) },
      { type: "message", from: { key: toHex(KEY2), user: "bob", replica: "22".repeat(32) }, to: null, body: { emote: "wave" } },
      { type: "leave", entry: entry(KEY2, { name: "Bob" }, "bob") },
    ]);
    assert.deepEqual(ds.presence.get(), [entry(KEY, { name: "Ann", typing: true })]);

    // ours: set, cleared, messages to all and to one user
    ds.presence.set({ cursor: { x: 5, y: 2 } });
    ds.presence.set(null);
    ds.presence.send({ ping: 1 });
    ds.presence.send("psst", { to: "bob" });
    await until(() => c.of("messageSend").length === 2, "two messages");
    assert.deepEqual(c.of("presenceSet").map((m) => m.state), [mp({ cursor: { x: 1, y: 2 } }), mp({ cursor: { x: 5, y: 2 } }), null]);
    assert.deepEqual(c.of("messageSend"), [{ t: "messageSend", to: null, body: mp({ ping: 1 }) }, { t: "messageSend", to: "bob", body: mp("psst") }]);
    assert.equal(ds.presence.state, null);
  });
});

test("presence: a dropped connection is a leave for everyone; the next session sends our state again and its snapshot re-joins", async () => {
  await withFake(async (srv, ds, evs, sid) => {
    ds.presence.set({ at: "lobby" });
    const c = await srv.accept(0, sid);
    c.send(pres(KEY, { a: 1 }), pres(KEY2, { b: 2 }));
    await until(() => ds.presence.get().length === 2, "two entries");
    c.ws.terminate();
    await until(() => evs.filter((e) => e.type === "leave").length === 2, "two leaves");
    assert.deepEqual(ds.presence.get(), []);
    assert.deepEqual(evs.slice(2).map((e) => e.type === "leave" && e.entry.key), [toHex(KEY), toHex(KEY2)]);
    assert.throws(() => ds.presence.send(1), { code: "EBUSY" });
    // set while offline: kept, and that is what the next session gets
    ds.presence.set({ at: "game" });
    const c2 = await srv.accept(1, sid);
    await until(() => c2.of("presenceSet").length === 1, "our state again");
    assert.deepEqual(c2.of("presenceSet")[0]!.state, mp({ at: "game" }));
    c2.send(pres(KEY, { a: 1 }, 3));
    await until(() => evs.length === 5, "a join again");
    assert.deepEqual(evs[4], { type: "join", entry: entry(KEY, { a: 1 }) });
  });
});

test("presence: a NOTICE from the server (a refused state) ends nothing", async () => {
  await withFake(async (srv, ds, evs, sid) => {
    const c = await srv.accept(0, sid);
    await until(() => ds.syncStatus?.state === "synced" || ds.syncStatus?.state === "open", "open");
    c.send({ t: "notice", code: ERRORS.ELIMIT[0], message: "too many presence entries" });
    c.send(pres(KEY, { a: 1 }));
    await until(() => evs.length === 1, "a join after the notice");
    ds.presence.send("still here");
    await until(() => c.of("messageSend").length === 1, "a message after the notice");
    assert.equal(c.closed, false);
    assert.equal(srv.conns.length, 1);
    assert.ok(ds.syncStatus?.state !== "offline" && ds.syncStatus?.state !== "stopped");
  });
});

test("presence: local validation, with the protocol's limits and clear messages", async () => {
  const ds = await CrdtdbDataStore.open({ dbId: "v", collections: ["C"] });
  const p = ds.presence;
  const nest = (n: number): Value => (n === 1 ? {} : { a: nest(n - 1) });
  assert.throws(() => p.set({ s: "x".repeat(1100) }), { code: "ETOOBIG", message: /1024/ });
  assert.throws(() => p.set(nest(17) as Record<string, Value>), { code: "ETOODEEP", message: /16/ });
  assert.throws(() => p.set([1] as unknown as Record<string, Value>), { code: "EBADVALUE", message: /plain object/ });
  assert.throws(() => p.set(new Date() as unknown as Record<string, Value>), { code: "EBADVALUE" });
  assert.throws(() => p.set({ f: (() => 1) as unknown as Value }), { code: "EBADVALUE", message: /presence state/ });
  assert.throws(() => p.send("x".repeat(1100)), { code: "ETOOBIG", message: /message body/ });
  assert.throws(() => p.send(nest(17)), { code: "ETOODEEP" });
  // just inside: 16 deep
  p.set(nest(16) as Record<string, Value>);
  assert.deepEqual(p.state, nest(16));
  // a refused state leaves the previous one
  assert.throws(() => p.set({ s: "x".repeat(1100) }), { code: "ETOOBIG" });
  assert.deepEqual(p.state, nest(16));
  // without sync: kept, nobody seen, nothing sent
  p.set({ here: true });
  assert.deepEqual(p.state, { here: true });
  assert.deepEqual(p.get(), []);
  assert.equal(p.connected, false);
  assert.throws(() => p.send({ hi: 1 }), { code: "EBUSY", message: "not connected" });
  const stop = p.subscribe(() => { throw new Error("never called"); });
  stop();
  await ds.close();
});
