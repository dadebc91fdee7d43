// The sandbox's bwrap process, detached from the agent: started in its own session with its
// output in a file (so it outlives the agent), and killed by pid only while that pid is still
// the process started at the recorded start time (pids are reused).
import { type ChildProcess, spawn } from "node:child_process";
import { open, readFile } from "node:fs/promises";
import { RuntimeError } from "../runtime.js";
import { GUEST_ENV } from "./bwrap.js";
import { isGone } from "./command.js";
import { pidStartTime } from "./health.js";

/**
 * Spawns `argv` in its own session (setsid) with stdout and stderr appended to `logPath`, so it
 * outlives the agent: no terminal signals, no pipe to a dead reader.
 */
export async function spawnDetached(
  argv: readonly string[],
  logPath: string,
): Promise<ChildProcess> {
  const [file, ...args] = argv;
  if (file === undefined) throw new RuntimeError("internal", "empty launch command");
  const log = await open(logPath, "a", 0o600);
  try {
    const child = spawn(file, args, {
      detached: true,
      stdio: ["ignore", log.fd, log.fd],
      env: { ...GUEST_ENV },
      cwd: "/",
    });
    await new Promise<void>((resolve, reject) => {
      child.once("spawn", resolve);
      child.once("error", reject);
    });
    // The agent must be able to exit (or be killed) without waiting for its sandboxes.
    child.unref();
    return child;
  } finally {
    await log.close();
  }
}

/** SIGKILLs `pid` (if it is still the process started at `startTime`) and waits for it to go. */
export async function killAndWait(pid: number, startTime: number | null): Promise<void> {
  const current = await pidStartTime(pid);
  if (current === null || (startTime !== null && current !== startTime)) return;
  try {
    process.kill(pid, "SIGKILL");
  } catch (error) {
    if (isGone(error)) return;
    throw error;
  }
  for (let i = 0; i < 500; i++) {
    const now = await pidStartTime(pid);
    if (now === null || now !== current) return;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  throw new RuntimeError("internal", `process ${pid} survived SIGKILL`);
}

/** The end of a sandbox's log file, for error messages; "" when there is none. */
export async function logTail(path: string, bytes = 2048): Promise<string> {
  try {
    const text = await readFile(path, "utf8");
    return text.slice(-bytes).trim();
  } catch (error) {
    if (isGone(error)) return "";
    throw error;
  }
}
