/*
 * The cluster behind HAProxy, with real processes on 127.0.0.1: three
 * `crdtdb serve --cluster` and haproxy as examples/cluster/run.sh starts
 * them, clients of the JS client (js/dist).  One scenario per run:
 *
 *   node cluster.test.mjs SCENARIO     spread | live | failover | join | collect
 *
 * Environment: CRDTDB_CLI (the crdtdb binary), CRDTDB_SRC (the source root).
 * The owners are computed here independently of transport/cluster.c
 * (BLAKE2b from @noble/hashes), so the placement checks the hashing too.
 */
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { closeSync, existsSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const SRC = process.env.CRDTDB_SRC;
const BIN = process.env.CRDTDB_CLI;
if (!SRC || !BIN) throw new Error("set CRDTDB_SRC and CRDTDB_CLI");
const { CrdtdbDataStore, FileBackend, nodeSocket } = await import(join(SRC, "js/dist/node.js"));
const { blake2b } = await import(join(SRC, "js/node_modules/@noble/hashes/blake2.js"));

const R = 2;
const COLLS = ["Players", "Moves"];
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/* ------------------------------------------------------------ helpers */

function cli(dir, ...args) {
  const r = spawnSync(BIN, ["-d", dir, ...args], { encoding: "utf8", timeout: 60_000 });
  if (r.error) throw new Error(`crdtdb ${args.join(" ")}: ${r.error.message}`); // not run at all
  return { ok: r.status === 0, out: r.stdout, err: r.stderr };
}

async function until(fn, what, ms = 90_000) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
  }
}

/* rendezvous owners, as docs/cluster.md defines them */
function score(url, id) {
  const h = blake2b(new TextEncoder().encode(`${url}\n${id}`), { dkLen: 16 });
  let v = 0n;
  for (let i = 0; i < 8; i++) v = (v << 8n) | BigInt(h[i]);
  return v;
}
function owners(urls, id, r = R) {
  return urls
    .map((u) => ({ u, s: score(u, id) }))
    .sort((a, b) => (a.s !== b.s ? (a.s > b.s ? -1 : 1) : a.u < b.u ? -1 : 1))
    .slice(0, r)
    .map((x) => x.u);
}

/* examples/cluster/run.sh in its own process group */
async function startCluster(env0 = {}) {
  const dir = mkdtempSync(join(tmpdir(), "crdtdb-cluster-"));
  const proc = spawn("bash", [join(SRC, "examples/cluster/run.sh"), dir], {
    detached: true, stdio: ["ignore", "ignore", "inherit"], env: { ...process.env, ...env0, CRDTDB: BIN },
  });
  const exited = new Promise((r) => proc.on("exit", r));
  await until(() => existsSync(join(dir, "cluster.env")), "the cluster to start", 120_000);
  const env = Object.fromEntries(readFileSync(join(dir, "cluster.env"), "utf8").trim().split("\n").map((l) => l.split("=")));
  const servers = [1, 2, 3].map((i) => ({
    name: `s${i}`, addr: env[`CRDTDB_S${i}`], url: `ws://${env[`CRDTDB_S${i}`]}`, pid: Number(env[`S${i}_PID`]),
    data: join(dir, `s${i}`),
  }));
  const extra = []; // servers started here, not by run.sh
  return {
    dir, servers, extra, lb: `ws://${env.CRDTDB_LB}`,
    async stop() {
      for (const p of extra) try { p.kill("SIGKILL"); } catch { /* gone */ }
      try { process.kill(-proc.pid, "SIGTERM"); } catch { /* gone */ }
      await Promise.race([exited, sleep(15_000)]);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/* which server HAProxy sent each database's connections to (its log) */
function routes(cl) {
  const m = new Map();
  const log = readFileSync(join(cl.dir, "haproxy.log"), "utf8");
  for (const line of log.split("\n")) {
    const r = / crdtdb_servers\/(s\d+) .*"GET \/v1\/db\/([^ ?]+)/.exec(line);
    if (!r) continue;
    const id = decodeURIComponent(r[2]);
    if (!m.has(id)) m.set(id, new Set());
    m.get(id).add(r[1]);
  }
  return m;
}

function dbsOn(s) {
  const r = cli(s.data, "dbs");
  return r.ok ? new Set(r.out.split("\n").filter(Boolean)) : new Set();
}

/* a server's peers (configured) and peer links (up or down), from /metrics */
async function linksOf(s) {
  const text = await (await fetch(`http://${s.addr}/metrics`)).text();
  const num = (re) => Number((re.exec(text) ?? [0, NaN])[1]);
  return {
    peers: num(/^crdtdb_peers (\d+)$/m),
    links: num(/^crdtdb_peer_links\{state="up"\} (\d+)$/m) + num(/^crdtdb_peer_links\{state="down"\} (\d+)$/m),
  };
}

/* what a failed fetch met, its causes' codes and messages (undici nests them) */
function whyNot(e) {
  const parts = [];
  for (let c = e; c && parts.length < 4; c = c.cause) parts.push(c.code ? `${c.code}: ${c.message}` : `${c.name}: ${c.message}`);
  return parts.join(" <- ");
}

function alive(pid) {
  try { process.kill(pid, 0); return `${pid} is running`; } catch (e) { return `${pid} is gone (${e.code})`; }
}

/* after reloads: each server peers with the file's other servers only, and
 * holds one link per database it holds (each owned, R = 2: one other
 * owner), however many reloads linked them */
async function oneLinkEach(servers, urls) {
  for (const s of servers) {
    let got;
    try {
      await until(async () => {
        try { got = await linksOf(s); } catch (e) { got = { peers: `no answer (${whyNot(e)}; the process ${alive(s.pid)})` }; return false; }
        return got.peers === urls.length - 1 && got.links === dbsOn(s).size;
      }, `${s.name}'s peers and links`, 30_000);
    } catch (e) {
      throw new Error(`${e.message}: ${got.peers} peers (file: ${urls.length - 1} others), ` +
        `${got.links} links for ${dbsOn(s).size} databases`);
    }
  }
}

/* the status line of a raw GET of `path` (sent as is) at addr */
async function rawGet(addr, path) {
  const net = await import("node:net");
  const [host, port] = addr.split(":");
  return new Promise((res, rej) => {
    const s = net.connect(Number(port), host, () => s.write(`GET ${path} HTTP/1.1\r\nHost: ${addr}\r\nConnection: close\r\n\r\n`));
    let got = "";
    s.on("data", (d) => { got += d; });
    s.on("error", rej);
    s.on("close", () => res(Number((/^HTTP\/1\.[01] (\d+)/.exec(got) ?? [0, 0])[1])));
  });
}

/* opens n idle TCP connections to addr, waits (at least 500 ms, and until
 * settled(open, refused) holds, 10 s at most: a loaded HAProxy may close
 * the refused ones late), counts those still open (and those the other end
 * closed), and closes them all */
async function holdConnections(addr, n, settled = () => true) {
  const net = await import("node:net");
  const [host, port] = addr.split(":");
  const socks = [];
  let refused = 0;
  for (let i = 0; i < n; i++) {
    const s = net.connect(Number(port), host);
    s.on("error", () => {});
    s.on("close", () => { refused++; });
    socks.push(s);
    await new Promise((r) => s.once("connect", r).once("error", r));
  }
  await sleep(500);
  for (const end = Date.now() + 10_000; !settled(n - refused, refused) && Date.now() < end;) await sleep(100);
  const open = n - refused;
  for (const s of socks) s.destroy();
  return { open, refused };
}

/* a server started outside run.sh, as run.sh starts them */
function serve(cl, s, clusterFile) {
  if (!existsSync(s.data)) assert.ok(cli(s.data, "init").ok);
  const log = openSync(join(cl.dir, `${s.name}.restart.log`), "a");
  const p = spawn(BIN, ["-d", s.data, "serve", "--listen", s.addr, "--collections", COLLS.join(","),
    "--cluster", clusterFile, "--self", s.url, "--handoff", "--max-per-ip", "unlimited"], { stdio: ["ignore", "ignore", log] });
  closeSync(log);
  cl.extra.push(p);
  s.pid = p.pid;
  return p;
}

async function healthy(s) {
  return until(async () => {
    try { return (await fetch(`http://${s.addr}/healthz`)).ok; } catch { return false; }
  }, `${s.name} to answer /healthz`, 30_000);
}

/* whenSynced, bounded: a client that never syncs fails here, saying so */
async function synced(ds, what, ms = 30_000) {
  let timer;
  const late = new Promise((_, rej) => { timer = setTimeout(() => rej(new Error(`timed out waiting for ${what} to sync`)), ms); });
  try { await Promise.race([ds.sync.whenSynced(), late]); } finally { clearTimeout(timer); }
}

function open(url, dbId, status, backend) {
  return CrdtdbDataStore.open({
    dbId, collections: COLLS, backend,
    sync: { url, socket: nodeSocket(), minBackoffMs: 50, maxBackoffMs: 500, onStatus: status },
  });
}

/* a free port below the ephemeral range (where outgoing connections take
 * theirs, so nothing else binds it meanwhile) */
async function freePort() {
  const net = await import("node:net");
  for (;;) {
    const p = 10000 + Math.floor(Math.random() * 22000);
    const ok = await new Promise((res) => {
      const srv = net.createServer().once("error", () => res(false)).listen(p, "127.0.0.1", () => srv.close(() => res(true)));
    });
    if (ok) return p;
  }
}

/* creates n databases through HAProxy, each with record Players/p = {n: i} */
async function createMany(cl, prefix, n) {
  const ids = Array.from({ length: n }, (_, i) => `${prefix}-${String(i).padStart(3, "0")}`);
  for (let b = 0; b < ids.length; b += 25) {
    await Promise.all(ids.slice(b, b + 25).map(async (id, k) => {
      const ds = await open(cl.lb, id);
      await ds.add("Players", "p", { n: b + k });
      await synced(ds, `${id}'s first client`);
      await ds.close();
    }));
  }
  return ids;
}

/* every database on each of its owners, with its record */
async function placed(servers, ids, urls) {
  await until(() => {
    const held = new Map(servers.map((s) => [s.url, dbsOn(s)]));
    return ids.every((id) => owners(urls, id).every((u) => held.get(u).has(id)));
  }, "every database on its owners");
  for (const id of ids)
    for (const u of owners(urls, id)) {
      const s = servers.find((x) => x.url === u);
      await until(() => cli(s.data, "get", id, "Players", "p").ok, `${id} complete on ${s.name}`);
    }
}

/* ---------------------------------------------------------- scenarios */

/* each database held by exactly its owners, once non-owners handed theirs off */
async function exactly(servers, ids, urls) {
  let off = [];
  try {
    await until(() => {
      const held = new Map(servers.map((s) => [s.url, dbsOn(s)]));
      off = ids.flatMap((id) => servers.filter((s) => held.get(s.url).has(id) !== owners(urls, id).includes(s.url))
        .map((s) => `${id} ${held.get(s.url).has(id) ? "still on" : "missing from"} ${s.name}`));
      return off.length === 0;
    }, "every database on exactly its owners", 60_000);
  } catch (e) {
    throw new Error(`${e.message}: ${off.slice(0, 6).join(", ")}${off.length > 6 ? ` and ${off.length - 6} more` : ""}`);
  }
}

async function spread(cl) {
  const urls = cl.servers.map((s) => s.url);
  const ids = await createMany(cl, "db", 200);
  await placed(cl.servers, ids, urls);
  // HAProxy cannot compute the owners, so a client may enter by a non-owner:
  // that one serves it, then hands its copy to the owners and drops it
  // (HAProxy logs a connection when it ends, and its log may lag; under
  // load a line may be missing after 30 s still: the count below is then a
  // floor, as long as nearly every route is there)
  let route = routes(cl);
  try {
    route = await until(() => {
      route = routes(cl);
      return ids.every((id) => route.has(id)) ? route : null;
    }, "HAProxy's log of every database's route", 30_000);
  } catch {
    const missing = ids.filter((id) => !route.has(id));
    console.error(`HAProxy's log has no route for ${missing.length} databases: ${missing.slice(0, 5).join(", ")}`);
    assert.ok(missing.length <= ids.length / 10, "HAProxy logged nearly every database's route");
  }
  let entered = 0;
  for (const id of ids.filter((x) => route.has(x))) {
    const own = owners(urls, id);
    for (const n of route.get(id)) if (!own.includes(cl.servers.find((s) => s.name === n).url)) entered++;
  }
  await exactly(cl.servers, ids, urls);
  const handoffs = async () => {
    let n = 0;
    for (const s of cl.servers) {
      const m = /^crdtdb_handoffs_total (\d+)$/m.exec(await (await fetch(`http://${s.addr}/metrics`)).text());
      assert.ok(m, `${s.name} reports crdtdb_handoffs_total`);
      n += Number(m[1]);
    }
    return n;
  };
  assert.ok((await handoffs()) >= entered, "every copy a non-owner served was handed off (/metrics)");
  // and told its owners it went (LEAVE): a dropped copy does not hold back
  // their collection of tombstones
  let told = 0;
  for (const id of ids.filter((x) => route.has(x))) {
    const own = owners(urls, id);
    if ([...route.get(id)].every((n) => own.includes(cl.servers.find((s) => s.name === n).url))) continue;
    for (const u of own) {
      const s = cl.servers.find((x) => x.url === u);
      const r = cli(s.data, "peers", id);
      assert.ok(r.ok, `crdtdb peers ${id} on ${s.name}`);
      assert.match(r.out, / left$/m, `${s.name}'s peers of ${id}, entered by a non-owner, name one that left`);
      told++;
    }
  }
  assert.ok(told > 0, "some database was entered by a non-owner");
  // the record is the one written, on every holder
  const held = new Map(cl.servers.map((s) => [s.name, dbsOn(s)]));
  for (const s of cl.servers)
    for (const id of held.get(s.name)) {
      const i = Number(id.slice(3));
      assert.deepEqual(JSON.parse(cli(s.data, "get", id, "Players", "p").out), { id: "p", n: i });
    }
  // a fresh client straight to a non-owner again: its copy, created anew,
  // goes on with its history (no fork), pulls the old data back, and the
  // client knows when it is in sync (a copy made again once never told it)
  const again = ids.slice(0, 8);
  for (const id of again) {
    const other = cl.servers.find((s) => !owners(urls, id).includes(s.url));
    const ds = await open(`${other.url}`, id);
    await ds.add("Players", "q", { again: true });
    await synced(ds, `a fresh client of ${id} on ${other.name}`);
    await until(async () => (await ds.query("Players", {})).length === 2, `${id} back on ${other.name}`);
    await ds.close();
    for (const u of owners(urls, id)) {
      const s = cl.servers.find((x) => x.url === u);
      await until(() => cli(s.data, "get", id, "Players", "q").ok, `the new write on ${s.name}`);
    }
    await exactly(cl.servers, [id], urls); // and hands it off again
  }
  const per = cl.servers.map((s) => `${s.name} ${held.get(s.name).size}`).join(", ");
  console.log(`200 databases: each on exactly its ${R} owners (${per}); ${entered} entered by a non-owner, ` +
    `which handed them off; ${again.length} served again by a non-owner to a fresh client, handed off again`);
}

async function live(cl) {
  const id = "live-1";
  const a = await open(cl.lb, id);
  await synced(a, "the first live client");
  const via = [...routes(cl).get(id)][0];
  // the other entry path: straight to a server HAProxy did not choose
  const direct = cl.servers.find((s) => s.name !== via);
  const b = await open(direct.url, id);
  await synced(b, "the second live client");
  const seen = (ds, rid) => new Promise((res) => {
    const sub = ds.observable("Players").subscribe(async () => {
      if (await ds.getById("Players", rid, true)) { sub.unsubscribe(); res(); }
    });
  });
  const atB = seen(b, "from-a");
  await a.add("Players", "from-a", { v: 1 });
  await atB;
  const atA = seen(a, "from-b");
  await b.add("Players", "from-b", { v: 2 });
  await atA;
  // neither reconnected: the writes came over the live sessions
  assert.equal(a.sync.status.state !== "offline", true);
  assert.deepEqual(await b.getById("Players", "from-a"), { id: "from-a", v: 1 });
  assert.deepEqual(await a.getById("Players", "from-b"), { id: "from-b", v: 2 });
  console.log(`live: a via HAProxy (${via}) and b straight to ${direct.name} see each other's writes`);
  // the balancer passes only the sync endpoint and the health check: the
  // servers answer /metrics to loopback peers, which HAProxy here is
  const lbHttp = cl.lb.replace(/^ws:/, "http:");
  assert.equal((await fetch(`${lbHttp}/metrics`)).status, 404);
  assert.equal((await fetch(`${lbHttp}/healthz`)).status, 200);
  // nor by a path the servers collapse to /metrics (raw, as a client
  // would send it: fetch would normalise the dots away)
  for (const path of ["/v1/db/../../metrics", "/v1/db/%2e%2e/%2e%2e/metrics", "/v1/db/x%2f..%2f..%2f..%2fmetrics"]) {
    const status = await rawGet(cl.lb.replace(/^ws:\/\//, ""), path);
    assert.equal(status, 404, `GET ${path} through the balancer`);
  }
  // one client address holds at most CRDTDB_LB_SRC_CONNS (run.sh: 200)
  // connections at the balancer: the next are refused
  const held = await holdConnections(cl.lb.replace(/^ws:\/\//, ""), 210, (open, refused) => open <= 200 && refused >= 10);
  assert.ok(held.open <= 200 && held.open >= 150 && held.refused >= 10,
    `the balancer's per-address limit: ${held.open} held, ${held.refused} refused`);
  await a.close();
  await b.close();
}

async function failover(cl) {
  const id = "busy";
  const N = 8;
  const clients = [];
  for (let i = 0; i < N; i++) {
    const c = { i, written: 0, seqs: [], states: [], ds: null };
    c.ds = await open(cl.lb, id, (st) => c.states.push(st.state));
    clients.push(c);
  }
  await Promise.all(clients.map((c) => synced(c.ds, `writer ${c.i}`)));
  const via = [...routes(cl).get(id)];
  assert.equal(via.length, 1, "one server holds every client");
  const victim = cl.servers.find((s) => s.name === via[0]);
  // a write is acknowledged once a server's ack covers its sequence
  const serverIds = cl.servers.map((s) => cli(s.data, "id").out.trim());
  const ackedCount = (c) => {
    const upto = Math.max(...serverIds.map((h) => c.ds.replica.peer(h).acked));
    let n = 0;
    while (n < c.seqs.length && c.seqs[n] <= upto) n++;
    return n;
  };
  let writing = true;
  const writers = clients.map(async (c) => {
    while (writing) {
      await c.ds.add("Moves", `c${c.i}-${c.written}`, { c: c.i, n: c.written });
      c.seqs.push(c.ds.replica.seq);
      c.written++;
      await sleep(10);
    }
  });
  await sleep(1500);
  // and until a write is acknowledged (a loaded server may ack late)
  await until(() => clients.some((c) => ackedCount(c) > 0), "a write acknowledged before the kill", 30_000);
  const ackedAtKill = clients.map(ackedCount);
  const statesAtKill = clients.map((c) => c.states.length);
  process.kill(victim.pid, "SIGKILL");
  const killedAt = Date.now();
  await sleep(2500); // offline writes meanwhile, then writes to the new server
  writing = false;
  await Promise.all(writers);
  await Promise.all(clients.map((c) => synced(c.ds, `writer ${c.i} after the kill`, 90_000)));
  const caughtUp = Date.now() - killedAt;
  const total = clients.reduce((n, c) => n + c.written, 0);
  const acked = ackedAtKill.reduce((n, x) => n + x, 0);
  assert.ok(acked > 0, "writes were acknowledged before the kill");
  // every client lost its connection and came back (through HAProxy)
  clients.forEach((c, k) => {
    const after = c.states.slice(statesAtKill[k]);
    assert.ok(after.includes("offline") || after.includes("connecting"), `client ${c.i} reconnected`);
    assert.equal(c.states.at(-1), "synced");
  });
  const want = new Set(clients.flatMap((c) => Array.from({ length: c.written }, (_, n) => `c${c.i}-${n}`)));
  const ackedIds = clients.flatMap((c, k) => Array.from({ length: ackedAtKill[k] }, (_, n) => `c${c.i}-${n}`));
  const idsOf = (arr) => new Set(arr.map((r) => r.id));
  // every client holds every write of every client
  await until(async () => {
    for (const c of clients) if ((await c.ds.query("Moves", {})).length !== want.size) return false;
    return true;
  }, "every client to hold every write");
  // the surviving owners, and any other survivor that took the clients,
  // hold every write, counted: the acknowledged ones before the kill among
  // them
  const urls = cl.servers.map((s) => s.url);
  const survivors = cl.servers.filter((s) => s !== victim);
  const checked = survivors.filter((s) => owners(urls, id).includes(s.url) || dbsOn(s).has(id));
  assert.ok(checked.some((s) => owners(urls, id).includes(s.url)), "an owner survived");
  for (const s of checked) {
    const has = await until(() => {
      const r = cli(s.data, "query", id, "Moves");
      const got = r.ok ? idsOf(JSON.parse(r.out)) : new Set();
      return got.size === want.size ? got : null;
    }, `${s.name} to hold all ${want.size} writes`);
    for (const w of want) assert.ok(has.has(w), `${w} on ${s.name}`);
    for (const w of ackedIds) assert.ok(has.has(w), `acknowledged ${w} on ${s.name}`);
  }
  // the killed server comes back and catches up too; HAProxy may have sent
  // the clients to a server that does not own the database, and that one,
  // once in sync with the owners, hands its copy off (--handoff): gone is
  // as good as complete there, and the owners were checked above
  const victimOwns = owners(urls, id).includes(victim.url);
  serve(cl, victim, join(cl.dir, "cluster"));
  await healthy(victim);
  const end = await until(() => {
    const r = cli(victim.data, "query", id, "Moves");
    if (r.ok && JSON.parse(r.out).length === want.size) return "caught up";
    return !victimOwns && !dbsOn(victim).has(id) ? "handed its copy off" : null;
  }, `${victim.name} to catch up after its restart`);
  console.log(`failover: kill -9 ${victim.name} under ${N} writers; ${acked} writes acknowledged before it, ` +
    `${total} in all; all on ${checked.map((s) => s.name).join(" and ")} and every client (caught up ` +
    `${caughtUp} ms after the kill, 2500 of them writing); the restarted ${victim.name} ` +
    `(${victimOwns ? "an owner" : "not an owner"}) ${end}`);
  await Promise.all(clients.map((c) => c.ds.close()));
}

async function join_(cl) {
  const file = join(cl.dir, "cluster");
  const three = cl.servers.map((s) => s.url);
  const ids = await createMany(cl, "mv", 60);
  await placed(cl.servers, ids, three);
  const before = new Map(cl.servers.map((s) => [s.name, dbsOn(s)]));
  // a fourth server joins: it starts with the new file, the others re-read it
  const port = await freePort();
  const s4 = { name: "s4", addr: `127.0.0.1:${port}`, url: `ws://127.0.0.1:${port}`, data: join(cl.dir, "s4") };
  const four = [...three, s4.url];
  writeFileSync(file, four.map((u) => `${u}\n`).join(""));
  // the others re-read the file first, while the newcomer is still down:
  // an old owner of what moves to it must keep its copy (the handoff
  // waits for the new owner to hold it), so nothing is dropped early
  for (const s of cl.servers) process.kill(s.pid, "SIGHUP");
  const toS4 = ids.filter((id) => owners(four, id).includes(s4.url));
  await sleep(3000); // handoffs are looked at about once a second
  for (const s of cl.servers)
    for (const id of toS4)
      if (before.get(s.name).has(id))
        assert.ok(dbsOn(s).has(id), `${s.name} dropped ${id} before its new owner s4 held it`);
  serve(cl, s4, file);
  await healthy(s4);
  const all = [...cl.servers, s4];
  await placed(all, ids, four);
  const moved = ids.filter((id) => owners(four, id).includes(s4.url));
  assert.ok(moved.length > 0, "some databases move to the new server");
  assert.deepEqual([...dbsOn(s4)].sort(), moved.sort(), "s4 holds exactly the databases it now owns");
  // an old owner drops what moved only once the new owners hold it all
  await exactly(all, ids, four);
  for (const id of ids)
    for (const s of all.filter((x) => owners(four, id).includes(x.url)))
      assert.ok(cli(s.data, "get", id, "Players", "p").ok, `${id} complete on ${s.name}`);
  await oneLinkEach(all, four);
  const dropped = cl.servers.reduce((n, s) => n + [...before.get(s.name)].filter((id) => !dbsOn(s).has(id)).length, 0);
  // s1 leaves the same way: the file without it, every server re-reads it
  const leaving = cl.servers[0];
  const rest = four.filter((u) => u !== leaving.url);
  writeFileSync(file, rest.map((u) => `${u}\n`).join(""));
  for (const s of all) process.kill(s.pid, "SIGHUP");
  await placed(all.filter((s) => s !== leaving), ids, rest);
  await exactly(all.filter((s) => s !== leaving), ids, rest);
  await until(() => dbsOn(leaving).size === 0, `${leaving.name} to hand off everything`, 60_000);
  await oneLinkEach(all.filter((s) => s !== leaving), rest);
  // the leaving server's links went with its copies
  await until(async () => (await linksOf(leaving)).links === 0, `${leaving.name}'s links to close`, 30_000);
  const gained = ids.filter((id) => owners(three, id).includes(leaving.url));
  console.log(`join: ${moved.length} of 60 databases moved to a fourth server, complete, then ${dropped} ` +
    `copies handed off by their old owners; leave: the ${gained.length} that ${leaving.name} owned are ` +
    `complete on their new owners, and it holds none`);
}

/* handoff with tombstone collection (every server --collect-every 1): a
 * copy handed off leaves, so the owners collect; a client of that copy
 * that comes back to it, holding an add of a record the owners removed and
 * collected meanwhile, is answered with a remove (docs/crdt.md, rule 4) */
async function collect(cl) {
  const urls = cl.servers.map((s) => s.url);
  let id = null;
  for (let i = 0; !id; i++) if (owners(urls, `col-${i}`).length === R) id = `col-${i}`;
  const own = owners(urls, id).map((u) => cl.servers.find((s) => s.url === u));
  const other = cl.servers.find((s) => !own.includes(s));
  const file = join(cl.dir, "c1.journal");
  // c1, a client of the non-owner, writes a and b, and goes away
  let c1 = await open(other.url, id, undefined, new FileBackend(file));
  await c1.add("Players", "a", { v: 1 });
  await c1.add("Players", "b", { v: 2 });
  await synced(c1, "c1 on the non-owner");
  await c1.close();
  await until(() => !dbsOn(other).has(id) && own.every((s) => cli(s.data, "get", id, "Players", "a").ok),
    `${id} handed off by ${other.name} to its owners`, 60_000);
  for (const s of own) assert.match(cli(s.data, "peers", id).out, / left$/m, `${other.name} left ${s.name}'s peers`);
  // c2, a client of an owner, removes a; both owners collect its tombstone
  const c2 = await open(own[0].url, id);
  await until(async () => (await c2.query("Players", {})).length === 2, "c2 holds a and b");
  await c2.remove("Players", "a");
  await synced(c2, "c2's remove");
  const removed = (s) => JSON.parse(cli(s.data, "stats", id).out).removed;
  await until(() => own.every((s) => !cli(s.data, "get", id, "Players", "a").ok && removed(s) === 0),
    "the owners to collect a's tombstone (a handed-off copy holds nothing back)", 60_000);
  await c2.close();
  // the non-owner serves the database again (c3): its new copy is resynced
  // by the owners, and keeps their horizon stamp as its gate
  const c3 = await open(other.url, id);
  await synced(c3, "c3 on the non-owner");
  await until(async () => (await c3.query("Players", {})).length === 1, "c3 to hold b alone");
  await until(() => / left$/m.test(cli(other.data, "peers", id).out) === false &&
    cli(other.data, "get", id, "Players", "b").ok, `${other.name}'s new copy to hold b`);
  // c1 comes back to it with its copy: a's add, old, and no remove
  c1 = await open(other.url, id, undefined, new FileBackend(file));
  await synced(c1, "c1 back on the non-owner");
  await until(async () => !(await c1.getById("Players", "a", true)), "a to go from c1 (a remove answered its old add)", 30_000);
  assert.deepEqual(await c1.getById("Players", "b"), { id: "b", v: 2 });
  await c1.close();
  await until(async () => !(await c3.getById("Players", "a", true)), "c3 never to show a", 5_000);
  await c3.close();
  for (const s of own)
    await until(() => !cli(s.data, "get", id, "Players", "a").ok && cli(s.data, "get", id, "Players", "b").ok,
      `a gone and b kept on ${s.name}`, 30_000);
  await until(() => !dbsOn(other).has(id), `${id} handed off again`, 60_000);
  console.log(`collect: ${other.name} handed ${id} off and left; its owners ${own.map((s) => s.name).join(", ")} ` +
    `collected a removed record; a client of the dropped copy came back with its old add and lost it to a remove`);
}

const scenarios = { spread, live, failover, join: join_, collect };
const name = process.argv[2];
if (!scenarios[name]) throw new Error(`scenario: ${Object.keys(scenarios).join(" | ")}`);
const cl = await startCluster(name === "collect" ? { SERVE_ARGS: "--collect-every 1" } : {});
try {
  await scenarios[name](cl);
} catch (e) {
  // what each server said, so a failure in CI can be read without rerunning
  for (const f of ["s1.log", "s2.log", "s3.log", "s1.restart.log", "s2.restart.log", "s3.restart.log", "s4.restart.log"]) {
    const p = join(cl.dir, f);
    if (!existsSync(p)) continue;
    const lines = readFileSync(p, "utf8").trimEnd().split("\n");
    console.error(`--- ${f} (last 40 of ${lines.length} lines)\n${lines.slice(-40).join("\n")}`);
  }
  throw e;
} finally {
  await cl.stop();
}
process.exit(0);
