import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import type { RunningServer } from "../../packages/server/src/main.js";
import {
  assertApiError,
  assertOk,
  assertUsage,
  type CliApp,
  runClientCommand,
  startCliApp,
} from "./support/in-process.js";

/**
 * `nestbox admin …` against a real control plane (in-process, embedded PGlite, all-in-one seed,
 * no host agent). The commands log in as the seeded admin with the password file of the data
 * directory, the way they do on a `nestbox up` host.
 */

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");

let app: CliApp;
let server: RunningServer;
let dataDir: string;
let emptyDir: string;

const nbx = (args: string[], env: NodeJS.ProcessEnv = {}) =>
  runClientCommand(args, { NESTBOX_API_URL: server.url, NESTBOX_DIR: dataDir, ...env });
const ok = assertOk;

async function api(method: string, route: string, body?: unknown, token?: string) {
  const res = await fetch(`${server.url}${route}`, {
    method,
    headers: {
      ...(body !== undefined ? { "content-type": "application/json" } : {}),
      ...(token ? { authorization: `Bearer ${token}` } : {}),
    },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  // biome-ignore lint/suspicious/noExplicitAny: test bodies are checked field by field
  return { status: res.status, body: (await res.json()) as any };
}

async function signup(who: string) {
  const email = `${who}-${randomBytes(3).toString("hex")}@example.com`;
  const password = "pw-123456789";
  const r = await api("POST", "/v1/auth/signup", { email, password, name: who });
  assert.equal(r.status, 201, JSON.stringify(r.body));
  return {
    email,
    password,
    id: r.body.user.id as string,
    teamId: r.body.team.id as string,
    token: r.body.token as string,
  };
}

before(async () => {
  app = await startCliApp("admin");
  ({ server, dataDir } = app);
  emptyDir = await mkdtemp(path.join(tmpdir(), "nestbox-cli-admin-empty-"));
});

after(async () => {
  await app?.close();
  if (emptyDir) await rm(emptyDir, { recursive: true, force: true });
});

describe("nestbox admin", () => {
  it("prints help for the group and each command, with how it logs in", async () => {
    const group = ok(await nbx(["admin", "--help"]));
    for (const sub of ["teams", "users", "templates", "sandboxes"])
      assert.match(group, new RegExp(`\\n  ${sub} `), sub);
    assert.match(group, /NESTBOX_PASSWORD/);
    const teams = ok(await nbx(["admin", "teams", "--help"]));
    assert.match(teams, /^Usage: nestbox admin teams \[list\]/);
    assert.match(teams, /One way/);
    assert.match(teams, /NESTBOX_TOKEN/);
    const snap = ok(await nbx(["admin", "sandboxes", "snapshot", "-h"]));
    assert.match(snap, /snapshot <sandbox-id> <name>/);
  });

  it("rejects bad usage before calling the API", async () => {
    assertUsage(await nbx(["admin"]), /missing admin command/);
    assertUsage(await nbx(["admin", "hosts"]), /unknown admin command 'hosts'/);
    assertUsage(await nbx(["admin", "teams", "frob"]), /unknown action 'frob'/);
    assertUsage(await nbx(["admin", "teams", "byoc"]), /missing <team-id>/);
    assertUsage(await nbx(["admin", "teams", "delete", "usr_x"]), /'usr_x' is not a team id/);
    assertUsage(await nbx(["admin", "users", "deactivate", "bob"]), /not a user id/);
    assertUsage(await nbx(["admin", "users", "--per-page", "500"]), /--per-page must be/);
    assertUsage(await nbx(["admin", "templates", "delete", "Bad Name"]), /not a template name/);
    assertUsage(await nbx(["admin", "sandboxes", "--status", "sleeping"]), /unknown status/);
    assertUsage(await nbx(["admin", "sandboxes", "--team", "x"]), /not a team id/);
    assertUsage(await nbx(["admin", "sandboxes", "snapshot", "nope", "name"]), /not a sandbox id/);
  });

  it("lists teams, turns BYOC on and deletes a team", async () => {
    const owner = await signup("cli-team");
    const list = ok(await nbx(["admin", "teams"]));
    assert.match(list, /^ID\s+NAME\s+OWNER\s+MEMBERS\s+SANDBOXES\s+BYOC/);
    assert.match(list, /\(platform\)/);
    const row = list.split("\n").find((l) => l.startsWith(owner.teamId)) ?? "";
    assert.match(row, new RegExp(`${owner.email}\\s+1\\s+0\\s+no`));
    assert.match(list, /^page 1 of 1 \(\d+ teams\)$/m);
    const paged = JSON.parse(
      ok(await nbx(["admin", "teams", "list", "--per-page", "1", "--json"])),
    );
    assert.equal(paged.teams.length, 1);
    assert.equal(paged.total_pages, paged.total);

    assert.equal(
      ok(await nbx(["admin", "teams", "byoc", owner.teamId])),
      `team ${owner.teamId} is BYOC\n`,
    );
    const after = ok(await nbx(["admin", "teams"]));
    assert.match(after.split("\n").find((l) => l.startsWith(owner.teamId)) ?? "", /\s+yes\s+/);
    ok(await nbx(["admin", "teams", "delete", owner.teamId]));
    assertApiError(await nbx(["admin", "teams", "delete", owner.teamId]), "not_found");
    const platform = JSON.parse(ok(await nbx(["admin", "teams", "--json"]))).teams.find(
      (t: { is_platform: boolean }) => t.is_platform,
    );
    assertApiError(await nbx(["admin", "teams", "delete", platform.id]), "conflict");
  });

  it("lists users and deactivates and activates one, never yourself", async () => {
    const user = await signup("cli-user");
    const list = ok(await nbx(["admin", "users"]));
    assert.match(list, /^ID\s+EMAIL\s+NAME\s+STATUS\s+ADMIN\s+TEAMS\s+OWNED/);
    assert.match(list, /admin@localhost\s+.*\s+active\s+yes\s+1\s+1/);
    assert.equal(
      ok(await nbx(["admin", "users", "deactivate", user.id])),
      `${user.email}: disabled\n`,
    );
    const login = await api("POST", "/v1/auth/login", {
      email: user.email,
      password: user.password,
    });
    assert.equal(login.status, 403);
    assert.equal(ok(await nbx(["admin", "users", "activate", user.id])), `${user.email}: active\n`);
    const me = JSON.parse(ok(await nbx(["admin", "users", "--json", "--per-page", "200"])));
    const self = me.users.find((u: { email: string }) => u.email === "admin@localhost");
    assertApiError(
      await nbx(["admin", "users", "deactivate", self.id]),
      "conflict",
      /yourself|own/,
    );
  });

  it("lists templates and refuses to delete base or an unknown one", async () => {
    const list = ok(await nbx(["admin", "templates"]));
    assert.match(list, /^NAME\s+KIND\s+TEAM/);
    assert.match(list, /^base\s+base\s+platform\s+/m);
    assertApiError(await nbx(["admin", "templates", "delete", "base"]), "forbidden");
    assertApiError(await nbx(["admin", "templates", "delete", "no-such"]), "not_found");
  });

  it("lists sandboxes of every team with filters", async () => {
    const a = await signup("cli-sbx");
    const id = "clisbx0000000000000a";
    await server.db.query(
      `INSERT INTO sandboxes (id, team_id, template, status, vcpus, memory_mb, disk_size_mb,
         timeout_sec) VALUES ($1, $2, 'base', 'error', 1, 512, 1024, 60)`,
      [id, a.teamId],
    );
    const list = ok(await nbx(["admin", "sandboxes", "--team", a.teamId, "--status", "error"]));
    assert.match(list, /^ID\s+TEAM\s+STATUS\s+TEMPLATE\s+HOST\s+CREATED/);
    assert.match(list, new RegExp(`^${id}\\s+cli-sbx's team\\s+error\\s+base\\s+-\\s+`, "m"));
    assert.match(list, /^page 1 of 1 \(1 sandboxes\)$/m);
    const none = ok(
      await nbx(["admin", "sandboxes", "list", "--team", a.teamId, "--status", "running"]),
    );
    assert.match(none, /\(0 sandboxes\)/);
    assertApiError(
      await nbx(["admin", "sandboxes", "snapshot", "zzzzzzzzzzzzzzzzzzzz", "name"]),
      "not_found",
    );
  });

  it("needs admin credentials: none, a non-admin's token or password are refused", async () => {
    const none = await nbx(["admin", "teams"], { NESTBOX_DIR: emptyDir });
    assertApiError(none, "unauthorized", /NESTBOX_TOKEN/);
    const user = await signup("cli-plain");
    assertApiError(await nbx(["admin", "teams"], { NESTBOX_TOKEN: user.token }), "forbidden");
    assertApiError(
      await nbx(["admin", "users"], {
        NESTBOX_DIR: emptyDir,
        NESTBOX_EMAIL: user.email,
        NESTBOX_PASSWORD: user.password,
      }),
      "forbidden",
      /not a platform admin/,
    );
    assertApiError(
      await nbx(["admin", "users"], { NESTBOX_PASSWORD: "wrong-password" }),
      "unauthorized",
    );
    // A token works on its own.
    const login = await api("POST", "/v1/auth/login", {
      email: "admin@localhost",
      password: readFileSync(path.join(dataDir, "admin-password"), "utf8").trim(),
    });
    assert.match(
      ok(
        await nbx(["admin", "templates"], {
          NESTBOX_DIR: emptyDir,
          NESTBOX_TOKEN: login.body.token,
        }),
      ),
      /^base\s+/m,
    );
  });

  it("is part of the nestbox binary, with each command's help", async () => {
    const r = await new Promise<{ code: number | null; stdout: string }>((resolve, reject) => {
      const child = spawn(
        process.execPath,
        [
          "--import",
          "tsx",
          path.join(repoRoot, "packages/cli/src/main.ts"),
          "admin",
          "users",
          "--help",
        ],
        { stdio: ["ignore", "pipe", "inherit"] },
      );
      let stdout = "";
      child.stdout.on("data", (b: Buffer) => {
        stdout += b;
      });
      const timer = setTimeout(() => child.kill("SIGKILL"), 60_000);
      child.once("error", reject);
      child.once("close", (code) => {
        clearTimeout(timer);
        resolve({ code, stdout });
      });
    });
    assert.equal(r.code, 0);
    // The subcommand's own help, not the group's.
    assert.match(r.stdout, /^Usage: nestbox admin users \[list\]/);
  });
});
