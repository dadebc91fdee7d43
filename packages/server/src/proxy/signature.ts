import { timingSafeEqual } from "node:crypto";
import { type FileOperation, fileSignature } from "@nestbox/wire";

// The signature itself is @nestbox/wire's, the one envd checks.
export { type FileOperation, fileSignature } from "@nestbox/wire";

/** What a signed `/files` URL commits to, read the way envd reads it. */
export interface SignedFilesRequest {
  signature: string;
  path: string;
  operation: FileOperation;
  username: string;
  expiration: string | undefined;
}

export function parseSignedFilesRequest(
  method: string,
  rawUrl: string,
): SignedFilesRequest | undefined {
  const q = rawUrl.indexOf("?");
  if (q < 0) return undefined;
  const params = new URLSearchParams(rawUrl.slice(q + 1));
  const signature = params.get("signature");
  if (!signature?.startsWith("v1_")) return undefined;
  const exp = params.get("signature_expiration");
  return {
    signature,
    path: params.get("path") ?? "",
    operation: method === "POST" ? "write" : "read",
    username: params.get("username") ?? "",
    // envd reads the expiration as an integer; an unparsable one fails there, not here.
    expiration: exp === null || exp === "" ? undefined : String(Number(exp)),
  };
}

/** Whether `token` produced the request's signature (constant time in the signature). */
export function signedWith(req: SignedFilesRequest, token: string): boolean {
  const expected = Buffer.from(
    fileSignature(req.path, req.operation, req.username, token, req.expiration),
  );
  const given = Buffer.from(req.signature);
  return expected.length === given.length && timingSafeEqual(expected, given);
}
