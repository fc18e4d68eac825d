// Presence (issue #14): crdtdb's presence against Yjs awareness (y-protocols, the stock y-websocket server), in one
// sitting, the same players' code for both.
//   node benchmarks/bench_presence.mjs [--systems=yjs,crdtdb] [--players=16] [--hz=30] [--secs=30] [--idle=5]
//        [--idle-long=0] [--procs=1] [--rounds=1] [--jitter=MS] [--stall=MS] [--yjs-local-only] [--serve-args="..."] [--keep]
// crdtdb's server is `crdtdb serve` ($CRDTDB_BIN, else /tmp/bp-build/crdtdb, else build/crdtdb) on 127.0.0.1 with a
// fresh environment; Yjs's is ../shared/peers/yjs/server.mjs (setupWSConnection of @y/websocket-server, in memory),
// run from $TMPDIR/yjs-anchor, installed there as ../shared/peers/yjs/run.sh does if missing.
//
// Workload: `players` players each set a position {x, y, t} at `hz` for `secs` s (after 5 s of warm-up), all
// connected to one server on loopback; players are in `procs` Node processes (benchmarks/presence/player.mjs; by
// default 1: all of them in one, as the other benches). t is the send stamp (performance.timeOrigin + now()).
// --jitter=MS sends each tick up to MS ms late (uniform; the slots stay 1/hz apart), as a game loop or network would.
// --stall=MS holds every player's upstream (socket.cork) for MS ms halfway through, then lets it go at once, as a
// network hiccup would; latency_p50_after_stall_ms is over the updates sent from 1 s after it to the end.
//   crdtdb: a raw-protocol player (docs/protocol.md): hello, since 0, then [12, bin(msgpack {x, y, t})] per update;
//           receives [13, key, user, replica, version, state].
//   Yjs:    WebsocketProvider per player; awareness.setLocalStateField('pos', {x, y, t}); receives 'change'.
// Figures, per system (one JSON line each, then one of ratios crdtdb/Yjs):
//   latency_*       for every update sent in the window and every other player: the time from its send to the
//                   arrival at that player of it or of a later state of the same sender (coalescing replaces states:
//                   the wait counts). delivered_latency_*: arrival minus the stamp of what arrived, per arrival.
//   delivered/expected  arrivals of states sent in the window / updates sent × (players - 1).
//   server_cpu_s    utime + stime of the server process (/proc/PID/stat) from T0 to the end of the window + 1 s
//                   drain; server_cpu_s_per_player_min = that / (players × secs / 60).
//   bytes_per_update    WebSocket message payloads (the data of each message: what the application hands to / gets
//                   from `ws`) sent + received by all players from T0 to end + drain, / updates sent.  ws_bytes_per
//                   update adds each message's WebSocket frame header (2 bytes, +2 over 125 bytes, +4 mask when a
//                   client sends); TCP/IP is not counted. Yjs's figure includes the copy of each update its server
//                   sends back to its author and what each provider forwards back to the server (below).
//   server_rss_kb / server_peak_rss_kb  VmRSS / VmHWM of the server at the end of the window.
//   idle_frames     WebSocket data messages received by all players in the `idle` s after the drain, no update
//                   sent (pings, control frames, are counted apart). idle_long_frames: over `idle-long` s (use 35
//                   to see Yjs's 15 s awareness renewal).
// Stock y-websocket 3 providers forward every awareness update they apply, remote ones included, back to the server
// (which drops them as not newer): --yjs-local-only is a variant (not stock) that forwards only the player's own.
// Exit 0 whatever the figures say (benchmarks report; tests assert).
//
// Sittings so far, and where crdtdb's tail was found: sittings/presence.md.
import { spawn, spawnSync } from "node:child_process";
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { performance } from "node:perf_hooks";

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, "..");
const args = process.argv.slice(2);
const opt = (k, d) => { const a = args.find((x) => x.startsWith(`--${k}=`)); return a ? a.slice(k.length + 3) : d; };
const cfg = {
  players: +opt("players", 16), hz: +opt("hz", 30), secs: +opt("secs", 30), idle: +opt("idle", 5),
  idleLong: +opt("idle-long", 0), procs: +opt("procs", 1), jitterMs: +opt("jitter", 0), stallMs: +opt("stall", 0), warmMs: 5000, drainMs: 1000,
};
const systems = opt("systems", "yjs,crdtdb").split(",");
const rounds = +opt("rounds", 1);
const yjsLocalOnly = args.includes("--yjs-local-only");
const keep = args.includes("--keep"); // keep the players' raw results (send stamps, arrivals) for a closer look
const serveArgs = opt("serve-args", "").split(" ").filter(Boolean);
// Node flags of the players' processes (both systems), e.g. "--max-semi-space-size=64"
const playerNodeArgs = opt("player-node-args", "").split(" ").filter(Boolean);
const log = (s) => process.stderr.write(s + "\n");
const clock = () => performance.timeOrigin + performance.now();
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const sleepUntil = (t) => sleep(Math.max(0, t - clock()));

function freePort() {
  return new Promise((res, rej) => {
    const s = createServer();
    s.listen(0, "127.0.0.1", () => { const p = s.address().port; s.close(() => res(p)); });
    s.on("error", rej);
  });
}
function procStat(pid) {
  const f = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1].split(" ");
  return { user: +f[11] / 100, sys: +f[12] / 100 }; // utime, stime: clock ticks of 10 ms -> s
}
function procRss(pid) {
  const s = readFileSync(`/proc/${pid}/status`, "utf8");
  const g = (k) => +s.match(new RegExp(k + ":\\s+(\\d+)"))[1];
  return { server_rss_kb: g("VmRSS"), server_peak_rss_kb: g("VmHWM") };
}
/** Spawns and waits for `ready` on stdout/stderr (or a TCP listen). */
async function startProc(cmd, argv, opts, isReady) {
  const proc = spawn(cmd, argv, { stdio: ["ignore", "pipe", "pipe"], ...opts });
  let out = "";
  proc.stdout.on("data", (d) => { out += d; if (out.length > 1e6) out = out.slice(-1e5); });
  proc.stderr.on("data", (d) => { out += d; if (out.length > 1e6) out = out.slice(-1e5); });
  const deadline = Date.now() + 15000;
  while (!(await isReady(out))) {
    if (proc.exitCode !== null) throw new Error(`${cmd} exited: ${out}`);
    if (Date.now() > deadline) { proc.kill("SIGKILL"); throw new Error(`${cmd} not ready: ${out}`); }
    await sleep(30);
  }
  return {
    proc, pid: proc.pid, log: () => out,
    stop: () => new Promise((res) => {
      if (proc.exitCode !== null) return res();
      proc.on("exit", res);
      proc.kill("SIGTERM");
      setTimeout(() => proc.kill("SIGKILL"), 5000).unref();
    }),
  };
}
const listening = (port) => async () => new Promise((res) => {
  import("node:net").then(({ connect }) => {
    const s = connect(port, "127.0.0.1");
    s.on("connect", () => { s.destroy(); res(true); });
    s.on("error", () => res(false));
  });
});

function crdtdbBin() {
  for (const b of [process.env.CRDTDB_BIN, "/tmp/bp-build/crdtdb", join(root, "build", "crdtdb")])
    if (b && existsSync(b)) return b;
  throw new Error("no crdtdb binary: set CRDTDB_BIN (a Release build of a tree with presence)");
}
async function startCrdtdb() {
  const bin = crdtdbBin();
  const dir = mkdtempSync(join(tmpdir(), "crdtdb-bench-presence-"));
  const r = spawnSync(bin, ["-d", dir, "init"], { encoding: "utf8" });
  if (r.status !== 0) throw new Error(`crdtdb init: ${r.stderr}`);
  const port = await freePort();
  const s = await startProc(bin, ["-d", dir, "serve", "--listen", `127.0.0.1:${port}`, "--collections", "c", ...serveArgs],
    {}, listening(port));
  const stop = s.stop;
  return { ...s, url: `ws://127.0.0.1:${port}`, bin, stop: async () => { await stop(); rmSync(dir, { recursive: true, force: true }); } };
}
function yjsAnchor() {
  const w = join(process.env.TMPDIR || "/tmp", "yjs-anchor");
  const peer = resolve(root, "..", "shared", "peers", "yjs");
  mkdirSync(w, { recursive: true });
  if (!existsSync(join(w, "node_modules", "@y", "websocket-server"))) {
    log(`== installing yjs@13 y-websocket@3 @y/websocket-server@0.1.1 ws@8 into ${w}`);
    if (!existsSync(join(w, "package.json"))) spawnSync("npm", ["init", "-y"], { cwd: w });
    const r = spawnSync("npm", ["install", "yjs@13", "y-websocket@3", "@y/websocket-server@0.1.1", "ws@8"], { cwd: w, encoding: "utf8" });
    if (r.status !== 0) throw new Error(`npm install: ${r.stderr}`);
  }
  copyFileSync(join(peer, "server.mjs"), join(w, "server.mjs"));
  copyFileSync(join(here, "peers-presence", "yjs-shim.mjs"), join(w, "presence-yjs-shim.mjs"));
  const ver = (p) => JSON.parse(readFileSync(join(w, "node_modules", p, "package.json"), "utf8")).version;
  return { dir: w, shim: join(w, "presence-yjs-shim.mjs"),
    versions: { yjs: ver("yjs"), "y-websocket": ver("y-websocket"), "y-protocols": ver("y-protocols"), "@y/websocket-server": ver("@y/websocket-server") } };
}
async function startYjs(anchor) {
  const port = await freePort();
  const s = await startProc(process.execPath, ["server.mjs", String(port)], { cwd: anchor.dir }, async (o) => o.includes("ready"));
  return { ...s, url: `ws://127.0.0.1:${port}` };
}

function quant(a) {
  a.sort((x, y) => x - y);
  const q = (p) => (a.length ? +a[Math.min(a.length - 1, Math.floor(p * a.length))].toFixed(2) : null);
  return { p50: q(0.5), p90: q(0.9), p99: q(0.99), max: a.length ? +a[a.length - 1].toFixed(2) : null };
}

async function runOne(system, anchor) {
  const srv = system === "yjs" ? await startYjs(anchor) : await startCrdtdb();
  const work = mkdtempSync(join(tmpdir(), "bench-presence-"));
  try {
    const db = "presence" + Date.now();
    const per = Math.ceil(cfg.players / cfg.procs);
    const kids = [];
    for (let p = 0; p < cfg.procs; p++) {
      const from = p * per, to = Math.min(cfg.players, from + per);
      if (from >= to) break;
      const c = { system, url: srv.url, db, from, to, total: cfg.players, hz: cfg.hz, secs: cfg.secs, warmMs: cfg.warmMs,
        drainMs: cfg.drainMs, jitterMs: cfg.jitterMs, stallMs: cfg.stallMs, idleMs: Math.max(cfg.idle, cfg.idleLong) * 1000, out: join(work, `p${p}.json`),
        yjsShim: anchor?.shim, yjsLocalOnly };
      const proc = spawn(process.execPath, [...playerNodeArgs, join(here, "presence", "player.mjs"), JSON.stringify(c)], { stdio: ["pipe", "pipe", "pipe"] });
      let out = "", err = "";
      proc.stdout.on("data", (d) => { out += d; });
      proc.stderr.on("data", (d) => { err += d; });
      const until = (word, ms) => new Promise((res, rej) => {
        const t = setInterval(() => {
          if (out.includes(word)) { clearInterval(t); res(); }
          else if (proc.exitCode !== null || Date.now() > deadline) { clearInterval(t); rej(new Error(`player ${p} (${word}): exit ${proc.exitCode}\n${err}`)); }
        }, 10);
        const deadline = Date.now() + ms;
      });
      kids.push({ proc, c, until, err: () => err });
    }
    for (const k of kids) await k.until("ready", 60000);
    const T0 = clock() + cfg.warmMs + 300;
    for (const k of kids) k.proc.stdin.write(`go ${T0}\n`);
    await sleepUntil(T0);
    const cpu0 = procStat(srv.pid);
    const TEND = T0 + cfg.secs * 1000, TIDLE = TEND + cfg.drainMs;
    await sleepUntil(TIDLE);
    const cpu1 = procStat(srv.pid);
    const rss = procRss(srv.pid);
    for (const k of kids) await k.until("done", 120000);
    const res = kids.map((k) => JSON.parse(readFileSync(k.c.out, "utf8")));
    return analyse(system, res, { cpu: cpu1.user + cpu1.sys - cpu0.user - cpu0.sys, sys: cpu1.sys - cpu0.sys, rss, T0, TEND });
  } finally {
    await srv.stop();
    if (keep) log(`== ${system}: the players' raw results are in ${work}`);
    else rmSync(work, { recursive: true, force: true });
  }
}

function analyse(system, res, { cpu, sys, rss, T0, TEND }) {
  const ids = Object.assign({}, ...res.map((r) => r.ids));
  const keyOf = [];
  for (const [k, i] of Object.entries(ids)) keyOf[i] = k;
  const sends = Object.assign({}, ...res.map((r) => r.sends));
  const arrivals = Object.assign({}, ...res.map((r) => r.arrivals));
  const tAfter = T0 + cfg.secs * 500 + cfg.stallMs + 1000, after = [];
  const lat = [], dlat = [], bySender = Array.from({ length: cfg.players }, () => []);
  let sent = 0, delivered = 0, missing = 0;
  for (let s = 0; s < cfg.players; s++) sent += sends[s].length;
  for (let r = 0; r < cfg.players; r++) {
    for (let s = 0; s < cfg.players; s++) {
      if (s === r) continue;
      const S = sends[s], A = arrivals[r][keyOf[s]] ?? [];
      for (let j = 0; j < A.length; j += 2)
        if (A[j] >= T0 && A[j] < TEND) { delivered++; dlat.push(A[j + 1] - A[j]); }
      let j = 0;
      for (const u of S) {
        while (j < A.length && A[j] < u) j += 2;
        if (j >= A.length) { missing++; continue; }
        lat.push(A[j + 1] - u);
        bySender[s].push(A[j + 1] - u);
        if (u >= tAfter) after.push(A[j + 1] - u);
      }
    }
  }
  const sum = (f) => res.reduce((a, r) => a + f(r), 0);
  const w = (k) => sum((r) => r.stats.win[k]), id = (k) => sum((r) => r.stats.idle[k]);
  const L = quant(lat), D = quant(dlat);
  const idleAt = res.flatMap((r) => r.stats.idle.recvAt);
  const playerMin = cfg.players * cfg.secs / 60;
  return {
    bench: "presence", system, players: cfg.players, hz: cfg.hz, secs: cfg.secs, jitter_ms: cfg.jitterMs, player_procs: res.length,
    ...(system === "yjs" ? { yjs_forward: yjsLocalOnly ? "own changes only (variant, not stock)" : "stock" } : {}),
    updates_sent: sent, send_rate_per_player: +(sent / cfg.players / cfg.secs).toFixed(2), ticks_skipped: sum((r) => r.skipped),
    expected: sent * (cfg.players - 1), delivered, missing,
    latency_p50_ms: L.p50, latency_p90_ms: L.p90, latency_p99_ms: L.p99, latency_max_ms: L.max,
    delivered_latency_p50_ms: D.p50, delivered_latency_p99_ms: D.p99,
    // a server that holds one sender's updates back (a rate limit's timer) shows as senders whose p50 is far above the rest
    sender_p50_ms: bySender.map((a) => quant(a).p50),
    ...(cfg.stallMs ? { stall_ms: cfg.stallMs, latency_p50_after_stall_ms: quant(after).p50, latency_p99_after_stall_ms: quant(after).p99 } : {}),
    server_cpu_s: +cpu.toFixed(2), server_sys_cpu_s: +sys.toFixed(2), server_cpu_s_per_player_min: +(cpu / playerMin).toFixed(4),
    bytes_per_update: +((w("sentBytes") + w("recvBytes")) / sent).toFixed(1),
    ws_bytes_per_update: +((w("sentBytes") + w("recvBytes") + w("sentHdr") + w("recvHdr")) / sent).toFixed(1),
    up_bytes_per_update: +(w("sentBytes") / sent).toFixed(1), down_bytes_per_update: +(w("recvBytes") / sent).toFixed(1),
    msgs_up_per_update: +(w("sentMsgs") / sent).toFixed(2), msgs_down_per_update: +(w("recvMsgs") / sent).toFixed(2),
    ...rss,
    idle_s: cfg.idle, idle_frames: idleAt.filter((t) => t < cfg.idle * 1000).length,
    ...(cfg.idleLong ? { idle_long_s: cfg.idleLong, idle_long_frames: idleAt.length, idle_long_bytes: id("recvBytes") + id("sentBytes") } : {}),
    idle_pings: id("pings"), window_pings: w("pings"),
    client_cpu_pct: +(100 * sum((r) => r.client_cpu_ms) / res[0].client_wall_ms / res.length).toFixed(1),
    client_event_loop_delay_p99_ms: Math.max(...res.map((r) => r.event_loop_delay_p99_ms)),
    client_gc_pauses: res.reduce((n, r) => n + r.gcs.length, 0),
    client_gc_ms: +res.reduce((n, r) => n + r.gcs.reduce((a, g) => a + g[1], 0), 0).toFixed(1),
    notices: sum((r) => r.notices), errors: sum((r) => r.errors), error_text: res.flatMap((r) => r.errorText).slice(0, 5),
  };
}

const anchor = systems.includes("yjs") ? yjsAnchor() : null;
const runs = { yjs: [], crdtdb: [] };
const load = () => readFileSync("/proc/loadavg", "utf8").split(" ").slice(0, 3).map(Number);
for (let round = 0; round < rounds; round++) {
  for (const system of systems) {
    log(`== ${system} (round ${round + 1}/${rounds}, load ${load().join(" ")})`);
    const r = await runOne(system, anchor);
    if (system === "yjs") r.versions = anchor.versions;
    else r.crdtdb_bin = crdtdbBin();
    r.load_before = load();
    console.log(JSON.stringify(r));
    runs[system].push(r);
  }
}
// ratios crdtdb / Yjs of the medians over rounds (same sitting)
const med = (a, k) => { const v = a.map((r) => r[k]).filter((x) => x != null).sort((x, y) => x - y); return v.length ? v[(v.length - 1) >> 1] : null; };
if (runs.yjs.length && runs.crdtdb.length) {
  const keys = ["latency_p50_ms", "latency_p99_ms", "delivered_latency_p99_ms", "server_cpu_s_per_player_min", "bytes_per_update",
    "ws_bytes_per_update", "server_peak_rss_kb", "idle_frames", ...(cfg.idleLong ? ["idle_long_frames"] : [])];
  const ratio = {}, both = {};
  for (const k of keys) {
    const a = med(runs.crdtdb, k), b = med(runs.yjs, k);
    both[k] = { crdtdb: a, yjs: b };
    ratio[k] = b ? +(a / b).toFixed(3) : null;
  }
  const goals = {
    latency_p99_ms: ratio.latency_p99_ms != null && ratio.latency_p99_ms <= 0.25,
    server_cpu_s_per_player_min: ratio.server_cpu_s_per_player_min != null && ratio.server_cpu_s_per_player_min <= 0.25,
    idle_frames_zero: med(runs.crdtdb, "idle_frames") === 0,
  };
  console.log(JSON.stringify({ bench: "presence_ratio", rounds, yjs_forward: yjsLocalOnly ? "own changes only" : "stock", both, crdtdb_over_yjs: ratio, goals_met: goals }));
}
process.exit(0);
