import type { IncomingMessage } from "node:http";
import { ConnectError } from "@connectrpc/connect";
import { accessTokenHeader, checkFileAccess, type FileOperation } from "../auth.js";
import { type EnvdContext, userFor } from "../context.js";
import { HttpError } from "../errors.js";
import { type Credentials, credentialsFor } from "../filesystem/access.js";
import { UserDb, type UserInfo } from "../users.js";

export interface FileRequest {
  /** The raw `path` query value (what signatures cover), or null when absent. */
  rawPath: string | null;
  user: UserInfo;
  creds: Credentials;
  db: UserDb;
}

/**
 * Authorises a `/files` request (access token header or v1 URL signature) and picks its user:
 * the `username` query parameter, not Authorization, else the default user.
 */
export function authorizeFileRequest(
  ctx: EnvdContext,
  req: IncomingMessage,
  url: URL,
  operation: FileOperation,
): FileRequest {
  const q = url.searchParams;
  const rawPath = q.get("path");
  const username = q.get("username") || undefined;
  const check = checkFileAccess(ctx.state, {
    headerToken: accessTokenHeader(req.headers),
    path: rawPath ?? "",
    operation,
    username,
    signature: q.get("signature"),
    signatureExpiration: q.get("signature_expiration"),
  });
  if (!check.ok) throw new HttpError(401, check.message);
  const db = UserDb.load();
  let user: UserInfo;
  try {
    user = userFor(ctx, username, db);
  } catch (err) {
    if (err instanceof ConnectError) throw new HttpError(400, err.rawMessage);
    throw err;
  }
  return { rawPath, user, creds: credentialsFor(user), db };
}
