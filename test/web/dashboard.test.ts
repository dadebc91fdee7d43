/**
 * The dashboard in a real browser against a real control plane: sign-up, the route guard, the
 * sandboxes empty state, API keys (one-time reveal, revoke), /docs offline, and axe-core on
 * every page. Each test leaves a screenshot in test-output/web/.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { seriousA11yViolations, startWebStack, type WebStack } from "./support/browser-fixture.js";

describe("dashboard", () => {
  let stack: WebStack;
  const email = `ada-${Date.now()}@example.com`;
  const password = "correct horse battery";

  before(async () => {
    stack = await startWebStack();
  });
  after(async () => {
    await stack?.close();
  });

  const assertAccessible = async (what: string) => {
    assert.deepEqual(await seriousA11yViolations(stack.page), [], `${what}: axe violations`);
  };

  test("a signed-out visit goes to /login and comes back after signing up", async () => {
    const { page, url } = stack;
    await page.goto(`${url}/sandboxes`);
    await page.waitForURL(`${url}/login?next=%2Fsandboxes`);
    await page.getByRole("heading", { name: "Log in to Nestbox" }).waitFor();
    await assertAccessible("login");

    await page.getByLabel("E-mail").fill("nobody@example.com");
    await page.getByLabel("Password").fill("wrong password");
    await page.getByRole("button", { name: "Log in" }).click();
    await page.getByRole("alert").getByText("wrong e-mail or password").waitFor();

    await page.getByRole("link", { name: "Sign up" }).click();
    await page.waitForURL(`${url}/signup?next=%2Fsandboxes`);
    await assertAccessible("signup");
    await page.getByLabel("Name").fill("Ada");
    await page.getByLabel("E-mail").fill(email);
    await page.getByLabel("Password").fill("short");
    await page.getByRole("button", { name: "Sign up" }).click();
    // The browser's own validation does not check length: the server's message is shown.
    await page.getByRole("alert").waitFor();
    assert.match((await page.getByRole("alert").textContent()) ?? "", /password/i);

    await page.getByLabel("Password").fill(password);
    await page.getByRole("button", { name: "Sign up" }).click();
    await page.waitForURL(`${url}/sandboxes`);
    await page.getByRole("heading", { name: "No sandboxes running" }).waitFor();
    assert.equal(
      await page
        .getByLabel("Team")
        .inputValue()
        .then((v) => v.startsWith("team_")),
      true,
    );
    await assertAccessible("sandboxes (empty)");
    await stack.screenshot("sandboxes-empty");
  });

  test("an API key is revealed once, works, and stops working when revoked", async () => {
    const { page, url } = stack;
    await page
      .getByRole("navigation", { name: "Main" })
      .getByRole("link", { name: "API keys" })
      .click();
    await page.waitForURL(`${url}/keys`);
    await page.getByRole("heading", { name: "No API keys yet" }).waitFor();
    await assertAccessible("keys (empty)");

    await page.getByLabel("New key name").fill("ci");
    await page.getByRole("button", { name: "Create key" }).click();
    const reveal = page.getByTestId("key-reveal");
    await reveal.waitFor();
    const key = (await page.getByTestId("key-nbx").textContent()) ?? "";
    assert.match(key, /^nbx_[0-9a-f]{40}$/);
    assert.equal(await page.getByTestId("key-e2b").textContent(), key.replace("nbx_", "e2b_"));
    const env = (await reveal.locator("pre").textContent()) ?? "";
    assert.match(env, new RegExp(`E2B_API_URL=${url}\\b`));
    assert.match(env, new RegExp(`E2B_SANDBOX_URL=${url}\\b`));
    assert.match(env, new RegExp(`E2B_API_KEY=${key.replace("nbx_", "e2b_")}`));
    await assertAccessible("keys (revealed)");
    await stack.screenshot("keys-revealed");

    const withKey = () => fetch(`${url}/v1/sandboxes`, { headers: { "X-API-Key": key } });
    assert.equal((await withKey()).status, 200);

    await page.getByRole("button", { name: "I have copied it" }).click();
    await reveal.waitFor({ state: "detached" });
    // Away and back: the list shows the key's name and prefix, never the secret again.
    await page
      .getByRole("navigation", { name: "Main" })
      .getByRole("link", { name: "Sandboxes" })
      .click();
    await page.waitForURL(`${url}/sandboxes`);
    await page
      .getByRole("navigation", { name: "Main" })
      .getByRole("link", { name: "API keys" })
      .click();
    const row = page.getByRole("row", { name: /ci/ });
    await row.waitFor();
    assert.equal((await page.content()).includes(key), false, "the secret is shown again");
    assert.match((await row.textContent()) ?? "", new RegExp(`${key.slice(0, 12)}…`));

    await row.getByRole("button", { name: "Revoke ci" }).click();
    const dialog = page.getByRole("dialog", { name: "Revoke API key?" });
    await dialog.waitFor();
    await assertAccessible("revoke dialog");
    await dialog.getByRole("button", { name: "Cancel" }).click();
    await dialog.waitFor({ state: "hidden" });
    assert.equal((await withKey()).status, 200, "cancel revoked the key");

    await row.getByRole("button", { name: "Revoke ci" }).click();
    await dialog.getByRole("button", { name: "Revoke key" }).click();
    await page.getByRole("heading", { name: "No API keys yet" }).waitFor();
    assert.equal((await withKey()).status, 401);
    await stack.screenshot("keys-revoked");
  });

  test("logging out and opening a page asks to log in, then returns there", async () => {
    const { page, url } = stack;
    await page.getByRole("button", { name: "Log out" }).click();
    await page.waitForURL(`${url}/login`);
    await page.goto(`${url}/keys`);
    await page.waitForURL(`${url}/login?next=%2Fkeys`);
    await page.getByLabel("E-mail").fill(email);
    await page.getByLabel("Password").fill(password);
    await page.getByRole("button", { name: "Log in" }).click();
    await page.waitForURL(`${url}/keys`);
    await page.getByRole("heading", { name: "API keys" }).waitFor();
    await stack.screenshot("login-next");
  });

  test("the team switcher moves the session to another team", async () => {
    const { page, url } = stack;
    const post = async (route: string, body: unknown, token?: string) => {
      const res = await fetch(`${url}${route}`, {
        method: "POST",
        headers: {
          "content-type": "application/json",
          ...(token ? { authorization: `Bearer ${token}` } : {}),
        },
        body: JSON.stringify(body),
      });
      assert.ok(res.ok, `${route}: ${res.status}`);
      return (await res.json()) as { token: string; id: string };
    };
    const { token } = await post("/v1/auth/login", { email, password });
    const research = await post("/v1/teams", { name: "Research" }, token);
    // The switcher lists teams when the shell loads: log in again to see the new one.
    await page.getByRole("button", { name: "Log out" }).click();
    await page.waitForURL(`${url}/login`);
    await page.getByLabel("E-mail").fill(email);
    await page.getByLabel("Password").fill(password);
    await page.getByRole("button", { name: "Log in" }).click();
    await page.waitForURL(`${url}/`);
    await page.getByLabel("Team").getByRole("option", { name: "Research (owner)" }).waitFor({
      state: "attached",
    });
    await page
      .getByRole("navigation", { name: "Main" })
      .getByRole("link", { name: "API keys" })
      .click();
    // The select shows the choice at once, but the page is mounted afresh for the new team only
    // once the switch has answered: typing before that would land in the old page's form.
    const switched = page.waitForResponse(
      (r) => new URL(r.url()).pathname === "/v1/auth/switch-team" && r.ok(),
    );
    await page.getByLabel("Team").selectOption(research.id);
    await switched;
    await page.getByRole("heading", { name: "No API keys yet" }).waitFor();
    await page.getByLabel("New key name").fill("research-key");
    await page.getByRole("button", { name: "Create key" }).click();
    await page.getByTestId("key-reveal").waitFor();
    const inResearch = await post("/v1/auth/switch-team", { team_id: research.id }, token);
    const keys = (await (
      await fetch(`${url}/v1/api-keys`, {
        headers: { authorization: `Bearer ${inResearch.token}` },
      })
    ).json()) as { name: string }[];
    assert.deepEqual(
      keys.map((k) => k.name),
      ["research-key"],
    );
    // Back in the first team, whose only key was revoked: the page shows that team's keys.
    const first = await page
      .getByLabel("Team")
      .locator("option", { hasNotText: "Research" })
      .getAttribute("value");
    await page.getByLabel("Team").selectOption(first ?? "");
    await page.getByRole("heading", { name: "No API keys yet" }).waitFor();
    await stack.screenshot("team-switched");
  });

  test("a 401 that a refresh cannot cure sends the user to /login and back", async () => {
    const { page, url } = stack;
    // The session is signed in; the server now rejects its token (as after a revocation).
    await page.route("**/v1/api-keys", (route) =>
      route.fulfill({
        status: 401,
        contentType: "application/json",
        body: JSON.stringify({ error: { code: "unauthorized", message: "token expired" } }),
      }),
    );
    await page
      .getByRole("navigation", { name: "Main" })
      .getByRole("link", { name: "Sandboxes" })
      .click();
    await page.waitForURL(`${url}/sandboxes`);
    await page
      .getByRole("navigation", { name: "Main" })
      .getByRole("link", { name: "API keys" })
      .click();
    await page.waitForURL(`${url}/login?next=%2Fkeys`);
    await page.unroute("**/v1/api-keys");
    await page.getByLabel("E-mail").fill(email);
    await page.getByLabel("Password").fill(password);
    await page.getByRole("button", { name: "Log in" }).click();
    await page.waitForURL(`${url}/keys`);
    await page.getByRole("heading", { name: "No API keys yet" }).waitFor();
  });

  test("/docs lists the API's operations with no network beyond the control plane", async () => {
    const { page, url } = stack;
    await page.goto(`${url}/docs`);
    await page.locator(".opblock").first().waitFor({ timeout: 30_000 });
    const ops = await page.locator(".opblock").count();
    assert.ok(ops > 20, `only ${ops} operations listed`);
    await page.getByText("/v1/sandboxes", { exact: true }).first().waitFor();
    await stack.screenshot("docs");
  });
});
