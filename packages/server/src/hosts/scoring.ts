/**
 * The scheduler's arithmetic, pure (unit-tested in test/unit/scheduler-scoring.test.ts): the
 * seed's least-loaded, bottleneck-first scoring (seed-system-reference §9.3).
 *
 * Per host: usable RAM, CPU and disk are its capacity minus a reserve; used RAM counts live
 * sandboxes in full and paused ones at half (a qemu pause frees the RAM, but resuming needs it
 * back); used CPU counts the vCPUs of sandboxes not paused, against 1.5 × cores (CPU may
 * overcommit: it is scored, never refused); used disk counts live disks in full and paused ones
 * at two thirds. A host is admitted when RAM and disk are free for the request; its score is the
 * smallest of the three free fractions, and the highest score wins.
 */

/** A host as the scheduler weighs it. Null capacities (never reported) count as unlimited. */
export interface ScoredHostInput {
  id: string;
  memory_mb: number | null;
  disk_mb: number | null;
  cpu_cores: number | null;
  /** Σ memory of pending/running/missing sandboxes on it, and of paused ones apart. */
  live_memory_mb: number;
  paused_memory_mb: number;
  live_disk_mb: number;
  paused_disk_mb: number;
  live_vcpus: number;
}

export interface Need {
  vcpus: number;
  memoryMb: number;
  diskMb: number;
}

/**
 * What the control plane keeps free on every host, as a fraction of its capacity capped at the
 * seed's absolute figures (8 GiB RAM, 30 GiB disk, 4 vCPUs). The seed subtracts those figures
 * outright, which suits its large hosts but would leave a 24 GiB test machine with a third of
 * its memory; a fraction keeps small hosts useful and the caps keep large ones from reserving
 * more than the seed did. The agent already reports capacity net of its own reserve (host RAM
 * − 1 GiB, disk above `--disk-reserve-mb`), so this is only headroom for the estimate: 10 % by
 * default, `NESTBOX_HOST_RESERVE_PCT` (0-50) to change it.
 */
export interface Reserve {
  fraction: number;
  maxMemoryMb: number;
  maxDiskMb: number;
  maxVcpus: number;
}

export const DEFAULT_RESERVE: Reserve = {
  fraction: 0.1,
  maxMemoryMb: 8192,
  maxDiskMb: 30_720,
  maxVcpus: 4,
};

/** CPU overcommit factor: vCPUs a host offers per core (scored, not admitted on). */
export const CPU_OVERCOMMIT = 1.5;

export interface HostScore {
  id: string;
  /** Whether RAM and disk have room for the request. */
  fits: boolean;
  /** min(free RAM, free CPU, free disk fractions) after placing the request; higher is better. */
  score: number;
  freeMemoryMb: number;
  freeDiskMb: number;
  freeVcpus: number;
}

const usable = (capacity: number, fraction: number, max: number) =>
  capacity - Math.min(max, capacity * fraction);

/** Scores one host for `need`. */
export function scoreHost(h: ScoredHostInput, need: Need, reserve = DEFAULT_RESERVE): HostScore {
  const usedMem = h.live_memory_mb + h.paused_memory_mb / 2;
  const usedDisk = h.live_disk_mb + (h.paused_disk_mb * 2) / 3;
  const frac = (free: number, total: number) => (total > 0 ? free / total : 0);

  const memTotal =
    h.memory_mb == null ? null : usable(h.memory_mb, reserve.fraction, reserve.maxMemoryMb);
  const diskTotal =
    h.disk_mb == null ? null : usable(h.disk_mb, reserve.fraction, reserve.maxDiskMb);
  const cpuTotal =
    h.cpu_cores == null
      ? null
      : usable(h.cpu_cores * CPU_OVERCOMMIT, reserve.fraction, reserve.maxVcpus);

  const freeMemoryMb = memTotal == null ? Number.POSITIVE_INFINITY : memTotal - usedMem;
  const freeDiskMb = diskTotal == null ? Number.POSITIVE_INFINITY : diskTotal - usedDisk;
  const freeVcpus = cpuTotal == null ? Number.POSITIVE_INFINITY : cpuTotal - h.live_vcpus;
  // Fractions after placing the request, so a big sandbox prefers the host it dents least.
  const memFrac = memTotal == null ? 1 : frac(freeMemoryMb - need.memoryMb, memTotal);
  const diskFrac = diskTotal == null ? 1 : frac(freeDiskMb - need.diskMb, diskTotal);
  const cpuFrac = cpuTotal == null ? 1 : frac(freeVcpus - need.vcpus, cpuTotal);
  return {
    id: h.id,
    fits: freeMemoryMb >= need.memoryMb && freeDiskMb >= need.diskMb,
    score: Math.min(memFrac, diskFrac, cpuFrac),
    freeMemoryMb,
    freeDiskMb,
    freeVcpus,
  };
}

/** The hosts that fit, best first (ties: the order given, which is stable). */
export function rankScored(
  hosts: readonly ScoredHostInput[],
  need: Need,
  reserve = DEFAULT_RESERVE,
): { ranked: HostScore[]; all: HostScore[] } {
  const all = hosts.map((h) => scoreHost(h, need, reserve));
  const ranked = all.filter((s) => s.fits).sort((a, b) => b.score - a.score);
  return { ranked, all };
}

/** The reserve for a percentage (0-50); RangeError otherwise. */
export function reserveFromPercent(pct: number): Reserve {
  if (!Number.isFinite(pct) || pct < 0 || pct > 50)
    throw new RangeError(`the host reserve must be 0-50 (percent), got ${pct}`);
  return { ...DEFAULT_RESERVE, fraction: pct / 100 };
}
