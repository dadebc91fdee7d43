import { first, type Queryable } from "../db.js";

export interface UserSessionRow {
  id: string;
  user_id: string;
  team_id: string;
  created_at: Date;
  last_used_at: Date;
  expires_at: Date;
  revoked_at: Date | null;
  /** `disabled`: a platform admin deactivated the account. */
  revoked_why: "logout" | "reuse" | "password" | "disabled" | null;
}

export type RevokeReason = NonNullable<UserSessionRow["revoked_why"]>;

export async function insertUserSession(
  db: Queryable,
  s: Pick<UserSessionRow, "id" | "user_id" | "team_id" | "expires_at">,
): Promise<UserSessionRow> {
  const row = await first<UserSessionRow>(
    db,
    `INSERT INTO user_sessions (id, user_id, team_id, expires_at)
     VALUES ($1, $2, $3, $4) RETURNING *`,
    [s.id, s.user_id, s.team_id, s.expires_at],
  );
  if (!row) throw new Error(`insert of session ${s.id} returned no row`);
  return row;
}

export const getUserSession = (db: Queryable, id: string) =>
  first<UserSessionRow>(db, "SELECT * FROM user_sessions WHERE id = $1", [id]);

export const insertRefreshToken = async (db: Queryable, sessionId: string, tokenHash: string) => {
  await db.query("INSERT INTO refresh_tokens (token_hash, session_id) VALUES ($1, $2)", [
    tokenHash,
    sessionId,
  ]);
};

/** The token's row and its session, locked for the rotation (inside a transaction). */
export const lockRefreshToken = (db: Queryable, tokenHash: string) =>
  first<UserSessionRow & { rotated_at: Date | null; session_id: string }>(
    db,
    `SELECT s.*, rt.rotated_at, rt.session_id
     FROM refresh_tokens rt JOIN user_sessions s ON s.id = rt.session_id
     WHERE rt.token_hash = $1 FOR UPDATE OF rt, s`,
    [tokenHash],
  );

/** Marks the token used; false when another request rotated it first. */
export async function markRotated(db: Queryable, tokenHash: string): Promise<boolean> {
  const rows = await db.query(
    `UPDATE refresh_tokens SET rotated_at = now()
     WHERE token_hash = $1 AND rotated_at IS NULL RETURNING token_hash`,
    [tokenHash],
  );
  return rows.length === 1;
}

export const touchUserSession = async (db: Queryable, id: string, teamId: string) => {
  await db.query("UPDATE user_sessions SET last_used_at = now(), team_id = $2 WHERE id = $1", [
    id,
    teamId,
  ]);
};

export const setSessionTeam = async (db: Queryable, id: string, teamId: string) => {
  await db.query("UPDATE user_sessions SET team_id = $2 WHERE id = $1 AND revoked_at IS NULL", [
    id,
    teamId,
  ]);
};

export async function revokeUserSession(
  db: Queryable,
  id: string,
  why: RevokeReason,
): Promise<void> {
  await db.query(
    `UPDATE user_sessions SET revoked_at = now(), revoked_why = $2
     WHERE id = $1 AND revoked_at IS NULL`,
    [id, why],
  );
}

/** Every live session of a user but `keep` (a password change signs the other browsers out). */
export const revokeOtherSessions = async (db: Queryable, userId: string, keep: string | null) => {
  await db.query(
    `UPDATE user_sessions SET revoked_at = now(), revoked_why = 'password'
     WHERE user_id = $1 AND revoked_at IS NULL AND ($2::text IS NULL OR id <> $2)`,
    [userId, keep],
  );
};

/** Every live session of a user (a deactivated account); returns how many ended. */
export async function revokeAllSessionsOf(
  db: Queryable,
  userId: string,
  why: RevokeReason,
): Promise<number> {
  const rows = await db.query(
    `UPDATE user_sessions SET revoked_at = now(), revoked_why = $2
     WHERE user_id = $1 AND revoked_at IS NULL RETURNING id`,
    [userId, why],
  );
  return rows.length;
}

/** Expired and revoked sessions (with their tokens) a day after they stopped counting. */
export const pruneUserSessions = (db: Queryable) =>
  db.query<{ id: string }>(
    `DELETE FROM user_sessions
     WHERE COALESCE(revoked_at, expires_at) < now() - interval '1 day' RETURNING id`,
  );
