import { first, type Queryable } from "../db.js";

export interface ApiKeyRow {
  id: string;
  team_id: string;
  name: string;
  key_hash: string;
  key_prefix: string;
  created_by: string | null;
  created_at: Date;
  last_used_at: Date | null;
  revoked_at: Date | null;
}

export async function insertApiKey(
  db: Queryable,
  k: Pick<ApiKeyRow, "id" | "team_id" | "name" | "key_hash" | "key_prefix" | "created_by">,
): Promise<ApiKeyRow> {
  const row = await first<ApiKeyRow>(
    db,
    `INSERT INTO api_keys (id, team_id, name, key_hash, key_prefix, created_by)
     VALUES ($1, $2, $3, $4, $5, $6) RETURNING *`,
    [k.id, k.team_id, k.name, k.key_hash, k.key_prefix, k.created_by],
  );
  if (!row) throw new Error(`insert of api key ${k.id} returned no row`);
  return row;
}

/** A team's live keys, newest first. */
export const listApiKeys = (db: Queryable, teamId: string) =>
  db.query<ApiKeyRow>(
    `SELECT * FROM api_keys WHERE team_id = $1 AND revoked_at IS NULL
     ORDER BY created_at DESC, id DESC`,
    [teamId],
  );

/** Any row with that hash, revoked or not (seeding checks whether a given key exists). */
export const getApiKeyByHash = (db: Queryable, keyHash: string) =>
  first<ApiKeyRow>(db, "SELECT * FROM api_keys WHERE key_hash = $1", [keyHash]);

/**
 * The live key with that hash, if its team is live and whoever created it is not disabled (a
 * disabled account's keys stop working with it, and work again if it is re-enabled).
 */
export const findUsableApiKey = (db: Queryable, keyHash: string) =>
  first<ApiKeyRow>(
    db,
    `SELECT k.* FROM api_keys k
     JOIN teams t ON t.id = k.team_id AND t.deleted_at IS NULL
     LEFT JOIN users u ON u.id = k.created_by
     WHERE k.key_hash = $1 AND k.revoked_at IS NULL
       AND (u.id IS NULL OR u.status = 'active')`,
    [keyHash],
  );

/** Revokes a team's live key; false when there is none with that id in the team. */
export async function revokeApiKey(db: Queryable, teamId: string, id: string): Promise<boolean> {
  const rows = await db.query(
    `UPDATE api_keys SET revoked_at = now()
     WHERE team_id = $1 AND id = $2 AND revoked_at IS NULL RETURNING id`,
    [teamId, id],
  );
  return rows.length > 0;
}

/**
 * Records a use. The condition skips the write when the key was used within the last minute,
 * so a busy key does not turn every request into a row update.
 */
export async function touchApiKey(db: Queryable, id: string): Promise<void> {
  await db.query(
    `UPDATE api_keys SET last_used_at = now()
     WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')`,
    [id],
  );
}
