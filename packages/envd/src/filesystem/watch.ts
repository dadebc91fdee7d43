import { type ChildProcess, spawn } from "node:child_process";
import { type Dirent, lstatSync } from "node:fs";
import { readdir } from "node:fs/promises";
import path from "node:path";
import { EventType } from "@nestbox/proto/filesystem";
import type { Logger } from "../log.js";
import { userArgv } from "../process/launch.js";
import type { Credentials } from "./access.js";
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
  /** The watcher failed or the watched directory vanished; the watch is over. */
  onError(err: Error): void;
}

/** Why a watch could not start, with errno-like codes the service maps to Connect codes. */
export class WatchStartError extends Error {
  constructor(
    message: string,
    readonly code: "ENOSPC" | "EACCES" | "ENOENT" | "EUNKNOWN",
  ) {
    super(message);
    this.name = "WatchStartError";
  }
}

const INOTIFY_EVENTS = "create,modify,delete,moved_from,moved_to,attrib,delete_self,move_self";
/** How long after a directory appears we list it for entries created before its watch. */
const NEW_DIR_SCAN_DELAY_MS = 50;
/** A synthesized CREATE suppresses the real one for the same path within this window. */
const SYNTHESIZED_TTL_MS = 2000;

/**
 * A directory watcher on the kernel's inotify, through util `inotifywait` (inotify-tools): it
 * reports exact event kinds (create, modify, delete, moved from/to, attrib), which E2B's envd
 * (fsnotify) maps one to one. Node's fs.watch only says "rename" or "change", and guessing the
 * kind from that is unreliable under load.
 *
 * inotifywait runs as the requesting user, so the kernel enforces that user's permission to
 * watch each directory. With `recursive`, directories created later are watched as they appear;
 * entries created in them before the watch existed are found by listing the new directory.
 */
export class DirWatcher {
  private child: ChildProcess | undefined;
  private closed = false;
  private buffer = "";
  /** The last MOVED_FROM, to recognise an upload's temp file landing on its destination. */
  private lastMovedFrom: string | undefined;
  private readonly synthesized = new Map<string, number>();

  private constructor(
    private readonly root: string,
    private readonly opts: DirWatcherOptions,
  ) {}

  static async start(root: string, opts: DirWatcherOptions): Promise<DirWatcher> {
    const w = new DirWatcher(path.resolve(root), opts);
    await w.spawn();
    return w;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.child?.kill("SIGKILL");
  }

  private spawn(): Promise<void> {
    const args = ["-m", "-e", INOTIFY_EVENTS, "--format", "%e %w%f%0", "--no-newline"];
    if (this.opts.recursive) args.push("-r");
    args.push("--", this.root);
    const c = this.opts.creds;
    const argv = userArgv(
      { name: c.name, uid: c.uid, gid: c.gid, home: c.home, shell: "/bin/sh" },
      "inotifywait",
      args,
    );
    return new Promise((resolve, reject) => {
      let ready = false;
      let stderr = "";
      const child = spawn(argv.file, argv.args, {
        stdio: ["ignore", "pipe", "pipe"],
        ...(argv.uid !== undefined ? { uid: argv.uid, gid: argv.gid } : {}),
      });
      this.child = child;
      child.once("error", (err) => {
        const e = new WatchStartError(`cannot run inotifywait: ${err.message}`, "EUNKNOWN");
        if (!ready) reject(e);
        else this.fail(e);
      });
      child.stderr?.setEncoding("utf8");
      child.stderr?.on("data", (d: string) => {
        stderr += d;
        if (stderr.length > 8192) stderr = stderr.slice(-4096);
        if (!ready && stderr.includes("Watches established.")) {
          ready = true;
          resolve();
        }
      });
      child.stdout?.setEncoding("utf8");
      child.stdout?.on("data", (d: string) => this.onData(d));
      child.once("exit", (code, signal) => {
        if (this.closed) return;
        const err = startError(stderr, code, signal);
        if (!ready) reject(err);
        else this.fail(err);
      });
    });
  }

  private fail(err: Error): void {
    if (this.closed) return;
    this.close();
    this.opts.onError(err);
  }

  private onData(chunk: string): void {
    this.buffer += chunk;
    const records = this.buffer.split("\0");
    this.buffer = records.pop() ?? "";
    const out: WatchEvent[] = [];
    for (const rec of records) this.translate(rec, out);
    if (out.length > 0 && !this.closed) this.opts.onEvents(out);
  }

  /** Maps one inotifywait record ("CREATE,ISDIR /abs/path") to E2B events, as fsnotify does. */
  private translate(record: string, out: WatchEvent[]): void {
    const space = record.indexOf(" ");
    if (space < 0) return;
    const kinds = new Set(record.slice(0, space).split(","));
    let p = record.slice(space + 1);
    if (p.length > 1 && p.endsWith("/")) p = p.slice(0, -1);
    const isDir = kinds.has("ISDIR");
    const self = kinds.has("DELETE_SELF") || kinds.has("MOVE_SELF");
    if (self) {
      // Subdirectories' own deletion is also reported by their parent; only the root matters.
      if (p === this.root)
        this.fail(new Error(`watched directory ${this.root} was removed or moved`));
      return;
    }
    const movedFrom = this.lastMovedFrom;
    this.lastMovedFrom = kinds.has("MOVED_FROM") ? p : undefined;
    if (isUploadTemp(p)) return;
    if (kinds.has("CREATE")) {
      if (!this.consumeSynthesized(p)) out.push(this.event(p, EventType.CREATE));
      if (isDir && this.opts.recursive) this.scanNewDir(p);
    }
    if (kinds.has("MOVED_TO")) {
      out.push(this.event(p, EventType.CREATE));
      // An upload landing by rename reads, to E2B clients, like the in-place write it replaces.
      if (movedFrom !== undefined && isUploadTemp(movedFrom))
        out.push(this.event(p, EventType.WRITE));
      if (isDir && this.opts.recursive) this.scanNewDir(p);
    }
    if (kinds.has("MODIFY")) out.push(this.event(p, EventType.WRITE));
    if (kinds.has("ATTRIB")) out.push(this.event(p, EventType.CHMOD));
    if (kinds.has("DELETE")) out.push(this.event(p, EventType.REMOVE));
    if (kinds.has("MOVED_FROM")) out.push(this.event(p, EventType.RENAME));
  }

  private event(p: string, type: EventType): WatchEvent {
    return { name: path.relative(this.root, p), type, path: p };
  }

  private consumeSynthesized(p: string): boolean {
    const at = this.synthesized.get(p);
    if (at === undefined) return false;
    this.synthesized.delete(p);
    return Date.now() - at < SYNTHESIZED_TTL_MS;
  }

  /**
   * Lists a directory that just appeared: what was created in it before inotifywait added its
   * watch produced no events, so report it as created (and written, for non-empty files).
   */
  private scanNewDir(dir: string): void {
    setTimeout(() => {
      if (this.closed) return;
      const found: WatchEvent[] = [];
      const walk = async (d: string): Promise<void> => {
        let entries: Dirent[];
        try {
          entries = await readdir(d, { withFileTypes: true });
        } catch (err) {
          // Gone again or not listable by envd: nothing inside to report.
          this.opts.log.warn("cannot list new directory", { dir: d, err: String(err) });
          return;
        }
        for (const e of entries) {
          const p = path.join(d, e.name);
          if (isUploadTemp(p) || this.synthesized.has(p)) continue;
          this.synthesized.set(p, Date.now());
          found.push(this.event(p, EventType.CREATE));
          if (e.isDirectory()) await walk(p);
          else if (e.isFile() && sizeOf(p) > 0) found.push(this.event(p, EventType.WRITE));
        }
      };
      walk(dir).then(
        () => {
          this.pruneSynthesized();
          if (found.length > 0 && !this.closed) this.opts.onEvents(found);
        },
        (err: unknown) =>
          this.opts.log.warn("scanning new directory failed", { dir, err: String(err) }),
      );
    }, NEW_DIR_SCAN_DELAY_MS);
  }

  private pruneSynthesized(): void {
    const now = Date.now();
    for (const [p, at] of this.synthesized)
      if (now - at >= SYNTHESIZED_TTL_MS) this.synthesized.delete(p);
  }
}

function sizeOf(p: string): number {
  try {
    return lstatSync(p).size;
  } catch (err) {
    // Removed between listing and stat: report it as empty.
    void err;
    return 0;
  }
}

function startError(
  stderr: string,
  code: number | null,
  signal: NodeJS.Signals | null,
): WatchStartError {
  const text = stderr
    .split("\n")
    .filter((l) => l && !l.startsWith("Setting up watches") && !l.startsWith("Watches established"))
    .join("; ")
    .trim();
  const why = text || `inotifywait exited (${signal ?? `code ${code}`})`;
  if (/upper limit on inotify watches|inotify instances/i.test(why))
    return new WatchStartError(why, "ENOSPC");
  if (/permission denied/i.test(why)) return new WatchStartError(why, "EACCES");
  if (/no such file/i.test(why)) return new WatchStartError(why, "ENOENT");
  return new WatchStartError(why, "EUNKNOWN");
}
