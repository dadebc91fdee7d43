import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import path from "node:path";
import { describe, it } from "node:test";
import { fileURLToPath } from "node:url";

const nestbox = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../nestbox");
const run = (...args: string[]) => spawnSync(nestbox, args, { encoding: "utf8", timeout: 30_000 });

describe("./nestbox command line", () => {
  it("prints help listing its commands", () => {
    const r = run("--help");
    assert.equal(r.status, 0);
    for (const cmd of ["setup", "test", "up", "envd", "image"])
      assert.match(r.stdout, new RegExp(`\\n  ${cmd} `));
  });

  it("exits 2 with a hint on an unknown command", () => {
    const r = run("frobnicate");
    assert.equal(r.status, 2);
    assert.match(r.stderr, /unknown command 'frobnicate'/);
    assert.match(r.stderr, /nestbox --help/);
  });

  it("has --help on each command", () => {
    for (const args of [
      ["envd", "--help"],
      ["image", "--help"],
      ["up", "--help"],
      ["setup", "--help"],
      ["test", "--help"],
    ]) {
      const r = run(...args);
      assert.equal(r.status, 0, args.join(" "));
      assert.match(r.stdout, /Usage: /, args.join(" "));
    }
  });

  it("rejects bad envd options with exit 2 and a clear message", () => {
    const port = run("envd", "--port", "notaport");
    assert.equal(port.status, 2);
    assert.match(port.stderr, /--port must be an integer/);
    const unknown = run("envd", "--bogus");
    assert.equal(unknown.status, 2);
    assert.match(unknown.stderr, /Unknown option '--bogus'/);
    const user = run("envd", "--default-user", "no-such-user-xyz");
    assert.equal(user.status, 2);
    assert.match(user.stderr, /no such user/);
  });

  it("rejects an unknown image subcommand", () => {
    const r = run("image", "paint");
    assert.equal(r.status, 2);
    assert.match(r.stderr, /unknown image command: paint/);
  });
});
