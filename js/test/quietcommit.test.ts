/**
 * Commits that change no record's rendering still reach idle clients.
 *
 * A server sends each commit on to its other live sessions (docs/protocol.md,
 * "Sessions: the sync protocol").  Some commits change registers without
 * changing what any record shows: an update writing the value a field
 * already has (a new stamp), the leaves of an update that did not see a
 * remove (newer than the remove, hidden by it), and the remove of a record
 * the server never showed.  An idle JS client, connected and caught up,
 * must still be sent those registers; nothing else happens meanwhile to
 * wake its session.  (Found by test/convergence.test.ts, seed 155224: a
 * C replica's update racing a remove left one JS replica without its
 * hidden leaves for good.)
 */
import test from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { CrdtdbDataStore } from "../src/index.js";
import { FileBackend, nodeSocket } from "../src/node.js";
import { toHex } from "../src/keys.js";
import { cli, sleep, until, withServer } from "./helpers.js";

const DB = "quiet";

/** The stamps a JS replica holds for a record: base and each leaf, keyed. */
function stamps(ds: CrdtdbDataStore, coll: string, id: string): Map<string, string> {
  const out = new Map<string, string>();
  const r = ds.replica.stored(coll, id);
  if (!r) return out;
  if (r.base) out.set("#base", `${r.base.kind}@${r.base.hlc}:${toHex(r.base.origin)}`);
  for (const l of r.leaves) out.set(JSON.stringify(l.path), `@${l.hlc}:${toHex(l.origin)}`);
  return out;
}

/** Waits until the JS replica is caught up and its acks have gone out,
 *  so nothing it sends wakes its session on the server afterwards. */
async function settle(ds: CrdtdbDataStore): Promise<void> {
  await until(() => ds.sync!.status.state === "synced", "the JS replica synced");
  await sleep(300);
}

test("commits that change no rendering (same value, hidden leaves, a remove of a record never shown) reach an idle client", { timeout: 60_000 }, async () => {
  await withServer("Items", [], async (srv, tmp) => {
    const c0 = join(tmp, "c0"), c1 = join(tmp, "c1");
    for (const d of [c0, c1]) {
      cli(d, "init");
      cli(d, "create", DB, "--collections", "Items");
    }
    const sync = (d: string): void => { cli(d, "sync", srv.url, "--db", DB, "--timeout", "15"); };
    const errors: string[] = [];
    const ds = await CrdtdbDataStore.open({
      dbId: DB, collections: ["Items"], backend: new FileBackend(join(tmp, "js.crdtdb")),
      sync: { url: srv.url, socket: nodeSocket(), minBackoffMs: 30, maxBackoffMs: 250, onEvent: (e) => { if (e.type === "error") errors.push(`${e.code}: ${e.message}`); } },
    });
    try {
      const c0id = cli(c0, "id").trim();
      cli(c0, "add", DB, "Items", "x", '{"v":1,"w":2}');
      sync(c0);
      sync(c1);
      await until(async () => (ds.replica.get("Items", "x")) !== null, "x at the JS replica");
      await settle(ds);

      // 1. the value it already has, under a new stamp: nothing shows differently
      const before = stamps(ds, "Items", "x").get('["v"]');
      cli(c0, "update", DB, "Items", "x", '{"v":1}');
      sync(c0);
      await until(() => { const s = stamps(ds, "Items", "x").get('["v"]'); return s !== before && s!.endsWith(c0id); },
        "the same-value update at the idle JS replica", 5_000);

      // 2. leaves newer than a remove they did not see: hidden at once
      cli(c1, "remove", DB, "Items", "x");
      sync(c1);
      await until(async () => (ds.replica.get("Items", "x")) === null, "the remove at the JS replica");
      await settle(ds);
      cli(c0, "update", DB, "Items", "x", '{"u":3}'); // c0 has not seen the remove
      sync(c0);
      await until(() => stamps(ds, "Items", "x").has('["u"]'), "the hidden leaf at the idle JS replica", 5_000);
      assert.equal(ds.replica.get("Items", "x"), null, "the remove wins over the update it raced");
      await settle(ds);

      // 3. a record added and removed before it was ever sent: only its tombstone travels
      cli(c0, "add", DB, "Items", "y", '{"v":1}');
      cli(c0, "remove", DB, "Items", "y");
      sync(c0);
      await until(() => stamps(ds, "Items", "y").get("#base")?.startsWith("2@") ?? false,
        "the tombstone at the idle JS replica", 5_000);
      assert.deepEqual(errors, []);
    } finally {
      await ds.close();
    }
  }, "crdtdb-js-quiet-");
});
