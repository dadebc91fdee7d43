import { Readable } from "node:stream";
import type WebSocket from "ws";
import { NestboxApiError } from "./errors.js";
import type { UploadSource } from "./files.js";
import { seg, type Transport } from "./http.js";
import {
  b64,
  type Frame,
  frameError,
  openSocket,
  parseFrame,
  sendFrame,
  str,
} from "./websocket.js";

/** Input frames carry at most this much (the server takes ≤ 1 MiB decoded per frame). */
const STDIN_CHUNK = 256 * 1024;

export interface ExecStreamOptions {
  envs?: Record<string, string>;
  /** Absolute working directory (default: the user's home). */
  cwd?: string;
  user?: string;
  /** Kill the command after this many seconds (default: no limit). */
  timeoutSec?: number;
  onStart?(pid: number): void;
  onStdout?(data: Buffer): void;
  onStderr?(data: Buffer): void;
  /** Fed to the command's stdin, then EOF. Without it stdin is closed at once. */
  stdin?: UploadSource;
  /** Aborting kills the command (the server kills it when its stream's client leaves). */
  signal?: AbortSignal;
}

/** A running streamed command: its exit code, and a way to stop it. */
export interface ExecStreamHandle {
  /** Resolves with the exit code; rejects with NestboxApiError (e.g. `timeout`). */
  readonly exitCode: Promise<number>;
  /** SIGKILL to the command; `exitCode` still resolves with what it reports. */
  kill(): void;
}

async function* chunksOf(src: UploadSource): AsyncGenerator<Uint8Array> {
  if (typeof src === "string" || src instanceof Uint8Array) {
    yield typeof src === "string" ? Buffer.from(src) : src;
    return;
  }
  const it: AsyncIterable<unknown> =
    src instanceof ReadableStream ? Readable.fromWeb(src as never) : src;
  for await (const c of it) yield typeof c === "string" ? Buffer.from(c) : (c as Uint8Array);
}

async function feedStdin(ws: WebSocket, src: UploadSource | undefined): Promise<void> {
  if (src !== undefined) {
    for await (const chunk of chunksOf(src)) {
      for (let off = 0; off < chunk.length; off += STDIN_CHUNK) {
        const part = chunk.subarray(off, off + STDIN_CHUNK);
        await sendFrame(ws, { type: "stdin", data: Buffer.from(part).toString("base64") });
      }
    }
  }
  await sendFrame(ws, { type: "stdin", eof: true });
}

/**
 * Runs `cmd args…` over the exec-stream WebSocket, delivering output as it is produced.
 * Resolves once the socket is open and the start frame is sent.
 */
export async function startExecStream(
  t: Transport,
  id: string,
  cmd: string,
  args: string[],
  opts: ExecStreamOptions = {},
): Promise<ExecStreamHandle> {
  const ws = await openSocket(t, `/v1/sandboxes/${seg(id)}/exec/stream`, opts.signal);
  await sendFrame(ws, {
    type: "start",
    cmd,
    args,
    envs: opts.envs,
    cwd: opts.cwd,
    user: opts.user,
    timeout_sec: opts.timeoutSec,
  });
  const exitCode = new Promise<number>((resolve, reject) => {
    let lastError: NestboxApiError | undefined;
    let settled = false;
    const done = (fn: () => void) => {
      if (settled) return;
      settled = true;
      opts.signal?.removeEventListener("abort", onAbort);
      fn();
    };
    const onAbort = () => {
      ws.close(1000, "aborted");
      done(() => reject(opts.signal?.reason ?? new Error("aborted")));
    };
    opts.signal?.addEventListener("abort", onAbort, { once: true });

    ws.on("message", (data) => {
      const f: Frame | undefined = parseFrame(data);
      if (!f) return;
      switch (f.type) {
        case "start":
          opts.onStart?.(Number(f.pid));
          feedStdin(ws, opts.stdin).catch((err: unknown) => {
            // The command may have finished without reading all of its input: not an error.
            if (ws.readyState === ws.OPEN)
              lastError = new NestboxApiError(
                0,
                "stdin_failed",
                `stdin: ${err instanceof Error ? err.message : String(err)}`,
              );
          });
          break;
        case "stdout":
          opts.onStdout?.(b64(f.data));
          break;
        case "stderr":
          opts.onStderr?.(b64(f.data));
          break;
        case "exit":
          done(() => resolve(Number(f.exit_code)));
          break;
        case "error":
          lastError = frameError(str(f.code), str(f.message));
          break;
      }
    });
    ws.once("close", (code, reason) => {
      done(() =>
        reject(
          lastError ??
            new NestboxApiError(
              0,
              "stream_closed",
              `the exec stream closed without an exit status (${code}${reason.length ? ` ${reason}` : ""})`,
            ),
        ),
      );
    });
    ws.on("error", (err) => {
      lastError ??= new NestboxApiError(0, "stream_failed", `exec stream: ${err.message}`);
    });
  });
  return {
    exitCode,
    kill() {
      if (ws.readyState === ws.OPEN) void sendFrame(ws, { type: "kill" }).catch(() => ws.close());
    },
  };
}
