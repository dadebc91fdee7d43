/** Creating, exec-ing and destroying sandboxes the two ways compared: REST and agent RPC. */
import { msSince } from "../lib.js";
import type { BenchStack } from "../support/stack.js";
import { payload } from "./http.js";
import { type Probes, timedApi } from "./probes.js";

export const SANDBOX_SPEC = {
  template: "base",
  vcpus: 2,
  memoryMb: 512,
  diskSizeMb: 5120,
  timeoutSec: 300,
  allowInternetAccess: true,
};

export interface RestCreate {
  id: string;
  createMs: number;
  createAgentMs: number;
  createDbMs: number;
  execMs: number;
  execAgentMs: number;
  execDbMs: number;
}

export async function restCreateAndExec(s: BenchStack, probes: Probes): Promise<RestCreate> {
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
  const id = c.res.body.id;
  if (!id) throw new Error(`POST /v1/sandboxes: no id in ${JSON.stringify(c.res.body)}`);
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

export async function restDestroy(s: BenchStack, id: string): Promise<void> {
  const r = await s.api("DELETE", `/v1/sandboxes/${id}`);
  if (r.status !== 204) throw new Error(`DELETE ${id}: ${r.status} ${JSON.stringify(r.body)}`);
}

export async function agentCreateAndExec(
  s: BenchStack,
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
export async function agentUpload(s: BenchStack, sandboxId: string, path: string, size: number) {
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
export async function agentDownload(s: BenchStack, sandboxId: string, path: string) {
  const t0 = process.hrtime.bigint();
  let bytes = 0;
  for await (const m of s.agent.client.readFileStream({ sandboxId, path })) bytes += m.chunk.length;
  return { status: 200, body: "", ms: msSince(t0), bytes };
}
