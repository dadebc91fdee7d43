import { randomBytes } from "node:crypto";
import path from "node:path";

/**
 * Uploads are written to a hidden temp file next to the destination and renamed into place, so
 * a failed upload never leaves a half-written file. Watchers hide these names and report the
 * final rename as the write E2B's in-place upload would have produced.
 */
const UPLOAD_TEMP_RE = /^\.nestbox-upload-[0-9a-f]{16}\.tmp$/;

export function uploadTempPath(destination: string): string {
  return path.join(
    path.dirname(destination),
    `.nestbox-upload-${randomBytes(8).toString("hex")}.tmp`,
  );
}

export function isUploadTemp(p: string): boolean {
  return UPLOAD_TEMP_RE.test(path.basename(p));
}
