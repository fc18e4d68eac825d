// The C benchmarks against their peers, in one sitting: runs the peers of ../shared/peers (cr-sqlite, Yjs,
// the raw limits), then bench_store (durable and NOSYNC), bench_merge and bench_fanout, one after the other
// (never at the same time: 2 cores), and prints each figure with its peer's from the same sitting and the ratio.
// Only same-sitting ratios mean anything: this machine's load swings absolute figures 1.5–3×.
//   node benchmarks/run.mjs [--build=DIR] [--no-peers] [--only=store,merge,fanout,presence,churn]
// DIR (default /tmp/crdtdb-bench-rel) is configured Release and built if it holds no bench_store.
// The goals are issue #13's; presence's (bench_presence.mjs: crdtdb serve against Yjs awareness, which it runs
// itself; not in the default --only) are issue #14's, with the server $CRDTDB_BIN, else DIR's crdtdb.
// churn (bench_churn: 1M adds, updates and removes, disk and RSS before and after tombstone collection, against
// peers-churn/churn.mjs doing the same operations on a Yjs Y.Map; not in the default --only) is issue #16's.
// Exit 0 whatever they say (benchmarks report; tests assert).
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const peers = resolve(root, "..", "shared", "peers");
const args = process.argv.slice(2);
const opt = (k, d) => { const a = args.find((x) => x.startsWith(`--${k}=`)); return a ? a.slice(k.length + 3) : d; };
const build = resolve(opt("build", "/tmp/crdtdb-bench-rel"));
const only = new Set(opt("only", "store,merge,fanout").split(","));
const withPeers = !args.includes("--no-peers");
const cBenches = only.has("store") || only.has("merge") || only.has("fanout");

function sh(cmd, argv, opts = {}) {
  const r = spawnSync(cmd, argv, { encoding: "utf8", maxBuffer: 64 << 20, ...opts });
  if (r.status !== 0) throw new Error(`${cmd} ${argv.join(" ")} failed (${r.status}):\n${r.stderr}\n${r.stdout}`);
  return r.stdout;
}
/** The last line of stdout that parses as a JSON object. */
function lastJson(out) {
  for (const line of out.trim().split("\n").reverse()) {
    try { const o = JSON.parse(line); if (o && typeof o === "object") return o; } catch { /* not JSON */ }
  }
  throw new Error("no JSON in:\n" + out.slice(-2000));
}
const log = (s) => process.stderr.write(s + "\n");

if (cBenches && !existsSync(join(build, "bench_store"))) {
  log(`== building Release into ${build}`);
  sh("cmake", ["-S", root, "-B", build, "-DCMAKE_BUILD_TYPE=Release"]);
  sh("cmake", ["--build", build, "-j2", "--target", "bench_store", "bench_merge", "bench_fanout"]);
}

if (only.has("churn") && !existsSync(join(build, "bench_churn"))) {
  log(`== building bench_churn (Release) into ${build}`);
  sh("cmake", ["-S", root, "-B", build, "-DCMAKE_BUILD_TYPE=Release"]);
  sh("cmake", ["--build", build, "-j2", "--target", "bench_churn"]);
}

const peer = {};
if (withPeers) {
  if (only.has("store") || only.has("merge")) {
    log("== peer: cr-sqlite");
    peer.crsqlite = lastJson(sh("bash", [join(peers, "crsqlite", "run.sh")], { cwd: root }));
  }
  if (only.has("fanout")) {
    log("== peer: Yjs");
    peer.yjs = lastJson(sh("bash", [join(peers, "yjs", "run.sh")], { cwd: root }));
  }
  if (only.has("churn")) {
    log("== peer: Yjs churn (peers-churn/churn.mjs)");
    peer.yjsChurn = lastJson(sh("node", ["--expose-gc", join(root, "benchmarks", "peers-churn", "churn.mjs")], { cwd: root }));
  }
  if (cBenches) {
    log("== peer: raw limits (LMDB, ed25519)");
    const out = sh("bash", [join(peers, "limits", "run.sh")], { cwd: root });
    const num = (re) => { const m = re.exec(out); return m ? Number(m[1]) : null; };
    peer.limits = {
      verify_per_s: num(/verify (\d+)\/s/), lmdb_put_durable_per_s: num(/lmdb random put, 1000\/txn, fsync per commit: (\d+)/),
    };
  }
}

const ours = {};
const bench = (name, argv) => { log(`== ${name} ${argv.join(" ")}`); return lastJson(sh(join(build, name), [...argv, "--json"])); };
if (only.has("store")) {
  ours.store = bench("bench_store", []);
  ours.storeNosync = bench("bench_store", ["--nosync"]);
}
if (only.has("merge")) ours.merge = bench("bench_merge", []);
if (only.has("fanout")) ours.fanout = bench("bench_fanout", []);
if (only.has("churn")) ours.churn = bench("bench_churn", []);
if (only.has("presence")) {
  // the server binary: $CRDTDB_BIN, else DIR's crdtdb (built if missing); Yjs awareness runs in the same script
  let bin = process.env.CRDTDB_BIN;
  if (!bin) {
    bin = join(build, "crdtdb");
    if (!existsSync(bin)) {
      log(`== building crdtdb (Release) into ${build}`);
      sh("cmake", ["-S", root, "-B", build, "-DCMAKE_BUILD_TYPE=Release"]);
      sh("cmake", ["--build", build, "-j2", "--target", "crdtdb_cli"]);
    }
  }
  log(`== bench_presence.mjs (${bin})`);
  const out = sh("node", [join(root, "benchmarks", "bench_presence.mjs"), ...(withPeers ? [] : ["--systems=crdtdb"])],
    { cwd: root, env: { ...process.env, CRDTDB_BIN: bin }, stdio: ["ignore", "pipe", "inherit"] });
  const lines = out.trim().split("\n").map((l) => { try { return JSON.parse(l); } catch { return null; } }).filter(Boolean);
  ours.presence = lines.find((o) => o.system === "crdtdb");
  if (withPeers) peer.yjsAwareness = lines.find((o) => o.system === "yjs");
}

// one row per figure: what, ours, the peer's (same sitting), ratio, goal
const rows = [];
const row = (what, v, ref, refName, goal, higherBetter = true) => {
  if (v == null) return;
  const ratio = ref ? v / ref : null;
  const ok = goal == null || ratio == null ? "" : (higherBetter ? ratio >= goal : ratio <= goal) ? "✔" : "✘";
  rows.push({ what, crdtdb: v, peer: ref ?? "", vs: refName, ratio: ratio == null ? "" : ratio.toFixed(2), goal: goal == null ? "" : (higherBetter ? "≥ " : "≤ ") + goal, ok });
};
const cs = peer.crsqlite;
if (ours.store) {
  const s = ours.store, n = ours.storeNosync;
  row("inserts/s, NOSYNC", n.insert_per_s, n.raw_insert_per_s, "raw LMDB puts (same run)", 0.8);
  row("inserts/s, NOSYNC", n.insert_per_s, cs?.local_write.changes_per_s, "cr-sqlite local writes", 5);
  row("inserts/s, durable", s.insert_per_s, cs?.local_write.changes_per_s, "cr-sqlite local writes (synchronous=NORMAL)", 3);
  row("updates/s, durable", s.write_ops_per_s, s.raw_put_per_s, "raw LMDB puts (same run)", 0.4);
  row("reads/s", s.read_ops_per_s, s.raw_get_per_s, "raw LMDB gets (same run)", 0.5);
}
if (ours.merge) {
  const m = ours.merge;
  row("merge fields/s (verify, apply)", m.apply_fields_per_s, m.raw_put_per_s, "raw LMDB puts (same run)", 0.7);
  row("merge fields/s (verify, apply)", m.apply_fields_per_s, cs?.merge_apply.changes_per_s, "cr-sqlite merge", null);
  row("bytes per field change", m.bytes_per_change, 12, "goal (Automerge reaches 8)", 1, false);
  row("bytes per field change", m.bytes_per_change, cs?.extract.approx_bytes_per_change, "cr-sqlite change row", null, false);
}
if (ours.fanout) {
  const f = ours.fanout, y = peer.yjs;
  row("fan-out p99 ms, 15 receivers", f.latency_p99_ms, y?.fanout_latency.p99_ms, "Yjs p99", 0.25, false);
  row("fan-out p50 ms", f.latency_p50_ms, y?.fanout_latency.p50_ms, "Yjs p50", null, false);
  row("field deliveries/s", f.deliveries_per_s, y?.fanout_throughput?.field_deliveries_per_s, "Yjs", null);
  row("fresh replica, 100k fields, ms", f.sync_best_ms, y?.initial_sync.join_sync_ms, "Yjs fresh client", null, false);
  row("fresh replica, 100k fields, ms", f.sync_best_ms, 50, "goal 50 ms", 1, false);
}
if (ours.presence) {
  const p = ours.presence, y = peer.yjsAwareness;
  row("presence p99 ms, 16 × 30 Hz", p.latency_p99_ms, y?.latency_p99_ms, "Yjs awareness p99", 0.25, false);
  row("presence p50 ms", p.latency_p50_ms, y?.latency_p50_ms, "Yjs awareness p50", null, false);
  row("presence server CPU s/player-min", p.server_cpu_s_per_player_min, y?.server_cpu_s_per_player_min, "Yjs awareness (y-websocket server)", 0.25, false);
  row("presence WS payload bytes/update", p.bytes_per_update, y?.bytes_per_update, "Yjs awareness", null, false);
  row("presence server peak RSS KiB", p.server_peak_rss_kb, y?.server_peak_rss_kb, "Yjs awareness (Node)", null, false);
  row("presence frames in 5 s idle", p.idle_frames, y?.idle_frames, "Yjs awareness (goal: 0)", null, false);
}
if (ours.churn) {
  const c = ours.churn, y = peer.yjsChurn;
  if (y && (y.checksum !== c.checksum || y.live_msgpack_bytes !== c.live_msgpack_bytes))
    throw new Error(`churn: Yjs ran other operations (checksum ${y.checksum}, live ${y.live_msgpack_bytes} B) than crdtdb (${c.checksum}, ${c.live_msgpack_bytes} B)`);
  const dc = c.copy_after_collect.disk_bytes, db = c.copy_before_collect.disk_bytes;
  row("churn disk: collected+compact, B", dc, c.live_msgpack_bytes, "live data's raw msgpack", 2, false);
  row("churn disk: collected+compact, B", dc, y?.churned.update_bytes, "Yjs encodeStateAsUpdate (no collection)", null, false);
  row("churn disk: compacted only, B", db, y?.churned.update_bytes, "Yjs encodeStateAsUpdate", null, false);
  row("churn disk: live, collected, B", c.copy_fresh.disk_bytes, y?.fresh_update_bytes, "Yjs, live data in a new doc", null, false);
  row("churn RSS growth, KiB", c.collected.rss_kb - c.start.rss_kb, y && y.churned.rss_kb - y.start.rss_kb, "Yjs (after gc)", null, false);
  row("churn ops/s", c.ops / c.churn_s, y && y.ops / y.churn_s, "Yjs, same batches", null);
  row("churn collect, s", c.collect_s, null, "(Yjs: none)", null, false);
}
console.log(JSON.stringify({ peers: peer, crdtdb: ours }));
console.log("");
const w = (s, n) => String(s).padEnd(n);
console.log(w("figure", 34) + w("crdtdb", 12) + w("peer", 12) + w("ratio", 8) + w("goal", 8) + "   vs");
for (const r of rows)
  console.log(w(r.what, 34) + w(Math.round(r.crdtdb * 100) / 100, 12) + w(r.peer === "" ? "" : Math.round(r.peer * 100) / 100, 12) +
    w(r.ratio, 8) + w(r.goal, 8) + w(r.ok, 3) + r.vs);
