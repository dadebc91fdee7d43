/**
 * `nestbox host …` against a real control plane (in process, PGlite, all-in-one seed, no agent):
 * help and usage errors, the admin's whole host lifecycle (acting as the all-in-one admin from
 * `$NESTBOX_DIR/admin-password`), a BYOC team's owner and member through NESTBOX_TOKEN, an API
 * key's read-only view, and the delete refusal with its sandboxes.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { newSandboxId } from "../../packages/server/src/ids.js";
import type { RunningServer } from "../../packages/server/src/main.js";
import { type TestTeam, testTeam } from "../server/support/host-teams.js";
import {
  assertApiError,
  assertOk,
  assertUsage,
  type CliApp,
  type Result,
  runClientCommand,
  startCliApp,
} from "./support/in-process.js";

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");

let app: CliApp;
let server: RunningServer;
let dataDir: string;
let emptyDir: string;
let apiKey: string;
let team: TestTeam;

const nbx = (args: string[], env: NodeJS.ProcessEnv = {}) =>
  runClientCommand(args, {
    NESTBOX_API_URL: server.url,
    NESTBOX_API_KEY: apiKey,
    NESTBOX_DIR: dataDir,
    ...env,
  });
const ok = assertOk;
const apiError = (r: Result, code: string) => assertApiError(r, code);
const usage = assertUsage;

before(async () => {
  emptyDir = await mkdtemp(path.join(tmpdir(), "nestbox-cli-host-nokey-"));
  app = await startCliApp("host");
  ({ server, dataDir, apiKey } = app);
  team = await testTeam(server.db, server.config.jwtSecret, "Own Metal", true);
});

after(async () => {
  await app?.close();
  if (emptyDir) await rm(emptyDir, { recursive: true, force: true });
});

describe("nestbox host", () => {
  it("prints help for the group and each command; bad usage exits 2", async () => {
    const group = await nbx(["host", "--help"]);
    ok(group);
    for (const sub of ["list", "get", "create", "delete", "preview", "token", "drain", "tags"])
      assert.match(group.stdout, new RegExp(`\\n  ${sub} `), sub);
    const create = await nbx(["host", "create", "--help"]);
    ok(create);
    assert.match(create.stdout, /registration token/);
    assert.match(create.stdout, /NESTBOX_TOKEN/);
    usage(await nbx(["host", "get", "nope"]), /not a host id/);
    usage(await nbx(["host", "create", "x", "--byoc"]), /--byoc needs --team/);
    usage(await nbx(["host", "create", "x", "--team", team.id]), /only for --byoc/);
    usage(await nbx(["host", "create", "bad name"]), /not a host name/);
    usage(await nbx(["host", "list", "--type", "gpu"]), /regular or byoc/);
    usage(await nbx(["host", "tags", "add", "host_aaaaaaaaaaaaaaaaaaaa", "GPU"]), /not a tag/);
    usage(await nbx(["host", "frobnicate"]), /unknown host command/);

    // Wired into the umbrella binary.
    const child = spawn(
      process.execPath,
      ["--import", "tsx", path.join(repoRoot, "packages/cli/src/main.ts"), "host", "--help"],
      { stdio: ["ignore", "pipe", "pipe"] },
    );
    let stdout = "";
    child.stdout.on("data", (b: Buffer) => {
      stdout += b;
    });
    const code = await new Promise<number | null>((r) => child.once("close", r));
    assert.equal(code, 0);
    assert.match(stdout, /Usage: nestbox host <command>/);
  });

  it("the all-in-one admin's host lifecycle", async () => {
    const created = await nbx(["host", "create", "rack-1", "--json"]);
    ok(created);
    const { host, registration_token } = JSON.parse(created.stdout);
    assert.equal(host.status, "pending");
    assert.match(registration_token, /^[0-9a-f]{64}$/);

    const list = await nbx(["host", "list"]);
    ok(list);
    assert.match(list.stdout, /^ID\s+NAME\s+TYPE\s+TEAM\s+STATUS/);
    assert.match(list.stdout, new RegExp(`${host.id}\\s+rack-1\\s+regular\\s+-\\s+pending`));
    const byoc = await nbx(["host", "list", "--type", "byoc", "--json"]);
    ok(byoc);
    assert.deepEqual(JSON.parse(byoc.stdout), []);

    ok(await nbx(["host", "tags", "add", host.id, "gpu"]));
    ok(await nbx(["host", "tags", "add", host.id, "eu-west"]));
    const tags = await nbx(["host", "tags", host.id]);
    ok(tags);
    assert.equal(tags.stdout, "eu-west\ngpu\n");
    ok(await nbx(["host", "tags", "rm", host.id, "gpu"]));

    const drained = await nbx(["host", "drain", host.id, "--json"]);
    ok(drained);
    assert.equal(JSON.parse(drained.stdout).draining, true);
    assert.match((await nbx(["host", "list"])).stdout, /pending,draining/);
    const undrained = await nbx(["host", "undrain", host.id]);
    ok(undrained);
    assert.match(undrained.stdout, /^draining\s+false$/m);

    const token = await nbx(["host", "token", host.id]);
    ok(token);
    assert.match(token.stdout, /^[0-9a-f]{64}\n$/);
    assert.notEqual(token.stdout.trim(), registration_token);

    const got = await nbx(["host", "get", host.id]);
    ok(got);
    assert.match(got.stdout, /^tags\s+\["eu-west"\]$/m);
    const preview = await nbx(["host", "preview", host.id]);
    ok(preview);
    assert.equal(preview.stdout, "");
    ok(await nbx(["host", "delete", host.id]));
    apiError(await nbx(["host", "get", host.id]), "not_found");
  });

  it("delete refuses a host with sandboxes and names them; --force deletes it", async () => {
    const { host } = JSON.parse((await nbx(["host", "create", "busy", "--json"])).stdout);
    const [platform] = await server.db.query<{ id: string }>(
      "SELECT id FROM teams WHERE is_platform",
    );
    const sandboxId = newSandboxId();
    await server.db.query(
      `INSERT INTO sandboxes (id, team_id, host_id, template, status, vcpus, memory_mb,
         disk_size_mb, timeout_sec)
       VALUES ($1, $2, $3, 'base', 'paused', 1, 512, 1024, 300)`,
      [sandboxId, platform?.id, host.id],
    );
    const refused = await nbx(["host", "delete", host.id]);
    apiError(refused, "has_active_sandboxes");
    assert.match(refused.stderr, /host preview/);
    const preview = await nbx(["host", "preview", host.id]);
    assert.equal(preview.stdout, `${sandboxId}\n`);
    ok(await nbx(["host", "delete", host.id, "--force"]));
  });

  it("a BYOC team's owner manages its hosts; its member and an API key only look", async () => {
    const owner = { NESTBOX_TOKEN: team.owner.token };
    const made = await nbx(["host", "create", "own-1", "--byoc", "--team", team.id], owner);
    ok(made);
    const id = /host (host_[a-z0-9]{20}) \(own-1, byoc\) is pending/.exec(made.stdout)?.[1];
    assert.ok(id, made.stdout);
    assert.match(made.stdout, /registration token \(one use, 1 h\): [0-9a-f]{64}/);

    const member = { NESTBOX_TOKEN: team.member.token };
    const seen = await nbx(["host", "list", "--json"], member);
    ok(seen);
    assert.deepEqual(
      JSON.parse(seen.stdout).map((h: { id: string }) => h.id),
      [id],
    );
    apiError(await nbx(["host", "drain", id], member), "forbidden");
    apiError(await nbx(["host", "delete", id], member), "forbidden");

    // Only an API key (no session can be had): reads work, writes are refused with a hint.
    const keyOnly = { NESTBOX_DIR: emptyDir };
    const listed = await nbx(["host", "list", "--json"], keyOnly);
    ok(listed);
    assert.deepEqual(JSON.parse(listed.stdout), [], "the platform team has no BYOC hosts");
    const refused = await nbx(["host", "create", "x"], keyOnly);
    apiError(refused, "forbidden");
    assert.match(refused.stderr, /hint: host management needs a user/);

    const wrong = await nbx(["host", "list"], {
      NESTBOX_EMAIL: "admin@localhost",
      NESTBOX_PASSWORD: "nope",
    });
    assert.equal(wrong.code, 1);
    assert.match(wrong.stderr, /^error: /m);

    ok(await nbx(["host", "delete", id], owner));
  });
});
