// Resource usage of a qemu sandbox, as the manager's metrics sample it.
import { readFile } from "node:fs/promises";
import type { ResourceUsage, RuntimeState, SandboxSpec } from "../runtime.js";
import { sandboxPath } from "./paths.js";
import { allocatedBytes, isProcessAlive, readStatFields } from "./process.js";

/** CPU use is the QEMU's CPU time since the previous sample of the same sandbox. */
export class UsageMeter {
  private readonly cpuSamples = new Map<string, { ticks: number; at: number }>();

  /** Drops a sandbox's last sample (its QEMU is gone; the next one starts from zero). */
  forget(sandbox: string): void {
    this.cpuSamples.delete(sandbox);
  }

  async measure(spec: SandboxSpec, state: RuntimeState): Promise<ResourceUsage> {
    const diskBytes = await allocatedBytes(sandboxPath(spec.dir, "disk"));
    if (state.paused || state.pid === undefined || !isProcessAlive(state.pid, state.pidStartTime)) {
      return { cpuPct: 0, memBytes: 0, diskBytes };
    }
    const fields = readStatFields(state.pid);
    // utime and stime are fields 14 and 15 of /proc/<pid>/stat (index 11 and 12 after comm).
    const ticks = fields ? Number(fields[11]) + Number(fields[12]) : 0;
    const now = Date.now();
    const previous = this.cpuSamples.get(spec.id);
    this.cpuSamples.set(spec.id, { ticks, at: now });
    let cpuPct = 0;
    if (previous && now > previous.at) {
      // USER_HZ is 100 on every Linux build the agent runs on.
      cpuPct = (((ticks - previous.ticks) / 100) * 1000 * 100) / (now - previous.at);
      cpuPct = Math.max(0, Math.round(cpuPct * 10) / 10);
    }
    return { cpuPct, memBytes: await pssBytes(state.pid), diskBytes };
  }
}

/** Proportional set size: the QEMU's share of memory, counting CoW pages shared with siblings once. */
async function pssBytes(pid: number): Promise<number> {
  try {
    const text = await readFile(`/proc/${pid}/smaps_rollup`, "utf8");
    const kb = /^Pss:\s+(\d+) kB/m.exec(text)?.[1];
    return kb ? Number(kb) * 1024 : 0;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return 0;
    throw error;
  }
}
