/** A text/event-stream parser for fetch bodies (no imports: the tests load it directly). */

export interface SseMessage {
  event: string;
  data: string;
  retry?: number;
}

/** The messages of a text/event-stream body (comments such as `: ping` are skipped). */
export async function* parseSse(body: ReadableStream<Uint8Array>): AsyncGenerator<SseMessage> {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buf = "";
  let msg: SseMessage = { event: "message", data: "" };
  try {
    yield* messages();
  } finally {
    // A consumer that stops early (`return()`, `break`) closes the stream, so the server's
    // side ends too instead of writing to nobody.
    await reader.cancel();
  }

  async function* messages(): AsyncGenerator<SseMessage> {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buf += decoder.decode(value, { stream: true });
      let nl = buf.search(/\r?\n/);
      while (nl >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(buf[nl] === "\r" ? nl + 2 : nl + 1);
        if (line === "") {
          if (msg.data || msg.retry) yield msg;
          msg = { event: "message", data: "" };
        } else if (!line.startsWith(":")) {
          const i = line.indexOf(":");
          const field = i < 0 ? line : line.slice(0, i);
          const val = i < 0 ? "" : line.slice(i + 1).replace(/^ /, "");
          if (field === "event") msg.event = val;
          else if (field === "data") msg.data = msg.data ? `${msg.data}\n${val}` : val;
          else if (field === "retry" && /^\d+$/.test(val)) msg.retry = Number(val);
        }
        nl = buf.search(/\r?\n/);
      }
    }
  }
}
