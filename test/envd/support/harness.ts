import { execFileSync } from "node:child_process";
import { daemonBinary, type LaunchedEnvd, launchEnvd } from "@nestbox/cli/launch";
import { Sandbox } from "e2b";

export const envdCli = daemonBinary("envd");

/** The E2B tests hard-code a default user `user` with home /home/user; make sure it exists. */
export function ensureTestUser(name = "user"): void {
  try {
    execFileSync("id", ["-u", name], { stdio: "ignore" });
  } catch {
    execFileSync("useradd", ["-m", "-s", "/bin/bash", name], { stdio: "inherit" });
  }
}

export type EnvdProcess = LaunchedEnvd;

/** Starts a real envd (the built CLI) on a free port and waits until it listens. */
export async function startEnvd(
  args: string[] = [],
  env: NodeJS.ProcessEnv = {},
): Promise<EnvdProcess> {
  ensureTestUser();
  return launchEnvd(args, { env });
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
