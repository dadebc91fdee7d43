import type { IncomingHttpHeaders } from "node:http";
import { Code, ConnectError } from "@connectrpc/connect";
import { type FileOperation, fileSignature } from "@nestbox/wire";
import { constantTimeEqual, type EnvdState } from "./state.js";

/**
 * Requests that never need `X-Access-Token`: health for liveness probes, `/files` because it
 * also accepts URL signatures (checked by its handler), and `/init` which checks the token
 * itself so the first call can install one.
 */
export function isTokenExempt(method: string, pathname: string): boolean {
  if (pathname === "/health") return method === "GET" || method === "HEAD";
  if (pathname === "/files") return method === "GET" || method === "POST" || method === "HEAD";
  if (pathname === "/init") return method === "POST";
  return false;
}

export function accessTokenHeader(headers: IncomingHttpHeaders): string | undefined {
  const v = headers["x-access-token"];
  return Array.isArray(v) ? v[0] : v;
}

/**
 * The user named by `Authorization: Basic base64("<user>:")`, as the E2B SDKs send it.
 * Returns undefined when the header is absent; throws on a malformed one.
 */
export function parseBasicUser(authorization: string | null | undefined): string | undefined {
  if (!authorization) return undefined;
  const match = /^Basic\s+(\S+)$/i.exec(authorization.trim());
  if (!match?.[1]) {
    throw new ConnectError(
      "authorization header must be Basic <base64(user:)>",
      Code.InvalidArgument,
    );
  }
  const decoded = Buffer.from(match[1], "base64").toString("utf8");
  const user = decoded.split(":")[0] ?? "";
  if (!user) return undefined;
  return user;
}

// E2B's v1 URL signature, shared with the control plane's proxy.
export { type FileOperation, fileSignature } from "@nestbox/wire";

export type SignatureCheck = { ok: true } | { ok: false; message: string };

/**
 * Checks `/files` authorisation: the access-token header, or else a URL signature.
 * Messages match infra envd's, which the SDK tests assert.
 */
export function checkFileAccess(
  state: EnvdState,
  opts: {
    headerToken: string | undefined;
    path: string;
    operation: FileOperation;
    username: string | undefined;
    signature: string | null;
    signatureExpiration: string | null;
    nowMs?: number;
  },
): SignatureCheck {
  const token = state.accessToken;
  if (token === undefined) return { ok: true };
  if (opts.headerToken !== undefined) {
    return constantTimeEqual(opts.headerToken, token)
      ? { ok: true }
      : { ok: false, message: "invalid access token" };
  }
  if (!opts.signature) {
    return { ok: false, message: "missing signature or access token" };
  }
  let expiration: number | undefined;
  if (opts.signatureExpiration !== null && opts.signatureExpiration !== "") {
    expiration = Number(opts.signatureExpiration);
    if (!Number.isInteger(expiration))
      return { ok: false, message: "invalid signature expiration" };
  }
  const expected = fileSignature(opts.path, opts.operation, opts.username ?? "", token, expiration);
  if (!constantTimeEqual(expected, opts.signature)) {
    return { ok: false, message: "invalid signature" };
  }
  if (expiration !== undefined && expiration * 1000 < (opts.nowMs ?? Date.now())) {
    return { ok: false, message: "signature is already expired" };
  }
  return { ok: true };
}
