/**
 * `nestbox up` end to end, as a user runs it: the built CLI as a child (root), a real control
 * plane on PGlite and a real namespace host agent it starts, then the client commands against
 * it; Ctrl-C (SIGINT to its process group, as a terminal sends it) and a second `up` on the
 * same data directory.
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import {
  existsSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { shareBaseTemplate } from "../agent/support/agent-harness.js";
import { freePort, nestboxCli, runCli, until } from "./support/cli-process.js";

/** This suite's agent instance and network slots: no collision with the other suites. */
const INSTANCE = "u";
const SLOTS = "7200-7299";

interface UpRun {
  child: ChildProcess;
  output(): string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  running(): boolean;
}

function startUp(dataDir: string, apiPort: number, agentPort: number): UpRun {
  // Its own process group, so the test can send SIGINT the way a terminal's Ctrl-C does.
  const child = spawn(
    process.execPath,
    [
      nestboxCli,
      "up",
      "--runtime",
      "namespace",
      "--data-dir",
      dataDir,
      "--listen",
      `127.0.0.1:${apiPort}`,
      "--agent-listen",
      `127.0.0.1:${agentPort}`,
      "--agent-instance",
      INSTANCE,
      "--agent-slots",
      SLOTS,
      "--skip-image",
    ],
    { stdio: ["ignore", "pipe", "pipe"], detached: true, env: { ...process.env } },
  );
  let output = "";
  const collect = (d: Buffer) => {
    output += d.toString();
    if (process.env.NESTBOX_TEST_VERBOSE) process.stderr.write(d);
  };
  child.stdout?.on("data", collect);
  child.stderr?.on("data", collect);
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once("exit", (code, signal) => resolve({ code, signal })),
  );
  return {
    child,
    output: () => output,
    exited,
    running: () => child.exitCode === null && child.signalCode === null,
  };
}

async function waitUntilUp(up: UpRun, timeoutMs = 180_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!/Press Ctrl-C to stop\./.test(up.output())) {
    if (!up.running()) throw new Error(`nestbox up exited while starting:\n${up.output()}`);
    if (Date.now() > deadline)
      throw new Error(`nestbox up not ready after ${timeoutMs} ms:\n${up.output()}`);
    await sleep(100);
  }
}

/** Ctrl-C in the terminal: SIGINT to up's whole process group. */
async function interrupt(up: UpRun, timeoutMs = 30_000) {
  const pid = up.child.pid as number;
  process.kill(-pid, "SIGINT");
  const timer = setTimeout(() => process.kill(-pid, "SIGKILL"), timeoutMs);
  const result = await up.exited;
  clearTimeout(timer);
  return result;
}

interface Proc {
  pid: number;
  args: string;
}

/** Processes whose command line mentions `needle` (our data directory). */
function processesWith(needle: string): Proc[] {
  const found: Proc[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    let args: string;
    try {
      args = readFileSync(`/proc/${entry}/cmdline`, "utf8").split("\0").join(" ").trim();
    } catch {
      continue; // the process exited while we looked
    }
    if (args.includes(needle) && Number(entry) !== process.pid)
      found.push({ pid: Number(entry), args });
  }
  return found;
}

/** A process's parent pid (0 when it is gone). */
function parentPid(pid: number): number {
  try {
    // The command name in field 2 may hold spaces; the fields after its closing paren do not.
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
  } catch {
    return 0; // the process exited while we looked
  }
}

/** The cgroup v1 freezer group of a process, if it is in one of its own. */
function freezerGroup(pid: number): string | undefined {
  try {
    const line = readFileSync(`/proc/${pid}/cgroup`, "utf8")
      .split("\n")
      .find((l) => /^\d+:freezer:/.test(l));
    const group = line?.split(":")[2];
    return !group || group === "/" ? undefined : `/sys/fs/cgroup/freezer${group}`;
  } catch {
    return undefined; // the process exited while we looked
  }
}

/** The cgroup v1 freezer state of a process ("FROZEN" for a paused namespace sandbox). */
function freezerState(pid: number): string | undefined {
  const group = freezerGroup(pid);
  try {
    return group ? readFileSync(`${group}/freezer.state`, "utf8").trim() : undefined;
  } catch {
    return undefined; // the group went away with its last process
  }
}

/**
 * Kills what a failed run left behind. A paused namespace sandbox is frozen, and a frozen
 * process cannot act on SIGKILL (it would sit in D state until a reboot), so its group is
 * thawed first; then mounts below the data directory (its overlay) are detached.
 */
function killLeftovers(dataDir: string): void {
  for (const p of processesWith(dataDir)) {
    console.error(`cleanup: killing leftover ${p.pid} ${p.args.slice(0, 120)}`);
    const group = freezerGroup(p.pid);
    try {
      if (group) writeFileSync(`${group}/freezer.state`, "THAWED");
      process.kill(p.pid, "SIGKILL");
    } catch (err) {
      console.error(`cleanup: ${String(err)}`);
    }
  }
  const mounts = readFileSync("/proc/self/mounts", "utf8")
    .split("\n")
    .map((l) => l.split(" ")[1] ?? "")
    .filter((m) => m.startsWith(`${dataDir}/`))
    .reverse();
  for (const m of mounts) {
    const r = spawnSync("umount", ["-l", m], { encoding: "utf8" });
    if (r.status !== 0) console.error(`cleanup: umount ${m}: ${r.stderr}`);
  }
}

describe("nestbox up (namespace runtime, embedded database)", { concurrency: false }, () => {
  let dataDir: string;
  let apiPort: number;
  let agentPort: number;
  let apiUrl: string;
  let up: UpRun | undefined;
  let sandboxId: string | undefined;
  let destroyed = false;
  let hostId = "";
  let firstKey = "";

  const cliEnv = () => ({
    NESTBOX_API_URL: apiUrl,
    NESTBOX_API_KEY: readFileSync(path.join(dataDir, "admin-api-key"), "utf8").trim(),
  });
  const api = async (route: string, init: RequestInit = {}) => {
    const res = await fetch(`${apiUrl}${route}`, init);
    const text = await res.text();
    return { status: res.status, body: text ? JSON.parse(text) : undefined };
  };
  const adminHosts = async () => {
    const password = readFileSync(path.join(dataDir, "admin-password"), "utf8").trim();
    const login = await api("/v1/auth/login", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ email: "admin@localhost", password }),
    });
    assert.equal(login.status, 200, JSON.stringify(login.body));
    const hosts = await api("/v1/hosts", {
      headers: { Authorization: `Bearer ${login.body.token}` },
    });
    assert.equal(hosts.status, 200, JSON.stringify(hosts.body));
    return hosts.body.hosts as { id: string; name: string; status: string; address: string }[];
  };

  before(async () => {
    dataDir = mkdtempSync(path.join(tmpdir(), "nbx-e2e-up-"));
    shareBaseTemplate(dataDir);
    apiPort = await freePort();
    agentPort = await freePort();
    apiUrl = `http://127.0.0.1:${apiPort}`;
  });

  after(async () => {
    // The sandbox is destroyed through a running stack (its agent owns its network namespace).
    try {
      if (sandboxId && !destroyed) {
        if (!up?.running()) {
          up = startUp(dataDir, apiPort, agentPort);
          await waitUntilUp(up, 60_000);
        }
        const r = await runCli(["sandbox", "kill", sandboxId], { env: cliEnv() });
        if (r.code !== 0) console.error(`cleanup: sandbox kill failed: ${r.stderr}`);
      }
    } catch (err) {
      console.error(`cleanup: ${String(err)}`);
    }
    if (up?.running()) await interrupt(up);
    // Anything left (a daemon or sandbox of a failed run) was started by this test.
    killLeftovers(dataDir);
    rmSync(dataDir, { recursive: true, force: true });
  });

  it("refuses bad agent options before starting anything", async () => {
    const files = readdirSync(dataDir).sort();
    const r = await runCli(["up", "--agent-instance", "UU", "--data-dir", dataDir, "--skip-image"]);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /--agent-instance must be one letter a-z/);
    const s = await runCli(["up", "--agent-slots", "7200", "--data-dir", dataDir, "--skip-image"]);
    assert.equal(s.code, 2, s.stderr);
    assert.match(s.stderr, /--agent-slots must be <lo>-<hi>/);
    const w = await runCli(["up", "--warm-pool=lots", "--data-dir", dataDir, "--skip-image"]);
    assert.equal(w.code, 2, w.stderr);
    assert.match(w.stderr, /--warm-pool must be an integer from 0 to 64/);
    assert.deepEqual(readdirSync(dataDir).sort(), files, "it wrote to the data directory");
  });

  it("refuses to run as another user than root, saying why", async () => {
    const child = spawn(
      "setpriv",
      [
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        process.execPath,
        nestboxCli,
        "up",
        "--skip-image",
        "--data-dir",
        path.join(dataDir, "as-nobody"),
      ],
      { stdio: ["ignore", "pipe", "pipe"] },
    );
    let stderr = "";
    child.stderr?.on("data", (d: Buffer) => {
      stderr += d.toString();
    });
    const [code] = (await Promise.race([
      new Promise((resolve) => child.once("exit", (c) => resolve([c]))),
      sleep(30_000).then(() => {
        child.kill("SIGKILL");
        return ["timeout"];
      }),
    ])) as [number | string];
    assert.equal(code, 1, stderr);
    assert.match(stderr, /nestbox up starts a host agent, which needs root/);
    assert.ok(!existsSync(path.join(dataDir, "as-nobody")), "it created the data directory");
  });

  it("starts the control plane and a registered local agent, and prints the URL and key file", async () => {
    up = startUp(dataDir, apiPort, agentPort);
    await waitUntilUp(up);
    const out = up.output();
    const keyFile = path.join(dataDir, "admin-api-key");
    assert.match(out, new RegExp(`API: +${apiUrl.replaceAll(".", "\\.")} `));
    assert.ok(out.includes(`API key:  ${keyFile}\n`), out);
    assert.ok(out.includes(`export NESTBOX_API_URL=${apiUrl}\n`), out);
    assert.match(out, /local host agent registration token written/);
    assert.match(out, /registered with the control plane/);

    assert.equal(statSync(keyFile).mode & 0o777, 0o600);
    firstKey = readFileSync(keyFile, "utf8").trim();
    const templates = await api("/v1/templates", { headers: { "X-API-Key": firstKey } });
    assert.equal(templates.status, 200, JSON.stringify(templates.body));
    assert.ok(
      (templates.body.templates as { name: string }[]).some((t) => t.name === "base"),
      JSON.stringify(templates.body),
    );
    // "Nestbox is up" means usable: the host is online when the banner is printed.
    const hosts = await adminHosts();
    assert.equal(hosts.length, 1, JSON.stringify(hosts));
    assert.equal(hosts[0]?.name, "local");
    assert.equal(hosts[0]?.status, "online");
    assert.equal(hosts[0]?.address, `https://127.0.0.1:${agentPort}`);
    hostId = hosts[0]?.id ?? "";
  });

  it("creates a running sandbox through the CLI, taken from the agent's warm pool", async () => {
    await until(
      "the warm pool to fill",
      async () => (/warm pool sandbox ready/.test(up?.output() ?? "") ? true : undefined),
      60_000,
    );
    const r = await runCli(["sandbox", "create", "--json", "--timeout", "0"], { env: cliEnv() });
    assert.match(up?.output() ?? "", /sandbox created from the warm pool/);
    assert.equal(r.code, 0, r.stderr);
    const sbx = JSON.parse(r.stdout);
    sandboxId = sbx.id as string;
    assert.equal(sbx.status, "running");
    assert.equal(sbx.host_id, hostId);
    const w = await runCli(
      [
        "sandbox",
        "exec",
        sandboxId,
        "--",
        "sh",
        "-c",
        "echo kept > /home/user/kept && cat /home/user/kept",
      ],
      { env: cliEnv() },
    );
    assert.equal(w.code, 0, w.stderr);
    assert.equal(w.stdout, "kept\n");
  });

  it("Ctrl-C stops the control plane and the agent and pauses the sandbox", async (t) => {
    assert.ok(up && sandboxId);
    const candidates = processesWith(dataDir).filter((p) =>
      /main\.js (server|agent) /.test(p.args),
    );
    // A child the agent is starting shows its parent's command line between fork and exec:
    // only processes whose parent is not one of them are daemons.
    const pids = new Set(candidates.map((p) => p.pid));
    const daemons = candidates.filter((p) => !pids.has(parentPid(p.pid)));
    assert.equal(daemons.length, 2, JSON.stringify(daemons));
    const started = Date.now();
    const { code, signal } = await interrupt(up, 30_000);
    t.diagnostic(`up stopped ${Date.now() - started} ms after SIGINT`);
    assert.equal(signal, null, up.output().slice(-3000));
    assert.equal(code, 0, up.output().slice(-3000));
    const out = up.output();
    assert.match(out, /pausing running sandboxes.*"count":1/);
    assert.match(out, /sandbox paused/);
    assert.doesNotMatch(out, /pause at shutdown failed/);
    // Each daemon is stopped once, in order: no SIGINT from the terminal reaches them.
    assert.equal(out.match(/shutting down, pausing/g)?.length, 1, out);
    for (const d of daemons) assert.throws(() => process.kill(d.pid, 0), /ESRCH/, d.args);

    const recordDir = path.join(dataDir, "agent", INSTANCE, "records");
    const records = readdirSync(recordDir).map((f) =>
      JSON.parse(readFileSync(path.join(recordDir, f), "utf8")),
    );
    // The sandbox only: the warm pool's sandbox is gone with the agent.
    assert.equal(records.length, 1, JSON.stringify(records));
    const record = records.find((r) => r.id === sandboxId);
    assert.equal(record?.status, "paused", JSON.stringify(records));
    // What is left is the paused sandbox itself: frozen, nothing else. A sandbox taken from the
    // warm pool keeps the directory it was started in (its record's resourceId).
    const dir = record.resourceId ?? sandboxId;
    const left = processesWith(dataDir);
    for (const p of left) {
      assert.match(p.args, new RegExp(`sandboxes/${INSTANCE}/${dir}/`), p.args);
      assert.equal(freezerState(p.pid), "FROZEN", p.args);
    }
  });

  it("a second up reuses the key, the host and the paused sandbox, which resumes with its files", async (t) => {
    up = startUp(dataDir, apiPort, agentPort);
    await waitUntilUp(up, 60_000);
    const out = up.output();
    assert.equal(readFileSync(path.join(dataDir, "admin-api-key"), "utf8").trim(), firstKey);
    assert.doesNotMatch(out, /registration token written/);
    assert.doesNotMatch(out, /registered with the control plane/);
    assert.match(out, /using stored control plane credentials/);
    assert.doesNotMatch(out, /nbx_[0-9a-f]{20,}/, "a new admin key was printed");
    assert.ok(
      !existsSync(path.join(dataDir, "local-agent-token")),
      "a token is still lying around",
    );
    const hosts = await adminHosts();
    assert.deepEqual(
      hosts.map((h) => [h.id, h.name, h.status]),
      [[hostId, "local", "online"]],
    );

    // The control plane learns about the pause from the agent (reconciliation).
    const started = Date.now();
    const status = await until(
      "the sandbox to be paused in the API",
      async () => {
        const r = await runCli(["sandbox", "get", sandboxId as string, "--json"], {
          env: cliEnv(),
        });
        assert.equal(r.code, 0, r.stderr);
        const s = JSON.parse(r.stdout).status as string;
        return s === "paused" ? s : undefined;
      },
      40_000,
    );
    t.diagnostic(`the API said paused ${Date.now() - started} ms after up was ready`);
    assert.equal(status, "paused");
    const resumed = await runCli(["sandbox", "resume", sandboxId as string], { env: cliEnv() });
    assert.equal(resumed.code, 0, resumed.stderr);
    assert.equal(resumed.stdout, `${sandboxId}: running\n`);
    const r = await runCli(
      ["sandbox", "exec", sandboxId as string, "--", "cat", "/home/user/kept"],
      {
        env: cliEnv(),
      },
    );
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, "kept\n");

    const killed = await runCli(["sandbox", "kill", sandboxId as string], { env: cliEnv() });
    assert.equal(killed.code, 0, killed.stderr);
    destroyed = true;
    const { code } = await interrupt(up, 30_000);
    assert.equal(code, 0, up.output().slice(-3000));
    assert.deepEqual(processesWith(dataDir), []);
  });

  it("a SIGKILLed up takes its daemons with it", async () => {
    up = startUp(dataDir, apiPort, agentPort);
    await waitUntilUp(up, 60_000);
    const candidates = processesWith(dataDir).filter((p) =>
      /main\.js (server|agent) /.test(p.args),
    );
    // A child the agent is starting shows its parent's command line between fork and exec:
    // only processes whose parent is not one of them are daemons.
    const pids = new Set(candidates.map((p) => p.pid));
    const daemons = candidates.filter((p) => !pids.has(parentPid(p.pid)));
    assert.equal(daemons.length, 2, JSON.stringify(daemons));
    // Only up itself: no signal reaches the daemons (their own process groups).
    process.kill(up.child.pid as number, "SIGKILL");
    await up.exited;
    const left = await until(
      "the daemons to stop on their own",
      async () => (processesWith(dataDir).length === 0 ? "none" : undefined),
      30_000,
    ).catch(() => JSON.stringify(processesWith(dataDir)));
    assert.equal(left, "none", "the server and the agent outlived a killed up");
  });
});
