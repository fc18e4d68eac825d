// Where one fan-out burst's time goes: node.mjs's fanout_latency workload (client 0 writes players/p{i%64}/x, 10
// writes then sleep(10)), with the writer's and each receiver's steps stamped against the end of the burst's 10th
// write call, medians over the bursts.  A diagnostic, not a figure: the stamps cost a few µs each.
//   node js/bench/timeline.mjs [clients=16] [--bursts=400]
// Stages: writer sign (libsodium, through sodium-native: the stamps wrap its calls) and socket send; each receiver's
// message arrival (ws), verify start and end, and onChange listener, in the order the process takes them.  "send ->
// 1st arrival" is the server and both loopback hops.  Receivers 2..N-1 are told as the step from the one before.
import { createRequire } from "node:module";
import { loadClient, now, sleep, startServer } from "./lib.mjs";

const args = process.argv.slice(2);
const opt = (k, d) => { const a = args.find((x) => x.startsWith(`--${k}=`)); return a ? a.slice(k.length + 3) : d; };
const nClients = +(args.find((a) => /^\d+$/.test(a)) ?? 16);
const bursts = +opt("bursts", 400);
const WARM = 50;

let mark = 0;
const ev = [];
const stamp = (k) => { if (mark) ev.push([k, now() - mark]); };
// sodium-native is one module object per process: the client's calls go through these wrappers
const na = createRequire(import.meta.url)("sodium-native");
for (const [name, tag] of [["crypto_sign_verify_detached", "verify"], ["crypto_sign_detached", "sign"]]) {
  const f = na[name];
  na[name] = (...a) => { stamp(tag + "0"); const r = f(...a); stamp(tag + "1"); return r; };
}
const { CrdtdbDataStore, nodeSocket, ed25519Backend } = await loadClient();
if (ed25519Backend && ed25519Backend !== "libsodium") console.error(`note: ed25519 through ${ed25519Backend}: no verify/sign stamps`);
const srv = await startServer(["players"]);
const socket = (writer) => {
  const f = nodeSocket();
  return (url, headers) => {
    const s = f(url, headers);
    if (writer) { const send = s.send.bind(s); s.send = (d, ...r) => { stamp("send"); return send(d, ...r); }; }
    else s.prependListener("message", () => stamp("arrival"));
    return s;
  };
};
const clients = [];
try {
  for (let i = 0; i < nClients; i++) {
    const ds = await CrdtdbDataStore.open({ dbId: "timeline", collections: ["players"], sync: { url: srv.url, socket: socket(i === 0) } });
    await ds.sync.whenSynced();
    clients.push(ds);
  }
  for (let i = 1; i < nClients; i++) clients[i].replica.onChange((changes) => { for (const c of changes) c.read(); stamp("listener"); });
  const steps = new Map();
  const add = (k, v) => { if (!steps.has(k)) steps.set(k, []); steps.get(k).push(v); };
  const made = new Set();
  for (let b = 0; b < bursts + WARM; b++) {
    ev.length = 0;
    mark = 0;
    for (let k = 0; k < 10; k++) {
      const id = "p" + ((b * 10 + k) % 64);
      const p = made.has(id) ? clients[0].update("players", id, { x: b }) : (made.add(id), clients[0].add("players", id, { x: b }));
      p.catch(() => {});
    }
    mark = now();
    await sleep(10);
    if (b < WARM) continue;
    let prev = 0, n = 0, sent = false;
    for (const [k, t] of ev) {
      if (!sent && (k === "sign0" || k === "sign1" || k === "send")) {
        add({ sign0: "writer: 10th write -> sign", sign1: "writer: sign", send: "writer: sign -> send" }[k], t - prev);
        if (k === "send") { add("writer: 10th write -> send", t); sent = true; }
      } else if (sent && k === "arrival") {
        n++;
        add(n === 1 ? "send -> 1st arrival" : "listener -> next arrival", t - prev);
      } else if (sent && n && k !== "sign0" && k !== "sign1" && k !== "send") {
        const name = { verify0: "arrival -> verify", verify1: "verify", listener: "verify -> listener" }[k];
        add((n === 1 ? "1st: " : "next: ") + name, t - prev);
        if (k === "listener" && n === Math.ceil((nClients - 1) / 2)) add(`listener of the median receiver (${n} of ${nClients - 1})`, t);
      } else continue;
      prev = t;
    }
  }
  const med = (a) => { a.sort((x, y) => x - y); return a[a.length >> 1]; };
  console.log(`${nClients} clients, ${bursts} bursts of 10 writes; medians, ms:`);
  for (const [k, v] of steps) console.log(`  ${k.padEnd(44)} ${med(v).toFixed(3)}  (${v.length})`);
} finally {
  for (const c of clients) await c.close();
  await srv.stop();
}
