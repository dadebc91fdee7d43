/**
 * The dashboard's browser-test stack: a real control plane started in-process on an embedded
 * database (no host agent: these pages need none), serving the built dashboard, and Debian's
 * Chromium driven by playwright-core (no browser download) with a fresh profile.
 */
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { AxeBuilder } from "@axe-core/playwright";
import { type BrowserContext, chromium, type Page } from "playwright-core";
import { type RunningServer, startServer } from "../../packages/server/src/main.js";

export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const webBuild = path.join(repoRoot, "packages/web/build");
export const outputDir = path.join(repoRoot, "test-output/web");
const CHROMIUM = process.env.NESTBOX_CHROMIUM ?? "/usr/bin/chromium";

export interface WebStack {
  url: string;
  server: RunningServer;
  context: BrowserContext;
  page: Page;
  /** Saves the page as test-output/web/<name>.png (a reviewer sees what a user sees). */
  screenshot(name: string): Promise<void>;
  close(): Promise<void>;
}

/** Builds the dashboard when this checkout has no build yet (`./nestbox setup` makes one). */
function ensureWebBuild(): void {
  if (existsSync(path.join(webBuild, "index.html"))) return;
  execFileSync("npm", ["run", "build", "-w", "@nestbox/web"], { cwd: repoRoot, stdio: "inherit" });
}

export async function startWebStack(): Promise<WebStack> {
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
    log: (line) => {
      if (process.env.NESTBOX_TEST_VERBOSE) console.error(line);
    },
  });
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
    context,
    page,
    async screenshot(name) {
      await page.screenshot({ path: path.join(outputDir, `${name}.png`), fullPage: true });
    },
    async close() {
      await context.close().catch((err: unknown) => console.error(`browser: ${String(err)}`));
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
