import { readFileSync } from "node:fs";
import path from "node:path";
import createClient, { type Client } from "openapi-fetch";
import type { components, paths } from "../client/api-types.js";
import { DEFAULT_NESTBOX_DIR, resolveClientOptions } from "../client/config.js";
import { apiErrorFrom, unreachable } from "../client/errors.js";

export type Host = components["schemas"]["Host"];

/** The all-in-one admin's email (what `nestbox server --all-in-one` seeds). */
const ALL_IN_ONE_ADMIN = "admin@localhost";

/**
 * Who `nestbox host …` acts as. Host management belongs to users (platform admins, a BYOC team's
 * owner and admins), not to API keys, which act for a team with no role: so the commands use a
 * user session when one can be had, in this order — `NESTBOX_TOKEN` (a session token from
 * `POST /v1/auth/login`), `NESTBOX_EMAIL` + `NESTBOX_PASSWORD`, or on the all-in-one box the
 * admin whose password `nestbox up` keeps in `$NESTBOX_DIR/admin-password` — and otherwise the
 * API key, which can only list its BYOC team's hosts.
 */
export async function hostApi(env: NodeJS.ProcessEnv): Promise<{
  api: Client<paths>;
  /** How it authenticates, for hints. */
  as: string;
  call<D>(request: Promise<{ data?: D; error?: unknown; response: Response }>): Promise<D>;
}> {
  const { apiUrl, apiKey, apiKeySource } = resolveClientOptions({}, env);
  const call = async <D>(
    request: Promise<{ data?: D; error?: unknown; response: Response }>,
  ): Promise<D> => {
    let outcome: { data?: D; error?: unknown; response: Response };
    try {
      outcome = await request;
    } catch (err) {
      throw unreachable(apiUrl, err);
    }
    if (!outcome.response.ok)
      throw apiErrorFrom(outcome.response.status, outcome.error, outcome.response.statusText);
    return outcome.data as D;
  };
  const bearer = (token: string) =>
    createClient<paths>({ baseUrl: apiUrl, headers: { authorization: `Bearer ${token}` } });

  if (env.NESTBOX_TOKEN)
    return { api: bearer(env.NESTBOX_TOKEN.trim()), as: "NESTBOX_TOKEN", call };
  let login: { email: string; password: string; as: string } | undefined;
  if (env.NESTBOX_EMAIL && env.NESTBOX_PASSWORD)
    login = { email: env.NESTBOX_EMAIL, password: env.NESTBOX_PASSWORD, as: env.NESTBOX_EMAIL };
  else {
    const file = path.join(env.NESTBOX_DIR || DEFAULT_NESTBOX_DIR, "admin-password");
    const password = readPassword(file);
    if (password)
      login = { email: ALL_IN_ONE_ADMIN, password, as: `${ALL_IN_ONE_ADMIN} (${file})` };
  }
  if (login) {
    const anon = createClient<paths>({ baseUrl: apiUrl });
    const res = await call(
      anon.POST("/v1/auth/login", { body: { email: login.email, password: login.password } }),
    );
    return { api: bearer(res.token), as: login.as, call };
  }
  const api = createClient<paths>({
    baseUrl: apiUrl,
    headers: apiKey ? { "x-api-key": apiKey } : {},
  });
  return { api, as: apiKeySource ? `the API key (${apiKeySource})` : "no credentials", call };
}

function readPassword(file: string): string | undefined {
  try {
    return readFileSync(file, "utf8").trim() || undefined;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    // Not the all-in-one box, or not ours to read: no session from it.
    if (code === "ENOENT" || code === "EACCES" || code === "ENOTDIR") return undefined;
    throw new Error(`cannot read ${file}: ${(err as Error).message}`);
  }
}
