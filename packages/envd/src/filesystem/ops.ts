import type { Stats } from "node:fs";
import { chown, lstat, mkdir, readdir, rename, rm, stat, unlink } from "node:fs/promises";
import path from "node:path";
import { Code, ConnectError } from "@connectrpc/connect";
import type { UserDb } from "../users.js";
import {
  type Credentials,
  checkAccess,
  checkSearch,
  checkUnlink,
  errnoError,
  isMissing,
  isRoot,
  permits,
  R_OK,
  W_OK,
  X_OK,
} from "./access.js";
import { type EntryInit, entryInfo } from "./entry-info.js";

/** New directories get E2B's mode; the user's umask does not apply to envd. */
const DIR_MODE = 0o755;

/**
 * `mkdir -p` as the user: checks write permission where the first directory is created and
 * chowns each new directory to the user. Returns the directories it created, top first.
 */
export async function ensureDirs(dir: string, creds: Credentials): Promise<string[]> {
  const missing: string[] = [];
  let existing = dir;
  for (;;) {
    try {
      const st = await stat(existing);
      if (!st.isDirectory()) throw errnoError("ENOTDIR", "not a directory", existing);
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
      missing.unshift(existing);
      const parent = path.dirname(existing);
      if (parent === existing) throw err;
      existing = parent;
    }
  }
  if (missing.length === 0) return [];
  await checkAccess(existing, W_OK | X_OK, creds);
  const created: string[] = [];
  for (const d of missing) {
    try {
      await mkdir(d, { mode: DIR_MODE });
    } catch (err) {
      // Someone else created it meanwhile: fine if it is a directory, and then it is not ours
      // to chown.
      if ((err as NodeJS.ErrnoException).code === "EEXIST" && (await stat(d)).isDirectory())
        continue;
      throw err;
    }
    await chown(d, creds.uid, creds.gid);
    created.push(d);
  }
  return created;
}

/** MakeDir: already_exists for a directory, invalid_argument for anything else in the way. */
export async function makeDir(p: string, creds: Credentials, db: UserDb): Promise<EntryInit> {
  await checkSearch(p, creds);
  let st: Stats | undefined;
  try {
    st = await stat(p);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
  }
  if (st?.isDirectory())
    throw new ConnectError(`directory already exists: ${p}`, Code.AlreadyExists);
  if (st)
    throw new ConnectError(
      `path already exists and is not a directory: ${p}`,
      Code.InvalidArgument,
    );
  await ensureDirs(p, creds);
  return entryInfo(p, db);
}

/** Throws invalid_argument unless `p` (following symlinks) is a directory the user may list. */
export async function requireListableDir(p: string, creds: Credentials): Promise<Stats> {
  await checkSearch(p, creds);
  const st = await stat(p);
  if (!st.isDirectory())
    throw new ConnectError(`path is not a directory: ${p}`, Code.InvalidArgument);
  if (!permits(st, creds, R_OK | X_OK)) throw errnoError("EACCES", "permission denied", p);
  return st;
}

/** How many lstat/xattr reads a listing runs at once. */
const LIST_CONCURRENCY = 32;

/**
 * ListDir: entries up to `depth` levels below `root` in pre-order, names sorted like Go's
 * WalkDir. Symlinks are never followed (except `root` itself), entry paths stay under `root`
 * as requested, entries that vanish mid-walk are skipped, and directories the user cannot
 * list are shown but not descended into.
 */
export async function listDir(
  root: string,
  depth: number,
  creds: Credentials,
  db: UserDb,
): Promise<EntryInit[]> {
  await requireListableDir(root, creds);
  const out: EntryInit[] = [];
  const walk = async (dir: string, level: number): Promise<void> => {
    let names: string[];
    try {
      names = (await readdir(dir)).sort();
    } catch (err) {
      if (isMissing(err) && dir !== root) return;
      throw err;
    }
    const infos: (EntryInit | undefined)[] = new Array(names.length);
    const stats: (Stats | undefined)[] = new Array(names.length);
    for (let i = 0; i < names.length; i += LIST_CONCURRENCY) {
      await Promise.all(
        names.slice(i, i + LIST_CONCURRENCY).map(async (name, j) => {
          const p = path.join(dir, name);
          try {
            const st = await lstat(p);
            stats[i + j] = st;
            infos[i + j] = await entryInfo(p, db, st);
          } catch (err) {
            if (!isMissing(err)) throw err;
          }
        }),
      );
    }
    for (let i = 0; i < names.length; i++) {
      const info = infos[i];
      const st = stats[i];
      if (!info || !st) continue;
      out.push(info);
      if (level < depth && st.isDirectory() && permits(st, creds, R_OK | X_OK)) {
        await walk(path.join(dir, names[i] as string), level + 1);
      }
    }
  };
  await walk(root, 1);
  return out;
}

/**
 * Remove: files, symlinks and whole trees. For another user than root the tree is checked
 * first the way `rm -r` would fail (each directory must be readable, writable and searchable,
 * sticky directories only give up entries the user owns), so a denied removal deletes nothing.
 */
export async function removePath(p: string, creds: Credentials): Promise<void> {
  const st = await checkUnlink(p, creds);
  if (!st.isDirectory()) {
    await unlink(p);
    return;
  }
  if (!isRoot(creds)) await checkTreeRemovable(p, st, creds);
  await rm(p, { recursive: true, force: false, maxRetries: 2 });
}

async function checkTreeRemovable(dir: string, st: Stats, creds: Credentials): Promise<void> {
  if (!permits(st, creds, R_OK | W_OK | X_OK)) throw errnoError("EACCES", "permission denied", dir);
  const sticky = (st.mode & 0o1000) !== 0 && st.uid !== creds.uid;
  for (const name of await readdir(dir)) {
    const p = path.join(dir, name);
    let child: Stats;
    try {
      child = await lstat(p);
    } catch (err) {
      if (isMissing(err)) continue;
      throw err;
    }
    if (sticky && child.uid !== creds.uid) {
      throw errnoError("EPERM", "operation not permitted (sticky directory)", p);
    }
    if (child.isDirectory()) await checkTreeRemovable(p, child, creds);
  }
}

/** Move: rename, creating the destination's parents; not_found when the source is missing. */
export async function movePath(
  source: string,
  destination: string,
  creds: Credentials,
  db: UserDb,
): Promise<EntryInit> {
  const srcStat = await checkUnlink(source, creds);
  const destDir = path.dirname(destination);
  await checkSearch(destination, creds);
  await ensureDirs(destDir, creds);
  await checkAccess(destDir, W_OK | X_OK, creds);
  try {
    await checkUnlink(destination, creds);
  } catch (err) {
    if (!isMissing(err)) throw err;
  }
  // Moving a directory to a new parent rewrites its "..", which needs write permission on it.
  if (srcStat.isDirectory() && path.dirname(source) !== destDir && !permits(srcStat, creds, W_OK)) {
    throw errnoError("EACCES", "permission denied", source);
  }
  await rename(source, destination);
  return entryInfo(destination, db);
}
