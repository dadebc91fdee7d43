import type { ChildProcess } from "node:child_process";
import { existsSync, mkdirSync, symlinkSync } from "node:fs";
import path from "node:path";
import { type Client, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { daemonBinary, launchDaemon } from "@nestbox/cli/launch";
import { HostAgentService } from "@nestbox/proto/hostagent";

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

export interface AgentProcess {
  url: string;
  child: ChildProcess;
  client: Client<typeof HostAgentService>;
  logs: () => string;
  /** SIGKILL, as a crash would: sandboxes stay behind for the next agent to re-adopt. */
  kill(): Promise<void>;
  /** SIGTERM: a clean stop (sandboxes keep running). */
  stop(): Promise<void>;
}

/** Starts a real host agent (the built CLI) on a free loopback port. */
export async function startAgent(args: string[]): Promise<AgentProcess> {
  const d = await launchDaemon("agent", ["--listen", "127.0.0.1:0", ...args], {
    readyTimeoutMs: 240_000,
  });
  const url = `http://${d.address}`;
  const client = createClient(
    HostAgentService,
    createConnectTransport({ baseUrl: url, httpVersion: "1.1" }),
  );
  return { url, child: d.child, client, logs: d.logs, kill: d.kill, stop: d.stop };
}
