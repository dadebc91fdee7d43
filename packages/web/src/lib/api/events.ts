/**
 * GET /v1/events read with fetch streaming (EventSource cannot send the bearer header). Calls
 * `onEvent` for each `sandbox` event and reconnects after `retry` ms; resolves "unavailable"
 * when the server has no event stream (404), so the page falls back to manual refresh.
 * Events are not replayed: `onResync` asks the page to re-read what it shows, after every
 * reconnect and when the server says it may have missed some (`event: resync`).
 */
import type { Sandbox } from "./client";
import { authedFetch } from "./client";
import { parseSse } from "./sse";

export interface SandboxEvent {
  type: "created" | "status" | "destroyed";
  sandbox: Sandbox;
}

export type StreamState = "connecting" | "live" | "unavailable" | "closed";

export function streamEvents(
  onEvent: (e: SandboxEvent) => void,
  onState: (s: StreamState) => void,
  onResync: () => void = () => {},
): () => void {
  const abort = new AbortController();
  let retryMs = 2000;
  let wasLive = false;
  const run = async () => {
    while (!abort.signal.aborted) {
      onState("connecting");
      let res: Response;
      try {
        res = await authedFetch(
          new Request(`${location.origin}/v1/events`, {
            headers: { Accept: "text/event-stream" },
            signal: abort.signal,
          }),
        );
      } catch {
        if (abort.signal.aborted) break;
        await sleep(retryMs, abort.signal);
        continue;
      }
      if (res.status === 404 || res.status === 401 || res.status === 403) {
        onState("unavailable");
        return;
      }
      if (!res.ok || !res.body) {
        await sleep(retryMs, abort.signal);
        continue;
      }
      onState("live");
      if (wasLive) onResync();
      wasLive = true;
      try {
        for await (const msg of parseSse(res.body)) {
          if (msg.retry) retryMs = msg.retry;
          if (msg.event === "resync") onResync();
          if (msg.event !== "sandbox" || !msg.data) continue;
          try {
            onEvent(JSON.parse(msg.data) as SandboxEvent);
          } catch (err) {
            console.warn("events: bad event", err);
          }
        }
      } catch (err) {
        if (!abort.signal.aborted) console.warn("events: stream broke", err);
      }
      if (!abort.signal.aborted) await sleep(retryMs, abort.signal);
    }
    onState("closed");
  };
  void run();
  return () => abort.abort();
}

const sleep = (ms: number, signal: AbortSignal) =>
  new Promise<void>((resolve) => {
    const t = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => {
      clearTimeout(t);
      resolve();
    });
  });
