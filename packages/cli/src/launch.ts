import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { readFileSync } from "node:fs";
import path from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { type Client, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { HostAgentService } from "@nestbox/proto/hostagent";
import { AGENT_TOKEN_HEADER } from "@nestbox/wire";

/**
 * Starting a daemon (host agent, envd) as its own process and waiting until it listens: the
 * seam the end-to-end tests and the benchmarks share, so neither launches the other's copy.
 * Each daemon prints one `<name> listening on <address>` line on stdout when it is ready;
 * that line is the readiness contract read here.
 */

export type DaemonName = "agent" | "envd";

const BINARIES: Record<DaemonName, string> = {
  agent: "@nestbox/agent/cli",
  envd: "@nestbox/envd/cli",
};

export interface LaunchOptions {
  /** Extra environment on top of this process's. */
  env?: NodeJS.ProcessEnv;
  /** How long to wait for the ready line (default 60 s; an agent extracting a template needs more). */
  readyTimeoutMs?: number;
  /** Milliseconds between SIGTERM and SIGKILL in stop() (default 10 s). */
  stopGraceMs?: number;
}

export interface LaunchedDaemon {
  /** What the ready line named: `host:port` (agent) or the port (envd). */
  address: string;
  child: ChildProcess;
  /** The last MiB or so of its stderr (its JSON log lines). */
  logs(): string;
  /** SIGKILL, as a crash would. */
  kill(): Promise<void>;
  /** SIGTERM, then SIGKILL after the grace period. */
  stop(): Promise<void>;
}

export class LaunchError extends Error {
  override name = "LaunchError";
}

/** The built binary of a daemon, from its package's `./cli` export. */
export function daemonBinary(name: DaemonName): string {
  return fileURLToPath(import.meta.resolve(BINARIES[name]));
}

export async function launchDaemon(
  name: DaemonName,
  args: string[],
  opts: LaunchOptions = {},
): Promise<LaunchedDaemon> {
  const child = spawn(process.execPath, [daemonBinary(name), ...args], {
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, ...opts.env },
  });
  let logs = "";
  child.stderr?.on("data", (d: Buffer) => {
    logs += d.toString();
    if (logs.length > 2 << 20) logs = logs.slice(-(1 << 20));
  });
  if (!child.stdout) throw new LaunchError(`${name} has no stdout pipe`);
  const lines = createInterface({ input: child.stdout });
  const ready = new RegExp(`^${name} listening on (\\S+)`);
  const timeoutMs = opts.readyTimeoutMs ?? 60_000;
  const address = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new LaunchError(`${name} did not start in ${timeoutMs} ms:\n${logs.slice(-4000)}`));
    }, timeoutMs);
    lines.on("line", (line) => {
      const m = ready.exec(line);
      if (m?.[1]) {
        clearTimeout(timer);
        resolve(m[1]);
      }
    });
    child.once("exit", (code, signal) => {
      clearTimeout(timer);
      reject(new LaunchError(`${name} exited (${signal ?? code}):\n${logs.slice(-4000)}`));
    });
  });
  const exited = () => child.exitCode !== null || child.signalCode !== null;
  const grace = opts.stopGraceMs ?? 10_000;
  return {
    address,
    child,
    logs: () => logs,
    async kill() {
      if (exited()) return;
      child.kill("SIGKILL");
      await once(child, "exit");
    },
    async stop() {
      if (exited()) return;
      child.kill("SIGTERM");
      const t = setTimeout(() => child.kill("SIGKILL"), grace);
      await once(child, "exit");
      clearTimeout(t);
    },
  };
}

export interface LaunchedAgent extends LaunchedDaemon {
  /**
   * `http://host:port` (standalone) or `https://host:port` (registered with a control plane)
   * of its RPC and port proxy listener.
   */
  url: string;
  /** Bound to the agent: its token (standalone) or the `tls` identity given (registered). */
  client: Client<typeof HostAgentService>;
  /** Headers a raw request to the agent needs (the standalone token; none over TLS). */
  headers: Record<string, string>;
}

/** A client certificate a registered agent accepts (the control plane's, for tests). */
export interface AgentClientTls {
  ca: string;
  cert: string;
  key: string;
}

/**
 * A host agent on a free loopback port with an RPC client bound to it. Its first start may
 * extract or boot a template before it listens, hence the long default wait. A standalone
 * agent's client sends the token from its agent-token file; a registered agent's uses `tls`.
 */
export async function launchAgent(
  args: string[],
  opts: LaunchOptions & { tls?: AgentClientTls } = {},
): Promise<LaunchedAgent> {
  const d = await launchDaemon("agent", ["--listen", "127.0.0.1:0", ...args], {
    readyTimeoutMs: 240_000,
    ...opts,
  });
  const flag = (name: string) => {
    const i = args.indexOf(name);
    return i >= 0 ? args[i + 1] : undefined;
  };
  if (flag("--control-plane") !== undefined) {
    const url = `https://${d.address}`;
    const client = createClient(
      HostAgentService,
      createConnectTransport({
        baseUrl: url,
        httpVersion: "1.1",
        ...(opts.tls ? { nodeOptions: { ...opts.tls } } : {}),
      }),
    );
    return { ...d, url, client, headers: {} };
  }
  const dataDir =
    flag("--data-dir") ?? opts.env?.NESTBOX_DIR ?? process.env.NESTBOX_DIR ?? "/var/lib/nestbox";
  const tokenFile = path.join(dataDir, "agent", flag("--instance") ?? "s", "agent-token");
  const headers = { [AGENT_TOKEN_HEADER]: readFileSync(tokenFile, "utf8").trim() };
  const url = `http://${d.address}`;
  const client = createClient(
    HostAgentService,
    createConnectTransport({
      baseUrl: url,
      httpVersion: "1.1",
      interceptors: [
        (next) => (req) => {
          for (const [k, v] of Object.entries(headers)) req.header.set(k, v);
          return next(req);
        },
      ],
    }),
  );
  return { ...d, url, client, headers };
}

export interface LaunchedEnvd extends LaunchedDaemon {
  url: string;
  port: number;
}

/** An envd on a free loopback port (unless args name one). */
export async function launchEnvd(args: string[], opts: LaunchOptions = {}): Promise<LaunchedEnvd> {
  const portArg = args.includes("--port") ? [] : ["--port", "0"];
  const d = await launchDaemon("envd", ["--host", "127.0.0.1", ...portArg, ...args], {
    readyTimeoutMs: 15_000,
    stopGraceMs: 5_000,
    ...opts,
  });
  const port = Number(d.address);
  return { ...d, url: `http://127.0.0.1:${port}`, port };
}
