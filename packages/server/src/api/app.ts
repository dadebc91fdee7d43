import { randomUUID } from "node:crypto";
import { OpenAPIHono } from "@hono/zod-openapi";
import { NESTBOX_VERSION } from "@nestbox/proto/version";
import { HTTPException } from "hono/http-exception";
import { ApiError, badRequest } from "../errors.js";
import { mountDocs } from "../web/docs.js";
import { mountWeb } from "../web/static.js";
import type { AppDeps, AppEnv } from "./context.js";

export const API_VERSION = NESTBOX_VERSION;

/**
 * A router whose request validation failures become our 400 body naming the first bad field,
 * instead of zod-openapi's default error shape. Route modules create theirs with this.
 */
export function newRouter(): OpenAPIHono<AppEnv> {
  return new OpenAPIHono<AppEnv>({
    defaultHook: (result) => {
      if (!result.success) {
        const issue = result.error.issues[0];
        const field = issue?.path.join(".") || undefined;
        const message = issue ? `${field ? `${field}: ` : ""}${issue.message}` : "invalid request";
        throw badRequest(message, field);
      }
    },
  });
}

export type RouteModule = (deps: AppDeps) => OpenAPIHono<AppEnv>;

/** The whole HTTP API. Route modules are mounted under /v1 in the order given. */
export function buildApp(deps: AppDeps, modules: readonly RouteModule[]): OpenAPIHono<AppEnv> {
  const app = newRouter();
  app.use(async (c, next) => {
    c.set("requestId", c.req.header("x-request-id") ?? randomUUID());
    await next();
  });
  app.onError((err, c) => {
    if (err instanceof ApiError) return c.json(err.toBody(), err.status);
    if (err instanceof HTTPException && err.status < 500) {
      // Hono raises these for malformed bodies (e.g. invalid JSON) before our validators run.
      return c.json(
        new ApiError(400, "invalid_request", err.message || "malformed request").toBody(),
        400,
      );
    }
    console.error(`[server] request ${c.get("requestId")} ${c.req.method} ${c.req.path}:`, err);
    return c.json(new ApiError(500, "internal", "internal error").toBody(), 500);
  });
  app.notFound((c) => c.json(new ApiError(404, "not_found", "no such route").toBody(), 404));

  app.get("/health", (c) => c.json({ status: "ok", version: API_VERSION }));
  for (const mod of modules) app.route("/v1", mod(deps));

  app.openAPIRegistry.registerComponent("securitySchemes", "apiKey", {
    type: "apiKey",
    in: "header",
    name: "X-API-Key",
  });
  app.openAPIRegistry.registerComponent("securitySchemes", "bearer", {
    type: "http",
    scheme: "bearer",
    bearerFormat: "JWT",
  });
  app.doc31("/openapi.json", {
    openapi: "3.1.0",
    info: { title: "Nestbox API", version: API_VERSION },
  });
  mountDocs(app);
  // Last: the dashboard answers only what no API route (nor the E2B face after it) claims.
  mountWeb(app);
  return app;
}
