import { requireAdmin } from "../../auth/middleware.js";
import type { AdminService } from "../../services/admin.js";
import { newRouter, type RouteModule } from "../app.js";
import { adminSandboxRoutes } from "./admin/sandboxes.js";
import { adminTeamRoutes } from "./admin/teams.js";
import { adminTemplateRoutes } from "./admin/templates.js";
import { adminUserRoutes } from "./admin/users.js";

/**
 * Platform administration (`/v1/admin/…`): every route needs a user session whose account is a
 * platform admin in the database right now (checked on every request; API keys never are).
 */
export function adminRoutes(admin: AdminService, platformTeamId: string): RouteModule {
  return (deps) => {
    const r = newRouter();
    const guard = requireAdmin(deps);
    r.use("/admin", guard);
    r.use("/admin/*", guard);
    r.route("/", adminTeamRoutes(deps, admin));
    r.route("/", adminUserRoutes(deps, admin));
    r.route("/", adminTemplateRoutes(deps, admin, platformTeamId));
    r.route("/", adminSandboxRoutes(deps, admin, platformTeamId));
    return r;
  };
}
