/**
 * A control plane in this process (`startServer`, PGlite, debug log kept) and real host agents
 * registered with it through `POST /v1/hosts` tokens. Each agent has its own data directory
 * (sharing this machine's base template) and an instance letter and slot range the caller
 * gives. Used by the BYOC/scheduler and agent-refusal tests.
 */
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import type { ServerConfig } from "../../../packages/server/src/config.js";
import {
  type RunningServer,
  type StartOptions,
  startServer,
} from "../../../packages/server/src/main.js";
import {
  type AgentProcess,
  shareBaseTemplate,
  startAgent,
} from "../../agent/support/agent-harness.js";

export interface ApiResult {
  status: number;
  // biome-ignore lint/suspicious/noExplicitAny: test responses are checked field by field
  body: any;
}

export interface HostStack {
  server: RunningServer;
  url: string;
  /** Everything the control plane logged (debug included). */
  logs: string[];
  api(method: string, route: string, bearer: string, body?: unknown): Promise<ApiResult>;
  /** Stops the control plane and removes its data directory, unless `keepData` (a restart). */
  close(keepData?: boolean): Promise<void>;
}

export async function startHostStack(
  opts: {
    port?: number;
    dataDir?: string;
    jwtSecret?: Uint8Array;
    /** More startServer options (log level, staleness, reconcile interval). */
    start?: Partial<Omit<StartOptions, "config" | "log">>;
  } = {},
): Promise<HostStack & { dataDir: string; jwtSecret: Uint8Array }> {
  const dataDir = opts.dataDir ?? mkdtempSync(path.join(tmpdir(), "nbx-hoststack-"));
  const jwtSecret = opts.jwtSecret ?? randomBytes(32);
  const config: ServerConfig = {
    host: "127.0.0.1",
    port: opts.port ?? 0,
    dataDir,
    databaseUrl: undefined,
    jwtSecret,
    domain: "localhost",
    publicUrl: "http://127.0.0.1",
  };
  const logs: string[] = [];
  const server = await startServer({
    config,
    logLevel: "debug",
    reconcileMs: 2000,
    ...opts.start,
    log: (l) => {
      logs.push(l);
      if (logs.length > 20_000) logs.splice(0, 10_000);
      if (process.env.NESTBOX_TEST_VERBOSE) console.error(l);
    },
  });
  const api = async (method: string, route: string, bearer: string, body?: unknown) => {
    const res = await fetch(`${server.url}${route}`, {
      method,
      headers: {
        authorization: `Bearer ${bearer}`,
        ...(body !== undefined ? { "content-type": "application/json" } : {}),
      },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    return { status: res.status, body: text ? JSON.parse(text) : undefined };
  };
  return {
    server,
    url: server.url,
    logs,
    api,
    dataDir,
    jwtSecret,
    async close(keepData = false) {
      await server.close();
      if (!keepData) rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

export interface StackAgent {
  agent: AgentProcess;
  dataDir: string;
  stop(): Promise<void>;
}

/** A namespace agent registered with `token` (instance and slots from the caller's range). */
export async function startStackAgent(
  stack: HostStack,
  o: { instance: string; slots: string; token: string; heartbeatSec?: number },
): Promise<StackAgent> {
  const dataDir = mkdtempSync(path.join(tmpdir(), `nbx-agent-${o.instance}-`));
  shareBaseTemplate(dataDir);
  const agent = await startAgent(
    [
      "--runtime",
      "namespace",
      "--instance",
      o.instance,
      "--slots",
      o.slots,
      "--data-dir",
      dataDir,
      "--control-plane",
      stack.url,
      "--heartbeat-interval",
      String(o.heartbeatSec ?? 1),
    ],
    { env: { NESTBOX_REGISTRATION_TOKEN: o.token }, tls: stack.server.identity.clientTls() },
  );
  return {
    agent,
    dataDir,
    async stop() {
      // Whatever is still on it goes (a plain stop would leave namespace sandboxes running).
      if (agent.child.exitCode === null && agent.child.signalCode === null)
        await agent.client
          .terminate({})
          .catch((err: unknown) => console.error(`terminate ${o.instance}: ${String(err)}`));
      await agent.stop();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/** Polls `fn` until it returns a value (not undefined), or fails after `ms`. */
export async function until<T>(
  what: string,
  fn: () => Promise<T | undefined>,
  ms = 30_000,
): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(200);
  }
}
