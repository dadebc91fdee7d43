/**
 * Control plane: what the REST API adds on top of the host agent, each figure next to the same
 * operation done directly against the agent (or raw TCP into the sandbox) in the same run.
 *
 *   node --import tsx bench/control-plane.ts [--creates 20] [--execs 50] [--size-mib 1024]
 *     [--clients 8] [--duration 5] [--db pglite|postgres]
 *
 * (1) POST /v1/sandboxes → first POST …/exec of /bin/true vs agent CreateSandbox → Exec,
 *     interleaved; (2) exec round trip; (3) PUT/GET …/files of --size-mib vs raw HTTP through
 *     the agent's port proxy into a tiny server in the guest, with RSS growth; (4) GET
 *     /v1/sandboxes req/s with 1,000 rows. The control plane runs in this process (as in the
 *     end-to-end suites); the list load generator runs in a worker thread.
 *
 * Needs root and a built guest image (./nestbox image build). Prints a table, writes
 * bench/results/control-plane.json.
 */
import { loadavg } from "node:os";
import { performance } from "node:perf_hooks";
import { setTimeout as sleep } from "node:timers/promises";
import { parseArgs } from "node:util";
import { load } from "./control-plane/load.js";
import {
  instrumentAgentCalls,
  observeDatabase,
  type Probes,
  timedApi,
} from "./control-plane/probes.js";
import {
  agentCreateAndExec,
  type RestCreate,
  restCreateAndExec,
  restDestroy,
} from "./control-plane/sandboxes.js";
import { runTransfers } from "./control-plane/transfers.js";
import { msSince, printTable, quantile, round, writeResult } from "./lib.js";
import { startBenchStack } from "./support/stack.js";

const { values } = parseArgs({
  options: {
    creates: { type: "string", default: "20" },
    execs: { type: "string", default: "50" },
    "size-mib": { type: "string", default: "1024" },
    "diag-size-mib": { type: "string", default: "256" },
    clients: { type: "string", default: "8" },
    duration: { type: "string", default: "5" },
    db: { type: "string", default: "pglite" },
  },
});
const positiveInt = (name: string, v: string | undefined, max: number): number => {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1 || n > max)
    throw new Error(`--${name} must be an integer from 1 to ${max}, got ${v}`);
  return n;
};
const CREATES = positiveInt("creates", values.creates, 500);
const EXECS = positiveInt("execs", values.execs, 5000);
const SIZE_MIB = positiveInt("size-mib", values["size-mib"], 4096);
const DIAG_MIB = Math.min(SIZE_MIB, positiveInt("diag-size-mib", values["diag-size-mib"], 4096));
const CLIENTS = positiveInt("clients", values.clients, 256);
const DURATION_S = positiveInt("duration", values.duration, 120);
if (values.db !== "pglite" && values.db !== "postgres")
  throw new Error(`--db must be pglite or postgres, got ${values.db}`);
const DB_KIND = values.db;

const CP_OVERHEAD_TARGET_MS = 15;

// ── The run ──────────────────────────────────────────────────────────────────────────────────

const rows: Record<string, string | number>[] = [];
const result: Record<string, unknown> = {
  date: new Date().toISOString(),
  db: DB_KIND,
  runtime: "qemu",
  loadAvgAtStart: loadavg(),
  options: {
    creates: CREATES,
    execs: EXECS,
    sizeMiB: SIZE_MIB,
    clients: CLIENTS,
    durationS: DURATION_S,
    diagSizeMiB: DIAG_MIB,
  },
};
const stat = (xs: number[]) => ({ p50: round(quantile(xs, 0.5)), p95: round(quantile(xs, 0.95)) });
const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);
const avg = (xs: number[]) => (xs.length ? sum(xs) / xs.length : Number.NaN);

// The reconciler destroys sandboxes the database does not know: the agent-level creates of
// (1) must not race it, so it runs once at start and not again during the run.
const agentCalls = instrumentAgentCalls();
const dbTime = observeDatabase();
const stack = await startBenchStack({
  runtime: "qemu",
  instance: "x",
  slots: "7400-7499",
  db: DB_KIND,
  reconcileMs: 3_600_000,
  agentInterceptors: [agentCalls.interceptor],
  observeDb: dbTime.observe,
});
const restLive = new Set<string>();
const agentLive = new Set<string>();
try {
  const probes: Probes = { db: dbTime, agent: agentCalls };

  // Warm-up: the first create of each kind (template snapshot, connections) is not counted.
  {
    const w1 = await restCreateAndExec(stack, probes);
    await restDestroy(stack, w1.id);
    const w2 = await agentCreateAndExec(stack);
    await stack.agent.client.destroySandbox({ sandboxId: w2.id });
  }

  // (1) create → first exec, REST and agent interleaved (ABBA… so neither always goes first).
  const rest: RestCreate[] = [];
  const agent: Awaited<ReturnType<typeof agentCreateAndExec>>[] = [];
  const restDestroyMs: number[] = [];
  const agentDestroyMs: number[] = [];
  const oneRest = async () => {
    const r = await restCreateAndExec(stack, probes);
    restLive.add(r.id);
    rest.push(r);
    const t0 = process.hrtime.bigint();
    await restDestroy(stack, r.id);
    restDestroyMs.push(msSince(t0));
    restLive.delete(r.id);
  };
  const oneAgent = async () => {
    const a = await agentCreateAndExec(stack);
    agentLive.add(a.id);
    agent.push(a);
    const t0 = process.hrtime.bigint();
    await stack.agent.client.destroySandbox({ sandboxId: a.id });
    agentDestroyMs.push(msSince(t0));
    agentLive.delete(a.id);
  };
  for (let i = 0; i < CREATES; i++) {
    console.error(`[bench] (1) create ${i + 1}/${CREATES}`);
    if (i % 2 === 0) {
      await oneRest();
      await oneAgent();
    } else {
      await oneAgent();
      await oneRest();
    }
  }
  const restTotal = rest.map((r) => r.createMs + r.execMs);
  const agentTotal = agent.map((a) => a.createMs + a.execMs);
  // What the control plane itself adds per create → exec: time not spent waiting on the agent.
  const restOwn = rest.map((r) => r.createMs - r.createAgentMs + r.execMs - r.execAgentMs);
  const overhead = quantile(restTotal, 0.5) - quantile(agentTotal, 0.5);
  const ownP50 = quantile(restOwn, 0.5);
  const pair = (a: number[], b: number[], q: number) =>
    `${round(quantile(a, q))} / ${round(quantile(b, q))}`;
  rows.push({
    measure: `(1) REST POST /v1/sandboxes → first exec (n=${CREATES})`,
    ...stat(restTotal),
    target: `overhead ≤ ${CP_OVERHEAD_TARGET_MS} ms: Δp50 ${round(overhead)} ms, ${overhead <= CP_OVERHEAD_TARGET_MS ? "met" : "NOT met"}`,
  });
  rows.push({
    measure: `(1) agent CreateSandbox → first Exec (n=${CREATES})`,
    ...stat(agentTotal),
    target: "baseline",
  });
  rows.push({
    measure: "(1)   control plane's own time (total − its agent calls)",
    ...stat(restOwn),
    target: `≤ ${CP_OVERHEAD_TARGET_MS} ms: ${ownP50 <= CP_OVERHEAD_TARGET_MS ? "met" : "NOT met"}`,
  });
  rows.push({
    measure: "(1)   REST create / agent create",
    p50: pair(
      rest.map((r) => r.createMs),
      agent.map((a) => a.createMs),
      0.5,
    ),
    p95: pair(
      rest.map((r) => r.createMs),
      agent.map((a) => a.createMs),
      0.95,
    ),
    target: `REST: agent calls p50 ${round(
      quantile(
        rest.map((r) => r.createAgentMs),
        0.5,
      ),
    )}, DB avg ${round(avg(rest.map((r) => r.createDbMs)))} ms`,
  });
  rows.push({
    measure: "(1)   REST first exec / agent first Exec",
    p50: pair(
      rest.map((r) => r.execMs),
      agent.map((a) => a.execMs),
      0.5,
    ),
    p95: pair(
      rest.map((r) => r.execMs),
      agent.map((a) => a.execMs),
      0.95,
    ),
    target: `REST: agent calls p50 ${round(
      quantile(
        rest.map((r) => r.execAgentMs),
        0.5,
      ),
    )}, DB avg ${round(avg(rest.map((r) => r.execDbMs)))} ms`,
  });
  rows.push({
    measure: "(1) REST DELETE / agent DestroySandbox",
    p50: pair(restDestroyMs, agentDestroyMs, 0.5),
    p95: pair(restDestroyMs, agentDestroyMs, 0.95),
    target: "",
  });
  result.createToExec = {
    overheadP50Ms: overhead,
    ownTimeP50Ms: ownP50,
    targetMs: CP_OVERHEAD_TARGET_MS,
    met: overhead <= CP_OVERHEAD_TARGET_MS,
    rest,
    agent,
    restDestroyMs,
    agentDestroyMs,
  };

  // (2) exec round trip on one sandbox, REST and agent interleaved.
  const sb = await restCreateAndExec(stack, probes);
  restLive.add(sb.id);
  const id = sb.id;
  const restExec: { ms: number; agentMs: number; dbMs: number }[] = [];
  const agentExec: number[] = [];
  const agentExecStream: number[] = [];
  const restGet: { ms: number; dbMs: number }[] = [];
  console.error(`[bench] (2) ${EXECS} execs`);
  for (let i = 0; i < EXECS; i++) {
    const r = await timedApi(stack, probes, "POST", `/v1/sandboxes/${id}/exec`, {
      cmd: "/bin/true",
    });
    if (r.res.status !== 200 || r.res.body.exit_code !== 0)
      throw new Error(`exec: ${r.res.status} ${JSON.stringify(r.res.body)}`);
    restExec.push({ ms: r.ms, agentMs: r.agentMs, dbMs: r.dbMs });
    const t1 = process.hrtime.bigint();
    const a = await stack.agent.client.exec({ sandboxId: id, cmd: "/bin/true" });
    agentExec.push(msSince(t1));
    if (a.exitCode !== 0) throw new Error(`agent exec: exit ${a.exitCode}`);
    const t2 = process.hrtime.bigint();
    for await (const _ of stack.agent.client.execStream({ sandboxId: id, cmd: "/bin/true" })) {
      // drained: the round trip ends with the stream
    }
    agentExecStream.push(msSince(t2));
    // The control plane's own cost per request: auth + one row, no agent call.
    const g = await timedApi(stack, probes, "GET", `/v1/sandboxes/${id}`);
    if (g.res.status !== 200) throw new Error(`GET sandbox: ${g.res.status}`);
    restGet.push({ ms: g.ms, dbMs: g.dbMs });
  }
  // Let the touches of the last exec land before anything else is measured.
  await sleep(100);
  const restExecMs = restExec.map((e) => e.ms);
  const restExecOwn = restExec.map((e) => e.ms - e.agentMs);
  const execOverhead = quantile(restExecMs, 0.5) - quantile(agentExec, 0.5);
  rows.push({
    measure: `(2) REST exec /bin/true round trip (n=${EXECS})`,
    ...stat(restExecMs),
    target: `Δp50 vs agent Exec ${round(execOverhead)} ms`,
  });
  rows.push({ measure: "(2) agent Exec RPC", ...stat(agentExec), target: "baseline" });
  rows.push({
    measure: "(2) agent ExecStream RPC (what REST exec uses)",
    ...stat(agentExecStream),
    target: "",
  });
  rows.push({
    measure: "(2)   control plane's own time per REST exec",
    ...stat(restExecOwn),
    target: `DB avg ${round(avg(restExec.map((e) => e.dbMs)))} ms`,
  });
  rows.push({
    measure: "(2) REST GET /v1/sandboxes/{id} (auth + 1 row)",
    ...stat(restGet.map((g) => g.ms)),
    target: `DB avg ${round(avg(restGet.map((g) => g.dbMs)))} ms`,
  });
  result.exec = { restExec, agentExec, agentExecStream, restGet };

  // (3) upload and download: REST vs raw HTTP through the agent's port proxy, same sandbox.
  await runTransfers(stack, id, { sizeMiB: SIZE_MIB, diagMiB: DIAG_MIB, rows, result });
  await restDestroy(stack, id);
  restLive.delete(id);

  // (4) GET /v1/sandboxes with 1,000 more rows (stopped: on no host, so the reconciler would
  // leave them alone anyway).
  const team = await stack.server.db.query<{ team_id: string }>(
    "SELECT team_id FROM sandboxes WHERE id = $1",
    [id],
  );
  const teamId = team[0]?.team_id;
  if (!teamId) throw new Error(`no team for sandbox ${id}`);
  await stack.server.db.query(
    `INSERT INTO sandboxes (id, team_id, template, status, vcpus, memory_mb, disk_size_mb,
       timeout_sec, metadata, created_at, started_at, ended_at)
     SELECT 'bench' || lpad(i::text, 15, '0'), $1, 'base', 'stopped', 2, 512, 5120, 300,
       jsonb_build_object('bench', 'control-plane', 'i', i::text),
       now() - i * interval '1 second', now() - i * interval '1 second', now()
     FROM generate_series(1, 1000) AS i`,
    [teamId],
  );
  const stopped = await stack.server.db.query<{ n: number }>(
    "SELECT count(*)::int AS n FROM sandboxes WHERE team_id = $1 AND status = 'stopped'",
    [teamId],
  );
  const listing: Record<string, unknown> = { stoppedRows: stopped[0]?.n };
  for (const limit of [100, 1000]) {
    const route = `/v1/sandboxes?state=stopped&limit=${limit}`;
    const check = await stack.api("GET", route);
    if (check.status !== 200 || check.body.sandboxes?.length !== limit)
      throw new Error(`GET ${route}: ${check.status}, ${check.body?.sandboxes?.length} rows`);
    // One second of warm-up, then the measured window.
    await load(`${stack.apiUrl}${route}`, stack.adminKey, CLIENTS, 1000);
    probes.db.take();
    const elu0 = performance.eventLoopUtilization();
    const r = await load(`${stack.apiUrl}${route}`, stack.adminKey, CLIENTS, DURATION_S * 1000);
    // How busy the control plane's event loop was (it has this process's main thread alone).
    const elu = performance.eventLoopUtilization(elu0).utilization;
    const db = probes.db.take();
    const rps = r.lat.length / DURATION_S;
    rows.push({
      measure: `(4) GET ${route.replace("/v1/sandboxes", "")}, ${CLIENTS} clients, ${DURATION_S} s`,
      p50: round(quantile(r.lat, 0.5)),
      p95: round(quantile(r.lat, 0.95)),
      target: `${round(rps)} req/s, ${r.errors} errors, ${round(r.bytes / r.lat.length / 1024)} KiB/resp`,
    });
    rows.push({
      measure: "(4)   server loop busy / DB time per request",
      p50: `${round(elu * 100)} %`,
      p95: `${round(db.ms / Math.max(1, db.queries))} ms`,
      target: `${db.queries} DB calls for ${r.lat.length} requests`,
    });
    listing[`limit${limit}`] = {
      requests: r.lat.length,
      rps,
      errors: r.errors,
      p50Ms: quantile(r.lat, 0.5),
      p95Ms: quantile(r.lat, 0.95),
      bytesPerResponse: r.bytes / Math.max(1, r.lat.length),
      serverLoopUtilization: elu,
      dbCalls: db.queries,
      dbMsTotal: db.ms,
    };
  }
  result.list = listing;
} finally {
  for (const sid of restLive)
    await restDestroy(stack, sid).catch((err: unknown) =>
      console.error(`destroy ${sid}: ${String(err)}`),
    );
  for (const sid of agentLive)
    await stack.agent.client
      .destroySandbox({ sandboxId: sid })
      .catch((err: unknown) => console.error(`destroy ${sid}: ${String(err)}`));
  await stack.close();
}

result.loadAvgAtEnd = loadavg();
printTable(rows);
console.log(
  `\nload average (1/5/15 min) at start ${(result.loadAvgAtStart as number[]).map(round).join(" ")}, at end ${loadavg().map(round).join(" ")}`,
);
console.log(
  `\nwritten ${writeResult(DB_KIND === "pglite" ? "control-plane" : `control-plane-${DB_KIND}`, {
    ...result,
    rows,
  })}`,
);
