import {
  hashOpaqueToken,
  InvalidHostTokenError,
  newOpaqueToken,
  signHostToken,
  verifyHostToken,
} from "../auth/host-tokens.js";
import type { Queryable } from "../db/db.js";
import { recordAudit } from "../db/queries/audit.js";
import {
  consumeRegistrationToken,
  type HostFacts,
  type HostRow,
  type HostType,
  type HostUsage,
  insertPendingHost,
  markStaleHosts,
  recordHeartbeat,
  reissueRegistrationToken,
  rotateRefreshToken,
} from "../db/queries/hosts.js";
import { notFound, unauthorized } from "../errors.js";
import { newId } from "../ids.js";

export type { HostFacts, HostRow, HostUsage } from "../db/queries/hosts.js";

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
  opts: { name: string; createdBy?: string | null; type?: HostType; teamId?: string | null },
): Promise<{ host: HostRow; registrationToken: string }> {
  const registrationToken = newOpaqueToken();
  const host = await insertPendingHost(db, {
    id: newId("host"),
    name: opts.name,
    createdBy: opts.createdBy ?? null,
    type: opts.type,
    teamId: opts.teamId,
    tokenId: newId("htok"),
    tokenHash: hashOpaqueToken(registrationToken),
    tokenTtlSec: REGISTRATION_TOKEN_TTL_SEC,
  });
  return { host, registrationToken };
}

/**
 * A fresh registration token for a host that has not registered yet (a lost or expired one);
 * earlier unused tokens of the host stop working. Undefined when the host is not `pending`.
 */
export async function newRegistrationToken(
  db: Queryable,
  hostId: string,
): Promise<{ host: HostRow; registrationToken: string } | undefined> {
  const registrationToken = newOpaqueToken();
  const host = await reissueRegistrationToken(db, {
    hostId,
    tokenId: newId("htok"),
    tokenHash: hashOpaqueToken(registrationToken),
    tokenTtlSec: REGISTRATION_TOKEN_TTL_SEC,
  });
  return host ? { host, registrationToken } : undefined;
}

/**
 * Exchanges a registration token for host credentials and records the facts the agent
 * reported. The host stays `pending` until its first heartbeat: the agent sends that once it
 * serves with the certificate in this answer, so nothing calls it before it can be called.
 * The token works once (atomically: of two concurrent uses exactly one
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
 * Records that the host is alive (`pending` or `unreachable` → `online`); optional facts update
 * what was registered, and usage what the agent has committed now. A host back from
 * `unreachable` gets a `host.marked_up` audit entry (the reconciler's next pass then sets its
 * sandboxes to what the agent reports). 404 when the host was deleted: the agent then stops
 * heartbeating.
 */
export async function heartbeat(
  db: Queryable,
  hostId: string,
  facts: Partial<HostFacts> = {},
  usage?: HostUsage,
): Promise<{ host: HostRow; wasUnreachable: boolean }> {
  const res = await recordHeartbeat(db, hostId, facts, usage);
  if (!res) throw notFound("host");
  if (res.wasUnreachable)
    await recordAudit(db, {
      teamId: res.host.team_id,
      actorType: "system",
      actorId: null,
      action: "host.marked_up",
      resourceType: "host",
      resourceId: hostId,
    });
  return res;
}

/**
 * Online hosts without a heartbeat for `olderThanSec` become `unreachable`, each with a
 * `host.marked_down` audit entry. Returns the ids it changed, for the reconciler to mark their
 * sandboxes `missing`.
 */
export async function markStaleHostsUnreachable(
  db: Queryable,
  olderThanSec: number,
): Promise<string[]> {
  if (!Number.isFinite(olderThanSec) || olderThanSec < 0)
    throw new RangeError(`olderThanSec must be a non-negative number, got ${olderThanSec}`);
  const down = await markStaleHosts(db, olderThanSec);
  for (const h of down)
    await recordAudit(db, {
      teamId: h.team_id,
      actorType: "system",
      actorId: null,
      action: "host.marked_down",
      resourceType: "host",
      resourceId: h.id,
      metadata: { silent_for_sec: olderThanSec },
    });
  return down.map((h) => h.id);
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
