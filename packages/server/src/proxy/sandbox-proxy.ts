import { timingSafeEqual } from "node:crypto";
import type { IncomingMessage, Server, ServerResponse } from "node:http";
import type { Duplex } from "node:stream";
import type { ServerConfig } from "../config.js";
import type { Queryable } from "../db/db.js";
import type { ControlPlaneIdentity } from "../pki/client-identity.js";
import { forwardHttp, forwardUpgrade, type Upstream } from "./forward.js";
import { type ProxyTarget, routable, SandboxLookup } from "./lookup.js";
import {
  hostUnreachable,
  type ProxyError,
  proxyError,
  sandboxNotFound,
  sendProxyError,
  writeProxyError,
} from "./responses.js";
import { ENVD_PORT, hostName, type ProxyRoute, routeRequest } from "./routing.js";
import { parseSignedFilesRequest } from "./signature.js";

export interface SandboxProxyDeps {
  db: Queryable;
  config: Pick<ServerConfig, "domain" | "publicUrl" | "host">;
  /** Resumes a paused sandbox (SandboxService.resume): traffic to an auto-resume sandbox. */
  resume(teamId: string, sandboxId: string): Promise<unknown>;
  log?: (line: string) => void;
  /** How long a running sandbox's route is reused without asking the database (default 1 s). */
  cacheTtlMs?: number;
  /** The control plane's client certificate: https agents are reached over mutual TLS. */
  identity?: ControlPlaneIdentity;
}

/** The sandbox proxy (e2b-compat §3.6, §4.2): claims the requests that belong to a sandbox. */
export interface SandboxProxy {
  /** Serves the request and returns true when it is a sandbox's; false leaves it to the API. */
  handle(req: IncomingMessage, res: ServerResponse): boolean;
  /** The same for upgrade (WebSocket) requests. */
  upgrade(req: IncomingMessage, socket: Duplex, head: Buffer): boolean;
  /**
   * Ends the spliced WebSocket connections: the HTTP server no longer tracks upgraded sockets
   * (closeAllConnections skips them), and its close() would wait for them forever.
   */
  close(): void;
}

const TRAFFIC_TOKEN_HEADER = "e2b-traffic-access-token";

function sameSecret(given: string, expected: string): boolean {
  const a = Buffer.from(given);
  const b = Buffer.from(expected);
  return a.length === b.length && timingSafeEqual(a, b);
}

/** User ports of a sandbox without public traffic need its traffic access token. */
function trafficDenied(t: ProxyTarget, port: number, req: IncomingMessage): ProxyError | undefined {
  if (port === ENVD_PORT || t.allowPublicTraffic) return undefined;
  const raw = req.headers[TRAFFIC_TOKEN_HEADER];
  const given = Array.isArray(raw) ? raw[0] : raw;
  if (!given)
    return proxyError(401, `The sandbox requires the ${TRAFFIC_TOKEN_HEADER} header`, {
      sandboxId: t.sandboxId,
    });
  if (!t.trafficAccessToken || !sameSecret(given, t.trafficAccessToken))
    return proxyError(403, "The traffic access token is not valid for this sandbox", {
      sandboxId: t.sandboxId,
    });
  return undefined;
}

export function createSandboxProxy(deps: SandboxProxyDeps): SandboxProxy {
  const log = deps.log ?? ((line: string) => console.log(line));
  const lookup = new SandboxLookup(deps.db, deps.cacheTtlMs ?? 1000);
  const apiHosts = [hostName(deps.config.host)];
  try {
    apiHosts.push(hostName(new URL(deps.config.publicUrl).host));
  } catch (err) {
    log(`[proxy] public URL ${deps.config.publicUrl} is not a URL: ${String(err)}`);
  }
  const routing = { domain: deps.config.domain, apiHosts };
  const resuming = new Map<string, Promise<ProxyTarget | undefined>>();
  const spliced = new Set<Duplex>();

  /** One resume per sandbox however many requests arrive while it runs. */
  const resumeFor = (t: ProxyTarget): Promise<ProxyTarget | undefined> => {
    let p = resuming.get(t.sandboxId);
    if (!p) {
      log(`[proxy] sandbox ${t.sandboxId}: traffic while paused, resuming it`);
      p = deps
        .resume(t.teamId, t.sandboxId)
        .catch((err: unknown) => {
          // Another request may have resumed it first; the fresh lookup below tells.
          log(
            `[proxy] sandbox ${t.sandboxId}: auto-resume failed: ${err instanceof Error ? err.message : String(err)}`,
          );
        })
        .then(() => {
          lookup.forget(t.sandboxId);
          return lookup.get(t.sandboxId);
        })
        .finally(() => resuming.delete(t.sandboxId));
      resuming.set(t.sandboxId, p);
    }
    return p;
  };

  const resolve = async (
    route: ProxyRoute,
    req: IncomingMessage,
  ): Promise<{ upstream: Upstream } | { error: ProxyError }> => {
    let sandboxId: string;
    let port: number;
    let target: ProxyTarget | undefined;
    switch (route.kind) {
      case "bad-request":
        return { error: proxyError(400, route.message) };
      case "not-found":
        return { error: sandboxNotFound(route.sandboxId) };
      case "signed-files": {
        const signed = parseSignedFilesRequest(req.method ?? "GET", req.url ?? "/");
        target = signed && (await lookup.bySignature(signed));
        if (!target)
          return {
            error: proxyError(401, "invalid signature: no running sandbox issued this URL"),
          };
        sandboxId = target.sandboxId;
        port = ENVD_PORT;
        break;
      }
      case "sandbox":
        sandboxId = route.sandboxId;
        port = route.port;
        target = await lookup.get(sandboxId);
        break;
    }
    if (!target) return { error: sandboxNotFound(sandboxId) };
    const denied = trafficDenied(target, port, req);
    if (denied) return { error: denied };
    if (target.status === "paused" && target.autoResume) target = await resumeFor(target);
    if (!routable(target)) {
      return {
        error:
          target?.status === "running" ? hostUnreachable(sandboxId) : sandboxNotFound(sandboxId),
      };
    }
    return {
      upstream: {
        agentUrl: target.agentUrl,
        sandboxId,
        port,
        path: req.url ?? "/",
        ...(deps.identity && target.hostId
          ? { tls: deps.identity.tlsOptionsFor(target.hostId) }
          : {}),
      },
    };
  };

  const hooksFor = (u: Upstream, fail: (e: ProxyError) => void) => ({
    onUnreachable(err: Error) {
      lookup.forget(u.sandboxId);
      log(`[proxy] sandbox ${u.sandboxId}: agent ${u.agentUrl} unreachable: ${err.message}`);
      fail(hostUnreachable(u.sandboxId));
    },
    onStatus(status: number) {
      // The agent's 502s: not running there (or port closed); ask the database next time.
      if (status === 502) lookup.forget(u.sandboxId);
    },
    onSpliced(client: Duplex, upstream: Duplex) {
      for (const s of [client, upstream]) {
        spliced.add(s);
        s.once("close", () => spliced.delete(s));
      }
    },
  });

  const route = (req: IncomingMessage) =>
    routeRequest(req.method ?? "GET", req.url ?? "/", req.headers, routing);

  return {
    handle(req, res) {
      const r = route(req);
      if (!r) return false;
      resolve(r, req).then(
        (out) => {
          if ("error" in out) {
            // Drain the unread body so the connection can be kept alive.
            req.resume();
            sendProxyError(res, out.error);
            return;
          }
          if (res.destroyed) return;
          forwardHttp(
            req,
            res,
            out.upstream,
            hooksFor(out.upstream, (e) => sendProxyError(res, e)),
          );
        },
        (err: unknown) => {
          log(
            `[proxy] ${req.method} ${req.url}: ${err instanceof Error ? err.stack : String(err)}`,
          );
          req.resume();
          sendProxyError(res, proxyError(500, "internal proxy error"));
        },
      );
      return true;
    },

    upgrade(req, socket, head) {
      const r = route(req);
      if (!r) return false;
      socket.on("error", (err) => log(`[proxy] upgrade socket: ${err.message}`));
      resolve(r, req).then(
        (out) => {
          if ("error" in out) {
            writeProxyError(socket, out.error);
            return;
          }
          if (socket.destroyed) return;
          forwardUpgrade(
            req,
            socket,
            head,
            out.upstream,
            hooksFor(out.upstream, (e) => writeProxyError(socket, e)),
          );
        },
        (err: unknown) => {
          log(`[proxy] upgrade ${req.url}: ${err instanceof Error ? err.stack : String(err)}`);
          writeProxyError(socket, proxyError(500, "internal proxy error"));
        },
      );
      return true;
    },

    close() {
      for (const s of spliced) s.destroy();
      spliced.clear();
    },
  };
}

/**
 * Puts the proxy in front of everything the server serves. Node hands an upgrade to every
 * `upgrade` listener, so the API's WebSocket listener cannot simply be preceded by ours: the
 * proxy claims its requests (and upgrades) before the server's listeners are called at all.
 */
export function attachSandboxProxy(server: Server, proxy: SandboxProxy): void {
  const emit = server.emit.bind(server) as (event: string | symbol, ...args: unknown[]) => boolean;
  const claim = (event: string | symbol, args: unknown[]): boolean => {
    if (event === "request")
      return proxy.handle(args[0] as IncomingMessage, args[1] as ServerResponse);
    if (event === "upgrade")
      return proxy.upgrade(args[0] as IncomingMessage, args[1] as Duplex, args[2] as Buffer);
    return false;
  };
  server.emit = ((event: string | symbol, ...args: unknown[]): boolean =>
    claim(event, args) || emit(event, ...args)) as Server["emit"];
}
