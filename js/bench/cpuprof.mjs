// Summarizes a .cpuprofile: top functions by self and total time, file:line mapped back to js/src through the
// compiled client's source maps.   node js/bench/cpuprof.mjs FILE.cpuprofile [N=30]
import { existsSync, readFileSync } from "node:fs";
import { basename } from "node:path";
import { fileURLToPath } from "node:url";

// ---- summary: self and total time per function, mapped back to js/src through the .js.map files
const maps = new Map();
function srcLoc(url, line) {
  if (!url.startsWith("file://")) return `${url || "(native)"}:${line + 1}`;
  const file = fileURLToPath(url);
  let m = maps.get(file);
  if (m === undefined) { m = existsSync(file + ".map") ? decodeMap(JSON.parse(readFileSync(file + ".map", "utf8"))) : null; maps.set(file, m); }
  if (!m || !m.lines[line]) return `${basename(file)}:${line + 1}`;
  const [src, sl] = m.lines[line];
  return `${basename(src)}:${sl + 1}`;
}
function decodeMap(map) {
  // the first mapping of each generated line: enough for function starts
  const B = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  const lines = [];
  let src = 0, sl = 0;
  map.mappings.split(";").forEach((seg, gi) => {
    let first = null;
    for (const s of seg.split(",")) {
      if (!s) continue;
      const v = [];
      let x = 0, sh = 0;
      for (const ch of s) { const d = B.indexOf(ch); x += (d & 31) << sh; if (d & 32) sh += 5; else { v.push(x & 1 ? -(x >> 1) : x >> 1); x = 0; sh = 0; } }
      if (v.length >= 4) { src += v[1]; sl += v[2]; if (!first) first = [map.sources[src], sl]; }
    }
    lines[gi] = first;
  });
  return { lines };
}
export function summarize(p, wallMs, n = 30) {
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const dt = new Map();
  for (let i = 0; i < p.samples.length; i++) dt.set(p.samples[i], (dt.get(p.samples[i]) ?? 0) + (p.timeDeltas[i] ?? 0));
  const parent = new Map();
  for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const key = (n) => `${n.callFrame.functionName || "(anon)"} ${srcLoc(n.callFrame.url, n.callFrame.lineNumber)}`;
  const self = new Map(), total = new Map();
  let all = 0;
  for (const [id, us] of dt) {
    const n = byId.get(id);
    all += us;
    self.set(key(n), (self.get(key(n)) ?? 0) + us);
    const seen = new Set();
    for (let x = id; x !== undefined; x = parent.get(x)) {
      const k = key(byId.get(x));
      if (!seen.has(k)) { seen.add(k); total.set(k, (total.get(k) ?? 0) + us); }
    }
  }
  const top = (m, n) => [...m].sort((a, b) => b[1] - a[1]).slice(0, n)
    .map(([k, us]) => `  ${(us / 1000).toFixed(1).padStart(8)} ms ${(100 * us / all).toFixed(1).padStart(5)}%  ${k}`).join("\n");
  console.log(`sampled ${(all / 1000).toFixed(0)} ms ${wallMs ? ` of ${wallMs.toFixed(0)} ms wall` : ""}\n-- self time\n${top(self, n)}\n-- total (inclusive) time\n${top(total, n + 10)}`);
}


if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const p = JSON.parse(readFileSync(process.argv[2], "utf8"));
  summarize(p, 0, +(process.argv[3] ?? 30));
}
