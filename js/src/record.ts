/**
 * One record as last-writer-wins registers, exactly docs/crdt.md and
 * crdt/record.c: a base register (the latest add or remove) and one leaf
 * register per field path, leaves kept sorted by comparePaths.
 *
 *   - a register takes a write only with a greater stamp (hlc, then origin
 *     bytewise); an equal stamp is the same write again (a different value
 *     under it is equivocation: EFORGED);
 *   - a leaf older than the base is dead;
 *   - a leaf older than a leaf at one of its ancestors is dead;
 *   - a value leaf with a live leaf below it reads as a map;
 *   - the record is visible iff its base is an add.
 *
 * Dead registers are dropped at once.  The functions that drop registers
 * take an optional `dead` array and push onto it the seq of every dropped
 * register that had one (seq != 0), for the change log, as C's `dead`.
 *
 * Functions mutate the StoredRecord passed in.  Leaf and base objects given
 * to them are kept (not copied) and never mutated.
 */

import { CrdtdbError } from "./errors.js";
import { compareBytes, compareIds, comparePaths, isAncestor, samePath } from "./path.js";
import {
  ADD,
  LOCAL,
  type BaseReg,
  type DataObject,
  type Hlc,
  type Leaf,
  type Path,
  type ReplicaId,
  type StoredRecord,
  type Value,
} from "./types.js";
import { DEFAULT_LIMITS, MsgpackBuilder, decodeLeafValue, flatten, flattenAs, sameValue, type Limits, type Slabs } from "./value.js";

export function emptyRecord(): StoredRecord {
  return { base: null, leaves: [] };
}

/** Compares stamps (aHlc, aOrigin) and (bHlc, bOrigin): hlc, then the
 *  full replica key bytewise.  <0, 0, >0. */
export function compareStamp(aHlc: Hlc, aOrigin: ReplicaId, bHlc: Hlc, bOrigin: ReplicaId): number {
  if (aHlc !== bHlc) return aHlc < bHlc ? -1 : 1;
  if (aOrigin === bOrigin) return 0;
  return compareBytes(aOrigin, bOrigin);
}

function cmpLeaf(a: Leaf, b: Leaf): number {
  if (a.hlc !== b.hlc) return a.hlc < b.hlc ? -1 : 1;
  if (a.origin === b.origin) return 0;
  return compareBytes(a.origin, b.origin);
}

/** True if l is dead under a, a leaf at an ancestor path (older: by hlc,
 *  then replica key). */
export function olderThanLeaf(l: Leaf, a: Leaf): boolean {
  return cmpLeaf(l, a) < 0;
}

/** True if l is dead under base b (older: by hlc, then replica key). */
export function olderThanBase(l: Leaf, b: BaseReg): boolean {
  if (l.hlc !== b.hlc) return l.hlc < b.hlc;
  return l.origin !== b.origin && compareBytes(l.origin, b.origin) < 0;
}

export function isVisible(r: StoredRecord): boolean {
  return r.base !== null && r.base.kind === ADD;
}

/** Every register of r: its base (if any), then its leaves. */
export function registersOf(r: StoredRecord): (BaseReg | Leaf)[] {
  const out: (BaseReg | Leaf)[] = r.base ? [r.base] : [];
  for (const l of r.leaves) out.push(l);
  return out;
}

/* ------------------------------------------------------------ search */

/** Compares path a with the first n segments of b. */
function comparePrefix(a: Path, b: Path, n: number): number {
  const m = a.length < n ? a.length : n;
  for (let i = 0; i < m; i++) {
    const x = a[i]!;
    const y = b[i]!;
    if (x !== y) return compareIds(x, y);
  }
  return a.length - n;
}

/** First index whose path is >= the first n segments of p. */
function lowerBound(leaves: Leaf[], p: Path, n: number = p.length): number {
  let lo = 0;
  let hi = leaves.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (comparePrefix(leaves[mid]!.path, p, n) < 0) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** Index of the leaf at exactly the first n segments of p, or -1. */
function findPrefix(leaves: Leaf[], p: Path, n: number): number {
  const i = lowerBound(leaves, p, n);
  if (i < leaves.length && comparePrefix(leaves[i]!.path, p, n) === 0) return i;
  return -1;
}

/** Index of the leaf at exactly `path`, or -1. */
export function findLeaf(r: StoredRecord, path: Path): number {
  return findPrefix(r.leaves, path, path.length);
}

/** True if the field at `path` reads as a map: a map leaf there, or any
 *  leaf below it (crdtdb__record_is_map_at). */
export function isMapAt(r: StoredRecord, path: Path): boolean {
  const leaves = r.leaves;
  let i = lowerBound(leaves, path);
  if (i >= leaves.length) return false;
  const l = leaves[i]!;
  if (samePath(l.path, path)) {
    if (l.vbuf === null) return true;
    i++;
  }
  return i < leaves.length && isAncestor(path, leaves[i]!.path);
}

/* ------------------------------------------------------------- merge */

function forged(l: Leaf): CrdtdbError {
  return new CrdtdbError(
    "EFORGED",
    `two different values under one stamp for field ${JSON.stringify(l.path)}: forged or corrupt`,
  );
}

/**
 * Merges a base write (add or remove).  True if it won (older leaves are
 * dropped); false if it lost or was a duplicate.  Throws EFORGED if the
 * same stamp already holds the other kind (nothing changed then).
 */
export function mergeBase(r: StoredRecord, b: BaseReg, dead?: number[]): boolean {
  const cur = r.base;
  if (cur) {
    const c = compareStamp(b.hlc, b.origin, cur.hlc, cur.origin);
    if (c === 0 && b.kind !== cur.kind)
      throw new CrdtdbError("EFORGED", "one stamp holds both an add and a remove of the record: forged or corrupt");
    if (c <= 0) return false;
    if (dead && cur.seq) dead.push(cur.seq);
  }
  r.base = b;
  const leaves = r.leaves;
  let w = 0;
  for (let i = 0; i < leaves.length; i++) {
    const l = leaves[i]!;
    if (olderThanBase(l, b)) {
      if (dead && l.seq) dead.push(l.seq);
    } else leaves[w++] = l;
  }
  leaves.length = w;
  return true;
}

/**
 * One leaf write (crdtdb__record_put_leaf).  True if stored.  Throws
 * EFORGED (r unchanged) if the path already holds a different value under
 * the same stamp.
 */
function putLeaf(r: StoredRecord, l: Leaf, dead: number[] | undefined): boolean {
  if (r.base && olderThanBase(l, r.base)) return false; // older than the last add/remove
  const leaves = r.leaves;
  const path = l.path;
  const pos = lowerBound(leaves, path);
  const at = pos < leaves.length ? leaves[pos]! : undefined;
  const exists = at !== undefined && samePath(at.path, path);
  if (exists) {
    const c = cmpLeaf(l, at);
    if (c === 0 && !sameValue(l, at)) throw forged(l);
    if (c <= 0) return false;
  }
  // a newer write at an ancestor replaced the subtree: dead on arrival
  for (let d = 1; d < path.length; d++) {
    const a = findPrefix(leaves, path, d);
    if (a >= 0 && cmpLeaf(leaves[a]!, l) > 0) return false;
  }
  // older descendants die; newer ones stay (and make this read as a map)
  const start = pos + (exists ? 1 : 0);
  let i = start;
  let w = start;
  while (i < leaves.length && isAncestor(path, leaves[i]!.path)) {
    const d = leaves[i]!;
    if (cmpLeaf(d, l) < 0) {
      if (dead && d.seq) dead.push(d.seq);
    } else leaves[w++] = d;
    i++;
  }
  if (w < i) leaves.splice(w, i - w);
  if (exists) {
    if (dead && at.seq) dead.push(at.seq);
    leaves[pos] = l;
  } else if (pos === leaves.length) leaves.push(l);
  else leaves.splice(pos, 0, l);
  return true;
}

function byPath(a: Leaf, b: Leaf): number {
  return comparePaths(a.path, b.path);
}

/** Merges one leaf write; true if it was stored.  Throws EFORGED (r
 *  unchanged) on equivocation. */
export function mergeLeaf(r: StoredRecord, l: Leaf, dead?: number[]): boolean {
  return putLeaf(r, l, dead);
}

/**
 * Merges many leaf writes (a delta's fields for one record), in any order,
 * duplicates allowed; ends where single merges would
 * (crdtdb__record_put_many).  Returns the number stored.  Throws EFORGED
 * on equivocation, leaving r (and dead) as they were.  Few writes merge one
 * by one; many rebuild the leaves in path order, each landing at the end
 * and judged against its ancestors, which sort before it:
 * O((n + m) log m) for n stored leaves and m writes.
 */
export function mergeLeaves(r: StoredRecord, incoming: readonly Leaf[], dead?: number[]): number {
  const n = incoming.length;
  const deadMark = dead ? dead.length : 0;
  if (n <= 8) {
    const saved = r.leaves.slice();
    let won = 0;
    try {
      for (let i = 0; i < n; i++) if (putLeaf(r, incoming[i]!, dead)) won++;
    } catch (e) {
      r.leaves = saved;
      if (dead) dead.length = deadMark;
      throw e;
    }
    return won;
  }
  // a delta exported by a store comes in path order: sort only if needed
  let inOrder = true;
  for (let k = 1; k < n && inOrder; k++) if (comparePaths(incoming[k - 1]!.path, incoming[k]!.path) > 0) inOrder = false;
  const sorted = inOrder ? incoming : incoming.slice().sort(byPath);
  const old = r.leaves;
  const nold = old.length;
  const base = r.base;
  const fresh: Leaf[] = [];
  // The leaves in fresh whose paths are a prefix of (or equal to) the last
  // one placed: every ancestor in fresh of what comes next is among them,
  // since a subtree is contiguous in path order.
  const chain: Leaf[] = [];
  let won = 0;
  let i = 0;
  let j = 0;
  // One write placed at the end of fresh, as crdtdb__record_put_leaf
  // would; false if it lost or is dead.
  const place = (l: Leaf): boolean => {
    if (base && olderThanBase(l, base)) return false;
    const path = l.path;
    let at: Leaf | undefined;
    while (chain.length) {
      const top = chain[chain.length - 1]!;
      if (isAncestor(top.path, path)) break;
      if (samePath(top.path, path)) {
        at = top;
        break;
      }
      chain.pop();
    }
    if (at) {
      const c = cmpLeaf(l, at);
      if (c === 0 && !sameValue(l, at)) throw forged(l);
      if (c <= 0) return false;
    }
    const nanc = at ? chain.length - 1 : chain.length;
    for (let k = 0; k < nanc; k++) if (cmpLeaf(chain[k]!, l) > 0) return false;
    if (at) {
      if (dead && at.seq) dead.push(at.seq);
      fresh[fresh.length - 1] = l; // the equal path is the last placed
      chain[chain.length - 1] = l;
    } else {
      fresh.push(l);
      chain.push(l);
    }
    return true;
  };
  try {
    while (i < nold || j < n) {
      // on equal paths the stored leaf first: the new one replaces it
      if (j === n || (i < nold && comparePaths(old[i]!.path, sorted[j]!.path) <= 0)) {
        const l = old[i++]!;
        if (!place(l) && dead && l.seq) dead.push(l.seq);
      } else if (place(sorted[j++]!)) won++;
    }
  } catch (e) {
    if (dead) dead.length = deadMark;
    throw e;
  }
  r.leaves = fresh;
  return won;
}

/**
 * A record held nowhere yet, made of a delta's registers as they are (a
 * fresh sync is all such records): what mergeBase and mergeLeaves would
 * leave, when the leaves come in strictly ascending path order (none equal,
 * none below another) and none is older than the base.  null when they do
 * not (duplicates, nested writes, stale fields): merge them then.  The
 * registers are kept, not copied.
 */
export function freshRecord(base: BaseReg | null, leaves: Leaf[], ordered = false): StoredRecord | null {
  return (ordered ? newerThanBase(base, leaves) : isFresh(base, leaves)) ? { base, leaves } : null;
}

/** None of the leaves is older than the base (isFresh's stamp test, all
 *  of it for leaves a decoder found ordered: DecodedRecord.ordered). */
function newerThanBase(base: BaseReg | null, leaves: Leaf[]): boolean {
  if (base) for (let i = 0; i < leaves.length; i++) if (olderThanBase(leaves[i]!, base)) return false;
  return true;
}

/** True if (base, leaves) are, as they are, what merging them into an
 *  empty record leaves (freshRecord's test, without the record): none
 *  older than the base, paths strictly ascending, none below another. */
export function isFresh(base: BaseReg | null, leaves: Leaf[]): boolean {
  if (!newerThanBase(base, leaves)) return false;
  for (let i = 1; i < leaves.length; i++) {
    const prev = leaves[i - 1]!.path, p = leaves[i]!.path;
    if (comparePaths(prev, p) >= 0 || isAncestor(prev, p)) return false;
  }
  return true;
}

/** Drops every register numbered 1..upto (a refused write taken back,
 *  crdtdb__record_drop_upto): no tombstone; what came later stays. */
export function dropUpto(r: StoredRecord, upto: number, dead?: number[]): void {
  if (r.base && r.base.seq && r.base.seq <= upto) {
    if (dead) dead.push(r.base.seq);
    r.base = null;
  }
  const leaves = r.leaves;
  let w = 0;
  for (let i = 0; i < leaves.length; i++) {
    const l = leaves[i]!;
    if (l.seq && l.seq <= upto) {
      if (dead) dead.push(l.seq);
    } else leaves[w++] = l;
  }
  leaves.length = w;
}

/* ---------------------------------------------------------- rendering */

function setKey(o: DataObject, k: string, v: Value): void {
  if (k === "__proto__") Object.defineProperty(o, k, { value: v, enumerable: true, writable: true, configurable: true });
  else o[k] = v;
}

/** End of the group of leaves in [k, j) sharing segment `depth` with
 *  leaves[k] (all of them share the segments before it). */
function groupEnd(leaves: Leaf[], k: number, j: number, depth: number): number {
  const key = leaves[k]!.path[depth];
  let g = k + 1;
  while (g < j && leaves[g]!.path[depth] === key) g++;
  return g;
}

function renderMap(leaves: Leaf[], i: number, j: number, depth: number): DataObject {
  return renderInto({}, leaves, i, j, depth, false);
}

/** Sets the keys of leaves[i, j) at depth on o; skipId: not "id". */
function renderInto(o: DataObject, leaves: Leaf[], i: number, j: number, depth: number, skipId: boolean): DataObject {
  for (let k = i; k < j; ) {
    const l = leaves[k]!;
    const g = groupEnd(leaves, k, j, depth);
    const key = l.path[depth]!;
    if (skipId && key === "id") {
      k = g;
      continue;
    }
    const atChild = l.path.length === depth + 1;
    const below = atChild ? k + 1 : k;
    if (atChild && l.vbuf !== null && below === g) setKey(o, key, decodeLeafValue(l));
    else setKey(o, key, renderMap(leaves, below, g, depth + 1));
    k = g;
  }
  return o;
}

/**
 * The visible value (without its id): the tree of live leaves, a value
 * leaf with a live leaf below it read as a map (rule 4).  Keys come in
 * bytewise UTF-8 order at every level (except that JS objects list
 * integer-like keys first: renderEncoded has the exact C bytes).  {} when
 * the record is not visible (check isVisible).
 */
export function render(r: StoredRecord): DataObject {
  if (!isVisible(r)) return {};
  return renderMap(r.leaves, 0, r.leaves.length, 0);
}

function renderBytes(b: MsgpackBuilder, leaves: Leaf[], i: number, j: number, depth: number): void {
  let n = 0;
  for (let k = i; k < j; k = groupEnd(leaves, k, j, depth)) n++;
  b.mapHeader(n);
  for (let k = i; k < j; ) {
    const l = leaves[k]!;
    const g = groupEnd(leaves, k, j, depth);
    const atChild = l.path.length === depth + 1;
    const below = atChild ? k + 1 : k;
    b.str(l.path[depth]!);
    if (atChild && l.vbuf !== null && below === g) b.rawRef(l);
    else renderBytes(b, leaves, below, g, depth + 1);
    k = g;
  }
}

/** The visible value as the msgpack bytes C renders (crdtdb__record_render:
 *  keys sorted bytewise, leaf bytes as stored), or null if not visible. */
export function renderEncoded(r: StoredRecord): Uint8Array | null {
  if (!isVisible(r)) return null;
  const b = new MsgpackBuilder();
  renderBytes(b, r.leaves, 0, r.leaves.length, 0);
  return b.result();
}

/** withId(id, render(r)) in one object: the record as the DataStore
 *  shows it ({} fields when not visible). */
export function renderWithId(id: string, r: StoredRecord): DataObject {
  const o: DataObject = { id };
  return isVisible(r) ? renderInto(o, r.leaves, 0, r.leaves.length, 0, true) : o;
}

/** A record as the DataStore shows it (crdt/withid.c): {id, ...fields},
 *  the id first and winning over a field named id. */
export function withId(id: string, obj: DataObject): DataObject {
  const o: DataObject = { id };
  for (const k of Object.keys(obj)) if (k !== "id") setKey(o, k, obj[k]!);
  return o;
}

/* -------------------------------------------------------- local writes */

/**
 * The registers of add(value) at stamp (hlc, origin): an add base and
 * every leaf of value (flatten: limits enforced, errors as C's), seq 0,
 * src LOCAL, leaves sorted by path.  Merge with mergeBase, then mergeLeaves.
 * slabs: where the values go, shared by the records of one call (value.ts).
 */
export function addRegisters(
  value: DataObject,
  hlc: Hlc,
  origin: ReplicaId,
  limits: Limits = DEFAULT_LIMITS,
  slabs?: Slabs,
): { base: BaseReg; leaves: Leaf[] } {
  const base: BaseReg = { kind: ADD, hlc, origin, seq: 0, src: LOCAL };
  const leaves = flattenAs(value, limits, localLeaf, base, slabs);
  leaves.sort(byPath);
  return { base, leaves };
}

/** A leaf of add's flatten at the stamp of its base (one maker for every
 *  record: no closure a record). */
function localLeaf(path: Path, b: BaseReg): Leaf {
  return { path, hlc: b.hlc, origin: b.origin, vbuf: null, voff: 0, vlen: 0, seq: 0, src: LOCAL };
}

/**
 * The leaves of update(changes) on r at stamp (hlc, origin), as
 * mergeDeepRight(record, changes) (storage/write.c put_flat): every leaf
 * of changes, except that an empty map merged into a path that already
 * reads as a map changes nothing (left out).  Writing a scalar where a map
 * was replaces the map; a map where a scalar was replaces the scalar.
 * Seq 0, src LOCAL, sorted by path; merge with mergeLeaves.  The caller
 * checks the record is visible (ENOTFOUND with the interface's message).
 */
export function updateLeaves(
  r: StoredRecord,
  changes: DataObject,
  hlc: Hlc,
  origin: ReplicaId,
  limits: Limits = DEFAULT_LIMITS,
): Leaf[] {
  const flat = flatten(changes, limits);
  const leaves: Leaf[] = [];
  for (const f of flat) {
    if (f.vbuf === null && isMapAt(r, f.path)) continue;
    leaves.push({ path: f.path, hlc, origin, vbuf: f.vbuf, voff: f.voff, vlen: f.vlen, seq: 0, src: LOCAL });
  }
  leaves.sort(byPath);
  return leaves;
}

/**
 * The checks C makes on a record after a local write (storage/write.c
 * crdtdb__slot_store): ETOOBIG if it has more than maxFields leaves or its
 * rendering is over maxValueSize bytes.  Merges from peers are not checked
 * (two legal writes may combine past a limit).
 */
export function checkLocalLimits(r: StoredRecord, limits: Limits = DEFAULT_LIMITS): void {
  const maxFields = limits.maxFields ?? DEFAULT_LIMITS.maxFields;
  if (r.leaves.length > maxFields)
    throw new CrdtdbError("ETOOBIG", `record would have more than ${maxFields} fields`);
  if (!isVisible(r)) return;
  // an upper bound of the rendered size first (each key and map header at
  // most once per leaf, a str header <= 5 bytes, UTF-8 <= 3 per UTF-16
  // unit): most records are far under the limit, and rendering costs
  let bound = 5;
  for (const l of r.leaves) {
    bound += l.vbuf ? l.vlen : 1;
    for (const k of l.path) bound += 10 + 3 * k.length;
  }
  if (bound <= limits.maxValueSize) return;
  const bytes = renderEncoded(r);
  if (bytes && bytes.length > limits.maxValueSize)
    throw new CrdtdbError(
      "ETOOBIG",
      `record would be ${bytes.length} bytes, over the limit of ${limits.maxValueSize}`,
    );
}
