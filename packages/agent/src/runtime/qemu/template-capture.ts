// Templates made from a sandbox: its memory and disk (snapshotToTemplate), or only its disk,
// flattened (flattenToTemplate). The runtime supplies the sandbox (CaptureSource); the new
// version is built like every other one (QemuTemplates.buildVersion).
import { rm } from "node:fs/promises";
import { join } from "node:path";
import { RuntimeError, type RuntimeState, type SandboxSpec } from "../runtime.js";
import { envdUrl, runGuestCommand } from "./envd.js";
import { sandboxPath, TEMPLATE_DISK, TEMPLATE_ROOTFS } from "./paths.js";
import { runCommand } from "./process.js";
import { exists, type SandboxMachine } from "./sandbox-dir.js";
import { templatize } from "./template-snapshot.js";
import { checkTemplateName, directoryBytes, versionDir } from "./template-store.js";
import { type QemuTemplates, snapshotMeta } from "./templates.js";
import type { Vm } from "./vm.js";

export interface CaptureSource {
  spec: SandboxSpec;
  state: RuntimeState;
  sm: SandboxMachine;
  /** Runs `work` against the sandbox's QEMU (which it may stop), then lets the guest run again. */
  withStoppedVm(work: (vm: Vm) => Promise<void>): Promise<void>;
}

/** A sandbox may become any template but `base`. */
export function checkNewTemplateName(template: string): void {
  checkTemplateName(template);
  if (template === "base") {
    throw new RuntimeError(
      "invalid_argument",
      "base is the guest image's template and cannot be replaced",
    );
  }
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
export async function snapshotToTemplate(
  templates: QemuTemplates,
  src: CaptureSource,
  template: string,
): Promise<{ sizeBytes: number }> {
  const { spec, state, sm } = src;
  const parent = await templates.parentMeta(sm);
  const ctx = templates.snapshotCtx;
  return templates.withLock(template, async () => {
    const meta = await templates.buildVersion(template, async (paths) => {
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
        await src.withStoppedVm(async (vm) => {
          await vm.save(fullState, false, ctx.migrateTimeoutMs);
          // After a completed migration QEMU has flushed and released the image: a consistent copy.
          await copySparse(sandboxPath(spec.dir, "disk"), disk);
        });
      }
      await templatize(ctx, paths, sm.machine, fullState, { path: disk, format: "qcow2" });
      if (!state.paused) await rm(fullState, { force: true });
      return snapshotMeta(paths, sm.machine, {
        ...(parent.imageHash ? { imageHash: parent.imageHash } : {}),
        parent: { name: parent.name, version: parent.version },
        origin: "snapshot",
      });
    });
    logStored(templates, meta);
    return { sizeBytes: await directoryBytes(versionDir(templates.nestboxDir, meta)) };
  });
}

/**
 * The sandbox's disk, with its backing chain merged, becomes a sparse raw file of template
 * `template`, without memory: its sandboxes cold-boot, or prepareTemplate() boots and
 * snapshots it once. A running sandbox first flushes the guest's page cache (`sync` through
 * envd; needs spec.envdAccessToken once set), is stopped for the copy and continues after. A
 * paused sandbox contributes what its guest had written to disk when it was paused.
 */
export async function flattenToTemplate(
  templates: QemuTemplates,
  src: CaptureSource,
  template: string,
): Promise<{ sizeBytes: number }> {
  const { spec, state, sm } = src;
  const parent = await templates.parentMeta(sm);
  return templates.withLock(template, async () => {
    const meta = await templates.buildVersion(template, async (paths) => {
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
        const sync = await runGuestCommand(envdUrl(spec.network.sandboxAddress), "/bin/sync", [], {
          ...(spec.envdAccessToken ? { accessToken: spec.envdAccessToken } : {}),
        }).catch((error: unknown) => error as Error);
        if (sync instanceof Error || sync.exitCode !== 0) {
          templates.log.warn("guest sync before flatten failed; recent writes may be missing", {
            sandbox: spec.id,
            error: sync instanceof Error ? sync.message : `exit ${sync.exitCode}`,
          });
        }
        // `stop` flushes QEMU's caches; -U because QEMU still holds the image's write lock.
        await src.withStoppedVm(async (vm) => {
          await vm.qmp.execute("stop");
          await convert(true);
        });
      }
      return {
        format: 1,
        name: template,
        version: paths.version,
        createdAt: new Date().toISOString(),
        machine: { ...sm.machine },
        disk: { path: join(paths.dir, TEMPLATE_ROOTFS), format: "raw" },
        snapshot: null,
        ...(parent.imageHash ? { imageHash: parent.imageHash } : {}),
        origin: "flatten",
      };
    });
    logStored(templates, meta);
    return { sizeBytes: await directoryBytes(versionDir(templates.nestboxDir, meta)) };
  });
}

function logStored(
  templates: QemuTemplates,
  meta: { name: string; version: string; origin: string },
) {
  templates.log.info("template stored", {
    template: meta.name,
    version: meta.version,
    origin: meta.origin,
  });
}

/** `cp --sparse=always`: holes in qcow2 files stay holes. */
async function copySparse(from: string, to: string): Promise<void> {
  await runCommand(["cp", "--sparse=always", from, to]);
}
