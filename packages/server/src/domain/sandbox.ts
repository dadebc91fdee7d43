/**
 * A sandbox as the database stores it, shared by the query layer, the services and the API.
 * It lives below all of them so `db/` never imports from `services/`.
 */

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
