import type { IncomingHttpHeaders } from "node:http";
import { getAttribute, listAttributes, setAttribute } from "fs-xattr";
import { HttpError } from "../errors.js";

/**
 * File metadata lives in the `user.` xattr namespace, as in E2B's envd: a key `k` is the xattr
 * `user.k`, so metadata set with `setfattr -n user.k` inside the sandbox shows up too.
 */
export const METADATA_XATTR_PREFIX = "user.";
const HEADER_PREFIX = "x-metadata-";
/** HTTP token characters, the rule the SDK validates keys with. */
const KEY_RE = /^[A-Za-z0-9!#$%&'*+\-.^_`|~]+$/;

/** Filesystems without user xattrs (some tmpfs, overlay setups) simply have no metadata. */
function isUnsupported(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  return code === "ENOTSUP" || code === "EOPNOTSUPP";
}

function isGone(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  return code === "ENOENT" || code === "ENODATA" || code === "ENOTDIR" || code === "ELOOP";
}

/** Reads the metadata of `p` (following symlinks); empty when there is none or it vanished. */
export async function readMetadata(p: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  let names: string[];
  try {
    names = await listAttributes(p);
  } catch (err) {
    if (isUnsupported(err) || isGone(err)) return out;
    throw err;
  }
  for (const name of names) {
    if (!name.startsWith(METADATA_XATTR_PREFIX)) continue;
    try {
      out[name.slice(METADATA_XATTR_PREFIX.length)] = (await getAttribute(p, name)).toString(
        "utf8",
      );
    } catch (err) {
      // Removed between list and get: report the rest, as a listing would.
      if (isGone(err)) continue;
      throw err;
    }
  }
  return out;
}

/** Sets each key; keys not named are left as they are. */
export async function writeMetadata(p: string, metadata: Record<string, string>): Promise<void> {
  for (const [key, value] of Object.entries(metadata)) {
    await setAttribute(p, METADATA_XATTR_PREFIX + key, value);
  }
}

/** Copies every metadata xattr, so replacing a file by rename keeps what was set on it. */
export async function copyMetadata(from: string, to: string): Promise<void> {
  const existing = await readMetadata(from);
  if (Object.keys(existing).length > 0) await writeMetadata(to, existing);
}

/**
 * `X-Metadata-<key>: <value>` request headers as a metadata map. Node already lowercases
 * header names, which is the key normalisation E2B documents.
 */
export function metadataFromHeaders(headers: IncomingHttpHeaders): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [name, raw] of Object.entries(headers)) {
    if (!name.startsWith(HEADER_PREFIX)) continue;
    const key = name.slice(HEADER_PREFIX.length).toLowerCase();
    if (!KEY_RE.test(key)) throw new HttpError(400, `invalid metadata key ${JSON.stringify(key)}`);
    const value = Array.isArray(raw) ? raw.join(", ") : (raw ?? "");
    out[key] = value;
  }
  return out;
}
