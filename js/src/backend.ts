/**
 * Where a replica keeps its state between runs.  The replica holds
 * everything in memory (small datastores: one per match, room or
 * document) and hands the backend one batch per commit: the records it
 * changed and the replica's metadata, to be stored all or nothing.  A
 * commit's promise resolves only once the batch is durable, and the
 * replica acknowledges a delta to its peer only after that.
 *
 * Ownership: a backend keeps no reference to the objects of a batch after
 * commit() resolves (the replica may reuse them); load() hands the replica
 * objects it then owns.  A leaf's value is a range of a buffer many values
 * share (types.ts ValueRef: a received delta, a loaded page): a backend
 * copies the range (valueBytes), never the whole buffer, and one that
 * loads leaves may point them into what it read, which it then gives up.
 */
import type { Hlc, StoredRecord } from "./types.js";

/** What the replica knows of one peer (docs/protocol.md, "watermarks"). */
export interface PeerState {
  /** Every change of the peer's log up to here is applied. */
  received: number;
  /** Every change of ours up to here is held by the peer. */
  acked: number;
  /** The last history points the peer sent: [seq, 16-byte fingerprint]. */
  points: [number, Uint8Array][];
  /** The peer is resyncing us whole (RESYNC, docs/protocol.md
   *  "Collection and full resync") and has not finished: the next session
   *  asks for everything again (since 0).  Absent: false. */
  resync?: boolean;
}

/** The replica's own state besides its records. */
export interface Meta {
  /** The ed25519 seed of this replica: its identity.  Persisted so a
   *  reload is the same replica (a new identity would resend nothing of
   *  what the old one wrote and lose its watermarks). */
  seed: Uint8Array;
  /** The last local change sequence numbered. */
  seq: number;
  /** The highest stamp issued or accepted (docs/crdt.md, "Clock rules"). */
  hlc: Hlc;
  /** The history chain's head and its recent points [seq, fp]. */
  fp: Uint8Array;
  points: [number, Uint8Array][];
  /** Peers by hex id. */
  peers: Record<string, PeerState>;
  /** A server granted only server-to-client: local writes are refused. */
  readonly: boolean;
  /** The database this copy is of (absent in copies made before it was
   *  kept): opening it as another database is refused. */
  dbId?: string;
}

export interface Batch {
  meta: Meta;
  /** Records to store, by key (collection + "\u0000" + id). */
  put: Map<string, StoredRecord>;
  /** Records to forget, by key. */
  del: Set<string>;
  /** Forget every record first (a clear). */
  clear?: boolean;
  /** Only local writes: a backend may trade the last instant's durability
   *  for speed (IndexedDB "relaxed").  Never set when a peer will be told. */
  relaxed?: boolean;
  /** The commit is a peer's deltas (a fresh sync, a catch-up) whose
   *  records replay gives (Replay): exactly `put`'s, except those of
   *  `deltas.held`, which the replica held before and of which replay
   *  gives only what the deltas added.  del and clear are empty.  A backend
   *  may store these bytes instead of the records (fewer bytes, no
   *  encoding), the held ones as records over them, and hand them to
   *  load()'s replay.  Absent: it may not. */
  deltas?: StoredDeltas;
}

/** A peer's deltas as a commit applied them: signed by `src` (its hex
 *  id), verified, merged in this order, their registers numbered from
 *  seq0 + 1.  Every register they carried for a record in `held` (keys
 *  the replica held before) was taken, so merged into nothing they are
 *  numbered as they were; every other record was new.  The arrays are the
 *  backend's to keep (the replica's leaves may point into them too). */
export interface StoredDeltas {
  src: string;
  seq0: number;
  deltas: Uint8Array[];
  held: string[];
}

/** The records a StoredDeltas gives, numbered as when committed (the
 *  replica's rules; load() is handed it).  Throws ECORRUPT. */
export type Replay = (d: Pick<StoredDeltas, "src" | "seq0" | "deltas">) => Map<string, StoredRecord>;

export interface Loaded {
  meta: Meta | null;
  records: Map<string, StoredRecord>;
}

export interface Backend {
  /** Everything stored, or meta null for a new store.  A backend that
   *  stored a commit's deltas (Batch.deltas) turns them back into records
   *  with `replay`. */
  load(replay?: Replay): Promise<Loaded>;
  /** Stores a batch durably, all or nothing; rejects (CrdtdbError EIO or
   *  EMAPFULL) and stores nothing on failure. */
  commit(batch: Batch): Promise<void>;
  /** Releases the backend.  Safe to call twice. */
  close(): Promise<void>;
  /** The backend honours Batch.relaxed (commits it may lose on a crash
   *  until a later strict one).  Absent: every commit is as durable as the
   *  backend gets, and nothing needs flushing before a peer is told. */
  readonly relaxes?: boolean;
  /** A commit costs much more than its bytes (IndexedDB: ~30 ms a
   *  transaction in Chromium, whatever its size): a session catching up
   *  waits a little to gather the deltas arriving back to back into fewer,
   *  larger commits (session.ts GATHER_*).  Absent: false, a run is what
   *  has already arrived. */
  readonly costlyCommit?: boolean;
  /** An append-only backend that has grown well past its live data says
   *  so; the replica then hands it everything to rewrite (compact), between
   *  commits.  Optional. */
  shouldCompact?(): boolean;
  compact?(meta: Meta, records: Map<string, StoredRecord>): Promise<void>;
}

export const recordKey = (coll: string, id: string): string => coll + "\u0000" + id;
export const splitKey = (key: string): [string, string] => {
  const i = key.indexOf("\u0000");
  return [key.slice(0, i), key.slice(i + 1)];
};

/** Keeps nothing beyond the process: a replica that starts empty each time
 *  (tests, or a page that only needs the live session). */
export class MemoryBackend implements Backend {
  async load(): Promise<Loaded> {
    return { meta: null, records: new Map() };
  }
  async commit(_batch: Batch): Promise<void> {}
  async close(): Promise<void> {}
}
