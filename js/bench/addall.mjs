// The 100k-field addAll alone, no server: a fresh memory store per run, 10,000 records x 10 fields in one commit.
// Reports wall and CPU ms per run (first run cold, the rest warm) and the median of the warm ones.
//   node js/bench/addall.mjs [--runs=N] [--records=N] [--profile=FILE]   (CRDTDB_JS_DIST picks the compiled client)
// --profile: a CPU profile of one run's window only (--profile-run=K, default 0: the cold one), summarized as cpuprof.mjs does.
import { writeFileSync } from "node:fs";
import { Session } from "node:inspector/promises";
import { summarize } from "./cpuprof.mjs";
import { loadClient, now } from "./lib.mjs";

const arg = (k, d) => +(process.argv.find((a) => a.startsWith(`--${k}=`))?.slice(k.length + 3) ?? d);
const runs = arg("runs", 8), records = arg("records", 10000);
const profFile = process.argv.find((a) => a.startsWith("--profile="))?.slice(10), profRun = arg("profile-run", 0);
const { CrdtdbDataStore } = await loadClient();
const cpuMs = () => { const u = process.cpuUsage(); return (u.user + u.system) / 1000; };
const out = [];
for (let i = 0; i < runs; i++) {
  const ds = await CrdtdbDataStore.open({ dbId: "big", collections: ["big"] });
  const prof = i === profRun && profFile ? new Session() : null;
  if (prof) { prof.connect(); await prof.post("Profiler.enable"); await prof.post("Profiler.setSamplingInterval", { interval: 100 }); await prof.post("Profiler.start"); }
  const t0 = now(), c0 = cpuMs();
  const items = {};
  for (let r = 0; r < records; r++) { const o = {}; for (let c = 0; c < 10; c++) o["c" + c] = r * 10 + c; items["r" + r] = o; }
  await ds.addAll("big", items);
  out.push({ wall: now() - t0, cpu: cpuMs() - c0 });
  if (prof) {
    const { profile } = await prof.post("Profiler.stop");
    prof.disconnect();
    writeFileSync(profFile, JSON.stringify(profile));
    summarize(profile, out[i].wall, 25);
  }
  if ((await ds.query("big", {})).length !== records) throw new Error("records missing");
  await ds.close();
}
const med = (xs) => { const s = [...xs].sort((a, b) => a - b); return s[s.length >> 1]; };
const warm = out.length > 1 ? out.slice(1) : out;
console.log(JSON.stringify({ bench: "addall", fields: records * 10, cold_wall_ms: +out[0].wall.toFixed(1), cold_cpu_ms: +out[0].cpu.toFixed(1),
  warm_wall_ms: +med(warm.map((x) => x.wall)).toFixed(1), warm_cpu_ms: +med(warm.map((x) => x.cpu)).toFixed(1),
  fields_per_s_cold: Math.round(records * 10 / out[0].wall * 1000) }));
