import { isUtf8 } from "node:buffer";
import { randomBytes } from "node:crypto";
import { Code, ConnectError } from "@connectrpc/connect";
import type { OpenAPIHono } from "@hono/zod-openapi";
import { createRoute, z } from "@hono/zod-openapi";
import { requireCaller } from "../../auth/middleware.js";
import { ApiError, badRequest, conflict, notFound } from "../../errors.js";
import type { AgentClient } from "../../services/sandbox-access.js";
import { newRouter } from "../app.js";
import type { AppDeps, AppEnv } from "../context.js";
import { ENV_NAME_RE, errorResponses, SandboxIdParam, stringMap } from "../schemas.js";

/**
 * Commands in a sandbox: one-shot exec with collected output, and background processes (start,
 * list, signal, stdin). Streams (exec stream, process attach, PTY) are WebSockets in ../ws.ts.
 */

/** Collected exec output kept per stream; the rest is drained and dropped (`truncated`). */
export const EXEC_OUTPUT_LIMIT = 16 << 20;
const STDIN_LIMIT = 1 << 20;

// ── Shared with files.ts and the WebSocket sessions ──────────────────────────────────────────

/** Turns a host agent failure into the error a client should see. `what` names the object. */
export function agentError(err: unknown, what: string): ApiError {
  if (err instanceof ApiError) return err;
  if (err instanceof ConnectError) {
    const msg = err.rawMessage;
    switch (err.code) {
      case Code.NotFound:
        return new ApiError(404, "not_found", `${what} not found: ${msg}`);
      case Code.AlreadyExists:
        return new ApiError(409, "conflict", `${what} already exists: ${msg}`);
      case Code.PermissionDenied:
        return new ApiError(403, "forbidden", `${what}: permission denied: ${msg}`);
      case Code.InvalidArgument:
        return new ApiError(400, "invalid_request", msg);
      case Code.FailedPrecondition:
        return new ApiError(409, "invalid_state", msg);
      case Code.ResourceExhausted:
        return new ApiError(413, "too_large", `${what}: ${msg}`);
      case Code.Unavailable:
        return new ApiError(503, "host_unavailable", `the sandbox's host is unreachable: ${msg}`);
      default:
        return new ApiError(502, "agent_error", `${what}: ${msg}`);
    }
  }
  return new ApiError(
    502,
    "agent_error",
    `${what}: ${err instanceof Error ? err.message : String(err)}`,
  );
}

export const CmdSchema = z
  .string()
  .min(1)
  .max(4096)
  .refine((s) => !s.includes("\0"), "must not contain NUL")
  .openapi({
    description: "Executable (found on PATH) — no shell is involved",
    example: "/bin/ls",
  });
export const ArgsSchema = z
  .array(
    z
      .string()
      .max(131072)
      .refine((s) => !s.includes("\0"), "must not contain NUL"),
  )
  .max(4096)
  .optional();
export const EnvsSchema = stringMap(256, 32768)
  .refine(
    (m) => Object.keys(m).every((k) => ENV_NAME_RE.test(k)),
    "names must be [A-Za-z_][A-Za-z0-9_]*",
  )
  .optional();
export const CwdSchema = z
  .string()
  .max(4096)
  .regex(/^\/[^\0]*$/, "must be an absolute path")
  .optional();
export const UserSchema = z
  .string()
  .regex(/^[a-z_][a-z0-9_-]{0,31}$/, "must be a Linux user name")
  .optional()
  .openapi({ description: "Linux user (default: the sandbox's default user)" });
/** Tags are never all digits, so a selector is a pid exactly when it is numeric. */
export const TagSchema = z
  .string()
  .regex(
    /^(?!\d+$)[A-Za-z0-9._-]{1,64}$/,
    "must be 1-64 characters [A-Za-z0-9._-], not all digits",
  );
export const Base64Schema = z
  .string()
  .regex(/^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/, "must be base64");

export const newTag = (prefix: "proc" | "pty"): string =>
  `${prefix}-${randomBytes(4).toString("hex")}`;

/** A process selector (pid or tag) as the pid the agent knows, or 404. */
export async function resolveProcess(
  agent: AgentClient,
  sandboxId: string,
  selector: string,
): Promise<{ pid: number; tag: string | null }> {
  let processes: Awaited<ReturnType<AgentClient["listProcesses"]>>["processes"];
  try {
    ({ processes } = await agent.listProcesses({ sandboxId }));
  } catch (err) {
    throw agentError(err, "process list");
  }
  const numeric = /^\d{1,10}$/.test(selector);
  const p = processes.find((x) => (numeric ? x.pid === Number(selector) : x.tag === selector));
  if (!p) throw notFound(`process ${selector}`);
  return { pid: p.pid, tag: p.tag || null };
}

/** Both streams as UTF-8 when both are valid UTF-8, else both base64. */
export function encodeOutput(stdout: Buffer, stderr: Buffer) {
  if (isUtf8(stdout) && isUtf8(stderr))
    return {
      stdout: stdout.toString("utf8"),
      stderr: stderr.toString("utf8"),
      encoding: "utf-8" as const,
    };
  return {
    stdout: stdout.toString("base64"),
    stderr: stderr.toString("base64"),
    encoding: "base64" as const,
  };
}

class Collector {
  private readonly parts: Buffer[] = [];
  private size = 0;
  truncated = false;
  push(b: Uint8Array) {
    const room = EXEC_OUTPUT_LIMIT - this.size;
    if (room <= 0) {
      this.truncated = this.truncated || b.length > 0;
      return;
    }
    const part = b.length > room ? b.subarray(0, room) : b;
    if (part.length < b.length) this.truncated = true;
    this.parts.push(Buffer.from(part));
    this.size += part.length;
  }
  get buffer() {
    return Buffer.concat(this.parts);
  }
}

export interface ExecInput {
  cmd: string;
  args?: string[] | undefined;
  timeout_sec: number;
  envs?: Record<string, string> | undefined;
  cwd?: string | undefined;
  user?: string | undefined;
}

/**
 * Runs a command to completion through the agent's ExecStream (rather than Exec) so a timeout
 * still returns the output produced so far. A request abandoned by its client kills the command.
 */
export async function runCollected(
  agent: AgentClient,
  sandboxId: string,
  input: ExecInput,
  clientGone: AbortSignal,
) {
  const started = performance.now();
  const out = new Collector();
  const err = new Collector();
  // The agent enforces timeout_sec; this only guards against an agent that never answers.
  const guard = AbortSignal.timeout((input.timeout_sec + 30) * 1000);
  const signal = AbortSignal.any([clientGone, guard]);
  let pid = 0;
  let exitCode: number | undefined;
  let timedOut = false;
  try {
    for await (const ev of agent.execStream(
      {
        sandboxId,
        cmd: input.cmd,
        args: input.args ?? [],
        timeoutSec: input.timeout_sec,
        envs: input.envs ?? {},
        cwd: input.cwd ?? "",
        user: input.user ?? "",
      },
      { signal },
    )) {
      const e = ev.event;
      if (e.case === "start") pid = e.value.pid;
      else if (e.case === "data") {
        if (e.value.output.case === "stdout") out.push(e.value.output.value);
        else if (e.value.output.case === "stderr") err.push(e.value.output.value);
      } else if (e.case === "end") exitCode = e.value.exitCode;
    }
  } catch (e) {
    const ce = ConnectError.from(e);
    if (ce.code === Code.DeadlineExceeded && !guard.aborted) timedOut = true;
    else {
      if (pid && signal.aborted) {
        await agent.killProcess({ sandboxId, pid, signal: "SIGKILL" }).catch((killErr: unknown) => {
          console.warn(
            `[server] exec: could not kill abandoned pid ${pid} in ${sandboxId}:`,
            killErr,
          );
        });
      }
      throw agentError(ce, "command");
    }
  }
  // When the deadline fires in envd and in the agent at nearly the same moment, the stream can
  // end cleanly without an end event: past the deadline that is a timeout, not a broken stream.
  if (
    exitCode === undefined &&
    !timedOut &&
    input.timeout_sec !== undefined &&
    performance.now() - started >= input.timeout_sec * 1000 - 100
  )
    timedOut = true;
  if (exitCode === undefined && !timedOut)
    throw new ApiError(502, "agent_error", "the command's stream ended without an exit status");
  return {
    ...encodeOutput(out.buffer, err.buffer),
    exit_code: timedOut ? -1 : (exitCode as number),
    timed_out: timedOut,
    truncated: out.truncated || err.truncated,
    duration_ms: Math.round(performance.now() - started),
  };
}

// ── Routes ───────────────────────────────────────────────────────────────────────────────────

const json = <T extends z.ZodTypeAny>(schema: T) => ({
  content: { "application/json": { schema } },
});

const ExecBody = z
  .object({
    cmd: CmdSchema,
    args: ArgsSchema,
    timeout_sec: z.number().int().min(1).max(3600).default(30),
    envs: EnvsSchema,
    cwd: CwdSchema,
    user: UserSchema,
  })
  .strict()
  .openapi("ExecRequest");

const ExecResult = z
  .object({
    stdout: z.string(),
    stderr: z.string(),
    exit_code: z.number().int().openapi({ description: "-1 when the command timed out" }),
    timed_out: z
      .boolean()
      .openapi({ description: "timeout_sec ran out and the command was killed" }),
    truncated: z
      .boolean()
      .openapi({ description: `output beyond ${EXEC_OUTPUT_LIMIT} bytes per stream was dropped` }),
    duration_ms: z.number().int(),
    encoding: z
      .enum(["utf-8", "base64"])
      .openapi({ description: "base64 when either stream is not valid UTF-8" }),
  })
  .openapi("ExecResult");

const StartProcessBody = z
  .object({
    cmd: CmdSchema,
    args: ArgsSchema,
    envs: EnvsSchema,
    cwd: CwdSchema,
    user: UserSchema,
    tag: TagSchema.optional().openapi({
      description: "Default proc-<8 hex>; must not name a live process",
    }),
  })
  .strict()
  .openapi("StartProcessRequest");

const ProcessSchema = z
  .object({
    pid: z.number().int(),
    tag: z.string().nullable(),
    cmd: z.string(),
    args: z.array(z.string()),
    cwd: z.string(),
  })
  .openapi("Process");

const SelectorParams = SandboxIdParam.extend({
  selector: z
    .string()
    .regex(/^(\d{1,10}|[A-Za-z0-9._-]{1,64})$/, "must be a pid or a tag")
    .openapi({
      param: { name: "selector", in: "path" },
      description: "pid (digits) or tag",
      example: "proc-1a2b3c4d",
    }),
});

export function commandRoutes(deps: AppDeps): OpenAPIHono<AppEnv> {
  const r = newRouter();
  r.use("/sandboxes/:id/*", requireCaller(deps, { apiKey: true }));

  const open = async (teamId: string, id: string) => deps.sandboxes.running(teamId, id);
  const touch = (id: string) =>
    deps.sandboxes.touch(id).catch((err: unknown) => console.warn(`[server] touch ${id}:`, err));

  r.openapi(
    createRoute({
      method: "post",
      path: "/sandboxes/{id}/exec",
      summary: "Run a command and collect its output",
      description:
        "Runs `cmd` with `args` (no shell) and waits for it to exit. When `timeout_sec` runs out the command is killed and the output so far is returned with `timed_out: true`. Abandoning the request kills the command.",
      tags: ["commands"],
      request: { params: SandboxIdParam, body: { ...json(ExecBody), required: true } },
      responses: {
        200: { description: "The command exited (or timed out)", ...json(ExecResult) },
        ...errorResponses,
      },
    }),
    async (c) => {
      const { id } = c.req.valid("param");
      const body = c.req.valid("json");
      const { agent } = await open(c.get("caller").teamId, id);
      try {
        return c.json(await runCollected(agent, id, body, c.req.raw.signal), 200);
      } finally {
        void touch(id);
      }
    },
  );

  r.openapi(
    createRoute({
      method: "post",
      path: "/sandboxes/{id}/processes",
      summary: "Start a background process",
      description:
        "The process keeps running after the response; its stdin stays open (POST …/stdin). Attach to its output with the WebSocket `GET /v1/sandboxes/{id}/processes/{selector}/stream`.",
      tags: ["commands"],
      request: { params: SandboxIdParam, body: { ...json(StartProcessBody), required: true } },
      responses: {
        201: {
          description: "Started",
          ...json(z.object({ pid: z.number().int(), tag: z.string() })),
        },
        ...errorResponses,
      },
    }),
    async (c) => {
      const { id } = c.req.valid("param");
      const b = c.req.valid("json");
      const { agent } = await open(c.get("caller").teamId, id);
      const tag = b.tag ?? newTag("proc");
      try {
        if (b.tag) {
          const { processes } = await agent.listProcesses({ sandboxId: id });
          if (processes.some((p) => p.tag === b.tag))
            throw conflict("conflict", `a running process already has tag ${b.tag}`);
        }
        const { pid } = await agent.startProcess({
          sandboxId: id,
          cmd: b.cmd,
          args: b.args ?? [],
          envs: b.envs ?? {},
          cwd: b.cwd ?? "",
          user: b.user ?? "",
          tag,
        });
        return c.json({ pid, tag }, 201);
      } catch (err) {
        throw agentError(err, "process");
      } finally {
        void touch(id);
      }
    },
  );

  r.openapi(
    createRoute({
      method: "get",
      path: "/sandboxes/{id}/processes",
      summary: "List running processes (background processes, streams and terminals)",
      tags: ["commands"],
      request: { params: SandboxIdParam },
      responses: {
        200: { description: "Processes", ...json(z.object({ processes: z.array(ProcessSchema) })) },
        ...errorResponses,
      },
    }),
    async (c) => {
      const { id } = c.req.valid("param");
      const { agent } = await open(c.get("caller").teamId, id);
      try {
        const { processes } = await agent.listProcesses({ sandboxId: id });
        return c.json(
          {
            processes: processes.map((p) => ({
              pid: p.pid,
              tag: p.tag || null,
              cmd: p.cmd,
              args: p.args,
              cwd: p.cwd,
            })),
          },
          200,
        );
      } catch (err) {
        throw agentError(err, "process list");
      }
    },
  );

  r.openapi(
    createRoute({
      method: "post",
      path: "/sandboxes/{id}/processes/{selector}/signal",
      summary: "Signal a process (and its process group)",
      tags: ["commands"],
      request: {
        params: SelectorParams,
        body: {
          ...json(z.object({ signal: z.enum(["SIGTERM", "SIGKILL"]) }).strict()),
          required: true,
        },
      },
      responses: { 204: { description: "Signalled" }, ...errorResponses },
    }),
    async (c) => {
      const { id, selector } = c.req.valid("param");
      const { signal } = c.req.valid("json");
      const { agent } = await open(c.get("caller").teamId, id);
      const { pid } = await resolveProcess(agent, id, selector);
      try {
        await agent.killProcess({ sandboxId: id, pid, signal });
      } catch (err) {
        throw agentError(err, `process ${selector}`);
      }
      return c.body(null, 204);
    },
  );

  r.openapi(
    createRoute({
      method: "post",
      path: "/sandboxes/{id}/processes/{selector}/stdin",
      summary: "Write to a process's stdin, optionally closing it",
      tags: ["commands"],
      request: {
        params: SelectorParams,
        body: {
          ...json(
            z
              .object({
                data: Base64Schema.max(Math.ceil(STDIN_LIMIT / 3) * 4)
                  .default("")
                  .openapi({ description: "base64, ≤ 1 MiB decoded" }),
                close: z
                  .boolean()
                  .default(false)
                  .openapi({ description: "close stdin after writing (EOF)" }),
              })
              .strict(),
          ),
          required: true,
        },
      },
      responses: { 204: { description: "Written" }, ...errorResponses },
    }),
    async (c) => {
      const { id, selector } = c.req.valid("param");
      const b = c.req.valid("json");
      if (!b.data && !b.close) throw badRequest("data: give data, close, or both", "data");
      const { agent } = await open(c.get("caller").teamId, id);
      const { pid } = await resolveProcess(agent, id, selector);
      try {
        await agent.sendProcessInput({
          sandboxId: id,
          pid,
          data: Buffer.from(b.data, "base64"),
          closeStdin: b.close,
        });
      } catch (err) {
        throw agentError(err, `process ${selector}`);
      } finally {
        void touch(id);
      }
      return c.body(null, 204);
    },
  );

  return r;
}
