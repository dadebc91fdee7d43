/**
 * Host agent: sandbox start-up, exec, memory and pause figures, each next to the raw floor
 * measured in the same run (bare QEMU clones from the same template snapshot); (b) also with a
 * warm pool of one (`--warm-pool 1`), every create a pool hit.
 *
 *   node --import tsx bench/agent-sandboxes.ts [--creates 30] [--concurrent 20] [--idle 50]
 *
 * Needs root and a built guest image (./nestbox image build). Prints a table, writes
 * bench/results/agent-sandboxes.json.
 */
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { parseArgs } from "node:util";
import { type LaunchedAgent, launchAgent } from "@nestbox/cli/launch";
import {
  createSandboxNetwork,
  destroySandboxNetwork,
} from "../packages/agent/src/network/netns.js";
import { QemuRuntime } from "../packages/agent/src/runtime/qemu/runtime.js";
import type { SandboxSpec } from "../packages/agent/src/runtime/runtime.js";
import { MiB, msSince as ms, printTable, quantile, round, writeResult } from "./lib.js";

const { values } = parseArgs({
  options: {
    creates: { type: "string", default: "30" },
    concurrent: { type: "string", default: "20" },
    idle: { type: "string", default: "50" },
  },
});
const CREATES = Number(values.creates);
const CONCURRENT = Number(values.concurrent);
const IDLE = Number(values.idle);
const DATA_DIR = process.env.NESTBOX_DIR ?? "/var/lib/nestbox";

/** (a) The floor: our template snapshot restored by a bare QEMU clone until envd answers. */
async function bareClones(
  count: number,
  concurrently: boolean,
): Promise<{ times: number[]; allMs: number }> {
  const runtime = new QemuRuntime({ nestboxDir: DATA_DIR, accel: "auto", clockSync: "off" });
  await runtime.prepareTemplate("base");
  const work = mkdtempSync("/tmp/nbx-bench-bare-");
  const one = async (i: number) => {
    const slot = 5000 + i;
    const net = await createSandboxNetwork({
      namespace: `nbxb-bench-${i}`,
      hostVeth: `nbxb${i}`,
      slot,
    });
    const spec: SandboxSpec = {
      id: `bench${String(i).padStart(15, "0")}`,
      template: "base",
      vcpus: 2,
      memoryMb: 512,
      diskSizeMb: 5120,
      dir: `${work}/${i}`,
      network: net,
    };
    execFileSync("mkdir", ["-p", spec.dir]);
    const t0 = process.hrtime.bigint();
    const state = await runtime.start(spec);
    const t = ms(t0);
    return {
      t,
      stop: async () => {
        await runtime.stop(spec, state);
        await destroySandboxNetwork(net);
      },
    };
  };
  const started = process.hrtime.bigint();
  const results = [];
  if (concurrently)
    results.push(...(await Promise.all(Array.from({ length: count }, (_, i) => one(i)))));
  else for (let i = 0; i < count; i++) results.push(await one(i));
  const allMs = ms(started);
  for (const r of results) await r.stop();
  rmSync(work, { recursive: true, force: true });
  return { times: results.map((r) => r.t), allMs };
}

async function createAndExec(agent: LaunchedAgent): Promise<{ id: string; t: number }> {
  const t0 = process.hrtime.bigint();
  const { sandboxId } = await agent.client.createSandbox({ template: "base" });
  const r = await agent.client.exec({ sandboxId, cmd: "/bin/true" });
  if (r.exitCode !== 0) throw new Error(`exec failed in ${sandboxId}`);
  return { id: sandboxId, t: ms(t0) };
}

function pssOf(pid: number): number {
  const text = readFileSync(`/proc/${pid}/smaps_rollup`, "utf8");
  return Number(/^Pss:\s+(\d+) kB/m.exec(text)?.[1] ?? 0) * 1024;
}

/** Terminate destroys every sandbox the bench agent still has, even after a failed step. */
async function shutdown(agent: LaunchedAgent): Promise<void> {
  await agent.client
    .terminate({})
    .catch((err: unknown) => console.error(`terminate failed: ${String(err)}`));
  await agent.kill();
}

const rows: Record<string, string | number>[] = [];
const result: Record<string, unknown> = { date: new Date().toISOString() };

// (a) raw floor, sequential and all at once.
const floor = await bareClones(10, false);
const floorP50 = quantile(floor.times, 0.5);
rows.push({
  measure: "(a) bare QEMU clone → envd /health",
  p50: round(floorP50),
  p95: round(quantile(floor.times, 0.95)),
  target: "floor",
});
const floorAll = await bareClones(CONCURRENT, true);
rows.push({
  measure: `(a) ${CONCURRENT} bare clones at once → all answer`,
  p50: round(floorAll.allMs),
  p95: "",
  target: "floor",
});
result.floor = {
  sequentialMs: floor.times,
  concurrent: { count: CONCURRENT, allMs: floorAll.allMs, eachMs: floorAll.times },
};

const qemu = await launchAgent([
  "--runtime",
  "qemu",
  "--instance",
  "b",
  "--slots",
  "5100-5199",
  "--data-dir",
  DATA_DIR,
]);
try {
  // (b) create → first exec, sequential.
  const times: number[] = [];
  for (let i = 0; i < CREATES; i++) {
    const { id, t } = await createAndExec(qemu);
    times.push(t);
    await qemu.client.destroySandbox({ sandboxId: id });
  }
  const p50 = quantile(times, 0.5);
  rows.push({
    measure: `(b) CreateSandbox → first Exec (n=${CREATES})`,
    p50: round(p50),
    p95: round(quantile(times, 0.95)),
    p99: round(quantile(times, 0.99)),
    target: `p50 ≤ 1.25×(a) = ${round(1.25 * floorP50)}: ${p50 <= 1.25 * floorP50 ? "met" : "NOT met"}`,
  });
  result.createToExecMs = times;

  // (c) concurrent creates.
  const t0 = process.hrtime.bigint();
  const settled = await Promise.allSettled(
    Array.from({ length: CONCURRENT }, () => createAndExec(qemu)),
  );
  const allMs = ms(t0);
  const failures = settled.filter((s) => s.status === "rejected").length;
  for (const s of settled)
    if (s.status === "fulfilled") await qemu.client.destroySandbox({ sandboxId: s.value.id });
  rows.push({
    measure: `(c) ${CONCURRENT} creates at once → all exec'd`,
    p50: round(allMs),
    p95: "",
    target: `no failures (${failures}), ≤ 1.5×(a all) = ${round(1.5 * floorAll.allMs)}: ${failures === 0 && allMs <= 1.5 * floorAll.allMs ? "met" : "NOT met"}`,
  });
  result.concurrent = { count: CONCURRENT, allMs, failures };

  // (d) exec round trip and (f) pause/resume on one sandbox.
  const { id } = await createAndExec(qemu);
  const execs: number[] = [];
  for (let i = 0; i < 30; i++) {
    const e0 = process.hrtime.bigint();
    await qemu.client.exec({ sandboxId: id, cmd: "/bin/true" });
    execs.push(ms(e0));
  }
  rows.push({
    measure: "(d) Exec `true` round trip",
    p50: round(quantile(execs, 0.5)),
    p95: round(quantile(execs, 0.95)),
    target: "",
  });
  const pauses: number[] = [];
  const resumes: number[] = [];
  for (let i = 0; i < 10; i++) {
    const p0 = process.hrtime.bigint();
    await qemu.client.pauseSandbox({ sandboxId: id });
    pauses.push(ms(p0));
    const r0 = process.hrtime.bigint();
    await qemu.client.resumeSandbox({ sandboxId: id });
    resumes.push(ms(r0));
  }
  rows.push({
    measure: "(f) PauseSandbox (state to disk, QEMU exits)",
    p50: round(quantile(pauses, 0.5)),
    p95: round(quantile(pauses, 0.95)),
    target: "",
  });
  rows.push({
    measure: "(f) ResumeSandbox (until envd answers)",
    p50: round(quantile(resumes, 0.5)),
    p95: round(quantile(resumes, 0.95)),
    target: "",
  });
  await qemu.client.destroySandbox({ sandboxId: id });
  result.execMs = execs;
  result.pauseMs = pauses;
  result.resumeMs = resumes;

  // (e) idle memory with many sandboxes up.
  const ids: string[] = [];
  for (let i = 0; i < IDLE; i += 5) {
    const batch = await Promise.all(
      Array.from({ length: Math.min(5, IDLE - i) }, () => createAndExec(qemu)),
    );
    ids.push(...batch.map((b) => b.id));
  }
  await new Promise((r) => setTimeout(r, 5000));
  const pids = execFileSync("pgrep", ["-f", `sandboxes/b/`], { encoding: "utf8" })
    .split(/\s+/)
    .filter(Boolean)
    .map(Number)
    .filter((pid) => readFileSync(`/proc/${pid}/cmdline`, "utf8").startsWith("qemu-system"));
  const pss = pids.reduce((a, pid) => a + pssOf(pid), 0);
  const perSandbox = pss / Math.max(1, ids.length) / MiB;
  rows.push({
    measure: `(e) idle PSS per qemu sandbox (${ids.length} up, ${pids.length} QEMUs)`,
    p50: round(perSandbox),
    p95: "MiB",
    target: `≤ 48 MiB: ${perSandbox <= 48 ? "met" : "NOT met"}`,
  });
  result.idle = {
    sandboxes: ids.length,
    qemuProcesses: pids.length,
    pssBytes: pss,
    perSandboxMiB: perSandbox,
  };
  for (const sid of ids) await qemu.client.destroySandbox({ sandboxId: sid });
} finally {
  await shutdown(qemu);
}

// Namespace runtime: (b).
const ns = await launchAgent([
  "--runtime",
  "namespace",
  "--instance",
  "c",
  "--slots",
  "5200-5299",
  "--data-dir",
  DATA_DIR,
]);
try {
  const times: number[] = [];
  for (let i = 0; i < CREATES; i++) {
    const { id, t } = await createAndExec(ns);
    times.push(t);
    await ns.client.destroySandbox({ sandboxId: id });
  }
  const p50 = quantile(times, 0.5);
  rows.push({
    measure: `(b) namespace: CreateSandbox → first Exec (n=${CREATES})`,
    p50: round(p50),
    p95: round(quantile(times, 0.95)),
    p99: round(quantile(times, 0.99)),
    target: `p50 ≤ 50 ms: ${p50 <= 50 ? "met" : "NOT met"}`,
  });
  result.namespaceCreateToExecMs = times;
} finally {
  await shutdown(ns);
}

/**
 * (b) with a warm pool of one: each create waits until the agent has refilled the pool (its log
 * says so), so every create is a pool hit; how long a refill takes is reported beside it.
 */
async function warmPoolCreates(
  runtime: "qemu" | "namespace",
  instance: string,
  slots: string,
  n: number,
): Promise<{ times: number[]; refillMs: number[] }> {
  const agent = await launchAgent([
    "--runtime",
    runtime,
    "--instance",
    instance,
    "--slots",
    slots,
    "--data-dir",
    DATA_DIR,
    "--warm-pool",
    "1",
  ]);
  const ready = () => (agent.logs().match(/warm pool sandbox ready/g) ?? []).length;
  const waitReady = async (count: number) => {
    const deadline = Date.now() + 300_000;
    while (ready() < count) {
      if (Date.now() > deadline) throw new Error(`the warm pool did not refill (${runtime})`);
      await new Promise((r) => setTimeout(r, 20));
    }
  };
  const times: number[] = [];
  const refillMs: number[] = [];
  try {
    await waitReady(1);
    for (let i = 0; i < n; i++) {
      const { id, t } = await createAndExec(agent);
      times.push(t);
      const claims = (agent.logs().match(/sandbox created from the warm pool/g) ?? []).length;
      if (claims !== i + 1) throw new Error(`create ${i + 1} did not take the pooled sandbox`);
      const t0 = process.hrtime.bigint();
      await waitReady(i + 2);
      refillMs.push(ms(t0));
      await agent.client.destroySandbox({ sandboxId: id });
    }
  } finally {
    await shutdown(agent);
  }
  return { times, refillMs };
}

for (const [runtime, instance, slots, target] of [
  ["qemu", "b", "5100-5199", 1.25 * floorP50],
  ["namespace", "c", "5200-5299", 50],
] as const) {
  const pool = await warmPoolCreates(runtime, instance, slots, CREATES);
  const p50 = quantile(pool.times, 0.5);
  rows.push({
    measure: `(b) ${runtime}, --warm-pool 1, every create a pool hit (n=${CREATES})`,
    p50: round(p50),
    p95: round(quantile(pool.times, 0.95)),
    p99: round(quantile(pool.times, 0.99)),
    target: `p50 ≤ ${round(target)}: ${p50 <= target ? "met" : "NOT met"}; refill p50 ${round(quantile(pool.refillMs, 0.5))} ms`,
  });
  result[`${runtime}WarmPool`] = pool;
}

printTable(rows);
console.log(`\nwritten ${writeResult("agent-sandboxes", { ...result, rows })}`);
