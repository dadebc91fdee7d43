import { type ChildProcess, spawn } from "node:child_process";
import type { Readable } from "node:stream";
import { Code, ConnectError } from "@connectrpc/connect";
import * as pty from "node-pty";
import type { Logger } from "../log.js";
import { EventQueue } from "./event-queue.js";
import { type ExitStatus, exitStatus } from "./exit-status.js";

/** What a stream subscriber receives, before protobuf wrapping. */
export type OutputEvent =
  | { kind: "data"; stream: "stdout" | "stderr" | "pty"; data: Uint8Array }
  | { kind: "end"; status: ExitStatus }
  | { kind: "keepalive" };

export interface ProcessSpec {
  file: string;
  args: string[];
  env: Record<string, string>;
  cwd: string;
  uid?: number;
  gid?: number;
  pty?: { cols: number; rows: number };
  stdin: boolean;
}

/** The config as the client sent it: List reports it back unchanged. */
export interface RequestedConfig {
  cmd: string;
  args: string[];
  envs: Record<string, string>;
  cwd?: string;
}

const PIPE_CHUNK = 32 * 1024;
const PTY_CHUNK = 16 * 1024;
/** Stop reading the child's output while any subscriber has this much unread. */
const HIGH_WATER = 4 * 1024 * 1024;
const LOW_WATER = 512 * 1024;
/** After exit, how long to wait for output still in the pipes (background children may hold them). */
const PIPE_CLOSE_GRACE_MS = 200;

/**
 * A child process envd started. It outlives the RPC stream that started it; streams subscribe
 * to its live output and each gets exactly one `end`.
 */
export class ManagedProcess {
  readonly pid: number;
  private readonly subscribers = new Set<EventQueue<OutputEvent>>();
  private readonly child: ChildProcess | undefined;
  private readonly term: pty.IPty | undefined;
  private paused = false;
  private endStatus: ExitStatus | undefined;
  readonly done: Promise<ExitStatus>;
  private resolveDone!: (s: ExitStatus) => void;

  private constructor(
    readonly config: RequestedConfig,
    readonly tag: string | undefined,
    spec: ProcessSpec,
    private readonly log: Logger,
  ) {
    this.done = new Promise((r) => {
      this.resolveDone = r;
    });
    if (spec.pty) {
      this.term = pty.spawn(spec.file, spec.args, {
        name: spec.env.TERM ?? "xterm-256color",
        cols: spec.pty.cols,
        rows: spec.pty.rows,
        cwd: spec.cwd,
        env: spec.env,
        encoding: null,
        ...(spec.uid !== undefined ? { uid: spec.uid } : {}),
        ...(spec.gid !== undefined ? { gid: spec.gid } : {}),
      });
      this.pid = this.term.pid;
      this.term.onData((d: string | Buffer) => {
        this.emitData("pty", typeof d === "string" ? Buffer.from(d) : d, PTY_CHUNK);
      });
      this.term.onExit(({ exitCode, signal }) => this.finish(exitStatus(exitCode, signal ?? null)));
    } else {
      const child = spawn(spec.file, spec.args, {
        cwd: spec.cwd,
        env: spec.env,
        // Own session and process group, so a signal reaches the whole command tree.
        detached: true,
        stdio: [spec.stdin ? "pipe" : "ignore", "pipe", "pipe"],
        ...(spec.uid !== undefined ? { uid: spec.uid } : {}),
        ...(spec.gid !== undefined ? { gid: spec.gid } : {}),
      });
      if (child.pid === undefined) {
        // spawn reports failures asynchronously; without a pid there is no process to track.
        child.on("error", () => {});
        throw new ConnectError(`failed to start ${spec.file}`, Code.Internal);
      }
      this.child = child;
      this.pid = child.pid;
      child.stdin?.on("error", (err) =>
        this.log.warn("stdin error", { pid: this.pid, err: err.message }),
      );
      this.pipeOutput(child.stdout, "stdout");
      this.pipeOutput(child.stderr, "stderr");
      this.watchPipeExit(child);
    }
  }

  static start(config: RequestedConfig, tag: string | undefined, spec: ProcessSpec, log: Logger) {
    return new ManagedProcess(config, tag, spec, log);
  }

  get isPty(): boolean {
    return this.term !== undefined;
  }

  get ended(): boolean {
    return this.endStatus !== undefined;
  }

  /** A live view of the output from now on, ending with the `end` event. */
  subscribe(): EventQueue<OutputEvent> {
    const q = new EventQueue<OutputEvent>(() => this.maybeResume());
    if (this.endStatus) {
      q.push({ kind: "end", status: this.endStatus });
      q.close();
      return q;
    }
    this.subscribers.add(q);
    return q;
  }

  unsubscribe(q: EventQueue<OutputEvent>): void {
    this.subscribers.delete(q);
    this.maybeResume();
  }

  async writeStdin(data: Uint8Array): Promise<void> {
    if (this.term)
      throw new ConnectError("process has a PTY; send pty input", Code.FailedPrecondition);
    const stdin = this.child?.stdin;
    if (!stdin || stdin.destroyed || stdin.writableEnded) {
      throw new ConnectError("stdin is not open for this process", Code.FailedPrecondition);
    }
    await new Promise<void>((resolve, reject) => {
      stdin.write(data, (err) => (err ? reject(err) : resolve()));
    }).catch((err: unknown) => {
      throw new ConnectError(`writing stdin: ${String(err)}`, Code.FailedPrecondition);
    });
  }

  writePty(data: Uint8Array): void {
    if (!this.term) throw new ConnectError("process has no PTY", Code.FailedPrecondition);
    this.term.write(Buffer.from(data));
  }

  closeStdin(): void {
    if (this.term) {
      throw new ConnectError(
        "process has a PTY; send Ctrl-D (0x04) as input instead",
        Code.FailedPrecondition,
      );
    }
    const stdin = this.child?.stdin;
    if (!stdin)
      throw new ConnectError("stdin was not enabled for this process", Code.FailedPrecondition);
    stdin.end();
  }

  resize(cols: number, rows: number): void {
    if (!this.term) throw new ConnectError("process has no PTY", Code.FailedPrecondition);
    if (cols < 1 || rows < 1 || cols > 10_000 || rows > 10_000) {
      throw new ConnectError("pty size must be 1-10000 columns and rows", Code.InvalidArgument);
    }
    this.term.resize(cols, rows);
  }

  /** Signals the process group (the command and what it spawned), else the process alone. */
  signal(sig: NodeJS.Signals): void {
    try {
      process.kill(-this.pid, sig);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ESRCH") throw err;
      try {
        process.kill(this.pid, sig);
      } catch (err2) {
        // ESRCH: it exited in between, which is what the caller wanted.
        if ((err2 as NodeJS.ErrnoException).code !== "ESRCH") throw err2;
      }
    }
  }

  private pipeOutput(stream: Readable | null, name: "stdout" | "stderr"): void {
    if (!stream) return;
    stream.on("data", (d: Buffer) => this.emitData(name, d, PIPE_CHUNK));
    stream.on("error", (err) =>
      this.log.warn("output stream error", { pid: this.pid, stream: name, err: err.message }),
    );
  }

  private watchPipeExit(child: ChildProcess): void {
    child.once("exit", (code, signal) => {
      const status = exitStatus(code, signal);
      const streams = [child.stdout, child.stderr].filter(
        (s): s is Readable => s !== null && !s.readableEnded,
      );
      if (streams.length === 0) {
        this.finish(status);
        return;
      }
      let open = streams.length;
      const timer = setTimeout(() => {
        // A background child still holds the pipe: stop waiting, as E2B's envd does.
        for (const s of streams) s.destroy();
        this.finish(status);
      }, PIPE_CLOSE_GRACE_MS);
      for (const s of streams) {
        s.once("close", () => {
          open -= 1;
          if (open === 0) {
            clearTimeout(timer);
            this.finish(status);
          }
        });
      }
    });
  }

  private emitData(stream: "stdout" | "stderr" | "pty", data: Buffer, chunk: number): void {
    for (let off = 0; off < data.length; off += chunk) {
      const part = data.subarray(off, Math.min(off + chunk, data.length));
      for (const q of this.subscribers) q.push({ kind: "data", stream, data: part }, part.length);
    }
    for (const q of this.subscribers) {
      if (q.bytes > HIGH_WATER) {
        this.setPaused(true);
        break;
      }
    }
  }

  private maybeResume(): void {
    if (!this.paused) return;
    for (const q of this.subscribers) if (q.bytes > LOW_WATER) return;
    this.setPaused(false);
  }

  private setPaused(paused: boolean): void {
    if (this.paused === paused) return;
    this.paused = paused;
    if (this.term) {
      if (paused) this.term.pause();
      else this.term.resume();
    } else {
      for (const s of [this.child?.stdout, this.child?.stderr]) {
        if (paused) s?.pause();
        else s?.resume();
      }
    }
  }

  private finish(status: ExitStatus): void {
    if (this.endStatus) return;
    this.endStatus = status;
    this.paused = false;
    for (const q of this.subscribers) {
      q.push({ kind: "end", status });
      q.close();
    }
    this.subscribers.clear();
    this.resolveDone(status);
  }
}
