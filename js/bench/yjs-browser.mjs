// Yjs in headless Chromium: the peer's client side of browser.mjs's workloads, so that crdtdb's Chromium figures
// have a peer measured on the same runtime in the same sitting (the peers of ../shared/peers run only in Node).
//   node js/bench/yjs-browser.mjs [--writes=20000] [--only=local|sync] [--kinds=idb,memory]
// The stock stack: yjs 13, y-websocket 3 (WebsocketProvider), y-indexeddb 9 (IndexeddbPersistence), the peer's own
// server (../shared/peers/yjs/server.mjs: the stock @y/websocket-server, in memory) on 127.0.0.1. They are installed
// into $TMPDIR/yjs-browser-anchor (npm, as ../shared/peers/yjs/run.sh installs its own) and bundled for the page with
// js/node_modules' esbuild. The data model is the peers' (a Y.Map per table, a nested Y.Map per row, a key per field).
// - local_writes: 20,000 single-field transactions (rows r0..r999 of "tp", yield every 500, as the peers' loop) on a
//   Y.Doc with an IndexeddbPersistence ("indexeddb"), or none ("memory"); then 10,000 rows x 10 fields in one
//   transaction. Two times each: `*_ms` when the loop / transaction returned (Yjs's calls are synchronous; its
//   persistence writes in the background), `*_stored_ms` when IndexedDB has committed what they wrote (a read-only
//   transaction on y-indexeddb's store, created after the writes, completes only after every earlier read-write one
//   on that store). crdtdb's figure is the second kind: each write's promise resolves once committed.
// - initial_sync_browser: a fresh page doc (with an IndexeddbPersistence, or none) joins the server holding 100k
//   fields (written by a Node Yjs client in one transaction, 2 s before, as the peers' bench): `join_sync_ms` =
//   provider created -> all 10,000 rows visible (polled every 5 ms, as the peers' bench), `provider_synced_ms` =
//   its 'sync' event, `join_stored_ms` = also committed to IndexedDB.
// One JSON line per test, {"system":"yjs","runtime":"chromium",...}. Exit 0 whatever the figures.
import { spawn, spawnSync } from "node:child_process";
import { copyFileSync, existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { browserBench, freePort, jsDir, sleep } from "./lib.mjs";

const args = process.argv.slice(2);
const opt = (k, d) => { const a = args.find((x) => x.startsWith(`--${k}=`)); return a ? a.slice(k.length + 3) : d; };
const nWrites = +opt("writes", 20000);
const only = opt("only", "all");
const kinds = opt("kinds", "idb,memory").split(",");
const PEERS = process.env.PEERS_DIR ?? "/work/shared/peers";
const VERSIONS = ["yjs@13", "y-websocket@3", "y-indexeddb@9", "@y/websocket-server@0.1.1", "ws@8"];

// ---- the anchor: the peer's packages from npm, the server, the page bundle
const anchor = join(process.env.TMPDIR ?? tmpdir(), "yjs-browser-anchor");
mkdirSync(anchor, { recursive: true });
if (!existsSync(join(anchor, "node_modules", "y-indexeddb")) || !existsSync(join(anchor, "node_modules", "@y", "websocket-server"))) {
  if (!existsSync(join(anchor, "package.json"))) writeFileSync(join(anchor, "package.json"), '{"name":"yjs-browser-anchor","private":true}\n');
  const r = spawnSync("npm", ["install", "--no-audit", "--no-fund", ...VERSIONS], { cwd: anchor, encoding: "utf8" });
  if (r.status !== 0) throw new Error(`npm install in ${anchor}: ${r.stderr}`);
}
copyFileSync(join(PEERS, "yjs", "server.mjs"), join(anchor, "server.mjs"));
const entry = join(anchor, "page-entry.mjs");
writeFileSync(entry, "export * as Y from 'yjs';\nexport { WebsocketProvider } from 'y-websocket';\nexport { IndexeddbPersistence } from 'y-indexeddb';\n");
const bundle = join(anchor, "yjs.browser.js");
const esb = spawnSync(join(jsDir, "node_modules", ".bin", "esbuild"), [entry, "--bundle", "--format=esm", "--platform=browser",
  "--target=es2022", "--log-level=warning", `--outfile=${bundle}`], { encoding: "utf8" });
if (esb.status !== 0) throw new Error(`esbuild: ${esb.stderr}`);
const areq = createRequire(join(anchor, "package.json"));
const Y = areq("yjs");
const { WebsocketProvider } = areq("y-websocket");
const WS = areq("ws");
const version = (p) => JSON.parse(readFileSync(join(anchor, "node_modules", p, "package.json"), "utf8")).version;
const versions = { yjs: version("yjs"), "y-websocket": version("y-websocket"), "y-indexeddb": version("y-indexeddb"), "@y/websocket-server": version("@y/websocket-server") };

// The peers' fill: 10,000 rows x 10 cells (100k fields) in one transaction; run in the page (its source is put
// there) and by the Node writer.
function fillBig(Y, doc) {
  doc.transact(() => { const big = doc.getMap("big"); for (let r = 0; r < 10000; r++) { const m = big.set("r" + r, new Y.Map()); for (let c = 0; c < 10; c++) m.set("c" + c, r * 10 + c); } });
}

const PAGE = `<!doctype html><meta charset="utf-8"><title>yjs bench</title>
<script type="module">
import { Y, WebsocketProvider, IndexeddbPersistence } from "/yjs.browser.js";
const now = () => performance.now();
${fillBig}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
// resolves once IndexedDB committed every read-write transaction y-indexeddb created on its store before this call
const stored = (p) => new Promise((res, rej) => { const t = p.db.transaction(["updates"], "readonly"); t.oncomplete = res; t.onerror = () => rej(t.error); });
async function docOf(kind, name) {
  const doc = new Y.Doc();
  const p = kind === "idb" ? new IndexeddbPersistence(name, doc) : null;
  if (p) await p.whenSynced;
  return { doc, p };
}
const setCell = (doc, t, row, f, v) => doc.transact(() => {
  const tab = doc.getMap(t); let m = tab.get(row); if (!m) { m = new Y.Map(); tab.set(row, m); } m.set(f, v);
});
window.bench = {
  async localWrites(kind, name, n) {
    const { doc, p } = await docOf(kind, name);
    const t0 = now();
    for (let i = 0; i < n; i++) { setCell(doc, "tp", "r" + (i % 1000), "v", i); if (i % 500 === 499) await sleep(0); }
    const ms = now() - t0;
    if (p) await stored(p);
    const st = now() - t0;
    window.open_ = { doc, p };
    return { writes: n, ms: +ms.toFixed(0), stored_ms: +st.toFixed(0), writes_per_s: Math.round(n / ms * 1000), stored_writes_per_s: Math.round(n / st * 1000) };
  },
  async fill() {
    const { doc, p } = window.open_;
    const t0 = now();
    fillBig(Y, doc);
    const ms = now() - t0;
    if (p) await stored(p);
    const st = now() - t0;
    if (p) await p.destroy();
    doc.destroy();
    return { fill_fields: 100000, fill_ms: +ms.toFixed(0), fill_stored_ms: +st.toFixed(0), fill_fields_per_s: Math.round(1e8 / ms), fill_stored_fields_per_s: Math.round(1e8 / st) };
  },
  async freshSync(kind, name, url, room) {
    const t0 = now();
    const { doc, p } = await docOf(kind, name);
    let synced = 0;
    const prov = new WebsocketProvider(url, room, doc, { disableBc: true });
    prov.once("sync", () => { synced = now() - t0; });
    const big = doc.getMap("big");
    while (big.size < 10000 && now() - t0 < 60000) await sleep(5);
    const ms = now() - t0;
    if (p) await stored(p);
    const st = now() - t0;
    let fields = 0; big.forEach((m) => { fields += m.size; });
    const rows = big.size;
    prov.destroy();
    if (p) await p.destroy();
    doc.destroy();
    return { join_sync_ms: +ms.toFixed(0), join_stored_ms: +st.toFixed(0), provider_synced_ms: +synced.toFixed(0), rows_seen: rows, fields_seen: fields };
  },
};
window.ready = true;
</script>`;

const emit = (o) => console.log(JSON.stringify({ system: "yjs", runtime: "chromium", versions, ...o }));
const { browser, page, close } = await browserBench(PAGE, "/yjs.browser.js", bundle);
const port = await freePort();
const server = spawn(process.execPath, [join(anchor, "server.mjs"), String(port)], { cwd: anchor, stdio: ["ignore", "pipe", "inherit"] });
await new Promise((res, rej) => { server.stdout.on("data", (d) => { if (String(d).includes("ready")) res(); }); server.on("exit", () => rej(new Error("the Yjs server exited"))); });
const url = `ws://127.0.0.1:${port}`;
try {
  if (only !== "sync") for (const kind of kinds) {
    const { ctx, p, settled } = await page();
    const r = await p.evaluate(([k, n]) => window.bench.localWrites(k, "w-" + k, n), [kind, nWrites]);
    const f = await p.evaluate(() => window.bench.fill());
    emit({ bench: "local_writes", backend: kind === "idb" ? "indexeddb" : "memory", chromium: browser.version(), settled_ms: settled, ...r, ...f });
    await ctx.close();
  }
  if (only !== "local") {
    // the writer: a Node client of the peer's bench, 100k fields in one transaction, then 2 s (as the peers' bench)
    const room = "big-" + process.pid;
    const doc = new Y.Doc();
    const prov = new WebsocketProvider(url, room, doc, { WebSocketPolyfill: WS, disableBc: true });
    await new Promise((r) => prov.once("sync", r));
    fillBig(Y, doc);
    await sleep(2000);
    for (const kind of kinds) {
      const { ctx, p, settled } = await page();
      const r = await p.evaluate(([k, u, rm]) => window.bench.freshSync(k, "fresh-" + k, u, rm), [kind, url, room]);
      emit({ bench: "initial_sync_browser", fields: 100000, backend: kind === "idb" ? "indexeddb" : "memory", settled_ms: settled, ...r });
      await ctx.close();
    }
    prov.destroy();
  }
} finally {
  await close();
  server.kill();
}
process.exit(0);
