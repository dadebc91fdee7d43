/**
 * Several control planes on one PostgreSQL (issue 14): two `nestbox server` processes behind
 * haproxy, two namespace agents. Sessions work on either replica; two replicas acting on one
 * sandbox at once give one winner and a clear 409; create/exec/pause/resume load (and E2B
 * sandboxes with short lifetimes) runs through haproxy while one replica is SIGKILLed and
 * restarted. Afterwards every operation succeeded or got a retryable error, the database and
 * the agents agree, nothing is lost or leaked, and no sandbox was expired twice.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { type Cluster, startCluster, waitFor } from "./support/replicas-cluster.js";

/** Bounds of the load (count and time). */
const WORKERS = 3;
const MAX_CYCLES = 12;
const LOAD_MS = 45_000;
const KILL_AT_MS = 12_000;
const DOWN_MS = 4_000;
const E2B_SANDBOXES = 10;
const LIVE = ["pending", "running", "paused", "missing"];

interface Res {
  status: number | "network";
  // biome-ignore lint/suspicious/noExplicitAny: responses are checked field by field
  body: any;
  /** A 5xx that is not one of our JSON errors: haproxy's own page. */
  fromProxy: boolean;
}

const isOk = (r: Res) => typeof r.status === "number" && r.status < 300;
/** Cut connections and haproxy's 502/503/504, and our 503s (host or capacity: try again). */
const isRetryable = (r: Res) =>
  r.status === "network" ||
  (r.fromProxy && [502, 503, 504].includes(r.status)) ||
  (!r.fromProxy && r.status === 503);

interface Outcome {
  op: string;
  sandbox?: string;
  status: number | "network";
  code?: string;
  verdict: "ok" | "retryable" | "failure";
}

let cluster: Cluster;

async function call(
  base: string,
  method: string,
  route: string,
  body?: unknown,
  headers: Record<string, string> = {},
): Promise<Res & { headers?: Headers }> {
  try {
    const res = await fetch(`${base}${route}`, {
      method,
      headers: {
        "X-API-Key": cluster.adminKey,
        ...(body === undefined ? {} : { "Content-Type": "application/json" }),
        ...headers,
      },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(90_000),
    });
    const text = await res.text();
    const json = (res.headers.get("content-type") ?? "").includes("application/json");
    let parsed: unknown = text;
    if (json && text) parsed = JSON.parse(text);
    return {
      status: res.status,
      body: parsed,
      fromProxy: res.status >= 500 && !json,
      headers: res.headers,
    };
  } catch (err) {
    return { status: "network", body: String((err as Error).cause ?? err), fromProxy: false };
  }
}

describe("control-plane replicas behind haproxy", { timeout: 240_000 }, () => {
  before(async () => {
    cluster = await startCluster({
      agents: [
        { instance: "p", slots: "9400-9449" },
        { instance: "t", slots: "9450-9499" },
      ],
      reconcileSec: 2,
      heartbeatSec: 2,
    });
  });

  after(async () => {
    await cluster?.close();
  });

  const [a, b] = [() => cluster.servers[0], () => cluster.servers[1]];
  let cookie = "";

  it("a browser session from one replica works on the other", async () => {
    const login = await call(
      a().url,
      "POST",
      "/v1/auth/login",
      { email: cluster.adminEmail, password: cluster.adminPassword },
      { "X-Nestbox-CSRF": "1" },
    );
    assert.equal(login.status, 200, JSON.stringify(login.body));
    cookie = (login.headers?.get("set-cookie") ?? "").split(";")[0] ?? "";
    assert.match(cookie, /^nbx_refresh=/);
    const me = await call(b().url, "GET", "/v1/me", undefined, {
      Authorization: `Bearer ${login.body.token}`,
    });
    assert.equal(me.status, 200, JSON.stringify(me.body));
    assert.equal(me.body.user.email, cluster.adminEmail);
    // The refresh token rotates on the other replica, and its access token works on the first.
    const refreshed = await call(b().url, "POST", "/v1/auth/refresh", undefined, {
      Cookie: cookie,
      "X-Nestbox-CSRF": "1",
    });
    assert.equal(refreshed.status, 200, JSON.stringify(refreshed.body));
    cookie = (refreshed.headers?.get("set-cookie") ?? "").split(";")[0] ?? "";
    const meA = await call(a().url, "GET", "/v1/me", undefined, {
      Authorization: `Bearer ${refreshed.body.token}`,
    });
    assert.equal(meA.status, 200);
  });

  it("two replicas acting on one sandbox at once: one wins, the other gets 409", async () => {
    const created = await call(cluster.url, "POST", "/v1/sandboxes", { template: "base" });
    assert.equal(created.status, 201, JSON.stringify(created.body));
    const id = created.body.id as string;
    const both = async (method: string, route: string) => {
      const rs = await Promise.all([call(a().url, method, route), call(b().url, method, route)]);
      return rs.sort((x, y) => Number(x.status) - Number(y.status));
    };
    for (const action of ["pause", "resume"]) {
      const [win, lose] = await both("POST", `/v1/sandboxes/${id}/${action}`);
      assert.equal(win?.status, 200, `${action}: ${JSON.stringify(win?.body)}`);
      assert.equal(lose?.status, 409, `${action}: ${JSON.stringify(lose?.body)}`);
      assert.equal(lose?.body.error.code, "invalid_state");
    }
    const [d1, d2] = await both("DELETE", `/v1/sandboxes/${id}`);
    assert.deepEqual([d1?.status, d2?.status], [204, 204]);
    const [row] = await cluster.db.db.query<{ status: string }>(
      "SELECT status FROM sandboxes WHERE id = $1",
      [id],
    );
    assert.equal(row?.status, "stopped");
    for (const { agent } of cluster.agents) {
      const listed = await agent.client.listSandboxes({});
      assert.ok(!listed.sandboxes.some((s) => s.sandboxId === id));
    }
  });

  it("the reconciler finishes what a dead replica left half-done", async () => {
    const created = await call(cluster.url, "POST", "/v1/sandboxes", { template: "base" });
    assert.equal(created.status, 201, JSON.stringify(created.body));
    const id = created.body.id as string;
    const statusIs = async (want: string) =>
      (
        await cluster.db.db.query("SELECT 1 FROM sandboxes WHERE id = $1 AND status = $2", [
          id,
          want,
        ])
      ).length === 1;
    // Its creator died after the agent made it, before writing `running` (a minute ago).
    await cluster.db.db.query(
      "UPDATE sandboxes SET status = 'pending', created_at = now() - interval '2 minutes' WHERE id = $1",
      [id],
    );
    await waitFor(
      () => statusIs("running"),
      20_000,
      () => "pending row not adopted",
    );
    // A resume whose replica died after the agent resumed it (or a pause before the agent call).
    await cluster.db.db.query(
      "UPDATE sandboxes SET status = 'paused', updated_at = now() - interval '2 minutes' WHERE id = $1",
      [id],
    );
    await waitFor(
      () => statusIs("running"),
      20_000,
      () => "paused row not adopted",
    );
    // A fresh write is left alone: that replica may still be working on it.
    await cluster.db.db.query(
      "UPDATE sandboxes SET status = 'paused', updated_at = now() WHERE id = $1",
      [id],
    );
    await sleep(5000);
    assert.ok(await statusIs("paused"), "a paused row seconds old was changed");
    await cluster.db.db.query("UPDATE sandboxes SET status = 'running' WHERE id = $1", [id]);
    const destroyed = await call(cluster.url, "DELETE", `/v1/sandboxes/${id}`);
    assert.equal(destroyed.status, 204);
    // A create whose replica died before the agent ever heard of it.
    await cluster.db.db.query(
      "UPDATE sandboxes SET status = 'pending', created_at = now() - interval '2 minutes' WHERE id = $1",
      [id],
    );
    await waitFor(
      () => statusIs("error"),
      20_000,
      () => "pending row never failed",
    );
  });

  it("load through haproxy survives a SIGKILLed replica; database and agents agree", async () => {
    const outcomes: Outcome[] = [];
    const kept: string[] = [];
    const destroyed: string[] = [];
    const e2b: string[] = [];
    const record = (op: string, r: Res, sandbox?: string, uncertain = false) => {
      const code = typeof r.body === "object" ? r.body?.error?.code : undefined;
      // After an attempt whose outcome is unknown (cut, 502), "already in that state" is fine.
      const verdict = isOk(r)
        ? "ok"
        : isRetryable(r) || (uncertain && r.status === 409 && code === "invalid_state")
          ? "retryable"
          : "failure";
      outcomes.push({ op, sandbox, status: r.status, code, verdict });
      return verdict;
    };
    const statusOf = async (id: string): Promise<string | undefined> => {
      for (let i = 0; i < 20; i++) {
        const r = await call(cluster.url, "GET", `/v1/sandboxes/${id}`);
        if (isOk(r)) return r.body.status as string;
        if (record("get", r, id) === "failure") return undefined;
        await sleep(300);
      }
      return undefined;
    };
    /** One operation, retried (after reading the sandbox's state) while its errors are retryable. */
    const step = async (
      id: string,
      op: string,
      req: () => Promise<Res>,
      done: (status: string) => boolean,
      check: (r: Res) => void = () => {},
    ): Promise<boolean> => {
      for (let attempt = 0; attempt < 8; attempt++) {
        const r = await req();
        const verdict = record(op, r, id, attempt > 0);
        if (verdict === "ok") {
          check(r);
          return true;
        }
        if (verdict === "failure") return false;
        const status = await statusOf(id);
        if (status && done(status)) return true;
        await sleep(500);
      }
      outcomes.push({ op, sandbox: id, status: "network", verdict: "failure" });
      return false;
    };
    const exec = (id: string, word: string) =>
      step(
        id,
        "exec",
        () => call(cluster.url, "POST", `/v1/sandboxes/${id}/exec`, { cmd: "echo", args: [word] }),
        () => false,
        (r) => assert.equal(r.body.stdout, `${word}\n`),
      );

    const start = Date.now();
    const loadEnd = start + LOAD_MS;
    const worker = async (w: number) => {
      for (let cycle = 0; cycle < MAX_CYCLES && Date.now() < loadEnd; cycle++) {
        const created = await call(cluster.url, "POST", "/v1/sandboxes", {
          template: "base",
          timeout_sec: 900,
        });
        if (record("create", created) !== "ok") continue;
        const id = created.body.id as string;
        const word = `w${w}c${cycle}`;
        if (!(await exec(id, word))) continue;
        const pause = () => call(cluster.url, "POST", `/v1/sandboxes/${id}/pause`);
        if (!(await step(id, "pause", pause, (s) => s === "paused"))) continue;
        const resume = () => call(cluster.url, "POST", `/v1/sandboxes/${id}/resume`);
        if (!(await step(id, "resume", resume, (s) => s === "running"))) continue;
        if (!(await exec(id, `${word}r`))) continue;
        if (cycle % 3 === 2) {
          kept.push(id);
          continue;
        }
        const destroy = () => call(cluster.url, "DELETE", `/v1/sandboxes/${id}`);
        if (await step(id, "destroy", destroy, (s) => s === "stopped")) destroyed.push(id);
      }
    };
    // E2B sandboxes with lifetimes of a few seconds: their expiry runs across the kill.
    const e2bCreator = async () => {
      for (let i = 0; i < E2B_SANDBOXES && Date.now() < loadEnd - 10_000; i++) {
        const r = await call(cluster.url, "POST", "/sandboxes", {
          templateID: "base",
          timeout: 3 + (i % 4),
        });
        if (record("e2b-create", r) === "ok") e2b.push(r.body.sandboxID as string);
        await sleep(2500);
      }
    };
    const killer = async () => {
      await sleep(KILL_AT_MS);
      await a().kill();
      await sleep(DOWN_MS);
      await a().start();
    };
    await Promise.all([
      killer(),
      e2bCreator(),
      ...Array.from({ length: WORKERS }, (_, w) => worker(w)),
    ]);
    const loadMs = Date.now() - start;

    const failures = outcomes.filter((o) => o.verdict === "failure");
    const summary = `${outcomes.length} operations in ${loadMs} ms: ${
      outcomes.filter((o) => o.verdict === "ok").length
    } ok, retryable errors: ${JSON.stringify(outcomes.filter((o) => o.verdict === "retryable"))}`;
    console.log(summary);
    assert.deepEqual(failures, [], summary);
    assert.ok(
      outcomes.filter((o) => o.op === "create" && o.verdict === "ok").length >= WORKERS * 2,
      summary,
    );
    assert.ok(e2b.length >= 3, `only ${e2b.length} E2B sandboxes were created`);

    // The session a replica issued before the kill still refreshes on the restarted one.
    const refreshed = await call(a().url, "POST", "/v1/auth/refresh", undefined, {
      Cookie: cookie,
      "X-Nestbox-CSRF": "1",
    });
    assert.equal(refreshed.status, 200, JSON.stringify(refreshed.body));

    // E2B sandboxes all reach their end (expired on whichever replica holds the job).
    await waitFor(
      async () =>
        (
          await cluster.db.db.query(
            "SELECT 1 FROM sandboxes WHERE id = ANY($1::text[]) AND status = ANY($2::text[])",
            [e2b, LIVE],
          )
        ).length === 0,
      60_000,
      () => "E2B sandboxes still live after their end",
    );

    // Database and agents agree (the reconciler adopts what a killed replica left half-done).
    let problems: string[] = [];
    await waitFor(
      async () => {
        problems = await disagreements(cluster);
        return problems.length === 0;
      },
      100_000,
      () => problems.join("\n"),
    );

    // Nothing lost: kept sandboxes run and answer; destroyed ones are gone.
    for (const id of kept) {
      const r = await call(cluster.url, "POST", `/v1/sandboxes/${id}/exec`, {
        cmd: "echo",
        args: ["still-here"],
      });
      assert.equal(r.status, 200, `${id}: ${JSON.stringify(r.body)}`);
      assert.equal(r.body.stdout, "still-here\n");
    }
    const stoppedRows = await cluster.db.db.query<{ id: string }>(
      "SELECT id FROM sandboxes WHERE id = ANY($1::text[]) AND status = 'stopped'",
      [destroyed],
    );
    assert.equal(stoppedRows.length, destroyed.length);

    const logs = cluster.servers.map((s) => s.output).join("\n");
    const reconciled = logs.split("\n").filter((l) => / reconciled: /.test(l));
    console.log(`reconciler changes after the kill:\n${reconciled.join("\n")}`);

    // Nothing expired twice: one "end time reached" per E2B sandbox at most, across every run
    // of both replicas, and one running period each, closed.
    for (const id of e2b) {
      const ends = logs.split("\n").filter((l) => l.includes(`[sandbox ${id}] end time reached`));
      assert.ok(ends.length <= 1, `${id} expired ${ends.length} times:\n${ends.join("\n")}`);
    }
    const periods = await cluster.db.db.query<{ sandbox_id: string; n: number; open: number }>(
      `SELECT sandbox_id, count(*)::int AS n, count(*) FILTER (WHERE ended_at IS NULL)::int AS open
       FROM sandbox_running_periods WHERE sandbox_id = ANY($1::text[]) GROUP BY sandbox_id`,
      [e2b],
    );
    for (const p of periods) assert.deepEqual([p.n, p.open], [1, 0], p.sandbox_id);

    // Both replicas ran the jobs' lock dance without double work: the expiry job ran somewhere.
    assert.match(logs, /end time reached: killed/);

    // Clean up through the API: every live sandbox destroyed, both hosts empty.
    const live = await cluster.db.db.query<{ id: string }>(
      "SELECT id FROM sandboxes WHERE status = ANY($1::text[])",
      [LIVE],
    );
    for (const { id } of live) {
      const r = await call(cluster.url, "DELETE", `/v1/sandboxes/${id}`);
      assert.equal(r.status, 204, `${id}: ${JSON.stringify(r.body)}`);
    }
    for (const { agent } of cluster.agents)
      assert.deepEqual((await agent.client.listSandboxes({})).sandboxes, []);
  });
});

/** What the database and the agents disagree about (empty: they agree). */
async function disagreements(c: Cluster): Promise<string[]> {
  const problems: string[] = [];
  const rows = await c.db.db.query<{ id: string; status: string; host_id: string }>(
    "SELECT id, status, host_id FROM sandboxes WHERE status = ANY($1::text[])",
    [LIVE],
  );
  const onHosts = new Map<string, Map<string, string>>();
  for (const { hostId, agent } of c.agents) {
    const listed = await agent.client.listSandboxes({});
    onHosts.set(hostId, new Map(listed.sandboxes.map((s) => [s.sandboxId, String(s.status)])));
  }
  const known = new Set<string>();
  for (const r of rows) {
    known.add(r.id);
    const actual = onHosts.get(r.host_id)?.get(r.id);
    if (actual !== r.status) problems.push(`${r.id}: database ${r.status}, host ${actual}`);
  }
  for (const [hostId, sandboxes] of onHosts)
    for (const [id, status] of sandboxes)
      if (!known.has(id)) problems.push(`${id}: ${status} on host ${hostId}, not live in database`);
  return problems;
}
