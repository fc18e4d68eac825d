// Where the JS client's time goes: CPU profiles (node:inspector) of exactly the measured window.
//   node js/bench/profile.mjs sync   [--out=DIR]   a fresh client receiving 100k fields (the writer is another process)
//   node js/bench/profile.mjs fill   [--out=DIR]   the writer's one-commit addAll of 100k fields, and its upload
//   node js/bench/profile.mjs fanout [--out=DIR]   16 clients, 1000 writes/s for 3 s (writer and receivers here)
// Writes DIR/<name>.cpuprofile (open in Chrome DevTools) and prints the top functions by self and total time,
// with file:line in js/src (source maps of the compiled client are followed).
import { Session } from "node:inspector/promises";
import { spawn } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { summarize } from "./cpuprof.mjs";
import { benchDir, loadClient, now, sleep, startServer } from "./lib.mjs";

const args = process.argv.slice(2);
const what = args[0] ?? "sync";
const outDir = resolve(args.find((a) => a.startsWith("--out="))?.slice(6) ?? "/tmp/crdtdb-prof");
mkdirSync(outDir, { recursive: true });
const COLLS = ["players", "tp", "big"];

async function profiled(name, fn) {
  const s = new Session();
  s.connect();
  await s.post("Profiler.enable");
  await s.post("Profiler.setSamplingInterval", { interval: 100 });
  await s.post("Profiler.start");
  const t0 = now();
  const r = await fn();
  const ms = now() - t0;
  const { profile } = await s.post("Profiler.stop");
  s.disconnect();
  const file = join(outDir, name + ".cpuprofile");
  writeFileSync(file, JSON.stringify(profile));
  console.log(JSON.stringify({ profile: name, wall_ms: +ms.toFixed(0), file, ...r }));
  summarize(profile, ms);
}

// ---- the workloads
const { CrdtdbDataStore, nodeSocket } = await loadClient();
const srv = await startServer(COLLS);
const open = async (dbId) => {
  const ds = await CrdtdbDataStore.open({ dbId, collections: COLLS, sync: { url: srv.url, socket: nodeSocket(), minBackoffMs: 50 } });
  await ds.sync.whenSynced();
  return ds;
};
const uploaded = async (ds) => { while (!ds.sync.session?.synced) await sleep(2); };
const fill = () => {
  const items = {};
  for (let r = 0; r < 10000; r++) { const o = {}; for (let c = 0; c < 10; c++) o["c" + c] = r * 10 + c; items["r" + r] = o; }
  return items;
};
try {
  if (what === "fill") {
    const w = await open("fill");
    const items = fill();
    await profiled("fill", async () => { const t = now(); await w.addAll("big", items); const a = now() - t; await uploaded(w); return { addAll_ms: +a.toFixed(0) }; });
  } else if (what === "sync") {
    // the writer in another process, so the profile holds only the fresh client
    const child = spawn(process.execPath, [join(benchDir, "writer.mjs"), srv.url, "big", "10000", "10"], { stdio: ["ignore", "pipe", "inherit"] });
    let out = "";
    child.stdout.on("data", (d) => { out += d; });
    await new Promise((res, rej) => child.on("exit", (c) => c === 0 ? res() : rej(new Error("writer failed " + c))));
    console.log(out.trim());
    await sleep(500);
    let f;
    await profiled("sync", async () => { f = await open("big"); return {}; });
    const rows = await f.query("big", {});
    console.log(JSON.stringify({ rows: rows.length, fields: rows.reduce((n, r) => n + Object.keys(r).length - 1, 0) }));
  } else if (what === "fanout") {
    const clients = [];
    for (let i = 0; i < 16; i++) clients.push(await open("fan"));
    const made = new Set();
    let got = 0;
    for (let i = 1; i < 16; i++) clients[i].replica.onChange((ch) => { for (const c of ch) if (c.visible && c.read()) got++; });
    await profiled("fanout", async () => {
      for (let i = 0; i < 3000; i++) {
        const row = "p" + (i % 64);
        const p = made.has(row) ? clients[0].update("players", row, { x: i + 1 }) : (made.add(row), clients[0].add("players", row, { x: i + 1 }));
        p.catch(() => undefined);
        if (i % 10 === 9) await sleep(10);
      }
      const t = now();
      while (got < 45000 && now() - t < 30000) await sleep(10);
      return { delivered: got };
    });
  }
} finally {
  await srv.stop();
}
process.exit(0);
