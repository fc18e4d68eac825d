/**
 * Cross-implementation convergence: JS replicas (CrdtdbDataStore on a
 * FileBackend, synced live over `ws`) and C replicas (the real `crdtdb`
 * command, synced one-shot with `crdtdb sync`) on one real `crdtdb serve`
 * on 127.0.0.1, under a random schedule: adds, updates and removes on a
 * small shared set of ids with nested fields (pos.x, arrays, ints, floats,
 * int64 beyond 2^53, nested and empty maps, a key with a dot, ids and keys
 * whose UTF-16 and UTF-8 orders differ); bursts where every JS replica
 * writes one record at once; JS replicas going offline (sync.stop/start),
 * losing their connection (socket terminated, no close handshake) and
 * restarting (closed and reopened from their file), writing while offline;
 * one JS replica whose clock runs two minutes ahead (within the five-minute
 * limit) and one two minutes behind (its stamps then come from the HLC
 * counter); one JS replica syncing server-to-client (its writes refused,
 * everything received); C syncs that fail while the server is down; and a
 * server restart with writes made while it is down (half the seeds kill
 * the server with SIGKILL instead of stopping it).
 *
 * The seed is printed; CONVERGE_SEED=n replays one seed (CONVERGE_STEPS
 * changes the schedule's length, CONVERGE_RUNS=k runs it k times, or k
 * fresh seeds without CONVERGE_SEED; CONVERGE_KEEP=1 keeps a failed run's
 * directories).  By default three fixed seeds and one fresh one run.  A
 * failure prints the schedule and where each side's watermarks stand.
 *
 * Half the seeds collect tombstones (CONVERGE_COLLECT=0|1 forces it):
 * `crdtdb collect` on the server's environment while it serves (or while
 * it is down) or on a C replica's, at random moments and once everyone
 * has synced; some with the server's own `--collect-every 1`, and some of
 * those with `--max-peer-age` (CONVERGE_AGED=1), which resyncs the peers
 * it left out (the read-only JS replica, which never signs, is never
 * remembered and resyncs whenever it comes back behind the floor).
 * Checked then: the replicas converge; no record whose last add or remove
 * was a remove shows; without an age limit they show exactly what the
 * model shows, hold exactly its registers for shown records and nothing
 * it has dead for the others (a removed record's registers may be gone).
 *
 * What is checked at the end, once every replica has synced until quiet
 * (every replica shows the same records AND holds the same registers: a
 * removed record hides leaves that may still be travelling):
 * - the two C replicas and the server print byte-identical `crdtdb query`
 *   JSON (types kept: 2.0 stays a float, int64 stays exact);
 * - every JS replica's query(coll, {}) equals every C replica's, compared
 *   canonically (bigint vs JSON int64 literals; 2.0 vs 2: JS cannot tell a
 *   float with an integral value from an int, see src/value.ts);
 * - both equal the model of docs/crdt.md (test/crdtmodel.ts, written from
 *   that page), and the live registers each replica holds (JS: stored
 *   registers; C and server: everything `crdtdb export` writes) equal the
 *   model's live registers exactly: stamp, origin, value bytes;
 * - every JS replica orders ids and keys as C prints them (bytewise UTF-8);
 * - no JS session reported an error (refusals, forks, clock) on the way.
 *
 * What the model covers, honestly: the model is fed every write of every
 * replica with its stamp.  The stamps are taken from the writers themselves
 * (a JS replica's own new registers right after the call resolves; a C
 * replica's own new registers from `crdtdb export` right after the command,
 * before it syncs), so the model checks the merge, visibility and garbage
 * rules and convergence, not the clock's choice of stamp.  The clock is
 * checked only by what each write must satisfy: one stamp per operation,
 * newer than everything the replica held, at or after its wall clock (the
 * skewed one's included).  Each write's registers are also checked against
 * the operation's input (an independent flatten: base + leaves for add,
 * leaves for update, a remove base or nothing for remove).  Updates here
 * carry no empty maps, whose effect depends on the writer's copy.  Leaf
 * values are decoded for rendering with src/value.ts's codec (the codec is
 * pinned by value.test.ts; the rules here are the model's own).
 */
import test from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { CrdtdbDataStore, CrdtdbError, type SessionEvent } from "../src/index.js";
import { FileBackend, nodeSocket } from "../src/node.js";
import { decodeDelta, deltaFrame } from "../src/delta.js";
import { decodeValue, valueBytes } from "../src/value.js";
import { hlcMs } from "../src/hlc.js";
import { toHex } from "../src/keys.js";
import type { Value } from "../src/types.js";
import { cli, crdtdbBin, ended, serve, sleep, tempDir, until, type Server } from "./helpers.js";
import { Model, canon, cmpStamp, parseJsonExact, regString, toHexStr, type Reg } from "./crdtmodel.js";

const DB = "conv";
const COLLS = ["Items", "Boards"];
// ids and keys whose UTF-16 order differs from their UTF-8 (bytewise) order:
// "｡" (U+FF61) sorts before "🎲" (U+1F3B2) bytewise, after it in UTF-16
const IDS = ["r0", "r1", "r2", "Zed", "é1", "🎲", "｡x"];
const SKEW_MS = 120_000;
/** A slow clock: stamps come from the HLC's counter once it has seen newer ones. */
const SLOW_MS = -120_000;

/** CONVERGE_RUNS=n: with CONVERGE_SEED, that seed n times; without, n fresh seeds. */
const RUNS = Number(process.env.CONVERGE_RUNS ?? 0);
const fresh = (i: number): number => ((Date.now() + i * 7919) % 1_000_000) + 1;
const seeds: number[] = process.env.CONVERGE_SEED
  ? Array.from({ length: Math.max(1, RUNS) }, () => Number(process.env.CONVERGE_SEED))
  : RUNS > 0 ? Array.from({ length: RUNS }, (_, i) => fresh(i))
  : [11, 2026, 9, fresh(0)]; // 11 collects, 2026 does not, 9 collects with an age limit
const STEPS = Number(process.env.CONVERGE_STEPS ?? 110);

/* ------------------------------------------------------------ random */

class Rng {
  private s: number;
  constructor(seed: number) { this.s = seed >>> 0 || 1; }
  next(): number { // mulberry32
    let t = (this.s = (this.s + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  int(n: number): number { return Math.floor(this.next() * n); }
  pick<T>(a: readonly T[]): T { return a[this.int(a.length)]!; }
  chance(p: number): boolean { return this.next() < p; }
}

/** A float with an integral value, written `4.0` in C's JSON (a JS write
 *  of it is the int 4: JS has no such float). */
class FloatInt { constructor(readonly v: number) {} }
type GVal = Value | FloatInt | GVal[] | { [k: string]: GVal };

function scalar(g: Rng, forC: boolean): GVal {
  switch (g.int(9)) {
    case 0: return g.int(2001) - 1000;
    case 1: return g.pick([2.5, 0.1, -3.75, 1e-7, 123456.789, g.int(100) + 0.5]);
    case 2: return g.pick([2n ** 53n + BigInt(g.int(1000) + 1), -(2n ** 60n) - BigInt(g.int(1000)), 2n ** 63n - 1n, -(2n ** 63n)]);
    case 3: return g.pick(["ann", "bob", "é", "🎲 dice", "a.b", "", "x".repeat(g.int(40))]);
    case 4: return g.chance(0.5);
    case 5: return null;
    case 6: return forC ? new FloatInt(g.int(20)) : g.int(20);
    case 7: return g.int(2 ** 31);
    default: return g.int(10);
  }
}

function arr(g: Rng, forC: boolean): GVal[] {
  const n = g.int(4);
  const a: GVal[] = [];
  for (let i = 0; i < n; i++) a.push(g.chance(0.2) ? [scalar(g, forC)] : scalar(g, forC));
  return a;
}

function num(g: Rng, forC: boolean): GVal {
  return g.pick([g.int(100), g.int(100) + 0.25, forC ? new FloatInt(g.int(9)) : g.int(9), -g.int(50)]);
}

function addValue(g: Rng, forC: boolean): { [k: string]: GVal } {
  const v: { [k: string]: GVal } = {};
  if (g.chance(0.8)) v.name = g.pick(["ann", "bob", "cy", "dé"]);
  if (g.chance(0.7)) v.pos = { x: num(g, forC), y: num(g, forC) };
  if (g.chance(0.5)) v.tags = arr(g, forC);
  if (g.chance(0.5)) v.hp = g.int(100);
  if (g.chance(0.4)) v.score = num(g, forC);
  if (g.chance(0.4)) v.big = scalar(g, forC);
  if (g.chance(0.4)) v.meta = { a: { b: scalar(g, forC) }, c: g.chance(0.5) ? {} : scalar(g, forC) };
  if (g.chance(0.2)) v.empty = {};
  if (g.chance(0.2)) v["dot.key"] = scalar(g, forC);
  if (g.chance(0.2)) v["🎲"] = scalar(g, forC);
  if (g.chance(0.2)) v["｡"] = { "🎲": scalar(g, forC), é: 1 };
  if (!Object.keys(v).length) v.hp = 1;
  return v;
}

function updateValue(g: Rng, forC: boolean): { [k: string]: GVal } {
  const out: { [k: string]: GVal } = {};
  const n = 1 + g.int(3);
  for (let i = 0; i < n; i++) {
    let piece: { [k: string]: GVal };
    switch (g.int(10)) {
      case 0: piece = { pos: { x: num(g, forC) } }; break;
      case 1: piece = { pos: { y: num(g, forC) } }; break;
      case 2: piece = { hp: g.int(1000) }; break;
      case 3: piece = { tags: arr(g, forC) }; break;
      case 4: piece = { meta: { a: { b: scalar(g, forC) } } }; break;
      case 5: piece = { meta: scalar(g, forC) }; break; // a scalar where a map was
      case 6: piece = { pos: { x: { deep: scalar(g, forC) } } }; break; // a map where a scalar was
      case 7: piece = g.chance(0.5) ? { "dot.key": scalar(g, forC) } : { "｡": { "🎲": scalar(g, forC) }, "🎲": num(g, forC) }; break;
      case 8: piece = { big: scalar(g, forC) }; break;
      default: piece = { score: num(g, forC), note: null }; break;
    }
    deepMerge(out, piece);
  }
  return out;
}

function isMap(v: unknown): v is { [k: string]: GVal } {
  return typeof v === "object" && v !== null && !Array.isArray(v) && !(v instanceof FloatInt) && !(v instanceof Uint8Array) && !(v instanceof Date);
}

function deepMerge(into: { [k: string]: GVal }, from: { [k: string]: GVal }): void {
  for (const [k, v] of Object.entries(from)) {
    const cur = into[k];
    if (isMap(cur) && isMap(v) && Object.keys(v).length) deepMerge(cur, v);
    else into[k] = v;
  }
}

/** The JS value of a generated value (a FloatInt is a number). */
function jsValue(v: GVal): Value {
  if (v instanceof FloatInt) return v.v;
  if (Array.isArray(v)) return v.map(jsValue);
  if (isMap(v)) return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, jsValue(x)]));
  return v as Value;
}

/** C's JSON of a generated value: int64 as digits, a FloatInt as `4.0`. */
function cJson(v: GVal): string {
  if (v instanceof FloatInt) return `${v.v}.0`;
  if (typeof v === "bigint") return v.toString();
  if (Array.isArray(v)) return `[${v.map(cJson).join(",")}]`;
  if (isMap(v)) return `{${Object.entries(v).map(([k, x]) => `${JSON.stringify(k)}:${cJson(x)}`).join(",")}}`;
  return JSON.stringify(v);
}

/** The leaves an input writes (docs/crdt.md, "Registers"), independently of
 *  src/: nested non-empty maps split, an empty map a map leaf, the rest
 *  (arrays whole) value leaves.  path JSON -> canonical value or "{}". */
function expectedLeaves(v: { [k: string]: GVal }, prefix: string[] = [], out = new Map<string, string>()): Map<string, string> {
  for (const [k, x] of Object.entries(v)) {
    const p = [...prefix, k];
    if (isMap(x)) {
      if (Object.keys(x).length) expectedLeaves(x, p, out);
      else out.set(JSON.stringify(p), "{}");
    } else out.set(JSON.stringify(p), canon(jsValue(x)));
  }
  return out;
}

function leavesOf(regs: Reg[]): Map<string, string> {
  const m = new Map<string, string>();
  for (const r of regs) if (r.path) m.set(JSON.stringify(r.path), r.value === null ? "{}" : canon(decodeValue(hexBytes(r.value!))));
  return m;
}

function hexBytes(h: string): Uint8Array {
  return Uint8Array.from(h.match(/../g)!.map((x) => parseInt(x, 16)));
}

/** The order of ids and keys at every level: what canon() leaves out. */
function keyOrder(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(keyOrder);
  if (isMap(v)) return Object.entries(v).map(([k, x]) => [k, keyOrder(x)]);
  return null;
}

/* ------------------------------------------------------------ replicas */

interface JsRep {
  name: string;
  file: string;
  skew: number;
  /** Syncs server-to-client: receives everything, refuses local writes. */
  readOnly: boolean;
  ds: CrdtdbDataStore | null;
  online: boolean;
  idHex: string;
  lastOwn: bigint;
  errors: string[];
}

interface CRep {
  name: string;
  dir: string;
  idHex: string;
  lastOwn: bigint;
}

function jsRegs(ds: CrdtdbDataStore): Reg[] {
  const out: Reg[] = [];
  for (const coll of COLLS)
    for (const id of IDS) {
      const r = ds.replica.stored(coll, id);
      if (!r) continue;
      if (r.base) out.push({ coll, id, path: null, kind: r.base.kind, hlc: r.base.hlc, origin: toHex(r.base.origin) });
      for (const l of r.leaves)
        out.push({ coll, id, path: [...l.path], hlc: l.hlc, origin: toHex(l.origin), value: l.vbuf ? toHexStr(valueBytes(l)!) : null });
    }
  return out;
}

/** Every register of a JS replica, whatever the ids. */
function jsRegsAll(ds: CrdtdbDataStore): Reg[] {
  const out: Reg[] = [];
  for (const coll of COLLS)
    for (const rec of ds.replica.list(coll, () => true)) {
      const id = rec.id as string;
      const r = ds.replica.stored(coll, id)!;
      if (r.base) out.push({ coll, id, path: null, kind: r.base.kind, hlc: r.base.hlc, origin: toHex(r.base.origin) });
      for (const l of r.leaves)
        out.push({ coll, id, path: [...l.path], hlc: l.hlc, origin: toHex(l.origin), value: l.vbuf ? toHexStr(valueBytes(l)!) : null });
    }
  return out;
}

function run(bin: string, dir: string, args: string[]): { status: number | null; stdout: Buffer; stderr: string } {
  const r = spawnSync(bin, ["-d", dir, ...args], { timeout: 30_000, maxBuffer: 1 << 28 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr.toString() };
}

/** Every live register of a C environment's database, from `crdtdb export`. */
async function cRegs(dir: string): Promise<Reg[]> {
  const r = run(crdtdbBin(), dir, ["export", DB, "-o", "-"]);
  if (r.status !== 0) throw new Error(`crdtdb export failed: ${r.stderr}`);
  const data = new Uint8Array(r.stdout);
  const out: Reg[] = [];
  for (let off = 0; off < data.length;) {
    const len = deltaFrame(data.subarray(off)).frameLen;
    const d = await decodeDelta(data.slice(off, off + len));
    off += len;
    for (const rec of d.records) {
      if (rec.base) out.push({ coll: rec.coll, id: rec.id, path: null, kind: rec.base.kind, hlc: rec.base.hlc, origin: toHex(rec.base.origin) });
      for (const f of rec.fields)
        out.push({ coll: rec.coll, id: rec.id, path: [...f.path], hlc: f.hlc, origin: toHex(f.origin), value: f.vbuf ? toHexStr(valueBytes(f)!) : null });
    }
  }
  return out;
}

const maxHlc = (regs: Reg[]): bigint => regs.reduce((m, r) => (r.hlc > m ? r.hlc : m), 0n);

/**
 * Checks the registers one operation wrote and feeds them to the model.
 * `own` are the writer's registers newer than its previous write.
 */
function checkOp(what: string, op: "add" | "update" | "remove", input: { [k: string]: GVal } | null, coll: string, id: string,
  own: Reg[], seenBefore: bigint, wallAtLeast: number, model: Model): bigint | null {
  if (!own.length) {
    // a remove of a record not visible there, or an update refused (not found)
    assert.ok(op !== "add", `${what}: an add wrote nothing`);
    return null;
  }
  for (const r of own) assert.ok(r.coll === coll && r.id === id, `${what}: wrote outside its record: ${regString(r)}`);
  const s = own[0]!.hlc;
  assert.ok(own.every((r) => r.hlc === s), `${what}: one operation, one stamp: ${own.map(regString).join("; ")}`);
  assert.ok(s > seenBefore, `${what}: stamp ${s} not newer than ${seenBefore}, already held`);
  assert.ok(hlcMs(s) >= wallAtLeast, `${what}: stamp ${hlcMs(s)} ms behind the writer's wall clock ${wallAtLeast}`);
  const base = own.filter((r) => r.path === null);
  if (op === "add") {
    assert.equal(base.length, 1, `${what}: an add writes the base`);
    assert.equal(base[0]!.kind, 1);
    assert.deepEqual(leavesOf(own), expectedLeaves(input!), `${what}: the add's leaves`);
  } else if (op === "update") {
    assert.equal(base.length, 0, `${what}: an update writes no base`);
    assert.deepEqual(leavesOf(own), expectedLeaves(input!), `${what}: the update's leaves`);
  } else {
    assert.equal(own.length, 1, `${what}: a remove writes only the base`);
    assert.equal(base[0]?.kind, 2);
  }
  for (const r of own) model.write(r);
  return s;
}

/* ------------------------------------------------------------ the run */

async function scenario(seed: number): Promise<void> {
  const g = new Rng(seed);
  // collection draws from its own stream: the rest of a seed's schedule is
  // the same whether it collects or not
  const gc = new Rng(seed ^ 0x5bd1e995);
  const env = process.env, agedAsked = env.CONVERGE_AGED === "1";
  const collecting = agedAsked || (env.CONVERGE_COLLECT ? env.CONVERGE_COLLECT !== "0" : gc.chance(0.5));
  const serverCollects = agedAsked || (collecting && gc.chance(0.5));
  // An age limit leaves silent peers out of the horizon: they resync when
  // they return and may lose writes older than it (docs/crdt.md, "The
  // cost"), so the model no longer says exactly what shows; what is still
  // checked is that replicas converge and nothing removed comes back.
  const AGE = "1500ms";
  const aged = agedAsked || (serverCollects && env.CONVERGE_AGED !== "0" && gc.chance(0.4));
  // the server's stop: half the seeds kill it (SIGKILL) with deltas maybe
  // in flight, some sent early (docs/operations.md, "Early relay") and not
  // yet stored; from a stream of its own too
  const killed = new Rng(seed ^ 0x2545f491).chance(0.5);
  const tmp = tempDir("crdtdb-conv-");
  const bin = crdtdbBin();
  const srvDir = join(tmp.path, "server");
  cli(srvDir, "init");
  // without --max-peer-age, collection changes nothing any replica shows
  // (docs/crdt.md, "Collecting tombstones")
  const srvArgs = ["--collections", COLLS.join(","), ...(serverCollects ? ["--collect-every", "1"] : []), ...(aged ? ["--max-peer-age", AGE] : [])];
  let srv: Server | null = await serve(srvDir, srvArgs);
  const port = srv.port;
  const url = srv.url;
  const model = new Model();
  const log: string[] = [];
  const jsReps: JsRep[] = [];
  const cReps: CRep[] = [];
  let failed = false;
  const stats = { drops: 0, jsOps: 0, cOps: 0, cSyncs: 0, cSyncFails: 0, offline: 0, restarts: 0, serverRestarts: 0, noops: 0, collects: 0, collected: 0, packed: 0, resyncs: 0 };

  const open = async (r: JsRep): Promise<void> => {
    r.ds = await CrdtdbDataStore.open({
      dbId: DB, collections: COLLS, backend: new FileBackend(r.file),
      now: r.skew ? () => Date.now() + r.skew : undefined,
      sync: {
        url, socket: nodeSocket(), minBackoffMs: 30, maxBackoffMs: 250, mode: r.readOnly ? "server-to-client" : "two-way",
        onEvent: (e: SessionEvent) => {
          if (e.type === "error") r.errors.push(`${e.code}${e.fatal ? " (fatal)" : ""}: ${e.message}`);
          else if (e.type === "resync") { stats.resyncs++; log.push(`${r.name}: resync from the server (stamp ${e.stamp})`); }
        },
      },
    });
    if (!r.online) r.ds.sync!.stop();
    r.idHex = r.ds.replica.idHex;
  };

  try {
    for (let i = 0; i < 5; i++) {
      const r: JsRep = { name: i === 4 ? "js4-ro" : `js${i}`, file: join(tmp.path, `js${i}.crdtdb`), skew: i === 2 ? SKEW_MS : i === 3 ? SLOW_MS : 0, readOnly: i === 4, ds: null, online: true, idHex: "", lastOwn: 0n, errors: [] };
      await open(r);
      jsReps.push(r);
    }
    for (let i = 0; i < 2; i++) {
      const dir = join(tmp.path, `c${i}`);
      cli(dir, "init");
      cli(dir, "create", DB, "--collections", COLLS.join(","));
      cReps.push({ name: `c${i}`, dir, idHex: cli(dir, "id").trim(), lastOwn: 0n });
    }
    // Every writer is a peer the server counts before the schedule starts:
    // a replica it never heard from does not hold its collection back, and
    // loses to the resync its offline writes older than what the server
    // collected meanwhile (docs/crdt.md, "The cost"), which the model does
    // not follow (found by a campaign: seed 796730 at 300 steps).
    for (const c of cReps) {
      const r = run(bin, c.dir, ["sync", url, "--db", DB, "--timeout", "15"]);
      if (r.status !== 0) throw new Error(`${c.name}: first crdtdb sync failed: ${r.stderr}`);
    }
    const known = (): string => run(bin, srvDir, ["peers", DB]).stdout.toString();
    await until(() => jsReps.every((r) => r.readOnly || known().includes(r.idHex)),
      "the server counts every two-way JS replica", 10_000);

    const cSync = (c: CRep, must: boolean): boolean => {
      const r = run(bin, c.dir, ["sync", url, "--db", DB, "--timeout", "15"]);
      stats.cSyncs++;
      if (r.status !== 0) {
        stats.cSyncFails++;
        if (must) throw new Error(`${c.name}: crdtdb sync failed: ${r.stderr}`);
        log.push(`${c.name} sync failed (server ${srv ? "up" : "down"}): ${r.stderr.trim().split("\n").pop()}`);
        return false;
      }
      return true;
    };

    /** One write by a JS replica, checked and fed to the model. */
    const jsOp = async (r: JsRep, tag: string, coll0?: string, id0?: string): Promise<void> => {
      if (!r.ds) return;
      const coll = coll0 ?? (g.chance(0.75) ? "Items" : "Boards");
      const id = id0 ?? g.pick(IDS);
      const kind = g.pick(["add", "add", "update", "update", "update", "remove"] as const);
      const input = kind === "add" ? addValue(g, false) : kind === "update" ? updateValue(g, false) : null;
      const what = `${tag} ${r.name} ${kind} ${coll}/${id}`;
      const ds = r.ds;
      if (r.readOnly) {
        const call = kind === "add" ? ds.add(coll, id, jsValue(input!) as Record<string, Value>)
          : kind === "update" ? ds.update(coll, id, jsValue(input!) as object) : ds.remove(coll, id);
        await assert.rejects(call, { message: "Read only access" }, `${what}: a server-to-client copy refuses writes`);
        assert.deepEqual(jsRegs(ds).filter((x) => x.origin === r.idHex), [], `${what}: a read-only copy wrote`);
        log.push(`${what}: refused (read only)`);
        return;
      }
      const seenBefore = maxHlc(jsRegs(ds));
      const wall = Date.now() + r.skew;
      try {
        if (kind === "add") await ds.add(coll, id, jsValue(input!) as Record<string, Value>);
        else if (kind === "update") await ds.update(coll, id, jsValue(input!) as object);
        else await ds.remove(coll, id);
      } catch (e) {
        if (!(kind === "update" && e instanceof CrdtdbError && e.code === "ENOTFOUND")) throw e;
      }
      // read at once, before any apply can install (installs follow backend I/O)
      const own = jsRegs(ds).filter((x) => x.origin === r.idHex && x.hlc > r.lastOwn);
      const s = checkOp(what, kind, input, coll, id, own, seenBefore, wall, model);
      if (s !== null) r.lastOwn = s; else stats.noops++;
      stats.jsOps++;
      log.push(`${what}${input ? " " + cJson(input) : ""}${s === null ? " (no-op)" : ` @${s}`}`);
    };

    const downAt = 10 + g.int(Math.max(1, STEPS - 30));
    const upAt = downAt + 3 + g.int(8);

    /** `crdtdb collect` on the server's environment (while it serves, or
     *  while it is down) or on a C replica's (a client collects with no
     *  age limit). */
    const collect = (step: number | string, server = gc.chance(0.7)): void => {
      const c = server ? { name: "server", dir: srvDir } : gc.pick(cReps);
      const r = run(bin, c.dir, ["collect", DB, ...(aged && c.dir === srvDir ? ["--max-peer-age", AGE] : [])]);
      if (r.status !== 0) throw new Error(`step ${step}: crdtdb collect on ${c.name} failed: ${r.stderr}`);
      const out = JSON.parse(r.stdout.toString()) as { records: number; floor: number; packed: number };
      stats.collects++;
      stats.collected += out.records;
      stats.packed += out.packed;
      log.push(`step ${step}: ${c.name} collected ${out.records} record(s), floor ${out.floor}, packed ${out.packed}`);
    };
    if (serverCollects) log.push(`the server collects every second${aged ? `, leaving out peers silent for ${AGE}` : ""}`);

    for (let step = 0; step < STEPS; step++) {
      if (collecting && gc.chance(0.08)) collect(step);
      if (step === downAt && srv) {
        await (killed ? ended(srv.proc, "SIGKILL") : srv.stop());
        srv = null;
        log.push(`step ${step}: server ${killed ? "killed (SIGKILL)" : "stopped"}`);
      }
      if (step === upAt && !srv) {
        srv = await serve(srvDir, srvArgs, port);
        stats.serverRestarts++;
        log.push(`step ${step}: server restarted`);
      }
      const roll = g.next();
      if (roll < 0.38) {
        // a JS write
        await jsOp(g.pick(jsReps), `step ${step}`);
      } else if (roll < 0.45) {
        // a burst: every open JS replica writes at once (stamps in one millisecond, ties broken by the key)
        const coll = g.chance(0.5) ? "Items" : "Boards", id = g.pick(IDS);
        const ops = jsReps.filter((r) => r.ds).map((r) => jsOp(r, `step ${step} burst`, coll, id));
        await Promise.all(ops);
      } else if (roll < 0.48) {
        // the network drops a JS replica's connection (no close handshake); it reconnects by itself
        const r = g.pick(jsReps);
        const ws = r.ds ? (r.ds.sync as unknown as { ws: { terminate?: () => void } | null }).ws : null;
        ws?.terminate?.();
        stats.drops++;
        log.push(`step ${step}: ${r.name} connection dropped`);
      } else if (roll < 0.7) {
        // a C write, then maybe a sync
        const c = g.pick(cReps);
        const coll = g.chance(0.75) ? "Items" : "Boards";
        const id = g.pick(IDS);
        const kind = g.pick(["add", "add", "update", "update", "update", "remove"] as const);
        const input = kind === "add" ? addValue(g, true) : kind === "update" ? updateValue(g, true) : null;
        const what = `step ${step} ${c.name} ${kind} ${coll}/${id}`;
        const wall = Date.now();
        const res = run(bin, c.dir, input ? [kind, DB, coll, id, cJson(input)] : [kind, DB, coll, id]);
        if (res.status !== 0 && !(kind === "update" && /not found/.test(res.stderr))) throw new Error(`${what}: ${res.stderr}`);
        const regs = await cRegs(c.dir);
        const own = regs.filter((x) => x.origin === c.idHex && x.hlc > c.lastOwn);
        const seenBefore = maxHlc(regs.filter((x) => !own.includes(x)));
        const s = checkOp(what, kind, input, coll, id, own, seenBefore, wall, model);
        if (s !== null) c.lastOwn = s; else stats.noops++;
        stats.cOps++;
        log.push(`${what}${input ? " " + cJson(input) : ""}${s === null ? " (no-op)" : ` @${s}`}`);
        if (g.chance(0.4)) cSync(c, false);
      } else if (roll < 0.8) {
        const c = g.pick(cReps);
        cSync(c, false); // fails at once while the server is down
        log.push(`step ${step}: ${c.name} sync`);
      } else if (roll < 0.87) {
        const r = g.pick(jsReps);
        if (!r.ds) continue;
        if (r.online) { r.ds.sync!.stop(); stats.offline++; } else r.ds.sync!.start();
        r.online = !r.online;
        log.push(`step ${step}: ${r.name} ${r.online ? "online" : "offline"}`);
      } else if (roll < 0.91) {
        const r = g.pick(jsReps);
        await r.ds!.close();
        r.ds = null;
        await sleep(g.int(30));
        await open(r);
        stats.restarts++;
        log.push(`step ${step}: ${r.name} restarted (${r.online ? "online" : "offline"})`);
      } else {
        await sleep(g.int(60));
      }
    }

    // everyone back, then sync until quiet
    if (!srv) { srv = await serve(srvDir, srvArgs, port); stats.serverRestarts++; }
    for (const r of jsReps) if (!r.online) { r.ds!.sync!.start(); r.online = true; }

    const cQuery = (dir: string, coll: string): string => {
      const r = run(bin, dir, ["query", DB, coll]);
      if (r.status !== 0) throw new Error(`crdtdb query failed: ${r.stderr}`);
      return r.stdout.toString().trim();
    };
    /** What each replica shows, and the registers it holds: quiet means
     *  both agree everywhere (a removed record hides registers that are
     *  still travelling, so the visible state alone is not enough). */
    const snapshot = async (): Promise<{ names: string[]; states: string[]; regs: string[]; shown: Set<string> }> => {
      const names: string[] = [], states: string[] = [], regs: string[] = [];
      const shown = new Set<string>(); // the records the first replica shows
      for (const r of jsReps) {
        names.push(r.name);
        const parts: string[] = [];
        for (const coll of COLLS) {
          const recs = await r.ds!.query(coll, {});
          if (r === jsReps[0]) for (const rec of recs) shown.add(`${coll}/${rec.id as string}`);
          parts.push(canon(recs));
        }
        states.push(parts.join("\n"));
        regs.push(jsRegs(r.ds!).map(regString).sort().join("\n"));
      }
      for (const c of [...cReps, { name: "server", dir: srvDir }]) {
        names.push(c.name);
        states.push(COLLS.map((coll) => canon(parseJsonExact(cQuery(c.dir, coll)))).join("\n"));
        regs.push((await cRegs(c.dir)).map(regString).sort().join("\n"));
      }
      return { names, states, regs, shown };
    };
    // With collection, a removed record's registers (its remove, the dead
    // leaves it holds) may be gone from some replicas and not from others,
    // and a leaf under a remove arriving after the record was collected is
    // held alone: only the registers of shown records must agree (those the
    // model shows; with an age limit, those the replicas show).
    const modelShown = new Set(COLLS.flatMap((coll) => [...model.visible(coll).keys()].map((id) => `${coll}/${id}`)));
    const recordOf = (line: string): string => line.slice(0, line.indexOf(" "));
    const shownRegs = (regs: string, shown: Set<string>): string =>
      collecting ? regs.split("\n").filter((l) => shown.has(recordOf(l))).join("\n") : regs;
    const quiet = (s: { states: string[]; regs: string[]; shown: Set<string> }): boolean => {
      const shown = aged ? s.shown : modelShown;
      return s.states.every((x) => x === s.states[0]) && s.regs.every((x) => shownRegs(x, shown) === shownRegs(s.regs[0]!, shown));
    };

    const deadline = Date.now() + 30_000;
    let snap = await snapshot();
    for (let round = 0; ; round++) {
      // the JS replicas have pushed what they hold (or the time is up), then the C replicas sync
      await until(() => jsReps.every((r) => r.ds!.sync!.status.state === "synced"), "the JS replicas synced", 10_000).catch(() => undefined);
      for (const c of [cReps[0]!, cReps[1]!, cReps[0]!]) cSync(c, true);
      // once everyone has synced, what was removed is held everywhere: the
      // server collects it while they are connected, and a C replica too
      if (collecting && round < 2) { collect(`final ${round}`, true); collect(`final ${round}`, false); }
      await sleep(150);
      snap = await snapshot();
      if (quiet(snap) || Date.now() > deadline) break;
    }
    const diff = snap.names.map((n, i) => `--- ${n}\n${snap.states[i]}`).join("\n");
    assert.ok(snap.states.every((s) => s === snap.states[0]),
      `seed ${seed}: replicas differ after syncing until quiet:\n${diff}\n--- log\n${log.join("\n")}`);
    // no record whose last add or remove was a remove shows (again)
    const back = [...snap.shown].filter((k) => !modelShown.has(k));
    assert.deepEqual(back, [], `seed ${seed}: removed records show\n--- log\n${log.join("\n")}`);

    // the C replicas and the server: byte-identical JSON
    for (const coll of COLLS) {
      const texts = [...cReps.map((c) => c.dir), srvDir].map((d) => cQuery(d, coll));
      assert.ok(texts.every((t) => t === texts[0]), `seed ${seed}: crdtdb query ${coll} differs between C replicas:\n${texts.join("\n")}`);
    }

    // every JS replica renders keys and ids in the C order (bytewise UTF-8, docs/crdt.md rule 5)
    for (const coll of COLLS) {
      const cOrder = keyOrder(parseJsonExact(cQuery(cReps[0]!.dir, coll)));
      for (const r of jsReps)
        assert.deepEqual(keyOrder(await r.ds!.query(coll, {})), cOrder, `seed ${seed}: ${r.name} orders ${coll}'s ids or keys unlike C`);
    }

    // the model of docs/crdt.md
    const modelState = COLLS.map((coll) => {
      const m = model.visible(coll);
      const ids = [...m.keys()].sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
      return canon(ids.map((id) => ({ ...m.get(id)!, id })));
    }).join("\n");
    if (!aged) assert.equal(snap.states[0], modelState, `seed ${seed}: the replicas' state is not the model's\n--- log\n${log.join("\n")}`);
    const live = model.liveRegisters();
    const held: [string, string[]][] = [
      ...jsReps.map((r): [string, string[]] => [r.name, jsRegs(r.ds!).map(regString).sort()]),
      ...await Promise.all([...cReps, { name: "server", dir: srvDir }].map(async (c): Promise<[string, string[]]> => [c.name, (await cRegs(c.dir)).map(regString).sort()])),
    ];
    const shownHeld = (l: string[]): string[] => l.filter((x) => snap.shown.has(recordOf(x)));
    for (const [name, regs] of held) {
      if (aged) { // writes older than the horizon may be lost: only agreement
        assert.deepEqual(shownHeld(regs), shownHeld(held[0]![1]), `seed ${seed}: ${name} and ${held[0]![0]} hold different registers of shown records`);
        continue;
      }
      if (!collecting) {
        assert.deepEqual(regs, live, `seed ${seed}: ${name}'s registers are not the model's live registers`);
        continue;
      }
      // what is shown: exactly the model's registers; what is removed: some
      // of them (collected with the record), and
      // nothing the model does not hold live (no removed record came back)
      const shown = (l: string[]): string[] => l.filter((x) => modelShown.has(recordOf(x)));
      assert.deepEqual(shown(regs), shown(live), `seed ${seed}: ${name}'s registers of shown records are not the model's`);
      const liveSet = new Set(live);
      const extra = regs.filter((x) => !liveSet.has(x));
      assert.deepEqual(extra, [], `seed ${seed}: ${name} holds registers the model has dead\n--- log\n${log.join("\n")}`);
    }

    // nothing refused along the way
    for (const r of jsReps) {
      const bad = r.errors.filter((e) => !/^E(IO|BUSY)\b/.test(e));
      assert.deepEqual(bad, [], `seed ${seed}: ${r.name} had errors`);
    }
    const visible = COLLS.reduce((n, coll) => n + model.visible(coll).size, 0);
    const mode = !collecting ? "" : serverCollects ? (aged ? ", the server collecting with an age limit" : ", the server collecting") : ", collecting";
    console.log(`# seed ${seed}: ${STEPS} steps${mode}, ${JSON.stringify(stats)}; converged: ${visible} visible records, ${live.length} live registers`);
  } catch (e) {
    console.log(`# seed ${seed} FAILED (replay: CONVERGE_SEED=${seed}${process.env.CONVERGE_STEPS ? ` CONVERGE_STEPS=${STEPS}` : ""})`);
    if (srv) console.log(`# server log:\n${srv.log().split("\n").slice(-20).join("\n")}`);
    console.log(`# schedule:\n${log.join("\n")}`);
    failed = true;
    try { // where each side's watermarks stand, for the server's log (crdtdb export --since N)
      const srvId = cli(srvDir, "id").trim();
      for (const r of jsReps) {
        if (!r.ds) continue;
        const p = r.ds.replica.peer(srvId);
        console.log(`# ${r.name} ${r.idHex.slice(0, 16)}: received ${p.received}, acked ${p.acked}, own seq ${r.ds.replica.seq}, ${r.ds.sync?.status.state}`);
      }
      console.log(`# server peers:\n${run(bin, srvDir, ["peers", DB]).stdout.toString()}`);
    } catch { /* the failure above is what counts */ }
    throw e;
  } finally {
    for (const r of jsReps) await r.ds?.close().catch(() => undefined);
    await srv?.stop();
    if (failed && process.env.CONVERGE_KEEP) console.log(`# kept ${tmp.path}`); // CONVERGE_KEEP=1: the directories stay
    else tmp.remove();
  }
}

for (const [k, seed] of seeds.entries()) {
  test(`convergence of JS and C replicas on one crdtdb serve, seed ${seed}${RUNS > 1 ? ` (run ${k + 1})` : ""}`, { timeout: 60_000 }, async () => {
    console.log(`# seed ${seed} (replay: CONVERGE_SEED=${seed})`);
    await scenario(seed);
  });
}

test("the model's canonical form and exact JSON parse (self-check)", () => {
  assert.equal(canon(parseJsonExact('{"b":2.0,"a":9007199254740993,"c":[1,2.5,null,"x"]}')), canon({ a: 2n ** 53n + 1n, b: 2, c: [1, 2.5, null, "x"] }));
  const m = new Model();
  const A = "aa".repeat(32), B = "bb".repeat(32);
  m.write({ coll: "Items", id: "x", path: null, kind: 1, hlc: 10n, origin: A });
  m.write({ coll: "Items", id: "x", path: ["a"], hlc: 10n, origin: A, value: "05" });
  m.write({ coll: "Items", id: "x", path: ["a", "b"], hlc: 12n, origin: B, value: "06" }); // rule 4: a reads as a map
  m.write({ coll: "Items", id: "x", path: ["c"], hlc: 9n, origin: B, value: "07" }); // older than the base: dead
  m.write({ coll: "Items", id: "y", path: null, kind: 2, hlc: 20n, origin: A });
  m.write({ coll: "Items", id: "y", path: ["z"], hlc: 21n, origin: B, value: "01" }); // hidden by the remove
  assert.equal(canon(Object.fromEntries(m.visible("Items"))), canon({ x: { a: { b: 6 } } }));
  assert.equal(m.liveRegisters().length, 5);
  assert.ok(cmpStamp({ hlc: 1n, origin: B }, { hlc: 1n, origin: A }) > 0);
});

test("bulk: megabytes each way between JS and C (deltas split at the size limit, frames spanning WebSocket messages) end equal", { timeout: 60_000 }, async () => {
  const tmp = tempDir("crdtdb-conv-bulk-");
  const srvDir = join(tmp.path, "server");
  cli(srvDir, "init");
  const srv = await serve(srvDir, ["--collections", COLLS.join(",")]);
  const cDir = join(tmp.path, "c");
  cli(cDir, "init");
  cli(cDir, "create", DB, "--collections", COLLS.join(","));
  const bin = crdtdbBin();
  const errors: string[] = [];
  const open = () => CrdtdbDataStore.open({
    dbId: DB, collections: COLLS, backend: new FileBackend(join(tmp.path, "js.crdtdb")),
    sync: { url: srv.url, socket: nodeSocket(), minBackoffMs: 30, maxBackoffMs: 250, onEvent: (e) => { if (e.type === "error") errors.push(`${e.code}: ${e.message}`); } },
  });
  let js = await open();
  try {
    const N = 1500;
    const pad = (i: number, n: number): string => `${i}:`.padEnd(n, String.fromCharCode(97 + (i % 26)));
    // JS -> C: ~4.6 MB in one commit, over the 4 MiB delta limit
    const items: Record<string, Record<string, Value>> = {};
    for (let i = 0; i < N; i++) items[`j${String(i).padStart(5, "0")}`] = { text: pad(i, 3000), n: i, big: 2n ** 60n + BigInt(i), pos: { x: i + 0.5 } };
    await js.addAll("Items", items);
    await until(() => js.sync!.status.state === "synced", "the JS replica synced", 30_000);
    const r1 = run(bin, cDir, ["sync", srv.url, "--db", DB, "--timeout", "30"]);
    assert.equal(r1.status, 0, r1.stderr);
    // C -> JS: ~3 MB (add-all takes at most 1 MiB of JSON at a time), to a
    // JS replica that is closed meanwhile and catches up on reopening
    await js.close();
    for (let k = 0; k < N; k += 300) {
      const cItems: Record<string, unknown> = {};
      for (let i = k; i < Math.min(N, k + 300); i++) cItems[`c${String(i).padStart(5, "0")}`] = { text: pad(i, 2000), f: 1.5 * i, tags: [i, "t"] };
      const add = spawnSync(bin, ["-d", cDir, "add-all", DB, "Boards", "-"], { input: JSON.stringify(cItems) });
      assert.equal(add.status, 0, add.stderr?.toString());
    }
    const r2 = run(bin, cDir, ["sync", srv.url, "--db", DB, "--timeout", "30"]);
    assert.equal(r2.status, 0, r2.stderr);
    js = await open();
    await until(async () => (await js.query("Boards", {})).length === N, "the C records at the JS replica", 30_000);
    for (const coll of COLLS) {
      const c = canon(parseJsonExact(run(bin, cDir, ["query", DB, coll]).stdout.toString()));
      assert.equal(canon(await js.query(coll, {})), c, `${coll}: the JS and C copies differ`);
    }
    const regsJ = jsRegsAll(js).map(regString).sort(), regsC = (await cRegs(cDir)).map(regString).sort();
    assert.equal(regsJ.length, regsC.length);
    assert.deepEqual(regsJ, regsC, "the JS and C replicas hold different registers");
    assert.deepEqual(errors, []);
  } finally {
    await js.close().catch(() => undefined);
    await srv.stop();
    tmp.remove();
  }
});
