/**
 * Accounts through the real HTTP app: sign-up, login, JWTs, teams and members, roles, API keys
 * and the platform-admin routes, on both database kinds.
 *
 * One file (~780 lines) because the cases walk one set of users and teams created once per
 * database kind; split it when a part needs a fixture of its own.
 */
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { SignJWT } from "jose";
import { buildApp } from "../../packages/server/src/api/app.js";
import type { AppDeps } from "../../packages/server/src/api/context.js";
import { adminRoutes } from "../../packages/server/src/api/routes/admin.js";
import { apiKeyRoutes } from "../../packages/server/src/api/routes/api-keys.js";
import { authRoutes } from "../../packages/server/src/api/routes/auth.js";
import { teamRoutes } from "../../packages/server/src/api/routes/teams.js";
import { authenticateApiKey } from "../../packages/server/src/auth/api-keys.js";
import { authenticateRequestHeaders } from "../../packages/server/src/auth/middleware.js";
import { ensurePlatformTeam, seedAllInOne } from "../../packages/server/src/bootstrap/seed.js";
import { AdminService } from "../../packages/server/src/services/admin.js";
import { SandboxService } from "../../packages/server/src/services/sandboxes.js";
import { TemplateService } from "../../packages/server/src/services/templates.js";
import { type AppFixture, openAppFixture } from "./support/app-fixture.js";
import { DB_KINDS, type TestDb } from "./support/db-fixture.js";

interface Reply {
  status: number;
  // biome-ignore lint/suspicious/noExplicitAny: test bodies are checked field by field
  body: any;
}

interface CallOptions {
  token?: string;
  apiKey?: string;
  body?: unknown;
  /** Sent as-is with a JSON content type (malformed JSON tests). */
  raw?: string;
}

interface Session {
  token: string;
  userId: string;
  teamId: string;
  email: string;
  password: string;
}

const sha256 = (s: string) => createHash("sha256").update(s).digest("hex");
let emailCounter = 0;
const uniqueEmail = (who: string) =>
  `${who}-${++emailCounter}-${randomBytes(3).toString("hex")}@example.com`;

for (const kind of DB_KINDS) {
  describe(`accounts, teams and keys (${kind})`, () => {
    let t: TestDb;
    let deps: AppDeps;
    let app: ReturnType<typeof buildApp>;
    const dirs: string[] = [];
    let fx: AppFixture;

    before(async () => {
      fx = await openAppFixture(kind);
      t = fx.t;
      deps = fx.deps;
      const platform = await ensurePlatformTeam(t.db);
      const sandboxes = new SandboxService(t.db, deps.agents, platform.id, () => {});
      const templates = new TemplateService(t.db, sandboxes, platform.id, () => {});
      const admin = new AdminService(t.db, sandboxes, templates, () => {});
      app = buildApp(deps, [authRoutes, teamRoutes, apiKeyRoutes, adminRoutes(admin, platform.id)]);
    });

    after(async () => {
      await fx?.close();
      for (const d of dirs) rmSync(d, { recursive: true, force: true });
    });

    async function call(method: string, url: string, opts: CallOptions = {}): Promise<Reply> {
      const headers = new Headers();
      if (opts.token) headers.set("authorization", `Bearer ${opts.token}`);
      if (opts.apiKey) headers.set("x-api-key", opts.apiKey);
      let body: string | undefined;
      if (opts.raw !== undefined || opts.body !== undefined) {
        headers.set("content-type", "application/json");
        body = opts.raw ?? JSON.stringify(opts.body);
      }
      const res = await app.request(url, { method, headers, body });
      const text = await res.text();
      return { status: res.status, body: text ? JSON.parse(text) : undefined };
    }

    async function signup(who: string): Promise<Session> {
      const email = uniqueEmail(who);
      const password = `pw-${randomBytes(6).toString("hex")}`;
      const r = await call("POST", "/v1/auth/signup", { body: { email, password, name: who } });
      assert.equal(r.status, 201, JSON.stringify(r.body));
      return {
        token: r.body.token,
        userId: r.body.user.id,
        teamId: r.body.team.id,
        email,
        password,
      };
    }

    async function createKey(s: { token?: string; apiKey?: string }, name = "k") {
      const r = await call("POST", "/v1/api-keys", { ...s, body: { name } });
      assert.equal(r.status, 201, JSON.stringify(r.body));
      return r.body as { id: string; key: string; key_prefix: string; name: string };
    }

    const auditActions = async (teamId: string | null) =>
      (
        await t.db.query<{ action: string; resource_id: string | null }>(
          "SELECT action, resource_id FROM audit_events WHERE team_id IS NOT DISTINCT FROM $1",
          [teamId],
        )
      ).map((e) => `${e.action}:${e.resource_id}`);

    it("signs up with a normalised e-mail, an argon2id hash and an owned default team", async () => {
      const email = uniqueEmail("ada");
      const r = await call("POST", "/v1/auth/signup", {
        body: { email: `  ${email.toUpperCase()} `, password: "correct horse", name: " Ada " },
      });
      assert.equal(r.status, 201, JSON.stringify(r.body));
      assert.equal(r.body.user.email, email);
      assert.equal(r.body.user.name, "Ada");
      assert.equal(r.body.user.is_admin, false);
      assert.equal(r.body.team.role, "owner");
      assert.match(r.body.team.slug, /^ada-s-team-[a-z0-9]{6}$/);
      assert.equal(typeof r.body.token, "string");
      const [row] = await t.db.query<{ password_hash: string }>(
        "SELECT password_hash FROM users WHERE id = $1",
        [r.body.user.id],
      );
      assert.match(row?.password_hash ?? "", /^\$argon2id\$/);

      const me = await call("GET", "/v1/me", { token: r.body.token });
      assert.equal(me.status, 200);
      assert.equal(me.body.user.id, r.body.user.id);
      assert.equal(me.body.team.id, r.body.team.id);

      const again = await call("POST", "/v1/auth/signup", {
        body: { email: email.replace("ada", "ADA"), password: "another password", name: "Eve" },
      });
      assert.equal(again.status, 409);
      assert.equal(again.body.error.code, "email_taken");
    });

    it("logs in; a wrong password and an unknown e-mail get the same 401", async () => {
      const s = await signup("login");
      const ok = await call("POST", "/v1/auth/login", {
        body: { email: s.email.toUpperCase(), password: s.password },
      });
      assert.equal(ok.status, 200, JSON.stringify(ok.body));
      assert.equal(ok.body.user.id, s.userId);
      assert.equal(ok.body.team.id, s.teamId);
      assert.equal((await call("GET", "/v1/me", { token: ok.body.token })).status, 200);

      const wrong = await call("POST", "/v1/auth/login", {
        body: { email: s.email, password: `${s.password}x` },
      });
      const unknown = await call("POST", "/v1/auth/login", {
        body: { email: uniqueEmail("nobody"), password: s.password },
      });
      assert.equal(wrong.status, 401);
      assert.equal(unknown.status, 401);
      assert.equal(wrong.body.error.code, "unauthorized");
      assert.deepEqual(wrong.body, unknown.body);
    });

    it("rejects missing, forged and non-user tokens (typ confusion)", async () => {
      const s = await signup("typ");
      assert.equal((await call("GET", "/v1/me")).status, 401);
      assert.equal((await call("GET", "/v1/me", { token: "not.a.jwt" })).status, 401);
      const claims = { team_id: s.teamId, role: "owner" };
      const sign = (payload: Record<string, unknown>, secret: Uint8Array) =>
        new SignJWT(payload)
          .setProtectedHeader({ alg: "HS256" })
          .setSubject(s.userId)
          .setIssuedAt()
          .setExpirationTime("1h")
          .sign(secret);
      const secret = deps.config.jwtSecret;
      // The control check: the same claims with typ "user" are accepted.
      const good = await sign({ ...claims, typ: "user" }, secret);
      assert.equal((await call("GET", "/v1/me", { token: good })).status, 200);
      for (const token of [
        await sign({ ...claims, typ: "host" }, secret),
        await sign(claims, secret),
        await sign({ ...claims, typ: "user" }, randomBytes(32)),
      ]) {
        const r = await call("GET", "/v1/me", { token });
        assert.equal(r.status, 401, JSON.stringify(r.body));
        assert.equal(r.body.error.code, "unauthorized");
      }
      const expired = await new SignJWT({ ...claims, typ: "user" })
        .setProtectedHeader({ alg: "HS256" })
        .setSubject(s.userId)
        .setExpirationTime(Math.floor(Date.now() / 1000) - 60)
        .sign(secret);
      assert.equal((await call("GET", "/v1/me", { token: expired })).status, 401);
    });

    it("API keys: created once, used, listed with last use, both spellings, revoked", async () => {
      const s = await signup("keys");
      const created = await createKey({ token: s.token }, "ci");
      assert.match(created.key, /^nbx_[0-9a-f]{40}$/);
      assert.equal(created.key_prefix, created.key.slice(4, 12));
      assert.match(created.id, /^key_[a-z0-9]{20}$/);
      const hex = created.key.slice(4);
      const [stored] = await t.db.query<Record<string, unknown>>(
        "SELECT * FROM api_keys WHERE id = $1",
        [created.id],
      );
      assert.equal(stored?.key_hash, sha256(hex));
      assert.ok(!JSON.stringify(stored).includes(hex), "the secret is not stored");

      const listed = await call("GET", "/v1/api-keys", { apiKey: created.key });
      assert.equal(listed.status, 200, JSON.stringify(listed.body));
      const entry = listed.body.find((k: { id: string }) => k.id === created.id);
      assert.ok(entry);
      assert.equal(entry.name, "ci");
      assert.equal(entry.key, undefined);
      assert.equal(entry.created_by, s.userId);
      assert.ok(entry.last_used_at, "last_used_at is set by the use");
      assert.ok(!JSON.stringify(listed.body).includes(hex));

      // The E2B spelling of the same secret is the same key.
      const e2b = await call("GET", "/v1/api-keys", { apiKey: `e2b_${hex}` });
      assert.equal(e2b.status, 200);
      assert.deepEqual(await authenticateApiKey(t.db, `e2b_${hex}`), {
        keyId: created.id,
        keyName: "ci",
        teamId: s.teamId,
        createdBy: s.userId,
      });
      assert.equal(await authenticateApiKey(t.db, `nbx_${hex.toUpperCase()}`), undefined);
      assert.equal(await authenticateApiKey(t.db, `nbx_${"0".repeat(40)}`), undefined);

      // A key may create and revoke keys of its team.
      const second = await createKey({ apiKey: created.key }, "made by a key");
      const del = await call("DELETE", `/v1/api-keys/${second.id}`, { apiKey: created.key });
      assert.equal(del.status, 204);
      assert.equal((await call("GET", "/v1/api-keys", { apiKey: second.key })).status, 401);

      const revoke = await call("DELETE", `/v1/api-keys/${created.id}`, { token: s.token });
      assert.equal(revoke.status, 204);
      const after = await call("GET", "/v1/api-keys", { apiKey: created.key });
      assert.equal(after.status, 401);
      assert.equal(after.body.error.code, "unauthorized");
      assert.equal((await call("GET", "/v1/api-keys", { apiKey: `e2b_${hex}` })).status, 401);
      assert.equal(
        (await call("DELETE", `/v1/api-keys/${created.id}`, { token: s.token })).status,
        404,
      );
      const list = await call("GET", "/v1/api-keys", { token: s.token });
      assert.deepEqual(list.body, []);

      const actions = await auditActions(s.teamId);
      for (const a of [
        `api_key.create:${created.id}`,
        `api_key.create:${second.id}`,
        `api_key.revoke:${second.id}`,
        `api_key.revoke:${created.id}`,
      ]) {
        assert.ok(actions.includes(a), `audit has ${a}: ${actions.join(", ")}`);
      }
    });

    it("records a key's use at most once a minute", async () => {
      const s = await signup("touch");
      const k = await createKey({ token: s.token });
      const lastUsed = async () =>
        (
          await t.db.query<{ last_used_at: Date | null }>(
            "SELECT last_used_at FROM api_keys WHERE id = $1",
            [k.id],
          )
        )[0]?.last_used_at;
      assert.equal(await lastUsed(), null);
      await t.db.query(
        "UPDATE api_keys SET last_used_at = now() - interval '2 minutes' WHERE id = $1",
        [k.id],
      );
      assert.ok(await authenticateApiKey(t.db, k.key));
      const first = await lastUsed();
      assert.ok(first && Date.now() - first.getTime() < 30_000, `refreshed: ${first}`);
      await t.db.query(
        "UPDATE api_keys SET last_used_at = now() - interval '30 seconds' WHERE id = $1",
        [k.id],
      );
      const recent = await lastUsed();
      assert.ok(await authenticateApiKey(t.db, k.key));
      assert.equal((await lastUsed())?.getTime(), recent?.getTime());
    });

    it("route kinds: team routes take sessions only, /api-keys takes both, nothing takes none", async () => {
      const s = await signup("kinds");
      const k = await createKey({ token: s.token });
      assert.equal((await call("GET", "/v1/api-keys")).status, 401);
      assert.equal((await call("GET", "/v1/teams", { apiKey: k.key })).status, 401);
      assert.equal((await call("GET", `/v1/teams/${s.teamId}`, { apiKey: k.key })).status, 401);
      assert.equal((await call("GET", "/v1/me", { apiKey: k.key })).status, 401);
      assert.equal((await call("GET", "/v1/teams", { token: s.token })).status, 200);
      assert.equal((await call("GET", "/v1/api-keys", { apiKey: "nbx_short" })).status, 401);

      const viaHeaders = await authenticateRequestHeaders(
        deps,
        new Headers({ "x-api-key": k.key }),
      );
      assert.equal(viaHeaders.kind, "api_key");
      assert.equal(viaHeaders.teamId, s.teamId);
      const viaBearer = await authenticateRequestHeaders(
        deps,
        new Headers({ authorization: `Bearer ${s.token}` }),
      );
      assert.equal(viaBearer.kind, "user");
      await assert.rejects(authenticateRequestHeaders(deps, new Headers()), /missing credentials/);
    });

    it("team isolation: another team's keys and teams are not found", async () => {
      const a = await signup("alice");
      const b = await signup("bob");
      const ka = await createKey({ token: a.token }, "alice key");
      const kb = await createKey({ token: b.token }, "bob key");

      const bList = await call("GET", "/v1/api-keys", { apiKey: kb.key });
      assert.deepEqual(
        bList.body.map((k: { id: string }) => k.id),
        [kb.id],
      );
      const steal = await call("DELETE", `/v1/api-keys/${ka.id}`, { apiKey: kb.key });
      assert.equal(steal.status, 404);
      assert.equal(steal.body.error.code, "not_found");
      assert.equal((await call("DELETE", `/v1/api-keys/${ka.id}`, { token: b.token })).status, 404);
      assert.equal((await call("GET", "/v1/api-keys", { apiKey: ka.key })).status, 200);

      for (const [method, url, body] of [
        ["GET", `/v1/teams/${a.teamId}`, undefined],
        ["PATCH", `/v1/teams/${a.teamId}`, { name: "mine now" }],
        ["POST", `/v1/teams/${a.teamId}/members`, { email: b.email }],
        ["DELETE", `/v1/teams/${a.teamId}/members/${a.userId}`, undefined],
      ] as const) {
        const r = await call(method, url, { token: b.token, body });
        assert.equal(r.status, 404, `${method} ${url}: ${JSON.stringify(r.body)}`);
      }
      const switched = await call("POST", "/v1/auth/switch-team", {
        token: b.token,
        body: { team_id: a.teamId },
      });
      assert.equal(switched.status, 404);
      const teams = await call("GET", "/v1/teams", { token: b.token });
      assert.deepEqual(
        teams.body.map((x: { id: string }) => x.id),
        [b.teamId],
      );
    });

    it("members: invite, roles, removal rules, leaving, and sessions of removed members", async () => {
      const owner = await signup("owner");
      const bob = await signup("bob");
      const carol = await signup("carol");
      const team = owner.teamId;
      const members = `/v1/teams/${team}/members`;

      const added = await call("POST", members, { token: owner.token, body: { email: bob.email } });
      assert.equal(added.status, 201, JSON.stringify(added.body));
      assert.equal(added.body.role, "member");
      assert.equal(added.body.user_id, bob.userId);
      const dup = await call("POST", members, { token: owner.token, body: { email: bob.email } });
      assert.equal(dup.status, 409);
      const nobody = await call("POST", members, {
        token: owner.token,
        body: { email: uniqueEmail("nobody") },
      });
      assert.equal(nobody.status, 404);

      // Bob works in the owner's team through switch-team.
      const sw = await call("POST", "/v1/auth/switch-team", {
        token: bob.token,
        body: { team_id: team },
      });
      assert.equal(sw.status, 200, JSON.stringify(sw.body));
      assert.equal(sw.body.team.id, team);
      assert.equal(sw.body.team.role, "member");
      const bobInTeam = sw.body.token as string;
      assert.equal((await call("GET", "/v1/me", { token: bobInTeam })).body.team.id, team);

      // A member cannot manage; the check reads the role of the team in the path.
      const asMember = await call("POST", members, {
        token: bob.token,
        body: { email: carol.email },
      });
      assert.equal(asMember.status, 403);
      assert.equal(asMember.body.error.code, "forbidden");
      assert.equal(
        (await call("PATCH", `/v1/teams/${team}`, { token: bob.token, body: { name: "x" } }))
          .status,
        403,
      );

      const promote = await call("PATCH", `${members}/${bob.userId}`, {
        token: owner.token,
        body: { role: "admin" },
      });
      assert.equal(promote.status, 200);
      assert.equal(promote.body.role, "admin");
      const asAdmin = await call("POST", members, {
        token: bob.token,
        body: { email: carol.email, role: "member" },
      });
      assert.equal(asAdmin.status, 201);
      const rename = await call("PATCH", `/v1/teams/${team}`, {
        token: bob.token,
        body: { name: "Renamed" },
      });
      assert.equal(rename.status, 200);
      assert.equal(rename.body.name, "Renamed");
      assert.equal(rename.body.role, "admin");

      // Nobody may touch the owner.
      const demoteOwner = await call("PATCH", `${members}/${owner.userId}`, {
        token: bob.token,
        body: { role: "member" },
      });
      assert.equal(demoteOwner.status, 403);
      assert.equal(
        (
          await call("PATCH", `${members}/${owner.userId}`, {
            token: owner.token,
            body: { role: "owner" },
          })
        ).status,
        400,
      );
      assert.equal(
        (await call("DELETE", `${members}/${owner.userId}`, { token: bob.token })).status,
        403,
      );
      assert.equal(
        (await call("DELETE", `${members}/${owner.userId}`, { token: owner.token })).status,
        403,
      );

      // Carol (member) cannot remove Bob, but can leave.
      assert.equal(
        (await call("DELETE", `${members}/${bob.userId}`, { token: carol.token })).status,
        403,
      );
      assert.equal(
        (await call("DELETE", `${members}/${carol.userId}`, { token: carol.token })).status,
        204,
      );
      assert.equal((await call("GET", `/v1/teams/${team}`, { token: carol.token })).status, 404);

      const detail = await call("GET", `/v1/teams/${team}`, { token: owner.token });
      assert.equal(detail.status, 200);
      assert.deepEqual(
        detail.body.members.map((m: { user_id: string; role: string }) => [m.user_id, m.role]),
        [
          [owner.userId, "owner"],
          [bob.userId, "admin"],
        ],
      );

      // Removing Bob ends his session in that team at once; his own team still works.
      assert.equal(
        (await call("DELETE", `${members}/${bob.userId}`, { token: owner.token })).status,
        204,
      );
      const gone = await call("GET", "/v1/me", { token: bobInTeam });
      assert.equal(gone.status, 401);
      assert.equal((await call("GET", "/v1/me", { token: bob.token })).status, 200);
      assert.equal(
        (await call("DELETE", `${members}/${bob.userId}`, { token: owner.token })).status,
        404,
      );

      const actions = await auditActions(team);
      for (const a of [
        `member.add:${bob.userId}`,
        `member.role_change:${bob.userId}`,
        `member.add:${carol.userId}`,
        `member.leave:${carol.userId}`,
        `member.remove:${bob.userId}`,
      ]) {
        assert.ok(actions.includes(a), `audit has ${a}: ${actions.join(", ")}`);
      }
    });

    it("teams: create, list with roles, switch", async () => {
      const s = await signup("teams");
      const created = await call("POST", "/v1/teams", { token: s.token, body: { name: "Lab 42" } });
      assert.equal(created.status, 201);
      assert.equal(created.body.role, "owner");
      assert.match(created.body.slug, /^lab-42-[a-z0-9]{6}$/);
      const list = await call("GET", "/v1/teams", { token: s.token });
      assert.deepEqual(
        list.body.map((x: { id: string; role: string }) => [x.id, x.role]),
        [
          [s.teamId, "owner"],
          [created.body.id, "owner"],
        ],
      );
      const sw = await call("POST", "/v1/auth/switch-team", {
        token: s.token,
        body: { team_id: created.body.id },
      });
      assert.equal(sw.status, 200);
      const key = await createKey({ token: sw.body.token });
      assert.equal((await authenticateApiKey(t.db, key.key))?.teamId, created.body.id);
      // Log-in lands in the default team again.
      const login = await call("POST", "/v1/auth/login", {
        body: { email: s.email, password: s.password },
      });
      assert.equal(login.body.team.id, s.teamId);
    });

    it("admin routes follow the database flag, and disabled accounts are shut out", async () => {
      const admin = await signup("admin");
      const user = await signup("user");
      const userKey = await createKey({ token: user.token });
      const denied = await call("GET", "/v1/admin/users", { token: admin.token });
      assert.equal(denied.status, 403);
      assert.equal(denied.body.error.code, "forbidden");
      assert.equal((await call("GET", "/v1/admin/users")).status, 401);

      // The same token becomes an admin's once the database says so.
      await t.db.query("UPDATE users SET is_admin = true WHERE id = $1", [admin.userId]);
      const users = await call("GET", "/v1/admin/users", { token: admin.token });
      assert.equal(users.status, 200);
      assert.equal(users.body.page, 1);
      const ids = users.body.users.map((u: { id: string }) => u.id);
      assert.ok(ids.includes(admin.userId) && ids.includes(user.userId));
      assert.ok(!JSON.stringify(users.body).includes("argon2"), "no password hashes");
      // An API key is never an admin credential.
      const adminKey = await createKey({ token: admin.token });
      assert.equal((await call("GET", "/v1/admin/users", { apiKey: adminKey.key })).status, 401);

      const disable = await call("PATCH", `/v1/admin/users/${user.userId}`, {
        token: admin.token,
        body: { status: "disabled" },
      });
      assert.equal(disable.status, 200, JSON.stringify(disable.body));
      assert.equal(disable.body.status, "disabled");
      const shut = await call("GET", "/v1/me", { token: user.token });
      assert.equal(shut.status, 403);
      assert.equal(shut.body.error.code, "forbidden");
      const login = await call("POST", "/v1/auth/login", {
        body: { email: user.email, password: user.password },
      });
      assert.equal(login.status, 403);
      assert.equal((await call("GET", "/v1/api-keys", { apiKey: userKey.key })).status, 401);

      const enable = await call("PATCH", `/v1/admin/users/${user.userId}`, {
        token: admin.token,
        body: { status: "active", is_admin: true },
      });
      assert.equal(enable.status, 200);
      assert.equal(enable.body.is_admin, true);
      assert.equal((await call("GET", "/v1/me", { token: user.token })).status, 200);
      assert.equal((await call("GET", "/v1/api-keys", { apiKey: userKey.key })).status, 200);

      const self = await call("PATCH", `/v1/admin/users/${admin.userId}`, {
        token: admin.token,
        body: { is_admin: false },
      });
      assert.equal(self.status, 409);
      assert.equal(
        (
          await call("PATCH", `/v1/admin/users/usr_${"0".repeat(20)}`, {
            token: admin.token,
            body: { status: "disabled" },
          })
        ).status,
        404,
      );
      const empty = await call("PATCH", `/v1/admin/users/${user.userId}`, {
        token: admin.token,
        body: {},
      });
      assert.equal(empty.status, 400);

      await t.db.query("UPDATE users SET is_admin = false WHERE id = $1", [admin.userId]);
      assert.equal((await call("GET", "/v1/admin/users", { token: admin.token })).status, 403);

      const actions = await auditActions(null);
      assert.ok(actions.includes(`user.status_change:${user.userId}`), actions.join(", "));
      assert.ok(actions.includes(`user.admin_change:${user.userId}`), actions.join(", "));
    });

    it("bad input is a 400 naming the field, never a 500", async () => {
      const s = await signup("input");
      const malformed = await call("POST", "/v1/auth/signup", { raw: '{"email": ' });
      assert.equal(malformed.status, 400);
      assert.equal(malformed.body.error.code, "invalid_request");

      const cases: [string, string, unknown, string, string?][] = [
        ["POST", "/v1/auth/signup", { email: 5, password: "password1", name: "x" }, "email"],
        [
          "POST",
          "/v1/auth/signup",
          { email: "no-at-sign", password: "password1", name: "x" },
          "email",
        ],
        [
          "POST",
          "/v1/auth/signup",
          { email: uniqueEmail("x"), password: "short", name: "x" },
          "password",
        ],
        [
          "POST",
          "/v1/auth/signup",
          { email: uniqueEmail("x"), password: "p".repeat(257), name: "x" },
          "password",
        ],
        [
          "POST",
          "/v1/auth/signup",
          { email: uniqueEmail("x"), password: "password1", name: "n".repeat(101) },
          "name",
        ],
        [
          "POST",
          "/v1/auth/signup",
          { email: uniqueEmail("x"), password: "password1", name: "  " },
          "name",
        ],
        [
          "POST",
          "/v1/auth/signup",
          { email: `${"e".repeat(250)}@x.io`, password: "password1", name: "x" },
          "email",
        ],
        ["POST", "/v1/auth/login", { email: s.email }, "password"],
        ["POST", "/v1/auth/switch-team", { team_id: "nope" }, "team_id", s.token],
        ["POST", "/v1/teams", { name: "t".repeat(101) }, "name", s.token],
        ["POST", "/v1/teams", { name: ["a"] }, "name", s.token],
        ["POST", "/v1/api-keys", { name: "k".repeat(101) }, "name", s.token],
        ["POST", "/v1/api-keys", {}, "name", s.token],
        [
          "POST",
          `/v1/teams/${s.teamId}/members`,
          { email: "x@y.z", role: "owner" },
          "role",
          s.token,
        ],
        ["GET", "/v1/teams/not-a-team", undefined, "id", s.token],
        ["DELETE", "/v1/api-keys/key_..", undefined, "id", s.token],
      ];
      for (const [method, url, body, field, token] of cases) {
        const r = await call(method, url, { body, token });
        assert.equal(r.status, 400, `${method} ${url} ${JSON.stringify(body)?.slice(0, 80)}`);
        assert.equal(r.body.error.code, "invalid_request");
        assert.equal(r.body.error.field, field, JSON.stringify(r.body));
      }
      // No JSON content type at all is a 400 too, not a crash on an empty body.
      const plain = await app.request("/v1/auth/login", { method: "POST", body: "email=x" });
      assert.equal(plain.status, 400);
    });

    it("OpenAPI lists the account routes", async () => {
      const res = await app.request("/openapi.json");
      const doc = (await res.json()) as { paths: Record<string, unknown> };
      for (const p of [
        "/v1/auth/signup",
        "/v1/auth/login",
        "/v1/auth/switch-team",
        "/v1/me",
        "/v1/teams",
        "/v1/teams/{id}",
        "/v1/teams/{id}/members",
        "/v1/teams/{id}/members/{user_id}",
        "/v1/api-keys",
        "/v1/api-keys/{id}",
        "/v1/admin/users",
        "/v1/admin/users/{id}",
      ]) {
        assert.ok(doc.paths[p], `${p} in /openapi.json`);
      }
    });

    it("seedAllInOne creates the admin, platform team and key once, and reuses them", async () => {
      const dataDir = mkdtempSync(path.join(tmpdir(), "nestbox-seed-"));
      dirs.push(dataDir);
      const platform = await ensurePlatformTeam(t.db);
      assert.deepEqual(await ensurePlatformTeam(t.db), platform);

      const first = await seedAllInOne(t.db, { dataDir });
      assert.equal(first.platformTeamId, platform.id);
      assert.match(first.apiKey ?? "", /^nbx_[0-9a-f]{40}$/);
      assert.equal(first.apiKeyFile, path.join(dataDir, "admin-api-key"));
      assert.equal(readFileSync(first.apiKeyFile, "utf8").trim(), first.apiKey);
      assert.equal(statSync(first.apiKeyFile).mode & 0o777, 0o600);
      const passwordFile = path.join(dataDir, "admin-password");
      assert.equal(statSync(passwordFile).mode & 0o777, 0o600);
      const password = readFileSync(passwordFile, "utf8").trim();

      const login = await call("POST", "/v1/auth/login", {
        body: { email: "admin@localhost", password },
      });
      assert.equal(login.status, 200, JSON.stringify(login.body));
      assert.equal(login.body.user.id, first.adminUserId);
      assert.equal(login.body.user.is_admin, true);
      assert.equal(login.body.team.id, platform.id);
      assert.equal(login.body.team.role, "owner");
      assert.equal(login.body.team.is_platform, true);
      assert.equal((await call("GET", "/v1/admin/users", { token: login.body.token })).status, 200);
      const keys = await call("GET", "/v1/api-keys", { apiKey: first.apiKey });
      assert.equal(keys.status, 200);
      assert.equal(keys.body.length, 1);

      const second = await seedAllInOne(t.db, { dataDir });
      assert.deepEqual(second, { ...first, apiKey: undefined });
      assert.equal(readFileSync(first.apiKeyFile, "utf8").trim(), first.apiKey);
      assert.equal(readFileSync(passwordFile, "utf8").trim(), password);
      const count = await t.db.query<{ n: number }>(
        "SELECT count(*)::int AS n FROM api_keys WHERE team_id = $1",
        [platform.id],
      );
      assert.equal(count[0]?.n, 1);

      // A revoked key is replaced, and the file rewritten.
      const keyId = keys.body[0].id as string;
      assert.equal(
        (await call("DELETE", `/v1/api-keys/${keyId}`, { apiKey: first.apiKey })).status,
        204,
      );
      const third = await seedAllInOne(t.db, { dataDir });
      assert.match(third.apiKey ?? "", /^nbx_[0-9a-f]{40}$/);
      assert.notEqual(third.apiKey, first.apiKey);
      assert.equal(readFileSync(first.apiKeyFile, "utf8").trim(), third.apiKey);
      assert.equal(third.adminUserId, first.adminUserId);
    });

    it("seedAllInOne honours NESTBOX_ADMIN_API_KEY and validates it", async () => {
      const dataDir = mkdtempSync(path.join(tmpdir(), "nestbox-seed-given-"));
      dirs.push(dataDir);
      const given = `nbx_${randomBytes(20).toString("hex")}`;
      await assert.rejects(
        seedAllInOne(t.db, { dataDir, adminApiKey: "nbx_tooshort", adminEmail: "root@box" }),
        /NESTBOX_ADMIN_API_KEY must be/,
      );
      const first = await seedAllInOne(t.db, {
        dataDir,
        adminApiKey: given,
        adminEmail: "Root@Box",
      });
      assert.equal(first.apiKey, given);
      assert.equal(readFileSync(first.apiKeyFile, "utf8").trim(), given);
      const who = await authenticateApiKey(t.db, given);
      assert.equal(who?.teamId, first.platformTeamId);
      assert.equal(who?.createdBy, first.adminUserId);
      const again = await seedAllInOne(t.db, {
        dataDir,
        adminApiKey: given,
        adminEmail: "root@box",
      });
      assert.equal(again.apiKey, undefined);
      assert.equal(again.adminUserId, first.adminUserId);
      // Someone else's key cannot be claimed as the admin key.
      const s = await signup("claim");
      const theirs = await createKey({ token: s.token });
      await assert.rejects(
        seedAllInOne(t.db, { dataDir, adminApiKey: theirs.key, adminEmail: "root@box" }),
        /another team/,
      );
    });
  });
}
