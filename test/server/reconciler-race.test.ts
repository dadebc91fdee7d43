/**
 * The reconciler against a real agent (namespace runtime, instance `l`) when a sandbox changes
 * while its ListSandboxes answer is on the way: the answer is older than the row, so the row
 * must stay as the newer write left it. Found by the replicas load test, where a resume that
 * finished during a pass was set back to `paused` and the next exec got 409.
 *
 * The race is made deterministic through the control plane's agent-interceptor seam: the
 * interceptor holds the ListSandboxes answer (which says `paused`) until a real resume through
 * the API has completed, then hands the now stale answer to the reconciler.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import type { Interceptor } from "@connectrpc/connect";
import { type Stack, startStack } from "../e2e/support/control-plane-harness.js";

describe("reconciler: an agent's answer older than the row", { concurrency: false }, () => {
  let s: Stack;
  /** Set while a race is wanted: runs once, on the next ListSandboxes answer. */
  let onList: ((sandboxes: { sandboxId: string; status: string }[]) => Promise<void>) | undefined;
  /** Resolves when a ListSandboxes call starts (the pass before it has ended). */
  let listStarted: (() => void) | undefined;

  const interceptor: Interceptor = (next) => async (req) => {
    if (req.method.name !== "ListSandboxes") return next(req);
    listStarted?.();
    listStarted = undefined;
    const res = await next(req);
    const hook = onList;
    if (hook && !res.stream) {
      onList = undefined;
      const msg = res.message as unknown as {
        sandboxes: { sandboxId: string; status: string }[];
      };
      await hook(msg.sandboxes);
    }
    return res;
  };
  const nextListCall = () =>
    new Promise<void>((resolve) => {
      listStarted = resolve;
    });

  before(async () => {
    s = await startStack({
      runtime: "namespace",
      instance: "l",
      slots: "9600-9649",
      db: "pglite",
      reconcileMs: 300,
      agentInterceptors: [interceptor],
    });
  });

  after(async () => {
    await s?.close();
  });

  it("a resume that finishes while the agent's list is on its way stays running", async () => {
    const created = await s.api("POST", "/v1/sandboxes", { template: "base", timeout_sec: 600 });
    assert.equal(created.status, 201, JSON.stringify(created.body));
    const id = created.body.id as string;
    try {
      const paused = await s.api("POST", `/v1/sandboxes/${id}/pause`);
      assert.equal(paused.status, 200, JSON.stringify(paused.body));

      let sawPaused = false;
      const raced = new Promise<void>((resolve, reject) => {
        onList = async (sandboxes) => {
          try {
            sawPaused = sandboxes.some((x) => x.sandboxId === id && x.status === "paused");
            const resumed = await s.api("POST", `/v1/sandboxes/${id}/resume`);
            assert.equal(resumed.status, 200, JSON.stringify(resumed.body));
            resolve();
          } catch (err) {
            reject(err);
          }
        };
      });
      await raced;
      assert.ok(sawPaused, "the held answer said paused");
      // The pass that got the stale answer is over once the next one asks the agent.
      await nextListCall();

      // The database itself: the API remembers a sandbox it saw running for a second.
      const rows = await s.server.db.query<{ status: string }>(
        "SELECT status FROM sandboxes WHERE id = $1",
        [id],
      );
      assert.equal(rows[0]?.status, "running", "the newer write stands");
      const exec = await s.api("POST", `/v1/sandboxes/${id}/exec`, { cmd: "echo", args: ["ok"] });
      assert.equal(exec.status, 200, JSON.stringify(exec.body));
      assert.equal(exec.body.stdout, "ok\n");
    } finally {
      onList = undefined;
      await s.api("DELETE", `/v1/sandboxes/${id}`);
    }
  });
});
