// QEMU `microvm` command lines. One function turns a typed config into argv so the boot test,
// the host agent and snapshot restores all start guests the same way; switching TCG for KVM is
// the `accel` field and nothing else.
import { readFileSync } from "node:fs";

export type Accel = "tcg" | "kvm";

export interface MicrovmConfig {
  /** Defaults to `qemu-system-x86_64` on PATH. */
  qemuBinary?: string;
  kernel: string;
  initrd?: string | null;
  /** Complete guest kernel command line; see {@link guestKernelCmdline}. */
  cmdline: string;
  rootfs: {
    path: string;
    format: "qcow2" | "raw";
    readOnly?: boolean;
  };
  /** TAP device (inside the sandbox's network namespace) for the guest's eth0. */
  tap?: {
    ifname: string;
    mac?: string;
  };
  /**
   * Describe devices to the guest in ACPI tables (default). With `false` QEMU instead appends
   * `virtio_mmio.device=` entries to the kernel command line, which the minimal kernel (built
   * without ACPI) needs; the image manifest's `acpi` field says which one an image wants.
   */
  acpi?: boolean;
  memoryMiB: number;
  vcpus: number;
  accel: Accel;
  /** CPU model; default `host` under KVM, `max` under TCG. */
  cpu?: string;
  /** Unix socket path for QMP (server, no wait). */
  qmpSocket?: string;
  /** File that receives the guest's serial console (ttyS0). */
  serialLog?: string;
  pidFile?: string;
  /** Process name shown by ps/top (`-name`). */
  name?: string;
  /** Start with the CPUs stopped (QMP `cont` starts them). */
  startPaused?: boolean;
  /** Migration source for restores, e.g. `defer` or `exec:cat FILE`. */
  incoming?: string;
}

/** A fixed locally administered MAC: each guest sits alone in its namespace, so no clashes. */
export const DEFAULT_GUEST_MAC = "02:4e:42:00:00:15";

function checkOptionValue(field: string, value: string): string {
  // QEMU splits option strings on commas (",," escapes one); refusing them keeps paths literal.
  if (value.includes(",")) {
    throw new Error(`${field} must not contain a comma: ${value}`);
  }
  return value;
}

/** argv (argv[0] is the QEMU binary) for a microvm guest with a virtio-blk root and virtio-net. */
export function buildMicrovmArgv(cfg: MicrovmConfig): string[] {
  if (!Number.isInteger(cfg.memoryMiB) || cfg.memoryMiB < 64) {
    throw new Error(`memoryMiB must be an integer >= 64, got ${cfg.memoryMiB}`);
  }
  if (!Number.isInteger(cfg.vcpus) || cfg.vcpus < 1) {
    throw new Error(`vcpus must be a positive integer, got ${cfg.vcpus}`);
  }
  const cpu = cfg.cpu ?? (cfg.accel === "kvm" ? "host" : "max");
  const argv: string[] = [
    cfg.qemuBinary ?? "qemu-system-x86_64",
    // x-option-roms=off: no option ROM scan; the kernel is loaded directly.
    "-M",
    `microvm,x-option-roms=off,isa-serial=on${cfg.acpi === false ? ",acpi=off" : ""}`,
    "-accel",
    cfg.accel,
    "-cpu",
    cpu,
    "-m",
    `${cfg.memoryMiB}M`,
    "-smp",
    String(cfg.vcpus),
    "-nodefaults",
    "-no-user-config",
    "-nographic",
    // A guest reboot or panic (init's panic=-1) ends the process instead of looping.
    "-no-reboot",
    "-kernel",
    checkOptionValue("kernel", cfg.kernel),
    "-append",
    cfg.cmdline,
  ];
  if (cfg.initrd) {
    argv.push("-initrd", checkOptionValue("initrd", cfg.initrd));
  }
  if (cfg.name) {
    argv.push("-name", checkOptionValue("name", cfg.name));
  }

  const drive = [
    "id=rootfs",
    `file=${checkOptionValue("rootfs.path", cfg.rootfs.path)}`,
    `format=${cfg.rootfs.format}`,
    "if=none",
    "discard=unmap",
  ];
  if (cfg.rootfs.readOnly) {
    drive.push("readonly=on");
  }
  argv.push("-drive", drive.join(","), "-device", "virtio-blk-device,drive=rootfs");

  if (cfg.tap) {
    argv.push(
      "-netdev",
      `tap,id=net0,ifname=${checkOptionValue("tap.ifname", cfg.tap.ifname)},script=no,downscript=no`,
      "-device",
      `virtio-net-device,netdev=net0,mac=${cfg.tap.mac ?? DEFAULT_GUEST_MAC}`,
    );
  }

  if (cfg.serialLog) {
    argv.push(
      "-chardev",
      `file,id=console,path=${checkOptionValue("serialLog", cfg.serialLog)}`,
      "-serial",
      "chardev:console",
    );
  } else {
    argv.push("-serial", "null");
  }
  if (cfg.qmpSocket) {
    argv.push("-qmp", `unix:${checkOptionValue("qmpSocket", cfg.qmpSocket)},server=on,wait=off`);
  }
  if (cfg.pidFile) {
    argv.push("-pidfile", checkOptionValue("pidFile", cfg.pidFile));
  }
  if (cfg.startPaused) {
    argv.push("-S");
  }
  if (cfg.incoming) {
    argv.push("-incoming", cfg.incoming);
  }
  return argv;
}

/**
 * The host TSC frequency in kHz. microvm has no HPET or PM timer, so without
 * `tsc_early_khz=` the guest sometimes hangs calibrating the TSC against the PIT.
 */
export function hostTscKhz(cpuinfo: string = readFileSync("/proc/cpuinfo", "utf8")): number {
  const match = /^cpu MHz\s*:\s*([0-9.]+)/m.exec(cpuinfo);
  if (!match?.[1]) {
    throw new Error("no 'cpu MHz' line in /proc/cpuinfo");
  }
  const khz = Math.round(Number.parseFloat(match[1]) * 1000);
  if (!Number.isFinite(khz) || khz <= 0) {
    throw new Error(`unusable 'cpu MHz' value: ${match[1]}`);
  }
  return khz;
}

/**
 * The full guest command line: console and clock settings that depend on the host, then the
 * image's own part (root device, init; from the image manifest), then any extras.
 */
export function guestKernelCmdline(opts: {
  image: string;
  tscKhz?: number;
  extra?: readonly string[];
}): string {
  const tscKhz = opts.tscKhz ?? hostTscKhz();
  return [
    "console=ttyS0",
    `tsc_early_khz=${tscKhz}`,
    "tsc=reliable",
    opts.image,
    ...(opts.extra ?? []),
  ]
    .filter((part) => part.length > 0)
    .join(" ");
}
