import type { Role } from "../../domain/caller.js";
import { first, type Queryable } from "../db.js";

export interface TeamRow {
  id: string;
  name: string;
  slug: string;
  is_platform: boolean;
  /** Bring-your-own-compute: its sandboxes run only on its own hosts (migration 0006). */
  is_byoc: boolean;
  created_at: Date;
  deleted_at: Date | null;
}

export interface MembershipRow {
  team_id: string;
  user_id: string;
  role: Role;
  is_default: boolean;
  created_at: Date;
}

/** A team with the role one user has in it. */
export type TeamWithRole = TeamRow & { role: Role };

/** A member as the team page shows it. */
export interface MemberRow {
  user_id: string;
  email: string;
  name: string;
  role: Role;
  joined_at: Date;
}

/** A live (not deleted) team. */
export const getTeam = (db: Queryable, id: string) =>
  first<TeamRow>(db, "SELECT * FROM teams WHERE id = $1 AND deleted_at IS NULL", [id]);

export const getPlatformTeam = (db: Queryable) =>
  first<TeamRow>(db, "SELECT * FROM teams WHERE is_platform");

export async function insertTeam(
  db: Queryable,
  t: Pick<TeamRow, "id" | "name" | "slug"> & { is_platform?: boolean },
): Promise<TeamRow> {
  const row = await first<TeamRow>(
    db,
    "INSERT INTO teams (id, name, slug, is_platform) VALUES ($1, $2, $3, $4) RETURNING *",
    [t.id, t.name, t.slug, t.is_platform ?? false],
  );
  if (!row) throw new Error(`insert of team ${t.id} returned no row`);
  return row;
}

/**
 * Inserts the platform team unless one exists; the partial unique index on `is_platform` makes
 * concurrent starts of several control planes agree on one row.
 */
export async function insertPlatformTeamIfMissing(
  db: Queryable,
  t: Pick<TeamRow, "id" | "name" | "slug">,
): Promise<TeamRow> {
  await db.query(
    `INSERT INTO teams (id, name, slug, is_platform) VALUES ($1, $2, $3, true)
     ON CONFLICT DO NOTHING`,
    [t.id, t.name, t.slug],
  );
  const row = await getPlatformTeam(db);
  if (!row) throw new Error("platform team missing right after it was inserted");
  return row;
}

/**
 * Marks a team deleted unless it still has live sandboxes (one statement: the check and the
 * delete cannot be split by a concurrent create's status change). Its keys stop working and its
 * members' sessions with it (every lookup skips deleted teams); rows stay for the audit trail.
 */
export async function softDeleteTeam(
  db: Queryable,
  id: string,
): Promise<"deleted" | { liveSandboxes: number }> {
  const rows = await db.query<{ id: string }>(
    `UPDATE teams SET deleted_at = now()
     WHERE id = $1 AND deleted_at IS NULL AND NOT is_platform AND NOT EXISTS (
       SELECT 1 FROM sandboxes
       WHERE team_id = $1 AND status IN ('pending', 'running', 'paused', 'missing'))
     RETURNING id`,
    [id],
  );
  if (rows.length > 0) return "deleted";
  const live = await first<{ n: number }>(
    db,
    `SELECT count(*)::int AS n FROM sandboxes
     WHERE team_id = $1 AND status IN ('pending', 'running', 'paused', 'missing')`,
    [id],
  );
  return { liveSandboxes: live?.n ?? 0 };
}

export async function renameTeam(db: Queryable, id: string, name: string): Promise<TeamRow> {
  const row = await first<TeamRow>(db, "UPDATE teams SET name = $2 WHERE id = $1 RETURNING *", [
    id,
    name,
  ]);
  if (!row) throw new Error(`team ${id} vanished while being renamed`);
  return row;
}

/** A user's live teams in the order they joined them. */
export const listTeamsOfUser = (db: Queryable, userId: string) =>
  db.query<TeamWithRole>(
    `SELECT t.*, m.role FROM memberships m JOIN teams t ON t.id = m.team_id
     WHERE m.user_id = $1 AND t.deleted_at IS NULL
     ORDER BY m.created_at, t.id`,
    [userId],
  );

/** The team a log-in lands in: the default one, else the earliest joined. */
export const getLoginTeam = (db: Queryable, userId: string) =>
  first<TeamWithRole>(
    db,
    `SELECT t.*, m.role FROM memberships m JOIN teams t ON t.id = m.team_id
     WHERE m.user_id = $1 AND t.deleted_at IS NULL
     ORDER BY m.is_default DESC, m.created_at, t.id LIMIT 1`,
    [userId],
  );

/** The membership of a user in a live team, or undefined. */
export const getMembership = (db: Queryable, teamId: string, userId: string) =>
  first<MembershipRow>(
    db,
    `SELECT m.* FROM memberships m JOIN teams t ON t.id = m.team_id
     WHERE m.team_id = $1 AND m.user_id = $2 AND t.deleted_at IS NULL`,
    [teamId, userId],
  );

export const listMembers = (db: Queryable, teamId: string) =>
  db.query<MemberRow>(
    `SELECT u.id AS user_id, u.email, u.name, m.role, m.created_at AS joined_at
     FROM memberships m JOIN users u ON u.id = m.user_id
     WHERE m.team_id = $1 ORDER BY m.created_at, u.id`,
    [teamId],
  );

export const getMember = (db: Queryable, teamId: string, userId: string) =>
  first<MemberRow>(
    db,
    `SELECT u.id AS user_id, u.email, u.name, m.role, m.created_at AS joined_at
     FROM memberships m JOIN users u ON u.id = m.user_id
     WHERE m.team_id = $1 AND m.user_id = $2`,
    [teamId, userId],
  );

/** Adds the membership; false when the user already is a member (nothing changed). */
export async function addMembership(
  db: Queryable,
  m: Pick<MembershipRow, "team_id" | "user_id" | "role"> & { is_default?: boolean },
): Promise<boolean> {
  const rows = await db.query(
    `INSERT INTO memberships (team_id, user_id, role, is_default) VALUES ($1, $2, $3, $4)
     ON CONFLICT (team_id, user_id) DO NOTHING RETURNING team_id`,
    [m.team_id, m.user_id, m.role, m.is_default ?? false],
  );
  return rows.length > 0;
}

export async function setMemberRole(
  db: Queryable,
  teamId: string,
  userId: string,
  role: Role,
): Promise<boolean> {
  const rows = await db.query(
    "UPDATE memberships SET role = $3 WHERE team_id = $1 AND user_id = $2 RETURNING team_id",
    [teamId, userId, role],
  );
  return rows.length > 0;
}

export async function removeMembership(
  db: Queryable,
  teamId: string,
  userId: string,
): Promise<boolean> {
  const rows = await db.query(
    "DELETE FROM memberships WHERE team_id = $1 AND user_id = $2 RETURNING team_id",
    [teamId, userId],
  );
  return rows.length > 0;
}
