import { NestboxApiError, NestboxClient } from "../client/index.js";
import { ADMIN_AUTH_HELP, ADMIN_COMMANDS } from "./admin-commands.js";
import { splitAtDash } from "./args.js";
import {
  type Command,
  type CommandContext,
  HELP_FLAGS,
  type Subcommand,
  UsageError,
} from "./command.js";
import { HOST_COMMANDS } from "./host-commands.js";
import { type CliIo, processIo } from "./io.js";
import { SANDBOX_COMMANDS } from "./sandbox-commands.js";
import { TEMPLATE_COMMANDS } from "./template-commands.js";

/**
 * `nestbox sandbox …`, `nestbox template …` and `nestbox host …`: the client commands, over the typed client.
 * Bad usage throws a UsageError (the entry point: exit 2 with a hint); an API error prints
 * `error: <code>: <message>` and exits 1.
 */

const ENV_HELP = `Environment: NESTBOX_API_URL (default http://127.0.0.1:3000), NESTBOX_API_KEY (default: the
key in $NESTBOX_DIR/admin-api-key that 'nestbox up' writes; NESTBOX_DIR default /var/lib/nestbox).`;

function groupUsage(group: string, summary: string, subs: Record<string, Subcommand>): string {
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
  subs: Record<string, Subcommand>,
  usage: string,
  args: string[],
  io: CliIo,
): Promise<number> {
  const [name, ...rest] = args;
  if (name === undefined)
    throw new UsageError(`missing ${group} command; one of: ${Object.keys(subs).join(", ")}`);
  if (HELP_FLAGS.has(name) || name === "help") {
    io.stdout.write(`${usage}\n`);
    return 0;
  }
  const sub = subs[name];
  if (!sub)
    throw new UsageError(
      `unknown ${group} command '${name}'; one of: ${Object.keys(subs).join(", ")}`,
    );
  if (splitAtDash(rest).before.some((a) => HELP_FLAGS.has(a))) {
    io.stdout.write(`${sub.usage}\n\n${ENV_HELP}\n`);
    return 0;
  }
  let client: NestboxClient | undefined;
  const ctx: CommandContext = {
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

/** The command table entries, bound to `io` (tests pass their own streams). */
export function createClientCommands(io: () => CliIo = processIo): Record<string, Command> {
  const sandboxUsage = groupUsage(
    "sandbox",
    "Creates and drives sandboxes through the control plane's API.",
    SANDBOX_COMMANDS,
  );
  const templateUsage = groupUsage(
    "template",
    "Lists, creates (from a sandbox) and deletes templates.",
    TEMPLATE_COMMANDS,
  );
  const hostUsage = groupUsage(
    "host",
    "Registers, lists, drains, tags and deletes host agents' hosts (platform admins; a BYOC team's owner and admins for the team's own).",
    HOST_COMMANDS,
  );
  const adminUsage = groupUsage(
    "admin",
    `Platform administration: teams, users, templates and sandboxes of every team.\n${ADMIN_AUTH_HELP}`,
    ADMIN_COMMANDS,
  );
  return {
    sandbox: {
      summary:
        "create, list, exec in, shell into, copy files to/from, pause, resume, kill sandboxes",
      usage: sandboxUsage,
      run: (args) => dispatch("sandbox", SANDBOX_COMMANDS, sandboxUsage, args, io()),
    },
    template: {
      summary: "list, snapshot and delete templates",
      usage: templateUsage,
      run: (args) => dispatch("template", TEMPLATE_COMMANDS, templateUsage, args, io()),
    },
    host: {
      summary: "create (with a registration token), list, drain, tag and delete hosts",
      usage: hostUsage,
      run: (args) => dispatch("host", HOST_COMMANDS, hostUsage, args, io()),
    },
    admin: {
      summary: "platform admins: teams (BYOC, delete), users (deactivate), templates, sandboxes",
      usage: adminUsage,
      run: (args) => dispatch("admin", ADMIN_COMMANDS, adminUsage, args, io()),
    },
  };
}

export const clientCommands: Record<string, Command> = createClientCommands();
