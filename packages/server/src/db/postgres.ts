import { AsyncLocalStorage } from "node:async_hooks";
import pg from "pg";
import type { Db, Queryable } from "./db.js";
import { PgListener } from "./pg-listener.js";

/**
 * PostgreSQL through a `pg` Pool. Behaves like the PGlite implementation for everything the query
 * layer does (same value normalisation, same parameter handling, same refusal of `db.*` calls
 * inside a transaction callback), so the shared tests cover both.
 */

const INT8 = 20;
const NUMERIC = 1700;

/**
 * Per-pool type parsers (not pg's process-wide `types.setTypeParser`, which would change every
 * other pg user in the process). timestamptz → Date and json/jsonb → parsed are pg's defaults.
 */
const TYPES = {
  getTypeParser(oid: number, format?: "text" | "binary") {
    if (format !== "binary" && (oid === INT8 || oid === NUMERIC)) return (v: string) => Number(v);
    return format === "binary"
      ? pg.types.getTypeParser(oid, "binary")
      : pg.types.getTypeParser(oid);
  },
};

/**
 * Dates and bigints are sent as PGlite sends them (ISO 8601 UTC, decimal) instead of pg's local
 * time spelling, so a value stored into a text column reads back the same on both.
 */
function prepareParams(params: readonly unknown[]): unknown[] {
  return params.map((p) => {
    if (p instanceof Date) return p.toISOString();
    if (typeof p === "bigint") return p.toString();
    return p;
  });
}

type Client = Pick<pg.PoolClient, "query">;

async function run<T>(client: Client, sql: string, params?: readonly unknown[]): Promise<T[]> {
  // Without parameters pg uses the simple protocol, where several statements are allowed (a
  // migration file) and pg returns one result per statement: keep the last, as PGlite's does.
  const result = (await client.query(sql, params?.length ? prepareParams(params) : undefined)) as
    | pg.QueryResult
    | pg.QueryResult[];
  const last = Array.isArray(result) ? result.at(-1) : result;
  return (last?.rows ?? []) as T[];
}

/** `postgres://user:***@host/db`: a URL fit for logs and error messages. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = "***";
    return u.toString();
  } catch {
    return "(unparseable database URL)";
  }
}

interface TxState {
  open: boolean;
}

export interface PostgresOptions {
  /** Where errors of idle pooled connections go (they would otherwise crash the process). */
  log?: (line: string) => void;
  /** Pool size (default 10). Each running transaction and held advisory lock takes one. */
  maxConnections?: number;
}

export async function openPostgres(url: string, opts: PostgresOptions = {}): Promise<Db> {
  const log = opts.log ?? ((line: string) => process.stderr.write(`${line}\n`));
  const where = redactUrl(url);
  const pool = new pg.Pool({
    connectionString: url,
    max: opts.maxConnections ?? 10,
    types: TYPES,
    connectionTimeoutMillis: 10_000,
  });
  pool.on("error", (err) => log(`database ${where}: idle connection failed: ${err.message}`));
  // pool.end() resolves before the sockets close; close() waits for them so that the server
  // really has no session of ours left (a test dropping its database right after, a clean exit).
  const live = new Set<pg.PoolClient>();
  pool.on("connect", (c) => {
    live.add(c);
    c.once("end", () => live.delete(c));
  });
  try {
    await pool.query("SELECT 1");
  } catch (err) {
    await pool.end().catch((endErr: Error) => log(`closing pool of ${where}: ${endErr.message}`));
    throw new Error(`connecting to PostgreSQL at ${where}: ${(err as Error).message}`, {
      cause: err,
    });
  }

  const txContext = new AsyncLocalStorage<TxState>();
  const refuseInsideTransaction = (what: string) => {
    // On PostgreSQL this would run on another connection, outside the transaction; on PGlite it
    // would deadlock. Either way it is a bug, so fail here where the tests see it.
    if (txContext.getStore()?.open) {
      throw new Error(
        `db.${what} called inside db.transaction(): use the transaction's own handle (on PGlite this would wait for itself forever)`,
      );
    }
  };

  /** Gives a client back, destroying it when its session state is unknown (failed cleanup). */
  const giveBack = (client: pg.PoolClient, broken?: unknown) => {
    client.release(
      broken instanceof Error ? broken : broken ? new Error(String(broken)) : undefined,
    );
  };

  const listener = new PgListener({ connectionString: url, types: TYPES }, log, where);
  let closing: Promise<void> | undefined;
  return {
    kind: "postgres",
    listen: (channel, onPayload, onGap) => listener.listen(channel, onPayload, onGap),
    async query<T extends object>(sql: string, params?: readonly unknown[]) {
      refuseInsideTransaction("query");
      return run<T>(pool, sql, params);
    },
    async transaction<T>(fn: (tx: Queryable) => Promise<T>): Promise<T> {
      refuseInsideTransaction("transaction");
      const client = await pool.connect();
      try {
        await client.query("BEGIN");
      } catch (err) {
        giveBack(client, err);
        throw err;
      }
      const state: TxState = { open: true };
      const tx: Queryable = {
        async query<R extends object>(sql: string, params?: readonly unknown[]) {
          if (!state.open) throw new Error("transaction is closed: query after it committed");
          return run<R>(client, sql, params);
        },
      };
      let value: T;
      try {
        value = await txContext.run(state, () => fn(tx));
        state.open = false;
        await client.query("COMMIT");
      } catch (err) {
        state.open = false;
        try {
          await client.query("ROLLBACK");
          giveBack(client);
        } catch (rollbackErr) {
          log(`database ${where}: rollback failed: ${(rollbackErr as Error).message}`);
          giveBack(client, rollbackErr);
        }
        throw err;
      }
      giveBack(client);
      return value;
    },
    async tryWithAdvisoryLock<T>(key: number, fn: () => Promise<T>) {
      refuseInsideTransaction("tryWithAdvisoryLock");
      if (!Number.isSafeInteger(key))
        throw new Error(`advisory lock key must be an integer: ${key}`);
      // A session-level lock belongs to one connection: hold that connection for the whole of fn.
      const client = await pool.connect();
      let acquired: boolean;
      try {
        const rows = await run<{ ok: boolean }>(client, "SELECT pg_try_advisory_lock($1) AS ok", [
          key,
        ]);
        acquired = rows[0]?.ok === true;
      } catch (err) {
        giveBack(client, err);
        throw err;
      }
      if (!acquired) {
        giveBack(client);
        return { ran: false } as const;
      }
      try {
        return { ran: true, value: await fn() } as const;
      } finally {
        try {
          await client.query("SELECT pg_advisory_unlock($1)", [key]);
          giveBack(client);
        } catch (err) {
          // Destroying the connection ends its session, which releases the lock too.
          log(`database ${where}: advisory unlock of ${key} failed: ${(err as Error).message}`);
          giveBack(client, err);
        }
      }
    },
    close() {
      closing ??= (async () => {
        const ended = [...live].map((c) => new Promise((resolve) => c.once("end", resolve)));
        await listener.close();
        await pool.end();
        await Promise.all(ended);
      })();
      return closing;
    },
  };
}
