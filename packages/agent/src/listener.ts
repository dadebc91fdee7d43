import { randomBytes, timingSafeEqual } from "node:crypto";
import { mkdir, open, readFile } from "node:fs/promises";
import {
  createServer as createHttpServer,
  type IncomingMessage,
  type ServerResponse,
} from "node:http";
import { createServer as createHttpsServer, type Server as HttpsServer } from "node:https";
import type { Server } from "node:net";
import path from "node:path";
import type { Duplex } from "node:stream";
import type { TLSSocket } from "node:tls";
import { AGENT_TOKEN_HEADER, CONTROL_PLANE_CN, EKU_CLIENT_AUTH } from "@nestbox/wire";
import type { ServingCredentials } from "./control-plane/link.js";
import type { Logger } from "./log.js";

/**
 * Who may call this agent, checked on every connection or request before RPC or the port
 * proxy sees it:
 * - registered with a control plane: TLS 1.3 only, and only a client certificate that chains
 *   to the control plane's CA and names the control plane (a host's certificate, valid as it
 *   is, names a host and is refused). Until its first certificate arrives every handshake fails.
 * - standalone: plain HTTP on the address given, every request carrying the token from
 *   `<data-dir>/agent/<instance>/agent-token` (0600) in `X-Nestbox-Agent-Token`.
 */

type Handler = (req: IncomingMessage, res: ServerResponse) => void;
type UpgradeHandler = (req: IncomingMessage, socket: Duplex, head: Buffer) => void;

export interface AgentListener {
  server: Server & { close(cb?: (err?: Error) => void): unknown; closeAllConnections(): void };
  /** Serves with these (first registration, every refresh) without dropping connections. */
  useCredentials(c: ServingCredentials): void;
}

export const agentTokenPath = (nestboxDir: string, instance: string): string =>
  path.join(nestboxDir, "agent", instance, "agent-token");

/** The standalone agent's token, made (0600) at first start. */
export async function loadOrCreateAgentToken(file: string): Promise<string> {
  try {
    const t = (await readFile(file, "utf8")).trim();
    if (!/^[0-9a-f]{64}$/.test(t)) throw new Error(`${file} is not 64 hex characters; remove it`);
    return t;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
  }
  await mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
  const token = randomBytes(32).toString("hex");
  const fh = await open(file, "wx", 0o600);
  try {
    await fh.writeFile(`${token}\n`);
  } finally {
    await fh.close();
  }
  return token;
}

/** Why a TLS peer is not the control plane, or undefined when it is. */
export function notTheControlPlane(socket: TLSSocket): string | undefined {
  if (!socket.authorized) return `certificate not trusted (${String(socket.authorizationError)})`;
  const cert = socket.getPeerCertificate();
  if (cert.subject?.CN !== CONTROL_PLANE_CN)
    return `certificate names ${String(cert.subject?.CN)}, not the control plane`;
  if (!cert.ext_key_usage?.includes(EKU_CLIENT_AUTH))
    return "certificate is not for client authentication";
  return undefined;
}

export function tlsListener(
  log: Logger,
  onRequest: Handler,
  onUpgrade: UpgradeHandler,
): AgentListener {
  const server: HttpsServer = createHttpsServer(
    { requestCert: true, rejectUnauthorized: true, minVersion: "TLSv1.3", requestTimeout: 0 },
    onRequest,
  );
  server.on("secureConnection", (socket: TLSSocket) => {
    const why = notTheControlPlane(socket);
    if (!why) return;
    log.warn("refused a TLS client", { remote: socket.remoteAddress, reason: why });
    socket.destroy();
  });
  server.on("tlsClientError", (err, socket) => {
    log.warn("refused a TLS handshake", { remote: socket.remoteAddress, reason: err.message });
  });
  server.on("upgrade", onUpgrade);
  return {
    server,
    useCredentials(c) {
      server.setSecureContext({
        key: c.keyPem,
        cert: c.certificate,
        ca: c.caCertificate,
        minVersion: "TLSv1.3",
      });
    },
  };
}

export function tokenListener(
  token: string,
  onRequest: Handler,
  onUpgrade: UpgradeHandler,
): AgentListener {
  const expected = Buffer.from(token);
  const allowed = (req: IncomingMessage): boolean => {
    const raw = req.headers[AGENT_TOKEN_HEADER];
    const given = Buffer.from(Array.isArray(raw) ? (raw[0] ?? "") : (raw ?? ""));
    // Not passed on: sandboxes behind the port proxy never see it.
    delete req.headers[AGENT_TOKEN_HEADER];
    return given.length === expected.length && timingSafeEqual(given, expected);
  };
  const server = createHttpServer({ requestTimeout: 0 }, (req, res) => {
    if (allowed(req)) return onRequest(req, res);
    res.writeHead(401, { "content-type": "application/json" });
    res.end(
      JSON.stringify({
        error: {
          code: "unauthorized",
          message: `this agent needs the token from its agent-token file in ${AGENT_TOKEN_HEADER}`,
        },
      }),
    );
  });
  server.on("upgrade", (req, socket, head) => {
    if (allowed(req)) return onUpgrade(req, socket, head);
    socket.end("HTTP/1.1 401 Unauthorized\r\nConnection: close\r\nContent-Length: 0\r\n\r\n");
  });
  return { server, useCredentials() {} };
}
