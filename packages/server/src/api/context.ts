import type { ServerConfig } from "../config.js";
import type { Db } from "../db/db.js";
import type { AgentClients } from "../hosts/agent-clients.js";
import type { SandboxAccess } from "../services/sandbox-access.js";

export type Role = "owner" | "admin" | "member";

/**
 * Who is calling, resolved by the auth middleware (src/auth/middleware.ts) before any handler
 * runs. Every team-scoped query takes `teamId` from here, never from the request body.
 */
export type Caller =
  | {
      kind: "user";
      userId: string;
      email: string;
      teamId: string;
      role: Role;
      /** Read from the database on this request, not from the token. */
      isAdmin: boolean;
    }
  | { kind: "api_key"; keyId: string; keyName: string; teamId: string; createdBy: string | null };

/** What route modules are built from; each exports `xxxRoutes(deps): OpenAPIHono<AppEnv>`. */
export interface AppDeps {
  db: Db;
  config: ServerConfig;
  sandboxes: SandboxAccess;
  /** Connect clients of the host agents, for host-level calls (Terminate on a forced delete). */
  agents: AgentClients;
}

export interface AppEnv {
  Variables: { caller: Caller; requestId: string };
}
