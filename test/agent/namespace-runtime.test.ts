// End-to-end test of the namespace runtime: real bwrap sandboxes in real network namespaces,
// driven through the real E2B SDK against the envd inside.
//
//   node --import tsx --test test/agent/namespace-runtime.test.ts      (as root)
//
// Needs root, bubblewrap, cgroup v1 controllers and the guest image built by images/build.sh
// (the `base` template root is extracted from it on first use, ~3 s). Fails rather than skips
// when something is missing, like the image boot test.
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { randomBytes, randomInt } from "node:crypto";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { Sandbox } from "e2b";
import {
  createSandboxNetwork,
  destroySandboxNetwork,
  ENVD_PORT,
  type SandboxNetwork,
} from "../../packages/agent/src/network/netns.js";
import { findHierarchies } from "../../packages/agent/src/runtime/namespace/cgroup.js";
import { pidStartTime, probeHealth } from "../../packages/agent/src/runtime/namespace/health.js";
import { NamespaceRuntime } from "../../packages/agent/src/runtime/namespace/runtime.js";
import {
  RuntimeError,
  type RuntimeState,
  type SandboxSpec,
} from "../../packages/agent/src/runtime/runtime.js";

const NESTBOX_DIR = process.env.NESTBOX_DIR ?? "/var/lib/nestbox";
const PIDS_MAX = 256;
const suffix = randomBytes(3).toString("hex");
const prefix = `nbxn-${suffix}`;
const API_KEY = `e2b_${"0".repeat(40)}`;
const CGROUP_PARENT = `nestbox-ns-test-${suffix}`;

const runtime = new NamespaceRuntime({
  nestboxDir: NESTBOX_DIR,
  pidsMax: PIDS_MAX,
  cgroupParent: CGROUP_PARENT,
  log: {
    info: (m, f) => console.error(`[ns] ${m}`, f ?? ""),
    warn: (m, f) => console.error(`[ns] WARN ${m}`, f ?? ""),
    error: (m, f) => console.error(`[ns] ERROR ${m}`, f ?? ""),
  },
});

interface Started {
  spec: SandboxSpec;
  state: RuntimeState;
  sandbox: Sandbox;
}

const networks: SandboxNetwork[] = [];
const dirs: string[] = [];
const started = new Map<string, { spec: SandboxSpec; state: RuntimeState }>();
const templates = new Set<string>();
const usedSlots = new Set<number>();
let counter = 0;

function sandboxId(): string {
  // 20 characters [a-z0-9], as the E2B SDK requires.
  return `${suffix}${randomBytes(7).toString("hex")}`.slice(0, 20);
}

function freeSlot(): number {
  const addrs = execFileSync("ip", ["-4", "-o", "addr", "show"], { encoding: "utf8" });
  for (;;) {
    const slot = randomInt(8000, 9000);
    const third = Math.floor((slot * 4) / 256);
    const fourth = (slot * 4) % 256;
    if (!usedSlots.has(slot) && !addrs.includes(`10.250.${third}.${fourth + 1}/`)) {
      usedSlots.add(slot);
      return slot;
    }
  }
}

async function makeSpec(
  template: string,
  opts: { memoryMb?: number; vcpus?: number } = {},
): Promise<SandboxSpec> {
  const n = counter++;
  const network = await createSandboxNetwork({
    namespace: `${prefix}-${n}`,
    hostVeth: `nbxn${suffix}${n}`,
    slot: freeSlot(),
    guestLink: "local",
  });
  networks.push(network);
  const dir = mkdtempSync(join(NESTBOX_DIR, `.test-${prefix}-`));
  dirs.push(dir);
  return {
    id: sandboxId(),
    template,
    vcpus: opts.vcpus ?? 1,
    memoryMb: opts.memoryMb ?? 512,
    diskSizeMb: 1024,
    dir,
    network,
  };
}

function envdUrl(spec: SandboxSpec): string {
  return `http://${spec.network.sandboxAddress}:${ENVD_PORT}`;
}

async function startSandbox(spec: SandboxSpec): Promise<Started & { startMs: number }> {
  const t0 = performance.now();
  const state = await runtime.start(spec);
  const startMs = performance.now() - t0;
  started.set(spec.id, { spec, state });
  const sandbox = await Sandbox.connect(spec.id, {
    sandboxUrl: envdUrl(spec),
    apiKey: API_KEY,
    debug: true,
    requestTimeoutMs: 30_000,
  });
  return { spec, state, sandbox, startMs };
}

/** Runs a command and returns its result even when it fails (the SDK throws on exit ≠ 0). */
async function run(
  sandbox: Sandbox,
  cmd: string,
  user: "user" | "root" = "user",
): Promise<{ exitCode: number; stdout: string; stderr: string; error?: string }> {
  try {
    const r = await sandbox.commands.run(cmd, { user, timeoutMs: 60_000 });
    return { exitCode: r.exitCode, stdout: r.stdout, stderr: r.stderr };
  } catch (error) {
    const e = error as { exitCode?: number; stdout?: string; stderr?: string; error?: string };
    if (typeof e.exitCode !== "number") throw error;
    return {
      exitCode: e.exitCode,
      stdout: e.stdout ?? "",
      stderr: e.stderr ?? "",
      error: e.error ?? String(error),
    };
  }
}

async function ok(sandbox: Sandbox, cmd: string, user: "user" | "root" = "user"): Promise<string> {
  const r = await run(sandbox, cmd, user);
  assert.equal(r.exitCode, 0, `${cmd}: exit ${r.exitCode}, stderr: ${r.stderr} ${r.error ?? ""}`);
  return r.stdout;
}

function cgroupDirs(spec: SandboxSpec): string[] {
  const h = findHierarchies();
  return [...new Set(Object.values(h))].map((root) => join(root, CGROUP_PARENT, spec.id));
}

function mountsUnder(dir: string): string[] {
  return readFileSync("/proc/self/mounts", "utf8")
    .split("\n")
    .map((l) => l.split(" ")[1] ?? "")
    .filter((t) => t === dir || t.startsWith(`${dir}/`));
}

async function stopAndCheckClean(spec: SandboxSpec, state: RuntimeState): Promise<void> {
  await runtime.stop(spec, state);
  started.delete(spec.id);
  // A zombie is gone too: an adopted sandbox's reaper is init, which may take a moment.
  assert.equal(await pidStartTime(state.pid ?? 0), null, "main process still exists");
  assert.deepEqual(mountsUnder(spec.dir), [], "mounts left under the sandbox dir");
  for (const d of cgroupDirs(spec)) assert.equal(existsSync(d), false, `cgroup ${d} left`);
  assert.deepEqual(readdirSync(spec.dir), [], "files left in the sandbox dir");
  // Idempotent.
  await runtime.stop(spec, state);
}

function percentile(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? Number.NaN;
}

before(async () => {
  assert.equal(process.getuid?.(), 0, "the namespace runtime test needs root");
  const t0 = Date.now();
  await runtime.prepareTemplate("base");
  console.error(`[ns] base template ready in ${Date.now() - t0} ms`);
});

after(async () => {
  // Every step runs even if an earlier one fails: nothing may outlive the test.
  const problems: unknown[] = [];
  for (const { spec, state } of started.values()) {
    await runtime.stop(spec, state).catch((e: unknown) => problems.push(e));
  }
  for (const t of templates) {
    await runtime.deleteTemplate(t).catch((e: unknown) => {
      if (!(e instanceof RuntimeError && e.code === "not_found")) problems.push(e);
    });
  }
  for (const n of networks) {
    await destroySandboxNetwork(n).catch((e: unknown) => problems.push(e));
  }
  for (const d of dirs) {
    if (mountsUnder(d).length > 0) {
      problems.push(new Error(`not removing ${d}: still mounted`));
      continue;
    }
    try {
      rmSync(d, { recursive: true, force: true });
    } catch (error) {
      problems.push(error);
    }
  }
  for (const root of new Set(Object.values(findHierarchies()))) {
    const parent = join(root, CGROUP_PARENT);
    try {
      // A cgroup directory is removed with rmdir(2) even though it lists control files.
      if (existsSync(parent)) execFileSync("rmdir", [parent]);
    } catch (error) {
      problems.push(error);
    }
  }
  if (problems.length > 0) {
    for (const p of problems) console.error("[ns] cleanup problem:", p);
    throw new AggregateError(problems, "namespace test cleanup failed");
  }
});

describe("namespace runtime", { timeout: 300_000 }, () => {
  let a: Started;
  let b: Started;

  it("starts two sandboxes, each in its own network namespace", async (t) => {
    const [specA, specB] = await Promise.all([
      makeSpec("base", { memoryMb: 256 }),
      makeSpec("base", { memoryMb: 512, vcpus: 2 }),
    ]);
    assert.ok(specA && specB);
    const [ra, rb] = await Promise.all([startSandbox(specA), startSandbox(specB)]);
    a = ra;
    b = rb;
    t.diagnostic(`concurrent starts: ${ra.startMs.toFixed(0)} ms, ${rb.startMs.toFixed(0)} ms`);
    assert.equal(a.state.kind, "namespace");
    assert.equal(a.state.paused, false);
    assert.equal(a.state.details.memory, false);
    assert.ok(a.state.pid && a.state.pidStartTime);
  });

  it("runs commands as `user` with the template's hostname and the fixed guest address", async () => {
    for (const s of [a, b]) {
      assert.equal((await ok(s.sandbox, "id -un")).trim(), "user");
      assert.equal((await ok(s.sandbox, "id -un", "root")).trim(), "root");
      assert.equal((await ok(s.sandbox, "hostname")).trim(), "nestbox");
      assert.match(await ok(s.sandbox, "ip -4 -o addr show dev lo"), /169\.254\.0\.21\/32/);
      // The namespace's init is bwrap's reaper, envd's supervisor is its child.
      assert.match(await ok(s.sandbox, "cat /proc/1/comm"), /bwrap/);
    }
  });

  it("keeps each sandbox's files apart and hides the host's", async () => {
    await ok(a.sandbox, "echo only-in-a > /home/user/marker");
    assert.equal((await ok(a.sandbox, "cat /home/user/marker")).trim(), "only-in-a");
    assert.notEqual((await run(b.sandbox, "test -e /home/user/marker")).exitCode, 0);
    for (const s of [a, b]) {
      assert.notEqual((await run(s.sandbox, "test -e /work")).exitCode, 0, "/work visible");
      assert.notEqual((await run(s.sandbox, `test -e ${NESTBOX_DIR}`)).exitCode, 0);
      // Root inside has no mount privileges: it cannot undo its own isolation.
      assert.notEqual((await run(s.sandbox, "mount -t tmpfs x /mnt", "root")).exitCode, 0);
    }
    // The change lives in A's upper layer only; the template's root is untouched.
    assert.ok(existsSync(join(a.spec.dir, "upper/home/user/marker")));
    assert.equal(
      existsSync(join(NESTBOX_DIR, "templates-ns", "base", "root", "home", "user", "marker")),
      false,
    );
  });

  it("enforces the memory limit", async () => {
    // 256 MiB limit: 64 MiB fits, 512 MiB is killed.
    await ok(a.sandbox, "python3 -c 'b=bytearray(64*1024*1024)'");
    const r = await run(a.sandbox, "python3 -c 'b=bytearray(512*1024*1024); print(len(b))'");
    assert.notEqual(r.exitCode, 0, "allocation beyond the limit succeeded");
    assert.equal(r.stdout.trim(), "");
    const h = findHierarchies();
    const control = readFileSync(
      join(h.memory, CGROUP_PARENT, a.spec.id, "memory.oom_control"),
      "utf8",
    );
    assert.match(control, /oom_kill [1-9]/, control);
    // envd survived (the largest process is the one the OOM killer picks).
    assert.equal((await ok(a.sandbox, "echo alive")).trim(), "alive");
  });

  it("enforces the pids limit", async () => {
    const script = [
      "import os, signal, time",
      "pids = []",
      "err = 0",
      "try:",
      "    for i in range(2000):",
      "        p = os.fork()",
      "        if p == 0:",
      "            time.sleep(60)",
      "            os._exit(0)",
      "        pids.append(p)",
      "except OSError as e:",
      "    err = e.errno",
      "print(len(pids), err)",
      "for p in pids: os.kill(p, signal.SIGKILL)",
      "for p in pids: os.waitpid(p, 0)",
    ].join("\n");
    const out = await ok(b.sandbox, `python3 -c '${script}'`);
    const [forked, errno] = out.trim().split(" ").map(Number);
    assert.ok(forked !== undefined && forked > 10 && forked < PIDS_MAX, `forked ${forked}`);
    assert.equal(errno, 11, "fork should fail with EAGAIN");
  });

  it("reports usage", async () => {
    const u = await runtime.usage(a.spec, a.state);
    assert.ok(u.cpuPct >= 0 && u.cpuPct <= 100, `cpu ${u.cpuPct}`);
    assert.ok(u.memBytes > 10 * 1024 * 1024 && u.memBytes < 256 * 1024 * 1024, `mem ${u.memBytes}`);
    assert.ok(u.diskBytes > 0, `disk ${u.diskBytes}`);
  });

  it("pauses (processes stop, envd silent) and resumes (they go on, files kept)", async () => {
    const counterFile = join(String(a.state.details.rootfs), "home/user/counter");
    const handle = await a.sandbox.commands.run(
      "i=0; while :; do i=$((i+1)); echo $i > /home/user/counter; sleep 0.02; done",
      { background: true },
    );
    const read = () => Number(readFileSync(counterFile, "utf8").trim() || "0");
    await new Promise((r) => setTimeout(r, 300));
    const before1 = read();
    // A busy host may not schedule the loop within a fixed window: wait (bounded) for a step.
    const advanceBy = Date.now() + 5000;
    while (read() <= before1 && Date.now() < advanceBy)
      await new Promise((r) => setTimeout(r, 100));
    assert.ok(read() > before1, "counter does not advance while running");

    const t0 = performance.now();
    a.state = await runtime.pause(a.spec, a.state);
    const pauseMs = performance.now() - t0;
    assert.equal(a.state.paused, true);
    const frozen = read();
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(read(), frozen, "counter advanced while paused");
    assert.equal(await probeHealth(`${envdUrl(a.spec)}/health`, 500), false, "envd answered");
    assert.equal(await runtime.adopt(a.spec, a.state), true, "paused sandbox not adoptable");

    const t1 = performance.now();
    a.state = await runtime.resume(a.spec, a.state);
    const resumeMs = performance.now() - t1;
    assert.equal(a.state.paused, false);
    const resumedBy = Date.now() + 5000;
    while (read() <= frozen && Date.now() < resumedBy) await new Promise((r) => setTimeout(r, 100));
    assert.ok(read() > frozen, "counter does not advance after resume");
    assert.equal((await ok(a.sandbox, "cat /home/user/marker")).trim(), "only-in-a");
    await handle.kill();
    console.error(`[ns] pause ${pauseMs.toFixed(1)} ms, resume ${resumeMs.toFixed(1)} ms`);
  });

  it("keeps running when the agent dies, and the next agent adopts it", async () => {
    const spec = await makeSpec("base");
    const helper = spawn(
      process.execPath,
      [
        "--import",
        "tsx",
        join(import.meta.dirname, "support", "namespace-start-helper.ts"),
        JSON.stringify({ nestboxDir: NESTBOX_DIR, cgroupParent: CGROUP_PARENT, pidsMax: PIDS_MAX }),
        JSON.stringify(spec),
      ],
      { stdio: ["ignore", "pipe", "inherit"] },
    );
    const exited = new Promise<void>((resolve) => helper.once("exit", () => resolve()));
    let line = "";
    try {
      line = await new Promise<string>((resolve, reject) => {
        let buf = "";
        helper.stdout.setEncoding("utf8");
        helper.stdout.on("data", (chunk: string) => {
          buf += chunk;
          if (buf.includes("\n")) resolve(buf.slice(0, buf.indexOf("\n")));
        });
        helper.once("exit", (code) => reject(new Error(`helper exited ${code} before starting`)));
      });
    } finally {
      // The "agent" crashes with its sandbox running.
      helper.kill("SIGKILL");
      await exited;
    }
    const state = JSON.parse(line) as RuntimeState;
    started.set(spec.id, { spec, state });
    assert.equal(await runtime.adopt(spec, state), true);
    const sandbox = await Sandbox.connect(spec.id, {
      sandboxUrl: envdUrl(spec),
      apiKey: API_KEY,
      debug: true,
    });
    assert.equal((await ok(sandbox, "echo survived")).trim(), "survived");
    // A sandbox paused by the dead agent stays paused and resumable.
    const paused = await runtime.pause(spec, state);
    assert.equal(await runtime.adopt(spec, paused), true);
    const resumed = await runtime.resume(spec, paused);
    await stopAndCheckClean(spec, resumed);
  });

  it("adopts only a sandbox that is still the one described", async () => {
    assert.equal(await runtime.adopt(a.spec, a.state), true);
    const stale = { ...a.state, pidStartTime: (a.state.pidStartTime ?? 0) + 1 };
    assert.equal(await runtime.adopt(a.spec, stale), false);
    const otherDir = { ...a.spec, dir: join(a.spec.dir, "elsewhere") };
    assert.equal(await runtime.adopt(otherDir, a.state), false);
  });

  it("snapshots files into a template a new sandbox starts from", async () => {
    const name = `${prefix}-snap`;
    templates.add(name);
    await ok(a.sandbox, "echo from-snapshot > /home/user/snap.txt");
    const { sizeBytes } = await runtime.snapshotToTemplate(a.spec, a.state, name);
    assert.ok(sizeBytes > 50 * 1024 * 1024, `size ${sizeBytes}`);
    // The source keeps running.
    assert.equal((await ok(a.sandbox, "echo still")).trim(), "still");
    const listed = (await runtime.listTemplates()).find((t) => t.name === name);
    assert.deepEqual(listed, { name, hasMemorySnapshot: false, sizeBytes });

    const c = await startSandbox(await makeSpec(name));
    assert.equal((await ok(c.sandbox, "cat /home/user/snap.txt")).trim(), "from-snapshot");
    assert.equal((await ok(c.sandbox, "cat /home/user/marker")).trim(), "only-in-a");
    await assert.rejects(runtime.deleteTemplate(name), /in use/);
    await stopAndCheckClean(c.spec, c.state);
    await runtime.deleteTemplate(name);
    assert.equal(
      (await runtime.listTemplates()).some((t) => t.name === name),
      false,
    );
  });

  it("flattens into a template and stops the sandbox", async () => {
    const name = `${prefix}-flat`;
    templates.add(name);
    await ok(b.sandbox, "echo flat > /home/user/flat.txt");
    const { sizeBytes } = await runtime.flattenToTemplate(b.spec, b.state, name);
    assert.ok(sizeBytes > 0);
    started.delete(b.spec.id);
    assert.equal(await pidStartTime(b.state.pid ?? 0), null);
    assert.deepEqual(mountsUnder(b.spec.dir), []);
    assert.ok(existsSync(join(NESTBOX_DIR, "templates-ns", name, "root/home/user/flat.txt")));
    await runtime.deleteTemplate(name);
  });

  it("stops leaving nothing behind, idempotently", async () => {
    await stopAndCheckClean(a.spec, a.state);
    assert.equal(await runtime.adopt(a.spec, a.state), false);
  });

  it("measures start → /health and start → first exec", async (t) => {
    const spec = await makeSpec("base");
    const health: number[] = [];
    const firstExec: number[] = [];
    for (let i = 0; i < 10; i++) {
      const s = { ...spec, id: sandboxId() };
      const t0 = performance.now();
      const state = await runtime.start(s);
      health.push(performance.now() - t0);
      started.set(s.id, { spec: s, state });
      const sandbox = await Sandbox.connect(s.id, {
        sandboxUrl: envdUrl(s),
        apiKey: API_KEY,
        debug: true,
      });
      await sandbox.commands.run("true");
      firstExec.push(performance.now() - t0);
      await runtime.stop(s, state);
      started.delete(s.id);
    }
    const fmt = (v: number[]) =>
      `p50 ${percentile(v, 50).toFixed(0)} ms, min ${Math.min(...v).toFixed(0)}, max ${Math.max(...v).toFixed(0)}`;
    t.diagnostic(`start → /health: ${fmt(health)}`);
    t.diagnostic(`start → first exec: ${fmt(firstExec)}`);
    console.error(`[ns] start → /health: ${fmt(health)}; start → first exec: ${fmt(firstExec)}`);
  });

  it("rejects what it cannot start", async () => {
    const spec = await makeSpec("base");
    await assert.rejects(runtime.start({ ...spec, template: `${prefix}-missing` }), {
      name: "RuntimeError",
      code: "not_found",
    });
    await assert.rejects(runtime.start({ ...spec, memoryMb: 1 }), { code: "invalid_argument" });
    assert.deepEqual(readdirSync(spec.dir), []);
  });
});
