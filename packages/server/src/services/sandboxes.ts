import { randomBytes } from "node:crypto";
import { Code, ConnectError } from "@connectrpc/connect";
import type { Db } from "../db/db.js";
import { first } from "../db/db.js";
import {
  getSandbox,
  insertMetricPoints,
  insertPendingSandbox,
  listSandboxes,
  type SandboxListFilter,
  type SandboxRecord,
  setSandboxEndAt,
  setSandboxTimeout,
  storedMetricPoints,
  touchSandbox,
  transitionSandbox,
} from "../db/queries/sandboxes.js";
import { agentTemplateName, resolveTemplate } from "../db/queries/templates.js";
import { ApiError, badRequest, invalidState, notFound } from "../errors.js";
import type { AgentClients } from "../hosts/agent-clients.js";
import { placeSandbox, type SchedulerOptions } from "../hosts/scheduler.js";
import { newSandboxId } from "../ids.js";
import type { AgentClient, SandboxAccess, SandboxRow } from "./sandbox-access.js";

export interface CreateSandboxInput {
  template: string;
  vcpus?: number;
  memoryMb?: number;
  diskSizeMb?: number;
  timeoutSec?: number;
  envVars?: Record<string, string>;
  metadata?: Record<string, string>;
  allowInternetAccess?: boolean;
  /** Set by the E2B face (its SDKs send X-Access-Token to envd); /v1 sandboxes leave it empty. */
  envdAccessToken?: string;
  /**
   * Absolute lifetime in seconds from when it is running (E2B sandboxes; the expiry job in
   * services/lifecycle.ts enforces it). Unset: no end, only the idle TTL.
   */
  endInSec?: number;
  /** What the end does: kill (default) or pause. */
  onTimeout?: "kill" | "pause";
  autoResume?: boolean;
  /** False: user ports need the traffic access token at the proxy. */
  allowPublicTraffic?: boolean;
  trafficAccessToken?: string;
  /** Placement constraint: only hosts with every one of these tags. */
  hostTags?: string[];
}

export const SANDBOX_DEFAULTS = { vcpus: 2, memoryMb: 512, diskSizeMb: 5120, timeoutSec: 300 };

export interface MetricPointOut {
  timestamp: Date;
  cpu_pct: number;
  mem_bytes: number;
  disk_bytes: number;
}

const TIER_FOR_RANGE = { "10m": "10m", "2h": "2h", "24h": "24h" } as const;
export type MetricRange = keyof typeof TIER_FOR_RANGE;

/** Turns an agent failure into the API error a client should see. */
export function agentFailure(sandboxId: string, action: string, err: unknown): ApiError {
  if (err instanceof ConnectError) {
    switch (err.code) {
      case Code.NotFound:
        return new ApiError(404, "not_found", `sandbox ${sandboxId}: ${err.rawMessage}`);
      case Code.FailedPrecondition:
        return new ApiError(409, "invalid_state", `sandbox ${sandboxId}: ${err.rawMessage}`);
      case Code.InvalidArgument:
        return new ApiError(400, "invalid_request", err.rawMessage);
      case Code.ResourceExhausted:
        return new ApiError(503, "no_hosts_available", err.rawMessage);
      case Code.Unavailable:
        return new ApiError(503, "host_unavailable", `host of sandbox ${sandboxId} is unreachable`);
      default:
        return new ApiError(502, "agent_error", `${action} failed: ${err.rawMessage}`);
    }
  }
  return new ApiError(502, "agent_error", `${action} failed: ${String(err)}`);
}

const isConnect = (err: unknown, code: Code) => err instanceof ConnectError && err.code === code;

/**
 * The sandbox lifecycle as the control plane sees it. The database is written before an agent
 * call that changes state (so a reconciler pass in between sees the intended state) and put
 * back when the call fails; the host agent stays the source of truth for what really runs.
 */
export class SandboxService implements SandboxAccess {
  constructor(
    private readonly db: Db,
    readonly agentClients: AgentClients,
    private readonly platformTeamId: string,
    private readonly log: (line: string) => void = (l) => console.log(l),
    /** The scheduler's reserve and its debug log (each placement with its scores). */
    private readonly scheduling: SchedulerOptions = {},
  ) {}

  async get(teamId: string, sandboxId: string): Promise<SandboxRecord> {
    const row = await getSandbox(this.db, teamId, sandboxId);
    if (!row) throw notFound(`sandbox ${sandboxId}`);
    return row;
  }

  /** The agent client for a sandbox's host, or 503 when the host is not usable. */
  async agentFor(row: SandboxRow): Promise<AgentClient> {
    if (!row.host_id) throw new ApiError(503, "host_unavailable", `sandbox ${row.id} has no host`);
    const hostId = row.host_id;
    let host = this.recentHosts.get(hostId);
    if (!host || host.until < Date.now()) {
      const found = await first<{ id: string; address: string | null; status: string }>(
        this.db,
        "SELECT id, address, status FROM hosts WHERE id = $1",
        [hostId],
      );
      // Only a usable host is remembered (for a second: a host that goes away fails the agent
      // call itself, with 503, in the meantime).
      if (!found?.address || found.status !== "online")
        throw new ApiError(503, "host_unavailable", `host of sandbox ${row.id} is not online`);
      host = { address: found.address, until: Date.now() + 1000 };
      this.recentHosts.set(hostId, host);
    }
    return this.agentClients.get(hostId, host.address);
  }

  private readonly recentHosts = new Map<string, { address: string; until: number }>();

  /**
   * Sandboxes seen running in the last second (or just created here): a command right after
   * create, or a burst of them, needs no database read. State changes made through this service
   * forget the entry; one made elsewhere (another control plane, the reconciler) is seen within
   * a second, and the agent refuses commands to a sandbox it no longer runs in the meantime.
   */
  private readonly recentRunning = new Map<string, { row: SandboxRecord; until: number }>();

  private rememberRunning(row: SandboxRecord): void {
    const now = Date.now();
    if (this.recentRunning.size >= 1000)
      for (const [id, e] of this.recentRunning) if (e.until < now) this.recentRunning.delete(id);
    this.recentRunning.set(row.id, { row, until: now + 1000 });
  }

  /** Drops the cached "running" view of a sandbox whose state is about to change. */
  forgetRunning(sandboxId: string): void {
    this.recentRunning.delete(sandboxId);
  }

  async running(teamId: string, sandboxId: string) {
    const hit = this.recentRunning.get(sandboxId);
    let sandbox: SandboxRecord;
    if (hit && hit.until >= Date.now() && hit.row.team_id === teamId) sandbox = hit.row;
    else {
      sandbox = await this.get(teamId, sandboxId);
      if (sandbox.status !== "running") {
        this.forgetRunning(sandboxId);
        throw invalidState(`sandbox ${sandboxId} is ${sandbox.status}, not running`);
      }
      this.rememberRunning(sandbox);
    }
    return { sandbox, agent: await this.agentFor(sandbox) };
  }

  /** Records activity without making the caller wait for the write (it only feeds listings). */
  async touch(sandboxId: string): Promise<void> {
    touchSandbox(this.db, sandboxId).catch((err: unknown) => {
      this.log(`[sandbox ${sandboxId}] recording activity failed: ${String(err)}`);
    });
  }

  list(filter: SandboxListFilter): Promise<SandboxRecord[]> {
    return listSandboxes(this.db, filter);
  }

  async create(teamId: string, input: CreateSandboxInput): Promise<SandboxRecord> {
    const template = await resolveTemplate(this.db, teamId, this.platformTeamId, input.template);
    if (!template) throw new ApiError(404, "not_found", `template ${input.template} not found`);
    // A snapshot carries its memory image: its size is fixed, and only its host has the files.
    const vcpus =
      template.kind === "snapshot" && template.vcpus
        ? template.vcpus
        : (input.vcpus ?? SANDBOX_DEFAULTS.vcpus);
    const memoryMb =
      template.kind === "snapshot" && template.memory_mb
        ? template.memory_mb
        : (input.memoryMb ?? SANDBOX_DEFAULTS.memoryMb);
    const diskSizeMb = input.diskSizeMb ?? SANDBOX_DEFAULTS.diskSizeMb;
    // Placement only: later calls (agentFor) reach a draining host's sandboxes as any other.
    const hosts = await placeSandbox(
      this.db,
      {
        teamId,
        vcpus,
        memoryMb,
        diskMb: diskSizeMb,
        tags: input.hostTags,
        ...(template.kind === "snapshot"
          ? { onlyHost: { id: template.host_id, what: `snapshot template ${template.name}` } }
          : {}),
      },
      this.scheduling,
    );

    const id = newSandboxId();
    let row = await insertPendingSandbox(this.db, {
      id,
      teamId,
      hostId: hosts[0]?.id ?? "",
      templateId: template.id,
      template: template.name,
      vcpus,
      memoryMb,
      diskSizeMb,
      timeoutSec: input.timeoutSec ?? SANDBOX_DEFAULTS.timeoutSec,
      allowInternetAccess: input.allowInternetAccess ?? true,
      envVars: { ...template.default_env, ...input.envVars },
      metadata: input.metadata ?? {},
      envdAccessToken: input.envdAccessToken ?? null,
      endInSec: input.endInSec,
      onTimeout: input.onTimeout,
      autoResume: input.autoResume,
      allowPublicTraffic: input.allowPublicTraffic,
      trafficAccessToken: input.trafficAccessToken ?? null,
    });
    let lastError: unknown;
    for (const host of hosts) {
      if (host.id !== row.host_id) {
        await this.db.query("UPDATE sandboxes SET host_id = $2 WHERE id = $1", [id, host.id]);
        row = { ...row, host_id: host.id };
      }
      const agent = this.agentClients.get(host.id, host.address);
      // The ranking just read this host online: the first command needs no lookup of it.
      this.recentHosts.set(host.id, { address: host.address, until: Date.now() + 1000 });
      try {
        const res = await agent.createSandbox({
          sandboxId: id,
          template: agentTemplateName(template, this.platformTeamId),
          vcpus,
          memoryMb,
          diskSizeMb,
          timeoutSec: row.timeout_sec,
          envVars: row.env_vars,
          metadata: row.metadata,
          defaultUser: template.default_user ?? "",
          allowInternetAccess: row.allow_internet_access,
          envdAccessToken: row.envd_access_token ?? "",
        });
        // From `running` too: a reconciler that saw the agent run it while this control plane
        // was slow to write (taking it for the orphan of a dead replica) has adopted it already.
        const done = await transitionSandbox(this.db, id, ["pending", "running"], "running", {
          started: true,
          envdVersion: res.envdVersion,
        });
        this.log(
          `[sandbox ${id}] created on host ${host.id} (team ${teamId}, template ${template.name})`,
        );
        if (!done) {
          // Destroyed (or reconciled away) while it was being created: honour that.
          await agent.destroySandbox({ sandboxId: id }).catch((err: unknown) => {
            this.log(`[sandbox ${id}] cleanup after a concurrent destroy failed: ${String(err)}`);
          });
          throw invalidState(`sandbox ${id} was destroyed while it was being created`);
        }
        // The lifetime counts from now, not from the insert before a possibly slow create.
        const created =
          input.endInSec !== undefined
            ? ((await setSandboxEndAt(this.db, id, input.endInSec, "exact")) ?? done)
            : done;
        this.rememberRunning(created);
        return created;
      } catch (err) {
        lastError = err;
        // Full host or unreachable host: the next candidate may still take it.
        if (isConnect(err, Code.ResourceExhausted) || isConnect(err, Code.Unavailable)) continue;
        break;
      }
    }
    const reason = lastError instanceof Error ? lastError.message : String(lastError);
    await transitionSandbox(this.db, id, ["pending"], "error", { error: reason, ended: true });
    this.log(`[sandbox ${id}] create failed: ${reason}`);
    if (lastError instanceof ApiError) throw lastError;
    throw agentFailure(id, "create", lastError);
  }

  async destroy(teamId: string, sandboxId: string): Promise<void> {
    this.forgetRunning(sandboxId);
    const row = await this.get(teamId, sandboxId);
    if (row.status === "stopped" || row.status === "error") return;
    if (row.status === "running") await this.flushMetrics(row, ["24h"]);
    if (row.host_id) {
      try {
        const agent = await this.agentFor(row);
        await agent.destroySandbox({ sandboxId });
      } catch (err) {
        // Gone on the host already is what we wanted; an unreachable host is cleaned by its own
        // startup (it destroys sandboxes the control plane no longer knows).
        if (!isConnect(err, Code.NotFound) && !(err instanceof ApiError && err.status === 503))
          throw agentFailure(sandboxId, "destroy", err);
        this.log(
          `[sandbox ${sandboxId}] destroy: ${err instanceof Error ? err.message : String(err)}`,
        );
      }
    }
    await transitionSandbox(
      this.db,
      sandboxId,
      ["pending", "running", "paused", "missing"],
      "stopped",
      {
        ended: true,
      },
    );
    this.log(`[sandbox ${sandboxId}] destroyed`);
  }

  async pause(teamId: string, sandboxId: string): Promise<SandboxRow> {
    this.forgetRunning(sandboxId);
    const row = await this.get(teamId, sandboxId);
    if (row.status === "paused") throw invalidState(`sandbox ${sandboxId} is already paused`);
    const agent = row.status === "running" ? await this.agentFor(row) : undefined;
    const marked = agent && (await transitionSandbox(this.db, sandboxId, ["running"], "paused"));
    if (!agent || !marked) throw invalidState(`sandbox ${sandboxId} is ${row.status}, not running`);
    await this.flushMetrics(row, ["10m", "2h", "24h"]);
    try {
      await agent.pauseSandbox({ sandboxId });
    } catch (err) {
      await transitionSandbox(this.db, sandboxId, ["paused"], "running");
      throw agentFailure(sandboxId, "pause", err);
    }
    this.log(`[sandbox ${sandboxId}] paused`);
    return marked;
  }

  /**
   * Resumes a paused sandbox. `timeoutSec` replaces its idle TTL; a sandbox with an absolute end
   * (E2B) gets a new one, `endInSec` (default: its create timeout) from now, written while it is
   * still paused so the expiry job never sees it running with its old, passed end.
   */
  async resume(
    teamId: string,
    sandboxId: string,
    timeoutSec?: number,
    endInSec?: number,
  ): Promise<SandboxRecord> {
    const row = await this.get(teamId, sandboxId);
    if (row.status !== "paused")
      throw invalidState(`sandbox ${sandboxId} is ${row.status}, not paused`);
    const agent = await this.agentFor(row);
    if (row.end_at)
      await setSandboxEndAt(
        this.db,
        sandboxId,
        endInSec ?? row.lifetime_sec ?? SANDBOX_DEFAULTS.timeoutSec,
        "exact",
      );
    try {
      await agent.resumeSandbox({ sandboxId, timeoutSec: timeoutSec ?? row.timeout_sec });
    } catch (err) {
      throw agentFailure(sandboxId, "resume", err);
    }
    // Only now: a failed resume leaves the host's idle timeout, so the row keeps it too.
    if (timeoutSec !== undefined) await setSandboxTimeout(this.db, sandboxId, timeoutSec);
    const done = await transitionSandbox(this.db, sandboxId, ["paused"], "running", {
      started: true,
    });
    if (!done) throw invalidState(`sandbox ${sandboxId} changed state while resuming`);
    this.log(`[sandbox ${sandboxId}] resumed`);
    return done;
  }

  async ping(teamId: string, sandboxId: string): Promise<void> {
    const { agent } = await this.running(teamId, sandboxId);
    try {
      await agent.pingSandbox({ sandboxId });
    } catch (err) {
      throw agentFailure(sandboxId, "ping", err);
    }
    await this.touch(sandboxId);
  }

  /** Sets the idle timeout (0 = never auto-pause), on the host first, then in the database. */
  async setTimeout(teamId: string, sandboxId: string, timeoutSec: number): Promise<SandboxRow> {
    this.forgetRunning(sandboxId);
    const row = await this.get(teamId, sandboxId);
    if (row.status !== "running" && row.status !== "paused")
      throw invalidState(`sandbox ${sandboxId} is ${row.status}`);
    if (timeoutSec < 0 || !Number.isInteger(timeoutSec))
      throw badRequest("timeout_sec must be a non-negative integer", "timeout_sec");
    const agent = await this.agentFor(row);
    try {
      await agent.setSandboxTimeout({ sandboxId, timeoutSec });
    } catch (err) {
      throw agentFailure(sandboxId, "set timeout", err);
    }
    // Compare-and-set on status: destroyed meanwhile (another request, another control plane)
    // is a conflict, not a stopped row with a new timeout.
    const updated = await setSandboxTimeout(this.db, sandboxId, timeoutSec, ["running", "paused"]);
    if (!updated)
      throw invalidState(`sandbox ${sandboxId} changed state while setting its timeout`);
    return updated;
  }

  async metrics(teamId: string, sandboxId: string, range: MetricRange): Promise<MetricPointOut[]> {
    const row = await this.get(teamId, sandboxId);
    if (row.status === "running") {
      const agent = await this.agentFor(row);
      try {
        const res = await agent.getSandboxMetrics({ sandboxId, range });
        return res.points.map((p) => ({
          timestamp: new Date(Number(p.timestampUnix) * 1000),
          cpu_pct: p.cpuPct,
          mem_bytes: Number(p.memBytes),
          disk_bytes: Number(p.diskBytes),
        }));
      } catch (err) {
        throw agentFailure(sandboxId, "metrics", err);
      }
    }
    const rows = await storedMetricPoints(this.db, sandboxId, TIER_FOR_RANGE[range]);
    return rows.map((r) => ({
      timestamp: r.ts,
      cpu_pct: r.cpu_pct,
      mem_bytes: r.mem_bytes,
      disk_bytes: r.disk_bytes,
    }));
  }

  /** Copies the agent's metric rings into the database (best effort: never blocks a pause). */
  private async flushMetrics(row: SandboxRow, tiers: readonly ("10m" | "2h" | "24h")[]) {
    try {
      const agent = await this.agentFor(row);
      const res = await agent.flushSandboxMetrics({ sandboxId: row.id });
      const byTier = { "10m": res.points10m, "2h": res.points2h, "24h": res.points24h };
      for (const tier of tiers) {
        await insertMetricPoints(
          this.db,
          row.id,
          tier,
          byTier[tier].map((p) => ({
            tsUnix: Number(p.timestampUnix),
            cpuPct: p.cpuPct,
            memBytes: Number(p.memBytes),
            diskBytes: Number(p.diskBytes),
          })),
        );
      }
    } catch (err) {
      this.log(
        `[sandbox ${row.id}] metrics flush failed: ${err instanceof Error ? err.message : String(err)}`,
      );
    }
  }
}

/** 32 random bytes as hex: envd access tokens for sandboxes made through the E2B face. */
export const newAccessToken = () => randomBytes(32).toString("hex");
