import type { HandlerContext } from "@connectrpc/connect";
import { parseBasicUser } from "../auth.js";
import { type EnvdContext, userFor } from "../context.js";
import { resolveUserPath, UserDb, type UserInfo } from "../users.js";
import { type Credentials, credentialsFor } from "./access.js";

/** The user an RPC runs as (Basic auth header, else the default user) and a fresh UserDb. */
export interface RequestUser {
  user: UserInfo;
  creds: Credentials;
  db: UserDb;
  resolve(p: string): string;
}

export function requestUser(ctx: EnvdContext, hctx: HandlerContext): RequestUser {
  const db = UserDb.load();
  const user = userFor(ctx, parseBasicUser(hctx.requestHeader.get("authorization")), db);
  return {
    user,
    creds: credentialsFor(user),
    db,
    resolve: (p) => resolveUserPath(p, user),
  };
}
