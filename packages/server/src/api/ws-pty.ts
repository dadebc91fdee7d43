import { Code, ConnectError } from "@connectrpc/connect";
import { z } from "@hono/zod-openapi";
import type { PtyEvent } from "@nestbox/proto/hostagent";
import { conflict } from "../errors.js";
import {
  ArgsSchema,
  CmdSchema,
  CwdSchema,
  EnvsSchema,
  newTag,
  resolveProcess,
  TagSchema,
  UserSchema,
} from "./command-common.js";
import { Base64Data, InputPump, type WsContext } from "./ws-session.js";

/**
 * `GET /v1/sandboxes/{id}/pty` — an interactive terminal.
 *
 * First client frame: `{"type":"start","cmd"?,"args"?,"cols","rows","envs"?,"cwd"?,"user"?,
 * "tag"?}` (default: the user's login shell, tag `pty-<8 hex>`) or `{"type":"connect","tag"}`
 * to re-attach to a live terminal. Either way the server answers `{"type":"started","pid","tag"}`
 * first, then `{"type":"output","data":<base64>}` and finally `{"type":"exit","exit_code"}`.
 * Client frames after that: `{"type":"input","data":<base64>}`, `{"type":"resize","cols","rows"}`,
 * `{"type":"kill"}`. The terminal keeps running when the socket closes (no output is kept while
 * nobody is attached); reconnect with its tag.
 */

const Size = { cols: z.number().int().min(1).max(1000), rows: z.number().int().min(1).max(1000) };

const FirstMessage = z.discriminatedUnion("type", [
  z
    .object({
      type: z.literal("start"),
      cmd: CmdSchema.optional(),
      args: ArgsSchema,
      envs: EnvsSchema,
      cwd: CwdSchema,
      user: UserSchema,
      tag: TagSchema.optional(),
      ...Size,
    })
    .strict(),
  z.object({ type: z.literal("connect"), tag: TagSchema }).strict(),
]);

const ControlMessage = z.discriminatedUnion("type", [
  z.object({ type: z.literal("input"), data: Base64Data }).strict(),
  z.object({ type: z.literal("resize"), ...Size }).strict(),
  z.object({ type: z.literal("kill") }).strict(),
]);

const FIRST_MESSAGE_TIMEOUT_MS = 30_000;

export async function ptySession(ctx: WsContext): Promise<void> {
  const { session, agent, sandboxId } = ctx;
  const first = await session.next(FirstMessage, FIRST_MESSAGE_TIMEOUT_MS);
  if (!first) {
    await session.error("invalid_message", "expected a start or connect message");
    session.close(1008, "no start");
    return;
  }
  const stream = new AbortController();
  session.closed.addEventListener("abort", () => stream.abort(), { once: true });
  let control: Promise<void> | undefined;
  let tag = first.tag ?? newTag("pty");
  try {
    let events: AsyncIterable<PtyEvent>;
    if (first.type === "start") {
      if (first.tag) {
        const { processes } = await agent.listProcesses({ sandboxId });
        if (processes.some((p) => p.tag === first.tag))
          throw conflict("conflict", `a running process already has tag ${first.tag}`);
      }
      events = agent.startPty(
        {
          sandboxId,
          cmd: first.cmd ?? "",
          args: first.args ?? [],
          cols: first.cols,
          rows: first.rows,
          envs: first.envs ?? {},
          cwd: first.cwd ?? "",
          user: first.user ?? "",
          tag,
        },
        { signal: stream.signal },
      );
    } else {
      const found = await resolveProcess(agent, sandboxId, first.tag);
      tag = found.tag ?? first.tag;
      events = agent.connectPty({ sandboxId, pid: found.pid }, { signal: stream.signal });
    }

    for await (const ev of events) {
      const e = ev.event;
      if (e.case === "start") {
        control ??= serveControl(ctx, e.value.pid, stream.signal);
        await session.send({ type: "started", pid: e.value.pid, tag });
      } else if (e.case === "data") {
        await session.send({ type: "output", data: Buffer.from(e.value).toString("base64") });
      } else if (e.case === "end") {
        await session.send({ type: "exit", exit_code: e.value.exitCode });
        session.close(1000, "exited");
        return;
      }
    }
    if (!session.closed.aborted)
      throw new ConnectError("the terminal's stream ended without an exit status", Code.Internal);
  } catch (err) {
    if (!session.closed.aborted) await session.fail(err, `terminal ${tag}`);
  } finally {
    stream.abort();
    await control?.catch((err: unknown) => console.warn("[server] pty control:", err));
    await ctx.deps.sandboxes
      .touch(sandboxId)
      .catch((err: unknown) => console.warn(`[server] touch ${sandboxId}:`, err));
  }
}

async function serveControl(ctx: WsContext, pid: number, done: AbortSignal): Promise<void> {
  const { session, agent, sandboxId } = ctx;
  const report = (what: string) => (err: unknown) => {
    if (!session.open) return;
    void session.error(
      `${what}_failed`,
      `${what}: ${err instanceof Error ? err.message : String(err)}`,
    );
  };
  const pump = new InputPump(async (data) => {
    await agent.sendProcessInput({ sandboxId, pid, data, pty: true });
  }, report("input"));
  while (!done.aborted) {
    const msg = await session.next(ControlMessage);
    if (!msg || done.aborted) return;
    if (msg.type === "input")
      await pump.write(Buffer.from(msg.data, "base64")).catch(report("input"));
    else if (msg.type === "resize")
      await agent
        .resizePty({ sandboxId, pid, cols: msg.cols, rows: msg.rows })
        .catch(report("resize"));
    else
      await agent.killProcess({ sandboxId, pid, signal: "SIGKILL" }).catch((err: unknown) => {
        if (!(err instanceof ConnectError && err.code === Code.NotFound)) report("kill")(err);
      });
  }
}
