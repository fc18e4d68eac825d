/**
 * A replica kept in one file, for Node: an append-only journal of commit
 * batches (u32 big-endian length, then the msgpack of the batch), each
 * written and fsynced before the commit resolves.  A batch is a map: meta,
 * del (keys), clear, and the records it puts as one page of stored records
 * (`page`, bin: storedrecord.ts, as IndexedDB keeps them, ~8 bytes a field
 * of a shared-stamp record); journals written before pages hold `put`
 * instead, [key, record as a msgpack map] pairs (recordcodec.ts), still
 * read.  Opening replays the
 * journal, drops a torn last entry (a crash mid-write; an unreadable entry,
 * or one whose length runs past the end with whole entries after it, is
 * ECORRUPT instead), and rewrites the
 * file as one snapshot (to a temporary file, fsynced, renamed over) when
 * the journal has grown past twice the live data, at open or between
 * commits.  What is live is counted as entries are written or replayed:
 * each record's bytes in the page of its latest entry, and the latest
 * meta (so a fresh sync's big entries, all live, never cause a rewrite,
 * and a big record rewritten beside small new ones is no longer counted).
 */
import { open, rename, rm, type FileHandle } from "node:fs/promises";
import { dirname } from "node:path";
import type { Backend, Batch, Loaded, Meta } from "./backend.js";
import { CrdtdbError } from "./errors.js";
import { lockReplicaFile } from "./filelock.js";
import { decodeStored, encodeStored, fixRecord, storedEnd, type PackedRecord } from "./recordcodec.js";
import { decodeRecord, PageWriter, readPage } from "./storedrecord.js";
import type { StoredRecord } from "./types.js";

interface Entry {
  meta: Meta;
  /** the records put, as one page (storedrecord.ts) */
  page?: Uint8Array;
  /** the records put, in journals written before pages */
  put?: [string, PackedRecord][];
  del: string[];
  clear?: boolean;
}

function ioError(e: unknown): CrdtdbError {
  const code = (e as { code?: string })?.code;
  return new CrdtdbError(code === "ENOSPC" ? "EMAPFULL" : "EIO", `replica file: ${(e as Error)?.message ?? e}`);
}

/** The records as one page (a fresh array: it copies every value), and in
 *  `sizes` each one's bytes in it, in the map's order. */
function pageOf(pw: PageWriter, records: Map<string, StoredRecord>, sizes: number[]): Uint8Array {
  pw.reset();
  sizes.length = 0;
  for (const [k, r] of records) {
    const at = pw.size;
    pw.add(k, r);
    sizes.push(pw.size - at);
  }
  return pw.take();
}

/** A record an entry puts, and its bytes there (-1: not known, a journal
 *  written before pages). */
type Put = [key: string, rec: StoredRecord, bytes: number];

/** The records an entry puts, in order; a page's records keep their
 *  values in a copy of the page (not in the journal's buffer). */
function putsOf(e: Entry): Put[] {
  const out: Put[] = [];
  if (e.page) readPage(e.page.slice(), (k, b, n) => out.push([k, decodeRecord(b), n]));
  if (e.put) for (const [k, r] of e.put) out.push([k, fixRecord(r), -1]);
  return out;
}

/** The entry at off claims more bytes than the file holds: a crash cut it
 *  short, or its length is damaged.  It is damage when the entry's value
 *  is whole in fewer bytes and another whole entry follows it (a write cut
 *  short holds no whole value, as the length came first); dropping it
 *  would drop every commit after it. */
function lengthDamaged(buf: Uint8Array, dv: DataView, off: number): boolean {
  const m = storedEnd(buf.subarray(off + 4));
  const next = off + 4 + m;
  if (m < 0 || next + 4 > buf.length) return false;
  const n2 = dv.getUint32(next);
  if (next + 4 + n2 > buf.length) return false;
  try {
    return !!decodeStored<Entry>(buf.subarray(next + 4, next + 4 + n2))?.meta;
  } catch {
    return false;
  }
}

function fixMeta(m: Meta): Meta {
  m.hlc = BigInt(m.hlc);
  m.seq = Number(m.seq);
  return m;
}

export class FileBackend implements Backend {
  private fh: FileHandle | null = null;
  private size = 0;
  /** Each record's share of the bytes of the entry that last put it, and
   *  their sum: the journal is rewritten once it is over twice that (and
   *  1 MiB), the rest being older versions, removed records and metas. */
  private live = new Map<string, number>();
  private liveBytes = 0;
  /** The latest entry's bytes besides its records' (its meta, mostly). */
  private metaBytes = 0;
  private readonly pw = new PageWriter();
  private readonly sizes: number[] = [];

  /** Lets go of the file's lock (filelock.ts), taken by load(). */
  private unlock: (() => Promise<void>) | null = null;

  /** The caller names the file; the backend owns it until close(), and
   *  holds its lock (`<path>.lock`) from load() on: a second store on the
   *  file, in this process or another, fails to open with EBUSY. */
  constructor(private readonly path: string) {}

  async load(): Promise<Loaded> {
    this.unlock = await lockReplicaFile(this.path);
    try {
      return await this.replay();
    } catch (e) {
      await this.close();
      throw e;
    }
  }

  private async replay(): Promise<Loaded> {
    let meta: Meta | null = null;
    const records = new Map<string, StoredRecord>();
    let buf: Uint8Array;
    try {
      const fh = await open(this.path, "a+");
      buf = await fh.readFile();
      await fh.close();
    } catch (e) { throw ioError(e); }
    let off = 0, entries = 0;
    const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
    while (off + 4 <= buf.length) {
      const n = dv.getUint32(off);
      if (off + 4 + n > buf.length) { // torn tail, unless the length is what was damaged
        if (lengthDamaged(buf, dv, off))
          throw new CrdtdbError("ECORRUPT", `replica file: the journal entry at byte ${off} of ${buf.length} claims ${n} bytes, and a whole entry and commits follow it`);
        break;
      }
      let e: Entry, puts: Put[];
      try {
        e = decodeStored<Entry>(buf.subarray(off + 4, off + 4 + n));
        puts = putsOf(e);
      } catch (err) {
        // a crash mid-write leaves the last entry short, or zeros where the
        // file system had extended the file; an entry with more written
        // after it is damage, and dropping it would drop every later commit
        if (off + 4 + n < buf.length && buf.subarray(off).some((x) => x !== 0))
          throw new CrdtdbError("ECORRUPT", `replica file: the journal entry at byte ${off} of ${buf.length} is unreadable (${(err as Error)?.message ?? err}), with commits after it`);
        break;
      }
      if (e.clear) records.clear();
      for (const k of e.del) records.delete(k);
      for (const [k, r] of puts) records.set(k, r);
      this.note(e.clear, e.del, puts.map(([k]) => k), puts.map(([, , b]) => b), 4 + n);
      meta = fixMeta(e.meta);
      off += 4 + n;
      entries++;
    }
    try {
      if (meta && (off < buf.length || entries > 64 && this.wasteful(off))) {
        await this.snapshot(meta, records);
      } else {
        this.fh = await open(this.path, "a");
        this.size = off;
      }
    } catch (e) { throw ioError(e); }
    return { meta, records };
  }

  /** An entry of n bytes was written or replayed, putting `keys` of
   *  `sizes` bytes each (-1: not known; then an even share of what the
   *  entry holds besides the previous meta's size): those are live, what
   *  they replace or what it deletes no longer is, nor is the meta before. */
  private note(clear: boolean | undefined, del: Iterable<string>, keys: Iterable<string>, sizes: readonly number[], n: number): void {
    if (clear) { this.live.clear(); this.liveBytes = 0; }
    for (const k of del) this.drop(k);
    let known = 0, unknown = 0;
    for (const b of sizes) if (b < 0) unknown++; else known += b;
    const share = unknown ? Math.max(0, n - known - this.metaBytes) / unknown : 0;
    let i = 0, recs = 0;
    for (const k of keys) {
      const b = sizes[i++]!;
      const bytes = b < 0 ? share : b;
      this.drop(k);
      this.live.set(k, bytes);
      this.liveBytes += bytes;
      recs += bytes;
    }
    if (!unknown) this.metaBytes = Math.max(0, n - recs);
  }

  private drop(k: string): void {
    const b = this.live.get(k);
    if (b === undefined) return;
    this.liveBytes -= b;
    this.live.delete(k);
  }

  /** A journal of `size` bytes is mostly what a rewrite would drop. */
  private wasteful(size: number): boolean {
    return size > 1 << 20 && size > 2 * (this.liveBytes + this.metaBytes) + (64 << 10);
  }

  private encode(e: Entry): Uint8Array {
    const body = encodeStored(e);
    const out = new Uint8Array(4 + body.length);
    new DataView(out.buffer).setUint32(0, body.length);
    out.set(body, 4);
    return out;
  }

  private async snapshot(meta: Meta, records: Map<string, StoredRecord>): Promise<void> {
    const bytes = this.encode({ meta, page: pageOf(this.pw, records, this.sizes), del: [] });
    const tmp = this.path + ".tmp";
    const fh = await open(tmp, "w");
    await fh.writeFile(bytes);
    await fh.sync();
    await fh.close();
    await this.fh?.close();
    this.fh = null;
    await rename(tmp, this.path);
    // the file is the snapshot from here, whatever fails next (a failed
    // commit cuts back to this size: the old journal's would pad it)
    this.size = bytes.length;
    this.note(true, [], records.keys(), this.sizes, bytes.length);
    // the rename itself must survive a crash, or the old journal comes back
    const dir = await open(dirname(this.path), "r");
    try { await dir.sync(); } finally { await dir.close(); }
    this.fh = await open(this.path, "a");
  }

  shouldCompact(): boolean {
    return this.wasteful(this.size);
  }

  /** Rewrites the journal as one snapshot of what the replica holds. */
  async compact(meta: Meta, records: Map<string, StoredRecord>): Promise<void> {
    try {
      await this.snapshot(meta, records);
    } catch (e) {
      // the journal as it was still holds everything: carry on appending
      if (!this.fh) this.fh = await open(this.path, "a").catch(() => null);
      throw ioError(e);
    }
  }

  async commit(b: Batch): Promise<void> {
    if (!this.fh) throw new CrdtdbError("EIO", "replica file is not open");
    const e: Entry = { meta: b.meta, del: [...b.del] };
    if (b.put.size) e.page = pageOf(this.pw, b.put, this.sizes);
    else this.sizes.length = 0;
    if (b.clear) e.clear = true;
    const bytes = this.encode(e);
    try {
      await this.fh.write(bytes);
      await this.fh.datasync();
      this.size += bytes.length;
      this.note(b.clear, b.del, b.put.keys(), this.sizes, bytes.length);
    } catch (e) {
      // nothing half-written may stay: cut back to the last whole entry
      await this.fh.truncate(this.size).catch(() => undefined);
      throw ioError(e);
    }
  }

  async close(): Promise<void> {
    const fh = this.fh, unlock = this.unlock;
    this.fh = null;
    this.unlock = null;
    try { await fh?.close(); } finally { await unlock?.(); }
  }

  /** Deletes the file (the copy and the identity); EBUSY while a store
   *  has it open. */
  static async destroy(path: string): Promise<void> {
    const unlock = await lockReplicaFile(path);
    try {
      await rm(path, { force: true });
      await rm(path + ".tmp", { force: true });
    } finally {
      await unlock();
    }
  }
}
