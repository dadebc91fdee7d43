import type { ServerResponse } from "node:http";
import type { Duplex } from "node:stream";

/**
 * The proxy's own answers. Bodies and key order follow E2B's proxy (e2b-compat §3.6): the SDKs
 * read `isRunning()` from the 502, and E2B's tests compare these bodies byte for byte.
 */
export interface ProxyError {
  status: number;
  body: Record<string, unknown>;
}

export const sandboxNotFound = (sandboxId: string): ProxyError => ({
  status: 502,
  body: { sandboxId, message: "The sandbox was not found", code: 502 },
});

export const hostUnreachable = (sandboxId: string): ProxyError => ({
  status: 502,
  body: { sandboxId, message: "The sandbox's host is not reachable", code: 502 },
});

export const proxyError = (
  status: number,
  message: string,
  extra: Record<string, unknown> = {},
): ProxyError => ({ status, body: { ...extra, message, code: status } });

const REASONS: Record<number, string> = {
  400: "Bad Request",
  401: "Unauthorized",
  403: "Forbidden",
  404: "Not Found",
  502: "Bad Gateway",
  503: "Service Unavailable",
};

export function sendProxyError(res: ServerResponse, e: ProxyError): void {
  if (res.destroyed) return;
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const text = JSON.stringify(e.body);
  res.writeHead(e.status, {
    "content-type": "application/json",
    "content-length": Buffer.byteLength(text),
  });
  res.end(text);
}

/** The same answer on a raw socket, for upgrade requests that never became a ServerResponse. */
export function writeProxyError(socket: Duplex, e: ProxyError): void {
  if (socket.destroyed) return;
  const text = JSON.stringify(e.body);
  socket.end(
    `HTTP/1.1 ${e.status} ${REASONS[e.status] ?? "Error"}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(text)}\r\nconnection: close\r\n\r\n${text}`,
  );
}
