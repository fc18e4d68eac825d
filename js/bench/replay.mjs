// The fresh client's receive path without the network or the server: records once what `crdtdb serve` sends a
// fresh client of a 100k-field database (every WebSocket message), then replays those bytes into a ClientSession
// over a Replica with the same identity, in this process, N times: the client's own CPU cost, steady enough to
// compare a change to js/src (compile it elsewhere and point CRDTDB_JS_DIST at it).
//   node js/bench/replay.mjs [--runs=5] [--record=/tmp/crdtdb-replay.bin] [--profile [--profile-run=K]]
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { Session } from "node:inspector/promises";
import { benchDir, loadClient, now, readRecording, recordingSocket, seededBackend, sleep, startServer, writeRecording } from "./lib.mjs";

const args = process.argv.slice(2);
const opt = (k, d) => { const a = args.find((x) => x.startsWith(`--${k}=`)); return a ? a.slice(k.length + 3) : d; };
const runs = +opt("runs", 5);
const file = opt("record", "/tmp/crdtdb-replay.bin");
const COLLS = ["players", "tp", "big"];
const C = await loadClient();
const SeededBackend = seededBackend(C, 7);

if (!existsSync(file)) {
  const srv = await startServer(COLLS);
  try {
    const w = spawnSync(process.execPath, [join(benchDir, "writer.mjs"), srv.url, "big", "10000", "10"], { encoding: "utf8" });
    if (w.status !== 0) throw new Error(w.stderr);
    const msgs = [];
    const sock = recordingSocket(C, msgs);
    const ds = await C.CrdtdbDataStore.open({ dbId: "big", collections: COLLS, backend: new SeededBackend(), sync: { url: srv.url, socket: sock } });
    await ds.sync.whenSynced();
    await sleep(200);
    await ds.close();
    const n = writeRecording(file, msgs);
    console.error(`recorded ${msgs.length} messages, ${n} bytes in ${file}`);
  } finally {
    await srv.stop();
  }
}
const msgs = readRecording(file);

// --profile [--profile-run=K]: a CPU profile of run K only (default 0, the cold one) in /tmp/crdtdb-prof/replay.cpuprofile
mkdirSync("/tmp/crdtdb-prof", { recursive: true });
let prof = null;
const profFile = "/tmp/crdtdb-prof/replay.cpuprofile";
const profRun = +opt("profile-run", 0);
async function once(i) {
  if (i === profRun && args.includes("--profile")) {
    prof = new Session(); prof.connect(); await prof.post("Profiler.enable");
    await prof.post("Profiler.setSamplingInterval", { interval: 100 }); await prof.post("Profiler.start");
  }
  const r = await C.Replica.open({ dbId: "big", collections: COLLS, backend: new SeededBackend() });
  let sent = 0, caught = false, err = null;
  const s = new C.ClientSession(r, {
    mode: C.TWO_WAY, send: (f) => { sent += f.length; },
    onEvent: (e) => { if (e.type === "caughtUp") caught = true; if (e.type === "error") err = e; },
  });
  const t0 = now();
  const c0 = process.cpuUsage();
  s.start();
  for (const m of msgs) s.receive(new Uint8Array(m)); // a private copy each, as a socket gives
  await s.idle();
  // caughtUp ends it too: synced also waits for the server's answer to our own uptodate, which a recording lacks
  while (!s.synced && !caught && !err && now() - t0 < 60000) { await s.idle(); await sleep(0); }
  const ms = now() - t0;
  const cu = process.cpuUsage(c0);
  const cpu = (cu.user + cu.system) / 1000;
  if (prof) { const { profile } = await prof.post("Profiler.stop"); writeFileSync(profFile, JSON.stringify(profile)); prof = null; }
  let fields = 0;
  for (const rec of r.list("big", () => true)) fields += Object.keys(rec).length - 1;
  s.close();
  await r.close();
  return { ms, cpu, fields, sent, caught, err };
}

const times = [], cpus = [];
let last;
for (let i = 0; i < runs; i++) { last = await once(i); times.push(last.ms); cpus.push(last.cpu); if (last.err) break; }
const order = times.slice(); times.sort((a, b) => a - b);
console.log(JSON.stringify({ bench: "replay_fresh_sync", dist: process.env.CRDTDB_JS_DIST ?? "js/bench/.dist", messages: msgs.length,
  bytes: msgs.reduce((a, m) => a + 4 + m.length, 4), runs: times.length, min_ms: +times[0].toFixed(1), median_ms: +times[times.length >> 1].toFixed(1),
  all_ms: order.map((t) => +t.toFixed(0)), cpu_ms: cpus.map((t) => +t.toFixed(0)),
  first_cpu_ms: +cpus[0].toFixed(0), min_cpu_ms: +Math.min(...cpus).toFixed(0), fields: last.fields, client_sent_bytes: last.sent, error: last.err?.message }));
process.exit(0);
