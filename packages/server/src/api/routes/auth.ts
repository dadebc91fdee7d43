import { createRoute, z } from "@hono/zod-openapi";
import { requireCaller, userCaller } from "../../auth/middleware.js";
import {
  burnPasswordCheck,
  hashPassword,
  PASSWORD_MAX_LENGTH,
  PASSWORD_MIN_LENGTH,
  verifyPassword,
} from "../../auth/passwords.js";
import { getLoginTeam, getMembership, getTeam, type TeamWithRole } from "../../db/queries/teams.js";
import { revokeOtherSessions } from "../../db/queries/user-sessions.js";
import {
  getUserByEmail,
  getUserById,
  insertUser,
  type UserRow,
  updateUserName,
  updateUserPassword,
} from "../../db/queries/users.js";
import { ApiError, conflict, forbidden, notFound, unauthorized } from "../../errors.js";
import { newId } from "../../ids.js";
import { newRouter, type RouteModule } from "../app.js";
import type { AppDeps } from "../context.js";
import { ErrorSchema, errorResponses } from "../schemas.js";
import {
  AuthResponseSchema,
  createTeamOwnedBy,
  EmailSchema,
  forbiddenResponse,
  idParam,
  isUniqueViolation,
  json,
  PersonNameSchema,
  TeamSchema,
  teamView,
  UserSchema,
  userView,
} from "./auth-schemas.js";
import { loginResponse, switchedResponse } from "./auth-session.js";

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

const UpdateMeBody = z.object({ name: PersonNameSchema }).strict().openapi("UpdateMe");

const ChangePasswordBody = z
  .object({
    current_password: z.string().min(1).max(PASSWORD_MAX_LENGTH),
    new_password: z.string().min(PASSWORD_MIN_LENGTH).max(PASSWORD_MAX_LENGTH),
  })
  .strict()
  .openapi("ChangePassword");

const WRONG_CREDENTIALS = "wrong e-mail or password";

export function authRoutes(deps: AppDeps) {
  const r = newRouter();
  const session = requireCaller(deps, { apiKey: false });

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
      return c.json(await loginResponse(c, deps, created.user, created.team), 201);
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
      return c.json(await loginResponse(c, deps, user, team), 200);
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
      return c.json(
        await switchedResponse(c, deps, user, { ...team, role: membership.role }, caller.sessionId),
        200,
      );
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

  r.openapi(
    createRoute({
      method: "patch",
      path: "/me",
      summary: "Change the logged-in user's name",
      tags: ["auth"],
      middleware: [session] as const,
      security: [{ bearer: [] }],
      request: { body: { ...json(UpdateMeBody), required: true } },
      responses: {
        200: { description: "The updated user", ...json(UserSchema) },
        400: errorResponses[400],
        401: errorResponses[401],
        ...forbiddenResponse,
      },
    }),
    async (c) => {
      const caller = userCaller(c);
      const user = await updateUserName(deps.db, caller.userId, c.req.valid("json").name);
      if (!user) throw unauthorized("the session's account no longer exists");
      return c.json(userView(user), 200);
    },
  );

  r.openapi(
    createRoute({
      method: "post",
      path: "/me/password",
      summary: "Change the password (signs out the user's other browser sessions)",
      tags: ["auth"],
      middleware: [session] as const,
      security: [{ bearer: [] }],
      request: { body: { ...json(ChangePasswordBody), required: true } },
      responses: {
        204: { description: "Changed" },
        400: {
          description: "Invalid input, or `wrong_password`: the current password is not right",
          ...json(ErrorSchema),
        },
        401: errorResponses[401],
        ...forbiddenResponse,
      },
    }),
    async (c) => {
      const caller = userCaller(c);
      const body = c.req.valid("json");
      const user = await getUserById(deps.db, caller.userId);
      if (!user) throw unauthorized("the session's account no longer exists");
      if (!(await verifyPassword(user.password_hash, body.current_password)))
        throw new ApiError(400, "wrong_password", "the current password is not right", {
          field: "current_password",
        });
      const hash = await hashPassword(body.new_password);
      await deps.db.transaction(async (tx) => {
        await updateUserPassword(tx, user.id, hash);
        await revokeOtherSessions(tx, user.id, caller.sessionId ?? null);
      });
      return c.body(null, 204);
    },
  );

  return r;
}

authRoutes satisfies RouteModule;
