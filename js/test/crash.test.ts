/**
 * A server killed under load, early relay on (the default): JS writers
 * stream adds to one `crdtdb serve` (and `crdtdb add` to the environment
 * of a `crdtdb sync --watch`, which sends them on) while JS watchers and
 * that C client sit caught up, so the server sends them each write from
 * inside its transaction, before the commit
 * (docs/operations.md, "Early relay").  The server is killed with SIGKILL
 * at random moments (seeded; CRASH_SEED=n replays one) and restarted on
 * the same directory and port, several times.  A kill between a write's
 * early relay and its commit loses the write at the server while watchers
 * hold it; its writer was never acknowledged and sends it again.
 *
 * The same with two servers peered both ways (`--peer`), the writers and
 * a JS watcher on one, a JS watcher and the C client on the other, either
 * killed at random: a peer link's session takes writes early too.
 *
 * Whether a kill caught a write in flight (sent early, not yet stored)
 * depends on the disk (the window is the commit's flush): the test says
 * how many did, from the killed server's stored sequence and what its
 * replicas had received.
 *
 * Checked at the end, once everyone is quiet: every write of every writer
 * is on every replica and on every server, with its value, and nothing
 * else is.  What it guards: a restarted server numbers its writes past
 * every sequence it may have sent before the crash (storage/txn.c's
 * reservation).  Were it to number a new write with a lost one's
 * sequence, the watchers that hold the lost one would ask from past it and
 * never get the new write: a record missing for good.
 */
import test, { type TestContext } from "node:test";
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { join } from "node:path";
import { CrdtdbDataStore } from "../src/index.js";
import { nodeSocket } from "../src/node.js";
import { cli, crdtdbBin, ended, freePort, mulberry32, serve, sleep, tempDir, type Server } from "./helpers.js";

const DB = "crash";
const COLL = "Items";
const WRITERS = 2;
const WATCHERS = 2;
const KILLS = 6;
const C_BY = 9; /* the C writer's "by" */

async function replica(url: string): Promise<CrdtdbDataStore> {
  return CrdtdbDataStore.open({
    dbId: DB, collections: [COLL],
    sync: { url, socket: nodeSocket(), minBackoffMs: 20, maxBackoffMs: 200 },
  });
}

/** Runs the crdtdb command without blocking the loop; "" or what failed. */
function exec(args: string[]): Promise<string> {
  return new Promise((res) => {
    const p = spawn(crdtdbBin(), args, { stdio: ["ignore", "ignore", "pipe"] });
    let err = "";
    p.stderr!.on("data", (b: Buffer) => { err += b.toString(); });
    p.on("close", (code) => res(code === 0 ? "" : `exit ${String(code)}: ${err}`));
  });
}

/** id -> "by:n" of what a JS replica shows. */
async function shown(ds: CrdtdbDataStore): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for (const r of await ds.query(COLL, {})) out.set(String(r.id), `${String(r.by)}:${String(r.n)}`);
  return out;
}

/** The same of a C environment, by `crdtdb query` (it may be serving or watching). */
function shownC(dir: string): Map<string, string> {
  const out = new Map<string, string>();
  let rows: { id: string; by: number; n: number }[] = [];
  try {
    rows = JSON.parse(cli(dir, "query", DB, COLL)) as typeof rows;
  } catch (e) {
    if (!/not found|no such/i.test(String(e))) throw e; // not synced yet
  }
  for (const r of rows) out.set(r.id, `${r.by}:${r.n}`);
  return out;
}

function missing(want: Map<string, string>, got: Map<string, string>): string {
  const lack = [...want].filter(([k, v]) => got.get(k) !== v).map(([k]) => k);
  const extra = [...got.keys()].filter((k) => !want.has(k));
  return lack.length || extra.length ? `lacks ${lack.length} (${lack.slice(0, 5).join(" ")}), extra ${extra.length}` : "";
}

const seedEnv = process.env.CRASH_SEED;
const seed = seedEnv ? Number(seedEnv) : (Date.now() % 100000);

/** Polls until `diff` says nothing is missing; a timeout says what still is. */
async function converged(what: string, diff: () => string | Promise<string>, ms = 30_000): Promise<void> {
  const deadline = Date.now() + ms;
  for (;;) {
    const d = await diff();
    if (!d) return;
    if (Date.now() > deadline) throw new Error(`${what} did not converge: ${d}`);
    await sleep(50);
  }
}

/** One server, or two peered ones (0, where the writers are, and 1, where
 *  a JS watcher and the C client are), killed at random. */
async function scenario(t: TestContext, peered: boolean, runSeed: number): Promise<void> {
  const g = mulberry32(runSeed);
  const d = tempDir("crdtdb-crash-");
  const nsrv = peered ? 2 : 1;
  const srvs: Server[] = [];
  const reps: CrdtdbDataStore[] = [];
  const at: number[] = []; // the server each JS replica syncs with
  let cw: ChildProcess | null = null;
  let cwErr = "";
  let writing = true;
  let writing$: Promise<unknown> = Promise.resolve();
  try {
    const dirs = Array.from({ length: nsrv }, (_, i) => join(d.path, `server${i}`));
    const ports = await Promise.all(dirs.map(() => freePort()));
    const args = (i: number): string[] => ["--collections", COLL,
      ...(peered ? ["--peer", `ws://127.0.0.1:${ports[1 - i]!}`] : [])];
    const url = (i: number): string => `ws://127.0.0.1:${ports[i]!}`;
    const wDir = join(d.path, "cclient");
    for (const dir of dirs) cli(dir, "init");
    const ids = dirs.map((dir) => cli(dir, "id").trim());
    cli(wDir, "init");
    cli(wDir, "create", DB, "--collections", COLL);
    for (let i = 0; i < nsrv; i++) srvs.push(await serve(dirs[i]!, args(i), ports[i]));
    // the writers and the first watcher on server 0, the other watcher on the last
    for (let i = 0; i < WRITERS + WATCHERS; i++) {
      at.push(i <= WRITERS ? 0 : nsrv - 1);
      const ds = await replica(url(at[i]!));
      await ds.sync!.whenSynced();
      reps.push(ds);
    }
    cw = spawn(crdtdbBin(), ["-d", wDir, "sync", url(nsrv - 1), "--db", DB, "--watch"], { stdio: ["ignore", "ignore", "pipe"] });
    cw.stderr!.on("data", (b: Buffer) => { cwErr = (cwErr + b.toString()).slice(-4000); });

    // the writers: adds as fast as their commits go, a turn of the loop
    // now and then so that sync runs; what resolved is what they wrote
    const want = new Map<string, string>();
    const errors: string[] = [];
    let jsWrites = 0, cWrites = 0;
    const writer = async (w: number): Promise<void> => {
      const ds = reps[w]!;
      for (let n = 0; writing; n++) {
        const id = `w${w}-${String(n).padStart(5, "0")}`;
        try {
          await ds.add(COLL, id, { by: w, n, pad: "x".repeat(n % 40) });
        } catch (e) {
          errors.push(`${id}: ${String(e)}`);
          return;
        }
        want.set(id, `${w}:${n}`);
        jsWrites++;
        if (n % 8 === 7) await sleep(1);
      }
    };
    // and `crdtdb add` to the C client's environment, which its sync
    // process takes from there and sends on
    const cWriter = async (): Promise<void> => {
      for (let n = 0; writing; n++) {
        const id = `c-${String(n).padStart(5, "0")}`;
        const r = await exec(["-d", wDir, "add", DB, COLL, id, JSON.stringify({ by: C_BY, n, pad: "" })]);
        if (r) {
          errors.push(`${id}: ${r}`);
          return;
        }
        want.set(id, `${C_BY}:${n}`);
        cWrites++;
      }
    };
    writing$ = Promise.all([...Array.from({ length: WRITERS }, (_, w) => writer(w)), cWriter()]);

    // the kills: at random moments while the writes stream, of a random
    // server; counted when a replica of it had received more of its log
    // than it had stored (a write sent early, lost by the kill)
    let early = 0, caught = 0;
    for (let k = 0; k < KILLS; k++) {
      await sleep(150 + Math.floor(g() * 350));
      const i = Math.floor(g() * nsrv), srv = srvs[i]!;
      early += await earlyCount(ports[i]!);
      await ended(srv.proc, "SIGKILL");
      const stored = (JSON.parse(cli(dirs[i]!, "stats", DB)) as { seq: number }).seq;
      const got = Math.max(...reps.filter((_, r) => at[r] === i).map((ds) => ds.replica.peer(ids[i]!).received));
      if (got > stored) caught++;
      await sleep(Math.floor(g() * 60));
      srvs[i] = await serve(dirs[i]!, args(i), ports[i]);
    }
    // enough writes on both sides, however slow the machine
    const deadline = Date.now() + 20_000;
    while ((jsWrites < 100 || cWrites < 10) && !errors.length && Date.now() < deadline) await sleep(50);
    for (const port of ports) early += await earlyCount(port);
    writing = false;
    await writing$;
    assert.deepEqual(errors, [], "local writes do not fail while the server is down");
    assert.ok(jsWrites >= 100 && cWrites >= 10, `the JS writers wrote ${jsWrites}, the C one ${cWrites}`);
    t.diagnostic(`${KILLS} kills, ${caught} of them with a write sent early and not stored; ` +
      `${early} deltas sent early; ${jsWrites} JS and ${cWrites} C writes`);

    // everyone ends with exactly the writes (the C client's reconnect
    // backoff grows to 30 s while a server is down)
    for (const [i, ds] of reps.entries()) await converged(`JS replica ${i}`, async () => missing(want, await shown(ds)));
    for (const dir of dirs) await converged(dir, () => missing(want, shownC(dir)), 60_000);
    await converged("the C client", () => { const m = missing(want, shownC(wDir)); return m && `${m}; ${cwErr}`; }, 60_000);
    assert.ok(early > 0, "the servers sent no write early: the test did not test early relay");
  } finally {
    writing = false;
    await writing$.catch(() => undefined);
    if (cw) await ended(cw);
    for (const ds of reps) await ds.close().catch(() => undefined);
    for (const srv of srvs) await srv.stop();
    d.remove();
  }
}

test(`a server killed mid-stream, early relay on: every write reaches every replica (seed ${seed})`, { timeout: 180_000 }, async (t) => {
  await scenario(t, false, seed);
});

test(`two peered servers killed at random mid-stream: every write reaches every replica and both servers (seed ${seed})`, { timeout: 180_000 }, async (t) => {
  await scenario(t, true, seed);
});

/** The server's crdtdb_deltas_early_total (its /metrics; 0 if it cannot say). */
async function earlyCount(port: number): Promise<number> {
  try {
    const r = await fetch(`http://127.0.0.1:${port}/metrics`, { signal: AbortSignal.timeout(2000) });
    const m = /^crdtdb_deltas_early_total (\d+)/m.exec(await r.text());
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}
