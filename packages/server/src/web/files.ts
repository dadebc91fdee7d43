import { readFile, stat } from "node:fs/promises";
import path from "node:path";
import { promisify } from "node:util";
import { brotliCompress, gzip, constants as zlib } from "node:zlib";

const brotli = promisify(brotliCompress);
const gz = promisify(gzip);

const TYPES: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".mjs": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".json": "application/json; charset=utf-8",
  ".svg": "image/svg+xml",
  ".png": "image/png",
  ".ico": "image/x-icon",
  ".txt": "text/plain; charset=utf-8",
  ".woff2": "font/woff2",
  ".map": "application/json; charset=utf-8",
  ".webmanifest": "application/manifest+json",
};

const COMPRESSIBLE = /^(text\/|application\/(json|manifest)|image\/svg)/;

export const contentType = (file: string): string =>
  TYPES[path.extname(file).toLowerCase()] ?? "application/octet-stream";

/**
 * The file under `root` that the URL path `urlPath` names, or undefined when it names none or
 * would leave `root` (`..`, encoded slashes, NUL). Never throws on hostile input.
 */
export async function resolveUnder(root: string, urlPath: string): Promise<string | undefined> {
  let decoded: string;
  try {
    decoded = decodeURIComponent(urlPath);
  } catch {
    return undefined;
  }
  if (decoded.includes("\0") || decoded.includes("\\")) return undefined;
  if (decoded.split("/").some((s) => s === "..")) return undefined;
  const file = path.resolve(root, `.${path.posix.normalize(decoded)}`);
  if (file !== root && !file.startsWith(root + path.sep)) return undefined;
  const st = await stat(file).catch(() => undefined);
  return st?.isFile() ? file : undefined;
}

type Encoding = "br" | "gzip";

/** The best encoding the client accepts (brotli before gzip), ignoring q-values of 0. */
export function pickEncoding(acceptEncoding: string | undefined): Encoding | undefined {
  const accepted = new Set(
    (acceptEncoding ?? "")
      .split(",")
      .map((p) => p.trim().toLowerCase())
      .filter((p) => !/;\s*q=0(\.0*)?$/.test(p))
      .map((p) => p.split(";")[0]),
  );
  if (accepted.has("br")) return "br";
  if (accepted.has("gzip")) return "gzip";
  return undefined;
}

/** On-the-fly compressions of files that have no precompressed twin, kept per path. */
const compressed = new Map<string, Promise<Buffer>>();

async function encodedBody(file: string, enc: Encoding): Promise<Buffer> {
  const twin = `${file}.${enc === "br" ? "br" : "gz"}`;
  const pre = await readFile(twin).catch(() => undefined);
  if (pre) return pre;
  const key = `${enc}:${file}`;
  let job = compressed.get(key);
  if (!job) {
    job = readFile(file).then((raw) =>
      enc === "br"
        ? brotli(raw, { params: { [zlib.BROTLI_PARAM_QUALITY]: 9 } })
        : gz(raw, { level: 9 }),
    );
    compressed.set(key, job);
    job.catch(() => compressed.delete(key));
  }
  return job;
}

/**
 * A response with `file`'s bytes, compressed when the type is textual and the client accepts
 * it. Compressions made on the fly are cached, so only serve files that do not change while the
 * server runs (build output, bundled packages).
 */
export async function fileResponse(
  file: string,
  opts: { acceptEncoding?: string; cacheControl: string; head?: boolean },
): Promise<Response> {
  const type = contentType(file);
  const headers = new Headers({
    "content-type": type,
    "cache-control": opts.cacheControl,
    "x-content-type-options": "nosniff",
  });
  let body: Buffer;
  const enc = COMPRESSIBLE.test(type) ? pickEncoding(opts.acceptEncoding) : undefined;
  if (COMPRESSIBLE.test(type)) headers.set("vary", "accept-encoding");
  if (enc) {
    body = await encodedBody(file, enc);
    headers.set("content-encoding", enc);
  } else {
    body = await readFile(file);
  }
  headers.set("content-length", String(body.length));
  return new Response(opts.head ? null : new Uint8Array(body), { status: 200, headers });
}
