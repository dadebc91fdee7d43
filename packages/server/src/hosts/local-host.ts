import { existsSync, rmSync } from "node:fs";
import path from "node:path";
import type { Queryable } from "../db/db.js";
import { writeFileAtomic } from "../secrets.js";
import { createHost } from "./registration.js";

export const LOCAL_HOST_NAME = "local";
export const LOCAL_TOKEN_FILE = "local-agent-token";

/**
 * All-in-one mode registers its own host agent through the normal registration path. While no
 * host named `local` has registered, a fresh one-time token is written to
 * `${dataDir}/local-agent-token` (0600) for `nestbox up` to hand to the agent; once registered,
 * the agent's stored credentials are used and the file is removed.
 */
export async function ensureLocalHostToken(
  db: Queryable,
  dataDir: string,
): Promise<{ tokenFile: string | undefined }> {
  const file = path.join(dataDir, LOCAL_TOKEN_FILE);
  const registered = await db.query("SELECT 1 FROM hosts WHERE name = $1 AND status <> 'pending'", [
    LOCAL_HOST_NAME,
  ]);
  if (registered.length) {
    if (existsSync(file)) rmSync(file);
    return { tokenFile: undefined };
  }
  // Unused tokens of earlier runs are replaced, so at most one pending local host exists.
  await db.query("DELETE FROM hosts WHERE name = $1 AND status = 'pending'", [LOCAL_HOST_NAME]);
  const { registrationToken } = await createHost(db, { name: LOCAL_HOST_NAME });
  writeFileAtomic(file, `${registrationToken}\n`);
  return { tokenFile: file };
}
