import { accessSync, constants, statSync } from "node:fs";
import path from "node:path";
import { Code, ConnectError } from "@connectrpc/connect";
import type { EnvdState } from "../state.js";
import { resolveUserPath, type UserInfo } from "../users.js";

const DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/** Login-like environment: the user's identity, then sandbox-wide vars, then the request's. */
export function buildEnv(
  user: UserInfo,
  state: EnvdState,
  requestEnvs: Record<string, string>,
): Record<string, string> {
  return {
    PATH: DEFAULT_PATH,
    HOME: user.home,
    USER: user.name,
    LOGNAME: user.name,
    SHELL: user.shell,
    ...state.envVars,
    ...requestEnvs,
  };
}

/** The working directory: requested (`~` and relative resolve against home), default, or home. */
export function resolveCwd(
  requested: string | undefined,
  user: UserInfo,
  state: EnvdState,
): string {
  const raw = requested || state.defaultWorkdir || user.home;
  const cwd = resolveUserPath(raw, user);
  let isDir = false;
  try {
    isDir = statSync(cwd).isDirectory();
  } catch (err) {
    // Missing or unreadable: reported below as the SDK-visible invalid_argument.
    isDir = false;
    void err;
  }
  if (!isDir) {
    // A missing default home should not make every command fail: fall back to /.
    if (!requested && !state.defaultWorkdir) return "/";
    throw new ConnectError(
      `cwd '${cwd}' does not exist or is not a directory`,
      Code.InvalidArgument,
    );
  }
  return cwd;
}

/** Finds an executable the way execvp would, so a typo is an RPC error rather than exit 127. */
export function resolveExecutable(cmd: string, envPath: string | undefined): string {
  if (cmd.includes("/")) {
    checkExecutable(cmd);
    return cmd;
  }
  for (const dir of (envPath ?? DEFAULT_PATH).split(":")) {
    if (!dir) continue;
    const candidate = path.join(dir, cmd);
    try {
      accessSync(candidate, constants.X_OK);
      if (statSync(candidate).isFile()) return candidate;
    } catch (err) {
      // Not in this PATH entry; keep looking.
      void err;
    }
  }
  throw new ConnectError(`executable file not found in $PATH: ${cmd}`, Code.NotFound);
}

function checkExecutable(file: string): void {
  try {
    accessSync(file, constants.X_OK);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ENOENT") throw new ConnectError(`no such file: ${file}`, Code.NotFound);
    throw new ConnectError(`not executable: ${file}`, Code.PermissionDenied);
  }
}

let setprivPath: string | null | undefined;

/**
 * The argv that runs `file args` as `user`. When envd is root and the user is not, we exec
 * through util-linux `setpriv` so the process also gets the user's supplementary groups
 * (Node's uid/gid spawn options drop them all).
 */
export function userArgv(
  user: UserInfo,
  file: string,
  args: string[],
): { file: string; args: string[]; uid?: number; gid?: number } {
  const self = process.getuid?.() ?? 0;
  if (user.uid === self) return { file, args };
  if (self !== 0) {
    throw new ConnectError(
      `envd runs as uid ${self} and cannot start processes as '${user.name}'`,
      Code.PermissionDenied,
    );
  }
  if (setprivPath === undefined) {
    setprivPath = null;
    for (const p of ["/usr/bin/setpriv", "/bin/setpriv"]) {
      try {
        accessSync(p, constants.X_OK);
        setprivPath = p;
        break;
      } catch (err) {
        void err;
      }
    }
  }
  if (setprivPath) {
    return {
      file: setprivPath,
      args: [`--reuid=${user.uid}`, `--regid=${user.gid}`, "--init-groups", "--", file, ...args],
    };
  }
  return { file, args, uid: user.uid, gid: user.gid };
}
