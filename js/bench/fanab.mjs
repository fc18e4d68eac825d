// The fan-out receiver's per-delta path, A/B in ONE process: loads two (or more) compiled clients side by side
// (CRDTDB_JS_DIST-style tsc output dirs) and runs the same stage with each, alternating, ROUNDS times, over the
// deltas fanreplay.mjs recorded (run it once first: /tmp/crdtdb-fanreplay.bin). Both variants share the process's
// load and heap, so a few percent show where separate processes (ab.mjs) see only the machine's noise.
// Stages: decode (decodeDelta), apply (Replica.apply, node.mjs's listener), session (ClientSession.receive of
// every recorded message). Verification is stubbed (a verifier that says yes) unless REAL_VERIFY=1: the stub
// isolates what the client does besides libsodium's ~60 µs. HEAP=1 adds a sampled allocation profile (bytes per
// delta by function, collected garbage included). Prints µs per delta: min, p25, median (first quarter dropped).
//   ROUNDS=40 node js/bench/fanab.mjs session js/bench/.dist-base js/bench/.dist-new
import { pathToFileURL } from "node:url";
import { join, resolve } from "node:path";
import { readRecording, seededBackend } from "./lib.mjs";
const [stageName, ...dists] = process.argv.slice(2);
const ROUNDS = +(process.env.ROUNDS ?? 40);
const msgs = readRecording("/tmp/crdtdb-fanreplay.bin");
const variants = [];
for (const d of dists) {
  const imp = (m) => import(pathToFileURL(join(resolve(d), m)).href);
  const C = await imp("node.js"), F = await imp("frames.js"), D = await imp("delta.js"), K = await imp("keys.js");
  if (!process.env.REAL_VERIFY) K.setSyncVerify(() => true);
  const deltas = [];
  { const rd = new F.FrameReader(1 << 24); for (const m of msgs) { rd.push(m); let x; while ((x = rd.next())) if (x.t === "delta") deltas.push(x.delta); } }
  const server = (await D.decodeDelta(deltas[0])).sender;
  const SeededBackend = seededBackend(C, 9); // fanreplay's identity
  const stages = {
    decode: async () => { for (const x of deltas) await D.decodeDelta(x); },
    apply: async () => {
      const r = await C.Replica.open({ dbId: "fan", collections: ["players", "tp", "big"], backend: new SeededBackend() });
      let n = 0; r.onChange((ch) => { for (const c of ch) if (c.visible && c.read()) n++; });
      for (const x of deltas) await r.apply(x, server);
      await r.close();
    },
    session: async () => {
      const r = await C.Replica.open({ dbId: "fan", collections: ["players", "tp", "big"], backend: new SeededBackend() });
      let n = 0; r.onChange((ch) => { for (const c of ch) if (c.visible && c.read()) n++; });
      const s = new C.ClientSession(r, { mode: C.TWO_WAY, send: () => {}, onEvent: () => {} });
      s.start();
      for (const m of msgs) { s.receive(new Uint8Array(m)); await s.idle(); }
      s.close(); await r.close();
    },
  };
  variants.push({ d, fn: stages[stageName], t: [], n: deltas.length });
}
let hp = null;
if (process.env.HEAP) { const { Session } = await import("node:inspector/promises"); hp = new Session(); hp.connect(); await hp.post("HeapProfiler.enable");
  for (const v of variants) await v.fn();
  await hp.post("HeapProfiler.startSampling", { samplingInterval: 1024, includeObjectsCollectedByMajorGC: true, includeObjectsCollectedByMinorGC: true }); }
for (let i = 0; i < ROUNDS; i++) for (const v of (i % 2 ? [...variants].reverse() : variants)) { const p0 = performance.now(); await v.fn(); v.t.push(performance.now() - p0); }
if (hp) { const { profile } = await hp.post("HeapProfiler.stopSampling");
  const m = new Map(); let total = 0;
  (function walk(n){ const k = n.callFrame.functionName+" "+n.callFrame.url.split("/").pop()+":"+(n.callFrame.lineNumber+1); total += n.selfSize; m.set(k,(m.get(k)||0)+n.selfSize); for (const c of n.children) walk(c); })(profile.head);
  const nd = variants[0].n * ROUNDS;
  console.log("bytes per delta", (total/nd).toFixed(0));
  for (const [k,v] of [...m].sort((a,b)=>b[1]-a[1]).slice(0,45)) console.log((v/nd).toFixed(0).padStart(8), k);
}
for (const v of variants) {
  const t = v.t.slice(ROUNDS >> 2).sort((a, b) => a - b);
  console.log(v.d.padEnd(24), stageName, "min", (t[0] * 1000 / v.n).toFixed(2), "p25", (t[t.length >> 2] * 1000 / v.n).toFixed(2), "med", (t[t.length >> 1] * 1000 / v.n).toFixed(2));
}
