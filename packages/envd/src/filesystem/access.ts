import { readFileSync, type Stats } from "node:fs";
import { lstat, realpath, stat } from "node:fs/promises";
import path from "node:path";
import type { UserInfo } from "../users.js";

/** Permission bits as `access(2)` takes them. */
export const R_OK = 4;
export const W_OK = 2;
export const X_OK = 1;

/** Who a filesystem operation runs as: what the kernel would check if envd were not root. */
export interface Credentials {
  readonly name: string;
  readonly uid: number;
  readonly gid: number;
  /** Primary plus supplementary groups. */
  readonly groups: ReadonlySet<number>;
  readonly home: string;
}

/**
 * The user's groups from /etc/group. Read each time like UserDb: `usermod -aG` inside a running
 * sandbox must take effect without restarting envd.
 */
export function credentialsFor(user: UserInfo, groupFile = "/etc/group"): Credentials {
  const groups = new Set<number>([user.gid]);
  if (user.uid !== 0) {
    let text = "";
    try {
      text = readFileSync(groupFile, "utf8");
    } catch (err) {
      // Without a group file the user only has the primary group, which is what the kernel
      // would give a process started by a login that found no group file either.
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
    }
    for (const line of text.split("\n")) {
      const [, , gid, members] = line.split(":");
      if (gid === undefined || !members) continue;
      if (members.split(",").some((m) => m.trim() === user.name)) groups.add(Number(gid));
    }
  }
  return { name: user.name, uid: user.uid, gid: user.gid, groups, home: user.home };
}

export function isRoot(creds: Credentials): boolean {
  return creds.uid === 0;
}

/** An errno-shaped error, so the HTTP and Connect layers map it like a real syscall failure. */
export function errnoError(code: string, message: string, p: string): NodeJS.ErrnoException {
  const err: NodeJS.ErrnoException = new Error(`${message}: ${p}`);
  err.code = code;
  err.path = p;
  return err;
}

/** The parts of a stat result a permission check needs. */
export interface ModeOwner {
  mode: number;
  uid: number;
  gid: number;
  isDirectory(): boolean;
}

/** The permission class (owner, group, other) the kernel picks for these credentials. */
export function permits(st: ModeOwner, creds: Credentials, want: number): boolean {
  if (isRoot(creds)) {
    // root may do anything except execute a file no one can execute; searching dirs is fine.
    return (want & X_OK) === 0 || st.isDirectory() || (st.mode & 0o111) !== 0;
  }
  let bits: number;
  if (st.uid === creds.uid) bits = (st.mode >> 6) & 7;
  else if (creds.groups.has(st.gid)) bits = (st.mode >> 3) & 7;
  else bits = st.mode & 7;
  return (bits & want) === want;
}

/**
 * Throws EACCES unless the user may traverse every directory leading to `p`. Both the path as
 * written and its resolved form are checked: the kernel walks the written path (so a link
 * under /root does not help), and a link must not lead into a directory the user cannot enter.
 * A missing component stops the walk; the operation itself then reports ENOENT.
 */
export async function checkSearch(p: string, creds: Credentials): Promise<void> {
  if (isRoot(creds)) return;
  const parent = path.dirname(p);
  await checkAncestors(parent, creds, true);
  let real: string;
  try {
    real = await realpath(parent);
  } catch (err) {
    if (isMissing(err)) return;
    throw err;
  }
  if (real !== parent) await checkAncestors(real, creds, true);
}

/** Checks search permission on `dir` and every directory above it. */
async function checkAncestors(dir: string, creds: Credentials, includeSelf: boolean) {
  const parts = dir.split("/").filter(Boolean);
  const prefixes = ["/"];
  for (let i = 0; i < parts.length; i++) prefixes.push(`/${parts.slice(0, i + 1).join("/")}`);
  if (!includeSelf) prefixes.pop();
  for (const prefix of prefixes) {
    let st: Stats;
    try {
      st = await stat(prefix);
    } catch (err) {
      if (isMissing(err)) return;
      throw err;
    }
    if (!st.isDirectory()) throw errnoError("ENOTDIR", "not a directory", prefix);
    if (!permits(st, creds, X_OK)) throw errnoError("EACCES", "permission denied", prefix);
  }
}

/**
 * `access(p, want)` for another user: search permission on the way, then `want` on `p` itself
 * (following symlinks, as open(2) does). Returns the stats of `p`.
 */
export async function checkAccess(p: string, want: number, creds: Credentials): Promise<Stats> {
  await checkSearch(p, creds);
  const st = await stat(p);
  if (!permits(st, creds, want)) throw errnoError("EACCES", "permission denied", p);
  return st;
}

/**
 * May the user unlink or rename `p` out of its directory? Needs write and search on the parent
 * and, in a sticky directory such as /tmp, ownership of the entry or the directory.
 */
export async function checkUnlink(p: string, creds: Credentials): Promise<Stats> {
  const parent = path.dirname(p);
  const parentStat = await checkAccess(parent, W_OK | X_OK, creds);
  const st = await lstat(p);
  if (
    !isRoot(creds) &&
    (parentStat.mode & 0o1000) !== 0 &&
    st.uid !== creds.uid &&
    parentStat.uid !== creds.uid
  ) {
    throw errnoError("EPERM", "operation not permitted (sticky directory)", p);
  }
  return st;
}

export function isMissing(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  return code === "ENOENT" || code === "ENOTDIR";
}
