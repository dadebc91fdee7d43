import { z } from "@hono/zod-openapi";
import { streamSSE } from "hono/streaming";
import { requireCaller } from "../../auth/middleware.js";
import { getSandbox } from "../../db/queries/sandboxes.js";
import type { SandboxChange, SandboxEvents } from "../../services/sandbox-events.js";
import { newRouter, type RouteModule } from "../app.js";
import type { AppDeps } from "../context.js";
import { errorResponses } from "../schemas.js";
import { SandboxSchema, sandboxView } from "./sandboxes.js";

/**
 * `GET /v1/events`: the caller's team's sandbox events as server-sent events, so the dashboard
 * updates without polling. Each is `event: sandbox` with `data: {"type","sandbox"}`; `type`
 * is `created`, `status` (any other status change) or `destroyed` (now `stopped`). A comment
 * every 15 s keeps proxies from closing an idle stream; `retry: 2000` sets the reconnect delay.
 * Events that happen while a client is disconnected are not replayed: it re-reads the list
 * when it reconnects, and when the server sends `event: resync` (the server's own feed from
 * the database was cut off, so events may be missing from an open stream too).
 */

const PING_MS = 15_000;
/** A client this far behind is dropped (it reconnects and re-reads) rather than buffered. */
const MAX_QUEUED = 1000;

export const SandboxEventSchema = z
  .object({ type: z.enum(["created", "status", "destroyed"]), sandbox: SandboxSchema })
  .openapi("SandboxEvent");

const eventType = (c: SandboxChange) =>
  c.op === "insert" ? "created" : c.status === "stopped" ? "destroyed" : "status";

export const eventRoutes =
  (events: SandboxEvents): RouteModule =>
  (deps: AppDeps) => {
    const r = newRouter();
    r.openAPIRegistry.registerPath({
      method: "get",
      path: "/events",
      summary: "Live sandbox events of the caller's team (text/event-stream)",
      description:
        "Server-sent events: `event: sandbox`, `data:` a SandboxEvent. Not replayed across reconnects: a client re-reads the list when it reconnects, and on `event: resync` (events may have been missed).",
      tags: ["sandboxes"],
      security: [{ apiKey: [] }, { bearer: [] }],
      responses: {
        200: {
          description: "The stream",
          content: { "text/event-stream": { schema: SandboxEventSchema } },
        },
        401: errorResponses[401],
      },
    });
    r.get("/events", requireCaller(deps, { apiKey: true }), async (c) => {
      const teamId = c.get("caller").teamId;
      return streamSSE(c, async (stream) => {
        let queued = 0;
        let chain = Promise.resolve();
        let stop: () => void = () => {};
        const done = new Promise<void>((resolve) => {
          stop = resolve;
        });
        stream.onAbort(() => stop());
        // Hono sees a closed body only on a write; the request's signal says so at once (and is
        // all an in-process caller such as `app.request` has).
        c.req.raw.signal.addEventListener("abort", () => stop(), { once: true });
        const send = (write: () => Promise<void>) => {
          if (++queued > MAX_QUEUED) {
            stop();
            return;
          }
          chain = chain
            .then(write)
            .catch((err: unknown) => {
              // The client went away mid-write, or the row could not be read: end the stream;
              // the client reconnects and re-reads.
              if (!stream.aborted) console.error(`[server] events for team ${teamId}:`, err);
              stop();
            })
            .finally(() => {
              queued--;
            });
        };
        const unsubscribe = await events.subscribe(
          teamId,
          (change) =>
            send(async () => {
              const row = await getSandbox(deps.db, teamId, change.id);
              if (!row || stream.aborted) return;
              await stream.writeSSE({
                event: "sandbox",
                data: JSON.stringify({ type: eventType(change), sandbox: sandboxView(row) }),
              });
            }),
          () => send(() => stream.writeSSE({ event: "resync", data: "{}" })),
        );
        const ping = setInterval(
          () => send(() => stream.write(": ping\n\n").then(() => {})),
          PING_MS,
        );
        try {
          await stream.write("retry: 2000\n\n");
          await done;
        } finally {
          clearInterval(ping);
          unsubscribe();
        }
      });
    });
    return r;
  };
