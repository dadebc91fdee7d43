import { randomBytes } from "node:crypto";
import { chmod, mkdir, readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import { API_KEY_FORMAT, apiKeyMaterial, generateApiKey } from "../auth/api-keys.js";
import { hashPassword } from "../auth/passwords.js";
import type { Db } from "../db/db.js";
import { getApiKeyByHash, insertApiKey } from "../db/queries/api-keys.js";
import { recordAudit } from "../db/queries/audit.js";
import { addMembership, insertPlatformTeamIfMissing } from "../db/queries/teams.js";
import { getUserByEmail, insertUser } from "../db/queries/users.js";
import { newId } from "../ids.js";

export const DEFAULT_ADMIN_EMAIL = "admin@localhost";
export const ADMIN_PASSWORD_FILE = "admin-password";
export const ADMIN_API_KEY_FILE = "admin-api-key";
const ADMIN_KEY_NAME = "all-in-one admin";

/** The one platform team (built-in templates, the all-in-one admin's key); created if missing. */
export async function ensurePlatformTeam(db: Db): Promise<{ id: string }> {
  const team = await insertPlatformTeamIfMissing(db, {
    id: newId("team"),
    name: "Platform",
    slug: "platform",
  });
  return { id: team.id };
}

export interface SeedOptions {
  /** `NESTBOX_DIR`: the admin's password and API key files are written here (mode 0600). */
  dataDir: string;
  adminEmail?: string;
  /** `NESTBOX_ADMIN_API_KEY`: use this key instead of generating one. */
  adminApiKey?: string;
}

export interface SeedResult {
  adminUserId: string;
  platformTeamId: string;
  /** The key when this run created it (print it); undefined when an existing one was reused. */
  apiKey: string | undefined;
  apiKeyFile: string;
}

/**
 * The all-in-one mode's accounts: an admin user (random password in `admin-password`), owner of
 * the platform team, with an API key in `admin-api-key`. Idempotent: a second run reuses the
 * user, the membership and the key, and creates a key only when the one it knows is gone.
 */
export async function seedAllInOne(db: Db, opts: SeedOptions): Promise<SeedResult> {
  const given = opts.adminApiKey?.trim();
  const givenMaterial = given === undefined ? undefined : apiKeyMaterial(given);
  if (given !== undefined && !givenMaterial) {
    throw new Error(`NESTBOX_ADMIN_API_KEY must be ${API_KEY_FORMAT}`);
  }
  const email = (opts.adminEmail ?? DEFAULT_ADMIN_EMAIL).trim().toLowerCase();
  if (!/^[^\s@]+@[^\s@]+$/.test(email) || email.length > 254) {
    throw new Error(`the admin e-mail ${JSON.stringify(email)} is not an e-mail address`);
  }
  await mkdir(opts.dataDir, { recursive: true, mode: 0o700 });
  const passwordFile = path.join(opts.dataDir, ADMIN_PASSWORD_FILE);
  const apiKeyFile = path.join(opts.dataDir, ADMIN_API_KEY_FILE);

  const platform = await ensurePlatformTeam(db);

  // Hashing costs tens of milliseconds: only when the admin does not exist yet.
  const password = randomBytes(18).toString("base64url");
  const passwordHash = (await getUserByEmail(db, email)) ? "" : await hashPassword(password);
  const { userId, createdUser } = await db.transaction(async (tx) => {
    const existing = await getUserByEmail(tx, email);
    if (!existing && !passwordHash) throw new Error(`admin user ${email} vanished while seeding`);
    const user =
      existing ??
      (await insertUser(tx, {
        id: newId("usr"),
        email,
        password_hash: passwordHash,
        name: "Admin",
        is_admin: true,
      }));
    await addMembership(tx, {
      team_id: platform.id,
      user_id: user.id,
      role: "owner",
      is_default: true,
    });
    return { userId: user.id, createdUser: !existing };
  });
  if (createdUser) await writeSecretFile(passwordFile, password);

  const apiKey = givenMaterial
    ? await ensureGivenKey(db, givenMaterial, platform.id, userId, apiKeyFile)
    : await ensureGeneratedKey(db, platform.id, userId, apiKeyFile);
  return { adminUserId: userId, platformTeamId: platform.id, apiKey, apiKeyFile };
}

type Material = NonNullable<ReturnType<typeof apiKeyMaterial>>;

async function insertAdminKey(db: Db, m: Material, teamId: string, userId: string) {
  const row = await insertApiKey(db, {
    id: newId("key"),
    team_id: teamId,
    name: ADMIN_KEY_NAME,
    key_hash: m.keyHash,
    key_prefix: m.keyPrefix,
    created_by: userId,
  });
  await recordAudit(db, {
    teamId,
    actorType: "system",
    actorId: null,
    action: "api_key.create",
    resourceType: "api_key",
    resourceId: row.id,
    metadata: { name: ADMIN_KEY_NAME, key_prefix: m.keyPrefix },
  });
}

/** NESTBOX_ADMIN_API_KEY: the operator chose the key, so it is created or confirmed, never replaced. */
async function ensureGivenKey(
  db: Db,
  m: Material,
  teamId: string,
  userId: string,
  file: string,
): Promise<string | undefined> {
  const row = await getApiKeyByHash(db, m.keyHash);
  if (row && row.team_id !== teamId) {
    throw new Error("NESTBOX_ADMIN_API_KEY is already a key of another team; choose another one");
  }
  if (row?.revoked_at) {
    throw new Error("NESTBOX_ADMIN_API_KEY is a revoked key; choose another one");
  }
  if (!row) await insertAdminKey(db, m, teamId, userId);
  if ((await readSecretFile(file)) !== m.key) await writeSecretFile(file, m.key);
  return row ? undefined : m.key;
}

/** The key in the file while it still works; otherwise a new one (and the file rewritten). */
async function ensureGeneratedKey(
  db: Db,
  teamId: string,
  userId: string,
  file: string,
): Promise<string | undefined> {
  const inFile = await readSecretFile(file);
  const current = inFile === undefined ? undefined : apiKeyMaterial(inFile);
  if (current) {
    const row = await getApiKeyByHash(db, current.keyHash);
    if (row && row.team_id === teamId && !row.revoked_at) return undefined;
  }
  const fresh = generateApiKey();
  await insertAdminKey(db, fresh, teamId, userId);
  await writeSecretFile(file, fresh.key);
  return fresh.key;
}

async function readSecretFile(file: string): Promise<string | undefined> {
  try {
    return (await readFile(file, "utf8")).trim();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw new Error(`reading ${file}: ${(err as Error).message}`);
  }
}

async function writeSecretFile(file: string, secret: string): Promise<void> {
  await writeFile(file, `${secret}\n`, { mode: 0o600 });
  // The mode above applies only to a file that did not exist yet.
  await chmod(file, 0o600);
}
