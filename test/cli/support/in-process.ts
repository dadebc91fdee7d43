/**
 * What the CLI tests share: a real control plane in this process (embedded PGlite, all-in-one
 * seed, no host agent) and the client commands run against it in process, with their exit code
 * as main.ts gives it.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { PassThrough } from "node:stream";
import { type CliIo, createClientCommands } from "../../../packages/sdk/src/cli/index.js";
import { type RunningServer, startServer } from "../../../packages/server/src/main.js";

export interface CliApp {
  server: RunningServer;
  /** The control plane's data directory: `admin-password`, `admin-api-key`. */
  dataDir: string;
  /** The all-in-one admin's API key. */
  apiKey: string;
  close(): Promise<void>;
}

/** A control plane on a fresh data directory named after `prefix`. */
export async function startCliApp(prefix: string): Promise<CliApp> {
  const dataDir = await mkdtemp(path.join(tmpdir(), `nestbox-cli-${prefix}-`));
  const server = await startServer({
    config: {
      host: "127.0.0.1",
      port: 0,
      dataDir,
      databaseUrl: undefined,
      jwtSecret: randomBytes(32),
      domain: "localhost",
      publicUrl: "http://127.0.0.1:0",
    },
    allInOne: true,
    log: () => {},
  });
  const apiKey = (await readFile(path.join(dataDir, "admin-api-key"), "utf8")).trim();
  return {
    server,
    dataDir,
    apiKey,
    async close() {
      await server.close();
      await rm(dataDir, { recursive: true, force: true });
    },
  };
}

export interface Result {
  code: number;
  stdout: string;
  stderr: string;
  error?: Error;
}

function collect(stream: PassThrough): () => string {
  const parts: Buffer[] = [];
  stream.on("data", (b: Buffer) => parts.push(b));
  return () => Buffer.concat(parts).toString("utf8");
}

/**
 * Runs `nestbox <group> …` in process with `env` as its whole environment. A thrown error
 * becomes the exit code main.ts gives it (a UsageError: 2, anything else: 1) and is returned.
 */
export async function runClientCommand(
  args: string[],
  env: NodeJS.ProcessEnv,
  stdin = "",
): Promise<Result> {
  const out = new PassThrough();
  const err = new PassThrough();
  const getOut = collect(out);
  const getErr = collect(err);
  const io: CliIo = {
    stdin: PassThrough.from([stdin]) as unknown as CliIo["stdin"],
    stdout: out,
    stderr: err,
    env,
  };
  const [group, ...rest] = args;
  const cmd = createClientCommands(() => io)[group as string];
  assert.ok(cmd, `no command ${group}`);
  let code: number;
  let error: Error | undefined;
  try {
    code = await cmd.run(rest);
  } catch (e) {
    error = e as Error;
    code = error.name === "UsageError" ? 2 : 1;
  }
  return { code, stdout: getOut(), stderr: getErr(), error };
}

/** Exit 0; its stdout. */
export function assertOk(r: Result): string {
  assert.equal(r.code, 0, `${r.stdout}${r.stderr}${r.error?.stack ?? ""}`);
  return r.stdout;
}

/** Exit 2 with a UsageError whose message matches. */
export function assertUsage(r: Result, message: RegExp): void {
  assert.equal(r.code, 2, `expected a usage error, got ${r.code}: ${r.stdout}${r.stderr}`);
  assert.equal(r.error?.name, "UsageError");
  assert.match(r.error?.message ?? "", message);
}

/** Exit 1 with the API error `code` printed as `error: <code>: …` (and nothing thrown). */
export function assertApiError(r: Result, code: string, message?: RegExp): void {
  assert.equal(r.code, 1, `expected exit 1: ${r.stdout}${r.stderr}${r.error?.stack ?? ""}`);
  assert.equal(r.error, undefined);
  assert.match(r.stderr, new RegExp(`^error: ${code}: `, "m"));
  if (message) assert.match(r.stderr, message);
}
