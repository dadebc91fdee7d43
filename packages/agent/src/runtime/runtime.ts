import type { SandboxNetwork } from "../network/netns.js";

/**
 * The contract every sandbox runtime implements (qemu microVMs, bwrap namespaces). The sandbox
 * manager owns ids, directories, networks, TTLs and persistence; a runtime only starts, pauses,
 * resumes, snapshots and stops the thing that runs envd. One conformance suite
 * (test/agent/runtime-conformance.ts) runs against every implementation.
 */
export type RuntimeKind = "qemu" | "namespace";

export interface SandboxSpec {
  /** 20 characters [a-z0-9]. */
  readonly id: string;
  /** Template name: "base" (the guest image) or a snapshot/flattened template. */
  readonly template: string;
  readonly vcpus: number;
  readonly memoryMb: number;
  readonly diskSizeMb: number;
  /** Per-sandbox state directory, created (empty) by the manager; the runtime owns its files. */
  readonly dir: string;
  /** Created by the manager before `start`/`resume`, destroyed after `stop`. */
  readonly network: SandboxNetwork;
  /**
   * envd's access token once the manager has installed one (POST /init), for the few calls a
   * runtime makes to envd itself (qemu: setting the guest clock after a restore, `sync` before
   * a disk-only snapshot). Absent before /init.
   */
  readonly envdAccessToken?: string;
}

/**
 * What a runtime needs to find its sandbox again: persisted by the manager as JSON next to the
 * sandbox, so an agent restarted after `kill -9` can re-adopt or clean up.
 */
export interface RuntimeState {
  readonly kind: RuntimeKind;
  /** Main process (QEMU or the namespace's init); absent while paused to disk. */
  readonly pid?: number;
  /** `/proc/<pid>/stat` start time, so a recycled pid is never mistaken for ours. */
  readonly pidStartTime?: number;
  readonly paused: boolean;
  /** Runtime-specific details (paths, sockets, cgroup names). */
  readonly details: Record<string, string | number | boolean>;
}

export interface ResourceUsage {
  /** Percent of one CPU since the previous sample, 0..100×vcpus. */
  cpuPct: number;
  memBytes: number;
  diskBytes: number;
}

export interface TemplateSummary {
  name: string;
  /** Whether sandboxes start from a memory snapshot (fast) or boot. */
  hasMemorySnapshot: boolean;
  sizeBytes: number;
}

export class RuntimeError extends Error {
  constructor(
    readonly code:
      | "not_found"
      | "failed_precondition"
      | "invalid_argument"
      | "resource_exhausted"
      | "unavailable"
      | "internal",
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = "RuntimeError";
  }
}

export interface Runtime {
  readonly kind: RuntimeKind;

  /** Makes a template ready to start sandboxes from (qemu: boot once, snapshot). Idempotent. */
  prepareTemplate(template: string): Promise<void>;
  listTemplates(): Promise<TemplateSummary[]>;
  deleteTemplate(template: string): Promise<void>;

  /** Starts the sandbox; resolves once envd answers `GET /health` at the network's address. */
  start(spec: SandboxSpec): Promise<RuntimeState>;
  /** Pauses keeping memory. qemu writes the VM state into `spec.dir` and exits. */
  pause(spec: SandboxSpec, state: RuntimeState): Promise<RuntimeState>;
  /** Resumes a paused sandbox; resolves once envd answers again. */
  resume(spec: SandboxSpec, state: RuntimeState): Promise<RuntimeState>;
  /** Stops everything the runtime started for this sandbox and removes its files in `spec.dir`. */
  stop(spec: SandboxSpec, state: RuntimeState): Promise<void>;

  /** Stores the (paused) sandbox's memory and disk as a new template. */
  snapshotToTemplate(
    spec: SandboxSpec,
    state: RuntimeState,
    template: string,
  ): Promise<{ sizeBytes: number }>;
  /** Stores the sandbox's disk alone (sparse) as a new template; the sandbox is stopped first. */
  flattenToTemplate(
    spec: SandboxSpec,
    state: RuntimeState,
    template: string,
  ): Promise<{ sizeBytes: number }>;

  /** After an agent restart: true if the sandbox is intact and usable as `state` describes. */
  adopt(spec: SandboxSpec, state: RuntimeState): Promise<boolean>;
  usage(spec: SandboxSpec, state: RuntimeState): Promise<ResourceUsage>;
}
