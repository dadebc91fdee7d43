import { createHash, randomBytes } from "node:crypto";
import { errors as joseErrors, jwtVerify, SignJWT } from "jose";

/** Host JWTs live a day; agents refresh them well before with their refresh token. */
export const HOST_TOKEN_TTL_SEC = 24 * 60 * 60;

/** The `typ` claim that tells a host token from a user session token (`typ: "user"`). */
const HOST_TYP = "host";

/** Raised for any host token that does not verify; the HTTP layer turns it into a 401. */
export class InvalidHostTokenError extends Error {
  override name = "InvalidHostTokenError";
}

/** A signed host JWT (HS256, `typ: "host"`, `sub` = host id) and when it expires. */
export async function signHostToken(
  secret: Uint8Array,
  hostId: string,
  now: Date = new Date(),
): Promise<{ token: string; expiresAt: Date }> {
  const iat = Math.floor(now.getTime() / 1000);
  const exp = iat + HOST_TOKEN_TTL_SEC;
  const token = await new SignJWT({ typ: HOST_TYP })
    .setProtectedHeader({ alg: "HS256" })
    .setSubject(hostId)
    .setIssuedAt(iat)
    .setExpirationTime(exp)
    .sign(secret);
  return { token, expiresAt: new Date(exp * 1000) };
}

/**
 * The host id of a valid host token. Anything else — bad signature, expired, another algorithm,
 * or a user token (`typ` other than "host") — throws InvalidHostTokenError, so a user's session
 * can never act as a host.
 */
export async function verifyHostToken(secret: Uint8Array, token: string): Promise<string> {
  let payload: Record<string, unknown>;
  try {
    ({ payload } = await jwtVerify(token, secret, { algorithms: ["HS256"] }));
  } catch (err) {
    if (err instanceof joseErrors.JOSEError)
      throw new InvalidHostTokenError(`invalid host token: ${err.code}`);
    throw err;
  }
  if (payload.typ !== HOST_TYP) throw new InvalidHostTokenError("not a host token");
  if (typeof payload.sub !== "string" || payload.sub === "")
    throw new InvalidHostTokenError("host token has no subject");
  return payload.sub;
}

/** A one-time secret for registration or refresh: 64 hex characters, shown once. */
export const newOpaqueToken = (): string => randomBytes(32).toString("hex");

/** Only this digest is stored, so a database leak does not leak usable tokens. */
export const hashOpaqueToken = (token: string): string =>
  createHash("sha256").update(token, "utf8").digest("hex");
