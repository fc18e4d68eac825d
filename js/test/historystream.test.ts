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
import { setSha256, setSha256Stream } from "../src/history.js";

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

async function chain(stream: boolean, oneShot = false): Promise<string[]> {
  setSha256Stream(stream ? nodeStream : null);
  setSha256(oneShot ? (b) => new Uint8Array(createHash("sha256").update(b).digest()) : null);
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
    setSha256(null);
  }
}

test("a big commit's chain is the same hashed as a stream and in one buffer", async () => {
  const streamed = await chain(true), whole = await chain(false);
  assert.equal(streamed.length, 2);
  assert.deepEqual(streamed, whole);
  assert.notEqual(streamed[0], "0".repeat(32));
  assert.notEqual(streamed[0], streamed[1]);
});

test("a small commit's digests are the same by node:crypto's one-shot (crdtdb/node) and by noble's", async () => {
  const native = await chain(false, true), noble = await chain(false);
  assert.deepEqual(native, noble);
});

test("the chain's notes are the bytes history.ts says: a small commit encoded by hand", async () => {
  const { History } = await import("../src/history.js");
  const o1 = new Uint8Array(32).fill(1), o2 = new Uint8Array(32).fill(2);
  const str = (s: string): Buffer => { const b = Buffer.from(s, "utf8"); const n = Buffer.alloc(2); n.writeUInt16BE(b.length); return Buffer.concat([n, b]); };
  const u16 = (v: number): Buffer => { const b = Buffer.alloc(2); b.writeUInt16BE(v); return b; };
  const stamp = (hlc: bigint, o: Uint8Array): Buffer => { const b = Buffer.alloc(9); b[0] = 0xf1; b.writeBigUInt64BE(hlc, 1); return Buffer.concat([b, o]); };
  const rec = (coll: number, id: string): Buffer => Buffer.concat([Buffer.from([0xf2]), u16(coll), str(id)]);
  const reg = (kind: number, path: string[] | null): Buffer => Buffer.concat([Buffer.from([kind]), u16(path ? path.length : 0xffff), ...(path ?? []).map(str)]);
  // a base and two fields of "ré" under one stamp; a field of "b" (another
  // collection) under another origin; a peer's delta
  const notes = Buffer.concat([stamp(7n, o1), rec(1, "ré"), reg(1, null), reg(0, ["x"]), reg(1, ["m", "ü"]),
    stamp(7n, o2), rec(2, "b"), reg(0, ["y"]), Buffer.from([0xf3]), Buffer.alloc(64, 9)]);
  const prev = new Uint8Array(16).fill(4);
  const head = Buffer.alloc(32); Buffer.from(prev).copy(head); head.writeBigUInt64BE(10n, 16); head.writeBigUInt64BE(14n, 24);
  const want = createHash("sha256").update(Buffer.concat([head, createHash("sha256").update(notes).digest()])).digest().subarray(0, 16);
  for (const stream of [false, true]) {
    setSha256Stream(stream ? nodeStream : null);
    try {
      const h = new History();
      // a failed commit's notes, and what they said, are forgotten
      h.note(1, 1, 7n, o1, "ré", null);
      h.reset();
      h.note(1, 1, 7n, o1, "ré", null);
      h.note(1, 0, 7n, new Uint8Array(o1), "ré", ["x"]); // the same origin in another array says nothing new
      h.note(1, 1, 7n, o1, "ré", ["m", "ü"]);
      h.note(2, 0, 7n, o2, "b", ["y"]);
      h.noteDelta(new Uint8Array(64).fill(9));
      assert.equal(Buffer.from(await h.commit(prev, 10, 14)).toString("hex"), Buffer.from(want).toString("hex"), `stream ${stream}`);
      // the next commit says its stamp and record again
      h.note(1, 1, 7n, o1, "ré", null);
      const again = Buffer.concat([stamp(7n, o1), rec(1, "ré"), reg(1, null)]);
      const head2 = Buffer.alloc(32); head2.writeBigUInt64BE(14n, 16); head2.writeBigUInt64BE(15n, 24);
      const want2 = createHash("sha256").update(Buffer.concat([head2, createHash("sha256").update(again).digest()])).digest().subarray(0, 16);
      assert.equal(Buffer.from(await h.commit(new Uint8Array(16), 14, 15)).toString("hex"), Buffer.from(want2).toString("hex"));
    } finally {
      setSha256Stream(null);
    }
  }
});

test("the chain's notes stay the bytes they are: known fingerprints, with and without a stream", async () => {
  // computed by the History of the notes above (a stamp and record where they change); notes well over
  // the 64 KiB a stream takes at a time cross its chunks mid-item
  const { History } = await import("../src/history.js");
  const o1 = new Uint8Array(32).fill(1), o2 = new Uint8Array(32).fill(2);
  const want: [number, string][] = [[3, "509b3f00b0eeef37f2cb9596e4cc0d9f"], [50, "01b58dcc24a41c394339f04506156d8a"], [5000, "82701796ccc3373670c38adedd1d1928"], [30000, "38a47426443e68c276527ef30f935688"]];
  for (const stream of [false, true]) {
    setSha256Stream(stream ? nodeStream : null);
    try {
      for (const [n, fp] of want) {
        const h = new History();
        for (let i = 0; i < n; i++) h.note(i % 3, i % 2, BigInt(1000 + (i >> 3)), i % 7 ? o1 : o2, "r" + (i >> 3), i % 5 ? ["c" + (i % 10), "é"] : null);
        if (n === 50) h.noteDelta(new Uint8Array(64).fill(3));
        assert.equal(Buffer.from(await h.commit(new Uint8Array(16), 0, n)).toString("hex"), fp, `${n} notes, stream ${stream}`);
      }
    } finally {
      setSha256Stream(null);
    }
  }
});

test("the chain's notes read back one way: keys of 64 KiB and more, paths of 65,534 keys and more", async () => {
  const { History } = await import("../src/history.js");
  const o1 = new Uint8Array(32).fill(1);
  // two commits of two registers each, [K] then ["z"] and ["q"] then [L],
  // whose notes were the same bytes while a key's u16 length wrapped
  const Y = "y".repeat(65531);
  const K = "q\u0000\u0000\u0001\u0000\u0001" + Y, L = Y + "\u0000\u0000\u0001\u0000\u0001z";
  const fp = async (paths: string[][]): Promise<string> => {
    const h = new History();
    for (const p of paths) h.note(0, 0, 1n, o1, "a", p);
    return Buffer.from(await h.commit(new Uint8Array(16), 0, paths.length)).toString("hex");
  };
  assert.notEqual(await fp([[K], ["z"]]), await fp([["q"], [L]]));

  // and the notes of long keys and long paths decode to what was noted
  const paths: (string[] | null)[] = [["k".repeat(70000)], ["é".repeat(32767) + "x"], ["é".repeat(32767)], Array(0xffff).fill(""),
    Array(0xfffe).fill("a"), Array(0xfffd).fill(""), Array(65537).fill(""), null, ["z"]];
  const chunks: Buffer[] = [];
  setSha256Stream(() => {
    const h = createHash("sha256");
    return { update: (b: Uint8Array) => { chunks.push(Buffer.from(b)); h.update(b); }, digest: () => new Uint8Array(h.digest()) };
  });
  try {
    const h = new History();
    for (const p of paths) h.note(3, p ? 0 : 1, 9n, o1, "r", p);
    await h.commit(new Uint8Array(16), 0, paths.length);
  } finally {
    setSha256Stream(null);
  }
  const b = Buffer.concat(chunks);
  let o = 0;
  const rd = (): string => {
    let n = b.readUInt16BE(o); o += 2;
    if (n === 0xffff) { n = b.readUInt32BE(o); o += 4; }
    const s = b.toString("utf8", o, o + n); o += n;
    return s;
  };
  assert.equal(b[o++], 0xf1); o += 40;
  assert.equal(b[o++], 0xf2); assert.equal(b.readUInt16BE(o), 3); o += 2; assert.equal(rd(), "r");
  const got: (string[] | null)[] = [];
  while (o < b.length) {
    assert.ok(b[o++]! < 0xf0);
    let n = b.readUInt16BE(o); o += 2;
    if (n === 0xffff) { got.push(null); continue; }
    if (n === 0xfffe) { n = b.readUInt32BE(o); o += 4; }
    const p: string[] = [];
    for (let i = 0; i < n; i++) p.push(rd());
    got.push(p);
  }
  assert.equal(got.length, paths.length);
  for (let i = 0; i < paths.length; i++) assert.deepEqual(got[i], paths[i], `register ${i}`);
});
