import type { MessageInitShape } from "@bufbuild/protobuf";
import { Code, ConnectError, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import {
  type Process,
  type ProcessEventSchema,
  type ProcessInput,
  Signal,
} from "@nestbox/proto/process";
import { parseBasicUser } from "../auth.js";
import { type EnvdContext, userFor } from "../context.js";
import { toConnectError } from "../errors.js";
import { buildEnv, resolveCwd, resolveExecutable, userArgv } from "./launch.js";
import { ManagedProcess, type OutputEvent } from "./managed-process.js";
import { ProcessRegistry } from "./registry.js";

type ProcessEventInit = MessageInitShape<typeof ProcessEventSchema>;

/** Seconds between keepalive events, from the E2B SDK's `Keepalive-Ping-Interval` header. */
function keepaliveMs(ctx: HandlerContext): number | undefined {
  const raw = ctx.requestHeader.get("keepalive-ping-interval");
  if (!raw) return undefined;
  const seconds = Number(raw);
  if (!Number.isFinite(seconds) || seconds <= 0) return undefined;
  return Math.max(100, seconds * 1000);
}

function toEvent(ev: OutputEvent): ProcessEventInit {
  switch (ev.kind) {
    case "data":
      return { event: { case: "data", value: { output: { case: ev.stream, value: ev.data } } } };
    case "keepalive":
      return { event: { case: "keepalive", value: {} } };
    case "end":
      return {
        event: {
          case: "end",
          value: {
            exitCode: ev.status.exitCode,
            exited: ev.status.exited,
            status: ev.status.status,
            ...(ev.status.error !== undefined ? { error: ev.status.error } : {}),
          },
        },
      };
  }
}

/**
 * Streams a process's events to one client: `start`, live output, keepalives, one `end`.
 * Dropping the stream only unsubscribes; the process keeps running.
 */
async function* streamEvents(
  p: ManagedProcess,
  ctx: HandlerContext,
): AsyncGenerator<{ event: ProcessEventInit }> {
  const queue = p.subscribe();
  const interval = keepaliveMs(ctx);
  const timer = interval
    ? setInterval(() => queue.push({ kind: "keepalive" }), interval)
    : undefined;
  try {
    yield { event: { event: { case: "start", value: { pid: p.pid } } } };
    for await (const ev of queue.drain(ctx.signal)) {
      yield { event: toEvent(ev) };
      if (ev.kind === "end") return;
    }
  } finally {
    if (timer) clearInterval(timer);
    p.unsubscribe(queue);
  }
}

export function createProcessService(
  ctx: EnvdContext,
  registry: ProcessRegistry = new ProcessRegistry(),
): ServiceImpl<typeof Process> {
  const log = ctx.log.child({ service: "process" });

  return {
    async list() {
      return {
        processes: registry.list().map((p) => ({
          pid: p.pid,
          config: p.config,
          ...(p.tag !== undefined ? { tag: p.tag } : {}),
        })),
      };
    },

    async *start(req, hctx) {
      const cfg = req.process;
      if (!cfg?.cmd) throw new ConnectError("process.cmd is required", Code.InvalidArgument);
      if (req.pty?.size && (req.pty.size.cols < 1 || req.pty.size.rows < 1)) {
        throw new ConnectError(
          "pty size must have at least 1 column and 1 row",
          Code.InvalidArgument,
        );
      }
      const user = userFor(ctx, parseBasicUser(hctx.requestHeader.get("authorization")));
      const env = buildEnv(user, ctx.state, cfg.envs);
      const cwd = resolveCwd(cfg.cwd, user, ctx.state);
      const file = resolveExecutable(cfg.cmd, env.PATH);
      const argv = userArgv(user, file, cfg.args);
      let p: ManagedProcess;
      try {
        p = ManagedProcess.start(
          {
            cmd: cfg.cmd,
            args: [...cfg.args],
            envs: { ...cfg.envs },
            ...(cfg.cwd !== undefined ? { cwd: cfg.cwd } : {}),
          },
          req.tag,
          {
            file: argv.file,
            args: argv.args,
            env,
            cwd,
            ...(argv.uid !== undefined ? { uid: argv.uid, gid: argv.gid } : {}),
            ...(req.pty
              ? { pty: { cols: req.pty.size?.cols || 80, rows: req.pty.size?.rows || 24 } }
              : {}),
            // Absent means true: clients older than envd 0.3.0 expect stdin open.
            stdin: req.stdin ?? true,
          },
          log,
        );
      } catch (err) {
        throw toConnectError(err, "starting process");
      }
      registry.add(p);
      log.info("process started", {
        pid: p.pid,
        cmd: cfg.cmd,
        user: user.name,
        pty: Boolean(req.pty),
        tag: req.tag,
      });

      // As in E2B's envd, a request deadline bounds the command itself, not only the stream.
      const deadline = hctx.timeoutMs();
      const killer =
        deadline !== undefined && deadline > 0
          ? setTimeout(() => {
              log.info("process deadline exceeded, killing", { pid: p.pid });
              p.signal("SIGKILL");
            }, deadline)
          : undefined;
      p.done.then(
        (s) => {
          if (killer) clearTimeout(killer);
          log.info("process ended", { pid: p.pid, status: s.status });
        },
        () => {},
      );
      yield* streamEvents(p, hctx);
    },

    async *connect(req, hctx) {
      const p = registry.get(req.process?.selector);
      yield* streamEvents(p, hctx);
    },

    async update(req) {
      const p = registry.get(req.process?.selector);
      const size = req.pty?.size;
      if (!size) throw new ConnectError("pty.size is required", Code.InvalidArgument);
      p.resize(size.cols, size.rows);
      return {};
    },

    async sendInput(req) {
      const p = registry.get(req.process?.selector);
      await writeInput(p, req.input);
      return {};
    },

    async streamInput(requests) {
      let p: ManagedProcess | undefined;
      for await (const msg of requests) {
        switch (msg.event.case) {
          case "start":
            p = registry.get(msg.event.value.process?.selector);
            break;
          case "data":
            if (!p)
              throw new ConnectError(
                "the first message must be start{process}",
                Code.InvalidArgument,
              );
            await writeInput(p, msg.event.value.input);
            break;
          case "keepalive":
            break;
          default:
            throw new ConnectError("empty stream input message", Code.InvalidArgument);
        }
      }
      return {};
    },

    async sendSignal(req) {
      const p = registry.get(req.process?.selector);
      switch (req.signal) {
        case Signal.SIGKILL:
          p.signal("SIGKILL");
          break;
        case Signal.SIGTERM:
          p.signal("SIGTERM");
          break;
        default:
          throw new ConnectError(
            "signal must be SIGNAL_SIGKILL or SIGNAL_SIGTERM",
            Code.InvalidArgument,
          );
      }
      return {};
    },

    async closeStdin(req) {
      registry.get(req.process?.selector).closeStdin();
      return {};
    },
  };
}

async function writeInput(p: ManagedProcess, input: ProcessInput | undefined): Promise<void> {
  switch (input?.input.case) {
    case "stdin":
      await p.writeStdin(input.input.value);
      return;
    case "pty":
      p.writePty(input.input.value);
      return;
    default:
      throw new ConnectError("input must be stdin or pty bytes", Code.InvalidArgument);
  }
}
