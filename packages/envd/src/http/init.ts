import type { IncomingMessage, ServerResponse } from "node:http";
import { accessTokenHeader } from "../auth.js";
import { syncClock } from "../clock.js";
import type { EnvdContext } from "../context.js";
import { HttpError } from "../errors.js";
import { UserDb } from "../users.js";
import { readJsonBody } from "./body.js";

interface InitBody {
  accessToken?: string;
  defaultUser?: string;
  defaultWorkdir?: string;
  envVars?: Record<string, string>;
  timestamp?: number;
}

/** Validates the /init body by hand: it is small, and the errors must name the field. */
export function parseInitBody(raw: unknown): InitBody {
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) {
    throw new HttpError(400, "body must be a JSON object");
  }
  const o = raw as Record<string, unknown>;
  const body: InitBody = {};
  for (const key of ["accessToken", "defaultUser", "defaultWorkdir"] as const) {
    const v = o[key];
    if (v === undefined || v === null) continue;
    if (typeof v !== "string") throw new HttpError(400, `${key} must be a string`);
    body[key] = v;
  }
  if (o.envVars !== undefined && o.envVars !== null) {
    if (typeof o.envVars !== "object" || Array.isArray(o.envVars)) {
      throw new HttpError(400, "envVars must be an object of strings");
    }
    const env: Record<string, string> = {};
    for (const [k, v] of Object.entries(o.envVars as Record<string, unknown>)) {
      if (typeof v !== "string") throw new HttpError(400, `envVars.${k} must be a string`);
      if (k === "" || k.includes("=") || k.includes("\0")) {
        throw new HttpError(400, `envVars has an invalid name: ${JSON.stringify(k)}`);
      }
      env[k] = v;
    }
    body.envVars = env;
  }
  if (o.timestamp !== undefined && o.timestamp !== null) {
    // infra envd sends RFC 3339, Wrenn sends unix seconds: accept both.
    const t = o.timestamp;
    const ms =
      typeof t === "number" ? t * 1000 : typeof t === "string" ? Date.parse(t) : Number.NaN;
    if (!Number.isFinite(ms))
      throw new HttpError(400, "timestamp must be RFC 3339 or unix seconds");
    body.timestamp = ms;
  }
  return body;
}

/**
 * `POST /init`: installs the access token and the defaults for new processes. Once a token is
 * installed, changing anything requires presenting it (header or the same token in the body),
 * so a guest process cannot take over envd by calling /init itself.
 */
export async function handleInit(ctx: EnvdContext, req: IncomingMessage, res: ServerResponse) {
  const receivedAt = Date.now();
  const body = parseInitBody(await readJsonBody(req));
  const { state } = ctx;
  if (state.accessToken !== undefined) {
    const presented = accessTokenHeader(req.headers);
    if (!state.tokenMatches(presented) && !state.tokenMatches(body.accessToken ?? null)) {
      throw new HttpError(401, "invalid access token");
    }
  }
  const stale =
    body.timestamp !== undefined &&
    state.lastInitAt !== undefined &&
    body.timestamp < state.lastInitAt;
  if (!stale) {
    if (body.defaultUser !== undefined && !UserDb.load().find(body.defaultUser)) {
      throw new HttpError(400, `defaultUser '${body.defaultUser}' does not exist`);
    }
    if (body.accessToken !== undefined) state.accessToken = body.accessToken || undefined;
    if (body.defaultUser) state.defaultUser = body.defaultUser;
    if (body.defaultWorkdir !== undefined) state.defaultWorkdir = body.defaultWorkdir || undefined;
    if (body.envVars) state.envVars = { ...state.envVars, ...body.envVars };
    if (body.timestamp !== undefined) state.lastInitAt = body.timestamp;
    ctx.log.info("init applied", {
      defaultUser: state.defaultUser,
      envVars: Object.keys(body.envVars ?? {}).length,
      token: state.accessToken !== undefined,
    });
  } else {
    ctx.log.info("stale init ignored", { timestamp: body.timestamp, lastInitAt: state.lastInitAt });
  }
  // A restored VM's clock shows the snapshot's time; the caller's timestamp is the truth.
  if (state.syncClock && body.timestamp !== undefined && !stale) {
    try {
      const { changed, driftMs } = syncClock(body.timestamp + (Date.now() - receivedAt));
      if (changed) ctx.log.info("clock set from /init", { driftMs });
    } catch (err) {
      ctx.log.warn("cannot set the clock", { err: String(err) });
    }
  }
  res.writeHead(204, { "cache-control": "no-store" });
  res.end();
}
