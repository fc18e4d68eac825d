/**
 * The shapes every module of the package shares: stamps, registers, records
 * as stored, and deltas as decoded.  Types only; no code.
 *
 * Ownership: every Uint8Array held in a register or a delta is owned by that
 * object for its whole life and never mutated; callers copy before mutating.
 */

/** A hybrid logical clock packed as in docs/crdt.md: 48 bits of Unix
 *  milliseconds, 16 bits of counter.  Packed values exceed 2^53, hence bigint. */
export type Hlc = bigint;

/** A replica's ed25519 public key, 32 bytes.  Compared bytewise. */
export type ReplicaId = Uint8Array;

/** A field path: literal string keys, outermost first (never dotted). */
export type Path = readonly string[];

export const ADD = 1;
export const REMOVE = 2;
export type BaseKind = typeof ADD | typeof REMOVE;

/** Where a register came from: LOCAL for our own writes, otherwise the
 *  peer key (hex of the sending replica's id) it was merged from.  An export
 *  made for a peer leaves out what came from that peer (docs/protocol.md). */
export type Source = string;
export const LOCAL: Source = "";

/** The record's base register: its latest add or remove. */
export interface BaseReg {
  kind: BaseKind;
  hlc: Hlc;
  origin: ReplicaId;
  /** Local change sequence that last wrote it (0 = not numbered yet). */
  seq: number;
  src: Source;
}

/** A leaf's value by reference: vlen bytes of vbuf at voff, the msgpack
 *  encoding of the value exactly as received or written (so relays keep
 *  int/float/int64 types); vbuf null (voff, vlen 0) for a map leaf (an
 *  empty map: "this path is a map").  The values of one delta, stored page
 *  or write share one buffer, which nothing writes to once they point into
 *  it: a fresh sync of 100k fields keeps 100k leaves, not 100k views as
 *  well (each an object the page's young heap then carries).  value.ts has
 *  the helpers (valueBytes, sameValue, refOf). */
export interface ValueRef {
  vbuf: Uint8Array | null;
  voff: number;
  vlen: number;
}

/** One field of a delta: a leaf write. */
export interface DeltaField extends ValueRef {
  path: Path;
  hlc: Hlc;
  origin: ReplicaId;
}

/** One leaf register: a field as the replica keeps it.  Made with its
 *  properties in the order path, hlc, origin, vbuf, voff, vlen, seq, src
 *  (one shape for all). */
export interface Leaf extends DeltaField {
  seq: number;
  src: Source;
}

/** A record as stored: its base (null until an add/remove is known) and its
 *  live leaves, sorted by comparePaths (crdt/path.ts).  Dead registers are
 *  dropped at once (docs/crdt.md, "Garbage"). */
export interface StoredRecord {
  base: BaseReg | null;
  leaves: Leaf[];
}

/** A plain JS value as the DataStore API sees it.  Integers beyond 2^53 are
 *  bigint; binary is Uint8Array; msgpack timestamps are Date. */
export type Value =
  | null
  | boolean
  | number
  | bigint
  | string
  | Date
  | Uint8Array
  | Value[]
  | { [key: string]: Value };

export type DataObject = { [key: string]: Value };

/** A decoded delta (docs/protocol.md, "Body"), stamps already absolute. */
export interface DeltaRecord {
  coll: string;
  id: string;
  base: { kind: BaseKind; hlc: Hlc; origin: ReplicaId } | null;
  fields: DeltaField[];
}

export interface DeltaBody {
  dbId: string;
  sender: ReplicaId;
  from: number;
  to: number;
  ack: number | null;
  records: DeltaRecord[];
  history: { seq: number; fp: Uint8Array }[];
  recipient: ReplicaId | null;
}

/** A delta as decodeDelta gives it: its bases and fields already
 *  registers (seq 0, src ""), so a replica takes them as its own without a
 *  copy (a fresh sync decodes 100k of them), and the highest stamp it
 *  holds. */
export interface DecodedRecord extends DeltaRecord {
  base: BaseReg | null;
  fields: Leaf[];
  /** The fields' paths are strictly ascending, none below another (the
   *  decoder checked it): a record new here then needs only its stamps
   *  checked to be taken as it is (record.ts freshRecord). */
  ordered: boolean;
}

export interface DecodedBody extends DeltaBody {
  records: DecodedRecord[];
  /** The highest stamp of its records (0n if none). */
  maxHlc: Hlc;
}
