import { randomBytes } from "node:crypto";
import { mkdir, open, readFile, rename, rm } from "node:fs/promises";
import path from "node:path";

/** What a registered agent keeps between starts (`credentials.json`, mode 0600). */
export interface StoredCredentials {
  controlPlane: string;
  hostId: string;
  hostToken: string;
  /** RFC 3339; the host token is refreshed before this. */
  hostTokenExpiresAt: string;
  refreshToken: string;
  /**
   * PEM server certificate, its expiry and the control plane's CA. Files written before
   * agents served TLS lack them: the agent then refreshes before it serves.
   */
  certificate?: string;
  certificateExpiresAt?: string;
  caCertificate?: string;
}

export class CredentialsFileError extends Error {
  override name = "CredentialsFileError";
}

export const credentialsPath = (nestboxDir: string, instance: string): string =>
  path.join(nestboxDir, "agent", instance, "credentials.json");

/** The stored credentials, or undefined when there are none. A corrupt file is an error. */
export async function loadCredentials(file: string): Promise<StoredCredentials | undefined> {
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw err;
  }
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (err) {
    throw new CredentialsFileError(`${file} is not valid JSON (${(err as Error).message})`);
  }
  const o = v as Record<string, unknown>;
  for (const k of [
    "controlPlane",
    "hostId",
    "hostToken",
    "hostTokenExpiresAt",
    "refreshToken",
  ] as const) {
    if (typeof o?.[k] !== "string" || o[k] === "")
      throw new CredentialsFileError(`${file} has no ${k}; remove it and register again`);
  }
  for (const k of ["certificate", "certificateExpiresAt", "caCertificate"] as const) {
    if (o[k] !== undefined && typeof o[k] !== "string")
      throw new CredentialsFileError(`${file}: ${k} is not a string; remove it and register again`);
  }
  return o as unknown as StoredCredentials;
}

/**
 * Replaces the file atomically (a temporary file in the same directory, fsynced, renamed over
 * it): a crash mid-write must not lose the only copy of a just-rotated refresh token.
 */
export async function saveCredentials(file: string, c: StoredCredentials): Promise<void> {
  const dir = path.dirname(file);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const tmp = path.join(dir, `.credentials-${randomBytes(6).toString("hex")}.tmp`);
  const fh = await open(tmp, "wx", 0o600);
  try {
    await fh.writeFile(`${JSON.stringify(c, null, 2)}\n`);
    await fh.sync();
  } finally {
    await fh.close();
  }
  try {
    await rename(tmp, file);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
}

export async function removeCredentials(file: string): Promise<void> {
  await rm(file, { force: true });
}
