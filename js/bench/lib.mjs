// Shared by the benchmarks: the crdtdb binary, a fresh `crdtdb serve` on 127.0.0.1, the compiled client.
import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer as httpServer } from "node:http";
import { createRequire } from "node:module";
import { connect, createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

export const benchDir = dirname(fileURLToPath(import.meta.url));
export const jsDir = resolve(benchDir, "..");
export const repoRoot = resolve(jsDir, "..");

export const now = () => Number(process.hrtime.bigint()) / 1e6;
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** The Release binary: $CRDTDB_BIN, else /tmp/rel-js/crdtdb, else build/crdtdb. */
export function crdtdbBin() {
  for (const b of [process.env.CRDTDB_BIN, "/tmp/rel-js/crdtdb", join(repoRoot, "build", "crdtdb")])
    if (b && existsSync(b)) return b;
  throw new Error("no crdtdb binary: build one (see js/bench/README.md) or set CRDTDB_BIN");
}

/** The compiled client: $CRDTDB_JS_DIST (a tsc output dir), else js/bench/.dist (run.mjs compiles it). */
export function distDir() {
  return resolve(process.env.CRDTDB_JS_DIST ?? join(benchDir, ".dist"));
}
export async function loadClient() {
  const d = distDir();
  if (!existsSync(join(d, "node.js"))) throw new Error(`no compiled client in ${d}: run 'npx tsc -p js/tsconfig.json --outDir js/bench/.dist'`);
  return import(pathToFileURL(join(d, "node.js")).href);
}

export function freePort() {
  return new Promise((res, rej) => {
    const s = createServer();
    s.listen(0, "127.0.0.1", () => { const p = s.address().port; s.close(() => res(p)); });
    s.on("error", rej);
  });
}

/** A fresh environment and `crdtdb serve` on 127.0.0.1 (new databases get `collections`). */
export async function startServer(collections, extra = []) {
  const bin = crdtdbBin();
  const dir = mkdtempSync(join(tmpdir(), "crdtdb-bench-"));
  const r = spawnSync(bin, ["-d", dir, "init"], { encoding: "utf8" });
  if (r.status !== 0) throw new Error(`crdtdb init: ${r.stderr}`);
  const port = await freePort();
  const proc = spawn(bin, ["-d", dir, "serve", "--listen", `127.0.0.1:${port}`, "--collections", collections.join(","), ...extra],
    { stdio: ["ignore", "ignore", "pipe"] });
  let log = "";
  proc.stderr.on("data", (d) => { log += d; if (log.length > 1e6) log = log.slice(-1e5); });
  const deadline = Date.now() + 10000;
  for (;;) {
    if (proc.exitCode !== null) throw new Error(`crdtdb serve exited: ${log}`);
    const ok = await new Promise((res) => { const s = connect(port, "127.0.0.1"); s.on("connect", () => { s.destroy(); res(true); }); s.on("error", () => res(false)); });
    if (ok) break;
    if (Date.now() > deadline) throw new Error(`crdtdb serve did not listen: ${log}`);
    await sleep(30);
  }
  return {
    url: `ws://127.0.0.1:${port}`, port, dir, pid: proc.pid, proc, log: () => log,
    /** CPU time the server used so far, ms (utime + stime). */
    cpuMs() {
      try {
        const f = readFileSync(`/proc/${proc.pid}/stat`, "utf8").split(") ")[1].split(" ");
        return (+f[11] + +f[12]) * 10; // clock ticks of 10 ms
      } catch { return null; }
    },
    rss() {
      try {
        const s = readFileSync(`/proc/${proc.pid}/status`, "utf8");
        const g = (k) => +s.match(new RegExp(k + ":\\s+(\\d+)"))[1];
        return { rss_kb: g("VmRSS"), peak_rss_kb: g("VmHWM") };
      } catch { return null; }
    },
    stop() {
      return new Promise((res) => {
        const done = () => { rmSync(dir, { recursive: true, force: true }); res(); };
        if (proc.exitCode !== null) return done();
        proc.on("exit", done);
        proc.kill("SIGTERM");
        setTimeout(() => proc.kill("SIGKILL"), 5000).unref();
      });
    },
  };
}

export function quantiles(lat) {
  lat.sort((a, b) => a - b);
  const q = (p) => lat.length ? +lat[Math.min(lat.length - 1, Math.floor(p * lat.length))].toFixed(2) : null;
  return { p50_ms: q(0.5), p99_ms: q(0.99), max_ms: q(0.9999) };
}

/** This process's CPU time, ms. */
export function cpuMs() { const u = process.cpuUsage(); return (u.user + u.system) / 1000; }

// ---- recordings of what a server sends one client (replay.mjs, fanreplay.mjs, fanab.mjs)

/** A MemoryBackend class of client C whose replica always has the identity of `fill` (a seed of 32 such bytes):
 *  a recording made under it replays into a fresh store of the same identity. */
export function seededBackend(C, fill) {
  const seed = new Uint8Array(32).fill(fill);
  return class SeededBackend extends C.MemoryBackend {
    async load() {
      return { meta: { seed, seq: 0, hlc: 0n, fp: new Uint8Array(16), points: [], peers: {}, readonly: false }, records: new Map() };
    }
  };
}

/** A socket factory of client C that also pushes every message received into msgs. */
export function recordingSocket(C, msgs) {
  const base = C.nodeSocket();
  return (url, h) => { const s = base(url, h); s.on("message", (d) => msgs.push(new Uint8Array(d))); return s; };
}

/** Writes messages to file: u32 count, then u32 length + bytes per message (big-endian).  Returns the bytes. */
export function writeRecording(file, msgs) {
  const n = msgs.reduce((a, m) => a + 4 + m.length, 4);
  const out = new Uint8Array(n);
  const dv = new DataView(out.buffer);
  dv.setUint32(0, msgs.length);
  let o = 4;
  for (const m of msgs) { dv.setUint32(o, m.length); out.set(m, o + 4); o += 4 + m.length; }
  writeFileSync(file, out);
  return n;
}

/** The messages writeRecording wrote (views into one buffer). */
export function readRecording(file) {
  const raw = readFileSync(file);
  const dv = new DataView(raw.buffer, raw.byteOffset, raw.length);
  const msgs = [];
  for (let i = 0, o = 4, n = dv.getUint32(0); i < n; i++) { const l = dv.getUint32(o); msgs.push(raw.subarray(o + 4, o + 4 + l)); o += 4 + l; }
  return msgs;
}

/** The processes under this one (Linux /proc), as [pid, command line (NUL-separated), the fields of
 *  /proc/PID/stat after its name (state, ppid, ...; utime and stime at 11 and 12)]: Chromium's and the servers a
 *  bench started; a process gone meanwhile is left out. */
export function descendants() {
  const stat = new Map();
  for (const d of readdirSync("/proc")) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const t = readFileSync(`/proc/${d}/stat`, "utf8");
      stat.set(+d, t.slice(t.lastIndexOf(")") + 2).split(" "));
    } catch { /* gone */ }
  }
  const out = [];
  for (const [pid, f] of stat) {
    let q = +f[1];
    while (q && q !== process.pid) q = +(stat.get(q)?.[1] ?? 0);
    if (!q) continue;
    try { out.push([pid, readFileSync(`/proc/${pid}/cmdline`, "utf8"), f]); } catch { /* gone */ }
  }
  return out;
}

/** CPU ms (utime + stime) by pid of every process under this one but `crdtdb serve`: Chromium's, in the browser
 *  benches. */
function chromiumCpuMs() {
  const out = new Map();
  for (const [pid, cmd, f] of descendants())
    if (!cmd.includes("\0serve\0")) out.set(pid, (+f[11] + +f[12]) * 10); // USER_HZ = 100 on Linux
  return out;
}

/** Waits until Chromium is quiet: a fresh context's window starts work of its own for up to ~1 s after the page is
 *  ready (headless Chromium preloads its omnibox popup, chrome://omnibox-popup.top-chrome, in a renderer of its
 *  own: ~150 ms of that renderer's main thread and as much of V8's compile threads, which `--disable-features`
 *  does not stop), and a call that overlaps it shares the 2 cores with it.  Quiet: 200 ms in which Chromium's
 *  processes (those alive at both ends; one started between counts whole) used under 20 ms of CPU; at most 3 s.
 *  Returns the ms waited (about 3,000: it never got quiet).  $BENCH_NO_SETTLE=1: no wait (the sittings before
 *  2026-12-07 03:50). */
export async function settle() {
  if (process.env.BENCH_NO_SETTLE === "1") return 0;
  const t0 = now();
  let c0 = chromiumCpuMs();
  while (now() - t0 < 3000) {
    await sleep(200);
    const c1 = chromiumCpuMs();
    let used = 0;
    for (const [pid, ms] of c1) used += ms - (c0.get(pid) ?? 0);
    if (used < 20) break;
    c0 = c1;
  }
  return Math.round(now() - t0);
}

/**
 * Headless Chromium (Debian's, $CHROMIUM_BIN; playwright-core from js/) on a page served from 127.0.0.1: `html` at
 * "/", and `script` (a file) at `scriptUrl`. page() opens a fresh context on it once `window.ready` is set, and
 * returns when Chromium is quiet (settle; `settled`: the ms it waited).
 */
export async function browserBench(html, scriptUrl, script) {
  const exe = process.env.CHROMIUM_BIN ?? "/usr/bin/chromium";
  if (!existsSync(exe)) throw new Error(`no Chromium at ${exe}`);
  const { chromium } = createRequire(join(jsDir, "package.json"))("playwright-core");
  const web = httpServer((req, res) => {
    if (req.url === "/" || req.url === "/index.html") { res.writeHead(200, { "content-type": "text/html" }); res.end(html); }
    else if (req.url === scriptUrl) { res.writeHead(200, { "content-type": "text/javascript" }); res.end(readFileSync(script)); }
    else { res.writeHead(404); res.end(); }
  });
  await new Promise((r) => web.listen(0, "127.0.0.1", r));
  const url = `http://127.0.0.1:${web.address().port}/`;
  // $CHROMIUM_ARGS: more flags, space-separated (diagnostics: "--js-flags=--trace-opt", with DEBUG=pw:browser)
  const more = (process.env.CHROMIUM_ARGS ?? "").split(" ").filter(Boolean);
  const browser = await chromium.launch({ executablePath: exe, args: ["--no-sandbox", ...more], headless: true, timeout: 30000 });
  return {
    browser,
    async page() {
      const ctx = await browser.newContext();
      const p = await ctx.newPage();
      p.on("pageerror", (e) => console.error("page error:", e.message));
      // BENCH_CONSOLE=1: the page's console on stderr (timings a patched bundle logs)
      if (process.env.BENCH_CONSOLE) p.on("console", (m) => console.error("page:", m.text()));
      await p.goto(url);
      await p.waitForFunction(() => window.ready === true);
      const settled = await settle();
      return { ctx, p, settled };
    },
    async close() { await browser.close(); web.close(); },
  };
}
