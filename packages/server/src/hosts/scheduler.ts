import type { Queryable } from "../db/db.js";
import { first } from "../db/db.js";
import { ApiError } from "../errors.js";
import {
  DEFAULT_RESERVE,
  type HostScore,
  type Need,
  type Reserve,
  rankScored,
  type ScoredHostInput,
} from "./scoring.js";

/** A host a sandbox may be placed on, best first. */
export interface HostCandidate {
  id: string;
  address: string;
}

export interface PlacementRequest extends Need {
  teamId: string;
  /** Only hosts with every one of these tags. */
  tags?: readonly string[];
  /** Only this host (a snapshot template lives on one host); `what` names it in errors. */
  onlyHost?: { id: string | null; what: string };
}

export interface SchedulerOptions {
  reserve?: Reserve;
  /** Debug log: each decision with its candidates and scores. */
  debug?: (line: string) => void;
}

interface Row extends ScoredHostInput {
  address: string;
  draining: boolean;
  tags: string[];
}

/** 503 `no_hosts_available` with a message that says why and what to do. */
const noHosts = (message: string) => new ApiError(503, "no_hosts_available", message);

/**
 * Online hosts that may take a sandbox of this size for this team, best first; 503
 * `no_hosts_available` saying why when there is none. Candidates: BYOC isolation (a BYOC
 * team's sandboxes only on its own `byoc` hosts, every other team's only on `regular` ones),
 * not draining, every requested tag, then room (see scoring.ts). The host agent still makes the
 * final admission decision (it knows its real free memory and disk); the caller tries the
 * next candidate when it refuses.
 */
export async function placeSandbox(
  db: Queryable,
  req: PlacementRequest,
  opts: SchedulerOptions = {},
): Promise<HostCandidate[]> {
  const team = await first<{ name: string; is_byoc: boolean }>(
    db,
    "SELECT name, is_byoc FROM teams WHERE id = $1",
    [req.teamId],
  );
  const byoc = team?.is_byoc ?? false;
  const rows = await db.query<Row>(
    `SELECT h.id, h.address, h.draining, h.memory_mb, h.disk_mb, h.cpu_cores,
       ARRAY(SELECT tag FROM host_tags WHERE host_id = h.id) AS tags,
       COALESCE(SUM(s.memory_mb) FILTER (WHERE s.status <> 'paused'), 0) AS live_memory_mb,
       COALESCE(SUM(s.memory_mb) FILTER (WHERE s.status = 'paused'), 0) AS paused_memory_mb,
       COALESCE(SUM(s.disk_size_mb) FILTER (WHERE s.status <> 'paused'), 0) AS live_disk_mb,
       COALESCE(SUM(s.disk_size_mb) FILTER (WHERE s.status = 'paused'), 0) AS paused_disk_mb,
       COALESCE(SUM(s.vcpus) FILTER (WHERE s.status <> 'paused'), 0) AS live_vcpus
     FROM hosts h
     LEFT JOIN sandboxes s ON s.host_id = h.id
       AND s.status IN ('pending', 'running', 'paused', 'missing')
     WHERE h.status = 'online' AND h.address IS NOT NULL
       AND CASE WHEN $1 THEN h.type = 'byoc' AND h.team_id = $2 ELSE h.type = 'regular' END
     GROUP BY h.id
     ORDER BY h.id`,
    [byoc, req.teamId],
  );
  const teamName = team?.name ?? req.teamId;
  if (rows.length === 0)
    throw noHosts(
      byoc
        ? `team ${teamName} is a BYOC team and none of its hosts is online: register one on the Hosts page (or start its agent)`
        : "no host is online: start a host agent (or register one on the Hosts page)",
    );
  let pool = rows;
  if (req.onlyHost) {
    const only = req.onlyHost;
    pool = pool.filter((h) => h.id === only.id);
    if (pool.length === 0)
      throw noHosts(`${only.what} lives on host ${only.id ?? "(none)"}, which is not online`);
  }
  pool = pool.filter((h) => !h.draining);
  if (pool.length === 0)
    throw noHosts(
      req.onlyHost
        ? `${req.onlyHost.what} lives on host ${req.onlyHost.id}, which is draining: undrain it to start sandboxes there`
        : "every online host is draining: undrain one (or register another host)",
    );
  const tags = [...new Set(req.tags ?? [])].sort();
  if (tags.length) {
    pool = pool.filter((h) => tags.every((t) => h.tags.includes(t)));
    if (pool.length === 0)
      throw noHosts(
        `no online host has the tag${tags.length > 1 ? "s" : ""} ${tags.join(", ")}: add ${tags.length > 1 ? "them" : "it"} to a host (POST /v1/hosts/{id}/tags) or create without host_tags`,
      );
  }
  const { ranked, all } = rankScored(pool, req, opts.reserve ?? DEFAULT_RESERVE);
  opts.debug?.(
    `[scheduler] team ${req.teamId}${byoc ? " (byoc)" : ""} needs ${describeNeed(req)}${
      tags.length ? ` tags ${tags.join(",")}` : ""
    }: ${all.map(describeScore).join("; ") || "no candidates"} → ${ranked[0]?.id ?? "none"}`,
  );
  if (ranked.length === 0)
    throw noHosts(`no online host has room for ${describeNeed(req)}: destroy or pause sandboxes`);
  const byId = new Map(pool.map((h) => [h.id, h]));
  return ranked.map((s) => ({ id: s.id, address: byId.get(s.id)?.address ?? "" }));
}

const describeNeed = (n: Need) => `${n.vcpus} vCPU / ${n.memoryMb} MiB (disk ${n.diskMb} MiB)`;

const mb = (v: number) => (Number.isFinite(v) ? `${Math.round(v)}` : "∞");

const describeScore = (s: HostScore) =>
  `${s.id} score=${s.score.toFixed(3)} free mem=${mb(s.freeMemoryMb)}MiB disk=${mb(
    s.freeDiskMb,
  )}MiB vcpus=${Number.isFinite(s.freeVcpus) ? s.freeVcpus.toFixed(1) : "∞"}${s.fits ? "" : " (no room)"}`;
