import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { Sandbox } from "e2b";
import { type EnvdProcess, startEnvd } from "./support/harness.js";

// E2B's own envd tests run the SDK in debug mode against envd on localhost:49983; this file
// is the only one that binds that fixed port.
describe("E2B SDK debug mode (E2B_DEBUG=true, envd on localhost:49983)", () => {
  let envd: EnvdProcess;
  const saved = process.env.E2B_DEBUG;
  before(async () => {
    envd = await startEnvd(["--port", "49983"]);
    process.env.E2B_DEBUG = "true";
  });
  after(async () => {
    if (saved === undefined) delete process.env.E2B_DEBUG;
    else process.env.E2B_DEBUG = saved;
    await envd.stop();
  });

  it("creates a debug sandbox and runs id -un as user", async () => {
    const sbx = await Sandbox.create({ apiKey: `e2b_${"1".repeat(40)}` });
    assert.equal(sbx.sandboxId, "debug_sandbox_id");
    const r = await sbx.commands.run("id -un");
    assert.equal(r.stdout, "user\n");
  });

  it("connects by id and runs a command as root", async () => {
    const sbx = await Sandbox.connect("anyid00000000000000x", { apiKey: `e2b_${"1".repeat(40)}` });
    const r = await sbx.commands.run("echo $((6*7))", { user: "root" });
    assert.equal(r.stdout, "42\n");
  });
});
