import { Agent, request } from "node:http";
import type { Readable } from "node:stream";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { Filesystem } from "@nestbox/proto/filesystem";
import { Process } from "@nestbox/proto/process";

export const ENVD_PORT = 49983;

/**
 * No connection reuse: sandbox addresses are reused after a destroy, and a pooled socket to the
 * previous sandbox at the same address fails with ECONNRESET.
 */
const noKeepAlive = new Agent({ keepAlive: false });

interface HttpResult {
  status: number;
  body: string;
}

function httpCall(
  url: string,
  init: { method?: string; headers?: Record<string, string>; body?: string; timeoutMs: number },
): Promise<HttpResult> {
  return new Promise((resolve, reject) => {
    const req = request(
      url,
      {
        method: init.method ?? "GET",
        headers: init.headers,
        agent: noKeepAlive,
        timeout: init.timeoutMs,
      },
      (res) => {
        let body = "";
        res.setEncoding("utf8");
        res.on("data", (d: string) => {
          if (body.length < 65_536) body += d;
        });
        res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
        res.on("error", reject);
      },
    );
    req.on("timeout", () => req.destroy(new Error(`timed out after ${init.timeoutMs} ms`)));
    req.on("error", reject);
    req.end(init.body);
  });
}

/** What the agent asks of one sandbox's envd, over the sandbox network. */
export class EnvdClient {
  readonly baseUrl: string;
  readonly process;
  readonly filesystem;

  constructor(
    readonly host: string,
    private readonly accessToken?: string,
    port = ENVD_PORT,
  ) {
    this.baseUrl = `http://${host}:${port}`;
    const token = accessToken;
    const transport = createConnectTransport({
      baseUrl: this.baseUrl,
      httpVersion: "1.1",
      useBinaryFormat: true,
      // No gzip: envd would compress process output in the guest, where CPU is emulated.
      acceptCompression: [],
      nodeOptions: { agent: noKeepAlive },
      interceptors: token
        ? [
            (next) => async (req) => {
              req.header.set("x-access-token", token);
              return next(req);
            },
          ]
        : [],
    });
    this.process = createClient(Process, transport);
    this.filesystem = createClient(Filesystem, transport);
  }

  private headers(extra: Record<string, string> = {}): Record<string, string> {
    return this.accessToken ? { "x-access-token": this.accessToken, ...extra } : extra;
  }

  async health(timeoutMs = 2000): Promise<boolean> {
    try {
      const res = await httpCall(`${this.baseUrl}/health`, { timeoutMs });
      return res.status === 204;
    } catch (err) {
      // Not up (yet): connection refused, reset or timed out all mean "no".
      void err;
      return false;
    }
  }

  async init(body: {
    accessToken?: string;
    envVars?: Record<string, string>;
    defaultUser?: string;
    defaultWorkdir?: string;
  }): Promise<void> {
    const res = await httpCall(`${this.baseUrl}/init`, {
      method: "POST",
      headers: this.headers({ "content-type": "application/json" }),
      body: JSON.stringify({ ...body, timestamp: new Date().toISOString() }),
      timeoutMs: 20_000,
    }).catch((err: unknown) => {
      throw new ConnectError(`envd /init unreachable: ${String(err)}`, Code.Unavailable);
    });
    if (res.status !== 204) {
      throw new ConnectError(`envd /init: ${res.status} ${res.body}`, Code.Internal);
    }
  }

  /** Streams a body into a file in the sandbox (`POST /files`, octet-stream). */
  writeFile(path: string, body: Readable, user = "root"): Promise<void> {
    const url = new URL(`${this.baseUrl}/files`);
    url.searchParams.set("path", path);
    url.searchParams.set("username", user);
    return new Promise((resolve, reject) => {
      const req = request(
        url,
        {
          method: "POST",
          headers: this.headers({ "content-type": "application/octet-stream" }),
          agent: noKeepAlive,
        },
        (res) => {
          let text = "";
          res.setEncoding("utf8");
          res.on("data", (d: string) => {
            if (text.length < 4096) text += d;
          });
          res.on("end", () => {
            if (res.statusCode === 200) resolve();
            else reject(fileError(res.statusCode ?? 0, text));
          });
        },
      );
      req.on("error", (err) =>
        reject(new ConnectError(`envd unreachable: ${err.message}`, Code.Unavailable)),
      );
      body.on("error", (err) => req.destroy(err));
      body.pipe(req);
    });
  }

  /** Opens a file in the sandbox for streaming (`GET /files`, no gzip). */
  readFile(path: string, user = "root"): Promise<Readable> {
    const url = new URL(`${this.baseUrl}/files`);
    url.searchParams.set("path", path);
    url.searchParams.set("username", user);
    return new Promise((resolve, reject) => {
      const req = request(
        url,
        { headers: this.headers({ "accept-encoding": "identity" }) },
        (res) => {
          if (res.statusCode === 200) {
            resolve(res);
            return;
          }
          let text = "";
          res.setEncoding("utf8");
          res.on("data", (d: string) => {
            text += d;
          });
          res.on("end", () => reject(fileError(res.statusCode ?? 0, text)));
        },
      );
      req.on("error", (err) =>
        reject(new ConnectError(`envd unreachable: ${err.message}`, Code.Unavailable)),
      );
      req.end();
    });
  }
}

function fileError(status: number, body: string): ConnectError {
  let message = body;
  try {
    message = (JSON.parse(body) as { message?: string }).message ?? body;
  } catch (err) {
    // Not JSON: keep the raw text.
    void err;
  }
  const code =
    status === 404
      ? Code.NotFound
      : status === 400
        ? Code.InvalidArgument
        : status === 403
          ? Code.PermissionDenied
          : status === 507
            ? Code.ResourceExhausted
            : status === 401
              ? Code.Unauthenticated
              : Code.Internal;
  return new ConnectError(`envd /files: ${message}`, code);
}

/** Call options selecting the Linux user for an envd RPC (E2B's Basic-auth convention). */
export function asUser(user: string | undefined): { headers?: Record<string, string> } {
  if (!user) return {};
  return { headers: { authorization: `Basic ${Buffer.from(`${user}:`).toString("base64")}` } };
}
