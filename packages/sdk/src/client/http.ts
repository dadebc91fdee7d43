import createClient, { type Client } from "openapi-fetch";
import type { paths } from "./api-types.js";
import { apiErrorFrom, apiErrorFromResponse, NestboxApiError, unreachable } from "./errors.js";

/** What openapi-fetch resolves to: data on success, the parsed error body otherwise. */
interface Outcome<D> {
  data?: D;
  error?: unknown;
  response: Response;
}

/**
 * The one place requests leave the client: JSON routes through a client typed by the generated
 * OpenAPI types, streaming routes (files) through plain fetch, WebSockets through `wsUrl`.
 * Every failure comes out as a NestboxApiError.
 */
export class Transport {
  readonly api: Client<paths>;

  constructor(
    readonly apiUrl: string,
    readonly apiKey: string | undefined,
    /** A user access token (`Authorization: Bearer`): the admin routes take no API key. */
    readonly userToken?: string,
  ) {
    this.api = createClient<paths>({ baseUrl: apiUrl, headers: this.authHeaders() });
  }

  authHeaders(): Record<string, string> {
    if (this.userToken) return { authorization: `Bearer ${this.userToken}` };
    return this.apiKey ? { "x-api-key": this.apiKey } : {};
  }

  /** The data of a typed call, or its error thrown. */
  async call<D>(request: Promise<Outcome<D>>): Promise<D> {
    let outcome: Outcome<D>;
    try {
      outcome = await request;
    } catch (err) {
      throw this.mapThrown(err);
    }
    const { response } = outcome;
    if (!response.ok) throw apiErrorFrom(response.status, outcome.error, response.statusText);
    return outcome.data as D;
  }

  /** A raw request to `/v1…` (path with query), mapping a non-2xx status to its error. */
  async fetch(pathAndQuery: string, init: RequestInit = {}): Promise<Response> {
    const headers = new Headers(init.headers);
    for (const [k, v] of Object.entries(this.authHeaders())) headers.set(k, v);
    let res: Response;
    try {
      res = await fetch(`${this.apiUrl}${pathAndQuery}`, { ...init, headers });
    } catch (err) {
      throw this.mapThrown(err);
    }
    if (!res.ok) throw await apiErrorFromResponse(res);
    return res;
  }

  /** The ws:// or wss:// URL of an API path. */
  wsUrl(pathAndQuery: string): string {
    return `${this.apiUrl.replace(/^http/, "ws")}${pathAndQuery}`;
  }

  private mapThrown(err: unknown): Error {
    if (err instanceof NestboxApiError) return err;
    // An abort is the caller's own doing: let it through unchanged.
    if (err instanceof Error && (err.name === "AbortError" || err.name === "TimeoutError"))
      return err;
    return unreachable(this.apiUrl, err);
  }
}

/** A path segment, escaped. */
export const seg = (s: string): string => encodeURIComponent(s);
