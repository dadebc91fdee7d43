import type { Db } from "../db/db.js";

/**
 * Sandbox status changes of every team, from the database's `nbx_sandbox` notifications (a
 * trigger sends one for each insert and status change, whoever made it: this control plane,
 * another one, the reconciler). One LISTEN per process, fanned out to the team's subscribers.
 */

export const SANDBOX_CHANNEL = "nbx_sandbox";

export interface SandboxChange {
  op: "insert" | "update";
  id: string;
  teamId: string;
  status: string;
}

type Subscriber = (change: SandboxChange) => void;
interface Subscription {
  onChange: Subscriber;
  onGap: (() => void) | undefined;
}

export class SandboxEvents {
  private readonly byTeam = new Map<string, Set<Subscription>>();
  private unlisten: Promise<() => Promise<void>> | undefined;

  constructor(
    private readonly db: Db,
    private readonly log: (line: string) => void,
  ) {}

  /**
   * Calls `fn` for each change of the team's sandboxes until the returned function runs, and
   * `onGap` when changes may have been missed (the database's notifications were cut off).
   */
  async subscribe(teamId: string, fn: Subscriber, onGap?: () => void): Promise<() => void> {
    this.unlisten ??= this.db.listen(
      SANDBOX_CHANNEL,
      (p) => this.dispatch(p),
      () => this.gap(),
    );
    try {
      await this.unlisten;
    } catch (err) {
      this.unlisten = undefined;
      throw err;
    }
    let subs = this.byTeam.get(teamId);
    if (!subs) {
      subs = new Set();
      this.byTeam.set(teamId, subs);
    }
    const sub: Subscription = { onChange: fn, onGap };
    subs.add(sub);
    return () => {
      const set = this.byTeam.get(teamId);
      set?.delete(sub);
      if (set?.size === 0) this.byTeam.delete(teamId);
    };
  }

  private dispatch(payload: string): void {
    let change: SandboxChange;
    try {
      const p = JSON.parse(payload) as Record<string, unknown>;
      if (typeof p.id !== "string" || typeof p.team_id !== "string") throw new Error("no id");
      change = {
        op: p.op === "insert" ? "insert" : "update",
        id: p.id,
        teamId: p.team_id,
        status: String(p.status),
      };
    } catch (err) {
      this.log(`[server] sandbox events: bad notification ${payload.slice(0, 200)}: ${err}`);
      return;
    }
    for (const sub of this.byTeam.get(change.teamId) ?? []) this.call(() => sub.onChange(change));
  }

  private gap(): void {
    this.log("[server] sandbox events: notifications were cut off; subscribers re-read");
    for (const subs of this.byTeam.values()) for (const sub of subs) this.call(() => sub.onGap?.());
  }

  private call(fn: () => void): void {
    try {
      fn();
    } catch (err) {
      this.log(`[server] sandbox events: subscriber failed: ${String(err)}`);
    }
  }

  /** Subscribers of all teams (for tests and /health-style checks). */
  get subscriberCount(): number {
    let n = 0;
    for (const s of this.byTeam.values()) n += s.size;
    return n;
  }

  async close(): Promise<void> {
    const un = this.unlisten;
    this.unlisten = undefined;
    this.byTeam.clear();
    if (un) await (await un)();
  }
}
