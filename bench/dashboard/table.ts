/// <reference lib="dom" />
// (The functions given to page.evaluate run in the browser.)
/**
 * The sandboxes table of a team with many sandboxes: time from navigation to the first page of
 * rows on screen, next to the API request alone; and, with every row loaded, the time from a
 * keystroke in the search box to the filtered table painted.
 */
import { randomBytes } from "node:crypto";
import type { Page } from "playwright-core";
import { insertPendingHost } from "../../packages/server/src/db/queries/hosts.js";
import { newId } from "../../packages/server/src/ids.js";
import type { BenchStack } from "../support/stack.js";

/** What the page asks for first (its PAGE_SIZE). */
export const FIRST_PAGE = 50;

/**
 * Sandbox rows straight in the database, far from any timeout, on a host that registered but
 * never came online: the reconciler asks only online hosts, so it leaves them be (on the
 * bench's real host it would stop every one, a thousand events in the middle of the run).
 */
export async function seedRows(stack: BenchStack, n: number): Promise<void> {
  const db = stack.server.db;
  const [team] = await db.query<{ id: string }>(
    "SELECT team_id AS id FROM api_keys ORDER BY created_at LIMIT 1",
  );
  if (!team) throw new Error("no team to seed sandboxes into");
  const host = { id: newId("host") };
  await insertPendingHost(db, {
    id: host.id,
    name: `bench-rows-${host.id.slice(-6)}`,
    createdBy: null,
    tokenId: newId("htok"),
    tokenHash: randomBytes(16).toString("hex"),
    tokenTtlSec: 600,
  });
  await db.query(
    `INSERT INTO sandboxes (id, team_id, host_id, template, status, vcpus, memory_mb,
       disk_size_mb, timeout_sec, metadata, created_at, started_at)
     SELECT 'dash' || lpad(i::text, 16, '0'), $1, $2, 'base', 'paused', 2, 512, 5120, 0,
       jsonb_build_object('bench', 'dashboard', 'i', i::text),
       now() - i * interval '1 second', now() - i * interval '1 second'
     FROM generate_series(1, $3::int) AS i`,
    [team.id, host.id, n],
  );
}

/** Navigation start → FIRST_PAGE rows in the table, in the page's own clock; and its API call. */
export async function firstTable(page: Page, url: string): Promise<{ ms: number; apiMs: number }> {
  await page.goto("about:blank");
  await page.goto(`${url}/sandboxes`, { waitUntil: "commit" });
  const ms = await page.waitForFunction(
    (n) => (document.querySelectorAll("tbody tr").length >= n ? performance.now() : 0),
    FIRST_PAGE,
    { polling: "raf", timeout: 60_000 },
  );
  const apiMs = await page.evaluate(() => {
    const e = performance
      .getEntriesByType("resource")
      .find((r) => r.name.includes("/v1/sandboxes?"));
    return e ? e.duration : Number.NaN;
  });
  return { ms: Number(await ms.jsonValue()), apiMs };
}

/** The list API alone from this process, the way the page calls it (first page, JSON). */
export async function apiFirstPage(stack: BenchStack): Promise<number> {
  const t0 = performance.now();
  const res = await fetch(`${stack.apiUrl}/v1/sandboxes?limit=${FIRST_PAGE}`, {
    headers: { "X-API-Key": stack.adminKey },
  });
  await res.arrayBuffer();
  if (res.status !== 200) throw new Error(`GET /v1/sandboxes: ${res.status}`);
  return performance.now() - t0;
}

/** The sandboxes page's rows in the DOM after a search or filter (its RENDER_STEP). */
const RENDERED_AT_ONCE = 100;

/** Clicks "Load more" until every row is in the table; returns the row count. */
export async function loadAll(page: Page, expected: number): Promise<number> {
  for (let i = 0; i < Math.ceil(expected / FIRST_PAGE) + 2; i++) {
    const more = page.getByRole("button", { name: /load more/i });
    if (!(await more.isVisible())) break;
    const before = await page.locator("tbody tr").count();
    await more.click();
    await page.waitForFunction((b) => document.querySelectorAll("tbody tr").length > b, before);
  }
  return page.locator("tbody tr").count();
}

/**
 * One character typed into the search box → the next frame painted with the table filtered:
 * the keydown's timestamp to the first animation frame after the table's rows changed.
 */
export async function searchKeystroke(page: Page, text: string, total: number): Promise<number> {
  const search = page
    .getByRole("searchbox")
    .or(page.getByLabel(/search/i))
    .first();
  await search.fill("");
  // Every row back before the keystroke (as many as the page renders at once: it adds more as
  // the table's end scrolls into view), so the change counted is this keystroke's.
  await page.waitForFunction(
    (n) => document.querySelectorAll("tbody tr").length >= n,
    Math.min(total, RENDERED_AT_ONCE),
    { timeout: 10_000 },
  );
  await page.waitForTimeout(50);
  // Armed and confirmed before the key goes (an evaluate and a key event travel different
  // paths in Chromium). A string, not a function: tsx would wrap the named inner functions in a
  // `__name` helper that does not exist in the page.
  await page.evaluate(`(() => {
    window.__nbxSearch = new Promise((resolve, reject) => {
      // Rows added or removed: the count may stay the same (100 of many matches) while the
      // rows change.
      const body = document.querySelector("tbody");
      let t0 = 0;
      document.addEventListener("keydown", (e) => (t0 = e.timeStamp), { once: true, capture: true });
      const mo = new MutationObserver(() => {
        if (!t0) return;
        mo.disconnect();
        requestAnimationFrame((t) => resolve(t - t0));
      });
      mo.observe(body, { childList: true });
      setTimeout(() => reject(new Error("the table did not change within 10 s of the keystroke")), 10_000);
    });
  })()`);
  await search.focus();
  await page.keyboard.type(text);
  return page.evaluate<number>("window.__nbxSearch");
}
