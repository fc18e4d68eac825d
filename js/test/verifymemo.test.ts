/* decodeDelta's memo of deltas this process verified (src/delta.ts): the
 * same bytes again, from another buffer, are taken without a second verify;
 * anything else that shares the signature, or its first bytes, is verified
 * (and refused) as before.  And two replicas of one process both apply a
 * delta they receive the same bytes of, as a server's fan-out sends them. */
import test from "node:test";
import { createRequire } from "node:module";
import assert from "node:assert/strict";

import { CrdtdbError } from "../src/errors.js";
import { decodeDelta, decodeDeltaShared, encodeDelta, forgetVerified } from "../src/delta.js";
import { keyPairFromSeed, setSyncVerify, type SyncVerify } from "../src/keys.js";
import { MemoryBackend } from "../src/backend.js";
import { Replica } from "../src/replica.js";
import "../src/nodecrypto.js";
import type { DeltaBody } from "../src/types.js";

const H = 1700000000000n << 16n;

async function signed(value: number): Promise<{ bytes: Uint8Array; body: DeltaBody }> {
  const kp = await keyPairFromSeed(new Uint8Array(32).fill(5));
  const v = new Uint8Array([value & 0x7f]); // a positive fixint
  const body: DeltaBody = {
    dbId: "memo", sender: kp.publicKey, from: 0, to: 2, ack: null,
    records: [{ coll: "c", id: "r1", base: { kind: 1, hlc: H, origin: kp.publicKey }, fields: [{ path: ["x"], hlc: H, origin: kp.publicKey, value: v }] }],
    history: [], recipient: null,
  };
  return { bytes: await encodeDelta(body, kp), body };
}

async function refusedSig(bytes: Uint8Array): Promise<void> {
  await assert.rejects(decodeDelta(bytes), (e: unknown) => e instanceof CrdtdbError && e.code === "EBADSIG");
}

type Sodium = { crypto_sign_verify_detached(sig: Uint8Array, msg: Uint8Array, pk: Uint8Array): boolean };
function sodium(): Sodium | null {
  try { return createRequire(import.meta.url)("sodium-native") as Sodium; } catch { return null; }
}

/** Counts the verifies done while fn runs (with sodium-native, which
 *  crdtdb/node installs when it loads; -1 without it). */
async function counting(fn: () => Promise<void>): Promise<number> {
  const na = sodium();
  if (!na) { await fn(); return -1; }
  const inner: SyncVerify = (pk, msg, sig) => na.crypto_sign_verify_detached(sig, msg, pk);
  let n = 0;
  setSyncVerify((pk, msg, sig) => { n++; return inner(pk, msg, sig); });
  try {
    await fn();
  } finally {
    setSyncVerify(inner);
  }
  return n;
}

test("verify memo: the same bytes again are not verified again; changed bytes are, and are refused", async () => {
  forgetVerified();
  const { bytes, body } = await signed(7);
  const n = await counting(async () => {
    assert.deepEqual((await decodeDelta(bytes)).records[0]!.id, "r1");
    // the same delta in another buffer (as each socket gives it)
    const again = await decodeDelta(new Uint8Array(bytes));
    assert.equal(again.records[0]!.fields[0]!.value![0], 7);
    assert.equal(again.dbId, body.dbId);
  });
  if (n >= 0) assert.equal(n, 1, "one verify for two receipts of the same bytes");

  // one body byte changed (the value), the signature kept: refused
  const body1 = new Uint8Array(bytes);
  const at = body1.length - 64 - 2 - 1; // the value fixint: the body's last record field ends just before [history, recipient]
  let changed = false;
  for (let i = at; i > 0; i--) if (body1[i] === 7) { body1[i] = 8; changed = true; break; }
  assert.ok(changed, "found the value byte");
  await refusedSig(body1);
  // a signature byte changed: in its first four bytes (the memo's key) and after
  for (const i of [0, 3, 40, 63]) {
    const s = new Uint8Array(bytes);
    s[s.length - 64 + i] ^= 1;
    await refusedSig(s);
  }
  // the good one is still taken
  await decodeDelta(new Uint8Array(bytes));
});

test("verify memo: a refused delta is not remembered; forgetVerified verifies again", async () => {
  forgetVerified();
  const { bytes } = await signed(9);
  const bad = new Uint8Array(bytes);
  bad[bad.length - 1] ^= 0x80;
  await refusedSig(bad);
  await refusedSig(new Uint8Array(bad));
  const n = await counting(async () => {
    await decodeDelta(bytes);
    forgetVerified();
    await decodeDelta(bytes);
    await decodeDelta(bytes);
  });
  if (n >= 0) assert.equal(n, 2);
});

test("verify memo: two replicas of one process apply the same delta bytes", async () => {
  forgetVerified();
  const { bytes, body } = await signed(11);
  const rs = await Promise.all([0, 1].map(() => Replica.open({ dbId: "memo", collections: ["c"], backend: new MemoryBackend() })));
  try {
    for (const r of rs) {
      const info = await r.apply(new Uint8Array(bytes), body.sender);
      assert.equal(info.received, 2);
      assert.deepEqual(r.get("c", "r1"), { id: "r1", x: 11 });
    }
    // a forged copy (another value under the same signature) is refused by a third
    const r3 = await Replica.open({ dbId: "memo", collections: ["c"], backend: new MemoryBackend() });
    const forged = new Uint8Array(bytes);
    for (let i = forged.length - 64 - 3; i > 0; i--) if (forged[i] === 11) { forged[i] = 12; break; }
    await assert.rejects(r3.apply(forged, body.sender), (e: unknown) => e instanceof CrdtdbError && e.code === "EBADSIG");
    assert.equal(r3.get("c", "r1"), null);
    await r3.close();
  } finally {
    for (const r of rs) await r.close();
  }
});

test("verify memo: replicas share one decoded body from the memo's own copy, under the same limits only", async () => {
  forgetVerified();
  const { bytes, body } = await signed(13);
  const open = () => Replica.open({ dbId: "memo", collections: ["c"], backend: new MemoryBackend() });
  const [a, b, c] = await Promise.all([open(), open(), open()]);
  try {
    // the first receipt decodes the caller's bytes; its caller then reuses its buffer
    const first = new Uint8Array(bytes);
    await a.apply(first, body.sender);
    first.fill(0);
    // later receipts decode the memo's private copy, never a caller's
    // buffer: c's registers do not change when b's caller reuses its own
    const second = new Uint8Array(bytes);
    await b.apply(second, body.sender);
    await c.apply(new Uint8Array(bytes), body.sender);
    second.fill(0);
    assert.deepEqual(b.get("c", "r1"), { id: "r1", x: 13 });
    assert.deepEqual(c.get("c", "r1"), { id: "r1", x: 13 });
    const d1 = await decodeDeltaShared(new Uint8Array(bytes), b.limits);
    const d2 = await decodeDeltaShared(new Uint8Array(bytes), c.limits);
    assert.equal(d1, d2, "one body for the same bytes and limits");
    assert.equal(d1.records[0]!.fields[0]!.value![0], 13);
    // stricter limits: decoded (and refused) again, not the shared body
    await assert.rejects(decodeDeltaShared(new Uint8Array(bytes), { ...b.limits, maxValueSize: 0 }),
      (e: unknown) => e instanceof CrdtdbError && e.code === "ETOOBIG");
    assert.equal(await decodeDeltaShared(new Uint8Array(bytes), b.limits), d1);
    // a body not in the memo (a forged copy) is decoded and refused
    const forged = new Uint8Array(bytes);
    for (let i = forged.length - 64 - 3; i > 0; i--) if (forged[i] === 13) { forged[i] = 14; break; }
    await assert.rejects(decodeDeltaShared(forged, b.limits), (e: unknown) => e instanceof CrdtdbError && e.code === "EBADSIG");
  } finally {
    for (const r of [a, b, c]) await r.close();
  }
});
