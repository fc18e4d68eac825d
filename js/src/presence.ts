/**
 * Presence and ephemeral messages (docs/protocol.md, "Presence and
 * messages"): who else is connected to the database and their live state
 * (a cursor, "is typing"), and one-off signals, never stored.  The JS side
 * of crdtdb_client_presence_set / crdtdb_client_message_send.
 *
 * The store keeps our own state and sends it on every session, after the
 * server's hello; others' entries arrive as join / update / leave events
 * and are kept only while connected: when the connection drops, each one
 * known gets a leave, and the next session's snapshot joins them again.
 * Messages go only while connected.  Listeners are called synchronously,
 * in order; one that throws does not stop the others.
 *
 * Ownership: entries are shared between get() and the events, never
 * copied: treat them as read-only.  An update replaces an entry, never
 * changes it, so one kept stays as it was.
 */
import { CrdtdbError } from "./errors.js";
import { presencePayloadError, PRESENCE_DEPTH, PRESENCE_MAX } from "./frames.js";
import type { ClientSession, SessionEvent } from "./session.js";
import type { DataObject, Value } from "./types.js";
import { decodeValue, encodeValue } from "./value.js";

/** One other connection's presence. */
export interface PresenceEntry {
  /** The connection's key, 32 hex digits (the server stamps it). */
  readonly key: string;
  /** The user the server authenticated ("" on a server without tokens). */
  readonly user: string;
  /** The connection's replica id, 64 hex digits (claimed, not proven). */
  readonly replica: string;
  readonly state: DataObject;
}

/** Who sent a message: a connection, as in PresenceEntry. */
export interface PresenceSender {
  readonly key: string;
  readonly user: string;
  readonly replica: string;
}

export type PresenceEvent =
  /** join: a key not seen in this session; update: a new state of a known
   *  one; leave: it cleared its state, its connection ended, or ours did. */
  | { type: "join" | "update" | "leave"; entry: PresenceEntry }
  /** An ephemeral message; `to` is the user it was sent to, null: everyone. */
  | { type: "message"; from: PresenceSender; to: string | null; body: Value };

export type PresenceListener = (ev: PresenceEvent) => void;

export interface SendOptions {
  /** A user id: every connection of that user gets it (default: everyone). */
  to?: string;
}

/** The msgpack of a state or body, checked against the protocol's limits
 *  with the error the server's NOTICE would give, worded for the caller. */
function encodePayload(v: Value, map: boolean): Uint8Array {
  const what = map ? "presence state" : "message body";
  let bytes: Uint8Array;
  try {
    bytes = encodeValue(v, PRESENCE_DEPTH);
  } catch (e) {
    if (!(e instanceof CrdtdbError)) throw e;
    if (e.code === "ETOODEEP") throw new CrdtdbError("ETOODEEP", `the ${what} is nested deeper than ${PRESENCE_DEPTH} levels (the protocol's limit)`);
    throw new CrdtdbError(e.code, `the ${what}: ${e.message}`);
  }
  if (bytes.length > PRESENCE_MAX)
    throw new CrdtdbError("ETOOBIG", `the ${what} is ${bytes.length} bytes encoded, over the protocol's limit of ${PRESENCE_MAX}`);
  const err = presencePayloadError(bytes, map);
  if (err) throw err;
  return bytes;
}

function isPlainObject(v: unknown): v is DataObject {
  if (typeof v !== "object" || v === null || Array.isArray(v)) return false;
  const p = Object.getPrototypeOf(v);
  return p === Object.prototype || p === null;
}

export class Presence {
  private mine: Uint8Array | null = null;
  private readonly entries = new Map<string, PresenceEntry>();
  private readonly listeners = new Set<PresenceListener>();
  private session: ClientSession | null = null;

  /**
   * Sets this store's presence (one map, at most 1024 bytes as msgpack,
   * nested at most 16 deep), or clears it (null: the others see a leave).
   * Kept: sent now if connected and again on every reconnect.  Throws
   * CrdtdbError EBADVALUE (not a plain object, or a value msgpack cannot
   * hold), ETOOBIG, ETOODEEP; the previous state stays then.
   */
  set(state: DataObject | null): void {
    let bytes: Uint8Array | null = null;
    if (state !== null) {
      if (!isPlainObject(state)) throw new CrdtdbError("EBADVALUE", "a presence state is a plain object (one msgpack map)");
      bytes = encodePayload(state, true);
    }
    const s = this.session;
    // what the server got is what we keep, if the session takes it
    if (s && !s.closed) s.presenceSet(bytes);
    this.mine = bytes;
  }

  /** This store's own state as last set (a copy, as the others see it), or null. */
  get state(): DataObject | null {
    return this.mine && (decodeValue(this.mine) as DataObject);
  }

  /** The others' current entries (never our own), in the order they joined. */
  get(): PresenceEntry[] {
    return [...this.entries.values()];
  }

  /** True while a session is open: send() can send. */
  get connected(): boolean {
    return this.session !== null && !this.session.closed;
  }

  /**
   * Sends an ephemeral message (one value, at most 1024 bytes as msgpack,
   * nested at most 16 deep) to every other connection of the database, or
   * to every connection of user `options.to`.  Never to ourselves; not
   * kept, not acknowledged.  Throws CrdtdbError EBUSY "not connected" when
   * no session is open, EINVAL (a bad `to`), EBADVALUE, ETOOBIG, ETOODEEP.
   */
  send(body: Value, options: SendOptions = {}): void {
    const to = options.to ?? null;
    const bytes = encodePayload(body, false);
    const s = this.session;
    if (!s || s.closed) throw new CrdtdbError("EBUSY", "not connected");
    s.messageSend(to, bytes);
  }

  /** Calls listener with every event from now on; returns the function
   *  that stops it. */
  subscribe(listener: PresenceListener): () => void {
    this.listeners.add(listener);
    return () => { this.listeners.delete(listener); };
  }

  /** @internal A session is open (its "ready" event): our state goes to it. */
  attach(s: ClientSession): void {
    if (this.session && this.session !== s) this.detach(this.session);
    this.session = s;
    if (this.mine) s.presenceSet(this.mine);
  }

  /** @internal The session ended: everyone we knew leaves. */
  detach(s: ClientSession): void {
    if (this.session !== s) return;
    this.session = null;
    const gone = [...this.entries.values()];
    this.entries.clear();
    for (const entry of gone) this.emit({ type: "leave", entry });
  }

  /** @internal A session event: presence and messages are ours. */
  handle(s: ClientSession, e: SessionEvent): void {
    if (this.session !== s) return;
    if (e.type === "presence") {
      const known = this.entries.get(e.key);
      if (e.state === null) {
        if (!known) return; // a leave of someone we never saw
        this.entries.delete(e.key);
        this.emit({ type: "leave", entry: known });
        return;
      }
      const entry: PresenceEntry = { key: e.key, user: e.user, replica: e.replica, state: e.state };
      this.entries.set(e.key, entry);
      this.emit({ type: known ? "update" : "join", entry });
    } else if (e.type === "message") {
      this.emit({ type: "message", from: { key: e.key, user: e.user, replica: e.replica }, to: e.to, body: e.body });
    }
  }

  private emit(ev: PresenceEvent): void {
    for (const l of [...this.listeners]) {
      try { l(ev); } catch (err) { queueMicrotask(() => { throw err; }); }
    }
  }
}
