import { Code, ConnectError } from "@connectrpc/connect";
import { z } from "@hono/zod-openapi";
import type { ExecStreamResponse } from "@nestbox/proto/hostagent";
import {
  ArgsSchema,
  CmdSchema,
  CwdSchema,
  EnvsSchema,
  resolveProcess,
  UserSchema,
} from "./command-common.js";
import { Base64Data, InputPump, type WsContext, type WsSession } from "./ws-session.js";

/**
 * WebSocket command streams.
 *
 * `GET /v1/sandboxes/{id}/exec/stream` — client: `{"type":"start","cmd","args"?,"envs"?,"cwd"?,
 * "user"?,"timeout_sec"?}` (no time limit unless timeout_sec is given), then `{"type":"stdin",
 * "data":<base64>,"eof"?:true}` and `{"type":"kill"}`. Server: `{"type":"start","pid"}`,
 * `{"type":"stdout"|"stderr","data":<base64>}`, `{"type":"exit","exit_code"}` (then a normal
 * close), `{"type":"error","code","message"}`. Closing the socket before the exit frame kills the
 * command (SIGKILL to its process group): a stream's command never outlives its client.
 *
 * `GET /v1/sandboxes/{id}/processes/{selector}/stream` — attaches to a running process (pid or
 * tag): the same server frames, output produced after attaching only; `stdin` and `kill` work as
 * above. Closing the socket detaches and leaves the process running.
 */

const StartMessage = z
  .object({
    type: z.literal("start"),
    cmd: CmdSchema,
    args: ArgsSchema,
    envs: EnvsSchema,
    cwd: CwdSchema,
    user: UserSchema,
    timeout_sec: z.number().int().min(1).max(86400).optional(),
  })
  .strict();

const ControlMessage = z.discriminatedUnion("type", [
  z
    .object({
      type: z.literal("stdin"),
      data: Base64Data.default(""),
      eof: z.boolean().default(false),
    })
    .strict(),
  z.object({ type: z.literal("kill") }).strict(),
]);

/** How long a client has to send `start` after the socket opened. */
const START_TIMEOUT_MS = 30_000;

/** Forwards agent stream events as frames; resolves with the exit code, if the stream had one. */
async function pumpOutput(
  events: AsyncIterable<ExecStreamResponse>,
  session: WsSession,
  onStart: (pid: number) => void,
): Promise<number | undefined> {
  for await (const ev of events) {
    const e = ev.event;
    if (e.case === "start") {
      onStart(e.value.pid);
      await session.send({ type: "start", pid: e.value.pid });
    } else if (e.case === "data") {
      const o = e.value.output;
      if (o.case === "stdout" || o.case === "stderr")
        await session.send({ type: o.case, data: Buffer.from(o.value).toString("base64") });
    } else if (e.case === "end") return e.value.exitCode;
  }
  return undefined;
}

/** Serves stdin and kill frames for `pid` until the socket closes or `done` aborts. */
async function serveControl(
  ctx: WsContext,
  pid: Promise<number>,
  done: AbortSignal,
): Promise<void> {
  const { session, agent, sandboxId } = ctx;
  const pump = new InputPump(
    async (data, eof) => {
      await agent.sendProcessInput({ sandboxId, pid: await pid, data, closeStdin: eof });
    },
    (err) =>
      void session.error(
        "input_failed",
        `stdin: ${err instanceof Error ? err.message : String(err)}`,
      ),
  );
  while (!done.aborted) {
    const msg = await session.next(ControlMessage);
    if (!msg || done.aborted) return;
    if (msg.type === "stdin") {
      await pump.write(Buffer.from(msg.data, "base64"), msg.eof).catch((err: unknown) => {
        void session.error(
          "input_failed",
          `stdin: ${err instanceof Error ? err.message : String(err)}`,
        );
      });
    } else {
      await agent
        .killProcess({ sandboxId, pid: await pid, signal: "SIGKILL" })
        .catch((err: unknown) => {
          // The process may have just exited on its own; the exit frame follows either way.
          if (!(err instanceof ConnectError && err.code === Code.NotFound))
            void session.error(
              "kill_failed",
              `kill: ${err instanceof Error ? err.message : String(err)}`,
            );
        });
    }
  }
}

export async function execStreamSession(ctx: WsContext): Promise<void> {
  const { session, agent, sandboxId } = ctx;
  const start = await session.next(StartMessage, START_TIMEOUT_MS);
  if (!start) {
    await session.error("invalid_message", "expected a start message");
    session.close(1008, "no start");
    return;
  }
  const stream = new AbortController();
  let pid: number | undefined;
  let resolvePid!: (pid: number) => void;
  const pidKnown = new Promise<number>((r) => {
    resolvePid = r;
  });
  let exited = false;
  const killOrphan = async () => {
    if (exited || pid === undefined) return;
    await agent.killProcess({ sandboxId, pid, signal: "SIGKILL" }).catch((err: unknown) => {
      if (!(err instanceof ConnectError && err.code === Code.NotFound))
        console.warn(
          `[server] exec stream: could not kill pid ${pid} in ${sandboxId} after its client left:`,
          err,
        );
    });
  };
  // The client left: the command goes too (and the agent stream after it).
  session.closed.addEventListener("abort", () => void killOrphan().finally(() => stream.abort()), {
    once: true,
  });

  const control = serveControl(ctx, pidKnown, stream.signal);
  try {
    const events = agent.execStream(
      {
        sandboxId,
        cmd: start.cmd,
        args: start.args ?? [],
        envs: start.envs ?? {},
        cwd: start.cwd ?? "",
        user: start.user ?? "",
        stdin: true,
        timeoutSec: start.timeout_sec ?? 0,
        noTimeout: start.timeout_sec === undefined,
      },
      { signal: stream.signal },
    );
    const code = await pumpOutput(events, session, (p) => {
      pid = p;
      resolvePid(p);
      if (!session.open) void killOrphan();
    });
    exited = true;
    if (code === undefined)
      throw new ConnectError("the stream ended without an exit status", Code.Internal);
    await session.send({ type: "exit", exit_code: code });
    session.close(1000, "exited");
  } catch (err) {
    exited = exited || pid === undefined;
    if (err instanceof ConnectError && err.code === Code.DeadlineExceeded) {
      await session.error(
        "timeout",
        `the command ran out of its ${start.timeout_sec} s and was killed`,
      );
      session.close(1000, "timeout");
    } else if (!session.closed.aborted) {
      await killOrphan();
      await session.fail(err, "command");
    }
  } finally {
    stream.abort();
    await control.catch((err: unknown) => console.warn("[server] exec stream control:", err));
    await ctx.deps.sandboxes
      .touch(sandboxId)
      .catch((err: unknown) => console.warn(`[server] touch ${sandboxId}:`, err));
  }
}

export async function processStreamSession(ctx: WsContext): Promise<void> {
  const { session, agent, sandboxId } = ctx;
  const selector = ctx.params.selector ?? "";
  const stream = new AbortController();
  session.closed.addEventListener("abort", () => stream.abort(), { once: true });
  let control: Promise<void> | undefined;
  try {
    const { pid } = await resolveProcess(agent, sandboxId, selector);
    control = serveControl(ctx, Promise.resolve(pid), stream.signal);
    const code = await pumpOutput(
      agent.connectProcess({ sandboxId, pid }, { signal: stream.signal }),
      session,
      () => {},
    );
    if (code === undefined)
      throw new ConnectError("the stream ended without an exit status", Code.Internal);
    await session.send({ type: "exit", exit_code: code });
    session.close(1000, "exited");
  } catch (err) {
    if (!session.closed.aborted) await session.fail(err, `process ${selector}`);
  } finally {
    stream.abort();
    await control?.catch((err: unknown) => console.warn("[server] process stream control:", err));
  }
}
