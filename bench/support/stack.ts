/**
 * The control plane in this process (so its agent calls and database time can be observed
 * through startServer's instrumentation hooks) plus one host agent process registered the way
 * `./nestbox up` registers its local agent: with the one-time token the all-in-one server writes.
 */
import { randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { type LaunchedAgent, launchAgent } from "@nestbox/cli/launch";
import { type RunningServer, type StartOptions, startServer } from "@nestbox/server/main";
import { useAgentTls } from "../control-plane/http.js";

export const NESTBOX_DIR = process.env.NESTBOX_DIR ?? "/var/lib/nestbox";

export interface BenchStackOptions {
  runtime: "qemu" | "namespace";
  /** One letter: the agent instance (its namespaces, veths and state) of this run. */
  instance: string;
  slots: string;
  /** "postgres" uses NESTBOX_BENCH_DATABASE_URL (an empty database this run may migrate). */
  db: "pglite" | "postgres";
  reconcileMs?: number;
  agentInterceptors?: StartOptions["agentInterceptors"];
  observeDb?: StartOptions["observeDb"];
}

/** The reply fields the benchmarks read (each checked where it is used); `text` when not JSON. */
export interface ApiBody {
  id?: string;
  exit_code?: number;
  stdout?: string;
  sandboxes?: unknown[];
  text?: string;
}

export interface BenchStack {
  server: RunningServer;
  agent: LaunchedAgent;
  apiUrl: string;
  adminKey: string;
  /** The control plane's data directory (admin-password, admin-api-key). */
  dataDir: string;
  /** A JSON request with the admin key; the body parsed when it is JSON. */
  api(method: string, route: string, body?: unknown): Promise<{ status: number; body: ApiBody }>;
  close(): Promise<void>;
}

function databaseUrl(kind: BenchStackOptions["db"]): string | undefined {
  if (kind === "pglite") return undefined;
  const url = process.env.NESTBOX_BENCH_DATABASE_URL;
  if (!url)
    throw new Error(
      "--db postgres needs NESTBOX_BENCH_DATABASE_URL=postgres://user:pass@host/db (an empty database the benchmark may migrate and fill)",
    );
  return url;
}

export async function startBenchStack(o: BenchStackOptions): Promise<BenchStack> {
  const dataDir = mkdtempSync(path.join(tmpdir(), "nbx-bench-cp-"));
  const server = await startServer({
    config: {
      host: "127.0.0.1",
      port: 0,
      dataDir,
      databaseUrl: databaseUrl(o.db),
      jwtSecret: randomBytes(32),
      domain: "localhost",
      publicUrl: "http://127.0.0.1",
    },
    allInOne: true,
    reconcileMs: o.reconcileMs ?? 1000,
    log: (line) => {
      if (process.env.NESTBOX_BENCH_VERBOSE) console.error(line);
    },
    agentInterceptors: o.agentInterceptors,
    observeDb: o.observeDb,
  });
  const adminKey = readFileSync(path.join(dataDir, "admin-api-key"), "utf8").trim();
  const token = readFileSync(path.join(dataDir, "local-agent-token"), "utf8").trim();
  // Credentials of an earlier run belong to a control plane that is gone.
  rmSync(path.join(NESTBOX_DIR, "agent", o.instance, "credentials.json"), { force: true });
  const agent = await launchAgent(
    [
      ...["--runtime", o.runtime, "--instance", o.instance, "--slots", o.slots],
      ...["--data-dir", NESTBOX_DIR, "--control-plane", server.url, "--registration-token", token],
    ],
    { tls: server.identity.clientTls() },
  );
  useAgentTls(server.identity.clientTls());
  const api: BenchStack["api"] = async (method, route, body) => {
    const res = await fetch(`${server.url}${route}`, {
      method,
      headers: {
        "X-API-Key": adminKey,
        ...(body === undefined ? {} : { "Content-Type": "application/json" }),
      },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    const json = res.headers.get("content-type")?.includes("json") && text;
    return { status: res.status, body: json ? (JSON.parse(text) as ApiBody) : { text } };
  };
  const close = async () => {
    await agent.client.terminate({}).catch((err: unknown) => {
      console.error(`[bench] agent terminate failed: ${String(err)}`);
    });
    await agent.kill();
    await server.close();
    rmSync(dataDir, { recursive: true, force: true });
  };
  try {
    const deadline = Date.now() + 20_000;
    for (;;) {
      // GET /v1/hosts wants a platform admin's login; the database says the same.
      const online = await server.db.query("SELECT id FROM hosts WHERE status = 'online'");
      if (online.length) break;
      if (Date.now() > deadline)
        throw new Error(`the agent did not register:\n${agent.logs().slice(-3000)}`);
      await sleep(100);
    }
  } catch (err) {
    await close();
    throw err;
  }
  return { server, agent, apiUrl: server.url, adminKey, dataDir, api, close };
}
