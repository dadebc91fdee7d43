import { createRoute, z } from "@hono/zod-openapi";
import { userCaller } from "../../../auth/middleware.js";
import { type AdminTemplateRow, listAllTemplates } from "../../../db/queries/admin.js";
import type { TemplateRow } from "../../../db/queries/templates.js";
import { TEMPLATE_NAME_RE } from "../../../ids.js";
import type { AdminService } from "../../../services/admin.js";
import { newRouter } from "../../app.js";
import type { AppDeps } from "../../context.js";
import { ErrorSchema } from "../../schemas.js";
import { json } from "../auth-schemas.js";
import { adminErrors, auditAdmin, conflictResponse } from "./shared.js";

export const TemplateNameSchema = z
  .string()
  .regex(
    TEMPLATE_NAME_RE,
    "must be 1-63 characters a-z, 0-9, . _ - (starting with a letter or digit)",
  );

export const AdminTemplateSchema = z
  .object({
    id: z.string(),
    name: z.string(),
    kind: z.enum(["base", "snapshot"]),
    team_id: z.string(),
    team_name: z.string(),
    /** A platform template: every team can create sandboxes from it. */
    is_platform: z.boolean(),
    vcpus: z.number().int().nullable(),
    memory_mb: z.number().int().nullable(),
    size_bytes: z.number().int(),
    /** The host that has its files (snapshots); null for `base`, which every host builds. */
    host_id: z.string().nullable(),
    created_at: z.string().openapi({ format: "date-time" }),
  })
  .openapi("AdminTemplate");

export const adminTemplateView = (
  t: TemplateRow & { team_name: string },
  platformTeamId: string,
): z.infer<typeof AdminTemplateSchema> => ({
  id: t.id,
  name: t.name,
  kind: t.kind,
  team_id: t.team_id,
  team_name: t.team_name,
  is_platform: t.team_id === platformTeamId,
  vcpus: t.vcpus,
  memory_mb: t.memory_mb,
  size_bytes: Number(t.size_bytes),
  host_id: t.host_id,
  created_at: t.created_at.toISOString(),
});

/** `/admin/templates`: every team's templates; deletion of platform templates on every host. */
export function adminTemplateRoutes(deps: AppDeps, admin: AdminService, platformTeamId: string) {
  const r = newRouter();

  r.openapi(
    createRoute({
      method: "get",
      path: "/admin/templates",
      summary: "Every template of every team, newest first",
      tags: ["admin"],
      security: [{ bearer: [] }],
      responses: {
        200: {
          description: "Templates",
          ...json(z.object({ templates: z.array(AdminTemplateSchema) })),
        },
        ...adminErrors,
      },
    }),
    async (c) => {
      const rows: AdminTemplateRow[] = await listAllTemplates(deps.db);
      return c.json({ templates: rows.map((t) => adminTemplateView(t, platformTeamId)) }, 200);
    },
  );

  r.openapi(
    createRoute({
      method: "delete",
      path: "/admin/templates/{name}",
      summary: "Delete a platform template from every online host",
      description:
        "Platform templates only (a team's is 404 here); `base` is refused (403). Refused while live sandboxes use it (409 `invalid_state` with `sandbox_ids`); a host that fails the delete keeps the template (502: retry).",
      tags: ["admin"],
      security: [{ bearer: [] }],
      request: {
        params: z.object({
          name: TemplateNameSchema.openapi({ param: { name: "name", in: "path" } }),
        }),
      },
      responses: {
        204: { description: "Deleted" },
        ...adminErrors,
        ...conflictResponse,
        502: { description: "A host failed to delete it", ...json(ErrorSchema) },
      },
    }),
    async (c) => {
      const caller = userCaller(c);
      const { name } = c.req.valid("param");
      const t = await admin.templates.deletePlatform(name);
      await auditAdmin(deps.db, caller, {
        teamId: null,
        action: "template.delete",
        resourceType: "template",
        resourceId: t.id,
        metadata: { name },
      });
      return c.body(null, 204);
    },
  );

  return r;
}
