/**
 * The app builder's DataStore interface (getById, query, add, addAll,
 * update, remove, observable) over a crdtdb replica, with the interface's
 * own error messages and notifications, so code written for the app
 * builder's TinyBase store runs unchanged.  Records come back with their id
 * (docs/crdt.md, "A record shown with its id").
 */
import { type Backend, MemoryBackend } from "./backend.js";
import { noCollection, notFound } from "./errors.js";
import { Observable } from "./observable.js";
import { Presence } from "./presence.js";
import { compileQuery } from "./query.js";
import { Replica, type Change, type ReplicaOptions } from "./replica.js";
import { EarlyConnection, Sync, type SyncOptions, type SyncStatus } from "./sync.js";
import type { DataObject } from "./types.js";

export type CollectionName = string;
export type Id = string | number;
/** A record as read: a plain object with its id. */
export type DataStoreObject = DataObject;
/** What a write takes, typed as the interface types it (`object`), so app
 *  code passing an interface-typed or `object`-typed item compiles
 *  unchanged; at run time it must be a plain object (else EBADVALUE). */
export type DataStoreItem = object;
export type Operator = "=" | "==" | ">" | ">=" | "<" | "<=" | "!=";
export type CriteriaCondition = [fieldName: string, operator: Operator, value: unknown];
/** As the interface types it: an object of field values, or conditions. */
export type Criteria = object | CriteriaCondition[];

export const InvalidateAll = "InvalidateAll";
export const Add = "Add";
export const Update = "Update";
export const Remove = "Remove";
export const MultipleChanges = "MultipleChanges";
export type UpdateType = typeof InvalidateAll | typeof MultipleChanges | typeof Add | typeof Update | typeof Remove;
export interface UpdateNotification {
  collection: CollectionName;
  type: UpdateType;
  id?: Id;
  changes?: DataStoreObject;
}

/** The interface as the app builder declares it (src/shared/DataStore.ts). */
export interface DataStore {
  getById(collection: CollectionName, id: Id, nullIfNotFound?: boolean): Promise<DataStoreObject | null>;
  query(collection: CollectionName, criteria: Criteria): Promise<DataStoreObject[]>;
  add(collection: CollectionName, id: Id, item: DataStoreItem): Promise<void>;
  addAll(collection: CollectionName, items: { [id: string]: DataStoreItem }): Promise<void>;
  update(collection: CollectionName, id: Id, changes: object): Promise<void>;
  remove(collection: CollectionName, id: Id): Promise<void>;
  observable(collection: CollectionName): Observable<UpdateNotification>;
}

export interface OpenOptions extends Omit<ReplicaOptions, "backend" | "collections"> {
  /** The declared collections, as an array or the app builder's "A;B;C" text. */
  collections: readonly string[] | string;
  /** Where the copy is kept (default: memory only). */
  backend?: Backend;
  /** Sync with a crdtdb server (omit to work locally only). */
  sync?: SyncOptions;
}

/** The names in collection config text: the app builder's, a line per
 *  collection with its roles after a colon ("Players: user-private,
 *  signed-in"), or entries split by ";" or "," as `crdtdb serve
 *  --collections` takes them.  A comma after a colon parts roles, not
 *  collections.  Roles are the server's business (docs/auth.md). */
export function parseCollections(c: readonly string[] | string): string[] {
  if (typeof c !== "string") return c.map((s) => s.split(":")[0]!.trim()).filter((s) => s.length > 0);
  const names: string[] = [];
  for (const entry of c.split(/[;\n]/)) {
    const colon = entry.indexOf(":");
    for (const s of colon >= 0 ? [entry.slice(0, colon)] : entry.split(",")) {
      const name = s.trim();
      if (name.length) names.push(name);
    }
  }
  return names;
}

export class CrdtdbDataStore implements DataStore {
  /** The replica underneath: its id, clock, export/apply for embedders. */
  readonly replica: Replica;
  /** The connection, when opened with `sync`. */
  readonly sync: Sync | null;
  /** Presence and ephemeral messages (presence.ts).  Without `sync` it
   *  keeps the state set and send() throws EBUSY "not connected". */
  readonly presence: Presence;
  private readonly observables = new Map<string, Observable<UpdateNotification>>();
  private readonly unlisten: () => void;

  private constructor(replica: Replica, sync: SyncOptions | undefined) {
    this.replica = replica;
    this.unlisten = replica.onChange((changes, invalidate) => this.notify(changes, invalidate));
    this.sync = sync ? new Sync(replica, sync) : null;
    this.presence = this.sync?.presence ?? new Presence();
  }

  /** Opens the store: loads its copy and, with `sync`, starts syncing.
   *  Close it with close(). */
  static async open(o: OpenOptions): Promise<CrdtdbDataStore> {
    // the connection's handshake goes on while the copy loads
    const early = o.sync ? EarlyConnection.open(o.dbId, o.sync) : null;
    let replica: Replica;
    try {
      replica = await Replica.open({ ...o, collections: parseCollections(o.collections), backend: o.backend ?? new MemoryBackend() });
    } catch (e) {
      void early?.then((c) => c?.close());
      throw e;
    }
    const ds = new CrdtdbDataStore(replica, o.sync);
    ds.sync?.start(early);
    return ds;
  }

  get syncStatus(): SyncStatus | null { return this.sync?.status ?? null; }
  /** True once a server granted only server-to-client: writes throw "Read only access". */
  get isReadOnly(): boolean { return this.replica.readonly; }

  /** Stops syncing and closes the copy; then every observable gets
   *  InvalidateAll, so what a view cached from the store goes with it.
   *  After close, writes reject with EBUSY; reads answer from the last
   *  state; open the store again to go on. */
  async close(): Promise<void> {
    this.sync?.stop();
    this.unlisten();
    await this.replica.close();
    for (const [collection, o] of this.observables) o.send({ collection, type: InvalidateAll });
  }

  async getById(collection: CollectionName, id: Id, nullIfNotFound = false): Promise<DataStoreObject | null> {
    const rec = this.replica.get(collection, String(id));
    if (rec === null && !nullIfNotFound) throw notFound(collection, String(id));
    return rec;
  }

  async query(collection: CollectionName, criteria: Criteria): Promise<DataStoreObject[]> {
    const match = compileQuery(criteria);
    return this.replica.list(collection, match);
  }

  async add(collection: CollectionName, id: Id, item: DataStoreItem): Promise<void> {
    await this.replica.add(collection, [[String(id), item as DataObject]]);
  }

  async addAll(collection: CollectionName, items: { [id: string]: DataStoreItem }): Promise<void> {
    const list = Object.entries(items) as [string, DataObject][];
    if (list.length) await this.replica.add(collection, list);
    else if (!this.replica.collections.has(collection)) throw noCollection(collection);
  }

  async update(collection: CollectionName, id: Id, changes: object): Promise<void> {
    await this.replica.update(collection, String(id), changes as DataObject);
  }

  async remove(collection: CollectionName, id: Id): Promise<void> {
    await this.replica.remove(collection, String(id));
  }

  observable(collection: CollectionName): Observable<UpdateNotification> {
    if (!this.replica.collections.has(collection)) throw noCollection(collection);
    let o = this.observables.get(collection);
    if (!o) {
      o = new Observable<UpdateNotification>();
      this.observables.set(collection, o);
    }
    return o;
  }

  /** One commit's changes: one record changed -> Add / Update / Remove with
   *  the record; several -> MultipleChanges for each collection touched. */
  private notify(changes: Change[], invalidate: boolean): void {
    if (invalidate) {
      for (const [collection, o] of this.observables) o.send({ collection, type: InvalidateAll });
      return;
    }
    if (changes.length === 1) {
      const c = changes[0]!;
      const o = this.observables.get(c.coll);
      if (!o) return;
      const now = c.read();
      if (now === null) o.send({ collection: c.coll, type: Remove, id: c.id });
      else o.send({ collection: c.coll, type: c.was ? Update : Add, id: c.id, changes: now });
      return;
    }
    // the collections touched, in order (a fresh sync's 10,000 changes are mostly one)
    const first = changes[0]!.coll;
    let more: Set<string> | null = null;
    for (let i = 1; i < changes.length; i++) {
      const coll = changes[i]!.coll;
      if (coll !== first) (more ??= new Set()).add(coll);
    }
    this.observables.get(first)?.send({ collection: first, type: MultipleChanges });
    if (more) for (const coll of more) this.observables.get(coll)?.send({ collection: coll, type: MultipleChanges });
  }
}
