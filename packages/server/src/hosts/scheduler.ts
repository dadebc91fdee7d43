import type { Queryable } from "../db/db.js";

export interface HostCandidate {
  id: string;
  address: string;
  memory_mb: number | null;
  disk_mb: number | null;
  /** Memory and disk already promised to live sandboxes on this host. */
  used_memory_mb: number;
  used_disk_mb: number;
}

/**
 * Online hosts that could take a sandbox of this size, best first. The host agent makes the
 * final admission decision (it knows its real free memory); this ordering spreads load and
 * skips hosts that obviously cannot fit. Paused sandboxes count half their memory (a qemu pause
 * frees RAM but resume needs it back) and all of their disk.
 */
export async function rankHosts(
  db: Queryable,
  need: { memoryMb: number; diskMb: number },
): Promise<HostCandidate[]> {
  const hosts = await db.query<HostCandidate>(
    `SELECT h.id, h.address, h.memory_mb, h.disk_mb,
       COALESCE(SUM(CASE WHEN s.status = 'paused' THEN s.memory_mb / 2.0 ELSE s.memory_mb END), 0)
         AS used_memory_mb,
       COALESCE(SUM(s.disk_size_mb), 0) AS used_disk_mb
     FROM hosts h
     LEFT JOIN sandboxes s ON s.host_id = h.id
       AND s.status IN ('pending', 'running', 'paused', 'missing')
     WHERE h.status = 'online' AND h.address IS NOT NULL
     GROUP BY h.id`,
  );
  return orderHosts(hosts, need);
}

/**
 * The ranking itself: hosts with room for `need` (an unknown capacity counts as unlimited),
 * the one with the largest free fraction of its scarcer resource first.
 */
export function orderHosts(
  hosts: readonly HostCandidate[],
  need: { memoryMb: number; diskMb: number },
): HostCandidate[] {
  const free = (h: HostCandidate) => ({
    mem: h.memory_mb == null ? Number.POSITIVE_INFINITY : h.memory_mb - h.used_memory_mb,
    disk: h.disk_mb == null ? Number.POSITIVE_INFINITY : h.disk_mb - h.used_disk_mb,
  });
  const score = (h: HostCandidate) => {
    const f = free(h);
    const memFrac = h.memory_mb ? f.mem / h.memory_mb : 1;
    const diskFrac = h.disk_mb ? f.disk / h.disk_mb : 1;
    return Math.min(memFrac, diskFrac);
  };
  return hosts
    .filter((h) => {
      const f = free(h);
      return f.mem >= need.memoryMb && f.disk >= need.diskMb;
    })
    .sort((a, b) => score(b) - score(a));
}
