// crdtdb's Node client against `crdtdb serve` (Release build) on 127.0.0.1: the same workload as
// /work/shared/peers/yjs and /work/shared/peers/tinybase (their bench.mjs), 16 clients in this process.
//   node js/bench/node.mjs [clients=16] [--only=fanout|sync] [--fresh-backend=memory|file]
// Prints one JSON line per test (bench: fanout_latency, fanout_throughput, initial_sync), then server.
//
// Data model: one database per room (the peers' Y.Doc / TinyBase room); a collection per table; a record per
// row; a field per cell.  setCell(table,row,field,v) = add(table,row,{field:v}) the first time, else
// update(table,row,{field:v}): one commit = one delta pushed to the server, which stores it and forwards it.
// Receivers listen with replica.onChange (every committed change, the record rendered on read()), the
// equivalent of TinyBase's cell listener / Yjs observeDeep.
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { cpuMs, loadClient, now, quantiles, sleep, startServer } from "./lib.mjs";

const args = process.argv.slice(2);
const opt = (k, d) => { const a = args.find((x) => x.startsWith(`--${k}=`)); return a ? a.slice(k.length + 3) : d; };
const nClients = +(args.find((a) => /^\d+$/.test(a)) ?? 16);
const only = opt("only", "all");
const freshBackend = opt("fresh-backend", "memory");
const { CrdtdbDataStore, nodeSocket, FileBackend } = await loadClient();
const COLLS = ["players", "tp", "big"];
const srv = await startServer(COLLS);
/** The main thread's CPU time, ms (10 ms ticks; Linux): what the clients' handling costs, without GC helper and
 *  compiler threads, which run beside it. */
function mainCpuMs() {
  try {
    const f = readFileSync(`/proc/self/task/${process.pid}/stat`, "utf8").split(") ")[1].split(" ");
    return (+f[11] + +f[12]) * 10;
  } catch { return NaN; }
}
const emit = (o) => console.log(JSON.stringify({ system: "crdtdb", ...o }));

async function client(dbId, backend) {
  const ds = await CrdtdbDataStore.open({
    dbId, collections: COLLS, ...(backend ? { backend } : {}),
    sync: { url: srv.url, socket: nodeSocket(), minBackoffMs: 50, maxBackoffMs: 1000 },
  });
  await Promise.race([ds.sync.whenSynced(), sleep(30000).then(() => { throw new Error("sync timeout"); })]);
  return ds;
}
/** Until the server holds every local write.  (Sync.whenSynced() resolves at once after a local write when the
 *  status was already "synced": the status is only re-evaluated when a message arrives, so it is not enough here;
 *  this reads the session's own test.) */
async function uploaded(ds, ms = 120000) {
  const t0 = now();
  while (!(ds.sync.session?.synced) && now() - t0 < ms) await sleep(2);
  return ds.sync.session?.synced === true;
}
/** setCell: add the row the first time, then update the field (one commit each, not awaited, as the peers' calls). */
function cellWriter(ds) {
  const made = new Set();
  const errors = [];
  return {
    errors,
    set(table, row, field, v) {
      const key = table + "/" + row;
      const p = made.has(key) ? ds.update(table, row, { [field]: v }) : (made.add(key), ds.add(table, row, { [field]: v }));
      p.catch((e) => errors.push(String(e)));
    },
  };
}

try {
  const room = "bench" + Date.now();
  const tJoin = now();
  const clients = [];
  if (only !== "sync") for (let i = 0; i < nClients; i++) clients.push(await client(room));
  const connectMs = now() - tJoin;

  if (only !== "sync") {
    const w = cellWriter(clients[0]);
    // 1. latency at a game-like rate: 1000 field writes/s for 3 s, each to one field (10 writes, then sleep 10 ms)
    {
      const lat = [];
      const byWin = Array.from({ length: 10 }, () => []); // by 300 writes: where in the run a tail happens
      const sent = new Map();
      for (let i = 1; i < nClients; i++)
        clients[i].replica.onChange((changes) => {
          const t = now();
          for (const c of changes) {
            if (c.coll !== "players" || !c.visible) continue;
            const v = c.read()?.x;
            const t0 = sent.get(v);
            if (t0 !== undefined) { lat.push(t - t0); byWin[Math.min(9, Math.floor((v - 1) / 300))].push(t - t0); }
          }
        });
      const ts = now(), c0 = cpuMs(), m0 = mainCpuMs(), s0 = srv.cpuMs();
      for (let i = 0; i < 3000; i++) {
        const v = i + 1;
        sent.set(v, now());
        w.set("players", "p" + (i % 64), "x", v);
        if (i % 10 === 9) await sleep(10);
      }
      const sendSecs = (now() - ts) / 1000;
      await sleep(1000);
      const cpu = { client_cpu_ms: Math.round(cpuMs() - c0), client_main_cpu_ms: mainCpuMs() - m0, server_cpu_ms: srv.cpuMs() - s0 };
      emit({ bench: "fanout_latency", clients: nClients, connect_ms: +connectMs.toFixed(0), rate_per_s: 1000,
        actual_send_rate_per_s: Math.round(3000 / sendSecs), delivered: lat.length, expected: 3000 * (nClients - 1),
        ...quantiles(lat), p99_by_300_writes: byWin.map((l) => quantiles(l).p99_ms), ...cpu, errors: w.errors.length });
    }
    // 2. throughput: 20k single-field writes as fast as possible (yield every 500), then a marker
    {
      const N = 20000, target = -1;
      let done = 0;
      const t0 = now(), c0 = cpuMs(), m0 = mainCpuMs(), s0 = srv.cpuMs();
      const p = new Promise((res) => {
        for (let i = 1; i < nClients; i++) {
          let got = false;
          clients[i].replica.onChange((changes) => {
            if (got) return;
            for (const c of changes)
              if (c.coll === "tp" && c.id === "last" && c.visible && c.read()?.v === target) {
                got = true;
                if (++done === nClients - 1) res();
                return;
              }
          });
        }
      });
      for (let i = 0; i < N; i++) {
        w.set("tp", "r" + (i % 1000), "v", i);
        if (i % 500 === 499) await sleep(0);
      }
      w.set("tp", "last", "v", target);
      const tSent = now();
      await Promise.race([p, sleep(120000)]);
      const dt = now() - t0;
      emit({ bench: "fanout_throughput", clients: nClients, writes: N, all_received: done === nClients - 1,
        local_write_ms: +(tSent - t0).toFixed(0), seconds: +(dt / 1000).toFixed(3), writes_per_s: Math.round(N / dt * 1000),
        field_deliveries_per_s: Math.round(N * (nClients - 1) / dt * 1000), client_cpu_ms: Math.round(cpuMs() - c0),
        client_main_cpu_ms: mainCpuMs() - m0, server_cpu_ms: srv.cpuMs() - s0, errors: w.errors.length });
    }
  }
  // 3. initial sync: a writer adds 10,000 records x 10 fields (100k fields) in one commit; after 2 s a fresh client joins
  if (only !== "fanout") {
    const r2 = room + "big";
    const s = await client(r2);
    const items = {};
    const t0 = now();
    for (let r = 0; r < 10000; r++) {
      const o = {};
      for (let c = 0; c < 10; c++) o["c" + c] = r * 10 + c;
      items["r" + r] = o;
    }
    await s.addAll("big", items);
    const tfill = now() - t0;
    const up = await uploaded(s);
    const tUp = now() - t0;
    await sleep(Math.max(0, 2000 - tUp));
    let backend, tmp;
    if (freshBackend === "file") { tmp = mkdtempSync(join(tmpdir(), "crdtdb-bench-fresh-")); backend = new FileBackend(join(tmp, "fresh.crdtdb")); }
    const t1 = now(), c1 = cpuMs(), s1 = srv.cpuMs();
    const f = await client(r2, backend);
    const tSynced = now() - t1;
    const cpu = { client_cpu_ms: Math.round(cpuMs() - c1), server_cpu_ms: srv.cpuMs() - s1 };
    const rows = await f.query("big", {});
    let fields = 0;
    for (const r of rows) fields += Object.keys(r).length - 1; // minus the id
    emit({ bench: "initial_sync", fields: 100000, fresh_backend: freshBackend, local_fill_ms: +tfill.toFixed(0),
      writer_upload_ms: +tUp.toFixed(0), writer_uploaded: up, join_sync_ms: +tSynced.toFixed(0), ...cpu, rows_seen: rows.length, fields_seen: fields });
    await f.close();
    await s.close();
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  }
  for (const c of clients) await c.close();
  emit({ bench: "server", rss_mb_client_process: +(process.memoryUsage().rss / 1e6).toFixed(1), server: srv.rss() });
} finally {
  await srv.stop();
}
process.exit(0);
