/**
 * The admin routes that reach a host: a real control plane (in this process, PGlite) and a real
 * host agent (namespace runtime, instance `d`, slots 9100-9199). Team deletion and deactivation
 * destroy sandboxes on the host; an admin snapshot of another team's sandbox becomes a platform
 * template every team can use, and replaces one of the same name (even the one the snapshotted
 * sandbox came from); an admin template delete removes the files from the host.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { Code, ConnectError } from "@connectrpc/connect";
import { type Stack, startStack } from "../e2e/support/control-plane-harness.js";

interface Reply {
  status: number;
  // biome-ignore lint/suspicious/noExplicitAny: test bodies are checked field by field
  body: any;
}

interface Account {
  id: string;
  teamId: string;
  token: string;
  key: string;
}

describe("admin API with a host agent (namespace runtime)", { concurrency: false }, () => {
  let s: Stack;
  let adminToken: string;
  /** Sandboxes to destroy at the end whatever happened. */
  const created = new Set<string>();
  /** Platform template names to delete at the end. */
  const templateNames = new Set<string>();

  async function req(
    method: string,
    route: string,
    auth: { token?: string; key?: string },
    body?: unknown,
  ): Promise<Reply> {
    const headers: Record<string, string> = {};
    if (auth.token) headers.authorization = `Bearer ${auth.token}`;
    if (auth.key) headers["x-api-key"] = auth.key;
    if (body !== undefined) headers["content-type"] = "application/json";
    const res = await fetch(`${s.apiUrl}${route}`, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    return { status: res.status, body: text ? JSON.parse(text) : undefined };
  }

  const asAdmin = (method: string, route: string, body?: unknown) =>
    req(method, route, { token: adminToken }, body);

  async function account(who: string): Promise<Account> {
    const email = `${who}-${randomBytes(3).toString("hex")}@example.com`;
    const r = await req(
      "POST",
      "/v1/auth/signup",
      {},
      { email, password: "pw-123456789", name: who },
    );
    assert.equal(r.status, 201, JSON.stringify(r.body));
    const k = await req("POST", "/v1/api-keys", { token: r.body.token }, { name: "k" });
    assert.equal(k.status, 201, JSON.stringify(k.body));
    return { id: r.body.user.id, teamId: r.body.team.id, token: r.body.token, key: k.body.key };
  }

  async function sandbox(a: Account, template = "base"): Promise<string> {
    const r = await req(
      "POST",
      "/v1/sandboxes",
      { key: a.key },
      { template, vcpus: 1, memory_mb: 256, timeout_sec: 0 },
    );
    assert.equal(r.status, 201, JSON.stringify(r.body));
    created.add(r.body.id);
    return r.body.id;
  }

  async function sh(a: Account, id: string, script: string): Promise<string> {
    const r = await req(
      "POST",
      `/v1/sandboxes/${id}/exec`,
      { key: a.key },
      {
        cmd: "/bin/sh",
        args: ["-c", script],
      },
    );
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.equal(r.body.exit_code, 0, JSON.stringify(r.body));
    return r.body.stdout;
  }

  const onHost = async () =>
    new Set((await s.agent.client.listSandboxes({})).sandboxes.map((x) => x.sandboxId));

  const agentName = async (templateId: string) =>
    (
      await s.server.db.query<{ agent_name: string | null }>(
        "SELECT agent_name FROM templates WHERE id = $1",
        [templateId],
      )
    )[0]?.agent_name;

  /** Whether the host still has a template: a create from it directly on the agent. */
  async function hostHasTemplate(name: string): Promise<boolean> {
    const id = randomBytes(10).toString("hex");
    try {
      await s.agent.client.createSandbox({
        sandboxId: id,
        template: name,
        vcpus: 1,
        memoryMb: 256,
        diskSizeMb: 1024,
      });
    } catch (err) {
      if (err instanceof ConnectError && err.code === Code.NotFound) return false;
      throw err;
    }
    // The reconciler may have destroyed it first: the control plane does not know it.
    await s.agent.client.destroySandbox({ sandboxId: id }).catch((err: unknown) => {
      if (!(err instanceof ConnectError && err.code === Code.NotFound)) throw err;
    });
    return true;
  }

  before(async () => {
    s = await startStack({ runtime: "namespace", instance: "d", slots: "9100-9199", db: "pglite" });
    const password = readFileSync(path.join(s.dataDir, "admin-password"), "utf8").trim();
    const login = await req("POST", "/v1/auth/login", {}, { email: "admin@localhost", password });
    assert.equal(login.status, 200, JSON.stringify(login.body));
    adminToken = login.body.token;
  });

  after(async () => {
    if (!s) return;
    for (const id of created) {
      const r = await s.api("DELETE", `/v1/sandboxes/${id}`);
      // Other teams' sandboxes are 404 to the admin key: the agent call settles those.
      if (r.status !== 204 && r.status !== 404) console.error(`cleanup of ${id}: ${r.status}`);
      await s.agent.client.destroySandbox({ sandboxId: id }).catch((err: unknown) => {
        if (!(err instanceof ConnectError)) console.error(`destroy ${id}: ${String(err)}`);
      });
    }
    for (const name of templateNames) {
      const r = await asAdmin("DELETE", `/v1/admin/templates/${name}`);
      if (r.status !== 204 && r.status !== 404) console.error(`template ${name}: ${r.status}`);
    }
    await s.close();
  });

  it("deleting a team destroys its sandboxes on the host", async () => {
    const a = await account("team-del");
    const id = await sandbox(a);
    assert.ok((await onHost()).has(id));
    const listed = await asAdmin("GET", `/v1/admin/sandboxes?team_id=${a.teamId}&status=running`);
    assert.deepEqual(
      listed.body.sandboxes.map((x: { id: string }) => x.id),
      [id],
    );
    assert.equal(listed.body.sandboxes[0].host_id, s.hostId);
    const del = await asAdmin("DELETE", `/v1/admin/teams/${a.teamId}`);
    assert.equal(del.status, 204, JSON.stringify(del.body));
    assert.ok(!(await onHost()).has(id), "still on the host");
    const after = await asAdmin("GET", `/v1/admin/sandboxes?team_id=${a.teamId}`);
    assert.equal(after.body.sandboxes[0].status, "stopped");
    assert.equal((await req("GET", "/v1/sandboxes", { key: a.key })).status, 401);
  });

  it("deactivation destroys sandboxes of solely owned teams, not of a team with another owner", async () => {
    const leaver = await account("leaver");
    const partner = await account("partner");
    await s.server.db.query(
      "INSERT INTO memberships (team_id, user_id, role) VALUES ($1, $2, 'owner')",
      [partner.teamId, leaver.id],
    );
    const own = await sandbox(leaver);
    const shared = await sandbox(partner);
    const off = await asAdmin("PUT", `/v1/admin/users/${leaver.id}/active`, { active: false });
    assert.equal(off.status, 200, JSON.stringify(off.body));
    const host = await onHost();
    assert.ok(!host.has(own), "the solely owned team's sandbox is still on the host");
    assert.ok(host.has(shared), "the shared team's sandbox was destroyed");
    assert.equal(await sh(partner, shared, "echo alive"), "alive\n");
    assert.equal((await req("GET", "/v1/sandboxes", { key: leaver.key })).status, 401);
  });

  it("an admin snapshot becomes a platform template for every team and replaces one of its name", async () => {
    const owner = await account("snap-owner");
    const other = await account("snap-user");
    const name = `adm-d-${randomBytes(3).toString("hex")}`;
    templateNames.add(name);

    const first = await sandbox(owner);
    await sh(owner, first, "echo v1 > ~/marker");
    const snap = await asAdmin("POST", `/v1/admin/sandboxes/${first}/snapshot`, { name });
    assert.equal(snap.status, 201, JSON.stringify(snap.body));
    assert.equal(snap.body.name, name);
    assert.equal(snap.body.is_platform, true);
    assert.equal(snap.body.kind, "snapshot");
    assert.equal(snap.body.host_id, s.hostId);
    created.delete(first);
    assert.ok(!(await onHost()).has(first), "the snapshotted sandbox is destroyed");
    const firstAgentName = await agentName(snap.body.id);
    assert.equal(firstAgentName, snap.body.id, "stored on the host under its id");
    assert.equal(await hostHasTemplate(snap.body.id), true);

    // Another team uses it, changes it, and the admin snapshots that sandbox under the same
    // name: the template it came from is replaced.
    const second = await sandbox(other, name);
    assert.equal(await sh(other, second, "cat ~/marker"), "v1\n");
    await sh(other, second, "echo v2 > ~/marker");
    const user = await sandbox(owner, name);
    const busy = await asAdmin("POST", `/v1/admin/sandboxes/${second}/snapshot`, { name });
    assert.equal(busy.status, 409, "another live sandbox still uses the old one");
    assert.deepEqual(busy.body.error.sandbox_ids, [user]);
    assert.equal((await req("DELETE", `/v1/sandboxes/${user}`, { key: owner.key })).status, 204);
    const replaced = await asAdmin("POST", `/v1/admin/sandboxes/${second}/snapshot`, { name });
    assert.equal(replaced.status, 201, JSON.stringify(replaced.body));
    assert.notEqual(replaced.body.id, snap.body.id);
    created.delete(second);
    const listed = await asAdmin("GET", "/v1/admin/templates");
    const same = listed.body.templates.filter((t: { name: string }) => t.name === name);
    assert.deepEqual(
      same.map((t: { id: string }) => t.id),
      [replaced.body.id],
    );
    assert.equal(await hostHasTemplate(firstAgentName as string), false, "old files left");

    const third = await sandbox(owner, name);
    assert.equal(await sh(owner, third, "cat ~/marker"), "v2\n");
    assert.equal((await req("DELETE", `/v1/sandboxes/${third}`, { key: owner.key })).status, 204);

    const extra = await sandbox(owner);
    const base = await asAdmin("POST", `/v1/admin/sandboxes/${extra}/snapshot`, { name: "base" });
    assert.equal(base.status, 403);
    assert.equal((await req("DELETE", `/v1/sandboxes/${extra}`, { key: owner.key })).status, 204);
  });

  it("an admin template delete removes it from the host; base is refused", async () => {
    const a = await account("tpl-del");
    const name = `adm-d-${randomBytes(3).toString("hex")}`;
    templateNames.add(name);
    const src = await sandbox(a);
    const snap = await asAdmin("POST", `/v1/admin/sandboxes/${src}/snapshot`, { name });
    assert.equal(snap.status, 201, JSON.stringify(snap.body));
    created.delete(src);
    const hostName = (await agentName(snap.body.id)) as string;
    assert.equal(await hostHasTemplate(hostName), true);

    const del = await asAdmin("DELETE", `/v1/admin/templates/${name}`);
    assert.equal(del.status, 204, JSON.stringify(del.body));
    templateNames.delete(name);
    assert.equal(await hostHasTemplate(hostName), false, "the host still has the files");
    const create = await req("POST", "/v1/sandboxes", { key: a.key }, { template: name });
    assert.equal(create.status, 404);
    const base = await asAdmin("DELETE", "/v1/admin/templates/base");
    assert.equal(base.status, 403);
    assert.equal(await hostHasTemplate("base"), true);
  });
});
