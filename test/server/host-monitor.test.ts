/**
 * The host monitor and the agent's side of losing the control plane, with a real agent
 * (namespace runtime, instance `b`, slots 9000-9049) and a control plane in this process whose
 * staleness is shortened to 3 s (90 s by default):
 *  - the agent goes silent (SIGSTOP): its host becomes unreachable, its running sandbox
 *    `missing`, a paused one stays paused; a sandbox destroyed meanwhile is stopped in the
 *    database only. It comes back (SIGCONT): online again, the missing sandbox `running` as the
 *    agent reports it, and the one the database stopped destroyed on the agent. Audited.
 *  - the control plane restarts with another JWT secret and the host's refresh tokens revoked:
 *    the agent's refresh is refused, so it pauses its running sandboxes and keeps retrying;
 *    once a refresh works again it heartbeats again.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, describe, it } from "node:test";
import { issueUserToken } from "../../packages/server/src/auth/user-tokens.js";
import {
  type HostStack,
  type StackAgent,
  startHostStack,
  startStackAgent,
  until,
} from "./support/host-stack.js";
import { type TestTeam, type TestUser, testTeam, testUser } from "./support/host-teams.js";

const SMALL = { template: "base", vcpus: 1, memory_mb: 256, timeout_sec: 0 };

describe("host monitor and control-plane loss (real agent, namespace runtime)", () => {
  let stack: HostStack & { dataDir: string };
  let port: number;
  let agent: StackAgent | undefined;
  let admin: TestUser;
  let team: TestTeam;
  let hostId: string;
  const made: string[] = [];

  const status = async (id: string) =>
    (await stack.api("GET", `/v1/sandboxes/${id}`, team.owner.token)).body.status as string;
  const onAgent = async () => {
    const res = await agent?.agent.client.listSandboxes({});
    return new Map((res?.sandboxes ?? []).map((s) => [s.sandboxId, s.status]));
  };
  const audit = async () =>
    (
      await stack.server.db.query<{ action: string }>(
        "SELECT action FROM audit_events WHERE resource_id = $1 ORDER BY id",
        [hostId],
      )
    ).map((r) => r.action);

  before(async () => {
    stack = await startHostStack({ start: { hostStaleSec: 3, reconcileMs: 1000 } });
    port = Number(new URL(stack.url).port);
    const secret = stack.server.config.jwtSecret;
    team = await testTeam(stack.server.db, secret, "Gamma", false);
    admin = await testUser(stack.server.db, secret, team.id, "member", { isAdmin: true });
    const h = await stack.api("POST", "/v1/hosts", admin.token, { name: "monitored" });
    assert.equal(h.status, 201);
    hostId = h.body.host.id;
    agent = await startStackAgent(stack, {
      instance: "b",
      slots: "9000-9049",
      token: h.body.registration_token,
    });
    await until("the host online", async () =>
      (await stack.api("GET", `/v1/hosts/${hostId}`, admin.token)).body.status === "online"
        ? true
        : undefined,
    );
  });
  after(async () => {
    if (agent?.agent.child.signalCode === null) agent.agent.child.kill("SIGCONT");
    await agent?.stop();
    await stack?.close();
  });

  it("silent → unreachable (running → missing); back → online, reconciled with the agent", async () => {
    for (let i = 0; i < 3; i++) {
      const res = await stack.api("POST", "/v1/sandboxes", team.owner.token, SMALL);
      assert.equal(res.status, 201, JSON.stringify(res.body));
      made.push(res.body.id);
    }
    const [running, paused, doomed] = made as [string, string, string];
    assert.equal(
      (await stack.api("POST", `/v1/sandboxes/${paused}/pause`, team.owner.token)).status,
      200,
    );

    agent?.agent.child.kill("SIGSTOP");
    await until(
      "the host unreachable",
      async () =>
        (await stack.api("GET", `/v1/hosts/${hostId}`, admin.token)).body.status === "unreachable"
          ? true
          : undefined,
      20_000,
    );
    assert.equal(await status(running), "missing");
    assert.equal(await status(doomed), "missing");
    assert.equal(await status(paused), "paused");
    // Destroyed while its host is away: stopped in the database; the agent still has it.
    const del = await stack.api("DELETE", `/v1/sandboxes/${doomed}`, team.owner.token);
    assert.equal(del.status, 204, JSON.stringify(del.body));
    assert.equal(await status(doomed), "stopped");

    agent?.agent.child.kill("SIGCONT");
    await until("the missing sandbox running again", async () =>
      (await status(running)) === "running" ? true : undefined,
    );
    assert.equal(
      (await stack.api("GET", `/v1/hosts/${hostId}`, admin.token)).body.status,
      "online",
    );
    assert.equal(await status(paused), "paused");
    await until("the stopped sandbox destroyed on the agent", async () =>
      (await onAgent()).has(doomed) ? undefined : true,
    );
    const live = await onAgent();
    assert.equal(live.get(running) !== undefined, true);
    const exec = await stack.api("POST", `/v1/sandboxes/${running}/exec`, team.owner.token, {
      cmd: "true",
    });
    assert.equal(exec.status, 200, "the sandbox is usable again");
    const actions = await audit();
    assert.ok(
      actions.includes("host.marked_down") && actions.includes("host.marked_up"),
      String(actions),
    );
    assert.ok(
      stack.logs.some((l) => l.includes(`[sandbox ${doomed}] destroyed on host ${hostId}`)),
      "the reconciler destroyed it",
    );
  });

  it("a refused refresh pauses the agent's running sandboxes; it keeps retrying until accepted", async () => {
    const [running] = made as [string];
    assert.equal(await status(running), "running");
    await stack.server.db.query(
      "UPDATE host_tokens SET revoked_at = now() WHERE host_id = $1 AND kind = 'refresh' AND revoked_at IS NULL",
      [hostId],
    );
    const [latest] = await stack.server.db.query<{ id: string }>(
      "SELECT id FROM host_tokens WHERE host_id = $1 AND kind = 'refresh' ORDER BY created_at DESC, id DESC LIMIT 1",
      [hostId],
    );
    assert.ok(latest);
    // Another JWT secret: the agent's host token is no longer valid, and its refresh token is
    // revoked, so the control plane refuses it for good (until an operator steps in).
    await stack.close(true);
    stack = await startHostStack({
      port,
      dataDir: stack.dataDir,
      jwtSecret: randomBytes(32),
      start: { hostStaleSec: 3, reconcileMs: 1000 },
    });
    // Sessions signed with the old secret are void too: the test's users log in again.
    const secret = stack.server.config.jwtSecret;
    admin.token = (
      await issueUserToken(secret, { userId: admin.id, teamId: team.id, role: "member" })
    ).token;
    team.owner.token = (
      await issueUserToken(secret, { userId: team.owner.id, teamId: team.id, role: "owner" })
    ).token;
    await until(
      "the agent to pause its running sandbox",
      async () => ((await onAgent()).get(running) === "paused" ? true : undefined),
      60_000,
    );
    assert.match(
      agent?.agent.logs() ?? "",
      /refused this host's credentials: sandboxes are paused/,
    );

    await stack.server.db.query("UPDATE host_tokens SET revoked_at = NULL WHERE id = $1", [
      latest.id,
    ]);
    await until(
      "the agent accepted again",
      async () =>
        /accepts this host's credentials again/.test(agent?.agent.logs() ?? "") ? true : undefined,
      90_000,
    );
    await until("a heartbeat with the new token", async () =>
      (await stack.api("GET", `/v1/hosts/${hostId}`, admin.token)).body.status === "online"
        ? true
        : undefined,
    );
    // The reconciler takes the agent's word: the sandbox is paused, and resumes.
    await until("the sandbox paused in the database", async () =>
      (await status(running)) === "paused" ? true : undefined,
    );
    const resumed = await stack.api(
      "POST",
      `/v1/sandboxes/${running}/resume`,
      team.owner.token,
      {},
    );
    assert.equal(resumed.status, 200, JSON.stringify(resumed.body));
  });
});
