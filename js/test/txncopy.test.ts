/* A transaction's copy of a record shares the committed registers (the
 * replica changes a register in place only while it is new, seq 0): a
 * commit the backend refuses must leave the committed records exactly as
 * they were — registers, sequences and rendering — for a local update and
 * for a peer's delta alike, and the next commit must then go through. */
import test from "node:test";
import assert from "node:assert/strict";

import { CrdtdbError } from "../src/errors.js";
import { MemoryBackend, type Batch } from "../src/backend.js";
import { Replica } from "../src/replica.js";
import type { StoredRecord } from "../src/types.js";
import { valueBytes } from "../src/value.js";
import "../src/nodecrypto.js";

/** A memory backend whose next commit can be made to fail. */
class FailingBackend extends MemoryBackend {
  failNext = false;
  override async commit(b: Batch): Promise<void> {
    if (this.failNext) {
      this.failNext = false;
      throw new CrdtdbError("EIO", "injected commit failure");
    }
    return super.commit(b);
  }
}

/** Everything stored of a record, as plain data (registers by value). */
function snapshot(r: StoredRecord | undefined): unknown {
  if (!r) return null;
  const reg = (g: { hlc: bigint; origin: Uint8Array; seq: number; src: unknown }) => ({ hlc: String(g.hlc), origin: Array.from(g.origin), seq: g.seq, src: g.src });
  return {
    base: r.base && { kind: r.base.kind, ...reg(r.base) },
    leaves: r.leaves.map((l) => ({ path: [...l.path], value: l.vbuf && Array.from(valueBytes(l)!), ...reg(l) })),
  };
}

const COLLS = ["c"];

test("txn copy: a refused local commit leaves the committed record and its registers as they were", async () => {
  const be = new FailingBackend();
  const r = await Replica.open({ dbId: "txn", collections: COLLS, backend: be });
  try {
    await r.add("c", [["a", { x: 1, m: { y: 2, z: 3 } }]]);
    const before = snapshot(r.stored("c", "a"));
    const seq = r.seq;
    be.failNext = true;
    await assert.rejects(r.update("c", "a", { x: 5, m: { y: 7 } }), (e: unknown) => e instanceof CrdtdbError && e.code === "EIO");
    assert.deepEqual(snapshot(r.stored("c", "a")), before);
    assert.deepEqual(r.get("c", "a"), { id: "a", x: 1, m: { y: 2, z: 3 } });
    assert.equal(r.seq, seq);
    // a remove refused too
    be.failNext = true;
    await assert.rejects(r.remove("c", "a"));
    assert.deepEqual(snapshot(r.stored("c", "a")), before);
    // and then the same update goes through, numbered after what was
    await r.update("c", "a", { x: 5, m: { y: 7 } });
    assert.deepEqual(r.get("c", "a"), { id: "a", x: 5, m: { y: 7, z: 3 } });
    const after = r.stored("c", "a")!;
    assert.ok(after.leaves.every((l) => l.seq > 0 && l.seq <= r.seq));
    assert.equal(r.seq, seq + 2);
  } finally {
    await r.close();
  }
});

test("txn copy: a peer's delta whose commit is refused changes nothing; applied again it merges", async () => {
  const w = await Replica.open({ dbId: "txn", collections: COLLS, backend: new MemoryBackend() });
  const be = new FailingBackend();
  const r = await Replica.open({ dbId: "txn", collections: COLLS, backend: be });
  try {
    await w.add("c", [["a", { x: 1, m: { y: 2 } }], ["b", { k: "v" }]]);
    let x = await w.exportFor(r.id, 0);
    for (const d of x.deltas) await r.apply(d.bytes, w.id);
    const beforeA = snapshot(r.stored("c", "a")), beforeB = snapshot(r.stored("c", "b"));
    const seq = r.seq;
    const from = w.seq;
    await w.update("c", "a", { x: 2, m: { y: 3, q: 4 } });
    await w.remove("c", "b");
    x = await w.exportFor(r.id, from);
    assert.equal(x.deltas.length, 1);
    be.failNext = true;
    await assert.rejects(r.apply(x.deltas[0]!.bytes, w.id), (e: unknown) => e instanceof CrdtdbError && e.code === "EIO");
    assert.deepEqual(snapshot(r.stored("c", "a")), beforeA);
    assert.deepEqual(snapshot(r.stored("c", "b")), beforeB);
    assert.deepEqual(r.get("c", "a"), { id: "a", x: 1, m: { y: 2 } });
    assert.equal(r.seq, seq);
    await r.apply(x.deltas[0]!.bytes, w.id);
    assert.deepEqual(r.get("c", "a"), { id: "a", x: 2, m: { y: 3, q: 4 } });
    assert.equal(r.get("c", "b"), null);
    assert.ok(r.seq > seq);
  } finally {
    await w.close();
    await r.close();
  }
});
