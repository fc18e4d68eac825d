/**
 * A replica kept in IndexedDB, for browsers.  One IndexedDB database per
 * store name ("crdtdb:<name>") with two object stores: "records" (a record's
 * registers under "collection\0id") and "meta" (identity, clock, sequence,
 * watermarks).  Each commit is one readwrite transaction over both, and
 * resolves only on its `complete` event: a delta, its watermarks and the
 * clock land together or not at all, and the session acknowledges after.
 * Local-only writes may ask for "relaxed" durability (Batch.relaxed); a
 * commit a peer will be told of is always "strict".
 *
 * One writer per profile.  Two tabs writing one copy under one replica id
 * would fork its history (docs/protocol.md, "History fingerprints"), and
 * one identity per tab would grow a new replica (and its log) with every
 * tab ever opened.  So the backend holds an exclusive Web Lock named after
 * the database for as long as it is open:
 * - lock "fail" (default): a second tab's open fails at once with EBUSY
 *   "the store 'NAME' is open in another tab"; the app can say so, or
 *   retry with "wait";
 * - lock "wait": the open waits until the holder closes the store or its
 *   tab goes away (the browser releases a closed tab's locks), then opens
 *   the same copy under the same identity; `signal` aborts the wait.
 * Web Locks exist only in secure contexts (https, http://127.0.0.1 and
 * localhost).  Without them the open fails (EINVAL) rather than silently
 * risk a fork; `locks: null` opts out, for a page that knows it is alone.
 * Deleting a store (destroy) takes the same lock, so an open store is
 * never deleted under its tab.
 */
import type { Backend, Batch, Loaded, Meta } from "./backend.js";
import { CrdtdbError } from "./errors.js";
import { decodeRecord, encodeRecord } from "./storedrecord.js";
import type { StoredRecord } from "./types.js";

export interface IndexedDBOptions {
  /** The store's name; one IndexedDB database each. */
  name: string;
  /** "fail" (default): EBUSY if another tab has it open; "wait": wait for it. */
  lock?: "fail" | "wait";
  /** Aborts a lock "wait" (the open then rejects with EBUSY). */
  signal?: AbortSignal;
  /** The IndexedDB factory (default globalThis.indexedDB). */
  indexedDB?: IDBFactory;
  /** Lock manager (default navigator.locks); null opens without the one-writer lock. */
  locks?: LockManager | null;
}

const req = <T>(r: IDBRequest<T>): Promise<T> =>
  new Promise((res, rej) => { r.onsuccess = () => res(r.result); r.onerror = () => rej(r.error); });

function idbError(e: unknown): CrdtdbError {
  if (e instanceof CrdtdbError) return e;
  const name = (e as DOMException | null)?.name;
  return new CrdtdbError(name === "QuotaExceededError" ? "EMAPFULL" : "EIO", `IndexedDB: ${(e as Error)?.message ?? name ?? e}`);
}

const dbNameOf = (name: string): string => `crdtdb:${name}`;

function lockManager(given: LockManager | null | undefined): LockManager | null {
  if (given !== undefined) return given;
  const locks = (globalThis.navigator as Navigator | undefined)?.locks;
  if (!locks) {
    throw new CrdtdbError("EINVAL",
      "no Web Locks here (not a secure context?): serve the page over https or from localhost, or pass locks: null if only one tab ever opens the store");
  }
  return locks;
}

/** Takes the store's exclusive lock; resolves with its release. */
async function takeLock(locks: LockManager | null, name: string, wait: boolean, signal?: AbortSignal): Promise<() => void> {
  if (!locks) return () => undefined;
  return new Promise<() => void>((resolve, reject) => {
    const busy = (): CrdtdbError => new CrdtdbError("EBUSY", `the store '${name}' is open in another tab`);
    // an aborted wait rejects with the signal's reason (AbortError, TimeoutError, ...): EBUSY too
    const opts: LockOptions = wait ? { mode: "exclusive", ...(signal ? { signal } : {}) } : { mode: "exclusive", ifAvailable: true };
    locks.request(dbNameOf(name), opts, (lock) => {
      if (!lock) {
        reject(busy());
        return undefined;
      }
      // held until released: the callback's promise settles then
      return new Promise<void>((done) => resolve(done));
    }).catch((e: unknown) => reject(signal?.aborted ? busy() : idbError(e)));
  });
}

export class IndexedDBBackend implements Backend {
  private db: IDBDatabase | null = null;
  private release: (() => void) | null = null;
  private readonly o: IndexedDBOptions;
  /** Local-only commits are "relaxed" (Batch.relaxed). */
  readonly relaxes = true;

  constructor(o: IndexedDBOptions) {
    this.o = o;
  }

  get dbName(): string { return dbNameOf(this.o.name); }

  async load(): Promise<Loaded> {
    const factory = this.o.indexedDB ?? globalThis.indexedDB;
    if (!factory) throw new CrdtdbError("EINVAL", "no IndexedDB in this runtime");
    this.release = await takeLock(lockManager(this.o.locks), this.o.name, this.o.lock === "wait", this.o.signal);
    try {
      const open = factory.open(this.dbName, 1);
      open.onupgradeneeded = () => {
        open.result.createObjectStore("records");
        open.result.createObjectStore("meta");
      };
      this.db = await req(open);
      // only destroy() asks for this, and it holds our lock: we are closed already
      this.db.onversionchange = () => { this.db?.close(); this.db = null; };
      const tx = this.db.transaction(["records", "meta"], "readonly");
      const recs = tx.objectStore("records");
      // one transaction: keys and values come in the same (key) order
      const [keys, values, meta] = await Promise.all([
        req(recs.getAllKeys()), req(recs.getAll()), req(tx.objectStore("meta").get("meta")),
      ]);
      const records = new Map<string, StoredRecord>();
      keys.forEach((k, i) => records.set(String(k), decodeRecord(values[i] as Uint8Array)));
      return { meta: (meta as Meta | undefined) ?? null, records };
    } catch (e) {
      await this.close();
      throw idbError(e);
    }
  }

  commit(b: Batch): Promise<void> {
    const db = this.db;
    if (!db) return Promise.reject(new CrdtdbError("EIO", "IndexedDB is closed"));
    return new Promise((resolve, reject) => {
      let tx: IDBTransaction | null = null;
      try {
        tx = db.transaction(["records", "meta"], "readwrite", { durability: b.relaxed ? "relaxed" : "strict" });
        const recs = tx.objectStore("records");
        if (b.clear) recs.clear();
        for (const k of b.del) recs.delete(k);
        // put() clones at once: the batch's objects are ours only until here
        for (const [k, r] of b.put) recs.put(encodeRecord(r), k);
        tx.objectStore("meta").put(b.meta, "meta");
      } catch (e) {
        // a put that throws (DataCloneError, a closing database) does not end
        // the transaction: left alone it would commit the requests before it
        try { tx?.abort(); } catch { /* already finished */ }
        reject(idbError(e));
        return;
      }
      const t = tx;
      t.oncomplete = () => resolve();
      // a failed request aborts the transaction: answer once, on abort
      t.onabort = () => reject(idbError(t.error ?? new Error("transaction aborted")));
    });
  }

  async close(): Promise<void> {
    this.db?.close();
    this.db = null;
    this.release?.();
    this.release = null;
  }

  /** Deletes a store's database (the copy and the identity).  Fails with
   *  EBUSY while a tab has it open. */
  static async destroy(name: string, factory: IDBFactory = globalThis.indexedDB, locks?: LockManager | null): Promise<void> {
    const release = await takeLock(lockManager(locks), name, false);
    try {
      await req(factory.deleteDatabase(dbNameOf(name)));
    } catch (e) {
      throw idbError(e);
    } finally {
      release();
    }
  }
}
