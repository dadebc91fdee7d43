import type { Stats } from "node:fs";
import { chmod, chown, lstat, open, realpath, rename, rm, stat } from "node:fs/promises";
import type { IncomingMessage, ServerResponse } from "node:http";
import path from "node:path";
import { PassThrough, type Readable } from "node:stream";
import { createGunzip } from "node:zlib";
import busboy from "busboy";
import type { EnvdContext } from "../context.js";
import { HttpError, isErrnoException } from "../errors.js";
import {
  type Credentials,
  checkAccess,
  checkSearch,
  isMissing,
  W_OK,
  X_OK,
} from "../filesystem/access.js";
import { drainToFile } from "../filesystem/file-sink.js";
import {
  copyMetadata,
  metadataFromHeaders,
  readMetadata,
  writeMetadata,
} from "../filesystem/metadata.js";
import { ensureDirs } from "../filesystem/ops.js";
import { uploadTempPath } from "../filesystem/upload-temp.js";
import { resolveUserPath } from "../users.js";
import { authorizeFileRequest } from "./files-request.js";
import { sendJson } from "./respond.js";

/** One written file, in the upload response shape. */
export interface UploadedEntry {
  name: string;
  path: string;
  type: "file";
  metadata?: Record<string, string>;
}

/** E2B creates files 0666 under envd's 022 umask. */
const NEW_FILE_MODE = 0o644;

/**
 * `POST /files`: multipart (every part named `file`, its filename the destination unless the
 * `path` query names it) or a raw `application/octet-stream` body to `path`. The whole body may
 * be gzip (`Content-Encoding: gzip`). Everything streams; each file is written next to its
 * destination and renamed into place, so a failed upload leaves the old file (or none).
 */
export async function handleUpload(
  ctx: EnvdContext,
  req: IncomingMessage,
  res: ServerResponse,
  url: URL,
) {
  const file = authorizeFileRequest(ctx, req, url, "write");
  const metadata = metadataFromHeaders(req.headers);
  // Decoding starts only when a writer is ready to consume (and to hear about bad gzip).
  const body = () => decodedBody(req);
  // Aborts also surface through the pipelines reading the body; this keeps an abort before
  // any reader is attached from becoming an unhandled 'error'.
  req.on("error", (err) => ctx.log.warn("upload request failed", { err: String(err) }));
  const mediaType =
    (req.headers["content-type"] ?? "").split(";", 1)[0]?.trim().toLowerCase() ?? "";
  const resolve = (target: string) => resolveUserPath(target, file.user);
  const write = (dest: string, data: () => Readable) =>
    writeUpload(dest, data, file.creds, metadata);

  let entries: UploadedEntry[];
  try {
    if (mediaType === "application/octet-stream") {
      if (!file.rawPath)
        throw new HttpError(400, "path query parameter is required for raw body upload");
      const dest = resolve(file.rawPath);
      // A plain body goes straight from the socket to the file: one stream hop less per
      // 64 KiB under TCG (drainToFile never destroys it, and sees an abort as 'close').
      const plain = (req.headers["content-encoding"] ?? "identity").trim().toLowerCase();
      entries = [await write(dest, plain === "identity" || plain === "" ? () => req : body)];
    } else if (mediaType.startsWith("multipart/")) {
      entries = await multipartUpload(req, body(), file.rawPath, resolve, (dest, data) =>
        write(dest, () => data),
      );
    } else {
      throw new HttpError(
        400,
        `unsupported content type: ${mediaType || "(none)"}, expected multipart/form-data or application/octet-stream`,
      );
    }
  } catch (err) {
    // Responding before the body is read leaves it in the socket; discard it so a keep-alive
    // connection stays usable.
    // The body may be half-read: close the connection after the error response rather than
    // letting the client reuse it, and read the rest away so the response is not reset.
    res.setHeader("connection", "close");
    req.unpipe();
    req.resume();
    throw isZlibError(err)
      ? new HttpError(400, `invalid gzip body: ${(err as Error).message}`)
      : err;
  }
  if (entries.length === 0) throw new HttpError(400, "no file part named 'file' in the upload");
  sendJson(res, 200, entries);
}

function isZlibError(err: unknown): boolean {
  return /^Z_/.test(String((err as NodeJS.ErrnoException | undefined)?.code ?? ""));
}

/**
 * The request body, gunzipped when so encoded. Readers get a stream piped from the request
 * rather than the request itself, so a failing writer (ENOSPC) does not destroy the socket
 * before the error response is out; a client abort still fails the reader.
 */
function decodedBody(req: IncomingMessage): Readable {
  const encoding = (req.headers["content-encoding"] ?? "identity").trim().toLowerCase();
  let out: Readable & NodeJS.WritableStream;
  if (encoding === "identity" || encoding === "") out = new PassThrough();
  else if (encoding === "gzip") out = createGunzip();
  else throw new HttpError(400, `unsupported content encoding: ${encoding}`);
  req.on("close", () => {
    if (!req.complete) out.destroy(new Error("upload aborted before the body was complete"));
  });
  return req.pipe(out);
}

/** Parts are written one after the other, in order, as busboy hands them out. */
async function multipartUpload(
  req: IncomingMessage,
  body: Readable,
  queryPath: string | null,
  resolve: (target: string) => string,
  write: (dest: string, data: Readable) => Promise<UploadedEntry>,
): Promise<UploadedEntry[]> {
  const bb = busboy({
    headers: req.headers,
    // The filename is the destination path: keep its directories.
    preservePath: true,
    defParamCharset: "utf8",
    limits: { fields: 100, fieldSize: 64 * 1024, headerPairs: 100 },
  });
  const entries: UploadedEntry[] = [];
  const seen = new Set<string>();
  let failure: unknown;
  let chain: Promise<void> = Promise.resolve();

  bb.on("file", (field, stream, info) => {
    if (field !== "file" || failure !== undefined) {
      stream.resume();
      return;
    }
    chain = chain
      .then(async () => {
        if (failure !== undefined) {
          stream.resume();
          return;
        }
        const target = queryPath || info.filename;
        if (!target)
          throw new HttpError(400, "file part has no filename and no path query was given");
        const dest = resolve(target);
        if (seen.has(dest)) {
          throw new HttpError(
            400,
            `you cannot upload multiple files to the same path '${dest}' in one upload request`,
          );
        }
        seen.add(dest);
        entries.push(await write(dest, stream));
      })
      .catch((err: unknown) => {
        failure ??= err;
        stream.resume();
      });
  });

  const parsed = new Promise<void>((resolve, reject) => {
    bb.on("close", resolve);
    bb.on("error", (err: unknown) =>
      reject(
        new HttpError(
          400,
          `malformed multipart body: ${err instanceof Error ? err.message : String(err)}`,
        ),
      ),
    );
    body.on("error", (err) => reject(err));
  });
  body.pipe(bb);
  try {
    await parsed;
  } catch (err) {
    failure ??= err;
  }
  await chain;
  if (failure !== undefined) throw failure;
  return entries;
}

/**
 * Writes one uploaded file as the user: parents created and chowned, write permission checked
 * on the file (or its directory when new), data streamed into a temp file beside it, which
 * then gets the old file's mode and metadata (or 0644), the user as owner, the new metadata,
 * and is renamed over the destination. A symlinked destination is written through, as
 * open(2) would.
 */
export async function writeUpload(
  dest: string,
  data: () => Readable,
  creds: Credentials,
  metadata: Record<string, string>,
): Promise<UploadedEntry> {
  await checkSearch(dest, creds);
  let target = dest;
  let existing: Stats | undefined;
  try {
    existing = await lstat(dest);
    if (existing.isSymbolicLink()) {
      target = await realpath(dest);
      existing = await stat(target);
    }
  } catch (err) {
    // A dangling link is replaced by the file, which is what the user meant to write.
    if (!isMissing(err)) throw err;
    existing = undefined;
  }
  if (existing?.isDirectory()) throw new HttpError(400, `path '${dest}' is a directory`);
  if (existing && !existing.isFile())
    throw new HttpError(400, `path '${dest}' is not a regular file`);

  await ensureDirs(path.dirname(target), creds);
  if (existing) await checkAccess(target, W_OK, creds);
  else await checkAccess(path.dirname(target), W_OK | X_OK, creds);

  const tmp = uploadTempPath(target);
  try {
    const file = await open(tmp, "wx", 0o600);
    try {
      await drainToFile(data(), file);
    } finally {
      await file.close();
    }
    await chown(tmp, creds.uid, creds.gid);
    await chmod(tmp, existing ? existing.mode & 0o7777 : NEW_FILE_MODE);
    if (existing) await copyMetadata(target, tmp);
    await writeMetadata(tmp, metadata);
    await rename(tmp, target);
  } catch (err) {
    await rm(tmp, { force: true });
    if (isErrnoException(err) && (err.code === "ENOSPC" || err.code === "EDQUOT")) {
      throw new HttpError(507, `not enough disk space available to write '${dest}'`);
    }
    throw err;
  }
  const stored = await readMetadata(target);
  return {
    name: path.basename(dest),
    path: dest,
    type: "file",
    ...(Object.keys(stored).length > 0 ? { metadata: stored } : {}),
  };
}
