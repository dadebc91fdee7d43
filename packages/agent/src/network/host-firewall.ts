// Host-side rules for every sandbox at once, keyed on the host veth name prefix: sandboxes may
// not open connections to the host itself (agent, control plane, any local address) nor to each
// other, and what they send to the internet leaves masqueraded behind the host's own address.
import { execFile } from "node:child_process";
import { BLOCKED_DESTINATIONS, VETH_NETWORK } from "./netns.js";

/** Every host-side sandbox veth is named with this prefix (see SandboxNetworkOptions.hostVeth). */
export const HOST_VETH_PREFIX = "nbx";
export const HOST_TABLE = "nestbox_host";

export class HostFirewallError extends Error {
  override readonly name = "HostFirewallError";
}

export function hostRuleset(prefix = HOST_VETH_PREFIX): string {
  const sandboxes = `iifname "${prefix}*"`;
  return `${[
    // add+delete makes the whole replacement one idempotent transaction.
    `add table inet ${HOST_TABLE}`,
    `delete table inet ${HOST_TABLE}`,
    `table inet ${HOST_TABLE} {`,
    "  chain input {",
    "    type filter hook input priority filter - 1; policy accept;",
    `    ${sandboxes} ct state established,related accept`,
    `    ${sandboxes} counter drop`,
    "  }",
    "  chain forward {",
    "    type filter hook forward priority filter - 1; policy accept;",
    `    ${sandboxes} oifname "${prefix}*" counter drop`,
    `    ${sandboxes} ct state established,related accept`,
    `    ${sandboxes} ip daddr { ${BLOCKED_DESTINATIONS.join(", ")} } counter drop`,
    `    ${sandboxes} accept`,
    `    oifname "${prefix}*" ct state established,related accept`,
    `    oifname "${prefix}*" counter drop`,
    "  }",
    "  chain postrouting {",
    "    type nat hook postrouting priority srcnat; policy accept;",
    `    ip saddr ${VETH_NETWORK} oifname != "${prefix}*" masquerade`,
    "  }",
    "}",
  ].join("\n")}\n`;
}

function run(argv: string[], input?: string): Promise<string> {
  const [file, ...args] = argv;
  return new Promise((resolve, reject) => {
    const child = execFile(file ?? "", args, { timeout: 15_000 }, (err, stdout, stderr) => {
      if (err) reject(new HostFirewallError(`${argv.join(" ")}: ${stderr.trim() || err.message}`));
      else resolve(stdout);
    });
    if (input !== undefined) child.stdin?.end(input);
  });
}

/**
 * Installs (or replaces) the host table and turns on IPv4 forwarding, which sandboxes' internet
 * traffic needs. Forwarding of anything else stays governed by the host's other rules.
 */
export async function ensureHostFirewall(
  opts: { prefix?: string; forwarding?: boolean } = {},
): Promise<void> {
  await run(["nft", "-f", "-"], hostRuleset(opts.prefix));
  if (opts.forwarding ?? true) await run(["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
}
