import { Readable } from "node:stream";
import type { ReadableStream as NodeReadableStream } from "node:stream/web";
import { seg, type Transport } from "./http.js";
import type { FileEntry } from "./types.js";

/** What an upload can read from: bytes, text, or a stream of any kind (read once, not buffered). */
export type UploadSource =
  | Uint8Array
  | string
  | Readable
  | ReadableStream<Uint8Array>
  | AsyncIterable<Uint8Array>;

function bodyOf(data: UploadSource): NonNullable<RequestInit["body"]> {
  if (typeof data === "string" || data instanceof Uint8Array) return data;
  if (data instanceof ReadableStream) return data;
  const readable = data instanceof Readable ? data : Readable.from(data, { objectMode: false });
  return Readable.toWeb(readable) as unknown as ReadableStream<Uint8Array>;
}

const query = (path: string) => `?path=${encodeURIComponent(path)}`;

/** Files in a running sandbox; paths are absolute. */
export class Files {
  constructor(private readonly t: Transport) {}

  /**
   * Streams `data` into `path` (parents are created; an existing file is replaced once the upload
   * completes). No size limit: a stream is sent as it is read.
   */
  async upload(
    id: string,
    path: string,
    data: UploadSource,
    opts: {
      signal?: AbortSignal /** Owner of the file (default: user; root writes anywhere). */;
      user?: string;
    } = {},
  ): Promise<FileEntry> {
    const body = bodyOf(data);
    const as = opts.user ? `&user=${encodeURIComponent(opts.user)}` : "";
    const res = await this.t.fetch(`/v1/sandboxes/${seg(id)}/files${query(path)}${as}`, {
      method: "PUT",
      headers: { "content-type": "application/octet-stream" },
      body,
      signal: opts.signal,
      // Node's fetch sends a stream body only half-duplex, and insists on being told so.
      ...(body instanceof ReadableStream ? { duplex: "half" } : {}),
    } as RequestInit);
    return (await res.json()) as FileEntry;
  }

  /** The file's bytes as they arrive (cancel the stream to stop the transfer). */
  async download(
    id: string,
    path: string,
    opts: { signal?: AbortSignal } = {},
  ): Promise<ReadableStream<Uint8Array>> {
    const res = await this.t.fetch(`/v1/sandboxes/${seg(id)}/files${query(path)}`, {
      signal: opts.signal,
    });
    return res.body ?? new ReadableStream<Uint8Array>({ start: (c) => c.close() });
  }

  /** The whole file in memory (for small files; use download for big ones). */
  async read(id: string, path: string, opts: { signal?: AbortSignal } = {}): Promise<Buffer> {
    const stream = await this.download(id, path, opts);
    const parts: Buffer[] = [];
    for await (const chunk of stream as unknown as NodeReadableStream<Uint8Array>)
      parts.push(Buffer.from(chunk));
    return Buffer.concat(parts);
  }

  /** Entries under `path`, `depth` levels deep (1 = the directory's own entries). */
  async list(
    id: string,
    path: string,
    opts: { depth?: number; signal?: AbortSignal } = {},
  ): Promise<FileEntry[]> {
    const { entries } = await this.t.call(
      this.t.api.GET("/v1/sandboxes/{id}/files/list", {
        params: { path: { id }, query: { path, depth: opts.depth } },
        signal: opts.signal,
      }),
    );
    return entries;
  }

  stat(id: string, path: string, signal?: AbortSignal): Promise<FileEntry> {
    return this.t.call(
      this.t.api.GET("/v1/sandboxes/{id}/files/stat", {
        params: { path: { id }, query: { path } },
        signal,
      }),
    );
  }

  /** Creates the directory and its parents. */
  mkdir(id: string, path: string, signal?: AbortSignal): Promise<FileEntry> {
    return this.t.call(
      this.t.api.POST("/v1/sandboxes/{id}/files/mkdir", {
        params: { path: { id } },
        body: { path },
        signal,
      }),
    );
  }

  move(id: string, source: string, destination: string, signal?: AbortSignal): Promise<FileEntry> {
    return this.t.call(
      this.t.api.POST("/v1/sandboxes/{id}/files/move", {
        params: { path: { id } },
        body: { source, destination },
        signal,
      }),
    );
  }

  /** Removes a file, or a directory with everything in it. */
  async remove(id: string, path: string, signal?: AbortSignal): Promise<void> {
    await this.t.call(
      this.t.api.DELETE("/v1/sandboxes/{id}/files", {
        params: { path: { id }, query: { path } },
        signal,
      }),
    );
  }
}
