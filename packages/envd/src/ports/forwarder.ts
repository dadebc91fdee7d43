// Publishes services that listen only on the sandbox's loopback: for each such port a listener
// on the sandbox's external address (same port) whose connections are piped to the loopback
// service. The host's port proxy connects to the external address, so without this a dev
// server started with the default `--host 127.0.0.1` would be unreachable. E2B's envd does the
// same with one socat per port; here it is a net.Server per port inside envd, so no process is
// spawned per service and nothing is left behind when envd exits.
//
// Discovery polls /proc/net/tcp{,6} (see proc-net.ts) once a second: no inotify exists for
// socket tables, and a poll of two small files is cheap even under TCG emulation. A connection
// that finds its service gone triggers an immediate rescan so the listener closes at once.
import { createServer, type Server, type Socket, connect as tcpConnect } from "node:net";
import type { Logger } from "../log.js";
import { planForwards } from "./plan.js";
import { readTcpListeners, type TcpListener } from "./proc-net.js";

export interface PortForwarderOptions {
  /** The sandbox's external address: forwards listen here (the guest address, 169.254.0.21). */
  externalAddress: string;
  /** Ports never forwarded: envd's own. */
  excludePorts?: readonly number[];
  /** Time between scans. Default 1000 ms. */
  intervalMs?: number;
  log: Logger;
  /** Source of listening sockets; the default reads /proc/net/tcp{,6}. */
  readListeners?: () => Promise<TcpListener[]>;
}

interface Forward {
  port: number;
  target: string;
  server: Server;
  connections: Set<Socket>;
}

// Errors every proxied connection meets when a peer goes away abruptly; logged at info only.
const ROUTINE_ERRORS = new Set(["ECONNRESET", "EPIPE", "ECONNABORTED", "ETIMEDOUT"]);

function errorCode(error: unknown): string {
  return (error as NodeJS.ErrnoException | undefined)?.code ?? String(error);
}

export class PortForwarder {
  readonly externalAddress: string;
  private readonly exclude: ReadonlySet<number>;
  private readonly intervalMs: number;
  private readonly log: Logger;
  private readonly readListeners: () => Promise<TcpListener[]>;
  private readonly forwards = new Map<number, Forward>();
  /** Ports whose listen failed, with the error code, so a failure is logged once, not per scan. */
  private readonly failed = new Map<number, string>();
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private rescan = false;
  private scanErrorLogged = false;
  private stopped = false;

  constructor(opts: PortForwarderOptions) {
    this.externalAddress = opts.externalAddress;
    this.exclude = new Set(opts.excludePorts ?? []);
    this.intervalMs = opts.intervalMs ?? 1000;
    this.log = opts.log.child({ component: "port-forward" });
    this.readListeners = opts.readListeners ?? (() => readTcpListeners());
  }

  /** Starts the scan loop (first scan right away). */
  start(): void {
    this.stopped = false;
    this.schedule(0);
  }

  /** Stops scanning, closes every forward listener and drops their connections. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    await this.running;
    await Promise.all([...this.forwards.values()].map((f) => this.close(f, true)));
  }

  /** Ports forwarded right now, ascending. */
  forwardedPorts(): number[] {
    return [...this.forwards.keys()].sort((a, b) => a - b);
  }

  /**
   * One scan and reconcile. Concurrent calls share the scan in progress and, if they arrived
   * during it, one more after it (so the caller sees a scan that started after its call).
   */
  scanNow(): Promise<void> {
    if (this.running) {
      this.rescan = true;
      return this.running;
    }
    this.running = (async () => {
      try {
        do {
          this.rescan = false;
          await this.reconcile();
        } while (this.rescan && !this.stopped);
      } finally {
        this.running = undefined;
      }
    })();
    return this.running;
  }

  private schedule(delayMs: number): void {
    if (this.stopped) return;
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.scanNow().then(
        () => this.schedule(this.intervalMs),
        (error: unknown) => {
          this.log.error("port scan failed", { error: String(error) });
          this.schedule(this.intervalMs);
        },
      );
    }, delayMs);
    // The scan alone must not keep envd (or a test) alive.
    this.timer.unref();
  }

  private async reconcile(): Promise<void> {
    let listeners: TcpListener[];
    try {
      listeners = await this.readListeners();
      this.scanErrorLogged = false;
    } catch (error) {
      // Keep the current forwards: a failed read says nothing about the services.
      if (!this.scanErrorLogged) {
        this.log.warn("cannot read the socket tables; forwards unchanged", {
          error: String(error),
        });
        this.scanErrorLogged = true;
      }
      return;
    }
    if (this.stopped) return;
    const plan = planForwards({
      listeners,
      externalAddress: this.externalAddress,
      owned: new Set(this.forwards.keys()),
      exclude: this.exclude,
    });
    for (const f of [...this.forwards.values()]) {
      if (plan.get(f.port) !== f.target) {
        await this.close(f, false);
        this.log.info("port forward closed", { port: f.port, reason: "service gone" });
      }
    }
    for (const port of this.failed.keys()) {
      if (!plan.has(port)) this.failed.delete(port);
    }
    for (const [port, target] of plan) {
      if (this.stopped) return;
      if (!this.forwards.has(port)) await this.open(port, target);
    }
  }

  private async open(port: number, target: string): Promise<void> {
    const forward: Forward = {
      port,
      target,
      server: createServer({ allowHalfOpen: true }, (client) => this.pipe(forward, client)),
      connections: new Set(),
    };
    try {
      await new Promise<void>((resolve, reject) => {
        forward.server.once("error", reject);
        // exclusive: never share the port with another process's listener via a cluster master.
        forward.server.listen({ port, host: this.externalAddress, exclusive: true }, () => {
          forward.server.off("error", reject);
          resolve();
        });
      });
    } catch (error) {
      // EADDRINUSE: something bound the port on the external or wildcard address between the
      // scan and this listen; the next scan sees that listener and leaves the port alone.
      const code = errorCode(error);
      if (this.failed.get(port) !== code) {
        this.log.warn("cannot forward port", { port, address: this.externalAddress, code });
        this.failed.set(port, code);
      }
      return;
    }
    this.failed.delete(port);
    forward.server.on("error", (error) => {
      this.log.error("port forward listener failed", { port, error: String(error) });
    });
    if (this.stopped) {
      forward.server.close();
      return;
    }
    this.forwards.set(port, forward);
    this.log.info("port forwarded", { port, from: this.externalAddress, to: target });
  }

  private close(f: Forward, dropConnections: boolean): Promise<void> {
    this.forwards.delete(f.port);
    if (dropConnections) for (const c of f.connections) c.destroy();
    // Open connections outlive the listener: the service that served them may still be
    // finishing a response (it is gone for new connections only).
    return new Promise((resolve) => f.server.close(() => resolve()));
  }

  private pipe(f: Forward, client: Socket): void {
    const upstream = tcpConnect({ host: f.target, port: f.port, allowHalfOpen: true });
    f.connections.add(client);
    let connected = false;
    upstream.once("connect", () => {
      connected = true;
    });
    // pipe() pauses the reader while the writer is full (backpressure) and ends the writer when
    // the reader ends, which, with allowHalfOpen on both sockets, forwards a FIN each way on its
    // own; each socket is destroyed once both of its directions are done.
    client.pipe(upstream);
    upstream.pipe(client);
    const report = (side: "client" | "service", error: Error) => {
      const code = errorCode(error);
      const fields = { port: f.port, side, code, error: error.message };
      if (ROUTINE_ERRORS.has(code)) this.log.info("forwarded connection reset", fields);
      else this.log.warn("forwarded connection failed", fields);
    };
    client.on("error", (error) => {
      report("client", error);
      upstream.destroy();
    });
    upstream.on("error", (error) => {
      if (!connected) {
        // The service is gone (or not accepting): refuse the client as the service would,
        // and look again now rather than leave the dead forward up for another interval.
        this.log.warn("forwarded port refused the connection", {
          port: f.port,
          code: errorCode(error),
        });
        client.resetAndDestroy();
        void this.scanNow().catch((e: unknown) =>
          this.log.error("port scan failed", { error: String(e) }),
        );
        return;
      }
      report("service", error);
      client.resetAndDestroy();
    });
    client.once("close", () => {
      f.connections.delete(client);
      upstream.destroy();
    });
  }
}
