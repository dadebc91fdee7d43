import { errors, jwtVerify, SignJWT } from "jose";
import type { Role } from "../domain/caller.js";

/** User sessions last 12 hours; the dashboard logs in again after that. */
export const USER_TOKEN_TTL_SEC = 12 * 60 * 60;

/**
 * Host tokens are signed with the same secret (`typ: "host"`), so the `typ` claim is what keeps
 * one kind of token from being accepted as the other.
 */
const USER_TYP = "user";
const ROLES: readonly Role[] = ["owner", "admin", "member"];

export interface UserTokenClaims {
  userId: string;
  teamId: string;
  /** The role when the token was issued; the middleware uses the database's current role. */
  role: Role;
  /** The browser session (user_sessions.id) the token was issued from; none for bearer logins. */
  sessionId?: string;
  /**
   * When it was issued, in milliseconds (`iat_ms`; `iat` seconds for older tokens): a token
   * issued before the account was deactivated stays dead after a re-activation.
   */
  issuedAtMs?: number;
}

export interface IssuedUserToken {
  token: string;
  expiresAt: Date;
}

export async function issueUserToken(
  secret: Uint8Array,
  claims: UserTokenClaims,
  ttlSec = USER_TOKEN_TTL_SEC,
): Promise<IssuedUserToken> {
  const exp = Math.floor(Date.now() / 1000) + ttlSec;
  const token = await new SignJWT({
    team_id: claims.teamId,
    role: claims.role,
    typ: USER_TYP,
    iat_ms: Date.now(),
    ...(claims.sessionId ? { sid: claims.sessionId } : {}),
  })
    .setProtectedHeader({ alg: "HS256", typ: "JWT" })
    .setSubject(claims.userId)
    .setIssuedAt()
    .setExpirationTime(exp)
    .sign(secret);
  return { token, expiresAt: new Date(exp * 1000) };
}

/** The token's claims, or undefined for anything that is not a valid, unexpired user token. */
export async function verifyUserToken(
  secret: Uint8Array,
  token: string,
): Promise<UserTokenClaims | undefined> {
  let payload: Record<string, unknown>;
  try {
    ({ payload } = await jwtVerify(token, secret, { algorithms: ["HS256"] }));
  } catch (err) {
    if (err instanceof errors.JOSEError) return undefined;
    throw err;
  }
  const { sub, team_id: teamId, role, typ, sid, iat, iat_ms: iatMs } = payload;
  if (typ !== USER_TYP) return undefined;
  if (typeof sub !== "string" || typeof teamId !== "string") return undefined;
  if (typeof role !== "string" || !ROLES.includes(role as Role)) return undefined;
  if (sid !== undefined && typeof sid !== "string") return undefined;
  const issuedAtMs =
    typeof iatMs === "number" ? iatMs : typeof iat === "number" ? iat * 1000 : undefined;
  return {
    userId: sub,
    teamId,
    role: role as Role,
    ...(sid ? { sessionId: sid } : {}),
    ...(issuedAtMs !== undefined ? { issuedAtMs } : {}),
  };
}
