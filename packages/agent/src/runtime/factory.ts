import { accessSync, constants } from "node:fs";
import type { Logger } from "../log.js";
import type { Runtime, RuntimeKind } from "./runtime.js";

export interface RuntimeFactoryOptions {
  nestboxDir: string;
  accel: "auto" | "kvm" | "tcg";
  log: Logger;
}

/** qemu wherever QEMU is installed (the point of the product); namespaces otherwise. */
export async function defaultRuntimeKind(): Promise<RuntimeKind> {
  for (const dir of (process.env.PATH ?? "/usr/bin").split(":")) {
    try {
      accessSync(`${dir}/qemu-system-x86_64`, constants.X_OK);
      return "qemu";
    } catch (err) {
      // Not in this PATH entry.
      void err;
    }
  }
  return "namespace";
}

/** Runtimes are loaded lazily: each pulls in its own modules only when chosen. */
export async function createRuntime(
  kind: RuntimeKind,
  opts: RuntimeFactoryOptions,
): Promise<Runtime> {
  if (kind === "qemu") {
    const { QemuRuntime } = await import("./qemu/runtime.js");
    // envd sets the guest clock itself on the manager's /init (`--sync-clock`), without the
    // process start the runtime's own clock fix costs in a freshly restored guest.
    return new QemuRuntime({
      nestboxDir: opts.nestboxDir,
      accel: opts.accel,
      log: opts.log,
      clockSync: "off",
    });
  }
  const { NamespaceRuntime } = await import("./namespace/runtime.js");
  return new NamespaceRuntime({ nestboxDir: opts.nestboxDir, log: opts.log });
}
