/**
 * File transfers the typed client cannot do: uploads with progress (fetch has no upload
 * progress, XMLHttpRequest does), downloads as blobs, and previews that read at most the first
 * MiB of a file and then cancel the stream (the download route has no ranges).
 */
import { ApiError, authedFetch, errorFrom } from "$lib/api/client";
import { session } from "$lib/api/session.svelte";

export const PREVIEW_LIMIT = 1 << 20;

const fileUrl = (sandboxId: string, path: string) =>
  `${location.origin}/v1/sandboxes/${encodeURIComponent(sandboxId)}/files?path=${encodeURIComponent(path)}`;

export const joinPath = (dir: string, name: string) =>
  dir.endsWith("/") ? `${dir}${name}` : `${dir}/${name}`;

export const parentOf = (path: string) => path.replace(/\/[^/]+\/?$/, "") || "/";

/** Uploads `file` to `path` (raw PUT); `progress` gets 0…1. */
export async function upload(
  sandboxId: string,
  path: string,
  file: Blob,
  progress: (fraction: number) => void,
): Promise<void> {
  const once = () =>
    new Promise<{ status: number; body: string }>((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      xhr.open("PUT", fileUrl(sandboxId, path));
      xhr.setRequestHeader("Content-Type", "application/octet-stream");
      if (session.token) xhr.setRequestHeader("Authorization", `Bearer ${session.token}`);
      xhr.upload.onprogress = (e) => {
        if (e.lengthComputable && e.total > 0) progress(e.loaded / e.total);
      };
      xhr.onload = () => resolve({ status: xhr.status, body: xhr.responseText });
      xhr.onerror = () => reject(new ApiError(0, "unreachable", "the upload failed (network)"));
      xhr.onabort = () => reject(new ApiError(0, "aborted", "the upload was aborted"));
      xhr.send(file);
    });
  let res = await once();
  // An expired access token: one refresh through the cookie, then one more try.
  if (res.status === 401 && (await session.refresh())) res = await once();
  if (res.status >= 200 && res.status < 300) {
    progress(1);
    return;
  }
  let body: unknown = null;
  try {
    body = JSON.parse(res.body);
  } catch (err) {
    console.warn("upload: error body is not JSON", err);
  }
  throw errorFrom(res.status, body);
}

async function get(sandboxId: string, path: string): Promise<Response> {
  const res = await authedFetch(new Request(fileUrl(sandboxId, path)));
  if (!res.ok) throw errorFrom(res.status, await res.json().catch(() => null), res.statusText);
  return res;
}

/** Saves the file through an object URL and a temporary link. */
export async function download(sandboxId: string, path: string): Promise<void> {
  const blob = await (await get(sandboxId, path)).blob();
  const url = URL.createObjectURL(blob);
  const a = document.createElement("a");
  a.href = url;
  a.download = path.split("/").pop() || "file";
  document.body.append(a);
  a.click();
  a.remove();
  // Give the browser a moment to start the save before the URL goes away.
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

/** The first PREVIEW_LIMIT bytes of the file, and whether there was more. */
export async function head(
  sandboxId: string,
  path: string,
): Promise<{ bytes: Uint8Array; truncated: boolean }> {
  const res = await get(sandboxId, path);
  const reader = res.body?.getReader();
  if (!reader) return { bytes: new Uint8Array(await res.arrayBuffer()), truncated: false };
  const parts: Uint8Array[] = [];
  let size = 0;
  let truncated = false;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    parts.push(value);
    size += value.length;
    if (size >= PREVIEW_LIMIT) {
      truncated = size > PREVIEW_LIMIT || !(await reader.read()).done;
      await reader.cancel();
      break;
    }
  }
  const bytes = new Uint8Array(Math.min(size, PREVIEW_LIMIT));
  let off = 0;
  for (const p of parts) {
    const take = p.subarray(0, bytes.length - off);
    bytes.set(take, off);
    off += take.length;
    if (off >= bytes.length) break;
  }
  return { bytes, truncated };
}

/** A highlight.js language for a file name, or null for plain text. */
export function languageOf(name: string): string | null {
  const ext = name.toLowerCase().split(".").pop() ?? "";
  const map: Record<string, string> = {
    js: "javascript",
    mjs: "javascript",
    cjs: "javascript",
    jsx: "javascript",
    ts: "typescript",
    tsx: "typescript",
    json: "json",
    py: "python",
    sh: "bash",
    bash: "bash",
    yml: "yaml",
    yaml: "yaml",
    md: "markdown",
  };
  if (name === ".bashrc" || name === ".profile") return "bash";
  return map[ext] ?? null;
}

export function size(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let v = bytes / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v < 10 ? v.toFixed(1) : Math.round(v)} ${units[i]}`;
}
