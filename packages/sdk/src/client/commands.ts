import type { Transport } from "./http.js";
import type { ExecRequest, ExecResult, ProcessInfo, StartProcessRequest } from "./types.js";

export type RunOptions = Omit<ExecRequest, "cmd" | "args"> & { signal?: AbortSignal };

/** ExecResult with both streams as bytes, whatever encoding the API chose. */
export interface ExecOutput extends Omit<ExecResult, "stdout" | "stderr" | "encoding"> {
  stdout: Buffer;
  stderr: Buffer;
}

/** One-shot commands with collected output (streaming: NestboxClient.execStream). */
export class Commands {
  constructor(private readonly t: Transport) {}

  /** Runs `cmd args…` (no shell) to completion; the API's result as is (`encoding` says how). */
  run(id: string, cmd: string, args: string[] = [], opts: RunOptions = {}): Promise<ExecResult> {
    const { signal, ...rest } = opts;
    return this.t.call(
      this.t.api.POST("/v1/sandboxes/{id}/exec", {
        params: { path: { id } },
        body: { ...rest, cmd, args },
        signal,
      }),
    );
  }

  /** Like run, with stdout and stderr decoded to bytes. */
  async output(
    id: string,
    cmd: string,
    args: string[] = [],
    opts: RunOptions = {},
  ): Promise<ExecOutput> {
    const { stdout, stderr, encoding, ...rest } = await this.run(id, cmd, args, opts);
    const enc = encoding === "base64" ? "base64" : "utf8";
    return { ...rest, stdout: Buffer.from(stdout, enc), stderr: Buffer.from(stderr, enc) };
  }
}

/** Background processes: they outlive the request that started them. */
export class Processes {
  constructor(private readonly t: Transport) {}

  start(
    id: string,
    body: StartProcessRequest,
    signal?: AbortSignal,
  ): Promise<{ pid: number; tag: string }> {
    return this.t.call(
      this.t.api.POST("/v1/sandboxes/{id}/processes", {
        params: { path: { id } },
        body,
        signal,
      }),
    );
  }

  async list(id: string, signal?: AbortSignal): Promise<ProcessInfo[]> {
    const { processes } = await this.t.call(
      this.t.api.GET("/v1/sandboxes/{id}/processes", { params: { path: { id } }, signal }),
    );
    return processes;
  }

  /** `selector`: a pid or a tag. */
  async signal(
    id: string,
    selector: string | number,
    signal: "SIGTERM" | "SIGKILL" = "SIGTERM",
    abort?: AbortSignal,
  ): Promise<void> {
    await this.t.call(
      this.t.api.POST("/v1/sandboxes/{id}/processes/{selector}/signal", {
        params: { path: { id, selector: String(selector) } },
        body: { signal },
        signal: abort,
      }),
    );
  }

  /** Writes to the process's stdin (≤ 1 MiB a call); `close` sends EOF after it. */
  async sendStdin(
    id: string,
    selector: string | number,
    data: Uint8Array | string,
    opts: { close?: boolean; signal?: AbortSignal } = {},
  ): Promise<void> {
    await this.t.call(
      this.t.api.POST("/v1/sandboxes/{id}/processes/{selector}/stdin", {
        params: { path: { id, selector: String(selector) } },
        body: { data: Buffer.from(data).toString("base64"), close: opts.close ?? false },
        signal: opts.signal,
      }),
    );
  }
}
