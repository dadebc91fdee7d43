import type { SandboxRow } from "../domain/sandbox.js";
import type { AgentClient } from "../hosts/agent-clients.js";

export type { SandboxRow, SandboxStatus } from "../domain/sandbox.js";
// Re-exported: route modules import these from here.
export type { AgentClient } from "../hosts/agent-clients.js";

/**
 * How command, file and stream routes reach a sandbox: a team-scoped lookup (another team's
 * sandbox is "not found", never revealed) and the Connect client of the host agent that runs it.
 */
export interface SandboxAccess {
  /** The caller's team's sandbox, any status; ApiError 404 otherwise. */
  get(teamId: string, sandboxId: string): Promise<SandboxRow>;
  /** Like get, but it must be running (ApiError 409 invalid_state) and its host reachable (503). */
  running(teamId: string, sandboxId: string): Promise<{ sandbox: SandboxRow; agent: AgentClient }>;
  /** Records activity (last_active_at) after exec, stream and PTY calls. */
  touch(sandboxId: string): Promise<void>;
}
