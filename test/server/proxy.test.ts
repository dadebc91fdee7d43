/**
 * The sandbox proxy on the control plane's own origin, against a real stack (control plane in
 * this process on PGlite, a namespace-runtime agent, instance `y`): header and host routing to
 * servers inside a sandbox, streaming both ways with bounded memory, client aborts, WebSockets,
 * Location rewriting, E2B's exact 502 bodies, envd's /health next to the API's, signed /files
 * URLs without a sandbox id, traffic access tokens and auto-resume.
 *
 * One file (~600 lines) because every case shares one stack and one sandbox (see above).
 */
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { type IncomingHttpHeaders, request } from "node:http";
import { Readable } from "node:stream";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { AgentClients } from "@nestbox/server/hosts/agent-clients";
import { rewriteLocation } from "@nestbox/server/proxy/forward";
import { routeRequest } from "@nestbox/server/proxy/routing";
import { SandboxService } from "@nestbox/server/services/sandboxes";
import WebSocket from "ws";
import { type Stack, startStack } from "../e2e/support/control-plane-harness.js";
import { GUEST_WEBSOCKET_SOURCE } from "../support/guest-websocket.js";

/** Test servers inside the sandbox (port 8001): streams, a sink, redirects, a WebSocket echo. */
const SANDBOX_SERVER = `
const http = require("http");
const crypto = require("crypto");
let active = 0;
const CHUNK = Buffer.alloc(65536);
for (let i = 0; i < CHUNK.length; i++) CHUNK[i] = i % 251;
const srv = http.createServer((req, res) => {
  const u = new URL(req.url, "http://x");
  if (u.pathname === "/big") {
    const total = Number(u.searchParams.get("bytes"));
    active++;
    res.on("close", () => active--);
    res.writeHead(200, { "content-type": "application/octet-stream", "content-length": total });
    let sent = 0;
    const pump = () => {
      while (sent < total) {
        const n = Math.min(CHUNK.length, total - sent);
        sent += n;
        if (!res.write(n === CHUNK.length ? CHUNK : CHUNK.subarray(0, n))) return void res.once("drain", pump);
      }
      res.end();
    };
    pump();
  } else if (u.pathname === "/active") {
    res.end(JSON.stringify({ active }));
  } else if (u.pathname === "/sink") {
    const h = crypto.createHash("sha256");
    let n = 0;
    req.on("data", (d) => { h.update(d); n += d.length; });
    req.on("end", () => {
      res.setHeader("content-type", "application/json");
      res.end(JSON.stringify({ bytes: n, sha256: h.digest("hex") }));
    });
  } else if (u.pathname === "/redirect-abs") {
    res.writeHead(302, { location: "http://" + req.headers.host + "/target?x=1" }).end();
  } else if (u.pathname === "/redirect-rel") {
    res.writeHead(302, { location: "/target" }).end();
  } else if (u.pathname === "/redirect-away") {
    res.writeHead(302, { location: "http://example.com/elsewhere" }).end();
  } else if (u.pathname === "/headers") {
    res.setHeader("content-type", "application/json");
    res.end(JSON.stringify({ url: req.url, headers: req.headers }));
  } else {
    res.writeHead(404).end("no such path");
  }
});
srv.on("upgrade", (req, sock) => {
  sock.on("error", () => {});
  acceptWebSocket(req, sock, (op, payload) => {
    // Echo every frame; a ping is answered with a pong, a close with a close.
    sendFrame(sock, op === 9 ? 10 : op, payload);
    if (op === 8) sock.end();
  });
});
${GUEST_WEBSOCKET_SOURCE}
srv.listen(8001, "0.0.0.0");
`;

/** The bytes /big sends: 64 KiB chunks of i % 251. */
function bigChunk(): Buffer {
  const b = Buffer.alloc(65536);
  for (let i = 0; i < b.length; i++) b[i] = i % 251;
  return b;
}

function expectedBigHash(total: number): string {
  const chunk = bigChunk();
  const h = createHash("sha256");
  for (let sent = 0; sent < total; sent += chunk.length)
    h.update(chunk.subarray(0, Math.min(chunk.length, total - sent)));
  return h.digest("hex");
}

interface Reply {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
  text: string;
}

let stack: Stack;
let apiPort = 0;
let sandboxId = "";
let envdToken = "";

function send(
  method: string,
  path: string,
  headers: Record<string, string> = {},
  body?: Buffer | string,
): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = request({ host: "127.0.0.1", port: apiPort, method, path, headers }, (res) => {
      const parts: Buffer[] = [];
      res.on("data", (d: Buffer) => parts.push(d));
      res.on("end", () => {
        const b = Buffer.concat(parts);
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body: b, text: b.toString() });
      });
      res.on("error", reject);
    });
    req.on("error", reject);
    req.end(body);
  });
}

const viaHeaders = (port: number, id = sandboxId): Record<string, string> => ({
  "E2b-Sandbox-Id": id,
  "E2b-Sandbox-Port": String(port),
});
const viaHost = (port: number, id = sandboxId) => ({ Host: `${port}-${id}.localhost:${apiPort}` });

const notFoundBody = (id: string) =>
  `{"sandboxId":"${id}","message":"The sandbox was not found","code":502}`;

/** Samples this process's RSS (the control plane runs in it) while `fn` runs. */
async function peakRssGrowth(fn: () => Promise<void>): Promise<number> {
  const base = process.memoryUsage().rss;
  let peak = base;
  const timer = setInterval(() => {
    peak = Math.max(peak, process.memoryUsage().rss);
  }, 20);
  try {
    await fn();
  } finally {
    clearInterval(timer);
  }
  return Math.max(peak, process.memoryUsage().rss) - base;
}

async function waitFor<T>(what: string, fn: () => Promise<T | undefined>, ms = 30_000): Promise<T> {
  const end = Date.now() + ms;
  let last: unknown;
  while (Date.now() < end) {
    try {
      const v = await fn();
      if (v !== undefined) return v;
    } catch (err) {
      last = err;
    }
    await sleep(200);
  }
  throw new Error(`timed out waiting for ${what}${last ? `: ${String(last)}` : ""}`);
}

async function setColumns(sql: string, params: unknown[]): Promise<void> {
  await stack.server.db.query(sql, params);
  // Let the proxy's one-second route cache lapse.
  await sleep(1100);
}

describe("sandbox proxy", { timeout: 300_000 }, () => {
  before(async () => {
    stack = await startStack({
      runtime: "namespace",
      instance: "y",
      slots: "7600-7699",
      db: "pglite",
    });
    const addr = stack.server.server.address();
    apiPort = typeof addr === "object" && addr ? addr.port : 0;
    // A sandbox with an envd access token, as the E2B face makes them (its /files URLs are signed).
    const [key] = await stack.server.db.query<{ team_id: string }>(
      "SELECT team_id FROM api_keys LIMIT 1",
    );
    const [platform] = await stack.server.db.query<{ id: string }>(
      "SELECT id FROM teams WHERE is_platform",
    );
    assert.ok(key && platform);
    envdToken = randomBytes(32).toString("hex");
    const service = new SandboxService(
      stack.server.db,
      new AgentClients({ identity: stack.server.identity }),
      platform.id,
      () => {},
    );
    sandboxId = (
      await service.create(key.team_id, { template: "base", envdAccessToken: envdToken })
    ).id;

    const exec = await stack.api("POST", `/v1/sandboxes/${sandboxId}/exec`, {
      cmd: "sh",
      args: ["-c", "mkdir -p /tmp/www/dir && echo hello-from-sandbox > /tmp/www/hello.txt"],
    });
    assert.equal(exec.status, 200, JSON.stringify(exec.body));
    for (const p of [
      { cmd: "python3", args: ["-m", "http.server", "8000", "--directory", "/tmp/www"] },
      { cmd: "node", args: ["-e", SANDBOX_SERVER] },
    ]) {
      const r = await stack.api("POST", `/v1/sandboxes/${sandboxId}/processes`, p);
      assert.equal(r.status, 201, JSON.stringify(r.body));
    }
    for (const port of [8000, 8001]) {
      await waitFor(`port ${port} in the sandbox`, async () => {
        const r = await send("GET", port === 8000 ? "/hello.txt" : "/active", viaHeaders(port));
        return r.status === 200 ? r : undefined;
      });
    }
  });

  after(async () => {
    await stack?.close();
  });

  it("routes by the E2b-Sandbox-* headers and by {port}-{id}.{domain}, path and query kept", async () => {
    const byHeaders = await send("GET", "/hello.txt", viaHeaders(8000));
    assert.equal(byHeaders.status, 200);
    assert.equal(byHeaders.text, "hello-from-sandbox\n");
    const byHost = await send("GET", "/hello.txt", viaHost(8000));
    assert.equal(byHost.status, 200);
    assert.equal(byHost.text, "hello-from-sandbox\n");

    const echoed = await send("GET", "/headers?a=1&b=%2F", {
      ...viaHost(8001),
      "X-Custom": "kept",
      Connection: "keep-alive, X-Hop",
      "X-Hop": "dropped",
    });
    assert.equal(echoed.status, 200);
    const seen = JSON.parse(echoed.text);
    assert.equal(seen.url, "/headers?a=1&b=%2F");
    assert.equal(seen.headers["x-custom"], "kept");
    assert.equal(seen.headers["x-hop"], undefined, "a header named by Connection is hop-by-hop");
    assert.equal(seen.headers["x-forwarded-host"], `8001-${sandboxId}.localhost:${apiPort}`);
    assert.equal(seen.headers["x-forwarded-proto"], "http");

    // Not a sandbox host and no headers: the API's, which knows no such path (an API path:
    // other paths are the dashboard's single-page fallback).
    const api = await send("GET", "/v1/hello.txt");
    assert.equal(api.status, 404);
    // The headers do not re-point a request addressed to another sandbox host name.
    const other = await send("GET", "/v1/hello.txt", { ...viaHeaders(8000), Host: "example.com" });
    assert.equal(other.status, 404);
  });

  it("tells envd's /health (with the headers) from the API's /health", async () => {
    const envd = await send("GET", "/health", viaHeaders(49983));
    assert.equal(envd.status, 204);
    const api = await send("GET", "/health");
    assert.equal(api.status, 200);
    assert.equal(JSON.parse(api.text).status, "ok");
  });

  it("answers E2B's exact 502 bodies for an unknown sandbox and a closed port", async () => {
    const unknown = "z".repeat(20);
    for (const headers of [viaHeaders(8000, unknown), viaHost(8000, unknown)]) {
      const r = await send("GET", "/", headers);
      assert.equal(r.status, 502);
      assert.equal(r.headers["content-type"], "application/json");
      assert.equal(r.text, notFoundBody(unknown));
    }
    const closed = await send("GET", "/", viaHeaders(8999));
    assert.equal(closed.status, 502);
    assert.equal(
      closed.text,
      `{"message":"The sandbox is running but port is not open","sandboxId":"${sandboxId}","port":8999,"code":502}`,
    );
    const badPort = await send("GET", "/", {
      "E2b-Sandbox-Id": sandboxId,
      "E2b-Sandbox-Port": "x",
    });
    assert.equal(badPort.status, 400);
  });

  it("streams a large response with backpressure: a paused reader does not fill memory", async () => {
    const total = 160 * 1024 * 1024;
    const h = createHash("sha256");
    let received = 0;
    const growth = await peakRssGrowth(
      () =>
        new Promise<void>((resolve, reject) => {
          const req = request(
            {
              host: "127.0.0.1",
              port: apiPort,
              path: `/big?bytes=${total}`,
              headers: viaHost(8001),
            },
            (res) => {
              assert.equal(res.statusCode, 200);
              assert.equal(res.headers["content-length"], String(total));
              let paused = false;
              res.on("data", (d: Buffer) => {
                h.update(d);
                received += d.length;
                if (!paused && received > 8 << 20) {
                  // Stop reading for a while: only socket buffers may fill meanwhile.
                  paused = true;
                  res.pause();
                  setTimeout(() => res.resume(), 2000);
                }
              });
              res.on("end", resolve);
              res.on("error", reject);
            },
          );
          req.on("error", reject);
          req.end();
        }),
    );
    assert.equal(received, total);
    assert.equal(h.digest("hex"), expectedBigHash(total));
    assert.ok(growth < 64 * 1024 * 1024, `RSS grew by ${Math.round(growth / 1048576)} MiB`);
  });

  it("streams a large request body through, with bounded memory", async () => {
    const total = 160 * 1024 * 1024;
    const chunk = randomBytes(1 << 20);
    const h = createHash("sha256");
    for (let i = 0; i < total / chunk.length; i++) h.update(chunk);
    let reply = "";
    const growth = await peakRssGrowth(
      () =>
        new Promise<void>((resolve, reject) => {
          const req = request(
            {
              host: "127.0.0.1",
              port: apiPort,
              method: "POST",
              path: "/sink",
              headers: { ...viaHeaders(8001), "content-type": "application/octet-stream" },
            },
            (res) => {
              res.setEncoding("utf8");
              res.on("data", (d: string) => {
                reply += d;
              });
              res.on("end", resolve);
            },
          );
          req.on("error", reject);
          Readable.from(
            (function* () {
              for (let i = 0; i < total / chunk.length; i++) yield chunk;
            })(),
          ).pipe(req);
        }),
    );
    assert.deepEqual(JSON.parse(reply), { bytes: total, sha256: h.digest("hex") });
    assert.ok(growth < 64 * 1024 * 1024, `RSS grew by ${Math.round(growth / 1048576)} MiB`);
  });

  it("a client that goes away aborts the request inside the sandbox", async () => {
    await new Promise<void>((resolve, reject) => {
      const req = request(
        {
          host: "127.0.0.1",
          port: apiPort,
          path: `/big?bytes=${8 * 2 ** 30}`,
          headers: viaHeaders(8001),
        },
        (res) => {
          let got = 0;
          res.on("data", (d: Buffer) => {
            got += d.length;
            if (got > 1 << 20) {
              req.destroy();
              resolve();
            }
          });
          res.on("end", () => reject(new Error(`the response ended after ${got} bytes`)));
        },
      );
      req.on("error", (err) => {
        if (!req.destroyed) reject(err);
      });
      req.end();
    });
    // The sandbox's server saw its response closed (it would otherwise block on backpressure).
    await waitFor(
      "the sandbox's response to close",
      async () => {
        const r = await send("GET", "/active", viaHeaders(8001));
        return JSON.parse(r.text).active === 0 ? true : undefined;
      },
      10_000,
    );
  });

  it("relays WebSocket upgrades, by headers and by host name", async () => {
    for (const headers of [viaHeaders(8001), viaHost(8001)]) {
      const ws = new WebSocket(`ws://127.0.0.1:${apiPort}/echo`, { headers });
      await new Promise<void>((resolve, reject) => {
        ws.once("open", () => resolve());
        ws.once("error", reject);
      });
      const big = randomBytes(300_000);
      const replies: Buffer[] = [];
      const got = new Promise<void>((resolve) => {
        ws.on("message", (d: Buffer) => {
          replies.push(Buffer.from(d));
          if (replies.length === 2) resolve();
        });
      });
      ws.send("hello through the proxy");
      ws.send(big);
      await got;
      assert.equal(replies[0]?.toString(), "hello through the proxy");
      assert.ok(replies[1]?.equals(big), "the binary frame came back unchanged");
      const closed = new Promise<number>((resolve) => ws.once("close", (code) => resolve(code)));
      ws.close(1000);
      assert.equal(await closed, 1000);
    }
    // An upgrade to a closed port gets the same 502 as plain HTTP.
    const ws = new WebSocket(`ws://127.0.0.1:${apiPort}/`, { headers: viaHeaders(8999) });
    const status = await new Promise<number>((resolve) => {
      ws.once("unexpected-response", (_req, res) => resolve(res.statusCode ?? 0));
      ws.once("error", () => resolve(-1));
    });
    assert.equal(status, 502);
  });

  it("rewrites a Location that points at the sandbox to the client's view", async () => {
    const abs = await send("GET", "/redirect-abs", viaHost(8001));
    assert.equal(abs.status, 302);
    assert.equal(abs.headers.location, `http://8001-${sandboxId}.localhost:${apiPort}/target?x=1`);
    const absHeaders = await send("GET", "/redirect-abs", viaHeaders(8001));
    assert.equal(absHeaders.headers.location, `http://127.0.0.1:${apiPort}/target?x=1`);
    const rel = await send("GET", "/redirect-rel", viaHost(8001));
    assert.equal(rel.headers.location, "/target");
    const away = await send("GET", "/redirect-away", viaHost(8001));
    assert.equal(away.headers.location, "http://example.com/elsewhere");
  });

  it("routes a signed /files URL that carries no sandbox id", async () => {
    const sign = (path: string, op: "read" | "write", exp?: number) => {
      const parts = [path, op, "", envdToken];
      if (exp !== undefined) parts.push(String(exp));
      const d = createHash("sha256").update(parts.join(":")).digest("base64");
      // As the SDKs put it in the URL: base64's `+` and `/` percent-encoded.
      return encodeURIComponent(`v1_${d.replace(/=+$/, "")}`);
    };
    const exp = Math.floor(Date.now() / 1000) + 600;
    const path = "/tmp/www/signed.txt";
    const write = await send(
      "POST",
      `/files?path=${encodeURIComponent(path)}&signature=${sign(path, "write", exp)}&signature_expiration=${exp}`,
      { "content-type": "application/octet-stream" },
      "written through a signed URL",
    );
    assert.equal(write.status, 200, write.text);
    const read = await send(
      "GET",
      `/files?path=${encodeURIComponent(path)}&signature=${sign(path, "read")}`,
    );
    assert.equal(read.status, 200, read.text);
    assert.equal(read.text, "written through a signed URL");

    const expired = Math.floor(Date.now() / 1000) - 10;
    const late = await send(
      "GET",
      `/files?path=${encodeURIComponent(path)}&signature=${sign(path, "read", expired)}&signature_expiration=${expired}`,
    );
    assert.equal(late.status, 401);
    assert.equal(late.text, '{"code":401,"message":"signature is already expired"}');

    const forged = await send("GET", `/files?path=${encodeURIComponent(path)}&signature=v1_forged`);
    assert.equal(forged.status, 401);
    // With the id header, /files goes to that sandbox's envd as any envd request does.
    const direct = await send("GET", `/files?path=${encodeURIComponent(path)}`, {
      ...viaHeaders(49983),
      "X-Access-Token": envdToken,
    });
    assert.equal(direct.text, "written through a signed URL");
  });

  it("enforces the traffic access token on user ports when public traffic is off", async () => {
    await setColumns(
      "UPDATE sandboxes SET allow_public_traffic = false, traffic_access_token = $2 WHERE id = $1",
      [sandboxId, "traffic-secret"],
    );
    const missing = await send("GET", "/hello.txt", viaHeaders(8000));
    assert.equal(missing.status, 401);
    assert.equal(JSON.parse(missing.text).sandboxId, sandboxId);
    const wrong = await send("GET", "/hello.txt", {
      ...viaHost(8000),
      "e2b-traffic-access-token": "nope",
    });
    assert.equal(wrong.status, 403);
    const ok = await send("GET", "/hello.txt", {
      ...viaHeaders(8000),
      "E2B-Traffic-Access-Token": "traffic-secret",
    });
    assert.equal(ok.status, 200);
    // envd's port is not a user port: envd checks its own token.
    assert.equal((await send("GET", "/health", viaHeaders(49983))).status, 204);
    await setColumns("UPDATE sandboxes SET allow_public_traffic = true WHERE id = $1", [sandboxId]);
    assert.equal((await send("GET", "/hello.txt", viaHeaders(8000))).status, 200);
  });

  it("a paused sandbox is not found, unless it auto-resumes on traffic", async () => {
    const paused = await stack.api("POST", `/v1/sandboxes/${sandboxId}/pause`);
    assert.equal(paused.status, 200, JSON.stringify(paused.body));
    for (const headers of [viaHeaders(8000), viaHost(8000), viaHeaders(49983)]) {
      const r = await send("GET", "/hello.txt", headers);
      assert.equal(r.status, 502);
      assert.equal(r.text, notFoundBody(sandboxId));
    }
    await setColumns("UPDATE sandboxes SET auto_resume = true WHERE id = $1", [sandboxId]);
    // Concurrent requests share one resume, then all reach the server that kept running.
    const replies = await Promise.all(
      [1, 2, 3].map(() => send("GET", "/hello.txt", viaHost(8000))),
    );
    for (const r of replies) {
      assert.equal(r.status, 200, r.text);
      assert.equal(r.text, "hello-from-sandbox\n");
    }
    const row = await stack.api("GET", `/v1/sandboxes/${sandboxId}`);
    assert.equal(row.body.status, "running");
  });

  it("stopping the control plane ends proxied WebSockets instead of waiting for them", async () => {
    const ws = new WebSocket(`ws://127.0.0.1:${apiPort}/echo`, { headers: viaHeaders(8001) });
    await new Promise<void>((resolve, reject) => {
      ws.once("open", () => resolve());
      ws.once("error", reject);
    });
    const closed = new Promise<void>((resolve) => ws.once("close", () => resolve()));
    const restarted = stack.restartServer().then(() => "restarted");
    const winner = await Promise.race([restarted, sleep(15_000).then(() => "stuck")]);
    assert.equal(winner, "restarted");
    await closed;
    await waitFor("the proxy after the restart", async () => {
      const r = await send("GET", "/hello.txt", viaHeaders(8000));
      return r.status === 200 ? r : undefined;
    });
  });
});

describe("proxy routing rules", () => {
  const cfg = { domain: "sbx.example", apiHosts: ["api.example"] };
  const id = "a".repeat(20);
  const route = (host: string, headers: Record<string, string> = {}, url = "/") =>
    routeRequest("GET", url, { host, ...headers }, cfg);

  it("takes {port}-{id}.{domain} from any Host and the headers only on the API's own origin", () => {
    assert.deepEqual(route(`3000-${id}.sbx.example:443`), {
      kind: "sandbox",
      sandboxId: id,
      port: 3000,
    });
    assert.deepEqual(route(`3000-short.sbx.example`), { kind: "not-found", sandboxId: "short" });
    assert.equal(route(`70000-${id}.sbx.example`)?.kind, "bad-request");
    assert.equal(route(`3000-${id}.other.example`), undefined);
    const h = { "e2b-sandbox-id": id, "e2b-sandbox-port": "49983" };
    for (const host of [
      "localhost:3000",
      "127.0.0.1",
      "[::1]:3000",
      "sandbox.sbx.example",
      "api.example",
    ])
      assert.deepEqual(route(host, h), { kind: "sandbox", sandboxId: id, port: 49983 }, host);
    assert.equal(route("www.example", h), undefined);
    assert.equal(route("localhost", { "e2b-sandbox-id": id })?.kind, "bad-request");
    assert.deepEqual(route("localhost", {}, "/files?path=a&signature=v1_x"), {
      kind: "signed-files",
    });
    assert.equal(route("localhost", {}, "/files?path=a"), undefined);
    assert.equal(route("www.example", {}, "/files?path=a&signature=v1_x"), undefined);
  });

  it("maps the agent's view of a Location back to the client's", () => {
    const u = { agentUrl: "http://10.1.2.3:7000", sandboxId: id, port: 8000, path: "/" };
    const view = { proto: "https", host: `8000-${id}.sbx.example` };
    assert.equal(
      rewriteLocation(`http://10.1.2.3:7000/proxy/${id}/8000/a?b=1`, u, view),
      `https://8000-${id}.sbx.example/a?b=1`,
    );
    assert.equal(rewriteLocation(`/proxy/${id}/8000/a`, u, view), "/a");
    assert.equal(rewriteLocation(`/proxy/${id}/8000`, u, view), "/");
    assert.equal(rewriteLocation(`/proxy/${id}/80001/a`, u, view), `/proxy/${id}/80001/a`);
    assert.equal(rewriteLocation("https://example.com/x", u, view), "https://example.com/x");
  });
});
