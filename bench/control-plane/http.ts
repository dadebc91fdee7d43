/** node:http helpers: the same client for the REST path and the raw path into the guest. */
import { once } from "node:events";
import http from "node:http";
import https from "node:https";
import { MiB, msSince } from "../lib.js";

/**
 * The raw path calls the host agent directly; a registered agent speaks only mutual TLS, so
 * these requests present the control plane's client certificate (set by the bench stack).
 */
let agentTls: { ca: string; cert: string; key: string } | undefined;
export function useAgentTls(tls: { ca: string; cert: string; key: string }): void {
  agentTls = tls;
}
const requestFor = (url: string, options: http.RequestOptions): http.ClientRequest =>
  url.startsWith("https:")
    ? https.request(url, { ...options, ...agentTls })
    : http.request(url, options);

export interface HttpResult {
  status: number;
  body: string;
  ms: number;
  bytes: number;
}

/** A 1 MiB block of random bytes sent again and again: nothing the size of the file is held. */
const block = Buffer.alloc(MiB, 0);
for (let i = 0; i < block.length; i += 4) block.writeUInt32LE((Math.random() * 2 ** 32) >>> 0, i);

export function* payload(size: number): Generator<Buffer> {
  for (let sent = 0; sent < size; sent += block.length)
    yield block.subarray(0, Math.min(block.length, size - sent));
}

/** PUTs `size` bytes from the generator with a Content-Length, honouring backpressure. */
export async function putStream(
  url: string,
  headers: Record<string, string>,
  size: number,
  method = "PUT",
): Promise<HttpResult> {
  const t0 = process.hrtime.bigint();
  const req = requestFor(url, {
    method,
    headers: {
      ...headers,
      "content-type": "application/octet-stream",
      "content-length": String(size),
    },
  });
  const response = new Promise<http.IncomingMessage>((resolve, reject) => {
    req.once("response", resolve);
    req.once("error", reject);
  });
  let early = false;
  void response.then(
    () => {
      early = true;
    },
    () => {
      early = true;
    },
  );
  for (const chunk of payload(size)) {
    if (early) break; // answered (an error) before the body was sent
    if (!req.write(chunk)) await Promise.race([once(req, "drain"), response]);
  }
  req.end();
  const res = await response;
  let body = "";
  for await (const c of res) body += String(c);
  return { status: res.statusCode ?? 0, body, ms: msSince(t0), bytes: size };
}

/** GETs `url` and discards the body, counting it. */
export async function getDiscard(
  url: string,
  headers: Record<string, string>,
): Promise<HttpResult> {
  const t0 = process.hrtime.bigint();
  const req = requestFor(url, { method: "GET", headers });
  const response = new Promise<http.IncomingMessage>((resolve, reject) => {
    req.once("response", resolve);
    req.once("error", reject);
  });
  req.end();
  const res = await response;
  let bytes = 0;
  let body = "";
  for await (const c of res as AsyncIterable<Buffer>) {
    bytes += c.length;
    if (res.statusCode !== 200 && body.length < 4096) body += c.toString();
  }
  return { status: res.statusCode ?? 0, body, ms: msSince(t0), bytes };
}
