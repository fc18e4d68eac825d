/**
 * A replica kept in IndexedDB, for browsers.  One IndexedDB database per
 * store name ("crdtdb:<name>") with two object stores: "records" (a record's
 * registers under "collection\0id") and "meta" (identity, clock, sequence,
 * watermarks).  Each commit is one readwrite transaction over both, and
 * resolves only on its `complete` event: a delta, its watermarks and the
 * clock land together or not at all, and the session acknowledges after.
 *
 * One writer per profile: two tabs writing one copy under one replica id
 * would fork its history (docs/protocol.md, "History fingerprints").  So
 * the backend holds an exclusive Web Lock named after the database for as
 * long as it is open.  A second tab's open fails at once with EBUSY ("open
 * in another tab") unless it asks to wait, in which case it opens when the
 * first tab closes the store or goes away.
 */
import type { Backend, Batch, Loaded, Meta } from "./backend.js";
import { CrdtdbError } from "./errors.js";
import { decodeStored, encodeStored, fixRecord } from "./recordcodec.js";
import type { StoredRecord } from "./types.js";

export interface IndexedDBOptions {
  /** The store's name; one IndexedDB database each. */
  name: string;
  /** "fail" (default): EBUSY if another tab has it open; "wait": wait for it. */
  lock?: "fail" | "wait";
  /** The IndexedDB factory (default globalThis.indexedDB). */
  indexedDB?: IDBFactory;
  /** Lock manager (default navigator.locks); null disables locking (tests). */
  locks?: LockManager | null;
}

const req = <T>(r: IDBRequest<T>): Promise<T> =>
  new Promise((res, rej) => { r.onsuccess = () => res(r.result); r.onerror = () => rej(r.error); });

function idbError(e: unknown): CrdtdbError {
  const name = (e as DOMException | null)?.name;
  return new CrdtdbError(name === "QuotaExceededError" ? "EMAPFULL" : "EIO", `IndexedDB: ${(e as Error)?.message ?? name ?? e}`);
}

export class IndexedDBBackend implements Backend {
  private db: IDBDatabase | null = null;
  private release: (() => void) | null = null;
  private readonly o: IndexedDBOptions;

  constructor(o: IndexedDBOptions) {
    this.o = o;
  }

  get dbName(): string { return `crdtdb:${this.o.name}`; }

  private async takeLock(): Promise<void> {
    const locks = this.o.locks === undefined ? (globalThis.navigator as Navigator | undefined)?.locks : this.o.locks;
    if (!locks) return;
    const wait = this.o.lock === "wait";
    await new Promise<void>((resolve, reject) => {
      void locks.request(this.dbName, { mode: "exclusive", ifAvailable: !wait }, (lock) => {
        if (!lock) {
          reject(new CrdtdbError("EBUSY", `the store '${this.o.name}' is open in another tab`));
          return undefined;
        }
        // held until close(): the callback's promise settles then
        return new Promise<void>((done) => { this.release = done; resolve(); });
      }).catch(reject);
    });
  }

  async load(): Promise<Loaded> {
    await this.takeLock();
    const factory = this.o.indexedDB ?? globalThis.indexedDB;
    if (!factory) throw new CrdtdbError("EINVAL", "no IndexedDB in this runtime");
    try {
      const open = factory.open(this.dbName, 1);
      open.onupgradeneeded = () => {
        open.result.createObjectStore("records");
        open.result.createObjectStore("meta");
      };
      this.db = await req(open);
      // another tab deleting or upgrading the database: let it, we are done
      this.db.onversionchange = () => { this.db?.close(); this.db = null; };
      const tx = this.db.transaction(["records", "meta"], "readonly");
      const recs = tx.objectStore("records");
      const [keys, values, meta] = await Promise.all([
        req(recs.getAllKeys()), req(recs.getAll()), req(tx.objectStore("meta").get("meta")),
      ]);
      const records = new Map<string, StoredRecord>();
      keys.forEach((k, i) => records.set(String(k), fixRecord(decodeStored<StoredRecord>(values[i] as Uint8Array))));
      return { meta: (meta as Meta | undefined) ?? null, records };
    } catch (e) {
      this.release?.();
      throw e instanceof CrdtdbError ? e : idbError(e);
    }
  }

  commit(b: Batch): Promise<void> {
    const db = this.db;
    if (!db) return Promise.reject(new CrdtdbError("EIO", "IndexedDB is closed"));
    return new Promise((resolve, reject) => {
      let tx: IDBTransaction;
      try {
        tx = db.transaction(["records", "meta"], "readwrite", { durability: b.relaxed ? "relaxed" : "strict" });
        const recs = tx.objectStore("records");
        if (b.clear) recs.clear();
        for (const k of b.del) recs.delete(k);
        for (const [k, r] of b.put) recs.put(encodeStored(r), k);
        tx.objectStore("meta").put(b.meta, "meta");
      } catch (e) {
        reject(idbError(e));
        return;
      }
      tx.oncomplete = () => resolve();
      tx.onerror = () => reject(idbError(tx.error));
      tx.onabort = () => reject(idbError(tx.error ?? new Error("transaction aborted")));
    });
  }

  async close(): Promise<void> {
    this.db?.close();
    this.db = null;
    this.release?.();
    this.release = null;
  }

  /** Deletes a store's database (the copy and the identity).  It must be closed everywhere. */
  static async destroy(name: string, factory: IDBFactory = globalThis.indexedDB): Promise<void> {
    await req(factory.deleteDatabase(`crdtdb:${name}`));
  }
}
