/**
 * envd file transfer: throughput and envd's memory growth for a large upload and download
 * through the real e2b SDK, next to a raw baseline (the same bytes written and read with plain
 * Node streams on the same disk, in the same run). Target: envd RSS growth < 64 MiB at 1 GiB.
 *
 *   node --import tsx bench/files-transfer.ts [--size-mib 1024]
 */
import { createReadStream, createWriteStream, mkdtempSync, rmSync, statSync } from "node:fs";
import path from "node:path";
import { Readable, Writable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { parseArgs } from "node:util";
import { launchEnvd } from "@nestbox/cli/launch";
import { MiB, printTable, rssBytes, sampleRss, writeResult } from "./lib.js";
import { sandboxOnEnvd } from "./support/envd-sdk.js";

const { values } = parseArgs({ options: { "size-mib": { type: "string", default: "1024" } } });
const sizeMiB = Number(values["size-mib"]);
if (!Number.isInteger(sizeMiB) || sizeMiB < 1 || sizeMiB > 8192) {
  throw new Error("--size-mib must be an integer 1-8192");
}
const total = sizeMiB * MiB;
const LIMIT_MIB = 64;

/** A bounded stream of `size` bytes made from one 1 MiB pattern (no big allocation). */
function pattern(size: number): ReadableStream<Uint8Array> {
  const block = Buffer.alloc(MiB);
  for (let i = 0; i < block.length; i++) block[i] = (i * 31 + 7) & 0xff;
  let sent = 0;
  return new ReadableStream({
    pull(ctrl) {
      if (sent >= size) {
        ctrl.close();
        return;
      }
      const n = Math.min(MiB, size - sent);
      ctrl.enqueue(new Uint8Array(block.subarray(0, n)));
      sent += n;
    },
  });
}

async function timed<T>(fn: () => Promise<T>): Promise<{ seconds: number; value: T }> {
  const t0 = process.hrtime.bigint();
  const value = await fn();
  return { seconds: Number(process.hrtime.bigint() - t0) / 1e9, value };
}

const work = mkdtempSync("/tmp/nbx-bench-files-");
const envd = await launchEnvd(["--quiet", "--default-user", "root"]);
try {
  const pid = envd.child.pid;
  if (pid === undefined) throw new Error("envd has no pid");
  const sbx = sandboxOnEnvd(envd.url);
  // Warm up the code paths so lazy initialisation is not counted as transfer memory.
  await sbx.files.write(path.join(work, "warm.bin"), pattern(4 * MiB));
  await sbx.files.read(path.join(work, "warm.bin"), { format: "bytes" });
  const rssBefore = rssBytes(pid);

  // Raw baseline: the same bytes through plain Node streams to and from the same disk.
  const rawFile = path.join(work, "raw.bin");
  const rawWrite = await timed(() =>
    pipeline(Readable.fromWeb(pattern(total) as never), createWriteStream(rawFile)),
  );
  const rawRead = await timed(() =>
    pipeline(createReadStream(rawFile), new Writable({ write: (_c, _e, cb) => cb() })),
  );
  rmSync(rawFile);

  const target = path.join(work, "upload.bin");
  const upSampler = sampleRss(pid);
  const up = await timed(() => sbx.files.write(target, pattern(total)));
  const upPeak = upSampler.stop();
  if (statSync(target).size !== total)
    throw new Error(`uploaded ${statSync(target).size} bytes, expected ${total}`);

  const downSampler = sampleRss(pid);
  const down = await timed(async () => {
    const stream = await sbx.files.read(target, { format: "stream" });
    let n = 0;
    for await (const chunk of stream as unknown as AsyncIterable<Uint8Array>) n += chunk.length;
    return n;
  });
  const downPeak = downSampler.stop();
  if (down.value !== total) throw new Error(`downloaded ${down.value} bytes, expected ${total}`);

  // The same download without compression, to separate gzip's cost from envd's streaming.
  const identitySampler = sampleRss(pid);
  const identity = await timed(async () => {
    const res = await fetch(`${envd.url}/files?path=${encodeURIComponent(target)}`, {
      headers: { "accept-encoding": "identity" },
    });
    if (!res.ok || !res.body) throw new Error(`download failed: ${res.status}`);
    let n = 0;
    for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) n += chunk.length;
    return n;
  });
  const identityPeak = identitySampler.stop();
  if (identity.value !== total)
    throw new Error(`downloaded ${identity.value} bytes, expected ${total}`);

  const mibps = (s: number) => Math.round((sizeMiB / s) * 10) / 10;
  const growth = (peak: number) => Math.round(((peak - rssBefore) / MiB) * 10) / 10;
  const rows = [
    {
      op: "upload (files.write stream)",
      MiB: sizeMiB,
      seconds: up.seconds.toFixed(2),
      "MiB/s": mibps(up.seconds),
      "raw MiB/s": mibps(rawWrite.seconds),
      "envd RSS growth MiB": growth(upPeak),
      [`< ${LIMIT_MIB} MiB`]: growth(upPeak) < LIMIT_MIB ? "yes" : "NO",
    },
    {
      op: "download (files.read stream)",
      MiB: sizeMiB,
      seconds: down.seconds.toFixed(2),
      "MiB/s": mibps(down.seconds),
      "raw MiB/s": mibps(rawRead.seconds),
      "envd RSS growth MiB": growth(downPeak),
      [`< ${LIMIT_MIB} MiB`]: growth(downPeak) < LIMIT_MIB ? "yes" : "NO",
    },
    {
      op: "download (HTTP, no gzip)",
      MiB: sizeMiB,
      seconds: identity.seconds.toFixed(2),
      "MiB/s": mibps(identity.seconds),
      "raw MiB/s": mibps(rawRead.seconds),
      "envd RSS growth MiB": growth(identityPeak),
      [`< ${LIMIT_MIB} MiB`]: growth(identityPeak) < LIMIT_MIB ? "yes" : "NO",
    },
  ];
  printTable(rows);
  const file = writeResult("files-transfer", {
    date: new Date().toISOString(),
    sizeBytes: total,
    envdRssBeforeBytes: rssBefore,
    limitMiB: LIMIT_MIB,
    upload: { seconds: up.seconds, peakRssBytes: upPeak, rawSeconds: rawWrite.seconds },
    download: { seconds: down.seconds, peakRssBytes: downPeak, rawSeconds: rawRead.seconds },
    downloadIdentity: { seconds: identity.seconds, peakRssBytes: identityPeak },
  });
  console.log(`\nwritten ${file}`);
  if ([upPeak, downPeak, identityPeak].some((p) => growth(p) >= LIMIT_MIB)) process.exitCode = 1;
} finally {
  await envd.stop();
  rmSync(work, { recursive: true, force: true });
}
