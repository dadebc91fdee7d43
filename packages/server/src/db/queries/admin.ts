import type { SandboxStatus } from "../../domain/sandbox.js";
import { first, type Queryable } from "../db.js";
import type { SandboxRecord } from "./sandboxes.js";
import { LIVE_STATUSES } from "./sandboxes.js";
import type { TemplateRow } from "./templates.js";
import type { UserRow } from "./users.js";

/**
 * Reads and writes of the platform-admin routes: listings across every team (paginated by
 * offset, since admins jump to a page rather than scroll a feed) and the bulk changes of a
 * deactivation.
 */

export interface PageRequest {
  page: number;
  perPage: number;
}

export interface Paged<T> {
  rows: T[];
  total: number;
}

const offset = (p: PageRequest) => (p.page - 1) * p.perPage;

export interface AdminTeamRow {
  id: string;
  name: string;
  slug: string;
  is_byoc: boolean;
  is_platform: boolean;
  created_at: Date;
  deleted_at: Date | null;
  member_count: number;
  owner_id: string | null;
  owner_name: string | null;
  owner_email: string | null;
  active_sandbox_count: number;
}

/** Every team, live ones first, newest first; the owner is the earliest owner membership. */
export async function listTeamsPage(db: Queryable, p: PageRequest): Promise<Paged<AdminTeamRow>> {
  const rows = await db.query<AdminTeamRow>(
    `SELECT t.id, t.name, t.slug, t.is_byoc, t.is_platform, t.created_at, t.deleted_at,
       (SELECT count(*)::int FROM memberships m WHERE m.team_id = t.id) AS member_count,
       o.id AS owner_id, o.name AS owner_name, o.email AS owner_email,
       (SELECT count(*)::int FROM sandboxes s
        WHERE s.team_id = t.id AND s.status = ANY($3::text[])) AS active_sandbox_count
     FROM teams t
     LEFT JOIN LATERAL (
       SELECT u.id, u.name, u.email FROM memberships m JOIN users u ON u.id = m.user_id
       WHERE m.team_id = t.id AND m.role = 'owner' ORDER BY m.created_at, u.id LIMIT 1
     ) o ON true
     ORDER BY (t.deleted_at IS NOT NULL), t.created_at DESC, t.id DESC
     LIMIT $1 OFFSET $2`,
    [p.perPage, offset(p), LIVE_STATUSES],
  );
  const total = await first<{ n: number }>(db, "SELECT count(*)::int AS n FROM teams");
  return { rows, total: total?.n ?? 0 };
}

/** Any team, deleted or not (an admin's view). */
export const getTeamForAdmin = (db: Queryable, id: string) =>
  first<{
    id: string;
    name: string;
    is_byoc: boolean;
    is_platform: boolean;
    deleted_at: Date | null;
  }>(db, "SELECT id, name, is_byoc, is_platform, deleted_at FROM teams WHERE id = $1", [id]);

/** Turns BYOC on (one way); false when the team is unknown or deleted. */
export async function enableTeamByoc(db: Queryable, id: string): Promise<boolean> {
  const rows = await db.query(
    "UPDATE teams SET is_byoc = true WHERE id = $1 AND deleted_at IS NULL RETURNING id",
    [id],
  );
  return rows.length > 0;
}

export type AdminUserRow = UserRow & { teams_joined: number; teams_owned: number };

/** Every user, oldest first (stable while people sign up), with their live teams counted. */
export async function listUsersPage(db: Queryable, p: PageRequest): Promise<Paged<AdminUserRow>> {
  const rows = await db.query<AdminUserRow>(
    `SELECT u.*,
       (SELECT count(*)::int FROM memberships m JOIN teams t ON t.id = m.team_id
        WHERE m.user_id = u.id AND t.deleted_at IS NULL) AS teams_joined,
       (SELECT count(*)::int FROM memberships m JOIN teams t ON t.id = m.team_id
        WHERE m.user_id = u.id AND t.deleted_at IS NULL AND m.role = 'owner') AS teams_owned
     FROM users u ORDER BY u.created_at, u.id LIMIT $1 OFFSET $2`,
    [p.perPage, offset(p)],
  );
  const total = await first<{ n: number }>(db, "SELECT count(*)::int AS n FROM users");
  return { rows, total: total?.n ?? 0 };
}

/**
 * Refuses every user token issued before `at` (a deactivation). `at` comes from the control
 * plane's clock, the one token issue times (`iat_ms`) are read from.
 */
export const invalidateUserTokens = async (db: Queryable, userId: string, at: Date) => {
  await db.query("UPDATE users SET tokens_valid_after = $2 WHERE id = $1", [userId, at]);
};

/** Revokes every live key the user created, in any team; returns their ids. */
export const revokeApiKeysCreatedBy = async (db: Queryable, userId: string) =>
  (
    await db.query<{ id: string }>(
      `UPDATE api_keys SET revoked_at = now()
       WHERE created_by = $1 AND revoked_at IS NULL RETURNING id`,
      [userId],
    )
  ).map((r) => r.id);

/**
 * Live, non-platform teams the user owns with no other owner: a deactivation stops their
 * sandboxes (nobody else could be billed for them or stop them). The platform team is left
 * alone: its sandboxes are the platform's, whoever seeded it.
 */
export const teamsSolelyOwnedBy = async (db: Queryable, userId: string) =>
  (
    await db.query<{ id: string }>(
      `SELECT t.id FROM teams t
       JOIN memberships m ON m.team_id = t.id AND m.user_id = $1 AND m.role = 'owner'
       WHERE t.deleted_at IS NULL AND NOT t.is_platform AND NOT EXISTS (
         SELECT 1 FROM memberships o
         WHERE o.team_id = t.id AND o.role = 'owner' AND o.user_id <> $1)
       ORDER BY t.created_at, t.id`,
      [userId],
    )
  ).map((r) => r.id);

/** Ids of a team's sandboxes that hold (or may again hold) resources on a host. */
export const liveSandboxIdsOfTeam = async (db: Queryable, teamId: string) =>
  (
    await db.query<{ id: string }>(
      "SELECT id FROM sandboxes WHERE team_id = $1 AND status = ANY($2::text[]) ORDER BY id",
      [teamId, LIVE_STATUSES],
    )
  ).map((r) => r.id);

/** Ids of live sandboxes made from a template (its files are in use on their host). */
export const liveSandboxIdsOfTemplate = async (db: Queryable, templateId: string) =>
  (
    await db.query<{ id: string }>(
      "SELECT id FROM sandboxes WHERE template_id = $1 AND status = ANY($2::text[]) ORDER BY id",
      [templateId, LIVE_STATUSES],
    )
  ).map((r) => r.id);

/** A sandbox of any team. */
export const getSandboxAnyTeam = (db: Queryable, id: string) =>
  first<SandboxRecord>(db, "SELECT * FROM sandboxes WHERE id = $1", [id]);

/** Hosts a broadcast (a template delete) reaches. */
export const onlineHosts = (db: Queryable) =>
  db.query<{ id: string; address: string }>(
    "SELECT id, address FROM hosts WHERE status = 'online' AND address IS NOT NULL ORDER BY id",
  );

export type AdminTemplateRow = TemplateRow & { team_name: string };

/** Every template of every team (deleted teams' too), newest first. */
export const listAllTemplates = (db: Queryable) =>
  db.query<AdminTemplateRow>(
    `SELECT tp.*, t.name AS team_name FROM templates tp JOIN teams t ON t.id = tp.team_id
     ORDER BY tp.created_at DESC, tp.id DESC`,
  );

export interface AdminSandboxFilter extends PageRequest {
  teamId?: string;
  hostId?: string;
  status?: SandboxStatus;
}

export type AdminSandboxRow = SandboxRecord & { team_name: string };

/** Sandboxes of every team, newest first, narrowed by team, host and status. */
export async function listSandboxesPage(
  db: Queryable,
  f: AdminSandboxFilter,
): Promise<Paged<AdminSandboxRow>> {
  const where: string[] = [];
  const params: unknown[] = [];
  const add = (sql: string, v: unknown) => {
    params.push(v);
    where.push(sql.replace("?", `$${params.length}`));
  };
  if (f.teamId) add("s.team_id = ?", f.teamId);
  if (f.hostId) add("s.host_id = ?", f.hostId);
  if (f.status) add("s.status = ?", f.status);
  const cond = where.length ? `WHERE ${where.join(" AND ")}` : "";
  const total = await first<{ n: number }>(
    db,
    `SELECT count(*)::int AS n FROM sandboxes s ${cond}`,
    params,
  );
  const rows = await db.query<AdminSandboxRow>(
    `SELECT s.*, t.name AS team_name FROM sandboxes s JOIN teams t ON t.id = s.team_id ${cond}
     ORDER BY s.created_at DESC, s.id DESC
     LIMIT $${params.length + 1} OFFSET $${params.length + 2}`,
    [...params, f.perPage, offset(f)],
  );
  return { rows, total: total?.n ?? 0 };
}
