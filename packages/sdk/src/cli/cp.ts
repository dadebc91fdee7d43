import { createReadStream, createWriteStream } from "node:fs";
import { rename, stat, unlink } from "node:fs/promises";
import path from "node:path";
import { Readable, Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import type { ReadableStream as NodeReadableStream } from "node:stream/web";
import { absolute, copyDirection, parse, positionals } from "./args.js";
import { type CommandContext, type Subcommand, UsageError } from "./command.js";
import { bytes } from "./format.js";
import type { CliIo } from "./io.js";

/** `nestbox sandbox cp`: one file streamed either way, never buffered whole. */

const W = "sandbox cp";

export const cpCommand: Subcommand = {
  synopsis: ["cp <local> <id>:<remote>", "cp <id>:<remote> <local>"],
  usage: `Usage: nestbox sandbox cp <local> <id>:<remote>     (upload)
       nestbox sandbox cp <id>:<remote> <local>     (download)

Copies one file, streamed (no size limit). <remote> is absolute; a remote path ending in /
(or a local directory) takes the source's file name. '-' as <local> is stdin or stdout.
Shows progress on stderr when it is a terminal.`,
  async run(args, ctx) {
    const { positionals: pos } = parse(W, args, {});
    const [from, to] = positionals(W, pos, ["source", "destination"]) as [string, string];
    const dir = copyDirection(W, from, to);
    return dir.kind === "upload"
      ? upload(ctx, dir.local, dir.id, dir.remote)
      : download(ctx, dir.id, dir.remote, dir.local);
  },
};

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

async function upload(
  ctx: CommandContext,
  local: string,
  id: string,
  remote: string,
): Promise<number> {
  absolute(W, "the remote path", remote);
  const fromStdin = local === "-";
  let total: number | undefined;
  if (!fromStdin) {
    const st = await stat(local).catch((err: NodeJS.ErrnoException) => {
      throw new UsageError(`${W}: cannot read ${local}: ${err.code ?? err.message}`);
    });
    if (!st.isFile()) throw new UsageError(`${W}: ${local} is not a file`);
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

async function download(
  ctx: CommandContext,
  id: string,
  remote: string,
  local: string,
): Promise<number> {
  absolute(W, "the remote path", remote);
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
