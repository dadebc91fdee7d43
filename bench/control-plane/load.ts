/** GET /v1/sandboxes load from a worker thread, so the clients do not share the server's loop. */
import { once } from "node:events";
import { Worker } from "node:worker_threads";

const LOAD_WORKER = `
const { parentPort, workerData: w } = require("node:worker_threads");
(async () => {
  const lat = [];
  let errors = 0;
  let bytes = 0;
  const end = Date.now() + w.durationMs;
  await Promise.all(Array.from({ length: w.clients }, async () => {
    while (Date.now() < end) {
      const t0 = performance.now();
      try {
        const r = await fetch(w.url, { headers: { "X-API-Key": w.key } });
        const b = await r.arrayBuffer();
        bytes += b.byteLength;
        if (r.status !== 200) errors++;
      } catch (e) {
        errors++;
      }
      lat.push(performance.now() - t0);
    }
  }));
  parentPort.postMessage({ lat, errors, bytes });
})();
`;

interface LoadResult {
  lat: number[];
  errors: number;
  bytes: number;
}

export async function load(url: string, key: string, clients: number, durationMs: number) {
  const worker = new Worker(LOAD_WORKER, {
    eval: true,
    workerData: { url, key, clients, durationMs },
  });
  try {
    const [r] = (await once(worker, "message")) as [LoadResult];
    return r;
  } finally {
    await worker.terminate();
  }
}
