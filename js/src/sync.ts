/**
 * The WebSocket binding of a client session: connects to a crdtdb server
 * (`<url>/v1/db/<database id>`), moves bytes between the socket and a
 * ClientSession, and reconnects with backoff after anything but a final
 * answer.  Native WebSocket in browsers (token in `?access_token=`), any
 * WHATWG-compatible constructor in Node (e.g. `ws`, token in the
 * Authorization header).
 *
 * Browsers ask for refusals in-band (`inband=1`: an ERROR, then a 44xx
 * close); Node's sockets turn the HTTP status into the same close code.
 * What a close means (docs/protocol.md, "Close codes"):
 * - a bad or expired token (EAUTH, close 4401, HTTP 401): ask for a token
 *   again (the `token` callback) and retry; stop if there is none;
 * - a wrong path or database id (4404, 4400) or a frame too big (1009):
 *   stop, since retrying cannot help;
 * - the database is denied to this user (EDENIED, 4403, HTTP 403): the copy
 *   is cleared (InvalidateAll) and sync stops;
 * - access changed (EREVOKED): the copy is cleared and sync reconnects;
 * - anything else (network, 1006, 1011, 1013, caps 4429/4503): retry with backoff.
 *
 * Presence rides on each session (presence.ts): our state is sent after
 * every server hello, and others' entries leave when a session ends.
 */
import { CrdtdbError, codeOf } from "./errors.js";
import { Presence } from "./presence.js";
import { ClientSession, SERVER_TO_CLIENT, TWO_WAY, type SessionEvent, type SyncMode } from "./session.js";
import type { Replica } from "./replica.js";

/** The part of the WHATWG WebSocket that the binding uses. */
export interface SocketLike {
  binaryType: string;
  readonly readyState: number;
  readonly bufferedAmount: number;
  onopen: ((ev: unknown) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  send(data: Uint8Array): void;
  close(code?: number, reason?: string): void;
}

export type SocketFactory = (url: string, headers: Record<string, string>) => SocketLike;

export type SyncState = "connecting" | "open" | "synced" | "offline" | "stopped";

export interface SyncStatus {
  state: SyncState;
  /** The last error, if the state came from one. */
  error?: CrdtdbError;
}

export interface SyncOptions {
  /** The server's base URL, e.g. "ws://127.0.0.1:8080". */
  url: string;
  /** A bearer token, or a function giving the current one (called before each connect). */
  token?: string | (() => string | null | Promise<string | null>);
  /** "two-way" (default) or "server-to-client". */
  mode?: "two-way" | "server-to-client";
  /** How to make a socket: defaults to the global WebSocket with the token in the query. */
  socket?: SocketFactory;
  minBackoffMs?: number;
  maxBackoffMs?: number;
  onStatus?: (s: SyncStatus) => void;
  /** Every session event (errors that do not end the session included). */
  onEvent?: (e: SessionEvent) => void;
}

/** The biggest WebSocket message we send (the server's limit). */
const WS_CHUNK = 64 * 1024;

/** A socket to `<url>/v1/db/<dbId>` with the token where the runtime
 *  carries it (see the file's comment). */
async function openSocket(dbId: string, o: SyncOptions): Promise<SocketLike> {
  const token = typeof o.token === "function" ? await o.token() : o.token ?? null;
  const base = o.url.replace(/\/+$/, "");
  let url = `${base}/v1/db/${encodeURIComponent(dbId)}`;
  const headers: Record<string, string> = {};
  const make = o.socket ?? runtimeSocket;
  if (make) {
    if (token) headers["authorization"] = `Bearer ${token}`;
  } else {
    // a browser cannot read a refused upgrade's status: ask for the
    // answer in-band (an ERROR, then close 4401/4403/...: docs/auth.md)
    url += token ? `?access_token=${encodeURIComponent(token)}&inband=1` : "?inband=1";
  }
  let ws: SocketLike;
  try {
    ws = make ? make(url, headers) : defaultSocket(url);
  } catch (e) {
    // no WebSocket here, or a URL no socket takes: retrying cannot help
    throw e instanceof CrdtdbError ? e : new CrdtdbError("EINVAL", `cannot open a WebSocket to ${url.split("?")[0]}: ${String(e)}`);
  }
  ws.binaryType = "arraybuffer";
  return ws;
}

/**
 * The first connection, opened while the replica loads (CrdtdbDataStore.open
 * starts it before IndexedDB opens, so the handshake and the loading
 * overlap: ~25 ms of a page load in Chromium).  It keeps what the socket
 * says until the Sync takes it; close() if the replica never comes.
 */
export class EarlyConnection {
  private opened = false;
  private readonly held: unknown[] = [];
  private closedWith: { code: number; reason: string } | null = null;

  private constructor(readonly ws: SocketLike) {
    ws.onopen = () => { this.opened = true; };
    ws.onmessage = (ev) => { this.held.push(ev.data); };
    ws.onerror = () => { /* onclose follows */ };
    ws.onclose = (ev) => { this.closedWith = ev; };
  }

  /** Opens it; null when that fails (the Sync's own connect then fails
   *  the same way and retries). */
  static async open(dbId: string, o: SyncOptions): Promise<EarlyConnection | null> {
    try {
      return new EarlyConnection(await openSocket(dbId, o));
    } catch {
      return null;
    }
  }

  /** Hands the socket's events so far to handlers just attached to it. */
  replay(): void {
    const ws = this.ws;
    if (this.opened) ws.onopen?.(undefined);
    for (const data of this.held.splice(0)) ws.onmessage?.({ data });
    if (this.closedWith) ws.onclose?.(this.closedWith);
  }

  close(): void { this.ws.close(1000, "bye"); }
}

export class Sync {
  private readonly r: Replica;
  private readonly o: SyncOptions;
  /** Presence and messages over this connection. */
  readonly presence = new Presence();
  private ws: SocketLike | null = null;
  private early: Promise<EarlyConnection | null> | null = null;
  private session: ClientSession | null = null;
  private attempt = 0;
  private timer: ReturnType<typeof setTimeout> | null = null;
  private stopped = false;
  private st: SyncStatus = { state: "connecting" };
  private waiters: { res: () => void; rej: (e: CrdtdbError) => void }[] = [];
  private onOnline = (): void => {
    if (this.ws || this.stopped) return;
    // back online: now, not when the backoff would have come round
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.attempt = 0;
    this.connectSoon(0);
  };
  /** A browser that knows it is offline: a socket may stay open through
   *  it, holding frames both ways, so close it and say so now. */
  private onOffline = (): void => { this.ws?.close(4000, "offline"); };

  constructor(replica: Replica, opts: SyncOptions) {
    this.r = replica;
    this.o = opts;
    // a local write is not synced until the server acknowledges it
    replica.onChange((_c, _i, local) => { if (local && this.st.state === "synced") this.setStatus({ state: "open" }); });
  }

  get status(): SyncStatus { return this.st; }

  /** Connects (and keeps reconnecting) until stop(); the first time over
   *  `early` if given (opened for this replica's database). */
  start(early?: Promise<EarlyConnection | null> | null): void {
    this.stopped = false;
    if (!this.ws) this.setStatus({ state: "connecting" });
    this.dropEarly();
    this.early = early ?? null;
    // a copy that only receives refuses local writes from the start
    if (this.o.mode === "server-to-client") this.r.setReadonly(true);
    const g = globalThis as { addEventListener?: (t: string, f: () => void) => void };
    g.addEventListener?.("online", this.onOnline);
    g.addEventListener?.("offline", this.onOffline);
    this.connectSoon(0);
  }

  /** Closes the connection and stops reconnecting.  Local data stays. */
  stop(): void {
    this.stopped = true;
    const g = globalThis as { removeEventListener?: (t: string, f: () => void) => void };
    g.removeEventListener?.("online", this.onOnline);
    g.removeEventListener?.("offline", this.onOffline);
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.dropEarly();
    this.session?.close();
    this.ws?.close(1000, "bye");
    this.ws = null;
    this.setStatus({ state: "stopped" });
  }

  /** Resolves once the copy has everything the server had when it last said so
   *  and the server holds every local write. */
  whenSynced(): Promise<void> {
    if (this.st.state === "synced") return Promise.resolve();
    if (this.st.state === "stopped") return Promise.reject(this.st.error ?? new CrdtdbError("EBUSY", "sync is stopped"));
    return new Promise((res, rej) => this.waiters.push({ res, rej }));
  }

  private setStatus(s: SyncStatus): void {
    this.st = s;
    if (s.state === "synced") for (const w of this.waiters.splice(0)) w.res();
    // stopped for good: nobody waits for a sync that will not come
    else if (s.state === "stopped") for (const w of this.waiters.splice(0)) w.rej(s.error ?? new CrdtdbError("EBUSY", "sync is stopped"));
    this.o.onStatus?.(s);
  }

  private dropEarly(): void {
    void this.early?.then((c) => c?.close());
    this.early = null;
  }

  private connectSoon(ms: number): void {
    if (this.timer || this.stopped) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      this.connect().catch((e: unknown) => {
        const err = asError(e);
        // no socket can be made (openSocket): stop, so whenSynced() says why
        if (err.code === "EINVAL" && !this.ws) this.halt(err);
        else this.retry(err);
      });
    }, ms);
  }

  /** Stops for good with err (until start()): retrying cannot help. */
  private halt(err?: CrdtdbError): void {
    this.stopped = true;
    this.setStatus({ state: "stopped", error: err });
  }

  private retry(err?: CrdtdbError): void {
    if (this.stopped) return;
    const min = this.o.minBackoffMs ?? 500, max = this.o.maxBackoffMs ?? 30_000;
    const base = Math.min(max, min * 2 ** this.attempt++);
    this.setStatus(err ? { state: "offline", error: err } : { state: "offline" });
    this.connectSoon(base / 2 + Math.random() * base / 2);
  }

  private async connect(): Promise<void> {
    if (this.stopped) return;
    const early = this.early ? await this.early : null;
    this.early = null;
    const ws = early ? early.ws : await openSocket(this.r.dbId, this.o);
    if (this.stopped) { // stopped while the token was being fetched
      ws.close(1000, "bye");
      return;
    }
    this.ws = ws;
    if (this.st.state !== "connecting") this.setStatus({ state: "connecting" });
    const mode: SyncMode = this.o.mode === "server-to-client" ? SERVER_TO_CLIENT : TWO_WAY;
    let final: "auth" | "denied" | "revoked" | "stop" | null = null;
    let lastError: CrdtdbError | undefined;
    const s = new ClientSession(this.r, {
      mode,
      send: (f) => {
        for (let i = 0; i < f.length; i += WS_CHUNK) ws.send(f.subarray(i, Math.min(f.length, i + WS_CHUNK)));
      },
      onEvent: (e) => {
        this.o.onEvent?.(e);
        if (e.type === "presence" || e.type === "message") this.presence.handle(s, e);
        // attached first: an onStatus handler may send at once
        else if (e.type === "ready") { this.presence.attach(s); this.setStatus({ state: "open" }); }
        // the backoff starts again only once a connection has worked, not
        // when one that will fail again said hello
        else if (e.type === "caughtUp") { this.attempt = 0; this.checkSynced(); }
        else if (e.type === "applied" || e.type === "acked") this.checkSynced();
        else if (e.type === "closed") {
          this.presence.detach(s);
          ws.close(1000, "session ended"); // an ERROR sent or received ends the connection too
        } else if (e.type === "error") {
          // a NOTICE (a refused presence, a delta stamped ahead) ends
          // nothing and is not why a connection later drops
          if (!e.fatal) return;
          lastError = new CrdtdbError(e.code, e.message);
          if (e.code === "EAUTH") final = "auth";
          else if (e.code === "EDENIED" || e.code === "ENODB") final = "denied";
          else if (e.code === "EREVOKED") final = "revoked";
          else if (FINAL_CODES.has(e.code)) final = "stop";
        }
      },
    });
    this.session = s;
    ws.onopen = () => s.start();
    ws.onmessage = (ev) => {
      const d = ev.data;
      if (d instanceof ArrayBuffer) s.receive(new Uint8Array(d));
      else if (d instanceof Uint8Array) s.receive(d);
      this.checkSyncedLater(s);
    };
    ws.onerror = () => { /* onclose follows with the code */ };
    ws.onclose = (ev) => {
      // whoever we saw is gone with the connection, at once
      this.presence.detach(s);
      if (this.ws !== ws) return;
      this.ws = null;
      this.session = null;
      void s.idle().then(async () => {
        s.end();
        if (ev.code === 4401) final = "auth";
        else if (ev.code === 4403) final = final ?? "denied";
        // a wrong URL or database id, or a frame the server will always
        // refuse: retrying cannot help
        else if (ev.code === 4400 || ev.code === 4404 || ev.code === 1009) final = final ?? "stop";
        // offline says why, even after a clean close the server chose
        if (!lastError) lastError = new CrdtdbError(codeForClose(ev.code), ev.reason || (ev.code === 1000 ? "the server closed the connection" : `connection closed (${ev.code})`));
        if (this.stopped) return;
        if (final === "revoked" || final === "denied") {
          // a copy that could not be cleared must not be shown as the user's
          try { await this.r.clear(); } catch (e) {
            return this.halt(asError(e));
          }
        }
        if (final === "denied" || final === "stop") return this.halt(lastError);
        if (final === "auth" && typeof this.o.token !== "function") return this.halt(lastError);
        if (final === "revoked") this.attempt = 0;
        this.retry(lastError);
      });
    };
    early?.replay(); // what it said while the replica loaded
  }

  private checkSyncedLater(s: ClientSession): void {
    void s.idle().then(() => this.checkSynced());
  }

  private checkSynced(): void {
    const s = this.session;
    if (s && s.synced && this.st.state !== "synced") this.setStatus({ state: "synced" });
    else if (s && !s.synced && this.st.state === "synced") this.setStatus({ state: "open" });
  }
}

/** A thrown value as the status's error: EIO unless it is one of ours. */
function asError(e: unknown): CrdtdbError {
  return e instanceof CrdtdbError ? e : new CrdtdbError("EIO", String(e));
}

/** The error a close code stands for when no ERROR frame said more
 *  (docs/protocol.md, "Close codes"). */
function codeForClose(code: number): "EAUTH" | "EDENIED" | "ENOTFOUND" | "EBADID" | "ETOOBIG" | "ELIMIT" | "EBUSY" | "EIO" {
  switch (code) {
    case 4401: return "EAUTH";
    case 4403: return "EDENIED";
    case 4404: return "ENOTFOUND";
    case 4400: return "EBADID";
    case 1009: return "ETOOBIG";
    case 4429: case 4503: return "ELIMIT";
    case 1013: return "EBUSY";
    default: return "EIO";
  }
}

/** Errors that end a session for good: retrying would be refused again.
 *  ENOCOLL: the server's database has a collection this app does not
 *  declare, or the other way round.  EFORK, EFORGED: a second history
 *  under one id, or two values under one stamp (the app gives the copy a
 *  new identity: destroy it, and open it again).  EINVAL: another database
 *  than the URL's, or our own id (docs/protocol.md: don't retry as is). */
const FINAL_CODES: ReadonlySet<string> = new Set(["ENOCOLL", "EFORK", "EFORGED", "EINVAL"]);

/** The runtime's sockets when a store passes no `socket` option: set by
 *  the `crdtdb/node` entry point (nodeSocket), else the global WebSocket. */
let runtimeSocket: SocketFactory | null = null;

/** @internal crdtdb/node installs nodeSocket() as the default. */
export function setRuntimeSocket(f: SocketFactory): void {
  runtimeSocket = f;
}

function defaultSocket(url: string): SocketLike {
  const WS = (globalThis as { WebSocket?: new (url: string, protocols: string) => SocketLike }).WebSocket;
  if (!WS) throw new CrdtdbError("EINVAL", "no WebSocket in this runtime: in Node, import the store from 'crdtdb/node' (or pass socket: nodeSocket() from it)");
  return new WS(url, "crdtdb-sync");
}

export { codeOf };
