import { randomBytes } from "node:crypto";

const ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz";

/** Random lowercase base-36 string; rejection sampling keeps every character uniform. */
export function randomBase36(length: number): string {
  let out = "";
  while (out.length < length) {
    for (const byte of randomBytes(length * 2)) {
      if (byte < 252 && out.length < length) out += ALPHABET[byte % 36];
    }
  }
  return out;
}

export type IdPrefix = "usr" | "team" | "key" | "host" | "htok" | "tpl" | "evt" | "sess";

/** Readable prefixed ids, e.g. `team_k3j…` (sandbox ids have none: they are DNS labels). */
export const newId = (prefix: IdPrefix): string => `${prefix}_${randomBase36(20)}`;

/** Sandbox ids (DNS labels in `{port}-{id}.{domain}`) and template names: @nestbox/wire's. */
export { newSandboxId, SANDBOX_ID_RE, TEMPLATE_NAME_RE } from "@nestbox/wire";
