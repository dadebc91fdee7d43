import { first, type Queryable } from "../db.js";

export type UserStatus = "active" | "disabled";

export interface UserRow {
  id: string;
  email: string;
  password_hash: string;
  name: string;
  is_admin: boolean;
  status: UserStatus;
  created_at: Date;
  updated_at: Date;
  /** User tokens issued before this are refused (set by a deactivation; migration 0008). */
  tokens_valid_after: Date | null;
}

export const getUserById = (db: Queryable, id: string) =>
  first<UserRow>(db, "SELECT * FROM users WHERE id = $1", [id]);

/** `email` must already be normalised (trimmed, lowercased) as it is stored that way. */
export const getUserByEmail = (db: Queryable, email: string) =>
  first<UserRow>(db, "SELECT * FROM users WHERE email = $1", [email]);

export async function insertUser(
  db: Queryable,
  u: Pick<UserRow, "id" | "email" | "password_hash" | "name"> & { is_admin?: boolean },
): Promise<UserRow> {
  const row = await first<UserRow>(
    db,
    `INSERT INTO users (id, email, password_hash, name, is_admin)
     VALUES ($1, $2, $3, $4, $5) RETURNING *`,
    [u.id, u.email, u.password_hash, u.name, u.is_admin ?? false],
  );
  if (!row) throw new Error(`insert of user ${u.id} returned no row`);
  return row;
}

/** Oldest first, so the list is stable while new users sign up. */
export const listUsers = (db: Queryable) =>
  db.query<UserRow>("SELECT * FROM users ORDER BY created_at, id");

/** Sets the fields given; returns the updated row, or undefined for an unknown id. */
export const updateUserFlags = (
  db: Queryable,
  id: string,
  patch: { status?: UserStatus; is_admin?: boolean },
) =>
  first<UserRow>(
    db,
    `UPDATE users SET status = COALESCE($2, status), is_admin = COALESCE($3, is_admin),
       updated_at = now()
     WHERE id = $1 RETURNING *`,
    [id, patch.status ?? null, patch.is_admin ?? null],
  );

export const updateUserName = (db: Queryable, id: string, name: string) =>
  first<UserRow>(db, "UPDATE users SET name = $2, updated_at = now() WHERE id = $1 RETURNING *", [
    id,
    name,
  ]);

export const updateUserPassword = async (db: Queryable, id: string, passwordHash: string) => {
  await db.query("UPDATE users SET password_hash = $2, updated_at = now() WHERE id = $1", [
    id,
    passwordHash,
  ]);
};
