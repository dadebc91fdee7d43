import type { IncomingHttpHeaders } from "node:http";
import { isIP } from "node:net";
import { SANDBOX_ID_RE } from "../ids.js";

/** envd's port: forwarded as is, envd checks X-Access-Token itself. */
export const ENVD_PORT = 49983;

/** Where a request to the control plane's origin belongs. */
export type ProxyRoute =
  | { kind: "sandbox"; sandboxId: string; port: number }
  /** `/files?…&signature=v1_…` with no sandbox identity (e2b-compat §4.2, point 2). */
  | { kind: "signed-files" }
  /** An id that cannot exist: answered like an unknown sandbox, without a lookup. */
  | { kind: "not-found"; sandboxId: string }
  | { kind: "bad-request"; message: string };

export interface RoutingConfig {
  /** Sandbox domain of `{port}-{id}.{domain}`. */
  domain: string;
  /** Host names (no port) that are this API's own: header routing is honoured there. */
  apiHosts: readonly string[];
}

const SANDBOX_HOST_RE = /^(\d+)-([a-z0-9]+)\.(.+)$/;

/** The host name of a Host header, lowercased, without its port or IPv6 brackets. */
export function hostName(host: string | undefined): string {
  if (!host) return "";
  const h = host.trim().toLowerCase();
  if (h.startsWith("[")) return h.slice(1, h.indexOf("]") > 0 ? h.indexOf("]") : undefined);
  const colon = h.lastIndexOf(":");
  return colon >= 0 && h.indexOf(":") === colon ? h.slice(0, colon) : h;
}

function header(headers: IncomingHttpHeaders, name: string): string | undefined {
  const v = headers[name];
  return Array.isArray(v) ? v[0] : v;
}

function parsePort(raw: string): number | undefined {
  if (!/^\d{1,5}$/.test(raw)) return undefined;
  const port = Number(raw);
  return port >= 1 && port <= 65535 ? port : undefined;
}

/**
 * Routes a request, or returns undefined when it is the API's. The host form
 * `{port}-{id}.{domain}` always routes; the `E2b-Sandbox-Id`/`-Port` headers and signed
 * `/files` URLs only on the API's own origin (localhost, an IP, `sandbox.{domain}` or the API's
 * configured host), as E2B's proxy does — so a sandbox's own host cannot be re-pointed by them.
 */
export function routeRequest(
  method: string,
  rawUrl: string,
  headers: IncomingHttpHeaders,
  cfg: RoutingConfig,
): ProxyRoute | undefined {
  const host = hostName(header(headers, "host"));
  const domain = cfg.domain.toLowerCase();
  const m = SANDBOX_HOST_RE.exec(host);
  if (m?.[1] && m[2] && m[3] === domain) {
    const port = parsePort(m[1]);
    if (port === undefined) return { kind: "bad-request", message: `invalid sandbox port ${m[1]}` };
    if (!SANDBOX_ID_RE.test(m[2])) return { kind: "not-found", sandboxId: m[2] };
    return { kind: "sandbox", sandboxId: m[2], port };
  }

  const ownOrigin =
    host === "" ||
    host === "localhost" ||
    host === `sandbox.${domain}` ||
    isIP(host) !== 0 ||
    cfg.apiHosts.includes(host);
  if (!ownOrigin) return undefined;

  const id = header(headers, "e2b-sandbox-id");
  if (id !== undefined) {
    const rawPort = header(headers, "e2b-sandbox-port") ?? "";
    const port = parsePort(rawPort.trim());
    if (port === undefined)
      return {
        kind: "bad-request",
        message: rawPort
          ? `invalid E2b-Sandbox-Port header: ${rawPort.slice(0, 16)}`
          : "E2b-Sandbox-Id needs an E2b-Sandbox-Port header",
      };
    const sandboxId = id.trim();
    if (!SANDBOX_ID_RE.test(sandboxId))
      return { kind: "not-found", sandboxId: sandboxId.slice(0, 64) };
    return { kind: "sandbox", sandboxId, port };
  }

  if (method === "GET" || method === "POST" || method === "HEAD") {
    const q = rawUrl.indexOf("?");
    const path = q >= 0 ? rawUrl.slice(0, q) : rawUrl;
    if (path === "/files" && q >= 0) {
      const signature = new URLSearchParams(rawUrl.slice(q + 1)).get("signature");
      if (signature?.startsWith("v1_")) return { kind: "signed-files" };
    }
  }
  return undefined;
}
