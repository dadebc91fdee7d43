import type { SandboxRecord } from "../db/queries/sandboxes.js";
import type { TemplateRow } from "../db/queries/templates.js";
import type { SandboxStatus } from "../domain/sandbox.js";
import type { MetricPointOut } from "../services/sandboxes.js";

/**
 * How Nestbox rows look through the E2B API (the `Sandbox`, `SandboxDetail`, `ListedSandbox`,
 * `SandboxMetric` and `Template` schemas of the npm `e2b` package's generated types).
 */

export type E2bState = "running" | "paused";

/** Statuses the E2B face shows. Stopped and failed sandboxes are "not found" to it. */
export const VISIBLE_STATUSES: readonly SandboxStatus[] = [
  "pending",
  "running",
  "missing",
  "paused",
];

/** Statuses behind each E2B state (a sandbox whose host is unreachable still "runs"). */
export const STATUSES_OF_STATE: Record<E2bState, readonly SandboxStatus[]> = {
  running: ["pending", "running", "missing"],
  paused: ["paused"],
};

export const isVisible = (row: SandboxRecord) => VISIBLE_STATUSES.includes(row.status);
export const e2bState = (status: SandboxStatus): E2bState =>
  status === "paused" ? "paused" : "running";

/** What the host agent's envd reports; shown until the agent has reported a sandbox's own. */
export const DEFAULT_ENVD_VERSION = "0.6.4";
/** E2B's deprecated `clientID` is a constant in its own API. */
const CLIENT_ID = "6532622b";
/** `endAt` of a sandbox with neither an end nor an idle TTL. */
const NO_END = new Date("9999-12-31T23:59:59.000Z");

/**
 * When the sandbox ends: its absolute end (E2B sandboxes), else, for /v1 sandboxes, when its
 * idle TTL runs out if nothing happens before.
 */
export function endAt(row: SandboxRecord): Date {
  if (row.end_at) return row.end_at;
  if (row.timeout_sec <= 0) return NO_END;
  const from = row.last_active_at ?? row.started_at ?? row.created_at;
  return new Date(from.getTime() + row.timeout_sec * 1000);
}

const startedAt = (row: SandboxRecord) => (row.started_at ?? row.created_at).toISOString();

export interface E2bSandbox {
  sandboxID: string;
  templateID: string;
  alias: string;
  clientID: string;
  envdVersion: string;
  envdAccessToken?: string;
  domain: string | null;
  trafficAccessToken: string | null;
}

/** `Sandbox`: what create, connect and resume return. */
export function sandboxView(row: SandboxRecord, domain: string): E2bSandbox {
  return {
    sandboxID: row.id,
    templateID: row.template,
    alias: row.template,
    clientID: CLIENT_ID,
    envdVersion: row.envd_version ?? DEFAULT_ENVD_VERSION,
    // /v1 sandboxes have no token (their envd is open to the agent only): the SDK sends none.
    ...(row.envd_access_token ? { envdAccessToken: row.envd_access_token } : {}),
    domain,
    trafficAccessToken: row.allow_public_traffic ? null : row.traffic_access_token,
  };
}

const MIB = 1024 * 1024;

export interface E2bListedSandbox {
  sandboxID: string;
  templateID: string;
  alias: string;
  clientID: string;
  cpuCount: number;
  memoryMB: number;
  diskSizeMB: number;
  startedAt: string;
  endAt: string;
  envdVersion: string;
  metadata: Record<string, string>;
  state: E2bState;
}

/** `ListedSandbox`: one entry of a list. */
export function listedView(row: SandboxRecord): E2bListedSandbox {
  return {
    sandboxID: row.id,
    templateID: row.template,
    alias: row.template,
    clientID: CLIENT_ID,
    cpuCount: row.vcpus,
    memoryMB: row.memory_mb,
    diskSizeMB: row.disk_size_mb,
    startedAt: startedAt(row),
    endAt: endAt(row).toISOString(),
    envdVersion: row.envd_version ?? DEFAULT_ENVD_VERSION,
    metadata: row.metadata,
    state: e2bState(row.status),
  };
}

export type E2bSandboxDetail = E2bListedSandbox & {
  envdAccessToken?: string;
  domain: string | null;
  allowInternetAccess: boolean;
  network: { allowPublicTraffic: boolean };
  lifecycle: { onTimeout: "kill" | "pause"; autoResume: boolean };
  volumeMounts: never[];
};

/** `SandboxDetail`: getInfo (SDK 2.0–2.5 also read the token and domain from it). */
export function detailView(row: SandboxRecord, domain: string): E2bSandboxDetail {
  return {
    ...listedView(row),
    ...(row.envd_access_token ? { envdAccessToken: row.envd_access_token } : {}),
    domain,
    allowInternetAccess: row.allow_internet_access,
    network: { allowPublicTraffic: row.allow_public_traffic },
    lifecycle: { onTimeout: row.on_timeout, autoResume: row.auto_resume },
    volumeMounts: [],
  };
}

export interface E2bSandboxMetric {
  timestamp: string;
  timestampUnix: number;
  cpuCount: number;
  cpuUsedPct: number;
  memUsed: number;
  memTotal: number;
  memCache: number;
  diskUsed: number;
  diskTotal: number;
}

/**
 * `SandboxMetric[]` from the agent's samples: one per second (the 10-minute ring samples twice
 * a second), totals from the sandbox's size. The agent measures no page cache: memCache 0.
 */
export function metricViews(row: SandboxRecord, points: readonly MetricPointOut[]) {
  const bySecond = new Map<number, MetricPointOut>();
  for (const p of points) bySecond.set(Math.floor(p.timestamp.getTime() / 1000), p);
  return [...bySecond].map(
    ([unix, p]): E2bSandboxMetric => ({
      timestamp: new Date(unix * 1000).toISOString(),
      timestampUnix: unix,
      cpuCount: row.vcpus,
      cpuUsedPct: Math.round(p.cpu_pct * 100) / 100,
      memUsed: p.mem_bytes,
      memTotal: row.memory_mb * MIB,
      memCache: 0,
      diskUsed: p.disk_bytes,
      diskTotal: row.disk_size_mb * MIB,
    }),
  );
}

/**
 * `Template`. Nestbox templates are addressed by name (what `Sandbox.create(name)` sends), so
 * the name is both the templateID and its alias.
 */
export function templateView(t: TemplateRow, platformTeamId: string, defaults: TemplateDefaults) {
  const created = t.created_at.toISOString();
  return {
    templateID: t.name,
    buildID: t.id,
    cpuCount: t.vcpus ?? defaults.vcpus,
    memoryMB: t.memory_mb ?? defaults.memoryMb,
    diskSizeMB: defaults.diskSizeMb,
    public: t.team_id === platformTeamId,
    aliases: [t.name],
    names: [t.name],
    createdAt: created,
    updatedAt: created,
    createdBy: null,
    lastSpawnedAt: null,
    spawnCount: 0,
    buildCount: 1,
    buildStatus: "ready",
    envdVersion: DEFAULT_ENVD_VERSION,
  };
}

export interface TemplateDefaults {
  vcpus: number;
  memoryMb: number;
  diskSizeMb: number;
}
