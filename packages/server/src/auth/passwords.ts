import { hash, verify } from "@node-rs/argon2";

export const PASSWORD_MIN_LENGTH = 8;
/** Bounded so a request cannot make the server hash megabytes of "password". */
export const PASSWORD_MAX_LENGTH = 256;

/** argon2id (the library's default algorithm) with its default OWASP-level cost, as a PHC string. */
export const hashPassword = (password: string): Promise<string> => hash(password);

export async function verifyPassword(passwordHash: string, password: string): Promise<boolean> {
  try {
    return await verify(passwordHash, password);
  } catch (err) {
    // A stored hash the library cannot parse is a data problem, not a wrong password: say so,
    // but still refuse the log-in.
    console.error("[auth] password hash could not be verified:", err);
    return false;
  }
}

let dummyHash: Promise<string> | undefined;

/**
 * Spends the same time as a real verification, so "unknown e-mail" and "wrong password" cannot
 * be told apart by how long log-in takes.
 */
export async function burnPasswordCheck(password: string): Promise<void> {
  dummyHash ??= hashPassword("nestbox-dummy-password");
  await verifyPassword(await dummyHash, password);
}
