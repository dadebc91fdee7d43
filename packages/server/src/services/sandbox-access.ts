import type { Client } from "@connectrpc/connect";
import type { HostAgentService } from "@nestbox/proto/hostagent";

export type AgentClient = Client<typeof HostAgentService>;

export type SandboxStatus = "pending" | "running" | "paused" | "stopped" | "error" | "missing";

/** One row of `sandboxes`, as the query layer returns it. */
export interface SandboxRow {
  id: string;
  team_id: string;
  host_id: string | null;
  template_id: string | null;
  template: string;
  status: SandboxStatus;
  error: string | null;
  vcpus: number;
  memory_mb: number;
  disk_size_mb: number;
  timeout_sec: number;
  allow_internet_access: boolean;
  env_vars: Record<string, string>;
  metadata: Record<string, string>;
  envd_version: string | null;
  envd_access_token: string | null;
  created_at: Date;
  started_at: Date | null;
  last_active_at: Date | null;
  ended_at: Date | null;
  updated_at: Date;
}

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
