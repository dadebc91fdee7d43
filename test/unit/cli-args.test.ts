import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  absolute,
  copyDirection,
  ENV_NAME_RE,
  int,
  pairs,
  parse,
  positionals,
  sandboxId,
  splitAtDash,
  states,
} from "../../packages/sdk/src/cli/args.js";
import { UsageError } from "../../packages/sdk/src/cli/command.js";
import {
  bytes,
  fieldValue,
  json,
  keyValues,
  seconds,
  table,
} from "../../packages/sdk/src/cli/format.js";

/** The client commands' pure argument parsing and output formatting: no network, no VM. */

const ID = "abcdefghij0123456789";
const usage = (message: RegExp) => (err: unknown) =>
  err instanceof UsageError && err.name === "UsageError" && message.test(err.message);

describe("argument parsing", () => {
  it("parses flags and positionals strictly, naming the command in errors", () => {
    const r = parse("sandbox get", ["--json", ID], { json: { type: "boolean" } });
    assert.equal(r.values.json, true);
    assert.deepEqual(r.positionals, [ID]);
    assert.throws(
      () => parse("sandbox get", ["--bogus"], { json: { type: "boolean" } }),
      usage(/^sandbox get: Unknown option '--bogus'/),
    );
  });

  it("wants exactly the named positionals", () => {
    assert.deepEqual(positionals("w", ["a", "b"], ["id", "seconds"]), ["a", "b"]);
    assert.throws(
      () => positionals("w", ["a"], ["id", "seconds"]),
      usage(/^w: missing <seconds>$/),
    );
    assert.throws(() => positionals("w", ["a", "b"], ["id"]), usage(/unexpected argument 'b'/));
  });

  it("splits at the first --", () => {
    assert.deepEqual(splitAtDash(["id", "--cwd", "/x"]), {
      before: ["id", "--cwd", "/x"],
      after: undefined,
    });
    assert.deepEqual(splitAtDash(["id", "--", "ls", "--", "-l"]), {
      before: ["id"],
      after: ["ls", "--", "-l"],
    });
  });

  it("checks sandbox ids", () => {
    assert.equal(sandboxId("w", ID), ID);
    assert.throws(() => sandboxId("w", undefined), usage(/missing <id>/));
    assert.throws(() => sandboxId("w", "ABC"), usage(/'ABC' is not a sandbox id/));
  });

  it("reads integers within bounds", () => {
    assert.equal(int("w", "--vcpus", undefined, 1, 32), undefined);
    assert.equal(int("w", "--vcpus", "4", 1, 32), 4);
    for (const bad of ["0", "33", "-1", "1.5", "2e1", " 3", ""])
      assert.throws(
        () => int("w", "--vcpus", bad, 1, 32),
        usage(/--vcpus must be an integer from 1 to 32/),
        bad,
      );
  });

  it("reads KEY=VALUE pairs", () => {
    assert.equal(pairs("w", "--env", undefined), undefined);
    assert.equal(pairs("w", "--env", []), undefined);
    assert.deepEqual(pairs("w", "--env", ["A=1", "B=x=y", "C="], ENV_NAME_RE), {
      A: "1",
      B: "x=y",
      C: "",
    });
    assert.throws(() => pairs("w", "--env", ["=1"]), usage(/--env takes KEY=VALUE, got '=1'/));
    assert.throws(() => pairs("w", "--env", ["noeq"]), usage(/got 'noeq'/));
    assert.throws(
      () => pairs("w", "--env", ["1A=x"], ENV_NAME_RE),
      usage(/KEY=VALUE \(KEY a variable name\), got '1A=x'/),
    );
    assert.deepEqual(pairs("w", "--metadata", ["team.name=a b"]), { "team.name": "a b" });
  });

  it("wants absolute paths", () => {
    assert.equal(absolute("w", "--cwd", "/tmp"), "/tmp");
    assert.throws(() => absolute("w", "--cwd", "tmp"), usage(/--cwd must be an absolute path/));
  });

  it("reads --state lists", () => {
    assert.equal(states("w", undefined), undefined);
    assert.deepEqual(states("w", "running,paused"), ["running", "paused"]);
    assert.throws(() => states("w", "running,asleep"), usage(/unknown state 'asleep' \(one of /));
  });

  it("tells an upload from a download", () => {
    assert.deepEqual(copyDirection("cp", "a.txt", `${ID}:/home/user/`), {
      kind: "upload",
      local: "a.txt",
      id: ID,
      remote: "/home/user/",
    });
    assert.deepEqual(copyDirection("cp", `${ID}:/etc/os-release`, "-"), {
      kind: "download",
      id: ID,
      remote: "/etc/os-release",
      local: "-",
    });
    assert.throws(() => copyDirection("cp", `${ID}:/a`, `${ID}:/b`), usage(/two sandboxes/));
    assert.throws(() => copyDirection("cp", "a", "b"), usage(/one side must be <id>:/));
  });
});

describe("output formatting", () => {
  it("aligns table columns, leaving the last unpadded", () => {
    assert.equal(
      table([
        ["ID", "STATUS", "META"],
        ["abc", "running", "a=1"],
        ["x", "paused", ""],
      ]),
      "ID   STATUS   META\nabc  running  a=1\nx    paused   \n",
    );
    assert.equal(table([]), "\n");
  });

  it("prints sizes in binary units", () => {
    assert.equal(bytes(0), "0 B");
    assert.equal(bytes(1023), "1023 B");
    assert.equal(bytes(1024), "1.0 KiB");
    assert.equal(bytes(1536), "1.5 KiB");
    assert.equal(bytes(5 * 2 ** 30), "5.0 GiB");
    assert.equal(bytes(2 ** 50), "1024.0 TiB");
  });

  it("formats JSON, timestamps, metadata and fields", () => {
    assert.equal(json({ a: 1 }), '{\n  "a": 1\n}\n');
    assert.equal(seconds("2026-01-02T03:04:05.123Z"), "2026-01-02T03:04:05Z");
    assert.equal(seconds("2026-01-02T03:04:05Z"), "2026-01-02T03:04:05Z");
    assert.equal(keyValues({ a: "1", b: "x" }), "a=1,b=x");
    assert.equal(keyValues({}), "");
    assert.equal(fieldValue(null), "-");
    assert.equal(fieldValue({ k: "v" }), '{"k":"v"}');
    assert.equal(fieldValue(3), "3");
    assert.equal(fieldValue(false), "false");
  });
});
