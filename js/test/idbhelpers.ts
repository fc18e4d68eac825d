/**
 * What the IndexedDB tests read beneath the DataStore: every register a
 * replica holds, and the values its records store holds.
 */
import type { IDBFactory } from "fake-indexeddb";
import type { CrdtdbDataStore } from "../src/index.js";
import type { StoredRecord } from "../src/types.js";

const hex = (b: Uint8Array | null): string | null => (b ? Buffer.from(b).toString("hex") : null);

/** Every register of every record, as comparable plain data (seq and source included). */
export function registers(ds: CrdtdbDataStore): Record<string, unknown> {
  const recs = (ds.replica as unknown as { records: Map<string, StoredRecord> }).records;
  const out: Record<string, unknown> = {};
  for (const [k, r] of recs) {
    out[k] = {
      base: r.base && { kind: r.base.kind, hlc: r.base.hlc, origin: hex(r.base.origin), seq: r.base.seq, src: r.base.src },
      leaves: r.leaves.map((l) => ({
        path: [...l.path], hlc: l.hlc, origin: hex(l.origin), seq: l.seq, src: l.src,
        value: l.vbuf ? hex(l.vbuf.subarray(l.voff, l.voff + l.vlen)) : null,
      })),
    };
  }
  return out;
}

/** The records store's keys and values, in key order (pages under numbers first). */
export async function storedValues(factory: IDBFactory, name: string): Promise<[IDBValidKey, Uint8Array][]> {
  const db = await new Promise<IDBDatabase>((res) => { const r = factory.open("crdtdb:" + name); r.onsuccess = () => res(r.result); });
  const st = db.transaction("records").objectStore("records");
  const [keys, vals] = await Promise.all([
    new Promise<IDBValidKey[]>((res) => { const r = st.getAllKeys(); r.onsuccess = () => res(r.result); }),
    new Promise<Uint8Array[]>((res) => { const r = st.getAll(); r.onsuccess = () => res(r.result as Uint8Array[]); }),
  ]);
  db.close();
  return keys.map((k, i) => [k, vals[i]!]);
}
