/**
 * crdtdb for browsers and Node: the app builder's DataStore over a replica
 * that keeps its copy offline and syncs field by field with `crdtdb serve`.
 */
export {
  CrdtdbDataStore, Add, Update, Remove, MultipleChanges, InvalidateAll,
  type DataStore, type OpenOptions, type UpdateNotification, type UpdateType, type Criteria,
  type CriteriaCondition, type Operator, type Id, type CollectionName, type DataStoreObject, type DataStoreItem,
} from "./datastore.js";
export { Observable, type Observer, type Subscription } from "./observable.js";
export {
  Presence, type PresenceEntry, type PresenceEvent, type PresenceListener, type PresenceSender, type SendOptions,
} from "./presence.js";
export { CrdtdbError, type ErrorCode } from "./errors.js";
export {
  MemoryBackend, type Backend, type Batch, type Loaded, type Meta, type PeerState, type Replay, type StoredDeltas,
} from "./backend.js";
export { Replica, type ReplicaOptions, type Change, type ApplyInfo } from "./replica.js";
export { ClientSession, TWO_WAY, SERVER_TO_CLIENT, type SessionEvent, type SessionOptions, type SyncMode } from "./session.js";
export { Sync, type SyncOptions, type SyncStatus, type SyncState, type SocketFactory, type SocketLike } from "./sync.js";
export type { Value, DataObject, Hlc, ReplicaId } from "./types.js";
export { IndexedDBBackend, type IndexedDBOptions } from "./idb.js";
