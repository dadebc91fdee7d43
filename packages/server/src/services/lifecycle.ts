import type { Db } from "../db/db.js";
import {
  claimExpiry,
  dueUnclaimedSandboxes,
  releaseExpiry,
  renewExpiry,
} from "../db/queries/expiry.js";
import { getSandbox, type SandboxRecord, setSandboxEndAt } from "../db/queries/sandboxes.js";
import { ApiError, invalidState, notFound } from "../errors.js";
import type { SandboxService } from "./sandboxes.js";

/** Any number shared by all control planes: only the holder of this lock runs the expiry job. */
const EXPIRY_LOCK = 0x6e62_0002;
/** The states whose end time a client may move (a `missing` one may come back). */
const RUNNING = ["running", "missing"] as const;
/** How often the expiry job looks for sandboxes whose end has passed (E2B: within ~1 s). */
export const EXPIRY_INTERVAL_MS = 500;
/** A sandbox whose expiry failed (e.g. its host is unreachable) is tried again after this. */
const EXPIRY_RETRY_MS = 10_000;
/**
 * How long a claim keeps other control planes off a sandbox being expired. The claimant renews
 * it while the expiry runs (a pause of a VM writing its memory may take longer), so this is
 * only how long a replica that died mid-expiry holds the sandbox back.
 */
export const EXPIRY_LEASE_MS = 20_000;
/** Sandboxes handled per pass; the rest wait for the next pass, half a second later. */
const EXPIRY_BATCH = 50;

export interface ExpiryReport {
  killed: string[];
  paused: string[];
  failed: string[];
}

/**
 * Absolute end times (e2b-compat §2.4). A sandbox with an `end_at` runs with no idle TTL on its
 * host; when the end passes, the expiry job here kills it or, with `on_timeout = 'pause'`,
 * pauses it. Sandboxes without an end (the /v1 default) live by their host's idle TTL and are
 * never touched by this job.
 */
export class SandboxLifecycle {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<unknown> | undefined;
  /** Expirations under way: a slow pause (a VM writing its memory) never delays the others. */
  private readonly inFlight = new Map<string, Promise<void>>();

  constructor(
    private readonly db: Db,
    private readonly sandboxes: SandboxService,
    private readonly log: (line: string) => void = (l) => console.log(l),
  ) {}

  /**
   * Ends a running sandbox exactly `seconds` from now (this may shorten its life). Not running
   * (paused, stopped, unknown) is "not found", as for E2B, whose older SDKs fall back to resume
   * when this fails.
   */
  async endIn(teamId: string, sandboxId: string, seconds: number): Promise<SandboxRecord> {
    const row = await this.sandboxes.get(teamId, sandboxId);
    if (row.status !== "running" && row.status !== "missing")
      throw notFound(`running sandbox ${sandboxId}`);
    // Compare-and-set: paused or destroyed meanwhile (another request or replica) is not found.
    const updated = await setSandboxEndAt(this.db, sandboxId, seconds, "exact", RUNNING);
    if (!updated) throw notFound(`running sandbox ${sandboxId}`);
    return updated;
  }

  /**
   * Makes sure the sandbox runs for at least `seconds` more: a running sandbox's end only moves
   * later (never earlier; no end stays no end); a paused one is resumed and ends `seconds` from
   * now. `resumed` says which happened. Stopped or failed sandboxes are not found.
   */
  async keepRunning(
    teamId: string,
    sandboxId: string,
    seconds: number,
  ): Promise<{ sandbox: SandboxRecord; resumed: boolean }> {
    // Twice at most: a sandbox paused by its end (or by another replica) between the read and
    // the write is looked at again and resumed.
    for (let attempt = 0; ; attempt++) {
      const row = await this.sandboxes.get(teamId, sandboxId);
      switch (row.status) {
        case "running":
        case "missing": {
          const extended = await this.extend(row, seconds);
          if (extended) return { sandbox: extended, resumed: false };
          if (attempt === 0) continue;
          throw invalidState(`sandbox ${sandboxId} keeps changing state; try again`);
        }
        case "paused":
          break;
        case "pending":
          throw invalidState(`sandbox ${sandboxId} is still being created`);
        default:
          throw notFound(`sandbox ${sandboxId}`);
      }
      try {
        return {
          sandbox: await this.sandboxes.resume(teamId, sandboxId, undefined, seconds),
          resumed: true,
        };
      } catch (err) {
        // A concurrent connect resumed it first: it is running now, which is what was asked.
        if (!(err instanceof ApiError && err.status === 409)) throw err;
        const now = await getSandbox(this.db, teamId, sandboxId);
        const extended = now?.status === "running" ? await this.extend(now, seconds) : undefined;
        if (!extended) throw err;
        return { sandbox: extended, resumed: false };
      }
    }
  }

  /** Resumes a paused sandbox for `seconds` (409 when it is not paused). */
  async resume(teamId: string, sandboxId: string, seconds: number): Promise<SandboxRecord> {
    const row = await this.sandboxes.get(teamId, sandboxId);
    if (row.status === "stopped" || row.status === "error") throw notFound(`sandbox ${sandboxId}`);
    if (row.status !== "paused")
      throw invalidState(`sandbox ${sandboxId} is ${row.status}, not paused`);
    return this.sandboxes.resume(teamId, sandboxId, undefined, seconds);
  }

  /** Moves a running sandbox's end later; undefined when it is not running any more. */
  private extend(row: SandboxRecord, seconds: number): Promise<SandboxRecord | undefined> {
    return setSandboxEndAt(this.db, row.id, seconds, "extend", RUNNING);
  }

  start(intervalMs = EXPIRY_INTERVAL_MS): void {
    const tick = () => {
      if (this.running) return;
      this.running = this.expireDue()
        .catch((err: unknown) => this.log(`[expiry] pass failed: ${String(err)}`))
        .finally(() => {
          this.running = undefined;
        });
    };
    this.timer = setInterval(tick, intervalMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    await this.running;
    await Promise.all(this.inFlight.values());
  }

  /**
   * One pass of the expiry job (unless another control plane holds the job's lock): claims and
   * starts the expiry of every running sandbox whose end has passed. With `wait` (tests), also
   * waits for them and reports what happened; the periodic job does not wait, so one slow
   * pause does not hold back the next pass. The lock is released while expiries are still
   * under way and another replica may take the job over: the claims (a compare-and-set lease
   * per sandbox, migration 0009) are what make each sandbox expire once.
   */
  async expireDue(wait = false): Promise<ExpiryReport | undefined> {
    const report: ExpiryReport = { killed: [], paused: [], failed: [] };
    // The common case, nothing due, needs neither the lock nor its connection.
    if ((await dueUnclaimedSandboxes(this.db, 1)).length === 0) return report;
    const r = await this.db.tryWithAdvisoryLock(EXPIRY_LOCK, () => this.pass(report));
    if (!r.ran) return undefined;
    if (wait) await Promise.all(r.value);
    return report;
  }

  private async pass(report: ExpiryReport): Promise<Promise<void>[]> {
    const due = await dueUnclaimedSandboxes(this.db, EXPIRY_BATCH);
    const started: Promise<void>[] = [];
    for (const row of due) {
      if (this.inFlight.has(row.id)) continue;
      const claimed = await claimExpiry(this.db, row.id, EXPIRY_LEASE_MS);
      // Its end moved (setTimeout, connect), it changed state, or another replica has it.
      if (!claimed) continue;
      const task = this.expire(claimed, report)
        .catch((err: unknown) => this.log(`[sandbox ${row.id}] expiry failed: ${String(err)}`))
        .finally(() => this.inFlight.delete(row.id));
      this.inFlight.set(row.id, task);
      started.push(task);
    }
    return started;
  }

  /** Expires a claimed sandbox, then ends the claim (or keeps it until the retry time). */
  private async expire(row: SandboxRecord, report: ExpiryReport): Promise<void> {
    const renew = setInterval(() => {
      renewExpiry(this.db, row.id, EXPIRY_LEASE_MS).catch((err: unknown) =>
        this.log(`[sandbox ${row.id}] renewing the expiry claim failed: ${String(err)}`),
      );
    }, EXPIRY_LEASE_MS / 4);
    let retryInMs = 0;
    try {
      retryInMs = await this.expireClaimed(row, report);
    } finally {
      clearInterval(renew);
      await releaseExpiry(this.db, row.id, retryInMs);
    }
  }

  /** Returns 0 when done (expired or nothing to do), else when to try again. */
  private async expireClaimed(current: SandboxRecord, report: ExpiryReport): Promise<number> {
    try {
      if (current.on_timeout === "pause") {
        try {
          await this.sandboxes.pause(current.team_id, current.id);
          this.log(`[sandbox ${current.id}] end time reached: paused`);
          report.paused.push(current.id);
          return 0;
        } catch (err) {
          // Changed state meanwhile (409, 404) or host unreachable (503): nothing to do now /
          // try later. The agent failed to pause it: end it as the agent's own reaper does.
          if (!(err instanceof ApiError) || err.status !== 502) throw err;
          this.log(`[sandbox ${current.id}] pause at end time failed, destroying: ${err.message}`);
        }
      }
      await this.sandboxes.destroy(current.team_id, current.id);
      this.log(`[sandbox ${current.id}] end time reached: killed`);
      report.killed.push(current.id);
      return 0;
    } catch (err) {
      if (err instanceof ApiError && (err.status === 404 || err.status === 409)) return 0;
      report.failed.push(current.id);
      this.log(
        `[sandbox ${current.id}] expiry failed (retrying in ${EXPIRY_RETRY_MS / 1000} s): ${
          err instanceof Error ? err.message : String(err)
        }`,
      );
      return EXPIRY_RETRY_MS;
    }
  }
}
