import { randomUUID } from "node:crypto";
import { Code, ConnectError } from "@connectrpc/connect";
import type { FilesystemEvent } from "@nestbox/proto/filesystem";
import type { Logger } from "../log.js";
import type { UserDb } from "../users.js";
import type { Credentials } from "./access.js";
import { type WatchRequest, WatchSession } from "./watch-session.js";

/** Events kept per watcher between polls; older ones are dropped first. */
export const MAX_BUFFERED_EVENTS = 10_000;
/** Live polling watchers per envd: each holds inotify watches, a kernel-limited resource. */
export const MAX_POLLING_WATCHERS = 1_000;

interface Buffer {
  events: FilesystemEvent[];
  dropped: number;
  failed: Error | undefined;
}

interface Poller extends Buffer {
  session: WatchSession;
}

/**
 * The polling watchers (CreateWatcher / GetWatcherEvents / RemoveWatcher) that the Python sync
 * SDK uses instead of the WatchDir stream.
 */
export class PollingWatchers {
  private readonly pollers = new Map<string, Poller>();

  constructor(private readonly log: Logger) {}

  async create(req: WatchRequest, creds: Credentials, db: UserDb): Promise<string> {
    if (this.pollers.size >= MAX_POLLING_WATCHERS) {
      throw new ConnectError(`too many watchers (${MAX_POLLING_WATCHERS})`, Code.ResourceExhausted);
    }
    const id = randomUUID();
    const buffer: Buffer = { events: [], dropped: 0, failed: undefined };
    const session = await WatchSession.start(req, creds, db, this.log, {
      onEvent: (e) => {
        buffer.events.push(e);
        if (buffer.events.length > MAX_BUFFERED_EVENTS) {
          buffer.events.shift();
          buffer.dropped++;
        }
      },
      onError: (err) => {
        buffer.failed = err;
      },
    });
    // The poller is the buffer the callbacks fill, plus its session.
    this.pollers.set(id, Object.assign(buffer, { session }));
    return id;
  }

  /** Drains the buffered events. A watch that failed reports its error once, then is gone. */
  take(id: string): FilesystemEvent[] {
    const poller = this.get(id);
    if (poller.failed && poller.events.length === 0) {
      this.remove(id);
      throw new ConnectError(`watcher failed: ${poller.failed.message}`, Code.Internal);
    }
    if (poller.dropped > 0) {
      this.log.warn("watcher dropped events between polls", { id, dropped: poller.dropped });
      poller.dropped = 0;
    }
    const events = poller.events;
    poller.events = [];
    return events;
  }

  remove(id: string): void {
    const poller = this.get(id);
    poller.session.close();
    this.pollers.delete(id);
  }

  closeAll(): void {
    for (const p of this.pollers.values()) p.session.close();
    this.pollers.clear();
  }

  private get(id: string): Poller {
    const poller = this.pollers.get(id);
    if (!poller) throw new ConnectError(`watcher with id ${id} not found`, Code.NotFound);
    return poller;
  }
}
