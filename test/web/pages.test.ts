/**
 * The dashboard's management pages in a real browser against a real control plane (no host
 * agent): templates (platform ones cannot be deleted), the new-sandbox dialog (inline checks,
 * then the API's "no host" error), the sandboxes table's metadata filter and sorting, team
 * management by the owner and the member's read-only view, the account page, and the admin
 * section's hosts page (registration command, delete with the sandboxes it destroys).
 * The tests share one browser session and run in order; each leaves screenshots. One file
 * (over 500 lines) because the steps hand state on: the owner's team and its seeded rows, the
 * member the owner adds, the admin seeded for the hosts page, all in one control plane start.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { seedAllInOne } from "../../packages/server/src/bootstrap/seed.js";
import { transitionSandbox } from "../../packages/server/src/db/queries/sandboxes.js";
import {
  ensureBaseTemplate,
  insertTemplate,
} from "../../packages/server/src/db/queries/templates.js";
import { newId } from "../../packages/server/src/ids.js";
import {
  seedSandboxes,
  seriousA11yViolations,
  startWebStack,
  type WebStack,
} from "./support/browser-fixture.js";

/** Polls `check` until it holds; fails after `ms`. */
async function eventually(what: string, check: () => Promise<boolean>, ms = 10_000) {
  const end = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > end) assert.fail(`timed out waiting for ${what}`);
    await sleep(100);
  }
}

describe("management pages", () => {
  let stack: WebStack;
  let adaTeam = "";
  const stamp = Date.now();
  const ada = { name: "Ada", email: `ada-${stamp}@example.com`, password: "correct horse battery" };
  const bob = { name: "Bob", email: `bob-${stamp}@example.com`, password: "bobs first password" };

  before(async () => {
    stack = await startWebStack();
    const { page, url } = stack;
    await page.goto(`${url}/signup`);
    await page.getByLabel("Name").fill(ada.name);
    await page.getByLabel("E-mail").fill(ada.email);
    await page.getByLabel("Password").fill(ada.password);
    await page.getByRole("button", { name: "Sign up" }).click();
    // The usage overview is the home page.
    await page.waitForURL(`${url}/`);
    await page.getByRole("heading", { name: "Overview" }).waitFor();
    adaTeam = await page.getByLabel("Team").inputValue();
  });
  after(async () => {
    await stack?.close();
  });

  const nav = () => stack.page.getByRole("navigation", { name: "Main" });
  /** Through the sidebar, as a user would. */
  async function go(label: string, pathname: string) {
    await nav().getByRole("link", { name: label, exact: true }).click();
    await stack.page.waitForURL(`${stack.url}${pathname}`);
  }
  async function assertAccessible(what: string) {
    assert.deepEqual(await seriousA11yViolations(stack.page), [], `${what}: axe violations`);
  }
  async function logout() {
    await stack.page.getByRole("button", { name: "Log out" }).click();
    await stack.page.waitForURL(`${stack.url}/login`);
  }
  async function login(email: string, password: string) {
    const { page } = stack;
    await page.getByLabel("E-mail").fill(email);
    await page.getByLabel("Password").fill(password);
    await page.getByRole("button", { name: "Log in" }).click();
    await nav().waitFor();
  }

  test("overview: what runs now and the 24-hour chart, following the event stream", async () => {
    const { page } = stack;
    const stat = (label: string) => page.locator(`[data-stat="${label}"]`);
    await page.getByText("Nothing has run in this team in the last day").waitFor();
    assert.equal(await stat("Running").textContent(), "0");
    // Three running sandboxes of 1 vCPU / 512 MiB arrive (as from another control plane):
    // the numbers follow through GET /v1/events, no reload.
    const seeded = await seedSandboxes(stack, adaTeam, 3);
    await eventually("three running", async () => (await stat("Running").textContent()) === "3");
    assert.equal(await stat("vCPUs reserved").textContent(), "3");
    assert.equal(await stat("Memory reserved").textContent(), "1.5 GiB");
    await transitionSandbox(stack.server.db, seeded[0] ?? "", ["running"], "paused");
    await eventually("one paused", async () => (await stat("Paused").textContent()) === "1");
    assert.equal(await stat("Running").textContent(), "2");
    const chart = page.getByRole("img", { name: /at most 3 in the last 24 hours/ });
    await chart.waitFor();
    assert.ok(Number(await chart.getAttribute("data-points")) >= 288);
    // uPlot drew into its canvas.
    assert.equal(await chart.locator("canvas").count(), 1);
    await assertAccessible("overview");
    await stack.screenshot("pages-overview");
    for (const id of seeded)
      await transitionSandbox(stack.server.db, id, ["running", "paused"], "stopped", {
        ended: true,
      });
    await eventually("none running", async () => (await stat("Running").textContent()) === "0");
  });

  test("templates: team and platform ones; only team templates can be deleted", async () => {
    const { page } = stack;
    assert.equal(await nav().getByRole("link", { name: "Hosts" }).count(), 0, "not an admin");
    // With no template at all (the platform's `base` gone for a moment), the page says how to
    // make one; `base` comes back the way the control plane makes it at start.
    const [base] = await stack.server.db.query<{ team_id: string }>(
      "SELECT team_id FROM templates WHERE id = 'tpl_base'",
    );
    assert.ok(base, "the platform's base template");
    await stack.server.db.query("DELETE FROM templates WHERE id = 'tpl_base'");
    await go("Templates", "/templates");
    await page.getByRole("heading", { name: "No templates yet" }).waitFor();
    assert.equal(
      await page.getByRole("link", { name: "Sandboxes", exact: true }).last().getAttribute("href"),
      "/sandboxes",
    );
    await stack.screenshot("pages-templates-empty");
    await ensureBaseTemplate(stack.server.db, base.team_id, "tpl_base");
    await go("Overview", "/");
    await insertTemplate(stack.server.db, {
      id: newId("tpl"),
      team_id: adaTeam,
      name: "py-env",
      kind: "snapshot",
      host_id: null,
      vcpus: 2,
      memory_mb: 1024,
      size_bytes: 300 * 1024 * 1024,
      default_user: null,
      default_env: {},
      metadata: {},
      created_by: null,
    });
    await go("Templates", "/templates");
    const row = (name: string) => page.getByRole("row", { name: new RegExp(`^${name}\\b`) });
    await row("py-env").waitFor();
    assert.match((await row("py-env").textContent()) ?? "", /snapshot.*300 MiB.*2.*1 GiB/s);
    assert.match((await row("base").textContent()) ?? "", /Platform/);
    assert.equal(await page.getByRole("button", { name: "Delete base" }).count(), 0);
    assert.equal(await page.getByRole("button", { name: "Launch base" }).count(), 1);
    await assertAccessible("templates");
    await stack.screenshot("pages-templates");

    // Launch opens the new-sandbox dialog with that template chosen.
    await page.getByRole("button", { name: "Launch py-env" }).click();
    const dialog = page.getByRole("dialog", { name: "New sandbox" });
    await dialog.waitFor();
    await eventually(
      "the template list",
      async () =>
        (await dialog.getByLabel("Template").inputValue()) === "py-env" &&
        (await dialog.getByRole("option", { name: "base (platform)" }).count()) === 1,
    );
    // A snapshot keeps the size it was taken with: the fields show it and cannot be changed.
    assert.equal(await dialog.getByLabel("vCPUs").isDisabled(), true);
    assert.equal(await dialog.getByLabel("Memory (MB)").getAttribute("placeholder"), "1024");
    await page.keyboard.press("Escape");
    await dialog.waitFor({ state: "hidden" });

    await page.getByRole("button", { name: "Delete py-env" }).click();
    const confirm = page.getByRole("dialog", { name: "Delete template?" });
    await confirm.getByRole("button", { name: "Delete template" }).click();
    await row("py-env").waitFor({ state: "detached" });
    const left = await stack.server.db.query("SELECT id FROM templates WHERE name = 'py-env'");
    assert.equal(left.length, 0);
  });

  test("API keys: the creator is shown by name", async () => {
    const { page } = stack;
    await go("API keys", "/keys");
    await page.getByLabel("New key name").fill("ci");
    await page.getByRole("button", { name: "Create key" }).click();
    await page.getByTestId("key-reveal").waitFor();
    const row = page.getByRole("row", { name: /^ci\b/ });
    await row.getByText(ada.name, { exact: true }).waitFor();
    await assertAccessible("keys");
    await stack.screenshot("pages-keys");
  });

  test("new sandbox: inline validation first, then the API's error (no host is online)", async () => {
    const { page } = stack;
    await go("Sandboxes", "/sandboxes");
    await page.getByRole("button", { name: "New sandbox" }).click();
    const dialog = page.getByRole("dialog", { name: "New sandbox" });
    await dialog.waitFor();
    await dialog.getByLabel("vCPUs").fill("0");
    await dialog.getByLabel("Memory (MB)").fill("lots");
    await dialog.getByRole("button", { name: "Add environment variable" }).click();
    await dialog.getByLabel("Environment variable 1 key").fill("1BAD");
    await dialog.getByLabel("Environment variable 1 value").fill("x");
    await dialog.getByRole("button", { name: "Add metadata" }).click();
    await dialog.getByLabel("Metadata 1 key").fill("owner");
    await dialog.getByLabel("Metadata 1 value").fill("ada");
    let posts = 0;
    const count = (req: { method(): string; url(): string }) => {
      if (req.method() === "POST" && new URL(req.url()).pathname === "/v1/sandboxes") posts++;
    };
    page.on("request", count);
    await dialog.getByRole("button", { name: "Create sandbox" }).click();
    await dialog.getByText("Must be between 1 and 32").waitFor();
    await dialog.getByText("Enter a whole number").waitFor();
    await dialog.getByText("Names are letters, digits and _").waitFor();
    assert.equal(await dialog.getByLabel("vCPUs").getAttribute("aria-invalid"), "true");
    assert.equal(posts, 0, "nothing is sent while a field is wrong");
    await assertAccessible("new sandbox dialog (invalid)");
    await page.emulateMedia({ colorScheme: "dark" });
    await assertAccessible("new sandbox dialog (dark)");
    await stack.screenshot("pages-new-sandbox-dark", { fullPage: false });
    await page.emulateMedia({ colorScheme: "light" });

    await dialog.getByLabel("vCPUs").fill("1");
    await dialog.getByLabel("Memory (MB)").fill("512");
    await dialog.getByLabel("Environment variable 1 key").fill("GOOD_NAME");
    await dialog.getByRole("button", { name: "Create sandbox" }).click();
    const alert = dialog.getByRole("alert");
    await alert.waitFor();
    assert.match((await alert.textContent()) ?? "", /no host is online/);
    assert.equal(posts, 1);
    page.off("request", count);
    await stack.screenshot("pages-new-sandbox-error");
    await dialog.getByRole("button", { name: "Cancel" }).click();
    await dialog.waitFor({ state: "hidden" });
  });

  test("sandboxes table: metadata filter asks the API; headers sort with aria-sort", async () => {
    const { page } = stack;
    const ids = await seedSandboxes(stack, adaTeam, 3);
    await page.getByRole("button", { name: "Refresh" }).click();
    const rows = page.locator("tbody tr");
    // The closed new-sandbox dialog has "Metadata …" inputs too: the role query skips hidden ones.
    const metadataBox = () => page.getByRole("textbox", { name: "Metadata", exact: true });
    await eventually("3 rows", async () => (await rows.count()) === 3);
    // Newest first from the API; sorting by ID ascending puts the smallest id on top.
    const sortedIds = [...ids].sort();
    const idHeader = page.getByRole("columnheader", { name: "ID" });
    assert.equal(await idHeader.getAttribute("aria-sort"), "none");
    await idHeader.getByRole("button").click();
    assert.equal(await idHeader.getAttribute("aria-sort"), "ascending");
    assert.match((await rows.first().textContent()) ?? "", new RegExp(sortedIds[0] ?? "?"));
    await idHeader.getByRole("button").click();
    assert.equal(await idHeader.getAttribute("aria-sort"), "descending");
    assert.match((await rows.first().textContent()) ?? "", new RegExp(sortedIds[2] ?? "?"));

    const filtered = page.waitForRequest((r) => new URL(r.url()).searchParams.has("metadata"));
    await metadataBox().fill("seq=1");
    await page.getByRole("button", { name: "Filter" }).click();
    const req = await filtered;
    assert.equal(new URL(req.url()).searchParams.get("metadata"), "seq=1");
    await eventually("1 row", async () => (await rows.count()) === 1);
    assert.match((await rows.first().textContent()) ?? "", new RegExp(ids[1] ?? "?"));
    await metadataBox().fill("seq");
    await page.getByRole("button", { name: "Filter" }).click();
    await page.getByText("“seq” is not key=value").waitFor();
    await metadataBox().fill("");
    await page.getByRole("button", { name: "Filter" }).click();
    await eventually("3 rows again", async () => (await rows.count()) === 3);
    await assertAccessible("sandboxes table");
    await stack.screenshot("pages-sandboxes", { fullPage: false });

    // Snapshot: the name is checked first; then the API's refusal (the host never came online).
    await page.getByRole("button", { name: `Snapshot ${ids[0]}` }).click();
    const snap = page.getByRole("dialog", { name: "Snapshot sandbox" });
    await snap.getByLabel("Template name").fill("Not A Name");
    await snap.getByRole("button", { name: "Snapshot" }).click();
    await snap.getByText("1–63 characters a-z").waitFor();
    await snap.getByLabel("Template name").fill("my-env");
    await snap.getByRole("button", { name: "Snapshot" }).click();
    const refused = snap.getByRole("alert");
    await refused.waitFor();
    assert.ok(((await refused.textContent()) ?? "").trim().length > 0);
    await assertAccessible("snapshot dialog");
    await stack.screenshot("pages-snapshot-error", { fullPage: false });
    await snap.getByRole("button", { name: "Cancel" }).click();
    await snap.waitFor({ state: "hidden" });
    const still = await stack.server.db.query<{ status: string }>(
      "SELECT status FROM sandboxes WHERE id = $1",
      [ids[0]],
    );
    assert.equal(still[0]?.status, "running");
  });

  test("team: the owner adds a member and changes roles; a member sees no owner actions", async () => {
    const { page, url } = stack;
    const res = await fetch(`${url}/v1/auth/signup`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(bob),
    });
    const signedUp = (await res.json()) as { user: { id: string } };
    assert.equal(res.status, 201, JSON.stringify(signedUp));
    const bobId = signedUp.user.id;

    await go("Team", "/team");
    await page.getByLabel("Add a member by e-mail").fill(bob.email);
    await page.getByRole("button", { name: "Add member" }).click();
    const bobRow = page.getByRole("row", { name: new RegExp(bob.email) });
    await bobRow.waitFor();
    const roleOf = async () =>
      (
        await stack.server.db.query<{ role: string }>(
          "SELECT role FROM memberships WHERE team_id = $1 AND user_id = $2",
          [adaTeam, bobId],
        )
      )[0]?.role;
    assert.equal(await roleOf(), "member");
    await page.getByLabel(`Role of ${bob.email}`).selectOption("admin");
    await eventually("bob is admin", async () => (await roleOf()) === "admin");
    await page.getByLabel(`Role of ${bob.email}`).selectOption("member");
    await eventually("bob is member again", async () => (await roleOf()) === "member");
    // The owner's role is fixed: no select on the owner's row.
    assert.equal(await page.getByLabel(`Role of ${ada.email}`).count(), 0);
    // Adding someone already in the team shows the API's message.
    await page.getByLabel("Add a member by e-mail").fill(bob.email);
    await page.getByRole("button", { name: "Add member" }).click();
    await page.getByRole("alert").getByText("already is a member").waitFor();
    // Removing a member asks first; cancelling keeps them, confirming ends the membership.
    const cy = { name: "Cy", email: `cy-${stamp}@example.com`, password: "cys own password" };
    const cyRes = await fetch(`${url}/v1/auth/signup`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(cy),
    });
    assert.equal(cyRes.status, 201);
    await page.getByLabel("Add a member by e-mail").fill(cy.email);
    await page.getByRole("button", { name: "Add member" }).click();
    const cyRow = page.getByRole("row", { name: new RegExp(cy.email) });
    await cyRow.waitFor();
    const memberCount = async () =>
      (await stack.server.db.query("SELECT 1 FROM memberships WHERE team_id = $1", [adaTeam]))
        .length;
    assert.equal(await memberCount(), 3);
    await page.getByRole("button", { name: `Remove ${cy.email}` }).click();
    const removeDialog = page.getByRole("dialog", { name: "Remove member?" });
    await removeDialog.getByText(`${cy.email} loses access`).waitFor();
    await removeDialog.getByRole("button", { name: "Cancel" }).click();
    await removeDialog.waitFor({ state: "hidden" });
    assert.equal(await memberCount(), 3, "cancel keeps the member");
    await page.getByRole("button", { name: `Remove ${cy.email}` }).click();
    await removeDialog.getByRole("button", { name: "Remove member" }).click();
    await cyRow.waitFor({ state: "detached" });
    await eventually("cy's membership is gone", async () => (await memberCount()) === 2);
    await assertAccessible("team (owner)");
    await stack.screenshot("pages-team-owner");

    await logout();
    await login(bob.email, bob.password);
    await page.getByLabel("Team").selectOption(adaTeam);
    await eventually(
      "the switch",
      async () => (await page.getByLabel("Team").inputValue()) === adaTeam,
    );
    await go("Team", "/team");
    await page.getByRole("row", { name: new RegExp(ada.email) }).waitFor();
    assert.match(
      (await page.getByRole("row", { name: new RegExp(bob.email) }).textContent()) ?? "",
      /member/,
    );
    assert.equal(await page.getByRole("button", { name: "Add member" }).count(), 0);
    assert.equal(await page.getByRole("button", { name: "Rename team" }).count(), 0);
    assert.equal(await page.getByRole("combobox", { name: /^Role of/ }).count(), 0);
    assert.equal(await page.getByRole("button", { name: /^Remove / }).count(), 0);
    assert.equal(await page.getByRole("button", { name: "Leave team" }).count(), 1);
    assert.equal(await nav().getByRole("link", { name: "Hosts" }).count(), 0);
    await assertAccessible("team (member)");
    await stack.screenshot("pages-team-member");

    await page.getByRole("button", { name: "Leave team" }).click();
    await page
      .getByRole("dialog", { name: "Leave team?" })
      .getByRole("button", { name: "Leave team" })
      .click();
    await page.waitForURL(`${url}/sandboxes`);
    await eventually(
      "back in his own team",
      async () => (await page.getByLabel("Team").inputValue()) !== adaTeam,
    );
    assert.equal(await roleOf(), undefined, "the membership is gone");
  });

  test("team: create a team, and delete it once none of its sandboxes is live", async () => {
    const { page, url } = stack;
    await go("Team", "/team");
    await page.getByRole("button", { name: "Create team" }).click();
    await page.getByRole("alert").getByText("Enter a name for the team").waitFor();
    await page.getByLabel("New team name").fill("Side project");
    await page.getByRole("button", { name: "Create team" }).click();
    await page
      .getByLabel("Team", { exact: true })
      .getByRole("option", { name: "Side project (owner)" })
      .waitFor({
        state: "attached",
      });
    const sideId = await page.getByLabel("Team", { exact: true }).inputValue();
    const side = await stack.server.db.query<{ name: string }>(
      "SELECT name FROM teams WHERE id = $1",
      [sideId],
    );
    assert.equal(side[0]?.name, "Side project", "the session moved to the new team");
    await page.getByRole("heading", { name: "Delete the team" }).waitFor();
    await assertAccessible("team (owner, create and delete)");

    const [live] = await seedSandboxes(stack, sideId, 1);
    await page.getByRole("button", { name: "Delete team" }).click();
    const dialog = page.getByRole("dialog", { name: "Delete team?" });
    await dialog.getByRole("button", { name: "Delete team" }).click();
    await dialog
      .getByRole("alert")
      .getByText(/live sandbox: kill it first/)
      .waitFor();
    await stack.screenshot("pages-team-delete-refused");
    await dialog.getByRole("button", { name: "Cancel" }).click();
    await transitionSandbox(stack.server.db, live ?? "", ["running"], "stopped", { ended: true });
    await page.getByRole("button", { name: "Delete team" }).click();
    await dialog.getByRole("button", { name: "Delete team" }).click();
    await page.waitForURL(`${url}/sandboxes`);
    await eventually(
      "moved to another team",
      async () => (await page.getByLabel("Team", { exact: true }).inputValue()) !== sideId,
    );
    assert.equal(
      await page
        .getByLabel("Team")
        .getByRole("option", { name: /Side project/ })
        .count(),
      0,
    );
    const gone = await stack.server.db.query<{ deleted: boolean }>(
      "SELECT deleted_at IS NOT NULL AS deleted FROM teams WHERE id = $1",
      [sideId],
    );
    assert.equal(gone[0]?.deleted, true);
  });

  test("account: rename and change password, then log in with the new one", async () => {
    const { page } = stack;
    await go("Account", "/account");
    await page.getByLabel("Name").fill("Bob Builder");
    await page.getByRole("button", { name: "Save name" }).click();
    await page.getByRole("status").getByText("Name saved.").waitFor();
    await page.locator("aside").getByText("Bob Builder").waitFor();

    const newPassword = "bobs second password";
    await page.getByLabel("Current password").fill("not my password");
    await page.getByLabel("New password", { exact: true }).fill(newPassword);
    await page.getByLabel("New password again").fill("something else");
    await page.getByRole("button", { name: "Change password" }).click();
    await page.getByText("The two new passwords differ").waitFor();
    await page.getByLabel("New password again").fill(newPassword);
    await page.getByRole("button", { name: "Change password" }).click();
    await page.getByText("This is not your current password").waitFor();
    assert.equal(await page.getByLabel("Current password").getAttribute("aria-invalid"), "true");
    await page.getByLabel("Current password").fill(bob.password);
    await page.getByRole("button", { name: "Change password" }).click();
    await page.getByRole("status").getByText("Password changed").waitFor();
    await assertAccessible("account");
    await stack.screenshot("pages-account");

    await logout();
    await page.getByLabel("E-mail").fill(bob.email);
    await page.getByLabel("Password").fill(bob.password);
    await page.getByRole("button", { name: "Log in" }).click();
    await page.getByRole("alert").getByText("wrong e-mail or password").waitFor();
    await login(bob.email, newPassword);
    bob.password = newPassword;
    await page.locator("aside").getByText("Bob Builder").waitFor();
  });

  test("hosts: the admin registers a host and deletes one after seeing its sandboxes", async () => {
    const { page, url } = stack;
    // What `nestbox up` seeds (the all-in-one admin): this stack has no agent, so seed it here.
    const seeded = await seedAllInOne(stack.server.db, { dataDir: stack.dataDir });
    const adminPassword = readFileSync(path.join(stack.dataDir, "admin-password"), "utf8").trim();
    await logout();
    await login("admin@localhost", adminPassword);
    const doomed = await seedSandboxes(stack, seeded.platformTeamId, 2);
    await nav().getByRole("link", { name: "Platform admin" }).click();
    await page.waitForURL(`${url}/admin/hosts`);
    const seededHost = (
      await stack.server.db.query<{ id: string; name: string }>(
        "SELECT h.id, h.name FROM hosts h JOIN sandboxes s ON s.host_id = h.id WHERE s.id = $1",
        [doomed[0]],
      )
    )[0];
    assert.ok(seededHost);
    await page.getByRole("row", { name: new RegExp(seededHost.name) }).waitFor();
    assert.match(
      (await page.getByRole("row", { name: new RegExp(seededHost.name) }).textContent()) ?? "",
      /pending.*never/s,
    );

    await page.getByLabel("New host name").fill("worker-1");
    await page.getByRole("button", { name: "Register host" }).click();
    const command = page.getByTestId("host-command");
    await command.waitFor();
    assert.match(
      (await command.textContent()) ?? "",
      new RegExp(
        `^\\./nestbox agent --control-plane ${url} --registration-token [0-9a-f]{64} --listen 0\\.0\\.0\\.0:50051 --advertise-url https://<host-address>:50051$`,
      ),
    );
    await page.getByRole("row", { name: /worker-1/ }).waitFor();
    await assertAccessible("hosts");
    await stack.screenshot("pages-hosts");
    await page.emulateMedia({ colorScheme: "dark" });
    await assertAccessible("hosts (dark)");
    await stack.screenshot("pages-hosts-dark", { fullPage: false });
    await page.emulateMedia({ colorScheme: "light" });

    await page.getByRole("button", { name: `Delete host ${seededHost.name}` }).click();
    const dialog = page.getByRole("dialog", { name: "Delete host?" });
    // The dialog asks the server first (delete-preview) and lists what a delete would destroy.
    const list = dialog.getByRole("list", { name: "Sandboxes that will be destroyed" });
    await list.waitFor();
    assert.deepEqual(
      (await list.getByRole("listitem").allTextContents()).sort(),
      [...doomed].sort(),
    );
    // Nothing is gone yet: the preview only showed what a delete would destroy.
    assert.equal(
      (await stack.server.db.query("SELECT id FROM hosts WHERE id = $1", [seededHost.id])).length,
      1,
    );
    await assertAccessible("host delete preview");
    await stack.screenshot("pages-host-delete", { fullPage: false });
    await dialog.getByRole("button", { name: "Destroy 2 and delete" }).click();
    await dialog.waitFor({ state: "hidden" });
    await page
      .getByRole("row", { name: new RegExp(seededHost.name) })
      .waitFor({ state: "detached" });
    const states = await stack.server.db.query<{ status: string }>(
      "SELECT status FROM sandboxes WHERE id = ANY($1::text[])",
      [doomed],
    );
    assert.deepEqual(
      states.map((s) => s.status),
      ["stopped", "stopped"],
    );
  });
});
