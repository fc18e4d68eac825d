/**
 * Test helpers: the real `crdtdb` binary (CRDTDB_BIN, else ../build/crdtdb),
 * a real `crdtdb serve` on 127.0.0.1 in a temporary directory, and waiting.
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync, existsSync } from "node:fs";
import { connect, createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import type { SocketLike } from "../src/sync.js";

const here = dirname(fileURLToPath(import.meta.url));
/** The package root (js/), whether run from test/ or dist-test/test/. */
export const pkgRoot = resolve(here, existsSync(join(here, "..", "package.json")) ? ".." : "../..");
export const repoRoot = resolve(pkgRoot, "..");

export function crdtdbBin(): string {
  const b = process.env.CRDTDB_BIN ?? join(repoRoot, "build", "crdtdb");
  if (!existsSync(b)) throw new Error(`the crdtdb binary is not at ${b}: build the C library first (or set CRDTDB_BIN)`);
  return b;
}

export function tempDir(prefix = "crdtdb-js-"): { path: string; remove(): void } {
  const path = mkdtempSync(join(tmpdir(), prefix));
  return { path, remove: () => rmSync(path, { recursive: true, force: true }) };
}

/** Runs the crdtdb command; returns stdout, throws with stderr on failure. */
export function cli(dir: string, ...args: string[]): string {
  const r = spawnSync(crdtdbBin(), ["-d", dir, ...args], { encoding: "utf8", timeout: 60_000 });
  if (r.status !== 0) throw new Error(`crdtdb ${args.join(" ")} failed (${r.status}): ${r.stderr}`);
  return r.stdout;
}

export function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const s = createServer();
    s.listen(0, "127.0.0.1", () => {
      const a = s.address();
      const port = typeof a === "object" && a ? a.port : 0;
      s.close(() => res(port));
    });
    s.on("error", rej);
  });
}

export interface Server {
  url: string;
  port: number;
  dir: string;
  proc: ChildProcess;
  log(): string;
  stop(): Promise<void>;
}

/** Starts `crdtdb serve` on 127.0.0.1 and waits until it accepts connections. */
export async function serve(dir: string, args: string[] = [], port?: number): Promise<Server> {
  port = port ?? (await freePort());
  const proc = spawn(crdtdbBin(), ["-d", dir, "serve", "--listen", `127.0.0.1:${port}`, ...args], { stdio: ["ignore", "ignore", "pipe"] });
  let log = "";
  proc.stderr!.on("data", (d: Buffer) => { log += d.toString(); });
  const deadline = Date.now() + 10_000;
  for (;;) {
    if (proc.exitCode !== null) throw new Error(`crdtdb serve exited: ${log}`);
    const ok = await new Promise<boolean>((res) => {
      const s = connect(port!, "127.0.0.1");
      s.on("connect", () => { s.destroy(); res(true); });
      s.on("error", () => res(false));
    });
    if (ok) break;
    if (Date.now() > deadline) throw new Error(`crdtdb serve did not listen: ${log}`);
    await sleep(50);
  }
  return {
    url: `ws://127.0.0.1:${port}`, port, dir, proc, log: () => log,
    stop: () => ended(proc),
  };
}

/** Ends a child process with `signal` (SIGTERM by default, SIGKILL if it
 *  is still there after 5 s) and resolves once it has exited. */
export function ended(proc: ChildProcess, signal: NodeJS.Signals = "SIGTERM"): Promise<void> {
  return new Promise<void>((res) => {
    if (proc.exitCode !== null || proc.signalCode !== null) return res(); // (a killed one has no exit code)
    proc.on("exit", () => res());
    proc.kill(signal);
    setTimeout(() => proc.kill("SIGKILL"), 5000).unref();
  });
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Polls fn until it returns a truthy value or the time runs out. */
export async function until<T>(fn: () => T | Promise<T>, what: string, ms = 10_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

/** Runs fn with a fresh `crdtdb serve` (an initialised environment in a
 *  temp dir, `--collections colls` and args), then stops it and removes
 *  the dir, whatever fn does. */
export async function withServer(colls: string, args: string[], fn: (srv: Server, dir: string) => Promise<void>,
  prefix = "crdtdb-js-"): Promise<void> {
  const d = tempDir(prefix);
  const srvDir = join(d.path, "server");
  cli(srvDir, "init");
  const srv = await serve(srvDir, ["--collections", colls, ...args]);
  try {
    await fn(srv, d.path);
  } finally {
    await srv.stop();
    d.remove();
  }
}

/** mulberry32: a small seeded generator of numbers in [0, 1), so a seed repeats a run. */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A socket standing in for `real`: its state, close and (unless `send` is
 *  given) send go to `real`, and `real`'s open, error and close events come
 *  out of it; `real.onmessage` is left to the caller, who hands messages on
 *  through the stand-in's onmessage as it likes. */
export function standIn(real: SocketLike, send?: (d: Uint8Array) => void): SocketLike {
  const me: SocketLike = {
    get binaryType() { return real.binaryType; },
    set binaryType(v: string) { real.binaryType = v; },
    get readyState() { return real.readyState; },
    get bufferedAmount() { return real.bufferedAmount; },
    onopen: null, onclose: null, onerror: null, onmessage: null,
    send: send ?? ((d) => real.send(d)),
    close: (code, reason) => real.close(code, reason),
  };
  real.onopen = (e) => me.onopen?.(e);
  real.onerror = (e) => me.onerror?.(e);
  real.onclose = (e) => me.onclose?.(e);
  return me;
}
