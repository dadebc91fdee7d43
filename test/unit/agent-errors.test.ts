// The agent's pure error plumbing: domain codes → Connect codes at the RPC face, and the create
// path's cleanup stack (reverse order, every step attempted, failures aggregated).
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { Code, ConnectError } from "@connectrpc/connect";
import { Cleanup, CleanupError } from "../../packages/agent/src/manager/cleanup.js";
import {
  AgentError,
  alreadyExists,
  exhausted,
  invalid,
  notFound,
  precondition,
} from "../../packages/agent/src/manager/errors.js";
import { mountsBelow } from "../../packages/agent/src/manager/recovery.js";
import {
  guard,
  guardStream,
  toConnect,
  toConnectFromEnvd,
} from "../../packages/agent/src/rpc-errors.js";
import { RuntimeError } from "../../packages/agent/src/runtime/runtime.js";

describe("domain errors at the RPC face", () => {
  it("maps each manager error to its Connect code, keeping the message", () => {
    const cases: [AgentError, Code][] = [
      [notFound("abc"), Code.NotFound],
      [invalid("bad"), Code.InvalidArgument],
      [precondition("paused"), Code.FailedPrecondition],
      [exhausted("full"), Code.ResourceExhausted],
      [alreadyExists("twice"), Code.AlreadyExists],
      [new AgentError("unavailable", "later"), Code.Unavailable],
      [new AgentError("internal", "oops"), Code.Internal],
    ];
    for (const [err, code] of cases) {
      const ce = toConnect(err);
      assert.equal(ce.code, code, err.code);
      assert.equal(ce.rawMessage, err.message);
    }
    assert.equal(notFound("abc").message, "sandbox abc not found");
  });

  it("maps runtime errors by their code", () => {
    assert.equal(toConnect(new RuntimeError("not_found", "no template")).code, Code.NotFound);
    assert.equal(
      toConnect(new RuntimeError("resource_exhausted", "no room")).code,
      Code.ResourceExhausted,
    );
  });

  it("passes Connect errors through and makes anything else Internal", () => {
    const envd = new ConnectError("envd /init unreachable", Code.Unavailable);
    assert.equal(toConnect(envd), envd);
    assert.equal(toConnect(new Error("boom")).code, Code.Internal);
    assert.equal(toConnect("text").rawMessage, "text");
  });

  it("reads non-domain errors of envd calls as Connect does", () => {
    assert.equal(toConnectFromEnvd(new Error("boom")).code, Code.Unknown);
    assert.equal(toConnectFromEnvd(notFound("x")).code, Code.NotFound);
  });

  it("guards calls and streams, including a stream that fails before its first event", async () => {
    await assert.rejects(
      guard(async () => {
        throw precondition("not running");
      }),
      (e: unknown) => e instanceof ConnectError && e.code === Code.FailedPrecondition,
    );
    const events = guardStream(async function* () {
      yield 1;
      throw notFound("gone");
    });
    const seen: number[] = [];
    await assert.rejects(
      (async () => {
        for await (const n of events) seen.push(n);
      })(),
      (e: unknown) => e instanceof ConnectError && e.code === Code.NotFound,
    );
    assert.deepEqual(seen, [1]);
  });
});

describe("cleanup stack", () => {
  it("runs undos last first, and forgets them afterwards", async () => {
    const order: string[] = [];
    const c = new Cleanup();
    c.add("record", () => {
      order.push("record");
    });
    c.add("network", async () => {
      order.push("network");
    });
    c.add("stop", () => {
      order.push("stop");
    });
    assert.equal(c.size, 3);
    await c.run();
    assert.deepEqual(order, ["stop", "network", "record"]);
    assert.equal(c.size, 0);
    await c.run();
    assert.equal(order.length, 3);
  });

  it("attempts every step and aggregates the failures in the order they ran", async () => {
    const order: string[] = [];
    const c = new Cleanup();
    c.add("directory", () => {
      order.push("directory");
    });
    c.add("network", () => {
      order.push("network");
      throw new Error("link busy");
    });
    c.add("stop", async () => {
      order.push("stop");
      throw new Error("no such process");
    });
    const err = await c.run().then(
      () => undefined,
      (e: unknown) => e,
    );
    assert.ok(err instanceof CleanupError);
    assert.ok(err instanceof AggregateError);
    assert.deepEqual(order, ["stop", "network", "directory"]);
    assert.deepEqual(
      err.failures.map((f) => [f.step, String(f.error)]),
      [
        ["stop", "Error: no such process"],
        ["network", "Error: link busy"],
      ],
    );
    assert.equal(err.errors.length, 2);
    assert.match(err.message, /stop: Error: no such process; network: Error: link busy/);
  });
});

describe("orphan cleanup", () => {
  it("finds mounts at or below a directory, deepest first, with escaped spaces", () => {
    const mounts = [
      "overlay /srv/sb/a/rootfs overlay rw 0 0",
      "proc /srv/sb/a/rootfs/proc proc rw 0 0",
      "tmpfs /srv/sb/ab tmpfs rw 0 0",
      "tmpfs /srv/sb/a/with\\040space tmpfs rw 0 0",
      "/dev/sda1 / ext4 rw 0 0",
      "",
    ].join("\n");
    assert.deepEqual(mountsBelow(mounts, "/srv/sb/a"), [
      "/srv/sb/a/rootfs/proc",
      "/srv/sb/a/with space",
      "/srv/sb/a/rootfs",
    ]);
  });
});
