// The `qemu` runtime: every sandbox is a QEMU microVM. Starting one is a clone of its template's
// memory snapshot (RAM file mapped copy-on-write + a few KiB of device state, see
// template-snapshot.ts) with a qcow2 overlay of the template's disk. Another machine size clones
// a size variant (the template booted and snapshotted once at that size); a cold boot only
// when the template has no snapshot, or is a user's memory snapshot asked for at another size.

import { mkdir, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { type AccelMode, resolveAccel } from "../../qemu/accel.js";
import { type Accel, guestKernelCmdline } from "../../qemu/cmdline.js";
import { type GuestImage, ImageNotBuiltError, loadGuestImage } from "../../qemu/image.js";
import {
  type ResourceUsage,
  type Runtime,
  RuntimeError,
  type RuntimeState,
  type SandboxSpec,
  type TemplateSummary,
} from "../runtime.js";
import { envdUrl, runGuestCommand, syncGuestClock, waitForHealth } from "./envd.js";
import type { MachineConfig } from "./machine.js";
import {
  sandboxFiles,
  sandboxPath,
  TEMPLATE_DISK,
  TEMPLATE_MEM,
  TEMPLATE_ROOTFS,
  TEMPLATE_STATE,
  templateDir,
} from "./paths.js";
import {
  allocatedBytes,
  isProcessAlive,
  killProcess,
  readStatFields,
  runCommand,
} from "./process.js";
import { withTemplateFileLock } from "./template-lock.js";
import { pruneStaleVariants, pruneTemplateVersions } from "./template-prune.js";
import { bootAndSnapshot, type SnapshotContext, templatize } from "./template-snapshot.js";
import {
  checkTemplateName,
  commitVersion,
  directoryBytes,
  listAllVersions,
  listSizeVariants,
  listTemplateNames,
  readCurrent,
  removeStaleBuilds,
  sizeVariantName,
  startVersion,
  type TemplateMeta,
  type VersionPaths,
  versionDir,
} from "./template-store.js";
import { livePidFromFile, Vm, vmError } from "./vm.js";

/** Structurally the agent's logger, so it can be passed as is. */
/**
 * Under TCG, V8's compilers in the guest's envd cost more than they save: every piece of JIT
 * code is translated again by TCG, in every clone (measured per idle clone: about 30 MiB less
 * PSS and faster first commands with JIT off). The guest's supervise-envd reads this flag from
 * the kernel command line; under KVM envd keeps its JIT.
 */
export const ENVD_NO_JIT = "nestbox.envd_jit=off";

export interface QemuLog {
  info(message: string, fields?: Record<string, unknown>): void;
  warn(message: string, fields?: Record<string, unknown>): void;
  error(message: string, fields?: Record<string, unknown>): void;
}

const SILENT: QemuLog = {
  info: () => undefined,
  warn: () => undefined,
  error: () => undefined,
};

export interface QemuRuntimeOptions {
  /** `$NESTBOX_DIR`: images in `images/`, templates in `templates/`. */
  nestboxDir: string;
  accel: AccelMode;
  qemuBinary?: string;
  log?: QemuLog;
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

/** What the runtime keeps in the sandbox directory about how its QEMU was built. */
interface SandboxMachine {
  machine: MachineConfig;
  template: { name: string; version: string };
  /** How the current/last QEMU got its memory: clone of the template, cold boot, resume. */
  mode: "clone" | "boot" | "resume";
}

type Details = RuntimeState["details"];

/** The only fields of `details` this runtime writes; kept flat because details is flat. */
function details(sm: SandboxMachine, dir: string): Details {
  return {
    template: sm.template.name,
    templateVersion: sm.template.version,
    mode: sm.mode,
    qmpSocket: sandboxPath(dir, "qmp"),
    memoryMiB: sm.machine.memoryMiB,
    vcpus: sm.machine.vcpus,
    accel: sm.machine.accel,
  };
}

export class QemuRuntime implements Runtime {
  readonly kind = "qemu" as const;
  private readonly nestboxDir: string;
  private readonly log: QemuLog;
  private readonly locks = new Map<string, Promise<unknown>>();
  private readonly cpuSamples = new Map<string, { ticks: number; at: number }>();
  private readonly snapshotCtx: SnapshotContext;
  private readonly restoreTimeoutMs: number;
  private accelLogged = false;

  constructor(private readonly options: QemuRuntimeOptions) {
    this.nestboxDir = options.nestboxDir;
    this.log = options.log ?? SILENT;
    this.restoreTimeoutMs = options.restoreTimeoutMs ?? 30_000;
    this.snapshotCtx = {
      ...(options.qemuBinary ? { qemuBinary: options.qemuBinary } : {}),
      bootTimeoutMs: options.bootTimeoutMs ?? 180_000,
      migrateTimeoutMs: options.migrateTimeoutMs ?? 120_000,
      settleMs: options.settleMs ?? 1_000,
    };
  }

  // ---------------------------------------------------------------- templates

  /**
   * `base`: boots the guest image once and snapshots it; reused while the image and accelerator
   * are unchanged, rebuilt into a new version otherwise. Other templates: a flattened one (disk
   * only) is booted and snapshotted the same way; one with a snapshot is left alone.
   */
  prepareTemplate(template: string): Promise<void> {
    checkTemplateName(template);
    return this.withLock(`template:${template}`, async () => {
      await this.prepareLocked(template);
    });
  }

  private async prepareLocked(template: string): Promise<TemplateMeta> {
    const current = await readCurrent(this.nestboxDir, template);
    if (template === "base") {
      const image = await this.image();
      const accel = await this.accel(image);
      const jitOff = accel === "tcg";
      if (
        current?.snapshot &&
        current.imageHash === image.manifest.hash &&
        current.machine.accel === accel &&
        current.machine.cmdline.includes(ENVD_NO_JIT) === jitOff
      ) {
        return current;
      }
      await removeStaleBuilds(this.nestboxDir, template);
      const machine: MachineConfig = {
        kernel: image.kernelPath,
        initrd: image.initrdPath,
        cmdline: guestKernelCmdline({
          image: image.manifest.cmdline,
          extra: jitOff ? [ENVD_NO_JIT] : [],
        }),
        acpi: image.manifest.acpi,
        memoryMiB: this.options.templateMemoryMiB ?? 512,
        vcpus: this.options.templateVcpus ?? 2,
        accel,
        cpu: accel === "kvm" ? "host" : "max",
      };
      this.log.info("preparing template", {
        template,
        reason: current ? "image, accelerator or guest command line changed" : "new",
      });
      return this.buildBooted(
        template,
        machine,
        { path: image.rootfsPath, format: "raw" },
        {
          imageHash: image.manifest.hash,
          origin: "image",
        },
      );
    }
    if (!current) throw new RuntimeError("not_found", `template ${template} does not exist`);
    if (current.snapshot) return current;
    await removeStaleBuilds(this.nestboxDir, template);
    this.log.info("preparing template", { template, reason: "no memory snapshot" });
    return this.buildBooted(template, current.machine, current.disk, {
      ...(current.imageHash ? { imageHash: current.imageHash } : {}),
      parent: { name: current.name, version: current.version },
      origin: "prepare",
    });
  }

  private async buildBooted(
    template: string,
    machine: MachineConfig,
    backing: { path: string; format: "qcow2" | "raw" },
    extra: Pick<TemplateMeta, "imageHash" | "parent" | "origin">,
  ): Promise<TemplateMeta> {
    const paths = await startVersion(this.nestboxDir, template);
    try {
      const timing = await bootAndSnapshot(this.snapshotCtx, paths, machine, backing);
      const meta: TemplateMeta = {
        format: 1,
        name: template,
        version: paths.version,
        createdAt: new Date().toISOString(),
        machine,
        disk: { path: join(paths.dir, TEMPLATE_DISK), format: "qcow2" },
        snapshot: { mem: join(paths.dir, TEMPLATE_MEM), state: join(paths.dir, TEMPLATE_STATE) },
        ...extra,
      };
      await commitVersion(paths, meta);
      this.log.info("template ready", { template, version: paths.version, ...timing });
      await pruneStaleVariants(this.nestboxDir, template, this.log)
        .then(() => pruneTemplateVersions(this.nestboxDir, template, this.log))
        .catch((err: unknown) =>
          this.log.warn("pruning old template versions failed", { template, err: String(err) }),
        );
      return meta;
    } catch (error) {
      await rm(paths.buildDir, { recursive: true, force: true });
      throw error;
    }
  }

  async listTemplates(): Promise<TemplateSummary[]> {
    const result: TemplateSummary[] = [];
    for (const name of await listTemplateNames(this.nestboxDir)) {
      const meta = await readCurrent(this.nestboxDir, name);
      if (!meta) continue;
      result.push({
        name,
        hasMemorySnapshot: meta.snapshot !== null,
        sizeBytes: await directoryBytes(versionDir(this.nestboxDir, meta)),
      });
    }
    return result;
  }

  /**
   * Removes a template with all its versions. Refused while another template's disk is an
   * overlay of one of its versions. Sandboxes still using it are the manager's to check: running
   * QEMUs keep their open files, but a paused one could not resume.
   */
  deleteTemplate(template: string): Promise<void> {
    checkTemplateName(template);
    return this.withLock(`template:${template}`, async () => {
      // Its size variants go with it (the manager has checked that no sandbox uses it), unless
      // another template was made from a sandbox of one of them.
      const variants = await listSizeVariants(this.nestboxDir, template);
      const family = new Set([template, ...variants]);
      const dependants = (await listAllVersions(this.nestboxDir)).filter(
        (meta) => meta.parent && family.has(meta.parent.name) && !family.has(meta.name),
      );
      if (dependants.length > 0) {
        const names = [...new Set(dependants.map((meta) => meta.name))].join(", ");
        throw new RuntimeError(
          "failed_precondition",
          `template ${template} is the base of template(s) ${names}; delete those first`,
        );
      }
      for (const variant of variants)
        await rm(templateDir(this.nestboxDir, variant), { recursive: true, force: true });
      await rm(templateDir(this.nestboxDir, template), { recursive: true, force: true });
    });
  }

  // ---------------------------------------------------------------- sandboxes

  async start(spec: SandboxSpec): Promise<RuntimeState> {
    let tpl = await this.templateForStart(spec.template);
    const sizeOf = (t: TemplateMeta) =>
      t.machine.memoryMiB === spec.memoryMb && t.machine.vcpus === spec.vcpus;
    // A freshly booted template at another size is booted and snapshotted once more at that
    // size; a user's memory snapshot keeps its own size (its processes live in that memory).
    if (tpl.snapshot !== null && !sizeOf(tpl) && tpl.origin !== "snapshot")
      tpl = await this.sizeVariant(tpl, spec.vcpus, spec.memoryMb, spec.id);
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
      await writeFile(sandboxPath(spec.dir, "machine"), `${JSON.stringify(sm, null, 2)}\n`);
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
      await this.removeSandboxFiles(spec.dir);
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
    const sm = await this.readMachine(spec.dir);
    const vm = await this.attach(spec, state);
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
    this.cpuSamples.delete(spec.id);
    return { kind: "qemu", paused: true, details: details(sm, spec.dir) };
  }

  async resume(spec: SandboxSpec, state: RuntimeState): Promise<RuntimeState> {
    const sm = await this.readMachine(spec.dir);
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
    await writeFile(sandboxPath(spec.dir, "machine"), `${JSON.stringify(resumed, null, 2)}\n`);
    await rm(pauseState, { force: true });
    return this.runningState(spec, resumed, vm);
  }

  async stop(spec: SandboxSpec, state: RuntimeState): Promise<void> {
    this.cpuSamples.delete(spec.id);
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
    await this.removeSandboxFiles(spec.dir);
  }

  // ---------------------------------------------------------------- snapshots

  /** Checks a new template's name; the sandbox's machine and the template it came from. */
  private async sourceForNewTemplate(spec: SandboxSpec, template: string) {
    checkTemplateName(template);
    if (template === "base") {
      throw new RuntimeError(
        "invalid_argument",
        "base is the guest image's template and cannot be replaced",
      );
    }
    const sm = await this.readMachine(spec.dir);
    return { sm, parent: await this.parentMeta(sm) };
  }

  /**
   * The sandbox's memory and disk become template `template` (a new version if it exists).
   * Running sandbox: `stop`, full migration to the new version's build dir, copy of the disk
   * overlay while QEMU has the image inactive, then `cont`: the sandbox runs on unchanged.
   * Paused sandbox: its pause.state is the input, and it stays resumable. Then the full state is
   * re-snapshotted into a shared RAM file (templatize), so clones of the new template start the
   * same way as clones of base. The new disk is the sandbox's overlay, still backed by the
   * parent template's disk: the parent cannot be deleted while this template exists.
   */
  async snapshotToTemplate(
    spec: SandboxSpec,
    state: RuntimeState,
    template: string,
  ): Promise<{ sizeBytes: number }> {
    const { sm, parent } = await this.sourceForNewTemplate(spec, template);
    return this.withLock(`template:${template}`, async () => {
      await removeStaleBuilds(this.nestboxDir, template);
      const paths = await startVersion(this.nestboxDir, template);
      try {
        const disk = join(paths.buildDir, TEMPLATE_DISK);
        let fullState: string;
        if (state.paused) {
          fullState = sandboxPath(spec.dir, "pauseState");
          if (!(await exists(fullState))) {
            throw new RuntimeError(
              "failed_precondition",
              `sandbox ${spec.id} is paused without a state file`,
            );
          }
          await copySparse(sandboxPath(spec.dir, "disk"), disk);
        } else {
          fullState = join(paths.buildDir, "full.state");
          await this.withStoppedVm(spec, state, async (vm) => {
            await vm.save(fullState, false, this.snapshotCtx.migrateTimeoutMs);
            // After a completed migration QEMU has flushed and released the image: a consistent copy.
            await copySparse(sandboxPath(spec.dir, "disk"), disk);
          });
        }
        await templatize(this.snapshotCtx, paths, sm.machine, fullState, {
          path: disk,
          format: "qcow2",
        });
        if (!state.paused) await rm(fullState, { force: true });
        await this.commit(paths, {
          format: 1,
          name: template,
          version: paths.version,
          createdAt: new Date().toISOString(),
          machine: sm.machine,
          disk: { path: join(paths.dir, TEMPLATE_DISK), format: "qcow2" },
          snapshot: { mem: join(paths.dir, TEMPLATE_MEM), state: join(paths.dir, TEMPLATE_STATE) },
          ...(parent.imageHash ? { imageHash: parent.imageHash } : {}),
          parent: { name: parent.name, version: parent.version },
          origin: "snapshot",
        });
        return { sizeBytes: await directoryBytes(paths.dir) };
      } catch (error) {
        await rm(paths.buildDir, { recursive: true, force: true });
        throw error;
      }
    });
  }

  /**
   * The sandbox's disk, with its backing chain merged, becomes a sparse raw file of template
   * `template`, without memory: its sandboxes cold-boot, or prepareTemplate() boots and
   * snapshots it once. A running sandbox first flushes the guest's page cache (`sync` through
   * envd; needs spec.envdAccessToken once set), is stopped for the copy and continues after. A
   * paused sandbox contributes what its guest had written to disk when it was paused.
   */
  async flattenToTemplate(
    spec: SandboxSpec,
    state: RuntimeState,
    template: string,
  ): Promise<{ sizeBytes: number }> {
    const { sm, parent } = await this.sourceForNewTemplate(spec, template);
    return this.withLock(`template:${template}`, async () => {
      await removeStaleBuilds(this.nestboxDir, template);
      const paths = await startVersion(this.nestboxDir, template);
      try {
        const rootfs = join(paths.buildDir, TEMPLATE_ROOTFS);
        const convert = (force: boolean) =>
          runCommand(
            [
              "qemu-img",
              "convert",
              ...(force ? ["-U"] : []),
              "-O",
              "raw",
              "-S",
              "4k",
              sandboxPath(spec.dir, "disk"),
              rootfs,
            ],
            { timeoutMs: 600_000 },
          );
        if (state.paused) {
          await convert(false);
        } else {
          const sync = await runGuestCommand(
            envdUrl(spec.network.sandboxAddress),
            "/bin/sync",
            [],
            {
              ...(spec.envdAccessToken ? { accessToken: spec.envdAccessToken } : {}),
            },
          ).catch((error: unknown) => error as Error);
          if (sync instanceof Error || sync.exitCode !== 0) {
            this.log.warn("guest sync before flatten failed; recent writes may be missing", {
              sandbox: spec.id,
              error: sync instanceof Error ? sync.message : `exit ${sync.exitCode}`,
            });
          }
          // `stop` flushes QEMU's caches; -U because QEMU still holds the image's write lock.
          await this.withStoppedVm(spec, state, async (vm) => {
            await vm.qmp.execute("stop");
            await convert(true);
          });
        }
        await this.commit(paths, {
          format: 1,
          name: template,
          version: paths.version,
          createdAt: new Date().toISOString(),
          machine: { ...sm.machine },
          disk: { path: join(paths.dir, TEMPLATE_ROOTFS), format: "raw" },
          snapshot: null,
          ...(parent.imageHash ? { imageHash: parent.imageHash } : {}),
          origin: "flatten",
        });
        return { sizeBytes: await directoryBytes(paths.dir) };
      } catch (error) {
        await rm(paths.buildDir, { recursive: true, force: true });
        throw error;
      }
    });
  }

  // ---------------------------------------------------------------- restart safety, metrics

  async adopt(spec: SandboxSpec, state: RuntimeState): Promise<boolean> {
    if (state.paused) {
      const running = livePidFromFile(sandboxPath(spec.dir, "pid"), spec.dir);
      return running === undefined && (await exists(sandboxPath(spec.dir, "pauseState")));
    }
    if (state.pid === undefined || !isProcessAlive(state.pid, state.pidStartTime)) return false;
    let vm: Vm | undefined;
    try {
      vm = await Vm.attach(
        state.pid,
        state.pidStartTime ?? 0,
        sandboxPath(spec.dir, "qmp"),
        sandboxPath(spec.dir, "log"),
        sandboxPath(spec.dir, "serial"),
        2_000,
      );
      const status = await vm.status();
      if (status === "running") return true;
      if (status === "paused" || status === "postmigrate") {
        // The agent died between `stop` and `cont` of a pause or snapshot: the guest is intact
        // and the manager believes it runs, so let it run (a half-written pause state goes).
        await vm.qmp.execute("cont");
        await rm(sandboxPath(spec.dir, "pauseStateTmp"), { force: true });
        await rm(sandboxPath(spec.dir, "pauseState"), { force: true });
        this.log.warn("adopt: continued a stopped VM", { sandbox: spec.id, status });
        return (await vm.status()) === "running";
      }
      return false;
    } catch (error) {
      this.log.warn("adopt: QMP does not answer", { sandbox: spec.id, error: String(error) });
      return false;
    } finally {
      vm?.qmp.close();
    }
  }

  async usage(spec: SandboxSpec, state: RuntimeState): Promise<ResourceUsage> {
    const diskBytes = await allocatedBytes(sandboxPath(spec.dir, "disk"));
    if (state.paused || state.pid === undefined || !isProcessAlive(state.pid, state.pidStartTime)) {
      return { cpuPct: 0, memBytes: 0, diskBytes };
    }
    const fields = readStatFields(state.pid);
    // utime and stime are fields 14 and 15 of /proc/<pid>/stat (index 11 and 12 after comm).
    const ticks = fields ? Number(fields[11]) + Number(fields[12]) : 0;
    const now = Date.now();
    const previous = this.cpuSamples.get(spec.id);
    this.cpuSamples.set(spec.id, { ticks, at: now });
    let cpuPct = 0;
    if (previous && now > previous.at) {
      // USER_HZ is 100 on every Linux build the agent runs on.
      cpuPct = (((ticks - previous.ticks) / 100) * 1000 * 100) / (now - previous.at);
      cpuPct = Math.max(0, Math.round(cpuPct * 10) / 10);
    }
    return { cpuPct, memBytes: await pssBytes(state.pid), diskBytes };
  }

  // ---------------------------------------------------------------- helpers

  private async image(): Promise<GuestImage> {
    try {
      return await loadGuestImage("base", join(this.nestboxDir, "images"));
    } catch (error) {
      if (error instanceof ImageNotBuiltError) {
        throw new RuntimeError("failed_precondition", error.message, { cause: error });
      }
      throw error;
    }
  }

  private async accel(image: GuestImage): Promise<Accel> {
    const decision = await resolveAccel(this.options.accel, {
      ...(this.options.qemuBinary ? { qemuBinary: this.options.qemuBinary } : {}),
      probeKernel: {
        kernelPath: image.kernelPath,
        initrdPath: image.initrdPath,
        acpi: image.manifest.acpi,
      },
    });
    if (!this.accelLogged) {
      this.accelLogged = true;
      this.log.info("accelerator", { mode: this.options.accel, ...decision });
    }
    return decision.accel;
  }

  /** The template's current version; `base` is prepared on first use. */
  /**
   * The template's size variant (built on first use, under the variant's lock, and again after
   * the template changed), whose snapshot sandboxes of that size clone.
   */
  private sizeVariant(
    tpl: TemplateMeta,
    vcpus: number,
    memoryMiB: number,
    sandbox: string,
  ): Promise<TemplateMeta> {
    const name = sizeVariantName(tpl.name, vcpus, memoryMiB);
    return this.withLock(`template:${name}`, async () => {
      const current = await readCurrent(this.nestboxDir, name);
      if (
        current?.snapshot &&
        current.parent?.name === tpl.name &&
        current.parent.version === tpl.version
      )
        return current;
      await removeStaleBuilds(this.nestboxDir, name);
      this.log.info("preparing size variant", {
        sandbox,
        template: tpl.name,
        vcpus,
        memoryMiB,
        reason: current ? "the template changed" : "first sandbox of this size",
      });
      const meta = await this.buildBooted(name, { ...tpl.machine, vcpus, memoryMiB }, tpl.disk, {
        ...(tpl.imageHash ? { imageHash: tpl.imageHash } : {}),
        parent: { name: tpl.name, version: tpl.version },
        origin: "prepare",
      });
      // The variant's old version may have held the template's previous version.
      await pruneTemplateVersions(this.nestboxDir, tpl.name, this.log).catch((err: unknown) =>
        this.log.warn("pruning old template versions failed", {
          template: tpl.name,
          err: String(err),
        }),
      );
      return meta;
    });
  }

  private async templateForStart(template: string): Promise<TemplateMeta> {
    checkTemplateName(template);
    const current = await readCurrent(this.nestboxDir, template);
    if (current) return current;
    if (template === "base") {
      return this.withLock("template:base", () => this.prepareLocked("base"));
    }
    throw new RuntimeError("not_found", `template ${template} does not exist`);
  }

  private async parentMeta(sm: SandboxMachine): Promise<TemplateMeta> {
    const dir = join(templateDir(this.nestboxDir, sm.template.name), sm.template.version);
    try {
      return JSON.parse(await readFile(join(dir, "template.json"), "utf8")) as TemplateMeta;
    } catch (error) {
      throw new RuntimeError(
        "failed_precondition",
        `the sandbox's template ${sm.template.name}/${sm.template.version} is gone`,
        { cause: error },
      );
    }
  }

  private async commit(paths: VersionPaths, meta: TemplateMeta): Promise<void> {
    await mkdir(join(paths.dir, ".."), { recursive: true });
    await commitVersion(paths, meta);
    this.log.info("template stored", {
      template: meta.name,
      version: meta.version,
      origin: meta.origin,
    });
  }

  /** Runs `work` against the sandbox's QEMU (which it may stop), then lets the guest run again. */
  private async withStoppedVm(
    spec: SandboxSpec,
    state: RuntimeState,
    work: (vm: Vm) => Promise<void>,
  ): Promise<void> {
    const vm = await this.attach(spec, state);
    try {
      await work(vm);
    } catch (error) {
      throw await vm.error("internal", `sandbox ${spec.id}`, error);
    } finally {
      // `cont` also re-activates the disk after a completed outgoing migration.
      if (vm.alive()) {
        await vm.qmp.execute("cont").catch((error: unknown) => {
          this.log.error("could not continue the sandbox after a snapshot", {
            sandbox: spec.id,
            error: String(error),
          });
        });
        await syncGuestClock(envdUrl(spec.network.sandboxAddress), spec.envdAccessToken).catch(
          (error: unknown) => {
            // Only a few seconds of drift: worth a warning, not a failed snapshot.
            this.log.warn("could not set the guest clock", {
              sandbox: spec.id,
              error: String(error),
            });
          },
        );
      }
      vm.qmp.close();
    }
  }

  private async attach(spec: SandboxSpec, state: RuntimeState): Promise<Vm> {
    if (state.pid === undefined || !isProcessAlive(state.pid, state.pidStartTime)) {
      throw new RuntimeError("failed_precondition", `sandbox ${spec.id}: QEMU is not running`);
    }
    try {
      return await Vm.attach(
        state.pid,
        state.pidStartTime ?? 0,
        sandboxPath(spec.dir, "qmp"),
        sandboxPath(spec.dir, "log"),
        sandboxPath(spec.dir, "serial"),
      );
    } catch (error) {
      throw await vmError(
        "unavailable",
        `sandbox ${spec.id}: QMP does not answer`,
        sandboxPath(spec.dir, "log"),
        sandboxPath(spec.dir, "serial"),
        error,
      );
    }
  }

  private async readMachine(dir: string): Promise<SandboxMachine> {
    try {
      return JSON.parse(await readFile(sandboxPath(dir, "machine"), "utf8")) as SandboxMachine;
    } catch (error) {
      throw new RuntimeError(
        "failed_precondition",
        `no qemu sandbox in ${dir}: ${(error as Error).message}`,
        {
          cause: error,
        },
      );
    }
  }

  private async removeSandboxFiles(dir: string): Promise<void> {
    for (const file of Object.values(sandboxFiles)) {
      await rm(join(dir, file), { force: true });
    }
  }

  /** Serialises operations per key (one template build at a time, per template). */
  private withLock<T>(key: string, task: () => Promise<T>): Promise<T> {
    const previous = this.locks.get(key) ?? Promise.resolve();
    // Template work is also serialised across processes sharing this NESTBOX_DIR.
    const template = key.startsWith("template:") ? key.slice("template:".length) : undefined;
    const work = template ? () => withTemplateFileLock(this.nestboxDir, template, task) : task;
    const run = previous.then(work, work);
    // The chain only orders work; each caller gets its own result or error through `run`.
    const settled = run.catch(() => undefined);
    this.locks.set(key, settled);
    void settled.then(() => {
      if (this.locks.get(key) === settled) this.locks.delete(key);
    });
    return run;
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return false;
    throw error;
  }
}

/** `cp --sparse=always`: holes in qcow2 files stay holes. */
async function copySparse(from: string, to: string): Promise<void> {
  await runCommand(["cp", "--sparse=always", from, to]);
}

/** Proportional set size: the QEMU's share of memory, counting CoW pages shared with siblings once. */
async function pssBytes(pid: number): Promise<number> {
  try {
    const text = await readFile(`/proc/${pid}/smaps_rollup`, "utf8");
    const kb = /^Pss:\s+(\d+) kB/m.exec(text)?.[1];
    return kb ? Number(kb) * 1024 : 0;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return 0;
    throw error;
  }
}
