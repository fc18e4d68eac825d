// A/B of two compiled clients, alternated in one sitting: runs SCRIPT (a bench here that prints one JSON line) with
// CRDTDB_JS_DIST=A, then =B, N times, and prints the median of each numeric field for A and B and the ratio B/A.
//   node js/bench/ab.mjs A_DIST B_DIST N SCRIPT [args...]      e.g. ab.mjs .dist-base .dist-new 7 addall.mjs --runs=4
import { spawnSync } from "node:child_process";
import { join, resolve } from "node:path";
import { benchDir } from "./lib.mjs";

const [a, b, n, script, ...rest] = process.argv.slice(2);
const got = { A: [], B: [] };
for (let i = 0; i < +n; i++) {
  for (const [k, dist] of [["A", a], ["B", b]]) {
    const r = spawnSync(process.execPath, [join(benchDir, script), ...rest], { encoding: "utf8", env: { ...process.env, CRDTDB_JS_DIST: resolve(dist) } });
    if (r.status !== 0) throw new Error(`${k} failed: ${r.stderr}`);
    const line = r.stdout.trim().split("\n").filter((l) => l.startsWith("{")).pop();
    got[k].push(JSON.parse(line));
    process.stderr.write(`${k} ${line}\n`);
  }
}
const med = (xs) => { const s = [...xs].sort((x, y) => x - y); return s.length % 2 ? s[s.length >> 1] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2; };
const out = {};
for (const f of Object.keys(got.A[0])) {
  if (typeof got.A[0][f] !== "number") continue;
  const ma = med(got.A.map((x) => x[f])), mb = med(got.B.map((x) => x[f]));
  out[f] = { A: +ma.toFixed(1), B: +mb.toFixed(1), ratio: +(mb / ma).toFixed(3) };
}
console.log(JSON.stringify({ ab: script, n: +n, A: a, B: b, medians: out }));
