import { EnvdClient } from "../envd/client.js";
import { slotAddresses } from "../network/netns.js";
import { AgentError } from "./errors.js";
import type { CreateParams } from "./options.js";
import type { SandboxTable } from "./sandboxes.js";
import type { SandboxStarter } from "./start.js";
import type { SandboxRecord } from "./store.js";

/** The one shape the warm pool holds: what an E2B or `/v1` create asks for by default. */
export const POOL_SHAPE = { template: "base", vcpus: 2, memoryMb: 512, diskSizeMb: 5120 } as const;

export interface WarmPoolDeps {
  table: SandboxTable;
  starter: SandboxStarter;
  /** Entries to keep (0: no pool). */
  size: number;
  newRecord(p: CreateParams): SandboxRecord;
  checkCapacity(rec: SandboxRecord): void;
}

/**
 * Sandboxes of `POOL_SHAPE` started and warmed up ahead of any request. Entries (`inPool`) are
 * nobody's: never listed, reaped or addressable. Refills run one at a time, only while no create
 * runs; a create that does not fit takes an entry's room.
 */
export class WarmPool {
  private creating = 0;
  private filling = false;
  private stopped = false;
  private fillTimer: NodeJS.Timeout | undefined;
  private fillDueAt = 0;

  constructor(private readonly deps: WarmPoolDeps) {}

  /** Runs a create: refills wait until no create is running, and are planned after it. */
  async whileCreating<T>(fn: () => Promise<T>): Promise<T> {
    this.creating++;
    try {
      return await fn();
    } finally {
      this.creating--;
      this.schedule();
    }
  }

  /** Pool entries ready to be taken (warming ones are still starting). */
  private ready(): SandboxRecord[] {
    return [...this.deps.table.records.values()].filter((r) => r.inPool && r.status === "pooled");
  }

  private entries(): SandboxRecord[] {
    return [...this.deps.table.records.values()].filter((r) => r.inPool);
  }

  /**
   * Hands a pooled sandbox to a create that asks for the pool's shape: the record takes the
   * requested id (its resources keep the pool id), and envd gets the sandbox's token, env and
   * user from a second /init. Undefined when the pool has none or the request differs.
   */
  async claim(want: SandboxRecord): Promise<SandboxRecord | undefined> {
    const { table, starter } = this.deps;
    if (
      want.template !== POOL_SHAPE.template ||
      want.vcpus !== POOL_SHAPE.vcpus ||
      want.memoryMb !== POOL_SHAPE.memoryMb ||
      want.diskSizeMb > POOL_SHAPE.diskSizeMb ||
      !want.allowInternetAccess
    )
      return undefined;
    const entry = this.ready()[0];
    if (!entry) return undefined;
    // Taken at once (synchronously), so two creates never claim the same entry.
    table.records.delete(entry.id);
    const rec: SandboxRecord = {
      ...want,
      diskSizeMb: entry.diskSizeMb,
      network: entry.network,
      resourceId: entry.resourceId ?? entry.id,
      ...(entry.runtime ? { runtime: entry.runtime } : {}),
      status: "starting",
    };
    table.records.set(rec.id, rec);
    return table.lock.run(rec.id, async () => {
      // The new record first, then the old one's file: a crash in between leaves two records of
      // one set of resources, both torn down at the next start (neither is running or paused).
      table.persist(rec);
      table.store.remove(entry.id);
      try {
        await starter.initEnvd(rec);
      } catch (err) {
        table.log.warn("warm pool sandbox failed its /init, starting a new one", {
          sandboxId: rec.id,
          poolId: rec.resourceId,
          err: String(err),
        });
        await table.teardown(rec);
        return undefined;
      }
      rec.status = "running";
      rec.lastActiveAtMs = Date.now();
      table.persist(rec);
      table.log.info("sandbox created from the warm pool", {
        sandboxId: rec.id,
        poolId: rec.resourceId,
        template: rec.template,
      });
      return rec;
    });
  }

  /**
   * Capacity for a create, giving up warm pool entries if that is what it takes: they hold
   * memory for sandboxes nobody has asked for yet.
   */
  async makeRoom(rec: SandboxRecord): Promise<void> {
    const { table, checkCapacity } = this.deps;
    for (;;) {
      try {
        checkCapacity(rec);
        return;
      } catch (err) {
        const entry = this.entries()[0];
        if (!(err instanceof AgentError) || err.code !== "resource_exhausted" || !entry) throw err;
        table.log.info("giving up a warm pool sandbox to make room", {
          sandboxId: rec.id,
          poolId: entry.id,
        });
        await table.lock.run(entry.id, () => table.teardown(entry));
      }
    }
  }

  /** Refills the pool soon, when no create is running (a refill would slow it down). */
  schedule(delayMs = 200): void {
    if (!this.deps.size || this.stopped) return;
    // An earlier attempt wins over a later one already planned (a failed refill waits 10 s; a
    // destroy that frees room should not).
    if (this.fillTimer && this.fillDueAt <= Date.now() + delayMs) return;
    clearTimeout(this.fillTimer);
    this.fillDueAt = Date.now() + delayMs;
    this.fillTimer = setTimeout(() => {
      this.fillTimer = undefined;
      void this.fill();
    }, delayMs);
  }

  private async fill(): Promise<void> {
    if (this.filling || this.stopped) return;
    if (this.creating > 0) return this.schedule(500);
    if (this.entries().length >= this.deps.size) return;
    this.filling = true;
    let retryMs = 200;
    try {
      const rec: SandboxRecord = {
        ...this.deps.newRecord({ template: POOL_SHAPE.template, timeoutSec: 0 }),
        inPool: true,
      };
      this.deps.checkCapacity(rec);
      await this.deps.starter.start(rec, warmUp);
    } catch (err) {
      // Full host, no template yet, a failed start: try again later, never in a tight loop.
      retryMs = 10_000;
      this.deps.table.log.warn("warm pool refill failed", { err: String(err) });
    } finally {
      this.filling = false;
    }
    this.schedule(retryMs);
  }

  /** No more refills (the agent is stopping). */
  stop(): void {
    this.stopped = true;
    clearTimeout(this.fillTimer);
    this.fillTimer = undefined;
  }

  /** Stops refilling and destroys the entries (at shutdown: nobody will claim them). */
  async drain(): Promise<void> {
    this.stop();
    const { table } = this.deps;
    await Promise.all(
      this.entries().map((r) =>
        table.lock
          .run(r.id, () => table.teardown(r))
          .catch((e: unknown) => table.warn(r.id, "pool", e)),
      ),
    );
  }
}

/**
 * The first process start in a restored guest is slow (under TCG its code is translated
 * again in every clone): a pooled sandbox makes it before anyone waits for it.
 */
async function warmUp(rec: SandboxRecord): Promise<void> {
  const envd = new EnvdClient(slotAddresses(rec.network.slot).sandbox);
  for await (const _ of envd.process.start(
    { process: { cmd: "/bin/true", args: [], envs: {} } },
    { timeoutMs: 30_000 },
  )) {
    // Only its end matters.
  }
}
