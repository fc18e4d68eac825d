// One sitting: the peers (Yjs, TinyBase; then Yjs in Chromium, yjs-browser.mjs), then crdtdb (Node, then Chromium), one after
// the other, never at the same time, and crdtdb's figures as ratios to the peers'.   node js/bench/run.mjs [--no-peers] [--no-browser] [--no-build]
// Every JSON line of every run is printed as it comes; the ratios come last (lines with "figure").
import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { benchDir, jsDir, repoRoot } from "./lib.mjs";

const args = process.argv.slice(2);
const has = (f) => args.includes(f);
const PEERS = process.env.PEERS_DIR ?? "/work/shared/peers";
const dist = join(benchDir, ".dist");
const log = (o) => console.log(JSON.stringify(o));

function sh(cmd, argv, opts = {}) {
  const r = spawnSync(cmd, argv, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"], ...opts });
  if (r.status !== 0) throw new Error(`${cmd} ${argv.join(" ")} failed (${r.status}): ${r.stderr}\n${r.stdout}`);
  return r.stdout;
}
/** Runs a command, echoing its stdout lines as they come; returns the JSON objects it printed (+ raw lines). */
function run(cmd, argv, env = {}) {
  return new Promise((res, rej) => {
    const p = spawn(cmd, argv, { cwd: repoRoot, stdio: ["ignore", "pipe", "inherit"], env: { ...process.env, ...env } });
    const objs = [], lines = [];
    let buf = "";
    p.stdout.on("data", (d) => {
      buf += d;
      let i;
      while ((i = buf.indexOf("\n")) >= 0) {
        const l = buf.slice(0, i).trim();
        buf = buf.slice(i + 1);
        if (!l) continue;
        console.log(l);
        lines.push(l);
        if (l.startsWith("{")) try { objs.push(JSON.parse(l)); } catch { /* not JSON */ }
      }
    });
    p.on("exit", (code) => code === 0 ? res({ objs, lines }) : rej(new Error(`${cmd} ${argv.join(" ")} exited ${code}`)));
  });
}

// ---- build: the Release server, the client as of js/src (tsc), the browser bundle (esbuild, as `npm run bundle`)
if (!has("--no-build")) {
  if (!process.env.CRDTDB_BIN && !existsSync("/tmp/rel-js/crdtdb")) {
    console.error("building the Release crdtdb in /tmp/rel-js ...");
    sh("cmake", ["-S", repoRoot, "-B", "/tmp/rel-js", "-DCMAKE_BUILD_TYPE=Release", "-DCRDTDB_BENCHMARKS=OFF"]);
    sh("cmake", ["--build", "/tmp/rel-js", "-j2"]);
  }
  mkdirSync(dist, { recursive: true });
  // CRDTDB_JS_DIST / CRDTDB_BROWSER_BUNDLE: measure another build (a prototype) instead of js/src as it is
  if (!process.env.CRDTDB_JS_DIST) sh(join(jsDir, "node_modules", ".bin", "tsc"), ["-p", join(jsDir, "tsconfig.json"), "--outDir", dist]);
  const esb = join(jsDir, "node_modules", ".bin", "esbuild");
  if (process.env.CRDTDB_BROWSER_BUNDLE) { /* given */ }
  else if (existsSync(esb))
    sh(esb, [join(jsDir, "src", "index.ts"), "--log-level=warning", "--bundle", "--format=esm", "--platform=browser",
      "--target=es2022", "--sourcemap", `--outfile=${join(dist, "crdtdb.browser.js")}`]);
  else console.error("no esbuild in js/node_modules: the browser bench uses js/dist/crdtdb.browser.js");
}
log({ sitting: new Date().toISOString(), client: process.env.CRDTDB_JS_DIST ?? "js/src (compiled to js/bench/.dist)", load_avg: sh("cat", ["/proc/loadavg"]).trim(), git: sh("git", ["-C", repoRoot, "rev-parse", "--short", "HEAD"]).trim(),
  dirty_js_src: sh("git", ["-C", repoRoot, "status", "--porcelain", "js/src"]).trim().split("\n").filter(Boolean).length });

// ---- the peers, then ours
const peer = { yjs: null, tinybase: {} };
if (!has("--no-peers")) {
  const y = await run("bash", [join(PEERS, "yjs", "run.sh")]);
  peer.yjs = y.objs.find((o) => o.system === "yjs") ?? null;
  const t = await run("bash", [join(PEERS, "tinybase", "run.sh")]);
  for (const o of t.objs) if (o.bench) peer.tinybase[o.bench] = o;
  const rss = t.lines.find((l) => l.startsWith("server_rss_kb"));
  if (rss) peer.tinybase.server_rss_kb = +rss.split(/\s+/)[1];
}
// Yjs in Chromium (yjs-browser.mjs): the peer on the runtime of crdtdb's Chromium figures
const yjsChromium = {};
if (!has("--no-peers") && !has("--no-browser"))
  for (const o of (await run(process.execPath, [join(benchDir, "yjs-browser.mjs")])).objs) yjsChromium[o.bench + "_" + o.backend] = o;
const ours = {};
for (const o of (await run(process.execPath, [join(benchDir, "node.mjs")])).objs) ours[o.bench] = o;
if (!has("--no-browser"))
  for (const o of (await run(process.execPath, [join(benchDir, "browser.mjs"),
    ...(process.env.CRDTDB_BROWSER_BUNDLE ? [`--bundle=${process.env.CRDTDB_BROWSER_BUNDLE}`] : [])])).objs) ours[o.bench + (o.backend ? "_" + o.backend : "")] = o;

// ---- ratios. lower: smaller is better (times); higher: bigger is better (rates).
const y = peer.yjs, tb = peer.tinybase;
const num = (v) => (v === undefined || v === null || v === "" ? null : +v);
function figure(name, what, dir, mine, yjs, tinybase, goal) {
  const ratio = (p) => (mine === null || p === null || !p ? null : +(mine / p).toFixed(3));
  const better = (p) => (mine === null || p === null ? null : dir === "lower" ? mine < p : mine > p);
  const o = { figure: name, what, better_is: dir, crdtdb: mine, yjs, tinybase,
    ratio_vs_yjs: ratio(yjs), ratio_vs_tinybase: ratio(tinybase), better_than_yjs: better(yjs), better_than_tinybase: better(tinybase) };
  if (goal) o.goal = goal.text, o.goal_met = mine === null || goal.of === null ? null : goal.test(mine, goal.of);
  log(o);
}
const yi = y?.initial_sync, yl = y?.fanout_latency, yt = y?.fanout_throughput;
const ti = tb.initial_sync, tl = tb.fanout_latency, tt = tb.fanout_throughput;
const join_ = num(ours.initial_sync?.join_sync_ms);
figure("fresh_sync_100k_node_ms", "a fresh Node client receiving 100k fields: connect -> whenSynced (peers: until all 10,000 rows are visible)",
  "lower", join_, num(yi?.join_sync_ms), num(ti?.join_sync_ms), { text: "at most half of Yjs's time", of: num(yi?.join_sync_ms), test: (m, p) => m <= p / 2 });
figure("fanout_p50_ms", "16 clients, 1000 writes/s for 3 s: write -> listener on each of the other 15, median", "lower",
  num(ours.fanout_latency?.p50_ms), num(yl?.p50_ms), num(tl?.p50_ms));
figure("fanout_p99_ms", "the same, 99th percentile", "lower", num(ours.fanout_latency?.p99_ms), num(yl?.p99_ms), num(tl?.p99_ms));
figure("fanout_delivered", "deliveries of the 45,000 expected in the latency test", "higher",
  num(ours.fanout_latency?.delivered), num(yl?.delivered), num(tl?.delivered));
figure("fanout_field_deliveries_per_s", "20,000 single-field writes as fast as possible, x15 receivers / seconds until all have the marker",
  "higher", num(ours.fanout_throughput?.field_deliveries_per_s), num(yt?.field_deliveries_per_s), num(tt?.field_deliveries_per_s));
const br = (k) => ours[k];
figure("local_writes_per_s_chromium_indexeddb", "crdtdb: 20,000 single-field writes into IndexedDB in Chromium, until all committed; " +
  "Yjs: its writer loop of 20,000 single-field transactions on an in-memory Y.Doc in Node (fanout_throughput.local_write_ms, " +
  "sharing the process with 15 receivers); TinyBase reports no such figure", "higher",
  num(br("local_writes_indexeddb")?.writes_per_s), yt?.local_write_ms ? Math.round(20000 / yt.local_write_ms * 1000) : null, null);
figure("local_fill_fields_per_s_chromium_indexeddb", "crdtdb: 10,000 records x 10 fields in one addAll into IndexedDB in Chromium; " +
  "peers: the same 100k fields in one transaction on their in-memory store in Node (initial_sync.local_fill_ms)", "higher",
  num(br("local_writes_indexeddb")?.fill_fields_per_s), yi?.local_fill_ms ? Math.round(1e8 / yi.local_fill_ms) : null,
  ti?.local_fill_ms ? Math.round(1e8 / ti.local_fill_ms) : null);
figure("local_fill_fields_per_s_node_memory", "crdtdb: the writer's 100k-field addAll in Node (memory, sync attached); peers: as above", "higher",
  ours.initial_sync?.local_fill_ms ? Math.round(1e8 / ours.initial_sync.local_fill_ms) : null,
  yi?.local_fill_ms ? Math.round(1e8 / yi.local_fill_ms) : null, ti?.local_fill_ms ? Math.round(1e8 / ti.local_fill_ms) : null);
for (const b of ["indexeddb", "memory"])
  figure(`fresh_sync_100k_chromium_${b}_ms`, `a fresh Chromium page store (${b}) receiving 100k fields: open -> whenSynced; peers: their Node fresh client`,
    "lower", num(br("initial_sync_browser_" + b)?.join_sync_ms), num(yi?.join_sync_ms), num(ti?.join_sync_ms),
    { text: "at most half of Yjs's time", of: num(yi?.join_sync_ms), test: (m, p) => m <= p / 2 });
// the same Chromium figures against Yjs in Chromium (yjs 13 + y-websocket + y-indexeddb, yjs-browser.mjs): same
// runtime, same backend; Yjs's IndexedDB times are until IndexedDB committed what it wrote (its calls return before)
const yc = (k) => yjsChromium[k];
figure("local_writes_per_s_chromium_indexeddb_vs_yjs_chromium", "20,000 single-field writes into IndexedDB in Chromium, " +
  "until all committed; Yjs: 20,000 single-field transactions on a Y.Doc with y-indexeddb, until IndexedDB committed them", "higher",
  num(br("local_writes_indexeddb")?.writes_per_s), num(yc("local_writes_indexeddb")?.stored_writes_per_s), null);
figure("local_fill_fields_per_s_chromium_indexeddb_vs_yjs_chromium", "10,000 records x 10 fields in one addAll into IndexedDB in " +
  "Chromium; Yjs: the same in one transaction with y-indexeddb, until committed", "higher",
  num(br("local_writes_indexeddb")?.fill_fields_per_s), num(yc("local_writes_indexeddb")?.fill_stored_fields_per_s), null);
figure("local_fill_fields_per_s_chromium_memory_vs_yjs_chromium", "the same addAll into memory in Chromium; Yjs: its transaction, no persistence",
  "higher", num(br("local_writes_memory")?.fill_fields_per_s), num(yc("local_writes_memory")?.fill_fields_per_s), null);
for (const b of ["indexeddb", "memory"]) {
  const theirs = num(yc("initial_sync_browser_" + b)?.[b === "indexeddb" ? "join_stored_ms" : "join_sync_ms"]);
  figure(`fresh_sync_100k_chromium_${b}_ms_vs_yjs_chromium`, `a fresh Chromium page store (${b}) receiving 100k fields: open -> whenSynced; ` +
    `Yjs: a fresh page Y.Doc (${b === "indexeddb" ? "with y-indexeddb, until committed" : "no persistence"}) until all 10,000 rows are visible`,
    "lower", num(br("initial_sync_browser_" + b)?.join_sync_ms), theirs, null,
    { text: "at most half of Yjs's time", of: theirs, test: (m, p) => m <= p / 2 });
}
process.exit(0);
