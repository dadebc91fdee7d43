import { parseArgs } from "node:util";
import { migrate } from "./migrate.js";
import { openDb } from "./open.js";

export const MIGRATE_USAGE = `Usage: nestbox migrate [--data-dir <dir>] [--database-url <url>]

Brings the control plane's database schema up to date and prints each migration it applies
(or "schema up to date"), e.g. before rolling out a new version of several control planes
against one PostgreSQL.

  --data-dir <dir>       Nestbox data directory; the embedded database is <dir>/db
                         (default: $NESTBOX_DIR, else /var/lib/nestbox)
  --database-url <url>   PostgreSQL URL (default: $DATABASE_URL); without one, the embedded
                         PGlite database is used, which must not be open in a running server
  -h, --help             show this help
`;

/**
 * `nestbox migrate`. Returns the exit code: 0 done, 1 failed, 2 bad usage. Writes its own
 * messages (stdout for progress, stderr for errors).
 */
export async function runMigrate(
  argv: string[],
  env: NodeJS.ProcessEnv = process.env,
  out: { stdout: (s: string) => void; stderr: (s: string) => void } = {
    stdout: (s) => process.stdout.write(s),
    stderr: (s) => process.stderr.write(s),
  },
): Promise<number> {
  let values: { "data-dir"?: string; "database-url"?: string; help?: boolean };
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        "data-dir": { type: "string" },
        "database-url": { type: "string" },
        help: { type: "boolean", short: "h" },
      },
      allowPositionals: false,
      strict: true,
    }));
  } catch (err) {
    out.stderr(`nestbox migrate: ${(err as Error).message}\n${MIGRATE_USAGE}`);
    return 2;
  }
  if (values.help) {
    out.stdout(MIGRATE_USAGE);
    return 0;
  }
  const dataDir = values["data-dir"] ?? (env.NESTBOX_DIR || "/var/lib/nestbox");
  const databaseUrl = values["database-url"] ?? (env.DATABASE_URL || undefined);
  if (dataDir === "") {
    out.stderr(`nestbox migrate: --data-dir must not be empty\n${MIGRATE_USAGE}`);
    return 2;
  }
  if (values["database-url"] !== undefined && databaseUrl === "") {
    out.stderr(`nestbox migrate: --database-url must not be empty\n${MIGRATE_USAGE}`);
    return 2;
  }

  let db: Awaited<ReturnType<typeof openDb>>;
  try {
    db = await openDb({
      dataDir,
      ...(databaseUrl ? { databaseUrl } : {}),
      log: (line) => out.stderr(`${line}\n`),
    });
  } catch (err) {
    out.stderr(`nestbox migrate: ${(err as Error).message}\n`);
    return 1;
  }
  try {
    const { applied } = await migrate(db, (line) => out.stdout(`${line}\n`));
    if (applied.length === 0) out.stdout("schema up to date\n");
    return 0;
  } catch (err) {
    out.stderr(`nestbox migrate: ${(err as Error).message}\n`);
    return 1;
  } finally {
    await db
      .close()
      .catch((err: Error) => out.stderr(`nestbox migrate: closing the database: ${err.message}\n`));
  }
}
