import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, renameSync, statSync, writeFileSync } from "node:fs";
import path from "node:path";
import { parseArgs } from "node:util";
import { UsageError } from "@nestbox/sdk/cli";

/**
 * `nestbox install-service server|agent`: systemd units that run this checkout's daemons. The
 * control plane runs as an unprivileged user with its own state directory; the agent runs as
 * root (namespaces, TAP devices, nftables, cgroups, loop mounts) with the capabilities it uses
 * and nothing else, and systemd leaves its sandboxes alone when it stops (a restarted agent
 * re-adopts them). Settings live in an environment file, written (with fresh secrets for the
 * server) only when it does not exist yet.
 */

export const INSTALL_SERVICE_USAGE = `Usage: nestbox install-service server|agent [options]

Writes /etc/systemd/system/nestbox-<server|agent>.service for this checkout and, when missing,
its environment file; prints what it wrote and the systemctl commands to run. Needs root.

  server   the control plane, as an unprivileged user (--user, created when missing) with its
           state in /var/lib/nestbox-server; settings in /etc/nestbox/server.env
  agent    the host agent, as root with the capabilities it needs, state in /var/lib/nestbox
           (where 'nestbox image build' puts the guest image); settings in
           /etc/nestbox/agent.env (control plane URL, registration token, listen address)

Options:
  --env-file <path>   environment file for the unit (default /etc/nestbox/<kind>.env)
  --user <name>       server only: the user it runs as (default nestbox)
  --unit-dir <dir>    where to write the unit (default /etc/systemd/system)
  --dry-run           print the unit (and the environment file it would create) instead
  -h, --help          this help
`;

export type ServiceKind = "server" | "agent";

export interface UnitOptions {
  /** The checkout whose ./nestbox the unit runs. */
  repoRoot: string;
  envFile: string;
  /** Server only. */
  user?: string;
}

export const SERVER_STATE_DIR = "/var/lib/nestbox-server";
export const AGENT_STATE_DIR = "/var/lib/nestbox";

/**
 * What the agent does as root: namespaces, mounts, overlayfs and loop devices (SYS_ADMIN),
 * veths, TAP, nftables and sysctls (NET_ADMIN), bwrap's and envd's user switching (SETUID,
 * SETGID, SETPCAP), chroot/pivot_root (SYS_CHROOT), owning and reading every sandbox's files
 * (CHOWN, DAC_*, FOWNER, FSETID, SETFCAP, MKNOD), signalling sandbox processes (KILL), raising
 * QEMU's limits (SYS_RESOURCE, IPC_LOCK), reading sandbox processes' /proc entries on re-adoption
 * (SYS_PTRACE), and raw sockets of the network tools (NET_RAW, NET_BIND_SERVICE). It also holds
 * every capability root in a namespace sandbox keeps (the agent's SANDBOX_CAPS, which bwrap can
 * only grant from this set; AUDIT_WRITE for sudo in the sandbox).
 */
export const AGENT_CAPABILITIES = [
  "CAP_SYS_ADMIN",
  "CAP_NET_ADMIN",
  "CAP_NET_RAW",
  "CAP_NET_BIND_SERVICE",
  "CAP_SETUID",
  "CAP_SETGID",
  "CAP_SETPCAP",
  "CAP_SYS_CHROOT",
  "CAP_CHOWN",
  "CAP_DAC_OVERRIDE",
  "CAP_DAC_READ_SEARCH",
  "CAP_FOWNER",
  "CAP_FSETID",
  "CAP_SETFCAP",
  "CAP_MKNOD",
  "CAP_KILL",
  "CAP_SYS_RESOURCE",
  "CAP_IPC_LOCK",
  "CAP_SYS_PTRACE",
  "CAP_AUDIT_WRITE",
] as const;

/** systemd treats `%` specially and a line ending in `\` continues: refuse such paths. */
function unitPath(p: string, what: string): string {
  if (!path.isAbsolute(p) || /[\s%\\"']/.test(p))
    throw new UsageError(`${what} must be an absolute path without spaces, quotes, % or \\: ${p}`);
  return p;
}

export function serverUnit(o: UnitOptions): string {
  const user = o.user ?? "nestbox";
  return `# Written by 'nestbox install-service server'. The Nestbox control plane: unprivileged,
# state in ${SERVER_STATE_DIR}, settings in ${o.envFile}.
[Unit]
Description=Nestbox control plane
Wants=network-online.target
After=network-online.target postgresql.service

[Service]
Type=simple
User=${user}
EnvironmentFile=${o.envFile}
Environment=HOME=${SERVER_STATE_DIR}
ExecStart=${unitPath(o.repoRoot, "the checkout")}/nestbox server --data-dir ${SERVER_STATE_DIR} $NESTBOX_SERVER_ARGS
Restart=on-failure
RestartSec=2
TimeoutStopSec=30
StateDirectory=nestbox-server
StateDirectoryMode=0700
UMask=0077
LimitNOFILE=65536
NoNewPrivileges=yes
CapabilityBoundingSet=
ProtectSystem=strict
ProtectHome=read-only
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectControlGroups=yes
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6
RestrictSUIDSGID=yes
LockPersonality=yes

[Install]
WantedBy=multi-user.target
`;
}

export function agentUnit(o: UnitOptions): string {
  return `# Written by 'nestbox install-service agent'. The Nestbox host agent: root with the
# capabilities it uses, state in ${AGENT_STATE_DIR}, settings in ${o.envFile}.
[Unit]
Description=Nestbox host agent
Wants=network-online.target
After=network-online.target

[Service]
Type=simple
User=root
EnvironmentFile=${o.envFile}
Environment=NESTBOX_DIR=${AGENT_STATE_DIR}
ExecStart=${unitPath(o.repoRoot, "the checkout")}/nestbox agent --data-dir ${AGENT_STATE_DIR} $NESTBOX_AGENT_ARGS
Restart=on-failure
RestartSec=2
# Stopping or restarting the agent leaves its sandboxes (QEMU, bwrap) running: the next agent
# re-adopts them. systemd would otherwise kill every process of the unit.
KillMode=process
TimeoutStopSec=60
StateDirectory=nestbox
StateDirectoryMode=0700
Delegate=yes
TasksMax=infinity
LimitNOFILE=1048576
CapabilityBoundingSet=${AGENT_CAPABILITIES.join(" ")}

[Install]
WantedBy=multi-user.target
`;
}

const hex32 = () => randomBytes(32).toString("hex");

export function serverEnvFile(): string {
  return `# Nestbox control plane (nestbox-server.service). Every replica needs the same
# DATABASE_URL, NESTBOX_JWT_SECRET and NESTBOX_CA_KEY: copy this file to each of them.
NESTBOX_LISTEN=127.0.0.1:3000
NESTBOX_PUBLIC_URL=https://nestbox.example.com
NESTBOX_DOMAIN=sandbox.example.com
# Unset: an embedded database in ${SERVER_STATE_DIR}/db (one replica only).
#DATABASE_URL=postgres://nestbox:PASSWORD@db.example.com:5432/nestbox
NESTBOX_JWT_SECRET=${hex32()}
NESTBOX_CA_KEY=${hex32()}
# More 'nestbox server' flags, e.g. --bootstrap-admin you@example.com on the first replica.
NESTBOX_SERVER_ARGS=
`;
}

export function agentEnvFile(): string {
  return `# Nestbox host agent (nestbox-agent.service).
# One-time token from 'POST /v1/hosts' (an admin); once registered, the agent keeps its
# credentials in ${AGENT_STATE_DIR}/agent/s/credentials.json and no longer needs it.
NESTBOX_REGISTRATION_TOKEN=
# The control plane's public URL, where this agent listens, and the https URL the control
# plane reaches it at (this host's name or address).
NESTBOX_AGENT_ARGS=--control-plane https://nestbox.example.com --listen 0.0.0.0:50051 --advertise-url https://host1.example.com:50051
`;
}

export interface InstallServiceDeps {
  repoRoot: string;
  out?: (text: string) => void;
}

export async function runInstallService(args: string[], deps: InstallServiceDeps): Promise<number> {
  const out = deps.out ?? ((t: string) => process.stdout.write(t));
  const { values, positionals } = parseArgs({
    args,
    options: {
      "env-file": { type: "string" },
      user: { type: "string" },
      "unit-dir": { type: "string", default: "/etc/systemd/system" },
      "dry-run": { type: "boolean", default: false },
      help: { type: "boolean", short: "h", default: false },
    },
    allowPositionals: true,
    strict: true,
  });
  if (values.help) {
    out(INSTALL_SERVICE_USAGE);
    return 0;
  }
  const kind = positionals[0];
  if ((kind !== "server" && kind !== "agent") || positionals.length > 1)
    throw new UsageError("say which service: nestbox install-service server|agent");
  if (kind === "agent" && values.user !== undefined)
    throw new UsageError("--user is for the server; the agent runs as root");
  const user = values.user ?? "nestbox";
  if (!/^[a-z_][a-z0-9_-]{0,31}$/.test(user))
    throw new UsageError(`--user: not a user name: ${user}`);
  const envFile = unitPath(values["env-file"] ?? `/etc/nestbox/${kind}.env`, "--env-file");
  const unitDir = unitPath(values["unit-dir"], "--unit-dir");
  const opts: UnitOptions = { repoRoot: deps.repoRoot, envFile, user };
  const unit = kind === "server" ? serverUnit(opts) : agentUnit(opts);
  const unitFile = path.join(unitDir, `nestbox-${kind}.service`);
  const newEnv = existsSync(envFile)
    ? undefined
    : kind === "server"
      ? serverEnvFile()
      : agentEnvFile();

  if (values["dry-run"]) {
    out(`# ${unitFile}\n${unit}`);
    if (newEnv) out(`\n# ${envFile} (written when missing, mode 0600)\n${newEnv}`);
    return 0;
  }
  if (process.getuid?.() !== 0)
    throw new Error("writing systemd units needs root (sudo ./nestbox install-service …)");
  if (kind === "server") ensureSystemUser(user, out);
  mkdirSync(unitDir, { recursive: true });
  writeAtomic(unitFile, unit, 0o644);
  out(`wrote ${unitFile}\n`);
  if (newEnv) {
    mkdirSync(path.dirname(envFile), { recursive: true, mode: 0o755 });
    writeAtomic(envFile, newEnv, 0o600);
    out(`wrote ${envFile} (mode 0600): edit it before starting the service\n`);
  } else out(`kept ${envFile} as it is\n`);
  const unreadable = unreadableBy(deps.repoRoot);
  if (kind === "server" && unreadable)
    out(
      `warning: ${unreadable} is not readable by others, so ${user} cannot run this checkout: move it (e.g. to /opt/nestbox) or chmod o+rx the path\n`,
    );
  out(`
Then:
  systemctl daemon-reload
  systemctl enable --now nestbox-${kind}.service
  systemctl status nestbox-${kind}.service
  journalctl -u nestbox-${kind}.service -f
`);
  return 0;
}

function writeAtomic(file: string, content: string, mode: number): void {
  const tmp = `${file}.tmp-${process.pid}`;
  writeFileSync(tmp, content, { mode });
  renameSync(tmp, file);
}

function ensureSystemUser(user: string, out: (text: string) => void): void {
  const passwd = readFileSync("/etc/passwd", "utf8");
  if (passwd.split("\n").some((l) => l.startsWith(`${user}:`))) return;
  execFileSync(
    "useradd",
    [
      "--system",
      "--user-group",
      "--home-dir",
      SERVER_STATE_DIR,
      "--shell",
      "/usr/sbin/nologin",
      user,
    ],
    { stdio: "inherit" },
  );
  out(`created system user ${user}\n`);
}

/** The first directory on the way to `dir` (or `dir` itself) that others cannot enter. */
function unreadableBy(dir: string): string | undefined {
  const parts = path.resolve(dir).split(path.sep).filter(Boolean);
  let p = "/";
  for (const part of parts) {
    p = path.join(p, part);
    try {
      const st = statSync(p);
      if ((st.mode & 0o005) !== 0o005) return p;
    } catch (err) {
      return `${p} (${(err as Error).message})`;
    }
  }
  return undefined;
}
