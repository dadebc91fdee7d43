// A small QMP (QEMU Machine Protocol) client over a unix socket. QMP is line-delimited JSON:
// a greeting, then replies to commands in order (matched here by `id` anyway) interleaved with
// asynchronous events. Written by hand because the protocol is tiny and every dependency ends
// up in the agent's trust base.
import { createConnection, type Socket } from "node:net";

export interface QmpEvent {
  event: string;
  data?: Record<string, unknown>;
  timestamp?: { seconds: number; microseconds: number };
}

/** QEMU answered a command with `{"error": {...}}`. */
export class QmpError extends Error {
  override readonly name = "QmpError";
  constructor(
    readonly command: string,
    /** QMP error class, e.g. `GenericError`, `CommandNotFound`, `DeviceNotActive`. */
    readonly errorClass: string,
    readonly desc: string,
  ) {
    super(`QMP ${command}: ${errorClass}: ${desc}`);
  }
}

/** The connection could not be made, was closed, or an answer did not come in time. */
export class QmpConnectionError extends Error {
  override readonly name = "QmpConnectionError";
  constructor(
    message: string,
    readonly reason: "connect" | "closed" | "timeout" | "protocol",
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** `query-migrate`'s answer, reduced to what callers look at. */
export interface MigrationInfo {
  status?: string;
  "error-desc"?: string;
  "total-time"?: number;
  ram?: { transferred?: number; total?: number; remaining?: number };
}

export interface QmpConnectOptions {
  /** Give up after this long (the socket may not exist yet while QEMU starts). Default 10 s. */
  timeoutMs?: number;
  /** Delay between attempts. Default 10 ms. */
  retryIntervalMs?: number;
  /** Checked between attempts: a reason to stop retrying (e.g. "QEMU exited"), or undefined. */
  abortCheck?: () => string | undefined;
}

interface Pending {
  command: string;
  resolve: (value: unknown) => void;
  reject: (error: Error) => void;
}

const MAX_BUFFERED_EVENTS = 1000;

export class QmpClient {
  private buffer = "";
  private nextId = 1;
  private readonly pending = new Map<string, Pending>();
  private readonly events: QmpEvent[] = [];
  private readonly eventWaiters: Array<() => void> = [];
  private closedError: QmpConnectionError | undefined;
  private greeting: ((value: unknown) => void) | undefined;

  private constructor(
    private readonly socket: Socket,
    readonly path: string,
  ) {
    socket.setEncoding("utf8");
    socket.on("data", (chunk: string) => this.onData(chunk));
    socket.on("error", (error) => this.onClose(error));
    socket.on("close", () => this.onClose());
  }

  /**
   * Connects (retrying while the socket is missing or refuses: QEMU creates it shortly after
   * start), reads the greeting and negotiates capabilities. Resolves in command mode.
   */
  static async connect(path: string, options: QmpConnectOptions = {}): Promise<QmpClient> {
    const timeoutMs = options.timeoutMs ?? 10_000;
    const interval = options.retryIntervalMs ?? 10;
    const deadline = Date.now() + timeoutMs;
    let lastError: unknown;
    for (;;) {
      const aborted = options.abortCheck?.();
      if (aborted) {
        throw new QmpConnectionError(`QMP ${path}: ${aborted}`, "connect", { cause: lastError });
      }
      try {
        const socket = await openSocket(path);
        const client = new QmpClient(socket, path);
        try {
          await client.handshake(Math.max(1_000, deadline - Date.now()));
        } catch (error) {
          client.close();
          throw error;
        }
        return client;
      } catch (error) {
        lastError = error;
        const code = (error as NodeJS.ErrnoException).code;
        const retryable = code === "ENOENT" || code === "ECONNREFUSED" || code === "EAGAIN";
        if (!retryable || Date.now() + interval > deadline) {
          if (error instanceof QmpConnectionError) throw error;
          throw new QmpConnectionError(
            `QMP ${path}: cannot connect within ${timeoutMs} ms: ${(error as Error).message}`,
            "connect",
            { cause: error },
          );
        }
      }
      await sleep(interval);
    }
  }

  private async handshake(timeoutMs: number): Promise<void> {
    const greeted = new Promise<unknown>((resolve) => {
      this.greeting = resolve;
    });
    await withTimeout(
      Promise.race([greeted, this.closedPromise()]),
      timeoutMs,
      () => new QmpConnectionError(`QMP ${this.path}: no greeting`, "timeout"),
    );
    await this.execute("qmp_capabilities", undefined, timeoutMs);
  }

  private closedPromise(): Promise<never> {
    return new Promise((_resolve, reject) => {
      const check = () => {
        if (this.closedError) reject(this.closedError);
        else this.socket.once("close", check);
      };
      check();
    });
  }

  get closed(): boolean {
    return this.closedError !== undefined;
  }

  /** Runs a command; rejects with {@link QmpError} for QEMU's errors. */
  execute<T = unknown>(
    command: string,
    args?: Record<string, unknown>,
    timeoutMs = 30_000,
  ): Promise<T> {
    if (this.closedError) return Promise.reject(this.closedError);
    const id = String(this.nextId++);
    const message = JSON.stringify(
      args ? { execute: command, arguments: args, id } : { execute: command, id },
    );
    const answer = new Promise<unknown>((resolve, reject) => {
      this.pending.set(id, { command, resolve, reject });
    });
    this.socket.write(`${message}\n`);
    return withTimeout(answer, timeoutMs, () => {
      this.pending.delete(id);
      return new QmpConnectionError(`QMP ${command}: no answer within ${timeoutMs} ms`, "timeout");
    }) as Promise<T>;
  }

  /**
   * Events in arrival order, from the moment of connecting; the iterator ends when the
   * connection closes. One consumer at a time (events are taken from a shared queue).
   */
  async *eventStream(): AsyncGenerator<QmpEvent> {
    for (;;) {
      const next = this.events.shift();
      if (next) {
        yield next;
        continue;
      }
      if (this.closedError) return;
      await new Promise<void>((resolve) => this.eventWaiters.push(resolve));
    }
  }

  /**
   * Resolves with the first (queued or future) event named `name` that `match` accepts, taking
   * it out of the queue; other events stay queued for {@link eventStream}.
   */
  waitForEvent(
    name: string,
    timeoutMs: number,
    match: (event: QmpEvent) => boolean = () => true,
  ): Promise<QmpEvent> {
    return new Promise<QmpEvent>((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      let done = false;
      const check = () => {
        if (done) return;
        const index = this.events.findIndex((event) => event.event === name && match(event));
        if (index >= 0) {
          clearTimeout(timer);
          const [event] = this.events.splice(index, 1);
          resolve(event as QmpEvent);
          return;
        }
        if (this.closedError) {
          clearTimeout(timer);
          reject(this.closedError);
          return;
        }
        this.eventWaiters.push(check);
      };
      timer = setTimeout(() => {
        done = true;
        const at = this.eventWaiters.indexOf(check);
        if (at >= 0) this.eventWaiters.splice(at, 1);
        reject(new QmpConnectionError(`QMP: no ${name} event within ${timeoutMs} ms`, "timeout"));
      }, timeoutMs);
      check();
    });
  }

  /**
   * Polls `query-migrate` until the migration (outgoing or incoming) completes; rejects with a
   * {@link QmpError} carrying QEMU's `error-desc` when it fails or is cancelled.
   */
  async waitForMigration(
    options: { timeoutMs?: number; intervalMs?: number } = {},
  ): Promise<MigrationInfo> {
    const timeoutMs = options.timeoutMs ?? 120_000;
    const deadline = Date.now() + timeoutMs;
    let interval = options.intervalMs ?? 5;
    for (;;) {
      const info = await this.execute<MigrationInfo>("query-migrate");
      switch (info.status) {
        case "completed":
          return info;
        case "failed":
        case "cancelled":
          throw new QmpError(
            "query-migrate",
            `Migration${info.status === "failed" ? "Failed" : "Cancelled"}`,
            info["error-desc"] ?? `migration ${info.status}`,
          );
        default:
          break;
      }
      if (Date.now() > deadline) {
        throw new QmpConnectionError(
          `migration not complete within ${timeoutMs} ms (status ${info.status ?? "none"})`,
          "timeout",
        );
      }
      await sleep(interval);
      // Short migrations finish in milliseconds; long ones should not be polled in a hot loop.
      interval = Math.min(interval * 2, 100);
    }
  }

  /** Closes the connection; pending commands reject. Safe to call more than once. */
  close(): void {
    this.socket.destroy();
    this.onClose();
  }

  private onData(chunk: string): void {
    this.buffer += chunk;
    for (;;) {
      const newline = this.buffer.indexOf("\n");
      if (newline < 0) break;
      const line = this.buffer.slice(0, newline).trim();
      this.buffer = this.buffer.slice(newline + 1);
      if (line.length > 0) this.onMessage(line);
    }
  }

  private onMessage(line: string): void {
    let message: Record<string, unknown>;
    try {
      message = JSON.parse(line) as Record<string, unknown>;
    } catch (error) {
      this.onClose(
        new QmpConnectionError(`QMP: unparsable line: ${line.slice(0, 200)}`, "protocol", {
          cause: error,
        }),
      );
      this.socket.destroy();
      return;
    }
    if ("QMP" in message) {
      this.greeting?.(message.QMP);
      this.greeting = undefined;
      return;
    }
    if (typeof message.event === "string") {
      if (this.events.length >= MAX_BUFFERED_EVENTS) this.events.shift();
      this.events.push(message as unknown as QmpEvent);
      for (const wake of this.eventWaiters.splice(0)) wake();
      return;
    }
    const id = typeof message.id === "string" ? message.id : undefined;
    const pending = id === undefined ? undefined : this.pending.get(id);
    if (!pending || id === undefined) return; // an answer to a command that already timed out
    this.pending.delete(id);
    if ("error" in message) {
      const error = (message.error ?? {}) as { class?: string; desc?: string };
      pending.reject(
        new QmpError(pending.command, error.class ?? "GenericError", error.desc ?? ""),
      );
    } else {
      pending.resolve(message.return);
    }
  }

  private onClose(cause?: Error): void {
    if (this.closedError) return;
    this.closedError =
      cause instanceof QmpConnectionError
        ? cause
        : new QmpConnectionError(
            `QMP ${this.path}: connection closed${cause ? `: ${cause.message}` : ""}`,
            "closed",
            { cause },
          );
    for (const pending of this.pending.values()) pending.reject(this.closedError);
    this.pending.clear();
    for (const wake of this.eventWaiters.splice(0)) wake();
  }
}

function openSocket(path: string): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = createConnection({ path });
    const onError = (error: Error) => {
      socket.destroy();
      reject(error);
    };
    socket.once("error", onError);
    socket.once("connect", () => {
      socket.off("error", onError);
      resolve(socket);
    });
  });
}

function withTimeout<T>(promise: Promise<T>, ms: number, onTimeout: () => Error): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(onTimeout()), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
