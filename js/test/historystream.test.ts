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

test("the chain's notes are the bytes they always were: known fingerprints, with and without a stream", async () => {
  // computed by the History of git e4a3ea9 (one buffer grown by doubling, a stamp written per note)
  const { History } = await import("../src/history.js");
  const o1 = new Uint8Array(32).fill(1), o2 = new Uint8Array(32).fill(2);
  const want: [number, string][] = [[3, "eb39659c3547d1aed8ebe0ff57eb7cb8"], [50, "6d672711da3e3d7efc21e864496e6165"],
    [5000, "d209ec8db17ee98d4c4bbc06d64db20d"], [30000, "7b66ceb48e351d0b5ecb318b2e82b907"]];
  for (const stream of [false, true]) {
    setSha256Stream(stream ? nodeStream : null);
    try {
      for (const [n, fp] of want) {
        const h = new History();
        for (let i = 0; i < n; i++) h.note(i + 1, i % 3, i % 2, BigInt(1000 + (i >> 3)), i % 7 ? o1 : o2, "r" + (i >> 3), i % 5 ? ["c" + (i % 10), "é"] : null);
        if (n === 50) h.noteDelta(new Uint8Array(64).fill(3));
        assert.equal(Buffer.from(await h.commit(new Uint8Array(16), 0, n)).toString("hex"), fp, `${n} notes, stream ${stream}`);
      }
    } finally {
      setSha256Stream(null);
    }
  }
});
