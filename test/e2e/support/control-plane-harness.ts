/**
 * A real control plane (in this process, its own database) plus a real host agent process
 * registered through the normal registration path, for the end-to-end suites.
 */
import { randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { type RunningServer, type StartOptions, startServer } from "@nestbox/server/main";
import { type AgentProcess, startAgent } from "../../agent/support/agent-harness.js";
import { openTestDb } from "../../server/support/db-fixture.js";

export const AGENT_DATA_DIR = process.env.NESTBOX_DIR ?? "/var/lib/nestbox";

export interface StackOptions {
  runtime: "qemu" | "namespace";
  /** One letter: the agent instance (namespaces, veths, state) of this suite. */
  instance: string;
  slots: string;
  db: "pglite" | "postgres";
  reconcileMs?: number;
  /** Passed to the control plane (the benchmark times agent calls with one). */
  agentInterceptors?: StartOptions["agentInterceptors"];
  /** More control-plane options (e.g. short certificate lifetimes). */
  serverOptions?: Partial<Pick<StartOptions, "hostCertTtlMs" | "clientCertTtlMs">>;
  /** More agent flags. */
  agentArgs?: string[];
}

export interface Stack {
  server: RunningServer;
  agent: AgentProcess;
  apiUrl: string;
  adminKey: string;
  /** The control plane's data directory (admin-password, admin-api-key). */
  dataDir: string;
  hostId: string;
  /** Stops the control plane and starts it again on the same port and database. */
  restartServer(): Promise<void>;
  /** JSON request with the admin key, `key`, or (`null`) none; `body` strings go as they are. */
  api(method: string, route: string, body?: unknown, key?: string | null): Promise<ApiResult>;
  close(): Promise<void>;
}

export interface ApiResult {
  status: number;
  headers: Headers;
  // biome-ignore lint/suspicious/noExplicitAny: test responses are checked field by field
  body: any;
}

export async function startStack(o: StackOptions): Promise<Stack> {
  const dataDir = mkdtempSync(path.join(tmpdir(), "nbx-e2e-cp-"));
  const testDb = o.db === "postgres" ? await openTestDb("postgres") : undefined;
  // PGlite: the server opens its own database in dataDir; postgres: a fresh test database.
  if (testDb) await testDb.db.close();
  const jwtSecret = randomBytes(32);
  const log = (line: string) => {
    if (process.env.NESTBOX_TEST_VERBOSE) console.log(line);
  };
  const config = (port: number) => ({
    host: "127.0.0.1",
    port,
    dataDir,
    databaseUrl: testDb?.url,
    jwtSecret,
    domain: "localhost",
    publicUrl: `http://127.0.0.1:${port}`,
  });
  let server = await startServer({
    config: config(0),
    allInOne: true,
    reconcileMs: o.reconcileMs ?? 1000,
    log,
    agentInterceptors: o.agentInterceptors,
    ...o.serverOptions,
  });
  const port = server.server.address();
  const apiPort = typeof port === "object" && port ? port.port : 0;
  const token = readFileSync(path.join(dataDir, "local-agent-token"), "utf8").trim();
  const adminKey = readFileSync(path.join(dataDir, "admin-api-key"), "utf8").trim();
  // A previous run's credentials belong to another (gone) control plane.
  rmSync(path.join(AGENT_DATA_DIR, "agent", o.instance, "credentials.json"), { force: true });
  const agent = await startAgent(
    [
      "--runtime",
      o.runtime,
      "--instance",
      o.instance,
      "--slots",
      o.slots,
      "--data-dir",
      AGENT_DATA_DIR,
      "--control-plane",
      server.url,
      "--registration-token",
      token,
      ...(o.agentArgs ?? []),
    ],
    { tls: server.identity.clientTls() },
  );
  let hostId = "";
  for (let i = 0; i < 200 && !hostId; i++) {
    const rows = await server.db.query<{ id: string }>(
      "SELECT id FROM hosts WHERE status = 'online'",
    );
    hostId = rows[0]?.id ?? "";
    if (!hostId) await sleep(100);
  }
  if (!hostId) throw new Error(`the agent did not register:\n${agent.logs().slice(-3000)}`);

  const stack: Stack = {
    get server() {
      return server;
    },
    agent,
    apiUrl: server.url,
    adminKey,
    dataDir,
    hostId,
    async restartServer() {
      await server.close();
      server = await startServer({
        config: config(apiPort),
        allInOne: true,
        reconcileMs: o.reconcileMs ?? 1000,
        log,
        agentInterceptors: o.agentInterceptors,
        ...o.serverOptions,
      });
    },
    async api(method, route, body, key = adminKey) {
      const headers: Record<string, string> = {};
      if (key !== null) headers["X-API-Key"] = key;
      if (body !== undefined) headers["Content-Type"] = "application/json";
      const res = await fetch(`${server.url}${route}`, {
        method,
        headers,
        body:
          body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body),
      });
      const text = await res.text();
      let parsed: unknown = text;
      try {
        parsed = text ? JSON.parse(text) : undefined;
      } catch {
        // Not JSON: the raw text is what the test sees.
      }
      return { status: res.status, headers: res.headers, body: parsed };
    },
    async close() {
      // A test may already have terminated it (a forced host delete).
      if (agent.child.exitCode === null && agent.child.signalCode === null)
        await agent.client.terminate({}).catch((err: unknown) => {
          console.error(`terminate failed: ${String(err)}`);
        });
      await agent.kill();
      await server.close();
      await testDb?.close();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
  return stack;
}
