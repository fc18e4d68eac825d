// One fan-out receiver's CPU per delivered delta, without the network or the server: records once every WebSocket
// message `crdtdb serve` sends one receiver during node.mjs's fanout_latency workload (a writer client sets
// players/p{i%64}/x 3,000 times, 10 writes then sleep(10)), then replays those bytes into a CrdtdbDataStore with the
// same identity through a stand-in socket, one message per event-loop turn (each handled before the next arrives, as
// at 1,000 writes/s), with node.mjs's listener (onChange, `c.read()` of each visible change). N runs in one process;
// the first is cold; "warm" is the median of the second half of the runs. Steady enough to A/B a change to js/src (ab.mjs ... fanreplay.mjs).
// --receivers=K: K such stores in the process (same identity), each message handed to each in turn, as the
// benchmark's 15 receivers each get the server's delta in turn (the cache and heap of 15 stores, not one);
// CPU per delivered delta = CPU / (deltas of all K).
//   node js/bench/fanreplay.mjs [--runs=6] [--receivers=1] [--record=/tmp/crdtdb-fanreplay.bin] [--profile [--profile-run=K]]
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import { Session } from "node:inspector/promises";
import { loadClient, now, readRecording, recordingSocket, seededBackend, sleep, startServer, writeRecording } from "./lib.mjs";

const args = process.argv.slice(2);
const opt = (k, d) => { const a = args.find((x) => x.startsWith(`--${k}=`)); return a ? a.slice(k.length + 3) : d; };
const runs = +opt("runs", 6);
const receivers = +opt("receivers", 1);
const file = opt("record", "/tmp/crdtdb-fanreplay.bin");
const COLLS = ["players", "tp", "big"];
const DB = "fan";
const WRITES = 3000;
const C = await loadClient();
const SeededBackend = seededBackend(C, 9);

if (!existsSync(file)) {
  const srv = await startServer(COLLS);
  try {
    const open = (backend, socket) => C.CrdtdbDataStore.open({ dbId: DB, collections: COLLS, ...(backend ? { backend } : {}), sync: { url: srv.url, socket } });
    const w = await open(null, C.nodeSocket());
    await w.sync.whenSynced();
    const msgs = [];
    const sock = recordingSocket(C, msgs);
    const rcv = await open(new SeededBackend(), sock);
    await rcv.sync.whenSynced();
    let last = 0;
    rcv.replica.onChange((ch) => { for (const c of ch) if (c.visible) { const v = c.read()?.x; if (typeof v === "number" && v > last) last = v; } });
    const made = new Set();
    for (let i = 0; i < WRITES; i++) {
      const row = "p" + (i % 64);
      const p = made.has(row) ? w.update("players", row, { x: i + 1 }) : (made.add(row), w.add("players", row, { x: i + 1 }));
      p.catch((e) => console.error(e));
      if (i % 10 === 9) await sleep(10);
    }
    const t0 = now();
    while (last < WRITES && now() - t0 < 60000) await sleep(10);
    await sleep(200);
    await rcv.close();
    await w.close();
    const n = writeRecording(file, msgs);
    console.error(`recorded ${msgs.length} messages, ${n} bytes in ${file} (last x seen ${last})`);
  } finally {
    await srv.stop();
  }
}
const msgs = readRecording(file);

/** A socket that opens at once and delivers what the test hands it. */
function standIn() {
  const s = {
    binaryType: "arraybuffer", readyState: 1, bufferedAmount: 0, sent: 0,
    onopen: null, onclose: null, onerror: null, onmessage: null,
    send(d) { s.sent += d.length; },
    close() { s.readyState = 3; },
  };
  return s;
}
const turn = () => new Promise((r) => setImmediate(r));

mkdirSync("/tmp/crdtdb-prof", { recursive: true });
const profFile = "/tmp/crdtdb-prof/fanreplay.cpuprofile";
const profRun = +opt("profile-run", 1);
async function once(i) {
  const rs = [];
  for (let k = 0; k < receivers; k++) {
    const r = { sock: null, applied: 0, got: 0, err: null, ds: null };
    r.ds = await C.CrdtdbDataStore.open({
      dbId: DB, collections: COLLS, backend: new SeededBackend(),
      sync: {
        url: "ws://127.0.0.1:1", socket: () => (r.sock = standIn()), minBackoffMs: 60000,
        onEvent: (e) => { if (e.type === "applied") r.applied++; if (e.type === "error" && e.fatal) r.err = e; },
      },
    });
    while (!r.sock) await sleep(1);
    r.ds.replica.onChange((ch) => { for (const c of ch) if (c.visible && c.read()) r.got++; });
    rs.push(r);
  }
  let prof = null;
  if (i === profRun && args.includes("--profile")) {
    prof = new Session(); prof.connect(); await prof.post("Profiler.enable");
    await prof.post("Profiler.setSamplingInterval", { interval: 50 }); await prof.post("Profiler.start");
  }
  for (const r of rs) r.sock.onopen({});
  const t0 = now();
  const c0 = process.cpuUsage();
  for (const m of msgs) {
    for (const r of rs) {
      const ab = m.buffer.slice(m.byteOffset, m.byteOffset + m.length); // a fresh ArrayBuffer each, as a socket gives
      r.sock.onmessage({ data: ab });
      await r.ds.sync.session?.idle();
      await turn();
    }
  }
  const cu = process.cpuUsage(c0);
  const ms = now() - t0;
  if (prof) { const { profile } = await prof.post("Profiler.stop"); writeFileSync(profFile, JSON.stringify(profile)); prof.disconnect(); }
  const cpu = (cu.user + cu.system) / 1000;
  const rows = await rs[0].ds.query("players", {});
  const xs = rows.map((r) => r.x).sort((a, b) => b - a);
  for (const r of rs) await r.ds.close();
  return { ms, cpu, applied: rs.reduce((a, r) => a + r.applied, 0), got: rs.reduce((a, r) => a + r.got, 0), top: xs[0], err: rs.find((r) => r.err)?.err ?? null };
}

const res = [];
for (let i = 0; i < runs; i++) { const r = await once(i); res.push(r); if (r.err) break; }
const warm = res.slice(Math.max(1, res.length >> 1)).map((r) => r.cpu).sort((a, b) => a - b);
const med = warm.length ? warm[warm.length >> 1] : res[0].cpu;
const last = res[res.length - 1];
console.log(JSON.stringify({
  bench: "replay_fanout_receiver", dist: process.env.CRDTDB_JS_DIST ?? "js/bench/.dist", messages: msgs.length, bytes: msgs.reduce((a, m) => a + 4 + m.length, 4),
  receivers, deltas: last.applied, listener_changes: last.got, top_x: last.top, runs: res.length,
  first_cpu_ms: +res[0].cpu.toFixed(1), warm_cpu_ms: +med.toFixed(1), min_cpu_ms: +Math.min(...res.map((r) => r.cpu)).toFixed(1),
  warm_us_per_delivered_delta: +(med * 1000 / last.applied).toFixed(1), cpu_ms: res.map((r) => +r.cpu.toFixed(0)),
  wall_ms: res.map((r) => +r.ms.toFixed(0)), error: last.err?.message,
}));
process.exit(0);
