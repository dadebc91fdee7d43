import type { Logger } from "./log.js";
import type { EnvdState } from "./state.js";
import { requireUser, UserDb, type UserInfo } from "./users.js";

/** What every handler needs: the mutable state and a logger. */
export interface EnvdContext {
  readonly state: EnvdState;
  readonly log: Logger;
}

/** The user a request runs as: the one it names, else the configured default. */
export function userFor(
  ctx: EnvdContext,
  requested: string | undefined,
  db = UserDb.load(),
): UserInfo {
  return requireUser(requested ?? ctx.state.defaultUser, db);
}
