import pg from "pg";
import { CHANNEL_RE } from "./db.js";

/**
 * LISTEN for a `pg` pool's database on one dedicated connection (a pooled one would be handed
 * to other queries). Channels are shared by every subscriber; when the connection drops it is
 * opened again with a backoff and every channel is listened to again. Notifications sent while
 * it was down are lost: once listening again, each subscriber's `onGap` says so, and the ones
 * that mirror state re-read it (the event stream tells its clients to).
 */
interface Subscriber {
  onPayload: (payload: string) => void;
  onGap: (() => void) | undefined;
}

export class PgListener {
  private client: pg.Client | undefined;
  private connecting: Promise<pg.Client> | undefined;
  private readonly subscribers = new Map<string, Set<Subscriber>>();
  /** A connection was open before: the next one that opens follows a gap. */
  private wasOpen = false;
  private closed = false;
  private retryMs = 500;

  constructor(
    private readonly config: pg.ClientConfig,
    private readonly log: (line: string) => void,
    private readonly where: string,
  ) {}

  async listen(
    channel: string,
    onPayload: (payload: string) => void,
    onGap?: () => void,
  ): Promise<() => Promise<void>> {
    if (!CHANNEL_RE.test(channel)) throw new Error(`not a channel name: ${channel}`);
    if (this.closed) throw new Error("the database is closed");
    let subs = this.subscribers.get(channel);
    const first = !subs;
    if (!subs) {
      subs = new Set();
      this.subscribers.set(channel, subs);
    }
    const sub: Subscriber = { onPayload, onGap };
    subs.add(sub);
    if (first) {
      const client = await this.connection();
      await client.query(`LISTEN ${channel}`);
    } else await this.connection();
    return async () => {
      const set = this.subscribers.get(channel);
      if (!set?.delete(sub) || set.size > 0) return;
      this.subscribers.delete(channel);
      if (this.client && !this.closed) await this.client.query(`UNLISTEN ${channel}`);
    };
  }

  private connection(): Promise<pg.Client> {
    if (this.client) return Promise.resolve(this.client);
    this.connecting ??= this.open().finally(() => {
      this.connecting = undefined;
    });
    return this.connecting;
  }

  private async open(): Promise<pg.Client> {
    const client = new pg.Client(this.config);
    client.on("notification", (n) => {
      for (const sub of this.subscribers.get(n.channel) ?? []) sub.onPayload(n.payload ?? "");
    });
    client.on("error", (err) => this.log(`database ${this.where}: listener: ${err.message}`));
    client.on("end", () => {
      if (this.client === client) this.client = undefined;
      if (!this.closed) this.reopenLater();
    });
    await client.connect();
    for (const channel of this.subscribers.keys()) await client.query(`LISTEN ${channel}`);
    this.client = client;
    this.retryMs = 500;
    if (this.wasOpen) this.announceGap();
    this.wasOpen = true;
    return client;
  }

  private announceGap(): void {
    for (const subs of this.subscribers.values())
      for (const sub of subs) {
        try {
          sub.onGap?.();
        } catch (err) {
          this.log(`database ${this.where}: listener gap handler failed: ${String(err)}`);
        }
      }
  }

  private reopenLater(): void {
    const wait = this.retryMs;
    this.retryMs = Math.min(this.retryMs * 2, 30_000);
    setTimeout(() => {
      if (this.subscribers.size === 0) this.wasOpen = false; // nobody listened through the gap
      if (this.closed || this.client || this.subscribers.size === 0) return;
      this.connection().catch((err: Error) => {
        this.log(`database ${this.where}: listener reconnect failed: ${err.message}`);
        this.reopenLater();
      });
    }, wait).unref();
  }

  async close(): Promise<void> {
    this.closed = true;
    const client = this.client ?? (await this.connecting?.catch(() => undefined));
    this.client = undefined;
    await client?.end();
  }
}
