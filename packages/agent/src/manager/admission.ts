import { statfsSync } from "node:fs";
import { HOST_VETH_PREFIX } from "../network/host-firewall.js";
import { MAX_SLOT } from "../network/netns.js";
import { alreadyExists, exhausted, invalid } from "./errors.js";
import { newSandboxId, SANDBOX_ID_RE, TEMPLATE_NAME_RE } from "./ids.js";
import type { CreateParams } from "./options.js";
import type { SandboxRecord } from "./store.js";

/** What a host can take: the limits a create is checked against. */
export interface HostLimits {
  nestboxDir: string;
  instance: string;
  memoryCapacityMb: number;
  diskReserveMb: number;
  slotRange: [number, number];
}

export const DEFAULT_SLOT_RANGE: [number, number] = [1, MAX_SLOT];

/** A create's parameters, validated, as the record of a sandbox about to start (on a free slot). */
export function newRecord(
  p: CreateParams,
  records: ReadonlyMap<string, SandboxRecord>,
  limits: HostLimits,
): SandboxRecord {
  const id = p.sandboxId || newSandboxId();
  if (!SANDBOX_ID_RE.test(id)) throw invalid("sandbox_id must be 20 characters [a-z0-9]");
  if (records.has(id)) throw alreadyExists(`sandbox ${id} already exists`);
  const template = p.template || "base";
  if (!TEMPLATE_NAME_RE.test(template))
    throw invalid(`invalid template name ${JSON.stringify(template)}`);
  // E2B's defaults, which are also the size templates are snapshotted at (other sizes boot).
  const vcpus = p.vcpus || 2;
  const memoryMb = p.memoryMb || 512;
  const diskSizeMb = p.diskSizeMb || 5120;
  const timeoutSec = p.timeoutSec ?? 0;
  if (vcpus < 1 || vcpus > 64) throw invalid("vcpus must be 1-64");
  if (memoryMb < 128 || memoryMb > 262_144) throw invalid("memory_mb must be 128-262144");
  if (diskSizeMb < 512 || diskSizeMb > 4_194_304) throw invalid("disk_size_mb must be 512-4194304");
  if (timeoutSec < 0 || timeoutSec > 31 * 86400)
    throw invalid("timeout_sec must be 0 (never) to 31 days");
  for (const [k] of Object.entries(p.envVars ?? {})) {
    if (!k || k.includes("=") || k.includes("\0"))
      throw invalid(`invalid env var name ${JSON.stringify(k)}`);
  }
  if (p.defaultUser && !/^[a-z_][a-z0-9_-]{0,31}$/.test(p.defaultUser))
    throw invalid("invalid default_user");
  const slot = freeSlot(records, limits.slotRange);
  const short = id.slice(0, 15 - HOST_VETH_PREFIX.length - 1);
  return {
    id,
    template,
    vcpus,
    memoryMb,
    diskSizeMb,
    timeoutSec,
    envVars: p.envVars ?? {},
    metadata: p.metadata ?? {},
    defaultUser: p.defaultUser || "user",
    defaultWorkdir: p.defaultWorkdir ?? "",
    allowInternetAccess: p.allowInternetAccess ?? true,
    envdAccessToken: p.envdAccessToken ?? "",
    createdAtMs: Date.now(),
    lastActiveAtMs: Date.now(),
    status: "starting",
    network: {
      namespace: `${HOST_VETH_PREFIX}${limits.instance}-${id}`,
      hostVeth: `${HOST_VETH_PREFIX}${limits.instance}${short}`,
      slot,
    },
  };
}

function freeSlot(records: ReadonlyMap<string, SandboxRecord>, [lo, hi]: [number, number]): number {
  const used = new Set([...records.values()].map((r) => r.network.slot));
  for (let s = lo; s <= hi; s++) if (!used.has(s)) return s;
  throw exhausted("no free network slot on this host");
}

/**
 * Whether `rec` fits next to `records`: declared memory of everything not paused within the
 * capacity, and room on disk above the reserve. Throws `resource_exhausted` when it does not.
 */
export function checkCapacity(
  rec: SandboxRecord,
  records: ReadonlyMap<string, SandboxRecord>,
  limits: HostLimits,
): void {
  const live = [...records.values()];
  const memory = live.filter((r) => r.status !== "paused").reduce((a, r) => a + r.memoryMb, 0);
  if (memory + rec.memoryMb > limits.memoryCapacityMb) {
    throw exhausted(
      `not enough memory on this host: ${memory} of ${limits.memoryCapacityMb} MiB promised, ${rec.memoryMb} more asked`,
    );
  }
  // Disks are sparse copy-on-write overlays: what matters is the space actually left, and
  // a new sandbox needs room to start writing (up to 1 GiB of its disk) above the reserve.
  const fs = statfsSync(limits.nestboxDir);
  const freeMb = Math.floor((fs.bavail * fs.bsize) / 2 ** 20);
  const need = Math.min(rec.diskSizeMb, 1024);
  if (freeMb - limits.diskReserveMb < need) {
    throw exhausted(
      `not enough disk on this host: ${freeMb} MiB free, ${limits.diskReserveMb} MiB reserved, ${need} MiB needed`,
    );
  }
}
