import type { OpenAPIHono } from "@hono/zod-openapi";
import { createRoute, z } from "@hono/zod-openapi";
import { requireCaller } from "../../auth/middleware.js";
import { badRequest, conflict } from "../../errors.js";
import { newRouter } from "../app.js";
import {
  ArgsSchema,
  agentError,
  Base64Schema,
  CmdSchema,
  CwdSchema,
  EnvsSchema,
  EXEC_OUTPUT_LIMIT,
  newTag,
  resolveProcess,
  runCollected,
  TagSchema,
  UserSchema,
} from "../command-common.js";
import type { AppDeps, AppEnv } from "../context.js";
import { errorResponses, SandboxIdParam } from "../schemas.js";

/**
 * Commands in a sandbox: one-shot exec with collected output, and background processes (start,
 * list, signal, stdin). Streams (exec stream, process attach, PTY) are WebSockets in ../ws.ts.
 */

const STDIN_LIMIT = 1 << 20;

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
