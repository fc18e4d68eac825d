// crdtdb/node's Ed25519 (libsodium through sodium-native, else node:crypto):
// the same answers as libsodium, the C side's verifier, on both.
import test from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { ed25519Backend } from "../src/node.js";
import { fromHex, keyPairFromSeed, sign, toHex, verify } from "../src/keys.js";
import { SODIUM_ACCEPTS, SODIUM_REFUSES } from "./ed25519edge.js";

const enc = (s: string) => new TextEncoder().encode(s);

/** Every check of this file for the backend installed in this process. */
async function checks(): Promise<void> {
  for (const [k, s, m] of SODIUM_REFUSES)
    assert.equal(await verify(fromHex(k!), enc(m!), fromHex(s!)), false, `${ed25519Backend} ${k} ${s}`);
  for (const [k, s, m] of SODIUM_ACCEPTS)
    assert.equal(await verify(fromHex(k!), enc(m!), fromHex(s!)), true, `${ed25519Backend} ${k} ${s}`);
  const kp = await keyPairFromSeed(new Uint8Array(32).fill(7));
  const sig = await sign(kp, enc("hello"));
  // RFC 8032 signatures are deterministic: every implementation's bytes agree
  assert.equal(toHex(sig), await expected());
  assert.equal(await verify(kp.publicKey, enc("hello"), sig), true);
  assert.equal(await verify(kp.publicKey, enc("hellp"), sig), false);
  const bad = new Uint8Array(sig);
  bad[40] ^= 1;
  assert.equal(await verify(kp.publicKey, enc("hello"), bad), false);
}

/** The signature of "hello" with seed 7s, made by noble (the reference the
 *  node backends must match byte for byte). */
let sigHex: string | null = null;
async function expected(): Promise<string> {
  if (sigHex) return sigHex;
  // the fallback path computes the same deterministic signature through noble
  const { useNobleOnly } = await import("../src/keys.js");
  useNobleOnly(true);
  sigHex = toHex(await sign(await keyPairFromSeed(new Uint8Array(32).fill(7)), enc("hello")));
  useNobleOnly(false);
  return sigHex;
}

const child = process.env.CRDTDB_EDGE_CHILD === "1"; // importing this file must not run its tests there

if (!child) test("crdtdb/node verifies and signs with libsodium when sodium-native is installed", async () => {
  assert.equal(ed25519Backend, "libsodium");
  await expected();
  await checks();
});

if (!child) test("without sodium-native, node:crypto gives the same answers", () => {
  // a process of its own: the backend is chosen once per process
  const here = new URL(".", import.meta.url).href;
  const code = `import { ed25519Backend } from "${here}../src/node.js";
    import { openSslChecks } from "${here}nodecrypto.test.js";
    if (ed25519Backend !== "openssl") throw new Error(ed25519Backend);
    await openSslChecks(); console.log("openssl ok");`;
  const r = spawnSync(process.execPath, ["--input-type=module", "-e", code],
    { env: { ...process.env, CRDTDB_NO_SODIUM: "1", CRDTDB_EDGE_CHILD: "1" }, encoding: "utf8" });
  assert.equal(r.status, 0, r.stdout + r.stderr);
  assert.match(r.stdout, /openssl ok/);
});

/** For the child above. */
export async function openSslChecks(): Promise<void> {
  await expected();
  await checks();
}
