import { readFileSync } from "node:fs";
import path from "node:path";
import { DEFAULT_NESTBOX_DIR } from "./config.js";

/** The all-in-one admin's email (what `nestbox server --all-in-one` seeds). */
export const ALL_IN_ONE_ADMIN = "admin@localhost";

/** How a user is signed in: a token already had, or an email and password to log in with. */
export type UserCredentials =
  | { token: string; as: string }
  | { email: string; password: string; as: string };

/**
 * The user that commands needing a person (host management, the admin area: API keys act for a
 * team with no role) act as, from the environment, in this order: `NESTBOX_TOKEN` (an access
 * token from `POST /v1/auth/login`); `NESTBOX_EMAIL` (default the all-in-one admin) with
 * `NESTBOX_PASSWORD`, which for the all-in-one admin defaults to the `admin-password` file that
 * `nestbox up` keeps in `$NESTBOX_DIR`. Undefined when none of these is there.
 */
export function userCredentials(
  env: NodeJS.ProcessEnv,
  given: { token?: string; email?: string; password?: string } = {},
): UserCredentials | undefined {
  const token = given.token ?? (env.NESTBOX_TOKEN?.trim() || undefined);
  if (token) return { token, as: given.token ? "the given token" : "NESTBOX_TOKEN" };
  const email = given.email ?? (env.NESTBOX_EMAIL?.trim() || ALL_IN_ONE_ADMIN);
  const password = given.password ?? (env.NESTBOX_PASSWORD || undefined);
  if (password) return { email, password, as: email };
  if (email !== ALL_IN_ONE_ADMIN) return undefined;
  const file = path.join(env.NESTBOX_DIR || DEFAULT_NESTBOX_DIR, "admin-password");
  const fromFile = readPassword(file);
  return fromFile ? { email, password: fromFile, as: `${email} (${file})` } : undefined;
}

/** Where the variables are explained, for help texts and errors. */
export const USER_CREDENTIALS_HELP =
  "NESTBOX_TOKEN (an access token), or NESTBOX_EMAIL and NESTBOX_PASSWORD; on the 'nestbox up' host the admin (admin@localhost, password in $NESTBOX_DIR/admin-password) without either";

function readPassword(file: string): string | undefined {
  try {
    return readFileSync(file, "utf8").trim() || undefined;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    // Not the all-in-one box, or not ours to read: no login from it.
    if (code === "ENOENT" || code === "EACCES" || code === "ENOTDIR") return undefined;
    throw new Error(`cannot read ${file}: ${(err as Error).message}`);
  }
}
