import { AsyncLocalStorage } from "node:async_hooks";
import { linkSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { PGlite, type Transaction, types } from "@electric-sql/pglite";
import { CHANNEL_RE, type Db, type Queryable } from "./db.js";

/**
 * Embedded PostgreSQL (PGlite, WebAssembly) in one directory. PGlite is a single session inside
 * this process, so:
 * - every query waits for a transaction in progress to finish (PGlite's own mutex), which means a
 *   transaction blocks the whole control plane while it runs: keep transactions short and never
 *   call a host agent inside one;
 * - calling `db.query`/`db.transaction` from inside a transaction callback would wait for itself
 *   forever, so it throws instead (use the `tx` handle); the PostgreSQL implementation throws too,
 *   so the bug shows up whichever database the tests use;
 * - advisory locks are per session and re-entrant in PostgreSQL, so with one session they would
 *   exclude nothing: `tryWithAdvisoryLock` keeps the held keys in memory instead;
 * - only one process may open the directory (two would corrupt it; PGlite does not notice), which
 *   a lock file next to the directory enforces: see {@link DbInUseError}.
 */

/** Values PGlite would return as bigint or string, made JS numbers as the Db contract says. */
const PARSERS = {
  [types.INT8]: (v: string) => Number(v),
  [types.NUMERIC]: (v: string) => Number(v),
};

/** The data directory is already open in a live process (another server, or `migrate`). */
export class DbInUseError extends Error {
  override name = "DbInUseError";
}

interface LockOwner {
  pid: number;
  /** Process start time (clock ticks since boot, /proc/<pid>/stat field 22): guards pid reuse. */
  startTime: string | null;
  argv: string;
}

function processStartTime(pid: number): string | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    // Field 2 (comm) may contain spaces and parentheses: count fields after its closing ")".
    const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return rest[19] ?? null;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return null;
    throw new Error(`reading the start time of process ${pid}: ${(err as Error).message}`);
  }
}

function isAlive(owner: LockOwner): boolean {
  try {
    process.kill(owner.pid, 0);
  } catch (err) {
    // EPERM: the process exists but belongs to another user.
    if ((err as NodeJS.ErrnoException).code !== "EPERM") return false;
  }
  return owner.startTime === null || processStartTime(owner.pid) === owner.startTime;
}

/**
 * Takes `${dir}.lock` for this process, or throws DbInUseError naming the live holder. A lock
 * left by a dead process (crash, SIGKILL) is taken over.
 */
function acquireDirLock(dir: string): () => void {
  const file = `${dir}.lock`;
  const me: LockOwner = {
    pid: process.pid,
    startTime: processStartTime(process.pid),
    argv: process.argv.slice(1).join(" ").slice(0, 300),
  };
  // Written aside, then hard-linked into place: the link either fails (taken) or appears with
  // its whole content, so a reader never mistakes a half-written lock for a stale one.
  const draft = `${file}.${process.pid}.${Date.now()}`;
  writeFileSync(draft, `${JSON.stringify(me)}\n`, { mode: 0o600 });
  try {
    for (let attempt = 0; attempt < 3; attempt++) {
      try {
        linkSync(draft, file);
        let released = false;
        return () => {
          if (released) return;
          released = true;
          rmSync(file, { force: true });
        };
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== "EEXIST") {
          throw new Error(`creating the database lock file ${file}: ${(err as Error).message}`);
        }
      }
      const owner = readLockOwner(file);
      if (owner && isAlive(owner)) {
        const who = owner.pid === process.pid ? "this process" : `process ${owner.pid}`;
        throw new DbInUseError(
          `the embedded database ${dir} is already open in ${who} (${owner.argv}); PGlite allows one process at a time: stop the Nestbox server before running 'nestbox migrate' on the same data directory, or use PostgreSQL (DATABASE_URL) to run several processes`,
        );
      }
      rmSync(file, { force: true });
    }
  } finally {
    rmSync(draft, { force: true });
  }
  throw new DbInUseError(
    `could not take the database lock file ${file}: other processes race for it`,
  );
}

/** The lock's owner; undefined when the file vanished or is not ours to read (then stale). */
function readLockOwner(file: string): LockOwner | undefined {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw new Error(`reading the database lock file ${file}: ${(err as Error).message}`);
  }
  try {
    const owner = JSON.parse(text) as LockOwner;
    return typeof owner.pid === "number" ? owner : undefined;
  } catch (err) {
    throw new Error(
      `the database lock file ${file} is corrupt (${(err as Error).message}); remove it if no Nestbox process uses this data directory`,
    );
  }
}

interface TxState {
  open: boolean;
}

function rowsOf<T>(results: { rows: unknown[] }[]): T[] {
  return (results.at(-1)?.rows ?? []) as T[];
}

type Runner = Pick<Transaction, "query" | "exec">;

/**
 * Parameterless SQL goes through the simple protocol so a migration file with several statements
 * runs as one call (as `pg` does); the rows of the last statement are returned.
 */
async function run<T>(target: Runner, sql: string, params?: readonly unknown[]): Promise<T[]> {
  if (!params || params.length === 0) return rowsOf<T>(await target.exec(sql));
  const result = await target.query<T>(sql, [...params]);
  return result.rows;
}

export async function openPglite(dir: string): Promise<Db> {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const release = acquireDirLock(dir);
  let pg: PGlite;
  try {
    pg = await PGlite.create(dir, { parsers: PARSERS });
  } catch (err) {
    release();
    throw new Error(`opening the embedded database in ${dir}: ${(err as Error).message}`, {
      cause: err,
    });
  }
  const txContext = new AsyncLocalStorage<TxState>();
  const heldLocks = new Set<number>();

  const refuseInsideTransaction = (what: string) => {
    if (txContext.getStore()?.open) {
      throw new Error(
        `db.${what} called inside db.transaction(): use the transaction's own handle (on PGlite this would wait for itself forever)`,
      );
    }
  };

  let closing: Promise<void> | undefined;
  const db: Db = {
    kind: "pglite",
    async query<T extends object>(sql: string, params?: readonly unknown[]) {
      refuseInsideTransaction("query");
      return run<T>(pg, sql, params);
    },
    async transaction<T>(fn: (tx: Queryable) => Promise<T>): Promise<T> {
      refuseInsideTransaction("transaction");
      return pg.transaction(async (raw) => {
        const state: TxState = { open: true };
        const tx: Queryable = {
          async query<R extends object>(sql: string, params?: readonly unknown[]) {
            if (!state.open) throw new Error("transaction is closed: query after it committed");
            return run<R>(raw, sql, params);
          },
        };
        try {
          return await txContext.run(state, () => fn(tx));
        } finally {
          state.open = false;
        }
      });
    },
    async tryWithAdvisoryLock<T>(key: number, fn: () => Promise<T>) {
      refuseInsideTransaction("tryWithAdvisoryLock");
      if (!Number.isSafeInteger(key))
        throw new Error(`advisory lock key must be an integer: ${key}`);
      if (heldLocks.has(key)) return { ran: false } as const;
      heldLocks.add(key);
      try {
        return { ran: true, value: await fn() } as const;
      } finally {
        heldLocks.delete(key);
      }
    },
    // In-process: no connection can drop between NOTIFY and us, so there is never a gap.
    async listen(channel, onPayload) {
      if (!CHANNEL_RE.test(channel)) throw new Error(`not a channel name: ${channel}`);
      // One session: NOTIFYs of our own transactions arrive with their COMMIT's response.
      const unlisten = await pg.listen(channel, onPayload);
      return () => unlisten();
    },
    close() {
      closing ??= (async () => {
        try {
          await pg.close();
        } finally {
          release();
        }
      })();
      return closing;
    },
  };
  return db;
}
