import type { FileHandle } from "node:fs/promises";
import type { Readable } from "node:stream";

/** Bytes gathered before one write: a socket hands over at most 64 KiB per read. */
const BATCH_BYTES = 1024 * 1024;

/**
 * Drains `source` into `file`, a megabyte per write. Under TCG every stream hop and every
 * thread-pool round trip per 64 KiB chunk costs emulated CPU; a plain `pipeline` into a
 * `WriteStream` spent about twice what the same upload costs a minimal server.
 *
 * Chunks are copied into two reused 1 MiB buffers (one filling while the other is written)
 * rather than kept until their write: kept chunks outlive V8's young generation, and the
 * process then holds tens of MiB of dead socket buffers until a full collection.
 *
 * The source is never destroyed here: on a write error it is only left (paused) for the caller
 * to discard, so an HTTP request body can still be read away before the error response.
 */
export function drainToFile(source: Readable, file: FileHandle): Promise<void> {
  return new Promise((resolve, reject) => {
    let filling: Buffer = Buffer.allocUnsafe(BATCH_BYTES);
    let spare: Buffer | undefined = Buffer.allocUnsafe(BATCH_BYTES);
    let used = 0;
    /** The part of a chunk that found both buffers taken; the source is paused meanwhile. */
    let held: Buffer | undefined;
    let writing = false;
    let ended = false;
    let settled = false;

    const finish = (err?: unknown) => {
      if (settled) return;
      settled = true;
      source.off("data", onData);
      source.off("end", onEnd);
      source.off("error", finish);
      source.off("close", onClose);
      if (err === undefined) resolve();
      else {
        source.pause();
        reject(err);
      }
    };
    /** Writes the filling buffer if the other one is free; true when it was handed over. */
    const flush = (): boolean => {
      if (writing || settled || !spare) return false;
      const full = filling.subarray(0, used);
      const written = filling;
      filling = spare;
      spare = undefined;
      used = 0;
      writing = true;
      writeAll(file, full).then(() => {
        spare = written;
        writing = false;
        if (ended) {
          if (used > 0) flush();
          else finish();
        } else if (used === BATCH_BYTES) {
          flush();
          const rest = held;
          held = undefined;
          if (rest) onData(rest);
          if (!held) source.resume();
        }
      }, finish);
      return true;
    };
    const onData = (chunk: Buffer) => {
      let offset = 0;
      while (offset < chunk.length) {
        const n = chunk.copy(filling, used, offset);
        used += n;
        offset += n;
        if (used === BATCH_BYTES && !flush()) {
          // Both buffers are taken: keep the rest of this chunk and wait for the write.
          if (offset < chunk.length) held = chunk.subarray(offset);
          source.pause();
          return;
        }
      }
    };
    const onEnd = () => {
      ended = true;
      if (writing) return;
      if (used > 0) flush();
      else finish();
    };
    // A source torn down without 'end' (a client that went away) must not look like a
    // complete file.
    const onClose = () => {
      if (!ended) finish(new Error("the upload stream closed before its end"));
    };
    source.on("data", onData);
    source.on("end", onEnd);
    source.on("error", finish);
    source.on("close", onClose);
  });
}

/** One write of `data`, repeated for whatever a short write left over. */
async function writeAll(file: FileHandle, data: Buffer): Promise<void> {
  let rest = data;
  while (rest.length > 0) {
    const { bytesWritten } = await file.write(rest, 0, rest.length);
    if (bytesWritten === 0) throw new Error("the file accepted no bytes");
    rest = rest.subarray(bytesWritten);
  }
}
