/**
 * Fresh databases for server tests, of both kinds the control plane supports:
 * - "pglite": a new PGlite data directory per call (copied from a template made once per process);
 * - "postgres": a new database per call on ONE throwaway PostgreSQL cluster per test process,
 *   started from Debian's binaries in a temp dir on a free localhost port (trust auth), stopped
 *   and deleted when the process exits, even when it is killed (a watchdog process does it).
 *   `NESTBOX_TEST_DATABASE_URL` (an admin URL of an existing server) replaces the cluster.
 */
import { execFile, spawn } from "node:child_process";
import {
  chmodSync,
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
} from "node:fs";
import { createServer } from "node:net";
import { tmpdir, userInfo } from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import pg from "pg";
import type { Db } from "../../../packages/server/src/db/db.js";
import { migrate } from "../../../packages/server/src/db/migrate.js";
import { openDb } from "../../../packages/server/src/db/open.js";

export const DB_KINDS = ["pglite", "postgres"] as const;
export type DbKind = (typeof DB_KINDS)[number];

export interface TestDb {
  db: Db;
  /** The database's URL ("postgres" only). */
  url?: string;
  /** The Nestbox data directory whose `db/` is the database ("pglite" only). */
  dataDir?: string;
  /** Closes the database and deletes it. */
  close(): Promise<void>;
}

export interface OpenTestDbOptions {
  /** Apply the migrations (default true); false gives a database with no tables at all. */
  migrated?: boolean;
}

const run = promisify(execFile);

/** A fresh, empty database of `kind`, migrated unless `migrated: false`. */
export async function openTestDb(kind: DbKind, opts: OpenTestDbOptions = {}): Promise<TestDb> {
  const migrated = opts.migrated !== false;
  const t = kind === "pglite" ? await newPglite(migrated) : await newPostgres();
  // Also on a copy of the migrated PGlite template: the check that nothing is pending is cheap.
  if (migrated) {
    try {
      await migrate(t.db);
    } catch (err) {
      await t.close();
      throw err;
    }
  }
  return t;
}

// ---------------------------------------------------------------------------------------------
// Everything this process creates lives under one temp directory, removed at exit.

let scratch: { root: string; postmasterData?: string } | undefined;

/**
 * The process's scratch directory. A watchdog stops the test cluster and deletes the directory
 * once this process is gone however it ended (SIGKILL included, when no exit handler runs); the
 * exit handler does the same at once on a normal exit, a failed test, or SIGINT/SIGTERM.
 */
function scratchRoot(): string {
  if (scratch) return scratch.root;
  const root = mkdtempSync(path.join(tmpdir(), "nestbox-test-db-"));
  // The cluster's own user must be able to reach root/pg (but not list the rest).
  chmodSync(root, 0o711);
  scratch = { root };
  spawn("bash", ["-c", WATCHDOG, "db-fixture-watchdog", String(process.pid), root], {
    detached: true,
    stdio: "ignore",
  }).unref();
  process.once("exit", cleanupScratch);
  for (const sig of ["SIGINT", "SIGTERM"] as const) {
    process.once(sig, () => {
      cleanupScratch();
      // Default disposition again, so the signal ends the process as it would have.
      process.kill(process.pid, sig);
    });
  }
  return root;
}

function cleanupScratch(): void {
  if (!scratch) return;
  const { root, postmasterData } = scratch;
  scratch = undefined;
  try {
    if (postmasterData) stopPostmasterSync(postmasterData);
    rmSync(root, { recursive: true, force: true });
  } catch (err) {
    process.stderr.write(`db-fixture: cleaning up ${root}: ${(err as Error).message}\n`);
  }
}

/** Polls once a second for the test process; then stops the cluster and deletes the scratch. */
const WATCHDOG = `
pid=$1; root=$2
while kill -0 "$pid" 2>/dev/null; do sleep 1; done
pidfile="$root/pg/data/postmaster.pid"
if [ -f "$pidfile" ]; then
  pm=$(head -n1 "$pidfile")
  [ -n "$pm" ] && kill -QUIT "$pm" 2>/dev/null
  for _ in $(seq 50); do [ -f "$pidfile" ] || break; sleep 0.1; done
fi
rm -rf -- "$root"
`;

// ---------------------------------------------------------------------------------------------
// PGlite

const pgliteTemplates = new Map<boolean, Promise<string>>();

/**
 * A data directory whose `db/` went through PGlite's initdb (and the migrations when `migrated`),
 * made once per process: initdb and migrating take seconds on PGlite, a copy milliseconds.
 */
function pgliteTemplateDir(migrated: boolean): Promise<string> {
  let made = pgliteTemplates.get(migrated);
  if (!made) {
    made = (async () => {
      const source = migrated ? await pgliteTemplateDir(false) : undefined;
      const dir = mkdtempSync(path.join(scratchRoot(), "pglite-template-"));
      if (source) cpSync(source, dir, { recursive: true });
      const db = await openDb({ dataDir: dir });
      try {
        if (migrated) await migrate(db);
      } finally {
        await db.close();
      }
      return dir;
    })();
    pgliteTemplates.set(migrated, made);
  }
  return made;
}

async function newPglite(migrated: boolean): Promise<TestDb> {
  const template = await pgliteTemplateDir(migrated);
  const dataDir = mkdtempSync(path.join(scratchRoot(), "pglite-"));
  const remove = () => rmSync(dataDir, { recursive: true, force: true });
  cpSync(template, dataDir, { recursive: true });
  const db = await openDb({ dataDir });
  return {
    db,
    dataDir,
    async close() {
      await db.close();
      remove();
    },
  };
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL

let server: Promise<string> | undefined;
let dbCounter = 0;

async function newPostgres(): Promise<TestDb> {
  server ??= process.env.NESTBOX_TEST_DATABASE_URL
    ? Promise.resolve(process.env.NESTBOX_TEST_DATABASE_URL)
    : startCluster();
  const adminUrl = await server;
  const name = `nbx_test_${process.pid}_${++dbCounter}_${Math.random().toString(36).slice(2, 8)}`;
  await withAdmin(adminUrl, (c) => c.query(`CREATE DATABASE ${name}`));
  const u = new URL(adminUrl);
  u.pathname = `/${name}`;
  const url = u.toString();
  const drop = () =>
    withAdmin(adminUrl, (c) => c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`));
  let db: Db;
  try {
    db = await openDb({ databaseUrl: url, dataDir: tmpdir() });
  } catch (err) {
    await drop();
    throw err;
  }
  return {
    db,
    url,
    async close() {
      await db.close();
      await drop();
    },
  };
}

async function withAdmin<T>(adminUrl: string, fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: adminUrl });
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}

/** Debian's server binaries, newest major version first. */
export function findPgBin(base = "/usr/lib/postgresql"): string {
  const versions = existsSync(base)
    ? readdirSync(base)
        .filter((v) => /^\d+$/.test(v))
        .sort((a, b) => Number(b) - Number(a))
    : [];
  for (const v of versions) {
    const bin = path.join(base, v, "bin");
    if (existsSync(path.join(bin, "initdb")) && existsSync(path.join(bin, "pg_ctl"))) return bin;
  }
  throw new Error(
    `PostgreSQL server binaries (initdb, pg_ctl) not found under ${base}/<version>/bin: install the Debian package 'postgresql' (apt-get install postgresql, or ./nestbox setup --test), or set NESTBOX_TEST_DATABASE_URL to an admin URL of an existing server`,
  );
}

/** PostgreSQL refuses to run as root: as root, the cluster belongs to the `postgres` user. */
function clusterUser(): { uid: number; gid: number } | undefined {
  if (process.getuid?.() !== 0) return undefined;
  const line = readFileSync("/etc/passwd", "utf8")
    .split("\n")
    .find((l) => l.startsWith("postgres:"));
  const [, , uid, gid] = line?.split(":") ?? [];
  if (!uid || !gid) {
    throw new Error(
      "tests run as root but there is no 'postgres' user to own the test cluster: install the Debian package 'postgresql'",
    );
  }
  return { uid: Number(uid), gid: Number(gid) };
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const addr = srv.address();
      srv.close(() =>
        typeof addr === "object" && addr ? resolve(addr.port) : reject(new Error("no port")),
      );
    });
  });
}

/** Stops the postmaster whose pid file is in `data` (immediate shutdown) and waits for it. */
function stopPostmasterSync(data: string): void {
  const pidFile = path.join(data, "postmaster.pid");
  if (!existsSync(pidFile)) return;
  const pid = Number(readFileSync(pidFile, "utf8").split("\n")[0]);
  if (!Number.isInteger(pid) || pid <= 0) return;
  try {
    process.kill(pid, "SIGQUIT");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ESRCH") return;
    throw err;
  }
  const sleeper = new Int32Array(new SharedArrayBuffer(4));
  for (let i = 0; i < 100; i++) {
    try {
      process.kill(pid, 0);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ESRCH") return;
      throw err;
    }
    Atomics.wait(sleeper, 0, 0, 50);
  }
  process.stderr.write(`db-fixture: postmaster ${pid} did not stop within 5 s\n`);
}

async function startCluster(): Promise<string> {
  const bin = findPgBin();
  const owner = clusterUser();
  const root = path.join(scratchRoot(), "pg");
  mkdirSync(root);
  const data = path.join(root, "data");
  if (scratch) scratch.postmasterData = data;

  const as = { cwd: root, ...(owner ?? {}), env: { PATH: process.env.PATH ?? "", LC_ALL: "C" } };
  const user = owner ? "postgres" : userInfo().username;
  try {
    if (owner) await run("chown", [`${owner.uid}:${owner.gid}`, root]);
    await run(
      path.join(bin, "initdb"),
      ["-D", data, "-U", user, "-A", "trust", "-E", "UTF8", "--no-sync", "--no-instructions"],
      as,
    );
  } catch (err) {
    const e = err as Error & { stderr?: string };
    throw new Error(`initdb of the test cluster failed: ${e.stderr || e.message}`);
  }
  // A free port can be taken between the probe and the server's bind: try a few.
  let lastError = "";
  for (let attempt = 0; attempt < 3; attempt++) {
    const port = await freePort();
    const settings = [
      `-c port=${port}`,
      "-c listen_addresses=127.0.0.1",
      `-c unix_socket_directories=${root}`,
      // Throwaway data: durability buys nothing and costs the shared CPUs time.
      "-c fsync=off",
      "-c synchronous_commit=off",
      "-c full_page_writes=off",
      "-c max_connections=100",
    ].join(" ");
    try {
      await run(
        path.join(bin, "pg_ctl"),
        [
          "-D",
          data,
          "-l",
          path.join(root, "server.log"),
          "-w",
          "-t",
          "60",
          "-o",
          settings,
          "start",
        ],
        as,
      );
      return `postgres://${user}@127.0.0.1:${port}/postgres`;
    } catch (err) {
      const log = existsSync(path.join(root, "server.log"))
        ? readFileSync(path.join(root, "server.log"), "utf8").slice(-2000)
        : "";
      lastError = `${(err as Error).message}\n${log}`;
      stopPostmasterSync(data);
    }
  }
  throw new Error(`starting the test PostgreSQL cluster failed: ${lastError}`);
}
