// The machine a template was booted as. A migration stream only loads into a QEMU with the same
// devices, RAM block names and sizes, so everything that shapes the machine is recorded once
// (template.json, and machine.json per sandbox) and every later QEMU for it — clones, resumes,
// template-izing restores — is built from that record rather than from current defaults.
import { type Accel, buildMicrovmArgv } from "../../qemu/cmdline.js";

export interface MachineConfig {
  kernel: string;
  initrd: string | null;
  cmdline: string;
  acpi: boolean;
  memoryMiB: number;
  vcpus: number;
  accel: Accel;
  cpu: string;
}

/**
 * Guest RAM. Always a memory backend named `mem`, so the RAM block is called `mem` in every
 * variant and a state saved from one variant loads into another:
 * - `file` + `share: true`: a template's RAM, written through to the file;
 * - `file` + `share: false`: a clone, mapping the template's file copy-on-write;
 * - `ram`: anonymous memory (cold boots, resumes from a full pause state).
 */
export type MemorySpec = { kind: "file"; path: string; share: boolean } | { kind: "ram" };

export interface LaunchSpec {
  machine: MachineConfig;
  memory: MemorySpec;
  qemuBinary?: string;
  disk: { path: string; format: "qcow2" | "raw" };
  tap: string;
  qmpSocket: string;
  serialLog: string;
  pidFile: string;
  name: string;
  /** Start with `-incoming defer` (restores); otherwise a cold boot. Both start with `-S`. */
  incoming: boolean;
}

export function launchArgv(spec: LaunchSpec): string[] {
  const m = spec.machine;
  const argv = buildMicrovmArgv({
    ...(spec.qemuBinary ? { qemuBinary: spec.qemuBinary } : {}),
    kernel: m.kernel,
    initrd: m.initrd,
    cmdline: m.cmdline,
    acpi: m.acpi,
    rootfs: { path: spec.disk.path, format: spec.disk.format },
    tap: { ifname: spec.tap },
    memoryMiB: m.memoryMiB,
    vcpus: m.vcpus,
    accel: m.accel,
    cpu: m.cpu,
    qmpSocket: spec.qmpSocket,
    serialLog: spec.serialLog,
    pidFile: spec.pidFile,
    name: spec.name,
    startPaused: true,
    ...(spec.incoming ? { incoming: "defer" } : {}),
  });
  const backend =
    spec.memory.kind === "file"
      ? `memory-backend-file,id=mem,size=${m.memoryMiB}M,mem-path=${checkComma(spec.memory.path)},share=${spec.memory.share ? "on" : "off"}`
      : `memory-backend-ram,id=mem,size=${m.memoryMiB}M`;
  argv.push("-object", backend, "-machine", "memory-backend=mem");
  return argv;
}

function checkComma(path: string): string {
  if (path.includes(",")) throw new Error(`path must not contain a comma: ${path}`);
  return path;
}
