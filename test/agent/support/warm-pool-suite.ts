/**
 * The agent's warm pool (`--warm-pool`), against a real runtime: pooled sandboxes are started
 * ahead, hidden, handed to a create of the default shape with that create's token, env and
 * user, refilled, removed at shutdown and after a crash.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { until } from "../../e2e/support/cli-process.js";
import { type AgentProcess, startAgent } from "./agent-harness.js";
import { namespacesOf } from "./runtime-conformance.js";

const DATA_DIR = process.env.NESTBOX_DIR ?? "/var/lib/nestbox";

export interface WarmPoolOptions {
  runtime: "qemu" | "namespace";
  /** One letter, not used by any other suite. */
  instance: string;
  slots: string;
}

export function warmPoolConformance(o: WarmPoolOptions): void {
  describe(`warm pool: ${o.runtime}`, { timeout: 600_000, concurrency: false }, () => {
    let agent: AgentProcess;
    const start = (pool: number) =>
      startAgent([
        "--runtime",
        o.runtime,
        "--instance",
        o.instance,
        "--slots",
        o.slots,
        // Room for two 512 MiB sandboxes: a create that needs the pool's room gets it.
        "--memory-capacity-mb",
        "1024",
        "--data-dir",
        DATA_DIR,
        "--warm-pool",
        String(pool),
      ]);
    const count = (re: RegExp) => (agent.logs().match(re) ?? []).length;
    const claims = () => count(/sandbox created from the warm pool/g);
    const readies = () => count(/warm pool sandbox ready/g);
    const listed = async () =>
      (await agent.client.listSandboxes({})).sandboxes.map((s) => s.sandboxId).sort();
    const sh = async (sandboxId: string, script: string) => {
      const r = await agent.client.exec({ sandboxId, cmd: "/bin/sh", args: ["-c", script] });
      assert.equal(r.exitCode, 0, Buffer.from(r.stderr).toString());
      return Buffer.from(r.stdout).toString();
    };
    let claimed = "";

    before(async () => {
      agent = await start(1);
    });
    after(async () => {
      if (agent.child.exitCode === null && agent.child.signalCode === null) {
        await agent.client.terminate({}).catch((err: unknown) => {
          console.error(`terminate failed: ${String(err)}`);
        });
        await agent.stop();
      }
      assert.deepEqual(namespacesOf(o.instance), [], "terminate left namespaces behind");
    });

    it("a default create takes the pooled sandbox with its own token, env and user; the pool refills", async () => {
      await until(
        "the first pooled sandbox",
        async () => (readies() >= 1 ? true : undefined),
        300_000,
      );
      assert.deepEqual(await listed(), [], "pooled sandboxes are nobody's: not listed");
      assert.equal(namespacesOf(o.instance).length, 1);

      const token = `tok-${"x".repeat(28)}`;
      const { sandboxId } = await agent.client.createSandbox({
        template: "base",
        envVars: { POOLED: "yes" },
        envdAccessToken: token,
      });
      claimed = sandboxId;
      assert.equal(claims(), 1, agent.logs().slice(-2000));
      assert.equal(await sh(sandboxId, 'echo "$POOLED $(id -un)"'), "yes user\n");
      // envd now holds this sandbox's token: a request without it is refused inside the guest.
      const anonymous = await fetch(
        `${agent.url}/proxy/${sandboxId}/49983/files?path=/etc/hostname`,
        { headers: agent.headers },
      );
      assert.equal(anonymous.status, 401);
      assert.deepEqual(await listed(), [sandboxId]);

      await until(
        "the pool to refill",
        async () => (readies() >= 2 && namespacesOf(o.instance).length === 2 ? true : undefined),
        300_000,
      );
      // Another shape is started as usual, not taken from the pool; the host is full (the claimed
      // sandbox and the refilled pool entry), so the pool entry makes room for it.
      const other = await agent.client.createSandbox({ template: "base", vcpus: 1, memoryMb: 512 });
      assert.equal(claims(), 1);
      assert.match(agent.logs(), /giving up a warm pool sandbox to make room/);
      await agent.client.destroySandbox({ sandboxId: other.sandboxId });
      // Its room is free again: the pool refills.
      await until(
        "the pool to refill again",
        async () => (readies() >= 3 ? true : undefined),
        300_000,
      );
      const second = await agent.client.createSandbox({ template: "base" });
      assert.equal(claims(), 2);
      assert.equal(await sh(second.sandboxId, "echo ok"), "ok\n");
      await agent.client.destroySandbox({ sandboxId: second.sandboxId });
    });

    it("after a crash the pooled sandbox is removed and the claimed one re-adopted", async () => {
      assert.ok(claimed, "the previous test claimed a sandbox");
      await until(
        "the pool to refill",
        async () => (readies() >= 4 && namespacesOf(o.instance).length === 2 ? true : undefined),
        300_000,
      );
      await agent.kill();
      agent = await start(0);
      assert.deepEqual(await listed(), [claimed]);
      assert.equal(namespacesOf(o.instance).length, 1, "the pooled sandbox's namespace is gone");
      assert.equal(await sh(claimed, "echo $POOLED"), "yes\n");
      await agent.client.destroySandbox({ sandboxId: claimed });
      assert.deepEqual(namespacesOf(o.instance), []);
    });
  });
}
