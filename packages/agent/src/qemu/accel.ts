// Which accelerator QEMU should use. `/dev/kvm` existing proves nothing: on PVM hosts (nested
// "pagetable virtual machine" KVM) KVM_CREATE_VM succeeds but an ordinary guest kernel crawls
// through the instruction emulator and dies ~50 s later (docs: machine-facts.md §1). So `auto`
// only picks KVM after a real guest kernel has booted far enough under it; cheap negative
// checks come first so hosts without usable KVM decide in milliseconds.
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type Accel, buildMicrovmArgv, guestKernelCmdline } from "./cmdline.js";

export type AccelMode = "auto" | Accel;

export interface AccelDecision {
  accel: Accel;
  /** Why: shown in logs and the agent's status. */
  reason: string;
  /** How long deciding took. */
  ms: number;
}

export interface ProbeKernel {
  kernelPath: string;
  initrdPath: string | null;
  acpi: boolean;
}

export interface ResolveAccelOptions {
  qemuBinary?: string;
  /** Guest kernel for the probe boot; without one, `auto` can only decide negatively (→ tcg). */
  probeKernel?: ProbeKernel;
  /** How long the probe boot may take. Default 8 s (a working KVM gets there in < 1 s). */
  probeTimeoutMs?: number;
  /** For tests: the files the fast checks read. */
  sysRoot?: string;
}

/**
 * Printed by the kernel after it has set up memory, interrupts, timers and devices and is about
 * to start init: reaching it needs thousands of privileged instructions to work, which is what
 * a broken KVM cannot do. `ignore_loglevel` on the probe's command line makes them visible.
 */
const BOOT_MARKER = /Run \/init as init process|Freeing unused kernel (image )?memory/;

/** Cheap reasons KVM cannot work here; undefined when KVM might work and needs a probe. */
export function kvmFastNegative(sysRoot = ""): string | undefined {
  if (!existsSync(`${sysRoot}/dev/kvm`)) return "/dev/kvm is missing";
  if (existsSync(`${sysRoot}/sys/module/kvm_pvm`)) {
    return "KVM is PVM (kvm_pvm loaded): it cannot run an ordinary guest kernel";
  }
  let cpuinfo = "";
  try {
    cpuinfo = readFileSync(`${sysRoot}/proc/cpuinfo`, "utf8");
  } catch (error) {
    return `cannot read /proc/cpuinfo: ${(error as Error).message}`;
  }
  const flags = /^flags\s*:(.*)$/m.exec(cpuinfo)?.[1]?.split(/\s+/) ?? [];
  if (!flags.includes("vmx") && !flags.includes("svm")) {
    return "the CPU has no vmx/svm flag (no hardware virtualization visible)";
  }
  return undefined;
}

/**
 * Boots `kernel` under `accel` with no disk or network and a deadline, looking for the kernel's
 * "about to run init" message on the serial console. Resolves with whether it got there and the
 * console tail (for diagnostics).
 */
export async function probeBoot(
  accel: Accel,
  kernel: ProbeKernel,
  options: { qemuBinary?: string; timeoutMs?: number } = {},
): Promise<{ ok: boolean; detail: string }> {
  const dir = mkdtempSync(join(tmpdir(), "nbx-accel-probe-"));
  const serial = join(dir, "serial.log");
  try {
    const argv = buildMicrovmArgv({
      ...(options.qemuBinary ? { qemuBinary: options.qemuBinary } : {}),
      kernel: kernel.kernelPath,
      initrd: kernel.initrdPath,
      // No root device: the kernel panics after the marker, and panic=-1 + -no-reboot exit QEMU.
      cmdline: guestKernelCmdline({ image: "panic=-1 ignore_loglevel" }),
      rootfs: { path: "/dev/null", format: "raw", readOnly: true },
      acpi: kernel.acpi,
      memoryMiB: 256,
      vcpus: 1,
      accel,
      serialLog: serial,
    });
    const [file, ...args] = argv;
    if (!file) throw new Error("empty QEMU argv");
    const child = spawn(file, args, { stdio: ["ignore", "ignore", "pipe"] });
    let stderr = "";
    child.stderr?.setEncoding("utf8");
    child.stderr?.on("data", (chunk: string) => {
      stderr = (stderr + chunk).slice(-4000);
    });
    let exited = false;
    child.on("exit", () => {
      exited = true;
    });
    const spawnError = new Promise<Error>((resolve) => child.once("error", resolve));
    const deadline = Date.now() + (options.timeoutMs ?? 8_000);
    let ok = false;
    let failure: Error | undefined;
    void spawnError.then((error) => {
      failure = error;
    });
    while (Date.now() < deadline && !exited && !failure) {
      await new Promise((resolve) => setTimeout(resolve, 50));
      if (existsSync(serial) && BOOT_MARKER.test(readFileSync(serial, "utf8"))) {
        ok = true;
        break;
      }
    }
    if (!ok && existsSync(serial) && BOOT_MARKER.test(readFileSync(serial, "utf8"))) ok = true;
    if (!exited) {
      const gone = new Promise((resolve) => child.once("exit", resolve));
      child.kill("SIGKILL");
      await gone;
    }
    const consoleTail = existsSync(serial)
      ? readFileSync(serial, "utf8").split("\n").slice(-5).join("\n")
      : "";
    const detail = ok
      ? "guest kernel reached init"
      : `guest kernel did not reach init${failure ? `: ${failure.message}` : ""}; stderr: ${stderr.trim().slice(-500)}; console: ${consoleTail.slice(-500)}`;
    return { ok, detail };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const cache = new Map<string, Promise<AccelDecision>>();

/**
 * `tcg`/`kvm` are taken as given. `auto`: TCG unless the fast checks pass and a probe boot of the
 * guest kernel under KVM reaches init in time. Cached per process (per mode and QEMU binary).
 */
export function resolveAccel(
  mode: AccelMode,
  options: ResolveAccelOptions = {},
): Promise<AccelDecision> {
  const key = `${mode}\0${options.qemuBinary ?? ""}\0${options.sysRoot ?? ""}`;
  let decision = cache.get(key);
  if (!decision) {
    decision = decide(mode, options);
    cache.set(key, decision);
    // A failed decision (e.g. a spawn error) should be retried next time, not cached.
    decision.catch(() => cache.delete(key));
  }
  return decision;
}

async function decide(mode: AccelMode, options: ResolveAccelOptions): Promise<AccelDecision> {
  const started = Date.now();
  const done = (accel: Accel, reason: string): AccelDecision => ({
    accel,
    reason,
    ms: Date.now() - started,
  });
  if (mode !== "auto") return done(mode, `forced ${mode}`);
  const negative = kvmFastNegative(options.sysRoot);
  if (negative) return done("tcg", negative);
  if (!options.probeKernel) return done("tcg", "no guest kernel to probe KVM with");
  const probe = await probeBoot("kvm", options.probeKernel, {
    ...(options.qemuBinary ? { qemuBinary: options.qemuBinary } : {}),
    timeoutMs: options.probeTimeoutMs ?? 8_000,
  });
  return probe.ok
    ? done("kvm", `KVM probe boot: ${probe.detail}`)
    : done("tcg", `KVM probe boot failed: ${probe.detail}`);
}
