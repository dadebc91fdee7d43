import { createHash } from "node:crypto";

export type FileOperation = "read" | "write";

/**
 * E2B's v1 `/files` URL signature (e2b-compat §3.5), computed by envd to check a signed URL
 * and by the control plane's proxy to check one before forwarding it:
 * `v1_` + unpadded base64(sha256("path:op:username:token[:expiration]")). The expiration is
 * the Unix time in seconds as the URL carries it.
 */
export function fileSignature(
  filePath: string,
  operation: FileOperation,
  username: string,
  token: string,
  expiration?: number | string,
): string {
  const parts = [filePath, operation, username, token];
  if (expiration !== undefined) parts.push(String(expiration));
  const digest = createHash("sha256").update(parts.join(":")).digest("base64");
  return `v1_${digest.replace(/=+$/, "")}`;
}
