// Internal: runs host tools (mount, umount, cp, du) as child processes and turns a failure into a
// RuntimeError that carries the command line and its stderr, so an operator can re-run it.
import { execFile } from "node:child_process";
import { RuntimeError } from "../runtime.js";

export interface CommandResult {
  stdout: string;
  stderr: string;
}

export class CommandError extends RuntimeError {
  constructor(
    readonly argv: readonly string[],
    readonly exitCode: number | null,
    readonly stderr: string,
    message: string,
  ) {
    super("internal", message);
  }
}

/** Runs `argv` without a shell; rejects with CommandError on a non-zero exit or a spawn failure. */
export function runCommand(
  argv: readonly string[],
  opts: { timeoutMs?: number } = {},
): Promise<CommandResult> {
  const [file, ...args] = argv;
  if (file === undefined) {
    return Promise.reject(new CommandError([], null, "", "empty command"));
  }
  return new Promise((resolve, reject) => {
    execFile(
      file,
      args,
      { timeout: opts.timeoutMs ?? 600_000, maxBuffer: 16 * 1024 * 1024 },
      (error, stdout, stderr) => {
        if (error) {
          const code = typeof error.code === "number" ? error.code : null;
          const detail = stderr.trim() || error.message;
          reject(new CommandError(argv, code, stderr.trim(), `${argv.join(" ")}: ${detail}`));
          return;
        }
        resolve({ stdout, stderr });
      },
    );
  });
}

/** True for the errno codes that mean "already gone", which cleanup paths treat as success. */
export function isGone(error: unknown): boolean {
  const code = (error as NodeJS.ErrnoException | null)?.code;
  return code === "ENOENT" || code === "ESRCH";
}
