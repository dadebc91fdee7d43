import { createRoute, z } from "@hono/zod-openapi";
import { userCaller } from "../../../auth/middleware.js";
import {
  type AdminTeamRow,
  enableTeamByoc,
  getTeamForAdmin,
  listTeamsPage,
} from "../../../db/queries/admin.js";
import { badRequest, notFound } from "../../../errors.js";
import type { AdminService } from "../../../services/admin.js";
import { newRouter } from "../../app.js";
import type { AppDeps } from "../../context.js";
import { idParam, json } from "../auth-schemas.js";
import {
  adminErrors,
  auditAdmin,
  conflictResponse,
  iso,
  PageQuery,
  pageFields,
  pageOf,
} from "./shared.js";

const AdminTeamSchema = z
  .object({
    id: z.string(),
    name: z.string(),
    slug: z.string(),
    is_byoc: z.boolean(),
    is_platform: z.boolean(),
    created_at: z.string().openapi({ format: "date-time" }),
    deleted_at: z.string().nullable().openapi({ format: "date-time" }),
    member_count: z.number().int(),
    owner_id: z.string().nullable(),
    owner_name: z.string().nullable(),
    owner_email: z.string().nullable(),
    /** Sandboxes pending, running, paused or missing. */
    active_sandbox_count: z.number().int(),
  })
  .openapi("AdminTeam");

const teamView = (t: AdminTeamRow): z.infer<typeof AdminTeamSchema> => ({
  ...t,
  created_at: t.created_at.toISOString(),
  deleted_at: iso(t.deleted_at),
});

const TeamParams = z.object({ id: idParam("team") });

/** `/admin/teams`: every team, BYOC, deletion of any team with its sandboxes. */
export function adminTeamRoutes(deps: AppDeps, admin: AdminService) {
  const r = newRouter();

  r.openapi(
    createRoute({
      method: "get",
      path: "/admin/teams",
      summary: "Every team: live ones first, newest first",
      tags: ["admin"],
      security: [{ bearer: [] }],
      request: { query: PageQuery },
      responses: {
        200: {
          description: "A page of teams",
          ...json(
            z.object({ teams: z.array(AdminTeamSchema), ...pageFields }).openapi("AdminTeamPage"),
          ),
        },
        ...adminErrors,
      },
    }),
    async (c) => {
      const { page, per_page } = c.req.valid("query");
      const { rows, total } = await listTeamsPage(deps.db, { page, perPage: per_page });
      return c.json({ teams: rows.map(teamView), ...pageOf(total, page, per_page) }, 200);
    },
  );

  r.openapi(
    createRoute({
      method: "put",
      path: "/admin/teams/{id}/byoc",
      summary: "Make a team bring-your-own-compute (one way)",
      description:
        "Its sandboxes then run only on its own BYOC hosts. `enabled: false` is refused: a team cannot go back to the shared hosts. Enabling it again is a no-op.",
      tags: ["admin"],
      security: [{ bearer: [] }],
      request: {
        params: TeamParams,
        body: {
          ...json(z.object({ enabled: z.boolean() }).strict().openapi("AdminTeamByoc")),
          required: true,
        },
      },
      responses: { 204: { description: "BYOC is on" }, ...adminErrors },
    }),
    async (c) => {
      const caller = userCaller(c);
      const { id } = c.req.valid("param");
      if (!c.req.valid("json").enabled)
        throw badRequest(
          "BYOC cannot be turned off: a BYOC team keeps running on its own hosts",
          "enabled",
        );
      const team = await getTeamForAdmin(deps.db, id);
      if (!team || team.deleted_at) throw notFound("team");
      if (team.is_byoc) return c.body(null, 204);
      if (!(await enableTeamByoc(deps.db, id))) throw notFound("team");
      await auditAdmin(deps.db, caller, {
        teamId: id,
        action: "team.set_byoc",
        resourceType: "team",
        resourceId: id,
        metadata: { name: team.name, enabled: true },
      });
      return c.body(null, 204);
    },
  );

  r.openapi(
    createRoute({
      method: "delete",
      path: "/admin/teams/{id}",
      summary: "Delete any team, destroying its live sandboxes",
      description:
        "Its API keys stop working and its members lose access at once. The platform team cannot be deleted (409 `conflict`).",
      tags: ["admin"],
      security: [{ bearer: [] }],
      request: { params: TeamParams },
      responses: { 204: { description: "Deleted" }, ...adminErrors, ...conflictResponse },
    }),
    async (c) => {
      const caller = userCaller(c);
      const { id } = c.req.valid("param");
      const team = await getTeamForAdmin(deps.db, id);
      if (!team || team.deleted_at) throw notFound("team");
      const { destroyed } = await admin.deleteTeam(id);
      await auditAdmin(deps.db, caller, {
        teamId: id,
        action: "team.delete",
        resourceType: "team",
        resourceId: id,
        metadata: { name: team.name, destroyed_sandboxes: destroyed },
      });
      return c.body(null, 204);
    },
  );

  return r;
}
