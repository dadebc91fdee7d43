/**
 * The dashboard's browser-test stack: a real control plane started in-process on an embedded
 * database, serving the built dashboard, and Debian's Chromium driven by playwright-core (no
 * browser download) with a fresh profile. Pages that need running sandboxes (terminal, files,
 * pause/resume) ask for `agent`: a real host agent registered the way `./nestbox up` registers
 * its local one.
 */
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import { AxeBuilder } from "@axe-core/playwright";
import { type LaunchedAgent, launchAgent } from "@nestbox/cli/launch";
import { type BrowserContext, chromium, type Page } from "playwright-core";
import { insertPendingHost } from "../../../packages/server/src/db/queries/hosts.js";
import {
  insertPendingSandbox,
  transitionSandbox,
} from "../../../packages/server/src/db/queries/sandboxes.js";
import { newId, newSandboxId } from "../../../packages/server/src/ids.js";
import { type RunningServer, startServer } from "../../../packages/server/src/main.js";

export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");
const webBuild = path.join(repoRoot, "packages/web/build");
export const outputDir = path.join(repoRoot, "test-output/web");
const CHROMIUM = process.env.NESTBOX_CHROMIUM ?? "/usr/bin/chromium";

export interface WebStackOptions {
  /** Start a host agent too: its runtime, its instance letter and slot range (unique per file). */
  agent?: { runtime: "namespace" | "qemu"; instance: string; slots: string };
}

export interface WebStack {
  url: string;
  server: RunningServer;
  /** The host agent, when the stack was started with one. */
  agent: LaunchedAgent | undefined;
  /** The control plane's data directory (admin-password, admin-api-key with an agent). */
  dataDir: string;
  context: BrowserContext;
  page: Page;
  /** Saves the page as test-output/web/<name>.png (a reviewer sees what a user sees). */
  screenshot(name: string, opts?: { fullPage?: boolean }): Promise<void>;
  close(): Promise<void>;
}

/** Builds the dashboard when this checkout has no build yet (`./nestbox setup` makes one). */
function ensureWebBuild(): void {
  if (existsSync(path.join(webBuild, "index.html"))) return;
  execFileSync("npm", ["run", "build", "-w", "@nestbox/web"], { cwd: repoRoot, stdio: "inherit" });
}

const NESTBOX_DIR = process.env.NESTBOX_DIR ?? "/var/lib/nestbox";

/**
 * A host agent that registers with `token` (a host's one-time registration token) and does not
 * wait for it to come online: a test that shows the host going online in a page waits there.
 */
export async function launchRegisteredAgent(
  server: RunningServer,
  token: string,
  o: NonNullable<WebStackOptions["agent"]>,
): Promise<LaunchedAgent> {
  // Credentials of an earlier run belong to a control plane that is gone.
  rmSync(path.join(NESTBOX_DIR, "agent", o.instance, "credentials.json"), { force: true });
  return launchAgent(
    [
      ...["--runtime", o.runtime, "--instance", o.instance, "--slots", o.slots],
      ...["--data-dir", NESTBOX_DIR, "--control-plane", server.url, "--registration-token", token],
    ],
    { tls: server.identity.clientTls() },
  );
}

async function startAgent(
  server: RunningServer,
  dataDir: string,
  o: NonNullable<WebStackOptions["agent"]>,
): Promise<LaunchedAgent> {
  const token = readFileSync(path.join(dataDir, "local-agent-token"), "utf8").trim();
  const agent = await launchRegisteredAgent(server, token, o);
  const deadline = Date.now() + 30_000;
  while ((await server.db.query("SELECT id FROM hosts WHERE status = 'online'")).length === 0) {
    if (Date.now() > deadline) {
      await agent.kill();
      throw new Error(`the agent did not register:\n${agent.logs().slice(-3000)}`);
    }
    await sleep(100);
  }
  return agent;
}

/** Asks the agent to terminate (it destroys its sandboxes), then kills it. */
export async function stopAgent(agent: LaunchedAgent): Promise<void> {
  await agent.client.terminate({}).catch((err: unknown) => {
    console.error(`agent terminate: ${String(err)}`);
  });
  await agent.kill();
}

export async function startWebStack(opts: WebStackOptions = {}): Promise<WebStack> {
  if (!existsSync(CHROMIUM))
    throw new Error(`${CHROMIUM} is missing: install Debian's chromium (./nestbox setup --test)`);
  ensureWebBuild();
  mkdirSync(outputDir, { recursive: true });
  const dataDir = mkdtempSync(path.join(tmpdir(), "nbx-web-"));
  const server = await startServer({
    config: {
      host: "127.0.0.1",
      port: 0,
      dataDir,
      databaseUrl: undefined,
      jwtSecret: new TextEncoder().encode(randomBytes(32).toString("hex")),
      domain: "localhost",
      publicUrl: "http://127.0.0.1",
    },
    allInOne: opts.agent !== undefined,
    reconcileMs: opts.agent ? 1000 : undefined,
    log: (line) => {
      if (process.env.NESTBOX_TEST_VERBOSE) console.error(line);
    },
  });
  let agent: LaunchedAgent | undefined;
  try {
    if (opts.agent) agent = await startAgent(server, dataDir, opts.agent);
  } catch (err) {
    await server.close();
    throw err;
  }
  const profile = mkdtempSync(path.join(tmpdir(), "nbx-chromium-"));
  let context: BrowserContext;
  try {
    context = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      args: [
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
      ],
      viewport: { width: 1280, height: 800 },
    });
  } catch (err) {
    if (agent) await stopAgent(agent);
    await server.close();
    throw err;
  }
  // Offline, as on a machine without internet: anything not from the control plane fails.
  await context.route("**/*", (route) =>
    route.request().url().startsWith(server.url) ? route.continue() : route.abort(),
  );
  const page = context.pages()[0] ?? (await context.newPage());
  return {
    url: server.url,
    server,
    agent,
    dataDir,
    context,
    page,
    async screenshot(name, opts) {
      const fullPage = opts?.fullPage ?? true;
      await page.screenshot({ path: path.join(outputDir, `${name}.png`), fullPage });
    },
    async close() {
      await context.close().catch((err: unknown) => console.error(`browser: ${String(err)}`));
      if (agent) await stopAgent(agent);
      await server.close();
      rmSync(profile, { recursive: true, force: true });
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/** axe-core's serious and critical violations on the page as it is now, one line each. */
export async function seriousA11yViolations(page: Page): Promise<string[]> {
  const result = await new AxeBuilder({ page }).analyze();
  return result.violations
    .filter((v) => v.impact === "serious" || v.impact === "critical")
    .map(
      (v) =>
        `${v.id} (${v.impact}): ${v.help} — ${v.nodes.map((n) => n.target.join(" ")).join(", ")}`,
    );
}

/**
 * `n` running sandboxes of `teamId` straight in the database, on a registered-but-never-seen
 * host (no agent runs here): enough for the list, its paging and its error paths. Returns
 * their ids, newest last.
 */
export async function seedSandboxes(stack: WebStack, teamId: string, n: number): Promise<string[]> {
  const db = stack.server.db;
  const hostId = newId("host");
  await insertPendingHost(db, {
    id: hostId,
    name: `web-test-${hostId.slice(-6)}`,
    createdBy: null,
    tokenId: newId("htok"),
    tokenHash: randomBytes(16).toString("hex"),
    tokenTtlSec: 600,
  });
  const ids: string[] = [];
  for (let i = 0; i < n; i++) {
    const id = newSandboxId();
    await insertPendingSandbox(db, {
      id,
      teamId,
      hostId,
      templateId: "tpl_base",
      template: "base",
      vcpus: 1,
      memoryMb: 512,
      diskSizeMb: 2048,
      timeoutSec: 300,
      allowInternetAccess: true,
      envVars: {},
      metadata: { seq: String(i) },
      envdAccessToken: null,
    });
    await transitionSandbox(db, id, ["pending"], "running", { started: true });
    ids.push(id);
  }
  return ids;
}
