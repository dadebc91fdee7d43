/**
 * Both sides' certificates rotate under load: a real agent (namespace runtime) whose host
 * certificate is issued short enough to be renewed at every heartbeat (each second here), and a
 * control plane renewing its client certificate every 300 ms, while API calls that reach the
 * agent over RPC and requests through the sandbox proxy run all along. None may fail.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { type Stack, startStack } from "../e2e/support/control-plane-harness.js";

const LOAD_MS = 8_000;
const MAX_REQUESTS = 4_000;

describe("certificate rotation under load (namespace runtime)", () => {
  let s: Stack;
  before(async () => {
    s = await startStack({
      runtime: "namespace",
      instance: "r",
      slots: "6200-6209",
      db: "pglite",
      // Under the agent's two-day margin: it asks for a new certificate at every heartbeat.
      serverOptions: { hostCertTtlMs: 47 * 60 * 60 * 1000 },
      agentArgs: ["--heartbeat-interval", "1"],
    });
  });
  after(async () => {
    await s?.close();
  });

  it("drops no request while the agent's and the control plane's certificates change", async () => {
    const created = await s.api("POST", "/v1/sandboxes", { template: "base" });
    assert.equal(created.status, 201, JSON.stringify(created.body));
    const id = created.body.id as string;
    const rotationsBefore = (s.agent.logs().match(/serving with a new host certificate/g) ?? [])
      .length;
    const failures: string[] = [];
    let requests = 0;
    let renewals = 0;
    const deadline = Date.now() + LOAD_MS;
    const renewing = (async () => {
      while (Date.now() < deadline) {
        await s.server.identity.renew();
        renewals++;
        await sleep(300);
      }
    })();
    const worker = async (n: number) => {
      while (Date.now() < deadline && requests < MAX_REQUESTS) {
        requests++;
        try {
          if (n % 2 === 0) {
            // RPC: the control plane lists the sandbox's processes on the agent.
            const r = await s.api("GET", `/v1/sandboxes/${id}/processes`);
            if (r.status !== 200) failures.push(`processes: ${r.status} ${JSON.stringify(r.body)}`);
          } else {
            // The sandbox proxy's pooled TLS connections to the agent, into envd.
            const r = await fetch(`${s.apiUrl}/health`, {
              headers: { "E2b-Sandbox-Id": id, "E2b-Sandbox-Port": "49983" },
            });
            await r.arrayBuffer();
            if (r.status >= 300) failures.push(`proxy: ${r.status}`);
          }
        } catch (err) {
          failures.push(String(err));
        }
      }
    };
    await Promise.all([renewing, ...[0, 1, 2, 3].map(worker)]);
    const rotations =
      (s.agent.logs().match(/serving with a new host certificate/g) ?? []).length - rotationsBefore;
    assert.deepEqual(failures.slice(0, 5), [], `${failures.length} of ${requests} failed`);
    assert.ok(requests >= 40, `only ${requests} requests ran`);
    assert.ok(renewals >= 10, `the control plane renewed ${renewals} times`);
    assert.ok(rotations >= 3, `the agent took ${rotations} new certificates`);
    const killed = await s.api("DELETE", `/v1/sandboxes/${id}`);
    assert.equal(killed.status, 204);
  });
});
