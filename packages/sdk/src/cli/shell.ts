import type { NestboxClient } from "../client/index.js";
import type { CliIo } from "./client-commands.js";

export interface ShellOptions {
  cmd?: string;
  args?: string[];
  cwd?: string;
  envs?: Record<string, string>;
  user?: string;
}

/** Ctrl-D: at the start of a line, end of input for the program in the terminal. */
const EOT = "\x04";

/**
 * `nestbox sandbox shell`: a terminal in the sandbox wired to ours. On a TTY the local terminal
 * is put in raw mode (keys, Ctrl-C included, go to the sandbox; the remote side echoes) and
 * follows window resizes; it is restored however the session ends. Without a TTY, piped input
 * is typed into the terminal and end of input sends Ctrl-D.
 */
export async function runShell(
  client: NestboxClient,
  id: string,
  opts: ShellOptions,
  io: CliIo,
): Promise<number> {
  const { stdin, stdout } = io;
  const tty = Boolean(stdin.isTTY && stdout.isTTY);
  const size = () => ({
    cols: Math.max(1, Math.min(1000, stdout.columns || 80)),
    rows: Math.max(1, Math.min(1000, stdout.rows || 24)),
  });
  const envs = { ...opts.envs };
  if (tty && !envs.TERM) envs.TERM = io.env.TERM || "xterm-256color";

  const session = await client.pty(
    id,
    { ...size(), cmd: opts.cmd, args: opts.args, cwd: opts.cwd, envs, user: opts.user },
    {
      onData: (data) => stdout.write(data),
      onError: (err) => io.stderr.write(`\r\nnestbox: ${err.code}: ${err.message}\r\n`),
    },
  );

  const forward = (data: Buffer | string) => {
    session.write(data).catch((err: unknown) => {
      io.stderr.write(`nestbox: input: ${err instanceof Error ? err.message : String(err)}\n`);
    });
  };
  const onEnd = () => {
    if (!tty) forward(EOT);
  };
  const onResize = () => {
    session.resize(size()).catch((err: unknown) => {
      io.stderr.write(`nestbox: resize: ${err instanceof Error ? err.message : String(err)}\n`);
    });
  };

  const wasRaw = tty ? Boolean(stdin.isRaw) : false;
  if (tty) stdin.setRawMode?.(true);
  stdin.on("data", forward);
  stdin.once("end", onEnd);
  if (tty) stdout.on("resize", onResize);
  stdin.resume();
  try {
    return await session.exitCode;
  } finally {
    stdin.off("data", forward);
    stdin.off("end", onEnd);
    stdout.off("resize", onResize);
    if (tty) stdin.setRawMode?.(wasRaw);
    stdin.pause();
    session.close();
  }
}
