import { readFileSync } from "node:fs";
import path from "node:path";

export const DEFAULT_API_URL = "http://127.0.0.1:3000";
export const DEFAULT_NESTBOX_DIR = "/var/lib/nestbox";

export interface ClientOptions {
  /** The control plane's base URL, without `/v1` (default `NESTBOX_API_URL`, else http://127.0.0.1:3000). */
  apiUrl?: string;
  /** `nbx_…` (default `NESTBOX_API_KEY`, else the all-in-one admin key in `$NESTBOX_DIR/admin-api-key`). */
  apiKey?: string;
}

export interface ResolvedOptions {
  apiUrl: string;
  apiKey: string | undefined;
  /** Where the key came from, for messages ("NESTBOX_API_KEY", a file path, "option"). */
  apiKeySource: string | undefined;
}

/**
 * Fills in what the caller left out from the environment. The admin key file is what
 * `nestbox up` writes, so on the all-in-one box the CLI works without any setup; an unreadable
 * file simply means "no key" (the server then answers 401 with a clear message).
 */
export function resolveClientOptions(
  opts: ClientOptions = {},
  env: NodeJS.ProcessEnv = process.env,
): ResolvedOptions {
  const rawUrl = opts.apiUrl ?? (env.NESTBOX_API_URL || DEFAULT_API_URL);
  let url: URL;
  try {
    url = new URL(rawUrl);
  } catch {
    throw new TypeError(`the API URL is not a URL: ${rawUrl}`);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:")
    throw new TypeError(`the API URL must be http(s): ${rawUrl}`);
  const apiUrl = url.toString().replace(/\/+$/, "");

  if (opts.apiKey !== undefined) return { apiUrl, apiKey: opts.apiKey, apiKeySource: "option" };
  if (env.NESTBOX_API_KEY)
    return { apiUrl, apiKey: env.NESTBOX_API_KEY.trim(), apiKeySource: "NESTBOX_API_KEY" };
  const file = path.join(env.NESTBOX_DIR || DEFAULT_NESTBOX_DIR, "admin-api-key");
  try {
    const key = readFileSync(file, "utf8").trim();
    if (key) return { apiUrl, apiKey: key, apiKeySource: file };
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    // Missing or not ours to read: run without a key. Anything else is worth knowing about.
    if (code !== "ENOENT" && code !== "EACCES" && code !== "ENOTDIR")
      throw new Error(`cannot read the API key file ${file}: ${(err as Error).message}`);
  }
  return { apiUrl, apiKey: undefined, apiKeySource: undefined };
}
