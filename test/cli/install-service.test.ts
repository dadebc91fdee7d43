/**
 * `nestbox install-service`: the systemd units it writes (checked by content and, where the
 * machine has it, by `systemd-analyze verify`; nothing is started through systemd), the
 * environment file it creates once, and that the control plane runs from that environment as
 * an unprivileged user.
 */
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import {
  chmodSync,
  chownSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { SANDBOX_CAPS } from "../../packages/agent/src/runtime/namespace/bwrap.js";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const nestbox = path.join(root, "nestbox");
const run = (...args: string[]) => spawnSync(nestbox, args, { encoding: "utf8", timeout: 30_000 });
const dir = mkdtempSync(path.join(tmpdir(), "nbx-install-service-"));
after(() => rmSync(dir, { recursive: true, force: true }));

/** `Key=value` lines of one unit (or environment) file, a key's values in order. */
function directives(text: string): Map<string, string[]> {
  const m = new Map<string, string[]>();
  for (const line of text.split("\n")) {
    const hit = /^([A-Za-z_]+)=(.*)$/.exec(line);
    if (!hit?.[1]) continue;
    m.set(hit[1], [...(m.get(hit[1]) ?? []), hit[2] ?? ""]);
  }
  return m;
}

const one = (d: Map<string, string[]>, key: string) => {
  const v = d.get(key);
  assert.equal(v?.length, 1, `${key}: ${JSON.stringify(v)}`);
  return v[0] as string;
};

function verify(file: string): void {
  const probe = spawnSync("systemd-analyze", ["--version"], { encoding: "utf8" });
  if (probe.error) {
    console.log("systemd-analyze not installed: unit syntax checked by content only");
    return;
  }
  const r = spawnSync("systemd-analyze", ["verify", file], { encoding: "utf8", timeout: 30_000 });
  assert.equal(r.status, 0, `systemd-analyze verify ${file}:\n${r.stderr}`);
  // Unknown or malformed directives are warnings, not failures, to verify: refuse them here.
  assert.doesNotMatch(r.stderr, /Unknown key|Unknown section|Failed to parse|Invalid|ignoring/i);
}

describe("nestbox install-service", () => {
  it("prints the server unit and a new environment file with --dry-run", () => {
    const envFile = path.join(dir, "absent.env");
    const r = run("install-service", "server", "--dry-run", "--env-file", envFile);
    assert.equal(r.status, 0, r.stderr);
    const [unitText = "", envText = ""] = r.stdout.split(
      `# ${envFile} (written when missing, mode 0600)`,
    );
    assert.ok(unitText.startsWith("# /etc/systemd/system/nestbox-server.service\n"));
    assert.ok(envText, "the environment file it would create is shown");
    const u = directives(unitText);
    assert.equal(one(u, "User"), "nestbox");
    assert.equal(one(u, "Restart"), "on-failure");
    assert.equal(one(u, "EnvironmentFile"), envFile);
    assert.equal(one(u, "StateDirectory"), "nestbox-server");
    assert.equal(
      one(u, "ExecStart"),
      `${root}/nestbox server --data-dir /var/lib/nestbox-server $NESTBOX_SERVER_ARGS`,
    );
    // Unprivileged: no capabilities at all, no way to gain any.
    assert.equal(one(u, "CapabilityBoundingSet"), "");
    assert.equal(one(u, "NoNewPrivileges"), "yes");
    assert.equal(one(u, "WantedBy"), "multi-user.target");
    const e = directives(envText);
    assert.match(one(e, "NESTBOX_JWT_SECRET"), /^[0-9a-f]{64}$/);
    assert.match(one(e, "NESTBOX_CA_KEY"), /^[0-9a-f]{64}$/);
    assert.equal(one(e, "NESTBOX_LISTEN"), "127.0.0.1:3000");
    // Secrets are fresh for every installation.
    const again = directives(
      run("install-service", "server", "--dry-run", "--env-file", envFile).stdout,
    );
    assert.notEqual(one(again, "NESTBOX_JWT_SECRET"), one(e, "NESTBOX_JWT_SECRET"));
    // Nothing was written.
    assert.throws(() => statSync(envFile), /ENOENT/);
  });

  it("prints the agent unit: root with the capabilities it uses, sandboxes survive a stop", () => {
    const r = run("install-service", "agent", "--dry-run");
    assert.equal(r.status, 0, r.stderr);
    const u = directives(r.stdout);
    assert.equal(one(u, "User"), "root");
    assert.equal(one(u, "Restart"), "on-failure");
    assert.equal(one(u, "KillMode"), "process");
    assert.equal(one(u, "EnvironmentFile"), "/etc/nestbox/agent.env");
    assert.equal(
      one(u, "ExecStart"),
      `${root}/nestbox agent --data-dir /var/lib/nestbox $NESTBOX_AGENT_ARGS`,
    );
    const caps = one(u, "CapabilityBoundingSet").split(" ");
    for (const cap of ["CAP_SYS_ADMIN", "CAP_NET_ADMIN", "CAP_SETUID", "CAP_SYS_CHROOT"])
      assert.ok(caps.includes(cap), cap);
    for (const cap of ["CAP_SYS_MODULE", "CAP_SYS_BOOT", "CAP_SYS_TIME", "CAP_MAC_ADMIN"])
      assert.ok(!caps.includes(cap), cap);
    // bwrap can grant a sandbox's root only capabilities the agent itself may have.
    for (const cap of SANDBOX_CAPS) assert.ok(caps.includes(cap), `${cap} (a sandbox's)`);
  });

  it("refuses bad usage with exit 2", () => {
    for (const args of [
      ["install-service"],
      ["install-service", "database"],
      ["install-service", "agent", "--user", "nobody"],
      ["install-service", "server", "--env-file", "relative.env", "--dry-run"],
      ["install-service", "server", "--user", "Not A User", "--dry-run"],
    ]) {
      const r = run(...args);
      assert.equal(r.status, 2, `${args.join(" ")}: ${r.stderr}`);
      assert.match(r.stderr, /nestbox: /);
    }
  });

  it("writes both units and their environment files, keeps an existing one", () => {
    const unitDir = path.join(dir, "units");
    const serverEnv = path.join(dir, "server.env");
    const agentEnv = path.join(dir, "agent.env");
    const s = run(
      "install-service",
      "server",
      "--user",
      "nobody",
      "--unit-dir",
      unitDir,
      "--env-file",
      serverEnv,
    );
    assert.equal(s.status, 0, s.stderr);
    assert.match(s.stdout, /systemctl daemon-reload/);
    assert.match(s.stdout, /systemctl enable --now nestbox-server\.service/);
    const unitFile = path.join(unitDir, "nestbox-server.service");
    assert.equal(statSync(unitFile).mode & 0o777, 0o644);
    assert.equal(statSync(serverEnv).mode & 0o777, 0o600);
    assert.equal(one(directives(readFileSync(unitFile, "utf8")), "User"), "nobody");
    verify(unitFile);

    writeFileSync(agentEnv, "NESTBOX_AGENT_ARGS=--control-plane https://cp.example.com\n");
    const a = run("install-service", "agent", "--unit-dir", unitDir, "--env-file", agentEnv);
    assert.equal(a.status, 0, a.stderr);
    assert.match(a.stdout, new RegExp(`kept ${agentEnv}`));
    assert.equal(
      readFileSync(agentEnv, "utf8"),
      "NESTBOX_AGENT_ARGS=--control-plane https://cp.example.com\n",
    );
    verify(path.join(unitDir, "nestbox-agent.service"));

    // A second run keeps the secrets (replicas share them: regenerating would split them).
    const before = readFileSync(serverEnv, "utf8");
    const again = run(
      "install-service",
      "server",
      "--user",
      "nobody",
      "--unit-dir",
      unitDir,
      "--env-file",
      serverEnv,
    );
    assert.equal(again.status, 0, again.stderr);
    assert.equal(readFileSync(serverEnv, "utf8"), before);
  });

  it("the control plane starts from the written environment as an unprivileged user", async () => {
    const env = directives(readFileSync(path.join(dir, "server.env"), "utf8"));
    const dataDir = mkdtempSync(path.join(dir, "state-"));
    chmodSync(dir, 0o711);
    chownSync(dataDir, 65534, 65534);
    // What systemd does for the unit: its user, its environment file, its ExecStart.
    const child = spawn(nestbox, ["server", "--data-dir", dataDir], {
      uid: 65534,
      gid: 65534,
      cwd: "/",
      env: {
        PATH: process.env.PATH ?? "/usr/bin:/bin",
        HOME: dataDir,
        NESTBOX_JWT_SECRET: one(env, "NESTBOX_JWT_SECRET"),
        NESTBOX_CA_KEY: one(env, "NESTBOX_CA_KEY"),
        NESTBOX_DOMAIN: one(env, "NESTBOX_DOMAIN"),
        NESTBOX_PUBLIC_URL: one(env, "NESTBOX_PUBLIC_URL"),
        NESTBOX_LISTEN: "127.0.0.1:0",
      },
      stdio: ["ignore", "pipe", "pipe"],
    });
    const exited = new Promise((resolve) => child.once("exit", resolve));
    let output = "";
    child.stdout.on("data", (b: Buffer) => {
      output += b.toString();
    });
    child.stderr.on("data", (b: Buffer) => {
      output += b.toString();
    });
    try {
      const url = await new Promise<string>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no listening line:\n${output}`)), 60_000);
        child.stdout.on("data", () => {
          const m = /listening on (http:\/\/\S+)/.exec(output);
          if (m?.[1]) {
            clearTimeout(timer);
            resolve(m[1]);
          }
        });
        child.once("exit", (code) => {
          clearTimeout(timer);
          reject(new Error(`the server exited (${code}):\n${output}`));
        });
      });
      const res = await fetch(`${url}/openapi.json`);
      assert.equal(res.status, 200);
      // Its secrets came from the environment, not from files of its own.
      assert.throws(() => statSync(path.join(dataDir, "jwt-secret")), /ENOENT/);
      assert.throws(() => statSync(path.join(dataDir, "ca-key")), /ENOENT/);
      assert.equal(statSync(path.join(dataDir, "db")).uid, 65534);
    } finally {
      if (child.exitCode === null) child.kill("SIGTERM");
      await exited;
    }
  });
});
