// One sitting: the peers (Yjs, TinyBase; then Yjs in Chromium, yjs-browser.mjs), then crdtdb (Node, then Chromium), one after
// the other, never at the same time, and crdtdb's figures as ratios to the peers'.
//   node js/bench/run.mjs [--rounds=N] [--no-peers] [--no-browser] [--no-build]
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
    sh(esb, [join(jsDir, "src", "index.ts"), "--log-level=warning", "--banner:js=//# allFunctionsCalledOnLoad", "--bundle", "--format=esm", "--platform=browser",
      "--target=es2022", "--sourcemap", `--outfile=${join(dist, "crdtdb.browser.js")}`]);
  else console.error("no esbuild in js/node_modules: the browser bench uses js/dist/crdtdb.browser.js");
}
log({ sitting: new Date().toISOString(), client: process.env.CRDTDB_JS_DIST ?? "js/src (compiled to js/bench/.dist)", load_avg: sh("cat", ["/proc/loadavg"]).trim(), git: sh("git", ["-C", repoRoot, "rev-parse", "--short", "HEAD"]).trim(),
  dirty_js_src: sh("git", ["-C", repoRoot, "status", "--porcelain", "js/src"]).trim().split("\n").filter(Boolean).length });

// ---- the peers, then ours; --rounds=N: N such sittings in turn, each figure the median of its rounds (machines swing
// 1.5-3x: a single round's verdict on a close figure is a coin flip), with each round's ratio printed beside it
const rounds = Math.max(1, +(args.find((a) => a.startsWith("--rounds="))?.slice(9) ?? 1));
async function round() {
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
  return { peer, yjsChromium, ours };
}
const sittings = [];
for (let k = 0; k < rounds; k++) {
  if (rounds > 1) log({ round: k + 1, of: rounds, load_avg: sh("cat", ["/proc/loadavg"]).trim() });
  sittings.push(await round());
}

// ---- ratios. lower: smaller is better (times); higher: bigger is better (rates).  Each value is a function of one
// round's results; a figure is the median of its rounds' values, each system's apart, and the ratio of the medians.
const num = (v) => (v === undefined || v === null || v === "" ? null : +v);
const median = (xs) => {
  const v = xs.filter((x) => x !== null).sort((a, b) => a - b);
  return v.length ? (v.length % 2 ? v[(v.length - 1) / 2] : (v[v.length / 2 - 1] + v[v.length / 2]) / 2) : null;
};
function figure(name, what, dir, mine, yjs, tinybase, goal) {
  const at = (f) => sittings.map((R) => (f ? f(R) : null));
  const m = median(at(mine)), yv = median(at(yjs)), tv = median(at(tinybase));
  const ratio = (a, p) => (a === null || p === null || !p ? null : +(a / p).toFixed(3));
  const better = (p) => (m === null || p === null ? null : dir === "lower" ? m < p : m > p);
  const o = { figure: name, what, better_is: dir, crdtdb: m, yjs: yv, tinybase: tv,
    ratio_vs_yjs: ratio(m, yv), ratio_vs_tinybase: ratio(m, tv), better_than_yjs: better(yv), better_than_tinybase: better(tv) };
  if (rounds > 1) {
    const ys = at(yjs), mine_ = at(mine);
    o.rounds = { crdtdb: mine_, yjs: ys, tinybase: at(tinybase), ratio_vs_yjs: mine_.map((v, i) => ratio(v, ys[i])) };
  }
  if (goal) {
    const of = median(at(goal.of));
    o.goal = goal.text, o.goal_met = m === null || of === null ? null : goal.test(m, of);
  }
  log(o);
}
const Y = (R) => R.peer.yjs, TB = (R) => R.peer.tinybase, O = (R) => R.ours, YC = (R, k) => R.yjsChromium[k];
const half = { text: "at most half of Yjs's time", of: (R) => num(Y(R)?.initial_sync?.join_sync_ms), test: (m, p) => m <= p / 2 };
figure("fresh_sync_100k_node_ms", "a fresh Node client receiving 100k fields: connect -> whenSynced (peers: until all 10,000 rows are visible)",
  "lower", (R) => num(O(R).initial_sync?.join_sync_ms), (R) => num(Y(R)?.initial_sync?.join_sync_ms),
  (R) => num(TB(R).initial_sync?.join_sync_ms), half);
figure("fanout_p50_ms", "16 clients, 1000 writes/s for 3 s: write -> listener on each of the other 15, median", "lower",
  (R) => num(O(R).fanout_latency?.p50_ms), (R) => num(Y(R)?.fanout_latency?.p50_ms), (R) => num(TB(R).fanout_latency?.p50_ms));
figure("fanout_p99_ms", "the same, 99th percentile", "lower", (R) => num(O(R).fanout_latency?.p99_ms),
  (R) => num(Y(R)?.fanout_latency?.p99_ms), (R) => num(TB(R).fanout_latency?.p99_ms));
figure("fanout_delivered", "deliveries of the 45,000 expected in the latency test", "higher",
  (R) => num(O(R).fanout_latency?.delivered), (R) => num(Y(R)?.fanout_latency?.delivered), (R) => num(TB(R).fanout_latency?.delivered));
figure("fanout_field_deliveries_per_s", "20,000 single-field writes as fast as possible, x15 receivers / seconds until all have the marker",
  "higher", (R) => num(O(R).fanout_throughput?.field_deliveries_per_s), (R) => num(Y(R)?.fanout_throughput?.field_deliveries_per_s),
  (R) => num(TB(R).fanout_throughput?.field_deliveries_per_s));
const perS = (ms, n) => (ms ? Math.round(n / ms * 1000) : null);
figure("local_writes_per_s_chromium_indexeddb", "crdtdb: 20,000 single-field writes into IndexedDB in Chromium, until all committed; " +
  "Yjs: its writer loop of 20,000 single-field transactions on an in-memory Y.Doc in Node (fanout_throughput.local_write_ms, " +
  "sharing the process with 15 receivers); TinyBase reports no such figure", "higher",
  (R) => num(O(R).local_writes_indexeddb?.writes_per_s), (R) => perS(Y(R)?.fanout_throughput?.local_write_ms, 20000), null);
figure("local_fill_fields_per_s_chromium_indexeddb", "crdtdb: 10,000 records x 10 fields in one addAll into IndexedDB in Chromium; " +
  "peers: the same 100k fields in one transaction on their in-memory store in Node (initial_sync.local_fill_ms)", "higher",
  (R) => num(O(R).local_writes_indexeddb?.fill_fields_per_s), (R) => perS(Y(R)?.initial_sync?.local_fill_ms, 1e5),
  (R) => perS(TB(R).initial_sync?.local_fill_ms, 1e5));
figure("local_fill_fields_per_s_node_memory", "crdtdb: the writer's 100k-field addAll in Node (memory, sync attached); peers: as above", "higher",
  (R) => perS(O(R).initial_sync?.local_fill_ms, 1e5), (R) => perS(Y(R)?.initial_sync?.local_fill_ms, 1e5),
  (R) => perS(TB(R).initial_sync?.local_fill_ms, 1e5));
for (const b of ["indexeddb", "memory"])
  figure(`fresh_sync_100k_chromium_${b}_ms`, `a fresh Chromium page store (${b}) receiving 100k fields: open -> whenSynced; peers: their Node fresh client`,
    "lower", (R) => num(O(R)["initial_sync_browser_" + b]?.join_sync_ms), (R) => num(Y(R)?.initial_sync?.join_sync_ms),
    (R) => num(TB(R).initial_sync?.join_sync_ms), half);
// the same Chromium figures against Yjs in Chromium (yjs 13 + y-websocket + y-indexeddb, yjs-browser.mjs): same
// runtime, same backend; Yjs's IndexedDB times are until IndexedDB committed what it wrote (its calls return before)
figure("local_writes_per_s_chromium_indexeddb_vs_yjs_chromium", "20,000 single-field writes into IndexedDB in Chromium, " +
  "until all committed; Yjs: 20,000 single-field transactions on a Y.Doc with y-indexeddb, until IndexedDB committed them", "higher",
  (R) => num(O(R).local_writes_indexeddb?.writes_per_s), (R) => num(YC(R, "local_writes_indexeddb")?.stored_writes_per_s), null);
figure("local_fill_fields_per_s_chromium_indexeddb_vs_yjs_chromium", "10,000 records x 10 fields in one addAll into IndexedDB in " +
  "Chromium; Yjs: the same in one transaction with y-indexeddb, until committed", "higher",
  (R) => num(O(R).local_writes_indexeddb?.fill_fields_per_s), (R) => num(YC(R, "local_writes_indexeddb")?.fill_stored_fields_per_s), null);
figure("local_fill_fields_per_s_chromium_memory_vs_yjs_chromium", "the same addAll into memory in Chromium; Yjs: its transaction, no persistence",
  "higher", (R) => num(O(R).local_writes_memory?.fill_fields_per_s), (R) => num(YC(R, "local_writes_memory")?.fill_fields_per_s), null);
for (const b of ["indexeddb", "memory"]) {
  const theirs = (R) => num(YC(R, "initial_sync_browser_" + b)?.[b === "indexeddb" ? "join_stored_ms" : "join_sync_ms"]);
  figure(`fresh_sync_100k_chromium_${b}_ms_vs_yjs_chromium`, `a fresh Chromium page store (${b}) receiving 100k fields: open -> whenSynced; ` +
    `Yjs: a fresh page Y.Doc (${b === "indexeddb" ? "with y-indexeddb, until committed" : "no persistence"}) until all 10,000 rows are visible`,
    "lower", (R) => num(O(R)["initial_sync_browser_" + b]?.join_sync_ms), theirs, null,
    { text: "at most half of Yjs's time", of: theirs, test: (m, p) => m <= p / 2 });
}
process.exit(0);
