import type { ServerConfig } from "../config.js";
import type { Db } from "../db/db.js";
import type { AgentClients } from "../hosts/agent-clients.js";
import type { SandboxAccess } from "../services/sandbox-access.js";

// Re-exported: route modules import these from here.
export type { AppEnv, Caller, Role } from "../domain/caller.js";

/** What route modules are built from; each exports `xxxRoutes(deps): OpenAPIHono<AppEnv>`. */
export interface AppDeps {
  db: Db;
  config: ServerConfig;
  sandboxes: SandboxAccess;
  /** Connect clients of the host agents, for host-level calls (Terminate on a forced delete). */
  agents: AgentClients;
}
