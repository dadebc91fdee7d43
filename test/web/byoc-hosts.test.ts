/**
 * A BYOC team's Hosts page in a real browser against a real control plane and a real host
 * agent (namespace runtime, instance `i`, slots 9300-9399) that registers with the token the
 * page reveals: the page is absent for other teams; the owner registers a host, copies the
 * agent command, sees the host come online without a reload, drains it and tags it; a member
 * sees the same hosts with every control disabled and a note why; the owner deletes the host
 * after the preview lists the sandbox that would be stopped, and the agent, told so, exits.
 * The steps run in order: each needs the host and sandbox the previous one left.
 */
import assert from "node:assert/strict";
import { rmSync } from "node:fs";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import type { LaunchedAgent } from "@nestbox/cli/launch";
import {
  apiCall,
  eventually,
  logInByPage,
  logOutByPage,
  seedAdmin,
  signUpByApi,
  tokenOf,
} from "./support/accounts.js";
import {
  launchRegisteredAgent,
  seriousA11yViolations,
  startWebStack,
  stopAgent,
  type WebStack,
} from "./support/browser-fixture.js";

const NESTBOX_DIR = process.env.NESTBOX_DIR ?? "/var/lib/nestbox";
const AGENT = { runtime: "namespace", instance: "i", slots: "9300-9399" } as const;
const WAIT = { timeout: 60_000 };

describe("BYOC hosts page", () => {
  let stack: WebStack;
  let agent: LaunchedAgent | undefined;
  let teamId = "";
  let hostId = "";
  let sandboxId = "";
  const stamp = Date.now();
  const olga = { name: "Olga", email: `olga-${stamp}@example.com`, password: "olgas password!" };
  const max = { name: "Max", email: `max-${stamp}@example.com`, password: "maxs password!!" };

  before(async () => {
    stack = await startWebStack();
    const { page, url } = stack;
    await page.goto(`${url}/signup`);
    await page.getByLabel("Name").fill(olga.name);
    await page.getByLabel("E-mail").fill(olga.email);
    await page.getByLabel("Password").fill(olga.password);
    await page.getByRole("button", { name: "Sign up" }).click();
    await page.waitForURL(`${url}/`);
    teamId = await page.getByLabel("Team").inputValue();
    await signUpByApi(stack, max);
  });
  after(async () => {
    if (agent) await stopAgent(agent);
    await stack?.close();
    // The agent's state (credentials, TLS key, records) belongs to this run only.
    rmSync(path.join(NESTBOX_DIR, "agent", AGENT.instance), { recursive: true, force: true });
  });

  const nav = () => stack.page.getByRole("navigation", { name: "Main" });
  const hostRow = () => stack.page.getByRole("row", { name: /olga-1/ });
  async function assertAccessible(what: string) {
    assert.deepEqual(await seriousA11yViolations(stack.page), [], `${what}: axe violations`);
  }
  async function goHosts() {
    await nav().getByRole("link", { name: "Hosts", exact: true }).click();
    await stack.page.waitForURL(`${stack.url}/hosts`);
  }

  test("a team that is not BYOC has no Hosts page", async () => {
    const { page, url } = stack;
    assert.equal(await nav().getByRole("link", { name: "Hosts" }).count(), 0);
    await page.goto(`${url}/hosts`);
    await page.getByRole("heading", { name: "This team runs on the platform's hosts" }).waitFor();
    assert.equal(await page.getByRole("button", { name: "Register host" }).count(), 0);
  });

  test("the owner registers a host and sees it come online, then drains and tags it", async () => {
    const { page, url } = stack;
    // A platform admin makes the team a BYOC team (the admin test drives that page); the
    // page shows the Hosts entry once the session is renewed (here: by a reload).
    const { admin } = await seedAdmin(stack);
    const byoc = await apiCall(
      stack,
      await tokenOf(stack, admin),
      "PUT",
      `/v1/admin/teams/${teamId}/byoc`,
      {
        enabled: true,
      },
    );
    assert.equal(byoc.status, 204, JSON.stringify(byoc.body));
    await page.reload();
    await goHosts();
    await page.getByRole("heading", { name: "No hosts yet" }).waitFor();
    await page.getByLabel("New host name").fill("olga-1");
    await page.getByRole("button", { name: "Register host" }).click();
    const command = page.getByTestId("host-command");
    await command.waitFor();
    const re = new RegExp(
      `^\\./nestbox agent --control-plane ${url} --registration-token ([0-9a-f]{64}) --listen 0\\.0\\.0\\.0:50051 --advertise-url https://<host-address>:50051$`,
    );
    const token = re.exec((await command.textContent()) ?? "")?.[1];
    assert.ok(token, `the command: ${await command.textContent()}`);
    assert.equal(await page.getByTestId("host-token").textContent(), token);
    // A pasted URL keeps its host and port (the agent listens on the port it advertises).
    await page
      .getByLabel("Address of the host, as this control plane reaches it")
      .fill("https://10.1.2.3:8443/");
    assert.match(
      (await command.textContent()) ?? "",
      / --listen 0\.0\.0\.0:8443 --advertise-url https:\/\/10\.1\.2\.3:8443$/,
    );
    await hostRow().waitFor();
    assert.match(
      (await hostRow().textContent()) ?? "",
      /pending.*never seen.*0.*not registered yet/s,
    );
    const [row] = await stack.server.db.query<{ id: string; type: string; team_id: string }>(
      "SELECT id, type, team_id FROM hosts WHERE name = 'olga-1'",
    );
    assert.deepEqual({ type: row?.type, team: row?.team_id }, { type: "byoc", team: teamId });
    hostId = row?.id ?? "";
    await assertAccessible("hosts (token reveal)");
    await stack.screenshot("byoc-hosts-register");

    // The agent registers with the revealed token, as the command would on another machine
    // (here on loopback, on a port the OS picks, so the advertised address is its default).
    agent = await launchRegisteredAgent(stack.server, token, AGENT);
    // No reload: the page polls.
    await hostRow().getByText("online", { exact: true }).waitFor(WAIT);
    assert.match((await hostRow().textContent()) ?? "", /online.*namespace/s);
    await page.getByRole("button", { name: "Done" }).click();
    await page.getByTestId("host-reveal").waitFor({ state: "detached" });

    // A sandbox of the BYOC team lands on its own host, and the row counts it.
    const olgaToken = await tokenOf(stack, olga);
    const created = await apiCall(stack, olgaToken, "POST", "/v1/sandboxes", { template: "base" });
    assert.equal(created.status, 201, JSON.stringify(created.body));
    const box = created.body as { id: string; host_id: string };
    assert.equal(box.host_id, hostId);
    sandboxId = box.id;
    await eventually(
      "the row counts the sandbox",
      async () => (await hostRow().getByTestId("host-sandboxes").textContent()) === "1",
    );

    const drained = async () =>
      (
        await stack.server.db.query<{ draining: boolean }>(
          "SELECT draining FROM hosts WHERE id = $1",
          [hostId],
        )
      )[0]?.draining;
    await page.getByRole("button", { name: "Drain olga-1" }).click();
    await hostRow().getByText("draining", { exact: true }).waitFor();
    assert.equal(await drained(), true);
    await page.getByRole("button", { name: "Undrain olga-1" }).click();
    await hostRow().getByText("draining", { exact: true }).waitFor({ state: "detached" });
    assert.equal(await drained(), false);

    await page.getByLabel("New tag for olga-1").fill("Not A Tag");
    await page.getByRole("button", { name: "Add tag to olga-1" }).click();
    await page.getByRole("alert").getByText("is not a tag").waitFor();
    await page.getByLabel("New tag for olga-1").fill("gpu");
    await page.getByRole("button", { name: "Add tag to olga-1" }).click();
    await page.getByRole("button", { name: "Remove tag gpu from olga-1" }).waitFor();
    const tags = await stack.server.db.query<{ tag: string }>(
      "SELECT tag FROM host_tags WHERE host_id = $1",
      [hostId],
    );
    assert.deepEqual(
      tags.map((t) => t.tag),
      ["gpu"],
    );
    await assertAccessible("hosts (online)");
    await stack.screenshot("byoc-hosts-online");
    await page.emulateMedia({ colorScheme: "dark" });
    await assertAccessible("hosts (dark)");
    await stack.screenshot("byoc-hosts-online-dark", { fullPage: false });
    await page.emulateMedia({ colorScheme: "light" });
  });

  test("a member sees the team's hosts read-only, with a note why", async () => {
    const { page } = stack;
    const olgaToken = await tokenOf(stack, olga);
    const added = await apiCall(stack, olgaToken, "POST", `/v1/teams/${teamId}/members`, {
      email: max.email,
    });
    assert.equal(added.status, 201, JSON.stringify(added.body));
    await logOutByPage(stack);
    await logInByPage(stack, max);
    // Max's own team is not BYOC: no Hosts entry until he switches to Olga's.
    assert.equal(await nav().getByRole("link", { name: "Hosts" }).count(), 0);
    await page.getByLabel("Team").selectOption(teamId);
    await nav().getByRole("link", { name: "Hosts", exact: true }).waitFor();
    await goHosts();
    await hostRow().getByText("online", { exact: true }).waitFor();
    assert.match(
      (await page.getByTestId("read-only-note").textContent()) ?? "",
      /only the team's owner and admins/i,
    );
    assert.equal(await page.getByRole("button", { name: "Register host" }).isDisabled(), true);
    assert.equal(await page.getByLabel("New host name").isDisabled(), true);
    assert.equal(await page.getByRole("button", { name: "Drain olga-1" }).isDisabled(), true);
    assert.equal(await page.getByRole("button", { name: "Delete host olga-1" }).isDisabled(), true);
    assert.equal(await page.getByLabel("New tag for olga-1").count(), 0);
    assert.equal(await page.getByRole("button", { name: /^Remove tag/ }).count(), 0);
    await hostRow().getByText("gpu", { exact: true }).waitFor();
    // The API refuses the member too, whatever the page shows.
    const maxToken = await tokenOf(stack, max);
    const switched = await apiCall(stack, maxToken, "POST", "/v1/auth/switch-team", {
      team_id: teamId,
    });
    assert.equal(switched.status, 200, JSON.stringify(switched.body));
    const inTeam = (switched.body as { token: string }).token;
    const drain = await apiCall(stack, inTeam, "POST", `/v1/hosts/${hostId}/drain`);
    assert.equal(drain.status, 403, JSON.stringify(drain.body));
    await assertAccessible("hosts (member)");
    await stack.screenshot("byoc-hosts-member");
    await logOutByPage(stack);
    await logInByPage(stack, olga);
  });

  test("the owner deletes the host: the preview lists its sandbox, the forced delete stops it", async () => {
    const { page } = stack;
    await goHosts();
    await page.getByRole("button", { name: "Delete host olga-1" }).click();
    const dialog = page.getByRole("dialog", { name: "Delete host?" });
    const list = dialog.getByRole("list", { name: "Sandboxes that will be destroyed" });
    await list.waitFor();
    assert.deepEqual(await list.getByRole("listitem").allTextContents(), [sandboxId]);
    assert.equal(
      (await stack.server.db.query("SELECT 1 FROM hosts WHERE id = $1", [hostId])).length,
      1,
      "the preview deletes nothing",
    );
    await assertAccessible("host delete preview");
    await stack.screenshot("byoc-hosts-delete-preview", { fullPage: false });
    await dialog.getByRole("button", { name: "Destroy 1 and delete" }).click();
    await dialog.waitFor({ state: "hidden" });
    await hostRow().waitFor({ state: "detached" });
    await page.getByRole("heading", { name: "No hosts yet" }).waitFor();
    const [box] = await stack.server.db.query<{ status: string }>(
      "SELECT status FROM sandboxes WHERE id = $1",
      [sandboxId],
    );
    assert.equal(box?.status, "stopped");
    // Told to terminate (or answered 404 at its next heartbeat), the agent exits by itself.
    const child = agent?.child;
    await eventually(
      "the agent exits",
      async () => child?.exitCode !== null || child?.signalCode !== null,
      30_000,
    );
    agent = undefined;
  });
});
