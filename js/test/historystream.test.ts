/**
 * The history chain hashed as it is written (a native incremental SHA-256,
 * installed by crdtdb/node) gives the fingerprint the one-buffer hash
 * gives: two replicas of one identity and clock making the same big commit
 * (notes well over the 64 KiB a stream is fed at a time) and a small one,
 * one with the stream and one without, end with the same chain.
 */
import test from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { MemoryBackend, Replica } from "../src/index.js";
import type { Loaded } from "../src/backend.js";
import { setSha256Stream } from "../src/history.js";

const SEED = new Uint8Array(32).fill(5);
class Seeded extends MemoryBackend {
  override async load(): Promise<Loaded> {
    return { meta: { seed: SEED, seq: 0, hlc: 0n, fp: new Uint8Array(16), points: [], peers: {}, readonly: false }, records: new Map() };
  }
}
const nodeStream = () => {
  const h = createHash("sha256");
  return { update: (b: Uint8Array) => { h.update(b); }, digest: () => new Uint8Array(h.digest()) };
};
const fpOf = (r: Replica): string => Buffer.from((r as unknown as { meta: { fp: Uint8Array } }).meta.fp).toString("hex");

async function chain(stream: boolean): Promise<string[]> {
  setSha256Stream(stream ? nodeStream : null);
  try {
    const r = await Replica.open({ dbId: "db", collections: ["C"], backend: new Seeded(), now: () => 1_700_000_000_000 });
    const fps: string[] = [];
    const items: [string, { [k: string]: number | string }][] = [];
    for (let i = 0; i < 3000; i++) items.push([`rec-${i}`, { a: i, b: "x".repeat(i % 7), c: -i, ["ü" + (i % 3)]: i / 2 }]);
    await r.add("C", items);
    fps.push(fpOf(r));
    await r.update("C", "rec-1", { a: 2 });
    fps.push(fpOf(r));
    await r.close();
    return fps;
  } finally {
    setSha256Stream(null);
  }
}

test("a big commit's chain is the same hashed as a stream and in one buffer", async () => {
  const streamed = await chain(true), whole = await chain(false);
  assert.equal(streamed.length, 2);
  assert.deepEqual(streamed, whole);
  assert.notEqual(streamed[0], "0".repeat(32));
  assert.notEqual(streamed[0], streamed[1]);
});
