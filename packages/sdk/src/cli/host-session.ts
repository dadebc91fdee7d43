import createClient, { type Client } from "openapi-fetch";
import type { components, paths } from "../client/api-types.js";
import { resolveClientOptions } from "../client/config.js";
import { apiErrorFrom, unreachable } from "../client/errors.js";
import { userCredentials } from "../client/user-login.js";

export type Host = components["schemas"]["Host"];

/**
 * Who `nestbox host …` acts as. Host management belongs to users (platform admins, a BYOC team's
 * owner and admins), not to API keys, which act for a team with no role: so the commands use a
 * user session when one can be had (`userCredentials`: NESTBOX_TOKEN, NESTBOX_EMAIL and
 * NESTBOX_PASSWORD, or the all-in-one admin) and otherwise the API key, which can only list its
 * BYOC team's hosts.
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

  const creds = userCredentials(env);
  if (creds && "token" in creds) return { api: bearer(creds.token), as: creds.as, call };
  const login = creds;
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
