import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { Process } from "@nestbox/proto/process";

/** A plain Connect client for what the SDK does not reach (StreamInput, raw errors). */
export function processClient(baseUrl: string, headers: Record<string, string> = {}) {
  const transport = createConnectTransport({
    baseUrl,
    httpVersion: "1.1",
    useBinaryFormat: false,
    interceptors: [
      (next) => async (req) => {
        for (const [k, v] of Object.entries(headers)) req.header.set(k, v);
        return next(req);
      },
    ],
  });
  return createClient(Process, transport);
}

/** One Connect server-stream call by hand, returning every decoded envelope. */
export async function rawStream(
  url: string,
  body: unknown,
  headers: Record<string, string> = {},
): Promise<{ status: number; messages: unknown[]; endStream: unknown }> {
  const json = Buffer.from(JSON.stringify(body));
  const env = Buffer.alloc(5 + json.length);
  env.writeUInt8(0, 0);
  env.writeUInt32BE(json.length, 1);
  json.copy(env, 5);
  const res = await fetch(url, {
    method: "POST",
    headers: {
      "content-type": "application/connect+json",
      "connect-protocol-version": "1",
      ...headers,
    },
    body: env,
  });
  const buf = Buffer.from(await res.arrayBuffer());
  const messages: unknown[] = [];
  let endStream: unknown;
  let off = 0;
  while (off + 5 <= buf.length) {
    const flags = buf.readUInt8(off);
    const len = buf.readUInt32BE(off + 1);
    const payload = JSON.parse(buf.subarray(off + 5, off + 5 + len).toString("utf8")) as unknown;
    if (flags & 0x02) endStream = payload;
    else messages.push(payload);
    off += 5 + len;
  }
  return { status: res.status, messages, endStream };
}
