/**
 * Leaf values are ranges of shared buffers (types.ts ValueRef): what a
 * backend writes is each range, never the buffer it lies in.
 */
import test from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { FileBackend } from "../src/node.js";
import type { Meta } from "../src/backend.js";
import { decodeRecord, encodeRecord } from "../src/storedrecord.js";
import type { Leaf, StoredRecord } from "../src/types.js";
import { valueBytes } from "../src/value.js";

/** 200 records of 5 one-byte values each, all ranges of one 64 KiB buffer. */
function sharing(): { shared: Uint8Array; records: Map<string, StoredRecord> } {
  const shared = new Uint8Array(1 << 16).map((_, i) => i & 0x7f);
  const o = new Uint8Array(32).fill(5);
  const records = new Map<string, StoredRecord>();
  for (let r = 0; r < 200; r++) {
    const leaves: Leaf[] = [];
    for (let f = 0; f < 5; f++) {
      const at = (r * 5 + f) * 997 % shared.length;
      leaves.push({ path: ["f" + f], hlc: 10n, origin: o, vbuf: shared, voff: at, vlen: 1, seq: r * 5 + f + 1, src: "" });
    }
    records.set("C\u0000r" + r, { base: { kind: 1, hlc: 10n, origin: o, seq: 0, src: "" }, leaves });
  }
  return { shared, records };
}

const values = (records: Map<string, StoredRecord>): unknown =>
  [...records].map(([k, r]) => [k, r.leaves.map((l) => [l.path[0], Array.from(valueBytes(l)!)])]);

test("the file journal holds each value's bytes, not the buffer they share", async () => {
  const dir = mkdtempSync(join(tmpdir(), "crdtdb-vref-"));
  try {
    const file = join(dir, "r.crdtdb");
    const { records } = sharing();
    const meta: Meta = { seed: new Uint8Array(32).fill(1), seq: 1000, hlc: 10n, fp: new Uint8Array(16), points: [], peers: {}, readonly: false };
    const b = new FileBackend(file);
    await b.load();
    await b.commit({ meta, put: records, del: new Set() });
    await b.close();
    // 1,000 values: the buffer each would be 64 MiB (the registers, ~100 bytes a leaf, are 100 KiB)
    assert.ok(statSync(file).size < 256 * 1024, `journal of ${statSync(file).size} bytes`);
    const again = new FileBackend(file);
    const { records: back } = await again.load();
    await again.close();
    assert.deepEqual(values(back), values(records));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("a stored record holds each value's bytes; read back, its values point into the bytes read", () => {
  const { records } = sharing();
  const r = records.get("C\u0000r7")!;
  const bytes = encodeRecord(r);
  assert.ok(bytes.length < 200, `record of ${bytes.length} bytes`);
  const back = decodeRecord(bytes);
  assert.deepEqual(values(new Map([["k", back]])), values(new Map([["k", r]])));
  for (const l of back.leaves) assert.equal(l.vbuf, bytes);
});
