import { createRequire } from "node:module";
import path from "node:path";
import type { Env, Hono } from "hono";
import { fileResponse, resolveUnder } from "./files.js";

const require = createRequire(import.meta.url);
/** swagger-ui-dist's own folder: the API reference works with no network (no CDN). */
const SWAGGER_DIR = path.dirname(require.resolve("swagger-ui-dist/package.json"));
const ASSETS = new Set(["swagger-ui.css", "swagger-ui-bundle.js", "favicon-32x32.png"]);

const PAGE = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Nestbox API reference</title>
<link rel="icon" href="/docs/assets/favicon-32x32.png">
<link rel="stylesheet" href="/docs/assets/swagger-ui.css">
</head>
<body>
<main id="swagger-ui"></main>
<script src="/docs/assets/swagger-ui-bundle.js"></script>
<script src="/docs/assets/init.js"></script>
</body>
</html>
`;

const INIT = `window.ui = SwaggerUIBundle({ url: "/openapi.json", dom_id: "#swagger-ui", deepLinking: true });\n`;

/** GET /docs: Swagger UI over /openapi.json, from the bundled swagger-ui-dist package. */
export function mountDocs<E extends Env>(app: Hono<E>): void {
  app.get("/docs", (c) => c.html(PAGE, 200, { "cache-control": "no-cache" }));
  app.get("/docs/assets/init.js", (c) =>
    c.body(INIT, 200, { "content-type": "text/javascript; charset=utf-8" }),
  );
  app.get("/docs/assets/:name", async (c) => {
    const name = c.req.param("name");
    const file = ASSETS.has(name) ? await resolveUnder(SWAGGER_DIR, `/${name}`) : undefined;
    if (!file) return c.json({ error: { code: "not_found", message: "no such file" } }, 404);
    return fileResponse(file, {
      acceptEncoding: c.req.header("accept-encoding"),
      cacheControl: "public, max-age=86400",
    });
  });
}
