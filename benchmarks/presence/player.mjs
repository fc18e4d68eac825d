// One process of bench_presence's players (see ../bench_presence.mjs, which spawns it): players [from, to) of `total`,
// each a WebSocket to the server, sending its position at `hz` and recording every position it receives.
//   node player.mjs '<json config>'      stdin: "go <T0>"  stdout: "ready", then "done"; results in cfg.out
// Both systems go through the same CountingSocket (ws@8 from js/node_modules) and the same scheduler; only the
// protocol differs: crdtdb = raw frames of docs/protocol.md (hello, since, [12, state]; [13, ...] in), Yjs = the stock
// y-websocket provider and its y-protocols awareness (awareness.setLocalStateField('pos', ...)).
import { createRequire } from "node:module";
import { randomBytes } from "node:crypto";
import { writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { monitorEventLoopDelay, performance, PerformanceObserver } from "node:perf_hooks";

const cfg = JSON.parse(process.argv[2]);
const root = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..");
const jsRequire = createRequire(join(root, "js", "package.json"));
const WebSocket = jsRequire("ws");
const { Packr } = jsRequire("msgpackr");
const mp = new Packr({ useRecords: false });

/** Wall-clock ms, comparable between processes of this machine (the send stamp carried by every update). */
const clock = () => performance.timeOrigin + performance.now();
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const PERIOD = 1000 / cfg.hz;
let T0 = Infinity, TEND = Infinity, TIDLE = Infinity, TIDLE_END = Infinity; // set by "go"

// What crosses the wire, by phase: "win" = [T0, TEND + drain) (the updates and their deliveries), "idle" after.
// Payload = the WebSocket message's data; header = its WebSocket frame header (2, 4 or 10 bytes, +4 mask from a client).
const stats = {
  win: { sentMsgs: 0, sentBytes: 0, sentHdr: 0, recvMsgs: 0, recvBytes: 0, recvHdr: 0, pings: 0 },
  idle: { sentMsgs: 0, sentBytes: 0, recvMsgs: 0, recvBytes: 0, pings: 0, recvAt: [] },
};
const phase = (t) => (t >= T0 && t < TIDLE ? stats.win : t >= TIDLE && t < TIDLE_END ? stats.idle : null);
const hdr = (n, masked) => (n < 126 ? 2 : n < 65536 ? 4 : 10) + (masked ? 4 : 0);
const size = (d) => (Array.isArray(d) ? d.reduce((a, b) => a + b.byteLength, 0) : d.byteLength);
class CountingSocket extends WebSocket {
  constructor(...a) {
    super(...a);
    this.on("message", (d) => {
      const t = clock(), s = phase(t), n = size(d);
      if (!s) return;
      s.recvMsgs++; s.recvBytes += n;
      if (s === stats.win) s.recvHdr += hdr(n, false); else s.recvAt.push(+(t - TIDLE).toFixed(1));
    });
    this.on("ping", () => { const s = phase(clock()); if (s) s.pings++; });
  }
  send(d, ...rest) {
    const s = phase(clock()), n = size(d);
    if (s) { s.sentMsgs++; s.sentBytes += n; if (s === stats.win) s.sentHdr += hdr(n, true); }
    return super.send(d, ...rest);
  }
}

// Per receiving player: per sender key, flat [payload t, arrival t, ...]; per sending player: its send stamps.
const arrivals = [];
const sends = [];
const ids = {}; // sender key -> player index (this process's players)
let notices = 0, errors = 0;
const errorText = [];
// Recorded in typed arrays sized for the run up front: growing plain arrays of ~400k numbers kept the players' old
// space growing, and its major collections (5-11 ms) held up every player of the process, whatever the system.
const expectPairs = Math.ceil((cfg.warmMs + cfg.secs * 1000 + cfg.drainMs + 2000) / PERIOD) * 2 + 64;
class Pairs {
  buf = new Float64Array(expectPairs);
  n = 0;
  push(a, b) {
    if (this.n + 2 > this.buf.length) { const g = new Float64Array(this.buf.length * 2); g.set(this.buf); this.buf = g; }
    this.buf[this.n++] = a;
    this.buf[this.n++] = b;
  }
  toJSON() { return Array.from(this.buf.subarray(0, this.n)); }
}
const arrive = (r, key, t) => {
  const now = clock();
  let a = arrivals[r].get(key);
  if (!a) arrivals[r].set(key, (a = new Pairs()));
  a.push(t, now);
};
const pos = (i, t) => ({ x: (i * 37 + Math.floor(t / 7)) % 1000, y: (i * 91 + Math.floor(t / 13)) % 1000, t });

/** crdtdb: a raw-protocol player. */
function crdtdbPlayer(i) {
  const replica = randomBytes(32);
  const key = replica.toString("hex");
  ids[key] = i;
  const ws = new CountingSocket(`${cfg.url}/v1/db/${encodeURIComponent(cfg.db)}`);
  const seen = new Set();
  const frame = (v) => { const b = mp.pack(v); const f = Buffer.allocUnsafe(4 + b.length); f.writeUInt32BE(b.length, 0); b.copy(f, 4); return f; };
  let buf = Buffer.alloc(0);
  ws.on("message", (d) => {
    buf = buf.length ? Buffer.concat([buf, d]) : d;
    let off = 0;
    while (buf.length - off >= 4) {
      const n = buf.readUInt32BE(off);
      if (buf.length - off - 4 < n) break;
      const m = mp.unpack(buf.subarray(off + 4, off + 4 + n));
      off += 4 + n;
      if (m[0] === 13) {
        const k = Buffer.from(m[3]).toString("hex");
        if (m[5] == null) { seen.delete(k); continue; }
        const st = mp.unpack(m[5]);
        seen.add(k);
        arrive(i, k, st.t);
      } else if (m[0] === 9) { notices++; if (errorText.length < 10) errorText.push(`notice ${m[1]} ${m[2]}`); }
      else if (m[0] === 6) { errors++; errorText.push(`error ${m[1]} ${m[2]}`); }
    }
    buf = off === buf.length ? Buffer.alloc(0) : buf.subarray(off);
  });
  const open = new Promise((res, rej) => { ws.on("open", res); ws.on("error", rej); });
  ws.on("close", (code, why) => { if (!closing) { errors++; errorText.push(`player ${i} closed ${code} ${why}`); } });
  return {
    async connect() {
      await open;
      ws.send(frame([1, 1, cfg.db, replica, 1]));
      ws.send(frame([2, 0]));
    },
    set(p) { ws.send(frame([12, mp.pack(p)])); },
    seen: () => seen.size,
    socket: () => ws._socket,
    close() { ws.close(); },
  };
}

/** Yjs: the stock y-websocket provider; its awareness carries {pos: {x, y, t}}. */
async function yjsPlayer(i, Yjs) {
  const doc = new Yjs.Y.Doc();
  const p = new Yjs.WebsocketProvider(cfg.url, cfg.db, doc, { WebSocketPolyfill: CountingSocket, disableBc: true });
  const aw = p.awareness;
  ids[String(aw.clientID)] = i;
  if (cfg.yjsLocalOnly) {
    // variant (not stock): forward only this player's own changes, not every remote one it applies
    aw.off("update", p._awarenessUpdateHandler);
    const h = p._awarenessUpdateHandler;
    aw.on("update", (ch, origin) => { if (origin === "local") h(ch, origin); });
  }
  aw.on("change", ({ added, updated }, origin) => {
    if (origin === "local") return;
    const states = aw.getStates();
    for (const id of added.concat(updated)) {
      if (id === aw.clientID) continue;
      const st = states.get(id);
      if (st?.pos) arrive(i, String(id), st.pos.t);
    }
  });
  const synced = new Promise((res, rej) => {
    const to = setTimeout(() => rej(new Error("yjs sync timeout")), 30000);
    p.on("sync", (s) => { if (s) { clearTimeout(to); res(); } });
  });
  synced.catch(() => {});
  return {
    async connect() { if (!p.synced) await synced; },
    set(pp) { aw.setLocalStateField("pos", pp); },
    seen() { let n = 0; for (const [id, st] of aw.getStates()) if (id !== aw.clientID && st?.pos) n++; return n; },
    socket: () => p.ws?._socket,
    close() { p.destroy(); },
  };
}

let closing = false;
const Yjs = cfg.system === "yjs" ? await import(pathToFileURL(cfg.yjsShim).href) : null;
if (Yjs) process.setMaxListeners(0); // y-websocket adds one process 'exit' listener per provider
const players = [];
const mine = [];
for (let i = cfg.from; i < cfg.to; i++) {
  arrivals[i] = new Map();
  sends[i] = [];
  mine.push(i);
  players[i] = cfg.system === "yjs" ? await yjsPlayer(i, Yjs) : crdtdbPlayer(i);
}
for (const i of mine) await players[i].connect();
for (const i of mine) players[i].set(pos(i, clock()));
// everyone sees everyone before the run
for (const t0 = clock(); ;) {
  if (mine.every((i) => players[i].seen() >= cfg.total - 1)) break;
  if (clock() - t0 > 20000) throw new Error(`players see ${mine.map((i) => players[i].seen())} of ${cfg.total - 1} others; ${errorText.join('; ')}`);
  await sleep(20);
}
process.stdout.write("ready\n");

// "go T0": send from T0 - warm to TEND; only sends in [T0, TEND) are measured
const go = await new Promise((res) => {
  let s = "";
  process.stdin.on("data", (d) => { s += d; const m = /go ([\d.]+)/.exec(s); if (m) res(+m[1]); });
});
T0 = go; TEND = T0 + cfg.secs * 1000; TIDLE = TEND + cfg.drainMs; TIDLE_END = TIDLE + cfg.idleMs;
const eld = monitorEventLoopDelay({ resolution: 1 });
// the players' own garbage collections in the window: a pause delays every arrival behind it, whatever the server
const gcs = [];
new PerformanceObserver((l) => {
  for (const e of l.getEntries()) { const t = performance.timeOrigin + e.startTime; if (t >= T0 && t < TIDLE) gcs.push([+t.toFixed(3), +e.duration.toFixed(3)]); }
}).observe({ entryTypes: ["gc"] });
let cpu0 = null, cpu1 = null, skipped = 0;
const tStart = T0 - cfg.warmMs;
// each player's tick: its slot (phase i/total of the period), plus a random delay of up to cfg.jitterMs (a game
// loop's and a network's jitter) when asked
const slot = mine.map((i) => tStart + (i / cfg.total) * PERIOD);
const jit = () => (cfg.jitterMs ? Math.random() * cfg.jitterMs : 0);
const next = slot.map((t) => t + jit());
await sleep(Math.max(0, tStart - clock()));
if (cfg.stallMs) {
  // a network hiccup: every player's upstream is held (socket.cork) for stallMs, halfway through, then let go at once
  setTimeout(() => {
    const socks = mine.map((i) => players[i].socket()).filter(Boolean);
    for (const s of socks) s.cork();
    setTimeout(() => { for (const s of socks) s.uncork(); }, cfg.stallMs);
  }, Math.max(0, T0 + cfg.secs * 500 - clock()));
}
await new Promise((done) => {
  const tick = () => {
    const now = clock();
    if (cpu0 === null && now >= T0) { cpu0 = process.cpuUsage(); eld.enable(); }
    if (now >= TEND) return done();
    for (let k = 0; k < mine.length; k++) {
      if (next[k] > now) continue;
      const i = mine[k], t = clock();
      players[i].set(pos(i, t));
      if (t >= T0) sends[i].push(t);
      slot[k] += PERIOD;
      while (slot[k] <= now) { slot[k] += PERIOD; if (t >= T0) skipped++; } // a game loop drops missed ticks
      next[k] = slot[k] + jit();
    }
    setTimeout(tick, Math.max(0, Math.min(...next) - clock()));
  };
  tick();
});
await sleep(Math.max(0, TIDLE - clock()));
cpu1 = process.cpuUsage(cpu0);
eld.disable();
process.stdout.write("idle\n");
await sleep(Math.max(0, TIDLE_END - clock()) + 50);
closing = true;
for (const i of mine) players[i].close();

const out = {
  from: cfg.from, to: cfg.to, ids, skipped, notices, errors, errorText, stats,
  client_cpu_ms: (cpu1.user + cpu1.system) / 1000,
  client_wall_ms: TIDLE - T0,
  event_loop_delay_p99_ms: +(eld.percentile(99) / 1e6).toFixed(2),
  gcs,
  sends: Object.fromEntries(mine.map((i) => [i, sends[i]])),
  arrivals: Object.fromEntries(mine.map((i) => [i, Object.fromEntries(arrivals[i])])),
};
writeFileSync(cfg.out, JSON.stringify(out));
process.stdout.write("done\n");
await sleep(200);
process.exit(0);
