import type { Sandbox } from "../client/index.js";
import {
  absolute,
  ENV_NAME_RE,
  int,
  pairs,
  parse,
  positionals,
  STATUSES,
  sandboxId,
  splitAtDash,
  states,
  TEMPLATE_NAME_RE,
} from "./args.js";
import { type Subcommand, UsageError } from "./command.js";
import { cpCommand } from "./cp.js";
import { fieldValue, json, keyValues, seconds, table } from "./format.js";
import { runShell } from "./shell.js";

/** `nestbox sandbox <command>`, in the order the group's usage lists them. */
export const SANDBOX_COMMANDS: Record<string, Subcommand> = {
  create: {
    synopsis: [
      "create [--template base] [--vcpus N] [--memory-mb N] [--timeout S] [--env K=V]... [--json]",
    ],
    usage: `Usage: nestbox sandbox create [--template base] [--vcpus N] [--memory-mb N] [--disk-mb N]
                              [--timeout S] [--env K=V]... [--metadata K=V]...
                              [--no-internet] [--json]

Creates a sandbox and prints its id (or, with --json, the whole sandbox). --timeout is the
idle timeout in seconds after which it is paused (0 = never).`,
    async run(args, ctx) {
      const w = "sandbox create";
      const { values, positionals: pos } = parse(w, args, {
        template: { type: "string" },
        vcpus: { type: "string" },
        "memory-mb": { type: "string" },
        "disk-mb": { type: "string" },
        timeout: { type: "string" },
        env: { type: "string", multiple: true },
        metadata: { type: "string", multiple: true },
        "no-internet": { type: "boolean" },
        json: { type: "boolean" },
      });
      positionals(w, pos, []);
      if (values.template !== undefined && !TEMPLATE_NAME_RE.test(values.template))
        throw new UsageError(`${w}: '${values.template}' is not a template name`);
      const sbx = await ctx.client().sandboxes.create({
        template: values.template,
        vcpus: int(w, "--vcpus", values.vcpus, 1, 32),
        memory_mb: int(w, "--memory-mb", values["memory-mb"], 128, 262144),
        disk_size_mb: int(w, "--disk-mb", values["disk-mb"], 1024, 1048576),
        timeout_sec: int(w, "--timeout", values.timeout, 0, 86400 * 30),
        env_vars: pairs(w, "--env", values.env, ENV_NAME_RE),
        metadata: pairs(w, "--metadata", values.metadata),
        allow_internet_access: values["no-internet"] ? false : undefined,
      });
      ctx.io.stdout.write(values.json ? json(sbx) : `${sbx.id}\n`);
      return 0;
    },
  },

  list: {
    synopsis: ["list [--state running,paused] [--metadata K=V]... [--json]"],
    usage: `Usage: nestbox sandbox list [--state running,paused] [--metadata K=V]... [--json]

Lists your team's sandboxes, newest first (default: all but stopped and error ones).
States: ${STATUSES.join(", ")}.`,
    async run(args, ctx) {
      const w = "sandbox list";
      const { values, positionals: pos } = parse(w, args, {
        state: { type: "string" },
        metadata: { type: "string", multiple: true },
        json: { type: "boolean" },
      });
      positionals(w, pos, []);
      const state = states(w, values.state);
      const all: Sandbox[] = [];
      for await (const page of ctx.client().sandboxes.pages({
        state,
        metadata: pairs(w, "--metadata", values.metadata),
        limit: 1000,
      }))
        all.push(...page);
      if (values.json) {
        ctx.io.stdout.write(json(all));
        return 0;
      }
      if (all.length === 0) {
        ctx.io.stderr.write("no sandboxes\n");
        return 0;
      }
      ctx.io.stdout.write(
        table([
          ["ID", "STATUS", "TEMPLATE", "VCPUS", "MEMORY", "CREATED", "METADATA"],
          ...all.map((s) => [
            s.id,
            s.status,
            s.template,
            String(s.vcpus),
            `${s.memory_mb} MiB`,
            seconds(s.created_at),
            keyValues(s.metadata),
          ]),
        ]),
      );
      return 0;
    },
  },

  get: {
    synopsis: ["get <id> [--json]"],
    usage: `Usage: nestbox sandbox get <id> [--json]

Prints one sandbox (any status, including stopped).`,
    async run(args, ctx) {
      const w = "sandbox get";
      const { values, positionals: pos } = parse(w, args, { json: { type: "boolean" } });
      const [id] = positionals(w, pos, ["id"]);
      const sbx = await ctx.client().sandboxes.get(sandboxId(w, id));
      if (values.json) ctx.io.stdout.write(json(sbx));
      else
        ctx.io.stdout.write(table(Object.entries(sbx).map(([k, v]) => [`${k}:`, fieldValue(v)])));
      return 0;
    },
  },

  exec: {
    synopsis: ["exec <id> [--cwd DIR] [--env K=V]... -- <cmd> [args...]"],
    usage: `Usage: nestbox sandbox exec <id> [--cwd DIR] [--env K=V]... [--user U] [--timeout S] -- <cmd> [args...]

Runs <cmd> (no shell: use -- bash -c '…' for one) and streams its stdout and stderr live;
exits with the command's exit code. Piped standard input is passed to the command; a
terminal's is not (use 'sandbox shell' for interactive programs). Ctrl-C kills the command.`,
    async run(args, ctx) {
      const w = "sandbox exec";
      const { before, after } = splitAtDash(args);
      const { values, positionals: pos } = parse(w, before, {
        cwd: { type: "string" },
        env: { type: "string", multiple: true },
        user: { type: "string" },
        timeout: { type: "string" },
      });
      const [id, ...rest] = pos;
      const command = [...rest, ...(after ?? [])];
      const [cmd, ...cmdArgs] = command;
      sandboxId(w, id);
      if (!cmd) throw new UsageError(`${w}: missing the command (put it after --)`);
      const { io } = ctx;
      const forwardStdin = !io.stdin.isTTY;
      const handle = await ctx.client().startExecStream(id as string, cmd, cmdArgs, {
        cwd: values.cwd === undefined ? undefined : absolute(w, "--cwd", values.cwd),
        envs: pairs(w, "--env", values.env, ENV_NAME_RE),
        user: values.user,
        timeoutSec: int(w, "--timeout", values.timeout, 1, 86400),
        onStdout: (b) => io.stdout.write(b),
        onStderr: (b) => io.stderr.write(b),
        stdin: forwardStdin ? (io.stdin as AsyncIterable<Uint8Array>) : undefined,
      });
      const onSigint = () => handle.kill();
      process.on("SIGINT", onSigint);
      try {
        const code = await handle.exitCode;
        return code >= 0 && code <= 255 ? code : 1;
      } finally {
        process.off("SIGINT", onSigint);
        // Input the command never read must not keep this process waiting for more of it.
        if (forwardStdin) (io.stdin as NodeJS.ReadableStream & { destroy?(): void }).destroy?.();
      }
    },
  },

  shell: {
    synopsis: ["shell <id> [--cmd PROGRAM]"],
    usage: `Usage: nestbox sandbox shell <id> [--cmd PROGRAM] [--cwd DIR] [--env K=V]... [--user U] [-- args...]

Opens an interactive terminal in the sandbox (default: the user's login shell). On a terminal
it runs in raw mode and follows window resizes; piped input is typed into it, then Ctrl-D.
Exits with the program's exit code.`,
    async run(args, ctx) {
      const w = "sandbox shell";
      const { before, after } = splitAtDash(args);
      const { values, positionals: pos } = parse(w, before, {
        cmd: { type: "string" },
        cwd: { type: "string" },
        env: { type: "string", multiple: true },
        user: { type: "string" },
      });
      const [id] = positionals(w, pos.slice(0, 1), ["id"]);
      if (pos.length > 1) throw new UsageError(`${w}: unexpected argument '${pos[1]}'`);
      const progArgs = after;
      if (progArgs?.length && !values.cmd)
        throw new UsageError(`${w}: arguments after -- need --cmd`);
      const code = await runShell(
        ctx.client(),
        sandboxId(w, id),
        {
          cmd: values.cmd,
          args: progArgs,
          cwd: values.cwd === undefined ? undefined : absolute(w, "--cwd", values.cwd),
          envs: pairs(w, "--env", values.env, ENV_NAME_RE),
          user: values.user,
        },
        ctx.io,
      );
      return code >= 0 && code <= 255 ? code : 1;
    },
  },

  cp: cpCommand,

  pause: {
    synopsis: ["pause <id>"],
    usage: "Usage: nestbox sandbox pause <id>\n\nPauses a running sandbox, keeping its memory.",
    async run(args, ctx) {
      const [id] = positionals("sandbox pause", parse("sandbox pause", args, {}).positionals, [
        "id",
      ]);
      const sbx = await ctx.client().sandboxes.pause(sandboxId("sandbox pause", id));
      ctx.io.stdout.write(`${sbx.id}: ${sbx.status}\n`);
      return 0;
    },
  },

  resume: {
    synopsis: ["resume <id> [--timeout S]"],
    usage: `Usage: nestbox sandbox resume <id> [--timeout S]

Resumes a paused sandbox; --timeout sets a new idle timeout (seconds, 0 = never).`,
    async run(args, ctx) {
      const w = "sandbox resume";
      const { values, positionals: pos } = parse(w, args, { timeout: { type: "string" } });
      const [id] = positionals(w, pos, ["id"]);
      const sbx = await ctx.client().sandboxes.resume(sandboxId(w, id), {
        timeoutSec: int(w, "--timeout", values.timeout, 0, 86400 * 30),
      });
      ctx.io.stdout.write(`${sbx.id}: ${sbx.status}\n`);
      return 0;
    },
  },

  kill: {
    synopsis: ["kill <id>"],
    usage: "Usage: nestbox sandbox kill <id>\n\nDestroys a sandbox (its record stays, as stopped).",
    async run(args, ctx) {
      const [id] = positionals("sandbox kill", parse("sandbox kill", args, {}).positionals, ["id"]);
      await ctx.client().sandboxes.kill(sandboxId("sandbox kill", id));
      ctx.io.stdout.write(`${id}: stopped\n`);
      return 0;
    },
  },

  timeout: {
    synopsis: ["timeout <id> <seconds>"],
    usage: `Usage: nestbox sandbox timeout <id> <seconds>

Sets the idle timeout after which the sandbox is paused (0 = never).`,
    async run(args, ctx) {
      const w = "sandbox timeout";
      const [id, secs] = positionals(w, parse(w, args, {}).positionals, ["id", "seconds"]);
      const sbx = await ctx
        .client()
        .sandboxes.setTimeout(sandboxId(w, id), int(w, "<seconds>", secs, 0, 86400 * 30) as number);
      ctx.io.stdout.write(`${sbx.id}: timeout ${sbx.timeout_sec} s\n`);
      return 0;
    },
  },
};
