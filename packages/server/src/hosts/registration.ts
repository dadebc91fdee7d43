import {
  hashOpaqueToken,
  InvalidHostTokenError,
  newOpaqueToken,
  signHostToken,
  verifyHostToken,
} from "../auth/host-tokens.js";
import type { Queryable } from "../db/db.js";
import {
  consumeRegistrationToken,
  type HostFacts,
  type HostRow,
  insertPendingHost,
  markStaleHosts,
  recordHeartbeat,
  rotateRefreshToken,
} from "../db/queries/hosts.js";
import { notFound, unauthorized } from "../errors.js";
import { newId } from "../ids.js";

export type { HostFacts, HostRow } from "../db/queries/hosts.js";

/** A registration token is good for one use within this time. */
export const REGISTRATION_TOKEN_TTL_SEC = 60 * 60;
/** Refresh tokens rotate on every use; an agent silent for this long must register again. */
export const REFRESH_TOKEN_TTL_SEC = 30 * 24 * 60 * 60;

/** What an agent keeps after registering or refreshing. */
export interface HostCredentials {
  host: HostRow;
  hostToken: string;
  hostTokenExpiresAt: Date;
  refreshToken: string;
  refreshTokenExpiresAt: Date;
}

/**
 * A `pending` host and its one-time registration token (64 hex; only its SHA-256 is stored).
 * Routes and the all-in-one `nestbox up` both create hosts through here.
 */
export async function createHost(
  db: Queryable,
  opts: { name: string; createdBy?: string | null },
): Promise<{ host: HostRow; registrationToken: string }> {
  const registrationToken = newOpaqueToken();
  const host = await insertPendingHost(db, {
    id: newId("host"),
    name: opts.name,
    createdBy: opts.createdBy ?? null,
    tokenId: newId("htok"),
    tokenHash: hashOpaqueToken(registrationToken),
    tokenTtlSec: REGISTRATION_TOKEN_TTL_SEC,
  });
  return { host, registrationToken };
}

/**
 * Exchanges a registration token for host credentials and records the facts the agent
 * reported. The host stays `pending` until its first heartbeat: the agent sends that once it
 * serves with the certificate in this answer, so nothing calls it before it can be called.
 * the agent reported. The token works once (atomically: of two concurrent uses exactly one
 * wins); unknown, used or expired tokens are 401.
 */
export async function registerHost(
  db: Queryable,
  secret: Uint8Array,
  req: { token: string } & HostFacts,
): Promise<HostCredentials> {
  const { token, ...facts } = req;
  const refreshToken = newOpaqueToken();
  const host = await consumeRegistrationToken(db, {
    tokenHash: hashOpaqueToken(token),
    facts,
    refreshTokenId: newId("htok"),
    refreshTokenHash: hashOpaqueToken(refreshToken),
    refreshTtlSec: REFRESH_TOKEN_TTL_SEC,
  });
  if (!host) throw unauthorized("registration token is invalid, expired or already used");
  return credentialsFor(secret, host, refreshToken);
}

/**
 * A new host token and a new refresh token for a valid refresh token, which is revoked in the
 * same statement that stores its successor (rotation: each refresh token works once).
 */
export async function refreshHostToken(
  db: Queryable,
  secret: Uint8Array,
  refreshToken: string,
): Promise<HostCredentials> {
  const next = newOpaqueToken();
  const host = await rotateRefreshToken(db, {
    tokenHash: hashOpaqueToken(refreshToken),
    newTokenId: newId("htok"),
    newTokenHash: hashOpaqueToken(next),
    ttlSec: REFRESH_TOKEN_TTL_SEC,
  });
  if (!host) throw unauthorized("refresh token is invalid, expired or already used");
  return credentialsFor(secret, host, next);
}

/**
 * Records that the host is alive (`pending` or `unreachable` → `online`); optional facts update what was
 * registered. 404 when the host was deleted: the agent then stops heartbeating.
 */
export async function heartbeat(
  db: Queryable,
  hostId: string,
  facts: Partial<HostFacts> = {},
): Promise<{ host: HostRow; wasUnreachable: boolean }> {
  const res = await recordHeartbeat(db, hostId, facts);
  if (!res) throw notFound("host");
  return res;
}

/**
 * Online hosts without a heartbeat for `olderThanSec` become `unreachable`. Returns the ids it
 * changed, for the reconciler to mark their sandboxes `missing`.
 */
export function markStaleHostsUnreachable(db: Queryable, olderThanSec: number): Promise<string[]> {
  if (!Number.isFinite(olderThanSec) || olderThanSec < 0)
    throw new RangeError(`olderThanSec must be a non-negative number, got ${olderThanSec}`);
  return markStaleHosts(db, olderThanSec);
}

/** The host id of a valid host token (`X-Host-Token`); 401 otherwise. */
export async function authenticateHost(secret: Uint8Array, token: string): Promise<string> {
  try {
    return await verifyHostToken(secret, token);
  } catch (err) {
    if (err instanceof InvalidHostTokenError) throw unauthorized(err.message);
    throw err;
  }
}

async function credentialsFor(
  secret: Uint8Array,
  host: HostRow,
  refreshToken: string,
): Promise<HostCredentials> {
  const { token, expiresAt } = await signHostToken(secret, host.id);
  return {
    host,
    hostToken: token,
    hostTokenExpiresAt: expiresAt,
    refreshToken,
    // The database set the stored expiry from its own clock; this is the same figure from ours.
    refreshTokenExpiresAt: new Date(Date.now() + REFRESH_TOKEN_TTL_SEC * 1000),
  };
}
