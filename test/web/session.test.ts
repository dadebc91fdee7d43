/**
 * Browser sessions in Chromium against the real control plane: the refresh token lives only in
 * an HttpOnly SameSite=Strict cookie (page scripts cannot read it, nothing is in storage), a
 * reload renews the session and rotates the cookie, a replayed rotated cookie ends the whole
 * family so the page signs out and sends the user to /login and back, and logout revokes.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { seriousA11yViolations, startWebStack, type WebStack } from "./support/browser-fixture.js";

describe("browser sessions", () => {
  let stack: WebStack;
  const email = `rosa-${Date.now()}@example.com`;
  const password = "correct horse battery";

  before(async () => {
    stack = await startWebStack();
    const { page, url } = stack;
    await page.goto(`${url}/signup`);
    await page.getByLabel("Name").fill("Rosa");
    await page.getByLabel("E-mail").fill(email);
    await page.getByLabel("Password").fill(password);
    await page.getByRole("button", { name: "Sign up" }).click();
    await page.waitForURL(`${url}/`);
    await page.getByRole("heading", { name: "Overview" }).waitFor();
  });
  after(async () => {
    await stack?.close();
  });

  const refreshCookie = async () => {
    // Not cookies(url): that filters by the URL's path, and this cookie's is /v1/auth.
    const all = await stack.context.cookies();
    return all.find((c) => c.name === "nbx_refresh");
  };

  /** What a stolen cookie would do: POST /v1/auth/refresh from outside the browser. */
  const replay = (value: string) =>
    fetch(`${stack.url}/v1/auth/refresh`, {
      method: "POST",
      headers: { cookie: `nbx_refresh=${value}`, "x-nestbox-csrf": "1" },
    });

  test("the refresh token is an HttpOnly, SameSite=Strict cookie the page cannot read", async () => {
    const { page } = stack;
    const cookie = await refreshCookie();
    assert.ok(cookie, "the refresh cookie is set");
    assert.equal(cookie.httpOnly, true);
    assert.equal(cookie.sameSite, "Strict");
    assert.equal(cookie.path, "/v1/auth");
    assert.equal(await page.evaluate<string>("document.cookie"), "");
    const stored = await page.evaluate<string>(
      "JSON.stringify([Object.keys(localStorage), Object.keys(sessionStorage)])",
    );
    assert.equal(stored, "[[],[]]");
  });

  test("a reload keeps the user signed in and rotates the cookie", async () => {
    const { page, url } = stack;
    const before = (await refreshCookie())?.value;
    const refreshed = page.waitForResponse(
      (r) => r.url().endsWith("/v1/auth/refresh") && r.status() === 200,
    );
    await page.goto(`${url}/keys`);
    await refreshed;
    await page.getByRole("heading", { name: "API keys", level: 1 }).waitFor();
    assert.equal(new URL(page.url()).pathname, "/keys");
    const after = (await refreshCookie())?.value;
    assert.ok(before && after && before !== after, "the cookie was rotated");
    // The old cookie is spent; using it again is reuse.
    assert.ok(before);
    const res = await replay(before);
    assert.equal(res.status, 401);
    const body = (await res.json()) as { error: { code: string; message: string } };
    assert.equal(body.error.code, "session_revoked");
    assert.match(body.error.message, /used twice/);
  });

  test("after reuse the whole family is dead: the page signs out and comes back after login", async () => {
    const { page, url } = stack;
    // The replay above revoked the session: the page's access token and its newest cookie
    // stopped working with it, so the next API call ends at the login page.
    await page
      .getByRole("navigation", { name: "Main" })
      .getByRole("link", { name: "Sandboxes" })
      .click();
    await page.waitForURL(/\/login\?next=%2Fsandboxes$/);
    await page.getByRole("heading", { name: "Log in to Nestbox" }).waitFor();
    assert.deepEqual(await seriousA11yViolations(page), []);
    await page.getByLabel("E-mail").fill(email);
    await page.getByLabel("Password").fill(password);
    await page.getByRole("button", { name: "Log in" }).click();
    await page.waitForURL(`${url}/sandboxes`);
    await page.getByRole("button", { name: "Refresh" }).waitFor();
    await stack.screenshot("session-back-after-login");
  });

  test("logout revokes the session: its cookie no longer refreshes", async () => {
    const { page, url } = stack;
    const cookie = (await refreshCookie())?.value;
    assert.ok(cookie);
    await page.getByRole("button", { name: "Log out" }).click();
    await page.waitForURL(`${url}/login`);
    assert.equal(await refreshCookie(), undefined, "the cookie is cleared");
    assert.equal((await replay(cookie)).status, 401);
    await page.goto(`${url}/sandboxes`);
    await page.waitForURL(/\/login\?next=%2Fsandboxes$/);
  });
});
