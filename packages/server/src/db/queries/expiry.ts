import { first, type Queryable } from "../db.js";
import type { SandboxRecord } from "./sandboxes.js";

/**
 * The expiry job's claims (migration 0009): a running sandbox past its end is expired by the
 * one control plane that claimed it. A claim is a lease (`expiry_claimed_until`): it ends when
 * the expiry is done, or is pushed later to space out retries, or lapses when its replica died.
 */

/** Running sandboxes past their end and not claimed, oldest end first (the work list). */
export const dueUnclaimedSandboxes = (db: Queryable, limit: number) =>
  db.query<SandboxRecord>(
    `SELECT * FROM sandboxes
     WHERE status = 'running' AND end_at IS NOT NULL AND end_at <= now()
       AND (expiry_claimed_until IS NULL OR expiry_claimed_until <= now())
     ORDER BY end_at LIMIT $1`,
    [limit],
  );

/**
 * Claims a due sandbox for `leaseMs` (compare-and-set: of two replicas exactly one gets the
 * row back). Undefined: not running, not due any more (its end moved), or claimed by another.
 */
export const claimExpiry = (db: Queryable, id: string, leaseMs: number) =>
  first<SandboxRecord>(
    db,
    `UPDATE sandboxes SET expiry_claimed_until = now() + make_interval(secs => $2::float8 / 1000)
     WHERE id = $1 AND status = 'running' AND end_at IS NOT NULL AND end_at <= now()
       AND (expiry_claimed_until IS NULL OR expiry_claimed_until <= now())
     RETURNING *`,
    [id, leaseMs],
  );

/** Keeps a claim `leaseMs` longer while its expiry is still under way. */
export async function renewExpiry(db: Queryable, id: string, leaseMs: number): Promise<void> {
  await db.query(
    `UPDATE sandboxes SET expiry_claimed_until = now() + make_interval(secs => $2::float8 / 1000)
     WHERE id = $1 AND expiry_claimed_until IS NOT NULL`,
    [id, leaseMs],
  );
}

/** Ends a claim: at once (`retryInMs` 0, the expiry is done) or after a retry delay. */
export async function releaseExpiry(db: Queryable, id: string, retryInMs: number): Promise<void> {
  await db.query(
    `UPDATE sandboxes SET expiry_claimed_until =
       CASE WHEN $2::float8 > 0 THEN now() + make_interval(secs => $2::float8 / 1000) END
     WHERE id = $1`,
    [id, retryInMs],
  );
}
