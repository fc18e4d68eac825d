/**
 * The history chain of a replica that applies peers' deltas: each delta is
 * noted once (by its signature), so two copies of one identity that apply
 * different deltas over the same range part, and copies that apply the
 * same one stay together (docs/protocol.md, "History fingerprints").
 */
import test from "node:test";
import assert from "node:assert/strict";
import { MemoryBackend, Replica } from "../src/index.js";
import type { Loaded } from "../src/backend.js";

const SEED = new Uint8Array(32).fill(3);
class Seeded extends MemoryBackend {
  override async load(): Promise<Loaded> {
    return { meta: { seed: SEED, seq: 0, hlc: 0n, fp: new Uint8Array(16), points: [], peers: {}, readonly: false }, records: new Map() };
  }
}
const open = (backend = new MemoryBackend()) => Replica.open({ dbId: "db", collections: ["C"], backend });
const fpOf = (r: Replica): string => Buffer.from((r as unknown as { meta: { fp: Uint8Array } }).meta.fp).toString("hex");

test("copies of one identity part when they apply different deltas, not when they apply the same", async () => {
  const p = await open(), q = await open();
  await p.add("C", [["a", { v: 1 }], ["b", { v: 2 }]]);
  await q.add("C", [["a", { v: 1 }], ["b", { v: 3 }]]);
  const a = await open(new Seeded()), b = await open(new Seeded()), c = await open(new Seeded());
  assert.equal(a.idHex, b.idHex);
  const [x] = (await p.exportFor(a.id, 0)).deltas, [y] = (await q.exportFor(a.id, 0)).deltas;
  await a.apply(x!.bytes);
  await c.apply(x!.bytes);
  await b.apply(y!.bytes);
  assert.equal(a.seq, b.seq);
  assert.equal(fpOf(a), fpOf(c), "the same delta: one history");
  assert.notEqual(fpOf(a), fpOf(b), "different deltas over one range: two histories");
  // a resent delta numbers nothing and leaves the chain as it was
  const before = fpOf(a);
  await a.apply(x!.bytes);
  assert.equal(fpOf(a), before);
  for (const r of [p, q, a, b, c]) await r.close();
});
