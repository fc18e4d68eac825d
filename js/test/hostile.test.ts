/**
 * Bad input from the server side is refused with a clear error and stores
 * nothing, as in C (transport/session.c, docs/protocol.md "Limits checked
 * on receipt"): a fake server in Node (`ws` on 127.0.0.1) speaks the frames
 * of docs/protocol.md, signs deltas with its own key, and feeds a
 * CrdtdbDataStore client (FileBackend, nodeSocket) good and bad messages.
 *
 * Each case first delivers one good delta (so there is content and a
 * watermark to keep), then the bad input, then checks: the error the client
 * sends back (ERROR [6, code, msg] for a refusal that ends the session,
 * NOTICE [9, ...] for ECLOCK), the session events, the store's content,
 * its sequence, the server's watermark and the clock; and, after closing and
 * reopening the file, that nothing of the bad input was stored durably.
 */
import test from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { WebSocketServer, type WebSocket as WsSocket } from "ws";
import { CrdtdbDataStore, type SessionEvent, type SyncStatus } from "../src/index.js";
import { FileBackend, nodeSocket } from "../src/node.js";
import { encodeFrame, FrameReader, type Message } from "../src/frames.js";
import { encodeDelta } from "../src/delta.js";
import { generateKeyPair, toHex, type KeyPair } from "../src/keys.js";
import { encodeValue, refOf } from "../src/value.js";
import { hlcMs, packHlc } from "../src/hlc.js";
import { ERRORS } from "../src/errors.js";
import type { DeltaRecord, Hlc, Value } from "../src/types.js";
import { sleep, tempDir, until } from "./helpers.js";

const DB = "hostile-db";
const COLLS = ["Items", "Boards"];

/* ------------------------------------------------------- a fake server */

class Conn {
  readonly msgs: Message[] = [];
  closed = false;
  private readonly reader = new FrameReader(64 << 20);
  constructor(readonly ws: WsSocket, readonly path: string) {
    ws.on("message", (data: Buffer) => {
      this.reader.push(new Uint8Array(data));
      for (let m = this.reader.next(); m; m = this.reader.next()) this.msgs.push(copyMsg(m));
    });
    ws.on("close", () => { this.closed = true; });
  }
  send(m: Message): void { this.ws.send(encodeFrame(m)); }
  sendRaw(b: Uint8Array): void { this.ws.send(b); }
  /** The first message received (from index `from`) that matches. */
  async waitFor<T extends Message["t"]>(t: T, what: string, pred: (m: Extract<Message, { t: T }>) => boolean = () => true, from = 0, ms = 5000): Promise<Extract<Message, { t: T }>> {
    let found: Extract<Message, { t: T }> | undefined;
    await until(() => {
      found = this.msgs.slice(from).find((m): m is Extract<Message, { t: T }> => m.t === t && pred(m as Extract<Message, { t: T }>));
      return found !== undefined;
    }, what, ms);
    return found!;
  }
}

/** Messages alias the reader's chunks; keep copies. */
function copyMsg(m: Message): Message {
  if (m.t === "hello") return { ...m, replicaId: m.replicaId.slice() };
  if (m.t === "delta") return { ...m, delta: m.delta.slice() };
  return { ...m };
}

class FakeServer {
  readonly conns: Conn[] = [];
  private constructor(readonly wss: WebSocketServer, readonly url: string) {
    wss.on("connection", (ws, req) => this.conns.push(new Conn(ws, req.url ?? "")));
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
  async conn(n: number): Promise<Conn> {
    await until(() => this.conns.length > n, `connection ${n + 1} to the fake server`);
    return this.conns[n]!;
  }
  stop(): Promise<void> {
    for (const c of this.conns) c.ws.terminate();
    return new Promise((res) => this.wss.close(() => res()));
  }
}

/* ------------------------------------------------------------- deltas */

const now = (): Hlc => packHlc(Date.now(), 0);

function rec(kp: KeyPair, id: string, fields: Record<string, Value>, hlc: Hlc, opts: { coll?: string; base?: 1 | 2 | null } = {}): DeltaRecord {
  return {
    coll: opts.coll ?? "Items", id,
    base: opts.base === null ? null : { kind: opts.base ?? 1, hlc, origin: kp.publicKey },
    fields: Object.entries(fields).map(([k, v]) => ({ path: [k], hlc, origin: kp.publicKey, ...refOf(encodeValue(v)) })),
  };
}

interface DeltaOpts {
  history?: { seq: number; fp: Uint8Array }[];
  recipient?: Uint8Array | null;
  ack?: number | null;
}

function delta(kp: KeyPair, from: number, to: number, records: DeltaRecord[], dbId = DB, o: DeltaOpts = {}): Promise<Uint8Array> {
  return encodeDelta({ dbId, sender: kp.publicKey, from, to, ack: o.ack ?? null, records, history: o.history ?? [], recipient: o.recipient ?? null }, kp);
}

/* ------------------------------------------------------------- a case */

interface Case {
  srv: FakeServer;
  kp: KeyPair;
  ds: CrdtdbDataStore;
  conn: Conn;
  events: SessionEvent[];
  statuses: SyncStatus[];
  file: string;
  serverHex: string;
}

/** A client synced with the fake server, holding one good record ("good",
 *  from the server's delta (0, 1], acknowledged); with `handshake`, the
 *  server's side of the handshake is that function's instead (no good delta). */
async function connected(dir: string, handshake?: (conn: Conn, kp: KeyPair, clientId: Uint8Array) => Promise<void>, backoffMs = 20_000): Promise<Case> {
  const srv = await FakeServer.start();
  const kp = await generateKeyPair();
  const events: SessionEvent[] = [];
  const statuses: SyncStatus[] = [];
  const file = join(dir, "client.crdtdb");
  const ds = await CrdtdbDataStore.open({
    dbId: DB, collections: COLLS, backend: new FileBackend(file),
    // reconnects (after the refusals that end a session) wait long enough
    // not to disturb the checks
    sync: { url: srv.url, socket: nodeSocket(), minBackoffMs: backoffMs, maxBackoffMs: backoffMs, onEvent: (e) => events.push(e), onStatus: (s) => statuses.push(s) },
  });
  const conn = await srv.conn(0);
  assert.equal(conn.path, `/v1/db/${DB}`);
  const hello = await conn.waitFor("hello", "the client's hello");
  assert.equal(hello.dbId, DB);
  assert.equal(toHex(hello.replicaId), ds.replica.idHex);
  if (handshake) {
    await handshake(conn, kp, ds.replica.id);
    return { srv, kp, ds, conn, events, statuses, file, serverHex: toHex(kp.publicKey) };
  }
  conn.send({ t: "hello", version: 1, dbId: DB, replicaId: kp.publicKey, mode: 1 });
  conn.send({ t: "since", seq: 0 });
  await conn.waitFor("since", "the client's since");
  conn.send({ t: "delta", delta: await delta(kp, 0, 1, [rec(kp, "good", { a: 1 }, now())]) });
  await conn.waitFor("ack", "the ack of the good delta", (m) => m.seq === 1);
  assert.deepEqual(await ds.query("Items", {}), [{ id: "good", a: 1 }]);
  return { srv, kp, ds, conn, events, statuses, file, serverHex: toHex(kp.publicKey) };
}

interface Snap { items: string; boards: string; seq: number; received: number; acked: number; hlc: Hlc }

async function snap(c: Case): Promise<Snap> {
  const j = (v: unknown): string => JSON.stringify(v, (_k, x) => (typeof x === "bigint" ? `${x}n` : x));
  const p = c.ds.replica.peer(c.serverHex);
  return { items: j(await c.ds.query("Items", {})), boards: j(await c.ds.query("Boards", {})), seq: c.ds.replica.seq, received: p.received, acked: p.acked, hlc: c.ds.replica.clock.last };
}

/** Nothing of the bad input stored: the same content, sequence, watermarks
 *  and clock now, and after closing and reopening the file. */
async function assertUnchanged(c: Case, before: Snap, what: string): Promise<void> {
  const now = await snap(c);
  assert.deepEqual(now, before, `${what}: the store changed`);
  await c.ds.close();
  const again = await CrdtdbDataStore.open({ dbId: DB, collections: COLLS, backend: new FileBackend(c.file) });
  try {
    const p = again.replica.peer(c.serverHex);
    assert.deepEqual(
      { items: JSON.stringify(await again.query("Items", {})), boards: JSON.stringify(await again.query("Boards", {})), seq: again.replica.seq, received: p.received },
      { items: before.items, boards: before.boards, seq: before.seq, received: before.received },
      `${what}: something was stored durably`);
  } finally {
    await again.close();
  }
}

/** The client refused with `code` and ended the session: an ERROR frame to
 *  the server, a fatal error event, and the connection closed by the client. */
async function assertRefused(c: Case, code: keyof typeof ERRORS, what: string, from: number, pattern?: RegExp): Promise<void> {
  const err = await c.conn.waitFor("error", `${what}: the client's ERROR`, () => true, from);
  assert.equal(err.code, ERRORS[code][0], `${what}: ERROR ${err.code} '${err.message}', expected ${code}`);
  if (pattern) assert.match(err.message, pattern, `${what}: the message says why`);
  const ev = c.events.find((e) => e.type === "error" && e.fatal);
  assert.ok(ev && ev.type === "error" && ev.code === code, `${what}: a fatal ${code} event, got ${JSON.stringify(c.events.filter((e) => e.type === "error"))}`);
  assert.ok(c.events.some((e) => e.type === "closed"), `${what}: the session ended`);
  // nothing after the error: no ack, no since
  await sleep(100);
  const after = c.conn.msgs.slice(c.conn.msgs.indexOf(err) + 1);
  assert.deepEqual(after.filter((m) => m.t === "ack"), [], `${what}: acknowledged after the refusal`);
  await until(() => c.conn.closed, `${what}: the client closes the connection after its ERROR`, 3000);
  // offline (retrying with backoff) or stopped (when retrying cannot help): either way with the error
  await until(() => (c.ds.sync!.status.state === "offline" || c.ds.sync!.status.state === "stopped") && c.ds.sync!.status.error?.code === code,
    `${what}: the status says offline or stopped with ${code} (it says ${JSON.stringify(c.ds.sync!.status)})`, 3000);
}

async function withCase(fn: (c: Case) => Promise<void>, handshake?: (conn: Conn, kp: KeyPair, clientId: Uint8Array) => Promise<void>): Promise<void> {
  const tmp = tempDir("crdtdb-hostile-");
  let c: Case | null = null;
  try {
    c = await connected(tmp.path, handshake);
    await fn(c);
  } finally {
    await c?.ds.close().catch(() => undefined);
    await c?.srv.stop();
    tmp.remove();
  }
}

/* -------------------------------------------------------------- cases */

test("(a) a delta with a forged signature: ERROR EBADSIG, nothing stored", async () => {
  await withCase(async (c) => {
    const before = await snap(c);
    const d = await delta(c.kp, 1, 2, [rec(c.kp, "evil", { a: 666 }, now()), rec(c.kp, "good", { a: 2 }, now())]);
    d[d.length - 1]! ^= 0x01; // the signature's last byte
    const from = c.conn.msgs.length;
    c.conn.send({ t: "delta", delta: d });
    await assertRefused(c, "EBADSIG", "forged signature", from, /signature/);
    await assertUnchanged(c, before, "forged signature");
  });
});

test("(a) a delta whose body was changed after signing: ERROR EBADSIG, nothing stored", async () => {
  await withCase(async (c) => {
    const before = await snap(c);
    const d = await delta(c.kp, 1, 2, [rec(c.kp, "good", { a: 7 }, now())]);
    // the value 7 (positive fixint 0x07) appears once in the body: make it 8
    const at = d.indexOf(0x07, 40);
    assert.ok(at > 0 && at < d.length - 64);
    d[at] = 0x08;
    const from = c.conn.msgs.length;
    c.conn.send({ t: "delta", delta: d });
    await assertRefused(c, "EBADSIG", "changed body", from);
    await assertUnchanged(c, before, "changed body");
  });
});

test("(b) a delta for another database: ERROR EINVAL, nothing stored", async () => {
  await withCase(async (c) => {
    const before = await snap(c);
    const from = c.conn.msgs.length;
    c.conn.send({ t: "delta", delta: await delta(c.kp, 1, 2, [rec(c.kp, "other", { a: 1 }, now())], "another-db") });
    await assertRefused(c, "EINVAL", "another database", from, /another-db/);
    await assertUnchanged(c, before, "another database");
  });
});

test("(b) a delta with a record id holding NUL: ERROR EBADID (as a C replica, whose ids are C strings), nothing stored", async () => {
  await withCase(async (c) => {
    const before = await snap(c);
    const from = c.conn.msgs.length;
    c.conn.send({ t: "delta", delta: await delta(c.kp, 1, 2, [rec(c.kp, "good2", { a: 1 }, now()), rec(c.kp, "a\u0000b", { a: 1 }, now())]) });
    await assertRefused(c, "EBADID", "a NUL in an id", from, /NUL/);
    await assertUnchanged(c, before, "a NUL in an id");
  });
});

test("(c) a delta stamped one hour ahead: a notice ECLOCK, nothing stored, the clock untouched; the session goes on", async () => {
  await withCase(async (c) => {
    const before = await snap(c);
    const ahead = packHlc(Date.now() + 3_600_000, 0);
    const from = c.conn.msgs.length;
    c.conn.send({ t: "delta", delta: await delta(c.kp, 1, 3, [rec(c.kp, "future", { a: 1 }, ahead), rec(c.kp, "good", { a: 99 }, ahead)]) });
    const notice = await c.conn.waitFor("notice", "the client's notice", () => true, from);
    assert.equal(notice.code, ERRORS.ECLOCK[0]);
    assert.match(notice.message, /ahead/);
    const ev = c.events.find((e) => e.type === "error");
    assert.ok(ev && ev.type === "error" && ev.code === "ECLOCK" && !ev.fatal, `a non-fatal ECLOCK event: ${JSON.stringify(ev)}`);
    assert.equal(c.conn.msgs.slice(from).filter((m) => m.t === "error" || m.t === "ack").length, 0, "no ERROR, no ack");
    assert.deepEqual(await snap(c), before, "nothing stored, watermark and clock unchanged");
    assert.ok(hlcMs(c.ds.replica.clock.last) < Date.now() + 60_000, "the clock did not jump ahead");
    // the session goes on: a delta in time is applied and acknowledged
    await sleep(300);
    assert.ok(!c.conn.closed && c.ds.sync!.status.state !== "offline", "the session goes on");
    const at = c.conn.msgs.length;
    c.conn.send({ t: "delta", delta: await delta(c.kp, 1, 2, [rec(c.kp, "other", { b: 1 }, now())]) });
    await c.conn.waitFor("ack", "the ack of a delta in time", (m) => m.seq === 2, at);
    assert.equal(await c.ds.getById("Items", "future", true), null);
  });
});

test("(c) a delta stamped just past the skew limit: ECLOCK, then asked again with since once in time, and applied when resent", async () => {
  await withCase(async (c) => {
    const before = await snap(c);
    // 5 min + 2 s ahead: refused now, in time in about 2 s
    const ahead = packHlc(Date.now() + 302_000, 0);
    const from = c.conn.msgs.length;
    c.conn.send({ t: "delta", delta: await delta(c.kp, 1, 3, [rec(c.kp, "soon", { a: 1 }, ahead), rec(c.kp, "good", { a: 99 }, ahead)]) });
    const notice = await c.conn.waitFor("notice", "the client's notice", () => true, from);
    assert.equal(notice.code, ERRORS.ECLOCK[0]);
    assert.deepEqual(await snap(c), before, "nothing stored, watermark and clock unchanged");
    const again = await c.conn.waitFor("since", "the client's since after the refusal", () => true, from, 10_000);
    assert.equal(again.seq, 1, "asked again from the unchanged watermark");
    const at = c.conn.msgs.length;
    c.conn.send({ t: "delta", delta: await delta(c.kp, 1, 3, [rec(c.kp, "soon", { a: 1 }, ahead), rec(c.kp, "good", { a: 99 }, ahead)]) });
    await c.conn.waitFor("ack", "the ack of the resent delta", (m) => m.seq === 3, at, 10_000);
    assert.deepEqual(await c.ds.getById("Items", "good"), { id: "good", a: 99 });
    assert.equal(c.ds.replica.peer(c.serverHex).received, 3);
  });
});

test("(d) a delta signed by another key than the server's hello: refused (EBADVALUE), nothing stored", async () => {
  await withCase(async (c) => {
    const before = await snap(c);
    const other = await generateKeyPair();
    const from = c.conn.msgs.length;
    c.conn.send({ t: "delta", delta: await delta(other, 1, 2, [rec(other, "good", { a: 5 }, now())]) });
    await assertRefused(c, "EBADVALUE", "another signer", from, /another replica than the peer/);
    await assertUnchanged(c, before, "another signer");
  });
});

test("(e) a frame over the client's max message: ERROR ETOOBIG before its bytes arrive, nothing stored", async () => {
  await withCase(async (c) => {
    const before = await snap(c);
    const from = c.conn.msgs.length;
    // a length of 9 MiB (the client's limit is 8 MiB), then only a few bytes
    c.conn.sendRaw(new Uint8Array([0x00, 0x90, 0x00, 0x00, 0x92, 0x03, 0xc4]));
    await assertRefused(c, "ETOOBIG", "oversized frame", from, /exceeds/);
    await assertUnchanged(c, before, "oversized frame");
  });
});

test("(e) garbage and truncated frames: ERROR EBADVALUE, nothing stored", async () => {
  for (const [name, body] of [
    ["garbage", [0xc1, 0xff, 0x00]],
    ["a truncated message", [0x92, 0x03, 0xc4, 0x10, 0x01, 0x02]], // [3, bin(16) of 2 bytes]
    ["a delta message that is not bin", [0x92, 0x03, 0xa3, 0x61, 0x62, 0x63]],
  ] as const) {
    await withCase(async (c) => {
      const before = await snap(c);
      const from = c.conn.msgs.length;
      const f = new Uint8Array(4 + body.length);
      new DataView(f.buffer).setUint32(0, body.length);
      f.set(body, 4);
      c.conn.sendRaw(f);
      await assertRefused(c, "EBADVALUE", name, from, /malformed/);
      await assertUnchanged(c, before, name);
    });
  }
});

test("(e) a delta whose envelope is cut short: ERROR EBADVALUE, nothing stored", async () => {
  await withCase(async (c) => {
    const before = await snap(c);
    const d = await delta(c.kp, 1, 2, [rec(c.kp, "cut", { a: 1 }, now())]);
    const from = c.conn.msgs.length;
    c.conn.send({ t: "delta", delta: d.subarray(0, d.length - 20) });
    await assertRefused(c, "EBADVALUE", "cut delta", from);
    await assertUnchanged(c, before, "cut delta");
  });
});

test("(f) equivocation: the same stamp with another value: ERROR EFORGED, nothing of the delta stored", async () => {
  await withCase(async (c) => {
    const s = now();
    c.conn.send({ t: "delta", delta: await delta(c.kp, 1, 2, [rec(c.kp, "eq", { v: "first" }, s)]) });
    await c.conn.waitFor("ack", "the ack of the first write", (m) => m.seq === 2);
    // the same delivered again is harmless
    c.conn.send({ t: "delta", delta: await delta(c.kp, 1, 2, [rec(c.kp, "eq", { v: "first" }, s)]) });
    await sleep(100);
    assert.equal(c.events.filter((e) => e.type === "error").length, 0, "a repeat is no equivocation");
    const before = await snap(c);
    const from = c.conn.msgs.length;
    c.conn.send({
      t: "delta",
      delta: await delta(c.kp, 2, 3, [rec(c.kp, "fresh", { ok: true }, now(), { coll: "Boards" }), rec(c.kp, "eq", { v: "second" }, s)]),
    });
    await assertRefused(c, "EFORGED", "equivocation", from, /one stamp/);
    await assertUnchanged(c, before, "equivocation");
  });
});

test("(f) equivocation on the base: the same stamp, add then remove: ERROR EFORGED", async () => {
  await withCase(async (c) => {
    const s = now();
    c.conn.send({ t: "delta", delta: await delta(c.kp, 1, 2, [rec(c.kp, "eqb", { v: 1 }, s)]) });
    await c.conn.waitFor("ack", "the ack of the add", (m) => m.seq === 2);
    const before = await snap(c);
    const from = c.conn.msgs.length;
    c.conn.send({ t: "delta", delta: await delta(c.kp, 2, 3, [rec(c.kp, "eqb", {}, s, { base: 2 })]) });
    await assertRefused(c, "EFORGED", "base equivocation", from);
    await assertUnchanged(c, before, "base equivocation");
  });
});

test("(g) a purge for an undeclared collection: ERROR EBADVALUE, nothing changed", async () => {
  await withCase(async (c) => {
    const before = await snap(c);
    const from = c.conn.msgs.length;
    c.conn.send({ t: "purge", coll: "Nope", id: "good" });
    await assertRefused(c, "EBADVALUE", "purge", from, /purge of an unknown record/);
    await assertUnchanged(c, before, "purge");
  });
});

test("(g) a replace for an undeclared collection: ERROR EBADVALUE, nothing changed", async () => {
  await withCase(async (c) => {
    const before = await snap(c);
    const from = c.conn.msgs.length;
    const d = await delta(c.kp, 0, 0, [rec(c.kp, "good", { a: 3 }, now(), { coll: "Nope" })]);
    c.conn.send({ t: "replace", coll: "Nope", id: "good", upto: 10, delta: d });
    await assertRefused(c, "EBADVALUE", "replace", from, /replace of an unknown record/);
    await assertUnchanged(c, before, "replace");
  });
});

test("(g) a replace whose delta is signed by another key: ERROR EBADVALUE, nothing changed", async () => {
  await withCase(async (c) => {
    const other = await generateKeyPair();
    const before = await snap(c);
    const from = c.conn.msgs.length;
    const d = await delta(other, 0, 0, [rec(other, "good", { a: 3 }, now())]);
    c.conn.send({ t: "replace", coll: "Items", id: "good", upto: 10, delta: d });
    await assertRefused(c, "EBADVALUE", "replace by another signer", from, /another replica than the peer/);
    await assertUnchanged(c, before, "replace by another signer");
  });
});

test("(g) a replace whose delta holds another record too: ERROR EBADVALUE (as C), nothing changed, the clock untouched", async () => {
  await withCase(async (c) => {
    const before = await snap(c);
    const from = c.conn.msgs.length;
    // the other record's stamp is ahead of everything here: it must not reach the clock
    const d = await delta(c.kp, 0, 0, [rec(c.kp, "good", { a: 3 }, now()), rec(c.kp, "other", { a: 4 }, now() + 60_000n * 65536n)]);
    c.conn.send({ t: "replace", coll: "Items", id: "good", upto: 10, delta: d });
    await assertRefused(c, "EBADVALUE", "replace holding another record", from, /holds another record/);
    await assertUnchanged(c, before, "replace holding another record");
  });
});

test("a delta for an undeclared collection: refused (ENOCOLL, as C), nothing stored", async () => {
  await withCase(async (c) => {
    const before = await snap(c);
    const from = c.conn.msgs.length;
    c.conn.send({ t: "delta", delta: await delta(c.kp, 1, 2, [rec(c.kp, "good", { a: 4 }, now()), rec(c.kp, "x", { a: 1 }, now(), { coll: "Nope" })]) });
    await assertRefused(c, "ENOCOLL", "undeclared collection", from, /Nope/);
    await assertUnchanged(c, before, "undeclared collection");
  });
});

test("(c) after an ECLOCK refusal, a later delta that does not continue the range is merged but not acknowledged; the re-asked range is, then", async () => {
  await withCase(async (c) => {
    const from = c.conn.msgs.length;
    c.conn.send({ t: "delta", delta: await delta(c.kp, 1, 3, [rec(c.kp, "future", { a: 1 }, packHlc(Date.now() + 302_000, 0))]) });
    await c.conn.waitFor("notice", "the ECLOCK notice", (m) => m.code === ERRORS.ECLOCK[0], from);
    // (3, 4]: beyond the gap the refusal left
    c.conn.send({ t: "delta", delta: await delta(c.kp, 3, 4, [rec(c.kp, "after", { b: 1 }, now())]) });
    await until(async () => (await c.ds.getById("Items", "after", true)) !== null, "the later delta merged");
    assert.equal(c.ds.replica.peer(c.serverHex).received, 1, "the watermark stays before the gap");
    assert.equal(c.conn.msgs.slice(from).filter((m) => m.t === "ack").length, 0, "nothing acknowledged past the gap");
    const since = await c.conn.waitFor("since", "the since after the refusal", () => true, from, 10_000);
    assert.equal(since.seq, 1);
    const at = c.conn.msgs.length;
    c.conn.send({ t: "delta", delta: await delta(c.kp, 1, 4, [rec(c.kp, "after", { b: 1 }, now()), rec(c.kp, "future", { a: 2 }, now())]) });
    await c.conn.waitFor("ack", "the ack of the resent range", (m) => m.seq === 4, at);
    assert.equal(c.ds.replica.peer(c.serverHex).received, 4);
    assert.deepEqual((await c.ds.query("Items", {})).map((r) => r.id), ["after", "future", "good"]);
  });
});

test("(c) a replace stamped one hour ahead: a notice ECLOCK, the record untouched, the session goes on", async () => {
  await withCase(async (c) => {
    const before = await snap(c);
    const from = c.conn.msgs.length;
    const d = await delta(c.kp, 0, 0, [rec(c.kp, "good", { a: 42 }, packHlc(Date.now() + 3_600_000, 0))]);
    c.conn.send({ t: "replace", coll: "Items", id: "good", upto: 10, delta: d });
    const notice = await c.conn.waitFor("notice", "the ECLOCK notice", () => true, from);
    assert.equal(notice.code, ERRORS.ECLOCK[0]);
    assert.deepEqual(await snap(c), before);
    assert.ok(!c.conn.closed);
    assert.equal(c.conn.msgs.slice(from).filter((m) => m.t === "error").length, 0);
  });
});

test("(h) a delta acknowledging more of the client's log than it wrote: ERROR EFORK, nothing stored", async () => {
  await withCase(async (c) => {
    const before = await snap(c);
    const from = c.conn.msgs.length;
    c.conn.send({ t: "delta", delta: await delta(c.kp, 1, 2, [rec(c.kp, "good", { a: 9 }, now())], DB, { recipient: c.ds.replica.id, ack: before.seq + 1000 }) });
    await assertRefused(c, "EFORK", "ack beyond our log", from, /copied replica/);
    await assertUnchanged(c, before, "ack beyond our log");
  });
});

test("(h) a SINCE above the client's own log (another copy wrote under its id): ERROR EFORK, nothing stored, sync stopped", async () => {
  await withCase(async (c) => {
    const before = await snap(c);
    const from = c.conn.msgs.length;
    c.conn.send({ t: "since", seq: before.seq + 1 });
    await assertRefused(c, "EFORK", "since beyond our log", from, /holds \d+ of this replica's changes, more than the \d+ it wrote/);
    assert.equal(c.ds.sync!.status.state, "stopped", "retrying cannot help: the sync stops with the error");
    await assertUnchanged(c, before, "since beyond our log");
  });
});

test("(h) a second history fingerprint for one sequence (a copied server): ERROR EFORK, nothing stored", async () => {
  await withCase(async (c) => {
    const fpA = new Uint8Array(16).fill(0xaa), fpB = new Uint8Array(16).fill(0xbb);
    c.conn.send({ t: "delta", delta: await delta(c.kp, 1, 2, [rec(c.kp, "h1", { a: 1 }, now())], DB, { history: [{ seq: 2, fp: fpA }] }) });
    await c.conn.waitFor("ack", "the ack of the first history", (m) => m.seq === 2);
    const before = await snap(c);
    const from = c.conn.msgs.length;
    c.conn.send({ t: "delta", delta: await delta(c.kp, 2, 3, [rec(c.kp, "h2", { a: 1 }, now())], DB, { history: [{ seq: 2, fp: fpB }, { seq: 3, fp: fpA }] }) });
    await assertRefused(c, "EFORK", "second history", from);
    await assertUnchanged(c, before, "second history");
  });
});

test("(h) two history fingerprints for one sequence in one delta: ERROR EFORK (as C), nothing stored", async () => {
  await withCase(async (c) => {
    const fpA = new Uint8Array(16).fill(0xaa), fpB = new Uint8Array(16).fill(0xbb);
    const before = await snap(c);
    const from = c.conn.msgs.length;
    c.conn.send({ t: "delta", delta: await delta(c.kp, 1, 2, [rec(c.kp, "h1", { a: 1 }, now())], DB, { history: [{ seq: 2, fp: fpA }, { seq: 2, fp: fpB }] }) });
    await assertRefused(c, "EFORK", "two histories in one delta", from);
    await assertUnchanged(c, before, "two histories in one delta");
  });
});

/* ------------------------------------- runs of deltas received together */

/** Frames sent in one WebSocket message: the client reads them together,
 *  so a run of deltas among them is applied as one commit. */
function together(ms: Message[]): Uint8Array {
  const fs = ms.map(encodeFrame);
  const b = new Uint8Array(fs.reduce((n, f) => n + f.length, 0));
  let o = 0;
  for (const f of fs) { b.set(f, o); o += f.length; }
  return b;
}

/** Counts the replica's backend commits from now on. */
function countCommits(c: Case): { n: number } {
  const count = { n: 0 };
  const be = (c.ds.replica as unknown as { backend: { commit(b: unknown): Promise<void> } }).backend;
  const commit = be.commit.bind(be);
  be.commit = (b) => { count.n++; return commit(b); };
  return count;
}

async function reopened(c: Case): Promise<{ items: unknown; received: number }> {
  await c.ds.close();
  const again = await CrdtdbDataStore.open({ dbId: DB, collections: COLLS, backend: new FileBackend(c.file) });
  try {
    return { items: await again.query("Items", {}), received: again.replica.peer(c.serverHex).received };
  } finally {
    await again.close();
  }
}

test("(i) deltas received together commit once: all merged, the watermark at the last, one ack, stored", async () => {
  await withCase(async (c) => {
    const commits = countCommits(c);
    const seq0 = c.ds.replica.seq;
    const from = c.conn.msgs.length;
    c.conn.sendRaw(together([
      { t: "delta", delta: await delta(c.kp, 1, 2, [rec(c.kp, "r1", { a: 1 }, now())], DB, { history: [{ seq: 2, fp: new Uint8Array(16).fill(2) }] }) },
      { t: "delta", delta: await delta(c.kp, 2, 4, [rec(c.kp, "r2", { a: 2 }, now()), rec(c.kp, "good", { a: 5 }, now())]) },
      { t: "delta", delta: await delta(c.kp, 4, 5, [rec(c.kp, "r1", { b: 3 }, now(), { base: null })], DB, { history: [{ seq: 5, fp: new Uint8Array(16).fill(5) }] }) },
    ]));
    await c.conn.waitFor("ack", "the ack of the run", (m) => m.seq === 5, from);
    assert.equal(commits.n, 1, "one backend commit for the run");
    assert.deepEqual(c.conn.msgs.slice(from).filter((m) => m.t === "ack").map((m) => m.t === "ack" && m.seq), [5], "one ack");
    const items = [{ id: "good", a: 5 }, { id: "r1", a: 1, b: 3 }, { id: "r2", a: 2 }];
    assert.deepEqual(await c.ds.query("Items", {}), items);
    assert.equal(c.ds.replica.seq, seq0 + 7, "every register numbered: r1's base and a, r2's, good's (added again), r1's b");
    assert.deepEqual(c.ds.replica.peer(c.serverHex).points.map(([s]) => s), [2, 5], "both deltas' history points kept");
    assert.deepEqual(await reopened(c), { items, received: 5 });
  });
});

test("(i) an ECLOCK delta inside a run: those before commit and are acked, it gets its notice, the next still merges", async () => {
  await withCase(async (c) => {
    const from = c.conn.msgs.length;
    c.conn.sendRaw(together([
      { t: "delta", delta: await delta(c.kp, 1, 2, [rec(c.kp, "before", { a: 1 }, now())]) },
      { t: "delta", delta: await delta(c.kp, 2, 3, [rec(c.kp, "future", { a: 1 }, packHlc(Date.now() + 3_600_000, 0))]) },
      { t: "delta", delta: await delta(c.kp, 3, 4, [rec(c.kp, "after", { a: 1 }, now())]) },
    ]));
    const notice = await c.conn.waitFor("notice", "the notice of the refused delta", () => true, from);
    assert.equal(notice.code, ERRORS.ECLOCK[0]);
    await until(async () => (await c.ds.getById("Items", "after", true)) !== null, "the delta after the refused one merged");
    await c.conn.waitFor("ack", "the ack of the delta before", (m) => m.seq === 2, from);
    await sleep(150);
    assert.deepEqual(c.conn.msgs.slice(from).filter((m) => m.t === "ack").map((m) => m.t === "ack" && m.seq), [2], "acked up to the refused delta only");
    assert.equal(await c.ds.getById("Items", "future", true), null);
    assert.equal(c.ds.replica.peer(c.serverHex).received, 2, "the watermark stays before the refused delta");
    assert.ok(!c.events.some((e) => e.type === "error" && e.fatal), "the session goes on");
    assert.deepEqual(await reopened(c), { items: [{ id: "after", a: 1 }, { id: "before", a: 1 }, { id: "good", a: 1 }], received: 2 });
  });
});

test("(i) a forged delta inside a run: those before commit, ERROR EBADSIG, nothing of it or after stored", async () => {
  await withCase(async (c) => {
    const forged = await delta(c.kp, 2, 3, [rec(c.kp, "evil", { a: 666 }, now())]);
    forged[forged.length - 1]! ^= 0x01;
    const from = c.conn.msgs.length;
    c.conn.sendRaw(together([
      { t: "delta", delta: await delta(c.kp, 1, 2, [rec(c.kp, "before", { a: 1 }, now())]) },
      { t: "delta", delta: forged },
      { t: "delta", delta: await delta(c.kp, 3, 4, [rec(c.kp, "after", { a: 1 }, now())]) },
    ]));
    await assertRefused(c, "EBADSIG", "forged delta in a run", from, /signature/);
    assert.deepEqual(await reopened(c), { items: [{ id: "before", a: 1 }, { id: "good", a: 1 }], received: 2 });
  });
});

test("(i) a second history fingerprint between two deltas of one run: the first commits, ERROR EFORK", async () => {
  await withCase(async (c) => {
    const from = c.conn.msgs.length;
    c.conn.sendRaw(together([
      { t: "delta", delta: await delta(c.kp, 1, 2, [rec(c.kp, "h1", { a: 1 }, now())], DB, { history: [{ seq: 2, fp: new Uint8Array(16).fill(0xaa) }] }) },
      { t: "delta", delta: await delta(c.kp, 2, 3, [rec(c.kp, "h2", { a: 1 }, now())], DB, { history: [{ seq: 2, fp: new Uint8Array(16).fill(0xbb) }] }) },
    ]));
    await assertRefused(c, "EFORK", "second history in a run", from);
    assert.deepEqual(await reopened(c), { items: [{ id: "good", a: 1 }, { id: "h1", a: 1 }], received: 2 });
  });
});

test("(i) a malformed frame right behind a run: the run commits first, then ERROR EBADVALUE", async () => {
  await withCase(async (c) => {
    const from = c.conn.msgs.length;
    const run = together([
      { t: "delta", delta: await delta(c.kp, 1, 2, [rec(c.kp, "r1", { a: 1 }, now())]) },
      { t: "delta", delta: await delta(c.kp, 2, 3, [rec(c.kp, "r2", { a: 1 }, now())]) },
    ]);
    const garbage = new Uint8Array([0, 0, 0, 3, 0xc1, 0xc1, 0xc1]); // 0xc1: never used in msgpack
    const b = new Uint8Array(run.length + garbage.length);
    b.set(run);
    b.set(garbage, run.length);
    c.conn.sendRaw(b);
    await assertRefused(c, "EBADVALUE", "a malformed frame behind a run", from);
    assert.deepEqual(await reopened(c), { items: [{ id: "good", a: 1 }, { id: "r1", a: 1 }, { id: "r2", a: 1 }], received: 3 });
  });
});

/* an equivocation (EFORGED) is found by the merge, after the checks */
test("(i) an equivocating delta inside a run: those before it commit, ERROR EFORGED", async () => {
  await withCase(async (c) => {
    const s = now();
    const from = c.conn.msgs.length;
    c.conn.sendRaw(together([
      { t: "delta", delta: await delta(c.kp, 1, 2, [rec(c.kp, "x", { a: 1 }, s)]) },
      // the same stamp, another value: equivocation, refused by the merge
      { t: "delta", delta: await delta(c.kp, 2, 3, [rec(c.kp, "x", { a: 2 }, s)]) },
    ]));
    await assertRefused(c, "EFORGED", "equivocation in a run", from);
    assert.deepEqual(await reopened(c), { items: [{ id: "good", a: 1 }, { id: "x", a: 1 }], received: 2 });
  });
});

test("(i) the same two deltas sent apart: the first commits, ERROR EFORGED", async () => {
  await withCase(async (c) => {
    const s = now();
    const from = c.conn.msgs.length;
    c.conn.send({ t: "delta", delta: await delta(c.kp, 1, 2, [rec(c.kp, "x", { a: 1 }, s)]) });
    await c.conn.waitFor("ack", "the ack of the first", (m) => m.seq === 2, from);
    c.conn.send({ t: "delta", delta: await delta(c.kp, 2, 3, [rec(c.kp, "x", { a: 2 }, s)]) });
    await assertRefused(c, "EFORGED", "equivocation apart", from);
    assert.deepEqual(await reopened(c), { items: [{ id: "good", a: 1 }, { id: "x", a: 1 }], received: 2 });
  });
});

for (const [name, code, make] of [
  ["another database", "EINVAL", (kp: KeyPair) => ({ t: "hello", version: 1, dbId: "another-db", replicaId: kp.publicKey, mode: 1 })],
  ["protocol version 2", "EVERSION", (kp: KeyPair) => ({ t: "hello", version: 2, dbId: DB, replicaId: kp.publicKey, mode: 1 })],
  ["the client's own id", "EINVAL", (_kp: KeyPair, me: Uint8Array) => ({ t: "hello", version: 1, dbId: DB, replicaId: me, mode: 1 })],
  ["an unknown mode", "EBADVALUE", (kp: KeyPair) => ({ t: "hello", version: 1, dbId: DB, replicaId: kp.publicKey, mode: 3 })],
  ["a delta before the hello", "EBADVALUE", null],
] as const) {
  test(`a server hello with ${name}: ERROR ${code}, nothing stored`, async () => {
    await withCase(async (c) => {
      await assertRefused(c, code, name, 0);
      assert.deepEqual(await c.ds.query("Items", {}), []);
      assert.equal(c.ds.replica.seq, 0);
      assert.ok(!c.events.some((e) => e.type === "ready"), "the session never became ready");
    }, async (conn, kp, me) => {
      if (make) conn.send(make(kp, me) as Message);
      else conn.send({ t: "delta", delta: await delta(kp, 0, 1, [rec(kp, "early", { a: 1 }, now())]) });
    });
  });
}

test("a second hello: ERROR EBADVALUE", async () => {
  await withCase(async (c) => {
    const before = await snap(c);
    const from = c.conn.msgs.length;
    c.conn.send({ t: "hello", version: 1, dbId: DB, replicaId: c.kp.publicKey, mode: 1 });
    await assertRefused(c, "EBADVALUE", "second hello", from, /second hello/);
    await assertUnchanged(c, before, "second hello");
  });
});

test("(e) a skip whose range runs backwards, a since of max_bytes 0: ERROR EBADVALUE", async () => {
  for (const [name, m] of [
    ["a backwards skip", { t: "skip", from: 5, to: 2 }],
    ["a since of max_bytes 0", { t: "since", seq: 0, maxBytes: 0 }],
  ] as const) {
    await withCase(async (c) => {
      const before = await snap(c);
      const from = c.conn.msgs.length;
      c.conn.send(m as Message);
      await assertRefused(c, "EBADVALUE", name, from, /malformed/);
      await assertUnchanged(c, before, name);
    });
  }
});

test("an ack beyond the client's own log is believed by no one: ignored, the session goes on", async () => {
  await withCase(async (c) => {
    await c.ds.add("Boards", "mine", { n: 1 });
    const sent = await c.conn.waitFor("delta", "the client's delta of its write");
    assert.ok(sent.delta.length > 0);
    const before = await snap(c);
    c.conn.send({ t: "ack", seq: before.seq + 1_000_000 });
    await sleep(200);
    assert.deepEqual(await snap(c), before, "the acked watermark did not move");
    assert.equal(c.events.filter((e) => e.type === "error").length, 0);
    assert.ok(!c.conn.closed);
    // a true ack is taken
    c.conn.send({ t: "ack", seq: before.seq });
    await until(() => c.ds.replica.peer(c.serverHex).acked === before.seq, "the true ack recorded");
  });
});

test("after a refusal the client reconnects with backoff and resumes from its watermark; a good server then gets through", async () => {
  const tmp = tempDir("crdtdb-hostile-");
  let c: Case | null = null;
  try {
    c = await connected(tmp.path, undefined, 100);
    const d = await delta(c.kp, 1, 2, [rec(c.kp, "evil", { a: 1 }, now())]);
    d[d.length - 1]! ^= 0x01;
    c.conn.send({ t: "delta", delta: d });
    await until(() => c!.conn.closed, "the refusing client closes");
    const second = await c.srv.conn(1);
    const hello = await second.waitFor("hello", "the hello of the reconnection");
    assert.equal(toHex(hello.replicaId), c.ds.replica.idHex);
    second.send({ t: "hello", version: 1, dbId: DB, replicaId: c.kp.publicKey, mode: 1 });
    second.send({ t: "since", seq: 0 });
    const since = await second.waitFor("since", "the client's since on reconnection");
    assert.equal(since.seq, 1, "resumes after the good delta, before the refused one");
    second.send({ t: "delta", delta: await delta(c.kp, 1, 2, [rec(c.kp, "fine", { a: 2 }, now())]) });
    await second.waitFor("ack", "the ack of the good resend", (m) => m.seq === 2);
    assert.deepEqual((await c.ds.query("Items", {})).map((r) => r.id), ["fine", "good"]);
    await until(() => c!.ds.sync!.status.state === "open" || c!.ds.sync!.status.state === "synced", "the status open again");
  } finally {
    await c?.ds.close().catch(() => undefined);
    await c?.srv.stop();
    tmp.remove();
  }
});
