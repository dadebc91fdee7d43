/**
 * A service that listens only on the sandbox's loopback is reachable through the host agent's
 * port proxy, because envd inside the sandbox forwards it to the guest address (namespace
 * runtime; the qemu guest runs the same envd). Needs a guest image built with that envd.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { type AgentProcess, startAgent } from "./support/agent-harness.js";

const DATA_DIR = process.env.NESTBOX_DIR ?? "/var/lib/nestbox";

async function fetchText(
  url: string,
  headers: Record<string, string>,
): Promise<{ status: number; body: string }> {
  const r = await fetch(url, { headers, signal: AbortSignal.timeout(5000) });
  return { status: r.status, body: await r.text() };
}

describe("port proxy reaches loopback-only services (namespace runtime)", {
  timeout: 300_000,
}, () => {
  let agent: AgentProcess;
  let id = "";

  before(async () => {
    agent = await startAgent([
      "--runtime",
      "namespace",
      "--instance",
      "z",
      "--slots",
      "7700-7799",
      "--memory-capacity-mb",
      "4096",
      "--data-dir",
      DATA_DIR,
    ]);
    id = (await agent.client.createSandbox({ template: "base", memoryMb: 512, vcpus: 1 }))
      .sandboxId;
  });

  after(async () => {
    if (!agent) return;
    if (id) {
      await agent.client
        .destroySandbox({ sandboxId: id })
        .catch((e: unknown) => console.error(`destroy ${id}:`, e));
    }
    await agent.stop();
  });

  it("serves python's http.server bound to 127.0.0.1, and stops when it exits", async () => {
    // A clear failure instead of a 30 s timeout when the template root predates the forwarder.
    const probe = await agent.client.exec({
      sandboxId: id,
      cmd: "/bin/sh",
      args: ["-c", "grep -c forward-localhost /opt/nestbox/envd/envd.mjs || true"],
    });
    assert.notEqual(
      Buffer.from(probe.stdout).toString().trim(),
      "0",
      "the sandbox's envd has no port forwarder: rebuild the image (./nestbox image build); the " +
        "namespace runtime switches its base root once no sandbox uses the old one",
    );
    const url = `${agent.url}/proxy/${id}/8123/`;
    const server = await agent.client.startProcess({
      sandboxId: id,
      cmd: "python3",
      args: ["-m", "http.server", "--bind", "127.0.0.1", "8123"],
      cwd: "/etc",
      tag: "http",
    });
    let last = { status: 0, body: "" };
    const deadline = Date.now() + 30_000;
    while (Date.now() < deadline) {
      last = await fetchText(url, agent.headers);
      if (last.status === 200) break;
      await sleep(250);
    }
    assert.equal(
      last.status,
      200,
      `last answer: ${last.status} ${last.body}\n${agent.logs().slice(-2000)}`,
    );
    assert.match(last.body, /Directory listing for \//);
    assert.match(last.body, /hostname/, "the listing of /etc");

    await agent.client.killProcess({ sandboxId: id, pid: server.pid });
    const closed = Date.now() + 10_000;
    while (Date.now() < closed) {
      last = await fetchText(url, agent.headers);
      if (last.status === 502) break;
      await sleep(250);
    }
    assert.equal(last.status, 502);
    assert.deepEqual(JSON.parse(last.body), {
      message: "The sandbox is running but port is not open",
      sandboxId: id,
      port: 8123,
      code: 502,
    });
  });
});
