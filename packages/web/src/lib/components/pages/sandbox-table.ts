/** The sandboxes table's metadata filter and column sorting (over the rows loaded so far). */
import type { Sandbox } from "$lib/api/client";

/**
 * `key=value` pairs separated by `&` or spaces (the E2B CLI's spelling is `&`). "" means no
 * filter (null); a malformed pair gives the message to show.
 */
export function parseMetadataFilter(raw: string): Record<string, string> | null | string {
  const parts = raw
    .split(/[&\s]+/)
    .map((p) => p.trim())
    .filter(Boolean);
  if (parts.length === 0) return null;
  const out: Record<string, string> = {};
  for (const p of parts) {
    const eq = p.indexOf("=");
    if (eq <= 0) return `“${p}” is not key=value`;
    out[p.slice(0, eq)] = p.slice(eq + 1);
  }
  return out;
}

export type SortKey =
  | "id"
  | "status"
  | "template"
  | "vcpus"
  | "memory"
  | "ends"
  | "host"
  | "created";

/** When a sandbox ends (or ended): ended_at, else the running deadline; for sorting only. */
export function endTime(s: Sandbox): number {
  if (s.ended_at) return Date.parse(s.ended_at);
  const from = s.last_active_at ?? s.started_at;
  if (s.status !== "running" || !from) return Number.POSITIVE_INFINITY;
  return Date.parse(from) + s.timeout_sec * 1000;
}

const value = (s: Sandbox, key: SortKey): string | number => {
  switch (key) {
    case "id":
      return s.id;
    case "status":
      return s.status;
    case "template":
      return s.template;
    case "vcpus":
      return s.vcpus;
    case "memory":
      return s.memory_mb;
    case "ends":
      return endTime(s);
    case "host":
      return s.host_id ?? "";
    case "created":
      return Date.parse(s.created_at);
  }
};

/** A sorted copy; null keeps the API's order (newest first). Ties keep that order too. */
export function sortRows(
  rows: Sandbox[],
  key: SortKey | null,
  dir: "ascending" | "descending",
): Sandbox[] {
  if (!key) return rows;
  const sign = dir === "ascending" ? 1 : -1;
  return rows
    .map((s, i) => ({ s, i }))
    .sort((a, b) => {
      const x = value(a.s, key);
      const y = value(b.s, key);
      const c =
        typeof x === "number" && typeof y === "number"
          ? x === y
            ? 0
            : x < y
              ? -1
              : 1
          : String(x).localeCompare(String(y));
      return c * sign || a.i - b.i;
    })
    .map((e) => e.s);
}
