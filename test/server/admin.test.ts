/**
 * The platform-admin API (`/v1/admin/…`) through the real HTTP app on both database kinds: who
 * may call it, paging, BYOC, team deletion, (de)activation with its keys, sessions and
 * sandboxes, template and sandbox listings. Sandboxes here sit on a host that never came
 * online (rows only; destroying them needs no agent); test/server/admin-agent.test.ts runs the
 * parts that need a real host agent.
 *
 * One file (~550 lines) because the cases share one app, one admin and one never-online host
 * per database kind; split it when a part needs a fixture of its own.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, describe, it } from "node:test";
import { buildApp } from "../../packages/server/src/api/app.js";
import { adminRoutes } from "../../packages/server/src/api/routes/admin.js";
import { apiKeyRoutes } from "../../packages/server/src/api/routes/api-keys.js";
import { authRoutes } from "../../packages/server/src/api/routes/auth.js";
import { authSessionRoutes } from "../../packages/server/src/api/routes/auth-session.js";
import { teamRoutes } from "../../packages/server/src/api/routes/teams.js";
import { templateRoutes } from "../../packages/server/src/api/routes/templates.js";
import { ensurePlatformTeam } from "../../packages/server/src/bootstrap/seed.js";
import { insertPendingHost } from "../../packages/server/src/db/queries/hosts.js";
import { insertPendingSandbox } from "../../packages/server/src/db/queries/sandboxes.js";
import {
  ensureBaseTemplate,
  insertTemplate,
} from "../../packages/server/src/db/queries/templates.js";
import { newId, newSandboxId } from "../../packages/server/src/ids.js";
import { AdminService } from "../../packages/server/src/services/admin.js";
import { SandboxService } from "../../packages/server/src/services/sandboxes.js";
import { TemplateService } from "../../packages/server/src/services/templates.js";
import { type AppFixture, openAppFixture } from "./support/app-fixture.js";
import { DB_KINDS, type TestDb } from "./support/db-fixture.js";

const ORIGIN = "http://127.0.0.1:3000";

interface Reply {
  status: number;
  // biome-ignore lint/suspicious/noExplicitAny: test bodies are checked field by field
  body: any;
  setCookie: string | null;
}

interface Opts {
  token?: string;
  apiKey?: string;
  cookie?: string;
  body?: unknown;
  /** Ask for a cookie session (the dashboard's header). */
  csrf?: boolean;
}

interface User {
  id: string;
  teamId: string;
  token: string;
  email: string;
  password: string;
  cookie?: string;
}

/** Every admin route with a body it would accept. */
const ADMIN_ROUTES: [string, string, unknown?][] = [
  ["GET", "/v1/admin/teams"],
  ["PUT", `/v1/admin/teams/team_${"a".repeat(20)}/byoc`, { enabled: true }],
  ["DELETE", `/v1/admin/teams/team_${"a".repeat(20)}`],
  ["GET", "/v1/admin/users"],
  ["PUT", `/v1/admin/users/usr_${"a".repeat(20)}/active`, { active: false }],
  ["PATCH", `/v1/admin/users/usr_${"a".repeat(20)}`, { status: "disabled" }],
  ["GET", "/v1/admin/templates"],
  ["DELETE", "/v1/admin/templates/some-template"],
  ["GET", "/v1/admin/sandboxes"],
  ["POST", `/v1/admin/sandboxes/${"a".repeat(20)}/snapshot`, { name: "x" }],
];

for (const kind of DB_KINDS) {
  describe(`admin API (${kind})`, () => {
    let fx: AppFixture;
    let t: TestDb;
    let app: ReturnType<typeof buildApp>;
    let platformTeamId: string;
    let admin: User;
    let hostId: string;

    async function call(method: string, url: string, o: Opts = {}): Promise<Reply> {
      const headers = new Headers({ host: "127.0.0.1:3000" });
      if (o.token) headers.set("authorization", `Bearer ${o.token}`);
      if (o.apiKey) headers.set("x-api-key", o.apiKey);
      if (o.cookie) headers.set("cookie", o.cookie);
      if (o.csrf) {
        headers.set("x-nestbox-csrf", "1");
        headers.set("origin", ORIGIN);
      }
      let body: string | undefined;
      if (o.body !== undefined) {
        headers.set("content-type", "application/json");
        body = JSON.stringify(o.body);
      }
      const res = await app.request(`${ORIGIN}${url}`, { method, headers, body });
      const text = await res.text();
      return {
        status: res.status,
        body: text ? JSON.parse(text) : undefined,
        setCookie: res.headers.get("set-cookie"),
      };
    }

    let n = 0;
    async function signup(who: string, cookieSession = false): Promise<User> {
      const email = `${who}-${++n}-${randomBytes(3).toString("hex")}@example.com`;
      const password = `pw-${randomBytes(6).toString("hex")}`;
      const r = await call("POST", "/v1/auth/signup", {
        body: { email, password, name: who },
        csrf: cookieSession,
      });
      assert.equal(r.status, 201, JSON.stringify(r.body));
      const cookie = /^(nbx_refresh=[0-9a-f]{64});/.exec(r.setCookie ?? "")?.[1];
      if (cookieSession) assert.ok(cookie, `a refresh cookie: ${r.setCookie}`);
      return {
        id: r.body.user.id,
        teamId: r.body.team.id,
        token: r.body.token,
        email,
        password,
        ...(cookie ? { cookie } : {}),
      };
    }

    async function createKey(u: User): Promise<string> {
      const r = await call("POST", "/v1/api-keys", { token: u.token, body: { name: "k" } });
      assert.equal(r.status, 201, JSON.stringify(r.body));
      return r.body.key;
    }

    /** A live sandbox row of the team on a host that never came online. */
    async function liveSandbox(teamId: string, templateId: string | null = null) {
      const row = await insertPendingSandbox(t.db, {
        id: newSandboxId(),
        teamId,
        hostId,
        templateId,
        template: "base",
        vcpus: 1,
        memoryMb: 512,
        diskSizeMb: 1024,
        timeoutSec: 60,
        allowInternetAccess: true,
        envVars: {},
        metadata: {},
        envdAccessToken: null,
      });
      return row.id;
    }

    const statusOf = async (id: string) =>
      (await t.db.query<{ status: string }>("SELECT status FROM sandboxes WHERE id = $1", [id]))[0]
        ?.status;

    const audit = async (action: string, resourceId: string) =>
      t.db.query<{ team_id: string | null; actor_id: string; metadata: Record<string, unknown> }>(
        "SELECT team_id, actor_id, metadata FROM audit_events WHERE action = $1 AND resource_id = $2",
        [action, resourceId],
      );

    before(async () => {
      fx = await openAppFixture(kind, ORIGIN);
      t = fx.t;
      const platform = await ensurePlatformTeam(t.db);
      platformTeamId = platform.id;
      await ensureBaseTemplate(t.db, platformTeamId, "tpl_base");
      const log = () => {};
      const sandboxes = new SandboxService(t.db, fx.deps.agents, platformTeamId, log);
      const templates = new TemplateService(t.db, sandboxes, platformTeamId, log);
      const service = new AdminService(t.db, sandboxes, templates, log);
      app = buildApp(fx.deps, [
        authRoutes,
        authSessionRoutes,
        teamRoutes,
        apiKeyRoutes,
        adminRoutes(service, platformTeamId),
        templateRoutes(templates, platformTeamId),
      ]);
      admin = await signup("admin");
      await t.db.query("UPDATE users SET is_admin = true WHERE id = $1", [admin.id]);
      hostId = newId("host");
      await insertPendingHost(t.db, {
        id: hostId,
        name: `admin-${hostId.slice(-6)}`,
        createdBy: null,
        tokenId: newId("htok"),
        tokenHash: randomBytes(16).toString("hex"),
        tokenTtlSec: 600,
      });
    });
    after(async () => {
      await fx?.close();
    });

    it("every admin route needs a platform admin's session", async () => {
      const user = await signup("plain");
      const adminKey = await createKey(admin);
      for (const [method, url, body] of ADMIN_ROUTES) {
        const denied = await call(method, url, { token: user.token, body });
        assert.equal(denied.status, 403, `${method} ${url}: ${JSON.stringify(denied.body)}`);
        assert.equal(denied.body.error.code, "forbidden");
        assert.equal((await call(method, url, { body })).status, 401, `${method} ${url}`);
        // An API key never is an admin credential, not even an admin's own.
        assert.equal(
          (await call(method, url, { apiKey: adminKey, body })).status,
          401,
          `${method} ${url} with a key`,
        );
      }
      const doc = (await (await app.request("/openapi.json")).json()) as {
        paths: Record<string, Record<string, unknown>>;
      };
      for (const [method, url] of ADMIN_ROUTES) {
        const templated = url
          .replace(/team_a{20}|usr_a{20}|a{20}/, "{id}")
          .replace("some-template", "{name}");
        assert.ok(
          doc.paths[templated]?.[method.toLowerCase()],
          `${method} ${templated} in OpenAPI`,
        );
      }
    });

    it("teams and users come in pages: live teams first, newest first", async () => {
      const made: User[] = [];
      for (let i = 0; i < 5; i++) made.push(await signup("pager"));
      const [userCount] = await t.db.query<{ n: number }>("SELECT count(*)::int AS n FROM users");
      const users = await call("GET", "/v1/admin/users?per_page=2&page=2", { token: admin.token });
      assert.equal(users.status, 200, JSON.stringify(users.body));
      assert.equal(users.body.total, userCount?.n);
      assert.equal(users.body.page, 2);
      assert.equal(users.body.per_page, 2);
      assert.equal(users.body.total_pages, Math.ceil((userCount?.n ?? 0) / 2));
      assert.equal(users.body.users.length, 2);
      const all = await call("GET", "/v1/admin/users?per_page=200", { token: admin.token });
      assert.equal(all.body.users.length, userCount?.n);
      const last = made.at(-1) as User;
      const row = all.body.users.find((u: { id: string }) => u.id === last.id);
      assert.deepEqual(
        { teams_joined: row.teams_joined, teams_owned: row.teams_owned, status: row.status },
        { teams_joined: 1, teams_owned: 1, status: "active" },
      );
      assert.ok(!JSON.stringify(all.body).includes("argon2"), "no password hashes");
      const beyond = await call("GET", "/v1/admin/users?page=999", { token: admin.token });
      assert.deepEqual(beyond.body.users, []);
      for (const q of ["per_page=0", "per_page=201", "page=0", "page=x"]) {
        const bad = await call("GET", `/v1/admin/users?${q}`, { token: admin.token });
        assert.equal(bad.status, 400, q);
        assert.equal(bad.body.error.code, "invalid_request");
      }

      // The newest team leads; a deleted one goes behind every live one.
      const gone = made[0] as User;
      assert.equal(
        (await call("DELETE", `/v1/admin/teams/${gone.teamId}`, { token: admin.token })).status,
        204,
      );
      const first = await call("GET", "/v1/admin/teams?per_page=2", { token: admin.token });
      assert.equal(first.status, 200, JSON.stringify(first.body));
      const [teamCount] = await t.db.query<{ n: number }>("SELECT count(*)::int AS n FROM teams");
      assert.equal(first.body.total, teamCount?.n);
      assert.equal(first.body.total_pages, Math.ceil((teamCount?.n ?? 0) / 2));
      const top = first.body.teams[0];
      assert.equal(top.id, last.teamId);
      assert.deepEqual(
        {
          owner_id: top.owner_id,
          owner_email: top.owner_email,
          member_count: top.member_count,
          active_sandbox_count: top.active_sandbox_count,
          is_byoc: top.is_byoc,
          deleted_at: top.deleted_at,
        },
        {
          owner_id: last.id,
          owner_email: last.email,
          member_count: 1,
          active_sandbox_count: 0,
          is_byoc: false,
          deleted_at: null,
        },
      );
      const tail = await call("GET", `/v1/admin/teams?per_page=1&page=${first.body.total}`, {
        token: admin.token,
      });
      assert.equal(tail.body.teams[0].id, gone.teamId);
      assert.ok(tail.body.teams[0].deleted_at);
    });

    it("BYOC is one way: on once (then a no-op), never off", async () => {
      const owner = await signup("byoc");
      const url = `/v1/admin/teams/${owner.teamId}/byoc`;
      const off = await call("PUT", url, { token: admin.token, body: { enabled: false } });
      assert.equal(off.status, 400);
      assert.equal(off.body.error.code, "invalid_request");
      for (let i = 0; i < 2; i++)
        assert.equal(
          (await call("PUT", url, { token: admin.token, body: { enabled: true } })).status,
          204,
        );
      const again = await call("PUT", url, { token: admin.token, body: { enabled: false } });
      assert.equal(again.status, 400);
      const [row] = await t.db.query<{ is_byoc: boolean }>(
        "SELECT is_byoc FROM teams WHERE id = $1",
        [owner.teamId],
      );
      assert.equal(row?.is_byoc, true);
      assert.equal((await audit("team.set_byoc", owner.teamId)).length, 1, "audited once");
      const unknown = await call("PUT", `/v1/admin/teams/team_${"0".repeat(20)}/byoc`, {
        token: admin.token,
        body: { enabled: true },
      });
      assert.equal(unknown.status, 404);
      const noBody = await call("PUT", url, { token: admin.token, body: {} });
      assert.equal(noBody.status, 400);
    });

    it("deleting a team destroys its live sandboxes; the platform team cannot be deleted", async () => {
      const owner = await signup("doomed");
      const key = await createKey(owner);
      assert.equal((await call("GET", "/v1/api-keys", { apiKey: key })).status, 200);
      const live = [await liveSandbox(owner.teamId), await liveSandbox(owner.teamId)];
      // The owner's own delete still refuses while sandboxes live.
      const refused = await call("DELETE", `/v1/teams/${owner.teamId}`, { token: owner.token });
      assert.equal(refused.status, 409);
      assert.equal(refused.body.error.code, "invalid_state");
      assert.equal(refused.body.error.live_sandboxes, 2);

      const del = await call("DELETE", `/v1/admin/teams/${owner.teamId}`, { token: admin.token });
      assert.equal(del.status, 204, JSON.stringify(del.body));
      for (const id of live) assert.equal(await statusOf(id), "stopped");
      // Its key stops at once (it was cached by the request above).
      assert.equal((await call("GET", "/v1/api-keys", { apiKey: key })).status, 401);
      // Its members lose it too: the owner's session was for that team.
      assert.equal((await call("GET", "/v1/teams", { token: owner.token })).status, 401);
      const [entry] = await audit("team.delete", owner.teamId);
      assert.equal(entry?.team_id, owner.teamId);
      assert.equal(entry?.actor_id, admin.id);
      assert.deepEqual(
        [...((entry?.metadata.destroyed_sandboxes as string[] | undefined) ?? [])].sort(),
        [...live].sort(),
      );

      const twice = await call("DELETE", `/v1/admin/teams/${owner.teamId}`, { token: admin.token });
      assert.equal(twice.status, 404);
      const platform = await call("DELETE", `/v1/admin/teams/${platformTeamId}`, {
        token: admin.token,
      });
      assert.equal(platform.status, 409);
      assert.equal(platform.body.error.code, "conflict");
    });

    it("deactivation revokes keys and sessions and destroys sandboxes of solely owned teams", async () => {
      const user = await signup("leaver", true);
      // A bearer login (the CLI's kind: no session to revoke) from before the deactivation.
      const bearer = await call("POST", "/v1/auth/login", {
        body: { email: user.email, password: user.password },
      });
      assert.equal(bearer.status, 200);
      assert.equal((await call("GET", "/v1/me", { token: bearer.body.token })).status, 200);
      const key = await createKey(user);
      assert.equal((await call("GET", "/v1/api-keys", { apiKey: key })).status, 200);
      const other = await signup("co-owner");
      const otherKey = await createKey(other);
      // A team the leaver owns together with another owner: its sandboxes stay.
      await t.db.query(
        "INSERT INTO memberships (team_id, user_id, role) VALUES ($1, $2, 'owner')",
        [other.teamId, user.id],
      );
      const own = await liveSandbox(user.teamId);
      const shared = await liveSandbox(other.teamId);

      const self = await call("PUT", `/v1/admin/users/${admin.id}/active`, {
        token: admin.token,
        body: { active: false },
      });
      assert.equal(self.status, 409);
      assert.equal(self.body.error.code, "conflict");
      const selfOn = await call("PUT", `/v1/admin/users/${admin.id}/active`, {
        token: admin.token,
        body: { active: true },
      });
      assert.equal(selfOn.status, 409);
      const unknown = await call("PUT", `/v1/admin/users/usr_${"0".repeat(20)}/active`, {
        token: admin.token,
        body: { active: false },
      });
      assert.equal(unknown.status, 404);

      const off = await call("PUT", `/v1/admin/users/${user.id}/active`, {
        token: admin.token,
        body: { active: false },
      });
      assert.equal(off.status, 200, JSON.stringify(off.body));
      assert.equal(off.body.status, "disabled");
      assert.equal((await call("GET", "/v1/api-keys", { apiKey: key })).status, 401);
      assert.equal((await call("GET", "/v1/api-keys", { apiKey: otherKey })).status, 200);
      const refresh = await call("POST", "/v1/auth/refresh", { cookie: user.cookie, csrf: true });
      assert.equal(refresh.status, 401, JSON.stringify(refresh.body));
      assert.equal(refresh.body.error.code, "session_revoked");
      const [session] = await t.db.query<{ revoked_why: string }>(
        "SELECT revoked_why FROM user_sessions WHERE user_id = $1",
        [user.id],
      );
      assert.equal(session?.revoked_why, "disabled");
      assert.equal(await statusOf(own), "stopped");
      assert.equal(await statusOf(shared), "pending");
      const [entry] = await audit("user.deactivate", user.id);
      assert.equal(entry?.team_id, null);
      assert.deepEqual(entry?.metadata.destroyed_sandboxes, [own]);
      assert.equal(entry?.metadata.ended_sessions, 1);

      const on = await call("PUT", `/v1/admin/users/${user.id}/active`, {
        token: admin.token,
        body: { active: true },
      });
      assert.equal(on.status, 200);
      assert.equal(on.body.status, "active");
      // Back in, but what deactivation ended stays ended.
      const login = await call("POST", "/v1/auth/login", {
        body: { email: user.email, password: user.password },
      });
      assert.equal(login.status, 200);
      assert.equal((await call("GET", "/v1/me", { token: login.body.token })).status, 200);
      const stale = await call("GET", "/v1/me", { token: bearer.body.token });
      assert.equal(stale.status, 401, "a token from before the deactivation came back");
      assert.match(stale.body.error.message, /deactivated; log in again/);
      assert.equal((await call("GET", "/v1/api-keys", { apiKey: key })).status, 401);
      const again = await call("POST", "/v1/auth/refresh", { cookie: user.cookie, csrf: true });
      assert.equal(again.status, 401);
      assert.equal((await audit("user.activate", user.id)).length, 1);
    });

    it("lists every template and deletes only platform ones, never base", async () => {
      const owner = await signup("templates");
      const teamTpl = await insertTemplate(t.db, {
        id: newId("tpl"),
        team_id: owner.teamId,
        name: `team-tpl-${n}`,
        kind: "snapshot",
        host_id: null,
        vcpus: 1,
        memory_mb: 512,
        size_bytes: 1234,
        default_user: null,
        default_env: {},
        metadata: {},
        created_by: owner.id,
      });
      const platformTpl = await insertTemplate(t.db, {
        id: newId("tpl"),
        team_id: platformTeamId,
        name: `platform-tpl-${n}`,
        kind: "snapshot",
        host_id: null,
        vcpus: 1,
        memory_mb: 512,
        size_bytes: 99,
        default_user: null,
        default_env: {},
        metadata: {},
        created_by: admin.id,
      });
      const list = await call("GET", "/v1/admin/templates", { token: admin.token });
      assert.equal(list.status, 200);
      const byId = new Map(list.body.templates.map((x: { id: string }) => [x.id, x]));
      assert.deepEqual(byId.get(teamTpl.id), {
        id: teamTpl.id,
        name: teamTpl.name,
        kind: "snapshot",
        team_id: owner.teamId,
        team_name: "templates's team",
        is_platform: false,
        vcpus: 1,
        memory_mb: 512,
        size_bytes: 1234,
        host_id: null,
        created_at: teamTpl.created_at.toISOString(),
      });
      assert.equal((byId.get("tpl_base") as { is_platform: boolean }).is_platform, true);

      const base = await call("DELETE", "/v1/admin/templates/base", { token: admin.token });
      assert.equal(base.status, 403);
      assert.equal(base.body.error.code, "forbidden");
      const team = await call("DELETE", `/v1/admin/templates/${teamTpl.name}`, {
        token: admin.token,
      });
      assert.equal(team.status, 404);
      const inUse = await liveSandbox(owner.teamId, platformTpl.id);
      const busy = await call("DELETE", `/v1/admin/templates/${platformTpl.name}`, {
        token: admin.token,
      });
      assert.equal(busy.status, 409);
      assert.equal(busy.body.error.code, "invalid_state");
      assert.deepEqual(busy.body.error.sandbox_ids, [inUse]);
      // The team route takes an admin to the same platform delete.
      const viaTeamRoute = await call("DELETE", `/v1/templates/${platformTpl.name}`, {
        token: admin.token,
      });
      assert.equal(viaTeamRoute.status, 409, JSON.stringify(viaTeamRoute.body));
      assert.deepEqual(viaTeamRoute.body.error.sandbox_ids, [inUse]);
      await t.db.query("UPDATE sandboxes SET status = 'stopped' WHERE id = $1", [inUse]);
      const del = await call("DELETE", `/v1/admin/templates/${platformTpl.name}`, {
        token: admin.token,
      });
      assert.equal(del.status, 204, JSON.stringify(del.body));
      const after = await call("GET", "/v1/admin/templates", { token: admin.token });
      assert.ok(!after.body.templates.some((x: { id: string }) => x.id === platformTpl.id));
      assert.equal((await audit("template.delete", platformTpl.id)).length, 1);
      const bad = await call("DELETE", "/v1/admin/templates/-bad", { token: admin.token });
      assert.equal(bad.status, 400);
    });

    it("lists sandboxes of every team, filtered by team, host and status", async () => {
      const a = await signup("sbx-a");
      const b = await signup("sbx-b");
      const a1 = await liveSandbox(a.teamId);
      const a2 = await liveSandbox(a.teamId);
      const b1 = await liveSandbox(b.teamId);
      await t.db.query("UPDATE sandboxes SET status = 'error', host_id = NULL WHERE id = $1", [a2]);
      const q = async (query: string) => {
        const r = await call("GET", `/v1/admin/sandboxes?${query}`, { token: admin.token });
        assert.equal(r.status, 200, `${query}: ${JSON.stringify(r.body)}`);
        return r.body;
      };
      const ofA = await q(`team_id=${a.teamId}`);
      assert.deepEqual(
        ofA.sandboxes.map((s: { id: string }) => s.id),
        [a2, a1],
      );
      assert.equal(ofA.total, 2);
      assert.equal(ofA.sandboxes[0].team_name, "sbx-a's team");
      assert.equal(ofA.sandboxes[0].team_id, a.teamId);
      assert.equal(ofA.sandboxes[0].env_vars, undefined, "no env vars or tokens");
      assert.deepEqual(
        (await q(`team_id=${a.teamId}&status=pending`)).sandboxes.map((s: { id: string }) => s.id),
        [a1],
      );
      const onHost = await q(`host_id=${hostId}&per_page=200`);
      const ids = onHost.sandboxes.map((s: { id: string }) => s.id);
      assert.ok(ids.includes(a1) && ids.includes(b1) && !ids.includes(a2));
      const page = await q("per_page=1&page=1");
      assert.equal(page.sandboxes.length, 1);
      assert.equal(page.total_pages, page.total);
      const bad = await call("GET", "/v1/admin/sandboxes?status=sleeping", { token: admin.token });
      assert.equal(bad.status, 400);
      const missing = await call("POST", `/v1/admin/sandboxes/${"z".repeat(20)}/snapshot`, {
        token: admin.token,
        body: { name: "nothing" },
      });
      assert.equal(missing.status, 404);
      const base = await call("POST", `/v1/admin/sandboxes/${b1}/snapshot`, {
        token: admin.token,
        body: { name: "base" },
      });
      assert.equal(base.status, 403);
    });
  });
}
