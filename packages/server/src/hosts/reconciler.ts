import { type Db, first } from "../db/db.js";
import { liveSandboxesOnHost, transitionSandbox } from "../db/queries/sandboxes.js";
import type { SandboxStatus } from "../domain/sandbox.js";
import type { AgentClient, AgentClients } from "./agent-clients.js";
import { markStaleHostsUnreachable } from "./registration.js";

/** Any number shared by all control planes: only the holder of this advisory lock reconciles. */
const RECONCILE_LOCK = 0x6e62_0001;
/**
 * A host that has not sent a heartbeat for this long is unreachable: three missed beats of the
 * agent's 30 s interval (the seed's figure). `NESTBOX_HOST_STALE_SEC` / `--host-stale-sec`
 * change it (tests shorten it).
 */
export const HEARTBEAT_STALE_SEC = 90;
/**
 * Each agent call of a pass gives up after this: a hung agent (stopped process, black-holed
 * network) must not hold the pass, and with it the marking of silent hosts, forever.
 */
const AGENT_CALL_TIMEOUT_MS = 10_000;
/**
 * A create that has been pending this long without the agent knowing it has failed (the agent
 * lists a create from the moment it takes it, as `starting`; a minute covers the control
 * plane's own steps before the call, or a control plane that died before making it).
 */
const PENDING_GRACE_MS = 60_000;
/**
 * A row this long in `pending` or `paused` (since its last write) whose sandbox the agent runs:
 * the control plane that created or resumed it died before writing `running` (or the one
 * pausing it died before calling the agent); a live one writes within milliseconds of the
 * agent's answer. (A pause slower than this is seen running, then paused on the next pass.)
 */
const ORPHAN_GRACE_MS = 60_000;

export interface ReconcileReport {
  hostsChecked: number;
  /** Online hosts whose ListSandboxes failed in this pass. */
  hostsFailed: number;
  changes: { sandboxId: string; from: string; to: string }[];
  destroyedOnHost: string[];
}

/**
 * Compares what each host agent really runs with the database and fixes the database (the agent
 * is the source of truth for its host), and destroys sandboxes a host runs that the database
 * does not know (e.g. a create whose control plane died before it wrote the row... which cannot
 * happen as rows are written first, or a row already stopped by a user).
 */
export class Reconciler {
  private timer: NodeJS.Timeout | undefined;
  private retry: NodeJS.Timeout | undefined;
  private running: Promise<unknown> | undefined;

  constructor(
    private readonly db: Db,
    private readonly agents: AgentClients,
    private readonly log: (line: string) => void = (l) => console.log(l),
    private readonly staleSec = HEARTBEAT_STALE_SEC,
  ) {}

  start(intervalMs = 15_000): void {
    let retryMs = 1000;
    const tick = () => {
      if (this.running) return;
      this.running = this.runOnce()
        .then((report) => {
          // A host that did not answer (e.g. an agent still starting next to a restarted
          // control plane) is asked again soon, backing off, instead of in a full interval.
          if (report && report.hostsFailed > 0 && retryMs < intervalMs) {
            this.retry = setTimeout(tick, retryMs);
            this.retry.unref();
            retryMs *= 2;
          } else retryMs = 1000;
        })
        .catch((err: unknown) => this.log(`[reconciler] pass failed: ${String(err)}`))
        .finally(() => {
          this.running = undefined;
        });
    };
    tick();
    this.timer = setInterval(tick, intervalMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    if (this.retry) clearTimeout(this.retry);
    await this.running;
  }

  async runOnce(): Promise<ReconcileReport | undefined> {
    const r = await this.db.tryWithAdvisoryLock(RECONCILE_LOCK, () => this.pass());
    return r.ran ? r.value : undefined;
  }

  private async pass(): Promise<ReconcileReport> {
    const report: ReconcileReport = {
      hostsChecked: 0,
      hostsFailed: 0,
      changes: [],
      destroyedOnHost: [],
    };
    const change = async (
      id: string,
      from: string[],
      to: "running" | "paused" | "stopped" | "missing" | "error",
      extra = {},
    ) => {
      const row = await transitionSandbox(this.db, id, from as SandboxStatus[], to, extra);
      if (row) {
        report.changes.push({ sandboxId: id, from: from.join("|"), to });
        this.log(`[sandbox ${id}] reconciled: ${from.join("|")} → ${to}`);
      }
    };

    for (const hostId of await markStaleHostsUnreachable(this.db, this.staleSec)) {
      this.log(
        `[reconciler] host ${hostId} sent no heartbeat for ${this.staleSec} s: unreachable, its running sandboxes missing`,
      );
      for (const s of await liveSandboxesOnHost(this.db, hostId))
        if (s.status === "running" || s.status === "pending")
          await change(s.id, [s.status], "missing");
    }

    const hosts = await this.db.query<{ id: string; address: string }>(
      "SELECT id, address FROM hosts WHERE status = 'online' AND address IS NOT NULL",
    );
    for (const host of hosts) {
      // The agent's answer describes the moment it was asked: a row written after that (a
      // resume or pause that finished while the list was on its way) is newer than the answer
      // and is left for the next pass, or a just-resumed sandbox would be set back to paused.
      // The database's clock, as updated_at is.
      const asked = await first<{ at: Date }>(this.db, "SELECT clock_timestamp() AS at");
      const askedAt = asked?.at ?? new Date(0);
      let live: Awaited<ReturnType<AgentClient["listSandboxes"]>>;
      try {
        live = await this.agents
          .get(host.id, host.address)
          .listSandboxes({}, { timeoutMs: AGENT_CALL_TIMEOUT_MS });
      } catch (err) {
        // One failed call is not a lost host: heartbeats decide that.
        this.log(`[reconciler] host ${host.id}: ListSandboxes failed: ${String(err)}`);
        report.hostsFailed++;
        continue;
      }
      report.hostsChecked++;
      const onHost = new Map(live.sandboxes.map((s) => [s.sandboxId, s.status]));
      const autoPaused = new Set(live.autoPausedSandboxIds);
      const rows = await liveSandboxesOnHost(this.db, host.id);
      const known = new Set(rows.map((r) => r.id));
      for (const row of rows) {
        if (row.updated_at > askedAt) continue;
        const actual = onHost.get(row.id);
        if (actual === "paused" && (row.status === "running" || row.status === "missing")) {
          await change(row.id, [row.status], "paused");
        } else if (actual === "running" && row.status === "missing") {
          await change(row.id, ["missing"], "running");
        } else if (actual === "running" && row.status === "pending") {
          if (Date.now() - row.created_at.getTime() > ORPHAN_GRACE_MS)
            await change(row.id, ["pending"], "running", { started: true });
        } else if (actual === "running" && row.status === "paused") {
          if (Date.now() - row.updated_at.getTime() > ORPHAN_GRACE_MS)
            await change(row.id, ["paused"], "running");
        } else if (actual === undefined) {
          if (row.status === "pending") {
            if (Date.now() - row.created_at.getTime() > PENDING_GRACE_MS)
              await change(row.id, ["pending"], "error", {
                error: "the host never reported this sandbox",
                ended: true,
              });
          } else if (autoPaused.has(row.id)) {
            await change(row.id, [row.status], "paused");
          } else {
            await change(row.id, [row.status], "stopped", { ended: true });
          }
        }
      }
      for (const [id, status] of onHost) {
        if (known.has(id) || status === "starting") continue;
        // Not live in the database (unknown, stopped or failed): nobody can reach it any more.
        const stillUnknown = await this.db.query<{ status: string }>(
          "SELECT status FROM sandboxes WHERE id = $1 AND status = ANY($2::text[])",
          [id, ["pending", "running", "paused", "missing"]],
        );
        if (stillUnknown.length) continue;
        try {
          await this.agents
            .get(host.id, host.address)
            .destroySandbox({ sandboxId: id }, { timeoutMs: AGENT_CALL_TIMEOUT_MS });
          report.destroyedOnHost.push(id);
          this.log(`[sandbox ${id}] destroyed on host ${host.id}: the database does not know it`);
        } catch (err) {
          this.log(
            `[sandbox ${id}] destroying an unknown sandbox on ${host.id} failed: ${String(err)}`,
          );
        }
      }
    }
    return report;
  }
}
