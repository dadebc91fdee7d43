import type { MessageInitShape } from "@bufbuild/protobuf";
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import { type EntryInfo, FileType } from "@nestbox/proto/filesystem";
import type {
  ExecStreamResponseSchema,
  HostAgentService,
  PtyEventSchema,
} from "@nestbox/proto/hostagent";
import { type ProcessEvent, Signal } from "@nestbox/proto/process";
import { asUser } from "./envd/client.js";
import { invalid } from "./manager/errors.js";
import type { SandboxManager } from "./manager/manager.js";
import { guardStream, guard as guardWith, toConnectFromEnvd } from "./rpc-errors.js";

type Impl = ServiceImpl<typeof HostAgentService>;

function requireId(id: string): string {
  if (!id) throw invalid("sandbox_id is required");
  return id;
}

function requirePid(pid: number): number {
  if (!pid) throw invalid("pid is required");
  return pid;
}

/** envd's ProcessSelector for a pid (required). */
const byPid = (pid: number) => ({ selector: { case: "pid" as const, value: requirePid(pid) } });

function fileEntry(e: EntryInfo | undefined) {
  if (!e) return undefined;
  const type =
    e.type === FileType.DIRECTORY ? "dir" : e.type === FileType.SYMLINK ? "symlink" : "file";
  return {
    name: e.name,
    path: e.path,
    type,
    size: e.size,
    mode: e.mode,
    owner: e.owner,
    modifiedAtUnix: e.modifiedTime?.seconds ?? 0n,
    group: e.group,
    permissions: e.permissions,
    symlinkTarget: e.symlinkTarget ?? "",
  };
}

const DEFAULT_EXEC_TIMEOUT_SEC = 30;

function execTimeoutMs(timeoutSec: number): number {
  return (timeoutSec > 0 ? timeoutSec : DEFAULT_EXEC_TIMEOUT_SEC) * 1000;
}

/** envd's PTY events as the agent's PtyEvents, counting each as sandbox activity. */
async function* ptyEvents(
  events: ProcessStream,
  touch: () => void,
): AsyncGenerator<MessageInitShape<typeof PtyEventSchema>> {
  try {
    for await (const res of events) {
      touch();
      const ev = res.event?.event;
      if (ev?.case === "start") yield { event: { case: "start", value: { pid: ev.value.pid } } };
      else if (ev?.case === "data" && ev.value.output.case === "pty")
        yield { event: { case: "data", value: ev.value.output.value } };
      else if (ev?.case === "end")
        yield {
          event: {
            case: "end",
            value: { exitCode: ev.value.exitCode, error: ev.value.error ?? "" },
          },
        };
    }
  } catch (err) {
    throw toConnectFromEnvd(err);
  }
}

type ProcessStream = AsyncIterable<{ event?: ProcessEvent }>;

/**
 * envd's process events as the agent's ExecStream events (pipes only: start, stdout/stderr,
 * end), counting each as sandbox activity; errors leave as Connect codes.
 */
export async function* execEvents(
  events: ProcessStream,
  touch: () => void,
): AsyncGenerator<MessageInitShape<typeof ExecStreamResponseSchema>> {
  try {
    for await (const res of events) {
      touch();
      const ev = res.event?.event;
      if (ev?.case === "start") yield { event: { case: "start", value: { pid: ev.value.pid } } };
      else if (
        ev?.case === "data" &&
        (ev.value.output.case === "stdout" || ev.value.output.case === "stderr")
      ) {
        const output = { case: ev.value.output.case, value: ev.value.output.value };
        yield { event: { case: "data", value: { output } } };
      } else if (ev?.case === "end") {
        yield {
          event: {
            case: "end",
            value: { exitCode: ev.value.exitCode, error: ev.value.error ?? "" },
          },
        };
      }
    }
  } catch (err) {
    throw toConnectFromEnvd(err);
  }
}

/**
 * Commands, background processes, terminals and filesystem operations, passed through to envd.
 */
export function processAndFileRpcs(
  m: SandboxManager,
): Pick<
  Impl,
  | "exec"
  | "execStream"
  | "startProcess"
  | "listProcesses"
  | "killProcess"
  | "connectProcess"
  | "sendProcessInput"
  | "startPty"
  | "resizePty"
  | "listDir"
  | "makeDir"
  | "removePath"
  | "movePath"
  | "statPath"
  | "connectPty"
> {
  const guard = <T>(fn: () => Promise<T>) => guardWith(fn, toConnectFromEnvd);
  // Streams too: `m.envd()` refuses (not found, not running) before the first event.
  const stream = <T>(gen: () => AsyncIterable<T>) => guardStream(gen, toConnectFromEnvd);
  return {
    exec: (req) =>
      guard(async () => {
        const envd = m.envd(requireId(req.sandboxId));
        if (!req.cmd) throw invalid("cmd is required");
        const timeoutMs = execTimeoutMs(req.timeoutSec);
        const stdout: Buffer[] = [];
        const stderr: Buffer[] = [];
        let exitCode: number | undefined;
        let killedAtDeadline = false;
        const startedAt = Date.now();
        const timedOut = () =>
          new ConnectError(
            `command timed out after ${timeoutMs / 1000} s and was killed`,
            Code.DeadlineExceeded,
          );
        try {
          for await (const res of envd.process.start(
            {
              process: {
                cmd: req.cmd,
                args: req.args,
                envs: req.envs,
                ...(req.cwd ? { cwd: req.cwd } : {}),
              },
              stdin: false,
            },
            { ...asUser(req.user), timeoutMs },
          )) {
            const ev = res.event?.event;
            if (ev?.case === "data") {
              if (ev.value.output.case === "stdout")
                stdout.push(Buffer.from(ev.value.output.value));
              if (ev.value.output.case === "stderr")
                stderr.push(Buffer.from(ev.value.output.value));
            } else if (ev?.case === "end") {
              exitCode = ev.value.exitCode;
              // envd kills a command at the request's deadline itself; under load its `end`
              // (killed) can arrive before the client's own deadline fires.
              if (!ev.value.exited && Date.now() - startedAt >= timeoutMs) killedAtDeadline = true;
            }
          }
        } catch (err) {
          const ce = ConnectError.from(err);
          if (ce.code === Code.DeadlineExceeded) throw timedOut();
          throw ce;
        } finally {
          m.touch(req.sandboxId);
        }
        // Under load the deadline's abort can end the stream quietly instead of throwing:
        // a stream without its end event is never a finished command.
        if (exitCode === undefined || killedAtDeadline) {
          if (killedAtDeadline || Date.now() - startedAt >= timeoutMs) throw timedOut();
          throw new ConnectError("the sandbox ended the command's stream early", Code.Unavailable);
        }
        return { stdout: Buffer.concat(stdout), stderr: Buffer.concat(stderr), exitCode };
      }),

    execStream: (req) =>
      stream(async function* () {
        const envd = m.envd(requireId(req.sandboxId));
        if (!req.cmd) throw invalid("cmd is required");
        const events = envd.process.start(
          {
            process: {
              cmd: req.cmd,
              args: req.args,
              envs: req.envs,
              ...(req.cwd ? { cwd: req.cwd } : {}),
            },
            stdin: req.stdin,
          },
          {
            ...asUser(req.user),
            ...(req.noTimeout ? {} : { timeoutMs: execTimeoutMs(req.timeoutSec) }),
          },
        );
        yield* execEvents(events, () => m.touch(req.sandboxId));
      }),

    startProcess: (req) =>
      guard(async () => {
        const envd = m.envd(requireId(req.sandboxId));
        if (!req.cmd) throw invalid("cmd is required");
        // The process outlives its stream: read the start event, then let the stream go.
        const abort = new AbortController();
        try {
          for await (const res of envd.process.start(
            {
              process: {
                cmd: req.cmd,
                args: req.args,
                envs: req.envs,
                ...(req.cwd ? { cwd: req.cwd } : {}),
              },
              stdin: true,
              ...(req.tag ? { tag: req.tag } : {}),
            },
            { ...asUser(req.user), signal: abort.signal },
          )) {
            if (res.event?.event.case === "start") return { pid: res.event.event.value.pid };
          }
        } finally {
          abort.abort();
        }
        throw new ConnectError("envd ended the stream before the process started", Code.Internal);
      }),

    listProcesses: (req) =>
      guard(async () => {
        const envd = m.envd(requireId(req.sandboxId));
        const { processes } = await envd.process.list({});
        return {
          processes: processes.map((p) => ({
            pid: p.pid,
            tag: p.tag ?? "",
            cmd: p.config?.cmd ?? "",
            args: p.config?.args ?? [],
            cwd: p.config?.cwd ?? "",
          })),
        };
      }),

    killProcess: (req) =>
      guard(async () => {
        const envd = m.envd(requireId(req.sandboxId));
        const signal =
          req.signal === "" || req.signal === "SIGKILL"
            ? Signal.SIGKILL
            : req.signal === "SIGTERM"
              ? Signal.SIGTERM
              : undefined;
        if (signal === undefined) throw invalid('signal must be "SIGKILL" or "SIGTERM"');
        await envd.process.sendSignal({
          process: byPid(req.pid),
          signal,
        });
        return {};
      }),

    connectProcess: (req) =>
      stream(async function* () {
        const envd = m.envd(requireId(req.sandboxId));
        const events = envd.process.connect({
          process: byPid(req.pid),
        });
        yield* execEvents(events, () => m.touch(req.sandboxId));
      }),

    sendProcessInput: (req) =>
      guard(async () => {
        const envd = m.envd(requireId(req.sandboxId));
        const selector = byPid(req.pid);
        if (req.data.length > 0) {
          await envd.process.sendInput({
            process: selector,
            input: {
              input: req.pty
                ? { case: "pty", value: req.data }
                : { case: "stdin", value: req.data },
            },
          });
        }
        if (req.closeStdin) await envd.process.closeStdin({ process: selector });
        return {};
      }),

    startPty: (req) =>
      stream(async function* () {
        const envd = m.envd(requireId(req.sandboxId));
        const events = envd.process.start(
          {
            process: {
              cmd: req.cmd || "/bin/bash",
              args: req.cmd ? req.args : ["-i", "-l"],
              envs: { TERM: "xterm-256color", LANG: "C.UTF-8", LC_ALL: "C.UTF-8", ...req.envs },
              ...(req.cwd ? { cwd: req.cwd } : {}),
            },
            pty: { size: { cols: req.cols || 80, rows: req.rows || 24 } },
            ...(req.tag ? { tag: req.tag } : {}),
          },
          asUser(req.user),
        );
        yield* ptyEvents(events, () => m.touch(req.sandboxId));
      }),

    connectPty: (req) =>
      stream(async function* () {
        const envd = m.envd(requireId(req.sandboxId));
        const events = envd.process.connect({
          process: byPid(req.pid),
        });
        yield* ptyEvents(events, () => m.touch(req.sandboxId));
      }),

    resizePty: (req) =>
      guard(async () => {
        const envd = m.envd(requireId(req.sandboxId));
        if (!req.cols || !req.rows) throw invalid("cols and rows are required");
        await envd.process.update({
          process: byPid(req.pid),
          pty: { size: { cols: req.cols, rows: req.rows } },
        });
        return {};
      }),

    listDir: (req) =>
      guard(async () => {
        const envd = m.envd(requireId(req.sandboxId));
        if (!req.path) throw invalid("path is required");
        const { entries } = await envd.filesystem.listDir({
          path: req.path,
          depth: req.depth || 1,
        });
        return { entries: entries.map((e) => fileEntry(e)).filter((e) => e !== undefined) };
      }),

    makeDir: (req) =>
      guard(async () => {
        const envd = m.envd(requireId(req.sandboxId));
        if (!req.path) throw invalid("path is required");
        const { entry } = await envd.filesystem.makeDir({ path: req.path });
        return { entry: fileEntry(entry) };
      }),

    removePath: (req) =>
      guard(async () => {
        const envd = m.envd(requireId(req.sandboxId));
        if (!req.path) throw invalid("path is required");
        await envd.filesystem.remove({ path: req.path });
        return {};
      }),

    statPath: (req) =>
      guard(async () => {
        const envd = m.envd(requireId(req.sandboxId));
        if (!req.path) throw invalid("path is required");
        const { entry } = await envd.filesystem.stat({ path: req.path });
        return { entry: fileEntry(entry) };
      }),

    movePath: (req) =>
      guard(async () => {
        const envd = m.envd(requireId(req.sandboxId));
        if (!req.source || !req.destination) throw invalid("source and destination are required");
        const { entry } = await envd.filesystem.move({
          source: req.source,
          destination: req.destination,
        });
        return { entry: fileEntry(entry) };
      }),
  };
}
