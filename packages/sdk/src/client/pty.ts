import type WebSocket from "ws";
import { NestboxApiError } from "./errors.js";
import { seg, type Transport } from "./http.js";
import { b64, frameError, openSocket, parseFrame, sendFrame, str } from "./websocket.js";

export interface PtySize {
  cols: number;
  rows: number;
}

export interface PtyStartOptions extends PtySize {
  /** Default: the user's login shell. */
  cmd?: string;
  args?: string[];
  envs?: Record<string, string>;
  cwd?: string;
  user?: string;
  /** Name to reconnect by (default `pty-<8 hex>`). */
  tag?: string;
}

export interface PtyHandlers {
  onData(data: Buffer): void;
  /** A non-fatal problem the server reported (e.g. a resize that failed). */
  onError?(err: NestboxApiError): void;
  signal?: AbortSignal;
}

/**
 * An interactive terminal in a sandbox. It keeps running when the session is closed without
 * `kill()`; `NestboxClient.ptyConnect(id, tag)` attaches to it again.
 */
export class PtySession {
  /** Resolves with the terminal's exit code; rejects if the session ends without one. */
  readonly exitCode: Promise<number>;
  pid = 0;
  tag = "";
  private readonly started: Promise<void>;

  constructor(
    private readonly ws: WebSocket,
    handlers: PtyHandlers,
  ) {
    let resolveStarted!: () => void;
    let rejectStarted!: (err: unknown) => void;
    this.started = new Promise((res, rej) => {
      resolveStarted = res;
      rejectStarted = rej;
    });
    this.exitCode = new Promise<number>((resolve, reject) => {
      let lastError: NestboxApiError | undefined;
      ws.on("message", (data) => {
        const f = parseFrame(data);
        if (!f) return;
        if (f.type === "started") {
          this.pid = Number(f.pid);
          this.tag = str(f.tag);
          resolveStarted();
        } else if (f.type === "output") handlers.onData(b64(f.data));
        else if (f.type === "exit") resolve(Number(f.exit_code));
        else if (f.type === "error") {
          lastError = frameError(str(f.code), str(f.message));
          handlers.onError?.(lastError);
        }
      });
      ws.once("close", (code, reason) => {
        const err =
          lastError ??
          new NestboxApiError(
            0,
            "stream_closed",
            `the terminal session closed without an exit status (${code}${reason.length ? ` ${reason}` : ""})`,
          );
        rejectStarted(err);
        reject(err);
      });
      handlers.signal?.addEventListener("abort", () => ws.close(1000, "aborted"), { once: true });
    });
    // Whoever awaits only `ready()` must not see an unhandled rejection from the other one.
    this.exitCode.catch(() => {});
    this.started.catch(() => {});
  }

  /** Waits for the server's `started` frame (pid and tag known). */
  ready(): Promise<void> {
    return this.started;
  }

  write(data: Uint8Array | string): Promise<void> {
    return sendFrame(this.ws, { type: "input", data: Buffer.from(data).toString("base64") });
  }

  resize(size: PtySize): Promise<void> {
    return sendFrame(this.ws, { type: "resize", cols: size.cols, rows: size.rows });
  }

  /** SIGKILL to the terminal's process; `exitCode` resolves after. */
  kill(): Promise<void> {
    return sendFrame(this.ws, { type: "kill" });
  }

  /** Detaches; the terminal keeps running. */
  close(): void {
    this.ws.close(1000, "detached");
  }
}

/** Starts a terminal (`first` = a start frame) or attaches to one (a connect frame). */
export async function openPty(
  t: Transport,
  id: string,
  first: Record<string, unknown>,
  handlers: PtyHandlers,
): Promise<PtySession> {
  const ws = await openSocket(t, `/v1/sandboxes/${seg(id)}/pty`, handlers.signal);
  const session = new PtySession(ws, handlers);
  await sendFrame(ws, first);
  await session.ready();
  return session;
}
