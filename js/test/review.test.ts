/**
 * Review findings (2026-12-04) as tests: each fails on js/src as of 291682c
 * and passes once the fix described next to it is applied (checked on a
 * patched copy):
 * 1. replica.ts exportFor: take at least one register per chunk
 *    (`(!keys.size || size < maxBytes * 0.8)`);
 * 2. replica.ts mergeRemote: drop a record from the commit when neither
 *    mergeBase nor mergeLeaves took anything;
 * 3. replica.ts/session.ts: a strict (meta-only) commit before a pump sends
 *    ranges written by relaxed commits (Replica.durable());
 * 4. replica.ts exportFor: index the log arrays taken at its start.
 */
import test from "node:test";
import assert from "node:assert/strict";
import { Worker } from "node:worker_threads";
import { pathToFileURL } from "node:url";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { MemoryBackend, type Batch } from "../src/backend.js";
import { ClientSession, TWO_WAY } from "../src/session.js";
import { encodeFrame, FrameReader } from "../src/frames.js";
import { generateKeyPair } from "../src/keys.js";
import { decodeDelta } from "../src/delta.js";
import { Replica } from "../src/replica.js";

const here = dirname(fileURLToPath(import.meta.url));

test("exportFor makes progress with a small max_bytes (a SINCE [2, seq, 100] must not hang the client)", async () => {
  // replica.ts exportFor: with maxBytes*0.8 <= 256 the chunk loop takes no
  // register, `from` never moves, and `while (i < logLen)` spins without an
  // await.  Run it in a worker so a hang is a failure, not a stuck runner.
  const url = pathToFileURL(join(here, "..", "src", "replica.js")).href;
  const bk = pathToFileURL(join(here, "..", "src", "backend.js")).href;
  const code = `
    const { parentPort } = require("node:worker_threads");
    (async () => {
      const { Replica } = await import(${JSON.stringify(url)});
      const { MemoryBackend } = await import(${JSON.stringify(bk)});
      const a = await Replica.open({ dbId: "d", collections: ["C"], backend: new MemoryBackend() });
      const b = await Replica.open({ dbId: "d", collections: ["C"], backend: new MemoryBackend() });
      await a.add("C", [["x", { v: 1 }]]);
      const x = await a.exportFor(b.id, 0, { maxBytes: 100 });
      parentPort.postMessage(x.deltas.length >= 1 && x.deltas[x.deltas.length - 1].to === a.seq ? "ok" : "short " + JSON.stringify(x.deltas.map((d) => d.to)));
    })().catch((e) => parentPort.postMessage("error " + e));`;
  const w = new Worker(code, { eval: true });
  try {
    const got = await new Promise((res) => {
      const t = setTimeout(() => res("hang"), 5000);
      w.on("message", (m) => { clearTimeout(t); res(m); });
    });
    assert.equal(got, "ok", "deltas up to the last sequence");
  } finally {
    await w.terminate();
  }
});

test("a delta applied again changes nothing and tells observers nothing", async () => {
  // replica.ts mergeRemote ignores whether mergeBase/mergeLeaves stored
  // anything: every record of a resent delta is rewritten to the backend and
  // reported as a change (DataStore: an Update with the same record).
  const a = await Replica.open({ dbId: "d", collections: ["C"], backend: new MemoryBackend() });
  const b = await Replica.open({ dbId: "d", collections: ["C"], backend: new MemoryBackend() });
  await a.add("C", [["x", { v: 1 }]]);
  const x = await a.exportFor(b.id, 0, { all: true });
  assert.equal(x.deltas.length, 1);
  let told = 0;
  b.onChange((changes) => { told += changes.length; });
  await b.apply(x.deltas[0]!.bytes, a.id);
  assert.equal(told, 1);
  await b.apply(x.deltas[0]!.bytes, a.id); // a resend (since rewind, ECLOCK re-ask, reconnect)
  assert.equal(told, 1, "the second apply reports no change");
  await a.close();
  await b.close();
});

test("a local commit is durable (strict) before the session sends it to the server", async () => {
  // backend.ts: relaxed "never set when a peer will be told"; but replica.ts
  // marks every local commit relaxed and session.ts pushes local commits at
  // once.  An IndexedDB relaxed commit lost to a power cut after the server
  // acked it leaves the replica at a lower seq than the server holds: its
  // next writes reuse those sequence numbers (a second history: the server's
  // SINCE is beyond our log, so they are never sent, and an addressed delta
  // carrying that ack is refused as EFORK).
  const events: string[] = [];
  class Recording extends MemoryBackend {
    override async commit(b: Batch): Promise<void> { events.push(b.relaxed ? "relaxed" : "strict"); }
  }
  const r = await Replica.open({ dbId: "d", collections: ["C"], backend: new Recording() });
  const server = await generateKeyPair();
  const reader = new FrameReader(64 << 20);
  const s = new ClientSession(r, {
    mode: TWO_WAY,
    send: (f) => { reader.push(f.slice()); for (let m = reader.next(); m; m = reader.next()) events.push("send " + m.t); },
    onEvent: () => undefined,
  });
  s.start();
  s.receive(encodeFrame({ t: "hello", version: 1, dbId: "d", replicaId: server.publicKey, mode: TWO_WAY }));
  s.receive(encodeFrame({ t: "since", seq: 0 }));
  await s.idle();
  await new Promise((res) => setTimeout(res, 20));
  events.length = 0;
  await r.add("C", [["x", { v: 1 }]]);
  await new Promise((res) => setTimeout(res, 50));
  const sent = events.indexOf("send delta");
  assert.ok(sent > 0, `a delta was sent: ${events.join(", ")}`);
  assert.equal(events.slice(0, sent).at(-1), "strict", `durable before sent: ${events.join(", ")}`);
  s.close();
  await r.close();
});

test("an export spanning several deltas stays whole when a commit compacts the log meanwhile", async () => {
  // replica.ts exportFor indexes the log's arrays (logStart/logEnd/logKey)
  // across awaits (encodeDelta signs each chunk), and finish() ->
  // rebuildLog() replaces them: an index taken before then points elsewhere
  // (here past the end), the rest of the range is "scanned" as stale and
  // left out, and the deltas still claim (after, last] whole, so the
  // server's watermark passes writes it never got.  So exportFor takes the
  // arrays once at its start and indexes those.
  const a = await Replica.open({ dbId: "d", collections: ["C"], backend: new MemoryBackend() });
  const b = await Replica.open({ dbId: "d", collections: ["C"], backend: new MemoryBackend() });
  await a.add("C", [["s", { v: 0 }]]);
  for (let i = 1; i <= 4090; i++) await a.update("C", "s", { v: i }); // stale entries first in the log
  const ids: [string, { v: string }][] = [];
  for (let i = 0; i < 300; i++) ids.push([`r${i}`, { v: "x".repeat(200) }]);
  await a.add("C", ids);
  const last = a.seq;
  const exp = a.exportFor(b.id, 0, { maxBytes: 4000 });
  // commits while the export signs its chunks: the stale count passes 4096
  const more = (async () => { for (let i = 0; i < 20; i++) await a.update("C", "s", { v: -i }); })();
  const [x] = await Promise.all([exp, more]);
  const got = new Set<string>();
  for (const d of x.deltas) for (const r of (await decodeDelta(d.bytes)).records) got.add(r.id);
  assert.equal(x.deltas.at(-1)?.to, last);
  assert.equal([...got].filter((id) => id.startsWith("r")).length, 300, "every record of the range is in the deltas");
  await a.close();
  await b.close();
});
