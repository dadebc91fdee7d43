import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { Code, ConnectError } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { Filesystem } from "@nestbox/proto/filesystem";
import { Process } from "@nestbox/proto/process";
import { accessTokenHeader, isTokenExempt } from "./auth.js";
import type { EnvdContext } from "./context.js";
import { createFilesystemService } from "./filesystem/service.js";
import { registerFileRoutes } from "./http/files.js";
import { handleInit } from "./http/init.js";
import { collectMetrics } from "./http/metrics.js";
import { sendError, sendJson } from "./http/respond.js";
import { HttpRoutes } from "./http/router.js";
import { ProcessRegistry } from "./process/registry.js";
import { createProcessService } from "./process/service.js";

const CORS_HEADERS = {
  "access-control-allow-origin": "*",
  "access-control-allow-methods": "GET, POST, PUT, DELETE, OPTIONS, HEAD",
  "access-control-allow-headers": "*",
  "access-control-expose-headers": "*",
  "access-control-max-age": "7200",
};

export interface EnvdServer {
  server: Server;
  close(): Promise<void>;
}

export function createEnvdHandler(ctx: EnvdContext, processes = new ProcessRegistry()) {
  const routes = new HttpRoutes()
    .add("GET", "/health", async (_req, res) => {
      res.writeHead(204, { "cache-control": "no-store" });
      res.end();
    })
    .add("GET", "/envs", async (_req, res) => sendJson(res, 200, ctx.state.envVars))
    .add("GET", "/metrics", async (_req, res) => sendJson(res, 200, await collectMetrics()))
    .add("POST", "/init", (req, res) => handleInit(ctx, req, res));
  registerFileRoutes(routes, ctx);

  const fallback = (req: IncomingMessage, res: ServerResponse) => {
    const url = new URL(req.url ?? "/", "http://envd");
    const handler = routes.match(req.method ?? "GET", url.pathname);
    if (handler === undefined) {
      sendJson(res, 404, { code: 404, message: `no route for ${url.pathname}` });
      return;
    }
    if (handler === "method") {
      res.setHeader("allow", routes.allowed(url.pathname).join(", "));
      sendJson(res, 405, { code: 405, message: `method ${req.method} not allowed` });
      return;
    }
    handler(req, res, url).catch((err: unknown) => sendError(res, err, ctx.log));
  };

  const connect = connectNodeAdapter({
    routes: (router) => {
      router.service(Process, createProcessService(ctx, processes));
      router.service(Filesystem, createFilesystemService(ctx));
    },
    // We serve HTTP/1.1 only, so the request is always an IncomingMessage.
    fallback: (req, res) => fallback(req as IncomingMessage, res as ServerResponse),
  });

  return (req: IncomingMessage, res: ServerResponse) => {
    for (const [k, v] of Object.entries(CORS_HEADERS)) res.setHeader(k, v);
    if (req.method === "OPTIONS") {
      res.writeHead(204);
      res.end();
      return;
    }
    const pathname = (req.url ?? "/").split("?", 1)[0] ?? "/";
    if (
      !isTokenExempt(req.method ?? "GET", pathname) &&
      !ctx.state.tokenMatches(accessTokenHeader(req.headers))
    ) {
      rejectUnauthenticated(req, res);
      return;
    }
    connect(req, res);
  };
}

/** RPC paths get a Connect error body (the SDKs map it to AuthenticationError), others E2B's. */
function rejectUnauthenticated(req: IncomingMessage, res: ServerResponse) {
  const isRpc = /^\/(process\.Process|filesystem\.Filesystem)\//.test(req.url ?? "");
  const message = "unauthorized access, please provide a valid access token";
  // Drain the body so keep-alive connections stay usable.
  req.resume();
  if (isRpc) {
    const err = new ConnectError(message, Code.Unauthenticated);
    sendJson(res, 401, { code: "unauthenticated", message: err.rawMessage });
  } else {
    sendJson(res, 401, { code: 401, message });
  }
}

export async function startEnvdServer(
  ctx: EnvdContext,
  opts: { port: number; host?: string },
): Promise<EnvdServer> {
  const processes = new ProcessRegistry();
  const server = createServer(
    {
      // Long-lived streams (process output, watches) must not be cut by Node's defaults.
      requestTimeout: 0,
      headersTimeout: 60_000,
      keepAliveTimeout: 65_000,
    },
    createEnvdHandler(ctx, processes),
  );
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(opts.port, opts.host ?? "0.0.0.0", () => {
      server.off("error", reject);
      resolve();
    });
  });
  return {
    server,
    close: () =>
      new Promise<void>((resolve) => {
        // Processes die with envd, so a stopped envd leaves nothing running behind it.
        processes.killAll();
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
