/* Values across C and JS: the shared vectors (tests/vectors/values.json,
 * also checked by tests/test_vectors.c), flatten's limits and choices. */
import test from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";

import { CrdtdbError } from "../src/errors.js";
import { DEFAULT_LIMITS, Ext, decodeLeafValue, decodeValue, encodeValue, flatten, refOf, sameValue, valueBytes } from "../src/value.js";
import { addRegisters, emptyRecord, mergeBase, mergeLeaves, renderEncoded } from "../src/record.js";
import type { DataObject, Value } from "../src/types.js";

const VECTORS = new URL("../../../tests/vectors/values.json", import.meta.url);
const vectors = JSON.parse(readFileSync(VECTORS, "utf8")) as {
  decode: { name: string; hex: string; js: Tag; js_reencode: string }[];
  bad: { name: string; hex: string; error: string }[];
  encode: { name: string; js: Tag; hex?: string; error?: string }[];
};

type Tag = { [k: string]: unknown };
const hex = (b: Uint8Array): string => Buffer.from(b).toString("hex");
const unhex = (h: string): Uint8Array => new Uint8Array(Buffer.from(h, "hex"));

/** A number tag: a JSON number, or a string for what JSON (or jansson)
 *  cannot hold: "NaN", "-0", "Infinity", "1e20". */
function num(x: unknown): number {
  return x === "-0" ? -0 : typeof x === "string" ? Number(x) : (x as number);
}

/** The JS value a tag describes. */
function fromTag(t: Tag): unknown {
  const [k, v] = Object.entries(t)[0]!;
  switch (k) {
    case "number": return num(v);
    case "bigint": return BigInt(v as string);
    case "string": return v;
    case "bytes": return unhex(v as string);
    case "null": return null;
    case "bool": return v;
    case "undefined": return undefined;
    case "date": return new Date(num(v));
    case "ext": {
      const e = v as { type: number; data: string };
      return new Ext(e.type, unhex(e.data));
    }
    case "array": return (v as Tag[]).map(fromTag);
    case "map": {
      const o: Record<string, unknown> = {};
      for (const [key, val] of v as [string, Tag][]) o[key] = fromTag(val);
      return o;
    }
  }
  throw new Error(`unknown tag ${k}`);
}

/** Asserts v is exactly what tag t describes: type and value. */
function assertTag(v: unknown, t: Tag, where: string): void {
  const [k, want] = Object.entries(t)[0]!;
  switch (k) {
    case "number":
      assert.equal(typeof v, "number", `${where}: a number`);
      assert.ok(Object.is(v, num(want)), `${where}: ${String(v)} is ${String(want)}`);
      return;
    case "bigint":
      assert.equal(typeof v, "bigint", `${where}: a bigint`);
      assert.equal(v, BigInt(want as string), where);
      return;
    case "string": case "bool":
      assert.equal(v, want, where);
      return;
    case "null":
      assert.equal(v, null, where);
      return;
    case "bytes":
      assert.ok(v instanceof Uint8Array, `${where}: bytes`);
      assert.equal(hex(v as Uint8Array), want, where);
      return;
    case "date":
      assert.ok(v instanceof Date, `${where}: a Date`);
      assert.equal((v as Date).getTime(), num(want), where);
      return;
    case "ext": {
      const e = want as { type: number; data: string };
      assert.ok(v instanceof Ext, `${where}: an Ext`);
      assert.equal((v as Ext).type, e.type, where);
      assert.equal(hex((v as Ext).data), e.data, where);
      return;
    }
    case "array": {
      assert.ok(Array.isArray(v), `${where}: an array`);
      const a = want as Tag[];
      assert.equal((v as unknown[]).length, a.length, where);
      a.forEach((e, i) => assertTag((v as unknown[])[i], e, `${where}[${i}]`));
      return;
    }
    case "map": {
      const pairs = want as [string, Tag][];
      assert.equal(typeof v, "object", where);
      assert.deepEqual(Object.keys(v as object), pairs.map((p) => p[0]), `${where}: keys in order`);
      for (const [key, val] of pairs) assertTag((v as Record<string, unknown>)[key], val, `${where}.${key}`);
      return;
    }
  }
  throw new Error(`unknown tag ${k}`);
}

function code(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    assert.ok(e instanceof CrdtdbError, `a CrdtdbError, got ${String(e)}`);
    return e.code;
  }
  return "no error";
}

const ORIGIN = new Uint8Array(32).fill(0x10);

test("values.json: decoding gives the type and value, re-encoding the given bytes", () => {
  assert.ok(vectors.decode.length >= 40);
  for (const v of vectors.decode) {
    const d = decodeValue(unhex(v.hex));
    assertTag(d, v.js, v.name);
    assert.equal(hex(encodeValue(d)), v.js_reencode, `${v.name}: re-encoded`);
    // the re-encoding decodes to the same value again
    assertTag(decodeValue(unhex(v.js_reencode)), v.js, `${v.name}: again`);
  }
});

test("values.json: stored bytes are relayed and rendered unchanged", () => {
  for (const v of vectors.decode) {
    const r = emptyRecord();
    mergeBase(r, { kind: 1, hlc: 1n, origin: ORIGIN, seq: 0, src: "" });
    mergeLeaves(r, [{ path: ["v"], hlc: 1n, origin: ORIGIN, ...refOf(unhex(v.hex)), seq: 0, src: "" }]);
    assert.equal(hex(renderEncoded(r)!), "81a176" + v.hex, v.name);
  }
});

test("values.json: a leaf's range decodes as its bytes alone do, in place, amid other bytes", () => {
  const pad = unhex("cdffff92"); // bytes before and after that a reader must not touch
  for (const v of [...vectors.decode.map((d) => d.hex), "00", "7f", "e0", "ff", "cc00", "ccff", "cd0000", "cdffff", "ce00000000", "ce80000000", "ceffffffff", "d0ff", "c0", "c2", "c3"]) {
    const b = unhex(v), buf = new Uint8Array(pad.length * 2 + b.length);
    buf.set(pad); buf.set(b, pad.length); buf.set(pad, pad.length + b.length);
    const got = decodeLeafValue({ vbuf: buf.subarray(1), voff: pad.length - 1, vlen: b.length });
    assert.deepEqual(got, decodeValue(b), v);
  }
  // a range that ends inside its value is truncated, whatever follows
  assert.equal(code(() => decodeLeafValue({ vbuf: unhex("92010203"), voff: 0, vlen: 2 })), "EBADVALUE");
  assert.equal(code(() => decodeLeafValue({ vbuf: unhex("0102"), voff: 0, vlen: 2 })), "EBADVALUE");
});

test("values.json: malformed msgpack is refused", () => {
  for (const v of vectors.bad) assert.equal(code(() => decodeValue(unhex(v.hex))), v.error, v.name);
});

test("values.json: JS values encode to C's canonical bytes", () => {
  for (const v of vectors.encode) {
    const js = fromTag(v.js) as Value;
    if (v.error) {
      assert.equal(code(() => encodeValue(js)), v.error, v.name);
      continue;
    }
    assert.equal(hex(encodeValue(js)), v.hex, v.name);
  }
});

test("an integral number from a float keeps float64 in a stored leaf, even written back", () => {
  // the register keeps the bytes it was written with
  const r = emptyRecord();
  mergeBase(r, { kind: 1, hlc: 1n, origin: ORIGIN, seq: 0, src: "" });
  mergeLeaves(r, [{ path: ["f"], hlc: 1n, origin: ORIGIN, ...refOf(unhex("cb3ff0000000000000")), seq: 0, src: "" }]);
  assert.equal(hex(renderEncoded(r)!), "81a166cb3ff0000000000000");
});

test("flatten: leaves as C makes them", () => {
  const leaves = flatten({ a: { b: 1, c: {} }, d: [1, {}], e: undefined, f: { g: undefined }, h: null } as unknown as DataObject);
  assert.deepEqual(
    leaves.map((l) => [l.path, l.vbuf && hex(valueBytes(l)!)]),
    [
      [["a", "b"], "01"],
      [["a", "c"], null],
      [["d"], "920180"],
      [["f"], null], // a map left empty by undefined is an empty map
      [["h"], "c0"],
    ],
  );
});

test("flatten: undefined is left out of maps (as JSON and elemento do), null in arrays", () => {
  assert.deepEqual(flatten({ x: undefined } as unknown as DataObject), []);
  const [l] = flatten({ a: [undefined, 1] } as unknown as DataObject);
  assert.equal(hex(valueBytes(l!)!), "92c001");
});

test("flatten: limits and refusals with C's codes and messages", () => {
  const deep = (n: number): DataObject => {
    let v: Value = 1;
    for (let i = 0; i < n; i++) v = { a: v };
    return v as DataObject;
  };
  assert.equal(flatten(deep(16)).length, 1); // 16 containers
  assert.throws(() => flatten(deep(17)), { code: "ETOODEEP", message: "value nested deeper than the limit of 16" });
  assert.throws(() => flatten({ ["k".repeat(1023)]: 1 }), {
    code: "ETOOBIG",
    message: "field path of 1025 bytes exceeds the limit of 1024",
  });
  assert.throws(() => flatten({ s: "x".repeat(20) }, { ...DEFAULT_LIMITS, maxValueSize: 23 }), {
    code: "ETOOBIG",
    message: "value of 24 bytes exceeds the limit of 23",
  });
  assert.throws(() => flatten({ a: 1, b: 2 }, { ...DEFAULT_LIMITS, maxFields: 1 }), {
    code: "ETOOBIG",
    message: "record has more than 1 fields",
  });
  assert.throws(() => flatten({ ["\ud800"]: 1 }), { code: "EBADVALUE", message: "record key is not valid UTF-8" });
  assert.throws(() => flatten({ f: (() => 1) as unknown as Value }), { code: "EBADVALUE" });
  assert.throws(() => flatten({ m: new Map() as unknown as Value }), { code: "EBADVALUE", message: "a Map cannot be stored" });
  assert.throws(() => flatten([1] as unknown as DataObject), { code: "EBADVALUE" });
  assert.throws(() => flatten({ d: new Date(NaN) }), { code: "EBADVALUE" });
  assert.throws(() => flatten({ n: 2n ** 64n }), { code: "EBADVALUE" });
});

test("a __proto__ key is an ordinary field", () => {
  const v = JSON.parse('{"__proto__": {"x": 1}}') as DataObject;
  const { base, leaves } = addRegisters(v, 5n, ORIGIN);
  assert.deepEqual(leaves.map((l) => l.path), [["__proto__", "x"]]);
  const d = decodeValue(unhex("81a95f5f70726f746f5f5f01")) as DataObject;
  assert.equal(Object.getPrototypeOf(d), Object.prototype);
  assert.deepEqual(Object.keys(d), ["__proto__"]);
  assert.ok(base.kind === 1);
});

test("sameValue compares bytes wherever they sit; vbuf null is a map leaf", () => {
  const eq = (a: Uint8Array | null, b: Uint8Array | null): boolean => sameValue(refOf(a), refOf(b));
  assert.ok(eq(null, null));
  assert.ok(!eq(null, unhex("80")));
  assert.ok(!eq(unhex("80"), null));
  assert.ok(eq(unhex("0102"), unhex("0102")));
  assert.ok(!eq(unhex("01"), unhex("cb3ff0000000000000")));
  // ranges of shared buffers: at other offsets of one buffer, and of two
  const buf = unhex("0102030102"), other = unhex("ff0102");
  assert.ok(sameValue({ vbuf: buf, voff: 0, vlen: 2 }, { vbuf: buf, voff: 3, vlen: 2 }));
  assert.ok(sameValue({ vbuf: buf, voff: 3, vlen: 2 }, { vbuf: other, voff: 1, vlen: 2 }));
  assert.ok(!sameValue({ vbuf: buf, voff: 1, vlen: 2 }, { vbuf: other, voff: 1, vlen: 2 }));
  assert.ok(!sameValue({ vbuf: buf, voff: 0, vlen: 2 }, { vbuf: buf, voff: 0, vlen: 3 }));
  // a view is of exactly the range, and no copy
  const v = valueBytes({ vbuf: buf, voff: 2, vlen: 2 })!;
  assert.deepEqual([...v], [3, 1]);
  assert.equal(v.buffer, buf.buffer);
  assert.equal(valueBytes(refOf(null)), null);
});

test("Dates and binary survive a round trip", () => {
  const v = { d: new Date(1700000000123), b: new Uint8Array([1, 2, 3]), n: [1.5, -7, 2n ** 60n] };
  const back = decodeValue(encodeValue(v)) as typeof v;
  assert.equal(back.d.getTime(), v.d.getTime());
  assert.deepEqual([...back.b], [1, 2, 3]);
  assert.deepEqual(back.n, v.n);
});
