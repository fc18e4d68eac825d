// Yjs doing bench_churn's churn (../bench_churn.c, issue #16): the same operations from the same generator
// (mulberry32, written out identically in both; the counts and the FNV-1a checksum printed by both must match),
// on one Y.Doc, B operations per doc.transact. Prints ONE JSON line.
//   node --expose-gc benchmarks/peers-churn/churn.mjs [--ops=1000000] [--ids=10000] [--batch=1000] [--seed=1]
// Yjs 13 comes from $TMPDIR/yjs-anchor, where ../../../shared/peers/yjs/run.sh installs it (installed there the
// same way if missing).
//
// Data model (the one of ../../../shared/peers/yjs): a top-level Y.Map "players", a nested Y.Map per record, one
// key per field. add = players.set(id, new Y.Map(fields)) (the old record map, if any, is deleted: an add replaces
// the record, as crdtdb_db_add does); update = set x, y (and hp) on the record's map; remove = players.delete(id).
//
// Measured: Y.encodeStateAsUpdate(doc) bytes (what a Yjs server such as y-leveldb or y-redis stores for the
// document; V2 too) and this process's RSS and heap after global.gc(), before and after the churn. Yjs has no
// tombstone collection: with doc.gc (the default) a deleted item's content is dropped when its transaction ends,
// but the item itself (id, origin, parent key) stays for good, merged with adjacent deleted items; nothing else
// can be collected without breaking merges with other replicas. So "after collection" is the same document.
// For reference, `fresh_*`: a new Y.Doc holding only the live records (what copying the live data into a new
// document gives; other replicas' documents can no longer merge with it).
import { createRequire } from "node:module";
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { performance } from "node:perf_hooks";

const args = process.argv.slice(2);
const num = (k, d) => { const a = args.find((x) => x.startsWith(`--${k}=`)); return a ? Number(a.slice(k.length + 3)) : d; };
const o = { ops: num("ops", 1000000), ids: num("ids", 10000), batch: num("batch", 1000), seed: num("seed", 1) };
const log = (s) => process.stderr.write(s + "\n");

const anchor = join(process.env.TMPDIR || "/tmp", "yjs-anchor");
if (!existsSync(join(anchor, "node_modules", "yjs"))) {
  log(`== installing yjs@13 y-websocket@3 @y/websocket-server@0.1.1 ws@8 into ${anchor}`);
  mkdirSync(anchor, { recursive: true });
  if (!existsSync(join(anchor, "package.json"))) spawnSync("npm", ["init", "-y"], { cwd: anchor });
  const r = spawnSync("npm", ["install", "yjs@13", "y-websocket@3", "@y/websocket-server@0.1.1", "ws@8"], { cwd: anchor, encoding: "utf8" });
  if (r.status !== 0) throw new Error(`npm install: ${r.stderr}`);
}
const require = createRequire(join(anchor, "package.json"));
const Y = require("yjs");
const yjsVersion = require("yjs/package.json").version;

const NAMES = ["ana", "bo", "carmen", "dmitri", "eve", "fatima", "gus", "hiroko"];
const OP_ADD = 0, OP_UPDATE = 1, OP_REMOVE = 2;

// ---- the generator: bench_churn.c's gen_next, line for line
const g = { s: o.seed >>> 0, model: [], count: [0, 0, 0], live: 0, fnv: 2166136261 };
for (let i = 0; i < o.ids; i++) g.model.push({ live: 0, name: 0, hp: 0, x: 0, y: 0 });
function next() {
  g.s = (g.s + 0x6d2b79f5) >>> 0;
  let z = g.s;
  z = Math.imul(z ^ (z >>> 15), z | 1);
  z ^= z + Math.imul(z ^ (z >>> 7), z | 61);
  return (z ^ (z >>> 14)) >>> 0;
}
function fnv(v) {
  for (let i = 0; i < 4; i++) g.fnv = Math.imul(g.fnv ^ ((v >>> (8 * i)) & 0xff), 16777619) >>> 0;
}
/** The next operation: { op, id, hp } with the record's fields in g.model[id]. */
function genNext() {
  for (;;) {
    const i = next() % o.ids, r = next() % 100, m = g.model[i];
    let op, hp = false;
    if (!m.live) {
      if (r >= 50) continue;
      op = OP_ADD;
      m.hp = next() % 101; m.name = next() % 8; m.x = next() % 10000; m.y = next() % 10000;
      m.live = 1; g.live++;
    } else if (r < 50) {
      op = OP_REMOVE; m.live = 0; g.live--;
    } else {
      op = OP_UPDATE;
      m.x = next() % 10000; m.y = next() % 10000;
      if ((hp = r % 4 === 0)) m.hp = next() % 101;
    }
    g.count[op]++;
    fnv(op); fnv(i);
    if (op !== OP_REMOVE) { fnv(((m.x << 16) | m.y) >>> 0); fnv((m.hp << 8) | m.name); }
    return { op, id: i, hp };
  }
}

// msgpack size of a live record {hp, name, x, y}, as crdtdb renders it (fixmap, fixstr keys, smallest uints)
const uintSize = (v) => (v < 128 ? 1 : v < 256 ? 2 : v < 65536 ? 3 : 5);
const recSize = (m) => 1 + 3 + uintSize(m.hp) + 5 + 1 + NAMES[m.name].length + 2 + uintSize(m.x) + 2 + uintSize(m.y);

function mem() {
  global.gc?.(); global.gc?.();
  const u = process.memoryUsage();
  return { rss_kb: Math.round(u.rss / 1024), heap_used_kb: Math.round(u.heapUsed / 1024) };
}
const sizes = (doc) => ({ update_bytes: Y.encodeStateAsUpdate(doc).length, update_v2_bytes: Y.encodeStateAsUpdateV2(doc).length });
const fields = (m) => [["hp", m.hp], ["name", NAMES[m.name]], ["x", m.x], ["y", m.y]];

const start = mem();
let doc = new Y.Doc();
let players = doc.getMap("players");
const t0 = performance.now();
for (let done = 0; done < o.ops;) {
  const n = Math.min(o.batch, o.ops - done);
  doc.transact(() => {
    for (let k = 0; k < n; k++) {
      const { op, id, hp } = genNext(), m = g.model[id], key = `p${id}`;
      if (op === OP_ADD) players.set(key, new Y.Map(fields(m)));
      else if (op === OP_REMOVE) players.delete(key);
      else {
        const r = players.get(key);
        r.set("x", m.x); r.set("y", m.y);
        if (hp) r.set("hp", m.hp);
      }
    }
  });
  done += n;
}
const churnS = (performance.now() - t0) / 1000;
const churned = { ...mem(), ...sizes(doc) };
let liveBytes = 0, liveRecords = 0;
for (const m of g.model) if (m.live) { liveBytes += recSize(m); liveRecords++; }
if (players.size !== g.live) throw new Error(`Y.Map has ${players.size} records, the model ${g.live}`);

// reference: the live records alone in a new document
const fresh = new Y.Doc(), fp = fresh.getMap("players");
fresh.transact(() => g.model.forEach((m, i) => { if (m.live) fp.set(`p${i}`, new Y.Map(fields(m))); }));
const freshSizes = sizes(fresh);
fresh.destroy();
const after = mem();

console.log(JSON.stringify({
  system: "yjs", yjs: yjsVersion, model: "Y.Map of Y.Map per record", ...o,
  adds: g.count[OP_ADD], updates: g.count[OP_UPDATE], removes: g.count[OP_REMOVE], live: g.live,
  checksum: g.fnv.toString(16).padStart(8, "0"), live_msgpack_bytes: liveBytes, live_records: liveRecords,
  churn_s: Number(churnS.toFixed(3)), start, churned, after_fresh_doc: after,
  fresh_update_bytes: freshSizes.update_bytes, fresh_update_v2_bytes: freshSizes.update_v2_bytes,
  collection: "none (Yjs GC drops deleted content only; deleted items stay)",
  disk_ratio: Number((churned.update_bytes / liveBytes).toFixed(4)),
}));
