/**
 * The client in a real browser: headless Chromium (Debian's `chromium`,
 * or CHROMIUM_BIN) driven by playwright-core, loading the browser bundle
 * (npm run bundle) from a tiny HTTP server on 127.0.0.1, against a real
 * `crdtdb serve` on 127.0.0.1.  Each browser context is a separate
 * profile (its own IndexedDB); pages in one context are tabs of one
 * profile.  Without Chromium the suite is skipped, except under CI, where
 * that is a failure (.ci/install-deps installs it).
 */
import test, { after, before } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { existsSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { WebSocket } from "ws";
import { chromium, type Browser, type BrowserContext, type Page } from "playwright-core";
import { cli, crdtdbBin, freePort, pkgRoot, repoRoot, serve, sleep, tempDir, until, type Server, withServer as withServerOf } from "./helpers.js";
import { PAGE_HTML, PAGE_JS } from "./browserpage.js";
import { CrdtdbDataStore, type PresenceEvent } from "../src/index.js";
import { nodeSocket } from "../src/node.js";
import { staticServer, type StaticServer } from "./static.js";

const CHROMIUM = process.env.CHROMIUM_BIN ?? "/usr/bin/chromium";
const haveChromium = existsSync(CHROMIUM);
if (!haveChromium && process.env.CI) throw new Error(`no Chromium at ${CHROMIUM}: run .ci/install-deps`);
const COLLS = ["Players", "Moves"];
/** Every browser test ends within this. */
const TEST_MS = 30_000;

interface Notification { collection: string; type: string; id?: string; changes?: Record<string, unknown> }
interface Status { state: string; code?: string; message?: string }
/** Session errors (a forked history, a refused delta) land in errors. */
interface State { status: Status | null; statuses: Status[]; events: Notification[]; errors: Status[]; readonly: boolean; presence: PresenceEvent[]; connected: boolean }
interface Outcome<T> { value?: T; error?: { code?: string; message: string } }
interface OpenArgs { name: string; dbId: string; collections: string[]; url?: string; token?: string; lock?: "fail" | "wait"; noLock?: boolean; abortAfterMs?: number }
/** The page's driver (browserpage.ts). */
interface Driver {
  ready: boolean;
  open(key: string, o: OpenArgs): Promise<{ id?: string; error?: { code?: string; message: string } }>;
  call(key: string, method: string, ...args: unknown[]): Promise<Outcome<unknown>>;
  presence(key: string, method: "set" | "get" | "send", ...args: unknown[]): Outcome<unknown>;
  state(key: string): State;
  stopSync(key: string): void;
  startSync(key: string): void;
  close(key: string): Promise<void>;
}
/** The driver, inside page.evaluate callbacks: their source runs in the
 *  page, where browserpage.ts defines drv() the same way. */
const drv = (): Driver => (window as unknown as { t: Driver }).t;
/** The bundle's exports, inside page.evaluate callbacks (browserpage.ts). */
declare function lib(): typeof import("../src/index.js");

let browser: Browser | null = null;
let web: StaticServer | null = null;
/** Files the web server serves by path; a test may add some (the demo's config.js). */
const webFiles: Record<string, string> = { "/test/index.html": PAGE_HTML, "/test/page.js": PAGE_JS };
const opts = { skip: haveChromium ? false : `no Chromium at ${CHROMIUM}`, timeout: TEST_MS };

before(async () => {
  if (!haveChromium) return;
  const b = spawnSync("npm", ["run", "-s", "bundle"], { cwd: pkgRoot, encoding: "utf8", timeout: 60_000 });
  if (b.status !== 0) throw new Error(`npm run bundle failed: ${b.stderr}`);
  web = await staticServer({
    dirs: { "/js/dist/": join(pkgRoot, "dist"), "/examples/web/": join(repoRoot, "examples", "web") },
    files: webFiles,
  });
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox"], headless: true, timeout: 20_000 });
});

after(async () => {
  await browser?.close();
  await web?.close();
});

/** A new profile with one tab on the test page. */
async function newProfile(): Promise<{ ctx: BrowserContext; page: Page }> {
  const ctx = await browser!.newContext();
  ctx.setDefaultTimeout(10_000);
  return { ctx, page: await newTab(ctx) };
}

async function newTab(ctx: BrowserContext): Promise<Page> {
  const page = await ctx.newPage();
  page.on("pageerror", (e) => console.error("page error:", e.message));
  await page.goto(`${web!.url}/test/index.html`);
  await page.waitForFunction(() => (window as unknown as { t?: Driver }).t?.ready === true);
  return page;
}

const open = (p: Page, key: string, o: OpenArgs) => p.evaluate(([k, a]) => drv().open(k, a), [key, o] as const);
const state = (p: Page, key: string): Promise<State> => p.evaluate((k) => drv().state(k), key);
async function call<T = unknown>(p: Page, key: string, method: string, ...args: unknown[]): Promise<T> {
  const r = await p.evaluate(([k, m, a]) => drv().call(k, m, ...a), [key, method, args] as const);
  if (r.error) throw new Error(`${method}: ${r.error.code}: ${r.error.message}`);
  return r.value as T;
}
const getById = (p: Page, key: string, coll: string, id: string) =>
  call<Record<string, unknown> | null>(p, key, "getById", coll, id, true);
async function statusIs(p: Page, key: string, st: string, ms = 10_000): Promise<void> {
  await until(async () => (await state(p, key)).status?.state === st, `${key} ${st}`, ms).catch(async (e: Error) => {
    throw new Error(`${e.message}; statuses: ${JSON.stringify((await state(p, key)).statuses.slice(-8))}`);
  });
}

function withServer(args: string[], fn: (srv: Server, dir: string) => Promise<void>): Promise<void> {
  return withServerOf(COLLS.join(","), args, fn, "crdtdb-browser-");
}

test("two browser contexts on one match sync live, both ways", opts, async () => {
  await withServer([], async (srv) => {
    const a = await newProfile(), b = await newProfile();
    try {
      const o = { name: "match-1", dbId: "match-1", collections: COLLS, url: srv.url };
      const [ia, ib] = [await open(a.page, "s", o), await open(b.page, "s", o)];
      assert.ok(ia.id && ib.id && ia.id !== ib.id, "two profiles are two replicas");
      await call(a.page, "s", "add", "Moves", "m1", { by: "ann", to: { x: 1, y: 2 } });
      const ev = await until(async () => (await state(b.page, "s")).events.find((e) => e.id === "m1"), "m1's event at b");
      assert.deepEqual(ev, { collection: "Moves", type: "Add", id: "m1", changes: { id: "m1", by: "ann", to: { x: 1, y: 2 } } });
      await call(b.page, "s", "update", "Moves", "m1", { to: { y: 5 } });
      const up = await until(async () => (await state(a.page, "s")).events.find((e) => e.type === "Update"), "the update's event at a");
      assert.deepEqual(up?.changes, { id: "m1", by: "ann", to: { x: 1, y: 5 } });
      assert.deepEqual(await call(a.page, "s", "query", "Moves", {}), await call(b.page, "s", "query", "Moves", {}));
      assert.deepEqual([(await state(a.page, "s")).errors, (await state(b.page, "s")).errors], [[], []]);
    } finally {
      await a.ctx.close();
      await b.ctx.close();
    }
  });
});

test("a context that goes offline keeps writing, and its writes arrive when it is back", opts, async () => {
  await withServer([], async (srv) => {
    const a = await newProfile(), b = await newProfile();
    let back: Server | null = null;
    try {
      const o = { name: "match-1", dbId: "match-1", collections: COLLS, url: srv.url };
      await open(a.page, "s", o);
      await open(b.page, "s", o);
      await statusIs(b.page, "s", "synced");
      // Chromium's offline emulation does not close an open WebSocket: it
      // holds its frames both ways (a dead link, as when Wi-Fi drops) and
      // refuses new connections.
      await b.ctx.setOffline(true);
      await call(b.page, "s", "add", "Moves", "m2", { by: "bob", offline: true });
      await call(a.page, "s", "add", "Moves", "m3", { by: "ann" });
      await sleep(800);
      assert.equal(await getById(a.page, "s", "Moves", "m2"), null, "an offline write stays in the offline context");
      assert.equal(await getById(b.page, "s", "Moves", "m3"), null, "the offline context receives nothing");
      assert.equal(await b.page.evaluate(() => navigator.onLine), false, "the page is told it is offline");
      // the link dies meanwhile (the server restarts): b cannot see it yet,
      // the close is held too; b keeps writing into its copy
      const before = (await state(b.page, "s")).statuses.length;
      const beforeA = (await state(a.page, "s")).statuses.length;
      await srv.stop();
      back = await serve(srv.dir, ["--collections", COLLS.join(",")], srv.port);
      await call(b.page, "s", "update", "Moves", "m2", { seen: 1 });
      await call(b.page, "s", "add", "Moves", "m4", { by: "bob" });
      await until(async () => (await state(a.page, "s")).statuses.slice(beforeA).some((x) => x.state === "synced"),
        "a back on the restarted server", 15_000);
      await b.ctx.setOffline(false);
      await until(async () => (await getById(a.page, "s", "Moves", "m4")) !== null, "m4 at a after b is back", 15_000);
      await until(async () => (await getById(b.page, "s", "Moves", "m3")) !== null, "m3 at b after it is back", 15_000);
      assert.deepEqual(await getById(a.page, "s", "Moves", "m2"), { id: "m2", by: "bob", offline: true, seen: 1 });
      await statusIs(b.page, "s", "synced");
      const states = (await state(b.page, "s")).statuses.slice(before).map((x) => x.state);
      assert.ok(states.includes("connecting"), `b reconnected (not a held frame arriving late): ${states.join(",")}`);
      await statusIs(a.page, "s", "synced");
      assert.deepEqual(await call(a.page, "s", "query", "Moves", {}), await call(b.page, "s", "query", "Moves", {}));
    } finally {
      await a.ctx.close();
      await b.ctx.close();
      await back?.stop();
    }
  });
});

test("a reload keeps the data (IndexedDB) and the same replica id", opts, async () => {
  await withServer([], async (srv) => {
    const a = await newProfile();
    try {
      const o = { name: "match-1", dbId: "match-1", collections: COLLS, url: srv.url };
      const first = await open(a.page, "s", o);
      await call(a.page, "s", "add", "Players", "ann", { name: "Ann", when: 1.5 });
      await statusIs(a.page, "s", "synced");
      await a.page.reload();
      await a.page.waitForFunction(() => (window as unknown as { t?: Driver }).t?.ready === true);
      // opened without sync: what it has is what IndexedDB kept
      const again = await open(a.page, "s", { ...o, url: undefined });
      assert.equal(again.error, undefined);
      assert.equal(again.id, first.id, "the same replica after a reload");
      assert.deepEqual(await getById(a.page, "s", "Players", "ann"), { id: "ann", name: "Ann", when: 1.5 });
      await a.page.evaluate(() => drv().close("s"));
      // and with sync it resends nothing new and stays one replica at the server
      await open(a.page, "s", o);
      await statusIs(a.page, "s", "synced");
      assert.deepEqual((await state(a.page, "s")).errors, [], "the server takes the reloaded replica's history");
    } finally {
      await a.ctx.close();
    }
  });
});

test("a fresh sync, kept as the deltas it received, reloads whole and syncs on as the same replica", opts, async () => {
  await withServer([], async (srv) => {
    const a = await newProfile(), b = await newProfile();
    try {
      const o = { name: "match-2", dbId: "match-2", collections: COLLS, url: srv.url };
      await open(a.page, "s", o);
      const many = Object.fromEntries(Array.from({ length: 300 }, (_, i) => ["p" + i, { name: "P" + i, at: { x: i, y: -i }, when: new Date(i) }]));
      await call(a.page, "s", "addAll", "Players", many);
      await call(a.page, "s", "update", "Players", "p7", { at: { x: 70 } });
      await statusIs(a.page, "s", "synced");
      const want = await call(a.page, "s", "query", "Players", {});
      // b's first sync: new records only, so IndexedDB keeps the server's deltas (idb.ts)
      const first = await open(b.page, "s", o);
      await statusIs(b.page, "s", "synced");
      assert.deepEqual(await call(b.page, "s", "query", "Players", {}), want);
      const chunks = await b.page.evaluate(() => new Promise<number>((res, rej) => {
        const r = indexedDB.open("crdtdb:match-2");
        r.onerror = () => rej(r.error);
        r.onsuccess = () => {
          // pages are under numbers (a record's own value, under its key, may start with 3 too)
          const g = r.result.transaction("records").objectStore("records").getAll(IDBKeyRange.lowerBound(0));
          g.onsuccess = () => { r.result.close(); res((g.result as Uint8Array[]).filter((v) => v[0] === 3).length); };
        };
      }));
      assert.ok(chunks > 0, "stored as chunks of deltas");
      await b.page.reload();
      await b.page.waitForFunction(() => (window as unknown as { t?: Driver }).t?.ready === true);
      const again = await open(b.page, "s", { ...o, url: undefined });
      assert.equal(again.id, first.id);
      assert.deepEqual(await call(b.page, "s", "query", "Players", {}), want);
      await call(b.page, "s", "update", "Players", "p8", { name: "eight" });
      await b.page.evaluate(() => drv().close("s"));
      await open(b.page, "s", o);
      await statusIs(b.page, "s", "synced");
      assert.deepEqual((await state(b.page, "s")).errors, [], "the server takes the reloaded replica's history");
      await until(async () => ((await getById(a.page, "s", "Players", "p8")) as { name?: string } | null)?.name === "eight", "b's write at a");
    } finally {
      await a.ctx.close();
      await b.ctx.close();
    }
  });
});

test("two tabs of one profile do not fork the replica: one writer at a time (Web Lock)", opts, async () => {
  await withServer([], async (srv) => {
    const { ctx, page: tab1 } = await newProfile();
    try {
      const o = { name: "match-1", dbId: "match-1", collections: COLLS, url: srv.url };
      const first = await open(tab1, "s", o);
      await call(tab1, "s", "add", "Moves", "m1", { by: "tab1" });
      const tab2 = await newTab(ctx);
      const refused = await open(tab2, "s", o);
      assert.equal(refused.error?.code, "EBUSY");
      assert.match(refused.error!.message, /open in another tab/);
      // asking to wait: it opens once the first tab goes away, as the same replica
      let settled = false;
      const waiting = open(tab2, "s", { ...o, lock: "wait" }).then((r) => { settled = true; return r; });
      await sleep(300);
      assert.equal(settled, false, "the second tab waits while the first is open");
      await tab1.close();
      const second = await waiting;
      assert.equal(second.error, undefined);
      assert.equal(second.id, first.id, "the second tab continues the same replica");
      assert.deepEqual(await getById(tab2, "s", "Moves", "m1"), { id: "m1", by: "tab1" });
      await call(tab2, "s", "add", "Moves", "m2", { by: "tab2" });
      await statusIs(tab2, "s", "synced");
      assert.deepEqual((await state(tab2, "s")).errors, [], "one history: the server refuses nothing (no EFORK)");
      // a wait can be given up
      const tab3 = await newTab(ctx);
      const gaveUp = await open(tab3, "s", { ...o, lock: "wait", abortAfterMs: 300 });
      assert.equal(gaveUp.error?.code, "EBUSY");
      // nor can a tab delete a copy that another tab has open
      const destroyed = await tab3.evaluate(() => lib().IndexedDBBackend.destroy("match-1").then(() => "deleted", (e: { code?: string }) => e.code));
      assert.equal(destroyed, "EBUSY");
    } finally {
      await ctx.close();
    }
  });
});

/** Whether the server answers a refused browser in-band (upgrade, then an
 *  ERROR frame and close 4401/4403) rather than with an HTTP 401 that a
 *  browser cannot read (it sees 1006). */
function inBandRefusals(url: string): Promise<boolean> {
  return new Promise((resolve) => {
    const ws = new WebSocket(`${url}/v1/db/probe?access_token=not-a-token&inband=1`);
    const done = (v: boolean) => { ws.removeAllListeners(); ws.on("error", () => undefined); ws.terminate(); resolve(v); };
    ws.on("unexpected-response", () => done(false));
    ws.on("open", () => done(true));
    ws.on("error", () => done(false));
  });
}

test("why the lock: two tabs writing one copy without it fork its history, and the server refuses one (EFORK)", opts, async () => {
  await withServer([], async (srv) => {
    const { ctx, page: tab1 } = await newProfile();
    try {
      const o = { name: "match-1", dbId: "match-1", collections: COLLS, url: srv.url, noLock: true };
      await open(tab1, "s", o);
      await statusIs(tab1, "s", "synced");
      const tab2 = await newTab(ctx);
      await open(tab2, "s", o);
      await statusIs(tab2, "s", "synced");
      // both number their next change 1 under the same id: two histories
      await call(tab1, "s", "add", "Moves", "x", { by: "tab1" });
      await call(tab2, "s", "add", "Moves", "y", { by: "tab2" });
      const forked = await until(async () => [...(await state(tab1, "s")).errors, ...(await state(tab2, "s")).errors]
        .find((e) => e.code === "EFORK"), "an EFORK", 8_000).catch(async () => null);
      assert.ok(forked, `the server refuses the second history: ${JSON.stringify([(await state(tab1, "s")).errors, (await state(tab2, "s")).errors])}`);
    } finally {
      await ctx.close();
    }
  });
});

test("an IndexedDB commit is all or nothing, and a failed one leaves the last good state", opts, async () => {
  const { ctx, page } = await newProfile();
  try {
    const r = await page.evaluate(async () => {
      const { IndexedDBBackend, CrdtdbDataStore } = lib();
      const ds = await CrdtdbDataStore.open({ dbId: "db", collections: ["C"], backend: new IndexedDBBackend({ name: "atomic" }) });
      await ds.add("C", "a", { v: 1 });
      const id = ds.replica.idHex;
      await ds.close();
      // a batch whose meta cannot be stored, after a record put in the same transaction
      const b = new IndexedDBBackend({ name: "atomic" });
      const loaded = await b.load();
      const rec = loaded.records.get("C\u0000a")!;
      const bad = { ...loaded.meta!, hlc: (() => 0) as unknown as bigint };
      const err = await b.commit({ meta: bad, put: new Map([["C\u0000b", rec]]), del: new Set(["C\u0000a"]) })
        .then(() => "committed", (e: { code?: string }) => e.code);
      await b.close();
      const again = await CrdtdbDataStore.open({ dbId: "db", collections: ["C"], backend: new IndexedDBBackend({ name: "atomic" }) });
      const out = { err, sameId: again.replica.idHex === id, a: await again.getById("C", "a", true), b: await again.getById("C", "b", true) };
      await again.close();
      return out;
    });
    assert.deepEqual(r, { err: "EIO", sameId: true, a: { id: "a", v: 1 }, b: null });
  } finally {
    await ctx.close();
  }
});

test("a bad token and a denied database are told apart", opts, async (t) => {
  const d = tempDir("crdtdb-browser-auth-");
  try {
    const secret = join(d.path, "secret"), other = join(d.path, "other");
    writeFileSync(secret, "0123456789abcdef0123456789abcdef-test-secret\n", { mode: 0o600 });
    writeFileSync(other, "another-secret-another-secret-another-secret\n", { mode: 0o600 });
    const mint = (file: string, sub: string) => cli(d.path, "token", "--secret-file", file, "--sub", sub).trim();
    await withServer(["--jwt-secret-file", secret], async (srv) => {
      if (!(await inBandRefusals(srv.url))) {
        // reported, not hidden: the suite says so in its output
        t.skip("this crdtdb serve refuses with HTTP 401/403 before the upgrade, which a browser sees as 1006; needs the in-band ERROR + 4401/4403");
        return;
      }
      const a = await newProfile();
      try {
        // under the _members policy the app declares _members too
        const o = { dbId: "private-1", collections: [...COLLS, "_members"], url: srv.url };
        // the owner creates the database by connecting first
        await open(a.page, "owner", { ...o, name: "owner", token: mint(secret, "owner") });
        await statusIs(a.page, "owner", "synced");
        await open(a.page, "stranger", { ...o, name: "stranger", token: mint(secret, "stranger") });
        await open(a.page, "forged", { ...o, name: "forged", token: mint(other, "owner") });
        const denied = await until(async () => {
          const s = (await state(a.page, "stranger")).status;
          return s?.state === "stopped" ? s : null;
        }, "the stranger's sync to stop", 8_000).catch(async (e: Error) => {
          throw new Error(`${e.message}; statuses: ${JSON.stringify((await state(a.page, "stranger")).statuses)}`);
        });
        assert.equal(denied?.code, "EDENIED", `a member-less user is denied: ${JSON.stringify(denied)}`);
        const bad = await until(async () => {
          const s = (await state(a.page, "forged")).status;
          return s?.state === "stopped" ? s : null;
        }, "the forged token's sync to stop", 8_000).catch(async (e: Error) => {
          throw new Error(`${e.message}; statuses: ${JSON.stringify((await state(a.page, "forged")).statuses)}`);
        });
        assert.equal(bad?.code, "EAUTH", `a bad token is an auth error: ${JSON.stringify(bad)}`);
        assert.match(bad!.message ?? "", /unauthorized/);
        // both are final: no more attempts; the owner is untouched
        const counts = [(await state(a.page, "stranger")).statuses.length, (await state(a.page, "forged")).statuses.length];
        await sleep(600);
        assert.deepEqual([(await state(a.page, "stranger")).statuses.length, (await state(a.page, "forged")).statuses.length], counts);
        assert.equal((await state(a.page, "owner")).status?.state, "synced");
      } finally {
        await a.ctx.close();
      }
    });
  } finally {
    d.remove();
  }
});

test("the web demo: the owner creates a private match, invites, the player accepts, moves go live, offline and back", opts, async () => {
  const d = tempDir("crdtdb-browser-demo-");
  try {
    const secret = join(d.path, "secret");
    writeFileSync(secret, "demo-secret-demo-secret-demo-secret-0123\n", { mode: 0o600 });
    const mint = (sub: string) => cli(d.path, "token", "--secret-file", secret, "--sub", sub).trim();
    // as examples/web/run.sh starts it: tokens, _members by the server, Moves
    const srvDir = join(d.path, "server");
    cli(srvDir, "init");
    const srv = await serve(srvDir, ["--jwt-secret-file", secret, "--collections", "Moves"]);
    const alice = await newProfile(), bob = await newProfile();
    try {
      webFiles["/examples/web/config.js"] =
        `export default ${JSON.stringify({ server: srv.url, users: { alice: mint("alice"), bob: mint("bob"), carol: mint("carol") } })};`;
      const demo = `${web!.url}/examples/web/`;
      const A = alice.page, B = bob.page;
      await A.goto(`${demo}?user=alice`);
      await A.click("#create");
      await A.waitForSelector('[data-member="alice"]');
      assert.match(await A.textContent('[data-member="alice"]') ?? "", /owner, accepted/);
      await A.click('[data-invite="bob"]');
      const match = new URL(A.url()).searchParams.get("match");
      assert.ok(match?.startsWith("match-"));
      await B.goto(`${demo}?user=bob&match=${match}`);
      await B.click("#accept");
      await A.waitForSelector('[data-member="bob"]:has-text("writer, accepted")');
      // a move on each screen appears on the other
      await A.click('[data-cell="0"]');
      await B.waitForSelector('[data-cell="0"].u0');
      await B.click('[data-cell="7"]');
      await A.waitForSelector('[data-cell="7"].u1');
      // bob goes offline (the page's button stops sync), moves on, comes back
      await B.click("#offline");
      await B.waitForSelector('#status[data-state="stopped"]');
      await B.click('[data-cell="9"]');
      await A.click('[data-cell="1"]');
      await sleep(500);
      assert.equal(await A.$('[data-cell="9"].u1'), null, "bob's offline move waits");
      assert.equal(await B.$('[data-cell="1"].u0'), null, "alice's move waits for bob");
      await B.click("#offline");
      await A.waitForSelector('[data-cell="9"].u1');
      await B.waitForSelector('[data-cell="1"].u0');
      await A.waitForSelector("#moves li:nth-child(4)");
      assert.deepEqual(await A.$$eval("#moves li", (l) => l.map((e) => e.textContent)), await B.$$eval("#moves li", (l) => l.map((e) => e.textContent)));
      if (await inBandRefusals(srv.url)) {
        // carol comes before she is invited: told so, and let in once she is
        const C = await newTab(bob.ctx);
        await C.goto(`${demo}?user=carol&match=${match}`);
        await C.waitForSelector('#status[data-state="stopped"]:has-text("not a member")');
        await A.click('[data-invite="carol"]');
        await A.waitForSelector('[data-member="carol"]');
        await C.click('#offline:has-text("Try again")');
        await C.click("#accept");
        await A.waitForSelector('[data-member="carol"]:has-text("writer, accepted")');
        await C.click('[data-cell="14"]');
        await A.waitForSelector('[data-cell="14"].u2');
        await B.waitForSelector('[data-cell="14"].u2');
        await C.waitForSelector('[data-cell="9"].u1');
      }
    } finally {
      delete webFiles["/examples/web/config.js"];
      await alice.ctx.close();
      await bob.ctx.close();
      await srv.stop();
    }
  } finally {
    d.remove();
  }
});

test("examples/web/run.sh starts the demo in one command, and stopping it cleans up", opts, async () => {
  const [crdtdbPort, webPort] = [await freePort(), await freePort()];
  const run = spawn("bash", [join(repoRoot, "examples", "web", "run.sh")], {
    env: { ...process.env, CRDTDB_BIN: crdtdbBin(), CRDTDB_PORT: String(crdtdbPort), WEB_PORT: String(webPort) },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  run.stdout!.on("data", (d: Buffer) => { out += d.toString(); });
  run.stderr!.on("data", (d: Buffer) => { out += d.toString(); });
  const exited = new Promise<number | null>((res) => run.on("exit", (code) => res(code)));
  const { ctx, page } = await newProfile();
  try {
    await until(() => out.includes("Ctrl-C stops the demo"), `run.sh to start: ${out}`, 20_000);
    const url = `http://127.0.0.1:${webPort}/examples/web/`;
    assert.ok(out.includes(`${url}?user=alice`), out);
    await page.goto(`${url}?user=alice`);
    await page.click("#create");
    await page.waitForSelector('[data-member="alice"]:has-text("owner, accepted")');
    await page.waitForSelector('#status[data-state="synced"]');
  } finally {
    await ctx.close();
    run.kill("SIGTERM");
    const code = await Promise.race([exited, sleep(5000).then(() => "hung")]);
    if (code === "hung") run.kill("SIGKILL");
    assert.notEqual(code, "hung", "run.sh stops on SIGTERM");
  }
  const tmp = /log: (\S+)\/serve\.log/.exec(out)?.[1];
  assert.ok(tmp && !existsSync(tmp), `run.sh removed its temporary directory ${tmp}`);
});

/** Whether the binary relays presence (its `sync --help` mentions --presence). */

test("presence: a page's state reaches a Node store, and a Node store's message reaches the page", opts, async () => {
  await withServer([], async (srv) => {
    const a = await newProfile();
    const node = await CrdtdbDataStore.open({ dbId: "room", collections: COLLS, sync: { url: srv.url, socket: nodeSocket(), minBackoffMs: 50, maxBackoffMs: 400 } });
    try {
      const o = { name: "room", dbId: "room", collections: COLLS, url: srv.url };
      const { id } = await open(a.page, "s", o);
      const set = await a.page.evaluate(() => drv().presence("s", "set", { name: "page", cursor: { x: 4 } }));
      assert.equal(set.error, undefined);
      const e = (await until(() => node.presence.get().find((x) => x.state.name === "page"), "the page's presence at the Node store"))!;
      assert.deepEqual(e.state, { name: "page", cursor: { x: 4 } });
      assert.equal(e.replica, id);
      node.presence.set({ name: "node" });
      await until(async () => (await state(a.page, "s")).presence.some((x) => x.type === "join" && x.entry.state.name === "node"), "the Node store's presence at the page");
      await until(async () => (await state(a.page, "s")).connected && node.presence.connected, "both connected");
      node.presence.send({ emote: "wave" });
      const m = (await until(async () => (await state(a.page, "s")).presence.find((x) => x.type === "message"), "the message at the page"))!;
      assert.ok(m.type === "message");
      assert.deepEqual(m.body, { emote: "wave" });
      assert.equal(m.from.replica, node.replica.idHex);
      // the page closes: the Node store sees it leave
      await a.page.evaluate(() => drv().close("s"));
      await until(() => !node.presence.get().some((x) => x.state.name === "page"), "the page's leave at the Node store");
    } finally {
      await node.close();
      await a.ctx.close();
    }
  });
});
