import { PassThrough, type Readable } from "node:stream";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import type { HostAgentService, MetricPointSchema } from "@nestbox/proto/hostagent";
import { invalid } from "./manager/errors.js";
import type { SandboxManager } from "./manager/manager.js";
import { isMetricRange, type MetricPoint } from "./manager/metrics.js";
import type { SandboxRecord } from "./manager/store.js";
import { slotAddresses } from "./network/netns.js";
import { guard, guardStream } from "./rpc-errors.js";
import { processAndFileRpcs } from "./service-processes.js";

/** The envd protocol version our guest image carries (see packages/envd/src/version.ts). */
export const GUEST_ENVD_VERSION = "0.6.4";
const FILE_CHUNK = 64 * 1024;
/** Upload bytes gathered from stream messages before one write to envd. */
const ENVD_WRITE = 1024 * 1024;

function toPoint(p: MetricPoint): MessageInitShape<typeof MetricPointSchema> {
  return {
    timestampUnix: BigInt(Math.floor(p.timestampUnix)),
    cpuPct: p.cpuPct,
    memBytes: BigInt(p.memBytes),
    diskBytes: BigInt(p.diskBytes),
  };
}

function info(rec: SandboxRecord) {
  return {
    sandboxId: rec.id,
    status: rec.status,
    template: rec.template,
    vcpus: rec.vcpus,
    memoryMb: rec.memoryMb,
    hostIp: slotAddresses(rec.network.slot).sandbox,
    createdAtUnix: BigInt(Math.floor(rec.createdAtMs / 1000)),
    lastActiveAtUnix: BigInt(Math.floor(Math.min(rec.lastActiveAtMs, Date.now()) / 1000)),
    timeoutSec: rec.timeoutSec,
    metadata: rec.metadata,
    diskSizeMb: rec.diskSizeMb,
    runtime: rec.runtime?.kind ?? "",
  };
}

function requireId(id: string): string {
  if (!id) throw invalid("sandbox_id is required");
  return id;
}

function requirePath(p: string): string {
  if (!p) throw invalid("path is required");
  return p;
}

export function createHostAgentService(
  m: SandboxManager,
  opts: { onTerminate: () => void },
): ServiceImpl<typeof HostAgentService> {
  return {
    ...processAndFileRpcs(m),
    createSandbox: (req) =>
      guard(async () => {
        const rec = await m.create({
          sandboxId: req.sandboxId,
          template: req.template,
          vcpus: req.vcpus,
          memoryMb: req.memoryMb,
          diskSizeMb: req.diskSizeMb,
          timeoutSec: req.timeoutSec,
          envVars: req.envVars,
          metadata: req.metadata,
          defaultUser: req.defaultUser,
          defaultWorkdir: req.defaultWorkdir,
          ...(req.allowInternetAccess !== undefined
            ? { allowInternetAccess: req.allowInternetAccess }
            : {}),
          envdAccessToken: req.envdAccessToken,
        });
        return {
          sandboxId: rec.id,
          status: rec.status,
          hostIp: slotAddresses(rec.network.slot).sandbox,
          envdVersion: GUEST_ENVD_VERSION,
          runtime: m.runtime.kind,
          memorySnapshots: m.runtime.kind === "qemu",
        };
      }),

    destroySandbox: (req) =>
      guard(async () => {
        await m.destroy(requireId(req.sandboxId));
        return {};
      }),
    pauseSandbox: (req) =>
      guard(async () => {
        await m.pause(requireId(req.sandboxId));
        return {};
      }),
    resumeSandbox: (req) =>
      guard(async () => {
        const rec = await m.resume(requireId(req.sandboxId), req.timeoutSec);
        return {
          sandboxId: rec.id,
          status: rec.status,
          hostIp: slotAddresses(rec.network.slot).sandbox,
        };
      }),

    listSandboxes: async () => ({
      sandboxes: m.list().map(info),
      autoPausedSandboxIds: m.drainAutoPaused(),
    }),

    writeFile: (req) =>
      guard(async () => {
        const envd = m.envd(requireId(req.sandboxId));
        const body = new PassThrough();
        body.end(Buffer.from(req.content));
        await envd.writeFile(requirePath(req.path), body);
        return {};
      }),

    readFile: (req) =>
      guard(async () => {
        const envd = m.envd(requireId(req.sandboxId));
        const stream = await envd.readFile(requirePath(req.path));
        const chunks: Buffer[] = [];
        for await (const c of stream) chunks.push(c as Buffer);
        return { content: Buffer.concat(chunks) };
      }),

    writeFileStream: (requests) =>
      guard(async () => {
        const it = requests[Symbol.asyncIterator]();
        const first = await it.next();
        if (first.done || first.value.content.case !== "meta") {
          throw invalid("the first message must carry meta {sandbox_id, path}");
        }
        const meta = first.value.content.value;
        const envd = m.envd(requireId(meta.sandboxId));
        const body = new PassThrough({ highWaterMark: 2 * ENVD_WRITE });
        const upload = envd.writeFile(requirePath(meta.path), body, meta.user || "root");
        // Forward with backpressure (wait for drain instead of buffering the file), a megabyte
        // per write: every separate write is a chunk envd parses on an emulated CPU.
        const pump = (async () => {
          let batch: Uint8Array[] = [];
          let batched = 0;
          const forward = async () => {
            const data = batch.length === 1 ? (batch[0] as Uint8Array) : Buffer.concat(batch);
            batch = [];
            batched = 0;
            if (!body.write(data)) await new Promise((r) => body.once("drain", r));
          };
          for (let n = await it.next(); !n.done; n = await it.next()) {
            if (n.value.content.case !== "chunk")
              throw invalid("only chunk messages may follow meta");
            batch.push(n.value.content.value);
            batched += n.value.content.value.length;
            if (batched >= ENVD_WRITE) await forward();
            m.touch(meta.sandboxId);
          }
          if (batched > 0) await forward();
          body.end();
        })();
        pump.catch((err: unknown) =>
          body.destroy(err instanceof Error ? err : new Error(String(err))),
        );
        await Promise.all([pump, upload]);
        return {};
      }),

    readFileStream: (req) =>
      guardStream(async function* () {
        const envd = m.envd(requireId(req.sandboxId));
        const stream: Readable = await envd.readFile(requirePath(req.path));
        let pending: Buffer = Buffer.alloc(0);
        for await (const c of stream) {
          pending = pending.length ? Buffer.concat([pending, c as Buffer]) : (c as Buffer);
          while (pending.length >= FILE_CHUNK) {
            yield { chunk: pending.subarray(0, FILE_CHUNK) };
            pending = pending.subarray(FILE_CHUNK);
          }
          m.touch(req.sandboxId);
        }
        if (pending.length > 0) yield { chunk: pending };
      }),

    createSnapshot: (req) =>
      guard(async () => {
        if (!req.name) throw invalid("name is required");
        const sizeBytes = await m.snapshot(requireId(req.sandboxId), req.name);
        return { name: req.name, sizeBytes: BigInt(sizeBytes) };
      }),

    deleteSnapshot: (req) =>
      guard(async () => {
        if (!req.name) throw invalid("name is required");
        await m.deleteTemplate(req.name);
        return {};
      }),

    flattenRootfs: (req) =>
      guard(async () => {
        if (!req.name) throw invalid("name is required");
        const sizeBytes = await m.flatten(requireId(req.sandboxId), req.name);
        return { sizeBytes: BigInt(sizeBytes) };
      }),

    setSandboxTimeout: (req) =>
      guard(async () => {
        m.setTimeout(requireId(req.sandboxId), req.timeoutSec);
        return {};
      }),

    pingSandbox: (req) =>
      guard(async () => {
        const rec = m.get(requireId(req.sandboxId));
        if (rec.status !== "running")
          throw new ConnectError(`sandbox ${rec.id} is ${rec.status}`, Code.FailedPrecondition);
        m.touch(rec.id);
        return {};
      }),

    terminate: () =>
      guard(async () => {
        await m.destroyAll();
        // Answer first, then exit.
        setImmediate(opts.onTerminate);
        return {};
      }),

    getSandboxMetrics: (req) =>
      guard(async () => {
        const range = req.range || "10m";
        if (!isMetricRange(range)) throw invalid('range must be "10m", "2h" or "24h"');
        return { points: m.metricsOf(requireId(req.sandboxId)).read(range).map(toPoint) };
      }),

    flushSandboxMetrics: (req) =>
      guard(async () => {
        const all = m.metricsOf(requireId(req.sandboxId)).flush();
        return {
          points10m: all["10m"].map(toPoint),
          points2h: all["2h"].map(toPoint),
          points24h: all["24h"].map(toPoint),
        };
      }),
  };
}
