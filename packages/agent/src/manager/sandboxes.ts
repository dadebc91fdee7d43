import { mkdirSync, rmSync } from "node:fs";
import path from "node:path";
import type { Logger } from "../log.js";
import { destroySandboxNetwork, type SandboxNetwork, slotAddresses } from "../network/netns.js";
import type { Runtime, SandboxSpec } from "../runtime/runtime.js";
import { KeyedLock } from "./lock.js";
import type { MetricRings } from "./metrics.js";
import { RecordStore, type SandboxRecord } from "./store.js";

/**
 * The sandboxes of one agent instance and what every operation on them shares: the records
 * (memory and disk), the per-sandbox lock, the runtime, and the full teardown.
 */
export class SandboxTable {
  readonly records = new Map<string, SandboxRecord>();
  readonly metrics = new Map<string, MetricRings>();
  readonly lock = new KeyedLock();
  readonly store: RecordStore;
  readonly sandboxesDir: string;
  private readonly stoppingListeners: ((sandboxId: string) => void)[] = [];

  constructor(
    readonly runtime: Runtime,
    readonly log: Logger,
    nestboxDir: string,
    readonly instance: string,
  ) {
    // Per instance, so agents sharing a data directory never see each other's sandboxes.
    this.store = new RecordStore(path.join(nestboxDir, "agent", instance, "records"));
    this.sandboxesDir = path.join(nestboxDir, "sandboxes", instance);
    mkdirSync(this.sandboxesDir, { recursive: true, mode: 0o700 });
  }

  spec(rec: SandboxRecord): SandboxSpec {
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

  persist(rec: SandboxRecord): void {
    this.store.save(rec);
  }

  /** Forgets a record: memory, file and metrics. */
  forget(id: string): void {
    this.store.remove(id);
    this.records.delete(id);
    this.metrics.delete(id);
  }

  /**
   * Called as a sandbox stops running (destroy, pause, snapshot): a connection into a VM that
   * is going away gets no FIN or RST from its vanished guest and would hang, so whoever holds
   * one (the port proxy) closes it.
   */
  onStopping(listener: (sandboxId: string) => void): void {
    this.stoppingListeners.push(listener);
  }

  notifyStopping(id: string): void {
    for (const l of this.stoppingListeners) l(id);
  }

  /** Removes everything of a sandbox; never throws for pieces already gone. */
  async teardown(rec: SandboxRecord): Promise<void> {
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
    this.forget(rec.id);
  }

  /** A failed cleanup step: logged, never thrown (the rest of the cleanup still runs). */
  warn(id: string, what: string, err: unknown): void {
    this.log.warn(`cleanup step failed: ${what}`, { sandboxId: id, err: String(err) });
  }
}
