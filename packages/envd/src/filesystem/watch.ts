import { type BigIntStats, type Dirent, type FSWatcher, lstatSync, watch } from "node:fs";
import { readdir } from "node:fs/promises";
import path from "node:path";
import { EventType } from "@nestbox/proto/filesystem";
import type { Logger } from "../log.js";
import { type Credentials, permits, R_OK, X_OK } from "./access.js";
import { isUploadTemp } from "./upload-temp.js";

/** One event as E2B reports it: `name` is relative to the watched directory. */
export interface WatchEvent {
  name: string;
  type: EventType;
  /** Absolute path, for building the entry. */
  path: string;
}

export interface DirWatcherOptions {
  recursive: boolean;
  creds: Credentials;
  log: Logger;
  onEvents(events: WatchEvent[]): void;
  /** The watched directory itself failed or vanished; the watch is over. */
  onError(err: Error): void;
}

interface RawEvent {
  kind: "rename" | "change";
  path: string;
}

interface Classified {
  raw: RawEvent;
  /** For "rename": did this event make the path appear or disappear? */
  appeared: boolean;
  stat: BigIntStats | undefined;
}

/**
 * A directory watcher on Node's fs.watch (one inotify watch per directory). Recursive watching
 * adds a watch for every existing and newly appearing subdirectory itself: Node 20's
 * `recursive: true` on Linux misses events in directories created after the start.
 *
 * Node reports only "rename" (appeared or disappeared) and "change" (data or attributes), so
 * events are collected for a few milliseconds (a burst such as both halves of a rename, which
 * another CPU may let us read separately, lands in one batch) and classified afterwards: each
 * "rename" toggles whether the path exists, starting from what we last knew or else working
 * back from an lstat taken now; a path that vanished directly followed by one that appeared is
 * a rename; "change" with mtime == ctime is a write (a write sets both to the same instant,
 * chmod/chown only ctime).
 */
/** How long events are gathered before being classified together. */
const BATCH_WINDOW_MS = 10;
/** Paths whose existence is remembered between batches; the oldest are forgotten first. */
const KNOWN_PATHS_LIMIT = 10_000;

export class DirWatcher {
  private readonly watchers = new Map<string, FSWatcher>();
  private batch: RawEvent[] = [];
  /** Whether each recently seen path exists after the events reported so far. */
  private readonly known = new Map<string, boolean>();
  private flushScheduled = false;
  private closed = false;

  private constructor(
    private readonly root: string,
    private readonly opts: DirWatcherOptions,
  ) {}

  /** Starts watching; throws if the root itself cannot be watched (e.g. inotify limits). */
  static async start(root: string, opts: DirWatcherOptions): Promise<DirWatcher> {
    const w = new DirWatcher(root, opts);
    w.addWatch(root, true);
    if (opts.recursive) await w.addTree(root, false);
    return w;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const fw of this.watchers.values()) fw.close();
    this.watchers.clear();
    this.batch = [];
  }

  get watchedDirs(): number {
    return this.watchers.size;
  }

  private addWatch(dir: string, isRoot: boolean): void {
    if (this.closed || this.watchers.has(dir)) return;
    let fw: FSWatcher;
    try {
      fw = watch(dir, { persistent: false, encoding: "utf8" });
    } catch (err) {
      if (isRoot) throw err;
      // A subdirectory that vanished or that we cannot watch (inotify limit): the rest of the
      // tree is still worth watching.
      this.opts.log.warn("cannot watch subdirectory", { dir, err: String(err) });
      return;
    }
    fw.on("change", (kind, filename) => {
      if (this.closed || typeof filename !== "string" || filename === "") return;
      this.batch.push({
        kind: kind === "change" ? "change" : "rename",
        path: path.join(dir, filename),
      });
      this.scheduleFlush();
    });
    fw.on("error", (err) => {
      fw.close();
      if (this.watchers.get(dir) === fw) this.watchers.delete(dir);
      if (isRoot) this.opts.onError(err);
    });
    this.watchers.set(dir, fw);
  }

  /**
   * Watches every directory below `dir`. With `report`, entries found are reported as CREATE
   * (and WRITE for non-empty files): they appeared inside a directory that was itself just
   * created, before its watch existed, so their own events were lost.
   */
  private async addTree(dir: string, report: boolean): Promise<void> {
    const found: WatchEvent[] = [];
    const walk = async (d: string) => {
      let entries: Dirent[];
      try {
        entries = await readdir(d, { withFileTypes: true });
      } catch (err) {
        // Gone again, or not listable: nothing below it to watch.
        this.opts.log.warn("cannot list directory to watch", { dir: d, err: String(err) });
        return;
      }
      for (const e of entries) {
        if (this.closed) return;
        const p = path.join(d, e.name);
        if (isUploadTemp(p)) continue;
        const st = lstatOrUndefined(p);
        if (st === undefined) continue;
        if (report) {
          found.push(this.event(p, EventType.CREATE));
          if (st.isFile() && st.size > 0n) found.push(this.event(p, EventType.WRITE));
        }
        if (st.isDirectory() && this.mayList(st)) {
          this.addWatch(p, false);
          await walk(p);
        }
      }
    };
    await walk(dir);
    if (found.length > 0 && !this.closed) this.opts.onEvents(found);
  }

  private mayList(st: BigIntStats): boolean {
    const owner = {
      mode: Number(st.mode),
      uid: Number(st.uid),
      gid: Number(st.gid),
      isDirectory: () => st.isDirectory(),
    };
    return permits(owner, this.opts.creds, R_OK | X_OK);
  }

  private scheduleFlush(): void {
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    setTimeout(() => {
      this.flushScheduled = false;
      this.flush();
    }, BATCH_WINDOW_MS);
  }

  private event(p: string, type: EventType): WatchEvent {
    return { name: path.relative(this.root, p), type, path: p };
  }

  private flush(): void {
    const batch = this.batch;
    this.batch = [];
    if (this.closed || batch.length === 0) return;
    const classified = this.classify(batch);
    const out: WatchEvent[] = [];
    const newDirs: string[] = [];
    for (let i = 0; i < classified.length; i++) {
      const c = classified[i] as Classified;
      const p = c.raw.path;
      if (c.raw.kind === "change") {
        if (isUploadTemp(p)) continue;
        // Already gone again (written, then moved or deleted in the same instant): it was
        // most likely written, and the removal or rename follows in this batch.
        const isWrite = c.stat === undefined || c.stat.mtimeNs === c.stat.ctimeNs;
        out.push(this.event(p, isWrite ? EventType.WRITE : EventType.CHMOD));
        continue;
      }
      if (!c.appeared) {
        const next = classified[i + 1];
        const movedTo =
          next?.raw.kind === "rename" && next.appeared && next.raw.path !== p ? next : undefined;
        this.unwatchBelow(p);
        if (movedTo) {
          i++;
          const to = movedTo.raw.path;
          if (isUploadTemp(p)) {
            // An upload landing: report it as E2B's in-place write would appear.
            if (!isUploadTemp(to)) {
              out.push(this.event(to, EventType.CREATE));
              // Already gone again: assume it had data, as nearly every upload does.
              if (movedTo.stat === undefined || movedTo.stat.size > 0n) {
                out.push(this.event(to, EventType.WRITE));
              }
            }
            continue;
          }
          out.push(this.event(p, EventType.RENAME));
          if (!isUploadTemp(to)) out.push(this.event(to, EventType.CREATE));
          if (movedTo.stat?.isDirectory()) this.rewatchMoved(to);
          continue;
        }
        if (!isUploadTemp(p)) out.push(this.event(p, EventType.REMOVE));
        continue;
      }
      if (isUploadTemp(p)) continue;
      out.push(this.event(p, EventType.CREATE));
      if (c.stat?.isDirectory() && this.opts.recursive && this.mayList(c.stat)) newDirs.push(p);
    }
    if (out.length > 0) this.opts.onEvents(out);
    for (const dir of newDirs) {
      this.addWatch(dir, false);
      this.addTree(dir, true).catch((err: unknown) =>
        this.opts.log.warn("cannot watch new directory", { dir, err: String(err) }),
      );
    }
  }

  /**
   * Decides for each "rename" whether the path appeared or disappeared. A path's events
   * alternate between the two, starting from its remembered state or, for a path not seen
   * before, from the state that makes them end where an lstat taken now finds it. One
   * exception: a rename onto an existing name (an upload landing over the old file) makes the
   * name "appear" without having disappeared; it shows as an event for an existing path right
   * after another path vanished.
   */
  private classify(batch: RawEvent[]): Classified[] {
    const stats = new Map<string, BigIntStats | undefined>();
    for (const e of batch) {
      if (!stats.has(e.path)) stats.set(e.path, lstatOrUndefined(e.path));
    }
    // Where the path stood before this batch: remembered, or derived from its current state
    // and the number of toggles in the batch.
    const before = new Map<string, boolean>();
    for (const [p, st] of stats) {
      const remembered = this.known.get(p);
      if (remembered !== undefined) {
        before.set(p, remembered);
        continue;
      }
      const toggles = batch.filter((e) => e.path === p && e.kind === "rename").length;
      before.set(p, (st !== undefined) !== (toggles % 2 === 1));
    }
    const exists = new Map(before);
    const out: Classified[] = [];
    let previous: Classified | undefined;
    for (const raw of batch) {
      const stat = stats.get(raw.path);
      if (raw.kind === "change") {
        exists.set(raw.path, true);
        out.push({ raw, appeared: true, stat });
        previous = undefined;
        continue;
      }
      const movedOver =
        previous !== undefined &&
        !previous.appeared &&
        previous.raw.path !== raw.path &&
        stat !== undefined;
      const appeared = movedOver || !exists.get(raw.path);
      exists.set(raw.path, appeared);
      previous = { raw, appeared, stat: appeared ? stat : undefined };
      out.push(previous);
    }
    for (const [p, e] of exists) this.remember(p, e);
    // Self events (the watched directory itself deleted or moved) carry its own basename;
    // the parent's watcher reports those, so they are dropped here.
    return out.filter((c) => !this.isSelfEvent(c));
  }

  private remember(p: string, exists: boolean): void {
    this.known.delete(p);
    this.known.set(p, exists);
    if (this.known.size > KNOWN_PATHS_LIMIT) {
      const oldest = this.known.keys().next().value;
      if (oldest !== undefined) this.known.delete(oldest);
    }
  }

  private isSelfEvent(c: Classified): boolean {
    const dir = path.dirname(c.raw.path);
    return (
      c.raw.kind === "rename" &&
      !c.appeared &&
      path.basename(c.raw.path) === path.basename(dir) &&
      lstatOrUndefined(dir) === undefined
    );
  }

  /** Stops watching a directory (and everything below) that was removed or moved away. */
  private unwatchBelow(p: string): void {
    const prefix = `${p}/`;
    for (const [dir, fw] of this.watchers) {
      if (dir === this.root) continue;
      if (dir === p || dir.startsWith(prefix)) {
        fw.close();
        this.watchers.delete(dir);
      }
    }
  }

  private rewatchMoved(dir: string): void {
    if (!this.opts.recursive) return;
    this.addWatch(dir, false);
    this.addTree(dir, false).catch((err: unknown) =>
      this.opts.log.warn("cannot watch moved directory", { dir, err: String(err) }),
    );
  }
}

function lstatOrUndefined(p: string): BigIntStats | undefined {
  try {
    return lstatSync(p, { bigint: true, throwIfNoEntry: false });
  } catch (err) {
    // ENOTDIR/EACCES on the way there: for event classification that is "not there".
    if (
      (err as NodeJS.ErrnoException).code === "ENOTDIR" ||
      (err as NodeJS.ErrnoException).code === "EACCES"
    ) {
      return undefined;
    }
    throw err;
  }
}
