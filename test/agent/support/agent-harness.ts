import { existsSync, mkdirSync, symlinkSync } from "node:fs";
import path from "node:path";
import { daemonBinary, type LaunchedAgent, launchAgent } from "@nestbox/cli/launch";

export const agentCli = daemonBinary("agent");

/**
 * Lets a namespace agent with its own data directory use this machine's base template: the
 * extracted root is shared read-only; without it the agent extracts one from the guest image
 * (built on this machine, not by the test).
 */
export function shareBaseTemplate(dataDir: string): void {
  const nestboxDir = process.env.NESTBOX_DIR ?? "/var/lib/nestbox";
  const base = path.join(nestboxDir, "templates-ns", "base");
  if (existsSync(path.join(base, "template.json"))) {
    mkdirSync(path.join(dataDir, "templates-ns"));
    symlinkSync(base, path.join(dataDir, "templates-ns", "base"));
  } else {
    symlinkSync(path.join(nestboxDir, "images"), path.join(dataDir, "images"));
  }
}

export type AgentProcess = LaunchedAgent;

/** Starts a real host agent (the built CLI) on a free loopback port. */
export const startAgent = (
  args: string[],
  opts?: Parameters<typeof launchAgent>[1],
): Promise<AgentProcess> => launchAgent(args, opts);
