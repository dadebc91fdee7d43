/** One sample of a sandbox's usage. */
export interface MetricPoint {
  timestampUnix: number;
  cpuPct: number;
  memBytes: number;
  diskBytes: number;
}

export type MetricRange = "10m" | "2h" | "24h";

/** A fixed-size ring: the newest `capacity` points, oldest first on read. */
class Ring {
  private readonly points: MetricPoint[] = [];
  constructor(readonly capacity: number) {}
  push(p: MetricPoint): void {
    this.points.push(p);
    if (this.points.length > this.capacity) this.points.shift();
  }
  read(): MetricPoint[] {
    return [...this.points];
  }
  clear(): void {
    this.points.length = 0;
  }
}

/**
 * Three tiers as in the seed agent: 10 min at the 500 ms sampling rate, 2 h at 30 s and 24 h
 * at 5 min. Coarser tiers store the average of the samples in their interval.
 */
export const SAMPLE_INTERVAL_MS = 500;
const TIERS: Record<MetricRange, { everyMs: number; capacity: number }> = {
  "10m": { everyMs: SAMPLE_INTERVAL_MS, capacity: 1200 },
  "2h": { everyMs: 30_000, capacity: 240 },
  "24h": { everyMs: 300_000, capacity: 288 },
};

export class MetricRings {
  private readonly rings = new Map<MetricRange, Ring>();
  private readonly pending = new Map<MetricRange, MetricPoint[]>();

  constructor() {
    for (const [range, t] of Object.entries(TIERS) as [
      MetricRange,
      (typeof TIERS)[MetricRange],
    ][]) {
      this.rings.set(range, new Ring(t.capacity));
      this.pending.set(range, []);
    }
  }

  add(p: MetricPoint): void {
    for (const [range, t] of Object.entries(TIERS) as [
      MetricRange,
      (typeof TIERS)[MetricRange],
    ][]) {
      const ring = this.rings.get(range) as Ring;
      if (t.everyMs === SAMPLE_INTERVAL_MS) {
        ring.push(p);
        continue;
      }
      const buf = this.pending.get(range) as MetricPoint[];
      buf.push(p);
      const first = buf[0] as MetricPoint;
      if ((p.timestampUnix - first.timestampUnix) * 1000 >= t.everyMs) {
        ring.push(average(buf));
        buf.length = 0;
      }
    }
  }

  read(range: MetricRange): MetricPoint[] {
    return (this.rings.get(range) as Ring).read();
  }

  /** Everything, then empty (the control plane persists it before pause/destroy). */
  flush(): Record<MetricRange, MetricPoint[]> {
    const out = { "10m": this.read("10m"), "2h": this.read("2h"), "24h": this.read("24h") };
    for (const r of this.rings.values()) r.clear();
    for (const b of this.pending.values()) b.length = 0;
    return out;
  }
}

function average(points: MetricPoint[]): MetricPoint {
  const n = points.length;
  const last = points[n - 1] as MetricPoint;
  const sum = points.reduce(
    (a, p) => ({ cpu: a.cpu + p.cpuPct, mem: a.mem + p.memBytes, disk: a.disk + p.diskBytes }),
    { cpu: 0, mem: 0, disk: 0 },
  );
  return {
    timestampUnix: last.timestampUnix,
    cpuPct: sum.cpu / n,
    memBytes: Math.round(sum.mem / n),
    diskBytes: Math.round(sum.disk / n),
  };
}

export function isMetricRange(r: string): r is MetricRange {
  return r === "10m" || r === "2h" || r === "24h";
}
