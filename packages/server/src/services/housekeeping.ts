import type { Db } from "../db/db.js";
import { pruneRunningPeriods } from "../db/queries/usage.js";
import { pruneUserSessions } from "../db/queries/user-sessions.js";

/** Any number shared by all control planes: only the holder of this lock runs housekeeping. */
const HOUSEKEEPING_LOCK = 0x6e62_0003;
/** Pruning only removes what nobody can see any more: once an hour is plenty. */
export const HOUSEKEEPING_INTERVAL_MS = 60 * 60_000;
/** Stored metric points (copied from agents at pause and destroy) are kept this long. */
export const METRIC_POINTS_KEEP_DAYS = 30;

export interface HousekeepingReport {
  sessions: number;
  runningPeriods: number;
  metricPoints: number;
}

/**
 * Deletes what has outlived its use: ended browser sessions (a day after they stopped counting),
 * running periods older than the 24-hour usage chart, and metric points older than 30 days. One
 * control plane at a time (advisory lock), a minute after start and then hourly.
 */
export class Housekeeping {
  private timer: NodeJS.Timeout | undefined;
  private first: NodeJS.Timeout | undefined;
  private running: Promise<unknown> | undefined;

  constructor(
    private readonly db: Db,
    private readonly log: (line: string) => void = (l) => console.log(l),
  ) {}

  start(intervalMs = HOUSEKEEPING_INTERVAL_MS, firstAfterMs = 60_000): void {
    const tick = () => {
      if (this.running) return;
      this.running = this.runOnce()
        .catch((err: unknown) => this.log(`[housekeeping] pass failed: ${String(err)}`))
        .finally(() => {
          this.running = undefined;
        });
    };
    this.first = setTimeout(tick, Math.min(firstAfterMs, intervalMs));
    this.first.unref();
    this.timer = setInterval(tick, intervalMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    clearTimeout(this.first);
    clearInterval(this.timer);
    await this.running;
  }

  /** One pass, or undefined when another control plane holds the job's lock. */
  async runOnce(): Promise<HousekeepingReport | undefined> {
    const r = await this.db.tryWithAdvisoryLock(HOUSEKEEPING_LOCK, async () => {
      const sessions = (await pruneUserSessions(this.db)).length;
      const runningPeriods = (await pruneRunningPeriods(this.db)).length;
      const metricPoints = (
        await this.db.query(
          `DELETE FROM sandbox_metric_points
           WHERE ts < now() - make_interval(days => $1::integer) RETURNING 1`,
          [METRIC_POINTS_KEEP_DAYS],
        )
      ).length;
      return { sessions, runningPeriods, metricPoints };
    });
    if (!r.ran) return undefined;
    const { sessions, runningPeriods, metricPoints } = r.value;
    if (sessions + runningPeriods + metricPoints > 0)
      this.log(
        `[housekeeping] pruned ${sessions} sessions, ${runningPeriods} running periods, ${metricPoints} metric points`,
      );
    return r.value;
  }
}
