import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { exitStatus, runChild } from "../../packages/cli/src/run-child.js";

/** `runChild` (the CLI's daemon and image-build launcher) against real child processes. */

/** A node child that kills itself with `sig` (node installs no handler for these). */
const selfKill = (sig: NodeJS.Signals) =>
  runChild(process.execPath, ["-e", `process.kill(process.pid, "${sig}")`]);

describe("runChild", () => {
  it("resolves to 128 + the signal's number for a child killed by a signal", async () => {
    assert.equal(await selfKill("SIGINT"), 130);
    assert.equal(await selfKill("SIGTERM"), 143);
    assert.equal(await selfKill("SIGKILL"), 137);
    assert.equal(await selfKill("SIGHUP"), 129);
  });

  it("resolves to the exit code of a child that exits", async () => {
    assert.equal(await runChild(process.execPath, ["-e", "process.exit(7)"]), 7);
    assert.equal(await runChild(process.execPath, ["-e", ""]), 0);
  });

  it("rejects when the program cannot be started", async () => {
    await assert.rejects(runChild("/nonexistent/nestbox-no-such-program", []), { code: "ENOENT" });
  });

  it("maps a code or a signal to a shell's exit status", () => {
    assert.equal(exitStatus(3, null), 3);
    assert.equal(exitStatus(null, "SIGINT"), 130);
    assert.equal(exitStatus(null, "SIGTERM"), 143);
    assert.equal(exitStatus(null, null), 1);
  });
});
