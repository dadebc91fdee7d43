import { mkdirSync, rmSync } from "node:fs";
import { availableParallelism } from "node:os";
import { EnvdClient } from "../envd/client.js";
import { createSandboxNetwork, destroySandboxNetwork, slotAddresses } from "../network/netns.js";
import { Cleanup, CleanupError } from "./cleanup.js";
import type { SandboxTable } from "./sandboxes.js";
import type { SandboxRecord } from "./store.js";

/** An /init slower than this is repeated: its timestamp set the guest clock that far behind. */
const INIT_CLOCK_TOLERANCE_MS = 300;

/**
 * The create path of one new sandbox: directory, network, runtime start and envd /init, each
 * undone in reverse when a later step fails. Starts are queued `maxConcurrentStarts` at a time.
 */
export class SandboxStarter {
  private startsRunning = 0;
  private readonly startQueue: (() => void)[] = [];

  constructor(
    private readonly table: SandboxTable,
    private readonly maxConcurrentStarts = availableParallelism(),
  ) {}

  /**
   * Starts `rec` (a warm pool entry when `rec.inPool`, made ready by `warmUp`); on failure
   * everything done so far is undone and the record is gone.
   */
  start(
    rec: SandboxRecord,
    warmUp?: (rec: SandboxRecord) => Promise<void>,
  ): Promise<SandboxRecord> {
    const { table } = this;
    table.records.set(rec.id, rec);
    return table.lock.run(rec.id, async () => {
      const spec = table.spec(rec);
      const log = { sandboxId: rec.id, template: rec.template };
      const undo = new Cleanup();
      try {
        table.persist(rec);
        undo.add("record", () => {
          table.store.remove(rec.id);
          table.records.delete(rec.id);
        });
        undo.add("directory", () => rmSync(spec.dir, { recursive: true, force: true }));
        mkdirSync(spec.dir, { recursive: true, mode: 0o700 });
        // A failed create rolls its own steps back: only a finished network needs undoing.
        await createSandboxNetwork({
          namespace: spec.network.namespace,
          hostVeth: spec.network.hostVeth,
          slot: rec.network.slot,
          allowInternetAccess: rec.allowInternetAccess,
          guestLink: table.runtime.kind === "namespace" ? "local" : "tap",
        });
        undo.add("network", () => destroySandboxNetwork(spec.network));
        const release = await this.startSlot();
        try {
          const state = await table.runtime.start(spec);
          rec.runtime = state;
          undo.add("stop", () => table.runtime.stop(spec, state));
          table.persist(rec);
          await this.initEnvd(rec);
        } finally {
          release();
        }
        if (rec.inPool && warmUp) await warmUp(rec);
        rec.status = rec.inPool ? "pooled" : "running";
        rec.lastActiveAtMs = Date.now();
        table.persist(rec);
        table.log.info(rec.inPool ? "warm pool sandbox ready" : "sandbox created", log);
        return rec;
      } catch (err) {
        table.log.error("sandbox create failed, unwinding", { ...log, err: String(err) });
        await undo.run().catch((e: unknown) => {
          for (const f of e instanceof CleanupError ? e.failures : [{ step: "cleanup", error: e }])
            table.warn(rec.id, f.step, f.error);
        });
        throw err;
      }
    });
  }

  /** envd /init with this record's token, env and user; up to `attempts` tries. */
  async initEnvd(rec: SandboxRecord, attempts = 1): Promise<void> {
    for (let i = 1; ; i++) {
      try {
        const started = Date.now();
        await initEnvdOnce(rec);
        // envd sets the clock to the timestamp the request carries, so the time the request
        // spent reaching the handler is how far behind the clock ends up. The first /init of a
        // restored guest can take seconds under TCG (its code is translated again); a second
        // one, now fast, puts the clock right.
        if (Date.now() - started > INIT_CLOCK_TOLERANCE_MS) await initEnvdOnce(rec);
        return;
      } catch (err) {
        if (i >= attempts) throw err;
        this.table.log.warn("envd /init failed, retrying", {
          sandboxId: rec.id,
          attempt: i,
          err: String(err),
        });
      }
    }
  }

  /**
   * Waits for one of `maxConcurrentStarts` places. Restores and first /inits are CPU-bound
   * (under TCG entirely): 20 started at once on 2 cores thrash and all finish late; taking
   * them a core's worth at a time finished 20 creates + first execs in 12 s instead of 16.
   */
  private async startSlot(): Promise<() => void> {
    if (this.startsRunning >= this.maxConcurrentStarts)
      await new Promise<void>((r) => this.startQueue.push(r));
    this.startsRunning++;
    return () => {
      this.startsRunning--;
      this.startQueue.shift()?.();
    };
  }
}

async function initEnvdOnce(rec: SandboxRecord): Promise<void> {
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
