import { type IncomingMessage, request, type ServerResponse } from "node:http";
import type { Socket } from "node:net";
import { connect } from "node:net";
import { SANDBOX_ID_RE } from "./manager/ids.js";
import type { SandboxManager } from "./manager/manager.js";
import { slotAddresses } from "./network/netns.js";

/** `/proxy/{sandboxId}/{port}/{rest}`: plain HTTP (and WebSocket upgrades) to a sandbox port. */
const PROXY_PATH = /^\/proxy\/([a-z0-9]{20})\/(\d{1,5})(\/.*)?$/;

export interface Target {
  host: string;
  port: number;
  path: string;
  id: string;
}

function sendJson(res: ServerResponse, status: number, body: Record<string, unknown>): void {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    "content-type": "application/json",
    "content-length": Buffer.byteLength(text),
  });
  res.end(text);
}

const gone = (id: string) => ({ sandboxId: id, message: "The sandbox was not found", code: 502 });

/** Resolves a proxy URL to a running sandbox's address, or explains (as E2B's proxy does) why not. */
function resolve(
  m: SandboxManager,
  url: string,
): Target | { status: number; body: Record<string, unknown> } | undefined {
  const u = new URL(url, "http://agent");
  const match = PROXY_PATH.exec(u.pathname);
  if (!match?.[1] || !match[2]) return undefined;
  const id = match[1];
  const port = Number(match[2]);
  if (!SANDBOX_ID_RE.test(id) || port < 1 || port > 65535) {
    return { status: 400, body: { code: 400, message: "invalid sandbox id or port" } };
  }
  const rec = m.list().find((r) => r.id === id);
  if (rec?.status !== "running") {
    return { status: 502, body: gone(id) };
  }
  m.touch(id);
  return {
    host: slotAddresses(rec.network.slot).sandbox,
    port,
    path: `${match[3] ?? "/"}${u.search}`,
    id,
  };
}

/**
 * A redirect from the sandbox, in this proxy's view: the sandbox only knows its own address
 * (the Host it was sent) and its own root, so both are put under `/proxy/{id}/{port}`; the
 * control plane maps that prefix to what its client used.
 */
export function agentLocation(
  location: string,
  t: Target,
  agentHost: string | undefined,
  scheme: "http" | "https" = "http",
): string {
  const prefix = `/proxy/${t.id}/${t.port}`;
  if (location.startsWith("/") && !location.startsWith("//")) return `${prefix}${location}`;
  const own = [`http://${t.host}:${t.port}`];
  if (t.port === 80) own.push(`http://${t.host}`);
  for (const origin of own) {
    if (!location.startsWith(origin)) continue;
    const rest = location.slice(origin.length);
    if (rest !== "" && !/^[/?#]/.test(rest)) continue;
    const path = rest.startsWith("/") ? rest : `/${rest}`;
    return agentHost ? `${scheme}://${agentHost}${prefix}${path}` : `${prefix}${path}`;
  }
  return location;
}

/** Why a proxied connection was cut: its sandbox stopped running. */
class SandboxStopped extends Error {
  override name = "SandboxStopped";
}

export function createPortProxy(m: SandboxManager) {
  // Open connections per sandbox, cut when it stops (see SandboxManager.onStopping).
  const open = new Map<string, Set<(err: Error) => void>>();
  const track = (id: string, cut: (err: Error) => void): (() => void) => {
    let set = open.get(id);
    if (!set) {
      set = new Set();
      open.set(id, set);
    }
    set.add(cut);
    return () => {
      set.delete(cut);
      if (set.size === 0 && open.get(id) === set) open.delete(id);
    };
  };
  m.onStopping((id) => {
    const set = open.get(id);
    open.delete(id);
    for (const cut of set ?? []) cut(new SandboxStopped(`sandbox ${id} stopped`));
  });
  return {
    /** Handles the request if it is a proxy request; returns false otherwise. */
    handle(req: IncomingMessage, res: ServerResponse): boolean {
      const t = resolve(m, req.url ?? "/");
      if (t === undefined) return false;
      if ("status" in t) {
        sendJson(res, t.status, t.body);
        return true;
      }
      const upstream = request(
        {
          host: t.host,
          port: t.port,
          path: t.path,
          method: req.method,
          headers: { ...req.headers, host: `${t.host}:${t.port}` },
          // A connection of its own: pooled keep-alive sockets outlive the sandbox, and its slot's
          // address goes to the next sandbox, which resets them (a false "port is not open"), or to
          // nobody, where a request on them hangs.
          agent: false,
        },
        (up) => {
          const location = up.headers.location;
          if (typeof location === "string")
            up.headers.location = agentLocation(
              location,
              t,
              req.headers.host,
              // This agent's own scheme: TLS when registered with a control plane.
              "encrypted" in req.socket && req.socket.encrypted ? "https" : "http",
            );
          res.writeHead(up.statusCode ?? 502, up.headers);
          up.pipe(res);
          up.on("error", () => res.destroy());
        },
      );
      const untrack = track(t.id, (err) => upstream.destroy(err));
      // The client (the control plane's proxy) went away: stop the request into the sandbox too,
      // or a server there stays blocked writing into a response nobody reads.
      res.on("close", () => {
        untrack();
        if (!res.writableFinished) upstream.destroy();
      });
      upstream.on("error", (err) => {
        if (res.headersSent) res.destroy();
        else if (err instanceof SandboxStopped) sendJson(res, 502, gone(t.id));
        else
          sendJson(res, 502, {
            message: "The sandbox is running but port is not open",
            sandboxId: t.id,
            port: t.port,
            code: 502,
          });
      });
      req.pipe(upstream);
      return true;
    },

    /** WebSocket and other upgrades: a raw TCP splice after replaying the request head. */
    upgrade(req: IncomingMessage, socket: Socket, head: Buffer): boolean {
      const t = resolve(m, req.url ?? "/");
      if (t === undefined) return false;
      if ("status" in t) {
        socket.end(
          `HTTP/1.1 ${t.status} Bad Gateway\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n${JSON.stringify(t.body)}`,
        );
        return true;
      }
      const up = connect(t.port, t.host, () => {
        const lines = [`${req.method} ${t.path} HTTP/1.1`];
        for (let i = 0; i < req.rawHeaders.length; i += 2) {
          const k = req.rawHeaders[i] ?? "";
          lines.push(
            `${k}: ${k.toLowerCase() === "host" ? `${t.host}:${t.port}` : (req.rawHeaders[i + 1] ?? "")}`,
          );
        }
        up.write(`${lines.join("\r\n")}\r\n\r\n`);
        if (head.length) up.write(head);
        up.pipe(socket);
        socket.pipe(up);
      });
      const untrack = track(t.id, () => {
        up.destroy();
        socket.destroy();
      });
      socket.on("close", untrack);
      up.on("error", () => socket.destroy());
      socket.on("error", () => up.destroy());
      return true;
    },
  };
}
