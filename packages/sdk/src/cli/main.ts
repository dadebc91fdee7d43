#!/usr/bin/env node
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { clientCommands } from "./client-commands.js";
import { runUp, UP_USAGE } from "./up.js";

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../../..");

interface Command {
  summary: string;
  usage: string;
  run(args: string[]): Promise<number>;
}

const HELP_FLAGS = new Set(["-h", "--help"]);
/** Commands that print their own detailed --help. */
const DAEMONS_WITH_OWN_HELP = new Set([
  "envd",
  "agent",
  "server",
  "migrate",
  "sandbox",
  "template",
]);

/** Runs a child with our stdio and forwards Ctrl-C/SIGTERM, resolving to its exit code. */
function runChild(
  file: string,
  args: string[],
  env: NodeJS.ProcessEnv = process.env,
): Promise<number> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { stdio: "inherit", env });
    const forward = (sig: NodeJS.Signals) => child.kill(sig);
    process.on("SIGINT", forward);
    process.on("SIGTERM", forward);
    child.once("error", reject);
    child.once("exit", (code, signal) => {
      process.off("SIGINT", forward);
      process.off("SIGTERM", forward);
      resolve(code ?? (signal ? 128 + 1 : 1));
    });
  });
}

async function runEnvd(args: string[]): Promise<number> {
  // The envd package is the daemon; the CLI only starts it, so it is imported lazily.
  const envd = (await import("@nestbox/envd")) as { main(argv: string[]): Promise<void> };
  await envd.main(args);
  return 0;
}

async function runAgent(args: string[]): Promise<number> {
  const agent = (await import("@nestbox/agent/main")) as { main(argv: string[]): Promise<void> };
  await agent.main(args);
  return 0;
}

async function runImageBuild(args: string[]): Promise<number> {
  const script = path.join(repoRoot, "images/build.sh");
  if (!existsSync(script)) throw new CliError("images/build.sh is missing from this checkout");
  // Re-bundle envd first (well under a second) so the image never carries a stale envd.
  const bundled = await runChild(process.execPath, [
    path.join(repoRoot, "packages/envd/scripts/bundle.mjs"),
  ]);
  if (bundled !== 0) return bundled;
  return runChild("bash", [script, ...args]);
}

const commands: Record<string, Command> = {
  up: {
    summary: "all-in-one: control plane, embedded database and a local host agent (needs root)",
    usage: UP_USAGE,
    run: (args) =>
      runUp(args, { repoRoot, cliPath: fileURLToPath(import.meta.url), runImageBuild }),
  },
  server: {
    summary: "run the control plane (REST API, database, scheduling; no root needed)",
    usage: "Usage: nestbox server [options]   (see nestbox server --help)",
    async run(args) {
      const server = (await import("@nestbox/server/main")) as {
        main(argv: string[]): Promise<void>;
      };
      await server.main(args);
      return 0;
    },
  },
  migrate: {
    summary: "apply database migrations (also done by the server at start)",
    usage: "Usage: nestbox migrate [options]   (see nestbox migrate --help)",
    async run(args) {
      const m = (await import("@nestbox/server/db/cli-migrate")) as {
        runMigrate(argv: string[]): Promise<number>;
      };
      return m.runMigrate(args);
    },
  },
  agent: {
    summary: "run the host agent (sandboxes of this host; needs root)",
    usage: "Usage: nestbox agent [options]   (see nestbox agent --help)",
    run: runAgent,
  },
  envd: {
    summary: "run the in-sandbox agent directly on this host",
    usage: "Usage: nestbox envd [--port 49983] [options]   (see nestbox envd --help)",
    run: runEnvd,
  },
  image: {
    summary: "build the guest kernel, root filesystem and base template",
    usage: `Usage: nestbox image build [--force] [--kernel debian|minimal]

Builds into $NESTBOX_DIR/images (default /var/lib/nestbox/images). Cached by a hash of its
inputs: a second run is a no-op that says so. Needs root (debootstrap, chroot).`,
    async run(args) {
      const [sub, ...rest] = args;
      if (sub !== "build")
        throw new CliError(`unknown image command: ${sub ?? "(none)"}; try: nestbox image build`);
      return runImageBuild(rest);
    },
  },
  ...clientCommands,
  version: {
    summary: "print the Nestbox version",
    usage: "Usage: nestbox version",
    async run() {
      process.stdout.write("nestbox 0.1.0\n");
      return 0;
    },
  },
};

function mainHelp(): string {
  const width = Math.max(...Object.keys(commands).map((c) => c.length));
  const lines = Object.entries(commands).map(
    ([name, c]) => `  ${name.padEnd(width)}  ${c.summary}`,
  );
  return `Usage: nestbox <command> [options]

Nestbox runs untrusted code in microVM sandboxes that the E2B SDKs can drive.

Commands:
  ${"setup".padEnd(width)}  install what this checkout needs (packages, Node.js, npm deps, build)
  ${"test".padEnd(width)}  set up, then run the whole test suite
${lines.join("\n")}

Run 'nestbox <command> --help' for a command's options.
`;
}

class CliError extends Error {
  override name = "CliError";
}

/** A daemon's own bad-usage error (envd's UsageError, node:util parseArgs errors): exit 2. */
function isUsageError(err: unknown): boolean {
  if (!(err instanceof Error)) return false;
  const code = (err as NodeJS.ErrnoException).code;
  return (
    err.name === "UsageError" || (typeof code === "string" && code.startsWith("ERR_PARSE_ARGS"))
  );
}

async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || HELP_FLAGS.has(name) || name === "help") {
    process.stdout.write(mainHelp());
    return name ? 0 : 2;
  }
  const cmd = commands[name];
  if (!cmd) throw new CliError(`unknown command '${name}'`);
  // The daemons have their own detailed --help.
  if (!DAEMONS_WITH_OWN_HELP.has(name) && rest.some((a) => HELP_FLAGS.has(a))) {
    process.stdout.write(`${cmd.usage}\n`);
    return 0;
  }
  return cmd.run(rest);
}

main(process.argv.slice(2)).then(
  (code) => {
    // Daemons return 0 while their servers keep the process alive; a command's non-zero exit
    // code is set without cutting off sockets still closing (a WebSocket), and enforced soon.
    if (code === 0) return;
    process.exitCode = code;
    setTimeout(() => process.exit(code), 2000).unref();
  },
  (err: unknown) => {
    const message = err instanceof Error ? err.message : String(err);
    process.stderr.write(`nestbox: ${message}\n`);
    const usage = err instanceof CliError || isUsageError(err);
    if (usage)
      process.stderr.write("Run 'nestbox --help' (or 'nestbox <command> --help') for usage.\n");
    process.exit(usage ? 2 : 1);
  },
);
