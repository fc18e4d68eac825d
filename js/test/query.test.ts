/* Query criteria against the shared vectors (tests/vectors/query.json, also
 * checked by tests/test_vectors.c), and the forms elemento's DataStore
 * users pass. */
import test from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";

import { CrdtdbError } from "../src/errors.js";
import { compareIds } from "../src/path.js";
import { compileQuery, valueCmp } from "../src/query.js";
import { withId } from "../src/record.js";
import type { DataObject } from "../src/types.js";
import { decodeValue } from "../src/value.js";

const QUERY = new URL("../../../tests/vectors/query.json", import.meta.url);
const vectors = JSON.parse(readFileSync(QUERY, "utf8")) as {
  records: Record<string, string>;
  cases: { name: string; criteria: string | null; ids?: string[]; error?: string; message?: string }[];
};
const unhex = (h: string): Uint8Array => new Uint8Array(Buffer.from(h, "hex"));

/** The records in id order (bytewise, as C returns them). */
const records = Object.entries(vectors.records)
  .map(([id, h]) => [id, decodeValue(unhex(h)) as DataObject] as const)
  .sort((a, b) => compareIds(a[0], b[0]));

function run(criteria: unknown, recs: readonly (readonly [string, DataObject])[] = records): string[] {
  const match = compileQuery(criteria);
  return recs.filter(([, r]) => match(r)).map(([id]) => id);
}

test("query.json: matching ids in bytewise id order", () => {
  assert.deepEqual(records.map(([id]) => id), ["B", "a", "b", "z", "é"]);
  let n = 0;
  for (const c of vectors.cases) {
    if (c.error) continue;
    const criteria = c.criteria === null ? undefined : decodeValue(unhex(c.criteria));
    assert.deepEqual(run(criteria), c.ids, c.name);
    // records shown with their id match the same way
    assert.deepEqual(run(criteria, records.map(([id, r]) => [id, withId(id, r)] as const)), c.ids, `${c.name} (with id)`);
    n++;
  }
  assert.ok(n >= 35);
});

test("query.json: bad criteria are refused with C's code and message", () => {
  let n = 0;
  for (const c of vectors.cases) {
    if (!c.error) continue;
    const criteria = decodeValue(unhex(c.criteria!));
    assert.throws(
      () => compileQuery(criteria),
      (e: unknown) => {
        assert.ok(e instanceof CrdtdbError, c.name);
        assert.equal(e.code, c.error, c.name);
        assert.equal(e.message, c.message, c.name);
        return true;
      },
    );
    n++;
  }
  assert.ok(n >= 10);
});

/* What elemento's DataStore users write (src/shared/DataStore.ts: simple
 * criteria are a plain object of equalities, complex ones a list of
 * [fieldName, operator, value] with = == > >= < <= !=). */
const players = [
  ["p1", { name: "Ann", score: 10, team: "red", joined: new Date(1700000000000), tags: ["a"] }],
  ["p2", { name: "Bob", score: 7.5, team: "blue", joined: new Date(1700000001000) }],
  ["p3", { name: "Cy", score: 12, team: "red", extra: null }],
] as const;
const rows = players.map(([id, r]) => [id, withId(id, r as unknown as DataObject)] as const);

test("elemento simple criteria: a plain object of equalities", () => {
  assert.deepEqual(run({ team: "red" }, rows), ["p1", "p3"]);
  assert.deepEqual(run({ team: "red", score: 12 }, rows), ["p3"]);
  assert.deepEqual(run({}, rows), ["p1", "p2", "p3"]);
  assert.deepEqual(run({ id: "p2" }, rows), ["p2"]);
  // unlike elemento's ===, Dates (and arrays) compare by value
  assert.deepEqual(run({ joined: new Date(1700000000000) }, rows), ["p1"]);
  assert.deepEqual(run({ tags: ["a"] }, rows), ["p1"]);
  // a key whose value is undefined is no condition (as JSON drops it)
  assert.deepEqual(run({ team: "red", score: undefined }, rows), ["p1", "p3"]);
});

test("elemento complex criteria: [field, op, value] triples", () => {
  assert.deepEqual(run([["score", ">", 8]], rows), ["p1", "p3"]);
  assert.deepEqual(run([["score", ">=", 7.5], ["score", "<", 12]], rows), ["p1", "p2"]);
  assert.deepEqual(run([["score", "<=", 10]], rows), ["p1", "p2"]);
  assert.deepEqual(run([["team", "=", "blue"]], rows), ["p2"]);
  assert.deepEqual(run([["team", "==", "blue"]], rows), ["p2"]);
  assert.deepEqual(run([["team", "!=", "blue"]], rows), ["p1", "p3"]);
  assert.deepEqual(run([["name", ">", "B"]], rows), ["p2", "p3"]);
  // != null: the field is set and not null (missing is no different from null)
  assert.deepEqual(run([["joined", "!=", null]], rows), ["p1", "p2"]);
  assert.deepEqual(run([["extra", "!=", null]], rows), []);
  // no coercion, unlike JavaScript's comparisons
  assert.deepEqual(run([["score", "==", "10"]], rows), []);
  assert.deepEqual(run([["score", ">", "1"]], rows), []);
  assert.throws(() => compileQuery([["score", "like", 1]]), { code: "EBADQUERY" });
  assert.throws(() => compileQuery(null), { code: "EBADQUERY" });
  assert.throws(() => compileQuery("team"), { code: "EBADQUERY" });
});

test("valueCmp: numbers across number and bigint exactly", () => {
  assert.equal(valueCmp(2n ** 53n + 1n, 2 ** 53), 1);
  assert.equal(valueCmp(5n, 5), 0);
  assert.equal(valueCmp(-1n, 0.5), -1);
  assert.equal(valueCmp(NaN, NaN), 2);
  assert.equal(valueCmp("a", 1), 3);
});
