// The qemu runtime's templates: `base` booted from the guest image, memory snapshots of
// flattened templates, size variants, listing and deletion, and the one way a new version is
// built (buildVersion). Templates made from a sandbox are in template-capture.ts. All template
// work on one name is serialised, within this process and across processes sharing the
// NESTBOX_DIR (template-lock.ts).

import { readFile, rm } from "node:fs/promises";
import { join } from "node:path";
import type { Logger } from "../../log.js";
import { type AccelMode, resolveAccel } from "../../qemu/accel.js";
import { type Accel, guestKernelCmdline } from "../../qemu/cmdline.js";
import { type GuestImage, ImageNotBuiltError, loadGuestImage } from "../../qemu/image.js";
import { RuntimeError, type TemplateSummary } from "../runtime.js";
import type { MachineConfig } from "./machine.js";
import { TEMPLATE_DISK, TEMPLATE_MEM, TEMPLATE_STATE, templateDir } from "./paths.js";
import type { SandboxMachine } from "./sandbox-dir.js";
import { withTemplateFileLock } from "./template-lock.js";
import { pruneStaleVariants, pruneTemplateVersions } from "./template-prune.js";
import { bootAndSnapshot, type SnapshotContext } from "./template-snapshot.js";
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

/**
 * Under TCG, V8's compilers in the guest's envd cost more than they save: every piece of JIT
 * code is translated again by TCG, in every clone (measured per idle clone: about 30 MiB less
 * PSS and faster first commands with JIT off). The guest's supervise-envd reads this flag from
 * the kernel command line; under KVM envd keeps its JIT.
 */
export const ENVD_NO_JIT = "nestbox.envd_jit=off";

/** The runtime's options that shape templates (see QemuRuntimeOptions). */
export interface TemplateOptions {
  nestboxDir: string;
  accel: AccelMode;
  qemuBinary?: string;
  templateMemoryMiB?: number;
  templateVcpus?: number;
}

/** template.json of a version holding a memory snapshot (`disk`, `mem`, `state` in its dir). */
export function snapshotMeta(
  paths: VersionPaths,
  machine: MachineConfig,
  extra: Pick<TemplateMeta, "imageHash" | "parent" | "origin">,
): TemplateMeta {
  return {
    format: 1,
    name: paths.name,
    version: paths.version,
    createdAt: new Date().toISOString(),
    machine,
    disk: { path: join(paths.dir, TEMPLATE_DISK), format: "qcow2" },
    snapshot: { mem: join(paths.dir, TEMPLATE_MEM), state: join(paths.dir, TEMPLATE_STATE) },
    ...extra,
  };
}

export class QemuTemplates {
  readonly nestboxDir: string;
  private readonly locks = new Map<string, Promise<unknown>>();
  private accelLogged = false;

  constructor(
    private readonly options: TemplateOptions,
    readonly log: Logger,
    readonly snapshotCtx: SnapshotContext,
  ) {
    this.nestboxDir = options.nestboxDir;
  }

  /**
   * `base`: boots the guest image once and snapshots it; reused while the image and accelerator
   * are unchanged, rebuilt into a new version otherwise. Other templates: a flattened one (disk
   * only) is booted and snapshotted the same way; one with a snapshot is left alone.
   */
  prepare(template: string): Promise<void> {
    checkTemplateName(template);
    return this.withLock(template, async () => {
      await this.prepareLocked(template);
    });
  }

  /** The template's current version; `base` is prepared on first use. */
  async forStart(template: string): Promise<TemplateMeta> {
    checkTemplateName(template);
    const current = await readCurrent(this.nestboxDir, template);
    if (current) return current;
    if (template === "base") {
      return this.withLock("base", () => this.prepareLocked("base"));
    }
    throw new RuntimeError("not_found", `template ${template} does not exist`);
  }

  /**
   * The template's size variant (built on first use, under the variant's lock, and again after
   * the template changed), whose snapshot sandboxes of that size clone.
   */
  sizeVariant(
    tpl: TemplateMeta,
    vcpus: number,
    memoryMiB: number,
    sandbox: string,
  ): Promise<TemplateMeta> {
    const name = sizeVariantName(tpl.name, vcpus, memoryMiB);
    return this.withLock(name, async () => {
      const current = await readCurrent(this.nestboxDir, name);
      if (
        current?.snapshot &&
        current.parent?.name === tpl.name &&
        current.parent.version === tpl.version
      )
        return current;
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

  async list(): Promise<TemplateSummary[]> {
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
  delete(template: string): Promise<void> {
    checkTemplateName(template);
    return this.withLock(template, async () => {
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

  /** The template version a sandbox was started from (its disk backs the sandbox's overlay). */
  async parentMeta(sm: SandboxMachine): Promise<TemplateMeta> {
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

  /**
   * Every new version is made this way, under the template's lock: leftovers of interrupted
   * builds go, `build` fills a fresh version's build dir and returns its template.json, and the
   * version is committed (becomes `current`). A failed build leaves no build dir behind.
   */
  async buildVersion(
    template: string,
    build: (paths: VersionPaths) => Promise<TemplateMeta>,
  ): Promise<TemplateMeta> {
    await removeStaleBuilds(this.nestboxDir, template);
    const paths = await startVersion(this.nestboxDir, template);
    try {
      const meta = await build(paths);
      await commitVersion(paths, meta);
      return meta;
    } catch (error) {
      await rm(paths.buildDir, { recursive: true, force: true });
      throw error;
    }
  }

  /** Serialises work on one template (or size variant), also across processes. */
  withLock<T>(template: string, task: () => Promise<T>): Promise<T> {
    const previous = this.locks.get(template) ?? Promise.resolve();
    const work = () => withTemplateFileLock(this.nestboxDir, template, task);
    const run = previous.then(work, work);
    // The chain only orders work; each caller gets its own result or error through `run`.
    const settled = run.catch(() => undefined);
    this.locks.set(template, settled);
    void settled.then(() => {
      if (this.locks.get(template) === settled) this.locks.delete(template);
    });
    return run;
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
        { imageHash: image.manifest.hash, origin: "image" },
      );
    }
    if (!current) throw new RuntimeError("not_found", `template ${template} does not exist`);
    if (current.snapshot) return current;
    this.log.info("preparing template", { template, reason: "no memory snapshot" });
    return this.buildBooted(template, current.machine, current.disk, {
      ...(current.imageHash ? { imageHash: current.imageHash } : {}),
      parent: { name: current.name, version: current.version },
      origin: "prepare",
    });
  }

  /** A new version of `template`: `machine` cold-booted on an overlay of `backing`, snapshotted. */
  private async buildBooted(
    template: string,
    machine: MachineConfig,
    backing: { path: string; format: "qcow2" | "raw" },
    extra: Pick<TemplateMeta, "imageHash" | "parent" | "origin">,
  ): Promise<TemplateMeta> {
    let timing: { bootMs: number; snapshotMs: number } | undefined;
    const meta = await this.buildVersion(template, async (paths) => {
      timing = await bootAndSnapshot(this.snapshotCtx, paths, machine, backing);
      return snapshotMeta(paths, machine, extra);
    });
    this.log.info("template ready", { template, version: meta.version, ...timing });
    await pruneStaleVariants(this.nestboxDir, template, this.log)
      .then(() => pruneTemplateVersions(this.nestboxDir, template, this.log))
      .catch((err: unknown) =>
        this.log.warn("pruning old template versions failed", { template, err: String(err) }),
      );
    return meta;
  }

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
}
