// What the qemu runtime keeps in a sandbox directory besides QEMU's own files: machine.json,
// the record of how the sandbox's QEMU was built, which every later QEMU for it (resume) and
// every template made from it must match.
import { readFile, rm, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { RuntimeError, type RuntimeState } from "../runtime.js";
import type { MachineConfig } from "./machine.js";
import { sandboxFiles, sandboxPath } from "./paths.js";

export interface SandboxMachine {
  machine: MachineConfig;
  template: { name: string; version: string };
  /** How the current/last QEMU got its memory: clone of the template, cold boot, resume. */
  mode: "clone" | "boot" | "resume";
}

type Details = RuntimeState["details"];

/** The only fields of `details` this runtime writes; kept flat because details is flat. */
export function details(sm: SandboxMachine, dir: string): Details {
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

export async function writeMachine(dir: string, sm: SandboxMachine): Promise<void> {
  await writeFile(sandboxPath(dir, "machine"), `${JSON.stringify(sm, null, 2)}\n`);
}

export async function readMachine(dir: string): Promise<SandboxMachine> {
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

export async function removeSandboxFiles(dir: string): Promise<void> {
  for (const file of Object.values(sandboxFiles)) {
    await rm(join(dir, file), { force: true });
  }
}

export async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return false;
    throw error;
  }
}
