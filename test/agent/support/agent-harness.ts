import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { existsSync, mkdirSync, symlinkSync } from "node:fs";
import path from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { type Client, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { HostAgentService } from "@nestbox/proto/hostagent";

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");
export const agentCli = path.join(repoRoot, "packages/agent/dist/cli.js");

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
  const child = spawn(process.execPath, [agentCli, "--listen", "127.0.0.1:0", ...args], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  let logs = "";
  child.stderr?.on("data", (d: Buffer) => {
    logs += d.toString();
    if (logs.length > 2 << 20) logs = logs.slice(-(1 << 20));
  });
  if (!child.stdout) throw new Error("agent has no stdout");
  const lines = createInterface({ input: child.stdout });
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`agent did not start in time:\n${logs.slice(-4000)}`)),
      240_000,
    );
    lines.on("line", (line) => {
      const m = /agent listening on (\S+)/.exec(line);
      if (m?.[1]) {
        clearTimeout(timer);
        resolve(`http://${m[1]}`);
      }
    });
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`agent exited with ${code}:\n${logs.slice(-4000)}`));
    });
  });
  const client = createClient(
    HostAgentService,
    createConnectTransport({ baseUrl: url, httpVersion: "1.1" }),
  );
  const exited = () => child.exitCode !== null || child.signalCode !== null;
  return {
    url,
    child,
    client,
    logs: () => logs,
    async kill() {
      if (exited()) return;
      child.kill("SIGKILL");
      await once(child, "exit");
    },
    async stop() {
      if (exited()) return;
      child.kill("SIGTERM");
      const t = setTimeout(() => child.kill("SIGKILL"), 10_000);
      await once(child, "exit");
      clearTimeout(t);
    },
  };
}
