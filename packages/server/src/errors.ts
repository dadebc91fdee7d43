/**
 * Errors that cross the HTTP boundary. Every handler throws ApiError (or lets a typed error be
 * mapped to one); the app's error handler renders `{"error":{"code","message"}}` so clients can
 * branch on a stable code instead of parsing messages.
 */
export type ApiErrorCode =
  | "invalid_request"
  | "unauthorized"
  | "forbidden"
  | "not_found"
  | "conflict"
  | "invalid_state"
  | "email_taken"
  | "name_taken"
  | "too_large"
  | "no_hosts_available"
  | "host_unavailable"
  | "agent_error"
  | "csrf"
  | "wrong_password"
  | "session_revoked"
  | "invalid_csr"
  | "pki_unavailable"
  | "has_active_sandboxes"
  | "team_not_byoc"
  | "internal";

export class ApiError extends Error {
  constructor(
    readonly status: 400 | 401 | 403 | 404 | 409 | 413 | 500 | 502 | 503,
    readonly code: ApiErrorCode,
    message: string,
    /** Extra machine-readable fields added next to code and message (e.g. `field`). */
    readonly details: Record<string, unknown> = {},
  ) {
    super(message);
    this.name = "ApiError";
  }

  toBody(): { error: { code: ApiErrorCode; message: string } & Record<string, unknown> } {
    return { error: { code: this.code, message: this.message, ...this.details } };
  }
}

export const badRequest = (message: string, field?: string) =>
  new ApiError(400, "invalid_request", message, field ? { field } : {});
export const unauthorized = (message = "missing or invalid credentials") =>
  new ApiError(401, "unauthorized", message);
export const forbidden = (message: string) => new ApiError(403, "forbidden", message);
export const notFound = (what: string) => new ApiError(404, "not_found", `${what} not found`);
export const invalidState = (message: string) => new ApiError(409, "invalid_state", message);
export const conflict = (code: "conflict" | "email_taken" | "name_taken", message: string) =>
  new ApiError(409, code, message);
