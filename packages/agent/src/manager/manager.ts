import { execFile } from "node:child_process";
import { mkdirSync, readdirSync, rmSync, statfsSync } from "node:fs";
import { availableParallelism, totalmem } from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { Code, ConnectError } from "@connectrpc/connect";
import { EnvdClient } from "../envd/client.js";
import type { Logger } from "../log.js";
import { HOST_VETH_PREFIX } from "../network/host-firewall.js";
import {
  createSandboxNetwork,
  destroySandboxNetwork,
  MAX_SLOT,
  type SandboxNetwork,
  slotAddresses,
} from "../network/netns.js";
import type { Runtime, RuntimeState, SandboxSpec } from "../runtime/runtime.js";
import { invalid, notFound, precondition, toConnect } from "./errors.js";
import { newSandboxId, SANDBOX_ID_RE, TEMPLATE_NAME_RE } from "./ids.js";
import { KeyedLock } from "./lock.js";
import { MetricRings, SAMPLE_INTERVAL_MS } from "./metrics.js";
import { RecordStore, type SandboxRecord } from "./store.js";

const exec = promisify(execFile);

/** An /init slower than this is repeated: its timestamp set the guest clock that far behind. */
const INIT_CLOCK_TOLERANCE_MS = 300;

export interface ManagerOptions {
  nestboxDir: string;
  runtime: Runtime;
  log: Logger;
  /** Memory the agent may promise to sandboxes, in MiB (default: host RAM − 1 GiB, × overcommit). */
  memoryCapacityMb?: number;
  /** Free disk to keep for the host, in MiB (default 2048): creates are refused below it. */
  diskReserveMb?: number;
  /** Slots this agent may use (tests keep agents apart); default the whole range. */
  slotRange?: [number, number];
  /** How often the TTL reaper looks (default 1 s: E2B's SDK tests expect expiry within ~1 s). */
  reaperIntervalMs?: number;
  /**
   * One letter naming this agent's namespaces and veths (`nbx<letter>-<id>`, `nbx<letter>…`), so
   * agents sharing a host (tests) never take each other's sandboxes for orphans. Default "s".
   */
  instance?: string;
  /**
   * Sandboxes of the default shape (template `base`, 2 vCPUs, 512 MiB, internet on) kept started
   * and warmed up ahead of requests; a matching create takes one and only installs its own
   * token, env and user. Default 0 (none).
   */
  warmPool?: number;
  /** Sandbox starts (runtime start + /init) run at once; more wait (default: CPU count). */
  maxConcurrentStarts?: number;
}

/** The one shape the warm pool holds: what an E2B or `/v1` create asks for by default. */
const POOL_SHAPE = { template: "base", vcpus: 2, memoryMb: 512, diskSizeMb: 5120 } as const;

export interface CreateParams {
  sandboxId?: string;
  template: string;
  vcpus?: number;
  memoryMb?: number;
  diskSizeMb?: number;
  timeoutSec?: number;
  envVars?: Record<string, string>;
  metadata?: Record<string, string>;
  defaultUser?: string;
  defaultWorkdir?: string;
  allowInternet?: boolean;
  envdAccessToken?: string;
}

/** Qemu clones share the template's pages copy-on-write, so declared memory may exceed RAM. */
const MEMORY_OVERCOMMIT = 2;

/**
 * Owns the sandboxes of this host: their records, networks and runtime state, the TTL reaper,
 * metrics sampling, capacity accounting, and recovery after a restart.
 */
export class SandboxManager {
  readonly store: RecordStore;
  private readonly records = new Map<string, SandboxRecord>();
  private readonly metrics = new Map<string, MetricRings>();
  private readonly lock = new KeyedLock();
  private autoPaused: string[] = [];
  private timers: NodeJS.Timeout[] = [];
  private readonly sandboxesDir: string;
  private readonly memoryCapacityMb: number;
  private readonly diskReserveMb: number;

  private readonly instance: string;

  constructor(private readonly opts: ManagerOptions) {
    this.instance = opts.instance ?? "s";
    if (!/^[a-z]$/.test(this.instance)) throw new Error("instance must be one letter a-z");

    // Per instance, so agents sharing a data directory never see each other's sandboxes.
    this.store = new RecordStore(path.join(opts.nestboxDir, "agent", this.instance, "records"));
    this.sandboxesDir = path.join(opts.nestboxDir, "sandboxes", this.instance);
    mkdirSync(this.sandboxesDir, { recursive: true, mode: 0o700 });
    this.memoryCapacityMb =
      opts.memoryCapacityMb ?? Math.floor((totalmem() / 2 ** 20 - 1024) * MEMORY_OVERCOMMIT);
    this.diskReserveMb = opts.diskReserveMb ?? 2048;
  }

  get runtime(): Runtime {
    return this.opts.runtime;
  }

  /** Re-adopts what survived a restart, removes the rest, then starts the periodic jobs. */
  async start(): Promise<void> {
    await this.recover();
    this.timers.push(setInterval(() => void this.reap(), this.opts.reaperIntervalMs ?? 1000));
    this.timers.push(setInterval(() => void this.sample(), SAMPLE_INTERVAL_MS));
    this.schedulePoolFill(0);
  }

  private stopped = false;

  /** Stops the periodic jobs; sandboxes keep running (a restarted agent re-adopts them). */
  stop(): void {
    this.stopped = true;
    clearTimeout(this.fillTimer);
    this.fillTimer = undefined;
    for (const t of this.timers) clearInterval(t);
    this.timers = [];
  }

  /** The sandboxes users have (the warm pool's are nobody's yet). */
  list(): SandboxRecord[] {
    return [...this.records.values()].filter((r) => !r.inPool);
  }

  get(id: string): SandboxRecord {
    const rec = this.records.get(id);
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
    this.persist(rec);
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
    let m = this.metrics.get(id);
    if (!m) {
      m = new MetricRings();
      this.metrics.set(id, m);
    }
    return m;
  }

  private spec(rec: SandboxRecord): SandboxSpec {
    const addrs = slotAddresses(rec.network.slot);
    const network: SandboxNetwork = {
      namespace: rec.network.namespace,
      hostVeth: rec.network.hostVeth,
      nsVeth: "veth0",
      tap: "tap0",
      hostAddress: addrs.host,
      sandboxAddress: addrs.sandbox,
      guestAddress: "169.254.0.21",
      gatewayAddress: "169.254.0.22",
    };
    const resourceId = rec.resourceId ?? rec.id;
    return {
      id: resourceId,
      template: rec.template,
      vcpus: rec.vcpus,
      memoryMb: rec.memoryMb,
      diskSizeMb: rec.diskSizeMb,
      dir: path.join(this.sandboxesDir, resourceId),
      network,
      // Before /init (while starting) envd has no token yet; afterwards the runtime needs it.
      ...(rec.envdAccessToken && rec.status !== "starting"
        ? { envdAccessToken: rec.envdAccessToken }
        : {}),
    };
  }

  private persist(rec: SandboxRecord): void {
    this.store.save(rec);
  }

  async create(p: CreateParams): Promise<SandboxRecord> {
    const rec = this.validate(p);
    this.creating++;
    try {
      const claimed = await this.claimPooled(rec);
      if (claimed) return claimed;
      await this.makeRoom(rec);
      return await this.startNew(rec);
    } finally {
      this.creating--;
      this.schedulePoolFill();
    }
  }

  /** Network, runtime start and envd /init of a new record; unwinds everything on failure. */
  private startNew(rec: SandboxRecord, pooled = false): Promise<SandboxRecord> {
    this.records.set(rec.id, rec);
    return this.lock.run(rec.id, async () => {
      const spec = this.spec(rec);
      const log = { sandboxId: rec.id, template: rec.template };
      this.persist(rec);
      let networkUp = false;
      try {
        mkdirSync(spec.dir, { recursive: true, mode: 0o700 });
        await createSandboxNetwork({
          namespace: spec.network.namespace,
          hostVeth: spec.network.hostVeth,
          slot: rec.network.slot,
          allowInternet: rec.allowInternet,
          guestLink: this.runtime.kind === "namespace" ? "local" : "tap",
        });
        networkUp = true;
        const release = await this.startSlot();
        try {
          rec.runtime = await this.runtime.start(spec);
          this.persist(rec);
          await this.initEnvd(rec);
        } finally {
          release();
        }
        if (pooled) await this.warmUp(rec);
        rec.status = pooled ? "pooled" : "running";
        rec.lastActiveAtMs = Date.now();
        this.persist(rec);
        this.opts.log.info(pooled ? "warm pool sandbox ready" : "sandbox created", log);
        return rec;
      } catch (err) {
        this.opts.log.error("sandbox create failed, unwinding", { ...log, err: String(err) });
        if (rec.runtime)
          await this.runtime
            .stop(spec, rec.runtime)
            .catch((e: unknown) => this.warn(rec.id, "stop", e));
        if (networkUp)
          await destroySandboxNetwork(spec.network).catch((e: unknown) =>
            this.warn(rec.id, "network", e),
          );
        rmSync(spec.dir, { recursive: true, force: true });
        this.store.remove(rec.id);
        this.records.delete(rec.id);
        throw toConnect(err);
      }
    });
  }

  private async initEnvd(rec: SandboxRecord, attempts = 1): Promise<void> {
    for (let i = 1; ; i++) {
      try {
        const started = Date.now();
        await this.initEnvdOnce(rec);
        // envd sets the clock to the timestamp the request carries, so the time the request
        // spent reaching the handler is how far behind the clock ends up. The first /init of a
        // restored guest can take seconds under TCG (its code is translated again); a second
        // one, now fast, puts the clock right.
        if (Date.now() - started > INIT_CLOCK_TOLERANCE_MS) await this.initEnvdOnce(rec);
        return;
      } catch (err) {
        if (i >= attempts) throw err;
        this.opts.log.warn("envd /init failed, retrying", {
          sandboxId: rec.id,
          attempt: i,
          err: String(err),
        });
      }
    }
  }

  private async initEnvdOnce(rec: SandboxRecord): Promise<void> {
    // A clone's envd carries the template's state: install this sandbox's token and defaults.
    // The first /init of a clone installs the token; later ones (after resume) must present it.
    const installed = rec.status !== "starting" ? rec.envdAccessToken || undefined : undefined;
    const client = new EnvdClient(slotAddresses(rec.network.slot).sandbox, installed);
    await client.init({
      ...(rec.envdAccessToken ? { accessToken: rec.envdAccessToken } : {}),
      envVars: rec.envVars,
      defaultUser: rec.defaultUser,
      defaultWorkdir: rec.defaultWorkdir,
    });
  }

  private startsRunning = 0;
  private readonly startQueue: (() => void)[] = [];

  /**
   * Waits for one of `maxConcurrentStarts` places. Restores and first /inits are CPU-bound
   * (under TCG entirely): 20 started at once on 2 cores thrash and all finish late; taking
   * them a core's worth at a time finished 20 creates + first execs in 12 s instead of 16.
   */
  private async startSlot(): Promise<() => void> {
    const max = this.opts.maxConcurrentStarts ?? availableParallelism();
    if (this.startsRunning >= max) await new Promise<void>((r) => this.startQueue.push(r));
    this.startsRunning++;
    return () => {
      this.startsRunning--;
      this.startQueue.shift()?.();
    };
  }

  // ---------------------------------------------------------------- warm pool

  private creating = 0;
  private filling = false;
  private fillTimer: NodeJS.Timeout | undefined;

  /** Pool entries ready to be taken (warming ones are still starting). */
  private pooled(): SandboxRecord[] {
    return [...this.records.values()].filter((r) => r.inPool && r.status === "pooled");
  }

  /**
   * Hands a pooled sandbox to a create that asks for the pool's shape: the record takes the
   * requested id (its resources keep the pool id), and envd gets the sandbox's token, env and
   * user from a second /init. Undefined when the pool has none or the request differs.
   */
  private async claimPooled(want: SandboxRecord): Promise<SandboxRecord | undefined> {
    if (
      want.template !== POOL_SHAPE.template ||
      want.vcpus !== POOL_SHAPE.vcpus ||
      want.memoryMb !== POOL_SHAPE.memoryMb ||
      want.diskSizeMb > POOL_SHAPE.diskSizeMb ||
      !want.allowInternet
    )
      return undefined;
    const entry = this.pooled()[0];
    if (!entry) return undefined;
    // Taken at once (synchronously), so two creates never claim the same entry.
    this.records.delete(entry.id);
    const rec: SandboxRecord = {
      ...want,
      diskSizeMb: entry.diskSizeMb,
      network: entry.network,
      resourceId: entry.resourceId ?? entry.id,
      ...(entry.runtime ? { runtime: entry.runtime } : {}),
      status: "starting",
    };
    this.records.set(rec.id, rec);
    return this.lock.run(rec.id, async () => {
      // The new record first, then the old one's file: a crash in between leaves two records of
      // one set of resources, both torn down at the next start (neither is running or paused).
      this.persist(rec);
      this.store.remove(entry.id);
      try {
        await this.initEnvd(rec);
      } catch (err) {
        this.opts.log.warn("warm pool sandbox failed its /init, starting a new one", {
          sandboxId: rec.id,
          poolId: rec.resourceId,
          err: String(err),
        });
        await this.teardown(rec);
        return undefined;
      }
      rec.status = "running";
      rec.lastActiveAtMs = Date.now();
      this.persist(rec);
      this.opts.log.info("sandbox created from the warm pool", {
        sandboxId: rec.id,
        poolId: rec.resourceId,
        template: rec.template,
      });
      return rec;
    });
  }

  /**
   * The first process start in a restored guest is slow (under TCG its code is translated
   * again in every clone): a pooled sandbox makes it before anyone waits for it.
   */
  private async warmUp(rec: SandboxRecord): Promise<void> {
    const envd = new EnvdClient(slotAddresses(rec.network.slot).sandbox);
    for await (const _ of envd.process.start(
      { process: { cmd: "/bin/true", args: [], envs: {} } },
      { timeoutMs: 30_000 },
    )) {
      // Only its end matters.
    }
  }

  /** Refills the pool soon, when no create is running (a refill would slow it down). */
  private schedulePoolFill(delayMs = 200): void {
    if (!this.opts.warmPool || this.stopped) return;
    // An earlier attempt wins over a later one already planned (a failed refill waits 10 s; a
    // destroy that frees room should not).
    if (this.fillTimer && this.fillDueAt <= Date.now() + delayMs) return;
    clearTimeout(this.fillTimer);
    this.fillDueAt = Date.now() + delayMs;
    this.fillTimer = setTimeout(() => {
      this.fillTimer = undefined;
      void this.fillPool();
    }, delayMs);
  }

  private fillDueAt = 0;

  private async fillPool(): Promise<void> {
    if (this.filling || this.stopped) return;
    if (this.creating > 0) return this.schedulePoolFill(500);
    const inPool = [...this.records.values()].filter((r) => r.inPool).length;
    if (inPool >= (this.opts.warmPool ?? 0)) return;
    this.filling = true;
    let retryMs = 200;
    try {
      const rec: SandboxRecord = {
        ...this.validate({ template: POOL_SHAPE.template, timeoutSec: 0 }),
        inPool: true,
      };
      this.checkCapacity(rec);
      await this.startNew(rec, true);
    } catch (err) {
      // Full host, no template yet, a failed start: try again later, never in a tight loop.
      retryMs = 10_000;
      this.opts.log.warn("warm pool refill failed", { err: String(err) });
    } finally {
      this.filling = false;
    }
    this.schedulePoolFill(retryMs);
  }

  /**
   * Capacity for a create, giving up warm pool entries if that is what it takes: they hold
   * memory for sandboxes nobody has asked for yet.
   */
  private async makeRoom(rec: SandboxRecord): Promise<void> {
    for (;;) {
      try {
        this.checkCapacity(rec);
        return;
      } catch (err) {
        const entry = [...this.records.values()].find((r) => r.inPool);
        if (!(err instanceof ConnectError) || err.code !== Code.ResourceExhausted || !entry)
          throw err;
        this.opts.log.info("giving up a warm pool sandbox to make room", {
          sandboxId: rec.id,
          poolId: entry.id,
        });
        await this.lock.run(entry.id, () => this.teardown(entry));
      }
    }
  }

  /** Destroys the pooled sandboxes (at shutdown: nobody will claim them). */
  async drainPool(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.fillTimer);
    this.fillTimer = undefined;
    await Promise.all(
      [...this.records.values()]
        .filter((r) => r.inPool)
        .map((r) =>
          this.lock
            .run(r.id, () => this.teardown(r))
            .catch((e: unknown) => this.warn(r.id, "pool", e)),
        ),
    );
  }

  private validate(p: CreateParams): SandboxRecord {
    const id = p.sandboxId || newSandboxId();
    if (!SANDBOX_ID_RE.test(id)) throw invalid("sandbox_id must be 20 characters [a-z0-9]");
    if (this.records.has(id))
      throw new ConnectError(`sandbox ${id} already exists`, Code.AlreadyExists);
    const template = p.template || "base";
    if (!TEMPLATE_NAME_RE.test(template))
      throw invalid(`invalid template name ${JSON.stringify(template)}`);
    // E2B's defaults, which are also the size templates are snapshotted at (other sizes boot).
    const vcpus = p.vcpus || 2;
    const memoryMb = p.memoryMb || 512;
    const diskSizeMb = p.diskSizeMb || 5120;
    const timeoutSec = p.timeoutSec ?? 0;
    if (vcpus < 1 || vcpus > 64) throw invalid("vcpus must be 1-64");
    if (memoryMb < 128 || memoryMb > 262_144) throw invalid("memory_mb must be 128-262144");
    if (diskSizeMb < 512 || diskSizeMb > 4_194_304)
      throw invalid("disk_size_mb must be 512-4194304");
    if (timeoutSec < 0 || timeoutSec > 31 * 86400)
      throw invalid("timeout_sec must be 0 (never) to 31 days");
    for (const [k] of Object.entries(p.envVars ?? {})) {
      if (!k || k.includes("=") || k.includes("\0"))
        throw invalid(`invalid env var name ${JSON.stringify(k)}`);
    }
    if (p.defaultUser && !/^[a-z_][a-z0-9_-]{0,31}$/.test(p.defaultUser))
      throw invalid("invalid default_user");
    const slot = this.freeSlot();
    const short = id.slice(0, 15 - HOST_VETH_PREFIX.length - 1);
    return {
      id,
      template,
      vcpus,
      memoryMb,
      diskSizeMb,
      timeoutSec,
      envVars: p.envVars ?? {},
      metadata: p.metadata ?? {},
      defaultUser: p.defaultUser || "user",
      defaultWorkdir: p.defaultWorkdir ?? "",
      allowInternet: p.allowInternet ?? true,
      envdAccessToken: p.envdAccessToken ?? "",
      createdAtMs: Date.now(),
      lastActiveAtMs: Date.now(),
      status: "starting",
      network: {
        namespace: `${HOST_VETH_PREFIX}${this.instance}-${id}`,
        hostVeth: `${HOST_VETH_PREFIX}${this.instance}${short}`,
        slot,
      },
    };
  }

  private freeSlot(): number {
    const used = new Set([...this.records.values()].map((r) => r.network.slot));
    const [lo, hi] = this.opts.slotRange ?? [1, MAX_SLOT];
    for (let s = lo; s <= hi; s++) if (!used.has(s)) return s;
    throw new ConnectError("no free network slot on this host", Code.ResourceExhausted);
  }

  private checkCapacity(rec: SandboxRecord): void {
    const live = [...this.records.values()];
    const memory = live.filter((r) => r.status !== "paused").reduce((a, r) => a + r.memoryMb, 0);
    if (memory + rec.memoryMb > this.memoryCapacityMb) {
      throw new ConnectError(
        `not enough memory on this host: ${memory} of ${this.memoryCapacityMb} MiB promised, ${rec.memoryMb} more asked`,
        Code.ResourceExhausted,
      );
    }
    // Disks are sparse copy-on-write overlays: what matters is the space actually left, and
    // a new sandbox needs room to start writing (up to 1 GiB of its disk) above the reserve.
    const fs = statfsSync(this.opts.nestboxDir);
    const freeMb = Math.floor((fs.bavail * fs.bsize) / 2 ** 20);
    const need = Math.min(rec.diskSizeMb, 1024);
    if (freeMb - this.diskReserveMb < need) {
      throw new ConnectError(
        `not enough disk on this host: ${freeMb} MiB free, ${this.diskReserveMb} MiB reserved, ${need} MiB needed`,
        Code.ResourceExhausted,
      );
    }
  }

  async destroy(id: string): Promise<void> {
    this.get(id);
    await this.lock.run(id, async () => {
      const rec = this.records.get(id);
      if (!rec) throw notFound(id);
      rec.status = "stopping";
      this.persist(rec);
      await this.teardown(rec);
      this.opts.log.info("sandbox destroyed", { sandboxId: id });
    });
    // Its room may be what the warm pool was waiting for.
    this.schedulePoolFill();
  }

  /** Removes everything of a sandbox; never throws for pieces already gone. */
  /**
   * Called as a sandbox stops running (destroy, pause, snapshot): a connection into a VM that
   * is going away gets no FIN or RST from its vanished guest and would hang, so whoever holds
   * one (the port proxy) closes it.
   */
  onStopping(listener: (sandboxId: string) => void): void {
    this.stoppingListeners.push(listener);
  }

  private readonly stoppingListeners: ((sandboxId: string) => void)[] = [];

  private notifyStopping(id: string): void {
    for (const l of this.stoppingListeners) l(id);
  }

  private async teardown(rec: SandboxRecord): Promise<void> {
    this.notifyStopping(rec.id);
    const spec = this.spec(rec);
    if (rec.runtime) {
      await this.runtime
        .stop(spec, rec.runtime)
        .catch((e: unknown) => this.warn(rec.id, "stop", e));
    }
    await destroySandboxNetwork(spec.network).catch((e: unknown) =>
      this.warn(rec.id, "network", e),
    );
    rmSync(spec.dir, { recursive: true, force: true });
    this.store.remove(rec.id);
    this.records.delete(rec.id);
    this.metrics.delete(rec.id);
  }

  async pause(id: string): Promise<void> {
    this.get(id);
    await this.lock.run(id, async () => {
      const rec = this.get(id);
      if (rec.status === "paused") throw precondition(`sandbox ${id} is already paused`);
      if (rec.status !== "running" || !rec.runtime)
        throw precondition(`sandbox ${id} is ${rec.status}`);
      this.notifyStopping(id);
      rec.runtime = await this.runtime.pause(this.spec(rec), rec.runtime).catch((e: unknown) => {
        throw toConnect(e);
      });
      rec.status = "paused";
      this.persist(rec);
      this.opts.log.info("sandbox paused", { sandboxId: id });
    });
  }

  async resume(id: string, timeoutSec?: number): Promise<SandboxRecord> {
    this.get(id);
    return this.lock.run(id, async () => {
      const rec = this.get(id);
      if (rec.status !== "paused" || !rec.runtime)
        throw precondition(`sandbox ${id} is ${rec.status}, not paused`);
      this.checkCapacity({ ...rec, id: "resume-check", diskSizeMb: 0 });
      rec.runtime = await this.runtime.resume(this.spec(rec), rec.runtime).catch((e: unknown) => {
        throw toConnect(e);
      });
      // The restored guest's clock stopped at the pause: /init carries the time (and is idempotent).
      // A resumed guest re-translates envd's code under TCG, so a busy host can make the first
      // request slow: retry before giving up, and fail the resume rather than leave a stale clock.
      await this.initEnvd(rec, 3).catch(async (e: unknown) => {
        await this.runtime.pause(this.spec(rec), rec.runtime as RuntimeState).then(
          (st) => {
            rec.runtime = st;
          },
          (pe: unknown) => this.warn(rec.id, "re-pause after failed resume", pe),
        );
        throw toConnect(e);
      });
      rec.status = "running";
      if (timeoutSec !== undefined && timeoutSec >= 0) rec.timeoutSec = timeoutSec;
      rec.lastActiveAtMs = Date.now();
      this.persist(rec);
      this.opts.log.info("sandbox resumed", { sandboxId: id });
      return rec;
    });
  }

  /** Pauses, stores memory and disk as template `name`, destroys the sandbox. */
  async snapshot(id: string, name: string): Promise<number> {
    if (!TEMPLATE_NAME_RE.test(name))
      throw invalid(`invalid template name ${JSON.stringify(name)}`);
    if (name === "base") throw invalid("template name 'base' is reserved");
    if (this.get(id).status === "running") await this.pause(id);
    return this.lock.run(id, async () => {
      const rec = this.get(id);
      if (!rec.runtime) throw precondition(`sandbox ${id} has no runtime state`);
      const { sizeBytes } = await this.runtime
        .snapshotToTemplate(this.spec(rec), rec.runtime, name)
        .catch((e: unknown) => {
          throw toConnect(e);
        });
      await this.teardown(rec);
      this.opts.log.info("sandbox snapshotted into template", {
        sandboxId: id,
        template: name,
        sizeBytes,
      });
      return sizeBytes;
    });
  }

  async flatten(id: string, name: string): Promise<number> {
    if (!TEMPLATE_NAME_RE.test(name))
      throw invalid(`invalid template name ${JSON.stringify(name)}`);
    if (name === "base") throw invalid("template name 'base' is reserved");
    this.get(id);
    return this.lock.run(id, async () => {
      const rec = this.get(id);
      if (!rec.runtime) throw precondition(`sandbox ${id} has no runtime state`);
      const { sizeBytes } = await this.runtime
        .flattenToTemplate(this.spec(rec), rec.runtime, name)
        .catch((e: unknown) => {
          throw toConnect(e);
        });
      await this.teardown(rec);
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
    await this.runtime.deleteTemplate(name).catch((e: unknown) => {
      throw toConnect(e);
    });
  }

  async destroyAll(): Promise<void> {
    await this.drainPool();
    await Promise.all(
      this.list().map((r) =>
        this.destroy(r.id).catch((e: unknown) => this.warn(r.id, "destroy", e)),
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
        await this.destroy(rec.id).catch((e: unknown) => this.warn(rec.id, "destroy", e));
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
          const u = await this.runtime.usage(this.spec(rec), rec.runtime);
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

  /**
   * After a restart: keep sandboxes the runtime can adopt, remove the others (and half-created
   * or half-destroyed ones), then remove namespaces, veths and directories nobody owns.
   */
  private async recover(): Promise<void> {
    const { records, broken } = this.store.loadAll();
    for (const id of broken) {
      this.opts.log.warn("unreadable sandbox record, removing its leftovers", { sandboxId: id });
      this.store.remove(id);
    }
    for (const rec of records) {
      this.records.set(rec.id, rec);
      const spec = this.spec(rec);
      let keep = false;
      if ((rec.status === "running" || rec.status === "paused") && rec.runtime) {
        keep =
          (await this.runtime.adopt(spec, rec.runtime).catch(() => false)) &&
          (await namespaceExists(spec.network.namespace));
      }
      if (keep) {
        rec.lastActiveAtMs = Date.now();
        this.opts.log.info("sandbox re-adopted", { sandboxId: rec.id, status: rec.status });
      } else {
        this.opts.log.warn("sandbox could not be re-adopted, cleaning up", {
          sandboxId: rec.id,
          status: rec.status,
        });
        await this.teardown(rec);
      }
    }
    await this.removeOrphans();
  }

  private async removeOrphans(): Promise<void> {
    const known = new Set([...this.records.values()].map((r) => r.resourceId ?? r.id));
    const namespaces = new Set([...this.records.values()].map((r) => r.network.namespace));
    const veths = new Set([...this.records.values()].map((r) => r.network.hostVeth));
    const { stdout: nsList } = await exec("ip", ["netns", "list"]);
    for (const line of nsList.split("\n")) {
      const ns = line.split(" ")[0] ?? "";
      if (
        !new RegExp(`^${HOST_VETH_PREFIX}${this.instance}-[a-z0-9]{20}$`).test(ns) ||
        namespaces.has(ns)
      )
        continue;
      this.opts.log.warn("removing orphaned network namespace", { namespace: ns });
      await killNamespacePids(ns);
      await exec("ip", ["netns", "delete", ns]).catch((e: unknown) => this.warn(ns, "netns", e));
    }
    const { stdout: links } = await exec("ip", ["-o", "link", "show"]);
    for (const line of links.split("\n")) {
      const name = /^\d+:\s+([^:@]+)/.exec(line)?.[1] ?? "";
      // Only names this agent would generate: prefix, instance letter, 11 id characters.
      if (
        !new RegExp(`^${HOST_VETH_PREFIX}${this.instance}[a-z0-9]{11}$`).test(name) ||
        veths.has(name)
      )
        continue;
      this.opts.log.warn("removing orphaned veth", { link: name });
      await exec("ip", ["link", "delete", name]).catch((e: unknown) => this.warn(name, "link", e));
    }
    for (const name of readdirSync(this.sandboxesDir)) {
      if (known.has(name)) continue;
      this.opts.log.warn("removing orphaned sandbox directory", { dir: name });
      const dir = path.join(this.sandboxesDir, name);
      await unmountBelow(dir);
      rmSync(dir, { recursive: true, force: true });
    }
  }

  private warn(id: string, what: string, err: unknown): void {
    this.opts.log.warn(`cleanup step failed: ${what}`, { sandboxId: id, err: String(err) });
  }
}

async function namespaceExists(ns: string): Promise<boolean> {
  const { stdout } = await exec("ip", ["netns", "list"]);
  return stdout.split("\n").some((l) => l.split(" ")[0] === ns);
}

async function killNamespacePids(ns: string): Promise<void> {
  try {
    const { stdout } = await exec("ip", ["netns", "pids", ns]);
    for (const pid of stdout.split(/\s+/).filter(Boolean)) {
      try {
        process.kill(Number(pid), "SIGKILL");
      } catch (err) {
        // Exited meanwhile.
        void err;
      }
    }
  } catch (err) {
    // The namespace vanished meanwhile.
    void err;
  }
}

/** Lazily unmounts every mount at or below `dir` (deepest first) so it can be removed. */
async function unmountBelow(dir: string): Promise<void> {
  const { stdout } = await exec("cat", ["/proc/self/mounts"]);
  const targets = stdout
    .split("\n")
    .map((l) => l.split(" ")[1] ?? "")
    .map((m) => m.replace(/\\040/g, " "))
    .filter((m) => m === dir || m.startsWith(`${dir}/`))
    .sort((a, b) => b.length - a.length);
  for (const m of targets) await exec("umount", ["-l", m]).catch(() => undefined);
}

export type { RuntimeState };
