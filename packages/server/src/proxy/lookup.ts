import type { Queryable } from "../db/db.js";
import type { SandboxStatus } from "../domain/sandbox.js";
import { type SignedFilesRequest, signedWith } from "./signature.js";

/** What the proxy needs to know about a sandbox to route to it. */
export interface ProxyTarget {
  sandboxId: string;
  teamId: string;
  status: SandboxStatus;
  /** Base URL of the host agent, when its host is online. */
  agentUrl: string | undefined;
  /** Its host (the agent's certificate must name it). */
  hostId: string | null;
  envdAccessToken: string | null;
  allowPublicTraffic: boolean;
  trafficAccessToken: string | null;
  autoResume: boolean;
}

interface TargetRow {
  id: string;
  team_id: string;
  host_id: string | null;
  status: SandboxStatus;
  envd_access_token: string | null;
  host_address: string | null;
  host_status: string | null;
  // Columns of the E2B lifecycle (migration 0002); absent on older schemas.
  allow_public_traffic?: boolean | null;
  traffic_access_token?: string | null;
  auto_resume?: boolean | null;
}

// `s.*` rather than a column list: the E2B lifecycle columns are read when the schema has them.
const SELECT = `SELECT s.*, h.address AS host_address, h.status AS host_status
  FROM sandboxes s LEFT JOIN hosts h ON h.id = s.host_id`;

function toTarget(r: TargetRow): ProxyTarget {
  return {
    sandboxId: r.id,
    teamId: r.team_id,
    status: r.status,
    agentUrl: r.host_status === "online" && r.host_address ? r.host_address : undefined,
    hostId: r.host_id,
    envdAccessToken: r.envd_access_token,
    allowPublicTraffic: r.allow_public_traffic ?? true,
    trafficAccessToken: r.traffic_access_token ?? null,
    autoResume: r.auto_resume ?? false,
  };
}

interface Cached<T> {
  at: number;
  value: Promise<T>;
}

/**
 * Sandbox lookups for the proxy, so a proxied request does not cost database queries each time.
 * Only routable answers (running on an online host) are kept, and only for `ttlMs`: a sandbox
 * that stopped is never routed to for longer than that, and one that was just created or resumed
 * is seen at once. Concurrent lookups of one id share a query.
 */
export class SandboxLookup {
  private readonly byId = new Map<string, Cached<ProxyTarget | undefined>>();
  private signable: Cached<ProxyTarget[]> | undefined;

  constructor(
    private readonly db: Queryable,
    private readonly ttlMs = 1000,
    private readonly now: () => number = Date.now,
  ) {}

  get(sandboxId: string): Promise<ProxyTarget | undefined> {
    const t = this.now();
    const hit = this.byId.get(sandboxId);
    if (hit && t - hit.at < this.ttlMs) return hit.value;
    const value = this.db
      .query<TargetRow>(`${SELECT} WHERE s.id = $1`, [sandboxId])
      .then((rows) => (rows[0] ? toTarget(rows[0]) : undefined));
    const entry = { at: t, value };
    this.byId.set(sandboxId, entry);
    const drop = () => {
      if (this.byId.get(sandboxId) === entry) this.byId.delete(sandboxId);
    };
    value.then((target) => {
      if (!routable(target)) drop();
    }, drop);
    this.prune(t);
    return value;
  }

  /** Forgets a sandbox, e.g. after its agent said it is gone or it was just resumed. */
  forget(sandboxId: string): void {
    this.byId.delete(sandboxId);
  }

  /**
   * The running (or paused, auto-resuming) sandbox whose envd access token produced a signed
   * `/files` URL. A miss on the cached list is retried once against the database, so a sandbox
   * created within the cache's lifetime is still found.
   */
  async bySignature(req: SignedFilesRequest): Promise<ProxyTarget | undefined> {
    const t = this.now();
    const cached = this.signable && t - this.signable.at < this.ttlMs ? this.signable : undefined;
    if (cached) {
      const hit = (await cached.value).find(
        (c) => c.envdAccessToken && signedWith(req, c.envdAccessToken),
      );
      if (hit) return hit;
    }
    const value = this.db
      .query<TargetRow>(
        `${SELECT} WHERE s.status = ANY($1::text[]) AND s.envd_access_token IS NOT NULL`,
        [["running", "paused"]],
      )
      .then((rows) => rows.map(toTarget).filter((c) => c.status === "running" || c.autoResume));
    this.signable = { at: t, value };
    value.catch(() => {
      if (this.signable?.value === value) this.signable = undefined;
    });
    return (await value).find((c) => c.envdAccessToken && signedWith(req, c.envdAccessToken));
  }

  private prune(t: number): void {
    if (this.byId.size < 1024) return;
    for (const [id, e] of this.byId) if (t - e.at >= this.ttlMs) this.byId.delete(id);
  }
}

export const routable = (t: ProxyTarget | undefined): t is ProxyTarget & { agentUrl: string } =>
  t !== undefined && t.status === "running" && t.agentUrl !== undefined;
