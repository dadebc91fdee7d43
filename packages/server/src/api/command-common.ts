import { isUtf8 } from "node:buffer";
import { randomBytes } from "node:crypto";
import { Code, ConnectError } from "@connectrpc/connect";
import { z } from "@hono/zod-openapi";
import { ApiError, notFound } from "../errors.js";
import type { AgentClient } from "../services/sandbox-access.js";
import { ENV_NAME_RE, stringMap } from "./schemas.js";

/**
 * What the command routes, the file routes and the WebSocket sessions share: the mapping of
 * host agent failures to API errors, the command input schemas, process selectors, and exec
 * with collected output.
 */

/** Collected exec output kept per stream; the rest is drained and dropped (`truncated`). */
export const EXEC_OUTPUT_LIMIT = 16 << 20;

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
