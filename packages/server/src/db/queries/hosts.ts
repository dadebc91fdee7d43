import { first, type Queryable } from "../db.js";

export type HostStatus = "pending" | "online" | "unreachable" | "offline";
export type HostType = "regular" | "byoc";

/** One row of `hosts`, as the query layer returns it. */
export interface HostRow {
  id: string;
  name: string;
  address: string | null;
  status: HostStatus;
  runtime: string | null;
  arch: string | null;
  cpu_cores: number | null;
  memory_mb: number | null;
  disk_mb: number | null;
  agent_version: string | null;
  last_heartbeat_at: Date | null;
  created_by: string | null;
  created_at: Date;
  updated_at: Date;
  type: HostType;
  /** The owning team of a `byoc` host; null for `regular` ones. */
  team_id: string | null;
  /** No new sandboxes are placed here; the ones it has keep running. */
  draining: boolean;
  /** What the agent reported committed with its last heartbeat (null before it did). */
  used_memory_mb: number | null;
  used_disk_mb: number | null;
  sandbox_count: number | null;
}

/** A host as the API shows it: the row plus its team's name, tags and live sandbox count. */
export interface HostDetail extends HostRow {
  team_name: string | null;
  /** Sorted. */
  tags: string[];
  /** Sandboxes pending/running/paused/missing on it. */
  active_sandbox_count: number;
}

/** What the agent reports with a heartbeat about what it has committed. */
export interface HostUsage {
  usedMemoryMb: number;
  usedDiskMb: number;
  sandboxCount: number;
}

/** What an agent says about itself at registration (and may repeat with each heartbeat). */
export interface HostFacts {
  address: string;
  runtime: string;
  arch: string;
  cpuCores: number;
  memoryMb: number;
  diskMb: number;
  agentVersion: string;
}

export async function insertPendingHost(
  db: Queryable,
  h: {
    id: string;
    name: string;
    createdBy: string | null;
    type?: HostType;
    teamId?: string | null;
    tokenId: string;
    tokenHash: string;
    tokenTtlSec: number;
  },
): Promise<HostRow> {
  // One statement, so a host never exists without its registration token (or the reverse).
  const row = await first<HostRow>(
    db,
    `WITH h AS (
       INSERT INTO hosts (id, name, status, created_by, type, team_id)
       VALUES ($1, $2, 'pending', $3, $7, $8)
       RETURNING *
     ), t AS (
       INSERT INTO host_tokens (id, host_id, kind, token_hash, expires_at)
       SELECT $4, h.id, 'registration', $5, now() + make_interval(secs => $6) FROM h
     )
     SELECT * FROM h`,
    [
      h.id,
      h.name,
      h.createdBy,
      h.tokenId,
      h.tokenHash,
      h.tokenTtlSec,
      h.type ?? "regular",
      h.teamId ?? null,
    ],
  );
  if (!row) throw new Error(`insert of host ${h.id} returned no row`);
  return row;
}

export const getHost = (db: Queryable, id: string) =>
  first<HostRow>(db, "SELECT * FROM hosts WHERE id = $1", [id]);

const LIVE = "('pending', 'running', 'paused', 'missing')";

const DETAIL = `SELECT h.*, t.name AS team_name,
    ARRAY(SELECT tag FROM host_tags WHERE host_id = h.id ORDER BY tag) AS tags,
    (SELECT count(*)::int FROM sandboxes s
      WHERE s.host_id = h.id AND s.status IN ${LIVE}) AS active_sandbox_count
  FROM hosts h LEFT JOIN teams t ON t.id = h.team_id`;

export const getHostDetail = (db: Queryable, id: string) =>
  first<HostDetail>(db, `${DETAIL} WHERE h.id = $1`, [id]);

/**
 * Hosts, newest first: all of them, or only one team's (`teamId`: the BYOC hosts a team's
 * members see), optionally of one type.
 */
export const listHosts = (db: Queryable, filter: { teamId?: string; type?: HostType } = {}) =>
  db.query<HostDetail>(
    `${DETAIL}
     WHERE ($1::text IS NULL OR h.team_id = $1) AND ($2::text IS NULL OR h.type = $2)
     ORDER BY h.created_at DESC, h.id DESC`,
    [filter.teamId ?? null, filter.type ?? null],
  );

/**
 * A new registration token for a host that never registered (its earlier unused ones revoked),
 * in one statement: the host is still `pending` when the token is stored. Undefined when the
 * host is not pending (or does not exist).
 */
export async function reissueRegistrationToken(
  db: Queryable,
  r: { hostId: string; tokenId: string; tokenHash: string; tokenTtlSec: number },
): Promise<HostRow | undefined> {
  return first<HostRow>(
    db,
    `WITH h AS (
       SELECT * FROM hosts WHERE id = $1 AND status = 'pending' FOR UPDATE
     ), old AS (
       UPDATE host_tokens SET revoked_at = now()
       WHERE host_id IN (SELECT id FROM h) AND kind = 'registration'
         AND used_at IS NULL AND revoked_at IS NULL
     ), n AS (
       INSERT INTO host_tokens (id, host_id, kind, token_hash, expires_at)
       SELECT $2, h.id, 'registration', $3, now() + make_interval(secs => $4) FROM h
     )
     SELECT * FROM h`,
    [r.hostId, r.tokenId, r.tokenHash, r.tokenTtlSec],
  );
}

/** Sets or clears draining; undefined when the host does not exist. */
export const setHostDraining = (db: Queryable, hostId: string, draining: boolean) =>
  first<HostRow>(
    db,
    "UPDATE hosts SET draining = $2, updated_at = now() WHERE id = $1 RETURNING *",
    [hostId, draining],
  );

export async function listHostTags(db: Queryable, hostId: string): Promise<string[]> {
  const rows = await db.query<{ tag: string }>(
    "SELECT tag FROM host_tags WHERE host_id = $1 ORDER BY tag",
    [hostId],
  );
  return rows.map((r) => r.tag);
}

/** Idempotent. */
export async function addHostTag(db: Queryable, hostId: string, tag: string): Promise<void> {
  await db.query("INSERT INTO host_tags (host_id, tag) VALUES ($1, $2) ON CONFLICT DO NOTHING", [
    hostId,
    tag,
  ]);
}

/** Idempotent. */
export async function removeHostTag(db: Queryable, hostId: string, tag: string): Promise<void> {
  await db.query("DELETE FROM host_tags WHERE host_id = $1 AND tag = $2", [hostId, tag]);
}

/**
 * Consumes a registration token and brings its host online, in one statement: two agents
 * racing with the same token cannot both pass the `used_at IS NULL` check (the second waits on
 * the row lock and then sees it used). Refresh tokens of an earlier registration of the same host
 * are revoked, and the new one is stored. Returns undefined when the token is unknown, used,
 * revoked or expired.
 */
export async function consumeRegistrationToken(
  db: Queryable,
  r: {
    tokenHash: string;
    facts: HostFacts;
    refreshTokenId: string;
    refreshTokenHash: string;
    refreshTtlSec: number;
  },
): Promise<HostRow | undefined> {
  const f = r.facts;
  return first<HostRow>(
    db,
    `WITH t AS (
       UPDATE host_tokens SET used_at = now()
       WHERE token_hash = $1 AND kind = 'registration'
         AND used_at IS NULL AND revoked_at IS NULL AND expires_at > now()
       RETURNING host_id
     ), h AS (
       UPDATE hosts SET address = $2, runtime = $3, arch = $4, cpu_cores = $5,
         memory_mb = $6, disk_mb = $7, agent_version = $8, last_heartbeat_at = now(),
         updated_at = now()
       FROM t WHERE hosts.id = t.host_id
       RETURNING hosts.*
     ), old AS (
       UPDATE host_tokens SET revoked_at = now()
       WHERE host_id IN (SELECT id FROM h) AND kind = 'refresh' AND revoked_at IS NULL
     ), n AS (
       INSERT INTO host_tokens (id, host_id, kind, token_hash, expires_at)
       SELECT $9, h.id, 'refresh', $10, now() + make_interval(secs => $11) FROM h
     )
     SELECT * FROM h`,
    [
      r.tokenHash,
      f.address,
      f.runtime,
      f.arch,
      f.cpuCores,
      f.memoryMb,
      f.diskMb,
      f.agentVersion,
      r.refreshTokenId,
      r.refreshTokenHash,
      r.refreshTtlSec,
    ],
  );
}

/**
 * Rotates a refresh token: the new one is stored and the old one revoked in the same statement,
 * so neither can exist without the other, and a token replayed concurrently wins at most once.
 * Returns the host, or undefined when the token is unknown, revoked or expired.
 */
export async function rotateRefreshToken(
  db: Queryable,
  r: { tokenHash: string; newTokenId: string; newTokenHash: string; ttlSec: number },
): Promise<HostRow | undefined> {
  return first<HostRow>(
    db,
    `WITH old AS (
       UPDATE host_tokens SET revoked_at = now()
       WHERE token_hash = $1 AND kind = 'refresh' AND revoked_at IS NULL AND expires_at > now()
       RETURNING host_id
     ), n AS (
       INSERT INTO host_tokens (id, host_id, kind, token_hash, expires_at)
       SELECT $2, old.host_id, 'refresh', $3, now() + make_interval(secs => $4) FROM old
       RETURNING host_id
     )
     SELECT hosts.* FROM hosts JOIN n ON n.host_id = hosts.id`,
    [r.tokenHash, r.newTokenId, r.newTokenHash, r.ttlSec],
  );
}

/**
 * Records a heartbeat: `unreachable` becomes `online` again; `offline` (set by an operator)
 * stays. Facts the agent sends (address, capacity) replace the stored ones, so an agent that
 * restarts on another port or with other limits is found again without re-registering.
 */
export async function recordHeartbeat(
  db: Queryable,
  hostId: string,
  facts: Partial<HostFacts> = {},
  usage?: HostUsage,
): Promise<{ host: HostRow; wasUnreachable: boolean } | undefined> {
  const row = await first<HostRow & { was_unreachable: boolean }>(
    db,
    `WITH prev AS (SELECT id, status FROM hosts WHERE id = $1 FOR UPDATE)
     UPDATE hosts SET last_heartbeat_at = now(),
       status = CASE WHEN hosts.status IN ('unreachable', 'pending') THEN 'online'
         ELSE hosts.status END,
       address = COALESCE($2, address), runtime = COALESCE($3, runtime),
       arch = COALESCE($4, arch), cpu_cores = COALESCE($5, cpu_cores),
       memory_mb = COALESCE($6, memory_mb), disk_mb = COALESCE($7, disk_mb),
       agent_version = COALESCE($8, agent_version),
       used_memory_mb = COALESCE($9, used_memory_mb), used_disk_mb = COALESCE($10, used_disk_mb),
       sandbox_count = COALESCE($11, sandbox_count), updated_at = now()
     FROM prev WHERE hosts.id = prev.id
     RETURNING hosts.*, prev.status = 'unreachable' AS was_unreachable`,
    [
      hostId,
      facts.address ?? null,
      facts.runtime ?? null,
      facts.arch ?? null,
      facts.cpuCores ?? null,
      facts.memoryMb ?? null,
      facts.diskMb ?? null,
      facts.agentVersion ?? null,
      usage?.usedMemoryMb ?? null,
      usage?.usedDiskMb ?? null,
      usage?.sandboxCount ?? null,
    ],
  );
  if (!row) return undefined;
  const { was_unreachable, ...host } = row;
  return { host, wasUnreachable: was_unreachable };
}

/**
 * Online hosts silent for longer than `olderThanSec` become `unreachable`; returns them (id and
 * team, for the audit entry).
 */
export async function markStaleHosts(
  db: Queryable,
  olderThanSec: number,
): Promise<{ id: string; team_id: string | null }[]> {
  return db.query<{ id: string; team_id: string | null }>(
    `UPDATE hosts SET status = 'unreachable', updated_at = now()
     WHERE status = 'online'
       AND (last_heartbeat_at IS NULL OR last_heartbeat_at < now() - make_interval(secs => $1))
     RETURNING id, team_id`,
    [olderThanSec],
  );
}

/** Sandboxes that still hold (or may again hold) resources on the host. */
export async function liveSandboxIdsOnHost(db: Queryable, hostId: string): Promise<string[]> {
  const rows = await db.query<{ id: string }>(
    `SELECT id FROM sandboxes WHERE host_id = $1 AND status IN ${LIVE} ORDER BY created_at, id`,
    [hostId],
  );
  return rows.map((r) => r.id);
}

/**
 * Deletes a host (its tokens go with it) unless it still has live sandboxes; the check and the
 * delete are one statement, and a sandbox inserted concurrently fails its foreign key instead of
 * pointing at a deleted host. With `force`, live sandboxes are marked `stopped` first: a paused
 * sandbox whose host is gone can never be resumed, so it must not look resumable.
 */
export async function deleteHost(
  db: Queryable,
  hostId: string,
  force: boolean,
): Promise<"deleted" | "not_found" | { liveSandboxIds: string[] }> {
  const rows = force
    ? await db.query<{ id: string }>(
        `WITH s AS (
           UPDATE sandboxes SET status = 'stopped', ended_at = COALESCE(ended_at, now()),
             updated_at = now()
           WHERE host_id = $1 AND status IN ${LIVE}
         )
         DELETE FROM hosts WHERE id = $1 RETURNING id`,
        [hostId],
      )
    : await db.query<{ id: string }>(
        `DELETE FROM hosts WHERE id = $1 AND NOT EXISTS (
           SELECT 1 FROM sandboxes WHERE host_id = $1 AND status IN ${LIVE})
         RETURNING id`,
        [hostId],
      );
  if (rows.length > 0) return "deleted";
  if (!(await getHost(db, hostId))) return "not_found";
  return { liveSandboxIds: await liveSandboxIdsOnHost(db, hostId) };
}
