/** Debian's Chromium driven by playwright-core (no browser download), signed in as the admin. */
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { type BrowserContext, chromium, type Page } from "playwright-core";
import type { BenchStack } from "../support/stack.js";

const CHROMIUM = process.env.NESTBOX_CHROMIUM ?? "/usr/bin/chromium";
const ADMIN_EMAIL = "admin@localhost";

export interface Browser {
  page: Page;
  close(): Promise<void>;
}

export async function signedInBrowser(stack: BenchStack): Promise<Browser> {
  const profile = mkdtempSync(path.join(tmpdir(), "nbx-bench-chromium-"));
  let context: BrowserContext;
  try {
    context = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      args: ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"],
      viewport: { width: 1280, height: 800 },
    });
  } catch (err) {
    rmSync(profile, { recursive: true, force: true });
    throw new Error(`${CHROMIUM} did not start (install Debian's chromium): ${String(err)}`);
  }
  const page = context.pages()[0] ?? (await context.newPage());
  const password = readFileSync(path.join(stack.dataDir, "admin-password"), "utf8").trim();
  await page.goto(`${stack.apiUrl}/login`);
  await page.getByLabel("E-mail").fill(ADMIN_EMAIL);
  await page.getByLabel("Password").fill(password);
  await page.getByRole("button", { name: "Log in" }).click();
  await page.waitForURL((u) => !u.pathname.startsWith("/login"), { timeout: 30_000 });
  return {
    page,
    async close() {
      await context.close();
      rmSync(profile, { recursive: true, force: true });
    },
  };
}
