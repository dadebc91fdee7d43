import { z } from "@hono/zod-openapi";
import type { RawData, WebSocket } from "ws";
import { ApiError } from "../errors.js";
import type { AgentClient } from "../services/sandbox-access.js";
import { agentError } from "./command-common.js";
import type { AppDeps, Caller } from "./context.js";

/**
 * One WebSocket as a session: JSON frames out with backpressure, validated JSON frames in
 * through a bounded queue (the socket is paused while it is full), and a closed flag.
 */

/** Above this many unsent bytes, `send` waits until the socket has flushed. */
const SEND_HIGH_WATER = 1 << 20;
/** Received frames waiting for the session; beyond this the socket stops being read. */
const INBOX_HIGH_WATER = 64;

export interface WsContext {
  deps: AppDeps;
  caller: Caller;
  sandboxId: string;
  agent: AgentClient;
  /** Path parameters beyond the sandbox id (e.g. `selector`). */
  params: Record<string, string>;
  session: WsSession;
}

export class SessionClosed extends Error {
  override name = "SessionClosed";
}

type Inbound = { ok: true; value: unknown } | { ok: false; message: string };

export class WsSession {
  private readonly inbox: Inbound[] = [];
  private waiter: (() => void) | undefined;
  private paused = false;
  private ended = false;
  /** Aborted when the client goes away (or the server closes the socket). */
  readonly closed: AbortSignal;

  constructor(readonly ws: WebSocket) {
    const ac = new AbortController();
    this.closed = ac.signal;
    ws.on("message", (data: RawData, isBinary: boolean) => {
      if (isBinary) this.enqueue({ ok: false, message: "frames must be JSON text" });
      else {
        try {
          this.enqueue({ ok: true, value: JSON.parse(rawText(data)) });
        } catch (err) {
          this.enqueue({
            ok: false,
            message: `invalid JSON: ${err instanceof Error ? err.message : String(err)}`,
          });
        }
      }
    });
    ws.once("close", () => {
      this.ended = true;
      ac.abort(new SessionClosed("the WebSocket closed"));
      this.wake();
    });
  }

  get open(): boolean {
    return !this.ended && this.ws.readyState === this.ws.OPEN;
  }

  private enqueue(m: Inbound) {
    this.inbox.push(m);
    if (this.inbox.length >= INBOX_HIGH_WATER && !this.paused) {
      this.paused = true;
      this.ws.pause();
    }
    this.wake();
  }

  private wake() {
    const w = this.waiter;
    this.waiter = undefined;
    w?.();
  }

  /**
   * The next frame that passes `schema`; frames that do not are answered with an error frame and
   * skipped. Resolves undefined when the socket closes or `timeoutMs` passes.
   */
  async next<T extends z.ZodTypeAny>(
    schema: T,
    timeoutMs?: number,
  ): Promise<z.infer<T> | undefined> {
    const deadline = timeoutMs === undefined ? undefined : Date.now() + timeoutMs;
    for (;;) {
      const m = this.inbox.shift();
      if (m) {
        if (this.paused && this.inbox.length < INBOX_HIGH_WATER / 2) {
          this.paused = false;
          this.ws.resume();
        }
        if (!m.ok) {
          await this.error("invalid_message", m.message);
          continue;
        }
        const r = schema.safeParse(m.value);
        if (r.success) return r.data;
        await this.error("invalid_message", describeIssue(r.error));
        continue;
      }
      if (this.ended) return undefined;
      const left = deadline === undefined ? undefined : deadline - Date.now();
      if (left !== undefined && left <= 0) return undefined;
      await new Promise<void>((resolve) => {
        this.waiter = resolve;
        if (left !== undefined) setTimeout(() => this.wake(), left).unref();
      });
    }
  }

  /** Sends one JSON frame; waits while the client is slow so the caller stops reading too. */
  async send(frame: Record<string, unknown>): Promise<void> {
    if (!this.open) return;
    const data = JSON.stringify(frame);
    if (this.ws.bufferedAmount + data.length <= SEND_HIGH_WATER) {
      this.ws.send(data);
      return;
    }
    await new Promise<void>((resolve) => {
      this.ws.send(data, () => resolve());
      this.closed.addEventListener("abort", () => resolve(), { once: true });
    });
  }

  error(code: string, message: string, extra: Record<string, unknown> = {}): Promise<void> {
    return this.send({ type: "error", code, message, ...extra });
  }

  /** An error frame for `err` (mapped like the REST routes' errors), then the close. */
  async fail(err: unknown, what: string): Promise<void> {
    const e = err instanceof SessionClosed ? undefined : agentError(err, what);
    if (e) {
      if (e.status >= 500 && !(err instanceof ApiError)) console.warn(`[server] ws ${what}:`, err);
      await this.error(e.code, e.message);
    }
    this.close(e && e.status >= 500 ? 1011 : 1000, e?.code ?? "");
  }

  close(code = 1000, reason = ""): void {
    if (this.ws.readyState === this.ws.OPEN || this.ws.readyState === this.ws.CONNECTING)
      this.ws.close(code, reason.slice(0, 120));
  }
}

function rawText(data: RawData): string {
  if (Array.isArray(data)) return Buffer.concat(data).toString("utf8");
  if (data instanceof ArrayBuffer) return Buffer.from(data).toString("utf8");
  return data.toString("utf8");
}

export function describeIssue(error: z.ZodError): string {
  const issue = error.issues[0];
  if (!issue) return "invalid message";
  if (issue.code === "invalid_union" || (issue.path[0] === "type" && issue.path.length === 1))
    return `unknown or missing message type (${issue.message})`;
  const field = issue.path.join(".");
  return field ? `${field}: ${issue.message}` : issue.message;
}

/**
 * Writes input to a process in order, one agent call at a time, joining what arrives while a
 * call is in flight into the next one. `write` waits once too much is pending, which stops the
 * session from reading the socket.
 */
export class InputPump {
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  private eof = false;
  private running: Promise<void> | undefined;
  private failure: unknown;
  private static readonly HIGH_WATER = 1 << 20;

  /** `onError` hears the first failed delivery; later writes are refused with it. */
  constructor(
    private readonly deliver: (data: Buffer, eof: boolean) => Promise<void>,
    private readonly onError: (err: unknown) => void,
  ) {}

  async write(data: Buffer, eof = false): Promise<void> {
    if (this.failure !== undefined) throw this.failure;
    this.pending.push(data);
    this.pendingBytes += data.length;
    this.eof ||= eof;
    this.running ??= this.flush();
    if (this.pendingBytes > InputPump.HIGH_WATER) await this.running;
  }

  private async flush(): Promise<void> {
    try {
      while (this.pending.length > 0 || this.eof) {
        const data = Buffer.concat(this.pending);
        const eof = this.eof;
        this.pending = [];
        this.pendingBytes = 0;
        this.eof = false;
        await this.deliver(data, eof);
      }
    } catch (err) {
      this.failure = err;
      this.pending = [];
      this.onError(err);
    } finally {
      this.running = undefined;
    }
  }
}

export const Base64Data = z
  .string()
  .max(2 << 20)
  .regex(/^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/, "must be base64");
