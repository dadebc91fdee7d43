import { createRoute, z } from "@hono/zod-openapi";
import { requireCaller, userCaller } from "../../auth/middleware.js";
import {
  burnPasswordCheck,
  hashPassword,
  PASSWORD_MAX_LENGTH,
  PASSWORD_MIN_LENGTH,
  verifyPassword,
} from "../../auth/passwords.js";
import { issueUserToken } from "../../auth/user-tokens.js";
import type { Queryable } from "../../db/db.js";
import {
  addMembership,
  getLoginTeam,
  getMembership,
  getTeam,
  insertTeam,
  type TeamRow,
  type TeamWithRole,
} from "../../db/queries/teams.js";
import { getUserByEmail, getUserById, insertUser, type UserRow } from "../../db/queries/users.js";
import { ApiError, conflict, forbidden, notFound, unauthorized } from "../../errors.js";
import { newId, randomBase36 } from "../../ids.js";
import { newRouter, type RouteModule } from "../app.js";
import type { AppDeps } from "../context.js";
import { ErrorSchema, errorResponses } from "../schemas.js";

// ---- Shared account schemas (teams, API keys and admin routes use them too) ----

export const json = <T extends z.ZodTypeAny>(schema: T) => ({
  content: { "application/json": { schema } },
});

/** The 403 response, which the shared error list does not carry. */
export const forbiddenResponse = {
  403: { description: "Not allowed", ...json(ErrorSchema) },
} as const;

/** Trimmed and lowercased before it is checked, stored or looked up. */
export const EmailSchema = z
  .string()
  .trim()
  .toLowerCase()
  .max(254)
  .regex(/^[^\s@]+@[^\s@]+$/, "must be an e-mail address")
  .openapi({ example: "ada@example.com" });

export const PersonNameSchema = z.string().trim().min(1).max(100).openapi({ example: "Ada" });
export const TeamNameSchema = z.string().trim().min(1).max(100).openapi({ example: "Research" });

export const idParam = (prefix: "team" | "usr" | "key", name = "id") =>
  z
    .string()
    .regex(new RegExp(`^${prefix}_[a-z0-9]{20}$`), `must be an id of the form ${prefix}_…`)
    .openapi({ param: { name, in: "path" }, example: `${prefix}_k3j4h5g6f7d8s9a0q1w2` });

export const RoleSchema = z.enum(["owner", "admin", "member"]);

export const UserSchema = z
  .object({
    id: z.string(),
    email: z.string(),
    name: z.string(),
    is_admin: z.boolean(),
    status: z.enum(["active", "disabled"]),
    created_at: z.string().openapi({ format: "date-time" }),
  })
  .openapi("User");

export const TeamSchema = z
  .object({
    id: z.string(),
    name: z.string(),
    slug: z.string(),
    is_platform: z.boolean(),
    created_at: z.string().openapi({ format: "date-time" }),
    /** The caller's role in this team. */
    role: RoleSchema,
  })
  .openapi("Team");

export const userView = (u: UserRow): z.infer<typeof UserSchema> => ({
  id: u.id,
  email: u.email,
  name: u.name,
  is_admin: u.is_admin,
  status: u.status,
  created_at: u.created_at.toISOString(),
});

export const teamView = (t: TeamWithRole): z.infer<typeof TeamSchema> => ({
  id: t.id,
  name: t.name,
  slug: t.slug,
  is_platform: t.is_platform,
  created_at: t.created_at.toISOString(),
  role: t.role,
});

/** A URL-friendly, unique slug: the name's letters and digits plus a random suffix. */
export function teamSlug(name: string): string {
  const base = name
    .toLowerCase()
    .normalize("NFKD")
    .replace(/[^a-z0-9]+/g, "-")
    .replace(/^-+|-+$/g, "")
    .slice(0, 40)
    .replace(/-+$/, "");
  return `${base || "team"}-${randomBase36(6)}`;
}

/** Creates a team with `ownerId` as its owner (in the caller's transaction). */
export async function createTeamOwnedBy(
  tx: Queryable,
  name: string,
  ownerId: string,
  isDefault: boolean,
): Promise<TeamWithRole> {
  const team: TeamRow = await insertTeam(tx, { id: newId("team"), name, slug: teamSlug(name) });
  await addMembership(tx, {
    team_id: team.id,
    user_id: ownerId,
    role: "owner",
    is_default: isDefault,
  });
  return { ...team, role: "owner" };
}

/** PostgreSQL's unique_violation, as both drivers report it. */
export function isUniqueViolation(err: unknown): boolean {
  return typeof err === "object" && err !== null && (err as { code?: unknown }).code === "23505";
}

// ---- Auth routes ----

const AuthResponseSchema = z
  .object({ token: z.string(), user: UserSchema, team: TeamSchema })
  .openapi("AuthResponse");

const SignupBody = z
  .object({
    email: EmailSchema,
    password: z.string().min(PASSWORD_MIN_LENGTH).max(PASSWORD_MAX_LENGTH),
    name: PersonNameSchema,
  })
  .openapi("Signup");

const LoginBody = z
  .object({ email: EmailSchema, password: z.string().min(1).max(PASSWORD_MAX_LENGTH) })
  .openapi("Login");

const SwitchTeamBody = z.object({ team_id: idParam("team") }).openapi("SwitchTeam");

const MeSchema = z.object({ user: UserSchema, team: TeamSchema }).openapi("Me");

const WRONG_CREDENTIALS = "wrong e-mail or password";

export function authRoutes(deps: AppDeps) {
  const r = newRouter();
  const session = requireCaller(deps, { apiKey: false });

  const authResponse = async (user: UserRow, team: TeamWithRole) => ({
    token: await issueUserToken(deps.config.jwtSecret, {
      userId: user.id,
      teamId: team.id,
      role: team.role,
    }),
    user: userView(user),
    team: teamView(team),
  });

  r.openapi(
    createRoute({
      method: "post",
      path: "/auth/signup",
      summary: "Create an account and its own team",
      tags: ["auth"],
      request: { body: { ...json(SignupBody), required: true } },
      responses: {
        201: { description: "Signed up and logged in", ...json(AuthResponseSchema) },
        400: errorResponses[400],
        409: { description: "E-mail already registered", ...json(ErrorSchema) },
      },
    }),
    async (c) => {
      const body = c.req.valid("json");
      const passwordHash = await hashPassword(body.password);
      const taken = () => conflict("email_taken", "an account with this e-mail already exists");
      let created: { user: UserRow; team: TeamWithRole };
      try {
        created = await deps.db.transaction(async (tx) => {
          if (await getUserByEmail(tx, body.email)) throw taken();
          const user = await insertUser(tx, {
            id: newId("usr"),
            email: body.email,
            password_hash: passwordHash,
            name: body.name,
          });
          const team = await createTeamOwnedBy(tx, `${body.name}'s team`, user.id, true);
          return { user, team };
        });
      } catch (err) {
        // Two sign-ups with one e-mail at once: the unique index decides, the loser gets 409.
        if (isUniqueViolation(err)) throw taken();
        throw err;
      }
      return c.json(await authResponse(created.user, created.team), 201);
    },
  );

  r.openapi(
    createRoute({
      method: "post",
      path: "/auth/login",
      summary: "Log in with e-mail and password",
      tags: ["auth"],
      request: { body: { ...json(LoginBody), required: true } },
      responses: {
        200: { description: "Logged in", ...json(AuthResponseSchema) },
        400: errorResponses[400],
        401: errorResponses[401],
        ...forbiddenResponse,
      },
    }),
    async (c) => {
      const body = c.req.valid("json");
      const user = await getUserByEmail(deps.db, body.email);
      if (!user) {
        await burnPasswordCheck(body.password);
        throw unauthorized(WRONG_CREDENTIALS);
      }
      if (!(await verifyPassword(user.password_hash, body.password))) {
        throw unauthorized(WRONG_CREDENTIALS);
      }
      if (user.status !== "active") throw forbidden("this account is disabled");
      // A user removed from every team gets a fresh team of their own rather than no way in.
      const team =
        (await getLoginTeam(deps.db, user.id)) ??
        (await deps.db.transaction((tx) =>
          createTeamOwnedBy(tx, `${user.name}'s team`, user.id, true),
        ));
      return c.json(await authResponse(user, team), 200);
    },
  );

  r.openapi(
    createRoute({
      method: "post",
      path: "/auth/switch-team",
      summary: "A new session token for another team of the caller",
      tags: ["auth"],
      middleware: [session] as const,
      security: [{ bearer: [] }],
      request: { body: { ...json(SwitchTeamBody), required: true } },
      responses: {
        200: { description: "Switched", ...json(AuthResponseSchema) },
        400: errorResponses[400],
        401: errorResponses[401],
        ...forbiddenResponse,
        404: errorResponses[404],
      },
    }),
    async (c) => {
      const caller = userCaller(c);
      const { team_id: teamId } = c.req.valid("json");
      const membership = await getMembership(deps.db, teamId, caller.userId);
      const team = membership && (await getTeam(deps.db, teamId));
      if (!membership || !team) throw notFound("team");
      const user = await getUserById(deps.db, caller.userId);
      if (!user) throw unauthorized("the session's account no longer exists");
      return c.json(await authResponse(user, { ...team, role: membership.role }), 200);
    },
  );

  r.openapi(
    createRoute({
      method: "get",
      path: "/me",
      summary: "The logged-in user and the session's team",
      tags: ["auth"],
      middleware: [session] as const,
      security: [{ bearer: [] }],
      responses: {
        200: { description: "The caller", ...json(MeSchema) },
        401: errorResponses[401],
        ...forbiddenResponse,
      },
    }),
    async (c) => {
      const caller = userCaller(c);
      const [user, team] = await Promise.all([
        getUserById(deps.db, caller.userId),
        getTeam(deps.db, caller.teamId),
      ]);
      if (!user || !team) {
        throw new ApiError(401, "unauthorized", "the session's account or team no longer exists");
      }
      return c.json({ user: userView(user), team: teamView({ ...team, role: caller.role }) }, 200);
    },
  );

  return r;
}

authRoutes satisfies RouteModule;
