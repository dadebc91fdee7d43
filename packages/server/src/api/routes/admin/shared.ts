import { z } from "@hono/zod-openapi";
import type { UserCaller } from "../../../auth/middleware.js";
import type { Queryable } from "../../../db/db.js";
import { recordAudit } from "../../../db/queries/audit.js";
import { ErrorSchema, errorResponses } from "../../schemas.js";
import { forbiddenResponse, json } from "../auth-schemas.js";

/** What the admin route modules share: paging, error responses, the audit record. */

export const PageQuery = z.object({
  page: z.coerce
    .number()
    .int()
    .min(1)
    .default(1)
    .openapi({ param: { name: "page", in: "query" }, example: 1 }),
  per_page: z.coerce
    .number()
    .int()
    .min(1)
    .max(200)
    .default(50)
    .openapi({ param: { name: "per_page", in: "query" }, example: 50 }),
});

export const pageFields = {
  total: z.number().int(),
  page: z.number().int(),
  per_page: z.number().int(),
  total_pages: z.number().int(),
};

/** The paging fields of a reply: `total_pages` is 0 when there is nothing at all. */
export const pageOf = (total: number, page: number, perPage: number) => ({
  total,
  page,
  per_page: perPage,
  total_pages: Math.ceil(total / perPage),
});

export const adminErrors = {
  400: errorResponses[400],
  401: errorResponses[401],
  ...forbiddenResponse,
  404: errorResponses[404],
} as const;

export const conflictResponse = {
  409: { description: "Refused in the current state", ...json(ErrorSchema) },
} as const;

export const iso = (d: Date | null) => (d ? d.toISOString() : null);

/** An admin action in the audit log (team-scoped when it acted on one team, else platform). */
export const auditAdmin = (
  db: Queryable,
  caller: UserCaller,
  e: {
    teamId: string | null;
    action: string;
    resourceType: string;
    resourceId: string;
    metadata: Record<string, unknown>;
  },
) =>
  recordAudit(db, {
    teamId: e.teamId,
    actorType: "user",
    actorId: caller.userId,
    action: e.action,
    resourceType: e.resourceType,
    resourceId: e.resourceId,
    metadata: { ...e.metadata, platform_admin: true },
  });
