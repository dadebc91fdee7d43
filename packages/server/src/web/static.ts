import { existsSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import type { Context, Env, Hono, MiddlewareHandler } from "hono";
import { fileResponse, resolveUnder } from "./files.js";

/**
 * packages/web/build, from src/web or dist/web alike. NESTBOX_WEB_DIR overrides it (a packaged
 * install that keeps the dashboard elsewhere).
 */
export function defaultWebDir(): string {
  if (process.env.NESTBOX_WEB_DIR) return path.resolve(process.env.NESTBOX_WEB_DIR);
  return path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../../web/build");
}

/** Paths that always belong to an API: never answered with the dashboard. */
const API_PREFIXES = ["/v1/", "/openapi.json", "/docs", "/health"];
/**
 * Top-level paths of the E2B API (and of envd, for requests the sandbox proxy did not claim),
 * per shared/docs/e2b-compat.md. A browser navigation there still gets the dashboard (its own
 * /sandboxes pages share the name); any other request reaches the E2B routes or their JSON 404.
 */
const E2B_PREFIXES = [
  "/sandboxes",
  "/templates",
  "/snapshots",
  "/volumes",
  "/secrets",
  "/teams",
  "/v2/",
  "/v3/",
  "/files",
  "/init",
  "/execute",
  "/contexts",
];

const startsWithAny = (p: string, prefixes: readonly string[]) =>
  prefixes.some((x) => p === x.replace(/\/$/, "") || p.startsWith(x.endsWith("/") ? x : `${x}/`));

const IMMUTABLE = "public, max-age=31536000, immutable";

/**
 * Serves the dashboard's static build at `/`. Registered after the API routes, so it sees only
 * requests no API route answered: an existing build file is sent as it is; any other GET gets
 * index.html (the single-page app routes in the browser), except E2B-face paths, which reach
 * the E2B routes unless the request is a browser's top-level navigation (`Sec-Fetch-Mode:
 * navigate`, a header page scripts cannot set).
 */
export function webMiddleware(dir = defaultWebDir()): MiddlewareHandler {
  const root = path.resolve(dir);
  const index = path.join(root, "index.html");
  let warned = false;
  return async (c: Context, next) => {
    const method = c.req.method;
    if (method !== "GET" && method !== "HEAD") return next();
    const p = c.req.path;
    if (startsWithAny(p, API_PREFIXES)) return next();
    if (!existsSync(index)) {
      if (!warned) console.warn(`[server] no dashboard build in ${root}: run npm run build`);
      warned = true;
      return next();
    }
    const opts = { acceptEncoding: c.req.header("accept-encoding"), head: method === "HEAD" };
    const file = p === "/" ? undefined : await resolveUnder(root, p);
    if (file && file !== index) {
      const cacheControl = p.startsWith("/_app/immutable/") ? IMMUTABLE : "no-cache";
      return fileResponse(file, { ...opts, cacheControl });
    }
    // A missing hashed asset is a stale page asking for an old build: say so, not index.html.
    if (p.startsWith("/_app/")) return next();
    const navigation = c.req.header("sec-fetch-mode") === "navigate";
    if (startsWithAny(p, E2B_PREFIXES) && !navigation) return next();
    return fileResponse(index, { ...opts, cacheControl: "no-cache" });
  };
}

/** Mounts the dashboard (and its fallback) on `app`; call it after every API route. */
export function mountWeb<E extends Env>(app: Hono<E>, dir?: string): void {
  app.use("*", webMiddleware(dir));
}
