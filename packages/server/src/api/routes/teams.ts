import { createRoute, z } from "@hono/zod-openapi";
import { requireCaller, type UserCaller, userCaller } from "../../auth/middleware.js";
import { recordAudit } from "../../db/queries/audit.js";
import {
  addMembership,
  getMember,
  getMembership,
  getTeam,
  listMembers,
  listTeamsOfUser,
  type MemberRow,
  removeMembership,
  renameTeam,
  setMemberRole,
  type TeamWithRole,
} from "../../db/queries/teams.js";
import { getUserByEmail } from "../../db/queries/users.js";
import { conflict, forbidden, notFound } from "../../errors.js";
import { deleteTeam } from "../../services/teams.js";
import { newRouter, type RouteModule } from "../app.js";
import type { AppDeps } from "../context.js";
import { ErrorSchema, errorResponses } from "../schemas.js";
import {
  createTeamOwnedBy,
  EmailSchema,
  forbiddenResponse,
  idParam,
  json,
  RoleSchema,
  TeamNameSchema,
  TeamSchema,
  teamView,
} from "./auth-schemas.js";

const MemberSchema = z
  .object({
    user_id: z.string(),
    email: z.string(),
    name: z.string(),
    role: RoleSchema,
    joined_at: z.string().openapi({ format: "date-time" }),
  })
  .openapi("TeamMember");

const TeamDetailSchema = z
  .object({ team: TeamSchema, members: z.array(MemberSchema) })
  .openapi("TeamDetail");

const memberView = (m: MemberRow): z.infer<typeof MemberSchema> => ({
  user_id: m.user_id,
  email: m.email,
  name: m.name,
  role: m.role,
  joined_at: m.joined_at.toISOString(),
});

/** Roles that can be given; there is exactly one owner, the team's creator. */
const AssignableRole = z.enum(["admin", "member"]);

const TeamParams = z.object({ id: idParam("team") });
const MemberParams = z.object({ id: idParam("team"), user_id: idParam("usr", "user_id") });
const NameBody = z.object({ name: TeamNameSchema }).openapi("TeamName");
const AddMemberBody = z
  .object({ email: EmailSchema, role: AssignableRole.default("member") })
  .openapi("AddMember");
const RoleBody = z.object({ role: AssignableRole }).openapi("MemberRole");

const teamErrors = {
  400: errorResponses[400],
  401: errorResponses[401],
  ...forbiddenResponse,
  404: errorResponses[404],
} as const;

export function teamRoutes(deps: AppDeps) {
  const r = newRouter();
  const session = requireCaller(deps, { apiKey: false });
  r.use("/teams", session);
  r.use("/teams/*", session);

  /**
   * The team in the path with the caller's role in it, read from the database. A team the caller
   * is not in is "not found", so other teams' ids reveal nothing.
   */
  async function teamOfCaller(caller: UserCaller, teamId: string): Promise<TeamWithRole> {
    const membership = await getMembership(deps.db, teamId, caller.userId);
    const team = membership && (await getTeam(deps.db, teamId));
    if (!membership || !team) throw notFound("team");
    return { ...team, role: membership.role };
  }

  const requireManager = (team: TeamWithRole) => {
    if (team.role !== "owner" && team.role !== "admin") {
      throw forbidden("only the team's owner or admins can do this");
    }
  };

  const audit = (
    caller: UserCaller,
    teamId: string,
    action: string,
    resourceId: string,
    metadata: Record<string, unknown>,
  ) =>
    recordAudit(deps.db, {
      teamId,
      actorType: "user",
      actorId: caller.userId,
      action,
      resourceType: action.startsWith("team.") ? "team" : "user",
      resourceId,
      metadata,
    });

  r.openapi(
    createRoute({
      method: "get",
      path: "/teams",
      summary: "The caller's teams, with the caller's role in each",
      tags: ["teams"],
      security: [{ bearer: [] }],
      responses: {
        200: { description: "Teams", ...json(z.array(TeamSchema)) },
        401: errorResponses[401],
        ...forbiddenResponse,
      },
    }),
    async (c) => {
      const teams = await listTeamsOfUser(deps.db, userCaller(c).userId);
      return c.json(teams.map(teamView), 200);
    },
  );

  r.openapi(
    createRoute({
      method: "post",
      path: "/teams",
      summary: "Create a team owned by the caller",
      tags: ["teams"],
      security: [{ bearer: [] }],
      request: { body: { ...json(NameBody), required: true } },
      responses: { 201: { description: "Created", ...json(TeamSchema) }, ...teamErrors },
    }),
    async (c) => {
      const caller = userCaller(c);
      const { name } = c.req.valid("json");
      const team = await deps.db.transaction((tx) =>
        createTeamOwnedBy(tx, name, caller.userId, false),
      );
      await audit(caller, team.id, "team.create", team.id, { name });
      return c.json(teamView(team), 201);
    },
  );

  r.openapi(
    createRoute({
      method: "get",
      path: "/teams/{id}",
      summary: "A team of the caller, with its members",
      tags: ["teams"],
      security: [{ bearer: [] }],
      request: { params: TeamParams },
      responses: { 200: { description: "The team", ...json(TeamDetailSchema) }, ...teamErrors },
    }),
    async (c) => {
      const team = await teamOfCaller(userCaller(c), c.req.valid("param").id);
      const members = await listMembers(deps.db, team.id);
      return c.json({ team: teamView(team), members: members.map(memberView) }, 200);
    },
  );

  r.openapi(
    createRoute({
      method: "patch",
      path: "/teams/{id}",
      summary: "Rename a team (owner or admin)",
      tags: ["teams"],
      security: [{ bearer: [] }],
      request: { params: TeamParams, body: { ...json(NameBody), required: true } },
      responses: { 200: { description: "Renamed", ...json(TeamSchema) }, ...teamErrors },
    }),
    async (c) => {
      const caller = userCaller(c);
      const team = await teamOfCaller(caller, c.req.valid("param").id);
      requireManager(team);
      const { name } = c.req.valid("json");
      const renamed = await renameTeam(deps.db, team.id, name);
      await audit(caller, team.id, "team.rename", team.id, { from: team.name, to: name });
      return c.json(teamView({ ...renamed, role: team.role }), 200);
    },
  );

  r.openapi(
    createRoute({
      method: "delete",
      path: "/teams/{id}",
      summary: "Delete a team (owner only; it must have no live sandboxes)",
      description:
        "Its API keys stop working and its members lose access at once. Refused with `invalid_state` while sandboxes are pending, running, paused or missing: kill them first.",
      tags: ["teams"],
      security: [{ bearer: [] }],
      request: { params: TeamParams },
      responses: {
        204: { description: "Deleted" },
        ...teamErrors,
        409: { description: "The team still has live sandboxes", ...json(ErrorSchema) },
      },
    }),
    async (c) => {
      const caller = userCaller(c);
      const team = await teamOfCaller(caller, c.req.valid("param").id);
      if (team.role !== "owner") throw forbidden("only the team's owner can delete it");
      if (team.is_platform) throw forbidden("the platform team cannot be deleted");
      await deleteTeam(deps.db, team.id);
      await audit(caller, team.id, "team.delete", team.id, { name: team.name });
      return c.body(null, 204);
    },
  );

  r.openapi(
    createRoute({
      method: "post",
      path: "/teams/{id}/members",
      summary: "Add an existing user to a team (owner or admin)",
      tags: ["teams"],
      security: [{ bearer: [] }],
      request: { params: TeamParams, body: { ...json(AddMemberBody), required: true } },
      responses: {
        201: { description: "Added", ...json(MemberSchema) },
        ...teamErrors,
        409: { description: "Already a member", ...json(ErrorSchema) },
      },
    }),
    async (c) => {
      const caller = userCaller(c);
      const team = await teamOfCaller(caller, c.req.valid("param").id);
      requireManager(team);
      const { email, role } = c.req.valid("json");
      const user = await getUserByEmail(deps.db, email);
      if (!user) throw notFound("user with this e-mail");
      const added = await addMembership(deps.db, { team_id: team.id, user_id: user.id, role });
      if (!added) throw conflict("conflict", "this user already is a member of the team");
      await audit(caller, team.id, "member.add", user.id, { email, role });
      const member = await getMember(deps.db, team.id, user.id);
      if (!member) throw notFound("member");
      return c.json(memberView(member), 201);
    },
  );

  r.openapi(
    createRoute({
      method: "patch",
      path: "/teams/{id}/members/{user_id}",
      summary: "Change a member's role (owner or admin; the owner's role is fixed)",
      tags: ["teams"],
      security: [{ bearer: [] }],
      request: { params: MemberParams, body: { ...json(RoleBody), required: true } },
      responses: { 200: { description: "Changed", ...json(MemberSchema) }, ...teamErrors },
    }),
    async (c) => {
      const caller = userCaller(c);
      const params = c.req.valid("param");
      const team = await teamOfCaller(caller, params.id);
      requireManager(team);
      const { role } = c.req.valid("json");
      const target = await getMember(deps.db, team.id, params.user_id);
      if (!target) throw notFound("member");
      if (target.role === "owner") throw forbidden("the team owner's role cannot be changed");
      if (target.role !== role) {
        await setMemberRole(deps.db, team.id, target.user_id, role);
        await audit(caller, team.id, "member.role_change", target.user_id, {
          from: target.role,
          to: role,
        });
      }
      return c.json(memberView({ ...target, role }), 200);
    },
  );

  r.openapi(
    createRoute({
      method: "delete",
      path: "/teams/{id}/members/{user_id}",
      summary: "Remove a member (owner or admin), or leave a team (yourself)",
      tags: ["teams"],
      security: [{ bearer: [] }],
      request: { params: MemberParams },
      responses: { 204: { description: "Removed" }, ...teamErrors },
    }),
    async (c) => {
      const caller = userCaller(c);
      const params = c.req.valid("param");
      const team = await teamOfCaller(caller, params.id);
      const leaving = params.user_id === caller.userId;
      if (!leaving) requireManager(team);
      const target = await getMember(deps.db, team.id, params.user_id);
      if (!target) throw notFound("member");
      if (target.role === "owner") throw forbidden("the team owner cannot be removed");
      await removeMembership(deps.db, team.id, target.user_id);
      await audit(caller, team.id, leaving ? "member.leave" : "member.remove", target.user_id, {
        email: target.email,
        role: target.role,
      });
      return c.body(null, 204);
    },
  );

  return r;
}

teamRoutes satisfies RouteModule;
