import { statfs } from "node:fs/promises";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { EventType, type FilesystemEvent, FilesystemEventSchema } from "@nestbox/proto/filesystem";
import type { Logger } from "../log.js";
import type { UserDb } from "../users.js";
import { type Credentials, isMissing } from "./access.js";
import { entryInfo, toEntryInfo } from "./entry-info.js";
import { requireListableDir } from "./ops.js";
import { DirWatcher, type WatchEvent, WatchStartError } from "./watch.js";

/** statfs magic numbers of network and FUSE filesystems, where inotify sees no remote changes. */
const NETWORK_FS = new Set([0x6969, 0xff534d42, 0x517b, 0xfe534d42, 0x65735546]);

export interface WatchRequest {
  path: string;
  recursive: boolean;
  includeEntry: boolean;
  allowNetworkMounts: boolean;
}

/**
 * A started watch whose events, entries attached when asked, come out in order through
 * `onEvent`. Shared by the WatchDir stream and the polling watchers.
 */
export class WatchSession {
  private chain: Promise<void> = Promise.resolve();

  private constructor(
    private readonly watcher: DirWatcher,
    readonly root: string,
  ) {}

  static async start(
    req: WatchRequest,
    creds: Credentials,
    db: UserDb,
    log: Logger,
    sink: { onEvent(e: FilesystemEvent): void; onError(err: Error): void },
  ): Promise<WatchSession> {
    await requireListableDir(req.path, creds);
    if (!req.allowNetworkMounts && NETWORK_FS.has((await statfs(req.path)).type)) {
      throw new ConnectError(
        `cannot watch path on network filesystem: ${req.path}`,
        Code.InvalidArgument,
      );
    }
    let session: WatchSession | undefined;
    const pending: WatchEvent[][] = [];
    const deliver = (events: WatchEvent[]) => {
      if (!session) {
        pending.push(events);
        return;
      }
      session.enqueue(events, req.includeEntry, db, log, sink);
    };
    let watcher: DirWatcher;
    try {
      watcher = await DirWatcher.start(req.path, {
        recursive: req.recursive,
        creds,
        log,
        onEvents: deliver,
        onError: (err) => sink.onError(err),
      });
    } catch (err) {
      if (err instanceof WatchStartError) {
        const code = {
          ENOSPC: Code.ResourceExhausted,
          EACCES: Code.PermissionDenied,
          ENOENT: Code.NotFound,
          EUNKNOWN: Code.Internal,
        }[err.code];
        throw new ConnectError(`cannot watch ${req.path}: ${err.message}`, code);
      }
      throw err;
    }
    session = new WatchSession(watcher, req.path);
    for (const events of pending) session.enqueue(events, req.includeEntry, db, log, sink);
    return session;
  }

  close(): void {
    this.watcher.close();
  }

  /** Entries are read asynchronously, so events go through one promise chain to keep order. */
  private enqueue(
    events: WatchEvent[],
    includeEntry: boolean,
    db: UserDb,
    log: Logger,
    sink: { onEvent(e: FilesystemEvent): void },
  ): void {
    this.chain = this.chain.then(async () => {
      for (const e of events) {
        const ev = create(FilesystemEventSchema, { name: e.name, type: e.type });
        if (includeEntry && e.type !== EventType.REMOVE && e.type !== EventType.RENAME) {
          try {
            ev.entry = toEntryInfo(await entryInfo(e.path, db));
          } catch (err) {
            // Gone again before we looked: the event stands without an entry, as E2B documents.
            if (!isMissing(err))
              log.warn("cannot read entry for watch event", { path: e.path, err: String(err) });
          }
        }
        sink.onEvent(ev);
      }
    });
  }
}
