import { createRoute, z } from "@hono/zod-openapi";
import { requireCaller } from "../../auth/middleware.js";
import { runningSeries, teamUsageNow } from "../../db/queries/usage.js";
import { newRouter, type RouteModule } from "../app.js";
import type { AppDeps } from "../context.js";
import { errorResponses } from "../schemas.js";

/** `GET /v1/usage`: what the team runs now and a 24-hour chart of running sandboxes. */

const HOURS = 24;
const BUCKET_MIN = 5;

const UsageSchema = z
  .object({
    running: z.number().int(),
    paused: z.number().int(),
    /** vCPUs and memory of the running sandboxes (paused ones hold none). */
    vcpus_reserved: z.number().int(),
    memory_mb_reserved: z.number().int(),
    bucket_minutes: z.number().int(),
    /** Sandboxes running at any moment of each bucket starting at `t`, oldest first. */
    series: z.array(
      z.object({ t: z.string().openapi({ format: "date-time" }), running: z.number().int() }),
    ),
  })
  .openapi("Usage");

export const usageRoutes: RouteModule = (deps: AppDeps) => {
  const r = newRouter();
  r.openapi(
    createRoute({
      method: "get",
      path: "/usage",
      summary: "The team's sandboxes now and running sandboxes over the last 24 hours",
      tags: ["sandboxes"],
      middleware: [requireCaller(deps, { apiKey: true })] as const,
      security: [{ apiKey: [] }, { bearer: [] }],
      responses: {
        200: { description: "Usage", content: { "application/json": { schema: UsageSchema } } },
        401: errorResponses[401],
      },
    }),
    async (c) => {
      const teamId = c.get("caller").teamId;
      const [now, series] = await Promise.all([
        teamUsageNow(deps.db, teamId),
        runningSeries(deps.db, teamId, HOURS, BUCKET_MIN),
      ]);
      return c.json(
        {
          ...now,
          bucket_minutes: BUCKET_MIN,
          series: series.map((b) => ({ t: b.t.toISOString(), running: b.running })),
        },
        200,
      );
    },
  );
  return r;
};
