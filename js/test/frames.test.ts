/* The session messages (src/frames.ts) against the bytes transport/session.c
 * writes: msgpack-c's smallest encodings, u32 big-endian length prefixes,
 * error codes as signed int32. */
import test from "node:test";
import assert from "node:assert/strict";

import { CrdtdbError } from "../src/errors.js";
import { decodeMessage, encodeFrame, FrameReader, type Message } from "../src/frames.js";
import { fromHex, toHex } from "../src/keys.js";

const hex = (s: string) => fromHex(s.replace(/\s+/g, ""));
const ascii = (s: string) => toHex(new TextEncoder().encode(s));
const id11 = new Uint8Array(32).fill(0x11);

/** [message, the frame session.c sends for it] */
const CASES: [Message, string][] = [
  // send_hello: uint32 version, str db id, bin 32, uint8 mode
  [{ t: "hello", version: 1, dbId: "match-1", replicaId: id11, mode: 1 },
   "0000002e 95 01 01 a7" + ascii("match-1") + "c420" + "11".repeat(32) + "01"],
  [{ t: "hello", version: 1, dbId: "d", replicaId: id11, mode: 2 },
   "00000028 95 01 01 a1 64 c420" + "11".repeat(32) + "02"],
  // send_u64(M_SINCE) and the hinted since of handle_delta
  [{ t: "since", seq: 0 }, "00000003 92 02 00"],
  [{ t: "since", seq: 300, maxBytes: 70000 }, "0000000a 93 02 cd012c ce00011170"],
  [{ t: "delta", delta: hex("010203") }, "00000007 92 03 c403 010203"],
  [{ t: "ack", seq: 5 }, "00000003 92 04 05"],
  [{ t: "ack", seq: 255 }, "00000004 92 04 ccff"],
  [{ t: "ack", seq: 5, mine: 7 }, "00000004 93 04 05 07"],
  [{ t: "ack", seq: 5, mine: 0 }, "00000004 93 04 05 00"],
  [{ t: "resync", stamp: 0x0123456789abcdefn }, "0000000b 92 10 cf0123456789abcdef"],
  [{ t: "resync", stamp: 0n }, "00000003 92 10 00"],
  [{ t: "uptodate", seq: 2 ** 32 }, "0000000b 92 05 cf0000000100000000"],
  [{ t: "uptodate", seq: 65535 }, "00000005 92 05 cdffff"],
  // fail(): int32 code, str message
  [{ t: "error", code: -20, message: "bad signature" },
   "00000011 93 06 ec ad" + ascii("bad signature")],
  [{ t: "error", code: -128, message: "" }, "00000005 93 06 d080 a0"],
  [{ t: "error", code: -129, message: "" }, "00000006 93 06 d1ff7f a0"],
  [{ t: "error", code: -40000, message: "" }, "00000008 93 06 d2ffff63c0 a0"],
  [{ t: "close" }, "00000002 91 07"],
  [{ t: "skip", from: 10, to: 300 }, "00000006 93 08 0a cd012c"],
  [{ t: "notice", code: -13, message: "Read only access" },
   "00000014 93 09 f3 b0" + ascii("Read only access")],
  [{ t: "purge", coll: "players", id: "ann" }, "0000000e 93 0a a7" + ascii("players") + "a3" + ascii("ann")],
  [{ t: "replace", coll: "players", id: "ann", upto: 7, delta: null },
   "00000010 95 0b a7" + ascii("players") + "a3" + ascii("ann") + "07 c0"],
  [{ t: "replace", coll: "players", id: "ann", upto: 70000, delta: hex("9301") },
   "00000017 95 0b a7" + ascii("players") + "a3" + ascii("ann") + "ce00011170 c402 9301"],
];

test("each message encodes to the bytes session.c writes and decodes back", () => {
  for (const [m, h] of CASES) {
    const bytes = encodeFrame(m);
    assert.equal(toHex(bytes), h.replace(/\s+/g, ""), `${m.t}`);
    const r = new FrameReader(1 << 20);
    r.push(bytes);
    assert.deepEqual(r.next(), m);
    assert.equal(r.next(), null);
  }
});

test("a long string and a long delta use str8/str16 and bin16/bin32", () => {
  const msg = "x".repeat(40);
  assert.equal(toHex(encodeFrame({ t: "notice", code: -1, message: msg })).slice(8, 18), "9309ffd928");
  const big = new Uint8Array(70000);
  const f = encodeFrame({ t: "delta", delta: big });
  assert.equal(toHex(f.subarray(0, 11)), "00011177" + "9203" + "c600011170");
  assert.equal(f.length, 4 + 2 + 5 + 70000);
  const r = new FrameReader(1 << 20);
  r.push(f);
  const m = r.next();
  assert.ok(m && m.t === "delta" && m.delta.length === 70000);
});

test("frames spanning chunks and several per chunk", () => {
  const all: Message[] = CASES.map(([m]) => m);
  const stream = concat(all.map(encodeFrame));
  for (const size of [1, 2, 3, 5, 7, 64, stream.length]) {
    const r = new FrameReader(1 << 20);
    const got: Message[] = [];
    for (let i = 0; i < stream.length; i += size) {
      r.push(stream.subarray(i, i + size));
      for (let m = r.next(); m; m = r.next()) got.push(m);
    }
    assert.deepEqual(got, all, `chunks of ${size}`);
    assert.equal(r.buffered, 0);
  }
});

test("a frame over maxMessage is ETOOBIG, at once and again", () => {
  const r = new FrameReader(10);
  r.push(hex("0000000b"));
  assert.throws(() => r.next(), (e: unknown) => e instanceof CrdtdbError && e.code === "ETOOBIG");
  assert.throws(() => r.next(), (e: unknown) => e instanceof CrdtdbError && e.code === "ETOOBIG");
  const ok = new FrameReader(3);
  ok.push(encodeFrame({ t: "ack", seq: 1 }));
  assert.deepEqual(ok.next(), { t: "ack", seq: 1 });
});

test("session.c accepts any integer width and array width", () => {
  // an ack's `mine` beyond 2^53 is taken (a client keeps no stability
  // marks), but not kept
  assert.deepEqual(decodeMessage(hex("93 04 05 cfffffffffffffffff")), { t: "ack", seq: 5 });
  // [4, 5] with a 16-bit array header and the seq as uint64 and as int8
  assert.deepEqual(decodeMessage(hex("dc0002 04 cf0000000000000005")), { t: "ack", seq: 5 });
  assert.deepEqual(decodeMessage(hex("92 d005 d105ff")), { t: "uptodate", seq: 0x5ff });
  assert.deepEqual(decodeMessage(hex("93 02 00 01")), { t: "since", seq: 0, maxBytes: 1 });
  // error and notice forgive missing or malformed parts (EIO, -3)
  assert.deepEqual(decodeMessage(hex("91 06")), { t: "error", code: -3, message: "" });
  assert.deepEqual(decodeMessage(hex("93 09 c0 a1 78")), { t: "notice", code: -3, message: "x" });
  assert.deepEqual(decodeMessage(hex("92 06 d2ffffff00")), { t: "error", code: -256, message: "" });
});

test("malformed messages are EBADVALUE", () => {
  const badOnes = [
    "", // nothing
    "05", // not an array
    "90", // no type
    "91 a1 78", // the type is not a uint
    "91 ff", // a negative type
    "91 11", // unknown type 17
    "91 10", // a resync (16) without its stamp
    "92 10 a1 78", // a resync with a str stamp
    "92 10 ff", // a resync with a negative stamp
    "94 04 05 06 07", // ack with 4 elements
    "93 04 05 a1 78", // ack with a str mine
    "91 0c", // a presence set (12) without its state
    "92 04 05 00", // trailing byte
    "92 04 91 91 05", // three levels deep
    "92 04 90", // ack of an array
    "93 02 05 00", // since with max_bytes 0
    "93 02 05 a1 78", // since with a str max_bytes
    "93 08 05 04", // skip with to < from
    "92 03 a1 78", // delta as a str
    "93 03 c400 c0", // delta with 3 elements
    "95 01 01 a1 64 c41f" + "11".repeat(31) + "01", // hello with a 31-byte id
    "94 01 01 a1 64 c420" + "11".repeat(32), // hello with 4 elements
    "95 01 ff a1 64 c420" + "11".repeat(32) + "01", // hello with a negative version
    "93 0a a1 63 05", // purge with an int id
    "93 0a a1 63 a1 ff", // purge with a bad UTF-8 id
    "93 0a a1 63 d9ff" + "61".repeat(255) + "", // purge id of 255 bytes is fine: see below
    "95 0b a1 63 a1 64 07 a1 78", // replace with a str delta
    "92 04 dd00000005", // a container claiming more elements than bytes
    "92 04 cb3ff0000000000000", // a float seq
    "92 04 c1", // the never-used byte
  ];
  for (const h of badOnes) {
    if (h.includes("d9ff")) {
      assert.deepEqual(decodeMessage(hex(h)), { t: "purge", coll: "c", id: "a".repeat(255) });
      continue;
    }
    assert.throws(() => decodeMessage(hex(h)), (e: unknown) => e instanceof CrdtdbError && e.code === "EBADVALUE", h);
  }
  // a 256-byte id is refused
  assert.throws(() => decodeMessage(hex("93 0a a1 63 da0100" + "61".repeat(256))),
    (e: unknown) => e instanceof CrdtdbError && e.code === "EBADVALUE");
});

test("a malformed frame is consumed: the reader goes on to the next", () => {
  const r = new FrameReader(100);
  r.push(concat([hex("00000001 10".replace(/ /g, "")), encodeFrame({ t: "close" })]));
  assert.throws(() => r.next(), (e: unknown) => e instanceof CrdtdbError && e.code === "EBADVALUE");
  assert.deepEqual(r.next(), { t: "close" });
});

test("many small frames in many chunks stay linear", () => {
  const one = encodeFrame({ t: "ack", seq: 1234567 });
  const n = 200000;
  const stream = new Uint8Array(one.length * n);
  for (let i = 0; i < n; i++) stream.set(one, i * one.length);
  const r = new FrameReader(100);
  const t0 = performance.now();
  let got = 0;
  for (let i = 0; i < stream.length; i += 4093) {
    r.push(stream.subarray(i, i + 4093));
    while (r.next()) got++;
  }
  assert.equal(got, n);
  assert.ok(performance.now() - t0 < 2000);
});

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

// Messages captured from a real `crdtdb serve` (build-wire) talking to this
// module over WebSocket: its hello, since, delta, uptodate, ack and error.
// Each decodes, and encodes back to the very same bytes.
const FROM_SERVER: [string, Message | null][] = [
  ["950101a167c420a6c897f67ad5f412ba2e6da470f2b4b60be7aa4e463b44ab1bea69e53d0432a501",
   { t: "hello", version: 1, dbId: "g", replicaId: hex("a6c897f67ad5f412ba2e6da470f2b4b60be7aa4e463b44ab1bea69e53d0432a5"), mode: 1 }],
  ["920200", { t: "since", seq: 0 }],
  ["920202", { t: "since", seq: 2 }],
  ["920508", { t: "uptodate", seq: 8 }],
  ["920402", { t: "ack", seq: 2 }],
  ["9306fbbb436f6c6c656374696f6e20276e6f706527206e6f7420666f756e64",
   { t: "error", code: -5, message: "Collection 'nope' not found" }],
  ["9203c501599301c501129ba167c420a6c897f67ad5f412ba2e6da470f2b4b60be7aa4e463b44ab1bea69e53d0432a5000ac0cf01a241273c76000091a7706c617965727392c420a6c897f67ad5f412ba2e6da470f2b4b60be7aa4e463b44ab1bea69e53d0432a5c4206e7a1cdd29b0b78fd13af4c5598feff4ef2a97166e3ca6f2e4fbfccd80505bf1929400a3616e6e930100009694a46bc3a97a0000c404a3416e6e9492a3706f73a1780000c4039201029392a3706f73a179000094a4706f73320000c401c094a26870ce0015000000c4010894a36e6577ce0015000000c401c39400a37a65649301cf0000000626bf0000019194a26870cf0000000626bf000001c4010391920ac4103a886f6809fb62a46f769ad3db07242cc0c44023e428ad5e3641d66b86821bf380deebfc23965c3f1d0df8e01e27b0ba5c869f6bf03078df51de2729d79ebf69395cff3f22158384576b6a77b82e190cf26104",
   null],
];

test("messages a real crdtdb server sent decode and encode back byte for byte", async () => {
  const { decodeDelta } = await import("../src/delta.js");
  for (const [h, want] of FROM_SERVER) {
    const raw = hex(h);
    const m = decodeMessage(raw);
    if (want) assert.deepEqual(m, want);
    assert.equal(toHex(encodeFrame(m)), toHex(raw.length > 0 ? concat([hex((raw.length >>> 0).toString(16).padStart(8, "0")), raw]) : raw));
    if (m.t === "delta") {
      // the server's own signature verifies; its export holds our record too
      const d = await decodeDelta(m.delta);
      assert.deepEqual([d.dbId, d.from, d.to, d.records.map((r) => r.id)], ["g", 0, 10, ["ann", "zed"]]);
    }
  }
});
