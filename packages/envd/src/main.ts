import { parseArgs } from "node:util";
import { createLogger } from "./log.js";
import { ForwardAddressError, resolveForwardAddress } from "./ports/address.js";
import { PortForwarder } from "./ports/forwarder.js";
import { startEnvdServer } from "./server.js";
import { EnvdState } from "./state.js";
import { UserDb } from "./users.js";
import { ENVD_VERSION } from "./version.js";

const HELP = `Usage: nestbox envd [options]

The in-sandbox agent: runs commands, serves files and watches directories for the E2B SDKs
(Connect RPC and HTTP on one port). Inside a sandbox the guest init starts it; on a host it is
the development mode that E2B_DEBUG=true talks to.

Options:
  --port <n>            TCP port to listen on (default 49983)
  --host <addr>         address to bind (default 0.0.0.0)
  --default-user <u>    user for requests that name none (default: "user" if it exists, else root)
  --workdir <dir>       default working directory (default: the user's home)
  --access-token <t>    require this X-Access-Token (default: none until POST /init sets one;
                        also read from NESTBOX_ENVD_ACCESS_TOKEN)
  --sync-clock          set the system clock from POST /init timestamps (inside a VM, whose
                        clock is stale after a snapshot restore; never on a shared host)
  --forward-localhost <auto|off|addr>
                        publish TCP services that listen only on 127.0.0.1/::1 on this
                        address, same port (default auto: the guest address 169.254.0.21
                        when this machine has it, i.e. inside a sandbox; off elsewhere)
  --quiet               log warnings and errors only
  --version             print the envd protocol version
  -h, --help            show this help
`;

export async function main(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      port: { type: "string", default: "49983" },
      host: { type: "string", default: "0.0.0.0" },
      "default-user": { type: "string" },
      workdir: { type: "string" },
      "access-token": { type: "string" },
      quiet: { type: "boolean", default: false },
      "sync-clock": { type: "boolean", default: false },
      "forward-localhost": { type: "string", default: "auto" },
      version: { type: "boolean", default: false },
      help: { type: "boolean", short: "h", default: false },
    },
    strict: true,
  });
  if (values.help) {
    process.stdout.write(HELP);
    return;
  }
  if (values.version) {
    process.stdout.write(`${ENVD_VERSION}\n`);
    return;
  }
  const port = Number(values.port);
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new UsageError(`--port must be an integer 0-65535, got ${values.port}`);
  }
  let forwardAddress: string | undefined;
  try {
    forwardAddress = resolveForwardAddress(values["forward-localhost"]);
  } catch (error) {
    if (error instanceof ForwardAddressError) throw new UsageError(error.message);
    throw error;
  }
  const db = UserDb.load();
  const defaultUser = values["default-user"] ?? (db.find("user") ? "user" : "root");
  if (!db.find(defaultUser)) throw new UsageError(`--default-user: no such user '${defaultUser}'`);
  const token = values["access-token"] ?? process.env.NESTBOX_ENVD_ACCESS_TOKEN;
  const state = new EnvdState({
    defaultUser,
    ...(token ? { accessToken: token } : {}),
    ...(values.workdir ? { defaultWorkdir: values.workdir } : {}),
  });
  state.syncClock = values["sync-clock"];
  const log = createLogger({ component: "envd" }, values.quiet);
  const srv = await startEnvdServer({ state, log }, { port, host: values.host });
  const addr = srv.server.address();
  const boundPort = typeof addr === "object" && addr ? addr.port : port;
  log.info("envd listening", { port: boundPort, version: ENVD_VERSION, defaultUser });
  let forwarder: PortForwarder | undefined;
  if (forwardAddress) {
    forwarder = new PortForwarder({
      externalAddress: forwardAddress,
      excludePorts: [boundPort],
      log,
    });
    forwarder.start();
    log.info("forwarding loopback-only ports", { address: forwardAddress });
  }
  // Tests and supervisors read the bound port from stdout when --port 0 is used.
  process.stdout.write(`envd listening on ${boundPort}\n`);
  const stop = (signal: string) => {
    log.info("shutting down", { signal });
    Promise.all([forwarder?.stop(), srv.close()]).then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  process.once("SIGTERM", () => stop("SIGTERM"));
  process.once("SIGINT", () => stop("SIGINT"));
}

export class UsageError extends Error {
  override name = "UsageError";
}
