/**
 * One writer per replica file (Node), as IndexedDB's Web Lock gives one
 * per browser profile: two stores writing one file under one replica id
 * fork its history, and the server then refuses one of them for good
 * (EFORK).  The lock is a file beside the replica's, `<path>.lock`,
 * created exclusively and holding the owner's process id; it goes when the
 * store closes.  One left by a process that is gone (a crash) is taken
 * over.  Within a process the lock file cannot tell two stores apart, nor
 * a live one from one left by an earlier process under the same id (a
 * container restarted), so the process also keeps the paths it holds.
 * Advisory: processes on other machines sharing the file system are not
 * seen (their ids mean nothing here).
 */
import { open, readFile, rm } from "node:fs/promises";
import { resolve } from "node:path";
import { CrdtdbError } from "./errors.js";

/** The replica files this process holds, by absolute path. */
const held = new Set<string>();

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0); // signal 0: is it there
    return true;
  } catch (e) {
    return (e as { code?: string }).code === "EPERM"; // there, another user's
  }
}

/** Takes the lock of the replica file at `path`; returns its release.
 *  Throws CrdtdbError EBUSY when another store holds it. */
export async function lockReplicaFile(path: string): Promise<() => Promise<void>> {
  const key = resolve(path), lock = path + ".lock";
  if (held.has(key)) throw new CrdtdbError("EBUSY", `the replica file '${path}' is open in this process`);
  held.add(key); // (before any await: a second open in this turn sees it)
  try {
    for (let tries = 0; ; tries++) {
      try {
        const fh = await open(lock, "wx");
        try { await fh.writeFile(`${process.pid}\n`); } finally { await fh.close(); }
        break;
      } catch (e) {
        if ((e as { code?: string }).code !== "EEXIST")
          throw new CrdtdbError("EIO", `replica file lock: ${(e as Error)?.message ?? e}`);
        const pid = Number((await readFile(lock, "utf8").catch(() => "")).trim());
        if (tries || (pid && pid !== process.pid && alive(pid)))
          throw new CrdtdbError("EBUSY", `the replica file '${path}' is open in ${tries ? "another process" : `process ${pid}`}`);
        await rm(lock, { force: true }); // its process is gone
      }
    }
  } catch (e) {
    held.delete(key);
    throw e;
  }
  let released = false;
  return async () => {
    if (released) return;
    released = true;
    await rm(lock, { force: true }).catch(() => undefined);
    held.delete(key);
  };
}
