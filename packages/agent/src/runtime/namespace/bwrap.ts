// Internal: the command line that starts a namespace sandbox. Pure, so tests can check it.
//
//   sh -c <join cgroups> cgroup.procs… -- nsenter --net=/run/netns/NS -- bwrap … -- sh -c <supervise envd>
//
// - The leading `sh` writes its own pid into every cgroup of the sandbox and only then execs the
//   rest, so the sandbox's first instruction already runs inside its limits and every process
//   it ever forks inherits them: no window in which a child escapes, no polling.
// - `nsenter --net` joins the network namespace the manager created (bwrap must not make its
//   own: the veth, DNAT and filter rules live there). It execs bwrap in place, so the spawned
//   pid is bwrap's outer process for the sandbox's whole life: the pid the runtime records.
// - bwrap makes new mount, pid, ipc, uts and cgroup namespaces, pivots into the overlay and
//   installs its own reaper as PID 1, which plays the VM init's tini.
import { ENVD_PORT } from "../../network/netns.js";

export const ENVD_PATH = "/opt/nestbox/envd/envd.mjs";
export const GUEST_NODE = "/usr/local/bin/node";
/** Same environment as the VM init (images/guest/nestbox-init). */
export const GUEST_ENV: Readonly<Record<string, string>> = {
  PATH: "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
  HOME: "/root",
  LANG: "C.UTF-8",
};

/**
 * Root in the sandbox keeps what envd and ordinary root work need (users, file ownership,
 * signals, raw sockets for ping) and nothing that reaches past the sandbox: no CAP_SYS_ADMIN
 * (mounts: it could unmount its overlay or mount the host's disks), no CAP_NET_ADMIN (the
 * egress filter and NAT rules live in the network namespace it shares), no CAP_MKNOD (device
 * nodes of host disks), no CAP_SYS_PTRACE/CAP_SYS_MODULE/CAP_SYS_TIME/CAP_SYS_BOOT.
 */
export const SANDBOX_CAPS: readonly string[] = [
  "CAP_CHOWN",
  "CAP_DAC_OVERRIDE",
  "CAP_DAC_READ_SEARCH",
  "CAP_FOWNER",
  "CAP_FSETID",
  "CAP_KILL",
  "CAP_SETGID",
  "CAP_SETUID",
  "CAP_SETPCAP",
  "CAP_SETFCAP",
  "CAP_NET_BIND_SERVICE",
  "CAP_NET_RAW",
  "CAP_SYS_CHROOT",
  "CAP_AUDIT_WRITE",
];

// Runs envd like images/guest/supervise-envd: restarted if it exits (an OOM kill picks the
// largest process of the cgroup, which may be envd itself).
const SUPERVISE_ENVD = [
  "cd /opt/nestbox/envd || exit 1",
  "while :; do",
  `  ${GUEST_NODE} ${ENVD_PATH} --port ${ENVD_PORT} --host 0.0.0.0`,
  '  echo "nestbox: envd exited with status $?; restarting in 1s" >&2',
  "  sleep 1",
  "done",
].join("\n");

// $1.. up to "--" are cgroup.procs files; the rest is the command to exec.
const JOIN_CGROUPS = [
  "pid=$$",
  'while [ "$1" != -- ]; do echo "$pid" >"$1" || exit 121; shift; done',
  "shift",
  'exec "$@"',
].join("\n");

/** Exit status of the launcher when it could not join a cgroup. */
export const JOIN_CGROUP_FAILED = 121;

export interface HostTools {
  sh: string;
  nsenter: string;
  bwrap: string;
}

export const DEFAULT_TOOLS: HostTools = {
  sh: "/bin/sh",
  nsenter: "/usr/bin/nsenter",
  bwrap: "/usr/bin/bwrap",
};

export interface LaunchConfig {
  tools: HostTools;
  /** `/run/netns/<name>` of the sandbox's network namespace. */
  netnsPath: string;
  cgroupProcsFiles: readonly string[];
  /** The overlay's merged directory. */
  rootfs: string;
  hostname: string;
}

export function bwrapArgs(cfg: Pick<LaunchConfig, "rootfs" | "hostname">): string[] {
  const caps = SANDBOX_CAPS.flatMap((c) => ["--cap-add", c]);
  return [
    "--bind",
    cfg.rootfs,
    "/",
    "--proc",
    "/proc",
    "--dev",
    "/dev",
    "--perms",
    "1777",
    "--tmpfs",
    "/dev/shm",
    "--perms",
    "1777",
    "--tmpfs",
    "/tmp",
    "--tmpfs",
    "/run",
    "--perms",
    "1777",
    "--dir",
    "/run/lock",
    // Read-only: tools read CPU and device facts there; nothing in it belongs to other tenants'
    // files, and without CAP_SYS_ADMIN it cannot be remounted writable.
    "--ro-bind",
    "/sys",
    "/sys",
    "--unshare-pid",
    "--unshare-ipc",
    "--unshare-uts",
    "--unshare-cgroup-try",
    "--hostname",
    cfg.hostname,
    "--cap-drop",
    "ALL",
    ...caps,
    "--chdir",
    "/",
  ];
}

/** The full argv, to spawn with env GUEST_ENV in a new session. */
export function launchArgv(cfg: LaunchConfig): string[] {
  for (const f of cfg.cgroupProcsFiles) {
    if (f === "--") throw new Error("cgroup.procs path cannot be --");
  }
  return [
    cfg.tools.sh,
    "-c",
    JOIN_CGROUPS,
    "nestbox-ns-launch",
    ...cfg.cgroupProcsFiles,
    "--",
    cfg.tools.nsenter,
    `--net=${cfg.netnsPath}`,
    "--",
    cfg.tools.bwrap,
    ...bwrapArgs(cfg),
    "--",
    "/bin/sh",
    "-c",
    SUPERVISE_ENVD,
  ];
}
