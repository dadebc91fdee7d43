/** How the client commands print: aligned tables, JSON, byte sizes. Pure. */

/** Columns padded to their widest cell (the last column is not padded); ends with a newline. */
export function table(rows: string[][]): string {
  const widths = rows[0]?.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? "").length))) ?? [];
  return rows
    .map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i] ?? 0))).join("  "))
    .join("\n")
    .concat("\n");
}

export const json = (v: unknown): string => `${JSON.stringify(v, null, 2)}\n`;

/** `512 B`, `1.5 KiB`, … `2.0 TiB` (binary units, one decimal above bytes). */
export function bytes(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let v = n;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return u === 0 ? `${n} B` : `${v.toFixed(1)} ${units[u]}`;
}

/** An API timestamp without its fraction of a second: `2026-01-02T03:04:05Z`. */
export const seconds = (iso: string): string => iso.replace(/\.\d+Z$/, "Z");

/** Metadata as `k=v,k2=v2`. */
export const keyValues = (m: Record<string, string>): string =>
  Object.entries(m)
    .map(([k, v]) => `${k}=${v}`)
    .join(",");

/** One field of `sandbox get`'s listing: null as `-`, objects as JSON. */
export const fieldValue = (v: unknown): string =>
  v === null ? "-" : typeof v === "object" ? JSON.stringify(v) : String(v);
