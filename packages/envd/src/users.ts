import { readFileSync } from "node:fs";
import path from "node:path";
import { Code, ConnectError } from "@connectrpc/connect";

export interface UserInfo {
  name: string;
  uid: number;
  gid: number;
  home: string;
  shell: string;
}

/**
 * A snapshot of /etc/passwd and /etc/group. Read per request rather than cached for the
 * process lifetime because users can be added inside a running sandbox (useradd, apt).
 */
export class UserDb {
  private constructor(
    private readonly users: Map<string, UserInfo>,
    private readonly uidNames: Map<number, string>,
    private readonly gidNames: Map<number, string>,
  ) {}

  static load(root = "/etc"): UserDb {
    const users = new Map<string, UserInfo>();
    const uidNames = new Map<number, string>();
    const gidNames = new Map<number, string>();
    for (const line of readLines(path.join(root, "passwd"))) {
      const [name, , uid, gid, , home, shell] = line.split(":");
      if (!name || uid === undefined || gid === undefined) continue;
      const info: UserInfo = {
        name,
        uid: Number(uid),
        gid: Number(gid),
        home: home || "/",
        shell: shell || "/bin/sh",
      };
      if (!users.has(name)) users.set(name, info);
      if (!uidNames.has(info.uid)) uidNames.set(info.uid, name);
    }
    for (const line of readLines(path.join(root, "group"))) {
      const [name, , gid] = line.split(":");
      if (!name || gid === undefined) continue;
      if (!gidNames.has(Number(gid))) gidNames.set(Number(gid), name);
    }
    return new UserDb(users, uidNames, gidNames);
  }

  find(name: string): UserInfo | undefined {
    return this.users.get(name);
  }

  userName(uid: number): string {
    return this.uidNames.get(uid) ?? String(uid);
  }

  groupName(gid: number): string {
    return this.gidNames.get(gid) ?? String(gid);
  }
}

function readLines(file: string): string[] {
  try {
    return readFileSync(file, "utf8").split("\n");
  } catch (err) {
    // A missing group file only costs us names; a missing passwd means no users at all.
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return [];
    throw err;
  }
}

/** Looks up a user by name, as a Connect error the SDK maps to InvalidArgumentError. */
export function requireUser(name: string, db = UserDb.load()): UserInfo {
  const user = db.find(name);
  if (!user) throw new ConnectError(`user '${name}' does not exist`, Code.InvalidArgument);
  return user;
}

/**
 * Resolves a path the way E2B's envd does: `~` and `~/x` against the user's home, relative
 * paths against the user's home, absolute paths as they are; always normalised.
 */
export function resolveUserPath(p: string, user: UserInfo): string {
  if (p === "~") return user.home;
  if (p.startsWith("~/")) return path.join(user.home, p.slice(2));
  if (path.isAbsolute(p)) return path.normalize(p);
  return path.join(user.home, p);
}
