// crdtdb in headless Chromium (Debian's chromium, driven by playwright-core), the page served from 127.0.0.1:
//   node js/bench/browser.mjs [--bundle=FILE] [--writes=20000] [--only=local|sync] [--kinds=idb,memory] [--profile=DIR] [--marks]
//        [--fills=K] [--warm] [--trace=DIR] [--threads]
// - local_writes_idb: 20,000 single-field writes (setCell: add the row the first time, then update; rows r0..r999,
//   yield every 500, as the peers' throughput loop) into an IndexedDBBackend, timed until every commit is done;
//   and 10,000 records x 10 fields in one addAll (the peers' local fill).  The same two into a MemoryBackend, for
//   reference.  No sync attached.
// - initial_sync_browser: a fresh page store (IndexedDB, and memory) joins a server holding 100k fields (written
//   by js/bench/writer.mjs), timed from open() to sync.whenSynced(), then the fields counted.
// Prints one JSON line per test; page_cpu_ms (fill_page_cpu_ms for the addAll) is the page's main-thread CPU
// (Chrome's TaskDuration) over the call, steadier than wall time on a shared machine; for the addAll (fill_*) and
// the fresh sync (sync_*, its count of the fields included) also CPU time from /proc, steadier still:
// *_renderer_main_cpu_ms (the page's thread), *_renderer_cpu_ms (every thread of the renderer: V8 compiles and
// collects on threads of its own), *_chromium_cpu_ms (every Chromium process, IndexedDB's writes in its browser
// process included) and *_server_cpu_ms.  The bundle: --bundle, else js/bench/.dist/crdtdb.browser.js (run.mjs
// builds it from js/src with esbuild, as `npm run bundle` does), else js/dist/crdtdb.browser.js.
// $CHROMIUM_ARGS: more command-line flags for Chromium (lib.mjs), e.g. "--js-flags=--trace-opt" with
// DEBUG=pw:browser to see what V8 compiles.
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { benchDir, browserBench, descendants, jsDir, startServer } from "./lib.mjs";

const args = process.argv.slice(2);
const opt = (k, d) => { const a = args.find((x) => x.startsWith(`--${k}=`)); return a ? a.slice(k.length + 3) : d; };
const bundle = opt("bundle", [join(benchDir, ".dist", "crdtdb.browser.js"), join(jsDir, "dist", "crdtdb.browser.js")].find(existsSync));
const nWrites = +opt("writes", 20000);
// --profile=DIR: a CPU profile of each measured page call (Chrome DevTools protocol) in DIR/browser-<test>.cpuprofile
const profDir = opt("profile", "");
const only = opt("only", "all");
// --marks: the fresh sync also returns a timeline (ms from open()): the WebSocket's open, each send (its bytes), every
// 5th message as the page's thread takes it (count:bytes so far), IndexedDB's open, and each read-write transaction's
// time from creation to "complete" (tx<k>:<ms>).  Where a sync waits: the server, Chromium's delivery, the page, IDB.
const marks = args.includes("--marks");
// --kinds=idb: only the IndexedDB store (an A/B of the IndexedDB addAll need not wait for the memory one)
const kinds = opt("kinds", "idb,memory").split(",");
// --fills=K: K-1 more addAlls after the first, each into a fresh store (an A/B wants more samples per browser);
// their figures go in fills_ms / fills_page_cpu_ms
const nFills = +opt("fills", 1);
// --warm: before the measured fresh sync, the page makes one into a memory store (not measured), so that the one
// measured runs on code V8 has compiled: how much of a fresh sync is the page's first run (see README, session 39)
const warm = args.includes("--warm");
// --threads: *_threads_cpu_ms, the CPU of each thread over the call by process type and thread name (Chromium's
// browser, renderer, utility processes; the server), threads of one name summed: what competes with the page
const threadsOpt = args.includes("--threads");
// --trace=DIR: a Chrome trace of each measured fresh sync (DIR/browser-sync-<kind>.json; V8's compiles and GC on
// every thread of the renderer), for chrome://tracing or Perfetto
const traceDir = opt("trace", "");
const TRACE_CATEGORIES = ["toplevel", "v8", "v8.execute", "devtools.timeline", "disabled-by-default-v8.compile",
  "disabled-by-default-v8.gc"];
if (!bundle || !existsSync(bundle)) throw new Error("no browser bundle: see js/bench/README.md");
const COLLS = ["players", "tp", "big"];
const emit = (o) => console.log(JSON.stringify({ system: "crdtdb", runtime: "chromium", ...o }));

const PAGE = `<!doctype html><meta charset="utf-8"><title>crdtdb bench</title>
<script type="module">
import * as C from "/crdtdb.browser.js";
const COLLS = ${JSON.stringify(COLLS)};
const now = () => performance.now();
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const T = { t0: 0, list: [] }, mark = (w) => T.list.push(w + "@" + (now() - T.t0).toFixed(1));
if (${marks}) {
  const W = window.WebSocket;
  window.WebSocket = class extends W {
    constructor(...a) {
      super(...a);
      let n = 0, bytes = 0;
      this.addEventListener("open", () => mark("ws-open"));
      this.addEventListener("message", (e) => { n++; bytes += e.data.byteLength ?? e.data.length; if (n <= 3 || n % 5 === 0) mark("msg" + n + ":" + bytes); });
      const send = this.send.bind(this);
      this.send = (d) => { mark("send" + (d.byteLength ?? d.length)); send(d); };
    }
  };
  const tx = IDBDatabase.prototype.transaction; let k = 0;
  IDBDatabase.prototype.transaction = function (...a) {
    const t = tx.apply(this, a);
    if (a[1] === "readwrite") { const n = ++k, c0 = now(); t.addEventListener("complete", () => mark("tx" + n + ":" + (now() - c0).toFixed(0))); }
    return t;
  };
  const open = indexedDB.open.bind(indexedDB);
  indexedDB.open = (...a) => { mark("idb-open"); const r = open(...a); r.addEventListener("success", () => mark("idb-opened")); return r; };
}
const backendOf = (kind, name) => kind === "idb" ? new C.IndexedDBBackend({ name }) : new C.MemoryBackend();
window.bench = {
  async localWrites(kind, name, n) {
    const ds = await C.CrdtdbDataStore.open({ dbId: name, collections: COLLS, backend: backendOf(kind, name) });
    const made = new Set(); const ps = [];
    const t0 = now();
    for (let i = 0; i < n; i++) {
      const row = "r" + (i % 1000);
      ps.push(made.has(row) ? ds.update("tp", row, { v: i }) : (made.add(row), ds.add("tp", row, { v: i })));
      if (i % 500 === 499) await sleep(0);
    }
    const issued = now() - t0;
    await Promise.all(ps);
    const ms = now() - t0;
    window.openStore = ds; // fill() goes on with it (a page call of its own, so its CPU is measured apart)
    return { writes: n, issue_ms: +issued.toFixed(0), ms: +ms.toFixed(0), writes_per_s: Math.round(n / ms * 1000) };
  },
  async fill() {
    const ds = window.openStore;
    const items = {};
    for (let r = 0; r < 10000; r++) { const o = {}; for (let c = 0; c < 10; c++) o["c" + c] = r * 10 + c; items["r" + r] = o; }
    const t1 = now();
    await ds.addAll("big", items);
    const fill = now() - t1;
    await ds.close();
    return { fill_fields: 100000, fill_ms: +fill.toFixed(0), fill_fields_per_s: Math.round(100000 / fill * 1000) };
  },
  async fillFresh(kind, name) {
    window.openStore = await C.CrdtdbDataStore.open({ dbId: name, collections: COLLS, backend: backendOf(kind, name) });
    return window.bench.fill();
  },
  async freshSync(kind, name, url, dbId) {
    const t0 = now();
    T.t0 = t0; T.list = [];
    const ds = await C.CrdtdbDataStore.open({ dbId, collections: COLLS, backend: backendOf(kind, name), sync: { url } });
    await ds.sync.whenSynced();
    const ms = now() - t0;
    const rows = await ds.query("big", {});
    let fields = 0; for (const r of rows) fields += Object.keys(r).length - 1;
    await ds.close();
    return { join_sync_ms: +ms.toFixed(0), rows_seen: rows.length, fields_seen: fields, ...(T.list.length ? { marks: T.list.join(" ") } : {}) };
  },
};
window.ready = true;
</script>`;

const { browser, page, close } = await browserBench(PAGE, "/crdtdb.browser.js", bundle);
// the page's main-thread CPU over fn (CDP Performance.getMetrics TaskDuration), as <key>: ms
async function cpuOf(p, key, fn) {
  const cdp = await p.context().newCDPSession(p);
  await cdp.send("Performance.enable");
  const task = async () => (await cdp.send("Performance.getMetrics")).metrics.find((m) => m.name === "TaskDuration").value;
  const t0 = await task();
  const r = await fn();
  const ms = (await task() - t0) * 1000;
  await cdp.detach();
  return { ...r, [key]: Math.round(ms) };
}
// CPU time from /proc (Linux; each thread's schedstat run time, in ns), steadier than TaskDuration on a loaded
// machine (which counts time the thread waits for a core): every process under this one (Chromium's browser
// process, its storage and renderer processes, the server), the renderers (every thread: V8's compiler and GC
// threads beside the page's own), the renderers' main threads, and the server
function procCpuMs() {
  const ran = (pid, tid) => { try { return +readFileSync(`/proc/${pid}/task/${tid}/schedstat`, "utf8").split(" ")[0] / 1e6; } catch { return 0; } };
  let all = 0, main = 0, renderer = 0, server = 0;
  const threads = {};
  for (const [pid, cmd] of descendants()) {
    let ms = 0;
    const type = cmd.match(/--type=([a-z-]+)/)?.[1] ?? (cmd.includes("\0serve\0") ? "server" : "browser");
    try {
      for (const tid of readdirSync(`/proc/${pid}/task`)) {
        const t = ran(pid, tid);
        ms += t;
        if (threadsOpt) {
          let comm = "?";
          try { comm = readFileSync(`/proc/${pid}/task/${tid}/comm`, "utf8").trim().replace(/[0-9]+$/, ""); } catch { /* gone */ }
          const k = `${type}:${+tid === pid ? "main" : comm}`;
          threads[k] = (threads[k] ?? 0) + t;
        }
      }
    } catch { continue; /* gone */ }
    all += ms;
    if (type === "renderer") { renderer += ms; main += ran(pid, pid); }
    else if (type === "server") server += ms;
  }
  return { all, main, renderer, server, threads };
}
async function procCpuOf(prefix, fn) {
  const c0 = procCpuMs();
  const r = await fn();
  const c1 = procCpuMs();
  const ms = (k) => Math.round(c1[k] - c0[k]);
  const threads = {};
  for (const [k, v] of Object.entries(c1.threads)) { const d = Math.round(v - (c0.threads[k] ?? 0)); if (d >= 1) threads[k] = d; }
  return { ...r, ...(threadsOpt ? { [prefix + "_threads_cpu_ms"]: threads } : {}), [prefix + "_renderer_main_cpu_ms"]: ms("main"), [prefix + "_renderer_cpu_ms"]: ms("renderer"),
    [prefix + "_chromium_cpu_ms"]: ms("all") - ms("server"), [prefix + "_server_cpu_ms"]: ms("server") };
}
async function measured(p, name, fn) {
  if (!profDir) return fn();
  const cdp = await p.context().newCDPSession(p);
  await cdp.send("Profiler.enable");
  await cdp.send("Profiler.setSamplingInterval", { interval: 100 });
  await cdp.send("Profiler.start");
  const r = await fn();
  const { profile } = await cdp.send("Profiler.stop");
  mkdirSync(profDir, { recursive: true });
  writeFileSync(join(profDir, `browser-${name}.cpuprofile`), JSON.stringify(profile));
  return r;
}
const srv = await startServer(COLLS);
try {
  const chromeVersion = browser.version();
  if (only !== "sync") for (const kind of kinds) {
    const { ctx, p, settled } = await page();
    const r = await measured(p, "local-" + kind, () => cpuOf(p, "page_cpu_ms", () => p.evaluate(([k, n]) => window.bench.localWrites(k, "w-" + k, n), [kind, nWrites])));
    const f = await measured(p, "fill-" + kind, () => procCpuOf("fill", () => cpuOf(p, "fill_page_cpu_ms", () => p.evaluate(() => window.bench.fill()))));
    const more = nFills > 1 ? { fills_ms: [f.fill_ms], fills_page_cpu_ms: [f.fill_page_cpu_ms], fills_renderer_main_cpu_ms: [f.fill_renderer_main_cpu_ms], fills_chromium_cpu_ms: [f.fill_chromium_cpu_ms] } : {};
    for (let i = 1; i < nFills; i++) {
      const g = await measured(p, `fill${i + 1}-${kind}`, () => procCpuOf("f", () => cpuOf(p, "cpu", () => p.evaluate(([k, n]) => window.bench.fillFresh(k, n), [kind, `fill-${kind}-${i}`]))));
      more.fills_ms.push(g.fill_ms); more.fills_page_cpu_ms.push(g.cpu);
      more.fills_renderer_main_cpu_ms.push(g.f_renderer_main_cpu_ms); more.fills_chromium_cpu_ms.push(g.f_chromium_cpu_ms);
    }
    emit({ bench: "local_writes", backend: kind === "idb" ? "indexeddb" : "memory", chromium: chromeVersion, settled_ms: settled, ...r, ...f, ...more });
    await ctx.close();
  }
  if (only !== "local") {
  const w = spawnSync(process.execPath, [join(benchDir, "writer.mjs"), srv.url, "big", "10000", "10"], { encoding: "utf8" });
  if (w.status !== 0) throw new Error(`writer: ${w.stderr}`);
  for (const kind of kinds) {
    const { ctx, p, settled } = await page();
    if (warm) await p.evaluate(([url]) => window.bench.freshSync("memory", "warm", url, "big"), [srv.url]);
    if (traceDir) {
      mkdirSync(traceDir, { recursive: true });
      await browser.startTracing(p, { path: join(traceDir, `browser-sync-${kind}.json`), categories: TRACE_CATEGORIES });
    }
    const r = await measured(p, "sync-" + kind, () => procCpuOf("sync", () => cpuOf(p, "page_cpu_ms", () => p.evaluate(([k, url]) => window.bench.freshSync(k, "fresh-" + k, url, "big"), [kind, srv.url]))));
    if (traceDir) await browser.stopTracing();
    emit({ bench: "initial_sync_browser", fields: 100000, backend: kind === "idb" ? "indexeddb" : "memory", settled_ms: settled, ...r });
    await ctx.close();
  }
  }
} finally {
  await close();
  await srv.stop();
}
process.exit(0);
