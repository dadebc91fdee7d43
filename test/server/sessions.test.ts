/**
 * Cookie sessions through the real HTTP app on both database kinds: login with the CSRF header
 * sets an HttpOnly refresh cookie and a 10-minute access token; refresh rotates the cookie;
 * a rotated cookie presented again revokes the whole family (and its access tokens); logout
 * revokes; foreign origins and requests without the header are refused; bearer logins are
 * unchanged; /v1/me can be renamed and the password changed (other sessions signed out).
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, describe, it } from "node:test";
import { decodeJwt } from "jose";
import { buildApp } from "../../packages/server/src/api/app.js";
import { apiKeyRoutes } from "../../packages/server/src/api/routes/api-keys.js";
import { authRoutes } from "../../packages/server/src/api/routes/auth.js";
import { authSessionRoutes } from "../../packages/server/src/api/routes/auth-session.js";
import { teamRoutes } from "../../packages/server/src/api/routes/teams.js";
import { insertPendingHost } from "../../packages/server/src/db/queries/hosts.js";
import {
  insertPendingSandbox,
  transitionSandbox,
} from "../../packages/server/src/db/queries/sandboxes.js";
import { newId, newSandboxId } from "../../packages/server/src/ids.js";
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
  body?: unknown;
  token?: string;
  cookie?: string;
  csrf?: boolean;
  origin?: string;
}

for (const kind of DB_KINDS) {
  describe(`cookie sessions (${kind})`, () => {
    let fx: AppFixture;
    let t: TestDb;
    let app: ReturnType<typeof buildApp>;

    before(async () => {
      fx = await openAppFixture(kind, ORIGIN);
      t = fx.t;
      app = buildApp(fx.deps, [authRoutes, authSessionRoutes, teamRoutes, apiKeyRoutes]);
    });
    after(async () => {
      await fx?.close();
    });

    async function call(method: string, url: string, o: Opts = {}): Promise<Reply> {
      const headers = new Headers({ host: "127.0.0.1:3000" });
      if (o.token) headers.set("authorization", `Bearer ${o.token}`);
      if (o.cookie) headers.set("cookie", o.cookie);
      if (o.csrf) headers.set("x-nestbox-csrf", "1");
      if (o.origin) headers.set("origin", o.origin);
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

    /** `nbx_refresh=<value>` from a Set-Cookie header, checked for its attributes. */
    function refreshCookie(setCookie: string | null): string {
      assert.ok(setCookie, "a Set-Cookie header");
      const m = /^nbx_refresh=([0-9a-f]{64});/.exec(setCookie);
      assert.ok(m, setCookie);
      assert.match(setCookie, /HttpOnly/);
      assert.match(setCookie, /SameSite=Strict/);
      assert.match(setCookie, /Path=\/v1\/auth/);
      return `nbx_refresh=${m[1]}`;
    }

    const password = "correct horse battery";
    let n = 0;
    async function signupSession() {
      const email = `s${++n}-${randomBytes(3).toString("hex")}@example.com`;
      const r = await call("POST", "/v1/auth/signup", {
        body: { email, password, name: "Sam" },
        csrf: true,
        origin: ORIGIN,
      });
      assert.equal(r.status, 201, JSON.stringify(r.body));
      return {
        email,
        token: r.body.token as string,
        cookie: refreshCookie(r.setCookie),
        body: r.body,
      };
    }

    it("a login with the CSRF header starts a cookie session with a 10-minute access token", async () => {
      const s = await signupSession();
      const claims = decodeJwt(s.token);
      assert.match(String(claims.sid), /^sess_[a-z0-9]{20}$/);
      const ttl = Number(claims.exp) - Number(claims.iat);
      assert.ok(ttl > 0 && ttl <= 600, `ttl ${ttl}`);
      assert.equal(Date.parse(s.body.expires_at), Number(claims.exp) * 1000);
      assert.equal((await call("GET", "/v1/me", { token: s.token })).status, 200);

      const again = await call("POST", "/v1/auth/login", {
        body: { email: s.email, password },
        csrf: true,
      });
      assert.equal(again.status, 200);
      refreshCookie(again.setCookie);
    });

    it("a login without the header is a 12-hour bearer token and sets no cookie", async () => {
      const s = await signupSession();
      const r = await call("POST", "/v1/auth/login", { body: { email: s.email, password } });
      assert.equal(r.status, 200);
      assert.equal(r.setCookie, null);
      const claims = decodeJwt(r.body.token);
      assert.equal(claims.sid, undefined);
      assert.equal(Number(claims.exp) - Number(claims.iat), 12 * 3600);
    });

    it("refresh rotates the cookie; replaying a rotated one revokes the whole family", async () => {
      const s = await signupSession();
      const r1 = await call("POST", "/v1/auth/refresh", {
        cookie: s.cookie,
        csrf: true,
        origin: ORIGIN,
      });
      assert.equal(r1.status, 200, JSON.stringify(r1.body));
      const c1 = refreshCookie(r1.setCookie);
      assert.notEqual(c1, s.cookie);
      assert.equal(decodeJwt(r1.body.token).sid, decodeJwt(s.token).sid);
      assert.equal(r1.body.user.email, s.email);

      // The first cookie again: reuse. The family ends, with its newest cookie and tokens.
      const reuse = await call("POST", "/v1/auth/refresh", { cookie: s.cookie, csrf: true });
      assert.equal(reuse.status, 401);
      assert.equal(reuse.body.error.code, "session_revoked");
      assert.match(reuse.body.error.message, /used twice/);
      assert.match(reuse.setCookie ?? "", /nbx_refresh=;/);
      const later = await call("POST", "/v1/auth/refresh", { cookie: c1, csrf: true });
      assert.equal(later.status, 401);
      const me = await call("GET", "/v1/me", { token: r1.body.token });
      assert.equal(me.status, 401);
      assert.equal(me.body.error.code, "session_revoked");
    });

    it("refresh and logout need the CSRF header and our origin", async () => {
      const s = await signupSession();
      const noHeader = await call("POST", "/v1/auth/refresh", { cookie: s.cookie });
      assert.equal(noHeader.status, 403);
      assert.equal(noHeader.body.error.code, "csrf");
      const foreign = await call("POST", "/v1/auth/refresh", {
        cookie: s.cookie,
        csrf: true,
        origin: "http://evil.example",
      });
      assert.equal(foreign.status, 403);
      assert.equal(foreign.body.error.code, "csrf");
      const loginForeign = await call("POST", "/v1/auth/login", {
        body: { email: s.email, password },
        csrf: true,
        origin: "http://evil.example",
      });
      assert.equal(loginForeign.status, 403);
      const noCookie = await call("POST", "/v1/auth/refresh", { csrf: true });
      assert.equal(noCookie.status, 401);
      // None of that spent the cookie.
      assert.equal(
        (await call("POST", "/v1/auth/refresh", { cookie: s.cookie, csrf: true })).status,
        200,
      );
    });

    it("logout revokes the session and its access tokens and clears the cookie", async () => {
      const s = await signupSession();
      const noHeader = await call("POST", "/v1/auth/logout", { cookie: s.cookie });
      assert.equal(noHeader.status, 403);
      const out = await call("POST", "/v1/auth/logout", { cookie: s.cookie, csrf: true });
      assert.equal(out.status, 204);
      assert.match(out.setCookie ?? "", /nbx_refresh=;/);
      assert.equal(
        (await call("POST", "/v1/auth/refresh", { cookie: s.cookie, csrf: true })).status,
        401,
      );
      assert.equal((await call("GET", "/v1/me", { token: s.token })).status, 401);
      assert.equal((await call("POST", "/v1/auth/logout", { csrf: true })).status, 204);
    });

    it("switch-team moves the session: the next refresh is for the new team", async () => {
      const s = await signupSession();
      const team = await call("POST", "/v1/teams", { token: s.token, body: { name: "Second" } });
      assert.equal(team.status, 201, JSON.stringify(team.body));
      const sw = await call("POST", "/v1/auth/switch-team", {
        token: s.token,
        body: { team_id: team.body.id },
      });
      assert.equal(sw.status, 200);
      assert.equal(decodeJwt(sw.body.token).sid, decodeJwt(s.token).sid);
      const r = await call("POST", "/v1/auth/refresh", { cookie: s.cookie, csrf: true });
      assert.equal(r.status, 200);
      assert.equal(r.body.team.id, team.body.id);
    });

    it("renames the user and changes the password, signing out the other sessions", async () => {
      const s = await signupSession();
      const other = await call("POST", "/v1/auth/login", {
        body: { email: s.email, password },
        csrf: true,
      });
      const otherCookie = refreshCookie(other.setCookie);

      const bad = await call("PATCH", "/v1/me", { token: s.token, body: { name: "  " } });
      assert.equal(bad.status, 400);
      const renamed = await call("PATCH", "/v1/me", { token: s.token, body: { name: "Samira" } });
      assert.equal(renamed.status, 200);
      assert.equal(renamed.body.name, "Samira");
      assert.equal((await call("GET", "/v1/me", { token: s.token })).body.user.name, "Samira");

      const wrong = await call("POST", "/v1/me/password", {
        token: s.token,
        body: { current_password: "not it", new_password: "a much better one" },
      });
      assert.equal(wrong.status, 400);
      assert.equal(wrong.body.error.code, "wrong_password");
      assert.equal(wrong.body.error.field, "current_password");
      const short = await call("POST", "/v1/me/password", {
        token: s.token,
        body: { current_password: password, new_password: "x" },
      });
      assert.equal(short.status, 400);
      const ok = await call("POST", "/v1/me/password", {
        token: s.token,
        body: { current_password: password, new_password: "a much better one" },
      });
      assert.equal(ok.status, 204);
      // This session lives on; the other browser is signed out.
      assert.equal((await call("GET", "/v1/me", { token: s.token })).status, 200);
      assert.equal(
        (await call("POST", "/v1/auth/refresh", { cookie: otherCookie, csrf: true })).status,
        401,
      );
      assert.equal((await call("GET", "/v1/me", { token: other.body.token })).status, 401);
      const oldPw = await call("POST", "/v1/auth/login", { body: { email: s.email, password } });
      assert.equal(oldPw.status, 401);
      const newPw = await call("POST", "/v1/auth/login", {
        body: { email: s.email, password: "a much better one" },
      });
      assert.equal(newPw.status, 200);
    });

    it("deletes a team: owner only, never with live sandboxes; its keys and sessions stop", async () => {
      const s = await signupSession();
      const team = await call("POST", "/v1/teams", { token: s.token, body: { name: "Doomed" } });
      const teamId = team.body.id as string;
      const sw = await call("POST", "/v1/auth/switch-team", {
        token: s.token,
        body: { team_id: teamId },
      });
      const key = await call("POST", "/v1/api-keys", { token: sw.body.token, body: { name: "k" } });
      assert.equal(key.status, 201, JSON.stringify(key.body));
      const member = await signupSession();
      const added = await call("POST", `/v1/teams/${teamId}/members`, {
        token: sw.body.token,
        body: { email: member.email, role: "admin" },
      });
      assert.equal(added.status, 201, JSON.stringify(added.body));
      const memberIn = await call("POST", "/v1/auth/switch-team", {
        token: member.token,
        body: { team_id: teamId },
      });
      const byAdmin = await call("DELETE", `/v1/teams/${teamId}`, { token: memberIn.body.token });
      assert.equal(byAdmin.status, 403);

      const hostId = newId("host");
      await insertPendingHost(t.db, {
        id: hostId,
        name: `sessions-${hostId.slice(-6)}`,
        createdBy: null,
        tokenId: newId("htok"),
        tokenHash: randomBytes(16).toString("hex"),
        tokenTtlSec: 600,
      });
      const sb = await insertPendingSandbox(t.db, {
        id: newSandboxId(),
        teamId,
        hostId,
        templateId: null,
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
      const live = await call("DELETE", `/v1/teams/${teamId}`, { token: sw.body.token });
      assert.equal(live.status, 409);
      assert.equal(live.body.error.code, "invalid_state");
      assert.equal(live.body.error.live_sandboxes, 1);
      assert.match(live.body.error.message, /kill it first/);
      await transitionSandbox(t.db, sb.id, ["pending"], "stopped", { ended: true });

      const ok = await call("DELETE", `/v1/teams/${teamId}`, { token: sw.body.token });
      assert.equal(ok.status, 204);
      assert.equal((await call("GET", `/v1/teams/${teamId}`, { token: s.token })).status, 404);
      const withKey = await app.request(`${ORIGIN}/v1/api-keys`, {
        headers: { "x-api-key": key.body.key, host: "127.0.0.1:3000" },
      });
      assert.equal(withKey.status, 401);
      assert.equal((await call("GET", "/v1/me", { token: memberIn.body.token })).status, 401);
      // The owner's cookie session continues in a team that still exists.
      const r = await call("POST", "/v1/auth/refresh", { cookie: s.cookie, csrf: true });
      assert.equal(r.status, 200);
      assert.notEqual(r.body.team.id, teamId);
      const teams = await call("GET", "/v1/teams", { token: r.body.token });
      assert.ok(!teams.body.some((x: { id: string }) => x.id === teamId));
    });
  });
}
