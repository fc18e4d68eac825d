/**
 * One replica of one database: its records in memory, its change log, its
 * clock, its peers' watermarks, and the rules that change them.  Local
 * writes, remote deltas, purges and replaces each run as one commit: the
 * records they touch are changed on copies, the batch goes to the backend,
 * and only once it is durable are the copies installed, observers told and
 * (by the session) the peer acknowledged.  Commits run one at a time.
 *
 * This is the JS twin of storage/ in the C library; docs/crdt.md and
 * docs/protocol.md are the rules both follow.
 */
import { recordKey, splitKey, type Backend, type Batch, type Meta, type PeerState, type StoredDeltas } from "./backend.js";
import { CrdtdbError, noCollection, notFound, readOnly } from "./errors.js";
import { decodeDelta, decodeStored, encodeDelta, signatureOf, DEFAULT_DELTA_LIMITS, type DeltaLimits } from "./delta.js";
import { History } from "./history.js";
import { Clock, hlcMs } from "./hlc.js";
import { generateKeyPair, keyPairFromSeed, toHex, type KeyPair } from "./keys.js";
import {
  addRegisters, checkLocalLimits, emptyRecord, freshRecord, isFresh, isVisible, mergeBase, mergeLeaves, registersOf,
  updateLeaves, renderWithId,
} from "./record.js";
import { DEFAULT_LIMITS, isWellFormed, Slabs, type Limits } from "./value.js";
import { compareIds } from "./path.js";
import {
  LOCAL, REMOVE, type BaseReg, type DataObject, type DecodedBody, type DecodedRecord, type DeltaBody, type DeltaField, type DeltaRecord, type Hlc,
  type Leaf, type ReplicaId, type Source, type StoredRecord,
} from "./types.js";

export interface ReplicaOptions {
  /** The database id (1..255 bytes). */
  dbId: string;
  /** The declared collections; anything else is "Collection 'X' not found". */
  collections: readonly string[];
  backend: Backend;
  /** Milliseconds since the epoch; injectable for tests (docs/crdt.md). */
  now?: () => number;
  /** A peer's stamp may be at most this far ahead (default 5 minutes). */
  maxClockSkewMs?: number;
  limits?: Partial<Limits & DeltaLimits>;
}

/** One record's visible change, for observers. */
export interface Change {
  coll: string;
  id: string;
  /** Visible before the commit. */
  was: boolean;
  /** Visible after it. */
  visible: boolean;
  /** The record as now visible (with its id), or null; rendered on demand,
   *  valid only during the notification. */
  read(): DataObject | null;
}

/** A Change that renders its record only when read (no closure each). */
class RecordChange implements Change {
  readonly visible: boolean;
  constructor(readonly coll: string, readonly id: string, readonly was: boolean, private readonly r: StoredRecord | null) {
    this.visible = r !== null;
  }
  read(): DataObject | null { return this.r ? renderWithId(this.id, this.r) : null; }
}

/** What a resync's snapshot carried of a record: "b" its add or remove
 *  (and maybe leaves), "l" leaves only. */
export type Held = "b" | "l";

export interface ApplyInfo {
  /** The peer's range (from, to] and whether our watermark moved. */
  from: number;
  to: number;
  received: number;
  /** Our own sequences this apply numbered. */
  localFrom: number;
  localTo: number;
}

/** What applyAll did: the first `applied` deltas committed (info: their
 *  ranges and ours, null if none), and the error of the next, if any. */
export interface GroupResult {
  info: ApplyInfo | null;
  applied: number;
  error: unknown;
  /** (applyBodies) the merge of this delta failed: nothing committed */
  merged?: number;
}

const utf8 = new TextEncoder();

/** Our chain's points kept: deltas carry the points at or before their
 *  ends, and a receiver checks the ones it has seen. */
const POINTS_KEPT = 64;
const PEER_POINTS_KEPT = 8;
const LOG_COMPACT_MIN = 4096;
/** An export scanning more registers than this yields between deltas. */
const EXPORT_YIELD_ABOVE = 4096;

/** Resolves in a later task (macrotask): setImmediate in Node, a message
 *  to ourselves in browsers (setTimeout is clamped to 4 ms when nested). */
const nextTask: () => Promise<void> = (() => {
  const g = globalThis as { setImmediate?: (cb: () => void) => unknown };
  if (typeof g.setImmediate === "function") {
    const si = g.setImmediate;
    return () => new Promise<void>((res) => { si(res); });
  }
  if (typeof MessageChannel === "function") {
    const waiting: (() => void)[] = [];
    const ch = new MessageChannel();
    ch.port1.onmessage = () => { const f = waiting.shift(); f?.(); };
    return () => new Promise<void>((res) => { waiting.push(res); ch.port2.postMessage(0); });
  }
  return () => new Promise<void>((res) => { setTimeout(res, 0); });
})();


/** 1 to 255 bytes of UTF-8 (no lone surrogate: its UTF-8 would name
 *  another): what every id and name is.  At most 3 UTF-8 bytes a UTF-16
 *  unit, so only long ones need encoding. */
function fitsId(s: string): boolean {
  return typeof s === "string" && !!s && !(s.length > 85 && utf8.encode(s).length > 255) && isWellFormed(s);
}

/** A database id or collection name: fitsId, without control characters. */
function isName(s: string): boolean {
  if (!fitsId(s)) return false;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x20 || c === 0x7f) return false;
  }
  return true;
}

export class Replica {
  readonly dbId: string;
  readonly collections: ReadonlySet<string>;
  readonly limits: Limits & DeltaLimits;
  readonly clock: Clock;
  private readonly backend: Backend;
  private kp!: KeyPair;
  private meta!: Meta;
  private records = new Map<string, StoredRecord>();
  /** Registers by sequence, ascending, as runs: run i is the sequences
   *  [logStart[i], logEnd[i]) of record logKey[i] (a commit numbers a
   *  record's registers one after another, so a record is one run, not an
   *  entry a register).  A sequence is stale once its record no longer
   *  holds a register of it (found lazily).  Runs are only appended (or the
   *  arrays replaced): an export reads the first n as they were. */
  private logStart: number[] = [];
  private logEnd: number[] = [];
  private logKey: string[] = [];
  /** The sequences in the log (stale ones too). */
  private logCount = 0;
  private stale = 0;
  private lock: Promise<unknown> = Promise.resolve();
  /** Local operations waiting for the next group commit. */
  private pending: LocalOp[] = [];
  private listeners = new Set<(changes: Change[], invalidate: boolean, local: boolean) => void>();
  private closed = false;
  private handleReadonly = false;
  /** The chain's notes of the commit under way (one buffer, reused). */
  private readonly history = new History();
  /** After an ECLOCK refusal: the local time (ms) at which the refused
   *  stamp is within the skew limit. */
  clockRetryAt = 0;

  private constructor(o: ReplicaOptions) {
    this.dbId = o.dbId;
    // a server with members adds `_members` to every database it serves
    this.collections = new Set([...o.collections, "_members"]);
    this.backend = o.backend;
    this.limits = { ...DEFAULT_LIMITS, ...DEFAULT_DELTA_LIMITS, ...(o.limits ?? {}) };
    this.clock = new Clock({ now: o.now, maxSkewMs: o.maxClockSkewMs });
  }

  /** Opens a replica on its backend: loads what is stored, or makes a new
   *  identity.  The caller owns the replica until close(). */
  static async open(o: ReplicaOptions): Promise<Replica> {
    // the C library's rule for both (crdtdb.h): a server refuses any other,
    // and a page key of another collection name could not be read back
    if (!isName(o.dbId)) throw new CrdtdbError("EBADID", `invalid database id '${o.dbId}'`);
    for (const c of o.collections)
      if (!isName(c)) throw new CrdtdbError("EBADID", `invalid collection name '${c}': 1 to 255 bytes of UTF-8, no control characters`);
    const r = new Replica(o);
    const loaded = await o.backend.load(replayDeltas);
    try {
      if (loaded.meta) {
        // one copy is one database's: another's records would be shown,
        // and synced into this one
        if (loaded.meta.dbId !== undefined && loaded.meta.dbId !== o.dbId)
          throw new CrdtdbError("EINVAL", `this copy is of database '${loaded.meta.dbId}', not '${o.dbId}'`);
        r.meta = loaded.meta;
        r.meta.dbId = o.dbId; // (kept from the next commit on, in a copy made before)
        r.kp = await keyPairFromSeed(loaded.meta.seed);
      } else {
        r.kp = await generateKeyPair();
        r.meta = { seed: r.kp.secretSeed, seq: 0, hlc: 0n, fp: new Uint8Array(16), points: [], peers: {}, readonly: false, dbId: o.dbId };
        await o.backend.commit({ meta: r.meta, put: new Map(), del: new Set() });
      }
    } catch (e) {
      await o.backend.close(); // its lock (a browser tab's) goes with it
      throw e;
    }
    r.clock.observe(r.meta.hlc);
    r.records = loaded.records;
    r.rebuildLog();
    return r;
  }

  /** The backend's commits are costly (Backend.costlyCommit). */
  get costlyCommit(): boolean { return !!this.backend.costlyCommit; }

  get id(): ReplicaId { return this.kp.publicKey; }
  get idHex(): string { return this.idHexMemo ??= toHex(this.kp.publicKey); }
  private idHexMemo: string | null = null;
  /** The last sender's id and its hex (a session's deltas come from one). */
  private senderBytes: Uint8Array = new Uint8Array(0);
  private senderHex = "";
  private hexOfSender(id: Uint8Array): string {
    if (!sameBytes(id, this.senderBytes)) { this.senderHex = toHex(id); this.senderBytes = id.slice(); }
    return this.senderHex;
  }
  get keyPair(): KeyPair { return this.kp; }
  get seq(): number { return this.meta.seq; }
  /** Local writes are refused ("Read only access"): the copy is marked
   *  read-only (a server granted only server-to-client when two-way was
   *  asked), or this handle syncs server-to-client. */
  get readonly(): boolean { return this.meta.readonly || this.handleReadonly; }

  /** Makes this handle refuse local writes (or not), in memory only: a
   *  server-to-client sync asked for by the application. */
  setReadonly(ro: boolean): void { this.handleReadonly = ro; }

  peer(idHex: string): PeerState {
    return this.meta.peers[idHex] ?? { received: 0, acked: 0, points: [] };
  }

  /** Tells fn of every committed change (after the commit is durable);
   *  local: the commit holds only this replica's own writes. */
  onChange(fn: (changes: Change[], invalidate: boolean, local: boolean) => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.lock.catch(() => undefined);
    await this.backend.close();
  }

  /* ------------------------------------------------------------ reads */

  private checkColl(coll: string): void {
    if (!this.collections.has(coll)) throw noCollection(coll);
  }

  /** The visible record with its id, or null. */
  get(coll: string, id: string): DataObject | null {
    this.checkColl(coll);
    const r = this.records.get(recordKey(coll, id));
    return r && isVisible(r) ? renderWithId(id, r) : null;
  }

  /** Every visible record of a collection that matches, in id order (bytewise UTF-8, as the C library). */
  list(coll: string, match: (rec: DataObject) => boolean): DataObject[] {
    this.checkColl(coll);
    const prefix = coll + "\u0000";
    const ids: string[] = [];
    for (const [key, r] of this.records) if (key.startsWith(prefix) && isVisible(r)) ids.push(key.slice(prefix.length));
    ids.sort(compareIds);
    const out: DataObject[] = [];
    for (const id of ids) {
      const obj = renderWithId(id, this.records.get(prefix + id)!);
      if (match(obj)) out.push(obj);
    }
    return out;
  }

  /** The stored registers of a record (tests and tools). */
  stored(coll: string, id: string): StoredRecord | undefined {
    return this.records.get(recordKey(coll, id));
  }

  /* ------------------------------------------------------- the commit */

  /** Runs fn alone: commits never interleave. */
  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const p = this.lock.then(() => {
      if (this.closed) throw new CrdtdbError("EBUSY", "the replica is closed");
      return fn();
    });
    this.lock = p.catch(() => undefined);
    return p;
  }

  /** A commit under way: copies of the records it changes, and the chain. */
  private begin(): Txn {
    return new Txn(this);
  }

  /** @internal the replica holds the record (committed). */
  has(key: string): boolean {
    return this.records.has(key);
  }

  /** @internal the record as the transaction sees it (a private copy once written). */
  recordFor(t: Txn, key: string): StoredRecord | undefined {
    const p = t.put.get(key);
    if (p) return p;
    if (t.del.has(key)) return undefined;
    return this.records.get(key);
  }

  private async finish(t: Txn, extra?: (m: Meta) => void): Promise<Change[]> {
    const meta: Meta = { ...this.meta, peers: { ...this.meta.peers } };
    // number what the transaction stored, in one chain commit
    const seq0 = meta.seq;
    const seq = this.number(t, seq0);
    meta.seq = seq;
    try {
      if (seq > seq0) {
        if (t.delta) for (const sig of t.delta) this.history.noteDelta(sig);
        meta.fp = await this.history.commit(meta.fp, seq0, seq);
        const pts = meta.points.slice(meta.points.length >= POINTS_KEPT ? meta.points.length - POINTS_KEPT + 1 : 0);
        pts.push([seq, meta.fp]);
        meta.points = pts;
      }
      if (t.maxHlc > 0n) this.clock.recv(t.maxHlc);
      meta.hlc = this.clock.last;
      extra?.(meta);
      const batch: Batch = { meta, put: t.put, del: t.del, clear: t.clear, relaxed: t.local && !!this.backend.relaxes };
      if (t.stored) batch.deltas = { src: t.src, seq0, deltas: t.stored, held: t.held };
      await this.backend.commit(batch);
      this.relaxedPending = !!batch.relaxed;
    } catch (e) {
      this.history.reset(); // not stored: neither are its notes
      throw e;
    }
    // durable: install
    const changes = this.install(t, seq0);
    this.meta = meta;
    if (this.stale > LOG_COMPACT_MIN && this.stale > this.logCount / 2) this.rebuildLog();
    // an append-only backend rewrites itself now and then, between commits
    // (a failed rewrite leaves the journal as it was: nothing is lost)
    if (this.backend.shouldCompact?.()) await this.backend.compact!(meta, this.records).catch(() => undefined);
    const inval = !!t.clear;
    if (changes.length || inval) for (const fn of this.listeners) fn(changes, inval, t.local);
    return changes;
  }

  private number(t: Txn, seq0: number): number {
    return numberTxn(t, seq0, this.history);
  }

  /** Installs a durable transaction: its records, the log of what it
   *  numbered after seq0 (ascending, as number() went); the changes. */
  private install(t: Txn, seq0: number): Change[] {
    const changes: Change[] = [];
    if (t.clear) {
      this.records = new Map();
      this.logStart = [];
      this.logEnd = [];
      this.logKey = [];
      this.logCount = 0;
      this.stale = 0;
    }
    const records = this.records;
    for (const key of t.del) {
      const was = records.get(key);
      if (!was) continue;
      records.delete(key);
      this.stale += registersOf(was).length;
      const [coll, id] = splitKey(key);
      if (isVisible(was)) changes.push(new RecordChange(coll, id, true, null));
    }
    const logStart = this.logStart, logEnd = this.logEnd, logKey = this.logKey;
    let stale = this.stale, count = 0;
    for (const [key, r] of t.put) {
      const b = r.base, leaves = r.leaves;
      // the record's new sequences as runs (one, as number() went)
      let kept = 0, start = 0, end = 0;
      if (b) { if (b.seq > seq0) { start = b.seq; end = start + 1; } else kept++; }
      for (let i = 0; i < leaves.length; i++) {
        const s = leaves[i]!.seq;
        if (s <= seq0) { kept++; continue; }
        if (s === end) { end++; continue; }
        if (end) { logStart.push(start); logEnd.push(end); logKey.push(key); count += end - start; }
        start = s; end = s + 1;
      }
      if (end) { logStart.push(start); logEnd.push(end); logKey.push(key); count += end - start; }
      const old = records.get(key);
      const wasVis = !!old && isVisible(old);
      if (old) stale += (old.base ? 1 : 0) + old.leaves.length;
      stale -= kept;
      records.set(key, r);
      const nowVis = isVisible(r);
      if (wasVis || nowVis) {
        const cut = key.indexOf("\u0000");
        changes.push(new RecordChange(key.slice(0, cut), key.slice(cut + 1), wasVis, nowVis ? r : null));
      }
    }
    this.stale = stale;
    this.logCount += count;
    return changes;
  }

  private rebuildLog(): void {
    const log: [number, string][] = [];
    for (const [key, r] of this.records) for (const g of registersOf(r)) log.push([g.seq, key]);
    log.sort((a, b) => a[0] - b[0]);
    const logStart: number[] = [], logEnd: number[] = [], logKey: string[] = [];
    let n = 0;
    for (const [seq, key] of log) {
      if (n && logEnd[n - 1] === seq && logKey[n - 1] === key) { logEnd[n - 1]++; continue; }
      logStart.push(seq); logEnd.push(seq + 1); logKey.push(key); n++;
    }
    this.logStart = logStart;
    this.logEnd = logEnd;
    this.logKey = logKey;
    this.logCount = log.length;
    this.stale = 0;
  }

  /* ------------------------------------------------------ local writes */

  private checkWrite(coll: string, id: string): void {
    this.checkColl(coll);
    if (this.readonly) throw readOnly();
    // no NUL (a C replica's ids are C strings: it refuses the delta)
    if (!fitsId(id) || id.includes("\0"))
      throw new CrdtdbError("EBADID", `invalid id '${id}'`);
  }

  /** add(id, value) for each item, in one commit with one stamp each. */
  add(coll: string, items: [string, DataObject][]): Promise<void> {
    for (const [id] of items) this.checkWrite(coll, id);
    return this.local((t, staged) => {
      const slabs = items.length > 1 ? new Slabs() : undefined; // the values of this call's records together
      for (const [id, value] of items) {
        const regs = addRegisters(value, this.clock.tick(), this.id, this.limits, slabs);
        const r = t.copyOf(recordKey(coll, id), staged);
        // new here (or gone): the registers are the record, as the merge would leave them
        if (!r.base && !r.leaves.length && isFresh(regs.base, regs.leaves)) { r.base = regs.base; r.leaves = regs.leaves; }
        else { mergeBase(r, regs.base); mergeLeaves(r, regs.leaves); }
        checkLocalLimits(r, this.limits);
      }
    });
  }

  /** update(id, changes): deep merge into a visible record. */
  update(coll: string, id: string, changes: DataObject): Promise<void> {
    this.checkWrite(coll, id);
    return this.local((t, staged) => {
      const key = recordKey(coll, id);
      const cur = this.recordFor(t, key);
      if (!cur || !isVisible(cur)) throw notFound(coll, id);
      const r = t.copyOf(key, staged);
      mergeLeaves(r, updateLeaves(r, changes, this.clock.tick(), this.id, this.limits));
      checkLocalLimits(r, this.limits);
    });
  }

  /** remove(id): a tombstone when the record is visible here, else nothing. */
  remove(coll: string, id: string): Promise<void> {
    this.checkWrite(coll, id);
    return this.local((t, staged) => {
      const key = recordKey(coll, id);
      const cur = this.recordFor(t, key);
      if (!cur || !isVisible(cur)) return;
      mergeBase(t.copyOf(key, staged), { kind: REMOVE, hlc: this.clock.tick(), origin: this.id, seq: 0, src: LOCAL });
    });
  }

  /**
   * Runs a local operation.  `stage` writes the records it changes into
   * `staged` (copies, made with t.copyOf) or throws, leaving the commit
   * untouched.  Operations that arrive while a commit is under way go into
   * the next commit together (group commit): one backend transaction, each
   * operation with its own stamp, all resolved once it is durable.  A write
   * awaited before the next is made is a commit of its own, so observers
   * see one notification per write; writes made without awaiting may be
   * told together (MultipleChanges), as TinyBase's transactions are.
   */
  private local(stage: (t: Txn, staged: Map<string, StoredRecord>) => void): Promise<void> {
    return new Promise<void>((res, rej) => {
      this.pending.push({ stage, res, rej });
      if (this.pending.length > 1) return; // joins the group already waiting
      this.serial(async () => {
        const ops = this.pending.splice(0);
        const t = this.begin();
        t.local = true;
        const ok: LocalOp[] = [];
        for (const op of ops) {
          const staged = new Map<string, StoredRecord>();
          try {
            op.stage(t, staged);
          } catch (e) {
            op.rej(e);
            continue;
          }
          // the first operation's records are the commit's (a bulk add's
          // 10,000 not copied into a second map)
          if (!t.put.size && !t.del.size) t.put = staged;
          else for (const [k, r] of staged) { t.del.delete(k); t.put.set(k, r); }
          ok.push(op);
        }
        try {
          if (t.put.size || t.del.size) await this.finish(t);
          for (const op of ok) op.res();
        } catch (e) {
          for (const op of ok) op.rej(e);
        }
      }).catch((e: unknown) => { for (const op of this.pending.splice(0)) op.rej(e); });
    });
  }

  /* ---------------------------------------------------- remote deltas */

  /**
   * Verifies and applies a delta from peer `from` (hex id), all or nothing
   * (docs/protocol.md, "Limits checked on receipt").  Verification is done
   * before anything is locked; the watermark, clock and records commit
   * together.  Throws CrdtdbError; nothing is stored then.
   */
  async apply(bytes: Uint8Array, expectSender?: ReplicaId, based?: Map<string, Held>): Promise<ApplyInfo> {
    const r = await this.applyAll([bytes], expectSender, based);
    if (r.error) throw r.error;
    return r.info!;
  }

  /**
   * Verifies and applies deltas from peer `expectSender`, in order, as one
   * commit: what a session finds already received behind the delta it is
   * at (a fresh sync's or a catch-up's run of deltas) costs one backend
   * transaction, not one each (IndexedDB's commit wait is most of a
   * browser's fresh sync).  Each delta is checked as apply checks it, all
   * before anything is locked or merged; the deltas before the first that
   * fails commit together, and that one's error is returned with its index
   * (nothing of it or after it is stored): the caller handles it as apply's
   * throw, then goes on with the rest.  `info` covers what committed (null:
   * nothing did).  Without `expectSender` (apply's callers may omit it)
   * the list holds one delta: a run is one peer's.
   */
  async applyAll(list: readonly Uint8Array[], expectSender?: ReplicaId, based?: Map<string, Held>): Promise<GroupResult> {
    const ds: DecodedBody[] = [];
    let error: unknown = null;
    for (const bytes of list) {
      try {
        const d = await decodeDelta(bytes, this.limits);
        if (expectSender && !sameBytes(d.sender, expectSender))
          throw new CrdtdbError("EBADVALUE", "a delta signed by another replica than the peer");
        ds.push(d);
      } catch (e) {
        error = e;
        break;
      }
    }
    let r: GroupResult = ds.length
      ? await this.serial(() => this.applyBodies(ds, list))
      : { info: null, applied: 0, error: null };
    let bodies = ds;
    if (r.merged) {
      // delta k's merge failed (EFORGED), k > 0: those before it commit on
      // their own, decoded again (the failed commit took their registers)
      bodies = [];
      for (const bytes of list.slice(0, r.merged)) bodies.push(await decodeDelta(bytes, this.limits));
      const before = await this.serial(() => this.applyBodies(bodies, list));
      r = { info: before.info, applied: before.applied, error: before.error ?? r.error };
      error = r.error;
    } else if (r.applied < ds.length || !error) {
      error = r.error; // a check failed before the decode did
    }
    // a resync notes the records the snapshot carried: 'b' with an add or
    // remove, 'l' leaves only (which say nothing of what was removed, so
    // only our base of such a record can be what the peer collected)
    if (based)
      for (let i = 0; i < r.applied; i++)
        for (const rec of bodies[i]!.records) {
          const key = recordKey(rec.coll, rec.id);
          if (rec.base) based.set(key, "b");
          else if (!based.has(key)) based.set(key, "l");
        }
    return { info: r.info, applied: r.applied, error };
  }

  private async applyBodies(ds: DecodedBody[], list: readonly Uint8Array[]): Promise<GroupResult> {
    const peerHex = this.hexOfSender(ds[0]!.sender);
    const peer = this.peer(peerHex);
    const p: PeerState = { ...peer, points: peer.points.slice() };
    const t = this.begin();
    t.src = peerHex;
    t.delta = [];
    let error: unknown = null, n = 0;
    // registers carried for records held before (Txn.stored)
    const carried = new Map<string, number>();
    for (const d of ds) {
      let max: Hlc;
      try {
        max = this.checkBody(d, peerHex, p.points);
      } catch (e) {
        error = e;
        break;
      }
      if (max > t.maxHlc) t.maxHlc = max;
      try {
        const records = this.records;
        for (const rec of d.records) {
          const key = recordKey(rec.coll, rec.id);
          if (records.has(key)) carried.set(key, (carried.get(key) ?? 0) + (rec.base ? 1 : 0) + rec.fields.length);
          mergeRemote(t, rec, key);
        }
      } catch (e) {
        // t holds part of this delta: nothing of it commits (applyAll
        // commits those before it again, on their own)
        return { info: null, applied: 0, error: e, merged: n };
      }
      t.delta.push(signatureOf(list[n]!));
      const mine = d.recipient === null || toHex(d.recipient) === this.idHex;
      if (mine && d.from <= p.received && d.to > p.received) p.received = d.to;
      if (d.recipient && toHex(d.recipient) === this.idHex && d.ack !== null && d.ack > p.acked) p.acked = d.ack;
      for (const h of d.history) if (!hasPoint(p.points, h.seq)) p.points.push([h.seq, h.fp.slice()]);
      if (p.points.length > PEER_POINTS_KEPT) p.points = p.points.slice(-PEER_POINTS_KEPT);
      n++;
    }
    if (!n) return { info: null, applied: 0, error };
    t.stored = storable(t, carried) ? list.slice(0, n) : null;
    if (t.stored) t.held = [...carried.keys()];
    const seq0 = this.meta.seq;
    await this.finish(t, (m) => { m.peers[peerHex] = p; });
    const info = { from: ds[0]!.from, to: ds[n - 1]!.to, received: p.received, localFrom: seq0, localTo: this.meta.seq };
    return { info, applied: n, error };
  }

  /** Checks a delta's body before it merges: its database, collections,
   *  clock and history; `points` the peer's as they stand (applyAll's
   *  earlier deltas' included).  Throws CrdtdbError. */
  private checkBody(d: DecodedBody, peerHex: string, points = this.peer(peerHex).points): Hlc {
    if (d.dbId !== this.dbId)
      throw new CrdtdbError("EINVAL", `the delta is for database '${d.dbId}', this is '${this.dbId}'`);
    for (const rec of d.records)
      if (!this.collections.has(rec.coll)) throw new CrdtdbError("ENOCOLL", `Collection '${rec.coll}' not found`);
    for (const rec of d.records) // as storage/apply.c (a C replica's ids are C strings)
      if (rec.id.includes("\0")) throw new CrdtdbError("EBADID", "record id contains NUL");
    const max = d.maxHlc;
    if (max > 0n) {
      try {
        this.clock.check(max);
      } catch (e) {
        this.clockRetryAt = hlcMs(max) - this.clock.maxSkewMs;
        throw e;
      }
    }
    // history: a second fingerprint for a sequence is a second history
    // (one the same delta carries too, as storage/apply.c)
    for (let i = 0; i < d.history.length; i++) {
      const p = d.history[i]!;
      const differs = (seq: number, fp: Uint8Array): boolean => seq === p.seq && !sameBytes(fp, p.fp);
      if (points.some(([s, fp]) => differs(s, fp)) || d.history.some((h, j) => j < i && differs(h.seq, h.fp)))
        throw new CrdtdbError("EFORK", `the peer's history at ${p.seq} differs from what it sent before (a copied replica)`);
    }
    const self = d.recipient && toHex(d.recipient) === this.idHex;
    if (self && d.ack !== null && d.ack > this.meta.seq)
      throw new CrdtdbError("EFORK", `the peer holds ${d.ack} of this replica's changes, more than the ${this.meta.seq} it wrote (a copied replica)`);
    return max;
  }

  /** Records a peer's acknowledgement (bounded by our own log). */
  ackFrom(peerHex: string, seq: number): Promise<void> {
    return this.serial(async () => {
      const p = this.peer(peerHex);
      if (seq <= p.acked || seq > this.meta.seq) return;
      // kept in memory and stored with the next commit: an ack only
      // informs (what is resent follows the peer's since), so a lost one
      // costs a little resending, and a commit per ack costs much more
      this.meta = { ...this.meta, peers: { ...this.meta.peers, [peerHex]: { ...p, acked: seq } } };
    });
  }

  private relaxedPending = false;

  /** Makes relaxed (local) commits durable before a peer is told of them:
   *  one strict meta-only commit, which flushes the ones before it. */
  durable(): Promise<void> {
    if (!this.relaxedPending) return Promise.resolve();
    return this.serial(async () => {
      if (!this.relaxedPending) return;
      await this.backend.commit({ meta: this.meta, put: new Map(), del: new Set() });
      this.relaxedPending = false;
    });
  }

  /** Marks the copy read-only (or not), durably. */
  markReadonly(ro: boolean): Promise<void> {
    return this.serial(async () => {
      if (this.meta.readonly === ro) return;
      await this.finish(this.begin(), (m) => { m.readonly = ro; });
    });
  }

  /** Notes durably that peer `peerHex` is resyncing us whole (or no
   *  longer is): a session cut before the end asks for all of it again.
   *  `stamp`, the peer's horizon stamp (with `on`), goes into our clock in
   *  the same commit as a received stamp (crdtdb_db_peer_resync), so what
   *  we write from now on is newer than anything the peer collected;
   *  ECLOCK, nothing stored, if it is too far ahead of our time. */
  markResync(peerHex: string, on: boolean, stamp: Hlc = 0n): Promise<void> {
    return this.serial(async () => {
      const p = this.peer(peerHex);
      const t = this.begin();
      if (on && stamp > 0n) {
        this.clock.check(stamp);
        t.maxHlc = stamp; // finish receives it and stores the clock
      } else if (!!p.resync === on) {
        return;
      }
      await this.finish(t, (m) => {
        const q: PeerState = { ...(m.peers[peerHex] ?? p) };
        if (on) q.resync = true; else delete q.resync;
        m.peers[peerHex] = q;
      });
    });
  }

  /**
   * Ends a full resync from peer `peerHex` (docs/protocol.md, "Collection
   * and full resync"; crdtdb_db_resync_end), in one commit.  A register
   * the peer has seen is one numbered up to `acked` (what it had
   * acknowledged of our log when the resync began) or stamped at or
   * before its horizon `stamp`.  `held` names the records the peer's
   * snapshot carried: 'b' with an add or remove (kept as they are), 'l'
   * leaves only.  A record not held loses every register the peer has
   * seen: the peer removed and collected it, or never had it.  A record
   * held 'l' loses only such a base (the peer's leaves say nothing of a
   * remove it collected); its leaves stay.  Like a purge: no tombstone,
   * no change-log entry.  A `shared` replica (one that serves others)
   * removes such a record instead, if visible, so that those it serves
   * hear it went.  Clears the durable resync mark; returns how many
   * records it changed.
   */
  resyncEnd(peerHex: string, stamp: Hlc, acked: number, held: ReadonlyMap<string, Held>, shared: boolean): Promise<number> {
    return this.serial(async () => {
      const seen = (g: BaseReg | Leaf): boolean => (g.seq > 0 && g.seq <= acked) || g.hlc <= stamp;
      const t = this.begin();
      let n = 0;
      for (const [key, r] of this.records) {
        const h = held.get(key);
        if (h === "b") continue;
        const leavesToo = h === undefined;
        if (!((r.base && seen(r.base)) || (leavesToo && r.leaves.some(seen)))) continue;
        n++;
        if (shared) {
          if (isVisible(r)) mergeBase(t.writable(key), { kind: REMOVE, hlc: this.clock.tick(), origin: this.id, seq: 0, src: LOCAL });
          continue;
        }
        const w = t.writable(key);
        if (w.base && seen(w.base)) w.base = null;
        if (leavesToo) w.leaves = w.leaves.filter((l) => !seen(l));
        if (!w.base && !w.leaves.length) { t.put.delete(key); t.del.add(key); }
      }
      await this.finish(t, (m) => {
        const q: PeerState = { ...this.peer(peerHex) };
        delete q.resync;
        m.peers[peerHex] = q;
      });
      return n;
    });
  }

  /** Forgets a record, with no tombstone and nothing to send (a purge). */
  purge(coll: string, id: string): Promise<Change[]> {
    return this.serial(async () => {
      const key = recordKey(coll, id);
      if (!this.collections.has(coll)) throw new CrdtdbError("ENOCOLL", `Collection '${coll}' not found`);
      if (!this.records.has(key)) return [];
      const t = this.begin();
      t.del.add(key);
      return this.finish(t);
    });
  }

  /**
   * A replace from the server: takes back our own registers of the record
   * numbered up to `upto`, then merges the server's copy (a delta of that
   * record, verified before anything is locked), in one commit.
   */
  async replace(coll: string, id: string, upto: number, delta: Uint8Array | null, server: ReplicaId): Promise<Change[]> {
    if (!this.collections.has(coll)) throw new CrdtdbError("EBADVALUE", "replace of an unknown record");
    const d = delta ? await decodeDelta(delta, this.limits) : null;
    if (d && toHex(d.sender) !== toHex(server)) throw new CrdtdbError("EBADVALUE", "a replace signed by another replica than the peer");
    if (d) // (its stamps would move our clock: refused whole, as storage/apply.c)
      for (const rec of d.records)
        if (rec.coll !== coll || rec.id !== id) throw new CrdtdbError("EBADVALUE", `a replace of record '${id}' in '${coll}' holds another record`);
    return this.serial(async () => {
      const max = d ? this.checkBody(d, toHex(server)) : 0n;
      const key = recordKey(coll, id);
      const t = this.begin();
      const cur = this.records.get(key);
      if (cur) {
        const r = t.writable(key);
        if (r.base && r.base.src === LOCAL && r.base.seq <= upto) r.base = null;
        r.leaves = r.leaves.filter((l) => !(l.src === LOCAL && l.seq <= upto));
        if (!r.base && !r.leaves.length) { t.put.delete(key); t.del.add(key); }
      }
      if (d) {
        t.src = toHex(server);
        t.maxHlc = max;
        for (const rec of d.records) if (rec.coll === coll && rec.id === id) mergeRemote(t, rec);
      }
      return this.finish(t);
    });
  }

  /** Forgets every record holding a change of our own after `after` (a
   *  read-only grant: they can never be sent).  Returns how many. */
  discardUnsent(after: number): Promise<number> {
    return this.serial(async () => {
      const t = this.begin();
      for (const [key, r] of this.records)
        if (registersOf(r).some((g) => g.src === LOCAL && g.seq > after)) t.del.add(key);
      if (!t.del.size) return 0;
      await this.finish(t);
      return t.del.size;
    });
  }

  /** Forgets every record and every peer's watermarks (access changed: the
   *  next sync starts from nothing).  Observers get InvalidateAll. */
  clear(): Promise<void> {
    return this.serial(async () => {
      const t = this.begin();
      t.clear = true;
      await this.finish(t, (m) => { m.peers = {}; });
    });
  }

  /* ------------------------------------------------------------ export */

  /** The last sequence at or before `seq` that ends a commit, with its fingerprint. */
  private pointAtOrBefore(seq: number): [number, Uint8Array] | null {
    let best: [number, Uint8Array] | null = null;
    for (const p of this.meta.points) if (p[0] <= seq && (!best || p[0] > best[0])) best = p;
    return best;
  }

  /**
   * Signed deltas for peer `to` (hex) of our log after `after`, each at
   * most maxBytes (estimated), leaving out what came from that peer unless
   * `all`.  Returns no deltas when the range holds nothing for it (or, with
   * `empty`, one delta of no records, which moves the peer's watermark;
   * with `prove`, one even when `after` is our log's end: from = to =
   * after), with `upto` the last sequence scanned (for a skip).
   */
  async exportFor(peerId: ReplicaId, after: number, opts: { all?: boolean; maxBytes?: number; empty?: boolean; prove?: boolean; scanFrom?: number } = {}): Promise<{ deltas: { bytes: Uint8Array; to: number }[]; upto: number }> {
    const peerHex = toHex(peerId);
    const last = this.meta.seq;
    const maxBytes = Math.min(opts.maxBytes ?? this.limits.maxDeltaSize, this.limits.maxDeltaSize);
    const out: { bytes: Uint8Array; to: number }[] = [];
    if (after >= last) {
      // a proof of our id (a client signs a delta each session): empty
      if (opts.prove) out.push({ bytes: await this.emptyDelta(peerId, after, after), to: after });
      return { deltas: out, upto: last };
    }
    // (after, scanFrom] is known to hold nothing for the peer: not scanned
    // the log as it is now: a commit meanwhile appends runs (read only the
    // first logLen) or replaces the arrays
    const logStart = this.logStart, logEnd = this.logEnd, logKey = this.logKey;
    const logLen = logStart.length;
    const first = Math.max(after, opts.scanFrom ?? after) + 1;
    // run i, sequence seq in it: the next to scan
    let i = lowerBound(logEnd, first + 1);
    let seq = i < logLen ? Math.max(logStart[i]!, first) : 0;
    let from = after;
    const received = this.peer(peerHex).received;
    // a big export (a bulk commit's upload) encodes and signs in tasks of
    // its own, a delta each: started by the commit's listener, it would
    // otherwise run on as microtasks ahead of the committing caller's
    // continuation
    let left = i < logLen ? logEnd[i]! - seq : 0;
    for (let j = i + 1; j < logLen && left <= EXPORT_YIELD_ABOVE; j++) left += logEnd[j]! - logStart[j]!;
    const big = left > EXPORT_YIELD_ABOVE;
    while (i < logLen) {
      // one chunk: records in log order until the estimate is full
      const keys = new Set<string>();
      let size = 256, to = from;
      let rKey = "", r: StoredRecord | undefined;
      for (; i < logLen && (!keys.size || size < maxBytes * 0.8) && keys.size < this.limits.maxDeltaGroups;) {
        const key = logKey[i]!, s = seq;
        // the next position: the run's next sequence, else the next run's first
        if (++seq >= logEnd[i]!) { i++; seq = i < logLen ? logStart[i]! : 0; }
        if (key !== rKey) { rKey = key; r = this.records.get(key); }
        const g = r ? registerAt(r, s) : null;
        if (!g) continue; // stale: the register was superseded or dropped
        to = s;
        // the peer's own: never sent back, so neither counted nor collected
        // (a fresh sync's log is all the server's)
        if (!opts.all && g.src === peerHex) continue;
        const est = g === r!.base ? 16 : estimateLeaf(g as Leaf);
        if (!keys.has(key)) { keys.add(key); size += key.length + 16; }
        size += est;
      }
      const end = i >= logLen ? last : to;
      const recs: DeltaRecord[] = [];
      for (const key of keys) {
        const r = this.records.get(key)!;
        const [coll, id] = splitKey(key);
        const pick = (g: BaseReg | Leaf): boolean => g.seq > from && g.seq <= end && (opts.all || g.src !== peerHex);
        const base = r.base && pick(r.base) ? { kind: r.base.kind, hlc: r.base.hlc, origin: r.base.origin } : null;
        const fields: DeltaField[] = r.leaves.filter(pick);
        if (base || fields.length) recs.push({ coll, id, base, fields });
      }
      if (recs.length || (opts.empty && !out.length && end === last)) {
        const history: { seq: number; fp: Uint8Array }[] = [];
        for (const s of [from, end]) {
          const p = this.pointAtOrBefore(s);
          if (p && !history.some((h) => h.seq === p[0])) history.push({ seq: p[0], fp: p[1] });
        }
        const body: DeltaBody = { dbId: this.dbId, sender: this.id, from, to: end, ack: received, records: recs, history, recipient: peerId };
        if (big) await nextTask();
        out.push({ bytes: await encodeDelta(body, this.kp), to: end });
      }
      from = end;
    }
    if (opts.empty && !out.length) {
      // nothing scanned (the range was known empty): one empty delta moves
      // the peer's watermark
      out.push({ bytes: await this.emptyDelta(peerId, after, last), to: last });
    }
    return { deltas: out, upto: last };
  }

  /** A signed delta of no records for the peer, (from, to] of our log. */
  private emptyDelta(peerId: ReplicaId, from: number, to: number): Promise<Uint8Array> {
    const history: { seq: number; fp: Uint8Array }[] = [];
    for (const s of [from, to]) {
      const p = this.pointAtOrBefore(s);
      if (p && !history.some((h) => h.seq === p[0])) history.push({ seq: p[0], fp: p[1] });
    }
    const received = this.peer(toHex(peerId)).received;
    const body: DeltaBody = { dbId: this.dbId, sender: this.id, from, to, ack: received, records: [], history, recipient: peerId };
    return encodeDelta(body, this.kp);
  }
}

interface LocalOp {
  stage: (t: Txn, staged: Map<string, StoredRecord>) => void;
  res: () => void;
  rej: (e: unknown) => void;
}

/** What a transaction reads besides its own copies: the replica, or
 *  nothing at all (a replay of stored deltas). */
interface TxnHost {
  recordFor(t: Txn, key: string): StoredRecord | undefined;
  has(key: string): boolean;
  readonly collections: ReadonlySet<string>;
}

const EMPTY_HOST: TxnHost = {
  recordFor: (t, key) => t.put.get(key),
  has: () => false,
  collections: new Set(),
};

/**
 * The records a commit of stored deltas gave (backend.ts Replay): merged
 * as applyBodies merged them, into nothing, and numbered from seq0, so
 * every register comes back with the sequence and source it had (see
 * storable for why "into nothing" is the same merge).  The records held
 * before the commit come back with only what the deltas added: the
 * backend stored them whole over these.
 */
export function replayDeltas(d: Pick<StoredDeltas, "src" | "seq0" | "deltas">): Map<string, StoredRecord> {
  const t = new Txn(EMPTY_HOST);
  t.src = d.src;
  t.delta = [];
  try {
    for (const bytes of d.deltas) for (const rec of decodeStored(bytes).records) mergeRemote(t, rec);
  } catch (e) {
    if (e instanceof CrdtdbError && e.code === "ECORRUPT") throw e;
    throw new CrdtdbError("ECORRUPT", `stored deltas do not replay: ${(e as Error).message}`);
  }
  numberTxn(t, d.seq0, null);
  return t.put;
}

/** @internal One commit under way. */
class Txn {
  put = new Map<string, StoredRecord>();
  del = new Set<string>();
  clear = false;
  src: Source = LOCAL;
  /** Only local writes (no peer is told of this commit). */
  local = false;
  maxHlc = 0n;
  /** Peers' deltas applied whole (their signatures, in order): the chain
   *  notes each once. */
  delta: Uint8Array[] | null = null;
  /** The deltas merged, when replaying them gives this commit (storable):
   *  the backend may store them instead of the records (Batch.deltas). */
  stored: Uint8Array[] | null = null;
  /** With stored: the records held before, which the deltas added to. */
  held: string[] = [];
  private colls = new Map<string, number>();
  constructor(private readonly rep: TxnHost) {}

  /** A private copy of the record to change (created empty if absent). */
  writable(key: string): StoredRecord {
    const have = this.put.get(key);
    if (have) return have;
    const cur = this.rep.recordFor(this, key);
    // the registers themselves are shared: a committed one is never
    // changed in place (merges replace them; number() only touches seq 0)
    const r: StoredRecord = cur ? { base: cur.base, leaves: cur.leaves.slice() } : emptyRecord();
    this.del.delete(key);
    this.put.set(key, r);
    return r;
  }

  /** A fresh copy of the record as this transaction sees it (empty if
   *  absent), kept in `staged` so one operation writes it once. */
  copyOf(key: string, staged: Map<string, StoredRecord>): StoredRecord {
    const have = staged.get(key);
    if (have) return have;
    const cur = this.rep.recordFor(this, key);
    // the registers themselves are shared: a committed one is never
    // changed in place (merges replace them; number() only touches seq 0)
    const r: StoredRecord = cur ? { base: cur.base, leaves: cur.leaves.slice() } : emptyRecord();
    staged.set(key, r);
    return r;
  }

  /** The replica holds the record (before this transaction). */
  holds(key: string): boolean {
    return this.rep.has(key);
  }

  /** A collection's number for the history chain: its declaration index. */
  collNum(coll: string): number {
    let n = this.colls.get(coll);
    if (n === undefined) {
      n = [...this.rep.collections].indexOf(coll);
      this.colls.set(coll, n);
    }
    return n;
  }
}

/** A decoded record's fields as leaves from src: the decoder made them in
 *  the leaves' shape (delta.ts parseField), so they are taken as they are,
 *  array and all (decodeDelta: one body, one merge).  seq is reset, so a
 *  body merged again after a failed commit is numbered again. */
function leavesOf(fields: Leaf[], src: Source): Leaf[] {
  for (let i = 0; i < fields.length; i++) {
    const l = fields[i]!;
    l.seq = 0;
    l.src = src;
  }
  return fields;
}

/** A decoded base as a register from src (as leavesOf). */
function baseOf(b: BaseReg, src: Source): BaseReg {
  b.seq = 0;
  b.src = src;
  return b;
}

/** Numbers the registers the transaction stored (seq 0) after seq0, and
 *  notes them for the chain; returns the last sequence.  A peer's delta
 *  is noted once (its signature covers every register it holds, see
 *  finish), a local commit register by register (history.ts).  (Plain
 *  loops outside the async finish: V8 optimizes them there.)  Replay
 *  numbers a stored commit again the same way. */
function numberTxn(t: Txn, seq0: number, hist: History | null): number {
  let seq = seq0;
  const each = t.delta === null, src = t.src;
  for (const [key, r] of t.put) {
    const b = r.base;
    let c = 0, id = "";
    if (each) { const cut = key.indexOf("\u0000"); c = t.collNum(key.slice(0, cut)); id = key.slice(cut + 1); }
    if (b && b.seq === 0) {
      b.seq = ++seq;
      b.src = src;
      if (each) hist!.note(c, b.kind, b.hlc, b.origin, id, null);
    }
    const leaves = r.leaves;
    for (let i = 0; i < leaves.length; i++) {
      const g = leaves[i]!;
      if (g.seq !== 0) continue;
      g.seq = ++seq;
      g.src = src;
      if (each) hist!.note(c, g.vbuf === null ? 1 : 0, g.hlc, g.origin, id, g.path);
    }
  }
  return seq;
}

/**
 * Whether a peer's merged deltas can stand for the commit (Txn.stored):
 * merged into nothing they must give the same registers, numbered alike.
 * A new record's are the same by construction.  A held record's (carried:
 * how many registers the deltas held for it) are when every one of them
 * was taken (none lost to a register held here, so none lose in the replay
 * either): then its new registers, base first and leaves in path order,
 * are exactly the deltas' own, and it entered the transaction at its first
 * touch, as it does in the replay.
 */
function storable(t: Txn, carried: Map<string, number>): boolean {
  if (t.del.size || t.clear) return false;
  for (const [key, n] of carried) {
    const r = t.put.get(key);
    if (!r) return false; // nothing taken: its place in the replay's order would differ
    let fresh = r.base && r.base.seq === 0 ? 1 : 0;
    const leaves = r.leaves;
    for (let i = 0; i < leaves.length; i++) if (leaves[i]!.seq === 0) fresh++;
    if (fresh !== n) return false;
  }
  return true;
}

/** Merges one delta record (its key: `key`) into the transaction; EFORGED
 *  on equivocation. */
function mergeRemote(t: Txn, rec: DecodedRecord, key = recordKey(rec.coll, rec.id)): void {
  const fresh = !t.put.has(key), wasDel = t.del.has(key);
  if (fresh && !wasDel && !t.holds(key)) {
    // new here: its registers are its record, unless they need the merge
    const b = rec.base;
    if (!b && !rec.fields.length) return;
    const leaves = leavesOf(rec.fields, t.src);
    const r = freshRecord(b && baseOf(b, t.src), leaves, rec.ordered);
    if (r) {
      t.put.set(key, r);
      return;
    }
  }
  const r = t.writable(key);
  let won = false;
  // mergeBase and mergeLeaves refuse equivocation (EFORGED) themselves; the
  // copy is private to the transaction, which then fails whole
  if (rec.base) won = mergeBase(r, baseOf(rec.base, t.src)) || won;
  if (rec.fields.length) won = mergeLeaves(r, leavesOf(rec.fields, t.src)) > 0 || won;
  // nothing taken (a resend): the record is neither rewritten nor reported
  if (!won && fresh) { t.put.delete(key); if (wasDel) t.del.add(key); }
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

function hasPoint(points: [number, Uint8Array][], seq: number): boolean {
  for (let i = 0; i < points.length; i++) if (points[i]![0] === seq) return true;
  return false;
}

function lowerBound(seqs: number[], seq: number): number {
  let lo = 0, hi = seqs.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (seqs[mid]! < seq) lo = mid + 1; else hi = mid;
  }
  return lo;
}

/** r's register numbered seq, or null (a stale log entry). */
function registerAt(r: StoredRecord, seq: number): BaseReg | Leaf | null {
  if (r.base && r.base.seq === seq) return r.base;
  const leaves = r.leaves;
  for (let i = 0; i < leaves.length; i++) if (leaves[i]!.seq === seq) return leaves[i]!;
  return null;
}

/** A leaf's encoded size in a delta, about. */
function estimateLeaf(l: Leaf): number {
  let n = 24 + l.vlen;
  for (const k of l.path) n += k.length + 2;
  return n;
}

