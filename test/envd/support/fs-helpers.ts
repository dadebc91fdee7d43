import { execFileSync } from "node:child_process";
import { chownSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { request } from "node:http";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { Filesystem } from "@nestbox/proto/filesystem";
import type { EnvdProcess } from "./harness.js";

export interface TempDir {
  path: string;
  cleanup(): void;
}

/** uid and gid of a local user, for chowning fixtures. */
export function idsOf(name: string): { uid: number; gid: number } {
  const uid = Number(execFileSync("id", ["-u", name], { encoding: "utf8" }).trim());
  const gid = Number(execFileSync("id", ["-g", name], { encoding: "utf8" }).trim());
  return { uid, gid };
}

/** A fresh directory under /tmp, owned by `owner` (root by default), removed by cleanup(). */
export function tempDir(prefix: string, owner?: string): TempDir {
  const p = mkdtempSync(`/tmp/nbx-${prefix}-`);
  if (owner) {
    const { uid, gid } = idsOf(owner);
    chownSync(p, uid, gid);
  }
  return { path: p, cleanup: () => rmSync(p, { recursive: true, force: true }) };
}

/** A Connect client for the filesystem service, JSON over HTTP/1.1 like the SDK. */
export function fsClient(envd: EnvdProcess) {
  const transport = createConnectTransport({
    baseUrl: envd.url,
    httpVersion: "1.1",
    useBinaryFormat: false,
  });
  return createClient(Filesystem, transport);
}

/** `Authorization` header selecting a user, as the SDK sends it. */
export function basicUser(user: string): Record<string, string> {
  return { authorization: `Basic ${Buffer.from(`${user}:`).toString("base64")}` };
}

export interface RawResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
}

/** A plain node:http request, for what fetch hides (content-encoding, exact bodies). */
export function rawRequest(
  envd: EnvdProcess,
  opts: { method: string; path: string; headers?: Record<string, string | number>; body?: Buffer },
): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: "127.0.0.1",
        port: envd.port,
        method: opts.method,
        path: opts.path,
        headers: opts.headers,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () =>
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            body: Buffer.concat(chunks),
          }),
        );
        res.on("error", reject);
      },
    );
    req.on("error", reject);
    req.end(opts.body);
  });
}

/** Waits until `check` returns true, polling; fails with `what` after `timeoutMs`. */
export async function waitFor(
  check: () => boolean,
  what: string,
  timeoutMs = 5_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Peak and current resident memory of a process, in bytes, from /proc. */
export function memoryOf(pid: number): { rss: number; hwm: number } {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const kb = (key: string) =>
    Number(new RegExp(`^${key}:\\s+(\\d+)`, "m").exec(status)?.[1] ?? 0) * 1024;
  return { rss: kb("VmRSS"), hwm: kb("VmHWM") };
}

export function removeQuietly(p: string): void {
  rmSync(p, { recursive: true, force: true });
}
