/**
 * Host management through the real HTTP app on both database kinds: BYOC hosts and who may
 * create, see and change them, registration token re-issue, draining, tags, delete preview and
 * the 409 with the active sandboxes, heartbeat usage, the monitor (silent → unreachable, its
 * sandboxes missing; back → online), the audit trail, and teams' `is_byoc`. Agents are played by
 * the test (registration and heartbeats over HTTP); placement with real agents is byoc.test.ts.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import {
  certificateRequest,
  loadOrCreateTlsKey,
} from "../../packages/agent/src/control-plane/tls-identity.js";
import { buildApp } from "../../packages/server/src/api/app.js";
import { hostRoutes } from "../../packages/server/src/api/routes/hosts.js";
import { teamRoutes } from "../../packages/server/src/api/routes/teams.js";
import { getHost } from "../../packages/server/src/db/queries/hosts.js";
import { AgentClients } from "../../packages/server/src/hosts/agent-clients.js";
import { Reconciler } from "../../packages/server/src/hosts/reconciler.js";
import { newSandboxId } from "../../packages/server/src/ids.js";
import { CertificateAuthority } from "../../packages/server/src/pki/ca.js";
import { ControlPlaneIdentity } from "../../packages/server/src/pki/client-identity.js";
import { type AppFixture, openAppFixture } from "./support/app-fixture.js";
import { DB_KINDS } from "./support/db-fixture.js";
import { type TestTeam, type TestUser, testTeam, testUser } from "./support/host-teams.js";

const keyDir = mkdtempSync(path.join(tmpdir(), "nbx-hl-key-"));
const CSR = await certificateRequest(await loadOrCreateTlsKey(path.join(keyDir, "k.pem")));
rmSync(keyDir, { recursive: true, force: true });
const FACTS = {
  address: "https://127.0.0.1:1",
  runtime: "namespace",
  arch: "x86_64",
  cpu_cores: 2,
  memory_mb: 4096,
  disk_mb: 20480,
  agent_version: "0.1.0",
};

// biome-ignore lint/suspicious/noExplicitAny: responses are checked field by field
type Body = any;

for (const kind of DB_KINDS) {
  describe(`host lifecycle (${kind})`, () => {
    let f: AppFixture;
    let app: ReturnType<typeof buildApp>;
    let admin: TestUser;
    let a: TestTeam; // BYOC
    let b: TestTeam; // regular

    const call = async (
      method: string,
      route: string,
      opts: { bearer?: string; body?: unknown; hostToken?: string } = {},
    ): Promise<{ status: number; body: Body }> => {
      const headers: Record<string, string> = {};
      if (opts.body !== undefined) headers["content-type"] = "application/json";
      if (opts.bearer) headers.authorization = `Bearer ${opts.bearer}`;
      if (opts.hostToken) headers["x-host-token"] = opts.hostToken;
      const res = await app.request(route, {
        method,
        headers,
        ...(opts.body !== undefined ? { body: JSON.stringify(opts.body) } : {}),
      });
      const text = await res.text();
      return { status: res.status, body: text ? JSON.parse(text) : undefined };
    };
    const create = async (bearer: string, body: unknown) => {
      const res = await call("POST", "/v1/hosts", { bearer, body });
      assert.equal(res.status, 201, JSON.stringify(res.body));
      return res.body as { host: Body; registration_token: string };
    };
    const register = async (token: string) => {
      const res = await call("POST", "/v1/hosts/register", { body: { token, csr: CSR, ...FACTS } });
      return res;
    };
    const audits = async (hostId: string) =>
      (
        await f.t.db.query<{ action: string; team_id: string | null; actor_type: string }>(
          "SELECT action, team_id, actor_type FROM audit_events WHERE resource_id = $1 ORDER BY id",
          [hostId],
        )
      ).map((r) => r.action);

    before(async () => {
      f = await openAppFixture(kind);
      f.deps.agents = new AgentClients({
        log: () => {},
        identity: await ControlPlaneIdentity.create(
          (await CertificateAuthority.create()).ca,
          () => {},
        ),
      });
      app = buildApp(f.deps, [hostRoutes, teamRoutes]);
      const secret = f.deps.config.jwtSecret;
      a = await testTeam(f.t.db, secret, "Alpha", true);
      b = await testTeam(f.t.db, secret, "Beta", false);
      admin = await testUser(f.t.db, secret, b.id, "member", { isAdmin: true });
    });
    after(async () => {
      await f?.close();
    });

    it("who may create which host", async () => {
      const byoc = await create(a.owner.token, { name: "a-1", type: "byoc", team_id: a.id });
      assert.equal(byoc.host.type, "byoc");
      assert.equal(byoc.host.team_id, a.id);
      assert.equal(byoc.host.team_name, "Alpha");
      assert.equal(byoc.host.status, "pending");
      assert.equal(byoc.host.draining, false);
      assert.deepEqual(byoc.host.tags, []);
      assert.equal(byoc.host.active_sandbox_count, 0);
      await create(a.admin.token, { name: "a-2", type: "byoc", team_id: a.id });
      await create(admin.token, { name: "a-3", type: "byoc", team_id: a.id });
      const regular = await create(admin.token, { name: "r-1" });
      assert.equal(regular.host.type, "regular");
      assert.equal(regular.host.team_id, null);

      const cases: [string, string, unknown, number, string][] = [
        ["member", a.member.token, { name: "x", type: "byoc", team_id: a.id }, 403, "forbidden"],
        ["other team", b.owner.token, { name: "x", type: "byoc", team_id: a.id }, 403, "forbidden"],
        [
          "not byoc",
          b.owner.token,
          { name: "x", type: "byoc", team_id: b.id },
          403,
          "team_not_byoc",
        ],
        [
          "admin, not byoc",
          admin.token,
          { name: "x", type: "byoc", team_id: b.id },
          403,
          "team_not_byoc",
        ],
        ["no team", admin.token, { name: "x", type: "byoc" }, 400, "invalid_request"],
        ["regular + team", admin.token, { name: "x", team_id: b.id }, 400, "invalid_request"],
        ["regular, owner", a.owner.token, { name: "x" }, 403, "forbidden"],
        [
          "unknown team",
          admin.token,
          { name: "x", type: "byoc", team_id: "team_aaaaaaaaaaaaaaaaaaaa" },
          404,
          "not_found",
        ],
      ];
      for (const [what, bearer, body, status, code] of cases) {
        const res = await call("POST", "/v1/hosts", { bearer, body });
        assert.equal(res.status, status, `${what}: ${JSON.stringify(res.body)}`);
        assert.equal(res.body.error.code, code, what);
      }
      assert.deepEqual(await audits(byoc.host.id), ["host.create"]);
      const [row] = await f.t.db.query<{ team_id: string; actor_type: string; actor_id: string }>(
        "SELECT team_id, actor_type, actor_id FROM audit_events WHERE resource_id = $1",
        [byoc.host.id],
      );
      assert.deepEqual(row, { team_id: a.id, actor_type: "user", actor_id: a.owner.id });
    });

    it("members see their team's BYOC hosts only; admins see all, by type", async () => {
      const mine = await call("GET", "/v1/hosts", { bearer: a.member.token });
      assert.equal(mine.status, 200);
      const names = mine.body.hosts.map((h: Body) => h.name).sort();
      assert.deepEqual(names, ["a-1", "a-2", "a-3"]);
      const none = await call("GET", "/v1/hosts", { bearer: b.owner.token });
      assert.deepEqual(none.body.hosts, []);
      const all = await call("GET", "/v1/hosts", { bearer: admin.token });
      assert.ok(all.body.hosts.length >= 4);
      const regular = await call("GET", "/v1/hosts?type=regular", { bearer: admin.token });
      assert.ok(regular.body.hosts.every((h: Body) => h.type === "regular"));
      assert.ok(regular.body.hosts.some((h: Body) => h.name === "r-1"));
      const bad = await call("GET", "/v1/hosts?type=gpu", { bearer: admin.token });
      assert.equal(bad.status, 400);

      const r1 = all.body.hosts.find((h: Body) => h.name === "r-1");
      const a1 = all.body.hosts.find((h: Body) => h.name === "a-1");
      assert.equal(
        (await call("GET", `/v1/hosts/${r1.id}`, { bearer: a.owner.token })).status,
        404,
      );
      assert.equal(
        (await call("GET", `/v1/hosts/${a1.id}`, { bearer: b.owner.token })).status,
        404,
      );
      const seen = await call("GET", `/v1/hosts/${a1.id}`, { bearer: a.member.token });
      assert.equal(seen.status, 200);
      assert.equal(seen.body.team_name, "Alpha");
    });

    it("re-issues a registration token only while the host is pending", async () => {
      const { host, registration_token: first } = await create(a.owner.token, {
        name: "retoken",
        type: "byoc",
        team_id: a.id,
      });
      const member = await call("POST", `/v1/hosts/${host.id}/token`, { bearer: a.member.token });
      assert.equal(member.status, 403);
      const res = await call("POST", `/v1/hosts/${host.id}/token`, { bearer: a.owner.token });
      assert.equal(res.status, 201, JSON.stringify(res.body));
      assert.match(res.body.registration_token, /^[0-9a-f]{64}$/);
      assert.notEqual(res.body.registration_token, first);
      assert.equal((await register(first)).status, 401, "the earlier token was revoked");
      const ok = await register(res.body.registration_token);
      assert.equal(ok.status, 201, JSON.stringify(ok.body));
      assert.equal(ok.body.host.type, "byoc", "the credentials' host is the full view");
      // The agent heartbeats once it serves: online.
      const hb = await call("POST", `/v1/hosts/${host.id}/heartbeat`, {
        hostToken: ok.body.host_token,
      });
      assert.equal(hb.status, 204);
      const again = await call("POST", `/v1/hosts/${host.id}/token`, { bearer: a.owner.token });
      assert.equal(again.status, 409);
      assert.equal(again.body.error.code, "invalid_state");
    });

    it("drain, undrain and tags: the team's owner and admins write, members read", async () => {
      const { host } = await create(a.owner.token, { name: "tagged", type: "byoc", team_id: a.id });
      const denied = await call("POST", `/v1/hosts/${host.id}/drain`, { bearer: a.member.token });
      assert.equal(denied.status, 403);
      assert.equal(denied.body.error.code, "forbidden");
      const hidden = await call("POST", `/v1/hosts/${host.id}/drain`, { bearer: b.owner.token });
      assert.equal(hidden.status, 404, "another team's host does not exist for it");
      const drained = await call("POST", `/v1/hosts/${host.id}/drain`, { bearer: a.admin.token });
      assert.equal(drained.status, 200);
      assert.equal(drained.body.draining, true);
      assert.equal(drained.body.status, "pending", "draining is a flag, not a status");
      const undrained = await call("POST", `/v1/hosts/${host.id}/undrain`, {
        bearer: a.owner.token,
      });
      assert.equal(undrained.body.draining, false);

      for (const tag of ["gpu", "eu-west", "gpu"]) {
        const res = await call("POST", `/v1/hosts/${host.id}/tags`, {
          bearer: a.owner.token,
          body: { tag },
        });
        assert.equal(res.status, 204, "adding is idempotent");
      }
      for (const tag of ["GPU", "", "-x", "a".repeat(64)]) {
        const res = await call("POST", `/v1/hosts/${host.id}/tags`, {
          bearer: a.owner.token,
          body: { tag },
        });
        assert.equal(res.status, 400, `tag ${JSON.stringify(tag)}`);
        assert.equal(res.body.error.field, "tag");
      }
      const memberAdd = await call("POST", `/v1/hosts/${host.id}/tags`, {
        bearer: a.member.token,
        body: { tag: "x" },
      });
      assert.equal(memberAdd.status, 403);
      const tags = await call("GET", `/v1/hosts/${host.id}/tags`, { bearer: a.member.token });
      assert.deepEqual(tags.body, { tags: ["eu-west", "gpu"] });
      const rm = await call("DELETE", `/v1/hosts/${host.id}/tags/gpu`, { bearer: a.owner.token });
      assert.equal(rm.status, 204);
      const rmAgain = await call("DELETE", `/v1/hosts/${host.id}/tags/gpu`, {
        bearer: a.owner.token,
      });
      assert.equal(rmAgain.status, 204);
      const rmHidden = await call("DELETE", `/v1/hosts/${host.id}/tags/gpu`, {
        bearer: b.owner.token,
      });
      assert.equal(rmHidden.status, 404);
      const view = await call("GET", `/v1/hosts/${host.id}`, { bearer: a.owner.token });
      assert.deepEqual(view.body.tags, ["eu-west"]);
    });

    it("delete: preview, 409 has_active_sandboxes with their ids, force; audited", async () => {
      const { host, registration_token } = await create(a.owner.token, {
        name: "doomed",
        type: "byoc",
        team_id: a.id,
      });
      assert.equal((await register(registration_token)).status, 201);
      const ids = [newSandboxId(), newSandboxId()].sort();
      for (const [i, id] of ids.entries())
        await f.t.db.query(
          `INSERT INTO sandboxes (id, team_id, host_id, template, status, vcpus, memory_mb,
             disk_size_mb, timeout_sec, created_at)
           VALUES ($1, $2, $3, 'base', $4, 1, 512, 1024, 300, now() + make_interval(secs => $5))`,
          [id, a.id, host.id, i === 0 ? "running" : "paused", i],
        );
      const preview = await call("GET", `/v1/hosts/${host.id}/delete-preview`, {
        bearer: a.admin.token,
      });
      assert.equal(preview.status, 200);
      assert.deepEqual(preview.body.sandbox_ids, ids);
      assert.equal(preview.body.host.active_sandbox_count, 2);
      const memberPreview = await call("GET", `/v1/hosts/${host.id}/delete-preview`, {
        bearer: a.member.token,
      });
      assert.equal(memberPreview.status, 403);
      const memberDelete = await call("DELETE", `/v1/hosts/${host.id}`, { bearer: a.member.token });
      assert.equal(memberDelete.status, 403);
      const otherDelete = await call("DELETE", `/v1/hosts/${host.id}`, { bearer: b.owner.token });
      assert.equal(otherDelete.status, 404);

      const refused = await call("DELETE", `/v1/hosts/${host.id}`, { bearer: a.owner.token });
      assert.equal(refused.status, 409);
      assert.equal(refused.body.error.code, "has_active_sandboxes");
      assert.deepEqual(refused.body.error.sandbox_ids, ids);
      assert.match(refused.body.error.message, /force=true/);

      const forced = await call("DELETE", `/v1/hosts/${host.id}?force=true`, {
        bearer: a.owner.token,
      });
      assert.equal(forced.status, 204);
      assert.equal(await getHost(f.t.db, host.id), undefined);
      assert.deepEqual(await audits(host.id), ["host.create", "host.delete"]);
    });

    it("heartbeats carry usage, stored and shown; partial usage is refused", async () => {
      const { host, registration_token } = await create(admin.token, { name: "busy" });
      const creds = (await register(registration_token)).body;
      const hb = await call("POST", `/v1/hosts/${host.id}/heartbeat`, {
        hostToken: creds.host_token,
        body: { ...FACTS, used_memory_mb: 1536, used_disk_mb: 10_240, sandbox_count: 3 },
      });
      assert.equal(hb.status, 204, JSON.stringify(hb.body));
      const view = await call("GET", `/v1/hosts/${host.id}`, { bearer: admin.token });
      assert.equal(view.body.status, "online");
      assert.equal(view.body.used_memory_mb, 1536);
      assert.equal(view.body.used_disk_mb, 10_240);
      assert.equal(view.body.sandbox_count, 3);
      const partial = await call("POST", `/v1/hosts/${host.id}/heartbeat`, {
        hostToken: creds.host_token,
        body: { used_memory_mb: 1 },
      });
      assert.equal(partial.status, 400);
      const negative = await call("POST", `/v1/hosts/${host.id}/heartbeat`, {
        hostToken: creds.host_token,
        body: { used_memory_mb: -1, used_disk_mb: 0, sandbox_count: 0 },
      });
      assert.equal(negative.status, 400);
      assert.equal(negative.body.error.field, "used_memory_mb");
      const bare = await call("POST", `/v1/hosts/${host.id}/heartbeat`, {
        hostToken: creds.host_token,
      });
      assert.equal(bare.status, 204, "an older agent's heartbeat without usage still works");
      const kept = await call("GET", `/v1/hosts/${host.id}`, { bearer: admin.token });
      assert.equal(kept.body.sandbox_count, 3, "usage not sent stays");
    });

    it("a silent host becomes unreachable with its running sandboxes missing, and comes back", async () => {
      const { host, registration_token } = await create(a.owner.token, {
        name: "flaky",
        type: "byoc",
        team_id: a.id,
      });
      const creds = (await register(registration_token)).body;
      await call("POST", `/v1/hosts/${host.id}/heartbeat`, { hostToken: creds.host_token });
      const running = newSandboxId();
      const paused = newSandboxId();
      for (const [id, status] of [
        [running, "running"],
        [paused, "paused"],
      ])
        await f.t.db.query(
          `INSERT INTO sandboxes (id, team_id, host_id, template, status, vcpus, memory_mb,
             disk_size_mb, timeout_sec)
           VALUES ($1, $2, $3, 'base', $4, 1, 512, 1024, 300)`,
          [id, a.id, host.id, status],
        );
      await f.t.db.query(
        "UPDATE hosts SET last_heartbeat_at = now() - interval '3 seconds' WHERE id = $1",
        [host.id],
      );
      const lines: string[] = [];
      // 2 s of silence is stale here; the default is 90 s.
      const reconciler = new Reconciler(f.t.db, f.deps.agents, (l) => lines.push(l), 2);
      const report = await reconciler.runOnce();
      assert.ok(report);
      const status = async (id: string) =>
        (
          await f.t.db.query<{ status: string }>("SELECT status FROM sandboxes WHERE id = $1", [id])
        )[0]?.status;
      assert.equal((await getHost(f.t.db, host.id))?.status, "unreachable");
      assert.equal(await status(running), "missing");
      assert.equal(await status(paused), "paused", "a paused sandbox stays paused");
      assert.ok(lines.some((l) => l.includes(host.id) && /unreachable/.test(l)));

      const hb = await call("POST", `/v1/hosts/${host.id}/heartbeat`, {
        hostToken: creds.host_token,
      });
      assert.equal(hb.status, 204);
      assert.equal((await getHost(f.t.db, host.id))?.status, "online");
      assert.deepEqual(await audits(host.id), [
        "host.create",
        "host.marked_down",
        "host.marked_up",
      ]);
      const [down] = await f.t.db.query<{ team_id: string; actor_type: string }>(
        "SELECT team_id, actor_type FROM audit_events WHERE resource_id = $1 AND action = 'host.marked_down'",
        [host.id],
      );
      assert.deepEqual(down, { team_id: a.id, actor_type: "system" });
      await f.t.db.query("UPDATE sandboxes SET status = 'stopped' WHERE host_id = $1", [host.id]);
    });

    it("team views carry is_byoc", async () => {
      const alpha = await call("GET", "/v1/teams", { bearer: a.member.token });
      assert.equal(alpha.status, 200);
      assert.deepEqual(
        alpha.body.map((t: Body) => [t.id, t.is_byoc]),
        [[a.id, true]],
      );
      const beta = await call("GET", `/v1/teams/${b.id}`, { bearer: b.owner.token });
      assert.equal(beta.body.team.is_byoc, false);
    });
  });
}
