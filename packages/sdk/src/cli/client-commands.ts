import { createReadStream, createWriteStream } from "node:fs";
import { rename, stat, unlink } from "node:fs/promises";
import path from "node:path";
import { Readable, Transform, type Writable } from "node:stream";
import { pipeline } from "node:stream/promises";
import type { ReadableStream as NodeReadableStream } from "node:stream/web";
import { type ParseArgsConfig, parseArgs } from "node:util";
import { SANDBOX_ID_RE, TEMPLATE_NAME_RE } from "@nestbox/wire";
import {
  NestboxApiError,
  NestboxClient,
  type Sandbox,
  type SandboxStatus,
  type Template,
} from "../client/index.js";
import { runShell } from "./shell.js";

/**
 * `nestbox sandbox …` and `nestbox template …`: the client commands, over the typed client.
 * Bad usage throws a UsageError (main.ts: exit 2 with a hint); an API error prints
 * `error: <code>: <message>` and exits 1.
 */

export class UsageError extends Error {
  override name = "UsageError";
}

/** Where a command reads and writes; the process's own streams except in tests. */
export interface CliIo {
  stdin: NodeJS.ReadableStream & {
    isTTY?: boolean;
    isRaw?: boolean;
    setRawMode?(mode: boolean): unknown;
  };
  stdout: Writable & { isTTY?: boolean; columns?: number; rows?: number };
  stderr: Writable & { isTTY?: boolean };
  env: NodeJS.ProcessEnv;
}

const processIo = (): CliIo => ({
  stdin: process.stdin,
  stdout: process.stdout,
  stderr: process.stderr,
  env: process.env,
});

interface Ctx {
  io: CliIo;
  client(): NestboxClient;
}

interface Sub {
  /** One line per form, for the group's usage (without `nestbox <group> `). */
  synopsis: string[];
  usage: string;
  run(args: string[], ctx: Ctx): Promise<number>;
}

const HELP = new Set(["-h", "--help"]);
const STATUSES: readonly SandboxStatus[] = [
  "pending",
  "running",
  "paused",
  "stopped",
  "error",
  "missing",
];

const ENV_HELP = `Environment: NESTBOX_API_URL (default http://127.0.0.1:3000), NESTBOX_API_KEY (default: the
key in $NESTBOX_DIR/admin-api-key that 'nestbox up' writes; NESTBOX_DIR default /var/lib/nestbox).`;

// ── Argument helpers ──────────────────────────────────────────────────────────────────────────

type Options = NonNullable<ParseArgsConfig["options"]>;

function parse<O extends Options>(where: string, args: string[], options: O) {
  try {
    return parseArgs({ args, options, allowPositionals: true, strict: true });
  } catch (err) {
    if (err instanceof Error && (err as NodeJS.ErrnoException).code?.startsWith("ERR_PARSE_ARGS"))
      throw new UsageError(`${where}: ${err.message}`);
    throw err;
  }
}

function positionals(where: string, got: string[], names: string[]): string[] {
  if (got.length < names.length) throw new UsageError(`${where}: missing <${names[got.length]}>`);
  if (got.length > names.length)
    throw new UsageError(`${where}: unexpected argument '${got[names.length]}'`);
  return got;
}

function sandboxId(where: string, id: string | undefined): string {
  if (!id) throw new UsageError(`${where}: missing <id>`);
  if (!SANDBOX_ID_RE.test(id))
    throw new UsageError(`${where}: '${id}' is not a sandbox id (20 characters a-z, 0-9)`);
  return id;
}

function int(where: string, flag: string, value: string | undefined, min: number, max: number) {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!/^\d+$/.test(value) || n < min || n > max)
    throw new UsageError(
      `${where}: ${flag} must be an integer from ${min} to ${max}, got '${value}'`,
    );
  return n;
}

function pairs(where: string, flag: string, values: string[] | undefined, keyRe?: RegExp) {
  if (!values?.length) return undefined;
  const out: Record<string, string> = {};
  for (const v of values) {
    const eq = v.indexOf("=");
    const key = eq > 0 ? v.slice(0, eq) : "";
    if (!key || (keyRe && !keyRe.test(key)))
      throw new UsageError(
        `${where}: ${flag} takes KEY=VALUE${keyRe ? " (KEY a variable name)" : ""}, got '${v}'`,
      );
    out[key] = v.slice(eq + 1);
  }
  return out;
}

const ENV_NAME_RE = /^[A-Za-z_][A-Za-z0-9_]*$/;

function absolute(where: string, what: string, p: string): string {
  if (!p.startsWith("/"))
    throw new UsageError(`${where}: ${what} must be an absolute path, got '${p}'`);
  return p;
}

// ── Output helpers ────────────────────────────────────────────────────────────────────────────

function table(rows: string[][]): string {
  const widths = rows[0]?.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? "").length))) ?? [];
  return rows
    .map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i] ?? 0))).join("  "))
    .join("\n")
    .concat("\n");
}

const json = (v: unknown) => `${JSON.stringify(v, null, 2)}\n`;

function bytes(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let v = n;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return u === 0 ? `${n} B` : `${v.toFixed(1)} ${units[u]}`;
}

/** A pass-through stream that draws a progress line on a TTY, at most ten times a second. */
function progress(io: CliIo, label: string, total: number | undefined): Transform {
  let done = 0;
  let last = 0;
  const started = Date.now();
  const draw = (final: boolean) => {
    const secs = Math.max((Date.now() - started) / 1000, 0.001);
    const pct = total ? ` ${Math.floor((done / total) * 100)}%` : "";
    const of = total !== undefined ? ` / ${bytes(total)}` : "";
    io.stderr.write(`\r\x1b[K${label}: ${bytes(done)}${of}${pct}  ${bytes(done / secs)}/s`);
    if (final) io.stderr.write("\n");
  };
  const show = Boolean(io.stderr.isTTY);
  return new Transform({
    transform(chunk: Buffer, _enc, cb) {
      done += chunk.length;
      const now = Date.now();
      if (show && now - last >= 100) {
        last = now;
        draw(false);
      }
      cb(null, chunk);
    },
    flush(cb) {
      if (show) draw(true);
      cb();
    },
  });
}

// ── sandbox ───────────────────────────────────────────────────────────────────────────────────

const SANDBOX_SUBS: Record<string, Sub> = {
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
      const state = values.state?.split(",").map((s) => {
        if (!(STATUSES as readonly string[]).includes(s))
          throw new UsageError(`${w}: unknown state '${s}' (one of ${STATUSES.join(", ")})`);
        return s as SandboxStatus;
      });
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
      const meta = (m: Record<string, string>) =>
        Object.entries(m)
          .map(([k, v]) => `${k}=${v}`)
          .join(",");
      ctx.io.stdout.write(
        table([
          ["ID", "STATUS", "TEMPLATE", "VCPUS", "MEMORY", "CREATED", "METADATA"],
          ...all.map((s) => [
            s.id,
            s.status,
            s.template,
            String(s.vcpus),
            `${s.memory_mb} MiB`,
            s.created_at.replace(/\.\d+Z$/, "Z"),
            meta(s.metadata),
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
        ctx.io.stdout.write(
          table(
            Object.entries(sbx).map(([k, v]) => [
              `${k}:`,
              v === null ? "-" : typeof v === "object" ? JSON.stringify(v) : String(v),
            ]),
          ),
        );
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
      const dash = args.indexOf("--");
      const before = dash < 0 ? args : args.slice(0, dash);
      const { values, positionals: pos } = parse(w, before, {
        cwd: { type: "string" },
        env: { type: "string", multiple: true },
        user: { type: "string" },
        timeout: { type: "string" },
      });
      const [id, ...rest] = pos;
      const command = dash < 0 ? rest : [...rest, ...args.slice(dash + 1)];
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
      const dash = args.indexOf("--");
      const before = dash < 0 ? args : args.slice(0, dash);
      const { values, positionals: pos } = parse(w, before, {
        cmd: { type: "string" },
        cwd: { type: "string" },
        env: { type: "string", multiple: true },
        user: { type: "string" },
      });
      const [id] = positionals(w, pos.slice(0, 1), ["id"]);
      if (pos.length > 1) throw new UsageError(`${w}: unexpected argument '${pos[1]}'`);
      const progArgs = dash < 0 ? undefined : args.slice(dash + 1);
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

  cp: {
    synopsis: ["cp <local> <id>:<remote>", "cp <id>:<remote> <local>"],
    usage: `Usage: nestbox sandbox cp <local> <id>:<remote>     (upload)
       nestbox sandbox cp <id>:<remote> <local>     (download)

Copies one file, streamed (no size limit). <remote> is absolute; a remote path ending in /
(or a local directory) takes the source's file name. '-' as <local> is stdin or stdout.
Shows progress on stderr when it is a terminal.`,
    async run(args, ctx) {
      const w = "sandbox cp";
      const { positionals: pos } = parse(w, args, {});
      const [from, to] = positionals(w, pos, ["source", "destination"]) as [string, string];
      const remoteRe = /^([a-z0-9]{20}):(.*)$/;
      const src = remoteRe.exec(from);
      const dst = remoteRe.exec(to);
      if (src && dst) throw new UsageError(`${w}: copying between two sandboxes is not supported`);
      if (!src && !dst)
        throw new UsageError(`${w}: one side must be <id>:<remote path> (neither is)`);
      return dst
        ? upload(ctx, from, dst[1] as string, dst[2] as string)
        : download(
            ctx,
            (src as RegExpExecArray)[1] as string,
            (src as RegExpExecArray)[2] as string,
            to,
          );
    },
  },

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

async function upload(ctx: Ctx, local: string, id: string, remote: string): Promise<number> {
  const w = "sandbox cp";
  absolute(w, "the remote path", remote);
  const fromStdin = local === "-";
  let total: number | undefined;
  if (!fromStdin) {
    const st = await stat(local).catch((err: NodeJS.ErrnoException) => {
      throw new UsageError(`${w}: cannot read ${local}: ${err.code ?? err.message}`);
    });
    if (!st.isFile()) throw new UsageError(`${w}: ${local} is not a file`);
    total = st.size;
  }
  const target = remote.endsWith("/")
    ? `${remote}${fromStdin ? "stdin" : path.basename(local)}`
    : remote;
  const source: Readable = fromStdin ? Readable.from(ctx.io.stdin) : createReadStream(local);
  const counted = source.pipe(progress(ctx.io, `${path.basename(target)} ↑`, total));
  source.on("error", (err) => counted.destroy(err));
  await ctx.client().files.upload(id, target, counted);
  return 0;
}

async function download(ctx: Ctx, id: string, remote: string, local: string): Promise<number> {
  const w = "sandbox cp";
  absolute(w, "the remote path", remote);
  const client = ctx.client();
  const toStdout = local === "-";
  let dest = local;
  if (!toStdout) {
    const isDir =
      local.endsWith("/") ||
      (await stat(local).then(
        (s) => s.isDirectory(),
        () => false,
      ));
    if (isDir) dest = path.join(local, path.posix.basename(remote));
  }
  const total = ctx.io.stderr.isTTY ? (await client.files.stat(id, remote)).size : undefined;
  const body = await client.files.download(id, remote);
  const source = Readable.fromWeb(body as unknown as NodeReadableStream<Uint8Array>);
  const meter = progress(ctx.io, `${path.posix.basename(remote)} ↓`, total);
  if (toStdout) {
    await pipeline(source, meter, ctx.io.stdout, { end: false });
    return 0;
  }
  // Written beside the destination and renamed into place, so a failed copy leaves no torn file.
  const tmp = path.join(path.dirname(dest), `.${path.basename(dest)}.nestbox-${process.pid}`);
  try {
    await pipeline(source, meter, createWriteStream(tmp, { flags: "wx" }));
    await rename(tmp, dest);
  } catch (err) {
    await unlink(tmp).catch((e: NodeJS.ErrnoException) => {
      if (e.code !== "ENOENT")
        ctx.io.stderr.write(`nestbox: could not remove ${tmp}: ${e.message}\n`);
    });
    throw err;
  }
  return 0;
}

// ── template ──────────────────────────────────────────────────────────────────────────────────

const TEMPLATE_SUBS: Record<string, Sub> = {
  list: {
    synopsis: ["list [--json]"],
    usage:
      "Usage: nestbox template list [--json]\n\nLists your team's templates and the platform's.",
    async run(args, ctx) {
      const w = "template list";
      const { values, positionals: pos } = parse(w, args, { json: { type: "boolean" } });
      positionals(w, pos, []);
      const templates: Template[] = await ctx.client().templates.list();
      if (values.json) {
        ctx.io.stdout.write(json(templates));
        return 0;
      }
      ctx.io.stdout.write(
        table([
          ["NAME", "KIND", "OWNER", "VCPUS", "MEMORY", "SIZE", "CREATED"],
          ...templates.map((t) => [
            t.name,
            t.kind,
            t.platform ? "platform" : "team",
            t.vcpus === null ? "-" : String(t.vcpus),
            t.memory_mb === null ? "-" : `${t.memory_mb} MiB`,
            bytes(t.size_bytes),
            t.created_at.replace(/\.\d+Z$/, "Z"),
          ]),
        ]),
      );
      return 0;
    },
  },

  snapshot: {
    synopsis: ["snapshot <sandbox-id> <name>"],
    usage: `Usage: nestbox template snapshot <sandbox-id> <name>

Turns a running or paused sandbox into the team template <name>; the sandbox is destroyed.
Names: 1-63 characters a-z, 0-9, . _ - (starting with a letter or digit).`,
    async run(args, ctx) {
      const w = "template snapshot";
      const [id, name] = positionals(w, parse(w, args, {}).positionals, ["sandbox-id", "name"]);
      if (!TEMPLATE_NAME_RE.test(name as string))
        throw new UsageError(`${w}: '${name}' is not a template name (a-z, 0-9, . _ -)`);
      const t = await ctx.client().templates.snapshot(sandboxId(w, id), name as string);
      ctx.io.stdout.write(`${t.name}\n`);
      return 0;
    },
  },

  delete: {
    synopsis: ["delete <name>"],
    usage: "Usage: nestbox template delete <name>\n\nDeletes a team template.",
    async run(args, ctx) {
      const w = "template delete";
      const [name] = positionals(w, parse(w, args, {}).positionals, ["name"]);
      if (!TEMPLATE_NAME_RE.test(name as string))
        throw new UsageError(`${w}: '${name}' is not a template name`);
      await ctx.client().templates.delete(name as string);
      return 0;
    },
  },
};

// ── Dispatch ──────────────────────────────────────────────────────────────────────────────────

function groupUsage(group: string, summary: string, subs: Record<string, Sub>): string {
  const lines = Object.values(subs).flatMap((s) => s.synopsis.map((l) => `  ${l}`));
  return `Usage: nestbox ${group} <command> [options]

${summary}

Commands:
${lines.join("\n")}

Run 'nestbox ${group} <command> --help' for a command's details.
${ENV_HELP}`;
}

/** An API error as the one line the user sees, with a hint when no key was configured. */
function report(err: NestboxApiError, client: NestboxClient | undefined, io: CliIo): void {
  io.stderr.write(`error: ${err.code}: ${err.message}\n`);
  if (err.code === "unauthorized" && client && !client.apiKeySource)
    io.stderr.write("hint: set NESTBOX_API_KEY (or run on the 'nestbox up' host as its user)\n");
}

async function dispatch(
  group: string,
  subs: Record<string, Sub>,
  usage: string,
  args: string[],
  io: CliIo,
): Promise<number> {
  const [name, ...rest] = args;
  if (name === undefined)
    throw new UsageError(`missing ${group} command; one of: ${Object.keys(subs).join(", ")}`);
  if (HELP.has(name) || name === "help") {
    io.stdout.write(`${usage}\n`);
    return 0;
  }
  const sub = subs[name];
  if (!sub)
    throw new UsageError(
      `unknown ${group} command '${name}'; one of: ${Object.keys(subs).join(", ")}`,
    );
  const dash = rest.indexOf("--");
  if ((dash < 0 ? rest : rest.slice(0, dash)).some((a) => HELP.has(a))) {
    io.stdout.write(`${sub.usage}\n\n${ENV_HELP}\n`);
    return 0;
  }
  let client: NestboxClient | undefined;
  const ctx: Ctx = {
    io,
    client() {
      client ??= new NestboxClient({}, io.env);
      return client;
    },
  };
  try {
    return await sub.run(rest, ctx);
  } catch (err) {
    if (err instanceof NestboxApiError) {
      report(err, client, io);
      return 1;
    }
    throw err;
  }
}

export interface ClientCommand {
  summary: string;
  usage: string;
  run(args: string[]): Promise<number>;
}

/** The command table entries, bound to `io` (tests pass their own streams). */
export function createClientCommands(io: () => CliIo = processIo): Record<string, ClientCommand> {
  const sandboxUsage = groupUsage(
    "sandbox",
    "Creates and drives sandboxes through the control plane's API.",
    SANDBOX_SUBS,
  );
  const templateUsage = groupUsage(
    "template",
    "Lists, creates (from a sandbox) and deletes templates.",
    TEMPLATE_SUBS,
  );
  return {
    sandbox: {
      summary:
        "create, list, exec in, shell into, copy files to/from, pause, resume, kill sandboxes",
      usage: sandboxUsage,
      run: (args) => dispatch("sandbox", SANDBOX_SUBS, sandboxUsage, args, io()),
    },
    template: {
      summary: "list, snapshot and delete templates",
      usage: templateUsage,
      run: (args) => dispatch("template", TEMPLATE_SUBS, templateUsage, args, io()),
    },
  };
}

export const clientCommands: Record<string, ClientCommand> = createClientCommands();
