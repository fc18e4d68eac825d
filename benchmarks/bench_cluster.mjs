/*
 * bench_cluster: three `crdtdb serve --cluster` behind HAProxy
 * (examples/cluster/run.sh) against one `crdtdb serve` alone, same
 * machine, same sitting; clients of the JS client (js/dist).  Prints:
 *
 *   connections held  K idle clients (K/4 matches of 4), the servers' RSS
 *                     per connection, and the time to open them; then more,
 *                     100 at a time, until a batch is refused (every server
 *                     with its default --max-connections, 1024) or
 *                     BENCH_CONNS_MAX: the capacity, peer links included
 *   deliveries/s      M matches of 4 players, each player setting a field
 *                     every 50 ms: fields received by the other players;
 *                     at each load of BENCH_MATCHES, and the highest one
 *                     sustained (delivered >= 95% of offered, lag p99 <=
 *                     250 ms)
 *   failover          T times: kill -9 the server holding a match of 8
 *                     clients, time until every client holds a write made
 *                     after the kill (p50, p99)
 *
 * and the ratios cluster / alone.  Run through benchmarks/bench_cluster.
 * Sittings so far: sittings/cluster.md.
 *
 * Environment: CRDTDB_CLI, CRDTDB_SRC; BENCH_CONNS (default 1000),
 * BENCH_CONNS_MAX (4000), BENCH_MATCHES (3,10,20,40: the loads to measure
 * deliveries at), BENCH_SECS (10), BENCH_FAILOVERS (20).
 */
import { spawn, spawnSync } from "node:child_process";
import { closeSync, existsSync, mkdtempSync, openSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const SRC = process.env.CRDTDB_SRC;
const BIN = process.env.CRDTDB_CLI;
const { CrdtdbDataStore, nodeSocket } = await import(join(SRC, "js/dist/node.js"));
const CONNS = Number(process.env.BENCH_CONNS ?? 1000);
const CONNS_MAX = Number(process.env.BENCH_CONNS_MAX ?? 4000);
const MATCHES_LIST = (process.env.BENCH_MATCHES ?? "3,10,20,40").split(",").map(Number);
const SECS = Number(process.env.BENCH_SECS ?? 10);
const FAILOVERS = Number(process.env.BENCH_FAILOVERS ?? 20);
const COLLS = ["Players", "Moves"];
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function until(fn, what, ms = 120_000) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

function rssKiB(pid) {
  try {
    const m = /VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return m ? Number(m[1]) : 0;
  } catch { return 0; }
}

function open(url, dbId, onStatus) {
  return CrdtdbDataStore.open({
    dbId, collections: COLLS,
    sync: { url, socket: nodeSocket(), minBackoffMs: 20, maxBackoffMs: 200, onStatus },
  });
}

/* a free port below the ephemeral range (where outgoing connections take
 * theirs, so nothing else binds it meanwhile) */
async function freePort() {
  const net = await import("node:net");
  for (;;) {
    const p = 10000 + Math.floor(Math.random() * 22000);
    const ok = await new Promise((res) => {
      const srv = net.createServer().once("error", () => res(false)).listen(p, "127.0.0.1", () => srv.close(() => res(true)));
    });
    if (ok) return p;
  }
}

/* ------------------------------------------------------------ targets */

async function startCluster() {
  const dir = mkdtempSync(join(tmpdir(), "crdtdb-bench-cluster-"));
  const proc = spawn("bash", [join(SRC, "examples/cluster/run.sh"), dir], {
    // every bench client comes from 127.0.0.1: HAProxy's per-address limits
    // (haproxy.cfg) raised above what the bench opens
    detached: true, stdio: ["ignore", "ignore", "inherit"],
    env: { ...process.env, CRDTDB: BIN, CRDTDB_LB_SRC_CONNS: "1000000", CRDTDB_LB_SRC_RATE: "1000000" },
  });
  const exited = new Promise((r) => proc.on("exit", r));
  await until(() => existsSync(join(dir, "cluster.env")), "the cluster");
  const env = Object.fromEntries(readFileSync(join(dir, "cluster.env"), "utf8").trim().split("\n").map((l) => l.split("=")));
  const servers = [1, 2, 3].map((i) => ({
    name: `s${i}`, addr: env[`CRDTDB_S${i}`], url: `ws://${env[`CRDTDB_S${i}`]}`, pid: Number(env[`S${i}_PID`]),
    data: join(dir, `s${i}`),
  }));
  const extra = [];
  return {
    name: "3 servers + HAProxy", dir, servers, url: `ws://${env.CRDTDB_LB}`, extra,
    pids: () => [...servers.map((s) => s.pid), Number(env.HAPROXY_PID)],
    async stop() {
      for (const p of extra) try { p.kill("SIGKILL"); } catch { /* gone */ }
      try { process.kill(-proc.pid, "SIGTERM"); } catch { /* gone */ }
      await Promise.race([exited, sleep(15_000)]);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

async function startAlone() {
  const dir = mkdtempSync(join(tmpdir(), "crdtdb-bench-alone-"));
  const data = join(dir, "s");
  spawnSync(BIN, ["-d", data, "init"]);
  const port = await freePort();
  const p = spawn(BIN, ["-d", data, "serve", "--listen", `127.0.0.1:${port}`, "--collections", COLLS.join(","),
    "--max-per-ip", "unlimited"], { stdio: "ignore" }); // as run.sh runs each server
  await until(async () => { try { return (await fetch(`http://127.0.0.1:${port}/healthz`)).ok; } catch { return false; } }, "the server");
  return {
    name: "1 server", dir, url: `ws://127.0.0.1:${port}`, pids: () => [p.pid], metrics: `http://127.0.0.1:${port}/metrics`,
    async stop() { p.kill("SIGTERM"); await new Promise((r) => p.on("exit", r)); rmSync(dir, { recursive: true, force: true }); },
  };
}

/* ---------------------------------------------------------- measures */

async function connections(t) {
  const before = t.pids().reduce((n, p) => n + rssKiB(p), 0);
  const t0 = Date.now();
  const clients = [];
  for (let b = 0; b < CONNS; b += 100) {
    const batch = await Promise.all(Array.from({ length: Math.min(100, CONNS - b) }, (_, k) =>
      open(t.url, `conn-${Math.floor((b + k) / 4)}`)));
    await Promise.all(batch.map((c) => c.sync.whenSynced()));
    clients.push(...batch);
  }
  const ms = Date.now() - t0;
  await sleep(1000);
  const after = t.pids().reduce((n, p) => n + rssKiB(p), 0);
  const held = clients.filter((c) => c.sync.status.state === "synced").length;
  // capacity: on, until a batch is not all synced within 5 s
  let cap = held;
  for (let b = clients.length; cap === b && b < CONNS_MAX; b += 100) {
    const batch = await Promise.all(Array.from({ length: Math.min(100, CONNS_MAX - b) }, (_, k) =>
      open(t.url, `conn-${Math.floor((b + k) / 4)}`)));
    await Promise.race([Promise.all(batch.map((c) => c.sync.whenSynced())), sleep(5000)]);
    clients.push(...batch);
    cap = clients.filter((c) => c.sync.status.state === "synced").length;
  }
  await Promise.all(clients.map((c) => c.close()));
  return { held, ms, kibPerConn: (after - before) / CONNS, cap };
}

/* the highest load of MATCHES_LIST sustained: nearly everything offered
 * delivered, lag p99 within 250 ms (0: none) */
function sustained(ds) {
  let best = 0;
  MATCHES_LIST.forEach((m, k) => {
    if (ds[k].perSec >= 0.95 * ds[k].offered && ds[k].lag99 <= 250) best = Math.max(best, m);
  });
  return best;
}

/* The server's counters of deltas in, apply steps and commits (the
 * deltas a connection had waiting go in one step and one commit); null
 * without a metrics address (behind HAProxy, /metrics is not passed) */
async function scrape(t) {
  if (!t.metrics) return null;
  const text = await (await fetch(t.metrics)).text();
  const v = (name) => Number((new RegExp(`^${name} (\\S+)$`, "m").exec(text) ?? [0, NaN])[1]);
  return { deltas: v("crdtdb_deltas_in_total"), steps: v("crdtdb_apply_duration_seconds_count"),
    commits: v("crdtdb_commit_duration_seconds_count") };
}

/* CPU time (ms) the processes have used so far */
function cpuMs(pids) {
  let ticks = 0;
  for (const pid of pids) {
    try {
      const f = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1].split(" ");
      ticks += Number(f[11]) + Number(f[12]); // utime, stime
    } catch { /* gone */ }
  }
  return ticks * 10; // USER_HZ 100
}

async function deliveries(t, MATCHES) {
  const players = [];
  for (let m = 0; m < MATCHES; m++)
    for (let k = 0; k < 4; k++) players.push({ m, k, ds: await open(t.url, `match-${m}`) });
  await Promise.all(players.map((p) => p.ds.sync.whenSynced()));
  let got = 0, counting = false;
  const lag = [];
  for (const p of players)
    p.ds.replica.onChange((changes, _inv, local) => {
      if (local || !counting) return;
      got += changes.length;
      const now = performance.now();
      for (const c of changes) {
        const r = c.read();
        if (r && typeof r.t === "number") lag.push(now - r.t);
      }
    });
  let run = true, sent = 0;
  const loops = players.map(async (p) => {
    let x = 0;
    while (run) {
      const v = { x: ++x, t: performance.now() };
      await p.ds.update("Players", `p${p.k}`, v).catch(() => p.ds.add("Players", `p${p.k}`, v));
      if (counting) sent++;
      await sleep(50);
    }
  });
  await sleep(1000); // warm-up: every record exists
  counting = true;
  const cpu0 = cpuMs(t.pids()), me0 = process.cpuUsage();
  const t0 = Date.now();
  await sleep(SECS * 1000);
  counting = false;
  const secs = (Date.now() - t0) / 1000;
  const cpu = cpuMs(t.pids()) - cpu0;
  const me = process.cpuUsage(me0);
  run = false;
  await Promise.all(loops);
  await Promise.all(players.map((p) => p.ds.close()));
  return {
    perSec: got / secs, offered: (sent * 3) / secs, lag50: pct(lag, 0.5), lag99: pct(lag, 0.99),
    cpuUsPerField: (cpu * 1000) / Math.max(got, 1), clientCpu: (me.user + me.system) / 1e6 / secs,
  };
}

/* until the servers are idle again (an overloaded level leaves applies
 * queued): under 5% of a core over half a second, 60 s at most */
async function settle(t) {
  const end = Date.now() + 60_000;
  while (Date.now() < end) {
    const c0 = cpuMs(t.pids());
    await sleep(500);
    if (cpuMs(t.pids()) - c0 < 25) return;
  }
}

function pct(a, q) {
  const s = [...a].sort((x, y) => x - y);
  return s[Math.min(s.length - 1, Math.ceil(q * s.length) - 1)];
}

/* kill -9 the server HAProxy sends a match to; restart it afterwards */
async function failover(t) {
  const times = [];
  for (let i = 0; i < FAILOVERS; i++) {
    const id = `fo-${i}`;
    const clients = await Promise.all(Array.from({ length: 8 }, () => open(t.url, id)));
    await Promise.all(clients.map((c) => c.sync.whenSynced()));
    const log = readFileSync(join(t.dir, "haproxy.log"), "utf8");
    const m = new RegExp(` crdtdb_servers/(s\\d) .*"GET /v1/db/${id} `).exec(log);
    const victim = t.servers.find((s) => s.name === m[1]);
    process.kill(victim.pid, "SIGKILL");
    const t0 = performance.now();
    // a write made after the kill: every client holds it once all caught up
    await clients[0].add("Moves", "after", { i });
    await Promise.all(clients.map((c) => until(async () => (await c.getById("Moves", "after", true)) !== null, "catch-up")));
    await Promise.all(clients.map((c) => c.sync.whenSynced()));
    times.push(performance.now() - t0);
    await Promise.all(clients.map((c) => c.close()));
    // back, as before, and healthy for HAProxy again
    const log2 = openSync(join(t.dir, `${victim.name}.restart.log`), "a");
    const p = spawn(BIN, ["-d", victim.data, "serve", "--listen", victim.addr, "--collections", COLLS.join(","),
      "--cluster", join(t.dir, "cluster"), "--self", victim.url, "--handoff", "--max-per-ip", "unlimited"],
      { stdio: ["ignore", "ignore", log2] }); // run.sh's flags
    closeSync(log2);
    t.extra.push(p);
    victim.pid = p.pid;
    await until(async () => { try { return (await fetch(`http://${victim.addr}/healthz`)).ok; } catch { return false; } }, "restart");
    await sleep(1500); // HAProxy's rise 2 at inter 500 ms
  }
  return { p50: pct(times, 0.5), p99: pct(times, 0.99), n: times.length };
}

/* ------------------------------------------------------------ sitting */

const out = {};
for (const start of [startAlone, startCluster]) {
  const t = await start();
  try {
    const ds = [];
    for (const m of MATCHES_LIST) { // first, on fresh servers
      const m0 = await scrape(t);
      const d = await deliveries(t, m);
      ds.push(d);
      await settle(t);
      const m1 = await scrape(t);
      console.log(`${t.name}, ${m} matches of 4: ${Math.round(d.perSec)} field deliveries/s of ` +
        `${Math.round(d.offered)} offered, lag p50 ${d.lag50.toFixed(1)} ms p99 ${d.lag99.toFixed(1)} ms, ` +
        `server-side CPU ${d.cpuUsPerField.toFixed(0)} us per delivered field (the Node clients used ` +
        `${(d.clientCpu * 100).toFixed(0)}% of a core)` + (m0 && m1 ? `; ${m1.deltas - m0.deltas} deltas in ` +
        `${m1.steps - m0.steps} apply steps and ${m1.commits - m0.commits} commits` : ""));
    }
    const c = await connections(t);
    out[t.name] = { c, ds };
    console.log(`${t.name}: ${c.held}/${CONNS} connections held (opened in ${c.ms} ms, ` +
      `${c.kibPerConn.toFixed(1)} KiB RSS each across its processes); capacity ${c.cap}` +
      `${c.cap >= CONNS_MAX ? " (BENCH_CONNS_MAX reached)" : " (then refused)"}; ` +
      `highest load sustained: ${sustained(ds)} matches`);
    if (t.servers) {
      const f = await failover(t);
      out.failover = f;
      console.log(`${t.name}: failover (kill -9 to all 8 clients caught up), ${f.n} runs: ` +
        `p50 ${f.p50.toFixed(0)} ms, p99 ${f.p99.toFixed(0)} ms`);
    }
  } finally {
    await t.stop();
  }
}
const a = out["1 server"], c = out["3 servers + HAProxy"];
console.log(`ratios cluster/alone: connections held ${(c.c.held / a.c.held).toFixed(2)}, ` +
  `capacity ${(c.c.cap / a.c.cap).toFixed(2)}, ` +
  `open time ${(c.c.ms / a.c.ms).toFixed(2)}, RSS per connection ${(c.c.kibPerConn / a.c.kibPerConn).toFixed(2)}, ` +
  `highest load sustained ${sustained(a.ds) ? (sustained(c.ds) / sustained(a.ds)).toFixed(2) : "n/a"} ` +
  `(${sustained(c.ds)} / ${sustained(a.ds)} matches)`);
MATCHES_LIST.forEach((m, k) => {
  const x = a.ds[k], y = c.ds[k];
  console.log(`ratios cluster/alone at ${m} matches: deliveries/s ${(y.perSec / x.perSec).toFixed(2)}, ` +
    `lag p50 ${(y.lag50 / x.lag50).toFixed(2)}, p99 ${(y.lag99 / x.lag99).toFixed(2)}, ` +
    `CPU per field ${(y.cpuUsPerField / x.cpuUsPerField).toFixed(2)}`);
});
process.exit(0);
