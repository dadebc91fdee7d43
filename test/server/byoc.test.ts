/**
 * BYOC teams and placement with two real host agents (both the namespace runtime, to keep the
 * machine light; instance `b` slots 9000-9049 is a regular host, instance `c` slots 9050-9099
 * team A's BYOC host) registered with a control plane in this process (PGlite, debug log).
 *
 * Team A (BYOC) and team B (regular) create sandboxes: A's land only on A's host, B's only on
 * the regular one; A's member can create sandboxes but not register, drain or delete hosts;
 * host tags and draining constrain placement, each refusal a 503 saying why; a draining host's
 * sandboxes keep working; heartbeats report what each agent has committed; a forced delete
 * terminates a real agent.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import {
  type HostStack,
  type StackAgent,
  startHostStack,
  startStackAgent,
  until,
} from "./support/host-stack.js";
import { type TestTeam, type TestUser, testTeam, testUser } from "./support/host-teams.js";

const SMALL = { template: "base", vcpus: 1, memory_mb: 256, timeout_sec: 0 };

describe("BYOC teams and placement (two real agents, namespace runtime)", () => {
  let stack: HostStack;
  let admin: TestUser;
  let a: TestTeam;
  let b: TestTeam;
  let shared: { id: string; token: string };
  let own: { id: string; token: string };
  const agents: StackAgent[] = [];
  const sandboxes: { id: string; bearer: string }[] = [];

  const create = async (bearer: string, extra: Record<string, unknown> = {}) => {
    const res = await stack.api("POST", "/v1/sandboxes", bearer, { ...SMALL, ...extra });
    if (res.status === 201) sandboxes.push({ id: res.body.id, bearer });
    return res;
  };
  const hostOf = async (bearer: string, id: string) =>
    (await stack.api("GET", `/v1/sandboxes/${id}`, bearer)).body.host_id as string;

  before(async () => {
    stack = await startHostStack();
    const db = stack.server.db;
    const secret = stack.server.config.jwtSecret;
    a = await testTeam(db, secret, "Alpha", true);
    b = await testTeam(db, secret, "Beta", false);
    admin = await testUser(db, secret, b.id, "member", { isAdmin: true });
  });
  after(async () => {
    for (const s of sandboxes)
      await stack.api("DELETE", `/v1/sandboxes/${s.id}`, s.bearer).catch((err: unknown) => {
        console.error(`destroy ${s.id}: ${String(err)}`);
      });
    for (const ag of agents) await ag.stop();
    await stack?.close();
  });

  it("hosts: the admin registers a regular one, A's owner (not its member) A's own", async () => {
    const r = await stack.api("POST", "/v1/hosts", admin.token, { name: "shared" });
    assert.equal(r.status, 201, JSON.stringify(r.body));
    shared = { id: r.body.host.id, token: r.body.registration_token };
    const denied = await stack.api("POST", "/v1/hosts", a.member.token, {
      name: "a-own",
      type: "byoc",
      team_id: a.id,
    });
    assert.equal(denied.status, 403);
    const o = await stack.api("POST", "/v1/hosts", a.owner.token, {
      name: "a-own",
      type: "byoc",
      team_id: a.id,
    });
    assert.equal(o.status, 201, JSON.stringify(o.body));
    own = { id: o.body.host.id, token: o.body.registration_token };

    agents.push(
      await startStackAgent(stack, { instance: "b", slots: "9000-9049", token: shared.token }),
    );
    await until("the regular host online", async () => {
      const h = await stack.api("GET", `/v1/hosts/${shared.id}`, admin.token);
      return h.body.status === "online" ? true : undefined;
    });
  });

  it("a BYOC team without an online host of its own gets 503, never the regular host", async () => {
    const res = await create(a.member.token);
    assert.equal(res.status, 503, JSON.stringify(res.body));
    assert.equal(res.body.error.code, "no_hosts_available");
    assert.match(res.body.error.message, /Alpha is a BYOC team and none of its hosts is online/);
  });

  it("placements never cross: A's sandboxes on A's host, B's on the regular one", async () => {
    agents.push(
      await startStackAgent(stack, { instance: "c", slots: "9050-9099", token: own.token }),
    );
    await until("A's host online", async () => {
      const h = await stack.api("GET", `/v1/hosts/${own.id}`, a.member.token);
      return h.body.status === "online" ? true : undefined;
    });
    for (const [bearer, host] of [
      [a.member.token, own.id],
      [a.owner.token, own.id],
      [b.member.token, shared.id],
      [b.owner.token, shared.id],
    ] as const) {
      const res = await create(bearer);
      assert.equal(res.status, 201, JSON.stringify(res.body));
      assert.equal(res.body.host_id, host);
    }
    // The scheduler logged each decision at debug level, with candidates and scores.
    const decisions = stack.logs.filter((l) => l.startsWith("[scheduler]"));
    assert.ok(decisions.length >= 4, stack.logs.slice(-20).join("\n"));
    assert.ok(
      decisions.some((l) => l.includes(a.id) && l.includes("(byoc)") && l.includes(own.id)),
    );
    assert.ok(decisions.every((l) => /score=-?\d/.test(l)));
    assert.ok(
      decisions.filter((l) => l.includes(b.id)).every((l) => !l.includes(own.id)),
      "A's host is never a candidate for B",
    );
  });

  it("A's member sees A's host only and cannot drain, tag or delete it", async () => {
    const list = await stack.api("GET", "/v1/hosts", a.member.token);
    assert.deepEqual(
      list.body.hosts.map((h: { id: string }) => h.id),
      [own.id],
    );
    for (const [method, route, body] of [
      ["POST", `/v1/hosts/${own.id}/drain`, undefined],
      ["POST", `/v1/hosts/${own.id}/tags`, { tag: "x" }],
      ["DELETE", `/v1/hosts/${own.id}?force=true`, undefined],
      ["POST", `/v1/hosts/${own.id}/token`, undefined],
    ] as const) {
      const res = await stack.api(method, route, a.member.token, body);
      assert.equal(res.status, 403, `${method} ${route}`);
    }
    const other = await stack.api("DELETE", `/v1/hosts/${shared.id}`, a.owner.token);
    assert.equal(other.status, 404, "the regular host does not exist for A");
  });

  it("heartbeats report what each agent has committed", async () => {
    const host = await until("A's usage in a heartbeat", async () => {
      const h = (await stack.api("GET", `/v1/hosts/${own.id}`, a.owner.token)).body;
      return h.sandbox_count === 2 ? h : undefined;
    });
    assert.equal(host.used_memory_mb, 512);
    assert.ok(host.used_disk_mb >= 2 * 1024);
    assert.equal(host.active_sandbox_count, 2);
  });

  it("host tags constrain placement, inside the team's pool", async () => {
    const none = await create(b.member.token, { host_tags: ["gpu"] });
    assert.equal(none.status, 503);
    assert.match(none.body.error.message, /no online host has the tag gpu/);
    const tag = await stack.api("POST", `/v1/hosts/${shared.id}/tags`, admin.token, { tag: "gpu" });
    assert.equal(tag.status, 204);
    const placed = await create(b.member.token, { host_tags: ["gpu"] });
    assert.equal(placed.status, 201, JSON.stringify(placed.body));
    assert.equal(placed.body.host_id, shared.id);
    const isolated = await create(a.member.token, { host_tags: ["gpu"] });
    assert.equal(isolated.status, 503, "the regular host's tag does not open it to A");
    const bad = await create(b.member.token, { host_tags: ["GPU!"] });
    assert.equal(bad.status, 400);
  });

  it("a draining host takes no new sandboxes; its sandboxes keep working", async () => {
    const drained = await stack.api("POST", `/v1/hosts/${shared.id}/drain`, admin.token);
    assert.equal(drained.status, 200);
    assert.equal(drained.body.draining, true);
    const refused = await create(b.member.token);
    assert.equal(refused.status, 503);
    assert.match(refused.body.error.message, /draining/);
    const mine = sandboxes.find((s) => s.bearer === b.member.token);
    assert.ok(mine);
    assert.equal(await hostOf(b.member.token, mine.id), shared.id);
    const exec = await stack.api("POST", `/v1/sandboxes/${mine.id}/exec`, b.member.token, {
      cmd: "echo",
      args: ["still here"],
    });
    assert.equal(exec.status, 200, JSON.stringify(exec.body));
    assert.equal(exec.body.stdout, "still here\n");
    // A is unaffected: its own host is not draining.
    assert.equal((await create(a.member.token)).status, 201);
    await stack.api("POST", `/v1/hosts/${shared.id}/undrain`, admin.token);
    const again = await create(b.member.token);
    assert.equal(again.status, 201, JSON.stringify(again.body));
    assert.equal(again.body.host_id, shared.id);
  });

  it("A's owner deletes A's host: 409 with its sandboxes, then forced, which stops its agent", async () => {
    const preview = await stack.api("GET", `/v1/hosts/${own.id}/delete-preview`, a.admin.token);
    assert.equal(preview.status, 200);
    const onA = sandboxes.filter((s) => [a.member.token, a.owner.token].includes(s.bearer));
    assert.deepEqual([...preview.body.sandbox_ids].sort(), onA.map((s) => s.id).sort());
    const refused = await stack.api("DELETE", `/v1/hosts/${own.id}`, a.owner.token);
    assert.equal(refused.status, 409);
    assert.equal(refused.body.error.code, "has_active_sandboxes");
    const forced = await stack.api("DELETE", `/v1/hosts/${own.id}?force=true`, a.owner.token);
    assert.equal(forced.status, 204);
    const agentC = agents[1];
    assert.ok(agentC);
    await until("agent c to exit after Terminate", async () =>
      agentC.agent.child.exitCode !== null || agentC.agent.child.signalCode !== null
        ? true
        : undefined,
    );
    for (const s of onA) {
      const row = await stack.api("GET", `/v1/sandboxes/${s.id}`, s.bearer);
      assert.equal(row.body.status, "stopped");
    }
    const res = await create(a.member.token);
    assert.equal(res.status, 503, "A has no host any more, and still none of the regular ones");
  });
});
