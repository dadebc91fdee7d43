/**
 * A real stack for the command and file route tests: the control plane in its own process (so
 * its memory can be watched: `serverRss()`) on a throwaway PostgreSQL database (PGlite's
 * in-process heap would hide the control plane's own growth), all-in-one seed; a real
 * host agent process with the namespace runtime (instance `s`, slots 6100-6199) registered
 * through the normal registration path; and one running sandbox made through the REST API.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { once } from "node:events";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { createInterface } from "node:readline";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import { openDb } from "../../../packages/server/src/db/open.js";
import { loadCertificateAuthority } from "../../../packages/server/src/pki/ca-store.js";
import { type AgentProcess, startAgent } from "../../agent/support/agent-harness.js";
import { openTestDb } from "./db-fixture.js";

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");
const AGENT_DATA_DIR = process.env.NESTBOX_DIR ?? "/var/lib/nestbox";
const INSTANCE = "s";
const SLOTS = "6100-6199";

export interface ApiResult {
  status: number;
  // biome-ignore lint/suspicious/noExplicitAny: test responses are checked field by field
  body: any;
}

export interface CommandStack {
  apiUrl: string;
  apiKey: string;
  sandboxId: string;
  agent: AgentProcess;
  /** JSON request with the admin key (or `key`); `body` strings are sent as they are. */
  api(method: string, route: string, body?: unknown, key?: string): Promise<ApiResult>;
  /** The control plane process's resident memory in bytes. */
  serverRss(): number;
  serverLogs(): string;
  close(): Promise<void>;
}

async function startServerProcess(
  dataDir: string,
  databaseUrl: string,
): Promise<{ child: ChildProcess; url: string; logs: () => string }> {
  const main = path.join(repoRoot, "packages/server/src/main.ts");
  const child = spawn(
    process.execPath,
    [
      "--import",
      "tsx",
      "--input-type=module",
      "-e",
      `const m = await import(${JSON.stringify(main)}); await m.main(process.argv.slice(1));`,
      "--",
      "--listen",
      "127.0.0.1:0",
      "--data-dir",
      dataDir,
      "--all-in-one",
    ],
    {
      cwd: repoRoot,
      env: {
        ...process.env,
        NESTBOX_JWT_SECRET: randomBytes(32).toString("hex"),
        DATABASE_URL: databaseUrl,
      },
      stdio: ["ignore", "pipe", "pipe"],
    },
  );
  let logs = "";
  const keep = (d: Buffer) => {
    logs += d.toString();
    if (logs.length > 1 << 20) logs = logs.slice(-(1 << 19));
    if (process.env.NESTBOX_TEST_VERBOSE) process.stderr.write(d);
  };
  child.stderr?.on("data", keep);
  if (!child.stdout) throw new Error("server has no stdout");
  const lines = createInterface({ input: child.stdout });
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`control plane did not start:\n${logs}`)),
      60_000,
    );
    lines.on("line", (line) => {
      keep(Buffer.from(`${line}\n`));
      const m = /listening on (http:\S+)/.exec(line);
      if (m?.[1]) {
        clearTimeout(timer);
        resolve(m[1]);
      }
    });
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`control plane exited with ${code}:\n${logs}`));
    });
  });
  return { child, url, logs: () => logs };
}

/** A client certificate of the server process's CA: the test calls its agent as the server does. */
async function controlPlaneTls(dataDir: string, databaseUrl: string) {
  const db = await openDb({ databaseUrl, dataDir });
  try {
    const ca = await loadCertificateAuthority(db, { dataDir }, () => {});
    const id = await ca.issueControlPlaneIdentity();
    return { ca: ca.certificatePem, cert: id.certPem, key: id.keyPem };
  } finally {
    await db.close();
  }
}

export async function startCommandStack(): Promise<CommandStack> {
  const dataDir = mkdtempSync(path.join(tmpdir(), "nbx-cmd-cp-"));
  const testDb = await openTestDb("postgres");
  // The control plane opens its own connections; this one only made the database.
  await testDb.db.close();
  if (!testDb.url) throw new Error("the postgres test database has no URL");
  const server = await startServerProcess(dataDir, testDb.url);
  const apiKey = readFileSync(path.join(dataDir, "admin-api-key"), "utf8").trim();
  const token = readFileSync(path.join(dataDir, "local-agent-token"), "utf8").trim();
  // A previous run's credentials belong to another (gone) control plane.
  rmSync(path.join(AGENT_DATA_DIR, "agent", INSTANCE, "credentials.json"), { force: true });
  let agent: AgentProcess | undefined;
  let sandboxId = "";

  const api = async (
    method: string,
    route: string,
    body?: unknown,
    key = apiKey,
  ): Promise<ApiResult> => {
    const res = await fetch(`${server.url}${route}`, {
      method,
      headers: {
        "X-API-Key": key,
        ...(body !== undefined ? { "Content-Type": "application/json" } : {}),
      },
      body: body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body),
    });
    const text = await res.text();
    let parsed: unknown = text;
    if (text && (res.headers.get("content-type") ?? "").includes("json")) parsed = JSON.parse(text);
    return { status: res.status, body: parsed };
  };

  const close = async () => {
    if (sandboxId)
      await api("DELETE", `/v1/sandboxes/${sandboxId}`).catch((err: unknown) =>
        console.error(`destroy: ${String(err)}`),
      );
    if (agent) {
      await agent.client
        .terminate({})
        .catch((err: unknown) => console.error(`terminate: ${String(err)}`));
      await agent.kill();
    }
    if (server.child.exitCode === null && server.child.signalCode === null) {
      server.child.kill("SIGTERM");
      const t = setTimeout(() => server.child.kill("SIGKILL"), 10_000);
      await once(server.child, "exit");
      clearTimeout(t);
    }
    await testDb.close();
    rmSync(dataDir, { recursive: true, force: true });
  };

  try {
    agent = await startAgent(
      [
        "--runtime",
        "namespace",
        "--instance",
        INSTANCE,
        "--slots",
        SLOTS,
        "--data-dir",
        AGENT_DATA_DIR,
        "--control-plane",
        server.url,
        "--registration-token",
        token,
      ],
      { tls: await controlPlaneTls(dataDir, testDb.url) },
    );
    // The host is schedulable once its registration landed: retry while none is available.
    let last: ApiResult | undefined;
    for (let i = 0; i < 100 && !sandboxId; i++) {
      last = await api("POST", "/v1/sandboxes", {
        template: "base",
        memory_mb: 512,
        vcpus: 1,
        timeout_sec: 0,
      });
      if (last.status === 201) sandboxId = last.body.id;
      else if (last.status === 503) await sleep(200);
      else break;
    }
    if (!sandboxId)
      throw new Error(
        `could not create a sandbox: ${JSON.stringify(last)}\n${server.logs().slice(-3000)}\n${agent.logs().slice(-3000)}`,
      );
  } catch (err) {
    await close();
    throw err;
  }

  const pid = server.child.pid;
  return {
    apiUrl: server.url,
    apiKey,
    sandboxId,
    agent,
    api,
    serverRss() {
      const status = readFileSync(`/proc/${pid}/status`, "utf8");
      const kb = Number(/VmRSS:\s+(\d+)\s+kB/.exec(status)?.[1]);
      return kb * 1024;
    },
    serverLogs: server.logs,
    close,
  };
}
