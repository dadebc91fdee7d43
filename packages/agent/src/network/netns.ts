// Per-sandbox network: a network namespace holding the guest's TAP device, joined to the host by
// a veth pair. Every guest uses the same fixed address (169.254.0.21, see images/README.md);
// the namespace DNATs traffic for its veth address to the guest, so the host reaches sandbox N
// at its own veth address and never needs to know the guest address.
//
// Everything is done with `ip`, `sysctl` and `nft` child processes rather than netlink bindings:
// no native dependency, and each step is the command an operator would type to debug it.
import { execFile } from "node:child_process";

export const GUEST_ADDRESS = "169.254.0.21";
export const GATEWAY_ADDRESS = "169.254.0.22";
export const GUEST_PREFIX_LENGTH = 30;
export const ENVD_PORT = 49983;
/** The TAP side's MAC, identical in every namespace (see createSandboxNetwork). */
export const GATEWAY_MAC = "02:4e:42:00:00:16";

/** Sandbox veth pairs are numbered /30 blocks of this /16: 16384 slots. */
export const VETH_NETWORK = "10.250.0.0/16";
export const MAX_SLOT = 16383;

export interface SandboxNetworkOptions {
  /** Network namespace name (`ip netns` name). */
  namespace: string;
  /** Selects the veth /30 block: host side `.1`, namespace side `.2` of block `slot`. */
  slot: number;
  /** Host-side veth name (at most 15 characters, unique on the host). */
  hostVeth: string;
  /** Namespace-side veth name; defaults to `veth0`. */
  nsVeth?: string;
  /** TAP device QEMU attaches to; defaults to `tap0`. */
  tap?: string;
  /**
   * Let the sandbox open connections to public addresses (`allow_internet_access`). Default
   * true. The host, other sandboxes and private ranges are unreachable either way.
   */
  allowInternetAccess?: boolean;
  /**
   * Where the guest address lives: "tap" (default) behind a TAP device for a VM; "local" on the
   * namespace's loopback, for runtimes whose envd runs in the namespace itself.
   */
  guestLink?: "tap" | "local";
}

export interface SandboxNetwork {
  namespace: string;
  hostVeth: string;
  nsVeth: string;
  tap: string;
  /** Host end of the veth pair. */
  hostAddress: string;
  /** Namespace end of the veth pair: the address the host uses to reach the guest. */
  sandboxAddress: string;
  guestAddress: string;
  gatewayAddress: string;
}

export type NetworkStep = "validate" | "netns" | "veth" | "address" | "nftables" | "destroy";

/** A failed network command, with what it ran and what it said. */
export class NetworkSetupError extends Error {
  override readonly name = "NetworkSetupError";
  constructor(
    message: string,
    readonly step: NetworkStep,
    readonly command: readonly string[] = [],
    readonly exitCode: number | null = null,
    readonly stderr = "",
  ) {
    super(message);
  }
}

/** The veth addresses of a slot. */
export function slotAddresses(slot: number): { host: string; sandbox: string; prefixLength: 30 } {
  if (!Number.isInteger(slot) || slot < 0 || slot > MAX_SLOT) {
    throw new NetworkSetupError(`slot must be an integer 0..${MAX_SLOT}, got ${slot}`, "validate");
  }
  const offset = slot * 4;
  const prefix = `10.250.${Math.floor(offset / 256)}.`;
  const last = offset % 256;
  return { host: `${prefix}${last + 1}`, sandbox: `${prefix}${last + 2}`, prefixLength: 30 };
}

const IFNAME = /^[A-Za-z0-9_.-]{1,15}$/;
const NSNAME = /^[A-Za-z0-9_.-]{1,64}$/;

function checkName(kind: string, value: string, pattern: RegExp): void {
  if (!pattern.test(value)) {
    throw new NetworkSetupError(`invalid ${kind} name: ${JSON.stringify(value)}`, "validate");
  }
}

interface RunResult {
  stdout: string;
  stderr: string;
}

function run(step: NetworkStep, argv: readonly string[], input?: string): Promise<RunResult> {
  const [file, ...args] = argv;
  if (file === undefined) {
    return Promise.reject(new NetworkSetupError("empty command", step));
  }
  return new Promise((resolve, reject) => {
    const child = execFile(file, args, { timeout: 30_000 }, (error, stdout, stderr) => {
      if (error) {
        const code = typeof error.code === "number" ? error.code : null;
        const detail = stderr.trim() || error.message;
        reject(
          new NetworkSetupError(`${argv.join(" ")}: ${detail}`, step, argv, code, stderr.trim()),
        );
        return;
      }
      resolve({ stdout, stderr });
    });
    if (input !== undefined) {
      child.stdin?.end(input);
    }
  });
}

/** argv that runs `argv` inside the namespace (for QEMU and other per-sandbox processes). */
export function netnsExec(namespace: string, argv: readonly string[]): string[] {
  checkName("namespace", namespace, NSNAME);
  return ["ip", "netns", "exec", namespace, ...argv];
}

/**
 * Destinations a sandbox never reaches, whatever its internet policy: the host and its other
 * sandboxes (all of 10.250.0.0/16 is inside 10/8), private networks the host may sit on, cloud
 * metadata (169.254.169.254) and other link-local, loopback, multicast and reserved space.
 */
export const BLOCKED_DESTINATIONS = [
  "0.0.0.0/8",
  "10.0.0.0/8",
  "100.64.0.0/10",
  "127.0.0.0/8",
  "169.254.0.0/16",
  "172.16.0.0/12",
  "192.168.0.0/16",
  "224.0.0.0/4",
  "240.0.0.0/4",
];

/**
 * The namespace's own ruleset. NAT: the host's traffic to the sandbox address goes to the
 * guest; the guest's outbound traffic leaves as the namespace's veth address. Filter: only
 * connections the host opened, plus (when allowed) new outbound connections to public
 * addresses. Both the forward path (a VM behind the TAP) and the output path (a namespace
 * runtime's processes) are covered.
 */
function nftRuleset(net: SandboxNetwork, allowInternetAccess: boolean): string {
  const blocked = `{ ${BLOCKED_DESTINATIONS.join(", ")} }`;
  const egress = allowInternetAccess ? "accept" : "drop";
  return `${[
    "table ip nestbox {",
    "  chain prerouting {",
    "    type nat hook prerouting priority dstnat; policy accept;",
    // Everything the host sends to the sandbox address is for the guest (envd, user ports).
    `    iifname "${net.nsVeth}" ip daddr ${net.sandboxAddress} dnat to ${net.guestAddress}`,
    "  }",
    "  chain postrouting {",
    "    type nat hook postrouting priority srcnat; policy accept;",
    `    oifname "${net.nsVeth}" ip saddr ${net.guestAddress} masquerade`,
    "  }",
    "  chain forward {",
    "    type filter hook forward priority filter; policy drop;",
    "    ct state established,related accept",
    `    iifname "${net.nsVeth}" ct status dnat accept`,
    `    iifname "${net.nsVeth}" drop`,
    `    ip daddr ${blocked} drop`,
    `    oifname "${net.nsVeth}" ${egress}`,
    "  }",
    "  chain output {",
    "    type filter hook output priority filter; policy accept;",
    `    oifname "${net.nsVeth}" ct state established,related accept`,
    `    oifname "${net.nsVeth}" ip daddr ${blocked} drop`,
    `    oifname "${net.nsVeth}" ${egress}`,
    "  }",
    "}",
  ].join("\n")}\n`;
}

/**
 * Creates the namespace, veth pair, TAP device and NAT rules. On failure, whatever was created is
 * removed again before the error is thrown.
 */
export async function createSandboxNetwork(opts: SandboxNetworkOptions): Promise<SandboxNetwork> {
  const nsVeth = opts.nsVeth ?? "veth0";
  const tap = opts.tap ?? "tap0";
  checkName("namespace", opts.namespace, NSNAME);
  checkName("interface", opts.hostVeth, IFNAME);
  checkName("interface", nsVeth, IFNAME);
  checkName("interface", tap, IFNAME);
  const addrs = slotAddresses(opts.slot);
  const net: SandboxNetwork = {
    namespace: opts.namespace,
    hostVeth: opts.hostVeth,
    nsVeth,
    tap,
    hostAddress: addrs.host,
    sandboxAddress: addrs.sandbox,
    guestAddress: GUEST_ADDRESS,
    gatewayAddress: GATEWAY_ADDRESS,
  };
  const ns = opts.namespace;
  // Four processes rather than fifteen: every `ip` is a fork of the agent, and under load
  // (twenty creates at once on two cores) those forks were a measurable share of a create.
  await run("netns", ["ip", "netns", "add", ns]);
  try {
    await run(
      "veth",
      ["ip", "-batch", "-"],
      lines([
        `link add ${net.hostVeth} type veth peer name ${nsVeth} netns ${ns}`,
        `addr add ${net.hostAddress}/30 dev ${net.hostVeth}`,
        `link set ${net.hostVeth} up`,
      ]),
    );
    const guestSide =
      (opts.guestLink ?? "tap") === "tap"
        ? [
            `tuntap add dev ${tap} mode tap`,
            // Every clone's guest remembers the gateway MAC from the template's boot: constant.
            `link set dev ${tap} address ${GATEWAY_MAC}`,
            `addr add ${GATEWAY_ADDRESS}/${GUEST_PREFIX_LENGTH} dev ${tap}`,
            `link set ${tap} up`,
          ]
        : // envd runs in this namespace: the DNAT target is simply a local address.
          [`addr add ${GUEST_ADDRESS}/32 dev lo`];
    await run(
      "address",
      ["ip", "-n", ns, "-batch", "-"],
      lines([
        "link set lo up",
        `addr add ${net.sandboxAddress}/30 dev ${nsVeth}`,
        `link set ${nsVeth} up`,
        ...guestSide,
        `route add default via ${net.hostAddress} dev ${nsVeth}`,
      ]),
    );
    // ip_forward is per namespace: set from inside it, in the same process as the ruleset.
    await run(
      "nftables",
      netnsExec(ns, ["/bin/sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward && exec nft -f -"]),
      nftRuleset(net, opts.allowInternetAccess ?? true),
    );
  } catch (error) {
    await destroySandboxNetwork(net).catch(() => undefined);
    throw error;
  }
  return net;
}

const lines = (l: readonly string[]) => `${l.join("\n")}\n`;

/**
 * Removes the namespace (which takes its TAP and veth end with it) and the host veth if it is
 * still there. Idempotent: missing pieces are not an error. Processes still running inside the
 * namespace (QEMU) must be stopped first, or the namespace lingers until they exit.
 */
export async function destroySandboxNetwork(
  net: Pick<SandboxNetwork, "namespace" | "hostVeth">,
): Promise<void> {
  checkName("namespace", net.namespace, NSNAME);
  checkName("interface", net.hostVeth, IFNAME);
  const gone = (pattern: RegExp) => (err: unknown) => {
    if (!(err instanceof NetworkSetupError && pattern.test(err.message))) throw err;
  };
  await run("destroy", ["ip", "netns", "delete", net.namespace]).catch(
    gone(/No such file or directory/),
  );
  // Deleting the namespace removes the veth pair (asynchronously); losing that race is success.
  await run("destroy", ["ip", "link", "delete", net.hostVeth]).catch(gone(/Cannot find device/));
}
