import type { SandboxRow, SandboxStatus } from "../../domain/sandbox.js";
import { first, type Queryable } from "../db.js";

/** Statuses that hold resources on a host (or may again): counted by the scheduler and reconciler. */
export const LIVE_STATUSES: readonly SandboxStatus[] = ["pending", "running", "paused", "missing"];

/**
 * Lifecycle columns of migration 0002 (absolute end times, the E2B face). Every query here
 * returns whole rows (`*`), so its rows carry them too.
 */
export interface SandboxLifecycleColumns {
  /** When the expiry job ends the sandbox (kill or pause); null = no end (idle TTL only). */
  end_at: Date | null;
  /** Seconds it runs after a resume that names no time (the create timeout); null = no end. */
  lifetime_sec: number | null;
  on_timeout: "kill" | "pause";
  auto_resume: boolean;
  allow_public_traffic: boolean;
  traffic_access_token: string | null;
}

export type SandboxRecord = SandboxRow & SandboxLifecycleColumns;

export interface NewSandbox {
  id: string;
  teamId: string;
  hostId: string;
  templateId: string | null;
  template: string;
  vcpus: number;
  memoryMb: number;
  diskSizeMb: number;
  timeoutSec: number;
  allowInternetAccess: boolean;
  envVars: Record<string, string>;
  metadata: Record<string, string>;
  envdAccessToken: string | null;
  /** Absolute end: this many seconds from now (E2B sandboxes); unset = no end. */
  endInSec?: number;
  onTimeout?: "kill" | "pause";
  autoResume?: boolean;
  allowPublicTraffic?: boolean;
  trafficAccessToken?: string | null;
}

export async function insertPendingSandbox(db: Queryable, s: NewSandbox): Promise<SandboxRecord> {
  const rows = await db.query<SandboxRecord>(
    `INSERT INTO sandboxes (id, team_id, host_id, template_id, template, status, vcpus, memory_mb,
       disk_size_mb, timeout_sec, allow_internet_access, env_vars, metadata, envd_access_token,
       end_at, lifetime_sec, on_timeout, auto_resume, allow_public_traffic, traffic_access_token)
     VALUES ($1, $2, $3, $4, $5, 'pending', $6, $7, $8, $9, $10, $11, $12, $13,
       CASE WHEN $14::integer IS NULL THEN NULL ELSE now() + make_interval(secs => $14::integer) END,
       $14::integer, $15, $16, $17, $18)
     RETURNING *`,
    [
      s.id,
      s.teamId,
      s.hostId,
      s.templateId,
      s.template,
      s.vcpus,
      s.memoryMb,
      s.diskSizeMb,
      s.timeoutSec,
      s.allowInternetAccess,
      JSON.stringify(s.envVars),
      JSON.stringify(s.metadata),
      s.envdAccessToken,
      s.endInSec ?? null,
      s.onTimeout ?? "kill",
      s.autoResume ?? false,
      s.allowPublicTraffic ?? true,
      s.trafficAccessToken ?? null,
    ],
  );
  const row = rows[0];
  if (!row) throw new Error(`insert of sandbox ${s.id} returned no row`);
  return row;
}

export const getSandbox = (db: Queryable, teamId: string, id: string) =>
  first<SandboxRecord>(db, "SELECT * FROM sandboxes WHERE id = $1 AND team_id = $2", [id, teamId]);

/**
 * Moves a sandbox to `to` only if it is in one of `from` (compare-and-set, so a reconciler and
 * a user request racing on one sandbox cannot both win). Returns the updated row or undefined.
 */
export async function transitionSandbox(
  db: Queryable,
  id: string,
  from: readonly SandboxStatus[],
  to: SandboxStatus,
  extra: { error?: string | null; envdVersion?: string; started?: boolean; ended?: boolean } = {},
): Promise<SandboxRecord | undefined> {
  return first<SandboxRecord>(
    db,
    `UPDATE sandboxes SET status = $3,
       error = CASE WHEN $4::boolean THEN $5 ELSE error END,
       envd_version = COALESCE($6, envd_version),
       started_at = CASE WHEN $7::boolean THEN now() ELSE started_at END,
       last_active_at = CASE WHEN $7::boolean THEN now() ELSE last_active_at END,
       ended_at = CASE WHEN $8::boolean THEN now() ELSE ended_at END,
       updated_at = now()
     WHERE id = $1 AND status = ANY($2::text[])
     RETURNING *`,
    [
      id,
      from,
      to,
      extra.error !== undefined,
      extra.error ?? null,
      extra.envdVersion ?? null,
      extra.started ?? false,
      extra.ended ?? false,
    ],
  );
}

export async function touchSandbox(db: Queryable, id: string): Promise<void> {
  await db.query("UPDATE sandboxes SET last_active_at = now() WHERE id = $1", [id]);
}

/** Sets the idle timeout; with `statuses`, only of a sandbox in one of them (else undefined). */
export async function setSandboxTimeout(
  db: Queryable,
  id: string,
  timeoutSec: number,
  statuses: readonly SandboxStatus[] = LIVE_STATUSES,
) {
  return first<SandboxRecord>(
    db,
    `UPDATE sandboxes SET timeout_sec = $2, updated_at = now()
     WHERE id = $1 AND status = ANY($3::text[]) RETURNING *`,
    [id, timeoutSec, statuses],
  );
}

export interface SandboxListFilter {
  teamId: string;
  statuses?: readonly SandboxStatus[];
  metadata?: Record<string, string>;
  /** Keyset cursor: rows strictly after this (created_at, id) in the listing order. */
  after?: { createdAt: Date; id: string };
  limit: number;
  /** By (created_at, id); default newest first. */
  order?: "asc" | "desc";
  /** Only sandboxes started at or after this time. */
  startedAfter?: Date;
  /** Only sandboxes of this template (by name). */
  template?: string;
  /** Only sandboxes whose id holds this text (ids are lowercase letters and digits). */
  idContains?: string;
}

export async function listSandboxes(db: Queryable, f: SandboxListFilter): Promise<SandboxRecord[]> {
  const asc = f.order === "asc";
  const where = ["team_id = $1"];
  const params: unknown[] = [f.teamId];
  if (f.statuses?.length) {
    params.push(f.statuses);
    where.push(`status = ANY($${params.length}::text[])`);
  }
  if (f.metadata && Object.keys(f.metadata).length) {
    params.push(JSON.stringify(f.metadata));
    where.push(`metadata @> $${params.length}::jsonb`);
  }
  if (f.startedAfter) {
    params.push(f.startedAfter);
    where.push(`started_at >= $${params.length}`);
  }
  if (f.template !== undefined) {
    params.push(f.template);
    where.push(`template = $${params.length}`);
  }
  if (f.idContains) {
    // strpos, not LIKE: the text is matched as it is, with no wildcards to escape.
    params.push(f.idContains);
    where.push(`strpos(id, $${params.length}) > 0`);
  }
  if (f.after) {
    params.push(f.after.createdAt, f.after.id);
    where.push(`(created_at, id) ${asc ? ">" : "<"} ($${params.length - 1}, $${params.length})`);
  }
  params.push(f.limit);
  const dir = asc ? "ASC" : "DESC";
  return db.query<SandboxRecord>(
    `SELECT * FROM sandboxes WHERE ${where.join(" AND ")}
     ORDER BY created_at ${dir}, id ${dir} LIMIT $${params.length}`,
    params,
  );
}

/**
 * Sets the absolute end: `exact` = now + seconds (may shorten); `extend` = the later of the
 * current end and now + seconds, leaving a sandbox without an end (null: idle TTL only) as it is.
 * Only of a sandbox in one of `statuses` (compare-and-set): undefined otherwise.
 */
export const setSandboxEndAt = (
  db: Queryable,
  id: string,
  seconds: number,
  mode: "exact" | "extend",
  statuses: readonly SandboxStatus[] = LIVE_STATUSES,
) =>
  first<SandboxRecord>(
    db,
    mode === "exact"
      ? `UPDATE sandboxes SET end_at = now() + make_interval(secs => $2::integer), updated_at = now()
         WHERE id = $1 AND status = ANY($3::text[]) RETURNING *`
      : `UPDATE sandboxes SET updated_at = now(),
           end_at = CASE WHEN end_at IS NULL THEN NULL
                    ELSE GREATEST(end_at, now() + make_interval(secs => $2::integer)) END
         WHERE id = $1 AND status = ANY($3::text[]) RETURNING *`,
    [id, seconds, statuses],
  );

/** Live sandboxes of one host, for reconciliation. */
export const liveSandboxesOnHost = (db: Queryable, hostId: string) =>
  db.query<SandboxRow>("SELECT * FROM sandboxes WHERE host_id = $1 AND status = ANY($2::text[])", [
    hostId,
    LIVE_STATUSES,
  ]);

export interface MetricPointRow {
  ts: Date;
  cpu_pct: number;
  mem_bytes: number;
  disk_bytes: number;
}

export async function insertMetricPoints(
  db: Queryable,
  sandboxId: string,
  tier: "10m" | "2h" | "24h",
  points: readonly { tsUnix: number; cpuPct: number; memBytes: number; diskBytes: number }[],
): Promise<void> {
  if (points.length === 0) return;
  await db.query(
    `INSERT INTO sandbox_metric_points (sandbox_id, tier, ts, cpu_pct, mem_bytes, disk_bytes)
     SELECT $1, $2, to_timestamp(t), c, m, d
     FROM unnest($3::bigint[], $4::float8[], $5::bigint[], $6::bigint[]) AS p(t, c, m, d)
     ON CONFLICT DO NOTHING`,
    [
      sandboxId,
      tier,
      points.map((p) => p.tsUnix),
      points.map((p) => p.cpuPct),
      points.map((p) => p.memBytes),
      points.map((p) => p.diskBytes),
    ],
  );
}

export const storedMetricPoints = (db: Queryable, sandboxId: string, tier: string) =>
  db.query<MetricPointRow>(
    `SELECT ts, cpu_pct, mem_bytes, disk_bytes FROM sandbox_metric_points
     WHERE sandbox_id = $1 AND tier = $2 ORDER BY ts`,
    [sandboxId, tier],
  );
