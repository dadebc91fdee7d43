import { statfsSync } from "node:fs";
import { availableParallelism, machine, totalmem } from "node:os";
import { NESTBOX_VERSION } from "@nestbox/proto/version";
import type { HostFacts } from "./api.js";

/**
 * The capacity this agent offers, from the same settings the SandboxManager enforces. The
 * memory default repeats the manager's (host RAM − 1 GiB, × 2 overcommit for copy-on-write
 * clones). Disk is the data directory's file system size above the reserve: overlays are
 * sparse, so the scheduler's sum of sandbox disk sizes is compared with what could be used.
 */
export function hostFacts(opts: {
  address: string;
  runtime: "qemu" | "namespace";
  nestboxDir: string;
  memoryCapacityMb: number | undefined;
  diskReserveMb: number | undefined;
}): HostFacts {
  const fs = statfsSync(opts.nestboxDir);
  const fsMb = Math.floor((fs.blocks * fs.bsize) / 2 ** 20);
  return {
    address: opts.address,
    runtime: opts.runtime,
    arch: machine()
      .toLowerCase()
      .replace(/[^a-z0-9_]/g, "_"),
    cpu_cores: availableParallelism(),
    memory_mb: Math.max(0, opts.memoryCapacityMb ?? Math.floor((totalmem() / 2 ** 20 - 1024) * 2)),
    disk_mb: Math.max(0, fsMb - (opts.diskReserveMb ?? 2048)),
    agent_version: agentVersion(),
  };
}

/** The Nestbox version this agent registers with (the one source, in @nestbox/proto). */
export function agentVersion(): string {
  return NESTBOX_VERSION;
}
