import type { ServerResponse } from "node:http";
import { HttpError, toHttpError } from "../errors.js";
import type { Logger } from "../log.js";

export function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    "content-type": "application/json",
    "content-length": Buffer.byteLength(text),
    "cache-control": "no-store",
  });
  res.end(text);
}

/** E2B's envd error body: `{"code": <http status>, "message": "…"}`. */
export function sendError(res: ServerResponse, err: unknown, log?: Logger): void {
  const httpErr = err instanceof HttpError ? err : toHttpError(err);
  if (httpErr.status >= 500) log?.error("request failed", { err: String(err) });
  if (res.headersSent) {
    // Too late for a status: cut the connection so the client sees a truncated body.
    res.destroy(httpErr);
    return;
  }
  sendJson(res, httpErr.status, { code: httpErr.status, message: httpErr.message });
}
