import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import path from "node:path";

/**
 * The JWT signing secret: NESTBOX_JWT_SECRET when set (≥ 32 characters, so several control
 * planes can share it), else a random one kept in `${dataDir}/jwt-secret` (0600) so tokens
 * survive a restart.
 */
export function loadJwtSecret(dataDir: string, fromEnv: string | undefined): Uint8Array {
  if (fromEnv !== undefined && fromEnv !== "") {
    if (fromEnv.length < 32) throw new Error("NESTBOX_JWT_SECRET must be at least 32 characters");
    return new TextEncoder().encode(fromEnv);
  }
  const file = path.join(dataDir, "jwt-secret");
  if (existsSync(file)) {
    const hex = readFileSync(file, "utf8").trim();
    if (!/^[0-9a-f]{64}$/.test(hex))
      throw new Error(`${file} is not 64 hex characters; delete it to make a new secret`);
    return Buffer.from(hex, "hex");
  }
  mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  const secret = randomBytes(32);
  writeFileAtomic(file, `${secret.toString("hex")}\n`);
  return secret;
}

/** Writes a 0600 file through a temporary name, so a crash never leaves half a secret. */
export function writeFileAtomic(file: string, content: string): void {
  const tmp = `${file}.tmp-${process.pid}`;
  writeFileSync(tmp, content, { mode: 0o600 });
  renameSync(tmp, file);
}
