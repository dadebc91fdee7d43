import { createHash, randomBytes } from "node:crypto";
import type { Queryable } from "../db/db.js";
import { findUsableApiKey, touchApiKey } from "../db/queries/api-keys.js";

/**
 * `nbx_` + 40 lowercase hex. The E2B face accepts the same secret spelled `e2b_…`, so only the
 * hex part is hashed and both spellings find one row.
 */
export const API_KEY_RE = /^(nbx|e2b)_([0-9a-f]{40})$/;
export const API_KEY_FORMAT = "nbx_ followed by 40 lowercase hex characters";

/** The 40-hex secret of a key in either spelling, or undefined when it is not a key. */
export function apiKeySecret(rawKey: string): string | undefined {
  return API_KEY_RE.exec(rawKey)?.[2];
}

export const hashApiKeySecret = (secretHex: string): string =>
  createHash("sha256").update(secretHex).digest("hex");

/** What is stored for a key: never the key itself. */
export interface ApiKeyMaterial {
  /** The full key in its `nbx_` spelling, shown to the user once. */
  key: string;
  keyHash: string;
  /** First 8 characters after the underscore: enough to tell keys apart in a list. */
  keyPrefix: string;
}

/** Material for a given key (either spelling), or undefined when it is malformed. */
export function apiKeyMaterial(rawKey: string): ApiKeyMaterial | undefined {
  const secret = apiKeySecret(rawKey);
  if (!secret) return undefined;
  return { key: `nbx_${secret}`, keyHash: hashApiKeySecret(secret), keyPrefix: secret.slice(0, 8) };
}

export function generateApiKey(): ApiKeyMaterial {
  const material = apiKeyMaterial(`nbx_${randomBytes(20).toString("hex")}`);
  if (!material) throw new Error("generated API key does not match its own format");
  return material;
}

const TOUCH_INTERVAL_MS = 60_000;

export interface AuthenticatedKey {
  keyId: string;
  keyName: string;
  teamId: string;
  createdBy: string | null;
}

/**
 * The key's identity when `rawKey` (`nbx_…` or `e2b_…`) is a live key of a live team, else
 * undefined. Records the use (at most once a minute per key).
 */
export async function authenticateApiKey(
  db: Queryable,
  rawKey: string,
): Promise<AuthenticatedKey | undefined> {
  const secret = apiKeySecret(rawKey);
  if (!secret) return undefined;
  const hash = hashApiKeySecret(secret);
  const cached = recentKeys.get(hash);
  if (cached && cached.until > Date.now()) return cached.key;
  const row = await findUsableApiKey(db, hash);
  if (!row) return undefined;
  // The row just read says whether a write is due; most requests of a busy key need none.
  if (!row.last_used_at || Date.now() - row.last_used_at.getTime() >= TOUCH_INTERVAL_MS) {
    await touchApiKey(db, row.id);
  }
  const key = { keyId: row.id, keyName: row.name, teamId: row.team_id, createdBy: row.created_by };
  if (recentKeys.size >= KEY_CACHE_MAX) recentKeys.clear();
  recentKeys.set(hash, { key, until: Date.now() + KEY_CACHE_MS });
  return key;
}

/**
 * Keys that authenticated in the last five seconds, so a client's requests skip the lookup (a
 * database round trip per request otherwise, the largest share of a create's own time). This process forgets them at once on a revoke or
 * a user's status change; another control-plane process may accept a revoked key for at most
 * KEY_CACHE_MS.
 */
const KEY_CACHE_MS = 5000;
const KEY_CACHE_MAX = 10_000;
const recentKeys = new Map<string, { key: AuthenticatedKey; until: number }>();

export function forgetRecentApiKeys(): void {
  recentKeys.clear();
}
