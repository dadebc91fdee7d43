import type { MessageInitShape } from "@bufbuild/protobuf";
import { Code, ConnectError, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import type { Filesystem, WatchDirResponseSchema } from "@nestbox/proto/filesystem";
import type { EnvdContext } from "../context.js";
import { toConnectError } from "../errors.js";
import { checkSearch } from "./access.js";
import { entryInfo } from "./entry-info.js";
import { listDir, makeDir, movePath, removePath } from "./ops.js";
import { PollingWatchers } from "./pollers.js";
import { type RequestUser, requestUser } from "./request-user.js";
import { StreamQueue } from "./stream-queue.js";
import { WatchSession } from "./watch-session.js";

type WatchDirMessage = MessageInitShape<typeof WatchDirResponseSchema>;

/** How far a WatchDir client may fall behind before the stream is ended. */
const MAX_STREAM_BACKLOG = 65_536;

function requirePath(p: string, field = "path"): string {
  if (p === "") throw new ConnectError(`${field} is required`, Code.InvalidArgument);
  return p;
}

/** `Keepalive-Ping-Interval` in seconds, as the SDKs send it; 0 or junk means no keepalives. */
function keepaliveMs(hctx: HandlerContext): number {
  const seconds = Number(hctx.requestHeader.get("keepalive-ping-interval") ?? "");
  return Number.isFinite(seconds) && seconds > 0 ? seconds * 1000 : 0;
}

/**
 * Runs an RPC body as the requesting user, turning fs errors into Connect codes (ENOENT →
 * not_found, EACCES → permission_denied, …).
 */
async function asUser<T>(
  ctx: EnvdContext,
  hctx: HandlerContext,
  what: string,
  fn: (u: RequestUser) => Promise<T>,
): Promise<T> {
  try {
    return await fn(requestUser(ctx, hctx));
  } catch (err) {
    throw toConnectError(err, what);
  }
}

export function createFilesystemService(ctx: EnvdContext): ServiceImpl<typeof Filesystem> {
  const log = ctx.log.child({ service: "filesystem" });
  const pollers = new PollingWatchers(log);

  return {
    stat: (req, hctx) =>
      asUser(ctx, hctx, "stat", async (u) => {
        const p = u.resolve(requirePath(req.path));
        await checkSearch(p, u.creds);
        return { entry: await entryInfo(p, u.db) };
      }),

    makeDir: (req, hctx) =>
      asUser(ctx, hctx, "make dir", async (u) => ({
        entry: await makeDir(u.resolve(requirePath(req.path)), u.creds, u.db),
      })),

    move: (req, hctx) =>
      asUser(ctx, hctx, "move", async (u) => ({
        entry: await movePath(
          u.resolve(requirePath(req.source, "source")),
          u.resolve(requirePath(req.destination, "destination")),
          u.creds,
          u.db,
        ),
      })),

    listDir: (req, hctx) =>
      asUser(ctx, hctx, "list dir", async (u) => ({
        entries: await listDir(
          u.resolve(requirePath(req.path)),
          Math.max(1, req.depth),
          u.creds,
          u.db,
        ),
      })),

    remove: (req, hctx) =>
      asUser(ctx, hctx, "remove", async (u) => {
        await removePath(u.resolve(requirePath(req.path)), u.creds);
        return {};
      }),

    async *watchDir(req, hctx) {
      const queue = new StreamQueue<WatchDirMessage>(
        MAX_STREAM_BACKLOG,
        () => new ConnectError("watch client is too slow, events dropped", Code.ResourceExhausted),
      );
      let keepalive: NodeJS.Timeout | undefined;
      const session = await asUser(ctx, hctx, "watch dir", (u) =>
        WatchSession.start(
          {
            path: u.resolve(requirePath(req.path)),
            recursive: req.recursive,
            includeEntry: req.includeEntry,
            allowNetworkMounts: req.allowNetworkMounts,
          },
          u.creds,
          u.db,
          log,
          {
            onEvent: (e) => {
              queue.push({ event: { case: "filesystem", value: e } });
              keepalive?.refresh();
            },
            onError: (err) => queue.fail(toConnectError(err, "watch dir")),
          },
        ),
      );
      const interval = keepaliveMs(hctx);
      // Like E2B, a keepalive is due only after `interval` without any event.
      if (interval > 0) {
        keepalive = setInterval(
          () => queue.push({ event: { case: "keepalive", value: {} } }),
          interval,
        );
      }
      try {
        yield { event: { case: "start", value: {} } };
        yield* queue.drain(hctx.signal);
      } finally {
        clearInterval(keepalive);
        session.close();
      }
    },

    createWatcher: (req, hctx) =>
      asUser(ctx, hctx, "create watcher", async (u) => ({
        watcherId: await pollers.create(
          {
            path: u.resolve(requirePath(req.path)),
            recursive: req.recursive,
            includeEntry: req.includeEntry,
            allowNetworkMounts: req.allowNetworkMounts,
          },
          u.creds,
          u.db,
        ),
      })),

    getWatcherEvents: (req, hctx) =>
      asUser(ctx, hctx, "get watcher events", async () => ({
        events: pollers.take(requirePath(req.watcherId, "watcher_id")),
      })),

    removeWatcher: (req, hctx) =>
      asUser(ctx, hctx, "remove watcher", async () => {
        pollers.remove(requirePath(req.watcherId, "watcher_id"));
        return {};
      }),
  };
}
