import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { connect } from "node:net";
import path from "node:path";
import { parseArgs } from "node:util";
import { UsageError } from "@nestbox/sdk/cli";

export const UP_USAGE = `Usage: nestbox up [options]

All-in-one Nestbox on this machine: builds the guest image on first run, then starts the
control plane (embedded database) and one local host agent, registered through the normal
registration path. Prints the API URL and the admin API key. Ctrl-C stops both; running
sandboxes are paused and come back with the next 'nestbox up'. Needs root (the host agent).

Options:
  --listen <host:port>      control plane address (default 127.0.0.1:3000)
  --agent-listen <host:port> host agent address (default 127.0.0.1:50051)
  --runtime qemu|namespace  sandbox runtime (default qemu)
  --agent-instance <letter> the agent's instance letter (its namespaces, veths, state;
                            default the agent's: s)
  --agent-slots <lo-hi>     network slots the agent may use (default the agent's: all)
  --warm-pool <n>           default-shape sandboxes the agent keeps started ahead, so a
                            create takes one in a fraction of the time (default 1; 0: none)
  --data-dir <dir>          state directory (default $NESTBOX_DIR or /var/lib/nestbox)
  --skip-image              do not build or check the guest image
  -h, --help                this help
`;

interface UpDeps {
  repoRoot: string;
  cliPath: string;
  runImageBuild(args: string[]): Promise<number>;
}

/**
 * A child that prefixes nothing (both daemons log with their component). It gets its own
 * process group: a terminal's Ctrl-C reaches only `up`, which stops the daemons in order (the
 * agent pauses sandboxes first) instead of both receiving SIGINT at once and then SIGTERM again.
 */
function daemon(name: string, file: string, args: string[], env: NodeJS.ProcessEnv): ChildProcess {
  // stdin is a pipe only `up` holds open: if `up` is killed outright (SIGKILL, OOM), the daemon
  // reads its end (--stop-when-stdin-closes) and stops as on SIGTERM instead of living on.
  const child = spawn(file, [...args, "--stop-when-stdin-closes"], {
    stdio: ["pipe", "inherit", "inherit"],
    env,
    detached: true,
  });
  child.once("error", (err) =>
    process.stderr.write(`nestbox up: ${name} failed to start: ${err.message}\n`),
  );
  return child;
}

async function waitFor(
  what: string,
  check: () => Promise<boolean>,
  exited: () => string | undefined,
  timeoutMs: number,
) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const gone = exited();
    if (gone) throw new Error(`${what}: ${gone}`);
    if (await check().catch(() => false)) return;
    if (Date.now() > deadline) throw new Error(`${what}: not ready after ${timeoutMs / 1000} s`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

const stopped = (child: ChildProcess) =>
  new Promise<void>((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve();
    child.once("exit", () => resolve());
  });

/** Whether something accepts TCP connections at host:port. */
function listening(hostPort: string): Promise<boolean> {
  const m = /^(.+):(\d+)$/.exec(hostPort);
  const host = m?.[1]?.replace(/^\[(.*)\]$/, "$1");
  if (!host || !m?.[2]) return Promise.resolve(false);
  return new Promise((resolve) => {
    const sock = connect({ host, port: Number(m[2]) });
    sock.setTimeout(2000);
    sock.once("connect", () => {
      sock.destroy();
      resolve(true);
    });
    sock.once("timeout", () => {
      sock.destroy();
      resolve(false);
    });
    sock.once("error", () => resolve(false));
  });
}

/** The status of host `local`, asked as the all-in-one admin (undefined if it cannot be). */
async function localHostStatus(apiUrl: string, passwordFile: string): Promise<string | undefined> {
  if (!existsSync(passwordFile)) return undefined;
  const password = readFileSync(passwordFile, "utf8").trim();
  const login = await fetch(`${apiUrl}/v1/auth/login`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ email: "admin@localhost", password }),
  });
  if (!login.ok) return undefined;
  const { token } = (await login.json()) as { token: string };
  const res = await fetch(`${apiUrl}/v1/hosts`, { headers: { Authorization: `Bearer ${token}` } });
  if (!res.ok) return undefined;
  const { hosts } = (await res.json()) as { hosts: { name: string; status: string }[] };
  return hosts.find((h) => h.name === "local")?.status;
}

export async function runUp(argv: string[], deps: UpDeps): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      listen: { type: "string", default: "127.0.0.1:3000" },
      "agent-listen": { type: "string", default: "127.0.0.1:50051" },
      runtime: { type: "string", default: "qemu" },
      "data-dir": { type: "string", default: process.env.NESTBOX_DIR ?? "/var/lib/nestbox" },
      "agent-instance": { type: "string" },
      "agent-slots": { type: "string" },
      "warm-pool": { type: "string", default: "1" },
      "skip-image": { type: "boolean", default: false },
    },
    strict: true,
  });
  const usage = (message: string) => new UsageError(message);
  if (values.runtime !== "qemu" && values.runtime !== "namespace")
    throw usage(`--runtime must be qemu or namespace, got ${values.runtime}`);
  const instance = values["agent-instance"];
  if (instance !== undefined && !/^[a-z]$/.test(instance))
    throw usage(`--agent-instance must be one letter a-z, got ${instance}`);
  const slots = values["agent-slots"];
  if (slots !== undefined && !/^\d+-\d+$/.test(slots))
    throw usage(`--agent-slots must be <lo>-<hi>, got ${slots}`);
  const warmPool = values["warm-pool"];
  if (!/^\d{1,2}$/.test(warmPool) || Number(warmPool) > 64)
    throw usage(`--warm-pool must be an integer from 0 to 64, got ${warmPool}`);
  if (typeof process.getuid === "function" && process.getuid() !== 0)
    throw new Error("nestbox up starts a host agent, which needs root (namespaces, TAP, nftables)");
  const dataDir = path.resolve(values["data-dir"]);
  const env = { ...process.env, NESTBOX_DIR: dataDir };

  if (!values["skip-image"]) {
    process.stderr.write(
      "nestbox up: checking the guest image (built on first run, a few minutes)\n",
    );
    const code = await deps.runImageBuild([]);
    if (code !== 0) return code;
  }

  const apiUrl = `http://${values.listen}`;
  const server = daemon(
    "control plane",
    process.execPath,
    [deps.cliPath, "server", "--all-in-one", "--listen", values.listen, "--data-dir", dataDir],
    env,
  );
  let agent: ChildProcess | undefined;
  let stopping: Promise<void> | undefined;
  const exitNote = (c: ChildProcess | undefined) =>
    c && (c.exitCode !== null || c.signalCode !== null)
      ? `exited (${c.exitCode ?? c.signalCode})`
      : undefined;
  const shutdown = () =>
    (stopping ??= (async () => {
      process.stderr.write("nestbox up: stopping (sandboxes are paused)…\n");
      // The agent first: it pauses sandboxes while the control plane can still hear about it.
      if (agent) {
        agent.kill("SIGTERM");
        await stopped(agent);
      }
      server.kill("SIGTERM");
      await stopped(server);
    })());
  let onFirstSignal = () => {};
  const signalled = new Promise<void>((resolve) => {
    onFirstSignal = resolve;
  });
  const onSignal = () => {
    if (!stopping) {
      onFirstSignal();
      void shutdown();
      return;
    }
    // A second Ctrl-C: the user does not want to wait. Sandboxes not paused yet keep running
    // and are re-adopted by the next 'nestbox up'.
    process.stderr.write("nestbox up: stopping now, without waiting for the pauses\n");
    for (const c of [agent, server]) if (c && !exitNote(c)) c.kill("SIGKILL");
  };
  // SIGHUP too: the daemons are in their own process group, so a closed terminal reaches only us.
  const signals = ["SIGINT", "SIGTERM", "SIGHUP"] as const;
  for (const sig of signals) process.on(sig, onSignal);
  try {
    await waitFor(
      "control plane",
      async () => (await fetch(`${apiUrl}/health`)).ok,
      () => exitNote(server),
      120_000,
    );
    if (stopping) {
      await stopping;
      return 0;
    }
    const tokenFile = path.join(dataDir, "local-agent-token");
    const agentEnv: NodeJS.ProcessEnv = { ...env };
    if (existsSync(tokenFile))
      agentEnv.NESTBOX_REGISTRATION_TOKEN = readFileSync(tokenFile, "utf8").trim();
    agent = daemon(
      "host agent",
      process.execPath,
      [
        deps.cliPath,
        "agent",
        "--listen",
        values["agent-listen"],
        "--runtime",
        values.runtime,
        "--data-dir",
        dataDir,
        "--control-plane",
        apiUrl,
        "--pause-on-exit",
        "--warm-pool",
        warmPool,
        ...(instance ? ["--instance", instance] : []),
        ...(slots ? ["--slots", slots] : []),
      ],
      agentEnv,
    );
    const keyFile = path.join(dataDir, "admin-api-key");
    // The agent's layout: <data-dir>/agent/<instance, default s>/credentials.json.
    const credentialsFile = path.join(dataDir, "agent", instance ?? "s", "credentials.json");
    const apiKey = existsSync(keyFile) ? readFileSync(keyFile, "utf8").trim() : "";
    const adminPasswordFile = path.join(dataDir, "admin-password");
    await waitFor(
      "host agent",
      async () => {
        const res = await fetch(`${apiUrl}/v1/templates`, { headers: { "X-API-Key": apiKey } });
        if (!res.ok) return false;
        // The template list answering proves the API side; the agent is usable once its host
        // is online, which its first heartbeat does after it serves with its certificate. It
        // serves TLS only to the control plane: the host list (as the admin) is what we see.
        // (A second up finds the host still online from before: the agent's port must accept
        // connections too, which it does only once it serves.)
        if (!existsSync(credentialsFile) || !(await listening(values["agent-listen"])))
          return false;
        return (await localHostStatus(apiUrl, adminPasswordFile)) === "online";
      },
      () => exitNote(agent),
      15 * 60_000,
    );
    process.stdout.write(
      `\nNestbox is up.\n  API:      ${apiUrl}  (docs: ${apiUrl}/docs)\n  API key:  ${keyFile}\n\n` +
        `  export NESTBOX_API_URL=${apiUrl}\n  export NESTBOX_API_KEY=$(cat ${keyFile})\n` +
        "  ./nestbox sandbox create\n\nPress Ctrl-C to stop.\n",
    );
    await Promise.race([stopped(server), stopped(agent), signalled]);
    if (!stopping) {
      process.stderr.write(
        `nestbox up: ${exitNote(server) ? "the control plane" : "the host agent"} stopped unexpectedly\n`,
      );
      await shutdown();
      return 1;
    }
    await stopping;
    return 0;
  } catch (err) {
    // Stopped by a signal while starting: the daemons' exit is the cause, not an error.
    const interrupted = stopping !== undefined;
    if (!interrupted)
      process.stderr.write(`nestbox up: ${err instanceof Error ? err.message : String(err)}\n`);
    await shutdown();
    return interrupted ? 0 : 1;
  } finally {
    for (const sig of signals) process.off(sig, onSignal);
  }
}
