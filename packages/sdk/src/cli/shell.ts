import type { NestboxClient } from "../client/index.js";
import type { CliIo } from "./io.js";

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
 * Piped input ends with Ctrl-D, repeated while the session lives whenever the terminal has been
 * quiet this long. Once is not enough: a Ctrl-D that arrives while the terminal is still in
 * canonical mode (before the shell's line editor started, or while a command runs) is turned
 * into a NUL byte when the program switches to raw mode, and would leave the shell waiting.
 */
const EOT_QUIET_MS = 400;

/**
 * `nestbox sandbox shell`: a terminal in the sandbox wired to ours. On a TTY the local terminal
 * is put in raw mode (keys, Ctrl-C included, go to the sandbox; the remote side echoes) and
 * follows window resizes; it is restored however the session ends. Without a TTY, piped input
 * is typed into the terminal and end of input sends Ctrl-D (again whenever the terminal falls
 * quiet, until the program exits).
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
  let lastOutputAt = Date.now();
  if (tty && !envs.TERM) envs.TERM = io.env.TERM || "xterm-256color";

  const session = await client.pty(
    id,
    { ...size(), cmd: opts.cmd, args: opts.args, cwd: opts.cwd, envs, user: opts.user },
    {
      onData: (data) => {
        lastOutputAt = Date.now();
        stdout.write(data);
      },
      onError: (err) => io.stderr.write(`\r\nnestbox: ${err.code}: ${err.message}\r\n`),
    },
  );

  let lastInput = "";
  const forward = (data: Buffer | string) => {
    if (data.length) lastInput = data.slice(-1).toString();
    session.write(data).catch((err: unknown) => {
      io.stderr.write(`nestbox: input: ${err instanceof Error ? err.message : String(err)}\n`);
    });
  };
  let eotTimer: NodeJS.Timeout | undefined;
  let lastEotAt = 0;
  const onEnd = () => {
    if (tty) return;
    // A last line without its newline is still a line the user meant to run.
    if (lastInput !== "" && lastInput !== "\n" && lastInput !== "\r") forward("\n");
    forward(EOT);
    lastEotAt = Date.now();
    eotTimer = setInterval(() => {
      const now = Date.now();
      if (now - lastOutputAt >= EOT_QUIET_MS && now - lastEotAt >= EOT_QUIET_MS) {
        lastEotAt = now;
        forward(EOT);
      }
    }, EOT_QUIET_MS / 4);
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
    clearInterval(eotTimer);
    stdin.off("data", forward);
    stdin.off("end", onEnd);
    stdout.off("resize", onResize);
    if (tty) stdin.setRawMode?.(wasRaw);
    stdin.pause();
    session.close();
  }
}
