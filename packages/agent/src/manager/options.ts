import type { Logger } from "../log.js";
import type { Runtime } from "../runtime/runtime.js";

export interface ManagerOptions {
  nestboxDir: string;
  runtime: Runtime;
  log: Logger;
  /** Memory the agent may promise to sandboxes, in MiB (default: host RAM − 1 GiB, × overcommit). */
  memoryCapacityMb?: number;
  /** Free disk to keep for the host, in MiB (default 2048): creates are refused below it. */
  diskReserveMb?: number;
  /** Slots this agent may use (tests keep agents apart); default the whole range. */
  slotRange?: [number, number];
  /** How often the TTL reaper looks (default 1 s: E2B's SDK tests expect expiry within ~1 s). */
  reaperIntervalMs?: number;
  /**
   * One letter naming this agent's namespaces and veths (`nbx<letter>-<id>`, `nbx<letter>…`), so
   * agents sharing a host (tests) never take each other's sandboxes for orphans. Default "s".
   */
  instance?: string;
  /**
   * Sandboxes of the default shape (template `base`, 2 vCPUs, 512 MiB, internet on) kept started
   * and warmed up ahead of requests; a matching create takes one and only installs its own
   * token, env and user. Default 0 (none).
   */
  warmPool?: number;
  /** Sandbox starts (runtime start + /init) run at once; more wait (default: CPU count). */
  maxConcurrentStarts?: number;
}

export interface CreateParams {
  sandboxId?: string;
  template: string;
  vcpus?: number;
  memoryMb?: number;
  diskSizeMb?: number;
  timeoutSec?: number;
  envVars?: Record<string, string>;
  metadata?: Record<string, string>;
  defaultUser?: string;
  defaultWorkdir?: string;
  allowInternetAccess?: boolean;
  envdAccessToken?: string;
}
