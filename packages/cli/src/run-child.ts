import { spawn } from "node:child_process";
import { constants } from "node:os";

/**
 * The exit status a shell would report for a child: its code, or 128 + the number of the
 * signal that killed it (130 for SIGINT, 143 for SIGTERM).
 */
export function exitStatus(code: number | null, signal: NodeJS.Signals | null): number {
  if (code !== null) return code;
  const number = signal ? constants.signals[signal] : undefined;
  return number === undefined ? 1 : 128 + number;
}

/** Runs a child with our stdio and forwards Ctrl-C/SIGTERM, resolving to its exit status. */
export function runChild(
  file: string,
  args: string[],
  env: NodeJS.ProcessEnv = process.env,
): Promise<number> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { stdio: "inherit", env });
    const forward = (sig: NodeJS.Signals) => child.kill(sig);
    process.on("SIGINT", forward);
    process.on("SIGTERM", forward);
    child.once("error", reject);
    child.once("exit", (code, signal) => {
      process.off("SIGINT", forward);
      process.off("SIGTERM", forward);
      resolve(exitStatus(code, signal));
    });
  });
}
