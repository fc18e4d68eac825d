/* The replica's log keeps a record's registers of one commit as one run of
 * sequences (replica.ts install), not an entry a register.  An export from
 * any point — the middle of a run, a chunk ending mid-record, after stale
 * entries and after the log is rebuilt — must carry exactly the registers
 * numbered after that point, and a peer caught up from there must end with
 * the same records. */
import test from "node:test";
import assert from "node:assert/strict";

import { MemoryBackend } from "../src/backend.js";
import { decodeDelta } from "../src/delta.js";
import { Replica } from "../src/replica.js";
import "../src/nodecrypto.js";

const COLLS = ["c"];
const open = () => Replica.open({ dbId: "d", collections: COLLS, backend: new MemoryBackend() });

/** Every register a holds with seq > after, as "id base" / "id path". */
function heldAfter(a: Replica, ids: string[], after: number): string[] {
  const out: string[] = [];
  for (const id of ids) {
    const r = a.stored("c", id);
    if (!r) continue;
    if (r.base && r.base.seq > after) out.push(`${id} base`);
    for (const l of r.leaves) if (l.seq > after) out.push(`${id} ${l.path.join("/")}`);
  }
  return out.sort();
}

/** Every register the deltas carry, as heldAfter names them. */
async function carried(deltas: { bytes: Uint8Array }[]): Promise<string[]> {
  const out: string[] = [];
  for (const d of deltas)
    for (const rec of (await decodeDelta(d.bytes)).records) {
      if (rec.base) out.push(`${rec.id} base`);
      for (const f of rec.fields) out.push(`${rec.id} ${f.path.join("/")}`);
    }
  return out.sort();
}

function fields(n: number, v: number): Record<string, number> {
  const o: Record<string, number> = {};
  for (let c = 0; c < n; c++) o[`f${c}`] = v * 100 + c;
  return o;
}

test("log runs: an export from every point, mid-run included, carries exactly what came after", async () => {
  const a = await open(), b = await open();
  const ids = ["r0", "r1", "r2", "r3"];
  await a.add("c", ids.map((id, i) => [id, fields(6, i)]));   // four runs of 7 in one commit
  await a.update("c", "r1", { f2: -1, f4: -2 });               // a run of 2; two entries of r1's run go stale
  await a.update("c", "r3", { f0: { deep: 1 } });              // a run of 1
  await a.remove("c", "r0");                                   // r0's leaves die: its whole run stale
  const last = a.seq;
  assert.ok(last >= 31, `sequences: ${last}`);
  for (let after = 0; after < last; after++) {
    const want = heldAfter(a, ids, after);
    const x = await a.exportFor(b.id, after, { all: true });
    assert.deepEqual(await carried(x.deltas), want, `export after ${after}`);
    if (want.length) assert.equal(x.deltas.at(-1)?.to, last);
    // scanFrom: (0, after] known empty for the peer, so only records found
    // after it are sent, each with its registers of (0, last]
    const found = ids.filter((id) => heldAfter(a, [id], after).length);
    const y = await a.exportFor(b.id, 0, { all: true, scanFrom: after });
    assert.deepEqual(await carried(y.deltas), heldAfter(a, found, 0), `export scanned from ${after}`);
  }
  await a.close();
  await b.close();
});

test("log runs: small deltas cut records mid-run, and a peer caught up from each cut matches", async () => {
  const a = await open();
  const ids: string[] = [];
  const items: [string, Record<string, number>][] = [];
  for (let i = 0; i < 20; i++) { ids.push(`r${i}`); items.push([`r${i}`, fields(10, i)]); }
  await a.add("c", items);
  await a.update("c", "r7", { f3: 7 });
  const last = a.seq;
  // chunks of a few hundred bytes: most end inside a record's run
  const x = await a.exportFor(new Uint8Array(32).fill(9), 0, { maxBytes: 600 });
  assert.ok(x.deltas.length > 5, `deltas: ${x.deltas.length}`);
  const cuts = x.deltas.map((d) => d.to);
  assert.ok(cuts.some((to) => to % 11 !== 0), `some chunk ends mid-record: ${cuts.join(",")}`);
  assert.deepEqual(await carried(x.deltas), heldAfter(a, ids, 0));
  for (const d of x.deltas) {
    // a peer that holds the deltas up to this cut, then catches up from it
    const b = await open();
    for (const e of x.deltas) { if (e.to > d.to) break; await b.apply(e.bytes); }
    const rest = await a.exportFor(b.id, d.to);
    assert.deepEqual(await carried(rest.deltas), heldAfter(a, ids, d.to), `after ${d.to}`);
    for (const e of rest.deltas) await b.apply(e.bytes);
    for (const id of ids) assert.deepEqual(b.get("c", id), a.get("c", id), `${id} after catching up from ${d.to}`);
    if (d.to < last) assert.equal(rest.deltas.at(-1)?.to, last);
    await b.close();
  }
  await a.close();
});

test("log runs: a rebuilt log (many stale entries) still exports every live register", async () => {
  const a = await open(), b = await open();
  const ids = ["s", "t"];
  await a.add("c", [["s", fields(3, 0)], ["t", fields(5, 1)]]);
  // > 4096 stale entries: the commit after them rebuilds the log from the records
  for (let i = 1; i <= 2100; i++) await a.update("c", "s", { f0: i, f1: -i });
  await a.update("c", "t", { f1: 1, f2: 2 });
  const last = a.seq;
  // the log was rebuilt from the records: a run a commit since, not 2,100
  const runs = (a as unknown as { logStart: number[] }).logStart.length;
  assert.ok(runs < 200, `log runs after the rebuild: ${runs}`);
  for (const after of [0, 1, 5, last - 4, last - 3, last - 2, last - 1]) {
    const x = await a.exportFor(b.id, after, { all: true });
    assert.deepEqual(await carried(x.deltas), heldAfter(a, ids, after), `export after ${after}`);
  }
  const x = await a.exportFor(b.id, 0);
  for (const d of x.deltas) await b.apply(d.bytes);
  for (const id of ids) assert.deepEqual(b.get("c", id), a.get("c", id));
  await a.close();
  await b.close();
});
