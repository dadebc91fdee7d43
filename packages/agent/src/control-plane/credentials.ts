import { readFile, rm } from "node:fs/promises";
import path from "node:path";
import { writePrivateFile } from "./private-file.js";

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

/** Written through `writePrivateFile`: atomic, 0600. */
export async function saveCredentials(file: string, c: StoredCredentials): Promise<void> {
  await writePrivateFile(file, `${JSON.stringify(c, null, 2)}\n`);
}

export async function removeCredentials(file: string): Promise<void> {
  await rm(file, { force: true });
}
