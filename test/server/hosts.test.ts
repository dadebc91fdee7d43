/**
 * Hosts: creation by an admin, registration with a one-time token, heartbeats, refresh-token
 * rotation, staleness — through the real HTTP app on both database kinds — and the host
 * agent's side: its control-plane link in process, and a real `nestbox agent` (namespace
 * runtime) registering with a control plane served on loopback.
 *
 * One file (~800 lines) because every case shares one control plane per database kind and the
 * registration flow builds on itself; split it by flow if a part gets its own fixture.
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { X509Certificate } from "node:crypto";
import { once } from "node:events";
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import https from "node:https";
import type { AddressInfo } from "node:net";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { createInterface } from "node:readline";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import { serve } from "@hono/node-server";
import { credentialsPath } from "../../packages/agent/src/control-plane/credentials.js";
import { ControlPlaneLink } from "../../packages/agent/src/control-plane/link.js";
import {
  certificateRequest,
  loadOrCreateTlsKey,
} from "../../packages/agent/src/control-plane/tls-identity.js";
import { buildApp } from "../../packages/server/src/api/app.js";
import type { AppDeps } from "../../packages/server/src/api/context.js";
import { hostRoutes } from "../../packages/server/src/api/routes/hosts.js";
import { signHostToken } from "../../packages/server/src/auth/host-tokens.js";
import { issueUserToken } from "../../packages/server/src/auth/user-tokens.js";
import type { ServerConfig } from "../../packages/server/src/config.js";
import type { Db } from "../../packages/server/src/db/db.js";
import { getHost, type HostRow } from "../../packages/server/src/db/queries/hosts.js";
import { addMembership, insertTeam } from "../../packages/server/src/db/queries/teams.js";
import { insertUser } from "../../packages/server/src/db/queries/users.js";
import { AgentClients } from "../../packages/server/src/hosts/agent-clients.js";
import {
  markStaleHostsUnreachable,
  registerHost,
} from "../../packages/server/src/hosts/registration.js";
import { newId, newSandboxId } from "../../packages/server/src/ids.js";
import { CertificateAuthority, pkcs8Pem } from "../../packages/server/src/pki/ca.js";
import { ControlPlaneIdentity } from "../../packages/server/src/pki/client-identity.js";
import type { SandboxAccess } from "../../packages/server/src/services/sandbox-access.js";
import { shareBaseTemplate } from "../agent/support/agent-harness.js";
import { DB_KINDS, type DbKind, openTestDb, type TestDb } from "./support/db-fixture.js";

/** A key made in a scratch directory that is gone again afterwards (the key stays in memory). */
async function scratchTlsKey(): Promise<Awaited<ReturnType<typeof loadOrCreateTlsKey>>> {
  const dir = mkdtempSync(path.join(tmpdir(), "nbx-hosts-key-"));
  try {
    return await loadOrCreateTlsKey(path.join(dir, "k.pem"));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** A certificate request for a key made once for this file (as an agent's first start would). */
const CSR = await certificateRequest(await scratchTlsKey());

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");

const unusedSandboxes: SandboxAccess = {
  get: () => Promise.reject(new Error("host routes must not use sandbox access")),
  running: () => Promise.reject(new Error("host routes must not use sandbox access")),
  touch: () => Promise.reject(new Error("host routes must not use sandbox access")),
};

function testConfig(dataDir: string): ServerConfig {
  return {
    host: "127.0.0.1",
    port: 0,
    dataDir,
    databaseUrl: undefined,
    jwtSecret: new TextEncoder().encode("hosts-test-secret-that-is-long-enough-1234"),
    domain: "localhost",
    publicUrl: "http://127.0.0.1",
  };
}

const FACTS = {
  address: "https://127.0.0.1:50051",
  runtime: "namespace",
  arch: "x86_64",
  cpu_cores: 2,
  memory_mb: 4096,
  disk_mb: 20480,
  agent_version: "0.1.0",
};

interface Harness {
  t: TestDb;
  db: Db;
  deps: AppDeps;
  app: ReturnType<typeof buildApp>;
  adminToken: string;
  memberToken: string;
  teamId: string;
}

async function setUp(kind: DbKind): Promise<Harness> {
  const t = await openTestDb(kind);
  const deps: AppDeps = {
    db: t.db,
    config: testConfig(t.dataDir ?? tmpdir()),
    sandboxes: unusedSandboxes,
    agents: new AgentClients({
      log: () => {},
      identity: await ControlPlaneIdentity.create(
        (await CertificateAuthority.create()).ca,
        () => {},
      ),
    }),
  };
  const app = buildApp(deps, [hostRoutes]);
  const team = await insertTeam(t.db, { id: newId("team"), name: "Ops", slug: newId("team") });
  const admin = await insertUser(t.db, {
    id: newId("usr"),
    email: `admin-${newId("usr")}@example.com`,
    password_hash: "unused",
    name: "Admin",
    is_admin: true,
  });
  const member = await insertUser(t.db, {
    id: newId("usr"),
    email: `member-${newId("usr")}@example.com`,
    password_hash: "unused",
    name: "Member",
  });
  for (const u of [admin, member])
    await addMembership(t.db, { team_id: team.id, user_id: u.id, role: "owner" });
  const secret = deps.config.jwtSecret;
  return {
    t,
    db: t.db,
    deps,
    app,
    teamId: team.id,
    adminToken: (await issueUserToken(secret, { userId: admin.id, teamId: team.id, role: "owner" }))
      .token,
    memberToken: (
      await issueUserToken(secret, { userId: member.id, teamId: team.id, role: "owner" })
    ).token,
  };
}

async function call(
  h: Harness,
  method: string,
  route: string,
  opts: { body?: unknown; bearer?: string; hostToken?: string } = {},
): Promise<{ status: number; body: unknown }> {
  const headers: Record<string, string> = {};
  if (opts.body !== undefined) headers["content-type"] = "application/json";
  if (opts.bearer) headers.authorization = `Bearer ${opts.bearer}`;
  if (opts.hostToken) headers["x-host-token"] = opts.hostToken;
  const res = await h.app.request(route, {
    method,
    headers,
    ...(opts.body !== undefined ? { body: JSON.stringify(opts.body) } : {}),
  });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : undefined };
}

const errorCode = (body: unknown) => (body as { error: { code: string } }).error.code;

interface Creds {
  host: { id: string; status: string; address: string };
  host_token: string;
  refresh_token: string;
}

async function newHost(h: Harness, name = "h1"): Promise<{ id: string; token: string }> {
  const res = await call(h, "POST", "/v1/hosts", { bearer: h.adminToken, body: { name } });
  assert.equal(res.status, 201, JSON.stringify(res.body));
  const b = res.body as { host: { id: string; status: string }; registration_token: string };
  assert.equal(b.host.status, "pending");
  assert.match(b.registration_token, /^[0-9a-f]{64}$/);
  return { id: b.host.id, token: b.registration_token };
}

/** Registered and heartbeating once, as an agent does: the host is online. */
async function registered(h: Harness, name = "h1"): Promise<Creds> {
  const { token } = await newHost(h, name);
  const res = await call(h, "POST", "/v1/hosts/register", { body: { token, csr: CSR, ...FACTS } });
  assert.equal(res.status, 201, JSON.stringify(res.body));
  const creds = res.body as Creds;
  const hb = await call(h, "POST", `/v1/hosts/${creds.host.id}/heartbeat`, {
    hostToken: creds.host_token,
  });
  assert.equal(hb.status, 204);
  return creds;
}

for (const kind of DB_KINDS) {
  describe(`hosts API (${kind})`, () => {
    let h: Harness;
    before(async () => {
      h = await setUp(kind);
    });
    after(async () => {
      await h?.t.close();
    });

    it("create → register → heartbeat → refresh; the old refresh token is then rejected", async () => {
      const { id, token } = await newHost(h);
      const stored = await h.db.query<{ token_hash: string; kind: string }>(
        "SELECT token_hash, kind FROM host_tokens WHERE host_id = $1",
        [id],
      );
      assert.equal(stored.length, 1);
      assert.equal(stored[0]?.kind, "registration");
      assert.notEqual(stored[0]?.token_hash, token, "only a hash is stored");

      const reg = await call(h, "POST", "/v1/hosts/register", {
        body: { token, csr: CSR, ...FACTS, address: "https://10.1.2.3:50051/" },
      });
      assert.equal(reg.status, 201, JSON.stringify(reg.body));
      const creds = reg.body as Creds & { host: HostRow };
      assert.equal(creds.host.id, id);
      assert.equal(creds.host.status, "pending", "online only once it heartbeats (and serves)");
      assert.equal(creds.host.address, "https://10.1.2.3:50051");
      assert.equal(creds.host.memory_mb, 4096);
      assert.equal(creds.host.runtime, "namespace");
      assert.match(creds.refresh_token, /^[0-9a-f]{64}$/);
      // Its server certificate: signed by the CA, the host id as subject, the address as SAN,
      // for serving only, a week long.
      const issued = reg.body as {
        certificate: string;
        ca_certificate: string;
        certificate_expires_at: string;
      };
      const cert = new X509Certificate(issued.certificate);
      const caCert = new X509Certificate(issued.ca_certificate);
      assert.ok(cert.checkIssued(caCert) && cert.verify(caCert.publicKey), "signed by the CA");
      assert.match(cert.subject, new RegExp(`CN=${id}`));
      assert.equal(cert.subjectAltName, "IP Address:10.1.2.3");
      assert.deepEqual(cert.keyUsage, ["1.3.6.1.5.5.7.3.1"]);
      const days = (Date.parse(cert.validTo) - Date.now()) / 86_400_000;
      assert.ok(days > 6.9 && days <= 7, `${days} days`);
      assert.equal(Date.parse(issued.certificate_expires_at), Date.parse(cert.validTo));

      const hb = await call(h, "POST", `/v1/hosts/${id}/heartbeat`, {
        hostToken: creds.host_token,
      });
      assert.equal(hb.status, 204, JSON.stringify(hb.body));

      const ref = await call(h, "POST", "/v1/hosts/auth/refresh", {
        body: { refresh_token: creds.refresh_token, csr: CSR },
      });
      assert.equal(ref.status, 200, JSON.stringify(ref.body));
      const next = ref.body as Creds;
      assert.equal(next.host.id, id);
      assert.notEqual(next.refresh_token, creds.refresh_token);
      const hb2 = await call(h, "POST", `/v1/hosts/${id}/heartbeat`, {
        hostToken: next.host_token,
      });
      assert.equal(hb2.status, 204);

      const replay = await call(h, "POST", "/v1/hosts/auth/refresh", {
        body: { refresh_token: creds.refresh_token, csr: CSR },
      });
      assert.equal(replay.status, 401);
      assert.equal(errorCode(replay.body), "unauthorized");
      const again = await call(h, "POST", "/v1/hosts/auth/refresh", {
        body: { refresh_token: next.refresh_token, csr: CSR },
      });
      assert.equal(again.status, 200, "the rotated token still works once");

      const got = await call(h, "GET", `/v1/hosts/${id}`, { bearer: h.adminToken });
      assert.equal(got.status, 200);
      assert.equal((got.body as { status: string }).status, "online");
      const list = await call(h, "GET", "/v1/hosts", { bearer: h.adminToken });
      assert.ok((list.body as { hosts: { id: string }[] }).hosts.some((x) => x.id === id));
    });

    it("a registration token works once and not after it expired; unknown tokens are 401", async () => {
      const { id, token } = await newHost(h, "once");
      const first = await call(h, "POST", "/v1/hosts/register", {
        body: { token, csr: CSR, ...FACTS },
      });
      assert.equal(first.status, 201);
      const second = await call(h, "POST", "/v1/hosts/register", {
        body: { token, csr: CSR, ...FACTS },
      });
      assert.equal(second.status, 401);
      assert.equal(errorCode(second.body), "unauthorized");

      const expiring = await newHost(h, "late");
      await h.db.query(
        "UPDATE host_tokens SET expires_at = now() - interval '1 second' WHERE host_id = $1",
        [expiring.id],
      );
      const late = await call(h, "POST", "/v1/hosts/register", {
        body: { token: expiring.token, csr: CSR, ...FACTS },
      });
      assert.equal(late.status, 401);
      assert.equal((await getHost(h.db, expiring.id))?.status, "pending");

      const unknown = await call(h, "POST", "/v1/hosts/register", {
        body: { token: "0".repeat(64), csr: CSR, ...FACTS },
      });
      assert.equal(unknown.status, 401);
      assert.equal((await getHost(h.db, id))?.address, FACTS.address, "the first stays registered");
    });

    it("concurrent registrations with one token: exactly one succeeds", async () => {
      const { id, token } = await newHost(h, "race");
      const results = await Promise.allSettled(
        Array.from({ length: 6 }, (_, i) =>
          registerHost(h.db, h.deps.config.jwtSecret, {
            token,
            address: `https://10.0.0.${i + 1}:50051`,
            runtime: "namespace",
            arch: "x86_64",
            cpuCores: 2,
            memoryMb: 1024,
            diskMb: 1024,
            agentVersion: "0.1.0",
          }),
        ),
      );
      const won = results.filter((r) => r.status === "fulfilled");
      const lost = results.filter((r) => r.status === "rejected");
      assert.equal(won.length, 1, JSON.stringify(results));
      for (const r of lost) assert.equal((r.reason as { status?: number }).status, 401);
      const refresh = await h.db.query(
        "SELECT 1 FROM host_tokens WHERE host_id = $1 AND kind = 'refresh'",
        [id],
      );
      assert.equal(refresh.length, 1, "one refresh token, for the winner");
      const winner = won[0];
      assert.ok(winner?.status === "fulfilled");
      assert.equal((await getHost(h.db, id))?.address, winner.value.host.address);
    });

    it("host and user tokens are not interchangeable", async () => {
      const creds = await registered(h, "tokens");
      const asUser = await call(h, "GET", "/v1/hosts", { bearer: creds.host_token });
      assert.equal(asUser.status, 401, "a host JWT is no user session");
      const asHost = await call(h, "POST", `/v1/hosts/${creds.host.id}/heartbeat`, {
        hostToken: h.adminToken,
      });
      assert.equal(asHost.status, 401, "a user JWT is no host token");
      const none = await call(h, "POST", `/v1/hosts/${creds.host.id}/heartbeat`);
      assert.equal(none.status, 401);
      const forged = await signHostToken(
        new TextEncoder().encode("another-secret-entirely-another-secret"),
        creds.host.id,
      );
      const bad = await call(h, "POST", `/v1/hosts/${creds.host.id}/heartbeat`, {
        hostToken: forged.token,
      });
      assert.equal(bad.status, 401, "signed with another secret");
      const expired = await signHostToken(
        h.deps.config.jwtSecret,
        creds.host.id,
        new Date(Date.now() - 25 * 3600_000),
      );
      const old = await call(h, "POST", `/v1/hosts/${creds.host.id}/heartbeat`, {
        hostToken: expired.token,
      });
      assert.equal(old.status, 401, "expired");
    });

    it("host routes: 401 without credentials; non-admins create no regular host and see none", async () => {
      assert.equal((await call(h, "GET", "/v1/hosts")).status, 401);
      const r = await call(h, "POST", "/v1/hosts", { bearer: h.memberToken, body: { name: "x" } });
      assert.equal(r.status, 403);
      // A regular team's members see only their team's BYOC hosts: none.
      const list = await call(h, "GET", "/v1/hosts", { bearer: h.memberToken });
      assert.equal(list.status, 200);
      assert.deepEqual((list.body as { hosts: unknown[] }).hosts, []);
    });

    it("heartbeat for another host's id is 403", async () => {
      const a = await registered(h, "a");
      const b = await registered(h, "b");
      const before = (await getHost(h.db, b.host.id))?.last_heartbeat_at;
      const res = await call(h, "POST", `/v1/hosts/${b.host.id}/heartbeat`, {
        hostToken: a.host_token,
      });
      assert.equal(res.status, 403);
      assert.equal(errorCode(res.body), "forbidden");
      assert.deepEqual((await getHost(h.db, b.host.id))?.last_heartbeat_at, before);
    });

    it("a stale host becomes unreachable, and online again with its next heartbeat", async () => {
      const stale = await registered(h, "stale");
      const fresh = await registered(h, "fresh");
      await h.db.query(
        "UPDATE hosts SET last_heartbeat_at = now() - interval '5 minutes' WHERE id = $1",
        [stale.host.id],
      );
      const changed = await markStaleHostsUnreachable(h.db, 60);
      assert.ok(changed.includes(stale.host.id));
      assert.ok(!changed.includes(fresh.host.id));
      assert.equal((await getHost(h.db, stale.host.id))?.status, "unreachable");
      assert.equal((await getHost(h.db, fresh.host.id))?.status, "online");
      assert.deepEqual(await markStaleHostsUnreachable(h.db, 60), [], "only changes are returned");

      const hb = await call(h, "POST", `/v1/hosts/${stale.host.id}/heartbeat`, {
        hostToken: stale.host_token,
        body: { address: "https://10.9.9.9:7000", memory_mb: 8192 },
      });
      assert.equal(hb.status, 204);
      const back = await getHost(h.db, stale.host.id);
      assert.equal(back?.status, "online");
      assert.equal(back?.address, "https://10.9.9.9:7000", "heartbeat facts update the host");
      assert.equal(back?.memory_mb, 8192);
      assert.equal(back?.cpu_cores, 2, "facts not sent stay");
    });

    it("rejects invalid input with the field named", async () => {
      const { token } = await newHost(h, "inputs");
      const cases: [Record<string, unknown>, string][] = [
        [{ ...FACTS, csr: CSR, address: "ftp://10.0.0.1/" }, "address"],
        [{ ...FACTS, csr: CSR, address: "not a url" }, "address"],
        [{ ...FACTS, csr: CSR, address: "https://u:p@10.0.0.1" }, "address"],
        [{ ...FACTS, csr: CSR, address: "http://10.0.0.1:50051" }, "address"],
        [{ ...FACTS, csr: CSR, memory_mb: -1 }, "memory_mb"],
        [{ ...FACTS, csr: CSR, cpu_cores: 1.5 }, "cpu_cores"],
        [{ ...FACTS, csr: CSR, disk_mb: "10" }, "disk_mb"],
        [{ ...FACTS, csr: CSR, runtime: "docker" }, "runtime"],
        [{ ...FACTS, csr: CSR, arch: "x86 64" }, "arch"],
        [{ ...FACTS, csr: CSR, extra: 1 }, ""],
      ];
      for (const [facts, field] of cases) {
        const res = await call(h, "POST", "/v1/hosts/register", { body: { token, ...facts } });
        assert.equal(res.status, 400, `${JSON.stringify(facts)} → ${JSON.stringify(res.body)}`);
        assert.equal(errorCode(res.body), "invalid_request");
        if (field)
          assert.match(
            (res.body as { error: { message: string } }).error.message,
            new RegExp(field),
          );
      }
      const badToken = await call(h, "POST", "/v1/hosts/register", {
        body: { ...FACTS, token: "xyz" },
      });
      assert.equal(badToken.status, 400);
      const badName = await call(h, "POST", "/v1/hosts", {
        bearer: h.adminToken,
        body: { name: "" },
      });
      assert.equal(badName.status, 400);
      const badId = await call(h, "GET", "/v1/hosts/nope", { bearer: h.adminToken });
      assert.equal(badId.status, 400);
      const malformed = await h.app.request("/v1/hosts/register", {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: "{",
      });
      assert.equal(malformed.status, 400);
      const badCsr = await call(h, "POST", "/v1/hosts/register", {
        body: {
          token,
          ...FACTS,
          csr: "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
        },
      });
      assert.equal(badCsr.status, 400);
      assert.equal(errorCode(badCsr.body), "invalid_csr");
      // The token was never consumed by the bad requests.
      const ok = await call(h, "POST", "/v1/hosts/register", {
        body: { token, csr: CSR, ...FACTS },
      });
      assert.equal(ok.status, 201);
    });

    it("delete: 409 with live sandboxes unless force; then the host and its tokens are gone", async () => {
      const creds = await registered(h, "doomed");
      const id = creds.host.id;
      const sandboxId = newSandboxId();
      await h.db.query(
        `INSERT INTO sandboxes (id, team_id, host_id, template, status, vcpus, memory_mb,
           disk_size_mb, timeout_sec)
         VALUES ($1, $2, $3, 'base', 'paused', 1, 512, 1024, 300)`,
        [sandboxId, h.teamId, id],
      );
      const refused = await call(h, "DELETE", `/v1/hosts/${id}`, { bearer: h.adminToken });
      assert.equal(refused.status, 409);
      assert.equal(errorCode(refused.body), "has_active_sandboxes");
      assert.deepEqual((refused.body as { error: { sandbox_ids: string[] } }).error.sandbox_ids, [
        sandboxId,
      ]);
      assert.equal((await getHost(h.db, id))?.status, "online");

      const forced = await call(h, "DELETE", `/v1/hosts/${id}?force=true`, {
        bearer: h.adminToken,
      });
      assert.equal(forced.status, 204);
      assert.equal(await getHost(h.db, id), undefined);
      const [sb] = await h.db.query<{ status: string; host_id: string | null }>(
        "SELECT status, host_id FROM sandboxes WHERE id = $1",
        [sandboxId],
      );
      assert.equal(sb?.status, "stopped", "a paused sandbox of a deleted host is not resumable");
      assert.equal(sb?.host_id, null);
      const tokens = await h.db.query("SELECT 1 FROM host_tokens WHERE host_id = $1", [id]);
      assert.equal(tokens.length, 0);

      const hb = await call(h, "POST", `/v1/hosts/${id}/heartbeat`, {
        hostToken: creds.host_token,
      });
      assert.equal(hb.status, 404, "the agent learns its host is gone");
      const ref = await call(h, "POST", "/v1/hosts/auth/refresh", {
        body: { refresh_token: creds.refresh_token, csr: CSR },
      });
      assert.equal(ref.status, 401);
      const gone = await call(h, "DELETE", `/v1/hosts/${id}`, { bearer: h.adminToken });
      assert.equal(gone.status, 404);

      const empty = await registered(h, "empty");
      const plain = await call(h, "DELETE", `/v1/hosts/${empty.host.id}`, {
        bearer: h.adminToken,
      });
      assert.equal(plain.status, 204, "no live sandboxes: no force needed");
    });
  });
}

// ---------------------------------------------------------------------------------------------
// The agent's side.

interface Served {
  url: string;
  close(): Promise<void>;
}

async function serveApp(h: Harness): Promise<Served> {
  const { server, port } = await new Promise<{ server: ReturnType<typeof serve>; port: number }>(
    (resolve) => {
      const s = serve({ fetch: h.app.fetch, hostname: "127.0.0.1", port: 0 }, (info) =>
        resolve({ server: s, port: (info as AddressInfo).port }),
      );
    },
  );
  return {
    url: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        (server as unknown as { closeAllConnections(): void }).closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

function collectingLog() {
  const lines: { level: string; msg: string; fields?: Record<string, unknown> }[] = [];
  const at = (level: string) => (msg: string, fields?: Record<string, unknown>) => {
    lines.push({ level, msg, ...(fields ? { fields } : {}) });
  };
  return { lines, log: { info: at("info"), warn: at("warn"), error: at("error") } };
}

async function until<T>(what: string, fn: () => Promise<T | undefined>, ms = 20_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

const agentFacts = (address: string) => () => ({
  address,
  runtime: "namespace" as const,
  arch: "x86_64",
  cpu_cores: 2,
  memory_mb: 2048,
  disk_mb: 4096,
  agent_version: "0.1.0",
});

describe("agent control-plane link (in process, pglite)", () => {
  let h: Harness;
  let cp: Served;
  let dir: string;
  before(async () => {
    h = await setUp("pglite");
    cp = await serveApp(h);
    dir = mkdtempSync(path.join(tmpdir(), "nestbox-link-"));
  });
  after(async () => {
    await cp?.close();
    await h?.t.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it("registers, stores 0600 credentials, heartbeats; refreshes a nearly expired token", async () => {
    const { id, token } = await newHost(h, "link");
    const file = credentialsPath(dir, "a");
    const { lines, log } = collectingLog();
    const link = await ControlPlaneLink.prepare({
      controlPlane: `${cp.url}/`,
      registrationToken: token,
      credentialsFile: file,
      log,
      heartbeatIntervalMs: 50,
    });
    await link.start(agentFacts("https://127.0.0.1:1234"));
    const stored = JSON.parse(readFileSync(file, "utf8")) as Record<string, string>;
    assert.equal(stored.hostId, id);
    assert.equal(stored.controlPlane, cp.url, "stored without the trailing slash");
    assert.equal(statSync(file).mode & 0o777, 0o600);
    const registeredAt = (await getHost(h.db, id))?.last_heartbeat_at?.getTime() ?? 0;
    await until("a heartbeat", async () => {
      const t = (await getHost(h.db, id))?.last_heartbeat_at?.getTime() ?? 0;
      return t > registeredAt ? t : undefined;
    });
    await link.stop();

    // A restart with credentials whose host token is about to expire refreshes it first.
    writeFileSync(
      file,
      JSON.stringify({
        ...stored,
        hostTokenExpiresAt: new Date(Date.now() + 60_000).toISOString(),
      }),
      { mode: 0o600 },
    );
    const second = await ControlPlaneLink.prepare({
      controlPlane: cp.url,
      registrationToken: undefined,
      credentialsFile: file,
      log,
      heartbeatIntervalMs: 50,
    });
    await second.start(agentFacts("https://127.0.0.1:1235"));
    const refreshed = await until("a refreshed credentials file", async () => {
      const now = JSON.parse(readFileSync(file, "utf8")) as Record<string, string>;
      return now.refreshToken !== stored.refreshToken ? now : undefined;
    });
    assert.equal(refreshed.hostId, id);
    await until("the new address", async () =>
      (await getHost(h.db, id))?.address === "https://127.0.0.1:1235" ? true : undefined,
    );
    await second.stop();
    const replay = await call(h, "POST", "/v1/hosts/auth/refresh", {
      body: { refresh_token: stored.refreshToken, csr: CSR },
    });
    assert.equal(replay.status, 401, "the agent rotated its refresh token");
    assert.ok(lines.some((l) => l.msg === "host token refreshed"));
    assert.ok(!lines.some((l) => l.level === "error"), JSON.stringify(lines));
  });

  it("without credentials or a token it refuses to start; a used token is rejected", async () => {
    const file = credentialsPath(dir, "b");
    const { log } = collectingLog();
    await assert.rejects(
      ControlPlaneLink.prepare({
        controlPlane: cp.url,
        registrationToken: undefined,
        credentialsFile: file,
        log,
      }),
      /registration-token/,
    );
    const { token } = await newHost(h, "used");
    await registerHost(h.db, h.deps.config.jwtSecret, {
      token,
      address: "https://127.0.0.1:1",
      runtime: "namespace",
      arch: "x86_64",
      cpuCores: 1,
      memoryMb: 1,
      diskMb: 1,
      agentVersion: "0.1.0",
    });
    const link = await ControlPlaneLink.prepare({
      controlPlane: cp.url,
      registrationToken: token,
      credentialsFile: file,
      log,
    });
    await assert.rejects(link.start(agentFacts("https://127.0.0.1:1")), /401/);
    assert.equal(existsSync(file), false);
  });

  it("stops heartbeating when its host is deleted and forgets its credentials", async () => {
    const { id, token } = await newHost(h, "deleted");
    const file = credentialsPath(dir, "c");
    const { lines, log } = collectingLog();
    const link = await ControlPlaneLink.prepare({
      controlPlane: cp.url,
      registrationToken: token,
      credentialsFile: file,
      log,
      heartbeatIntervalMs: 50,
    });
    let deletedCalls = 0;
    link.on({ onHostDeleted: () => deletedCalls++ });
    await link.start(agentFacts("https://127.0.0.1:1236"));
    const del = await call(h, "DELETE", `/v1/hosts/${id}`, { bearer: h.adminToken });
    assert.equal(del.status, 204);
    await until("the deleted-host message", async () =>
      lines.some((l) => l.level === "error" && /no longer knows this host/.test(l.msg))
        ? true
        : undefined,
    );
    assert.equal(existsSync(file), false);
    assert.equal(deletedCalls, 1, "the agent is told to destroy its sandboxes and exit");
    const count = lines.length;
    await sleep(300);
    assert.equal(lines.length, count, "no more heartbeats, no more log lines");
    await link.stop();
  });

  it("retries an unreachable control plane with backoff, logging sparsely", async () => {
    const port = await freePort();
    const { lines, log } = collectingLog();
    const { token } = await newHost(h, "later");
    const link = await ControlPlaneLink.prepare({
      controlPlane: `http://127.0.0.1:${port}`,
      registrationToken: token,
      credentialsFile: credentialsPath(dir, "d"),
      log,
    });
    const started = link.start(agentFacts("https://127.0.0.1:1237"));
    await sleep(3_500);
    const warnings = lines.filter((l) => l.level === "warn");
    // Attempts at 0, 1, 3 s (backoff 1 s, 2 s): 3 failures, warnings for the 1st and 2nd only.
    assert.equal(warnings.length, 2, JSON.stringify(lines));
    await link.stop();
    await started;
  });
});

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const port = (srv.address() as AddressInfo).port;
      srv.close(() => resolve(port));
    });
  });
}

// ---------------------------------------------------------------------------------------------
// A real agent process.

const nestboxCli = path.join(repoRoot, "packages/cli/dist/main.js");

interface AgentRun {
  child: ChildProcess;
  logs: () => string;
  stop(): Promise<void>;
}

async function startAgentProcess(args: string[], env: NodeJS.ProcessEnv = {}): Promise<AgentRun> {
  const child = spawn(process.execPath, [nestboxCli, "agent", ...args], {
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, ...env },
  });
  let logs = "";
  child.stderr?.on("data", (d: Buffer) => {
    logs += d.toString();
  });
  const lines = createInterface({ input: child.stdout as NodeJS.ReadableStream });
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`agent did not start:\n${logs}`)), 120_000);
    lines.on("line", (line) => {
      if (/agent listening on/.test(line)) {
        clearTimeout(timer);
        resolve();
      }
    });
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`agent exited with ${code}:\n${logs}`));
    });
  });
  return {
    child,
    logs: () => logs,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill("SIGTERM");
      const t = setTimeout(() => child.kill("SIGKILL"), 10_000);
      await once(child, "exit");
      clearTimeout(t);
    },
  };
}

describe("nestbox agent registers with a control plane (namespace runtime)", () => {
  let h: Harness;
  let cp: Served;
  let dataDir: string;
  let agent: AgentRun | undefined;
  before(async () => {
    h = await setUp("pglite");
    cp = await serveApp(h);
    dataDir = mkdtempSync(path.join(tmpdir(), "nestbox-agent-cp-"));
    shareBaseTemplate(dataDir);
  });
  after(async () => {
    await agent?.stop();
    await cp?.close();
    await h?.t.close();
    rmSync(dataDir, { recursive: true, force: true });
  });

  it("registers, becomes online at its advertised address, and reuses its credentials after a restart", async () => {
    const { id, token } = await newHost(h, "real");
    const port1 = await freePort();
    const common = ["--runtime", "namespace", "--instance", "h", "--slots", "6000-6009"];
    const withoutToken = await spawnAndWait([
      ...common,
      "--listen",
      `127.0.0.1:${port1}`,
      "--data-dir",
      dataDir,
      "--control-plane",
      cp.url,
    ]);
    assert.equal(withoutToken.code, 2, "no credentials and no token is a usage error");
    assert.match(withoutToken.stderr, /registration-token/);

    agent = await startAgentProcess(
      [
        ...common,
        "--listen",
        `127.0.0.1:${port1}`,
        "--data-dir",
        dataDir,
        "--control-plane",
        cp.url,
      ],
      { NESTBOX_REGISTRATION_TOKEN: token },
    );
    const online = await until("the host online", async () => {
      const host = await getHost(h.db, id);
      return host?.status === "online" ? host : undefined;
    });
    assert.equal(online.address, `https://127.0.0.1:${port1}`, "agents serve TLS only");
    assert.equal(online.runtime, "namespace");
    assert.ok((online.cpu_cores ?? 0) > 0 && (online.memory_mb ?? 0) > 0);
    // The host is online as soon as the control plane answered; the agent then stores the answer.
    const file = credentialsPath(dataDir, "h");
    await until("stored credentials", async () => (existsSync(file) ? true : undefined));
    assert.equal(statSync(file).mode & 0o777, 0o600);
    const creds = JSON.parse(readFileSync(file, "utf8")) as Record<string, string>;
    assert.equal(creds.hostId, id);
    const keyFile = path.join(path.dirname(file), "tls-key.pem");
    assert.equal(statSync(keyFile).mode & 0o777, 0o600, "the agent's key is 0600");
    await checkAgentTrust(h, id, online.address ?? "");
    await agent.stop();

    // Restart on another port, with no token: stored credentials; the heartbeat brings the
    // host back from unreachable and reports the new address.
    await h.db.query("UPDATE hosts SET status = 'unreachable' WHERE id = $1", [id]);
    const port2 = await freePort();
    agent = await startAgentProcess([
      ...common,
      "--listen",
      `127.0.0.1:${port2}`,
      "--data-dir",
      dataDir,
      "--control-plane",
      cp.url,
      "--advertise-url",
      `https://localhost:${port2}`,
    ]);
    const back = await until("a heartbeat from the restarted agent", async () => {
      const host = await getHost(h.db, id);
      return host?.status === "online" ? host : undefined;
    });
    assert.equal(back.address, `https://localhost:${port2}`);
    // The control plane calls it at its new address with the certificate it already had.
    const listed = await h.deps.agents.get(id, back.address).listSandboxes({});
    assert.ok(Array.isArray(listed.sandboxes));
    assert.match(agent.logs(), /using stored control plane credentials/);
    const hosts = await h.db.query("SELECT id FROM hosts");
    assert.equal(hosts.length, 1, "no second host was created");
    await agent.stop();
    agent = undefined;
  });
});

/** Every caller but the control plane is refused by a registered agent, and it by no other. */
async function checkAgentTrust(h: Harness, hostId: string, address: string): Promise<void> {
  const identity = h.deps.agents.identity;
  assert.ok(identity);
  const ca = identity.ca;
  const url = `${address}/hostagent.v1.HostAgentService/ListSandboxes`;
  const call = (tls: https.RequestOptions) =>
    new Promise<number>((resolve, reject) => {
      const req = https.request(url, {
        method: "POST",
        headers: { "content-type": "application/json" },
        ca: ca.certificatePem,
        ...tls,
        agent: false,
        timeout: 10_000,
      });
      req.on("response", (res) => {
        res.resume();
        res.on("end", () => resolve(res.statusCode ?? 0));
      });
      req.on("error", reject);
      req.on("timeout", () => req.destroy(new Error("timed out")));
      req.end("{}");
    });
  const cp = identity.clientTls();
  assert.equal(await call({ cert: cp.cert, key: cp.key }), 200, "the control plane is served");

  const other = (await CertificateAuthority.create()).ca;
  const otherId = await other.issueControlPlaneIdentity();
  const selfSigned = await CertificateAuthority.create();
  const expired = await ca.issueControlPlaneIdentity(-60_000);
  const hostKey = await scratchTlsKey();
  const hostCert = await ca.issueHostCertificate(
    await CertificateAuthority.checkRequest(await certificateRequest(hostKey)),
    hostId,
    address,
  );
  const refused: [string, https.RequestOptions][] = [
    ["no client certificate", {}],
    [
      "a self-signed certificate",
      { cert: selfSigned.ca.certificatePem, key: pkcs8Pem(selfSigned.pkcs8) },
    ],
    ["another CA's certificate", { cert: otherId.certPem, key: otherId.keyPem }],
    ["an expired certificate", { cert: expired.certPem, key: expired.keyPem }],
    ["a host's certificate", { cert: hostCert.certificatePem, key: hostKey }],
  ];
  for (const [what, tls] of refused)
    await assert.rejects(call(tls), Error, `${what} must be refused`);
  await assert.rejects(
    fetch(url.replace("https:", "http:"), { method: "POST", body: "{}" }),
    "plain HTTP is not served",
  );
  // The control plane refuses an agent whose certificate names another host.
  await assert.rejects(
    h.deps.agents.get("host_aaaaaaaaaaaaaaaaaaaa", address).listSandboxes({}),
    /not of host_aaaaaaaaaaaaaaaaaaaa/,
  );
  h.deps.agents.forget("host_aaaaaaaaaaaaaaaaaaaa");
}

function spawnAndWait(args: string[]): Promise<{ code: number | null; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [nestboxCli, "agent", ...args], {
      stdio: ["ignore", "ignore", "pipe"],
      env: { ...process.env, NESTBOX_REGISTRATION_TOKEN: "" },
    });
    let stderr = "";
    child.stderr?.on("data", (d: Buffer) => {
      stderr += d.toString();
    });
    child.once("exit", (code) => resolve({ code, stderr }));
  });
}
