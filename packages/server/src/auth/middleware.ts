import type { Context, MiddlewareHandler } from "hono";
import { createMiddleware } from "hono/factory";
import type { ServerConfig } from "../config.js";
import type { Queryable } from "../db/db.js";
import { getMembership } from "../db/queries/teams.js";
import { getUserById } from "../db/queries/users.js";
import type { AppEnv, Caller } from "../domain/caller.js";
import { ApiError, forbidden, unauthorized } from "../errors.js";
import { authenticateApiKey } from "./api-keys.js";
import { sessionIsLive } from "./sessions.js";
import { verifyUserToken } from "./user-tokens.js";

/** What authentication reads: the database and the JWT secret (the API's deps are one). */
export interface AuthDeps {
  db: Queryable;
  config: Pick<ServerConfig, "jwtSecret">;
}

export type UserCaller = Extract<Caller, { kind: "user" }>;

export interface CallerOptions {
  /** Whether an `X-API-Key` is accepted; team and account management take user sessions only. */
  apiKey: boolean;
}

const BEARER_RE = /^Bearer\s+(\S+)\s*$/i;

/**
 * The caller of a request from its headers (`X-API-Key`, or `Authorization: Bearer <user JWT>`),
 * or an ApiError: 401 for missing or invalid credentials, 403 for a disabled account. Exported
 * for WebSocket upgrades, which authenticate before any Hono middleware could run.
 */
export async function authenticateRequestHeaders(
  deps: AuthDeps,
  headers: Headers,
  options: CallerOptions = { apiKey: true },
): Promise<Caller> {
  const apiKey = headers.get("x-api-key");
  const authorization = headers.get("authorization");
  if (apiKey !== null && options.apiKey) {
    const key = await authenticateApiKey(deps.db, apiKey.trim());
    if (!key) throw unauthorized("invalid or revoked API key");
    return { kind: "api_key", ...key };
  }
  if (authorization !== null) {
    const token = BEARER_RE.exec(authorization)?.[1];
    if (!token) throw unauthorized("Authorization header must be `Bearer <token>`");
    return authenticateUserToken(deps, token);
  }
  if (apiKey !== null) {
    throw unauthorized("this route needs a user session (Authorization: Bearer), not an API key");
  }
  throw unauthorized(
    options.apiKey
      ? "missing credentials: send X-API-Key or Authorization: Bearer <token>"
      : "missing credentials: send Authorization: Bearer <token>",
  );
}

/**
 * A user session. The token only says who and which team; the account's status, the membership
 * and the role are read from the database on every request, so disabling an account or removing
 * a member takes effect at once.
 */
export async function authenticateUserToken(deps: AuthDeps, token: string): Promise<UserCaller> {
  const claims = await verifyUserToken(deps.config.jwtSecret, token);
  if (!claims) throw unauthorized("invalid or expired session token");
  if (claims.sessionId && !(await sessionIsLive(deps.db, claims.sessionId)))
    throw new ApiError(401, "session_revoked", "this session was signed out; log in again");
  const user = await getUserById(deps.db, claims.userId);
  if (!user) throw unauthorized("the session's account no longer exists");
  if (user.status !== "active") throw forbidden("this account is disabled");
  if (user.tokens_valid_after && (claims.issuedAtMs ?? 0) < user.tokens_valid_after.getTime())
    throw unauthorized("this token was issued before the account was deactivated; log in again");
  const membership = await getMembership(deps.db, claims.teamId, user.id);
  if (!membership) throw unauthorized("no longer a member of the session's team; log in again");
  return {
    kind: "user",
    userId: user.id,
    email: user.email,
    teamId: claims.teamId,
    role: membership.role,
    isAdmin: user.is_admin,
    ...(claims.sessionId ? { sessionId: claims.sessionId } : {}),
  };
}

/** Resolves the caller into `c.get("caller")` before the handler (and before body validation). */
export function requireCaller(deps: AuthDeps, options: CallerOptions): MiddlewareHandler<AppEnv> {
  return createMiddleware<AppEnv>(async (c, next) => {
    // Routers mounted on the same paths may each guard them; authenticate once per request
    // (unless this guard is stricter: user sessions only).
    const already = c.get("caller") as Caller | undefined;
    if (!already || (!options.apiKey && already.kind !== "user"))
      c.set("caller", await authenticateRequestHeaders(deps, c.req.raw.headers, options));
    await next();
  });
}

/** A user session whose account is a platform admin in the database right now. */
export function requireAdmin(deps: AuthDeps): MiddlewareHandler<AppEnv> {
  return createMiddleware<AppEnv>(async (c, next) => {
    const caller = await authenticateRequestHeaders(deps, c.req.raw.headers, { apiKey: false });
    if (caller.kind !== "user" || !caller.isAdmin) throw forbidden("admin access required");
    c.set("caller", caller);
    await next();
  });
}

/** The caller of a route behind `requireCaller(deps, { apiKey: false })` or `requireAdmin`. */
export function userCaller(c: Context<AppEnv>): UserCaller {
  const caller = c.get("caller");
  if (caller.kind !== "user") throw unauthorized("this route needs a user session");
  return caller;
}
