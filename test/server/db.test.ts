/**
 * The one Db interface on both implementations (PGlite, PostgreSQL): normalised values,
 * transactions, advisory locks, migrations and `nestbox migrate`, the PGlite single-process lock.
 *
 * One file (~590 lines) because each case runs on both database kinds through one fixture.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import { existsSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterEach, describe, it } from "node:test";
import { runMigrate } from "../../packages/server/src/db/cli-migrate.js";
import type { Db } from "../../packages/server/src/db/db.js";
import { loadMigrations, migrate } from "../../packages/server/src/db/migrate.js";

/** Every migration shipped, in order. */
const ALL = loadMigrations().map((m) => m.version);

import { openDb } from "../../packages/server/src/db/open.js";
import { DbInUseError } from "../../packages/server/src/db/pglite.js";
import { DB_KINDS, type DbKind, findPgBin, openTestDb, type TestDb } from "./support/db-fixture.js";

const openModule = new URL("../../packages/server/src/db/open.ts", import.meta.url).href;

const TABLES = [
  "api_keys",
  "audit_events",
  "certificate_authority",
  "host_tags",
  "host_tokens",
  "hosts",
  "memberships",
  "refresh_tokens",
  "sandbox_metric_points",
  "sandbox_running_periods",
  "sandboxes",
  "schema_migrations",
  "teams",
  "templates",
  "user_sessions",
  "users",
];

/** A promise and the function that settles it: lets a test hold a lock or transaction open. */
function gate(): { wait: Promise<void>; open: () => void } {
  let open!: () => void;
  const wait = new Promise<void>((resolve) => {
    open = resolve;
  });
  return { wait, open };
}

function sqlState(err: unknown): string | undefined {
  return (err as { code?: unknown }).code as string | undefined;
}

async function seedTeamAndUser(db: Db, suffix = "1") {
  await db.query("INSERT INTO teams (id, name, slug) VALUES ($1, $2, $3)", [
    `team_${suffix}`,
    "Team",
    `team-${suffix}`,
  ]);
  await db.query("INSERT INTO users (id, email, password_hash, name) VALUES ($1, $2, 'h', 'U')", [
    `usr_${suffix}`,
    `u${suffix}@example.com`,
  ]);
}

/** Captures what runMigrate writes. */
function captured() {
  const out = { stdout: "", stderr: "" };
  return {
    out,
    io: { stdout: (s: string) => (out.stdout += s), stderr: (s: string) => (out.stderr += s) },
  };
}

for (const kind of DB_KINDS) {
  describe(`db (${kind})`, () => {
    // Closed after each test: an open PGlite holds a WebAssembly heap of its own.
    const open: TestDb[] = [];
    const fresh = async (opts?: { migrated?: boolean }) => {
      const t = await openTestDb(kind, opts);
      open.push(t);
      return t;
    };
    afterEach(async () => {
      for (const t of open.splice(0)) await t.close();
    });

    describe("migrate", () => {
      it("applies 0001 on an empty database, then nothing", async () => {
        const { db } = await fresh({ migrated: false });
        assert.equal(db.kind, kind);
        const lines: string[] = [];
        assert.deepEqual(await migrate(db, (l) => lines.push(l)), { applied: ALL });
        assert.deepEqual(
          lines,
          ALL.map((v) => `applied migration ${v}`),
        );
        assert.deepEqual(await migrate(db), { applied: [] });
        const rows = await db.query<{ version: string; applied_at: Date }>(
          "SELECT version, applied_at FROM schema_migrations",
        );
        assert.deepEqual(
          rows.map((r) => r.version),
          ALL,
        );
        assert.ok(rows[0]?.applied_at instanceof Date);
        assert.ok(Math.abs(rows[0].applied_at.getTime() - Date.now()) < 60_000);
      });

      it("creates every table of the schema", async () => {
        const { db } = await fresh();
        const rows = await db.query<{ table_name: string }>(
          "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY 1",
        );
        assert.deepEqual(
          rows.map((r) => r.table_name),
          TABLES,
        );
      });

      it("refuses a database migrated by a newer version", async () => {
        const { db } = await fresh();
        await db.query("INSERT INTO schema_migrations (version) VALUES ('9999_future')");
        await assert.rejects(migrate(db), /newer than this version of Nestbox.*9999_future/);
      });

      it("rolls a failing migration back entirely and names it", async () => {
        const { db } = await fresh({ migrated: false });
        const migrations = [
          ...loadMigrations(),
          {
            version: "9000_broken",
            sql: "CREATE TABLE half_done (x int); INSERT INTO half_done VALUES (1); SELECT 1/0;",
          },
        ];
        await assert.rejects(migrate(db, { migrations }), /migration 9000_broken failed/);
        const versions = await db.query<{ version: string }>(
          "SELECT version FROM schema_migrations",
        );
        assert.deepEqual(
          versions.map((r) => r.version),
          ALL,
        );
        const [half] = await db.query<{ t: string | null }>(
          "SELECT to_regclass('half_done')::text AS t",
        );
        assert.equal(half?.t, null);
      });

      it("waits for a migration another holder of the lock is running", async () => {
        const { db } = await fresh({ migrated: false });
        const g = gate();
        const lines: string[] = [];
        let migrated: Promise<{ applied: string[] }> | undefined;
        const holder = db.tryWithAdvisoryLock(0x6e_62_78_01, async () => {
          migrated = migrate(db, (l) => lines.push(l));
          await new Promise((r) => setTimeout(r, 400));
          // Still waiting: nothing applied while the lock is held.
          const [t] = await db.query<{ t: string | null }>(
            "SELECT to_regclass('users')::text AS t",
          );
          assert.equal(t?.t, null);
          g.open();
        });
        assert.equal((await holder).ran, true);
        await g.wait;
        assert.deepEqual(await migrated, { applied: ALL });
        assert.match(lines[0] ?? "", /waiting for another process/);
      });
    });

    describe("values", () => {
      it("returns int8, bigserial, count and numeric as numbers", async () => {
        const { db } = await fresh();
        await db.query(
          "INSERT INTO hosts (id, name, memory_mb, disk_mb) VALUES ('host_1', 'h', $1, $2)",
          [123_456_789_012, 9_007_199_254_740_991n],
        );
        const [h] = await db.query<{ memory_mb: unknown; disk_mb: unknown }>(
          "SELECT memory_mb, disk_mb FROM hosts",
        );
        assert.equal(h?.memory_mb, 123_456_789_012);
        assert.equal(h?.disk_mb, 9_007_199_254_740_991);
        const [e] = await db.query<{ id: unknown }>(
          "INSERT INTO audit_events (actor_type, action, resource_type) VALUES ('system', 'a', 'r') RETURNING id",
        );
        assert.equal(e?.id, 1);
        const [c] = await db.query<{ n: unknown; avg: unknown; f: unknown }>(
          "SELECT count(*) AS n, avg(memory_mb) AS avg, 1.5::float8 AS f FROM hosts",
        );
        assert.deepEqual(c, { n: 1, avg: 123_456_789_012, f: 1.5 });
      });

      it("returns timestamptz as Date, keeping milliseconds", async () => {
        const { db } = await fresh();
        const when = new Date("2024-02-29T23:59:58.123Z");
        await seedTeamAndUser(db);
        await db.query("UPDATE teams SET deleted_at = $1", [when]);
        const [t] = await db.query<{ deleted_at: Date; created_at: Date }>(
          "SELECT deleted_at, created_at FROM teams",
        );
        assert.ok(t?.deleted_at instanceof Date);
        assert.equal(t.deleted_at.toISOString(), when.toISOString());
        assert.ok(t.created_at instanceof Date);
        // A Date bound to a text parameter reads back as ISO 8601 UTC on both kinds.
        const [s] = await db.query<{ s: string }>("SELECT $1::text AS s", [when]);
        assert.equal(s?.s, "2024-02-29T23:59:58.123Z");
      });

      it("round-trips jsonb: objects as is, arrays JSON.stringify'd", async () => {
        const { db } = await fresh();
        await seedTeamAndUser(db);
        const metadata = { a: 1, nested: { list: [1, "two", null], ok: true }, s: "x\"'y" };
        const env = ["not", "an", "object"];
        await db.query(
          "INSERT INTO templates (id, team_id, name, kind, metadata, default_env) VALUES ('tpl_1', 'team_1', 'n', 'base', $1, $2)",
          [metadata, JSON.stringify(env)],
        );
        const [t] = await db.query<{ metadata: unknown; default_env: unknown }>(
          "SELECT metadata, default_env FROM templates",
        );
        assert.deepEqual(t?.metadata, metadata);
        assert.deepEqual(t?.default_env, env);
        // jsonb operators see the structure, not a string.
        const [q] = await db.query<{ n: number }>(
          "SELECT count(*) AS n FROM templates WHERE metadata @> $1",
          [{ nested: { ok: true } }],
        );
        assert.equal(q?.n, 1);
        // A JS array is a PostgreSQL array (for = ANY).
        const ids = await db.query<{ id: string }>("SELECT id FROM templates WHERE id = ANY($1)", [
          ["tpl_1", "tpl_2"],
        ]);
        assert.deepEqual(ids, [{ id: "tpl_1" }]);
      });

      it("runs several statements when there are no parameters, returning the last one's rows", async () => {
        const { db } = await fresh();
        const rows = await db.query<{ n: number }>(
          "CREATE TEMP TABLE t (n int); INSERT INTO t VALUES (1), (2); SELECT sum(n) AS n FROM t",
        );
        assert.deepEqual(rows, [{ n: 2 + 1 }]);
      });
    });

    describe("transactions", () => {
      it("commits what fn did and returns its value", async () => {
        const { db } = await fresh();
        const value = await db.transaction(async (tx) => {
          await seedTeamAndUser(tx as Db);
          const [n] = await tx.query<{ n: number }>("SELECT count(*) AS n FROM teams");
          return n?.n;
        });
        assert.equal(value, 1);
        const rows = await db.query("SELECT id FROM users");
        assert.deepEqual(rows, [{ id: "usr_1" }]);
      });

      it("rolls back everything when fn throws, rethrowing its error", async () => {
        const { db } = await fresh();
        const boom = new Error("boom");
        await assert.rejects(
          db.transaction(async (tx) => {
            await tx.query("INSERT INTO teams (id, name, slug) VALUES ('team_x', 'x', 'x')");
            throw boom;
          }),
          (err) => err === boom,
        );
        const teams = await db.query("SELECT id FROM teams");
        assert.deepEqual(teams, []);
        // The database stays usable after a failed statement inside a transaction.
        await assert.rejects(
          db.transaction(async (tx) => {
            await tx.query("INSERT INTO teams (id, name, slug) VALUES ('team_y', 'y', 'y')");
            await tx.query("SELECT 1/0");
          }),
          (err) => sqlState(err) === "22012",
        );
        assert.deepEqual(await db.query("SELECT id FROM teams"), []);
      });

      it("refuses db.* calls inside the callback and the tx handle after it ends", async () => {
        const { db } = await fresh();
        let leaked: { query: (s: string) => Promise<unknown> } | undefined;
        await db.transaction(async (tx) => {
          leaked = tx;
          await assert.rejects(db.query("SELECT 1"), /inside db.transaction\(\)/);
          await assert.rejects(
            db.transaction(async () => 1),
            /inside db.transaction\(\)/,
          );
        });
        await assert.rejects(
          leaked?.query("SELECT 1") ?? Promise.resolve(),
          /transaction is closed/,
        );
        // Work started inside the callback but run after it ended may use db again.
        assert.deepEqual(await db.query("SELECT 1 AS one"), [{ one: 1 }]);
      });

      it("never lets another caller see uncommitted rows", async () => {
        const { db } = await fresh();
        const inserted = gate();
        const release = gate();
        let committed = false;
        const tx = db.transaction(async (t) => {
          await t.query("INSERT INTO teams (id, name, slug) VALUES ('team_u', 'u', 'u')");
          inserted.open();
          await release.wait;
          await new Promise((r) => setTimeout(r, 100));
          committed = true;
        });
        await inserted.wait;
        // On PostgreSQL this reads the last committed state at once; on PGlite (one session) it
        // waits for the transaction. Either way it must not see team_u before the commit.
        const read = db.query<{ n: number }>("SELECT count(*) AS n FROM teams").then((rows) => ({
          n: rows[0]?.n,
          afterCommit: committed,
        }));
        release.open();
        await tx;
        const r = await read;
        assert.equal(r.n, r.afterCommit ? 1 : 0, JSON.stringify(r));
        if (kind === "pglite") assert.equal(r.afterCommit, true);
      });
    });

    describe("advisory locks", () => {
      it("gives the lock to one holder at a time", async () => {
        const { db, url } = await fresh();
        const held = gate();
        const done = gate();
        const first = db.tryWithAdvisoryLock(42, async () => {
          held.open();
          await done.wait;
          return "first";
        });
        await held.wait;
        assert.deepEqual(await db.tryWithAdvisoryLock(42, async () => "second"), { ran: false });
        // Another key is independent.
        assert.deepEqual(await db.tryWithAdvisoryLock(43, async () => "other"), {
          ran: true,
          value: "other",
        });
        if (url) {
          // Another control plane on the same PostgreSQL (its own pool) is excluded too. PGlite
          // has one process and one session, so it has no such case.
          const other = await openDb({ databaseUrl: url, dataDir: "unused" });
          try {
            assert.deepEqual(await other.tryWithAdvisoryLock(42, async () => "x"), { ran: false });
          } finally {
            await other.close();
          }
        }
        done.open();
        assert.deepEqual(await first, { ran: true, value: "first" });
        assert.deepEqual(await db.tryWithAdvisoryLock(42, async () => "again"), {
          ran: true,
          value: "again",
        });
      });

      it("releases the lock when fn throws", async () => {
        const { db } = await fresh();
        await assert.rejects(
          db.tryWithAdvisoryLock(7, async () => {
            throw new Error("job failed");
          }),
          /job failed/,
        );
        assert.deepEqual(await db.tryWithAdvisoryLock(7, async () => 1), { ran: true, value: 1 });
      });
    });

    describe("schema constraints", () => {
      it("keeps user emails unique", async () => {
        const { db } = await fresh();
        await seedTeamAndUser(db);
        await assert.rejects(
          db.query(
            "INSERT INTO users (id, email, password_hash, name) VALUES ('usr_2', 'u1@example.com', 'h', 'V')",
          ),
          (err) => sqlState(err) === "23505",
        );
      });

      it("checks user status, membership role and sandbox status", async () => {
        const { db } = await fresh();
        await seedTeamAndUser(db);
        const checkViolation = (err: unknown) => sqlState(err) === "23514";
        await assert.rejects(db.query("UPDATE users SET status = 'banned'"), checkViolation);
        await db.query("UPDATE users SET status = 'disabled'");
        await assert.rejects(
          db.query(
            "INSERT INTO memberships (team_id, user_id, role) VALUES ('team_1', 'usr_1', 'god')",
          ),
          checkViolation,
        );
        await db.query(
          "INSERT INTO memberships (team_id, user_id, role) VALUES ('team_1', 'usr_1', 'owner')",
        );
        await assert.rejects(
          db.query(
            `INSERT INTO sandboxes (id, team_id, template, status, vcpus, memory_mb, disk_size_mb, timeout_sec)
             VALUES ('sbx', 'team_1', 'base', 'exploded', 1, 512, 1024, 300)`,
          ),
          checkViolation,
        );
      });

      it("allows one platform team", async () => {
        const { db } = await fresh();
        await db.query(
          "INSERT INTO teams (id, name, slug, is_platform) VALUES ('team_p', 'p', 'p', true)",
        );
        await assert.rejects(
          db.query(
            "INSERT INTO teams (id, name, slug, is_platform) VALUES ('team_q', 'q', 'q', true)",
          ),
          (err) => sqlState(err) === "23505",
        );
      });

      it("deletes a team's rows with it and keeps its users", async () => {
        const { db } = await fresh();
        await seedTeamAndUser(db, "1");
        await seedTeamAndUser(db, "2");
        for (const team of ["team_1", "team_2"]) {
          await db.query(
            "INSERT INTO memberships (team_id, user_id, role) VALUES ($1, 'usr_1', 'owner')",
            [team],
          );
          await db.query(
            "INSERT INTO api_keys (id, team_id, name, key_hash, key_prefix) VALUES ($1, $2, 'k', $1, 'nbx_')",
            [`key_${team}`, team],
          );
          await db.query(
            "INSERT INTO templates (id, team_id, name, kind) VALUES ($1, $2, 'base', 'base')",
            [`tpl_${team}`, team],
          );
          await db.query(
            `INSERT INTO sandboxes (id, team_id, template_id, template, vcpus, memory_mb, disk_size_mb, timeout_sec)
             VALUES ($1, $2, $3, 'base', 1, 512, 1024, 300)`,
            [`sbx${team}`, team, `tpl_${team}`],
          );
          await db.query(
            "INSERT INTO sandbox_metric_points (sandbox_id, tier, ts, cpu_pct, mem_bytes, disk_bytes) VALUES ($1, '10m', now(), 1, 2, 3)",
            [`sbx${team}`],
          );
          await db.query(
            "INSERT INTO audit_events (team_id, actor_type, action, resource_type) VALUES ($1, 'system', 'a', 'r')",
            [team],
          );
        }
        await db.query("DELETE FROM teams WHERE id = 'team_1'");
        for (const table of ["memberships", "api_keys", "templates", "sandboxes", "audit_events"]) {
          const rows = await db.query<{ team_id: string }>(`SELECT team_id FROM ${table}`);
          assert.deepEqual(
            rows.map((r) => r.team_id),
            ["team_2"],
            table,
          );
        }
        const points = await db.query<{ sandbox_id: string }>(
          "SELECT sandbox_id FROM sandbox_metric_points",
        );
        assert.deepEqual(
          points.map((p) => p.sandbox_id),
          ["sbxteam_2"],
        );
        const users = await db.query<{ id: string }>("SELECT id FROM users ORDER BY id");
        assert.deepEqual(
          users.map((u) => u.id),
          ["usr_1", "usr_2"],
        );
      });
    });

    describe("nestbox migrate", () => {
      it("applies the migrations, then says the schema is up to date", async () => {
        const t = await fresh({ migrated: false });
        const argv = (): string[] =>
          kindArgs(kind, t).concat(kind === "pglite" ? [] : ["--data-dir", "/nonexistent"]);
        // PGlite: the directory may be open in one process only, so let migrate open it.
        if (kind === "pglite") await t.db.close();
        const a = captured();
        assert.equal(await runMigrate(argv(), {}, a.io), 0, a.out.stderr);
        assert.equal(a.out.stdout, ALL.map((v) => `applied migration ${v}\n`).join(""));
        const b = captured();
        assert.equal(await runMigrate(argv(), {}, b.io), 0, b.out.stderr);
        assert.equal(b.out.stdout, "schema up to date\n");
        if (kind === "pglite") {
          const reopened = await openDb({ dataDir: t.dataDir as string });
          try {
            const rows = await reopened.query("SELECT version FROM schema_migrations");
            assert.deepEqual(
              rows,
              ALL.map((version) => ({ version })),
            );
          } finally {
            await reopened.close();
          }
        }
      });
    });
  });
}

function kindArgs(kind: DbKind, t: TestDb): string[] {
  return kind === "pglite"
    ? ["--data-dir", t.dataDir as string]
    : ["--database-url", t.url as string];
}

describe("nestbox migrate (usage and PGlite sharing)", () => {
  it("prints help, and exits 2 on unknown or empty flags", async () => {
    const h = captured();
    assert.equal(await runMigrate(["--help"], {}, h.io), 0);
    assert.match(h.out.stdout, /Usage: nestbox migrate/);
    const u = captured();
    assert.equal(await runMigrate(["--bogus"], {}, u.io), 2);
    assert.match(u.out.stderr, /bogus/);
    const p = captured();
    assert.equal(await runMigrate(["extra"], {}, p.io), 2);
    const e = captured();
    assert.equal(await runMigrate(["--database-url", ""], {}, e.io), 2);
  });

  it("reports a bad database URL as a failure, not a usage error", async () => {
    const c = captured();
    assert.equal(await runMigrate(["--database-url", "mysql://x"], {}, c.io), 1);
    assert.match(c.out.stderr, /postgres:\/\//);
  });

  it("refuses a PGlite directory that another process has open, and takes over a dead one's", async () => {
    const t = await openTestDb("pglite");
    const dataDir = t.dataDir as string;
    await t.db.close();
    const holder = spawn(
      process.execPath,
      [
        "--import",
        "tsx",
        "--input-type=module",
        "-e",
        `import { openDb } from ${JSON.stringify(openModule)};
         await openDb({ dataDir: ${JSON.stringify(dataDir)} });
         process.stdout.write("open\\n");
         setInterval(() => {}, 1000);`,
      ],
      { stdio: ["ignore", "pipe", "inherit"] },
    );
    try {
      await once(holder.stdout, "data");
      const c = captured();
      assert.equal(await runMigrate(["--data-dir", dataDir], {}, c.io), 1);
      assert.match(c.out.stderr, new RegExp(`already open in process ${holder.pid}`));
      assert.match(c.out.stderr, /stop the Nestbox server/);
    } finally {
      holder.kill("SIGKILL");
      await once(holder, "exit");
    }
    // The holder died without closing: its lock file is stale and taken over.
    assert.ok(existsSync(path.join(dataDir, "db.lock")));
    const c = captured();
    assert.equal(await runMigrate(["--data-dir", dataDir], {}, c.io), 0, c.out.stderr);
    assert.equal(c.out.stdout, "schema up to date\n");
    assert.ok(!existsSync(path.join(dataDir, "db.lock")), "closing removes the lock file");
    await t.close();
  });

  it("names the postgresql package when the server binaries are missing", () => {
    assert.throws(
      () => findPgBin(path.join(tmpdir(), "no-such-postgresql")),
      /package 'postgresql'/,
    );
  });

  it("refuses a second open of a PGlite directory in the same process", async () => {
    const t = await openTestDb("pglite");
    try {
      const c = captured();
      assert.equal(await runMigrate([], { NESTBOX_DIR: t.dataDir }, c.io), 1);
      assert.match(c.out.stderr, /already open in this process.*stop the Nestbox server/);
      await assert.rejects(openDb({ dataDir: t.dataDir as string }), DbInUseError);
      // The server's handle is unaffected.
      assert.deepEqual(await t.db.query("SELECT count(*) AS n FROM users"), [{ n: 0 }]);
    } finally {
      await t.close();
    }
  });
});
