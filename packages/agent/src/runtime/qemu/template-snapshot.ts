// Making memory snapshots that clones start from. A template's RAM lives in a file QEMU maps
// `share=on`, so after `stop` the file *is* the guest's memory; the migration stream saved with
// `x-ignore-shared` then holds only device state (tens of KiB). Clones map the same file
// `share=off` (private copy-on-write) and load that small stream.
//
// Two ways in:
// - bootAndSnapshot: cold-boot a disk (the guest image, or a flattened template's rootfs) until
//   envd answers, then snapshot;
// - templatize: a full migration stream (RAM included, e.g. a paused sandbox's) is loaded into a
//   QEMU whose RAM is a new shared file, and saved again with x-ignore-shared: the RAM ends up in
//   the file without ever running the guest in between.
import { rm } from "node:fs/promises";
import { join } from "node:path";
import type { MachineConfig } from "./machine.js";
import { TEMPLATE_DISK, TEMPLATE_MEM, TEMPLATE_STATE } from "./paths.js";
import { runCommand, sleep } from "./process.js";
import { createScratchNet, destroyScratchNet, waitForGuestEnvd } from "./scratch-net.js";
import type { VersionPaths } from "./template-store.js";
import { Vm } from "./vm.js";

export interface SnapshotContext {
  qemuBinary?: string;
  bootTimeoutMs: number;
  migrateTimeoutMs: number;
  /** Pause between envd answering and the snapshot, so the guest's boot work has settled. */
  settleMs: number;
}

/**
 * Boots `machine` on a new qcow2 overlay (in the version's build dir) of `backing`, waits for
 * envd, snapshots RAM (to `mem`) and device state (to `state`), and quits. On failure the QEMU
 * is killed; the caller removes the build dir.
 */
export async function bootAndSnapshot(
  ctx: SnapshotContext,
  paths: VersionPaths,
  machine: MachineConfig,
  backing: { path: string; format: "qcow2" | "raw" },
): Promise<{ bootMs: number; snapshotMs: number }> {
  const disk = join(paths.buildDir, TEMPLATE_DISK);
  await runCommand([
    "qemu-img",
    "create",
    "-q",
    "-f",
    "qcow2",
    "-F",
    backing.format,
    "-b",
    backing.path,
    disk,
  ]);
  const net = await createScratchNet();
  let vm: Vm | undefined;
  try {
    const started = Date.now();
    vm = await Vm.launch({
      machine,
      memory: { kind: "file", path: join(paths.buildDir, TEMPLATE_MEM), share: true },
      ...(ctx.qemuBinary ? { qemuBinary: ctx.qemuBinary } : {}),
      disk: { path: disk, format: "qcow2" },
      tap: net.tap,
      namespace: net.namespace,
      qmpSocket: join(paths.buildDir, "qmp.sock"),
      serialLog: join(paths.buildDir, "serial.log"),
      pidFile: join(paths.buildDir, "qemu.pid"),
      logFile: join(paths.buildDir, "qemu.log"),
      name: `nestbox-template-${paths.name}`,
      incoming: false,
    });
    const running = vm;
    try {
      await running.qmp.execute("cont");
      await Promise.race([waitForGuestEnvd(net, ctx.bootTimeoutMs), exitWatch(running)]);
      const bootMs = Date.now() - started;
      await sleep(ctx.settleMs);
      const snapStarted = Date.now();
      await running.save(join(paths.buildDir, TEMPLATE_STATE), true, ctx.migrateTimeoutMs);
      const snapshotMs = Date.now() - snapStarted;
      await running.quit();
      return { bootMs, snapshotMs };
    } catch (error) {
      throw await running.error(
        "internal",
        `template ${paths.name}: boot and snapshot failed`,
        error,
      );
    }
  } finally {
    if (vm?.alive()) await vm.kill();
    await destroyScratchNet(net);
    await removeRunFiles(paths.buildDir);
  }
}

/**
 * Loads the full migration stream `fullState` into a QEMU whose RAM is the version's new `mem`
 * file (shared), then saves device state alone with x-ignore-shared. The guest never runs.
 * `disk` (already in the build dir) is attached but not written.
 */
export async function templatize(
  ctx: SnapshotContext,
  paths: VersionPaths,
  machine: MachineConfig,
  fullState: string,
  disk: { path: string; format: "qcow2" | "raw" },
): Promise<void> {
  const net = await createScratchNet();
  let vm: Vm | undefined;
  try {
    vm = await Vm.launch({
      machine,
      memory: { kind: "file", path: join(paths.buildDir, TEMPLATE_MEM), share: true },
      ...(ctx.qemuBinary ? { qemuBinary: ctx.qemuBinary } : {}),
      disk,
      tap: net.tap,
      namespace: net.namespace,
      qmpSocket: join(paths.buildDir, "qmp.sock"),
      serialLog: join(paths.buildDir, "serial.log"),
      pidFile: join(paths.buildDir, "qemu.pid"),
      logFile: join(paths.buildDir, "qemu.log"),
      name: `nestbox-templatize-${paths.name}`,
      incoming: true,
    });
    const running = vm;
    try {
      await running.restore(fullState, false, ctx.migrateTimeoutMs);
      await running.save(join(paths.buildDir, TEMPLATE_STATE), true, ctx.migrateTimeoutMs);
      await running.quit();
    } catch (error) {
      throw await running.error("internal", `template ${paths.name}: re-snapshot failed`, error);
    }
  } finally {
    if (vm?.alive()) await vm.kill();
    await destroyScratchNet(net);
    await removeRunFiles(paths.buildDir);
  }
}

/** Rejects when the VM's process goes away (so a crashed boot does not wait for the deadline). */
async function exitWatch(vm: Vm): Promise<never> {
  while (vm.alive()) await sleep(100);
  throw new Error("QEMU exited");
}

async function removeRunFiles(dir: string): Promise<void> {
  for (const file of ["qmp.sock", "qemu.pid", "serial.log", "qemu.log"]) {
    await rm(join(dir, file), { force: true });
  }
}
