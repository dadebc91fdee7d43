/**
 * The sandboxes page with a team of 60 sandboxes (seeded in the database; no agent runs):
 * cursor paging, search by id, status filter, an API error shown on the row action, and kill
 * behind a confirm dialog.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { transitionSandbox } from "../../packages/server/src/db/queries/sandboxes.js";
import {
  seedSandboxes,
  seriousA11yViolations,
  startWebStack,
  type WebStack,
} from "./support/browser-fixture.js";

describe("sandboxes page", () => {
  let stack: WebStack;
  let ids: string[] = [];
  let teamId = "";
  const email = `grace-${Date.now()}@example.com`;
  const password = "correct horse battery";

  before(async () => {
    stack = await startWebStack();
    const { page, url } = stack;
    await page.goto(`${url}/signup`);
    await page.getByLabel("Name").fill("Grace");
    await page.getByLabel("E-mail").fill(email);
    await page.getByLabel("Password").fill(password);
    await page.getByRole("button", { name: "Sign up" }).click();
    await page.waitForURL(`${url}/`);
    await page
      .getByRole("navigation", { name: "Main" })
      .getByRole("link", { name: "Sandboxes" })
      .click();
    await page.waitForURL(`${url}/sandboxes`);
    teamId = await page.getByLabel("Team").inputValue();
    ids = await seedSandboxes(stack, teamId, 60);
  });
  after(async () => {
    await stack?.close();
  });

  const bodyRows = () => stack.page.locator("tbody tr");

  test("lists a page of 50 and loads the rest by cursor", async () => {
    const { page } = stack;
    await page.getByRole("button", { name: "Refresh" }).click();
    await page.getByRole("button", { name: "Load more" }).waitFor();
    assert.equal(await bodyRows().count(), 50);
    // Newest first: the last seeded is on top.
    assert.match((await bodyRows().first().textContent()) ?? "", new RegExp(ids[59] ?? "?"));
    await page.getByRole("button", { name: "Load more" }).click();
    // The button goes away with the last page; the rows arrive with it.
    // Page-side code as strings: this tsconfig has no DOM types.
    await page.waitForFunction('document.querySelectorAll("tbody tr").length === 60');
    assert.equal(await page.getByRole("button", { name: "Load more" }).count(), 0);
    assert.deepEqual(await seriousA11yViolations(page), []);
  });

  test("search narrows to matching ids; the status filter asks the API", async () => {
    const { page } = stack;
    const id = ids[10] ?? "";
    await page.getByLabel("Search by id").fill(id.slice(0, 12));
    assert.equal(await bodyRows().count(), 1);
    assert.match((await bodyRows().first().textContent()) ?? "", /seq=10/);
    await page.getByLabel("Search by id").fill("");
    await page.getByLabel("Status").selectOption({ label: "Paused" });
    await page.getByRole("heading", { name: "No sandboxes with this status" }).waitFor();
    await page.getByLabel("Status").selectOption({ label: "Running" });
    await page.getByRole("button", { name: "Load more" }).waitFor();
    assert.equal(await bodyRows().count(), 50);

    // An id beyond the loaded page: the loaded rows show no match at once, then the API is
    // asked with the text and the row comes back from it.
    const old = ids[2] ?? "";
    const asked = page.waitForRequest((r) => new URL(r.url()).searchParams.has("id"));
    await page.getByLabel("Search by id").fill(old.slice(3, 15));
    await page.getByText(`No loaded sandbox id contains “${old.slice(3, 15)}”`).waitFor();
    const req = new URL((await asked).url());
    assert.equal(req.searchParams.get("id"), old.slice(3, 15));
    assert.equal(req.searchParams.get("state"), "running");
    await page.getByRole("row", { name: new RegExp(old) }).waitFor();
    assert.equal(await bodyRows().count(), 1);
    assert.equal(await page.getByRole("button", { name: "Load more" }).count(), 0);
    // The API refuses text no id can hold, by name (the page never sends it).
    const login = await fetch(`${stack.url}/v1/auth/login`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ email, password }),
    });
    const { token } = (await login.json()) as { token: string };
    const bad = await fetch(`${stack.url}/v1/sandboxes?id=NOT%25AN-ID`, {
      headers: { Authorization: `Bearer ${token}` },
    });
    assert.equal(bad.status, 400);
    const badBody = (await bad.json()) as { error: { code: string; message: string } };
    assert.equal(badBody.error.code, "invalid_request", JSON.stringify(badBody));
    assert.match(badBody.error.message, /\bid\b/);
    // Cleared: the unfiltered first page again.
    const unfiltered = page.waitForRequest(
      (r) =>
        new URL(r.url()).pathname === "/v1/sandboxes" && !new URL(r.url()).searchParams.has("id"),
    );
    await page.getByLabel("Search by id").fill("");
    await unfiltered;
    await page.getByRole("button", { name: "Load more" }).waitFor();
    assert.equal(await bodyRows().count(), 50);
  });

  test("a failing action shows the API's message; kill asks first", async () => {
    const { page } = stack;
    const id = ids[59] ?? "";
    // The seeded host never connected: pausing needs it, so the API refuses.
    await page.getByRole("button", { name: `Pause ${id}` }).click();
    const alert = page.getByRole("alert").filter({ hasText: `pause ${id}` });
    await alert.waitFor();
    assert.ok(((await alert.textContent()) ?? "").length > `pause ${id}: `.length);

    await page.getByRole("button", { name: `Kill ${id}` }).click();
    const dialog = page.getByRole("dialog", { name: "Kill sandbox?" });
    await dialog.waitFor();
    assert.match((await dialog.textContent()) ?? "", new RegExp(id));
    await page.keyboard.press("Escape");
    await dialog.waitFor({ state: "hidden" });
    assert.equal(await page.getByRole("button", { name: `Kill ${id}` }).count(), 1);

    await page.getByRole("button", { name: `Kill ${id}` }).click();
    await dialog.getByRole("button", { name: "Kill sandbox" }).click();
    await page.getByRole("button", { name: `Kill ${id}` }).waitFor({ state: "detached" });
    const row = await stack.server.db.query<{ status: string }>(
      "SELECT status FROM sandboxes WHERE id = $1",
      [id],
    );
    assert.equal(row[0]?.status, "stopped");
    await page.evaluate("window.scrollTo(0, 0)");
    const widths = await page.evaluate<number[]>(
      '(() => { const b = document.querySelector("table").parentElement; return [b.scrollWidth, b.clientWidth]; })()',
    );
    assert.ok(
      (widths[0] ?? 1) <= (widths[1] ?? 0),
      `the table needs a horizontal scroll at 1280 px: ${widths}`,
    );
    await stack.screenshot("sandboxes-list", { fullPage: false });
  });

  test("events from the stream update the table without a reload", async () => {
    const { page } = stack;
    const [paused, gone] = [ids[58] ?? "", ids[57] ?? ""];
    const row = (id: string) => page.getByRole("row", { name: new RegExp(id) });
    assert.equal(await row(paused).getByText("running").count(), 1);
    const fromApi = await stack.server.db.query<{ id: string }>(
      "SELECT id FROM sandboxes WHERE id = $1",
      [paused],
    );
    assert.equal(fromApi.length, 1);
    await page.getByLabel("Status").selectOption({ label: "Active" });
    await page.getByText("Live updates on").waitFor();
    // Another writer (the reconciler, another control plane) changes the rows in the database:
    // the table follows through GET /v1/events, with no reload and no polling.
    await transitionSandbox(stack.server.db, paused, ["running"], "paused");
    await transitionSandbox(stack.server.db, gone, ["running"], "stopped", { ended: true });
    await row(paused).getByText("paused").waitFor();
    await row(gone).waitFor({ state: "detached" });
    const requests: string[] = [];
    page.on("request", (r) => requests.push(new URL(r.url()).pathname));
    const created = (await seedSandboxes(stack, teamId, 1))[0] ?? "";
    await row(created).waitFor();
    assert.deepEqual(
      requests.filter((p) => p.startsWith("/v1/sandboxes")),
      [],
      "the new row came from the stream, not a refetch",
    );
  });

  test("after the stream reconnects, the table re-reads what it missed", async () => {
    const { page, url } = stack;
    const target = ids[56] ?? "";
    const row = page.getByRole("row", { name: new RegExp(target) });
    // Every stream ends at once, as a proxy cutting it off would; the page reconnects each time.
    let cuts = 0;
    await page.route("**/v1/events", (route) => {
      cuts++;
      return route.fulfill({
        status: 200,
        contentType: "text/event-stream",
        body: "retry: 300\n\n",
      });
    });
    try {
      await page.goto(`${url}/sandboxes`);
      await row.getByText("running").waitFor();
      while (cuts === 0) await page.waitForTimeout(50);
      // Changed while no stream carries it: only a re-read after the reconnect can show it.
      await transitionSandbox(stack.server.db, target, ["running"], "paused");
    } finally {
      await page.unroute("**/v1/events");
    }
    await row.getByText("paused").waitFor();
    await page.getByText("Live updates on").waitFor();
  });

  test("a long list renders a step at a time as it scrolls", async () => {
    const { page } = stack;
    await seedSandboxes(stack, teamId, 120);
    const counted = await stack.server.db.query<{ n: number }>(
      `SELECT count(*)::int AS n FROM sandboxes
        WHERE team_id = $1 AND status IN ('pending', 'running', 'paused', 'missing')`,
      [teamId],
    );
    const n = counted[0]?.n ?? 0;
    assert.ok(n > 150 && n < 200, `${n} active sandboxes`);
    await page.getByRole("button", { name: "Refresh" }).click();
    const more = page.getByRole("button", { name: "Load more" });
    await more.waitFor();
    // Each page asked for is rendered whole.
    for (let loaded = 50; loaded < n; loaded += 50) {
      await more.click();
      await page.waitForFunction(
        `document.querySelectorAll("tbody tr").length === ${Math.min(loaded + 50, n)}`,
      );
    }
    assert.equal(await more.count(), 0);
    // A new search starts from one step of 100 rows; the rest come as the end scrolls in.
    const search = page.getByLabel("Search by id");
    await search.fill("-");
    await page.evaluate("window.scrollTo(0, 0)");
    await search.fill("");
    await page.waitForFunction('document.querySelectorAll("tbody tr").length === 100');
    const status = page.getByText(`Showing 100 of ${n} loaded`);
    await status.waitFor();
    await status.scrollIntoViewIfNeeded();
    await page.waitForFunction(`document.querySelectorAll("tbody tr").length === ${n}`);
    assert.equal(await page.getByText(/^Showing \d+ of/).count(), 0);
    // The button does the same for a keyboard.
    await search.fill("-");
    await page.evaluate("window.scrollTo(0, 0)");
    await search.fill("");
    // Clicked where it is, unscrolled: scrolling it into view would let the end's observer
    // render the rest first and take the button away.
    await page.getByRole("button", { name: "Show more rows" }).dispatchEvent("click");
    await page.waitForFunction(`document.querySelectorAll("tbody tr").length === ${n}`);
    assert.deepEqual(await seriousA11yViolations(page), []);
  });

  test("keyboard: a skip link first, and every focused control shows an outline", async () => {
    const { page, url } = stack;
    // A reload keeps the session: the refresh cookie brings a new access token.
    await page.goto(`${url}/sandboxes`);
    await page.getByRole("button", { name: "Refresh" }).waitFor();
    assert.equal(new URL(page.url()).pathname, "/sandboxes");
    await page.keyboard.press("Tab");
    const skip = page.getByRole("link", { name: "Skip to content" });
    assert.equal(await skip.evaluate((el) => el === el.ownerDocument.activeElement), true);
    const outlines: string[] = [];
    for (let i = 0; i < 8; i++) {
      await page.keyboard.press("Tab");
      outlines.push(
        await page.evaluate<string>(
          '(() => { const e = document.activeElement; const s = getComputedStyle(e); return e.tagName + ":" + s.outlineStyle; })()',
        ),
      );
    }
    assert.deepEqual(
      outlines.filter((o) => o.endsWith(":none")),
      [],
      `focused without an outline: ${outlines}`,
    );
  });

  test("the dark theme follows the system setting and stays readable", async () => {
    const { page } = stack;
    const light = await page.evaluate<string>("getComputedStyle(document.body).backgroundColor");
    await page.emulateMedia({ colorScheme: "dark" });
    const dark = await page.evaluate<string>("getComputedStyle(document.body).backgroundColor");
    assert.notEqual(dark, light);
    assert.deepEqual(await seriousA11yViolations(page), []);
    await stack.screenshot("sandboxes-dark", { fullPage: false });
    await page.emulateMedia({ colorScheme: "light" });
  });
});
