import { first, type Queryable } from "../db.js";

export interface TeamUsageNow {
  running: number;
  paused: number;
  vcpus_reserved: number;
  memory_mb_reserved: number;
}

/** Live counts; paused sandboxes hold no CPU or memory, so only running ones reserve them. */
export async function teamUsageNow(db: Queryable, teamId: string): Promise<TeamUsageNow> {
  const row = await first<TeamUsageNow>(
    db,
    `SELECT count(*) FILTER (WHERE status = 'running')::int AS running,
            count(*) FILTER (WHERE status = 'paused')::int AS paused,
            COALESCE(sum(vcpus) FILTER (WHERE status = 'running'), 0)::int AS vcpus_reserved,
            COALESCE(sum(memory_mb) FILTER (WHERE status = 'running'), 0)::int AS memory_mb_reserved
     FROM sandboxes WHERE team_id = $1 AND status IN ('running', 'paused')`,
    [teamId],
  );
  return row ?? { running: 0, paused: 0, vcpus_reserved: 0, memory_mb_reserved: 0 };
}

export interface UsageBucket {
  t: Date;
  running: number;
}

/**
 * Sandboxes that were running at any moment of each `bucketMin`-minute bucket of the last
 * `hours` hours (buckets aligned to the clock, oldest first, the current one last).
 */
export const runningSeries = (db: Queryable, teamId: string, hours: number, bucketMin: number) =>
  db.query<UsageBucket>(
    `WITH b AS (
       SELECT generate_series(
         date_bin(make_interval(mins => $3::integer), now() - make_interval(hours => $2::integer),
                  timestamptz '2000-01-01'),
         now(), make_interval(mins => $3::integer)) AS t)
     SELECT b.t, count(p.sandbox_id)::int AS running
     FROM b LEFT JOIN sandbox_running_periods p
       ON p.team_id = $1 AND p.started_at < b.t + make_interval(mins => $3::integer)
      AND (p.ended_at IS NULL OR p.ended_at >= b.t)
     GROUP BY b.t ORDER BY b.t`,
    [teamId, hours, bucketMin],
  );

/** History no chart can show any more. */
export const pruneRunningPeriods = (db: Queryable) =>
  db.query(
    "DELETE FROM sandbox_running_periods WHERE ended_at < now() - interval '25 hours' RETURNING 1",
  );
