// Internal: the cgroup v1 groups of one namespace sandbox. Each controller lives in its own
// hierarchy on hybrid hosts (cpu and cpuacct may or may not be co-mounted), so a sandbox's
// "cgroup" is one directory per hierarchy, all named `<parent>/<sandbox id>`.
//
// Why v1: these hosts mount the controllers as v1 (hybrid mode); the unified v2 tree has no
// controllers enabled. A v2 implementation would be the same shape with other file names.
import { readFileSync } from "node:fs";
import { mkdir, readFile, rmdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { RuntimeError } from "../runtime.js";
import { isGone } from "./command.js";

export type Controller = "memory" | "pids" | "freezer" | "cpu" | "cpuacct";
const CONTROLLERS: readonly Controller[] = ["memory", "pids", "freezer", "cpu", "cpuacct"];

/** Mount point of each needed v1 controller, from /proc/self/mounts. */
export type Hierarchies = Readonly<Record<Controller, string>>;

export function findHierarchies(mounts = readFileSync("/proc/self/mounts", "utf8")): Hierarchies {
  const found: Partial<Record<Controller, string>> = {};
  for (const line of mounts.split("\n")) {
    const [, target, type, options] = line.split(" ");
    if (type !== "cgroup" || target === undefined || options === undefined) continue;
    const opts = options.split(",");
    for (const c of CONTROLLERS) {
      if (opts.includes(c) && found[c] === undefined) found[c] = unescapeMount(target);
    }
  }
  const missing = CONTROLLERS.filter((c) => found[c] === undefined);
  if (missing.length > 0) {
    throw new RuntimeError(
      "failed_precondition",
      `cgroup v1 controllers not mounted: ${missing.join(", ")} (the namespace runtime needs ` +
        "memory, pids, freezer, cpu and cpuacct under /sys/fs/cgroup)",
    );
  }
  return found as Hierarchies;
}

/** /proc/mounts escapes space, tab, newline and backslash as octal. */
export function unescapeMount(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_, oct: string) =>
    String.fromCharCode(Number.parseInt(oct, 8)),
  );
}

export interface CgroupLimits {
  memoryBytes: number;
  pidsMax: number;
  /** Relative CPU weight, 1024 per vCPU. */
  cpuShares: number;
  /** Hard CPU cap in microseconds per 100 ms period (vcpus × 100 000), like a VM's vCPU count. */
  cpuQuotaUs: number;
}

const CPU_PERIOD_US = 100_000;

export function limitsFor(vcpus: number, memoryMb: number, pidsMax: number): CgroupLimits {
  return {
    memoryBytes: memoryMb * 1024 * 1024,
    pidsMax,
    cpuShares: 1024 * vcpus,
    cpuQuotaUs: vcpus * CPU_PERIOD_US,
  };
}

export type FreezerState = "THAWED" | "FREEZING" | "FROZEN";

export class SandboxCgroup {
  constructor(
    readonly hierarchies: Hierarchies,
    /** Relative path inside every hierarchy, e.g. `nestbox-ns/<id>`. */
    readonly path: string,
  ) {}

  dir(controller: Controller): string {
    return join(this.hierarchies[controller], this.path);
  }

  /** One directory per distinct hierarchy (co-mounted controllers share one). */
  dirs(): string[] {
    return [...new Set(CONTROLLERS.map((c) => this.dir(c)))];
  }

  /** The files a process writes its pid into to join every hierarchy. */
  procsFiles(): string[] {
    return this.dirs().map((d) => join(d, "cgroup.procs"));
  }

  /** Creates the groups and sets the limits. On failure the groups are removed again. */
  async create(limits: CgroupLimits): Promise<void> {
    try {
      // recursive: the shared parent (`nestbox-ns`) appears on first use; an existing group
      // of the same name would be a leftover and is reused only after its limits are reset.
      await Promise.all(this.dirs().map((d) => mkdir(d, { recursive: true })));
      await writeFile(
        join(this.dir("memory"), "memory.limit_in_bytes"),
        String(limits.memoryBytes),
      );
      // Without a swap limit the group could page out beyond its limit on hosts with swap.
      await writeOptional(
        join(this.dir("memory"), "memory.memsw.limit_in_bytes"),
        String(limits.memoryBytes),
      );
      await writeFile(join(this.dir("pids"), "pids.max"), String(limits.pidsMax));
      await writeFile(join(this.dir("cpu"), "cpu.shares"), String(limits.cpuShares));
      await writeFile(join(this.dir("cpu"), "cpu.cfs_period_us"), String(CPU_PERIOD_US));
      await writeFile(join(this.dir("cpu"), "cpu.cfs_quota_us"), String(limits.cpuQuotaUs));
    } catch (error) {
      const cause = await this.remove().then(
        () => error,
        (cleanup: unknown) => new AggregateError([error, cleanup], "rollback failed too"),
      );
      throw new RuntimeError("internal", `cannot create cgroup ${this.path}: ${String(error)}`, {
        cause,
      });
    }
  }

  async exists(): Promise<boolean> {
    for (const d of this.dirs()) {
      try {
        await readFile(join(d, "cgroup.procs"), "utf8");
      } catch (error) {
        if (isGone(error)) return false;
        throw error;
      }
    }
    return true;
  }

  async pids(): Promise<number[]> {
    try {
      const text = await readFile(join(this.dir("freezer"), "cgroup.procs"), "utf8");
      return text
        .split("\n")
        .filter((l) => l !== "")
        .map(Number);
    } catch (error) {
      if (isGone(error)) return [];
      throw error;
    }
  }

  async freezerState(): Promise<FreezerState | null> {
    try {
      return (
        await readFile(join(this.dir("freezer"), "freezer.state"), "utf8")
      ).trim() as FreezerState;
    } catch (error) {
      if (isGone(error)) return null;
      throw error;
    }
  }

  /**
   * Freezes every task and waits until the kernel reports FROZEN (FREEZING means some task is
   * still in an uninterruptible sleep; the write has to be repeated to retry those).
   */
  async freeze(timeoutMs = 10_000): Promise<void> {
    await this.setFreezer("FROZEN", timeoutMs);
  }

  async thaw(timeoutMs = 10_000): Promise<void> {
    await this.setFreezer("THAWED", timeoutMs);
  }

  private async setFreezer(target: "FROZEN" | "THAWED", timeoutMs: number): Promise<void> {
    const file = join(this.dir("freezer"), "freezer.state");
    const deadline = Date.now() + timeoutMs;
    for (let attempt = 0; ; attempt++) {
      await writeFile(file, target);
      const state = (await readFile(file, "utf8")).trim();
      if (state === target) return;
      if (Date.now() > deadline) {
        throw new RuntimeError(
          "unavailable",
          `cgroup ${this.path} did not become ${target} within ${timeoutMs} ms (state ${state})`,
        );
      }
      // Back off gently: the first retries are usually enough for tasks leaving a syscall.
      await sleep(Math.min(1 + attempt, 20));
    }
  }

  /**
   * Kills every task: freeze (so nothing can fork while we read the list), SIGKILL all, thaw so
   * the signals are delivered, then wait until the group is empty.
   */
  async killAll(timeoutMs = 10_000): Promise<void> {
    if ((await this.freezerState()) === null) return;
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      await this.freeze(timeoutMs);
      for (const pid of await this.pids()) {
        try {
          process.kill(pid, "SIGKILL");
        } catch (error) {
          if (!isGone(error)) throw error;
        }
      }
      await this.thaw(timeoutMs);
      for (let i = 0; i < 50; i++) {
        if ((await this.pids()).length === 0) return;
        await sleep(Math.min(1 + i, 20));
      }
      if (Date.now() > deadline) {
        throw new RuntimeError(
          "internal",
          `processes of cgroup ${this.path} survived SIGKILL: ${(await this.pids()).join(" ")}`,
        );
      }
    }
  }

  /** Removes the groups (they must be empty). Missing groups are fine. */
  async remove(): Promise<void> {
    const errors: unknown[] = [];
    for (const d of this.dirs()) {
      for (let attempt = 0; ; attempt++) {
        try {
          await rmdir(d);
          break;
        } catch (error) {
          if (isGone(error)) break;
          // EBUSY right after the last task exited: the kernel releases it asynchronously.
          if ((error as NodeJS.ErrnoException).code === "EBUSY" && attempt < 100) {
            await sleep(Math.min(1 + attempt, 20));
            continue;
          }
          errors.push(error);
          break;
        }
      }
    }
    if (errors.length > 0) {
      throw new RuntimeError("internal", `cannot remove cgroup ${this.path}`, {
        cause: new AggregateError(errors),
      });
    }
  }

  /** Cumulative CPU time of the group, in nanoseconds. */
  async cpuUsageNs(): Promise<number> {
    return Number((await readFile(join(this.dir("cpuacct"), "cpuacct.usage"), "utf8")).trim());
  }

  /**
   * Working set like `docker stats`: what the group is charged minus page cache it could drop
   * at once (inactive file pages), so a large file read does not look like memory in use.
   */
  async memoryBytes(): Promise<number> {
    const dir = this.dir("memory");
    const [usage, stat] = await Promise.all([
      readFile(join(dir, "memory.usage_in_bytes"), "utf8"),
      readFile(join(dir, "memory.stat"), "utf8"),
    ]);
    const inactive = /^total_inactive_file (\d+)$/m.exec(stat)?.[1];
    return Math.max(0, Number(usage.trim()) - Number(inactive ?? 0));
  }
}

async function writeOptional(file: string, value: string): Promise<void> {
  try {
    await writeFile(file, value);
  } catch (error) {
    // Absent when the kernel runs without swap accounting: then there is nothing to limit.
    if (!isGone(error)) throw error;
  }
}
