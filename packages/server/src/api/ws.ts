import type { IncomingMessage, Server } from "node:http";
import type { Duplex } from "node:stream";
import { z } from "@hono/zod-openapi";
import { type WebSocket, WebSocketServer } from "ws";
import { authenticateRequestHeaders } from "../auth/middleware.js";
import { ApiError } from "../errors.js";
import { SANDBOX_ID_RE } from "../ids.js";
import type { AgentClient } from "../services/sandbox-access.js";
import type { AppDeps, Caller } from "./context.js";
import { execStreamSession, processStreamSession } from "./ws-commands.js";
import { ptySession } from "./ws-pty.js";
import { type WsContext, WsSession } from "./ws-session.js";

/**
 * The control plane's WebSockets (exec stream, process attach, PTY), served on the HTTP server's
 * `upgrade` event. Credentials come from the upgrade request's X-API-Key / Authorization headers
 * (then a missing sandbox or bad key is an HTTP error before the upgrade), or — for browsers,
 * which cannot set headers — from a first frame `{"type":"auth","token":"<jwt>"}` within 5 s.
 */

const AUTH_TIMEOUT_MS = 5_000;
/** Largest client frame: 1 MiB of input as base64, plus the JSON around it. */
const MAX_PAYLOAD = 2 << 20;
const PING_INTERVAL_MS = 30_000;

type Handler = (ctx: WsContext) => Promise<void>;

const ID = SANDBOX_ID_RE.source.replace(/^\^|\$$/g, "");
const ROUTES: { re: RegExp; handler: Handler }[] = [
  { re: new RegExp(`^/v1/sandboxes/(?<id>${ID})/exec/stream$`), handler: execStreamSession },
  {
    re: new RegExp(
      `^/v1/sandboxes/(?<id>${ID})/processes/(?<selector>\\d{1,10}|[A-Za-z0-9._-]{1,64})/stream$`,
    ),
    handler: processStreamSession,
  },
  { re: new RegExp(`^/v1/sandboxes/(?<id>${ID})/pty$`), handler: ptySession },
];

const AuthMessage = z
  .object({ type: z.literal("auth"), token: z.string().min(1).max(8192) })
  .strict();

function refuse(socket: Duplex, status: number, code: string, message: string): void {
  const body = JSON.stringify({ error: { code, message } });
  const reason = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    409: "Conflict",
    503: "Service Unavailable",
  }[status];
  socket.end(
    `HTTP/1.1 ${status} ${reason ?? "Error"}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
  );
  socket.once("finish", () => socket.destroy());
}

function headersOf(req: IncomingMessage): Headers {
  const h = new Headers();
  for (const [k, v] of Object.entries(req.headers)) {
    if (typeof v === "string") h.set(k, v);
    else if (Array.isArray(v)) for (const x of v) h.append(k, x);
  }
  return h;
}

export interface WebSocketHandle {
  /** Closes every session (1001 going away) and stops serving upgrades. */
  close(): void;
}

export function attachWebSockets(server: Server, deps: AppDeps): WebSocketHandle {
  const wss = new WebSocketServer({
    noServer: true,
    maxPayload: MAX_PAYLOAD,
    perMessageDeflate: false,
  });
  const alive = new WeakMap<WebSocket, boolean>();

  const ping = setInterval(() => {
    for (const ws of wss.clients) {
      if (alive.get(ws) === false) {
        ws.terminate();
        continue;
      }
      alive.set(ws, false);
      ws.ping();
    }
  }, PING_INTERVAL_MS);
  ping.unref();

  const upgrade = (ws: WebSocket) => {
    alive.set(ws, true);
    ws.on("pong", () => alive.set(ws, true));
    ws.on("error", (err) => console.warn("[server] websocket:", err.message));
  };

  const run = async (session: WsSession, handler: Handler, ctx: Omit<WsContext, "session">) => {
    try {
      await handler({ ...ctx, session });
    } catch (err) {
      await session.fail(err, "session");
    }
  };

  const onUpgrade = (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    socket.on("error", (err) => console.warn("[server] websocket upgrade socket:", err.message));
    const url = new URL(req.url ?? "/", "http://x");
    let match: { handler: Handler; id: string; params: Record<string, string> } | undefined;
    for (const r of ROUTES) {
      const m = r.re.exec(url.pathname);
      if (m?.groups?.id) {
        const { id, ...params } = m.groups;
        match = { handler: r.handler, id, params: params as Record<string, string> };
        break;
      }
    }
    if (!match || req.method !== "GET") {
      refuse(socket, 404, "not_found", "no such WebSocket route");
      return;
    }
    const { handler, id, params } = match;
    const headers = headersOf(req);

    if (headers.has("x-api-key") || headers.has("authorization")) {
      // Authenticate and find the sandbox first, so failures are plain HTTP errors.
      void (async () => {
        let caller: Caller;
        let agent: AgentClient;
        try {
          caller = await authenticateRequestHeaders(deps, headers);
          ({ agent } = await deps.sandboxes.running(caller.teamId, id));
        } catch (err) {
          const e = err instanceof ApiError ? err : new ApiError(500, "internal", "internal error");
          if (!(err instanceof ApiError)) console.error("[server] websocket upgrade:", err);
          refuse(socket, e.status, e.code, e.message);
          return;
        }
        wss.handleUpgrade(req, socket, head, (ws) => {
          upgrade(ws);
          void run(new WsSession(ws), handler, { deps, caller, sandboxId: id, agent, params });
        });
      })();
      return;
    }

    wss.handleUpgrade(req, socket, head, (ws) => {
      upgrade(ws);
      const session = new WsSession(ws);
      void (async () => {
        const auth = await session.next(AuthMessage, AUTH_TIMEOUT_MS);
        if (!auth) {
          await session.error(
            "unauthorized",
            'send {"type":"auth","token":…} first (or authenticate the upgrade request)',
          );
          session.close(1008, "unauthorized");
          return;
        }
        let caller: Caller;
        let agent: AgentClient;
        try {
          caller = await authenticateRequestHeaders(
            deps,
            new Headers({ authorization: `Bearer ${auth.token}` }),
          );
          ({ agent } = await deps.sandboxes.running(caller.teamId, id));
        } catch (err) {
          const e = err instanceof ApiError ? err : new ApiError(500, "internal", "internal error");
          if (!(err instanceof ApiError)) console.error("[server] websocket auth:", err);
          await session.error(e.code, e.message, { fatal: true });
          session.close(e.status === 401 || e.status === 403 ? 1008 : 1011, e.code);
          return;
        }
        await session.send({ type: "authenticated" });
        await run(session, handler, { deps, caller, sandboxId: id, agent, params });
      })();
    });
  };

  server.on("upgrade", onUpgrade);
  return {
    close() {
      server.off("upgrade", onUpgrade);
      clearInterval(ping);
      for (const ws of wss.clients) ws.close(1001, "server shutting down");
      wss.close();
    },
  };
}
