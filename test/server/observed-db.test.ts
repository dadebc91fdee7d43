/** startServer's `observeDb` decorator: every statement and transaction reported, results unchanged. */
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { type DbObservation, observedDb } from "../../packages/server/src/db/observed.js";
import { openTestDb, type TestDb } from "./support/db-fixture.js";

let t: TestDb;
before(async () => {
  t = await openTestDb("pglite");
});
after(async () => {
  await t.close();
});

test("queries and transactions are observed once each, with their outcome", async () => {
  const seen: DbObservation[] = [];
  const db = observedDb(t.db, (o) => seen.push(o));
  assert.equal(db.kind, "pglite");

  const rows = await db.query<{ n: number }>("SELECT $1::int + 1 AS n", [41]);
  assert.deepEqual(rows, [{ n: 42 }]);
  assert.equal(seen.length, 1);
  assert.equal(seen[0]?.op, "query");
  assert.equal(seen[0]?.ok, true);
  assert.ok((seen[0]?.ms ?? -1) >= 0);

  await assert.rejects(db.query("SELECT * FROM no_such_table"), /no_such_table/);
  assert.deepEqual(
    seen.slice(1).map((o) => [o.op, o.ok]),
    [["query", false]],
  );

  // A transaction is one observation, however many statements run in it.
  const value = await db.transaction(async (tx) => {
    await tx.query("CREATE TEMP TABLE obs (x int)");
    await tx.query("INSERT INTO obs VALUES (1), (2)");
    const r = await tx.query<{ c: number }>("SELECT count(*)::int AS c FROM obs");
    return r[0]?.c;
  });
  assert.equal(value, 2);
  assert.deepEqual(
    seen.slice(2).map((o) => [o.op, o.ok]),
    [["transaction", true]],
  );

  // A rolled-back transaction is reported as failed and its error reaches the caller.
  await assert.rejects(
    db.transaction(async (tx) => {
      await tx.query("INSERT INTO obs VALUES (3)");
      throw new Error("abandon");
    }),
    /abandon/,
  );
  const last = seen.at(-1);
  assert.deepEqual([last?.op, last?.ok], ["transaction", false]);
  const left = await t.db.query<{ c: number }>("SELECT count(*)::int AS c FROM obs");
  assert.equal(left[0]?.c, 2, "the failed transaction was rolled back");
});
