import type { Context } from "hono";
import { HTTPException } from "hono/http-exception";
import type { ContentfulStatusCode } from "hono/utils/http-status";
import type { AppEnv } from "../api/context.js";
import { ApiError } from "../errors.js";

/**
 * E2B's error body. The SDKs branch on `code` (404 → not found / `false`, 409 → wrong state),
 * so every error of the E2B routes has it, validation and authentication included.
 */
export interface E2bErrorBody {
  code: number;
  message: string;
}

export const e2bError = (code: number, message: string): E2bErrorBody => ({ code, message });

/** A status the E2B face answers that the /v1 error type does not model (e.g. 501). */
export class E2bHttpError extends Error {
  constructor(
    readonly status: ContentfulStatusCode,
    message: string,
  ) {
    super(message);
    this.name = "E2bHttpError";
  }
}

/** The E2B routes' error handler: the same ApiErrors as /v1, rendered as `{code, message}`. */
export function renderE2bError(err: Error, c: Context<AppEnv>): Response {
  if (err instanceof ApiError) return c.json(e2bError(err.status, err.message), err.status);
  if (err instanceof E2bHttpError) return c.json(e2bError(err.status, err.message), err.status);
  if (err instanceof HTTPException && err.status < 500)
    return c.json(e2bError(400, err.message || "malformed request"), 400);
  console.error(`[e2b] request ${c.get("requestId")} ${c.req.method} ${c.req.path}:`, err);
  return c.json(e2bError(500, "internal error"), 500);
}
