import type { Socket } from "node:net";
import path from "node:path";
import { parseArgs } from "node:util";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { HostAgentService } from "@nestbox/proto/hostagent";
import { credentialsPath } from "./control-plane/credentials.js";
import { hostFacts } from "./control-plane/host-facts.js";
import {
  ControlPlaneConfigError,
  ControlPlaneLink,
  normaliseBaseUrl,
} from "./control-plane/link.js";
import {
  type AgentListener,
  agentTokenPath,
  loadOrCreateAgentToken,
  tlsListener,
  tokenListener,
} from "./listener.js";
import type { Logger } from "./log.js";
import { SandboxManager } from "./manager/manager.js";
import { ensureHostFirewall } from "./network/host-firewall.js";
import { createPortProxy } from "./port-proxy.js";
import { createRuntime, defaultRuntimeKind } from "./runtime/factory.js";
import type { RuntimeKind } from "./runtime/runtime.js";
import { createHostAgentService } from "./service.js";

const HELP = `Usage: nestbox agent [options]

The host agent: runs this host's sandboxes (QEMU microVMs or namespaces) and serves
hostagent.v1.HostAgentService over Connect RPC. Needs root (namespaces, TAP, nftables).

Who may call it: registered with a control plane, it serves TLS 1.3 only, with the certificate
the control plane issued it, and accepts only the control plane's client certificate. On its
own, every request needs the token in <data-dir>/agent/<instance>/agent-token (0600, made at
first start) in the X-Nestbox-Agent-Token header.

Options:
  --listen <host:port>       address to serve on (default 127.0.0.1:50051)
  --runtime <qemu|namespace> sandbox runtime (default: qemu when qemu-system-x86_64 exists)
  --accel <auto|kvm|tcg>     QEMU accelerator (default auto: KVM only if a probe boot works)
  --data-dir <dir>           state directory (default $NESTBOX_DIR or /var/lib/nestbox)
  --memory-capacity-mb <n>   memory to promise to sandboxes (default: 2 × (RAM − 1 GiB))
  --disk-reserve-mb <n>      free disk kept for the host; creates are refused below it (2048)
  --instance <letter>        names this agent's namespaces, veths and state (default s); agents
                             sharing a host need different letters
  --slots <lo-hi>            network slots (10.250.0.0/16 in /30 blocks) this agent may use
                             (default 1-16383)
  --control-plane <url>      register with this control plane and send it heartbeats (without
                             it, the agent runs on its own)
  --heartbeat-interval <s>   seconds between heartbeats to the control plane, each with the
                             memory, disk and sandboxes this agent has committed (default 30;
                             the control plane marks a host silent for 90 s unreachable)
  --registration-token <t>   one-time token from POST /v1/hosts (or $NESTBOX_REGISTRATION_TOKEN);
                             needed only until credentials are stored in
                             <data-dir>/agent/<instance>/credentials.json
  --advertise-url <url>      where the control plane reaches this agent, https (default
                             https://<listen address>)
  --warm-pool <n>            keep n sandboxes of the default shape (base, 2 vCPUs, 512 MiB)
                             started and warmed up; a matching create takes one (default 0)
  --max-concurrent-starts <n> sandbox starts run at once, the rest queue (default: CPU count;
                             starts are CPU-bound, and too many at once all finish late)
  --pause-on-exit            on SIGTERM/SIGINT pause running sandboxes instead of leaving them
                             running (nestbox up uses this)
  --stop-when-stdin-closes   stop as on SIGTERM when stdin reaches its end: stdin is a pipe
                             from a supervisor (nestbox up) that may be killed outright
  -h, --help                 show this help
`;

export class UsageError extends Error {
  override name = "UsageError";
}

function logger(base: Record<string, unknown>): Logger {
  const write = (level: string, msg: string, fields?: Record<string, unknown>) =>
    process.stderr.write(
      `${JSON.stringify({ ts: new Date().toISOString(), level, msg, ...base, ...fields })}\n`,
    );
  return {
    info: (m, f) => write("info", m, f),
    warn: (m, f) => write("warn", m, f),
    error: (m, f) => write("error", m, f),
  };
}

function positiveInt(name: string, v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n <= 0)
    throw new UsageError(`--${name} must be a positive integer, got ${v}`);
  return n;
}

function warmPoolSize(v: string | undefined): number {
  if (v === undefined) return 0;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0 || n > 64)
    throw new UsageError(`--warm-pool must be an integer from 0 to 64, got ${v}`);
  return n;
}

export async function main(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      listen: { type: "string", default: "127.0.0.1:50051" },
      runtime: { type: "string" },
      accel: { type: "string", default: "auto" },
      "data-dir": { type: "string" },
      "memory-capacity-mb": { type: "string" },
      "disk-reserve-mb": { type: "string" },
      "warm-pool": { type: "string" },
      "max-concurrent-starts": { type: "string" },
      instance: { type: "string", default: "s" },
      slots: { type: "string" },
      "control-plane": { type: "string" },
      "registration-token": { type: "string" },
      "heartbeat-interval": { type: "string" },
      "stop-when-stdin-closes": { type: "boolean", default: false },
      "advertise-url": { type: "string" },
      "pause-on-exit": { type: "boolean", default: false },
      help: { type: "boolean", short: "h", default: false },
    },
    strict: true,
  });
  if (values.help) {
    process.stdout.write(HELP);
    return;
  }
  const m = /^(.+):(\d+)$/.exec(values.listen);
  if (!m?.[1] || !m[2] || Number(m[2]) > 65535)
    throw new UsageError(`--listen must be host:port, got ${values.listen}`);
  const kind = (values.runtime ?? (await defaultRuntimeKind())) as RuntimeKind;
  if (kind !== "qemu" && kind !== "namespace")
    throw new UsageError(`--runtime must be qemu or namespace, got ${kind}`);
  const accel = values.accel;
  if (accel !== "auto" && accel !== "kvm" && accel !== "tcg")
    throw new UsageError(`--accel must be auto, kvm or tcg`);
  if (process.getuid?.() !== 0)
    throw new UsageError("the host agent needs root (network namespaces, TAP devices, nftables)");
  const nestboxDir = path.resolve(
    values["data-dir"] ?? process.env.NESTBOX_DIR ?? "/var/lib/nestbox",
  );
  if (!/^[a-z]$/.test(values.instance)) throw new UsageError("--instance must be one letter a-z");
  let slotRange: [number, number] | undefined;
  if (values.slots) {
    const sm = /^(\d+)-(\d+)$/.exec(values.slots);
    const lo = Number(sm?.[1]);
    const hi = Number(sm?.[2]);
    if (!sm || lo < 1 || hi > 16383 || lo > hi)
      throw new UsageError("--slots must be lo-hi within 1-16383");
    slotRange = [lo, hi];
  }
  const log = logger({ component: "agent", instance: values.instance });
  const link = await prepareControlPlaneLink(values, nestboxDir, m[1], log);
  // Read before anything starts: an unreadable token file is a start-up error.
  const standaloneToken = link
    ? undefined
    : await loadOrCreateAgentToken(agentTokenPath(nestboxDir, values.instance));

  const runtime = await createRuntime(kind, { nestboxDir, accel, log });
  await ensureHostFirewall();
  log.info("preparing the base template", { runtime: kind });
  await runtime.prepareTemplate("base");
  const manager = new SandboxManager({
    nestboxDir,
    runtime,
    log,
    instance: values.instance,
    ...(slotRange ? { slotRange } : {}),
    ...(values["memory-capacity-mb"]
      ? { memoryCapacityMb: positiveInt("memory-capacity-mb", values["memory-capacity-mb"]) }
      : {}),
    ...(values["disk-reserve-mb"]
      ? { diskReserveMb: positiveInt("disk-reserve-mb", values["disk-reserve-mb"]) }
      : {}),
    warmPool: warmPoolSize(values["warm-pool"]),
    ...(values["max-concurrent-starts"]
      ? {
          maxConcurrentStarts: positiveInt(
            "max-concurrent-starts",
            values["max-concurrent-starts"],
          ),
        }
      : {}),
  });
  await manager.start();

  const proxy = createPortProxy(manager);
  const rpc = connectNodeAdapter({
    // Never gzip: the control plane is the only client, on a fast link, and compressing file
    // stream messages cost more agent CPU than everything else on the download path.
    acceptCompression: [],
    routes: (router) => {
      router.service(
        HostAgentService,
        createHostAgentService(manager, {
          onTerminate: () => {
            log.info("terminated by the control plane");
            manager.stop();
            server.close();
            process.exit(0);
          },
        }),
      );
    },
  });
  const onRequest: Parameters<typeof tokenListener>[1] = (req, res) => {
    if (!proxy.handle(req, res)) rpc(req, res);
  };
  const onUpgrade: Parameters<typeof tokenListener>[2] = (req, socket, head) => {
    if (!proxy.upgrade(req, socket as Socket, head)) socket.destroy();
  };
  const listener: AgentListener = standaloneToken
    ? tokenListener(standaloneToken, onRequest, onUpgrade)
    : tlsListener(log, onRequest, onUpgrade);
  const server = listener.server;
  if (link) {
    link.on({
      onCredentials: (c) => {
        listener.useCredentials(c);
        log.info("serving with a new host certificate", { hostId: c.hostId });
      },
      // The seed's behaviour: a deleted host takes its sandboxes with it.
      onHostDeleted: () => {
        void manager
          .destroyAll()
          .catch((err: unknown) =>
            log.error("destroying sandboxes of the deleted host failed", { error: String(err) }),
          )
          .finally(() => {
            manager.stop();
            server.closeAllConnections();
            server.close(() => process.exit(0));
          });
      },
      // Nobody can reach them while the control plane refuses this host: keep their memory.
      onRefused: () => {
        for (const r of manager.list().filter((x) => x.status === "running"))
          manager
            .pause(r.id)
            .catch((err: unknown) =>
              log.error("pausing a sandbox failed", { sandboxId: r.id, error: String(err) }),
            );
      },
    });
    const serving = link.serving;
    if (serving) listener.useCredentials(serving);
  }
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(Number(m[2]), m[1], () => resolve());
  });
  const addr = server.address();
  const port = typeof addr === "object" && addr ? addr.port : Number(m[2]);
  log.info("agent listening", {
    listen: `${m[1]}:${port}`,
    runtime: kind,
    sandboxes: manager.list().length,
  });
  process.stdout.write(`agent listening on ${m[1]}:${port}\n`);
  if (link) {
    const address = values["advertise-url"]
      ? normaliseBaseUrl(values["advertise-url"], "--advertise-url")
      : `https://${m[1].includes(":") && !m[1].startsWith("[") ? `[${m[1]}]` : m[1]}:${port}`;
    const facts = () =>
      hostFacts({
        address,
        runtime: kind,
        nestboxDir,
        memoryCapacityMb: positiveInt("memory-capacity-mb", values["memory-capacity-mb"]),
        diskReserveMb: positiveInt("disk-reserve-mb", values["disk-reserve-mb"]),
      });
    const usage = () => {
      const c = manager.committed();
      return { used_memory_mb: c.memoryMb, used_disk_mb: c.diskMb, sandbox_count: c.sandboxes };
    };
    link.start(facts, usage).catch((err: unknown) => {
      log.error("the control plane did not accept this agent; exiting", {
        error: err instanceof Error ? err.message : String(err),
      });
      manager.stop();
      server.closeAllConnections();
      server.close(() => process.exit(1));
    });
  }
  let stopping = false;
  const stop = async (signal: string) => {
    // SIGINT and SIGTERM may both arrive (a terminal's Ctrl-C and a supervisor): stop once.
    if (stopping) return;
    stopping = true;
    if (values["pause-on-exit"]) {
      // All-in-one mode: Ctrl-C should leave no VM running; paused sandboxes are re-adopted and
      // resumable after the next start.
      const running = manager.list().filter((r) => r.status === "running");
      log.info("shutting down, pausing running sandboxes", { signal, count: running.length });
      await Promise.all(
        running.map((r) =>
          manager.pause(r.id).catch((err: unknown) => {
            log.error("pause at shutdown failed; the sandbox keeps running", {
              sandboxId: r.id,
              error: err instanceof Error ? err.message : String(err),
            });
          }),
        ),
      );
    } else {
      // Sandboxes keep running: a restarted agent re-adopts them.
      log.info("shutting down, sandboxes keep running", { signal });
    }
    // Pooled sandboxes belong to nobody: a restart would discard them anyway.
    await manager.drainPool();
    manager.stop();
    void link?.stop();
    server.closeAllConnections();
    server.close(() => process.exit(0));
  };
  process.once("SIGTERM", () => void stop("SIGTERM"));
  process.once("SIGINT", () => void stop("SIGINT"));
  if (values["stop-when-stdin-closes"]) {
    process.stdin.once("end", () => void stop("stdin closed (the supervisor is gone)"));
    process.stdin.resume();
  }
}

/**
 * The control plane link when `--control-plane` is given, checked before anything starts: a
 * missing registration token or a bad URL is a usage error, not a failure minutes later.
 */
async function prepareControlPlaneLink(
  values: {
    "control-plane"?: string;
    "registration-token"?: string;
    "advertise-url"?: string;
    "heartbeat-interval"?: string;
    instance: string;
  },
  nestboxDir: string,
  listenHost: string,
  log: Logger,
): Promise<ControlPlaneLink | undefined> {
  const url = values["control-plane"];
  const token =
    values["registration-token"] ?? (process.env.NESTBOX_REGISTRATION_TOKEN || undefined);
  if (url === undefined) {
    if (
      values["registration-token"] !== undefined ||
      values["advertise-url"] !== undefined ||
      values["heartbeat-interval"] !== undefined
    )
      throw new UsageError(
        "--registration-token, --advertise-url and --heartbeat-interval need --control-plane",
      );
    return undefined;
  }
  const hb = values["heartbeat-interval"];
  const heartbeatS = hb === undefined ? undefined : Number(hb);
  if (
    heartbeatS !== undefined &&
    !(Number.isInteger(heartbeatS) && heartbeatS >= 1 && heartbeatS <= 300)
  )
    throw new UsageError(`--heartbeat-interval must be whole seconds from 1 to 300, got ${hb}`);
  try {
    if (values["advertise-url"] !== undefined)
      normaliseBaseUrl(values["advertise-url"], "--advertise-url");
    else if (/^(0\.0\.0\.0|::|\[::\]|)$/.test(listenHost))
      throw new ControlPlaneConfigError(
        `--listen ${listenHost} is not an address the control plane can reach: give --advertise-url`,
      );
    return await ControlPlaneLink.prepare({
      controlPlane: url,
      registrationToken: token,
      credentialsFile: credentialsPath(nestboxDir, values.instance),
      log,
      ...(heartbeatS === undefined ? {} : { heartbeatIntervalMs: heartbeatS * 1000 }),
    });
  } catch (err) {
    if (err instanceof ControlPlaneConfigError) throw new UsageError(err.message);
    throw err;
  }
}
