/**
 * A server killed under load, early relay on (the default): JS writers
 * stream adds to one `crdtdb serve` while JS watchers and a C watcher
 * (`crdtdb sync --watch`) sit caught up, so the server sends them each
 * write from inside its transaction, before the commit
 * (docs/operations.md, "Early relay").  The server is killed with SIGKILL
 * at random moments (seeded; CRASH_SEED=n replays one) and restarted on
 * the same directory and port, several times.  A kill between a write's
 * early relay and its commit loses the write at the server while watchers
 * hold it; its writer was never acknowledged and sends it again.
 *
 * Checked at the end, once everyone is quiet: every write of every writer
 * is on every replica and on the server, with its value, and nothing
 * else is.  What it guards: a restarted server numbers its writes past
 * every sequence it may have sent before the crash (storage/txn.c's
 * reservation).  Were it to number a new write with a lost one's
 * sequence, the watchers that hold the lost one would ask from past it and
 * never get the new write: a record missing for good.
 */
import test from "node:test";
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { join } from "node:path";
import { CrdtdbDataStore } from "../src/index.js";
import { nodeSocket } from "../src/node.js";
import { cli, crdtdbBin, mulberry32, serve, sleep, tempDir, until, type Server } from "./helpers.js";

const DB = "crash";
const COLL = "Items";
const WRITERS = 2;
const WATCHERS = 2;
const KILLS = 6;

async function replica(url: string): Promise<CrdtdbDataStore> {
  return CrdtdbDataStore.open({
    dbId: DB, collections: [COLL],
    sync: { url, socket: nodeSocket(), minBackoffMs: 20, maxBackoffMs: 200 },
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

test(`a server killed mid-stream, early relay on: every write reaches every replica (seed ${seed})`, { timeout: 90_000 }, async () => {
  const g = mulberry32(seed);
  const d = tempDir("crdtdb-crash-");
  const srvDir = join(d.path, "server"), wDir = join(d.path, "cwatch");
  cli(srvDir, "init");
  cli(wDir, "init");
  cli(wDir, "create", DB, "--collections", COLL);
  const args = ["--collections", COLL];
  let srv: Server = await serve(srvDir, args);
  const port = srv.port;
  const reps: CrdtdbDataStore[] = [];
  let cw: ChildProcess | null = null;
  let cwErr = "";
  try {
    for (let i = 0; i < WRITERS + WATCHERS; i++) {
      const ds = await replica(srv.url);
      await ds.sync!.whenSynced();
      reps.push(ds);
    }
    cw = spawn(crdtdbBin(), ["-d", wDir, "sync", srv.url, "--db", DB, "--watch"], { stdio: ["ignore", "ignore", "pipe"] });
    cw.stderr!.on("data", (b: Buffer) => { cwErr = (cwErr + b.toString()).slice(-4000); });

    // the writers: adds as fast as their commits go, a turn of the loop
    // now and then so that sync runs; each keeps what it wrote
    const want = new Map<string, string>();
    let writing = true;
    const errors: string[] = [];
    const writer = async (w: number): Promise<void> => {
      const ds = reps[w]!;
      for (let n = 0; writing; n++) {
        const id = `w${w}-${String(n).padStart(5, "0")}`;
        try {
          await ds.add(COLL, id, { by: w, n, pad: "x".repeat(n % 40) });
          want.set(id, `${w}:${n}`);
        } catch (e) {
          errors.push(`${id}: ${String(e)}`);
        }
        if (n % 8 === 7) await sleep(1);
      }
    };
    const writing$ = Promise.all(Array.from({ length: WRITERS }, (_, w) => writer(w)));

    // the kills: at random moments while the writes stream
    let early = 0;
    for (let k = 0; k < KILLS; k++) {
      await sleep(150 + Math.floor(g() * 350));
      early += await earlyCount(port);
      srv.proc.kill("SIGKILL");
      await new Promise<void>((res) => { if (srv.proc.exitCode !== null || srv.proc.signalCode) res(); else srv.proc.on("exit", () => res()); });
      await sleep(Math.floor(g() * 60));
      srv = await serve(srvDir, args, port);
    }
    await sleep(300);
    early += await earlyCount(port);
    writing = false;
    await writing$;
    assert.deepEqual(errors, [], "local writes do not fail while the server is down");
    assert.ok(want.size > 100, `the writers wrote ${want.size}`);

    // everyone ends with exactly the writes
    for (const [i, ds] of reps.entries())
      await until(async () => !missing(want, await shown(ds)), `JS replica ${i} to converge (${missing(want, await shown(ds))})`, 30_000);
    await until(() => !missing(want, shownC(srvDir)), `the server to hold every write (${missing(want, shownC(srvDir))})`, 30_000);
    await until(() => !missing(want, shownC(wDir)), `the C watcher to converge (${missing(want, shownC(wDir))}; ${cwErr})`, 30_000);
    assert.ok(early > 0, "the servers sent no write early: the test did not test early relay");
  } finally {
    cw?.kill("SIGTERM");
    for (const ds of reps) await ds.close().catch(() => undefined);
    await srv.stop();
    d.remove();
  }
});

/** The server's crdtdb_deltas_early_total (its /metrics; 0 if it cannot say). */
async function earlyCount(port: number): Promise<number> {
  try {
    const r = await fetch(`http://127.0.0.1:${port}/metrics`);
    const m = /^crdtdb_deltas_early_total (\d+)/m.exec(await r.text());
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}
