/**
 * Tokens and members against the real server (docs/auth.md): an owner
 * invites, a player accepts and plays, a reader only reads, and a removed
 * member's copy is cleared (InvalidateAll) and sync stops, denied.
 */
import test from "node:test";
import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { CrdtdbDataStore, type UpdateNotification } from "../src/index.js";
import { nodeSocket } from "../src/node.js";
import { cli, serve, tempDir, until } from "./helpers.js";

test("members: invite, accept, play; a reader is read-only; removal clears the copy and stops", async () => {
  const d = tempDir();
  const secret = join(d.path, "secret");
  writeFileSync(secret, "0123456789abcdef0123456789abcdef-test-secret\n");
  const srvDir = join(d.path, "server");
  cli(srvDir, "init");
  const srv = await serve(srvDir, ["--collections", "Players,Moves", "--jwt-secret-file", secret]);
  const token = (sub: string) => cli(d.path, "token", "--secret-file", secret, "--sub", sub).trim();
  const open = (sub: string, tok = token(sub)) => CrdtdbDataStore.open({
    dbId: "match-7", collections: ["Players", "Moves"],
    sync: { url: srv.url, token: tok, socket: nodeSocket(), minBackoffMs: 50, maxBackoffMs: 300 },
  });
  try {
    const owner = await open("olivia");
    await until(async () => (await owner.getById("_members", "olivia", true))?.role === "owner", "olivia is the owner");
    await owner.add("_members", "bob", { role: "writer", status: "invited" });
    await owner.add("_members", "rita", { role: "reader", status: "invited" });
    await owner.sync!.whenSynced();

    const bob = await open("bob");
    await until(async () => (await bob.getById("_members", "bob", true)) !== null, "bob sees his invitation");
    await bob.update("_members", "bob", { status: "accepted" });
    await bob.add("Moves", "b1", { by: "bob", to: { x: 3, y: 4 } });
    await until(async () => (await owner.getById("Moves", "b1", true)) !== null, "bob's move at the owner");

    // a writer may not change _members: the server refuses and the writer's copy is put back
    await bob.update("_members", "bob", { role: "owner" });
    await until(async () => (await bob.getById("_members", "bob"))?.role === "writer", "bob's promotion undone");
    assert.equal((await owner.getById("_members", "bob"))?.role, "writer");

    // a reader who accepts becomes read-only
    const rita = await open("rita");
    await until(async () => (await rita.getById("_members", "rita", true)) !== null, "rita sees her invitation");
    await rita.update("_members", "rita", { status: "accepted" });
    await until(() => rita.isReadOnly, "rita's copy read-only");
    await assert.rejects(rita.add("Moves", "r1", {}), { message: "Read only access" });
    await until(async () => (await rita.getById("Moves", "b1", true)) !== null, "rita reads bob's move");

    // bob is removed: his copy is cleared, observers told, and sync stops denied
    const seen: UpdateNotification[] = [];
    bob.observable("Moves").subscribe((n) => seen.push(n));
    await owner.remove("_members", "bob");
    await until(() => seen.some((n) => n.type === "InvalidateAll"), "InvalidateAll at bob");
    await until(() => bob.syncStatus?.state === "stopped", "bob's sync stopped", 15_000);
    assert.equal(bob.syncStatus?.error?.code, "EDENIED");
    assert.deepEqual(await bob.query("Moves", {}), []);

    // a stranger and a bad token are told apart
    const eve = await open("eve");
    await until(() => eve.syncStatus?.state === "stopped", "eve refused");
    assert.equal(eve.syncStatus?.error?.code, "EDENIED");
    const forger = await open("olivia", token("olivia").slice(0, -4) + "AAAA");
    await until(() => forger.syncStatus?.state === "stopped", "a bad token refused");
    assert.equal(forger.syncStatus?.error?.code, "EAUTH");
    for (const s of [owner, bob, rita, eve, forger]) await s.close();
  } finally {
    await srv.stop();
    d.remove();
  }
});
