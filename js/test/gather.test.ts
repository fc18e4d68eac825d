/**
 * A session catching up over a backend whose commits are costly
 * (Backend.costlyCommit: IndexedDB) gathers the deltas that arrive back to
 * back into fewer commits (session.ts GATHER_*), and stops gathering once
 * caught up.  A real `crdtdb serve`; the client's socket hands each
 * message over 1 ms after the one before (a page's WebSocket delivers
 * messages one task at a time), so without gathering each run would be
 * one or two deltas.
 */
import test from "node:test";
import assert from "node:assert/strict";
import { CrdtdbDataStore, MemoryBackend, type Batch } from "../src/index.js";
import { nodeSocket } from "../src/node.js";
import type { SocketFactory } from "../src/sync.js";
import { standIn, until, withServer } from "./helpers.js";

/** Memory, counting the commits that store records. */
class Counting extends MemoryBackend {
  commits = 0;
  constructor(readonly costlyCommit: boolean) { super(); }
  override async commit(b: Batch): Promise<void> {
    if (b.put.size) this.commits++;
  }
}

/** nodeSocket, with each message received handed on 1 ms after the one before. */
function dripping(): SocketFactory {
  const base = nodeSocket();
  return (url, headers) => {
    const real = base(url, headers);
    const queue: unknown[] = [];
    let timer: ReturnType<typeof setTimeout> | null = null;
    const me = standIn(real);
    const next = (): void => {
      timer = null;
      const data = queue.shift();
      if (data === undefined) return;
      me.onmessage?.({ data });
      if (queue.length) timer = setTimeout(next, 1);
    };
    const closed = real.onclose!;
    real.onclose = (e) => { if (timer) clearTimeout(timer); closed(e); };
    real.onmessage = (e) => {
      queue.push(e.data);
      timer ??= setTimeout(next, 1);
    };
    return me;
  };
}

test("a catch-up over a costly backend commits fewer, larger runs; once caught up each delta commits as it comes", async () => {
  await withServer("big", [], async (srv) => {
    const w = await CrdtdbDataStore.open({ dbId: "g", collections: ["big"], sync: { url: srv.url, socket: nodeSocket() } });
    const rows = Object.fromEntries(Array.from({ length: 6000 }, (_, i) =>
      ["r" + i, { a: i, b: "x".repeat(20), c: { d: i * 2, e: "y" + i }, f: i % 7 === 0 }]));
    await w.addAll("big", rows);
    await w.sync!.whenSynced();
    let bump = 0;
    const fresh = async (costly: boolean): Promise<number> => {
      await w.sync!.whenSynced();
      const want = await w.query("big", {});
      const be = new Counting(costly);
      const ds = await CrdtdbDataStore.open({ dbId: "g", collections: ["big"], backend: be, sync: { url: srv.url, socket: dripping() } });
      try {
        await ds.sync!.whenSynced();
        assert.deepEqual(await ds.query("big", {}), want);
        const n = be.commits;
        // caught up: a later write reaches it in a commit of its own, not held for more
        const a = -1000 * ++bump;
        await w.update("big", "r5", { a });
        await until(async () => (await ds.getById("big", "r5", true))?.a === a, "the update");
        assert.equal(be.commits, n + 1);
        return n;
      } finally {
        await ds.close();
      }
    };
    try {
      const plain = await fresh(false), gathered = await fresh(true);
      assert.ok(gathered <= 2, `gathered into ${gathered} commits`);
      assert.ok(gathered < plain, `gathered ${gathered}, plain ${plain}`);
    } finally {
      await w.close();
    }
  });
});
