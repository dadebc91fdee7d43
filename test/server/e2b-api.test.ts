/**
 * The E2B REST face (e2b-compat §2) against a real stack: the control plane in this process and
 * a real host agent (namespace runtime, instance `w`, slots 7500-7599), driven with plain fetch
 * the way the E2B SDKs call it. Both faces share one service layer, so sandboxes made through
 * /v1 and through the E2B routes are checked from the other side too.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { type ApiResult, type Stack, startStack } from "../e2e/support/control-plane-harness.js";

async function until<T>(what: string, fn: () => Promise<T | undefined>, ms = 15_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
  }
}

/** The SDK's list `metadata` value: pairs encoded once, then as URLSearchParams. */
const sdkMetadata = (m: Record<string, string>) =>
  new URLSearchParams(
    Object.fromEntries(
      Object.entries(m).map(([k, v]) => [encodeURIComponent(k), encodeURIComponent(v)]),
    ),
  ).toString();

const near = (iso: string, expectedMs: number, slackMs: number, what: string) => {
  const t = new Date(iso).getTime();
  assert.ok(!Number.isNaN(t), `${what}: ${iso} is not a time`);
  assert.ok(
    Math.abs(t - expectedMs) <= slackMs,
    `${what}: ${iso} is not within ${slackMs} ms of ${new Date(expectedMs).toISOString()}`,
  );
};

function e2bSuite(db: "pglite" | "postgres"): void {
  describe(`E2B REST API (namespace runtime, ${db} database)`, { concurrency: false }, () => {
    let s: Stack;
    const created: string[] = [];

    const call = (
      method: string,
      route: string,
      body?: unknown,
      key: string | null = s.adminKey.replace(/^nbx_/, "e2b_"),
    ): Promise<ApiResult> => s.api(method, route, body, key);
    const create = async (body: Record<string, unknown>, route = "/v2/sandboxes") => {
      const r = await call("POST", route, body);
      assert.equal(r.status, 201, JSON.stringify(r.body));
      created.push(r.body.sandboxID);
      return r.body;
    };
    /** An E2B error: the status and `{code: status, message}`. */
    const assertE2bError = (r: ApiResult, status: number) => {
      assert.equal(r.status, status, JSON.stringify(r.body));
      assert.equal(r.body?.code, status, JSON.stringify(r.body));
      assert.equal(typeof r.body.message, "string");
      assert.ok(r.body.message.length > 0);
    };
    const sh = async (id: string, script: string) => {
      const r = await s.api("POST", `/v1/sandboxes/${id}/exec`, {
        cmd: "/bin/sh",
        args: ["-c", script],
      });
      assert.equal(r.status, 200, JSON.stringify(r.body));
      return r.body as { stdout: string; exit_code: number };
    };

    before(async () => {
      s = await startStack({ runtime: "namespace", instance: "w", slots: "7500-7599", db });
    });
    after(async () => {
      for (const id of created) {
        const r = await s.api("DELETE", `/v1/sandboxes/${id}`);
        if (r.status !== 204) console.error(`cleanup of ${id}: ${r.status}`);
      }
      await s?.close();
    });

    it("answers bad credentials, bad input and unknown ids in E2B's error shape", async () => {
      assertE2bError(await call("GET", "/v2/sandboxes", undefined, null), 401);
      assertE2bError(await call("GET", "/v2/sandboxes", undefined, `e2b_${"0".repeat(40)}`), 401);
      assertE2bError(
        await call("POST", "/v2/sandboxes", { templateID: "base" }, "e2b_nothex"),
        401,
      );

      assertE2bError(await call("POST", "/v2/sandboxes", "{not json"), 400);
      assertE2bError(await call("POST", "/v2/sandboxes", { templateID: 5 }), 400);
      assertE2bError(await call("POST", "/sandboxes", { templateID: "base", timeout: -1 }), 400);
      assertE2bError(
        await call("POST", "/v2/sandboxes", { templateID: "base", envVars: { "1X": "y" } }),
        400,
      );
      assertE2bError(await call("GET", "/v2/sandboxes?state=sleeping"), 400);
      assertE2bError(await call("GET", "/v2/sandboxes?limit=0"), 400);
      assertE2bError(await call("GET", "/v2/sandboxes?nextToken=%21%21"), 400);
      assertE2bError(await call("POST", "/v2/sandboxes", { templateID: "no-such-template" }), 404);

      const unknown = "abcdefghij0123456789";
      assertE2bError(await call("GET", `/sandboxes/${unknown}`), 404);
      assertE2bError(await call("GET", "/sandboxes/not-an-id"), 404);
      assertE2bError(await call("DELETE", `/sandboxes/${unknown}`), 404);
      assertE2bError(await call("POST", `/v2/sandboxes/${unknown}/connect`, {}), 404);
      assertE2bError(await call("POST", `/sandboxes/${unknown}/connect`, { timeout: 10 }), 404);
      assertE2bError(await call("POST", `/sandboxes/${unknown}/resume`, { timeout: 10 }), 404);
      assertE2bError(await call("POST", `/sandboxes/${unknown}/timeout`, { timeout: 10 }), 404);
      assertE2bError(await call("POST", `/sandboxes/${unknown}/pause`, {}), 404);
      assertE2bError(await call("GET", `/sandboxes/${unknown}/metrics`), 404);
      assertE2bError(await call("GET", `/sandboxes/${unknown}/nothing`), 404);

      // The E2B routes are not part of Nestbox's own OpenAPI document.
      const doc = (await (await fetch(`${s.apiUrl}/openapi.json`)).json()) as {
        paths: Record<string, unknown>;
      };
      assert.ok(doc.paths["/v1/sandboxes"]);
      const e2bPaths = Object.keys(doc.paths).filter((p) =>
        /^\/(v2\/|sandboxes|templates)/.test(p),
      );
      assert.deepEqual(e2bPaths, []);
    });

    it("serves the base template and its alias", async () => {
      const list = await call("GET", "/templates");
      assert.equal(list.status, 200);
      const base = list.body.find((t: { templateID: string }) => t.templateID === "base");
      assert.ok(base, JSON.stringify(list.body));
      assert.deepEqual(base.aliases, ["base"]);
      assert.equal(base.public, true);
      assert.equal(base.envdVersion, "0.6.4");
      const alias = await call("GET", "/templates/aliases/base");
      assert.equal(alias.status, 200);
      assert.deepEqual(alias.body, { templateID: "base", public: true });
      assertE2bError(await call("GET", "/templates/aliases/nope"), 404);
    });

    it("creates through /v2/sandboxes: shapes, env vars, and it is a /v1 sandbox too", async () => {
      const before = Date.now();
      const sb = await create({
        templateID: "base",
        timeout: 120,
        metadata: { face: "e2b", case: "create" },
        envVars: { FOO: "bar" },
        network: { allowPublicTraffic: false, allowOut: ["1.1.1.1"] },
        // Features Nestbox does not implement are ignored, not rejected.
        mcp: null,
        iam: {},
        volumeMounts: [],
        autoPauseMemory: true,
      });
      assert.match(sb.sandboxID, /^[a-z0-9]{20}$/);
      assert.equal(sb.templateID, "base");
      assert.equal(sb.envdVersion, "0.6.4");
      assert.match(sb.envdAccessToken, /^[0-9a-f]{64}$/);
      assert.equal(sb.domain, "localhost");
      assert.equal(typeof sb.clientID, "string");
      assert.match(sb.trafficAccessToken, /^[0-9a-f]{40}$/);

      // Env vars reach every process (through /v1: the same sandbox).
      assert.equal((await sh(sb.sandboxID, 'echo "$FOO"')).stdout, "bar\n");
      const v1 = await s.api("GET", `/v1/sandboxes/${sb.sandboxID}`);
      assert.equal(v1.status, 200);
      assert.equal(v1.body.status, "running");
      assert.deepEqual(v1.body.metadata, { face: "e2b", case: "create" });
      // The end is the control plane's: no idle TTL on the host.
      assert.equal(v1.body.timeout_sec, 0);

      const info = await call("GET", `/sandboxes/${sb.sandboxID}`);
      assert.equal(info.status, 200);
      const d = info.body;
      assert.equal(d.sandboxID, sb.sandboxID);
      assert.equal(d.templateID, "base");
      assert.equal(d.state, "running");
      assert.equal(d.envdAccessToken, sb.envdAccessToken);
      assert.equal(d.envdVersion, "0.6.4");
      assert.equal(d.domain, "localhost");
      assert.equal(d.cpuCount, 2);
      assert.equal(d.memoryMB, 512);
      assert.equal(d.diskSizeMB, 5120);
      assert.deepEqual(d.metadata, { face: "e2b", case: "create" });
      assert.deepEqual(d.lifecycle, { onTimeout: "kill", autoResume: false });
      assert.equal(d.network.allowPublicTraffic, false);
      assert.equal(d.allowInternetAccess, true);
      near(d.startedAt, (before + Date.now()) / 2, 30_000, "startedAt");
      near(d.endAt, new Date(d.startedAt).getTime() + 120_000, 3_000, "endAt");
    });

    it("connect only extends the end; setTimeout sets it exactly and the end kills", async () => {
      const sb = await create({ templateID: "base", timeout: 60 });
      const id = sb.sandboxID;
      const endAt = async () => new Date((await call("GET", `/sandboxes/${id}`)).body.endAt);
      const first = await endAt();

      // A shorter connect timeout does not shorten: 200 (it was running), same end.
      const shorter = await call("POST", `/v2/sandboxes/${id}/connect`, { timeout: 5 });
      assert.equal(shorter.status, 200, JSON.stringify(shorter.body));
      assert.equal(shorter.body.sandboxID, id);
      assert.equal(shorter.body.envdAccessToken, sb.envdAccessToken);
      assert.equal((await endAt()).getTime(), first.getTime());
      // A longer one extends (v1 route of SDK 2.6–2.50 as well).
      const longer = await call("POST", `/sandboxes/${id}/connect`, { timeout: 600 });
      assert.equal(longer.status, 200, JSON.stringify(longer.body));
      near((await endAt()).toISOString(), Date.now() + 600_000, 3_000, "extended endAt");
      // Empty v2 body: 300 s, which is less than the current end: unchanged.
      const empty = await call("POST", `/v2/sandboxes/${id}/connect`);
      assert.equal(empty.status, 200);
      near((await endAt()).toISOString(), Date.now() + 600_000, 5_000, "endAt after empty connect");
      // Resume of a running sandbox is a conflict (SDK 2.0–2.5 then treat it as running).
      assertE2bError(await call("POST", `/sandboxes/${id}/resume`, { timeout: 30 }), 409);

      // setTimeout shortens to exactly now + 2 s; the sandbox lives until then, not after.
      const setAt = Date.now();
      const t = await call("POST", `/sandboxes/${id}/timeout`, { timeout: 2 });
      assert.equal(t.status, 204);
      assert.equal(t.body, undefined);
      near((await endAt()).toISOString(), setAt + 2_000, 1_000, "shortened endAt");
      await sleep(1000);
      assert.equal((await call("GET", `/sandboxes/${id}`)).body.state, "running");
      const goneAt = await until("the end to kill the sandbox", async () => {
        const r = await call("GET", `/sandboxes/${id}`);
        return r.status === 404 ? Date.now() : undefined;
      });
      assert.ok(goneAt - setAt <= 2_000 + 2_000, `killed ${goneAt - setAt} ms after setTimeout(2)`);
      const v1 = await s.api("GET", `/v1/sandboxes/${id}`);
      assert.equal(v1.body.status, "stopped");
      const onHost = await s.agent.client.listSandboxes({});
      assert.ok(!onHost.sandboxes.some((x) => x.sandboxId === id), "still on the host");
      // Gone for every E2B route.
      assertE2bError(await call("POST", `/v2/sandboxes/${id}/connect`, {}), 404);
      assertE2bError(await call("DELETE", `/sandboxes/${id}`), 404);
      assertE2bError(await call("POST", `/sandboxes/${id}/timeout`, { timeout: 10 }), 404);
      const listed = await call("GET", "/v2/sandboxes?state=running,paused");
      assert.ok(!listed.body.some((x: { sandboxID: string }) => x.sandboxID === id));
    });

    it("with autoPause the end pauses; pause, connect (201/200) and resume", async () => {
      // The v1 create route of SDKs ≤ 2.50: secure asks for an envd token.
      const sb = await create(
        { templateID: "base", timeout: 60, autoPause: true, secure: true, metadata: { c: "p" } },
        "/sandboxes",
      );
      const id = sb.sandboxID;
      assert.match(sb.envdAccessToken, /^[0-9a-f]{64}$/);
      assert.equal(sb.trafficAccessToken, null);
      await sh(id, "echo kept > /tmp/kept");
      const info = await call("GET", `/sandboxes/${id}`);
      assert.deepEqual(info.body.lifecycle, { onTimeout: "pause", autoResume: false });

      assert.equal((await call("POST", `/sandboxes/${id}/timeout`, { timeout: 1 })).status, 204);
      const paused = await until("the end to pause the sandbox", async () => {
        const r = await call("GET", `/sandboxes/${id}`);
        return r.body.state === "paused" ? r.body : undefined;
      });
      assert.equal(paused.envdAccessToken, sb.envdAccessToken);
      assert.equal((await s.api("GET", `/v1/sandboxes/${id}`)).body.status, "paused");
      assertE2bError(await call("POST", `/sandboxes/${id}/pause`, {}), 409);
      // Paused is not running: the SDK 2.0–2.5 connect falls back from timeout to resume.
      assertE2bError(await call("POST", `/sandboxes/${id}/timeout`, { timeout: 10 }), 404);
      const pausedList = await call(
        "GET",
        `/v2/sandboxes?state=paused&metadata=${encodeURIComponent(sdkMetadata({ c: "p" }))}`,
      );
      assert.deepEqual(
        pausedList.body.map((x: { sandboxID: string; state: string }) => [x.sandboxID, x.state]),
        [[id, "paused"]],
      );

      // Connect resumes (201) with a new end, and the old, passed end does not pause it again.
      const resumed = await call("POST", `/v2/sandboxes/${id}/connect`, { timeout: 30 });
      assert.equal(resumed.status, 201, JSON.stringify(resumed.body));
      assert.equal(resumed.body.envdAccessToken, sb.envdAccessToken);
      const after = await call("GET", `/sandboxes/${id}`);
      assert.equal(after.body.state, "running");
      near(after.body.endAt, Date.now() + 30_000, 3_000, "endAt after resume");
      await sleep(1200);
      assert.equal((await call("GET", `/sandboxes/${id}`)).body.state, "running");
      assert.equal((await sh(id, "cat /tmp/kept")).stdout, "kept\n");
      assert.equal((await call("POST", `/v2/sandboxes/${id}/connect`, {})).status, 200);

      // Explicit pause (204), then the resume route of SDK 2.0–2.5 (201).
      const p = await call("POST", `/sandboxes/${id}/pause`);
      assert.equal(p.status, 204, JSON.stringify(p.body));
      assert.equal((await call("GET", `/sandboxes/${id}`)).body.state, "paused");
      const r = await call("POST", `/sandboxes/${id}/resume`, { timeout: 40 });
      assert.equal(r.status, 201, JSON.stringify(r.body));
      assert.equal(r.body.sandboxID, id);
      near(
        (await call("GET", `/sandboxes/${id}`)).body.endAt,
        Date.now() + 40_000,
        3_000,
        "resume end",
      );
    });

    it("lists with metadata and state filters, pagination and order", async () => {
      const tag = `list-${db}-${Date.now()}`;
      const a = await create({ templateID: "base", metadata: { tag, n: "a", odd: "x y&z=1" } });
      const b = await create({ templateID: "base", metadata: { tag, n: "b" } });
      const byTag = await call(
        "GET",
        `/v2/sandboxes?metadata=${encodeURIComponent(sdkMetadata({ tag }))}`,
      );
      assert.equal(byTag.status, 200);
      assert.deepEqual(
        byTag.body.map((x: { sandboxID: string }) => x.sandboxID),
        [b.sandboxID, a.sandboxID],
      );
      assert.equal(byTag.headers.get("x-next-token"), null);
      const item = byTag.body[1];
      assert.deepEqual(Object.keys(item).sort(), [
        "alias",
        "clientID",
        "cpuCount",
        "diskSizeMB",
        "endAt",
        "envdVersion",
        "memoryMB",
        "metadata",
        "sandboxID",
        "startedAt",
        "state",
        "templateID",
      ]);
      assert.equal(item.state, "running");
      assert.equal(item.envdAccessToken, undefined);

      // Every pair must match, values decoded as the SDK encoded them.
      const exact = await call(
        "GET",
        `/v2/sandboxes?metadata=${encodeURIComponent(sdkMetadata({ tag, odd: "x y&z=1" }))}`,
      );
      assert.deepEqual(
        exact.body.map((x: { sandboxID: string }) => x.sandboxID),
        [a.sandboxID],
      );
      const none = await call(
        "GET",
        `/v2/sandboxes?metadata=${encodeURIComponent(sdkMetadata({ tag, n: "c" }))}`,
      );
      assert.deepEqual(none.body, []);

      // limit 1: a token while there is more, none on the last page.
      const q = `metadata=${encodeURIComponent(sdkMetadata({ tag }))}&limit=1`;
      const p1 = await call("GET", `/v2/sandboxes?${q}`);
      assert.equal(p1.body.length, 1);
      assert.equal(p1.body[0].sandboxID, b.sandboxID);
      const token = p1.headers.get("x-next-token");
      assert.ok(token);
      const p2 = await call("GET", `/v2/sandboxes?${q}&nextToken=${encodeURIComponent(token)}`);
      assert.equal(p2.body.length, 1);
      assert.equal(p2.body[0].sandboxID, a.sandboxID);
      assert.equal(p2.headers.get("x-next-token"), null);
      const asc = await call("GET", `/v2/sandboxes?${q}&order=asc`);
      assert.equal(asc.body[0].sandboxID, a.sandboxID);

      // State filter (comma-joined as the SDK sends it); the SDK 1.x route too.
      const paused = await call(
        "GET",
        `/v2/sandboxes?metadata=${encodeURIComponent(sdkMetadata({ tag }))}&state=paused`,
      );
      assert.deepEqual(paused.body, []);
      const both = await call(
        "GET",
        `/v2/sandboxes?metadata=${encodeURIComponent(sdkMetadata({ tag }))}&state=running,paused`,
      );
      assert.equal(both.body.length, 2);
      const legacy = await call(
        "GET",
        `/sandboxes?metadata=${encodeURIComponent(sdkMetadata({ tag }))}`,
      );
      assert.equal(legacy.status, 200);
      assert.equal(legacy.body.length, 2);

      // Killed through the E2B face: gone from the list, stopped in /v1.
      const k = await call("DELETE", `/sandboxes/${a.sandboxID}`);
      assert.equal(k.status, 204);
      assert.equal((await s.api("GET", `/v1/sandboxes/${a.sandboxID}`)).body.status, "stopped");
      const afterKill = await call(
        "GET",
        `/v2/sandboxes?metadata=${encodeURIComponent(sdkMetadata({ tag }))}`,
      );
      assert.deepEqual(
        afterKill.body.map((x: { sandboxID: string }) => x.sandboxID),
        [b.sandboxID],
      );

      // Metrics: the agent's samples as SandboxMetric[].
      const m = await until("metric samples", async () => {
        const r = await call("GET", `/sandboxes/${b.sandboxID}/metrics`);
        assert.equal(r.status, 200, JSON.stringify(r.body));
        return r.body.length > 0 ? r.body : undefined;
      });
      const point = m[0];
      assert.equal(point.cpuCount, 2);
      assert.equal(point.memTotal, 512 * 1024 * 1024);
      assert.equal(point.diskTotal, 5120 * 1024 * 1024);
      assert.ok(point.memUsed > 0);
      assert.equal(typeof point.cpuUsedPct, "number");
      assert.equal(point.timestampUnix, Math.floor(new Date(point.timestamp).getTime() / 1000));
      const future = Math.floor(Date.now() / 1000) + 3600;
      const empty = await call("GET", `/sandboxes/${b.sandboxID}/metrics?start=${future}`);
      assert.deepEqual(empty.body, []);
      assertE2bError(await call("GET", `/sandboxes/${b.sandboxID}/metrics?start=yesterday`), 400);
    });

    it("shows /v1 sandboxes through the E2B face and controls them", async () => {
      const made = await s.api("POST", "/v1/sandboxes", {
        metadata: { face: "v1" },
        timeout_sec: 600,
      });
      assert.equal(made.status, 201, JSON.stringify(made.body));
      const id = made.body.id as string;
      created.push(id);
      const info = await call("GET", `/sandboxes/${id}`);
      assert.equal(info.status, 200, JSON.stringify(info.body));
      assert.equal(info.body.state, "running");
      assert.deepEqual(info.body.metadata, { face: "v1" });
      // No envd token was made for it (its envd is reachable by its agent only).
      assert.equal(info.body.envdAccessToken, undefined);
      // No absolute end: endAt is when the idle TTL would run out.
      near(info.body.endAt, Date.now() + 600_000, 30_000, "idle-TTL endAt");

      // Connect keeps it without an absolute end; the expiry job leaves it alone.
      assert.equal((await call("POST", `/v2/sandboxes/${id}/connect`, { timeout: 1 })).status, 200);
      await sleep(1500);
      assert.equal((await s.api("GET", `/v1/sandboxes/${id}`)).body.status, "running");

      assert.equal((await call("POST", `/sandboxes/${id}/pause`)).status, 204);
      assert.equal((await s.api("GET", `/v1/sandboxes/${id}`)).body.status, "paused");
      assert.equal((await call("POST", `/v2/sandboxes/${id}/connect`, {})).status, 201);
      assert.equal((await s.api("GET", `/v1/sandboxes/${id}`)).body.status, "running");
      assert.equal((await call("DELETE", `/sandboxes/${id}`)).status, 204);
      assert.equal((await s.api("GET", `/v1/sandboxes/${id}`)).body.status, "stopped");
      assertE2bError(await call("GET", `/sandboxes/${id}`), 404);
    });
  });
}

e2bSuite("pglite");
e2bSuite("postgres");
