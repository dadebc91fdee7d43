// Where envd publishes loopback-only services, from `--forward-localhost`.

import { isIPv4 } from "node:net";
import { networkInterfaces } from "node:os";

/**
 * Every sandbox's fixed guest address (images/README.md): on eth0 in a VM, on the network
 * namespace's loopback in the namespace runtime. The host agent's port proxy reaches it.
 */
export const GUEST_ADDRESS = "169.254.0.21";

export class ForwardAddressError extends Error {
  override name = "ForwardAddressError";
}

function isLocalAddress(address: string): boolean {
  return Object.values(networkInterfaces()).some((addrs) =>
    (addrs ?? []).some((a) => a.address === address),
  );
}

/**
 * The external address to forward to, or undefined when forwarding is off.
 * - `auto` (default): the guest address if this machine has it, i.e. envd runs in a sandbox;
 *   never on a developer's host, where publishing localhost services would expose them.
 * - `off`: never.
 * - an IPv4 address: that address, which must be local.
 */
export function resolveForwardAddress(mode: string): string | undefined {
  if (mode === "off") return undefined;
  if (mode === "auto") return isLocalAddress(GUEST_ADDRESS) ? GUEST_ADDRESS : undefined;
  if (!isIPv4(mode)) {
    throw new ForwardAddressError(
      `--forward-localhost must be auto, off or an IPv4 address, got ${JSON.stringify(mode)}`,
    );
  }
  if (mode.startsWith("127.") || mode === "0.0.0.0") {
    throw new ForwardAddressError(
      `--forward-localhost ${mode}: must be a non-loopback, non-wildcard address`,
    );
  }
  if (!isLocalAddress(mode)) {
    throw new ForwardAddressError(`--forward-localhost ${mode}: no local interface has it`);
  }
  return mode;
}
