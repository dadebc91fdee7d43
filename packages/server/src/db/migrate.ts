import { readdirSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import type { Db } from "./db.js";

/**
 * Schema migrations: `packages/server/migrations/NNNN_name.sql`, applied in order, each in its
 * own transaction together with its `schema_migrations` row, so a failed migration leaves no
 * trace and the next run retries it.
 */

/** `../../migrations` from both src/db (tsx) and dist/db (built). */
export const MIGRATIONS_DIR = fileURLToPath(new URL("../../migrations/", import.meta.url));

/** Advisory lock key that serialises migrations across processes ("nbx" + 1). */
export const MIGRATION_LOCK_KEY = 0x6e_62_78_01;

const FILE_RE = /^(\d{4})_([a-z0-9_]+)\.sql$/;

export interface Migration {
  /** File name without `.sql`, e.g. `0001_init`: what `schema_migrations.version` holds. */
  version: string;
  sql: string;
}

/** The migrations shipped with this code, in order; a malformed file name is an error. */
export function loadMigrations(dir: string = MIGRATIONS_DIR): Migration[] {
  let names: string[];
  try {
    names = readdirSync(dir).filter((n) => n.endsWith(".sql"));
  } catch (err) {
    throw new Error(`reading the migrations folder ${dir}: ${(err as Error).message}`);
  }
  const byNumber = new Map<string, string>();
  for (const name of names) {
    const m = FILE_RE.exec(name);
    if (!m?.[1]) {
      throw new Error(`migration file ${name} in ${dir} is not named NNNN_lowercase_name.sql`);
    }
    const other = byNumber.get(m[1]);
    if (other) throw new Error(`migrations ${other} and ${name} share the number ${m[1]}`);
    byNumber.set(m[1], name);
  }
  return [...byNumber.keys()].sort().map((num) => {
    const name = byNumber.get(num) as string;
    return { version: name.slice(0, -4), sql: readFileSync(`${dir}/${name}`, "utf8") };
  });
}

export interface MigrateOptions {
  log?: (line: string) => void;
  /** Give up waiting for another process's migration after this long (default 5 minutes). */
  lockTimeoutMs?: number;
  /** Override the migrations (tests). */
  migrations?: Migration[];
}

/**
 * Brings the schema up to date. Refuses a database that has migrations this code does not know
 * (it was migrated by a newer Nestbox: running older code against it could corrupt data).
 */
export async function migrate(
  db: Db,
  log: ((line: string) => void) | MigrateOptions = {},
): Promise<{ applied: string[] }> {
  const opts: MigrateOptions = typeof log === "function" ? { log } : log;
  const say = opts.log ?? (() => {});
  const migrations = opts.migrations ?? loadMigrations();
  const deadline = Date.now() + (opts.lockTimeoutMs ?? 5 * 60_000);
  let waited = false;
  for (;;) {
    const attempt = await db.tryWithAdvisoryLock(MIGRATION_LOCK_KEY, () =>
      applyPending(db, migrations, say),
    );
    if (attempt.ran) return attempt.value;
    if (Date.now() > deadline) {
      throw new Error(
        "timed out waiting for another process to finish migrating the database (advisory lock held)",
      );
    }
    if (!waited) say("waiting for another process that is migrating the database…");
    waited = true;
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}

async function applyPending(
  db: Db,
  migrations: Migration[],
  say: (line: string) => void,
): Promise<{ applied: string[] }> {
  await db.query(
    `CREATE TABLE IF NOT EXISTS schema_migrations (
       version    text PRIMARY KEY,
       applied_at timestamptz NOT NULL DEFAULT now()
     )`,
  );
  const done = new Set(
    (await db.query<{ version: string }>("SELECT version FROM schema_migrations")).map(
      (r) => r.version,
    ),
  );
  const known = new Set(migrations.map((m) => m.version));
  const unknown = [...done].filter((v) => !known.has(v)).sort();
  if (unknown.length > 0) {
    throw new Error(
      `the database schema is newer than this version of Nestbox: it has migration(s) ${unknown.join(", ")} that this code does not know; run a Nestbox version at least as new as the one that migrated it`,
    );
  }
  const applied: string[] = [];
  for (const m of migrations) {
    if (done.has(m.version)) continue;
    try {
      await db.transaction(async (tx) => {
        await tx.query(m.sql);
        await tx.query("INSERT INTO schema_migrations (version) VALUES ($1)", [m.version]);
      });
    } catch (err) {
      throw new Error(`migration ${m.version} failed (rolled back): ${(err as Error).message}`, {
        cause: err,
      });
    }
    say(`applied migration ${m.version}`);
    applied.push(m.version);
  }
  return { applied };
}
