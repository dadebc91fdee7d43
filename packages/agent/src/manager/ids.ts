import { randomBytes } from "node:crypto";

const ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789";
/** Sandbox ids are DNS labels in `{port}-{id}.{domain}`; the E2B SDKs expect this exact form. */
export const SANDBOX_ID_RE = /^[a-z0-9]{20}$/;

export function newSandboxId(): string {
  const bytes = randomBytes(20);
  let id = "";
  // 256 % 36 bias is negligible for identifiers that only need to be unique.
  for (const b of bytes) id += ALPHABET[b % ALPHABET.length];
  return id;
}

/** Template names become directory names: keep them to a safe, readable set. */
export const TEMPLATE_NAME_RE = /^[a-z0-9][a-z0-9._-]{0,62}$/;
