import type { Db, Queryable } from "./db.js";

/**
 * A Db that reports how long each query and each whole transaction took, for instrumentation
 * (`startServer({ observeDb })`, used by the benchmarks to split a request's time). It is a
 * decorator, so the query layer and both database implementations stay unaware of it.
 */

export interface DbObservation {
  /** A statement outside a transaction, or one whole transaction (its statements included). */
  op: "query" | "transaction";
  ms: number;
  ok: boolean;
}

export type DbObserver = (o: DbObservation) => void;

export function observedDb(inner: Db, observe: DbObserver): Db {
  const timed = async <T>(op: DbObservation["op"], fn: () => Promise<T>): Promise<T> => {
    const t0 = process.hrtime.bigint();
    let ok = false;
    try {
      const value = await fn();
      ok = true;
      return value;
    } finally {
      observe({ op, ms: Number(process.hrtime.bigint() - t0) / 1e6, ok });
    }
  };
  return {
    get kind() {
      return inner.kind;
    },
    query: <T extends object = Record<string, unknown>>(sql: string, params?: readonly unknown[]) =>
      timed("query", () => inner.query<T>(sql, params)),
    transaction: <T>(fn: (tx: Queryable) => Promise<T>) =>
      timed("transaction", () => inner.transaction(fn)),
    tryWithAdvisoryLock: (key, fn) => inner.tryWithAdvisoryLock(key, fn),
    listen: (channel, onPayload, onGap) => inner.listen(channel, onPayload, onGap),
    close: () => inner.close(),
  };
}
