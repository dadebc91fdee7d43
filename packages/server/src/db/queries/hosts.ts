import { first, type Queryable } from "../db.js";

export type HostStatus = "pending" | "online" | "unreachable" | "offline";

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
    tokenId: string;
    tokenHash: string;
    tokenTtlSec: number;
  },
): Promise<HostRow> {
  // One statement, so a host never exists without its registration token (or the reverse).
  const row = await first<HostRow>(
    db,
    `WITH h AS (
       INSERT INTO hosts (id, name, status, created_by) VALUES ($1, $2, 'pending', $3)
       RETURNING *
     ), t AS (
       INSERT INTO host_tokens (id, host_id, kind, token_hash, expires_at)
       SELECT $4, h.id, 'registration', $5, now() + make_interval(secs => $6) FROM h
     )
     SELECT * FROM h`,
    [h.id, h.name, h.createdBy, h.tokenId, h.tokenHash, h.tokenTtlSec],
  );
  if (!row) throw new Error(`insert of host ${h.id} returned no row`);
  return row;
}

export const getHost = (db: Queryable, id: string) =>
  first<HostRow>(db, "SELECT * FROM hosts WHERE id = $1", [id]);

export const listHosts = (db: Queryable) =>
  db.query<HostRow>("SELECT * FROM hosts ORDER BY created_at DESC, id DESC");

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
       agent_version = COALESCE($8, agent_version), updated_at = now()
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
    ],
  );
  if (!row) return undefined;
  const { was_unreachable, ...host } = row;
  return { host, wasUnreachable: was_unreachable };
}

/** Online hosts silent for longer than `olderThanSec` become `unreachable`; returns their ids. */
export async function markStaleHosts(db: Queryable, olderThanSec: number): Promise<string[]> {
  const rows = await db.query<{ id: string }>(
    `UPDATE hosts SET status = 'unreachable', updated_at = now()
     WHERE status = 'online'
       AND (last_heartbeat_at IS NULL OR last_heartbeat_at < now() - make_interval(secs => $1))
     RETURNING id`,
    [olderThanSec],
  );
  return rows.map((r) => r.id);
}

const LIVE = "('pending', 'running', 'paused', 'missing')";

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
