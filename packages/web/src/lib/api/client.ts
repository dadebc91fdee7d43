/**
 * The one typed API client. Request and response types come from the SDK's types generated
 * from /openapi.json (`$api` = packages/sdk/src/client/api-types.ts); nothing here restates
 * them. Every request carries the in-memory access token; a 401 triggers one refresh through
 * the HttpOnly cookie and one retry, and when that fails the app goes to /login?next=….
 */
import createClient from "openapi-fetch";
import type { components, paths } from "$api";

export type Schemas = components["schemas"];
export type Sandbox = Schemas["Sandbox"];
export type ApiKey = Schemas["ApiKey"];
export type Team = Schemas["Team"];
export type User = Schemas["User"];
/** The JSON body of a path's 200 GET answer (for list rows whose schema has no name of its own). */
export type GetBody<P extends keyof paths> = paths[P] extends {
  get: { responses: { 200: { content: { "application/json": infer B } } } };
}
  ? B
  : never;
/** Login/signup/refresh body: the access token and when it expires. */
export type AuthBody = Schemas["AuthResponse"];

/** A failed API call: the server's error code and message, or a network failure. */
export class ApiError extends Error {
  override name = "ApiError";
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly field?: string,
  ) {
    super(message);
  }
}

/** The ApiError for a non-2xx response's parsed body (or its status when it has none). */
export function errorFrom(status: number, body: unknown, statusText = ""): ApiError {
  const e = (body as { error?: { code?: unknown; message?: unknown; field?: unknown } } | null)
    ?.error;
  if (e && typeof e.code === "string" && typeof e.message === "string")
    return new ApiError(
      status,
      e.code,
      e.message,
      typeof e.field === "string" ? e.field : undefined,
    );
  return new ApiError(status, `http_${status}`, `request failed: ${status} ${statusText}`.trim());
}

/** The state-changing cookie routes need a header a cross-site page cannot send. */
export const CSRF_HEADER = { "X-Nestbox-CSRF": "1" } as const;

interface AuthHooks {
  token(): string | null;
  /** One refresh through the cookie; true when a new access token is in place. */
  refresh(): Promise<boolean>;
  /** Called when the session cannot be renewed. */
  signedOut(): void;
}

let hooks: AuthHooks = {
  token: () => null,
  refresh: async () => false,
  signedOut: () => {},
};

/** The session module plugs itself in here (kept apart so this module has no Svelte state). */
export function setAuthHooks(h: AuthHooks): void {
  hooks = h;
}

const withToken = (req: Request): Request => {
  const token = hooks.token();
  if (token) req.headers.set("Authorization", `Bearer ${token}`);
  return req;
};

/** fetch with the access token, one refresh-and-retry on 401, and sign-out after that. */
export async function authedFetch(input: Request): Promise<Response> {
  const retry = input.clone();
  let res: Response;
  try {
    res = await fetch(withToken(input));
  } catch (err) {
    throw new ApiError(0, "unreachable", `the control plane is unreachable (${String(err)})`);
  }
  // Wrong credentials on the auth routes are an answer, not an expired session.
  if (res.status !== 401 || new URL(input.url).pathname.startsWith("/v1/auth/")) return res;
  if (await hooks.refresh()) {
    res = await fetch(withToken(retry));
    if (res.status !== 401) return res;
  }
  hooks.signedOut();
  return res;
}

export const api = createClient<paths>({
  baseUrl: typeof location === "undefined" ? "" : location.origin,
  fetch: authedFetch,
  headers: CSRF_HEADER,
});

interface Outcome<D> {
  data?: D;
  error?: unknown;
  response: Response;
}

/** The data of a typed call, or its error thrown as an ApiError. */
export async function call<D>(request: Promise<Outcome<D>>): Promise<D> {
  let outcome: Outcome<D>;
  try {
    outcome = await request;
  } catch (err) {
    if (err instanceof ApiError) throw err;
    throw new ApiError(0, "unreachable", `the control plane is unreachable (${String(err)})`);
  }
  if (!outcome.response.ok)
    throw errorFrom(outcome.response.status, outcome.error, outcome.response.statusText);
  return outcome.data as D;
}

/** A human message for anything thrown by a call. */
export const messageOf = (err: unknown): string =>
  err instanceof Error ? err.message : String(err);
