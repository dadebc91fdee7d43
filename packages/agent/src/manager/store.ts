import { mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import path from "node:path";
import type { RuntimeState } from "../runtime/runtime.js";
import { SANDBOX_ID_RE } from "./ids.js";

/** `pooled`: started and warmed up ahead of any request, waiting in the warm pool (no user yet). */
export type SandboxStatus = "starting" | "running" | "paused" | "stopping" | "pooled";

/**
 * Everything the agent knows about one sandbox, persisted so that an agent restarted after a
 * crash can re-adopt the sandbox or clean up what it left.
 */
export interface SandboxRecord {
  id: string;
  template: string;
  vcpus: number;
  memoryMb: number;
  diskSizeMb: number;
  timeoutSec: number;
  envVars: Record<string, string>;
  metadata: Record<string, string>;
  defaultUser: string;
  defaultWorkdir: string;
  allowInternetAccess: boolean;
  envdAccessToken: string;
  createdAtMs: number;
  lastActiveAtMs: number;
  status: SandboxStatus;
  network: { namespace: string; hostVeth: string; slot: number };
  /**
   * The id its directory, VM or cgroup are named after when that is not `id`: a sandbox taken
   * from the warm pool keeps the resources it was started with under its pool id.
   */
  resourceId?: string;
  /** Started for the warm pool: nobody's sandbox (not listed) until a create takes it. */
  inPool?: boolean;
  runtime?: RuntimeState;
}

/** One JSON file per sandbox, replaced atomically (write temp, rename). */
export class RecordStore {
  constructor(readonly dir: string) {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
  }

  private file(id: string): string {
    if (!SANDBOX_ID_RE.test(id)) throw new Error(`invalid sandbox id ${JSON.stringify(id)}`);
    return path.join(this.dir, `${id}.json`);
  }

  save(rec: SandboxRecord): void {
    const file = this.file(rec.id);
    const tmp = `${file}.tmp`;
    writeFileSync(tmp, `${JSON.stringify(rec, null, 2)}\n`, { mode: 0o600 });
    renameSync(tmp, file);
  }

  remove(id: string): void {
    rmSync(this.file(id), { force: true });
  }

  /** Every readable record; unreadable ones are returned by id so the caller can clean them up. */
  loadAll(): { records: SandboxRecord[]; broken: string[] } {
    const records: SandboxRecord[] = [];
    const broken: string[] = [];
    for (const name of readdirSync(this.dir)) {
      if (name.endsWith(".tmp")) {
        rmSync(path.join(this.dir, name), { force: true });
        continue;
      }
      if (!name.endsWith(".json")) continue;
      const id = name.slice(0, -5);
      try {
        const rec = JSON.parse(readFileSync(path.join(this.dir, name), "utf8")) as SandboxRecord & {
          allowInternet?: boolean;
        };
        if (rec.id !== id) throw new Error("id mismatch");
        // Records written before the field took the proto's name.
        if (rec.allowInternetAccess === undefined) {
          rec.allowInternetAccess = rec.allowInternet ?? true;
          delete rec.allowInternet;
        }
        records.push(rec);
      } catch (err) {
        // A torn or foreign file: the caller removes whatever belongs to this id.
        void err;
        broken.push(id);
      }
    }
    return { records, broken };
  }
}
