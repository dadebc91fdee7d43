import { createRoute, type z } from "@hono/zod-openapi";
import type { Context } from "hono";
import { deleteCookie, getCookie, setCookie } from "hono/cookie";
import {
  endSessionByToken,
  rotateRefreshToken,
  SESSION_ACCESS_TTL_SEC,
  SESSION_TTL_SEC,
  startSession,
} from "../../auth/sessions.js";
import { issueUserToken } from "../../auth/user-tokens.js";
import { getLoginTeam, getMembership, getTeam, type TeamWithRole } from "../../db/queries/teams.js";
import { revokeUserSession, setSessionTeam } from "../../db/queries/user-sessions.js";
import { getUserById, type UserRow } from "../../db/queries/users.js";
import type { AppEnv } from "../../domain/caller.js";
import { ApiError, forbidden } from "../../errors.js";
import { newRouter } from "../app.js";
import type { AppDeps } from "../context.js";
import { ErrorSchema, errorResponses } from "../schemas.js";
import { AuthResponseSchema, json, teamView, userView } from "./auth-schemas.js";

/**
 * Cookie sessions for the dashboard. A login or sign-up that sends `X-Nestbox-CSRF: 1` starts
 * one: the refresh token goes into an HttpOnly, SameSite=Strict cookie scoped to /v1/auth and
 * the body carries a 10-minute access token. `POST /v1/auth/refresh` rotates the cookie,
 * `POST /v1/auth/logout` revokes it. Calls without the header (CLI, SDK, scripts) get a plain
 * bearer token as before and no cookie.
 */

export const REFRESH_COOKIE = "nbx_refresh";
export const CSRF_HEADER = "x-nestbox-csrf";
const COOKIE_PATH = "/v1/auth";

export type AuthBody = z.infer<typeof AuthResponseSchema>;

/** Whether this request asks for a cookie session (and is allowed to: same origin). */
export function wantsCookieSession(c: Context<AppEnv>, publicUrl: string): boolean {
  if (c.req.header(CSRF_HEADER) !== "1") return false;
  assertSameOrigin(c, publicUrl);
  return true;
}

/**
 * Routes that act on the cookie: the custom header cannot be sent cross-site without a CORS
 * preflight we never grant, and a browser's Origin must be ours (defence in depth for
 * browsers or proxies that get the first part wrong).
 */
export function assertCookieRequest(c: Context<AppEnv>, publicUrl: string): void {
  if (c.req.header(CSRF_HEADER) !== "1")
    throw new ApiError(
      403,
      "csrf",
      "cookie-authenticated requests need the header `X-Nestbox-CSRF: 1`",
    );
  assertSameOrigin(c, publicUrl);
}

function assertSameOrigin(c: Context<AppEnv>, publicUrl: string): void {
  if (c.req.header("sec-fetch-site") === "cross-site")
    throw new ApiError(403, "csrf", "cross-site requests cannot use the session cookie");
  const origin = c.req.header("origin");
  // Browsers send Origin on every POST; a client without one is not a browser page.
  if (origin === undefined) return;
  const own = new URL(c.req.url);
  const host = c.req.header("host");
  const allowed = new Set([new URL(publicUrl).origin, own.origin]);
  if (host) allowed.add(`${own.protocol}//${host}`);
  if (!allowed.has(origin))
    throw new ApiError(403, "csrf", `requests from ${origin} cannot use this session`);
}

const secureCookie = (c: Context<AppEnv>, publicUrl: string) =>
  new URL(c.req.url).protocol === "https:" || publicUrl.startsWith("https:");

function setRefreshCookie(c: Context<AppEnv>, publicUrl: string, token: string, maxAge: number) {
  setCookie(c, REFRESH_COOKIE, token, {
    httpOnly: true,
    sameSite: "Strict",
    path: COOKIE_PATH,
    secure: secureCookie(c, publicUrl),
    maxAge,
  });
}

function clearRefreshCookie(c: Context<AppEnv>, publicUrl: string) {
  deleteCookie(c, REFRESH_COOKIE, { path: COOKIE_PATH, secure: secureCookie(c, publicUrl) });
}

/** The body of login/sign-up/switch-team, and the cookie when the request started a session. */
export async function authResponse(
  c: Context<AppEnv>,
  deps: AppDeps,
  user: UserRow,
  team: TeamWithRole,
  session?: { sessionId: string; refreshToken?: string },
): Promise<AuthBody> {
  const claims = { userId: user.id, teamId: team.id, role: team.role };
  let issued: { token: string; expiresAt: Date };
  if (session) {
    issued = await issueUserToken(
      deps.config.jwtSecret,
      { ...claims, sessionId: session.sessionId },
      SESSION_ACCESS_TTL_SEC,
    );
    if (session.refreshToken)
      setRefreshCookie(c, deps.config.publicUrl, session.refreshToken, SESSION_TTL_SEC);
  } else {
    issued = await issueUserToken(deps.config.jwtSecret, claims);
  }
  return {
    token: issued.token,
    expires_at: issued.expiresAt.toISOString(),
    user: userView(user),
    team: teamView(team),
  };
}

/** Login/sign-up: a cookie session when asked for, else a bearer token. */
export async function loginResponse(
  c: Context<AppEnv>,
  deps: AppDeps,
  user: UserRow,
  team: TeamWithRole,
): Promise<AuthBody> {
  if (!wantsCookieSession(c, deps.config.publicUrl)) return authResponse(c, deps, user, team);
  const started = await startSession(deps.db, user.id, team.id);
  return authResponse(c, deps, user, team, {
    sessionId: started.session.id,
    refreshToken: started.refreshToken,
  });
}

/** Switch-team keeps a cookie session a cookie session: the family moves to the new team. */
export async function switchedResponse(
  c: Context<AppEnv>,
  deps: AppDeps,
  user: UserRow,
  team: TeamWithRole,
  sessionId: string | undefined,
): Promise<AuthBody> {
  if (!sessionId) return authResponse(c, deps, user, team);
  await setSessionTeam(deps.db, sessionId, team.id);
  return authResponse(c, deps, user, team, { sessionId });
}

const REFRESH_FAILED: Record<string, string> = {
  unknown: "no valid session cookie; log in again",
  expired: "the session has expired; log in again",
  revoked: "the session was signed out; log in again",
  reused:
    "this session's refresh token was used twice, so every token of the session is revoked; log in again",
};

export function authSessionRoutes(deps: AppDeps) {
  const r = newRouter();
  const publicUrl = deps.config.publicUrl;

  r.openapi(
    createRoute({
      method: "post",
      path: "/auth/refresh",
      summary: "A new access token for the session cookie (rotates the cookie)",
      description:
        "Browser sessions only: needs the `nbx_refresh` cookie set by a login or sign-up that sent `X-Nestbox-CSRF: 1`, and that header.",
      tags: ["auth"],
      responses: {
        200: { description: "Refreshed", ...json(AuthResponseSchema) },
        401: errorResponses[401],
        403: { description: "Missing CSRF header or foreign origin", ...json(ErrorSchema) },
      },
    }),
    async (c) => {
      assertCookieRequest(c, publicUrl);
      const token = getCookie(c, REFRESH_COOKIE);
      if (!token) throw new ApiError(401, "unauthorized", REFRESH_FAILED.unknown ?? "");
      const outcome = await rotateRefreshToken(deps.db, token);
      if (!outcome.ok) {
        clearRefreshCookie(c, publicUrl);
        const code = outcome.reason === "unknown" ? "unauthorized" : "session_revoked";
        throw new ApiError(401, code, REFRESH_FAILED[outcome.reason] ?? "log in again");
      }
      const { session } = outcome;
      const user = await getUserById(deps.db, session.user_id);
      if (user?.status !== "active") {
        await revokeUserSession(deps.db, session.id, "logout");
        clearRefreshCookie(c, publicUrl);
        if (user) throw forbidden("this account is disabled");
        throw new ApiError(401, "unauthorized", "the session's account no longer exists");
      }
      // Removed from the session's team meanwhile: continue in the user's login team.
      const membership = await getMembership(deps.db, session.team_id, user.id);
      const team = membership
        ? await getTeam(deps.db, session.team_id).then((t) => t && { ...t, role: membership.role })
        : await getLoginTeam(deps.db, user.id);
      if (!team) {
        await revokeUserSession(deps.db, session.id, "logout");
        clearRefreshCookie(c, publicUrl);
        throw new ApiError(401, "unauthorized", "the account belongs to no team; log in again");
      }
      if (team.id !== session.team_id) await setSessionTeam(deps.db, session.id, team.id);
      return c.json(
        await authResponse(c, deps, user, team, {
          sessionId: session.id,
          refreshToken: outcome.refreshToken,
        }),
        200,
      );
    },
  );

  r.openapi(
    createRoute({
      method: "post",
      path: "/auth/logout",
      summary: "End the browser session: revoke its refresh token family and clear the cookie",
      tags: ["auth"],
      responses: {
        204: { description: "Signed out (also when there was no session)" },
        403: { description: "Missing CSRF header or foreign origin", ...json(ErrorSchema) },
      },
    }),
    async (c) => {
      assertCookieRequest(c, publicUrl);
      const token = getCookie(c, REFRESH_COOKIE);
      if (token) await endSessionByToken(deps.db, token);
      clearRefreshCookie(c, publicUrl);
      return c.body(null, 204);
    },
  );

  return r;
}
