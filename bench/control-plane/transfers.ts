/**
 * (3) Upload and download of one large file: REST `/files` vs raw HTTP through the agent's
 * port proxy into a tiny server in the guest (the better of two raw runs, first and last), with
 * diagnostic rows that take hops away one at a time (agent RPC, envd via the proxy, a Node
 * server in the guest with and without V8's optimising tiers). Each row reports throughput,
 * this process's RSS growth and CPU seconds per GiB of every process on the path.
 */
import { cpuSeconds, MiB, qemuPidOf, round, sampleRss } from "../lib.js";
import type { BenchStack } from "../support/stack.js";
import {
  ENVD_TCG_NODE_FLAGS,
  GUEST_DIR,
  GUEST_NODE_SERVER,
  GUEST_PORT,
  GUEST_SERVER,
  startGuestServer,
} from "./guest-servers.js";
import { getDiscard, type HttpResult, putStream } from "./http.js";
import { agentDownload, agentUpload } from "./sandboxes.js";

const TRANSFER_TARGET = 0.5;

export interface TransferOptions {
  sizeMiB: number;
  /** Size of the diagnostic transfers (at most sizeMiB). */
  diagMiB: number;
  rows: Record<string, string | number>[];
  result: Record<string, unknown>;
}

export async function runTransfers(
  stack: BenchStack,
  id: string,
  { sizeMiB: SIZE_MIB, diagMiB: DIAG_MIB, rows, result }: TransferOptions,
): Promise<void> {
  const SIZE = SIZE_MIB * MiB;
  const headers = { "X-API-Key": stack.adminKey };
  const filesUrl = (p: string) =>
    `${stack.apiUrl}/v1/sandboxes/${id}/files?path=${encodeURIComponent(p)}`;
  const df = await stack.api("POST", `/v1/sandboxes/${id}/exec`, {
    cmd: "df",
    args: ["-k", GUEST_DIR],
  });
  console.error(`[bench] guest disk:\n${df.body.stdout}`);
  result.guestDisk = df.body.stdout;
  const rawBase = await startGuestServer(stack, id, GUEST_PORT, "python3", ["-c", GUEST_SERVER]);
  // One diagnostic server at a time, killed after use: the guest has 512 MiB.
  // Read chunks: 1 MiB, and 64 KiB (fs.createReadStream's default, which envd's GET /files uses).
  const withNodeServer = async <T>(
    port: number,
    readChunk: number,
    flags: string[],
    fn: (base: string) => Promise<T>,
  ): Promise<T> => {
    const base = await startGuestServer(stack, id, port, "node", [
      ...flags,
      "-e",
      GUEST_NODE_SERVER,
      String(port),
      String(readChunk),
    ]);
    try {
      return await fn(base);
    } finally {
      const k = await stack.api("POST", `/v1/sandboxes/${id}/processes/bench-${port}/signal`, {
        signal: "SIGKILL",
      });
      if (k.status !== 204) console.error(`[bench] killing bench-${port}: ${k.status}`);
    }
  };
  const rm = async (p: string) => {
    const r = await stack.api("DELETE", `/v1/sandboxes/${id}/files?path=${encodeURIComponent(p)}`);
    if (r.status !== 204) throw new Error(`rm ${p}: ${r.status} ${JSON.stringify(r.body)}`);
  };
  // CPU is what this machine runs out of (TCG emulates the guest's share on the host), so each
  // transfer also reports the CPU seconds per GiB it cost each process on the path.
  const qemuPid = qemuPidOf(id);
  const agentPid = stack.agent.child.pid;
  if (!qemuPid || !agentPid) throw new Error(`no QEMU (${qemuPid}) or agent (${agentPid}) pid`);
  const cpuNow = () => {
    const self = process.cpuUsage();
    return {
      self: (self.user + self.system) / 1e6,
      agent: cpuSeconds(agentPid),
      qemu: cpuSeconds(qemuPid),
    };
  };
  const measured = async (fn: () => Promise<HttpResult>, what: string, size = SIZE) => {
    const before = process.memoryUsage.rss();
    const sampler = sampleRss(process.pid);
    const cpu0 = cpuNow();
    const t0 = Date.now();
    const r = await fn();
    const peak = sampler.stop();
    const cpu1 = cpuNow();
    if (r.status !== 200) throw new Error(`${what}: ${r.status} ${r.body.slice(0, 500)}`);
    if (r.bytes !== size) throw new Error(`${what}: ${r.bytes} bytes, expected ${size}`);
    const mibPerS = size / MiB / (r.ms / 1000);
    const perGiB = (k: keyof typeof cpu0) => ((cpu1[k] - cpu0[k]) * 1024 * MiB) / size;
    const cpuPerGiB = { self: perGiB("self"), agent: perGiB("agent"), qemu: perGiB("qemu") };
    console.error(`[bench] ${what}: ${round(mibPerS)} MiB/s (${Date.now() - t0} ms)`);
    return {
      ...r,
      sizeMiB: size / MiB,
      mibPerS,
      rssGrowthMiB: (peak - before) / MiB,
      cpuPerGiB,
    };
  };
  const restPath = `${GUEST_DIR}/bench-rest.bin`;
  const rawPath = `${GUEST_DIR}/bench-raw.bin`;
  const diagPath = `${GUEST_DIR}/bench-diag.bin`;
  const DIAG = DIAG_MIB * MiB;
  // envd's own /files in the guest, through the same port proxy as the raw path: what the
  // guest side of the REST path costs without the agent's and the control plane's hops.
  const envdFiles = (p: string) =>
    `${stack.agent.url}/proxy/${id}/49983/files?path=${encodeURIComponent(p)}&username=root`;
  const transfer: Record<string, Awaited<ReturnType<typeof measured>>> = {};
  const nodeJitPath = `${GUEST_DIR}/bench-node-jit.bin`;
  const nodeNoJitPath = `${GUEST_DIR}/bench-node-nojit.bin`;
  const base = (p: string) => p.slice(GUEST_DIR.length);
  // The guest disk has about 2 GiB free: each file is removed before the next large one, and
  // raw runs first and last (the better run is the baseline), so a guest disk or page cache
  // that changes as the run goes on favours neither side.
  console.error(`[bench] (3) ${SIZE_MIB} MiB transfers`);
  transfer.rawUp1 = await measured(() => putStream(rawBase + base(rawPath), {}, SIZE), "raw PUT");
  transfer.rawDown1 = await measured(() => getDiscard(rawBase + base(rawPath), {}), "raw GET");
  await rm(rawPath);
  transfer.restUp = await measured(() => putStream(filesUrl(restPath), headers, SIZE), "REST PUT");
  transfer.restDown = await measured(() => getDiscard(filesUrl(restPath), headers), "REST GET");
  await rm(restPath);
  transfer.agentUp = await measured(
    () => agentUpload(stack, id, diagPath, DIAG),
    "agent WriteFileStream",
    DIAG,
  );
  transfer.agentDown = await measured(
    () => agentDownload(stack, id, diagPath),
    "agent ReadFileStream",
    DIAG,
  );
  await rm(diagPath);
  transfer.envdUp = await measured(
    () => putStream(envdFiles(diagPath), {}, DIAG, "POST"),
    "envd POST /files via proxy",
    DIAG,
  );
  transfer.envdDown = await measured(
    () => getDiscard(envdFiles(diagPath), { "accept-encoding": "identity" }),
    "envd GET /files via proxy",
    DIAG,
  );
  await rm(diagPath);
  [transfer.nodeJitUp, transfer.nodeJitDown] = await withNodeServer(
    GUEST_PORT + 1,
    MiB,
    [],
    async (b) => [
      await measured(() => putStream(b + base(nodeJitPath), {}, DIAG), "node (JIT) PUT", DIAG),
      await measured(() => getDiscard(b + base(nodeJitPath), {}), "node (JIT) GET", DIAG),
    ],
  );
  transfer.node64kDown = await withNodeServer(GUEST_PORT + 2, 64 * 1024, [], (b) =>
    measured(() => getDiscard(b + base(nodeJitPath), {}), "node (JIT, 64 KiB reads) GET", DIAG),
  );
  await rm(nodeJitPath);
  [transfer.nodeNoJitUp, transfer.nodeNoJitDown] = await withNodeServer(
    GUEST_PORT + 3,
    MiB,
    ENVD_TCG_NODE_FLAGS,
    async (b) => [
      await measured(
        () => putStream(b + base(nodeNoJitPath), {}, DIAG),
        "node (envd's TCG flags) PUT",
        DIAG,
      ),
      await measured(
        () => getDiscard(b + base(nodeNoJitPath), {}),
        "node (envd's TCG flags) GET",
        DIAG,
      ),
    ],
  );
  await rm(nodeNoJitPath);
  transfer.rawUp2 = await measured(() => putStream(rawBase + base(rawPath), {}, SIZE), "raw PUT");
  transfer.rawDown2 = await measured(() => getDiscard(rawBase + base(rawPath), {}), "raw GET");
  await rm(rawPath);
  const better = (a: typeof transfer.rawUp1, b: typeof transfer.rawUp1) =>
    a.mibPerS >= b.mibPerS ? a : b;
  transfer.rawUp = better(transfer.rawUp1, transfer.rawUp2);
  transfer.rawDown = better(transfer.rawDown1, transfer.rawDown2);
  const upRatio = transfer.restUp.mibPerS / transfer.rawUp.mibPerS;
  const downRatio = transfer.restDown.mibPerS / transfer.rawDown.mibPerS;
  const cpuCol = (x: { cpuPerGiB: { self: number; agent: number; qemu: number } }) =>
    `${round(x.cpuPerGiB.self)} / ${round(x.cpuPerGiB.agent)} / ${round(x.cpuPerGiB.qemu)}`;
  const fmt = (x: { mibPerS: number; rssGrowthMiB: number; ms: number }) =>
    `${round(x.mibPerS)} MiB/s (${round(x.ms / 1000)} s), RSS +${round(x.rssGrowthMiB)} MiB`;
  rows.push({
    measure: `(3) REST PUT …/files, ${SIZE_MIB} MiB`,
    p50: fmt(transfer.restUp),
    "CPU s/GiB: cp+client / agent / qemu": cpuCol(transfer.restUp),
    p95: "",
    target: `≥ 50 % of raw: ${round(upRatio * 100)} %, ${upRatio >= TRANSFER_TARGET ? "met" : "NOT met"}`,
  });
  rows.push({
    measure: `(3)   agent WriteFileStream, ${DIAG_MIB} MiB`,
    p50: fmt(transfer.agentUp),
    "CPU s/GiB: cp+client / agent / qemu": cpuCol(transfer.agentUp),
    p95: "",
    target: "diagnostic: no control plane",
  });
  rows.push({
    measure: `(3)   envd POST /files via port proxy, ${DIAG_MIB} MiB`,
    p50: fmt(transfer.envdUp),
    "CPU s/GiB: cp+client / agent / qemu": cpuCol(transfer.envdUp),
    p95: "",
    target: "diagnostic: guest side only",
  });
  rows.push({
    measure: `(3)   node server (JIT) PUT via port proxy, ${DIAG_MIB} MiB`,
    p50: fmt(transfer.nodeJitUp),
    "CPU s/GiB: cp+client / agent / qemu": cpuCol(transfer.nodeJitUp),
    p95: "",
    target: "diagnostic: a JS server in the guest",
  });
  rows.push({
    measure: `(3)   node server (envd's TCG flags) PUT via port proxy, ${DIAG_MIB} MiB`,
    p50: fmt(transfer.nodeNoJitUp),
    "CPU s/GiB: cp+client / agent / qemu": cpuCol(transfer.nodeNoJitUp),
    p95: "",
    target: "diagnostic: V8 without its optimising tiers",
  });
  rows.push({
    measure: "(3) raw HTTP PUT via port proxy (better of 2 runs)",
    p50: `${fmt(transfer.rawUp)}; other ${round(Math.min(transfer.rawUp1.mibPerS, transfer.rawUp2.mibPerS))} MiB/s`,
    "CPU s/GiB: cp+client / agent / qemu": cpuCol(transfer.rawUp),
    p95: "",
    target: "baseline",
  });
  rows.push({
    measure: `(3) REST GET …/files, ${SIZE_MIB} MiB`,
    p50: fmt(transfer.restDown),
    "CPU s/GiB: cp+client / agent / qemu": cpuCol(transfer.restDown),
    p95: "",
    target: `≥ 50 % of raw: ${round(downRatio * 100)} %, ${downRatio >= TRANSFER_TARGET ? "met" : "NOT met"}`,
  });
  rows.push({
    measure: `(3)   agent ReadFileStream, ${DIAG_MIB} MiB`,
    p50: fmt(transfer.agentDown),
    "CPU s/GiB: cp+client / agent / qemu": cpuCol(transfer.agentDown),
    p95: "",
    target: "diagnostic: no control plane",
  });
  rows.push({
    measure: `(3)   envd GET /files via port proxy, ${DIAG_MIB} MiB`,
    p50: fmt(transfer.envdDown),
    "CPU s/GiB: cp+client / agent / qemu": cpuCol(transfer.envdDown),
    p95: "",
    target: "diagnostic: guest side only",
  });
  rows.push({
    measure: `(3)   node server (JIT) GET via port proxy, ${DIAG_MIB} MiB`,
    p50: fmt(transfer.nodeJitDown),
    "CPU s/GiB: cp+client / agent / qemu": cpuCol(transfer.nodeJitDown),
    p95: "",
    target: "diagnostic: a JS server in the guest",
  });
  rows.push({
    measure: `(3)   node server (JIT, 64 KiB reads) GET via port proxy, ${DIAG_MIB} MiB`,
    p50: fmt(transfer.node64kDown),
    "CPU s/GiB: cp+client / agent / qemu": cpuCol(transfer.node64kDown),
    p95: "",
    target: "diagnostic: envd's read size",
  });
  rows.push({
    measure: `(3)   node server (envd's TCG flags) GET via port proxy, ${DIAG_MIB} MiB`,
    p50: fmt(transfer.nodeNoJitDown),
    "CPU s/GiB: cp+client / agent / qemu": cpuCol(transfer.nodeNoJitDown),
    p95: "",
    target: "diagnostic: V8 without its optimising tiers",
  });
  rows.push({
    measure: "(3) raw HTTP GET via port proxy (better of 2 runs)",
    p50: `${fmt(transfer.rawDown)}; other ${round(Math.min(transfer.rawDown1.mibPerS, transfer.rawDown2.mibPerS))} MiB/s`,
    "CPU s/GiB: cp+client / agent / qemu": cpuCol(transfer.rawDown),
    p95: "",
    target: "baseline",
  });
  result.transfer = {
    sizeMiB: SIZE_MIB,
    diagSizeMiB: DIAG_MIB,
    uploadRatio: upRatio,
    downloadRatio: downRatio,
    note: "RSS growth is this process's (control plane + client); the raw runs show the client's share",
    ...Object.fromEntries(
      Object.entries(transfer).map(([k, v]) => [
        k,
        {
          sizeMiB: v.sizeMiB,
          ms: v.ms,
          mibPerS: v.mibPerS,
          rssGrowthMiB: v.rssGrowthMiB,
          cpuSecondsPerGiB: v.cpuPerGiB,
        },
      ]),
    ),
  };
}
