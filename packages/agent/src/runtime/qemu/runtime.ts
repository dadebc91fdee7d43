// The `qemu` runtime: every sandbox is a QEMU microVM. Starting one is a clone of its template's
// memory snapshot (RAM file mapped copy-on-write + a few KiB of device state, see
// template-snapshot.ts) with a qcow2 overlay of the template's disk. Another machine size clones
// a size variant (the template booted and snapshotted once at that size); a cold boot only
// when the template has no snapshot, or is a user's memory snapshot asked for at another size.

import { rename, rm } from "node:fs/promises";
import { join } from "node:path";
import { type Logger, SILENT_LOGGER } from "../../log.js";
import type { AccelMode } from "../../qemu/accel.js";
import {
  type ResourceUsage,
  type Runtime,
  RuntimeError,
  type RuntimeState,
  type SandboxSpec,
  type TemplateSummary,
} from "../runtime.js";
import { envdUrl, runGuestCommand, syncGuestClock, waitForHealth } from "./envd.js";
import { sandboxPath, TEMPLATE_MEM, templateDir } from "./paths.js";
import { isProcessAlive, killProcess, runCommand } from "./process.js";
import {
  details,
  exists,
  readMachine,
  removeSandboxFiles,
  type SandboxMachine,
  writeMachine,
} from "./sandbox-dir.js";
import { adoptVm, attachVm, withStoppedVm } from "./sandbox-vm.js";
import {
  type CaptureSource,
  checkNewTemplateName,
  flattenToTemplate,
  snapshotToTemplate,
} from "./template-capture.js";
import type { SnapshotContext } from "./template-snapshot.js";
import type { TemplateMeta } from "./template-store.js";
import { QemuTemplates } from "./templates.js";
import { UsageMeter } from "./usage.js";
import { livePidFromFile, Vm } from "./vm.js";

export interface QemuRuntimeOptions {
  /** `$NESTBOX_DIR`: images in `images/`, templates in `templates/`. */
  nestboxDir: string;
  accel: AccelMode;
  qemuBinary?: string;
  log?: Logger;
  /** Machine size of templates booted from a disk (base, flattened). Default 512 MiB, 2 vCPUs. */
  templateMemoryMiB?: number;
  templateVcpus?: number;
  /** Deadline for a cold boot until envd answers. Default 180 s (TCG on a busy host). */
  bootTimeoutMs?: number;
  /** Deadline for envd after a restore. Default 30 s. */
  restoreTimeoutMs?: number;
  /** Deadline for a migration to or from a file. Default 120 s. */
  migrateTimeoutMs?: number;
  /** Wait after a template's envd first answers, before its snapshot. Default 1000 ms. */
  settleMs?: number;
  /**
   * Setting the guest clock after a restore costs one process start in the guest (~0.4 s
   * under TCG in a fresh clone, whose translation cache is cold). "wait" (default): start and
   * resume resolve after it, so the first command sees the right time. "background": they
   * resolve at /health and the clock is set concurrently (a command racing it may see the
   * snapshot's time). "off": never (e.g. if envd itself sets the clock on /init).
   */
  clockSync?: "wait" | "background" | "off";
}

export class QemuRuntime implements Runtime {
  readonly kind = "qemu" as const;
  private readonly nestboxDir: string;
  private readonly log: Logger;
  private readonly snapshotCtx: SnapshotContext;
  private readonly restoreTimeoutMs: number;
  private readonly templates: QemuTemplates;
  private readonly meter = new UsageMeter();

  constructor(private readonly options: QemuRuntimeOptions) {
    this.nestboxDir = options.nestboxDir;
    this.log = options.log ?? SILENT_LOGGER;
    this.restoreTimeoutMs = options.restoreTimeoutMs ?? 30_000;
    this.snapshotCtx = {
      ...(options.qemuBinary ? { qemuBinary: options.qemuBinary } : {}),
      bootTimeoutMs: options.bootTimeoutMs ?? 180_000,
      migrateTimeoutMs: options.migrateTimeoutMs ?? 120_000,
      settleMs: options.settleMs ?? 1_000,
    };
    this.templates = new QemuTemplates(options, this.log, this.snapshotCtx);
  }

  // ---------------------------------------------------------------- templates (templates.ts)

  prepareTemplate(template: string): Promise<void> {
    return this.templates.prepare(template);
  }

  listTemplates(): Promise<TemplateSummary[]> {
    return this.templates.list();
  }

  deleteTemplate(template: string): Promise<void> {
    return this.templates.delete(template);
  }

  // ---------------------------------------------------------------- sandboxes

  async start(spec: SandboxSpec): Promise<RuntimeState> {
    let tpl = await this.templates.forStart(spec.template);
    const sizeOf = (t: TemplateMeta) =>
      t.machine.memoryMiB === spec.memoryMb && t.machine.vcpus === spec.vcpus;
    // A freshly booted template at another size is booted and snapshotted once more at that
    // size; a user's memory snapshot keeps its own size (its processes live in that memory).
    if (tpl.snapshot !== null && !sizeOf(tpl) && tpl.origin !== "snapshot")
      tpl = await this.templates.sizeVariant(tpl, spec.vcpus, spec.memoryMb, spec.id);
    const clone = tpl.snapshot !== null && sizeOf(tpl);
    // The disk is never smaller than the template's (an overlay cannot shrink its base); a
    // larger disk_size_mb is grown once the guest runs.
    const templateDiskMiB = await this.virtualSizeMiB(tpl.disk);
    const growToMiB = spec.diskSizeMb > templateDiskMiB ? spec.diskSizeMb : undefined;
    if (!clone) {
      this.log.info("cold boot", {
        sandbox: spec.id,
        template: spec.template,
        reason: tpl.snapshot
          ? "a memory snapshot keeps its machine size"
          : "template has no memory snapshot",
      });
    }
    const sm: SandboxMachine = {
      machine: clone
        ? tpl.machine
        : { ...tpl.machine, memoryMiB: spec.memoryMb, vcpus: spec.vcpus },
      template: { name: tpl.name, version: tpl.version },
      mode: clone ? "clone" : "boot",
    };
    const disk = sandboxPath(spec.dir, "disk");
    try {
      await runCommand([
        "qemu-img",
        "create",
        "-q",
        "-f",
        "qcow2",
        "-F",
        tpl.disk.format,
        "-b",
        tpl.disk.path,
        disk,
      ]);
      await writeMachine(spec.dir, sm);
      const snapshot = clone ? tpl.snapshot : null;
      const vm = await this.launchAndRun(
        spec,
        sm,
        async (v) => {
          if (snapshot) await v.restore(snapshot.state, true, this.snapshotCtx.migrateTimeoutMs);
        },
        clone ? this.restoreTimeoutMs : this.snapshotCtx.bootTimeoutMs,
        undefined,
        growToMiB,
      );
      return this.runningState(spec, sm, vm);
    } catch (error) {
      await removeSandboxFiles(spec.dir);
      throw error;
    }
  }

  /**
   * Launches QEMU for the sandbox, runs `load` (a restore, or nothing for a cold boot), starts
   * the CPUs and waits for envd; then sets the guest clock. Kills QEMU on any failure.
   */
  private async launchAndRun(
    spec: SandboxSpec,
    sm: SandboxMachine,
    load: (vm: Vm) => Promise<void>,
    healthTimeoutMs: number,
    memory?: "ram",
    growDiskToMiB?: number,
  ): Promise<Vm> {
    const tplDir = join(templateDir(this.nestboxDir, sm.template.name), sm.template.version);
    const vm = await Vm.launch({
      machine: sm.machine,
      memory:
        sm.mode === "clone" && memory !== "ram"
          ? { kind: "file", path: join(tplDir, TEMPLATE_MEM), share: false }
          : { kind: "ram" },
      ...(this.options.qemuBinary ? { qemuBinary: this.options.qemuBinary } : {}),
      disk: { path: sandboxPath(spec.dir, "disk"), format: "qcow2" },
      tap: spec.network.tap,
      namespace: spec.network.namespace,
      qmpSocket: sandboxPath(spec.dir, "qmp"),
      serialLog: sandboxPath(spec.dir, "serial"),
      pidFile: sandboxPath(spec.dir, "pid"),
      logFile: sandboxPath(spec.dir, "log"),
      name: `nestbox-${spec.id}`,
      incoming: sm.mode !== "boot",
    });
    try {
      await load(vm);
      await vm.qmp.execute("cont");
      const url = envdUrl(spec.network.sandboxAddress);
      await waitForHealth(url, healthTimeoutMs, () => vm.exitReason());
      const clockMode = this.options.clockSync ?? "wait";
      if (clockMode !== "off") {
        const synced = syncGuestClock(url, spec.envdAccessToken).catch((error: unknown) => {
          // A sandbox with a wrong clock is still usable; refusing it would be worse.
          this.log.warn("could not set the guest clock", {
            sandbox: spec.id,
            error: (error as Error).message,
          });
        });
        if (clockMode === "wait") await synced;
      }
      if (growDiskToMiB) await this.growDisk(vm, url, spec, growDiskToMiB);
      vm.qmp.close();
      return vm;
    } catch (error) {
      await vm.kill();
      throw await vm.error("internal", `sandbox ${spec.id}: start failed`, error);
    }
  }

  /**
   * Grows a running guest's disk: QMP `block_resize` (the guest kernel sees the new capacity at
   * once), then an online `resize2fs` of its root filesystem as root through envd.
   */
  private async growDisk(vm: Vm, url: string, spec: SandboxSpec, mib: number): Promise<void> {
    const started = Date.now();
    await vm.qmp.execute("block_resize", { device: "rootfs", size: mib * 1024 * 1024 });
    const r = await runGuestCommand(url, "/sbin/resize2fs", ["/dev/vda"], {
      ...(spec.envdAccessToken ? { accessToken: spec.envdAccessToken } : {}),
      timeoutMs: 120_000,
    });
    if (r.exitCode !== 0)
      throw new RuntimeError(
        "internal",
        `growing the guest's filesystem to ${mib} MiB failed (exit ${r.exitCode}): ${r.stderr.trim()}`,
      );
    this.log.info("disk grown", { sandbox: spec.id, mib, ms: Date.now() - started });
  }

  private readonly diskSizes = new Map<string, number>();

  /** A template disk's virtual size in MiB (a template version's files never change). */
  private async virtualSizeMiB(disk: TemplateMeta["disk"]): Promise<number> {
    const known = this.diskSizes.get(disk.path);
    if (known !== undefined) return known;
    const { stdout } = await runCommand([
      "qemu-img",
      "info",
      "-U",
      "--output=json",
      "-f",
      disk.format,
      disk.path,
    ]);
    const mib = Math.floor(
      (JSON.parse(stdout) as { "virtual-size": number })["virtual-size"] / (1024 * 1024),
    );
    this.diskSizes.set(disk.path, mib);
    return mib;
  }

  private runningState(spec: SandboxSpec, sm: SandboxMachine, vm: Vm): RuntimeState {
    return {
      kind: "qemu",
      pid: vm.pid,
      pidStartTime: vm.startTime,
      paused: false,
      details: details(sm, spec.dir),
    };
  }

  /**
   * Pause to disk: the complete VM state, RAM included (a clone's RAM is a private copy of the
   * template's file, so x-ignore-shared would lose it), goes to `pause.state`; QEMU exits.
   */
  async pause(spec: SandboxSpec, state: RuntimeState): Promise<RuntimeState> {
    if (state.paused) return state;
    const sm = await readMachine(spec.dir);
    const vm = await attachVm(spec, state);
    const tmp = sandboxPath(spec.dir, "pauseStateTmp");
    try {
      await vm.save(tmp, false, this.snapshotCtx.migrateTimeoutMs);
      await rename(tmp, sandboxPath(spec.dir, "pauseState"));
    } catch (error) {
      await rm(tmp, { force: true });
      // Leave the sandbox as it was: running. If even `cont` fails, the pause error below is the
      // one worth reporting; adopt() continues a stopped VM later.
      if (vm.alive()) await vm.qmp.execute("cont").catch(() => undefined);
      vm.qmp.close();
      throw await vm.error("internal", `sandbox ${spec.id}: pause failed`, error);
    }
    await vm.quit();
    this.meter.forget(spec.id);
    return { kind: "qemu", paused: true, details: details(sm, spec.dir) };
  }

  async resume(spec: SandboxSpec, state: RuntimeState): Promise<RuntimeState> {
    const sm = await readMachine(spec.dir);
    if (!state.paused) {
      if (state.pid !== undefined && isProcessAlive(state.pid, state.pidStartTime)) return state;
      throw new RuntimeError(
        "failed_precondition",
        `sandbox ${spec.id} is neither paused nor running`,
      );
    }
    const pauseState = sandboxPath(spec.dir, "pauseState");
    if (!(await exists(pauseState))) {
      throw new RuntimeError(
        "failed_precondition",
        `sandbox ${spec.id} has no pause state to resume`,
      );
    }
    const resumed: SandboxMachine = { ...sm, mode: "resume" };
    const vm = await this.launchAndRun(
      spec,
      resumed,
      (v) => v.restore(pauseState, false, this.snapshotCtx.migrateTimeoutMs),
      this.restoreTimeoutMs,
      "ram",
    );
    // Only now: if anything above failed, pause.state is still there for another try.
    await writeMachine(spec.dir, resumed);
    await rm(pauseState, { force: true });
    return this.runningState(spec, resumed, vm);
  }

  async stop(spec: SandboxSpec, state: RuntimeState): Promise<void> {
    this.meter.forget(spec.id);
    const candidates: Array<{ pid: number; startTime: number | undefined }> = [];
    if (state.pid !== undefined) candidates.push({ pid: state.pid, startTime: state.pidStartTime });
    // A QEMU started by an interrupted start/resume may not be in `state` yet.
    const fromFile = livePidFromFile(sandboxPath(spec.dir, "pid"), spec.dir);
    if (fromFile && fromFile.pid !== state.pid) candidates.push(fromFile);
    for (const { pid, startTime } of candidates) {
      if (!isProcessAlive(pid, startTime)) continue;
      try {
        const vm = await Vm.attach(
          pid,
          startTime ?? 0,
          sandboxPath(spec.dir, "qmp"),
          sandboxPath(spec.dir, "log"),
          sandboxPath(spec.dir, "serial"),
          1_000,
        );
        await vm.quit(2_000);
      } catch (error) {
        // QMP unreachable (hung or busy QEMU): SIGKILL is the fallback, checked by start time.
        this.log.warn("QMP quit failed, killing QEMU", {
          sandbox: spec.id,
          pid,
          error: String(error),
        });
        await killProcess(pid, startTime);
      }
    }
    await removeSandboxFiles(spec.dir);
  }

  // ---------------------------------------------------------------- templates from sandboxes

  async snapshotToTemplate(
    spec: SandboxSpec,
    state: RuntimeState,
    template: string,
  ): Promise<{ sizeBytes: number }> {
    return snapshotToTemplate(
      this.templates,
      await this.captureSource(spec, state, template),
      template,
    );
  }

  async flattenToTemplate(
    spec: SandboxSpec,
    state: RuntimeState,
    template: string,
  ): Promise<{ sizeBytes: number }> {
    return flattenToTemplate(
      this.templates,
      await this.captureSource(spec, state, template),
      template,
    );
  }

  /** Checks a new template's name before anything else; the sandbox as template-capture.ts needs it. */
  private async captureSource(
    spec: SandboxSpec,
    state: RuntimeState,
    template: string,
  ): Promise<CaptureSource> {
    checkNewTemplateName(template);
    return {
      spec,
      state,
      sm: await readMachine(spec.dir),
      withStoppedVm: (work) => withStoppedVm(spec, state, this.log, work),
    };
  }

  // ---------------------------------------------------------------- restart safety, metrics

  adopt(spec: SandboxSpec, state: RuntimeState): Promise<boolean> {
    return adoptVm(spec, state, this.log);
  }

  usage(spec: SandboxSpec, state: RuntimeState): Promise<ResourceUsage> {
    return this.meter.measure(spec, state);
  }
}
