import { createRoute, z } from "@hono/zod-openapi";
import { forgetRecentApiKeys } from "../../auth/api-keys.js";
import { requireAdmin, userCaller } from "../../auth/middleware.js";
import { recordAudit } from "../../db/queries/audit.js";
import { getUserById, listUsers, updateUserFlags } from "../../db/queries/users.js";
import { conflict, notFound } from "../../errors.js";
import { newRouter, type RouteModule } from "../app.js";
import type { AppDeps } from "../context.js";
import { errorResponses } from "../schemas.js";
import { forbiddenResponse, idParam, json, UserSchema, userView } from "./auth-schemas.js";

const PatchUserBody = z
  .object({
    status: z.enum(["active", "disabled"]).optional(),
    is_admin: z.boolean().optional(),
  })
  .refine((b) => b.status !== undefined || b.is_admin !== undefined, {
    message: "give status or is_admin",
    path: ["status"],
  })
  .openapi("AdminPatchUser");

const adminErrors = {
  400: errorResponses[400],
  401: errorResponses[401],
  ...forbiddenResponse,
} as const;

/** Platform administration; the admin flag is checked in the database on every request. */
export function adminRoutes(deps: AppDeps) {
  const r = newRouter();
  const admin = requireAdmin(deps);
  r.use("/admin", admin);
  r.use("/admin/*", admin);

  r.openapi(
    createRoute({
      method: "get",
      path: "/admin/users",
      summary: "Every user account, oldest first",
      tags: ["admin"],
      security: [{ bearer: [] }],
      responses: { 200: { description: "Users", ...json(z.array(UserSchema)) }, ...adminErrors },
    }),
    async (c) => c.json((await listUsers(deps.db)).map(userView), 200),
  );

  r.openapi(
    createRoute({
      method: "patch",
      path: "/admin/users/{id}",
      summary: "Disable or re-enable an account, or grant or remove the admin flag",
      tags: ["admin"],
      security: [{ bearer: [] }],
      request: {
        params: z.object({ id: idParam("usr") }),
        body: { ...json(PatchUserBody), required: true },
      },
      responses: {
        200: { description: "Updated", ...json(UserSchema) },
        ...adminErrors,
        404: errorResponses[404],
        409: errorResponses[409],
      },
    }),
    async (c) => {
      const caller = userCaller(c);
      const { id } = c.req.valid("param");
      const patch = c.req.valid("json");
      // Guards against the last admin locking everyone out by accident.
      if (id === caller.userId && (patch.status === "disabled" || patch.is_admin === false)) {
        throw conflict(
          "conflict",
          "you cannot disable your own account or remove your own admin flag",
        );
      }
      const before = await getUserById(deps.db, id);
      if (!before) throw notFound("user");
      const after = await updateUserFlags(deps.db, id, patch);
      if (!after) throw notFound("user");
      // A disabled user's keys stop working now, not after the key cache expires.
      forgetRecentApiKeys();
      const changes = [
        ["status", "user.status_change", before.status, after.status],
        ["is_admin", "user.admin_change", before.is_admin, after.is_admin],
      ] as const;
      for (const [, action, from, to] of changes) {
        if (from === to) continue;
        await recordAudit(deps.db, {
          teamId: null,
          actorType: "user",
          actorId: caller.userId,
          action,
          resourceType: "user",
          resourceId: id,
          metadata: { from, to, email: after.email },
        });
      }
      return c.json(userView(after), 200);
    },
  );

  return r;
}

adminRoutes satisfies RouteModule;
