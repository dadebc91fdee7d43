import type { Db } from "../db/db.js";
import {
  getUserSession,
  insertRefreshToken,
  insertUserSession,
  lockRefreshToken,
  markRotated,
  revokeUserSession,
  touchUserSession,
  type UserSessionRow,
} from "../db/queries/user-sessions.js";
import { newId } from "../ids.js";
import { hashOpaqueToken, newOpaqueToken } from "./host-tokens.js";

/**
 * Browser sessions: a refresh token in an HttpOnly cookie, exchanged for a short-lived access
 * token. Each exchange rotates the refresh token; the rotation family is the session, and a
 * token presented after it was rotated revokes the family (RFC 9700 §4.14.2), so a stolen
 * cookie works at most until its owner's next refresh.
 */

/** Access tokens from a session: short, since they cannot be recalled from a page's memory. */
export const SESSION_ACCESS_TTL_SEC = 10 * 60;
/** A session ends this long after sign-in however often it is refreshed. */
export const SESSION_TTL_SEC = 30 * 24 * 60 * 60;

export interface StartedSession {
  session: UserSessionRow;
  refreshToken: string;
}

export async function startSession(
  db: Db,
  userId: string,
  teamId: string,
): Promise<StartedSession> {
  const refreshToken = newOpaqueToken();
  const session = await db.transaction(async (tx) => {
    const s = await insertUserSession(tx, {
      id: newId("sess"),
      user_id: userId,
      team_id: teamId,
      expires_at: new Date(Date.now() + SESSION_TTL_SEC * 1000),
    });
    await insertRefreshToken(tx, s.id, hashOpaqueToken(refreshToken));
    return s;
  });
  return { session, refreshToken };
}

export type RotateOutcome =
  | { ok: true; session: UserSessionRow; refreshToken: string }
  | { ok: false; reason: "unknown" | "expired" | "revoked" | "reused"; sessionId?: string };

/**
 * Exchanges a refresh token for the next one. The token row is locked, so of two requests
 * racing with one token exactly one rotates it and the other is reuse.
 */
export async function rotateRefreshToken(db: Db, token: string): Promise<RotateOutcome> {
  const hash = hashOpaqueToken(token);
  const next = newOpaqueToken();
  return db.transaction(async (tx): Promise<RotateOutcome> => {
    const row = await lockRefreshToken(tx, hash);
    if (!row) return { ok: false, reason: "unknown" };
    const sessionId = row.session_id;
    if (row.revoked_at) return { ok: false, reason: "revoked", sessionId };
    if (row.expires_at.getTime() <= Date.now()) return { ok: false, reason: "expired", sessionId };
    if (row.rotated_at || !(await markRotated(tx, hash))) {
      // Committed with the transaction: the family ends even though this request fails.
      await revokeUserSession(tx, sessionId, "reuse");
      return { ok: false, reason: "reused", sessionId };
    }
    await insertRefreshToken(tx, sessionId, hashOpaqueToken(next));
    await touchUserSession(tx, sessionId, row.team_id);
    const session = await getUserSession(tx, sessionId);
    if (!session) throw new Error(`session ${sessionId} vanished during its rotation`);
    return { ok: true, session, refreshToken: next };
  });
}

/** Revokes the session a refresh token belongs to (rotated or not); false when unknown. */
export async function endSessionByToken(db: Db, token: string): Promise<boolean> {
  const rows = await db.query<{ session_id: string }>(
    "SELECT session_id FROM refresh_tokens WHERE token_hash = $1",
    [hashOpaqueToken(token)],
  );
  const sessionId = rows[0]?.session_id;
  if (!sessionId) return false;
  await revokeUserSession(db, sessionId, "logout");
  return true;
}

/** Whether access tokens of this session are still good. */
export async function sessionIsLive(db: Pick<Db, "query">, sessionId: string): Promise<boolean> {
  const s = await getUserSession(db, sessionId);
  return !!s && !s.revoked_at && s.expires_at.getTime() > Date.now();
}
