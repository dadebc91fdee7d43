import type { Stats } from "node:fs";
import { open } from "node:fs/promises";
import type { IncomingMessage, ServerResponse } from "node:http";
import path from "node:path";
import { pipeline } from "node:stream/promises";
import { createGzip } from "node:zlib";
import type { EnvdContext } from "../context.js";
import { HttpError } from "../errors.js";
import { checkAccess, R_OK } from "../filesystem/access.js";
import { resolveUserPath } from "../users.js";
import { authorizeFileRequest } from "./files-request.js";
import { handleUpload } from "./files-upload.js";
import type { HttpRoutes } from "./router.js";

/** `GET /files` downloads and `POST /files` uploads, E2B's plain-HTTP file transfer. */
export function registerFileRoutes(routes: HttpRoutes, ctx: EnvdContext): void {
  routes
    .add("GET", "/files", (req, res, url) => handleDownload(ctx, req, res, url))
    .add("POST", "/files", (req, res, url) => handleUpload(ctx, req, res, url));
}

/** `Content-Disposition` the way Go's mime.FormatMediaType renders it, as E2B sends it. */
export function contentDisposition(filename: string): string {
  if (/^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/.test(filename)) return `inline; filename=${filename}`;
  if (/^[\x20-\x7e]*$/.test(filename)) {
    return `inline; filename="${filename.replace(/(["\\])/g, "\\$1")}"`;
  }
  const encoded = encodeURIComponent(filename).replace(
    /['()*]/g,
    (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`,
  );
  return `inline; filename*=utf-8''${encoded}`;
}

/** True when the client accepts gzip (q > 0); undici sends `gzip, deflate` by default. */
export function acceptsGzip(header: string | undefined): boolean {
  if (!header) return false;
  for (const part of header.split(",")) {
    const [coding, ...params] = part.trim().split(";");
    if (coding?.trim().toLowerCase() !== "gzip") continue;
    const q = params.map((p) => p.trim()).find((p) => p.startsWith("q="));
    return q === undefined || Number(q.slice(2)) > 0;
  }
  return false;
}

/** A single `bytes=` range within `size`, or undefined to serve the whole file. */
export function parseRange(
  header: string | undefined,
  size: number,
): { start: number; end: number } | "unsatisfiable" | undefined {
  const m = /^bytes=(\d*)-(\d*)$/.exec(header?.trim() ?? "");
  if (!m || (m[1] === "" && m[2] === "")) return undefined;
  let start: number;
  let end: number;
  if (m[1] === "") {
    const suffix = Number(m[2]);
    if (suffix === 0) return "unsatisfiable";
    start = Math.max(0, size - suffix);
    end = size - 1;
  } else {
    start = Number(m[1]);
    end = m[2] === "" ? size - 1 : Math.min(Number(m[2]), size - 1);
    if (end < start) return m[2] === "" || start >= size ? "unsatisfiable" : undefined;
  }
  if (start >= size) return "unsatisfiable";
  return { start, end };
}

/**
 * `GET /files`: streams one regular file. gzip when the client accepts it (streamed, so no
 * content-length), a single byte range when asked (then never gzip), content-length 0 for an
 * empty file, which the SDK turns into an empty result.
 */
async function handleDownload(
  ctx: EnvdContext,
  req: IncomingMessage,
  res: ServerResponse,
  url: URL,
) {
  const { rawPath, user, creds } = authorizeFileRequest(ctx, req, url, "read");
  if (!rawPath) throw new HttpError(400, "path query parameter is required");
  const p = resolveUserPath(rawPath, user);
  const st: Stats = await checkAccess(p, R_OK, creds);
  if (st.isDirectory()) throw new HttpError(400, `path '${p}' is a directory`);
  if (!st.isFile()) throw new HttpError(400, `path '${p}' is not a regular file`);

  const fh = await open(p, "r");
  try {
    const size = (await fh.stat()).size;
    const headers: Record<string, string | number> = {
      "content-type": "application/octet-stream",
      "content-disposition": contentDisposition(path.basename(p)),
      "cache-control": "no-store",
      "accept-ranges": "bytes",
      vary: "Accept-Encoding",
      "last-modified": st.mtime.toUTCString(),
    };
    const range = parseRange(req.headers.range, size);
    if (range === "unsatisfiable") {
      throw new HttpError(416, `range not satisfiable for a file of ${size} bytes`);
    }
    const gzip = range === undefined && size > 0 && acceptsGzip(req.headers["accept-encoding"]);
    let status = 200;
    let start = 0;
    let end = size - 1;
    if (range) {
      status = 206;
      ({ start, end } = range);
      headers["content-range"] = `bytes ${start}-${end}/${size}`;
    }
    if (gzip) headers["content-encoding"] = "gzip";
    else headers["content-length"] = size === 0 ? 0 : end - start + 1;
    res.writeHead(status, headers);
    if (req.method === "HEAD" || size === 0) {
      res.end();
      return;
    }
    // 1 MiB reads: under TCG every read and write is costly guest work, and 64 KiB reads made
    // downloads about three times slower (bench/control-plane.ts diagnostics).
    const source = fh.createReadStream({ start, end, autoClose: false, highWaterMark: 1 << 20 });
    try {
      // Level 1: the SDK's HTTP client asks for gzip on every download, so speed beats ratio.
      if (gzip) await pipeline(source, createGzip({ level: 1 }), res);
      else await pipeline(source, res);
    } catch (err) {
      // The client went away mid-download (SDK stream cancelled, timeout): nothing to report.
      if ((err as NodeJS.ErrnoException).code === "ERR_STREAM_PREMATURE_CLOSE") return;
      throw err;
    }
  } finally {
    await fh.close();
  }
}
