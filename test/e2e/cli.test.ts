/**
 * The client commands (`nestbox sandbox …`, `nestbox template …`) end to end: the built CLI as
 * a child process, the way a user runs it, against a real control plane (PGlite) and a real
 * namespace host agent.
 */
import assert from "node:assert/strict";
import { createHash, randomBytes, randomUUID } from "node:crypto";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { type CliOptions, type CliResult, runCli } from "./support/cli-process.js";
import { type Stack, startStack } from "./support/control-plane-harness.js";

const sha256 = (b: Buffer) => createHash("sha256").update(b).digest("hex");

describe("nestbox sandbox/template commands (namespace runtime, PGlite)", {
  concurrency: false,
}, () => {
  let s: Stack;
  let work: string;
  const live = new Set<string>();
  const templates = new Set<string>();
  const nbx = (args: string[], o: CliOptions = {}): Promise<CliResult> =>
    runCli(args, {
      ...o,
      env: { NESTBOX_API_URL: s.apiUrl, NESTBOX_API_KEY: s.adminKey, ...o.env },
    });
  /** Asserts a zero exit and returns the result. */
  const ok = async (args: string[], o: CliOptions = {}) => {
    const r = await nbx(args, o);
    assert.equal(r.code, 0, `nestbox ${args.join(" ")}: ${r.stderr}`);
    return r;
  };
  const create = async (...args: string[]) => {
    const r = await ok(["sandbox", "create", "--json", ...args]);
    const sbx = JSON.parse(r.stdout);
    live.add(sbx.id);
    return sbx;
  };
  const sh = (id: string, script: string) => ok(["sandbox", "exec", id, "--", "sh", "-c", script]);

  let sbx: { id: string; status: string; metadata: Record<string, string> };

  before(async () => {
    s = await startStack({ runtime: "namespace", instance: "k", slots: "7300-7399", db: "pglite" });
    work = mkdtempSync(path.join(tmpdir(), "nbx-e2e-cli-"));
  });
  after(async () => {
    for (const id of live) {
      const r = await s.api("DELETE", `/v1/sandboxes/${id}`);
      if (r.status !== 204 && r.status !== 404)
        console.error(`cleanup: delete ${id}: ${r.status} ${JSON.stringify(r.body)}`);
    }
    for (const name of templates) {
      const r = await s.api("DELETE", `/v1/templates/${name}`);
      if (r.status !== 204 && r.status !== 404)
        console.error(`cleanup: delete template ${name}: ${r.status} ${JSON.stringify(r.body)}`);
    }
    await s?.close();
    if (work) rmSync(work, { recursive: true, force: true });
  });

  it("sandbox create --json with metadata and env; list filters by metadata", async () => {
    const marker = randomUUID();
    sbx = await create("--metadata", "a=b", "--metadata", `run=${marker}`, "--env", "X=1");
    assert.equal(sbx.status, "running");
    assert.deepEqual(sbx.metadata, { a: "b", run: marker });

    const all = JSON.parse((await ok(["sandbox", "list", "--json"])).stdout);
    assert.ok(
      all.some((x: { id: string }) => x.id === sbx.id),
      JSON.stringify(all),
    );
    const mine = JSON.parse(
      (await ok(["sandbox", "list", "--json", "--metadata", `run=${marker}`])).stdout,
    );
    assert.deepEqual(
      mine.map((x: { id: string; status: string }) => [x.id, x.status]),
      [[sbx.id, "running"]],
    );
    const both = await ok([
      "sandbox",
      "list",
      "--json",
      "--metadata",
      "a=b",
      "--metadata",
      `run=${marker}`,
    ]);
    assert.equal(JSON.parse(both.stdout).length, 1);
    const none = await ok(["sandbox", "list", "--json", "--metadata", "a=c"]);
    assert.deepEqual(JSON.parse(none.stdout), []);
    const table = await ok(["sandbox", "list", "--metadata", `run=${marker}`]);
    assert.match(table.stdout, /^ID +STATUS +TEMPLATE/);
    assert.match(table.stdout, new RegExp(`^${sbx.id} +running +base .*a=b,run=${marker}$`, "m"));
  });

  it("sandbox exec: stdout, stderr and the exit code are the command's; env from create", async () => {
    const r = await nbx([
      "sandbox",
      "exec",
      sbx.id,
      "--",
      "sh",
      "-c",
      "echo $X; echo e >&2; exit 7",
    ]);
    assert.equal(r.code, 7, r.stderr);
    assert.equal(r.stdout, "1\n");
    assert.equal(r.stderr, "e\n");
    const withEnv = await ok([
      "sandbox",
      "exec",
      sbx.id,
      "--env",
      "Y=2",
      "--cwd",
      "/tmp",
      "--",
      "sh",
      "-c",
      'echo "$X$Y $(pwd)"',
    ]);
    assert.equal(withEnv.stdout, "12 /tmp\n");
  });

  it("sandbox exec passes piped stdin to the command", async () => {
    const r = await ok(["sandbox", "exec", sbx.id, "--", "cat"], { input: "line one\nline two\n" });
    assert.equal(r.stdout, "line one\nline two\n");
    // More than one chunk: the whole input arrives, in order.
    const big = randomBytes(3 << 20);
    const h = await ok(["sandbox", "exec", sbx.id, "--", "sha256sum"], { input: big });
    assert.equal(h.stdout.split(" ")[0], sha256(big));
    // A command that does not read its input still exits.
    const ignored = await nbx(["sandbox", "exec", sbx.id, "--", "true"], { input: big });
    assert.equal(ignored.code, 0, ignored.stderr);
  });

  it("sandbox cp uploads and downloads a 20 MiB file intact", async (t) => {
    const data = randomBytes(20 << 20);
    const local = path.join(work, "up.bin");
    writeFileSync(local, data);
    const up = await ok(["sandbox", "cp", local, `${sbx.id}:/home/user/data.bin`], {
      timeoutMs: 120_000,
    });
    t.diagnostic(`upload: ${up.ms} ms`);
    assert.equal(up.stderr, "", "progress is drawn only on a terminal");
    // Read back inside, as the sandbox's default user.
    const remote = await sh(sbx.id, "sha256sum /home/user/data.bin");
    assert.equal(remote.stdout, `${sha256(data)}  /home/user/data.bin\n`);

    const back = path.join(work, "down.bin");
    const down = await ok(["sandbox", "cp", `${sbx.id}:/home/user/data.bin`, back], {
      timeoutMs: 120_000,
    });
    t.diagnostic(`download: ${down.ms} ms`);
    assert.equal(sha256(readFileSync(back)), sha256(data));
    // Into a directory: the remote file's name; to stdout with '-'.
    await ok(["sandbox", "cp", `${sbx.id}:/home/user/data.bin`, `${work}/`]);
    assert.equal(sha256(readFileSync(path.join(work, "data.bin"))), sha256(data));
    const toStdout = await ok(["sandbox", "cp", `${sbx.id}:/home/user/data.bin`, "-"]);
    assert.equal(sha256(toStdout.out), sha256(data));
    // From stdin into a remote directory: named 'stdin'.
    await ok(["sandbox", "cp", "-", `${sbx.id}:/tmp/`], { input: "from stdin\n" });
    assert.equal((await sh(sbx.id, "cat /tmp/stdin")).stdout, "from stdin\n");
  });

  it("sandbox cp of a missing remote file fails and leaves no local file", async () => {
    const before = readdirSync(work).sort();
    const target = path.join(work, "missing.bin");
    const r = await nbx(["sandbox", "cp", `${sbx.id}:/home/user/nope.bin`, target]);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /^error: not_found: /);
    assert.ok(!existsSync(target));
    assert.deepEqual(readdirSync(work).sort(), before, "a temporary file was left behind");
    const missingLocal = await nbx(["sandbox", "cp", path.join(work, "nope"), `${sbx.id}:/tmp/x`]);
    assert.equal(missingLocal.code, 2, missingLocal.stderr);
    assert.match(missingLocal.stderr, /cannot read .*nope: ENOENT/);
  });

  it("sandbox shell types piped input into a terminal and exits with the shell's code", async () => {
    const r = await nbx(["sandbox", "shell", sbx.id], { input: "echo hel''lo; exit 3\n" });
    assert.match(r.stdout, /hello\r?\n/, JSON.stringify(r.stdout));
    assert.equal(r.code, 3, `${r.stdout}\n${r.stderr}`);
    // End of input is Ctrl-D: a shell that is not told to exit still ends, with 0.
    const eof = await nbx(["sandbox", "shell", sbx.id], { input: "echo $((6*7))\n" });
    assert.match(eof.stdout, /42\r?\n/, JSON.stringify(eof.stdout));
    assert.equal(eof.code, 0, `${eof.stdout}\n${eof.stderr}`);
    // Ctrl-D typed while a command runs (terminal in canonical mode) does not end the shell;
    // it still ends once the shell reads again. A last line without a newline still runs.
    const busy = await nbx(["sandbox", "shell", sbx.id], {
      input: "sleep 1.5; echo slept\necho no-newline",
      timeoutMs: 20_000,
    });
    assert.match(busy.stdout, /[\r\n]slept\r?\n/, JSON.stringify(busy.stdout));
    assert.match(busy.stdout, /(?<!echo )no-newline\r?\n/, JSON.stringify(busy.stdout));
    assert.equal(busy.code, 0, `${busy.stdout}\n${busy.stderr}`);
    const prog = await nbx([
      "sandbox",
      "shell",
      sbx.id,
      "--cmd",
      "/bin/sh",
      "--",
      "-c",
      "tty; exit 4",
    ]);
    assert.match(prog.stdout, /\/dev\/pts\/\d+/);
    assert.equal(prog.code, 4);
  });

  it("sandbox pause, resume and kill", async () => {
    await sh(sbx.id, "echo kept > /home/user/kept");
    assert.equal((await ok(["sandbox", "pause", sbx.id])).stdout, `${sbx.id}: paused\n`);
    const refused = await nbx(["sandbox", "exec", sbx.id, "--", "true"]);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /^error: invalid_state: /);
    const again = await nbx(["sandbox", "pause", sbx.id]);
    assert.equal(again.code, 1);
    assert.match(again.stderr, /^error: invalid_state: /);
    assert.equal((await ok(["sandbox", "resume", sbx.id])).stdout, `${sbx.id}: running\n`);
    assert.equal((await sh(sbx.id, "cat /home/user/kept")).stdout, "kept\n");
    assert.equal((await ok(["sandbox", "kill", sbx.id])).stdout, `${sbx.id}: stopped\n`);
    live.delete(sbx.id);
    const got = JSON.parse((await ok(["sandbox", "get", sbx.id, "--json"])).stdout);
    assert.equal(got.status, "stopped");
    const listed = JSON.parse((await ok(["sandbox", "list", "--json"])).stdout);
    assert.ok(!listed.some((x: { id: string }) => x.id === sbx.id));
    const stopped = JSON.parse(
      (await ok(["sandbox", "list", "--json", "--state", "stopped"])).stdout,
    );
    assert.ok(stopped.some((x: { id: string }) => x.id === sbx.id));
  });

  it("template snapshot, create from it, list and delete", async (t) => {
    const name = `cli-e2e-${randomBytes(4).toString("hex")}`;
    const src = await create();
    await sh(src.id, "echo from-template > /home/user/mark");
    const snap = await ok(["template", "snapshot", src.id, name], { timeoutMs: 180_000 });
    t.diagnostic(`snapshot: ${snap.ms} ms`);
    templates.add(name);
    live.delete(src.id);
    assert.equal(snap.stdout, `${name}\n`);
    const srcNow = JSON.parse((await ok(["sandbox", "get", src.id, "--json"])).stdout);
    assert.equal(srcNow.status, "stopped", "the snapshotted sandbox is destroyed");

    const listed = JSON.parse((await ok(["template", "list", "--json"])).stdout);
    const tpl = listed.find((x: { name: string }) => x.name === name);
    assert.ok(tpl, JSON.stringify(listed));
    // The all-in-one admin key belongs to the platform team: its templates are platform ones.
    assert.equal(tpl.platform, true);
    assert.ok(
      listed.some((x: { name: string; platform: boolean }) => x.name === "base" && x.platform),
    );
    const table = await ok(["template", "list"]);
    assert.match(table.stdout, new RegExp(`^${name.replaceAll(".", "\\.")} +\\S+ +platform `, "m"));

    const child = await create("--template", name);
    assert.equal(child.template, name);
    assert.equal((await sh(child.id, "cat /home/user/mark")).stdout, "from-template\n");
    await ok(["sandbox", "kill", child.id]);
    live.delete(child.id);

    await ok(["template", "delete", name]);
    templates.delete(name);
    const after = JSON.parse((await ok(["template", "list", "--json"])).stdout);
    assert.ok(!after.some((x: { name: string }) => x.name === name));
    const gone = await nbx(["sandbox", "create", "--template", name]);
    assert.equal(gone.code, 1);
    assert.match(gone.stderr, /^error: not_found: /);
    const twice = await nbx(["template", "delete", name]);
    assert.equal(twice.code, 1);
    assert.match(twice.stderr, /^error: not_found: /);
  });
});
