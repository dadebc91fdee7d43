import { totalmem } from "node:os";
import { EnvdClient } from "../envd/client.js";
import { slotAddresses } from "../network/netns.js";
import type { Runtime, RuntimeState } from "../runtime/runtime.js";
import { checkCapacity, DEFAULT_SLOT_RANGE, type HostLimits, newRecord } from "./admission.js";
import { invalid, notFound, precondition } from "./errors.js";
import { TEMPLATE_NAME_RE } from "./ids.js";
import { MetricRings, SAMPLE_INTERVAL_MS } from "./metrics.js";
import type { CreateParams, ManagerOptions } from "./options.js";
import { recoverSandboxes } from "./recovery.js";
import { SandboxTable } from "./sandboxes.js";
import { SandboxStarter } from "./start.js";
import type { RecordStore, SandboxRecord } from "./store.js";
import { WarmPool } from "./warm-pool.js";

export type { Logger } from "../log.js";
export type { CreateParams, ManagerOptions } from "./options.js";

/** Qemu clones share the template's pages copy-on-write, so declared memory may exceed RAM. */
const MEMORY_OVERCOMMIT = 2;

/**
 * Owns the sandboxes of this host: their lifecycle under a per-sandbox lock, the TTL reaper and
 * metrics sampling. Its errors are `AgentError`s (or the runtime's `RuntimeError`s; envd's own
 * errors pass through): the RPC face gives them their Connect codes.
 */
export class SandboxManager {
  private readonly table: SandboxTable;
  private readonly starter: SandboxStarter;
  private readonly pool: WarmPool;
  private readonly limits: HostLimits;
  private autoPaused: string[] = [];
  private timers: NodeJS.Timeout[] = [];

  constructor(private readonly opts: ManagerOptions) {
    const instance = opts.instance ?? "s";
    if (!/^[a-z]$/.test(instance)) throw new Error("instance must be one letter a-z");
    this.table = new SandboxTable(opts.runtime, opts.log, opts.nestboxDir, instance);
    this.limits = {
      nestboxDir: opts.nestboxDir,
      instance,
      memoryCapacityMb:
        opts.memoryCapacityMb ?? Math.floor((totalmem() / 2 ** 20 - 1024) * MEMORY_OVERCOMMIT),
      diskReserveMb: opts.diskReserveMb ?? 2048,
      slotRange: opts.slotRange ?? DEFAULT_SLOT_RANGE,
    };
    this.starter = new SandboxStarter(this.table, opts.maxConcurrentStarts);
    this.pool = new WarmPool({
      table: this.table,
      starter: this.starter,
      size: opts.warmPool ?? 0,
      newRecord: (p) => newRecord(p, this.table.records, this.limits),
      checkCapacity: (rec) => checkCapacity(rec, this.table.records, this.limits),
    });
  }

  get runtime(): Runtime {
    return this.opts.runtime;
  }

  get store(): RecordStore {
    return this.table.store;
  }

  /** Re-adopts what survived a restart, removes the rest, then starts the periodic jobs. */
  async start(): Promise<void> {
    await recoverSandboxes(this.table);
    this.timers.push(setInterval(() => void this.reap(), this.opts.reaperIntervalMs ?? 1000));
    this.timers.push(setInterval(() => void this.sample(), SAMPLE_INTERVAL_MS));
    this.pool.schedule(0);
  }

  /** Stops the periodic jobs; sandboxes keep running (a restarted agent re-adopts them). */
  stop(): void {
    this.pool.stop();
    for (const t of this.timers) clearInterval(t);
    this.timers = [];
  }

  /** The sandboxes users have (the warm pool's are nobody's yet). */
  list(): SandboxRecord[] {
    return [...this.table.records.values()].filter((r) => !r.inPool);
  }

  /**
   * What this host has committed, for the heartbeat: memory of every sandbox not paused (the
   * warm pool's too: it holds that memory), disk sizes of all, and the users' sandbox count.
   */
  committed(): { memoryMb: number; diskMb: number; sandboxes: number } {
    let memoryMb = 0;
    let diskMb = 0;
    for (const r of this.table.records.values()) {
      if (r.status !== "paused") memoryMb += r.memoryMb;
      diskMb += r.diskSizeMb;
    }
    return { memoryMb, diskMb, sandboxes: this.list().length };
  }

  get(id: string): SandboxRecord {
    const rec = this.table.records.get(id);
    if (!rec || rec.inPool) throw notFound(id);
    return rec;
  }

  /** Ids auto-paused by the reaper since the last call. */
  drainAutoPaused(): string[] {
    const out = this.autoPaused;
    this.autoPaused = [];
    return out;
  }

  touch(id: string): void {
    const rec = this.get(id);
    rec.lastActiveAtMs = Date.now();
  }

  /** A new idle timeout (0 = never auto-pause), counted from now. */
  setTimeout(id: string, timeoutSec: number): SandboxRecord {
    if (!Number.isInteger(timeoutSec) || timeoutSec < 0 || timeoutSec > 31 * 86400)
      throw invalid("timeout_sec must be between 0 and 31 days");
    const rec = this.get(id);
    if (rec.status !== "running" && rec.status !== "paused")
      throw precondition(`sandbox ${id} is ${rec.status}`);
    rec.timeoutSec = timeoutSec;
    rec.lastActiveAtMs = Date.now();
    this.table.persist(rec);
    return rec;
  }

  envd(id: string): EnvdClient {
    const rec = this.get(id);
    if (rec.status !== "running") throw precondition(`sandbox ${id} is ${rec.status}, not running`);
    this.touch(id);
    return new EnvdClient(
      slotAddresses(rec.network.slot).sandbox,
      rec.envdAccessToken || undefined,
    );
  }

  metricsOf(id: string): MetricRings {
    this.get(id);
    let m = this.table.metrics.get(id);
    if (!m) {
      m = new MetricRings();
      this.table.metrics.set(id, m);
    }
    return m;
  }

  /** A warm pool entry when one fits, else a new start (after giving up entries for room). */
  create(p: CreateParams): Promise<SandboxRecord> {
    const rec = newRecord(p, this.table.records, this.limits);
    return this.pool.whileCreating(async () => {
      const claimed = await this.pool.claim(rec);
      if (claimed) return claimed;
      await this.pool.makeRoom(rec);
      return this.starter.start(rec);
    });
  }

  async destroy(id: string): Promise<void> {
    this.get(id);
    await this.table.lock.run(id, async () => {
      const rec = this.table.records.get(id);
      if (!rec) throw notFound(id);
      rec.status = "stopping";
      this.table.persist(rec);
      await this.table.teardown(rec);
      this.opts.log.info("sandbox destroyed", { sandboxId: id });
    });
    // Its room may be what the warm pool was waiting for.
    this.pool.schedule();
  }

  /** See `SandboxTable.onStopping`: told of every sandbox as it stops running. */
  onStopping(listener: (sandboxId: string) => void): void {
    this.table.onStopping(listener);
  }

  async pause(id: string): Promise<void> {
    this.get(id);
    await this.table.lock.run(id, async () => {
      const rec = this.get(id);
      if (rec.status === "paused") throw precondition(`sandbox ${id} is already paused`);
      if (rec.status !== "running" || !rec.runtime)
        throw precondition(`sandbox ${id} is ${rec.status}`);
      this.table.notifyStopping(id);
      rec.runtime = await this.runtime.pause(this.table.spec(rec), rec.runtime);
      rec.status = "paused";
      this.table.persist(rec);
      this.opts.log.info("sandbox paused", { sandboxId: id });
    });
  }

  async resume(id: string, timeoutSec?: number): Promise<SandboxRecord> {
    this.get(id);
    return this.table.lock.run(id, async () => {
      const rec = this.get(id);
      if (rec.status !== "paused" || !rec.runtime)
        throw precondition(`sandbox ${id} is ${rec.status}, not paused`);
      checkCapacity({ ...rec, id: "resume-check", diskSizeMb: 0 }, this.table.records, this.limits);
      rec.runtime = await this.runtime.resume(this.table.spec(rec), rec.runtime);
      // The restored guest's clock stopped at the pause: /init carries the time (and is idempotent).
      // A resumed guest re-translates envd's code under TCG, so a busy host can make the first
      // request slow: retry before giving up, and fail the resume rather than leave a stale clock.
      await this.starter.initEnvd(rec, 3).catch(async (e: unknown) => {
        await this.runtime.pause(this.table.spec(rec), rec.runtime as RuntimeState).then(
          (st) => {
            rec.runtime = st;
          },
          (pe: unknown) => this.table.warn(rec.id, "re-pause after failed resume", pe),
        );
        throw e;
      });
      rec.status = "running";
      if (timeoutSec !== undefined && timeoutSec >= 0) rec.timeoutSec = timeoutSec;
      rec.lastActiveAtMs = Date.now();
      this.table.persist(rec);
      this.opts.log.info("sandbox resumed", { sandboxId: id });
      return rec;
    });
  }

  /** Pauses, stores memory and disk as template `name`, destroys the sandbox. */
  async snapshot(id: string, name: string): Promise<number> {
    checkNewTemplateName(name);
    if (this.get(id).status === "running") await this.pause(id);
    return this.table.lock.run(id, async () => {
      const rec = this.get(id);
      if (!rec.runtime) throw precondition(`sandbox ${id} has no runtime state`);
      const { sizeBytes } = await this.runtime.snapshotToTemplate(
        this.table.spec(rec),
        rec.runtime,
        name,
      );
      await this.table.teardown(rec);
      this.opts.log.info("sandbox snapshotted into template", {
        sandboxId: id,
        template: name,
        sizeBytes,
      });
      return sizeBytes;
    });
  }

  async flatten(id: string, name: string): Promise<number> {
    checkNewTemplateName(name);
    this.get(id);
    return this.table.lock.run(id, async () => {
      const rec = this.get(id);
      if (!rec.runtime) throw precondition(`sandbox ${id} has no runtime state`);
      const { sizeBytes } = await this.runtime.flattenToTemplate(
        this.table.spec(rec),
        rec.runtime,
        name,
      );
      await this.table.teardown(rec);
      this.opts.log.info("sandbox flattened into template", {
        sandboxId: id,
        template: name,
        sizeBytes,
      });
      return sizeBytes;
    });
  }

  async deleteTemplate(name: string): Promise<void> {
    if (!TEMPLATE_NAME_RE.test(name))
      throw invalid(`invalid template name ${JSON.stringify(name)}`);
    const users = this.list().filter((r) => r.template === name);
    if (users.length > 0)
      throw precondition(`template ${name} is used by ${users.length} sandbox(es)`);
    await this.runtime.deleteTemplate(name);
  }

  /** Destroys the pooled sandboxes (at shutdown: nobody will claim them). */
  drainPool(): Promise<void> {
    return this.pool.drain();
  }

  async destroyAll(): Promise<void> {
    await this.pool.drain();
    await Promise.all(
      this.list().map((r) =>
        this.destroy(r.id).catch((e: unknown) => this.table.warn(r.id, "destroy", e)),
      ),
    );
  }

  private async reap(): Promise<void> {
    const now = Date.now();
    for (const rec of this.list()) {
      if (rec.status !== "running" || rec.timeoutSec <= 0) continue;
      if (now - rec.lastActiveAtMs < rec.timeoutSec * 1000) continue;
      // Mark first so the next tick does not start a second pause.
      rec.lastActiveAtMs = Number.POSITIVE_INFINITY;
      try {
        await this.pause(rec.id);
        this.autoPaused.push(rec.id);
        this.opts.log.info("sandbox auto-paused after inactivity", {
          sandboxId: rec.id,
          timeoutSec: rec.timeoutSec,
        });
      } catch (err) {
        this.opts.log.error("auto-pause failed, destroying", {
          sandboxId: rec.id,
          err: String(err),
        });
        await this.destroy(rec.id).catch((e: unknown) => this.table.warn(rec.id, "destroy", e));
      }
    }
  }

  private sampling = false;
  private async sample(): Promise<void> {
    if (this.sampling) return;
    this.sampling = true;
    try {
      const ts = Date.now() / 1000;
      for (const rec of this.list()) {
        if (rec.status !== "running" || !rec.runtime) continue;
        try {
          const u = await this.runtime.usage(this.table.spec(rec), rec.runtime);
          this.metricsOf(rec.id).add({
            timestampUnix: ts,
            cpuPct: u.cpuPct,
            memBytes: u.memBytes,
            diskBytes: u.diskBytes,
          });
        } catch (err) {
          // Raced with a pause or destroy; the next sample sees the new state.
          void err;
        }
      }
    } finally {
      this.sampling = false;
    }
  }
}

/** A name a sandbox may be snapshotted or flattened into. */
function checkNewTemplateName(name: string): void {
  if (!TEMPLATE_NAME_RE.test(name)) throw invalid(`invalid template name ${JSON.stringify(name)}`);
  if (name === "base") throw invalid("template name 'base' is reserved");
}

export type { RuntimeState };
