import { randomBytes } from "node:crypto";

/**
 * Sandbox ids are DNS labels in `{port}-{id}.{domain}`: 20 characters of [a-z0-9]. The E2B
 * SDKs expect this exact form, and the control plane, the agent and the CLI all check it.
 */
export const SANDBOX_ID_RE = /^[a-z0-9]{20}$/;

/**
 * Template names become directory names on the hosts and path segments in the API: a safe,
 * readable set, at most 63 characters.
 */
export const TEMPLATE_NAME_RE = /^[a-z0-9][a-z0-9._-]{0,62}$/;

const ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz";

/** A new sandbox id; rejection sampling keeps every character uniform. */
export function newSandboxId(): string {
  let out = "";
  while (out.length < 20) {
    for (const byte of randomBytes(40)) {
      // 252 = 7 × 36: bytes above it would favour the first characters.
      if (byte < 252 && out.length < 20) out += ALPHABET[byte % 36];
    }
  }
  return out;
}
