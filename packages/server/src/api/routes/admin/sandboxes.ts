import { createRoute, z } from "@hono/zod-openapi";
import { userCaller } from "../../../auth/middleware.js";
import {
  type AdminSandboxRow,
  getTeamForAdmin,
  listSandboxesPage,
} from "../../../db/queries/admin.js";
import type { AdminService } from "../../../services/admin.js";
import { newRouter } from "../../app.js";
import type { AppDeps } from "../../context.js";
import { ErrorSchema, errorResponses, SandboxIdParam } from "../../schemas.js";
import { json } from "../auth-schemas.js";
import { SandboxSchema, sandboxView } from "../sandboxes.js";
import { adminErrors, auditAdmin, PageQuery, pageFields, pageOf } from "./shared.js";
import { AdminTemplateSchema, adminTemplateView, TemplateNameSchema } from "./templates.js";

const STATUSES = ["pending", "running", "paused", "stopped", "error", "missing"] as const;

const AdminSandboxSchema = SandboxSchema.extend({
  team_id: z.string(),
  team_name: z.string(),
}).openapi("AdminSandbox");

const adminSandboxView = (s: AdminSandboxRow): z.infer<typeof AdminSandboxSchema> => ({
  ...sandboxView(s),
  team_id: s.team_id,
  team_name: s.team_name,
});

const ListQuery = PageQuery.extend({
  team_id: z
    .string()
    .regex(/^team_[a-z0-9]{20}$/, "must be a team id")
    .optional()
    .openapi({ param: { name: "team_id", in: "query" } }),
  host_id: z
    .string()
    .min(1)
    .max(64)
    .optional()
    .openapi({ param: { name: "host_id", in: "query" } }),
  status: z
    .enum(STATUSES)
    .optional()
    .openapi({ param: { name: "status", in: "query" } }),
});

/** `/admin/sandboxes`: every team's sandboxes; snapshots into platform templates. */
export function adminSandboxRoutes(deps: AppDeps, admin: AdminService, platformTeamId: string) {
  const r = newRouter();

  r.openapi(
    createRoute({
      method: "get",
      path: "/admin/sandboxes",
      summary: "Sandboxes of every team, newest first, by team, host and status",
      tags: ["admin"],
      security: [{ bearer: [] }],
      request: { query: ListQuery },
      responses: {
        200: {
          description: "A page of sandboxes",
          ...json(
            z
              .object({ sandboxes: z.array(AdminSandboxSchema), ...pageFields })
              .openapi("AdminSandboxPage"),
          ),
        },
        ...adminErrors,
      },
    }),
    async (c) => {
      const q = c.req.valid("query");
      const { rows, total } = await listSandboxesPage(deps.db, {
        page: q.page,
        perPage: q.per_page,
        teamId: q.team_id,
        hostId: q.host_id,
        status: q.status,
      });
      return c.json(
        { sandboxes: rows.map(adminSandboxView), ...pageOf(total, q.page, q.per_page) },
        200,
      );
    },
  );

  r.openapi(
    createRoute({
      method: "post",
      path: "/admin/sandboxes/{id}/snapshot",
      summary: "Snapshot any team's sandbox into a platform template (the sandbox is destroyed)",
      description:
        "Every team can then create sandboxes from it. A platform template of the same name is replaced (refused while other live sandboxes use it: 409 `invalid_state` with `sandbox_ids`); `base` cannot be replaced (403).",
      tags: ["admin"],
      security: [{ bearer: [] }],
      request: {
        params: SandboxIdParam,
        body: {
          ...json(z.object({ name: TemplateNameSchema }).strict().openapi("AdminSnapshot")),
          required: true,
        },
      },
      responses: {
        201: { description: "The platform template", ...json(AdminTemplateSchema) },
        ...adminErrors,
        409: errorResponses[409],
        502: { description: "The host agent failed", ...json(ErrorSchema) },
        503: errorResponses[503],
      },
    }),
    async (c) => {
      const caller = userCaller(c);
      const { id } = c.req.valid("param");
      const { name } = c.req.valid("json");
      const sandbox = await admin.sandbox(id);
      const { template, replaced } = await admin.templates.snapshotToPlatform(
        sandbox,
        name,
        caller.userId,
      );
      await auditAdmin(deps.db, caller, {
        teamId: sandbox.team_id,
        action: "template.snapshot",
        resourceType: "template",
        resourceId: template.id,
        metadata: { name, sandbox_id: id, platform: true, replaced: replaced?.id ?? null },
      });
      const platform = await getTeamForAdmin(deps.db, platformTeamId);
      const view = adminTemplateView(
        { ...template, team_name: platform?.name ?? "platform" },
        platformTeamId,
      );
      return c.json(view, 201);
    },
  );

  return r;
}
