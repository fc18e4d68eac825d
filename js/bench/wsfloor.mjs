// The transport's own floor for the fresh sync: how long a WebSocket takes to hand a page (headless Chromium) and
// a Node `ws` client the fresh sync's bytes when nothing is done with them.  A `ws` server on 127.0.0.1 sends
// --bytes (default 1,135,735: what `crdtdb serve` sends a fresh client for the 100k-field database of writer.mjs in
// delta format 2; 1,688,855 in format 1, before session 41)
// in messages of --chunk bytes (default 65,536, the server's WS_CHUNK) as soon as the connection opens; the
// receiver only counts them.  Times run from the WebSocket's constructor to the last message.
//   node js/bench/wsfloor.mjs [--bytes=N] [--chunk=N] [--runs=5]
// Prints one JSON line per runtime: median, min and max ms of the runs, MB/s at the median.  A fresh sync's time
// in that runtime can never go below the median: compare initial_sync_browser's join_sync_ms with it.
import { createServer } from "node:http";
import { createRequire } from "node:module";
import { join } from "node:path";
import { jsDir, now, settle } from "./lib.mjs";

const require = createRequire(join(jsDir, "package.json"));
const { chromium } = require("playwright-core");
const { WebSocket, WebSocketServer } = require("ws");
const args = process.argv.slice(2);
const opt = (k, d) => { const a = args.find((x) => x.startsWith(`--${k}=`)); return a ? +a.slice(k.length + 3) : d; };
const BYTES = opt("bytes", 1135735), CHUNK = opt("chunk", 65536), RUNS = opt("runs", 5);
const CHROMIUM = process.env.CHROMIUM_BIN ?? "/usr/bin/chromium";

const wss = new WebSocketServer({ port: 0, host: "127.0.0.1" });
await new Promise((r) => wss.on("listening", r));
const payload = Buffer.alloc(BYTES, 0xa5);
wss.on("connection", (ws) => {
  for (let o = 0; o < BYTES; o += CHUNK) ws.send(payload.subarray(o, Math.min(BYTES, o + CHUNK)));
});
const url = `ws://127.0.0.1:${wss.address().port}/`;

const PAGE = `<!doctype html><meta charset="utf-8"><script>
window.receive = (url, total) => new Promise((done, fail) => {
  const t0 = performance.now(); let n = 0;
  const ws = new WebSocket(url); ws.binaryType = "arraybuffer";
  ws.onerror = () => fail(new Error("socket error"));
  ws.onmessage = (e) => { n += e.data.byteLength; if (n >= total) { ws.close(); done(performance.now() - t0); } };
});
window.ready = true;
</script>`;
const web = createServer((_req, res) => { res.writeHead(200, { "content-type": "text/html" }); res.end(PAGE); });
await new Promise((r) => web.listen(0, "127.0.0.1", r));

const summary = (runtime, ms) => {
  const s = [...ms].sort((a, b) => a - b), med = s[Math.floor(s.length / 2)];
  console.log(JSON.stringify({ bench: "ws_floor", runtime, bytes: BYTES, chunk: CHUNK, runs: ms.length,
    median_ms: +med.toFixed(1), min_ms: +s[0].toFixed(1), max_ms: +s.at(-1).toFixed(1), mb_per_s: +(BYTES / 1e6 / (med / 1000)).toFixed(1) }));
};

const node = [];
for (let i = 0; i < RUNS; i++) {
  node.push(await new Promise((done, fail) => {
    const t0 = now(); let n = 0;
    const ws = new WebSocket(url);
    ws.on("error", fail);
    ws.on("message", (d) => { n += d.length; if (n >= BYTES) { ws.close(); done(now() - t0); } });
  }));
}
summary("node", node);

const browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox"], headless: true, timeout: 30000 });
try {
  const page = [];
  for (let i = 0; i < RUNS; i++) {
    const ctx = await browser.newContext();
    const p = await ctx.newPage();
    await p.goto(`http://127.0.0.1:${web.address().port}/`);
    await p.waitForFunction(() => window.ready === true);
    await settle(); // Chromium's own work for a new window first (lib.mjs)
    page.push(await p.evaluate(([u, n]) => window.receive(u, n), [url, BYTES]));
    await ctx.close();
  }
  summary("chromium", page);
} finally {
  await browser.close();
  wss.close();
  web.close();
}
