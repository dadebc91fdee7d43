/**
 * The admin section (/admin/...) in a real browser against a real control plane (no host
 * agent: the rows it lists are seeded in the database): a non-admin finds no way in and a
 * refusal at its URLs; the platform admin reaches it through the sidebar and, with its own
 * sidebar, enables BYOC for a team (confirmed, one-way), deletes a team with its live
 * sandboxes, deactivates and re-activates a user, deletes a platform template, filters every
 * team's sandboxes (and sends one to be snapshotted into a platform template), and sees hosts
 * under Platform and BYOC tabs. The steps run in order in one
 * browser session: each hands the next its teams, users and rows.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { transitionSandbox } from "../../packages/server/src/db/queries/sandboxes.js";
import { insertTemplate } from "../../packages/server/src/db/queries/templates.js";
import { newId } from "../../packages/server/src/ids.js";
import {
  type Account,
  apiCall,
  eventually,
  logInByPage,
  logOutByPage,
  seedAdmin,
  signUpByApi,
  tokenOf,
} from "./support/accounts.js";
import {
  seedSandboxes,
  seriousA11yViolations,
  startWebStack,
  type WebStack,
} from "./support/browser-fixture.js";

describe("admin section", () => {
  let stack: WebStack;
  let admin: Account;
  let platformTeamId = "";
  const stamp = Date.now();
  const nia = { name: "Nia", email: `nia-${stamp}@example.com`, password: "nias long password" };
  const otto = { name: "Otto", email: `otto-${stamp}@example.com`, password: "ottos password!" };
  let niaId = "";
  let niaTeam = "";
  let ottoTeam = "";

  const teamOf = async (userId: string) =>
    (
      await stack.server.db.query<{ team_id: string }>(
        "SELECT team_id FROM memberships WHERE user_id = $1 AND role = 'owner'",
        [userId],
      )
    )[0]?.team_id ?? "";

  before(async () => {
    stack = await startWebStack();
    ({ admin, platformTeamId } = await seedAdmin(stack));
    niaId = await signUpByApi(stack, nia);
    niaTeam = await teamOf(niaId);
    ottoTeam = await teamOf(await signUpByApi(stack, otto));
  });
  after(async () => {
    await stack?.close();
  });

  const mainNav = () => stack.page.getByRole("navigation", { name: "Main" });
  const adminNav = () => stack.page.getByRole("navigation", { name: "Admin" });
  async function assertAccessible(what: string) {
    assert.deepEqual(await seriousA11yViolations(stack.page), [], `${what}: axe violations`);
  }
  async function adminPage(label: string, pathname: string) {
    await adminNav().getByRole("link", { name: label, exact: true }).click();
    await stack.page.waitForURL(`${stack.url}${pathname}`);
  }
  const row = (text: string | RegExp) => stack.page.getByRole("row", { name: text });

  test("a non-admin has no way in: no sidebar entry, a refusal page, and the API says 403", async () => {
    const { page, url } = stack;
    await logInByPage(stack, nia);
    assert.equal(await mainNav().getByRole("link", { name: "Platform admin" }).count(), 0);
    for (const p of ["/admin", "/admin/users", "/admin/teams", "/admin/hosts"]) {
      await page.goto(`${url}${p}`);
      await page.getByRole("heading", { name: "Platform admins only" }).waitFor();
      // Nothing of the section shows: its sidebar lists no page.
      assert.equal(await adminNav().getByRole("link").count(), 0, p);
    }
    await assertAccessible("admin refusal");
    await stack.screenshot("admin-refusal");
    await page.getByRole("link", { name: "Go to the dashboard" }).click();
    await page.waitForURL(`${url}/`);
    const token = await tokenOf(stack, nia);
    for (const p of ["/v1/admin/users", "/v1/admin/teams", "/v1/admin/sandboxes"])
      assert.equal((await apiCall(stack, token, "GET", p)).status, 403, p);
    await logOutByPage(stack);
  });

  test("the admin reaches the section from the sidebar; it has its own sidebar and a way back", async () => {
    const { page, url } = stack;
    await logInByPage(stack, admin);
    await mainNav().getByRole("link", { name: "Platform admin" }).click();
    // /admin opens on its hosts page.
    await page.waitForURL(`${url}/admin/hosts`);
    const labels = await adminNav().getByRole("link").allTextContents();
    assert.deepEqual(
      labels.map((l) => l.trim()),
      ["Hosts", "Users", "Teams", "Templates", "Sandboxes"],
    );
    assert.equal(await mainNav().count(), 0, "the dashboard's sidebar is replaced");
    await page.getByRole("link", { name: "Back to the dashboard" }).click();
    await page.waitForURL(`${url}/`);
    await mainNav().waitFor();
    await mainNav().getByRole("link", { name: "Platform admin" }).click();
    await page.waitForURL(`${url}/admin/hosts`);
  });

  test("teams: enable BYOC (asked first, one-way) and delete a team with its live sandboxes", async () => {
    const { page } = stack;
    const byocOf = async (id: string) =>
      (
        await stack.server.db.query<{ is_byoc: boolean }>(
          "SELECT is_byoc FROM teams WHERE id = $1",
          [id],
        )
      )[0]?.is_byoc;
    await adminPage("Teams", "/admin/teams");
    const niaRow = row(new RegExp(nia.email));
    await niaRow.waitFor();
    assert.match((await niaRow.textContent()) ?? "", /Nia/);
    // The platform team is listed but can be neither deleted nor made BYOC.
    const platformRow = row(/Platform/).first();
    await platformRow.waitFor();
    assert.equal(await platformRow.getByRole("button").count(), 0);

    const enableButton = page.getByRole("button", { name: "Enable BYOC for Nia's team" });
    await enableButton.click();
    const dialog = page.getByRole("dialog", { name: "Enable BYOC?" });
    await dialog.getByText("This cannot be turned off").waitFor();
    await assertAccessible("enable BYOC dialog");
    await stack.screenshot("admin-teams-byoc-confirm", { fullPage: false });
    await dialog.getByRole("button", { name: "Cancel" }).click();
    await dialog.waitFor({ state: "hidden" });
    assert.equal(await byocOf(niaTeam), false, "cancel changes nothing");
    await enableButton.click();
    await dialog.getByRole("button", { name: "Enable BYOC" }).click();
    await dialog.waitFor({ state: "hidden" });
    await niaRow.getByText("BYOC", { exact: true }).waitFor();
    assert.equal(await byocOf(niaTeam), true);
    // One-way: the row offers no way back.
    assert.equal(await niaRow.getByRole("button", { name: /BYOC/ }).count(), 0);

    const live = await seedSandboxes(stack, ottoTeam, 2);
    await page.reload();
    const ottoRow = row(new RegExp(otto.email));
    await ottoRow.waitFor();
    assert.match((await ottoRow.textContent()) ?? "", /Otto/);
    await ottoRow.getByRole("button", { name: /^Delete team / }).click();
    const del = page.getByRole("dialog", { name: "Delete team?" });
    await del.getByText("its 2 live sandboxes are destroyed").waitFor();
    await del.getByRole("button", { name: "Delete team" }).click();
    await del.waitFor({ state: "hidden" });
    await ottoRow.getByText("deleted", { exact: true }).waitFor();
    assert.equal(await ottoRow.getByRole("button").count(), 0, "nothing more to do with it");
    const [team] = await stack.server.db.query<{ deleted: boolean }>(
      "SELECT deleted_at IS NOT NULL AS deleted FROM teams WHERE id = $1",
      [ottoTeam],
    );
    assert.equal(team?.deleted, true);
    await eventually("its sandboxes stopped", async () => {
      const rows = await stack.server.db.query<{ status: string }>(
        "SELECT status FROM sandboxes WHERE id = ANY($1::text[])",
        [live],
      );
      return rows.every((r) => r.status === "stopped");
    });
    await assertAccessible("admin teams");
    await stack.screenshot("admin-teams");
  });

  test("users: deactivate (asked first) ends the login; activate brings it back", async () => {
    const { page } = stack;
    const statusOf = async () =>
      (
        await stack.server.db.query<{ status: string }>("SELECT status FROM users WHERE id = $1", [
          niaId,
        ])
      )[0]?.status;
    const loginStatus = async () =>
      (
        await fetch(`${stack.url}/v1/auth/login`, {
          method: "POST",
          headers: { "Content-Type": "application/json" },
          body: JSON.stringify({ email: nia.email, password: nia.password }),
        })
      ).status;
    await adminPage("Users", "/admin/users");
    const niaRow = row(new RegExp(nia.email));
    await niaRow.waitFor();
    assert.match((await niaRow.textContent()) ?? "", /user.*active.*1 joined · 1 owned/s);
    // The admin cannot deactivate themself: their row has no such button.
    const me = row(new RegExp(admin.email));
    assert.match((await me.textContent()) ?? "", /platform admin/);
    assert.equal(await me.getByRole("button").count(), 0);

    await page.getByRole("button", { name: `Deactivate ${nia.email}` }).click();
    const dialog = page.getByRole("dialog", { name: "Deactivate user?" });
    await dialog.getByText("API keys they created are deleted").waitFor();
    await dialog.getByRole("button", { name: "Deactivate" }).click();
    await dialog.waitFor({ state: "hidden" });
    await niaRow.getByText("disabled", { exact: true }).waitFor();
    assert.equal(await statusOf(), "disabled");
    assert.notEqual(await loginStatus(), 200, "a deactivated user cannot log in");
    await assertAccessible("admin users");
    await stack.screenshot("admin-users");

    await page.getByRole("button", { name: `Activate ${nia.email}` }).click();
    await niaRow.getByText("active", { exact: true }).waitFor();
    assert.equal(await statusOf(), "active");
    assert.equal(await loginStatus(), 200);
  });

  test("templates: every team's; only platform templates other than base can be deleted", async () => {
    const { page } = stack;
    const template = (teamId: string, name: string) =>
      insertTemplate(stack.server.db, {
        id: newId("tpl"),
        team_id: teamId,
        name,
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
    await template(platformTeamId, "py-platform");
    await template(niaTeam, "nia-env");
    await adminPage("Templates", "/admin/templates");
    const tplRow = (name: string) => row(new RegExp(`^${name}\\b`));
    await tplRow("py-platform").waitFor();
    assert.match((await tplRow("py-platform").textContent()) ?? "", /Platform.*snapshot.*300 MiB/s);
    assert.match((await tplRow("nia-env").textContent()) ?? "", /Nia/);
    assert.equal(await page.getByRole("button", { name: "Delete base" }).count(), 0);
    assert.equal(await page.getByRole("button", { name: "Delete nia-env" }).count(), 0);
    await page.getByLabel("Show").selectOption("teams");
    await eventually(
      "only team templates",
      async () => (await tplRow("py-platform").count()) === 0,
    );
    await tplRow("nia-env").waitFor();
    await page.getByLabel("Show").selectOption("all");

    await page.getByRole("button", { name: "Delete py-platform" }).click();
    const dialog = page.getByRole("dialog", { name: "Delete platform template?" });
    await dialog.getByRole("button", { name: "Delete template" }).click();
    await dialog.waitFor({ state: "hidden" });
    await tplRow("py-platform").waitFor({ state: "detached" });
    const left = await stack.server.db.query("SELECT 1 FROM templates WHERE name = 'py-platform'");
    assert.equal(left.length, 0);
    await assertAccessible("admin templates");
    await stack.screenshot("admin-templates");
  });

  test("sandboxes: every team's, filtered by team, host and status", async () => {
    const { page } = stack;
    const niaBoxes = await seedSandboxes(stack, niaTeam, 2);
    const platformBoxes = await seedSandboxes(stack, platformTeamId, 1);
    await transitionSandbox(stack.server.db, niaBoxes[1] ?? "", ["running"], "paused");
    await adminPage("Sandboxes", "/admin/sandboxes");
    const table = page.getByRole("table", { name: "Sandboxes of every team" });
    const ids = async () =>
      (await table.locator("tbody tr td:first-child").allTextContents()).map((s) => s.trim());
    await table.waitFor();
    for (const id of [...niaBoxes, ...platformBoxes])
      await table.getByRole("row", { name: new RegExp(id) }).waitFor();
    // Otto's stopped sandboxes (his team was deleted) are listed too: every team, every status.
    assert.ok((await ids()).length >= 5);

    await page.getByLabel("Team").selectOption({ label: "Nia's team" });
    await eventually(
      "Nia's only",
      async () => (await ids()).sort().join() === [...niaBoxes].sort().join(),
    );
    await page.getByLabel("Status").selectOption("paused");
    await eventually("the paused one", async () => (await ids()).join() === niaBoxes[1]);
    await assertAccessible("admin sandboxes (filtered)");
    await stack.screenshot("admin-sandboxes");
    await page.getByLabel("Team").selectOption("");
    await page.getByLabel("Status").selectOption("running");
    const [host] = await stack.server.db.query<{ id: string }>(
      "SELECT host_id AS id FROM sandboxes WHERE id = $1",
      [platformBoxes[0]],
    );
    await page.getByLabel("Host").selectOption(host?.id ?? "");
    await eventually("the platform one", async () => (await ids()).join() === platformBoxes[0]);
    await page.getByLabel("Host").selectOption("");
    await page.getByLabel("Status").selectOption("error");
    await page.getByRole("heading", { name: "No sandbox matches these filters" }).waitFor();

    // Snapshot into a platform template: the dialog sends it, and shows the API's refusal here
    // (the sandbox's host never came online); the sandbox stays as it was.
    await page.getByLabel("Status").selectOption("running");
    const target = platformBoxes[0] ?? "";
    await page.getByRole("button", { name: `Snapshot ${target} as a platform template` }).click();
    const snap = page.getByRole("dialog", { name: "Snapshot as platform template" });
    await snap.getByText("replacing a platform template of the same name").waitFor();
    await snap.getByLabel("Template name").fill("team-made");
    const sent = page.waitForRequest(
      (r) =>
        r.method() === "POST" &&
        new URL(r.url()).pathname === `/v1/admin/sandboxes/${target}/snapshot`,
    );
    await snap.getByRole("button", { name: "Snapshot" }).click();
    await sent;
    const refused = snap.getByRole("alert");
    await refused.waitFor();
    assert.ok(((await refused.textContent()) ?? "").trim().length > 0);
    await assertAccessible("admin snapshot dialog");
    await snap.getByRole("button", { name: "Cancel" }).click();
    await snap.waitFor({ state: "hidden" });
    const [still] = await stack.server.db.query<{ status: string }>(
      "SELECT status FROM sandboxes WHERE id = $1",
      [target],
    );
    assert.equal(still?.status, "running");
  });

  test("hosts: Platform and BYOC tabs, BYOC hosts grouped by team", async () => {
    const { page } = stack;
    const token = await tokenOf(stack, admin);
    const created = await apiCall(stack, token, "POST", "/v1/hosts", {
      name: "nia-box",
      type: "byoc",
      team_id: niaTeam,
    });
    assert.equal(created.status, 201, JSON.stringify(created.body));
    await adminPage("Hosts", "/admin/hosts");
    const platformTab = page.getByRole("tab", { name: /^Platform/ });
    const byocTab = page.getByRole("tab", { name: /^BYOC/ });
    assert.equal(await platformTab.getAttribute("aria-selected"), "true");
    // The hosts of the seeded sandboxes are regular ones.
    await row(/web-test-/)
      .first()
      .waitFor();
    assert.equal(await row(/nia-box/).count(), 0, "BYOC hosts are not on the Platform tab");
    await assertAccessible("admin hosts (platform)");
    await stack.screenshot("admin-hosts-platform");

    await byocTab.click();
    assert.equal(await byocTab.getAttribute("aria-selected"), "true");
    const panel = page.getByRole("tabpanel");
    const group = panel
      .getByRole("region")
      .filter({ has: page.getByRole("row", { name: /nia-box/ }) });
    await group.waitFor();
    assert.match((await group.getByRole("heading").textContent()) ?? "", /^Nia's team/);
    assert.match((await row(/nia-box/).textContent()) ?? "", /pending.*0.*not registered yet/s);
    // Keyboard: the arrow keys move between the tabs.
    await byocTab.focus();
    await page.keyboard.press("ArrowLeft");
    assert.equal(await platformTab.getAttribute("aria-selected"), "true");
    await byocTab.click();
    await assertAccessible("admin hosts (BYOC)");
    await stack.screenshot("admin-hosts-byoc");
    await page.emulateMedia({ colorScheme: "dark" });
    await assertAccessible("admin hosts (BYOC, dark)");
    await stack.screenshot("admin-hosts-byoc-dark", { fullPage: false });
    await page.emulateMedia({ colorScheme: "light" });

    // An admin registers a BYOC host for a team: type and team are chosen in the form.
    await page.getByLabel("New host name").fill("nia-box-2");
    await page.getByLabel("Type").selectOption("byoc");
    await page.getByLabel("BYOC team").selectOption(niaTeam);
    await page.getByRole("button", { name: "Register host" }).click();
    await page.getByTestId("host-command").waitFor();
    await row(/nia-box-2/).waitFor();
    const [h] = await stack.server.db.query<{ type: string; team_id: string }>(
      "SELECT type, team_id FROM hosts WHERE name = 'nia-box-2'",
    );
    assert.deepEqual(h, { type: "byoc", team_id: niaTeam });
  });
});
