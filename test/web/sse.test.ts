/** The dashboard's event-stream parser, fed the way a network delivers bytes: in odd chunks. */
import assert from "node:assert/strict";
import { test } from "node:test";
import { parseSse } from "../../packages/web/src/lib/api/sse.js";

const streamOf = (chunks: string[]) =>
  new ReadableStream<Uint8Array>({
    start(c) {
      for (const s of chunks) c.enqueue(new TextEncoder().encode(s));
      c.close();
    },
  });

test("events split across chunks, comments, CRLF, multi-line data and retry", async () => {
  const wire =
    'retry: 2000\n\n: ping\n\nevent: sandbox\ndata: {"type":"created",\r\ndata: "n":1}\r\n\r\nevent: sandbox\ndata: é\n\n';
  const bytes = new TextEncoder().encode(wire);
  // Cut in the middle of the two-byte "é" and of the CRLF pairs.
  const cut = [7, 20, 41, 60, bytes.length - 3, bytes.length - 2];
  const chunks: Uint8Array[] = [];
  let from = 0;
  for (const at of cut) {
    chunks.push(bytes.slice(from, at));
    from = at;
  }
  chunks.push(bytes.slice(from));
  const body = new ReadableStream<Uint8Array>({
    start(c) {
      for (const ch of chunks) c.enqueue(ch);
      c.close();
    },
  });
  const got = [];
  for await (const m of parseSse(body)) got.push(m);
  assert.deepEqual(got, [
    { event: "message", data: "", retry: 2000 },
    { event: "sandbox", data: '{"type":"created",\n"n":1}' },
    { event: "sandbox", data: "é" },
  ]);
});

test("a stream that ends mid-event yields nothing for it", async () => {
  const got = [];
  for await (const m of parseSse(streamOf(["event: sandbox\ndata: {}"]))) got.push(m);
  assert.deepEqual(got, []);
});
