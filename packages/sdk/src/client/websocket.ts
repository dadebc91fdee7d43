import type { IncomingMessage } from "node:http";
import WebSocket from "ws";
import { apiErrorFrom, NestboxApiError, unreachable } from "./errors.js";
import type { Transport } from "./http.js";

/** Frames above this many unsent bytes wait for the socket to drain (backpressure). */
const SEND_HIGH_WATER = 1 << 20;

/** HTTP status that goes with an error code the server sends in a WebSocket error frame. */
const STATUS_OF_CODE: Record<string, number> = {
  invalid_request: 400,
  invalid_message: 400,
  unauthorized: 401,
  forbidden: 403,
  not_found: 404,
  conflict: 409,
  invalid_state: 409,
  too_large: 413,
  timeout: 408,
  agent_error: 502,
  host_unavailable: 503,
  no_hosts_available: 503,
};

export function frameError(code: string, message: string): NestboxApiError {
  return new NestboxApiError(STATUS_OF_CODE[code] ?? 500, code, message);
}

async function readBody(res: IncomingMessage): Promise<string> {
  const parts: Buffer[] = [];
  for await (const chunk of res) parts.push(Buffer.from(chunk as Uint8Array));
  return Buffer.concat(parts).toString("utf8");
}

/**
 * Opens an authenticated WebSocket to an API path. The server checks the key and the sandbox
 * before upgrading, so those failures arrive as an ordinary HTTP error response.
 */
export function openSocket(t: Transport, path: string, signal?: AbortSignal): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(t.wsUrl(path), {
      headers: t.authHeaders(),
      perMessageDeflate: false,
      maxPayload: 64 << 20,
    });
    const onAbort = () => {
      ws.terminate();
      reject(signal?.reason ?? new Error("aborted"));
    };
    signal?.addEventListener("abort", onAbort, { once: true });
    const settle = () => signal?.removeEventListener("abort", onAbort);
    ws.once("open", () => {
      settle();
      resolve(ws);
    });
    ws.once("unexpected-response", (_req, res) => {
      settle();
      readBody(res).then(
        (text) => {
          let body: unknown = text;
          try {
            body = JSON.parse(text);
          } catch {
            // Not one of our JSON errors: the text is the message.
          }
          reject(apiErrorFrom(res.statusCode ?? 0, body, res.statusMessage));
        },
        (err: unknown) => reject(unreachable(t.apiUrl, err)),
      );
    });
    ws.once("error", (err) => {
      settle();
      reject(unreachable(t.apiUrl, err));
    });
  });
}

/** Sends a JSON frame, waiting for the socket to drain first when the client is far ahead. */
export async function sendFrame(ws: WebSocket, frame: Record<string, unknown>): Promise<void> {
  if (ws.readyState !== WebSocket.OPEN) throw new Error("the WebSocket is closed");
  const data = JSON.stringify(frame);
  if (ws.bufferedAmount + data.length <= SEND_HIGH_WATER) {
    ws.send(data);
    return;
  }
  await new Promise<void>((resolve, reject) =>
    ws.send(data, (err) => (err ? reject(err) : resolve())),
  );
}

/** A server frame: `type` plus whatever it carries. */
export type Frame = { type: string } & Record<string, unknown>;

export function parseFrame(data: WebSocket.RawData): Frame | undefined {
  const text = Array.isArray(data)
    ? Buffer.concat(data).toString("utf8")
    : Buffer.from(data as ArrayBuffer).toString("utf8");
  try {
    const f = JSON.parse(text) as unknown;
    if (f && typeof f === "object" && typeof (f as Frame).type === "string") return f as Frame;
  } catch {
    // Reported by the caller as an unexpected frame.
  }
  return undefined;
}

export const str = (v: unknown): string => (typeof v === "string" ? v : "");
export const b64 = (v: unknown): Buffer => Buffer.from(str(v), "base64");
