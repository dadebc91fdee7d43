// Which ports to forward, decided from one scan of the listening sockets. Pure, so the rules
// can be tested without sockets.
import type { TcpListener } from "./proc-net.js";

/** Loopback listeners worth publishing, and the address to connect to for each. */
const LOOPBACK_TARGETS: Readonly<Record<string, string>> = {
  "127.0.0.1": "127.0.0.1",
  "::ffff:127.0.0.1": "127.0.0.1",
  "::1": "::1",
};

export interface PlanInput {
  listeners: readonly TcpListener[];
  /** The address forwards listen on. */
  externalAddress: string;
  /** Ports this forwarder listens on right now (their external listener is ours, not a user's). */
  owned: ReadonlySet<number>;
  /** Never forwarded (envd's own port). */
  exclude: ReadonlySet<number>;
}

/**
 * port → loopback address to connect to, for every port that has a listener on 127.0.0.1 or ::1
 * and none on any other address (0.0.0.0, ::, the external address, another interface's):
 * such a port is already reachable from outside, or someone else chose where it listens.
 * 127.0.0.1 is preferred when both loopbacks listen.
 */
export function planForwards(input: PlanInput): Map<number, string> {
  const loopback = new Map<number, string>();
  const elsewhere = new Set<number>();
  for (const l of input.listeners) {
    const target = LOOPBACK_TARGETS[l.address];
    if (target !== undefined) {
      if (loopback.get(l.port) !== "127.0.0.1") loopback.set(l.port, target);
      continue;
    }
    const ours =
      input.owned.has(l.port) &&
      (l.address === input.externalAddress || l.address === `::ffff:${input.externalAddress}`);
    if (!ours) elsewhere.add(l.port);
  }
  const plan = new Map<number, string>();
  for (const [port, target] of loopback) {
    if (!elsewhere.has(port) && !input.exclude.has(port)) plan.set(port, target);
  }
  return plan;
}
