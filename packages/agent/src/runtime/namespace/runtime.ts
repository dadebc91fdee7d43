// The `namespace` runtime: envd as the first process of a bubblewrap sandbox (own mount, pid,
// ipc, uts and cgroup namespaces) inside the sandbox's existing network namespace, on an
// overlayfs over a template root directory, limited and frozen through cgroup v1.
//
// Weaker isolation than the qemu runtime (one shared host kernel): for development and trusted
// code. What it cannot do, and says so rather than pretend:
// - a pause freezes the processes in RAM; it survives an agent restart but not a host reboot
//   (`details.memory: false`);
// - templates hold files only (`hasMemorySnapshot: false`): a sandbox started from a snapshot
//   template sees the files, not the processes that were running;
// - bwrap always sets no_new_privs, so setuid programs (sudo) do not elevate inside; envd
//   itself runs as root and starts root commands directly.
//
// A sandbox survives the agent: bwrap runs in its own session with its output in a file, the
// overlay is mounted in the host's mount namespace, and pid + start time + cgroup path are in
// RuntimeState, which is all `adopt` and `stop` need.
import type { ChildProcess } from "node:child_process";
import { access, constants, mkdir, rm, rmdir } from "node:fs/promises";
import { join } from "node:path";
import { type Logger, SILENT_LOGGER } from "../../log.js";
import { ENVD_PORT } from "../../network/netns.js";
import {
  type ResourceUsage,
  type Runtime,
  RuntimeError,
  type RuntimeState,
  type SandboxSpec,
  type TemplateSummary,
} from "../runtime.js";
import { DEFAULT_TOOLS, type HostTools, JOIN_CGROUP_FAILED, launchArgv } from "./bwrap.js";
import { findHierarchies, type Hierarchies, limitsFor, SandboxCgroup } from "./cgroup.js";
import { isGone } from "./command.js";
import { killAndWait, logTail, spawnDetached } from "./detached.js";
import { pidStartTime, waitForHealth } from "./health.js";
import { isMounted, mountOverlay, overlayPaths, unmountOverlay } from "./overlay.js";
import { TemplateStore, treeSize } from "./rootfs.js";

export interface NamespaceRuntimeOptions {
  /** `NESTBOX_DIR`: templates go to `templates-ns/`, guest images are read from `images/`. */
  nestboxDir: string;
  log?: Logger;
  /** Tasks (processes and threads) per sandbox. Default 4096; envd alone uses about 15. */
  pidsMax?: number;
  /** How long `start` and `resume` wait for envd's /health. Default 30 000 ms. */
  readyTimeoutMs?: number;
  /** Name of the parent cgroup in every hierarchy. Default `nestbox-ns`. */
  cgroupParent?: string;
  /** Paths of sh, nsenter and bwrap on the host. Defaults: /bin/sh, /usr/bin/… */
  tools?: Partial<HostTools>;
}

const SANDBOX_ID = /^[a-z0-9][a-z0-9-]{0,62}$/;
const NETNS_NAME = /^[A-Za-z0-9_.-]{1,64}$/;
/** Below this envd (Node) itself does not fit. */
const MIN_MEMORY_MB = 64;
/** How long a disk-usage figure is reused: `du` over the upper dir is not free. */
const DISK_USAGE_TTL_MS = 5_000;
const LOG_FILE = "sandbox.log";

interface CpuSample {
  cpuNs: number;
  atMs: number;
}

export class NamespaceRuntime implements Runtime {
  readonly kind = "namespace" as const;
  private readonly templates: TemplateStore;
  private readonly log: Logger;
  private readonly pidsMax: number;
  private readonly readyTimeoutMs: number;
  private readonly cgroupParent: string;
  private readonly tools: HostTools;
  private hierarchies: Hierarchies | undefined;
  private toolsChecked = false;
  /** Children started by this agent process, so their exit is seen at once during start. */
  private readonly children = new Map<string, ChildProcess>();
  private readonly cpuSamples = new Map<string, CpuSample>();
  private readonly diskSamples = new Map<string, { bytes: number; atMs: number }>();

  constructor(opts: NamespaceRuntimeOptions) {
    this.log = opts.log ?? SILENT_LOGGER;
    this.templates = new TemplateStore(
      join(opts.nestboxDir, "templates-ns"),
      join(opts.nestboxDir, "images"),
      this.log,
    );
    this.pidsMax = opts.pidsMax ?? 4096;
    this.readyTimeoutMs = opts.readyTimeoutMs ?? 30_000;
    this.cgroupParent = opts.cgroupParent ?? "nestbox-ns";
    this.tools = { ...DEFAULT_TOOLS, ...opts.tools };
  }

  prepareTemplate(template: string): Promise<void> {
    return this.templates.prepare(template);
  }

  listTemplates(): Promise<TemplateSummary[]> {
    return this.templates.list();
  }

  deleteTemplate(template: string): Promise<void> {
    return this.templates.delete(template);
  }

  async start(spec: SandboxSpec): Promise<RuntimeState> {
    checkSpec(spec);
    await this.checkTools();
    const template = await this.templates.get(spec.template);
    const paths = overlayPaths(spec.dir, template.root);
    const cgroup = this.cgroupOf(spec);
    if ((await isMounted(paths.merged)) || (await cgroup.exists())) {
      // Rolling back would tear down the sandbox that is already there.
      throw new RuntimeError("failed_precondition", `sandbox ${spec.id} is already started`);
    }
    const started = Date.now();

    let child: ChildProcess | undefined;
    let exitReason: string | null = null;
    try {
      // recursive: leftovers of a start interrupted by an agent crash are reused.
      await Promise.all(
        [paths.upper, paths.work, paths.merged].map((d) => mkdir(d, { recursive: true })),
      );
      // Independent of each other; both are undone by teardown() if either fails.
      await Promise.all([
        mountOverlay(paths, `nestbox-ns-${spec.id}`),
        cgroup.create(limitsFor(spec.vcpus, spec.memoryMb, this.pidsMax)),
      ]);
      const argv = launchArgv({
        tools: this.tools,
        netnsPath: `/run/netns/${spec.network.namespace}`,
        cgroupProcsFiles: cgroup.procsFiles(),
        rootfs: paths.merged,
        hostname: template.meta.hostname,
      });
      child = await spawnDetached(argv, join(spec.dir, LOG_FILE));
      const pid = child.pid;
      if (pid === undefined) throw new RuntimeError("internal", "sandbox process has no pid");
      child.once("exit", (code, signal) => {
        exitReason =
          code === JOIN_CGROUP_FAILED
            ? "could not join its cgroups"
            : `sandbox process exited (${code ?? signal})`;
        this.children.delete(spec.id);
      });
      this.children.set(spec.id, child);
      const pidStart = await pidStartTime(pid);
      if (pidStart === null) throw new RuntimeError("internal", "sandbox process exited at once");
      const spawnedMs = Date.now() - started;
      const healthMs = await waitForHealth(envdHealthUrl(spec), {
        deadlineMs: this.readyTimeoutMs,
        failed: () => exitReason,
      });
      this.log.debug?.("namespace sandbox started", {
        id: spec.id,
        spawnMs: spawnedMs,
        healthMs,
        totalMs: Date.now() - started,
      });
      return {
        kind: "namespace",
        pid,
        pidStartTime: pidStart,
        paused: false,
        details: {
          cgroup: cgroup.path,
          rootfs: paths.merged,
          upper: paths.upper,
          work: paths.work,
          lower: paths.lower,
          template: spec.template,
          hostname: template.meta.hostname,
          startedAtMs: started,
          // The pause of this runtime keeps processes in RAM only: gone after a host reboot.
          memory: false,
        },
      };
    } catch (error) {
      const tail = await logTail(join(spec.dir, LOG_FILE));
      await this.teardown(spec, undefined).catch((cleanup: unknown) => {
        this.log.error("rollback of a failed start failed", {
          id: spec.id,
          error: String(cleanup),
        });
      });
      if (error instanceof RuntimeError) {
        if (tail) error.message += `\n--- sandbox log ---\n${tail}`;
        throw error;
      }
      throw new RuntimeError("internal", `namespace sandbox ${spec.id} failed to start`, {
        cause: error,
      });
    }
  }

  async pause(spec: SandboxSpec, state: RuntimeState): Promise<RuntimeState> {
    checkState(state);
    const cgroup = this.cgroupOf(spec);
    if (!(await cgroup.exists())) {
      throw new RuntimeError("not_found", `sandbox ${spec.id} is not running`);
    }
    try {
      await cgroup.freeze();
    } catch (error) {
      // Half-frozen helps nobody: go back to running and report the failure.
      await cgroup.thaw().catch((thawError: unknown) => {
        this.log.error("cannot thaw after a failed freeze", {
          id: spec.id,
          error: String(thawError),
        });
      });
      throw error;
    }
    return { ...state, paused: true, details: { ...state.details, memory: false } };
  }

  async resume(spec: SandboxSpec, state: RuntimeState): Promise<RuntimeState> {
    checkState(state);
    const cgroup = this.cgroupOf(spec);
    if (!(await this.alive(state)) || !(await cgroup.exists())) {
      throw new RuntimeError(
        "failed_precondition",
        `sandbox ${spec.id} cannot be resumed: its processes are gone (host reboot?)`,
      );
    }
    await cgroup.thaw();
    await waitForHealth(envdHealthUrl(spec), { deadlineMs: this.readyTimeoutMs });
    return { ...state, paused: false };
  }

  async stop(spec: SandboxSpec, state: RuntimeState): Promise<void> {
    await this.teardown(spec, state);
  }

  async snapshotToTemplate(
    spec: SandboxSpec,
    state: RuntimeState,
    template: string,
  ): Promise<{ sizeBytes: number }> {
    return this.copyToTemplate(spec, state, template, "snapshot");
  }

  /** Copies the files like a snapshot, then stops the sandbox (as the qemu runtime does). */
  async flattenToTemplate(
    spec: SandboxSpec,
    state: RuntimeState,
    template: string,
  ): Promise<{ sizeBytes: number }> {
    const result = await this.copyToTemplate(spec, state, template, "flatten");
    await this.stop(spec, state);
    return result;
  }

  async adopt(spec: SandboxSpec, state: RuntimeState): Promise<boolean> {
    if (state.kind !== "namespace" || state.pid === undefined) return false;
    const cgroup = this.cgroupOf(spec);
    if (!(await this.alive(state))) return false;
    if (!(await isMounted(overlayPaths(spec.dir, "").merged))) return false;
    if (!(await cgroup.exists())) return false;
    // The pid must still be ours: in our freezer group (a recycled pid with an equal start time
    // is impossible, but a process that left the group is not a sandbox we can pause).
    const procs = await cgroup.pids();
    if (!procs.includes(state.pid)) return false;
    // A crash between freezing and persisting the state leaves them disagreeing: follow the
    // state the manager believes in.
    const frozen = (await cgroup.freezerState()) === "FROZEN";
    if (state.paused && !frozen) await cgroup.freeze();
    if (!state.paused && frozen) await cgroup.thaw();
    return true;
  }

  async usage(spec: SandboxSpec, state: RuntimeState): Promise<ResourceUsage> {
    checkState(state);
    const cgroup = this.cgroupOf(spec);
    const now = Date.now();
    const [cpuNs, memBytes, diskBytes] = await Promise.all([
      cgroup.cpuUsageNs(),
      cgroup.memoryBytes(),
      this.diskUsage(spec, now),
    ]);
    const startedAt =
      typeof state.details.startedAtMs === "number" ? state.details.startedAtMs : now;
    const prev = this.cpuSamples.get(spec.id) ?? { cpuNs: 0, atMs: startedAt };
    this.cpuSamples.set(spec.id, { cpuNs, atMs: now });
    const elapsedMs = now - prev.atMs;
    const cpuPct = elapsedMs > 0 ? Math.max(0, ((cpuNs - prev.cpuNs) / 1e6 / elapsedMs) * 100) : 0;
    return { cpuPct: Math.min(cpuPct, 100 * spec.vcpus), memBytes, diskBytes };
  }

  private async diskUsage(spec: SandboxSpec, now: number): Promise<number> {
    const cached = this.diskSamples.get(spec.id);
    if (cached && now - cached.atMs < DISK_USAGE_TTL_MS) return cached.bytes;
    const bytes = await treeSize(overlayPaths(spec.dir, "").upper);
    this.diskSamples.set(spec.id, { bytes, atMs: now });
    return bytes;
  }

  private async copyToTemplate(
    spec: SandboxSpec,
    state: RuntimeState,
    template: string,
    kind: "snapshot" | "flatten",
  ): Promise<{ sizeBytes: number }> {
    checkState(state);
    const cgroup = this.cgroupOf(spec);
    const merged = overlayPaths(spec.dir, "").merged;
    if (!(await isMounted(merged))) {
      throw new RuntimeError("failed_precondition", `sandbox ${spec.id} has no mounted root`);
    }
    // Frozen processes cannot change files mid-copy; the copy reads the merged view from the
    // host, where the sandbox's tmpfs mounts (/tmp, /run) do not exist: they are not kept.
    const wasFrozen = (await cgroup.freezerState()) === "FROZEN";
    if (!wasFrozen) await cgroup.freeze();
    try {
      const started = Date.now();
      const result = await this.templates.createFromTree(template, merged, {
        kind,
        sandboxId: spec.id,
      });
      this.log.info("namespace template created", {
        id: spec.id,
        template,
        kind,
        sizeBytes: result.sizeBytes,
        ms: Date.now() - started,
      });
      return result;
    } finally {
      if (!wasFrozen) await cgroup.thaw();
    }
  }

  /**
   * Kills, unmounts and removes everything of the sandbox, each step even if an earlier one
   * failed; missing pieces are fine. `state` is undefined when rolling back a failed start.
   */
  private async teardown(spec: SandboxSpec, state: RuntimeState | undefined): Promise<void> {
    const cgroup = this.cgroupOf(spec);
    const paths = overlayPaths(spec.dir, "");
    const errors: unknown[] = [];
    const step = async (what: string, fn: () => Promise<void>) => {
      try {
        await fn();
      } catch (error) {
        errors.push(new RuntimeError("internal", `${what}: ${String(error)}`, { cause: error }));
      }
    };

    await step("kill processes", () => cgroup.killAll());
    // Not in the cgroup only if it died before joining it or was moved out by hand.
    await step("kill main process", async () => {
      const child = this.children.get(spec.id);
      if (child?.pid !== undefined) await killAndWait(child.pid, null);
      if (state?.pid !== undefined && state.pidStartTime !== undefined) {
        await killAndWait(state.pid, state.pidStartTime);
      }
    });
    this.children.delete(spec.id);
    this.cpuSamples.delete(spec.id);
    this.diskSamples.delete(spec.id);
    let unmounted = false;
    await step("unmount overlay", async () => {
      await unmountOverlay(paths.merged);
      unmounted = true;
    });
    await step("remove cgroup", () => cgroup.remove());
    if (unmounted) {
      // Never recursive through the mount point: if it were still mounted, that would delete
      // through the overlay. Upper and work are plain directories of this sandbox.
      await step("remove files", async () => {
        await rmdirIfExists(paths.merged);
        await rm(paths.upper, { recursive: true, force: true });
        await rm(paths.work, { recursive: true, force: true });
        await rm(join(spec.dir, LOG_FILE), { force: true });
      });
    }
    if (errors.length > 0) {
      throw new RuntimeError("internal", `stopping sandbox ${spec.id} left pieces behind`, {
        cause: new AggregateError(errors),
      });
    }
  }

  private async alive(state: RuntimeState): Promise<boolean> {
    if (state.pid === undefined || state.pidStartTime === undefined) return false;
    return (await pidStartTime(state.pid)) === state.pidStartTime;
  }

  private cgroupOf(spec: SandboxSpec): SandboxCgroup {
    if (!SANDBOX_ID.test(spec.id)) {
      throw new RuntimeError("invalid_argument", `invalid sandbox id: ${JSON.stringify(spec.id)}`);
    }
    this.hierarchies ??= findHierarchies();
    return new SandboxCgroup(this.hierarchies, `${this.cgroupParent}/${spec.id}`);
  }

  private async checkTools(): Promise<void> {
    if (this.toolsChecked) return;
    for (const [name, path] of Object.entries(this.tools)) {
      try {
        await access(path, constants.X_OK);
      } catch (error) {
        const hint = name === "bwrap" ? " (install the Debian package bubblewrap)" : "";
        throw new RuntimeError("failed_precondition", `${name} not found at ${path}${hint}`, {
          cause: error,
        });
      }
    }
    this.toolsChecked = true;
  }
}

function envdHealthUrl(spec: SandboxSpec): string {
  return `http://${spec.network.sandboxAddress}:${ENVD_PORT}/health`;
}

function checkSpec(spec: SandboxSpec): void {
  if (!SANDBOX_ID.test(spec.id)) {
    throw new RuntimeError("invalid_argument", `invalid sandbox id: ${JSON.stringify(spec.id)}`);
  }
  if (!Number.isInteger(spec.vcpus) || spec.vcpus < 1) {
    throw new RuntimeError(
      "invalid_argument",
      `vcpus must be a positive integer, got ${spec.vcpus}`,
    );
  }
  if (!Number.isInteger(spec.memoryMb) || spec.memoryMb < MIN_MEMORY_MB) {
    throw new RuntimeError(
      "invalid_argument",
      `memoryMb must be an integer ≥ ${MIN_MEMORY_MB}, got ${spec.memoryMb}`,
    );
  }
  if (!NETNS_NAME.test(spec.network.namespace)) {
    throw new RuntimeError(
      "invalid_argument",
      `invalid network namespace: ${spec.network.namespace}`,
    );
  }
}

function checkState(state: RuntimeState): void {
  if (state.kind !== "namespace") {
    throw new RuntimeError(
      "invalid_argument",
      `state of a ${state.kind} sandbox given to namespace runtime`,
    );
  }
}

async function rmdirIfExists(path: string): Promise<void> {
  try {
    await rmdir(path);
  } catch (error) {
    if (!isGone(error)) throw error;
  }
}
