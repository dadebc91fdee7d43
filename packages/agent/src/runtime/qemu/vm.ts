// One QEMU process and its QMP connection: launch (detached, optionally inside a network
// namespace), restore from a migration stream, save to one, quit. Every failure kills what was
// started and reports the tails of QEMU's own log and of the guest console.
import { readFileSync, rmSync } from "node:fs";
import { netnsExec } from "../../network/netns.js";
import { QmpClient, QmpError } from "../../qemu/qmp.js";
import { RuntimeError } from "../runtime.js";
import { type LaunchSpec, launchArgv } from "./machine.js";
import { MAX_SOCKET_PATH, shellQuote } from "./paths.js";
import {
  isProcessAlive,
  killProcess,
  readPidStartTime,
  spawnDetached,
  tailFile,
  waitForExit,
} from "./process.js";

export interface VmLaunch extends LaunchSpec {
  /** Network namespace to run QEMU in (its TAP device lives there). */
  namespace: string;
  /** QEMU's stdout/stderr. */
  logFile: string;
}

export class Vm {
  private constructor(
    readonly pid: number,
    readonly startTime: number,
    readonly qmp: QmpClient,
    readonly logFile: string,
    readonly serialLog: string,
  ) {}

  /** Starts QEMU (stopped, `-S`) and connects to its QMP socket. */
  static async launch(spec: VmLaunch): Promise<Vm> {
    if (Buffer.byteLength(spec.qmpSocket) > MAX_SOCKET_PATH) {
      throw new RuntimeError(
        "invalid_argument",
        `QMP socket path is too long for a unix socket (${spec.qmpSocket})`,
      );
    }
    // Leftovers of an earlier QEMU in the same directory would be mistaken for the new one's.
    rmSync(spec.qmpSocket, { force: true });
    rmSync(spec.pidFile, { force: true });
    const argv = netnsExec(spec.namespace, launchArgv(spec));
    const child = await spawnDetached(argv, spec.logFile);
    let qmp: QmpClient;
    try {
      qmp = await QmpClient.connect(spec.qmpSocket, {
        timeoutMs: 15_000,
        abortCheck: () => {
          const status = child.exitStatus();
          if (status) return `QEMU exited (${status})`;
          return isProcessAlive(child.pid, child.startTime) ? undefined : "QEMU exited";
        },
      });
    } catch (error) {
      await killProcess(child.pid, child.startTime);
      throw await vmError("internal", "QEMU did not start", spec.logFile, spec.serialLog, error);
    }
    return new Vm(child.pid, child.startTime, qmp, spec.logFile, spec.serialLog);
  }

  /** Connects to a running QEMU (e.g. after an agent restart). */
  static async attach(
    pid: number,
    startTime: number,
    qmpSocket: string,
    logFile: string,
    serialLog: string,
    timeoutMs = 3_000,
  ): Promise<Vm> {
    const qmp = await QmpClient.connect(qmpSocket, {
      timeoutMs,
      abortCheck: () => (isProcessAlive(pid, startTime) ? undefined : "QEMU is not running"),
    });
    return new Vm(pid, startTime, qmp, logFile, serialLog);
  }

  alive(): boolean {
    return isProcessAlive(this.pid, this.startTime);
  }

  exitReason(): string | undefined {
    return this.alive() ? undefined : "QEMU exited";
  }

  /**
   * Loads a migration stream from `stateFile` into this `-incoming defer` QEMU. With
   * `ignoreShared` the RAM comes from the memory backend's file instead of the stream (a
   * clone of a template); the capability must match what the saving side used.
   */
  async restore(stateFile: string, ignoreShared: boolean, timeoutMs: number): Promise<void> {
    await this.setIgnoreShared(ignoreShared);
    await this.qmp.execute("migrate-incoming", { uri: `exec:cat ${shellQuote(stateFile)}` });
    await this.qmp.waitForMigration({ timeoutMs });
  }

  /** Stops the CPUs and writes the VM state (device state, and RAM unless ignored) to a file. */
  async save(stateFile: string, ignoreShared: boolean, timeoutMs: number): Promise<void> {
    await this.qmp.execute("stop");
    await this.setIgnoreShared(ignoreShared);
    await this.qmp.execute("migrate", { uri: `exec:cat > ${shellQuote(stateFile)}` });
    await this.qmp.waitForMigration({ timeoutMs });
  }

  private async setIgnoreShared(on: boolean): Promise<void> {
    await this.qmp.execute("migrate-set-capabilities", {
      capabilities: [{ capability: "x-ignore-shared", state: on }],
    });
  }

  async status(): Promise<string> {
    const status = await this.qmp.execute<{ status: string }>("query-status");
    return status.status;
  }

  /** QMP `quit`, then SIGKILL if QEMU is still there after `graceMs`. Never throws for a dead VM. */
  async quit(graceMs = 3_000): Promise<void> {
    if (this.alive() && !this.qmp.closed) {
      await this.qmp.execute("quit", undefined, graceMs).catch((error: unknown) => {
        // The connection closing as QEMU exits is the normal end of `quit`.
        if (error instanceof QmpError) throw error;
      });
    }
    this.qmp.close();
    if (!(await waitForExit(this.pid, this.startTime, graceMs))) {
      await killProcess(this.pid, this.startTime);
    }
  }

  async kill(): Promise<void> {
    this.qmp.close();
    await killProcess(this.pid, this.startTime);
  }

  /** A RuntimeError for a failure around this VM, with QEMU's log and console tails. */
  error(code: RuntimeError["code"], message: string, cause: unknown): Promise<RuntimeError> {
    return vmError(code, message, this.logFile, this.serialLog, cause);
  }
}

export async function vmError(
  code: RuntimeError["code"],
  message: string,
  logFile: string,
  serialLog: string,
  cause: unknown,
): Promise<RuntimeError> {
  if (cause instanceof RuntimeError && cause.message.includes("--- qemu log ---")) return cause;
  const causeText = cause instanceof Error ? cause.message : String(cause);
  const qemuLog = await tailFile(logFile, 1_500);
  const serial = await tailFile(serialLog, 1_500);
  return new RuntimeError(
    cause instanceof RuntimeError && code === "internal" ? cause.code : code,
    `${message}: ${causeText}\n--- qemu log ---\n${qemuLog}\n--- guest console ---\n${serial}`,
    { cause },
  );
}

/** The pid in a QEMU `-pidfile`, if it names a live process that is the QEMU for `marker`. */
export function livePidFromFile(
  pidFile: string,
  marker: string,
): { pid: number; startTime: number } | undefined {
  let pid: number;
  try {
    pid = Number.parseInt(readFileSync(pidFile, "utf8").trim(), 10);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw error;
  }
  if (!Number.isInteger(pid) || pid <= 1) return undefined;
  const startTime = readPidStartTime(pid);
  if (startTime === undefined || !isProcessAlive(pid, startTime)) return undefined;
  // A recycled pid belongs to some other process: only trust it if its argv mentions our files.
  let cmdline: string;
  try {
    cmdline = readFileSync(`/proc/${pid}/cmdline`, "utf8");
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw error;
  }
  return cmdline.includes(marker) ? { pid, startTime } : undefined;
}
