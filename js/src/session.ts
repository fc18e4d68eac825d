/**
 * The client side of the sync protocol (docs/protocol.md, "Sessions") as a
 * sans-IO engine: frames in through receive(), frames out through the
 * `send` callback, storage through the Replica.  The WebSocket binding
 * (sync.ts) only moves bytes; tests drive a session with any byte pipe.
 *
 * Messages are handled one at a time, in order: a delta is verified,
 * committed durably and only then acknowledged.  Deltas received together
 * commit as one (deltaRun), each verified first.
 */
import { CrdtdbError, codeOf, type ErrorCode } from "./errors.js";
import { encodeFrame, FrameReader, presencePayloadError, PRESENCE_MAX, type Message } from "./frames.js";
import { decodeValue, isWellFormed } from "./value.js";
import { ID_MAX } from "./delta.js";
import { toHex } from "./keys.js";
import type { ApplyInfo, Held, Replica } from "./replica.js";
import type { DataObject, ReplicaId, Value } from "./types.js";

export const TWO_WAY = 1;
export const SERVER_TO_CLIENT = 2;
export type SyncMode = typeof TWO_WAY | typeof SERVER_TO_CLIENT;

export type SessionEvent =
  | { type: "ready"; mode: SyncMode }
  /** A delta, or a run of deltas received together, committed: info
   *  covers the run (the first's from, the last's to). */
  | { type: "applied"; info: ApplyInfo }
  | { type: "caughtUp" }
  /** [16, stamp]: the server collected removes we had not received and
   *  resyncs us whole; once caught up, records it no longer holds are
   *  forgotten (docs/js.md, "Collection"). */
  | { type: "resync"; stamp: bigint }
  /** The server holds our log up to seq. */
  | { type: "acked"; seq: number }
  /** fatal: the session ended (an ERROR from the peer, or ours to it). */
  | { type: "error"; code: ErrorCode; errno: number; message: string; fatal: boolean }
  | { type: "closed" }
  /** [13, ...]: one connection's presence (docs/protocol.md, "Presence and
   *  messages"); key is 32 hex digits, replica 64; state null: it left. */
  | { type: "presence"; key: string; user: string; replica: string; version: number; state: DataObject | null }
  /** [15, ...]: an ephemeral message of connection `key`, its n-th. */
  | { type: "message"; key: string; user: string; replica: string; n: number; to: string | null; body: Value };

export interface SessionOptions {
  mode: SyncMode;
  /** Called with each frame to send, in order.  The session does not keep it. */
  send: (frame: Uint8Array) => void;
  onEvent: (e: SessionEvent) => void;
  /** Largest frame accepted (default 8 MiB, above max_delta_size). */
  maxMessage?: number;
  /** Largest delta sent (default the replica's maxDeltaSize). */
  deltaSize?: number;
  /** A shared replica: keeps offline writes under a read-only grant. */
  noPurge?: boolean;
  /** How long an ack may wait for the next one (default 50 ms; 0 sends each
   *  at once).  Acks only move the server's record of what we hold, so a
   *  stream of deltas is answered by one ack per interval, not one write
   *  each; before a close the ack goes at once. */
  ackDelayMs?: number;
  /** Bytes of one presence state or message body (default 1024, the
   *  protocol's max_presence): a larger one received gets a NOTICE ETOOBIG
   *  and is dropped; presenceSet and messageSend refuse one (ETOOBIG). */
  maxPresence?: number;
}

const SKIP_SPAN = 256;
/** A run of deltas applied as one commit: at most this many bytes of
 *  deltas (the first is taken whatever its size) and deltas. */
const RUN_BYTES = 4 << 20;
const RUN_MAX = 64;
/** Over a backend whose commits are costly (Backend.costlyCommit), until a
 *  session's first catch-up it gathers a whole run (RUN_BYTES, RUN_MAX),
 *  waiting GATHER_WAIT_MS at a time for the next delta (GATHER_WAITS times
 *  in a row without one at most, GATHER_BUDGET waits in the session): a
 *  fresh sync's deltas come back to back, and each run costs a backend
 *  commit (~30 ms of Chromium's IndexedDB whatever its size) and a chain
 *  point, while a page that waits lets Chromium's WebSocket hand it more
 *  (it delivers a page new messages only as the page takes them).  A
 *  fresh sync of 100k fields (1.5 MB) commits 1-2 runs, not 4-5
 *  (js/bench).  After the catch-up a delta is applied as soon as it
 *  comes. */
const GATHER_WAIT_MS = 2;
const GATHER_WAITS = 3;
const GATHER_BUDGET = 50;
const DONE: Promise<void> = Promise.resolve();
/** Records a resync may note (a hostile server cannot grow the set past
 *  this; session.c bounds the names' bytes the same way). */
const RESYNC_KEYS_MAX = 1 << 20;

export class ClientSession {
  private readonly r: Replica;
  private readonly o: Required<Omit<SessionOptions, "noPurge">> & { noPurge: boolean };
  private readonly reader: FrameReader;
  private state: "handshake" | "open" | "closed" = "handshake";
  private server: ReplicaId | null = null;
  private serverHex = "";
  private mode: SyncMode;
  private haveSince = false;
  private received = 0;
  private hint = 0;
  private sentUpto = 0;
  private skipTo = 0;
  private allUpto = 0;
  private peerAcked = 0;
  private toldUptodate = 0;
  private peerUptodate = 0;
  private caught = false;
  /** Caught up once in this session: runs are no longer gathered. */
  private caughtOnce = false;
  /** Gathering waits left in this session (GATHER_BUDGET). */
  private gatherLeft = GATHER_BUDGET;
  private queue: Promise<void> = Promise.resolve();
  private pumping = false;
  private pumpAgain = false;
  private retryTimer: ReturnType<typeof setTimeout> | null = null;
  private ackTimer: ReturnType<typeof setTimeout> | null = null;
  private ackDue = 0;
  private unlisten: () => void;
  /** A delta of ours went out in this session (a client proves its id
   *  with one each session, so the server keeps its acks). */
  private signedOne = false;
  /** The end of our log that the server's own deltas numbered:
   *  (tailLo, tailHi]; an ack's `mine` leaves it out. */
  private tailLo = 0;
  private tailHi = 0;
  /** The server resyncs us whole (RESYNC): the records its snapshot
   *  carried, 'b' with an add or remove, 'l' leaves only, until caught up. */
  private resync: { stamp: bigint; acked: number; held: Map<string, Held> } | null = null;
  /** The stored mark says a resync from the server was cut. */
  private resyncFlagged = false;

  constructor(replica: Replica, opts: SessionOptions) {
    this.r = replica;
    this.o = {
      maxMessage: 8 << 20,
      deltaSize: replica.limits.maxDeltaSize,
      noPurge: false,
      ackDelayMs: 50,
      maxPresence: PRESENCE_MAX,
      ...opts,
    };
    this.mode = opts.mode;
    this.reader = new FrameReader(this.o.maxMessage);
    // local commits go out at once (immediate push)
    // (a peer's delta pumps once handled, when its range is known to be the peer's)
    this.unlisten = replica.onChange((_c, _i, local) => { if (local) void this.pump(); });
  }

  get closed(): boolean { return this.state === "closed"; }
  get grantedMode(): SyncMode { return this.mode; }
  get peer(): ReplicaId | null { return this.server; }

  /** Caught up with the server and nothing of ours waits to be acked. */
  get synced(): boolean {
    return this.state === "open" && this.caught &&
      (this.mode !== TWO_WAY || (Math.max(this.sentUpto, this.skipTo) >= this.r.seq && this.peerAcked >= this.sentUpto));
  }

  /** Sends the hello; call once the byte stream is open. */
  start(): void {
    this.out({ t: "hello", version: 1, dbId: this.r.dbId, replicaId: this.r.id, mode: this.o.mode });
  }

  /** Feeds bytes received.  Handling is asynchronous and in order. */
  receive(chunk: Uint8Array): void {
    if (this.state === "closed") return;
    try {
      this.reader.push(chunk);
    } catch (e) {
      this.fail(e);
      return;
    }
    this.queue = this.queue.then(() => this.drain());
  }

  /** Resolves once everything received so far is handled. */
  idle(): Promise<void> {
    return this.queue;
  }

  /**
   * Queues [12, state]: this connection's presence, `state` the msgpack of
   * one map (copied), or null to leave.  Only once the session is open
   * (after the "ready" event); not acknowledged.  Throws CrdtdbError EBUSY
   * (closed), EINVAL (before the server's hello), ETOOBIG, ETOODEEP,
   * EBADVALUE (see presencePayloadError).
   */
  presenceSet(state: Uint8Array | null): void {
    this.checkOpen();
    if (state) {
      const err = presencePayloadError(state, true, this.o.maxPresence);
      if (err) throw err;
    }
    this.out({ t: "presenceSet", state: state && state.slice() });
  }

  /**
   * Queues [14, to, body]: an ephemeral message, `body` the msgpack of one
   * value (copied), to every connection of user `to`, or of the database
   * (null).  Errors as presenceSet's, and EINVAL for a `to` that is not a
   * user id (at most 255 bytes of UTF-8).
   */
  messageSend(to: string | null, body: Uint8Array): void {
    this.checkOpen();
    if (to !== null && (typeof to !== "string" || !to || !isWellFormed(to) || new TextEncoder().encode(to).length > ID_MAX))
      throw new CrdtdbError("EINVAL", `a message's recipient is a user id of 1 to ${ID_MAX} bytes`);
    const err = presencePayloadError(body, false, this.o.maxPresence);
    if (err) throw err;
    this.out({ t: "messageSend", to, body: body.slice() });
  }

  private checkOpen(): void {
    if (this.state === "closed") throw new CrdtdbError("EBUSY", "the session is closed");
    if (this.state !== "open") throw new CrdtdbError("EINVAL", "the session is not open yet (no hello from the server)");
  }

  /** Ends the session politely (a close message) and stops listening. */
  close(): void {
    if (this.state === "closed") return;
    try { this.sendAck(); this.out({ t: "close" }); this.flush(); } catch { /* the pipe is gone */ }
    this.end();
  }

  /** Ends without a message (the connection dropped). */
  end(): void {
    if (this.state === "closed") return;
    this.state = "closed";
    this.unlisten();
    if (this.retryTimer) clearTimeout(this.retryTimer);
    if (this.ackTimer) clearTimeout(this.ackTimer);
    this.o.onEvent({ type: "closed" });
  }

  /** Frames wait for the end of the current turn and go together: one
   *  socket write for a delta and its ack, or a burst of local writes. */
  private outq: Uint8Array[] = [];
  private outBytes = 0;
  private flushing = false;

  private out(m: Message): void {
    const f = encodeFrame(m);
    this.outq.push(f);
    this.outBytes += f.length;
    if (!this.flushing) {
      this.flushing = true;
      queueMicrotask(() => this.flush());
    }
  }

  private flush(): void {
    this.flushing = false;
    const q = this.outq;
    if (!q.length) return;
    this.outq = [];
    const n = this.outBytes;
    this.outBytes = 0;
    if (q.length === 1) return this.o.send(q[0]!);
    const b = new Uint8Array(n);
    let o = 0;
    for (const f of q) { b.set(f, o); o += f.length; }
    this.o.send(b);
  }

  private fail(e: unknown): void {
    const err = e instanceof CrdtdbError ? e : new CrdtdbError("EIO", String((e as Error)?.message ?? e));
    if (this.state !== "closed") {
      try { this.out({ t: "error", code: err.errno, message: err.message }); this.flush(); } catch { /* gone */ }
      this.o.onEvent({ type: "error", code: err.code, errno: err.errno, message: err.message, fatal: true });
    }
    this.end();
  }

  private async drain(): Promise<void> {
    for (;;) {
      if (this.state === "closed") return;
      let m: Message | null;
      try {
        m = this.reader.next();
      } catch (e) {
        this.fail(e);
        return;
      }
      if (!m) break;
      try {
        if (m.t === "delta" && this.state === "open") m = await this.deltaRun(m.delta);
        if (m && !this.closed) await this.handle(m); // (the run may have ended it)
      } catch (e) {
        this.fail(e);
        return;
      }
    }
    await this.pump();
  }

  private async handle(m: Message): Promise<void> {
    switch (m.t) {
      case "hello": return this.onHello(m);
      case "error": {
        this.o.onEvent({ type: "error", code: codeOf(m.code), errno: m.code, message: "peer: " + m.message, fatal: true });
        this.end();
        return;
      }
      case "notice":
        this.o.onEvent({ type: "error", code: codeOf(m.code), errno: m.code, message: "peer: " + m.message, fatal: false });
        return;
      case "close":
        this.end();
        return;
    }
    if (this.state !== "open") throw new CrdtdbError("EBADVALUE", `message '${m.t}' before the handshake`);
    switch (m.t) {
      case "delta": return this.onDeltas([m.delta]); // (drain reads runs: deltaRun)
      case "resync": return this.onResync(m.stamp);
      case "purge":
        // a shared replica serves others what it holds: no one server may
        // make it forget a record (as transport/session.c)
        if (this.o.noPurge) throw new CrdtdbError("EROFS", "purges are refused here (a shared replica)");
        await this.r.purge(m.coll, m.id).catch((e: unknown) => {
          if (e instanceof CrdtdbError && (e.code === "ENOCOLL" || e.code === "EBADID"))
            throw new CrdtdbError("EBADVALUE", "purge of an unknown record");
          throw e;
        });
        return;
      case "replace":
        if (this.o.noPurge) {
          this.o.onEvent({ type: "error", code: "EROFS", errno: -13, message: `the peer refused record '${m.id}' in '${m.coll}'; kept here as it is`, fatal: false });
          return;
        }
        try {
          await this.r.replace(m.coll, m.id, m.upto, m.delta, this.server!);
        } catch (e) {
          if (e instanceof CrdtdbError && e.code === "ECLOCK") return this.refused(e);
          throw e;
        }
        return;
      case "skip": {
        const have = Math.max(this.hint, this.received);
        if (m.from <= have && m.to > have) {
          this.hint = m.to;
          this.ack(this.hint);
        }
        return this.checkCaughtUp();
      }
      case "since": {
        const last = this.r.seq;
        // a client sends only what it committed, so a server holding more of
        // its log than it wrote holds another copy's writes under its id (a
        // copied or restored replica): its own next writes, numbered up to
        // there, would never be sent
        if (m.seq > last)
          throw new CrdtdbError("EFORK", `the server holds ${m.seq} of this replica's changes, more than the ${last} it wrote (a copied or restored replica)`);
        if (m.maxBytes !== undefined && m.maxBytes < this.o.deltaSize) this.o.deltaSize = m.maxBytes;
        if (m.seq > this.peerAcked && m.seq <= last) this.peerAcked = m.seq;
        this.sentUpto = m.seq;
        this.skipTo = 0;
        if (m.seq === 0) this.allUpto = last;
        this.haveSince = true;
        return;
      }
      case "ack": {
        if (m.seq <= this.peerAcked || m.seq > this.r.seq) return; // beyond our log: believed by no one
        this.peerAcked = m.seq;
        await this.r.ackFrom(this.serverHex, m.seq);
        this.o.onEvent({ type: "acked", seq: m.seq });
        return;
      }
      case "uptodate":
        this.peerUptodate = m.seq + 1;
        this.caught = false;
        return this.checkCaughtUp();
      case "presence": {
        if (m.state && !this.payloadOk(m.state, true)) return;
        const state = m.state && (decodeValue(m.state) as DataObject);
        this.o.onEvent({ type: "presence", key: toHex(m.key), user: m.user, replica: toHex(m.replica), version: m.version, state });
        return;
      }
      case "message":
        if (!this.payloadOk(m.body, false)) return;
        this.o.onEvent({ type: "message", key: toHex(m.key), user: m.user, replica: toHex(m.replica), n: m.n, to: m.to, body: decodeValue(m.body) });
        return;
      // the client's own messages: a server never sends them
      case "presenceSet":
        throw new CrdtdbError("EBADVALUE", "a presence set (12) sent to a client");
      case "messageSend":
        throw new CrdtdbError("EBADVALUE", "a message send (14) sent to a client");
      default:
        throw new CrdtdbError("EBADVALUE", `unexpected message '${(m as Message).t}'`);
    }
  }

  /** A well-formed frame whose payload is refused gets a NOTICE and is
   *  dropped; the session goes on (docs/protocol.md, "Validity"). */
  private payloadOk(p: Uint8Array, map: boolean): boolean {
    const e = presencePayloadError(p, map, this.o.maxPresence);
    if (!e) return true;
    this.o.onEvent({ type: "error", code: e.code, errno: e.errno, message: e.message, fatal: false });
    this.out({ t: "notice", code: e.errno, message: e.message });
    return false;
  }

  private async onHello(m: Extract<Message, { t: "hello" }>): Promise<void> {
    if (this.state !== "handshake") throw new CrdtdbError("EBADVALUE", "a second hello");
    if (m.version !== 1) throw new CrdtdbError("EVERSION", `protocol version ${m.version}, this end speaks 1`);
    if (m.dbId !== this.r.dbId) throw new CrdtdbError("EINVAL", `the peer syncs database '${m.dbId}', this end '${this.r.dbId}'`);
    if (toHex(m.replicaId) === this.r.idHex) throw new CrdtdbError("EINVAL", "the peer has this replica's own id");
    if (m.mode !== TWO_WAY && m.mode !== SERVER_TO_CLIENT) throw new CrdtdbError("EBADVALUE", `unknown sync mode ${m.mode}`);
    this.server = m.replicaId;
    this.serverHex = toHex(m.replicaId);
    this.mode = m.mode as SyncMode;
    const ro = this.mode === SERVER_TO_CLIENT;
    // imposed by the server (two-way was asked): the copy is read-only
    if (this.o.mode === TWO_WAY && !this.o.noPurge) await this.r.markReadonly(ro);
    this.state = "open";
    this.received = this.r.peer(this.serverHex).received;
    // a resync from this server was cut: all of it again
    if (this.r.peer(this.serverHex).resync) { this.received = 0; this.resyncFlagged = true; }
    let discarded = 0;
    if (ro && !this.o.noPurge) discarded = await this.r.discardUnsent(this.r.peer(this.serverHex).acked);
    this.out({ t: "since", seq: discarded || this.resyncFlagged ? 0 : this.received });
    this.o.onEvent({ type: "ready", mode: this.mode });
    if (discarded)
      this.o.onEvent({
        type: "error", code: "EROFS", errno: -13, fatal: false,
        message: `${discarded} record${discarded === 1 ? "" : "s"} changed here while offline cannot be sent (read-only access): reset to the server's copy`,
      });
  }

  /**
   * A delta, and the deltas received right behind it (up to RUN_BYTES;
   * before the first catch-up over a costly backend, waited for as
   * GATHER_* say): applied as one commit (Replica.applyAll), so a fresh
   * sync or catch-up waits for one backend transaction per run, not one
   * per delta.  Returns the message read after the run, not yet handled.
   */
  private async deltaRun(first: Uint8Array): Promise<Message | null> {
    const run = [first];
    let bytes = first.length, next: Message | null = null, bad: unknown = null, waits = 0;
    while (bytes < RUN_BYTES && run.length < RUN_MAX) {
      try {
        next = this.reader.next();
      } catch (e) { // a bad frame behind the run: the run first, as alone
        bad = e;
        break;
      }
      if (!next && !this.caughtOnce && this.r.costlyCommit && waits < GATHER_WAITS && this.gatherLeft > 0 && this.state === "open") {
        waits++;
        this.gatherLeft--;
        await new Promise((r) => setTimeout(r, GATHER_WAIT_MS));
        continue;
      }
      if (!next || next.t !== "delta") break;
      waits = 0;
      run.push(next.delta);
      bytes += next.delta.length;
      next = null;
    }
    await this.onDeltas(run);
    if (bad) throw bad;
    return next;
  }

  private async onDeltas(run: Uint8Array[]): Promise<void> {
    const rs = this.resync;
    while (run.length && this.state === "open") {
      if (rs && rs.held.size > RESYNC_KEYS_MAX)
        throw new CrdtdbError("ETOOBIG", `a resync of over ${RESYNC_KEYS_MAX} records`);
      const before = this.received;
      const r = await this.r.applyAll(run, this.server!, rs?.held);
      if (r.info) await this.applied(r.info, before);
      if (!r.error) return;
      if (!(r.error instanceof CrdtdbError && r.error.code === "ECLOCK")) throw r.error;
      this.refused(r.error);
      run = run.slice(r.applied + 1);
    }
  }

  /** After a delta or a run of them committed: what it numbered, our
   *  watermark and ack, caught up. */
  private async applied(info: ApplyInfo, before: number): Promise<void> {
    // what this apply numbered came from the server: nothing to send back
    const done = Math.max(this.skipTo, this.sentUpto);
    if (info.localTo > info.localFrom && done >= info.localFrom && this.toldUptodate === info.localFrom + 1) {
      this.skipTo = info.localTo;
      this.toldUptodate = info.localTo + 1;
    }
    this.o.onEvent({ type: "applied", info });
    if (info.received > this.received) this.received = info.received;
    if (info.localTo > info.localFrom) { // the server's, at our log's end
      if (info.localFrom !== this.tailHi) this.tailLo = info.localFrom;
      this.tailHi = info.localTo;
    }
    if (this.received > before && this.received > this.hint) this.ack(this.received);
    if (this.peerUptodate) await this.checkCaughtUp();
  }

  /**
   * RESYNC [16, stamp]: the server collected removes below what we hold of
   * its log, so everything it holds follows from 0.  Its stamp goes into
   * our clock as a received stamp (ECLOCK, fatal, if too far ahead: the
   * next session asks again), so what we write from now on is newer than
   * anything it collected and passes its gate; stored with the durable
   * mark, so a cut session asks for all of it again.
   *
   * Every RESYNC starts over, as the C session does: the server's export
   * restarts from 0 (a collection mid-resync sends RESYNC again), so the
   * records noted so far are cleared, and what it holds of our log is
   * taken again — the most of what it acked before (stored) and in this
   * session (ACK or SINCE); what it acknowledges later came after this
   * snapshot began and is not sent back to us.  The stamp kept is the
   * highest seen.
   */
  private async onResync(stamp: bigint): Promise<void> {
    await this.r.markResync(this.serverHex, true, stamp);
    const acked = Math.max(this.r.peer(this.serverHex).acked, this.peerAcked);
    const prev = this.resync?.stamp ?? 0n;
    this.resync = { stamp: stamp > prev ? stamp : prev, acked, held: new Map() };
    this.caught = false;
    this.o.onEvent({ type: "resync", stamp });
  }

  /**
   * A delta stamped too far ahead: not applied, our watermark stays before
   * it.  We say so, and ask for it again (since our watermark) once our
   * clock has caught up with its stamp, so the session is never wedged.
   */
  private refused(e: CrdtdbError): void {
    this.o.onEvent({ type: "error", code: e.code, errno: e.errno, message: e.message, fatal: false });
    this.out({ t: "notice", code: e.errno, message: e.message });
    // ask again once our clock has caught up with the refused stamp (as the
    // C session does), no sooner than 1 s, no later than 60 s from now
    const wait = Math.min(Math.max(1000, this.r.clockRetryAt - this.r.clock.now() + 10), 60_000);
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      if (this.state === "open") this.queue = this.queue.then(() => this.out({ t: "since", seq: this.received }));
    }, wait);
  }

  /** Acknowledges the server's log up to seq, now or within ackDelayMs. */
  private ack(seq: number): void {
    if (seq > this.ackDue) this.ackDue = seq;
    if (this.o.ackDelayMs <= 0) return this.sendAck();
    this.ackTimer ??= setTimeout(() => this.sendAck(), this.o.ackDelayMs);
  }

  private sendAck(): void {
    if (this.ackTimer) { clearTimeout(this.ackTimer); this.ackTimer = null; }
    if (!this.ackDue || this.state !== "open") return;
    // `mine`: our log's end, but for a tail only the server's deltas
    // numbered (it has those): nothing older than the ack can come from us
    const last = this.r.seq;
    this.out({ t: "ack", seq: this.ackDue, mine: last === this.tailHi ? this.tailLo : last });
    this.ackDue = 0;
  }

  private async checkCaughtUp(): Promise<void> {
    const have = Math.max(this.hint, this.received);
    if (this.peerUptodate && have >= this.peerUptodate - 1) {
      this.peerUptodate = 0;
      const rs = this.resync;
      if (rs) { // what the snapshot did not hold goes (clears the mark)
        this.resync = null;
        await this.r.resyncEnd(this.serverHex, rs.stamp, rs.acked, rs.held, this.o.noPurge);
      } else if (this.resyncFlagged) { // it had nothing to resync after all
        await this.r.markResync(this.serverHex, false);
      }
      this.resyncFlagged = false;
      if (this.state !== "open") return;
      this.caught = true; // (synced only once what the resync dropped is gone)
      this.caughtOnce = true;
      this.o.onEvent({ type: "caughtUp" });
    }
  }

  /** Sends what the server lacks of our log, then says we are up to date. */
  pump(): Promise<void> {
    if (this.state !== "open" || !this.haveSince || this.mode !== TWO_WAY) return DONE;
    if (this.pumping) { this.pumpAgain = true; return DONE; }
    // nothing to send, proof made, up to date told (what pumpOnce would
    // find first): no async step, as after each delta a receiver applies
    const last = this.r.seq;
    if (this.signedOne && Math.max(this.skipTo, this.sentUpto) >= last && this.toldUptodate === last + 1) return DONE;
    return this.pumpLoop();
  }

  private async pumpLoop(): Promise<void> {
    this.pumping = true;
    try {
      do {
        this.pumpAgain = false;
        await this.pumpOnce();
      } while (this.pumpAgain && this.state === "open");
    } catch (e) {
      this.fail(e);
    } finally {
      this.pumping = false;
    }
  }

  private async pumpOnce(): Promise<void> {
    for (;;) {
      if (this.state !== "open") return;
      const last = this.r.seq;
      const done = Math.max(this.skipTo, this.sentUpto);
      // A session that sent no delta yet signs one, empty if need be: it
      // proves our id, so the server keeps our acks, and with them what we
      // hold of its removes (collection, docs/crdt.md)
      const prove = !this.signedOne && done >= last;
      if (done >= last && !prove) {
        if (this.toldUptodate !== last + 1) { // once per position
          this.toldUptodate = last + 1;
          this.out({ t: "uptodate", seq: last });
        }
        return;
      }
      // A range holding nothing for the server gets a skip, unsigned; once
      // it is long, one empty signed delta moves the server's watermark.
      await this.r.durable(); // nothing the server holds may be lost here
      if (this.state !== "open") return;
      const longskip = this.skipTo > this.sentUpto && this.skipTo - this.sentUpto >= SKIP_SPAN;
      const x = await this.r.exportFor(this.server!, this.sentUpto, {
        all: this.sentUpto < this.allUpto, maxBytes: this.o.deltaSize, empty: longskip || prove, prove,
        scanFrom: this.skipTo > this.sentUpto ? this.skipTo : undefined,
      });
      if (this.state !== "open") return;
      if (prove) this.signedOne = true; // a proof is not retried
      for (const d of x.deltas) {
        this.out({ t: "delta", delta: d.bytes });
        this.sentUpto = d.to;
        this.signedOne = true;
      }
      if (Math.max(this.sentUpto, this.skipTo) < x.upto) {
        this.out({ t: "skip", from: this.sentUpto, to: x.upto });
        this.skipTo = x.upto;
      }
    }
  }
}

