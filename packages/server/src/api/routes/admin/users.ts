import { createRoute, z } from "@hono/zod-openapi";
import { forgetRecentApiKeys } from "../../../auth/api-keys.js";
import { userCaller } from "../../../auth/middleware.js";
import { type AdminUserRow, listUsersPage } from "../../../db/queries/admin.js";
import { getUserById, updateUserFlags } from "../../../db/queries/users.js";
import { conflict, notFound } from "../../../errors.js";
import type { AdminService } from "../../../services/admin.js";
import { newRouter } from "../../app.js";
import type { AppDeps } from "../../context.js";
import { idParam, json, UserSchema, userView } from "../auth-schemas.js";
import {
  adminErrors,
  auditAdmin,
  conflictResponse,
  PageQuery,
  pageFields,
  pageOf,
} from "./shared.js";

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

const AdminUserSchema = UserSchema.extend({
  /** Live teams the user is a member of (any role). */
  teams_joined: z.number().int(),
  /** Live teams the user owns. */
  teams_owned: z.number().int(),
}).openapi("AdminUser");

const adminUserView = (u: AdminUserRow): z.infer<typeof AdminUserSchema> => ({
  ...userView(u),
  teams_joined: u.teams_joined,
  teams_owned: u.teams_owned,
});

const UserParams = z.object({ id: idParam("usr") });

/** `/admin/users`: every account, (de)activation, the admin flag. */
export function adminUserRoutes(deps: AppDeps, admin: AdminService) {
  const r = newRouter();

  r.openapi(
    createRoute({
      method: "get",
      path: "/admin/users",
      summary: "Every user account, oldest first",
      tags: ["admin"],
      security: [{ bearer: [] }],
      request: { query: PageQuery },
      responses: {
        200: {
          description: "A page of users",
          ...json(
            z.object({ users: z.array(AdminUserSchema), ...pageFields }).openapi("AdminUserPage"),
          ),
        },
        ...adminErrors,
      },
    }),
    async (c) => {
      const { page, per_page } = c.req.valid("query");
      const { rows, total } = await listUsersPage(deps.db, { page, perPage: per_page });
      return c.json({ users: rows.map(adminUserView), ...pageOf(total, page, per_page) }, 200);
    },
  );

  r.openapi(
    createRoute({
      method: "put",
      path: "/admin/users/{id}/active",
      summary: "Activate or deactivate an account",
      description:
        "Deactivating also revokes every API key the user created (they stay revoked after a re-activation), ends their browser sessions, and destroys the live sandboxes of the teams they solely own. Not for your own account (409 `conflict`).",
      tags: ["admin"],
      security: [{ bearer: [] }],
      request: {
        params: UserParams,
        body: {
          ...json(z.object({ active: z.boolean() }).strict().openapi("AdminUserActive")),
          required: true,
        },
      },
      responses: {
        200: { description: "The account", ...json(UserSchema) },
        ...adminErrors,
        ...conflictResponse,
      },
    }),
    async (c) => {
      const caller = userCaller(c);
      const { id } = c.req.valid("param");
      const { active } = c.req.valid("json");
      const change = await admin.setActive(caller.userId, id, active);
      await auditAdmin(deps.db, caller, {
        teamId: null,
        action: active ? "user.activate" : "user.deactivate",
        resourceType: "user",
        resourceId: id,
        metadata: {
          email: change.user.email,
          ...(active
            ? {}
            : {
                revoked_keys: change.revokedKeys,
                ended_sessions: change.endedSessions,
                destroyed_sandboxes: change.destroyedSandboxes,
              }),
        },
      });
      return c.json(userView(change.user), 200);
    },
  );

  r.openapi(
    createRoute({
      method: "patch",
      path: "/admin/users/{id}",
      summary: "Suspend or re-enable an account, or grant or remove the admin flag",
      description:
        "`status: disabled` only shuts the account out (its keys work again when it is re-enabled); `PUT /admin/users/{id}/active` also revokes its keys, sessions and sandboxes.",
      tags: ["admin"],
      security: [{ bearer: [] }],
      request: { params: UserParams, body: { ...json(PatchUserBody), required: true } },
      responses: {
        200: { description: "Updated", ...json(UserSchema) },
        ...adminErrors,
        ...conflictResponse,
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
        ["user.status_change", before.status, after.status],
        ["user.admin_change", before.is_admin, after.is_admin],
      ] as const;
      for (const [action, from, to] of changes) {
        if (from === to) continue;
        await auditAdmin(deps.db, caller, {
          teamId: null,
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
