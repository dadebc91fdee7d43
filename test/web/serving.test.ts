/**
 * How the control plane serves the dashboard build: the SPA fallback, which paths stay API,
 * cache headers, compression and path traversal. Plain HTTP, no browser.
 */
import assert from "node:assert/strict";
import { readdirSync } from "node:fs";
import { request } from "node:http";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { repoRoot, startWebStack, type WebStack } from "./support/browser-fixture.js";

describe("dashboard serving", () => {
  let stack: WebStack;
  before(async () => {
    stack = await startWebStack();
  });
  after(async () => {
    await stack?.close();
  });

  const get = (p: string, headers: Record<string, string> = {}) =>
    fetch(`${stack.url}${p}`, { headers });

  test("page paths get index.html, uncached", async () => {
    for (const p of ["/", "/keys", "/login?next=%2Fkeys", "/some/deep/page"]) {
      const res = await get(p);
      assert.equal(res.status, 200, p);
      assert.match(res.headers.get("content-type") ?? "", /^text\/html/, p);
      assert.equal(res.headers.get("cache-control"), "no-cache", p);
      assert.match(await res.text(), /_app\/immutable\/entry\/start\./, p);
    }
  });

  test("API, docs and health paths keep their own answers", async () => {
    const missing = await get("/v1/no-such-route");
    assert.equal(missing.status, 404);
    const body = (await missing.json()) as { error: { code: string } };
    assert.equal(body.error.code, "not_found");
    assert.equal((await get("/health")).headers.get("content-type")?.includes("json"), true);
    assert.equal((await get("/openapi.json")).status, 200);
    const docs = await get("/docs");
    assert.match(await docs.text(), /\/docs\/assets\/swagger-ui-bundle\.js/);
    const bundle = await get("/docs/assets/swagger-ui-bundle.js", { "accept-encoding": "gzip" });
    assert.equal(bundle.status, 200);
    assert.equal(bundle.headers.get("content-encoding"), "gzip");
  });

  test("E2B paths answer as the E2B API, except a browser's page navigation", async () => {
    const api = await get("/sandboxes");
    assert.equal(api.status, 401);
    assert.match(api.headers.get("content-type") ?? "", /json/);
    for (const p of ["/volumes", "/v3/templates", "/files?path=/x"]) {
      const res = await get(p);
      assert.match(res.headers.get("content-type") ?? "", /json/, p);
      assert.equal(res.status, 404, p);
    }
    // fetch() sets Sec-Fetch-Mode itself (a forbidden header): send it as a browser would.
    const nav = await new Promise<{ status?: number; type?: string }>((resolve, reject) => {
      const req = request(`${stack.url}/sandboxes`, {
        headers: { "sec-fetch-mode": "navigate", "sec-fetch-dest": "document" },
      });
      req.on("response", (res) => {
        res.resume();
        resolve({ status: res.statusCode, type: res.headers["content-type"] });
      });
      req.on("error", reject);
      req.end();
    });
    assert.equal(nav.status, 200);
    assert.match(nav.type ?? "", /^text\/html/);
  });

  test("hashed assets are immutable and sent compressed", async () => {
    const dir = path.join(repoRoot, "packages/web/build/_app/immutable/entry");
    const js = readdirSync(dir).find((f) => f.startsWith("start.") && f.endsWith(".js"));
    assert.ok(js);
    const res = await get(`/_app/immutable/entry/${js}`, { "accept-encoding": "gzip, br" });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get("cache-control"), "public, max-age=31536000, immutable");
    assert.equal(res.headers.get("content-encoding"), "br");
    assert.match(res.headers.get("content-type") ?? "", /javascript/);
    assert.match(await res.text(), /\S/);
    const plain = await get(`/_app/immutable/entry/${js}`, { "accept-encoding": "identity" });
    assert.equal(plain.headers.get("content-encoding"), null);
    const gone = await get("/_app/immutable/entry/start.0000.js");
    assert.equal(gone.status, 404, "a missing asset is not answered with index.html");
  });

  test("no path leaves the build directory", async () => {
    for (const p of [
      "/..%2f..%2fpackage.json",
      "/%2e%2e/%2e%2e/package.json",
      "/_app/..%5c..%5cpackage.json",
    ]) {
      const res = await get(p);
      const text = await res.text();
      assert.doesNotMatch(text, /"workspaces"|"@nestbox\/web"/, p);
    }
  });
});
