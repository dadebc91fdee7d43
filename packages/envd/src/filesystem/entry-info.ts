import type { Stats } from "node:fs";
import { lstat, realpath, stat } from "node:fs/promises";
import path from "node:path";
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { type Timestamp, TimestampSchema } from "@bufbuild/protobuf/wkt";
import { type EntryInfo, EntryInfoSchema, FileType } from "@nestbox/proto/filesystem";
import type { UserDb } from "../users.js";
import { readMetadata } from "./metadata.js";

export type EntryInit = MessageInitShape<typeof EntryInfoSchema>;

/** The letters Go's `FileMode.String()` prints for type and special bits, in its order. */
function typeLetters(st: Stats): string {
  let s = "";
  if (st.isDirectory()) s += "d";
  if (st.isSymbolicLink()) s += "L";
  if (st.isBlockDevice() || st.isCharacterDevice()) s += "D";
  if (st.isFIFO()) s += "p";
  if (st.isSocket()) s += "S";
  if (st.mode & 0o4000) s += "u";
  if (st.mode & 0o2000) s += "g";
  if (st.isCharacterDevice()) s += "c";
  if (st.mode & 0o1000) s += "t";
  return s;
}

/**
 * The permissions string exactly as E2B's Go envd renders it (`FileMode.String()`), e.g.
 * `-rw-r--r--`, `drwxr-xr-x`, `Lrwxrwxrwx`, `dtrwxrwxrwx` for /tmp.
 */
export function permissionString(st: Stats): string {
  const rwx = "rwxrwxrwx";
  let perm = "";
  for (let i = 0; i < 9; i++) perm += st.mode & (1 << (8 - i)) ? rwx[i] : "-";
  return (typeLetters(st) || "-") + perm;
}

function fileType(st: Stats): FileType {
  if (st.isFile()) return FileType.FILE;
  if (st.isDirectory()) return FileType.DIRECTORY;
  if (st.isSymbolicLink()) return FileType.SYMLINK;
  return FileType.UNSPECIFIED;
}

/**
 * EntryInfo for `p` the way E2B's envd builds it: lstat for name/size/owner/mtime; for a
 * symlink, the fully resolved target, and `type`/`mode` taken from the target. A dangling link
 * is reported as SYMLINK (E2B sends UNSPECIFIED, which makes the SDK drop it from listings).
 * `st` may be passed when the caller already has the lstat result.
 */
export async function entryInfo(p: string, db: UserDb, st?: Stats): Promise<EntryInit> {
  const ls = st ?? (await lstat(p));
  let type = fileType(ls);
  let mode = ls.mode & 0o777;
  let symlinkTarget: string | undefined;
  let metadata: Record<string, string> = {};
  if (ls.isSymbolicLink()) {
    try {
      symlinkTarget = await realpath(p);
      const target = await stat(symlinkTarget);
      type = fileType(target);
      mode = target.mode & 0o777;
      metadata = await readMetadata(symlinkTarget);
    } catch (err) {
      // Dangling or looping link: Go's EvalSymlinks fails and E2B then reports the link itself.
      if (!isResolveError(err)) throw err;
      symlinkTarget ??= p;
    }
  } else if (ls.isFile() || ls.isDirectory()) {
    metadata = await readMetadata(p);
  }
  return {
    name: path.basename(p),
    type,
    path: p,
    size: BigInt(ls.size),
    mode,
    permissions: permissionString(ls),
    owner: db.userName(ls.uid),
    group: db.groupName(ls.gid),
    modifiedTime: timestampOf(ls.mtimeMs),
    ...(symlinkTarget !== undefined ? { symlinkTarget } : {}),
    metadata,
  };
}

export function toEntryInfo(init: EntryInit): EntryInfo {
  return create(EntryInfoSchema, init);
}

/** A Timestamp with whole nanoseconds: stat times are fractional milliseconds. */
export function timestampOf(ms: number): Timestamp {
  const seconds = Math.floor(ms / 1000);
  const nanos = Math.min(999_999_999, Math.round((ms - seconds * 1000) * 1e6));
  return create(TimestampSchema, { seconds: BigInt(seconds), nanos });
}

function isResolveError(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  return code === "ENOENT" || code === "ELOOP" || code === "ENOTDIR" || code === "EACCES";
}
