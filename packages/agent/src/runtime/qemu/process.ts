// Child processes of the qemu runtime: short commands (qemu-img, cp) and long-lived QEMU
// processes, which are detached (own session, no pipes to us) so the agent can exit, restart and
// re-adopt them. A pid is only trusted together with its /proc start time.
import { execFile, spawn } from "node:child_process";
import { closeSync, openSync, readFileSync } from "node:fs";
import { open, stat } from "node:fs/promises";
import { RuntimeError } from "../runtime.js";

export interface CommandResult {
  stdout: string;
  stderr: string;
}

/** Runs a command to completion; failures become RuntimeError("internal") with stderr. */
export function runCommand(
  argv: readonly string[],
  options: { timeoutMs?: number } = {},
): Promise<CommandResult> {
  const [file, ...args] = argv;
  if (!file) return Promise.reject(new RuntimeError("internal", "empty command"));
  return new Promise((resolve, reject) => {
    execFile(
      file,
      args,
      { timeout: options.timeoutMs ?? 120_000, maxBuffer: 16 * 1024 * 1024 },
      (error, stdout, stderr) => {
        if (error) {
          const detail = stderr.trim() || error.message;
          reject(new RuntimeError("internal", `${argv.join(" ")}: ${detail}`, { cause: error }));
          return;
        }
        resolve({ stdout, stderr });
      },
    );
  });
}

/** Field 22 of /proc/<pid>/stat (clock ticks since boot), or undefined if there is no such process. */
export function readPidStartTime(pid: number): number | undefined {
  const fields = readStatFields(pid);
  const start = fields?.[19];
  return start === undefined ? undefined : Number(start);
}

/** The fields of /proc/<pid>/stat after `(comm)`: index 0 is the state (field 3). */
export function readStatFields(pid: number): string[] | undefined {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw error;
  }
  // comm may contain spaces and parentheses: split after the last ')'.
  return stat
    .slice(stat.lastIndexOf(")") + 2)
    .trim()
    .split(" ");
}

/** True if `pid` runs (not a zombie) and, when given, started at `startTime`. */
export function isProcessAlive(pid: number, startTime?: number): boolean {
  const fields = readStatFields(pid);
  if (!fields) return false;
  if (fields[0] === "Z" || fields[0] === "X") return false;
  return startTime === undefined || Number(fields[19]) === startTime;
}

export async function waitForExit(
  pid: number,
  startTime: number | undefined,
  timeoutMs: number,
): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (isProcessAlive(pid, startTime)) {
    if (Date.now() > deadline) return false;
    await sleep(10);
  }
  return true;
}

/** SIGKILLs `pid` if it is still the process that started at `startTime`, and waits for it. */
export async function killProcess(pid: number, startTime: number | undefined): Promise<void> {
  if (!isProcessAlive(pid, startTime)) return;
  try {
    process.kill(pid, "SIGKILL");
  } catch (error) {
    // ESRCH: it exited between the check and the kill, which is the outcome we want.
    if ((error as NodeJS.ErrnoException).code !== "ESRCH") throw error;
  }
  if (!(await waitForExit(pid, startTime, 10_000))) {
    throw new RuntimeError("internal", `process ${pid} survived SIGKILL for 10 s`);
  }
}

export interface DetachedProcess {
  pid: number;
  startTime: number;
  /** Set once the process has exited while we were its parent (exit code or signal). */
  exitStatus(): string | undefined;
}

/**
 * Starts `argv` in its own session with stdout/stderr appended to `logFile`. The child is
 * unref'd: the agent may exit and QEMU keeps running (an agent restart re-adopts it).
 */
export function spawnDetached(argv: readonly string[], logFile: string): Promise<DetachedProcess> {
  const [file, ...args] = argv;
  if (!file) return Promise.reject(new RuntimeError("internal", "empty command"));
  const fd = openSync(logFile, "a");
  try {
    const child = spawn(file, args, { detached: true, stdio: ["ignore", fd, fd] });
    let exit: string | undefined;
    child.on("exit", (code, signal) => {
      exit = code !== null ? `exit code ${code}` : `signal ${signal}`;
    });
    return new Promise((resolve, reject) => {
      child.once("error", (error) =>
        reject(
          new RuntimeError("internal", `cannot start ${file}: ${error.message}`, { cause: error }),
        ),
      );
      child.once("spawn", () => {
        child.unref();
        const pid = child.pid;
        if (pid === undefined) {
          reject(new RuntimeError("internal", `${file} has no pid`));
          return;
        }
        // `ip netns exec` execs its command in place, so this pid is QEMU's from here on.
        const startTime = readPidStartTime(pid);
        if (startTime === undefined) {
          reject(new RuntimeError("internal", `${file} exited at once (${exit ?? "unknown"})`));
          return;
        }
        resolve({ pid, startTime, exitStatus: () => exit });
      });
    });
  } finally {
    closeSync(fd);
  }
}

/** The last `maxBytes` of a text file, or a note that it is missing. */
export async function tailFile(path: string, maxBytes = 2_000): Promise<string> {
  try {
    const handle = await open(path, "r");
    try {
      const { size } = await handle.stat();
      const start = Math.max(0, size - maxBytes);
      const buffer = Buffer.alloc(size - start);
      await handle.read(buffer, 0, buffer.length, start);
      return buffer.toString("utf8").trim();
    } finally {
      await handle.close();
    }
  } catch (error) {
    return `(${path}: ${(error as Error).message})`;
  }
}

/** Bytes actually allocated on disk (sparse files count only their data). */
export async function allocatedBytes(path: string): Promise<number> {
  try {
    const info = await stat(path);
    return info.blocks * 512;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return 0;
    throw error;
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
