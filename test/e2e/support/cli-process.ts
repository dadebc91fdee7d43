/**
 * The built `nestbox` CLI as a child process, the way a user runs it, for the end-to-end tests
 * of `nestbox up` and the client commands.
 */
import { spawn } from "node:child_process";
import { createServer } from "node:net";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");
export const nestboxCli = path.join(repoRoot, "packages/cli/dist/main.js");

export interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** Raw stdout, for binary output. */
  out: Buffer;
  ms: number;
}

export interface CliOptions {
  env?: NodeJS.ProcessEnv;
  /** Piped to stdin, then end of input; without it stdin is empty (not a terminal). */
  input?: string | Buffer;
  timeoutMs?: number;
  cwd?: string;
}

/** Runs `nestbox <args>` to completion; SIGKILLed (and the result says so) after the timeout. */
export function runCli(args: string[], o: CliOptions = {}): Promise<CliResult> {
  const started = Date.now();
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [nestboxCli, ...args], {
      env: { ...process.env, ...o.env },
      cwd: o.cwd,
      stdio: ["pipe", "pipe", "pipe"],
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on("data", (d: Buffer) => out.push(d));
    child.stderr.on("data", (d: Buffer) => err.push(d));
    // The command may exit before reading all of its input.
    child.stdin.on("error", (e: NodeJS.ErrnoException) => {
      if (e.code !== "EPIPE") reject(e);
    });
    child.stdin.end(o.input ?? "");
    const timer = setTimeout(() => child.kill("SIGKILL"), o.timeoutMs ?? 60_000);
    child.once("error", (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.once("close", (code, signal) => {
      clearTimeout(timer);
      const stdout = Buffer.concat(out);
      resolve({
        code,
        signal,
        stdout: stdout.toString(),
        stderr: Buffer.concat(err).toString(),
        out: stdout,
        ms: Date.now() - started,
      });
    });
  });
}

/** Polls `fn` until it returns something other than undefined (bounded by `timeoutMs`). */
export async function until<T>(
  what: string,
  fn: () => Promise<T | undefined>,
  timeoutMs = 30_000,
  everyMs = 200,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v !== undefined) return v;
    if (Date.now() > deadline)
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(everyMs);
  }
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const addr = srv.address();
      const port = typeof addr === "object" && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}
