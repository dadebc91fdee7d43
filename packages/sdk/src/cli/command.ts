import type { NestboxClient } from "../client/index.js";
import type { CliIo } from "./io.js";

/**
 * The shapes every `nestbox` command shares, here so the client commands and the umbrella
 * binary (`@nestbox/cli`) agree on them: a command table entry, the help flags and the one
 * bad-usage error (exit 2 with a hint).
 */

/** One entry of a `nestbox <command>` table. */
export interface Command {
  summary: string;
  usage: string;
  run(args: string[]): Promise<number>;
}

/** The flags that ask a command for its usage instead of running it. */
export const HELP_FLAGS: ReadonlySet<string> = new Set(["-h", "--help"]);

/** Bad usage: the entry point prints the message and a hint and exits 2. */
export class UsageError extends Error {
  override name = "UsageError";
}

/** What a client subcommand gets: its streams and a client made on first use. */
export interface CommandContext {
  io: CliIo;
  client(): NestboxClient;
}

/** One `nestbox <group> <name>` client subcommand. */
export interface Subcommand {
  /** One line per form, for the group's usage (without `nestbox <group> `). */
  synopsis: string[];
  usage: string;
  run(args: string[], ctx: CommandContext): Promise<number>;
}
