/**
 * The one database interface the control plane uses. Two implementations (embedded PGlite and
 * PostgreSQL through `pg`) behave the same for everything the query layer does: the shared test
 * suite runs against both.
 *
 * Column values come back normalised: int8/bigint and numeric as JS numbers, timestamptz as Date,
 * json/jsonb parsed.
 */
export interface Queryable {
  query<T extends object = Record<string, unknown>>(
    sql: string,
    params?: readonly unknown[],
  ): Promise<T[]>;
}

export interface Db extends Queryable {
  readonly kind: "pglite" | "postgres";
  /** Runs fn in one transaction; it is rolled back when fn throws. */
  transaction<T>(fn: (tx: Queryable) => Promise<T>): Promise<T>;
  /**
   * Runs fn while holding the session-level advisory lock `key`, or returns `{ ran: false }`
   * without running it when another session holds it (periodic jobs of several control planes).
   */
  tryWithAdvisoryLock<T>(
    key: number,
    fn: () => Promise<T>,
  ): Promise<{ ran: true; value: T } | { ran: false }>;
  /**
   * Calls `onPayload` with the payload of every `NOTIFY channel` (pg_notify) committed by any
   * session, this one included; resolves once listening. The returned function stops it.
   * `onGap` runs when notifications may have been missed (the listening connection dropped
   * and came back): a subscriber that mirrors state must re-read it.
   */
  listen(
    channel: string,
    onPayload: (payload: string) => void,
    onGap?: () => void,
  ): Promise<() => Promise<void>>;
  close(): Promise<void>;
}

/** Channel names are SQL identifiers here (LISTEN takes no parameters). */
export const CHANNEL_RE = /^[a-z_][a-z0-9_]{0,62}$/;

/** The first row, or undefined. */
export async function first<T extends object>(
  db: Queryable,
  sql: string,
  params?: readonly unknown[],
): Promise<T | undefined> {
  const rows = await db.query<T>(sql, params);
  return rows[0];
}
