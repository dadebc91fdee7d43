import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { type EnvdProcess, sdkSandbox, startEnvd } from "./support/harness.js";

const post = (url: string, body: unknown, headers: Record<string, string> = {}) =>
  fetch(url, {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body: JSON.stringify(body),
  });

describe("envd control endpoints", () => {
  let envd: EnvdProcess;
  before(async () => {
    envd = await startEnvd();
  });
  after(() => envd.stop());

  it("GET /health answers 204 with no body", async () => {
    const res = await fetch(`${envd.url}/health`);
    assert.equal(res.status, 204);
    assert.equal(await res.text(), "");
  });

  it("GET /metrics reports CPU, memory and disk of the machine", async () => {
    const res = await fetch(`${envd.url}/metrics`);
    assert.equal(res.status, 200);
    const m = (await res.json()) as Record<string, number>;
    for (const k of [
      "ts",
      "cpu_count",
      "cpu_used_pct",
      "mem_total",
      "mem_used",
      "mem_cache",
      "disk_used",
      "disk_total",
    ]) {
      assert.equal(typeof m[k], "number", k);
    }
    assert.ok((m.cpu_count ?? 0) >= 1);
    assert.ok((m.mem_total ?? 0) > (m.mem_used ?? 0) && (m.mem_used ?? 0) > 0);
    assert.ok((m.disk_total ?? 0) >= (m.disk_used ?? 0) && (m.disk_used ?? 0) > 0);
    assert.ok((m.cpu_used_pct ?? -1) >= 0 && (m.cpu_used_pct ?? 101) <= 100);
    assert.ok(Math.abs((m.ts ?? 0) - Date.now() / 1000) < 60);
  });

  it("POST /init sets env vars every process inherits, visible in GET /envs", async () => {
    const res = await post(`${envd.url}/init`, {
      envVars: { NBX_GLOBAL: "g1" },
      timestamp: "2026-01-01T00:00:00Z",
    });
    assert.equal(res.status, 204);
    assert.deepEqual(await (await fetch(`${envd.url}/envs`)).json(), { NBX_GLOBAL: "g1" });
    const sbx = sdkSandbox(envd);
    const r = await sbx.commands.run('echo "$NBX_GLOBAL"');
    assert.equal(r.stdout, "g1\n");
    const o = await sbx.commands.run('echo "$NBX_GLOBAL"', { envs: { NBX_GLOBAL: "override" } });
    assert.equal(o.stdout, "override\n", "request envs win over init envs");
  });

  it("ignores an /init older than the last one applied", async () => {
    await post(`${envd.url}/init`, {
      envVars: { NBX_ORDER: "new" },
      timestamp: "2026-06-01T00:00:00Z",
    });
    const stale = await post(`${envd.url}/init`, {
      envVars: { NBX_ORDER: "old" },
      timestamp: "2026-05-01T00:00:00Z",
    });
    assert.equal(stale.status, 204);
    const envs = (await (await fetch(`${envd.url}/envs`)).json()) as Record<string, string>;
    assert.equal(envs.NBX_ORDER, "new");
  });

  it("changes the default user and workdir", async () => {
    assert.equal(
      (await post(`${envd.url}/init`, { defaultUser: "root", defaultWorkdir: "/tmp" })).status,
      204,
    );
    const sbx = sdkSandbox(envd);
    assert.equal((await sbx.commands.run("id -un; pwd")).stdout, "root\n/tmp\n");
    assert.equal(
      (await post(`${envd.url}/init`, { defaultUser: "user", defaultWorkdir: "" })).status,
      204,
    );
    assert.equal((await sbx.commands.run("id -un; pwd")).stdout, "user\n/home/user\n");
  });

  it("rejects invalid /init bodies with 400 and a clear message", async () => {
    const cases: [unknown, RegExp][] = [
      [[1, 2], /JSON object/],
      [{ envVars: { A: 1 } }, /envVars\.A must be a string/],
      [{ envVars: { "A=B": "x" } }, /invalid name/],
      [{ defaultUser: "no-such-user-xyz" }, /does not exist/],
      [{ timestamp: "yesterday" }, /timestamp/],
    ];
    for (const [body, msg] of cases) {
      const res = await post(`${envd.url}/init`, body);
      assert.equal(res.status, 400, JSON.stringify(body));
      const j = (await res.json()) as { code: number; message: string };
      assert.equal(j.code, 400);
      assert.match(j.message, msg);
    }
    const bad = await fetch(`${envd.url}/init`, { method: "POST", body: "{not json" });
    assert.equal(bad.status, 400);
  });

  it("installs an access token; changing it then requires the current one", async () => {
    assert.equal((await post(`${envd.url}/init`, { accessToken: "first" })).status, 204);
    assert.equal((await fetch(`${envd.url}/envs`)).status, 401);
    assert.equal(
      (await fetch(`${envd.url}/envs`, { headers: { "x-access-token": "first" } })).status,
      200,
    );
    const takeover = await post(`${envd.url}/init`, { accessToken: "mine" });
    assert.equal(takeover.status, 401, "a caller without the token cannot replace it");
    const rotate = await post(
      `${envd.url}/init`,
      { accessToken: "second" },
      { "x-access-token": "first" },
    );
    assert.equal(rotate.status, 204);
    assert.equal(
      (await fetch(`${envd.url}/envs`, { headers: { "x-access-token": "first" } })).status,
      401,
    );
    assert.equal(
      (await fetch(`${envd.url}/envs`, { headers: { "x-access-token": "second" } })).status,
      200,
    );
  });

  it("answers unknown paths with 404 and wrong methods with 405, as JSON", async () => {
    const res = await fetch(`${envd.url}/nope`, { headers: { "x-access-token": "second" } });
    assert.equal(res.status, 404);
    assert.equal(((await res.json()) as { code: number }).code, 404);
    const m = await fetch(`${envd.url}/health`, {
      method: "DELETE",
      headers: { "x-access-token": "second" },
    });
    assert.equal(m.status, 405);
  });
});
