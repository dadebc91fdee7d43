import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { once } from "node:events";
import path from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { Sandbox } from "e2b";

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");
export const envdCli = path.join(repoRoot, "packages/envd/dist/cli.js");

/** The E2B tests hard-code a default user `user` with home /home/user; make sure it exists. */
export function ensureTestUser(name = "user"): void {
  try {
    execFileSync("id", ["-u", name], { stdio: "ignore" });
  } catch {
    execFileSync("useradd", ["-m", "-s", "/bin/bash", name], { stdio: "inherit" });
  }
}

export interface EnvdProcess {
  url: string;
  port: number;
  child: ChildProcess;
  stderr: () => string;
  stop(): Promise<void>;
}

/** Starts a real envd (the built CLI) on a free port and waits until it listens. */
export async function startEnvd(
  args: string[] = [],
  env: NodeJS.ProcessEnv = {},
): Promise<EnvdProcess> {
  ensureTestUser();
  const portArg = args.includes("--port") ? [] : ["--port", "0"];
  const child = spawn(process.execPath, [envdCli, "--host", "127.0.0.1", ...portArg, ...args], {
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, ...env },
  });
  let errText = "";
  child.stderr?.on("data", (d: Buffer) => {
    errText += d.toString();
    if (errText.length > 1 << 20) errText = errText.slice(-(1 << 19));
  });
  if (!child.stdout) throw new Error("envd child has no stdout pipe");
  const lines = createInterface({ input: child.stdout });
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`envd did not start: ${errText}`)), 15_000);
    lines.on("line", (line) => {
      const m = /envd listening on (\d+)/.exec(line);
      if (m?.[1]) {
        clearTimeout(timer);
        resolve(Number(m[1]));
      }
    });
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`envd exited with ${code}: ${errText}`));
    });
  });
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    child,
    stderr: () => errText,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 5_000);
      await once(child, "exit");
      clearTimeout(timer);
    },
  };
}

type SandboxCtorOpts = {
  sandboxId: string;
  envdVersion: string;
  envdAccessToken?: string;
  sandboxUrl: string;
  apiKey: string;
  debug?: boolean;
  requestTimeoutMs?: number;
};

/**
 * An SDK Sandbox bound straight to an envd, as the SDK builds one after `create`: E2B's own
 * envd tests do this with debug mode; `sandboxUrl` lets each test file use its own port, and
 * `envdAccessToken` is what a real create response would carry.
 */
export function sdkSandbox(envd: EnvdProcess, opts: { accessToken?: string } = {}): Sandbox {
  const Ctor = Sandbox as unknown as new (o: SandboxCtorOpts) => Sandbox;
  return new Ctor({
    sandboxId: "nbxtest0000000000000",
    envdVersion: "0.6.4",
    sandboxUrl: envd.url,
    apiKey: `e2b_${"0".repeat(40)}`,
    ...(opts.accessToken ? { envdAccessToken: opts.accessToken } : {}),
  });
}
