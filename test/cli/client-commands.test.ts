import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { NestboxApiError, NestboxClient } from "../../packages/sdk/src/client/index.js";
import type { RunningServer } from "../../packages/server/src/main.js";
import {
  assertApiError,
  assertUsage,
  type CliApp,
  type Result,
  runClientCommand,
  startCliApp,
} from "./support/in-process.js";

/**
 * The `nestbox sandbox` / `nestbox template` client commands and the typed client against a real
 * control plane (in-process, embedded PGlite database, all-in-one seed) with no host agent: what
 * needs no sandbox. End-to-end tests with an agent live in test/e2e.
 */

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const UNKNOWN_ID = "aaaaaaaaaaaaaaaaaaaa";

let app: CliApp;
let server: RunningServer;
let dataDir: string;
let apiKey: string;

const nbx = (args: string[], env: NodeJS.ProcessEnv = {}, stdin = "") =>
  runClientCommand(
    args,
    { NESTBOX_API_URL: server.url, NESTBOX_API_KEY: apiKey, NESTBOX_DIR: dataDir, ...env },
    stdin,
  );

/** Runs the real CLI entry (main.ts) as a child process. */
function cli(args: string[], env: NodeJS.ProcessEnv): Promise<Result> {
  return new Promise((resolve, reject) => {
    const child = spawn(
      process.execPath,
      ["--import", "tsx", path.join(repoRoot, "packages/cli/src/main.ts"), ...args],
      { env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] },
    );
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (b: Buffer) => {
      stdout += b;
    });
    child.stderr.on("data", (b: Buffer) => {
      stderr += b;
    });
    const timer = setTimeout(() => child.kill("SIGKILL"), 60_000);
    child.once("error", reject);
    child.once("close", (code) => {
      clearTimeout(timer);
      resolve({ code: code ?? -1, stdout, stderr });
    });
  });
}

/** A loopback port nothing listens on. */
async function closedPort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, "127.0.0.1", r));
  const addr = srv.address();
  await new Promise<void>((r) => srv.close(() => r()));
  return typeof addr === "object" && addr ? addr.port : 0;
}

before(async () => {
  app = await startCliApp("client");
  ({ server, dataDir, apiKey } = app);
});

after(async () => {
  await app?.close();
});

describe("nestbox sandbox / template: usage", () => {
  it("prints help for the groups and for each command", async () => {
    const group = await nbx(["sandbox", "--help"]);
    assert.equal(group.code, 0);
    for (const sub of ["create", "list", "exec", "shell", "cp", "pause", "resume", "kill"])
      assert.match(group.stdout, new RegExp(`\\n  ${sub} `), sub);
    assert.match(group.stdout, /NESTBOX_API_URL/);
    const exec = await nbx(["sandbox", "exec", "--help"]);
    assert.equal(exec.code, 0);
    assert.match(exec.stdout, /^Usage: nestbox sandbox exec <id> .* -- <cmd>/);
    const tpl = await nbx(["template", "snapshot", "-h"]);
    assert.equal(tpl.code, 0);
    assert.match(tpl.stdout, /^Usage: nestbox template snapshot <sandbox-id> <name>/);
  });

  it("does not take a command's own --help after -- as ours", async () => {
    // Reaches the API (and fails there: the sandbox does not exist) instead of printing help.
    const r = await nbx(["sandbox", "exec", UNKNOWN_ID, "--", "ls", "--help"]);
    assertApiError(r, "not_found");
    assert.equal(r.stdout, "");
  });

  it("rejects missing and invalid arguments with a usage error naming the problem", async () => {
    assertUsage(await nbx(["sandbox"]), /missing sandbox command/);
    assertUsage(await nbx(["sandbox", "frob"]), /unknown sandbox command 'frob'/);
    assertUsage(await nbx(["template", "frob"]), /unknown template command 'frob'/);
    assertUsage(await nbx(["sandbox", "get"]), /sandbox get: missing <id>/);
    assertUsage(await nbx(["sandbox", "get", "NOT-AN-ID"]), /'NOT-AN-ID' is not a sandbox id/);
    assertUsage(await nbx(["sandbox", "kill", UNKNOWN_ID, "extra"]), /unexpected argument 'extra'/);
    assertUsage(await nbx(["sandbox", "exec", UNKNOWN_ID]), /missing the command/);
    assertUsage(await nbx(["sandbox", "exec", UNKNOWN_ID, "--", ""]), /missing the command/);
    assertUsage(
      await nbx(["sandbox", "exec", UNKNOWN_ID, "--cwd", "tmp", "--", "ls"]),
      /--cwd must be an absolute path/,
    );
    assertUsage(
      await nbx(["sandbox", "create", "--bogus"]),
      /sandbox create: Unknown option '--bogus'/,
    );
    assertUsage(
      await nbx(["sandbox", "create", "--vcpus", "two"]),
      /--vcpus must be an integer from 1 to 32, got 'two'/,
    );
    assertUsage(await nbx(["sandbox", "create", "--memory-mb", "64"]), /--memory-mb must be/);
    assertUsage(await nbx(["sandbox", "create", "--env", "1X=y"]), /--env takes KEY=VALUE/);
    assertUsage(await nbx(["sandbox", "create", "--metadata", "novalue"]), /--metadata takes/);
    assertUsage(await nbx(["sandbox", "create", "--template", "Bad Name"]), /not a template name/);
    assertUsage(
      await nbx(["sandbox", "list", "--state", "running,sleeping"]),
      /unknown state 'sleeping'/,
    );
    assertUsage(await nbx(["sandbox", "cp", "a", "b"]), /one side must be <id>:<remote path>/);
    assertUsage(
      await nbx(["sandbox", "cp", `${UNKNOWN_ID}:/a`, `${UNKNOWN_ID}:/b`]),
      /between two sandboxes/,
    );
    assertUsage(
      await nbx(["sandbox", "cp", "/etc/hostname", `${UNKNOWN_ID}:relative`]),
      /remote path must be an absolute path/,
    );
    assertUsage(
      await nbx(["sandbox", "cp", path.join(dataDir, "no-such-file"), `${UNKNOWN_ID}:/tmp/x`]),
      /cannot read .*no-such-file: ENOENT/,
    );
    assertUsage(await nbx(["sandbox", "timeout", UNKNOWN_ID, "-5"]), /sandbox timeout/);
    assertUsage(await nbx(["sandbox", "shell", UNKNOWN_ID, "--", "-l"]), /need --cmd/);
    assertUsage(await nbx(["template", "snapshot", UNKNOWN_ID]), /missing <name>/);
    assertUsage(await nbx(["template", "delete", "UPPER"]), /not a template name/);
  });
});

describe("nestbox sandbox / template against the control plane (no host)", () => {
  it("template list shows the platform's base template (JSON and table)", async () => {
    const r = await nbx(["template", "list", "--json"]);
    assert.equal(r.code, 0, r.stderr);
    const templates = JSON.parse(r.stdout) as { name: string; platform: boolean; kind: string }[];
    const base = templates.find((t) => t.name === "base");
    assert.ok(base, r.stdout);
    assert.equal(base.platform, true);
    assert.equal(base.kind, "base");
    const table = await nbx(["template", "list"]);
    assert.equal(table.code, 0);
    assert.match(table.stdout, /^NAME\s+KIND\s+OWNER/);
    assert.match(table.stdout, /\nbase\s+base\s+platform\s/);
  });

  it("sandbox list is empty", async () => {
    const r = await nbx(["sandbox", "list"]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, "");
    assert.match(r.stderr, /no sandboxes/);
    const j = await nbx([
      "sandbox",
      "list",
      "--json",
      "--state",
      "running,stopped",
      "--metadata",
      "a=b",
    ]);
    assert.equal(j.code, 0, j.stderr);
    assert.deepEqual(JSON.parse(j.stdout), []);
  });

  it("sandbox create fails cleanly with no_hosts_available when no host is registered", async () => {
    const r = await nbx(["sandbox", "create", "--vcpus", "1", "--env", "A=1", "--metadata", "k=v"]);
    assertApiError(r, "no_hosts_available", /host/);
    assert.equal(r.stdout, "");
  });

  it("sandbox commands on an unknown id report not_found (REST, file transfer and WebSockets)", async () => {
    for (const args of [
      ["get", UNKNOWN_ID],
      ["kill", UNKNOWN_ID],
      ["pause", UNKNOWN_ID],
      ["resume", UNKNOWN_ID],
      ["timeout", UNKNOWN_ID, "60"],
      ["exec", UNKNOWN_ID, "--", "true"],
      ["shell", UNKNOWN_ID],
      ["cp", "/etc/hostname", `${UNKNOWN_ID}:/tmp/hostname`],
      ["cp", `${UNKNOWN_ID}:/etc/hostname`, path.join(dataDir, "out")],
    ]) {
      const r = await nbx(["sandbox", ...args]);
      assertApiError(r, "not_found", /sandbox/i);
    }
    await assert.rejects(readFile(path.join(dataDir, "out")), { code: "ENOENT" });
  });

  it("template snapshot and delete report the API's errors", async () => {
    assertApiError(await nbx(["template", "snapshot", UNKNOWN_ID, "mine"]), "not_found");
    assertApiError(await nbx(["template", "delete", "no-such-template"]), "not_found");
  });

  it("a bad API key is unauthorized; no key at all says how to set one", async () => {
    const bad = await nbx(["sandbox", "list"], { NESTBOX_API_KEY: `nbx_${"0".repeat(40)}` });
    assertApiError(bad, "unauthorized");
    assert.doesNotMatch(bad.stderr, /hint:/);
    const wsBad = await nbx(["sandbox", "exec", UNKNOWN_ID, "--", "true"], {
      NESTBOX_API_KEY: "nbx_nonsense",
    });
    assertApiError(wsBad, "unauthorized");

    const emptyDir = await mkdtemp(path.join(tmpdir(), "nestbox-cli-nokey-"));
    try {
      const none = await nbx(["template", "list"], { NESTBOX_API_KEY: "", NESTBOX_DIR: emptyDir });
      assertApiError(none, "unauthorized", /missing credentials/);
      assert.match(none.stderr, /hint: set NESTBOX_API_KEY/);
      // The all-in-one key file is the default when NESTBOX_API_KEY is unset.
      await writeFile(path.join(emptyDir, "admin-api-key"), `${apiKey}\n`);
      const fromFile = await nbx(["template", "list"], {
        NESTBOX_API_KEY: "",
        NESTBOX_DIR: emptyDir,
      });
      assert.equal(fromFile.code, 0, fromFile.stderr);
    } finally {
      await rm(emptyDir, { recursive: true, force: true });
    }
  });

  it("an unreachable control plane is reported as such", async () => {
    const url = `http://127.0.0.1:${await closedPort()}`;
    const r = await nbx(["sandbox", "list"], { NESTBOX_API_URL: url });
    assertApiError(r, "unreachable", new RegExp(`cannot reach the control plane at ${url}`));
  });
});

describe("NestboxClient", () => {
  it("throws NestboxApiError with status, code and message", async () => {
    const client = new NestboxClient({ apiUrl: server.url, apiKey });
    const notFound = (e: unknown) =>
      e instanceof NestboxApiError &&
      e.status === 404 &&
      e.code === "not_found" &&
      /sandbox/i.test(e.message);
    await assert.rejects(client.sandboxes.get(UNKNOWN_ID), notFound);
    await assert.rejects(client.sandboxes.kill(UNKNOWN_ID), notFound);
    await assert.rejects(client.files.list(UNKNOWN_ID, "/"), notFound);
    await assert.rejects(client.files.download(UNKNOWN_ID, "/etc/hostname"), notFound);
    await assert.rejects(client.files.upload(UNKNOWN_ID, "/tmp/x", Buffer.from("x")), notFound);
    await assert.rejects(client.execStream(UNKNOWN_ID, "true"), notFound);
    await assert.rejects(client.pty(UNKNOWN_ID, { cols: 80, rows: 24 }, { onData() {} }), notFound);
    await assert.rejects(
      client.sandboxes.create({ template: "no-such-template" }),
      (e: unknown) => e instanceof NestboxApiError && e.status >= 400 && e.status < 500,
    );
    await assert.rejects(
      client.sandboxes.create({ vcpus: 0 }),
      (e: unknown) =>
        e instanceof NestboxApiError &&
        e.status === 400 &&
        e.code === "invalid_request" &&
        e.field === "vcpus",
    );
    const denied = new NestboxClient({ apiUrl: server.url, apiKey: "nbx_wrong" });
    await assert.rejects(
      denied.templates.list(),
      (e: unknown) => e instanceof NestboxApiError && e.status === 401 && e.code === "unauthorized",
    );
  });

  it("pages through sandboxes and lists templates", async () => {
    const client = new NestboxClient({ apiUrl: server.url, apiKey });
    const pages: unknown[][] = [];
    for await (const page of client.sandboxes.pages({ limit: 5 })) pages.push(page);
    assert.deepEqual(pages, [[]]);
    const names = (await client.templates.list()).map((t) => t.name);
    assert.ok(names.includes("base"), names.join(","));
  });
});

describe("through the nestbox entry point (main.ts)", () => {
  it("exits 2 on bad usage and 1 on an API error", async () => {
    const env = { NESTBOX_API_URL: server.url, NESTBOX_API_KEY: apiKey };
    const usage = await cli(["sandbox", "get", "NOT-AN-ID"], env);
    assert.equal(usage.code, 2, usage.stderr);
    assert.match(usage.stderr, /is not a sandbox id/);
    const api = await cli(["sandbox", "get", UNKNOWN_ID], env);
    assert.equal(api.code, 1, api.stderr);
    assert.match(api.stderr, /^error: not_found: /m);
  });
});
