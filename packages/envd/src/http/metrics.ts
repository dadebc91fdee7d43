import { readFile, statfs } from "node:fs/promises";
import { cpus } from "node:os";

/** CPU usage is a delta between two /proc/stat readings; we keep the previous one here. */
let previous: { idle: number; total: number } | undefined;

async function cpuSample(): Promise<{ idle: number; total: number }> {
  const stat = await readFile("/proc/stat", "utf8");
  const line = stat.split("\n", 1)[0] ?? "";
  const fields = line.trim().split(/\s+/).slice(1).map(Number);
  const idle = (fields[3] ?? 0) + (fields[4] ?? 0);
  const total = fields.reduce((a, b) => a + (Number.isFinite(b) ? b : 0), 0);
  return { idle, total };
}

async function cpuUsedPct(): Promise<number> {
  let before = previous;
  if (!before) {
    before = await cpuSample();
    await new Promise((r) => setTimeout(r, 100));
  }
  const now = await cpuSample();
  previous = now;
  const dt = now.total - before.total;
  if (dt <= 0) return 0;
  return Math.round(((dt - (now.idle - before.idle)) / dt) * 10000) / 100;
}

async function memInfo(): Promise<{ total: number; available: number; cached: number }> {
  const text = await readFile("/proc/meminfo", "utf8");
  const kb = (key: string) => {
    const m = new RegExp(`^${key}:\\s+(\\d+)`, "m").exec(text);
    return m?.[1] ? Number(m[1]) * 1024 : 0;
  };
  return { total: kb("MemTotal"), available: kb("MemAvailable"), cached: kb("Cached") };
}

export interface EnvdMetrics {
  ts: number;
  cpu_count: number;
  cpu_used_pct: number;
  mem_total_mib: number;
  mem_used_mib: number;
  mem_total: number;
  mem_used: number;
  mem_cache: number;
  disk_used: number;
  disk_total: number;
}

/** The sandbox's CPU, memory and root-disk usage, in infra envd's `/metrics` shape. */
export async function collectMetrics(diskPath = "/"): Promise<EnvdMetrics> {
  const [pct, mem, fs] = await Promise.all([cpuUsedPct(), memInfo(), statfs(diskPath)]);
  const used = mem.total - mem.available;
  const diskTotal = fs.blocks * fs.bsize;
  return {
    ts: Math.floor(Date.now() / 1000),
    cpu_count: cpus().length,
    cpu_used_pct: pct,
    mem_total_mib: Math.floor(mem.total / (1 << 20)),
    mem_used_mib: Math.floor(used / (1 << 20)),
    mem_total: mem.total,
    mem_used: used,
    mem_cache: mem.cached,
    disk_used: diskTotal - fs.bfree * fs.bsize,
    disk_total: diskTotal,
  };
}
