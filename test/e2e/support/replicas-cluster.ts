/**
 * A small multi-replica deployment on loopback, built from the parts a user would run: one
 * PostgreSQL (Debian's, through the db fixture), two `nestbox server` processes as an
 * unprivileged user sharing DATABASE_URL, NESTBOX_JWT_SECRET and NESTBOX_CA_KEY, Debian's
 * haproxy in front of them, and host agents registered through haproxy with tokens from
 * `POST /v1/hosts`.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { once } from "node:events";
import {
  chmodSync,
  chownSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import type { LaunchedAgent } from "@nestbox/cli/launch";
import { loadCertificateAuthority } from "../../../packages/server/src/pki/ca-store.js";
import { startAgent } from "../../agent/support/agent-harness.js";
import { openTestDb, type TestDb } from "../../server/support/db-fixture.js";
import { AGENT_DATA_DIR } from "./control-plane-harness.js";

const nestbox = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../../nestbox");
/** The servers run as `nobody`: the control plane needs no privilege. */
const NOBODY = { uid: 65534, gid: 65534 };

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const addr = srv.address();
      srv.close(() =>
        typeof addr === "object" && addr ? resolve(addr.port) : reject(new Error("no port")),
      );
    });
  });
}

/** One `nestbox server` process; `restart` runs it again with the same arguments and port. */
export class ServerProcess {
  private child: ChildProcess | undefined;
  /** Everything every run of it printed (old runs' output is kept). */
  output = "";

  constructor(
    readonly name: string,
    readonly port: number,
    readonly dataDir: string,
    private readonly args: string[],
    private readonly env: NodeJS.ProcessEnv,
  ) {}

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  async start(extraArgs: string[] = []): Promise<void> {
    const child = spawn(nestbox, ["server", ...this.args, ...extraArgs], {
      ...NOBODY,
      cwd: "/",
      env: this.env,
      stdio: ["ignore", "pipe", "pipe"],
    });
    this.child = child;
    const collect = (b: Buffer) => {
      this.output += b.toString();
    };
    child.stdout?.on("data", collect);
    child.stderr?.on("data", collect);
    const from = this.output.length;
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`${this.name} did not start:\n${this.output.slice(from)}`)),
        60_000,
      );
      const check = () => {
        if (this.output.slice(from).includes("[server] listening on")) {
          clearTimeout(timer);
          resolve();
        }
      };
      child.stdout?.on("data", check);
      child.once("exit", (code, signal) => {
        clearTimeout(timer);
        reject(new Error(`${this.name} exited (${signal ?? code}):\n${this.output.slice(from)}`));
      });
    });
  }

  /** SIGKILL, as a crash or an OOM kill would. */
  async kill(): Promise<void> {
    const c = this.child;
    if (!c || c.exitCode !== null || c.signalCode !== null) return;
    c.kill("SIGKILL");
    await once(c, "exit");
  }

  async stop(): Promise<void> {
    const c = this.child;
    if (!c || c.exitCode !== null || c.signalCode !== null) return;
    c.kill("SIGTERM");
    const t = setTimeout(() => c.kill("SIGKILL"), 15_000);
    await once(c, "exit");
    clearTimeout(t);
  }
}

export interface Cluster {
  db: TestDb;
  servers: [ServerProcess, ServerProcess];
  /** haproxy's address: what clients and agents use. */
  url: string;
  agents: { hostId: string; agent: LaunchedAgent }[];
  adminKey: string;
  adminEmail: string;
  adminPassword: string;
  close(): Promise<void>;
}

export interface ClusterOptions {
  /** Agent instance letters and slot ranges, one agent each. */
  agents: { instance: string; slots: string }[];
  reconcileSec: number;
  heartbeatSec: number;
}

const HAPROXY_CFG = (listen: number, backends: ServerProcess[]) => `
global
  maxconn 2000
defaults
  mode http
  timeout connect 2s
  timeout client 120s
  timeout server 120s
  # A connection refused by a dead replica is tried on the other one (the request was never
  # sent, so this is safe for any method); a request cut mid-way is the client's 502.
  retries 3
  option redispatch 1
frontend api
  bind 127.0.0.1:${listen}
  default_backend control_planes
backend control_planes
  balance roundrobin
  option httpchk GET /health
  ${backends.map((b) => `server ${b.name} 127.0.0.1:${b.port} check inter 500 fall 2 rise 2`).join("\n  ")}
`;

export async function startCluster(o: ClusterOptions): Promise<Cluster> {
  const cleanups: (() => Promise<void> | void)[] = [];
  const close = async () => {
    for (const fn of cleanups.reverse()) {
      try {
        await fn();
      } catch (err) {
        console.error(`cleanup: ${String(err)}`);
      }
    }
  };
  try {
    const db = await openTestDb("postgres");
    cleanups.push(() => db.close());
    if (!db.url) throw new Error("the postgres fixture gave no URL");
    const root = mkdtempSync(path.join(tmpdir(), "nbx-replicas-"));
    chmodSync(root, 0o711);
    cleanups.push(() => rmSync(root, { recursive: true, force: true }));

    const jwtSecret = randomBytes(32).toString("hex");
    const caKey = randomBytes(32).toString("hex");
    const proxyPort = await freePort();
    const url = `http://127.0.0.1:${proxyPort}`;
    const env = {
      PATH: process.env.PATH ?? "/usr/bin:/bin",
      DATABASE_URL: db.url,
      NESTBOX_JWT_SECRET: jwtSecret,
      NESTBOX_CA_KEY: caKey,
      NESTBOX_PUBLIC_URL: url,
    };
    const servers = [] as unknown as [ServerProcess, ServerProcess];
    for (const name of ["cp_a", "cp_b"]) {
      const dir = path.join(root, name);
      mkdirSync(dir, { mode: 0o700 });
      chownSync(dir, NOBODY.uid, NOBODY.gid);
      const port = await freePort();
      const s = new ServerProcess(
        name,
        port,
        dir,
        [
          "--listen",
          `127.0.0.1:${port}`,
          "--data-dir",
          dir,
          "--reconcile-interval",
          String(o.reconcileSec),
        ],
        { ...env, HOME: dir },
      );
      servers.push(s);
      cleanups.push(() => s.stop());
    }
    const adminEmail = "admin@replicas.example.com";
    // The first replica seeds the admin (once); the second starts on the migrated database.
    await servers[0].start(["--bootstrap-admin", adminEmail]);
    await servers[1].start();
    const adminDir = servers[0].dataDir;
    const adminPassword = readFileSync(path.join(adminDir, "admin-password"), "utf8").trim();
    const adminKey = readFileSync(path.join(adminDir, "admin-api-key"), "utf8").trim();

    const cfg = path.join(root, "haproxy.cfg");
    writeFileSync(cfg, HAPROXY_CFG(proxyPort, servers));
    const haproxy = spawn("haproxy", ["-db", "-f", cfg], { stdio: ["ignore", "pipe", "pipe"] });
    let haproxyLog = "";
    haproxy.stderr.on("data", (b: Buffer) => {
      haproxyLog += b.toString();
    });
    cleanups.push(async () => {
      if (haproxy.exitCode !== null || haproxy.signalCode !== null) return;
      haproxy.kill("SIGTERM");
      await once(haproxy, "exit");
    });
    await waitFor(
      async () => (await fetch(`${url}/health`)).ok,
      15_000,
      () => haproxyLog,
    );

    // Agents: tokens from POST /v1/hosts (an admin user's token), registered through haproxy.
    const login = await postJson(`${url}/v1/auth/login`, {
      email: adminEmail,
      password: adminPassword,
    });
    const bearer = { Authorization: `Bearer ${login.token as string}` };
    // The test calls agents as a control plane would: with a certificate of the shared CA.
    const ca = await loadCertificateAuthority(
      db.db,
      { dataDir: root, sealKeyHex: caKey },
      () => {},
    );
    const identity = await ca.issueControlPlaneIdentity();
    const tls = { ca: ca.certificatePem, cert: identity.certPem, key: identity.keyPem };
    const agents: Cluster["agents"] = [];
    for (const a of o.agents) {
      const created = await postJson(`${url}/v1/hosts`, { name: `replicas-${a.instance}` }, bearer);
      rmSync(path.join(AGENT_DATA_DIR, "agent", a.instance, "credentials.json"), { force: true });
      const agent = await startAgent(
        [
          "--runtime",
          "namespace",
          "--instance",
          a.instance,
          "--slots",
          a.slots,
          "--data-dir",
          AGENT_DATA_DIR,
          "--control-plane",
          url,
          "--registration-token",
          created.registration_token as string,
          "--heartbeat-interval",
          String(o.heartbeatSec),
        ],
        { tls },
      );
      const hostId = (created.host as { id: string }).id;
      agents.push({ hostId, agent });
      cleanups.push(async () => {
        // Terminate destroys whatever sandboxes a failed test left, then the agent exits.
        if (agent.child.exitCode === null && agent.child.signalCode === null)
          await agent.client.terminate({}, { timeoutMs: 60_000 }).catch((err: unknown) => {
            console.error(`terminating agent ${a.instance}: ${String(err)}`);
          });
        await agent.kill();
        // Its credentials, key and records: the instance letter is this test's alone.
        rmSync(path.join(AGENT_DATA_DIR, "agent", a.instance), { recursive: true, force: true });
      });
      await waitFor(
        async () =>
          (await db.db.query("SELECT 1 FROM hosts WHERE id = $1 AND status = 'online'", [hostId]))
            .length === 1,
        60_000,
        () => agent.logs().slice(-3000),
      );
    }
    return { db, servers, url, agents, adminKey, adminEmail, adminPassword, close };
  } catch (err) {
    await close();
    throw err;
  }
}

async function postJson(
  url: string,
  body: unknown,
  headers: Record<string, string> = {},
): Promise<Record<string, unknown>> {
  const res = await fetch(url, {
    method: "POST",
    headers: { "Content-Type": "application/json", ...headers },
    body: JSON.stringify(body),
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`POST ${url}: ${res.status} ${text}`);
  return JSON.parse(text) as Record<string, unknown>;
}

export async function waitFor(
  fn: () => Promise<boolean>,
  timeoutMs: number,
  context: () => string = () => "",
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      if (await fn()) return;
    } catch (err) {
      last = err;
    }
    await sleep(250);
  }
  throw new Error(`timed out after ${timeoutMs} ms (${String(last ?? "")}):\n${context()}`);
}
