#!/usr/bin/env node
import path from "node:path";
import { fileURLToPath } from "node:url";
import { NESTBOX_VERSION } from "@nestbox/proto/version";
import { type Command, clientCommands, HELP_FLAGS, UsageError } from "@nestbox/sdk/cli";
import { runAgent, runEnvd, runImageBuild, runMigrate, runServer } from "./daemons.js";
import { INSTALL_SERVICE_USAGE, runInstallService } from "./install-service.js";
import { runUp, UP_USAGE } from "./up.js";

/** The `nestbox` command line: the daemons, `up`, `image`, and the SDK's client commands. */

// src/ or dist/ of packages/cli: the checkout's root is three levels up.
const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");

/** Commands that print their own detailed --help. */
const DAEMONS_WITH_OWN_HELP = new Set([
  "envd",
  "agent",
  "server",
  "migrate",
  "sandbox",
  "template",
  "host",
]);

const commands: Record<string, Command> = {
  up: {
    summary: "all-in-one: control plane, embedded database and a local host agent (needs root)",
    usage: UP_USAGE,
    run: (args) =>
      runUp(args, {
        repoRoot,
        cliPath: fileURLToPath(import.meta.url),
        runImageBuild: (a) => runImageBuild(repoRoot, a),
      }),
  },
  server: {
    summary: "run the control plane (REST API, database, scheduling; no root needed)",
    usage: "Usage: nestbox server [options]   (see nestbox server --help)",
    run: runServer,
  },
  migrate: {
    summary: "apply database migrations (also done by the server at start)",
    usage: "Usage: nestbox migrate [options]   (see nestbox migrate --help)",
    run: runMigrate,
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
        throw new UsageError(`unknown image command: ${sub ?? "(none)"}; try: nestbox image build`);
      return runImageBuild(repoRoot, rest);
    },
  },
  "install-service": {
    summary: "write a systemd unit for the control plane or the host agent (needs root)",
    usage: INSTALL_SERVICE_USAGE.trimEnd(),
    run: (args) => runInstallService(args, { repoRoot }),
  },
  ...clientCommands,
  version: {
    summary: "print the Nestbox version",
    usage: "Usage: nestbox version",
    async run() {
      process.stdout.write(`nestbox ${NESTBOX_VERSION}\n`);
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

/**
 * Bad usage, ours or a daemon's (envd's own UsageError, node:util parseArgs errors): exit 2.
 * Matched by name, not class: a daemon's error class is not ours.
 */
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
  if (!cmd) throw new UsageError(`unknown command '${name}'`);
  // The daemons have their own detailed --help; so have the client command groups, per
  // subcommand (`nestbox admin users --help`), and they leave a command's own after `--` alone.
  const ownHelp = DAEMONS_WITH_OWN_HELP.has(name) || Object.hasOwn(clientCommands, name);
  if (!ownHelp && rest.some((a) => HELP_FLAGS.has(a))) {
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
    const usage = isUsageError(err);
    if (usage)
      process.stderr.write("Run 'nestbox --help' (or 'nestbox <command> --help') for usage.\n");
    process.exit(usage ? 2 : 1);
  },
);
