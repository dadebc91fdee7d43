import {
  Agent,
  type ClientRequest,
  type IncomingHttpHeaders,
  type IncomingMessage,
  type OutgoingHttpHeaders,
  request,
  type ServerResponse,
} from "node:http";
import { Agent as HttpsAgent, request as httpsRequest } from "node:https";
import type { Duplex } from "node:stream";
import type { ConnectionOptions } from "node:tls";

/**
 * Streaming HTTP/1.1 forwarding of one client request to a host agent's port proxy. Bodies are
 * piped both ways (pipe() pauses the side that is ahead, so memory stays bounded), hop-by-hop
 * headers are dropped in both directions, and a client that goes away aborts the upstream
 * request, which the agent in turn aborts towards the sandbox.
 */

// RFC 9110 §7.6.1, plus the de-facto ones proxies also drop.
const HOP_BY_HOP = new Set([
  "connection",
  "keep-alive",
  "proxy-connection",
  "proxy-authenticate",
  "proxy-authorization",
  "te",
  "trailer",
  "transfer-encoding",
  "upgrade",
]);

/** A dedicated pool: user traffic never queues behind (or starves) the agent RPC transport. */
const upstreamAgent = new Agent({ keepAlive: true, maxFreeSockets: 32, scheduling: "lifo" });
/** The same for agents over TLS; pooled per client certificate (part of the pool's key). */
const upstreamTlsAgent = new HttpsAgent({
  keepAlive: true,
  maxFreeSockets: 32,
  scheduling: "lifo",
});

function connectionTokens(headers: IncomingHttpHeaders): Set<string> {
  const raw = headers.connection;
  const list = Array.isArray(raw) ? raw.join(",") : (raw ?? "");
  return new Set(
    list
      .split(",")
      .map((t) => t.trim().toLowerCase())
      .filter(Boolean),
  );
}

/** Headers without the hop-by-hop ones (and those the Connection header names). */
export function endToEndHeaders(
  headers: IncomingHttpHeaders,
  keep: readonly string[] = [],
): OutgoingHttpHeaders {
  const named = connectionTokens(headers);
  const out: OutgoingHttpHeaders = {};
  for (const [k, v] of Object.entries(headers)) {
    if (v === undefined) continue;
    if ((HOP_BY_HOP.has(k) || named.has(k)) && !keep.includes(k)) continue;
    out[k] = v;
  }
  return out;
}

/** How the client addressed us: the origin a rewritten Location must point at. */
export interface ClientView {
  /** `http` or `https` (from X-Forwarded-Proto when a TLS terminator sits in front). */
  proto: string;
  host: string;
}

export function clientView(req: IncomingMessage): ClientView {
  const fwd = req.headers["x-forwarded-proto"];
  const first = (Array.isArray(fwd) ? fwd[0] : fwd)?.split(",")[0]?.trim().toLowerCase();
  return { proto: first === "https" ? "https" : "http", host: req.headers.host ?? "" };
}

/** One forwarding: the agent URL for the sandbox port and the request's path and query. */
export interface Upstream {
  /** Host agent base URL, e.g. `http://10.0.0.5:7000`. */
  agentUrl: string;
  sandboxId: string;
  port: number;
  /** Path and query as the client sent them. */
  path: string;
  /** Mutual TLS towards an https agent: the control plane's identity, pinned to the host. */
  tls?: Pick<ConnectionOptions, "ca" | "cert" | "key" | "minVersion" | "checkServerIdentity">;
}

const prefixOf = (u: Upstream) => `/proxy/${u.sandboxId}/${u.port}`;

/**
 * A Location the agent wrote in its own view (`/proxy/{id}/{port}/…`, relative or under the
 * agent's URL) back in the client's view. Anything else is not the sandbox's and stays.
 */
export function rewriteLocation(location: string, u: Upstream, view: ClientView): string {
  const prefix = prefixOf(u);
  const base = u.agentUrl.replace(/\/+$/, "");
  const restAfter = (s: string, p: string): string | undefined => {
    if (!s.startsWith(p)) return undefined;
    const rest = s.slice(p.length);
    return rest === "" || /^[/?#]/.test(rest) ? rest : undefined;
  };
  const absolute = restAfter(location, base + prefix);
  if (absolute !== undefined)
    return `${view.proto}://${view.host}${absolute.startsWith("/") ? "" : "/"}${absolute}`;
  const relative = restAfter(location, prefix);
  if (relative !== undefined) return relative.startsWith("/") ? relative : `/${relative}`;
  return location;
}

function requestHeaders(req: IncomingMessage, upgrade: boolean): OutgoingHttpHeaders {
  const h = endToEndHeaders(req.headers, upgrade ? ["connection", "upgrade"] : []);
  const view = clientView(req);
  // The sandbox sees the agent's Host; these carry what the client used.
  delete h.host;
  // Already answered (Node sends 100 Continue itself); the agent must not wait for it again.
  delete h.expect;
  const remote = req.socket.remoteAddress;
  if (remote) {
    const prior = req.headers["x-forwarded-for"];
    h["x-forwarded-for"] = prior
      ? `${Array.isArray(prior) ? prior.join(", ") : prior}, ${remote}`
      : remote;
  }
  if (!req.headers["x-forwarded-host"] && view.host) h["x-forwarded-host"] = view.host;
  if (!req.headers["x-forwarded-proto"]) h["x-forwarded-proto"] = view.proto;
  if (upgrade) {
    h.connection = "Upgrade";
    h.upgrade = req.headers.upgrade ?? "websocket";
  }
  return h;
}

function responseHeaders(up: IncomingMessage, u: Upstream, view: ClientView): OutgoingHttpHeaders {
  const h = endToEndHeaders(up.headers);
  const loc = up.headers.location;
  if (typeof loc === "string") h.location = rewriteLocation(loc, u, view);
  return h;
}

export interface ForwardHooks {
  /** The agent could not be reached (no response at all). */
  onUnreachable(err: Error): void;
  /** Sees the agent's response status before it is relayed. */
  onStatus?(status: number): void;
  /** An upgrade became a pair of spliced sockets (client, agent). */
  onSpliced?(client: Duplex, upstream: Duplex): void;
}

/** The request to the agent's port proxy for `req` (an upgrade gets its own connection). */
function upstreamRequest(req: IncomingMessage, u: Upstream, upgrade: boolean): ClientRequest {
  const target = new URL(`${u.agentUrl.replace(/\/+$/, "")}${prefixOf(u)}`);
  const secure = target.protocol === "https:";
  return (secure ? httpsRequest : request)({
    // Upgraded sockets leave the pool; a fresh connection keeps the pool's sockets clean.
    agent: upgrade ? false : secure ? upstreamTlsAgent : upstreamAgent,
    ...(secure ? u.tls : {}),
    protocol: target.protocol,
    hostname: target.hostname,
    port: target.port,
    method: req.method,
    path: `${target.pathname}${u.path.startsWith("/") ? "" : "/"}${u.path}`,
    headers: requestHeaders(req, upgrade),
  });
}

export function forwardHttp(
  req: IncomingMessage,
  res: ServerResponse,
  u: Upstream,
  hooks: ForwardHooks,
): void {
  const view = clientView(req);
  const upReq = upstreamRequest(req, u, false);
  let responded = false;
  upReq.on("response", (up) => {
    responded = true;
    hooks.onStatus?.(up.statusCode ?? 502);
    res.writeHead(up.statusCode ?? 502, up.statusMessage, responseHeaders(up, u, view));
    up.pipe(res);
    // A response cut short upstream must not look complete to the client.
    up.on("aborted", () => res.destroy());
    up.on("error", () => res.destroy());
  });
  upReq.on("error", (err) => {
    if (!responded) hooks.onUnreachable(err);
    else res.destroy();
  });
  // The client went away (or the response ended early): stop the upstream request and the
  // agent's request into the sandbox with it.
  res.on("close", () => {
    if (!res.writableFinished) upReq.destroy();
  });
  req.on("error", () => upReq.destroy());
  req.pipe(upReq);
}

function headLines(statusCode: number, statusMessage: string, rawHeaders: string[]): string {
  const lines = [`HTTP/1.1 ${statusCode} ${statusMessage}`];
  for (let i = 0; i + 1 < rawHeaders.length; i += 2)
    lines.push(`${rawHeaders[i]}: ${rawHeaders[i + 1]}`);
  return `${lines.join("\r\n")}\r\n\r\n`;
}

/**
 * An upgrade (WebSocket) request: asked of the agent as an upgrade; after its 101 the two
 * sockets are spliced. Any other answer is relayed as a plain response and the socket closed.
 */
export function forwardUpgrade(
  req: IncomingMessage,
  socket: Duplex,
  head: Buffer,
  u: Upstream,
  hooks: ForwardHooks,
): void {
  const view = clientView(req);
  const upReq = upstreamRequest(req, u, true);
  let answered = false;
  const onClientGone = () => upReq.destroy();
  socket.on("close", onClientGone);
  socket.on("error", onClientGone);
  upReq.on("upgrade", (up, upSocket, upHead) => {
    answered = true;
    socket.off("close", onClientGone);
    upSocket.setNoDelay(true);
    upSocket.setTimeout(0);
    const h = endToEndHeaders(up.headers, ["connection", "upgrade"]);
    const raw: string[] = [];
    for (const [k, v] of Object.entries(h))
      for (const x of Array.isArray(v) ? v : [String(v)]) raw.push(k, x);
    socket.write(headLines(up.statusCode ?? 101, up.statusMessage ?? "Switching Protocols", raw));
    if (upHead.length) socket.write(upHead);
    if (head.length) upSocket.write(head);
    upSocket.pipe(socket);
    socket.pipe(upSocket);
    hooks.onSpliced?.(socket, upSocket);
    upSocket.on("error", () => socket.destroy());
    upSocket.on("close", () => socket.destroy());
    socket.on("error", () => upSocket.destroy());
    socket.on("close", () => upSocket.destroy());
  });
  upReq.on("response", (up) => {
    answered = true;
    hooks.onStatus?.(up.statusCode ?? 502);
    const h = responseHeaders(up, u, view);
    // The body is relayed as Node decoded it (no chunked framing), delimited by the close.
    h.connection = "close";
    const raw: string[] = [];
    for (const [k, v] of Object.entries(h))
      if (v !== undefined) for (const x of Array.isArray(v) ? v : [String(v)]) raw.push(k, x);
    socket.write(headLines(up.statusCode ?? 502, up.statusMessage ?? "", raw));
    up.pipe(socket);
    up.on("error", () => socket.destroy());
  });
  upReq.on("error", (err) => {
    if (!answered) hooks.onUnreachable(err);
    else socket.destroy();
  });
  upReq.end();
}
