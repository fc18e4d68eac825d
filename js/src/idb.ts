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
 *
 * Records are stored one value each under their key (small commits), or in
 * pages: a commit of many records writes them as a few values under page
 * numbers (storedrecord.ts), since each put costs the page ~0.1 ms and a
 * fresh sync puts 10,000 records.  A record's current version is its own
 * value if it has one, else the copy in the highest-numbered page: a record
 * rewritten alone overrides its page copy, one written into a new page has
 * its own value deleted, and one deleted while pages exist leaves an empty
 * value (a tombstone) over them.  A page whose records all moved on is
 * deleted; when dead copies outnumber live records the replica rewrites the
 * store (compact).
 *
 * A commit of a peer's deltas into records this replica did not hold (a
 * fresh sync; Batch.deltas) stores the deltas themselves instead, in chunks
 * under consecutive page numbers (storedrecord.ts encodeDeltaChunks): no
 * record encoded, half the bytes, and the same rule, since load() turns
 * them back into the records (the replica's replay) as the page they were.
 */
import type { Backend, Batch, Loaded, Meta, Replay } from "./backend.js";
import { CrdtdbError } from "./errors.js";
import { decodeRecord, deltaChunkOf, encodeDeltaChunks, encodeRecord, PageWriter, readDeltaChunks, readPage } from "./storedrecord.js";
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

/** A commit of at least this many records writes them in pages. */
const PAGE_MIN = 32;
/** A page ends past this many bytes: Chromium stores a value over 64 KiB
 *  as a blob of its own (a file), which costs more than it saves. */
const PAGE_BYTES = 56 * 1024;
/** A tombstone: the record is deleted, whatever a page holds. */
const TOMB = new Uint8Array(0);
/** Where a key goes in a commit, besides a page number (≥ 1). */
const OWN = 0, GONE = -1, TOMB_AT = -2;

/** A page's records, the live ones among them, and how many page numbers
 *  it takes from its own (a commit of deltas in chunks: more than 1). */
interface Page { size: number; live: number; span: number }

export class IndexedDBBackend implements Backend {
  private db: IDBDatabase | null = null;
  private release: (() => void) | null = null;
  private readonly o: IndexedDBOptions;
  /** Local-only commits are "relaxed" (Batch.relaxed). */
  readonly relaxes = true;
  /** Each transaction costs ~30 ms of Chromium's own (js/bench): fewer is faster. */
  readonly costlyCommit = true;
  /** Where records are: the page holding a record's current version (none:
   *  its own value), the pages' sizes, the keys with a value of their own
   *  (tombstones too), the tombstones, and every key some page holds a copy
   *  of, live or dead (only those need a tombstone when deleted). */
  private pageOf = new Map<string, number>();
  private pages = new Map<number, Page>();
  private own = new Set<string>();
  private tombs = new Set<string>();
  private paged = new Set<string>();
  private nextPage = 1;
  private dead = 0;
  private readonly pw = new PageWriter();

  constructor(o: IndexedDBOptions) {
    this.o = o;
  }

  get dbName(): string { return dbNameOf(this.o.name); }

  async load(replay?: Replay): Promise<Loaded> {
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
      return { meta: (meta as Meta | undefined) ?? null, records: this.index(keys, values, replay) };
    } catch (e) {
      await this.close();
      throw idbError(e);
    }
  }

  /** The records of what load() read, and where each one is. */
  private index(keys: IDBValidKey[], values: unknown[], replay?: Replay): Map<string, StoredRecord> {
    const records = new Map<string, StoredRecord>();
    // a page: [its number, the indexes of its values, whether they are a
    // commit of deltas (its chunks) rather than one page of records]
    const pageList: [number, number[], boolean][] = [];
    // a record's own value first (numbers sort before strings: pages come first)
    keys.forEach((k, i) => {
      if (typeof k === "number") {
        const at = deltaChunkOf(values[i] as Uint8Array);
        const last = pageList[pageList.length - 1];
        // a chunk after the first joins the commit it continues
        if (at && at[0] > 0 && last && last[2] && last[0] + last[1].length === k) last[1].push(i);
        else pageList.push([k, [i], !!at]);
        return;
      }
      const key = String(k), v = values[i] as Uint8Array;
      this.own.add(key);
      if (v.length) records.set(key, decodeRecord(v));
      else this.tombs.add(key);
    });
    // then the pages, newest first: an older page's copy of a record is dead
    for (let j = pageList.length - 1; j >= 0; j--) {
      const [no, at, deltas] = pageList[j]!;
      const pg: Page = { size: 0, live: 0, span: at.length };
      const each = (key: string, rec: () => StoredRecord): void => {
        pg.size++;
        this.paged.add(key);
        if (this.own.has(key) || this.pageOf.has(key)) return;
        this.pageOf.set(key, no);
        pg.live++;
        records.set(key, rec());
      };
      if (deltas) {
        if (!replay) throw new CrdtdbError("ECORRUPT", "a stored commit of deltas, and no replay to read it");
        const recs = replay(readDeltaChunks(at.map((i) => values[i] as Uint8Array)));
        for (const [key, r] of recs) each(key, () => r);
      } else {
        readPage(values[at[0]!] as Uint8Array, (key, bytes) => each(key, () => decodeRecord(bytes)));
      }
      this.pages.set(no, pg);
      this.dead += pg.size - pg.live;
      if (no + pg.span > this.nextPage) this.nextPage = no + pg.span;
    }
    return records;
  }

  commit(b: Batch): Promise<void> {
    const db = this.db;
    if (!db) return Promise.reject(new CrdtdbError("EIO", "IndexedDB is closed"));
    return new Promise((resolve, reject) => {
      let tx: IDBTransaction | null = null;
      // the new layout, installed only once the transaction commits
      let pageOf = this.pageOf, own = this.own, pages = this.pages, nextPage = this.nextPage;
      let tombs = this.tombs, paged = this.paged;
      // where each key goes: a page number, OWN (a value of its own), GONE
      // (no value at all) or TOMB_AT (a tombstone over a page's copy)
      const moved = new Map<string, number>();
      const added: [number, Page][] = [];
      try {
        tx = db.transaction(["records", "meta"], "readwrite", { durability: b.relaxed ? "relaxed" : "strict" });
        const recs = tx.objectStore("records");
        if (b.clear) {
          recs.clear();
          pageOf = new Map(); own = new Set(); pages = new Map(); tombs = new Set(); paged = new Set();
        }
        for (const k of b.del) {
          // a page holds a copy: a tombstone hides it; else the value goes
          if (paged.has(k)) { if (!tombs.has(k)) { recs.put(TOMB, k); moved.set(k, TOMB_AT); } }
          else if (own.has(k)) { recs.delete(k); moved.set(k, GONE); }
        }
        // put() clones at once: the batch's objects are ours only until here.
        // The records written as records: all of them, or, with a commit
        // stored as its deltas, only those held before (their replay gives
        // part of them; these copies, newer, hide it).  Deltas only when
        // they bring a page's worth of new records, and no fewer than the
        // held ones: a group dead from the start would never be deleted
        // (no later commit takes its live count to 0), and the held ones'
        // share of the bytes is read again at every open until compaction.
        let put = b.put, held: string[] = [];
        const fresh = b.deltas ? b.put.size - b.deltas.held.length : 0;
        if (b.deltas && fresh >= PAGE_MIN && fresh >= b.deltas.held.length && !b.clear && !b.del.size) {
          const no = nextPage, chunks = encodeDeltaChunks(b.deltas, PAGE_BYTES);
          nextPage += chunks.length;
          chunks.forEach((c, i) => recs.put(c, no + i));
          held = b.deltas.held;
          added.push([no, { size: b.put.size, live: b.put.size - held.length, span: chunks.length }]);
          for (const k of b.put.keys()) {
            if (own.has(k)) recs.delete(k);
            moved.set(k, no);
          }
          put = new Map();
          for (const k of held) put.set(k, b.put.get(k)!);
        }
        if (put.size >= PAGE_MIN) {
          const pw = this.pw;
          pw.reset();
          let no = nextPage++;
          const page = (): void => {
            added.push([no, { size: pw.count, live: pw.count, span: 1 }]);
            recs.put(pw.take(), no);
          };
          for (const [k, r] of put) {
            if (pw.size >= PAGE_BYTES) { page(); no = nextPage++; }
            pw.add(k, r);
            if (own.has(k)) recs.delete(k);
            moved.set(k, no);
          }
          page();
        } else {
          for (const [k, r] of put) { recs.put(encodeRecord(r), k); moved.set(k, OWN); }
        }
        // pages left with no live record go
        const live = new Map<number, number>();
        for (const k of moved.keys()) {
          const was = pageOf.get(k);
          if (was !== undefined) live.set(was, (live.get(was) ?? pages.get(was)!.live) - 1);
        }
        for (const [no, n] of live) if (n === 0) for (let i = 0; i < pages.get(no)!.span; i++) recs.delete(no + i);
        tx.objectStore("meta").put(b.meta, "meta");
        const t = tx;
        t.oncomplete = () => {
          this.pageOf = pageOf; this.own = own; this.pages = pages; this.nextPage = nextPage;
          this.tombs = tombs; this.paged = paged;
          if (b.clear) this.dead = 0;
          for (const [no, n] of live) {
            const pg = pages.get(no)!;
            this.dead += pg.live - n;
            pg.live = n;
            if (n === 0) { pages.delete(no); this.dead -= pg.size; }
          }
          for (const [no, pg] of added) { pages.set(no, pg); this.dead += pg.size - pg.live; }
          for (const [k, where] of moved) {
            if (where === OWN || where === TOMB_AT) {
              pageOf.delete(k); own.add(k);
              if (where === TOMB_AT) tombs.add(k); else tombs.delete(k);
            } else if (where === GONE) { pageOf.delete(k); own.delete(k); tombs.delete(k); }
            else { pageOf.set(k, where); own.delete(k); tombs.delete(k); paged.add(k); }
          }
          for (const k of held) paged.add(k); // a copy in the chunks (a deletion needs a tombstone)
          resolve();
        };
        // a failed request aborts the transaction: answer once, on abort
        t.onabort = () => reject(idbError(t.error ?? new Error("transaction aborted")));
      } catch (e) {
        // a put that throws (DataCloneError, a closing database) does not end
        // the transaction: left alone it would commit the requests before it
        try { tx?.abort(); } catch { /* already finished */ }
        reject(idbError(e));
      }
    });
  }

  /** Dead page copies and tombstones outnumber the live records (and are
   *  many): rewrite. */
  shouldCompact(): boolean {
    const dead = this.dead + this.tombs.size;
    return dead > 4096 && dead > this.pageOf.size + this.own.size - this.tombs.size;
  }

  /** Rewrites the store: every record in pages, in one transaction. */
  async compact(meta: Meta, records: Map<string, StoredRecord>): Promise<void> {
    await this.commit({ meta, put: records, del: new Set(), clear: true });
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
