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
import { once } from "node:events";
import http from "node:http";
import { loadavg } from "node:os";
import { setTimeout as sleep } from "node:timers/promises";
import { parseArgs } from "node:util";
import { Worker } from "node:worker_threads";
import type { Interceptor } from "@connectrpc/connect";
import type { Db } from "@nestbox/server/db/db";
import { type Stack, startStack } from "../test/e2e/support/control-plane-harness.js";
import {
  cpuSeconds,
  MiB,
  msSince,
  printTable,
  qemuPidOf,
  quantile,
  round,
  sampleRss,
  writeResult,
} from "./lib.js";

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

const SIZE = SIZE_MIB * MiB;
const GUEST_PORT = 9000;
const GUEST_DIR = "/home/user";
const SANDBOX_SPEC = {
  template: "base",
  vcpus: 2,
  memoryMb: 512,
  diskSizeMb: 5120,
  timeoutSec: 300,
  allowInternetAccess: true,
};
const CP_OVERHEAD_TARGET_MS = 15;
const TRANSFER_TARGET = 0.5;

// ── Instrumentation ──────────────────────────────────────────────────────────────────────────

/**
 * Counts the time the control plane spends waiting on its database, by wrapping the one Db
 * object its services share. Requests here run one at a time, so the counter between two
 * reads is what that request spent in queries (heartbeats aside, every 10 s).
 */
function instrumentDb(db: Db): { take(): { ms: number; queries: number } } {
  let ms = 0;
  let queries = 0;
  const query = db.query.bind(db);
  const transaction = db.transaction.bind(db);
  const timed = async <T>(fn: () => Promise<T>): Promise<T> => {
    const t0 = process.hrtime.bigint();
    try {
      return await fn();
    } finally {
      ms += msSince(t0);
      queries++;
    }
  };
  Object.assign(db, {
    query: (sql: string, params?: readonly unknown[]) => timed(() => query(sql, params)),
    transaction: (fn: Parameters<Db["transaction"]>[0]) => timed(() => transaction(fn)),
  });
  return {
    take() {
      const r = { ms, queries };
      ms = 0;
      queries = 0;
      return r;
    },
  };
}

/**
 * Times the control plane's calls to the agent (unary calls until they settle, streams until
 * they end) with a Connect interceptor the control plane installs on its agent clients
 * (`startServer({ agentInterceptors })`). Together with instrumentDb this splits a REST
 * request into agent time, database time and the rest (HTTP, auth, validation, JSON, the
 * event loop).
 */
function instrumentAgentCalls(): {
  interceptor: Interceptor;
  take(): { ms: number; calls: number };
} {
  let ms = 0;
  let calls = 0;
  const interceptor: Interceptor = (next) => async (req) => {
    const t0 = process.hrtime.bigint();
    const done = () => {
      ms += msSince(t0);
      calls++;
    };
    let res: Awaited<ReturnType<typeof next>>;
    try {
      res = await next(req);
    } catch (err) {
      done();
      throw err;
    }
    if (!res.stream) {
      done();
      return res;
    }
    const messages = res.message;
    return {
      ...res,
      message: (async function* () {
        try {
          yield* messages;
        } finally {
          done();
        }
      })(),
    };
  };
  return {
    interceptor,
    take() {
      const r = { ms, calls };
      ms = 0;
      calls = 0;
      return r;
    },
  };
}

// ── HTTP helpers (node:http, the same client for the REST and the raw path) ──────────────────

interface HttpResult {
  status: number;
  body: string;
  ms: number;
  bytes: number;
}

/** A 1 MiB block of random bytes sent again and again: nothing the size of the file is held. */
const block = Buffer.alloc(MiB, 0);
for (let i = 0; i < block.length; i += 4) block.writeUInt32LE((Math.random() * 2 ** 32) >>> 0, i);

function* payload(size: number): Generator<Buffer> {
  for (let sent = 0; sent < size; sent += block.length)
    yield block.subarray(0, Math.min(block.length, size - sent));
}

/** PUTs `size` bytes from the generator with a Content-Length, honouring backpressure. */
async function putStream(
  url: string,
  headers: Record<string, string>,
  size: number,
  method = "PUT",
): Promise<HttpResult> {
  const t0 = process.hrtime.bigint();
  const req = http.request(url, {
    method,
    headers: {
      ...headers,
      "content-type": "application/octet-stream",
      "content-length": String(size),
    },
  });
  const response = new Promise<http.IncomingMessage>((resolve, reject) => {
    req.once("response", resolve);
    req.once("error", reject);
  });
  let early = false;
  void response.then(
    () => {
      early = true;
    },
    () => {
      early = true;
    },
  );
  for (const chunk of payload(size)) {
    if (early) break; // answered (an error) before the body was sent
    if (!req.write(chunk)) await Promise.race([once(req, "drain"), response]);
  }
  req.end();
  const res = await response;
  let body = "";
  for await (const c of res) body += String(c);
  return { status: res.statusCode ?? 0, body, ms: msSince(t0), bytes: size };
}

/** GETs `url` and discards the body, counting it. */
async function getDiscard(url: string, headers: Record<string, string>): Promise<HttpResult> {
  const t0 = process.hrtime.bigint();
  const req = http.request(url, { method: "GET", headers });
  const response = new Promise<http.IncomingMessage>((resolve, reject) => {
    req.once("response", resolve);
    req.once("error", reject);
  });
  req.end();
  const res = await response;
  let bytes = 0;
  let body = "";
  for await (const c of res as AsyncIterable<Buffer>) {
    bytes += c.length;
    if (res.statusCode !== 200 && body.length < 4096) body += c.toString();
  }
  return { status: res.statusCode ?? 0, body, ms: msSince(t0), bytes };
}

// ── The REST API ─────────────────────────────────────────────────────────────────────────────

interface Probes {
  db: ReturnType<typeof instrumentDb>;
  agent: ReturnType<typeof instrumentAgentCalls>;
}

/** One REST request, split into its total, the agent calls it made and its database time. */
async function timedApi(s: Stack, probes: Probes, method: string, route: string, body?: unknown) {
  probes.db.take();
  probes.agent.take();
  const t0 = process.hrtime.bigint();
  const res = await s.api(method, route, body);
  const ms = msSince(t0);
  return { res, ms, agentMs: probes.agent.take().ms, dbMs: probes.db.take().ms };
}

interface RestCreate {
  id: string;
  createMs: number;
  createAgentMs: number;
  createDbMs: number;
  execMs: number;
  execAgentMs: number;
  execDbMs: number;
}

async function restCreateAndExec(s: Stack, probes: Probes): Promise<RestCreate> {
  const c = await timedApi(s, probes, "POST", "/v1/sandboxes", {
    template: SANDBOX_SPEC.template,
    vcpus: SANDBOX_SPEC.vcpus,
    memory_mb: SANDBOX_SPEC.memoryMb,
    disk_size_mb: SANDBOX_SPEC.diskSizeMb,
    timeout_sec: SANDBOX_SPEC.timeoutSec,
    allow_internet_access: SANDBOX_SPEC.allowInternetAccess,
  });
  if (c.res.status !== 201)
    throw new Error(`POST /v1/sandboxes: ${c.res.status} ${JSON.stringify(c.res.body)}`);
  const id: string = c.res.body.id;
  const e = await timedApi(s, probes, "POST", `/v1/sandboxes/${id}/exec`, { cmd: "/bin/true" });
  if (e.res.status !== 200 || e.res.body.exit_code !== 0)
    throw new Error(`exec in ${id}: ${e.res.status} ${JSON.stringify(e.res.body)}`);
  return {
    id,
    createMs: c.ms,
    createAgentMs: c.agentMs,
    createDbMs: c.dbMs,
    execMs: e.ms,
    execAgentMs: e.agentMs,
    execDbMs: e.dbMs,
  };
}

async function restDestroy(s: Stack, id: string): Promise<void> {
  const r = await s.api("DELETE", `/v1/sandboxes/${id}`);
  if (r.status !== 204) throw new Error(`DELETE ${id}: ${r.status} ${JSON.stringify(r.body)}`);
}

async function agentCreateAndExec(
  s: Stack,
): Promise<{ id: string; createMs: number; execMs: number }> {
  const t0 = process.hrtime.bigint();
  const { sandboxId } = await s.agent.client.createSandbox(SANDBOX_SPEC);
  const createMs = msSince(t0);
  const t1 = process.hrtime.bigint();
  const r = await s.agent.client.exec({ sandboxId, cmd: "/bin/true" });
  const execMs = msSince(t1);
  if (r.exitCode !== 0) throw new Error(`agent exec in ${sandboxId}: exit ${r.exitCode}`);
  return { id: sandboxId, createMs, execMs };
}

/** The agent's WriteFileStream directly (what the REST upload calls), 64 KiB chunks. */
async function agentUpload(s: Stack, sandboxId: string, path: string, size: number) {
  const t0 = process.hrtime.bigint();
  async function* messages() {
    yield { content: { case: "meta" as const, value: { sandboxId, path } } };
    for (const b of payload(size))
      for (let off = 0; off < b.length; off += 64 * 1024)
        yield { content: { case: "chunk" as const, value: b.subarray(off, off + 64 * 1024) } };
  }
  await s.agent.client.writeFileStream(messages());
  return { status: 200, body: "", ms: msSince(t0), bytes: size };
}

/** The agent's ReadFileStream directly (what the REST download calls), discarded. */
async function agentDownload(s: Stack, sandboxId: string, path: string) {
  const t0 = process.hrtime.bigint();
  let bytes = 0;
  for await (const m of s.agent.client.readFileStream({ sandboxId, path })) bytes += m.chunk.length;
  return { status: 200, body: "", ms: msSince(t0), bytes };
}

/** The guest's HTTP server for the raw path: PUT writes the body to a file, GET streams it. */
const GUEST_SERVER = `
import http.server, os, shutil
D = ${JSON.stringify(GUEST_DIR)}
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def target(self):
        return os.path.join(D, os.path.basename(self.path.split("?")[0]) or "raw.bin")
    def do_PUT(self):
        n = int(self.headers["Content-Length"])
        with open(self.target(), "wb") as f:
            while n > 0:
                b = self.rfile.read(min(n, 1 << 20))
                if not b: break
                f.write(b)
                n -= len(b)
        self.send_response(200 if n == 0 else 400)
        self.send_header("Content-Length", "0")
        self.end_headers()
    def do_GET(self):
        p = self.target()
        if not os.path.exists(p):
            self.send_response(404); self.send_header("Content-Length", "0"); self.end_headers(); return
        self.send_response(200)
        self.send_header("Content-Length", str(os.path.getsize(p)))
        self.end_headers()
        with open(p, "rb") as f:
            shutil.copyfileobj(f, self.wfile, 1 << 20)
http.server.ThreadingHTTPServer(("0.0.0.0", ${GUEST_PORT}), H).serve_forever()
`;

/**
 * The same server in Node, for the diagnostic rows: once with V8's JIT, once with the flags
 * envd runs with under TCG (images/guest/supervise-envd), to tell the guest's CPU cost of a
 * JavaScript server from that of the hops in front of it.
 */
const GUEST_NODE_SERVER = `
const http = require("node:http"), fs = require("node:fs"), path = require("node:path");
const D = ${JSON.stringify(GUEST_DIR)};
http.createServer((req, res) => {
  const p = path.join(D, path.basename(req.url.split("?")[0]) || "raw.bin");
  if (req.method === "PUT") {
    const f = fs.createWriteStream(p);
    req.pipe(f);
    f.on("finish", () => { res.writeHead(200, { "content-length": 0 }); res.end(); });
    f.on("error", (e) => { res.writeHead(500); res.end(String(e)); });
    return;
  }
  fs.stat(p, (err, st) => {
    if (err) { res.writeHead(404, { "content-length": 0 }); res.end(); return; }
    res.writeHead(200, { "content-length": st.size });
    fs.createReadStream(p, { highWaterMark: Number(process.argv[2]) }).pipe(res);
  });
}).listen(Number(process.argv[1]), "0.0.0.0");
`;
const ENVD_TCG_NODE_FLAGS = ["--no-opt", "--no-sparkplug", "--no-maglev", "--regexp-interpret-all"];

/** Starts a guest server as a background process (REST) and waits until the proxy reaches it. */
async function startGuestServer(
  s: Stack,
  id: string,
  port: number,
  cmd: string,
  args: string[],
): Promise<string> {
  const started = await s.api("POST", `/v1/sandboxes/${id}/processes`, {
    cmd,
    args,
    tag: `bench-${port}`,
  });
  if (started.status !== 201 && started.status !== 200)
    throw new Error(`starting the guest server: ${started.status} ${JSON.stringify(started.body)}`);
  const base = `${s.agent.url}/proxy/${id}/${port}`;
  for (let i = 0; i < 150; i++) {
    const r = await getDiscard(`${base}/ping`, {}).catch(() => undefined);
    // 502 = the agent's "port is not open"; the guest server answers 404 for a missing file.
    if (r && r.status === 404) return base;
    await sleep(200);
  }
  throw new Error(`the guest server on :${port} did not answer through ${base}`);
}

// ── GET /v1/sandboxes load (in a worker, so the clients do not share the server's loop) ──────

const LOAD_WORKER = `
const { parentPort, workerData: w } = require("node:worker_threads");
(async () => {
  const lat = [];
  let errors = 0;
  let bytes = 0;
  const end = Date.now() + w.durationMs;
  await Promise.all(Array.from({ length: w.clients }, async () => {
    while (Date.now() < end) {
      const t0 = performance.now();
      try {
        const r = await fetch(w.url, { headers: { "X-API-Key": w.key } });
        const b = await r.arrayBuffer();
        bytes += b.byteLength;
        if (r.status !== 200) errors++;
      } catch (e) {
        errors++;
      }
      lat.push(performance.now() - t0);
    }
  }));
  parentPort.postMessage({ lat, errors, bytes });
})();
`;

interface LoadResult {
  lat: number[];
  errors: number;
  bytes: number;
}

async function load(url: string, key: string, clients: number, durationMs: number) {
  const worker = new Worker(LOAD_WORKER, {
    eval: true,
    workerData: { url, key, clients, durationMs },
  });
  try {
    const [r] = (await once(worker, "message")) as [LoadResult];
    return r;
  } finally {
    await worker.terminate();
  }
}

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
const stack = await startStack({
  runtime: "qemu",
  instance: "x",
  slots: "7400-7499",
  db: DB_KIND,
  reconcileMs: 3_600_000,
  agentInterceptors: [agentCalls.interceptor],
});
const restLive = new Set<string>();
const agentLive = new Set<string>();
try {
  const probes: Probes = { db: instrumentDb(stack.server.db), agent: agentCalls };

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
    if (check.status !== 200 || check.body.sandboxes.length !== limit)
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
